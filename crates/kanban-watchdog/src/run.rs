//! `kanban-watchdog run`: wires the core to its watchers, signals and the
//! HTTP endpoint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use anyhow::Context;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::Common;
use crate::config::Config;
use crate::daemon::{Daemon, Event, channel_pair, start_watchers};
use crate::paths::Paths;

/// Loads the config named by `common` (or the defaults) and applies the
/// command-line overrides.
pub fn load_config(common: &Common) -> anyhow::Result<(Config, Option<PathBuf>)> {
    let mut cfg = match &common.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(h) = &common.hermes_home {
        cfg.hermes_home = Some(h.clone());
    }
    if let Some(r) = &common.record_dir {
        cfg.record_dir = Some(r.clone());
    }
    if let Some(s) = &common.state_dir {
        cfg.state_dir = Some(s.clone());
    }
    Ok((cfg, common.config.clone()))
}

pub fn run(common: &Common, dry_run: bool) -> anyhow::Result<()> {
    raise_nofile_limit();
    let (cfg, config_path) = load_config(common)?;
    let paths = Paths::resolve(&cfg);
    let listen = cfg.http.listen.clone();
    let loose = hermes_board::gateway_log::unanchored(&cfg.dispatcher.patterns);
    if !loose.is_empty() {
        tracing::warn!(
            "gateway-log patterns not anchored with ^ match a quote of their text in a line of \
             any logger (a relayed chat message, for one): {}. Remove dispatcher.patterns to use \
             the defaults, anchored to the format Hermes writes",
            loose.join(", ")
        );
    }
    let daemon = Daemon::new(cfg, config_path, paths.clone(), dry_run)?;
    // Before anything is written, watched or served.
    let _lock = InstanceLock::acquire(&paths.state_dir)?;
    let (tx, rx) = channel_pair();
    let _watchers = start_watchers(&paths, tx.clone());
    let _signals = start_signal_thread(tx.clone(), daemon.shared().stopping)?;
    crate::daemon::start_systemd_keepalive(
        daemon.shared().alive,
        std::time::Duration::from_secs(120),
    );
    let _http = if listen.is_empty() {
        None
    } else {
        let addr: SocketAddr = listen
            .parse()
            .with_context(|| format!("http.listen {listen:?} is not host:port"))?;
        if !addr.ip().is_loopback() {
            tracing::warn!(
                "http.listen {addr} is not a loopback address: anyone who can reach it can read \
                 /metrics and /status (task ids, providers, failure reasons), and the endpoint \
                 has no authentication; use 127.0.0.1 unless a firewall or an authenticating \
                 proxy guards it"
            );
        }
        Some(start_http(addr, daemon.shared(), &paths)?)
    };
    daemon.run(rx);
    let _ = std::fs::remove_file(paths.http_addr_file());
    Ok(())
}

/// SIGHUP queues a reload; SIGTERM/SIGINT set the stop flag (a long pass
/// stops between two records) and queue `Shutdown`. The channel is bounded:
/// a blocking send waits for the core to take a batch, and is never dropped.
fn start_signal_thread(
    tx: std::sync::mpsc::SyncSender<Event>,
    stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<JoinHandle<()>> {
    let mut signals =
        Signals::new([SIGHUP, SIGTERM, SIGINT]).context("cannot install signal handlers")?;
    Ok(std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let ev = if sig == SIGHUP {
                    tracing::info!("SIGHUP: reloading configuration");
                    Event::Reload
                } else {
                    tracing::info!("signal {sig}: shutting down");
                    stopping.store(true, Ordering::Relaxed);
                    Event::Shutdown
                };
                let stop = matches!(ev, Event::Shutdown);
                if tx.send(ev).is_err() || stop {
                    break;
                }
            }
        })?)
}

/// Serves HTTP on a small tokio runtime of its own thread.
pub struct HttpHandle {
    _runtime_thread: JoinHandle<()>,
    pub addr: SocketAddr,
}

