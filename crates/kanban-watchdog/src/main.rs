use std::process::ExitCode;

use clap::Parser;
use kanban_watchdog::cli::{Cli, Command, LogFormat, ProviderAction, WireTarget};
use tracing_subscriber::EnvFilter;

// The demo and its stand-in gateway are the binary's own, not part of the
// `kanban_watchdog` library the daemon links.
mod demo;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kanban-watchdog: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    use kanban_watchdog::*;
    match command {
        Command::Run { common, dry_run } => run::run(&common, dry_run).map(|()| ExitCode::SUCCESS),
        Command::CheckConfig { file } => {
            let cfg = config::Config::load(&file)?;
            let paths = paths::Paths::resolve(&cfg);
            println!("# {}: valid", file.display());
            print!("{}", cfg.to_yaml());
            println!("# resolved paths:");
            print!("{}", serde_yaml::to_string(&paths).unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { common, json } => status_cmd::status(&common, json),
        Command::Provider {
            action: ProviderAction::Reset { common, name },
        } => {
            let (cfg, _) = run::load_config(&common)?;
            let paths = paths::Paths::resolve(&cfg);
            let path = requests::submit(
                &paths.requests_dir(),
                &requests::Request::ProviderReset {
                    provider: name.clone(),
                },
            )?;
            println!(
                "requested reset of provider {name} ({}); a running watchdog applies it within a second, a stopped one at its next start",
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { keep } => demo::run(keep),
        Command::Explain(args) => explain::run(&args),
        Command::Replay {
            common,
            records,
            gateway_log,
            board,
        } => replay::run(&common, &records, gateway_log.as_deref(), board.as_deref()),
        Command::Wire {
            target:
                WireTarget::Hermes {
                    hermes_home,
                    shim,
                    hermes,
                    record_dir,
                    undo,
                },
        } => wire::hermes(wire::WireOptions {
            hermes_home,
            shim,
            hermes,
            record_dir,
            undo,
        }),
        Command::FakeGateway(args) => demo::fake_gateway::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Generate { target } => generate::run(&target).map(|()| ExitCode::SUCCESS),
    }
}
