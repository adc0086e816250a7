//! Atomic record writes: a reader polling the directory never parses a partial file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::atomic::{AtomicOptions, TempName, write_file_atomic_with};

use crate::paths::{UnsafeDir, ensure_private_dir, record_file_name};
use crate::schema::ExitRecord;

/// Why a record could not be written. The shim prints it and carries on.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The directory could not be created, or another user could write to
    /// it (see [`crate::check_private_dir`]): nothing is written there.
    #[error("{0}")]
    UnsafeDir(#[from] UnsafeDir),
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
/// 0700) when missing, with [`crate::write_file_atomic`]: the bytes go to a hidden
/// temp file in the same directory first (created with `O_EXCL|O_NOFOLLOW`:
/// never through a link or into a file someone else left there) and are
/// renamed into place.
///
/// A directory another user owns or could write to is refused before
/// anything is written (see [`crate::check_private_dir`]): a record there
/// could be deleted or forged, and a planted link could redirect the write.
pub fn write_atomic(
    dir: &Path,
    record: &ExitRecord,
    opts: WriteOptions,
) -> Result<PathBuf, WriteError> {
    // The bytes are streamed into the temp file: a record holds up to two
    // head+tail captures (more once JSON escapes them), never worth a copy
    // in the shim's memory. A record that could not be serialized (none of
    // its types can fail) would leave no file: the temp file is removed.
    ensure_private_dir(dir)?;
    let final_path = dir.join(record_file_name(&record.id));
    let atomic = AtomicOptions {
        fsync: opts.fsync,
        temp: TempName::Fixed,
        ..AtomicOptions::default()
    };
    let body = |file: &mut std::fs::File| {
        let mut out = std::io::BufWriter::with_capacity(16 * 1024, file);
        serde_json::to_writer_pretty(&mut out, record).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
        out.flush()
    };
    write_file_atomic_with(&final_path, atomic, body).map_err(|source| WriteError::Io {
        path: final_path.clone(),
        source,
    })?;
    Ok(final_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_directory_others_can_write_gets_no_record() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("records");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let now = jiff::Timestamp::now();
        let rec = ExitRecord {
            schema: crate::SCHEMA_NAME.into(),
            schema_version: crate::SCHEMA_VERSION,
            id: crate::new_record_id(),
            argv: vec![],
            cwd: None,
            pid: None,
            shim_pid: 1,
            started_at: now,
            ended_at: now,
            duration_ms: 0,
            exit: Default::default(),
            task: Default::default(),
            stdout: Default::default(),
            stderr: Default::default(),
            failure: None,
            steered: None,
            run_at_exit: None,
            skipped: None,
        };
        let err = write_atomic(&dir, &rec, WriteOptions { fsync: false }).unwrap_err();
        assert!(matches!(err, WriteError::UnsafeDir(_)), "{err}");
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
        // A link planted at the temp name is never written through.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(format!(".{}.json.tmp", rec.id))).unwrap();
        assert!(write_atomic(&dir, &rec, WriteOptions { fsync: false }).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(dir.join(format!(".{}.json.tmp", rec.id))).is_ok());
    }
}
