//! Signal forwarding. Handlers are installed before the child is spawned
//! (signal-hook only sets a flag and wakes this thread); the thread forwards
//! each signal to the child's process group. The `exited` flag is set, under
//! the same lock, once the child has exited but *before* it is reaped, so a
//! forwarded signal can never hit a recycled pid.
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

use std::sync::{Arc, Mutex};

use nix::unistd::Pid;
use signal_hook::iterator::{Handle, Signals};

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

#[derive(Debug, Default)]
pub struct ChildState {
    pub pid: Option<Pid>,
    /// The child leads its own process group (the default).
    pub leads_group: bool,
    pub exited: bool,
}

pub struct Forwarder {
    signals: Option<Signals>,
    handle: Handle,
}

impl Forwarder {
    /// Registers the handlers. Call before spawning the child.
    pub fn install() -> std::io::Result<Forwarder> {
        let signals = Signals::new(forwarded())?;
        let handle = signals.handle();
        Ok(Forwarder {
            signals: Some(signals),
            handle,
        })
    }

    /// Starts forwarding to the child described by `state`.
    pub fn start(&mut self, state: Arc<Mutex<ChildState>>) -> std::io::Result<()> {
        let Some(mut signals) = self.signals.take() else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name("signals".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                for sig in signals.forever() {
                    let Ok(st) = state.lock() else { return };
                    if st.exited {
                        return;
                    }
                    if let Some(pid) = st.pid {
                        deliver(pid, st.leads_group, sig);
                    }
                }
            })?;
        Ok(())
    }

    pub fn stop(&self) {
        self.handle.close();
    }
}

/// Real-time signals have no `nix::Signal`, hence libc.
fn deliver(pid: Pid, leads_group: bool, sig: libc::c_int) {
    // SAFETY: plain syscalls on a pid that cannot have been recycled (the
    // child is not reaped while `exited` is false).
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
