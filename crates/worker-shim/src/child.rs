//! Has the worker exited — seen without reaping it, so its pid cannot be
//! reused while the shim may still signal it (see `main.rs`,
//! `wait_for_exit`).
//!
//! `waitid` with `WNOWAIT` is POSIX and present on Linux and macOS, but nix
//! wraps it on Linux only, hence libc. macOS's `waitid` also reports a
//! *stopped* child despite `WEXITED` (the reason Go stopped using it there,
//! golang/go#19314), so the answer is read from `si_code`, never from the
//! call's success alone.

use nix::unistd::Pid;

/// One `waitid(WEXITED | WNOWAIT | options)` on the worker: did it report
/// the worker's exit? False when it failed (no such child) or reported
/// nothing (`WNOHANG`) or a stop (macOS).
fn saw_exit(pid: Pid, options: libc::c_int) -> bool {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it or leaves it
        // zeroed (WNOHANG with nothing to report).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid.as_raw() as libc::id_t,
                &mut info,
                options | libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc != 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        // SAFETY: si_pid is set for every child state waitid reports.
        let reported = unsafe { info.si_pid() } == pid.as_raw();
        return reported
            && matches!(
                info.si_code,
                libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED
            );
    }
}

/// The worker has exited (not reaped).
pub fn has_exited(pid: Pid) -> bool {
    saw_exit(pid, libc::WNOHANG)
}

/// Blocks until the worker has exited, without reaping it. Returns early
/// (the caller's `waitpid` then blocks) if the call fails or, on macOS,
/// reports a stop instead of an exit.
pub fn wait_exited(pid: Pid) {
    let _ = saw_exit(pid, 0);
}
