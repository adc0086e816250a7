//! What the Hermes gateway writes besides the board, for a stand-in
//! gateway (the demo's, the tests') to write the same: its `gateway.pid`,
//! its dispatcher's log records, and the environment that dispatcher gives
//! each worker it spawns.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::env;

/// The logger the gateway's dispatcher records come from.
pub const LOGGER: &str = "gateway.run";

/// The two records a gateway logs as it stops on SIGTERM, in order.
pub const SHUTDOWN: [&str; 2] = ["Received SIGTERM — initiating shutdown", "Gateway stopped"];

/// `gateway.pid` as Hermes 0.19 writes it (JSON; what
/// [`crate::home::PidFile`] reads back): the pid, a `kind`, the argv and,
/// when known, the process's start time.
pub fn pid_file_json(pid: i32, kind: &str, argv: &[String], start_time: Option<u64>) -> String {
    serde_json::json!({
        "pid": pid,
        "kind": kind,
        "argv": argv,
        "start_time": start_time,
    })
    .to_string()
}

/// A record of the gateway's dispatcher at `level`, as Hermes logs it.
pub fn log_line(at: &jiff::ZonedDateTime, level: &str, message: &str) -> String {
    crate::gateway_log::record_line(at, level, LOGGER, message)
}

/// The dispatcher starting inside the gateway.
pub fn embedded(interval: Duration) -> String {
    format!(
        "kanban dispatcher: embedded in gateway (interval={:.1}s)",
        interval.as_secs_f64()
    )
}

/// A tick of the dispatcher on `board` that spawned `spawned` workers.
pub fn spawned(board: &str, spawned: usize) -> String {
    format!(
        "kanban dispatcher [{board}]: spawned={spawned} reclaimed=0 crashed=0 timed_out=0 promoted=0 auto_blocked=0"
    )
}

/// A tick of the dispatcher on `board` that failed.
pub fn tick_failed(board: &str, error: &dyn std::fmt::Display) -> String {
    format!("kanban dispatcher: tick failed on board {board}: {error}")
}

/// The dispatcher failing to spawn the worker of `task`.
pub fn spawn_failed(task: &str, error: &dyn std::fmt::Display) -> String {
    format!("kanban dispatcher: spawn failed for {task}: {error}")
}

/// The environment the dispatcher gives the worker of run `run_id` of
/// `task` on the board `board` (slug) at `db`, running as `profile`.
pub fn worker_env(
    task: &str,
    run_id: i64,
    db: &Path,
    board: &str,
    profile: &str,
) -> [(&'static str, OsString); 5] {
    [
        (env::KANBAN_TASK, task.into()),
        (env::KANBAN_RUN_ID, run_id.to_string().into()),
        (env::KANBAN_DB, db.into()),
        (env::KANBAN_BOARD, board.into()),
        (env::PROFILE, profile.into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_stand_in_writes_reads_back_as_hermes_output() {
        let pid = crate::home::PidFile::parse(&pid_file_json(42, "fake", &[], Some(7))).unwrap();
        assert_eq!((pid.pid, pid.start_time), (42, Some(7)));
        let at = jiff::ZonedDateTime::now();
        let line = log_line(&at, "INFO", &spawned("second", 1));
        assert_eq!(crate::gateway_log::dispatcher_board(&line), Some("second"));
        assert!(
            log_line(&at, "INFO", &embedded(Duration::from_secs(1))).ends_with(
                "INFO gateway.run: kanban dispatcher: embedded in gateway (interval=1.0s)"
            )
        );
    }
}
