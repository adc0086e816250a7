//! A stand-in for the Hermes gateway's embedded dispatcher, for tests and
//! the demo: it writes `gateway.pid` like Hermes 0.19 (JSON with the
//! process start time), logs Hermes-format lines, and every tick claims the
//! ready tasks of a real board with Hermes' own claim SQL. Every Hermes
//! format it writes (the SQL, the pid file, the log records, a worker's
//! environment) is [`hermes_board::testkit`]'s. Without a worker
//! command it completes each claimed task at once; with one, it spawns the
//! worker per task with the dispatcher's environment and judges its exit
//! like the gateway does (0 and still running = protocol violation, 75 =
//! rate limited, else crashed). `--replace` takes over from a running one
//! the way `hermes gateway run --replace` does (SIGTERM, wait, SIGKILL).
//! SIGUSR1 freezes its loop for good while the process lives on.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hermes_board::testkit;
use hermes_board::testkit::gateway;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use kanban_watchdog::cli::FakeGatewayArgs;
use kanban_watchdog::gateway::gateway_process;
use kanban_watchdog::process_start::start_time;

/// The board it dispatches is Hermes' default one.
const BOARD: &str = hermes_board::home::DEFAULT_BOARD;

pub fn run(args: &FakeGatewayArgs) -> anyhow::Result<()> {
    if args.replace {
        replace_running(&args.pid_file)?;
    }
    let me = std::process::id() as i32;
    let argv: Vec<String> = std::env::args().collect();
    let pid_doc = gateway::pid_file_json(me, "fake-gateway", &argv, start_time(me));
    kanban_watchdog::state::write_atomic(&args.pid_file, pid_doc.as_bytes())
        .with_context(|| format!("cannot write {}", args.pid_file.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
    // SIGUSR1 freezes the dispatcher loop between ticks while the process
    // stays alive and responsive to SIGTERM: the silent-stall incident,
    // without a stopped process holding the board's write lock.
    let frozen = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&frozen))?;
    let mut log = Log::open(&args.log)?;
    let interval = Duration::from_millis(args.interval_ms.max(10));
    log.line("INFO", &gateway::embedded(interval));
    let mut workers: HashMap<String, (Child, i64)> = HashMap::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if !frozen.load(Ordering::Relaxed) && Instant::now() >= next {
            next = Instant::now() + interval;
            if let Err(e) = tick(args, &mut log, &mut workers) {
                log.line("ERROR", &gateway::tick_failed(BOARD, &e));
            }
        }
        std::thread::sleep(Duration::from_millis(10).min(interval));
    }
    for line in gateway::SHUTDOWN {
        log.line("INFO", line);
    }
    // Only remove the pid file if it is still ours (a replacement may own it).
    if gateway_process(&args.pid_file).is_some_and(|(pid, _)| pid == me) {
        let _ = std::fs::remove_file(&args.pid_file);
    }
    Ok(())
}

fn tick(
    args: &FakeGatewayArgs,
    log: &mut Log,
    workers: &mut HashMap<String, (Child, i64)>,
) -> anyhow::Result<()> {
    let mut conn = testkit::connect(&args.board)?;
    // Reap finished workers first, as the dispatcher does each tick.
    let mut finished = Vec::new();
    for (task, (child, run)) in workers.iter_mut() {
        if let Some(status) = child.try_wait()? {
            finished.push((task.clone(), *run, status.code()));
        }
    }
    for (task, run, code) in finished {
        workers.remove(&task);
        testkit::dispatcher_judges_exit(&conn, &task, run, code)?;
    }
    let ready = testkit::ready_ids(&conn)?;
    let mut spawned = 0;
    for id in ready {
        // A worker it spawns gets its pid recorded once started.
        let claimed = if args.worker.is_empty() {
            testkit::claim(&mut conn, &id, i64::from(std::process::id()))
        } else {
            testkit::claim_before_spawn(&mut conn, &id)
        };
        let run_id = match claimed {
            Ok(run) => run,
            Err(_) => continue,
        };
        spawned += 1;
        if args.worker.is_empty() {
            testkit::complete(&conn, &id)?;
            continue;
        }
        let child = Command::new(&args.worker[0])
            .args(&args.worker[1..])
            .envs(gateway::worker_env(
                &id,
                run_id,
                &args.board,
                BOARD,
                &testkit::assignee(&conn, &id).unwrap_or_default(),
            ))
            .stdin(Stdio::null())
            .process_group(0)
            .spawn();
        match child {
            Ok(child) => {
                testkit::set_worker_pid(&conn, &id, child.id())?;
                workers.insert(id, (child, run_id));
            }
            Err(e) => log.line("ERROR", &gateway::spawn_failed(&id, &e)),
        }
    }
    if spawned > 0 {
        log.line("INFO", &gateway::spawned(BOARD, spawned));
    }
    Ok(())
}

/// Stops the gateway named by the pid file: SIGTERM, wait up to 2 s, SIGKILL
/// (a SIGSTOPped process only dies of the SIGKILL).
fn replace_running(pid_file: &Path) -> anyhow::Result<()> {
    let Some((pid, true)) = gateway_process(pid_file) else {
        return Ok(());
    };
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, Signal::SIGTERM);
    let _ = kill(pid, Signal::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && start_time(pid.as_raw()).is_some() {
        std::thread::sleep(Duration::from_millis(20));
    }
    if start_time(pid.as_raw()).is_some() {
        let _ = kill(pid, Signal::SIGKILL);
    }
    Ok(())
}

struct Log {
    file: std::fs::File,
}

impl Log {
    fn open(path: &Path) -> anyhow::Result<Log> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Log {
            file: OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?,
        })
    }

    /// A record of the dispatcher, as Hermes logs it.
    fn line(&mut self, level: &str, msg: &str) {
        let line = gateway::log_line(&jiff::ZonedDateTime::now(), level, msg);
        let _ = writeln!(self.file, "{line}");
    }
}

use std::os::unix::process::CommandExt;
