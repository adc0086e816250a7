//! Section 2: Passthrough: a child writes N bytes (1 GiB) to stderr, or stdout,
//! (a) piped straight to `cat > /dev/null` (the baseline the target is set
//! against), (b) through worker-shim whose own stream goes to /dev/null, and
//! for reference (c) straight to /dev/null with no pipe at all and (d)
//! through a plain pipe drained by this harness.
//! Variants are interleaved round by round; medians of wall time. Peak RSS
//! comes from separate runs under kw-bench's `--maxrss-of` helper (a fresh
//! forking parent, so ru_maxrss is not inherited from the harness): it is
//! the larger of the shim and its child, so the child alone is reported too.

use std::ffi::OsStr;
use std::os::fd::AsRawFd;

use crate::Ctx;
use crate::report::{Row, fmt_ratio, median};
use crate::sys::{self, Cmd};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const RSS_LIMIT_KIB: u64 = 3 * 1024;
/// A line the built-in catalogue classifies as a transient rate limit.
const LINE_429: &str =
    "openai.RateLimitError: HTTP 429: The usage limit has been reached. resets_at: 1780861905";

#[derive(Clone, Copy, PartialEq)]
enum Sink {
    Null,
    Pipe,
}

struct Variant {
    cmd: Cmd,
    /// Which of the child's fds carries the volume (1 or 2).
    stream: usize,
    sink: Sink,
    wall: Vec<f64>,
    rss: Vec<u64>,
    exit: i32,
}

