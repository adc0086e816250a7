//! Where everything is, resolved once from the config and the environment,
//! following Hermes 0.19's own rules (docs/hermes-0.19-findings.md).

use std::path::{Path, PathBuf};

use crate::config::Config;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Paths {
    pub hermes_home: PathBuf,
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
        let board_db = cfg
            .board_db
            .as_deref()
            .map(expand_tilde)
            .unwrap_or_else(|| board_path(&hermes_home, &cfg.board));
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

/// Board `default` -> `<root>/kanban.db`; others `<root>/kanban/boards/<slug>/kanban.db`.
pub fn board_path(root: &Path, board: &str) -> PathBuf {
    if board == "default" {
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
