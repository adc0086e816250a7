//! Issue 17 (macOS): the shipped launchd agent
//! (config/launchd/ai.kanban-watchdog.plist), parsed with Python's plistlib
//! (strict XML: a `--` in a comment fails it, as it fails launchd):
//!
//! * its ProgramArguments parse with the daemon's own CLI as `run --config`
//!   the documented config, from where the systemd unit expects the binary;
//!   its restart, stop timeout, environment and open-files limits match the
//!   systemd unit's;
//! * those arguments, with `/Users/YOU` made a temporary home, start the real
//!   daemon (with launchd's environment and soft open-files limit), which
//!   serves its HTTP endpoint and exits 0 on SIGTERM well within ExitTimeOut.
//!
//! Not run here: launchd itself (macOS only; see the README's macOS section).

mod real_programs;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use kanban_watchdog::cli::{Cli, Command as Sub};
use real_programs::*;
use serde_json::Value;

const WATCHDOG: &str = env!("CARGO_BIN_EXE_kanban-watchdog");
const PLACEHOLDER: &str = "/Users/YOU";

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// The agent as JSON, through Python's plistlib.
fn agent() -> Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
        ])
        .arg(config_dir().join("launchd/ai.kanban-watchdog.plist"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "plistlib refuses the agent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `Key=value` of the systemd unit (the last one wins).
fn unit_value(key: &str) -> String {
    let unit = std::fs::read_to_string(config_dir().join("kanban-watchdog.service")).unwrap();
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .next_back()
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .trim()
        .to_string()
}

fn args(agent: &Value) -> Vec<String> {
    agent["ProgramArguments"]
        .as_array()
        .expect("ProgramArguments")
        .iter()
        .map(|a| a.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn the_agent_runs_the_daemon_as_the_cli_defines_it_and_mirrors_the_unit() {
    let agent = agent();
    assert_eq!(agent["Label"], "ai.kanban-watchdog", "named as its file");
    let argv = args(&agent);
    // The binary where the unit's ExecStart= has it (cargo install).
    let exec_start = unit_value("ExecStart");
    let unit_argv: Vec<&str> = exec_start.split_whitespace().collect();
    assert_eq!(
        argv[0].strip_prefix(PLACEHOLDER),
        unit_argv[0].strip_prefix("%h"),
        "same program as the unit"
    );
    assert_eq!(
        argv[1..]
            .iter()
            .map(|a| a.replace(PLACEHOLDER, "%h"))
            .collect::<Vec<_>>(),
        unit_argv[1..],
        "same arguments as the unit"
    );
    // And the daemon's own CLI reads them as `run` with that config.
    let cli = Cli::try_parse_from(&argv).expect("the CLI accepts the agent's arguments");
    match cli.command {
        Sub::Run { common, dry_run } => {
            assert!(!dry_run);
            assert_eq!(
                common.config,
                Some(PathBuf::from(format!(
                    "{PLACEHOLDER}/.config/kanban-watchdog/watchdog.yaml"
                )))
            );
        }
        other => panic!("not `run`: {other:?}"),
    }
    // Restart=on-failure, RestartSec=, TimeoutStopSec=.
    assert_eq!(agent["RunAtLoad"], true);
    assert_eq!(agent["KeepAlive"]["SuccessfulExit"], false);
    assert_eq!(
        agent["ThrottleInterval"].as_u64().unwrap().to_string(),
        unit_value("RestartSec")
    );
    assert_eq!(
        agent["ExitTimeOut"].as_u64().unwrap().to_string(),
        unit_value("TimeoutStopSec")
    );
    // Environment=, UMask=, LimitNOFILE='s soft limit.
    let env = unit_value("Environment");
    let (k, v) = env.split_once('=').unwrap();
    assert_eq!(agent["EnvironmentVariables"][k], v);
    assert_eq!(
        format!("{:04o}", agent["Umask"].as_u64().unwrap()),
        unit_value("UMask")
    );
    let nofile = unit_value("LimitNOFILE");
    let soft = nofile.split(':').next().unwrap();
    assert_eq!(
        agent["SoftResourceLimits"]["NumberOfFiles"]
            .as_u64()
            .unwrap()
            .to_string(),
        soft
    );
    assert!(
        agent["HardResourceLimits"]["NumberOfFiles"]
            .as_u64()
            .unwrap()
            > 1024
    );
    // Every path is under the placeholder the install step replaces.
    for key in ["StandardErrorPath", "StandardOutPath"] {
        assert!(
            agent[key].as_str().unwrap().starts_with(PLACEHOLDER),
            "{key}"
        );
    }
}

#[test]
fn the_agents_arguments_start_the_daemon_and_sigterm_stops_it_within_exit_timeout() {
    let agent = agent();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".cargo/bin")).unwrap();
    std::os::unix::fs::symlink(WATCHDOG, home.join(".cargo/bin/kanban-watchdog")).unwrap();
    let expand = |v: &str| v.replace(PLACEHOLDER, home.to_str().unwrap());
    // The config the agent names: the documented defaults, except a free
    // loopback port instead of 9464.
    let config = home.join(".config/kanban-watchdog/watchdog.yaml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let yaml = std::fs::read_to_string(config_dir().join("watchdog.yaml"))
        .unwrap()
        .replace("listen: 127.0.0.1:9464", "listen: 127.0.0.1:0");
    assert!(yaml.contains("listen: 127.0.0.1:0"));
    std::fs::write(&config, yaml).unwrap();
    let board = home.join(".hermes/kanban.db");
    std::fs::create_dir_all(board.parent().unwrap()).unwrap();
    drop(hermes_board::testkit::create_board(&board).unwrap());

    // As launchd starts it: the arguments, its environment (HOME and the
    // agent's variables; no NOTIFY_SOCKET), its soft open-files limit.
    let argv: Vec<String> = args(&agent).iter().map(|a| expand(a)).collect();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear().env("HOME", &home);
    for (k, v) in agent["EnvironmentVariables"].as_object().unwrap() {
        cmd.env(k, expand(v.as_str().unwrap()));
    }
    let soft = agent["SoftResourceLimits"]["NumberOfFiles"]
        .as_u64()
        .unwrap();
    // SAFETY: getrlimit/setrlimit are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let mut l = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            l.rlim_cur = soft.min(l.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut daemon = Proc::spawn("kanban-watchdog", &mut cmd, tmp.path().join("daemon.log"));
    let addr = poll(
        "http.addr",
        Duration::from_secs(30),
        || daemon.tail(),
        || std::fs::read_to_string(home.join(".local/state/kanban-watchdog/http.addr")).ok(),
    );
    assert_eq!(
        get_status(&format!("http://{}/healthz", addr.trim())),
        Some(200),
        "{}",
        daemon.tail()
    );

    // launchd stops an agent with SIGTERM, then SIGKILL after ExitTimeOut.
    let exit_timeout = Duration::from_secs(agent["ExitTimeOut"].as_u64().unwrap());
    let stopped = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = loop {
        if let Some(st) = daemon.exited() {
            break st;
        }
        assert!(
            stopped.elapsed() < exit_timeout,
            "still running {exit_timeout:?} after SIGTERM\n{}",
            daemon.tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = stopped.elapsed();
    assert!(status.success(), "{status:?}\n{}", daemon.tail());
    assert!(
        took < exit_timeout / 2,
        "stopped in {took:?}, ExitTimeOut {exit_timeout:?}"
    );
}
