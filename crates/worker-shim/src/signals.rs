//! Signal forwarding, on the main thread: every forwarded signal and
//! SIGCHLD reach one descriptor, which the main thread polls while it waits
//! for the worker (see `main.rs`, `wait_for_exit`). Each signal read is
//! sent to the worker's process group. The worker is reaped only after the
//! loop has stopped forwarding, so a forwarded signal can never hit a
//! recycled pid. The worker starts with an empty signal mask and default
//! dispositions (`SpawnMask` on the POSIX fallback, `AllBlocked` on Linux),
//! so it sees every signal as without the shim.
//!
//! Two backends behind one [`Forwarder`]:
//! - Linux: the signals are blocked and read from a `signalfd`, without a
//!   handler (`signals/signalfd.rs`);
//! - elsewhere (macOS), and on Linux with the `portable` feature so CI tests
//!   it: signal-hook's handlers write to a self-pipe (a socket pair) and
//!   record which signal came (`signals/self_pipe.rs`). Standard signals
//!   are coalesced by both; real-time ones (Linux only) are coalesced by the
//!   self-pipe, queued by the signalfd.
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

use nix::unistd::Pid;

#[cfg(all(target_os = "linux", not(feature = "portable")))]
#[path = "signals/signalfd.rs"]
mod backend;
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
#[path = "signals/self_pipe.rs"]
mod backend;

pub use backend::Forwarder;

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
/// minus [`KEPT`], then on Linux SIGRTMIN..=SIGRTMAX (glibc keeps the two
/// below SIGRTMIN for its threads; macOS has no real-time signals).
pub fn forwarded() -> Vec<libc::c_int> {
    let standard = (1..32).filter(|s| !KEPT.contains(s));
    #[cfg(target_os = "linux")]
    let realtime = libc::SIGRTMIN()..=libc::SIGRTMAX();
    #[cfg(not(target_os = "linux"))]
    let realtime = std::iter::empty();
    standard.chain(realtime).collect()
}

/// What one read of the pending signals found.
#[derive(Debug, Default)]
pub struct Pending {
    /// A child changed state: check whether the worker exited.
    pub child: bool,
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

/// The forwarded signals blocked in the spawning thread while the worker is
/// forked, and what the child does before exec: default dispositions for
/// the forwarded signals, then an empty mask.
///
/// With the signalfd the signals are blocked anyway and never had a
/// handler. With the self-pipe they have signal-hook's handler: a signal
/// for the worker's group arriving between fork and exec (a terminal's
/// Ctrl-C once the worker owns the terminal) would otherwise run that
/// inherited handler in the child and be lost. Blocked, it stays pending
/// until the child has reset the disposition, then acts as without the
/// shim; in the shim it is delivered when the mask is restored.
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
pub struct SpawnMask {
    old: libc::sigset_t,
    signals: Vec<libc::c_int>,
}

#[cfg(any(not(target_os = "linux"), feature = "portable"))]
impl SpawnMask {
    /// Blocks the forwarded signals in the calling thread until dropped.
    pub fn enter() -> SpawnMask {
        let signals = forwarded();
        // SAFETY: plain libc calls on local sigset_t values.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &sig in &signals {
                libc::sigaddset(&mut set, sig);
            }
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            SpawnMask { old, signals }
        }
    }

    /// In the forked child, before exec: only async-signal-safe calls, no
    /// allocation.
    ///
    /// # Safety
    /// Call only between fork and exec.
    pub unsafe fn reset_in_child(&self) {
        // SAFETY: signal() and pthread_sigmask() are async-signal-safe.
        unsafe {
            for &sig in &self.signals {
                // A signal the shim was started with ignored (`nohup`)
                // stays ignored, as exec keeps it for the worker.
                let mut current: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut current) == 0
                    && current.sa_sigaction != libc::SIG_IGN
                {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        }
    }
}

/// Every signal blocked in the spawning thread while the worker is cloned
/// with the shim's memory (`spawn/vfork.rs`), and what that child does
/// before exec. The child starts with every signal blocked, so no handler of
/// the shim's can run in it (on the shim's memory) until
/// [`default_handled_in_child`](Self::default_handled_in_child) has put
/// every handled signal back to its default action; only then
/// [`unblock_all_in_child`](Self::unblock_all_in_child) empties its mask.
/// The worker gets what `SpawnMask::reset_in_child` gives it: the
/// forwarded signals at their default action unless ignored (they have no
/// handler with the signalfd, and one with a handler is reset with the
/// rest), no signal blocked.
#[cfg(all(target_os = "linux", not(feature = "portable")))]
pub struct AllBlocked {
    old: libc::sigset_t,
}

#[cfg(all(target_os = "linux", not(feature = "portable")))]
impl AllBlocked {
    /// Blocks every signal in the calling thread until dropped (glibc's
    /// internal ones excepted, which are only ever sent to the shim's own
    /// threads, never to the child).
    pub fn enter() -> AllBlocked {
        // SAFETY: plain libc calls on local sigset_t values.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            AllBlocked { old }
        }
    }

    /// In the child, with every signal still blocked: every signal with a
    /// handler goes back to its default action (exec would do it anyway).
    /// Ignored and default signals are left as they are: a signal the shim
    /// was started with ignored (`nohup`) stays ignored for the worker.
    ///
    /// # Safety
    /// Call only between clone (or fork) and exec.
    pub unsafe fn default_handled_in_child() {
        // SAFETY: sigaction() is async-signal-safe; the sigaction values
        // are local. Signal numbers glibc refuses (its internal 32 and 33)
        // fail the query and are skipped.
        unsafe {
            // _NSIG on Linux: signals 1..=64.
            for sig in 1..65 {
                let mut current: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut current) == 0
                    && current.sa_sigaction != libc::SIG_IGN
                    && current.sa_sigaction != libc::SIG_DFL
                {
                    let mut dfl: libc::sigaction = std::mem::zeroed();
                    dfl.sa_sigaction = libc::SIG_DFL;
                    libc::sigaction(sig, &dfl, std::ptr::null_mut());
                }
            }
        }
    }

    /// In the child, after [`default_handled_in_child`]: no signal
    /// blocked, as the worker must start.
    ///
    /// # Safety
    /// Call only between clone (or fork) and exec.
    ///
    /// [`default_handled_in_child`]: Self::default_handled_in_child
    pub unsafe fn unblock_all_in_child() {
        // SAFETY: pthread_sigmask() is async-signal-safe; the set is local.
        unsafe {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        }
    }
}

#[cfg(all(target_os = "linux", not(feature = "portable")))]
impl Drop for AllBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `enter`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

#[cfg(any(not(target_os = "linux"), feature = "portable"))]
impl Drop for SpawnMask {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `enter`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_what_tini_forwards_and_keeps_chld_and_pipe() {
        let f = forwarded();
        #[allow(unused_mut)]
        let mut wanted = vec![
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
        ];
        #[cfg(target_os = "linux")]
        wanted.extend([
            libc::SIGPWR,
            libc::SIGSTKFLT,
            libc::SIGRTMIN(),
            libc::SIGRTMAX(),
        ]);
        #[cfg(target_os = "macos")]
        wanted.extend([libc::SIGINFO, libc::SIGEMT]);
        for s in wanted {
            assert!(f.contains(&s), "{s} is forwarded");
        }
        for s in KEPT {
            assert!(!f.contains(&s), "{s} is not forwarded");
        }
    }
}
