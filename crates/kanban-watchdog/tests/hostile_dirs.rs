//! Issue 13, item 4: predictable directories under /tmp, and links planted
//! where the programs write. With `HOME` and `XDG_STATE_HOME` unset, the
//! record and state directories fall back to `/tmp/kanban-watchdog-<uid>`,
//! a name any local user can create first. A real second local user (made
//! with `useradd` when running as root, as CI does) pre-creates it and
//! plants links at the names the programs write: the watchdog refuses to
//! start and says why and how to fix it (OpenSSH StrictModes), the shim
//! still runs the worker and skips only its record, nothing of the victim
//! is overwritten or appended to, and no steering is taken from the
//! attacker's `health.json`.

mod common;

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hermes_board::testkit;

const T: Duration = Duration::from_secs(30);

/// Under CI (root with useradd) a missing prerequisite is a failure;
/// locally the test says SKIPPED and returns.
fn missing(why: &str) {
    prerequisite_missing(&format!("{why} (CI runs as root with useradd)"));
}

#[derive(Clone, Copy, Debug)]
struct User {
    uid: u32,
    gid: u32,
}

/// A real local user: looked up, else created with `useradd` (root only).
fn local_user(name: &str) -> Result<User, String> {
    let lookup = || {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| User {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            })
    };
    if let Some(u) = lookup() {
        return Ok(u);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(format!(
            "needs a second local user ({name}): run as root (CI does) or create it"
        ));
    }
    // Parallel tests may race on /etc/passwd's lock: retry, re-checking.
    let mut last = String::new();
    for _ in 0..20 {
        match Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => last = String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => return Err(format!("cannot run useradd: {e}")),
        }
        if let Some(u) = lookup() {
            return Ok(u);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("useradd {name} failed: {last}"))
}

fn two_users() -> Option<(User, User)> {
    match (local_user("kwtest-victim"), local_user("kwtest-attacker")) {
        (Ok(v), Ok(a)) => Some((v, a)),
        (Err(e), _) | (_, Err(e)) => {
            missing(&e);
            None
        }
    }
}

