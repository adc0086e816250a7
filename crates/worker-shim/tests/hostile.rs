//! Issue 13: no option, variable, file, signal or reader can keep the real
//! `worker-shim` from running its worker, freeze it, or change what the
//! worker sees.
//!
//! `WORKER_SHIM_UNDER_TEST=/path/to/worker-shim` runs these against another
//! build (an older one, to see them fail).

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::prerequisite_missing as missing_prerequisite;

mod common;

use common::shim_bin;

fn shim(record_dir: &Path) -> Command {
    let mut cmd = Command::new(shim_bin());
    clean_env(&mut cmd);
    cmd.env("WORKER_SHIM_RECORD_DIR", record_dir);
    cmd
}

/// No `WORKER_SHIM_*` or kanban variable from the caller leaks in.
fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("WORKER_SHIM_") || k.starts_with("HERMES_") {
            cmd.env_remove(&*k);
        }
    }
}

fn sh(script: &str) -> [&str; 4] {
    ["--", "sh", "-c", script]
}

/// Waits for `child` at most `timeout`; kills it (and reports `None`) if it
/// is still running then.
fn wait_for(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `cmd` with stdin closed, collecting its output, for at most
/// `timeout` (then it is killed and the test fails).
fn run_bounded(cmd: &mut Command, timeout: Duration, what: &str) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = wait_for(&mut child, timeout);
    let elapsed = start.elapsed();
    let status =
        status.unwrap_or_else(|| panic!("{what}: the shim was still running after {timeout:?}"));
    let output = Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    };
    (output, elapsed)
}

fn shim_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.starts_with("worker-shim:"))
        .map(str::to_string)
        .collect()
}

fn records(dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            !n.starts_with('.') && n.ends_with(".json")
        })
        .map(|p| serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap())
        .collect()
}

fn make_exe(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Kills (SIGKILL) and reaps the shim when a test fails half-way; its
/// worker follows by its parent-death signal.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------
// Item 3: no option or variable keeps the worker from running.

#[test]
fn a_bad_option_or_variable_falls_back_to_its_default_with_one_warning_and_the_worker_runs() {
    let flag = |a: &str, b: &str| (vec![a.to_string(), b.to_string()], None);
    let env = |k: &'static str, v: &'static str| (Vec::new(), Some((k, v)));
    type Setting = (Vec<String>, Option<(&'static str, &'static str)>);
    let cases: Vec<(Setting, &str)> = vec![
        (flag("--head-bytes", "abc"), "--head-bytes \"abc\""),
        (flag("--tail-bytes", "-5"), "--tail-bytes \"-5\""),
        (flag("--fsync", "sometimes"), "--fsync \"sometimes\""),
        (flag("--tempfail-exit", "300"), "--tempfail-exit \"300\""),
        (
            flag("--drain-timeout-ms", "-1"),
            "--drain-timeout-ms \"-1\"",
        ),
        (
            flag("--drain-timeout-ms", "99999999999999999999"),
            "--drain-timeout-ms",
        ),
        (flag("--drain-max-ms", "1e3"), "--drain-max-ms \"1e3\""),
        ((vec!["--bogus".into()], None), "\"--bogus\""),
        (
            env("WORKER_SHIM_HEAD_BYTES", "abc"),
            "WORKER_SHIM_HEAD_BYTES=\"abc\"",
        ),
        (
            env("WORKER_SHIM_TAIL_BYTES", "64k"),
            "WORKER_SHIM_TAIL_BYTES=\"64k\"",
        ),
        (
            env("WORKER_SHIM_FSYNC", "sometimes"),
            "WORKER_SHIM_FSYNC=\"sometimes\"",
        ),
        (
            env("WORKER_SHIM_TEMPFAIL_EXIT", "banana"),
            "WORKER_SHIM_TEMPFAIL_EXIT=\"banana\"",
        ),
        (
            env("WORKER_SHIM_DRAIN_TIMEOUT_MS", "soon"),
            "WORKER_SHIM_DRAIN_TIMEOUT_MS=\"soon\"",
        ),
    ];
    for ((args, var), named) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let mut cmd = shim(tmp.path());
        cmd.args(&args).args(sh("echo ran; echo oops >&2; exit 3"));
        if let Some((k, v)) = var {
            cmd.env(k, v);
        }
        let what = format!("{args:?} {var:?}");
        let (out, _) = run_bounded(&mut cmd, Duration::from_secs(20), &what);
        assert_eq!(out.status.code(), Some(3), "{what}: the worker's code");
        assert_eq!(out.stdout, b"ran\n", "{what}: the worker ran");
        let lines = shim_lines(&out.stderr);
        assert_eq!(lines.len(), 1, "{what}: one warning line: {lines:?}");
        assert!(
            lines[0].contains("ignoring") && lines[0].contains(named),
            "{what}: the line names the setting: {lines:?}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("oops"),
            "{what}: the worker's stderr passes through"
        );
        assert_eq!(
            records(tmp.path()).len(),
            1,
            "{what}: the record is written"
        );
    }
    // Not even invalid UTF-8, from a flag or the environment.
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"\xff");
    for from_env in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let mut cmd = shim(tmp.path());
        if from_env {
            cmd.env("WORKER_SHIM_HEAD_BYTES", bad);
        } else {
            cmd.arg("--head-bytes").arg(bad);
        }
        cmd.args(sh("echo ran; exit 3"));
        let (out, _) = run_bounded(&mut cmd, Duration::from_secs(20), "invalid UTF-8");
        assert_eq!(out.status.code(), Some(3), "from_env={from_env}");
        assert_eq!(out.stdout, b"ran\n");
        let lines = shim_lines(&out.stderr);
        assert_eq!(lines.len(), 1, "from_env={from_env}: {lines:?}");
        assert!(lines[0].contains("HEAD_BYTES") || lines[0].contains("--head-bytes"));
    }
}