pub fn run(ctx: &Ctx, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let bytes: u64 = ctx.pick(1 << 30, 256 << 20);
    let rounds = ctx.pick(5, 3);
    let records = ctx.shm.join("pass-records");
    std::fs::create_dir_all(&records)?;
    let env = vec![(
        "WORKER_SHIM_RECORD_DIR".to_string(),
        records.display().to_string(),
    )];
    let head = crate::shim_start::which("head").unwrap_or_else(|| "/usr/bin/head".into());
    let sh = crate::shim_start::which("sh").unwrap_or_else(|| "/bin/sh".into());
    let head_s = head.display().to_string();
    let to_err = format!("exec {head_s} -c {bytes} /dev/zero >&2");
    let to_err_429 =
        format!("{head_s} -c {bytes} /dev/zero >&2; printf '\\n%s\\n' '{LINE_429}' >&2; exit 1");
    let n = bytes.to_string();
    let shim = ctx.shim.as_os_str();
    let c = OsStr::new("-c");
    let out_argv: Vec<&OsStr> = vec![head.as_os_str(), c, OsStr::new(&n), OsStr::new("/dev/zero")];
    let err_argv: Vec<&OsStr> = vec![sh.as_os_str(), c, OsStr::new(&to_err)];
    let err429_argv: Vec<&OsStr> = vec![sh.as_os_str(), c, OsStr::new(&to_err_429)];
    // The same child piped straight to cat (the baseline).
    let err_cat = format!("({head_s} -c {bytes} /dev/zero >&2) 2>&1 >/dev/null | cat >/dev/null");
    let out_cat = format!("{head_s} -c {bytes} /dev/zero | cat >/dev/null");
    let err_cat_argv: Vec<&OsStr> = vec![sh.as_os_str(), c, OsStr::new(&err_cat)];
    let out_cat_argv: Vec<&OsStr> = vec![sh.as_os_str(), c, OsStr::new(&out_cat)];
    fn with_shim<'a>(shim: &'a OsStr, argv: &[&'a OsStr]) -> Vec<&'a OsStr> {
        let mut v = vec![shim, OsStr::new("--")];
        v.extend_from_slice(argv);
        v
    }
    let rss_file = ctx.work.join("maxrss");
    let rss_file_s = rss_file.display().to_string();
    fn helper<'a>(me: &'a OsStr, file: &'a str, argv: &[&'a OsStr]) -> Vec<&'a OsStr> {
        let mut v = vec![
            me,
            OsStr::new("--maxrss-of"),
            OsStr::new(file),
            OsStr::new("--"),
        ];
        v.extend_from_slice(argv);
        v
    }
    let me = ctx.me.as_os_str();
    let variant = |label: &str, argv: &[&OsStr], stream, sink| Variant {
        cmd: Cmd::new(label, argv, &env),
        stream,
        sink,
        wall: Vec::new(),
        rss: Vec::new(),
        exit: 0,
    };
    // Timed runs (spawned directly) and RSS runs (spawned through the
    // --maxrss-of helper), all interleaved.
    let mut vs = vec![
        variant("stderr->null", &err_argv, 2, Sink::Null),
        variant("stderr->shim", &with_shim(shim, &err_argv), 2, Sink::Null),
        variant("stderr->pipe", &err_argv, 2, Sink::Pipe),
        variant("stdout->null", &out_argv, 1, Sink::Null),
        variant("stdout->shim", &with_shim(shim, &out_argv), 1, Sink::Null),
        variant("stdout->pipe", &out_argv, 1, Sink::Pipe),
        variant("stderr|cat", &err_cat_argv, 2, Sink::Null),
        variant("stdout|cat", &out_cat_argv, 1, Sink::Null),
        variant(
            "rss child alone",
            &helper(me, &rss_file_s, &err_argv),
            2,
            Sink::Null,
        ),
        variant(
            "rss shim stderr",
            &helper(me, &rss_file_s, &with_shim(shim, &err_argv)),
            2,
            Sink::Null,
        ),
        variant(
            "rss shim stdout",
            &helper(me, &rss_file_s, &with_shim(shim, &out_argv)),
            1,
            Sink::Null,
        ),
        variant(
            "rss shim +429",
            &helper(me, &rss_file_s, &with_shim(shim, &err429_argv)),
            2,
            Sink::Null,
        ),
    ];
    let rss_from = 8;
    let null = sys::dev_null()?;
    let nv = vs.len();
    for round in 0..rounds {
        for k in 0..nv {
            let i = (round + k) % nv;
            let v = &mut vs[i];
            let mut fds = [null.as_raw_fd(); 3];
            let _ = std::fs::remove_file(&rss_file);
            let stats = match v.sink {
                Sink::Null => sys::run_timed(&v.cmd, fds, || {})?,
                Sink::Pipe => {
                    let (r, w) = sys::pipe(128 * 1024)?;
                    fds[v.stream] = w.as_raw_fd();
                    let mut got = 0u64;
                    let s = sys::run_timed(&v.cmd, fds, || {
                        drop(w);
                        got = sys::drain(r);
                    })?;
                    anyhow::ensure!(got == bytes, "{}: drained {got} bytes", v.cmd.label);
                    s
                }
            };
            v.wall.push(stats.wall.as_secs_f64());
            v.exit = stats.exit_code;
            if i >= rss_from {
                let text = std::fs::read_to_string(&rss_file)?;
                let kib: u64 = text.split_whitespace().next().unwrap_or("0").parse()?;
                v.rss.push(kib);
            }
        }
    }
    let _ = std::fs::remove_file(&rss_file);
    // The 429 run must really have been classified: exit 75 (EX_TEMPFAIL).
    let classified = vs[11].exit == 75;
    let gib = bytes as f64 / GIB;
    let thr = |v: &Variant| gib / median(&v.wall);
    for v in &vs {
        eprintln!(
            "   {:<17} {:>6.2} GiB/s  median {:.3} s  maxrss {} KiB  exit {}",
            v.cmd.label,
            thr(v),
            median(&v.wall),
            v.rss
                .iter()
                .max()
                .map(|m| m.to_string())
                .unwrap_or_else(|| "-".into()),
            v.exit
        );
    }
    let vol = if bytes >= 1 << 30 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    };
    for (id, stream, null_i, shim_i, pipe_i, cat_i) in
        [("2a", "stderr", 0, 1, 2, 6), ("2b", "stdout", 3, 4, 5, 7)]
    {
        let (null, ours, pipe, base) = (
            thr(&vs[null_i]),
            thr(&vs[shim_i]),
            thr(&vs[pipe_i]),
            thr(&vs[cat_i]),
        );
        let r = ours / base;
        rows.push(
            Row::new(
                id,
                format!("{vol} through the child's {stream}: via shim vs piped straight to cat"),
            )
            .ours(format!("{ours:.2} GiB/s"))
            .base(format!("{base:.2} GiB/s"))
            .ratio(r)
            .target(">= 0.80x")
            .check(
                r >= 0.80,
                format!(
                    "{:.0}% of baseline, {:.0} points short",
                    r * 100.0,
                    (0.80 - r) * 100.0
                ),
            ),
        );
        rows.push(
            Row::new(
                &format!("{id}'"),
                "  reference: straight to /dev/null (no pipe) / a bare pipe drained by the harness"
                    .to_string(),
            )
            .ours(format!("{ours:.2} GiB/s (shim)"))
            .base(format!(
                "{null:.2} GiB/s (no pipe) / {pipe:.2} GiB/s (pipe)"
            ))
            .ratio(ours / null),
        );
    }
    let max_of = |i: usize| vs[i].rss.iter().max().copied().unwrap_or(0);
    let child_rss = max_of(8);
    let clean_rss = max_of(9).max(max_of(10));
    let rss429 = max_of(11);
    let mib = |k: u64| k as f64 / 1024.0;
    for (id, what, rss) in [
        (
            "2c",
            format!("shim peak RSS, clean {vol} run, stderr and stdout (max over runs)"),
            clean_rss,
        ),
        (
            "2d",
            format!(
                "shim peak RSS, {vol} then a 429 line ({})",
                if classified {
                    "exit 75: classified".to_string()
                } else {
                    format!("exit {}: NOT classified", vs[11].exit)
                }
            ),
            rss429,
        ),
    ] {
        rows.push(
            Row::new(id, what)
                .ours(format!("{:.2} MiB", mib(rss)))
                .base(format!("{:.2} MiB (child alone)", mib(child_rss)))
                .ratio(rss as f64 / child_rss.max(1) as f64)
                .target("< 3 MiB")
                .check(
                    rss < RSS_LIMIT_KIB,
                    format!(
                        "{:.2} MiB, {:.2} MiB ({}) over",
                        mib(rss),
                        mib(rss.saturating_sub(RSS_LIMIT_KIB)),
                        fmt_ratio(rss as f64 / RSS_LIMIT_KIB as f64)
                    ),
                ),
        );
    }
    let _ = std::fs::remove_dir_all(&records);
    Ok(())
}
