//! The columns this crate relies on, checked at open.

use std::path::Path;

use rusqlite::Connection;

use crate::BoardError;

/// Every (table, column) read or written here.
pub const REQUIRED_COLUMNS: &[(&str, &[&str])] = &[
    (
        "tasks",
        &[
            "id",
            "title",
            "assignee",
            "status",
            "priority",
            "created_at",
            "claim_lock",
            "claim_expires",
            "worker_pid",
            "consecutive_failures",
            "last_failure_error",
            "current_run_id",
            "model_override",
        ],
    ),
    (
        "task_runs",
        &[
            "id",
            "task_id",
            "status",
            "claim_lock",
            "claim_expires",
            "worker_pid",
            "started_at",
            "ended_at",
            "outcome",
            "summary",
            "error",
        ],
    ),
    (
        "task_events",
        &["id", "task_id", "run_id", "kind", "payload", "created_at"],
    ),
    ("task_links", &["parent_id", "child_id"]),
];

pub fn check(conn: &Connection, path: &Path) -> Result<(), BoardError> {
    let mut missing = Vec::new();
    for (table, columns) in REQUIRED_COLUMNS {
        let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
        let have: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<Result<_, _>>()?;
        if have.is_empty() {
            missing.push(format!("table {table}"));
            continue;
        }
        for c in *columns {
            if !have.iter().any(|h| h == c) {
                missing.push(format!("{table}.{c}"));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(BoardError::UnknownSchema {
            path: path.to_path_buf(),
            missing,
        })
    }
}
