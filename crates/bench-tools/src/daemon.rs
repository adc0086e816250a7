//! A rig around the real `kanban-watchdog run` (release build): a Hermes
//! board of a chosen size with claimed tasks, a config like the e2e tests',
//! an optional concurrent writer taking `BEGIN IMMEDIATE` bursts (Python's
//! sqlite3, as Hermes is), and two watchers in this process on one clock:
//!
//! * the *floor*: a bare inotify reader on the record dir that timestamps
//!   each record's rename (IN_MOVED_TO): the least any notification-driven
//!   reader can take;
//! * the *commit*: an inotify watch on `<state_dir>/audit.jsonl`, which the
//!   board layer appends right after each commit, timestamping each record
//!   id as its line appears (one audit log per board on a multi-board
//!   home: `audit.jsonl` for `default`, `audit.<slug>.jsonl` for the others).
//!
//! With `RigSpec::boards` > 1 the home has `default` plus named boards
//! under `kanban/boards/<slug>/`, each the same size, the claimed tasks
//! dealt round-robin over them; every record names its board (slug and
//! file, as the dispatcher's `HERMES_KANBAN_BOARD`/`HERMES_KANBAN_DB` do),
//! so consecutive records go to different boards. The concurrent writer
//! stays on `default` alone: the same writer load as on a one-board home.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use exit_record::Failure;
use exit_record::{
    ExitInfo, ExitRecord, SCHEMA_NAME, SCHEMA_VERSION, StreamCapture, TaskContext, record_file_name,
};
use failure_signatures::FailureClass;
use wait_timeout::ChildExt;

use crate::Ctx;
use crate::board;
use crate::sys::{self, Inotify};

/// The concurrent writer: holds the write lock HOLD_MS, then leaves it
/// alone GAP_MS (20% lock duty), like a busy dispatcher plus workers.
pub const WRITER_HOLD_MS: u64 = 5;
pub const WRITER_GAP_MS: u64 = 20;

pub struct RigSpec {
    pub name: String,
    /// Completed tasks already on the board (its size).
    pub done_tasks: usize,
    /// Claimed tasks, one record each.
    pub running: usize,
    /// Records already in the record dir when the daemon starts.
    pub backlog: usize,
    /// `dispatcher.check_every`.
    pub check_every: &'static str,
    pub concurrent_writer: bool,
    /// Boards in the home (1: just `default`), each of `done_tasks`.
    pub boards: usize,
}

impl RigSpec {
    pub fn new(name: &str, done_tasks: usize, running: usize) -> RigSpec {
        RigSpec {
            name: name.into(),
            done_tasks,
            running,
            backlog: 0,
            check_every: "5s",
            concurrent_writer: true,
            boards: 1,
        }
    }
}

pub struct Rig {
    pub dir: PathBuf,
    pub records: PathBuf,
    pub state: PathBuf,
    pub stderr_log: PathBuf,
    bodies: Vec<(String, Vec<u8>)>,
    next: usize,
    child: Option<Child>,
    pub pid: u32,
    pub spawned_at: Instant,
    pub ready_at: Instant,
    writer: Option<Writer>,
    pub commits: Watch,
    pub floor: Watch,
    /// The records written before the daemon started.
    pub backlog_ids: Vec<(String, Instant)>,
}

