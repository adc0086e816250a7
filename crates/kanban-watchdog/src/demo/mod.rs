//! `kanban-watchdog demo`: the whole story in one command, with no Hermes
//! install and no network beyond 127.0.0.1. A temporary Hermes-schema board,
//! a fake worker run through the real `worker-shim` that prints a real
//! Codex 429 line and exits 0, the watchdog running in-process, and a
//! stand-in gateway whose loop is stopped while its process lives.
//! Exits 0 only if every step happened.
//!
//! The demo and [`fake_gateway`] are modules of the binary, not of the
//! `kanban_watchdog` library: the daemon does not link them.

pub mod fake_gateway;
mod webhook;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use exit_record::health::HealthState;
use hermes_board::{home, testkit};

use kanban_watchdog::config::{AlertsConfig, Config, Dur, WebhookConfig};
use kanban_watchdog::daemon::{Daemon, Event, Shared, channel_pair, start_watchers};
use kanban_watchdog::paths::Paths;
use kanban_watchdog::restart::RestartResult;
use webhook::webhook_receiver;

const TIMEOUT: Duration = Duration::from_secs(25);

struct Narrator {
    start: Instant,
    step: u32,
}

impl Narrator {
    fn say(&mut self, text: &str) {
        self.step += 1;
        let t = self.start.elapsed().as_secs_f64();
        let now = jiff::ZonedDateTime::now().strftime("%H:%M:%S%.3f");
        println!("[{now} +{t:5.2}s] step {:>2}: {text}", self.step);
        let _ = std::io::stdout().flush();
    }
    fn detail(&self, text: &str) {
        for line in text.lines() {
            println!("{:>27}{line}", "");
        }
    }
    fn act(&self, text: &str) {
        println!("\n== {text} ==");
    }
}

