//! Where a matching line sits, and whether it reads like a failure the run
//! died of or like a mention of one.
//!
//! Worker output is written by an LLM agent that reads logs, quotes docs,
//! prints diffs and runs test suites, so a signature matching *somewhere*
//! proves nothing. A match counts as evidence only when its line:
//!
//! 1. sits at the **end of its stream** (among the last [`TAIL_LINES`]
//!    non-blank lines): a worker that died of a provider error prints it
//!    last, and errors a worker recovered from are followed by more work;
//! 2. is **not quoted**: not a diff line (`+`/`-`/`@@`), not a Markdown
//!    quote, heading, bullet or table row, not source code (`raise`,
//!    `except`, `if ... ==`, `assert`, comments, string literals in
//!    calls), not a test runner's verdict (`PASSED`, `ok`, `✓`), not an
//!    access-log line of a local server;
//! 3. for a **generic** signature (a bare status code or reason phrase),
//!    also has **LLM-API context** within its frame (the line and the
//!    [`FRAME_LINES`] lines around it): a provider label, an SDK exception
//!    prefix, a known API host or path, or a Hermes provider-error frame.
//!    A generic signature never stands alone.

use std::sync::OnceLock;

use regex::Regex;
use regex_automata::{meta, util::syntax};

/// A match counts only among the last this many non-blank lines of a stream.
pub const TAIL_LINES: usize = 40;
/// Lines before and after a generic match searched for LLM-API context.
pub const FRAME_LINES: usize = 6;

/// Why a matching line is not evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// More than [`TAIL_LINES`] non-blank lines follow it.
    NotAtEnd,
    /// The line is quoted: a diff, Markdown, source code, test output, access log.
    Quoted(&'static str),
    /// A generic signature with no LLM-API context in its frame.
    NoApiContext,
}

impl Rejection {
    /// One human-readable phrase.
    pub fn describe(&self) -> String {
        match self {
            Rejection::NotAtEnd => format!(
                "not among the last {TAIL_LINES} lines of its stream (a mention, not the error the run died of)"
            ),
            Rejection::Quoted(what) => format!("quoted text ({what})"),
            Rejection::NoApiContext => format!(
                "generic signature with no provider or LLM-API context within {FRAME_LINES} lines"
            ),
        }
    }
}

/// Byte offset from which lines are "at the end" of `text`.
pub fn tail_zone_start(text: &str) -> usize {
    let mut seen = 0usize;
    let mut end = text.len();
    // Walk lines backwards.
    while end > 0 {
        let start = text[..end].rfind('\n').map_or(0, |i| i + 1);
        let line = &text[start..end];
        if !line.trim().is_empty() {
            seen += 1;
            if seen == TAIL_LINES {
                return start;
            }
        }
        if start == 0 {
            break;
        }
        end = start - 1;
    }
    0
}

/// A static evidence pattern, compiled on first use in the form the text
/// needs. On ASCII-only text the pattern runs as an ASCII regex over bytes
/// (`\w`, `\d`, `\s`, `\b`, `.`, `[^...]` and `(?i)` mean there exactly what
/// their Unicode forms mean on ASCII text; no pattern has a non-ASCII
/// literal under `(?i)`, and non-ASCII characters are written as literals,
/// not in classes, which ASCII mode rejects), which is a fraction of the Unicode automaton's
/// memory: Unicode `\w` alone is hundreds of kilobytes of NFA states, the
/// UTF-8 compiler's cache another 300 KB while it builds. Any other text
/// gets the Unicode regex, as before.
///
/// An alternation of single characters (`✓|✔|√`) is folded by the parser
/// into a character class, and a class with a non-ASCII character is a
/// Unicode class even in ASCII mode: compiling one takes the UTF-8
/// compiler's state map, ~314 KB for a moment, a tenth of the shim's whole
/// memory budget. Such alternatives are written whole (`^[ \t]*✓|^[ \t]*✔`);
/// a test keeps every pattern free of Unicode classes in ASCII mode.
///
/// The ASCII form is a `regex-automata` meta regex with only the NFA
/// engines (bounded backtracker, PikeVM): no lazy DFA, no reverse NFA, no
/// literal prefilter. It runs on a few lines around one candidate match,
/// never on a whole stream, where those engines are fast enough; what it
/// spares is memory, in the run that has just died of a provider error:
/// the 20 rules of the time compiled took 0.25 MB instead of 0.51 MB, and the code of
/// the engines left out is never paged in (kw-bench 2d).
///
/// On ASCII text longer than [`NFA_MAX_HAYSTACK`] (a minified JSON line,
/// base64) those engines would take ~1,000 instructions a byte, so such
/// text gets the ordinary `regex` form, with its lazy DFA, compiled when
/// first needed: the memory is spent only on output that has such lines.
struct Pattern {
    source: &'static str,
    unicode: OnceLock<Regex>,
    ascii: OnceLock<meta::Regex>,
    ascii_long: OnceLock<regex::bytes::Regex>,
}

