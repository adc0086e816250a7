//! `kw-bench`: the measurements behind `scripts/bench`. Every number is
//! reported beside a baseline measured in the same invocation, interleaved
//! with it, with medians (or percentiles) over repeated runs, because the
//! machine is shared and noisy.
//!
//! ```text
//! kw-bench --shim PATH [--shim-dynamic PATH] --watchdog PATH [--tini PATH] [--quick] [--only 1,3]
//!          [--workdir DIR] [--keep]
//! ```

mod board;
mod daemon;
mod helpers;
mod idle;
mod latency;
mod multiboard;
mod passthrough;
mod report;
mod scale;
mod shim_start;
mod sys;
mod tailing;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::report::{Row, Verdict};

pub struct Ctx {
    pub quick: bool,
    /// Keep work dirs (boards, records, daemon logs) for inspection.
    pub keep: bool,
    /// This binary, for its helper modes.
    pub me: PathBuf,
    /// The shim measured: the one scripts/install ships (scripts/build-shim).
    pub shim: PathBuf,
    /// The same shim as `cargo install` builds it (dynamically linked), for
    /// comparison in section 1.
    pub shim_dynamic: Option<PathBuf>,
    pub watchdog: PathBuf,
    pub tini: Option<PathBuf>,
    pub tini_missing_reason: String,
    /// On disk (like a real state dir): boards, records, logs.
    pub work: PathBuf,
    /// tmpfs when there is one: shim records in section 1 and 2.
    pub shm: PathBuf,
}

