//! Re-auth is read from every credential store Hermes reads for a provider
//! (the root `auth.json` and each profile's `profiles/<name>/auth.json`,
//! issue 16 "Credential stores"), and only a new credential under the
//! provider's own entry counts: not another provider's change, not Hermes'
//! status bookkeeping, not an older release's fingerprint (issue 13 item 11).
//! The stores are written as Hermes writes them (temp file, rename, 0600).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// As Hermes' `_save_auth_store`: a 0600 temp file renamed over the store.
fn save_store(path: &Path, doc: &Value) {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .unwrap();
    std::io::Write::write_all(
        &mut f,
        serde_json::to_string_pretty(doc).unwrap().as_bytes(),
    )
    .unwrap();
    drop(f);
    std::fs::rename(&tmp, path).unwrap();
}

fn xai_state(token: &str) -> Value {
    json!({"tokens": {"access_token": token, "refresh_token": "xai-refresh-1", "token_type": "Bearer"},
           "last_refresh": "2026-12-01T00:00:00Z", "auth_mode": "oauth_device_code"})
}

/// A 0.22-style pool entry (`PooledCredential.to_dict`).
fn pool_entry(token: &str) -> Value {
    json!({"id": "a1b2c3", "label": "device_code", "auth_type": "oauth", "priority": 0,
           "source": "device_code", "access_token": token, "refresh_token": "xai-refresh-1",
           "last_status": null, "last_status_at": null, "last_error_code": null,
           "last_error_reason": null, "last_error_message": null, "last_error_reset_at": null,
           "request_count": 0})
}

fn root_doc(xai: &str, codex: &str) -> Value {
    json!({"version": 1, "active_provider": "xai-oauth", "updated_at": "2026-12-01T00:00:00+00:00",
           "providers": {"xai-oauth": xai_state(xai),
                         "openai-codex": {"tokens": {"access_token": codex, "refresh_token": "codex-r"}}}})
}

fn profile_doc(xai: &str) -> Value {
    json!({"version": 1, "active_provider": "xai-oauth",
           "providers": {"xai-oauth": xai_state(xai)},
           "credential_pool": {"xai-oauth": [pool_entry(xai)]}})
}

