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
use failure_signatures::{Catalogue, ClassifyContext};
use hermes_board::{
    AuditLog, Board, BoardError, BoardOptions, Kind, ParkRequest, ReleaseRequest, WriteOutcome,
};
use log_tailer::{StartAt, TailEvent, Tailer, TailerOptions};
use prometheus_client::registry::Registry;

use crate::alerts::{Alerts, Severity};
use crate::config::Config;
use crate::decide::{self, BoardFacts, HealthChange};
use crate::gateway::{LineClassifier, LineEvent, gateway_process};
use crate::health::{ProviderState, Transition, until_text};
use crate::heartbeat::{Heartbeat, Verdict, dispatcher_timing};
use crate::ingest::RecordDir;
use crate::metrics::{KindLabels, Metrics, ProviderLabels, ResultLabels};
use crate::paths::Paths;
use crate::profiles::{ChainLink, Profiles};
use crate::rescue::{self, BoardPlan};
use crate::restart::{RestartStep, Restarter, spawn_detached};
use crate::state::{PersistedState, write_atomic};
use crate::status::{
    Counters, DispatcherStatus, ParkedStatus, ProviderStatus, RestartStatus, Status,
};

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

/// The board was found locked by another writer: until `next_try`, every
/// access fails at once (busy timeout 0) instead of waiting, and the record
/// pass is skipped; at `next_try` the loop runs the record pass again with
/// the normal [`BOARD_BUSY_TIMEOUT`].
#[derive(Clone, Copy, Debug)]
struct BoardBusy {
    since: Instant,
    next_try: Instant,
    attempts: u32,
}

