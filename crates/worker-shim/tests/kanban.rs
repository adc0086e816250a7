//! The real `worker-shim` binary in a Hermes kanban worker's place: the exit
//! trailer newer Hermes reads from the task's log, and runs skipped while
//! their provider is unhealthy with no healthy fallback.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;

use common::shim_bin;

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
    let mut cmd = Command::new(shim_bin());
    cmd.env("WORKER_SHIM_RECORD_DIR", records)
        .env("WORKER_SHIM_HEALTH_FILE", records.join("no-health.json"))
        .env_remove("WORKER_SHIM_TEMPFAIL_EXIT")
        .env_remove("WORKER_SHIM_NO_SKIP")
        .env_remove("HERMES_KANBAN_TASK")
        .env_remove("HERMES_KANBAN_RUN_ID")
        .env_remove("WORKER_SHIM_IN_RUN")
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

// ---- Runs skipped while their provider is unhealthy with no fallback ----

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// health.json as kanban-watchdog publishes it, plus `generated_at` and
/// `hold` (the additions the skip reads).
fn health_doc(generated_at: Option<i64>, until: Option<i64>, class: &str) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "version": 1,
        "providers": {
            "xai-oauth": {"state": "unhealthy", "since": now() - 30, "until": until,
                          "class": class, "reason": "xAI OAuth state is missing access_token"},
            "openrouter": {"state": "healthy", "since": now() - 3000}
        },
        "steer": {},
        "hold": {"coder": {"provider": "xai-oauth"}}
    });
    if let Some(t) = generated_at {
        doc["generated_at"] = t.into();
    }
    doc
}

struct Setup {
    tmp: tempfile::TempDir,
}

impl Setup {
    fn new(doc: &serde_json::Value) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("records")).unwrap();
        std::fs::write(tmp.path().join("health.json"), doc.to_string()).unwrap();
        Setup { tmp }
    }
    fn health(&self) -> std::path::PathBuf {
        self.tmp.path().join("health.json")
    }
    fn marker(&self) -> std::path::PathBuf {
        self.tmp.path().join("worker-ran")
    }
    /// A Hermes-like kanban worker of profile `coder` that leaves a marker.
    fn cmd(&self, extra: &[&str]) -> Command {
        let mut cmd = shim(&self.tmp.path().join("records"));
        kanban(&mut cmd).env("WORKER_SHIM_HEALTH_FILE", self.health());
        let script = format!("touch '{}'", self.marker().display());
        cmd.args([
            "--", "sh", "-c", &script, "-p", "coder", "--cli", "chat", "-q",
        ])
        .arg("work kanban task t_1")
        .args(extra);
        cmd
    }
    fn record(&self) -> serde_json::Value {
        let dir = self.tmp.path().join("records");
        let mut all: Vec<serde_json::Value> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                !n.starts_with('.') && n.ends_with(".json")
            })
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect();
        assert_eq!(all.len(), 1, "one record in {dir:?}");
        all.remove(0)
    }
}

