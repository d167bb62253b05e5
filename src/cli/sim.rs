//! `taskdist sim` (being built).

use std::process::ExitCode;

/// Arguments of `taskdist sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {}

/// Run `taskdist sim`.
pub async fn run(_args: SimArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`taskdist sim` is not built yet")
}
