//! A board locked by another writer must not freeze the daemon (issue 13
//! item 1): the record pass ends at the lock and the loop retries it, so
//! stall checks and `/status` go on, SIGTERM is honoured within a second,
//! and every record is applied exactly once when the lock goes.
//!
//! The other writer is a real process (Python's sqlite3, as Hermes) holding
//! `BEGIN IMMEDIATE` (WAL, Hermes 0.19's mode) or `BEGIN EXCLUSIVE` on a
//! rollback-journal board (the 0.22 fork's mode; readers wait too).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);

/// A second writer holding the board's lock until `release`.
struct Locker {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Locker {
    fn hold(db: &Path, begin: &str) -> Locker {
        let script = format!(
            r#"
import sqlite3, sys
c = sqlite3.connect({db:?}, timeout=60, isolation_level=None)
c.execute("{begin}")
c.execute("INSERT INTO task_events (task_id, kind, payload, created_at) VALUES ('noise', 'heartbeat', NULL, 0)")
print("locked", flush=True)
sys.stdin.readline()
c.execute("COMMIT")
print("released", flush=True)
"#,
            db = db.display().to_string()
        );
        let mut child = Command::new("python3")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed for the concurrent-writer tests");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked");
        Locker { child, out }
    }

    fn release(mut self) {
        self.child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "released");
        self.child.wait().unwrap();
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM, then how long until the process is gone.
fn time_to_exit(h: &mut Harness) -> Duration {
    let mut child = h.child.take().expect("running");
    let start = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            return start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Three running tasks on `coder` (claimed before the lock is taken).
fn three_running_tasks(h: &Harness) -> Vec<(String, i64)> {
    (0..3)
        .map(|i| {
            let t = format!("locked{i}");
            let run = h.running_task(&t, "coder");
            (t, run)
        })
        .collect()
}

/// Their 429 records, written as the shim writes them.
fn write_records(h: &Harness, tasks: &[(String, i64)]) -> Vec<String> {
    for (t, run) in tasks {
        h.write_record(&record(
            Some((t, *run)),
            "coder",
            Some(rate_limit(Some(now() + 3600))),
        ));
    }
    tasks.iter().map(|(t, _)| t.clone()).collect()
}

fn set_journal_mode_delete(db: &Path) {
    let out = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import sqlite3; c = sqlite3.connect({:?}); print(c.execute('PRAGMA journal_mode=DELETE').fetchone()[0])",
                db.display().to_string()
            ),
        ])
        .output()
        .expect("python3");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "delete");
}

#[test]
fn a_locked_board_ends_the_record_pass_and_the_daemon_goes_on_and_stops_within_a_second() {
    let mut h = Harness::new();
    h.write_config("dispatcher: {interval: 1s, stall_after: 3s, check_every: 100ms}\n");
    h.start();
    // Ready work nobody claims (no dispatcher runs): a stall to be seen
    // while the board is locked.
    testkit_add(&h, "waiting", "grok");
    let running = three_running_tasks(&h);
    let locker = Locker::hold(&h.db, "BEGIN IMMEDIATE");
    let locked_at = Instant::now();
    let tasks = write_records(&h, &running);

    // The daemon ran into the lock ...
    wait_until("the record pass to hit the lock", T, || {
        h.stderr()
            .contains("board is locked; retrying the write")
            .then_some(())
    });
    // ... and goes on: /status is refreshed, the stall check runs.
    let first = h.status()["generated_at"].as_i64().unwrap();
    let stalled = wait_until("the stall seen while the board is locked", T, || {
        let s = h.status();
        (s["dispatcher"]["stalled"] == true).then_some(s)
    });
    assert!(
        stalled["dispatcher"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("ready task"),
        "{stalled}"
    );
    wait_until("/status refreshed during the lock", T, || {
        (h.status()["generated_at"].as_i64().unwrap() >= first + 2).then_some(())
    });
    assert_eq!(h.metric("kanban_watchdog_dispatcher_stalled", &[]), 1.0);
    for t in &tasks {
        assert_eq!(h.status_of(t), "running", "nothing applied while locked");
    }
    assert_eq!(h.pending_records(), 3, "the records wait, none skipped");
    eprintln!(
        "stall seen and /status refreshed {:?} into the lock",
        locked_at.elapsed()
    );

    // SIGTERM while the board is still locked.
    let took = time_to_exit(&mut h);
    eprintln!("exit after SIGTERM with the board locked and 3 records pending: {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "SIGTERM took {took:?}\n{}",
        h.stderr()
    );

    // Restart, still locked; then the lock goes: each record applied once.
    h.start();
    wait_until("the restarted daemon to hit the lock", T, || {
        (h.stderr()
            .matches("board is locked; retrying the write")
            .count()
            >= 2)
            .then_some(())
    });
    locker.release();
    let released = Instant::now();
    wait_until("all three parked after the release", T, || {
        tasks
            .iter()
            .all(|t| h.status_of(t) == "scheduled")
            .then_some(())
    });
    eprintln!(
        "applied {:?} after the lock was released",
        released.elapsed()
    );
    assert!(
        released.elapsed() < Duration::from_secs(3),
        "the loop retries at most a second apart"
    );
    wait_until("record dir drained", T, || {
        (h.pending_records() == 0).then_some(())
    });
    for t in &tasks {
        assert_eq!(h.count_events(t, "watchdog_parked"), 1, "{t}");
    }
    assert_eq!(h.metric("kanban_watchdog_records_handled_total", &[]), 3.0);
    assert!(h.metric("kanban_watchdog_board_busy_retries_total", &[]) >= 1.0);
    assert!(h.stderr().contains("board writable again after"));
}

#[test]
fn a_rollback_journal_board_held_exclusively_still_lets_sigterm_through_within_a_second() {
    let mut h = Harness::new();
    set_journal_mode_delete(&h.db);
    h.start();
    // BEGIN EXCLUSIVE on a rollback-journal board: readers wait as well.
    let running = three_running_tasks(&h);
    let locker = Locker::hold(&h.db, "BEGIN EXCLUSIVE");
    let tasks = write_records(&h, &running);
    wait_until("the record pass to hit the lock", T, || {
        h.stderr()
            .contains("board is locked; retrying the write")
            .then_some(())
    });
    // The endpoint still answers while the core retries.
    let before = h.metric("kanban_watchdog_records_handled_total", &[]);
    assert_eq!(before, 0.0);
    let took = time_to_exit(&mut h);
    eprintln!("exit after SIGTERM, rollback-journal board held EXCLUSIVE, 3 records: {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "SIGTERM took {took:?}\n{}",
        h.stderr()
    );
    locker.release();
    h.start();
    wait_until("all three parked", T, || {
        tasks
            .iter()
            .all(|t| h.status_of(t) == "scheduled")
            .then_some(())
    });
    wait_until("record dir drained", T, || {
        (h.pending_records() == 0).then_some(())
    });
    for t in &tasks {
        assert_eq!(h.count_events(t, "watchdog_parked"), 1, "{t}");
    }
}

fn testkit_add(h: &Harness, id: &str, profile: &str) {
    hermes_board::testkit::add_task(&h.conn(), id, profile, "ready").unwrap();
}