pub fn start_http(
    listen: SocketAddr,
    shared: crate::daemon::Shared,
    paths: &Paths,
) -> anyhow::Result<HttpHandle> {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = addr_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                match crate::http::serve(listen, shared).await {
                    Ok((addr, handle)) => {
                        let _ = addr_tx.send(Ok(addr));
                        let _ = handle.await;
                    }
                    Err(e) => {
                        let _ = addr_tx.send(Err(e));
                    }
                }
            });
        })?;
    let addr = addr_rx
        .recv()
        .context("http thread ended early")?
        .with_context(|| format!("cannot listen on {listen}"))?;
    crate::state::write_atomic(&paths.http_addr_file(), addr.to_string().as_bytes())
        .with_context(|| format!("cannot write {}", paths.http_addr_file().display()))?;
    tracing::info!("serving /metrics, /healthz, /readyz, /status on http://{addr}");
    Ok(HttpHandle {
        _runtime_thread: thread,
        addr,
    })
}

// ----- open files ---------------------------------------------------------

/// The soft `RLIMIT_NOFILE` the process started with, when
/// [`raise_nofile_limit`] raised it (`u64::MAX`: not raised).
static STARTED_WITH_NOFILE: AtomicU64 = AtomicU64::new(u64::MAX);

/// Raises the soft limit on open files to the hard limit, as the Go
/// runtime does at start (and systemd recommends for programs that do not
/// use `select(2)`): systemd's default is 1,024 soft / 524,288 hard, and the
/// core needs descriptors for the board, the record directory and the log
/// whatever the HTTP endpoint holds. Children get the old soft limit back
/// ([`restore_nofile_limit`]). Returns the (soft, hard) limit now in force.
pub fn raise_nofile_limit() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    let (soft, hard) = (lim.rlim_cur, lim.rlim_max);
    if soft >= hard {
        return Some((soft, hard));
    }
    let raised = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!("cannot raise the open-files limit from {soft} to {hard}: {e}");
        return Some((soft, hard));
    }
    STARTED_WITH_NOFILE.store(soft, Ordering::Relaxed);
    tracing::debug!("open-files limit raised from {soft} to {hard}");
    Some((hard, hard))
}

/// For a `pre_exec` hook: gives a child the soft open-files limit this
/// process started with (a program using `select(2)` breaks on descriptors
/// above 1,023). Async-signal-safe: one atomic load and two system calls.
pub fn restore_nofile_limit() {
    let soft = STARTED_WITH_NOFILE.load(Ordering::Relaxed);
    if soft == u64::MAX {
        return;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && soft < lim.rlim_cur {
            lim.rlim_cur = soft;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

// ----- single instance ------------------------------------------------------

/// The lock file in the state directory.
pub const LOCK_FILE: &str = "watchdog.lock";

/// An exclusive `flock(2)` on `<state_dir>/watchdog.lock`, held for the life
/// of the daemon, with its pid written inside (the pattern of systemd's and
/// pueue's pid files, with a lock so a stale file never blocks a start: the
/// kernel drops the lock when the process dies, even on SIGKILL). Without
/// it a second daemon on the same state was stopped only by the HTTP port,
/// and not at all with `http.listen: ""`. The descriptor is close-on-exec,
/// so a gateway we restart never inherits the lock.
pub struct InstanceLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
    pub path: PathBuf,
}

impl InstanceLock {
    pub fn acquire(state_dir: &Path) -> anyhow::Result<InstanceLock> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let path = state_dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        let mut lock = match nix::fcntl::Flock::lock(
            file,
            nix::fcntl::FlockArg::LockExclusiveNonblock,
        ) {
            Ok(lock) => lock,
            Err((mut file, errno)) => {
                if errno != nix::errno::Errno::EWOULDBLOCK {
                    anyhow::bail!("cannot lock {}: {errno}", path.display());
                }
                let mut text = String::new();
                let _ = Read::by_ref(&mut file).take(64).read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "another process".into(),
                };
                anyhow::bail!(
                    "another kanban-watchdog ({holder}) is already running on the state directory \
                     {dir}: it holds the lock on {path}. Stop it first, or give this one its own \
                     state_dir",
                    dir = state_dir.display(),
                    path = path.display()
                );
            }
        };
        let pid = format!("{}\n", std::process::id());
        let written = lock
            .set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| lock.write_all(pid.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), "cannot write our pid into the lock file: {e}");
        }
        Ok(InstanceLock { _lock: lock, path })
    }
}
