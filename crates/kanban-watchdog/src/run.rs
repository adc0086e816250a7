//! `kanban-watchdog run`: wires the core to its watchers, signals and the
//! HTTP endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
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
    let (cfg, config_path) = load_config(common)?;
    let paths = Paths::resolve(&cfg);
    let listen = cfg.http.listen.clone();
    let daemon = Daemon::new(cfg, config_path, paths.clone(), dry_run)?;
    let (tx, rx) = channel_pair();
    let _watchers = start_watchers(&paths, tx.clone());
    let _signals = start_signal_thread(tx.clone())?;
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
        Some(start_http(addr, daemon.shared(), &paths)?)
    };
    daemon.run(rx);
    let _ = std::fs::remove_file(paths.http_addr_file());
    Ok(())
}

fn start_signal_thread(tx: std::sync::mpsc::Sender<Event>) -> anyhow::Result<JoinHandle<()>> {
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
