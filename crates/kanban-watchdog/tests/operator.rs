//! Issue 6: what an operator sees and does — metrics parsed with a real
//! Prometheus text parser, /status against the state the test created, the
//! demo as a subprocess, reload on SIGHUP, check-config, JSON logs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use hermes_board::testkit;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const T: Duration = Duration::from_secs(30);

#[test]
fn metrics_follow_prometheus_conventions_and_status_matches_the_board() {
    let mut h = Harness::new();
    h.start();
    let run = h.running_task("parked-1", "coder");
    let due_reset = now() + 3600;
    h.write_record(&record(
        Some(("parked-1", run)),
        "coder",
        Some(rate_limit(Some(due_reset))),
    ));
    let run2 = h.running_task("grok-1", "grok");
    h.write_record(&record(
        Some(("grok-1", run2)),
        "grok",
        Some(auth_expired("xai-oauth")),
    ));
    testkit::add_task(&h.conn(), "waiting", "coder", "ready").unwrap();
    wait_until("two parked and one held", T, || {
        let st = h.status();
        (st["parked"].as_array()?.len() == 3).then_some(())
    });
    let scrape = h.metrics();
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "kanban_watchdog_dispatcher_last_progress_timestamp_seconds",
        "kanban_watchdog_dispatcher_next_cycle_timestamp_seconds",
        "kanban_watchdog_dispatcher_stalled",
        "kanban_watchdog_ready_tasks",
        "kanban_watchdog_oldest_ready_age_seconds",
        "kanban_watchdog_parked_tasks",
        "kanban_watchdog_provider_unhealthy",
        "kanban_watchdog_providers_skipped_total",
        "kanban_watchdog_records_handled_total",
        "kanban_watchdog_records_quarantined_total",
        "kanban_watchdog_board_writes_total",
        "kanban_watchdog_board_busy_retries_total",
        "kanban_watchdog_alerts_sent_total",
        "kanban_watchdog_alerts_failed_total",
        "kanban_watchdog_gateway_up",
    ] {
        assert!(names.contains(name), "missing metric {name} in {names:?}");
    }
    assert_eq!(
        metric_value(&scrape, "kanban_watchdog_parked_tasks", &[]),
        3.0
    );
    assert_eq!(
        metric_value(&scrape, "kanban_watchdog_records_handled_total", &[]),
        2.0
    );
    assert_eq!(
        metric_value(
            &scrape,
            "kanban_watchdog_provider_unhealthy",
            &[("provider", "openai-codex"), ("reason", "rate_limit")]
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &scrape,
            "kanban_watchdog_provider_unhealthy",
            &[("provider", "xai-oauth"), ("reason", "auth_expired")]
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &scrape,
            "kanban_watchdog_board_writes_total",
            &[("kind", "park")]
        ),
        2.0
    );
    assert_eq!(
        metric_value(
            &scrape,
            "kanban_watchdog_board_writes_total",
            &[("kind", "hold")]
        ),
        1.0
    );
    let last_progress = metric_value(
        &scrape,
        "kanban_watchdog_dispatcher_last_progress_timestamp_seconds",
        &[],
    );
    assert!(
        (last_progress - now() as f64).abs() < 120.0,
        "a unix timestamp in seconds"
    );

    let st = h.status();
    let parked = st["parked"].as_array().unwrap();
    let find = |t: &str| parked.iter().find(|p| p["task"] == t).unwrap().clone();
    assert_eq!(find("parked-1")["kind"], "parked");
    assert_eq!(find("parked-1")["provider"], "openai-codex");
    assert_eq!(
        find("parked-1")["due_at"],
        due_reset,
        "margin and jitter are 0 here"
    );
    assert_eq!(
        find("grok-1")["due_at"],
        serde_json::Value::Null,
        "waits for re-auth"
    );
    assert_eq!(find("waiting")["kind"], "held");
    let providers = st["providers"].as_array().unwrap();
    let codex = providers
        .iter()
        .find(|p| p["name"] == "openai-codex")
        .unwrap();
    assert_eq!(codex["state"], "unhealthy");
    assert_eq!(codex["until"], due_reset);
    let xai = providers.iter().find(|p| p["name"] == "xai-oauth").unwrap();
    assert_eq!(xai["until"], serde_json::Value::Null);
    assert_eq!(st["counters"]["records_handled"], 2);
    assert_eq!(st["counters"]["board_writes"]["park"], 2);
    assert_eq!(st["dispatcher"]["state"], "idle");
    assert!(
        st["dispatcher"]["next_cycle_at"].as_i64().unwrap() >= st["generated_at"].as_i64().unwrap()
    );

    // Liveness and readiness; no write operations.
    assert_eq!(h.get("/healthz"), "ok\n");
    assert_eq!(h.get("/readyz"), "ok\n");
    let post = ureq::post(&format!("http://{}/status", h.addr())).send("x");
    match post {
        Err(ureq::Error::StatusCode(code)) => assert_eq!(code, 405),
        other => panic!("POST must be refused, got {other:?}"),
    }
    assert!(h.addr().starts_with("127.0.0.1:"));
}

