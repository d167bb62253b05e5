//! The `taskdist` command line: parses arguments, sets up logging and calls the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Distribute real-time task-set variants to Genode targets or simulated targets and collect
/// every job event.
#[derive(Debug, Parser)]
#[command(name = "taskdist", version, about, long_about = None)]
struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides both flags.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, display_order = 900)]
    verbose: u8,
    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, display_order = 901)]
    quiet: u8,
    #[command(subcommand)]
    command: Command,
}

/// Log to standard error at the level chosen by -v/-q, unless RUST_LOG is set.
fn init_logging(verbose: u8, quiet: u8) {
    let level = match i16::from(verbose) - i16::from(quiet) {
        i16::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,taskdist={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false)
        .init();
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a task-set spec's variants on targets (or on --simulate N built-in simulated targets)
    /// and write every job event.
    #[command(after_help = "Examples:\n  \
        taskdist run hey --simulate 4 --out results\n  \
        taskdist run my-spec.toml 10.200.45.0/24 --binaries bins --out run1\n  \
        taskdist run my-spec.toml 10.200.45.0/24 --binaries bins --resume run1")]
    Run(Box<cli::run::RunArgs>),
    /// List catalog task-sets, result handlers, protocol dialects and distribution strategies.
    List(cli::list::ListArgs),
    /// Find reachable targets in address ranges (prints one address per line).
    Discover(cli::discover::DiscoverArgs),
    /// Run simulated targets on 127.0.0.x that speak the target protocol.
    Sim(cli::sim::SimArgs),
    /// Run the lab service: one pool, experiments submitted over HTTP, a dashboard.
    #[command(after_help = "Example:\n  taskdist serve --simulate 8 --data lab")]
    Serve(cli::service::ServeArgs),
    /// Submit an experiment to the service (prints its id).
    Submit(cli::service::SubmitArgs),
    /// Show the service's experiments, or follow one with --watch.
    Status(cli::service::StatusArgs),
    /// Pause an experiment of the service (running variants finish).
    Pause(cli::service::ActArgs),
    /// Resume a paused experiment of the service.
    Resume(cli::service::ActArgs),
    /// Cancel an experiment of the service (its results so far stay).
    Cancel(cli::service::ActArgs),
    /// Run the bad variants of a done experiment of the service again.
    RetryBad(cli::service::ActArgs),
    /// List the service's targets, or drain, quarantine or release one.
    Targets(cli::service::TargetsArgs),
    /// Download an experiment's result files from the service.
    Results(cli::service::ResultsArgs),
    /// Write an HTML report (or SVG/PNG charts) of a result directory: overview, schedulability,
    /// response times, deadline misses and Gantt charts.
    #[command(after_help = "Examples:\n  \
        taskdist report results --out report.html\n  \
        taskdist report results --variant 3 --variant 7 --by tasks\n  \
        taskdist report results --format svg --out charts\n  \
        taskdist report results --format png --out charts")]
    Report(cli::report::ReportArgs),
    /// Print one variant of a result directory: its task-set and its jobs, as tables.
    Show(cli::report::ShowArgs),
    /// Write a shared experiment's results from a PostgreSQL store (`taskdist run --store`)
    /// as the files of a local run.
    Export(cli::store::ExportArgs),
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`taskdist targets | head`), as other Unix tools do,
    // instead of failing a print.
    #[cfg(unix)]
    // SAFETY: restores the default action of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_RUNTIME);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Run(args) => cli::run::run(*args).await,
            Command::List(args) => cli::list::run(args).await,
            Command::Discover(args) => cli::discover::run(args).await,
            Command::Sim(args) => cli::sim::run(args).await,
            Command::Serve(args) => cli::service::serve(args).await,
            Command::Submit(args) => cli::service::submit(args).await,
            Command::Status(args) => cli::service::status(args).await,
            Command::Pause(args) => cli::service::act(args, "pause").await,
            Command::Resume(args) => cli::service::act(args, "resume").await,
            Command::Cancel(args) => cli::service::act(args, "cancel").await,
            Command::RetryBad(args) => cli::service::act(args, "retry-bad").await,
            Command::Targets(args) => cli::service::targets(args).await,
            Command::Results(args) => cli::service::results(args).await,
            Command::Report(args) => cli::report::run(args).await,
            Command::Show(args) => cli::report::show(args).await,
            Command::Export(args) => cli::store::export(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cli::exit_code(&e))
        }
    }
}
