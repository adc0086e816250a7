//! Real SQLite boards, with a concurrent writer. Every test that builds a
//! board runs on each [`Flavor`]: the Hermes 0.19.0 schema and the 0.22
//! fork's, each in WAL and in rollback-journal (`DELETE`) mode.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hermes_board::testkit::{
    self, Flavor, add_link, add_task, claim, comment, create_board_as, events, status,
};
use hermes_board::{
    AuditLog, Board, BoardError, BoardOptions, Kind, ParkRequest, ReleaseRequest, RunVerdict,
    WriteOutcome,
};

fn board(path: &Path) -> Board {
    let audit = AuditLog::open(&path.with_extension("audit.jsonl")).unwrap();
    Board::open(path, BoardOptions::default(), Some(audit)).unwrap()
}

fn park_req(task: &str, run: i64, record: &str) -> ParkRequest {
    ParkRequest {
        writer_pid: None,
        task_id: task.into(),
        kind: Kind::Parked,
        run_id: Some(run),
        record_id: Some(record.into()),
        due_at: Some(1_780_861_920),
        provider: Some("openai-codex".into()),
        fallback: None,
        fallback_model: None,
        reason: "rate_limit on openai-codex until 1780861905".into(),
    }
}

fn kinds(conn: &rusqlite::Connection, id: &str) -> Vec<String> {
    events(conn, id)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

#[test]
fn a_rate_limited_running_task_is_parked_once_and_released_to_ready() {
    testkit::on_each_flavor(a_rate_limited_running_task_is_parked_once_and_released_to_ready_on);
}

fn a_rate_limited_running_task_is_parked_once_and_released_to_ready_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let mut hermes = create_board_as(&db, flavor).unwrap();
    add_task(&hermes, "t1", "coder", "ready").unwrap();
    let run = claim(&mut hermes, "t1", 4242).unwrap();
    let mut b = board(&db);

    let out = b.park(&park_req("t1", run, "rec-1")).unwrap();
    let change = out.applied().expect("applied");
    assert_eq!(change.before.status, "running");
    assert_eq!(change.after.status, "scheduled");
    assert_eq!(status(&hermes, "t1").unwrap(), "scheduled");
    let (run_status, outcome, ended): (String, String, Option<i64>) = hermes
        .query_row(
            "SELECT status, outcome, ended_at FROM task_runs WHERE id = ?1",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (run_status.as_str(), outcome.as_str()),
        ("scheduled", "scheduled")
    );
    assert!(ended.is_some());
    let (cur, pid): (Option<i64>, Option<i64>) = hermes
        .query_row(
            "SELECT current_run_id, worker_pid FROM tasks WHERE id='t1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (cur, pid),
        (None, None),
        "the dispatcher's reap guard will not match"
    );

    // The same record again (a restart) changes nothing.
    assert!(matches!(
        b.park(&park_req("t1", run, "rec-1")).unwrap(),
        WriteOutcome::AlreadyApplied
    ));
    assert!(b.record_already_applied("t1", "rec-1").unwrap());

    let parked = b.parked().unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].due_at, Some(1_780_861_920));
    assert_eq!(parked[0].record_id.as_deref(), Some("rec-1"));

    let out = b
        .release(&ReleaseRequest {
            task_id: "t1".into(),
            reason: "due".into(),
            healed: false,
        })
        .unwrap();
    assert_eq!(out.applied().unwrap().after.status, "ready");
    assert_eq!(status(&hermes, "t1").unwrap(), "ready");
    assert_eq!(
        kinds(&hermes, "t1"),
        [
            "created",
            "claimed",
            "spawned",
            "watchdog_parked",
            "watchdog_released"
        ]
    );
    assert!(b.parked().unwrap().is_empty());
    let audit = std::fs::read_to_string(db.with_extension("audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["action"], "park");
    assert_eq!(lines[0]["record_id"], "rec-1");
    assert_eq!(lines[0]["before"]["status"], "running");
    assert_eq!(lines[1]["action"], "release");
    drop(hermes);
}

#[test]
fn a_stale_record_changes_nothing() {
    testkit::on_each_flavor(a_stale_record_changes_nothing_on);
}

fn a_stale_record_changes_nothing_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let mut hermes = create_board_as(&db, flavor).unwrap();
    add_task(&hermes, "done", "coder", "ready").unwrap();
    let run_done = claim(&mut hermes, "done", 1).unwrap();
    testkit::complete(&hermes, "done").unwrap();
    add_task(&hermes, "moved", "coder", "ready").unwrap();
    let old_run = claim(&mut hermes, "moved", 2).unwrap();
    testkit::hermes_gave_up(&hermes, "moved").unwrap();
    hermes
        .execute(
            "UPDATE tasks SET status='ready', claim_lock=NULL WHERE id='moved'",
            [],
        )
        .unwrap();
    let _new_run = claim(&mut hermes, "moved", 3).unwrap();
    let before: i64 = hermes
        .query_row("SELECT COUNT(*) FROM task_events", [], |r| r.get(0))
        .unwrap();

    let mut b = board(&db);
    for (task, run) in [("done", run_done), ("moved", old_run), ("missing", 1)] {
        let out = b.park(&park_req(task, run, "rec-stale")).unwrap();
        assert!(matches!(out, WriteOutcome::Stale { .. }), "{task}: {out:?}");
    }
    assert_eq!(status(&hermes, "done").unwrap(), "done");
    assert_eq!(status(&hermes, "moved").unwrap(), "running");
    let after: i64 = hermes
        .query_row("SELECT COUNT(*) FROM task_events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(before, after);
    assert!(
        std::fs::read_to_string(db.with_extension("audit.jsonl"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_task_the_dispatcher_already_blocked_is_brought_back_with_its_failures_reset() {
    testkit::on_each_flavor(
        a_task_the_dispatcher_already_blocked_is_brought_back_with_its_failures_reset_on,
    );
}

fn a_task_the_dispatcher_already_blocked_is_brought_back_with_its_failures_reset_on(
    flavor: Flavor,
) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let mut hermes = create_board_as(&db, flavor).unwrap();
    add_task(&hermes, "t", "coder", "ready").unwrap();
    let run = claim(&mut hermes, "t", 9).unwrap();
    testkit::hermes_gave_up(&hermes, "t").unwrap();
    let mut b = board(&db);
    b.park(&park_req("t", run, "rec-b"))
        .unwrap()
        .applied()
        .unwrap();
    assert_eq!(status(&hermes, "t").unwrap(), "scheduled");
    b.release(&ReleaseRequest {
        task_id: "t".into(),
        reason: "due".into(),
        healed: false,
    })
    .unwrap();
    let (st, fails, err): (String, i64, Option<String>) = hermes
        .query_row(
            "SELECT status, consecutive_failures, last_failure_error FROM tasks WHERE id='t'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((st.as_str(), fails, err), ("ready", 0, None));
}

#[test]
fn release_goes_to_todo_when_a_parent_is_not_done() {
    testkit::on_each_flavor(release_goes_to_todo_when_a_parent_is_not_done_on);
}

fn release_goes_to_todo_when_a_parent_is_not_done_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let mut hermes = create_board_as(&db, flavor).unwrap();
    add_task(&hermes, "parent", "coder", "ready").unwrap();
    add_task(&hermes, "child", "coder", "ready").unwrap();
    let run = claim(&mut hermes, "child", 5).unwrap();
    add_link(&hermes, "parent", "child").unwrap();
    let mut b = board(&db);
    b.park(&park_req("child", run, "r"))
        .unwrap()
        .applied()
        .unwrap();
    b.release(&ReleaseRequest {
        task_id: "child".into(),
        reason: "due".into(),
        healed: false,
    })
    .unwrap();
    assert_eq!(status(&hermes, "child").unwrap(), "todo");
}

#[test]
fn a_task_rescheduled_by_an_operator_is_left_alone() {
    testkit::on_each_flavor(a_task_rescheduled_by_an_operator_is_left_alone_on);
}

fn a_task_rescheduled_by_an_operator_is_left_alone_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let mut hermes = create_board_as(&db, flavor).unwrap();
    add_task(&hermes, "t", "coder", "ready").unwrap();
    let run = claim(&mut hermes, "t", 5).unwrap();
    let mut b = board(&db);
    b.park(&park_req("t", run, "r")).unwrap().applied().unwrap();
    hermes
        .execute(
            "INSERT INTO task_events (task_id, kind, payload, created_at) VALUES ('t','scheduled','{\"reason\":\"human\"}', 0)",
            [],
        )
        .unwrap();
    assert!(b.parked().unwrap().is_empty());
    let out = b
        .release(&ReleaseRequest {
            task_id: "t".into(),
            reason: "due".into(),
            healed: false,
        })
        .unwrap();
    assert!(matches!(out, WriteOutcome::Stale { .. }), "{out:?}");
    assert_eq!(status(&hermes, "t").unwrap(), "scheduled");
}

#[test]
fn hold_only_moves_an_unclaimed_ready_task() {
    testkit::on_each_flavor(hold_only_moves_an_unclaimed_ready_task_on);
}

fn hold_only_moves_an_unclaimed_ready_task_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let mut hermes = create_board_as(&db, flavor).unwrap();
    add_task(&hermes, "a", "coder", "ready").unwrap();
    add_task(&hermes, "b", "coder", "ready").unwrap();
    claim(&mut hermes, "b", 7).unwrap();
    let mut b = board(&db);
    let hold = |id: &str| ParkRequest {
        writer_pid: None,
        task_id: id.into(),
        kind: Kind::Held,
        run_id: None,
        record_id: None,
        due_at: None,
        provider: Some("xai-oauth".into()),
        fallback: None,
        fallback_model: None,
        reason: "provider xai-oauth unhealthy until re-auth".into(),
    };
    assert!(b.park(&hold("a")).unwrap().applied().is_some());
    assert!(matches!(
        b.park(&hold("b")).unwrap(),
        WriteOutcome::Stale { .. }
    ));
    assert_eq!(status(&hermes, "a").unwrap(), "scheduled");
    assert_eq!(status(&hermes, "b").unwrap(), "running");
    let parked = b.parked().unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].kind, Kind::Held);
    assert_eq!(parked[0].due_at, None);
}

