//! Thin wrappers over the syscalls the harness times: posix_spawn + wait4
//! (the tight fork/exec/wait loop), inotify (the notification floor and the
//! audit-log watch), and /proc readers for CPU time and memory.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

pub fn cstr(s: impl AsRef<OsStr>) -> CString {
    CString::new(s.as_ref().as_bytes()).expect("no NUL in argument")
}

/// An argv/envp ready for posix_spawn, built once outside the timed loop.
pub struct Cmd {
    pub label: String,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl Cmd {
    pub fn new(label: &str, argv: &[&OsStr], env: &[(String, String)]) -> Cmd {
        // The parent's environment minus anything that would make the shim
        // steer a "Hermes worker", plus the overrides.
        let mut envp: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| {
                let k = k.to_string_lossy();
                !k.starts_with("HERMES_")
                    && !k.starts_with("WORKER_SHIM_")
                    && !env.iter().any(|(o, _)| *o == k)
            })
            .map(|(k, v)| {
                let mut kv = k.into_encoded_bytes();
                kv.push(b'=');
                kv.extend(v.into_encoded_bytes());
                CString::new(kv).expect("env has no NUL")
            })
            .collect();
        envp.extend(env.iter().map(|(k, v)| cstr(format!("{k}={v}"))));
        Cmd {
            label: label.to_string(),
            argv: argv.iter().map(cstr).collect(),
            envp,
        }
    }
}

/// What one run cost.
#[derive(Clone, Copy, Debug)]
pub struct RunStats {
    pub wall: Duration,
    /// User + system CPU of the process and its waited-for descendants.
    pub cpu: Duration,
    pub exit_code: i32,
}

/// Spawns `cmd` with fds 0/1/2 dup'ed from the given descriptors and waits
/// for it; the clock runs from just before posix_spawn to just after wait4.
/// `during` runs between the two (e.g. draining a pipe).
pub fn run_timed(cmd: &Cmd, fds: [RawFd; 3], during: impl FnOnce()) -> io::Result<RunStats> {
    let mut argv: Vec<*mut libc::c_char> = cmd.argv.iter().map(|a| a.as_ptr() as *mut _).collect();
    argv.push(std::ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> = cmd.envp.iter().map(|a| a.as_ptr() as *mut _).collect();
    envp.push(std::ptr::null_mut());
    // SAFETY: plain libc calls on structures we own; argv/envp outlive the call.
    unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        libc::posix_spawn_file_actions_init(&mut fa);
        for (target, fd) in fds.iter().enumerate() {
            libc::posix_spawn_file_actions_adddup2(&mut fa, *fd, target as libc::c_int);
        }
        let mut pid: libc::pid_t = 0;
        let start = Instant::now();
        let rc = libc::posix_spawn(
            &mut pid,
            argv[0],
            &fa,
            std::ptr::null(),
            argv.as_ptr(),
            envp.as_ptr(),
        );
        libc::posix_spawn_file_actions_destroy(&mut fa);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        during();
        let (status, ru) = wait4(pid)?;
        let wall = start.elapsed();
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        let exit_code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        Ok(RunStats {
            wall,
            cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
            exit_code,
        })
    }
}

pub fn wait4(pid: libc::pid_t) -> io::Result<(libc::c_int, libc::rusage)> {
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data, zeroed is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            return Ok((status, ru));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub fn dev_null() -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
}

/// A CLOEXEC pipe (read end, write end), grown to `size` bytes.
pub fn pipe(size: usize) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors we now own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on our own descriptor; failure only leaves the default size.
    unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
    Ok((r, w))
}

/// A non-blocking inotify instance.
pub struct Inotify {
    fd: OwnedFd,
    buf: Vec<u8>,
}

pub struct InotifyEvent {
    pub name: String,
}

impl Inotify {
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Inotify {
            // SAFETY: fresh descriptor we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            buf: vec![0; 256 * 1024],
        })
    }

    pub fn watch(&self, path: &Path, mask: u32) -> io::Result<()> {
        let p = cstr(path.as_os_str());
        // SAFETY: valid C string.
        if unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), p.as_ptr(), mask) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for events; returns the instant the wait ended
    /// (taken before the events are decoded) and the events.
    pub fn wait(&mut self, timeout: Duration) -> (Instant, Vec<InotifyEvent>) {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
        let now = Instant::now();
        let mut out = Vec::new();
        loop {
            // SAFETY: reading into our own buffer.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                )
            };
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            let hdr = std::mem::size_of::<libc::inotify_event>();
            while off + hdr <= n as usize {
                // SAFETY: the kernel wrote whole events; read_unaligned copes with alignment.
                let ev: libc::inotify_event = unsafe {
                    std::ptr::read_unaligned(self.buf[off..].as_ptr() as *const libc::inotify_event)
                };
                let name_bytes = &self.buf[off + hdr..off + hdr + ev.len as usize];
                let end = name_bytes
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(name_bytes.len());
                out.push(InotifyEvent {
                    name: String::from_utf8_lossy(&name_bytes[..end]).into_owned(),
                });
                off += hdr + ev.len as usize;
            }
        }
        (now, out)
    }
}

pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// utime + stime of a process (all its threads), in seconds.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After comm: state is field 3; utime 14, stime 15 -> indexes 11, 12.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks_per_sec())
}

/// CPU time of all live threads from /proc/<pid>/task/*/schedstat, in
/// seconds: nanosecond resolution, where /proc/<pid>/stat counts 10 ms ticks.
pub fn proc_cpu_secs_precise(pid: u32) -> Option<f64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let ns: u64 = dir
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Some(ns as f64 / 1e9)
}

/// A `Vm*` line of /proc/<pid>/status, in KiB.
pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Voluntary + involuntary context switches summed over all threads: how
/// often the process woke up.
pub fn proc_wakeups(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|s| {
            s.lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

pub fn proc_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub struct MachineInfo {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    pub loadavg: String,
    pub mem_total: String,
    pub rustc: String,
}

pub fn machine_info() -> MachineInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|x| x.1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    MachineInfo {
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu,
        kernel,
        loadavg,
        mem_total,
        rustc,
    }
}

pub fn loadavg1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

/// Reads `r` to its end; the number of bytes read.
pub fn drain(r: OwnedFd) -> u64 {
    let mut f = std::fs::File::from(r);
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0u64;
    loop {
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return total,
        }
    }
}
