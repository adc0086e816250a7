//! Running the real programs operators run beside the watchdog (Debian's
//! `prometheus`, `promtool`, `alertmanager`, `systemd-analyze`; installed by
//! `scripts/ci-packages`): finding them, free loopback ports, processes that
//! are killed when the test ends, and small HTTP/JSON helpers.
//!
//! A missing program FAILS the test under `CI=true` and prints
//! `SKIPPED: <why>` (the test then returns) anywhere else.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The first of `names` found on PATH (or in /usr/sbin, /sbin). Without
/// one: a panic under CI=true, else "SKIPPED: ..." on stderr and None.
pub fn tool(names: &[&str], package: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    for name in names {
        for d in &dirs {
            let p = d.join(name);
            if is_executable(&p) {
                return Some(p);
            }
        }
    }
    let why = format!(
        "{} not found (Debian package {package}; scripts/ci-packages installs it)",
        names.join(" / ")
    );
    test_support::prerequisite_missing(&why);
    None
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` every 50 ms until it returns Some, or panics after `timeout`
/// with `what` and the output of `context`.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    context: impl Fn() -> String,
    mut cond: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if start.elapsed() >= timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process, killed (SIGKILL) and reaped when dropped; its stdout and
/// stderr go to a log file, shown in failure messages.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of its output.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!(
            "--- {} output (tail) ---\n{}",
            self.name,
            lines[from..].join("\n")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// GET `url` and parse JSON; None on any error or non-2xx.
pub fn get_json(url: &str) -> Option<Value> {
    let mut resp = agent().get(url).call().ok()?;
    if !resp.status().is_success() {
        return None;
    }
    serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
}

/// GET `url`: the HTTP status, or None when nothing answered.
pub fn get_status(url: &str) -> Option<u16> {
    agent().get(url).call().ok().map(|r| r.status().as_u16())
}

/// Starts a server program on a free loopback port: `args(port)` builds its
/// argv; it is up when `ready_path` answers 200. A port taken between the
/// probe and the bind (the program exits early) is retried with another.
pub fn start_server(
    name: &str,
    program: &Path,
    dir: &Path,
    ready_path: &str,
    args: impl Fn(u16) -> Vec<String>,
) -> (Proc, u16) {
    for attempt in 0..3 {
        let port = free_port();
        let mut cmd = Command::new(program);
        cmd.args(args(port)).current_dir(dir);
        let mut p = Proc::spawn(name, &mut cmd, dir.join(format!("{name}.{attempt}.log")));
        let url = format!("http://127.0.0.1:{port}{ready_path}");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if get_status(&url) == Some(200) {
                return (p, port);
            }
            if p.exited().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if p.exited().is_none() {
            panic!("{name} did not become ready in 30 s\n{}", p.tail());
        }
        eprintln!("{name} exited at start (attempt {attempt}):\n{}", p.tail());
    }
    panic!("{name} could not be started on a free port");
}
