//! Property tests for reset-time extraction: arbitrary and hostile text never
//! panics and never yields an implausible reset; a client's own retry backoff
//! is never read as a reset, even next to a real one; a duration reads the
//! same wherever a terminal wrapped it.

use std::sync::LazyLock;

use failure_signatures::{Catalogue, Classification, ClassifyContext};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use proptest::prelude::*;

/// The corpus' "now" (2026-06-07T18:51:45Z).
const NOW: i64 = 1_780_858_305;
const MAX_DELAY_S: f64 = 400.0 * 86_400.0;

/// Every non-blank line is a candidate, so the extraction always runs.
fn any_line() -> &'static Catalogue {
    static CAT: LazyLock<Catalogue> = LazyLock::new(|| {
        Catalogue::from_yaml_str(
            "signatures:\n  - name: any-line\n    class: rate_limit\n    pattern: '\\S'\n",
            "test",
        )
        .expect("valid")
    });
    &CAT
}

/// Only lines with `LIMIT HIT` are candidates.
fn limit_hit() -> &'static Catalogue {
    static CAT: LazyLock<Catalogue> = LazyLock::new(|| {
        Catalogue::from_yaml_str(
            "signatures:\n  - name: limit-hit\n    class: rate_limit\n    pattern: 'LIMIT HIT'\n",
            "test",
        )
        .expect("valid")
    });
    &CAT
}

fn ctx(now: i64) -> ClassifyContext {
    ClassifyContext::new(
        Timestamp::from_second(now).unwrap_or(Timestamp::UNIX_EPOCH),
        TimeZone::UTC,
    )
}

/// A reset is either a plausible absolute time or a plausible delay.
fn plausible(c: &Classification) -> Result<(), TestCaseError> {
    match (c.resets_at, c.retry_after_s) {
        (None, None) => {}
        (Some(at), Some(after)) => {
            prop_assert!(after.is_finite() && after >= 0.0, "{c:?}");
            prop_assert!(
                (1_000_000_000..=9_999_999_999).contains(&at) || after <= MAX_DELAY_S,
                "{c:?}"
            );
        }
        _ => prop_assert!(false, "half a reset: {c:?}"),
    }
    Ok(())
}

/// Reset-time phrases and hostile values, glued in random order.
const FRAGMENTS: &[&str] = &[
    "LIMIT HIT ",
    "try again in ",
    "try again at ",
    "try a\ngain after ",
    "Please retry after ",
    "Please retry in ",
    "Please wait ",
    " before trying again",
    "请等待 ",
    " を待って",
    "Retrying in ",
    "retrying in ",
    "will retry in ",
    " (attempt 2/10)",
    "… ",
    "resets ",
    "reset at ",
    "Your limit will reset\n     at ",
    "resets_at: ",
    "\\\"resetsAt\\\": ",
    "resets_in_seconds: ",
    "\"retryDelay\":\"",
    "retry_delay { seconds: ",
    "Retry-After: ",
    "retry-after-ms: ",
    "x-ratelimit-reset: ",
    "x-ratelimit-reset-tokens: ",
    "usage limit reached|",
    "cycle ends on ",
    "1780861905",
    "1780861905123",
    "99999999999999999999",
    "9999999999",
    "1e300",
    "179769313486231570000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0",
    "5",
    "26.604",
    ".",
    "s",
    "ms",
    " seconds",
    " days ",
    " hours ",
    " minutes",
    "1m2.5s",
    "\n",
    "\r\n",
    " ",
    ",",
    "11",
    ":52",
    "8:19 PM",
    "12am",
    "midnight",
    "noon",
    "3pm",
    "25:99",
    " (Europe/Warsaw)",
    " (Etc/GMT+5)",
    " (Mars/Olympus_Mons)",
    " (UTC+99)",
    " UTC+14",
    " GMT-12:00",
    " Pacific Time (PT)",
    " PDT",
    "Jul 5th, 2026 ",
    "Dec 31st, 9999 ",
    "Jan 1, 0000 ",
    "Feb 30, ",
    "10 de jul. de 2026, ",
    "31 de dez. de 9999, ",
    "10. Juli 2026 um ",
    "10 juil. 2026 à ",
    "11/17/2025",
    "12/31/9999",
    "10.07.2026",
    "2026/07/10",
    "9999-12-31T23:59:59Z",
    "2026-07-05T20:19:00+01:00",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Sun, 05 Jul 2026 20:19:00 GMT",
    "é",
    "’",
    "🔌",
];

fn fragments() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..30).prop_map(|v| v.concat())
}

