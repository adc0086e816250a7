//! The daemon's core: one thread owns the board connection and all state,
//! and reacts to events (new records, log changes, re-auth, operator
//! requests, reload, ticks). Everything else — file watching, signals, the
//! HTTP endpoint, alert delivery — runs beside it and talks through a
//! channel or a shared snapshot, so a slow sink never stalls a decision.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use exit_record::ExitRecord;
use exit_record::health::HealthState;
use failure_signatures::{Catalogue, ClassifyContext};
use hermes_board::gateway_log::{LineClassifier, LineEvent};
use hermes_board::profiles::{ChainLink, Profiles};
use hermes_board::{
    AuditLog, Board, BoardError, BoardOptions, Kind, ParkRequest, ReleaseRequest, WriteOutcome,
};
use log_tailer::{StartAt, TailEvent, Tailer, TailerOptions};
use prometheus_client::registry::Registry;

use crate::alerts::{Alerts, Severity};
use crate::config::Config;
use crate::decide::{self, BoardFacts};
use crate::gateway::gateway_process;
use crate::health::{ProviderState, Transition, until_text};
use crate::heartbeat::{Heartbeat, Verdict, dispatcher_timing};
use crate::ingest::RecordDir;
use crate::metrics::{BoardLabels, KindLabels, Metrics, ProviderLabels, ResultLabels};
use crate::paths::Paths;
use crate::rescue::{self, BoardPlan};
use crate::restart::{RestartStep, Restarter, spawn_detached};
use crate::state::{PersistedState, write_atomic};
use crate::status::{
    BoardStatus, DispatchState, DispatcherStatus, ParkedStatus, ProviderStatus, RestartStatus,
    Status,
};

mod events;
mod gateway_log;
mod intake;
mod lanes;
mod operator;
mod parked;
mod providers;
mod publish;
mod stall;

use events::notify_systemd;
pub use events::{channel_pair, start_systemd_keepalive, start_watchers};
use lanes::{Lane, initial_lanes};

/// How long a probing provider stays probing without news before it is
/// considered healthy.
const PROBE_GRACE_S: i64 = 600;

/// Busy timeout when reading another board (read-only) to verify a run.
const OTHER_BOARD_TIMEOUT: Duration = Duration::from_millis(200);

/// How long one board access may wait for another writer's lock. Short on
/// purpose: a locked board ends the record pass at once and the loop
/// retries (see [`BoardBusy`]), so the core is never held by one lock for
/// longer than this: stall checks, `/status`, releases and SIGTERM go on.
/// (Before: 5 s per attempt, 5 retries, per record: 90 s to exit on SIGTERM
/// with 3 records pending, past systemd's default TimeoutStopSec of 90 s,
/// after which it SIGKILLs; systemd and tini expect a prompt exit on
/// SIGTERM.) Hermes' own write transactions take milliseconds; SQLite's
/// busy handler polls within this time.
const BOARD_BUSY_TIMEOUT: Duration = Duration::from_millis(200);

/// Retries of a locked board, driven by the loop: the first after this,
/// doubling, at most [`BOARD_RETRY_MAX`] apart.
const BOARD_RETRY_FIRST: Duration = Duration::from_millis(50);
const BOARD_RETRY_MAX: Duration = Duration::from_secs(1);

/// Bound of the event channel. Every event is a "look again" hint (the
/// handlers rescan their directory or file), so a full channel loses
/// nothing: senders drop the event, and a batch as long as the bound is
/// taken as an overflow and answered with a full pass, as an inotify queue
/// overflow is answered with a rescan.
pub const EVENT_CHANNEL_BOUND: usize = 1024;

/// Between ticks, /status is refreshed at most this often.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// `health.json` is rewritten at least this often with a fresh
/// `generated_at`: the shim acts on a hold only in a file under 10 minutes old.
const HEALTH_REFRESH: Duration = Duration::from_secs(60);

/// Things that wake the core.
#[derive(Debug)]
pub enum Event {
    Records,
    LogChanged,
    AuthChanged,
    Requests,
    Tick,
    Reload,
    Shutdown,
}

