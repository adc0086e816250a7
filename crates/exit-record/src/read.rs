//! The careful reader: every refusal says why, so the file can be quarantined with a reason.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::paths::{UnsafeDir, check_private_dir};
use crate::schema::{ExitRecord, SCHEMA_NAME, SCHEMA_VERSION};

/// Limits a reader enforces before trusting a file.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    /// Larger files are refused (default 1 MiB; a record is ~150 KiB at most
    /// with default capture sizes).
    pub max_bytes: u64,
    /// Refuse files not owned by this uid (`None`: no check).
    pub owner_uid: Option<u32>,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_bytes: 1024 * 1024,
            // SAFETY: geteuid has no preconditions and cannot fail.
            owner_uid: Some(unsafe { libc::geteuid() }),
        }
    }
}

/// Why a file is not a record we will act on.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: is a symbolic link; refused")]
    Symlink { path: PathBuf },
    #[error("{path}: not a regular file")]
    NotRegular { path: PathBuf },
    #[error("{path}: owned by uid {found}, expected uid {expected}; refused")]
    WrongOwner {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{path}: {size} bytes exceeds the {limit}-byte record limit")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid UTF-8 at byte {offset}")]
    InvalidUtf8 { path: PathBuf, offset: usize },
    #[error("{path}: line {line}, column {column}: {message}")]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: schema {found:?} is not {SCHEMA_NAME:?}")]
    WrongSchema { path: PathBuf, found: String },
    #[error("{path}: schema_version {found} is not supported (this build reads {SCHEMA_VERSION})")]
    UnsupportedVersion { path: PathBuf, found: u64 },
}

impl RecordError {
    /// Transient errors (the file vanished, a read failed) are retried;
    /// everything else means the file itself is bad and goes to quarantine.
    pub fn is_transient(&self) -> bool {
        match self {
            RecordError::Open { source, .. } | RecordError::Read { source, .. } => {
                source.raw_os_error() != Some(libc::ELOOP)
            }
            _ => false,
        }
    }
}

/// Opens `path` without following symlinks, checks type, owner and size, and
/// parses it as an [`ExitRecord`] of a known schema version.
pub fn read_record(path: &Path, limits: &ReadLimits) -> Result<ExitRecord, RecordError> {
    let checks = FileChecks {
        owner_uid: limits.owner_uid,
        refuse_writable_by_others: false,
        max_bytes: limits.max_bytes,
    };
    let bytes = read_checked(path, &checks).map_err(|refusal| {
        let path = path.to_path_buf();
        match refusal {
            Refusal::Symlink => RecordError::Symlink { path },
            Refusal::Open(source) => RecordError::Open { path, source },
            Refusal::Read(source) => RecordError::Read { path, source },
            Refusal::NotRegular => RecordError::NotRegular { path },
            Refusal::WrongOwner { found, expected } => RecordError::WrongOwner {
                path,
                found,
                expected,
            },
            // Not asked for here.
            Refusal::Writable { .. } => RecordError::NotRegular { path },
            Refusal::TooLarge { size } => RecordError::TooLarge {
                path,
                size,
                limit: limits.max_bytes,
            },
        }
    })?;
    parse_record(path, &bytes)
}

/// What [`read_checked`] asks of a file before reading it.
struct FileChecks {
    /// Refuse a file not owned by this uid (`None`: no check).
    owner_uid: Option<u32>,
    /// Refuse a file its group or others may write.
    refuse_writable_by_others: bool,
    /// Refuse a file longer than this.
    max_bytes: u64,
}

/// Why [`read_checked`] refused a file (the caller adds the path).
enum Refusal {
    Symlink,
    Open(std::io::Error),
    Read(std::io::Error),
    NotRegular,
    WrongOwner { found: u32, expected: u32 },
    Writable { mode: u32 },
    TooLarge { size: u64 },
}

