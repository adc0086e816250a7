//! `kanban-watchdog status` against the real binary: from a saved state
//! file, from a (stand-in) running daemon, and with neither. Also checks
//! the deployment files in `config/` that describe the same daemon.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;

use exit_record::health::HealthState;
use hermes_board::Kind;
use kanban_watchdog::alerts::Severity;
use kanban_watchdog::restart::RestartResult;
use kanban_watchdog::state::PersistedState;
use kanban_watchdog::status::{
    Counters, DispatchState, DispatcherStatus, IncidentStatus, ParkedStatus, ProviderStatus,
    RestartStatus, Status,
};

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn sample_status(pid: u32) -> Status {
    let now = now();
    Status {
        version: "0.1.0".into(),
        generated_at: now,
        started_at: now - 7200,
        pid,
        dry_run: false,
        board: "/home/op/.hermes/kanban.db".into(),
        board_info: None,
        board_problem: None,
        record_dir: "/home/op/.local/state/kanban-watchdog/records".into(),
        boards: Vec::new(),
        dispatcher: DispatcherStatus {
            state: DispatchState::Ok.into(),
            stalled: false,
            reason: None,
            last_progress_at: Some(now - 12),
            next_cycle_at: Some(now + 48),
            interval_s: 60.0,
            stall_after_s: 180.0,
            ready_tasks: 3,
            waiting_since: Some(now - 20),
            gateway_pid: Some(4242),
            gateway_up: Some(true),
        },
        providers: vec![
            ProviderStatus {
                name: "openai".into(),
                state: HealthState::Unhealthy.into(),
                since: now - 48,
                until: Some(now + 252),
                class: Some("rate_limit".into()),
                reason: Some("HTTP 429 from openai".into()),
            },
            ProviderStatus {
                name: "xai-oauth".into(),
                state: HealthState::Unhealthy.into(),
                since: now - 600,
                until: None,
                class: Some("auth_expired".into()),
                reason: Some("xAI OAuth state is missing access_token".into()),
            },
        ],
        parked: vec![
            ParkedStatus {
                board: "default".into(),
                task: "t_rate".into(),
                kind: Kind::Parked.into(),
                due_at: Some(now + 180),
                provider: Some("openai".into()),
                reason: "rate limited; retry 1".into(),
            },
            ParkedStatus {
                board: "default".into(),
                task: "t_auth".into(),
                kind: Kind::Held.into(),
                due_at: None,
                provider: Some("xai-oauth".into()),
                reason: "provider unhealthy".into(),
            },
        ],
        restarts: vec![RestartStatus {
            at: now - 900,
            result: RestartResult::Recovered.into(),
            detail: "progress resumed".into(),
        }],
        incidents: vec![IncidentStatus {
            key: "provider_unhealthy:xai-oauth".into(),
            severity: Severity::Warning.into(),
            since: now - 600,
            summary: "provider xai-oauth marked unhealthy".into(),
        }],
        counters: Counters {
            records_handled: 7,
            records_quarantined: 1,
            board_writes: [("park".to_string(), 2), ("release".to_string(), 1)]
                .into_iter()
                .collect(),
            alerts_sent: 4,
            ..Counters::default()
        },
    }
}

fn status_cmd(state_dir: &Path, json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kanban-watchdog"));
    cmd.arg("status").arg("--state-dir").arg(state_dir);
    if json {
        cmd.arg("--json");
    }
    cmd.env_remove("KANBAN_WATCHDOG_CONFIG")
        .env("TZ", "UTC")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run kanban-watchdog status")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn parse_json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "status failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

fn save_state(dir: &Path, status: &Status) {
    let mut state = PersistedState {
        last_status: Some(status.clone()),
        ..PersistedState::default()
    };
    state.save(&dir.join("state.json")).expect("save state");
}

/// Answers `n` requests with `body`, returning the request lines it saw.
fn serve(n: usize, body: String) -> (String, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..n {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            reader.read_line(&mut request_line).expect("read");
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).expect("read") == 0 || header == "\r\n" {
                    break;
                }
            }
            seen.push(request_line.trim_end().to_string());
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(resp.as_bytes()).expect("write");
        }
        seen
    });
    (addr, handle)
}

