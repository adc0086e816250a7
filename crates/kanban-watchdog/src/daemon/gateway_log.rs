//! The gateway log: dispatcher activity (the heartbeat) and provider
//! failures Hermes itself logs.

use super::*;

impl Daemon {
    pub fn poll_log(&mut self) {
        let events = match self.tailer.poll() {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!("gateway log: {e}");
                return;
            }
        };
        if events.is_empty() {
            return;
        }
        for ev in events {
            match ev {
                TailEvent::Line(line) => self.on_log_line(&line.text),
                TailEvent::Rotated { .. } => tracing::debug!("gateway log rotated"),
                TailEvent::Truncated { at } => tracing::info!("gateway log truncated at byte {at}"),
                TailEvent::Missing => tracing::debug!("gateway log missing; waiting for it"),
                TailEvent::Reopened => tracing::debug!("gateway log reopened"),
            }
        }
        self.state.log_position = self.tailer.position();
        self.state_dirty = true;
    }

    pub(super) fn on_log_line(&mut self, line: &str) {
        let event = self.classifier.classify(line);
        if event == LineEvent::Other {
            return;
        }
        self.shared
            .metrics
            .log_lines
            .get_or_create(&crate::metrics::EventLabels {
                event: event.label().into(),
            })
            .inc();
        match event {
            LineEvent::Activity => {
                // `kanban dispatcher [<slug>]: spawned=...` speaks for one
                // board; the gateway's other activity lines for all.
                let board = hermes_board::gateway_log::dispatcher_board(line);
                let (now, now_wall) = (Instant::now(), wall());
                for lane in &mut self.lanes {
                    if board.is_none_or(|b| b == lane.slug) {
                        lane.heartbeat.progress(now, now_wall);
                    }
                }
            }
            LineEvent::Stuck => {
                tracing::warn!("gateway reports: {}", failure_signatures::redact(line))
            }
            LineEvent::TickError => tracing::warn!(
                "dispatcher tick failed: {}",
                failure_signatures::redact(line)
            ),
            LineEvent::Shutdown => tracing::warn!(
                "gateway shutting down: {}",
                failure_signatures::redact(line)
            ),
            LineEvent::ProviderFailure => {
                let now = wall();
                let ctx =
                    ClassifyContext::new(jiff::Timestamp::now(), jiff::tz::TimeZone::system());
                if let Some(f) = self
                    .catalogue
                    .classify(line, &ctx)
                    .map(exit_record::Failure::from)
                    && rescue::actionable(&f)
                    && let Some(provider) = f.provider.clone()
                {
                    let until = rescue::unhealthy_until(&f, &self.cfg.providers, now);
                    let reason = rescue::reason_text(&f, Some(&provider));
                    if let Some(t) = self
                        .state
                        .providers
                        .mark_unhealthy(&provider, until, f.class, &reason, now)
                    {
                        self.on_transition(&t);
                    }
                }
            }
            LineEvent::Other => {}
        }
    }
}
