//! The decision core: what one exit record does to provider health and to
//! its task, as a pure function of the record, what the board says about
//! its run, provider health, the config, the time and a random number.
//! The daemon and `replay` both call [`decide`], so a replay shows exactly
//! what the daemon would do.
//!
//! A worker's output is untrusted: it may quote a provider error it did not
//! suffer, or print one after finishing its task. So a provider is judged
//! only on a run that failed:
//!
//! * a run the worker reported itself (`completed`, or `blocked` by the
//!   worker) never marks a provider, never parks, never translates — nor a
//!   run whose task a worker or a person decided on since it ended;
//! * a run the board shows still open, or ended by the dispatcher as a
//!   failure (`crashed`, `rate_limited`, `timed_out`, `spawn_failed`,
//!   `gave_up`), is judged;
//! * a run ended some other way (`reclaimed`, `stale`, `scheduled`), or not
//!   on the board, changes nothing;
//! * a record with no task (a worker outside Hermes) may change health only
//!   when the process itself failed (exit code not 0, or a signal);
//! * a record whose board cannot say (another board that cannot be read,
//!   no run id) changes nothing. A locked board is not a decision: the
//!   caller retries the record later.
//!
//! Then [`rescue::blame`] names the provider (or nobody) and
//! [`rescue::plan`] the board action.

use exit_record::ExitRecord;
use failure_signatures::FailureClass;
use hermes_board::profiles::ChainLink;
use hermes_board::{RunFacts, RunVerdict};
use serde::Serialize;

use crate::config::Config;
use crate::health::{ProviderHealth, Transition};
use crate::rescue::{self, BoardPlan};

/// What the board says about a record's run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "board", rename_all = "snake_case")]
pub enum BoardFacts {
    /// The record names no kanban task (a worker outside Hermes).
    NoTask,
    /// The board's answer. `already_applied`: an event of ours for this
    /// record is on the task (a re-delivery: health as before, no second
    /// write). `ours`: the board this watchdog writes to (else it was read
    /// read-only and is never written).
    Run {
        facts: RunFacts,
        already_applied: bool,
        ours: bool,
    },
    /// No board was consulted (`replay` without `--board`): the run is
    /// assumed to have been open when the record arrived.
    AssumedOpen,
    /// The board cannot say (why).
    Unverifiable { why: String },
    /// Not asked: the record carries no failure worth acting on.
    NotAsked,
}

/// Whether [`decide`] needs board facts for this record (a failure worth
/// acting on, for a kanban task); clean records never cost a board read.
pub fn needs_board_facts(record: &ExitRecord) -> bool {
    record.task.id.is_some() && record.failure.as_ref().is_some_and(rescue::actionable)
}

/// Everything a decision depends on.
pub struct Inputs<'a> {
    pub record: &'a ExitRecord,
    /// The profile's provider chain (empty when unknown).
    pub chain: &'a [ChainLink],
    pub board: &'a BoardFacts,
    /// The task's delayed retries within `retry.retry_window`.
    pub retries_used: u32,
    pub health: &'a ProviderHealth,
    pub cfg: &'a Config,
    pub now: i64,
    /// Uniform in [0, 1): the retry jitter.
    pub random01: f64,
}

/// What to do about provider health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthChange {
    None,
    /// Mark unhealthy until `until` (`None`: until re-auth).
    Unhealthy {
        provider: String,
        until: Option<i64>,
        class: FailureClass,
        reason: String,
    },
    /// A clean run on the provider: it works.
    Healthy {
        provider: String,
    },
}

impl HealthChange {
    /// Applies the change to `health`; the transition it made, if any (see
    /// [`ProviderHealth::mark_unhealthy`], [`ProviderHealth::observe_success`]).
    pub fn apply(&self, health: &mut ProviderHealth, now: i64) -> Option<Transition> {
        match self {
            HealthChange::None => None,
            HealthChange::Unhealthy {
                provider,
                until,
                class,
                reason,
            } => health.mark_unhealthy(provider, *until, *class, reason, now),
            HealthChange::Healthy { provider } => health.observe_success(provider, now),
        }
    }
}

/// The decision on one record.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub health: HealthChange,
    /// The provider blamed for the failure, if any.
    pub blamed: Option<String>,
    /// One line describing the failure (redacted), when there is one.
    pub reason: Option<String>,
    pub board: BoardPlan,
    /// Why, in order (trust, blame, plan): for the log and `replay`.
    pub why: Vec<String>,
}

