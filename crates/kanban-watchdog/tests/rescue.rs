//! Issue 4: records in, board rewritten — against a real WAL board with a
//! concurrent Python writer, with the real binaries.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hermes_board::testkit;

const T: Duration = Duration::from_secs(30);

#[test]
fn a_429_from_a_real_shimmed_worker_parks_the_task_and_it_returns_after_the_reset() {
    let mut h = Harness::new();
    h.start();
    let _writer = PythonWriter::start(&h.db, 20);
    let run = h.claimed_task("t1", "coder");
    // Far enough ahead that a loaded machine handles the record before it
    // (a record handled after its reset marks nothing).
    let resets_at = now() + 6;
    let out = run_as_dispatched(
        &h.conn(),
        "t1",
        Command::new(shim_bin())
        .args(["--", "sh", "-c"])
        .arg(format!(
            "echo 'HTTP 429: The usage limit has been reached. plan_type: team, resets_at: {resets_at}'; exit 0"
        ))
        .env("WORKER_SHIM_RECORD_DIR", &h.records)
        .env("HERMES_KANBAN_TASK", "t1")
        .env("HERMES_KANBAN_RUN_ID", run.to_string())
        .env("HERMES_KANBAN_BOARD", "default")
        .env("HERMES_PROFILE", "coder")
        .stdin(Stdio::null()),
    );
    assert_eq!(out.status.code(), Some(75));
    let written = Instant::now();
    wait_until("t1 parked", T, || {
        (h.status_of("t1") == "scheduled").then_some(())
    });
    let reaction = written.elapsed();
    // Never blocked, all the way back to ready.
    wait_until("t1 back in ready", T, || {
        let s = h.status_of("t1");
        assert_ne!(s, "blocked", "the task must never be blocked");
        (s == "ready").then_some(())
    });
    assert!(now() >= resets_at, "released only after the reset time");
    let kinds: Vec<String> = h.events("t1").into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        [
            "created",
            "claimed",
            "spawned",
            "watchdog_parked",
            "watchdog_released"
        ]
    );
    let (_, parked) = h
        .events("t1")
        .into_iter()
        .find(|(k, _)| k == "watchdog_parked")
        .unwrap();
    assert_eq!(parked["provider"], "openai-codex");
    assert!(parked["reason"].as_str().unwrap().contains("rate_limit"));
    assert!(parked["record_id"].is_string());
    assert_eq!(h.files_in("done").len(), 1);
    let st = h.status();
    let codex = st["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "openai-codex")
        .unwrap_or_else(|| panic!("openai-codex was never marked: {st}"))
        .clone();
    assert_ne!(codex["state"], "unhealthy", "cooldown over after the reset");
    assert_eq!(
        h.metric("kanban_watchdog_board_writes_total", &[("kind", "park")]),
        1.0
    );
    assert_eq!(
        h.metric("kanban_watchdog_board_writes_total", &[("kind", "release")]),
        1.0
    );
    assert_eq!(h.metric("kanban_watchdog_records_handled_total", &[]), 1.0);
    eprintln!("record-to-board reaction under a bursty writer: {reaction:?}");
    let audit = std::fs::read_to_string(h.state.join("audit.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), 2);
}

#[test]
fn stale_records_change_nothing() {
    let mut h = Harness::new();
    h.start();
    let conn = h.conn();
    let run_done = h.running_task("done", "coder");
    testkit::complete(&conn, "done").unwrap();
    let old_run = h.running_task("moved", "coder");
    testkit::hermes_gave_up(&conn, "moved").unwrap();
    conn.execute("UPDATE tasks SET status='ready' WHERE id='moved'", [])
        .unwrap();
    let mut c2 = h.conn();
    testkit::claim(&mut c2, "moved", WORKER_PID).unwrap();
    let before_done = h.events("done").len();
    let before_moved = h.events("moved").len();
    h.write_record(&record(
        Some(("done", run_done)),
        "coder",
        Some(rate_limit(Some(now() + 60))),
    ));
    h.write_record(&record(
        Some(("moved", old_run)),
        "coder",
        Some(rate_limit(Some(now() + 60))),
    ));
    wait_until("both records handled", T, || {
        (h.files_in("done").len() == 2).then_some(())
    });
    assert_eq!(h.status_of("done"), "done");
    assert_eq!(h.status_of("moved"), "running");
    assert_eq!(h.events("done").len(), before_done);
    assert_eq!(h.events("moved").len(), before_moved);
    assert!(h.stderr().contains("stale record, board untouched"));
}

#[test]
fn the_same_record_twice_or_after_a_restart_changes_the_board_once() {
    let mut h = Harness::new();
    h.start();
    let run = h.running_task("t", "coder");
    let rec = record(
        Some(("t", run)),
        "coder",
        Some(rate_limit(Some(now() + 3600))),
    );
    let path = h.write_record(&rec);
    wait_until("parked", T, || {
        (h.status_of("t") == "scheduled").then_some(())
    });
    wait_until("moved to done", T, || {
        (h.pending_records() == 0).then_some(())
    });
    // Delivered again while running...
    std::fs::copy(
        h.records.join("done").join(path.file_name().unwrap()),
        &path,
    )
    .unwrap();
    wait_until("redelivery handled", T, || {
        (h.pending_records() == 0).then_some(())
    });
    // ...and again across a restart.
    h.stop();
    h.write_record(&rec);
    h.start();
    wait_until("handled after restart", T, || {
        (h.pending_records() == 0).then_some(())
    });
    assert_eq!(h.count_events("t", "watchdog_parked"), 1);
    assert_eq!(h.files_in("done").len(), 3);
    assert_eq!(h.status_of("t"), "scheduled");
}

#[test]
fn a_retry_time_that_passed_while_the_watchdog_was_down_is_honoured_at_start_up() {
    let mut h = Harness::new();
    // A record written while the watchdog is down, for a reset already past.
    let run = h.running_task("early", "coder");
    h.write_record(&record(
        Some(("early", run)),
        "coder",
        Some(rate_limit(Some(now() - 5))),
    ));
    // And a task parked before a shutdown whose due time passes while down.
    h.start();
    let run2 = h.running_task("parked", "coder");
    let due = now() + 2;
    h.write_record(&record(
        Some(("parked", run2)),
        "coder",
        Some(rate_limit(Some(due))),
    ));
    wait_until("parked", T, || {
        (h.status_of("parked") == "scheduled").then_some(())
    });
    h.stop();
    wait_until("the due time to pass", T, || (now() > due).then_some(()));
    assert_eq!(
        h.status_of("parked"),
        "scheduled",
        "nothing moves while the watchdog is down"
    );
    h.start();
    wait_until("both back in ready", T, || {
        (h.status_of("early") == "ready" && h.status_of("parked") == "ready").then_some(())
    });
    assert_eq!(h.count_events("early", "watchdog_parked"), 1);
    assert_eq!(h.count_events("parked", "watchdog_released"), 1);
}

#[test]
fn the_delayed_retry_budget_is_enforced_with_a_reason_and_an_alert() {
    let mut h = Harness::new();
    let hook = Webhook::start();
    h.write_config(&format!(
        "retry: {{max_delayed_retries: 2}}\nalerts: {{webhook: {{url: \"{}\"}}}}\n",
        hook.url
    ));
    h.start();
    let conn = h.conn();
    testkit::add_task(&conn, "t", "coder", "ready").unwrap();
    for _attempt in 1..=3 {
        let mut c = h.conn();
        wait_until("t ready", T, || (h.status_of("t") == "ready").then_some(()));
        let run = testkit::claim(&mut c, "t", WORKER_PID).unwrap();
        h.write_record(&record(
            Some(("t", run)),
            "coder",
            Some(rate_limit(Some(now() + 1))),
        ));
        wait_until("record handled", T, || {
            (h.pending_records() == 0).then_some(())
        });
    }
    wait_until("t blocked by the budget", T, || {
        (h.status_of("t") == "blocked").then_some(())
    });
    assert_eq!(h.count_events("t", "watchdog_parked"), 2);
    assert_eq!(h.count_events("t", "watchdog_budget_exhausted"), 1);
    let err: String = conn
        .query_row(
            "SELECT last_failure_error FROM tasks WHERE id='t'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        err.contains("delayed-retry budget spent (2 in 24h)"),
        "{err}"
    );
    let alerts = wait_until("the budget alert", T, || {
        let a = hook.alerts("retry_budget_exhausted:t", "firing");
        (!a.is_empty()).then_some(a)
    });
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        h.metric("kanban_watchdog_delayed_retries_exhausted_total", &[]),
        1.0
    );
}

#[test]
fn malformed_records_are_quarantined_with_a_reason_never_deleted() {
    let mut h = Harness::new();
    h.start();
    std::fs::write(h.records.join("garbage.json"), b"{not json").unwrap();
    std::fs::write(
        h.records.join("future.json"),
        br#"{"schema":"kanban-watchdog/exit-record","schema_version":99}"#,
    )
    .unwrap();
    std::fs::write(h.records.join("badutf8.json"), b"{\"schema\": \"\xff\"}").unwrap();
    std::fs::write(h.records.join("huge.json"), vec![b' '; 2 * 1024 * 1024]).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", h.records.join("link.json")).unwrap();
    wait_until("five quarantined", T, || {
        (h.metric("kanban_watchdog_records_quarantined_total", &[]) == 5.0).then_some(())
    });
    let q = h.files_in("quarantine");
    for name in [
        "garbage.json",
        "future.json",
        "badutf8.json",
        "huge.json",
        "link.json",
    ] {
        assert!(q.contains(&name.to_string()), "{name} in {q:?}");
        let reason =
            std::fs::read_to_string(h.records.join("quarantine").join(format!("{name}.reason")))
                .unwrap();
        assert!(!reason.trim().is_empty());
    }
    let reason = |n: &str| {
        std::fs::read_to_string(h.records.join("quarantine").join(format!("{n}.reason"))).unwrap()
    };
    assert!(reason("future.json").contains("schema_version 99"));
    assert!(reason("huge.json").contains("record limit"));
    assert!(reason("link.json").contains("symbolic link"));
    assert!(reason("garbage.json").contains("line 1"));
    assert_eq!(
        std::fs::read(h.records.join("quarantine/garbage.json")).unwrap(),
        b"{not json"
    );
}

#[test]
fn dry_run_writes_nothing() {
    let mut h = Harness::new();
    h.write_config("restart: {enabled: true, command: [\"/bin/false\"]}\n");
    h.start_with(&["--dry-run"]);
    let run = h.running_task("t", "coder");
    let before = std::fs::read(&h.db).unwrap();
    h.write_record(&record(
        Some(("t", run)),
        "coder",
        Some(rate_limit(Some(now() + 3600))),
    ));
    wait_until("the would-be change logged", T, || {
        h.stderr()
            .contains("board would change: park running -> scheduled")
            .then_some(())
    });
    assert_eq!(h.status_of("t"), "running");
    assert_eq!(h.count_events("t", "watchdog_parked"), 0);
    assert_eq!(std::fs::read(&h.db).unwrap(), before);
    assert_eq!(
        std::fs::read_to_string(h.state.join("audit.jsonl")).unwrap_or_default(),
        ""
    );
}

#[test]
fn a_ready_task_whose_provider_is_unhealthy_is_held_then_released() {
    let mut h = Harness::new();
    h.start();
    // A worker outside any task that failed tells us the provider is
    // limited for 3 s (exit 1: a worker outside Hermes that exits 0 judges
    // no provider).
    let mut rec = record(None, "coder", Some(rate_limit(Some(now() + 3))));
    rec.exit.code = Some(1);
    h.write_record(&rec);
    wait_until("provider unhealthy", T, || {
        h.status()["providers"]
            .as_array()?
            .iter()
            .any(|p| p["name"] == "openai-codex" && p["state"] == "unhealthy")
            .then_some(())
    });
    let conn = h.conn();
    testkit::add_task(&conn, "waiting", "coder", "ready").unwrap();
    testkit::add_task(&conn, "other", "grok", "ready").unwrap();
    wait_until("held", T, || {
        (h.status_of("waiting") == "scheduled").then_some(())
    });
    assert_eq!(
        h.status_of("other"),
        "ready",
        "other providers are not held"
    );
    let (_, held) = h
        .events("waiting")
        .into_iter()
        .find(|(k, _)| k == "watchdog_held")
        .unwrap();
    assert!(
        held["reason"]
            .as_str()
            .unwrap()
            .starts_with("provider openai-codex unhealthy until")
    );
    assert_eq!(
        h.metric("kanban_watchdog_providers_skipped_total", &[]),
        1.0
    );
    wait_until("released when the provider heals", T, || {
        (h.status_of("waiting") == "ready").then_some(())
    });
}

#[test]
fn a_healthy_fallback_takes_the_retry_at_once_and_the_shim_is_told() {
    let mut h = Harness::new();
    h.set_profile(
        "coder",
        "model: {provider: openai-codex, default: gpt-5}\n\
         fallback_providers:\n  - {provider: openrouter, model: qwen/qwen3-coder}\n",
    );
    h.start();
    let run = h.running_task("t", "coder");
    h.write_record(&record(
        Some(("t", run)),
        "coder",
        Some(rate_limit(Some(now() + 3600))),
    ));
    wait_until("requeued", T, || {
        (h.count_events("t", "watchdog_requeued") == 1).then_some(())
    });
    assert_eq!(h.status_of("t"), "ready");
    let health: serde_json::Value = wait_until("steering published", T, || {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(h.state.join("health.json")).ok()?).ok()?;
        (v["steer"]["coder"]["provider"] == "openrouter").then_some(v)
    });
    assert_eq!(health["steer"]["coder"]["model"], "qwen/qwen3-coder");
    assert_eq!(health["steer"]["coder"]["from"], "openai-codex");
    assert_eq!(health["providers"]["openai-codex"]["state"], "unhealthy");

    // The real shim, run as Hermes runs a worker, appends the steering.
    let out = Command::new(shim_bin())
        .args([
            "--",
            "sh",
            "-c",
            "echo \"$@\"",
            "hermes",
            "-p",
            "coder",
            "--cli",
            "chat",
            "-q",
            "work kanban task t",
        ])
        .env("WORKER_SHIM_RECORD_DIR", h.tmp.path().join("other-records"))
        .env("WORKER_SHIM_HEALTH_FILE", h.state.join("health.json"))
        .env("HERMES_KANBAN_TASK", "t")
        .env("HERMES_PROFILE", "coder")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "-p coder --cli chat -q work kanban task t --provider openrouter -m qwen/qwen3-coder"
    );
}

