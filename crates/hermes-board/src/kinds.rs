//! Kinds of `task_events` rows Hermes writes, grouped by what they tell a
//! reader of the board (Hermes 0.19 `kanban_db.py` and the dispatcher).

/// Events the dispatcher writes on a live tick: claims, spawns, promotions
/// and its crash/reclaim bookkeeping. A new one is dispatcher progress.
pub const DISPATCHER_PROGRESS_KINDS: &[&str] = &[
    "claimed",
    "spawned",
    "respawn_guarded",
    "promoted",
    "crashed",
    "protocol_violation",
    "rate_limited",
    "reclaimed",
    "timed_out",
    "stale",
    "claim_rejected",
    "claim_extended",
    "spawn_failed",
    "gave_up",
];

/// Events after which a task is (again) work for the dispatcher: created,
/// promoted, unblocked, released by us, or given back after a failed run.
pub const READY_ENTRY_KINDS: &[&str] = &[
    "created",
    "promoted",
    "unblocked",
    "watchdog_released",
    "rate_limited",
    "protocol_violation",
    "crashed",
];

/// `('a','b',...)` for an SQL `IN` (the kinds are constants of ours, plain
/// identifiers: nothing to quote).
pub(crate) fn sql_list(kinds: &[&str]) -> String {
    let quoted: Vec<String> = kinds.iter().map(|k| format!("'{k}'")).collect();
    format!("({})", quoted.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_plain_identifiers_and_render_as_an_sql_list() {
        for k in DISPATCHER_PROGRESS_KINDS.iter().chain(READY_ENTRY_KINDS) {
            assert!(
                k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{k}"
            );
        }
        assert_eq!(sql_list(&["a", "b_c"]), "('a','b_c')");
    }
}
