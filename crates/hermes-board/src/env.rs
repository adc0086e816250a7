//! The environment variables Hermes reads or sets, by name.
//!
//! The kanban dispatcher sets the `HERMES_KANBAN_*` ones and
//! `HERMES_PROFILE` for each worker it spawns (Hermes 0.19
//! `kanban_db.py`); `HERMES_HOME` and `HERMES_KANBAN_HOME` choose where
//! Hermes keeps its files.

/// The Hermes home (default `~/.hermes`).
pub const HOME: &str = "HERMES_HOME";
/// Where the boards live, shared by every profile (default: the home).
pub const KANBAN_HOME: &str = "HERMES_KANBAN_HOME";
/// The task a worker runs; set and not empty only in a kanban worker.
pub const KANBAN_TASK: &str = "HERMES_KANBAN_TASK";
/// The run of that task the worker is.
pub const KANBAN_RUN_ID: &str = "HERMES_KANBAN_RUN_ID";
/// The slug of the task's board.
pub const KANBAN_BOARD: &str = "HERMES_KANBAN_BOARD";
/// The path of the task's board database.
pub const KANBAN_DB: &str = "HERMES_KANBAN_DB";
/// The claim lock the dispatcher holds for the run.
pub const KANBAN_CLAIM_LOCK: &str = "HERMES_KANBAN_CLAIM_LOCK";
/// The profile the worker runs as.
pub const PROFILE: &str = "HERMES_PROFILE";
/// The program the dispatcher runs each worker with (an absolute path is
/// used as is; default `hermes` on `PATH`).
pub const BIN: &str = "HERMES_BIN";
