//! Every built-in signature against realistic texts, lookalikes that must not
//! match, and precedence between signatures.

use failure_signatures::{Catalogue, Classification, ClassifyContext, FailureClass};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use FailureClass::*;

/// 2026-05-04T00:00:00Z
const NOW: i64 = 1_777_852_800;

fn ctx() -> ClassifyContext {
    ClassifyContext::new(Timestamp::from_second(NOW).expect("valid"), TimeZone::UTC)
}

fn classify(text: &str) -> Option<Classification> {
    Catalogue::builtin().classify(text, &ctx())
}

/// (expected signature, text, class, provider)
const CASES: &[(&str, &str, FailureClass, Option<&str>)] = &[
    (
        "codex-usage-limit-reached",
        r#"{"type":"error","error":{"type":"usage_limit_reached","message":"The usage limit has been reached","plan_type":"plus","resets_at":1777936568}}"#,
        RateLimit,
        Some("openai-codex"),
    ),
    (
        "codex-usage-limit-reached",
        "📋 Details: {'type': 'usage_limit_reached', 'plan_type': 'team', 'resets_at': 1780861905}",
        RateLimit,
        Some("openai-codex"),
    ),
    (
        "codex-usage-limit",
        "HTTP 429: The usage limit has been reached. plan_type: team, resets_at: 1780861905",
        RateLimit,
        Some("openai-codex"),
    ),
    (
        "codex-cli-usage-limit",
        "■ You've hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), or try again at Jul 5th, 2026 8:19 PM.",
        RateLimit,
        Some("openai-codex"),
    ),
    (
        "codex-cli-usage-limit",
        "You’ve hit your usage limit. Try again in 5 days 22 hours 11 minutes.",
        RateLimit,
        Some("openai-codex"),
    ),
    (
        "codex-refresh-token-reused",
        "Your access token could not be refreshed because your refresh token was already used. Please log out and sign in again.",
        AuthExpired,
        Some("openai-codex"),
    ),
    (
        "codex-refresh-token-reused",
        r#"token refresh failed: 401 {"error":{"code":"refresh_token_reused"}}"#,
        AuthExpired,
        Some("openai-codex"),
    ),
    (
        "codex-auth-token-expired",
        "unexpected status 401 Unauthorized: Provided authentication token is expired. Please try signing in again.",
        AuthExpired,
        Some("openai-codex"),
    ),
    (
        "openai-request-too-large",
        "openai.RateLimitError: Error code: 429 - {'error': {'message': 'Request too large for gpt-4o in organization org-xxxx on tokens per min (TPM): Limit 30000, Requested 30601.', 'type': 'tokens', 'param': None, 'code': 'rate_limit_exceeded'}}",
        RequestTooLarge,
        Some("openai"),
    ),
    (
        "openai-context-length-exceeded",
        "openai.BadRequestError: Error code: 400 - {'error': {'message': \"This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens.\", 'type': 'invalid_request_error', 'code': 'context_length_exceeded'}}",
        RequestTooLarge,
        Some("openai"),
    ),
    (
        "openai-insufficient-quota",
        "openai.RateLimitError: Error code: 429 - {'error': {'message': 'You exceeded your current quota, please check your plan and billing details.', 'type': 'insufficient_quota', 'code': 'insufficient_quota'}}",
        Quota,
        Some("openai"),
    ),
    (
        "openai-billing-hard-limit",
        r#"{"error":{"message":"Billing hard limit has been reached","type":"invalid_request_error","code":"billing_hard_limit_reached"}}"#,
        Billing,
        Some("openai"),
    ),
    (
        "openai-incorrect-api-key",
        "openai.AuthenticationError: Error code: 401 - {'error': {'message': 'Incorrect API key provided: sk-abc**********wxyz. You can find your API key at https://platform.openai.com/account/api-keys.', 'type': 'invalid_request_error', 'code': 'invalid_api_key'}}",
        AuthInvalid,
        Some("openai"),
    ),
    (
        "openai-rate-limit-exceeded",
        "openai.RateLimitError: Error code: 429 - {'error': {'message': 'Rate limit reached for gpt-4 in organization org-xxxx on tokens per min (TPM): Limit 10000, Used 9348, Requested 5086. Please try again in 26.604s.', 'type': 'tokens', 'param': None, 'code': 'rate_limit_exceeded'}}",
        RateLimit,
        Some("openai"),
    ),
    (
        "codex-stream-rate-limit",
        "stream disconnected before completion: Rate limit reached for gpt-5 in organization org-xxxx on tokens per min (TPM): Limit 30000, Used 29000. Please try again in 644ms.",
        RateLimit,
        Some("openai-codex"),
    ),
    (
        "anthropic-prompt-too-long",
        r#"API Error: 400 {"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210563 tokens > 200000 maximum"}}"#,
        RequestTooLarge,
        Some("anthropic"),
    ),
    (
        "anthropic-request-too-large",
        r#"anthropic.APIStatusError: Error code: 413 - {'type': 'error', 'error': {'type': 'request_too_large', 'message': 'Request exceeds the maximum allowed number of bytes.'}}"#,
        RequestTooLarge,
        Some("anthropic"),
    ),
    (
        "anthropic-oauth-expired",
        r#"API Error: 401 {"type":"error","error":{"type":"authentication_error","message":"OAuth token has expired. Please obtain a new token or refresh your existing token."}}"#,
        AuthExpired,
        Some("anthropic"),
    ),
    (
        "anthropic-invalid-api-key",
        r#"Invalid API key · Please run /login {"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        AuthInvalid,
        Some("anthropic"),
    ),
    (
        "anthropic-credit-balance-low",
        "anthropic.BadRequestError: Error code: 400 - {'type': 'error', 'error': {'type': 'invalid_request_error', 'message': 'Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.'}}",
        Billing,
        Some("anthropic"),
    ),
    (
        "anthropic-rate-limit-error",
        "anthropic.RateLimitError: Error code: 429 - {'type': 'error', 'error': {'type': 'rate_limit_error', 'message': \"This request would exceed your account's rate limit. Please try again later.\"}}",
        RateLimit,
        Some("anthropic"),
    ),
    (
        "anthropic-overloaded-error",
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        Overloaded,
        Some("anthropic"),
    ),
    (
        "anthropic-529",
        "anthropic.APIStatusError: Error code: 529 - Overloaded",
        Overloaded,
        Some("anthropic"),
    ),
    (
        "claude-usage-limit",
        "Claude AI usage limit reached|1777870800",
        RateLimit,
        Some("anthropic"),
    ),
    (
        "claude-usage-limit",
        "5-hour limit reached ∙ resets 3pm (Europe/Lisbon)",
        RateLimit,
        Some("anthropic"),
    ),
    (
        "xai-oauth-missing-token",
        "RuntimeError: xAI OAuth state is missing access_token. Re-authenticate with `hermes model`.",
        AuthExpired,
        Some("xai-oauth"),
    ),
    (
        "xai-too-many-tokens",
        r#"429 "Too many tokens for team 00000000-0000-0000-0000-000000000000 and model grok-4-0709. Your team's rate limit is - Tokens per Minute (actual/limit): 65605/16000.""#,
        RateLimit,
        Some("xai"),
    ),
    (
        "openrouter-upstream-rate-limited",
        r#"{"error":{"code":429,"message":"Provider returned error","metadata":{"provider_name":"Chutes","raw":"qwen/qwen3-coder:free is temporarily rate-limited upstream. Please retry shortly."}}}"#,
        RateLimit,
        Some("openrouter"),
    ),
    (
        "openrouter-more-credits",
        r#"{"error":{"message":"This request requires more credits, or fewer max_tokens. You requested up to 8192 tokens, but can only afford 1024.","code":402}}"#,
        Billing,
        Some("openrouter"),
    ),
    (
        "gemini-daily-quota",
        r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"3600s"}]}}"#,
        Quota,
        Some("gemini"),
    ),
    (
        "gemini-resource-exhausted",
        r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#,
        RateLimit,
        Some("gemini"),
    ),
    (
        "gemini-quota-exceeded",
        "Quota exceeded for quota metric 'Gemini 2.5 Pro Requests' and limit 'Gemini 2.5 Pro Requests per day per user per tier'",
        Quota,
        Some("gemini"),
    ),
    (
        "gemini-api-key-invalid",
        r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}"#,
        AuthInvalid,
        Some("gemini"),
    ),
    (
        "hermes-rate-limited-after-retries",
        "❌ Rate limited after 3 retries — giving up on this turn",
        RateLimit,
        None,
    ),
    (
        "oauth-state-missing-token",
        "RuntimeError: Nous OAuth state is missing refresh_token.",
        AuthExpired,
        None,
    ),
    (
        "exceeded-current-quota",
        "Error: You exceeded your current quota, please check your plan and billing details.",
        Quota,
        None,
    ),
    (
        "insufficient-credits",
        "Error 402: Insufficient Balance",
        Billing,
        None,
    ),
    (
        "generic-http-429",
        "⚠️  API call failed (attempt 1/3): [HTTP 429]",
        RateLimit,
        None,
    ),
    ("generic-http-429", "HTTP/1.1 429", RateLimit, None),
    (
        "generic-http-429",
        "request failed: status_code=429",
        RateLimit,
        None,
    ),
    (
        "generic-http-429",
        r#"{"error":{"code": 429}}"#,
        RateLimit,
        None,
    ),
    ("generic-http-429", "Error code: 429", RateLimit, None),
    (
        "generic-http-429",
        "urllib.error.HTTPError: HTTP Error 429: Too Many Requests",
        RateLimit,
        None,
    ),
    (
        "generic-http-429",
        "API call failed after 3 retries: HTTP 429: slow down",
        RateLimit,
        None,
    ),
    ("generic-http-429", "< HTTP/2 429 ", RateLimit, None),
    (
        "generic-http-429",
        r#"error="HTTP 429 {\"error\":\"busy\"}""#,
        RateLimit,
        None,
    ),
    (
        "codex-status-429",
        "exceeded retry limit, last status: 429 Too Many Requests",
        RateLimit,
        Some("openai-codex"),
    ),
    (
        "generic-too-many-requests",
        "reqwest::Error { kind: Status(429), url: \"https://llm.example.invalid/v1/chat/completions\" }: 429 Too Many Requests",
        RateLimit,
        None,
    ),
    (
        "generic-too-many-requests",
        "Too Many Requests",
        RateLimit,
        None,
    ),
    (
        "generic-rate-limit-error",
        "RateLimitError: slow down",
        RateLimit,
        None,
    ),
    (
        "generic-rate-limit-exceeded",
        "Rate limit exceeded: slow down",
        RateLimit,
        None,
    ),
    (
        "generic-overloaded",
        "Error: Service is currently overloaded, try again later",
        Overloaded,
        None,
    ),
    (
        "generic-overloaded",
        "HTTP 503 Service Unavailable",
        Overloaded,
        None,
    ),
    (
        "generic-server-error",
        "HTTP 500: Internal Server Error",
        ServerError,
        None,
    ),
    (
        "anthropic-api-error",
        "anthropic.InternalServerError: Error code: 500 - {'type': 'error', 'error': {'type': 'api_error', 'message': 'Internal server error'}}",
        ServerError,
        Some("anthropic"),
    ),
    (
        "network-connection",
        "httpx.ConnectError: [Errno 111] Connection refused",
        Network,
        None,
    ),
    (
        "network-connection",
        "Error: read ECONNRESET",
        Network,
        None,
    ),
    (
        "network-connection",
        "socket.gaierror: [Errno -3] Temporary failure in name resolution",
        Network,
        None,
    ),
    (
        "network-connection",
        "openai.APIConnectionError: Connection error.",
        Network,
        Some("openai"),
    ),
    (
        "network-timeout",
        "openai.APITimeoutError: Request timed out.",
        Network,
        Some("openai"),
    ),
    (
        "network-timeout",
        "API call failed: ReadTimeout while waiting for https://api.x.ai/v1/chat/completions",
        Network,
        Some("xai"),
    ),
];