#[test]
fn boolean_and_huge_values_from_the_environment_are_taken_without_complaint() {
    // `WORKER_SHIM_NO_CAPTURE_STDOUT=1` exited 2 ("possible values: true,
    // false") and a drain timeout of u64::MAX ms panicked on the deadline
    // after the worker had run.
    for (k, v) in [
        ("WORKER_SHIM_NO_CAPTURE_STDOUT", "1"),
        ("WORKER_SHIM_NO_CAPTURE_STDOUT", "yes"),
        ("WORKER_SHIM_DRAIN_TIMEOUT_MS", "18446744073709551615"),
        ("WORKER_SHIM_DRAIN_MAX_MS", "18446744073709551615"),
        ("WORKER_SHIM_HEAD_BYTES", ""),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut cmd = shim(tmp.path());
        cmd.env(k, v).args(sh("echo ran; exit 4"));
        let what = format!("{k}={v}");
        let (out, _) = run_bounded(&mut cmd, Duration::from_secs(20), &what);
        assert_eq!(out.status.code(), Some(4), "{what}");
        assert_eq!(out.stdout, b"ran\n", "{what}");
        assert_eq!(shim_lines(&out.stderr), Vec::<String>::new(), "{what}");
        let recs = records(tmp.path());
        assert_eq!(recs.len(), 1, "{what}");
        if k == "WORKER_SHIM_NO_CAPTURE_STDOUT" {
            assert_eq!(recs[0]["stdout"]["captured"], false, "{what}");
        }
    }
}

struct Masquerade {
    _tmp: tempfile::TempDir,
    shim_dir: PathBuf,
    real_dir: PathBuf,
    rec_dir: PathBuf,
}

impl Masquerade {
    fn new() -> Masquerade {
        let tmp = tempfile::tempdir().unwrap();
        let shim_dir = tmp.path().join("shim-bin");
        let real_dir = tmp.path().join("real-bin");
        std::fs::create_dir_all(&shim_dir).unwrap();
        std::fs::create_dir_all(&real_dir).unwrap();
        std::os::unix::fs::symlink(shim_bin(), shim_dir.join("hermes")).unwrap();
        make_exe(
            &real_dir.join("hermes"),
            "#!/bin/sh\necho \"real hermes $*\"\nexit 5\n",
        );
        Masquerade {
            rec_dir: tmp.path().join("rec"),
            _tmp: tmp,
            shim_dir,
            real_dir,
        }
    }

