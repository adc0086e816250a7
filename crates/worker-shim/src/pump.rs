//! Copies one child stream to the shim's own descriptor, byte for byte and
//! unbuffered, while keeping its head and tail. Reading never waits on
//! writing elsewhere: if our side of the stream is closed, the child's
//! output is still drained (and captured) so the child never blocks.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::capture::HeadTail;

const CHUNK: usize = 128 * 1024;

/// Larger pipes mean fewer wake-ups at high volume; best effort.
pub fn grow_pipe(fd: &OwnedFd) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own; failure is harmless.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int);
    }
}

/// Starts the pump thread. It sends `()` on `done` when the child's side
/// reached EOF, so the caller can bound how long it waits for grandchildren
/// that keep the pipe open.
pub fn spawn_pump(
    name: &'static str,
    from: OwnedFd,
    to_fd: RawFd,
    capture: Arc<Mutex<HeadTail>>,
    done: Sender<()>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("pump-{name}"))
        .stack_size(64 * 1024)
        .spawn(move || {
            pump(from, to_fd, &capture);
            let _ = done.send(());
        })
}

fn pump(from: OwnedFd, to_fd: RawFd, capture: &Mutex<HeadTail>) {
    let mut src = File::from(from);
    // SAFETY: to_fd (1 or 2) stays open for the shim's lifetime; ManuallyDrop
    // keeps us from closing it.
    let mut dst = ManuallyDrop::new(unsafe { File::from_raw_fd(to_fd) });
    let mut writable = true;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if writable && dst.write_all(&buf[..n]).is_err() {
            // Our reader went away (EPIPE) or the fd is bad: keep draining.
            writable = false;
        }
        if let Ok(mut cap) = capture.lock() {
            cap.push(&buf[..n]);
        }
    }
}
