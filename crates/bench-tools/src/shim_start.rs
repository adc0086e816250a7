//! Section 1: Start/exit overhead: `worker-shim -- true` against bare `true` and
//! `tini -s -- true`, in one tight posix_spawn/wait4 loop, the three
//! commands interleaved round by round (rotating their order), medians of
//! per-round paired differences.

use std::ffi::OsStr;
use std::os::fd::AsRawFd;

use crate::Ctx;
use crate::report::{Row, Verdict, fmt_ms, median, ms};
use crate::sys::{self, Cmd};

pub fn run(ctx: &Ctx, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let rounds = ctx.pick(400, 120);
    let warmup = 20;
    let records = ctx.shm.join("start-records");
    std::fs::create_dir_all(&records)?;
    let env = vec![(
        "WORKER_SHIM_RECORD_DIR".to_string(),
        records.display().to_string(),
    )];
    let true_bin = which("true").unwrap_or_else(|| "/bin/true".into());
    let t = true_bin.as_os_str();
    let mut cmds = vec![
        Cmd::new("true", &[t], &env),
        Cmd::new("shim", &[ctx.shim.as_os_str(), OsStr::new("--"), t], &env),
    ];
    let mut add = |cmd: Cmd| {
        cmds.push(cmd);
        cmds.len() - 1
    };
    let tini_idx = ctx.tini.as_ref().map(|tini| {
        add(Cmd::new(
            "tini",
            &[tini.as_os_str(), OsStr::new("-s"), OsStr::new("--"), t],
            &env,
        ))
    });
    // The shim as `cargo install` builds it (dynamically linked), beside the
    // shipped static one: what the static link buys.
    let dynamic_idx = ctx.shim_dynamic.as_ref().map(|shim| {
        add(Cmd::new(
            "shim (dynamic)",
            &[shim.as_os_str(), OsStr::new("--"), t],
            &env,
        ))
    });
    let null = sys::dev_null()?;
    let fds = [null.as_raw_fd(); 3];
    let n = cmds.len();
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); n];
    for round in 0..warmup + rounds {
        let mut this = vec![0.0; n];
        for k in 0..n {
            let i = (round + k) % n;
            let s = sys::run_timed(&cmds[i], fds, || {})?;
            anyhow::ensure!(s.exit_code == 0, "{} exited {}", cmds[i].label, s.exit_code);
            this[i] = ms(s.wall);
            if round >= warmup {
                cpu[i].push(ms(s.cpu));
            }
        }
        if round >= warmup {
            for i in 0..n {
                wall[i].push(this[i]);
            }
        }
    }
    let written = std::fs::read_dir(&records)?.count();
    let med: Vec<f64> = wall.iter().map(|w| median(w)).collect();
    let added = |i: usize| {
        let d: Vec<f64> = wall[i].iter().zip(&wall[0]).map(|(a, b)| a - b).collect();
        median(&d)
    };
    let shim_added = added(1);
    eprintln!(
        "   {rounds} rounds: true {} ms, shim {} ms (added {} ms), {} records written",
        fmt_ms(med[0]),
        fmt_ms(med[1]),
        fmt_ms(shim_added),
        written
    );
    rows.push(
        Row::new(
            "1a",
            "shim start+exit: `worker-shim -- true` vs bare `true`, median wall",
        )
        .ours(format!(
            "{} ms (+{} ms)",
            fmt_ms(med[1]),
            fmt_ms(shim_added)
        ))
        .base(format!("{} ms", fmt_ms(med[0])))
        .ratio(med[1] / med[0])
        .target("added < 1 ms")
        .check(
            shim_added < 1.0,
            format!(
                "added {} ms, {} ms over",
                fmt_ms(shim_added),
                fmt_ms(shim_added - 1.0)
            ),
        ),
    );
    if let Some(ti) = tini_idx {
        let tini_added = added(ti);
        eprintln!(
            "   tini {} ms (added {} ms)",
            fmt_ms(med[ti]),
            fmt_ms(tini_added)
        );
        let r = shim_added / tini_added;
        rows.push(
            Row::new("1b", "shim added wall vs `tini -s -- true` added wall")
                .ours(format!("+{} ms", fmt_ms(shim_added)))
                .base(format!("+{} ms", fmt_ms(tini_added)))
                .ratio(r)
                .target("<= 1.2x tini")
                .check(r <= 1.2, format!("{r:.2}x tini, {:.2}x over", r / 1.2)),
        );
        if let Some(di) = dynamic_idx {
            let dynamic_added = added(di);
            eprintln!(
                "   shim (dynamic, cargo install) {} ms (added {} ms)",
                fmt_ms(med[di]),
                fmt_ms(dynamic_added)
            );
            rows.push(
                Row::new(
                    "1h",
                    "  the same, shim as `cargo install` builds it (dynamically linked)",
                )
                .ours(format!("+{} ms", fmt_ms(dynamic_added)))
                .base(format!("+{} ms", fmt_ms(tini_added)))
                .ratio(dynamic_added / tini_added),
            );
        }
    } else {
        rows.push(
            Row::new("1b", "shim added wall vs `tini -s -- true` added wall")
                .verdict(Verdict::Skip(ctx.tini_missing_reason.clone())),
        );
    }
    one_second_worker(ctx, rows, &env)?;
    let cpu_med: Vec<f64> = cpu.iter().map(|c| median(c)).collect();
    rows.push(
        Row::new("1c", "CPU (user+sys) per run, shim vs bare `true`")
            .ours(format!("{} ms", fmt_ms(cpu_med[1])))
            .base(format!("{} ms", fmt_ms(cpu_med[0])))
            .ratio(cpu_med[1] / cpu_med[0].max(1e-3)),
    );
    let _ = std::fs::remove_dir_all(&records);

    // Where the shim's time goes: cold first calls it makes at exit, each
    // timed in a fresh process (their state is initialised once per process).
    let reps = ctx.pick(15, 7);
    let cost = |name: &str| -> anyhow::Result<(f64, f64)> {
        let (mut t, mut m) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let out = std::process::Command::new(&ctx.me)
                .args(["--probe", name])
                .output()?;
            anyhow::ensure!(out.status.success(), "probe {name} failed");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut f = text.split_whitespace();
            t.push(f.next().unwrap_or("0").parse::<f64>()? / 1000.0);
            m.push(f.next().unwrap_or("0").parse::<f64>()? / 1024.0);
        }
        Ok((median(&t), median(&m)))
    };
    let (noop, _) = cost("noop")?;
    for (id, name, what) in [
        (
            "1d",
            "redact",
            "  cold first call in the shim: `redact()` (regex compile; argv is always redacted)",
        ),
        (
            "1e",
            "tz",
            "  cold first call when a failure is classified: `local_time_zone()` (reads /etc/localtime)",
        ),
        (
            "1f",
            "catalogue",
            "  cold first call when there is output: `Catalogue::classify` (literal prefilter, no match)",
        ),
    ] {
        let (c, mem) = cost(name)?;
        eprintln!("   probe {name}: {} ms, peak RSS +{mem:.2} MiB", fmt_ms(c));
        rows.push(
            Row::new(id, what)
                .ours(format!("{} ms, +{mem:.2} MiB RSS", fmt_ms(c)))
                .base(format!("{} ms (no-op probe)", fmt_ms(noop))),
        );
    }
    Ok(())
}

