//! Section 5: Idle cost: two daemons side by side with the default `check_every`
//! (5 s), nothing ready and no records: one on a 100k-task board (mostly
//! done), the baseline on an empty board; and a third on the big board
//! while a concurrent writer (Hermes) writes it. CPU over the window from
//! the threads' /proc/<pid>/task/*/schedstat (ns; utime+stime in
//! /proc/<pid>/stat only counts 10 ms ticks), memory from
//! /proc/<pid>/status, wake-ups from the context-switch counters of all
//! threads.

use std::time::{Duration, Instant};

use crate::Ctx;
use crate::daemon::{Rig, RigSpec};
use crate::report::Row;
use crate::sys;

const CPU_TARGET_PCT: f64 = 0.1;
const RSS_TARGET_KIB: u64 = 20 * 1024;

struct Sample {
    cpu: f64,
    wakeups: u64,
}

fn sample(pid: u32) -> Sample {
    Sample {
        cpu: sys::proc_cpu_secs_precise(pid).unwrap_or(f64::NAN),
        wakeups: sys::proc_wakeups(pid),
    }
}

pub fn run(ctx: &Ctx, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let secs = ctx.pick(60, 15);
    let size = 100_000;
    let spec = |name: &str, done| RigSpec {
        check_every: "5s",
        concurrent_writer: false,
        ..RigSpec::new(name, done, 0)
    };
    let t = Instant::now();
    let big = Rig::start(ctx, &spec("idle-big", size))?;
    let empty = Rig::start(ctx, &spec("idle-empty", 0))?;
    // Same big board, nothing for the watchdog to do, but Hermes busy
    // writing it (the concurrent writer): what the watchdog pays for that.
    let busy = Rig::start(
        ctx,
        &RigSpec {
            concurrent_writer: true,
            ..spec("idle-busy", size)
        },
    )?;
    eprintln!(
        "   boards ready and daemons started in {:.1} s; settling, then {secs} s idle",
        t.elapsed().as_secs_f64()
    );
    // Past the first tick (a full scan of the board's events) and start-up.
    std::thread::sleep(Duration::from_secs(ctx.pick(6, 3)));
    let (b0, e0, h0) = (sample(big.pid), sample(empty.pid), sample(busy.pid));
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (b1, e1, h1) = (sample(big.pid), sample(empty.pid), sample(busy.pid));
    let wall = start.elapsed().as_secs_f64();
    let pct = |a: &Sample, b: &Sample| (b.cpu - a.cpu) / wall * 100.0;
    let wps = |a: &Sample, b: &Sample| (b.wakeups - a.wakeups) as f64 / wall;
    let (bp, ep) = (pct(&b0, &b1), pct(&e0, &e1));
    let mib = |k: u64| k as f64 / 1024.0;
    let (b_hwm, b_rss) = (big.vm_kib("VmHWM"), big.vm_kib("VmRSS"));
    let (e_hwm, e_rss) = (empty.vm_kib("VmHWM"), empty.vm_kib("VmRSS"));
    eprintln!(
        "   100k board: cpu {:.3} s in {wall:.0} s ({bp:.3}%), VmHWM {:.1} MiB VmRSS {:.1} MiB, {:.1} wakeups/s, {} threads",
        b1.cpu - b0.cpu,
        mib(b_hwm),
        mib(b_rss),
        wps(&b0, &b1),
        sys::proc_threads(big.pid)
    );
    eprintln!(
        "   empty board: cpu {:.3} s ({ep:.3}%), VmHWM {:.1} MiB VmRSS {:.1} MiB, {:.1} wakeups/s",
        e1.cpu - e0.cpu,
        mib(e_hwm),
        mib(e_rss),
        wps(&e0, &e1)
    );
    let hp = pct(&h0, &h1);
    eprintln!(
        "   100k board while Hermes writes it: cpu {:.3} s ({hp:.3}%), {:.1} wakeups/s",
        h1.cpu - h0.cpu,
        wps(&h0, &h1)
    );
    let tick = 1e-6;
    rows.push(
        Row::new(
            "5a",
            format!("idle CPU over {secs} s, 100k-task board, check_every 5s (vs empty board)"),
        )
        .ours(format!("{bp:.3}%"))
        .base(format!("{ep:.3}% (empty board)"))
        .ratio(bp / ep.max(tick / wall * 100.0))
        .target("< 0.1%")
        .check(
            bp < CPU_TARGET_PCT,
            format!(
                "{bp:.3}%, {:.3} points ({:.1}x) over",
                bp - CPU_TARGET_PCT,
                bp / CPU_TARGET_PCT
            ),
        ),
    );
    rows.push(
        Row::new("5b", "idle memory, 100k-task board: peak VmHWM (VmRSS now)")
            .ours(format!("{:.1} MiB ({:.1})", mib(b_hwm), mib(b_rss)))
            .base(format!(
                "{:.1} MiB ({:.1}) empty board",
                mib(e_hwm),
                mib(e_rss)
            ))
            .ratio(b_hwm as f64 / e_hwm.max(1) as f64)
            .target("< 20 MiB")
            .check(
                b_hwm < RSS_TARGET_KIB,
                format!(
                    "{:.1} MiB, {:.1} MiB ({:.2}x) over",
                    mib(b_hwm),
                    mib(b_hwm.saturating_sub(RSS_TARGET_KIB)),
                    b_hwm as f64 / RSS_TARGET_KIB as f64
                ),
            ),
    );
    rows.push(
        Row::new("5c", "idle wake-ups (context switches, all threads)")
            .ours(format!("{:.1}/s", wps(&b0, &b1)))
            .base(format!("{:.1}/s empty board", wps(&e0, &e1)))
            .ratio(wps(&b0, &b1) / wps(&e0, &e1).max(0.01)),
    );
    rows.push(
        Row::new(
            "5d",
            format!(
                "nothing to do, but Hermes writing the board ({}): CPU, wake-ups",
                crate::daemon::writer_text().replace("concurrent writer: ", "")
            ),
        )
        .ours(format!("{hp:.3}%, {:.0} wake-ups/s", wps(&h0, &h1)))
        .base(format!("{bp:.3}%, {:.1}/s quiet board", wps(&b0, &b1)))
        .ratio(hp / bp.max(tick / wall * 100.0)),
    );
    Ok(())
}
