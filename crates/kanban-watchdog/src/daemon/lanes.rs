//! The boards the daemon watches, one lane each: the connection (opened,
//! reopened when the file is replaced, every write through one place that
//! counts and logs it), a locked board answered by retrying from the loop
//! instead of waiting on the lock, and what is known about the dispatcher
//! on that board. With no board named in the config, the lanes follow the
//! Hermes home: a new board gets a lane at the next check, an archived or
//! removed one loses it.

use hermes_board::home::{DEFAULT_BOARD, discover_boards};

use super::*;
use crate::paths::BoardScope;

/// The parked set is read whole at least this often (what the board's
/// events cannot tell: a row changed by hand without an event; every write
/// is guarded on the row anyway). A whole read of 10,000 parked tasks costs
/// about as much as five minutes of checks.
const PARKED_FULL_READ: Duration = Duration::from_secs(300);

/// More tasks touched than this since the last look: read the set whole.
const PARKED_INCREMENT_MAX: usize = 512;

/// The board was found locked by another writer: until `next_try`, every
/// access fails at once (busy timeout 0) instead of waiting, and the records
/// for it wait; at `next_try` the loop runs the record pass again with the
/// normal [`BOARD_BUSY_TIMEOUT`].
#[derive(Clone, Copy, Debug)]
pub(super) struct BoardBusy {
    pub(super) since: Instant,
    pub(super) next_try: Instant,
    pub(super) attempts: u32,
}

/// One watched board.
pub(super) struct Lane {
    /// Hermes' slug (`default` for `<root>/kanban.db`).
    pub(super) slug: String,
    pub(super) db: PathBuf,
    /// The file's canonical path once it has been opened (records name
    /// their board by path).
    pub(super) canonical: Option<PathBuf>,
    /// Whether this lane's alerts carry the slug (every lane but the home's
    /// `default` board when all boards are watched, so a single-board setup
    /// keeps its alert names).
    pub(super) named: bool,
    pub(super) board: Option<Board>,
    pub(super) problem: Option<String>,
    pub(super) busy: Option<BoardBusy>,
    pub(super) heartbeat: Heartbeat,
    pub(super) stalled_reason: Option<String>,
    pub(super) ready: u64,
    /// The `board_info` series published for it (replaced when it changes).
    pub(super) info_labels: Option<crate::metrics::BoardInfoLabels>,
    /// The tasks we parked or held on it, kept up to date from the board's
    /// events: each look re-reads only the tasks with an event since the
    /// last one (`parked_events_seen`), the whole set after a reopen and at
    /// least every [`PARKED_FULL_READ`]. The board stays the source of
    /// truth; a tick costs the same with 10 or 10,000 parked.
    parked_map: BTreeMap<String, hermes_board::Parked>,
    parked: Arc<Vec<hermes_board::Parked>>,
    parked_events_seen: Option<i64>,
    parked_full_read: Option<Instant>,
    /// Bumped whenever `parked` changed.
    pub(super) parked_gen: u64,
    /// What the last release pass saw (`parked_gen`, the daemon's
    /// `health_gen`, the minute) and the earliest due time it left
    /// waiting: the next pass is skipped while none of them changed.
    pub(super) release_scan: Option<(u64, u64, i64)>,
    pub(super) next_due: Option<i64>,
}

impl Lane {
    pub(super) fn new(slug: String, db: PathBuf, named: bool) -> Lane {
        Lane {
            slug,
            db,
            canonical: None,
            named,
            board: None,
            problem: None,
            busy: None,
            heartbeat: Heartbeat::new(Instant::now(), wall()),
            stalled_reason: None,
            ready: 0,
            info_labels: None,
            parked_map: BTreeMap::new(),
            parked: Arc::new(Vec::new()),
            parked_events_seen: None,
            parked_full_read: None,
            parked_gen: 0,
            release_scan: None,
            next_due: None,
        }
    }

    /// `kind` for an unnamed lane, `kind:<slug>` otherwise.
    pub(super) fn alert_key(&self, kind: &str) -> String {
        if self.named {
            format!("{kind}:{}", self.slug)
        } else {
            kind.to_string()
        }
    }

