//! Starting the worker: its own process group, on Linux a parent-death
//! signal so a SIGKILLed shim does not leave it running (elsewhere the
//! group guard, started just before the worker, covers the worker too: see
//! `guard.rs`), and the 126/127 conventions for spawn failures.
//!
//! On Linux (without the `portable` feature) the worker is started with a
//! `clone(CLONE_VM | CLONE_VFORK)` of its own, as glibc's `posix_spawn`
//! does, not a fork (`spawn/vfork.rs`); elsewhere with std's `Command` and
//! a `pre_exec` closure. Both start it the same way and fail the same way.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::fd::OwnedFd;

use crate::guard::Guard;

#[cfg(all(target_os = "linux", not(feature = "portable")))]
mod vfork;

/// Exit code for "command found but could not be executed" (POSIX shells).
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit code for "command not found" (POSIX shells).
pub const EXIT_NOT_FOUND: i32 = 127;

pub struct SpawnFailure {
    pub code: i32,
    pub reason: String,
}

/// The started worker: its pid (reaped by the caller, with `waitpid`) and
/// the read ends of its stdout and stderr pipes (close-on-exec).
pub struct Worker {
    pid: u32,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

impl Worker {
    pub fn id(&self) -> u32 {
        self.pid
    }
}

/// The running worker, and its group guard when one was started with it.
pub struct Spawned {
    pub child: Worker,
    pub guard: Option<Guard>,
}

/// Spawns `argv[0]` with `argv[1..]`. stdin is inherited; stdout is piped
/// when `capture_stdout`, stderr is always piped. On the POSIX fallback the
/// group guard is started first and returned with the worker.
///
/// Must be called from the thread that lives as long as the shim (the main
/// thread): `PR_SET_PDEATHSIG` fires when the *spawning thread* exits.
pub fn spawn_worker(argv: &[OsString], capture_stdout: bool) -> Result<Spawned, SpawnFailure> {
    let Some((program, args)) = argv.split_first() else {
        return Err(SpawnFailure {
            code: EXIT_NOT_FOUND,
            reason: "no command given (usage: worker-shim [OPTIONS] -- COMMAND [ARG]...)".into(),
        });
    };
    #[cfg(all(target_os = "linux", not(feature = "portable")))]
    let (spawned, guard): (_, Option<Guard>) = (vfork::spawn(program, args, capture_stdout), None);
    // No parent-death signal: the guard first, told the group by the worker.
    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    let guard = Guard::start_before_worker();
    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    let spawned = spawn_with_command(
        program,
        args,
        capture_stdout,
        guard.as_ref().map(Guard::lifeline_fd),
    );
    match spawned {
        Ok(child) => Ok(Spawned { child, guard }),
        Err(e) => {
            if let Some(g) = guard {
                g.finish();
            }
            let code = match e.kind() {
                ErrorKind::NotFound => EXIT_NOT_FOUND,
                _ => EXIT_NOT_EXECUTABLE,
            };
            Err(SpawnFailure {
                code,
                reason: format!("cannot run {}: {e}", program.to_string_lossy()),
            })
        }
    }
}

/// The POSIX fallback: std's `Command`, with a `pre_exec` closure (so a
/// full fork) that resets the signals and tells the guard the group.
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
fn spawn_with_command(
    program: &OsString,
    args: &[OsString],
    capture_stdout: bool,
    lifeline: Option<std::os::fd::RawFd>,
) -> std::io::Result<Worker> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    use crate::signals::SpawnMask;

    // SAFETY: isatty only inspects fd 0.
    let stdin_is_tty = unsafe { libc::isatty(libc::STDIN_FILENO) } == 1;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::inherit())
        .stdout(if capture_stdout {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .stderr(Stdio::piped())
        .process_group(0);
    // Until the fork is done (see signals::SpawnMask).
    let mask = SpawnMask::enter();
    // SAFETY: only async-signal-safe syscalls run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // The worker starts with no signal blocked and the forwarded
            // ones at their default action, as without the shim.
            mask.reset_in_child();
            // Tell the guard this process's group (its own pid, after
            // setpgid); exec then closes this copy of the pipe.
            if let Some(fd) = lifeline {
                let pid = libc::getpid().to_ne_bytes();
                // A guard that died meanwhile must not kill the worker with
                // SIGPIPE: the write just fails.
                let old = libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                libc::write(fd, pid.as_ptr().cast(), pid.len());
                libc::signal(libc::SIGPIPE, old);
            }
            if stdin_is_tty {
                // Like tini: give the terminal to the worker's group so it can
                // read from it and receive Ctrl-C once, directly.
                let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid());
                libc::signal(libc::SIGTTOU, old);
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    // The closure (and the mask it holds) goes with the command: the
    // shim's own mask is restored here, after the fork.
    drop(cmd);
    let mut child = spawned?;
    Ok(Worker {
        pid: child.id(),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
    })
}
