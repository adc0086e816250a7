//! The group guard: makes a SIGKILLed shim take the worker's whole process
//! group with it, not only the worker.
//!
//! `PR_SET_PDEATHSIG` reaches only the direct child. So for a worker still
//! running after [`GUARD_DELAY`] (the main thread's wait loop times out),
//! the shim starts a tiny guard — itself,
//! re-executed with [`GUARD_ARG`] — whose parent-death signal is SIGTERM.
//! When the shim dies without cleaning up (SIGKILL), the guard wakes and
//! kills the worker's process group. When the shim finishes normally it
//! kills the guard first, so background children the worker left behind on
//! purpose are treated exactly as without the shim. Short runs (the common
//! `worker-shim -- true`) never pay for a guard.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

pub const GUARD_ARG: &str = "--internal-group-guard";
pub const GUARD_DELAY: Duration = Duration::from_millis(20);

/// Runs in the guard process: wait for the parent-death SIGTERM, then kill
/// the group. Never returns.
///
/// SIGTERM arrives blocked (the mask set before exec survives it), so a
/// parent that dies at any moment — even before this code runs — leaves
/// the signal pending for `sigwait`, never killing the guard by default
/// action first.
pub fn run_guard(pgid: &str) -> ! {
    use nix::sys::signal::{SigSet, Signal};
    let Ok(pgid) = pgid.parse::<i32>() else {
        std::process::exit(2);
    };
    let mut wanted = SigSet::empty();
    wanted.add(Signal::SIGTERM);
    // Keep it blocked in case this was exec'ed without the mask.
    let _ = wanted.thread_block();
    let _ = wanted.wait();
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL);
    std::process::exit(0)
}

/// The guard process, once started; [`Guard::finish`] stops it.
pub struct Guard {
    child: std::process::Child,
}

impl Guard {
    /// Starts the guard for group `pgid`. Called from the main thread (the
    /// guard's parent-death signal fires when the thread that spawned it
    /// ends: the main thread lives as long as the shim).
    pub fn start(pgid: u32) -> Option<Guard> {
        let parent = std::process::id() as libc::pid_t;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("worker-shim-guard")
            .arg(GUARD_ARG)
            .arg(pgid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: terminal signals and group signals meant for the
            // worker never reach it.
            .process_group(0);
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Blocked across exec: see run_guard. Terminal signals never
                // reach it either.
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
                    libc::sigaddset(&mut set, sig);
                }
                // Exactly these: not the shim's own blocked set.
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(0);
                }
                Ok(())
            });
        }
        cmd.spawn().ok().map(|child| Guard { child })
    }

    /// The shim is done: the guard goes without touching the worker's group.
    pub fn finish(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