impl Event {
    /// Handling order within one batch of queued events (reload first, so
    /// the rest runs on the new config; shutdown last).
    fn order(&self) -> u8 {
        match self {
            Event::Reload => 0,
            Event::Requests => 1,
            Event::AuthChanged => 2,
            Event::Records => 3,
            Event::LogChanged => 4,
            Event::Tick => 5,
            Event::Shutdown => 6,
        }
    }
}

/// What the HTTP endpoint and `status` read.
#[derive(Clone)]
pub struct Shared {
    pub status: Arc<RwLock<Status>>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Epoch seconds of the core loop's last sign of life (the systemd
    /// keep-alive thread stops pinging when it is too old).
    pub alive: Arc<std::sync::atomic::AtomicI64>,
    /// Set by the signal thread on SIGTERM/SIGINT, before it queues
    /// `Shutdown`: a long pass (a backlog of records) stops between two
    /// records instead of finishing first.
    pub stopping: Arc<AtomicBool>,
}

pub struct Daemon {
    cfg: Config,
    config_path: Option<PathBuf>,
    paths: Paths,
    dry_run: bool,
    catalogue: Catalogue,
    classifier: LineClassifier,
    profiles: Profiles,
    state: PersistedState,
    state_dirty: bool,
    records: RecordDir,
    tailer: Tailer,
    restarter: Restarter,
    restarts: VecDeque<RestartStatus>,
    alerts: Alerts,
    shared: Shared,
    started_at: i64,
    interval: Duration,
    stall_after: Duration,
    rng: fastrand::Rng,
    known_profiles: BTreeSet<String>,
    last_health_doc: String,
    /// When `health.json` was last written (it is rewritten at least every
    /// [`HEALTH_REFRESH`], so a stale file means the watchdog is down).
    last_health_write: Option<Instant>,
    last_prune: Instant,
    last_tick: Instant,
    last_publish: Instant,
    /// The `(board, parked generation)` pairs the published parked list was
    /// built from.
    published_parked: Option<Vec<(String, u64)>>,
    /// The credential stores' last reading (`None`: unknown, the next
    /// reading is the baseline).
    auth_fingerprint: Option<crate::credentials::Fingerprint>,
    auth_stores: crate::credentials::Stores,
    /// The watched boards (one lane each).
    lanes: Vec<Lane>,
    gateway: Option<(i32, bool)>,
    /// Providers healed by an operator reset or a re-auth: the tasks held
    /// or parked for them are released at the next check, not at their old
    /// due time.
    heal_now: BTreeSet<String>,
    /// Bumped at every provider transition and heal: a release pass that
    /// saw the same generation (and nothing else new) is skipped.
    health_gen: u64,
}

