//! Command-line and environment options. In masquerade mode only the
//! environment variables apply: every argument belongs to the worker.
//!
//! No option can keep the worker from running. Every value is taken as
//! text and checked here: a bad one (`--head-bytes abc`,
//! `WORKER_SHIM_FSYNC=sometimes`) falls back to its default with one
//! warning line, and an unknown option (or one missing its value) is
//! dropped with one warning line. The shim's job is to run the worker; an
//! option only tunes how it watches it. Only `--help` and `--version` end
//! the shim before the worker.
//!
//! Every option is one row of [`OPTIONS`]: its flag, its variable, its
//! value and its help. The parser is a small loop over the words before
//! the command (the shim starts in about a millisecond; a general-purpose
//! parser cost a fifth of that).

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_HEAD_BYTES: usize = 8 * 1024;
pub const DEFAULT_TAIL_BYTES: usize = 64 * 1024;
pub const DEFAULT_TEMPFAIL: Tempfail = Tempfail::Code(75);
pub const DEFAULT_DRAIN_QUIET_MS: u64 = 2000;
pub const DEFAULT_DRAIN_MAX_MS: u64 = 30_000;

/// The options, in the order of [`OPTIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt {
    RecordDir,
    HeadBytes,
    TailBytes,
    NoCaptureStdout,
    Signatures,
    TempfailExit,
    Fsync,
    DrainTimeoutMs,
    DrainMaxMs,
    HealthFile,
}

/// One option of the shim.
struct Spec {
    opt: Opt,
    flag: &'static str,
    env: &'static str,
    /// Shown in the help; `None` for a switch (takes no value; from the
    /// environment 0/false/no/off/n/f/empty mean no, anything else yes).
    value: Option<&'static str>,
    help: &'static str,
}

const OPTIONS: &[Spec] = &[
    Spec {
        opt: Opt::RecordDir,
        flag: "--record-dir",
        env: "WORKER_SHIM_RECORD_DIR",
        value: Some("DIR"),
        help: "Directory for exit records (created 0700 when missing).",
    },
    Spec {
        opt: Opt::HeadBytes,
        flag: "--head-bytes",
        env: "WORKER_SHIM_HEAD_BYTES",
        value: Some("N"),
        help: "Bytes kept from the start of each captured stream [default: 8192].",
    },
    Spec {
        opt: Opt::TailBytes,
        flag: "--tail-bytes",
        env: "WORKER_SHIM_TAIL_BYTES",
        value: Some("N"),
        help: "Bytes kept from the end of each captured stream (ring buffer) [default: 65536].",
    },
    Spec {
        opt: Opt::NoCaptureStdout,
        flag: "--no-capture-stdout",
        env: "WORKER_SHIM_NO_CAPTURE_STDOUT",
        value: None,
        help: "Pass stdout straight through without capturing it (stderr is always captured). \
From the environment, 0/false/no/off/empty mean no, anything else yes.",
    },
    Spec {
        opt: Opt::Signatures,
        flag: "--signatures",
        env: "WORKER_SHIM_SIGNATURES",
        value: Some("FILE"),
        help: "Extra failure signatures (YAML), added to the built-in catalogue.",
    },
    Spec {
        opt: Opt::TempfailExit,
        flag: "--tempfail-exit",
        env: "WORKER_SHIM_TEMPFAIL_EXIT",
        value: Some("CODE|off"),
        help: "Exit code for a transient provider failure when the worker exited 0 or 1 \
(\"off\" to keep the worker's code) [default: 75].",
    },
    Spec {
        opt: Opt::Fsync,
        flag: "--fsync",
        env: "WORKER_SHIM_FSYNC",
        value: Some("WHEN"),
        help: "When to fsync the record: always, failures (records with a failure or a non-zero \
exit), never [default: failures].",
    },
    Spec {
        opt: Opt::DrainTimeoutMs,
        flag: "--drain-timeout-ms",
        env: "WORKER_SHIM_DRAIN_TIMEOUT_MS",
        value: Some("MS"),
        help: "After the worker exited, stop reading its pipes (held open by its background \
children) once they were quiet this long [default: 2000].",
    },
    Spec {
        opt: Opt::DrainMaxMs,
        flag: "--drain-max-ms",
        env: "WORKER_SHIM_DRAIN_MAX_MS",
        value: Some("MS"),
        help: "After the worker exited, stop passing output through after this long in total, \
even to a reader still taking it [default: 30000].",
    },
    Spec {
        opt: Opt::HealthFile,
        flag: "--health-file",
        env: "WORKER_SHIM_HEALTH_FILE",
        value: Some("FILE"),
        help: "Provider health published by kanban-watchdog; a Hermes worker whose primary \
provider is unhealthy is steered to the fallback named there.",
    },
];

