//! Leftovers of the hostile-input work (issue 13 item 11 and the state
//! directory rule of item 4), against the real binary: a failed audit
//! append is counted in its own metric, and `status` trusts `http.addr` and
//! `state.json` only from a private state directory.

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use kanban_watchdog::state::PersistedState;
use kanban_watchdog::status::Status;

const T: Duration = Duration::from_secs(30);

#[test]
fn a_failed_audit_append_is_counted_in_its_own_metric() {
    let mut h = Harness::new();
    let Some(fs) = Tmpfs::mount(&h.state, "64k") else {
        return;
    };
    h.start();
    wait_until("the audit log opened", T, || {
        h.state.join("audit.jsonl").exists().then_some(())
    });
    assert_eq!(
        h.metric("kanban_watchdog_audit_append_failures_total", &[]),
        0.0
    );
    fs.fill();
    let run = h.running_task("t1", "coder");
    h.write_record(&record(
        Some(("t1", run)),
        "coder",
        Some(rate_limit(Some(now() + 3600))),
    ));
    wait_until("t1 parked", T, || {
        (h.status_of("t1") == "scheduled").then_some(())
    });
    wait_until("the failed append counted", T, || {
        (h.metric("kanban_watchdog_audit_append_failures_total", &[]) >= 1.0).then_some(())
    });
    assert_eq!(
        h.metric("kanban_watchdog_board_writes_total", &[("kind", "park")]),
        1.0
    );
}

fn status_cmd(state_dir: &Path) -> Output {
    Command::new(WATCHDOG)
        .arg("status")
        .arg("--state-dir")
        .arg(state_dir)
        .env_remove("KANBAN_WATCHDOG_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run kanban-watchdog status")
}

/// A state directory as another user could have prepared it: an
/// `http.addr` pointing at a port the "attacker" listens on, and a saved
/// status saying all is well.
fn planted(dir: &Path) -> TcpListener {
    std::fs::create_dir_all(dir).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    std::fs::write(
        dir.join("http.addr"),
        listener.local_addr().unwrap().to_string(),
    )
    .unwrap();
    let mut state = PersistedState {
        last_status: Some(Status {
            version: "planted".into(),
            generated_at: now(),
            ..Status::default()
        }),
        ..PersistedState::default()
    };
    state.save(&dir.join("state.json")).unwrap();
    listener
}

fn assert_refused(out: &Output, listener: &TcpListener, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{what}: status succeeded: {stdout}");
    assert!(
        stderr.contains("unsafe directory") && stderr.contains("Fix:"),
        "{what}: {stderr}"
    );
    assert!(!stdout.contains("planted"), "{what}: {stdout}");
    assert!(
        listener.accept().is_err(),
        "{what}: status connected to the planted address"
    );
}

#[test]
fn status_reads_http_addr_and_state_json_only_from_a_private_state_directory() {
    let tmp = tempfile::tempdir().unwrap();
    // Writable by others.
    let open = tmp.path().join("open");
    let listener = planted(&open);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_refused(&status_cmd(&open), &listener, "a 0777 state dir");

    // Made private again: the same files are used.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = status_cmd(&open);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("saved state from")
            || listener.accept().is_ok(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Owned by another user (root can hand it over; CI runs as root).
    if nix::unistd::geteuid().is_root() {
        let theirs = tmp.path().join("theirs");
        let listener = planted(&theirs);
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        nix::unistd::chown(
            &theirs,
            Some(nix::unistd::Uid::from_raw(65534)),
            Some(nix::unistd::Gid::from_raw(65534)),
        )
        .unwrap();
        assert_refused(&status_cmd(&theirs), &listener, "a state dir of uid 65534");
    } else {
        prerequisite_missing(
            "the other-owner case needs root to chown a directory to another user",
        );
    }
}