impl Decision {
    fn nothing(why: Vec<String>, board: &str) -> Decision {
        Decision {
            health: HealthChange::None,
            blamed: None,
            reason: None,
            board: BoardPlan::Nothing(board.to_string()),
            why,
        }
    }

    /// `why` as one line.
    pub fn why_text(&self) -> String {
        self.why.join("; ")
    }
}

/// Decides what one record does. Pure: no I/O, no clock, no randomness of
/// its own.
pub fn decide(i: &Inputs<'_>) -> Decision {
    let r = i.record;
    let Some(f) = r.failure.as_ref() else {
        let mut d = Decision::nothing(vec!["clean exit".into()], "clean exit");
        if r.exit.code == Some(0)
            && let Some(p) = rescue::run_provider(r, i.chain)
        {
            d.why.push(format!("a clean run on {p}"));
            d.health = HealthChange::Healthy { provider: p };
        }
        return d;
    };
    if !rescue::actionable(f) {
        return Decision::nothing(
            vec![format!(
                "{} is not transient: left to the dispatcher",
                f.class
            )],
            "failure is not transient",
        );
    }
    let run_name = match (r.task.run_id, r.task.id.as_deref()) {
        (Some(run), Some(task)) => format!("run {run} of task {task}"),
        (None, Some(task)) => format!("task {task}"),
        _ => "the run".into(),
    };

    // 1. Did the run fail? Only then does its output judge a provider.
    let trusted = match (&r.run_at_exit, i.board) {
        (Some(seen), _) if seen.reported_by_worker() => Err(format!(
            "the worker ended {run_name} itself ({}) before it exited: its output judges no provider",
            seen.outcome.as_deref().unwrap_or("-")
        )),
        (_, BoardFacts::NoTask) => {
            if r.exit.code != Some(0) || r.exit.signal.is_some() {
                Ok(format!("a worker outside Hermes failed ({})", exit_text(r)))
            } else {
                Err(
                    "a worker outside Hermes that exited 0: its output alone judges no provider"
                        .into(),
                )
            }
        }
        (
            _,
            BoardFacts::Run {
                already_applied: true,
                ..
            },
        ) => Ok(format!(
            "this record was already applied to the board: {run_name} failed"
        )),
        (_, BoardFacts::Run { facts, .. }) => judge_run(facts, r.shim_pid, &run_name),
        (_, BoardFacts::AssumedOpen) => Ok(format!(
            "no board given: assuming {run_name} was still open when the record arrived"
        )),
        (_, BoardFacts::Unverifiable { why }) => Err(format!(
            "the board cannot say whether {run_name} failed ({why}): nothing changed"
        )),
        (_, BoardFacts::NotAsked) => Err("the board was not asked: nothing changed".into()),
    };
    let mut why = Vec::new();
    match trusted {
        Ok(w) => why.push(w),
        Err(w) => {
            why.push(w);
            return Decision::nothing(why, "the run did not fail, or nobody can say it did");
        }
    }

    // 2. Who is to blame, and until when.
    let blame = rescue::blame(r, i.chain);
    let reason = rescue::reason_text(f, blame.provider.as_deref());
    let health = match &blame.provider {
        Some(p) => {
            let until = rescue::unhealthy_until(f, &i.cfg.providers, i.now);
            why.push(format!("blames {p}: {}", blame.evidence));
            HealthChange::Unhealthy {
                provider: p.clone(),
                until,
                class: f.class,
                reason: reason.clone(),
            }
        }
        None => {
            why.push(format!("nobody blamed: {}", blame.evidence));
            HealthChange::None
        }
    };

    // 3. The task.
    let board = match i.board {
        BoardFacts::NoTask => BoardPlan::Nothing("no kanban task".into()),
        BoardFacts::Run {
            already_applied: true,
            ..
        } => BoardPlan::Nothing("already applied to the board".into()),
        BoardFacts::Run { ours: false, .. } => {
            BoardPlan::Nothing("the record is for another board (read here, never written)".into())
        }
        _ if blame.provider.is_none() && (rescue::needs_human(f) || !i.chain.is_empty()) => {
            BoardPlan::Nothing("no provider to wait for: left to the dispatcher".into())
        }
        _ => rescue::plan(
            f,
            blame.provider.as_deref(),
            i.chain,
            i.health,
            i.retries_used,
            &i.cfg.retry,
            &i.cfg.providers,
            i.now,
            i.random01,
        ),
    };
    if let BoardPlan::Nothing(w) = &board {
        why.push(format!("task: {w}"));
    }
    Decision {
        health,
        blamed: blame.provider,
        reason: Some(reason),
        board,
        why,
    }
}