/// Polls `cond` until it yields a value or the timeout passes.
fn wait_for<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if start.elapsed() > TIMEOUT {
            anyhow::bail!("demo step failed: timed out after {TIMEOUT:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run(keep: bool) -> anyhow::Result<ExitCode> {
    let tmp = tempfile_dir()?;
    let result = run_in(&tmp);
    cleanup_gateways(&tmp);
    if keep {
        println!("\ndemo files kept in {}", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    match result {
        Ok(()) => {
            println!("\ndemo complete: every step happened.");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("\nDEMO FAILED: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir().join(format!("kanban-watchdog-demo-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    Ok(base)
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("current exe has no directory")?;
    let candidate = dir.join(name);
    if candidate.is_file() {
        return Ok(candidate);
    }
    anyhow::bail!(
        "{name} not found next to {} (build both binaries: cargo build --workspace --bins)",
        exe.display()
    )
}

fn metric_line(shared: &Shared, prefix: &str) -> String {
    kanban_watchdog::metrics::encode(&shared.registry)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .collect::<Vec<_>>()
        .join("\n")
}

fn run_in(tmp: &Path) -> anyhow::Result<()> {
    let mut n = Narrator {
        start: Instant::now(),
        step: 0,
    };
    let shim = sibling_binary("worker-shim")?;
    let me = std::env::current_exe()?;
    let hermes_home = tmp.join("hermes");
    let db = home::board_path(&hermes_home, home::DEFAULT_BOARD);
    let coder_config = home::profile_config(&hermes_home, "coder");
    if let Some(dir) = coder_config.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &coder_config,
        "model:\n  provider: openai-codex\n  default: gpt-5\n",
    )?;
    let mut board = testkit::create_board(&db)?;
    let (webhook_url, alerts_got) = webhook_receiver()?;
    let gateway_args = |replace: bool| {
        let mut argv = vec![
            me.display().to_string(),
            "fake-gateway".into(),
            "--board".into(),
            db.display().to_string(),
            "--log".into(),
            home::gateway_log(&hermes_home).display().to_string(),
            "--pid-file".into(),
            home::pid_file(&hermes_home).display().to_string(),
            "--interval-ms".into(),
            "300".into(),
        ];
        if replace {
            argv.push("--replace".into());
        }
        argv
    };

    let mut cfg = Config {
        hermes_home: Some(hermes_home.clone()),
        record_dir: Some(tmp.join("records")),
        state_dir: Some(tmp.join("state")),
        ..Config::default()
    };
    cfg.retry.margin = Dur::secs(1);
    cfg.retry.jitter = Dur::secs(0);
    cfg.dispatcher.interval = Some(Dur(Duration::from_millis(300)));
    cfg.dispatcher.stall_after = Some(Dur::secs(3));
    cfg.dispatcher.check_every = Dur(Duration::from_millis(200));
    cfg.restart.command = gateway_args(true);
    cfg.restart.recovery_grace = Dur::secs(10);
    cfg.restart.backoff_initial = Dur::secs(1);
    cfg.http.listen = "127.0.0.1:0".into();
    cfg.alerts = AlertsConfig {
        repeat_interval: Dur::secs(3600),
        webhook: Some(WebhookConfig {
            url: webhook_url,
            timeout: Dur::secs(2),
            retries: 1,
        }),
        command: None,
        alertmanager: None,
    };
    let paths = Paths::resolve(&cfg);
    let daemon = Daemon::new(cfg.clone(), None, paths.clone(), false)?;
    let shared = daemon.shared();
    let (tx, rx) = channel_pair();
    let _watchers = start_watchers(&paths, tx.clone());
    let http = kanban_watchdog::run::start_http("127.0.0.1:0".parse()?, shared.clone(), &paths)?;
    let core = std::thread::spawn(move || daemon.run(rx));
    let result = story(
        &mut n,
        &mut board,
        &db,
        &shim,
        &paths,
        &shared,
        &alerts_got,
        &gateway_args,
        http.addr,
        &tx,
    );
    let _ = tx.send(Event::Shutdown);
    let _ = core.join();
    result
}

#[allow(clippy::too_many_arguments)]
fn story(
    n: &mut Narrator,
    board: &mut rusqlite::Connection,
    db: &Path,
    shim: &Path,
    paths: &Paths,
    shared: &Shared,
    alerts: &Arc<Mutex<Vec<serde_json::Value>>>,
    gateway_args: &dyn Fn(bool) -> Vec<String>,
    http: std::net::SocketAddr,
    _tx: &SyncSender<Event>,
) -> anyhow::Result<()> {
    let status = || shared.status.read().map(|s| s.clone()).ok();
    n.act("Act 1: a worker hits a provider rate limit, exits 0, and the watchdog rescues its task");
    testkit::add_task(board, "t_demo1", "coder", "ready")?;
    let run_id = testkit::claim_before_spawn(board, "t_demo1")?;
    n.say(&format!(
        "task t_demo1 (profile coder, provider openai-codex) claimed by the dispatcher: run {run_id}, status running"
    ));
    let resets_at = jiff::Timestamp::now().as_second() + 4;
    let worker = format!(
        "echo '⚠️  API call failed (attempt 3/3): RateLimitError [HTTP 429]'; \
         echo '📝 Error: HTTP 429: The usage limit has been reached. plan_type: team, resets_at: {resets_at}'; \
         echo '❌ Rate limited after 3 retries'; exit 0"
    );
    let before_park = metric_line(shared, "kanban_watchdog_board_writes_total");
    let out = Command::new(shim)
        .args(["--", "sh", "-c", &worker])
        .env("WORKER_SHIM_RECORD_DIR", &paths.record_dir)
        .envs(testkit::gateway::worker_env(
            "t_demo1",
            run_id,
            db,
            home::DEFAULT_BOARD,
            "coder",
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run worker-shim")?;
    // As the dispatcher: the spawned pid (the shim's) goes on the board;
    // the watchdog acts only on that process's record.
    testkit::set_worker_pid(board, "t_demo1", out.id())?;
    let out = out
        .wait_with_output()
        .context("cannot wait for worker-shim")?;
    let code = out.status.code().unwrap_or(-1);
    n.say(&format!(
        "worker printed a Codex 429 (resets_at {resets_at}) and exited 0; worker-shim exited {code} (EX_TEMPFAIL)"
    ));
    n.detail(&String::from_utf8_lossy(&out.stdout));
    anyhow::ensure!(code == 75, "worker-shim should exit 75, exited {code}");
    let record = wait_for("the exit record", || {
        let dir = std::fs::read_dir(&paths.record_dir).ok()?;
        let done = std::fs::read_dir(paths.done_dir()).ok()?;
        dir.chain(done)
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "json"))
    })?;
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).or_else(|_| {
            std::fs::read(
                paths
                    .done_dir()
                    .join(record.file_name().unwrap_or_default()),
            )
        })?)?;
    n.say(&format!(
        "exit record {}: exit.code={} reported_code={} failure.class={} resets_at={}",
        rec["id"].as_str().unwrap_or("?"),
        rec["exit"]["code"],
        rec["exit"]["reported_code"],
        rec["failure"]["class"].as_str().unwrap_or("?"),
        rec["failure"]["resets_at"]
    ));
    let provider = wait_for("provider openai-codex marked unhealthy", || {
        status()?
            .providers
            .into_iter()
            .find(|p| p.name == "openai-codex" && p.state == HealthState::Unhealthy)
    })?;
    n.say(&format!(
        "provider openai-codex marked unhealthy until {} ({})",
        kanban_watchdog::health::until_text(provider.until),
        provider.class.as_ref().map_or("", |c| c.as_str())
    ));
    let parked = wait_for("task t_demo1 parked in scheduled", || {
        (testkit::status(board, "t_demo1").ok()? == "scheduled")
            .then(|| status()?.parked.into_iter().find(|p| p.task == "t_demo1"))
            .flatten()
    })?;
    n.say(&format!(
        "task t_demo1 parked: running -> scheduled, returns at {} (reset + margin), never blocked",
        kanban_watchdog::health::until_text(parked.due_at)
    ));
    let after_park = metric_line(shared, "kanban_watchdog_board_writes_total");
    n.say("metrics changed:");
    n.detail(&format!(
        "before: {}",
        if before_park.is_empty() {
            "(no board writes yet)"
        } else {
            &before_park
        }
    ));
    n.detail(&format!("after:  {after_park}"));
    n.detail(&metric_line(shared, "kanban_watchdog_provider_unhealthy{"));
    wait_for("task t_demo1 back in ready after the reset", || {
        (testkit::status(board, "t_demo1").ok()? == "ready").then_some(())
    })?;
    n.say("reset time passed: task t_demo1 released scheduled -> ready, failure counters cleared");
    let events: Vec<String> = testkit::events(board, "t_demo1")?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    n.detail(&format!("board events: {}", events.join(", ")));

    n.act("Act 2: the dispatcher loop stops while the gateway process stays alive");
    let first = Command::new(&gateway_args(false)[0])
        .args(&gateway_args(false)[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the stand-in gateway")?;
    let first_pid = first.id() as i32;
    std::mem::forget(first);
    wait_for("task t_demo1 done by the gateway", || {
        (testkit::status(board, "t_demo1").ok()? == "done").then_some(())
    })?;
    n.say(&format!(
        "stand-in gateway (pid {first_pid}) claims ready work: t_demo1 is done"
    ));
    // The loop freezes between ticks while the process lives on (SIGSTOP
    // would do too, but could freeze it while it holds the board's lock).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first_pid),
        nix::sys::signal::Signal::SIGUSR1,
    )?;
    testkit::add_task(board, "t_demo2", "coder", "ready")?;
    testkit::add_task(board, "t_demo3", "coder", "ready")?;
    n.say(&format!(
        "gateway loop frozen (pid {first_pid} still alive, logging nothing); 2 new ready tasks wait"
    ));
    let stalled = wait_for("the stall to be detected", || {
        let s = status()?;
        s.dispatcher
            .stalled
            .then_some(s.dispatcher.reason.unwrap_or_default())
    })?;
    n.say(&format!("watchdog: {stalled}"));
    // The webhook receiver's copy of the stall alert with this status.
    let stall_alert = |status: &str| {
        wait_for(&format!("a {status} stall alert at the webhook"), || {
            alerts
                .lock()
                .ok()?
                .iter()
                .find(|a| a["alert"] == "dispatcher_stalled" && a["status"] == status)
                .cloned()
        })
    };
    let firing = stall_alert("firing")?;
    n.say(&format!(
        "webhook received: {}",
        firing["text"].as_str().unwrap_or("?")
    ));
    let restart = wait_for("a restart", || {
        status()?
            .restarts
            .into_iter()
            .find(|r| r.result == RestartResult::Started)
    })?;
    n.say(&format!("restart: {}", restart.detail));
    wait_for("the waiting tasks to be claimed again", || {
        let done = ["t_demo2", "t_demo3"]
            .iter()
            .all(|t| testkit::status(board, t).is_ok_and(|s| s == "done"));
        done.then_some(())
    })?;
    n.say("new gateway claimed t_demo2 and t_demo3: both done");
    let resolved = stall_alert("resolved")?;
    n.say(&format!(
        "webhook received: {}",
        resolved["text"].as_str().unwrap_or("?")
    ));
    n.detail(&metric_line(shared, "kanban_watchdog_restarts_total"));
    n.detail(&format!(
        "status JSON at http://{http}/status, metrics at http://{http}/metrics (while it ran)"
    ));
    Ok(())
}

/// Stops every stand-in gateway the demo started (the replacement included).
fn cleanup_gateways(tmp: &Path) {
    let pid_file = tmp.join("hermes/gateway.pid");
    for _ in 0..3 {
        match kanban_watchdog::gateway::gateway_process(&pid_file) {
            Some((pid, true)) => {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = std::fs::remove_file(&pid_file);
            }
            _ => break,
        }
    }
}
