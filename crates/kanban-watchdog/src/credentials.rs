//! Hermes' credential stores, read for re-auth.
//!
//! Hermes keeps a provider's credentials in `<root>/auth.json` and, for a
//! profile, in `<root>/profiles/<name>/auth.json` (the profile's own store,
//! which shadows the root one per provider; Hermes copies credentials into
//! it). In both, `providers.<id>` holds a provider's login state (flat or
//! under `tokens`) and `credential_pool.<id>` a list of pooled credentials
//! (Hermes 0.19.0 and 0.22: `hermes_cli/auth.py`, `agent/credential_pool.py`).
//!
//! A re-auth of provider P is a credential value for P that was not there
//! before: a token field (`access_token`, `refresh_token`, `id_token`,
//! `api_key`, `agent_key`) anywhere under P's entry, in any store. So:
//! * a change of another provider's entry is not P's re-auth;
//! * status bookkeeping is not a re-auth (0.22's `_mark_exhausted` writes
//!   `last_status: exhausted`, `last_error_*`, `request_count`, ...; the
//!   tokens stay);
//! * a credential removed, or copied from the root store into a profile's,
//!   is not one either (no value is new).
//!
//! Only digests of the values are kept (FNV-1a 64, stable across Rust
//! releases, unlike `DefaultHasher`), never the values; the persisted form
//! starts with a version prefix, and one without it (or another version)
//! is "unknown": the next reading becomes the baseline, never a re-auth.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The persisted form's prefix; anything else is an unknown fingerprint.
pub const VERSION_PREFIX: &str = "v1:";

/// Fields whose value is a credential, at any depth of a provider's entry.
pub const TOKEN_KEYS: &[&str] = &[
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "agent_key",
];

/// A credential store is a few KiB; refuse anything absurd.
const MAX_STORE_BYTES: u64 = 4 << 20;
/// Bounds on what is kept (and persisted) per reading.
const MAX_PROVIDERS: usize = 256;
const MAX_DIGESTS: usize = 256;
const MAX_PROVIDER_NAME: usize = 128;
const MAX_DEPTH: usize = 8;

/// Digests of every credential value, per provider id, over every store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    providers: BTreeMap<String, BTreeSet<u64>>,
}

impl Fingerprint {
    /// `v1:{"<provider>":["<16 hex>",...],...}`.
    pub fn encode(&self) -> String {
        let map: BTreeMap<&str, Vec<String>> = self
            .providers
            .iter()
            .map(|(p, d)| (p.as_str(), d.iter().map(|x| format!("{x:016x}")).collect()))
            .collect();
        let json = serde_json::to_string(&map).unwrap_or_else(|_| "{}".into());
        format!("{VERSION_PREFIX}{json}")
    }

    /// `None` for a fingerprint of another format (an older release's
    /// `len:hash` of the whole file): unknown, not a re-auth.
    pub fn decode(text: &str) -> Option<Fingerprint> {
        let json = text.strip_prefix(VERSION_PREFIX)?;
        let map: BTreeMap<String, Vec<String>> = serde_json::from_str(json).ok()?;
        let mut fp = Fingerprint::default();
        for (provider, digests) in map.into_iter().take(MAX_PROVIDERS) {
            let set: BTreeSet<u64> = digests
                .iter()
                .take(MAX_DIGESTS)
                .filter_map(|d| u64::from_str_radix(d, 16).ok())
                .collect();
            fp.providers.insert(provider, set);
        }
        Some(fp)
    }

    /// Providers with a credential value now that `before` did not have.
    pub fn renewed_since(&self, before: &Fingerprint) -> Vec<String> {
        self.providers
            .iter()
            .filter(|(p, now)| {
                let old = before.providers.get(*p);
                now.iter().any(|d| old.is_none_or(|o| !o.contains(d)))
            })
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Providers that have at least one credential.
    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }

