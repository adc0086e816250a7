//! What to do about one exit record: which provider it blames, how long
//! that provider is unhealthy, and what happens to the task. Pure
//! functions, so every branch is tested without a board.

use exit_record::ExitRecord;
use failure_signatures::{Classification, FailureClass};

use crate::config::{ProvidersConfig, RetryConfig};
use crate::health::ProviderHealth;
use crate::profiles::ChainLink;

/// Failures that need a human (re-auth, billing) rather than time.
pub fn needs_human(f: &Classification) -> bool {
    matches!(
        f.class,
        FailureClass::AuthExpired | FailureClass::AuthInvalid | FailureClass::Billing
    ) || (f.class == FailureClass::Quota && !f.transient)
}

/// Failures the watchdog acts on at all.
pub fn actionable(f: &Classification) -> bool {
    f.transient || needs_human(f)
}

/// The provider a record blames, best evidence first:
/// 1. the provider the Hermes worker itself printed (`🔌 Provider: X`) —
///    the one it really talked to, internal fallbacks included;
/// 2. the provider the shim steered the run to;
/// 3. the signature's provider, when it is in the profile's chain (an xAI
///    error from a profile that falls back to xAI);
/// 4. the profile's primary (a Codex-style 429 text from a `custom`
///    endpoint blames that endpoint, not Codex);
/// 5. the signature's provider.
pub fn blamed_provider(record: &ExitRecord, chain: &[ChainLink]) -> Option<String> {
    let signature = record.failure.as_ref().and_then(|f| f.provider.clone());
    hermes_provider_label(record)
        .or_else(|| record.steered.as_ref().map(|s| s.provider.clone()))
        .or_else(|| {
            signature
                .clone()
                .filter(|p| chain.iter().any(|l| &l.provider == p))
        })
        .or_else(|| chain.first().map(|l| l.provider.clone()))
        .or(signature)
}

/// The last `🔌 Provider: X` line a Hermes worker printed, if any.
pub fn hermes_provider_label(record: &ExitRecord) -> Option<String> {
    let text = record.captured_text();
    text.lines()
        .rev()
        .find_map(|l| l.split_once("Provider:").map(|(_, rest)| rest))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|p| p.trim_matches(|c: char| !c.is_alphanumeric() && c != '-' && c != '_' && c != '.'))
        .filter(|p| !p.is_empty())
        .map(str::to_string)
}

/// The provider a clean run proves healthy.
pub fn run_provider(record: &ExitRecord, chain: &[ChainLink]) -> Option<String> {
    record
        .steered
        .as_ref()
        .map(|s| s.provider.clone())
        .or_else(|| chain.first().map(|l| l.provider.clone()))
}

/// Until when the provider is unhealthy: `None` = until re-auth.
pub fn unhealthy_until(f: &Classification, cfg: &ProvidersConfig, now: i64) -> Option<i64> {
    if needs_human(f) {
        return None;
    }
    let max = now + cfg.max_cooldown.0.as_secs() as i64;
    let t = f
        .resets_at
        .or_else(|| f.retry_after_s.map(|s| now + s.ceil() as i64))
        .unwrap_or(now + cfg.default_cooldown.0.as_secs() as i64);
    Some(t.min(max))
}

