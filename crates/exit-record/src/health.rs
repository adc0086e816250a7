//! `health.json`: what kanban-watchdog publishes about provider health and
//! `worker-shim` reads before it starts a worker. Version
//! [`HEALTH_VERSION`]; a reader refuses any other version
//! ([`HealthFileError::UnknownVersion`]) and then acts as if there were no
//! file: the worker runs, unsteered and never skipped.
//!
//! ```json
//! {"version": 1,
//!  "providers": {"openai-codex": {"state": "unhealthy", "since": 1, "until": 2,
//!                                 "class": "rate_limit", "reason": "..."}},
//!  "steer": {"coder": {"provider": "openrouter", "model": "m", "from": "openai-codex"}},
//!  "hold": {"writer": {"provider": "xai-oauth"}},
//!  "generated_at": 1700000000}
//! ```

use std::collections::BTreeMap;

use failure_signatures::ReadClass;
use serde::{Deserialize, Serialize};

use crate::ReadName;

/// The `version` this build writes and reads.
pub const HEALTH_VERSION: u32 = 1;

/// The whole document.
///
/// `generated_at`, `providers` and `hold` are read leniently: a part of the
/// wrong shape reads as absent (no skip), never refuses the file, so a
/// damaged part never costs the steering the rest of the file gives. A
/// file without `version` (never written by the watchdog) is read for
/// steering but never skips a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthDoc {
    /// [`HEALTH_VERSION`] (checked by [`parse_health`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// When the watchdog last wrote the file (epoch s); rewritten at least
    /// every minute while it runs.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub generated_at: Option<i64>,
    /// Every provider the watchdog knows, by name.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub providers: Option<BTreeMap<String, ProviderEntry>>,
    /// Profiles whose primary is unhealthy, to run on a healthy fallback.
    #[serde(default)]
    pub steer: BTreeMap<String, SteerEntry>,
    /// Profiles whose primary is unhealthy with no healthy fallback: their
    /// kanban workers are not started.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub hold: Option<BTreeMap<String, HoldEntry>>,
}

/// The name of a provider's state (`state` of the watchdog's
/// `ProviderState`): `healthy`, `unhealthy` or `probing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Healthy,
    Unhealthy,
    Probing,
}

impl HealthState {
    /// Its name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Probing => "probing",
        }
    }
}

impl AsRef<str> for HealthState {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider's state (the watchdog's `ProviderState`, tagged by `state`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEntry {
    /// `healthy`, `unhealthy` or `probing`; one this build does not know
    /// (a newer watchdog wrote the file) is kept as [`ReadName::Unknown`]:
    /// not unhealthy, never refusing the entry.
    pub state: ReadName<HealthState>,
    /// Since when (epoch s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Unhealthy until (epoch s); absent or null: until re-auth or an
    /// operator reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    /// The failure class (`rate_limit`, `auth_expired`, ...); one this
    /// build does not know (a newer watchdog wrote the file) is kept as
    /// [`ReadClass::Unknown`], never refusing the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<ReadClass>,
    /// One redacted line saying why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where a profile's new runs go instead of its unhealthy primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteerEntry {
    pub provider: String,
    #[serde(default)]
    pub model: Option<String>,
    /// The unhealthy primary.
    #[serde(default)]
    pub from: Option<String>,
}

/// The unhealthy provider a profile's runs wait for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldEntry {
    pub provider: String,
}

/// Why a `health.json` was not read.
#[derive(Debug, thiserror::Error)]
pub enum HealthFileError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("version {found} is not supported (this build reads {HEALTH_VERSION})")]
    UnknownVersion { found: String },
}

/// Parses a `health.json`, refusing any version but [`HEALTH_VERSION`]
/// before reading the rest (so an unknown version is reported as such).
pub fn parse_health(bytes: &[u8]) -> Result<HealthDoc, HealthFileError> {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        version: Option<serde_json::Value>,
    }
    let envelope: Envelope = serde_json::from_slice(bytes)?;
    if let Some(v) = envelope.version
        && v.as_u64() != Some(u64::from(HEALTH_VERSION))
    {
        return Err(HealthFileError::UnknownVersion {
            found: v.to_string().chars().take(32).collect(),
        });
    }
    Ok(serde_json::from_slice(bytes)?)
}

