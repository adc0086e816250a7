//! `kanban-watchdog demo` (being written).
pub fn run(_keep: bool) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("demo not implemented yet")
}