pub struct Daemon {
    cfg: Config,
    config_path: Option<PathBuf>,
    paths: Paths,
    dry_run: bool,
    board: Option<Board>,
    board_problem: Option<String>,
    catalogue: Catalogue,
    classifier: LineClassifier,
    profiles: Profiles,
    state: PersistedState,
    state_dirty: bool,
    records: RecordDir,
    tailer: Tailer,
    heartbeat: Heartbeat,
    restarter: Restarter,
    restarts: VecDeque<RestartStatus>,
    alerts: Alerts,
    shared: Shared,
    counters: Counters,
    started_at: i64,
    interval: Duration,
    stall_after: Duration,
    rng: u64,
    known_profiles: BTreeSet<String>,
    last_health_doc: String,
    /// When `health.json` was last written (it is rewritten at least every
    /// [`HEALTH_REFRESH`], so a stale file means the watchdog is down).
    last_health_write: Option<Instant>,
    last_prune: Instant,
    last_tick: Instant,
    last_publish: Instant,
    stalled_reason: Option<String>,
    /// The credential stores' last reading (`None`: unknown, the next
    /// reading is the baseline).
    auth_fingerprint: Option<crate::credentials::Fingerprint>,
    auth_stores: crate::credentials::Stores,
    /// Set while another writer holds the board (see [`BoardBusy`]).
    board_busy: Option<BoardBusy>,
    gateway: Option<(i32, bool)>,
    /// Providers healed by an operator reset or a re-auth: the tasks held
    /// or parked for them are released at the next check, not at their old
    /// due time.
    heal_now: BTreeSet<String>,
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
            board_busy: None,
            cfg,
            config_path,
            dry_run,
            board: None,
            board_problem: None,
            catalogue: Catalogue::builtin(),
            classifier,
            state,
            state_dirty: true,
            records,
            tailer,
            heartbeat: Heartbeat::new(now, now_wall),
            restarts: VecDeque::new(),
            shared,
            counters: Counters::default(),
            started_at: now_wall,
            interval,
            stall_after,
            rng: seed(),
            known_profiles: BTreeSet::new(),
            last_health_doc: String::new(),
            last_health_write: None,
            last_prune: now - Duration::from_secs(3600),
            last_tick: now - Duration::from_secs(3600),
            last_publish: now - Duration::from_secs(3600),
            stalled_reason: None,
            gateway: None,
            heal_now: BTreeSet::new(),
            paths,
        };
        // Providers still unhealthy from before a restart keep their gauge.
        let restored: Vec<(String, String)> = daemon
            .state
            .providers
            .iter()
            .filter_map(|(name, s)| match s {
                ProviderState::Unhealthy { class, .. } => Some((name.clone(), class.clone())),
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
        tracing::info!(
            board = %self.paths.board_db.display(),
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
            if let Some(busy) = self.board_busy {
                wait = wait.min(busy.next_try.saturating_duration_since(Instant::now()));
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
            if self
                .board_busy
                .is_some_and(|b| Instant::now() >= b.next_try)
            {
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
        self.ensure_board();
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

    // ----- board --------------------------------------------------------

    fn ensure_board(&mut self) {
        if let Some(b) = &self.board
            && b.file_replaced()
        {
            tracing::warn!(board = %self.paths.board_db.display(), "board file replaced or deleted; reopening");
            self.board = None;
        }
        if self.board.is_some() {
            return;
        }
        let audit = match AuditLog::open(&self.paths.audit_log()) {
            Ok(a) => Some(a),
            Err(e) => {
                self.board_unavailable(format!("{e}"));
                return;
            }
        };
        // One short wait per access and no retries inside the board: a
        // locked board is retried by the loop (BOARD_BUSY_TIMEOUT). Options
        // added later keep their defaults.
        #[allow(clippy::needless_update)]
        let opts = BoardOptions {
            dry_run: self.dry_run,
            busy_timeout: BOARD_BUSY_TIMEOUT,
            busy_retries: 0,
            ..BoardOptions::default()
        };
        match Board::open(&self.paths.board_db, opts, audit) {
            Ok(b) => {
                if self.board_problem.take().is_some() {
                    tracing::info!(board = %self.paths.board_db.display(), "board available");
                    self.alerts
                        .resolve("board_unavailable", "board available again");
                }
                tracing::info!(board = %self.paths.board_db.display(), "board opened: {}", b.info().describe());
                self.board = Some(b);
            }
            Err(e) => self.board_unavailable(e.to_string()),
        }
    }

    fn board_unavailable(&mut self, why: String) {
        if self.board_problem.as_deref() != Some(why.as_str()) {
            tracing::error!("{why}");
            self.board_problem = Some(why.clone());
        }
        self.alerts.fire(
            "board_unavailable",
            Severity::Critical,
            &format!("cannot use the board; no task will be rescued: {why}"),
        );
    }

    fn board_write(
        &mut self,
        op: impl FnOnce(&mut Board) -> Result<WriteOutcome, BoardError>,
    ) -> Result<WriteOutcome, BoardError> {
        self.shared
            .alive
            .store(wall(), std::sync::atomic::Ordering::Relaxed);
        let Some(board) = self.board.as_mut() else {
            return Err(BoardError::Busy {
                path: self.paths.board_db.clone(),
                attempts: 0,
            });
        };
        let before = board.busy_retries();
        let audit_before = board.audit_failed_appends();
        let result = op(board);
        let retried = board.busy_retries().saturating_sub(before);
        let audit_failed = board.audit_failed_appends().saturating_sub(audit_before);
        if retried > 0 {
            self.shared.metrics.board_busy_retries.inc_by(retried);
            self.counters.board_busy_retries += retried;
        }
        if audit_failed > 0 {
            self.shared
                .metrics
                .audit_append_failures
                .inc_by(audit_failed);
        }
        match &result {
            Err(e) if e.is_transient() => self.note_board_busy(),
            Ok(_) => self.note_board_free(),
            Err(_) => {}
        }
        if let Ok(WriteOutcome::Applied(change)) = &result {
            let kind = change.action.to_string();
            *self.counters.board_writes.entry(kind.clone()).or_default() += 1;
            self.shared
                .metrics
                .board_writes
                .get_or_create(&KindLabels { kind })
                .inc();
            let verb = if change.dry_run {
                "would change"
            } else {
                "changed"
            };
            tracing::info!(
                task = %change.task,
                record = change.record_id.as_deref().unwrap_or("-"),
                "board {verb}: {} {} -> {} ({})",
                change.action,
                change.before.status,
                change.after.status,
                change.reason
            );
        }
        if let Err(e) = &result
            && !e.is_transient()
        {
            tracing::error!("board write failed: {e}");
            self.board = None;
        }
        result
    }

    // ----- records ------------------------------------------------------

    /// One pass over the record directory, in order. A locked board ends
    /// the pass at once (the records left wait in the directory and the
    /// loop retries them, see [`BoardBusy`]); so does a shutdown.
    pub fn handle_records(&mut self) {
        if let Some(busy) = self.board_busy {
            if Instant::now() < busy.next_try {
                return;
            }
            // This pass is the retry: wait the normal (short) time for the lock.
            self.set_board_busy_timeout(BOARD_BUSY_TIMEOUT);
        }
        // A board file replaced since the last tick must not receive writes
        // through the old connection (its -wal now belongs to the new file).
        self.ensure_board();
        let files = match self.records.scan() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(dir = %self.records.dir.display(), "cannot scan record dir: {e}");
                return;
            }
        };
        let total = files.len();
        for (i, path) in files.iter().enumerate() {
            if self.shared.stopping.load(Ordering::Relaxed) {
                tracing::info!(
                    "shutting down: {} record(s) left for the next start",
                    total - i
                );
                return;
            }
            if self.handle_record_file(path) == RecordPass::Stop {
                if let Some(busy) = self.board_busy {
                    let left = total - i;
                    if busy.attempts == 1 {
                        tracing::warn!(
                            board = %self.paths.board_db.display(),
                            "board is locked; retrying the write from the loop (every {}s at most); \
                             {left} record(s) wait in the record dir, none is skipped",
                            BOARD_RETRY_MAX.as_secs()
                        );
                    } else {
                        tracing::debug!(
                            attempts = busy.attempts,
                            "board still locked; {left} record(s) wait"
                        );
                    }
                }
                return;
            }
        }
    }

    /// Sets the busy timeout of our connection, if open.
    fn set_board_busy_timeout(&mut self, timeout: Duration) {
        if let Some(b) = self.board.as_mut()
            && let Err(e) = b.set_busy_timeout(timeout)
        {
            tracing::warn!("cannot set the board's busy timeout: {e}");
        }
    }

    /// Another writer holds the board: every access fails at once until the
    /// next retry, which comes sooner the shorter the lock has lasted.
    fn note_board_busy(&mut self) {
        if self.board.is_none() {
            return;
        }
        let now = Instant::now();
        let (since, attempts) = match self.board_busy {
            Some(b) => (b.since, b.attempts.saturating_add(1)),
            None => (now, 1),
        };
        let backoff = BOARD_RETRY_FIRST
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(10))
            .min(BOARD_RETRY_MAX);
        self.board_busy = Some(BoardBusy {
            since,
            next_try: now + backoff,
            attempts,
        });
        self.set_board_busy_timeout(Duration::ZERO);
    }

    /// A board access went through: the lock is gone.
    fn note_board_free(&mut self) {
        if let Some(busy) = self.board_busy.take() {
            tracing::info!(
                board = %self.paths.board_db.display(),
                "board writable again after {:.1}s locked ({} attempts)",
                busy.since.elapsed().as_secs_f64(),
                busy.attempts
            );
            self.set_board_busy_timeout(BOARD_BUSY_TIMEOUT);
        }
    }

    fn handle_record_file(&mut self, path: &Path) -> RecordPass {
        let record = match self.records.read(path) {
            Ok(r) => r,
            Err(e) if e.is_transient() || still_being_written(path, &e) => {
                tracing::debug!("record not readable yet: {e}");
                return RecordPass::Continue;
            }
            Err(e) => {
                let reason = e.to_string();
                match self.records.quarantine(path, &reason) {
                    Ok(to) => {
                        tracing::warn!(quarantined = %to.display(), "malformed exit record quarantined: {reason}")
                    }
                    Err(io) => tracing::error!(
                        "cannot quarantine {}: {io} (reason: {reason})",
                        path.display()
                    ),
                }
                self.shared.metrics.records_quarantined.inc();
                self.counters.records_quarantined += 1;
                return RecordPass::Continue;
            }
        };
        match self.apply_record(&record) {
            Ok(()) => {
                if let Err(e) = self.records.mark_done(path) {
                    tracing::error!(
                        "cannot move handled record {} to done/: {e}",
                        path.display()
                    );
                    return RecordPass::Continue;
                }
                self.shared.metrics.records_handled.inc();
                self.counters.records_handled += 1;
                if let Some(skip) = &record.skipped {
                    // The shim did not start a worker whose provider is held.
                    tracing::info!(record = %record.id, provider = %skip.provider, "a worker run was skipped by the shim: {}", skip.reason);
                    self.shared.metrics.providers_skipped.inc();
                    self.counters.providers_skipped += 1;
                }
                RecordPass::Continue
            }
            Err(e) if e.is_transient() => {
                // Locked: left in place, retried by the loop, never skipped.
                // The records after it wait too: trying them now would only
                // wait on the same lock.
                // (A failed write has noted it already; a read has not.)
                let noted = self.board_busy.is_some_and(|b| b.next_try > Instant::now());
                if self.board.is_none() {
                    // No board at all: nothing to wait on. The other records
                    // go on (a malformed one is still quarantined).
                    tracing::warn!(record = %record.id, "record will be retried: {e}");
                    return RecordPass::Continue;
                }
                if !noted {
                    self.note_board_busy();
                }
                tracing::debug!(record = %record.id, "record will be retried: {e}");
                RecordPass::Stop
            }
            Err(e) => {
                // Left in place: retried on the next event or tick, never skipped.
                tracing::warn!(record = %record.id, "record will be retried: {e}");
                RecordPass::Continue
            }
        }
    }

    fn chain_for(&mut self, profile: Option<&str>) -> Vec<ChainLink> {
        let Some(profile) = profile else {
            return Vec::new();
        };
        self.known_profiles.insert(profile.to_string());
        let path = self.paths.profile_config(profile);
        self.profiles.chain(profile, &path)
    }

    /// Applies one record: what the board says about its run, then the
    /// decision core ([`decide::decide`], shared with `replay`), then
    /// provider health and the board. An error means "try again later"
    /// (the board is locked or unavailable).
    fn apply_record(&mut self, record: &ExitRecord) -> Result<(), BoardError> {
        let now = wall();
        let chain = self.chain_for(record.task.profile.as_deref());
        let (facts, retries_used) = match record.task.id.clone() {
            None => (BoardFacts::NoTask, 0),
            Some(_) if !decide::needs_board_facts(record) => (BoardFacts::NotAsked, 0),
            Some(task_id) => self.board_facts(record, &task_id, now)?,
        };
        let random01 = self.next_random();
        let d = decide::decide(&decide::Inputs {
            record,
            chain: &chain,
            board: &facts,
            retries_used,
            health: &self.state.providers,
            cfg: &self.cfg,
            now,
            random01,
        });
        if record.failure.is_some() {
            tracing::info!(record = %record.id, task = record.task.id.as_deref().unwrap_or("-"), "{}", d.why_text());
        } else {
            tracing::debug!(record = %record.id, "{}", d.why_text());
        }
        match &d.health {
            HealthChange::None => {}
            HealthChange::Unhealthy {
                provider,
                until,
                class,
                reason,
            } => {
                if let Some(t) = self
                    .state
                    .providers
                    .mark_unhealthy(provider, *until, class, reason, now)
                {
                    self.on_transition(&t);
                }
            }
            HealthChange::Healthy { provider } => {
                if let Some(t) = self.state.providers.observe_success(provider, now) {
                    self.on_transition(&t);
                }
            }
        }
        let (Some(task_id), Some(run_id)) = (record.task.id.clone(), record.task.run_id) else {
            return Ok(());
        };
        let reason = d.reason.clone().unwrap_or_default();
        let mut req = ParkRequest {
            task_id: task_id.clone(),
            kind: Kind::Parked,
            run_id: Some(run_id),
            record_id: Some(record.id.clone()),
            due_at: None,
            provider: d.blamed.clone(),
            fallback: None,
            fallback_model: None,
            reason: reason.clone(),
        };
        match d.board {
            BoardPlan::Nothing(_) => return Ok(()),
            BoardPlan::Park { due_at } => {
                req.due_at = due_at;
                req.reason = format!(
                    "{reason}; retry {} at {}",
                    retries_used + 1,
                    until_text(due_at)
                );
            }
            BoardPlan::Requeue { fallback } => {
                req.kind = Kind::Requeued;
                req.reason = format!("{reason}; retry now on fallback {}", fallback.provider);
                // Hermes 0.22: also the task's own provider override.
                req.fallback_model = fallback.model.clone();
                req.fallback = Some(fallback.provider);
            }
            BoardPlan::Block { reason } => {
                req.kind = Kind::Blocked;
                req.reason = reason.clone();
                self.shared.metrics.delayed_retries_exhausted.inc();
                self.alerts.fire(
                    &format!("retry_budget_exhausted:{task_id}"),
                    Severity::Warning,
                    &format!("task {task_id} left blocked: {reason}"),
                );
            }
        }
        match self.board_write(|b| b.park(&req))? {
            WriteOutcome::Stale { status, why } => {
                tracing::info!(task = %task_id, record = %record.id, status = status.as_deref().unwrap_or("-"), "stale record, board untouched: {why}");
            }
            WriteOutcome::AlreadyApplied | WriteOutcome::Applied(_) => {}
        }
        Ok(())
    }

    /// What the board says about a record's run: our board (through our
    /// connection), or the record's own board file opened read-only. A
    /// locked or unavailable board of ours is an error (retry later); a
    /// board that cannot say is a fact.
    fn board_facts(
        &mut self,
        record: &ExitRecord,
        task_id: &str,
        now: i64,
    ) -> Result<(BoardFacts, u32), BoardError> {
        let Some(run_id) = record.task.run_id else {
            return Ok((
                BoardFacts::Unverifiable {
                    why: "the record names no run".into(),
                },
                0,
            ));
        };
        if self.record_is_for_our_board(record) {
            if self.board.is_none() {
                self.ensure_board();
            }
            let Some(board) = self.board.as_ref() else {
                return Err(BoardError::Busy {
                    path: self.paths.board_db.clone(),
                    attempts: 0,
                });
            };
            let facts = board.run_facts(task_id, run_id)?;
            let already_applied = board.record_already_applied(task_id, &record.id)?;
            let window_start = now - rescue::secs(self.cfg.retry.retry_window.0);
            let used = board.delayed_retries_since(task_id, window_start)?;
            return Ok((
                BoardFacts::Run {
                    facts,
                    already_applied,
                    ours: true,
                },
                used,
            ));
        }
        let Some(db) = record.task.db.as_deref() else {
            return Ok((
                BoardFacts::Unverifiable {
                    why: format!(
                        "the record is for board {}, which this watchdog does not watch, and names no board file",
                        record.task.board.as_deref().unwrap_or("-")
                    ),
                },
                0,
            ));
        };
        match hermes_board::read_run_facts(Path::new(db), task_id, run_id, OTHER_BOARD_TIMEOUT) {
            Ok(facts) => Ok((
                BoardFacts::Run {
                    facts,
                    already_applied: false,
                    ours: false,
                },
                0,
            )),
            Err(e) if e.is_transient() => Err(e),
            Err(e) => Ok((BoardFacts::Unverifiable { why: e.to_string() }, 0)),
        }
    }

    fn record_is_for_our_board(&self, record: &ExitRecord) -> bool {
        if let Some(db) = &record.task.db {
            let ours = std::fs::canonicalize(&self.paths.board_db).ok();
            let theirs = std::fs::canonicalize(db).ok();
            return match (ours, theirs) {
                (Some(a), Some(b)) => a == b,
                _ => Path::new(db) == self.paths.board_db,
            };
        }
        match (&record.task.board, &self.cfg.board_db) {
            (Some(board), None) => *board == self.cfg.board,
            _ => true,
        }
    }

    // ----- parked tasks -------------------------------------------------

    fn release_due(&mut self) {
        let Some(board) = self.board.as_ref() else {
            return;
        };
        let parked = match board.parked() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("cannot list parked tasks: {e}");
                return;
            }
        };
        let now = wall();
        for p in parked {
            let due = p.due_at.is_none_or(|t| t <= now);
            let provider_ok = p
                .provider
                .as_deref()
                .is_none_or(|prov| self.state.providers.is_available(prov));
            // Its provider was reset or re-authenticated: the old due time
            // no longer means anything.
            let healed = p
                .provider
                .as_deref()
                .is_some_and(|prov| self.heal_now.contains(prov));
            let chain = self.chain_for(p.assignee.as_deref());
            let fallback_ok = self.cfg.retry.steer_to_fallback
                && rescue::healthy_fallback(&chain, p.provider.as_deref(), &self.state.providers)
                    .is_some();
            let releasable =
                ((due || healed) && provider_ok) || (fallback_ok && p.kind == Kind::Held);
            if !releasable {
                continue;
            }
            let why = if healed && !due && provider_ok {
                format!(
                    "provider {} healed; not waiting for the old due time",
                    p.provider.as_deref().unwrap_or("-")
                )
            } else if provider_ok {
                format!(
                    "due (provider {} available)",
                    p.provider.as_deref().unwrap_or("-")
                )
            } else {
                "a fallback provider is healthy".to_string()
            };
            let req = ReleaseRequest {
                task_id: p.task_id.clone(),
                reason: why,
                // Ended early by a reset or re-auth: the park is refunded.
                healed: healed && !due,
            };
            if let Err(e) = self.board_write(|b| b.release(&req)) {
                tracing::warn!(task = %p.task_id, "release postponed: {e}");
                return;
            }
        }
        self.heal_now.clear();
        self.unsteer_healed();
    }

    /// Tasks we steered through their own model/provider override (Hermes
    /// 0.22) go back to their profile's provider once it is available
    /// again: the override is cleared, only while it is still the one we
    /// set.
    fn unsteer_healed(&mut self) {
        let Some(board) = self.board.as_ref() else {
            return;
        };
        let steered = match board.steered() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot list steered tasks: {e}");
                return;
            }
        };
        for s in steered {
            let Some(from) = s.from.clone() else {
                continue;
            };
            if !self.state.providers.is_available(&from) {
                continue;
            }
            let req = hermes_board::ClearOverride {
                task_id: s.task_id.clone(),
                provider: s.provider,
                model: s.model,
                reason: format!(
                    "provider {from} available again: the profile's own provider applies"
                ),
            };
            if let Err(e) = self.board_write(|b| b.clear_override(&req)) {
                tracing::warn!(task = %s.task_id, "clearing the override postponed: {e}");
                return;
            }
        }
    }

    /// Ready tasks whose provider is unhealthy with no healthy fallback are
    /// held in `scheduled` instead of being spawned into the same wall.
    fn hold_ready_for_unhealthy(&mut self) {
        if !self.cfg.retry.hold_ready_for_unhealthy {
            return;
        }
        let Some(board) = self.board.as_ref() else {
            return;
        };
        let ready = match board.ready_tasks() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot list ready tasks: {e}");
                return;
            }
        };
        if !self
            .state
            .providers
            .iter()
            .any(|(_, s)| matches!(s, ProviderState::Unhealthy { .. }))
        {
            return;
        }
        for task in ready {
            let chain = self.chain_for(task.assignee.as_deref());
            let Some(primary) = chain.first() else {
                continue;
            };
            let Some(until) = self.state.providers.unhealthy_until(&primary.provider) else {
                continue;
            };
            if self.cfg.retry.steer_to_fallback
                && rescue::healthy_fallback(&chain, Some(&primary.provider), &self.state.providers)
                    .is_some()
            {
                continue;
            }
            let jitter = (self.cfg.retry.jitter.as_secs_f64() * self.next_random()) as i64;
            let due = until.map(|t| {
                t.saturating_add(rescue::secs(self.cfg.retry.margin.0))
                    .saturating_add(jitter)
            });
            let req = ParkRequest {
                task_id: task.id.clone(),
                kind: Kind::Held,
                run_id: None,
                record_id: None,
                due_at: due,
                provider: Some(primary.provider.clone()),
                fallback: None,
                fallback_model: None,
                reason: format!(
                    "provider {} unhealthy until {}",
                    primary.provider,
                    until_text(until)
                ),
            };
            match self.board_write(|b| b.park(&req)) {
                Ok(WriteOutcome::Applied(_)) => {
                    self.shared.metrics.providers_skipped.inc();
                    self.counters.providers_skipped += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(task = %task.id, "hold postponed: {e}");
                    return;
                }
            }
        }
    }

    // ----- the gateway log ----------------------------------------------

    pub fn poll_log(&mut self) {
        let events = match self.tailer.poll() {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!("gateway log: {e}");
                return;
            }
        };
        if events.is_empty() {
            return;
        }
        for ev in events {
            match ev {
                TailEvent::Line(line) => self.on_log_line(&line.text),
                TailEvent::Rotated { .. } => tracing::debug!("gateway log rotated"),
                TailEvent::Truncated { at } => tracing::info!("gateway log truncated at byte {at}"),
                TailEvent::Missing => tracing::debug!("gateway log missing; waiting for it"),
                TailEvent::Reopened => tracing::debug!("gateway log reopened"),
            }
        }
        self.state.log_position = self.tailer.position();
        self.state_dirty = true;
    }

    fn on_log_line(&mut self, line: &str) {
        let event = self.classifier.classify(line);
        if event == LineEvent::Other {
            return;
        }
        self.shared
            .metrics
            .log_lines
            .get_or_create(&crate::metrics::EventLabels {
                event: event.label().into(),
            })
            .inc();
        match event {
            LineEvent::Activity => self.heartbeat.progress(Instant::now(), wall()),
            LineEvent::Stuck => {
                tracing::warn!("gateway reports: {}", failure_signatures::redact(line))
            }
            LineEvent::TickError => tracing::warn!(
                "dispatcher tick failed: {}",
                failure_signatures::redact(line)
            ),
            LineEvent::Shutdown => tracing::warn!(
                "gateway shutting down: {}",
                failure_signatures::redact(line)
            ),
            LineEvent::ProviderFailure => {
                let now = wall();
                let ctx =
                    ClassifyContext::new(jiff::Timestamp::now(), jiff::tz::TimeZone::system());
                if let Some(f) = self.catalogue.classify(line, &ctx)
                    && rescue::actionable(&f)
                    && let Some(provider) = f.provider.clone()
                {
                    let until = rescue::unhealthy_until(&f, &self.cfg.providers, now);
                    let reason = rescue::reason_text(&f, Some(&provider));
                    if let Some(t) = self.state.providers.mark_unhealthy(
                        &provider,
                        until,
                        f.class.as_str(),
                        &reason,
                        now,
                    ) {
                        self.on_transition(&t);
                    }
                }
            }
            LineEvent::Other => {}
        }
    }

    // ----- re-auth and operator requests ---------------------------------

    /// Reads every credential store (root and per-profile) and treats as a
    /// re-auth of provider P only a new credential value under P's own
    /// entry (see [`crate::credentials`]): not a change of another
    /// provider's entry, nor Hermes' status bookkeeping.
    fn check_auth_store(&mut self) {
        let stores = self.paths.auth_stores();
        let fp = self.auth_stores.read(&stores);
        let Some(before) = self.auth_fingerprint.replace(fp.clone()) else {
            // Unknown until now (first start, or a fingerprint of an older
            // format): this reading is the baseline, not a re-auth.
            self.state.auth_fingerprint = Some(fp.encode());
            self.state_dirty = true;
            return;
        };
        if before == fp {
            return;
        }
        self.state.auth_fingerprint = Some(fp.encode());
        self.state_dirty = true;
        let renewed = fp.renewed_since(&before);
        if renewed.is_empty() {
            return;
        }
        tracing::info!(
            "credential store: new credential for {}",
            renewed.join(", ")
        );
        let waiting: Vec<String> = self
            .state
            .providers
            .iter()
            .filter(|(_, s)| matches!(s, ProviderState::Unhealthy { until: None, .. }))
            .map(|(name, _)| name.clone())
            .filter(|name| renewed.iter().any(|k| same_credential_owner(name, k)))
            .collect();
        for provider in waiting {
            if let Some(t) = self.state.providers.reauthenticated_one(&provider, wall()) {
                self.heal_now.insert(provider);
                self.on_transition(&t);
            }
        }
    }

    pub fn handle_requests(&mut self) {
        let dir = self.paths.requests_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if f.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let parsed = std::fs::read(&f)
                .ok()
                .and_then(|b| serde_json::from_slice::<crate::requests::Request>(&b).ok());
            match parsed {
                Some(crate::requests::Request::ProviderReset { provider }) => {
                    match self.state.providers.reset(&provider, wall()) {
                        Some(t) => self.on_transition(&t),
                        None => tracing::info!("provider reset: {provider} was not unhealthy"),
                    }
                    // Either way, what we hold or parked for it goes back at
                    // the next check.
                    self.heal_now.insert(provider);
                }
                None => tracing::warn!(file = %f.display(), "ignoring unreadable request"),
            }
            let _ = std::fs::remove_file(&f);
        }
    }

    fn on_transition(&mut self, t: &Transition) {
        self.state_dirty = true;
        let key = format!("provider_unhealthy:{}", t.provider());
        match t {
            Transition::MarkedUnhealthy {
                provider, class, ..
            } => {
                tracing::warn!("{}", t.message());
                let gauge = &self.shared.metrics.provider_unhealthy;
                gauge
                    .get_or_create(&ProviderLabels {
                        provider: provider.clone(),
                        reason: class.clone(),
                    })
                    .set(1);
                self.alerts.fire(&key, Severity::Warning, &t.message());
            }
            Transition::Probing { provider } | Transition::Healed { provider, .. } => {
                tracing::info!("{}", t.message());
                self.clear_provider_gauges(provider);
                self.alerts.resolve(&key, &t.message());
            }
        }
        self.publish_health();
    }

    fn clear_provider_gauges(&self, provider: &str) {
        for class in failure_signatures::FailureClass::ALL {
            self.shared
                .metrics
                .provider_unhealthy
                .remove(&ProviderLabels {
                    provider: provider.to_string(),
                    reason: class.as_str().to_string(),
                });
        }
    }

    // ----- dispatcher heartbeat -----------------------------------------

    fn check_dispatcher(&mut self) {
        let now = Instant::now();
        let now_wall = wall();
        self.gateway = gateway_process(&self.paths.pid_file);
        self.shared
            .metrics
            .gateway_up
            .set(i64::from(self.gateway.is_some_and(|(_, alive)| alive)));
        let Some(board) = self.board.as_ref() else {
            return;
        };
        let after = self.heartbeat.last_event_id().unwrap_or(0);
        let (mark, ready) = match (board.progress_since(after), board.ready_tasks()) {
            (Ok(m), Ok(r)) => (m, r),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("cannot read dispatcher progress: {e}");
                return;
            }
        };
        self.heartbeat
            .observe_board(mark.last_event_id, now, now_wall);
        let ready_count = ready.len() as u64;
        self.shared.metrics.ready_tasks.set(ready_count as i64);
        let verdict = self
            .heartbeat
            .evaluate(ready_count, self.stall_after, now, now_wall);
        let waited = self
            .heartbeat
            .waiting_since_wall()
            .map(|t| (now_wall - t) as f64)
            .unwrap_or(0.0);
        self.shared.metrics.oldest_ready_age.set(waited);
        match verdict {
            Verdict::Stalled { waited } => self.on_stall(waited, ready_count),
            Verdict::Ok | Verdict::Idle => self.on_no_stall(),
        }
    }

    fn on_stall(&mut self, waited: Duration, ready: u64) {
        let gateway = match self.gateway {
            Some((pid, false)) => format!("; gateway process {pid} is gone"),
            None => "; no gateway.pid".to_string(),
            Some((pid, true)) => format!("; gateway process {pid} is alive but silent"),
        };
        let reason = format!(
            "dispatcher stalled: {ready} ready task(s) waited {}s with no dispatcher progress (stall_after {}s){gateway}",
            waited.as_secs(),
            self.stall_after.as_secs()
        );
        if self.stalled_reason.is_none() {
            tracing::warn!("{reason}");
        }
        self.stalled_reason = Some(reason.clone());
        self.shared.metrics.dispatcher_stalled.set(1);
        self.alerts
            .fire("dispatcher_stalled", Severity::Warning, &reason);
        let step = self
            .restarter
            .step(&self.cfg.restart, wall(), Instant::now());
        match step {
            RestartStep::Restart { attempt } => {
                let argv = self.cfg.restart.command.clone();
                let result = if self.dry_run {
                    tracing::warn!("dry run: would run restart command {argv:?}");
                    Ok(0)
                } else {
                    spawn_detached(&argv, &self.paths.restart_log())
                };
                let (label, detail) = match result {
                    Ok(pid) => {
                        tracing::warn!(attempt, pid, "restarting the dispatcher: {argv:?}");
                        (
                            "started",
                            format!("attempt {attempt}: ran {argv:?} (pid {pid})"),
                        )
                    }
                    Err(e) => {
                        tracing::error!(attempt, "restart command {argv:?} failed to start: {e}");
                        (
                            "failed_to_start",
                            format!("attempt {attempt}: {argv:?} failed to start: {e}"),
                        )
                    }
                };
                self.record_restart(label, detail);
                self.state.restarts = self.restarter.history();
                self.state_dirty = true;
            }
            RestartStep::NotRecovered {
                attempt,
                next_try_in,
            } => {
                self.record_restart(
                    "not_recovered",
                    format!(
                        "attempt {attempt} did not bring progress back within {}",
                        self.cfg.restart.recovery_grace
                    ),
                );
                self.alerts.fire(
                    "dispatcher_stalled",
                    Severity::Critical,
                    &format!(
                        "{reason}; restart attempt {attempt} did not recover it; next try in {}s",
                        next_try_in.as_secs()
                    ),
                );
            }
            RestartStep::LimitHit { burst, interval } => {
                self.record_restart(
                    "limited",
                    format!("{burst} restarts in {}s: giving up", interval.as_secs()),
                );
                self.alerts.fire(
                    "dispatcher_restart_limit",
                    Severity::Critical,
                    &format!(
                        "restart limit reached ({burst} in {}s); not restarting the dispatcher again until it recovers or an operator steps in: {reason}",
                        interval.as_secs()
                    ),
                );
            }
            RestartStep::AwaitingRecovery
            | RestartStep::BackingOff
            | RestartStep::GaveUp
            | RestartStep::Disabled => {}
        }
    }

    fn on_no_stall(&mut self) {
        self.shared.metrics.dispatcher_stalled.set(0);
        if self.stalled_reason.take().is_some() {
            let recovered = self.restarter.progress();
            if recovered && self.restarts.back().is_some_and(|r| r.result == "started") {
                self.record_restart("recovered", "progress resumed".into());
            }
            tracing::info!("dispatcher progress resumed");
            self.alerts
                .resolve("dispatcher_stalled", "dispatcher progress resumed");
            self.alerts
                .resolve("dispatcher_restart_limit", "dispatcher progress resumed");
        }
    }

    fn record_restart(&mut self, result: &str, detail: String) {
        self.shared
            .metrics
            .restarts
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
        if result == "started" {
            self.counters.restarts += 1;
        }
        self.restarts.push_back(RestartStatus {
            at: wall(),
            result: result.to_string(),
            detail,
        });
        while self.restarts.len() > 20 {
            self.restarts.pop_front();
        }
    }

    // ----- publishing ----------------------------------------------------

    /// Provider health and steering for worker-shim, written atomically
    /// only when it changed.
    fn publish_health(&mut self) {
        let mut steer = BTreeMap::new();
        // Profiles whose primary is unhealthy with no healthy fallback: the
        // shim does not start their kanban workers (it exits 75 with a
        // `skipped` record, and the task is parked like a failed run).
        let mut hold = BTreeMap::new();
        let profiles: Vec<String> = self.known_profiles.iter().cloned().collect();
        for profile in profiles {
            let chain = self.chain_for(Some(&profile));
            let Some(primary) = chain.first() else {
                continue;
            };
            if self.state.providers.is_available(&primary.provider) {
                continue;
            }
            let fallback = self
                .cfg
                .retry
                .steer_to_fallback
                .then(|| {
                    rescue::healthy_fallback(&chain, Some(&primary.provider), &self.state.providers)
                })
                .flatten();
            match fallback {
                Some(fb) => {
                    steer.insert(
                        profile,
                        serde_json::json!({"provider": fb.provider, "model": fb.model, "from": primary.provider}),
                    );
                }
                None if self.cfg.retry.hold_ready_for_unhealthy
                    && matches!(
                        self.state.providers.get(&primary.provider),
                        Some(ProviderState::Unhealthy { .. })
                    ) =>
                {
                    hold.insert(profile, serde_json::json!({"provider": primary.provider}));
                }
                None => {}
            }
        }
        let providers: BTreeMap<&String, &ProviderState> = self.state.providers.iter().collect();
        let doc =
            serde_json::json!({"version": 1, "providers": providers, "steer": steer, "hold": hold});
        let text = doc.to_string();
        let fresh = self
            .last_health_write
            .is_some_and(|t| t.elapsed() < HEALTH_REFRESH);
        if text == self.last_health_doc && fresh {
            return;
        }
        let mut stamped = doc;
        stamped["generated_at"] = serde_json::json!(wall());
        if let Err(e) = write_atomic(&self.paths.health_file(), stamped.to_string().as_bytes()) {
            tracing::error!(file = %self.paths.health_file().display(), "cannot publish provider health: {e}");
            return;
        }
        for (profile, to) in steer.iter() {
            tracing::info!(profile = %profile, "steering new runs of profile {profile} to {}", to["provider"]);
        }
        self.last_health_doc = text;
        self.last_health_write = Some(Instant::now());
    }

    pub fn publish(&mut self) {
        self.last_publish = Instant::now();
        let now = wall();
        board_info_metric(&self.shared.metrics, self.board.as_ref().map(|b| b.info()));
        let parked: Vec<ParkedStatus> = self
            .board
            .as_ref()
            .and_then(|b| b.parked().ok())
            .unwrap_or_default()
            .into_iter()
            .map(|p| ParkedStatus {
                task: p.task_id,
                kind: format!("{:?}", p.kind).to_lowercase(),
                due_at: p.due_at,
                provider: p.provider,
                reason: p.reason,
            })
            .collect();
        self.shared.metrics.parked_tasks.set(parked.len() as i64);
        let last_progress = self.heartbeat.last_progress_wall();
        let next_cycle = last_progress + self.interval.as_secs() as i64;
        self.shared
            .metrics
            .dispatcher_last_progress
            .set(last_progress as f64);
        self.shared
            .metrics
            .dispatcher_next_cycle
            .set(next_cycle.max(now) as f64);
        let ready = self.shared.metrics.ready_tasks.get().max(0) as u64;
        let state = if self.board.is_none() {
            "unknown"
        } else if self.stalled_reason.is_some() {
            "stalled"
        } else if ready == 0 {
            "idle"
        } else {
            "ok"
        };
        let mut counters = self.counters.clone();
        counters.alerts_sent = self.shared.metrics.alerts_sent.get();
        counters.alerts_failed = self.shared.metrics.alerts_failed.get();
        let status = Status {
            version: env!("CARGO_PKG_VERSION").into(),
            generated_at: now,
            started_at: self.started_at,
            pid: std::process::id(),
            dry_run: self.dry_run,
            board: self.paths.board_db.display().to_string(),
            board_info: self.board.as_ref().map(|b| b.info().clone()),
            board_problem: self.board_problem.clone(),
            record_dir: self.paths.record_dir.display().to_string(),
            dispatcher: DispatcherStatus {
                state: state.into(),
                stalled: self.stalled_reason.is_some(),
                reason: self.stalled_reason.clone(),
                last_progress_at: Some(last_progress),
                next_cycle_at: Some(next_cycle.max(now)),
                interval_s: self.interval.as_secs_f64(),
                stall_after_s: self.stall_after.as_secs_f64(),
                ready_tasks: ready,
                waiting_since: self.heartbeat.waiting_since_wall(),
                gateway_pid: self.gateway.map(|(pid, _)| pid),
                gateway_up: self.gateway.map(|(_, up)| up),
            },
            providers: self
                .state
                .providers
                .iter()
                .map(|(name, s)| provider_status(name, s))
                .collect(),
            parked,
            restarts: self.restarts.iter().cloned().collect(),
            incidents: self.alerts.incidents(),
            counters,
        };
        if let Ok(mut s) = self.shared.status.write() {
            *s = status;
        }
    }

    fn save_state(&mut self) {
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

    fn reload(&mut self) {
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

    fn next_random(&mut self) -> f64 {
        // xorshift64*: jitter only, not security.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn provider_status(name: &str, s: &ProviderState) -> ProviderStatus {
    match s {
        ProviderState::Healthy { since } | ProviderState::Probing { since } => ProviderStatus {
            name: name.into(),
            state: s.name().into(),
            since: *since,
            until: None,
            class: None,
            reason: None,
        },
        ProviderState::Unhealthy {
            since,
            until,
            class,
            reason,
        } => ProviderStatus {
            name: name.into(),
            state: "unhealthy".into(),
            since: *since,
            until: *until,
            class: Some(class.clone()),
            reason: Some(reason.clone()),
        },
    }
}

/// `kanban_watchdog_board_info{journal_mode,hermes_features,columns} 1`
/// for the open board; no series while it is unavailable.
fn board_info_metric(metrics: &Metrics, info: Option<&hermes_board::BoardInfo>) {
    let Some(info) = info else {
        metrics.board_info.clear();
        return;
    };
    let labels = crate::metrics::BoardInfoLabels {
        journal_mode: info.journal_mode.clone(),
        hermes_features: info.features.label(),
        columns: if info.columns.is_empty() {
            "none".into()
        } else {
            info.columns.join(",")
        },
    };
    if metrics.board_info.get(&labels).is_none() {
        metrics.board_info.clear();
        metrics.board_info.get_or_create(&labels).set(1);
    }
}

pub fn wall() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    (t ^ (u64::from(std::process::id()) << 32)) | 1
}

/// A file that ends mid-JSON and was modified in the last two seconds is
/// probably still being written by a writer that does not rename into
/// place: give it time before calling it malformed.
fn still_being_written(path: &Path, e: &exit_record::RecordError) -> bool {
    let truncated =
        matches!(e, exit_record::RecordError::Json { message, .. } if message.contains("EOF"));
    let fresh = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(2));
    truncated && fresh
}

