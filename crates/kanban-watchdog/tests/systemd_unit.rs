//! Issue 17: the shipped systemd user unit (config/kanban-watchdog.service).
//!
//! * `systemd-analyze --user verify` accepts it without a single warning
//!   (Debian's `systemd` package; no running systemd needed: a temporary
//!   HOME whose `~/.cargo/bin/kanban-watchdog` is the binary under test, so
//!   `%h` and ExecStart= resolve, a temporary XDG_RUNTIME_DIR, `--man=no`);
//!   a broken copy is reported, so the check can fail.
//! * The unit against what the daemon does, with its own commands:
//!   ExecStartPre= and ExecStart= as written (`%h` = a temporary HOME), its
//!   Environment= and LimitNOFILE=, and a notify socket as systemd passes
//!   it (WatchdogSec= scaled down to 1.5 s so the test is short):
//!   Type=notify gets READY=1 well within TimeoutStartSec=; keep-alives
//!   come at least twice per watchdog interval; ExecReload='s SIGHUP
//!   reloads; SIGTERM sends STOPPING=1 and exits 0 within TimeoutStopSec=;
//!   the daemon raises its soft open-files limit to the unit's hard one,
//!   far above what it uses (the soft one stays select(2)-safe for children);
//!   and with ProtectSystem=strict the daemon writes nothing outside the
//!   unit's ReadWritePaths=.
//!
//! Without systemd-analyze: a failure under CI=true, "SKIPPED" elsewhere
//! (for the first test only; the second needs no systemd).

mod real_programs;

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use real_programs::*;

const WATCHDOG: &str = env!("CARGO_BIN_EXE_kanban-watchdog");

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

fn unit_text() -> String {
    std::fs::read_to_string(config_dir().join("kanban-watchdog.service")).unwrap()
}

/// (section, key, value) in file order; comments and blanks dropped.
fn parse_unit(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

fn values(unit: &[(String, String, String)], key: &str) -> Vec<String> {
    unit.iter()
        .filter(|(s, k, _)| s == "Service" && k == key)
        .map(|(_, _, v)| v.clone())
        .collect()
}

fn value(unit: &[(String, String, String)], key: &str) -> String {
    let v = values(unit, key);
    assert_eq!(v.len(), 1, "{key}= appears {} times", v.len());
    v[0].clone()
}

/// A HOME in which `%h/.cargo/bin/kanban-watchdog` is the binary under test.
fn fake_home(root: &Path) -> PathBuf {
    let home = root.join("home");
    std::fs::create_dir_all(home.join(".cargo/bin")).unwrap();
    std::os::unix::fs::symlink(WATCHDOG, home.join(".cargo/bin/kanban-watchdog")).unwrap();
    home
}

fn verify(analyze: &Path, root: &Path, home: &Path, unit: &Path) -> (bool, String) {
    let runtime = root.join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let out = Command::new(analyze)
        .args(["--user", "verify", "--man=no"])
        .arg(unit)
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("XDG_CONFIG_HOME")
        .env("SYSTEMD_LOG_COLOR", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn systemd_analyze_verifies_the_shipped_unit_without_a_warning() {
    let Some(analyze) = tool(&["systemd-analyze"], "systemd") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = fake_home(tmp.path());
    let unit = config_dir().join("kanban-watchdog.service");
    let (ok, text) = verify(&analyze, tmp.path(), &home, &unit);
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );

    // The check can fail: a bad value and an unknown key are reported
    // (verify still exits 0 for them, hence "without a warning" above),
    // and a missing ExecStart= binary fails it.
    let broken = tmp.path().join("kanban-watchdog.service");
    std::fs::write(
        &broken,
        unit_text().replace("WatchdogSec=30", "WatchdogSec=thirty")
            + "\n[Service]\nProtectSytem=strict\n",
    )
    .unwrap();
    let (_, text) = verify(&analyze, tmp.path(), &home, &broken);
    assert!(
        text.contains("thirty") && text.contains("ProtectSytem"),
        "{text}"
    );
    std::fs::remove_file(home.join(".cargo/bin/kanban-watchdog")).unwrap();
    let (ok, text) = verify(&analyze, tmp.path(), &home, &unit);
    assert!(!ok && text.contains("kanban-watchdog"), "{text}");
}

fn secs(v: &str) -> Duration {
    let n: u64 = v
        .strip_suffix('s')
        .unwrap_or(v)
        .parse()
        .unwrap_or_else(|_| panic!("{v:?} is not plain seconds"));
    Duration::from_secs(n)
}

/// The notify socket: messages the daemon sent, each as a string.
fn recv_all(
    sock: &UnixDatagram,
    until: Instant,
    mut stop: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        sock.set_read_timeout(Some(
            until
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = stop(&msg);
            got.push(msg);
            if done {
                break;
            }
        }
    }
    got
}

/// Files and directories under `dir` (relative), skipping `skip`.
fn tree(dir: &Path, base: &Path, skip: &[PathBuf], out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if skip.iter().any(|s| p.starts_with(s)) {
            continue;
        }
        out.push(p.strip_prefix(base).unwrap().to_path_buf());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            tree(&p, base, skip, out);
        }
    }
}

