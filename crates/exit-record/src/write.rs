//! Atomic record writes: a reader polling the directory never parses a partial file.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::paths::record_file_name;
use crate::schema::ExitRecord;

/// Why a record could not be written. The shim prints it and carries on.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot create record directory {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serialize exit record: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How hard to try to make a record durable.
#[derive(Clone, Copy, Debug)]
pub struct WriteOptions {
    /// fsync the file before the rename and the directory after it. Atomic
    /// visibility comes from the rename alone; fsync adds crash durability.
    pub fsync: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { fsync: true }
    }
}

/// Writes `record` as `<dir>/<id>.json` (mode 0600), creating `dir` (mode
/// 0700) when missing. The bytes go to a hidden temp file in the same
/// directory first and are renamed into place.
pub fn write_atomic(
    dir: &Path,
    record: &ExitRecord,
    opts: WriteOptions,
) -> Result<PathBuf, WriteError> {
    let body = serde_json::to_vec_pretty(record)?;
    if !dir.is_dir() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| WriteError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
    }
    let final_path = dir.join(record_file_name(&record.id));
    let tmp_path = dir.join(format!(".{}.tmp", record_file_name(&record.id)));
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError::Io { path, source }
    };
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp_path)
            .map_err(io_err(&tmp_path))?;
        file.write_all(&body).map_err(io_err(&tmp_path))?;
        file.write_all(b"\n").map_err(io_err(&tmp_path))?;
        if opts.fsync {
            file.sync_all().map_err(io_err(&tmp_path))?;
        }
        drop(file);
        std::fs::rename(&tmp_path, &final_path).map_err(io_err(&final_path))?;
        if opts.fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
        Ok(final_path.clone())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_path);
    }
    result
}
