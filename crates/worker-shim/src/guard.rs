//! The group guard: makes a SIGKILLed shim take the worker's whole process
//! group with it, not only the worker.
//!
//! The guard is a tiny process — the shim itself, re-executed with
//! [`GUARD_ARG`] — that learns of the shim's death and then kills the
//! worker's process group. When the shim finishes normally it kills the
//! guard first, so background children the worker left behind on purpose
//! are treated exactly as without the shim.
//!
//! How it learns of the shim's death, and when it is started:
//! - Linux: its parent-death signal is SIGTERM (`PR_SET_PDEATHSIG`). The
//!   worker itself has a parent-death SIGKILL (see `spawn.rs`), which reaches
//!   only the direct child, so the guard is needed only for the rest of the
//!   group: it is started for a worker still running after [`GUARD_DELAY`]
//!   (the main thread's wait loop times out), and short runs (the common
//!   `worker-shim -- true`) never pay for one.
//! - elsewhere (macOS, which has no parent-death signal), and on Linux with
//!   the `portable` feature: its stdin is the read end of a pipe whose only
//!   lasting write end the shim holds (close-on-exec, so no worker keeps
//!   it); the shim's death closes it and the guard reads end-of-file. No
//!   polling. The worker has no parent-death signal here, so the guard
//!   covers the worker too and leaves no gap: it is started *before* the
//!   worker ([`Guard::start_before_worker`]), and the worker itself, between
//!   its fork and its exec, writes its pid (its group) into the pipe (see
//!   `spawn.rs`). A shim killed at any moment after that fork has a guard
//!   that knows the group; one killed before it has no worker to leave.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

pub const GUARD_ARG: &str = "--internal-group-guard";

/// How long a worker runs before its guard is started.
#[cfg(all(target_os = "linux", not(feature = "portable")))]
pub const GUARD_DELAY: Duration = Duration::from_millis(20);
/// How long a worker runs before its guard is started, when it was not
/// started before the worker (it could not be): at once, the guard is all
/// that stops a worker outliving a SIGKILLed shim.
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
pub const GUARD_DELAY: Duration = Duration::ZERO;

/// The signals the guard starts with blocked: terminal and group signals
/// never reach it (it has its own group anyway), and on Linux its
/// parent-death SIGTERM stays pending for `sigwait` (see [`run_guard`]).
const GUARD_BLOCKED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// Runs in the guard process: wait for the shim's death, then kill the
/// group. Never returns.
pub fn run_guard(pgid: &str) -> ! {
    use nix::sys::signal::{SigSet, Signal};
    let mut blocked = SigSet::empty();
    for sig in GUARD_BLOCKED {
        if let Ok(sig) = Signal::try_from(sig) {
            blocked.add(sig);
        }
    }
    // Keep them blocked in case this was exec'ed without the mask.
    let _ = blocked.thread_block();
    let Some(pgid) = worker_group(pgid) else {
        std::process::exit(0);
    };
    wait_for_shim_death();
    let group = nix::unistd::Pid::from_raw(pgid);
    let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
    // A worker killed before it made its own group (it writes its pid just
    // after `setpgid`, but do not rely on the order).
    let _ = nix::sys::signal::kill(group, Signal::SIGKILL);
    std::process::exit(0)
}

/// The group to kill: on Linux, the argument.
#[cfg(all(target_os = "linux", not(feature = "portable")))]
fn worker_group(arg: &str) -> Option<i32> {
    arg.parse().ok().filter(|&p| p > 0)
}

/// The group to kill: on the fallback, the first four bytes on stdin (the
/// worker's pid in native byte order, written by the worker or the shim).
/// End-of-file before them: the shim died before any worker was forked, or
/// spawning it failed; nothing to kill.
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
fn worker_group(_arg: &str) -> Option<i32> {
    let mut pid = [0u8; 4];
    let mut got = 0;
    while got < pid.len() {
        // SAFETY: reads into the rest of a local buffer.
        let n = unsafe {
            libc::read(
                libc::STDIN_FILENO,
                pid[got..].as_mut_ptr().cast(),
                pid.len() - got,
            )
        };
        if n == 0 {
            return None;
        }
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        got += n as usize;
    }
    Some(i32::from_ne_bytes(pid)).filter(|&p| p > 0)
}

/// SIGTERM arrives blocked (the mask set before exec survives it), so a
/// parent that dies at any moment — even before this code runs — leaves
/// the signal pending for `sigwait`, never killing the guard by default
/// action first.
#[cfg(all(target_os = "linux", not(feature = "portable")))]
fn wait_for_shim_death() {
    use nix::sys::signal::{SigSet, Signal};
    let mut wanted = SigSet::empty();
    wanted.add(Signal::SIGTERM);
    let _ = wanted.wait();
}

/// Reads stdin (the pipe only the shim still holds, and no longer writes
/// to) until end-of-file: every write end is closed, so the shim is gone.
/// A shim that died before this runs has closed it already: EOF at once.
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
fn wait_for_shim_death() {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: reads into a local buffer of that length.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 {
            return;
        }
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // Not a pipe we can read (started by hand?): nothing to watch,
            // and killing a group on a guess is worse than not guarding.
            std::process::exit(2);
        }
    }
}

