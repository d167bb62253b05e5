//! `taskdist report` and `taskdist show`: look at a result directory.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use taskdist::handlers::reader::OutcomeKind;
use taskdist::report::{self, ReportOptions, VariantDetail, XAttr};
use taskdist::tasksets::Task;

use super::{UsageError, EXIT_OK};

/// Output formats of `taskdist report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// One self-contained HTML file with inline SVG charts.
    Html,
    /// One SVG file per chart in the --out directory.
    Svg,
    /// One PNG file per chart in the --out directory (rendered by resvg at 2x, system fonts).
    Png,
}

/// Arguments of `taskdist report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Result directory of a run (CSV files, or results.sqlite).
    pub dir: PathBuf,
    /// Output: the HTML file (--format html) or a directory for the chart files (svg, png).
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
    /// Draw this variant's schedule as a Gantt chart (repeatable). Without it, the report picks
    /// the variants with the worst response time, the most deadline misses and an abnormal end.
    #[arg(long = "variant", value_name = "N")]
    pub variants: Vec<u64>,
    /// The x axis of the schedulability and deadline-miss charts: utilisation, tasks, or
    /// COLUMN@TASK_ID for a numeric tasks.csv column of one task (e.g. period_ms@0).
    #[arg(long, default_value = "utilisation", value_name = "ATTR")]
    pub by: String,
    /// Bin width on that axis [default: 0.1 for utilisation, else one bin per value up to 25
    /// values, else 20 bins].
    #[arg(long, value_name = "W")]
    pub bin_width: Option<f64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
    pub format: ReportFormat,
}

/// Arguments of `taskdist show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Result directory of a run.
    pub dir: PathBuf,
    /// The variant to show.
    #[arg(long, value_name = "N")]
    pub variant: u64,
}

/// Run `taskdist report`.
pub async fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let by: XAttr = args.by.parse()?;
    let opts = ReportOptions {
        variants: args.variants.clone(),
        by,
        bin_width: args.bin_width,
        ..ReportOptions::default()
    };
    // Reading, rendering and writing are blocking work: off the async workers.
    tokio::task::spawn_blocking(move || write_report(&args, &opts))
        .await
        .context("report task failed")??;
    Ok(ExitCode::from(EXIT_OK))
}

fn write_report(args: &ReportArgs, opts: &ReportOptions) -> anyhow::Result<()> {
    if args.format != ReportFormat::Html && args.out.exists() && !args.out.is_dir() {
        return Err(UsageError(format!(
            "--out {}: exists and is not a directory; --format svg and png write one file per chart into a directory",
            args.out.display()
        ))
        .into());
    }
    let analysis = report::analyse(&args.dir, opts)?;
    match args.format {
        ReportFormat::Html => {
            let html = report::render_html(&analysis);
            std::fs::write(&args.out, html)
                .with_context(|| format!("cannot write {}", args.out.display()))?;
            println!("{}", args.out.display());
        }
        ReportFormat::Svg => {
            std::fs::create_dir_all(&args.out)
                .with_context(|| format!("cannot create {}", args.out.display()))?;
            for (name, svg) in report::chart_files(&analysis) {
                let p = args.out.join(name);
                std::fs::write(&p, svg).with_context(|| format!("cannot write {}", p.display()))?;
                println!("{}", p.display());
            }
        }
        ReportFormat::Png => {
            std::fs::create_dir_all(&args.out)
                .with_context(|| format!("cannot create {}", args.out.display()))?;
            let renderer = report::PngRenderer::new();
            if renderer.fonts() == 0 {
                tracing::warn!("no system fonts found: the PNG charts have no text");
            }
            for c in report::charts(&analysis) {
                let png = renderer.render(&c.id, &c.svg)?;
                let p = args.out.join(format!("{}.png", c.id));
                std::fs::write(&p, png).with_context(|| format!("cannot write {}", p.display()))?;
                println!("{}", p.display());
            }
        }
    }
    Ok(())
}

/// Run `taskdist show`.
pub async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.clone();
    let v = args.variant;
    let d = tokio::task::spawn_blocking(move || report::show(&dir, v))
        .await
        .context("show task failed")??;
    print!("{}", format_detail(&d));
    Ok(ExitCode::from(EXIT_OK))
}

fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut o = String::new();
    let line = |o: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut first = true;
        for (i, c) in cells.enumerate() {
            if !first {
                o.push_str("  ");
            }
            first = false;
            let _ = write!(o, "{c:>width$}", width = w[i]);
        }
        o.push('\n');
    };
    line(&mut o, &mut head.iter().copied());
    for r in rows {
        line(&mut o, &mut r.iter().map(String::as_str));
    }
    o
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The text `taskdist show` prints.
pub fn format_detail(d: &VariantDetail) -> String {
    let r = &d.row;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "variant {}: {} on {} (attempt {}), {} tasks, {} events, {:.3} s{}",
        r.variant,
        match r.outcome {
            OutcomeKind::Done =>
                if d.schedulable {
                    "done, schedulable"
                } else {
                    "done, not schedulable"
                },
            OutcomeKind::Bad => "bad",
        },
        r.target,
        r.attempts,
        r.tasks,
        r.events,
        r.duration_us as f64 / 1e6,
        r.reason
            .as_deref()
            .map(|s| format!(", reason: {s}"))
            .unwrap_or_default()
    );
    let tasks: Vec<Vec<String>> = d
        .tasks
        .iter()
        .map(|t| {
            let task: Task = t.to_task();
            vec![
                t.task_id.to_string(),
                t.pkg.clone(),
                t.priority.to_string(),
                t.period_ms.to_string(),
                report::relative_deadline(t).to_string(),
                t.offset_ms.to_string(),
                t.executiontime_ms.to_string(),
                t.criticaltime_ms.to_string(),
                t.numberofjobs.to_string(),
                format!("{}+{}", t.coreoffset, t.cores),
                task.config
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(";"),
            ]
        })
        .collect();
    o.push_str("\ntasks (ms):\n");
    o.push_str(&table(
        &[
            "task", "pkg", "prio", "period", "deadline", "offset", "wcet", "critical", "jobs",
            "cores", "config",
        ],
        &tasks,
    ));
    let jobs: Vec<Vec<String>> = d
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.task_id.to_string(),
                j.job.to_string(),
                opt(j.release_ms),
                opt(j.start_ms),
                opt(j.end_ms),
                j.exit
                    .as_ref()
                    .map_or("-".into(), |k| k.as_wire().to_owned()),
                opt(j.execution_ms),
                opt(j.response_ms),
                opt(j.deadline_ms),
                if j.missed {
                    "MISS".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    o.push_str("\njobs (target ms):\n");
    o.push_str(&table(
        &[
            "task", "job", "release", "start", "end", "exit", "exec", "response", "deadline",
            "miss",
        ],
        &jobs,
    ));
    o
}
