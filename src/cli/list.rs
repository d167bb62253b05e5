//! `taskdist list`: what is available, with one-line descriptions.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use taskdist::pool::strategy;
use taskdist::tasksets::catalog;

/// Arguments of `taskdist list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// What to list; everything when left out.
    #[arg(value_enum)]
    pub what: Option<ListWhat>,
}

/// The lists `taskdist list` can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListWhat {
    /// Task-set specs of the built-in catalog.
    Tasksets,
    /// Result handlers for `run --handler`.
    Handlers,
    /// Target protocol dialects for `--dialect`.
    Dialects,
    /// Distribution strategies for `run --strategy`.
    Strategies,
}

/// Run `taskdist list`.
pub async fn run(args: ListArgs) -> anyhow::Result<ExitCode> {
    let all = args.what.is_none();
    let mut out = String::new();
    if all || args.what == Some(ListWhat::Tasksets) {
        if all {
            out.push_str("tasksets (catalog names for `taskdist run NAME`):\n");
        }
        let width = catalog::entries()
            .iter()
            .map(|e| e.name.len())
            .max()
            .unwrap_or(0);
        for e in catalog::entries() {
            out.push_str(&format!("  {:width$}  {}\n", e.name, e.description));
        }
    }
    if all || args.what == Some(ListWhat::Handlers) {
        if all {
            out.push_str("handlers (for `--handler`):\n");
        }
        for (name, desc) in HANDLERS {
            out.push_str(&format!("  {name:8}  {desc}\n"));
        }
    }
    if all || args.what == Some(ListWhat::Dialects) {
        if all {
            out.push_str("dialects (for `--dialect`):\n");
        }
        for (name, desc) in DIALECTS {
            out.push_str(&format!("  {name:3}  {desc}\n"));
        }
    }
    if all || args.what == Some(ListWhat::Strategies) {
        if all {
            out.push_str(&format!(
                "strategies (for `--strategy`, combine with commas; default {}):\n",
                strategy::DEFAULT_STRATEGY
            ));
        }
        for (name, desc) in strategy::STRATEGIES {
            out.push_str(&format!("  {name:14}  {desc}\n"));
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

const HANDLERS: &[(&str, &str)] = &[
    (
        "csv",
        "events.csv, jobs.csv, variants.csv, tasks.csv and run.json in --out",
    ),
    (
        "jsonl",
        "results.jsonl in --out, one JSON object per variant with its tasks, events and jobs",
    ),
    (
        "sqlite",
        "results.sqlite in --out, the CSV tables with keys and indexes",
    ),
    (
        "console",
        "a summary of outcomes and event types on standard error",
    ),
];

const DIALECTS: &[(&str, &str)] = &[
    (
        "v1",
        "dom0-HW master (2017): OPTIMIZE admission control; events not pushed, taskdist polls GET_PROFILE",
    ),
    (
        "v2",
        "dom0-HW 1608 (2018-06): profile events pushed; no OPTIMIZE",
    ),
    (
        "v3",
        "dom0-HW 1802 (2018-10, default): v2 plus AVAILABLE, caps, cores, coreoffset",
    ),
];
