//! The daemon's view of the world, in one place: the HTTP `/status`
//! endpoint, `kanban-watchdog status` and the state file all read this.
//!
//! States are enums, each read back as a [`ReadName`]: `status` reads the
//! snapshot of a daemon or state file that may be of another build, and
//! the daemon reads its own state file back after an upgrade or a
//! downgrade; a state name one build does not know is shown and kept as
//! written instead of refusing the whole snapshot (and, for the daemon,
//! setting aside the state file with its provider health).

use std::collections::BTreeMap;

use exit_record::ReadName;
use exit_record::health::HealthState;
use hermes_board::Kind;
use serde::{Deserialize, Serialize};

use crate::alerts::Severity;
use crate::restart::RestartResult;

/// How the dispatcher is doing on a board, or on all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchState {
    /// Ready work is being picked up.
    Ok,
    /// No ready work.
    Idle,
    /// Ready work waits longer than `stall_after` with no progress.
    Stalled,
    /// No board yet.
    #[default]
    Unknown,
}

impl DispatchState {
    /// Its name, as serialized (`ok`, `idle`, `stalled`, `unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            DispatchState::Ok => "ok",
            DispatchState::Idle => "idle",
            DispatchState::Stalled => "stalled",
            DispatchState::Unknown => "unknown",
        }
    }
}

