//! A harness for end-to-end tests: a real Hermes-schema board in WAL mode,
//! the real `kanban-watchdog` and `worker-shim` binaries as processes, a
//! webhook receiver on 127.0.0.1. Every wait polls a condition with a
//! timeout.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exit_record::Failure;
use exit_record::{
    ExitInfo, ExitRecord, SCHEMA_NAME, SCHEMA_VERSION, StreamCapture, TaskContext, WriteOptions,
};
use failure_signatures::FailureClass;
use hermes_board::testkit;
use serde_json::Value;
#[allow(unused_imports)]
pub use test_support::{Tmpfs, prerequisite_missing, wait_for, wait_until};

pub const WATCHDOG: &str = env!("CARGO_BIN_EXE_kanban-watchdog");

/// worker-shim lives next to kanban-watchdog once `cargo build --workspace --bins` ran.
pub fn shim_bin() -> PathBuf {
    let p = Path::new(WATCHDOG).with_file_name("worker-shim");
    assert!(
        p.is_file(),
        "{} missing: run `cargo build --workspace --bins` first (scripts/test does)",
        p.display()
    );
    p
}

pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

pub struct Harness {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub db: PathBuf,
    pub records: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    pub stderr_log: PathBuf,
    pub child: Option<Child>,
    pub extra_yaml: String,
    /// The daemon's RUST_LOG (`info`).
    pub rust_log: &'static str,
}

