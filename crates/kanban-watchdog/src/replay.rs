//! `kanban-watchdog replay`: reads an incident's exit records and gateway
//! log (rotated files too) and prints, in time order, what the watchdog
//! would have done and when — provider transitions, parks, wake-ups, stall
//! detections, restarts, alerts — with the current config. Writes nothing.
//!
//! The simulation runs on a virtual clock through the same decision code
//! the daemon uses (`decide::decide` for each record, `health`,
//! `restart::Restarter`). With `--board`, each record's run is judged from
//! that board (opened read-only), exactly as the daemon judges it; without
//! one, each run is assumed to have been open when its record arrived, and
//! the output says so. Ready work is known from the log's `stuck` warnings,
//! from tasks the replay itself released, and, with `--board`, from the
//! board's events.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use exit_record::{ExitRecord, ReadLimits, read_record};
use failure_signatures::{Catalogue, ClassifyContext};
use hermes_board::gateway_log::{LineClassifier, LineEvent, record_time};
use hermes_board::profiles::Profiles;

use crate::cli::Common;
use crate::config::Config;
use crate::decide::{self, BoardFacts};
use crate::health::{ProviderHealth, Transition, until_text};
use crate::heartbeat::dispatcher_timing;
use crate::paths::Paths;
use crate::rescue::{self, BoardPlan};
use crate::restart::{RestartStep, Restarter};

/// One thing that happens at a time, in the replay's input or its output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Input {
    Record(usize),
    Log(usize),
    Due(String),
    Check,
}

pub fn run(
    common: &Common,
    records: &Path,
    gateway_log: Option<&Path>,
    board: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let (cfg, _) = crate::run::load_config(common)?;
    let paths = Paths::resolve(&cfg);
    let recs = load_records(records)?;
    let lines = match gateway_log {
        Some(p) => load_log(p)?,
        None => Vec::new(),
    };
    let board_ready = match board {
        Some(db) => ready_periods(db)?,
        None => Vec::new(),
    };
    let reader = match board {
        Some(db) => Some(
            hermes_board::Board::open_read_only(db, Duration::from_secs(5))
                .with_context(|| format!("cannot open {} read-only", db.display()))?,
        ),
        None => {
            println!(
                "# no --board given: each record's run is assumed to have been open (not reported by its worker) when the record arrived"
            );
            None
        }
    };
    let out = simulate(&cfg, &paths, &recs, &lines, &board_ready, reader.as_ref());
    for line in &out {
        println!("{line}");
    }
    println!(
        "# replayed {} record(s) and {} log line(s); {} action(s); nothing was written",
        recs.len(),
        lines.len(),
        out.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn load_records(dir: &Path) -> anyhow::Result<Vec<ExitRecord>> {
    let limits = ReadLimits {
        owner_uid: None,
        ..ReadLimits::default()
    };
    let mut out = Vec::new();
    for d in [dir.to_path_buf(), dir.join("done"), dir.join("quarantine")] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match read_record(&p, &limits) {
                Ok(r) => out.push(r),
                Err(e) => eprintln!("# skipped {}: {e}", p.display()),
            }
        }
    }
    if out.is_empty() && !dir.is_dir() {
        anyhow::bail!("{}: no such record directory", dir.display());
    }
    out.sort_by_key(|r| r.ended_at);
    out.dedup_by(|a, b| a.id == b.id);
    Ok(out)
}

/// The log and its rotated siblings, oldest first, with each line's time
/// (`2026-06-07 13:24:34,120 ...`, local time); a line without a timestamp
/// (a traceback) takes the previous line's.
fn load_log(path: &Path) -> anyhow::Result<Vec<(i64, String)>> {
    let mut files: Vec<PathBuf> = (1..=16)
        .rev()
        .map(|i| PathBuf::from(format!("{}.{i}", path.display())))
        .filter(|p| p.is_file())
        .collect();
    files.push(path.to_path_buf());
    let mut out = Vec::new();
    let mut last = 0i64;
    for f in files {
        let bytes = std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
        for line in String::from_utf8_lossy(&bytes).lines() {
            if let Some(t) = record_time(line) {
                last = t;
            }
            out.push((last, line.to_string()));
        }
    }
    Ok(out)
}

/// The daemon's board facts for a record, read from the board (read-only);
/// a board that cannot answer says so.
fn board_facts(board: &hermes_board::Board, r: &ExitRecord, task: &str) -> BoardFacts {
    let Some(run) = r.task.run_id else {
        return BoardFacts::Unverifiable {
            why: "the record names no run".into(),
        };
    };
    match (
        board.run_facts(task, run),
        board.record_already_applied(task, &r.id),
    ) {
        (Ok(facts), Ok(already_applied)) => BoardFacts::Run {
            facts,
            already_applied,
            ours: true,
        },
        (Err(e), _) | (_, Err(e)) => BoardFacts::Unverifiable { why: e.to_string() },
    }
}

