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
/// violation that tripped the breaker: run closed, task blocked.
pub fn hermes_gave_up(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    let t = now();
    conn.execute(
        "UPDATE task_runs SET status='crashed', outcome='crashed', ended_at=?1, error='protocol violation' \
         WHERE id = (SELECT current_run_id FROM tasks WHERE id = ?2) AND ended_at IS NULL",
        params![t, id],
    )?;
    conn.execute(
        "UPDATE tasks SET status='blocked', claim_lock=NULL, claim_expires=NULL, worker_pid=NULL, \
         current_run_id=NULL, consecutive_failures=consecutive_failures+1, \
         last_failure_error='worker exited cleanly (rc=0) without calling kanban_complete or kanban_block — protocol violation' \
         WHERE id = ?1",
        [id],
    )?;
    conn.execute(
        "INSERT INTO task_events (task_id, kind, payload, created_at) VALUES (?1, 'gave_up', '{}', ?2)",
        params![id, t],
    )?;
    Ok(())
}

/// Marks a task done, as `hermes kanban complete` does.
pub fn complete(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    let t = now();
    conn.execute(
        "UPDATE task_runs SET status='done', outcome='completed', ended_at=?1 \
         WHERE id = (SELECT current_run_id FROM tasks WHERE id = ?2) AND ended_at IS NULL",
        params![t, id],
    )?;
    conn.execute(
        "UPDATE tasks SET status='done', completed_at=?1, claim_lock=NULL, claim_expires=NULL, \
         worker_pid=NULL, current_run_id=NULL WHERE id = ?2",
        params![t, id],
    )?;
    conn.execute(
        "INSERT INTO task_events (task_id, kind, payload, created_at) VALUES (?1, 'completed', '{}', ?2)",
        params![id, t],
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