fn chown_r(path: &Path, u: User) {
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", u.uid, u.gid))
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Runs `sh -c script` as `u`, asserting success.
fn sh_as(u: User, script: &str) {
    let out = Command::new("sh")
        .args(["-c", script])
        .uid(u.uid)
        .gid(u.gid)
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "as uid {}: {script}\n{}",
        u.uid,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The binaries copied where any user can run them (a CI checkout may sit
/// under a home only root can enter).
fn public_binaries(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = |from: &Path| {
        let to = dir.join(from.file_name().unwrap());
        std::fs::copy(from, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        to
    };
    (copy(Path::new(WATCHDOG)), copy(&shim_bin()))
}

/// A command with no HOME and no XDG_STATE_HOME: the /tmp fallback.
fn bare(program: &Path, u: Option<User>, cwd: &Path) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("RUST_LOG", "info")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(u) = u {
        c.uid(u.uid).gid(u.gid);
    }
    c
}

/// Waits for `child` to exit within `timeout`; kills it otherwise (then
/// `None`: it did not refuse to run).
fn wait_exit(mut child: Child, timeout: Duration) -> (Option<i32>, String) {
    let start = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (code, err)
}

/// Every entry under `dir` (the directory included) with its owner.
fn owners(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        out.push((p.clone(), m.uid()));
        if m.is_dir()
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    out
}

/// Removes the planted directory (as root) when the test ends, however.
struct Planted(PathBuf);

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const PRECIOUS: &str = "the victim's own data\n";

#[test]
fn a_tmp_directory_planted_by_another_user_is_refused_and_nothing_of_the_victim_is_touched() {
    let Some((victim, attacker)) = two_users() else {
        return;
    };
    let planted = PathBuf::from(format!("/tmp/kanban-watchdog-{}", victim.uid));
    let _ = std::fs::remove_dir_all(&planted);
    let _cleanup = Planted(planted.clone());

    // The victim's own things, private to them.
    let tmp = tempfile::tempdir().unwrap();
    let bins = tempfile::tempdir().unwrap();
    let (watchdog, shim) = public_binaries(bins.path());
    let vdir = tmp.path().join("victim");
    std::fs::create_dir(&vdir).unwrap();
    let precious = vdir.join("precious");
    std::fs::write(&precious, PRECIOUS).unwrap();
    let hermes = vdir.join("hermes");
    std::fs::create_dir_all(hermes.join("profiles/coder")).unwrap();
    std::fs::write(
        hermes.join("profiles/coder/config.yaml"),
        "model:\n  provider: openai-codex\n  default: gpt-5\n",
    )
    .unwrap();
    drop(testkit::create_board(&hermes.join("kanban.db")).unwrap());
    let config = vdir.join("watchdog.yaml");
    std::fs::write(
        &config,
        format!(
            "hermes_home: {}\nhttp: {{listen: \"127.0.0.1:0\"}}\n\
             dispatcher: {{interval: 1s, stall_after: 60s, check_every: 100ms}}\n\
             restart: {{enabled: false}}\n",
            hermes.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    chown_r(&vdir, victim);
    std::fs::set_permissions(&vdir, std::fs::Permissions::from_mode(0o700)).unwrap();

    // The attacker gets there first: the directory, world-writable, with
    // links at the names the programs write and a health file that steers.
    let d = planted.display();
    let p = precious.display();
    sh_as(
        attacker,
        &format!(
            "umask 000 && mkdir -m 0777 {d} {d}/records {d}/records/done {d}/records/quarantine {d}/requests && \
             ln -s {p} {d}/audit.jsonl && ln -s {p} {d}/restart.log && \
             ln -s {p} {d}/records/quarantine/evil.json.reason && \
             echo 'not a record' > {d}/records/evil.json && \
             printf '%s' '{{\"steer\":{{\"coder\":{{\"provider\":\"evil\",\"model\":\"evil-model\",\"from\":\"openai-codex\"}}}}}}' > {d}/health.json && \
             i=0; while [ $i -lt 64 ]; do ln -s {p} {d}/.state.json.$i.tmp; ln -s {p} {d}/.health.json.$i.tmp; i=$((i+1)); done"
        ),
    );

    // The watchdog, as the victim, with neither HOME nor XDG_STATE_HOME.
    let child = bare(&watchdog, Some(victim), &vdir)
        .args(["run", "--config"])
        .arg(&config)
        .spawn()
        .unwrap();
    let (code, stderr) = wait_exit(child, Duration::from_secs(15));

    // The worker, shimmed as the dispatcher would, as the victim.
    let worker = bare(&shim, Some(victim), &vdir)
        .args([
            "--",
            "sh",
            "-c",
            "for a in \"$@\"; do echo \"arg:$a\"; done; exit 3",
            "sh",
            "chat",
            "-q",
            "work kanban task t1",
        ])
        .env("HERMES_KANBAN_TASK", "t1")
        .env("HERMES_KANBAN_RUN_ID", "1")
        .env("HERMES_PROFILE", "coder")
        .output()
        .unwrap();

    // Nothing of the victim's was overwritten or appended to.
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        PRECIOUS,
        "the victim's file was written through a planted link"
    );
    // Nothing of the victim's went into the attacker's directory (where
    // its owner could delete or read it): no record, no state.
    let theirs: Vec<_> = owners(&planted)
        .into_iter()
        .filter(|(_, uid)| *uid != attacker.uid)
        .collect();
    assert!(
        theirs.is_empty(),
        "the victim wrote into the attacker's directory: {theirs:?}"
    );

    // The watchdog refused to start, saying why and how to fix it.
    assert_eq!(
        code,
        Some(2),
        "the watchdog must refuse to start (still running after 15 s = None)\n{stderr}"
    );
    assert!(stderr.contains(&planted.display().to_string()), "{stderr}");
    assert!(
        stderr.contains(&format!("owned by uid {}", attacker.uid)),
        "{stderr}"
    );
    assert!(stderr.contains("Fix:"), "{stderr}");

    // The shim ran the worker, unsteered, with its own exit code, and said
    // in one line why no record was written.
    check_worker_ran_unsteered(&worker, 3);
    let err = String::from_utf8_lossy(&worker.stderr);
    let record_lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("exit record not written"))
        .collect();
    assert_eq!(record_lines.len(), 1, "{err}");
    assert!(
        record_lines[0].contains(&planted.display().to_string()),
        "{err}"
    );
    assert!(
        record_lines[0].contains(&format!("owned by uid {}", attacker.uid)),
        "{err}"
    );
}

fn check_worker_ran_unsteered(out: &Output, code: i32) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(code), "{stdout}");
    assert!(stdout.contains("arg:chat"), "the worker ran: {stdout}");
    assert!(
        !stdout.contains("arg:--provider") && !stdout.contains("arg:evil"),
        "steered by the attacker's health.json: {stdout}"
    );
}

#[test]
fn record_and_state_directories_writable_by_others_are_refused_and_the_worker_still_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let hermes = tmp.path().join("hermes");
    std::fs::create_dir_all(&hermes).unwrap();
    drop(testkit::create_board(&hermes.join("kanban.db")).unwrap());

    // The watchdog: a world-writable state directory.
    let config = tmp.path().join("w.yaml");
    std::fs::write(
        &config,
        format!(
            "hermes_home: {}\nstate_dir: {}\nrecord_dir: {}\nhttp: {{listen: \"\"}}\nrestart: {{enabled: false}}\n",
            hermes.display(),
            open.display(),
            tmp.path().join("records").display()
        ),
    )
    .unwrap();
    let child = bare(Path::new(WATCHDOG), None, tmp.path())
        .args(["run", "--config"])
        .arg(&config)
        .spawn()
        .unwrap();
    let (code, stderr) = wait_exit(child, Duration::from_secs(15));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("chmod go-w {}", open.display())),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(&open).unwrap().next().is_none(),
        "nothing written"
    );

    // A group-writable record directory below a private state directory.
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let records = state.join("records");
    std::fs::create_dir(&records).unwrap();
    std::fs::set_permissions(&records, std::fs::Permissions::from_mode(0o770)).unwrap();
    std::fs::write(
        &config,
        format!(
            "hermes_home: {}\nstate_dir: {}\nrecord_dir: {}\nhttp: {{listen: \"\"}}\nrestart: {{enabled: false}}\n",
            hermes.display(),
            state.display(),
            records.display()
        ),
    )
    .unwrap();
    let child = bare(Path::new(WATCHDOG), None, tmp.path())
        .args(["run", "--config"])
        .arg(&config)
        .spawn()
        .unwrap();
    let (code, stderr) = wait_exit(child, Duration::from_secs(15));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("writable by its group or by others"),
        "{stderr}"
    );

    // The shim into the world-writable directory: the worker runs, its
    // code passes through, one line says why there is no record.
    let out = bare(&shim_bin(), None, tmp.path())
        .env("WORKER_SHIM_RECORD_DIR", &open)
        .args(["--", "sh", "-c", "echo out; exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(out.stdout, b"out\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("exit record not written"), "{err}");
    assert!(err.contains("writable by its group or by others"), "{err}");
    assert!(
        std::fs::read_dir(&open).unwrap().next().is_none(),
        "no record written"
    );
}