/// Times (epoch s) at which the board shows a task entering `ready` work
/// ([`hermes_board::READY_ENTRY_KINDS`] events), read-only.
fn ready_periods(db: &Path) -> anyhow::Result<Vec<(i64, String)>> {
    hermes_board::read_ready_entries(db)
        .with_context(|| format!("cannot open {} read-only", db.display()))
}

struct Sim<'a> {
    cfg: &'a Config,
    paths: &'a Paths,
    health: ProviderHealth,
    profiles: Profiles,
    retries: HashMap<String, Vec<i64>>,
    parked: BTreeMap<String, (Option<i64>, Option<String>)>,
    ready_since: Option<i64>,
    last_progress: i64,
    stalled: bool,
    restarter: Restarter,
    base: Instant,
    t0: i64,
    out: Vec<String>,
}

impl Sim<'_> {
    fn emit(&mut self, t: i64, text: String) {
        let ts = jiff::Timestamp::from_second(t)
            .map(|x| x.to_string())
            .unwrap_or_else(|_| t.to_string());
        self.out.push(format!("{ts}  {text}"));
    }

    fn at(&self, t: i64) -> Instant {
        self.base + Duration::from_secs((t - self.t0).max(0) as u64)
    }

    fn transitions(&mut self, t: i64, ts: Vec<Transition>) {
        for tr in ts {
            let alert = match &tr {
                Transition::MarkedUnhealthy { .. } => " [alert firing]",
                _ => " [alert resolved]",
            };
            self.emit(t, format!("{}{alert}", tr.message()));
        }
    }
}

