//! End-to-end tests of the real `worker-shim` binary: real children, real
//! signals, real files.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::{proc_alive, wait_for};

mod common;

use common::shim_bin;

fn shim(record_dir: &Path) -> Command {
    let mut cmd = Command::new(shim_bin());
    cmd.env("WORKER_SHIM_RECORD_DIR", record_dir)
        .env_remove("WORKER_SHIM_TEMPFAIL_EXIT")
        .env_remove("HERMES_KANBAN_TASK")
        .env_remove("HERMES_KANBAN_RUN_ID")
        .env_remove("WORKER_SHIM_IN_RUN");
    cmd
}

fn records(dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Value> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| exit_record_name(p))
        .map(|p| serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap())
        .collect();
    out.sort_by_key(|v| v["id"].as_str().unwrap_or_default().to_string());
    out
}

fn exit_record_name(p: &Path) -> bool {
    let name = p.file_name().unwrap().to_string_lossy();
    !name.starts_with('.') && name.ends_with(".json")
}

fn only_record(dir: &Path) -> Value {
    let mut all = records(dir);
    assert_eq!(all.len(), 1, "expected exactly one record in {dir:?}");
    all.remove(0)
}

fn sh(script: &str) -> Vec<String> {
    vec!["--".into(), "sh".into(), "-c".into(), script.into()]
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run shim")
}

/// Deterministic pseudo-random bytes covering every byte value.
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
fn passthrough_is_byte_exact_for_binary_data_on_both_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let data = noise(24 * 1024 * 1024 + 123);
    let file = tmp.path().join("data.bin");
    std::fs::write(&file, &data).unwrap();
    let script = format!("cat '{0}'; cat '{0}' >&2", file.display());
    let out = run(shim(&tmp.path().join("rec")).args(sh(&script)));
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == data, "stdout differs");
    assert!(out.stderr == data, "stderr differs");
    let rec = only_record(&tmp.path().join("rec"));
    for stream in ["stdout", "stderr"] {
        assert_eq!(rec[stream]["bytes_total"], data.len() as u64);
        assert_eq!(rec[stream]["truncated"], true);
        assert_eq!(rec[stream]["captured"], true);
    }
    assert_eq!(
        rec["stderr"]["head"].as_str().unwrap(),
        String::from_utf8_lossy(&data[..8192])
    );
    assert_eq!(
        rec["stderr"]["tail"].as_str().unwrap(),
        String::from_utf8_lossy(&data[data.len() - 65536..])
    );
}

#[test]
fn stderr_passes_through_in_real_time() {
    let tmp = tempfile::tempdir().unwrap();
    // The worker writes a partial line to stderr and then waits for stdin:
    // the bytes must reach us before the worker exits or writes a newline.
    let mut child = shim(tmp.path())
        .args(sh("printf 'partial' >&2; read line; printf ' done\\n' >&2"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut buf = [0u8; 7];
    stderr.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"partial");
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, " done\n");
    assert!(child.wait().unwrap().success());
}

#[test]
fn exit_codes_are_passed_through() {
    let tmp = tempfile::tempdir().unwrap();
    for code in [0, 1, 3, 42, 255] {
        let out = run(shim(tmp.path()).args(sh(&format!("exit {code}"))));
        assert_eq!(out.status.code(), Some(code));
    }
}

#[test]
fn a_signal_death_reports_128_plus_n() {
    for (sig, code) in [("TERM", 143), ("KILL", 137), ("SEGV", 139), ("INT", 130)] {
        let tmp = tempfile::tempdir().unwrap();
        let out = run(shim(tmp.path()).args(sh(&format!("kill -{sig} $$"))));
        assert_eq!(out.status.code(), Some(code), "SIG{sig}");
        let rec = only_record(tmp.path());
        assert_eq!(rec["exit"]["code"], Value::Null);
        assert_eq!(rec["exit"]["reported_code"], code);
        assert_eq!(rec["exit"]["signal"], code - 128);
    }
}