/// A client's own retry announcement, as various tools print it.
fn backoff_line() -> impl Strategy<Value = String> {
    let n = prop_oneof![
        (0u32..100_000).prop_map(|n| n.to_string()),
        (0u32..1000, 0u32..1_000_000).prop_map(|(a, b)| format!("{a}.{b}")),
    ];
    (n, 0usize..8, 1u32..10).prop_map(|(n, form, k)| match form {
        0 => format!("⎿  API Error (Connection error.) · Retrying in {n} seconds… (attempt {k}/10)"),
        1 => format!("Unable to connect to API (ECONNRESET) · Retrying in {n}s · attempt {k}/10"),
        2 => format!("2025-09-18 14:31:31,457 - INFO - Retrying request to /models in {n} seconds"),
        3 => format!(
            "Retrying langchain.chat_models.openai.acompletion_with_retry.<locals>._completion_with_retry in {n} seconds as it raised RateLimitError: 429."
        ),
        4 => format!("[INFO] [Gemini API] Received 500 server error. Retrying in {n}ms... (attempt {k}/3)"),
        5 => format!("rate limited, retrying in {n}s (attempt {k})"),
        6 => format!("Rate limited by the API. Will retry in {n} seconds"),
        _ => format!("429 Too Many Requests, retry in {n}s (retry {k} of 5)"),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(
        text in any::<String>(),
        now in prop_oneof![Just(NOW), -377_705_116_800_i64..253_402_207_200_i64],
    ) {
        if let Some(c) = any_line().classify(&text, &ctx(now)) {
            plausible(&c)?;
        }
    }

    #[test]
    fn reset_like_text_never_panics_and_stays_plausible(
        text in fragments(),
        now in prop_oneof![Just(NOW), any::<i64>()],
    ) {
        for cat in [any_line(), limit_hit()] {
            if let Some(c) = cat.classify(&text, &ctx(now)) {
                plausible(&c)?;
            }
        }
    }

    #[test]
    fn huge_numbers_are_ignored(digits in "[1-9][0-9]{20,400}", unit in prop::sample::select(&["s", " seconds", " days", "ms", ""][..])) {
        for text in [
            format!("LIMIT HIT, try again in {digits}{unit}"),
            format!("LIMIT HIT, resets_at: {digits}"),
            format!("LIMIT HIT \"retryDelay\":\"{digits}s\""),
            format!("LIMIT HIT resets_in_seconds: {digits}"),
            format!("LIMIT HIT Retry-After: {digits}"),
            format!("LIMIT HIT, Please wait {digits}{unit} before trying again"),
        ] {
            let c = limit_hit().classify(&text, &ctx(NOW)).expect("classified");
            prop_assert_eq!((c.resets_at, c.retry_after_s), (None, None), "{}", text);
        }
    }

    #[test]
    fn far_years_are_ignored(year in prop_oneof![0i32..2001, 2287i32..=9999]) {
        for text in [
            format!("LIMIT HIT, try again at Jul 5th, {year} 8:19 PM"),
            format!("LIMIT HIT, try again at 10 de jul. de {year}, 11:52"),
            format!("LIMIT HIT, resets on 7/10/{year}"),
            format!("LIMIT HIT, reset at {year:04}-07-05T20:19:00Z"),
            format!("LIMIT HIT, Retry-After: Sun, 05 Jul {year:04} 20:19:00 GMT"),
        ] {
            let c = limit_hit().classify(&text, &ctx(NOW)).expect("classified");
            prop_assert_eq!((c.resets_at, c.retry_after_s), (None, None), "{}", text);
        }
    }

    #[test]
    fn client_backoff_is_never_a_reset(lines in prop::collection::vec(backoff_line(), 1..6)) {
        let text = lines.join("\n");
        if let Some(c) = any_line().classify(&text, &ctx(NOW)) {
            prop_assert_eq!((c.resets_at, c.retry_after_s), (None, None), "{}", text);
        }
    }

    #[test]
    fn provider_reset_wins_over_backoff_on_other_lines(
        before in prop::collection::vec(backoff_line(), 0..4),
        after in prop::collection::vec(backoff_line(), 0..4),
        secs in 1u32..100_000,
    ) {
        let mut lines = before;
        lines.push(format!("LIMIT HIT: Rate limit reached. Please try again in {secs}s."));
        lines.extend(after);
        let text = lines.join("\n");
        let c = limit_hit().classify(&text, &ctx(NOW)).expect("classified");
        prop_assert_eq!(c.retry_after_s, Some(f64::from(secs)), "{}", text);
    }

    #[test]
    fn a_wrapped_duration_reads_the_same(
        d in 0u32..30, h in 0u32..24, m in 0u32..60,
        cut in 0usize..7,
    ) {
        // Codex: `try again in 5 days 22 hours 11 minutes.`; one of its
        // spaces becomes a line break.
        let words = ["LIMIT HIT, or try", "again", "in", &format!("{d}"), "days", &format!("{h}"), "hours", &format!("{m}"), "minutes."];
        let cut = cut + 1; // never before the first word
        let text: String = words
            .iter()
            .enumerate()
            .map(|(i, w)| if i == 0 { (*w).to_string() } else if i == cut { format!("\n{w}") } else { format!(" {w}") })
            .collect();
        let c = limit_hit().classify(&text, &ctx(NOW)).expect("classified");
        let want = f64::from(d * 86_400 + h * 3_600 + m * 60);
        prop_assert_eq!(c.retry_after_s, Some(want), "{}", text);
    }
}