#[test]
fn the_unit_runs_the_daemon_the_way_the_daemon_needs() {
    let unit = parse_unit(&unit_text());
    assert_eq!(value(&unit, "Type"), "notify");
    let watchdog_sec = secs(&value(&unit, "WatchdogSec"));
    let start_timeout = secs(&value(&unit, "TimeoutStartSec"));
    let stop_timeout = secs(&value(&unit, "TimeoutStopSec"));
    // LimitNOFILE=soft:hard (or one number for both).
    let nofile = value(&unit, "LimitNOFILE");
    let (soft_nofile, hard_nofile): (u64, u64) = match nofile.split_once(':') {
        Some((s, h)) => (s.parse().unwrap(), h.parse().unwrap()),
        None => (nofile.parse().unwrap(), nofile.parse().unwrap()),
    };
    assert!(
        soft_nofile <= 1024,
        "children keep a select(2)-safe soft limit: {nofile}"
    );
    assert_eq!(value(&unit, "ProtectSystem"), "strict");
    assert_eq!(value(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
    // The daemon keeps systemd's watchdog fed from a thread of its own as
    // long as its core loop turned within 120 s, and the loop turns at
    // least every dispatcher.check_every (default 5 s).
    assert!(watchdog_sec >= Duration::from_secs(10), "{watchdog_sec:?}");

    let tmp = tempfile::tempdir().unwrap();
    let home = fake_home(tmp.path());
    let expand = |v: &str| v.replace("%h", home.to_str().unwrap());
    // The config the unit names: the documented defaults, except a free
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

    // ExecStartPre=+/bin/mkdir ... (run outside the sandbox by systemd).
    for pre in values(&unit, "ExecStartPre") {
        let argv: Vec<String> = expand(pre.trim_start_matches(['+', '-', '!', '@']))
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let st = Command::new(&argv[0]).args(&argv[1..]).status().unwrap();
        assert!(st.success(), "{argv:?}");
    }

    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let exec: Vec<String> = expand(&value(&unit, "ExecStart"))
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut cmd = Command::new(&exec[0]);
    cmd.args(&exec[1..])
        .env_clear()
        .env("HOME", &home)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("NOTIFY_SOCKET", &sock_path)
        // WatchdogSec= scaled down (30 s would make this test 30 s long).
        .env("WATCHDOG_USEC", "1500000");
    for e in values(&unit, "Environment") {
        let (k, v) = e.split_once('=').unwrap();
        cmd.env(k, v);
    }
    // LimitNOFILE= sets soft and hard, as systemd does; the hard one capped
    // at our own where raising it is not permitted (a container).
    let mut ours = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a struct we own.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut ours) },
        0
    );
    let hard = hard_nofile.min(ours.rlim_max);
    if hard < hard_nofile {
        eprintln!("LimitNOFILE={nofile}: hard limit capped at this test's {hard}");
    }
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let l = libc::rlimit {
                rlim_cur: soft_nofile,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut daemon = Proc::spawn("kanban-watchdog", &mut cmd, tmp.path().join("daemon.log"));
    let pid = daemon.child.id();

    // Type=notify: READY=1 after the first full check.
    let started = Instant::now();
    let msgs = recv_all(
        &sock,
        Instant::now() + start_timeout.min(Duration::from_secs(30)),
        |m| m.contains("READY=1"),
    );
    let ready_after = started.elapsed();
    assert!(
        msgs.iter().any(|m| m.contains("READY=1")),
        "no READY=1 ({msgs:?})\n{}",
        daemon.tail()
    );
    eprintln!("READY=1 after {ready_after:?} (TimeoutStartSec={start_timeout:?})");

    // WatchdogSec=: keep-alives at least twice per interval.
    let window = Duration::from_secs(3);
    let msgs = recv_all(&sock, Instant::now() + window, |_| false);
    let pings = msgs.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(
        pings >= 4,
        "{pings} keep-alives in {window:?} for a 1.5 s watchdog: {msgs:?}"
    );

    // LimitNOFILE=: the daemon raised its soft limit to the unit's hard one,
    // far above what it holds (HTTP connections are capped at 64 on top).
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let soft: u64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(soft, hard, "raised to the hard limit: {line}");
    let addr = poll(
        "http.addr",
        Duration::from_secs(10),
        || daemon.tail(),
        || std::fs::read_to_string(home.join(".local/state/kanban-watchdog/http.addr")).ok(),
    );
    for path in ["/metrics", "/status", "/healthz"] {
        assert_eq!(
            get_status(&format!("http://{addr}{path}")),
            Some(200),
            "{path}"
        );
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    eprintln!("{fds} descriptors open; {line}");
    assert!(fds + 64 < soft_nofile, "{fds} descriptors");

    // ExecReload=: SIGHUP re-reads the config and the daemon stays up.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    poll(
        "configuration reloaded",
        Duration::from_secs(10),
        || daemon.tail(),
        || {
            std::fs::read_to_string(&daemon.log)
                .ok()
                .filter(|t| t.contains("configuration reloaded"))
        },
    );
    assert!(daemon.exited().is_none(), "{}", daemon.tail());

    // systemctl stop: SIGTERM, STOPPING=1, exit 0 within TimeoutStopSec=.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = Instant::now();
    let msgs = recv_all(&sock, Instant::now() + Duration::from_secs(10), |m| {
        m.contains("STOPPING=1")
    });
    assert!(msgs.iter().any(|m| m.contains("STOPPING=1")), "{msgs:?}");
    let log = daemon.log.clone();
    let status = poll(
        "exit",
        stop_timeout,
        || std::fs::read_to_string(&log).unwrap_or_default(),
        || daemon.exited(),
    );
    assert!(status.success(), "{status}\n{}", daemon.tail());
    eprintln!("stopped {:?} after SIGTERM", stopping.elapsed());

    // ProtectSystem=strict: everything it wrote is under ReadWritePaths=.
    let writable: Vec<PathBuf> = values(&unit, "ReadWritePaths")
        .iter()
        .map(|v| PathBuf::from(expand(v.trim_start_matches('-'))))
        .collect();
    let skip = [
        home.join(".cargo"),
        home.join(".config"),
        home.join(".hermes/kanban.db"),
    ];
    let mut written = Vec::new();
    tree(&home, &home, &skip, &mut written);
    let outside: Vec<&PathBuf> = written
        .iter()
        .filter(|p| {
            let abs = home.join(p);
            !writable
                .iter()
                .any(|w| abs.starts_with(w) || w.starts_with(&abs))
        })
        .collect();
    assert!(
        outside.is_empty(),
        "written outside ReadWritePaths={writable:?}: {outside:?}"
    );
    assert!(
        written
            .iter()
            .any(|p| p.starts_with(".local/state/kanban-watchdog/records")),
        "the record directory was created: {written:?}"
    );
}
