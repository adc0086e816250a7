//! Steering a Hermes worker to a healthy fallback provider. The watchdog
//! publishes, per profile, the provider and model to use while the
//! profile's primary is unhealthy (`health.json`, `steer` map). For a
//! Hermes worker (`... chat -q "work kanban task <id>"` with
//! `HERMES_KANBAN_TASK` set) the shim appends `--provider P -m M`: Hermes
//! 0.19's argparse lets the last occurrence win, so the dispatcher's own
//! argv is left untouched and no board column is rewritten. A worker whose
//! argv already names a `--provider` is not steered: on Hermes 0.22 that is
//! the task's `provider_override` (set by the watchdog's native steering or
//! by `hermes kanban set-model`), and the dispatcher's choice stands.
//!
//! `health.json` is untrusted input read on every worker start, so it is
//! checked the way OpenSSH's `StrictModes` checks `authorized_keys`: the
//! file and its directory must be owned by this user (or root) and not
//! writable by group or others; the file must be a regular file, not a
//! symlink (`O_NOFOLLOW`), and is opened `O_NONBLOCK` after an `lstat` so
//! neither a FIFO nor a device can block or feed the shim; at most
//! [`MAX_HEALTH_BYTES`] are read; it is parsed into a typed struct; and a
//! provider or model is used only when it matches a conservative charset
//! (no leading `-`, which argparse would take for an option). Any problem
//! means no steering and one warning line: the worker always starts.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use exit_record::Steered;
pub use exit_record::health::HealthDoc;
use exit_record::health::HealthState;
use failure_signatures::{FailureClass, ReadClass};
use hermes_board::cli;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};

/// The largest `health.json` read. The watchdog's file is a few KiB (one
/// entry per provider and per steered profile); 256 KiB leaves room for
/// long failure reasons and bounds the read to well under a millisecond.
pub const MAX_HEALTH_BYTES: u64 = 256 * 1024;

/// A health file older than this (by its `generated_at`) never skips a run.
pub const HOLD_FRESH_S: i64 = 600;
/// A `generated_at` this far in the future is a wrong clock: no skip.
const CLOCK_SKEW_S: i64 = 60;

/// A run not to start: its provider is unhealthy with no healthy fallback.
#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    pub profile: String,
    pub provider: String,
    /// `None`: until re-auth.
    pub until: Option<i64>,
    pub class: FailureClass,
    pub reason: String,
    /// How old the health file is, in seconds.
    pub age_s: i64,
}

/// What the health file says about this worker.
#[derive(Debug, Default)]
pub struct Consulted {
    pub steered: Option<Steered>,
    pub skip: Option<Skip>,
    /// One line: a hold that was not acted on, and why.
    pub note: Option<String>,
}

/// Why a health file was not used. Each is one line.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot open {path:?}: {source}")]
    Open { path: PathBuf, source: nix::Error },
    #[error("{path:?} is a symlink, not followed")]
    Symlink { path: PathBuf },
    #[error("{path:?} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error(
        "{path:?} is owned by uid {uid}, not by this user (uid {me}) or root; only a file written by the watchdog's user is trusted"
    )]
    Owner { path: PathBuf, uid: u32, me: u32 },
    #[error("{path:?} is writable by group or others (mode {mode:03o}); run chmod go-w on it")]
    Writable { path: PathBuf, mode: u32 },
    #[error("{path:?} is larger than {MAX_HEALTH_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("cannot read {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path:?} is not a valid health file: {source}")]
    Parse {
        path: PathBuf,
        source: exit_record::health::HealthFileError,
    },
    #[error(
        "{path:?} steers profile {profile:?} to an unsafe {field} {value:?} (allowed: letters, digits and ._:/@+- , not starting with - , at most 128)"
    )]
    Unsafe {
        path: PathBuf,
        profile: String,
        field: &'static str,
        value: String,
    },
}

/// `$WORKER_SHIM_HEALTH_FILE`, else `health.json` beside the default record dir.
pub fn default_health_file() -> PathBuf {
    exit_record::default_record_dir()
        .parent()
        .map(|p| p.join("health.json"))
        .unwrap_or_else(|| PathBuf::from("health.json"))
}

/// Appends the steering to `command` when it applies; returns what was
/// done. `Err` means the health file was refused: no steering, the caller
/// says why in one line.
#[cfg(test)]
pub fn apply(
    command: &mut Vec<OsString>,
    health_file: &Path,
    profile_env: Option<String>,
) -> Result<Option<Steered>, HealthError> {
    consult(command, health_file, profile_env, false, 0).map(|c| c.steered)
}

