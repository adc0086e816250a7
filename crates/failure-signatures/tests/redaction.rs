//! Redaction of every secret form, and ordinary text left alone.

use std::borrow::Cow;

use failure_signatures::redact;
use failure_signatures::redact::REDACTED;

fn r(text: &str) -> String {
    let once = redact(text).into_owned();
    // Idempotent on every example.
    assert_eq!(redact(&once), once, "not idempotent for {text:?}");
    once
}

#[track_caller]
fn check(input: &str, expected: &str) {
    assert_eq!(r(input), expected, "input: {input:?}");
}

#[test]
fn authorization_headers() {
    check(
        "Authorization: Bearer abc.DEF-123_xyz",
        "Authorization: Bearer [REDACTED]",
    );
    check(
        "authorization: bearer abc.DEF-123_xyz",
        "authorization: bearer [REDACTED]",
    );
    check(
        "AUTHORIZATION:Basic dXNlcjpwYXNzd29yZA==",
        "AUTHORIZATION:Basic [REDACTED]",
    );
    check(
        "Proxy-Authorization: Basic dXNlcjpwYXNz",
        "Proxy-Authorization: Basic [REDACTED]",
    );
    check(
        r#"headers={"Authorization": "Bearer sk-abcdefghijklmnopqrstuvwx", "Accept": "*/*"}"#,
        r#"headers={"Authorization": "Bearer [REDACTED]", "Accept": "*/*"}"#,
    );
    check(
        "{'authorization': 'Token 0123456789abcdef'}",
        "{'authorization': 'Token [REDACTED]'}",
    );
    check(
        "Authorization: opaque-token-42",
        "Authorization: [REDACTED]",
    );
}

#[test]
fn bare_bearer_tokens() {
    check(
        "curl -H 'x: Bearer eyJhbGciOiJIUzI1NiJ9' https://api",
        "curl -H 'x: Bearer [REDACTED]' https://api",
    );
    check("using bearer abcdefgh1234", "using bearer [REDACTED]");
    // Ordinary words after "bearer" are not tokens.
    check("the bearer of bad news", "the bearer of bad news");
    check(
        "Bearer authentication failed",
        "Bearer authentication failed",
    );
}

#[test]
fn api_keys_by_prefix() {
    check(
        "key sk-abcdefghijklmnopqrstuvwxyz012345 used",
        "key sk-[REDACTED] used",
    );
    check(
        "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz_0123-456",
        "sk-proj-[REDACTED]",
    );
    check(
        "ANTHROPIC_API_KEY=sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-abcdefAA",
        "ANTHROPIC_API_KEY=sk-ant-[REDACTED]",
    );
    check(
        "sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "sk-or-v1-[REDACTED]",
    );
    check(
        "xai-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz01234567890123",
        "xai-[REDACTED]",
    );
    check(
        "https://generativelanguage.googleapis.com/v1beta/models?key=AIzaSyA-0123456789abcdefghijklmnopqrstu",
        "https://generativelanguage.googleapis.com/v1beta/models?key=AIza[REDACTED]",
    );
    check(
        "remote: ghp_0123456789abcdefghijklmnopqrstuvwxyz",
        "remote: ghp_[REDACTED]",
    );
    check(
        "token github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUV",
        "token github_pat_[REDACTED]",
    );
    // Inside a Python dict value (the key prefix is kept, like elsewhere).
    check(
        "{'api_key': 'sk-abcdefghijklmnopqrstuvwxyz'}",
        "{'api_key': 'sk-[REDACTED]'}",
    );
}

