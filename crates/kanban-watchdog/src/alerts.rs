//! Alerts: one per incident, a reminder every `repeat_interval`, and a
//! resolved message when it clears (as Alertmanager groups them). A WARN
//! (or ERROR) log line always; optional sinks — a webhook (JSON POST with a
//! Slack/Discord-compatible `text`) and a command (argv, the alert as JSON
//! on stdin) — are served by a delivery thread behind a bounded queue, so
//! a slow receiver never blocks the watchdog. Alertmanager (its v2 API, see
//! [`crate::alertmanager`]) has a thread and queue of its own.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wait_timeout::ChildExt;

use crate::config::AlertsConfig;
use crate::metrics::Metrics;
use crate::status::IncidentStatus;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    /// Its name, as serialized (`warning`, `critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl AsRef<str> for Severity {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// What is delivered to every sink.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    /// Slack/Discord-compatible one-line text.
    pub text: String,
    /// Discord's field name for the same text.
    pub content: String,
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// True for a reminder of an incident already reported.
    pub repeat: bool,
    /// The incident key, e.g. `dispatcher_stalled` or `provider_unhealthy:xai-oauth`.
    pub alert: String,
    pub severity: Severity,
    pub summary: String,
    pub started_at: i64,
    pub sent_at: i64,
    pub host: String,
    pub source: &'static str,
    /// Not a new message: an open incident handed to a new Alertmanager
    /// sink after a reload, so it keeps re-posting it.
    #[serde(skip)]
    pub refresh: bool,
}

struct Incident {
    severity: Severity,
    summary: String,
    started_at: i64,
    last_sent: Instant,
}

/// The incidents currently open, and the queue to the sinks.
pub struct Alerts {
    open: BTreeMap<String, Incident>,
    repeat: Duration,
    queue: Option<SyncSender<Alert>>,
    alertmanager: Option<SyncSender<Alert>>,
    metrics: Arc<Metrics>,
    host: String,
}

impl Alerts {
    pub fn new(cfg: &AlertsConfig, metrics: Arc<Metrics>) -> Alerts {
        Alerts {
            open: BTreeMap::new(),
            repeat: cfg.repeat_interval.0,
            queue: start_sinks(cfg, &metrics),
            alertmanager: start_alertmanager(cfg, &metrics),
            metrics,
            host: hostname(),
        }
    }

    /// New sinks and repeat interval (a reload); open incidents stay open,
    /// so their resolved message still goes out once, and a (new)
    /// Alertmanager sink is handed them to keep them firing there.
    pub fn reconfigure(&mut self, cfg: &AlertsConfig) {
        self.repeat = cfg.repeat_interval.0;
        self.queue = start_sinks(cfg, &self.metrics);
        self.alertmanager = start_alertmanager(cfg, &self.metrics);
        if let Some(am) = &self.alertmanager {
            for (key, inc) in &self.open {
                let mut alert = self.alert(
                    key,
                    "firing",
                    true,
                    inc.severity,
                    &inc.summary,
                    inc.started_at,
                );
                alert.refresh = true;
                let _ = am.try_send(alert);
            }
        }
    }

    /// Opens (or keeps open) an incident. Returns true when an alert went out.
    pub fn fire(&mut self, key: &str, severity: Severity, summary: &str) -> bool {
        let now = Instant::now();
        // An incident keeps its highest severity: a reminder of a critical
        // incident is critical even when the latest check said warning.
        let (repeat, started_at, severity) = match self.open.get_mut(key) {
            // Within the repeat interval an open incident speaks again only
            // when it escalates; its summary is kept up to date either way.
            Some(inc) if now.duration_since(inc.last_sent) < self.repeat => {
                inc.summary = summary.to_string();
                if severity <= inc.severity {
                    return false;
                }
                inc.severity = severity;
                inc.last_sent = now;
                (true, inc.started_at, severity)
            }
            Some(inc) => {
                inc.last_sent = now;
                inc.summary = summary.to_string();
                inc.severity = inc.severity.max(severity);
                (true, inc.started_at, inc.severity)
            }
            None => {
                let started_at = jiff::Timestamp::now().as_second();
                self.open.insert(
                    key.to_string(),
                    Incident {
                        severity,
                        summary: summary.to_string(),
                        started_at,
                        last_sent: now,
                    },
                );
                (false, started_at, severity)
            }
        };
        match severity {
            Severity::Critical => tracing::error!(alert = key, repeat, "ALERT {summary}"),
            Severity::Warning => tracing::warn!(alert = key, repeat, "ALERT {summary}"),
        }
        self.deliver(key, "firing", repeat, severity, summary, started_at);
        true
    }

