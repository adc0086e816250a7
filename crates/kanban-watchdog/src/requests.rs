//! Operator requests to a running (or stopped) daemon, dropped as files in
//! `<state_dir>/requests/`. The HTTP endpoint stays read-only.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Mark a provider healthy now (after a manual re-auth, say).
    ProviderReset { provider: String },
}

/// Writes a request atomically; the daemon picks it up at once (inotify)
/// or at its next start.
pub fn submit(requests_dir: &Path, req: &Request) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(requests_dir)?;
    // UUIDv7: unique, and in submission order when sorted.
    let name = format!("{}.json", uuid::Uuid::now_v7());
    let path = requests_dir.join(name);
    let body = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    crate::state::write_atomic(&path, &body)?;
    Ok(path)
}
