//! `worker-shim [OPTIONS] -- COMMAND [ARG]...`
//!
//! Runs COMMAND as its child and behaves, to the caller, like COMMAND:
//! output passes through untouched, signals are forwarded, the exit code is
//! the child's (128+N for a signal). On top, it keeps the head and tail of
//! stdout and stderr, classifies provider failures, writes one exit record
//! atomically, and maps transient failures to EX_TEMPFAIL (75).

mod capture;
mod child;
mod cli;
mod guard;
mod kanban;
mod nested;
mod pump;
mod report;
mod run_check;
mod signals;
mod spawn;
mod steer;
mod target;

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exit_record::{
    ExitInfo, ExitRecord, SCHEMA_NAME, SCHEMA_VERSION, StreamCapture, TaskContext, WriteOptions,
};
use failure_signatures::ClassifyContext;
use nix::errno::Errno;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::capture::HeadTail;
use crate::cli::{Fsync, Options};
use crate::pump::Activity;
use crate::signals::Forwarder;

fn main() {
    let code = run();
    std::process::exit(code);
}

/// The failure signature of a run the shim skipped (see `Run::skip_run`).
const SKIP_SIGNATURE: &str = "worker-shim-skip-unhealthy-provider";

/// A boolean variable: set and not empty, `0`, `false`, `no` or `off`.
fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| {
        let v = v.to_string_lossy();
        let v = v.trim();
        !(v.is_empty()
            || ["0", "false", "no", "off"]
                .iter()
                .any(|f| v.eq_ignore_ascii_case(f)))
    })
}

/// `re-auth` or an RFC 3339 time, as the watchdog words it.
fn health_until(until: Option<i64>) -> String {
    match until {
        None => "re-auth".into(),
        Some(t) => jiff::Timestamp::from_second(t)
            .map(|ts| ts.to_string())
            .unwrap_or_else(|_| t.to_string()),
    }
}

/// One line on stderr, prefixed, never panicking on a closed stderr.
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "worker-shim: {msg}");
}

/// One malloc arena for the whole shim (glibc). Each pump thread would
/// otherwise get an arena of its own on its first allocation, whose touched
/// pages stay in the peak RSS; the shim's allocations are few and its
/// threads hardly contend, so sharing costs nothing measurable.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}

