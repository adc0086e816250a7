//! Command-line surface of the `kanban-watchdog` binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// `--version`: the crate version, the build (`git describe` at build
/// time, when built from a checkout) and the exit-record schema version it
/// reads, e.g. `0.1.0 (build 3cc22eb4f1a2; exit-record schema 1)`.
pub fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        let build = env!("KANBAN_WATCHDOG_BUILD");
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
    })
}

#[derive(Debug, Parser)]
#[command(
    name = "kanban-watchdog",
    version = version(),
    about = "Sidecar for the Hermes kanban dispatcher: rescues tasks from transient provider failures, \
tracks provider health, restarts a stalled dispatcher, and alerts."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Common {
    /// Config file (YAML). Without it, the embedded defaults (a stock ~/.hermes install).
    #[arg(long, short = 'c', env = "KANBAN_WATCHDOG_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Hermes root (overrides the config; default $HERMES_HOME, else ~/.hermes).
    #[arg(long, value_name = "DIR")]
    pub hermes_home: Option<PathBuf>,
    /// Exit-record directory (overrides the config; default: worker-shim's default).
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
    /// State directory (overrides the config).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        #[command(flatten)]
        common: Common,
        /// Do everything but write: log each board change and restart it would make.
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate a config file and print the effective configuration.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Show what the watchdog sees (from the running daemon, or its saved state).
    Status {
        #[command(flatten)]
        common: Common,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Provider operations.
    Provider {
        #[command(subcommand)]
        action: ProviderAction,
    },
    /// A self-contained demo: a rate-limited task rescued, then a stalled dispatcher restarted.
    Demo {
        /// Keep the demo's temporary directory for inspection.
        #[arg(long)]
        keep: bool,
    },
    /// Replay an incident's records and gateway log; print what the watchdog would have done.
    Replay {
        #[command(flatten)]
        common: Common,
        /// Directory of exit records (also reads done/ and quarantine/).
        #[arg(long, value_name = "DIR")]
        records: PathBuf,
        /// Gateway log (rotated siblings .1, .2, ... are read too).
        #[arg(long, value_name = "FILE")]
        gateway_log: Option<PathBuf>,
        /// Board to read task state from (opened read-only).
        #[arg(long, value_name = "DB")]
        board: Option<PathBuf>,
    },
    /// Judge a worker's output like the shim does: which signature matched on which
    /// line, class, provider, reset time, and why the other candidates lost.
    /// Exit 0: a failure found; 1: none; 2: bad input.
    Explain(crate::explain::ExplainArgs),
    /// Wire worker-shim into a Hermes install via HERMES_BIN (idempotent; --undo removes it).
    Wire {
        #[command(subcommand)]
        target: WireTarget,
    },
    /// A stand-in for the Hermes gateway's dispatcher (for tests and the demo).
    #[command(hide = true)]
    FakeGateway(crate::cli::FakeGatewayArgs),
    /// Shell completions and man pages, generated from these definitions.
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        target: crate::generate::GenerateTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProviderAction {
    /// Mark a provider healthy again (after a manual re-auth).
    Reset {
        #[command(flatten)]
        common: Common,
        /// Provider name, e.g. xai-oauth.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum WireTarget {
    /// Point the Hermes gateway's HERMES_BIN at worker-shim (in <HERMES_HOME>/.env).
    Hermes {
        /// Hermes root (default $HERMES_HOME, else ~/.hermes).
        #[arg(long, value_name = "DIR")]
        hermes_home: Option<PathBuf>,
        /// The worker-shim binary (default: next to this binary, else on PATH).
        #[arg(long, value_name = "PATH")]
        shim: Option<PathBuf>,
        /// The real hermes executable (default: `hermes` on PATH).
        #[arg(long, value_name = "PATH")]
        hermes: Option<PathBuf>,
        /// Exit-record directory for the shim (default: the shared default).
        #[arg(long, value_name = "DIR")]
        record_dir: Option<PathBuf>,
        /// Remove the wiring.
        #[arg(long)]
        undo: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct FakeGatewayArgs {
    /// Board database.
    #[arg(long)]
    pub board: PathBuf,
    /// Log file to write Hermes-format lines to.
    #[arg(long)]
    pub log: PathBuf,
    /// gateway.pid to write (JSON, like Hermes).
    #[arg(long)]
    pub pid_file: PathBuf,
    /// Tick interval in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub interval_ms: u64,
    /// Replace a running fake gateway named by the pid file (like `hermes gateway run --replace`).
    #[arg(long)]
    pub replace: bool,
    /// Worker command run for each claimed task (argv, after --); default: complete the task at once.
    #[arg(last = true)]
    pub worker: Vec<String>,
}