impl Daemon {
    pub fn new(
        cfg: Config,
        config_path: Option<PathBuf>,
        paths: Paths,
        dry_run: bool,
    ) -> anyhow::Result<Daemon> {
        let metrics = Arc::new(Metrics::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let shared = Shared {
            status: Arc::new(RwLock::new(Status::default())),
            registry: Arc::new(registry),
            metrics: Arc::clone(&metrics),
            alive: Arc::new(std::sync::atomic::AtomicI64::new(wall())),
            stopping: Arc::new(AtomicBool::new(false)),
        };
        // Created 0700; refused when another user owns it or could write to
        // it (OpenSSH StrictModes; see exit_record::check_private_dir).
        exit_record::ensure_private_dir(&paths.state_dir)
            .map_err(|e| anyhow::anyhow!("state directory: {e}"))?;
        let records = RecordDir::new(&paths.record_dir, cfg.records.max_bytes);
        records.prepare().map_err(|e| {
            anyhow::anyhow!(
                "cannot create record dir {}: {e}",
                paths.record_dir.display()
            )
        })?;
        let state = PersistedState::load(&paths.state_file());
        let start = match &state.log_position {
            Some(pos) => StartAt::Resume(pos.clone()),
            None => StartAt::End,
        };
        let fresh = matches!(start, StartAt::End);
        let mut tailer = Tailer::new(
            &paths.gateway_log,
            TailerOptions {
                start,
                ..TailerOptions::default()
            },
        );
        if fresh {
            // Pin "the end" now, not at the first tick: a line written in
            // between is read, not skipped. (A fresh start yields no lines.)
            let _ = tailer.poll();
        }
        let (interval, stall_after) = dispatcher_timing(&cfg.dispatcher, &paths.hermes_home);
        let classifier = LineClassifier::new(&cfg.dispatcher.patterns)?;
        let now = Instant::now();
        let now_wall = wall();
        let mut daemon = Daemon {
            profiles: Profiles::new(&cfg.providers.chains),
            alerts: Alerts::new(&cfg.alerts, Arc::clone(&metrics)),
            restarter: Restarter::with_history(state.restarts.clone()),
            auth_fingerprint: state
                .auth_fingerprint
                .as_deref()
                .and_then(crate::credentials::Fingerprint::decode),
            auth_stores: crate::credentials::Stores::default(),
            lanes: initial_lanes(&paths),
            cfg,
            config_path,
            dry_run,
            catalogue: Catalogue::builtin(),
            classifier,
            state,
            state_dirty: true,
            records,
            tailer,
            restarts: VecDeque::new(),
            shared,
            started_at: now_wall,
            interval,
            stall_after,
            rng: fastrand::Rng::new(),
            known_profiles: BTreeSet::new(),
            last_health_doc: String::new(),
            last_health_write: None,
            last_prune: now - Duration::from_secs(3600),
            last_tick: now - Duration::from_secs(3600),
            last_publish: now - Duration::from_secs(3600),
            published_parked: None,
            gateway: None,
            heal_now: BTreeSet::new(),
            health_gen: 0,
            paths,
        };
        // Providers still unhealthy from before a restart keep their gauge.
        let restored: Vec<(String, String)> = daemon
            .state
            .providers
            .iter()
            .filter_map(|(name, s)| match s {
                ProviderState::Unhealthy { class, .. } => Some((name.clone(), class.to_string())),
                _ => None,
            })
            .collect();
        for (provider, reason) in restored {
            daemon
                .shared
                .metrics
                .provider_unhealthy
                .get_or_create(&ProviderLabels { provider, reason })
                .set(1);
        }
        // /status answers from the first request on (before the first tick),
        // with the provider health carried over from the last run.
        daemon.publish();
        Ok(daemon)
    }

    pub fn shared(&self) -> Shared {
        self.shared.clone()
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Runs until `Shutdown`. Handles everything already on disk first
    /// (records written while the watchdog was down, due parked tasks).
    pub fn run(mut self, rx: Receiver<Event>) {
        let boards: Vec<&str> = self.lanes.iter().map(|l| l.slug.as_str()).collect();
        tracing::info!(
            board = %self.paths.board_db.display(),
            boards = %boards.join(","),
            all_boards = self.paths.boards == crate::paths::BoardScope::All,
            records = %self.paths.record_dir.display(),
            gateway_log = %self.paths.gateway_log.display(),
            interval_s = self.interval.as_secs_f64(),
            stall_after_s = self.stall_after.as_secs_f64(),
            dry_run = self.dry_run,
            "kanban-watchdog started"
        );
        self.tick();
        notify_systemd(&[sd_notify::NotifyState::Ready]);
        // Events are handled at once; /status is refreshed at most every
        // PUBLISH_EVERY between ticks, so a burst of records does not
        // re-read the board once per record.
        let mut unpublished = false;
        loop {
            let check_every = self.cfg.dispatcher.check_every.0;
            let mut wait = check_every.saturating_sub(self.last_tick.elapsed());
            if unpublished {
                wait = wait.min(PUBLISH_EVERY.saturating_sub(self.last_publish.elapsed()));
            }
            if let Some(next_try) = self.next_board_retry() {
                wait = wait.min(next_try.saturating_duration_since(Instant::now()));
            }
            self.shared
                .alive
                .store(wall(), std::sync::atomic::Ordering::Relaxed);
            // A log poll stopped at its bound (log_tailer's max_poll_bytes):
            // read on at once, after whatever else is queued (signals too).
            let more_log = self.tailer.has_more();
            let first = match rx.recv_timeout(if more_log { Duration::ZERO } else { wait }) {
                Ok(ev) => Some(ev),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // A burst of file events costs one pass each, not one per event.
            let mut pending: Vec<Event> = first.into_iter().chain(rx.try_iter()).collect();
            if pending.len() >= EVENT_CHANNEL_BOUND {
                // The channel was full: a sender may have dropped an event.
                pending.push(Event::Tick);
            }
            if more_log {
                pending.push(Event::LogChanged);
            }
            // A locked board is retried by the loop, not by waiting on it.
            if self.next_board_retry().is_some_and(|t| Instant::now() >= t) {
                pending.push(Event::Records);
            }
            pending.sort_by_key(Event::order);
            pending.dedup_by_key(|e| e.order());
            let mut stop = false;
            for ev in pending {
                match ev {
                    Event::Records => self.handle_records(),
                    Event::LogChanged => self.poll_log(),
                    Event::AuthChanged => self.check_auth_store(),
                    Event::Requests => self.handle_requests(),
                    Event::Tick => self.tick(),
                    Event::Reload => self.reload(),
                    Event::Shutdown => stop = true,
                }
            }
            if stop {
                break;
            }
            unpublished = true;
            if self.last_tick.elapsed() >= check_every {
                self.tick();
                unpublished = false;
            } else if self.last_publish.elapsed() >= PUBLISH_EVERY {
                self.publish();
                unpublished = false;
            }
        }
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
        self.save_state();
        tracing::info!("kanban-watchdog stopped");
    }

    /// One full pass: everything that is time-driven.
    pub fn tick(&mut self) {
        self.last_tick = Instant::now();
        self.sync_lanes(true);
        self.ensure_boards();
        self.handle_records();
        self.handle_requests();
        self.poll_log();
        self.check_auth_store();
        let now = wall();
        for t in self.state.providers.tick(now, PROBE_GRACE_S) {
            self.on_transition(&t);
        }
        self.release_due();
        self.hold_ready_for_unhealthy();
        self.check_dispatcher();
        self.alerts.remind();
        self.publish_health();
        if self.last_prune.elapsed() >= Duration::from_secs(3600) {
            self.last_prune = Instant::now();
            let n = self.records.prune_done(self.cfg.records.keep_done.0);
            if n > 0 {
                tracing::info!(
                    "pruned {n} handled records older than {}",
                    self.cfg.records.keep_done
                );
            }
        }
        self.publish();
        if self.state_dirty {
            self.save_state();
        }
    }

    pub(super) fn save_state(&mut self) {
        self.state.last_status = self.shared.status.read().ok().map(|s| s.clone());
        self.state.restarts = self.restarter.history();
        match self.state.save(&self.paths.state_file()) {
            Ok(()) => self.state_dirty = false,
            Err(e) => {
                tracing::error!(file = %self.paths.state_file().display(), "cannot save state: {e}")
            }
        }
    }

    // ----- reload --------------------------------------------------------

    pub(super) fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            tracing::info!("SIGHUP: no config file; nothing to reload");
            return;
        };
        match Config::load(&path) {
            Ok(cfg) => match LineClassifier::new(&cfg.dispatcher.patterns) {
                Ok(classifier) => {
                    let new_paths = Paths::resolve(&cfg);
                    if new_paths != self.paths {
                        tracing::warn!(
                            "SIGHUP: path settings changed; they take effect after a restart of the watchdog"
                        );
                    }
                    self.classifier = classifier;
                    self.profiles = Profiles::new(&cfg.providers.chains);
                    self.alerts.reconfigure(&cfg.alerts);
                    (self.interval, self.stall_after) =
                        dispatcher_timing(&cfg.dispatcher, &self.paths.hermes_home);
                    self.cfg = cfg;
                    tracing::info!(file = %path.display(), "configuration reloaded");
                }
                Err(e) => tracing::error!("SIGHUP: config refused ({e}); keeping the old one"),
            },
            Err(e) => tracing::error!("SIGHUP: config refused ({e}); keeping the old one"),
        }
    }

    /// Jitter only, not security.
    pub(super) fn next_random(&mut self) -> f64 {
        self.rng.f64()
    }
}

pub fn wall() -> i64 {
    jiff::Timestamp::now().as_second()
}
