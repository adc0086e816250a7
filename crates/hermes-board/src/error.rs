use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("cannot open board {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "board {path} does not have the Hermes 0.19 schema this build knows (missing: {}); refusing to write",
        missing.join(", ")
    )]
    UnknownSchema { path: PathBuf, missing: Vec<String> },
    #[error("board {path} still locked after {attempts} attempts; will retry later")]
    Busy { path: PathBuf, attempts: u32 },
    #[error("board {path} was replaced or deleted since it was opened; reopen it")]
    Replaced { path: PathBuf },
    #[error("board {path} was opened read-only; refusing to write")]
    ReadOnly { path: PathBuf },
    #[error("board query failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot append to audit log {path}: {source}")]
    Audit {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl BoardError {
    /// Worth retrying later (a lock), as opposed to a broken board.
    pub fn is_transient(&self) -> bool {
        match self {
            BoardError::Busy { .. } => true,
            BoardError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}