/// One line for logs, events and alerts.
pub fn reason_text(f: &Classification, provider: Option<&str>) -> String {
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
    Nothing(&'static str),
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
    f: &Classification,
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
        return BoardPlan::Nothing("failure is not transient");
    }
    if retry.steer_to_fallback
        && let Some(fallback) = healthy_fallback(chain, provider, health)
    {
        return BoardPlan::Requeue { fallback };
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
    if needs_human(f) {
        return BoardPlan::Park { due_at: None };
    }
    let jitter = (retry.jitter.as_secs_f64() * jitter01.clamp(0.0, 1.0)).round() as i64;
    let margin = retry.margin.0.as_secs() as i64;
    let due = match f
        .resets_at
        .or_else(|| f.retry_after_s.map(|s| now + s.ceil() as i64))
    {
        Some(reset) => reset.max(now) + margin + jitter,
        None => {
            let base = retry.default_delay.0.as_secs().max(1);
            let cap = retry.max_delay.0.as_secs();
            let delay = base.saturating_mul(1u64 << retries_used.min(20)).min(cap);
            now + delay as i64 + jitter
        }
    };
    let ceiling = now + providers.max_cooldown.0.as_secs() as i64 + margin + jitter;
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

    fn rate_limit(resets_at: Option<i64>) -> Classification {
        Classification {
            class: FailureClass::RateLimit,
            signature: "codex-usage-limit".into(),
            provider: None,
            transient: true,
            matched_line: "HTTP 429: The usage limit has been reached".into(),
            resets_at,
            retry_after_s: None,
        }
    }

    fn link(p: &str) -> ChainLink {
        ChainLink {
            provider: p.into(),
            model: Some(format!("{p}-model")),
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
        let c = Config::default();
        let f = rate_limit(None);
        let due = |n| match plan(
            &f,
            None,
            &[],
            &ProviderHealth::default(),
            n,
            &c.retry,
            &c.providers,
            0,
            0.0,
        ) {
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
        let mut h = ProviderHealth::default();
        h.mark_unhealthy("codex", Some(10_000), "rate_limit", "x", 0);
        assert_eq!(
            plan(
                &f,
                Some("codex"),
                &chain,
                &h,
                0,
                &c.retry,
                &c.providers,
                0,
                0.0
            ),
            BoardPlan::Requeue {
                fallback: link("openrouter")
            }
        );
        h.mark_unhealthy("openrouter", Some(10_000), "rate_limit", "x", 0);
        assert_eq!(
            plan(
                &f,
                Some("codex"),
                &chain,
                &h,
                0,
                &c.retry,
                &c.providers,
                0,
                0.0
            ),
            BoardPlan::Requeue {
                fallback: link("anthropic")
            }
        );
        h.mark_unhealthy("anthropic", None, "auth_expired", "x", 0);
        assert!(matches!(
            plan(
                &f,
                Some("codex"),
                &chain,
                &h,
                0,
                &c.retry,
                &c.providers,
                0,
                0.0
            ),
            BoardPlan::Park { .. }
        ));
    }

    #[test]
    fn the_budget_is_enforced() {
        let c = Config::default();
        let f = rate_limit(Some(10_000));
        match plan(
            &f,
            Some("codex"),
            &[],
            &ProviderHealth::default(),
            5,
            &c.retry,
            &c.providers,
            0,
            0.0,
        ) {
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
        let mut f = rate_limit(None);
        f.class = FailureClass::AuthExpired;
        f.transient = false;
        assert_eq!(
            plan(
                &f,
                Some("xai-oauth"),
                &[],
                &ProviderHealth::default(),
                0,
                &c.retry,
                &c.providers,
                0,
                0.0
            ),
            BoardPlan::Park { due_at: None }
        );
        assert_eq!(unhealthy_until(&f, &c.providers, 0), None);
    }

    #[test]
    fn non_transient_failures_are_left_to_the_dispatcher() {
        let c = Config::default();
        let mut f = rate_limit(None);
        f.class = FailureClass::RequestTooLarge;
        f.transient = false;
        assert!(matches!(
            plan(
                &f,
                None,
                &[],
                &ProviderHealth::default(),
                0,
                &c.retry,
                &c.providers,
                0,
                0.0
            ),
            BoardPlan::Nothing(_)
        ));
    }

    #[test]
    fn the_provider_hermes_printed_wins_then_the_chain_decides() {
        use exit_record::{ExitInfo, ExitRecord, StreamCapture, TaskContext};
        let mut f = rate_limit(Some(1));
        f.provider = Some("openai-codex".into());
        let mut rec = ExitRecord {
            schema: exit_record::SCHEMA_NAME.into(),
            schema_version: exit_record::SCHEMA_VERSION,
            id: "r".into(),
            argv: vec![],
            cwd: None,
            pid: None,
            shim_pid: 1,
            started_at: jiff::Timestamp::UNIX_EPOCH,
            ended_at: jiff::Timestamp::UNIX_EPOCH,
            duration_ms: 0,
            exit: ExitInfo::default(),
            task: TaskContext::default(),
            stdout: StreamCapture::default(),
            stderr: StreamCapture::default(),
            failure: Some(f),
            steered: None,
            run_at_exit: None,
        };
        // A Codex-style text from a `custom` endpoint blames the endpoint...
        assert_eq!(
            blamed_provider(&rec, &[link("custom")]).as_deref(),
            Some("custom")
        );
        // ...unless the chain contains the signature's provider...
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

    #[test]
    fn reset_times_are_capped_by_max_cooldown() {
        let c = Config::default();
        let f = rate_limit(Some(10_000_000));
        assert_eq!(unhealthy_until(&f, &c.providers, 0), Some(86_400));
    }
}
