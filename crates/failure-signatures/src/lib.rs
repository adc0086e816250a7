//! Classification of LLM provider failures from captured worker output.
//!
//! When a worker process exits, the shim captures the head and tail of its
//! stdout/stderr. This crate scans that text for known provider failure
//! messages (HTTP 429 usage limits, quota, overload, expired OAuth, ...) using
//! a [`Catalogue`] of regex *signatures*, decides which [`FailureClass`] the
//! failure belongs to, whether it is transient, and — when the text says so —
//! when the provider limit resets.
//!
//! ```
//! use failure_signatures::{Catalogue, ClassifyContext, FailureClass};
//!
//! let catalogue = Catalogue::builtin();
//! let ctx = ClassifyContext::new(
//!     jiff::Timestamp::from_second(1_780_858_305).unwrap(),
//!     jiff::tz::TimeZone::UTC,
//! );
//! let text = "HTTP 429: The usage limit has been reached. plan_type: team, resets_at: 1780861905";
//! let c = catalogue.classify(text, &ctx).expect("classified");
//! assert_eq!(c.class, FailureClass::RateLimit);
//! assert_eq!(c.resets_at, Some(1_780_861_905));
//! assert!(c.transient);
//! ```
//!
//! # Matching
//!
//! See [`Catalogue::judge`]: each stream line by line (each line capped at
//! 8 KiB), the candidate signatures are found (for the built-in catalogue
//! by literals computed at build time, see `build.rs`, and only their
//! regexes compiled; for a user catalogue by a lazily compiled `RegexSet`), a
//! match counts only as [`evidence`] (at the end of its stream, not quoted,
//! a generic one only with LLM-API context), and of those the most specific
//! wins (priority, then provider-specific, then longest pattern, then
//! catalogue order).
//!
//! # Reset time
//!
//! Extracted from the matched line first, then from the rest of the text
//! (the occurrence nearest the matched line): epoch seconds and milliseconds
//! (`resets_at`, `x-ratelimit-reset`, `Claude AI usage limit reached|<epoch>`),
//! ISO-8601 and HTTP-date times, wall-clock times with or without a date and a
//! zone (`try again at Jul 5th, 2026 8:19 PM`, `resets 3pm (Europe/Lisbon)`,
//! day-first and localized dates such as `10 de jul. de 2026, 11:52`; no zone:
//! [`ClassifyContext::local_tz`]), Gemini `retryDelay`, `resets_in_seconds`,
//! and relative durations (`Please try again in 26.604s`, `retry after 3
//! seconds`, `Please wait 17 seconds before trying again`, `5 days 22 hours
//! 11 minutes`, also when a line break cuts them). The full list, in
//! precedence order, is the header of `src/reset.rs`.
//!
//! A client's own backoff is never the provider's reset: `Retrying in 3
//! seconds… (attempt 2/10)`, `will retry in`, a duration followed by
//! `(attempt N/M)`. Relative delays over 400 days and times outside
//! 2001..2286 are ignored; no number, however long, panics.
//!
//! An absolute result sets `resets_at` and `retry_after_s = max(0, resets_at - now)`;
//! a relative one sets `retry_after_s` and `resets_at = ceil(now + retry_after_s)`.
//!
//! # Provider
//!
//! The winning signature's `provider`, else inferred from the text (matched
//! line first, then the nearest occurrence elsewhere): a Hermes
//! `🔌 Provider: openai-codex` line or `provider=xai`, an SDK exception prefix
//! (`openai.RateLimitError`), or a well-known API host (`api.anthropic.com`).
//!
//! # Redaction
//!
//! Secrets can be masked with [`redact()`] before output is stored anywhere;
//! [`Classification::matched_line`] is always redacted.

mod catalogue;
mod error;
pub mod evidence;
pub mod hermes_frame;
mod local_tz;
mod memory;
mod prefilter;
mod provider;
pub mod redact;
mod reset;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use catalogue::{Candidate, CandidateOutcome, Catalogue, Judgement, Signature};
pub use error::CatalogueError;
pub use local_tz::local_time_zone;
pub use memory::prefer_small_memory;
pub use provider::same_provider;
pub use redact::redact;

/// What kind of provider failure a worker ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Too many requests / tokens in a window, or a plan usage limit (HTTP 429).
    RateLimit,
    /// A quota was exhausted (may need billing action, see `transient`).
    Quota,
    /// The provider is overloaded (HTTP 529/503).
    Overloaded,
    /// Credentials expired or were revoked; needs re-authentication.
    AuthExpired,
    /// Credentials are wrong (bad API key, HTTP 401).
    AuthInvalid,
    /// Connection refused/reset, DNS failure, timeouts talking to the API.
    Network,
    /// The request (prompt/context) is too large; retrying will not help.
    RequestTooLarge,
    /// Provider-side 5xx error.
    ServerError,
    /// Out of credits / payment required.
    Billing,
}

impl FailureClass {
    /// Every class, in declaration order.
    pub const ALL: [FailureClass; 9] = [
        FailureClass::RateLimit,
        FailureClass::Quota,
        FailureClass::Overloaded,
        FailureClass::AuthExpired,
        FailureClass::AuthInvalid,
        FailureClass::Network,
        FailureClass::RequestTooLarge,
        FailureClass::ServerError,
        FailureClass::Billing,
    ];

