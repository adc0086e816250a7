//! Best-effort provider inference for signatures that do not name one.
//!
//! Looked for, in order: on the matched line, then in the whole text (the
//! occurrence nearest the matched line):
//! 1. an explicit label: Hermes `🔌 Provider: openai-codex  Model: gpt-5`,
//!    `provider=xai` (errors.log), `"provider": "anthropic"`;
//! 2. an SDK exception prefix (`openai.RateLimitError`, `anthropic.APIStatusError`);
//! 3. a well-known API host (`api.openai.com`, `api.anthropic.com`, ...).
//!
//! This is a hint for [`crate::Classification::provider`] only. Which
//! provider a Hermes worker itself says it talked to (0.19's `🔌 Provider:`
//! line, 0.22's failure frame) is read by [`crate::hermes_frame`], the one
//! parser the watchdog's blame trusts.

use std::sync::OnceLock;

use regex::Regex;

/// Well-known API hosts and the provider they imply. More specific first
/// (the Codex backend lives on chatgpt.com).
const HOSTS: &[(&str, &str)] = &[
    ("chatgpt.com/backend-api", "openai-codex"),
    ("api.openai.com", "openai"),
    ("api.anthropic.com", "anthropic"),
    ("api.x.ai", "xai"),
    ("openrouter.ai", "openrouter"),
    ("generativelanguage.googleapis.com", "gemini"),
    ("groq.com", "groq"),
    ("api.mistral.ai", "mistral"),
    ("api.deepseek.com", "deepseek"),
    ("api.together.xyz", "together"),
    ("api.fireworks.ai", "fireworks"),
    ("api.cohere.", "cohere"),
    ("api.perplexity.ai", "perplexity"),
    ("api.cerebras.ai", "cerebras"),
    ("api.moonshot.", "moonshot"),
    ("bigmodel.cn", "zhipu"),
    ("dashscope.aliyuncs.com", "dashscope"),
    ("localhost:11434", "ollama"),
    ("127.0.0.1:11434", "ollama"),
    ("bedrock-runtime.", "bedrock"),
    ("openai.azure.com", "azure-openai"),
    ("api.githubcopilot.com", "copilot"),
    // The openai-node SDK in a stack trace (`at OpenAI.makeRequest (.../node_modules/openai/core.mjs)`).
    ("node_modules/openai/", "openai"),
];

/// Python SDK modules whose exceptions name the provider (`openai.RateLimitError`),
/// and LiteLLM's `<Name>Exception` prefixes, which name the wrapped provider
/// (`litellm.RateLimitError: AnthropicException - ...`).
const SDK_MODULES: &[(&str, &str)] = &[
    ("openai.", "openai"),
    ("anthropic.", "anthropic"),
    ("cohere.", "cohere"),
    ("groq.", "groq"),
    ("mistralai.", "mistral"),
    ("ollama.", "ollama"),
    ("huggingface_hub.", "huggingface"),
    ("litellm.llms.anthropic.", "anthropic"),
    ("OpenAI", "openai"),
    ("Anthropic", "anthropic"),
    ("Bedrock", "bedrock"),
    ("VertexAI", "vertex"),
    ("Openrouter", "openrouter"),
    ("Groq", "groq"),
    ("Mistral", "mistral"),
    ("Deepseek", "deepseek"),
    ("Together_ai", "together"),
    ("Fireworks_ai", "fireworks"),
    ("Cohere", "cohere"),
    ("Perplexity", "perplexity"),
    ("Ollama", "ollama"),
];

fn label_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        crate::memory::regex_builder(
            r#"(?i)\bprovider["']?[ \t]*[:=][ \t]*["']?([a-z0-9][a-z0-9._-]{0,47})"#,
        )
        .unicode(false)
        .build()
        .expect("static provider regex must compile")
    })
}