#[test]
fn the_demo_runs_every_step_and_exits_0() {
    let out = Command::new(WATCHDOG).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "Act 1",
        "worker-shim exited 75",
        "failure.class=rate_limit",
        "provider openai-codex marked unhealthy until",
        "task t_demo1 parked: running -> scheduled",
        "kanban_watchdog_board_writes_total{kind=\"park\"} 1",
        "released scheduled -> ready",
        "Act 2",
        "gateway loop frozen",
        "dispatcher stalled",
        "webhook received: [FIRING]",
        "restart: attempt 1",
        "both done",
        "webhook received: [RESOLVED]",
        "demo complete: every step happened.",
    ] {
        assert!(
            stdout.contains(needle),
            "demo output lacks {needle:?}:\n{stdout}"
        );
    }
    for step in 1..=14 {
        assert!(
            stdout.contains(&format!("step {step:>2}:")),
            "step {step} missing"
        );
    }
}

#[test]
fn sighup_reloads_a_valid_config_and_refuses_an_invalid_one() {
    let mut h = Harness::new();
    h.write_config("dispatcher: {stall_after: 60s}\n");
    h.start();
    assert_eq!(h.status()["dispatcher"]["stall_after_s"], 60.0);
    let pid = Pid::from_raw(h.child.as_ref().unwrap().id() as i32);
    h.write_config("dispatcher: {stall_after: 42s}\n");
    kill(pid, Signal::SIGHUP).unwrap();
    wait_until("the new stall_after", T, || {
        (h.status()["dispatcher"]["stall_after_s"] == 42.0).then_some(())
    });
    std::fs::write(&h.config, "dispatcher:\n  stall_after: soon\n").unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    wait_until("the refusal logged", T, || {
        h.stderr().contains("SIGHUP: config refused").then_some(())
    });
    let err = h.stderr();
    let line = err.lines().find(|l| l.contains("config refused")).unwrap();
    assert!(line.contains("watchdog.yaml:2"), "{line}");
    assert!(line.contains("keeping the old one"), "{line}");
    assert_eq!(h.status()["dispatcher"]["stall_after_s"], 42.0);
}

#[test]
fn check_config_names_the_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "board: default\nrestart:\n  burst: 0\n").unwrap();
    let out = Command::new(WATCHDOG)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:3: restart.burst: must be at least 1"),
        "{err}"
    );

    std::fs::write(&bad, "retry:\n  margni: 5s\n").unwrap();
    let out = Command::new(WATCHDOG)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:2") && err.contains("unknown field `margni`"),
        "{err}"
    );

    let good = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/watchdog.yaml");
    let out = Command::new(WATCHDOG)
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("valid") && text.contains("board_db:"),
        "{text}"
    );

    // `run` refuses to start on an invalid config, with the reason.
    std::fs::write(&bad, "http:\n  listen: nowhere\n").unwrap();
    let out = Command::new(WATCHDOG)
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.yaml:2: http.listen"));
}

#[test]
fn logs_can_be_json_lines() {
    let h = Harness::new();
    h.write_config("");
    let log = std::fs::File::create(&h.stderr_log).unwrap();
    let mut child = Command::new(WATCHDOG)
        .args(["--log-format", "json", "run", "--config"])
        .arg(&h.config)
        .stderr(log)
        .spawn()
        .unwrap();
    wait_until("started", T, || {
        h.stderr().contains("kanban-watchdog started").then_some(())
    });
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    child.wait().unwrap();
    let text = h.stderr();
    assert!(!text.is_empty());
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}

