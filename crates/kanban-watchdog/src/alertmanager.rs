//! Alertmanager as an alert sink: the watchdog's own alerts posted to
//! Alertmanager's v2 API (`POST <url>/api/v2/alerts`), so operators can
//! route, group, inhibit and silence them there with everything else.
//!
//! Like Prometheus, the sink re-posts every firing alert while its incident
//! is open (every [`resend_interval`]: the `repeat_interval`, at most a
//! minute) with `endsAt` = now + [`resolve_timeout`] (4 x that). Alertmanager
//! resolves an alert whose `endsAt` passes, so a watchdog that dies leaves
//! no alert firing for ever, while a live one keeps it firing. When the
//! incident clears, the alert is posted once more with `endsAt` = now.
//!
//! Identity (Alertmanager's fingerprint) is the label set: `alertname` (the
//! incident kind: `dispatcher_stalled`, `provider_unhealthy`, ...),
//! `severity`, `instance` (this host), `source="kanban-watchdog"` and, for
//! per-subject incidents, `provider` or `task`. One incident is one alert;
//! when it escalates (warning to critical) the warning one is resolved in
//! the same post as the critical one starts.
//!
//! Delivery has its own thread and bounded queue (so a slow webhook never
//! delays a re-post past `endsAt`), a timeout, and retries with backoff.
//! The URL is logged as scheme and host only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::alerts::{Alert, Severity, redact_url};
use crate::config::WebhookConfig;
use crate::metrics::Metrics;

/// The API path appended to `alerts.alertmanager.url`.
pub const API_PATH: &str = "/api/v2/alerts";

/// Prometheus re-sends firing alerts every minute (`--rules.alert.resend-delay`).
pub const MAX_RESEND: Duration = Duration::from_secs(60);

/// How often firing alerts are re-posted: the repeat interval, at most a
/// minute, at least a second.
pub fn resend_interval(repeat_interval: Duration) -> Duration {
    repeat_interval.clamp(Duration::from_secs(1), MAX_RESEND)
}

/// How long Alertmanager keeps an alert firing without a re-post
/// (Prometheus: 4 x its resend delay).
pub fn resolve_timeout(repeat_interval: Duration) -> Duration {
    resend_interval(repeat_interval) * 4
}

/// `<url>/api/v2/alerts` (the URL as given if it already ends so).
pub fn endpoint(url: &str) -> String {
    let base = url.trim_end_matches('/');
    if base.ends_with(API_PATH) {
        base.to_string()
    } else {
        format!("{base}{API_PATH}")
    }
}

/// The label set of an alert: its identity in Alertmanager.
pub fn labels(alert: &Alert, severity: Severity) -> Map<String, Value> {
    let (kind, subject) = match alert.alert.split_once(':') {
        Some((k, s)) => (k, Some(s)),
        None => (alert.alert.as_str(), None),
    };
    let mut l = Map::new();
    l.insert("alertname".into(), kind.into());
    l.insert("severity".into(), severity.as_str().into());
    l.insert("instance".into(), alert.host.clone().into());
    l.insert("source".into(), alert.source.into());
    if let Some(s) = subject {
        let name = match kind {
            "provider_unhealthy" => "provider",
            "retry_budget_exhausted" => "task",
            // A board other than the home's `default` (all boards watched).
            "dispatcher_stalled" | "board_unavailable" => "board",
            _ => "subject",
        };
        l.insert(name.into(), s.into());
    }
    l
}

/// RFC 3339 in UTC, with the fraction of a second when there is one (Go
/// parses both). Never rounded: a resolved alert's `endsAt` rounded up
/// would still be active for a moment.
fn rfc3339(t: jiff::Timestamp) -> String {
    t.to_string()
}

/// One element of the v2 `postableAlerts` array. `ends_at` is `now` for a
/// resolved alert and `now + resolve_timeout` for a firing one.
pub fn postable(alert: &Alert, severity: Severity, ends_at: jiff::Timestamp) -> Value {
    let starts_at =
        jiff::Timestamp::from_second(alert.started_at).unwrap_or(jiff::Timestamp::now());
    json!({
        "labels": labels(alert, severity),
        "annotations": {"summary": alert.summary},
        "startsAt": rfc3339(starts_at),
        "endsAt": rfc3339(ends_at),
    })
}

/// The delivery thread's state: the alerts posted as firing and not yet
/// resolved, by incident key, re-posted every `resend`.
pub struct Sink {
    url: String,
    endpoint: String,
    retries: u32,
    agent: ureq::Agent,
    resend: Duration,
    resolve_after: Duration,
    firing: BTreeMap<String, Alert>,
    metrics: Arc<Metrics>,
}