    pub(super) fn labels(&self) -> BoardLabels {
        BoardLabels {
            board: self.slug.clone(),
        }
    }

    /// The tasks we parked or held on this board (see `parked_map`).
    pub(super) fn parked(&mut self) -> Result<Arc<Vec<hermes_board::Parked>>, BoardError> {
        let Some(board) = self.board.as_ref() else {
            return Err(BoardError::Busy {
                path: self.db.clone(),
                attempts: 0,
            });
        };
        let full_due = self
            .parked_full_read
            .is_none_or(|t| t.elapsed() >= PARKED_FULL_READ);
        let touched = match self.parked_events_seen {
            Some(seen) if !full_due => {
                let (newest, touched) = board.tasks_touched_since(seen, PARKED_INCREMENT_MAX)?;
                touched.map(|ids| (newest, ids))
            }
            _ => None,
        };
        let changed = match touched {
            Some((newest, ids)) => {
                let mut changed = false;
                for id in ids {
                    match board.parked_task(&id)? {
                        Some(p) if self.parked_map.get(&id) != Some(&p) => {
                            self.parked_map.insert(id, p);
                            changed = true;
                        }
                        Some(_) => {}
                        None => changed |= self.parked_map.remove(&id).is_some(),
                    }
                }
                self.parked_events_seen = Some(newest);
                changed
            }
            None => {
                // Everything again: the newest event first, so an event
                // written meanwhile is looked at next time.
                let newest = board.max_event_id()?;
                let all: BTreeMap<String, hermes_board::Parked> = board
                    .parked()?
                    .into_iter()
                    .map(|p| (p.task_id.clone(), p))
                    .collect();
                self.parked_events_seen = Some(newest);
                self.parked_full_read = Some(Instant::now());
                let changed = all != self.parked_map || self.parked_gen == 0;
                self.parked_map = all;
                changed
            }
        };
        if changed {
            self.parked = Arc::new(self.parked_map.values().cloned().collect());
            self.parked_gen = self.parked_gen.wrapping_add(1);
        }
        Ok(Arc::clone(&self.parked))
    }

    /// A new connection: what we keep is read again, whole.
    pub(super) fn board_changed(&mut self) {
        self.parked_events_seen = None;
    }

    /// Whether `path` is this lane's board file.
    pub(super) fn is_file(&self, path: &Path) -> bool {
        if path == self.db {
            return true;
        }
        let theirs = std::fs::canonicalize(path).ok();
        let ours = self
            .canonical
            .clone()
            .or_else(|| std::fs::canonicalize(&self.db).ok());
        matches!((ours, theirs), (Some(a), Some(b)) if a == b)
    }
}

/// The lanes a fresh daemon starts with.
pub(super) fn initial_lanes(paths: &Paths) -> Vec<Lane> {
    match &paths.boards {
        BoardScope::One { slug, db } => vec![Lane::new(slug.clone(), db.clone(), false)],
        BoardScope::All => discover_boards(&paths.kanban_home)
            .into_iter()
            .map(|(slug, db)| {
                let named = slug != DEFAULT_BOARD;
                Lane::new(slug, db, named)
            })
            .collect(),
    }
}

