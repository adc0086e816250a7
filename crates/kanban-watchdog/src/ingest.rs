//! The record directory: scan, read carefully, and move each record to
//! `done/` once handled or to `quarantine/` (with a `.reason` file) when it
//! cannot be trusted. Nothing is ever deleted except `done/` entries older
//! than the configured retention.

use std::os::unix::fs::OpenOptionsExt;
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

    /// Creates the directories (0700) when missing and refuses any that
    /// another user owns or could write to, or that sits below one (see
    /// [`exit_record::check_private_dir`]: OpenSSH's `StrictModes` rule).
    /// The default `/tmp/kanban-watchdog-<uid>` is a predictable name that
    /// another local user can create first, and whoever owns the directory
    /// can delete or forge records and plant links.
    pub fn prepare(&self) -> Result<(), exit_record::UnsafeDir> {
        for d in [&self.dir, &self.done, &self.quarantine] {
            exit_record::ensure_private_dir(d)?;
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
    /// Neither the reason file nor the move ever goes through a link or
    /// over an existing entry: the reason is created `O_EXCL|O_NOFOLLOW`
    /// (0600) and the record moved with `RENAME_NOREPLACE`.
    pub fn quarantine(&self, path: &Path, reason: &str) -> std::io::Result<PathBuf> {
        let name = path.file_name().unwrap_or_default();
        let target = unique(&self.quarantine.join(name), &[".reason"]);
        // The reason first: a full disk may refuse it, and the record is
        // moved aside all the same (the caller logs the reason too).
        let mut reason_path = target.clone().into_os_string();
        reason_path.push(".reason");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&reason_path)
            .map_err(|e| (e, false))
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(format!("{reason}\n").as_bytes())
                    .map_err(|e| (e, true))
            });
        if let Err((e, created)) = written {
            if created {
                let _ = std::fs::remove_file(&reason_path);
            }
            tracing::warn!(file = %target.display(), "cannot write the quarantine reason file ({e}); the reason is only in this log");
        }
        rename_noreplace(path, &target)?;
        Ok(target)
    }

    /// Moves a handled record to `done/`.
    /// Its modification time becomes the handling time: retention in
    /// `done/` counts from when a record was handled, not when it was
    /// written (a record handled after a long downtime is kept too).
    pub fn mark_done(&self, path: &Path) -> std::io::Result<()> {
        let name = path.file_name().unwrap_or_default();
        let target = unique(&self.done.join(name), &[]);
        rename_noreplace(path, &target)?;
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

/// A name in done/ or quarantine/ that nothing uses yet, with nothing at
/// `<name><suffix>` either for each of `companions`. A link counts as
/// existing, dangling or not (`symlink_metadata`, never `exists()`).
fn unique(path: &Path, companions: &[&str]) -> PathBuf {
    let taken = |p: &Path| {
        std::fs::symlink_metadata(p).is_ok()
            || companions.iter().any(|c| {
                let mut q = p.to_path_buf().into_os_string();
                q.push(c);
                std::fs::symlink_metadata(q).is_ok()
            })
    };
    if !taken(path) {
        return path.to_path_buf();
    }
    for i in 1..10_000u32 {
        let mut p = path.to_path_buf().into_os_string();
        p.push(format!(".{i}"));
        let p = PathBuf::from(p);
        if !taken(&p) {
            return p;
        }
    }
    let mut p = path.to_path_buf().into_os_string();
    p.push(format!(".{}", exit_record::new_record_id()));
    PathBuf::from(p)
}

/// rename(2) that never replaces an existing entry: `renameat2` with
/// `RENAME_NOREPLACE` on Linux, `renamex_np` with `RENAME_EXCL` on macOS;
/// where the filesystem does not support the flag (or elsewhere, and on
/// Linux with the `portable` feature), a plain rename after [`unique`]
/// checked the name.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(any(
        all(target_os = "linux", not(feature = "portable")),
        target_os = "macos"
    ))]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
        };
        let (a, b) = (c(from)?, c(to)?);
        // SAFETY: both are valid NUL-terminated paths; the call only reads them.
        #[cfg(target_os = "linux")]
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        // SAFETY: as above.
        #[cfg(target_os = "macos")]
        let rc = unsafe { libc::renamex_np(a.as_ptr(), b.as_ptr(), libc::RENAME_EXCL) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::ENOTSUP) => {}
            _ => return Err(e),
        }
    }
    std::fs::rename(from, to)
}

#[cfg(test)]
mod tests {
    use super::rename_noreplace;

    #[test]
    fn rename_noreplace_moves_and_with_the_flag_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "first").unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "first");
        std::fs::write(&a, "second").unwrap();
        let replaced = rename_noreplace(&a, &b);
        if cfg!(any(
            all(target_os = "linux", not(feature = "portable")),
            target_os = "macos"
        )) {
            let e = replaced.expect_err("an existing entry is never replaced");
            assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
            assert_eq!(std::fs::read_to_string(&b).unwrap(), "first");
        } else {
            // The fallback relies on `unique` having checked the name.
            replaced.unwrap();
            assert_eq!(std::fs::read_to_string(&b).unwrap(), "second");
        }
    }
}
