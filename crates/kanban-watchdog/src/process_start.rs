//! A process's start time, in the unit Hermes writes to `gateway.pid` on
//! the same platform, so a recycled pid is not mistaken for the gateway.
//!
//! Hermes (`gateway/status.py`, `_get_process_start_time`) records:
//! - on Linux, field 22 of `/proc/<pid>/stat`: clock ticks since boot;
//! - without `/proc` (macOS), `round(psutil.Process(pid).create_time() *
//!   100)`: centiseconds since the epoch.
//!
//! The watchdog reads the same: `/proc` on Linux; elsewhere, and on Linux
//! with the `portable` feature (so CI runs it), `ps -o lstart=` — POSIX
//! `ps` as macOS ships it — which gives whole seconds, so a recorded value
//! matches when it falls within that second (see [`same_start`]).

/// The start time of `pid` as Hermes records it here; `None` when there is
/// no such process or it is a zombie.
pub fn start_time(pid: i32) -> Option<u64> {
    imp::start_time(pid)
}

/// Does the start time read now (`actual`, from [`start_time`]) name the
/// same process as the one Hermes recorded (`recorded`)?
pub fn same_start(actual: u64, recorded: u64) -> bool {
    imp::same_start(actual, recorded)
}

#[cfg(all(target_os = "linux", not(feature = "portable")))]
mod imp {
    /// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot).
    pub fn start_time(pid: i32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after_comm = stat.rsplit_once(')')?.1;
        // Fields after comm start at field 3 (state); start time is field 22.
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        let state = fields.first()?;
        if *state == "Z" || *state == "X" {
            return None;
        }
        fields.get(19)?.parse().ok()
    }

    /// Both come from `/proc`: equal or not the same process.
    pub fn same_start(actual: u64, recorded: u64) -> bool {
        actual == recorded
    }
}

#[cfg(any(not(target_os = "linux"), feature = "portable"))]
mod imp {
    use std::process::{Command, Stdio};

    /// `ps -o stat= -o lstart= -p PID` in the C locale and UTC: the state,
    /// then the start as `Wed Dec  2 03:55:46 2026` (procps and BSD `ps`
    /// print the same). In centiseconds since the epoch, whole seconds.
    pub fn start_time(pid: i32) -> Option<u64> {
        if pid <= 0 {
            // `ps -p 0` names the kernel's swapper on some systems.
            return None;
        }
        let out = Command::new("ps")
            .args(["-o", "stat=", "-o", "lstart=", "-p", &pid.to_string()])
            .env("LC_ALL", "C")
            .env("TZ", "UTC0")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        parse_ps_line(std::str::from_utf8(&out.stdout).ok()?)
    }

    /// One line of that `ps` output; `None` for a zombie or anything else
    /// than a state and a start time.
    pub(super) fn parse_ps_line(line: &str) -> Option<u64> {
        let mut words = line.split_whitespace();
        let state = words.next()?;
        if state.starts_with('Z') || state.starts_with('X') {
            return None;
        }
        let start = words.collect::<Vec<_>>().join(" ");
        let when = jiff::fmt::strtime::parse("%a %b %d %H:%M:%S %Y", &start)
            .and_then(|t| t.to_datetime())
            .and_then(|dt| jiff::tz::TimeZone::UTC.to_timestamp(dt))
            .ok()?;
        u64::try_from(when.as_second()).ok()?.checked_mul(100)
    }

    /// `actual` is a whole second (`ps` truncates); Hermes rounds its
    /// centiseconds, so its value lies within that second or at its end.
    pub fn same_start(actual: u64, recorded: u64) -> bool {
        (actual..=actual.saturating_add(100)).contains(&recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_has_a_start_time_and_a_reaped_child_has_none() {
        let me = std::process::id() as i32;
        let st = start_time(me).expect("our own start time");
        assert!(same_start(st, st));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert_eq!(start_time(pid), None, "a reaped child has no start time");
    }

    #[test]
    fn a_zombie_has_no_start_time() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Not reaped yet: a zombie once it has exited. Wait for that
        // without reaping (WNOWAIT).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(start_time(pid), None, "a zombie is not alive");
        child.wait().unwrap();
    }

    /// The portable reading against an independent one: `/proc/<pid>/stat`
    /// ticks since boot plus `btime` from `/proc/stat`, in epoch seconds.
    #[cfg(all(target_os = "linux", feature = "portable"))]
    #[test]
    fn ps_agrees_with_proc_on_the_start_second() {
        let me = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[19].parse().unwrap();
        let btime: u64 = std::fs::read_to_string("/proc/stat")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let from_proc = btime * 100 + ticks * 100 / hz;
        let from_ps = start_time(me as i32).unwrap();
        // btime is itself rounded to the second: one second either way.
        assert!(
            from_ps.abs_diff(from_proc) <= 100,
            "ps {from_ps} vs /proc {from_proc} (centiseconds)"
        );
    }

    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    #[test]
    fn ps_lines_parse_and_a_hermes_value_matches_within_its_second() {
        use super::imp::parse_ps_line;
        // 2026-12-02T03:55:46Z
        let t = 1_796_183_746 * 100;
        assert_eq!(parse_ps_line("Ss   Wed Dec  2 03:55:46 2026\n"), Some(t));
        assert_eq!(
            parse_ps_line("R+ Sat Dec 12 03:55:46 2026"),
            Some(t + 10 * 86_400 * 100)
        );
        assert_eq!(parse_ps_line("Z    Wed Dec  2 03:55:46 2026"), None);
        assert_eq!(parse_ps_line(""), None);
        assert_eq!(parse_ps_line("S garbage"), None);
        assert_eq!(
            parse_ps_line("S    Thu Dec  2 03:55:46 2026"),
            None,
            "wrong weekday"
        );
        // Hermes on macOS: round(create_time * 100), create_time with µs.
        let hermes = |secs: f64| (secs * 100.0).round() as u64;
        assert!(same_start(t, hermes(1_796_183_746.0)));
        assert!(same_start(t, hermes(1_796_183_746.42)));
        assert!(same_start(t, hermes(1_796_183_746.999_9)));
        assert!(!same_start(t, hermes(1_796_183_745.99)), "a second earlier");
        assert!(!same_start(t, hermes(1_796_183_747.01)), "a second later");
    }
}
