//! Issue 17: the shipped Prometheus rules against the real Prometheus
//! (Debian's `prometheus` package: `promtool` and `prometheus`).
//!
//! * `promtool check rules` and `promtool test rules` on
//!   config/prometheus-alerts.yml and its unit tests;
//! * a real Prometheus on 127.0.0.1 scrapes a running watchdog every second
//!   and evaluates a copy of the shipped rules in which only the `for:`
//!   durations are shortened (2m, 2h and 5m become 3s; every other line is
//!   the shipped one, which the test checks). Its own HTTP API must show
//!   `KanbanDispatcherStalled` pending, then firing, then gone after the
//!   dispatcher recovers (with `KanbanRestartLimitHit` and
//!   `KanbanAlertDeliveryFailing` on the way), and the same for
//!   `KanbanProviderUnhealthyTooLong`, then `KanbanWatchdogAbsent` once the
//!   watchdog is killed.
//!
//! Without the programs: a failure under CI=true, "SKIPPED" elsewhere.

mod common;
mod real_programs;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hermes_board::testkit;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use real_programs::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
/// What the test copy of the rules uses for every `for:`.
const SHORT_FOR: &str = "3s";

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

fn shipped_rules() -> String {
    std::fs::read_to_string(config_dir().join("prometheus-alerts.yml")).unwrap()
}

/// The alert names defined in the shipped rules.
fn rule_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|s| s.trim().to_string())
        .collect()
}

/// The shipped rules with every `for:` set to [`SHORT_FOR`], and the
/// durations replaced. Nothing else may differ.
fn short_rules(dir: &Path) -> (PathBuf, Vec<String>) {
    let shipped = shipped_rules();
    let mut replaced = Vec::new();
    let copy: Vec<String> = shipped
        .lines()
        .map(|l| {
            let indent = &l[..l.len() - l.trim_start().len()];
            match l.trim().strip_prefix("for: ") {
                Some(d) => {
                    replaced.push(d.to_string());
                    format!("{indent}for: {SHORT_FOR}")
                }
                None => l.to_string(),
            }
        })
        .collect();
    let diff: Vec<(&str, &String)> = shipped.lines().zip(&copy).filter(|(a, b)| a != b).collect();
    assert_eq!(diff.len(), replaced.len());
    assert!(
        diff.iter()
            .all(|(a, b)| a.trim().starts_with("for: ") && b.trim().starts_with("for: ")),
        "{diff:?}"
    );
    let path = dir.join("kanban-watchdog-alerts.short.yml");
    std::fs::write(&path, copy.join("\n") + "\n").unwrap();
    (path, replaced)
}

fn promtool(promtool: &Path, args: &[&str], dir: &Path) -> String {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {args:?} failed ({}):\n{text}",
        out.status
    );
    text
}

