//! Everything the watchdog and the shim know of Hermes Agent, in one place:
//!
//! * [`Board`]: the one place that writes to a kanban board (below);
//! * [`home`]: the home's layout (boards, gateway log and pid file,
//!   credential stores, profile configs) and the boards the gateway ticks;
//! * [`profiles`]: a profile's provider chain from its `config.yaml`;
//! * [`gateway_log`]: what a line of `gateway.log` means;
//! * [`dispatcher`]: the dispatcher's interval from Hermes' `config.yaml`;
//! * [`env`]: the `HERMES_*` environment variables by name;
//! * [`cli`]: a worker's `hermes` command line (profile, provider, steering);
//! * [`DISPATCHER_PROGRESS_KINDS`] and the other event kinds of a board.
//!
//! Every board write:
//! * runs in a short `BEGIN IMMEDIATE` transaction (a deferred read-then-write
//!   transaction fails at once with `SQLITE_BUSY_SNAPSHOT` when Hermes commits
//!   in between), with `busy_timeout` and bounded retries on `SQLITE_BUSY`;
//!   a board still locked after that returns [`BoardError::Busy`] so the
//!   caller retries later: nothing is ever skipped;
//! * is guarded on the task's current status and run, so a stale record never
//!   touches a task that has moved on;
//! * appends a `task_events` row whose kind starts with `watchdog_` and whose
//!   payload carries the reason and the exit-record id (which also makes
//!   handling a record idempotent);
//! * is appended to an audit log (JSON lines) after it commits.
//!
//! [`Board::open`] checks that every column relied on exists and refuses to
//! open a board missing one (naming each); columns a newer Hermes added
//! are fine. It also reads what the board supports ([`BoardInfo`]: the
//! journal mode, the optional columns, the Hermes features) and writes
//! accordingly: Hermes 0.19.0 (WAL) and the 0.22 fork (rollback journal,
//! `review` lane, `provider_override`, `worker_started_at`) alike.

mod audit;
mod cached;
mod caps;
pub mod cli;
pub mod dispatcher;
pub mod env;
mod error;
mod facts;
pub mod gateway_log;
pub mod home;
mod kinds;
pub mod profiles;
mod run_end;
mod schema;
#[cfg(feature = "testkit")]
pub mod testkit;
mod types;
mod writes;

pub use audit::AuditLog;
pub use caps::{BoardInfo, HermesFeatures, OPTIONAL_COLUMNS};
pub use error::BoardError;
pub use facts::{
    DECISION_KINDS, DISPATCHER_OUTCOMES, RunFacts, RunVerdict, TaskDecision, WORKER_OUTCOMES,
};
pub use kinds::{DISPATCHER_PROGRESS_KINDS, READY_ENTRY_KINDS};
pub use run_end::{RunEnd, read_run_end};
pub use schema::REQUIRED_COLUMNS;
pub use types::{
    BoardOptions, ClearOverride, EVENT_PREFIX, Kind, ParkRequest, Parked, ProgressMark, ReadyTask,
    ReleaseRequest, RunRow, Steered, TaskRow, WriteAction, WriteOutcome,
};

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

/// A connection to one board. Not `Sync`: one owner does all the writing.
pub struct Board {
    conn: Connection,
    path: PathBuf,
    opts: BoardOptions,
    audit: Option<AuditLog>,
    busy_retries: u64,
    identity: Option<(u64, u64)>,
    read_only: bool,
    info: BoardInfo,
}

/// Opens the board file in `mode` (read-write or read-only, never
/// creating it), with the busy timeout and the statement cache set, checks
/// its schema and reads what it supports: the part of every open.
fn connect(
    path: &Path,
    mode: OpenFlags,
    busy_timeout: Duration,
) -> Result<(Connection, BoardInfo), BoardError> {
    let flags = mode | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let open_error = |source| BoardError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    conn.busy_timeout(busy_timeout).map_err(open_error)?;
    cached::configure(&conn).map_err(open_error)?;
    schema::check(&conn, path)?;
    let info = caps::detect(&conn)?;
    Ok((conn, info))
}

