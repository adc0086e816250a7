//! The POSIX fallback (macOS; Linux with the `portable` feature): the
//! forwarded signals and SIGCHLD get signal-hook's handler, which records
//! the signal and writes a byte to a socket pair; the main thread polls the
//! read end and asks which signals came. Signals stay unblocked, so a
//! `poll` may end early with `EINTR` (the wait loop retries) and other
//! calls restart (`SA_RESTART`).
//!
//! A signal the shim was started with ignored (`nohup`'s SIGHUP) gets no
//! handler: it stays ignored for the shim, and for the worker, as with the
//! signalfd, where an ignored signal is never queued.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, PoisonError};

use nix::unistd::Pid;
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

use super::{Pending, deliver, forwarded};

/// The registered handlers and the self-pipe they write to.
pub struct Forwarder {
    /// A second descriptor for the read end, for `poll` (the delivery owns
    /// its own and reads through it).
    read: UnixStream,
    delivery: Mutex<SignalDelivery<UnixStream, SignalOnly>>,
}

/// The signal's disposition is SIG_IGN.
fn ignored(sig: libc::c_int) -> bool {
    // SAFETY: a query only (no new action).
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_IGN
    }
}

impl Forwarder {
    /// Registers the handlers. Call on the main thread before spawning the
    /// child or any thread.
    pub fn install() -> std::io::Result<Forwarder> {
        let (read, write) = UnixStream::pair()?;
        let poll_read = read.try_clone()?;
        let signals: Vec<libc::c_int> = forwarded()
            .into_iter()
            .filter(|&s| !ignored(s))
            .chain([libc::SIGCHLD])
            .collect();
        let delivery = SignalDelivery::with_pipe(read, write, SignalOnly, &signals)?;
        Ok(Forwarder {
            read: poll_read,
            delivery: Mutex::new(delivery),
        })
    }

    /// The descriptor to poll: readable when a signal came.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Takes every signal that came; forwards each to `target` (the worker,
    /// not yet reaped) unless it is SIGCHLD.
    pub fn forward_pending(&self, target: Option<(Pid, bool)>) -> Pending {
        let mut pending = Pending::default();
        let mut delivery = self.delivery.lock().unwrap_or_else(PoisonError::into_inner);
        for sig in delivery.pending() {
            if sig == libc::SIGCHLD {
                pending.child = true;
            } else if let Some((pid, leads_group)) = target {
                deliver(pid, leads_group, sig);
            }
        }
        pending
    }
}
