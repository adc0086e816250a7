//! `kanban-watchdog replay` (being written).
pub fn run(
    _common: &crate::cli::Common,
    _records: &std::path::Path,
    _log: Option<&std::path::Path>,
    _board: Option<&std::path::Path>,
) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("replay not implemented yet")
}