impl Board {
    /// Opens an existing board (never creates one) and checks its schema.
    pub fn open(
        path: &Path,
        opts: BoardOptions,
        audit: Option<AuditLog>,
    ) -> Result<Board, BoardError> {
        let (conn, info) = connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE, opts.busy_timeout)?;
        Ok(Board {
            conn,
            path: path.to_path_buf(),
            opts,
            audit,
            busy_retries: 0,
            identity: file_identity(path),
            read_only: false,
            info,
        })
    }

    /// Opens a board read-only (never creating it; for a board we do not
    /// write to, or `replay`): every read works, every write is refused.
    pub fn open_read_only(path: &Path, busy_timeout: Duration) -> Result<Board, BoardError> {
        let (conn, info) = connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY, busy_timeout)?;
        Ok(Board {
            info,
            conn,
            path: path.to_path_buf(),
            opts: BoardOptions {
                busy_timeout,
                busy_retries: 0,
                dry_run: true,
            },
            audit: None,
            busy_retries: 0,
            identity: file_identity(path),
            read_only: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dry_run(&self) -> bool {
        self.opts.dry_run
    }

    /// What this board supports, read at open.
    pub fn info(&self) -> &BoardInfo {
        &self.info
    }

    /// Replaces the features inferred from the board's columns with what
    /// the caller knows of the installed Hermes.
    pub fn set_features(&mut self, features: HermesFeatures) {
        self.info.features = features;
    }

    /// How many times a write had to be retried because the board was locked.
    pub fn busy_retries(&self) -> u64 {
        self.busy_retries
    }

    /// Audit-log appends that failed on this connection's log (a committed
    /// write whose line could not be written yet; see [`AuditLog`]). Zero
    /// without an audit log.
    pub fn audit_failed_appends(&self) -> u64 {
        self.audit.as_ref().map_or(0, AuditLog::failed_appends)
    }

    /// The SQLite busy timeout now in force for every statement.
    pub fn busy_timeout(&self) -> Duration {
        self.opts.busy_timeout
    }

    /// Changes the busy timeout for the statements that follow (a caller
    /// that knows the board is locked can make every access fail at once
    /// instead of waiting, and restore the timeout for its next attempt).
    pub fn set_busy_timeout(&mut self, timeout: Duration) -> Result<(), BoardError> {
        if timeout == self.opts.busy_timeout {
            return Ok(());
        }
        self.conn.busy_timeout(timeout)?;
        self.opts.busy_timeout = timeout;
        Ok(())
    }

    /// True when the file at `path` is no longer the one we opened (replaced
    /// or deleted): the caller should reopen.
    pub fn file_replaced(&self) -> bool {
        file_identity(&self.path) != self.identity
    }

    // ----- reads -------------------------------------------------------

    pub fn task(&self, id: &str) -> Result<Option<TaskRow>, BoardError> {
        Ok(cached::row(
            &self.conn,
            &format!("SELECT {} FROM tasks WHERE id = ?1", TaskRow::COLUMNS),
            [id],
            TaskRow::from_row,
        )
        .optional()?)
    }

    /// The task's newest run (highest id), if any.
    pub fn latest_run(&self, task_id: &str) -> Result<Option<RunRow>, BoardError> {
        Ok(cached::row(
            &self.conn,
            &format!(
                "SELECT {} FROM task_runs WHERE task_id = ?1 ORDER BY id DESC LIMIT 1",
                RunRow::COLUMNS
            ),
            [task_id],
            RunRow::from_row,
        )
        .optional()?)
    }

    /// Who ended run `run_id` of task `task_id`, and whether a worker or a
    /// person decided on the task since (see [`RunFacts`]). Read-only.
    pub fn run_facts(&self, task_id: &str, run_id: i64) -> Result<RunFacts, BoardError> {
        Ok(facts::run_facts(&self.conn, task_id, run_id)?)
    }

    /// Tasks in `ready`, in the dispatcher's order.
    pub fn ready_tasks(&self) -> Result<Vec<ReadyTask>, BoardError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, assignee, created_at FROM tasks WHERE status = 'ready' \
             ORDER BY priority DESC, created_at ASC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ReadyTask {
                id: r.get(0)?,
                assignee: r.get(1)?,
                created_at: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of tasks per status.
    pub fn status_counts(&self) -> Result<Vec<(String, u64)>, BoardError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT status, COUNT(*) FROM tasks GROUP BY status ORDER BY status")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The dispatcher-progress events after `after_id`: events the
    /// dispatcher writes on a live tick ([`DISPATCHER_PROGRESS_KINDS`]).
    /// [`ProgressMark::scanned_through`] is where the next call goes on
    /// from, so each event is looked at once however long the dispatcher
    /// stays quiet while others (the watchdog's parks) write events.
    pub fn progress_since(&self, after_id: i64) -> Result<ProgressMark, BoardError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT COALESCE(MAX(id), ?1), MAX(created_at), COUNT(*), \
             (SELECT COALESCE(MAX(id), 0) FROM task_events) FROM task_events \
             WHERE id > ?1 AND kind IN {}",
            kinds::sql_list(DISPATCHER_PROGRESS_KINDS)
        ))?;
        Ok(stmt.query_row([after_id], |r| {
            Ok(ProgressMark {
                last_event_id: r.get(0)?,
                last_event_at: r.get(1)?,
                new_events: r.get::<_, i64>(2)? as u64,
                // Below `after_id` only when the board was replaced: go on
                // from its own newest event.
                scanned_through: r.get(3)?,
            })
        })?)
    }

    /// The highest event id on the board (a cheap change marker).
    pub fn max_event_id(&self) -> Result<i64, BoardError> {
        Ok(cached::row(
            &self.conn,
            "SELECT COALESCE(MAX(id), 0) FROM task_events",
            [],
            |r| r.get(0),
        )?)
    }

    pub fn running_count(&self) -> Result<u64, BoardError> {
        Ok(cached::row(
            &self.conn,
            "SELECT COUNT(*) FROM tasks WHERE status = 'running'",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Tasks the watchdog parked or held and that are still `scheduled`
    /// with our event as the latest scheduling decision (an operator who
    /// rescheduled or unblocked a task by hand takes it back from us).
    pub fn parked(&self) -> Result<Vec<Parked>, BoardError> {
        self.parked_where("", None)
    }

    /// [`Board::parked`] for one task: `None` when it is not ours in
    /// `scheduled` (any more).
    pub fn parked_task(&self, task_id: &str) -> Result<Option<Parked>, BoardError> {
        Ok(self.parked_where("AND t.id = ?1", Some(task_id))?.pop())
    }

    /// The newest event id, and the tasks with an event after `after_id`
    /// (at most `limit` of them; `None` when there are more, and a full
    /// re-read is cheaper). What changed on the board since the last look,
    /// for what the watchdog keeps in memory.
    pub fn tasks_touched_since(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<(i64, Option<Vec<String>>), BoardError> {
        let newest = self.max_event_id()?;
        if newest <= after_id {
            return Ok((newest, Some(Vec::new())));
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT task_id FROM task_events WHERE id > ?1 AND id <= ?2 LIMIT ?3",
        )?;
        let cap = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let ids: Vec<String> = stmt
            .query_map(params![after_id, newest, cap], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if ids.len() > limit {
            return Ok((newest, None));
        }
        Ok((newest, Some(ids)))
    }

    fn parked_where(&self, filter: &str, task: Option<&str>) -> Result<Vec<Parked>, BoardError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT t.id, t.assignee, e.kind, e.payload, e.created_at FROM tasks t \
             JOIN task_events e ON e.id = (SELECT MAX(id) FROM task_events x \
               WHERE x.task_id = t.id AND x.kind IN {}) \
             WHERE t.status = 'scheduled' AND e.kind IN ('watchdog_parked','watchdog_held') {filter}",
            writes::SCHEDULING_KINDS
        ))?;
        let params: Vec<&dyn rusqlite::ToSql> = match &task {
            Some(t) => vec![t],
            None => Vec::new(),
        };
        let rows = stmt.query_map(params.as_slice(), |r| {
            let payload: Option<String> = r.get(3)?;
            let kind: String = r.get(2)?;
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                kind,
                payload,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (task_id, assignee, kind, payload, parked_at) = row?;
            let p: serde_json::Value = payload
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            out.push(Parked {
                task_id,
                assignee,
                kind: if kind == "watchdog_held" {
                    Kind::Held
                } else {
                    Kind::Parked
                },
                due_at: p["due_at"].as_i64(),
                provider: p["provider"].as_str().map(str::to_string),
                reason: p["reason"].as_str().unwrap_or_default().to_string(),
                record_id: p["record_id"].as_str().map(str::to_string),
                parked_at,
            });
        }
        Ok(out)
    }

    /// Delayed retries for a task since `since` (epoch s): our timed parks
    /// (with a due time). A park waiting for a re-auth (no due time), a
    /// hold, and a park its provider's manual heal ended early (released
    /// with `healed`: an operator's `provider reset`, a re-auth) spend
    /// nothing.
    pub fn delayed_retries_since(&self, task_id: &str, since: i64) -> Result<u32, BoardError> {
        Ok(cached::row(
            &self.conn,
            "SELECT COUNT(*) FROM task_events p WHERE p.task_id = ?1 \
             AND p.kind = 'watchdog_parked' AND p.created_at >= ?2 \
             AND NOT (json_valid(p.payload) AND json_extract(p.payload, '$.due_at') IS NULL) \
             AND NOT EXISTS (SELECT 1 FROM task_events r WHERE r.task_id = p.task_id \
               AND r.kind = 'watchdog_released' AND r.id > p.id AND json_valid(r.payload) \
               AND json_extract(r.payload, '$.healed') = 1 \
               AND json_extract(r.payload, '$.record_id') IS json_extract(p.payload, '$.record_id'))",
            params![task_id, since],
            |r| r.get::<_, i64>(0),
        )? as u32)
    }

    /// Tasks still holding the model/provider override we set to steer
    /// them to a fallback (Hermes 0.22 boards).
    pub fn steered(&self) -> Result<Vec<Steered>, BoardError> {
        if !self.info.provider_override() {
            return Ok(Vec::new());
        }
        Ok(writes::steered(&self.conn)?)
    }

    /// True when an event of ours for this record already exists on this
    /// task: the record was handled before (a restart after a crash).
    pub fn record_already_applied(
        &self,
        task_id: &str,
        record_id: &str,
    ) -> Result<bool, BoardError> {
        Ok(writes::record_applied(&self.conn, task_id, record_id)?)
    }

    // ----- writes ------------------------------------------------------

    /// Moves a task to `scheduled` (see [`ParkRequest`] for the guards).
    pub fn park(&mut self, req: &ParkRequest) -> Result<WriteOutcome, BoardError> {
        let info = self.info.clone();
        self.write(|tx, now| writes::park(tx, req, &info, now))
    }

    /// Parks several tasks in one `BEGIN IMMEDIATE` transaction (one
    /// commit, one WAL sync for the lot), each request guarded as
    /// [`Board::park`] guards it, inside its own savepoint: a request the
    /// board refuses (stale) leaves nothing behind and the others still
    /// apply. A lock fails the whole batch (nothing applied); it is retried
    /// as a whole.
    pub fn park_batch(&mut self, reqs: &[ParkRequest]) -> Result<Vec<WriteOutcome>, BoardError> {
        if self.read_only {
            return Err(BoardError::ReadOnly {
                path: self.path.clone(),
            });
        }
        if self.file_replaced() {
            return Err(BoardError::Replaced {
                path: self.path.clone(),
            });
        }
        let info = self.info.clone();
        let dry_run = self.opts.dry_run;
        let now = jiff::Timestamp::now().as_second();
        let result = (|| -> rusqlite::Result<Vec<WriteOutcome>> {
            let mut tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut outcomes = Vec::with_capacity(reqs.len());
            for req in reqs {
                let sp = tx.savepoint()?;
                let mut outcome = writes::park(&sp, req, &info, now)?;
                if !dry_run && matches!(outcome, WriteOutcome::Applied(_)) {
                    sp.commit()?;
                } else {
                    // Its default drop behaviour: roll back, then release.
                    sp.finish()?;
                }
                if let WriteOutcome::Applied(change) = &mut outcome {
                    change.dry_run = dry_run;
                }
                outcomes.push(outcome);
            }
            tx.commit()?;
            Ok(outcomes)
        })();
        let outcomes = match result {
            Ok(o) => o,
            Err(e) if is_busy(&e) => {
                self.busy_retries += 1;
                return Err(BoardError::Busy {
                    path: self.path.clone(),
                    attempts: 1,
                });
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(audit) = &mut self.audit
            && !dry_run
        {
            for outcome in &outcomes {
                if let WriteOutcome::Applied(change) = outcome {
                    audit.append(change);
                }
            }
        }
        Ok(outcomes)
    }

    /// Moves a task we parked back to `ready` (`review` when its run was
    /// claimed from the review lane; `todo` when a parent is not done, as
    /// Hermes' own unblock does).
    pub fn release(&mut self, req: &ReleaseRequest) -> Result<WriteOutcome, BoardError> {
        let info = self.info.clone();
        self.write(|tx, now| writes::release(tx, req, &info, now))
    }

    /// Clears the model/provider override we set (see [`Board::steered`]),
    /// only while the task still holds exactly it.
    pub fn clear_override(&mut self, req: &ClearOverride) -> Result<WriteOutcome, BoardError> {
        if !self.info.provider_override() {
            return Ok(WriteOutcome::Stale {
                status: None,
                why: "no tasks.provider_override on this board".into(),
            });
        }
        self.write(|tx, now| writes::clear_override(tx, req, now))
    }

    /// Runs one guarded write transaction with busy retries, then audits it.
    fn write(
        &mut self,
        op: impl Fn(&rusqlite::Transaction<'_>, i64) -> Result<WriteOutcome, rusqlite::Error>,
    ) -> Result<WriteOutcome, BoardError> {
        if self.read_only {
            return Err(BoardError::ReadOnly {
                path: self.path.clone(),
            });
        }
        // Never write through a connection whose file was replaced or
        // deleted: SQLite's -wal/-shm files go by path, so the old
        // connection would corrupt the new board.
        if self.file_replaced() {
            return Err(BoardError::Replaced {
                path: self.path.clone(),
            });
        }
        let mut attempt = 0u32;
        loop {
            let now = jiff::Timestamp::now().as_second();
            match self.try_write(&op, now) {
                Ok(mut outcome) => {
                    if let WriteOutcome::Applied(change) = &mut outcome {
                        change.dry_run = self.opts.dry_run;
                    }
                    if let (WriteOutcome::Applied(change), Some(audit)) =
                        (&outcome, &mut self.audit)
                        && !self.opts.dry_run
                    {
                        // Committed: a failed append is reported by the
                        // audit log itself, never turned into an error.
                        audit.append(change);
                    }
                    return Ok(outcome);
                }
                Err(e) if is_busy(&e) && attempt < self.opts.busy_retries => {
                    attempt += 1;
                    self.busy_retries += 1;
                    tracing::warn!(board = %self.path.display(), attempt, "board is locked; retrying the write");
                    std::thread::sleep(backoff(attempt));
                }
                Err(e) if is_busy(&e) => {
                    self.busy_retries += 1;
                    return Err(BoardError::Busy {
                        path: self.path.clone(),
                        attempts: attempt + 1,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn try_write(
        &mut self,
        op: &impl Fn(&rusqlite::Transaction<'_>, i64) -> Result<WriteOutcome, rusqlite::Error>,
        now: i64,
    ) -> Result<WriteOutcome, rusqlite::Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let outcome = op(&tx, now)?;
        if self.opts.dry_run || !matches!(outcome, WriteOutcome::Applied(_)) {
            tx.rollback()?;
        } else {
            tx.commit()?;
        }
        Ok(outcome)
    }
}

/// [`Board::run_facts`] on a board we do not write to (a record for
/// another board): opens `path` read-only (never creating it), checks the
/// schema, reads, closes. A locked board is [`BoardError::is_transient`].
pub fn read_run_facts(
    path: &Path,
    task_id: &str,
    run_id: i64,
    busy_timeout: Duration,
) -> Result<RunFacts, BoardError> {
    Board::open_read_only(path, busy_timeout)?.run_facts(task_id, run_id)
}

/// When each task became work for the dispatcher ([`READY_ENTRY_KINDS`]
/// events: epoch s and task id, oldest first), from the board at `path`
/// opened read-only (never created; no schema check, so an incident's
/// snapshot of an older board still reads).
pub fn read_ready_entries(path: &Path) -> Result<Vec<(i64, String)>, BoardError> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|source| {
            BoardError::Open {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let mut stmt = conn.prepare(&format!(
        "SELECT created_at, task_id FROM task_events WHERE kind IN {} ORDER BY created_at",
        kinds::sql_list(READY_ENTRY_KINDS)
    ))?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((25u64 << attempt.min(6)).min(1000))
}