/// 1g: a worker that writes 1 MiB of log-like text, then sleeps 1 s:
/// bare, under `tini -s`, under the shim (which passes the output through,
/// keeps head and tail and classifies them), and bare with its output
/// through a pipe this harness drains (what any pass-through costs, a
/// reference row), interleaved; medians of the per-round differences with
/// the bare run.
fn one_second_worker(
    ctx: &Ctx,
    rows: &mut Vec<Row>,
    env: &[(String, String)],
) -> anyhow::Result<()> {
    const WHAT: &str = "1 s worker writing 1 MiB of text: shim added wall vs `tini -s` added wall";
    let Some(tini) = &ctx.tini else {
        rows.push(Row::new("1g", WHAT).verdict(Verdict::Skip(ctx.tini_missing_reason.clone())));
        return Ok(());
    };
    let text = ctx.shm.join("worker-1mib.txt");
    let mut body = String::with_capacity(1 << 20);
    let mut i = 0u32;
    while body.len() < (1 << 20) {
        body.push_str(&format!(
            "step {i}: ran `cargo test -p crate{}`; 12 passed; wrote src/module_{}.rs ({} lines)\n",
            i % 7,
            i % 13,
            i * 3 % 400
        ));
        i += 1;
    }
    body.truncate(1 << 20);
    std::fs::write(&text, &body)?;
    let script = format!("cat '{}'; sleep 1", text.display());
    let sh = which("sh").unwrap_or_else(|| "/bin/sh".into());
    let argv = [sh.as_os_str(), OsStr::new("-c"), OsStr::new(&script)];
    fn with<'a>(pre: &[&'a OsStr], argv: &[&'a OsStr]) -> Vec<&'a OsStr> {
        let mut v: Vec<&OsStr> = pre.to_vec();
        v.extend_from_slice(argv);
        v
    }
    let cmds = [
        Cmd::new("bare", &with(&[], &argv), env),
        Cmd::new(
            "tini",
            &with(
                &[tini.as_os_str(), OsStr::new("-s"), OsStr::new("--")],
                &argv,
            ),
            env,
        ),
        Cmd::new(
            "shim",
            &with(&[ctx.shim.as_os_str(), OsStr::new("--")], &argv),
            env,
        ),
    ];
    let rounds = ctx.pick(12, 4);
    let null = sys::dev_null()?;
    // 0-2 as labelled; 3: the bare worker with its stdout through a pipe
    // this harness drains, the least any pass-through costs (tini passes
    // nothing through: its worker writes to /dev/null itself).
    const PIPE: usize = 3;
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); 4];
    for round in 0..rounds {
        for k in 0..4 {
            let i = (round + k) % 4;
            let mut fds = [null.as_raw_fd(); 3];
            let cmd = &cmds[if i == PIPE { 0 } else { i }];
            let s = if i == PIPE {
                let (r, w) = sys::pipe(128 * 1024)?;
                fds[1] = w.as_raw_fd();
                let mut got = 0;
                let s = sys::run_timed(cmd, fds, || {
                    drop(w);
                    got = sys::drain(r);
                })?;
                anyhow::ensure!(
                    got == 1 << 20,
                    "bare worker through a pipe: drained {got} bytes"
                );
                s
            } else {
                sys::run_timed(cmd, fds, || {})?
            };
            anyhow::ensure!(s.exit_code == 0, "{} exited {}", cmd.label, s.exit_code);
            wall[i].push(ms(s.wall));
        }
    }
    let added = |i: usize| {
        let d: Vec<f64> = wall[i].iter().zip(&wall[0]).map(|(a, b)| a - b).collect();
        median(&d)
    };
    let (shim_added, tini_added, pipe_added) = (added(2), added(1), added(PIPE));
    eprintln!(
        "   1 s worker, {rounds} rounds: bare {} ms, tini added {} ms, shim added {} ms, a bare pipe added {} ms",
        fmt_ms(median(&wall[0])),
        fmt_ms(tini_added),
        fmt_ms(shim_added),
        fmt_ms(pipe_added)
    );
    // A ratio of two sub-millisecond differences: floor tini's at 0.1 ms.
    let r = shim_added / tini_added.max(0.1);
    rows.push(
        Row::new("1g", WHAT)
            .ours(format!("+{} ms", fmt_ms(shim_added)))
            .base(format!(
                "+{} ms (bare {} ms)",
                fmt_ms(tini_added),
                fmt_ms(median(&wall[0]))
            ))
            .ratio(r)
            .target("<= 1.2x tini")
            .check(r <= 1.2, format!("{r:.2}x tini, {:.2}x over", r / 1.2)),
    );
    rows.push(
        Row::new(
            "1g'",
            "  reference: the bare worker's 1 MiB through a pipe the harness drains",
        )
        .ours(format!("+{} ms (pipe)", fmt_ms(pipe_added)))
        .base(format!("+{} ms (tini)", fmt_ms(tini_added)))
        .ratio(pipe_added / tini_added.max(0.1)),
    );
    let _ = std::fs::remove_file(&text);
    Ok(())
}

pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}