/// The pid the dispatcher spawned for the run, when it is not the process
/// that wrote the record (`shim_pid`): such a record is not the run's own.
pub fn spawned_by_another(facts: &RunFacts, shim_pid: u32) -> Option<i64> {
    facts.spawned_pid.filter(|&p| p != i64::from(shim_pid))
}

/// Whether the board's facts let the run's output judge a provider.
fn judge_run(facts: &RunFacts, shim_pid: u32, run_name: &str) -> Result<String, String> {
    // The record must come from the process the dispatcher started for
    // this run (the shim, wired as the worker). A record from any other
    // process that names the run (a `hermes` call inside the run going
    // through the shim, a record written by hand) is not the run's death.
    if let Some(spawned) = spawned_by_another(facts, shim_pid) {
        return Err(format!(
            "{run_name} is worker pid {spawned} (the dispatcher's `spawned` event), but this record \
             was written by a shim with pid {shim_pid}: not the run's own record (a hermes call \
             inside the run, or a record written by another process); it judges no provider"
        ));
    }
    if let RunVerdict::ReportedByWorker { outcome } = &facts.verdict {
        return Err(format!(
            "{run_name} was reported by the worker itself ({outcome}): its output judges no provider"
        ));
    }
    if let Some(d) = &facts.decided_after {
        return Err(format!(
            "{} decided on the task after {run_name} ended ({} at {}): left alone",
            d.by(),
            d.kind,
            d.at
        ));
    }
    match &facts.verdict {
        RunVerdict::Open | RunVerdict::EndedByDispatcher { .. } => {
            Ok(format!("{run_name} is {}", facts.verdict.describe()))
        }
        other => Err(format!(
            "{run_name} is {}: not a failure, nothing changed",
            other.describe()
        )),
    }
}

fn exit_text(r: &ExitRecord) -> String {
    match (r.exit.code, r.exit.signal) {
        (_, Some(sig)) => format!("killed by signal {sig}"),
        (Some(c), None) => format!("exit code {c}"),
        (None, None) => "no exit code".into(),
    }
}

