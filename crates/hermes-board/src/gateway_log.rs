//! Hermes' gateway.log: the patterns that say what a line of it means
//! (anchored to the record format Hermes writes), and the classifier that
//! applies them line by line.

use std::cell::Cell;

use regex::RegexSet;
use serde::{Deserialize, Serialize};

/// The patterns of each kind of line, as regexes (a watchdog config's
/// `dispatcher.patterns`). The default is [`default_patterns`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogPatterns {
    pub activity: Vec<String>,
    pub stuck: Vec<String>,
    pub tick_error: Vec<String>,
    pub shutdown: Vec<String>,
    /// Lines scanned against the failure-signature catalogue (for provider
    /// crash texts like the xAI OAuth error).
    pub provider_failure: Vec<String>,
}

impl Default for LogPatterns {
    /// Anchored to the format, level and logger Hermes writes: see
    /// [`default_patterns`].
    fn default() -> Self {
        default_patterns()
    }
}

/// What a gateway log line means to us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineEvent {
    Activity,
    Stuck,
    TickError,
    Shutdown,
    /// Worth running through the failure-signature catalogue.
    ProviderFailure,
    Other,
}

impl LineEvent {
    pub fn label(self) -> &'static str {
        match self {
            LineEvent::Activity => "activity",
            LineEvent::Stuck => "stuck",
            LineEvent::TickError => "tick_error",
            LineEvent::Shutdown => "shutdown",
            LineEvent::ProviderFailure => "provider_failure",
            LineEvent::Other => "other",
        }
    }
}

// ----- Hermes' gateway.log format ------------------------------------------
//
// Every record Hermes 0.19 writes to gateway.log starts with
// `%(asctime)s %(levelname)s%(session_tag)s %(name)s: %(message)s`
// (hermes_logging.py `_LOG_FORMAT`), e.g.
// `2026-06-07 13:24:34,120 INFO gateway.run: kanban dispatcher [default]: spawned=1 ...`;
// `session_tag` is ` [<session id>]` or empty. Every dispatcher line comes
// from the logger `gateway.run` (gateway/kanban_watchers.py uses
// `logging.getLogger("gateway.run")`): INFO for `spawned=`, `embedded in
// gateway`, `reaped N zombie`; WARNING for `stuck`; ERROR with a traceback
// (`logger.exception`) for `tick failed` and `unexpected watcher error`.
// The gateway's own provider failures are WARNING `gateway.run: Primary
// provider auth failed: <error> — trying fallback` (or `rate-limited
// (429)`), and the RuntimeError it then raises ends a traceback.
//
// The default patterns are anchored to that format, the level and the
// logger, as fail2ban anchors its failregex to a line prefix: other
// subsystems write to the same file (messaging platforms relay chat text),
// and a line that merely quotes the xAI OAuth error or a dispatcher line
// must not mark a provider unhealthy or count as dispatcher progress.

/// `^YYYY-MM-DD HH:MM:SS,mmm ` as a regex.
const TIME: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2},[0-9]{3} ";
/// The optional ` [session id]` after the level.
const SESSION_TAG: &str = r"(?: \[[^\]]*\])?";

/// The start of a record of `logger` (a regex) at one of `levels`
/// (`INFO|WARNING`).
fn head(levels: &str, logger: &str) -> String {
    format!("{TIME}(?:{levels}){SESSION_TAG} {logger}: ")
}

/// The default `dispatcher.patterns`: anchored to the record format, level
/// and logger Hermes 0.19 writes (checked against its source and the
/// gateway logs of the interop suite).
pub fn default_patterns() -> LogPatterns {
    let run = |levels: &str, message: &str| format!("{}{message}", head(levels, r"gateway\.run"));
    LogPatterns {
        activity: vec![
            run("INFO", r"kanban dispatcher \[[^\]]*\]: spawned=[0-9]"),
            run("INFO", r"kanban dispatcher: embedded in gateway"),
            run("INFO", r"kanban dispatcher: reaped [0-9]+ zombie"),
        ],
        stuck: vec![run("WARNING", r"kanban dispatcher stuck: ")],
        tick_error: vec![run(
            "ERROR",
            r"kanban dispatcher: (?:tick failed|unexpected watcher error)",
        )],
        shutdown: vec![run(
            "INFO|WARNING|ERROR",
            r"(?:Received SIG[A-Z0-9]+ — initiating shutdown|Stopping gateway|No connected messaging platforms remain\. Shutting down gateway|kanban dispatcher: (?:stopped|shutting down|cancelled))",
        )],
        provider_failure: vec![
            run(
                "WARNING|ERROR",
                r"Primary provider (?:auth failed|rate-limited \(429\)): ",
            ),
            // The exception line of a traceback (`RuntimeError: xAI OAuth
            // state is missing access_token. ...`). A line that does not
            // start a record is read only inside an ERROR record of
            // gateway.run (see [`LineClassifier::classify`]).
            r"^(?:[A-Za-z_][A-Za-z0-9_]*\.)*[A-Za-z_][A-Za-z0-9_]*(?:Error|Exception): .*(?i-u:oauth|access_token|usage limit|rate limit|HTTP 429|quota)".into(),
        ],
    }
}

