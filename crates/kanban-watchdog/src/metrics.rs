//! Prometheus metrics (prometheus-client's registry and text encoder).
//! Names follow the conventions: `_total` counters, `_seconds` and
//! `_timestamp_seconds` in base units.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::restart::RestartResult;
use crate::status::Counters;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
    pub reason: String,
}

/// A board write's action (`kind="park"`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

impl KindLabels {
    pub fn new(action: hermes_board::WriteAction) -> Self {
        KindLabels {
            kind: action.as_str().to_string(),
        }
    }
}

/// A restart attempt's result (`result="started"`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

impl ResultLabels {
    pub fn new(result: RestartResult) -> Self {
        ResultLabels {
            result: result.as_str().to_string(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: String,
}

/// One watched board, by Hermes' slug (`default` for `<root>/kanban.db`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BoardLabels {
    pub board: String,
}

/// What the board and its Hermes support (`kanban_watchdog_board_info`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BoardInfoLabels {
    pub board: String,
    /// `wal`, `delete`, ...
    pub journal_mode: String,
    /// `review_lane,exit_78,exit_trailer,archived_parent_done`, or `none`.
    pub hermes_features: String,
    /// The optional columns present (`tasks.provider_override,...`), or `none`.
    pub columns: String,
}

type FGauge = Gauge<f64, AtomicU64>;

#[derive(Default)]
pub struct Metrics {
    pub dispatcher_last_progress: Family<BoardLabels, FGauge>,
    pub dispatcher_next_cycle: Family<BoardLabels, FGauge>,
    pub dispatcher_stalled: Family<BoardLabels, Gauge>,
    pub gateway_up: Gauge,
    pub ready_tasks: Family<BoardLabels, Gauge>,
    pub oldest_ready_age: Family<BoardLabels, FGauge>,
    pub parked_tasks: Family<BoardLabels, Gauge>,
    pub restarts: Family<ResultLabels, Counter>,
    pub provider_unhealthy: Family<ProviderLabels, Gauge>,
    pub providers_skipped: Counter,
    pub records_handled: Counter,
    pub records_quarantined: Counter,
    pub records_not_from_the_run: Counter,
    pub board_writes: Family<KindLabels, Counter>,
    pub board_busy_retries: Counter,
    pub alerts_sent: Counter,
    pub alerts_failed: Counter,
    pub log_lines: Family<EventLabels, Counter>,
    pub delayed_retries_exhausted: Counter,
    pub audit_append_failures: Counter,
    pub board_info: Family<BoardInfoLabels, Gauge>,
}

impl Metrics {
    /// The counters of `/status`, read from the registry (the one place
    /// they are kept). Reading never creates a series: a board write
    /// action not yet seen is absent from `board_writes`, as from
    /// `/metrics`. `restarts` counts the restarts started.
    pub fn counters(&self) -> Counters {
        let board_writes = hermes_board::WriteAction::ALL
            .into_iter()
            .filter_map(|action| {
                let n = self.board_writes.get(&KindLabels::new(action))?.get();
                Some((action.as_str().to_string(), n))
            })
            .collect();
        Counters {
            records_handled: self.records_handled.get(),
            records_quarantined: self.records_quarantined.get(),
            board_writes,
            board_busy_retries: self.board_busy_retries.get(),
            providers_skipped: self.providers_skipped.get(),
            restarts: self
                .restarts
                .get(&ResultLabels::new(RestartResult::Started))
                .map_or(0, |c| c.get()),
            alerts_sent: self.alerts_sent.get(),
            alerts_failed: self.alerts_failed.get(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("kanban_watchdog");
        r.register(
            "dispatcher_last_progress_timestamp_seconds",
            "When the dispatcher last showed progress on a board (board events or log activity)",
            self.dispatcher_last_progress.clone(),
        );
        r.register(
            "dispatcher_next_cycle_timestamp_seconds",
            "When the next dispatcher tick is expected, by board",
            self.dispatcher_next_cycle.clone(),
        );
        r.register(
            "dispatcher_stalled",
            "1 while ready work on a board waits longer than stall_after with no dispatcher progress",
            self.dispatcher_stalled.clone(),
        );
        r.register(
            "gateway_up",
            "1 when the gateway process named by gateway.pid is alive",
            self.gateway_up.clone(),
        );
        r.register(
            "ready_tasks",
            "Tasks in ready, waiting for the dispatcher, by board",
            self.ready_tasks.clone(),
        );
        r.register(
            "oldest_ready_age_seconds",
            "How long the oldest ready task of a board has waited (as seen by the watchdog)",
            self.oldest_ready_age.clone(),
        );
        r.register(
            "parked_tasks",
            "Tasks the watchdog holds in scheduled, by board",
            self.parked_tasks.clone(),
        );
        r.register(
            "restarts",
            "Dispatcher restarts by result",
            self.restarts.clone(),
        );
        r.register(
            "provider_unhealthy",
            "1 while a provider is marked unhealthy (reason label)",
            self.provider_unhealthy.clone(),
        );
        r.register(
            "providers_skipped",
            "Ready tasks held back, and worker runs the shim did not start, because their provider was unhealthy",
            self.providers_skipped.clone(),
        );
        r.register(
            "records_handled",
            "Exit records handled",
            self.records_handled.clone(),
        );
        r.register(
            "records_quarantined",
            "Exit records moved to quarantine",
            self.records_quarantined.clone(),
        );
        r.register(
            "records_not_from_the_run",
            "Exit records with a failure, naming a run the dispatcher spawned another process for (acted on none)",
            self.records_not_from_the_run.clone(),
        );
        r.register(
            "board_writes",
            "Board changes committed, by kind",
            self.board_writes.clone(),
        );
        r.register(
            "board_busy_retries",
            "Board writes retried because the database was locked",
            self.board_busy_retries.clone(),
        );
        r.register("alerts_sent", "Alerts delivered", self.alerts_sent.clone());
        r.register(
            "alerts_failed",
            "Alert deliveries that failed after retries",
            self.alerts_failed.clone(),
        );
        r.register(
            "gateway_log_lines",
            "Gateway log lines matched, by event",
            self.log_lines.clone(),
        );
        r.register(
            "board_info",
            "1 for what the board and its Hermes support: journal mode, Hermes features, optional \
             columns (absent while the board is unavailable)",
            self.board_info.clone(),
        );
        r.register(
            "delayed_retries_exhausted",
            "Tasks left blocked because their delayed-retry budget was spent",
            self.delayed_retries_exhausted.clone(),
        );
        r.register(
            "audit_append_failures",
            "Audit-log lines that could not be appended after a committed board write (the write \
             counts; the line is kept and written before the next one)",
            self.audit_append_failures.clone(),
        );
    }
}

/// Renders the registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!("cannot encode metrics: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_board::WriteAction;

    #[test]
    fn the_status_counters_are_read_from_the_registry_without_adding_series() {
        let m = Metrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        let before = encode(&registry);
        assert_eq!(m.counters(), Counters::default());
        assert_eq!(encode(&registry), before, "reading added a series");

        m.records_handled.inc_by(3);
        m.records_quarantined.inc();
        m.board_busy_retries.inc_by(2);
        m.providers_skipped.inc();
        m.alerts_sent.inc();
        m.alerts_failed.inc_by(4);
        m.board_writes
            .get_or_create(&KindLabels::new(WriteAction::Park))
            .inc_by(2);
        m.board_writes
            .get_or_create(&KindLabels::new(WriteAction::Release))
            .inc();
        m.restarts
            .get_or_create(&ResultLabels::new(RestartResult::Started))
            .inc_by(2);
        m.restarts
            .get_or_create(&ResultLabels::new(RestartResult::Limited))
            .inc();
        let before = encode(&registry);
        let c = m.counters();
        assert_eq!(encode(&registry), before, "reading added a series");
        assert_eq!(
            c,
            Counters {
                records_handled: 3,
                records_quarantined: 1,
                board_writes: [("park".to_string(), 2), ("release".to_string(), 1)]
                    .into_iter()
                    .collect(),
                board_busy_retries: 2,
                providers_skipped: 1,
                restarts: 2,
                alerts_sent: 1,
                alerts_failed: 4,
            }
        );
    }
}