#[test]
fn promtool_checks_and_unit_tests_the_shipped_rules() {
    let Some(pt) = tool(&["promtool"], "prometheus") else {
        return;
    };
    let dir = config_dir();
    let n = rule_names(&shipped_rules()).len();
    assert!(n >= 6, "{n} rules");
    let out = promtool(&pt, &["check", "rules", "prometheus-alerts.yml"], &dir);
    assert!(out.contains(&format!("SUCCESS: {n} rules found")), "{out}");
    let out = promtool(&pt, &["test", "rules", "prometheus-alerts.test.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    // The copy the end-to-end tests load is valid too.
    let tmp = tempfile::tempdir().unwrap();
    let (copy, replaced) = short_rules(tmp.path());
    assert_eq!(replaced, ["2m", "2h", "5m"], "the shipped for: durations");
    let out = promtool(&pt, &["check", "rules", copy.to_str().unwrap()], tmp.path());
    assert!(out.contains(&format!("SUCCESS: {n} rules found")), "{out}");
}

/// A real Prometheus scraping `target` every second and evaluating the
/// short copy of the shipped rules every second.
struct Prometheus {
    proc: Proc,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(bin: &Path, target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let (rules, _) = short_rules(dir.path());
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: kanban-watchdog\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules = rules.display()
            ),
        )
        .unwrap();
        let data = dir.path().join("data");
        let (proc, port) = start_server("prometheus", bin, dir.path(), "/-/ready", |port| {
            vec![
                format!(
                    "--config.file={}",
                    dir.path().join("prometheus.yml").display()
                ),
                format!("--storage.tsdb.path={}", data.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--log.level=warn".into(),
            ]
        });
        Prometheus {
            proc,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// Active alerts (pending or firing) named `name`.
    fn alerts(&self, name: &str) -> Vec<Value> {
        get_json(&format!("{}/api/v1/alerts", self.url))
            .map(|v| {
                v["data"]["alerts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|a| a["labels"]["alertname"] == name)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The rule's state in /api/v1/rules: inactive, pending or firing.
    fn rule_state(&self, name: &str) -> Option<String> {
        let v = get_json(&format!("{}/api/v1/rules?type=alert", self.url))?;
        v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .find(|r| r["name"] == name)
            .and_then(|r| r["state"].as_str().map(str::to_string))
    }

    fn query(&self, q: &str) -> Vec<Value> {
        let url = format!(
            "{}/api/v1/query?query={}",
            self.url,
            q.bytes()
                .map(|b| if b.is_ascii_alphanumeric() || b == b'_' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                })
                .collect::<String>()
        );
        get_json(&url)
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    fn context(&self) -> String {
        format!(
            "alerts: {}\n{}",
            get_json(&format!("{}/api/v1/alerts", self.url)).unwrap_or_default(),
            self.proc.tail()
        )
    }

    fn wait_scraping(&self) {
        poll(
            "Prometheus scraping the watchdog (up == 1)",
            T,
            || self.context(),
            || {
                self.query("up{job=\"kanban-watchdog\"} == 1")
                    .first()
                    .map(|_| ())
            },
        );
    }

    /// Waits until the alert `name` is firing, having been seen pending
    /// first (evaluated every second with `for: 3s`, it is pending for about
    /// three seconds). Returns the firing alert and how long it took.
    fn pending_then_firing(&self, name: &str) -> (Value, Duration) {
        let start = Instant::now();
        let states = std::cell::RefCell::new(Vec::<String>::new());
        let alert = poll(
            &format!("{name} firing"),
            T,
            || format!("states seen: {:?}\n{}", states.borrow(), self.context()),
            || {
                let a = self.alerts(name);
                let state = a
                    .first()
                    .and_then(|a| a["state"].as_str())
                    .map(str::to_string);
                let mut seen = states.borrow_mut();
                if let Some(s) = &state
                    && seen.last() != Some(s)
                {
                    seen.push(s.clone());
                }
                (state.as_deref() == Some("firing")).then(|| a[0].clone())
            },
        );
        assert_eq!(
            states.into_inner(),
            ["pending", "firing"],
            "{name}: states in order"
        );
        (alert, start.elapsed())
    }

    fn resolved(&self, name: &str) -> Duration {
        let start = Instant::now();
        poll(
            &format!("{name} resolved"),
            T,
            || self.context(),
            || {
                (self.alerts(name).is_empty()
                    && self.rule_state(name).as_deref() == Some("inactive"))
                .then_some(())
            },
        );
        start.elapsed()
    }
}

fn gateway(h: &Harness, replace: bool) -> Proc {
    let mut cmd = Command::new(WATCHDOG);
    cmd.arg("fake-gateway")
        .arg("--board")
        .arg(&h.db)
        .arg("--log")
        .arg(h.home.join("logs/gateway.log"))
        .arg("--pid-file")
        .arg(h.home.join("gateway.pid"))
        .args(["--interval-ms", "200"]);
    if replace {
        cmd.arg("--replace");
    }
    let p = Proc::spawn("fake-gateway", &mut cmd, h.tmp.path().join("gateway.out"));
    let pid = p.child.id().to_string();
    wait_until("gateway.pid", T, || {
        std::fs::read_to_string(h.home.join("gateway.pid"))
            .ok()
            .filter(|t| t.contains(&pid))
    });
    p
}

#[test]
fn a_real_prometheus_sees_a_stall_go_pending_then_firing_then_resolve() {
    let Some(bin) = tool(&["prometheus"], "prometheus") else {
        return;
    };
    let mut h = Harness::new();
    let counter = h.tmp.path().join("restarts.count");
    // A restart that does not help (the stall outlives it and the limit is
    // hit), and a webhook nobody listens on (delivery fails).
    h.write_config(&format!(
        "dispatcher: {{interval: 200ms, stall_after: 1s, check_every: 100ms}}\n\
         restart: {{enabled: true, command: [\"sh\", \"-c\", \"echo x >> {}\"], burst: 1, interval: 15m, \
         recovery_grace: 1s, backoff_initial: 200ms, backoff_max: 400ms}}\n\
         alerts: {{webhook: {{url: \"http://127.0.0.1:{}/hook\", timeout: 1s, retries: 0}}}}\n",
        counter.display(),
        free_port()
    ));
    h.start();
    let addr = h.addr();
    let frozen = gateway(&h, false);
    let conn = h.conn();
    testkit::add_task(&conn, "a", "coder", "ready").unwrap();
    wait_until("a done", T, || (h.status_of("a") == "done").then_some(()));

    let prom = Prometheus::start(&bin, &addr);
    prom.wait_scraping();
    assert!(prom.alerts("KanbanDispatcherStalled").is_empty());

    // Freeze the dispatcher loop (the process lives on) with work waiting.
    kill(Pid::from_raw(frozen.child.id() as i32), Signal::SIGUSR1).unwrap();
    testkit::add_task(&conn, "b", "coder", "ready").unwrap();
    testkit::add_task(&conn, "c", "coder", "ready").unwrap();
    let (stalled, took) = prom.pending_then_firing("KanbanDispatcherStalled");
    eprintln!("KanbanDispatcherStalled firing {took:?} after the freeze");
    assert_eq!(stalled["labels"]["severity"], "critical");
    assert_eq!(stalled["labels"]["job"], "kanban-watchdog");
    assert_eq!(stalled["labels"]["instance"], addr.as_str());
    assert_eq!(
        stalled["annotations"]["summary"],
        format!("Hermes kanban dispatcher stalled on {addr}")
    );
    // The restart did not help and the limit was hit; the stall alert's
    // webhook went nowhere.
    let limit = poll(
        "KanbanRestartLimitHit firing",
        T,
        || prom.context(),
        || {
            prom.alerts("KanbanRestartLimitHit")
                .into_iter()
                .find(|a| a["state"] == "firing")
        },
    );
    assert_eq!(limit["labels"]["result"], "limited");
    poll(
        "KanbanAlertDeliveryFailing firing",
        T,
        || prom.context(),
        || {
            prom.alerts("KanbanAlertDeliveryFailing")
                .into_iter()
                .find(|a| a["state"] == "firing")
        },
    );

    // Recovery: a new gateway takes over (like `hermes gateway run --replace`).
    let _new = gateway(&h, true);
    wait_until("b and c done", T, || {
        (h.status_of("b") == "done" && h.status_of("c") == "done").then_some(())
    });
    let took = prom.resolved("KanbanDispatcherStalled");
    eprintln!("KanbanDispatcherStalled resolved {took:?} after recovery");
    assert_eq!(h.metric("kanban_watchdog_dispatcher_stalled", &[]), 0.0);
    drop(frozen);
}

#[test]
fn a_real_prometheus_sees_a_provider_unhealthy_too_long_then_recovered_then_the_watchdog_absent() {
    let Some(bin) = tool(&["prometheus"], "prometheus") else {
        return;
    };
    let mut h = Harness::new();
    let log = h.home.join("logs/gateway.log");
    std::fs::write(&log, "").unwrap();
    h.start();
    let addr = h.addr();
    let prom = Prometheus::start(&bin, &addr);
    prom.wait_scraping();

    // The seed incident: the xAI OAuth crash text in the gateway log.
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(
        f,
        "2026-06-07 13:24:34,120 ERROR gateway.run: kanban dispatcher: tick failed on board default\n\
         RuntimeError: xAI OAuth state is missing access_token. Re-authenticate with `hermes model`."
    )
    .unwrap();
    drop(f);
    let (alert, took) = prom.pending_then_firing("KanbanProviderUnhealthyTooLong");
    eprintln!("KanbanProviderUnhealthyTooLong firing {took:?} after the log line");
    assert_eq!(alert["labels"]["provider"], "xai-oauth");
    assert_eq!(alert["labels"]["reason"], "auth_expired");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(
        alert["annotations"]["summary"],
        "Provider xai-oauth unhealthy for over 2h (auth_expired)"
    );

    // Recovery: the operator re-authenticated and resets the provider.
    let out = Command::new(WATCHDOG)
        .args(["provider", "reset", "xai-oauth", "--config"])
        .arg(&h.config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let took = prom.resolved("KanbanProviderUnhealthyTooLong");
    eprintln!("KanbanProviderUnhealthyTooLong resolved {took:?} after the reset");
    assert!(prom.alerts("KanbanWatchdogAbsent").is_empty());

    // The watchdog dies: nothing scrapes up == 1 any more.
    h.kill();
    let (absent, took) = prom.pending_then_firing("KanbanWatchdogAbsent");
    eprintln!("KanbanWatchdogAbsent firing {took:?} after the kill");
    assert_eq!(absent["labels"]["severity"], "critical");
}
