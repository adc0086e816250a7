//! Signal forwarding, on the main thread and without a handler: before the
//! child (or any thread) is started, the forwarded signals and SIGCHLD are
//! blocked and read from a `signalfd`, which the main thread polls while it
//! waits for the worker (see `main.rs`, `wait_for_exit`). Each signal read
//! is sent to the worker's process group. The worker is reaped only after
//! the loop has stopped forwarding, so a forwarded signal can never hit a
//! recycled pid. The worker starts with an empty signal mask (std resets
//! it between fork and exec), so it sees every signal as without the shim.
//!
//! Which signals: the set tini forwards (tini blocks every signal, then
//! unblocks SIGFPE, SIGILL, SIGSEGV, SIGBUS, SIGABRT, SIGTRAP, SIGSYS,
//! SIGTTIN and SIGTTOU, and forwards whatever it takes with `sigtimedwait`
//! except SIGCHLD), real-time signals included. Apart from tini's list the
//! shim keeps two for itself:
//! - SIGCHLD, which tini handles itself too;
//! - SIGPIPE, which the shim's own writes raise when its reader is gone; it
//!   stays ignored and the pump answers the `EPIPE` by closing the worker's
//!   pipe, so the worker sees the broken pipe on its own next write, as it
//!   would without the shim (see `pump.rs`).
//!
//! SIGKILL and SIGSTOP cannot be caught.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::unistd::Pid;

/// Signals that are never forwarded (see the module comment).
const KEPT: [libc::c_int; 13] = [
    // Synchronous faults and terminal-job signals, as tini.
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGABRT,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGTTIN,
    libc::SIGTTOU,
    // Handled by the shim itself.
    libc::SIGCHLD,
    libc::SIGPIPE,
    // Cannot be caught.
    libc::SIGKILL,
    libc::SIGSTOP,
];

/// Every signal the shim forwards to the worker's process group: 1..=31
/// minus [`KEPT`], then SIGRTMIN..=SIGRTMAX (glibc keeps the two below
/// SIGRTMIN for its threads).
pub fn forwarded() -> Vec<libc::c_int> {
    let standard = (1..32).filter(|s| !KEPT.contains(s));
    let realtime = libc::SIGRTMIN()..=libc::SIGRTMAX();
    standard.chain(realtime).collect()
}

/// The blocked signals and the descriptor they are read from.
pub struct Forwarder {
    fd: OwnedFd,
}

/// What one read of the pending signals found.
#[derive(Debug, Default)]
pub struct Pending {
    /// A child changed state: check whether the worker exited.
    pub child: bool,
}

impl Forwarder {
    /// Blocks the forwarded signals and SIGCHLD in the calling thread
    /// (threads started later inherit the mask) and opens the signalfd.
    /// Call on the main thread before spawning the child or any thread.
    pub fn install() -> std::io::Result<Forwarder> {
        // SAFETY: plain libc calls on a local sigset_t.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in forwarded().into_iter().chain([libc::SIGCHLD]) {
                libc::sigaddset(&mut set, sig);
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            Ok(Forwarder { fd })
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads every pending signal; forwards each to `target` (the worker,
    /// not yet reaped) unless it is SIGCHLD.
    pub fn forward_pending(&self, target: Option<(Pid, bool)>) -> Pending {
        let mut pending = Pending::default();
        // SAFETY: signalfd_siginfo is plain data; read fills it or fails.
        let mut info: [libc::signalfd_siginfo; 8] = unsafe { std::mem::zeroed() };
        loop {
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    info.as_mut_ptr().cast(),
                    std::mem::size_of_val(&info),
                )
            };
            if n <= 0 {
                if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                return pending;
            }
            let count = n as usize / std::mem::size_of::<libc::signalfd_siginfo>();
            for si in &info[..count] {
                let sig = si.ssi_signo as libc::c_int;
                if sig == libc::SIGCHLD {
                    pending.child = true;
                } else if let Some((pid, leads_group)) = target {
                    deliver(pid, leads_group, sig);
                }
            }
        }
    }
}

/// Real-time signals have no `nix::Signal`, hence libc.
fn deliver(pid: Pid, leads_group: bool, sig: libc::c_int) {
    // SAFETY: plain syscalls on a pid that cannot have been recycled (the
    // child is not reaped while signals are forwarded to it).
    unsafe {
        if leads_group && libc::killpg(pid.as_raw(), sig) == 0 {
            return;
        }
        libc::kill(pid.as_raw(), sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_what_tini_forwards_and_keeps_chld_and_pipe() {
        let f = forwarded();
        for s in [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGALRM,
            libc::SIGTERM,
            libc::SIGCONT,
            libc::SIGTSTP,
            libc::SIGWINCH,
            libc::SIGURG,
            libc::SIGXCPU,
            libc::SIGXFSZ,
            libc::SIGVTALRM,
            libc::SIGPROF,
            libc::SIGIO,
            libc::SIGPWR,
            libc::SIGSTKFLT,
            libc::SIGRTMIN(),
            libc::SIGRTMAX(),
        ] {
            assert!(f.contains(&s), "{s} is forwarded");
        }
        for s in KEPT {
            assert!(!f.contains(&s), "{s} is not forwarded");
        }
    }
}
