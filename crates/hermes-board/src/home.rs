//! The layout of a Hermes home, following Hermes 0.19's own rules
//! (docs/hermes-0.19-findings.md): where the boards, the gateway's log and
//! pid file, the credential stores and each profile's config live, and
//! which boards the gateway ticks.

use std::path::{Path, PathBuf};

use crate::env;

/// Hermes' name for the board at `<root>/kanban.db`.
pub const DEFAULT_BOARD: &str = "default";

/// A Hermes home with more boards than this is not one we know.
const MAX_BOARDS: usize = 256;
/// A Hermes home with more profiles than this is not one we know.
const MAX_PROFILES: usize = 1024;

/// `$HERMES_HOME` when set and not empty, else `~/.hermes`.
pub fn default_hermes_home() -> PathBuf {
    env_path(env::HOME).unwrap_or_else(|| home_dir().join(".hermes"))
}

/// Where the boards live: `$HERMES_KANBAN_HOME`, else the Hermes home
/// (shared by every profile, as Hermes' `kanban_home()`).
pub fn kanban_home(hermes_home: &Path) -> PathBuf {
    env_path(env::KANBAN_HOME).unwrap_or_else(|| hermes_home.to_path_buf())
}

/// `<root>/logs/gateway.log`.
pub fn gateway_log(hermes_home: &Path) -> PathBuf {
    hermes_home.join("logs").join("gateway.log")
}

/// `<root>/gateway.pid`.
pub fn pid_file(hermes_home: &Path) -> PathBuf {
    hermes_home.join("gateway.pid")
}

/// The root credential store, `<root>/auth.json`.
pub fn auth_store(hermes_home: &Path) -> PathBuf {
    hermes_home.join("auth.json")
}

/// Every credential store Hermes reads a provider's credentials from:
/// `root_store` (the root one, normally [`auth_store`]), then each
/// profile's own `<root>/profiles/<name>/auth.json` (its credential pool,
/// which shadows the root one per provider), in name order. Profiles are
/// listed afresh on each call, so a new profile is seen at the next call.
pub fn auth_stores(hermes_home: &Path, root_store: &Path) -> Vec<PathBuf> {
    let mut profiles: Vec<PathBuf> = std::fs::read_dir(hermes_home.join("profiles"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path().join("auth.json"))
                .take(MAX_PROFILES)
                .collect()
        })
        .unwrap_or_default();
    profiles.sort();
    let mut stores = vec![root_store.to_path_buf()];
    stores.extend(profiles.into_iter().filter(|p| p != root_store));
    stores
}

/// `<root>/profiles/<name>/config.yaml`; the root `config.yaml` for `default`.
pub fn profile_config(hermes_home: &Path, profile: &str) -> PathBuf {
    if profile == "default" || profile.is_empty() {
        hermes_home.join("config.yaml")
    } else {
        hermes_home
            .join("profiles")
            .join(profile)
            .join("config.yaml")
    }
}

/// A Hermes board slug: 1-64 of `a-z 0-9 - _`, not starting with `-`/`_`
/// (`_BOARD_SLUG_RE` in Hermes' `kanban_db.py`).
pub fn valid_board_slug(slug: &str) -> bool {
    let b = slug.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

/// The boards of a kanban home, as Hermes' gateway ticks them: `default`
/// (`<root>/kanban.db`, always listed, it may not exist yet) and every
/// `<root>/kanban/boards/<slug>/` with a `kanban.db` whose `board.json` does
/// not say `archived`, in slug order. Directories with an invalid slug are
/// skipped (Hermes cannot name them either).
pub fn discover_boards(kanban_home: &Path) -> Vec<(String, PathBuf)> {
    let mut boards = vec![(
        DEFAULT_BOARD.to_string(),
        board_path(kanban_home, DEFAULT_BOARD),
    )];
    let root = kanban_home.join("kanban").join("boards");
    let Ok(entries) = std::fs::read_dir(&root) else {
        return boards;
    };
    let mut named: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let slug = e.file_name().to_str()?.to_string();
            if slug == DEFAULT_BOARD || !valid_board_slug(&slug) {
                return None;
            }
            let db = e.path().join("kanban.db");
            // symlink_metadata: a board is a real file, not a link elsewhere.
            let is_file = std::fs::symlink_metadata(&db).is_ok_and(|m| m.is_file());
            (is_file && !board_archived(&e.path())).then_some((slug, db))
        })
        .take(MAX_BOARDS)
        .collect();
    named.sort();
    boards.extend(named);
    boards
}

/// `board.json` says `"archived": true` (Hermes keeps a tombstone).
fn board_archived(dir: &Path) -> bool {
    /// board.json is a few hundred bytes; a larger one is not Hermes'.
    const MAX_META: u64 = 64 * 1024;
    let path = dir.join("board.json");
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return false;
    };
    if !meta.is_file() || meta.len() > MAX_META {
        return false;
    }
    std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("archived").and_then(serde_json::Value::as_bool))
        .unwrap_or(false)
}

/// Board `default` -> `<root>/kanban.db`; others `<root>/kanban/boards/<slug>/kanban.db`.
pub fn board_path(root: &Path, board: &str) -> PathBuf {
    if board == DEFAULT_BOARD {
        root.join("kanban.db")
    } else {
        root.join("kanban")
            .join("boards")
            .join(board)
            .join("kanban.db")
    }
}

/// `gateway.pid` as Hermes 0.19 writes it: JSON with the pid and, where
/// Hermes could read it, the process's start time (`/proc` ticks, or
/// psutil's `create_time * 100`); older files hold the bare pid.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct PidFile {
    pub pid: i32,
    #[serde(default)]
    pub start_time: Option<u64>,
}

impl PidFile {
    /// Reads and parses `path`; `None` when it is missing or unreadable.
    pub fn read(path: &Path) -> Option<PidFile> {
        let text = std::fs::read_to_string(path).ok()?;
        PidFile::parse(&text)
    }

    /// The JSON form, else a bare pid.
    pub fn parse(text: &str) -> Option<PidFile> {
        serde_json::from_str(text).ok().or_else(|| {
            text.trim().parse().ok().map(|pid| PidFile {
                pid,
                start_time: None,
            })
        })
    }
}

fn env_path(key: &str) -> Option<PathBuf> {
    std::env::var_os(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `$HOME`, else `/`.
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}