#[test]
fn requeue_sends_a_running_task_straight_back_to_ready() {
    testkit::on_each_flavor(requeue_sends_a_running_task_straight_back_to_ready_on);
}

fn requeue_sends_a_running_task_straight_back_to_ready_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let mut hermes = create_board_as(&db, flavor).unwrap();
    add_task(&hermes, "t", "coder", "ready").unwrap();
    let run = claim(&mut hermes, "t", 5).unwrap();
    let mut b = board(&db);
    let mut req = park_req("t", run, "r");
    req.kind = Kind::Requeued;
    req.fallback = Some("openrouter".into());
    b.park(&req).unwrap().applied().unwrap();
    assert_eq!(status(&hermes, "t").unwrap(), "ready");
    let (kind, payload) = events(&hermes, "t").unwrap().pop().unwrap();
    assert_eq!(kind, "watchdog_requeued");
    let p: serde_json::Value = serde_json::from_str(&payload.unwrap()).unwrap();
    assert_eq!(p["fallback"], "openrouter");
    assert_eq!(p["record_id"], "r");
}

#[test]
fn dry_run_writes_nothing() {
    testkit::on_each_flavor(dry_run_writes_nothing_on);
}

fn dry_run_writes_nothing_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let mut hermes = create_board_as(&db, flavor).unwrap();
    add_task(&hermes, "t", "coder", "ready").unwrap();
    let run = claim(&mut hermes, "t", 5).unwrap();
    let before = std::fs::read(&db).unwrap();
    let audit_path = db.with_extension("audit.jsonl");
    let mut b = Board::open(
        &db,
        BoardOptions {
            dry_run: true,
            ..Default::default()
        },
        Some(AuditLog::open(&audit_path).unwrap()),
    )
    .unwrap();
    let out = b.park(&park_req("t", run, "r")).unwrap();
    let change = out.applied().expect("would apply");
    assert!(change.dry_run);
    assert_eq!(change.after.status, "scheduled", "reports what it would do");
    assert_eq!(status(&hermes, "t").unwrap(), "running");
    assert_eq!(kinds(&hermes, "t"), ["created", "claimed", "spawned"]);
    assert_eq!(std::fs::read(&db).unwrap(), before);
    assert!(std::fs::read_to_string(&audit_path).unwrap().is_empty());
}