const ABOUT: &str =
    "Run a worker, pass its output through, classify provider failures, and leave an exit record.";

const AFTER_HELP: &str = "Exit status: the worker's own code; 128+N when a signal N killed it; the --tempfail-exit code \
when a transient provider failure (rate limit, quota, overload) was detected, the worker exited 0 or 1 and \
the exit record was written; 126 (not executable) or 127 (not found) when it could not be started.\n\n\
A bad option value falls back to its default with one warning line on stderr: no option keeps the worker \
from running.";

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

/// Where a raw value came from, for its warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Flag,
    Env,
}

/// The raw values, one slot per row of [`OPTIONS`]; a flag beats the
/// variable, the last of a repeated flag wins.
#[derive(Default)]
struct Raw {
    values: [Option<(OsString, Source)>; OPTIONS.len()],
}

impl Raw {
    fn get(&self, opt: Opt) -> Option<&(OsString, Source)> {
        self.values.get(opt as usize).and_then(Option::as_ref)
    }

    fn set(&mut self, opt: Opt, value: OsString, source: Source) {
        if let Some(slot) = self.values.get_mut(opt as usize) {
            *slot = Some((value, source));
        }
    }

    /// Fills every option not given as a flag from its variable.
    fn with_environment(mut self, var: impl Fn(&str) -> Option<OsString>) -> Raw {
        for spec in OPTIONS {
            if self.get(spec.opt).is_none()
                && let Some(v) = var(spec.env)
            {
                self.set(spec.opt, v, Source::Env);
            }
        }
        self
    }
}

/// Parses the shim's own command line (`worker-shim [OPTIONS] -- COMMAND`).
/// Returns the options, the worker's argv, and one warning line per
/// ignored option or value. Prints the help or the version and exits for
/// `--help` / `--version` among the options.
pub fn parse_command_line(args: &[OsString]) -> (Options, Vec<OsString>, Vec<String>) {
    match parse_words(args, |k| std::env::var_os(k)) {
        Parsed::Run {
            options,
            command,
            warnings,
        } => (options, command, warnings),
        Parsed::Help => print_and_exit(&help()),
        Parsed::Version => print_and_exit(&format!("worker-shim {}\n", version())),
    }
}

/// Options from the `WORKER_SHIM_*` environment only (masquerade mode).
pub fn from_environment() -> (Options, Vec<String>) {
    let raw = Raw::default().with_environment(|k| std::env::var_os(k));
    let mut warnings = Vec::new();
    let options = Options::resolve(&raw, &mut warnings);
    (options, warnings)
}

/// `--version`: the crate version, the build (`git describe` at build
/// time, when built from a checkout) and the exit-record schema version it
/// writes, e.g. `0.1.0 (build 3cc22eb4f1a2; exit-record schema 1)`, as
/// `kanban-watchdog --version` words it.
pub fn version() -> String {
    let build = env!("WORKER_SHIM_BUILD");
    let build = if build.is_empty() {
        String::new()
    } else {
        format!("build {build}; ")
    };
    format!(
        "{} ({build}exit-record schema {})",
        env!("CARGO_PKG_VERSION"),
        exit_record::SCHEMA_VERSION
    )
}

fn print_and_exit(text: &str) -> ! {
    let mut out = std::io::stdout().lock();
    let ok = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    std::process::exit(if ok.is_ok() { 0 } else { 1 })
}

/// What the words before the command asked for.
#[derive(Debug)]
enum Parsed {
    Run {
        options: Options,
        command: Vec<OsString>,
        warnings: Vec<String>,
    },
    Help,
    Version,
}

