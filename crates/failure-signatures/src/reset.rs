//! Extraction of "when does the limit reset" from failure texts.
//!
//! Extractors, in precedence order (the first level that finds something
//! wins):
//!
//! 1. epoch seconds: `"resets_at":1777936568`, `'resets_at': 1780861905`,
//!    `resets_at: 1780861905`, `\"resetsAt\": 1733914800` (escaped JSON),
//!    `x-ratelimit-reset: 1780861905`, `usage limit reached|1780861905`
//!    (13-digit values are taken as ms);
//! 2. ISO-8601 after a reset keyword: `reset at 2026-07-05T20:19:00Z`,
//!    `x-ratelimit-reset: 2026-07-05T20:19:00+01:00` (no offset: local zone),
//!    and an HTTP-date: `Retry-After: Wed, 21 Oct 2026 07:28:00 GMT`;
//! 3. wall clock / calendar date after `try again at` / `resets` / `retry at`
//!    / `available at` / `cycle ends on`, with optional date and zone:
//!    * month first: `try again at Jul 5th, 2026 8:19 PM`, `resets Jul 7, 3pm`;
//!    * day first, English and Latin-script localized month names (pt, es,
//!      fr, it, de): `try again at 10 de jul. de 2026, 11:52`,
//!      `try again at 10 Jul 2026, 11:52`, `10. Juli 2026 um 11:52`;
//!    * numeric: `ends on 11/17/2025` (US month/day unless the first number
//!      is over 12), `10.07.2026, 11:52` (day.month), `2026/07/10 11:52`;
//!    * time only: `resets 3pm (Europe/Lisbon)`, `reset at 12am`,
//!      `reset at midnight Pacific Time (PT)`, `resets 15:00 UTC`.
//!
//!    Zones: `(Area/City)`, a bare `Area/City`, `UTC`/`GMT` with an optional
//!    offset (`UTC+8`), US `Pacific`/`Eastern`/`Central`/`Mountain Time`,
//!    `PT`/`PST`/`PDT`/`ET`/`EST`/`EDT`. No zone: `ClassifyContext::local_tz`;
//!    an unknown zone (or no tzdb) falls back to the local zone. No date: the
//!    next such time after `now`, except that a written minute which has
//!    begun, or ended less than 10 minutes ago, is that minute's end (now,
//!    rounded up, once passed), not tomorrow; a wait written beside it, as
//!    Hermes 0.22 prints (`Limit resets at 01:57 (in 1m).`, `(in 2h 03m)`),
//!    picks the day and caps the reset at `now + wait` (see
//!    [`resolve_clock`]); no year: this year unless that is more than 2 days
//!    ago; a date without a time: midnight;
//! 4. Gemini `"retryDelay":"58s"` (and gRPC `retry_delay { seconds: 58 }`);
//! 5. `resets_in_seconds: N`;
//! 6. relative durations: `try again in 26.604s`, `in 644ms`, `in 1m2.5s`,
//!    `try again in 5 days 22 hours 11 minutes`, `resets in 1h30m`,
//!    `Please retry after 3 seconds`, `please try again after 1 seconds`,
//!    `Please wait 17 seconds before trying again` (Copilot, also its
//!    Chinese `请等待 70 seconds` and Japanese `84 seconds を待って` forms),
//!    `Retry-After: 120`, `retry-after-ms: 1500`, `x-ratelimit-reset-tokens: 6m0s`.
//!
//! Where: the matched line first (every level, earliest occurrence; a
//! duration or keyword cut by a line break may continue on the next line),
//! then the rest of the text (every level, the occurrence nearest to the
//! matched line; on a tie the later one), and last the lines around the
//! matched line joined together, for a hard wrap that cut a word in two
//! (`please try a` / `gain after 1 seconds`).
//!
//! **A client's own retry backoff is never a reset time**: `Retrying in 3
//! seconds… (attempt 2/10)`, `Retrying request to /models in 0.38 seconds`,
//! `Retrying … in 4.0 seconds as it raised …` (tenacity), `Retrying in
//! 1000ms...`, `will retry in 5s`, `next retry in 2s` and any duration
//! followed by `(attempt …)` are skipped. `Retrying` is always the client
//! speaking; the provider says `try again`, `retry after`, `please retry in`.
//!
//! Absolute results set `retry_after_s = max(0, resets_at - now)`; relative
//! ones set `resets_at = ceil(now + retry_after_s)`. Relative delays over 400
//! days and absolute times outside 2001-09-09..2286-11-20 (epoch seconds
//! 1e9..1e10) are ignored.
//!
//! Not supported (left unread): month names in non-Latin scripts (`10 июл.
//! 2026 г.`, `2026年7月10日`, `2026. 7. 10. 오전 11:52`), two-digit years,
//! day-first numeric dates with `/` whose day is 12 or less (`07/10/2026`
//! reads as July 10), and bare zone abbreviations other than the US ones
//! above (`CST`, `IST` are ambiguous).

use std::sync::OnceLock;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, TimeZone};
use regex::{Captures, Regex, RegexBuilder};

use crate::ClassifyContext;

/// Relative delays above this are considered nonsense (seconds; 400 days).
const MAX_DELAY_S: f64 = 400.0 * 86_400.0;
/// Plausible absolute reset times: 2001-09-09 .. 2286-11-20 (epoch seconds).
const EPOCH_RANGE: std::ops::RangeInclusive<i64> = 1_000_000_000..=9_999_999_999;
/// Integer digits beyond which a number is no plausible delay in any unit.
const MAX_INT_DIGITS: usize = 12;
/// How far past the matched line a cut duration or keyword may continue.
const NEXT_LINE_MAX: usize = 8 * 1024;
/// Lines on each side of the matched line joined for hard-wrapped words.
const WRAP_LINES: usize = 5;
/// Bytes on each side of the matched line joined for hard-wrapped words.
const WRAP_BYTES: usize = 16 * 1024;

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
            Found::Absolute(at) if EPOCH_RANGE.contains(&at) => Some(Reset {
                resets_at: at,
                retry_after_s: (at.saturating_sub(now_s)).max(0) as f64,
            }),
            Found::Relative(d) if d.is_finite() && (0.0..=MAX_DELAY_S).contains(&d) => {
                let now_f = now_s as f64 + f64::from(ctx.now.subsec_nanosecond()) / 1e9;
                let at = (now_f + d).ceil();
                // `now` is a valid timestamp (|now| < 2.6e11) and `d` <= 400
                // days, so `at` fits i64.
                Some(Reset {
                    resets_at: at as i64,
                    retry_after_s: d,
                })
            }
            Found::Absolute(_) | Found::Relative(_) => None,
        }
    }
}

type Convert = fn(&Captures<'_>, &str, &ClassifyContext) -> Option<Found>;

struct Extractor {
    re: Regex,
    convert: Convert,
}

impl Extractor {
    /// Every valid occurrence in `hay` starting before `limit`: (start, reset).
    fn occurrences(&self, hay: &str, limit: usize, ctx: &ClassifyContext) -> Vec<(usize, Reset)> {
        self.re
            .captures_iter(hay)
            .take_while(|c| c.get(0).is_some_and(|m| m.start() < limit))
            .filter_map(|c| {
                let start = c.get(0)?.start();
                let reset = (self.convert)(&c, hay, ctx)?.into_reset(ctx)?;
                Some((start, reset))
            })
            .collect()
    }
}

fn builder(pattern: &str, unicode: bool) -> Regex {
    RegexBuilder::new(pattern)
        .unicode(unicode)
        .ignore_whitespace(true)
        .build()
        .expect("static reset-time regex must compile")
}

fn build(pattern: &str) -> Regex {
    // ASCII-only: faster (the lazy DFA handles ASCII word boundaries on any
    // input) and almost all these keywords are ASCII anyway (non-ASCII
    // literals still match as their UTF-8 bytes).
    builder(pattern, false)
}

/// Keywords before an absolute time or date.
const WALL_KEYWORD: &str = r"\b (?: try \s+ again | retry | resets? | available (?:\s+ again)?
        | renews? | (?:cycle|period|window) \s+ ends ) \s+ (?: (?:at|on|after|from) \s+ )?";
