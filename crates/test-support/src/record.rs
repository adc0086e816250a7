//! Exit records and failures built in memory, for unit and property tests
//! and fuzzing.

use exit_record::Failure;
use exit_record::{ExitInfo, ExitRecord, StreamCapture, TaskContext};
use failure_signatures::FailureClass;

/// A record of one run for property tests and fuzzing: `failure` (None: a
/// clean exit), for task `t` run 1 of profile `coder` or for no task,
/// exiting `code`, `stdout` its captured output.
pub fn probe_record(
    failure: Option<Failure>,
    with_task: bool,
    code: Option<i32>,
    stdout: String,
) -> ExitRecord {
    ExitRecord {
        exit: ExitInfo {
            code,
            ..ExitInfo::default()
        },
        task: if with_task {
            TaskContext {
                id: Some("t".into()),
                run_id: Some(1),
                profile: Some("coder".into()),
                ..TaskContext::default()
            }
        } else {
            TaskContext::default()
        },
        stdout: StreamCapture {
            head: stdout,
            ..StreamCapture::default()
        },
        failure,
        ..blank_record("probe")
    }
}

/// A record `id` with nothing in it: no task, no exit code, nothing
/// captured, no failure, started and ended at the epoch. Tests set what
/// they need with `ExitRecord { failure, ..blank_record("r") }`.
pub fn blank_record(id: &str) -> ExitRecord {
    ExitRecord {
        schema: exit_record::SCHEMA_NAME.into(),
        schema_version: exit_record::SCHEMA_VERSION,
        id: id.into(),
        argv: vec![],
        cwd: None,
        pid: None,
        shim_pid: 1,
        started_at: jiff::Timestamp::UNIX_EPOCH,
        ended_at: jiff::Timestamp::UNIX_EPOCH,
        duration_ms: 0,
        exit: ExitInfo::default(),
        task: TaskContext::default(),
        stdout: StreamCapture::default(),
        stderr: StreamCapture::default(),
        failure: None,
        steered: None,
        run_at_exit: None,
        skipped: None,
    }
}

/// Codex's usage-limit 429 (`codex-usage-limit`, transient, no provider
/// named), resetting at `resets_at`.
pub fn rate_limit(resets_at: Option<i64>) -> Failure {
    Failure {
        class: FailureClass::RateLimit,
        signature: "codex-usage-limit".into(),
        provider: None,
        transient: true,
        matched_line: "HTTP 429: The usage limit has been reached".into(),
        resets_at,
        retry_after_s: None,
    }
}