/// The options before the command (which starts at its first word that is
/// not an option, or after `--`), then the environment for the rest.
fn parse_words(args: &[OsString], var: impl Fn(&str) -> Option<OsString>) -> Parsed {
    let mut raw = Raw::default();
    let mut warnings = Vec::new();
    let mut command = Vec::new();
    let mut words = args.iter().skip(1).peekable();
    while let Some(word) = words.next() {
        let text = word.to_string_lossy();
        if text == "--" {
            command.extend(words.cloned());
            break;
        }
        if !text.starts_with('-') || text == "-" {
            command.push(word.clone());
            command.extend(words.cloned());
            break;
        }
        match text.as_ref() {
            "-h" | "--help" => return Parsed::Help,
            "-V" | "--version" => return Parsed::Version,
            _ => {}
        }
        let (name, inline) = split_flag(word);
        let Some(spec) = OPTIONS.iter().find(|s| s.flag == name) else {
            warnings.push(format!(
                "ignoring option {text:?}: not an option of worker-shim (see --help; the command follows --)"
            ));
            continue;
        };
        let value = match (spec.value, inline) {
            (None, None) => OsString::from("true"),
            (None, Some(_)) => {
                warnings.push(format!(
                    "ignoring option {text:?}: {} takes no value",
                    spec.flag
                ));
                continue;
            }
            (Some(_), Some(v)) => v,
            (Some(value_name), None) => match words.next_if(|w| takes_as_value(w)) {
                Some(v) => v.clone(),
                None => {
                    warnings.push(format!(
                        "ignoring option {text:?}: a value is required ({} {value_name})",
                        spec.flag
                    ));
                    continue;
                }
            },
        };
        raw.set(spec.opt, value, Source::Flag);
    }
    let raw = raw.with_environment(var);
    let options = Options::resolve(&raw, &mut warnings);
    Parsed::Run {
        options,
        command,
        warnings,
    }
}

/// `--flag=value` as (`--flag`, `value`); else (word, `None`).
fn split_flag(word: &OsStr) -> (String, Option<OsString>) {
    use std::os::unix::ffi::OsStrExt;
    let bytes = word.as_bytes();
    if bytes.starts_with(b"--")
        && let Some(eq) = bytes.iter().position(|&b| b == b'=')
    {
        let name = String::from_utf8_lossy(&bytes[..eq]).into_owned();
        let value = OsStr::from_bytes(&bytes[eq + 1..]).to_os_string();
        return (name, Some(value));
    }
    (word.to_string_lossy().into_owned(), None)
}

/// The word after a flag that needs a value is that value unless it looks
/// like an option (a negative number is a value: its check warns).
fn takes_as_value(word: &OsString) -> bool {
    let text = word.to_string_lossy();
    match text.strip_prefix('-') {
        None => true,
        Some(rest) => rest.starts_with(|c: char| c.is_ascii_digit()),
    }
}

/// The help text, from [`OPTIONS`].
fn help() -> String {
    let mut out =
        format!("{ABOUT}\n\nUsage: worker-shim [OPTIONS] [--] COMMAND [ARG]...\n\nOptions:\n");
    for spec in OPTIONS {
        let usage = match spec.value {
            Some(v) => format!("{} <{v}>", spec.flag),
            None => spec.flag.to_string(),
        };
        out.push_str(&format!(
            "  {usage}\n          {}\n          [env: {}]\n",
            spec.help, spec.env
        ));
    }
    out.push_str(
        "  -h, --help\n          Print help\n  -V, --version\n          Print version\n\n",
    );
    out.push_str(AFTER_HELP);
    out.push('\n');
    out
}