impl Ctx {
    /// `full` normally, `quick` with --quick.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: kw-bench --shim PATH [--shim-dynamic PATH] --watchdog PATH [--tini PATH | --no-tini REASON] [--quick] [--only 1,2,...] [--workdir DIR] [--keep]"
    );
    std::process::exit(2)
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("kw-bench: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    let all: Vec<String> = std::env::args().collect();
    match all.get(1).map(String::as_str) {
        Some("--maxrss-of") if all.len() > 4 && all[3] == "--" => {
            helpers::maxrss_of(&all[2], &all[4..])
        }
        Some("--probe") if all.len() == 3 => helpers::probe(&all[2]),
        _ => {}
    }
    let mut args = all.into_iter().skip(1);
    let mut quick = false;
    let mut keep = false;
    let mut shim = None;
    let mut shim_dynamic = None;
    let mut watchdog = None;
    let mut tini = None;
    let mut tini_missing_reason = "tini not found".to_string();
    let mut only: Option<Vec<u32>> = None;
    let mut workdir: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--keep" => keep = true,
            "--shim" => shim = args.next().map(PathBuf::from),
            "--shim-dynamic" => shim_dynamic = args.next().map(PathBuf::from),
            "--watchdog" => watchdog = args.next().map(PathBuf::from),
            "--tini" => tini = args.next().map(PathBuf::from),
            "--no-tini" => tini_missing_reason = args.next().unwrap_or_default(),
            "--workdir" => workdir = args.next().map(PathBuf::from),
            "--only" => {
                only = Some(
                    args.next()
                        .unwrap_or_default()
                        .split(',')
                        .filter_map(|s| s.trim().parse().ok())
                        .collect(),
                )
            }
            "-h" | "--help" => usage(),
            other => {
                eprintln!("kw-bench: unknown argument {other:?}");
                usage()
            }
        }
    }
    let (Some(shim), Some(watchdog)) = (shim, watchdog) else {
        usage()
    };
    for p in [&shim, &watchdog] {
        if !p.is_file() {
            bail!(
                "{} is missing (build with cargo build --release)",
                p.display()
            );
        }
    }
    let base = workdir.unwrap_or_else(std::env::temp_dir);
    let work = base.join(format!("kw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let shm_root = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        base.clone()
    };
    let shm = shm_root.join(format!("kw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&shm)?;
    let ctx = Ctx {
        quick,
        keep,
        me: std::env::current_exe()?,
        shim,
        shim_dynamic,
        watchdog,
        tini,
        tini_missing_reason,
        work: work.clone(),
        shm: shm.clone(),
    };
    let machine = sys::machine_info();
    eprintln!(
        "kw-bench ({}): {} x {}, kernel {}, load {}, work dir {} (records for 1-2 in {})",
        if quick { "quick" } else { "full" },
        machine.nproc,
        machine.cpu,
        machine.kernel,
        machine.loadavg,
        work.display(),
        shm.display()
    );
    eprintln!(
        "shim under test: {}{}",
        ctx.shim.display(),
        ctx.shim_dynamic
            .as_ref()
            .map(|d| format!(
                " (dynamically linked build for comparison: {})",
                d.display()
            ))
            .unwrap_or_default()
    );
    let started = Instant::now();
    let wanted = |n: u32| only.as_ref().is_none_or(|o| o.contains(&n));
    let mut rows: Vec<Row> = Vec::new();
    type Section = fn(&Ctx, &mut Vec<Row>) -> anyhow::Result<()>;
    let sections: [(u32, &str, Section); 7] = [
        (1, "shim start/exit overhead", shim_start::run),
        (2, "passthrough throughput and shim RSS", passthrough::run),
        (3, "record-to-board latency and throughput", latency::run),
        (4, "gateway log tailing", tailing::run),
        (5, "idle cost", idle::run),
        (6, "scale: board size and start-up backlog", scale::run),
        (7, "multi-board home vs one board", multiboard::run),
    ];
    // A section that could not run (not a missed target) fails the run, so
    // the smoke run in the test command notices a harness that rotted.
    let mut sections_failed = 0usize;
    for (n, name, f) in sections {
        if !wanted(n) {
            continue;
        }
        let t = Instant::now();
        eprintln!("== {n}. {name} (load {}) ==", sys::loadavg1());
        if let Err(e) = f(&ctx, &mut rows) {
            sections_failed += 1;
            eprintln!("section {n} failed: {e:#}");
            rows.push(
                Row::new(&format!("{n}"), name)
                    .verdict(Verdict::Miss(format!("section failed: {e:#}"))),
            );
        }
        eprintln!("   ({:.0} s)", t.elapsed().as_secs_f64());
    }
    let elapsed = started.elapsed().as_secs_f64();

    println!();
    println!(
        "kanban-watchdog benchmarks ({} mode, {:.0} s)",
        if quick { "quick" } else { "full" },
        elapsed
    );
    println!();
    print!("{}", report::print_table(&rows));
    let misses: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Miss(_)))
        .collect();
    let passes = rows
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Pass))
        .count();
    println!();
    println!("{passes} passed, {} missed", misses.len());
    for r in &misses {
        if let Verdict::Miss(by) = &r.verdict {
            println!("  MISS {} {}: {by}", r.id, r.what);
        }
    }

    println!();
    println!("---- markdown summary (for the README) ----");
    println!();
    println!(
        "### Benchmarks (`scripts/bench{}`)",
        if quick { " --quick" } else { "" }
    );
    println!();
    println!(
        "Machine: {} CPU(s), {}, {} RAM, Linux {}, {}. Load average {} at the start, {} at the end: the machine is shared, so every number is a median or percentile over repeated runs, beside a baseline measured interleaved with it in the same invocation.",
        machine.nproc,
        machine.cpu,
        machine.mem_total,
        machine.kernel,
        machine.rustc,
        machine.loadavg,
        sys::machine_info().loadavg
    );
    println!();
    let targeted: Vec<Row> = rows.iter().filter(|r| r.has_target()).cloned().collect();
    print!("{}", report::markdown_table(&targeted));
    println!();
    println!(
        "{passes} of {} targets met; the informational rows (cost splits, what-ifs, references) are in the full `scripts/bench` output. Run took {elapsed:.0} s.",
        targeted.len()
    );

    if keep {
        eprintln!("kept {} and {}", work.display(), shm.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
        let _ = std::fs::remove_dir_all(&shm);
    }
    anyhow::ensure!(
        sections_failed == 0,
        "{sections_failed} section(s) could not run (see above)"
    );
    Ok(())
}
