//! End-to-end tests live in tests/tests/*.rs; helpers in this lib.
