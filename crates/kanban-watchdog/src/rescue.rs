//! What to do about one exit record: which provider it blames, how long
//! that provider is unhealthy, and what happens to the task. Pure
//! functions, so every branch is tested without a board.

use exit_record::ExitRecord;
use exit_record::Failure;
use failure_signatures::FailureClass;
use failure_signatures::hermes_frame::{Frame, PrintedProvider};
use hermes_board::profiles::ChainLink;

use crate::config::{ProvidersConfig, RetryConfig};
use crate::health::ProviderHealth;

/// Failures that need a human (re-auth, billing) rather than time.
pub fn needs_human(f: &Failure) -> bool {
    matches!(
        f.class,
        FailureClass::AuthExpired | FailureClass::AuthInvalid | FailureClass::Billing
    ) || (f.class == FailureClass::Quota && !f.transient)
}

/// Failures the watchdog acts on at all.
pub fn actionable(f: &Failure) -> bool {
    f.transient || needs_human(f)
}

/// Which provider a record blames, and on what evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blame {
    /// `None`: nobody is blamed.
    pub provider: Option<String>,
    /// Why (or why nobody), for logs and `replay`.
    pub evidence: String,
}

impl Blame {
    fn on(provider: &str, evidence: &str) -> Blame {
        Blame {
            provider: Some(provider.to_string()),
            evidence: evidence.to_string(),
        }
    }

    fn nobody(evidence: String) -> Blame {
        Blame {
            provider: None,
            evidence,
        }
    }
}

/// The provider a failed run blames. `chain` is the profile's provider
/// chain (empty when unknown: no profile, or no config).
///
/// A failure that needs a human (billing, invalid or expired auth, a
/// non-transient quota) is blamed only on the provider the failure itself
/// names, and only when that provider is in the chain (with no chain known:
/// when the Hermes worker also printed it as its provider) — never on the
/// profile's primary by guess, never on a provider outside the chain.
///
/// A transient failure, best evidence first:
/// 1. the provider the Hermes worker printed in its own frame, when it is
///    in the chain (Hermes only talks to chain providers; a label outside
///    it is quoted text): 0.19's `🔌 Provider: X`, 0.22's `X is
///    rate-limiting requests right now` (X a display label there, matched
///    to the chain's ids; `failure_signatures::hermes_frame` owns the
///    parsing);
/// 2. the provider the shim steered the run to;
/// 3. the provider the failure names, when in the chain (an xAI error from
///    a profile that falls back to xAI); a named provider outside a known
///    chain blames nobody;
/// 4. the profile's primary, for a failure that names no provider (a
///    generic 429 from whatever the profile talks to);
/// 5. with no chain known, the provider the failure names.
pub fn blame(record: &ExitRecord, chain: &[ChainLink]) -> Blame {
    let Some(f) = record.failure.as_ref() else {
        return Blame::nobody("no failure".into());
    };
    let known = !chain.is_empty();
    let in_chain = |p: &str| chain.iter().any(|l| l.provider == p);
    let printed = printed_provider(record);
    // The chain's id the worker's frame names (with no chain known: the
    // id the frame stands for).
    let label = printed.as_ref().and_then(|p| {
        if known {
            chain
                .iter()
                .find(|l| p.names(&l.provider))
                .map(|l| l.provider.clone())
        } else {
            p.id()
        }
    });
    // The failure names a provider by the catalogue's name (`zhipu`); the
    // chain by Hermes' id (`zai`): blame the chain's id of that family.
    let named_owned = f.provider.as_deref().map(|p| {
        chain
            .iter()
            .find(|l| failure_signatures::same_provider(p, &l.provider))
            .map_or_else(|| p.to_string(), |l| l.provider.clone())
    });
    let named = named_owned.as_deref();
    if needs_human(f) {
        return match named {
            Some(p) if known && in_chain(p) => {
                Blame::on(p, "named by the failure, in the profile's chain")
            }
            Some(p) if !known && label.as_deref() == Some(p) => Blame::on(
                p,
                "named by the failure and printed by the Hermes worker (no chain known)",
            ),
            Some(p) if known => Blame::nobody(format!(
                "the failure names {p}, which is not in the profile's chain ({}): quoted text, nobody blamed",
                chain_text(chain)
            )),
            Some(p) => Blame::nobody(format!(
                "the failure names {p}, but no chain is known and the worker did not print it: nobody blamed"
            )),
            None => Blame::nobody(format!(
                "a {} failure that names no provider: nobody blamed (never the primary by guess)",
                f.class
            )),
        };
    }
    if let (Some(l), Some(p)) = (&label, &printed) {
        return Blame::on(
            l,
            match p.frame {
                Frame::ProviderLine => "printed by the Hermes worker (🔌 Provider)",
                Frame::FailureLead => "printed by the Hermes worker (its failure frame's lead)",
            },
        );
    }
    if let Some(s) = &record.steered {
        return Blame::on(&s.provider, "the provider the shim steered the run to");
    }
    match named {
        Some(p) if known && in_chain(p) => {
            Blame::on(p, "named by the failure, in the profile's chain")
        }
        Some(p) if known => Blame::nobody(format!(
            "the failure names {p}, which is not in the profile's chain ({}): quoted text, nobody blamed",
            chain_text(chain)
        )),
        Some(p) => Blame::on(p, "named by the failure (no chain known)"),
        None => match chain.first() {
            Some(primary) => Blame::on(
                &primary.provider,
                "the profile's primary (the failure names no provider)",
            ),
            None => Blame::nobody("the failure names no provider and no chain is known".into()),
        },
    }
}