#[test]
fn status_from_saved_state_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = sample_status(111);
    save_state(dir.path(), &status);

    let doc = parse_json(&status_cmd(dir.path(), true));
    assert_eq!(doc["source_kind"], "saved_state");
    let source = doc["source"].as_str().expect("source");
    assert!(source.starts_with("saved state from "), "{source}");
    assert!(source.contains("daemon not reachable: no "), "{source}");
    assert!(source.contains("http.addr"), "{source}");
    let back: Status = serde_json::from_value(doc["status"].clone()).expect("a Status");
    assert_eq!(back, status);

    let out = status_cmd(dir.path(), false);
    assert!(out.status.success());
    let text = stdout(&out);
    for want in [
        "source: saved state from ",
        " UTC, ",
        "DISPATCHER  ok",
        "last progress 12s ago",
        "ready tasks    3",
        "gateway        pid 4242, up",
        "unhealthy (auth_expired), until re-auth",
        "when xai-oauth heals",
        "t_rate",
        "RESTARTS (1)",
        "INCIDENTS (1 open)",
        "records handled 7, quarantined 1",
        "board writes park 2, release 1",
        "alerts sent 4, failed 0",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // Times left are counted from now; allow for a slow test machine.
    assert!(
        ["4m12s left", "4m11s left", "4m10s left"]
            .iter()
            .any(|w| text.contains(w)),
        "{text}"
    );
    assert!(
        ["in 3m", "in 2m59s", "in 2m58s"]
            .iter()
            .any(|w| text.contains(w)),
        "{text}"
    );
}

#[test]
fn status_from_the_running_daemon_wins_over_saved_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    save_state(dir.path(), &sample_status(111));
    let live = sample_status(222);
    let body = serde_json::to_string_pretty(&live).expect("json");
    let (addr, server) = serve(2, body);
    std::fs::write(dir.path().join("http.addr"), &addr).expect("write http.addr");

    let doc = parse_json(&status_cmd(dir.path(), true));
    assert_eq!(doc["source_kind"], "daemon");
    assert_eq!(doc["source"], format!("daemon at http://{addr}"));
    assert_eq!(doc["status"]["pid"], 222);
    let back: Status = serde_json::from_value(doc["status"].clone()).expect("a Status");
    assert_eq!(back, live);

    let out = status_cmd(dir.path(), false);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("source: daemon at http://{addr}\n")),
        "{text}"
    );
    assert!(text.contains("watchdog 0.1.0, pid 222"), "{text}");

    let seen = server.join().expect("server thread");
    assert_eq!(seen, vec!["GET /status HTTP/1.1"; 2]);
}

#[test]
fn a_dead_daemon_falls_back_and_names_the_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    save_state(dir.path(), &sample_status(111));
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    std::fs::write(dir.path().join("http.addr"), format!("127.0.0.1:{port}\n")).expect("write");
    let doc = parse_json(&status_cmd(dir.path(), true));
    assert_eq!(doc["source_kind"], "saved_state");
    let why = doc["daemon_error"].as_str().expect("daemon_error");
    assert!(
        why.contains(&format!("GET http://127.0.0.1:{port}/status")),
        "{why}"
    );
    assert_eq!(doc["status"]["pid"], 111);
}

#[test]
fn a_server_that_is_not_the_daemon_is_not_believed() {
    let dir = tempfile::tempdir().expect("tempdir");
    save_state(dir.path(), &sample_status(111));
    let (addr, server) = serve(1, "{\"hello\": 1}".into());
    std::fs::write(dir.path().join("http.addr"), &addr).expect("write http.addr");
    let doc = parse_json(&status_cmd(dir.path(), true));
    assert_eq!(doc["source_kind"], "saved_state");
    let why = doc["daemon_error"].as_str().expect("daemon_error");
    assert!(why.contains("not with a watchdog status"), "{why}");
    server.join().expect("server thread");
}

#[test]
fn no_daemon_and_no_state_exits_1_naming_the_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    for json in [true, false] {
        let out = status_cmd(dir.path(), json);
        assert_eq!(out.status.code(), Some(1), "json={json}");
        assert!(out.stdout.is_empty(), "{}", stdout(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no status available"), "{err}");
        let addr = dir.path().join("http.addr");
        let state = dir.path().join("state.json");
        assert!(err.contains(&addr.display().to_string()), "{err}");
        assert!(err.contains(&state.display().to_string()), "{err}");
    }
}

#[test]
fn a_state_file_without_a_snapshot_is_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    PersistedState::default()
        .save(&dir.path().join("state.json"))
        .expect("save");
    let out = status_cmd(dir.path(), false);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no status snapshot yet"), "{err}");
}

#[test]
fn a_corrupt_state_file_is_reported_and_left_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("state.json");
    std::fs::write(&file, "{not json").expect("write");
    let out = status_cmd(dir.path(), true);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a valid state file"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("still there"),
        "{not json"
    );
}

