//! Board facts about one worker run, read-only: who ended the run, and
//! whether a worker or a person decided on the task after it. The watchdog
//! judges a provider only on a run that failed, and moves a task only when
//! nobody else decided on it; both questions are answered here, from the
//! board itself, never from the worker's output.
//!
//! What the outcomes and event kinds mean is read from Hermes Agent 0.19.0's
//! `hermes_cli/kanban_db.py`:
//!
//! * a worker that reports ends its run itself: `complete_task` closes it
//!   with outcome `completed` (event `completed`), `block_task` with outcome
//!   `blocked` (event `blocked`, or `block_loop_detected` when routed to
//!   triage, or `dependency_wait` when routed to todo);
//! * the dispatcher ends runs it judged: `detect_crashed_workers` with
//!   `crashed` (a clean exit without a terminal call is a `crashed` run with
//!   a `protocol_violation` event) or `rate_limited` (rc 75);
//!   `enforce_max_runtime` with `timed_out`; the spawn path with
//!   `spawn_failed`, or `gave_up` when its breaker trips; the crash-path
//!   breaker leaves the run `crashed` and moves the task ready -> blocked
//!   with a `gave_up` event that carries no run;
//! * anything else ended the run for another reason: `reclaimed` (claim TTL
//!   or an operator's reclaim), `stale`, `scheduled` (Hermes' `schedule` or
//!   our own park), or an outcome this build does not know.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// Run outcomes the dispatcher writes when it judged a worker's exit (or
/// its runtime): the run failed.
pub const DISPATCHER_OUTCOMES: &[&str] = &[
    "crashed",
    "rate_limited",
    "timed_out",
    "spawn_failed",
    "gave_up",
];

/// Run outcomes written by the worker's own terminal call
/// (`kanban_complete` / `kanban_block`, or the same CLI commands).
/// `review_requested`, `changes_requested` and `dependency_wait` are the
/// 0.22 review lane's and dependency hand-off's (`_RUN_OUTCOME_TERMINAL_STATUS`).
pub const WORKER_OUTCOMES: &[&str] = &[
    "completed",
    "blocked",
    "review_requested",
    "changes_requested",
    "dependency_wait",
];

/// Event kinds by which a worker or a person decided on a task, from
/// Hermes 0.19.0's `kanban_db.py`. After a run ended, any of these means
/// the task is no longer the dispatcher's (nor ours) to move:
///
/// | kind | written by |
/// |---|---|
/// | `completed` | `complete_task` (`kanban_complete`, `hermes kanban complete`) |
/// | `blocked` | `block_task` (`kanban_block`, `hermes kanban block`) |
/// | `block_loop_detected` | `block_task` routing a repeated block to triage |
/// | `dependency_wait` | `block_task --kind dependency` (to todo) |
/// | `unblocked` | `unblock_task` (`hermes kanban unblock`) |
/// | `promoted_manual` | `promote_task` (`hermes kanban promote`) |
/// | `assigned` | `assign_task` / `reassign_task` |
/// | `archived` | `archive_task` |
/// | `scheduled` | `schedule_task` (`hermes kanban schedule`) |
/// | `specified` | `specify_triage_task` |
/// | `decomposed` | `decompose_triage_task` |
/// | `edited` | `edit_completed_task_result` |
/// | `commented` | `add_comment` (also written by `unblock --reason`) |
/// | `review_requested` | 0.22: `request_review` (`kanban_request_review`) |
/// | `changes_requested` | 0.22: a reviewer's `request_changes` |
/// | `review_reopened` | 0.22: `reopen_review_task` |
/// | `model_override_set` | 0.22: `set_model_override` (`hermes kanban set-model`) |
///
/// Not in the list: dispatcher bookkeeping (`claimed`, `spawned`,
/// `crashed`, `protocol_violation`, `rate_limited`, `timed_out`, `stale`,
/// `reclaimed`, `gave_up`, `promoted`, `respawn_guarded`, ...), heartbeats,
/// links and attachments, and our own `watchdog_*` events.
pub const DECISION_KINDS: &[&str] = &[
    "completed",
    "blocked",
    "block_loop_detected",
    "dependency_wait",
    "unblocked",
    "promoted_manual",
    "assigned",
    "archived",
    "scheduled",
    "specified",
    "decomposed",
    "edited",
    "commented",
    "review_requested",
    "changes_requested",
    "review_reopened",
    "model_override_set",
];

/// Kinds a worker's own terminal call writes (a person running the same
/// CLI command writes them too).
const WORKER_DECISION_KINDS: &[&str] = &[
    "completed",
    "blocked",
    "block_loop_detected",
    "dependency_wait",
    "review_requested",
    "changes_requested",
];

