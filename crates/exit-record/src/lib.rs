//! The exit record: one JSON document per worker run, written by `worker-shim`
//! and read by `kanban-watchdog`.
//!
//! * [`ExitRecord`] is the schema (see the README's "Exit record" section);
//!   [`SCHEMA_VERSION`] is bumped on any incompatible change.
//! * [`write_atomic`] puts a record into a directory so that a reader never
//!   sees half a record: temp file, optional fsync, rename, directory fsync.
//!   [`write_file_atomic`] is that writer for any file (the watchdog's state,
//!   `health.json`, requests).
//! * [`health`]: `health.json`, the watchdog's provider health as the shim
//!   reads it, typed and versioned.
//! * [`read_record`] is the careful reader: no symlinks, owner check, size
//!   limit, schema version check. Every refusal is a typed [`RecordError`]
//!   that the watchdog turns into a quarantine reason.

mod atomic;
pub mod health;
mod named;
mod paths;
mod read;
mod schema;
mod write;

pub use atomic::{AtomicOptions, TempName, write_file_atomic, write_file_atomic_with};
pub use named::ReadName;
pub use paths::{
    DirProblem, UnsafeDir, check_private_dir, default_record_dir, ensure_private_dir,
    is_record_file_name, record_file_name,
};
pub use read::{
    MAX_RESET_HORIZON_S, PrivateFileError, ReadLimits, RecordError, parse_record_bytes,
    read_private_file, read_record,
};
pub use schema::{
    ExitInfo, ExitRecord, Failure, RunAtExit, SCHEMA_NAME, SCHEMA_VERSION, Skipped, Steered,
    StreamCapture, TaskContext, new_record_id,
};
pub use write::{WriteError, WriteOptions, write_atomic};