#[test]
fn an_unknown_schema_is_refused_loudly() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE tasks (id TEXT PRIMARY KEY, title TEXT, status TEXT);
         CREATE TABLE task_events (id INTEGER PRIMARY KEY, task_id TEXT, kind TEXT, payload TEXT, created_at INTEGER);",
    )
    .unwrap();
    let err = Board::open(&db, BoardOptions::default(), None)
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(matches!(err, BoardError::UnknownSchema { .. }), "{msg}");
    assert!(msg.contains("tasks.current_run_id"), "{msg}");
    assert!(msg.contains("table task_runs"), "{msg}");
    assert!(msg.contains("refusing to write"), "{msg}");
    // And a missing file is not created.
    assert!(Board::open(&tmp.path().join("nope.db"), BoardOptions::default(), None).is_err());
    assert!(!tmp.path().join("nope.db").exists());
}

/// A second writer that takes the write lock in bursts, as Hermes does.
/// A second writer holding the write lock for `hold` every `2 * hold`, as
/// Hermes' workers do. Returned once its first burst is committed, so the
/// writes of the test overlap its bursts however loaded the machine is;
/// `bursts` counts the committed ones.
struct BurstyWriter {
    bursts: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<()>,
}

impl BurstyWriter {
    fn count(&self) -> u64 {
        self.bursts.load(Ordering::SeqCst)
    }