/// A time of day: `8:19 PM`, `20:19`, `3pm`, `12:50am`, `midnight`, `noon`.
const TIME: &str = r"(?: (?P<named> midnight | noon ) \b
        | (?P<h>[0-9]{1,2}) (?: :(?P<mi>[0-9]{2}) )? (?: :(?P<s>[0-9]{2}) )? \s* (?P<ap> [ap]m \b | [ap]\.m\. )? )";
/// An optional zone after a time.
const ZONE: &str = r"(?: \s* (?: \( (?P<z1> [a-z][a-z0-9_+:-]* (?: /[a-z0-9_+-]+ )* ) \)
        | (?P<z2> (?:UTC|GMT) (?: [+-][0-9]{1,2} (?: :?[0-9]{2} )? )? ) \b
        | (?-i: (?P<z3> [A-Z][a-z]+ / [A-Za-z_]+ (?: /[A-Za-z_]+ )? ) )
        | (?P<z4> (?:pacific|eastern|central|mountain) (?: \s+ (?:standard|daylight) )? \s+ time \b
                  (?: \s* \( [a-z]{2,3} \) )?
                | (?-i: [PE][SD]?T ) \b ) ) )?";
/// The wait written beside a clock time, as Hermes 0.22 prints it
/// (`Limit resets at 13:05 (in 2h 03m).`, `... (in 1m).`).
const BESIDE: &str = r"(?: \s* \( \s* in \s+ (?P<beside> [0-9]{1,5} \s* [hm] (?: \s* [0-9]{1,2} \s* m )? ) \s* \) )?";
const MONTH_EN: &str = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*";

/// How many precedence levels of extractors there are.
const LEVELS: usize = 6;

/// The extractors of one precedence level (0-based), compiled on first use:
/// most texts are settled by an early level (or the matched line), so the
/// later levels' regexes (a megabyte or more of automata together) are
/// usually never built.
fn level(i: usize) -> &'static [Extractor] {
    static LEVEL: [OnceLock<Vec<Extractor>>; LEVELS] = [const { OnceLock::new() }; LEVELS];
    LEVEL[i].get_or_init(|| build_level(i))
}

/// The levels in precedence order, each compiled when it is reached.
fn lazy_levels() -> impl Iterator<Item = &'static [Extractor]> {
    (0..LEVELS).map(level)
}

/// Every level, compiled now.
#[cfg(test)]
fn levels() -> Vec<&'static [Extractor]> {
    lazy_levels().collect()
}

