//! Command-line and environment options. In masquerade mode only the
//! environment variables apply: every argument belongs to the worker.
//!
//! No option can keep the worker from running. Every value is taken as
//! text and checked here, not by clap: a bad one (`--head-bytes abc`,
//! `WORKER_SHIM_FSYNC=sometimes`) falls back to its default with one
//! warning line, and an unknown option is dropped with one warning line.
//! The shim's job is to run the worker; an option only tunes how it
//! watches it. Only `--help` and `--version` end the shim before the worker.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

pub const DEFAULT_HEAD_BYTES: usize = 8 * 1024;
pub const DEFAULT_TAIL_BYTES: usize = 64 * 1024;
pub const DEFAULT_TEMPFAIL: Tempfail = Tempfail::Code(75);
pub const DEFAULT_DRAIN_QUIET_MS: u64 = 2000;
pub const DEFAULT_DRAIN_MAX_MS: u64 = 30_000;

/// What clap parses: every value as text, checked by [`Options::resolve`].
#[derive(Debug, Default, Parser)]
#[command(
    name = "worker-shim",
    version,
    args_override_self = true,
    about = "Run a worker, pass its output through, classify provider failures, and leave an exit record.",
    after_help = "Exit status: the worker's own code; 128+N when a signal N killed it; the --tempfail-exit code \
when a transient provider failure (rate limit, quota, overload) was detected, the worker exited 0 or 1 and \
the exit record was written; 126 (not executable) or 127 (not found) when it could not be started.\n\n\
A bad option value falls back to its default with one warning line on stderr: no option keeps the worker \
from running."
)]
struct Args {
    /// Directory for exit records (created 0700 when missing).
    #[arg(long, env = "WORKER_SHIM_RECORD_DIR", value_name = "DIR")]
    record_dir: Option<PathBuf>,

