//! Whether one run has ended, for a caller that must not wait: the shim,
//! deciding at a worker's exit whether the worker reported its run itself.
//! One read-only `SELECT` on `task_runs` by id; never creates or writes
//! the board, no schema check.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::BoardError;

/// What `task_runs` holds of one run's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunEnd {
    /// `ended_at`: `None` while the run is open.
    pub ended_at: Option<i64>,
    /// `outcome` (`completed`, `blocked`, `crashed`, ...), if set.
    pub outcome: Option<String>,
}

/// Reads run `run_id` from the board at `db`, read-only, waiting at most
/// `busy_timeout` for a lock. `Ok(None)`: no such run.
pub fn read_run_end(
    db: &Path,
    run_id: i64,
    busy_timeout: Duration,
) -> Result<Option<RunEnd>, BoardError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db, flags).map_err(|source| BoardError::Open {
        path: db.to_path_buf(),
        source,
    })?;
    conn.busy_timeout(busy_timeout)?;
    Ok(conn
        .query_row(
            "SELECT ended_at, outcome FROM task_runs WHERE id = ?1",
            [run_id],
            |r| {
                Ok(RunEnd {
                    ended_at: r.get(0)?,
                    outcome: r.get(1)?,
                })
            },
        )
        .optional()?)
}
