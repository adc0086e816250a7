//! Extraction of "when does the limit reset" from failure texts.
//!
//! Extractors, in precedence order (the first that finds something wins;
//! the matched line is searched with all of them before the rest of the text,
//! where the occurrence nearest to the matched line is taken):
//!
//! 1. epoch seconds: `"resets_at":1777936568`, `'resets_at': 1780861905`,
//!    `resets_at: 1780861905`, `x-ratelimit-reset: 1780861905`,
//!    `usage limit reached|1780861905` (13-digit values are taken as ms);
//! 2. ISO-8601 after a reset keyword: `reset at 2026-07-05T20:19:00Z`,
//!    `x-ratelimit-reset: 2026-07-05T20:19:00+01:00` (no offset: local zone);
//! 3. wall clock after `try again at` / `resets` / `retry at`, with optional
//!    date and zone: `try again at Jul 5th, 2026 8:19 PM` (no zone:
//!    `ClassifyContext::local_tz`), `resets 3pm (Europe/Lisbon)` (no date: the
//!    next such time after `now`); an unknown zone falls back to the local zone;
//! 4. Gemini `"retryDelay":"58s"` (and gRPC `retry_delay { seconds: 58 }`);
//! 5. `resets_in_seconds: N`;
//! 6. relative durations: `try again in 26.604s`, `in 644ms`,
//!    `try again in 5 days 22 hours 11 minutes`, `resets in 1h30m`,
//!    `Retry-After: 120`, `x-ratelimit-reset-tokens: 6m0s`.
//!
//! Absolute results set `retry_after_s = max(0, resets_at - now)`; relative
//! ones set `resets_at = ceil(now + retry_after_s)`.

use std::sync::OnceLock;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use regex::{Captures, Regex, RegexBuilder};

use crate::ClassifyContext;

/// Relative delays above this are considered nonsense (seconds; 400 days).
const MAX_DELAY_S: f64 = 400.0 * 86_400.0;

/// A reset time: absolute epoch seconds plus the delay from `now`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Reset {
    pub resets_at: i64,
    pub retry_after_s: f64,
}

/// What one extractor found.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Found {
    Absolute(i64),
    Relative(f64),
}

impl Found {
    fn into_reset(self, ctx: &ClassifyContext) -> Option<Reset> {
        let now_s = ctx.now.as_second();
        match self {
            Found::Absolute(at) => Some(Reset {
                resets_at: at,
                retry_after_s: (at.saturating_sub(now_s)).max(0) as f64,
            }),
            Found::Relative(d) if d.is_finite() && (0.0..=MAX_DELAY_S).contains(&d) => {
                let now_f = now_s as f64 + f64::from(ctx.now.subsec_nanosecond()) / 1e9;
                let at = (now_f + d).ceil();
                // `at` is within ~400 days of a valid timestamp, so it fits i64.
                Some(Reset {
                    resets_at: at as i64,
                    retry_after_s: d,
                })
            }
            Found::Relative(_) => None,
        }
    }
}

