//! Command-line and environment options. In masquerade mode only the
//! environment variables apply: every argument belongs to the worker.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "worker-shim",
    version,
    about = "Run a worker, pass its output through, classify provider failures, and leave an exit record.",
    after_help = "Exit status: the worker's own code; 128+N when a signal N killed it; the --tempfail-exit code \
when a transient provider failure (rate limit, quota, overload) was detected and the worker exited 0 or 1; \
126 (not executable) or 127 (not found) when it could not be started."
)]
pub struct Options {
    /// Directory for exit records (created 0700 when missing).
    #[arg(long, env = "WORKER_SHIM_RECORD_DIR", value_name = "DIR")]
    pub record_dir: Option<PathBuf>,

    /// Bytes kept from the start of each captured stream.
    #[arg(long, env = "WORKER_SHIM_HEAD_BYTES", default_value_t = 8 * 1024, value_name = "N")]
    pub head_bytes: usize,

    /// Bytes kept from the end of each captured stream (ring buffer).
    #[arg(long, env = "WORKER_SHIM_TAIL_BYTES", default_value_t = 64 * 1024, value_name = "N")]
    pub tail_bytes: usize,

    /// Pass stdout straight through without capturing it (stderr is always captured).
    #[arg(long, env = "WORKER_SHIM_NO_CAPTURE_STDOUT")]
    pub no_capture_stdout: bool,

    /// Extra failure signatures (YAML), added to the built-in catalogue.
    #[arg(long, env = "WORKER_SHIM_SIGNATURES", value_name = "FILE")]
    pub signatures: Option<PathBuf>,

    /// Exit code for a transient provider failure when the worker exited 0 or 1 ("off" to keep the worker's code).
    #[arg(long, env = "WORKER_SHIM_TEMPFAIL_EXIT", default_value = "75", value_parser = parse_tempfail, value_name = "CODE|off")]
    pub tempfail_exit: Tempfail,

    /// When to fsync the record: always, failures (records with a failure or a non-zero exit), never.
    #[arg(long, env = "WORKER_SHIM_FSYNC", default_value = "failures", value_parser = ["always", "failures", "never"])]
    pub fsync: String,

    /// How long to keep reading output after the worker exited, for grandchildren holding the pipes.
    #[arg(
        long,
        env = "WORKER_SHIM_DRAIN_TIMEOUT_MS",
        default_value_t = 2000,
        value_name = "MS"
    )]
    pub drain_timeout_ms: u64,

    /// Provider health published by kanban-watchdog; a Hermes worker whose
    /// primary provider is unhealthy is steered to the fallback named there.
    #[arg(long, env = "WORKER_SHIM_HEALTH_FILE", value_name = "FILE")]
    pub health_file: Option<PathBuf>,

    /// The worker and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tempfail {
    Off,
    Code(i32),
}

fn parse_tempfail(s: &str) -> Result<Tempfail, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Tempfail::Off);
    }
    match s.parse::<i32>() {
        Ok(code) if (0..=255).contains(&code) => Ok(Tempfail::Code(code)),
        _ => Err(format!("expected an exit code 0-255 or \"off\", got {s:?}")),
    }
}
