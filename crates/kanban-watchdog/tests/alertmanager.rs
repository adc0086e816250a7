//! Issue 17: Alertmanager as an alert sink, against the real `alertmanager`
//! (Debian's `prometheus-alertmanager` package) on loopback, clustering off.
//!
//! The watchdog posts its own alerts to Alertmanager's v2 API; the test
//! reads Alertmanager's v2 API back (and what Alertmanager notifies a
//! webhook receiver of, with `send_resolved`): the alerts are visible with
//! their labels, one alert per incident (an escalation from warning to
//! critical replaces the warning alert), kept firing by re-posts past their
//! `endsAt`, resolved when the incident ends, and resolved by Alertmanager
//! itself when the watchdog dies and re-posts stop.
//!
//! Without the program: a failure under CI=true, "SKIPPED" elsewhere. The
//! delivery-failure test needs no Alertmanager.

mod common;
mod real_programs;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hermes_board::testkit;
use real_programs::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

struct Alertmanager {
    proc: Proc,
    url: String,
    /// What Alertmanager notified its webhook receiver of.
    notified: Arc<Mutex<Vec<Value>>>,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    fn start(bin: &Path) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let (hook, notified) = test_support::webhook_receiver().unwrap();
        std::fs::write(
            dir.path().join("alertmanager.yml"),
            format!(
                "route:\n  receiver: hook\n  group_by: [alertname, provider]\n  group_wait: 200ms\n  \
                 group_interval: 1s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: hook\n    webhook_configs:\n      - url: \"{hook}\"\n        send_resolved: true\n"
            ),
        )
        .unwrap();
        let data = dir.path().join("data");
        let (proc, port) = start_server("alertmanager", bin, dir.path(), "/-/ready", |port| {
            vec![
                format!(
                    "--config.file={}",
                    dir.path().join("alertmanager.yml").display()
                ),
                format!("--storage.path={}", data.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                // No gossip listener: no cluster, no port beyond the API.
                "--cluster.listen-address=".into(),
                "--log.level=warn".into(),
            ]
        });
        Alertmanager {
            proc,
            url: format!("http://127.0.0.1:{port}"),
            notified,
            _dir: dir,
        }
    }

    /// Active alerts (not resolved) named `name`, from the v2 API.
    fn alerts(&self, name: &str) -> Vec<Value> {
        get_json(&format!("{}/api/v2/alerts", self.url))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .collect()
    }

