//! The real `worker-shim` binary in a Hermes kanban worker's place: the exit
//! trailer newer Hermes reads from the task's log, and runs skipped while
//! their provider is unhealthy with no healthy fallback.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const SHIM: &str = env!("CARGO_BIN_EXE_worker-shim");

/// A line the built-in catalogue classifies as a transient rate limit.
const CODEX_429: &str =
    "HTTP 429: The usage limit has been reached. plan_type: team, resets_at: 1780861905";

/// What Hermes 0.22's dispatcher matches (`_EXIT_TRAILER_RE`, MULTILINE).
fn trailers(text: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|l| l.strip_prefix("[kanban-worker-exit] rc="))
        .filter_map(|rest| rest.trim_end().parse().ok())
        .collect()
}

/// The exit code Hermes 0.22 reads from a task log: the last trailer in
/// its last 4000 bytes (`_worker_log_exit_code`).
fn log_exit_code(log: &[u8]) -> Option<i32> {
    let tail = &log[log.len().saturating_sub(4000)..];
    trailers(&String::from_utf8_lossy(tail)).last().copied()
}

fn shim(records: &Path) -> Command {
    let mut cmd = Command::new(SHIM);
    cmd.env("WORKER_SHIM_RECORD_DIR", records)
        .env("WORKER_SHIM_HEALTH_FILE", records.join("no-health.json"))
        .env_remove("WORKER_SHIM_TEMPFAIL_EXIT")
        .env_remove("WORKER_SHIM_NO_SKIP")
        .env_remove("HERMES_KANBAN_TASK")
        .env_remove("HERMES_KANBAN_RUN_ID")
        .env_remove("HERMES_KANBAN_DB")
        .env_remove("HERMES_PROFILE")
        .stdin(Stdio::null());
    cmd
}

fn kanban(cmd: &mut Command) -> &mut Command {
    cmd.env("HERMES_KANBAN_TASK", "t_1")
        .env("HERMES_PROFILE", "coder")
}

/// A 0.22-style worker: its output, then its own trailer on stderr.
fn worker_022(stdout: &str, rc: i32) -> Vec<String> {
    let script =
        format!("echo '{stdout}'; printf '\\n[kanban-worker-exit] rc={rc}\\n' >&2; exit {rc}");
    vec!["--".into(), "sh".into(), "-c".into(), script]
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("run shim")
}

#[test]
fn a_translated_exit_ends_the_log_with_the_shims_own_trailer() {
    let tmp = tempfile::tempdir().unwrap();
    let out = output(kanban(&mut shim(tmp.path())).args(worker_022(CODEX_429, 0)));
    assert_eq!(out.status.code(), Some(75));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(trailers(&err), vec![0, 75], "stderr: {err}");
    assert!(
        err.ends_with("\n[kanban-worker-exit] rc=75\n"),
        "the shim's trailer is its last output: {err:?}"
    );

    // As the dispatcher sees it: both streams appended to one task log.
    let log = tmp.path().join("t_1.log");
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let status = kanban(&mut shim(tmp.path()))
        .args(worker_022(CODEX_429, 0))
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(75));
    assert_eq!(log_exit_code(&std::fs::read(&log).unwrap()), Some(75));
}

#[test]
fn no_trailer_when_the_code_is_unchanged_or_outside_kanban() {
    let tmp = tempfile::tempdir().unwrap();
    // Unchanged: a clean kanban run keeps the worker's own trailer only.
    let out = output(kanban(&mut shim(tmp.path())).args(worker_022("all done", 0)));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(trailers(&String::from_utf8_lossy(&out.stderr)), vec![0]);
    // Unchanged: a failure that is not translated (exit 9).
    let out = output(kanban(&mut shim(tmp.path())).args([
        "--",
        "sh",
        "-c",
        &format!("echo '{CODEX_429}'; exit 9"),
    ]));
    assert_eq!(out.status.code(), Some(9));
    assert!(trailers(&String::from_utf8_lossy(&out.stderr)).is_empty());
    // Outside kanban: translated, but nobody reads a trailer.
    let out = output(shim(tmp.path()).args(["--", "sh", "-c", &format!("echo '{CODEX_429}'")]));
    assert_eq!(out.status.code(), Some(75));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("kanban-worker-exit"), "stderr: {err}");
}

#[test]
fn a_signal_death_or_a_worker_that_cannot_start_gets_a_trailer_too() {
    let tmp = tempfile::tempdir().unwrap();
    let out = output(kanban(&mut shim(tmp.path())).args(["--", "sh", "-c", "kill -TERM $$"]));
    assert_eq!(out.status.code(), Some(143));
    assert_eq!(trailers(&String::from_utf8_lossy(&out.stderr)), vec![143]);
    let out = output(kanban(&mut shim(tmp.path())).args(["--", "/nonexistent/hermes"]));
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(trailers(&String::from_utf8_lossy(&out.stderr)), vec![127]);
}
