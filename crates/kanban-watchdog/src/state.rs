//! The daemon's own durable state: provider health, where the log tail
//! stopped, restart history, and the last status snapshot (for `status`
//! when the daemon is down). Written atomically (temp, fsync, rename).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use log_tailer::TailPosition;
use serde::{Deserialize, Serialize};

use crate::health::ProviderHealth;
use crate::status::Status;

pub const STATE_VERSION: u32 = 1;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PersistedState {
    pub version: u32,
    pub saved_at: i64,
    pub providers: ProviderHealth,
    pub log_position: Option<TailPosition>,
    pub restarts: Vec<i64>,
    pub auth_fingerprint: Option<String>,
    pub last_status: Option<Status>,
}

impl PersistedState {
    /// Loads the state; a missing file is a fresh start, a corrupt one is
    /// moved aside (never silently dropped) and reported.
    pub fn load(path: &Path) -> PersistedState {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return PersistedState::default(),
            Err(e) => {
                tracing::error!(file = %path.display(), "cannot read state: {e}; starting fresh");
                return PersistedState::default();
            }
        };
        match serde_json::from_slice::<PersistedState>(&bytes) {
            Ok(s) => s,
            Err(e) => {
                let aside =
                    path.with_extension(format!("corrupt-{}", jiff::Timestamp::now().as_second()));
                let _ = std::fs::rename(path, &aside);
                tracing::error!(
                    file = %path.display(),
                    moved_to = %aside.display(),
                    "state file unreadable ({e}); moved aside, starting fresh"
                );
                PersistedState::default()
            }
        }
    }

    pub fn save(&mut self, path: &Path) -> std::io::Result<()> {
        self.version = STATE_VERSION;
        self.saved_at = jiff::Timestamp::now().as_second();
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(path, &body)
    }
}

/// Temp file in the same directory, fsync, rename: readers see old or new.
/// The file is private (0600).
pub fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    write_atomic_as(path, body, 0o600, None)
}

/// [`write_atomic`] with the mode, and the owner (best effort: only root can
/// give a file away), the new file should have. Cleans up its temp file on
/// failure and fsyncs the directory after the rename.
pub fn write_atomic_as(
    path: &Path,
    body: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some((uid, gid)) = owner {
            let _ = std::os::unix::fs::fchown(&f, Some(uid), Some(gid));
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(body)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
