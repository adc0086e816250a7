//! What the watchdog publishes: `health.json` for the shim, `/status` and
//! the gauges behind `/metrics`.

use super::*;
use exit_record::health;

impl Daemon {
    /// Provider health and steering for worker-shim (the typed, versioned
    /// `health.json` of [`exit_record::health`]), written atomically only
    /// when it changed, and at least every [`HEALTH_REFRESH`].
    pub(super) fn publish_health(&mut self) {
        let mut steer = BTreeMap::new();
        // Profiles whose primary is unhealthy with no healthy fallback: the
        // shim does not start their kanban workers (it exits 75 with a
        // `skipped` record, and the task is parked like a failed run).
        let mut hold = BTreeMap::new();
        let profiles: Vec<String> = self.known_profiles.iter().cloned().collect();
        for profile in profiles {
            let chain = self.chain_for(Some(&profile));
            let Some(primary) = chain.first() else {
                continue;
            };
            if self.state.providers.is_available(&primary.provider) {
                continue;
            }
            let fallback = self
                .cfg
                .retry
                .steer_to_fallback
                .then(|| {
                    rescue::healthy_fallback(&chain, Some(&primary.provider), &self.state.providers)
                })
                .flatten();
            match fallback {
                Some(fb) => {
                    steer.insert(
                        profile,
                        health::SteerEntry {
                            provider: fb.provider,
                            model: fb.model,
                            from: Some(primary.provider.clone()),
                        },
                    );
                }
                None if self.cfg.retry.hold_ready_for_unhealthy
                    && matches!(
                        self.state.providers.get(&primary.provider),
                        Some(ProviderState::Unhealthy { .. })
                    ) =>
                {
                    hold.insert(
                        profile,
                        health::HoldEntry {
                            provider: primary.provider.clone(),
                        },
                    );
                }
                None => {}
            }
        }
        let providers = self
            .state
            .providers
            .iter()
            .map(|(name, s)| (name.clone(), provider_entry(s)))
            .collect();
        let mut doc = health::HealthDoc {
            version: Some(health::HEALTH_VERSION),
            generated_at: None,
            providers: Some(providers),
            steer,
            hold: Some(hold),
        };
        // Compared without its time stamp: a rewrite only for a change, or
        // to show it is fresh.
        let text = serde_json::to_string(&doc).unwrap_or_default();
        let fresh = self
            .last_health_write
            .is_some_and(|t| t.elapsed() < HEALTH_REFRESH);
        if text == self.last_health_doc && fresh {
            return;
        }
        doc.generated_at = Some(wall());
        let stamped = match serde_json::to_vec(&doc) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot encode provider health: {e}");
                return;
            }
        };
        if let Err(e) = write_atomic(&self.paths.health_file(), &stamped) {
            tracing::error!(file = %self.paths.health_file().display(), "cannot publish provider health: {e}");
            return;
        }
        let before: Option<health::HealthDoc> = serde_json::from_str(&self.last_health_doc).ok();
        for (profile, to) in &doc.steer {
            let new = before
                .as_ref()
                .is_none_or(|b| b.steer.get(profile) != Some(to));
            if new {
                tracing::info!(profile = %profile, "steering new runs of profile {profile} to {}", to.provider);
            }
        }
        self.last_health_doc = text;
        self.last_health_write = Some(Instant::now());
    }

    pub fn publish(&mut self) {
        self.last_publish = Instant::now();
        let now = wall();
        let interval_s = self.interval.as_secs() as i64;
        let m = &self.shared.metrics;
        let mut parked_lists = Vec::new();
        let mut boards = Vec::new();
        for lane in &mut self.lanes {
            let labels = lane.labels();
            board_info_metric(m, lane);
            let mine = lane.parked().unwrap_or_default();
            m.parked_tasks.get_or_create(&labels).set(mine.len() as i64);
            let last_progress = lane.heartbeat.last_progress_wall();
            m.dispatcher_last_progress
                .get_or_create(&labels)
                .set(last_progress as f64);
            m.dispatcher_next_cycle
                .get_or_create(&labels)
                .set((last_progress + interval_s).max(now) as f64);
            boards.push(BoardStatus {
                slug: lane.slug.clone(),
                db: lane.db.display().to_string(),
                info: lane.board.as_ref().map(|b| b.info().clone()),
                problem: lane.problem.clone(),
                state: lane_state(lane).into(),
                reason: lane.stalled_reason.clone(),
                ready_tasks: lane.ready,
                waiting_since: lane.heartbeat.waiting_since_wall(),
                last_progress_at: Some(last_progress),
                parked: mine.len() as u64,
            });
            parked_lists.push((lane.slug.clone(), mine));
        }
        // Which parked sets the list is made of: while they stay the same,
        // the published list is moved into the new status, not rebuilt (an
        // idle tick must not grow with the parked tasks).
        let parked_key: Vec<(String, u64)> = self
            .lanes
            .iter()
            .map(|l| (l.slug.clone(), l.parked_gen))
            .collect();
        // The dispatcher as a whole: stalled when any board is, its last
        // progress the latest on any board.
        let last_progress = self
            .lanes
            .iter()
            .map(|l| l.heartbeat.last_progress_wall())
            .max()
            .unwrap_or(self.started_at);
        let next_cycle = last_progress + interval_s;
        let ready: u64 = self.lanes.iter().map(|l| l.ready).sum();
        let reasons: Vec<&str> = self
            .lanes
            .iter()
            .filter_map(|l| l.stalled_reason.as_deref())
            .collect();
        let state = if self.lanes.iter().all(|l| l.board.is_none()) {
            DispatchState::Unknown
        } else if !reasons.is_empty() {
            DispatchState::Stalled
        } else if ready == 0 {
            DispatchState::Idle
        } else {
            DispatchState::Ok
        };
        let primary = self.lanes.iter().find(|l| l.db == self.paths.board_db);
        let counters = self.shared.metrics.counters();
        let mut status = Status {
            version: env!("CARGO_PKG_VERSION").into(),
            generated_at: now,
            started_at: self.started_at,
            pid: std::process::id(),
            dry_run: self.dry_run,
            board: self.paths.board_db.display().to_string(),
            board_info: primary.and_then(|l| l.board.as_ref().map(|b| b.info().clone())),
            board_problem: primary.and_then(|l| l.problem.clone()),
            record_dir: self.paths.record_dir.display().to_string(),
            boards,
            dispatcher: DispatcherStatus {
                state: state.into(),
                stalled: !reasons.is_empty(),
                reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
                last_progress_at: Some(last_progress),
                next_cycle_at: Some(next_cycle.max(now)),
                interval_s: self.interval.as_secs_f64(),
                stall_after_s: self.stall_after.as_secs_f64(),
                ready_tasks: ready,
                waiting_since: self
                    .lanes
                    .iter()
                    .filter_map(|l| l.heartbeat.waiting_since_wall())
                    .min(),
                gateway_pid: self.gateway.map(|(pid, _)| pid),
                gateway_up: self.gateway.map(|(_, up)| up),
            },
            providers: self
                .state
                .providers
                .iter()
                .map(|(name, s)| provider_status(name, s))
                .collect(),
            parked: Vec::new(),
            restarts: self.restarts.iter().cloned().collect(),
            incidents: self.alerts.incidents(),
            counters,
        };
        if let Ok(mut s) = self.shared.status.write() {
            status.parked = if self.published_parked.as_ref() == Some(&parked_key) {
                std::mem::take(&mut s.parked)
            } else {
                parked_lists
                    .iter()
                    .flat_map(|(board, list)| {
                        list.iter().map(move |p| ParkedStatus {
                            task: p.task_id.clone(),
                            board: board.clone(),
                            kind: p.kind.into(),
                            due_at: p.due_at,
                            provider: p.provider.clone(),
                            reason: p.reason.clone(),
                        })
                    })
                    .collect()
            };
            *s = status;
            self.published_parked = Some(parked_key);
        }
    }
}

