//! Exit records built in memory, for property tests and fuzzing.

use exit_record::Failure;
use exit_record::{ExitInfo, ExitRecord, StreamCapture, TaskContext};

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
        schema: exit_record::SCHEMA_NAME.into(),
        schema_version: exit_record::SCHEMA_VERSION,
        id: "probe".into(),
        argv: vec![],
        cwd: None,
        pid: None,
        shim_pid: 1,
        started_at: jiff::Timestamp::UNIX_EPOCH,
        ended_at: jiff::Timestamp::UNIX_EPOCH,
        duration_ms: 0,
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
        stderr: StreamCapture::default(),
        failure,
        steered: None,
        run_at_exit: None,
        skipped: None,
    }
}
