//! The record directory: scan, read carefully, and move each record to
//! `done/` once handled or to `quarantine/` (with a `.reason` file) when it
//! cannot be trusted. Nothing is ever deleted except `done/` entries older
//! than the configured retention.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use exit_record::{ExitRecord, ReadLimits, RecordError, is_record_file_name, read_record};

pub struct RecordDir {
    pub dir: PathBuf,
    pub done: PathBuf,
    pub quarantine: PathBuf,
    pub limits: ReadLimits,
}

impl RecordDir {
    pub fn new(dir: &Path, max_bytes: u64) -> RecordDir {
        RecordDir {
            dir: dir.to_path_buf(),
            done: dir.join("done"),
            quarantine: dir.join("quarantine"),
            limits: ReadLimits {
                max_bytes,
                ..ReadLimits::default()
            },
        }
    }

    /// Creates the directories (0700) when missing.
    pub fn prepare(&self) -> std::io::Result<()> {
        for d in [&self.dir, &self.done, &self.quarantine] {
            if !d.is_dir() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(d)?;
            }
        }
        Ok(())
    }

    /// Record files waiting, oldest first (ids are time-ordered UUIDv7).
    pub fn scan(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(is_record_file_name))
            .map(|e| e.path())
            .collect();
        out.sort();
        Ok(out)
    }

    pub fn read(&self, path: &Path) -> Result<ExitRecord, RecordError> {
        read_record(path, &self.limits)
    }

    /// Moves a bad record aside with its reason; returns the new path.
    pub fn quarantine(&self, path: &Path, reason: &str) -> std::io::Result<PathBuf> {
        let name = path.file_name().unwrap_or_default();
        let target = unique(&self.quarantine.join(name));
        // The reason first: a full disk may refuse it, and the record is
        // moved aside all the same (the caller logs the reason too).
        let mut reason_path = target.clone().into_os_string();
        reason_path.push(".reason");
        if let Err(e) = std::fs::write(&reason_path, format!("{reason}\n")) {
            let _ = std::fs::remove_file(&reason_path);
            tracing::warn!(file = %target.display(), "cannot write the quarantine reason file ({e}); the reason is only in this log");
        }
        std::fs::rename(path, &target)?;
        Ok(target)
    }

    /// Moves a handled record to `done/`.
    /// Its modification time becomes the handling time: retention in
    /// `done/` counts from when a record was handled, not when it was
    /// written (a record handled after a long downtime is kept too).
    pub fn mark_done(&self, path: &Path) -> std::io::Result<()> {
        let name = path.file_name().unwrap_or_default();
        let target = unique(&self.done.join(name));
        std::fs::rename(path, &target)?;
        if let Err(e) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&target)
            .and_then(|f| f.set_modified(SystemTime::now()))
        {
            tracing::warn!(file = %target.display(), "cannot stamp handled record: {e}");
        }
        Ok(())
    }

    /// Deletes `done/` entries older than `keep`. Returns how many.
    pub fn prune_done(&self, keep: Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.done) else {
            return 0;
        };
        let cutoff = SystemTime::now().checked_sub(keep);
        let mut n = 0;
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .zip(cutoff)
                .is_some_and(|(m, c)| m < c);
            if old && std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        n
    }
}

/// Never overwrite an existing file in done/ or quarantine/.
fn unique(path: &Path) -> PathBuf {
    if !path.exists() {
        return path.to_path_buf();
    }
    for i in 1.. {
        let mut p = path.to_path_buf().into_os_string();
        p.push(format!(".{i}"));
        let p = PathBuf::from(p);
        if !p.exists() {
            return p;
        }
    }
    path.to_path_buf()
}