/// A provider's state as `health.json` carries it.
fn provider_entry(s: &ProviderState) -> health::ProviderEntry {
    let mut e = health::ProviderEntry {
        state: s.state().into(),
        since: None,
        until: None,
        class: None,
        reason: None,
    };
    match s {
        ProviderState::Healthy { since } | ProviderState::Probing { since } => {
            e.since = Some(*since)
        }
        ProviderState::Unhealthy {
            since,
            until,
            class,
            reason,
        } => {
            e.since = Some(*since);
            e.until = *until;
            e.class = Some(class.clone());
            e.reason = Some(reason.clone());
        }
    }
    e
}

pub(super) fn provider_status(name: &str, s: &ProviderState) -> ProviderStatus {
    match s {
        ProviderState::Healthy { since } | ProviderState::Probing { since } => ProviderStatus {
            name: name.into(),
            state: s.state().into(),
            since: *since,
            until: None,
            class: None,
            reason: None,
        },
        ProviderState::Unhealthy {
            since,
            until,
            class,
            reason,
        } => ProviderStatus {
            name: name.into(),
            state: HealthState::Unhealthy.into(),
            since: *since,
            until: *until,
            class: Some(class.clone()),
            reason: Some(reason.clone()),
        },
    }
}

/// `kanban_watchdog_board_info{journal_mode,hermes_features,columns} 1`
/// for the open board; no series while it is unavailable.
pub(super) fn board_info_metric(metrics: &Metrics, lane: &mut Lane) {
    let labels = lane.board.as_ref().map(|b| {
        let info = b.info();
        crate::metrics::BoardInfoLabels {
            board: lane.slug.clone(),
            journal_mode: info.journal_mode.clone(),
            hermes_features: info.features.label(),
            columns: if info.columns.is_empty() {
                "none".into()
            } else {
                info.columns.join(",")
            },
        }
    });
    if labels == lane.info_labels {
        return;
    }
    if let Some(old) = lane.info_labels.take() {
        metrics.board_info.remove(&old);
    }
    if let Some(new) = &labels {
        metrics.board_info.get_or_create(new).set(1);
    }
    lane.info_labels = labels;
}

/// `ok`, `idle`, `stalled` or `unknown` (no board yet) for one board.
fn lane_state(lane: &Lane) -> DispatchState {
    if lane.board.is_none() {
        DispatchState::Unknown
    } else if lane.stalled_reason.is_some() {
        DispatchState::Stalled
    } else if lane.ready == 0 {
        DispatchState::Idle
    } else {
        DispatchState::Ok
    }
}