impl Options {
    fn resolve(raw: &Raw, warnings: &mut Vec<String>) -> Options {
        let mut check = Checker { raw, warnings };
        let head_bytes = check.value(
            Opt::HeadBytes,
            parse_count,
            "a byte count",
            DEFAULT_HEAD_BYTES,
        );
        let tail_bytes = check.value(
            Opt::TailBytes,
            parse_count,
            "a byte count",
            DEFAULT_TAIL_BYTES,
        );
        let tempfail_exit = check.value(
            Opt::TempfailExit,
            parse_tempfail,
            "an exit code 0-255 or \"off\"",
            DEFAULT_TEMPFAIL,
        );
        let fsync = check.value(
            Opt::Fsync,
            parse_fsync,
            "always, failures or never",
            Fsync::Failures,
        );
        let drain_quiet_ms = check.value(
            Opt::DrainTimeoutMs,
            parse_ms,
            "milliseconds",
            DEFAULT_DRAIN_QUIET_MS,
        );
        let drain_max_ms = check.value(
            Opt::DrainMaxMs,
            parse_ms,
            "milliseconds",
            DEFAULT_DRAIN_MAX_MS,
        );
        Options {
            record_dir: check.path(Opt::RecordDir),
            head_bytes,
            tail_bytes,
            no_capture_stdout: check.switch(Opt::NoCaptureStdout),
            signatures: check.path(Opt::Signatures),
            tempfail_exit,
            fsync,
            drain_quiet: Duration::from_millis(drain_quiet_ms),
            // The total bound is never shorter than the quiet period.
            drain_max: Duration::from_millis(drain_max_ms.max(drain_quiet_ms)),
            health_file: check.path(Opt::HealthFile),
        }
    }
}

struct Checker<'a> {
    raw: &'a Raw,
    warnings: &'a mut Vec<String>,
}

impl Checker<'_> {
    /// The parsed value, or the default with one warning line. An empty
    /// value (`WORKER_SHIM_HEAD_BYTES=`) means the default, silently.
    fn value<T: std::fmt::Display>(
        &mut self,
        opt: Opt,
        parse: fn(&str) -> Option<T>,
        expected: &str,
        default: T,
    ) -> T {
        let Some((raw, source)) = self
            .raw
            .get(opt)
            .filter(|(r, _)| !r.to_string_lossy().trim().is_empty())
        else {
            return default;
        };
        if let Some(v) = raw.to_str().and_then(|r| parse(r.trim())) {
            return v;
        }
        let shown_value = shown(&raw.to_string_lossy());
        let what = match (spec(opt), source) {
            (Some(s), Source::Env) => format!("{}={shown_value}", s.env),
            (Some(s), Source::Flag) => format!("{} {shown_value}", s.flag),
            (None, _) => shown_value,
        };
        self.warnings.push(format!(
            "ignoring {what}: expected {expected}; using the default {default}"
        ));
        default
    }

    /// A path; empty means none.
    fn path(&self, opt: Opt) -> Option<PathBuf> {
        self.raw
            .get(opt)
            .filter(|(p, _)| !p.is_empty())
            .map(|(p, _)| PathBuf::from(p))
    }

    /// A switch: set as a flag, or a variable that is not 0/false/no/off/n/f/empty.
    fn switch(&self, opt: Opt) -> bool {
        match self.raw.get(opt) {
            None => false,
            Some((_, Source::Flag)) => true,
            Some((v, Source::Env)) => {
                let v = v.to_string_lossy();
                let v = v.trim();
                !(v.is_empty()
                    || ["0", "false", "no", "off", "n", "f"]
                        .iter()
                        .any(|f| v.eq_ignore_ascii_case(f)))
            }
        }
    }
}