#[test]
fn expired_auth_waits_for_reauth_or_an_operator_reset() {
    let mut h = Harness::new();
    std::fs::write(h.home.join("auth.json"), b"{\"version\":1}").unwrap();
    h.start();
    let run = h.running_task("g", "grok");
    h.write_record(&record(
        Some(("g", run)),
        "grok",
        Some(auth_expired("xai-oauth")),
    ));
    wait_until("parked until re-auth", T, || {
        (h.status_of("g") == "scheduled").then_some(())
    });
    assert!(h.stderr().contains(
        "provider xai-oauth marked unhealthy: auth_expired on xai-oauth (xai-oauth-missing-token): RuntimeError: xAI OAuth state is missing access_token.; team will use fallback chain until re-auth"
    ));
    // The operator re-authenticates: a new token under xai-oauth's entry.
    std::fs::write(
        h.home.join("auth.json"),
        b"{\"version\":1,\"providers\":{\"xai-oauth\":{\"tokens\":{\"access_token\":\"new\"}}}}",
    )
    .unwrap();
    wait_until("released after re-auth", T, || {
        (h.status_of("g") == "ready").then_some(())
    });

    // Again, healed by `kanban-watchdog provider reset`.
    let mut c = h.conn();
    let run = testkit::claim(&mut c, "g", WORKER_PID).unwrap();
    h.write_record(&record(
        Some(("g", run)),
        "grok",
        Some(auth_expired("xai-oauth")),
    ));
    wait_until("parked again", T, || {
        (h.status_of("g") == "scheduled").then_some(())
    });
    let out = Command::new(WATCHDOG)
        .args(["provider", "reset", "xai-oauth", "--config"])
        .arg(&h.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("released after the reset", T, || {
        (h.status_of("g") == "ready").then_some(())
    });
    assert!(
        h.stderr()
            .contains("provider xai-oauth healthy again (reset by operator)")
    );
}

#[test]
fn sigkill_in_the_middle_of_a_batch_then_restart_handles_every_record_exactly_once() {
    let mut h = Harness::new();
    let n = 300;
    let mut runs = Vec::new();
    for i in 0..n {
        runs.push(h.running_task(&format!("t{i}"), "coder"));
    }
    h.write_config("");
    let _writer = PythonWriter::start(&h.db, 5);
    h.start();
    for (i, run) in runs.iter().enumerate() {
        h.write_record(&record(
            Some((&format!("t{i}"), *run)),
            "coder",
            Some(rate_limit(Some(now() + 3600))),
        ));
    }
    wait_until("part of the batch handled", T, || {
        (h.files_in("done").len() >= 20).then_some(())
    });
    h.kill();
    let handled_before = h.files_in("done").len();
    assert!(
        handled_before < n,
        "killed mid-batch ({handled_before} of {n} handled)"
    );
    h.start();
    wait_until("the whole batch handled", Duration::from_secs(60), || {
        (h.pending_records() == 0).then_some(())
    });
    let conn = h.conn();
    let parked_events: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM task_events WHERE kind='watchdog_parked'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(parked_events, n as i64, "exactly one park per record");
    let per_task_max: i64 = conn
        .query_row(
            "SELECT MAX(c) FROM (SELECT COUNT(*) c FROM task_events WHERE kind='watchdog_parked' GROUP BY task_id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(per_task_max, 1);
    let scheduled: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM tasks WHERE status='scheduled'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(scheduled, n as i64);
    let open_runs: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM task_runs WHERE ended_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(open_runs, 0);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    assert_eq!(h.files_in("done").len(), n);
}