    fn join(self) {
        self.handle.join().unwrap();
    }
}

fn bursty_writer(db: &Path, stop: Arc<AtomicBool>, hold: Duration) -> BurstyWriter {
    let db = db.to_path_buf();
    let bursts = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&bursts);
    let handle = std::thread::spawn(move || {
        let mut conn = testkit::connect(&db).unwrap();
        while !stop.load(Ordering::Relaxed) {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            tx.execute(
                "INSERT INTO task_events (task_id, kind, payload, created_at) VALUES ('noise', 'heartbeat', NULL, 0)",
                [],
            )
            .unwrap();
            std::thread::sleep(hold);
            tx.commit().unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            // A gap as long as the burst: without it SQLite's busy handler
            // (which sleeps between tries) can be starved for its whole
            // timeout on a loaded machine.
            std::thread::sleep(hold);
        }
    });
    let writer = BurstyWriter { bursts, handle };
    test_support::wait_until(
        "the second writer's first burst",
        Duration::from_secs(30),
        || (writer.count() > 0).then_some(()),
    );
    writer
}

#[test]
fn writes_succeed_against_a_concurrent_writer_holding_locks_in_bursts() {
    testkit::on_each_flavor(writes_succeed_against_a_concurrent_writer_holding_locks_in_bursts_on);
}

fn writes_succeed_against_a_concurrent_writer_holding_locks_in_bursts_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let mut hermes = create_board_as(&db, flavor).unwrap();
    let mut runs = Vec::new();
    for i in 0..60 {
        let id = format!("t{i}");
        add_task(&hermes, &id, "coder", "ready").unwrap();
        runs.push((id.clone(), claim(&mut hermes, &id, 1000 + i).unwrap()));
    }
    drop(hermes);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = bursty_writer(&db, stop.clone(), Duration::from_millis(20));
    let mut b = board(&db);
    for (id, run) in &runs {
        b.park(&park_req(id, *run, &format!("rec-{id}")))
            .unwrap()
            .applied()
            .expect("parked");
    }
    for (id, _) in &runs {
        b.release(&ReleaseRequest {
            task_id: id.clone(),
            reason: "due".into(),
            healed: false,
        })
        .unwrap()
        .applied()
        .expect("released");
    }
    // The second writer was still writing when ours were done.
    let during = writer.count();
    test_support::wait_until(
        "another burst after our writes",
        Duration::from_secs(30),
        || (writer.count() > during).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    writer.join();
    let conn = testkit::connect(&db).unwrap();
    let ready: i64 = conn
        .query_row("SELECT COUNT(*) FROM tasks WHERE status='ready'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(ready, 60);
    let ours: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM task_events WHERE kind LIKE 'watchdog_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ours, 120);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        mode,
        flavor.journal.to_ascii_lowercase(),
        "we never change the journal mode"
    );
}

#[test]
fn a_board_locked_past_the_busy_timeout_is_reported_busy_and_retried_later() {
    testkit::on_each_flavor(
        a_board_locked_past_the_busy_timeout_is_reported_busy_and_retried_later_on,
    );
}