#[test]
fn spawn_failures_give_126_and_127_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(shim(tmp.path()).args(["--", "/nonexistent/worker"]));
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/worker"), "{err}");

    let script = tmp.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let out = run(shim(&tmp.path().join("rec")).arg("--").arg(&script));
    assert_eq!(out.status.code(), Some(126));
    let rec = only_record(&tmp.path().join("rec"));
    assert_eq!(rec["exit"]["reported_code"], 126);
    assert!(
        rec["exit"]["spawn_error"]
            .as_str()
            .unwrap()
            .contains("not-executable")
    );
}

const CODEX_429: &str =
    "HTTP 429: The usage limit has been reached. plan_type: team, resets_at: 1780861905";

#[test]
fn a_rate_limited_worker_exiting_0_is_reported_as_tempfail_with_its_reset_time() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(shim(tmp.path())
        .env("HERMES_KANBAN_TASK", "t_abc")
        .env("HERMES_KANBAN_RUN_ID", "12")
        .env("HERMES_KANBAN_BOARD", "default")
        .env("HERMES_PROFILE", "coder")
        .args(sh(&format!("echo '{CODEX_429}'; exit 0"))));
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{CODEX_429}\n")
    );
    let rec = only_record(tmp.path());
    assert_eq!(rec["exit"]["code"], 0);
    assert_eq!(rec["exit"]["reported_code"], 75);
    assert_eq!(rec["failure"]["class"], "rate_limit");
    assert_eq!(rec["failure"]["resets_at"], 1780861905);
    assert_eq!(rec["failure"]["transient"], true);
    assert_eq!(rec["task"]["id"], "t_abc");
    assert_eq!(rec["task"]["run_id"], 12);
    assert_eq!(rec["task"]["board"], "default");
    assert_eq!(rec["task"]["profile"], "coder");
    assert_eq!(rec["task"]["db"], Value::Null);
    assert_eq!(rec["schema_version"], 1);
}

#[test]
fn tempfail_off_keeps_the_workers_code_and_other_codes_are_never_translated() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(shim(tmp.path())
        .args(["--tempfail-exit", "off"])
        .args(sh(&format!("echo '{CODEX_429}' >&2"))));
    assert_eq!(out.status.code(), Some(0));
    let rec = only_record(tmp.path());
    assert_eq!(rec["failure"]["class"], "rate_limit");
    assert_eq!(rec["exit"]["reported_code"], 0);

    let tmp = tempfile::tempdir().unwrap();
    let out = run(shim(tmp.path()).args(sh(&format!("echo '{CODEX_429}' >&2; exit 9"))));
    assert_eq!(out.status.code(), Some(9), "only 0 and 1 are translated");

    let tmp = tempfile::tempdir().unwrap();
    let out = run(shim(tmp.path())
        .env("WORKER_SHIM_TEMPFAIL_EXIT", "99")
        .args(sh(&format!("echo '{CODEX_429}'; exit 1"))));
    assert_eq!(out.status.code(), Some(99));
}

#[test]
fn a_lookalike_line_is_not_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(shim(tmp.path()).args(sh("echo 'test result: ok. 429 passed; 0 failed'")));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(only_record(tmp.path())["failure"], Value::Null);
}

#[test]
fn an_unwritable_record_dir_still_passes_the_workers_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let out = run(shim(&blocker.join("records")).args(sh("echo out; exit 7")));
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(out.stdout, b"out\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("exit record not written"), "{err}");

    // Also with a transient failure: without a record it is not translated
    // to 75 (nothing would reschedule the task); the line says so.
    let out = run(shim(&blocker.join("records")).args(sh(&format!("echo '{CODEX_429}'"))));
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("worker exit code 0 passed through (not translated to 75"),
        "{err}"
    );
}