/// Reads the health file for a Hermes worker (`chat` in its argv) and
/// applies what it says: steering is appended to `command`; a skip is
/// returned for the caller to act on (only when `may_skip`). `now` is the
/// wall clock in epoch seconds. `Err`: the file was refused (one line).
pub fn consult(
    command: &mut Vec<OsString>,
    health_file: &Path,
    profile_env: Option<String>,
    may_skip: bool,
    now: i64,
) -> Result<Consulted, HealthError> {
    if !cli::is_chat(command) {
        return Ok(Consulted::default());
    }
    let Some(profile) = profile_env.or_else(|| cli::profile(command)) else {
        return Ok(Consulted::default());
    };
    let Some(mut doc) = read_health(health_file)? else {
        return Ok(Consulted::default());
    };
    let Some(entry) = doc.steer.remove(&profile) else {
        if !may_skip {
            return Ok(Consulted::default());
        }
        return Ok(match skip_decision(&doc, &profile, command, now) {
            Ok(skip) => Consulted {
                skip,
                ..Consulted::default()
            },
            Err(note) => Consulted {
                note: Some(note),
                ..Consulted::default()
            },
        });
    };
    let unsafe_value = |field, value: &str| HealthError::Unsafe {
        path: health_file.to_path_buf(),
        profile: profile.clone(),
        field,
        value: value.chars().take(64).collect(),
    };
    if !safe_name(&entry.provider) {
        return Err(unsafe_value("provider", &entry.provider));
    }
    if let Some(m) = entry.model.as_deref().filter(|m| !safe_name(m)) {
        return Err(unsafe_value("model", m));
    }
    if let Some(pinned) = cli::provider(command) {
        // The task's own override: Hermes 0.22 passes `-m M --provider P`
        // for a row with `provider_override` set, which is also how the
        // watchdog steers natively there. The dispatcher has chosen; a
        // second `--provider` would repeat it or overrule the task.
        let note = (pinned != entry.provider).then(|| {
            format!(
                "not steering this worker to {}: its task pins --provider {pinned}",
                entry.provider
            )
        });
        return Ok(Consulted {
            note,
            ..Consulted::default()
        });
    }
    cli::append_provider(command, &entry.provider, entry.model.as_deref());
    Ok(Consulted {
        steered: Some(Steered {
            provider: entry.provider,
            model: entry.model,
            // Only informational (it goes into the record); dropped if odd.
            from: entry.from.filter(|f| safe_name(f)),
        }),
        ..Consulted::default()
    })
}

/// Whether `profile`'s run is to be skipped. `Ok(None)`: nothing holds it
/// (silently). `Err(line)`: a hold was published for it but is not acted
/// on, and why (the worker runs). Every guard keeps the worker running:
/// a skip needs a version-1 file written within [`HOLD_FRESH_S`], a hold
/// naming a safe provider name that the same file shows unhealthy now,
/// with a known failure class, and no `--provider` in the worker's argv
/// that names another provider (a task-level override runs elsewhere).
pub fn skip_decision(
    doc: &HealthDoc,
    profile: &str,
    command: &[OsString],
    now: i64,
) -> Result<Option<Skip>, String> {
    let Some(hold) = doc.hold.as_ref().and_then(|h| h.get(profile)) else {
        return Ok(None);
    };
    let provider = hold.provider.as_str();
    if !safe_name(provider) {
        return Err(format!(
            "not skipping: the health file holds profile {profile:?} for an unsafe provider name"
        ));
    }
    if cli::provider(command).is_some_and(|p| p != provider) {
        // The dispatcher pinned this task to another provider.
        return Ok(None);
    }
    if doc.version != Some(1) {
        return Err(format!(
            "not skipping although provider {provider} is held: unknown health file version {:?}",
            doc.version
        ));
    }
    let Some(generated_at) = doc.generated_at else {
        return Err(format!(
            "not skipping although provider {provider} is held: the health file has no generated_at"
        ));
    };
    let age_s = now.saturating_sub(generated_at);
    if !(-CLOCK_SKEW_S..=HOLD_FRESH_S).contains(&age_s) {
        return Err(format!(
            "not skipping although provider {provider} is held: the health file was written {age_s} s ago (a skip needs it under {HOLD_FRESH_S} s; is kanban-watchdog running?)"
        ));
    }
    let Some(state) = doc.providers.as_ref().and_then(|p| p.get(provider)) else {
        return Err(format!(
            "not skipping: provider {provider} is held but has no state in the health file"
        ));
    };
    if state.state != HealthState::Unhealthy {
        return Ok(None);
    }
    if state.until.is_some_and(|t| t <= now) {
        // Its cooldown is over: the watchdog probes with the next task.
        return Ok(None);
    }
    let Some(class) = state.class.as_ref().and_then(ReadClass::known) else {
        return Err(format!(
            "not skipping: provider {provider} is held with an unknown failure class {:?}",
            state.class.as_ref().map(ReadClass::as_str)
        ));
    };
    let reason: String = failure_signatures::redact(state.reason.as_deref().unwrap_or(""))
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    Ok(Some(Skip {
        profile: profile.to_string(),
        provider: provider.to_string(),
        until: state.until,
        class,
        reason,
        age_s: age_s.max(0),
    }))
}

