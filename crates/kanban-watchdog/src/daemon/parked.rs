//! Parked and held tasks: released when due or when their provider
//! healed, steering overrides cleared, and ready tasks of an unhealthy
//! provider held before the dispatcher spawns them into the same wall.

use std::collections::HashMap;

use hermes_board::profiles::ChainLink;

use super::*;

impl Daemon {
    /// Releases, on every watched board, what is due or healed.
    pub(super) fn release_due(&mut self) {
        let mut all_done = true;
        for li in 0..self.lanes.len() {
            all_done &= self.release_due_on(li);
        }
        // A heal is forgotten only once every board has acted on it: a
        // release postponed by a lock must still skip the old due time.
        if all_done {
            self.heal_now.clear();
        }
        for li in 0..self.lanes.len() {
            self.unsteer_healed(li);
        }
    }

    /// False when a lock or an error cut the pass short (tried again at
    /// the next check).
    fn release_due_on(&mut self, li: usize) -> bool {
        if self.lanes[li].board.is_none() {
            return true;
        }
        let parked = match self.lanes[li].parked() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(board = %self.lanes[li].slug, "cannot list parked tasks: {e}");
                return false;
            }
        };
        let now = wall();
        // Nothing that decides a release changed since the last pass (the
        // board's parked set, provider health, a heal, the earliest due
        // time): skip it, so an idle tick does not grow with the parked.
        // (A profile's fallback chain read from its config may change too:
        // a full pass at least once a minute.)
        let scan = (self.lanes[li].parked_gen, self.health_gen, now / 60);
        let lane = &self.lanes[li];
        if lane.release_scan == Some(scan)
            && self.heal_now.is_empty()
            && lane.next_due.is_none_or(|d| now < d)
        {
            return true;
        }
        let mut next_due: Option<i64> = None;
        // One read of each profile's chain per pass, and only for a held
        // task that is not releasable anyway.
        let mut chains: HashMap<Option<String>, Vec<ChainLink>> = HashMap::new();
        for p in parked.iter() {
            let due = p.due_at.is_none_or(|t| t <= now);
            let provider_ok = p
                .provider
                .as_deref()
                .is_none_or(|prov| self.state.providers.is_available(prov));
            // Its provider was reset or re-authenticated: the old due time
            // no longer means anything.
            let healed = p
                .provider
                .as_deref()
                .is_some_and(|prov| self.heal_now.contains(prov));
            let releasable = ((due || healed) && provider_ok)
                || (p.kind == Kind::Held && self.cfg.retry.steer_to_fallback && {
                    let chain = match chains.get(&p.assignee) {
                        Some(c) => c,
                        None => {
                            let c = self.chain_for(p.assignee.as_deref());
                            chains.entry(p.assignee.clone()).or_insert(c)
                        }
                    };
                    rescue::healthy_fallback(chain, p.provider.as_deref(), &self.state.providers)
                        .is_some()
                });
            if !releasable {
                if let Some(t) = p.due_at.filter(|&t| t > now) {
                    next_due = Some(next_due.map_or(t, |d| d.min(t)));
                }
                continue;
            }
            let why = if healed && !due && provider_ok {
                format!(
                    "provider {} healed; not waiting for the old due time",
                    p.provider.as_deref().unwrap_or("-")
                )
            } else if provider_ok {
                format!(
                    "due (provider {} available)",
                    p.provider.as_deref().unwrap_or("-")
                )
            } else {
                "a fallback provider is healthy".to_string()
            };
            let req = ReleaseRequest {
                task_id: p.task_id.clone(),
                reason: why,
                // Ended early by a reset or re-auth: the park is refunded.
                healed: healed && !due,
            };
            if let Err(e) = self.board_write(li, |b| b.release(&req)) {
                tracing::warn!(task = %p.task_id, "release postponed: {e}");
                return false;
            }
        }
        let lane = &mut self.lanes[li];
        lane.release_scan = Some(scan);
        lane.next_due = next_due;
        true
    }

    /// Tasks we steered through their own model/provider override (Hermes
    /// 0.22) go back to their profile's provider once it is available
    /// again: the override is cleared, only while it is still the one we
    /// set.
    pub(super) fn unsteer_healed(&mut self, li: usize) {
        let Some(board) = self.lanes[li].board.as_ref() else {
            return;
        };
        let steered = match board.steered() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot list steered tasks: {e}");
                return;
            }
        };
        for s in steered {
            let Some(from) = s.from.clone() else {
                continue;
            };
            if !self.state.providers.is_available(&from) {
                continue;
            }
            let req = hermes_board::ClearOverride {
                task_id: s.task_id.clone(),
                provider: s.provider,
                model: s.model,
                reason: format!(
                    "provider {from} available again: the profile's own provider applies"
                ),
            };
            if let Err(e) = self.board_write(li, |b| b.clear_override(&req)) {
                tracing::warn!(task = %s.task_id, "clearing the override postponed: {e}");
                return;
            }
        }
    }

    /// Ready tasks whose provider is unhealthy with no healthy fallback are
    /// held in `scheduled` instead of being spawned into the same wall.
    pub(super) fn hold_ready_for_unhealthy(&mut self) {
        if !self.cfg.retry.hold_ready_for_unhealthy {
            return;
        }
        for li in 0..self.lanes.len() {
            self.hold_ready_on(li);
        }
    }

    fn hold_ready_on(&mut self, li: usize) {
        let Some(board) = self.lanes[li].board.as_ref() else {
            return;
        };
        let ready = match board.ready_tasks() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot list ready tasks: {e}");
                return;
            }
        };
        if !self
            .state
            .providers
            .iter()
            .any(|(_, s)| matches!(s, ProviderState::Unhealthy { .. }))
        {
            return;
        }
        for task in ready {
            let chain = self.chain_for(task.assignee.as_deref());
            let Some(primary) = chain.first() else {
                continue;
            };
            let Some(until) = self.state.providers.unhealthy_until(&primary.provider) else {
                continue;
            };
            if self.cfg.retry.steer_to_fallback
                && rescue::healthy_fallback(&chain, Some(&primary.provider), &self.state.providers)
                    .is_some()
            {
                continue;
            }
            let jitter = (self.cfg.retry.jitter.as_secs_f64() * self.next_random()) as i64;
            let due = until.map(|t| {
                t.saturating_add(rescue::secs(self.cfg.retry.margin.0))
                    .saturating_add(jitter)
            });
            let req = ParkRequest {
                writer_pid: None,
                task_id: task.id.clone(),
                kind: Kind::Held,
                run_id: None,
                record_id: None,
                due_at: due,
                provider: Some(primary.provider.clone()),
                fallback: None,
                fallback_model: None,
                reason: format!(
                    "provider {} unhealthy until {}",
                    primary.provider,
                    until_text(until)
                ),
            };
            match self.board_write(li, |b| b.park(&req)) {
                Ok(WriteOutcome::Applied(_)) => {
                    self.shared.metrics.providers_skipped.inc();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(task = %task.id, "hold postponed: {e}");
                    return;
                }
            }
        }
    }
}
