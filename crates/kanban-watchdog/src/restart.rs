//! Restarting a stalled dispatcher: the configured argv run detached,
//! rate-limited the way systemd's StartLimitBurst/StartLimitIntervalSec does
//! it, with exponential backoff between tries inside one incident, and a
//! recovery check after each restart.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::RestartConfig;

/// What the restarter wants done now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestartStep {
    /// Run the restart command now.
    Restart { attempt: u32 },
    /// A restart is in flight; wait for progress until the grace ends.
    AwaitingRecovery,
    /// The last restart did not bring progress back within the grace.
    NotRecovered { attempt: u32, next_try_in: Duration },
    /// Backing off before the next try.
    BackingOff,
    /// The burst limit is spent: stop restarting, alert loudly.
    LimitHit { burst: u32, interval: Duration },
    /// Already reported the limit; nothing more to do.
    GaveUp,
    /// Restarts are disabled in the config.
    Disabled,
}

/// How one restart attempt went: the `result` label of
/// `kanban_watchdog_restarts_total` and of `/status`'s restart history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartResult {
    /// The restart command was started.
    Started,
    /// The restart command could not be started.
    FailedToStart,
    /// Progress came back after a restart.
    Recovered,
    /// A restart did not bring progress back within the grace.
    NotRecovered,
    /// The burst limit was hit: no more restarts.
    Limited,
}

impl AsRef<str> for RestartResult {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl RestartResult {
    /// Every result.
    pub const ALL: [RestartResult; 5] = [
        RestartResult::Started,
        RestartResult::FailedToStart,
        RestartResult::Recovered,
        RestartResult::NotRecovered,
        RestartResult::Limited,
    ];

    /// Its name, as serialized and as the metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartResult::Started => "started",
            RestartResult::FailedToStart => "failed_to_start",
            RestartResult::Recovered => "recovered",
            RestartResult::NotRecovered => "not_recovered",
            RestartResult::Limited => "limited",
        }
    }
}

#[derive(Debug, Default)]
pub struct Restarter {
    /// Wall-clock times of past restarts (persisted, so a watchdog restart
    /// does not reset the burst limit).
    history: VecDeque<i64>,
    attempt: u32,
    awaiting_until: Option<Instant>,
    next_allowed: Option<Instant>,
    gave_up: bool,
}

impl Restarter {
    pub fn with_history(history: Vec<i64>) -> Restarter {
        Restarter {
            history: history.into(),
            ..Default::default()
        }
    }

    pub fn history(&self) -> Vec<i64> {
        self.history.iter().copied().collect()
    }

    /// Called on every check while the dispatcher is stalled.
    pub fn step(&mut self, cfg: &RestartConfig, now_wall: i64, now: Instant) -> RestartStep {
        if !cfg.enabled {
            return RestartStep::Disabled;
        }
        if self.gave_up {
            return RestartStep::GaveUp;
        }
        if let Some(until) = self.awaiting_until {
            if now < until {
                return RestartStep::AwaitingRecovery;
            }
            self.awaiting_until = None;
            let exp = self.attempt.saturating_sub(1).min(16);
            let backoff = (cfg.backoff_initial.0 * 2u32.pow(exp)).min(cfg.backoff_max.0);
            self.next_allowed = Some(now + backoff);
            return RestartStep::NotRecovered {
                attempt: self.attempt,
                next_try_in: backoff,
            };
        }
        if self.next_allowed.is_some_and(|t| now < t) {
            return RestartStep::BackingOff;
        }
        let window = cfg.interval.0.as_secs() as i64;
        while self
            .history
            .front()
            .is_some_and(|&t| now_wall - t >= window)
        {
            self.history.pop_front();
        }
        if self.history.len() as u32 >= cfg.burst {
            self.gave_up = true;
            return RestartStep::LimitHit {
                burst: cfg.burst,
                interval: cfg.interval.0,
            };
        }
        self.attempt += 1;
        self.history.push_back(now_wall);
        self.awaiting_until = Some(now + cfg.recovery_grace.0);
        RestartStep::Restart {
            attempt: self.attempt,
        }
    }