    /// Notifications for `name`: (status of each alert in it).
    fn notifications(&self, name: &str) -> Vec<Vec<(String, Value)>> {
        self.notified
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n["groupLabels"]["alertname"] == name)
            .map(|n| {
                n["alerts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|a| {
                        (
                            a["status"].as_str().unwrap_or("").to_string(),
                            a["labels"].clone(),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    fn context(&self) -> String {
        format!(
            "alerts: {}\nnotified: {:?}\n{}",
            get_json(&format!("{}/api/v2/alerts", self.url)).unwrap_or_default(),
            self.notified.lock().unwrap(),
            self.proc.tail()
        )
    }
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

fn hostname() -> String {
    nix::unistd::gethostname().unwrap().into_string().unwrap()
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{text}").unwrap();
}

const OAUTH_CRASH: &str = "2026-06-07 13:24:34,120 ERROR gateway.run: kanban dispatcher: tick failed on board default\n\
     RuntimeError: xAI OAuth state is missing access_token. Re-authenticate with `hermes model`.";

#[test]
fn alertmanager_shows_one_alert_per_incident_kept_firing_and_resolved_when_it_ends() {
    let Some(bin) = tool(
        &["alertmanager", "prometheus-alertmanager"],
        "prometheus-alertmanager",
    ) else {
        return;
    };
    let am = Alertmanager::start(&bin);
    let mut h = Harness::new();
    let log = h.home.join("logs/gateway.log");
    std::fs::write(&log, "").unwrap();
    // repeat_interval 1s: re-posts every second, endsAt 4 s ahead. A restart
    // that does not help, so the stall escalates to critical.
    h.write_config(&format!(
        "dispatcher: {{interval: 200ms, stall_after: 1s, check_every: 100ms}}\n\
         restart: {{enabled: true, command: [\"/bin/true\"], burst: 2, interval: 15m, \
         recovery_grace: 1s, backoff_initial: 200ms, backoff_max: 400ms}}\n\
         alerts: {{repeat_interval: 1s, alertmanager: {{url: \"{}\", timeout: 2s, retries: 1}}}}\n",
        am.url
    ));
    h.start();
    let conn = h.conn();
    testkit::add_task(&conn, "stuck", "coder", "ready").unwrap();

    // The stall: a warning alert, then (the restart did not help) critical.
    // At no time are there two alerts for the one incident.
    let mut fingerprints: BTreeMap<String, String> = BTreeMap::new();
    let started = Instant::now();
    let critical = poll(
        "a critical dispatcher_stalled alert",
        T,
        || am.context(),
        || {
            let active = am.alerts("dispatcher_stalled");
            assert!(
                active.len() <= 1,
                "two alerts for one incident: {active:#?}"
            );
            let a = active.first()?;
            fingerprints.insert(
                a["fingerprint"].as_str().unwrap().to_string(),
                a["labels"]["severity"].as_str().unwrap().to_string(),
            );
            (a["labels"]["severity"] == "critical").then(|| a.clone())
        },
    );
    eprintln!(
        "critical dispatcher_stalled in Alertmanager after {:?}",
        started.elapsed()
    );
    assert!(
        fingerprints.values().any(|s| s == "warning"),
        "the warning alert was seen first: {fingerprints:?}"
    );
    let labels = critical["labels"].as_object().unwrap();
    assert_eq!(labels["instance"], hostname().as_str());
    assert_eq!(labels["source"], "kanban-watchdog");
    assert_eq!(labels.len(), 4, "{labels:?}");
    assert_eq!(critical["status"]["state"], "active");
    assert!(
        critical["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("did not recover"),
        "{critical:#}"
    );
    let starts = ts(&critical["startsAt"]);
    let ends = ts(&critical["endsAt"]);
    assert!(ends > jiff::Timestamp::now(), "{critical:#}");
    assert!(
        ends.duration_since(starts) < jiff::SignedDuration::from_secs(60),
        "endsAt is a short resolve timeout ahead: {critical:#}"
    );
    // Re-posts keep it firing past its first endsAt (4 s), with one alert
    // and the same incident start.
    let first_ends = ends;
    std::thread::sleep(Duration::from_secs(6));
    let now_active = am.alerts("dispatcher_stalled");
    assert_eq!(now_active.len(), 1, "{}", am.context());
    assert_eq!(now_active[0]["fingerprint"], critical["fingerprint"]);
    assert!(ts(&now_active[0]["endsAt"]) > first_ends);
    assert_eq!(ts(&now_active[0]["startsAt"]), starts);
    // The restart limit is an incident of its own.
    poll(
        "dispatcher_restart_limit",
        T,
        || am.context(),
        || (am.alerts("dispatcher_restart_limit").len() == 1).then_some(()),
    );

    // A provider incident, labelled with the provider.
    append(&log, OAUTH_CRASH);
    let p = poll(
        "provider_unhealthy alert",
        T,
        || am.context(),
        || am.alerts("provider_unhealthy").first().cloned(),
    );
    assert_eq!(p["labels"]["provider"], "xai-oauth");
    assert_eq!(p["labels"]["severity"], "warning");

    // The dispatcher recovers: the stall and the limit alerts resolve.
    let mut gw = Command::new(WATCHDOG);
    gw.arg("fake-gateway")
        .arg("--board")
        .arg(&h.db)
        .arg("--log")
        .arg(&log)
        .arg("--pid-file")
        .arg(h.home.join("gateway.pid"))
        .args(["--interval-ms", "200"]);
    let _gw = Proc::spawn("fake-gateway", &mut gw, h.tmp.path().join("gw.out"));
    wait_until("stuck done", T, || {
        (h.status_of("stuck") == "done").then_some(())
    });
    let recovered = Instant::now();
    poll(
        "dispatcher alerts resolved",
        T,
        || am.context(),
        || {
            (am.alerts("dispatcher_stalled").is_empty()
                && am.alerts("dispatcher_restart_limit").is_empty())
            .then_some(())
        },
    );
    eprintln!(
        "resolved in Alertmanager {:?} after recovery",
        recovered.elapsed()
    );
    // Alertmanager told its receiver: firing, then resolved; never two
    // firing alerts for the one incident.
    poll(
        "a resolved notification",
        T,
        || am.context(),
        || {
            am.notifications("dispatcher_stalled")
                .iter()
                .any(|n| n.len() == 1 && n[0].0 == "resolved" && n[0].1["severity"] == "critical")
                .then_some(())
        },
    );
    for n in am.notifications("dispatcher_stalled") {
        let firing = n.iter().filter(|(s, _)| s == "firing").count();
        assert!(firing <= 1, "{n:?}");
    }
    assert!(!am.alerts("provider_unhealthy").is_empty());

    // The operator re-authenticates: the provider alert resolves.
    let out = Command::new(WATCHDOG)
        .args(["provider", "reset", "xai-oauth", "--config"])
        .arg(&h.config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    poll(
        "provider alert resolved",
        T,
        || am.context(),
        || am.alerts("provider_unhealthy").is_empty().then_some(()),
    );
    assert!(h.metric("kanban_watchdog_alerts_sent_total", &[]) >= 6.0);
    assert_eq!(h.metric("kanban_watchdog_alerts_failed_total", &[]), 0.0);

    // A watchdog that dies stops re-posting: Alertmanager resolves the
    // alert when its endsAt (4 s ahead) passes.
    append(&log, OAUTH_CRASH);
    poll(
        "provider alert again",
        T,
        || am.context(),
        || am.alerts("provider_unhealthy").first().cloned(),
    );
    h.kill();
    let killed = Instant::now();
    poll(
        "the dead watchdog's alert expired",
        Duration::from_secs(15),
        || am.context(),
        || am.alerts("provider_unhealthy").is_empty().then_some(()),
    );
    let took = killed.elapsed();
    eprintln!("expired in Alertmanager {took:?} after the watchdog was killed");
    assert!(took >= Duration::from_secs(1), "expired at once: {took:?}");
}

#[test]
fn an_unreachable_alertmanager_is_retried_counted_and_logged_without_its_url_path() {
    let mut h = Harness::new();
    let port = free_port(); // nothing listens there
    h.write_config(&format!(
        "alerts: {{alertmanager: {{url: \"http://user:secret@127.0.0.1:{port}/s3cr3t-prefix\", \
         timeout: 1s, retries: 1}}}}\n"
    ));
    h.start();
    let log = h.home.join("logs/gateway.log");
    append(&log, "");
    std::thread::sleep(Duration::from_millis(300));
    append(&log, OAUTH_CRASH);
    wait_until("a failed delivery counted", T, || {
        (h.metric("kanban_watchdog_alerts_failed_total", &[]) >= 1.0).then_some(())
    });
    let err = h.stderr();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("alertmanager post failed"))
        .collect();
    assert_eq!(lines.len(), 2, "one try and one retry:\n{err}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(&format!("http://127.0.0.1:{port}/…"))),
        "{err}"
    );
    assert!(!err.contains("s3cr3t") && !err.contains("secret"), "{err}");
}