#[test]
fn replay_prints_what_would_have_happened_in_time_order_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hermes");
    std::fs::create_dir_all(home.join("profiles/coder")).unwrap();
    std::fs::write(
        home.join("profiles/coder/config.yaml"),
        "model: {provider: openai-codex}\n",
    )
    .unwrap();
    let recs = tmp.path().join("incident-records");
    // 2026-06-07 13:00:00 UTC and friends.
    let t0 = 1_780_837_200;
    let mut r = record(Some(("t1", 7)), "coder", Some(rate_limit(Some(t0 + 600))));
    r.ended_at = jiff::Timestamp::from_second(t0).unwrap();
    exit_record::write_atomic(&recs, &r, exit_record::WriteOptions { fsync: false }).unwrap();
    let log = tmp.path().join("gateway.log");
    let stamp = |t: i64| {
        jiff::tz::TimeZone::system()
            .to_datetime(jiff::Timestamp::from_second(t).unwrap())
            .strftime("%Y-%m-%d %H:%M:%S,000")
            .to_string()
    };
    // The rotated file holds the older lines.
    std::fs::write(
        tmp.path().join("gateway.log.1"),
        format!(
            "{} INFO gateway.run: kanban dispatcher [default]: spawned=1 reclaimed=0 crashed=0 timed_out=0 promoted=0 auto_blocked=0\n",
            stamp(t0 - 60)
        ),
    )
    .unwrap();
    std::fs::write(
        &log,
        format!(
            "{} WARNING gateway.run: kanban dispatcher stuck: ready queue non-empty for 6 consecutive ticks but 0 workers spawned.\n\
             {} ERROR gateway.run: kanban dispatcher: tick failed on board default\n\
             RuntimeError: xAI OAuth state is missing access_token. Re-authenticate with `hermes model`.\n",
            stamp(t0 + 1000),
            stamp(t0 + 1001)
        ),
    )
    .unwrap();
    let before: Vec<_> = std::fs::read_dir(&recs)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let out = Command::new(WATCHDOG)
        .args(["replay", "--hermes-home"])
        .arg(&home)
        .arg("--records")
        .arg(&recs)
        .arg("--gateway-log")
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // Default config: margin 15s plus up to 30s of jitter after the reset;
    // stall_after 180s (3 x the 60s default interval).
    let order = [
        "2026-06-07T13:00:00Z  provider openai-codex marked unhealthy",
        "task t1: park in scheduled until 2026-06-07T13:10:",
        "provider openai-codex cooldown over",
        "task t1: due; released scheduled -> ready",
        "dispatcher stalled: ready work waited 180s",
        "restart attempt 1: would run [\"hermes\", \"gateway\", \"run\", \"--replace\"]",
        "gateway reports the ready queue stuck",
        "provider xai-oauth marked unhealthy",
    ];
    let mut at = 0;
    for needle in order {
        let pos = text[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing or out of order in:\n{text}"));
        at += pos;
    }
    assert!(text.contains("nothing was written"));
    let after: Vec<_> = std::fs::read_dir(&recs)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "replay never moves records");
}

#[test]
fn provider_health_and_its_gauge_survive_a_watchdog_restart() {
    let mut h = Harness::new();
    h.start();
    // A worker outside any task that failed (exit 1): a worker outside
    // Hermes that exits 0 judges no provider.
    let mut rec = record(None, "grok", Some(auth_expired("xai-oauth")));
    rec.exit.code = Some(1);
    h.write_record(&rec);
    let labels = [("provider", "xai-oauth"), ("reason", "auth_expired")];
    wait_until("gauge set", T, || {
        (h.metric("kanban_watchdog_provider_unhealthy", &labels) == 1.0).then_some(())
    });
    h.stop();
    h.start();
    assert_eq!(h.metric("kanban_watchdog_provider_unhealthy", &labels), 1.0);
    let st = h.status();
    let xai = st["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "xai-oauth")
        .unwrap()
        .clone();
    assert_eq!(xai["state"], "unhealthy");
    assert_eq!(xai["until"], serde_json::Value::Null);
}
