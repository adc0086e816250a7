//! Did the worker report its kanban run itself? Asked only when a failure
//! was classified in a Hermes worker's output and the shim is about to
//! change the exit code: a worker that ran `hermes kanban complete` (or
//! `block`) and then printed a provider error, or quoted one, must not be
//! turned into a rate-limited exit.
//!
//! One read-only `SELECT` on `task_runs` by id, with a 200 ms busy timeout:
//! never creates or writes the board, never delays a clean exit (it is not
//! reached on one). Any problem (no board, locked, an unknown schema)
//! returns `None` and the shim behaves as it always did.

use std::path::Path;
use std::time::Duration;

use exit_record::RunAtExit;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

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
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db, flags).ok()?;
    conn.busy_timeout(BUSY_TIMEOUT).ok()?;
    let row: Option<(Option<i64>, Option<String>)> = conn
        .query_row(
            "SELECT ended_at, outcome FROM task_runs WHERE id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .ok()?;
    let (ended_at, outcome) = row?;
    Some(RunAtExit {
        open: ended_at.is_none(),
        outcome,
    })
}
