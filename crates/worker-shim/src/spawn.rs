//! Starting the worker: its own process group, on Linux a parent-death
//! signal so a SIGKILLed shim does not leave it running (elsewhere the
//! group guard, started just before the worker, covers the worker too: see
//! `guard.rs`), and the 126/127 conventions for spawn failures.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::guard::Guard;
use crate::signals::SpawnMask;

/// Exit code for "command found but could not be executed" (POSIX shells).
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit code for "command not found" (POSIX shells).
pub const EXIT_NOT_FOUND: i32 = 127;

pub struct SpawnFailure {
    pub code: i32,
    pub reason: String,
}

/// The running worker, and its group guard when one was started with it.
pub struct Spawned {
    pub child: Child,
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
    let parent = std::process::id() as libc::pid_t;
    #[cfg(all(target_os = "linux", not(feature = "portable")))]
    let guard: Option<Guard> = None;
    // No parent-death signal: the guard first, told the group by the worker.
    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    let guard = Guard::start_before_worker();
    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    let lifeline = guard.as_ref().map(Guard::lifeline_fd);
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
            #[cfg(any(not(target_os = "linux"), feature = "portable"))]
            if let Some(fd) = lifeline {
                let pid = libc::getpid().to_ne_bytes();
                // A guard that died meanwhile must not kill the worker with
                // SIGPIPE: the write just fails.
                let old = libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                libc::write(fd, pid.as_ptr().cast(), pid.len());
                libc::signal(libc::SIGPIPE, old);
            }
            #[cfg(all(target_os = "linux", not(feature = "portable")))]
            {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The shim may have died between fork and prctl.
                if libc::getppid() != parent {
                    libc::_exit(EXIT_NOT_EXECUTABLE);
                }
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