    fn hermes(&self, path: &[&Path]) -> Command {
        let mut cmd = Command::new(self.shim_dir.join("hermes"));
        clean_env(&mut cmd);
        let mut dirs: Vec<PathBuf> = path.iter().map(|p| p.to_path_buf()).collect();
        dirs.extend([PathBuf::from("/usr/bin"), PathBuf::from("/bin")]);
        cmd.env("PATH", std::env::join_paths(dirs).unwrap())
            .env("WORKER_SHIM_RECORD_DIR", &self.rec_dir)
            .args(["-p", "coder", "chat"]);
        cmd
    }
}

#[test]
fn masquerade_mode_with_a_bad_variable_still_runs_the_worker() {
    let m = Masquerade::new();
    for (k, v) in [
        ("WORKER_SHIM_HEAD_BYTES", "abc"),
        ("WORKER_SHIM_FSYNC", "sometimes"),
        ("WORKER_SHIM_TEMPFAIL_EXIT", "-3"),
    ] {
        let mut cmd = m.hermes(&[&m.shim_dir, &m.real_dir]);
        cmd.env(k, v);
        let what = format!("{k}={v}");
        let (out, _) = run_bounded(&mut cmd, Duration::from_secs(20), &what);
        assert_eq!(out.status.code(), Some(5), "{what}: the real worker's code");
        assert_eq!(out.stdout, b"real hermes -p coder chat\n", "{what}");
        let lines = shim_lines(&out.stderr);
        assert_eq!(lines.len(), 1, "{what}: {lines:?}");
        assert!(lines[0].contains(k), "{what}: {lines:?}");
    }
}

#[test]
fn a_worker_shim_target_that_is_the_shim_itself_is_refused_not_looped() {
    let m = Masquerade::new();
    // The symlink named hermes, and the shim binary itself.
    for target in [m.shim_dir.join("hermes"), shim_bin()] {
        // The next hermes on PATH runs instead, with one line saying why.
        let mut cmd = m.hermes(&[&m.shim_dir, &m.real_dir]);
        cmd.env("WORKER_SHIM_TARGET", &target);
        let what = format!("WORKER_SHIM_TARGET={}", target.display());
        // A shim that runs itself spawns shims until it is killed: 3 s is
        // a bound on that, the real run takes milliseconds.
        let (out, _) = run_bounded(&mut cmd, Duration::from_secs(3), &what);
        assert_eq!(out.status.code(), Some(5), "{what}");
        assert_eq!(out.stdout, b"real hermes -p coder chat\n", "{what}");
        let lines = shim_lines(&out.stderr);
        assert_eq!(lines.len(), 1, "{what}: {lines:?}");
        assert!(
            lines[0].contains("WORKER_SHIM_TARGET") && lines[0].contains("this shim itself"),
            "{what}: {lines:?}"
        );

        // No other hermes: 127, like a missing command, with one line.
        let mut cmd = m.hermes(&[&m.shim_dir]);
        cmd.env("WORKER_SHIM_TARGET", &target);
        let (out, _) = run_bounded(&mut cmd, Duration::from_secs(3), &what);
        assert_eq!(out.status.code(), Some(127), "{what}");
        let lines = shim_lines(&out.stderr);
        assert_eq!(lines.len(), 1, "{what}: {lines:?}");
        assert!(lines[0].contains("this shim itself"), "{what}: {lines:?}");
    }
}

// ---------------------------------------------------------------------
// Item 5: a hostile health.json.

const STEER_OK: &str = r#"{"version":1,"providers":{},"steer":{"coder":{"provider":"openrouter","model":"x-ai/grok-4","from":"openai-codex"}}}"#;

/// Runs a steerable Hermes-like worker (it prints its argv) under the shim
/// with `health` as the health file. Address space is capped at 2 GiB, so a
/// shim that reads an endless file fails to steer instead of exhausting the
/// machine.
fn run_with_health(health: &Path, what: &str) -> (Output, Duration) {
    let rec = tempfile::tempdir().unwrap();
    let mut cmd = shim(rec.path());
    cmd.env("HERMES_KANBAN_TASK", "t_1")
        .env("HERMES_PROFILE", "coder")
        .env("WORKER_SHIM_HEALTH_FILE", health)
        .args([
            "--",
            "sh",
            "-c",
            "echo \"$*\"",
            "hermes",
            "-p",
            "coder",
            "chat",
        ]);
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    // A FIFO blocked every start; 10 s bounds that, the real run takes
    // milliseconds.
    run_bounded(&mut cmd, Duration::from_secs(10), what)
}