/// Whether provider `name` (as the watchdog marked it: a Hermes id, or the
/// catalogue's name for one) owns the credential stored under Hermes
/// provider id `store_key`.
fn same_credential_owner(name: &str, store_key: &str) -> bool {
    name == store_key
        || failure_signatures::same_provider(name, store_key)
        || failure_signatures::same_provider(store_key, name)
}

/// Whether the record pass goes on to the next record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecordPass {
    Continue,
    Stop,
}

/// With systemd's `WatchdogSec`, pings `WATCHDOG=1` at a third of the
/// interval for as long as the core loop shows signs of life within
/// `hang_after` (a board locked by Hermes may legitimately hold one write
/// for tens of seconds). A hung core stops the pings and systemd restarts us.
pub fn start_systemd_keepalive(alive: Arc<std::sync::atomic::AtomicI64>, hang_after: Duration) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 3).max(Duration::from_millis(100));
    let _ = std::thread::Builder::new()
        .name("systemd-watchdog".into())
        .spawn(move || {
            loop {
                let age = wall() - alive.load(std::sync::atomic::Ordering::Relaxed);
                if age <= hang_after.as_secs() as i64 {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                } else {
                    tracing::error!(
                        "core loop silent for {age}s; letting systemd's watchdog restart us"
                    );
                }
                std::thread::sleep(period);
            }
        });
}