/// Longest ASCII text searched with a pattern's NFA-only form.
const NFA_MAX_HAYSTACK: usize = 2048;

impl Pattern {
    const fn new(source: &'static str) -> Pattern {
        Pattern {
            source,
            unicode: OnceLock::new(),
            ascii: OnceLock::new(),
            ascii_long: OnceLock::new(),
        }
    }

    fn unicode(&self) -> &Regex {
        self.unicode.get_or_init(|| {
            match crate::memory::regex_builder(self.source).build() {
                Ok(re) => re,
                // The patterns are static; a unit test compiles each of them.
                Err(e) => panic!("static evidence regex must compile: {e}"),
            }
        })
    }

    fn ascii(&self) -> &meta::Regex {
        self.ascii.get_or_init(|| {
            match meta::Regex::builder()
                // As `regex::bytes` with `unicode(false)`.
                .syntax(syntax::Config::new().unicode(false).utf8(false))
                .configure(
                    meta::Config::new()
                        .utf8_empty(false)
                        .auto_prefilter(false)
                        .hybrid(false)
                        .onepass(false)
                        .dfa(false),
                )
                .build(self.source)
            {
                Ok(re) => re,
                Err(e) => panic!("static evidence regex must compile: {e}"),
            }
        })
    }

    fn ascii_long(&self) -> &regex::bytes::Regex {
        self.ascii_long.get_or_init(|| {
            match regex::bytes::RegexBuilder::new(self.source)
                .unicode(false)
                .build()
            {
                Ok(re) => re,
                Err(e) => panic!("static evidence regex must compile: {e}"),
            }
        })
    }

    fn is_match(&self, hay: &str) -> bool {
        if !hay.is_ascii() {
            self.unicode().is_match(hay)
        } else if hay.len() <= NFA_MAX_HAYSTACK {
            self.ascii().is_match(hay.as_bytes())
        } else {
            self.ascii_long().is_match(hay.as_bytes())
        }
    }

    /// The matched texts, in order (each form where `is_match` takes it).
    fn find_all<'h>(&self, hay: &'h str) -> Vec<&'h str> {
        // On ASCII text every byte offset is a char boundary.
        if !hay.is_ascii() {
            self.unicode().find_iter(hay).map(|m| m.as_str()).collect()
        } else if hay.len() <= NFA_MAX_HAYSTACK {
            self.ascii()
                .find_iter(hay.as_bytes())
                .map(|m| &hay[m.range()])
                .collect()
        } else {
            self.ascii_long()
                .find_iter(hay.as_bytes())
                .map(|m| &hay[m.range()])
                .collect()
        }
    }
}