    /// Closes an incident if open, sending the resolved message.
    pub fn resolve(&mut self, key: &str, summary: &str) -> bool {
        let Some(inc) = self.open.remove(key) else {
            return false;
        };
        tracing::info!(alert = key, "RESOLVED {summary}");
        self.deliver(
            key,
            "resolved",
            false,
            inc.severity,
            summary,
            inc.started_at,
        );
        true
    }

    /// Reminders for incidents left open past `repeat_interval`.
    pub fn remind(&mut self) {
        let due: Vec<(String, Severity, String)> = self
            .open
            .iter()
            .filter(|(_, i)| i.last_sent.elapsed() >= self.repeat)
            .map(|(k, i)| (k.clone(), i.severity, i.summary.clone()))
            .collect();
        for (key, severity, summary) in due {
            self.fire(&key, severity, &summary);
        }
    }

    pub fn is_open(&self, key: &str) -> bool {
        self.open.contains_key(key)
    }

    pub fn incidents(&self) -> Vec<IncidentStatus> {
        self.open
            .iter()
            .map(|(k, i)| IncidentStatus {
                key: k.clone(),
                severity: i.severity.into(),
                since: i.started_at,
                summary: i.summary.clone(),
            })
            .collect()
    }

    fn deliver(
        &self,
        key: &str,
        status: &'static str,
        repeat: bool,
        severity: Severity,
        summary: &str,
        started_at: i64,
    ) {
        if self.queue.is_none() && self.alertmanager.is_none() {
            return;
        }
        let alert = self.alert(key, status, repeat, severity, summary, started_at);
        for queue in [&self.alertmanager, &self.queue].into_iter().flatten() {
            match queue.try_send(alert.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.metrics.alerts_failed.inc();
                    tracing::error!(alert = key, "alert queue full; alert dropped");
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.metrics.alerts_failed.inc();
                }
            }
        }
    }

    fn alert(
        &self,
        key: &str,
        status: &'static str,
        repeat: bool,
        severity: Severity,
        summary: &str,
        started_at: i64,
    ) -> Alert {
        let label = match (status, repeat) {
            ("resolved", _) => "RESOLVED",
            (_, true) => "FIRING (reminder)",
            _ => "FIRING",
        };
        let text = format!("[{label}] kanban-watchdog on {}: {summary}", self.host);
        Alert {
            content: text.clone(),
            text,
            status,
            repeat,
            alert: key.to_string(),
            severity,
            summary: summary.to_string(),
            started_at,
            sent_at: jiff::Timestamp::now().as_second(),
            host: self.host.clone(),
            source: "kanban-watchdog",
            refresh: false,
        }
    }
}

/// The Alertmanager delivery thread and its queue, when configured.
fn start_alertmanager(cfg: &AlertsConfig, metrics: &Arc<Metrics>) -> Option<SyncSender<Alert>> {
    let am = cfg.alertmanager.as_ref()?;
    let (tx, rx) = sync_channel(256);
    let sink = crate::alertmanager::Sink::new(am, cfg.repeat_interval.0, Arc::clone(metrics));
    match std::thread::Builder::new()
        .name("alertmanager".into())
        .spawn(move || sink.run(rx))
    {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::error!("cannot start alert delivery to Alertmanager: {e}");
            None
        }
    }
}

/// The delivery thread and its queue, when any sink is configured. The
/// thread ends when its queue is dropped.
fn start_sinks(cfg: &AlertsConfig, metrics: &Arc<Metrics>) -> Option<SyncSender<Alert>> {
    if cfg.webhook.is_none() && cfg.command.is_none() {
        return None;
    }
    let (tx, rx) = sync_channel(256);
    let sinks = Sinks {
        cfg: cfg.clone(),
        metrics: Arc::clone(metrics),
    };
    match std::thread::Builder::new()
        .name("alert-delivery".into())
        .spawn(move || sinks.run(rx))
    {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::error!("cannot start alert delivery: {e}");
            None
        }
    }
}

struct Sinks {
    cfg: AlertsConfig,
    metrics: Arc<Metrics>,
}

