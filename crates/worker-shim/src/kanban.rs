//! What the shim tells a Hermes kanban dispatcher besides its exit status.
//!
//! Newer Hermes (the 0.22 line, upstream `quiet_single_query.py`) has each
//! kanban worker end its log with `\n[kanban-worker-exit] rc=<code>` on
//! stderr, and a dispatcher that missed the worker's exit status (a
//! per-tick `hermes kanban dispatch` never reaps it) reads the **last** such
//! line in the last 4000 bytes of the task's log (stdout and stderr both go
//! there; `_worker_log_exit_code` in `kanban_db_dispatch.py`). When the
//! shim exits with another code than the worker did (75 for a transient
//! failure, 128+N for a signal death, 126/127 for a worker that could not
//! start, 75 for a skipped run) it writes its own trailer as its very last
//! output, so that line and the real exit status agree.

use nix::errno::Errno;

/// The prefix Hermes writes and parses (`KANBAN_WORKER_EXIT_TRAILER`).
pub const EXIT_TRAILER: &str = "[kanban-worker-exit] rc=";

/// A worker the kanban dispatcher spawned: `HERMES_KANBAN_TASK` is set and
/// not empty (Hermes tests it for truth the same way).
pub fn is_kanban_worker() -> bool {
    std::env::var_os(hermes_board::env::KANBAN_TASK).is_some_and(|v| !v.is_empty())
}

/// Whether the shim must write its own trailer: in a kanban worker, when
/// the code it exits with is not the worker's own exit code (a worker
/// killed by a signal, or never started, has none).
pub fn needs_trailer(kanban: bool, worker_code: Option<i32>, shim_code: i32) -> bool {
    kanban && worker_code != Some(shim_code)
}

/// `\n[kanban-worker-exit] rc=<code>\n` on stderr in one write, as Hermes
/// writes it (leading newline: the line must start a line for its
/// `^...$` match even after output without a final newline). Best effort:
/// a closed stderr is ignored; a non-blocking one is waited for.
pub fn write_exit_trailer(code: i32) {
    let line = format!("\n{EXIT_TRAILER}{code}\n");
    let mut buf = line.as_bytes();
    while !buf.is_empty() {
        // SAFETY: writing from a valid slice to our own stderr.
        let n = unsafe { libc::write(libc::STDERR_FILENO, buf.as_ptr().cast(), buf.len()) };
        if n > 0 {
            buf = &buf[n as usize..];
            continue;
        }
        match if n == 0 { Errno::EAGAIN } else { Errno::last() } {
            Errno::EINTR => {}
            Errno::EAGAIN => {
                let mut pfd = libc::pollfd {
                    fd: libc::STDERR_FILENO,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; bounded wait (a stuck reader
                // must not keep the shim from exiting).
                if unsafe { libc::poll(&mut pfd, 1, 2000) } <= 0 {
                    return;
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailer_only_when_a_kanban_worker_s_code_changed() {
        assert!(needs_trailer(true, Some(0), 75));
        assert!(needs_trailer(true, None, 143));
        assert!(!needs_trailer(true, Some(75), 75));
        assert!(!needs_trailer(true, Some(0), 0));
        assert!(!needs_trailer(false, Some(0), 75));
    }
}
