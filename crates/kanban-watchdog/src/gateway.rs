//! The gateway side: is its process alive (guarding against pid reuse).
//! What a line of its log means is [`hermes_board::gateway_log`]'s.

use std::path::Path;

use hermes_board::home::PidFile;

/// `Some((pid, alive))` when a pid file exists; alive means the process is
/// running and (when the file records it) started at the recorded time, so
/// a recycled pid is not mistaken for the gateway.
pub fn gateway_process(pid_file: &Path) -> Option<(i32, bool)> {
    let parsed = PidFile::read(pid_file)?;
    Some((parsed.pid, process_matches(parsed.pid, parsed.start_time)))
}

use crate::process_start::start_time;

fn process_matches(pid: i32, recorded: Option<u64>) -> bool {
    match (start_time(pid), recorded) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(actual), Some(want)) => crate::process_start::same_start(actual, want),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id() as i32;
        let st = start_time(me).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("gateway.pid");
        std::fs::write(
            &f,
            format!("{{\"pid\": {me}, \"kind\": \"hermes-gateway\", \"start_time\": {st}}}"),
        )
        .unwrap();
        assert_eq!(gateway_process(&f), Some((me, true)));
        // A start time another process would have: one tick later from
        // /proc, over a second later from `ps` (see process_start.rs).
        let other = if cfg!(any(not(target_os = "linux"), feature = "portable")) {
            st + 101
        } else {
            st + 1
        };
        std::fs::write(&f, format!("{{\"pid\": {me}, \"start_time\": {other}}}")).unwrap();
        assert_eq!(
            gateway_process(&f),
            Some((me, false)),
            "pid reuse is caught"
        );
        assert_eq!(gateway_process(&dir.path().join("missing")), None);
    }
}