    /// Progress came back: the incident is over. Returns true when a
    /// restart was awaiting recovery (it worked).
    pub fn progress(&mut self) -> bool {
        let recovered = self.awaiting_until.is_some() || self.attempt > 0;
        self.attempt = 0;
        self.awaiting_until = None;
        self.next_allowed = None;
        self.gave_up = false;
        recovered
    }
}

/// Runs the restart argv detached: its own session, stdin from /dev/null,
/// output appended to `log`. Never a shell string. A thread reaps it.
pub fn spawn_detached(argv: &[String], log: &Path) -> std::io::Result<u32> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty restart command"))?;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Never through a link planted at the log's name (O_NOFOLLOW), never
    // blocking on a FIFO there (O_NONBLOCK); created 0600.
    let out = std::os::unix::fs::OpenOptionsExt::custom_flags(
        std::os::unix::fs::OpenOptionsExt::mode(
            OpenOptions::new().create(true).append(true),
            0o600,
        ),
        libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
    )
    .open(log)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    // SAFETY: setsid, getrlimit and setrlimit are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            // The gateway gets the open-files limit we started with.
            crate::run::restore_nofile_limit();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let _ = std::thread::Builder::new()
        .name("restart-reaper".into())
        .spawn(move || {
            let _ = child.wait();
        });
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn cfg() -> RestartConfig {
        RestartConfig {
            command: vec!["true".into()],
            burst: 3,
            interval: Dur::secs(900),
            backoff_initial: Dur::secs(10),
            backoff_max: Dur::secs(25),
            recovery_grace: Dur::secs(60),
            enabled: true,
        }
    }

    #[test]
    fn restarts_are_capped_with_backoff_and_recovery_checks() {
        let c = cfg();
        let mut r = Restarter::default();
        let t0 = Instant::now();
        assert_eq!(r.step(&c, 0, t0), RestartStep::Restart { attempt: 1 });
        assert_eq!(
            r.step(&c, 1, t0 + Duration::from_secs(1)),
            RestartStep::AwaitingRecovery
        );
        assert_eq!(
            r.step(&c, 60, t0 + Duration::from_secs(60)),
            RestartStep::NotRecovered {
                attempt: 1,
                next_try_in: Duration::from_secs(10)
            }
        );
        assert_eq!(
            r.step(&c, 65, t0 + Duration::from_secs(65)),
            RestartStep::BackingOff
        );
        assert_eq!(
            r.step(&c, 70, t0 + Duration::from_secs(70)),
            RestartStep::Restart { attempt: 2 }
        );
        assert_eq!(
            r.step(&c, 130, t0 + Duration::from_secs(130)),
            RestartStep::NotRecovered {
                attempt: 2,
                next_try_in: Duration::from_secs(20)
            }
        );
        assert_eq!(
            r.step(&c, 150, t0 + Duration::from_secs(150)),
            RestartStep::Restart { attempt: 3 }
        );
        // Capped backoff.
        assert_eq!(
            r.step(&c, 210, t0 + Duration::from_secs(210)),
            RestartStep::NotRecovered {
                attempt: 3,
                next_try_in: Duration::from_secs(25)
            }
        );
        assert_eq!(
            r.step(&c, 240, t0 + Duration::from_secs(240)),
            RestartStep::LimitHit {
                burst: 3,
                interval: Duration::from_secs(900)
            }
        );
        assert_eq!(
            r.step(&c, 5000, t0 + Duration::from_secs(5000)),
            RestartStep::GaveUp
        );
        assert!(r.progress());
        // A new incident after the window has room again.
        assert_eq!(
            r.step(&c, 5000, t0 + Duration::from_secs(5000)),
            RestartStep::Restart { attempt: 1 }
        );
    }

    #[test]
    fn the_burst_limit_survives_a_watchdog_restart() {
        let c = cfg();
        let mut r = Restarter::with_history(vec![100, 200, 300]);
        assert!(matches!(
            r.step(&c, 400, Instant::now()),
            RestartStep::LimitHit { .. }
        ));
    }

    #[test]
    fn disabled_never_restarts() {
        let mut c = cfg();
        c.enabled = false;
        assert_eq!(
            Restarter::default().step(&c, 0, Instant::now()),
            RestartStep::Disabled
        );
    }
}