/// Known hosts and `openai.SomethingError` style SDK prefixes in `hay`.
/// Returns (offset, provider).
fn hints_in(hay: &str) -> Vec<(usize, &'static str)> {
    let mut out = Vec::new();
    for (host, provider) in HOSTS {
        out.extend(hay.match_indices(host).map(|(pos, _)| (pos, *provider)));
    }
    for (module, provider) in SDK_MODULES {
        for (pos, _) in hay.match_indices(module) {
            // Not part of a longer identifier ("myopenai.") and followed by
            // an exception type ("openai.RateLimitError", "openai._exceptions.APIError").
            let glued = hay[..pos]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            let ident_len = hay[pos + module.len()..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(hay.len() - pos - module.len());
            let ident = &hay[pos + module.len()..pos + module.len() + ident_len];
            if !glued && (ident.ends_with("Error") || ident.ends_with("Exception")) {
                out.push((pos, *provider));
            }
        }
    }
    out
}

fn labels_in(hay: &str) -> Vec<(usize, String)> {
    label_re()
        .captures_iter(hay)
        .filter_map(|c| {
            let m = c.get(1)?;
            let value = m
                .as_str()
                .trim_end_matches(['.', '-', '_'])
                .to_ascii_lowercase();
            (!value.is_empty()).then(|| (m.start(), value))
        })
        .collect()
}

/// Families of provider names: the catalogue names a provider by the
/// company or API the text comes from; Hermes names the ones it talks to by
/// its own provider ids. Each row: the catalogue's name, then the Hermes
/// ids it covers.
const FAMILIES: &[&[&str]] = &[
    &["xai", "xai-oauth"],
    &["zhipu", "zai", "glm"],
    &["moonshot", "kimi-coding", "kimi"],
    &["dashscope", "alibaba", "qwen-oauth", "qwen"],
    &["gemini", "google-gemini-cli", "gemini-cli"],
    &["google-oauth", "gemini", "google-gemini-cli", "vertex"],
    &["vertex", "vertex-ai"],
    &["copilot", "copilot-acp"],
    &["azure-openai", "azure"],
    &["openai-codex", "codex"],
    &["anthropic", "claude-code"],
];

/// Whether the provider a failure names (`named`, a catalogue label) is the
/// Hermes provider `hermes_id` (exactly, or the same family: a `zhipu` text
/// is Hermes' `zai`, an `xai` credits error is Hermes' `xai-oauth` too).
pub fn same_provider(named: &str, hermes_id: &str) -> bool {
    named == hermes_id
        || FAMILIES
            .iter()
            .any(|f| f.first() == Some(&named) && f.contains(&hermes_id))
}

/// Infers the provider from the matched `line` (at byte `line_start` of `text`).
pub(crate) fn infer(line: &str, text: &str, line_start: usize) -> Option<String> {
    if let Some((_, p)) = labels_in(line).into_iter().next() {
        return Some(p);
    }
    if let Some((_, p)) = hints_in(line).into_iter().min_by_key(|(pos, _)| *pos) {
        return Some(p.to_owned());
    }
    let nearest = |pos: &usize| (pos.abs_diff(line_start), std::cmp::Reverse(*pos));
    if let Some((_, p)) = labels_in(text)
        .into_iter()
        .min_by_key(|(pos, _)| nearest(pos))
    {
        return Some(p);
    }
    hints_in(text)
        .into_iter()
        .min_by_key(|(pos, _)| nearest(pos))
        .map(|(_, p)| p.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hermes_provider_label() {
        let text =
            "⚠️  API call failed\n🔌 Provider: openai-codex  Model: gpt-5\n📝 Error: HTTP 429";
        let line_start = text.rfind('\n').map_or(0, |i| i + 1);
        assert_eq!(
            infer("📝 Error: HTTP 429", text, line_start).as_deref(),
            Some("openai-codex")
        );
    }

    #[test]
    fn errors_log_provider_kv() {
        let line = "2026-07-05 ERROR provider=xai model=grok-4 status=429 Too Many Requests";
        assert_eq!(infer(line, line, 0).as_deref(), Some("xai"));
    }

    #[test]
    fn families_map_catalogue_names_to_hermes_ids() {
        assert!(same_provider("openai", "openai"));
        assert!(same_provider("zhipu", "zai"));
        assert!(same_provider("xai", "xai-oauth"));
        assert!(same_provider("google-oauth", "vertex"));
        assert!(!same_provider("openai", "openai-codex"));
        assert!(!same_provider("vertex", "gemini"));
        assert!(!same_provider("anthropic", "bedrock"));
    }

    #[test]
    fn sdk_prefix_and_hosts() {
        let l = "openai.RateLimitError: Error code: 429";
        assert_eq!(infer(l, l, 0).as_deref(), Some("openai"));
        let l = "anthropic.APIStatusError: Error code: 429";
        assert_eq!(infer(l, l, 0).as_deref(), Some("anthropic"));
        let l = "POST https://api.x.ai/v1/chat/completions -> 429";
        assert_eq!(infer(l, l, 0).as_deref(), Some("xai"));
        let l = "POST https://chatgpt.com/backend-api/codex/responses 429";
        assert_eq!(infer(l, l, 0).as_deref(), Some("openai-codex"));
        let l = "myopenai.RateLimitError or openai.client";
        assert_eq!(infer(l, l, 0), None);
    }

    #[test]
    fn openrouter_upstream_name_is_not_a_provider_label() {
        let l = r#"{"metadata":{"provider_name":"Chutes"},"message":"Provider returned error"}"#;
        assert_eq!(infer(l, l, 0), None);
    }
}
