//! `Board::park_batch`: several guarded parks in one transaction, on each
//! board flavour (0.19/0.22 schema, WAL/DELETE journal).

use std::path::Path;
use std::time::Duration;

use hermes_board::testkit::{self, Flavor, add_task, claim, complete, create_board_as, status};
use hermes_board::{AuditLog, Board, BoardError, BoardOptions, Kind, ParkRequest, WriteOutcome};

fn board(path: &Path) -> Board {
    let audit = AuditLog::open(&path.with_extension("audit.jsonl")).unwrap();
    let opts = BoardOptions {
        busy_timeout: Duration::from_millis(50),
        busy_retries: 0,
        ..BoardOptions::default()
    };
    Board::open(path, opts, Some(audit)).unwrap()
}

fn park_req(task: &str, run: i64) -> ParkRequest {
    ParkRequest {
        writer_pid: None,
        task_id: task.into(),
        kind: Kind::Parked,
        run_id: Some(run),
        record_id: Some(format!("rec-{task}")),
        due_at: Some(1_780_861_920),
        provider: Some("openai-codex".into()),
        fallback: None,
        fallback_model: None,
        reason: "rate_limit on openai-codex".into(),
    }
}

#[test]
fn a_batch_applies_each_guarded_park_and_a_stale_one_leaves_the_others_applied() {
    testkit::on_each_flavor(batch_on);
}

fn batch_on(flavor: Flavor) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let mut hermes = create_board_as(&db, flavor).unwrap();
    let mut reqs = Vec::new();
    for id in ["a", "b", "c"] {
        add_task(&hermes, id, "coder", "ready").unwrap();
        let run = claim(&mut hermes, id, 4242).unwrap();
        reqs.push(park_req(id, run));
    }
    // The worker of b reported before the record was handled: its park is
    // refused inside the batch, a and c are parked all the same.
    complete(&hermes, "b").unwrap();
    let mut b = board(&db);
    let outcomes = b.park_batch(&reqs).unwrap();
    assert!(
        matches!(outcomes[0], WriteOutcome::Applied(_)),
        "{flavor:?} {outcomes:?}"
    );
    assert!(
        matches!(outcomes[1], WriteOutcome::Stale { .. }),
        "{flavor:?} {outcomes:?}"
    );
    assert!(
        matches!(outcomes[2], WriteOutcome::Applied(_)),
        "{flavor:?} {outcomes:?}"
    );
    assert_eq!(status(&hermes, "a").unwrap(), "scheduled");
    assert_eq!(status(&hermes, "b").unwrap(), "done");
    assert_eq!(status(&hermes, "c").unwrap(), "scheduled");
    let b_events: i64 = hermes
        .query_row(
            "SELECT COUNT(*) FROM task_events WHERE task_id='b' AND kind LIKE 'watchdog_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(b_events, 0, "{flavor:?}: nothing of the stale park remains");
    // The same batch again: every record already applied, nothing written.
    let again = b.park_batch(&reqs).unwrap();
    assert!(
        again.iter().all(|o| !matches!(o, WriteOutcome::Applied(_))),
        "{flavor:?} {again:?}"
    );
    let audit = std::fs::read_to_string(db.with_extension("audit.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), 2, "{flavor:?}: {audit}");
}

#[test]
fn a_locked_board_fails_the_whole_batch_and_applies_none_of_it() {
    testkit::on_each_flavor(|flavor| {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("kanban.db");
        let mut hermes = create_board_as(&db, flavor).unwrap();
        let mut reqs = Vec::new();
        for id in ["a", "b"] {
            add_task(&hermes, id, "coder", "ready").unwrap();
            let run = claim(&mut hermes, id, 4242).unwrap();
            reqs.push(park_req(id, run));
        }
        let mut b = board(&db);
        let locker = testkit::connect(&db).unwrap();
        locker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let err = b.park_batch(&reqs).unwrap_err();
        assert!(
            matches!(err, BoardError::Busy { .. }) && err.is_transient(),
            "{flavor:?} {err}"
        );
        locker.execute_batch("ROLLBACK").unwrap();
        assert_eq!(status(&hermes, "a").unwrap(), "running");
        assert_eq!(status(&hermes, "b").unwrap(), "running");
        // Retried as a whole once the lock is gone.
        let outcomes = b.park_batch(&reqs).unwrap();
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, WriteOutcome::Applied(_))),
            "{flavor:?} {outcomes:?}"
        );
    });
}
