//! Issue 9: faults around the real `worker-shim` binary — the shim itself
//! SIGKILLed, and a record directory on a full filesystem.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_support::{Tmpfs, file_names as entries, proc_alive, wait_for};

mod common;

use common::shim_bin;

const CODEX_429: &str =
    "HTTP 429: The usage limit has been reached. plan_type: team, resets_at: 1893456000";

fn shim(record_dir: &Path) -> Command {
    let mut cmd = Command::new(shim_bin());
    cmd.env("WORKER_SHIM_RECORD_DIR", record_dir)
        .env_remove("WORKER_SHIM_TEMPFAIL_EXIT")
        .env_remove("HERMES_KANBAN_TASK")
        .env_remove("HERMES_KANBAN_RUN_ID")
        .env_remove("WORKER_SHIM_IN_RUN");
    cmd
}

/// What the kanban dispatcher makes of a worker's exit status (Hermes 0.19,
/// mirrored by `kanban-watchdog fake-gateway`): 75 is a rate limit, 0 must
/// have completed the task, anything else — a signal death included — is a
/// crashed run.
fn dispatcher_outcome(status: std::process::ExitStatus) -> &'static str {
    match status.code() {
        Some(75) => "rate_limited",
        Some(0) => "exited_ok",
        _ => "crashed",
    }
}

#[test]
fn a_sigkilled_shim_is_a_signal_death_to_its_parent_and_its_worker_dies_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = shim(tmp.path())
        .args(["--", "sh", "-c", "echo $$; exec sleep 300"])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let worker: i32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    assert!(proc_alive(worker));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert_eq!(status.code(), None);
    assert_eq!(
        dispatcher_outcome(status),
        "crashed",
        "the dispatcher still sees a failed run"
    );
    // PR_SET_PDEATHSIG: the worker does not outlive its shim.
    wait_for(
        "the worker to die with its shim",
        Duration::from_secs(10),
        || !proc_alive(worker),
    );
    // The shim had no chance to write a record; nothing half-written is left.
    let left = entries(tmp.path());
    assert!(
        left.iter().all(|n| !n.ends_with(".json")),
        "no record: {left:?}"
    );
}

#[test]
fn a_sigkilled_shim_leaves_no_grandchild_of_its_worker_running() {
    let tmp = tempfile::tempdir().unwrap();
    // A worker that runs a tool in the background, as an agent does.
    let mut child = shim(tmp.path())
        .args(["--", "sh", "-c", "sleep 300 & echo $!; wait"])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let grandchild: i32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    assert!(proc_alive(grandchild));
    // The group guard is started for workers still running after 20 ms.
    let shim_pid = child.id();
    wait_for("the group guard", Duration::from_secs(10), || {
        // Children of any of the shim's threads.
        std::fs::read_dir(format!("/proc/{shim_pid}/task"))
            .map(|tasks| {
                tasks.flatten().any(|t| {
                    std::fs::read_to_string(t.path().join("children"))
                        .unwrap_or_default()
                        .split_whitespace()
                        .any(|pid| {
                            std::fs::read(format!("/proc/{pid}/cmdline"))
                                .is_ok_and(|c| c.starts_with(b"worker-shim-guard"))
                        })
                })
            })
            .unwrap_or(false)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc_alive(grandchild) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survived = proc_alive(grandchild);
    if survived {
        // Do not leave it behind ourselves.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(grandchild),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        !survived,
        "the worker's child {grandchild} outlived the SIGKILLed shim by 5 s"
    );
}

#[test]
fn a_full_record_filesystem_passes_the_exit_code_through_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("records");
    let Some(fs) = Tmpfs::mount(&dir, "64k") else {
        return;
    };
    fs.fill();
    let before = entries(&dir);
    // Issue 13 item 10: without a record nothing reschedules the task with
    // its reset time, so a transient failure is not translated to 75 either:
    // the worker's own code passes through, as the line says.
    for (script, want) in [
        ("echo out; echo err >&2; exit 7", 7),
        ("echo out; exit 0", 0),
        (
            &format!("echo out; echo '{CODEX_429}' >&2; exit 0") as &str,
            0,
        ),
        (
            &format!("echo out; echo '{CODEX_429}' >&2; exit 1") as &str,
            1,
        ),
        ("echo out; kill -TERM $$", 128 + libc::SIGTERM),
    ] {
        let out = shim(&dir)
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(want), "{script}");
        assert_eq!(out.stdout, b"out\n", "stdout passes through: {script}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("worker-shim: exit record not written")
                && err.contains("No space left on device")
                && err.contains(&format!("worker exit code {want} passed through")),
            "stderr says why: {err}"
        );
        assert_eq!(
            err.contains("not translated to 75"),
            script.contains("429"),
            "the line says a translation was dropped: {err}"
        );
        assert_eq!(
            err.lines()
                .filter(|l| l.starts_with("worker-shim:"))
                .count(),
            1,
            "one line from the shim: {err}"
        );
    }
    assert_eq!(
        entries(&dir),
        before,
        "no temp file or partial record left on the full filesystem"
    );
    drop(fs);
}