fn simulate(
    cfg: &Config,
    paths: &Paths,
    recs: &[ExitRecord],
    lines: &[(i64, String)],
    board_ready: &[(i64, String)],
    board: Option<&hermes_board::Board>,
) -> Vec<String> {
    let classifier = LineClassifier::new(&cfg.dispatcher.patterns).ok();
    let catalogue = Catalogue::builtin();
    let (_, stall_after) = dispatcher_timing(&cfg.dispatcher, &paths.hermes_home);
    let check = cfg.dispatcher.check_every.0.as_secs().max(1) as i64;
    let mut queue: BinaryHeap<Reverse<(i64, Input)>> = BinaryHeap::new();
    for (i, r) in recs.iter().enumerate() {
        queue.push(Reverse((r.ended_at.as_second(), Input::Record(i))));
    }
    for (i, (t, _)) in lines.iter().enumerate() {
        queue.push(Reverse((*t, Input::Log(i))));
    }
    for (t, task) in board_ready {
        queue.push(Reverse((*t, Input::Due(format!("board:{task}")))));
    }
    let t0 = queue.peek().map(|Reverse((t, _))| *t).unwrap_or(0);
    let end = queue.iter().map(|Reverse((t, _))| *t).max().unwrap_or(t0)
        + stall_after.as_secs() as i64
        + cfg.restart.recovery_grace.0.as_secs() as i64;
    let mut t = t0;
    while t <= end {
        queue.push(Reverse((t, Input::Check)));
        t += check;
    }
    let mut sim = Sim {
        cfg,
        paths,
        health: ProviderHealth::default(),
        profiles: Profiles::new(&cfg.providers.chains),
        retries: HashMap::new(),
        parked: BTreeMap::new(),
        ready_since: None,
        last_progress: t0,
        stalled: false,
        restarter: Restarter::default(),
        base: Instant::now(),
        t0,
        out: Vec::new(),
    };
    let mut jitter_state = 0x2545_F491_4F6C_DD1Du64;
    while let Some(Reverse((now, input))) = queue.pop() {
        let ts = sim.health.tick(now, 600);
        sim.transitions(now, ts);
        match input {
            Input::Record(i) => {
                let r = &recs[i];
                let chain = r
                    .task
                    .profile
                    .as_deref()
                    .map(|p| sim.profiles.chain(p, &sim.paths.profile_config(p)))
                    .unwrap_or_default();
                let facts = match (&r.task.id, board) {
                    (None, _) => BoardFacts::NoTask,
                    (Some(_), _) if !decide::needs_board_facts(r) => BoardFacts::NotAsked,
                    (Some(task), Some(b)) => board_facts(b, r, task),
                    (Some(_), None) => BoardFacts::AssumedOpen,
                };
                let task = r.task.id.clone();
                let window = sim.cfg.retry.retry_window.0.as_secs() as i64;
                let used = task
                    .as_ref()
                    .and_then(|t| sim.retries.get(t))
                    .map(|v| v.iter().filter(|&&x| x >= now - window).count() as u32)
                    .unwrap_or(0);
                jitter_state ^= jitter_state << 13;
                jitter_state ^= jitter_state >> 7;
                jitter_state ^= jitter_state << 17;
                let jitter = (jitter_state >> 11) as f64 / (1u64 << 53) as f64;
                let d = decide::decide(&decide::Inputs {
                    record: r,
                    chain: &chain,
                    board: &facts,
                    retries_used: used,
                    health: &sim.health,
                    cfg: sim.cfg,
                    now,
                    random01: jitter,
                });
                if let Some(tr) = d.health.apply(&mut sim.health, now) {
                    sim.transitions(now, vec![tr]);
                }
                if r.failure.is_none() {
                    continue;
                }
                sim.emit(now, format!("record {}: {}", r.id, d.why_text()));
                let Some(task) = task else {
                    continue;
                };
                let reason = d.reason.clone().unwrap_or_default();
                match d.board {
                    BoardPlan::Nothing(why) => {
                        sim.emit(now, format!("task {task}: no change ({why})"))
                    }
                    BoardPlan::Park { due_at } => {
                        sim.retries.entry(task.clone()).or_default().push(now);
                        sim.emit(
                            now,
                            format!(
                                "task {task}: park in scheduled until {} (retry {}): {reason}",
                                until_text(due_at),
                                used + 1
                            ),
                        );
                        sim.parked.insert(task.clone(), (due_at, d.blamed.clone()));
                        if let Some(d) = due_at {
                            queue.push(Reverse((d, Input::Due(task))));
                        }
                    }
                    BoardPlan::Requeue { fallback } => sim.emit(
                        now,
                        format!(
                            "task {task}: requeue now, steered to fallback {} ({})",
                            fallback.provider,
                            fallback.model.unwrap_or_default()
                        ),
                    ),
                    BoardPlan::Block { reason } => sim.emit(
                        now,
                        format!("task {task}: left blocked [alert firing]: {reason}"),
                    ),
                }
            }
            Input::Due(task) => {
                if task.starts_with("board:") {
                    sim.ready_since.get_or_insert(now);
                    continue;
                }
                if let Some((_, provider)) = sim.parked.get(&task).cloned() {
                    let ok = provider
                        .as_deref()
                        .is_none_or(|p| sim.health.is_available(p));
                    if ok {
                        sim.parked.remove(&task);
                        sim.emit(
                            now,
                            format!("task {task}: due; released scheduled -> ready"),
                        );
                        sim.ready_since.get_or_insert(now);
                    } else {
                        queue.push(Reverse((now + check, Input::Due(task))));
                    }
                }
            }
            Input::Log(i) => {
                let line = &lines[i].1;
                let Some(c) = &classifier else { continue };
                match c.classify(line) {
                    LineEvent::Activity => {
                        sim.last_progress = now;
                        sim.ready_since = None;
                        if sim.stalled {
                            sim.stalled = false;
                            sim.restarter.progress();
                            sim.emit(now, "dispatcher progress resumed [alert resolved]".into());
                        }
                    }
                    LineEvent::Stuck => {
                        sim.ready_since.get_or_insert(now);
                        sim.emit(now, "gateway reports the ready queue stuck".into());
                    }
                    LineEvent::TickError => sim.emit(now, "gateway: dispatcher tick failed".into()),
                    LineEvent::Shutdown => sim.emit(now, "gateway shutting down".into()),
                    LineEvent::ProviderFailure => {
                        let ctx = ClassifyContext::new(
                            jiff::Timestamp::from_second(now)
                                .unwrap_or_else(|_| jiff::Timestamp::now()),
                            jiff::tz::TimeZone::system(),
                        );
                        if let Some(f) = catalogue
                            .classify(line, &ctx)
                            .map(exit_record::Failure::from)
                            && rescue::actionable(&f)
                            && let Some(p) = f.provider.clone()
                        {
                            let until = rescue::unhealthy_until(&f, &sim.cfg.providers, now);
                            let reason = rescue::reason_text(&f, Some(&p));
                            if let Some(tr) =
                                sim.health.mark_unhealthy(&p, until, f.class, &reason, now)
                            {
                                sim.transitions(now, vec![tr]);
                            }
                        }
                    }
                    LineEvent::Other => {}
                }
            }
            Input::Check => {
                let Some(since) = sim.ready_since else {
                    continue;
                };
                let waited = now - since.max(sim.last_progress);
                if waited < stall_after.as_secs() as i64 {
                    continue;
                }
                if !sim.stalled {
                    sim.stalled = true;
                    sim.emit(now, format!("dispatcher stalled: ready work waited {waited}s with no progress [alert firing]"));
                }
                let instant = sim.at(now);
                match sim.restarter.step(&sim.cfg.restart, now, instant) {
                    RestartStep::Restart { attempt } => {
                        sim.emit(now, format!("restart attempt {attempt}: would run {:?}", sim.cfg.restart.command))
                    }
                    RestartStep::NotRecovered { attempt, next_try_in } => sim.emit(
                        now,
                        format!("restart attempt {attempt} did not recover; next try in {}s [alert escalated]", next_try_in.as_secs()),
                    ),
                    RestartStep::LimitHit { burst, interval } => sim.emit(
                        now,
                        format!("restart limit reached ({burst} in {}s); would stop restarting [critical alert]", interval.as_secs()),
                    ),
                    _ => {}
                }
            }
        }
    }
    sim.out
}