fn provider_state(h: &Harness, name: &str) -> String {
    h.status()["providers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
        .map(|p| p["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| "healthy".into())
}

fn saved_fingerprint(h: &Harness) -> Option<String> {
    let text = std::fs::read_to_string(h.state.join("state.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["auth_fingerprint"].as_str().map(str::to_string)
}

/// Task `g` of profile grok parked until xai-oauth's re-auth.
fn park_until_reauth(h: &Harness) {
    let run = h.running_task("g", "grok");
    h.write_record(&record(
        Some(("g", run)),
        "grok",
        Some(auth_expired("xai-oauth")),
    ));
    wait_until("g parked until re-auth", T, || {
        (h.status_of("g") == "scheduled" && provider_state(h, "xai-oauth") == "unhealthy")
            .then_some(())
    });
}

#[test]
fn a_reauth_written_only_to_a_profiles_own_store_releases_that_providers_tasks() {
    let mut h = Harness::new();
    save_store(&h.home.join("auth.json"), &root_doc("xai-old", "codex-1"));
    let profile_store = h.home.join("profiles/grok/auth.json");
    save_store(&profile_store, &profile_doc("xai-old"));
    h.start();
    wait_until("the baseline saved", T, || {
        saved_fingerprint(&h)
            .filter(|f| f.starts_with("v1:"))
            .map(|_| ())
    });
    park_until_reauth(&h);
    // `hermes auth add xai-oauth` inside the profile: only its store changes.
    save_store(&profile_store, &profile_doc("xai-new"));
    wait_until("g released after the profile's re-auth", T, || {
        (h.status_of("g") == "ready").then_some(())
    });
    assert_ne!(provider_state(&h, "xai-oauth"), "unhealthy");
    assert!(
        h.stderr()
            .contains("credential store: new credential for xai-oauth"),
        "{}",
        h.stderr()
    );
    // No token value in the state file or the log.
    let state = std::fs::read_to_string(h.state.join("state.json")).unwrap();
    for secret in ["xai-old", "xai-new", "xai-refresh-1", "codex-1"] {
        assert!(!state.contains(secret), "{secret} in state.json");
        assert!(!h.stderr().contains(secret), "{secret} in the log");
    }
}

#[test]
fn status_writes_and_another_providers_new_token_are_not_a_reauth() {
    let mut h = Harness::new();
    let root = h.home.join("auth.json");
    let profile_store = h.home.join("profiles/grok/auth.json");
    save_store(&root, &root_doc("xai-1", "codex-1"));
    save_store(&profile_store, &profile_doc("xai-1"));
    h.start();
    wait_until("the baseline saved", T, || {
        saved_fingerprint(&h)
            .filter(|f| f.starts_with("v1:"))
            .map(|_| ())
    });
    park_until_reauth(&h);

    // A failing 0.22 worker: `_mark_exhausted(persist=True)` on its pool
    // entry, and Hermes' own bookkeeping in the root store.
    let mut exhausted = profile_doc("xai-1");
    let entry = &mut exhausted["credential_pool"]["xai-oauth"][0];
    entry["last_status"] = json!("exhausted");
    entry["last_status_at"] = json!(1.9e9);
    entry["last_error_code"] = json!(401);
    entry["last_error_reason"] = json!("invalid_token");
    entry["last_error_message"] = json!("xAI OAuth state is missing access_token");
    entry["last_error_reset_at"] = json!(1.9e9 + 300.0);
    entry["request_count"] = json!(3);
    save_store(&profile_store, &exhausted);
    let mut root_touched = root_doc("xai-1", "codex-1");
    root_touched["updated_at"] = json!("2026-12-02T00:00:00+00:00");
    root_touched["active_provider"] = json!("openai-codex");
    save_store(&root, &root_touched);
    // Then another provider re-authenticates (a new Codex token): the
    // fingerprint changes, so the daemon has read both files since.
    let before = saved_fingerprint(&h).unwrap();
    root_touched["providers"]["openai-codex"]["tokens"]["access_token"] = json!("codex-2");
    save_store(&root, &root_touched);
    wait_until("the new Codex token read", T, || {
        saved_fingerprint(&h).filter(|f| *f != before).map(|_| ())
    });
    assert!(
        h.stderr()
            .contains("credential store: new credential for openai-codex"),
        "{}",
        h.stderr()
    );
    assert_eq!(provider_state(&h, "xai-oauth"), "unhealthy");
    assert_eq!(h.status_of("g"), "scheduled", "g still waits for xai-oauth");
    assert_eq!(h.count_events("g", "watchdog_released"), 0);
}

#[test]
fn a_fingerprint_saved_by_an_older_release_is_unknown_not_a_reauth() {
    let mut h = Harness::new();
    save_store(&h.home.join("auth.json"), &root_doc("xai-1", "codex-1"));
    h.start();
    park_until_reauth(&h);
    h.stop();
    // What a release with the `DefaultHasher` fingerprint saved: `len:hash`
    // of the whole file (a different Rust release hashes differently).
    let file = h.state.join("state.json");
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    state["auth_fingerprint"] = json!("412:9f86d081884c7d65");
    std::fs::write(&file, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    h.start();
    wait_until("the new baseline saved", T, || {
        saved_fingerprint(&h)
            .filter(|f| f.starts_with("v1:"))
            .map(|_| ())
    });
    // A few checks later (the status is regenerated each one).
    let at = h.status()["generated_at"].as_i64().unwrap();
    wait_until("two more seconds of checks", T, || {
        (h.status()["generated_at"].as_i64().unwrap() >= at + 2).then_some(())
    });
    assert_eq!(
        provider_state(&h, "xai-oauth"),
        "unhealthy",
        "{}",
        h.stderr()
    );
    assert_eq!(h.status_of("g"), "scheduled");
}
