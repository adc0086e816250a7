//! The guarded write transactions. Each function runs inside a `BEGIN
//! IMMEDIATE` transaction opened by [`crate::Board`]; it re-reads the task,
//! checks the guard, writes, and appends its event.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::json;

use crate::facts::RunVerdict;
use crate::types::{Change, Kind, ParkRequest, ReleaseRequest, TaskRow, TaskState, WriteOutcome};

const ACTOR: &str = "kanban-watchdog";

/// Event kinds that decide who holds a `scheduled` task: ours only while the
/// newest of these is `watchdog_parked` or `watchdog_held`. Used by both
/// [`crate::Board::parked`] and [`release`], so they agree on ownership.
pub(crate) const SCHEDULING_KINDS: &str = "('scheduled','unblocked','watchdog_parked',\
'watchdog_held','watchdog_released','promoted_manual','assigned')";

pub(crate) fn record_applied(
    conn: &Connection,
    task_id: &str,
    record_id: &str,
) -> rusqlite::Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM task_events WHERE task_id = ?1 AND kind LIKE 'watchdog\\_%' ESCAPE '\\' \
             AND json_valid(payload) AND json_extract(payload, '$.record_id') = ?2 LIMIT 1",
            params![task_id, record_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn load(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<Option<TaskRow>> {
    tx.query_row(
        &format!("SELECT {} FROM tasks WHERE id = ?1", TaskRow::COLUMNS),
        [id],
        TaskRow::from_row,
    )
    .optional()
}

fn state(t: &TaskRow) -> TaskState {
    TaskState {
        status: t.status.clone(),
        current_run_id: t.current_run_id,
        consecutive_failures: t.consecutive_failures,
    }
}

fn stale(status: Option<&str>, why: impl Into<String>) -> WriteOutcome {
    WriteOutcome::Stale {
        status: status.map(str::to_string),
        why: why.into(),
    }
}

fn newest_run_id(tx: &Transaction<'_>, task_id: &str) -> rusqlite::Result<Option<i64>> {
    tx.query_row(
        "SELECT MAX(id) FROM task_runs WHERE task_id = ?1",
        [task_id],
        |r| r.get(0),
    )
}

/// Hermes' unblock rule: `todo` when a parent is not `done` (an archived
/// parent counts as not done there too), else `ready`.
fn unblocked_status(tx: &Transaction<'_>, task_id: &str) -> rusqlite::Result<&'static str> {
    let undone: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM task_links l JOIN tasks p ON p.id = l.parent_id \
             WHERE l.child_id = ?1 AND p.status != 'done' LIMIT 1",
            [task_id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(if undone.is_some() { "todo" } else { "ready" })
}

/// Closes a run that is still open, as Hermes' `_end_run` does.
fn end_run(
    tx: &Transaction<'_>,
    run_id: i64,
    status: &str,
    summary: &str,
    now: i64,
) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE task_runs SET status = ?1, outcome = ?1, summary = ?2, ended_at = ?3, \
         claim_lock = NULL, claim_expires = NULL, worker_pid = NULL \
         WHERE id = ?4 AND ended_at IS NULL",
        params![status, summary, now, run_id],
    )
}

/// Hermes' own `schedule` of a task with no run in flight inserts a closed,
/// zero-length run (`_synthesize_ended_run`); we do the same. It matters:
/// when the dispatcher already recorded the worker's exit as `rate_limited`,
/// its respawn guard keys a fixed cooldown (300 s by default) on the newest
/// ended run. Ours, newer, ends that cooldown: the provider's real reset
/// time was already waited for by the park. The one-second step keeps ours
/// the newest even when both ended in the same second.
fn synthesize_ended_run(
    tx: &Transaction<'_>,
    task: &TaskRow,
    summary: &str,
    now: i64,
) -> rusqlite::Result<()> {
    let newest_end: Option<i64> = tx.query_row(
        "SELECT MAX(ended_at) FROM task_runs WHERE task_id = ?1",
        [&task.id],
        |r| r.get(0),
    )?;
    let ended = newest_end.map_or(now, |t| now.max(t + 1));
    tx.execute(
        "INSERT INTO task_runs (task_id, profile, status, started_at, ended_at, outcome, summary) \
         VALUES (?1, ?2, 'scheduled', ?3, ?3, 'scheduled', ?4)",
        params![task.id, task.assignee, ended, summary],
    )?;
    Ok(())
}

/// A run still pointed at by a task that is not running is closed as
/// `reclaimed`, as Hermes' unblock does.
fn close_dangling_run(tx: &Transaction<'_>, task: &TaskRow, now: i64) -> rusqlite::Result<()> {
    if let Some(dangling) = task.current_run_id {
        end_run(
            tx,
            dangling,
            "reclaimed",
            "invariant recovery by kanban-watchdog",
            now,
        )?;
    }
    Ok(())
}

fn append_event(
    tx: &Transaction<'_>,
    task_id: &str,
    run_id: Option<i64>,
    kind: &str,
    payload: serde_json::Value,
    now: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![task_id, run_id, kind, payload.to_string(), now],
    )?;
    Ok(())
}

pub(crate) fn park(
    tx: &Transaction<'_>,
    req: &ParkRequest,
    now: i64,
) -> rusqlite::Result<WriteOutcome> {
    if let Some(record_id) = &req.record_id
        && record_applied(tx, &req.task_id, record_id)?
    {
        return Ok(WriteOutcome::AlreadyApplied);
    }
    let Some(task) = load(tx, &req.task_id)? else {
        return Ok(stale(None, "no such task on the board"));
    };
    let status = task.status.as_str();
    // The guard: which state may this request move?
    let from_running = match (req.run_id, status) {
        (Some(run), "running") if task.current_run_id == Some(run) => {
            let facts = crate::facts::run_facts(tx, &task.id, run)?;
            if facts.verdict != RunVerdict::Open {
                return Ok(stale(
                    Some(status),
                    format!("run {run} is {}", facts.verdict.describe()),
                ));
            }
            true
        }
        (Some(run), "running") => {
            return Ok(stale(
                Some(status),
                format!(
                    "task is running run {:?}, not run {run}",
                    task.current_run_id
                ),
            ));
        }
        (Some(run), "ready" | "blocked") => {
            let newest = newest_run_id(tx, &task.id)?;
            if newest != Some(run) {
                return Ok(stale(
                    Some(status),
                    format!("task's newest run is {newest:?}, not run {run}"),
                ));
            }
            // Only a run the dispatcher ended as a failure, on a task nobody
            // decided on since; a blocked task only when the dispatcher's
            // breaker blocked it (`gave_up`), never a worker's or a
            // person's block.
            let facts = crate::facts::run_facts(tx, &task.id, run)?;
            if !matches!(facts.verdict, RunVerdict::EndedByDispatcher { .. }) {
                return Ok(stale(
                    Some(status),
                    format!("run {run} was {}", facts.verdict.describe()),
                ));
            }
            if let Some(d) = &facts.decided_after {
                return Ok(stale(
                    Some(status),
                    format!(
                        "{} decided on the task after run {run} ({} at {})",
                        d.by(),
                        d.kind,
                        d.at
                    ),
                ));
            }
            if status == "blocked" && !facts.gave_up_after {
                return Ok(stale(
                    Some(status),
                    format!("task is blocked, but not by the dispatcher's breaker after run {run}"),
                ));
            }
            false
        }
        (None, "ready") if task.claim_lock.is_none() && req.kind == Kind::Held => false,
        _ => {
            return Ok(stale(
                Some(status),
                format!("task is {status}; nothing to do for a {:?}", req.kind),
            ));
        }
    };
    let target = match req.kind {
        Kind::Parked | Kind::Held => "scheduled",
        Kind::Requeued => unblocked_status(tx, &task.id)?,
        Kind::Blocked => "blocked",
    };
    let before = state(&task);
    if from_running {
        let outcome = if req.kind == Kind::Blocked {
            "gave_up"
        } else {
            "scheduled"
        };
        end_run(
            tx,
            req.run_id.unwrap_or_default(),
            outcome,
            &req.reason,
            now,
        )?;
    } else {
        close_dangling_run(tx, &task, now)?;
    }
    let reset_failures = req.kind == Kind::Requeued;
    // A budget block says why in the field `hermes kanban show` prints.
    let block_reason = (req.kind == Kind::Blocked).then_some(req.reason.as_str());
    let changed = tx.execute(
        "UPDATE tasks SET status = ?1, claim_lock = NULL, claim_expires = NULL, worker_pid = NULL, \
         current_run_id = NULL, \
         consecutive_failures = CASE WHEN ?2 THEN 0 ELSE consecutive_failures END, \
         last_failure_error = CASE WHEN ?2 THEN NULL ELSE COALESCE(?6, last_failure_error) END \
         WHERE id = ?3 AND status = ?4 AND current_run_id IS ?5",
        params![
            target,
            reset_failures,
            task.id,
            task.status,
            task.current_run_id,
            block_reason
        ],
    )?;
    if changed != 1 {
        return Ok(stale(Some(status), "task changed under the transaction"));
    }
    if !from_running && req.kind != Kind::Blocked {
        synthesize_ended_run(tx, &task, &req.reason, now)?;
    }
    append_event(
        tx,
        &task.id,
        req.run_id,
        req.kind.event_kind(),
        json!({
            "actor": ACTOR,
            "reason": req.reason,
            "record_id": req.record_id,
            "due_at": req.due_at,
            "provider": req.provider,
            "fallback": req.fallback,
            "from_status": task.status,
        }),
        now,
    )?;
    let after = load(tx, &task.id)?
        .map(|t| state(&t))
        .unwrap_or(before.clone());
    Ok(WriteOutcome::Applied(Change {
        at: now,
        action: match req.kind {
            Kind::Parked => "park",
            Kind::Held => "hold",
            Kind::Requeued => "requeue",
            Kind::Blocked => "block",
        },
        task: task.id,
        record_id: req.record_id.clone(),
        reason: req.reason.clone(),
        before,
        after,
        event_kind: req.kind.event_kind(),
        dry_run: false,
    }))
}

pub(crate) fn release(
    tx: &Transaction<'_>,
    req: &ReleaseRequest,
    now: i64,
) -> rusqlite::Result<WriteOutcome> {
    let Some(task) = load(tx, &req.task_id)? else {
        return Ok(stale(None, "no such task on the board"));
    };
    if task.status != "scheduled" {
        return Ok(stale(Some(&task.status), "task is no longer scheduled"));
    }
    // Only release what we parked: our event must be the latest scheduling decision.
    let latest: Option<(String, Option<String>)> = tx
        .query_row(
            &format!(
                "SELECT kind, payload FROM task_events WHERE task_id = ?1 AND kind IN \
                 {SCHEDULING_KINDS} ORDER BY id DESC LIMIT 1"
            ),
            [&task.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let record_id = match &latest {
        Some((kind, payload)) if kind == "watchdog_parked" || kind == "watchdog_held" => payload
            .as_deref()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .and_then(|v| v["record_id"].as_str().map(str::to_string)),
        _ => {
            return Ok(stale(
                Some(&task.status),
                "scheduled by someone else; left alone",
            ));
        }
    };
    let before = state(&task);
    close_dangling_run(tx, &task, now)?;
    let target = unblocked_status(tx, &task.id)?;
    let changed = tx.execute(
        "UPDATE tasks SET status = ?1, current_run_id = NULL, consecutive_failures = 0, \
         last_failure_error = NULL WHERE id = ?2 AND status = 'scheduled'",
        params![target, task.id],
    )?;
    if changed != 1 {
        return Ok(stale(
            Some(&task.status),
            "task changed under the transaction",
        ));
    }
    append_event(
        tx,
        &task.id,
        None,
        "watchdog_released",
        json!({"actor": ACTOR, "reason": req.reason, "status": target, "record_id": record_id}),
        now,
    )?;
    let after = load(tx, &task.id)?
        .map(|t| state(&t))
        .unwrap_or(before.clone());
    Ok(WriteOutcome::Applied(Change {
        at: now,
        action: "release",
        task: task.id,
        record_id,
        reason: req.reason.clone(),
        before,
        after,
        event_kind: "watchdog_released",
        dry_run: false,
    }))
}
