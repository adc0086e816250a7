//! The audit log: one JSON line per board change, appended after commit.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{BoardError, types::Change};

pub struct AuditLog {
    path: PathBuf,
    file: File,
}

impl AuditLog {
    pub fn open(path: &Path) -> Result<AuditLog, BoardError> {
        let err = |source| BoardError::Audit {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn append(&mut self, change: &Change) -> Result<(), BoardError> {
        let mut line = serde_json::to_vec(change).map_err(|e| BoardError::Audit {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|source| BoardError::Audit {
                path: self.path.clone(),
                source,
            })
    }
}
