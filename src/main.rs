//! The `taskdist` command line: parses arguments, sets up logging and calls the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Distribute real-time task-set variants to Genode targets or simulated targets and collect
/// every job event.
#[derive(Debug, Parser)]
#[command(name = "taskdist", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Find reachable targets in address ranges (prints one address per line).
    Discover(cli::discover::DiscoverArgs),
    /// Run simulated targets on 127.0.0.x that speak the target protocol.
    Sim(cli::sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Discover(args) => cli::discover::run(args).await,
            Command::Sim(args) => cli::sim::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