#[test]
fn a_kanban_run_of_an_unhealthy_provider_with_no_fallback_is_skipped() {
    let s = Setup::new(&health_doc(Some(now() - 5), None, "auth_expired"));
    let started = std::time::Instant::now();
    let out = output(&mut s.cmd(&[]));
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(75));
    assert!(!s.marker().exists(), "the worker must not have started");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2, "one line, then the trailer: {err:?}");
    assert!(
        lines[0].starts_with(
            "worker-shim: not starting this worker: provider xai-oauth is unhealthy until re-auth"
        ),
        "{err}"
    );
    assert!(err.ends_with("\n[kanban-worker-exit] rc=75\n"), "{err:?}");
    let rec = s.record();
    assert_eq!(rec["skipped"]["provider"], "xai-oauth");
    assert!(rec["skipped"]["until"].is_null());
    assert_eq!(
        rec["skipped"]["reason"],
        "xAI OAuth state is missing access_token"
    );
    assert_eq!(rec["failure"]["class"], "auth_expired");
    assert_eq!(rec["failure"]["provider"], "xai-oauth");
    assert_eq!(rec["failure"]["transient"], false);
    assert!(rec["failure"]["resets_at"].is_null());
    assert_eq!(rec["exit"]["reported_code"], 75);
    assert!(rec["pid"].is_null() && rec["exit"]["code"].is_null());
    assert_eq!(rec["task"]["id"], "t_1");
    // The record is one the watchdog reads.
    let dir = s.tmp.path().join("records");
    let path = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let typed = exit_record::read_record(&path, &exit_record::ReadLimits::default()).unwrap();
    assert_eq!(typed.skipped.unwrap().provider, "xai-oauth");
    eprintln!("skip took {took:?}");

    // A rate limit: the reset time is the failure's.
    let until = now() + 3600;
    let s = Setup::new(&health_doc(Some(now()), Some(until), "rate_limit"));
    let out = output(&mut s.cmd(&[]));
    assert_eq!(out.status.code(), Some(75));
    assert!(!s.marker().exists());
    let rec = s.record();
    assert_eq!(rec["failure"]["resets_at"], until);
    assert_eq!(rec["failure"]["transient"], true);
    assert_eq!(rec["skipped"]["until"], until);
}

/// What is varied, the files, the environment changes, extra argv.
type Case = (
    &'static str,
    Setup,
    Vec<(&'static str, Option<&'static str>)>,
    Vec<&'static str>,
);

#[test]
fn a_skip_never_happens_without_every_guard() {
    let fresh = || health_doc(Some(now() - 5), None, "auth_expired");
    let mut cases: Vec<Case> = vec![
        (
            "WORKER_SHIM_NO_SKIP=1",
            Setup::new(&fresh()),
            vec![("WORKER_SHIM_NO_SKIP", Some("1"))],
            vec![],
        ),
        (
            "not a kanban worker",
            Setup::new(&fresh()),
            vec![("HERMES_KANBAN_TASK", None)],
            vec![],
        ),
        (
            "tempfail off",
            Setup::new(&fresh()),
            vec![("WORKER_SHIM_TEMPFAIL_EXIT", Some("off"))],
            vec![],
        ),
        (
            "another profile",
            Setup::new(&fresh()),
            vec![("HERMES_PROFILE", Some("writer"))],
            vec![],
        ),
        (
            "the task pinned to another provider",
            Setup::new(&fresh()),
            vec![],
            vec!["--provider", "openrouter"],
        ),
        (
            "a stale file (11 min)",
            Setup::new(&health_doc(Some(now() - 660), None, "auth_expired")),
            vec![],
            vec![],
        ),
        (
            "no generated_at (today's watchdog)",
            Setup::new(&health_doc(None, None, "auth_expired")),
            vec![],
            vec![],
        ),
        (
            "a reset already past",
            Setup::new(&health_doc(Some(now()), Some(now() - 1), "rate_limit")),
            vec![],
            vec![],
        ),
        (
            "an unknown class",
            Setup::new(&health_doc(Some(now()), None, "solar_flare")),
            vec![],
            vec![],
        ),
    ];
    let mut doc = fresh();
    doc["version"] = 2.into();
    cases.push(("an unknown version", Setup::new(&doc), vec![], vec![]));
    let mut doc = fresh();
    doc["steer"] = serde_json::json!({"coder": {"provider": "openrouter", "model": "x/y", "from": "xai-oauth"}});
    cases.push(("steered instead", Setup::new(&doc), vec![], vec![]));
    let mut doc = fresh();
    doc["providers"]["xai-oauth"]["state"] = "probing".into();
    cases.push(("the provider probing", Setup::new(&doc), vec![], vec![]));
    let group_writable = Setup::new(&fresh());
    std::fs::set_permissions(
        group_writable.health(),
        std::os::unix::fs::PermissionsExt::from_mode(0o620),
    )
    .unwrap();
    cases.push((
        "a group-writable health file",
        group_writable,
        vec![],
        vec![],
    ));
    for (what, s, env, extra) in cases {
        let mut cmd = s.cmd(&extra);
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let out = output(&mut cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            s.marker().exists(),
            "{what}: the worker must run; stderr: {err}"
        );
        assert_eq!(out.status.code(), Some(0), "{what}: {err}");
        assert!(!err.contains("not starting"), "{what}: {err}");
        assert!(trailers(&err).is_empty(), "{what}: {err}");
    }
}

