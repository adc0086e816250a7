//! Record intake: one pass over the record directory, each record judged
//! by the decision core ([`decide::decide`]) on what its board says about
//! its run, then provider health and the board changed accordingly.

use hermes_board::home::DEFAULT_BOARD;

use super::*;
use crate::paths::BoardScope;

impl Daemon {
    /// One pass over the record directory, in order. The records for a
    /// locked board wait in the directory (the loop retries them, see
    /// [`BoardBusy`]) while the others go on; a shutdown ends the pass.
    pub fn handle_records(&mut self) {
        let now = Instant::now();
        for li in 0..self.lanes.len() {
            if self.lanes[li].busy.is_some_and(|b| now >= b.next_try) {
                // This pass is the retry: wait the normal (short) time for the lock.
                self.set_board_busy_timeout(li, BOARD_BUSY_TIMEOUT);
            }
        }
        // A board file replaced since the last tick must not receive writes
        // through the old connection (its -wal now belongs to the new file).
        self.ensure_boards();
        let files = match self.records.scan() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(dir = %self.records.dir.display(), "cannot scan record dir: {e}");
                return;
            }
        };
        let total = files.len();
        let mut waiting = 0usize;
        let mut batch = ParkBatches::default();
        for (i, path) in files.iter().enumerate() {
            if self.shared.stopping.load(Ordering::Relaxed) {
                self.flush_parks(&mut batch);
                tracing::info!(
                    "shutting down: {} record(s) left for the next start",
                    total - i
                );
                return;
            }
            if self.handle_record_file(path, &mut batch) == RecordPass::Waiting {
                waiting += 1;
            }
        }
        self.flush_parks(&mut batch);
        if waiting > 0 {
            tracing::debug!("{waiting} record(s) wait for a locked board");
        }
    }

    /// Reads, judges and (for a record that parks its task) queues one
    /// record in `batch`; everything else is finished here.
    pub(super) fn handle_record_file(
        &mut self,
        path: &Path,
        batch: &mut ParkBatches,
    ) -> RecordPass {
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
                return RecordPass::Continue;
            }
        };
        let lane = self.lane_for(&record);
        if let Some(li) = lane
            && self.lanes[li]
                .busy
                .is_some_and(|b| Instant::now() < b.next_try)
        {
            // Its board is locked: the record waits, in order, for the retry.
            return RecordPass::Waiting;
        }
        // A board's batch holds parks of distinct tasks: a record for a
        // task already in it is judged only after the batch is on the board
        // (its facts must see that park). A record's facts come from its
        // own board only, so the other boards' batches go on filling:
        // records dealt over several boards are written a batch per board,
        // not a transaction per record.
        let same_task =
            |p: &PendingPark| p.req.task_id.as_str() == record.task.id.as_deref().unwrap_or("");
        let mut flushed = false;
        if let Some(queued) = lane
            .and_then(|li| batch.lanes.get_mut(&li))
            .filter(|q| q.len() >= PARK_BATCH_MAX || q.iter().any(same_task))
        {
            self.flush_lane_parks(queued);
            flushed = true;
        }
        if batch.len() >= PARK_PENDING_MAX {
            self.flush_parks(batch);
            flushed = true;
        }
        // A flush that found the record's board locked: it waits too.
        if flushed && lane.is_some_and(|li| self.lanes[li].busy.is_some()) {
            return RecordPass::Waiting;
        }
        match self.apply_record(&record, lane) {
            Ok(None) => {
                self.record_done(path, &record.id, record.skipped.as_ref());
                RecordPass::Continue
            }
            Ok(Some((li, req))) => {
                batch.lanes.entry(li).or_default().push(PendingPark {
                    path: path.to_path_buf(),
                    record_id: record.id,
                    skipped: record.skipped,
                    lane: li,
                    req,
                });
                RecordPass::Continue
            }
            Err(e) if e.is_transient() => {
                // Locked: left in place, retried by the loop, never skipped.
                // The records after it wait too: trying them now would only
                // wait on the same lock.
                // (A failed write has noted it already; a read has not.)
                let Some(li) = lane.filter(|&li| self.lanes[li].board.is_some()) else {
                    // No board at all (or another board, read-only): nothing
                    // of ours to wait on. The other records go on (a
                    // malformed one is still quarantined).
                    tracing::warn!(record = %record.id, "record will be retried: {e}");
                    return RecordPass::Continue;
                };
                let noted = self.lanes[li]
                    .busy
                    .is_some_and(|b| b.next_try > Instant::now());
                if !noted {
                    self.note_board_busy(li);
                }
                tracing::debug!(record = %record.id, "record will be retried: {e}");
                RecordPass::Waiting
            }
            Err(e) => {
                // Left in place: retried on the next event or tick, never skipped.
                tracing::warn!(record = %record.id, "record will be retried: {e}");
                RecordPass::Continue
            }
        }
    }

    pub(super) fn chain_for(&mut self, profile: Option<&str>) -> Vec<ChainLink> {
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
    pub(super) fn apply_record(
        &mut self,
        record: &ExitRecord,
        lane: Option<usize>,
    ) -> Result<Option<(usize, ParkRequest)>, BoardError> {
        let now = wall();
        let chain = self.chain_for(record.task.profile.as_deref());
        let (facts, retries_used) = match record.task.id.clone() {
            None => (BoardFacts::NoTask, 0),
            Some(_) if !decide::needs_board_facts(record) => (BoardFacts::NotAsked, 0),
            Some(task_id) => self.board_facts(record, lane, &task_id, now)?,
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
        if let BoardFacts::Run {
            facts,
            already_applied: false,
            ..
        } = &facts
            && let Some(spawned) = decide::spawned_by_another(facts, record.shim_pid)
        {
            self.shared.metrics.records_not_from_the_run.inc();
            tracing::warn!(
                record = %record.id,
                task = record.task.id.as_deref().unwrap_or("-"),
                "record written by pid {}, but the dispatcher spawned pid {spawned} for its run: \
                 not acted on (a hermes call inside the run, a record written by hand, or a shim \
                 that is not the process Hermes starts)",
                record.shim_pid
            );
        }
        if record.failure.is_some() {
            tracing::info!(record = %record.id, task = record.task.id.as_deref().unwrap_or("-"), "{}", d.why_text());
        } else {
            tracing::debug!(record = %record.id, "{}", d.why_text());
        }
        if let Some(t) = d.health.apply(&mut self.state.providers, now) {
            self.on_transition(&t);
        }
        let (Some(task_id), Some(run_id), Some(li)) =
            (record.task.id.clone(), record.task.run_id, lane)
        else {
            // No task, or a board this watchdog does not watch: health only.
            return Ok(None);
        };
        let reason = d.reason.clone().unwrap_or_default();
        let mut req = ParkRequest {
            writer_pid: Some(record.shim_pid),
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
            BoardPlan::Nothing(_) => return Ok(None),
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
        Ok(Some((li, req)))
    }

    /// Writes every board's queued parks, one transaction per board.
    pub(super) fn flush_parks(&mut self, batch: &mut ParkBatches) {
        for queued in batch.lanes.values_mut() {
            self.flush_lane_parks(queued);
        }
        batch.lanes.clear();
    }

    /// Writes the queued parks of one board in one transaction, then moves
    /// their records to `done/`. A locked board leaves them all in the
    /// record directory for the retry (nothing of the batch was applied).
    fn flush_lane_parks(&mut self, batch: &mut Vec<PendingPark>) {
        let Some(li) = batch.first().map(|p| p.lane) else {
            return;
        };
        tracing::debug!(board = %self.lanes[li].slug, "writing {} park(s) in one transaction", batch.len());
        let reqs: Vec<ParkRequest> = batch.iter().map(|p| p.req.clone()).collect();
        match self.board_write_many(li, |b| b.park_batch(&reqs)) {
            Ok(outcomes) => {
                for (p, outcome) in batch.drain(..).zip(outcomes) {
                    if let WriteOutcome::Stale { status, why } = outcome {
                        tracing::info!(task = %p.req.task_id, record = %p.record_id, status = status.as_deref().unwrap_or("-"), "stale record, board untouched: {why}");
                    }
                    self.record_done(&p.path, &p.record_id, p.skipped.as_ref());
                }
            }
            Err(e) => {
                // Left in place: retried by the loop (a lock) or at the
                // next event or tick, never skipped.
                for p in batch.drain(..) {
                    tracing::warn!(board = %self.lanes[li].slug, record = %p.record_id, "record will be retried: {e}");
                }
            }
        }
    }

    /// A handled record: to `done/`, counted.
    fn record_done(
        &mut self,
        path: &Path,
        record_id: &str,
        skipped: Option<&exit_record::Skipped>,
    ) {
        if let Err(e) = self.records.mark_done(path) {
            tracing::error!(
                "cannot move handled record {} to done/: {e}",
                path.display()
            );
            return;
        }
        self.shared.metrics.records_handled.inc();
        if let Some(skip) = skipped {
            // The shim did not start a worker whose provider is held.
            tracing::info!(record = %record_id, provider = %skip.provider, "a worker run was skipped by the shim: {}", skip.reason);
            self.shared.metrics.providers_skipped.inc();
        }
    }

    /// What the board says about a record's run: our board (through our
    /// connection), or the record's own board file opened read-only. A
    /// locked or unavailable board of ours is an error (retry later); a
    /// board that cannot say is a fact.
    pub(super) fn board_facts(
        &mut self,
        record: &ExitRecord,
        lane: Option<usize>,
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
        if let Some(li) = lane {
            if self.lanes[li].board.is_none() {
                self.ensure_board(li);
            }
            let lane = &self.lanes[li];
            let Some(board) = lane.board.as_ref() else {
                return Err(BoardError::Busy {
                    path: lane.db.clone(),
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

    /// The watched board a record is for, or `None` for a board this
    /// watchdog does not watch. A record names its board by file (the
    /// worker's `HERMES_KANBAN_DB`) or by slug; one naming neither is for
    /// the board Hermes would use, the `default` one (or the one board
    /// named in the config). A board seen for the first time is looked
    /// for in the home before the record is called foreign.
    pub(super) fn lane_for(&mut self, record: &ExitRecord) -> Option<usize> {
        let one_file = self.cfg.board_db.is_some();
        let scope = self.paths.boards.clone();
        let find = |lanes: &[Lane]| -> Option<usize> {
            if let Some(db) = &record.task.db {
                return lanes.iter().position(|l| l.is_file(Path::new(db)));
            }
            match (&scope, &record.task.board) {
                // A board file named in the config: every record is for it.
                (BoardScope::One { .. }, _) if one_file => Some(0),
                (_, Some(slug)) => lanes.iter().position(|l| l.slug == *slug),
                (BoardScope::One { .. }, None) => Some(0),
                (BoardScope::All, None) => lanes.iter().position(|l| l.slug == DEFAULT_BOARD),
            }
        };
        if let Some(li) = find(&self.lanes) {
            return Some(li);
        }
        self.sync_lanes(false);
        find(&self.lanes)
    }
}

/// A file that ends mid-JSON and was modified in the last two seconds is
/// probably still being written by a writer that does not rename into
/// place: give it time before calling it malformed.
pub(super) fn still_being_written(path: &Path, e: &exit_record::RecordError) -> bool {
    let truncated =
        matches!(e, exit_record::RecordError::Json { message, .. } if message.contains("EOF"));
    let fresh = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(2));
    truncated && fresh
}

/// At most this many parks go into one board transaction.
const PARK_BATCH_MAX: usize = 256;

/// At most this many parks wait to be written, over all the boards: room
/// for full batches on 8 boards (a pending park is its request and the
/// record's path and id, not the record with its output).
const PARK_PENDING_MAX: usize = 8 * PARK_BATCH_MAX;

/// The parks decided in a record pass and not yet written, per lane (lane
/// indices are stable during a pass: a lane found meanwhile is appended,
/// none is removed).
#[derive(Default)]
pub(super) struct ParkBatches {
    lanes: BTreeMap<usize, Vec<PendingPark>>,
}

impl ParkBatches {
    fn len(&self) -> usize {
        self.lanes.values().map(Vec::len).sum()
    }
}

/// A park decided for a record, queued to be written with others of its
/// board in one transaction; the record moves to `done/` after that.
pub(super) struct PendingPark {
    path: PathBuf,
    record_id: String,
    skipped: Option<exit_record::Skipped>,
    lane: usize,
    req: ParkRequest,
}

/// Whether the record pass goes on to the next record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RecordPass {
    /// Handled, quarantined, or left for a later pass: go on.
    Continue,
    /// Left in place for its locked board's retry.
    Waiting,
}