/// Patterns that are not anchored at the start of the line (`^`, after
/// optional inline flags): they match a quote of their text anywhere in a
/// line of any logger. Worth a warning at start.
pub fn unanchored(p: &LogPatterns) -> Vec<String> {
    let groups = [
        ("activity", &p.activity),
        ("stuck", &p.stuck),
        ("tick_error", &p.tick_error),
        ("shutdown", &p.shutdown),
        ("provider_failure", &p.provider_failure),
    ];
    let mut out = Vec::new();
    for (name, list) in groups {
        for pat in list {
            let mut rest = pat.as_str();
            // Skip leading flag groups such as `(?i-u)`.
            while let Some(after) = rest.strip_prefix("(?") {
                match after.find(')') {
                    Some(i)
                        if after[..i]
                            .chars()
                            .all(|c| c.is_ascii_alphabetic() || c == '-') =>
                    {
                        rest = &after[i + 1..];
                    }
                    _ => break,
                }
            }
            if !rest.starts_with('^') {
                out.push(format!("dispatcher.patterns.{name}: {pat:?}"));
            }
        }
    }
    out
}

/// Whether `line` starts with `YYYY-MM-DD HH:MM:SS,mmm ` (the start of a
/// Hermes log record). Checked byte by byte at fixed offsets: this runs on
/// every line of the log.
fn starts_record(line: &[u8]) -> bool {
    const SEPARATORS: [(usize, u8); 7] = [
        (4, b'-'),
        (7, b'-'),
        (10, b' '),
        (13, b':'),
        (16, b':'),
        (19, b','),
        (23, b' '),
    ];
    const DIGITS: [usize; 17] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22];
    line.len() >= 24
        && SEPARATORS.iter().all(|&(i, c)| line[i] == c)
        && DIGITS.iter().all(|&i| line[i].is_ascii_digit())
}

/// The level and logger name of a line that starts a Hermes log record,
/// `None` for a continuation line (a traceback, a multi-line message).
pub fn record_head(line: &str) -> Option<(&str, &str)> {
    if !starts_record(line.as_bytes()) {
        return None;
    }
    let rest = line.get(24..)?;
    let level_end = rest.find([' ', '['])?;
    let level = &rest[..level_end];
    if level.is_empty() || !level.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut rest = &rest[level_end..];
    if let Some(tagged) = rest.strip_prefix(" [") {
        rest = &tagged[tagged.find("] ")? + 1..];
    }
    let rest = rest.strip_prefix(' ')?;
    let (logger, _) = rest.split_once(": ")?;
    if logger.is_empty() || logger.contains(' ') {
        return None;
    }
    Some((level, logger))
}

/// The board a dispatcher line speaks for: `kanban dispatcher [<slug>]: ...`
/// (`None` for the gateway's lines about the dispatcher as a whole).
pub fn dispatcher_board(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("kanban dispatcher [")?;
    let (slug, _) = rest.split_once("]:")?;
    crate::home::valid_board_slug(slug).then_some(slug)
}

/// When a line that starts a record was written (epoch s): Hermes stamps
/// its records in the gateway's local time, to the second here. `None`
/// for a continuation line.
pub fn record_time(line: &str) -> Option<i64> {
    let stamp = line.get(..19)?;
    let dt: jiff::civil::DateTime = stamp.replacen(' ', "T", 1).parse().ok()?;
    jiff::tz::TimeZone::system()
        .to_timestamp(dt)
        .ok()
        .map(|ts| ts.as_second())
}