#[test]
fn links_planted_in_our_own_directories_are_never_written_through() {
    let mut h = Harness::new();
    let private = |d: &Path| {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
    };
    private(&h.state);
    private(&h.records.join("done"));
    private(&h.records.join("quarantine"));
    std::fs::set_permissions(&h.records, std::fs::Permissions::from_mode(0o700)).unwrap();
    let precious = h.tmp.path().join("precious");
    std::fs::write(&precious, PRECIOUS).unwrap();
    let link = |at: PathBuf| std::os::unix::fs::symlink(&precious, at).unwrap();
    link(h.state.join("audit.jsonl"));
    link(h.state.join("state.json"));
    link(h.state.join("health.json"));
    link(h.records.join("quarantine/bad.json.reason"));
    std::fs::write(h.records.join("bad.json"), "not a record").unwrap();
    let run = h.running_task("t1", "coder");
    let rec = record(
        Some(("t1", run)),
        "coder",
        Some(rate_limit(Some(now() + 3600))),
    );
    link(h.records.join("done").join(format!("{}.json", rec.id)));
    h.write_record(&rec);
    h.start();

    // The bad record is quarantined beside the planted name, with its reason.
    wait_until("bad.json quarantined", T, || {
        h.files_in("quarantine")
            .contains(&"bad.json.1.reason".to_string())
            .then_some(())
    });
    // The audit log is refused (an alert), so the board is not written.
    wait_until("the audit link refused", T, || {
        let e = h.stderr();
        (e.contains("audit.jsonl") && e.contains("symbolic link")).then_some(())
    });
    assert_eq!(h.status_of("t1"), "running");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), PRECIOUS);

    // The operator removes the link: the record is applied and moved to
    // done/ beside the planted link there, which is left as it was.
    std::fs::remove_file(h.state.join("audit.jsonl")).unwrap();
    wait_until("t1 parked", T, || {
        (h.status_of("t1") == "scheduled").then_some(())
    });
    wait_until("the record in done/", T, || {
        h.files_in("done")
            .contains(&format!("{}.json.1", rec.id))
            .then_some(())
    });
    h.stop();
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), PRECIOUS);
    let kind = |p: PathBuf| std::fs::symlink_metadata(p).unwrap().file_type();
    assert!(kind(h.records.join("done").join(format!("{}.json", rec.id))).is_symlink());
    assert!(kind(h.state.join("health.json")).is_file(), "link replaced");
    assert!(kind(h.state.join("state.json")).is_file(), "link replaced");
    let audit = std::fs::read_to_string(h.state.join("audit.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), 1, "{audit}");
}
