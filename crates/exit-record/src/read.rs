//! The careful reader: every refusal says why, so the file can be quarantined with a reason.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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
    let p = || path.to_path_buf();
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                RecordError::Symlink { path: p() }
            } else {
                RecordError::Open { path: p(), source }
            }
        })?;
    let meta = file
        .metadata()
        .map_err(|source| RecordError::Read { path: p(), source })?;
    if !meta.file_type().is_file() {
        return Err(RecordError::NotRegular { path: p() });
    }
    if let Some(expected) = limits.owner_uid
        && meta.uid() != expected
    {
        return Err(RecordError::WrongOwner {
            path: p(),
            found: meta.uid(),
            expected,
        });
    }
    if meta.len() > limits.max_bytes {
        return Err(RecordError::TooLarge {
            path: p(),
            size: meta.len(),
            limit: limits.max_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(limits.max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| RecordError::Read { path: p(), source })?;
    if bytes.len() as u64 > limits.max_bytes {
        return Err(RecordError::TooLarge {
            path: p(),
            size: bytes.len() as u64,
            limit: limits.max_bytes,
        });
    }
    parse_record(path, &bytes)
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
    serde_json::from_str(text).map_err(json_err)
}

/// Parses a record from memory, for fuzzing and tests.
pub fn parse_record_bytes(bytes: &[u8]) -> Result<ExitRecord, RecordError> {
    parse_record(Path::new("<memory>"), bytes)
}