fn run() -> i32 {
    one_malloc_arena();
    // One run's output redacted and classified once, then exit: every
    // regex the shim compiles favours memory over speed (kw-bench 2d).
    failure_signatures::prefer_small_memory();
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == guard::GUARD_ARG) {
        guard::run_guard(
            &args
                .get(2)
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    let argv0 = args.first().cloned().unwrap_or_default();
    // Inside a run another shim supervises, the command runs in our place
    // and nothing of ours reaches its output but why it could not start.
    let nested = nested::is_nested();
    let warn = |w: &String| {
        if !nested {
            say(w);
        }
    };
    // No option can keep the worker from running: a bad one is reported
    // (one line each) and its default used, see cli.rs.
    let (opts, command) = match target::masquerade_name(&argv0) {
        Some(name) => {
            // Every argument is the worker's; options come from the environment only.
            let (opts, warnings) = cli::from_environment();
            warnings.iter().for_each(warn);
            let path_env = std::env::var_os("PATH");
            let target_env = std::env::var_os("WORKER_SHIM_TARGET");
            match target::resolve_target(&name, target_env.as_deref(), path_env.as_deref()) {
                Ok(real) => {
                    if let Some(w) = &real.warning {
                        warn(w);
                    }
                    let mut command = vec![real.path.into_os_string()];
                    command.extend(args.iter().skip(1).cloned());
                    (opts, command)
                }
                Err(reason) => {
                    say(&reason);
                    if kanban::is_kanban_worker() && !nested {
                        kanban::write_exit_trailer(spawn::EXIT_NOT_FOUND);
                    }
                    return spawn::EXIT_NOT_FOUND;
                }
            }
        }
        None => {
            let (opts, command, warnings) = cli::parse_command_line(&args);
            warnings.iter().for_each(warn);
            (opts, command)
        }
    };
    if nested {
        return nested::run_in_place(&command);
    }
    if let Some(mark) = nested::own_mark() {
        // SAFETY: no other thread exists yet (the pumps and the signal
        // forwarding start with the worker), so nothing reads the
        // environment while it changes.
        unsafe { std::env::set_var(nested::IN_RUN, mark) };
    }
    Run::new(opts, command).execute()
}

struct Run {
    opts: Options,
    command: Vec<OsString>,
    steered: Option<exit_record::Steered>,
    /// Set when the worker is not to be started (see `skip_run`).
    skip: Option<steer::Skip>,
    id: String,
    started_at: jiff::Timestamp,
    clock: Instant,
}

struct Outcome {
    pid: Option<u32>,
    exit: ExitInfo,
    stdout: StreamCapture,
    stderr: StreamCapture,
    /// The group guard, killed at the worker's exit, reaped after the record.
    guard: Option<guard::Stopped>,
}

impl Run {
    fn new(opts: Options, mut command: Vec<OsString>) -> Run {
        // Only a worker launched by the kanban dispatcher is steered (or
        // skipped). A health file that fails its checks means no steering,
        // no skip and one line; the worker starts regardless.
        let mut skip = None;
        let steered = std::env::var_os(hermes_board::env::KANBAN_TASK).and_then(|_| {
            let file = opts
                .health_file
                .clone()
                .unwrap_or_else(steer::default_health_file);
            let may_skip = kanban::is_kanban_worker()
                && !env_flag("WORKER_SHIM_NO_SKIP")
                && opts.tempfail_exit != cli::Tempfail::Off;
            let now = jiff::Timestamp::now().as_second();
            match steer::consult(
                &mut command,
                &file,
                std::env::var(hermes_board::env::PROFILE).ok(),
                may_skip,
                now,
            ) {
                Ok(c) => {
                    if let Some(note) = &c.note {
                        say(note);
                    }
                    skip = c.skip;
                    c.steered
                }
                Err(e) => {
                    say(&format!("not steering this worker: {e}"));
                    None
                }
            }
        });
        Run {
            opts,
            command,
            steered,
            skip,
            id: exit_record::new_record_id(),
            started_at: jiff::Timestamp::now(),
            clock: Instant::now(),
        }
    }

    fn execute(mut self) -> i32 {
        let kanban = kanban::is_kanban_worker();
        if let Some(skip) = self.skip.take()
            && let Some(code) = self.skip_run(&skip)
        {
            kanban::write_exit_trailer(code);
            return code;
        }
        let mut outcome = self.supervise();
        let worker_code = outcome.exit.code;
        let guard = outcome.guard.take();
        let code = self.finish(outcome);
        if let Some(g) = guard {
            g.reap();
        }
        // The very last output: what a dispatcher that missed our exit
        // status reads from the task's log (see kanban.rs).
        if kanban::needs_trailer(kanban, worker_code, code) {
            kanban::write_exit_trailer(code);
        }
        code
    }

    /// Does not start the worker: its provider is unhealthy with no healthy
    /// fallback. Writes the record the watchdog parks the task by (the
    /// provider's class and reset as the failure) and returns the tempfail
    /// code (75: Hermes requeues without counting a failure). `None` when
    /// the record could not be written: nothing would park the task, so the
    /// worker runs as if there were no skip.
    fn skip_run(&self, skip: &steer::Skip) -> Option<i32> {
        let cli::Tempfail::Code(code) = self.opts.tempfail_exit else {
            return None;
        };
        let until = health_until(skip.until);
        let line = format!(
            "provider {} is unhealthy until {until} ({}: {}) and profile {} has no healthy fallback (health file {} s old)",
            skip.provider, skip.class, skip.reason, skip.profile, skip.age_s
        );
        let ended_at = jiff::Timestamp::now();
        let record = ExitRecord {
            schema: SCHEMA_NAME.into(),
            schema_version: SCHEMA_VERSION,
            id: self.id.clone(),
            argv: self
                .command
                .iter()
                .map(|a| failure_signatures::redact(&a.to_string_lossy()).into_owned())
                .collect(),
            cwd: std::env::current_dir()
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            pid: None,
            shim_pid: std::process::id(),
            started_at: self.started_at,
            ended_at,
            duration_ms: self.clock.elapsed().as_millis() as u64,
            exit: ExitInfo {
                code: None,
                signal: None,
                reported_code: code,
                spawn_error: None,
            },
            task: TaskContext::from_env(|k| std::env::var(k).ok()),
            stdout: StreamCapture::default(),
            stderr: StreamCapture::default(),
            failure: Some(exit_record::Failure {
                class: skip.class,
                signature: SKIP_SIGNATURE.into(),
                provider: Some(skip.provider.clone()),
                transient: skip.class.default_transient(),
                matched_line: line.clone(),
                resets_at: skip.until,
                retry_after_s: skip
                    .until
                    .map(|t| t.saturating_sub(ended_at.as_second()).max(0) as f64),
            }),
            steered: None,
            run_at_exit: None,
            skipped: Some(exit_record::Skipped {
                provider: skip.provider.clone(),
                until: skip.until,
                reason: skip.reason.clone(),
            }),
        };
        let dir = self
            .opts
            .record_dir
            .clone()
            .unwrap_or_else(exit_record::default_record_dir);
        let file = dir.join(exit_record::record_file_name(&record.id));
        match exit_record::write_atomic(&dir, &record, WriteOptions { fsync: true }) {
            Ok(_) => {}
            Err(_) if std::fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()) => {}
            Err(e) => {
                say(&format!(
                    "{line}, but the exit record was not written ({e}): starting the worker anyway"
                ));
                return None;
            }
        }
        say(&format!(
            "not starting this worker: {line}; exit {code} so Hermes requeues the task without counting a failure (WORKER_SHIM_NO_SKIP=1 runs it anyway)"
        ));
        Some(code)
    }

    fn supervise(&self) -> Outcome {
        let capture_stdout = !self.opts.no_capture_stdout;
        let forwarder = Forwarder::install()
            .map_err(|e| say(&format!("signals will not be forwarded: {e}")))
            .ok();
        let spawn::Spawned {
            mut child,
            guard: early_guard,
        } = match spawn::spawn_worker(&self.command, capture_stdout) {
            Ok(spawned) => spawned,
            Err(failure) => {
                say(&failure.reason);
                return Outcome {
                    pid: None,
                    exit: ExitInfo {
                        code: None,
                        signal: None,
                        reported_code: failure.code,
                        spawn_error: Some(failure.reason),
                    },
                    stdout: StreamCapture::default(),
                    stderr: StreamCapture::default(),
                    guard: None,
                };
            }
        };
        let pid = Pid::from_raw(child.id() as i32);

        let (done_tx, done_rx) = mpsc::channel();
        let new_cap = || {
            Arc::new(Mutex::new(HeadTail::new(
                self.opts.head_bytes,
                self.opts.tail_bytes,
            )))
        };
        let out_cap = capture_stdout.then(new_cap);
        let err_cap = Some(new_cap());
        let mut pumps = Pumps {
            started: Vec::new(),
            done_tx,
            waiting: Vec::new(),
        };
        for (name, fd, to_fd, cap) in [
            ("stdout", child.stdout.take(), libc::STDOUT_FILENO, &out_cap),
            ("stderr", child.stderr.take(), libc::STDERR_FILENO, &err_cap),
        ] {
            if let (Some(fd), Some(cap)) = (fd, cap) {
                let pipe = WaitingPipe {
                    name,
                    fd,
                    to_fd,
                    cap: Arc::clone(cap),
                };
                // Without the main loop (no signalfd) nothing would watch a
                // waiting pipe: start its pump now.
                if forwarder.is_some() {
                    pumps.waiting.push(pipe);
                } else {
                    pumps.start(pipe);
                }
            }
        }

        let (status, group_guard) = wait_for_exit(pid, forwarder.as_ref(), &mut pumps, early_guard);
        let guard = group_guard.map(guard::Guard::stop);
        // A pipe that never had output: closed (no pump needed) or held
        // open by a background child (pumped from now on, for the drain).
        pumps.settle_after_exit();
        let Pumps {
            started, done_tx, ..
        } = pumps;
        drop(done_tx);
        let pumps = started;
        drain(&pumps, &done_rx, self.opts.drain_quiet, self.opts.drain_max);
        let (code, signal) = match status {
            Some(WaitStatus::Exited(_, code)) => (Some(code), None),
            Some(WaitStatus::Signaled(_, sig, _)) => (None, Some(sig as i32)),
            _ => (None, None),
        };
        Outcome {
            pid: Some(pid.as_raw() as u32),
            exit: ExitInfo {
                code,
                signal,
                reported_code: code.unwrap_or(1),
                spawn_error: None,
            },
            stdout: report::snapshot(out_cap.as_ref()),
            stderr: report::snapshot(err_cap.as_ref()),
            guard,
        }
    }

    fn finish(self, mut outcome: Outcome) -> i32 {
        let ended_at = jiff::Timestamp::now();
        let (catalogue, warning) = report::catalogue(self.opts.signatures.as_deref());
        if let Some(w) = warning {
            say(&w);
        }
        let failure = report::classify(&catalogue, &outcome.stdout, &outcome.stderr, || {
            // Only built when a signature won: the local zone is read from
            // /etc/localtime (see `local_time_zone`).
            ClassifyContext {
                now: ended_at,
                local_tz: failure_signatures::local_time_zone(),
            }
        });
        // A failure found in a kanban worker's output: did the worker end
        // its run itself (`kanban complete` / `kanban block`)? Then it did
        // not fail, whatever it printed, and keeps its own exit code. Only
        // asked when a failure was classified, so a clean exit never waits.
        let run_at_exit = if failure.is_some() && outcome.exit.spawn_error.is_none() {
            run_check::from_env()
        } else {
            None
        };
        let reported_by_worker = run_at_exit
            .as_ref()
            .is_some_and(exit_record::RunAtExit::reported_by_worker);
        if outcome.exit.spawn_error.is_none() {
            let judged = if reported_by_worker {
                None
            } else {
                failure.as_ref()
            };
            outcome.exit.reported_code =
                report::reported_code(&outcome.exit, judged, self.opts.tempfail_exit);
        }
        let reported = outcome.exit.reported_code;
        // Without a translation, this is what the shim exits with (a spawn
        // failure's 126/127 is never translated).
        let own_code = if outcome.exit.spawn_error.is_some() {
            reported
        } else {
            report::reported_code(&outcome.exit, None, self.opts.tempfail_exit)
        };
        let fsync = match self.opts.fsync {
            Fsync::Always => true,
            Fsync::Never => false,
            Fsync::Failures => failure.is_some() || reported != 0,
        };
        let record = ExitRecord {
            schema: SCHEMA_NAME.into(),
            schema_version: SCHEMA_VERSION,
            id: self.id,
            argv: self
                .command
                .iter()
                .map(|a| failure_signatures::redact(&a.to_string_lossy()).into_owned())
                .collect(),
            cwd: std::env::current_dir()
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            pid: outcome.pid,
            shim_pid: std::process::id(),
            started_at: self.started_at,
            ended_at,
            duration_ms: self.clock.elapsed().as_millis() as u64,
            exit: outcome.exit,
            task: TaskContext::from_env(|k| std::env::var(k).ok()),
            stdout: outcome.stdout,
            stderr: outcome.stderr,
            failure: failure.map(exit_record::Failure::from),
            steered: self.steered,
            run_at_exit,
            skipped: None,
        };
        let dir = self
            .opts
            .record_dir
            .clone()
            .unwrap_or_else(exit_record::default_record_dir);
        let file = dir.join(exit_record::record_file_name(&record.id));
        match exit_record::write_atomic(&dir, &record, WriteOptions { fsync }) {
            Ok(_) => reported,
            // Renamed into place, only the directory fsync failed: the
            // record is there for the watchdog, so the code it carries
            // stands.
            Err(e) if std::fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()) => {
                say(&format!(
                    "exit record written but not synced to disk ({e}); exit code {reported}"
                ));
                reported
            }
            // No record: nothing will reschedule the task with its reset
            // time, so the shim does not pretend to have handled a
            // transient failure. It passes the worker's own code through,
            // as the README promises, and says so.
            Err(e) => {
                let translated = if own_code != reported {
                    format!(" (not translated to {reported}: no record to act on)")
                } else {
                    String::new()
                };
                say(&format!(
                    "exit record not written ({e}); worker exit code {own_code} passed through{translated}"
                ));
                own_code
            }
        }
    }
}

