//! Work-aware dispatcher heartbeat. An idle dispatcher is silent, so
//! silence alone is not a stall: the dispatcher is *stalled* when ready,
//! dispatchable work has waited longer than `stall_after` with no progress
//! (new dispatcher events on the board, or dispatcher activity in its log).
//! Intervals use the monotonic clock; wall times are kept for display.

use std::path::Path;
use std::time::{Duration, Instant};

pub use hermes_board::dispatcher::MAX_HERMES_INTERVAL;
use hermes_board::dispatcher::dispatch_interval;

use crate::config::DispatcherConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing waits.
    Idle,
    /// Work waits, within the allowance.
    Ok,
    /// Work has waited `waited` with no progress.
    Stalled { waited: Duration },
}

#[derive(Debug)]
pub struct Heartbeat {
    last_progress: Instant,
    last_progress_wall: i64,
    waiting_since: Option<Instant>,
    waiting_since_wall: Option<i64>,
    scanned_through: Option<i64>,
}

impl Heartbeat {
    /// Starts as if progress had just been seen: a freshly started watchdog
    /// gives the dispatcher a full `stall_after` before judging it.
    pub fn new(now: Instant, now_wall: i64) -> Heartbeat {
        Heartbeat {
            last_progress: now,
            last_progress_wall: now_wall,
            waiting_since: None,
            waiting_since_wall: None,
            scanned_through: None,
        }
    }

    pub fn last_progress_wall(&self) -> i64 {
        self.last_progress_wall
    }

    pub fn waiting_since_wall(&self) -> Option<i64> {
        self.waiting_since_wall
    }

    /// The board event id the next look goes on from (`None` before the
    /// first).
    pub fn scanned_through(&self) -> Option<i64> {
        self.scanned_through
    }

    /// One look at the board: `new_progress` dispatcher-progress events
    /// since the last look, which ended at `scanned_through`. The first look
    /// only sets the baseline; progress events later are progress.
    pub fn observe_board(
        &mut self,
        scanned_through: i64,
        new_progress: u64,
        now: Instant,
        now_wall: i64,
    ) -> bool {
        let progressed = self.scanned_through.is_some() && new_progress > 0;
        self.scanned_through = Some(scanned_through);
        if progressed {
            self.progress(now, now_wall);
        }
        progressed
    }

    /// A dispatcher activity line in the gateway log.
    pub fn progress(&mut self, now: Instant, now_wall: i64) {
        self.last_progress = now;
        self.last_progress_wall = now_wall;
    }

    /// Judges the current state given how much dispatchable work waits.
    pub fn evaluate(
        &mut self,
        ready: u64,
        stall_after: Duration,
        now: Instant,
        now_wall: i64,
    ) -> Verdict {
        if ready == 0 {
            self.waiting_since = None;
            self.waiting_since_wall = None;
            return Verdict::Idle;
        }
        let since = *self.waiting_since.get_or_insert(now);
        self.waiting_since_wall.get_or_insert(now_wall);
        let reference = since.max(self.last_progress);
        let waited = now.saturating_duration_since(reference);
        if waited >= stall_after {
            Verdict::Stalled { waited }
        } else {
            Verdict::Ok
        }
    }
}

/// The dispatcher's interval (configured, else Hermes'
/// `kanban.dispatch_interval_seconds`, else 60 s) and `stall_after`
/// (configured, else [`default_stall_after`]).
pub fn dispatcher_timing(cfg: &DispatcherConfig, hermes_home: &Path) -> (Duration, Duration) {
    let interval = cfg
        .interval
        .map(|d| d.0)
        .or_else(|| dispatch_interval(hermes_home))
        .unwrap_or(Duration::from_secs(60));
    let stall_after = cfg
        .stall_after
        .map(|d| d.0)
        .unwrap_or_else(|| default_stall_after(interval));
    (interval, stall_after)
}