fn spec(opt: Opt) -> Option<&'static Spec> {
    OPTIONS.iter().find(|s| s.opt == opt)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<OsString> {
        std::iter::once("worker-shim")
            .chain(w.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn run(w: &[&str], env: &[(&str, &str)]) -> (Options, Vec<OsString>, Vec<String>) {
        let env: Vec<(String, OsString)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        let var = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match parse_words(&words(w), var) {
            Parsed::Run {
                options,
                command,
                warnings,
            } => (options, command, warnings),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    #[test]
    fn the_table_has_one_row_per_option_in_order() {
        for (i, spec) in OPTIONS.iter().enumerate() {
            assert_eq!(spec.opt as usize, i, "{}", spec.flag);
            assert!(spec.flag.starts_with("--") && spec.env.starts_with("WORKER_SHIM_"));
        }
    }

    #[test]
    fn flags_both_forms_and_the_command() {
        let (o, cmd, w) = run(
            &[
                "--head-bytes",
                "10",
                "--tail-bytes=20",
                "--no-capture-stdout",
                "--fsync",
                "never",
                "--record-dir",
                "/r",
                "hermes",
                "--head-bytes",
                "5",
            ],
            &[],
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!((o.head_bytes, o.tail_bytes), (10, 20));
        assert!(o.no_capture_stdout);
        assert_eq!(o.fsync, Fsync::Never);
        assert_eq!(o.record_dir, Some(PathBuf::from("/r")));
        assert_eq!(cmd, words(&["hermes", "--head-bytes", "5"])[1..]);
        let (_, cmd, _) = run(&["--", "--head-bytes", "x"], &[]);
        assert_eq!(cmd, words(&["--head-bytes", "x"])[1..]);
    }

    #[test]
    fn a_flag_beats_its_variable_and_the_last_flag_wins() {
        let env = [
            ("WORKER_SHIM_HEAD_BYTES", "7"),
            ("WORKER_SHIM_TAIL_BYTES", "9"),
        ];
        let (o, _, w) = run(&["--head-bytes", "1", "--head-bytes", "2", "true"], &env);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!((o.head_bytes, o.tail_bytes), (2, 9));
    }

    #[test]
    fn bad_unknown_and_valueless_options_warn_once_each_and_fall_back() {
        let (o, cmd, w) = run(
            &[
                "--bogus",
                "--tail-bytes",
                "-5",
                "--fsync",
                "--head-bytes",
                "abc",
                "--no-capture-stdout=yes",
                "-x",
                "--",
                "true",
            ],
            &[("WORKER_SHIM_TEMPFAIL_EXIT", "banana")],
        );
        assert_eq!(cmd, words(&["true"])[1..]);
        assert_eq!(o.tail_bytes, DEFAULT_TAIL_BYTES);
        assert_eq!(o.head_bytes, DEFAULT_HEAD_BYTES);
        assert_eq!(o.fsync, Fsync::Failures);
        assert_eq!(o.tempfail_exit, DEFAULT_TEMPFAIL);
        assert!(!o.no_capture_stdout);
        let expect = [
            "\"--bogus\"",
            "\"--fsync\"",
            "\"--no-capture-stdout=yes\"",
            "\"-x\"",
            "--head-bytes \"abc\"",
            "--tail-bytes \"-5\"",
            "WORKER_SHIM_TEMPFAIL_EXIT=\"banana\"",
        ];
        assert_eq!(w.len(), expect.len(), "{w:#?}");
        for e in expect {
            assert!(
                w.iter().any(|l| l.starts_with("ignoring") && l.contains(e)),
                "{e}: {w:#?}"
            );
        }
    }

    #[test]
    fn switches_from_the_environment() {
        for (v, yes) in [
            ("1", true),
            ("yes", true),
            ("", false),
            ("0", false),
            ("Off", false),
            ("n", false),
        ] {
            let (o, _, w) = run(&["true"], &[("WORKER_SHIM_NO_CAPTURE_STDOUT", v)]);
            assert_eq!(o.no_capture_stdout, yes, "{v:?}");
            assert!(w.is_empty());
        }
    }

    #[test]
    fn help_and_version_end_the_parse_before_the_command_only() {
        assert!(matches!(
            parse_words(&words(&["--fsync", "never", "--help"]), |_| None),
            Parsed::Help
        ));
        assert!(matches!(
            parse_words(&words(&["-V"]), |_| None),
            Parsed::Version
        ));
        let (_, cmd, _) = run(&["hermes", "--version"], &[]);
        assert_eq!(cmd, words(&["hermes", "--version"])[1..]);
        let text = help();
        for spec in OPTIONS {
            assert!(text.contains(spec.flag) && text.contains(spec.env));
        }
    }

    #[test]
    fn version_names_the_schema() {
        let v = version();
        assert!(v.starts_with(env!("CARGO_PKG_VERSION")), "{v}");
        assert!(
            v.ends_with(&format!(
                "exit-record schema {})",
                exit_record::SCHEMA_VERSION
            )),
            "{v}"
        );
    }
}