/// A worker pipe no pump reads yet: pump threads start at its first byte,
/// so a worker with no output on a stream (`-- true`) never pays for one.
struct WaitingPipe {
    name: &'static str,
    fd: OwnedFd,
    to_fd: libc::c_int,
    cap: Arc<Mutex<HeadTail>>,
}

struct Pumps {
    started: Vec<Arc<Activity>>,
    done_tx: mpsc::Sender<()>,
    waiting: Vec<WaitingPipe>,
}

impl Pumps {
    fn start(&mut self, p: WaitingPipe) {
        pump::grow_pipe(&p.fd);
        let activity = Activity::new();
        match pump::spawn_pump(
            p.name,
            p.fd,
            p.to_fd,
            p.cap,
            Arc::clone(&activity),
            self.done_tx.clone(),
        ) {
            Ok(_) => self.started.push(activity),
            Err(e) => say(&format!("cannot pass {} through: {e}", p.name)),
        }
    }

    fn start_all(&mut self) {
        for p in std::mem::take(&mut self.waiting) {
            self.start(p);
        }
    }

    /// `revents[i]` for `waiting[i]`: output starts its pump; a hang-up
    /// with nothing to read is the end of a stream that never had output.
    fn on_poll(&mut self, revents: &[libc::c_short]) {
        let waiting = std::mem::take(&mut self.waiting);
        for (p, &ev) in waiting.into_iter().zip(revents) {
            if ev & libc::POLLIN != 0 || ev & (libc::POLLERR | libc::POLLNVAL) != 0 {
                self.start(p);
            } else if ev & libc::POLLHUP != 0 {
                drop(p);
            } else {
                self.waiting.push(p);
            }
        }
    }

