//! A shim inside a run the shim already supervises steps aside.
//!
//! The dispatcher spawns the shim (wired as `hermes`) for a kanban task;
//! the worker inherits the task's environment, and any `hermes` it runs
//! itself — `hermes kanban complete`, a sub-agent, a one-shot query from
//! its terminal tool — goes through the shim again: with the same
//! `HERMES_KANBAN_TASK` on 0.19, with none on 0.22 (its tools' environment
//! drops the task variables). That process is not the run: a 429 it prints
//! is not the run's death, its exit code goes to the worker, not to the
//! dispatcher, and the provider it uses is the worker's business. So the
//! outer shim marks its worker's environment with the run it supervises
//! ([`IN_RUN`]), and a shim that finds the mark and no other kanban run in
//! its environment runs the command in its own place (`exec`): no
//! steering, no skip, no code translation, no trailer, no record.
//!
//! A dispatcher started inside a worker (an orchestrator running
//! `hermes kanban dispatch`) gives its workers other tasks: they are
//! supervised as usual. The mark serves honest workers; the watchdog also
//! ignores any record naming a run whose dispatcher-spawned pid is not the
//! record's writer (an older shim inside the run, a record written by hand).

use std::ffi::OsString;

use hermes_board::env::{KANBAN_RUN_ID, KANBAN_TASK};

/// `<run id>/<task id>` of the run a shim supervises, in its worker's
/// environment (the run id is empty when the dispatcher gave none).
pub const IN_RUN: &str = "WORKER_SHIM_IN_RUN";

/// The mark for the run in this environment, or `None` outside a kanban
/// task.
pub fn run_mark(task: Option<&str>, run: Option<&str>) -> Option<String> {
    let task = task.filter(|t| !t.is_empty())?;
    Some(format!("{}/{task}", run.unwrap_or("").trim()))
}

/// Whether a shim with the inherited [`IN_RUN`] `mark` and this task and
/// run in its environment runs inside that supervised run: the mark is set
/// and the environment names no other kanban run — its own run, or no task
/// at all (Hermes 0.22 removes `HERMES_KANBAN_TASK` and `_RUN_ID` from
/// what the worker's tools run, `scrub_kanban_env`). A worker for another
/// task (a dispatcher run inside the worker) is supervised as usual.
pub fn inside(mark: Option<&str>, task: Option<&str>, run: Option<&str>) -> bool {
    let Some(mark) = mark.filter(|m| !m.is_empty()) else {
        return false;
    };
    let Some(task) = task.filter(|t| !t.is_empty()) else {
        return true;
    };
    // The run id never holds a `/`; the task id may.
    mark.split_once('/')
        .is_some_and(|(r, t)| t == task && r == run.unwrap_or("").trim())
}

/// The mark for this process's own run, from its environment.
pub fn own_mark() -> Option<String> {
    let task = std::env::var(KANBAN_TASK).ok();
    let run = std::env::var(KANBAN_RUN_ID).ok();
    run_mark(task.as_deref(), run.as_deref())
}

/// Whether this shim runs inside a run another shim supervises.
pub fn is_nested() -> bool {
    let mark = std::env::var(IN_RUN).ok();
    let task = std::env::var(KANBAN_TASK).ok();
    let run = std::env::var(KANBAN_RUN_ID).ok();
    inside(mark.as_deref(), task.as_deref(), run.as_deref())
}

/// Replaces this process with `command`, as if the shim were not there.
/// Returns only when it cannot: the exit code (126/127) after one line.
pub fn run_in_place(command: &[OsString]) -> i32 {
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = command.split_first() else {
        return crate::spawn::EXIT_NOT_FOUND;
    };
    let err = std::process::Command::new(program).args(args).exec();
    crate::say(&format!("cannot run {}: {err}", program.to_string_lossy()));
    match err.kind() {
        std::io::ErrorKind::NotFound => crate::spawn::EXIT_NOT_FOUND,
        _ => crate::spawn::EXIT_NOT_EXECUTABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_task_and_run_is_inside() {
        let mark = run_mark(Some("t_1"), Some("7"));
        assert_eq!(mark.as_deref(), Some("7/t_1"));
        assert!(inside(mark.as_deref(), Some("t_1"), Some("7")));
        // Another task (a dispatcher inside the worker), another run, no
        // mark: supervised as usual.
        assert!(!inside(mark.as_deref(), Some("t_2"), Some("7")));
        assert!(!inside(mark.as_deref(), Some("t_1"), Some("8")));
        assert!(!inside(None, Some("t_1"), Some("7")));
        assert!(!inside(Some(""), Some("t_1"), Some("7")));
        // No task named (0.22 scrubs it from the worker's tools): inside.
        assert!(inside(mark.as_deref(), None, None));
        assert!(inside(mark.as_deref(), Some(""), Some("7")));
        assert!(!inside(None, None, None));
        // No run id on either side.
        assert!(inside(Some("/t_1"), Some("t_1"), None));
        // A task id with a slash cannot pose as another run.
        assert!(!inside(Some("7/t/1"), Some("1"), Some("7/t")));
    }
}
