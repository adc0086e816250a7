//! The daemon's own durable state: provider health, where the log tail
//! stopped, restart history, and the last status snapshot (for `status`
//! when the daemon is down). Written atomically (temp, fsync, rename).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use log_tailer::TailPosition;
use serde::{Deserialize, Serialize};

use crate::health::ProviderHealth;
use crate::status::Status;

pub const STATE_VERSION: u32 = 1;

/// A state file larger than this is not ours (ours is a few KiB to a few
/// hundred KiB with many providers and a full status snapshot).
pub const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

/// How far from now a time in the state file may lie (a provider's reset
/// is capped at `providers.max_cooldown`, at most 100 years).
const STATE_HORIZON_S: i64 = 36_500 * 24 * 3600;

/// Range-checks the times a state file carries before anything computes
/// with them (`now - since` of an `i64::MIN` would overflow): each
/// provider's `since`/`until` and each restart time is clamped to
/// `0..=now + 100 years`, restart times to `0..=now`.
fn clamp_times(v: &mut serde_json::Value, now: i64) {
    let clamp = |x: &mut serde_json::Value, hi: i64| {
        if let Some(n) = x.as_i64() {
            *x = n.clamp(0, hi).into();
        } else if x.is_number() {
            // A u64 past i64::MAX or a float: the most distant time allowed.
            *x = hi.into();
        }
    };
    let far = now.saturating_add(STATE_HORIZON_S);
    if let Some(map) = v
        .pointer_mut("/providers/providers")
        .and_then(|p| p.as_object_mut())
    {
        for state in map.values_mut() {
            for key in ["since", "until"] {
                if let Some(t) = state.get_mut(key) {
                    clamp(t, far);
                }
            }
        }
    }
    if let Some(list) = v.get_mut("restarts").and_then(|r| r.as_array_mut()) {
        for t in list {
            clamp(t, now);
        }
    }
}

