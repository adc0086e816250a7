//! Modes of kw-bench that run as fresh processes on behalf of the harness:
//!
//! * `--maxrss-of FILE -- CMD...`: fork (from this small, freshly exec'd
//!   process) and exec CMD, wait4 it and write "maxrss_kib exit_code" to
//!   FILE; exit with CMD's code. ru_maxrss of a process that was spawned
//!   with vfork/posix_spawn carries its parent's high-water mark from exec,
//!   so the harness itself cannot be the parent of a process it measures.
//! * `--probe NAME`: time one cold first call of a library function the
//!   shim makes at exit (OnceLock-initialised state); print microseconds
//!   and the growth of the process's peak RSS (KiB).

use std::ffi::CString;
use std::time::Instant;

pub fn maxrss_of(file: &str, argv: &[String]) -> ! {
    let c: Vec<CString> = argv.iter().map(crate::sys::cstr).collect();
    let mut ptrs: Vec<*const libc::c_char> = c.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: fork in a single-threaded process; the child only calls
    // async-signal-safe execv/_exit on data prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe {
            libc::execv(ptrs[0], ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    let code = match crate::sys::wait4(pid) {
        Ok((status, ru)) => {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            let _ = std::fs::write(file, format!("{} {code}\n", ru.ru_maxrss));
            code
        }
        Err(_) => 1,
    };
    std::process::exit(code)
}

pub fn probe(name: &str) -> ! {
    let hwm0 = crate::sys::proc_status_kib(std::process::id(), "VmHWM").unwrap_or(0);
    let t = Instant::now();
    match name {
        "noop" => {}
        "redact" => {
            std::hint::black_box(failure_signatures::redact("/usr/bin/hermes"));
        }
        "tz" => {
            std::hint::black_box(jiff::tz::TimeZone::system());
        }
        "catalogue" => {
            let ctx = failure_signatures::ClassifyContext::new(
                jiff::Timestamp::from_second(1_780_858_305).expect("valid"),
                jiff::tz::TimeZone::UTC,
            );
            let cat = failure_signatures::Catalogue::builtin();
            std::hint::black_box(cat.classify("Initializing agent...\nhello\n", &ctx));
        }
        other => {
            eprintln!("unknown probe {other}");
            std::process::exit(2)
        }
    }
    let us = t.elapsed().as_micros();
    let hwm1 = crate::sys::proc_status_kib(std::process::id(), "VmHWM").unwrap_or(0);
    println!("{us} {}", hwm1.saturating_sub(hwm0));
    std::process::exit(0)
}