#[test]
fn secrets_are_redacted_from_records() {
    let tmp = tempfile::tempdir().unwrap();
    let secrets = [
        "sk-proj-AbCdEf0123456789AbCdEf0123456789",
        "sk-ant-api03-ZZZZyyyyXXXXwwww0000111122223333",
        "xai-QqQqWwWwEeEeRrRrTtTtYyYyUuUuIiIi",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlX2hlcmVfeHl6",
        "ya29.secret-access-token-value",
        "rt-refresh-token-value-123456",
        "BearerTokenValue0123456789",
    ];
    let script = format!(
        "echo 'key {0}'; echo 'anthropic {1}' >&2; echo 'xai {2}' >&2; echo 'jwt {3}';\
         echo '{{\"access_token\": \"{4}\", \"refresh_token\": \"{5}\"}}' >&2;\
         echo 'Authorization: Bearer {6}' >&2; echo '{CODEX_429}' >&2",
        secrets[0], secrets[1], secrets[2], secrets[3], secrets[4], secrets[5], secrets[6]
    );
    let out = run(shim(tmp.path()).args(sh(&script)));
    assert_eq!(out.status.code(), Some(75));
    // Passthrough is untouched...
    assert!(String::from_utf8_lossy(&out.stdout).contains(secrets[0]));
    // ...but nothing secret reaches the disk.
    let on_disk: String = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    for s in secrets {
        assert!(!on_disk.contains(s), "secret {s} leaked into the record");
    }
    assert!(on_disk.contains("REDACTED"));
    assert!(on_disk.contains("usage limit has been reached"));
}

#[test]
fn records_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new/records");
    run(shim(&dir).args(sh("true")));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for e in std::fs::read_dir(&dir).unwrap() {
        assert_eq!(mode(&e.unwrap().path()), 0o600);
    }
}

#[test]
fn a_reader_polling_the_record_dir_never_sees_a_partial_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (dir, stop) = (dir.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut parsed = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for e in std::fs::read_dir(&dir).unwrap() {
                    let p = e.unwrap().path();
                    if !exit_record_name(&p) {
                        continue;
                    }
                    let bytes = std::fs::read(&p).unwrap();
                    let v: Value = serde_json::from_slice(&bytes)
                        .unwrap_or_else(|e| panic!("partial record {p:?}: {e}"));
                    assert_eq!(v["schema_version"], 1);
                    parsed += 1;
                }
            }
            parsed
        })
    };
    // Records with ~140 KiB of captured text each, written concurrently.
    let script =
        "head -c 300000 /dev/zero | tr '\\0' 'x'; head -c 300000 /dev/zero | tr '\\0' 'y' >&2";
    let children: Vec<_> = (0..24)
        .map(|_| {
            shim(&dir)
                .args(sh(script))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let parsed = reader.join().expect("reader saw a partial record");
    assert!(parsed > 0);
    assert_eq!(records(&dir).len(), 24);
}

/// A child that reports each signal it receives on stdout.
const SIGNAL_REPORTER: &str = r#"
import signal, sys, os
def h(n, f):
    print(signal.Signals(n).name, flush=True)
    if n == signal.SIGTERM:
        sys.exit(0)
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
    signal.signal(s, h)
print("ready", os.getpid(), os.getpgrp(), flush=True)
while True:
    signal.pause()
"#;

#[test]
fn every_forwarded_signal_reaches_the_child_and_its_group() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = shim(tmp.path())
        .args(["--", "python3", "-c", SIGNAL_REPORTER])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let shim_pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    let fields: Vec<&str> = ready.split_whitespace().collect();
    assert_eq!(fields[0], "ready");
    assert_eq!(
        fields[1], fields[2],
        "the worker leads its own process group"
    );
    use nix::sys::signal::Signal::*;
    for sig in [SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGTERM] {
        nix::sys::signal::kill(shim_pid, sig).unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), sig.as_str());
    }
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "the child handled SIGTERM and exited 0"
    );
}

#[test]
fn sigterm_reaches_grandchildren_of_a_shell_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = shim(tmp.path())
        .args(sh("sleep 300 & echo $!; wait"))
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let grandchild: i32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(143));
    wait_for("the grandchild to die", Duration::from_secs(10), || {
        !proc_alive(grandchild)
    });
}

