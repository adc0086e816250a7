//! The versioned exit-record schema.

use failure_signatures::{Classification, FailureClass};
use hermes_board::env;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Name written into every record, so a stray JSON file is never mistaken for one.
pub const SCHEMA_NAME: &str = "kanban-watchdog/exit-record";
/// Bumped on every incompatible change; readers refuse versions they do not know.
pub const SCHEMA_VERSION: u32 = 1;

/// One worker run, as seen by the shim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub schema: String,
    pub schema_version: u32,
    /// Unique, time-ordered (UUIDv7): also the file name, `<id>.json`.
    pub id: String,
    /// The worker's argv as the shim ran it (the target, then its arguments).
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    /// The worker's pid (`None` when it could not be spawned).
    pub pid: Option<u32>,
    /// The shim's own pid: the one the dispatcher recorded as `worker_pid`.
    pub shim_pid: u32,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    pub duration_ms: u64,
    pub exit: ExitInfo,
    pub task: TaskContext,
    pub stdout: StreamCapture,
    pub stderr: StreamCapture,
    /// `None` when no failure signature matched.
    pub failure: Option<Failure>,
    /// Set when the shim steered this run to a fallback provider (from the
    /// watchdog's published health file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steered: Option<Steered>,
    /// The record's kanban run as the shim read it from the board
    /// (read-only) after the worker exited; only checked when a failure was
    /// classified in a Hermes worker's output. Absent when not checked or
    /// the board could not say (older records lack it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at_exit: Option<RunAtExit>,
    /// Set when the shim did not start the worker at all: the run's
    /// provider was unhealthy with no healthy fallback (from the watchdog's
    /// health file). `failure` then carries the provider's class and reset.
    /// Optional: older records lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Skipped>,
}

/// The provider failure a record reports: the record's own type, so the
/// record's format changes only with [`SCHEMA_VERSION`], not whenever the
/// classifier's result type does. The classes are the shared vocabulary
/// ([`FailureClass`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The failure class of the winning signature.
    pub class: FailureClass,
    /// Name of the winning signature.
    pub signature: String,
    /// The signature's provider, else one inferred from the text (never
    /// trusted alone: see the watchdog's blame rules).
    pub provider: Option<String>,
    /// Whether requeueing later (without a human) makes sense.
    pub transient: bool,
    /// The whole line that matched: trimmed, redacted, capped at 1 KiB.
    pub matched_line: String,
    /// When the limit resets, in epoch seconds.
    pub resets_at: Option<i64>,
    /// The relative delay in seconds, when known.
    pub retry_after_s: Option<f64>,
}

impl From<Classification> for Failure {
    fn from(c: Classification) -> Failure {
        Failure {
            class: c.class,
            signature: c.signature,
            provider: c.provider,
            transient: c.transient,
            matched_line: c.matched_line,
            resets_at: c.resets_at,
            retry_after_s: c.retry_after_s,
        }
    }
}

impl From<&Classification> for Failure {
    fn from(c: &Classification) -> Failure {
        Failure::from(c.clone())
    }
}

/// A run the shim skipped instead of starting the worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The unhealthy provider the run would have used.
    pub provider: String,
    /// When it is expected back (epoch s); `None`: until re-auth.
    pub until: Option<i64>,
    /// Why it is unhealthy, as the watchdog published it (redacted).
    pub reason: String,
}

/// A kanban run's state on the board when the worker exited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAtExit {
    /// `true` while the run had not ended (`task_runs.ended_at` NULL).
    pub open: bool,
    /// `task_runs.outcome` (`completed`, `blocked`, `crashed`, ...), if set.
    #[serde(default)]
    pub outcome: Option<String>,
}

impl RunAtExit {
    /// The worker ended the run itself (`kanban complete` / `kanban block`):
    /// whatever it printed, the run did not fail.
    pub fn reported_by_worker(&self) -> bool {
        !self.open && matches!(self.outcome.as_deref(), Some("completed" | "blocked"))
    }
}

/// The provider and model the shim appended to a Hermes worker's argv.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Steered {
    pub provider: String,
    pub model: Option<String>,
    /// The unhealthy provider the run was steered away from.
    pub from: Option<String>,
}

/// How the worker ended and what the shim reported.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The worker's exit code (`None` when killed by a signal or never spawned).
    pub code: Option<i32>,
    /// The signal that killed the worker, if any.
    pub signal: Option<i32>,
    /// The code the shim exited with (128+N for signals, 75 for a translated
    /// transient failure, 126/127 for spawn failures).
    pub reported_code: i32,
    /// Why the worker could not be started, when it was not.
    pub spawn_error: Option<String>,
}

/// Which kanban task this run belonged to, from the dispatcher's environment.
/// Every field is `None` when the variable was absent (a run outside Hermes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskContext {
    /// `HERMES_KANBAN_TASK`
    pub id: Option<String>,
    /// `HERMES_KANBAN_RUN_ID`
    pub run_id: Option<i64>,
    /// `HERMES_KANBAN_BOARD`
    pub board: Option<String>,
    /// `HERMES_KANBAN_DB`
    pub db: Option<String>,
    /// `HERMES_PROFILE`
    pub profile: Option<String>,
    /// `HERMES_KANBAN_CLAIM_LOCK`
    pub claim_lock: Option<String>,
}

impl TaskContext {
    /// Reads the Hermes dispatcher's variables from an environment lookup.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> TaskContext {
        let non_empty = |k: &str| get(k).filter(|v| !v.is_empty());
        TaskContext {
            id: non_empty(env::KANBAN_TASK),
            run_id: non_empty(env::KANBAN_RUN_ID).and_then(|v| v.trim().parse().ok()),
            board: non_empty(env::KANBAN_BOARD),
            db: non_empty(env::KANBAN_DB),
            profile: non_empty(env::PROFILE),
            claim_lock: non_empty(env::KANBAN_CLAIM_LOCK),
        }
    }
}

/// The head and tail of one output stream (already redacted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCapture {
    /// `false` when capture was turned off for this stream.
    pub captured: bool,
    pub bytes_total: u64,
    /// The first bytes of the stream (lossy UTF-8).
    pub head: String,
    /// The last bytes after the head (lossy UTF-8); empty when the head holds it all.
    pub tail: String,
    /// `true` when bytes between head and tail were dropped.
    pub truncated: bool,
}

/// A fresh, time-ordered, unique record id.
pub fn new_record_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl ExitRecord {
    /// The text a classifier should scan: head and tail of both streams.
    pub fn captured_text(&self) -> String {
        let mut text = String::new();
        for part in [
            &self.stdout.head,
            &self.stdout.tail,
            &self.stderr.head,
            &self.stderr.tail,
        ] {
            if !part.is_empty() {
                text.push_str(part);
                if !part.ends_with('\n') {
                    text.push('\n');
                }
            }
        }
        text
    }
}