fn a_board_locked_past_the_busy_timeout_is_reported_busy_and_retried_later_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let mut hermes = create_board_as(&db, flavor).unwrap();
    add_task(&hermes, "t", "coder", "ready").unwrap();
    let run = claim(&mut hermes, "t", 5).unwrap();
    let mut b = Board::open(
        &db,
        BoardOptions {
            busy_timeout: Duration::from_millis(50),
            busy_retries: 1,
            dry_run: false,
        },
        None,
    )
    .unwrap();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let locker = {
        let db = db.clone();
        std::thread::spawn(move || {
            let mut conn = testkit::connect(&db).unwrap();
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            locked_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            tx.commit().unwrap();
        })
    };
    locked_rx.recv().unwrap();
    let started = Instant::now();
    let err = b.park(&park_req("t", run, "r")).unwrap_err();
    assert!(matches!(err, BoardError::Busy { .. }), "{err}");
    assert!(err.is_transient());
    assert!(b.busy_retries() >= 1);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        status(&hermes, "t").unwrap(),
        "running",
        "nothing half-written"
    );
    release_tx.send(()).unwrap();
    locker.join().unwrap();
    b.park(&park_req("t", run, "r"))
        .unwrap()
        .applied()
        .expect("the retry lands");
    assert_eq!(status(&hermes, "t").unwrap(), "scheduled");
}

#[test]
fn a_replaced_board_file_is_noticed() {
    testkit::on_each_flavor(a_replaced_board_file_is_noticed_on);
}

fn a_replaced_board_file_is_noticed_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    drop(create_board_as(&db, flavor).unwrap());
    let b = board(&db);
    assert!(!b.file_replaced());
    let other = tmp.path().join("other.db");
    drop(create_board_as(&other, flavor).unwrap());
    std::fs::rename(&other, &db).unwrap();
    assert!(b.file_replaced());
}

#[test]
fn parking_after_hermes_recorded_rate_limited_ends_its_fixed_cooldown() {
    testkit::on_each_flavor(parking_after_hermes_recorded_rate_limited_ends_its_fixed_cooldown_on);
}