impl Daemon {
    /// With every board watched: a lane for each board the home has now,
    /// none for one it no longer has (its metrics series go with it).
    ///
    /// `drop_gone` is false during a record pass: a lane's index must not
    /// change while a batch of parks holds it (a removed lane would shift
    /// the others and send a park to another board). Lanes go at a tick.
    pub(super) fn sync_lanes(&mut self, drop_gone: bool) {
        if self.paths.boards != BoardScope::All {
            return;
        }
        let found = discover_boards(&self.paths.kanban_home);
        let gone: Vec<usize> = (0..self.lanes.len())
            .filter(|_| drop_gone)
            .rev()
            .filter(|&i| !found.iter().any(|(s, _)| *s == self.lanes[i].slug))
            .collect();
        for i in gone {
            let lane = self.lanes.remove(i);
            tracing::info!(board = %lane.slug, "board archived or removed; no longer watched");
            self.forget_lane_series(&lane);
            self.alerts.resolve(
                &lane.alert_key("dispatcher_stalled"),
                "board no longer watched",
            );
            self.alerts.resolve(
                &lane.alert_key("board_unavailable"),
                "board no longer watched",
            );
        }
        for (slug, db) in found {
            if self.lanes.iter().any(|l| l.slug == slug) {
                continue;
            }
            tracing::info!(board = %slug, db = %db.display(), "new board found; watching it");
            let named = slug != DEFAULT_BOARD;
            self.lanes.push(Lane::new(slug, db, named));
        }
    }

    /// A lane that goes takes its series along.
    fn forget_lane_series(&mut self, lane: &Lane) {
        let m = &self.shared.metrics;
        let labels = lane.labels();
        m.dispatcher_last_progress.remove(&labels);
        m.dispatcher_next_cycle.remove(&labels);
        m.dispatcher_stalled.remove(&labels);
        m.ready_tasks.remove(&labels);
        m.oldest_ready_age.remove(&labels);
        m.parked_tasks.remove(&labels);
        if let Some(info) = &lane.info_labels {
            m.board_info.remove(info);
        }
    }

    /// The audit log of a lane: `audit.jsonl` for the one board or the
    /// home's `default`, `audit.<slug>.jsonl` for the others.
    fn audit_path(&self, li: usize) -> PathBuf {
        let lane = &self.lanes[li];
        if lane.named {
            self.paths
                .state_dir
                .join(format!("audit.{}.jsonl", lane.slug))
        } else {
            self.paths.audit_log()
        }
    }

    pub(super) fn ensure_boards(&mut self) {
        for li in 0..self.lanes.len() {
            self.ensure_board(li);
        }
    }

