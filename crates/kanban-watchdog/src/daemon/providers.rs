//! Provider health transitions turned into log lines, gauges and alerts.

use super::*;

impl Daemon {
    pub(super) fn on_transition(&mut self, t: &Transition) {
        self.state_dirty = true;
        self.health_gen = self.health_gen.wrapping_add(1);
        let key = format!("provider_unhealthy:{}", t.provider());
        match t {
            Transition::MarkedUnhealthy {
                provider, class, ..
            } => {
                tracing::warn!("{}", t.message());
                let gauge = &self.shared.metrics.provider_unhealthy;
                gauge
                    .get_or_create(&ProviderLabels {
                        provider: provider.clone(),
                        reason: class.as_str().to_string(),
                    })
                    .set(1);
                self.alerts.fire(&key, Severity::Warning, &t.message());
            }
            Transition::Probing { provider } | Transition::Healed { provider, .. } => {
                tracing::info!("{}", t.message());
                self.clear_provider_gauges(provider);
                self.alerts.resolve(&key, &t.message());
            }
        }
        self.publish_health();
    }

    pub(super) fn clear_provider_gauges(&self, provider: &str) {
        for class in failure_signatures::FailureClass::ALL {
            self.shared
                .metrics
                .provider_unhealthy
                .remove(&ProviderLabels {
                    provider: provider.to_string(),
                    reason: class.as_str().to_string(),
                });
        }
    }
}
