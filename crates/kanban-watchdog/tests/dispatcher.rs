//! Issue 5: the dispatcher heartbeat, stall detection, restarts with a
//! limit, alerts, and the gateway log — with a real gateway stand-in process
//! (`kanban-watchdog fake-gateway`) claiming tasks from a real board.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use hermes_board::testkit;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const T: Duration = Duration::from_secs(30);

fn gateway_argv(h: &Harness, replace: bool) -> Vec<String> {
    let mut argv = vec![
        WATCHDOG.to_string(),
        "fake-gateway".into(),
        "--board".into(),
        h.db.display().to_string(),
        "--log".into(),
        h.home.join("logs/gateway.log").display().to_string(),
        "--pid-file".into(),
        h.home.join("gateway.pid").display().to_string(),
        "--interval-ms".into(),
        "200".into(),
    ];
    if replace {
        argv.push("--replace".into());
    }
    argv
}

fn start_gateway(h: &Harness) -> Child {
    let argv = gateway_argv(h, false);
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("gateway.pid", T, || {
        std::fs::read_to_string(h.home.join("gateway.pid"))
            .ok()
            .filter(|t| t.contains(&child.id().to_string()))
    });
    child
}

fn yaml_list(argv: &[String]) -> String {
    format!(
        "[{}]",
        argv.iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn all_done(h: &Harness, ids: &[&str]) -> bool {
    ids.iter().all(|id| h.status_of(id) == "done")
}

#[test]
fn a_stalled_loop_is_detected_restarted_once_recovered_and_alerted_once() {
    let mut h = Harness::new();
    let hook = Webhook::start();
    let counter = h.tmp.path().join("restarts.count");
    // The restart command: count the call, then take over like --replace.
    let mut restart = vec![
        "sh".to_string(),
        "-c".into(),
        format!("echo x >> {}; exec \"$@\"", counter.display()),
        "restart".into(),
    ];
    restart.extend(gateway_argv(&h, true));
    h.write_config(&format!(
        "dispatcher: {{interval: 200ms, stall_after: 2s, check_every: 100ms}}\n\
         restart: {{enabled: true, command: {}, burst: 3, recovery_grace: 10s, backoff_initial: 1s}}\n\
         alerts: {{webhook: {{url: \"{}\"}}}}\n",
        yaml_list(&restart),
        hook.url
    ));
    h.start();
    let mut gw = start_gateway(&h);
    let conn = h.conn();
    testkit::add_task(&conn, "a", "coder", "ready").unwrap();
    wait_until("a claimed and done", T, || {
        all_done(&h, &["a"]).then_some(())
    });
    // Freeze the loop between ticks; the process stays alive.
    kill(Pid::from_raw(gw.id() as i32), Signal::SIGUSR1).unwrap();
    testkit::add_task(&conn, "b", "coder", "ready").unwrap();
    testkit::add_task(&conn, "c", "coder", "ready").unwrap();
    let stalled_at = std::time::Instant::now();
    let st = wait_until("stall detected", T, || {
        let s = h.status();
        (s["dispatcher"]["stalled"] == true).then_some(s)
    });
    let detection = stalled_at.elapsed();
    // stall_after (2 s) + one check tick (100 ms), with slack for the poll.
    assert!(
        detection < Duration::from_millis(3500),
        "detected after {detection:?}"
    );
    assert!(
        st["dispatcher"]["reason"]
            .as_str()
            .unwrap()
            .contains("is alive but silent")
    );
    wait_until("b and c claimed by the new gateway", T, || {
        all_done(&h, &["b", "c"]).then_some(())
    });
    wait_until("resolved alert", T, || {
        (!hook.alerts("dispatcher_stalled", "resolved").is_empty()).then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        1,
        "restarted once"
    );
    assert_eq!(hook.alerts("dispatcher_stalled", "firing").len(), 1);
    assert_eq!(hook.alerts("dispatcher_stalled", "resolved").len(), 1);
    assert_eq!(
        h.metric("kanban_watchdog_restarts_total", &[("result", "started")]),
        1.0
    );
    assert_eq!(
        h.metric("kanban_watchdog_restarts_total", &[("result", "recovered")]),
        1.0
    );
    assert_eq!(h.metric("kanban_watchdog_dispatcher_stalled", &[]), 0.0);
    wait_until("both alerts counted as sent", T, || {
        (h.metric("kanban_watchdog_alerts_sent_total", &[]) == 2.0).then_some(())
    });
    let _ = gw.kill();
    let _ = gw.wait();
}

#[test]
fn an_idle_board_with_a_silent_gateway_raises_nothing() {
    let mut h = Harness::new();
    let hook = Webhook::start();
    h.write_config(&format!(
        "dispatcher: {{interval: 200ms, stall_after: 1s, check_every: 100ms}}\n\
         restart: {{enabled: true, command: [\"/bin/false\"]}}\n\
         alerts: {{webhook: {{url: \"{}\"}}}}\n",
        hook.url
    ));
    h.start();
    let mut gw = start_gateway(&h);
    kill(Pid::from_raw(gw.id() as i32), Signal::SIGUSR1).unwrap();
    // Watch four stall windows pass with nothing ready.
    let first = h.status()["generated_at"].as_i64().unwrap();
    wait_until("four stall windows", T, || {
        (h.status()["generated_at"].as_i64().unwrap() >= first + 4).then_some(())
    });
    let st = h.status();
    assert_eq!(st["dispatcher"]["state"], "idle");
    assert_eq!(st["dispatcher"]["stalled"], false);
    assert!(hook.got.lock().unwrap().is_empty());
    assert_eq!(
        h.metric("kanban_watchdog_restarts_total", &[("result", "started")]),
        0.0
    );
    let _ = gw.kill();
    let _ = gw.wait();
}

#[test]
fn a_restart_storm_is_capped_by_the_limit() {
    let mut h = Harness::new();
    let hook = Webhook::start();
    let counter = h.tmp.path().join("restarts.count");
    // A restart that does not help: the loop stays dead.
    h.write_config(&format!(
        "dispatcher: {{interval: 200ms, stall_after: 1s, check_every: 100ms}}\n\
         restart: {{enabled: true, command: [\"sh\", \"-c\", \"echo x >> {}\"], burst: 2, interval: 15m, \
         recovery_grace: 1s, backoff_initial: 200ms, backoff_max: 400ms}}\n\
         alerts: {{webhook: {{url: \"{}\"}}}}\n",
        counter.display(),
        hook.url
    ));
    h.start();
    let conn = h.conn();
    testkit::add_task(&conn, "stuck", "coder", "ready").unwrap();
    wait_until("the limit alert", T, || {
        (!hook.alerts("dispatcher_restart_limit", "firing").is_empty()).then_some(())
    });
    // Give it several more ticks: no further restart may happen.
    let seen = h.status()["generated_at"].as_i64().unwrap();
    wait_until("two more seconds of ticks", T, || {
        (h.status()["generated_at"].as_i64().unwrap() >= seen + 2).then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        2
    );
    assert_eq!(
        h.metric("kanban_watchdog_restarts_total", &[("result", "started")]),
        2.0
    );
    assert_eq!(
        h.metric("kanban_watchdog_restarts_total", &[("result", "limited")]),
        1.0
    );
    let limit = &hook.alerts("dispatcher_restart_limit", "firing")[0];
    assert_eq!(limit["severity"], "critical");
    assert!(
        limit["text"]
            .as_str()
            .unwrap()
            .contains("restart limit reached (2 in 900s)")
    );
    assert!(h.stderr().contains("ERROR"));
    // One alert when the stall began, one when it escalated — not one per tick.
    assert_eq!(hook.alerts("dispatcher_stalled", "firing").len(), 2);
    // The stall escalated after the restart did not help.
    assert!(
        hook.alerts("dispatcher_stalled", "firing")
            .iter()
            .any(|a| a["severity"] == "critical"
                && a["text"].as_str().unwrap().contains("did not recover"))
    );
}

fn append(path: &std::path::Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f.sync_all().unwrap();
}

fn activity_lines(from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            format!(
                "2026-06-07 13:24:34,{:03} INFO gateway.run: kanban dispatcher [default]: spawned={i} reclaimed=0 crashed=0 timed_out=0 promoted=0 auto_blocked=0",
                i % 1000
            )
        })
        .collect()
}

#[test]
fn the_log_rotates_by_rename_and_copytruncate_without_losing_or_doubling_a_line() {
    let mut h = Harness::new();
    h.write_config("dispatcher: {check_every: 100ms}\n");
    let log = h.home.join("logs/gateway.log");
    append(&log, &activity_lines(0, 5)); // before start: skipped (tail from the end)
    h.start();
    let count = |h: &Harness| {
        h.metric(
            "kanban_watchdog_gateway_log_lines_total",
            &[("event", "activity")],
        )
    };
    append(&log, &activity_lines(100, 50));
    wait_until("50 lines", T, || (count(&h) == 50.0).then_some(()));
    // Rename rotation (RotatingFileHandler): some lines land in the old file
    // after its rename, the rest in the new file.
    std::fs::rename(&log, h.home.join("logs/gateway.log.1")).unwrap();
    append(&h.home.join("logs/gateway.log.1"), &activity_lines(200, 7));
    append(&log, &activity_lines(300, 40));
    wait_until("97 lines", T, || (count(&h) == 97.0).then_some(()));
    // copytruncate (logrotate): copy, truncate in place, keep writing.
    append(&log, &activity_lines(400, 10));
    std::fs::copy(&log, h.home.join("logs/gateway.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    append(&log, &activity_lines(500, 30));
    wait_until("137 lines", T, || (count(&h) == 137.0).then_some(()));
    // Deletion and re-creation.
    std::fs::remove_file(&log).unwrap();
    append(&log, &activity_lines(600, 3));
    wait_until("140 lines", T, || (count(&h) == 140.0).then_some(()));
    // A restart resumes exactly where it stopped.
    h.stop();
    append(&log, &activity_lines(700, 8));
    h.start();
    wait_until("8 more after the restart", T, || {
        (count(&h) == 8.0).then_some(())
    });
    // Long and invalid-UTF-8 lines do not stop it.
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(&vec![b'x'; 200_000]).unwrap();
    f.write_all(b"\n\xff\xfe broken utf-8\n").unwrap();
    drop(f);
    append(&log, &activity_lines(800, 2));
    wait_until("2 more after junk", T, || (count(&h) == 10.0).then_some(()));
}

#[test]
fn the_seed_scenario_oauth_crash_line_marks_xai_unhealthy_and_other_work_keeps_flowing() {
    let mut h = Harness::new();
    h.write_config(
        "dispatcher: {interval: 200ms, stall_after: 3s, check_every: 100ms}\n\
         restart: {enabled: true, command: [\"/bin/true\"]}\n",
    );
    h.start();
    let mut gw = start_gateway(&h);
    let log = h.home.join("logs/gateway.log");
    append(
        &log,
        &[
            "2026-06-07 13:24:34,120 ERROR gateway.run: kanban dispatcher: tick failed on board default".into(),
            "Traceback (most recent call last):".into(),
            "RuntimeError: xAI OAuth state is missing access_token. Re-authenticate with `hermes model`.".into(),
        ],
    );
    wait_until("the seed WARN line", T, || {
        h.stderr()
            .lines()
            .find(|l| {
                l.contains("WARN")
                    && l.contains("provider xai-oauth marked unhealthy: ")
                    && l.ends_with("; team will use fallback chain until re-auth")
            })
            .map(str::to_string)
    });
    let conn = h.conn();
    testkit::add_task(&conn, "grok-task", "grok", "ready").unwrap();
    testkit::add_task(&conn, "codex-task", "coder", "ready").unwrap();
    wait_until("codex task claimed and done", T, || {
        (h.status_of("codex-task") == "done").then_some(())
    });
    // The xAI task is either held by us or was claimed just before; it is never blocked.
    let s = h.status_of("grok-task");
    assert!(s == "scheduled" || s == "done", "grok-task is {s}");
    assert_eq!(
        h.metric(
            "kanban_watchdog_provider_unhealthy",
            &[("provider", "xai-oauth"), ("reason", "auth_expired")]
        ),
        1.0
    );
    assert_eq!(
        h.status()["dispatcher"]["stalled"],
        false,
        "the dispatcher is kept alive"
    );
    let _ = gw.kill();
    let _ = gw.wait();
}