    fn merge(&mut self, other: &BTreeMap<String, BTreeSet<u64>>) {
        for (p, d) in other {
            if self.providers.len() >= MAX_PROVIDERS && !self.providers.contains_key(p) {
                continue;
            }
            let set = self.providers.entry(p.clone()).or_default();
            for x in d {
                if set.len() >= MAX_DIGESTS {
                    break;
                }
                set.insert(*x);
            }
        }
    }
}

/// Reads the stores; remembers each store's last good reading, so a store
/// that cannot be read for a moment keeps its credentials (its tokens must
/// not look new when it reads again), and reports each problem once.
#[derive(Default)]
pub struct Stores {
    last_good: BTreeMap<PathBuf, BTreeMap<String, BTreeSet<u64>>>,
    problems: BTreeMap<PathBuf, String>,
}

impl Stores {
    /// The fingerprint over `paths` (a missing store holds nothing). A store
    /// another user could have written (see
    /// [`exit_record::read_private_file`]) is not trusted: it holds nothing
    /// for us, and that is said once.
    pub fn read(&mut self, paths: &[PathBuf]) -> Fingerprint {
        let mut fp = Fingerprint::default();
        for path in paths {
            let per_store = match read_store(path) {
                Ok(s) => {
                    if self.problems.remove(path).is_some() {
                        tracing::info!(file = %path.display(), "credential store readable again");
                    }
                    self.last_good.insert(path.clone(), s.clone());
                    s
                }
                Err(StoreProblem::Missing) => {
                    self.problems.remove(path);
                    self.last_good.remove(path);
                    BTreeMap::new()
                }
                Err(StoreProblem::Refused(why)) => {
                    self.report(path, &why, "not trusted for re-auth");
                    self.last_good.remove(path);
                    BTreeMap::new()
                }
                Err(StoreProblem::Unreadable(why)) => {
                    self.report(path, &why, "keeping its last reading");
                    self.last_good.get(path).cloned().unwrap_or_default()
                }
            };
            fp.merge(&per_store);
        }
        self.last_good.retain(|p, _| paths.contains(p));
        fp
    }

    fn report(&mut self, path: &Path, why: &str, what: &str) {
        if self.problems.get(path).map(String::as_str) != Some(why) {
            tracing::warn!(file = %path.display(), "credential store: {why}; {what}");
            self.problems.insert(path.to_path_buf(), why.to_string());
        }
    }
}

enum StoreProblem {
    Missing,
    Refused(String),
    Unreadable(String),
}

fn read_store(path: &Path) -> Result<BTreeMap<String, BTreeSet<u64>>, StoreProblem> {
    use exit_record::PrivateFileError as E;
    let bytes = match exit_record::read_private_file(path, MAX_STORE_BYTES) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Err(StoreProblem::Missing),
        Err(e @ (E::Open { .. } | E::Read { .. })) => {
            return Err(StoreProblem::Unreadable(e.to_string()));
        }
        Err(e) => return Err(StoreProblem::Refused(e.to_string())),
    };
    // The error names a line and column, never a value.
    let doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| StoreProblem::Unreadable(format!("not JSON ({e})")))?;
    Ok(digests_of(&doc))
}

/// Every provider's credential digests in one store document.
pub fn digests_of(doc: &serde_json::Value) -> BTreeMap<String, BTreeSet<u64>> {
    let mut out: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for section in ["providers", "credential_pool"] {
        let Some(entries) = doc.get(section).and_then(|s| s.as_object()) else {
            continue;
        };
        for (provider, entry) in entries {
            if provider.is_empty() || provider.len() > MAX_PROVIDER_NAME {
                continue;
            }
            let mut set = BTreeSet::new();
            collect(entry, 0, &mut set);
            if set.is_empty() {
                continue;
            }
            if out.len() >= MAX_PROVIDERS && !out.contains_key(provider) {
                continue;
            }
            let into = out.entry(provider.clone()).or_default();
            into.extend(set.into_iter().take(MAX_DIGESTS.saturating_sub(into.len())));
        }
    }
    out
}