fn chain_text(chain: &[ChainLink]) -> String {
    chain
        .iter()
        .map(|l| l.provider.as_str())
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// The provider a record blames (see [`blame`]).
pub fn blamed_provider(record: &ExitRecord, chain: &[ChainLink]) -> Option<String> {
    blame(record, chain).provider
}

/// The last provider a Hermes worker printed in its own frame (0.19's
/// `🔌 Provider: X` line, 0.22's failure lead), if any; never a `Provider:`
/// anywhere else in what the agent printed.
pub fn printed_provider(record: &ExitRecord) -> Option<PrintedProvider> {
    failure_signatures::hermes_frame::printed_provider(&record.captured_text())
}

/// The provider a clean run proves healthy.
pub fn run_provider(record: &ExitRecord, chain: &[ChainLink]) -> Option<String> {
    record
        .steered
        .as_ref()
        .map(|s| s.provider.clone())
        .or_else(|| chain.first().map(|l| l.provider.clone()))
}

/// Until when the provider is unhealthy: `None` = until re-auth. Never
/// past `now + providers.max_cooldown`, whatever the record says (a
/// `resets_at` in 2100, a `retry_after_s` of 1e300): the arithmetic
/// saturates.
pub fn unhealthy_until(f: &Failure, cfg: &ProvidersConfig, now: i64) -> Option<i64> {
    if needs_human(f) {
        return None;
    }
    let max = now.saturating_add(secs(cfg.max_cooldown.0));
    let t = f
        .resets_at
        .or_else(|| f.retry_after_s.and_then(|s| after(now, s)))
        .unwrap_or_else(|| now.saturating_add(secs(cfg.default_cooldown.0)));
    Some(t.min(max))
}

/// Whole seconds of a duration as i64, saturating.
pub fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// `now + ceil(delay_s)`, saturating; `None` for NaN.
fn after(now: i64, delay_s: f64) -> Option<i64> {
    if delay_s.is_nan() {
        return None;
    }
    // Float-to-int `as` saturates (1e300 -> i64::MAX, -inf -> i64::MIN).
    Some(now.saturating_add(delay_s.max(0.0).ceil() as i64))
}

/// One line for logs, events and alerts.
pub fn reason_text(f: &Failure, provider: Option<&str>) -> String {
    // Records from other writers may not be redacted: never trust them.
    let mut line = failure_signatures::redact(&f.matched_line).into_owned();
    if line.len() > 200 {
        let mut cut = 200;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    format!(
        "{} on {} ({}): {}",
        f.class.as_str(),
        provider.unwrap_or("unknown provider"),
        f.signature,
        line
    )
}

#[derive(Clone, Debug, PartialEq)]
pub enum BoardPlan {
    Nothing(String),
    /// Delayed retry: park until `due_at` (`None`: until the provider heals).
    Park {
        due_at: Option<i64>,
    },
    /// Requeue now, steered to a healthy fallback.
    Requeue {
        fallback: ChainLink,
    },
    /// Budget spent: leave the task blocked with this reason.
    Block {
        reason: String,
    },
}

/// Decides the board action for a transient or needs-human failure.
/// `retries_used` is the task's delayed retries within the window;
/// `jitter01` a random number in [0, 1).
#[allow(clippy::too_many_arguments)]
pub fn plan(
    f: &Failure,
    provider: Option<&str>,
    chain: &[ChainLink],
    health: &ProviderHealth,
    retries_used: u32,
    retry: &RetryConfig,
    providers: &ProvidersConfig,
    now: i64,
    jitter01: f64,
) -> BoardPlan {
    if !actionable(f) {
        return BoardPlan::Nothing("failure is not transient".into());
    }
    if retry.steer_to_fallback
        && let Some(fallback) = healthy_fallback(chain, provider, health)
    {
        return BoardPlan::Requeue { fallback };
    }
    // Waiting for a human (a re-auth, an operator's reset) is not a
    // delayed retry: it neither spends the budget nor is refused by it.
    if needs_human(f) {
        return BoardPlan::Park { due_at: None };
    }
    if retries_used >= retry.max_delayed_retries {
        return BoardPlan::Block {
            reason: format!(
                "kanban-watchdog: delayed-retry budget spent ({} in {}); last failure: {}",
                retries_used,
                retry.retry_window,
                reason_text(f, provider)
            ),
        };
    }
    let jitter01 = if jitter01.is_nan() { 0.0 } else { jitter01 };
    let jitter = (retry.jitter.as_secs_f64() * jitter01.clamp(0.0, 1.0)).round() as i64;
    let margin = secs(retry.margin.0);
    let due = match f
        .resets_at
        .or_else(|| f.retry_after_s.and_then(|s| after(now, s)))
    {
        Some(reset) => reset.max(now).saturating_add(margin).saturating_add(jitter),
        None => {
            let base = retry.default_delay.0.as_secs().max(1);
            let cap = retry.max_delay.0.as_secs();
            let delay = base.saturating_mul(1u64 << retries_used.min(20)).min(cap);
            let step = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
            // A backoff step never outlasts what the blamed provider's own
            // cooldown calls for (this record's, or a longer one already
            // known): a 5-minute network cooldown is not waited 20 minutes.
            let cooldown = provider.and_then(|p| {
                let known = health.unhealthy_until(p).flatten();
                let this = unhealthy_until(f, providers, now);
                known.max(this)
            });
            match cooldown {
                Some(until) => step.min(until.max(now).saturating_add(margin)),
                None => step,
            }
            .saturating_add(jitter)
        }
    };
    let ceiling = now
        .saturating_add(secs(providers.max_cooldown.0))
        .saturating_add(margin)
        .saturating_add(jitter);
    BoardPlan::Park {
        due_at: Some(due.min(ceiling)),
    }
}

/// The first link after the blamed provider that is available.
pub fn healthy_fallback(
    chain: &[ChainLink],
    failed: Option<&str>,
    health: &ProviderHealth,
) -> Option<ChainLink> {
    chain
        .iter()
        .skip(1)
        .find(|l| Some(l.provider.as_str()) != failed && health.is_available(&l.provider))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use test_support::rate_limit;

    fn link(p: &str) -> ChainLink {
        ChainLink {
            provider: p.into(),
            model: Some(format!("{p}-model")),
        }
    }

    /// [`plan`] with the default config, nobody unhealthy, at 0 without jitter.
    fn plan_at_0(f: &Failure, provider: Option<&str>, chain: &[ChainLink], used: u32) -> BoardPlan {
        let c = Config::default();
        let h = ProviderHealth::default();
        plan(f, provider, chain, &h, used, &c.retry, &c.providers, 0, 0.0)
    }

    /// A failure of `class` that waiting does not mend.
    fn lasting(class: FailureClass) -> Failure {
        Failure {
            class,
            transient: false,
            ..rate_limit(None)
        }
    }

    #[test]
    fn a_reset_time_parks_until_it_plus_margin_and_jitter() {
        let c = Config::default();
        let f = rate_limit(Some(10_000));
        let p = plan(
            &f,
            Some("codex"),
            &[link("codex")],
            &ProviderHealth::default(),
            0,
            &c.retry,
            &c.providers,
            9_000,
            0.5,
        );
        assert_eq!(
            p,
            BoardPlan::Park {
                due_at: Some(10_000 + 15 + 15)
            }
        );
        assert_eq!(unhealthy_until(&f, &c.providers, 9_000), Some(10_000));
    }

    #[test]
    fn no_reset_time_doubles_the_default_delay_up_to_the_cap() {
        let f = rate_limit(None);
        let due = |n| match plan_at_0(&f, None, &[], n) {
            BoardPlan::Park { due_at } => due_at.unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(due(0), 300);
        assert_eq!(due(1), 600);
        assert_eq!(due(3), 2400);
        assert_eq!(due(4), 3600, "capped at max_delay");
    }

    #[test]
    fn a_healthy_fallback_wins_and_an_unhealthy_one_does_not() {
        let c = Config::default();
        let f = rate_limit(Some(10_000));
        let chain = [link("codex"), link("openrouter"), link("anthropic")];
        let plan_now = |h: &ProviderHealth| {
            plan(
                &f,
                Some("codex"),
                &chain,
                h,
                0,
                &c.retry,
                &c.providers,
                0,
                0.0,
            )
        };
        let mut h = ProviderHealth::default();
        h.mark_unhealthy("codex", Some(10_000), FailureClass::RateLimit, "x", 0);
        assert_eq!(
            plan_now(&h),
            BoardPlan::Requeue {
                fallback: link("openrouter")
            }
        );
        h.mark_unhealthy("openrouter", Some(10_000), FailureClass::RateLimit, "x", 0);
        assert_eq!(
            plan_now(&h),
            BoardPlan::Requeue {
                fallback: link("anthropic")
            }
        );
        h.mark_unhealthy("anthropic", None, FailureClass::AuthExpired, "x", 0);
        assert!(matches!(plan_now(&h), BoardPlan::Park { .. }));
    }

    #[test]
    fn a_backoff_step_never_outlasts_the_providers_cooldown() {
        let c = Config::default();
        let mut f = rate_limit(None);
        f.class = FailureClass::Network;
        let due = |n, h: &ProviderHealth| match plan(
            &f,
            Some("xai"),
            &[link("xai")],
            h,
            n,
            &c.retry,
            &c.providers,
            1_000,
            0.0,
        ) {
            BoardPlan::Park { due_at } => due_at.unwrap(),
            other => panic!("{other:?}"),
        };
        // The provider's own cooldown is the default 5m: step 3 (20m) waits
        // 5m + margin, like step 0.
        let none = ProviderHealth::default();
        assert_eq!(due(0, &none), 1_000 + 300);
        assert_eq!(due(3, &none), 1_000 + 300 + 15);
        // A longer cooldown already known for the provider lets the step grow.
        let mut h = ProviderHealth::default();
        h.mark_unhealthy(
            "xai",
            Some(1_000 + 7_200),
            FailureClass::RateLimit,
            "x",
            1_000,
        );
        assert_eq!(due(3, &h), 1_000 + 2_400);
    }

    #[test]
    fn waiting_for_a_reauth_is_never_refused_by_the_budget() {
        let f = lasting(FailureClass::AuthExpired);
        assert_eq!(
            plan_at_0(&f, Some("xai-oauth"), &[link("xai-oauth")], 99),
            BoardPlan::Park { due_at: None }
        );
    }

    #[test]
    fn the_budget_is_enforced() {
        let f = rate_limit(Some(10_000));
        match plan_at_0(&f, Some("codex"), &[], 5) {
            BoardPlan::Block { reason } => {
                assert!(reason.contains("budget spent (5 in 24h)"), "{reason}");
                assert!(reason.contains("rate_limit on codex"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn expired_auth_parks_until_the_provider_heals() {
        let c = Config::default();
        let f = lasting(FailureClass::AuthExpired);
        assert_eq!(
            plan_at_0(&f, Some("xai-oauth"), &[], 0),
            BoardPlan::Park { due_at: None }
        );
        assert_eq!(unhealthy_until(&f, &c.providers, 0), None);
    }

    #[test]
    fn non_transient_failures_are_left_to_the_dispatcher() {
        let f = lasting(FailureClass::RequestTooLarge);
        assert!(matches!(plan_at_0(&f, None, &[], 0), BoardPlan::Nothing(_)));
    }

    #[test]
    fn the_provider_hermes_printed_wins_then_the_chain_decides() {
        let mut f = rate_limit(Some(1));
        f.provider = Some("openai-codex".into());
        let mut rec = record_with(f, "");
        // A Codex-style text (naming openai-codex) from a profile whose
        // chain has no openai-codex is quoted text: nobody is blamed (this
        // used to blame the profile's primary, `custom`)...
        assert_eq!(blamed_provider(&rec, &[link("custom")]).as_deref(), None);
        // ...the chain containing the signature's provider decides...
        assert_eq!(
            blamed_provider(&rec, &[link("custom"), link("openai-codex")]).as_deref(),
            Some("openai-codex")
        );
        // ...and what Hermes printed beats both.
        rec.stdout.head = "⚠️  API call failed (attempt 1/3): RateLimitError [HTTP 429]\n   🔌 Provider: custom  Model: test-model\n".into();
        assert_eq!(
            blamed_provider(&rec, &[link("custom"), link("openai-codex")]).as_deref(),
            Some("custom")
        );
        // No chain at all: the signature's provider.
        rec.stdout.head.clear();
        assert_eq!(blamed_provider(&rec, &[]).as_deref(), Some("openai-codex"));
    }

    fn record_with(f: Failure, stdout: &str) -> ExitRecord {
        ExitRecord {
            stdout: exit_record::StreamCapture {
                head: stdout.into(),
                ..Default::default()
            },
            failure: Some(f),
            ..test_support::blank_record("r")
        }
    }

    fn auth(provider: Option<&str>) -> Failure {
        Failure {
            class: FailureClass::AuthExpired,
            signature: "xai-oauth-missing-token".into(),
            provider: provider.map(str::to_string),
            transient: false,
            matched_line: "xAI OAuth state is missing access_token".into(),
            resets_at: None,
            retry_after_s: None,
        }
    }

    #[test]
    fn a_failure_that_needs_a_human_blames_only_the_provider_it_names_in_the_chain() {
        let coder = [link("openai-codex"), link("openrouter")];
        // The xAI OAuth text in a Codex worker's output: not the primary's fault.
        let b = blame(&record_with(auth(Some("xai-oauth")), ""), &coder);
        assert_eq!(b.provider, None, "{}", b.evidence);
        assert!(b.evidence.contains("not in the profile's chain"));
        // Even with a Hermes label naming the primary.
        let rec = record_with(
            auth(Some("xai-oauth")),
            "🔌 Provider: openai-codex  Model: gpt-5\n",
        );
        assert_eq!(blamed_provider(&rec, &coder), None);
        // Named and in the chain: blamed (until re-auth).
        let grok = [link("xai-oauth")];
        assert_eq!(
            blamed_provider(&record_with(auth(Some("xai-oauth")), ""), &grok).as_deref(),
            Some("xai-oauth")
        );
        // Naming nobody: nobody, never the primary by guess.
        assert_eq!(blamed_provider(&record_with(auth(None), ""), &grok), None);
        // No chain known: only when the worker printed the same provider.
        assert_eq!(
            blamed_provider(&record_with(auth(Some("xai-oauth")), ""), &[]),
            None
        );
        let printed = record_with(auth(Some("xai-oauth")), "🔌 Provider: xai-oauth\n");
        assert_eq!(blamed_provider(&printed, &[]).as_deref(), Some("xai-oauth"));
    }

    #[test]
    fn a_named_provider_matches_its_hermes_id_in_the_chain() {
        let mut f = auth(Some("zhipu"));
        f.class = FailureClass::Billing;
        let rec = record_with(f, "");
        assert_eq!(
            blamed_provider(&rec, &[link("openai-codex"), link("zai")]).as_deref(),
            Some("zai")
        );
        let rec = record_with(rate_limit_named("xai"), "");
        assert_eq!(
            blamed_provider(&rec, &[link("xai-oauth")]).as_deref(),
            Some("xai-oauth")
        );
    }

    fn rate_limit_named(p: &str) -> Failure {
        let mut f = rate_limit(Some(1));
        f.provider = Some(p.into());
        f
    }

    /// A real Hermes 0.22 worker's stdout (`provider: custom`, the interop
    /// suite's fake provider answering with Codex's 429 body): no
    /// `🔌 Provider:` line, the provider only in the failure frame's lead.
    /// One fixture with failure-signatures' `hermes_frame` tests.
    const REAL_022_CUSTOM: &str =
        include_str!("../../failure-signatures/tests/fixtures/hermes/0.22-rate-limited-custom.txt");

    #[test]
    fn the_hermes_022_failure_frame_carries_the_blame() {
        // The Codex-worded 429 names openai-codex, outside the chain; the
        // 0.22 frame names `custom`, the profile's provider (issue 16,
        // finding 2: nobody was blamed and Hermes' 300 s loop ran on).
        let codex = rate_limit_named("openai-codex");
        let rec = record_with(codex.clone(), REAL_022_CUSTOM);
        let b = blame(&rec, &[link("custom")]);
        assert_eq!(b.provider.as_deref(), Some("custom"), "{}", b.evidence);
        assert!(b.evidence.contains("failure frame"), "{}", b.evidence);
        // Without the frame: nobody, as before.
        let bare = record_with(
            codex.clone(),
            "HTTP 429: The usage limit has been reached\n",
        );
        assert_eq!(blamed_provider(&bare, &[link("custom")]), None);
        // A 0.22 display label matches the chain's id.
        let rec = record_with(
            codex.clone(),
            " ChatGPT or Codex Subscription rate-limited every one of 3 attempts — its\n",
        );
        assert_eq!(
            blamed_provider(&rec, &[link("openrouter"), link("openai-codex")]).as_deref(),
            Some("openai-codex")
        );
        // Only inside the chain: a frame naming another provider is quoted
        // text, and the failure's own provider is outside the chain too.
        let rec = record_with(codex.clone(), REAL_022_CUSTOM);
        assert_eq!(blamed_provider(&rec, &[link("xai-oauth")]), None);
        // Only Hermes' own line: quoted, it is no frame.
        let quoted = REAL_022_CUSTOM.replace(" custom is", "> custom is");
        assert_eq!(
            blamed_provider(&record_with(codex.clone(), &quoted), &[link("custom")]),
            None
        );
        // No chain known: the frame's id.
        assert_eq!(
            blamed_provider(&record_with(codex, REAL_022_CUSTOM), &[]).as_deref(),
            Some("custom")
        );
    }

    #[test]
    fn a_provider_label_outside_the_chain_is_quoted_text() {
        // A grok worker printing an Anthropic label and a generic 429.
        let mut f = rate_limit(None);
        f.signature = "generic-http-429".into();
        f.provider = Some("anthropic".into());
        let rec = record_with(
            f.clone(),
            "🔌 Provider: anthropic  Model: claude\nHTTP 429\n",
        );
        let grok = [link("xai-oauth")];
        let b = blame(&rec, &grok);
        assert_eq!(b.provider, None, "{}", b.evidence);
        // In the chain, the label wins.
        let chain = [link("xai-oauth"), link("anthropic")];
        assert_eq!(blamed_provider(&rec, &chain).as_deref(), Some("anthropic"));
        // A generic failure naming nobody blames the primary.
        f.provider = None;
        assert_eq!(
            blamed_provider(&record_with(f, "HTTP 429\n"), &grok).as_deref(),
            Some("xai-oauth")
        );
    }

    #[test]
    fn huge_or_odd_reset_times_never_overflow_and_never_pass_max_cooldown() {
        let c = Config::default();
        let max = c.providers.max_cooldown.0.as_secs() as i64;
        let now = 1_780_000_000;
        for (resets_at, retry_after_s) in [
            (Some(i64::MAX), None),
            (Some(4_102_444_800), None),
            (None, Some(1e300)),
            (None, Some(f64::INFINITY)),
            (None, Some(f64::NAN)),
            (None, Some(-5.0)),
            (None, Some(f64::NEG_INFINITY)),
            (Some(i64::MIN), None),
        ] {
            let mut f = rate_limit(resets_at);
            f.retry_after_s = retry_after_s;
            let until = unhealthy_until(&f, &c.providers, now).unwrap();
            assert!(
                until <= now + max,
                "{resets_at:?} {retry_after_s:?}: {until}"
            );
            for used in [0, 3] {
                match plan(
                    &f,
                    Some("codex"),
                    &[link("codex")],
                    &ProviderHealth::default(),
                    used,
                    &c.retry,
                    &c.providers,
                    now,
                    0.999,
                ) {
                    BoardPlan::Park { due_at: Some(due) } => {
                        assert!(due <= now + max + 15 + 30, "{resets_at:?}: {due}")
                    }
                    BoardPlan::Block { .. } => {}
                    other => panic!("{other:?}"),
                }
            }
        }
        // Even at the end of time.
        let f = rate_limit(Some(i64::MAX));
        assert_eq!(
            unhealthy_until(&f, &c.providers, i64::MAX - 1),
            Some(i64::MAX)
        );
        let _ = plan(
            &f,
            None,
            &[],
            &ProviderHealth::default(),
            0,
            &c.retry,
            &c.providers,
            i64::MAX - 1,
            f64::NAN,
        );
    }

    #[test]
    fn reset_times_are_capped_by_max_cooldown() {
        let c = Config::default();
        let f = rate_limit(Some(10_000_000));
        assert_eq!(unhealthy_until(&f, &c.providers, 0), Some(86_400));
    }
}
