//! The audit log: one JSON line per board change, appended after commit.
//!
//! The board change is what counts: once it is committed, a failed append
//! (a full disk, an I/O error) must not turn the write into an error, or the
//! caller would count, log and alert it as not done although it is on the
//! board. So [`AuditLog::append`] reports the failure (an error log line,
//! [`AuditLog::failed_appends`]) and keeps the line to write before the next
//! one, as journald and rsyslog queue what they cannot write yet.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{BoardError, types::Change};

/// Lines kept in memory while the file refuses them; older ones are dropped
/// (and counted) beyond this.
const MAX_PENDING: usize = 1000;

pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// Lines not written yet, oldest first.
    pending: VecDeque<Vec<u8>>,
    /// A failed write may have left half a line: start the next on a new one.
    torn: bool,
    failed_appends: u64,
    dropped: u64,
}

impl AuditLog {
    /// Opens (creates, 0600) the log for appending. Never through a link
    /// (`O_NOFOLLOW`) and never blocking on a FIFO (`O_NONBLOCK`); the file
    /// must be a regular file of this user: a link planted at its name
    /// would otherwise have us append to any file the link points at.
    pub fn open(path: &Path) -> Result<AuditLog, BoardError> {
        let err = |source| BoardError::Audit {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent()
            && std::fs::symlink_metadata(dir).is_err()
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    err(std::io::Error::other(
                        "it is a symbolic link; refusing to write through it",
                    ))
                } else {
                    err(e)
                }
            })?;
        let meta = file.metadata().map_err(err)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if !meta.file_type().is_file() || meta.uid() != me {
            return Err(err(std::io::Error::other(format!(
                "not a regular file of this user (uid {me}); refusing to write to it"
            ))));
        }
        Ok(AuditLog {
            path: path.to_path_buf(),
            file,
            pending: VecDeque::new(),
            torn: false,
            failed_appends: 0,
            dropped: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends failed so far (each also logged as an error).
    pub fn failed_appends(&self) -> u64 {
        self.failed_appends
    }

    /// Lines waiting for the file to take them again.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Lines given up on because more than [`MAX_PENDING`] waited.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Appends `change` after its commit. Never fails: a line the file
    /// refuses is reported and kept for the next append (see the module
    /// documentation).
    pub(crate) fn append(&mut self, change: &Change) {
        match serde_json::to_vec(change) {
            Ok(mut line) => {
                line.push(b'\n');
                if self.pending.len() >= MAX_PENDING {
                    self.pending.pop_front();
                    self.dropped += 1;
                }
                self.pending.push_back(line);
            }
            Err(e) => {
                self.failed_appends += 1;
                tracing::error!(audit = %self.path.display(), "cannot render an audit line: {e}");
                return;
            }
        }
        if let Err(e) = self.flush_pending() {
            self.failed_appends += 1;
            tracing::error!(
                audit = %self.path.display(),
                pending = self.pending.len(),
                dropped = self.dropped,
                "cannot append to the audit log ({e}); the board change is committed, \
                 the line is kept and written with the next one"
            );
        }
    }

    fn flush_pending(&mut self) -> std::io::Result<()> {
        while let Some(line) = self.pending.front() {
            let mut buf = Vec::with_capacity(line.len() + 1);
            if self.torn {
                buf.push(b'\n');
            }
            buf.extend_from_slice(line);
            if let Err(e) = self.file.write_all(&buf) {
                self.torn = true;
                return Err(e);
            }
            self.torn = false;
            self.pending.pop_front();
        }
        Ok(())
    }
}
