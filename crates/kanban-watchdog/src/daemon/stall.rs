//! Dispatcher stall detection and restarts with backoff.

use super::*;
use crate::restart::RestartResult;

impl Daemon {
    /// Looks at every watched board's dispatcher progress; a stall on any
    /// board (ready work, no progress for `stall_after`) restarts the one
    /// gateway that serves them all.
    pub(super) fn check_dispatcher(&mut self) {
        self.gateway = gateway_process(&self.paths.pid_file);
        self.shared
            .metrics
            .gateway_up
            .set(i64::from(self.gateway.is_some_and(|(_, alive)| alive)));
        let mut stalled: Vec<String> = Vec::new();
        let mut recovered = false;
        for li in 0..self.lanes.len() {
            match self.check_lane(li) {
                Some(Verdict::Stalled { waited }) => {
                    stalled.push(self.on_lane_stall(li, waited));
                }
                Some(Verdict::Ok | Verdict::Idle) => recovered |= self.on_lane_no_stall(li),
                None => {}
            }
        }
        if !stalled.is_empty() {
            self.on_stall(&stalled.join("; "));
        } else if recovered && self.lanes.iter().all(|l| l.stalled_reason.is_none()) {
            self.on_recovery();
        }
    }

    /// One board's verdict, `None` when its board cannot be read.
    fn check_lane(&mut self, li: usize) -> Option<Verdict> {
        let now = Instant::now();
        let now_wall = wall();
        let stall_after = self.stall_after;
        let lane = &mut self.lanes[li];
        let board = lane.board.as_ref()?;
        let after = lane.heartbeat.scanned_through().unwrap_or(0);
        let (mark, ready) = match (board.progress_since(after), board.ready_tasks()) {
            (Ok(m), Ok(r)) => (m, r),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(board = %lane.slug, "cannot read dispatcher progress: {e}");
                return None;
            }
        };
        lane.heartbeat
            .observe_board(mark.scanned_through, mark.new_events, now, now_wall);
        lane.ready = ready.len() as u64;
        let verdict = lane
            .heartbeat
            .evaluate(lane.ready, stall_after, now, now_wall);
        let waited = lane
            .heartbeat
            .waiting_since_wall()
            .map(|t| (now_wall - t) as f64)
            .unwrap_or(0.0);
        let labels = lane.labels();
        let m = &self.shared.metrics;
        m.ready_tasks.get_or_create(&labels).set(lane.ready as i64);
        m.oldest_ready_age.get_or_create(&labels).set(waited);
        Some(verdict)
    }

    /// A board's stall: logged once, its gauge and alert; returns the reason.
    fn on_lane_stall(&mut self, li: usize, waited: Duration) -> String {
        let gateway = match self.gateway {
            Some((pid, false)) => format!("; gateway process {pid} is gone"),
            None => "; no gateway.pid".to_string(),
            Some((pid, true)) => format!("; gateway process {pid} is alive but silent"),
        };
        let lane = &mut self.lanes[li];
        let on = if lane.named {
            format!(" on board {}", lane.slug)
        } else {
            String::new()
        };
        let reason = format!(
            "dispatcher stalled{on}: {} ready task(s) waited {}s with no dispatcher progress (stall_after {}s){gateway}",
            lane.ready,
            waited.as_secs(),
            self.stall_after.as_secs()
        );
        if lane.stalled_reason.is_none() {
            tracing::warn!(board = %lane.slug, "{reason}");
        }
        lane.stalled_reason = Some(reason.clone());
        let key = lane.alert_key("dispatcher_stalled");
        self.shared
            .metrics
            .dispatcher_stalled
            .get_or_create(&lane.labels())
            .set(1);
        self.alerts.fire(&key, Severity::Warning, &reason);
        reason
    }

    /// A board with no stall; true when it had one until now.
    fn on_lane_no_stall(&mut self, li: usize) -> bool {
        let lane = &mut self.lanes[li];
        self.shared
            .metrics
            .dispatcher_stalled
            .get_or_create(&lane.labels())
            .set(0);
        if lane.stalled_reason.take().is_none() {
            return false;
        }
        tracing::info!(board = %lane.slug, "dispatcher progress resumed");
        let key = lane.alert_key("dispatcher_stalled");
        self.alerts.resolve(&key, "dispatcher progress resumed");
        true
    }

    /// Every board makes progress again.
    fn on_recovery(&mut self) {
        let recovered = self.restarter.progress();
        if recovered
            && self
                .restarts
                .back()
                .is_some_and(|r| r.result == RestartResult::Started)
        {
            self.record_restart(RestartResult::Recovered, "progress resumed".into());
        }
        self.alerts
            .resolve("dispatcher_restart_limit", "dispatcher progress resumed");
    }

    /// Some board stalled: the restart policy's next step for the gateway.
    fn on_stall(&mut self, reason: &str) {
        let step = self
            .restarter
            .step(&self.cfg.restart, wall(), Instant::now());
        match step {
            RestartStep::Restart { attempt } => {
                let argv = self.cfg.restart.command.clone();
                let result = if self.dry_run {
                    tracing::warn!("dry run: would run restart command {argv:?}");
                    Ok(0)
                } else {
                    spawn_detached(&argv, &self.paths.restart_log())
                };
                let (label, detail) = match result {
                    Ok(pid) => {
                        tracing::warn!(attempt, pid, "restarting the dispatcher: {argv:?}");
                        (
                            RestartResult::Started,
                            format!("attempt {attempt}: ran {argv:?} (pid {pid})"),
                        )
                    }
                    Err(e) => {
                        tracing::error!(attempt, "restart command {argv:?} failed to start: {e}");
                        (
                            RestartResult::FailedToStart,
                            format!("attempt {attempt}: {argv:?} failed to start: {e}"),
                        )
                    }
                };
                self.record_restart(label, detail);
                self.state.restarts = self.restarter.history();
                self.state_dirty = true;
            }
            RestartStep::NotRecovered {
                attempt,
                next_try_in,
            } => {
                self.record_restart(
                    RestartResult::NotRecovered,
                    format!(
                        "attempt {attempt} did not bring progress back within {}",
                        self.cfg.restart.recovery_grace
                    ),
                );
                let keys: Vec<String> = self
                    .lanes
                    .iter()
                    .filter(|l| l.stalled_reason.is_some())
                    .map(|l| l.alert_key("dispatcher_stalled"))
                    .collect();
                for key in keys {
                    self.alerts.fire(
                        &key,
                        Severity::Critical,
                        &format!(
                            "{reason}; restart attempt {attempt} did not recover it; next try in {}s",
                            next_try_in.as_secs()
                        ),
                    );
                }
            }
            RestartStep::LimitHit { burst, interval } => {
                self.record_restart(
                    RestartResult::Limited,
                    format!("{burst} restarts in {}s: giving up", interval.as_secs()),
                );
                self.alerts.fire(
                    "dispatcher_restart_limit",
                    Severity::Critical,
                    &format!(
                        "restart limit reached ({burst} in {}s); not restarting the dispatcher again until it recovers or an operator steps in: {reason}",
                        interval.as_secs()
                    ),
                );
            }
            RestartStep::AwaitingRecovery
            | RestartStep::BackingOff
            | RestartStep::GaveUp
            | RestartStep::Disabled => {}
        }
    }

    pub(super) fn record_restart(&mut self, result: RestartResult, detail: String) {
        self.shared
            .metrics
            .restarts
            .get_or_create(&ResultLabels::new(result))
            .inc();
        self.restarts.push_back(RestartStatus {
            at: wall(),
            result: result.into(),
            detail,
        });
        while self.restarts.len() > 20 {
            self.restarts.pop_front();
        }
    }
}