    /// Bytes kept from the start of each captured stream [default: 8192].
    #[arg(
        long,
        env = "WORKER_SHIM_HEAD_BYTES",
        allow_negative_numbers = true,
        value_name = "N"
    )]
    head_bytes: Option<OsString>,

    /// Bytes kept from the end of each captured stream (ring buffer) [default: 65536].
    #[arg(
        long,
        env = "WORKER_SHIM_TAIL_BYTES",
        allow_negative_numbers = true,
        value_name = "N"
    )]
    tail_bytes: Option<OsString>,

    /// Pass stdout straight through without capturing it (stderr is always captured).
    /// From the environment, 0/false/no/off/empty mean no, anything else yes.
    #[arg(long, env = "WORKER_SHIM_NO_CAPTURE_STDOUT", value_parser = clap::builder::FalseyValueParser::new())]
    no_capture_stdout: bool,

    /// Extra failure signatures (YAML), added to the built-in catalogue.
    #[arg(long, env = "WORKER_SHIM_SIGNATURES", value_name = "FILE")]
    signatures: Option<PathBuf>,

    /// Exit code for a transient provider failure when the worker exited 0 or 1 ("off" to keep the worker's code) [default: 75].
    #[arg(
        long,
        env = "WORKER_SHIM_TEMPFAIL_EXIT",
        allow_negative_numbers = true,
        value_name = "CODE|off"
    )]
    tempfail_exit: Option<OsString>,

    /// When to fsync the record: always, failures (records with a failure or a non-zero exit), never [default: failures].
    #[arg(
        long,
        env = "WORKER_SHIM_FSYNC",
        allow_negative_numbers = true,
        value_name = "WHEN"
    )]
    fsync: Option<OsString>,

    /// After the worker exited, stop reading its pipes (held open by its
    /// background children) once they were quiet this long [default: 2000].
    #[arg(
        long,
        env = "WORKER_SHIM_DRAIN_TIMEOUT_MS",
        allow_negative_numbers = true,
        value_name = "MS"
    )]
    drain_timeout_ms: Option<OsString>,

    /// After the worker exited, stop passing output through after this long
    /// in total, even to a reader still taking it [default: 30000].
    #[arg(
        long,
        env = "WORKER_SHIM_DRAIN_MAX_MS",
        allow_negative_numbers = true,
        value_name = "MS"
    )]
    drain_max_ms: Option<OsString>,

    /// Provider health published by kanban-watchdog; a Hermes worker whose
    /// primary provider is unhealthy is steered to the fallback named there.
    #[arg(long, env = "WORKER_SHIM_HEALTH_FILE", value_name = "FILE")]
    health_file: Option<PathBuf>,

    /// The worker and its arguments.
    /// (No `allow_hyphen_values`: an unknown option of ours before the
    /// command must be an error that `parse_command_line` drops, not the
    /// start of the command. After the command's first word, or after
    /// `--`, every word is the worker's.)
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// The checked options.
#[derive(Debug, Clone)]
pub struct Options {
    pub record_dir: Option<PathBuf>,
    pub head_bytes: usize,
    pub tail_bytes: usize,
    pub no_capture_stdout: bool,
    pub signatures: Option<PathBuf>,
    pub tempfail_exit: Tempfail,
    pub fsync: Fsync,
    /// End the drain once the pipes were quiet this long.
    pub drain_quiet: Duration,
    /// End the drain after this long in total.
    pub drain_max: Duration,
    pub health_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tempfail {
    Off,
    Code(i32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    Always,
    Failures,
    Never,
}

/// Parses the shim's own command line (`worker-shim [OPTIONS] -- COMMAND`).
/// Returns the options, the worker's argv, and one warning line per
/// ignored option or value.
pub fn parse_command_line(args: &[OsString]) -> (Options, Vec<OsString>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut args = args.to_vec();
    // Each round drops one offending argument; bounded by their number.
    for _ in 0..=args.len() {
        match Args::command().try_get_matches_from(&args) {
            Ok(m) => return from_matches(&m, warnings),
            Err(e) => {
                if matches!(
                    e.kind(),
                    ErrorKind::DisplayHelp
                        | ErrorKind::DisplayVersion
                        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                ) {
                    e.exit();
                }
                let what = first_line(&e);
                match drop_offending(&mut args, &e) {
                    Some(dropped) => {
                        warnings.push(format!("ignoring option {dropped:?}: {what}"));
                    }
                    None => break,
                }
            }
        }
    }
    // Could not tell which argument is wrong: the command is what follows
    // the first `--` (or the first non-option), the options come from the
    // environment only.
    let rest: Vec<OsString> = args.iter().skip(1).cloned().collect();
    let command: Vec<OsString> = match rest.iter().position(|a| a == "--") {
        Some(i) => rest[i + 1..].to_vec(),
        None => rest
            .iter()
            .skip_while(|a| a.to_string_lossy().starts_with('-'))
            .cloned()
            .collect(),
    };
    warnings.push("ignoring every command-line option (they could not be parsed)".into());
    let (opts, mut more) = from_environment();
    warnings.append(&mut more);
    (opts, command, warnings)
}

/// Options from the `WORKER_SHIM_*` environment only (masquerade mode).
pub fn from_environment() -> (Options, Vec<String>) {
    match Args::command().try_get_matches_from([crate::target::SHIM_NAME]) {
        Ok(m) => {
            let (opts, _, warnings) = from_matches(&m, Vec::new());
            (opts, warnings)
        }
        // Text values cannot fail to parse; keep the defaults regardless.
        Err(e) => (
            Options::resolve(Args::default(), |_| Source::Default, &mut Vec::new()),
            vec![format!(
                "ignoring WORKER_SHIM_* settings: {}",
                first_line(&e)
            )],
        ),
    }
}

fn from_matches(
    m: &ArgMatches,
    mut warnings: Vec<String>,
) -> (Options, Vec<OsString>, Vec<String>) {
    match Args::from_arg_matches(m) {
        Ok(mut args) => {
            let command = std::mem::take(&mut args.command);
            let source = |id: &str| match m.value_source(id) {
                Some(ValueSource::EnvVariable) => Source::Env,
                Some(ValueSource::CommandLine) => Source::Flag,
                _ => Source::Default,
            };
            let opts = Options::resolve(args, source, &mut warnings);
            (opts, command, warnings)
        }
        Err(e) => {
            warnings.push(format!("ignoring options: {}", first_line(&e)));
            let opts = Options::resolve(Args::default(), |_| Source::Default, &mut warnings);
            (opts, Vec::new(), warnings)
        }
    }
}

#[derive(Clone, Copy)]
enum Source {
    Flag,
    Env,
    Default,
}

impl Options {
    fn resolve(args: Args, source: impl Fn(&str) -> Source, warnings: &mut Vec<String>) -> Options {
        let mut check = Checker {
            source: &source,
            warnings,
        };
        let head_bytes = check.value(
            Setting::new("head_bytes", "--head-bytes", "WORKER_SHIM_HEAD_BYTES"),
            args.head_bytes,
            parse_count,
            "a byte count",
            DEFAULT_HEAD_BYTES,
        );
        let tail_bytes = check.value(
            Setting::new("tail_bytes", "--tail-bytes", "WORKER_SHIM_TAIL_BYTES"),
            args.tail_bytes,
            parse_count,
            "a byte count",
            DEFAULT_TAIL_BYTES,
        );
        let tempfail_exit = check.value(
            Setting::new(
                "tempfail_exit",
                "--tempfail-exit",
                "WORKER_SHIM_TEMPFAIL_EXIT",
            ),
            args.tempfail_exit,
            parse_tempfail,
            "an exit code 0-255 or \"off\"",
            DEFAULT_TEMPFAIL,
        );
        let fsync = check.value(
            Setting::new("fsync", "--fsync", "WORKER_SHIM_FSYNC"),
            args.fsync,
            parse_fsync,
            "always, failures or never",
            Fsync::Failures,
        );
        let drain_quiet_ms = check.value(
            Setting::new(
                "drain_timeout_ms",
                "--drain-timeout-ms",
                "WORKER_SHIM_DRAIN_TIMEOUT_MS",
            ),
            args.drain_timeout_ms,
            parse_ms,
            "milliseconds",
            DEFAULT_DRAIN_QUIET_MS,
        );
        let drain_max_ms = check.value(
            Setting::new("drain_max_ms", "--drain-max-ms", "WORKER_SHIM_DRAIN_MAX_MS"),
            args.drain_max_ms,
            parse_ms,
            "milliseconds",
            DEFAULT_DRAIN_MAX_MS,
        );
        Options {
            record_dir: args.record_dir.filter(|p| !p.as_os_str().is_empty()),
            head_bytes,
            tail_bytes,
            no_capture_stdout: args.no_capture_stdout,
            signatures: args.signatures.filter(|p| !p.as_os_str().is_empty()),
            tempfail_exit,
            fsync,
            drain_quiet: Duration::from_millis(drain_quiet_ms),
            // The total bound is never shorter than the quiet period.
            drain_max: Duration::from_millis(drain_max_ms.max(drain_quiet_ms)),
            health_file: args.health_file.filter(|p| !p.as_os_str().is_empty()),
        }
    }
}

/// One option's names, for its warning.
struct Setting {
    id: &'static str,
    flag: &'static str,
    env: &'static str,
}

impl Setting {
    fn new(id: &'static str, flag: &'static str, env: &'static str) -> Setting {
        Setting { id, flag, env }
    }
}

struct Checker<'a> {
    source: &'a dyn Fn(&str) -> Source,
    warnings: &'a mut Vec<String>,
}

impl Checker<'_> {
    /// The parsed value, or the default with one warning line. An empty
    /// value (`WORKER_SHIM_HEAD_BYTES=`) means the default, silently.
    fn value<T: std::fmt::Display>(
        &mut self,
        setting: Setting,
        raw: Option<OsString>,
        parse: fn(&str) -> Option<T>,
        expected: &str,
        default: T,
    ) -> T {
        // Taken as OsString so that not even invalid UTF-8 is a clap error.
        let Some(raw) = raw.filter(|r| !r.to_string_lossy().trim().is_empty()) else {
            return default;
        };
        if let Some(v) = raw.to_str().and_then(|r| parse(r.trim())) {
            return v;
        }
        let raw = raw.to_string_lossy();
        let what = match (self.source)(setting.id) {
            Source::Env => format!("{}={}", setting.env, shown(&raw)),
            _ => format!("{} {}", setting.flag, shown(&raw)),
        };
        self.warnings.push(format!(
            "ignoring {what}: expected {expected}; using the default {default}"
        ));
        default
    }
}

