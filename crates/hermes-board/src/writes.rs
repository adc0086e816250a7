//! The guarded write transactions. Each function runs inside a `BEGIN
//! IMMEDIATE` transaction opened by [`crate::Board`]; it re-reads the task,
//! checks the guard, writes, and appends its event.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use crate::cached::{exec, row};
use crate::caps::BoardInfo;
use crate::facts::RunVerdict;
use crate::types::{
    Change, ClearOverride, Kind, ParkRequest, ReleaseRequest, Steered, TaskRow, TaskState,
    WriteAction, WriteOutcome,
};

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
    Ok(row(
        conn,
        "SELECT 1 FROM task_events WHERE task_id = ?1 AND kind LIKE 'watchdog\\_%' ESCAPE '\\' \
             AND json_valid(payload) AND json_extract(payload, '$.record_id') = ?2 LIMIT 1",
        params![task_id, record_id],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

fn load(tx: &Connection, id: &str) -> rusqlite::Result<Option<TaskRow>> {
    row(
        tx,
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

fn newest_run_id(tx: &Connection, task_id: &str) -> rusqlite::Result<Option<i64>> {
    row(
        tx,
        "SELECT MAX(id) FROM task_runs WHERE task_id = ?1",
        [task_id],
        |r| r.get(0),
    )
}

/// Hermes' unblock rule: `todo` when a parent is not done, else `ready`.
/// "Done" follows the board's Hermes: 0.19's `unblock_task` counts only
/// `done` (an archived parent keeps the child in `todo`); 0.22's
/// `_landing_status_after_parents` counts `done` and `archived`. A task
/// whose run was claimed from `review` lands in `review` instead of
/// `ready`, as 0.22's `unblock_task` resumes it.
fn unblocked_status(
    tx: &Connection,
    task_id: &str,
    info: &BoardInfo,
    resume_review: bool,
) -> rusqlite::Result<&'static str> {
    let done = if info.features.archived_parent_done {
        "('done','archived')"
    } else {
        "('done')"
    };
    let undone: Option<i64> = row(
        tx,
        &format!(
            "SELECT 1 FROM task_links l JOIN tasks p ON p.id = l.parent_id \
                 WHERE l.child_id = ?1 AND p.status NOT IN {done} LIMIT 1"
        ),
        [task_id],
        |r| r.get(0),
    )
    .optional()?;
    Ok(match (undone.is_some(), resume_review) {
        (true, _) => "todo",
        (false, true) => "review",
        (false, false) => "ready",
    })
}

/// `, worker_started_at = NULL` where `table` has the column (0.22).
fn clear_fingerprint(info: &BoardInfo, table: &str) -> &'static str {
    if info.has(table, "worker_started_at") {
        ", worker_started_at = NULL"
    } else {
        ""
    }
}

/// Closes a run that is still open, as Hermes' `_end_run` does.
fn end_run(
    tx: &Connection,
    info: &BoardInfo,
    run_id: i64,
    status: &str,
    summary: &str,
    now: i64,
) -> rusqlite::Result<usize> {
    exec(
        tx,
        &format!(
            "UPDATE task_runs SET status = ?1, outcome = ?1, summary = ?2, ended_at = ?3, \
             claim_lock = NULL, claim_expires = NULL, worker_pid = NULL{} \
             WHERE id = ?4 AND ended_at IS NULL",
            clear_fingerprint(info, "task_runs")
        ),
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
    tx: &Connection,
    task: &TaskRow,
    summary: &str,
    now: i64,
) -> rusqlite::Result<()> {
    let newest_end: Option<i64> = row(
        tx,
        "SELECT MAX(ended_at) FROM task_runs WHERE task_id = ?1",
        [&task.id],
        |r| r.get(0),
    )?;
    let ended = newest_end.map_or(now, |t| now.max(t + 1));
    exec(
        tx,
        "INSERT INTO task_runs (task_id, profile, status, started_at, ended_at, outcome, summary) \
         VALUES (?1, ?2, 'scheduled', ?3, ?3, 'scheduled', ?4)",
        params![task.id, task.assignee, ended, summary],
    )?;
    Ok(())
}

/// A run still pointed at by a task that is not running is closed as
/// `reclaimed`, as Hermes' unblock does.
fn close_dangling_run(
    tx: &Connection,
    info: &BoardInfo,
    task: &TaskRow,
    now: i64,
) -> rusqlite::Result<()> {
    if let Some(dangling) = task.current_run_id {
        end_run(
            tx,
            info,
            dangling,
            "reclaimed",
            "invariant recovery by kanban-watchdog",
            now,
        )?;
    }
    Ok(())
}

fn append_event(
    tx: &Connection,
    task_id: &str,
    run_id: Option<i64>,
    kind: &str,
    payload: serde_json::Value,
    now: i64,
) -> rusqlite::Result<()> {
    exec(
        tx,
        "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![task_id, run_id, kind, payload.to_string(), now],
    )?;
    Ok(())
}

/// Why a request from the record of pid `writer` may not move run `run`:
/// the dispatcher spawned another pid for it.
fn not_the_runs_writer(facts: &crate::RunFacts, writer: Option<u32>, run: i64) -> Option<String> {
    let (writer, spawned) = (writer?, facts.spawned_pid?);
    (spawned != i64::from(writer))
        .then(|| format!("run {run} is pid {spawned}, the record was written by pid {writer}"))
}

pub(crate) fn park(
    tx: &Connection,
    req: &ParkRequest,
    info: &BoardInfo,
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
            if let Some(why) = not_the_runs_writer(&facts, req.writer_pid, run) {
                return Ok(stale(Some(status), why));
            }
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
        // 0.22 returns a failed review run to `review`.
        (Some(run), "ready" | "review" | "blocked") => {
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
            if let Some(why) = not_the_runs_writer(&facts, req.writer_pid, run) {
                return Ok(stale(Some(status), why));
            }
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
            // Hermes 0.22's exit-78 block (a terminal provider error) is
            // taken over only to wait for the provider's re-auth (or to
            // run on a healthy fallback), never for a timed retry.
            let waits_for_heal =
                (req.kind == Kind::Parked && req.due_at.is_none()) || req.kind == Kind::Requeued;
            if status == "blocked" && facts.terminal_provider_block && !waits_for_heal {
                return Ok(stale(
                    Some(status),
                    format!(
                        "task is blocked by the dispatcher's terminal-provider (exit 78) block after run {run}; \
                         only a wait for the provider's re-auth takes it over"
                    ),
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
    // Where the run came from: a claim from 0.22's review lane goes back
    // to `review` when released (`_retry_status_for_run`).
    let resume_review = match req.run_id {
        Some(run) => crate::facts::claimed_from(tx, &task.id, run)?.as_deref() == Some("review"),
        None => status == "review",
    };
    let target = match req.kind {
        Kind::Parked | Kind::Held => "scheduled",
        Kind::Requeued => unblocked_status(tx, &task.id, info, resume_review)?,
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
            info,
            req.run_id.unwrap_or_default(),
            outcome,
            &req.reason,
            now,
        )?;
    } else {
        close_dangling_run(tx, info, &task, now)?;
    }
    let reset_failures = req.kind == Kind::Requeued;
    // A budget block says why in the field `hermes kanban show` prints.
    let block_reason = (req.kind == Kind::Blocked).then_some(req.reason.as_str());
    let changed = exec(
        tx,
        &format!(
            "UPDATE tasks SET status = ?1, claim_lock = NULL, claim_expires = NULL, worker_pid = NULL{}, \
             current_run_id = NULL, \
             consecutive_failures = CASE WHEN ?2 THEN 0 ELSE consecutive_failures END, \
             last_failure_error = CASE WHEN ?2 THEN NULL ELSE COALESCE(?6, last_failure_error) END \
             WHERE id = ?3 AND status = ?4 AND current_run_id IS ?5",
            clear_fingerprint(info, "tasks")
        ),
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
    let steering = if req.kind == Kind::Requeued {
        steer_natively(tx, &task, req, info)?
    } else {
        serde_json::Value::Null
    };
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
            "resume_status": if resume_review { "review" } else { "ready" },
            "override": steering,
        }),
        now,
    )?;
    let after = load(tx, &task.id)?
        .map(|t| state(&t))
        .unwrap_or(before.clone());
    Ok(WriteOutcome::Applied(Change {
        at: now,
        action: req.kind.into(),
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
    tx: &Connection,
    req: &ReleaseRequest,
    info: &BoardInfo,
    now: i64,
) -> rusqlite::Result<WriteOutcome> {
    let Some(task) = load(tx, &req.task_id)? else {
        return Ok(stale(None, "no such task on the board"));
    };
    if task.status != "scheduled" {
        return Ok(stale(Some(&task.status), "task is no longer scheduled"));
    }
    // Only release what we parked: our event must be the latest scheduling decision.
    let latest: Option<(String, Option<String>)> = row(
        tx,
        &format!(
            "SELECT kind, payload FROM task_events WHERE task_id = ?1 AND kind IN \
                 {SCHEDULING_KINDS} ORDER BY id DESC LIMIT 1"
        ),
        [&task.id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?;
    let ours = match &latest {
        Some((kind, payload)) if kind == "watchdog_parked" || kind == "watchdog_held" => payload
            .as_deref()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .unwrap_or_default(),
        _ => {
            return Ok(stale(
                Some(&task.status),
                "scheduled by someone else; left alone",
            ));
        }
    };
    let record_id = ours["record_id"].as_str().map(str::to_string);
    let resume_review = ours["resume_status"].as_str() == Some("review");
    let before = state(&task);
    close_dangling_run(tx, info, &task, now)?;
    let target = unblocked_status(tx, &task.id, info, resume_review)?;
    let changed = exec(
        tx,
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
        json!({
            "actor": ACTOR,
            "reason": req.reason,
            "status": target,
            "record_id": record_id,
            "healed": req.healed,
        }),
        now,
    )?;
    let after = load(tx, &task.id)?
        .map(|t| state(&t))
        .unwrap_or(before.clone());
    Ok(WriteOutcome::Applied(Change {
        at: now,
        action: WriteAction::Release,
        task: task.id,
        record_id,
        reason: req.reason.clone(),
        before,
        after,
        event_kind: "watchdog_released",
        dry_run: false,
    }))
}

/// Native steering (Hermes 0.22): the task's `model_override` and
/// `provider_override` set to the fallback, as `set_model_override(model,
/// provider)` does, so the dispatcher itself passes `-m M --provider P`.
/// Only on a board with the column, with a fallback model (Hermes refuses a
/// provider without a model), and on a task with no override of its own
/// (or the one we set before). Returns what goes into the event: the
/// override set, or why none was.
fn steer_natively(
    tx: &Connection,
    task: &TaskRow,
    req: &ParkRequest,
    info: &BoardInfo,
) -> rusqlite::Result<serde_json::Value> {
    let Some(provider) = req.fallback.as_deref() else {
        return Ok(serde_json::Value::Null);
    };
    if !info.provider_override() {
        return Ok(json!({"set": false, "why": "no tasks.provider_override on this board"}));
    }
    let Some(model) = req.fallback_model.as_deref() else {
        return Ok(json!({"set": false, "why": "the fallback has no model in the chain"}));
    };
    let (cur_model, cur_provider): (Option<String>, Option<String>) = row(
        tx,
        "SELECT model_override, provider_override FROM tasks WHERE id = ?1",
        [&task.id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let ours = steered_override(tx, &task.id)?;
    let untouched = match (&cur_model, &cur_provider) {
        (None, None) => true,
        (Some(m), Some(p)) => ours.as_ref().is_some_and(|(om, op)| om == m && op == p),
        _ => false,
    };
    if !untouched {
        return Ok(json!({
            "set": false,
            "why": "the task has a model override of its own",
        }));
    }
    exec(
        tx,
        "UPDATE tasks SET model_override = ?1, provider_override = ?2 WHERE id = ?3",
        params![model, provider, task.id],
    )?;
    Ok(json!({"set": true, "model": model, "provider": provider, "from": req.provider}))
}

/// The override our newest steering event set on a task, when no
/// override event came after it (ours clearing it, or a person's
/// `set-model`).
fn steered_override(
    conn: &Connection,
    task_id: &str,
) -> rusqlite::Result<Option<(String, String)>> {
    let newest: Option<(String, Option<String>)> = row(
        conn,
        "SELECT kind, payload FROM task_events WHERE task_id = ?1 AND (kind IN \
             ('model_override_set','watchdog_override_cleared') OR (kind = 'watchdog_requeued' \
             AND json_valid(payload) AND json_extract(payload, '$.override.set') = 1)) \
             ORDER BY id DESC LIMIT 1",
        [task_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?;
    let Some(("watchdog_requeued", Some(payload))) =
        newest.as_ref().map(|(k, p)| (k.as_str(), p.clone()))
    else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
    Ok(
        match (
            v["override"]["model"].as_str(),
            v["override"]["provider"].as_str(),
        ) {
            (Some(m), Some(p)) => Some((m.to_string(), p.to_string())),
            _ => None,
        },
    )
}

/// Tasks still holding exactly the override we set (see [`steer_natively`]).
pub(crate) fn steered(conn: &Connection) -> rusqlite::Result<Vec<Steered>> {
    let mut stmt = conn.prepare_cached(
        "SELECT t.id, t.model_override, t.provider_override, \
         (SELECT json_extract(e.payload, '$.override.from') FROM task_events e \
          WHERE e.task_id = t.id AND e.kind = 'watchdog_requeued' AND json_valid(e.payload) \
          AND json_extract(e.payload, '$.override.set') = 1 ORDER BY e.id DESC LIMIT 1) \
         FROM tasks t WHERE t.provider_override IS NOT NULL AND t.model_override IS NOT NULL \
         AND t.status != 'archived'",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (task_id, model, provider, from) = row?;
        if steered_override(conn, &task_id)?.as_ref() == Some(&(model.clone(), provider.clone())) {
            out.push(Steered {
                task_id,
                from,
                provider,
                model,
            });
        }
    }
    Ok(out)
}

/// Clears the override we set, only while the task still holds exactly
/// it and nobody set another since.
pub(crate) fn clear_override(
    tx: &Connection,
    req: &ClearOverride,
    now: i64,
) -> rusqlite::Result<WriteOutcome> {
    let Some(task) = load(tx, &req.task_id)? else {
        return Ok(stale(None, "no such task on the board"));
    };
    if task.status == "archived" {
        return Ok(stale(Some(&task.status), "task is archived"));
    }
    let want = (req.model.clone(), req.provider.clone());
    if steered_override(tx, &task.id)?.as_ref() != Some(&want) {
        return Ok(stale(
            Some(&task.status),
            "the override is no longer the one we set; left alone",
        ));
    }
    let changed = exec(
        tx,
        "UPDATE tasks SET model_override = NULL, provider_override = NULL \
         WHERE id = ?1 AND model_override IS ?2 AND provider_override IS ?3",
        params![task.id, req.model, req.provider],
    )?;
    if changed != 1 {
        return Ok(stale(
            Some(&task.status),
            "the override is no longer the one we set; left alone",
        ));
    }
    append_event(
        tx,
        &task.id,
        None,
        "watchdog_override_cleared",
        json!({"actor": ACTOR, "reason": req.reason, "model": req.model, "provider": req.provider}),
        now,
    )?;
    let st = state(&task);
    Ok(WriteOutcome::Applied(Change {
        at: now,
        action: WriteAction::Unsteer,
        task: task.id,
        record_id: None,
        reason: req.reason.clone(),
        before: st.clone(),
        after: st,
        event_kind: "watchdog_override_cleared",
        dry_run: false,
    }))
}
