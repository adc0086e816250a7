//! Masking of credentials in captured output.
//!
//! [`redact`] replaces secrets with [`REDACTED`], keeping a short non-secret
//! context (header name, auth scheme, key prefix such as `sk-ant-`) so the
//! result stays readable:
//!
//! * `Authorization: Bearer …` / `Authorization: Basic …` (any case, also
//!   `Proxy-Authorization` and JSON/dict forms) → `Authorization: Bearer [REDACTED]`;
//! * a bare `Bearer <token>` (token ≥ 8 chars with a digit or symbol, or ≥ 20 chars);
//! * API keys by prefix: OpenAI `sk-…`, `sk-proj-…`, Anthropic `sk-ant-…`,
//!   OpenRouter `sk-or-v1-…`, xAI `xai-…`, Google `AIza…`, GitHub `ghp_…`
//!   (and `gho_`, `ghu_`, `ghs_`, `ghr_`), `github_pat_…`;
//! * JWTs (`eyJ….eyJ….sig`);
//! * values of `access_token`, `refresh_token`, `id_token`, `api_key`,
//!   `apikey`, `api-key`, `client_secret`, `password`, `passwd`, `token`,
//!   `secret` (also with a prefix such as `OPENAI_API_KEY`, `db_password`) in
//!   JSON (`"k": "v"`), Python dicts (`'k': 'v'`), `k=v`, `k: v` and URL
//!   query parameters.
//!
//! Ordinary text ("task-123", "risk-free", "sk", "max_tokens: 5") is left
//! alone, and redacting twice changes nothing more than redacting once.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::{Captures, Regex};

/// The replacement text for a secret.
pub const REDACTED: &str = "[REDACTED]";

type Rewrite = fn(&Captures<'_>) -> Option<String>;

struct Pass {
    /// Lowercase literals one of which every match contains: a pass whose
    /// triggers are absent is skipped without compiling its regex (the
    /// shim redacts every run's argv; most runs hold no secret at all).
    triggers: &'static [&'static str],
    pattern: &'static str,
    re: OnceLock<Regex>,
    rewrite: Rewrite,
}

impl Pass {
    const fn new(
        triggers: &'static [&'static str],
        pattern: &'static str,
        rewrite: Rewrite,
    ) -> Pass {
        Pass {
            triggers,
            pattern,
            re: OnceLock::new(),
            rewrite,
        }
    }

    /// `memchr::memmem` rather than `str::contains`: its vectorised
    /// search takes 0.8 of the instructions on a 72 KiB capture searched
    /// for ~20 triggers, with nothing to build first (callgrind, kw-bench
    /// 1g's workload; an Aho-Corasick automaton over all triggers scanned
    /// faster but cost more to build than a short text takes to search).
    fn applies_to(&self, lowercase_text: &str) -> bool {
        let hay = lowercase_text.as_bytes();
        self.triggers
            .iter()
            .any(|t| memchr::memmem::find(hay, t.as_bytes()).is_some())
    }

    fn regex(&self) -> &Regex {
        self.re.get_or_init(|| {
            crate::memory::regex_builder(self.pattern)
                .build()
                .expect("static redaction regex must compile")
        })
    }
}

static PASSES: [Pass; 5] = [
    Pass::new(
        &["authorization"],
        r#"(?i-u:(\b(?:proxy-)?authorization(?:\\?["'])?[ \t]*[:=][ \t]*(?:\\?["'])?(?:(?:bearer|basic|token|digest)[ \t]+)?))([^\s"',;\\]+)"#,
        keep_prefix,
    ),
    Pass::new(
        &["bearer"],
        r"(?i-u)(\bbearer[ \t]+)([A-Za-z0-9._~+/=-]{8,})",
        bearer,
    ),
    Pass::new(
        &["eyj"],
        r"(?-u)\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        whole,
    ),
    Pass::new(
        &[
            "sk-",
            "xai-",
            "ghp_",
            "gho_",
            "ghu_",
            "ghs_",
            "ghr_",
            "github_pat_",
            "aiza",
        ],
        r"(?-u)\b(sk-ant-|sk-or-v1-|sk-proj-|sk-svcacct-|sk-admin-|sk-|xai-|ghp_|gho_|ghu_|ghs_|ghr_|github_pat_|AIza)([A-Za-z0-9_-]{8,})",
        key_prefix,
    ),
    Pass::new(
        &[
            "token",
            "api_key",
            "api-key",
            "apikey",
            "client_secret",
            "password",
            "passwd",
            "secret",
        ],
        r#"(?i-u:(\b(?:[a-z0-9]+[_-])*(?:access_token|refresh_token|id_token|api[_-]?key|client_secret|password|passwd|token|secret)(?:\\?["'])?[ \t]*[:=][ \t]*(?:\\["'])?))(?:"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)'|([^\s"'&,;#}\])\\]+))"#,
        key_value,
    ),
];

