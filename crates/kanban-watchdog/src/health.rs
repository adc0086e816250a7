//! Provider health: `healthy -> unhealthy(until T | until re-auth, reason)
//! -> probing -> healthy`, one state machine per provider, persisted with
//! the daemon's state.
//!
//! * Rate limits and quotas are unhealthy until their reset time (clamped by
//!   the caller to the configured maximum); expired or invalid credentials
//!   until re-auth (the auth store changed) or an operator reset.
//! * When the time runs out the provider is *probing*: work may run on it
//!   again; the first clean run heals it, a failure marks it again, and
//!   `probe_grace` without news heals it too.

use std::collections::BTreeMap;

use exit_record::health::HealthState;
use failure_signatures::{FailureClass, ReadClass};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProviderState {
    Healthy {
        since: i64,
    },
    Unhealthy {
        since: i64,
        /// `None`: until re-auth or an operator reset.
        until: Option<i64>,
        /// As persisted: a class a newer build wrote and this one does not
        /// know is kept, not a reason to drop the whole state.
        class: ReadClass,
        reason: String,
    },
    Probing {
        since: i64,
    },
}

impl ProviderState {
    /// Which state, without its data (the `state` tag).
    pub fn state(&self) -> HealthState {
        match self {
            ProviderState::Healthy { .. } => HealthState::Healthy,
            ProviderState::Unhealthy { .. } => HealthState::Unhealthy,
            ProviderState::Probing { .. } => HealthState::Probing,
        }
    }

    /// `healthy`, `unhealthy` or `probing`.
    pub fn name(&self) -> &'static str {
        self.state().as_str()
    }
}

/// A change worth one log line (and a metric / alert).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    MarkedUnhealthy {
        provider: String,
        until: Option<i64>,
        class: FailureClass,
        reason: String,
    },
    Probing {
        provider: String,
    },
    Healed {
        provider: String,
        why: &'static str,
    },
}

impl Transition {
    pub fn provider(&self) -> &str {
        match self {
            Transition::MarkedUnhealthy { provider, .. }
            | Transition::Probing { provider }
            | Transition::Healed { provider, .. } => provider,
        }
    }

    /// The operator-facing line, e.g. `provider xai-oauth marked unhealthy:
    /// auth_expired (...); team will use fallback chain until re-auth`.
    pub fn message(&self) -> String {
        match self {
            Transition::MarkedUnhealthy {
                provider,
                until,
                reason,
                ..
            } => format!(
                "provider {provider} marked unhealthy: {reason}; team will use fallback chain until {}",
                until_text(*until)
            ),
            Transition::Probing { provider } => {
                format!("provider {provider} cooldown over; probing with the next task")
            }
            Transition::Healed { provider, why } => {
                format!("provider {provider} healthy again ({why})")
            }
        }
    }
}

