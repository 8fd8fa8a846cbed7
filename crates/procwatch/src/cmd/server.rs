//! `procwatch server`.

use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct ServerArgs {}

pub fn run(_args: ServerArgs) -> Result<()> {
    anyhow::bail!("procwatch server is not built yet")
}
