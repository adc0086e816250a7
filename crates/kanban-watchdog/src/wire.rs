//! `kanban-watchdog wire hermes` (being written).
pub struct WireOptions {
    pub hermes_home: Option<std::path::PathBuf>,
    pub shim: Option<std::path::PathBuf>,
    pub hermes: Option<std::path::PathBuf>,
    pub record_dir: Option<std::path::PathBuf>,
    pub undo: bool,
}
pub fn hermes(_o: WireOptions) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("wire not implemented yet")
}
