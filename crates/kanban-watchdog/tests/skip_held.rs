//! Issue 16, "no task of an unhealthy provider burns a worker run", end to
//! end with the real binaries: the watchdog publishes a `hold` for a profile
//! whose primary is unhealthy with no healthy fallback (with a fresh
//! `generated_at`), the real shim then does not start that profile's kanban
//! worker (exit 75, a `skipped` record), and the watchdog parks the task and
//! counts the skipped run in `providers_skipped_total`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

#[test]
fn a_held_profiles_new_run_is_not_started_and_its_task_is_parked() {
    let mut h = Harness::new();
    h.start();
    // A real rate limit on coder's primary (openai-codex, no fallback).
    let run = h.running_task("first", "coder");
    let reset = now() + 3600;
    h.write_record(&record(
        Some(("first", run)),
        "coder",
        Some(rate_limit(Some(reset))),
    ));
    let health_file = h.state.join("health.json");
    let doc = wait_until("health.json holds coder", T, || {
        let text = std::fs::read_to_string(&health_file).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        (v["hold"]["coder"]["provider"] == "openai-codex").then_some(v)
    });
    assert!(
        doc["generated_at"]
            .as_i64()
            .is_some_and(|t| (t - now()).abs() < 60)
    );
    assert_eq!(doc["version"], 1);

    // The dispatcher claims the next coder task before the watchdog's check
    // can hold it: the shim is the one that stops the run.
    let run2 = h.claimed_task("second", "coder");
    let marker = h.tmp.path().join("worker-ran");
    let out = run_as_dispatched(
        &h.conn(),
        "second",
        Command::new(shim_bin())
            .env("WORKER_SHIM_RECORD_DIR", &h.records)
            .env("WORKER_SHIM_HEALTH_FILE", &health_file)
            .env("HERMES_KANBAN_TASK", "second")
            .env("HERMES_KANBAN_RUN_ID", run2.to_string())
            .env("HERMES_KANBAN_DB", &h.db)
            .env("HERMES_PROFILE", "coder")
            .env_remove("WORKER_SHIM_NO_SKIP")
            .args(["--", "sh", "-c"])
            .arg(format!("touch '{}'", marker.display()))
            .args([
                "-p",
                "coder",
                "--cli",
                "chat",
                "-q",
                "work kanban task second",
            ]),
    );
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!marker.exists(), "the worker must not have started");
    wait_until("the skipped run's task parked", T, || {
        (h.status_of("second") == "scheduled").then_some(())
    });
    wait_until("the skip counted", T, || {
        let m = h.metrics();
        (metric_value(&m, "kanban_watchdog_providers_skipped_total", &[]) >= 1.0).then_some(())
    });
}