fn parking_after_hermes_recorded_rate_limited_ends_its_fixed_cooldown_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let mut hermes = create_board_as(&db, flavor).unwrap();
    add_task(&hermes, "t", "coder", "ready").unwrap();
    let run = claim(&mut hermes, "t", 5).unwrap();
    // The gateway saw rc 75 first: run rate_limited, task back to ready.
    let ended = jiff::Timestamp::now().as_second();
    hermes
        .execute(
            "UPDATE task_runs SET status='rate_limited', outcome='rate_limited', ended_at=?1 WHERE id=?2",
            rusqlite::params![ended, run],
        )
        .unwrap();
    hermes
        .execute(
            "UPDATE tasks SET status='ready', claim_lock=NULL, worker_pid=NULL, current_run_id=NULL, \
             last_failure_error='pid 1 exited rate-limited (quota wall)' WHERE id='t'",
            [],
        )
        .unwrap();
    let mut b = board(&db);
    b.park(&park_req("t", run, "r"))
        .unwrap()
        .applied()
        .expect("parked from ready");
    b.release(&ReleaseRequest {
        task_id: "t".into(),
        reason: "due".into(),
        healed: false,
    })
    .unwrap();
    // Hermes' respawn guard reads the newest ended run: it must be ours now.
    let (outcome, newest_end): (String, i64) = hermes
        .query_row(
            "SELECT outcome, ended_at FROM task_runs WHERE task_id='t' AND ended_at IS NOT NULL \
             ORDER BY ended_at DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(outcome, "scheduled");
    assert!(
        newest_end > ended,
        "strictly newer than the rate_limited run"
    );
    let err: Option<String> = hermes
        .query_row(
            "SELECT last_failure_error FROM tasks WHERE id='t'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(err, None, "no quota text left for the blocker_auth guard");
}

// ----- who ended the run, and who decided since (issue: worker output is untrusted)

fn facts(b: &Board, task: &str, run: i64) -> hermes_board::RunFacts {
    b.run_facts(task, run).unwrap()
}

#[test]
fn run_facts_tell_who_ended_a_run_and_who_decided_on_the_task_since() {
    testkit::on_each_flavor(run_facts_tell_who_ended_a_run_and_who_decided_on_the_task_since_on);
}

fn run_facts_tell_who_ended_a_run_and_who_decided_on_the_task_since_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let mut hermes = create_board_as(&db, flavor).unwrap();
    drop(hermes);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = bursty_writer(&db, stop.clone(), Duration::from_millis(10));
    hermes = testkit::connect(&db).unwrap();
    let b = board(&db);

    // Open: running this very run.
    add_task(&hermes, "open", "coder", "ready").unwrap();
    let open = claim(&mut hermes, "open", 1).unwrap();
    assert_eq!(facts(&b, "open", open).verdict, RunVerdict::Open);
    assert!(facts(&b, "open", open).run_failed_undecided());
    // A comment while the run is open decides nothing.
    testkit::comment(&hermes, "open", "looking").unwrap();
    assert!(facts(&b, "open", open).run_failed_undecided());

    // The worker completed: reported by the worker.
    add_task(&hermes, "done", "coder", "ready").unwrap();
    let done = claim(&mut hermes, "done", 2).unwrap();
    testkit::complete(&hermes, "done").unwrap();
    let f = facts(&b, "done", done);
    assert_eq!(
        f.verdict,
        RunVerdict::ReportedByWorker {
            outcome: "completed".into()
        }
    );
    assert!(!f.run_failed_undecided());

    // The worker blocked it (`hermes kanban block --kind needs_input`).
    add_task(&hermes, "blk", "coder", "ready").unwrap();
    let blk = claim(&mut hermes, "blk", 3).unwrap();
    testkit::block(&hermes, "blk", "need the API key").unwrap();
    assert_eq!(
        facts(&b, "blk", blk).verdict,
        RunVerdict::ReportedByWorker {
            outcome: "blocked".into()
        }
    );

    // A protocol violation, then the breaker: ended by the dispatcher.
    add_task(&hermes, "pv", "coder", "ready").unwrap();
    let pv = claim(&mut hermes, "pv", 4).unwrap();
    testkit::hermes_gave_up(&hermes, "pv").unwrap();
    let f = facts(&b, "pv", pv);
    assert_eq!(
        f.verdict,
        RunVerdict::EndedByDispatcher {
            outcome: "crashed".into(),
            protocol_violation: true
        }
    );
    assert!(f.gave_up_after);
    assert_eq!(f.decided_after, None);
    assert!(f.run_failed_undecided());
    // ...then a person comments: decided since.
    testkit::comment(&hermes, "pv", "I'll look at it").unwrap();
    let f = facts(&b, "pv", pv);
    assert_eq!(f.decided_after.as_ref().unwrap().kind, "commented");
    assert_eq!(f.decided_after.as_ref().unwrap().by(), "an operator");
    assert!(!f.run_failed_undecided());

    // Rate limited and timed out are the dispatcher's too.
    for (id, outcome) in [("rl", "rate_limited"), ("to", "timed_out")] {
        add_task(&hermes, id, "coder", "ready").unwrap();
        let run = claim(&mut hermes, id, 5).unwrap();
        testkit::dispatcher_ends_run(&hermes, id, outcome, outcome).unwrap();
        assert_eq!(
            facts(&b, id, run).verdict,
            RunVerdict::EndedByDispatcher {
                outcome: outcome.into(),
                protocol_violation: false
            }
        );
    }

    // Reclaimed: ended otherwise.
    add_task(&hermes, "rec", "coder", "ready").unwrap();
    let rec = claim(&mut hermes, "rec", 6).unwrap();
    testkit::dispatcher_ends_run(&hermes, "rec", "reclaimed", "reclaimed").unwrap();
    assert_eq!(
        facts(&b, "rec", rec).verdict,
        RunVerdict::EndedOther {
            outcome: Some("reclaimed".into())
        }
    );

    // Unknown: no such run, or a run of another task.
    assert_eq!(facts(&b, "open", 9_999).verdict, RunVerdict::Unknown);
    assert_eq!(facts(&b, "open", done).verdict, RunVerdict::Unknown);

    // Another board, verified read-only: same answer, file untouched, and a
    // missing file is never created.
    drop(b);
    stop.store(true, Ordering::Relaxed);
    writer.join();
    hermes
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    let ro = hermes_board::read_run_facts(&db, "blk", blk, Duration::from_millis(200)).unwrap();
    assert_eq!(
        ro.verdict,
        RunVerdict::ReportedByWorker {
            outcome: "blocked".into()
        }
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);
    let missing = tmp.path().join("missing.db");
    assert!(hermes_board::read_run_facts(&missing, "t", 1, Duration::from_millis(200)).is_err());
    assert!(!missing.exists());
}

