//! The gateway side: is its process alive (guarding against pid reuse), and
//! what does a line of its log mean.

use std::path::Path;

use regex::RegexSet;

use crate::config::LogPatterns;

/// `gateway.pid` as Hermes 0.19 writes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct PidFile {
    pub pid: i32,
    #[serde(default)]
    pub start_time: Option<u64>,
}

/// `Some((pid, alive))` when a pid file exists; alive means the process is
/// running and (when the file records it) started at the recorded time, so
/// a recycled pid is not mistaken for the gateway.
pub fn gateway_process(pid_file: &Path) -> Option<(i32, bool)> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    let parsed: PidFile = serde_json::from_str(&text).ok().or_else(|| {
        text.trim().parse().ok().map(|pid| PidFile {
            pid,
            start_time: None,
        })
    })?;
    Some((parsed.pid, process_matches(parsed.pid, parsed.start_time)))
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = stat.rsplit_once(')')?.1;
    // Fields after comm start at field 3 (state); start time is field 22.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let state = fields.first()?;
    if *state == "Z" || *state == "X" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn process_matches(pid: i32, recorded: Option<u64>) -> bool {
    match (start_time(pid), recorded) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(actual), Some(want)) => actual == want,
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

/// All patterns in one `RegexSet` (one pass per line; the default patterns
/// use ASCII case folding `(?i-u)`, several times faster than `(?i)`).
/// When several groups match, the first group in [`LineClassifier::GROUPS`]
/// order wins.
pub struct LineClassifier {
    set: RegexSet,
    group_of: Vec<LineEvent>,
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
        Ok(LineClassifier { set, group_of })
    }

    pub fn classify(&self, line: &str) -> LineEvent {
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
    fn hermes_lines_map_to_events() {
        let c = LineClassifier::new(&LogPatterns::default()).unwrap();
        let l = |s: &str| c.classify(s);
        assert_eq!(
            l(
                "2026-06-07 13:24:34,120 INFO gateway.run: kanban dispatcher [default]: spawned=1 reclaimed=0 crashed=0 timed_out=0 promoted=0 auto_blocked=0"
            ),
            LineEvent::Activity
        );
        assert_eq!(
            l(
                "2026-11-23 14:54:34,215 INFO gateway.run: kanban dispatcher: embedded in gateway (interval=2.0s)"
            ),
            LineEvent::Activity
        );
        assert_eq!(
            l(
                "2026-11-23 14:54:34,215 WARNING gateway.run: kanban dispatcher stuck: ready queue non-empty for 6 consecutive ticks but 0 workers spawned."
            ),
            LineEvent::Stuck
        );
        assert_eq!(
            l(
                "2026-11-23 14:54:34,215 ERROR gateway.run: kanban dispatcher: tick failed on board default"
            ),
            LineEvent::TickError
        );
        assert_eq!(
            l(
                "RuntimeError: xAI OAuth state is missing access_token. Re-authenticate with `hermes model`."
            ),
            LineEvent::ProviderFailure
        );
        assert_eq!(
            l("2026-11-23 INFO gateway.run: No messaging platforms enabled."),
            LineEvent::Other
        );
    }

    #[test]
    fn the_first_group_wins_and_non_ascii_patterns_still_work() {
        let c = LineClassifier::new(&LogPatterns::default()).unwrap();
        // Matches both `stuck` and `provider_failure` (HTTP 429).
        assert_eq!(
            c.classify("WARNING gateway.run: kanban dispatcher stuck: last error HTTP 429"),
            LineEvent::Stuck
        );
        assert_eq!(
            c.classify("rate LIMIT hit"),
            LineEvent::ProviderFailure,
            "ASCII case folding"
        );
        let p = LogPatterns {
            shutdown: vec!["Received SIGTERM — initiating shutdown".into()],
            ..LogPatterns::default()
        };
        let c = LineClassifier::new(&p).unwrap();
        assert_eq!(
            c.classify("INFO gateway.run: Received SIGTERM — initiating shutdown"),
            LineEvent::Shutdown
        );
    }

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id() as i32;
        let st = start_time(me).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("gateway.pid");
        std::fs::write(
            &f,
            format!("{{\"pid\": {me}, \"kind\": \"hermes-gateway\", \"start_time\": {st}}}"),
        )
        .unwrap();
        assert_eq!(gateway_process(&f), Some((me, true)));
        std::fs::write(&f, format!("{{\"pid\": {me}, \"start_time\": {}}}", st + 1)).unwrap();
        assert_eq!(
            gateway_process(&f),
            Some((me, false)),
            "pid reuse is caught"
        );
        assert_eq!(gateway_process(&dir.path().join("missing")), None);
    }
}