/// Who ended a run, as the board tells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum RunVerdict {
    /// Still in flight: the task is `running` this run and it has not ended.
    Open,
    /// The dispatcher judged the exit (or the runtime) as a failure.
    EndedByDispatcher {
        outcome: String,
        /// A clean exit without a terminal call (`protocol_violation`).
        protocol_violation: bool,
    },
    /// The worker reported: `completed` or `blocked`.
    ReportedByWorker { outcome: String },
    /// Ended some other way (`reclaimed`, `stale`, `scheduled`, our own
    /// park, an unknown outcome); `None` when the run is not ended but the
    /// task does not point at it.
    EndedOther { outcome: Option<String> },
    /// No such run for this task on the board.
    Unknown,
}

impl RunVerdict {
    /// The run failed (or may still fail): a provider may be judged on it.
    pub fn failed_or_open(&self) -> bool {
        matches!(
            self,
            RunVerdict::Open | RunVerdict::EndedByDispatcher { .. }
        )
    }

    /// A short operator-facing description.
    pub fn describe(&self) -> String {
        match self {
            RunVerdict::Open => "still open (the task is running it)".into(),
            RunVerdict::EndedByDispatcher {
                outcome,
                protocol_violation: true,
            } => format!("ended by the dispatcher: {outcome} (protocol violation)"),
            RunVerdict::EndedByDispatcher { outcome, .. } => {
                format!("ended by the dispatcher: {outcome}")
            }
            RunVerdict::ReportedByWorker { outcome } => {
                format!("reported by the worker itself: {outcome}")
            }
            RunVerdict::EndedOther { outcome: Some(o) } => format!("ended otherwise: {o}"),
            RunVerdict::EndedOther { outcome: None } => {
                "not ended, but the task is not running it".into()
            }
            RunVerdict::Unknown => "not on the board".into(),
        }
    }
}

/// A decision a worker or a person made on a task (one event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskDecision {
    pub event_id: i64,
    pub kind: String,
    pub at: i64,
}

impl TaskDecision {
    /// `the worker or an operator` for the kinds a worker's terminal call
    /// writes, `an operator` for the rest.
    pub fn by(&self) -> &'static str {
        if WORKER_DECISION_KINDS.contains(&self.kind.as_str()) {
            "the worker or an operator"
        } else {
            "an operator"
        }
    }
}

/// What the board says about one record's run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunFacts {
    pub verdict: RunVerdict,
    /// The newest [`DECISION_KINDS`] event after the run ended (never set
    /// for an open run).
    pub decided_after: Option<TaskDecision>,
    /// A `gave_up` (the dispatcher's breaker) after the run ended.
    pub gave_up_after: bool,
    /// The newest `gave_up` after the run is Hermes 0.22's exit-78 block
    /// (a terminal provider error: `terminal_provider: true` in its
    /// payload, `sticky`), not a failure count.
    pub terminal_provider_block: bool,
    /// Where the run was claimed from: `review` when its `claimed` event
    /// says `source_status: review` (0.22's review lane), else `None`.
    pub source_status: Option<String>,
    /// The task's status now (`None`: no such task).
    pub task_status: Option<String>,
    /// The pid the dispatcher spawned for this run: the payload of the
    /// run's newest `spawned` event (0.19 and later write one; the pid
    /// columns are cleared when the run ends, the event stays). With the
    /// shim wired in, the shim's own pid. `None`: no such event yet.
    pub spawned_pid: Option<i64>,
}

impl RunFacts {
    /// The facts permit judging a provider and moving the task: the run is
    /// open or failed by the dispatcher's judgement, and nobody decided on
    /// the task since.
    pub fn run_failed_undecided(&self) -> bool {
        self.verdict.failed_or_open() && self.decided_after.is_none()
    }
}

fn sql_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|k| format!("'{k}'")).collect();
    format!("({})", quoted.join(","))
}

