//! Rows read from the board and the requests and outcomes of writes.

use std::time::Duration;

use rusqlite::Row;
use serde::{Deserialize, Serialize};

/// Every event kind we write starts with this, so operators can tell ours apart.
pub const EVENT_PREFIX: &str = "watchdog_";

#[derive(Clone, Debug)]
pub struct BoardOptions {
    /// SQLite busy timeout per statement (Hermes itself uses 120 s).
    pub busy_timeout: Duration,
    /// Retries of a whole transaction after the busy timeout ran out, before
    /// the write is reported as [`crate::BoardError::Busy`].
    pub busy_retries: u32,
    /// Do everything but commit.
    pub dry_run: bool,
}

impl Default for BoardOptions {
    fn default() -> Self {
        BoardOptions {
            busy_timeout: Duration::from_secs(5),
            busy_retries: 5,
            dry_run: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskRow {
    pub id: String,
    pub title: String,
    pub assignee: Option<String>,
    pub status: String,
    pub current_run_id: Option<i64>,
    pub worker_pid: Option<i64>,
    pub claim_lock: Option<String>,
    pub consecutive_failures: i64,
    pub last_failure_error: Option<String>,
    pub model_override: Option<String>,
}

impl TaskRow {
    pub(crate) const COLUMNS: &'static str = "id, title, assignee, status, current_run_id, worker_pid, \
        claim_lock, consecutive_failures, last_failure_error, model_override";

    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<TaskRow> {
        Ok(TaskRow {
            id: r.get(0)?,
            title: r.get(1)?,
            assignee: r.get(2)?,
            status: r.get(3)?,
            current_run_id: r.get(4)?,
            worker_pid: r.get(5)?,
            claim_lock: r.get(6)?,
            consecutive_failures: r.get::<_, Option<i64>>(7)?.unwrap_or(0),
            last_failure_error: r.get(8)?,
            model_override: r.get(9)?,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub task_id: String,
    pub status: String,
    pub outcome: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
}

impl RunRow {
    pub(crate) const COLUMNS: &'static str = "id, task_id, status, outcome, started_at, ended_at";

    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<RunRow> {
        Ok(RunRow {
            id: r.get(0)?,
            task_id: r.get(1)?,
            status: r.get(2)?,
            outcome: r.get(3)?,
            started_at: r.get(4)?,
            ended_at: r.get(5)?,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReadyTask {
    pub id: String,
    pub assignee: Option<String>,
    pub created_at: i64,
}

/// Why the watchdog moved a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A delayed retry after a transient failure (counts against the budget).
    Parked,
    /// A ready task held back because its provider is unhealthy.
    Held,
    /// Requeued at once, to run on a healthy fallback provider.
    Requeued,
    /// The delayed-retry budget is spent: left `blocked` with the reason.
    Blocked,
}

impl AsRef<str> for Kind {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [Kind::Parked, Kind::Held, Kind::Requeued, Kind::Blocked];

    /// Its name in the watchdog's `/status` (`parked`, `held`, ...), as
    /// serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Parked => "parked",
            Kind::Held => "held",
            Kind::Requeued => "requeued",
            Kind::Blocked => "blocked",
        }
    }

    pub fn event_kind(self) -> &'static str {
        match self {
            Kind::Parked => "watchdog_parked",
            Kind::Held => "watchdog_held",
            Kind::Requeued => "watchdog_requeued",
            Kind::Blocked => "watchdog_budget_exhausted",
        }
    }
}

/// A task we parked or held, still waiting in `scheduled`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Parked {
    pub task_id: String,
    pub assignee: Option<String>,
    pub kind: Kind,
    /// When it should return (epoch s); `None` = when its provider heals.
    pub due_at: Option<i64>,
    pub provider: Option<String>,
    pub reason: String,
    pub record_id: Option<String>,
    pub parked_at: i64,
}

/// Move a task out of the dispatcher's way.
///
/// Guards, checked inside the write transaction: with a `run_id` (a
/// record-driven move), the task must be `running` that very run (still
/// open), or `ready`/`blocked` with that run as its newest, the run ended by
/// the dispatcher as a failure (`crashed`, `rate_limited`, `timed_out`,
/// `spawn_failed`, `gave_up`: never a run the worker reported, `completed`
/// or `blocked`), no worker's or person's decision on the task since (see
/// [`crate::DECISION_KINDS`]), and a `blocked` task blocked by the
/// dispatcher's breaker (`gave_up`), not by a `blocked` event. Without a
/// `run_id` (a hold), it must be `ready` and unclaimed. With a
/// `writer_pid`, the run's `spawned` pid, when the board has one, must be
/// it. Anything else is stale and changes nothing.
#[derive(Clone, Debug, Serialize)]
pub struct ParkRequest {
    pub task_id: String,
    pub kind: Kind,
    pub run_id: Option<i64>,
    /// The pid of the process that wrote the record behind this request
    /// (the record's `shim_pid`): when the run's `spawned` event names
    /// another pid, the request is stale (not the run's own record).
    pub writer_pid: Option<u32>,
    pub record_id: Option<String>,
    pub due_at: Option<i64>,
    pub provider: Option<String>,
    /// For [`Kind::Requeued`]: where the retry is steered.
    pub fallback: Option<String>,
    /// For [`Kind::Requeued`]: the fallback's model. On a board with
    /// `tasks.provider_override` (Hermes 0.22) the task's
    /// `model_override`/`provider_override` are set to the fallback, as
    /// `hermes kanban set-model` does (Hermes refuses a provider without a
    /// model, so no model means no native steering), unless the task has an
    /// override of its own.
    pub fallback_model: Option<String>,
    pub reason: String,
}

/// Return a task we parked to the dispatcher: to `ready`, or to `review`
/// when the parked run was claimed from the review lane; `todo` when a
/// parent is not done (by the board's Hermes' rule).
#[derive(Clone, Debug, Serialize)]
pub struct ReleaseRequest {
    pub task_id: String,
    pub reason: String,
    /// Released early because its provider healed by hand (an operator's
    /// `provider reset`, or a re-auth): the park it ends is not counted
    /// against the delayed-retry budget.
    pub healed: bool,
}

/// A task whose model/provider override we set to steer it to a fallback,
/// still holding exactly what we set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Steered {
    pub task_id: String,
    /// The provider it was steered away from.
    pub from: Option<String>,
    pub provider: String,
    pub model: String,
}

/// Clear the override we set on a task (its primary healed).
#[derive(Clone, Debug, Serialize)]
pub struct ClearOverride {
    pub task_id: String,
    /// The override we set, as [`Steered`] listed it: the write changes
    /// nothing unless the task still holds exactly this.
    pub provider: String,
    pub model: String,
    pub reason: String,
}

/// The task fields a change is judged by, before and after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskState {
    pub status: String,
    pub current_run_id: Option<i64>,
    pub consecutive_failures: i64,
}

/// What a committed change did: the audit line's `action` and the `kind`
/// label of the watchdog's `board_writes` counter (`park`, `release`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteAction {
    /// [`Kind::Parked`].
    Park,
    /// [`Kind::Held`].
    Hold,
    /// [`Kind::Requeued`].
    Requeue,
    /// [`Kind::Blocked`].
    Block,
    /// A parked task returned to the dispatcher.
    Release,
    /// An override we set cleared.
    Unsteer,
}

impl WriteAction {
    /// Every action, in the order listed.
    pub const ALL: [WriteAction; 6] = [
        WriteAction::Park,
        WriteAction::Hold,
        WriteAction::Requeue,
        WriteAction::Block,
        WriteAction::Release,
        WriteAction::Unsteer,
    ];

    /// Its name, as serialized (`park`, `hold`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            WriteAction::Park => "park",
            WriteAction::Hold => "hold",
            WriteAction::Requeue => "requeue",
            WriteAction::Block => "block",
            WriteAction::Release => "release",
            WriteAction::Unsteer => "unsteer",
        }
    }
}

