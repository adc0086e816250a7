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
            std::hint::black_box(failure_signatures::local_time_zone());
        }
        "catalogue" => {
            let ctx = failure_signatures::ClassifyContext::new(
                jiff::Timestamp::from_second(1_780_858_305).expect("valid"),
                jiff::tz::TimeZone::UTC,
            );
            let cat = failure_signatures::Catalogue::builtin();
            std::hint::black_box(cat.classify("Initializing agent...\nhello\n", &ctx));
        }
        "prefilter-429" | "prefilter-clean" => {
            // What a literal prefilter in front of the catalogue would
            // cost (issue 15): extract each signature's literals, build
            // one Aho-Corasick automaton, find the candidate signatures in
            // the text and compile only theirs. Prints, on stderr, how many
            // signatures could be prefiltered and how many were candidates.
            let text = if name == "prefilter-429" {
                "Initializing agent...\nopenai.RateLimitError: HTTP 429: The usage limit has been reached. resets_at: 1780861905\n".to_string()
            } else {
                (0..600)
                    .map(|i| format!("step {i}: ran `cargo test -p crate{}`; 12 passed; wrote src/module_{}.rs\n", i % 7, i % 13))
                    .collect()
            };
            let cat = failure_signatures::Catalogue::builtin();
            let pats: Vec<String> = cat.signatures().map(|s| s.pattern().to_string()).collect();
            let (ac, owner, always) = prefilter_build(&pats);
            let lower = text.to_ascii_lowercase();
            let mut cands: std::collections::BTreeSet<usize> = always.iter().copied().collect();
            if let Some(ac) = &ac {
                for m in ac.find_overlapping_iter(&lower) {
                    cands.insert(owner[m.pattern().as_usize()]);
                }
            }
            let mut compiled = 0;
            for &i in &cands {
                if regex::RegexBuilder::new(&pats[i])
                    .multi_line(true)
                    .crlf(true)
                    .build()
                    .is_ok()
                {
                    compiled += 1;
                }
            }
            if std::env::var_os("KW_PREFILTER_DEBUG").is_some() {
                let names: Vec<&str> = cat.signatures().map(|s| s.name()).collect();
                for &i in &cands {
                    eprintln!("  candidate {} ({})", names[i], &pats[i]);
                }
                eprintln!("  {} literals", owner.len());
            }
            eprintln!(
                "prefilter: {} signatures, {} with literals, {} always tried; {} candidates, {} compiled",
                pats.len(),
                pats.len() - always.len(),
                always.len(),
                cands.len(),
                compiled
            );
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

/// Per signature, the literals one of which any match must contain
/// (prefixes or suffixes, ASCII-lowercased), as one automaton; `owner[k]`
/// is the signature of literal `k`; `always` the signatures with none.
fn prefilter_build(pats: &[String]) -> (Option<aho_corasick::AhoCorasick>, Vec<usize>, Vec<usize>) {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let mut lits: Vec<Vec<u8>> = Vec::new();
    let mut owner = Vec::new();
    let mut always = Vec::new();
    for (i, p) in pats.iter().enumerate() {
        let hir = regex_syntax::ParserBuilder::new()
            .multi_line(true)
            .crlf(true)
            .build()
            .parse(p);
        let Ok(hir) = hir else {
            always.push(i);
            continue;
        };
        let best = [ExtractKind::Prefix, ExtractKind::Suffix]
            .into_iter()
            .filter_map(|kind| {
                let mut ex = Extractor::new();
                ex.kind(kind);
                let mut seq = ex.extract(&hir);
                seq.optimize_for_prefix_by_preference();
                let lits = seq.literals()?;
                let set: std::collections::BTreeSet<Vec<u8>> = lits
                    .iter()
                    .map(|l| l.as_bytes().to_ascii_lowercase())
                    .collect();
                // Useless when one is empty or too short to be selective.
                (!set.is_empty() && set.iter().all(|l| l.len() >= 3)).then_some(set)
            })
            .min_by_key(|s| s.len());
        match best {
            Some(set) => {
                for l in set {
                    lits.push(l);
                    owner.push(i);
                }
            }
            None => always.push(i),
        }
    }
    let ac = aho_corasick::AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(&lits)
        .ok();
    (ac, owner, always)
}
