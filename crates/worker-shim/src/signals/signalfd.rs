//! Linux: the forwarded signals and SIGCHLD are blocked before the child
//! (or any thread) is started and read from a `signalfd`; no handler runs.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::unistd::Pid;

use super::{Pending, deliver, forwarded};

/// The blocked signals and the descriptor they are read from.
pub struct Forwarder {
    fd: OwnedFd,
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

    /// The descriptor to poll: readable when a signal is pending.
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