impl std::fmt::Display for Tempfail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tempfail::Off => f.write_str("off"),
            Tempfail::Code(c) => write!(f, "{c}"),
        }
    }
}

impl std::fmt::Display for Fsync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fsync::Always => "always",
            Fsync::Failures => "failures",
            Fsync::Never => "never",
        })
    }
}

fn parse_tempfail(s: &str) -> Option<Tempfail> {
    if s.eq_ignore_ascii_case("off") {
        return Some(Tempfail::Off);
    }
    s.parse::<i32>()
        .ok()
        .filter(|c| (0..=255).contains(c))
        .map(Tempfail::Code)
}

fn parse_fsync(s: &str) -> Option<Fsync> {
    match s.to_ascii_lowercase().as_str() {
        "always" => Some(Fsync::Always),
        "failures" => Some(Fsync::Failures),
        "never" => Some(Fsync::Never),
        _ => None,
    }
}

/// Milliseconds; larger than a day is taken as a day (a drain is bounded).
fn parse_ms(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().map(|ms| ms.min(86_400_000))
}

fn parse_count(s: &str) -> Option<usize> {
    s.trim().parse().ok()
}

/// A value as shown in a warning: quoted, escaped, at most 64 characters.
fn shown(value: &str) -> String {
    let cut: String = value.chars().take(64).collect();
    if cut.len() < value.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

fn first_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// Removes the argument clap complained about from the options part of
/// `args` (before the first `--`); returns it.
fn drop_offending(args: &mut Vec<OsString>, e: &clap::Error) -> Option<String> {
    let ContextValue::String(invalid) = e.get(ContextKind::InvalidArg)? else {
        return None;
    };
    // "--head-bytes <N>" for a missing value: the flag is the first word.
    let flag = invalid.split_whitespace().next()?.to_string();
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let at = (1..end).find(|&i| {
        let a = args[i].to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    })?;
    Some(args.remove(at).to_string_lossy().into_owned())
}
