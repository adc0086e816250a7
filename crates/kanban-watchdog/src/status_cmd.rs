//! `kanban-watchdog status` (being written).
pub fn status(_c: &crate::cli::Common, _json: bool) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("status not implemented yet")
}