/// Why a line reads as quoted text, in order: the first rule that matches
/// names it. Each rule compiles when it is first reached.
static QUOTED_RULES: [(Pattern, &str); 13] = [
    // Unified diffs and patches.
    (
        Pattern::new(r"^(?:[+-](?:[^+-]|$)|@@ |diff --git |index [0-9a-f]+\.\.)"),
        "a diff line",
    ),
    // Markdown: quote, heading, list item, table row, code fence.
    (
        Pattern::new(r"^[ \t]*(?:>|#{1,6} |[*] |- |[0-9]+\. |\||```)"),
        "Markdown",
    ),
    // Source code that raises, catches, compares or tests an error.
    (
        Pattern::new(
            r"^[ \t]*(?:raise |throw |except\b|catch\b|if |elif |else\b|case |when |assert|expect\(|return |def |fn |class |struct |enum |const |let |var |import |from \S+ import|#\[|//|/\*|\* |# |-- |@)",
        ),
        "source code",
    ),
    (
        Pattern::new(r"(?:==|!=)[ \t]*[0-9]{3}\b|\b[0-9]{3}[ \t]*(?:==|!=)"),
        "a comparison in code",
    ),
    (
        Pattern::new(
            r#"\b(?:assert[A-Za-z_]*|expect|mock[A-Za-z_]*|patch|respond(?:With)?|status)\(\s*[0-9]{3}\b"#,
        ),
        "a test or mock",
    ),
    // A call with keyword arguments (`super().__init__(message="Request timed out.")`)
    // and an object-literal line with an unquoted key (`type: 'rate_limit_error',`).
    (
        Pattern::new(r"^[ \t]*[A-Za-z_][\w.]*(?:\(\))?(?:\.[A-Za-z_]\w*)*\(.*\b[a-z_]\w*="),
        "source code",
    ),
    // Test code (`it('retries on 429', ...)`) and an object literal's
    // string property with an unquoted key (`message: "Rate limit exceeded",`).
    (
        Pattern::new(r#"^[ \t]*(?:it|test|describe|expect|context)(?:\.\w+)?\(\s*["'`]"#),
        "test code",
    ),
    (
        Pattern::new(r#"^[ \t]*[A-Za-z_$][\w$]*[ \t]*:[ \t]*["'`].*["'`][ \t]*,?[ \t]*$"#),
        "an object literal in code",
    ),
    // Issue, PR and commit titles, changelog entries.
    (
        Pattern::new(
            r"^[ \t]*(?:\[(?:Bug|BUG|Feature|FEATURE|Feature Request|Enhancement)\]|(?:fix|feat|chore|docs|refactor|perf|test|ci|build)(?:\([^)]*\))?!?: |(?:Fix(?:ed|es)?|Add(?:ed|s)?|Handle[sd]?|Improve[sd]?|Retry|Support(?:ed|s)?|Closes|Resolves|Bump(?:ed|s)?)\b)",
        ),
        "an issue, commit or changelog title",
    ),
    // Trees and diagrams (`│ └── InternalServerError (5xx)`).
    (Pattern::new(r"├──|└──"), "a tree drawing"),
    // Test runners: pytest, cargo test, jest/vitest, go test.
    (
        Pattern::new(
            r"(?:\bPASSED\b|\bpassed\b|\bok\b$|\.\.\. ok\b|^[ \t]*✓|^[ \t]*✔|^[ \t]*√|^[ \t]*--- PASS|^[ \t]*PASS\b|\bSKIPPED\b|\bXFAIL\b)",
        ),
        "test output",
    ),
    // Access logs of a local server: `"POST /v1/x HTTP/1.1" 429 -`.
    (
        Pattern::new(
            r#""(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) [^"]* HTTP/[0-9.]+" [0-9]{3}\b"#,
        ),
        "an access-log line",
    ),
    (
        Pattern::new(r"\b(?:INFO|DEBUG)\b.*\b(?:127\.0\.0\.1|localhost)(?::[0-9]+)?\b"),
        "a local server's log",
    ),
];

/// Why `line` reads as quoted text, if it does.
pub fn quoted(line: &str) -> Option<&'static str> {
    let rules = &QUOTED_RULES;
    let trimmed = line.trim_end();
    if let Some(why) = rules
        .iter()
        .find(|(re, _)| re.is_match(trimmed))
        .map(|(_, why)| *why)
    {
        return Some(why);
    }
    (explains(trimmed) && !error_framed(trimmed)).then_some("an explanation of an error")
}

static EXPLAINS: Pattern = Pattern::new(
    r"\b(?:means|meaning|indicates|what it|how to|is not an?|isn't an?|will throw|throws|bypass(?:es)?|treats?|handling|handles?|handled|more robust|looks? (?:the same|like)|specifically|occurs? when|happens when|you (?:may|might|will|can) (?:see|get|receive|encounter)|if you (?:see|get|receive|encounter))\b",
);

/// Docs and agent prose explaining an error ("... means ...", "how to fix").
fn explains(line: &str) -> bool {
    EXPLAINS.is_match(line)
}

static ERROR_FRAMED: Pattern = Pattern::new(
    r#"(?:\b[A-Z]\w*(?:Error|Exception)\b|\bERROR\b|\b(?:[Ee]rror|ERR|[Ff]atal|FATAL):|\[ERROR\]|API Error|["']error["']\s*:|["']type["']\s*:\s*["']error["']|^\W*(?:✕|❌|⚠️|📝|📋|■|⎿))"#,
);

/// Lines a failing program prints: an exception type, an error label, a
/// JSON error body, a log level.
pub fn error_framed(line: &str) -> bool {
    ERROR_FRAMED.is_match(line)
}

static SOURCE_LINE: Pattern = Pattern::new(
    r"^[ \t]*(?:(?:const|let|var|def|function|return|import|export|async|await|app\.|res\.|router\.|server\.|if \(|for \(|while \()\b.*|[^ \t].*(?:;|=>[ \t]*\{|\)[ \t]*\{|\)[ \t]*=>[ \t]*\{)[ \t]*)$",
);

/// Whether the frame reads like source code: at least two statement-like
/// lines (ending with `;`, opening a block after `)`/`=>`, or starting with
/// a declaration keyword). A stack trace's `at f (file:1:2) {` does not count.
pub fn in_source_code(frame: &str) -> bool {
    let re = &SOURCE_LINE;
    frame
        .lines()
        .filter(|l| !l.trim_start().starts_with("at ") && re.is_match(l))
        .count()
        >= 2
}

static MARKDOWN_DOCUMENT: Pattern = Pattern::new(
    r"(?m)^[ \t]*(?:#{1,6} \S|\*\*[^*\n]{1,60}\*\*:?[ \t]*$|={3,}[ \t]*$|-{3,}[ \t]*$)",
);

/// Whether the lines around a match look like a Markdown document (a
/// heading or a bold label such as `**Error**:` within [`FRAME_LINES`]):
/// documentation or a report quoting an error, not a program dying of it.
pub fn in_markdown_document(frame: &str) -> bool {
    let re = &MARKDOWN_DOCUMENT;
    re.is_match(frame)
}

/// Whether the match at `span` in `line` sits inside inline code
/// (`` `RESOURCE_EXHAUSTED` ``): prose naming an error, not the error.
pub fn in_inline_code(line: &str, span: std::ops::Range<usize>) -> bool {
    let before = line[..span.start].matches('`').count();
    let after = line[span.end.min(line.len())..].matches('`').count();
    before % 2 == 1 && after >= 1
}

/// Whether, within [`FRAME_LINES`] after a match, an explanation of an
/// error follows, or a blank line is followed by a new paragraph of prose (an unindented sentence of ten words or more
/// that is not an error message): the match was quoted in a narrative (a PR
/// text, a report, an agent's explanation), not the last words of a run.
pub fn followed_by_narrative(after: &str) -> bool {
    let mut blank_seen = false;
    for line in after.lines().skip(1).take(FRAME_LINES) {
        if line.trim().is_empty() {
            blank_seen = true;
            continue;
        }
        if explains(line) && !error_framed(line) {
            return true;
        }
        if blank_seen
            && !line.starts_with([' ', '\t'])
            && line.split_whitespace().count() >= 10
            && line.trim_end().ends_with(['.', ':'])
            && !error_framed(line)
            && line.chars().next().is_some_and(char::is_alphabetic)
        {
            return true;
        }
    }
    false
}

static URL: Pattern = Pattern::new(r"https?://[^\s'\x22<>)]+");
static LLM_URL: Pattern = Pattern::new(
    r"(?x)^https?://(?:[^/\s]*\.)?(?:openai\.com|anthropic\.com|claude\.ai|x\.ai|openrouter\.ai|googleapis\.com|amazonaws\.com|azure\.com|githubcopilot\.com|mistral\.ai|groq\.com|together\.xyz|together\.ai|fireworks\.ai|cohere\.(?:ai|com)|deepseek\.com|perplexity\.ai|cerebras\.ai|moonshot\.(?:cn|ai)|bigmodel\.cn|aliyuncs\.com|nousresearch\.com|chatgpt\.com|ai\.google\.dev)(?:[:/]|$)
            | /(?:v1/)?(?:chat/completions|completions|messages|responses|embeddings)\b | :(?:stream)?[Gg]enerateContent\b",
);

/// For a generic match: the line names a URL that is neither a known LLM API
/// host nor an LLM API path (`https://huggingface.co/datasets/...`,
/// `https://registry.npmjs.org/...`): the failed request was the agent's own
/// tool's, not the provider's.
pub fn foreign_url(line: &str) -> Option<&'static str> {
    let (url, llm) = (&URL, &LLM_URL);
    let found: Vec<&str> = url.find_all(line);
    if !found.is_empty() && found.iter().all(|u| !llm.is_match(u)) {
        return Some("a request to a URL that is not an LLM API");
    }
    None
}