    /// The snake_case name used in YAML/JSON (`rate_limit`, `auth_expired`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureClass::RateLimit => "rate_limit",
            FailureClass::Quota => "quota",
            FailureClass::Overloaded => "overloaded",
            FailureClass::AuthExpired => "auth_expired",
            FailureClass::AuthInvalid => "auth_invalid",
            FailureClass::Network => "network",
            FailureClass::RequestTooLarge => "request_too_large",
            FailureClass::ServerError => "server_error",
            FailureClass::Billing => "billing",
        }
    }

    /// Whether a failure of this class is, by default, worth retrying later
    /// without human intervention: `rate_limit`, `quota`, `overloaded`,
    /// `network` and `server_error` are; the others are not. A signature may
    /// override this (e.g. OpenAI `insufficient_quota` is a non-transient quota).
    pub fn default_transient(&self) -> bool {
        matches!(
            self,
            FailureClass::RateLimit
                | FailureClass::Quota
                | FailureClass::Overloaded
                | FailureClass::Network
                | FailureClass::ServerError
        )
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure class as a file names it: one this build knows, or the name
/// of one it does not (a newer build wrote the file), kept as written so it
/// is shown and written back unchanged instead of failing the whole read.
///
/// Serialized as the bare name (`"rate_limit"`), as a [`FailureClass`] is.
/// Build one from text with [`From<&str>`], which keeps the two variants
/// apart (a known name never becomes [`ReadClass::Unknown`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReadClass {
    /// A class this build knows.
    Known(FailureClass),
    /// The name of a class this build does not know.
    Unknown(String),
}

impl ReadClass {
    /// The class, when this build knows it.
    pub fn known(&self) -> Option<FailureClass> {
        match self {
            ReadClass::Known(c) => Some(*c),
            ReadClass::Unknown(_) => None,
        }
    }

    /// The name as written (`rate_limit`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            ReadClass::Known(c) => c.as_str(),
            ReadClass::Unknown(name) => name,
        }
    }
}

impl From<FailureClass> for ReadClass {
    fn from(c: FailureClass) -> Self {
        ReadClass::Known(c)
    }
}

impl From<&str> for ReadClass {
    fn from(name: &str) -> Self {
        name.parse()
            .map(ReadClass::Known)
            .unwrap_or_else(|_| ReadClass::Unknown(name.to_owned()))
    }
}

impl fmt::Display for ReadClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned by [`FailureClass::from_str`] for an unknown class name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown failure class `{0}` (expected one of: rate_limit, quota, overloaded, auth_expired, auth_invalid, network, request_too_large, server_error, billing)"
)]
pub struct UnknownClassError(pub String);

impl FromStr for FailureClass {
    type Err = UnknownClassError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FailureClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownClassError(s.to_owned()))
    }
}

/// The outcome of [`Catalogue::classify`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// The failure class of the winning signature.
    pub class: FailureClass,
    /// Name of the winning signature.
    pub signature: String,
    /// The signature's provider, else one inferred from the text.
    pub provider: Option<String>,
    /// Whether requeueing later (without a human) makes sense.
    pub transient: bool,
    /// The whole line that matched: trimmed, redacted, capped at 1 KiB.
    pub matched_line: String,
    /// When the limit resets, in epoch seconds (absolute). Also filled from
    /// `retry_after_s` + `now` when the text only gave a relative delay.
    pub resets_at: Option<i64>,
    /// Relative delay in seconds when the text gave one; otherwise
    /// `resets_at - now` (clamped at 0) when an absolute reset was found.
    pub retry_after_s: Option<f64>,
}

/// Context needed to turn relative / zone-less reset times into absolute ones.
#[derive(Clone, Debug)]
pub struct ClassifyContext {
    /// "Now" for relative times: the record's end time (when the worker exited).
    pub now: jiff::Timestamp,
    /// Time zone for wall-clock times that carry no zone (`try again at 8:19 PM`).
    pub local_tz: jiff::tz::TimeZone,
}

impl ClassifyContext {
    /// A context with an explicit `now` and local time zone.
    pub fn new(now: jiff::Timestamp, local_tz: jiff::tz::TimeZone) -> Self {
        ClassifyContext { now, local_tz }
    }

    /// The current time and the system time zone (jiff's, cached: for a
    /// long-lived caller; a short-lived one takes [`local_time_zone`]).
    pub fn system_now() -> Self {
        ClassifyContext {
            now: jiff::Timestamp::now(),
            local_tz: jiff::tz::TimeZone::system(),
        }
    }
}

/// Tests: a prerequisite is missing. Under CI (`CI=true` or `1`) the test
/// fails; elsewhere it prints `SKIPPED: why` and the caller returns. The
/// workspace's rule (`test_support::prerequisite_missing`), which this crate
/// cannot call: test-support depends on it.
#[cfg(test)]
pub(crate) fn prerequisite_missing(why: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "prerequisite missing under CI=true: {why}");
    eprintln!("SKIPPED: {why}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_class_is_written_as_its_bare_name_and_keeps_an_unknown_one() {
        for c in FailureClass::ALL {
            let read = ReadClass::from(c);
            let text = serde_yaml::to_string(&read).unwrap();
            assert_eq!(text, serde_yaml::to_string(&c).unwrap());
            assert_eq!(serde_yaml::from_str::<ReadClass>(&text).unwrap(), read);
            assert_eq!(ReadClass::from(c.as_str()), read);
            assert_eq!(read.known(), Some(c));
            assert_eq!(read.to_string(), c.as_str());
        }
        let newer: ReadClass = serde_yaml::from_str("solar_flare").unwrap();
        assert_eq!(newer, ReadClass::Unknown("solar_flare".into()));
        assert_eq!(newer, ReadClass::from("solar_flare"));
        assert_eq!(newer.known(), None);
        assert_eq!(serde_yaml::to_string(&newer).unwrap(), "solar_flare\n");
    }
}
