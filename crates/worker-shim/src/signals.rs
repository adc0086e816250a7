//! Signal forwarding. Handlers are installed before the child is spawned
//! (signal-hook only sets a flag and wakes this thread); the thread forwards
//! each signal to the child's process group. The `exited` flag is set, under
//! the same lock, once the child has exited but *before* it is reaped, so a
//! forwarded signal can never hit a recycled pid.

use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::{Handle, Signals};

pub const FORWARDED: [i32; 6] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2];

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
        let signals = Signals::new(FORWARDED)?;
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
                    if let (Some(pid), Ok(sig)) = (st.pid, Signal::try_from(sig)) {
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

fn deliver(pid: Pid, leads_group: bool, sig: Signal) {
    if leads_group && killpg(pid, sig).is_ok() {
        return;
    }
    let _ = kill(pid, sig);
}
