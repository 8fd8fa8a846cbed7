//! `procwatch agent`.

use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct AgentArgs {}

pub fn run(_args: AgentArgs) -> Result<()> {
    anyhow::bail!("procwatch agent is not built yet")
}