fn move_aside(path: &Path, why: &str) {
    let aside = path.with_extension(format!("corrupt-{}", jiff::Timestamp::now().as_second()));
    let _ = std::fs::rename(path, &aside);
    tracing::error!(
        file = %path.display(),
        moved_to = %aside.display(),
        "{why}; moved aside, starting fresh"
    );
}

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
    /// moved aside (never silently dropped) and reported. Read as a private
    /// file ([`exit_record::read_private_file`]): a link, a FIFO, a file of
    /// another user or one others can write is not state of ours and is
    /// moved aside too (a rename moves the link, not its target).
    pub fn load(path: &Path) -> PersistedState {
        let bytes = match exit_record::read_private_file(path, MAX_STATE_BYTES) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return PersistedState::default(),
            Err(e @ exit_record::PrivateFileError::Open { .. })
            | Err(e @ exit_record::PrivateFileError::Read { .. })
            | Err(e @ exit_record::PrivateFileError::UnsafeDir(_)) => {
                tracing::error!(file = %path.display(), "cannot read state: {e}; starting fresh");
                return PersistedState::default();
            }
            Err(e) => {
                move_aside(path, &e.to_string());
                return PersistedState::default();
            }
        };
        let parsed = serde_json::from_slice::<serde_json::Value>(&bytes)
            .map(|mut v| {
                clamp_times(&mut v, jiff::Timestamp::now().as_second());
                v
            })
            .and_then(serde_json::from_value::<PersistedState>);
        match parsed {
            Ok(s) => s,
            Err(e) => {
                move_aside(path, &format!("state file unreadable ({e})"));
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
/// give a file away), the new file should have: temp file, fsync, rename,
/// directory fsync, with [`exit_record::write_file_atomic`] (never through
/// a link, temp file removed on failure). The directory must exist (the
/// daemon checks and creates its directories at start, see
/// [`exit_record::ensure_private_dir`]); a missing one is created 0700.
pub fn write_atomic_as(
    path: &Path,
    body: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let opts = exit_record::AtomicOptions {
        mode,
        owner,
        fsync: true,
        temp: exit_record::TempName::Unique,
    };
    exit_record::write_file_atomic(path, body, opts)
}

/// Opens `path` for appending as a private log (0600 when created): never
/// through a link (`O_NOFOLLOW`), never blocking on a FIFO (`O_NONBLOCK`),
/// and only a regular file owned by this user.
pub fn open_append_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other(format!(
                    "{} is a symbolic link; refusing to write through it",
                    path.display()
                ))
            } else {
                e
            }
        })?;
    let meta = f.metadata()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() || meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file of this user (uid {me}); refusing to write to it",
            path.display()
        )));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_or_file_planted_at_the_temp_name_is_never_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let dir = tmp.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        // The temp names an earlier version used, and any short counter,
        // planted as links.
        let pid = std::process::id();
        let _ = std::os::unix::fs::symlink(&victim, dir.join(format!(".health.json.{pid}.tmp")));
        for n in 0..200u64 {
            let _ = std::os::unix::fs::symlink(
                &victim,
                dir.join(format!(".health.json.{pid}.{n}.tmp")),
            );
        }
        write_atomic(&dir.join("health.json"), b"{}").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(dir.join("health.json")).unwrap(), b"{}");
        // A link at the final name is replaced, not followed.
        std::os::unix::fs::symlink(&victim, dir.join("state.json")).unwrap();
        write_atomic(&dir.join("state.json"), b"{}").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(
            !std::fs::symlink_metadata(dir.join("state.json"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn a_linked_state_file_is_moved_aside_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim.json");
        std::fs::write(&victim, br#"{"auth_fingerprint": "theirs"}"#).unwrap();
        let state = tmp.path().join("state.json");
        std::os::unix::fs::symlink(&victim, &state).unwrap();
        let s = PersistedState::load(&state);
        assert_eq!(s.auth_fingerprint, None);
        assert!(std::fs::symlink_metadata(&state).is_err(), "moved aside");
        assert!(victim.exists());
    }

    #[test]
    fn absurd_times_in_the_state_file_are_clamped_at_load() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.json");
        std::fs::write(
            &path,
            r#"{"providers": {"providers": {
                 "a": {"state": "probing", "since": -9223372036854775808},
                 "b": {"state": "unhealthy", "since": 0, "until": 18446744073709551615,
                       "class": "rate_limit", "reason": "x"}}},
               "restarts": [-9223372036854775808, 9223372036854775807]}"#,
        )
        .unwrap();
        let s = PersistedState::load(&path);
        let now = jiff::Timestamp::now().as_second();
        assert_eq!(
            s.providers.get("a"),
            Some(&crate::health::ProviderState::Probing { since: 0 })
        );
        match s.providers.get("b") {
            Some(crate::health::ProviderState::Unhealthy { until: Some(u), .. }) => {
                assert!(*u <= now + STATE_HORIZON_S + 5 && *u > now)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.restarts.len(), 2);
        assert!(s.restarts.iter().all(|t| (0..=now + 5).contains(t)));
    }

    /// A state file of another build whose last status names states this
    /// build does not know still loads, provider health and all.
    #[test]
    fn a_last_status_with_unknown_states_does_not_cost_the_state_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.json");
        let mut status = serde_json::to_value(Status::default()).unwrap();
        status["dispatcher"]["state"] = "degraded".into();
        status["incidents"] = serde_json::json!([
            {"key": "k", "severity": "info", "since": 1, "summary": "s"}
        ]);
        let doc = serde_json::json!({
            "version": STATE_VERSION,
            "providers": {"providers": {"a": {"state": "probing", "since": 5}}},
            "auth_fingerprint": "ours",
            "last_status": status,
        });
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        let s = PersistedState::load(&path);
        assert_eq!(s.auth_fingerprint.as_deref(), Some("ours"));
        assert_eq!(s.providers.get("a").map(|p| p.name()), Some("probing"));
        let last = s.last_status.expect("the last status read");
        assert_eq!(last.dispatcher.state.as_str(), "degraded");
        assert_eq!(last.incidents[0].severity.as_str(), "info");
        assert!(path.exists(), "not moved aside");
    }

    #[test]
    fn appends_never_go_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let log = tmp.path().join("restart.log");
        std::os::unix::fs::symlink(&victim, &log).unwrap();
        let err = open_append_private(&log).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
}
