//! `taskdist discover` (being built).

use std::process::ExitCode;

/// Arguments of `taskdist discover`.
#[derive(Debug, clap::Args)]
pub struct DiscoverArgs {}

/// Run `taskdist discover`.
pub async fn run(_args: DiscoverArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`taskdist discover` is not built yet")
}