impl Rig {
    pub fn start(ctx: &Ctx, spec: &RigSpec) -> anyhow::Result<Rig> {
        let dir = ctx.work.join(&spec.name);
        let _ = std::fs::remove_dir_all(&dir);
        let home = dir.join("hermes");
        let records = dir.join("records");
        let state = dir.join("state");
        for d in [
            &home.join("profiles/coder"),
            &home.join("logs"),
            &records,
            &state,
        ] {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(
            home.join("profiles/coder/config.yaml"),
            "model:\n  provider: openai-codex\n  default: gpt-5\n",
        )?;
        let boards = board_slugs(spec.boards.max(1));
        let prefix = spec.name.replace('-', "_");
        // Per board: the claimed tasks dealt to it (task i -> board i % n).
        let mut dealt = Vec::new();
        for (bi, slug) in boards.iter().enumerate() {
            let db = hermes_board::home::board_path(&home, slug);
            std::fs::create_dir_all(db.parent().expect("a board file has a dir"))?;
            board::base_board(&ctx.work.join("cache"), spec.done_tasks, &db)?;
            let n = (spec.running + boards.len() - 1 - bi) / boards.len();
            let tasks = board::add_running(&db, &format!("{prefix}_{slug}"), n)?;
            dealt.push((slug.clone(), db, tasks.into_iter()));
        }
        let mut bodies: Vec<(String, Vec<u8>)> = Vec::with_capacity(spec.running);
        for i in 0..spec.running {
            let (slug, db, tasks) = &mut dealt[i % boards.len()];
            let (task, run) = tasks.next().expect("dealt round-robin");
            bodies.push(record_body(&task, run, slug, db));
        }
        let db = hermes_board::home::board_path(&home, "default");
        let config = dir.join("watchdog.yaml");
        std::fs::write(
            &config,
            format!(
                "hermes_home: {home}\nrecord_dir: {rec}\nstate_dir: {state}\n\
                 http:\n  listen: \"127.0.0.1:0\"\n\
                 retry:\n  margin: 0s\n  jitter: 0s\n\
                 dispatcher:\n  interval: 60s\n  stall_after: 3600s\n  check_every: {every}\n\
                 restart:\n  enabled: false\n",
                home = home.display(),
                rec = records.display(),
                state = state.display(),
                every = spec.check_every,
            ),
        )?;
        // The audit logs exist before the daemon does, so their watcher
        // never misses the first commits of a start-up backlog.
        let audits: Vec<PathBuf> = boards
            .iter()
            .map(|slug| match slug.as_str() {
                "default" => state.join("audit.jsonl"),
                _ => state.join(format!("audit.{slug}.jsonl")),
            })
            .collect();
        for audit in &audits {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(audit)?;
        }
        let floor = Watch::records(&records)?;
        let commits = Watch::audit(&audits)?;
        let mut rig = Rig {
            stderr_log: dir.join("watchdog.stderr"),
            dir,
            records,
            state,
            bodies,
            next: 0,
            child: None,
            pid: 0,
            spawned_at: Instant::now(),
            ready_at: Instant::now(),
            writer: None,
            commits,
            floor,
            backlog_ids: Vec::new(),
        };
        if spec.backlog > 0 {
            rig.backlog_ids = rig.write_paced(spec.backlog, None)?;
        }
        if spec.concurrent_writer {
            rig.writer = Some(Writer::start(&db)?);
        }
        let log = std::fs::File::create(&rig.stderr_log)?;
        rig.spawned_at = Instant::now();
        let child = Command::new(&ctx.watchdog)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        rig.pid = child.id();
        rig.child = Some(child);
        let addr = rig.state.join("http.addr");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !addr.exists() {
            if let Some(c) = rig.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                anyhow::bail!(
                    "kanban-watchdog exited ({st}) at start: {}",
                    std::fs::read_to_string(&rig.stderr_log).unwrap_or_default()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "kanban-watchdog did not start in 60 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        rig.ready_at = Instant::now();
        Ok(rig)
    }

    pub fn remaining(&self) -> usize {
        self.bodies.len() - self.next
    }

    /// Renames the next `n` records into the record dir, at `rate` per
    /// second (None: as fast as possible). Returns (record id, instant just
    /// before its rename).
    pub fn write_paced(
        &mut self,
        n: usize,
        rate: Option<f64>,
    ) -> anyhow::Result<Vec<(String, Instant)>> {
        anyhow::ensure!(n <= self.remaining(), "not enough claimed tasks");
        if rate.is_none() {
            return self.write_burst(n);
        }
        let mut out = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            if let Some(r) = rate {
                let due = start + Duration::from_secs_f64(i as f64 / r);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            let (id, body) = &self.bodies[self.next];
            self.next += 1;
            let name = record_file_name(id);
            let tmp = self.records.join(format!(".{name}.tmp"));
            write_new_file(&tmp, body)?;
            let t0 = Instant::now();
            std::fs::rename(&tmp, self.records.join(&name))?;
            out.push((id.clone(), t0));
        }
        Ok(out)
    }

    /// `n` records as fast as renames go: each written whole into a
    /// staging directory beside the record dir (same filesystem, outside
    /// the daemon's view) first, then all renamed in, in a tight loop. What
    /// is measured is then the daemon's handling, not how fast this process
    /// writes files (writing them in the loop renamed only ~1,350/s here
    /// while the daemon ran: the harness, not the daemon, set the rate).
    fn write_burst(&mut self, n: usize) -> anyhow::Result<Vec<(String, Instant)>> {
        let staging = self.dir.join("staging");
        std::fs::create_dir_all(&staging)?;
        let mut staged = Vec::with_capacity(n);
        for _ in 0..n {
            let (id, body) = &self.bodies[self.next];
            self.next += 1;
            let name = record_file_name(id);
            let tmp = staging.join(&name);
            write_new_file(&tmp, body)?;
            staged.push((id.clone(), tmp, self.records.join(&name)));
        }
        let mut out = Vec::with_capacity(n);
        for (id, from, to) in staged {
            let t0 = Instant::now();
            std::fs::rename(&from, &to)?;
            out.push((id, t0));
        }
        Ok(out)
    }

    /// Waits until every id has a commit (or the timeout); returns how many did.
    pub fn wait_committed(&self, ids: &[(String, Instant)], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let count = || {
            let seen = self.commits.seen.lock().unwrap();
            ids.iter().filter(|(id, _)| seen.contains_key(id)).count()
        };
        // Cheap polls (the map's size) until enough lines are in, so this
        // thread stays out of the daemon's way on a small machine.
        let mut last_full = Instant::now();
        loop {
            let len = self.commits.seen.lock().unwrap().len();
            let now = Instant::now();
            if len >= ids.len() || now >= deadline || now.duration_since(last_full).as_secs() >= 1 {
                last_full = now;
                let done = count();
                if done == ids.len() || now >= deadline || !self.alive() {
                    return done;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn alive(&self) -> bool {
        sys::proc_cpu_secs(self.pid).is_some()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .unwrap_or_default()
                .contains(") Z ")
    }

    /// (commit latency, floor latency) in ms for each id that has both.
    pub fn latencies(&self, ids: &[(String, Instant)]) -> (Vec<f64>, Vec<f64>) {
        let commits = self.commits.seen.lock().unwrap();
        let floor = self.floor.seen.lock().unwrap();
        let mut ours = Vec::new();
        let mut base = Vec::new();
        for (id, t0) in ids {
            if let Some(t) = commits.get(id) {
                ours.push(t.saturating_duration_since(*t0).as_secs_f64() * 1000.0);
            }
            if let Some(t) = floor.get(id) {
                base.push(t.saturating_duration_since(*t0).as_secs_f64() * 1000.0);
            }
        }
        (ours, base)
    }

    pub fn commit_time(&self, id: &str) -> Option<Instant> {
        self.commits.seen.lock().unwrap().get(id).copied()
    }

    pub fn floor_time(&self, id: &str) -> Option<Instant> {
        self.floor.seen.lock().unwrap().get(id).copied()
    }

    pub fn done_count(&self) -> usize {
        std::fs::read_dir(self.records.join("done"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Waits until the daemon's CPU time stops growing for `quiet` (or the
    /// timeout): when it is done with whatever it queued up.
    pub fn wait_quiet(&self, quiet: Duration, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let mut last = sys::proc_cpu_secs(self.pid)?;
        let mut last_change = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = Instant::now();
            let cpu = sys::proc_cpu_secs(self.pid)?;
            // One clock tick of CPU per 50 ms poll still counts as busy.
            if cpu > last + 0.011 {
                last_change = now;
            }
            last = cpu;
            if now.duration_since(last_change) >= quiet {
                return Some(last_change);
            }
            if now >= deadline {
                return None;
            }
        }
    }

    pub fn vm_kib(&self, key: &str) -> u64 {
        sys::proc_status_kib(self.pid, key).unwrap_or(0)
    }

    /// Warnings and errors the daemon logged (first few), for diagnosis.
    pub fn log_problems(&self) -> Vec<String> {
        let Ok(f) = std::fs::File::open(&self.stderr_log) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            // Expected in every rig: no gateway log, the provider going
            // unhealthy on the first rate-limit record, and its alert.
            .filter(|l| {
                !(l.contains("ALERT")
                    || l.contains("log file missing")
                    || l.contains("marked unhealthy"))
            })
            .take(5)
            .collect()
    }

    pub fn stop(&mut self) {
        self.writer = None;
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            if !matches!(c.wait_timeout(Duration::from_secs(10)), Ok(Some(_))) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.commits.stop();
        self.floor.stop();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `default` and then `b01`, `b02`, ...: the slugs of an n-board home.
fn board_slugs(n: usize) -> Vec<String> {
    std::iter::once("default".to_string())
        .chain((1..n).map(|i| format!("b{i:02}")))
        .collect()
}

/// A new private file (0600) holding `body` whole, as the shim writes a
/// record before renaming it into the record dir.
fn write_new_file(path: &Path, body: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(body)
}

/// A rate-limited run of `task`/`run` on board `slug` at `db`, as
/// worker-shim writes it.
fn record_body(task: &str, run: i64, slug: &str, db: &Path) -> (String, Vec<u8>) {
    let now = jiff::Timestamp::now();
    let resets = now.as_second() + 3600;
    let line = format!("HTTP 429: The usage limit has been reached. resets_at: {resets}");
    let rec = ExitRecord {
        schema: SCHEMA_NAME.into(),
        schema_version: SCHEMA_VERSION,
        id: exit_record::new_record_id(),
        argv: vec![
            "hermes".into(),
            "chat".into(),
            "-q".into(),
            "work kanban task".into(),
        ],
        cwd: Some("/srv/work".into()),
        pid: Some(4243),
        shim_pid: 4242,
        started_at: now,
        ended_at: now,
        duration_ms: 1234,
        exit: ExitInfo {
            code: Some(1),
            signal: None,
            reported_code: 75,
            spawn_error: None,
        },
        task: TaskContext {
            id: Some(task.into()),
            run_id: Some(run),
            board: Some(slug.into()),
            db: Some(db.display().to_string()),
            profile: Some(board::PROFILE.into()),
            claim_lock: None,
        },
        stdout: StreamCapture {
            captured: true,
            bytes_total: 120,
            head: "Query: work kanban task\nInitializing agent...\n".into(),
            tail: String::new(),
            truncated: false,
        },
        stderr: StreamCapture {
            captured: true,
            bytes_total: 400,
            head: format!(
                "Traceback (most recent call last):\n  File \"agent/run.py\", line 88, in run\n    resp = client.responses.create(**kw)\nopenai.RateLimitError: {line}\n"
            ),
            tail: String::new(),
            truncated: false,
        },
        failure: Some(Failure {
            class: FailureClass::RateLimit,
            signature: "codex-usage-limit".into(),
            provider: None,
            transient: true,
            matched_line: line,
            resets_at: Some(resets),
            retry_after_s: Some(3600.0),
        }),
        steered: None,
        run_at_exit: None,
        skipped: None,
    };
    let mut body = serde_json::to_vec_pretty(&rec).expect("record serializes");
    body.push(b'\n');
    (rec.id, body)
}

/// A thread timestamping keys as they appear (see the module doc).
pub struct Watch {
    pub seen: Arc<Mutex<HashMap<String, Instant>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Watch {
    fn spawn(
        mut ino: Inotify,
        mut on_wake: impl FnMut(Instant, Vec<sys::InotifyEvent>, &mut Vec<(String, Instant)>)
        + Send
        + 'static,
    ) -> Watch {
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&seen), Arc::clone(&stop));
        let handle = std::thread::Builder::new()
            .name("watch".into())
            .spawn(move || {
                let mut batch = Vec::new();
                while !st.load(Ordering::Relaxed) {
                    let (now, events) = ino.wait(Duration::from_millis(50));
                    on_wake(now, events, &mut batch);
                    if !batch.is_empty() {
                        let mut m = s.lock().unwrap();
                        for (k, t) in batch.drain(..) {
                            m.entry(k).or_insert(t);
                        }
                    }
                }
            })
            .expect("spawn watcher");
        Watch {
            seen,
            stop,
            handle: Some(handle),
        }
    }

    /// Renames of records into `dir`.
    fn records(dir: &Path) -> anyhow::Result<Watch> {
        let ino = Inotify::new()?;
        ino.watch(dir, libc::IN_MOVED_TO)?;
        Ok(Watch::spawn(ino, |now, events, batch| {
            for e in events {
                if let Some(id) = e.name.strip_suffix(".json")
                    && !id.starts_with('.')
                {
                    batch.push((id.to_string(), now));
                }
            }
        }))
    }

    /// Record ids of the lines appended to the audit logs (one per board).
    fn audit(paths: &[PathBuf]) -> anyhow::Result<Watch> {
        let ino = Inotify::new()?;
        // Per log: the file, how far it was read, a partial last line.
        let mut logs = Vec::with_capacity(paths.len());
        for path in paths {
            ino.watch(path, libc::IN_MODIFY)?;
            logs.push((std::fs::File::open(path)?, 0u64, Vec::<u8>::new()));
        }
        let mut buf = vec![0u8; 1 << 20];
        Ok(Watch::spawn(ino, move |now, _events, batch| {
            // Read whatever is new, on an event or on the 50 ms timeout alike.
            for (file, offset, pending) in logs.iter_mut() {
                if file.seek(SeekFrom::Start(*offset)).is_err() {
                    continue;
                }
                loop {
                    let n = match file.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    *offset += n as u64;
                    pending.extend_from_slice(&buf[..n]);
                }
                let mut start = 0;
                while let Some(nl) = pending[start..].iter().position(|&b| b == b'\n') {
                    let line = &pending[start..start + nl];
                    if let Some(id) = record_id_of(line) {
                        batch.push((id, now));
                    }
                    start += nl + 1;
                }
                pending.drain(..start);
            }
        }))
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop();
    }
}

fn record_id_of(line: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"record_id\":\"";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = line[at..].iter().position(|&b| b == b'"')?;
    Some(String::from_utf8_lossy(&line[at..at + len]).into_owned())
}

/// The concurrent writer: a Python sqlite3 process with Hermes' pragmas, or
/// a Rust thread doing the same when python3 is missing.
enum Writer {
    Python(Child),
    Thread(Arc<AtomicBool>, Option<JoinHandle<()>>),
}

impl Writer {
    fn start(db: &Path) -> anyhow::Result<Writer> {
        let script = format!(
            r#"
import sqlite3, time
c = sqlite3.connect({db:?}, timeout=120, isolation_level=None)
for p in ("busy_timeout=120000", "synchronous=FULL", "wal_autocheckpoint=100"):
    c.execute("PRAGMA " + p)
print("ready", flush=True)
while True:
    c.execute("BEGIN IMMEDIATE")
    for _ in range(5):
        c.execute("INSERT INTO task_events (task_id, kind, payload, created_at) VALUES ('noise', 'heartbeat', NULL, 0)")
    time.sleep({hold})
    c.execute("COMMIT")
    time.sleep({gap})
"#,
            db = db.display().to_string(),
            hold = WRITER_HOLD_MS as f64 / 1000.0,
            gap = WRITER_GAP_MS as f64 / 1000.0,
        );
        if let Ok(mut child) = Command::new("python3")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
        {
            let mut line = String::new();
            BufReader::new(child.stdout.as_mut().expect("piped")).read_line(&mut line)?;
            anyhow::ensure!(line.trim() == "ready", "python writer did not start");
            return Ok(Writer::Python(child));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let db = db.to_path_buf();
        let h = std::thread::spawn(move || {
            let Ok(mut c) = hermes_board::testkit::connect(&db) else {
                return;
            };
            let _ = c.pragma_update(None, "wal_autocheckpoint", 100);
            while !st.load(Ordering::Relaxed) {
                if let Ok(tx) =
                    c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                {
                    for _ in 0..5 {
                        let _ = tx.execute(
                            "INSERT INTO task_events (task_id, kind, payload, created_at) VALUES ('noise', 'heartbeat', NULL, 0)",
                            [],
                        );
                    }
                    std::thread::sleep(Duration::from_millis(WRITER_HOLD_MS));
                    let _ = tx.commit();
                }
                std::thread::sleep(Duration::from_millis(WRITER_GAP_MS));
            }
        });
        Ok(Writer::Thread(stop, Some(h)))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        match self {
            Writer::Python(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Writer::Thread(stop, h) => {
                stop.store(true, Ordering::Relaxed);
                if let Some(h) = h.take() {
                    let _ = h.join();
                }
            }
        }
    }
}

pub fn writer_text() -> String {
    format!(
        "concurrent writer: BEGIN IMMEDIATE held {WRITER_HOLD_MS} ms every {} ms",
        WRITER_HOLD_MS + WRITER_GAP_MS
    )
}
