//! Issue "Worker output is untrusted": a provider is judged only on a run
//! that failed, blame goes only where the failure points inside the
//! profile's chain, and nobody else's decision on a task is undone. Real
//! binaries, a real WAL board with a concurrent Python writer.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use exit_record::Failure;
use failure_signatures::FailureClass;
use hermes_board::testkit;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// Year 2100: a reset no single record may hold a provider until.
const RESETS_2100: i64 = 4_102_444_800;

fn provider_state(h: &Harness, name: &str) -> Value {
    h.status()["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn unhealthy(h: &Harness, name: &str) -> bool {
    provider_state(h, name)["state"] == "unhealthy"
}

fn watchdog_events(h: &Harness, task: &str) -> Vec<String> {
    h.events(task)
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("watchdog_"))
        .collect()
}

/// Waits until every record written so far was handled, then one more
/// check, so whatever the watchdog would do has been done.
fn settle(h: &Harness, handled: usize) {
    wait_until("records handled", T, || {
        (h.files_in("done").len() >= handled && h.pending_records() == 0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
}

fn codex_2100() -> Failure {
    let mut f = rate_limit(Some(RESETS_2100));
    f.provider = Some("openai-codex".into());
    f
}

/// Python that ends the worker's run as Hermes' `complete_task` does.
const COMPLETE_PY: &str = r#"python3 - <<'PY'
import os, sqlite3, time
c = sqlite3.connect(os.environ["HERMES_KANBAN_DB"], timeout=60, isolation_level=None)
t = int(time.time()); task = os.environ["HERMES_KANBAN_TASK"]; run = int(os.environ["HERMES_KANBAN_RUN_ID"])
c.execute("BEGIN IMMEDIATE")
c.execute("UPDATE tasks SET status='done', completed_at=?, claim_lock=NULL, worker_pid=NULL, current_run_id=NULL WHERE id=?", (t, task))
c.execute("UPDATE task_runs SET status='done', outcome='completed', ended_at=? WHERE id=? AND ended_at IS NULL", (t, run))
c.execute("INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?, ?, 'completed', '{}', ?)", (task, run, t))
c.execute("COMMIT")
PY
"#;

#[test]
fn a_worker_that_completed_then_printed_a_429_marks_nothing_and_holds_nothing() {
    let mut h = Harness::new();
    h.start();
    let _writer = PythonWriter::start(&h.db, 20);
    let run = h.claimed_task("done1", "coder");
    // The real shim around a worker that completes its task, then prints
    // Codex's 429 line with a reset in 2100 and exits 0.
    let out = run_as_dispatched(
        &h.conn(),
        "done1",
        Command::new(shim_bin())
        .args(["--", "sh", "-c"])
        .arg(format!(
            "{COMPLETE_PY}echo 'HTTP 429: The usage limit has been reached. plan_type: team, resets_at: {RESETS_2100}'; exit 0"
        ))
        .env("WORKER_SHIM_RECORD_DIR", &h.records)
        .env("HERMES_KANBAN_TASK", "done1")
        .env("HERMES_KANBAN_RUN_ID", run.to_string())
        .env("HERMES_KANBAN_DB", &h.db)
        .env("HERMES_KANBAN_BOARD", "default")
        .env("HERMES_PROFILE", "coder")
        .stdin(Stdio::null()),
    );
    assert_eq!(out.status.code(), Some(0), "the worker's own exit code");
    assert_eq!(h.status_of("done1"), "done");
    // The same, from an older shim that did not look at the board: the
    // watchdog asks the board itself.
    let run2 = h.running_task("done2", "coder");
    testkit::complete(&h.conn(), "done2").unwrap();
    h.write_record(&record(Some(("done2", run2)), "coder", Some(codex_2100())));
    settle(&h, 2);
    // The next ready task of that profile is not held for 24 h.
    testkit::add_task(&h.conn(), "next", "coder", "ready").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!unhealthy(&h, "openai-codex"), "{:?}", h.status());
    assert_eq!(h.status_of("next"), "ready");
    for t in ["done1", "done2", "next"] {
        assert!(watchdog_events(&h, t).is_empty(), "{t}");
    }
    assert!(
        h.stderr()
            .contains("reported by the worker itself (completed)")
            || h.stderr().contains("ended run"),
        "the log says why: {}",
        h.stderr()
    );
}

#[test]
fn a_hermes_call_inside_a_running_task_that_hit_a_429_neither_parks_it_nor_holds_its_provider() {
    let mut h = Harness::new();
    h.start();
    let _writer = PythonWriter::start(&h.db, 20);
    let run = h.claimed_task("busy", "coder");
    // The worker runs `hermes` itself (an older shim, which did not step
    // aside inside a supervised run: the run mark removed), that call
    // prints Codex's 429 with a reset in 2100 and exits 0, and its shim
    // writes a record naming the worker's open run. The worker waits until
    // the watchdog has handled it, then completes its task.
    let script = format!(
        "env -u WORKER_SHIM_IN_RUN \"$SHIM\" -- sh -c \
         'echo \"HTTP 429: The usage limit has been reached. plan_type: team, resets_at: {RESETS_2100}\"' \
         >/dev/null 2>&1; \
         i=0; while ls \"$WORKER_SHIM_RECORD_DIR\"/*.json >/dev/null 2>&1; do \
           i=$((i+1)); [ $i -gt 600 ] && exit 9; sleep 0.05; done; \
         {COMPLETE_PY}echo finished"
    );
    let out = run_as_dispatched(
        &h.conn(),
        "busy",
        Command::new(shim_bin())
            .args(["--", "sh", "-c", &script])
            .env("SHIM", shim_bin())
            .env("WORKER_SHIM_RECORD_DIR", &h.records)
            .env("HERMES_KANBAN_TASK", "busy")
            .env("HERMES_KANBAN_RUN_ID", run.to_string())
            .env("HERMES_KANBAN_DB", &h.db)
            .env("HERMES_KANBAN_BOARD", "default")
            .env("HERMES_PROFILE", "coder"),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    settle(&h, 2);
    assert_eq!(h.status_of("busy"), "done");
    assert!(
        watchdog_events(&h, "busy").is_empty(),
        "{:?}",
        h.events("busy")
    );
    assert!(!unhealthy(&h, "openai-codex"), "{:?}", h.status());
    assert_eq!(
        h.metric("kanban_watchdog_records_not_from_the_run_total", &[]),
        1.0
    );
    assert!(
        h.stderr().contains("not the run's own record"),
        "the log says why: {}",
        h.stderr()
    );
}

#[test]
fn a_failure_naming_another_provider_never_blames_the_profiles_primary() {
    let mut h = Harness::new();
    h.start();
    let _writer = PythonWriter::start(&h.db, 20);
    // A coder (openai-codex, no xAI in its chain) whose run the dispatcher
    // judged a protocol violation, with the xAI OAuth text in its output.
    let run = h.running_task("c1", "coder");
    testkit::protocol_violation(&h.conn(), "c1").unwrap();
    h.write_record(&record(
        Some(("c1", run)),
        "coder",
        Some(auth_expired("xai-oauth")),
    ));
    // A grok worker (xai-oauth) printing an Anthropic label and a generic
    // 429 while its run is still open.
    let run2 = h.running_task("g1", "grok");
    let mut rec = record(
        Some(("g1", run2)),
        "grok",
        Some(Failure {
            class: FailureClass::RateLimit,
            signature: "generic-http-429".into(),
            provider: Some("anthropic".into()),
            transient: true,
            matched_line: "HTTP 429 Too Many Requests".into(),
            resets_at: None,
            retry_after_s: None,
        }),
    );
    rec.stdout.head = "> quoting a log:\n🔌 Provider: anthropic  Model: claude-sonnet\nHTTP 429 Too Many Requests\n".into();
    h.write_record(&rec);
    settle(&h, 2);
    for p in ["openai-codex", "xai-oauth", "anthropic"] {
        assert!(!unhealthy(&h, p), "{p} blamed: {:?}", h.status());
    }
    assert!(watchdog_events(&h, "c1").is_empty());
    assert!(watchdog_events(&h, "g1").is_empty());
    assert_eq!(h.status_of("c1"), "ready", "left to the dispatcher");
    assert_eq!(h.status_of("g1"), "running");
    assert!(h.stderr().contains("nobody blamed"), "{}", h.stderr());

    // Control: the failure names a provider of the chain: blamed, until re-auth.
    let run3 = h.running_task("g2", "grok");
    h.write_record(&record(
        Some(("g2", run3)),
        "grok",
        Some(auth_expired("xai-oauth")),
    ));
    wait_until("xai-oauth blamed", T, || {
        unhealthy(&h, "xai-oauth").then_some(())
    });
    assert_eq!(provider_state(&h, "xai-oauth")["until"], Value::Null);
    wait_until("g2 parked", T, || {
        (h.status_of("g2") == "scheduled").then_some(())
    });
}

#[test]
fn a_task_the_worker_blocked_is_left_blocked_for_its_human() {
    let mut h = Harness::new();
    h.start();
    let _writer = PythonWriter::start(&h.db, 20);
    let run = h.running_task("b1", "coder");
    // `hermes kanban block --kind needs_input ...`, then the output has a 429.
    testkit::block(&h.conn(), "b1", "which API key should I use?").unwrap();
    h.write_record(&record(Some(("b1", run)), "coder", Some(codex_2100())));
    settle(&h, 1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(h.status_of("b1"), "blocked");
    assert!(watchdog_events(&h, "b1").is_empty());
    assert!(!unhealthy(&h, "openai-codex"));
    let kinds: Vec<String> = h.events("b1").into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["created", "claimed", "spawned", "blocked"]);
}

#[test]
fn a_late_record_handled_after_a_restart_obeys_the_same_rule() {
    let mut h = Harness::new();
    h.write_config("");
    // While the watchdog is down: two runs the dispatcher judged protocol
    // violations; on one of them a person decided since (a comment); the
    // other nobody touched. (Different profiles, so the provider the second
    // one marks does not hold the first.)
    let conn = h.conn();
    let run_touched = h.running_task("touched", "grok");
    testkit::protocol_violation(&conn, "touched").unwrap();
    testkit::comment(&conn, "touched", "I am on it").unwrap();
    let run_free = h.running_task("free", "coder");
    testkit::hermes_gave_up(&conn, "free").unwrap();
    let due = now() + 3600;
    h.write_record(&record(
        Some(("touched", run_touched)),
        "grok",
        Some(rate_limit(Some(due))),
    ));
    h.write_record(&record(
        Some(("free", run_free)),
        "coder",
        Some(rate_limit(Some(due))),
    ));
    let _writer = PythonWriter::start(&h.db, 20);
    h.start();
    settle(&h, 2);
    assert_eq!(h.status_of("touched"), "ready", "a person's task is theirs");
    assert!(watchdog_events(&h, "touched").is_empty());
    assert_eq!(
        h.status_of("free"),
        "scheduled",
        "the breaker's block is parked"
    );
    assert_eq!(watchdog_events(&h, "free"), ["watchdog_parked"]);
    assert!(!unhealthy(&h, "xai-oauth"), "the touched run judges nobody");
    assert!(
        h.stderr()
            .contains("an operator decided on the task after run"),
        "{}",
        h.stderr()
    );
}

#[test]
fn provider_reset_releases_held_and_parked_tasks_at_the_next_check() {
    let mut h = Harness::new();
    h.start();
    let _writer = PythonWriter::start(&h.db, 20);
    // A failing open run: the reset is far away (and the retry-after
    // absurd); the provider is held at most max_cooldown.
    let run = h.running_task("p1", "coder");
    let mut f = rate_limit(None);
    f.retry_after_s = Some(1e300);
    h.write_record(&record(Some(("p1", run)), "coder", Some(f)));
    wait_until("p1 parked", T, || {
        (h.status_of("p1") == "scheduled").then_some(())
    });
    // /status is refreshed at most every 100 ms between checks.
    let until = wait_until("openai-codex unhealthy in /status", T, || {
        provider_state(&h, "openai-codex")["until"].as_i64()
    });
    assert!(until <= now() + 86_400, "capped at max_cooldown: {until}");
    testkit::add_task(&h.conn(), "w1", "coder", "ready").unwrap();
    wait_until("w1 held", T, || {
        (h.status_of("w1") == "scheduled").then_some(())
    });
    let out = Command::new(WATCHDOG)
        .args(["provider", "reset", "openai-codex", "--config"])
        .arg(&h.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // check_every is 100 ms here: "the next check" is well within 5 s, the
    // old due times are a day away.
    wait_until("both released", Duration::from_secs(5), || {
        (h.status_of("p1") == "ready" && h.status_of("w1") == "ready").then_some(())
    });
    assert!(!unhealthy(&h, "openai-codex"));
    assert!(
        h.stderr()
            .contains("provider openai-codex healed; not waiting for the old due time")
    );
}

#[test]
fn a_record_for_another_board_is_verified_there_read_only() {
    let mut h = Harness::new();
    h.start();
    // Another board, which this watchdog does not write to.
    let other = h.tmp.path().join("other/kanban.db");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    let mut oc = testkit::create_board(&other).unwrap();
    testkit::add_task(&oc, "x1", "coder", "ready").unwrap();
    let completed = testkit::claim(&mut oc, "x1", WORKER_PID).unwrap();
    testkit::complete(&oc, "x1").unwrap();
    testkit::add_task(&oc, "x2", "coder", "ready").unwrap();
    let open = testkit::claim(&mut oc, "x2", WORKER_PID).unwrap();
    oc.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let before = std::fs::read(&other).unwrap();
    let for_other = |task: &str, run: i64, db: &std::path::Path| {
        let mut r = record(Some((task, run)), "coder", Some(codex_2100()));
        r.task.board = Some("other".into());
        r.task.db = Some(db.display().to_string());
        r
    };
    // The worker completed there: nothing.
    h.write_record(&for_other("x1", completed, &other));
    // A board that does not exist cannot say: nothing.
    h.write_record(&for_other("x2", open, &h.tmp.path().join("gone.db")));
    settle(&h, 2);
    assert!(!unhealthy(&h, "openai-codex"), "{:?}", h.status());
    assert!(
        h.stderr().contains("the board cannot say"),
        "{}",
        h.stderr()
    );
    // Still open there: the provider is judged, the other board untouched.
    h.write_record(&for_other("x2", open, &other));
    wait_until("openai-codex unhealthy", T, || {
        unhealthy(&h, "openai-codex").then_some(())
    });
    settle(&h, 3);
    assert_eq!(std::fs::read(&other).unwrap(), before, "never written");
    assert_eq!(testkit::status(&oc, "x2").unwrap(), "running");
    assert!(!h.tmp.path().join("gone.db").exists());
}

#[test]
fn a_worker_outside_hermes_judges_a_provider_only_when_it_failed() {
    let mut h = Harness::new();
    h.start();
    // Exit 0 with a 429 text: could be anything (a test log, a quote).
    h.write_record(&record(None, "coder", Some(codex_2100())));
    settle(&h, 1);
    assert!(!unhealthy(&h, "openai-codex"));
    // The process failed: the provider is judged.
    let mut r = record(None, "coder", Some(rate_limit(Some(now() + 600))));
    r.exit.code = Some(1);
    h.write_record(&r);
    wait_until("openai-codex unhealthy", T, || {
        unhealthy(&h, "openai-codex").then_some(())
    });
}

#[test]
fn replay_shows_the_daemons_decision_and_says_when_it_assumed_an_open_run() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hermes");
    std::fs::create_dir_all(home.join("profiles/coder")).unwrap();
    std::fs::write(
        home.join("profiles/coder/config.yaml"),
        "model: {provider: openai-codex}\n",
    )
    .unwrap();
    let db = tmp.path().join("kanban.db");
    let mut conn = testkit::create_board(&db).unwrap();
    testkit::add_task(&conn, "t1", "coder", "ready").unwrap();
    let run = testkit::claim(&mut conn, "t1", WORKER_PID).unwrap();
    testkit::complete(&conn, "t1").unwrap();
    let recs = tmp.path().join("records");
    let r = record(Some(("t1", run)), "coder", Some(codex_2100()));
    exit_record::write_atomic(&recs, &r, exit_record::WriteOptions { fsync: false }).unwrap();
    let replay = |board: Option<&std::path::Path>| {
        let mut cmd = Command::new(WATCHDOG);
        cmd.args(["replay", "--hermes-home"])
            .arg(&home)
            .arg("--records")
            .arg(&recs);
        if let Some(b) = board {
            cmd.arg("--board").arg(b);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let with_board = replay(Some(&db));
    assert!(
        with_board.contains("was reported by the worker itself (completed)"),
        "{with_board}"
    );
    assert!(!with_board.contains("marked unhealthy"), "{with_board}");
    assert!(!with_board.contains("park in scheduled"), "{with_board}");
    let without = replay(None);
    assert!(
        without.contains("no --board given: each record's run is assumed to have been open"),
        "{without}"
    );
    assert!(
        without.contains("assuming run 1 of task t1 was still open"),
        "{without}"
    );
    assert!(without.contains("provider openai-codex marked unhealthy"));
}