/// One record as Hermes writes it (`%(asctime)s %(levelname)s %(name)s:
/// %(message)s`, no session tag), without the line end.
pub fn record_line(at: &jiff::ZonedDateTime, level: &str, logger: &str, message: &str) -> String {
    let stamp = at.strftime("%Y-%m-%d %H:%M:%S,%3f");
    format!("{stamp} {level} {logger}: {message}")
}

/// For a line that starts a record: is it an ERROR or CRITICAL record of
/// `gateway.run` (whose continuation lines are its traceback)? Only such
/// lines are parsed further.
fn gateway_error_record(line: &str) -> bool {
    let rest = line.as_bytes().get(24..).unwrap_or_default();
    if !(rest.starts_with(b"ERROR") || rest.starts_with(b"CRITICAL")) {
        return false;
    }
    matches!(record_head(line), Some((level, "gateway.run")) if level == "ERROR" || level == "CRITICAL")
}

/// All patterns in one `RegexSet` (one pass per line; the default patterns
/// use ASCII case folding `(?i-u)`, several times faster than `(?i)`).
/// When several groups match, the first group in [`LineClassifier::GROUPS`]
/// order wins.
pub struct LineClassifier {
    set: RegexSet,
    group_of: Vec<LineEvent>,
    /// The last record started was an ERROR or CRITICAL record of
    /// `gateway.run`: the continuation lines that follow are its
    /// traceback.
    in_gateway_error: Cell<bool>,
}

impl LineClassifier {
    pub const GROUPS: [LineEvent; 5] = [
        LineEvent::Activity,
        LineEvent::Stuck,
        LineEvent::TickError,
        LineEvent::Shutdown,
        LineEvent::ProviderFailure,
    ];

    pub fn new(p: &LogPatterns) -> Result<LineClassifier, regex::Error> {
        let lists = [
            &p.activity,
            &p.stuck,
            &p.tick_error,
            &p.shutdown,
            &p.provider_failure,
        ];
        let mut patterns = Vec::new();
        let mut group_of = Vec::new();
        for (event, list) in Self::GROUPS.iter().zip(lists) {
            for pat in list {
                patterns.push(pat.as_str());
                group_of.push(*event);
            }
        }
        let set = RegexSet::new(&patterns)?;
        Ok(LineClassifier {
            set,
            group_of,
            in_gateway_error: Cell::new(false),
        })
    }

