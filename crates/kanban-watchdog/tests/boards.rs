//! Issue 16: one watchdog for every board of a Hermes home. With no board
//! named in the config it watches `<root>/kanban.db` and each
//! `<root>/kanban/boards/<slug>/kanban.db`, picks up a board created while
//! it runs, keeps each board's parks, stall and metrics apart (labelled by
//! board), and drops an archived board. The real binary, real SQLite files.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use hermes_board::testkit;

const T: Duration = Duration::from_secs(30);

/// Creates board `slug` the way `hermes kanban boards create` lays it out.
fn create_board(h: &Harness, slug: &str) -> PathBuf {
    let dir = h.home.join("kanban/boards").join(slug);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("board.json"),
        format!("{{\"slug\": \"{slug}\", \"name\": \"{slug}\"}}"),
    )
    .unwrap();
    let db = dir.join("kanban.db");
    drop(testkit::create_board(&db).unwrap());
    db
}

fn slugs(h: &Harness) -> Vec<String> {
    h.status()["boards"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b["slug"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A rate-limit record for a run on the board at `db`, as a worker pinned
/// there by `HERMES_KANBAN_DB` would leave it.
fn record_on(db: &Path, slug: &str, task: &str, run: i64) -> exit_record::ExitRecord {
    let mut rec = record(
        Some((task, run)),
        "coder",
        Some(rate_limit(Some(now() + 3600))),
    );
    rec.task.board = Some(slug.into());
    rec.task.db = Some(db.display().to_string());
    rec
}

#[test]
fn a_board_created_while_running_is_watched_and_its_rate_limited_task_parked_there() {
    let mut h = Harness::new();
    h.write_config("");
    h.start();
    assert_eq!(slugs(&h), ["default"]);
    let second = create_board(&h, "second");
    wait_until("the new board watched", T, || {
        (slugs(&h) == ["default", "second"]).then_some(())
    });
    let conn = testkit::connect(&second).unwrap();
    testkit::add_task(&conn, "t2", "coder", "ready").unwrap();
    let mut c = testkit::connect(&second).unwrap();
    let run = testkit::claim(&mut c, "t2", WORKER_PID).unwrap();
    // The same task id on the default board stays untouched.
    let run_default = h.running_task("t2", "coder");
    assert_ne!(run_default, 0);
    h.write_record(&record_on(&second, "second", "t2", run));
    wait_until("t2 parked on board second", T, || {
        (testkit::status(&conn, "t2").unwrap() == "scheduled").then_some(())
    });
    let events = testkit::events(&conn, "t2").unwrap();
    assert!(
        events.iter().any(|(k, _)| k == "watchdog_parked"),
        "{events:?}"
    );
    assert_eq!(h.status_of("t2"), "running", "the default board's t2");
    assert_eq!(h.count_events("t2", "watchdog_parked"), 0);
    let st = wait_until("/status shows the park on board second", T, || {
        let s = h.status();
        let parked = s["parked"].as_array().cloned().unwrap_or_default();
        parked
            .iter()
            .any(|p| p["task"] == "t2" && p["board"] == "second")
            .then_some(s)
    });
    let second_status = st["boards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["slug"] == "second")
        .cloned()
        .unwrap();
    assert_eq!(second_status["parked"], 1, "{second_status}");
    assert_eq!(
        h.metric("kanban_watchdog_parked_tasks", &[("board", "second")]),
        1.0
    );
    assert_eq!(
        h.metric("kanban_watchdog_parked_tasks", &[("board", "default")]),
        0.0
    );
    // The second board has its own audit log.
    let audit = std::fs::read_to_string(h.state.join("audit.second.jsonl")).unwrap();
    assert!(audit.contains("t2"), "{audit}");
    // A record naming its board by slug only (no file) goes there too.
    testkit::add_task(&conn, "t3", "coder", "ready").unwrap();
    let run3 = testkit::claim(&mut c, "t3", WORKER_PID).unwrap();
    let mut rec = record_on(&second, "second", "t3", run3);
    rec.task.db = None;
    h.write_record(&rec);
    wait_until("t3 parked on board second", T, || {
        (testkit::status(&conn, "t3").unwrap() == "scheduled").then_some(())
    });
    assert_eq!(h.status_of("t2"), "running", "the default board's t2");
}

#[test]
fn records_dealt_over_boards_are_written_a_transaction_per_board_not_per_record() {
    // Records alternating between boards, all waiting at start-up: each
    // board's parks go into one transaction (issue 15: with a transaction
    // per record, an 8-board backlog drained 13x slower than one board's).
    let mut h = Harness::new();
    h.write_config("");
    h.rust_log = "info,kanban_watchdog::daemon::intake=debug";
    let boards = [
        ("default".to_string(), h.db.clone()),
        ("b1".to_string(), create_board(&h, "b1")),
        ("b2".to_string(), create_board(&h, "b2")),
    ];
    let mut tasks = Vec::new();
    for i in 0..4 {
        for (slug, db) in &boards {
            let task = format!("t{i}");
            let mut c = testkit::connect(db).unwrap();
            testkit::add_task(&c, &task, "coder", "ready").unwrap();
            let run = testkit::claim(&mut c, &task, WORKER_PID).unwrap();
            h.write_record(&record_on(db, slug, &task, run));
            tasks.push((db.clone(), task));
        }
    }
    h.start();
    wait_until("every task parked on its board", T, || {
        tasks
            .iter()
            .all(|(db, t)| {
                testkit::status(&testkit::connect(db).unwrap(), t).unwrap() == "scheduled"
            })
            .then_some(())
    });
    let log = h.stderr();
    let writes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("park(s) in one transaction"))
        .collect();
    assert_eq!(writes.len(), 3, "one per board: {writes:#?}");
    assert!(
        writes.iter().all(|l| l.contains("writing 4 park(s)")),
        "{writes:#?}"
    );
}

#[test]
fn a_stall_on_one_board_is_seen_labelled_and_resolved_while_the_other_is_idle() {
    let mut h = Harness::new();
    let hook = Webhook::start();
    let second = create_board(&h, "second");
    h.write_config(&format!(
        "dispatcher: {{interval: 200ms, stall_after: 1s, check_every: 100ms}}\n\
         alerts: {{webhook: {{url: \"{}\"}}}}\n",
        hook.url
    ));
    h.start();
    let conn = testkit::connect(&second).unwrap();
    testkit::add_task(&conn, "s1", "coder", "ready").unwrap();
    wait_until("the second board's stall alert", T, || {
        (!hook
            .alerts("dispatcher_stalled:second", "firing")
            .is_empty())
        .then_some(())
    });
    assert_eq!(
        h.metric("kanban_watchdog_dispatcher_stalled", &[("board", "second")]),
        1.0
    );
    assert_eq!(
        h.metric(
            "kanban_watchdog_dispatcher_stalled",
            &[("board", "default")]
        ),
        0.0
    );
    assert_eq!(
        h.metric("kanban_watchdog_ready_tasks", &[("board", "second")]),
        1.0
    );
    let st = h.status();
    assert_eq!(st["dispatcher"]["stalled"], true, "{st}");
    let reason = st["dispatcher"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("on board second"), "{reason}");
    assert!(
        hook.alerts("dispatcher_stalled", "firing").is_empty(),
        "the default board raised nothing"
    );
    // The dispatcher claims it: progress on that board ends the stall.
    let mut c = testkit::connect(&second).unwrap();
    testkit::claim(&mut c, "s1", WORKER_PID).unwrap();
    wait_until("the second board's stall resolved", T, || {
        (!hook
            .alerts("dispatcher_stalled:second", "resolved")
            .is_empty())
        .then_some(())
    });
    assert_eq!(
        h.metric("kanban_watchdog_dispatcher_stalled", &[("board", "second")]),
        0.0
    );
}

#[test]
fn an_archived_board_is_dropped_with_its_series_and_a_named_board_limits_the_watch() {
    let mut h = Harness::new();
    let second = create_board(&h, "second");
    let third = create_board(&h, "third");
    h.write_config("");
    h.start();
    wait_until("three boards watched", T, || {
        (slugs(&h) == ["default", "second", "third"]).then_some(())
    });
    wait_until("third's series published", T, || {
        h.get("/metrics")
            .contains("kanban_watchdog_parked_tasks{board=\"third\"}")
            .then_some(())
    });
    std::fs::write(
        third.with_file_name("board.json"),
        "{\"slug\": \"third\", \"archived\": true}",
    )
    .unwrap();
    wait_until("the archived board dropped", T, || {
        (slugs(&h) == ["default", "second"]).then_some(())
    });
    let text = h.get("/metrics");
    assert!(!text.contains("board=\"third\""), "{text}");
    assert!(h.stderr().contains("no longer watched"));
    h.stop();

    // `board: second` in the config: that board only.
    h.write_config("board: second\n");
    h.start();
    assert_eq!(slugs(&h), ["second"]);
    assert_eq!(h.status()["board"], second.display().to_string());
    // A record for the default board is not ours: verified read-only and
    // never written.
    let run = h.running_task("d1", "coder");
    let mut rec = record(Some(("d1", run)), "coder", Some(rate_limit(None)));
    rec.task.db = Some(h.db.display().to_string());
    h.write_record(&rec);
    wait_until("the record handled", T, || {
        (h.pending_records() == 0).then_some(())
    });
    assert_eq!(h.status_of("d1"), "running");
    assert_eq!(h.count_events("d1", "watchdog_parked"), 0);
}

#[test]
fn an_invalid_board_slug_in_the_config_is_refused_with_the_field() {
    let h = Harness::new();
    h.write_config("board: ../../etc\n");
    let out = std::process::Command::new(WATCHDOG)
        .args(["check-config"])
        .arg(&h.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("board") && err.contains("invalid board slug"),
        "{err}"
    );
}