type Convert = fn(&Captures<'_>, &str, &ClassifyContext) -> Option<Found>;

struct Extractor {
    re: Regex,
    convert: Convert,
}

impl Extractor {
    /// Every valid occurrence in `hay`: (start offset, reset).
    fn occurrences(&self, hay: &str, ctx: &ClassifyContext) -> Vec<(usize, Reset)> {
        self.re
            .captures_iter(hay)
            .filter_map(|c| {
                let start = c.get(0)?.start();
                let reset = (self.convert)(&c, hay, ctx)?.into_reset(ctx)?;
                Some((start, reset))
            })
            .collect()
    }
}

fn build(pattern: &str) -> Regex {
    // ASCII-only: faster (the lazy DFA handles ASCII word boundaries on any
    // input) and all these keywords are ASCII anyway.
    RegexBuilder::new(pattern)
        .unicode(false)
        .ignore_whitespace(true)
        .build()
        .expect("static reset-time regex must compile")
}

/// The extractors in precedence order; each level is a list of regexes.
fn levels() -> &'static [Vec<Extractor>] {
    static LEVELS: OnceLock<Vec<Vec<Extractor>>> = OnceLock::new();
    LEVELS.get_or_init(|| {
        vec![
            // 1. epoch
            vec![
                Extractor {
                    re: build(
                        r#"(?i) \b (?: resets?_?at | x-ratelimit-reset(?:-[a-z]+)? | reset_?time | reset )
                            ["']? \s* [:=] \s* ["']? ([0-9]{13}|[0-9]{10}) \b"#,
                    ),
                    convert: epoch,
                },
                Extractor {
                    re: build(r"(?i) \b limit \s reached \| ([0-9]{13}|[0-9]{10}) \b"),
                    convert: epoch,
                },
            ],
            // 2. ISO-8601
            vec![Extractor {
                re: build(
                    r#"(?i) \b (?: resets?(?:_?at|_?time)? | x-ratelimit-reset(?:-[a-z]+)? | retry[_-]?after
                              | try \s+ again \s+ (?:at|after) | available \s+ (?:again \s+)? (?:at|after|from) | until )
                        ["']? \s* (?:(?:at|after|on) \s+)? [:=]? \s* ["']?
                        ( [0-9]{4}-[0-9]{2}-[0-9]{2} [Tt\x20] [0-9]{2}:[0-9]{2} (?: :[0-9]{2} (?:[.,][0-9]{1,9})? )?
                          (?: [Zz] \b | \x20? [+-][0-9]{2} (?: :?[0-9]{2} )? | \x20 (?:UTC|GMT) \b )? )"#,
                ),
                convert: iso,
            }],
            // 3. wall clock
            vec![Extractor {
                re: build(
                    r"(?i) \b (?: try \s+ again | retry | resets? | available (?:\s+ again)? ) \s+ (?: (?:at|on|after) \s+ )?
                        (?: (?:mon|tue|wed|thu|fri|sat|sun)[a-z]* \.? ,? \s+ )?
                        (?: (jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]* \.? \s+ ([0-9]{1,2}) (?:st|nd|rd|th)?
                            (?: ,? \s+ ([0-9]{4}) )? ,? \s+ (?: at \s+ )? )?
                        ([0-9]{1,2}) (?: :([0-9]{2}) )? (?: :([0-9]{2}) )? \s* ( [ap]m \b | [ap]\.m\. )?
                        (?: \s* (?: \( ([a-z][a-z0-9_+-]* (?: /[a-z0-9_+-]+ )* ) \)
                                  | (UTC|GMT) \b
                                  | (?-i: ([A-Z][a-z]+ / [A-Za-z_]+ (?: /[A-Za-z_]+ )?) ) ) )?",
                ),
                convert: wall_clock,
            }],
            // 4. Gemini retryDelay
            vec![Extractor {
                re: build(
                    r#"(?i) (?: ["']? retry_?delay ["']? \s* [:=] \s* ["']? ([0-9]+(?:\.[0-9]+)?) s \b
                             | \b retry_delay \s* \{ \s* seconds \s* : \s* ([0-9]+) )"#,
                ),
                convert: seconds_capture,
            }],
            // 5. resets_in_seconds
            vec![Extractor {
                re: build(
                    r#"(?i) \b resets?_in_s(?:ec(?:ond)?s?)? ["']? \s* [:=] \s* ["']? ([0-9]+(?:\.[0-9]+)?) \b"#,
                ),
                convert: seconds_capture,
            }],
            // 6. relative durations
            vec![
                Extractor {
                    re: build(
                        r"(?i) \b (?: try \s+ again | retry | retrying | resets? | available (?:\s+ again)? )
                            \s+ (?:in|after) \s+ (?: about \s+ | approximately \s+ | ~ \s* )?",
                    ),
                    convert: duration_after_in,
                },
                Extractor {
                    re: build(
                        r#"(?i) \b (?: retry[_-]after ((?:[_-]?ms)?) (?:[_-]?s(?:ec(?:ond)?s?)?)? | x-ratelimit-reset(?:-[a-z]+)? () )
                            ["']? \s* [:=] \s* ["']?"#,
                    ),
                    convert: duration_after_header,
                },
            ],
        ]
    })
}

/// Finds the reset time for a classification whose matched line is `line`
/// (starting at byte `line_start` of `text`).
pub(crate) fn extract(
    line: &str,
    text: &str,
    line_start: usize,
    ctx: &ClassifyContext,
) -> Option<Reset> {
    let levels = levels();
    for level in levels {
        let first = level
            .iter()
            .flat_map(|ex| ex.occurrences(line, ctx))
            .min_by_key(|(pos, _)| *pos);
        if let Some((_, r)) = first {
            return Some(r);
        }
    }
    for level in levels {
        // Nearest to the matched line; on a tie the later one.
        let nearest = level
            .iter()
            .flat_map(|ex| ex.occurrences(text, ctx))
            .min_by_key(|(pos, _)| (pos.abs_diff(line_start), std::cmp::Reverse(*pos)));
        if let Some((_, r)) = nearest {
            return Some(r);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Converters
// ---------------------------------------------------------------------------

fn epoch(c: &Captures<'_>, _: &str, _: &ClassifyContext) -> Option<Found> {
    let digits = c.get(1)?.as_str();
    let mut v: i64 = digits.parse().ok()?;
    if digits.len() == 13 {
        v /= 1000;
    }
    // Sanity: 2001-09-09 .. 2286-11-20.
    (1_000_000_000..=9_999_999_999)
        .contains(&v)
        .then_some(Found::Absolute(v))
}

fn iso(c: &Captures<'_>, _: &str, ctx: &ClassifyContext) -> Option<Found> {
    parse_iso(c.get(1)?.as_str(), &ctx.local_tz).map(Found::Absolute)
}

/// Parses an ISO-8601-ish timestamp; without an offset it is a civil time in `tz`.
fn parse_iso(raw: &str, tz: &TimeZone) -> Option<i64> {
    let mut s = raw.trim().replace(',', ".");
    // Normalise "2026-07-05 20:19" -> "2026-07-05T20:19".
    if s.len() <= 10 || !s.is_char_boundary(10) || !s.is_char_boundary(11) {
        return None;
    }
    s.replace_range(10..11, "T");
    let upper = s.to_ascii_uppercase();
    let s = if let Some(base) = upper
        .strip_suffix(" UTC")
        .or_else(|| upper.strip_suffix(" GMT"))
    {
        format!("{base}Z")
    } else {
        upper.replace(' ', "")
    };
    let has_offset = s.ends_with('Z') || s.get(10..).is_some_and(|t| t.contains(['+', '-']));
    if has_offset {
        let s = normalise_offset(&s);
        s.parse::<Timestamp>().ok().map(Timestamp::as_second)
    } else {
        let dt: DateTime = s.parse().ok()?;
        tz.to_timestamp(dt).ok().map(Timestamp::as_second)
    }
}

/// `+0200` -> `+02:00`, `+02` -> `+02:00` (what the parser reliably accepts).
fn normalise_offset(s: &str) -> String {
    let Some(pos) = s
        .get(10..)
        .and_then(|t| t.rfind(['+', '-']))
        .map(|p| p + 10)
    else {
        return s.to_owned();
    };
    let (base, off) = s.split_at(pos);
    let digits: String = off[1..].chars().filter(char::is_ascii_digit).collect();
    let sign = &off[..1];
    match digits.len() {
        2 => format!("{base}{sign}{digits}:00"),
        4 => format!("{base}{sign}{}:{}", &digits[..2], &digits[2..]),
        _ => s.to_owned(),
    }
}

fn month_number(name: &str) -> Option<i8> {
    let m = name.get(..3)?.to_ascii_lowercase();
    let n = match m.as_str() {
        "jan" => 1,
        "feb" => 2,
        "mar" => 3,
        "apr" => 4,
        "may" => 5,
        "jun" => 6,
        "jul" => 7,
        "aug" => 8,
        "sep" => 9,
        "oct" => 10,
        "nov" => 11,
        "dec" => 12,
        _ => return None,
    };
    Some(n)
}

/// Resolves a zone name from the text; unknown names (or no tzdb) fall back
/// to the local zone.
fn resolve_zone(name: Option<&str>, ctx: &ClassifyContext) -> TimeZone {
    match name {
        None => ctx.local_tz.clone(),
        Some(n) if ["utc", "gmt", "z"].contains(&n.to_ascii_lowercase().as_str()) => TimeZone::UTC,
        Some(n) => TimeZone::get(n).unwrap_or_else(|_| ctx.local_tz.clone()),
    }
}

fn wall_clock(c: &Captures<'_>, _: &str, ctx: &ClassifyContext) -> Option<Found> {
    let num = |i: usize| -> Option<Option<i64>> {
        match c.get(i) {
            None => Some(None),
            Some(m) => m.as_str().parse::<i64>().ok().map(Some),
        }
    };
    let mut hour = num(4)??;
    let minute = num(5)?;
    let second = num(6)?.unwrap_or(0);
    let ampm = c.get(7).map(|m| m.as_str().to_ascii_lowercase());
    // A bare number ("resets 3") is not a time.
    if minute.is_none() && ampm.is_none() {
        return None;
    }
    let minute = minute.unwrap_or(0);
    if let Some(ampm) = &ampm {
        if !(1..=12).contains(&hour) {
            return None;
        }
        let pm = ampm.starts_with('p');
        hour = match (hour, pm) {
            (12, false) => 0,
            (12, true) => 12,
            (h, true) => h + 12,
            (h, false) => h,
        };
    }
    let time = Time::new(
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second).ok()?,
        0,
    )
    .ok()?;
    let zone_name = c.get(8).or_else(|| c.get(9)).or_else(|| c.get(10));
    let tz = resolve_zone(zone_name.map(|m| m.as_str()), ctx);
    let now = ctx.now;
    let today = now.to_zoned_datetime(tz.clone()).date();
    let at = |date: Date| -> Option<Timestamp> {
        tz.to_timestamp(DateTime::from_parts(date, time)).ok()
    };

    let ts = match c.get(1) {
        Some(month) => {
            let month = month_number(month.as_str())?;
            let day = i8::try_from(num(2)??).ok()?;
            match num(3)? {
                Some(year) => at(Date::new(i16::try_from(year).ok()?, month, day).ok()?)?,
                None => {
                    // No year: this year, unless that is well in the past.
                    let ts = at(Date::new(today.year(), month, day).ok()?)?;
                    if ts.as_second() + 2 * 86_400 < now.as_second() {
                        at(Date::new(today.year().checked_add(1)?, month, day).ok()?)?
                    } else {
                        ts
                    }
                }
            }
        }
        None => {
            // No date: the next such time after now.
            let ts = at(today)?;
            if ts > now {
                ts
            } else {
                at(today.tomorrow().ok()?)?
            }
        }
    };
    Some(Found::Absolute(ts.as_second()))
}

fn seconds_capture(c: &Captures<'_>, _: &str, _: &ClassifyContext) -> Option<Found> {
    let m = c.get(1).or_else(|| c.get(2))?;
    m.as_str().parse::<f64>().ok().map(Found::Relative)
}

fn duration_after_in(c: &Captures<'_>, hay: &str, _: &ClassifyContext) -> Option<Found> {
    let end = c.get(0)?.end();
    parse_duration(&hay[end..], None).map(Found::Relative)
}

fn duration_after_header(c: &Captures<'_>, hay: &str, _: &ClassifyContext) -> Option<Found> {
    let end = c.get(0)?.end();
    let ms = c.get(1).is_some_and(|m| !m.as_str().is_empty());
    let bare = if ms { 0.001 } else { 1.0 };
    parse_duration(&hay[end..], Some(bare)).map(Found::Relative)
}

/// Parses a duration at the start of `s`: `26.604s`, `644ms`, `1h30m`,
/// `5 days 22 hours 11 minutes`, `2 minutes and 30 seconds`, `6m0s`.
/// A bare number is accepted only when `bare_unit` (seconds per unit) is given.
pub(crate) fn parse_duration(s: &str, bare_unit: Option<f64>) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut total = 0.0_f64;
    let mut parts = 0;
    loop {
        let mut j = i;
        if parts > 0 {
            // Separators between components: spaces, commas, "and".
            while j < b.len() && (b[j] == b' ' || b[j] == b',') {
                j += 1;
            }
            if b[j..].len() >= 4 && b[j..j + 4].eq_ignore_ascii_case(b"and ") {
                j += 4;
                while j < b.len() && b[j] == b' ' {
                    j += 1;
                }
            }
        }
        // Number: digits, optionally "." digits.
        let num_start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j == num_start {
            break;
        }
        if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
            j += 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
        }
        let Ok(value) = s[num_start..j].parse::<f64>() else {
            break;
        };
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        let unit_start = j;
        while j < b.len() && b[j].is_ascii_alphabetic() {
            j += 1;
        }
        let unit = s[unit_start..j].to_ascii_lowercase();
        let seconds = match unit.as_str() {
            "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => value / 1000.0,
            "s" | "sec" | "secs" | "second" | "seconds" => value,
            "m" | "min" | "mins" | "minute" | "minutes" => value * 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => value * 3600.0,
            "d" | "day" | "days" => value * 86_400.0,
            "w" | "wk" | "wks" | "week" | "weeks" => value * 604_800.0,
            "" if parts == 0 => match bare_unit {
                Some(unit) => {
                    total = value * unit;
                    parts = 1;
                    break;
                }
                None => break,
            },
            _ => break,
        };
        total += seconds;
        parts += 1;
        i = j;
    }
    (parts > 0 && total.is_finite() && (0.0..=MAX_DELAY_S).contains(&total)).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ClassifyContext {
        ClassifyContext::new(
            Timestamp::from_second(1_780_000_000).expect("valid"),
            TimeZone::UTC,
        )
    }

    #[test]
    fn all_static_regexes_compile() {
        assert_eq!(levels().len(), 6);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("26.604s.", None), Some(26.604));
        assert_eq!(parse_duration("644ms", None), Some(0.644));
        assert_eq!(parse_duration("1h30m", None), Some(5400.0));
        assert_eq!(parse_duration("6m0s", None), Some(360.0));
        assert_eq!(
            parse_duration("5 days 22 hours 11 minutes.", None),
            Some(511_860.0)
        );
        assert_eq!(
            parse_duration("2 minutes and 30 seconds", None),
            Some(150.0)
        );
        assert_eq!(parse_duration("120", Some(1.0)), Some(120.0));
        assert_eq!(parse_duration("120", None), None);
        assert_eq!(parse_duration("5 mongooses", None), None);
        assert_eq!(parse_duration("3 hours and then", None), Some(10_800.0));
        assert_eq!(parse_duration("", None), None);
        assert_eq!(parse_duration("99999999999 days", None), None);
    }

    #[test]
    fn iso_forms() {
        let tz = TimeZone::UTC;
        assert_eq!(parse_iso("2026-07-05T20:19:00Z", &tz), Some(1_783_282_740));
        assert_eq!(parse_iso("2026-07-05 20:19:00Z", &tz), Some(1_783_282_740));
        assert_eq!(
            parse_iso("2026-07-05T21:19:00+01:00", &tz),
            Some(1_783_282_740)
        );
        assert_eq!(
            parse_iso("2026-07-05T21:19:00+0100", &tz),
            Some(1_783_282_740)
        );
        assert_eq!(
            parse_iso("2026-07-05T21:19:00+01", &tz),
            Some(1_783_282_740)
        );
        assert_eq!(
            parse_iso("2026-07-05T20:19:00.250Z", &tz),
            Some(1_783_282_740)
        );
        assert_eq!(parse_iso("2026-07-05 20:19 UTC", &tz), Some(1_783_282_740));
        assert_eq!(parse_iso("2026-07-05T20:19", &tz), Some(1_783_282_740));
        assert_eq!(parse_iso("2026-13-05T20:19", &tz), None);
    }

    #[test]
    fn relative_sets_ceiling_of_now_plus_delay() {
        let r = Found::Relative(26.604).into_reset(&ctx()).expect("reset");
        assert_eq!(r.resets_at, 1_780_000_027);
        assert_eq!(r.retry_after_s, 26.604);
        assert_eq!(Found::Relative(f64::NAN).into_reset(&ctx()), None);
        assert_eq!(Found::Relative(-1.0).into_reset(&ctx()), None);
    }

    #[test]
    fn absolute_in_the_past_clamps_delay() {
        let r = Found::Absolute(1_779_999_000)
            .into_reset(&ctx())
            .expect("reset");
        assert_eq!(r.resets_at, 1_779_999_000);
        assert_eq!(r.retry_after_s, 0.0);
    }
}