    /// Classifies one line, in file order (the classifier remembers which
    /// record a continuation line belongs to). A line that starts a record
    /// is matched against the patterns as a whole. A line that does not
    /// (part of a traceback or of a multi-line message) is matched only
    /// when the record it continues is an ERROR or CRITICAL record of
    /// `gateway.run`, which is how `logger.exception` writes a traceback:
    /// a second line of a relayed chat message cannot pose as one.
    pub fn classify(&self, line: &str) -> LineEvent {
        if starts_record(line.as_bytes()) {
            self.in_gateway_error.set(gateway_error_record(line));
        } else if !self.in_gateway_error.get() {
            return LineEvent::Other;
        }
        let rank = |e: &LineEvent| {
            Self::GROUPS
                .iter()
                .position(|g| g == e)
                .unwrap_or(usize::MAX)
        };
        self.set
            .matches(line)
            .iter()
            .filter_map(|i| self.group_of.get(i))
            .min_by_key(|e| rank(e))
            .copied()
            .unwrap_or(LineEvent::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dispatcher_line_names_its_board() {
        let line = "2026-12-02 01:11:23,894 INFO gateway.run: kanban dispatcher [second]: spawned=1 reclaimed=0";
        assert_eq!(dispatcher_board(line), Some("second"));
        assert_eq!(
            dispatcher_board(
                "INFO gateway.run: kanban dispatcher: embedded in gateway (interval=1.0s)"
            ),
            None
        );
        assert_eq!(
            dispatcher_board("kanban dispatcher [../x]: spawned=1"),
            None
        );
    }

    /// Real lines from Hermes 0.19's gateway.log (interop suite runs and
    /// the format strings in gateway/kanban_watchers.py, gateway/run.py).
    const REAL: &[(&str, LineEvent)] = &[
        (
            "2026-12-02 01:11:23,894 INFO gateway.run: kanban dispatcher [default]: spawned=1 reclaimed=0 crashed=0 timed_out=0 promoted=0 auto_blocked=0",
            LineEvent::Activity,
        ),
        (
            "2026-12-02 01:11:19,670 INFO gateway.run: kanban dispatcher: embedded in gateway (interval=1.0s)",
            LineEvent::Activity,
        ),
        (
            "2026-12-02 01:11:26,936 INFO gateway.run: kanban dispatcher: reaped 1 zombie worker(s), pids=[4646]",
            LineEvent::Activity,
        ),
        (
            "2026-11-23 14:54:34,215 WARNING gateway.run: kanban dispatcher stuck: ready queue non-empty for 6 consecutive ticks but 0 workers spawned. Check profile health (venv, PATH, credentials) and `hermes kanban list --status ready`.",
            LineEvent::Stuck,
        ),
        (
            "2026-11-23 14:54:34,215 ERROR gateway.run: kanban dispatcher: tick failed on board default",
            LineEvent::TickError,
        ),
        (
            "2026-12-02 01:11:28,966 INFO gateway.run: Received SIGTERM — initiating shutdown",
            LineEvent::Shutdown,
        ),
        (
            "2026-12-02 01:11:28,974 INFO gateway.run: Stopping gateway...",
            LineEvent::Shutdown,
        ),
        (
            "2026-12-02 01:11:28,974 WARNING [20260607_132434_ab12cd] gateway.run: Primary provider auth failed: xAI OAuth state is missing access_token. Re-authenticate with `hermes model`. — trying fallback",
            LineEvent::ProviderFailure,
        ),
        (
            "2026-12-02 01:11:14,516 WARNING gateway.run: No messaging platforms enabled.",
            LineEvent::Other,
        ),
    ];

    #[test]
    fn hermes_lines_map_to_events() {
        let c = LineClassifier::new(&LogPatterns::default()).unwrap();
        for (line, want) in REAL {
            assert_eq!(c.classify(line), *want, "{line}");
        }
    }

    #[test]
    fn a_traceback_counts_only_inside_an_error_record_of_gateway_run() {
        let c = LineClassifier::new(&LogPatterns::default()).unwrap();
        let xai = "RuntimeError: xAI OAuth state is missing access_token. Re-authenticate with `hermes model`.";
        // logger.exception in gateway.run: header, traceback, exception line.
        assert_eq!(
            c.classify(
                "2026-06-07 13:24:34,120 ERROR gateway.run: kanban dispatcher: tick failed on board default"
            ),
            LineEvent::TickError
        );
        assert_eq!(
            c.classify("Traceback (most recent call last):"),
            LineEvent::Other
        );
        assert_eq!(
            c.classify("  File \"/x/gateway/run.py\", line 2082, in _resolve_runtime_agent_kwargs"),
            LineEvent::Other
        );
        assert_eq!(c.classify(xai), LineEvent::ProviderFailure);
        assert_eq!(
            c.classify(
                "hermes_cli.auth.AuthError: xAI OAuth state is missing access_token. Re-authenticate with `hermes model`."
            ),
            LineEvent::ProviderFailure
        );
        // The second line of a chat message relayed at INFO by a platform.
        c.classify(
            "2026-06-07 13:24:35,000 INFO gateway.platforms.telegram: inbound from @mallory:",
        );
        assert_eq!(c.classify(xai), LineEvent::Other);
        // An ERROR record of another logger: not a gateway.run traceback.
        c.classify("2026-06-07 13:24:35,000 ERROR gateway.platforms.discord: send failed:");
        assert_eq!(c.classify(xai), LineEvent::Other);
        // Before any record was seen.
        let fresh = LineClassifier::new(&LogPatterns::default()).unwrap();
        assert_eq!(fresh.classify(xai), LineEvent::Other);
    }

    #[test]
    fn quoted_lookalikes_are_not_events() {
        let c = LineClassifier::new(&LogPatterns::default()).unwrap();
        for line in [
            // Another logger quoting the dispatcher's progress line.
            "2026-06-07 13:24:34,120 INFO gateway.platforms.telegram: message from @mallory: 2026-06-07 13:24:34,120 INFO gateway.run: kanban dispatcher [default]: spawned=1 reclaimed=0",
            "2026-06-07 13:24:34,120 INFO gateway.run: session note: kanban dispatcher [default]: spawned=1",
            // The dispatcher line at another level, or quoted bare.
            "2026-06-07 13:24:34,120 DEBUG gateway.run: kanban dispatcher [default]: spawned=1",
            "kanban dispatcher [default]: spawned=1 reclaimed=0 crashed=0",
            // The xAI text in a chat message, on one line.
            "2026-06-07 13:24:34,120 INFO gateway.platforms.telegram: message from @mallory: RuntimeError: xAI OAuth state is missing access_token. Re-authenticate with `hermes model`.",
            "2026-06-07 13:24:34,120 WARNING gateway.platforms.slack: relayed: Primary provider auth failed: xAI OAuth state is missing access_token.",
            // A stall or tick failure quoted by another logger.
            "2026-06-07 13:24:34,120 WARNING hermes_plugins.x: kanban dispatcher stuck: ready queue non-empty",
            "2026-06-07 13:24:34,120 INFO gateway.run: user said kanban dispatcher: tick failed on board default",
        ] {
            assert_eq!(c.classify(line), LineEvent::Other, "{line}");
        }
    }

    #[test]
    fn log_timestamps_are_read_in_local_time() {
        let t = record_time("2026-06-07 13:24:34,120 INFO gateway.run: x").unwrap();
        let expected = jiff::tz::TimeZone::system()
            .to_timestamp(jiff::civil::date(2026, 6, 7).at(13, 24, 34, 0))
            .unwrap()
            .as_second();
        assert_eq!(t, expected);
        assert_eq!(record_time("Traceback (most recent call last):"), None);
    }

    #[test]
    fn a_written_record_reads_back_as_hermes_record() {
        let at = jiff::Timestamp::from_second(1_780_000_000)
            .unwrap()
            .to_zoned_datetime(jiff::tz::TimeZone::system());
        let line = record_line(
            &at,
            "INFO",
            "gateway.run",
            "kanban dispatcher [default]: spawned=1 reclaimed=0",
        );
        assert_eq!(record_head(&line), Some(("INFO", "gateway.run")));
        assert_eq!(record_time(&line), Some(1_780_000_000));
        let c = LineClassifier::new(&LogPatterns::default()).unwrap();
        assert_eq!(c.classify(&line), LineEvent::Activity);
    }

    #[test]
    fn record_heads_are_parsed_as_hermes_writes_them() {
        assert_eq!(
            record_head("2026-06-07 13:24:34,120 INFO gateway.run: x"),
            Some(("INFO", "gateway.run"))
        );
        assert_eq!(
            record_head(
                "2026-06-07 13:24:34,120 WARNING [sess 1] gateway.platforms.telegram: x: y"
            ),
            Some(("WARNING", "gateway.platforms.telegram"))
        );
        for not_a_head in [
            "RuntimeError: xAI OAuth state is missing access_token.",
            "  File \"x.py\", line 1, in f",
            "2026-06-07 13:24:34 INFO gateway.run: x",
            "2026-06-07 13:24:34,120 info gateway.run: x",
            "2026-06-07 13:24:34,120 INFO gateway.run x",
            "",
        ] {
            assert_eq!(record_head(not_a_head), None, "{not_a_head}");
        }
    }

    #[test]
    fn the_defaults_are_anchored_and_loose_patterns_are_reported() {
        assert!(unanchored(&LogPatterns::default()).is_empty());
        let p = LogPatterns {
            activity: vec![r"kanban dispatcher \[[^\]]*\]: spawned=".into()],
            shutdown: vec![r"(?i-u)gateway (is )?shutting down".into(), "(?i)^x".into()],
            ..LogPatterns::default()
        };
        let loose = unanchored(&p);
        assert_eq!(loose.len(), 2, "{loose:?}");
        assert!(loose[0].starts_with("dispatcher.patterns.activity"));
    }

    #[test]
    fn the_first_group_wins_and_non_ascii_patterns_still_work() {
        let p = LogPatterns {
            stuck: vec!["^stuck".into()],
            provider_failure: vec!["^stuck: (?i-u:rate limit)".into()],
            ..LogPatterns::default()
        };
        let c = LineClassifier::new(&p).unwrap();
        c.classify("2026-06-07 13:24:34,120 ERROR gateway.run: x");
        assert_eq!(c.classify("stuck: RATE LIMIT"), LineEvent::Stuck);
        let p = LogPatterns {
            shutdown: vec!["Received SIGTERM — initiating shutdown".into()],
            ..LogPatterns::default()
        };
        let c = LineClassifier::new(&p).unwrap();
        assert_eq!(
            c.classify(
                "2026-06-07 13:24:34,120 INFO gateway.run: Received SIGTERM — initiating shutdown"
            ),
            LineEvent::Shutdown
        );
    }
}