fn passes() -> &'static [Pass] {
    &PASSES
}

/// Whether `value` already contains a redaction (keeps `redact` idempotent:
/// `KEY=sk-ant-[REDACTED]` must not become `KEY=[REDACTED]]`).
fn already(value: &str) -> bool {
    value.contains("[REDACTED")
}

/// `prefix` kept, value (group 2) masked.
fn keep_prefix(c: &Captures<'_>) -> Option<String> {
    let value = c.get(2)?.as_str();
    if already(value) {
        return None;
    }
    Some(format!("{}{REDACTED}", c.get(1)?.as_str()))
}

fn bearer(c: &Captures<'_>) -> Option<String> {
    let token = c.get(2)?.as_str();
    let looks_secret = token.len() >= 20 || token.bytes().any(|b| !b.is_ascii_alphabetic());
    if !looks_secret {
        return None;
    }
    Some(format!("{}{REDACTED}", c.get(1)?.as_str()))
}

fn whole(_: &Captures<'_>) -> Option<String> {
    Some(REDACTED.to_owned())
}

fn key_prefix(c: &Captures<'_>) -> Option<String> {
    let prefix = c.get(1)?.as_str();
    let rest = c.get(2)?.as_str();
    let min = match prefix {
        "AIza" => 30,
        "xai-" | "ghp_" | "gho_" | "ghu_" | "ghs_" | "ghr_" | "github_pat_" => 20,
        _ => 16,
    };
    if rest.len() < min {
        return None;
    }
    Some(format!("{prefix}{REDACTED}"))
}

fn key_value(c: &Captures<'_>) -> Option<String> {
    let key = c.get(1)?.as_str();
    let (value, quote) = if let Some(v) = c.get(2) {
        (v.as_str(), "\"")
    } else if let Some(v) = c.get(3) {
        (v.as_str(), "'")
    } else {
        (c.get(4)?.as_str(), "")
    };
    let lower = value.to_ascii_lowercase();
    if value.is_empty()
        || already(value)
        || ["null", "none", "true", "false", "undefined"].contains(&lower.as_str())
    {
        return None;
    }
    Some(format!("{key}{quote}{REDACTED}{quote}"))
}

/// Applies one pass; `None` when it changed nothing.
fn apply(text: &str, pass: &Pass) -> Option<String> {
    let mut out = String::new();
    let mut last = 0;
    let mut changed = false;
    for c in pass.regex().captures_iter(text) {
        let Some(m) = c.get(0) else { continue };
        if let Some(replacement) = (pass.rewrite)(&c) {
            if !changed {
                out.reserve(text.len());
                changed = true;
            }
            out.push_str(&text[last..m.start()]);
            out.push_str(&replacement);
            last = m.end();
        }
    }
    if !changed {
        return None;
    }
    out.push_str(&text[last..]);
    Some(out)
}

/// Masks credentials in `text` (see the module docs for what is recognised).
/// Returns `Cow::Borrowed` when nothing had to change.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    if text.is_empty() {
        return out;
    }
    let lower = text.to_ascii_lowercase();
    for pass in passes() {
        if !pass.applies_to(&lower) {
            continue;
        }
        if let Some(s) = apply(&out, pass) {
            out = Cow::Owned(s);
        }
    }
    out
}