#[test]
fn park_moves_a_run_only_on_the_record_of_the_pid_the_dispatcher_spawned() {
    testkit::on_each_flavor(
        park_moves_a_run_only_on_the_record_of_the_pid_the_dispatcher_spawned_on,
    );
}

fn park_moves_a_run_only_on_the_record_of_the_pid_the_dispatcher_spawned_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let mut hermes = create_board_as(&db, flavor).unwrap();
    let mut b = board(&db);
    let park = |b: &mut Board, task: &str, run: i64, writer: u32| {
        let mut req = park_req(task, run, &format!("rec-{task}-{writer}"));
        req.writer_pid = Some(writer);
        b.park(&req).unwrap()
    };
    // Judged before the dispatcher recorded its pid, written after it
    // did, for another process: stale, inside the write transaction.
    add_task(&hermes, "late", "coder", "ready").unwrap();
    let run = testkit::claim_before_spawn(&mut hermes, "late").unwrap();
    testkit::set_worker_pid(&hermes, "late", 500).unwrap();
    match park(&mut b, "late", run, 501) {
        WriteOutcome::Stale { why, .. } => assert!(
            why.contains("run 1 is pid 500, the record was written by pid 501"),
            "{why}"
        ),
        other => panic!("expected stale, got {other:?}"),
    }
    assert_eq!(status(&hermes, "late").unwrap(), "running");
    // The same for a run the dispatcher already ended as a failure.
    testkit::dispatcher_judges_exit(&hermes, "late", run, Some(1)).unwrap();
    assert!(matches!(
        park(&mut b, "late", run, 501),
        WriteOutcome::Stale { .. }
    ));
    // The spawned pid's own record parks it.
    assert!(park(&mut b, "late", run, 500).applied().is_some());
    // No `spawned` event yet: nothing to check, parked.
    add_task(&hermes, "early", "coder", "ready").unwrap();
    let run = testkit::claim_before_spawn(&mut hermes, "early").unwrap();
    assert!(park(&mut b, "early", run, 77).applied().is_some());
}

#[test]
fn park_never_moves_a_task_the_worker_reported_or_someone_decided_on() {
    testkit::on_each_flavor(park_never_moves_a_task_the_worker_reported_or_someone_decided_on_on);
}

