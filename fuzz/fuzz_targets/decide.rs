//! The decision path on arbitrary input (issue 13): bytes become worker
//! output judged by the built-in catalogue, a record with a task or not, the
//! board's facts, provider health, the clock and the jitter; `decide` must
//! never panic, never judge a provider or move a task on a run someone
//! reported or decided on, and never hold a provider or park a task past
//! `providers.max_cooldown`. The same invariants run as a proptest in the
//! test command (crates/kanban-watchdog/tests/decision_props.rs).
#![no_main]

use failure_signatures::{Catalogue, ClassifyContext, FailureClass};
use hermes_board::profiles::ChainLink;
use hermes_board::{RunFacts, RunVerdict, TaskDecision};
use kanban_watchdog::config::Config;
use kanban_watchdog::decide::{BoardFacts, Inputs, check_invariants, decide};
use kanban_watchdog::health::ProviderHealth;
use libfuzzer_sys::fuzz_target;
use test_support::probe_record;

const PROVIDERS: &[&str] = &["openai-codex", "anthropic", "xai-oauth", "zai", "custom"];

fn word(data: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = data.get(at + i).copied().unwrap_or(0);
    }
    i64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 20 {
        return;
    }
    let (head, text) = data.split_at(20);
    let text = String::from_utf8_lossy(text);
    let now = word(head, 4).rem_euclid(5_000_000_000);
    let ctx = ClassifyContext::new(
        jiff::Timestamp::from_second(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        jiff::tz::TimeZone::UTC,
    );
    let failure = Catalogue::builtin().classify(&text, &ctx);
    let with_task = head[0] & 1 == 1;
    let verdict = match head[1] % 5 {
        0 => RunVerdict::Open,
        1 => RunVerdict::EndedByDispatcher {
            outcome: "crashed".into(),
            protocol_violation: head[2] & 1 == 1,
        },
        2 => RunVerdict::ReportedByWorker {
            outcome: if head[2] & 2 == 0 {
                "completed"
            } else {
                "blocked"
            }
            .into(),
        },
        3 => RunVerdict::EndedOther { outcome: None },
        _ => RunVerdict::Unknown,
    };
    let decided = (head[2] & 4 == 4).then(|| TaskDecision {
        event_id: 1,
        kind: "blocked".into(),
        at: 0,
    });
    let already_applied = head[2] & 8 == 8;
    let board = if with_task {
        BoardFacts::Run {
            facts: RunFacts {
                verdict,
                decided_after: decided,
                gave_up_after: head[2] & 16 == 16,
                terminal_provider_block: head[2] & 32 == 32,
                source_status: None,
                task_status: Some("running".into()),
                // The record's writer or another pid (its shim_pid is 1).
                spawned_pid: (head[2] & 128 == 128).then_some(i64::from(head[1] % 3)),
            },
            already_applied,
            ours: head[2] & 64 == 64,
        }
    } else {
        BoardFacts::NoTask
    };
    let chain: Vec<ChainLink> = (0..(head[3] % 4) as usize)
        .map(|i| ChainLink {
            provider: PROVIDERS[(head[3] as usize + i) % PROVIDERS.len()].into(),
            model: Some("m".into()),
        })
        .collect();
    let code = Some(i32::from(head[12]) - 1);
    let record = probe_record(failure.map(Into::into), with_task, code, text.into_owned());
    let cfg = Config::default();
    let mut health = ProviderHealth::default();
    if head[13] & 1 == 1 {
        let _ = health.mark_unhealthy(
            PROVIDERS[head[14] as usize % PROVIDERS.len()],
            Some(word(head, 12)),
            FailureClass::RateLimit,
            "x",
            now,
        );
    }
    let random01 = f64::from(head[15]) / 256.0;
    let inputs = Inputs {
        record: &record,
        chain: &chain,
        board: &board,
        retries_used: u32::from(head[16]),
        health: &health,
        cfg: &cfg,
        now,
        random01,
    };
    let d = decide(&inputs);
    if let Err(broken) = check_invariants(&inputs, &d) {
        panic!("{broken}");
    }
});
