//! Section 4: Gateway log tailing: a synthetic Hermes gateway log (activity,
//! ordinary, warning/error and traceback lines) followed by the log-tailer
//! crate and classified by the watchdog's own `LineClassifier` with the
//! default patterns, provider-failure lines then going through the failure
//! catalogue, exactly as `Daemon::poll_log`/`on_log_line` do. The log grows
//! by 1 MiB appends (not timed) with a poll after each (timed). Baseline:
//! counting the same file's lines with `BufRead::read_until`. Interleaved,
//! medians.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use failure_signatures::{Catalogue, ClassifyContext};
use hermes_board::gateway_log::{LineClassifier, LineEvent};
use kanban_watchdog::config::LogPatterns;
use log_tailer::{StartAt, TailEvent, Tailer, TailerOptions};

use crate::Ctx;
use crate::report::{Row, median};

const TARGET_MBS: f64 = 200.0;
const CHUNK: usize = 1 << 20;

/// A Hermes-format gateway log of about `size` bytes.
pub fn synth_log(size: usize) -> Vec<u8> {
    // Seeded: the same log every run.
    let mut r = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(size + 512);
    let mut secs = 0u64;
    while out.len() < size {
        secs += r.u64(..3);
        let ts = format!(
            "2026-11-23 {:02}:{:02}:{:02},{:03}",
            (14 + secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            r.u64(..1000)
        );
        let hex = r.u64(..);
        let line = match r.u64(..1000) {
            0..=99 => format!(
                "{ts} INFO gateway.run: kanban dispatcher [default]: spawned={} reclaimed=0 crashed=0 timed_out=0 promoted={} auto_blocked=0",
                r.u64(..4),
                r.u64(..3)
            ),
            100..=299 => format!(
                "{ts} INFO httpx: HTTP Request: POST https://chatgpt.com/backend-api/codex/responses \"HTTP/1.1 200 OK\""
            ),
            300..=449 => format!(
                "{ts} INFO agent.conversation: turn {} completed in {}.{:02}s (input_tokens={} output_tokens={} cached_tokens={})",
                r.u64(..80),
                r.u64(..60),
                r.u64(..100),
                r.u64(..120_000),
                r.u64(..4000),
                r.u64(..100_000)
            ),
            450..=579 => format!(
                "{ts} INFO tools.terminal: [t_{hex:012x}] running command in /srv/work/t_{hex:012x}: cargo test --workspace --no-fail-fast"
            ),
            580..=699 => format!(
                "{ts} DEBUG gateway.session: heartbeat session={hex:016x} platform=cli idle={}s",
                r.u64(..600)
            ),
            700..=779 => format!(
                "{ts} INFO kanban.worker: task t_{hex:012x} worker pid {} heartbeat ok (claim extended to +900s)",
                1000 + r.u64(..60000)
            ),
            780..=829 => format!(
                "{ts} INFO agent.memory: flushed {} memory entries to /root/.hermes/memories/MEMORY.md",
                r.u64(..40)
            ),
            830..=869 => format!(
                "{ts} WARNING gateway.platforms: No messaging platforms enabled; running headless"
            ),
            870..=929 => format!(
                "  File \"/opt/hermes/lib/python3.11/site-packages/openai/_base_client.py\", line {}, in _request",
                900 + r.u64(..300)
            ),
            930..=949 => format!("{ts} ERROR agent.run: Traceback (most recent call last):"),
            950..=964 => format!(
                "{ts} WARNING agent.retry: openai-codex returned HTTP 429: The usage limit has been reached; retrying in {}.{}s",
                r.u64(..60),
                r.u64(..1000)
            ),
            965..=969 => "RuntimeError: xAI OAuth state is missing access_token. Re-authenticate with `hermes model`.".to_string(),
            970..=979 => format!("{ts} ERROR gateway.run: kanban dispatcher: tick failed on board default"),
            980..=989 => format!(
                "{ts} WARNING gateway.run: kanban dispatcher stuck: ready queue non-empty for {} consecutive ticks but 0 workers spawned.",
                r.u64(..10)
            ),
            _ => format!("{ts} INFO gateway.run: kanban dispatcher: reaped {} zombie worker(s)", r.u64(..3)),
        };
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}

struct Counts {
    lines: u64,
    events: [u64; 6],
    classified: u64,
}

/// Appends `content` to a fresh `path` in CHUNK pieces, polling after each;
/// returns the time spent inside poll (+ classification).
fn tail_run(
    path: &Path,
    content: &[u8],
    classify: Option<(&LineClassifier, &Catalogue)>,
) -> anyhow::Result<(Duration, Counts)> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::File::create(path)?;
    let mut tailer = Tailer::new(
        path,
        TailerOptions {
            start: StartAt::Beginning,
            ..TailerOptions::default()
        },
    );
    let mut spent = Duration::ZERO;
    let mut c = Counts {
        lines: 0,
        events: [0; 6],
        classified: 0,
    };
    for chunk in content.chunks(CHUNK) {
        file.write_all(chunk)?;
        let t = Instant::now();
        for ev in tailer.poll()? {
            if let TailEvent::Line(line) = ev {
                c.lines += 1;
                if let Some((cls, cat)) = classify {
                    let e = cls.classify(&line.text);
                    c.events[e as usize] += 1;
                    if e == LineEvent::ProviderFailure {
                        let ctx = ClassifyContext::new(
                            jiff::Timestamp::now(),
                            jiff::tz::TimeZone::system(),
                        );
                        if cat.classify(&line.text, &ctx).is_some() {
                            c.classified += 1;
                        }
                    }
                }
            }
        }
        spent += t.elapsed();
    }
    Ok((spent, c))
}

fn count_lines(path: &Path) -> anyhow::Result<(Duration, u64)> {
    let t = Instant::now();
    let mut r = BufReader::with_capacity(64 * 1024, std::fs::File::open(path)?);
    let mut buf = Vec::with_capacity(1024);
    let mut n = 0u64;
    while r.read_until(b'\n', &mut buf)? > 0 {
        n += 1;
        buf.clear();
    }
    Ok((t.elapsed(), n))
}

pub fn run(ctx: &Ctx, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let size = ctx.pick(256 << 20, 64 << 20);
    let rounds = ctx.pick(3, 2);
    let content = synth_log(size);
    let mb = content.len() as f64 / 1e6;
    let dir = ctx.shm.join("tail");
    std::fs::create_dir_all(&dir)?;
    let full_path = dir.join("counted.log");
    std::fs::write(&full_path, &content)?;
    let tail_path = dir.join("gateway.log");
    let classifier = LineClassifier::new(&LogPatterns::default())?;
    let catalogue = Catalogue::builtin();
    let (mut base, mut tail_only, mut full) = (Vec::new(), Vec::new(), Vec::new());
    let mut lines = 0;
    let mut counts = None;
    for round in 0..rounds {
        for k in 0..3 {
            match (round + k) % 3 {
                0 => {
                    let (d, n) = count_lines(&full_path)?;
                    lines = n;
                    base.push(d.as_secs_f64());
                }
                1 => {
                    let (d, c) = tail_run(&tail_path, &content, None)?;
                    anyhow::ensure!(c.lines == lines || lines == 0, "tailer lost lines");
                    tail_only.push(d.as_secs_f64());
                }
                _ => {
                    let (d, c) = tail_run(&tail_path, &content, Some((&classifier, &catalogue)))?;
                    full.push(d.as_secs_f64());
                    counts = Some(c);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    // The classifier alone over lines already in memory, and where its time
    // goes: each pattern group as its own RegexSet (LineClassifier tries
    // them in order, so an "other" line pays for all five); then what-ifs:
    // the same patterns as one RegexSet, with ASCII-only case folding
    // (`(?i)` -> `(?i-u)`), and behind an ASCII-case-insensitive literal
    // prefilter. Interleaved, medians.
    let text = String::from_utf8_lossy(&content);
    let lines: Vec<&str> = text.lines().collect();
    let p = LogPatterns::default();
    let groups: [(&str, &Vec<String>); 5] = [
        ("activity", &p.activity),
        ("stuck", &p.stuck),
        ("tick_error", &p.tick_error),
        ("shutdown", &p.shutdown),
        ("provider_failure", &p.provider_failure),
    ];
    let group_sets = groups
        .iter()
        .map(|(_, pats)| regex::RegexSet::new(*pats))
        .collect::<Result<Vec<_>, _>>()?;
    let all: Vec<&String> = groups.iter().flat_map(|(_, p)| p.iter()).collect();
    let combined = regex::RegexSet::new(&all)?;
    let ascii_set = regex::RegexSet::new(
        all.iter()
            .map(|p| p.replace("(?i)", "(?i-u)"))
            .collect::<Vec<_>>(),
    )?;
    let pre = aho_corasick::AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build([
            "kanban dispatcher",
            "gateway shutting",
            "gateway is shutting",
            "oauth",
            "access_token",
            "usage limit",
            "rate limit",
            "http 429",
            "quota",
        ])?;
    // Each variant returns how many lines are not "other".
    type IsMatch<'a> = Box<dyn Fn(&str) -> bool + 'a>;
    let variants: Vec<(&str, IsMatch<'_>)> = vec![
        (
            "LineClassifier",
            Box::new(|l: &str| classifier.classify(l) != LineEvent::Other),
        ),
        ("activity", Box::new(|l: &str| group_sets[0].is_match(l))),
        ("stuck", Box::new(|l: &str| group_sets[1].is_match(l))),
        ("tick_error", Box::new(|l: &str| group_sets[2].is_match(l))),
        ("shutdown", Box::new(|l: &str| group_sets[3].is_match(l))),
        (
            "provider_failure",
            Box::new(|l: &str| group_sets[4].is_match(l)),
        ),
        ("one set", Box::new(|l: &str| combined.is_match(l))),
        ("one set (?i-u)", Box::new(|l: &str| ascii_set.is_match(l))),
        (
            "prefilter + one set",
            Box::new(|l: &str| pre.is_match(l) && combined.is_match(l)),
        ),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut hits = vec![0u64; variants.len()];
    for round in 0..rounds + 1 {
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let f = &variants[i].1;
            let t = Instant::now();
            let n = lines.iter().filter(|l| f(l)).count() as u64;
            times[i].push(t.elapsed().as_secs_f64());
            hits[i] = n;
        }
    }
    let med: Vec<f64> = times.iter().map(|t| median(t)).collect();
    // The what-ifs are other engines for the same patterns: they must
    // agree with each other. The classifier matches fewer lines than its
    // patterns alone (a continuation line counts only inside a gateway
    // ERROR record: a relayed message's second line cannot pose as one),
    // never more.
    let n_match = hits[0];
    let n_set = hits[6];
    for i in [7, 8] {
        anyhow::ensure!(
            hits[i] == n_set,
            "what-if {} disagrees with one set: {} vs {n_set} lines matched",
            variants[i].0,
            hits[i]
        );
    }
    anyhow::ensure!(
        hits[0] <= n_set,
        "the classifier found {} non-other lines, more than its patterns alone ({n_set})",
        hits[0]
    );
    let classify_only = med[0];
    let (combined_secs, ascii_secs, pre_secs) = (med[6], med[7], med[8]);
    let per_group: Vec<(&str, f64)> = (1..=5).map(|i| (variants[i].0, med[i])).collect();

    let c = counts.expect("at least one full round");
    let (b, to, f) = (median(&base), median(&tail_only), median(&full));
    let mbs = |secs: f64| mb / secs;
    let lps = |secs: f64| c.lines as f64 / secs;
    eprintln!(
        "   {:.0} MB, {} lines: activity {} stuck {} tick_error {} shutdown {} provider_failure {} (catalogue matched {}) other {}",
        mb,
        c.lines,
        c.events[0],
        c.events[1],
        c.events[2],
        c.events[3],
        c.events[4],
        c.classified,
        c.events[5]
    );
    eprintln!(
        "   BufRead {:.0} MB/s, tailer {:.0} MB/s, tailer+classify {:.0} MB/s, classify alone {:.0} MB/s ({n_match} non-other)",
        mbs(b),
        mbs(to),
        mbs(f),
        mbs(classify_only)
    );
    rows.push(
        Row::new(
            "4a",
            format!(
                "log tailing: tailer + LineClassifier + catalogue, {mb:.0} MB synthetic gateway log"
            ),
        )
        .ours(format!(
            "{:.0} MB/s ({:.2} M lines/s)",
            mbs(f),
            lps(f) / 1e6
        ))
        .base(format!(
            "{:.0} MB/s ({:.2} M lines/s) BufRead count",
            mbs(b),
            lps(b) / 1e6
        ))
        .ratio(mbs(f) / mbs(b))
        .target(">= 200 MB/s")
        .check(
            mbs(f) >= TARGET_MBS,
            format!("{:.0} MB/s, {:.1}x short", mbs(f), TARGET_MBS / mbs(f)),
        ),
    );
    rows.push(
        Row::new("4b", "  split: tailer alone (no classification)")
            .ours(format!("{:.0} MB/s", mbs(to)))
            .base(format!("{:.0} MB/s BufRead count", mbs(b)))
            .ratio(mbs(to) / mbs(b)),
    );
    rows.push(
        Row::new("4c", "  split: LineClassifier alone on in-memory lines")
            .ours(format!("{:.0} MB/s", mbs(classify_only)))
            .base(format!("{:.0} MB/s BufRead count", mbs(b)))
            .ratio(mbs(classify_only) / mbs(b)),
    );
    let group_text = per_group
        .iter()
        .map(|(n, secs)| format!("{n} {:.0}", mbs(*secs)))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "   per group (MB/s, each alone): {group_text}; one combined RegexSet {:.0} MB/s, with (?i-u) {:.0} MB/s, behind a literal prefilter {:.0} MB/s",
        mbs(combined_secs),
        mbs(ascii_secs),
        mbs(pre_secs)
    );
    rows.push(
        Row::new("4d", "  split: each pattern group alone, MB/s")
            .ours(group_text.clone())
            .base(format!("{:.0} MB/s BufRead count", mbs(b))),
    );
    rows.push(
        Row::new(
            "4e",
            "  what-if: the same patterns as one RegexSet (one pass per line) vs LineClassifier",
        )
        .ours(format!("{:.0} MB/s", mbs(combined_secs)))
        .base(format!("{:.0} MB/s LineClassifier", mbs(classify_only)))
        .ratio(classify_only / combined_secs),
    );
    rows.push(
        Row::new(
            "4f",
            "  what-if: one RegexSet with ASCII-only case folding `(?i-u)` vs LineClassifier",
        )
        .ours(format!("{:.0} MB/s", mbs(ascii_secs)))
        .base(format!("{:.0} MB/s LineClassifier", mbs(classify_only)))
        .ratio(classify_only / ascii_secs),
    );
    // Projected full path with that classifier: tailer + classifier + the
    // catalogue share measured in 4a.
    let catalogue_share = (f - to - classify_only).max(0.0);
    let projected = to + pre_secs + catalogue_share;
    rows.push(
        Row::new(
            "4g",
            "  what-if: ASCII-case-insensitive literal prefilter (aho-corasick), then one RegexSet",
        )
        .ours(format!(
            "{:.0} MB/s (projected full path {:.0} MB/s)",
            mbs(pre_secs),
            mbs(projected)
        ))
        .base(format!("{:.0} MB/s LineClassifier", mbs(classify_only)))
        .ratio(classify_only / pre_secs),
    );
    Ok(())
}
