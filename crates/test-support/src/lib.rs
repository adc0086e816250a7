//! What the workspace's tests share. Only ever a dev-dependency: nothing
//! here ships.
//!
//! - [`wait_until`] / [`wait_for`]: poll a condition with a timeout (never
//!   a bare sleep).
//! - [`prerequisite_missing`]: a test whose prerequisite is missing fails
//!   under CI and says SKIPPED elsewhere.
//! - [`Tmpfs`]: a small filesystem that can be filled up.
//! - [`file_names`], [`proc_alive`], [`bin_under_test`]: a directory's entries,
//!   a live process, the binary a suite runs.
//! - [`board`]: real Hermes-schema boards (`hermes_board::testkit`).
//! - [`probe_record`], [`blank_record`], [`rate_limit`]: exit records and
//!   a failure for unit and property tests and fuzzing.
//! - [`webhook_receiver`]: a webhook on 127.0.0.1 keeping the alerts it gets.

mod fs;
mod prerequisite;
mod record;
mod tmpfs;
mod wait;
// The demo's own receiver (it ships in the binary; this crate never does),
// one file serving both.
#[path = "../../kanban-watchdog/src/demo/webhook.rs"]
mod webhook;

pub use fs::{bin_under_test, file_names, proc_alive};
pub use prerequisite::{in_ci, prerequisite_missing};
pub use record::{blank_record, probe_record, rate_limit};
pub use tmpfs::Tmpfs;
pub use wait::{wait_for, wait_until};
pub use webhook::webhook_receiver;

/// Real Hermes-schema boards: create, connect, add and claim tasks, read
/// statuses and events.
pub use hermes_board::testkit as board;