impl AsRef<str> for DispatchState {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

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
    pub state: ReadName<DispatchState>,
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoardStatus {
    /// Hermes' slug (`default` for `<root>/kanban.db`).
    pub slug: String,
    pub db: String,
    #[serde(default)]
    pub info: Option<hermes_board::BoardInfo>,
    #[serde(default)]
    pub problem: Option<String>,
    /// `ok`, `idle`, `stalled` or `unknown`, as for the dispatcher.
    pub state: ReadName<DispatchState>,
    pub reason: Option<String>,
    pub ready_tasks: u64,
    pub waiting_since: Option<i64>,
    pub last_progress_at: Option<i64>,
    pub parked: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStatus {
    pub name: String,
    /// `healthy`, `unhealthy` or `probing`.
    pub state: ReadName<HealthState>,
    pub since: i64,
    /// Unhealthy until (epoch s); `None` with state `unhealthy` = until re-auth.
    pub until: Option<i64>,
    /// Kept as written when this build does not know it (a status file
    /// of a newer watchdog).
    pub class: Option<failure_signatures::ReadClass>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedStatus {
    pub task: String,
    /// The board's slug.
    #[serde(default)]
    pub board: String,
    /// `parked`, `held`, `requeued` or `blocked`.
    pub kind: ReadName<Kind>,
    pub due_at: Option<i64>,
    pub provider: Option<String>,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartStatus {
    pub at: i64,
    /// `started`, `failed_to_start`, `recovered`, `not_recovered` or `limited`.
    pub result: ReadName<RestartResult>,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentStatus {
    pub key: String,
    /// `warning` or `critical`.
    pub severity: ReadName<Severity>,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each state serializes as the name it had as a string, and reads back.
    fn same_name<T>(value: T, name: &str)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + Copy,
    {
        assert_eq!(serde_json::to_value(value).unwrap(), name, "{value:?}");
        let back: ReadName<T> = serde_json::from_value(name.into()).unwrap();
        assert_eq!(back, ReadName::Known(value));
    }

    #[test]
    fn every_state_keeps_the_name_it_had_as_a_string() {
        for s in [
            DispatchState::Ok,
            DispatchState::Idle,
            DispatchState::Stalled,
            DispatchState::Unknown,
        ] {
            same_name(s, s.as_str());
        }
        same_name(DispatchState::Ok, "ok");
        same_name(DispatchState::Unknown, "unknown");
        for s in [
            HealthState::Healthy,
            HealthState::Unhealthy,
            HealthState::Probing,
        ] {
            same_name(s, s.as_str());
        }
        for k in Kind::ALL {
            same_name(k, k.as_str());
        }
        same_name(Kind::Requeued, "requeued");
        for r in RestartResult::ALL {
            same_name(r, r.as_str());
        }
        same_name(RestartResult::FailedToStart, "failed_to_start");
        same_name(RestartResult::NotRecovered, "not_recovered");
        for s in [Severity::Warning, Severity::Critical] {
            same_name(s, s.as_str());
        }
        same_name(Severity::Critical, "critical");
    }

    const WITH_STATES: &str = r#"{"version":"0.1.0","generated_at":10,"started_at":1,"pid":7,
        "dry_run":false,"board":"/b/kanban.db","board_info":null,"board_problem":null,"record_dir":"/r",
        "boards":[{"slug":"default","db":"/b/kanban.db","info":null,"problem":null,"state":"STATE","reason":null,
                   "ready_tasks":0,"waiting_since":null,"last_progress_at":5,"parked":1}],
        "dispatcher":{"state":"STATE","stalled":false,"reason":null,"last_progress_at":5,
                      "next_cycle_at":65,"interval_s":60.0,"stall_after_s":180.0,"ready_tasks":0,
                      "waiting_since":null,"gateway_pid":null,"gateway_up":null},
        "providers":[{"name":"p","state":"PROVIDER","since":3,"until":null,"class":null,"reason":null}],
        "parked":[{"task":"t1","board":"default","kind":"KIND","due_at":null,"provider":null,"reason":"r"}],
        "restarts":[{"at":4,"result":"RESULT","detail":"d"}],
        "incidents":[{"key":"k","severity":"SEVERITY","since":2,"summary":"s"}],
        "counters":{"records_handled":0,"records_quarantined":0,"board_writes":{},
                    "board_busy_retries":0,"providers_skipped":0,"restarts":0,
                    "alerts_sent":0,"alerts_failed":0}}"#;

    fn with_states(
        state: &str,
        provider: &str,
        kind: &str,
        result: &str,
        severity: &str,
    ) -> String {
        WITH_STATES
            .replace("STATE", state)
            .replace("PROVIDER", provider)
            .replace("KIND", kind)
            .replace("RESULT", result)
            .replace("SEVERITY", severity)
    }

    #[test]
    fn known_states_read_as_known_and_write_the_same_text() {
        let text = with_states("stalled", "unhealthy", "held", "not_recovered", "critical");
        let s: Status = serde_json::from_str(&text).unwrap();
        assert_eq!(s.dispatcher.state, DispatchState::Stalled);
        assert_eq!(s.boards[0].state, DispatchState::Stalled);
        assert_eq!(s.providers[0].state, HealthState::Unhealthy);
        assert_eq!(s.parked[0].kind, Kind::Held);
        assert_eq!(s.restarts[0].result, RestartResult::NotRecovered);
        assert_eq!(s.incidents[0].severity, Severity::Critical);
        let again: serde_json::Value = serde_json::to_value(&s).unwrap();
        let text: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(again, text);
    }

    /// A snapshot of another build (`status` of a newer daemon, the state
    /// file after a downgrade) with states this build does not know: read
    /// whole, each kept as written.
    #[test]
    fn unknown_states_are_kept_as_written_and_cost_nothing_else() {
        let text = with_states("degraded", "draining", "frozen", "rebooted", "info");
        let s: Status = serde_json::from_str(&text).unwrap();
        assert_eq!(s.dispatcher.state, ReadName::Unknown("degraded".into()));
        assert_eq!(s.boards[0].state.as_str(), "degraded");
        assert!(s.providers[0].state != HealthState::Unhealthy);
        assert_eq!(s.providers[0].state.as_str(), "draining");
        assert_eq!(s.parked[0].kind.known(), None);
        assert_eq!(s.parked[0].kind.as_str(), "frozen");
        assert_eq!(s.restarts[0].result.as_str(), "rebooted");
        assert!(s.incidents[0].severity != Severity::Critical);
        assert_eq!(s.incidents[0].severity.as_str(), "info");
        assert_eq!(s.parked[0].task, "t1");
        let again: serde_json::Value = serde_json::to_value(&s).unwrap();
        let text: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(again, text);
    }
}
