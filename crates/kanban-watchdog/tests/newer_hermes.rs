//! Issue 16 (the board/daemon part): the daemon against boards of the
//! Hermes 0.22 fork (its DDL, rollback journal), with the real binary and a
//! concurrent Python writer: what it detects, the exit-78 block of an
//! expired credential, the review lane, native steering.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use hermes_board::testkit::{self, Flavor};

const T: Duration = Duration::from_secs(30);
const WATCHDOG: &str = env!("CARGO_BIN_EXE_kanban-watchdog");

/// The harness on a board made by the 0.22 fork (DELETE journal).
fn harness_0_22() -> Harness {
    let h = Harness::new();
    std::fs::remove_file(&h.db).unwrap();
    drop(testkit::create_board_as(&h.db, Flavor::HERMES_0_22_DELETE).unwrap());
    h
}

#[test]
fn what_the_board_supports_is_shown_in_status_and_a_metric() {
    let mut h = harness_0_22();
    h.write_config("");
    h.start();
    let info = wait_until("board info published", T, || {
        let s = h.status();
        (!s["board_info"].is_null()).then(|| s["board_info"].clone())
    });
    assert_eq!(info["journal_mode"], "delete");
    assert_eq!(info["features"]["review_lane"], true);
    assert_eq!(info["features"]["exit_78"], true);
    assert_eq!(info["features"]["archived_parent_done"], true);
    assert!(
        info["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "tasks.provider_override")
    );
    let text = h.get("/metrics");
    let line = text
        .lines()
        .find(|l| l.starts_with("kanban_watchdog_board_info{"))
        .unwrap_or_else(|| panic!("no board_info series in:\n{text}"));
    assert!(line.ends_with(" 1"), "{line}");
    // (prometheus_parse splits label values on commas: read the line.)
    assert!(line.contains("journal_mode=\"delete\""), "{line}");
    assert!(
        line.contains("hermes_features=\"review_lane,exit_78,exit_trailer,archived_parent_done\""),
        "{line}"
    );
    let out = Command::new(WATCHDOG)
        .args(["status", "--config"])
        .arg(&h.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("journal delete; optional columns tasks.provider_override"),
        "{text}"
    );
    assert!(out.status.success());
}

#[test]
fn an_expired_credential_blocked_by_exit_78_waits_for_reauth_without_spending_the_budget() {
    let mut h = harness_0_22();
    std::fs::write(h.home.join("auth.json"), b"{\"version\":1}").unwrap();
    // No delayed retry left at all: a wait for a human must still park.
    h.write_config("retry: {max_delayed_retries: 0}\n");
    let _writer = PythonWriter::start(&h.db, 5);
    h.start();
    let run = h.running_task("g", "grok");
    // The 0.22 dispatcher saw exit 78 first and blocked the task at once.
    testkit::hermes_terminal_provider_block(&h.conn(), "g").unwrap();
    assert_eq!(h.status_of("g"), "blocked");
    h.write_record(&record(
        Some(("g", run)),
        "grok",
        Some(auth_expired("xai-oauth")),
    ));
    wait_until("parked until re-auth", T, || {
        (h.status_of("g") == "scheduled").then_some(())
    });
    assert_eq!(h.count_events("g", "watchdog_budget_exhausted"), 0);
    // Not before the re-auth.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(h.status_of("g"), "scheduled");
    let out = Command::new(WATCHDOG)
        .args(["provider", "reset", "xai-oauth", "--config"])
        .arg(&h.config)
        .output()
        .unwrap();
    assert!(out.status.success());
    wait_until("released after the reset", T, || {
        (h.status_of("g") == "ready").then_some(())
    });
}

#[test]
fn a_rate_limited_review_run_returns_to_review() {
    let mut h = harness_0_22();
    h.write_config("");
    let _writer = PythonWriter::start(&h.db, 5);
    h.start();
    let mut conn = h.conn();
    testkit::add_task(&conn, "r", "coder", "review").unwrap();
    let run = testkit::claim_review(&mut conn, "r", WORKER_PID).unwrap();
    h.write_record(&record(
        Some(("r", run)),
        "coder",
        Some(rate_limit(Some(now() + 1))),
    ));
    wait_until("parked", T, || {
        (h.count_events("r", "watchdog_parked") == 1).then_some(())
    });
    wait_until("released to review", T, || {
        (h.count_events("r", "watchdog_released") == 1).then_some(())
    });
    assert_eq!(h.status_of("r"), "review");
}

#[test]
fn steering_uses_the_native_override_and_clears_it_when_the_primary_heals() {
    let mut h = harness_0_22();
    h.set_profile(
        "coder",
        "model: {provider: openai-codex, default: gpt-5}\n\
         fallback_providers:\n  - {provider: openrouter, model: qwen/qwen3-coder}\n",
    );
    h.write_config("");
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
    assert_eq!(
        testkit::overrides(&h.conn(), "t").unwrap(),
        (Some("qwen/qwen3-coder".into()), Some("openrouter".into()))
    );
    let out = Command::new(WATCHDOG)
        .args(["provider", "reset", "openai-codex", "--config"])
        .arg(&h.config)
        .output()
        .unwrap();
    assert!(out.status.success());
    wait_until("override cleared", T, || {
        (testkit::overrides(&h.conn(), "t").unwrap() == (None, None)).then_some(())
    });
    assert_eq!(h.count_events("t", "watchdog_override_cleared"), 1);
}
