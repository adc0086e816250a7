//! Building real Hermes-schema boards for tests, benchmarks and the demo.
//! The SQL mirrors Hermes 0.19.0's own `create_task`/`claim_task` (see
//! docs/hermes-0.19-findings.md); it is not used against production boards.

use std::path::Path;

use rusqlite::{Connection, params};

use crate::HERMES_0_19_SCHEMA;

/// Creates a board with the exact Hermes 0.19.0 DDL, in WAL mode with the
/// pragmas Hermes sets.
pub fn create_board(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(HERMES_0_19_SCHEMA)?;
    Ok(conn)
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
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let t = now();
    let lock = format!("testhost:{}", std::process::id());
    let n = tx.execute(
        "UPDATE tasks SET status='running', claim_lock=?1, claim_expires=?2, \
         started_at=COALESCE(started_at, ?3) WHERE id = ?4 AND status = 'ready' AND claim_lock IS NULL",
        params![lock, t + 900, t, id],
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
    tx.execute(
        "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?1, ?2, 'claimed', ?3, ?4)",
        params![id, run_id, format!("{{\"lock\":\"{lock}\",\"run_id\":{run_id}}}"), t],
    )?;
    tx.execute(
        "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?1, ?2, 'spawned', ?3, ?4)",
        params![id, run_id, format!("{{\"pid\":{worker_pid}}}"), t],
    )?;
    tx.commit()?;
    Ok(run_id)
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