/// `stall_after`: configured, else 3 x the dispatcher interval, at least
/// 90 s. Saturating: no interval makes it panic.
pub fn default_stall_after(interval: Duration) -> Duration {
    interval
        .checked_mul(3)
        .unwrap_or(Duration::MAX)
        .max(Duration::from_secs(90))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn an_idle_board_with_a_silent_dispatcher_is_not_a_stall() {
        let t0 = Instant::now();
        let mut h = Heartbeat::new(t0, 0);
        assert_eq!(h.evaluate(0, 10 * S, t0 + 1000 * S, 1000), Verdict::Idle);
    }

    #[test]
    fn waiting_work_without_progress_stalls_after_the_allowance() {
        let t0 = Instant::now();
        let mut h = Heartbeat::new(t0, 0);
        h.observe_board(5, 3, t0, 0);
        // Work appears at t=100 after a long idle time: the clock starts then.
        assert_eq!(h.evaluate(2, 10 * S, t0 + 100 * S, 100), Verdict::Ok);
        assert_eq!(h.evaluate(2, 10 * S, t0 + 109 * S, 109), Verdict::Ok);
        assert_eq!(
            h.evaluate(2, 10 * S, t0 + 110 * S, 110),
            Verdict::Stalled { waited: 10 * S }
        );
        // Progress on the board resets it.
        assert!(h.observe_board(6, 1, t0 + 111 * S, 111));
        assert_eq!(h.evaluate(2, 10 * S, t0 + 112 * S, 112), Verdict::Ok);
        // No new progress event is not progress.
        assert!(!h.observe_board(6, 0, t0 + 130 * S, 130));
        assert!(matches!(
            h.evaluate(2, 10 * S, t0 + 130 * S, 130),
            Verdict::Stalled { .. }
        ));
    }

    #[test]
    fn the_interval_comes_from_hermes_config_when_not_set_here() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            "kanban:\n  dispatch_interval_seconds: 45\n",
        )
        .unwrap();
        let cfg = DispatcherConfig::default();
        assert_eq!(dispatcher_timing(&cfg, dir.path()), (45 * S, 135 * S));
        assert_eq!(
            dispatcher_timing(&cfg, &dir.path().join("none")),
            (60 * S, 180 * S)
        );
        let set = DispatcherConfig {
            interval: Some(crate::config::Dur::secs(2)),
            ..DispatcherConfig::default()
        };
        assert_eq!(dispatcher_timing(&set, dir.path()), (2 * S, 90 * S));
    }

    #[test]
    fn absurd_hermes_intervals_are_read_as_hermes_reads_them_within_range() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DispatcherConfig::default();
        let day = MAX_HERMES_INTERVAL;
        for (text, want) in [
            ("1e300", day),
            ("1e19", day),
            (".inf", day),
            ("-.inf", S),
            ("-5", S),
            (".nan", S),
            ("0.2", S),
            ("0", 60 * S),
            ("null", 60 * S),
            ("abc", 60 * S),
            ("'45'", 45 * S),
            ("'1e300'", day),
            ("[1, 2]", 60 * S),
            ("18446744073709551615", day),
            ("-9223372036854775808", S),
        ] {
            std::fs::write(
                dir.path().join("config.yaml"),
                format!("kanban:\n  dispatch_interval_seconds: {text}\n"),
            )
            .unwrap();
            let (interval, stall) = dispatcher_timing(&cfg, dir.path());
            assert_eq!(interval, want, "{text}");
            assert_eq!(stall, default_stall_after(want), "{text}");
        }
    }

    #[test]
    fn stall_after_defaults_to_three_intervals_at_least_90s() {
        assert_eq!(default_stall_after(Duration::MAX), Duration::MAX);
        assert_eq!(
            default_stall_after(Duration::from_secs(60)),
            Duration::from_secs(180)
        );
        assert_eq!(
            default_stall_after(Duration::from_secs(5)),
            Duration::from_secs(90)
        );
    }
}