    pub(super) fn ensure_board(&mut self, li: usize) {
        let lane = &mut self.lanes[li];
        if let Some(b) = &lane.board
            && b.file_replaced()
        {
            tracing::warn!(board = %lane.db.display(), "board file replaced or deleted; reopening");
            lane.board = None;
            lane.canonical = None;
        }
        if lane.board.is_some() {
            return;
        }
        let audit = match AuditLog::open(&self.audit_path(li)) {
            Ok(a) => Some(a),
            Err(e) => {
                self.board_unavailable(li, format!("{e}"));
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
        let db = self.lanes[li].db.clone();
        match Board::open(&db, opts, audit) {
            Ok(b) => {
                let lane = &mut self.lanes[li];
                if lane.problem.take().is_some() {
                    tracing::info!(board = %db.display(), "board available");
                    let key = lane.alert_key("board_unavailable");
                    self.alerts.resolve(&key, "board available again");
                }
                tracing::info!(board = %db.display(), "board opened: {}", b.info().describe());
                let lane = &mut self.lanes[li];
                lane.canonical = std::fs::canonicalize(&db).ok();
                lane.board = Some(b);
                lane.board_changed();
            }
            Err(e) => self.board_unavailable(li, e.to_string()),
        }
    }

    pub(super) fn board_unavailable(&mut self, li: usize, why: String) {
        let lane = &mut self.lanes[li];
        if lane.problem.as_deref() != Some(why.as_str()) {
            tracing::error!(board = %lane.slug, "{why}");
            lane.problem = Some(why.clone());
        }
        let key = lane.alert_key("board_unavailable");
        let which = if lane.named {
            format!("board {}", lane.slug)
        } else {
            "the board".to_string()
        };
        self.alerts.fire(
            &key,
            Severity::Critical,
            &format!("cannot use {which}; no task on it will be rescued: {why}"),
        );
    }

    /// Every board write goes through here: counted, logged, a transient
    /// failure noted as a locked board, any other failure closing the
    /// connection (it is reopened at the next access).
    pub(super) fn board_write(
        &mut self,
        li: usize,
        op: impl FnOnce(&mut Board) -> Result<WriteOutcome, BoardError>,
    ) -> Result<WriteOutcome, BoardError> {
        let mut outcomes = self.board_write_many(li, |b| op(b).map(|o| vec![o]))?;
        Ok(outcomes.pop().unwrap_or(WriteOutcome::AlreadyApplied))
    }

    /// [`Daemon::board_write`] for a transaction of several writes.
    pub(super) fn board_write_many(
        &mut self,
        li: usize,
        op: impl FnOnce(&mut Board) -> Result<Vec<WriteOutcome>, BoardError>,
    ) -> Result<Vec<WriteOutcome>, BoardError> {
        self.shared
            .alive
            .store(wall(), std::sync::atomic::Ordering::Relaxed);
        let lane = &mut self.lanes[li];
        let Some(board) = lane.board.as_mut() else {
            return Err(BoardError::Busy {
                path: lane.db.clone(),
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
        }
        if audit_failed > 0 {
            self.shared
                .metrics
                .audit_append_failures
                .inc_by(audit_failed);
        }
        match &result {
            Err(e) if e.is_transient() => self.note_board_busy(li),
            Ok(_) => self.note_board_free(li),
            Err(_) => {}
        }
        let applied = result.iter().flatten().filter_map(|o| match o {
            WriteOutcome::Applied(change) => Some(change),
            _ => None,
        });
        for change in applied {
            self.shared
                .metrics
                .board_writes
                .get_or_create(&KindLabels::new(change.action))
                .inc();
            let verb = if change.dry_run {
                "would change"
            } else {
                "changed"
            };
            tracing::info!(
                board = %self.lanes[li].slug,
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
            tracing::error!(board = %self.lanes[li].slug, "board write failed: {e}");
            self.lanes[li].board = None;
        }
        result
    }

    /// Sets the busy timeout of a lane's connection, if open.
    pub(super) fn set_board_busy_timeout(&mut self, li: usize, timeout: Duration) {
        if let Some(b) = self.lanes[li].board.as_mut()
            && let Err(e) = b.set_busy_timeout(timeout)
        {
            tracing::warn!("cannot set the board's busy timeout: {e}");
        }
    }

    /// Another writer holds the board: every access fails at once until the
    /// next retry, which comes sooner the shorter the lock has lasted.
    pub(super) fn note_board_busy(&mut self, li: usize) {
        let lane = &mut self.lanes[li];
        if lane.board.is_none() {
            return;
        }
        let now = Instant::now();
        let (since, attempts) = match lane.busy {
            Some(b) => (b.since, b.attempts.saturating_add(1)),
            None => (now, 1),
        };
        let backoff = BOARD_RETRY_FIRST
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(10))
            .min(BOARD_RETRY_MAX);
        lane.busy = Some(BoardBusy {
            since,
            next_try: now + backoff,
            attempts,
        });
        if attempts == 1 {
            tracing::warn!(
                board = %lane.db.display(),
                "board is locked; retrying the write from the loop (every {}s at most); \
                 the records for it wait in the record dir, none is skipped",
                BOARD_RETRY_MAX.as_secs()
            );
        } else {
            tracing::debug!(board = %lane.slug, attempts, "board still locked");
        }
        self.set_board_busy_timeout(li, Duration::ZERO);
    }

    /// A board access went through: the lock is gone.
    pub(super) fn note_board_free(&mut self, li: usize) {
        if let Some(busy) = self.lanes[li].busy.take() {
            tracing::info!(
                board = %self.lanes[li].db.display(),
                "board writable again after {:.1}s locked ({} attempts)",
                busy.since.elapsed().as_secs_f64(),
                busy.attempts
            );
            self.set_board_busy_timeout(li, BOARD_BUSY_TIMEOUT);
        }
    }

    /// The lane whose locked board is due for a retry soonest.
    pub(super) fn next_board_retry(&self) -> Option<Instant> {
        self.lanes
            .iter()
            .filter_map(|l| l.busy.map(|b| b.next_try))
            .min()
    }
}