#[test]
fn every_builtin_signature_matches_its_examples() {
    let mut failures = Vec::new();
    let cat = Catalogue::builtin();
    for (sig, text, class, provider) in CASES {
        // A generic signature counts only with LLM-API context around it.
        let generic = cat.get(sig).is_some_and(|s| s.generic());
        let text = if generic {
            format!("POST /v1/chat/completions\n{text}")
        } else {
            text.to_string()
        };
        match classify(&text) {
            None => failures.push(format!("{sig}: no match for {text:?}")),
            Some(c) => {
                if c.signature != *sig || c.class != *class || c.provider.as_deref() != *provider {
                    failures.push(format!(
                        "{sig}: expected ({class}, {provider:?}), got {} ({}, {:?}) for {text:?}",
                        c.signature, c.class, c.provider
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_builtin_signature_has_an_example() {
    let cat = Catalogue::builtin();
    let missing: Vec<&str> = cat
        .signatures()
        .filter(|sig| sig.examples().is_empty() && !CASES.iter().any(|(s, ..)| *s == sig.name()))
        .map(|sig| sig.name())
        .collect();
    assert!(
        missing.is_empty(),
        "signatures without a test case: {missing:?}"
    );
}

#[test]
fn builtin_covers_every_class() {
    let cat = Catalogue::builtin();
    for class in FailureClass::ALL {
        assert!(
            cat.signatures().any(|s| s.class() == class),
            "no built-in signature for {class}"
        );
    }
}

#[test]
fn builtin_names_are_unique_and_patterns_valid() {
    let cat = Catalogue::builtin();
    assert!(cat.len() >= 30, "only {} built-ins", cat.len());
    let mut names: Vec<&str> = cat.names().collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cat.len());
    for sig in cat.signatures() {
        let re = regex::Regex::new(sig.pattern())
            .unwrap_or_else(|e| panic!("{}: invalid pattern: {e}", sig.name()));
        assert!(!re.is_match(""), "{} matches empty text", sig.name());
    }
    // Every embedded part also passes the strict user-catalogue validation.
    let mut strict = 0;
    for (origin, yaml) in Catalogue::builtin_sources() {
        strict += Catalogue::from_yaml_str(yaml, origin)
            .unwrap_or_else(|e| panic!("{origin}: {e}"))
            .len();
    }
    assert_eq!(strict, cat.len());
}

/// Each built-in signature carries `examples:` in its YAML: real texts it
/// must win on, each judged alone with the evidence rules.
#[test]
fn every_builtin_signature_wins_on_its_yaml_examples() {
    let cat = Catalogue::builtin();
    let mut failures = Vec::new();
    for sig in cat.signatures() {
        for example in sig.examples() {
            match cat.classify(example, &ctx()) {
                Some(c) if c.signature == sig.name() => {}
                Some(c) => failures.push(format!(
                    "{}: example won by {} ({}): {example:?}",
                    sig.name(),
                    c.signature,
                    c.class
                )),
                None => failures.push(format!(
                    "{}: example not classified: {example:?}",
                    sig.name()
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A class that needs a human (re-auth, billing) never comes from a generic
/// signature: a bare status code or reason phrase cannot hold a provider
/// until someone acts.
#[test]
fn no_generic_signature_needs_a_human() {
    for sig in Catalogue::builtin().signatures() {
        let needs_human = matches!(sig.class(), AuthExpired | AuthInvalid | Billing)
            || (sig.class() == Quota && !sig.transient());
        assert!(
            !(needs_human && sig.generic()),
            "{} is generic but of class {}",
            sig.name(),
            sig.class()
        );
    }
}

#[test]
fn transient_flags() {
    let t = |text: &str| classify(text).expect("classified").transient;
    // Generic signatures need LLM-API context around them.
    let api = |text: &str| format!("POST /v1/chat/completions\n{text}");
    assert!(t(&api("HTTP 429")));
    assert!(t(r#"{"type":"overloaded_error"}"#));
    assert!(t(&api("read ECONNRESET")));
    assert!(t(&api("HTTP 502 Bad Gateway")));
    assert!(!t("'code': 'insufficient_quota'"));
    assert!(!t("Request too large for gpt-4o in organization org-x"));
    assert!(!t("OAuth token has expired."));
    // A bare 401 names no provider: no signature may hold one until re-auth on it.
    assert!(classify(&api("HTTP 401 Unauthorized")).is_none());
    assert!(!t(
        "Your credit balance is too low to access the Anthropic API."
    ));
}

#[test]
fn lookalikes_do_not_match() {
    let texts = [
        "test result: ok. 429 passed; 0 failed; 0 ignored",
        "running 429 tests",
        "GET /api/items/429 HTTP/1.1 200 OK",
        "127.0.0.1 - - [05/Jul/2026:20:19:00 +0000] \"GET /orders/429 HTTP/1.1\" 200 512",
        "see https://example.com/issues/429 and http://host:8080/429/detail?page=429",
        "Fixed #429: typo in README",
        "we should add a rate limiter to the API client",
        "The rate limit for this endpoint is documented in docs/limits.md",
        "Implement retry with exponential backoff when the provider returns too many requests",
        "test api::tests::rate_limit_exceeded ... ok",
        "test client::usage_limit_reached_is_retried ... ok",
        "test codex::tests::usage_limit_reached ... ok",
        "test gemini::resource_exhausted_maps_to_rate_limit ... ok",
        "except RateLimitError:",
        "    raise RateLimitError(msg)",
        "error: 0 errors, 429 warnings",
        "Compiling tokio v1.0.429",
        "elapsed: 429ms",
        "task-429 risk-free tokens: 429",
        "the server handled 503 requests per second",
        // Agent prose about HTTP statuses (workers are coding agents).
        "I'll add handling for HTTP 429 responses with exponential backoff.",
        "Retry on HTTP 503 errors, and treat http 401 as fatal.",
        "The error code 429 means the client should slow down.",
        "Add a test where the mock returns status 429 twice.",
        "a timeout occurred in the test harness",
        "",
        "   \n\n  ",
    ];
    for text in texts {
        if let Some(c) = classify(text) {
            panic!("{text:?} matched {} ({})", c.signature, c.class);
        }
    }
}

#[test]
fn lookalike_lines_around_a_real_failure_do_not_change_the_result() {
    let text = "test result: ok. 429 passed; 0 failed\nGET /api/items/429 HTTP/1.1 200 OK\nanthropic.RateLimitError: Error code: 429 - {'type': 'error', 'error': {'type': 'rate_limit_error'}}\n";
    let c = classify(text).expect("classified");
    assert_eq!(c.signature, "anthropic-rate-limit-error");
    assert!(c.matched_line.starts_with("anthropic.RateLimitError"));
}

const HERMES_BLOCK: &str = "\
⚠️  API call failed (attempt 1/3): RateLimitError [HTTP 429]
🔌 Provider: openai-codex  Model: gpt-5
📝 Error: HTTP 429: The usage limit has been reached
📋 Details: {'type': 'usage_limit_reached', 'message': 'The usage limit has been reached', 'plan_type': 'team', 'resets_at': 1780861905, 'resets_in_seconds': 3600}
❌ Rate limited after 3 retries — ...
API call failed after 3 retries: HTTP 429: The usage limit has been reached
";

#[test]
fn hermes_stdout_block() {
    let c = classify(HERMES_BLOCK).expect("classified");
    assert_eq!(c.class, RateLimit);
    assert_eq!(c.signature, "codex-usage-limit-reached");
    assert_eq!(c.provider.as_deref(), Some("openai-codex"));
    assert!(c.transient);
    assert_eq!(c.resets_at, Some(1_780_861_905));
    assert_eq!(c.retry_after_s, Some((1_780_861_905 - NOW) as f64));
    assert!(
        c.matched_line
            .starts_with("📋 Details: {'type': 'usage_limit_reached'")
    );
}

#[test]
fn hermes_block_with_only_generic_lines_infers_provider_and_reset() {
    // Without the codex-specific lines, the generic ones win; the provider
    // comes from the "🔌 Provider:" line and the reset from the Details line.
    let text = "\
⚠️  API call failed (attempt 1/3): RateLimitError [HTTP 429]
🔌 Provider: xai  Model: grok-4
📋 Details: {'resets_in_seconds': 120}
";
    let c = classify(text).expect("classified");
    assert_eq!(c.class, RateLimit);
    assert_eq!(c.provider.as_deref(), Some("xai"));
    assert_eq!(c.retry_after_s, Some(120.0));
    assert_eq!(c.resets_at, Some(NOW + 120));
}

#[test]
fn errors_log_provider_inference() {
    let text = "2026-05-04 00:00:01 ERROR agent.run provider=xai model=grok-4 error=\"HTTP 429 Too Many Requests\"";
    let c = classify(text).expect("classified");
    assert_eq!(c.class, RateLimit);
    assert_eq!(c.provider.as_deref(), Some("xai"));
}

#[test]
fn hermes_gateway_xai_line() {
    let text = "2026-05-04 00:00:01,123 ERROR gateway: RuntimeError: xAI OAuth state is missing access_token. Re-authenticate with `hermes model`.";
    let c = classify(text).expect("classified");
    assert_eq!(c.class, AuthExpired);
    assert_eq!(c.provider.as_deref(), Some("xai-oauth"));
    assert!(!c.transient);
}

// --- precedence -------------------------------------------------------------

#[test]
fn request_too_large_beats_rate_limit_exceeded_on_the_same_line() {
    let c = classify("'message': 'Request too large for gpt-4o in organization org-x', 'code': 'rate_limit_exceeded'").expect("classified");
    assert_eq!(c.class, RequestTooLarge);
    assert_eq!(c.signature, "openai-request-too-large");
}

#[test]
fn specific_beats_generic_anywhere_in_the_text() {
    // The generic 429 line comes last, the specific one first.
    let text = "'code': 'insufficient_quota'\nsomething else\nHTTP 429 Too Many Requests\n";
    let c = classify(text).expect("classified");
    assert_eq!(c.signature, "openai-insufficient-quota");
    assert_eq!(c.matched_line, "'code': 'insufficient_quota'");
}

#[test]
fn gemini_beats_the_shared_quota_sentence() {
    let text = r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.","status":"RESOURCE_EXHAUSTED"}}"#;
    let c = classify(text).expect("classified");
    assert_eq!(c.signature, "gemini-resource-exhausted");
    assert_eq!(c.class, RateLimit);
}

#[test]
fn provider_specific_beats_provider_neutral_at_equal_priority() {
    let yaml = r"
signatures:
  - name: neutral
    class: rate_limit
    priority: 5
    pattern: 'slow down please and thank you'
  - name: specific
    class: rate_limit
    provider: acme
    priority: 5
    pattern: 'slow down'
";
    let cat = Catalogue::from_yaml_str(yaml, "test").expect("valid");
    let c = cat
        .classify("slow down please and thank you", &ctx())
        .expect("classified");
    assert_eq!(c.signature, "specific");
}

#[test]
fn longer_pattern_then_catalogue_order_break_ties() {
    let yaml = r"
signatures:
  - name: short
    class: rate_limit
    pattern: 'slow down'
  - name: long
    class: overloaded
    pattern: 'slow down now'
  - name: long-twin
    class: network
    pattern: 'slow (down) now'
  - name: long-first
    class: quota
    pattern: 'slow down (now)'
";
    let cat = Catalogue::from_yaml_str(yaml, "test").expect("valid");
    let c = cat
        .classify("please slow down now", &ctx())
        .expect("classified");
    // long-twin and long-first have the same length (15) and beat "long" (13);
    // long-twin comes first in the catalogue.
    assert_eq!(c.signature, "long-twin");
    let c = cat
        .classify("please slow down", &ctx())
        .expect("classified");
    assert_eq!(c.signature, "short");
}

#[test]
fn the_last_matching_line_of_the_winner_is_reported() {
    let text = "POST /v1/chat/completions\nHTTP 429: first try: try again in 10s\nok\nHTTP 429: second try: try again in 20s\n";
    let c = classify(text).expect("classified");
    assert_eq!(c.matched_line, "HTTP 429: second try: try again in 20s");
    assert_eq!(c.retry_after_s, Some(20.0));
}

#[test]
fn matched_line_is_trimmed_redacted_and_capped() {
    let long = format!(
        "   HTTP 429: api.openai.com: Authorization: Bearer sk-abcdefghijklmnop1234567890 {}   ",
        "x".repeat(3000)
    );
    let c = classify(&long).expect("classified");
    assert!(
        c.matched_line
            .starts_with("HTTP 429: api.openai.com: Authorization: Bearer [REDACTED] x")
    );
    assert_eq!(c.matched_line.len(), 1024);
    assert!(!c.matched_line.contains("sk-abc"));

    // Multi-byte characters at the cap are not split.
    let long = format!("HTTP 429 (api.openai.com): {}", "é".repeat(1000));
    let c = classify(&long).expect("classified");
    assert!(c.matched_line.len() <= 1024);
    assert!(c.matched_line.len() >= 1022);
}

#[test]
fn crlf_line_endings() {
    let c = classify("noise\r\nHTTP 429 Too Many Requests from api.openai.com\r\nmore\r\n")
        .expect("classified");
    assert_eq!(
        c.matched_line,
        "HTTP 429 Too Many Requests from api.openai.com"
    );
}

#[test]
fn classification_round_trips_through_serde() {
    let c = classify(HERMES_BLOCK).expect("classified");
    let yaml = serde_yaml::to_string(&c).expect("serialize");
    assert!(yaml.contains("class: rate_limit"));
    let back: Classification = serde_yaml::from_str(&yaml).expect("deserialize");
    assert_eq!(back, c);
}

#[test]
fn failure_class_names() {
    for class in FailureClass::ALL {
        let parsed: FailureClass = class.as_str().parse().expect("round trip");
        assert_eq!(parsed, class);
        assert_eq!(class.to_string(), class.as_str());
        let yaml = serde_yaml::to_string(&class).expect("serialize");
        assert_eq!(yaml.trim(), class.as_str());
    }
    assert!("rate-limit".parse::<FailureClass>().is_err());
    assert_eq!(RateLimit.as_str(), "rate_limit");
    assert_eq!(RequestTooLarge.as_str(), "request_too_large");
    let transient: Vec<_> = FailureClass::ALL
        .into_iter()
        .filter(FailureClass::default_transient)
        .collect();
    assert_eq!(
        transient,
        vec![RateLimit, Quota, Overloaded, Network, ServerError]
    );
}

#[test]
fn classifies_64k_plus_8k_of_noisy_output() {
    // Head (64 KiB) and tail (8 KiB) of a noisy log with emoji, the failure at the end.
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 64 * 1024 {
        text.push_str(&format!(
            "🔧 step {i}: compiling crate-{i} … test result: ok. {i} passed; GET /api/items/{i} HTTP/1.1 200 OK\n"
        ));
        i += 1;
    }
    text.push_str(&"x".repeat(8 * 1024 - 200));
    text.push('\n');
    text.push_str(HERMES_BLOCK);
    let cat = Catalogue::builtin();
    let ctx = ctx();
    assert!(cat.classify(&text, &ctx).is_some()); // compile once
    // How fast is measured by scripts/bench (as a ratio against a baseline
    // in the same run), never asserted here.
    let c = cat.classify(&text, &ctx).expect("classified");
    assert_eq!(c.class, FailureClass::RateLimit);
}
