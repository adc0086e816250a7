//! Copies one child stream to the shim's own descriptor, byte for byte and
//! unbuffered, while keeping its head and tail.
//!
//! What the worker sees is what it would see without the shim:
//! - Our reader goes away (`EPIPE`, as in `worker-shim -- yes | head -1`):
//!   the pump closes its end of the worker's pipe and stops, so the
//!   worker's next write fails with `EPIPE` / dies of `SIGPIPE` (its own
//!   disposition; Rust's `Command` restores `SIGPIPE` to its default in the
//!   child), exactly as if it wrote to the closed pipe itself.
//! - Our descriptor is non-blocking (`EAGAIN`, a caller that shares a
//!   non-blocking pipe or terminal): wait with `poll` until it is writable
//!   and retry, so a momentarily full reader never turns pass-through off.
//! - Any other write error (a closed or bad descriptor): keep reading and
//!   capturing so the worker never blocks on a full pipe.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::capture::HeadTail;

/// The worker's pipes are grown to this (fewer wake-ups at high volume).
const PIPE_SIZE: usize = 128 * 1024;
/// Bytes read at a time. Under glibc's 128 KiB mmap threshold, so the
/// buffer comes from the heap and, freed when the pump ends, is reused by
/// the classification's allocations after it. With a 128 KiB buffer (which
/// glibc maps on its own) the run that classifies a 429 peaked 128 KiB
/// higher in some runs (kw-bench 2d's workload, 8 runs: 2968-3096 KiB ->
/// 2840-2968 KiB); 2 GiB pass through as fast (~2 GiB/s either way).
const READ_CHUNK: usize = 64 * 1024;

/// Larger pipes mean fewer wake-ups at high volume; best effort.
#[cfg(target_os = "linux")]
pub fn grow_pipe(fd: &OwnedFd) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own; failure is harmless.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int);
    }
}

/// macOS has no `F_SETPIPE_SZ` (its pipes grow to 64 KiB by themselves).
#[cfg(not(target_os = "linux"))]
pub fn grow_pipe(_fd: &OwnedFd) {}

/// What a pump is doing, for the drain after the worker exited: the drain
/// ends when every pump still running has been waiting for input (not
/// writing) for the quiet period.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    /// Microseconds since `base` of the last byte read or written.
    last_us: AtomicU64,
    /// A write to our descriptor is in progress (a slow reader).
    writing: AtomicBool,
    done: AtomicBool,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            base: Instant::now(),
            last_us: AtomicU64::new(0),
            writing: AtomicBool::new(false),
            done: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        let us = self.base.elapsed().as_micros().min(u64::MAX as u128) as u64;
        self.last_us.store(us, Ordering::Relaxed);
    }

    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// How long the pump has been idle, waiting for the worker's output;
    /// zero while it is writing (output still on its way to our reader).
    pub fn quiet_for(&self, now: Instant) -> Duration {
        if self.writing.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        let last = self.base + Duration::from_micros(self.last_us.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

/// Starts the pump thread. It marks `activity` done and sends `()` on
/// `done` when it stopped: the child's side reached EOF, or our reader went
/// away.
pub fn spawn_pump(
    name: &'static str,
    from: OwnedFd,
    to_fd: RawFd,
    capture: Arc<Mutex<HeadTail>>,
    activity: Arc<Activity>,
    done: Sender<()>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("pump-{name}"))
        .stack_size(64 * 1024)
        .spawn(move || {
            pump(from, to_fd, &capture, &activity);
            activity.done.store(true, Ordering::Release);
            let _ = done.send(());
        })
}

fn pump(from: OwnedFd, to_fd: RawFd, capture: &Mutex<HeadTail>, activity: &Activity) {
    // Dropped on return: that closes our read end of the worker's pipe.
    let mut src = File::from(from);
    let mut writable = true;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        activity.touch();
        if let Ok(mut cap) = capture.lock() {
            cap.push(&buf[..n]);
        }
        if writable {
            activity.writing.store(true, Ordering::Release);
            let result = write_all(to_fd, &buf[..n], activity);
            activity.touch();
            activity.writing.store(false, Ordering::Release);
            match result {
                Ok(()) => {}
                // Our reader is gone: let the worker find out as it would
                // without us (see the module comment).
                Err(Errno::EPIPE) => return,
                // The descriptor is unusable: keep draining so the worker
                // never blocks.
                Err(_) => writable = false,
            }
        }
    }
}

/// Writes all of `buf` to `fd`, waiting for writability on `EAGAIN`.
fn write_all(fd: RawFd, mut buf: &[u8], activity: &Activity) -> Result<(), Errno> {
    while !buf.is_empty() {
        // SAFETY: writing from a valid slice to a descriptor that stays
        // open for the shim's lifetime (1 or 2).
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n > 0 {
            buf = &buf[n as usize..];
            activity.touch();
            continue;
        }
        match if n == 0 { Errno::EAGAIN } else { Errno::last() } {
            Errno::EINTR => {}
            Errno::EAGAIN => wait_writable(fd)?,
            e => return Err(e),
        }
    }
    Ok(())
}

/// Blocks until `fd` is writable (or in error, which the next write reports).
fn wait_writable(fd: RawFd) -> Result<(), Errno> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r >= 0 {
            if pfd.revents & libc::POLLNVAL != 0 {
                return Err(Errno::EBADF);
            }
            return Ok(());
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}