/// `^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$`: provider and model names as
/// Hermes and the providers spell them (`openrouter`, `x-ai/grok-4`,
/// `claude-sonnet-4@20250514`, `qwen2.5:7b`), and nothing argparse could
/// take for an option or a shell for anything but a word.
fn safe_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._:/@+-".contains(c))
}

/// Reads the health file after the checks in the module comment. A file
/// (or directory) that does not exist is `Ok(None)`: nothing is published.
fn read_health(path: &Path) -> Result<Option<HealthDoc>, HealthError> {
    let owned = |p: &Path| p.to_path_buf();
    let Some(name) = path.file_name() else {
        return Err(HealthError::NotRegular { path: owned(path) });
    };
    let dir_path = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let me = nix::unistd::geteuid().as_raw();
    let dir = match File::open(dir_path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(HealthError::Read {
                path: owned(dir_path),
                source: e,
            });
        }
    };
    let dir_meta = dir.metadata().map_err(|e| HealthError::Read {
        path: owned(dir_path),
        source: e,
    })?;
    check_owner_and_mode(dir_path, dir_meta.uid(), dir_meta.mode(), me)?;
    // lstat first: a FIFO, a device or a symlink is refused unopened.
    let st = match fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(nix::Error::ENOENT) => return Ok(None),
        Err(e) => {
            return Err(HealthError::Open {
                path: owned(path),
                source: e,
            });
        }
    };
    check_type(
        path,
        SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()),
    )?;
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = match openat(&dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => return Ok(None),
        Err(nix::Error::ELOOP) => return Err(HealthError::Symlink { path: owned(path) }),
        Err(e) => {
            return Err(HealthError::Open {
                path: owned(path),
                source: e,
            });
        }
    };
    let file = File::from(fd);
    // Checked again on what was opened: it may have been swapped since.
    let meta = file.metadata().map_err(|e| HealthError::Read {
        path: owned(path),
        source: e,
    })?;
    if !meta.file_type().is_file() {
        return Err(HealthError::NotRegular { path: owned(path) });
    }
    check_owner_and_mode(path, meta.uid(), meta.mode(), me)?;
    if meta.len() > MAX_HEALTH_BYTES {
        return Err(HealthError::TooLarge { path: owned(path) });
    }
    let mut text = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_HEALTH_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| HealthError::Read {
            path: owned(path),
            source: e,
        })?;
    if text.len() as u64 > MAX_HEALTH_BYTES {
        return Err(HealthError::TooLarge { path: owned(path) });
    }
    exit_record::health::parse_health(&text)
        .map(Some)
        .map_err(|e| HealthError::Parse {
            path: owned(path),
            source: e,
        })
}