fn private_dir(parent: &Path, name: &str) -> PathBuf {
    let d = parent.join(name);
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

fn private_file(dir: &Path, body: &[u8]) -> PathBuf {
    let f = dir.join("health.json");
    std::fs::write(&f, body).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

#[test]
fn a_hostile_health_file_means_no_steering_one_warning_and_a_prompt_start() {
    let tmp = tempfile::tempdir().unwrap();
    let is_root = nix::unistd::geteuid().is_root();

    // The control: a good file steers.
    let good = private_file(&private_dir(tmp.path(), "good"), STEER_OK.as_bytes());
    let (out, _) = run_with_health(&good, "good");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "-p coder chat --provider openrouter -m x-ai/grok-4\n"
    );
    assert_eq!(shim_lines(&out.stderr), Vec::<String>::new());

    let mut cases: Vec<(&str, PathBuf, &str)> = Vec::new();
    let d = private_dir(tmp.path(), "fifo");
    nix::unistd::mkfifo(&d.join("health.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    cases.push(("a FIFO", d.join("health.json"), "not a regular file"));

    let d = private_dir(tmp.path(), "sparse");
    let f = private_file(&d, b"");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    cases.push(("a 2 GiB sparse file", f, "larger than"));

    let d = private_dir(tmp.path(), "zero");
    std::os::unix::fs::symlink("/dev/zero", d.join("health.json")).unwrap();
    cases.push(("a symlink to /dev/zero", d.join("health.json"), "symlink"));

    let d = private_dir(tmp.path(), "symlink-good");
    std::os::unix::fs::symlink(&good, d.join("health.json")).unwrap();
    cases.push(("a symlink to a good file", d.join("health.json"), "symlink"));

    let d = private_dir(tmp.path(), "dir");
    std::fs::create_dir(d.join("health.json")).unwrap();
    cases.push(("a directory", d.join("health.json"), "not a regular file"));

    let d = private_dir(tmp.path(), "group-writable");
    let f = private_file(&d, STEER_OK.as_bytes());
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o620)).unwrap();
    cases.push(("a group-writable file", f, "writable by group or others"));

    let d = private_dir(tmp.path(), "open-dir");
    let f = private_file(&d, STEER_OK.as_bytes());
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    cases.push((
        "a world-writable directory",
        f,
        "writable by group or others",
    ));

    let padded = format!(
        r#"{{"pad":"{}","steer":{{"coder":{{"provider":"openrouter"}}}}}}"#,
        "x".repeat(300 * 1024)
    );
    let f = private_file(&private_dir(tmp.path(), "big"), padded.as_bytes());
    cases.push(("a 300 KiB file", f, "larger than"));

    for (name, body, why) in [
        (
            "leading-dash provider",
            r#"{"steer":{"coder":{"provider":"--help"}}}"#,
            "unsafe provider",
        ),
        (
            "leading-dash model",
            r#"{"steer":{"coder":{"provider":"openrouter","model":"-rf"}}}"#,
            "unsafe model",
        ),
        (
            "a provider with a space",
            r#"{"steer":{"coder":{"provider":"open router"}}}"#,
            "unsafe provider",
        ),
        (
            "a provider that is a number",
            r#"{"steer":{"coder":{"provider":42}}}"#,
            "not a valid health file",
        ),
        ("broken JSON", r#"{"steer":"#, "not a valid health file"),
    ] {
        let f = private_file(
            &private_dir(tmp.path(), &name.replace(' ', "-")),
            body.as_bytes(),
        );
        cases.push((name, f, why));
    }

    if is_root {
        let d = private_dir(tmp.path(), "other-owner");
        let f = private_file(&d, STEER_OK.as_bytes());
        std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
        cases.push(("a file owned by another user", f, "owned by uid 65534"));
        let d = private_dir(tmp.path(), "other-dir");
        let f = private_file(&d, STEER_OK.as_bytes());
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
        cases.push(("a directory owned by another user", f, "owned by uid 65534"));
    } else {
        missing_prerequisite(
            "not root: cannot give a health file to another user (the owner cases did not run)",
        );
    }

    for (what, path, why) in cases {
        let (out, took) = run_with_health(&path, what);
        eprintln!("{what}: worker started and the shim exited in {took:?}");
        assert_eq!(out.status.code(), Some(0), "{what}: the worker ran");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "-p coder chat\n",
            "{what}: not steered"
        );
        let lines = shim_lines(&out.stderr);
        assert_eq!(lines.len(), 1, "{what}: one warning line: {lines:?}");
        assert!(
            lines[0].contains("not steering") && lines[0].contains(why),
            "{what}: says why ({why}): {lines:?}"
        );
    }
}

// ---------------------------------------------------------------------
// Item 9: the caller closes the pipe.

/// Reads one line from `cmd`'s stdout, closes it, and waits (10 s at most).
fn read_a_line_then_close(mut cmd: Command) -> ExitStatus {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert_eq!(first, "y\n");
    drop(lines);
    wait_for(&mut child, Duration::from_secs(10))
        .expect("still running 10 s after its reader closed the pipe")
}

#[test]
fn when_the_caller_closes_the_pipe_the_worker_ends_as_it_would_without_the_shim() {
    // `yes | head -1`: yes dies of SIGPIPE.
    let bare = read_a_line_then_close(Command::new("yes"));
    assert_eq!(bare.signal(), Some(libc::SIGPIPE));
    // `worker-shim -- yes | head -1`: the shim reports it as 128+13.
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = shim(tmp.path());
    cmd.args(["--", "yes"]);
    let shimmed = read_a_line_then_close(cmd);
    assert_eq!(shimmed.code(), Some(128 + libc::SIGPIPE), "{shimmed:?}");
    let recs = records(tmp.path());
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["exit"]["signal"], libc::SIGPIPE);

    // A worker that ignores SIGPIPE sees EPIPE on its own write, as it
    // would without the shim, and ends its own way.
    let script = "trap '' PIPE; while echo y; do :; done; echo 'write failed' >&2; exit 3";
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = shim(tmp.path());
    cmd.args(sh(script));
    let shimmed = read_a_line_then_close(cmd);
    assert_eq!(shimmed.code(), Some(3));
    let recs = records(tmp.path());
    assert!(
        recs[0]["stderr"]["head"]
            .as_str()
            .unwrap()
            .contains("write failed"),
        "{:?}",
        recs[0]["stderr"]
    );
}