    /// After the worker exited: one look at each waiting pipe.
    fn settle_after_exit(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let mut pfds: Vec<libc::pollfd> = self
            .waiting
            .iter()
            .map(|p| libc::pollfd {
                fd: p.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: valid pollfds, their count; no wait.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 0) };
        if r < 0 {
            self.start_all();
            return;
        }
        let revents: Vec<libc::c_short> = pfds.iter().map(|p| p.revents).collect();
        self.on_poll(&revents);
        // Still open and silent: a background child holds it.
        self.start_all();
    }
}

/// After the worker exited, keeps passing through what is still in its pipes
/// (held open by background children, or waiting for a slow reader) until
/// every pump has finished, or every pump still running has been idle —
/// waiting for input, not writing to our reader — for `quiet`, and in any
/// case no longer than `max` in total. A reader still taking output is
/// never cut off by the quiet period; a reader that takes nothing, or a
/// background child that never stops writing, by `max`.
fn drain(pumps: &[Arc<Activity>], done: &mpsc::Receiver<()>, quiet: Duration, max: Duration) {
    let start = Instant::now();
    let hard = start.checked_add(max);
    let mut running = pumps.len();
    while running > 0 {
        let now = Instant::now();
        let left = match hard {
            Some(h) if now >= h => return,
            Some(h) => h - now,
            None => Duration::MAX,
        };
        let quiet_for = pumps
            .iter()
            .filter(|p| !p.is_done())
            .map(|p| p.quiet_for(now))
            .min()
            // The quiet period starts at the worker's exit at the earliest:
            // its last output may not have been read yet.
            .map(|q| q.min(now - start));
        let Some(quiet_for) = quiet_for else { return };
        if quiet_for >= quiet {
            return;
        }
        match done.recv_timeout((quiet - quiet_for).min(left)) {
            Ok(()) => running -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Waits for the worker on the main thread, forwarding signals meanwhile:
/// one `poll` on the signalfd, with a timeout that starts the group guard
/// for a worker still running after [`guard::GUARD_DELAY`]. The worker is
/// seen exited *without* being reaped (`waitid` with `WNOWAIT`), forwarding
/// stops, and only then is it reaped: its pid cannot be reused while a
/// signal may still be sent to it.
fn wait_for_exit(
    pid: Pid,
    forwarder: Option<&Forwarder>,
    pumps: &mut Pumps,
    early_guard: Option<guard::Guard>,
) -> (Option<WaitStatus>, Option<guard::Guard>) {
    let mut guard_due = early_guard.is_none();
    let mut group_guard = early_guard;
    let guard_at = Instant::now() + guard::GUARD_DELAY;
    match forwarder {
        Some(f) => loop {
            if child::has_exited(pid) {
                break;
            }
            let timeout = if guard_due {
                let left = guard_at.saturating_duration_since(Instant::now());
                i32::try_from(left.as_millis()).unwrap_or(i32::MAX)
            } else {
                -1
            };
            if guard_due && timeout == 0 {
                guard_due = false;
                group_guard = guard::Guard::start(pid.as_raw() as u32);
                continue;
            }
            let mut pfds = vec![libc::pollfd {
                fd: f.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            pfds.extend(pumps.waiting.iter().map(|p| libc::pollfd {
                fd: p.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }));
            // SAFETY: valid pollfds, their count.
            let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
            if r < 0 && Errno::last() != Errno::EINTR {
                // Cannot wait on the descriptors: pump every pipe and wait
                // the plain way.
                pumps.start_all();
                break;
            }
            if r > 0 {
                if pfds[0].revents != 0 {
                    f.forward_pending(Some((pid, true)));
                }
                let revents: Vec<libc::c_short> = pfds[1..].iter().map(|p| p.revents).collect();
                pumps.on_poll(&revents);
            }
        },
        None if guard_due => {
            group_guard = guard::Guard::start(pid.as_raw() as u32);
        }
        None => {}
    }
    child::wait_exited(pid);
    loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            Ok(status) => return (Some(status), group_guard),
            Err(_) => return (None, group_guard),
        }
    }
}