fn check_type(path: &Path, kind: SFlag) -> Result<(), HealthError> {
    if kind == SFlag::S_IFLNK {
        return Err(HealthError::Symlink {
            path: path.to_path_buf(),
        });
    }
    if kind != SFlag::S_IFREG {
        return Err(HealthError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// OpenSSH's rule (`secure_path`): owned by the user or root, and not
/// writable by group or others.
fn check_owner_and_mode(path: &Path, uid: u32, mode: u32, me: u32) -> Result<(), HealthError> {
    if uid != me && uid != 0 {
        return Err(HealthError::Owner {
            path: path.to_path_buf(),
            uid,
            me,
        });
    }
    if mode & 0o022 != 0 {
        return Err(HealthError::Writable {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn appends_provider_and_model_for_a_hermes_chat_worker() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("health.json");
        std::fs::write(
            &f,
            r#"{"steer":{"coder":{"provider":"openrouter","model":"x/y","from":"openai-codex"}}}"#,
        )
        .unwrap();
        let mut cmd = argv(&[
            "hermes",
            "-p",
            "coder",
            "--cli",
            "chat",
            "-q",
            "work kanban task t1",
        ]);
        let s = apply(&mut cmd, &f, None).unwrap().unwrap();
        assert_eq!(s.provider, "openrouter");
        assert_eq!(s.from.as_deref(), Some("openai-codex"));
        assert_eq!(
            cmd,
            argv(&[
                "hermes",
                "-p",
                "coder",
                "--cli",
                "chat",
                "-q",
                "work kanban task t1",
                "--provider",
                "openrouter",
                "-m",
                "x/y"
            ])
        );
    }

    #[test]
    fn leaves_everything_else_alone() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("health.json");
        std::fs::write(&f, r#"{"steer":{"coder":{"provider":"openrouter"}}}"#).unwrap();
        let mut not_chat = argv(&["hermes", "-p", "coder", "kanban", "list"]);
        assert!(apply(&mut not_chat, &f, None).unwrap().is_none());
        let mut other_profile = argv(&["hermes", "-p", "writer", "chat"]);
        assert!(apply(&mut other_profile, &f, None).unwrap().is_none());
        let mut no_file = argv(&["hermes", "-p", "coder", "chat"]);
        assert!(
            apply(&mut no_file, &dir.path().join("missing"), None)
                .unwrap()
                .is_none()
        );
        assert!(
            apply(&mut no_file, &dir.path().join("nodir/health.json"), None)
                .unwrap()
                .is_none()
        );
        std::fs::write(&f, "{broken").unwrap();
        assert!(matches!(
            apply(&mut no_file, &f, None),
            Err(HealthError::Parse { .. })
        ));
        assert_eq!(no_file.len(), 4);
    }

    /// A Hermes 0.22 worker argv for a task with `model_override` and
    /// `provider_override` set (`_worker_argv` in
    /// `hermes_cli/kanban_db_dispatch.py`).
    fn argv_022(provider: &str) -> Vec<OsString> {
        argv(&[
            "hermes",
            "-p",
            "coder",
            "--cli",
            "--accept-hooks",
            "-m",
            "openai/gpt-5.1",
            "--provider",
            provider,
            "chat",
            "-q",
            "work kanban task t1",
        ])
    }

    #[test]
    fn a_task_with_its_own_provider_override_is_not_steered() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("health.json");
        std::fs::write(
            &f,
            r#"{"steer":{"coder":{"provider":"openrouter","model":"openai/gpt-5.1","from":"openai-codex"}}}"#,
        )
        .unwrap();
        // The watchdog's native steering: the override is the steer target.
        let mut cmd = argv_022("openrouter");
        let c = consult(&mut cmd, &f, None, true, 0).unwrap();
        assert!(c.steered.is_none() && c.skip.is_none() && c.note.is_none());
        assert_eq!(cmd, argv_022("openrouter"));
        // A task pinned elsewhere by its owner: left alone, with one line.
        let mut cmd = argv_022("anthropic");
        let c = consult(&mut cmd, &f, None, true, 0).unwrap();
        assert!(c.steered.is_none());
        assert_eq!(
            c.note.as_deref(),
            Some("not steering this worker to openrouter: its task pins --provider anthropic")
        );
        assert_eq!(cmd, argv_022("anthropic"));
        // `--provider=P` counts too; `-m` alone (0.19's model_override) does not.
        let mut cmd = argv(&["hermes", "-p", "coder", "--provider=openrouter", "chat"]);
        assert!(apply(&mut cmd, &f, None).unwrap().is_none());
        assert_eq!(cmd.len(), 5);
        let mut cmd = argv(&["hermes", "-p", "coder", "-m", "gpt-5", "chat"]);
        assert!(apply(&mut cmd, &f, None).unwrap().is_some());
        assert_eq!(
            cmd[cmd.len() - 4..],
            argv(&["--provider", "openrouter", "-m", "openai/gpt-5.1"])[..]
        );
    }

    #[test]
    fn names_must_be_conservative() {
        for ok in [
            "openrouter",
            "x-ai/grok-4",
            "claude-sonnet-4@20250514",
            "qwen2.5:7b",
            "a+b",
        ] {
            assert!(safe_name(ok), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in [
            "",
            "-rf",
            "--help",
            ".hidden",
            "a b",
            "a;b",
            "a$b",
            "a\nb",
            "é",
            long.as_str(),
        ] {
            assert!(!safe_name(bad), "{bad:?}");
        }
    }
}
