//! Property tests: `redact` is idempotent and total, `classify` never panics.

use failure_signatures::{Catalogue, ClassifyContext, redact};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use proptest::prelude::*;

/// Fragments that exercise the redaction and classification regexes when
/// glued together in random order.
const FRAGMENTS: &[&str] = &[
    "Authorization",
    "authorization: ",
    "Bearer ",
    "bearer",
    "Basic ",
    ": ",
    "=",
    "\"",
    "'",
    "\\\"",
    "[REDACTED]",
    "[",
    "]",
    "sk-",
    "sk-ant-",
    "sk-or-v1-",
    "sk-proj-",
    "xai-",
    "AIza",
    "ghp_",
    "github_pat_",
    "eyJhbGciOiJIUzI1NiJ9",
    ".",
    "eyJzdWIiOiIxIn0",
    "access_token",
    "refresh_token",
    "password",
    "api_key",
    "token",
    "secret",
    "_",
    "-",
    "?",
    "&",
    "#",
    " ",
    "\t",
    "\n",
    "\r\n",
    "abcdefghijklmnop",
    "0123456789",
    "ABCDEFGHIJ",
    "é",
    "🔌",
    "’",
    "None",
    "HTTP 429",
    "429",
    "resets_at: ",
    "1780861905",
    "try again in ",
    "26.604s",
    "5 days ",
    "try again at ",
    "Jul 5th, 2026 ",
    "8:19 PM",
    "resets ",
    "3pm ",
    "(Europe/Lisbon)",
    "(Mars/Nowhere)",
    "\"retryDelay\":\"58s\"",
    "Retry-After: ",
    "reset at ",
    "2026-07-05T20:19:00Z",
    "usage_limit_reached",
    "RESOURCE_EXHAUSTED",
    "Request too large for",
    "rate_limit_exceeded",
    "Provider: ",
    "provider=",
    "12am",
    "99:99",
    "Feb 30, ",
    "9999999999999",
    "1h30m",
    "644ms",
];

fn fragments() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|v| v.concat())
}

fn ctx(now: i64) -> ClassifyContext {
    ClassifyContext::new(
        Timestamp::from_second(now).unwrap_or(Timestamp::UNIX_EPOCH),
        TimeZone::UTC,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn redact_is_idempotent_on_arbitrary_text(text in any::<String>()) {
        let once = redact(&text).into_owned();
        prop_assert_eq!(redact(&once).into_owned(), once);
    }

    #[test]
    fn redact_is_idempotent_on_secret_like_text(text in fragments()) {
        let once = redact(&text).into_owned();
        prop_assert_eq!(redact(&once).into_owned(), once);
    }

    #[test]
    fn redact_borrowed_means_unchanged(text in fragments()) {
        if let std::borrow::Cow::Borrowed(b) = redact(&text) {
            prop_assert_eq!(b, text.as_str());
        }
    }

    #[test]
    fn classify_never_panics_on_arbitrary_text(
        text in any::<String>(),
        now in -377_705_116_800_i64..253_402_207_200_i64,
    ) {
        let c = Catalogue::builtin().classify(&text, &ctx(now));
        if let Some(c) = c {
            prop_assert!(c.matched_line.len() <= 1024);
        }
    }

    #[test]
    fn classify_never_panics_on_failure_like_text(
        text in fragments(),
        now in prop_oneof![Just(1_783_252_800_i64), any::<i64>()],
    ) {
        if let Some(c) = Catalogue::builtin().classify(&text, &ctx(now)) {
            prop_assert!(c.matched_line.len() <= 1024);
            prop_assert!(!c.matched_line.contains('\n'));
            if let Some(d) = c.retry_after_s {
                prop_assert!(d.is_finite() && d >= 0.0);
            }
        }
    }
}