fn notify_systemd(state: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(state);
    }
}

/// Starts the file watchers that feed the core. Missing directories are
/// created (record dir, requests) or left to the periodic tick (log dir).
pub fn start_watchers(paths: &Paths, tx: SyncSender<Event>) -> Vec<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let record_dir = paths.record_dir.clone();
    let log_dir = paths.gateway_log.parent().map(Path::to_path_buf);
    // The auth store sits in the Hermes home beside kanban.db and its -wal:
    // watching that directory would wake us on every board write. Re-auth
    // is noticed by the per-tick fingerprint check instead.
    let requests = paths.requests_dir();
    let _ = std::fs::create_dir_all(&requests);
    let mut dirs: Vec<PathBuf> = vec![record_dir.clone(), requests.clone()];
    dirs.extend(log_dir.clone());
    let mut seen = HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    let mut watchers = Vec::new();
    for dir in dirs {
        let tx = tx.clone();
        let (record_dir, requests, log_dir) =
            (record_dir.clone(), requests.clone(), log_dir.clone());
        let handler = move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else {
                hint(&tx, Event::Tick);
                return;
            };
            if ev.need_rescan() {
                hint(&tx, Event::Tick);
                return;
            }
            // Only changes matter. Our own reads (IN_OPEN, IN_CLOSE_NOWRITE)
            // would otherwise wake us again: a feedback loop.
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            for p in &ev.paths {
                let parent = p.parent();
                let event = if parent == Some(record_dir.as_path()) {
                    // Only a record arriving matters: not temp files being
                    // written, not records leaving for done/ or quarantine/.
                    let arriving = matches!(
                        ev.kind,
                        notify::EventKind::Create(_)
                            | notify::EventKind::Modify(_)
                            | notify::EventKind::Any
                    );
                    let is_record = p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(exit_record::is_record_file_name);
                    if !(arriving && is_record && p.exists()) {
                        continue;
                    }
                    Event::Records
                } else if parent == Some(requests.as_path()) {
                    Event::Requests
                } else if log_dir.as_deref().is_some_and(|d| parent == Some(d)) {
                    Event::LogChanged
                } else {
                    continue;
                };
                hint(&tx, event);
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(mut w) => match w.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => watchers.push(w),
                Err(e) => {
                    tracing::info!(dir = %dir.display(), "not watching (polled on each tick instead): {e}")
                }
            },
            Err(e) => tracing::warn!("cannot start file watcher: {e}"),
        }
    }
    watchers
}

