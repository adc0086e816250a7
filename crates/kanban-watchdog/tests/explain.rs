//! `kanban-watchdog explain`, run as a process: the operator's
//! fail2ban-regex for provider failures, with and without a user catalogue.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const WATCHDOG: &str = env!("CARGO_BIN_EXE_kanban-watchdog");
const NOW: &str = "1780858305";

fn explain(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(WATCHDOG)
        .arg("explain")
        .args(["--now", NOW, "--tz", "UTC"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kanban-watchdog starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("explain finishes")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const HERMES_429: &str = "working on the task\n\
⚠️  API call failed (attempt 3/3): RateLimitError [HTTP 429]\n\
   🔌 Provider: openai-codex  Model: gpt-5-codex\n\
   📝 Error: HTTP 429: The usage limit has been reached. plan_type: team, resets_at: 1780861905\n";

#[test]
fn a_real_failure_names_its_signature_line_provider_and_reset() {
    let o = explain(&[], HERMES_429);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("verdict: rate_limit (transient"), "{text}");
    assert!(text.contains("codex-usage-limit"), "{text}");
    assert!(text.contains("provider: openai-codex"), "{text}");
    assert!(text.contains("stdin:4:"), "{text}");
    assert!(text.contains("2026-06-07T19:51:45Z"), "{text}");
    // Why the generic candidates lost.
    assert!(text.contains("OUTRANKED"), "{text}");
}

#[test]
fn a_quoted_error_is_rejected_and_the_reason_is_said() {
    let diff = "diff --git a/tests/fixtures/errors.json b/tests/fixtures/errors.json\n\
@@ -1,3 +1,4 @@\n\
+  {\"type\": \"error\", \"error\": {\"type\": \"rate_limit_error\", \"message\": \"Rate limit exceeded\"}},\n";
    let o = explain(&[], diff);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("no failure the run died of"), "{text}");
    assert!(text.contains("REJECTED"), "{text}");
    assert!(text.contains("a diff line"), "{text}");
}

#[test]
fn an_early_mention_is_listed_but_does_not_count() {
    let mut text = String::from("📝 Error: HTTP 429: The usage limit has been reached.\n");
    for i in 0..60 {
        text.push_str(&format!("fixed module {i}, tests pass\n"));
    }
    let o = explain(&[], &text);
    let s = out(&o);
    assert_eq!(o.status.code(), Some(1), "{s}");
    assert!(s.contains("not among the last 40 lines"), "{s}");
}

#[test]
fn a_user_catalogue_is_tested_before_it_is_deployed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = dir.path().join("my.yaml");
    std::fs::write(
        &user,
        "signatures:\n  - name: my-proxy-busy\n    class: overloaded\n    provider: my-proxy\n    priority: 100\n    pattern: 'proxy says: upstream saturated'\n",
    )
    .expect("write catalogue");
    let line = "Error: proxy says: upstream saturated, try later\n";
    // Built-ins alone do not know it.
    assert_eq!(explain(&[], line).status.code(), Some(1));
    for extra in [&[][..], &["--no-builtin"][..]] {
        let mut args = vec!["--signatures", user.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        let o = explain(&args, line);
        let s = out(&o);
        assert_eq!(o.status.code(), Some(0), "{s}");
        assert!(s.contains("my-proxy-busy"), "{s}");
        assert!(s.contains("provider: my-proxy"), "{s}");
    }
    let o = explain(&["--signatures", user.to_str().expect("utf-8")], "");
    assert!(out(&o).contains("in all"), "{}", out(&o));
}

#[test]
fn a_broken_catalogue_names_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = dir.path().join("broken.yaml");
    std::fs::write(
        &user,
        "signatures:\n  - name: bad\n    class: rate_limit\n    pattern: '(unclosed'\n",
    )
    .expect("write catalogue");
    let o = explain(&["--signatures", user.to_str().expect("utf-8")], "x\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("broken.yaml"), "{err}");
    assert!(err.contains(":4"), "{err}");
    assert!(err.contains("pattern"), "{err}");
}

#[test]
fn a_record_is_judged_stream_by_stream_and_json_is_parseable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.json");
    let record = serde_json::json!({
        "schema": "kanban-watchdog/exit-record",
        "schema_version": 1,
        "id": "0190a0a0-0000-7000-8000-000000000000",
        "argv": ["hermes", "chat"],
        "cwd": null,
        "pid": 10,
        "shim_pid": 9,
        "started_at": "2026-06-07T18:50:00Z",
        "ended_at": "2026-06-07T18:51:45Z",
        "duration_ms": 105000,
        "exit": {"code": 1, "signal": null, "reported_code": 75, "spawn_error": null},
        "task": {},
        "stdout": {"captured": true, "bytes_total": 5, "head": "done\n", "tail": "", "truncated": false},
        "stderr": {"captured": true, "bytes_total": 120, "head": "anthropic.RateLimitError: Error code: 429 - {'type': 'error', 'error': {'type': 'rate_limit_error', 'message': 'Number of request tokens has exceeded your per-minute rate limit'}}\n", "tail": "", "truncated": false},
        "failure": null,
        "steered": null
    });
    std::fs::write(&path, record.to_string()).expect("write record");
    let o = Command::new(WATCHDOG)
        .args(["explain", "--json", "--record"])
        .arg(&path)
        .output()
        .expect("explain runs");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["verdict"]["class"], "rate_limit");
    assert_eq!(v["verdict"]["provider"], "anthropic");
    assert_eq!(v["now"], 1_780_858_305, "the record's end time is now");
    let won = v["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .find(|c| c["outcome"] == "won")
        .expect("a winner");
    assert_eq!(won["stream"], "stderr");
}