/// The extractors of level `i` in precedence order; each level is a list of regexes.
fn build_level(i: usize) -> Vec<Extractor> {
    match i {
        // 1. epoch
        0 => vec![
            Extractor {
                re: build(
                    r#"(?i) \b (?: resets?_?at | x-ratelimit-reset(?:-[a-z]+)? | reset_?time | reset )
                            (?:\\?["'])? \s* [:=] \s* (?:\\?["'])? ([0-9]{13}|[0-9]{10}) \b"#,
                ),
                convert: epoch,
            },
            Extractor {
                re: build(r"(?i) \b limit \s reached \| ([0-9]{13}|[0-9]{10}) \b"),
                convert: epoch,
            },
        ],
        // 2. ISO-8601, HTTP-date
        1 => vec![
            Extractor {
                re: build(
                    r#"(?i) \b (?: resets?(?:_?at|_?time)? | x-ratelimit-reset(?:-[a-z]+)? | retry[_-]?after
                              | try \s+ again \s+ (?:at|after) | available \s+ (?:again \s+)? (?:at|after|from) | until )
                        (?:\\?["'])? \s* (?:(?:at|after|on) \s+)? [:=]? \s* (?:\\?["'])?
                        ( [0-9]{4}-[0-9]{2}-[0-9]{2} [Tt\x20] [0-9]{2}:[0-9]{2} (?: :[0-9]{2} (?:[.,][0-9]{1,9})? )?
                          (?: [Zz] \b | \x20? [+-][0-9]{2} (?: :?[0-9]{2} )? | \x20 (?:UTC|GMT) \b )? )"#,
                ),
                convert: iso,
            },
            Extractor {
                re: build(&format!(
                    r#"(?i) \b (?: retry[_-]?after | x-ratelimit-reset(?:-[a-z]+)? | resets?(?:_?at)? )
                            (?:\\?["'])? \s* [:=] \s* (?:\\?["'])?
                            (?:mon|tue|wed|thu|fri|sat|sun)[a-z]* , \s+ ([0-9]{{1,2}}) [\x20-] ({MONTH_EN}) [\x20-] ([0-9]{{4}})
                            \s+ ([0-9]{{2}}):([0-9]{{2}}):([0-9]{{2}}) \s+ (?:GMT|UTC) \b"#
                )),
                convert: http_date,
            },
        ],
        // 3. wall clock / calendar date
        2 => vec![
            Extractor {
                re: build(&format!(
                    r"(?i) {WALL_KEYWORD}
                            (?: (?:mon|tue|wed|thu|fri|sat|sun)[a-z]* \.? ,? \s+ )?
                            (?: (?P<mon>{MONTH_EN}) \.? \s+ (?P<day>[0-9]{{1,2}}) (?:st|nd|rd|th)? \b
                                (?: ,? \s+ (?P<year>[0-9]{{4}}) \b )? (?: ,? \s+ (?: at \s+ )? )? )?
                            {TIME}? {ZONE} {BESIDE}"
                )),
                convert: wall_month_first,
            },
            Extractor {
                // Unicode: localized month names (`févr.`, `mär`, `août`).
                re: builder(
                    &format!(
                        r"(?i) {WALL_KEYWORD}
                            (?P<day>[0-9]{{1,2}}) \.? \s+ (?: de \s+ )? (?P<mon>\p{{L}}{{3,10}}) \.?
                            (?: ,? \s+ (?: de \s+ )? (?P<year>[0-9]{{4}}) \b )?
                            (?: ,? \s+ (?: (?: at | à | às | as | a \s+ las? | um | alle | om ) \s+ )? )?
                            {TIME}? {ZONE}"
                    ),
                    true,
                ),
                convert: wall_day_first,
            },
            Extractor {
                re: build(&format!(
                    r"(?i) {WALL_KEYWORD}
                            (?P<a>[0-9]{{1,4}}) (?P<sep>[/.]) (?P<b>[0-9]{{1,2}}) [/.] (?P<c>[0-9]{{1,4}}) \b \.?
                            (?: ,? \s+ (?: at \s+ )? {TIME} )? {ZONE}"
                )),
                convert: wall_numeric,
            },
        ],
        // 4. Gemini retryDelay
        3 => vec![Extractor {
            re: build(
                r#"(?i) (?: \b retry_?delay (?:\\?["'])? \s* [:=] \s* (?:\\?["'])? ([0-9]+(?:\.[0-9]+)?) s \b
                             | \b retry_delay \s* \{ \s* seconds \s* : \s* ([0-9]+) )"#,
            ),
            convert: seconds_capture,
        }],
        // 5. resets_in_seconds
        4 => vec![Extractor {
            re: build(
                r#"(?i) \b resets?_in_s(?:ec(?:ond)?s?)? (?:\\?["'])? \s* [:=] \s* (?:\\?["'])? ([0-9]+(?:\.[0-9]+)?) \b"#,
            ),
            convert: seconds_capture,
        }],
        // 6. relative durations
        5 => vec![
            Extractor {
                // Not `retrying`: that is the client's own backoff.
                re: build(
                    r"(?i) (?: \b (?: try \s+ again | retry | resets? | available (?:\s+ again)? ) \s+ (?:in|after)
                                 | \b please \s+ wait (?: \s+ for )?
                                 | 请等待 )
                            \s* (?: about \s+ | approximately \s+ | ~ \s* )?",
                ),
                convert: duration_after_keyword,
            },
            Extractor {
                // Copilot in Japanese: `84 seconds を待ってから、もう一度お試しください`.
                re: build(r"(?i) \b ([0-9][0-9a-z.\x20]{0,60}?) \s* を待って"),
                convert: duration_before_suffix,
            },
            Extractor {
                re: build(
                    r#"(?i) \b (?: retry[_-]after ((?:[_-]?ms)?) (?:[_-]?s(?:ec(?:ond)?s?)?)? | x-ratelimit-reset(?:-[a-z]+)? () )
                            (?:\\?["'])? \s* [:=] \s* (?:\\?["'])?"#,
                ),
                convert: duration_after_header,
            },
        ],
        _ => unreachable!("there are {LEVELS} levels"),
    }
}

/// Finds the reset time for a classification whose matched line is `line`
/// (starting at byte `line_start` of `text`).
pub(crate) fn extract(
    line: &str,
    text: &str,
    line_start: usize,
    ctx: &ClassifyContext,
) -> Option<Reset> {
    // 1. The matched line, seen with the line after it so that a cut
    //    duration (`in 5 days 22 hours 11` / `minutes.`) reads whole.
    let line_end = line_start.saturating_add(line.len());
    let (hay, limit) = if text.get(line_start..line_end) == Some(line) {
        (&text[line_start..next_line_end(text, line_end)], line.len())
    } else {
        (line, line.len())
    };
    for level in lazy_levels() {
        let first = level
            .iter()
            .flat_map(|ex| ex.occurrences(hay, limit, ctx))
            .min_by_key(|(pos, _)| *pos);
        if let Some((_, r)) = first {
            return Some(r);
        }
    }
    // 2. The rest of the text, nearest first.
    if let Some(r) = nearest(text, line_start, ctx) {
        return Some(r);
    }
    // 3. The lines around, joined: a hard wrap inside a word.
    let (joined, joined_line_start) = joined_window(text, line_start)?;
    nearest(&joined, joined_line_start, ctx)
}

/// The highest-precedence occurrence in `text`, nearest to `anchor` within
/// its level (on a tie the later one).
fn nearest(text: &str, anchor: usize, ctx: &ClassifyContext) -> Option<Reset> {
    for level in lazy_levels() {
        let nearest = level
            .iter()
            .flat_map(|ex| ex.occurrences(text, text.len() + 1, ctx))
            .min_by_key(|(pos, _)| (pos.abs_diff(anchor), std::cmp::Reverse(*pos)));
        if let Some((_, r)) = nearest {
            return Some(r);
        }
    }
    None
}

/// End of the line after the one ending at `line_end` (capped; a char
/// boundary not before `line_end`).
fn next_line_end(text: &str, line_end: usize) -> usize {
    if line_end >= text.len() {
        return text.len();
    }
    let cap = floor_boundary(text, line_end.saturating_add(1 + NEXT_LINE_MAX));
    let rest = &text[line_end..cap];
    // A line cut at the length cap has no '\n' here: the window just goes on.
    let skip = usize::from(rest.starts_with('\n'));
    match rest[skip..].find('\n') {
        Some(i) => line_end + skip + i,
        None => cap,
    }
}

/// The largest char boundary of `s` at or below `i`.
fn floor_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The smallest char boundary of `s` at or above `i`.
fn ceil_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// The [`WRAP_LINES`] lines on each side of the line at `line_start`, joined
/// without their line breaks, and where that line starts in the result.
/// `None` when there is no line break to remove.
fn joined_window(text: &str, line_start: usize) -> Option<(String, usize)> {
    let floor = ceil_boundary(text, line_start.saturating_sub(WRAP_BYTES));
    let line_start = floor_boundary(text, line_start);
    let mut start = line_start;
    for _ in 0..WRAP_LINES {
        if start <= floor {
            break;
        }
        let before = &text[floor..start];
        let before = before.strip_suffix('\n').unwrap_or(before);
        start = before.rfind('\n').map_or(floor, |i| floor + i + 1);
    }
    let ceil = floor_boundary(text, line_start.saturating_add(WRAP_BYTES));
    let mut end = line_start;
    for _ in 0..=WRAP_LINES {
        match text[end..ceil].find('\n') {
            Some(i) => end += i + 1,
            None => {
                end = ceil;
                break;
            }
        }
    }
    let window = &text[start..end];
    if !window.contains('\n') {
        return None;
    }
    let mut joined = String::with_capacity(window.len());
    let mut joined_line_start = 0;
    let mut offset = start;
    for piece in window.split('\n') {
        if offset == line_start {
            joined_line_start = joined.len();
        }
        joined.push_str(piece.strip_suffix('\r').unwrap_or(piece));
        offset += piece.len() + 1;
    }
    Some((joined, joined_line_start))
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
    EPOCH_RANGE.contains(&v).then_some(Found::Absolute(v))
}

fn iso(c: &Captures<'_>, _: &str, ctx: &ClassifyContext) -> Option<Found> {
    parse_iso(c.get(1)?.as_str(), &ctx.local_tz).map(Found::Absolute)
}

/// `Wed, 21 Oct 2026 07:28:00 GMT`.
fn http_date(c: &Captures<'_>, _: &str, _: &ClassifyContext) -> Option<Found> {
    let n = |i: usize| c.get(i)?.as_str().parse::<i16>().ok();
    let month = month_number(c.get(2)?.as_str())?;
    let date = Date::new(n(3)?, month, i8::try_from(n(1)?).ok()?).ok()?;
    let time = Time::new(
        i8::try_from(n(4)?).ok()?,
        i8::try_from(n(5)?).ok()?,
        i8::try_from(n(6)?).ok()?,
        0,
    )
    .ok()?;
    let ts = TimeZone::UTC
        .to_timestamp(DateTime::from_parts(date, time))
        .ok()?;
    Some(Found::Absolute(ts.as_second()))
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

/// English month name or abbreviation (`Jul`, `July`, `Sept`): at least
/// three letters of the full name, so `marks` is not March.
fn month_number(name: &str) -> Option<i8> {
    const MONTHS: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    if lower == "sept" {
        return Some(9);
    }
    if lower.len() < 3 {
        return None;
    }
    MONTHS
        .iter()
        .position(|full| full.starts_with(lower.as_str()))
        .and_then(|i| i8::try_from(i + 1).ok())
}

/// A month name or abbreviation in English, Portuguese, Spanish, French,
/// Italian or German (`jul.`, `julho`, `juil.`, `févr.`, `Mär`, `dez`);
/// exact words only, so `5 marks` or `2 generations` are not dates.
fn localized_month_number(name: &str) -> Option<i8> {
    const MONTHS: [&[&str]; 12] = [
        &[
            "jan", "january", "janeiro", "ene", "enero", "janv", "janvier", "gen", "gennaio",
            "januar", "jän", "jänner",
        ],
        &[
            "feb",
            "february",
            "fev",
            "fevereiro",
            "febrero",
            "févr",
            "fevr",
            "février",
            "fevrier",
            "febbraio",
            "februar",
        ],
        &[
            "mar", "march", "março", "marco", "marzo", "mars", "mär", "märz", "marz", "mrz",
        ],
        &["apr", "april", "abr", "abril", "avr", "avril", "aprile"],
        &["may", "mai", "maio", "mayo", "mag", "maggio"],
        &[
            "jun", "june", "junho", "junio", "juin", "giu", "giugno", "juni",
        ],
        &[
            "jul", "july", "julho", "julio", "juil", "juillet", "lug", "luglio", "juli",
        ],
        &["aug", "august", "ago", "agosto", "août", "aout"],
        &[
            "sep",
            "sept",
            "september",
            "set",
            "setembro",
            "septiembre",
            "setiembre",
            "septembre",
            "settembre",
        ],
        &[
            "oct", "october", "out", "outubro", "octubre", "octobre", "ott", "ottobre", "okt",
            "oktober",
        ],
        &["nov", "november", "novembro", "noviembre", "novembre"],
        &[
            "dec",
            "december",
            "dez",
            "dezembro",
            "dic",
            "diciembre",
            "déc",
            "décembre",
            "dicembre",
            "dezember",
        ],
    ];
    let lower = name.trim_end_matches('.').to_lowercase();
    MONTHS
        .iter()
        .position(|names| names.contains(&lower.as_str()))
        .and_then(|i| i8::try_from(i + 1).ok())
}

/// A zone named in the text; unknown names (or no tzdb) give the local zone.
fn resolve_zone(name: Option<&str>, ctx: &ClassifyContext) -> TimeZone {
    let Some(name) = name else {
        return ctx.local_tz.clone();
    };
    let lower = name.to_ascii_lowercase();
    if ["utc", "gmt", "z"].contains(&lower.as_str()) {
        return TimeZone::UTC;
    }
    if let Some(off) = lower
        .strip_prefix("utc")
        .or_else(|| lower.strip_prefix("gmt"))
        .and_then(parse_offset)
    {
        return TimeZone::fixed(off);
    }
    let spelled = |area: &str| lower.starts_with(area) && lower.contains("time");
    let iana = if lower.contains('/') {
        name
    } else if spelled("pacific") || ["pt", "pst", "pdt"].contains(&lower.as_str()) {
        "America/Los_Angeles"
    } else if spelled("eastern") || ["et", "est", "edt"].contains(&lower.as_str()) {
        "America/New_York"
    } else if spelled("central") {
        "America/Chicago"
    } else if spelled("mountain") {
        "America/Denver"
    } else {
        name
    };
    TimeZone::get(iana).unwrap_or_else(|_| ctx.local_tz.clone())
}

/// `+8`, `-03`, `+0530`, `+05:30` -> a fixed offset.
fn parse_offset(s: &str) -> Option<Offset> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    let (h, m) = match digits.len() {
        1 | 2 => (digits.parse::<i32>().ok()?, 0),
        3 | 4 => {
            let split = digits.len() - 2;
            (
                digits[..split].parse::<i32>().ok()?,
                digits[split..].parse::<i32>().ok()?,
            )
        }
        _ => return None,
    };
    if h > 14 || m > 59 {
        return None;
    }
    Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()
}

/// The time of day in `c` (groups `named`, `h`, `mi`, `s`, `ap`):
/// `Ok(None)` when there is none, `Err` when it is not a valid time (a bare
/// number such as `retry 3 of 5` is not a time).
fn time_of_day(c: &Captures<'_>) -> Result<Option<Time>, ()> {
    if let Some(named) = c.name("named") {
        let hour = if named.as_str().eq_ignore_ascii_case("noon") {
            12
        } else {
            0
        };
        return Ok(Some(Time::new(hour, 0, 0, 0).map_err(|_| ())?));
    }
    let Some(h) = c.name("h") else {
        return Ok(None);
    };
    let num = |m: Option<regex::Match<'_>>| -> Result<Option<i8>, ()> {
        m.map(|m| m.as_str().parse::<i8>().map_err(|_| ()))
            .transpose()
    };
    let mut hour = num(Some(h))?.ok_or(())?;
    let minute = num(c.name("mi"))?;
    let second = num(c.name("s"))?.unwrap_or(0);
    let ampm = c.name("ap").map(|m| m.as_str().to_ascii_lowercase());
    if minute.is_none() && ampm.is_none() {
        return Err(());
    }
    if let Some(ampm) = &ampm {
        if !(1..=12).contains(&hour) {
            return Err(());
        }
        let pm = ampm.starts_with('p');
        hour = match (hour, pm) {
            (12, false) => 0,
            (12, true) => 12,
            (h, true) => h + 12,
            (h, false) => h,
        };
    }
    Time::new(hour, minute.unwrap_or(0), second, 0)
        .map(Some)
        .map_err(|_| ())
}

/// The zone named after the time, if any.
fn zone_name<'h>(c: &Captures<'h>) -> Option<&'h str> {
    ["z1", "z2", "z3", "z4"]
        .iter()
        .find_map(|n| c.name(n))
        .map(|m| m.as_str())
}

/// A calendar date as written: year (if any), month, day.
type WrittenDate = (Option<i16>, i8, i8);

/// Resolves a wall-clock time and/or date to an absolute time.
fn resolve_wall(
    date: Option<WrittenDate>,
    time: Option<Time>,
    zone: Option<&str>,
    ctx: &ClassifyContext,
) -> Option<Found> {
    if date.is_none() && time.is_none() {
        return None;
    }
    let time = time.unwrap_or(Time::midnight());
    let tz = resolve_zone(zone, ctx);
    let now = ctx.now;
    let today = now.to_zoned_datetime(tz.clone()).date();
    let at = |date: Date| -> Option<Timestamp> {
        tz.to_timestamp(DateTime::from_parts(date, time)).ok()
    };
    let ts = match date {
        Some((Some(year), month, day)) => at(Date::new(year, month, day).ok()?)?,
        Some((None, month, day)) => {
            // No year: this year, unless that is well in the past.
            let ts = at(Date::new(today.year(), month, day).ok()?)?;
            if ts.as_second() + 2 * 86_400 < now.as_second() {
                at(Date::new(today.year().checked_add(1)?, month, day).ok()?)?
            } else {
                ts
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

/// A time of day written without a date, and how precisely it was written:
/// `01:57` stands for the whole minute 01:57:00..01:58:00 (Hermes 0.22
/// prints the reset's minute, truncated), `01:57:30` for one second.
#[derive(Clone, Copy, Debug)]
struct WrittenTime {
    time: Time,
    precision_s: i64,
}

/// How long after its written minute a clock time with no date still means
/// "just now" rather than "tomorrow": the time a worker may take between
/// printing its reset and exiting (the shim classifies at exit). A provider
/// does not announce a daily reset that passed minutes ago, while reading
/// a just-passed reset as tomorrow parks the task for a day.
const CLOCK_PAST_GRACE_S: i64 = 10 * 60;

/// The wait written beside the clock time in seconds (`(in 2h 03m)`,
/// `(in 1m)`), if any.
fn beside_wait(c: &Captures<'_>) -> Option<i64> {
    let raw = c.name("beside")?.as_str().to_ascii_lowercase();
    let mut total: i64 = 0;
    let mut seen_m = false;
    let mut rest = raw.as_str();
    while !rest.trim_start().is_empty() {
        let t = rest.trim_start();
        let digits = t.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(t.len());
        let n: i64 = t[..digits].parse().ok()?;
        let after = t[digits..].trim_start();
        let unit = after.chars().next()?;
        total = match unit {
            'h' if total == 0 && !seen_m => n.checked_mul(3600)?,
            'm' if !seen_m => {
                seen_m = true;
                total.checked_add(n.checked_mul(60)?)?
            }
            _ => return None,
        };
        rest = &after[unit.len_utf8()..];
    }
    Some(total)
}

/// Resolves a clock time with no date (`resets 3pm`, `Limit resets at 01:57
/// (in 1m)`).
///
/// With a wait beside it (Hermes 0.22: `(in N m)`, the remaining seconds
/// rounded up to minutes, printed with the clock time), the wait picks the
/// day: the written minute on the day nearest to `now + wait`. The reset is
/// then the earlier of two upper bounds, the written minute's end and
/// `now + wait` (rounded up), and never before now. When no day fits the
/// wait (the worker printed another zone's clock), the wait alone counts.
///
/// Without one: the written time today, tomorrow once it is past. A written
/// minute that has begun, or ended less than [`CLOCK_PAST_GRACE_S`] ago,
/// means that minute's end (now, rounded up, once it has passed), not
/// tomorrow: `Limit resets at 01:57.` printed at 01:57:20.
fn resolve_clock(
    written: WrittenTime,
    wait_s: Option<i64>,
    zone: Option<&str>,
    ctx: &ClassifyContext,
) -> Option<Found> {
    let tz = resolve_zone(zone, ctx);
    let now = ctx.now.as_second();
    let now_up = now + i64::from(ctx.now.subsec_nanosecond() > 0);
    let on = |date: Date| -> Option<i64> {
        tz.to_timestamp(DateTime::from_parts(date, written.time))
            .ok()
            .map(Timestamp::as_second)
    };
    let day_of = |at: i64| -> Option<Date> {
        Some(
            Timestamp::from_second(at)
                .ok()?
                .to_zoned_datetime(tz.clone())
                .date(),
        )
    };
    let settle = |start: i64, upper: i64| {
        Found::Absolute(upper.min(start + written.precision_s).max(now_up))
    };
    if let Some(wait) = wait_s {
        let target = now_up.checked_add(wait)?;
        let day = day_of(target)?;
        let nearest = [day.yesterday().ok(), Some(day), day.tomorrow().ok()]
            .into_iter()
            .flatten()
            .filter_map(on)
            // The reset lies in the written minute and at most `wait` after
            // the line was printed, at most the grace before now.
            .filter(|start| {
                *start <= target + 60
                    && *start + written.precision_s + CLOCK_PAST_GRACE_S + 60 >= target
            })
            .min_by_key(|start| start.abs_diff(target));
        return Some(match nearest {
            Some(start) => settle(start, target),
            None => Found::Absolute(target),
        });
    }
    let today = day_of(now)?;
    for start in [today.yesterday().ok(), Some(today)]
        .into_iter()
        .flatten()
        .filter_map(on)
    {
        if start <= now && now < start + written.precision_s + CLOCK_PAST_GRACE_S {
            return Some(settle(start, i64::MAX));
        }
    }
    let start = on(today)?;
    if start > now {
        return Some(Found::Absolute(start));
    }
    on(today.tomorrow().ok()?).map(Found::Absolute)
}

/// Year, day and time groups shared by the month-first and day-first forms.
fn wall_with_month(c: &Captures<'_>, month: Option<i8>, ctx: &ClassifyContext) -> Option<Found> {
    let time = time_of_day(c).ok()?;
    let date = match month {
        None => None,
        Some(month) => {
            let day = c.name("day")?.as_str().parse::<i8>().ok()?;
            let year = match c.name("year") {
                Some(y) => Some(y.as_str().parse::<i16>().ok()?),
                None => None,
            };
            // A day and month alone need a time (`resets Jul 7, 3pm`).
            if year.is_none() && time.is_none() {
                return None;
            }
            Some((year, month, day))
        }
    };
    if date.is_none()
        && let Some(time) = time
    {
        let written = WrittenTime {
            time,
            precision_s: if c.name("s").is_some() { 1 } else { 60 },
        };
        return resolve_clock(written, beside_wait(c), zone_name(c), ctx);
    }
    resolve_wall(date, time, zone_name(c), ctx)
}

/// `try again at Jul 5th, 2026 8:19 PM`, `resets 3pm (Europe/Lisbon)`.
fn wall_month_first(c: &Captures<'_>, _: &str, ctx: &ClassifyContext) -> Option<Found> {
    let month = match c.name("mon") {
        Some(m) => Some(month_number(m.as_str())?),
        None => None,
    };
    wall_with_month(c, month, ctx)
}

/// `try again at 10 de jul. de 2026, 11:52`, `10 Jul 2026, 11:52`.
fn wall_day_first(c: &Captures<'_>, _: &str, ctx: &ClassifyContext) -> Option<Found> {
    let month = localized_month_number(c.name("mon")?.as_str())?;
    wall_with_month(c, Some(month), ctx)
}

/// `ends on 11/17/2025`, `10.07.2026, 11:52`, `2026/07/10 11:52`.
fn wall_numeric(c: &Captures<'_>, _: &str, ctx: &ClassifyContext) -> Option<Found> {
    let (a, b, cc) = (
        c.name("a")?.as_str(),
        c.name("b")?.as_str(),
        c.name("c")?.as_str(),
    );
    let n = |s: &str| s.parse::<i16>().ok();
    let (year, month, day) = if a.len() == 4 && cc.len() <= 2 {
        (n(a)?, n(b)?, n(cc)?)
    } else if cc.len() == 4 && a.len() <= 2 {
        let (a, b) = (n(a)?, n(b)?);
        if c.name("sep")?.as_str() == "." || a > 12 {
            (n(cc)?, b, a) // day.month.year, or day/month/year when unambiguous
        } else {
            (n(cc)?, a, b) // US month/day/year
        }
    } else {
        return None;
    };
    let time = time_of_day(c).ok()?;
    let date = (
        Some(year),
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
    );
    resolve_wall(Some(date), time, zone_name(c), ctx)
}

fn seconds_capture(c: &Captures<'_>, _: &str, _: &ClassifyContext) -> Option<Found> {
    let m = c.get(1).or_else(|| c.get(2))?.as_str();
    if m.split('.')
        .next()
        .is_some_and(|int| int.len() > MAX_INT_DIGITS)
    {
        return None;
    }
    m.parse::<f64>().ok().map(Found::Relative)
}

fn duration_after_keyword(c: &Captures<'_>, hay: &str, _: &ClassifyContext) -> Option<Found> {
    let m = c.get(0)?;
    // `will retry in 5s` is the client; `will reset in 3 hours` the provider.
    let kw = m.as_str().as_bytes();
    let retry = kw.len() >= 5
        && (kw[..5].eq_ignore_ascii_case(b"retry") || kw[..3].eq_ignore_ascii_case(b"try"));
    if retry && client_speaks_before(&hay[..m.start()]) {
        return None;
    }
    let (d, len) = parse_duration_len(&hay[m.end()..], None)?;
    if client_backoff_after(&hay[m.end() + len..]) {
        return None;
    }
    Some(Found::Relative(d))
}

/// `84 seconds を待って`: the duration is the whole capture (the first
/// number from which it parses to the end).
fn duration_before_suffix(c: &Captures<'_>, _: &str, _: &ClassifyContext) -> Option<Found> {
    let cap = c.get(1)?.as_str().trim_end();
    let b = cap.as_bytes();
    (0..b.len())
        .filter(|&i| {
            b[i].is_ascii_digit()
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.'))
        })
        .find_map(|i| {
            let (d, len) = parse_duration_len(&cap[i..], None)?;
            (i + len == cap.len()).then_some(Found::Relative(d))
        })
}

fn duration_after_header(c: &Captures<'_>, hay: &str, _: &ClassifyContext) -> Option<Found> {
    let end = c.get(0)?.end();
    let ms = c.get(1).is_some_and(|m| !m.as_str().is_empty());
    let bare = if ms { 0.001 } else { 1.0 };
    let (d, len) = parse_duration_len(&hay[end..], Some(bare))?;
    if client_backoff_after(&hay[end + len..]) {
        return None;
    }
    Some(Found::Relative(d))
}

/// Whether the words just before a `retry in` / `try again in` on the same
/// line make it the client announcing its own retry: `will retry in 5s`,
/// `we'll try again in 2s`, `next retry in 3s`, `auto-retry in`.
fn client_speaks_before(before: &str) -> bool {
    let line = before.rsplit('\n').next().unwrap_or(before);
    let tail = &line[floor_boundary(line, line.len().saturating_sub(24))..];
    let tail = tail.trim_end().to_ascii_lowercase();
    let last = tail
        .rsplit(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '\'' || ch == '-'))
        .next()
        .unwrap_or("");
    matches!(
        last,
        "will"
            | "i'll"
            | "we'll"
            | "it'll"
            | "next"
            | "auto"
            | "auto-"
            | "scheduled"
            | "scheduling"
    )
}

/// Whether what follows a duration marks it as a client's retry backoff:
/// `… (attempt 4/10)`, `· attempt 8/10`, `as it raised …` (tenacity),
/// `with extra buffer`, `(retry 2 of 5)`, `(try #2)`.
fn client_backoff_after(after: &str) -> bool {
    let line = after.split('\n').next().unwrap_or(after);
    let head = &line[..floor_boundary(line, 48)];
    let head = head
        .trim_start_matches(|ch: char| {
            ch.is_whitespace()
                || matches!(
                    ch,
                    '.' | ',' | ';' | ':' | '(' | '[' | '…' | '·' | '-' | '—' | '–'
                )
        })
        .to_ascii_lowercase();
    if [
        "attempt",
        "as it raised",
        "with extra buffer",
        "with backoff",
    ]
    .iter()
    .any(|p| head.starts_with(p))
    {
        return true;
    }
    // `retry 2`, `try #2`: a retry counter.
    head.strip_prefix("retry")
        .or_else(|| head.strip_prefix("try"))
        .map(|rest| rest.trim_start_matches([' ', '#']))
        .is_some_and(|rest| rest.starts_with(|ch: char| ch.is_ascii_digit()))
}

/// Parses a duration at the start of `s`: `26.604s`, `644ms`, `1h30m`,
/// `5 days 22 hours 11 minutes`, `2 minutes and 30 seconds`, `6m0s`.
/// A bare number is accepted only when `bare_unit` (seconds per unit) is given.
#[cfg(test)]
pub(crate) fn parse_duration(s: &str, bare_unit: Option<f64>) -> Option<f64> {
    parse_duration_len(s, bare_unit).map(|(d, _)| d)
}

/// Bytes of spaces and tabs at the start of `b[i..]`, then at most one line
/// break (and the next line's indentation) when `allow_break`.
fn skip_blank(b: &[u8], mut i: usize, allow_break: bool) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    if allow_break {
        let mut j = i;
        if j < b.len() && b[j] == b'\r' {
            j += 1;
        }
        if j < b.len() && b[j] == b'\n' {
            j += 1;
            while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                j += 1;
            }
            return j;
        }
    }
    i
}

/// The ASCII letters at `b[i..]`, lowercased, and where they end.
fn alpha_run(s: &str, i: usize) -> (String, usize) {
    let b = s.as_bytes();
    let mut j = i;
    while j < b.len() && b[j].is_ascii_alphabetic() {
        j += 1;
    }
    (s[i..j].to_ascii_lowercase(), j)
}

/// `value` in `unit`, in seconds (`None` for an unknown unit).
fn in_seconds(value: f64, unit: &str) -> Option<f64> {
    Some(match unit {
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => value / 1000.0,
        "s" | "sec" | "secs" | "second" | "seconds" => value,
        "m" | "min" | "mins" | "minute" | "minutes" => value * 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => value * 3600.0,
        "d" | "day" | "days" => value * 86_400.0,
        "w" | "wk" | "wks" | "week" | "weeks" => value * 604_800.0,
        _ => return None,
    })
}

/// [`parse_duration`] plus how many bytes of `s` the duration took. Its
/// components may be separated by spaces, commas, `and`, or one line break
/// (a terminal wrapped the message: `try again in 5 days 22 hours 11` /
/// `minutes.`).
fn parse_duration_len(s: &str, bare_unit: Option<f64>) -> Option<(f64, usize)> {
    let b = s.as_bytes();
    let mut end = 0; // end of the last complete component
    let mut total = 0.0_f64;
    let mut parts = 0;
    loop {
        let mut j = end;
        if parts > 0 {
            // Separators between components: spaces, commas, "and", one line break.
            while j < b.len() && (b[j] == b' ' || b[j] == b'\t' || b[j] == b',') {
                j += 1;
            }
            j = skip_blank(b, j, true);
            if b.len() >= j + 4 && b[j..j + 4].eq_ignore_ascii_case(b"and ") {
                j = skip_blank(b, j + 4, false);
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
        if j - num_start > MAX_INT_DIGITS {
            // Far over 400 days in any unit; skip the costly parse.
            return None;
        }
        if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
            j += 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
        }
        let num_end = j;
        let Ok(value) = s[num_start..num_end].parse::<f64>() else {
            break;
        };
        // Unit: on this line, or at the start of the next one when the
        // line was cut right after the number (`11` / `minutes.`).
        let here = skip_blank(b, num_end, false);
        let (mut unit, mut unit_end) = alpha_run(s, here);
        if unit.is_empty() {
            let next = skip_blank(b, here, true);
            if next != here {
                let (u, e) = alpha_run(s, next);
                if in_seconds(1.0, &u).is_some() {
                    (unit, unit_end) = (u, e);
                }
            }
        }
        let seconds = match in_seconds(value, &unit) {
            Some(seconds) => seconds,
            None if unit.is_empty() && parts == 0 => match bare_unit {
                Some(per) => {
                    total = value * per;
                    parts = 1;
                    end = num_end;
                    break;
                }
                None => break,
            },
            None => break,
        };
        j = unit_end;
        total += seconds;
        parts += 1;
        end = j;
    }
    (parts > 0 && total.is_finite() && (0.0..=MAX_DELAY_S).contains(&total)).then_some((total, end))
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

    /// The corpus' "now": 2026-06-07T18:51:45Z.
    fn corpus_ctx() -> ClassifyContext {
        ClassifyContext::new(
            Timestamp::from_second(1_780_858_305).expect("valid"),
            TimeZone::UTC,
        )
    }

    /// Reset for `text` whose first line is the matched line.
    fn reset_of(text: &str) -> Option<Reset> {
        let line = text.split('\n').next().unwrap_or("");
        extract(line, text, 0, &corpus_ctx())
    }

    fn after_s(text: &str) -> Option<f64> {
        reset_of(text).map(|r| r.retry_after_s)
    }

    fn at(text: &str) -> Option<i64> {
        reset_of(text).map(|r| r.resets_at)
    }

    /// Whether jiff finds named zones (the system's tzdata). Under CI it
    /// must; elsewhere the named-zone cases say SKIPPED instead of passing
    /// without having run.
    fn has_tzdb() -> bool {
        let found = TimeZone::get("Europe/Warsaw").is_ok();
        if !found {
            crate::prerequisite_missing(
                "the named-zone cases need the system time zone database (tzdata)",
            );
        }
        found
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
        assert_eq!(parse_duration("1m2.5s", None), Some(62.5));
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
    fn durations_cut_by_a_line_break() {
        assert_eq!(
            parse_duration("5 days 22 hours 11\nminutes.", None),
            Some(511_860.0)
        );
        assert_eq!(
            parse_duration("5 days\r\n   22 hours", None),
            Some(511_200.0)
        );
        // One break only, and not a blank line.
        assert_eq!(parse_duration("5 days\n\n22 hours", None), Some(432_000.0));
        assert_eq!(parse_duration_len("30s\nnext", None), Some((30.0, 3)));
    }

    #[test]
    fn hostile_numbers_are_ignored_without_panicking() {
        let huge = format!("{}0 seconds", "9".repeat(400));
        assert_eq!(parse_duration(&huge, None), None);
        assert_eq!(parse_duration("1e300 seconds", None), None);
        assert_eq!(
            parse_duration("1.7976931348623157 weeks", None),
            Some(1.7976931348623157 * 604_800.0)
        );
        for text in [
            "LIMIT HIT, try again in 1e300 seconds",
            &format!("LIMIT HIT, try again in {huge}"),
            "LIMIT HIT resets_at: 99999999999999999999",
            "LIMIT HIT resets_at: 99999999999",
            "LIMIT HIT \"retryDelay\":\"99999999999999999999999s\"",
            "LIMIT HIT resets_in_seconds: 99999999999999999999999999",
            "LIMIT HIT Retry-After: 99999999999999999999999999",
            "LIMIT HIT retry-after-ms: 340282366920938463463374607431768211456",
            "LIMIT HIT, try again at Dec 31st, 9999 11:59 PM",
            "LIMIT HIT, try again at 31 de dez. de 9999, 23:59",
            "LIMIT HIT, resets on 12/31/9999",
            "LIMIT HIT, reset at 9999-12-31T23:59:59Z",
            "LIMIT HIT, Retry-After: Fri, 31 Dec 9999 23:59:59 GMT",
            "LIMIT HIT, try again at Jan 1st, 0000 12:00 AM",
        ] {
            assert_eq!(reset_of(text), None, "{text:?}");
        }
    }

    #[test]
    fn relative_sets_ceiling_of_now_plus_delay() {
        let r = Found::Relative(26.604).into_reset(&ctx()).expect("reset");
        assert_eq!(r.resets_at, 1_780_000_027);
        assert_eq!(r.retry_after_s, 26.604);
        assert_eq!(Found::Relative(f64::NAN).into_reset(&ctx()), None);
        assert_eq!(Found::Relative(f64::INFINITY).into_reset(&ctx()), None);
        assert_eq!(Found::Relative(-1.0).into_reset(&ctx()), None);
        assert_eq!(Found::Relative(MAX_DELAY_S + 1.0).into_reset(&ctx()), None);
    }

    #[test]
    fn absolute_in_the_past_clamps_delay() {
        let r = Found::Absolute(1_779_999_000)
            .into_reset(&ctx())
            .expect("reset");
        assert_eq!(r.resets_at, 1_779_999_000);
        assert_eq!(r.retry_after_s, 0.0);
    }

    #[test]
    fn absolute_outside_2001_2286_is_ignored() {
        assert_eq!(Found::Absolute(999_999_999).into_reset(&ctx()), None);
        assert_eq!(Found::Absolute(10_000_000_000).into_reset(&ctx()), None);
        assert_eq!(Found::Absolute(i64::MAX).into_reset(&ctx()), None);
        assert_eq!(Found::Absolute(i64::MIN).into_reset(&ctx()), None);
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
    fn http_date_retry_after() {
        assert_eq!(
            at("429 Too Many Requests; Retry-After: Sun, 05 Jul 2026 20:19:00 GMT"),
            Some(1_783_282_740)
        );
        assert_eq!(at("retry-after: Sun, 31 Feb 2026 20:19:00 GMT"), None);
    }

    #[test]
    fn claude_code_wall_clock_with_and_without_zone() {
        // 12am with no zone: the next local (UTC) midnight.
        assert_eq!(
            at("Claude usage limit reached. Your limit will reset at 12am."),
            Some(1_780_876_800)
        );
        assert_eq!(at("5-hour limit reached ∙ resets 9pm"), Some(1_780_866_000));
        if !has_tzdb() {
            return;
        }
        assert_eq!(
            at("Claude usage limit reached. Your limit will reset at 5pm (Europe/Warsaw)."),
            Some(1_780_930_800)
        );
        assert_eq!(
            at("Your limit will reset at 1 PM (Asia/Dubai)."),
            Some(1_780_909_200)
        );
        assert_eq!(
            at("Your limit will reset at 1pm (Etc/GMT+5)."),
            Some(1_780_941_600)
        );
        assert_eq!(
            at("You've hit your session limit · resets 8:30pm (Asia/Tokyo)"),
            Some(1_780_918_200)
        );
        assert_eq!(
            at("You've hit your session limit · resets 12:50am (America/Los_Angeles)"),
            Some(1_780_905_000)
        );
        // Wrapped after "reset": the keyword continues on the next line.
        assert_eq!(
            at(
                "Claude usage limit reached. Your limit will reset\n     at 3pm (America/Santiago)."
            ),
            Some(1_780_858_800)
        );
    }

    #[test]
    fn zones_by_offset_and_us_names() {
        // now 18:51:45Z; 20:00 at UTC+8 is 12:00Z -> tomorrow.
        assert_eq!(at("resets 8pm UTC+8"), Some(1_780_920_000));
        assert_eq!(at("resets 8pm (GMT-03:00)"), Some(1_780_873_200));
        if !has_tzdb() {
            return;
        }
        // Midnight Pacific (PDT, UTC-7) = 07:00Z tomorrow.
        assert_eq!(
            at("Daily Limit Exceeded. The quota will be reset at midnight Pacific Time (PT)."),
            Some(1_780_902_000)
        );
        assert_eq!(at("resets 5pm PT"), Some(1_780_876_800));
        assert_eq!(at("resets 5pm EDT"), Some(1_780_866_000));
    }

    #[test]
    fn localized_and_day_first_dates() {
        // 2026-07-10 11:52 in the local zone (UTC here).
        let want = Some(1_783_684_320);
        assert_eq!(
            at(
                "You've hit your usage limit. Upgrade your plan to continue, or try again at 10 de jul. de 2026, 11:52."
            ),
            want
        );
        assert_eq!(at("try again at 10 Jul 2026, 11:52"), want);
        assert_eq!(at("try again at 10 juil. 2026 à 11:52"), want);
        assert_eq!(at("try again at 10. Juli 2026 um 11:52"), want);
        assert_eq!(at("try again at 10 lug 2026, 11:52"), want);
        assert_eq!(at("try again at 10 jul 2026, 11:52 AM"), want);
        assert_eq!(at("try again at 10.07.2026, 11:52"), want);
        assert_eq!(at("try again at 2026/07/10 11:52"), want);
        assert_eq!(at("try again at 7/10/2026, 11:52 AM"), want);
        // Not a month.
        assert_eq!(at("try again at 10 minutes past 11:52"), None);
        // Invalid dates.
        assert_eq!(at("try again at 31 de fev. de 2026, 11:52"), None);
        assert_eq!(at("try again at 10.13.2026, 11:52"), None);
    }

    #[test]
    fn cursor_cycle_end_date_is_midnight() {
        assert_eq!(
            at("Your usage limits will reset when your monthly cycle ends on 11/17/2025.*"),
            Some(1_763_337_600)
        );
        assert_eq!(
            at("Your usage limits will reset when your monthly cycle ends on 8/17/2025."),
            Some(1_755_388_800)
        );
        // Day over 12: day/month.
        assert_eq!(at("resets on 17/11/2025"), Some(1_763_337_600));
        // Version numbers are not dates.
        assert_eq!(at("resets on 1.2.3"), None);
    }

    #[test]
    fn provider_relative_forms() {
        assert_eq!(after_s("Please retry after 3 seconds."), Some(3.0));
        assert_eq!(after_s("Your limit will reset in 3 hours."), Some(10_800.0));
        assert_eq!(
            after_s("It will be available again in 5 minutes."),
            Some(300.0)
        );
        assert_eq!(
            after_s("Rate limit is exceeded. Try again in 2 seconds."),
            Some(2.0)
        );
        assert_eq!(
            after_s(
                "Sorry, your request was rate-limited. Please wait 17 seconds before trying again."
            ),
            Some(17.0)
        );
        assert_eq!(
            after_s("Please wait 587 hours 33 minutes before trying again."),
            Some(2_115_180.0)
        );
        assert_eq!(
            after_s("很抱歉，你的请求受速率限制。请等待 70 seconds，然后重试。"),
            Some(70.0)
        );
        assert_eq!(
            after_s(
                "申し訳ございません。要求はレート制限されました。84 seconds を待ってから、もう一度お試しください。"
            ),
            Some(84.0)
        );
        assert_eq!(
            after_s("Please retry in 58.934310785s."),
            Some(58.934_310_785)
        );
        assert_eq!(after_s("Please try again in 1m2.5s."), Some(62.5));
        assert_eq!(after_s("Please try again in 9m38.016s."), Some(578.016));
        assert_eq!(
            after_s("request reached organization max RPM: 3, please try again after 1 seconds"),
            Some(1.0)
        );
        assert_eq!(
            after_s(r#"{\"type\": \"exceeded_limit\", \"resetsAt\": 1733914800}"#),
            Some(0.0)
        );
        assert_eq!(
            at(r#"{\"type\": \"exceeded_limit\", \"resetsAt\": 1733914800}"#),
            Some(1_733_914_800)
        );
    }

    #[test]
    fn codex_duration_wrapped_over_a_line_break() {
        let text = "■ You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) or try again in 5 days 22 hours 11\nminutes.";
        assert_eq!(after_s(text), Some(511_860.0));
        // The same when the matched line is not the first one.
        let text = format!("noise\n{text}");
        let line_start = 6;
        let line = text[line_start..].split('\n').next().expect("line");
        let r = extract(line, &text, line_start, &corpus_ctx()).expect("reset");
        assert_eq!(r.retry_after_s, 511_860.0);
    }

    #[test]
    fn word_cut_by_a_hard_wrap() {
        let text = "LLM provider error: Error code: 429 - {'error': {'message': 'request reached organization max RPM: 20, please try a\ngain after 1 seconds', 'type': 'rate_limit_reached_error'}}";
        assert_eq!(after_s(text), Some(1.0));
    }

    #[test]
    fn client_backoff_is_not_a_reset() {
        for text in [
            "API Error (529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}) · Retrying in 4 seconds… (attempt 4/10)",
            "Unable to connect to API (ConnectionRefused) · Retrying in 11s · attempt 8/10",
            "2025-09-18 14:31:31,457 - INFO - Retrying request to /models in 0.386168 seconds",
            "Retrying langchain_google_vertexai.llms._completion_with_retry.<locals>._completion_with_retry_inner in 4.0 seconds as it raised ResourceExhausted: 429 Quota exceeded",
            "[INFO] [Gemini API] Received 500 server error. Retrying in 1000ms... (attempt 1/3)",
            "Retrying in 20.387 second(s)... with extra buffer of: 20.0 second(s)",
            "Retrying with backoff",
            "rate limited, retrying in 2.1s (attempt 2)",
            "rate limited; will retry in 5 seconds",
            "rate limited; we'll try again in 5 seconds",
            "rate limited; next retry in 5s",
            "429 rate limited, retry in 2s (attempt 2/5)",
            "429 rate limited, try again in 2s (retry 2 of 5)",
            "Retry-After: 5 (attempt 2)",
            "Backing off _call(...) for 0.8s (openai.error.RateLimitError)",
            "Waiting 5 seconds before retrying",
        ] {
            assert_eq!(reset_of(text), None, "{text:?}");
        }
    }

    #[test]
    fn provider_reset_on_another_line_than_the_backoff() {
        let text = "⎿  API Error (429 {\"error\":{\"message\":\"Organization Rate limit exceeded, please try again after 1 seconds\",\"type\":\"rate_limit_reached_error\"}}) · Retrying in 7 seconds… (attempt 1/10)";
        assert_eq!(after_s(text), Some(1.0));
        let text = "  Retrying in 26 seconds… (attempt 5/10)\n429 Rate limit reached. Please try again in 3.5s.";
        assert_eq!(after_s(text), Some(3.5));
        let text = "429 Too Many Requests\nRetry-After: 12\nRetrying in 2 seconds… (attempt 1/3)";
        assert_eq!(after_s(text), Some(12.0));
    }

    #[test]
    fn joined_window_maps_the_line_start() {
        let text = "a\nb\r\nLINE\nc";
        let (joined, start) = joined_window(text, 5).expect("window");
        assert_eq!(joined, "abLINEc");
        assert_eq!(&joined[start..start + 4], "LINE");
        assert_eq!(joined_window("one line", 0), None);
        // Multi-byte text around the window edges.
        let text = format!("{}\nLINE\n{}", "é".repeat(20_000), "ü".repeat(20_000));
        let line_start = text.find("LINE").expect("line");
        let (joined, start) = joined_window(&text, line_start).expect("window");
        assert_eq!(&joined[start..start + 4], "LINE");
    }

    #[test]
    fn odd_line_offsets_do_not_panic() {
        let text = "éé\nab try again in 5s\n🔌";
        for start in 0..=text.len() + 2 {
            for line in ["", "x", "ab try again in 5s", "é"] {
                let _ = extract(line, text, start, &corpus_ctx());
            }
        }
    }

    #[test]
    fn next_line_end_is_capped_and_on_a_boundary() {
        let text = "ab\ncd\nef";
        assert_eq!(next_line_end(text, 2), 5);
        assert_eq!(next_line_end(text, 8), 8);
        assert_eq!(next_line_end(text, 5), 8);
        let long = format!("x\n{}", "é".repeat(10_000));
        let end = next_line_end(&long, 1);
        assert!(long.is_char_boundary(end) && end <= 2 + NEXT_LINE_MAX);
    }
}