/// `None` for a value of the wrong shape instead of an error.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: &str = r#"{"version":1,"providers":{"openai-codex":{"state":"unhealthy","since":10,"until":null,"class":"auth_expired","reason":"r"},"openrouter":{"state":"healthy","since":5}},"steer":{"coder":{"provider":"openrouter","model":"m","from":"openai-codex"}},"hold":{"writer":{"provider":"openai-codex"}},"generated_at":1700000000}"#;

    #[test]
    fn what_the_watchdog_writes_today_reads_whole_and_round_trips() {
        let doc = parse_health(TODAY.as_bytes()).unwrap();
        assert_eq!(doc.version, Some(HEALTH_VERSION));
        assert_eq!(doc.generated_at, Some(1_700_000_000));
        let p = &doc.providers.as_ref().unwrap()["openai-codex"];
        assert_eq!(p.state, HealthState::Unhealthy);
        assert_eq!(p.until, None);
        assert_eq!(
            p.class.as_ref().map(ReadClass::as_str),
            Some("auth_expired")
        );
        assert_eq!(
            p.class.as_ref().and_then(ReadClass::known),
            Some(failure_signatures::FailureClass::AuthExpired)
        );
        assert_eq!(doc.steer["coder"].from.as_deref(), Some("openai-codex"));
        assert_eq!(
            doc.hold.as_ref().unwrap()["writer"].provider,
            "openai-codex"
        );
        let again = parse_health(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(again, doc);
    }

    #[test]
    fn an_unknown_class_is_kept_as_written_and_costs_nothing_else() {
        let text = TODAY.replace("auth_expired", "solar_flare");
        let doc = parse_health(text.as_bytes()).unwrap();
        let providers = doc.providers.as_ref().expect("the providers still read");
        let p = &providers["openai-codex"];
        assert_eq!(p.class, Some(ReadClass::Unknown("solar_flare".into())));
        assert_eq!(p.until, None);
        assert_eq!(providers["openrouter"].state, HealthState::Healthy);
        let written = serde_json::to_string(&doc).unwrap();
        assert!(written.contains(r#""class":"solar_flare""#), "{written}");
    }

    #[test]
    fn an_unknown_state_is_kept_as_written_and_costs_nothing_else() {
        let text = TODAY.replace(r#""state":"healthy""#, r#""state":"draining""#);
        let doc = parse_health(text.as_bytes()).unwrap();
        let providers = doc.providers.as_ref().expect("the providers still read");
        assert_eq!(
            providers["openrouter"].state,
            ReadName::Unknown("draining".into())
        );
        assert_eq!(providers["openai-codex"].state, HealthState::Unhealthy);
        let written = serde_json::to_string(&doc).unwrap();
        assert!(written.contains(r#""state":"draining""#), "{written}");
    }

    #[test]
    fn an_unknown_version_is_refused_with_its_own_error() {
        for v in ["2", "0", "\"1\"", "1.5"] {
            let text = TODAY.replace(r#""version":1"#, &format!(r#""version":{v}"#));
            let err = parse_health(text.as_bytes()).unwrap_err();
            assert!(
                matches!(err, HealthFileError::UnknownVersion { .. }),
                "{v}: {err}"
            );
        }
    }

    #[test]
    fn a_damaged_part_reads_as_absent_but_broken_json_is_refused() {
        let doc = parse_health(br#"{"version":1,"hold":7,"providers":[],"steer":{}}"#).unwrap();
        assert_eq!(doc.hold, None);
        assert_eq!(doc.providers, None);
        assert!(matches!(
            parse_health(b"{\"steer\":"),
            Err(HealthFileError::Json(_))
        ));
        assert!(matches!(
            parse_health(br#"{"steer":{"coder":{"provider":42}}}"#),
            Err(HealthFileError::Json(_))
        ));
    }
}
