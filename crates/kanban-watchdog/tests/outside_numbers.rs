//! Issue 13, items 2, 8 and 11 (audit): numbers from outside never panic,
//! config errors never echo a secret, and a failed audit append after a
//! committed board write does not skip the metrics. The real binaries, a
//! real board; proptests for every numeric input from a config file, a
//! record, Hermes' config and the environment.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use kanban_watchdog::config::{Config, DispatcherConfig, MAX_DURATION};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proptest::prelude::*;

const T: Duration = Duration::from_secs(30);

fn check_config(text: &str) -> (Option<i32>, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("mine.yaml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(WATCHDOG)
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_refuses_out_of_range_numbers_naming_the_file_and_field() {
    for (key, yaml, value) in [
        (
            "dispatcher.check_every",
            "dispatcher:\n  check_every: ",
            "1e300",
        ),
        (
            "dispatcher.check_every",
            "dispatcher:\n  check_every: ",
            "1e19",
        ),
        (
            "dispatcher.check_every",
            "dispatcher:\n  check_every: ",
            "-5",
        ),
        (
            "dispatcher.check_every",
            "dispatcher:\n  check_every: ",
            ".nan",
        ),
        (
            "dispatcher.check_every",
            "dispatcher:\n  check_every: ",
            "2h",
        ),
        ("dispatcher.interval", "dispatcher:\n  interval: ", "1e300"),
        (
            "dispatcher.stall_after",
            "dispatcher:\n  stall_after: ",
            ".inf",
        ),
        (
            "providers.max_cooldown",
            "providers:\n  max_cooldown: ",
            "18446744073709551615",
        ),
        (
            "restart.backoff_initial",
            "restart:\n  backoff_initial: ",
            "99999999999999999d",
        ),
        ("retry.jitter", "retry:\n  jitter: ", "1e19"),
        (
            "records.max_bytes",
            "records:\n  max_bytes: ",
            "18446744073709551615",
        ),
        ("records.keep_done", "records:\n  keep_done: ", "-1"),
    ] {
        let (code, stdout, stderr) = check_config(&format!("{yaml}{value}\n"));
        assert_eq!(
            code,
            Some(2),
            "{key}: {value}: refused, not a panic (101) or accepted\n{stdout}{stderr}"
        );
        assert!(
            stderr.contains("mine.yaml:2") && stderr.contains(key),
            "{key}: {value}: names the file, line and field: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_mistyped_webhook_with_credentials_is_not_echoed_by_check_config_or_a_refused_reload() {
    let secrets = [
        "hunter2-pass",
        "T0SECRET/B0SECRET/XXXXsecretpath",
        "tok3n-value-9",
        "sk-proj-AbCdEf0123456789AbCdEf0123456789",
    ];
    let yaml = format!(
        "alerts:\n  webhook: \"https://ops:{}@hooks.example.com/services/{}?token={}&key={}\"\n",
        secrets[0], secrets[1], secrets[2], secrets[3]
    );
    let (code, stdout, stderr) = check_config(&yaml);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("mine.yaml:2") && stderr.contains("alerts.webhook"),
        "{stderr}"
    );
    assert!(stderr.contains("hooks.example.com"), "{stderr}");
    for s in secrets {
        assert!(
            !stdout.contains(s) && !stderr.contains(s),
            "{s} echoed: {stderr}"
        );
    }
    assert!(!stderr.contains("ops:"), "{stderr}");

    // The same file on SIGHUP: refused, the daemon lives on, nothing echoed;
    // then numbers that used to panic the reload.
    let mut h = Harness::new();
    h.start();
    let pid = Pid::from_raw(h.child.as_ref().unwrap().id() as i32);
    let good = std::fs::read_to_string(&h.config).unwrap();
    let bad = [
        format!("{good}{yaml}"),
        good.replace("check_every: 100ms", "check_every: 1e300"),
        good.replace("check_every: 100ms", "check_every: 1e19"),
        format!("{good}providers:\n  max_cooldown: 18446744073709551615\n"),
    ];
    for (n, text) in bad.iter().enumerate() {
        std::fs::write(&h.config, text).unwrap();
        kill(pid, Signal::SIGHUP).unwrap();
        wait_until("the refusal logged", T, || {
            (h.stderr().matches("SIGHUP: config refused").count() > n).then_some(())
        });
        assert!(
            h.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "the daemon died on reload {n}: {}",
            h.stderr()
        );
        assert_eq!(h.status()["dispatcher"]["interval_s"], 1.0);
    }
    let err = h.stderr();
    for s in secrets {
        assert!(!err.contains(s), "{s} echoed by the reload: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// Writes Hermes' own config with `dispatch_interval_seconds: value` and a
/// watchdog config that does not set the interval (so Hermes' is read).
fn with_hermes_interval(h: &Harness, value: &str) {
    std::fs::write(
        h.home.join("config.yaml"),
        format!("kanban:\n  dispatch_interval_seconds: {value}\n"),
    )
    .unwrap();
    h.write_config("");
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&h.config).unwrap()).unwrap();
    doc["dispatcher"]
        .as_mapping_mut()
        .unwrap()
        .remove("interval");
    doc["dispatcher"]
        .as_mapping_mut()
        .unwrap()
        .remove("stall_after");
    std::fs::write(&h.config, serde_yaml::to_string(&doc).unwrap()).unwrap();
}

#[test]
fn absurd_hermes_dispatch_intervals_do_not_panic_at_start_or_reload() {
    for (value, interval) in [
        ("1e300", 86_400.0f64),
        ("1e19", 86_400.0),
        ("-5", 1.0),
        (".nan", 1.0),
    ] {
        let mut h = Harness::new();
        with_hermes_interval(&h, value);
        h.start();
        let st = h.status();
        assert_eq!(st["dispatcher"]["interval_s"], interval, "{value}");
        assert_eq!(
            st["dispatcher"]["stall_after_s"],
            (interval * 3.0).max(90.0),
            "{value}"
        );
        // A reload reads Hermes' config again.
        let pid = Pid::from_raw(h.child.as_ref().unwrap().id() as i32);
        std::fs::write(
            h.home.join("config.yaml"),
            "kanban:\n  dispatch_interval_seconds: 1e300\n",
        )
        .unwrap();
        kill(pid, Signal::SIGHUP).unwrap();
        wait_until("reloaded", T, || {
            h.stderr().contains("configuration reloaded").then_some(())
        });
        wait_until("the reloaded interval published", T, || {
            (h.status()["dispatcher"]["interval_s"] == 86_400.0).then_some(())
        });
        assert!(h.child.as_mut().unwrap().try_wait().unwrap().is_none());
        h.stop();
        assert!(!h.stderr().contains("panicked"), "{}", h.stderr());
    }
}

#[test]
fn a_record_with_absurd_retry_times_parks_the_task_within_the_max_cooldown() {
    let mut h = Harness::new();
    h.start();
    let run1 = h.running_task("t1", "coder");
    let run2 = h.running_task("t2", "coder");
    // Written by hand, as another writer could: numbers no shim would write.
    let mut a = record(Some(("t1", run1)), "coder", Some(rate_limit(None)));
    a.failure.as_mut().unwrap().retry_after_s = Some(1e300);
    let mut b = record(
        Some(("t2", run2)),
        "coder",
        Some(rate_limit(Some(i64::MAX))),
    );
    b.failure.as_mut().unwrap().retry_after_s = Some(-1e300);
    let start = now();
    h.write_record(&a);
    h.write_record(&b);
    for t in ["t1", "t2"] {
        wait_until("parked", T, || {
            (h.status_of(t) == "scheduled").then_some(())
        });
        let (_, ev) = h
            .events(t)
            .into_iter()
            .find(|(k, _)| k == "watchdog_parked")
            .unwrap();
        let due = ev["due_at"].as_i64().unwrap();
        // providers.max_cooldown (24h) + retry.margin and jitter (0 here).
        assert!(
            due > start && due <= now() + 24 * 3600,
            "{t}: due_at {due} is within the max cooldown"
        );
    }
    assert!(h.child.as_mut().unwrap().try_wait().unwrap().is_none());
    assert!(!h.stderr().contains("panicked"), "{}", h.stderr());
}

#[test]
fn a_failed_audit_append_after_a_committed_write_still_counts_the_write_and_keeps_the_line() {
    let mut h = Harness::new();
    let Some(fs) = Tmpfs::mount(&h.state, "64k") else {
        return;
    };
    h.start();
    // The audit log is open; now its filesystem is full.
    wait_until("the audit log opened", T, || {
        h.state.join("audit.jsonl").exists().then_some(())
    });
    fs.fill();
    let run = h.running_task("t1", "coder");
    h.write_record(&record(
        Some(("t1", run)),
        "coder",
        Some(rate_limit(Some(now() + 3600))),
    ));
    wait_until("t1 parked", T, || {
        (h.status_of("t1") == "scheduled").then_some(())
    });
    wait_until("the record handled", T, || {
        (h.pending_records() == 0).then_some(())
    });
    assert_eq!(h.count_events("t1", "watchdog_parked"), 1);
    assert_eq!(
        h.metric("kanban_watchdog_board_writes_total", &[("kind", "park")]),
        1.0,
        "the committed park is counted: {}",
        h.stderr()
    );
    assert_eq!(h.metric("kanban_watchdog_records_handled_total", &[]), 1.0);
    assert!(
        h.stderr().contains("cannot append to the audit log"),
        "{}",
        h.stderr()
    );

    // Space again: the kept line is written before the next one.
    fs.free();
    let run = h.running_task("t2", "coder");
    h.write_record(&record(
        Some(("t2", run)),
        "coder",
        Some(rate_limit(Some(now() + 3600))),
    ));
    wait_until("t2 parked", T, || {
        (h.status_of("t2") == "scheduled").then_some(())
    });
    let start = Instant::now();
    let audit = wait_until("both audit lines", T, || {
        let text = std::fs::read_to_string(h.state.join("audit.jsonl")).ok()?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (lines.len() >= 2).then_some(lines)
    });
    let tasks: Vec<&str> = audit.iter().filter_map(|l| l["task"].as_str()).collect();
    assert_eq!(tasks, ["t1", "t2"], "after {:?}", start.elapsed());
    assert_eq!(
        h.metric("kanban_watchdog_board_writes_total", &[("kind", "park")]),
        2.0
    );
}

// ----- proptests: no number from outside panics ---------------------------

/// Number-shaped YAML scalars, ordinary and absurd.
fn yaml_number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        (0u64..100_000).prop_map(|n| n.to_string()),
        (0.0f64..1e7).prop_map(|f| f.to_string()),
        prop::sample::select(vec![
            ".nan",
            ".inf",
            "-.inf",
            "1e300",
            "1e19",
            "-5",
            "-0",
            "1e-300",
            "0",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "99999999999999999d",
            "1e300s",
            "5000000000000h",
            "'1e300'",
            "\"-1s\"",
        ])
        .prop_map(str::to_string),
        (
            any::<u32>(),
            prop::sample::select(vec!["ms", "s", "m", "h", "d", "w"])
        )
            .prop_map(|(n, u)| format!("{n}{u}")),
    ]
}

const NUMERIC_KEYS: &[&str] = &[
    "providers.default_cooldown",
    "providers.max_cooldown",
    "retry.margin",
    "retry.jitter",
    "retry.default_delay",
    "retry.max_delay",
    "retry.max_delayed_retries",
    "retry.retry_window",
    "dispatcher.interval",
    "dispatcher.stall_after",
    "dispatcher.check_every",
    "restart.burst",
    "restart.interval",
    "restart.backoff_initial",
    "restart.backoff_max",
    "restart.recovery_grace",
    "alerts.repeat_interval",
    "records.max_bytes",
    "records.keep_done",
    "alerts.webhook.timeout",
    "alerts.webhook.retries",
];

fn yaml_at(key: &str, value: &str) -> String {
    let parts: Vec<&str> = key.split('.').collect();
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        out.push_str(&"  ".repeat(i));
        if i + 1 == parts.len() {
            out.push_str(&format!("{p}: {value}\n"));
        } else {
            out.push_str(&format!("{p}:\n"));
            if *p == "webhook" {
                out.push_str(&format!("{}url: http://127.0.0.1:1/\n", "  ".repeat(i + 1)));
            }
        }
    }
    out
}

/// Every duration of an accepted config, to check the bound on each.
fn durations(c: &Config) -> Vec<Duration> {
    let mut v = vec![
        c.providers.default_cooldown.0,
        c.providers.max_cooldown.0,
        c.retry.margin.0,
        c.retry.jitter.0,
        c.retry.default_delay.0,
        c.retry.max_delay.0,
        c.retry.retry_window.0,
        c.dispatcher.check_every.0,
        c.restart.interval.0,
        c.restart.backoff_initial.0,
        c.restart.backoff_max.0,
        c.restart.recovery_grace.0,
        c.alerts.repeat_interval.0,
        c.records.keep_done.0,
    ];
    v.extend(c.dispatcher.interval.map(|d| d.0));
    v.extend(c.dispatcher.stall_after.map(|d| d.0));
    v.extend(c.alerts.webhook.as_ref().map(|w| w.timeout.0));
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any number at any numeric key: a config or an error naming the file
    /// (never a panic); an accepted one is in range, renders and parses
    /// back to itself, and its durations go through the decision
    /// arithmetic (cooldowns, restart backoff, stall allowance) unharmed.
    #[test]
    fn no_number_in_the_config_panics(
        keys in prop::sample::subsequence(NUMERIC_KEYS.to_vec(), 1..4),
        values in prop::collection::vec(yaml_number(), 4),
        retry_after in any::<f64>(),
        resets_at in any::<i64>(),
    ) {
        let mut doc: serde_yaml::Value = serde_yaml::Value::Mapping(Default::default());
        for (k, v) in keys.iter().zip(&values) {
            let Ok(part) = serde_yaml::from_str::<serde_yaml::Value>(&yaml_at(k, v)) else {
                continue;
            };
            merge(&mut doc, part);
        }
        let text = serde_yaml::to_string(&doc).unwrap();
        match Config::from_yaml(&text, "p.yaml") {
            Err(e) => prop_assert!(e.to_string().starts_with("p.yaml"), "{}", e),
            Ok(c) => {
                for d in durations(&c) {
                    prop_assert!(d <= MAX_DURATION, "{:?} accepted from {}", d, text);
                }
                let again = Config::from_yaml(&c.to_yaml(), "again.yaml").unwrap();
                prop_assert_eq!(&again, &c);
                let now = jiff::Timestamp::now().as_second();
                let mut f = rate_limit(Some(resets_at));
                f.retry_after_s = Some(retry_after);
                if let Some(until) = kanban_watchdog::rescue::unhealthy_until(&f, &c.providers, now) {
                    prop_assert!(until <= now.saturating_add(c.providers.max_cooldown.0.as_secs() as i64));
                }
                let (_, stall) = kanban_watchdog::heartbeat::dispatcher_timing(
                    &c.dispatcher,
                    Path::new("/nonexistent"),
                );
                prop_assert!(c.dispatcher.stall_after.is_some() || stall >= Duration::from_secs(90));
                let mut r = kanban_watchdog::restart::Restarter::with_history(vec![0, now]);
                let mut cfg = c.restart.clone();
                cfg.enabled = true;
                let step = cfg.recovery_grace.0 + cfg.backoff_max.0 + Duration::from_secs(1);
                let mut t = Instant::now();
                for _ in 0..20 {
                    let _ = r.step(&cfg, now, t);
                    t = t.checked_add(step).unwrap_or(t);
                }
            }
        }
    }

    /// Any numbers in a record's failure and times: read, clamped at the
    /// boundary, round-tripped, and through the cooldown arithmetic.
    #[test]
    fn no_number_in_a_record_panics(
        retry_after in prop_oneof![any::<f64>(), Just(1e300), Just(-1e300), Just(f64::MAX)],
        resets_at in prop_oneof![any::<i64>(), Just(i64::MAX), Just(i64::MIN)],
        ended_at in -377_705_116_800i64..253_402_207_200,
        duration_ms in any::<u64>(),
        run_id in any::<i64>(),
        code in any::<i32>(),
        signal in any::<i32>(),
    ) {
        let mut rec = record(Some(("t", run_id)), "coder", Some(rate_limit(Some(resets_at))));
        rec.failure.as_mut().unwrap().retry_after_s = Some(retry_after);
        rec.ended_at = jiff::Timestamp::from_second(ended_at).unwrap();
        rec.duration_ms = duration_ms;
        rec.exit.code = Some(code);
        rec.exit.signal = Some(signal);
        let Ok(bytes) = serde_json::to_vec(&rec) else {
            // serde_json refuses NaN and infinities: not a record.
            return Ok(());
        };
        let back = exit_record::parse_record_bytes(&bytes).unwrap();
        let f = back.failure.clone().unwrap();
        let horizon = exit_record::MAX_RESET_HORIZON_S;
        let now = jiff::Timestamp::now().as_second();
        if let Some(s) = f.retry_after_s {
            prop_assert!((0.0..=horizon as f64).contains(&s), "{}", s);
        }
        let r = f.resets_at.unwrap();
        prop_assert!(r >= 0 && r <= ended_at.min(now).saturating_add(horizon).max(0));
        // Round-trips (up to serde_json's float parsing, which is not
        // exact without its `float_roundtrip` feature: the last digit of a
        // 1e-111 may differ).
        let mut again = exit_record::parse_record_bytes(&serde_json::to_vec(&back).unwrap()).unwrap();
        let (a, b) = (
            again.failure.as_mut().unwrap().retry_after_s.take(),
            f.retry_after_s,
        );
        let close = match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= b.abs() * 1e-12,
            (a, b) => a == b,
        };
        prop_assert!(close, "{:?} {:?}", a, b);
        let mut back = back;
        back.failure.as_mut().unwrap().retry_after_s = None;
        prop_assert_eq!(&again, &back);
        let cfg = Config::default();
        let until = kanban_watchdog::rescue::unhealthy_until(&f, &cfg.providers, now);
        prop_assert!(until.is_none_or(|u| u <= now + 24 * 3600));
    }

    /// Any YAML scalar as Hermes' `kanban.dispatch_interval_seconds`: an
    /// interval from 1 s to 24 h (or the 60 s default), never a panic.
    #[test]
    fn no_hermes_dispatch_interval_panics(value in prop_oneof![
        yaml_number(),
        "[a-z0-9 .+-]{0,12}".prop_map(|s| format!("'{s}'")),
    ]) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            format!("kanban:\n  dispatch_interval_seconds: {value}\n"),
        ).unwrap();
        let (interval, stall) = kanban_watchdog::heartbeat::dispatcher_timing(
            &DispatcherConfig::default(),
            dir.path(),
        );
        prop_assert!(interval >= Duration::from_secs(1), "{}: {:?}", value, interval);
        prop_assert!(interval <= Duration::from_secs(86_400), "{}: {:?}", value, interval);
        prop_assert!(stall >= Duration::from_secs(90) && stall <= Duration::from_secs(3 * 86_400));
    }

    /// The numbers the shim takes from the dispatcher's environment.
    #[test]
    fn no_number_in_the_environment_panics(run_id in "\\PC{0,30}", other in "[0-9eE.+-]{0,25}") {
        let ctx = exit_record::TaskContext::from_env(|k| match k {
            "HERMES_KANBAN_RUN_ID" => Some(run_id.clone()),
            "HERMES_KANBAN_TASK" => Some(other.clone()),
            _ => None,
        });
        if let Some(id) = ctx.run_id {
            prop_assert_eq!(Some(id), run_id.trim().parse::<i64>().ok());
        }
    }
}