fn park_never_moves_a_task_the_worker_reported_or_someone_decided_on_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    drop(create_board_as(&db, flavor).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = bursty_writer(&db, stop.clone(), Duration::from_millis(10));
    let mut hermes = testkit::connect(&db).unwrap();
    let mut b = board(&db);
    let stale = |b: &mut Board, task: &str, run: i64| {
        let out = b
            .park(&park_req(task, run, &format!("rec-{task}")))
            .unwrap();
        match out {
            WriteOutcome::Stale { why, .. } => why,
            other => panic!("{task}: expected stale, got {other:?}"),
        }
    };

    // The worker blocked its task itself: left blocked for a human.
    add_task(&hermes, "blk", "coder", "ready").unwrap();
    let run = claim(&mut hermes, "blk", 1).unwrap();
    testkit::block(&hermes, "blk", "needs input").unwrap();
    let why = stale(&mut b, "blk", run);
    assert!(
        why.contains("reported by the worker itself: blocked"),
        "{why}"
    );
    assert_eq!(status(&hermes, "blk").unwrap(), "blocked");

    // The dispatcher judged a crash, then a person commented: left alone.
    add_task(&hermes, "cmt", "coder", "ready").unwrap();
    let run = claim(&mut hermes, "cmt", 2).unwrap();
    testkit::protocol_violation(&hermes, "cmt").unwrap();
    testkit::comment(&hermes, "cmt", "on it").unwrap();
    let why = stale(&mut b, "cmt", run);
    assert!(why.contains("an operator decided on the task"), "{why}");
    assert_eq!(status(&hermes, "cmt").unwrap(), "ready");

    // The breaker blocked it, then a person unblocked it: left alone.
    add_task(&hermes, "unb", "coder", "ready").unwrap();
    let run = claim(&mut hermes, "unb", 3).unwrap();
    testkit::hermes_gave_up(&hermes, "unb").unwrap();
    testkit::unblock(&hermes, "unb").unwrap();
    let why = stale(&mut b, "unb", run);
    assert!(why.contains("unblocked"), "{why}");
    assert_eq!(status(&hermes, "unb").unwrap(), "ready");

    // Blocked without a breaker `gave_up` after the run (someone set the
    // status by hand): not the dispatcher's block, left alone.
    add_task(&hermes, "hand", "coder", "ready").unwrap();
    let run = claim(&mut hermes, "hand", 4).unwrap();
    testkit::protocol_violation(&hermes, "hand").unwrap();
    hermes
        .execute("UPDATE tasks SET status='blocked' WHERE id='hand'", [])
        .unwrap();
    let why = stale(&mut b, "hand", run);
    assert!(why.contains("not by the dispatcher's breaker"), "{why}");

    // A run ended some other way (reclaimed): left alone.
    add_task(&hermes, "rcl", "coder", "ready").unwrap();
    let run = claim(&mut hermes, "rcl", 5).unwrap();
    testkit::dispatcher_ends_run(&hermes, "rcl", "reclaimed", "reclaimed").unwrap();
    let why = stale(&mut b, "rcl", run);
    assert!(why.contains("ended otherwise: reclaimed"), "{why}");

    // Still moved: a crash the breaker blocked, and a protocol violation
    // back in ready, with nobody's decision since.
    for id in ["brk", "pv"] {
        add_task(&hermes, id, "coder", "ready").unwrap();
        let run = claim(&mut hermes, id, 6).unwrap();
        if id == "brk" {
            testkit::hermes_gave_up(&hermes, id).unwrap();
        } else {
            testkit::protocol_violation(&hermes, id).unwrap();
        }
        b.park(&park_req(id, run, &format!("rec-{id}")))
            .unwrap()
            .applied()
            .unwrap_or_else(|| panic!("{id} parked"));
        assert_eq!(status(&hermes, id).unwrap(), "scheduled");
    }
    stop.store(true, Ordering::Relaxed);
    writer.join();
    let ours: i64 = hermes
        .query_row(
            "SELECT COUNT(*) FROM task_events WHERE kind LIKE 'watchdog_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ours, 2, "only the two dispatcher-failed tasks were moved");
}

/// `progress_since` goes on from where it stopped: events that are not
/// dispatcher progress (a person's comments, the watchdog's parks) move the
/// cursor without counting as progress, so each event is looked at once
/// however long the dispatcher stays quiet; a board replaced by a fresh
/// one (ids start over) moves the cursor back to its newest event.
#[test]
fn progress_is_read_once_from_a_cursor_that_skips_other_events() {
    testkit::on_each_flavor(progress_cursor_on);
}

fn progress_cursor_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let mut hermes = create_board_as(&db, flavor).unwrap();
    add_task(&hermes, "a", "coder", "ready").unwrap();
    add_task(&hermes, "b", "coder", "ready").unwrap();
    claim(&mut hermes, "a", 4242).unwrap();
    let b = board(&db);
    let first = b.progress_since(0).unwrap();
    assert!(first.new_events >= 1, "{flavor:?} {first:?}");
    assert_eq!(first.scanned_through, b.max_event_id().unwrap());
    for i in 0..5 {
        comment(&hermes, "a", &format!("note {i}")).unwrap();
    }
    let quiet = b.progress_since(first.scanned_through).unwrap();
    assert_eq!(quiet.new_events, 0, "{flavor:?} {quiet:?}");
    assert_eq!(quiet.scanned_through, first.scanned_through + 5);
    claim(&mut hermes, "b", 4243).unwrap();
    let moved = b.progress_since(quiet.scanned_through).unwrap();
    assert!(moved.new_events >= 1, "{flavor:?} {moved:?}");
    assert!(moved.last_event_id > quiet.scanned_through);
    let again = b.progress_since(moved.scanned_through).unwrap();
    assert_eq!(again.new_events, 0, "{flavor:?} {again:?}");
    // A cursor past the board's newest event: the board was replaced.
    let replaced = b.progress_since(moved.scanned_through + 1000).unwrap();
    assert_eq!(replaced.new_events, 0);
    assert_eq!(replaced.scanned_through, moved.scanned_through);
}