/// Queues a "look again" event without ever blocking a watcher thread: on
/// a full channel the event is dropped (the core answers a full batch with
/// a full pass; see [`EVENT_CHANNEL_BOUND`]).
fn hint(tx: &SyncSender<Event>, ev: Event) {
    match tx.try_send(ev) {
        Ok(()) | Err(TrySendError::Disconnected(_)) => {}
        Err(TrySendError::Full(ev)) => tracing::debug!("event channel full; dropped {ev:?}"),
    }
}

/// Channel for the core, bounded (see [`EVENT_CHANNEL_BOUND`]).
pub fn channel_pair() -> (SyncSender<Event>, Receiver<Event>) {
    sync_channel(EVENT_CHANNEL_BOUND)
}

#[cfg(test)]
mod channel_tests {
    use super::*;

    #[test]
    fn a_full_event_channel_drops_hints_without_blocking_and_is_bounded() {
        let (tx, rx) = channel_pair();
        for _ in 0..EVENT_CHANNEL_BOUND + 500 {
            // Never blocks, even with nobody reading.
            hint(&tx, Event::Records);
        }
        let queued: Vec<Event> = rx.try_iter().collect();
        assert_eq!(queued.len(), EVENT_CHANNEL_BOUND);
        // A full batch is what the core takes as an overflow (a full pass).
        assert!(queued.len() >= EVENT_CHANNEL_BOUND);
        // A shutdown is sent blocking: it waits for room, never dropped.
        let sender = std::thread::spawn(move || {
            for _ in 0..EVENT_CHANNEL_BOUND {
                hint(&tx, Event::LogChanged);
            }
            tx.send(Event::Shutdown).is_ok()
        });
        let mut got_shutdown = false;
        while let Ok(ev) = rx.recv_timeout(Duration::from_secs(5)) {
            if matches!(ev, Event::Shutdown) {
                got_shutdown = true;
                break;
            }
        }
        assert!(sender.join().unwrap());
        assert!(got_shutdown);
    }
}