/// LLM-API context, one alternative per pattern, tried in order until one
/// matches: each is compiled only when reached, and the common ones (an
/// SDK's exception, a provider's name) come first, so a run that died of
/// a provider error rarely compiles more than two. As one alternation the
/// rule took ~0.4 MB for a moment to compile, the peak of the shim's
/// memory in such a run (kw-bench 2d).
static API_CONTEXT: [Pattern; 9] = [
    Pattern::new(
        r"\b(?:openai|anthropic|litellm|groq|mistralai|cohere|together|fireworks|google\.genai|google\.api_core|vertexai|botocore|ollama)\.[A-Za-z_.]*(?:Error|Exception)\b",
    ),
    Pattern::new(
        r"\b(?:APIStatusError|APIConnectionError|APITimeoutError|APIError|RateLimitError|InternalServerError|ServiceUnavailableError|OverloadedError|AuthenticationError|PermissionDeniedError|ThrottlingException|ServiceUnavailableException|ModelNotReadyException)\b",
    ),
    Pattern::new(
        r"(?i:\b(?:openai|anthropic|claude|gemini|codex|grok|x\.ai|mistral|deepseek|groq|qwen|ollama|openrouter|bedrock|vertex ?ai|copilot|cohere|together\.ai|fireworks|perplexity|cerebras|moonshot|kimi|litellm)\b|\bgpt-[0-9o]|\bglm-[0-9])",
    ),
    Pattern::new(r#"(?i:provider)["']?[ \t]*[:=]|\bmodel\b["']?[ \t]*[:=`]"#),
    Pattern::new(
        r"\bapi\.(?:openai|anthropic|x|mistral|groq|together|fireworks|cohere|deepseek|perplexity|cerebras|moonshot)\.(?:com|ai|xyz|cn)\b|\b(?:chatgpt\.com/backend-api|openrouter\.ai|generativelanguage\.googleapis\.com|aiplatform\.googleapis\.com|bedrock-runtime|openai\.azure\.com|api\.githubcopilot\.com|api\.deepseek\.com|dashscope|bigmodel\.cn)",
    ),
    Pattern::new(
        r"/v1/(?:chat/completions|completions|messages|responses|embeddings)\b|:(?:generateContent|streamGenerateContent)\b|\b(?:InvokeModel|Converse|ChatCompletions_Create)\b",
    ),
    Pattern::new(
        r"\bAPI call failed\b|\b[Rr]ate limited after\b|\bAPI [Ee]rror\b|\bAPI request failed\b|\b(?:Cannot|Unable to) connect to (?:API|host api\.)|\bAI_(?:APICallError|RetryError)\b",
    ),
    Pattern::new(r"\b(?:httpx|aiohttp|httpcore|urllib3)\.[A-Za-z_.]*(?:Error|Exception|Timeout)\b"),
    Pattern::new(
        r"\b(?:help\.openai\.com|platform\.openai\.com|docs\.anthropic\.com|docs\.claude\.com|ai\.google\.dev|console\.anthropic\.com|cloud\.google\.com/vertex-ai)",
    ),
];

/// Whether `frame` (a line and its neighbours) names an LLM provider or API.
pub fn has_api_context(frame: &str) -> bool {
    API_CONTEXT.iter().any(|p| p.is_match(frame))
}

/// The line at `start` with up to [`FRAME_LINES`] lines on each side.
/// Lines are taken whole, however long: a neighbour line left out would
/// hide what quotes the match (a Markdown heading above a long line of
/// JSON). The rules' work on a long frame stays linear: text over
/// [`NFA_MAX_HAYSTACK`] is searched with the lazy-DFA form.
pub fn frame_around(text: &str, start: usize, line_end: usize) -> &str {
    let mut from = start;
    for _ in 0..FRAME_LINES {
        if from == 0 {
            break;
        }
        from = text[..from - 1].rfind('\n').map_or(0, |i| i + 1);
    }
    let mut to = line_end;
    for _ in 0..FRAME_LINES {
        match text[to..].find('\n') {
            Some(nl) if to + nl + 1 < text.len() => {
                to = text[to + nl + 1..]
                    .find('\n')
                    .map_or(text.len(), |n| to + nl + 1 + n)
            }
            _ => {
                to = text.len();
                break;
            }
        }
    }
    &text[from..to]
}

/// Judges one matching line of a stream; `span` is where the signature
/// matched within `line`.
pub fn judge_line(
    text: &str,
    line_start: usize,
    line: &str,
    span: Option<std::ops::Range<usize>>,
    zone_start: usize,
    generic: bool,
) -> Result<(), Rejection> {
    if line_start < zone_start {
        return Err(Rejection::NotAtEnd);
    }
    if let Some(why) = quoted(line) {
        return Err(Rejection::Quoted(why));
    }
    if let Some(span) = span
        && in_inline_code(line, span)
    {
        return Err(Rejection::Quoted("inline code in prose"));
    }
    let frame = frame_around(text, line_start, line_start + line.len());
    if in_markdown_document(frame) {
        return Err(Rejection::Quoted("inside a Markdown document"));
    }
    if in_source_code(frame) {
        return Err(Rejection::Quoted("inside source code"));
    }
    if followed_by_narrative(&text[(line_start + line.len()).min(text.len())..]) {
        return Err(Rejection::Quoted("followed by a new paragraph of prose"));
    }
    if generic && let Some(host) = foreign_url(line) {
        return Err(Rejection::Quoted(host));
    }
    if generic && !has_api_context(frame) {
        return Err(Rejection::NoApiContext);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_zone_counts_non_blank_lines() {
        let text: String = (0..100).map(|i| format!("line {i}\n\n")).collect();
        let z = tail_zone_start(&text);
        assert!(text[z..].starts_with(&format!("line {}", 100 - TAIL_LINES)));
        assert_eq!(tail_zone_start("a\nb\n"), 0);
    }

    #[test]
    fn quoted_lines() {
        for (line, why) in [
            ("+    \"status_code\": 429,", "a diff line"),
            ("> HTTP 429 Too Many Requests", "Markdown"),
            ("## 402 - Payment Required", "Markdown"),
            (
                "    raise RateLimitError(\"Rate limit exceeded\")",
                "source code",
            ),
            ("if response.status_code == 429:", "source code"),
            ("tests/test_api.py::test_429_retry PASSED", "test output"),
            (
                "127.0.0.1 - - [05/Jul/2026 10:00:00] \"POST /v1/chat/completions HTTP/1.1\" 429 -",
                "an access-log line",
            ),
        ] {
            assert_eq!(quoted(line), Some(why), "{line}");
        }
        for line in [
            "openai.RateLimitError: Error code: 429 - {'error': {}}",
            "📝 Error: HTTP 429: The usage limit has been reached",
            "Error: 429 Too Many Requests",
            "❌ Rate limited after 3 retries — HTTP 429",
        ] {
            assert_eq!(quoted(line), None, "{line}");
        }
    }

    #[test]
    fn api_context() {
        assert!(has_api_context("🔌 Provider: openai-codex  Model: gpt-5"));
        assert!(has_api_context(
            "httpx.HTTPStatusError: Server error '529 ' for url 'https://api.anthropic.com/v1/messages'"
        ));
        assert!(!has_api_context(
            "npm ERR! 429 Too Many Requests - GET https://registry.npmjs.org/left-pad"
        ));
        assert!(!has_api_context("Error: HTTP 429 Too Many Requests"));
        // A space before the `=` or `:` (the rule once ignored it: written
        // in `(?x)` mode, `[ \t]` was `[\t]`).
        assert!(has_api_context(
            "request failed: provider = acme-llm, status 429"
        ));
        assert!(has_api_context(
            "retrying with model = \"acme-1\" after 429"
        ));
        assert!(has_api_context("provider\t= acme-llm"));
        assert!(!has_api_context(
            "the provider of this package = npm, status 429"
        ));
    }

    fn all_patterns() -> Vec<&'static Pattern> {
        QUOTED_RULES
            .iter()
            .map(|(p, _)| p)
            .chain([
                &EXPLAINS,
                &ERROR_FRAMED,
                &SOURCE_LINE,
                &MARKDOWN_DOCUMENT,
                &URL,
                &LLM_URL,
            ])
            .chain(&API_CONTEXT)
            .collect()
    }

    #[test]
    fn every_pattern_compiles_in_all_forms() {
        for p in all_patterns() {
            p.unicode();
            p.ascii();
            p.ascii_long();
        }
    }

    #[test]
    fn long_ascii_text_is_judged_as_short() {
        // The same line, padded past NFA_MAX_HAYSTACK: each form sees it.
        let pad = " ".repeat(NFA_MAX_HAYSTACK);
        for (line, why) in [
            ("- raise RateLimitError(429)", Some("a diff line")),
            ("assert response.status == 429", Some("source code")),
            ("tests/test_retry.py::test_429 PASSED", Some("test output")),
            ("openai.RateLimitError: Error code: 429", None),
        ] {
            assert_eq!(quoted(line), why, "{line}");
            let long = format!("{line}{pad}");
            assert_eq!(quoted(&long), why, "{line} + {} spaces", pad.len());
        }
        let frame = format!(
            "provider: openai\n{}\nHTTP 429",
            "x".repeat(NFA_MAX_HAYSTACK)
        );
        assert!(has_api_context(&frame));
        assert!(!has_api_context(
            &frame
                .replace("openai", "acme")
                .replace("provider", "source")
        ));
    }

    /// See [`Pattern`]: one Unicode class in an ASCII-mode pattern costs
    /// the UTF-8 compiler's ~314 KB map each time it compiles.
    #[test]
    fn no_pattern_compiles_a_unicode_class_in_ascii_mode() {
        use regex_syntax::hir::{Class, Hir, HirKind};
        fn unicode_class(h: &Hir) -> bool {
            match h.kind() {
                HirKind::Class(Class::Unicode(c)) => c.ranges().iter().any(|r| !r.end().is_ascii()),
                HirKind::Repetition(r) => unicode_class(&r.sub),
                HirKind::Capture(c) => unicode_class(&c.sub),
                HirKind::Concat(v) | HirKind::Alternation(v) => v.iter().any(unicode_class),
                _ => false,
            }
        }
        for p in all_patterns() {
            let hir = regex_syntax::ParserBuilder::new()
                .unicode(false)
                .utf8(false)
                .build()
                .parse(p.source);
            let hir = hir.unwrap_or_else(|e| panic!("{}: {e}", p.source));
            assert!(
                !unicode_class(&hir),
                "a Unicode class in ASCII mode: {}",
                p.source
            );
        }
        // The check sees the case it guards against.
        let folded = regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse("(?:✓|✔)");
        assert!(folded.is_ok_and(|h| unicode_class(&h)));
    }

    /// The ASCII form stands in for the Unicode one on ASCII text only:
    /// there both must find exactly the same matches, line by line and over
    /// frames of lines (for the multi-line patterns).
    #[test]
    fn ascii_forms_match_as_the_unicode_form_on_ascii_text() {
        let corpus = [
            include_str!("../tests/corpus/failures-major.yaml"),
            include_str!("../tests/corpus/failures-more.yaml"),
            include_str!("../tests/corpus/failures-hermes-022.yaml"),
            include_str!("../tests/corpus/lookalikes.yaml"),
            include_str!("../tests/fixtures/provider-errors.yaml"),
        ]
        .concat();
        let lines: Vec<&str> = corpus.lines().filter(|l| l.is_ascii()).collect();
        let frames: Vec<String> = lines
            .chunks(2 * FRAME_LINES + 1)
            .map(|c| c.join("\n"))
            .collect();
        let mut checked = 0;
        for p in all_patterns() {
            let (u, a, long) = (p.unicode(), p.ascii(), p.ascii_long());
            for hay in lines
                .iter()
                .copied()
                .chain(frames.iter().map(String::as_str))
            {
                let by_unicode: Vec<_> = u.find_iter(hay).map(|m| m.range()).collect();
                let by_ascii: Vec<_> = a.find_iter(hay.as_bytes()).map(|m| m.range()).collect();
                let by_long: Vec<_> = long.find_iter(hay.as_bytes()).map(|m| m.range()).collect();
                assert_eq!(by_unicode, by_ascii, "{} on {hay:?}", p.source);
                assert_eq!(by_unicode, by_long, "{} on {hay:?}", p.source);
                checked += usize::from(!by_unicode.is_empty());
            }
        }
        assert!(checked > 1_000, "only {checked} matches compared");
    }

    #[test]
    fn frames_reach_neighbouring_lines() {
        let text = "a\nb\nc\nd\ne\nf\ng\nX\nh\n";
        let start = text.find('X').unwrap_or(0);
        let f = frame_around(text, start, start + 1);
        assert!(f.starts_with("b\n") && f.contains("X\nh"), "{f:?}");
    }

    #[test]
    fn a_long_line_hides_nothing_that_quotes_a_match() {
        // A Markdown report: a heading, a long line of JSON, then the quoted
        // error as the report's last line. The heading is in the frame.
        let text = format!(
            "## What the API said\n{{\"data\": \"{}\"}}\nopenai.RateLimitError: Error code: 429\n",
            "x".repeat(3 * NFA_MAX_HAYSTACK)
        );
        let start = text.find("openai.").unwrap_or(0);
        let line_end = start + text[start..].find('\n').unwrap_or(0);
        let frame = frame_around(&text, start, line_end);
        assert!(
            frame.starts_with("## What the API said"),
            "{} bytes",
            frame.len()
        );
        assert!(in_markdown_document(frame));
        assert_eq!(
            judge_line(&text, start, &text[start..line_end], None, 0, true),
            Err(Rejection::Quoted("inside a Markdown document"))
        );
    }
}
