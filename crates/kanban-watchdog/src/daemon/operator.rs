//! Re-authentication (the credential stores) and operator requests
//! (`provider reset`), both of which heal a provider early.

use super::*;

impl Daemon {
    /// Reads every credential store (root and per-profile) and treats as a
    /// re-auth of provider P only a new credential value under P's own
    /// entry (see [`crate::credentials`]): not a change of another
    /// provider's entry, nor Hermes' status bookkeeping.
    pub(super) fn check_auth_store(&mut self) {
        let stores = self.paths.auth_stores();
        let fp = self.auth_stores.read(&stores);
        let Some(before) = self.auth_fingerprint.replace(fp.clone()) else {
            // Unknown until now (first start, or a fingerprint of an older
            // format): this reading is the baseline, not a re-auth.
            self.state.auth_fingerprint = Some(fp.encode());
            self.state_dirty = true;
            return;
        };
        if before == fp {
            return;
        }
        self.state.auth_fingerprint = Some(fp.encode());
        self.state_dirty = true;
        let renewed = fp.renewed_since(&before);
        if renewed.is_empty() {
            return;
        }
        tracing::info!(
            "credential store: new credential for {}",
            renewed.join(", ")
        );
        let waiting: Vec<String> = self
            .state
            .providers
            .iter()
            .filter(|(_, s)| matches!(s, ProviderState::Unhealthy { until: None, .. }))
            .map(|(name, _)| name.clone())
            .filter(|name| renewed.iter().any(|k| same_credential_owner(name, k)))
            .collect();
        for provider in waiting {
            if let Some(t) = self.state.providers.reauthenticated_one(&provider, wall()) {
                self.heal_now.insert(provider);
                self.on_transition(&t);
            }
        }
    }

    pub fn handle_requests(&mut self) {
        let dir = self.paths.requests_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if f.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let parsed = std::fs::read(&f)
                .ok()
                .and_then(|b| serde_json::from_slice::<crate::requests::Request>(&b).ok());
            match parsed {
                Some(crate::requests::Request::ProviderReset { provider }) => {
                    match self.state.providers.reset(&provider, wall()) {
                        Some(t) => self.on_transition(&t),
                        None => tracing::info!("provider reset: {provider} was not unhealthy"),
                    }
                    // Either way, what we hold or parked for it goes back at
                    // the next check.
                    self.heal_now.insert(provider);
                    self.health_gen = self.health_gen.wrapping_add(1);
                }
                None => tracing::warn!(file = %f.display(), "ignoring unreadable request"),
            }
            let _ = std::fs::remove_file(&f);
        }
    }
}

/// Whether provider `name` (as the watchdog marked it: a Hermes id, or the
/// catalogue's name for one) owns the credential stored under Hermes
/// provider id `store_key`.
pub(super) fn same_credential_owner(name: &str, store_key: &str) -> bool {
    name == store_key
        || failure_signatures::same_provider(name, store_key)
        || failure_signatures::same_provider(store_key, name)
}