/// `re-auth` or an RFC 3339 time.
pub fn until_text(until: Option<i64>) -> String {
    match until {
        None => "re-auth".into(),
        Some(t) => jiff::Timestamp::from_second(t)
            .map(|ts| ts.to_string())
            .unwrap_or_else(|_| t.to_string()),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderHealth {
    providers: BTreeMap<String, ProviderState>,
}

impl ProviderHealth {
    pub fn iter(&self) -> impl Iterator<Item = (&String, &ProviderState)> {
        self.providers.iter()
    }

    pub fn get(&self, provider: &str) -> Option<&ProviderState> {
        self.providers.get(provider)
    }

    /// Work may be sent to it (healthy, probing, or never seen failing).
    pub fn is_available(&self, provider: &str) -> bool {
        !matches!(
            self.providers.get(provider),
            Some(ProviderState::Unhealthy { .. })
        )
    }

    /// `Some(until)` while unhealthy (`until = None`: until re-auth).
    pub fn unhealthy_until(&self, provider: &str) -> Option<Option<i64>> {
        match self.providers.get(provider) {
            Some(ProviderState::Unhealthy { until, .. }) => Some(*until),
            _ => None,
        }
    }

    /// Marks a provider unhealthy. Never shortens a cooldown, never turns
    /// "until re-auth" into a timed one, and ignores a reset time already
    /// past (an old record replayed after a restart).
    pub fn mark_unhealthy(
        &mut self,
        provider: &str,
        until: Option<i64>,
        class: FailureClass,
        reason: &str,
        now: i64,
    ) -> Option<Transition> {
        if until.is_some_and(|t| t <= now) {
            return None;
        }
        if let Some(ProviderState::Unhealthy { until: current, .. }) =
            self.providers.get_mut(provider)
        {
            match (*current, until) {
                (None, _) => return None,
                (Some(old), Some(new)) if new <= old => return None,
                (Some(_), new) => {
                    // Longer (or until re-auth): extend quietly, same incident.
                    *current = new;
                    if new.is_some() {
                        return None;
                    }
                }
            }
        }
        self.providers.insert(
            provider.to_string(),
            ProviderState::Unhealthy {
                since: now,
                until,
                class: class.into(),
                reason: reason.to_string(),
            },
        );
        Some(Transition::MarkedUnhealthy {
            provider: provider.to_string(),
            until,
            class,
            reason: reason.to_string(),
        })
    }

    /// A clean run on the provider: it works.
    pub fn observe_success(&mut self, provider: &str, now: i64) -> Option<Transition> {
        match self.providers.get(provider) {
            Some(ProviderState::Healthy { .. }) | None => None,
            Some(_) => {
                self.providers
                    .insert(provider.to_string(), ProviderState::Healthy { since: now });
                Some(Transition::Healed {
                    provider: provider.to_string(),
                    why: "a run succeeded",
                })
            }
        }
    }

    /// Time passes: cooldowns end (-> probing), quiet probes heal.
    pub fn tick(&mut self, now: i64, probe_grace: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        for (name, state) in self.providers.iter_mut() {
            match state {
                ProviderState::Unhealthy { until: Some(t), .. } if *t <= now => {
                    *state = ProviderState::Probing { since: now };
                    out.push(Transition::Probing {
                        provider: name.clone(),
                    });
                }
                ProviderState::Probing { since } if now - *since >= probe_grace => {
                    *state = ProviderState::Healthy { since: now };
                    out.push(Transition::Healed {
                        provider: name.clone(),
                        why: "no failure during the probe",
                    });
                }
                _ => {}
            }
        }
        out
    }

    /// The credential store changed: providers waiting for re-auth probe.
    pub fn reauthenticated(&mut self, now: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        for (name, state) in self.providers.iter_mut() {
            if matches!(state, ProviderState::Unhealthy { until: None, .. }) {
                *state = ProviderState::Probing { since: now };
                out.push(Transition::Probing {
                    provider: name.clone(),
                });
            }
        }
        out
    }

    /// `provider`'s own credential changed (a re-auth): it probes if it was
    /// waiting for one. Other providers are left alone.
    pub fn reauthenticated_one(&mut self, provider: &str, now: i64) -> Option<Transition> {
        let state = self.providers.get_mut(provider)?;
        if !matches!(state, ProviderState::Unhealthy { until: None, .. }) {
            return None;
        }
        *state = ProviderState::Probing { since: now };
        Some(Transition::Probing {
            provider: provider.to_string(),
        })
    }

    /// `kanban-watchdog provider reset NAME`.
    pub fn reset(&mut self, provider: &str, now: i64) -> Option<Transition> {
        let was = self
            .providers
            .insert(provider.to_string(), ProviderState::Healthy { since: now });
        match was {
            Some(ProviderState::Healthy { .. }) | None => None,
            Some(_) => Some(Transition::Healed {
                provider: provider.to_string(),
                why: "reset by operator",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rate_limit_cools_down_then_probes_then_heals() {
        let mut h = ProviderHealth::default();
        let t = h
            .mark_unhealthy(
                "openai-codex",
                Some(1_100),
                FailureClass::RateLimit,
                "429",
                1_000,
            )
            .unwrap();
        assert_eq!(
            t.message(),
            "provider openai-codex marked unhealthy: 429; team will use fallback chain until 1970-01-01T00:18:20Z"
        );
        assert!(!h.is_available("openai-codex"));
        assert!(h.tick(1_099, 600).is_empty());
        assert_eq!(
            h.tick(1_100, 600),
            [Transition::Probing {
                provider: "openai-codex".into()
            }]
        );
        assert!(h.is_available("openai-codex"));
        assert!(h.observe_success("openai-codex", 1_101).is_some());
        assert_eq!(h.get("openai-codex").unwrap().name(), "healthy");
    }

    #[test]
    fn expired_auth_waits_for_reauth_and_the_seed_message_matches() {
        let mut h = ProviderHealth::default();
        let t = h
            .mark_unhealthy(
                "xai-oauth",
                None,
                FailureClass::AuthExpired,
                "xAI OAuth state is missing access_token",
                0,
            )
            .unwrap();
        assert_eq!(
            t.message(),
            "provider xai-oauth marked unhealthy: xAI OAuth state is missing access_token; team will use fallback chain until re-auth"
        );
        assert!(
            h.tick(1_000_000, 1).is_empty(),
            "time alone does not heal it"
        );
        // A timed failure never weakens "until re-auth".
        assert!(
            h.mark_unhealthy("xai-oauth", Some(10), FailureClass::RateLimit, "429", 5)
                .is_none()
        );
        assert_eq!(h.unhealthy_until("xai-oauth"), Some(None));
        assert_eq!(h.reauthenticated(7).len(), 1);
        assert_eq!(h.get("xai-oauth").unwrap().name(), "probing");
    }

    #[test]
    fn a_past_reset_time_is_ignored() {
        let mut h = ProviderHealth::default();
        assert!(
            h.mark_unhealthy("p", Some(50), FailureClass::RateLimit, "old", 100)
                .is_none()
        );
        assert!(h.is_available("p"));
    }

    #[test]
    fn a_persisted_class_this_build_does_not_know_is_kept() {
        let text = r#"{"providers": {
            "a": {"state": "unhealthy", "since": 1, "until": null, "class": "solar_flare", "reason": "x"},
            "b": {"state": "unhealthy", "since": 1, "until": 9, "class": "rate_limit", "reason": "y"}}}"#;
        let h: ProviderHealth = serde_json::from_str(text).unwrap();
        match h.get("a") {
            Some(ProviderState::Unhealthy { class, .. }) => {
                assert_eq!(*class, ReadClass::Unknown("solar_flare".into()))
            }
            other => panic!("{other:?}"),
        }
        match h.get("b") {
            Some(ProviderState::Unhealthy { class, .. }) => {
                assert_eq!(class.known(), Some(FailureClass::RateLimit))
            }
            other => panic!("{other:?}"),
        }
        let again: ProviderHealth =
            serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(again, h);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Mark(u8, Option<i64>),
        Success(u8),
        Tick(i64),
        Reauth,
        Reset(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3, proptest::option::of(0i64..500)).prop_map(|(p, d)| Op::Mark(p, d)),
            (0u8..3).prop_map(Op::Success),
            (0i64..200).prop_map(Op::Tick),
            Just(Op::Reauth),
            (0u8..3).prop_map(Op::Reset),
        ]
    }

    proptest! {
        /// Invariants over any sequence: after a tick nothing is unhealthy
        /// past its time; a cooldown is never shortened by a later mark;
        /// "until re-auth" is only left through re-auth, reset or success.
        #[test]
        fn state_machine_invariants(ops in proptest::collection::vec(op(), 1..60)) {
            let mut h = ProviderHealth::default();
            let mut now = 0i64;
            for op in ops {
                let before = h.clone();
                match op {
                    Op::Mark(p, d) => {
                        let name = format!("p{p}");
                        let until = d.map(|d| now + d);
                        let prev = before.unhealthy_until(&name);
                        h.mark_unhealthy(&name, until, FailureClass::RateLimit, "x", now);
                        if let Some(prev) = prev {
                            let after = h.unhealthy_until(&name).expect("still unhealthy");
                            match (prev, after) {
                                (None, a) => prop_assert_eq!(a, None),
                                (Some(p), Some(a)) => prop_assert!(a >= p),
                                (Some(_), None) => {}
                            }
                        }
                    }
                    Op::Success(p) => {
                        let name = format!("p{p}");
                        h.observe_success(&name, now);
                        let available = h.is_available(&name);
                        prop_assert!(available);
                    }
                    Op::Tick(dt) => {
                        now += dt;
                        h.tick(now, 100);
                        for (_, s) in h.iter() {
                            if let ProviderState::Unhealthy { until: Some(t), .. } = s {
                                prop_assert!(*t > now);
                            }
                        }
                        for (name, s) in before.iter() {
                            if matches!(s, ProviderState::Unhealthy { until: None, .. }) {
                                prop_assert_eq!(h.unhealthy_until(name), Some(None));
                            }
                        }
                    }
                    Op::Reauth => {
                        h.reauthenticated(now);
                        for (_, s) in h.iter() {
                            let waits_for_reauth = matches!(s, ProviderState::Unhealthy { until: None, .. });
                            prop_assert!(!waits_for_reauth);
                        }
                    }
                    Op::Reset(p) => {
                        h.reset(&format!("p{p}"), now);
                        prop_assert_eq!(h.get(&format!("p{p}")).unwrap().name(), "healthy");
                    }
                }
            }
        }
    }
}
