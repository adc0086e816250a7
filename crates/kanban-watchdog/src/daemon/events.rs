//! What feeds the core: file watchers, the bounded event channel and the
//! systemd keep-alive.

use super::*;

/// With systemd's `WatchdogSec`, pings `WATCHDOG=1` at a third of the
/// interval for as long as the core loop shows signs of life within
/// `hang_after` (a board locked by Hermes may legitimately hold one write
/// for tens of seconds). A hung core stops the pings and systemd restarts us.
pub fn start_systemd_keepalive(alive: Arc<std::sync::atomic::AtomicI64>, hang_after: Duration) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 3).max(Duration::from_millis(100));
    let _ = std::thread::Builder::new()
        .name("systemd-watchdog".into())
        .spawn(move || {
            loop {
                let age = wall() - alive.load(std::sync::atomic::Ordering::Relaxed);
                if age <= hang_after.as_secs() as i64 {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                } else {
                    tracing::error!(
                        "core loop silent for {age}s; letting systemd's watchdog restart us"
                    );
                }
                std::thread::sleep(period);
            }
        });
}

pub(super) fn notify_systemd(state: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(state);
    }
}

/// Starts the file watchers that feed the core. Missing directories are
/// created (record dir, requests) or left to the periodic tick (log dir).
pub fn start_watchers(paths: &Paths, tx: SyncSender<Event>) -> Vec<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let record_dir = paths.record_dir.clone();
    let log_dir = paths.gateway_log.parent().map(Path::to_path_buf);
    // The auth store sits in the Hermes home beside kanban.db and its -wal:
    // watching that directory would wake us on every board write. Re-auth
    // is noticed by the per-tick fingerprint check instead.
    let requests = paths.requests_dir();
    let _ = std::fs::create_dir_all(&requests);
    let mut dirs: Vec<PathBuf> = vec![record_dir.clone(), requests.clone()];
    dirs.extend(log_dir.clone());
    let mut seen = HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    let mut watchers = Vec::new();
    for dir in dirs {
        let tx = tx.clone();
        let (record_dir, requests, log_dir) =
            (record_dir.clone(), requests.clone(), log_dir.clone());
        let handler = move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else {
                hint(&tx, Event::Tick);
                return;
            };
            if ev.need_rescan() {
                hint(&tx, Event::Tick);
                return;
            }
            // Only changes matter. Our own reads (IN_OPEN, IN_CLOSE_NOWRITE)
            // would otherwise wake us again: a feedback loop.
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            for p in &ev.paths {
                let parent = p.parent();
                let event = if parent == Some(record_dir.as_path()) {
                    // Only a record arriving matters: not temp files being
                    // written, not records leaving for done/ or quarantine/.
                    let arriving = matches!(
                        ev.kind,
                        notify::EventKind::Create(_)
                            | notify::EventKind::Modify(_)
                            | notify::EventKind::Any
                    );
                    let is_record = p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(exit_record::is_record_file_name);
                    if !(arriving && is_record && p.exists()) {
                        continue;
                    }
                    Event::Records
                } else if parent == Some(requests.as_path()) {
                    Event::Requests
                } else if log_dir.as_deref().is_some_and(|d| parent == Some(d)) {
                    Event::LogChanged
                } else {
                    continue;
                };
                hint(&tx, event);
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(mut w) => match w.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => watchers.push(w),
                Err(e) => {
                    tracing::info!(dir = %dir.display(), "not watching (polled on each tick instead): {e}")
                }
            },
            Err(e) => tracing::warn!("cannot start file watcher: {e}"),
        }
    }
    watchers
}

/// Queues a "look again" event without ever blocking a watcher thread: on
/// a full channel the event is dropped (the core answers a full batch with
/// a full pass; see [`EVENT_CHANNEL_BOUND`]).
pub(super) fn hint(tx: &SyncSender<Event>, ev: Event) {
    match tx.try_send(ev) {
        Ok(()) | Err(TrySendError::Disconnected(_)) => {}
        Err(TrySendError::Full(ev)) => tracing::debug!("event channel full; dropped {ev:?}"),
    }
}

/// Channel for the core, bounded (see [`EVENT_CHANNEL_BOUND`]).
pub fn channel_pair() -> (SyncSender<Event>, Receiver<Event>) {
    sync_channel(EVENT_CHANNEL_BOUND)
}

#[cfg(test)]
mod channel_tests {
    use super::*;

    #[test]
    fn a_full_event_channel_drops_hints_without_blocking_and_is_bounded() {
        let (tx, rx) = channel_pair();
        for _ in 0..EVENT_CHANNEL_BOUND + 500 {
            // Never blocks, even with nobody reading.
            hint(&tx, Event::Records);
        }
        let queued: Vec<Event> = rx.try_iter().collect();
        assert_eq!(queued.len(), EVENT_CHANNEL_BOUND);
        // A full batch is what the core takes as an overflow (a full pass).
        assert!(queued.len() >= EVENT_CHANNEL_BOUND);
        // A shutdown is sent blocking: it waits for room, never dropped.
        let sender = std::thread::spawn(move || {
            for _ in 0..EVENT_CHANNEL_BOUND {
                hint(&tx, Event::LogChanged);
            }
            tx.send(Event::Shutdown).is_ok()
        });
        let mut got_shutdown = false;
        while let Ok(ev) = rx.recv_timeout(Duration::from_secs(5)) {
            if matches!(ev, Event::Shutdown) {
                got_shutdown = true;
                break;
            }
        }
        assert!(sender.join().unwrap());
        assert!(got_shutdown);
    }
}