impl Sinks {
    fn run(self, rx: Receiver<Alert>) {
        let agent = self.cfg.webhook.as_ref().map(|w| {
            ureq::Agent::config_builder()
                .timeout_global(Some(w.timeout.0))
                .http_status_as_error(true)
                .build()
                .new_agent()
        });
        for alert in rx {
            let body = match serde_json::to_string(&alert) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("cannot encode alert: {e}");
                    continue;
                }
            };
            let mut ok = true;
            if let (Some(w), Some(agent)) = (&self.cfg.webhook, &agent) {
                ok &= post_with_retries(agent, &w.url, &body, w.retries);
            }
            if let Some(argv) = &self.cfg.command {
                ok &= run_command(argv, &body);
            }
            if ok {
                self.metrics.alerts_sent.inc();
            } else {
                self.metrics.alerts_failed.inc();
            }
        }
    }
}

fn post_with_retries(agent: &ureq::Agent, url: &str, body: &str, retries: u32) -> bool {
    let mut delay = Duration::from_millis(500);
    for attempt in 0..=retries {
        match agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(body)
        {
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(
                    webhook = %redact_url(url),
                    attempt = attempt + 1,
                    "alert webhook failed: {}",
                    failure_signatures::redact(&e.to_string())
                );
            }
        }
        if attempt < retries {
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
    false
}

fn run_command(argv: &[String], body: &str) -> bool {
    let Some((program, args)) = argv.split_first() else {
        return false;
    };
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("alert command {program:?} failed to start: {e}");
            return false;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(body.as_bytes());
    }
    match child.wait_timeout(Duration::from_secs(30)) {
        Ok(Some(status)) => {
            if !status.success() {
                tracing::warn!("alert command {program:?} exited {status}");
            }
            status.success()
        }
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            tracing::warn!("alert command {program:?} timed out");
            false
        }
    }
}

/// `https://hooks.slack.com/services/T000/B000/XXXX` -> `https://hooks.slack.com/…`:
/// webhook paths and queries are credentials.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or(host);
    if scheme.is_empty() {
        "[redacted url]".into()
    } else {
        format!("{scheme}://{host}/…")
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_lose_their_secret_parts() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T000/B000/XXXX"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_url("http://user:pw@127.0.0.1:8080/hook?token=abc"),
            "http://127.0.0.1:8080/…"
        );
    }

    #[test]
    fn one_alert_per_incident_then_resolved() {
        let mut a = Alerts::new(&AlertsConfig::default(), Arc::new(Metrics::default()));
        assert!(a.fire("dispatcher_stalled", Severity::Warning, "stalled 8s"));
        assert!(!a.fire("dispatcher_stalled", Severity::Warning, "stalled"));
        // A changing detail is not a new alert...
        assert!(!a.fire("dispatcher_stalled", Severity::Warning, "stalled 9s"));
        assert_eq!(a.incidents()[0].summary, "stalled 9s");
        // ...an escalation is, once.
        assert!(a.fire(
            "dispatcher_stalled",
            Severity::Critical,
            "restart did not help"
        ));
        assert!(!a.fire(
            "dispatcher_stalled",
            Severity::Critical,
            "restart did not help again"
        ));
        assert!(!a.fire("dispatcher_stalled", Severity::Warning, "stalled 30s"));
        assert!(a.is_open("dispatcher_stalled"));
        assert_eq!(a.incidents().len(), 1);
        assert!(a.resolve("dispatcher_stalled", "progress resumed"));
        assert!(!a.resolve("dispatcher_stalled", "again"));
        assert!(a.incidents().is_empty());
    }

    #[test]
    fn a_reminder_of_an_escalated_incident_keeps_its_severity() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("alerts.json");
        let cfg = AlertsConfig {
            repeat_interval: crate::config::Dur(Duration::ZERO),
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                format!("cat >> '{}'; echo >> '{}'", out.display(), out.display()),
            ]),
            ..AlertsConfig::default()
        };
        let mut a = Alerts::new(&cfg, Arc::new(Metrics::default()));
        assert!(a.fire("dispatcher_stalled", Severity::Warning, "stalled"));
        assert!(a.fire(
            "dispatcher_stalled",
            Severity::Critical,
            "restart did not help"
        ));
        // The next check says warning again; the reminder stays critical.
        assert!(a.fire("dispatcher_stalled", Severity::Warning, "stalled 30s"));
        let start = Instant::now();
        let sent: Vec<serde_json::Value> = loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let v: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if v.len() == 3 || start.elapsed() > Duration::from_secs(10) {
                break v;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let severities: Vec<&str> = sent
            .iter()
            .map(|v| v["severity"].as_str().unwrap())
            .collect();
        assert_eq!(severities, ["warning", "critical", "critical"]);
        assert_eq!(sent[2]["repeat"], true);
        assert_eq!(sent[2]["summary"], "stalled 30s");
    }
}