/// The guard process, once started; [`Guard::finish`] (or [`Guard::stop`]
/// and then [`Stopped::reap`]) ends it.
pub struct Guard {
    child: std::process::Child,
    /// The only write end of the guard's stdin pipe: closed by the shim's
    /// death (or when the guard is reaped, after it is gone).
    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    lifeline: std::os::fd::OwnedFd,
}

impl Guard {
    /// Starts the guard for group `pgid`. Called from the main thread (on
    /// Linux the guard's parent-death signal fires when the thread that
    /// spawned it ends: the main thread lives as long as the shim).
    #[cfg(all(target_os = "linux", not(feature = "portable")))]
    pub fn start(pgid: u32) -> Option<Guard> {
        Guard::spawn(pgid)
    }

    /// Starts the guard for group `pgid`, when it could not be started
    /// before the worker: the shim tells it the group.
    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    pub fn start(pgid: u32) -> Option<Guard> {
        let guard = Guard::start_before_worker()?;
        let pid = pgid.to_ne_bytes();
        // SAFETY: writes 4 bytes from a local array (atomic on a pipe).
        let n = unsafe { libc::write(guard.lifeline_fd(), pid.as_ptr().cast(), pid.len()) };
        if n != pid.len() as isize {
            guard.finish();
            return None;
        }
        Some(guard)
    }

    /// Starts the guard before the worker exists: the worker writes its
    /// pid into [`Guard::lifeline_fd`] between its fork and its exec.
    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    pub fn start_before_worker() -> Option<Guard> {
        Guard::spawn(0)
    }

    /// The write end of the guard's stdin pipe (close-on-exec).
    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    pub fn lifeline_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.lifeline.as_raw_fd()
    }

    fn spawn(pgid: u32) -> Option<Guard> {
        let mut cmd = Command::new(guard_program()?);
        cmd.arg0("worker-shim-guard")
            .arg(GUARD_ARG)
            .arg(pgid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: terminal signals and group signals meant for the
            // worker never reach it.
            .process_group(0);
        #[cfg(all(target_os = "linux", not(feature = "portable")))]
        let parent = std::process::id() as libc::pid_t;
        #[cfg(all(target_os = "linux", not(feature = "portable")))]
        cmd.stdin(Stdio::null());
        #[cfg(any(not(target_os = "linux"), feature = "portable"))]
        let lifeline = {
            let (read, write) = lifeline_pipe()?;
            cmd.stdin(Stdio::from(read));
            write
        };
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Blocked across exec: see run_guard.
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                for sig in GUARD_BLOCKED {
                    libc::sigaddset(&mut set, sig);
                }
                // Exactly these: not the shim's own blocked set.
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                #[cfg(all(target_os = "linux", not(feature = "portable")))]
                {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::getppid() != parent {
                        libc::_exit(0);
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().ok()?;
        Some(Guard {
            child,
            #[cfg(any(not(target_os = "linux"), feature = "portable"))]
            lifeline,
        })
    }

    /// The shim is done: the guard goes without touching the worker's group
    /// (killed before its lifeline closes).
    pub fn finish(self) {
        self.stop().reap();
    }

    /// Kills the guard without waiting for it to be gone: it dies on
    /// another CPU while the shim judges the output and writes its record
    /// (its exit took ~0.1-0.2 ms on the shim's path, kw-bench 1g). A killed
    /// guard never touches the worker's group: only the shim's death makes
    /// it act (its parent-death signal, or end-of-file on its lifeline,
    /// which stays open until the guard is reaped), [`Stopped::reap`]
    /// collects it before the shim exits, and a shim killed in between
    /// finds its SIGKILL already pending, which the kernel acts on first.
    #[must_use = "a stopped guard is reaped with Stopped::reap"]
    pub fn stop(mut self) -> Stopped {
        let _ = self.child.kill();
        Stopped(self)
    }
}

/// A guard that has been sent SIGKILL and is not reaped yet.
#[must_use = "a stopped guard is reaped with Stopped::reap"]
pub struct Stopped(Guard);

impl Stopped {
    /// Waits for the killed guard to be gone (then its lifeline closes).
    pub fn reap(mut self) {
        let _ = self.0.child.wait();
    }
}

/// The shim's own executable, to re-execute as the guard.
#[cfg(all(target_os = "linux", not(feature = "portable")))]
fn guard_program() -> Option<std::path::PathBuf> {
    // The running image, even if its file was replaced since.
    Some("/proc/self/exe".into())
}

/// The shim's own executable, to re-execute as the guard (the path it was
/// started from; macOS has no `/proc/self/exe`).
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
fn guard_program() -> Option<std::path::PathBuf> {
    std::env::current_exe().ok()
}

/// A pipe for the guard's stdin: (read end, write end), both close-on-exec
/// (the read end is dup'ed onto the guard's stdin, which clears the flag
/// there; the write end never reaches any child).
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
fn lifeline_pipe() -> Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::AsRawFd;
    let (read, write) = nix::unistd::pipe().ok()?;
    // macOS has no pipe2: the flag is set after the fact. Only the main
    // thread spawns processes, and it is here, so no fork sees the gap.
    for fd in [&read, &write] {
        // SAFETY: fcntl on descriptors we own.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return None;
        }
    }
    Some((read, write))
}
