//! Where everything is, resolved once from the config and the environment,
//! following Hermes 0.19's own rules (docs/hermes-0.19-findings.md).

use std::path::{Path, PathBuf};

use crate::config::Config;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Paths {
    pub hermes_home: PathBuf,
    /// Where the boards live: `$HERMES_KANBAN_HOME`, else the Hermes home
    /// (shared by every profile, as Hermes' `kanban_home()`).
    pub kanban_home: PathBuf,
    /// The one board a config names, or every board of the home.
    pub boards: BoardScope,
    /// The named board, or the home's `default` board when all are watched.
    pub board_db: PathBuf,
    pub record_dir: PathBuf,
    pub state_dir: PathBuf,
    pub gateway_log: PathBuf,
    pub pid_file: PathBuf,
    pub auth_store: PathBuf,
}

impl Paths {
    pub fn resolve(cfg: &Config) -> Paths {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let hermes_home = cfg
            .hermes_home
            .as_deref()
            .map(expand_tilde)
            .or_else(|| env("HERMES_HOME"))
            .unwrap_or_else(|| home().join(".hermes"));
        let kanban_home = env("HERMES_KANBAN_HOME").unwrap_or_else(|| hermes_home.clone());
        let boards = match (&cfg.board_db, &cfg.board) {
            (Some(db), _) => BoardScope::One {
                slug: cfg.board.clone().unwrap_or_else(|| DEFAULT_BOARD.into()),
                db: expand_tilde(db),
            },
            (None, Some(slug)) => BoardScope::One {
                slug: slug.clone(),
                db: board_path(&kanban_home, slug),
            },
            (None, None) => BoardScope::All,
        };
        let board_db = match &boards {
            BoardScope::One { db, .. } => db.clone(),
            BoardScope::All => board_path(&kanban_home, DEFAULT_BOARD),
        };
        let state_dir = cfg
            .state_dir
            .as_deref()
            .map(expand_tilde)
            .unwrap_or_else(default_state_dir);
        let record_dir = cfg
            .record_dir
            .as_deref()
            .map(expand_tilde)
            .or_else(|| env("WORKER_SHIM_RECORD_DIR"))
            .unwrap_or_else(exit_record::default_record_dir);
        Paths {
            gateway_log: cfg
                .dispatcher
                .gateway_log
                .as_deref()
                .map(expand_tilde)
                .unwrap_or_else(|| hermes_home.join("logs").join("gateway.log")),
            pid_file: cfg
                .dispatcher
                .pid_file
                .as_deref()
                .map(expand_tilde)
                .unwrap_or_else(|| hermes_home.join("gateway.pid")),
            auth_store: cfg
                .providers
                .auth_store
                .as_deref()
                .map(expand_tilde)
                .unwrap_or_else(|| hermes_home.join("auth.json")),
            hermes_home,
            kanban_home,
            boards,
            board_db,
            record_dir,
            state_dir,
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }
    pub fn audit_log(&self) -> PathBuf {
        self.state_dir.join("audit.jsonl")
    }
    /// Provider health and steering, read by worker-shim at spawn.
    pub fn health_file(&self) -> PathBuf {
        self.state_dir.join("health.json")
    }
    /// The address the HTTP endpoint really bound (for `status`).
    pub fn http_addr_file(&self) -> PathBuf {
        self.state_dir.join("http.addr")
    }
    /// Operator requests (`provider reset`) dropped here as files.
    pub fn requests_dir(&self) -> PathBuf {
        self.state_dir.join("requests")
    }
    pub fn restart_log(&self) -> PathBuf {
        self.state_dir.join("restart.log")
    }
    pub fn done_dir(&self) -> PathBuf {
        self.record_dir.join("done")
    }
    pub fn quarantine_dir(&self) -> PathBuf {
        self.record_dir.join("quarantine")
    }
    /// Every credential store Hermes reads a provider's credentials from:
    /// the root store (`providers.auth_store`, default `<root>/auth.json`),
    /// then each profile's own `<root>/profiles/<name>/auth.json` (its
    /// credential pool, which shadows the root one per provider), in name
    /// order. Profiles are listed afresh on each call, so a new profile is
    /// seen at the next check.
    pub fn auth_stores(&self) -> Vec<PathBuf> {
        /// A Hermes home with more profiles than this is not one we know.
        const MAX_PROFILES: usize = 1024;
        let mut profiles: Vec<PathBuf> = std::fs::read_dir(self.hermes_home.join("profiles"))
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
        let mut stores = vec![self.auth_store.clone()];
        stores.extend(profiles.into_iter().filter(|p| *p != self.auth_store));
        stores
    }

    /// `<root>/profiles/<name>/config.yaml`; the root `config.yaml` for `default`.
    pub fn profile_config(&self, profile: &str) -> PathBuf {
        if profile == "default" || profile.is_empty() {
            self.hermes_home.join("config.yaml")
        } else {
            self.hermes_home
                .join("profiles")
                .join(profile)
                .join("config.yaml")
        }
    }
}

/// Which boards one watchdog watches.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BoardScope {
    /// The board a config names (`board` or `board_db`).
    One { slug: String, db: PathBuf },
    /// Every board of the kanban home (see [`discover_boards`]).
    All,
}

/// Hermes' name for the board at `<root>/kanban.db`.
pub const DEFAULT_BOARD: &str = "default";

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

/// A Hermes home with more boards than this is not one we know.
const MAX_BOARDS: usize = 256;

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

/// `$XDG_STATE_HOME/kanban-watchdog`, else `~/.local/state/kanban-watchdog`.
pub fn default_state_dir() -> PathBuf {
    exit_record::default_record_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/tmp/kanban-watchdog"))
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

pub fn expand_tilde(p: &Path) -> PathBuf {
    match p.strip_prefix("~") {
        Ok(rest) => home().join(rest),
        Err(_) => p.to_path_buf(),
    }
}
