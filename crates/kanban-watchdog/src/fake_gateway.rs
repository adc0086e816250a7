//! A stand-in gateway (being written).
pub fn run(_a: &crate::cli::FakeGatewayArgs) -> anyhow::Result<()> {
    anyhow::bail!("fake gateway not implemented yet")
}
