//! Where everything is, resolved once from the config and the environment.
//! The Hermes home's layout is [`hermes_board::home`]'s.

use std::path::{Path, PathBuf};

use hermes_board::home::{self, DEFAULT_BOARD, board_path, home_dir};

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
            .unwrap_or_else(home::default_hermes_home);
        let kanban_home = home::kanban_home(&hermes_home);
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
                .unwrap_or_else(|| home::gateway_log(&hermes_home)),
            pid_file: cfg
                .dispatcher
                .pid_file
                .as_deref()
                .map(expand_tilde)
                .unwrap_or_else(|| home::pid_file(&hermes_home)),
            auth_store: cfg
                .providers
                .auth_store
                .as_deref()
                .map(expand_tilde)
                .unwrap_or_else(|| home::auth_store(&hermes_home)),
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
        home::auth_stores(&self.hermes_home, &self.auth_store)
    }

    /// `<root>/profiles/<name>/config.yaml`; the root `config.yaml` for `default`.
    pub fn profile_config(&self, profile: &str) -> PathBuf {
        home::profile_config(&self.hermes_home, profile)
    }
}

/// Which boards one watchdog watches.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BoardScope {
    /// The board a config names (`board` or `board_db`).
    One { slug: String, db: PathBuf },
    /// Every board of the kanban home (see [`hermes_board::home::discover_boards`]).
    All,
}

/// `$XDG_STATE_HOME/kanban-watchdog`, else `~/.local/state/kanban-watchdog`.
pub fn default_state_dir() -> PathBuf {
    exit_record::default_record_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/tmp/kanban-watchdog"))
}

pub fn expand_tilde(p: &Path) -> PathBuf {
    match p.strip_prefix("~") {
        Ok(rest) => home_dir().join(rest),
        Err(_) => p.to_path_buf(),
    }
}