impl Harness {
    /// A board with profile `coder` on `openai-codex` (no fallback) and
    /// profile `grok` on `xai-oauth`.
    pub fn new() -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("hermes");
        let db = home.join("kanban.db");
        std::fs::create_dir_all(home.join("profiles/coder")).unwrap();
        std::fs::create_dir_all(home.join("profiles/grok")).unwrap();
        std::fs::create_dir_all(home.join("logs")).unwrap();
        std::fs::write(
            home.join("profiles/coder/config.yaml"),
            "model:\n  provider: openai-codex\n  default: gpt-5\n",
        )
        .unwrap();
        std::fs::write(
            home.join("profiles/grok/config.yaml"),
            "model:\n  provider: xai-oauth\n  default: grok-4\n",
        )
        .unwrap();
        drop(testkit::create_board(&db).unwrap());
        let records = tmp.path().join("records");
        let state = tmp.path().join("state");
        Harness {
            config: tmp.path().join("watchdog.yaml"),
            stderr_log: tmp.path().join("watchdog.stderr"),
            home,
            db,
            records,
            state,
            child: None,
            extra_yaml: String::new(),
            rust_log: "info",
            tmp,
        }
    }

    pub fn conn(&self) -> rusqlite::Connection {
        testkit::connect(&self.db).unwrap()
    }

    pub fn set_profile(&self, name: &str, yaml: &str) {
        let dir = self.home.join("profiles").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.yaml"), yaml).unwrap();
    }

    /// The config: fast ticks, no jitter, loopback HTTP on a free port,
    /// plus `extra` YAML merged at the top level.
    pub fn write_config(&self, extra: &str) {
        let base = format!(
            "hermes_home: {home}\nrecord_dir: {rec}\nstate_dir: {state}\n\
             http: {{listen: \"127.0.0.1:0\"}}\n",
            home = self.home.display(),
            rec = self.records.display(),
            state = self.state.display(),
        );
        let mut doc: serde_yaml::Value = serde_yaml::from_str(&base).unwrap();
        let defaults: serde_yaml::Value = serde_yaml::from_str(
            "retry: {margin: 0s, jitter: 0s}\n\
             dispatcher: {interval: 1s, stall_after: 60s, check_every: 100ms}\n\
             restart: {enabled: false}\n",
        )
        .unwrap();
        merge(&mut doc, defaults);
        if !extra.trim().is_empty() {
            merge(&mut doc, serde_yaml::from_str(extra).unwrap());
        }
        std::fs::write(&self.config, serde_yaml::to_string(&doc).unwrap()).unwrap();
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    pub fn start_with(&mut self, args: &[&str]) {
        if !self.config.exists() {
            self.write_config("");
        }
        let _ = std::fs::remove_file(self.state.join("http.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_log)
            .unwrap();
        let child = Command::new(WATCHDOG)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", self.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_until(
            "the watchdog's HTTP endpoint",
            Duration::from_secs(20),
            || std::fs::read_to_string(self.state.join("http.addr")).ok(),
        );
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    pub fn addr(&self) -> String {
        std::fs::read_to_string(self.state.join("http.addr")).unwrap()
    }

    pub fn get(&self, path: &str) -> String {
        ureq::get(&format!("http://{}{path}", self.addr()))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.get("/status")).unwrap()
    }

    /// Scrapes /metrics and parses it with a Prometheus text parser.
    pub fn metrics(&self) -> prometheus_parse::Scrape {
        let body = self.get("/metrics");
        let lines = body.lines().map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).unwrap()
    }

    /// The value of one sample, matching all given labels (0 if absent).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics(), name, labels)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn status_of(&self, task: &str) -> String {
        testkit::status(&self.conn(), task).unwrap()
    }

    pub fn events(&self, task: &str) -> Vec<(String, Value)> {
        testkit::events(&self.conn(), task)
            .unwrap()
            .into_iter()
            .map(|(k, p)| {
                (
                    k,
                    p.and_then(|p| serde_json::from_str(&p).ok())
                        .unwrap_or(Value::Null),
                )
            })
            .collect()
    }

    pub fn count_events(&self, task: &str, kind: &str) -> usize {
        self.events(task).iter().filter(|(k, _)| k == kind).count()
    }

    pub fn pending_records(&self) -> usize {
        std::fs::read_dir(&self.records)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    }

    pub fn files_in(&self, sub: &str) -> Vec<String> {
        test_support::file_names(&self.records.join(sub))
    }

    /// Adds a ready task and claims it like the dispatcher: returns the run id.
    pub fn running_task(&self, id: &str, profile: &str) -> i64 {
        let mut conn = self.conn();
        testkit::add_task(&conn, id, profile, "ready").unwrap();
        testkit::claim(&mut conn, id, WORKER_PID).unwrap()
    }

    /// Adds a ready task and claims it like the dispatcher before it
    /// spawns the worker (no pid yet: see [`run_as_dispatched`]).
    pub fn claimed_task(&self, id: &str, profile: &str) -> i64 {
        let mut conn = self.conn();
        testkit::add_task(&conn, id, profile, "ready").unwrap();
        testkit::claim_before_spawn(&mut conn, id).unwrap()
    }

    /// Writes a record as worker-shim would (atomic rename into place).
    pub fn write_record(&self, rec: &ExitRecord) -> PathBuf {
        exit_record::write_atomic(&self.records, rec, WriteOptions { fsync: false }).unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kill();
        let pid_file = self.home.join("gateway.pid");
        if let Ok(text) = std::fs::read_to_string(&pid_file)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
            && let Some(pid) = v["pid"].as_i64()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

pub fn metric_value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Merges YAML mapping `from` into `into`, recursively (`from` wins).
pub fn merge(into: &mut serde_yaml::Value, from: serde_yaml::Value) {
    match (into, from) {
        (serde_yaml::Value::Mapping(a), serde_yaml::Value::Mapping(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) if existing.is_mapping() && v.is_mapping() => merge(existing, v),
                    _ => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (into, from) => *into = from,
    }
}

/// Runs `cmd` (a shim around a worker) as Hermes' dispatcher runs a
/// worker for the claimed `task`: the process is started, its pid recorded
/// on the board (`spawned`, as `_set_worker_pid`), and only then let go, so
/// its record can never arrive before the board names its pid. Returns its
/// output (stdout and stderr captured).
pub fn run_as_dispatched(
    conn: &rusqlite::Connection,
    task: &str,
    cmd: &mut Command,
) -> std::process::Output {
    // `sh` stops itself, then becomes the command (same pid): std's spawn
    // returns only once the child exec'ed, so the stop must come after one.
    let mut gated = Command::new("sh");
    gated
        .args(["-c", "kill -STOP $$; exec \"$@\"", "sh"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => gated.env(k, v),
            None => gated.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        gated.current_dir(dir);
    }
    let child = gated
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the shim");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WUNTRACED)) {
        Ok(nix::sys::wait::WaitStatus::Stopped(..)) => {}
        other => panic!("the shim's process did not stop before its exec: {other:?}"),
    }
    testkit::set_worker_pid(conn, task, child.id()).expect("record the worker pid");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("continue the shim");
    child.wait_with_output().expect("the shim's output")
}

/// The pid the tests' dispatcher "spawns" for every run (the board's
/// `spawned` event), and the shim pid of every record [`record`] makes: a
/// record is the run's own only when the two agree.
pub const WORKER_PID: i64 = 4242;

/// A record for `task`/`run` with the given failure (None = clean exit),
/// as the shim the dispatcher spawned ([`WORKER_PID`]) writes it.
pub fn record(task: Option<(&str, i64)>, profile: &str, failure: Option<Failure>) -> ExitRecord {
    let now = jiff::Timestamp::now();
    ExitRecord {
        schema: SCHEMA_NAME.into(),
        schema_version: SCHEMA_VERSION,
        id: exit_record::new_record_id(),
        argv: vec!["hermes".into()],
        cwd: None,
        pid: Some(WORKER_PID as u32 + 1),
        shim_pid: WORKER_PID as u32,
        started_at: now,
        ended_at: now,
        duration_ms: 1,
        exit: ExitInfo {
            code: Some(0),
            signal: None,
            reported_code: if failure.is_some() { 75 } else { 0 },
            spawn_error: None,
        },
        task: TaskContext {
            id: task.map(|(t, _)| t.to_string()),
            run_id: task.map(|(_, r)| r),
            board: Some("default".into()),
            db: None,
            profile: Some(profile.into()),
            claim_lock: None,
        },
        stdout: StreamCapture::default(),
        stderr: StreamCapture::default(),
        failure,
        steered: None,
        run_at_exit: None,
        skipped: None,
    }
}

/// Codex's usage-limit 429 ([`test_support::rate_limit`]).
pub fn rate_limit(resets_at: Option<i64>) -> Failure {
    test_support::rate_limit(resets_at)
}

pub fn auth_expired(provider: &str) -> Failure {
    Failure {
        class: FailureClass::AuthExpired,
        signature: "xai-oauth-missing-token".into(),
        provider: Some(provider.into()),
        transient: false,
        matched_line: "RuntimeError: xAI OAuth state is missing access_token.".into(),
        resets_at: None,
        retry_after_s: None,
    }
}

/// A webhook receiver on 127.0.0.1 that keeps every JSON body it gets.
pub struct Webhook {
    pub url: String,
    pub got: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    pub fn start() -> Webhook {
        let (url, got) = test_support::webhook_receiver().unwrap();
        Webhook { url, got }
    }

    pub fn alerts(&self, key: &str, status: &str) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a["alert"] == key && a["status"] == status)
            .cloned()
            .collect()
    }
}

/// A second writer on the board from Python's sqlite3 (as Hermes is),
/// taking the write lock in bursts until dropped.
pub struct PythonWriter {
    child: Child,
}

impl PythonWriter {
    pub fn start(db: &Path, hold_ms: u64) -> PythonWriter {
        let script = format!(
            r#"
import sqlite3, time, sys
c = sqlite3.connect({db:?}, timeout=120, isolation_level=None)
c.execute("PRAGMA busy_timeout=120000")
print("ready", flush=True)
while True:
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO task_events (task_id, kind, payload, created_at) VALUES ('noise', 'heartbeat', NULL, 0)")
    time.sleep({hold})
    c.execute("COMMIT")
    time.sleep(0.002)
"#,
            db = db.display().to_string(),
            hold = hold_ms as f64 / 1000.0
        );
        let mut child = Command::new("python3")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 is needed for the concurrent-writer tests");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        PythonWriter { child }
    }
}

impl Drop for PythonWriter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