// ----- deployment files in config/ ------------------------------------------

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn read_repo_file(rel: &str) -> String {
    let path = repo_file(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every metric family the daemon registers, by exposition name
/// (counters with `_total`).
fn exported_metric_names() -> Vec<String> {
    use kanban_watchdog::metrics::{
        BoardLabels, EventLabels, KindLabels, ProviderLabels, ResultLabels,
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let m = kanban_watchdog::metrics::Metrics::default();
    m.register(&mut registry);
    // Families without a member are not encoded: give each one.
    let _ = m.restarts.get_or_create(&ResultLabels {
        result: "limited".into(),
    });
    let _ = m.provider_unhealthy.get_or_create(&ProviderLabels {
        provider: "p".into(),
        reason: "r".into(),
    });
    let _ = m
        .board_writes
        .get_or_create(&KindLabels { kind: "k".into() });
    let _ = m
        .log_lines
        .get_or_create(&EventLabels { event: "e".into() });
    let board = BoardLabels {
        board: "default".into(),
    };
    let _ = m.dispatcher_last_progress.get_or_create(&board);
    let _ = m.dispatcher_next_cycle.get_or_create(&board);
    let _ = m.dispatcher_stalled.get_or_create(&board);
    let _ = m.ready_tasks.get_or_create(&board);
    let _ = m.oldest_ready_age.get_or_create(&board);
    let _ = m.parked_tasks.get_or_create(&board);
    let text = kanban_watchdog::metrics::encode(&registry);
    let mut names = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            names.push(if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            });
        }
    }
    names
}

#[test]
fn prometheus_alerts_parse_and_use_real_metric_names() {
    let text = read_repo_file("config/prometheus-alerts.yml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
    let groups = doc["groups"].as_sequence().expect("groups");
    let exported = exported_metric_names();
    assert!(
        exported.contains(&"kanban_watchdog_restarts_total".to_string()),
        "{exported:?}"
    );
    let metric = regex::Regex::new(r"kanban_watchdog_[a-z_]+").expect("regex");
    let mut alerts = Vec::new();
    for group in groups {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name").to_string();
            let expr = rule["expr"].as_str().expect("expr");
            for m in metric.find_iter(expr) {
                assert!(
                    exported.iter().any(|e| e == m.as_str()),
                    "{name}: {} is not a metric the daemon exports ({exported:?})",
                    m.as_str()
                );
            }
            for key in ["summary", "description"] {
                assert!(
                    rule["annotations"][key]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{name}: no {key}"
                );
            }
            assert!(rule["labels"]["severity"].as_str().is_some(), "{name}");
            alerts.push(name);
        }
    }
    for want in [
        "KanbanDispatcherStalled",
        "KanbanProviderUnhealthyTooLong",
        "KanbanRestartLimitHit",
        "KanbanRetryBudgetExhausted",
        "KanbanAlertDeliveryFailing",
        "KanbanWatchdogAbsent",
    ] {
        assert!(alerts.iter().any(|a| a == want), "missing {want}");
    }
}

#[test]
fn systemd_unit_keepalive_fits_the_check_interval() {
    let unit = read_repo_file("config/kanban-watchdog.service");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
            .trim()
            .to_string()
    };
    assert_eq!(value("Type"), "notify");
    assert_eq!(value("Restart"), "on-failure");
    assert!(value("ExecStart").contains(" run --config "));
    let watchdog = kanban_watchdog::config::parse_duration(&value("WatchdogSec"))
        .expect("WatchdogSec is a duration");
    let check_every = kanban_watchdog::config::Config::default()
        .dispatcher
        .check_every;
    assert!(
        check_every.0 * 2 < watchdog.0,
        "check_every {check_every} must be under half of WatchdogSec {watchdog}"
    );
}

#[test]
fn sidecar_compose_parses_and_binds_loopback_only() {
    let text = read_repo_file("config/sidecar/compose.yaml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
    let services = doc["services"].as_mapping().expect("services");
    assert!(services.len() >= 2, "gateway and watchdog");
    for (name, svc) in services {
        for port in svc["ports"].as_sequence().into_iter().flatten() {
            let p = port.as_str().unwrap_or_default();
            assert!(p.starts_with("127.0.0.1:"), "{name:?} publishes {p}");
        }
    }
    // Its watchdog config is valid and matches the volumes.
    let cfg = kanban_watchdog::config::Config::load(&repo_file("config/sidecar/watchdog.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.record_dir.as_deref(), Some(Path::new("/records")));
    assert_eq!(cfg.state_dir.as_deref(), Some(Path::new("/state")));
    assert_eq!(cfg.hermes_home.as_deref(), Some(Path::new("/hermes")));
    assert!(text.contains("watchdog-state:/state"));
    assert!(text.contains("records:/records"));
    assert!(text.contains("hermes-home:/hermes"));
}
