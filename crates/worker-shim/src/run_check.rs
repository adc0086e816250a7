//! Did the worker report its kanban run itself? Asked only when a failure
//! was classified in a Hermes worker's output and the shim is about to
//! change the exit code: a worker that ran `hermes kanban complete` (or
//! `block`) and then printed a provider error, or quoted one, must not be
//! turned into a rate-limited exit.
//!
//! One read-only `SELECT` on `task_runs` by id
//! ([`hermes_board::read_run_end`]), with a 200 ms busy timeout:
//! never creates or writes the board, never delays a clean exit (it is not
//! reached on one). Any problem (no board, locked, an unknown schema)
//! returns `None` and the shim behaves as it always did.

use std::path::Path;
use std::time::Duration;

use exit_record::RunAtExit;

const BUSY_TIMEOUT: Duration = Duration::from_millis(200);

/// The run named by `HERMES_KANBAN_DB` and `HERMES_KANBAN_RUN_ID`, when
/// both are set and the board answers.
pub fn from_env() -> Option<RunAtExit> {
    let db = std::env::var_os(hermes_board::env::KANBAN_DB).filter(|v| !v.is_empty())?;
    let run_id: i64 = std::env::var(hermes_board::env::KANBAN_RUN_ID)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    check(Path::new(&db), run_id)
}

/// Reads run `run_id` from the board at `db`, read-only.
pub fn check(db: &Path, run_id: i64) -> Option<RunAtExit> {
    let run = hermes_board::read_run_end(db, run_id, BUSY_TIMEOUT).ok()??;
    Some(RunAtExit {
        open: run.ended_at.is_none(),
        outcome: run.outcome,
    })
}
