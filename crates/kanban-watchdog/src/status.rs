//! The daemon's view of the world, in one place: the HTTP `/status`
//! endpoint, `kanban-watchdog status` and the state file all read this.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub generated_at: i64,
    pub started_at: i64,
    pub pid: u32,
    pub dry_run: bool,
    pub board: String,
    /// What the board and its Hermes support (journal mode, optional
    /// columns, Hermes features), read at open and after every reopen;
    /// `None` while the board is unavailable.
    #[serde(default)]
    pub board_info: Option<hermes_board::BoardInfo>,
    /// Why the board cannot be used (missing, unreadable, or missing a
    /// column we rely on: each named), whole.
    #[serde(default)]
    pub board_problem: Option<String>,
    pub record_dir: String,
    /// Every watched board with its own dispatcher view (one entry when
    /// the config names a board). `dispatcher` sums them up.
    #[serde(default)]
    pub boards: Vec<BoardStatus>,
    pub dispatcher: DispatcherStatus,
    pub providers: Vec<ProviderStatus>,
    pub parked: Vec<ParkedStatus>,
    pub restarts: Vec<RestartStatus>,
    pub incidents: Vec<IncidentStatus>,
    pub counters: Counters,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DispatcherStatus {
    /// `ok`, `idle` (no ready work), `stalled`, or `unknown` (no board yet).
    pub state: String,
    pub stalled: bool,
    pub reason: Option<String>,
    pub last_progress_at: Option<i64>,
    pub next_cycle_at: Option<i64>,
    pub interval_s: f64,
    pub stall_after_s: f64,
    pub ready_tasks: u64,
    pub waiting_since: Option<i64>,
    pub gateway_pid: Option<i32>,
    pub gateway_up: Option<bool>,
}

/// One watched board.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BoardStatus {
    /// Hermes' slug (`default` for `<root>/kanban.db`).
    pub slug: String,
    pub db: String,
    #[serde(default)]
    pub info: Option<hermes_board::BoardInfo>,
    #[serde(default)]
    pub problem: Option<String>,
    /// `ok`, `idle`, `stalled` or `unknown`, as for the dispatcher.
    pub state: String,
    pub reason: Option<String>,
    pub ready_tasks: u64,
    pub waiting_since: Option<i64>,
    pub last_progress_at: Option<i64>,
    pub parked: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStatus {
    pub name: String,
    pub state: String,
    pub since: i64,
    /// Unhealthy until (epoch s); `None` with state `unhealthy` = until re-auth.
    pub until: Option<i64>,
    /// Kept as written when this build does not know it (a status file
    /// of a newer watchdog).
    pub class: Option<failure_signatures::ReadClass>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedStatus {
    pub task: String,
    /// The board's slug.
    #[serde(default)]
    pub board: String,
    pub kind: String,
    pub due_at: Option<i64>,
    pub provider: Option<String>,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartStatus {
    pub at: i64,
    pub result: String,
    pub detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentStatus {
    pub key: String,
    pub severity: String,
    pub since: i64,
    pub summary: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub records_handled: u64,
    pub records_quarantined: u64,
    pub board_writes: BTreeMap<String, u64>,
    pub board_busy_retries: u64,
    pub providers_skipped: u64,
    pub restarts: u64,
    pub alerts_sent: u64,
    pub alerts_failed: u64,
}
