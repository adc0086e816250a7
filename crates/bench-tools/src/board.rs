//! Hermes 0.19 boards of a given size, built with `hermes_board::testkit`
//! (the exact DDL, WAL) and filled in bulk with the same rows Hermes'
//! `create_task`/`claim_task`/`complete` leave.

use std::path::{Path, PathBuf};

use hermes_board::testkit;
use rusqlite::{Connection, params};

/// Profile every bench task is assigned to (provider openai-codex).
pub const PROFILE: &str = "coder";

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A board with `done` completed tasks (plus a few todo/blocked ones, never
/// ready), cached under `cache` by size and copied to `dest`.
pub fn base_board(cache: &Path, done: usize, dest: &Path) -> anyhow::Result<()> {
    let cached = cache.join(format!("board-{done}.db"));
    if !cached.exists() {
        std::fs::create_dir_all(cache)?;
        let tmp = cache.join(format!(".board-{done}.db"));
        let _ = std::fs::remove_file(&tmp);
        let mut conn = testkit::create_board(&tmp)?;
        fill_done(&mut conn, done)?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        drop(conn);
        let _ = std::fs::remove_file(sidecar(&tmp, "-wal"));
        let _ = std::fs::remove_file(sidecar(&tmp, "-shm"));
        std::fs::rename(&tmp, &cached)?;
    }
    std::fs::copy(&cached, dest)?;
    Ok(())
}

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn fill_done(conn: &mut Connection, n: usize) -> rusqlite::Result<()> {
    let t = now() - 86_400;
    let tx = conn.transaction()?;
    {
        let mut task = tx.prepare(
            "INSERT INTO tasks (id, title, body, assignee, status, created_at, started_at, completed_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
        )?;
        let mut run = tx.prepare(
            "INSERT INTO task_runs (task_id, profile, status, started_at, ended_at, outcome) \
             VALUES (?1, ?2, 'done', ?3, ?3, 'completed')",
        )?;
        let mut ev = tx.prepare(
            "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for i in 0..n {
            let id = format!("t_done_{i:06}");
            // 97% done, the rest todo or blocked: nothing is ever ready.
            let status = match i % 100 {
                0 | 1 => "todo",
                2 => "blocked",
                _ => "done",
            };
            let ts = t + i as i64 / 100;
            task.execute(params![
                id,
                format!("task {i}"),
                "Do the thing described in the ticket, then report.",
                PROFILE,
                status,
                ts,
                (status == "done").then_some(ts + 60)
            ])?;
            ev.execute(params![id, None::<i64>, "created", None::<String>, ts])?;
            if status == "done" {
                run.execute(params![id, PROFILE, ts])?;
                let run_id = tx.last_insert_rowid();
                ev.execute(params![
                    id,
                    run_id,
                    "claimed",
                    format!("{{\"run_id\":{run_id}}}"),
                    ts
                ])?;
                ev.execute(params![id, run_id, "spawned", "{\"pid\":4242}", ts])?;
                ev.execute(params![id, run_id, "completed", "{}", ts + 60])?;
            }
        }
    }
    tx.commit()
}

/// Adds `n` tasks claimed by the dispatcher (status running, an open run),
/// as `testkit::claim` leaves them; returns (task id, run id) pairs.
pub fn add_running(db: &Path, prefix: &str, n: usize) -> anyhow::Result<Vec<(String, i64)>> {
    let mut conn = testkit::connect(db)?;
    let t = now();
    let lock = format!("benchhost:{}", std::process::id());
    let mut out = Vec::with_capacity(n);
    let tx = conn.transaction()?;
    {
        let mut run = tx.prepare(
            "INSERT INTO task_runs (task_id, profile, status, claim_lock, claim_expires, worker_pid, started_at) \
             VALUES (?1, ?2, 'running', ?3, ?4, 4242, ?5)",
        )?;
        let mut task = tx.prepare(
            "INSERT INTO tasks (id, title, assignee, status, created_at, started_at, claim_lock, \
             claim_expires, worker_pid, current_run_id) VALUES (?1, ?2, ?3, 'running', ?4, ?4, ?5, ?6, 4242, ?7)",
        )?;
        let mut ev = tx.prepare(
            "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for i in 0..n {
            let id = format!("t_{prefix}_{i:06}");
            run.execute(params![id, PROFILE, lock, t + 900, t])?;
            let run_id = tx.last_insert_rowid();
            task.execute(params![
                id,
                format!("task {id}"),
                PROFILE,
                t,
                lock,
                t + 900,
                run_id
            ])?;
            ev.execute(params![id, None::<i64>, "created", None::<String>, t])?;
            ev.execute(params![
                id,
                run_id,
                "claimed",
                format!("{{\"lock\":\"{lock}\",\"run_id\":{run_id}}}"),
                t
            ])?;
            ev.execute(params![id, run_id, "spawned", "{\"pid\":4242}", t])?;
            out.push((id, run_id));
        }
    }
    tx.commit()?;
    Ok(out)
}
