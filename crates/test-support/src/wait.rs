//! Waiting on a condition with a timeout.

use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` until it returns `Some`, and returns that value.
///
/// # Panics
/// When `timeout` passes first, naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Polls `cond` until it is true.
///
/// # Panics
/// When `timeout` passes first, naming `what`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    wait_until(what, timeout, || cond().then_some(()));
}
