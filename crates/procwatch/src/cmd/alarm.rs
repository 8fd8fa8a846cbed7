//! `procwatch alarm`.

use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct AlarmArgs {}

pub fn run(_args: AlarmArgs) -> Result<()> {
    anyhow::bail!("procwatch alarm is not built yet")
}