/// The rules every decision keeps, whatever its inputs (issue 13): someone
/// else's decision stands (no provider judged, no task moved on a run its
/// worker reported on or someone decided on, unless we applied this record
/// before); a worker outside Hermes that exited 0 judges nobody; no
/// provider is held, and no task parked, past `providers.max_cooldown`
/// (a park may add the retry margin and jitter). The proptest
/// (`tests/decision_props.rs`) and the fuzz target (`fuzz/fuzz_targets/
/// decide.rs`) check every decision they drive with this.
///
/// # Errors
/// The first rule `d` breaks, described with the decision's reasons.
pub fn check_invariants(i: &Inputs<'_>, d: &Decision) -> Result<(), String> {
    let max = i.cfg.providers.max_cooldown.0.as_secs() as i64;
    let slack = i.cfg.retry.margin.0.as_secs() as i64 + i.cfg.retry.jitter.0.as_secs() as i64 + 1;
    // Someone else's decision stands, and a record the run's own process
    // did not write judges nothing (a re-delivered record we already
    // applied keeps the health judged when its run had failed).
    if let BoardFacts::Run {
        facts,
        already_applied: false,
        ..
    } = i.board
        && (matches!(facts.verdict, RunVerdict::ReportedByWorker { .. })
            || facts.decided_after.is_some()
            || spawned_by_another(facts, i.record.shim_pid).is_some())
    {
        if d.health != HealthChange::None {
            return Err(format!(
                "judged a provider on a decided run: {:?}; why: {:?}",
                d.health, d.why
            ));
        }
        if !matches!(d.board, BoardPlan::Nothing(_)) {
            return Err(format!(
                "moved a task on a decided run: {:?}; why: {:?}",
                d.board, d.why
            ));
        }
    }
    // A worker outside Hermes that exited 0 judges nobody.
    if i.record.task.id.is_none()
        && i.record.exit.code == Some(0)
        && matches!(d.health, HealthChange::Unhealthy { .. })
    {
        return Err(format!(
            "a clean run outside Hermes judged a provider; why: {:?}",
            d.why
        ));
    }
    if let HealthChange::Unhealthy { until: Some(t), .. } = d.health
        && t > i.now.saturating_add(max)
    {
        return Err(format!("held until {t}, now {}", i.now));
    }
    if let BoardPlan::Park { due_at: Some(t) } = d.board
        && t > i.now.saturating_add(max).saturating_add(slack)
    {
        return Err(format!("parked until {t}, now {}", i.now));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use exit_record::Failure;
    use exit_record::{ExitInfo, RunAtExit, TaskContext};
    use hermes_board::TaskDecision;

    fn codex_429() -> Failure {
        Failure {
            provider: Some("openai-codex".into()),
            ..test_support::rate_limit(Some(4_102_444_800))
        }
    }

    fn record(task: bool, code: i32, f: Option<Failure>) -> ExitRecord {
        ExitRecord {
            exit: ExitInfo {
                code: Some(code),
                ..ExitInfo::default()
            },
            task: TaskContext {
                id: task.then(|| "t".to_string()),
                run_id: task.then_some(7),
                profile: Some("coder".into()),
                ..TaskContext::default()
            },
            failure: f,
            ..test_support::blank_record("rec")
        }
    }

    fn run(verdict: RunVerdict, decided: Option<&str>) -> BoardFacts {
        BoardFacts::Run {
            facts: RunFacts {
                verdict,
                decided_after: decided.map(|k| TaskDecision {
                    event_id: 9,
                    kind: k.into(),
                    at: 1,
                }),
                gave_up_after: false,
                terminal_provider_block: false,
                source_status: None,
                task_status: Some("ready".into()),
                spawned_pid: None,
            },
            already_applied: false,
            ours: true,
        }
    }

    fn chain() -> Vec<ChainLink> {
        vec![ChainLink {
            provider: "openai-codex".into(),
            model: None,
        }]
    }

    fn go(r: &ExitRecord, board: &BoardFacts) -> Decision {
        let cfg = Config::default();
        let health = ProviderHealth::default();
        let chain = chain();
        decide(&Inputs {
            record: r,
            chain: &chain,
            board,
            retries_used: 0,
            health: &health,
            cfg: &cfg,
            now: 1_780_000_000,
            random01: 0.5,
        })
    }

    fn untouched(d: &Decision) {
        assert_eq!(d.health, HealthChange::None, "{}", d.why_text());
        assert!(matches!(d.board, BoardPlan::Nothing(_)), "{:?}", d.board);
    }

    #[test]
    fn a_run_the_worker_reported_judges_nothing() {
        let r = record(true, 0, Some(codex_429()));
        for outcome in ["completed", "blocked"] {
            let d = go(
                &r,
                &run(
                    RunVerdict::ReportedByWorker {
                        outcome: outcome.into(),
                    },
                    Some(outcome),
                ),
            );
            untouched(&d);
            assert!(d.why_text().contains("reported by the worker itself"));
        }
        // What the shim saw at exit counts too, whatever the board says.
        let mut r2 = r.clone();
        r2.run_at_exit = Some(RunAtExit {
            open: false,
            outcome: Some("completed".into()),
        });
        untouched(&go(&r2, &BoardFacts::AssumedOpen));
    }

    #[test]
    fn a_decision_since_the_run_or_a_run_ended_otherwise_judges_nothing() {
        let r = record(true, 0, Some(codex_429()));
        let crashed = RunVerdict::EndedByDispatcher {
            outcome: "crashed".into(),
            protocol_violation: true,
        };
        let d = go(&r, &run(crashed.clone(), Some("unblocked")));
        untouched(&d);
        assert!(d.why_text().contains("an operator decided on the task"));
        for v in [
            RunVerdict::EndedOther {
                outcome: Some("reclaimed".into()),
            },
            RunVerdict::Unknown,
        ] {
            untouched(&go(&r, &run(v, None)));
        }
        untouched(&go(
            &r,
            &BoardFacts::Unverifiable {
                why: "no such file".into(),
            },
        ));
    }

    #[test]
    fn an_open_or_dispatcher_failed_run_is_judged_and_parked() {
        let r = record(true, 0, Some(codex_429()));
        for v in [
            RunVerdict::Open,
            RunVerdict::EndedByDispatcher {
                outcome: "crashed".into(),
                protocol_violation: true,
            },
        ] {
            let d = go(&r, &run(v, None));
            assert!(
                matches!(&d.health, HealthChange::Unhealthy { provider, until: Some(u), .. }
                    if provider == "openai-codex" && *u == 1_780_000_000 + 86_400),
                "{:?}",
                d.health
            );
            assert!(matches!(d.board, BoardPlan::Park { .. }), "{:?}", d.board);
        }
        // Replay without a board: assumed open, and it says so.
        let d = go(&r, &BoardFacts::AssumedOpen);
        assert!(
            d.why_text()
                .contains("assuming run 7 of task t was still open")
        );
        assert!(matches!(d.board, BoardPlan::Park { .. }));
        // Already applied: health as before, the board is not written again.
        let d = go(
            &r,
            &BoardFacts::Run {
                facts: RunFacts {
                    verdict: RunVerdict::EndedOther {
                        outcome: Some("scheduled".into()),
                    },
                    decided_after: None,
                    gave_up_after: false,
                    terminal_provider_block: false,
                    source_status: None,
                    task_status: Some("scheduled".into()),
                    spawned_pid: None,
                },
                already_applied: true,
                ours: true,
            },
        );
        assert!(matches!(d.health, HealthChange::Unhealthy { .. }));
        assert!(matches!(d.board, BoardPlan::Nothing(_)));
    }

    #[test]
    fn a_record_from_another_process_than_the_runs_worker_judges_nothing() {
        // A `hermes` call inside the run goes through the shim too, with
        // the task's environment: its record names the open run, but its
        // shim is not the process the dispatcher spawned.
        let r = record(true, 0, Some(codex_429()));
        for verdict in [
            RunVerdict::Open,
            RunVerdict::EndedByDispatcher {
                outcome: "crashed".into(),
                protocol_violation: false,
            },
        ] {
            let with_pid = |pid| match run(verdict.clone(), None) {
                BoardFacts::Run {
                    mut facts,
                    already_applied,
                    ours,
                } => {
                    facts.spawned_pid = pid;
                    BoardFacts::Run {
                        facts,
                        already_applied,
                        ours,
                    }
                }
                other => other,
            };
            let d = go(&r, &with_pid(Some(4242)));
            untouched(&d);
            assert!(
                d.why_text()
                    .contains("is worker pid 4242 (the dispatcher's `spawned` event), but this record was written by a shim with pid 1"),
                "{}",
                d.why_text()
            );
            // The run's own shim (or a board that never said) is judged.
            for pid in [Some(i64::from(r.shim_pid)), None] {
                let d = go(&r, &with_pid(pid));
                assert!(matches!(d.board, BoardPlan::Park { .. }), "{:?}", d.why);
            }
        }
    }

    #[test]
    fn a_worker_outside_hermes_judges_a_provider_only_when_it_failed() {
        untouched(&go(
            &record(false, 0, Some(codex_429())),
            &BoardFacts::NoTask,
        ));
        for code in [1, 75] {
            let d = go(&record(false, code, Some(codex_429())), &BoardFacts::NoTask);
            assert!(matches!(d.health, HealthChange::Unhealthy { .. }), "{code}");
            assert!(matches!(d.board, BoardPlan::Nothing(_)));
        }
        let mut signalled = record(false, 0, Some(codex_429()));
        signalled.exit.code = None;
        signalled.exit.signal = Some(9);
        assert!(matches!(
            go(&signalled, &BoardFacts::NoTask).health,
            HealthChange::Unhealthy { .. }
        ));
    }

    #[test]
    fn a_failure_naming_a_provider_outside_the_chain_marks_and_parks_nothing() {
        let mut f = codex_429();
        f.class = FailureClass::AuthExpired;
        f.transient = false;
        f.provider = Some("xai-oauth".into());
        let d = go(&record(true, 0, Some(f)), &run(RunVerdict::Open, None));
        untouched(&d);
        assert!(d.why_text().contains("nobody blamed"));
    }

    #[test]
    fn a_clean_exit_heals_and_never_needs_the_board() {
        let r = record(true, 0, None);
        assert!(!needs_board_facts(&r));
        let d = go(&r, &BoardFacts::NotAsked);
        assert_eq!(
            d.health,
            HealthChange::Healthy {
                provider: "openai-codex".into()
            }
        );
    }
}