impl Sink {
    pub fn new(cfg: &WebhookConfig, repeat_interval: Duration, metrics: Arc<Metrics>) -> Sink {
        Sink {
            url: cfg.url.clone(),
            endpoint: endpoint(&cfg.url),
            retries: cfg.retries,
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(cfg.timeout.0))
                .http_status_as_error(false)
                .build()
                .new_agent(),
            resend: resend_interval(repeat_interval),
            resolve_after: resolve_timeout(repeat_interval),
            firing: BTreeMap::new(),
            metrics,
        }
    }

    /// Serves the queue until it is dropped; re-posts firing alerts in between.
    pub fn run(mut self, rx: Receiver<Alert>) {
        let mut next_resend = Instant::now() + self.resend;
        loop {
            let wait = next_resend.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(alert) => self.handle(alert),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_resend {
                self.resend_firing();
                next_resend = Instant::now() + self.resend;
            }
        }
    }

    fn handle(&mut self, alert: Alert) {
        let now = jiff::Timestamp::now();
        let mut batch = Vec::with_capacity(2);
        // A changed label set (an escalation) ends the old alert, so the
        // incident stays one alert in Alertmanager.
        if let Some(prev) = self.firing.get(&alert.alert)
            && prev.severity != alert.severity
        {
            batch.push(postable(prev, prev.severity, now));
        }
        if alert.status == "resolved" {
            self.firing.remove(&alert.alert);
            batch.push(postable(&alert, alert.severity, now));
        } else {
            batch.push(postable(&alert, alert.severity, self.ends_at(now)));
            self.firing.insert(alert.alert.clone(), alert.clone());
        }
        let ok = self.post(&Value::Array(batch));
        if !ok {
            self.metrics.alerts_failed.inc();
        } else if !alert.refresh {
            self.metrics.alerts_sent.inc();
        }
    }

    fn resend_firing(&mut self) {
        if self.firing.is_empty() {
            return;
        }
        let now = jiff::Timestamp::now();
        let ends_at = self.ends_at(now);
        let batch: Vec<Value> = self
            .firing
            .values()
            .map(|a| postable(a, a.severity, ends_at))
            .collect();
        if !self.post(&Value::Array(batch)) {
            self.metrics.alerts_failed.inc();
        }
    }

    fn ends_at(&self, now: jiff::Timestamp) -> jiff::Timestamp {
        now.checked_add(self.resolve_after).unwrap_or(now)
    }

    /// POSTs with retries and backoff. A 4xx other than 408/429 is not
    /// retried: Alertmanager refused the payload and would again.
    fn post(&self, body: &Value) -> bool {
        let body = body.to_string();
        let mut delay = Duration::from_millis(500);
        for attempt in 0..=self.retries {
            let why = match self
                .agent
                .post(&self.endpoint)
                .header("Content-Type", "application/json")
                .send(&body)
            {
                Ok(resp) if resp.status().is_success() => return true,
                Ok(mut resp) => {
                    let status = resp.status();
                    let text = resp
                        .body_mut()
                        .with_config()
                        .limit(4096)
                        .read_to_string()
                        .unwrap_or_default();
                    let why = format!("HTTP {}: {}", status.as_u16(), text.trim());
                    if status.is_client_error() && status != 408 && status != 429 {
                        tracing::warn!(
                            alertmanager = %redact_url(&self.url),
                            attempt = attempt + 1,
                            "alertmanager post failed (refused, not retried): {}",
                            failure_signatures::redact(&why)
                        );
                        return false;
                    }
                    why
                }
                Err(e) => e.to_string(),
            };
            tracing::warn!(
                alertmanager = %redact_url(&self.url),
                attempt = attempt + 1,
                "alertmanager post failed: {}",
                failure_signatures::redact(&why)
            );
            if attempt < self.retries {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(key: &str, status: &'static str, severity: Severity) -> Alert {
        Alert {
            text: String::new(),
            content: String::new(),
            status,
            repeat: false,
            alert: key.into(),
            severity,
            summary: "provider xai-oauth marked unhealthy".into(),
            started_at: 1_780_000_000,
            sent_at: 1_780_000_100,
            host: "box".into(),
            source: "kanban-watchdog",
            refresh: false,
        }
    }

    #[test]
    fn the_endpoint_is_the_v2_alerts_path() {
        assert_eq!(
            endpoint("http://127.0.0.1:9093"),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
        assert_eq!(
            endpoint("https://am.example/prefix/"),
            "https://am.example/prefix/api/v2/alerts"
        );
        assert_eq!(
            endpoint("http://am:9093/api/v2/alerts"),
            "http://am:9093/api/v2/alerts"
        );
    }

    #[test]
    fn a_postable_alert_has_the_labels_annotations_and_times_of_the_v2_api() {
        let a = alert("provider_unhealthy:xai-oauth", "firing", Severity::Warning);
        let ends = jiff::Timestamp::from_second(1_780_000_340).unwrap();
        let v = postable(&a, a.severity, ends);
        assert_eq!(
            v,
            json!({
                "labels": {
                    "alertname": "provider_unhealthy",
                    "severity": "warning",
                    "instance": "box",
                    "source": "kanban-watchdog",
                    "provider": "xai-oauth",
                },
                "annotations": {"summary": "provider xai-oauth marked unhealthy"},
                "startsAt": "2026-05-28T20:26:40Z",
                "endsAt": "2026-05-28T20:32:20Z",
            })
        );
        let t = alert("retry_budget_exhausted:t1", "firing", Severity::Warning);
        assert_eq!(labels(&t, t.severity)["task"], "t1");
        let d = alert("dispatcher_stalled", "firing", Severity::Critical);
        let l = labels(&d, d.severity);
        assert_eq!(l["alertname"], "dispatcher_stalled");
        assert_eq!(l.len(), 4, "{l:?}");
    }

    #[test]
    fn firing_alerts_outlive_their_resend_and_resends_are_at_most_a_minute_apart() {
        assert_eq!(
            resend_interval(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            resolve_timeout(Duration::from_secs(3600)),
            Duration::from_secs(240)
        );
        assert_eq!(
            resend_interval(Duration::from_millis(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            resolve_timeout(Duration::from_secs(2)),
            Duration::from_secs(8)
        );
    }
}
