//! What the shim's test files share.

use std::path::PathBuf;

/// The shim under test: the one cargo built for these tests, or the binary
/// `WORKER_SHIM_UNDER_TEST` names (`scripts/test` runs the suite again
/// against the static build `scripts/install` ships).
pub fn shim_bin() -> PathBuf {
    test_support::bin_under_test("WORKER_SHIM_UNDER_TEST", env!("CARGO_BIN_EXE_worker-shim"))
}
