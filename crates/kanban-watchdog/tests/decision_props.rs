//! The decision core under arbitrary inputs (issue 13: numbers and records
//! from outside drive the decision code, not only the parsers): whatever
//! the record, the board's facts, provider health, the clock and the
//! random number, `decide` never panics, never judges a provider or moves a
//! task on a run someone reported or decided on, and never holds a provider
//! or parks a task past `providers.max_cooldown`. The same invariants run
//! under libFuzzer in `fuzz/fuzz_targets/decide.rs` (long soak).

use exit_record::Failure;
use failure_signatures::FailureClass;
use hermes_board::profiles::ChainLink;
use hermes_board::{RunFacts, RunVerdict, TaskDecision};
use kanban_watchdog::config::Config;
use kanban_watchdog::decide::{BoardFacts, Inputs, check_invariants, decide};
use kanban_watchdog::health::ProviderHealth;
use proptest::prelude::*;
use test_support::probe_record;

const PROVIDERS: &[&str] = &[
    "openai-codex",
    "anthropic",
    "xai-oauth",
    "zai",
    "custom",
    "zhipu",
];

fn provider() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        proptest::sample::select(PROVIDERS).prop_map(|p| Some(p.to_string())),
        "[a-z-]{1,12}".prop_map(Some),
    ]
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(1e300),
        Just(-5.0),
        0.0..1e7f64,
    ]
}

fn any_time() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(i64::MAX),
        Just(i64::MIN),
        0i64..5_000_000_000
    ]
}

prop_compose! {
    fn classification()(
        class in proptest::sample::select(FailureClass::ALL.to_vec()),
        provider in provider(),
        transient in any::<bool>(),
        resets_at in proptest::option::of(any_time()),
        retry_after_s in proptest::option::of(any_f64()),
    ) -> Failure {
        Failure {
            class,
            signature: "prop".into(),
            provider,
            transient,
            matched_line: "HTTP 429".into(),
            resets_at,
            retry_after_s,
        }
    }
}

fn verdict() -> impl Strategy<Value = RunVerdict> {
    prop_oneof![
        Just(RunVerdict::Open),
        (
            proptest::sample::select(vec!["crashed", "rate_limited", "timed_out", "gave_up"]),
            any::<bool>()
        )
            .prop_map(|(o, pv)| RunVerdict::EndedByDispatcher {
                outcome: o.into(),
                protocol_violation: pv,
            }),
        proptest::sample::select(vec!["completed", "blocked"])
            .prop_map(|o| RunVerdict::ReportedByWorker { outcome: o.into() }),
        Just(RunVerdict::EndedOther { outcome: None }),
        Just(RunVerdict::Unknown),
    ]
}

prop_compose! {
    fn facts()(
        verdict in verdict(),
        decided in proptest::option::of(proptest::sample::select(vec!["blocked", "completed", "unblocked", "commented"])),
        gave_up_after in any::<bool>(),
        terminal in any::<bool>(),
        review in any::<bool>(),
        already_applied in any::<bool>(),
        ours in any::<bool>(),
        spawned_pid in proptest::option::of(0i64..3),
    ) -> BoardFacts {
        BoardFacts::Run {
            facts: RunFacts {
                verdict,
                decided_after: decided.map(|k| TaskDecision { event_id: 9, kind: k.into(), at: 0 }),
                gave_up_after,
                terminal_provider_block: terminal,
                source_status: review.then(|| "review".to_string()),
                task_status: Some("running".into()),
                spawned_pid,
            },
            already_applied,
            ours,
        }
    }
}

fn board() -> impl Strategy<Value = BoardFacts> {
    prop_oneof![
        4 => facts(),
        1 => Just(BoardFacts::NoTask),
        1 => Just(BoardFacts::AssumedOpen),
        1 => Just(BoardFacts::Unverifiable { why: "x".into() }),
        1 => Just(BoardFacts::NotAsked),
    ]
}

fn chain() -> impl Strategy<Value = Vec<ChainLink>> {
    proptest::collection::vec(proptest::sample::select(PROVIDERS), 0..4).prop_map(|ps| {
        ps.into_iter()
            .map(|p| ChainLink {
                provider: p.into(),
                model: Some("m".into()),
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decide_never_panics_never_overrides_a_decision_and_never_outlasts_max_cooldown(
        failure in proptest::option::of(classification()),
        with_task in any::<bool>(),
        code in proptest::option::of(any::<i32>()),
        board in board(),
        chain in chain(),
        retries_used in any::<u32>(),
        now in 0i64..5_000_000_000,
        random01 in any_f64(),
        unhealthy in proptest::option::of((proptest::sample::select(PROVIDERS), proptest::option::of(any_time()))),
    ) {
        let cfg = Config::default();
        let mut health = ProviderHealth::default();
        if let Some((p, until)) = unhealthy {
            let _ = health.mark_unhealthy(p, until, FailureClass::RateLimit, "x", now);
        }
        let rec = probe_record(failure, with_task, code, "🔌 Provider: anthropic  Model: x\n".into());
        let inputs = Inputs {
            record: &rec,
            chain: &chain,
            board: &board,
            retries_used,
            health: &health,
            cfg: &cfg,
            now,
            random01,
        };
        let d = decide(&inputs);
        if let Err(broken) = check_invariants(&inputs, &d) {
            prop_assert!(false, "{}", broken);
        }
    }
}