impl From<Kind> for WriteAction {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Parked => WriteAction::Park,
            Kind::Held => WriteAction::Hold,
            Kind::Requeued => WriteAction::Requeue,
            Kind::Blocked => WriteAction::Block,
        }
    }
}

impl std::fmt::Display for WriteAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One committed (or, in dry-run, would-be) change: also the audit line.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub at: i64,
    pub action: WriteAction,
    pub task: String,
    pub record_id: Option<String>,
    pub reason: String,
    pub before: TaskState,
    pub after: TaskState,
    pub event_kind: &'static str,
    pub dry_run: bool,
}

#[derive(Clone, Debug, Serialize)]
pub enum WriteOutcome {
    Applied(Change),
    /// An event of ours for this record is already on the task.
    AlreadyApplied,
    /// The guard did not hold: the task moved on.
    Stale {
        status: Option<String>,
        why: String,
    },
}

impl WriteOutcome {
    pub fn applied(&self) -> Option<&Change> {
        match self {
            WriteOutcome::Applied(c) => Some(c),
            _ => None,
        }
    }
}

/// Dispatcher progress seen on the board.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgressMark {
    /// The newest progress event after the starting id (the starting id
    /// when there is none).
    pub last_event_id: i64,
    pub last_event_at: Option<i64>,
    /// Progress events after the starting id.
    pub new_events: u64,
    /// The board's newest event of any kind when read: the next starting id.
    pub scanned_through: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_action_serializes_as_its_name_and_all_lists_each_once() {
        for (i, a) in WriteAction::ALL.into_iter().enumerate() {
            assert_eq!(
                serde_json::to_value(a).unwrap(),
                serde_json::Value::from(a.as_str())
            );
            assert_eq!(a.to_string(), a.as_str());
            assert!(!WriteAction::ALL[..i].contains(&a), "{a} listed twice");
        }
        for kind in Kind::ALL {
            assert!(WriteAction::ALL.contains(&WriteAction::from(kind)));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::from(kind.as_str())
            );
            let back: Kind = serde_json::from_value(kind.as_str().into()).unwrap();
            assert_eq!(back, kind);
        }
    }
}