#[test]
fn a_sigkilled_shim_does_not_leave_its_worker_running() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = shim(tmp.path())
        .args(sh("echo $$; exec sleep 300"))
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let worker: i32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    assert!(proc_alive(worker));
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for(
        "the worker to die with its shim",
        Duration::from_secs(10),
        || !proc_alive(worker),
    );
}

#[test]
fn a_background_grandchild_holding_the_pipe_does_not_hang_the_shim() {
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = run(shim(tmp.path())
        .args(["--drain-timeout-ms", "300"])
        .args(sh("sleep 30 & echo started; exit 4")));
    assert_eq!(out.status.code(), Some(4));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(only_record(tmp.path())["stdout"]["head"], "started\n");
}

#[test]
fn the_command_is_looked_up_and_run_as_execvp_does() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("rec");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    // In a: found but not executable. In b: the real one.
    std::fs::write(a.join("prog"), "#!/bin/sh\necho a\n").unwrap();
    std::fs::set_permissions(a.join("prog"), std::fs::Permissions::from_mode(0o644)).unwrap();
    make_exe(&b.join("prog"), "#!/bin/sh\necho b \"$@\"\n");
    // No `#!` line: the kernel cannot exec it, /bin/sh runs it.
    make_exe(&b.join("bare"), "echo bare \"$@\"\n");

    let path = format!("{}:{}", a.display(), b.display());
    let out = run(shim(&rec).env("PATH", &path).args(["--", "prog", "x y"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "b x y\n");
    assert_eq!(out.status.code(), Some(0));

    // Only the one that is not executable: 126, permission denied.
    let out = run(shim(&rec).env("PATH", &a).args(["--", "prog"]));
    assert_eq!(out.status.code(), Some(126));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot run prog: Permission denied"), "{err}");

    // An empty entry is the current directory.
    let out = run(shim(&rec)
        .env("PATH", format!("{}:", a.display()))
        .current_dir(&b)
        .args(["--", "prog", "here"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "b here\n");

    // Scripts without `#!`, by PATH and by path.
    let out = run(shim(&rec).env("PATH", &path).args(["--", "bare", "1", "2"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bare 1 2\n");
    assert_eq!(out.status.code(), Some(0));
    let out = run(shim(&rec).arg("--").arg(b.join("bare")).arg("3"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bare 3\n");

    // PATH unset: execvp's default, /bin:/usr/bin.
    let out = run(shim(&rec).env_remove("PATH").args(["--", "true"]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // Not on PATH at all: 127.
    let out = run(shim(&rec).env("PATH", &path).args(["--", "no-such-prog"]));
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot run no-such-prog: No such file"),
        "{err}"
    );
}

#[test]
fn many_arguments_and_variables_reach_the_worker_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let args: Vec<String> = (0..5000).map(|i| format!("arg {i} é")).collect();
    let mut cmd = shim(tmp.path());
    for i in 0..500 {
        cmd.env(format!("H15C_VAR_{i}"), format!("value {i}"));
    }
    let out = run(cmd
        .args([
            "--",
            "sh",
            "-c",
            "echo \"$#\" \"$1\" \"${5000}\"; env | grep -c '^H15C_VAR_'; echo \"$H15C_VAR_499\"",
            "argv0",
        ])
        .args(&args));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "5000 arg 0 é arg 4999 é\n500\nvalue 499\n"
    );
}

fn make_exe(path: &PathBuf, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn masquerade_mode_runs_the_real_program_of_the_same_name() {
    let tmp = tempfile::tempdir().unwrap();
    let shim_dir = tmp.path().join("shim-bin");
    let real_dir = tmp.path().join("real-bin");
    std::fs::create_dir_all(&shim_dir).unwrap();
    std::fs::create_dir_all(&real_dir).unwrap();
    std::os::unix::fs::symlink(shim_bin(), shim_dir.join("hermes")).unwrap();
    make_exe(
        &real_dir.join("hermes"),
        &format!("#!/bin/sh\necho \"real hermes $*\"\necho '{CODEX_429}'\nexit 0\n"),
    );
    let path = format!(
        "{}:{}:/usr/bin:/bin",
        shim_dir.display(),
        real_dir.display()
    );
    let rec_dir = tmp.path().join("rec");
    // Options look like the worker's own: they must reach the worker untouched.
    let out = run(Command::new(shim_dir.join("hermes"))
        .env("PATH", &path)
        .env("WORKER_SHIM_RECORD_DIR", &rec_dir)
        .env_remove("WORKER_SHIM_TARGET")
        .args([
            "-p",
            "coder",
            "--tempfail-exit",
            "off",
            "chat",
            "-q",
            "work kanban task t_1",
        ]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next().unwrap(),
        "real hermes -p coder --tempfail-exit off chat -q work kanban task t_1"
    );
    assert_eq!(out.status.code(), Some(75));
    let rec = only_record(&rec_dir);
    assert_eq!(
        rec["argv"][0],
        real_dir.join("hermes").to_string_lossy().as_ref()
    );

    // WORKER_SHIM_TARGET wins over PATH.
    let other = tmp.path().join("other-hermes");
    make_exe(&other, "#!/bin/sh\necho other\n");
    let out = run(Command::new(shim_dir.join("hermes"))
        .env("PATH", &path)
        .env("WORKER_SHIM_RECORD_DIR", &rec_dir)
        .env("WORKER_SHIM_TARGET", &other));
    assert_eq!(out.stdout, b"other\n");

    // Only the shim itself on PATH: a clear error, not a fork bomb.
    let out = run(Command::new(shim_dir.join("hermes"))
        .env("PATH", shim_dir.as_os_str())
        .env("WORKER_SHIM_RECORD_DIR", &rec_dir)
        .env_remove("WORKER_SHIM_TARGET"));
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WORKER_SHIM_TARGET"));
}

#[test]
fn a_worker_started_on_a_terminal_is_its_foreground_group_and_reads_from_it() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let pty = nix::pty::openpty(None, None).unwrap();
    let out_file = tmp.path().join("out");
    let mut cmd = shim(&tmp.path().join("rec"));
    // The worker's own group (`$$` is the worker) against the terminal's
    // foreground group, then a line typed on the terminal.
    cmd.args(sh(
        "set -- $(sed 's/.*) //' /proc/$$/stat); echo \"pgrp=$3 tpgid=$6\"; read line; echo \"got=$line\"",
    ))
    .stdin(Stdio::from(pty.slave))
    .stdout(std::fs::File::create(&out_file).unwrap())
    .stderr(Stdio::null());
    // SAFETY: setsid and ioctl are async-signal-safe: the shim leads a new
    // session whose controlling terminal is its stdin, as in a terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    std::fs::File::from(pty.master)
        .write_all(b"hello\n")
        .unwrap();
    // A worker left in a background group would be stopped by its read.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the worker did not finish: {}",
                std::fs::read_to_string(&out_file).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
    let out = std::fs::read_to_string(&out_file).unwrap();
    let mut lines = out.lines();
    let groups = lines.next().unwrap_or_default();
    let (pgrp, tpgid) = groups
        .strip_prefix("pgrp=")
        .and_then(|g| g.split_once(" tpgid="))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(pgrp, tpgid, "{out}");
    assert_eq!(lines.next(), Some("got=hello"), "{out}");
}

#[test]
fn the_worker_starts_with_no_signal_blocked() {
    // The shim reads the signals it forwards from a signalfd (they are
    // blocked in the shim); the worker must not inherit that mask.
    let tmp = tempfile::tempdir().unwrap();
    let out = run(shim(tmp.path()).args(["--", "cat", "/proc/self/status"]));
    let status = String::from_utf8_lossy(&out.stdout);
    let line = status
        .lines()
        .find(|l| l.starts_with("SigBlk"))
        .unwrap_or_else(|| panic!("SigBlk in {status}"));
    assert!(
        line.ends_with("0000000000000000"),
        "the worker's blocked signals: {line}"
    );
}