/// Reads the facts about run `run_id` of task `task_id` (read-only: works
/// inside a write transaction and on a read-only connection).
pub(crate) fn run_facts(
    conn: &Connection,
    task_id: &str,
    run_id: i64,
) -> rusqlite::Result<RunFacts> {
    let task: Option<(String, Option<i64>)> = conn
        .prepare_cached("SELECT status, current_run_id FROM tasks WHERE id = ?1")?
        .query_row([task_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let run: Option<(String, Option<String>, Option<i64>)> = conn
        .prepare_cached("SELECT task_id, outcome, ended_at FROM task_runs WHERE id = ?1")?
        .query_row([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let task_status = task.as_ref().map(|(s, _)| s.clone());
    let unknown = RunFacts {
        verdict: RunVerdict::Unknown,
        decided_after: None,
        gave_up_after: false,
        terminal_provider_block: false,
        source_status: None,
        task_status: task_status.clone(),
        spawned_pid: None,
    };
    let Some((run_task, outcome, ended_at)) = run else {
        return Ok(unknown);
    };
    if run_task != task_id {
        return Ok(unknown);
    }
    let source_status = claimed_from(conn, task_id, run_id)?;
    let spawned_pid = spawned_pid(conn, task_id, run_id)?;
    let Some(ended_at) = ended_at else {
        let current = task
            .as_ref()
            .is_some_and(|(s, cur)| s == "running" && *cur == Some(run_id));
        return Ok(RunFacts {
            verdict: if current {
                RunVerdict::Open
            } else {
                RunVerdict::EndedOther { outcome: None }
            },
            decided_after: None,
            gave_up_after: false,
            terminal_provider_block: false,
            source_status,
            task_status,
            spawned_pid,
        });
    };
    let outcome_str = outcome.clone().unwrap_or_default();
    let verdict = if DISPATCHER_OUTCOMES.contains(&outcome_str.as_str()) {
        let protocol_violation: bool = conn
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM task_events WHERE run_id = ?1 \
                 AND kind = 'protocol_violation')",
            )?
            .query_row([run_id], |r| r.get(0))?;
        RunVerdict::EndedByDispatcher {
            outcome: outcome_str,
            protocol_violation,
        }
    } else if WORKER_OUTCOMES.contains(&outcome_str.as_str()) {
        RunVerdict::ReportedByWorker {
            outcome: outcome_str,
        }
    } else {
        RunVerdict::EndedOther { outcome }
    };
    // "After the run ended": after the run's own last event (the one that
    // closed it: crashed, completed, ...), not counting ours; a run with no
    // event of its own falls back to its end time.
    let anchor: i64 = match conn
        .prepare_cached(
            "SELECT MAX(id) FROM task_events WHERE task_id = ?1 AND run_id = ?2 \
             AND kind NOT LIKE 'watchdog\\_%' ESCAPE '\\'",
        )?
        .query_row(params![task_id, run_id], |r| r.get::<_, Option<i64>>(0))?
    {
        Some(id) => id,
        None => conn
            .prepare_cached(
                "SELECT COALESCE(MAX(id), 0) FROM task_events WHERE task_id = ?1 \
                 AND created_at < ?2",
            )?
            .query_row(params![task_id, ended_at], |r| r.get(0))?,
    };
    let decided_after = conn
        .prepare_cached(&format!(
            "SELECT id, kind, created_at FROM task_events WHERE task_id = ?1 AND id > ?2 \
             AND kind IN {} ORDER BY id DESC LIMIT 1",
            sql_list(DECISION_KINDS)
        ))?
        .query_row(params![task_id, anchor], |r| {
            Ok(TaskDecision {
                event_id: r.get(0)?,
                kind: r.get(1)?,
                at: r.get(2)?,
            })
        })
        .optional()?;
    // The newest `gave_up` since the run: 0.22's exit-78 block carries
    // `terminal_provider: true` (`_account_crashes`, `force_trip`).
    let gave_up: Option<bool> = conn
        .prepare_cached(
            "SELECT COALESCE(json_valid(payload) AND \
             json_extract(payload, '$.terminal_provider') = 1, 0) \
             FROM task_events WHERE task_id = ?1 AND id >= ?2 AND kind = 'gave_up' \
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![task_id, anchor], |r| r.get(0))
        .optional()?;
    Ok(RunFacts {
        verdict,
        decided_after,
        gave_up_after: gave_up.is_some(),
        terminal_provider_block: gave_up == Some(true),
        source_status,
        task_status,
        spawned_pid,
    })
}

/// The pid in the run's newest `spawned` event (`_set_worker_pid`).
fn spawned_pid(conn: &Connection, task_id: &str, run_id: i64) -> rusqlite::Result<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT CASE WHEN json_type(payload, '$.pid') = 'integer' \
             THEN json_extract(payload, '$.pid') END FROM task_events \
             WHERE task_id = ?1 AND run_id = ?2 AND kind = 'spawned' AND json_valid(payload) \
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![task_id, run_id], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten())
}

/// `source_status` of the run's `claimed` event (0.22 writes `review` for a
/// claim from the review lane; 0.19 writes none).
pub(crate) fn claimed_from(
    conn: &Connection,
    task_id: &str,
    run_id: i64,
) -> rusqlite::Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT json_extract(payload, '$.source_status') FROM task_events \
             WHERE task_id = ?1 AND run_id = ?2 AND kind = 'claimed' AND json_valid(payload) \
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![task_id, run_id], |r| r.get::<_, Option<String>>(0))
        .optional()?
        .flatten())
}