#[test]
fn jwts() {
    let jwt = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwiZXhwIjoxNzAwMDAwMDAwfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    check(&format!("id: {jwt} end"), "id: [REDACTED] end");
    // Unsigned JWT (empty signature).
    check("t=eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "t=[REDACTED]");
}

#[test]
fn key_value_secrets() {
    // JSON
    check(
        r#"{"access_token": "ya29.a0AfH6SMBx", "token_type": "Bearer", "expires_in": 3599}"#,
        r#"{"access_token": "[REDACTED]", "token_type": "Bearer", "expires_in": 3599}"#,
    );
    check(
        r#"{"refresh_token":"1//0gAbCdEf","id_token":"abc.def"}"#,
        r#"{"refresh_token":"[REDACTED]","id_token":"[REDACTED]"}"#,
    );
    check(
        r#"{"client_secret": "GOCSPX-abc def", "password": "p@ss w0rd"}"#,
        r#"{"client_secret": "[REDACTED]", "password": "[REDACTED]"}"#,
    );
    // Python dict
    check(
        "{'access_token': 'abc123', 'secret': 'shh'}",
        "{'access_token': '[REDACTED]', 'secret': '[REDACTED]'}",
    );
    // key=value and key: value
    check(
        "login password=hunter2 user=bob",
        "login password=[REDACTED] user=bob",
    );
    check("apikey=abcdef123456", "apikey=[REDACTED]");
    check("api-key: abcdef123456", "api-key: [REDACTED]");
    check("x-api-key: abcdef123456", "x-api-key: [REDACTED]");
    check("token: abcdef123456", "token: [REDACTED]");
    check("SECRET = abc", "SECRET = [REDACTED]");
    // Prefixed names (environment variables, struct fields).
    check("OPENAI_API_KEY=abc123", "OPENAI_API_KEY=[REDACTED]");
    check("db_password: hunter2", "db_password: [REDACTED]");
    check("GITHUB_TOKEN=abc123", "GITHUB_TOKEN=[REDACTED]");
    // URL query parameters.
    check(
        "GET https://host/cb?code=1&access_token=abc123&state=xyz HTTP/1.1",
        "GET https://host/cb?code=1&access_token=[REDACTED]&state=xyz HTTP/1.1",
    );
    check(
        "https://host/x?api_key=abc123#frag",
        "https://host/x?api_key=[REDACTED]#frag",
    );
    // JSON escaped inside a string.
    check(
        r#""body": "{\"access_token\":\"abc123\"}""#,
        r#""body": "{\"access_token\":\"[REDACTED]\"}""#,
    );
    // Null-ish values are not secrets.
    check("{'token': None}", "{'token': None}");
    check(
        r#"{"password": null, "secret": ""}"#,
        r#"{"password": null, "secret": ""}"#,
    );
}

#[test]
fn hermes_details_line_survives() {
    let line = "📋 Details: {'type': 'usage_limit_reached', 'message': 'The usage limit has been reached', 'plan_type': 'team', 'resets_at': 1780861905, 'resets_in_seconds': 3600}";
    assert!(matches!(redact(line), Cow::Borrowed(_)));
    let line = "RuntimeError: xAI OAuth state is missing access_token. Re-authenticate with `hermes model`.";
    assert!(matches!(redact(line), Cow::Borrowed(_)));
}

#[test]
fn ordinary_text_is_untouched_and_borrowed() {
    let texts = [
        "task-123 is risk-free",
        "sk",
        "sk-",
        "sk-short",
        "disk-0123456789abcdefghijkl",
        "ask-0123456789abcdefghijkl",
        "xai-oauth",
        "provider xai-oauth failed",
        "max_tokens: 4096, total_tokens=5, 'type': 'tokens'",
        "Tokens per Minute (actual/limit): 65605/16000",
        "refresh token was already used",
        "the token is missing",
        "password:",
        "passwords are hashed",
        "AIza",
        "eyJ alone",
        "GET /api/items/429 HTTP/1.1 200 OK",
        "🔌 Provider: openai-codex  Model: gpt-5",
        "",
    ];
    for t in texts {
        match redact(t) {
            Cow::Borrowed(b) => assert_eq!(b, t),
            Cow::Owned(o) => panic!("{t:?} was changed to {o:?}"),
        }
    }
}

#[test]
fn changed_text_is_owned_and_multiple_secrets_per_line() {
    let text = "a sk-abcdefghijklmnopqrstuvwxyz b Authorization: Bearer zzz999zzz c password=x";
    let out = redact(text);
    assert!(matches!(out, Cow::Owned(_)));
    assert_eq!(
        out,
        "a sk-[REDACTED] b Authorization: Bearer [REDACTED] c password=[REDACTED]"
    );
    assert_eq!(out.matches(REDACTED).count(), 3);
}

#[test]
fn multi_line_text() {
    let text = "line one\nAuthorization: Bearer abc123456\npassword:\nnext line token=abc\n";
    check(
        text,
        "line one\nAuthorization: Bearer [REDACTED]\npassword:\nnext line token=[REDACTED]\n",
    );
}
