//! Where records live and how they are named.

use std::path::PathBuf;

/// The shim's and the watchdog's shared default record directory:
/// `$XDG_STATE_HOME/kanban-watchdog/records`, else
/// `$HOME/.local/state/kanban-watchdog/records`, else
/// `/tmp/kanban-watchdog-<uid>/records` when neither is set.
pub fn default_record_dir() -> PathBuf {
    let from_env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(state) = from_env("XDG_STATE_HOME") {
        return state.join("kanban-watchdog").join("records");
    }
    if let Some(home) = from_env("HOME") {
        return home
            .join(".local")
            .join("state")
            .join("kanban-watchdog")
            .join("records");
    }
    // SAFETY: getuid never fails and has no preconditions.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/kanban-watchdog-{uid}/records"))
}

/// `<id>.json`
pub fn record_file_name(id: &str) -> String {
    format!("{id}.json")
}

/// True for names a reader should pick up: `*.json`, not hidden (temp files
/// are written as hidden `.<id>.json.tmp` and renamed into place).
pub fn is_record_file_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".json") && name.len() > ".json".len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_are_not_records() {
        assert!(is_record_file_name("0192-abc.json"));
        assert!(!is_record_file_name(".0192-abc.json.tmp"));
        assert!(!is_record_file_name(".0192-abc.json"));
        assert!(!is_record_file_name("0192-abc.json.tmp"));
        assert!(!is_record_file_name(".json"));
        assert!(!is_record_file_name("notes.txt"));
    }
}