/// Opens `path` without following a link (`O_NOFOLLOW`) and without
/// blocking on a FIFO (`O_NONBLOCK`), checks on the open file that it is a
/// regular file meeting `checks`, and reads at most `max_bytes` of it (a
/// file that grew past the limit meanwhile is refused too).
fn read_checked(path: &Path, checks: &FileChecks) -> Result<Vec<u8>, Refusal> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                Refusal::Symlink
            } else {
                Refusal::Open(source)
            }
        })?;
    let meta = file.metadata().map_err(Refusal::Read)?;
    if !meta.file_type().is_file() {
        return Err(Refusal::NotRegular);
    }
    if let Some(expected) = checks.owner_uid
        && meta.uid() != expected
    {
        return Err(Refusal::WrongOwner {
            found: meta.uid(),
            expected,
        });
    }
    if checks.refuse_writable_by_others && meta.mode() & 0o022 != 0 {
        return Err(Refusal::Writable {
            mode: meta.mode() & 0o7777,
        });
    }
    if meta.len() > checks.max_bytes {
        return Err(Refusal::TooLarge { size: meta.len() });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(checks.max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(Refusal::Read)?;
    if bytes.len() as u64 > checks.max_bytes {
        return Err(Refusal::TooLarge {
            size: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// Parses bytes already read (used by tests and fuzzing as well).
pub(crate) fn parse_record(path: &Path, bytes: &[u8]) -> Result<ExitRecord, RecordError> {
    let p = || path.to_path_buf();
    let text = std::str::from_utf8(bytes).map_err(|e| RecordError::InvalidUtf8 {
        path: p(),
        offset: e.valid_up_to(),
    })?;
    let json_err = |e: serde_json::Error| RecordError::Json {
        path: p(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    };
    // Check the envelope first so an unknown version is reported as such,
    // not as whatever field it happens to lack.
    #[derive(serde::Deserialize)]
    struct Envelope {
        schema: Option<String>,
        schema_version: Option<u64>,
    }
    let envelope: Envelope = serde_json::from_str(text).map_err(json_err)?;
    let schema = envelope.schema.unwrap_or_default();
    if schema != SCHEMA_NAME {
        return Err(RecordError::WrongSchema {
            path: p(),
            found: schema,
        });
    }
    let version = envelope.schema_version.unwrap_or(0);
    if version != u64::from(SCHEMA_VERSION) {
        return Err(RecordError::UnsupportedVersion {
            path: p(),
            found: version,
        });
    }
    let mut record: ExitRecord = serde_json::from_str(text).map_err(json_err)?;
    clamp_times(&mut record, jiff::Timestamp::now().as_second());
    Ok(record)
}

/// How far past the end of its run a record's reset time may lie. No
/// provider limit resets further out than a year (monthly quotas are the
/// longest known); anything beyond is clamped to this, and the watchdog
/// caps it again at `providers.max_cooldown`.
pub const MAX_RESET_HORIZON_S: i64 = 400 * 24 * 3600;

/// Range-checks the times a record carries, at the boundary, so no decision
/// code ever sees an absurd one (a `retry_after_s` of 1e300, a `resets_at`
/// near `i64::MAX`): `retry_after_s` is clamped to
/// `0..=`[`MAX_RESET_HORIZON_S`], `resets_at` to `0..=` the record's end
/// (or now, if that is earlier) plus [`MAX_RESET_HORIZON_S`]. A reset in
/// the past stays in the past (it means "retry now"). Clamping twice
/// changes nothing more, so a record still round-trips.
fn clamp_times(record: &mut ExitRecord, now: i64) {
    let base = record.ended_at.as_second().min(now);
    let Some(f) = record.failure.as_mut() else {
        return;
    };
    if let Some(s) = f.retry_after_s {
        f.retry_after_s = if s.is_nan() {
            None
        } else if s < 0.0 {
            Some(0.0)
        } else {
            Some(s.min(MAX_RESET_HORIZON_S as f64))
        };
    }
    if let Some(t) = f.resets_at {
        f.resets_at = Some(t.clamp(0, base.saturating_add(MAX_RESET_HORIZON_S).max(0)));
    }
}

/// Parses a record from memory, for fuzzing and tests.
pub fn parse_record_bytes(bytes: &[u8]) -> Result<ExitRecord, RecordError> {
    parse_record(Path::new("<memory>"), bytes)
}

/// Why a private file (the watchdog's state, the health file the shim
/// steers by) was not read.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("{0}")]
    UnsafeDir(#[from] UnsafeDir),
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: is a symbolic link; refused")]
    Symlink { path: PathBuf },
    #[error("{path}: not a regular file; refused")]
    NotRegular { path: PathBuf },
    #[error("{path}: owned by uid {found}, not by this user (uid {expected}); refused")]
    WrongOwner {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{path}: writable by its group or by others (mode {mode:04o}); refused")]
    Writable { path: PathBuf, mode: u32 },
    #[error("{path}: larger than {limit} bytes; refused")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl PrivateFileError {
    /// The file does not exist (an ordinary first start, no health yet).
    pub fn is_not_found(&self) -> bool {
        matches!(self, PrivateFileError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads a file only this user could have written, as OpenSSH's
/// `StrictModes` reads `authorized_keys`: its directory passes
/// [`check_private_dir`]; the file is opened without following a link
/// (`O_NOFOLLOW`) and without blocking on a FIFO (`O_NONBLOCK`), and must
/// be a regular file owned by this user, not writable by group or others,
/// and at most `max_bytes` long.
pub fn read_private_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, PrivateFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        check_private_dir(dir)?;
    }
    let checks = FileChecks {
        // SAFETY: geteuid has no preconditions and cannot fail.
        owner_uid: Some(unsafe { libc::geteuid() }),
        refuse_writable_by_others: true,
        max_bytes,
    };
    read_checked(path, &checks).map_err(|refusal| {
        let path = path.to_path_buf();
        match refusal {
            Refusal::Symlink => PrivateFileError::Symlink { path },
            Refusal::Open(source) => PrivateFileError::Open { path, source },
            Refusal::Read(source) => PrivateFileError::Read { path, source },
            Refusal::NotRegular => PrivateFileError::NotRegular { path },
            Refusal::WrongOwner { found, expected } => PrivateFileError::WrongOwner {
                path,
                found,
                expected,
            },
            Refusal::Writable { mode } => PrivateFileError::Writable { path, mode },
            Refusal::TooLarge { .. } => PrivateFileError::TooLarge {
                path,
                limit: max_bytes,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn with_failure(retry_after_s: &str, resets_at: &str, ended_at: &str) -> Vec<u8> {
        format!(
            r#"{{"schema": "{SCHEMA_NAME}", "schema_version": {SCHEMA_VERSION}, "id": "x",
              "argv": [], "cwd": null, "pid": null, "shim_pid": 1,
              "started_at": "{ended_at}", "ended_at": "{ended_at}", "duration_ms": 0,
              "exit": {{"code": 0, "signal": null, "reported_code": 75, "spawn_error": null}},
              "task": {{"id": null, "run_id": null, "board": null, "db": null, "profile": null, "claim_lock": null}},
              "stdout": {{"captured": false, "bytes_total": 0, "head": "", "tail": "", "truncated": false}},
              "stderr": {{"captured": false, "bytes_total": 0, "head": "", "tail": "", "truncated": false}},
              "failure": {{"class": "rate_limit", "signature": "s", "provider": null, "transient": true,
                          "matched_line": "429", "resets_at": {resets_at}, "retry_after_s": {retry_after_s}}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn absurd_reset_times_are_clamped_at_the_boundary() {
        let ended = "2025-01-01T00:00:00Z";
        let base = jiff::Timestamp::from_second(1_735_689_600)
            .unwrap()
            .as_second();
        for (retry, resets, want_retry, want_resets) in [
            (
                "1e300",
                "9223372036854775807",
                MAX_RESET_HORIZON_S as f64,
                base + MAX_RESET_HORIZON_S,
            ),
            ("-1e300", "-9223372036854775808", 0.0, 0),
            ("30.5", "1735689700", 30.5, 1_735_689_700),
        ] {
            let r = parse_record_bytes(&with_failure(retry, resets, ended)).unwrap();
            let f = r.failure.as_ref().unwrap();
            assert_eq!(f.retry_after_s, Some(want_retry), "{retry}");
            assert_eq!(f.resets_at, Some(want_resets), "{resets}");
            // Clamping is idempotent: the record round-trips.
            let again = parse_record_bytes(&serde_json::to_vec(&r).unwrap()).unwrap();
            assert_eq!(again, r);
        }
        // Beyond what JSON numbers or the fields can hold: refused, no panic.
        assert!(parse_record_bytes(&with_failure("1e400", "0", ended)).is_err());
        assert!(parse_record_bytes(&with_failure("0", "1e300", ended)).is_err());
        assert!(parse_record_bytes(&with_failure("0", "0", "99999-01-01T00:00:00Z")).is_err());
    }

    #[test]
    fn a_huge_size_limit_does_not_overflow() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("r.json");
        std::fs::write(&p, with_failure("1", "1", "2025-01-01T00:00:00Z")).unwrap();
        let limits = ReadLimits {
            max_bytes: u64::MAX,
            ..ReadLimits::default()
        };
        read_record(&p, &limits).unwrap();
    }

    #[test]
    fn private_files_refuse_links_fifos_and_loose_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("health.json");
        std::fs::write(&f, b"{}").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private_file(&f, 10).unwrap(), b"{}");
        assert!(matches!(
            read_private_file(&f, 1),
            Err(PrivateFileError::TooLarge { .. })
        ));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            read_private_file(&f, 10),
            Err(PrivateFileError::Writable { .. })
        ));
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(matches!(
            read_private_file(&link, 10),
            Err(PrivateFileError::Symlink { .. })
        ));
        let fifo = tmp.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_private_file(&fifo, 10),
            Err(PrivateFileError::NotRegular { .. })
        ));
        assert!(
            read_private_file(&tmp.path().join("none"), 10)
                .unwrap_err()
                .is_not_found()
        );
    }
}