fn collect(v: &serde_json::Value, depth: usize, out: &mut BTreeSet<u64>) {
    if depth > MAX_DEPTH || out.len() >= MAX_DIGESTS {
        return;
    }
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(s)
                        if TOKEN_KEYS.contains(&k.as_str()) && !s.trim().is_empty() =>
                    {
                        out.insert(digest(s.trim().as_bytes()));
                    }
                    _ => collect(v, depth + 1, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect(item, depth + 1, out);
            }
        }
        _ => {}
    }
}

/// FNV-1a 64 over a domain prefix and the value: stable across releases
/// and platforms (the 64-bit FNV offset basis and prime, applied byte by byte).
pub fn digest(value: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in b"kanban-watchdog credential v1\0".iter().chain(value) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        // Without the domain prefix, FNV-1a 64 of "a" is af63dc4c8601ec8c.
        let plain = |bytes: &[u8]| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            h
        };
        assert_eq!(plain(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(plain(b"foobar"), 0x8594_4171_f739_67e8);
        // The digest is pinned: a change here reads as a re-auth of every
        // provider after an upgrade.
        // (Computed independently with Python.)
        assert_eq!(digest(b"tok-1"), 0x2d02_3565_e83a_1ad8);
    }

    #[test]
    fn only_token_fields_of_a_provider_count() {
        let a = json!({
            "version": 1, "active_provider": "xai-oauth", "updated_at": "t1",
            "providers": {
                "xai-oauth": {"tokens": {"access_token": "A1", "refresh_token": "R1"}, "last_refresh": "x"},
                "nous": {"access_token": "N1", "agent_key": "K1"}
            },
            "credential_pool": {
                "openai-codex": [{"id": "1", "access_token": "C1", "last_status": null, "request_count": 0}]
            }
        });
        let mut b = a.clone();
        // 0.22's _mark_exhausted(persist=True) and Hermes' own bookkeeping.
        b["credential_pool"]["openai-codex"][0]["last_status"] = json!("exhausted");
        b["credential_pool"]["openai-codex"][0]["last_error_reset_at"] = json!(1.9e9);
        b["credential_pool"]["openai-codex"][0]["request_count"] = json!(7);
        b["updated_at"] = json!("t2");
        b["active_provider"] = json!("nous");
        b["providers"]["xai-oauth"]["last_refresh"] = json!("y");
        let fa = fp(&a);
        let fb = fp(&b);
        assert!(fb.renewed_since(&fa).is_empty());
        // Another provider's new token is not xai-oauth's re-auth.
        let mut c = b.clone();
        c["providers"]["nous"]["agent_key"] = json!("K2");
        assert_eq!(fp(&c).renewed_since(&fb), ["nous"]);
        // Removing a credential is not a re-auth; restoring it is.
        let mut d = c.clone();
        d["providers"]["xai-oauth"] = json!({"last_auth_error": {"reason": "gone"}});
        assert!(fp(&d).renewed_since(&fp(&c)).is_empty());
        assert_eq!(fp(&c).renewed_since(&fp(&d)), ["xai-oauth"]);
    }

    #[test]
    fn the_persisted_form_round_trips_and_an_old_one_is_unknown() {
        let doc = json!({"providers": {"xai-oauth": {"tokens": {"access_token": "A"}}}});
        let f = fp(&doc);
        let text = f.encode();
        assert!(text.starts_with("v1:"));
        assert!(!text.contains("\"A\""));
        assert_eq!(Fingerprint::decode(&text), Some(f));
        assert_eq!(Fingerprint::decode("1234:9f86d081884c7d65"), None);
        assert_eq!(Fingerprint::decode("v2:{}"), None);
        assert_eq!(Fingerprint::decode("v1:not json"), None);
    }

    fn fp(doc: &serde_json::Value) -> Fingerprint {
        let mut f = Fingerprint::default();
        f.merge(&digests_of(doc));
        f
    }
}
