//! `kanban-watchdog explain`: the operator's `fail2ban-regex` for provider
//! failures. Reads a text (a file, stdin, or an exit record's captured
//! streams), judges it with the same catalogue code the shim runs, and
//! prints which signature won on which line, its class, provider and reset
//! time, and why every other candidate lost. `--signatures FILE` tests a
//! user catalogue (merged over the built-ins, as the shim merges it) before
//! it is deployed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use failure_signatures::{Candidate, CandidateOutcome, Catalogue, ClassifyContext, Judgement};

/// What `explain` reads and how.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Text to judge as the worker's stdout: a file, or `-` for stdin (the default).
    #[arg(value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// A second text, judged as the worker's stderr.
    #[arg(long, value_name = "FILE")]
    pub stderr: Option<PathBuf>,
    /// Judge the captured streams of an exit record (JSON) instead.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["input", "stderr"])]
    pub record: Option<PathBuf>,
    /// A user signature catalogue (YAML), merged over the built-ins as the shim does.
    #[arg(long, value_name = "FILE")]
    pub signatures: Option<PathBuf>,
    /// Only the user catalogue, without the built-ins.
    #[arg(long, requires = "signatures")]
    pub no_builtin: bool,
    /// "Now" for relative reset times: epoch seconds or RFC 3339 (default: the
    /// record's end time, else the current time).
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Time zone for wall-clock reset times without one (default: the system's).
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Runs `explain`. Exit code 0: a failure was found; 1: nothing the run
/// died of; 2 (from the caller): bad input or catalogue.
pub fn run(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let catalogue = load_catalogue(args)?;
    let (streams, names, record_end) = read_streams(args)?;
    let now = match &args.now {
        Some(t) => parse_now(t)?,
        None => record_end.unwrap_or_else(jiff::Timestamp::now),
    };
    let tz = match &args.tz {
        Some(z) => {
            jiff::tz::TimeZone::get(z).with_context(|| format!("--tz {z}: unknown time zone"))?
        }
        None => jiff::tz::TimeZone::system(),
    };
    let ctx = ClassifyContext::new(now, tz);
    let refs: Vec<&str> = streams.iter().map(String::as_str).collect();
    let judgement = catalogue.judge_with_mentions(&refs, &ctx);
    if args.json {
        println!("{}", to_json(&judgement, &names, &streams, now));
    } else {
        print!(
            "{}",
            render(&judgement, &names, &streams, &catalogue, args, now)
        );
    }
    Ok(if judgement.winner.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn load_catalogue(args: &ExplainArgs) -> anyhow::Result<Catalogue> {
    let Some(path) = &args.signatures else {
        return Ok(Catalogue::builtin());
    };
    // The error names the file, the line and the field.
    let user = Catalogue::load_file(path)?;
    Ok(if args.no_builtin {
        user
    } else {
        Catalogue::builtin().merged(user)
    })
}

type Streams = (Vec<String>, Vec<String>, Option<jiff::Timestamp>);

fn read_streams(args: &ExplainArgs) -> anyhow::Result<Streams> {
    if let Some(path) = &args.record {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let record = exit_record::parse_record_bytes(&bytes)
            .with_context(|| format!("{}: not an exit record", path.display()))?;
        let stream = |s: &exit_record::StreamCapture| {
            let mut t = s.head.clone();
            if s.truncated && !s.tail.is_empty() && !t.ends_with('\n') {
                t.push('\n');
            }
            t.push_str(&s.tail);
            t
        };
        return Ok((
            vec![stream(&record.stdout), stream(&record.stderr)],
            vec!["stdout".into(), "stderr".into()],
            Some(record.ended_at),
        ));
    }
    let mut streams = vec![read_text(args.input.as_deref())?];
    let mut names = vec![match &args.input {
        Some(p) if p != Path::new("-") => p.display().to_string(),
        _ => "stdin".to_string(),
    }];
    if let Some(p) = &args.stderr {
        streams.push(read_text(Some(p))?);
        names.push(format!("{} (stderr)", p.display()));
    }
    Ok((streams, names, None))
}

fn read_text(path: Option<&Path>) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    match path {
        None => std::io::stdin()
            .read_to_end(&mut bytes)
            .map(|_| ())
            .context("cannot read stdin")?,
        Some(p) if p == Path::new("-") => std::io::stdin()
            .read_to_end(&mut bytes)
            .map(|_| ())
            .context("cannot read stdin")?,
        Some(p) => {
            bytes = std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn parse_now(t: &str) -> anyhow::Result<jiff::Timestamp> {
    if let Ok(secs) = t.parse::<i64>() {
        return jiff::Timestamp::from_second(secs)
            .with_context(|| format!("--now {t}: out of range"));
    }
    t.parse::<jiff::Timestamp>()
        .with_context(|| format!("--now {t}: expected epoch seconds or RFC 3339"))
}

fn label(outcome: &CandidateOutcome) -> &'static str {
    match outcome {
        CandidateOutcome::Won => "WON",
        CandidateOutcome::Outranked { .. } => "OUTRANKED",
        CandidateOutcome::Rejected(_) => "REJECTED",
    }
}

fn render(
    j: &Judgement,
    names: &[String],
    streams: &[String],
    catalogue: &Catalogue,
    args: &ExplainArgs,
    now: jiff::Timestamp,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let source = match &args.signatures {
        Some(p) if args.no_builtin => format!("{} from {}", catalogue.len(), p.display()),
        Some(p) => format!(
            "built-in merged with {} ({} in all)",
            p.display(),
            catalogue.len()
        ),
        None => format!("built-in ({})", catalogue.len()),
    };
    let _ = writeln!(out, "signatures: {source}");
    for (name, text) in names.iter().zip(streams) {
        let _ = writeln!(out, "input: {name}, {} line(s)", text.lines().count());
    }
    let _ = writeln!(out);
    match &j.winner {
        Some(w) => {
            let won = j
                .candidates
                .iter()
                .find(|c| c.outcome == CandidateOutcome::Won);
            let _ = writeln!(
                out,
                "verdict: {} ({}) by signature {}",
                w.class,
                if w.transient {
                    "transient: retried later"
                } else {
                    "needs a human"
                },
                w.signature
            );
            let _ = writeln!(
                out,
                "  provider: {}",
                w.provider.as_deref().unwrap_or("(not named)")
            );
            if let Some(c) = won {
                let _ = writeln!(
                    out,
                    "  line:     {}:{}: {}",
                    stream_name(names, c),
                    c.line_no,
                    c.line
                );
            }
            match (w.resets_at, w.retry_after_s) {
                (Some(at), after) => {
                    let when = jiff::Timestamp::from_second(at)
                        .map(|t| t.to_string())
                        .unwrap_or_else(|_| at.to_string());
                    let _ = writeln!(
                        out,
                        "  resets:   {when} ({} s after {now})",
                        after.map_or_else(|| "?".into(), |s| format!("{s:.0}"))
                    );
                }
                (None, _) => {
                    let _ = writeln!(
                        out,
                        "  resets:   not stated (the watchdog uses its default delay)"
                    );
                }
            }
        }
        None => {
            let _ = writeln!(
                out,
                "verdict: no failure the run died of (the shim keeps the worker's exit code; the watchdog does nothing)"
            );
        }
    }
    if j.candidates.is_empty() {
        let _ = writeln!(out, "\nno signature matched any line");
        return out;
    }
    let _ = writeln!(out, "\ncandidates:");
    let mut ordered: Vec<&Candidate> = j.candidates.iter().collect();
    ordered.sort_by_key(|c| match c.outcome {
        CandidateOutcome::Won => 0,
        CandidateOutcome::Outranked { .. } => 1,
        CandidateOutcome::Rejected(_) => 2,
    });
    for c in ordered {
        let _ = writeln!(
            out,
            "  {:<9} {} [{}{}, priority {}{}] at {}:{}",
            label(&c.outcome),
            c.signature,
            c.class,
            c.provider
                .as_deref()
                .map(|p| format!(", {p}"))
                .unwrap_or_default(),
            c.priority,
            if c.generic { ", generic" } else { "" },
            stream_name(names, c),
            c.line_no
        );
        if c.outcome != CandidateOutcome::Won {
            let _ = writeln!(out, "            {}", c.outcome.describe());
        }
        let _ = writeln!(out, "            | {}", c.line);
    }
    out
}

fn stream_name<'a>(names: &'a [String], c: &Candidate) -> &'a str {
    names.get(c.stream).map_or("?", String::as_str)
}

fn to_json(j: &Judgement, names: &[String], streams: &[String], now: jiff::Timestamp) -> String {
    let candidates: Vec<serde_json::Value> = j
        .candidates
        .iter()
        .map(|c| {
            serde_json::json!({
                "signature": c.signature,
                "class": c.class,
                "provider": c.provider,
                "priority": c.priority,
                "generic": c.generic,
                "stream": names.get(c.stream),
                "line_no": c.line_no,
                "line": c.line,
                "outcome": label(&c.outcome).to_ascii_lowercase(),
                "why": c.outcome.describe(),
            })
        })
        .collect();
    serde_json::json!({
        "now": now.as_second(),
        "inputs": names.iter().zip(streams).map(|(n, t)| serde_json::json!({"name": n, "lines": t.lines().count()})).collect::<Vec<_>>(),
        "verdict": j.winner,
        "candidates": candidates,
    })
    .to_string()
}