// ---------------------------------------------------------------------
// Item 11: signals, the drain, a non-blocking stdout.

/// Handles every signal number given on its command line by printing it.
const REPORTER: &str = r#"
import os, signal, sys
def h(n, f):
    print(n, flush=True)
    if n == signal.SIGTERM:
        sys.exit(0)
for n in sys.argv[1:]:
    signal.signal(int(n), h)
print("ready", flush=True)
while True:
    signal.pause()
"#;

#[test]
fn every_signal_tini_forwards_reaches_the_worker() {
    // tini forwards all but SIGFPE/ILL/SEGV/BUS/ABRT/TRAP/SYS/TTIN/TTOU and
    // SIGCHLD; the shim also keeps SIGPIPE (see signals.rs).
    let mut sigs = vec![
        libc::SIGCONT,
        libc::SIGWINCH,
        libc::SIGALRM,
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGSTKFLT,
        libc::SIGTSTP,
        libc::SIGURG,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGRTMIN(),
        libc::SIGRTMIN() + 1,
        libc::SIGRTMAX(),
    ];
    sigs.push(libc::SIGTERM);
    let tmp = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(
        shim(tmp.path())
            .args(["--", "python3", "-c", REPORTER])
            .args(sigs.iter().map(|s| s.to_string()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no line from the worker for {what}"))
    };
    assert_eq!(next("ready"), "ready");
    let pid = child.0.id() as i32;
    for sig in &sigs {
        unsafe { libc::kill(pid, *sig) };
        let line = next(&format!("signal {sig}"));
        assert_eq!(line, sig.to_string(), "signal {sig} was forwarded");
    }
    let status = wait_for(&mut child.0, Duration::from_secs(10)).expect("the shim exits");
    assert_eq!(status.code(), Some(0), "the worker exited 0 on SIGTERM");
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn a_slow_reader_gets_all_the_output_still_in_flight_when_the_worker_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let data = noise(512 * 1024);
    let file = tmp.path().join("data.bin");
    std::fs::write(&file, &data).unwrap();
    // After the worker exits, ~300 KiB are still in its pipe, the shim's
    // buffer and ours; at ~200 KiB/s that takes longer than the 200 ms
    // drain timeout, which must not cut it off: it measures silence from
    // the worker's side, not time.
    let mut child = shim(&tmp.path().join("rec"))
        .args(["--drain-timeout-ms", "200", "--", "cat"])
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "reader timed out"
        );
        // A slow consumer: 4 KiB per 20 ms.
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = wait_for(&mut child, Duration::from_secs(30)).expect("the shim exits");
    assert_eq!(status.code(), Some(0));
    assert_eq!(got.len(), data.len(), "every byte reached the slow reader");
    assert!(got == data, "byte for byte");
}

#[test]
fn a_reader_that_takes_nothing_keeps_the_shim_only_until_drain_max() {
    let tmp = tempfile::tempdir().unwrap();
    // The worker's 150 KiB fit in the pipes and the shim's buffer, so it
    // exits; nobody reads what is left.
    let mut child = shim(tmp.path())
        .args(["--drain-timeout-ms", "100", "--drain-max-ms", "1000"])
        .args(sh("head -c 153600 /dev/zero; exit 6"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _held = child.stdout.take().unwrap();
    let start = Instant::now();
    let status =
        wait_for(&mut child, Duration::from_secs(20)).expect("the shim exits after --drain-max-ms");
    assert_eq!(status.code(), Some(6));
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "it waited for the reader, up to --drain-max-ms: {:?}",
        start.elapsed()
    );
    assert_eq!(records(tmp.path()).len(), 1);
}

#[test]
fn a_background_child_that_keeps_writing_is_cut_off_at_drain_max() {
    // Never quiet, so only --drain-max-ms ends the drain; its output passes
    // through until then (the count is loose: a loaded machine may pause
    // the loop long enough to look quiet).
    let tmp = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut child = shim(tmp.path())
        .args(["--drain-timeout-ms", "200", "--drain-max-ms", "1500"])
        .args(sh(
            "(while echo tick; do sleep 0.05; done) & echo started; exit 0",
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let status = wait_for(&mut child, Duration::from_secs(20)).expect("the shim exits");
    assert_eq!(status.code(), Some(0));
    let got = reader.join().unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains("started\n"));
    assert!(
        got.matches("tick").count() >= 3,
        "the background child's output passed through after the worker exited: {got:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "bounded by --drain-max-ms: {:?}",
        start.elapsed()
    );
}

#[test]
fn a_non_blocking_stdout_that_is_momentarily_full_still_gets_every_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let data = noise(1024 * 1024);
    let file = tmp.path().join("data.bin");
    std::fs::write(&file, &data).unwrap();
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The caller's stdout is non-blocking (shared open file description).
    unsafe {
        let fl = libc::fcntl(write_end.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(write_end.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    let capacity = unsafe { libc::fcntl(read_end.as_raw_fd(), libc::F_GETPIPE_SZ) };
    let mut child = {
        let mut cmd = shim(&tmp.path().join("rec"));
        cmd.args(["--", "cat"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write_end));
        cmd.spawn().unwrap()
    };
    // Let the pipe fill up before reading: the shim meets EAGAIN.
    let start = Instant::now();
    loop {
        let mut queued: libc::c_int = 0;
        unsafe { libc::ioctl(read_end.as_raw_fd(), libc::FIONREAD, &mut queued) };
        if queued >= capacity {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the pipe never filled ({queued} of {capacity})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut got = Vec::new();
    std::fs::File::from(read_end).read_to_end(&mut got).unwrap();
    let status = wait_for(&mut child, Duration::from_secs(20)).expect("the shim exits");
    assert_eq!(status.code(), Some(0));
    assert_eq!(got.len(), data.len(), "pass-through did not stop at EAGAIN");
    assert!(got == data, "byte for byte");
}