/// What the worker saw (its argv after `sh -c`), its exit code and the
/// shim's stderr, for a held-and-steered `coder` whose health file is
/// `doc` (`None`: no health file at all).
fn run_with_health(doc: Option<&serde_json::Value>) -> (String, Option<i32>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let health = tmp.path().join("health.json");
    if let Some(doc) = doc {
        std::fs::write(&health, doc.to_string()).unwrap();
    }
    let seen = tmp.path().join("argv");
    let mut cmd = shim(&tmp.path().join("records"));
    kanban(&mut cmd).env("WORKER_SHIM_HEALTH_FILE", &health);
    let script = format!("printf '%s\\n' \"$@\" > '{}'", seen.display());
    cmd.args(["--", "sh", "-c", &script, "hermes", "-p", "coder"])
        .args(["--cli", "chat", "-q", "work kanban task t_1"]);
    let out = output(&mut cmd);
    let argv = std::fs::read_to_string(&seen).unwrap_or_default();
    (
        argv,
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_health_file_of_an_unknown_version_is_refused_and_the_worker_runs_as_with_none() {
    let mut doc = health_doc(Some(now()), None, "auth_expired");
    doc["steer"] = serde_json::json!({"coder": {"provider": "openrouter", "model": "x/y", "from": "xai-oauth"}});
    // Version 1: the file is read (steered to the fallback).
    let (argv, code, err) = run_with_health(Some(&doc));
    assert_eq!(code, Some(0), "{err}");
    assert!(argv.contains("--provider\nopenrouter\n"), "{argv:?}");
    // No file at all.
    let (none_argv, none_code, none_err) = run_with_health(None);
    assert_eq!(none_code, Some(0), "{none_err}");
    assert!(!none_argv.contains("--provider"), "{none_argv:?}");
    // Any other version: refused with one line; then the same as no file.
    for version in [serde_json::json!(2), serde_json::json!("1")] {
        doc["version"] = version.clone();
        let (argv, code, err) = run_with_health(Some(&doc));
        assert_eq!((&argv, code), (&none_argv, none_code), "{version}: {err}");
        assert!(
            err.contains("is not a valid health file: version") && err.contains("is not supported"),
            "{version}: {err}"
        );
        assert!(!err.contains("not starting"), "{version}: {err}");
    }
}

/// Every record in `dir`, parsed.
fn records_in(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

#[test]
fn a_hermes_call_inside_the_run_steps_aside_and_another_tasks_worker_does_not() {
    // The run's provider is held with no fallback: a shim started for the
    // task would skip a `chat` worker. The worker (run 7 of t_1, the outer
    // shim told not to skip) runs `hermes ... chat` itself, as a terminal
    // tool does (its output captured), three ways: the shim with the
    // task's environment (0.19), with the task variables removed (0.22's
    // tools), and masquerading as `hermes`. Each prints a 429.
    let s = Setup::new(&health_doc(Some(now()), Some(now() + 3600), "rate_limit"));
    let dir = s.tmp.path();
    let records = dir.join("records");
    let ran = |n: u32| dir.join(format!("inner-ran-{n}"));
    let said = dir.join("inner-said");
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(shim_bin(), bin.join("hermes")).unwrap();
    let real = dir.join("hermes-real");
    std::fs::write(
        &real,
        format!(
            "#!/bin/sh\necho '{CODEX_429}'\ntouch '{}'\nexit 0\n",
            ran(3).display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let chat = "-p coder --cli chat -q 'work kanban task t_1'";
    let script = format!(
        "echo \"mark=$WORKER_SHIM_IN_RUN\"; \
         out=$(env -u WORKER_SHIM_NO_SKIP \"$SHIM\" -- sh -c 'echo \"{CODEX_429}\"; touch \"{r1}\"; exit 0' {chat} 2>&1); \
         rc1=$?; printf '%s' \"$out\" > \"{said}\"; \
         env -u WORKER_SHIM_NO_SKIP -u HERMES_KANBAN_TASK -u HERMES_KANBAN_RUN_ID HERMES_DELEGATED_CHILD_CONTEXT=/b \
           \"$SHIM\" -- sh -c 'echo \"{CODEX_429}\"; touch \"{r2}\"; exit 75' {chat} >/dev/null 2>&1; rc2=$?; \
         env -u WORKER_SHIM_NO_SKIP WORKER_SHIM_TARGET=\"{real}\" \"{bin}/hermes\" {chat} >/dev/null; rc3=$?; \
         echo \"inner rc=$rc1,$rc2,$rc3\"; echo outer done",
        r1 = ran(1).display(),
        r2 = ran(2).display(),
        said = said.display(),
        real = real.display(),
        bin = bin.display(),
    );
    let out = output(
        kanban(&mut shim(&records))
            .env("HERMES_KANBAN_RUN_ID", "7")
            .env("WORKER_SHIM_HEALTH_FILE", s.health())
            .env("WORKER_SHIM_NO_SKIP", "1")
            .env("SHIM", shim_bin())
            .args(["--", "sh", "-c", &script]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("mark=7/t_1\n"), "{stdout}");
    // Every inner call ran, its own code came back untranslated, and none
    // skipped, wrote a trailer, a line of its own or a record.
    for n in 1..=3 {
        assert!(
            ran(n).exists(),
            "inner command {n} must run: {stdout}{stderr}"
        );
    }
    assert!(stdout.contains("inner rc=0,75,0\n"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&said).unwrap(),
        CODEX_429,
        "the inner output alone, no line of the shim's"
    );
    assert!(!stderr.contains("worker-shim"), "{stderr}");
    assert!(!stderr.contains("[kanban-worker-exit]"), "{stderr}");
    let all = records_in(&records);
    assert_eq!(all.len(), 1, "the run's record only: {all:?}");
    assert_eq!(all[0]["task"]["id"], "t_1");
    assert!(all[0]["failure"].is_null(), "{}", all[0]);

    // A dispatcher inside the worker starts a worker for another task:
    // that one is supervised (and skipped: its provider is held).
    let inner_ran = ran(4);
    let script = format!(
        "env -u WORKER_SHIM_NO_SKIP HERMES_KANBAN_TASK=t_2 HERMES_KANBAN_RUN_ID=9 \"$SHIM\" -- \
         sh -c 'touch \"{}\"' -p coder --cli chat -q 'work kanban task t_2'; echo \"inner rc=$?\"",
        inner_ran.display()
    );
    let out = output(
        kanban(&mut shim(&records))
            .env("HERMES_KANBAN_RUN_ID", "8")
            .env("WORKER_SHIM_HEALTH_FILE", s.health())
            .env("WORKER_SHIM_NO_SKIP", "1")
            .env("SHIM", shim_bin())
            .args(["--", "sh", "-c", &script]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("inner rc=75\n"), "{stdout}");
    assert!(!inner_ran.exists(), "the other task's run is skipped");
    let tasks: Vec<String> = records_in(&records)
        .iter()
        .map(|r| format!("{}/{}", r["task"]["run_id"], r["task"]["id"]))
        .collect();
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    assert!(tasks.contains(&"9/\"t_2\"".to_string()), "{tasks:?}");
}
