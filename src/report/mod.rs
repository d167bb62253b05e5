//! Reports over a result directory: overview, schedulability against utilisation (or another
//! attribute), response and execution times per task, deadline misses and Gantt charts of
//! chosen variants, as one self-contained HTML page with inline SVG ([`render_html`]) or as
//! SVG files ([`chart_files`]).
//!
//! [`analyse`] streams the directory once (CSV files, or `results.sqlite` when there are no
//! CSV files) in bounded memory: per-variant work needs only that variant's rows, percentiles
//! come from [`LogHistogram`]s, and the kept state grows with the number of targets, tasks
//! ids and attribute bins, not with the number of variants or events.
//!
//! Definitions (also in the README, "Reports"), for a task with period `T` and deadline
//! `D` (`deadline_ms`, or `T` when it is 0):
//! - **release** of job `n`: `a + (n - 1) T`, where the anchor `a` is the smallest
//!   `start_k - (k - 1) T` over the task's started jobs `k` (the target reports no release;
//!   it starts a job when it releases it, so the earliest start on the period grid is the
//!   best estimate, and a job that started late shows that lateness in its response time);
//! - **response time**: end of the job (its ending event) minus its release;
//! - **execution time** (as seen): end minus START, preemptions included (no event carries
//!   CPU time);
//! - **deadline miss**: a job that ended after `release + D`, ended by `EXIT_PERIOD`, or never
//!   ended in the finished attempt;
//! - a variant is **schedulable** when it is done, every task ran `numberofjobs` jobs that all
//!   ended with `EXIT`, and no job missed its deadline. Bad variants are left out of the
//!   schedulability figures (they tell about the target, not the task-set) and counted apart.

mod hist;
mod html;
mod png;
mod source;
mod svg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use hist::LogHistogram;
pub use html::{chart_files, charts, render_html, Chart};
pub use png::PngRenderer;
use source::Source;
use taskdist_handlers::reader::{JobRow, OutcomeKind, TaskRow, VariantRow};
use taskdist_handlers::TASKS_HEADER;
use taskdist_handlers::{EventKind, HandlerError, RunFile};

/// Errors of [`analyse`] and [`show`].
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The path is not a readable directory.
    #[error("{path}: not a result directory ({reason})")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The directory holds no result files.
    #[error("{dir}: no results here; expected variants.csv (CSV handler) or results.sqlite")]
    NoResults {
        /// The directory.
        dir: PathBuf,
    },
    /// A file the report needs is missing.
    #[error("{path}: missing; a CSV result directory has events.csv, jobs.csv, variants.csv, tasks.csv and run.json")]
    MissingFile {
        /// The missing file.
        path: PathBuf,
    },
    /// A variant asked for is not in the results.
    #[error("variant {variant} is not in the results of {dir} ({known} variants there)")]
    UnknownVariant {
        /// The variant.
        variant: u64,
        /// The directory.
        dir: PathBuf,
        /// How many variants the directory has.
        known: u64,
    },
    /// An option value is not usable.
    #[error("{0}")]
    Option(String),
    /// Rows of a file are not in the order of `variants.csv`.
    #[error("{file}: row {row} (variant {variant}) is not in the order of variants.csv; the files do not belong together")]
    Order {
        /// The file.
        file: PathBuf,
        /// The variant of the row.
        variant: u64,
        /// The row (1-based, header not counted).
        row: u64,
    },
    /// A result file could not be read or has a bad format.
    #[error(transparent)]
    Read(#[from] HandlerError),
    /// The SQLite database could not be read.
    #[error("{path}: {reason}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// A chart could not be rendered to PNG.
    #[error("chart {chart}: cannot render to PNG: {reason}")]
    Render {
        /// The chart id.
        chart: String,
        /// The cause.
        reason: String,
    },
    /// File I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl ReportError {
    /// True for errors in what the user gave (directory, files, variant, options), as opposed
    /// to I/O failures while writing.
    pub fn is_input_error(&self) -> bool {
        !matches!(self, ReportError::Io { .. } | ReportError::Render { .. })
    }
}

/// What the schedulability and deadline-miss charts put on the x axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XAttr {
    /// Total utilisation `sum(executiontime / period)` (variants with an unknown execution time,
    /// 0 or 99999999, have none).
    Utilisation,
    /// Number of tasks.
    Tasks,
    /// A numeric `tasks.csv` column of one task id, e.g. `priority@0`.
    Column {
        /// The column name.
        column: String,
        /// The task id.
        task: u32,
    },
}

/// The numeric columns of `tasks.csv` a `--by COLUMN@TASK` can name (all but `variant`,
/// `task_id`, `pkg` and `config`).
const COLUMNS: &[&str] = TASKS_HEADER.split_at(2).1.split_at(11).0;

impl std::str::FromStr for XAttr {
    type Err = ReportError;

    fn from_str(s: &str) -> Result<Self, ReportError> {
        match s {
            "utilisation" | "utilization" | "u" => Ok(XAttr::Utilisation),
            "tasks" => Ok(XAttr::Tasks),
            _ => {
                let bad = || {
                    ReportError::Option(format!(
                        "--by {s}: expected utilisation, tasks, or COLUMN@TASK_ID with COLUMN one of {}",
                        COLUMNS.join(", ")
                    ))
                };
                let (col, id) = s.split_once('@').ok_or_else(bad)?;
                if !COLUMNS.contains(&col) {
                    return Err(bad());
                }
                Ok(XAttr::Column {
                    column: col.to_owned(),
                    task: id.parse().map_err(|_| bad())?,
                })
            }
        }
    }
}

impl std::fmt::Display for XAttr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XAttr::Utilisation => f.write_str("total utilisation"),
            XAttr::Tasks => f.write_str("number of tasks"),
            XAttr::Column { column, task } => write!(f, "{column} of task {task}"),
        }
    }
}

impl XAttr {
    /// The value for a variant's tasks, if it has one.
    pub fn value(&self, tasks: &[TaskRow]) -> Option<f64> {
        match self {
            XAttr::Utilisation => utilisation(tasks),
            XAttr::Tasks => Some(tasks.len() as f64),
            XAttr::Column { column, task } => {
                let t = tasks.iter().find(|t| t.task_id == *task)?;
                let v = match column.as_str() {
                    "executiontime_ms" => t.executiontime_ms,
                    "criticaltime_ms" => t.criticaltime_ms,
                    "priority" => u64::from(t.priority),
                    "deadline_ms" => t.deadline_ms,
                    "period_ms" => t.period_ms,
                    "offset_ms" => t.offset_ms,
                    "numberofjobs" => u64::from(t.numberofjobs),
                    "quota_bytes" => t.quota_bytes,
                    "caps" => u64::from(t.caps),
                    "cores" => u64::from(t.cores),
                    "coreoffset" => u64::from(t.coreoffset),
                    _ => return None,
                };
                Some(v as f64)
            }
        }
    }
}

/// `executiontime` values that mean "unknown".
pub const UNKNOWN_EXECUTIONTIME: [u64; 2] = [0, 99_999_999];

/// Total utilisation `sum(executiontime_ms / period_ms)`; `None` when a task's execution time
/// is unknown (0 or 99999999) or its period is 0, or there are no tasks.
pub fn utilisation(tasks: &[TaskRow]) -> Option<f64> {
    if tasks.is_empty() {
        return None;
    }
    let mut u = 0.0;
    for t in tasks {
        if UNKNOWN_EXECUTIONTIME.contains(&t.executiontime_ms) || t.period_ms == 0 {
            return None;
        }
        u += t.executiontime_ms as f64 / t.period_ms as f64;
    }
    Some(u)
}

/// Options of [`analyse`].
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Variants to draw as Gantt charts; empty: pick telling ones.
    pub variants: Vec<u64>,
    /// The x axis of the schedulability and deadline-miss charts.
    pub by: XAttr,
    /// Bin width on that axis; `None`: 0.1 for utilisation, else one bin per value (up to
    /// 25 values) or 20 equal bins.
    pub bin_width: Option<f64>,
    /// At most this many targets get their own curve (else one curve for all).
    pub max_target_curves: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            variants: Vec::new(),
            by: XAttr::Utilisation,
            bin_width: None,
            max_target_curves: 8,
        }
    }
}

/// One job with the derived times (all in target ms).
#[derive(Debug, Clone, PartialEq)]
pub struct JobTimes {
    /// Task id.
    pub task_id: u32,
    /// Job number (1-based).
    pub job: u32,
    /// Release (see the module documentation); `None` if no job of the task started.
    pub release_ms: Option<u64>,
    /// START time.
    pub start_ms: Option<u64>,
    /// Time of the ending event.
    pub end_ms: Option<u64>,
    /// How it ended.
    pub exit: Option<EventKind>,
    /// Absolute deadline `release + D`.
    pub deadline_ms: Option<u64>,
    /// `end - release`.
    pub response_ms: Option<u64>,
    /// `end - start`.
    pub execution_ms: Option<u64>,
    /// Missed its deadline (see the module documentation).
    pub missed: bool,
}

/// The relative deadline of a task: `deadline_ms`, or the period when it is 0.
pub fn relative_deadline(t: &TaskRow) -> u64 {
    if t.deadline_ms == 0 {
        t.period_ms
    } else {
        t.deadline_ms
    }
}

/// Derive release, response time and deadline miss of every job of one variant.
pub fn job_times(tasks: &[TaskRow], jobs: &[JobRow]) -> Vec<JobTimes> {
    let mut anchors: BTreeMap<u32, i128> = BTreeMap::new();
    let period = |id: u32| tasks.iter().find(|t| t.task_id == id).map(|t| t.period_ms);
    for j in jobs {
        if let (Some(s), Some(p)) = (j.start_ms, period(j.task_id)) {
            let a = i128::from(s) - i128::from(j.job.saturating_sub(1)) * i128::from(p);
            let e = anchors.entry(j.task_id).or_insert(a);
            *e = (*e).min(a);
        }
    }
    jobs.iter()
        .map(|j| {
            let task = tasks.iter().find(|t| t.task_id == j.task_id);
            let release = match (anchors.get(&j.task_id), task) {
                (Some(&a), Some(t)) => {
                    let r = a + i128::from(j.job.saturating_sub(1)) * i128::from(t.period_ms);
                    u64::try_from(r.max(0)).ok()
                }
                _ => None,
            };
            let deadline = match (release, task) {
                (Some(r), Some(t)) => Some(r.saturating_add(relative_deadline(t))),
                _ => None,
            };
            let response = match (release, j.end_ms) {
                (Some(r), Some(e)) => Some(e.saturating_sub(r)),
                _ => None,
            };
            let missed = match (j.end_ms, &j.exit_type) {
                (None, _) => true,
                (_, Some(EventKind::ExitPeriod)) => true,
                (Some(e), _) => deadline.is_some_and(|d| e > d),
            };
            JobTimes {
                task_id: j.task_id,
                job: j.job,
                release_ms: release,
                start_ms: j.start_ms,
                end_ms: j.end_ms,
                exit: j.exit_type.clone(),
                deadline_ms: deadline,
                response_ms: response,
                execution_ms: j.duration_ms,
                missed,
            }
        })
        .collect()
}

/// Whether a done variant is schedulable: every task ran `numberofjobs` jobs that all ended
/// with `EXIT`, none missed its deadline.
pub fn schedulable(tasks: &[TaskRow], times: &[JobTimes]) -> bool {
    if times
        .iter()
        .any(|j| j.missed || j.exit != Some(EventKind::Exit))
    {
        return false;
    }
    tasks
        .iter()
        .all(|t| times.iter().filter(|j| j.task_id == t.task_id).count() == t.numberofjobs as usize)
}

/// Counts of one bin of the x attribute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BinCounts {
    /// Done variants in the bin.
    pub variants: u64,
    /// Of those, schedulable.
    pub schedulable: u64,
    /// Of those, with at least one deadline miss.
    pub with_miss: u64,
    /// Jobs of those variants.
    pub jobs: u64,
    /// Jobs that missed their deadline.
    pub missed_jobs: u64,
}

impl BinCounts {
    fn add(&mut self, o: &BinCounts) {
        self.variants += o.variants;
        self.schedulable += o.schedulable;
        self.with_miss += o.with_miss;
        self.jobs += o.jobs;
        self.missed_jobs += o.missed_jobs;
    }
}

/// A bin of the x attribute: its centre and counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Bin {
    /// Centre of the bin.
    pub x: f64,
    /// Counts.
    pub counts: BinCounts,
}

/// 95 % Wilson score interval for `k` successes out of `n`.
pub fn wilson(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let n_f = n as f64;
    let p = k as f64 / n_f;
    let z2 = z * z;
    let denom = 1.0 + z2 / n_f;
    let centre = (p + z2 / (2.0 * n_f)) / denom;
    let half = z / denom * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Per-task-id statistics.
#[derive(Debug, Clone, Default)]
pub struct TaskStats {
    /// Response times (ms) of jobs with an end and a release.
    pub response: LogHistogram,
    /// Execution times (end - START, ms).
    pub execution: LogHistogram,
    /// Jobs seen.
    pub jobs: u64,
    /// Jobs that missed their deadline.
    pub missed: u64,
}

/// Variants finished per time bucket; the bucket width doubles as the run goes on, so the
/// number of buckets stays at most [`Timeline::BUCKETS`].
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// Width of a bucket in µs.
    pub width_us: u64,
    /// Done variants per bucket.
    pub done: Vec<u64>,
    /// Bad variants per bucket.
    pub bad: Vec<u64>,
}

impl Timeline {
    /// Most buckets kept.
    pub const BUCKETS: usize = 120;

    fn new() -> Self {
        Timeline {
            width_us: 10_000,
            done: vec![0; Self::BUCKETS],
            bad: vec![0; Self::BUCKETS],
        }
    }

    fn widen_to(&mut self, width: u64) {
        while self.width_us < width {
            for v in [&mut self.done, &mut self.bad] {
                let merged: Vec<u64> = v.chunks(2).map(|c| c.iter().sum()).collect();
                v.iter_mut().for_each(|x| *x = 0);
                v[..merged.len()].copy_from_slice(&merged);
            }
            self.width_us *= 2;
        }
    }

    fn record(&mut self, offset_us: u64, bad: bool) {
        while offset_us / self.width_us >= Self::BUCKETS as u64 {
            let w = self.width_us * 2;
            self.widen_to(w);
        }
        let i = (offset_us / self.width_us) as usize;
        if bad {
            self.bad[i] += 1;
        } else {
            self.done[i] += 1;
        }
    }
}

/// Per-target statistics.
#[derive(Debug, Clone)]
pub struct TargetStats {
    /// Done variants.
    pub done: u64,
    /// Bad variants (last attempt on this target).
    pub bad: u64,
    /// Variants that needed more than one attempt and finished here.
    pub retried: u64,
    /// Sum of `duration_us` of done variants.
    pub busy_us: u64,
    /// Finished variants over time.
    pub timeline: Timeline,
}

/// A variant kept for a Gantt chart.
#[derive(Debug, Clone)]
pub struct GanttVariant {
    /// Why it was chosen.
    pub why: String,
    /// Its `variants.csv` row.
    pub row: VariantRow,
    /// Its tasks.
    pub tasks: Vec<TaskRow>,
    /// Its jobs with derived times.
    pub jobs: Vec<JobTimes>,
}

/// Everything a report shows, computed by [`analyse`].
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The directory.
    pub dir: PathBuf,
    /// Its `run.json`.
    pub run: RunFile,
    /// `csv` or `sqlite`.
    pub source: String,
    /// Variants by outcome.
    pub done: u64,
    /// Bad variants.
    pub bad: u64,
    /// Done variants that are schedulable.
    pub schedulable: u64,
    /// Done variants without a value on the x axis (e.g. unknown execution time).
    pub no_x: u64,
    /// Bad reasons with counts (at most 50 distinct; the rest under "other reasons").
    pub bad_reasons: BTreeMap<String, u64>,
    /// Events per type.
    pub event_types: BTreeMap<String, u64>,
    /// Jobs per ending type (`none` for jobs without an end).
    pub job_exits: BTreeMap<String, u64>,
    /// Earliest start and latest finish of a variant, Unix µs.
    pub span_us: Option<(u64, u64)>,
    /// Origin of the timelines, Unix µs.
    pub origin_us: u64,
    /// Per target.
    pub targets: BTreeMap<String, TargetStats>,
    /// Per task id.
    pub tasks: BTreeMap<u32, TaskStats>,
    /// The x attribute.
    pub by: XAttr,
    /// Bins per curve: `all`, then one per target when there are 2..=max targets.
    pub curves: Vec<(String, Vec<Bin>)>,
    /// Variants drawn as Gantt charts.
    pub gantt: Vec<GanttVariant>,
}

impl Analysis {
    /// Seconds the run took: the summary's `elapsed_s`, else the span of the variants.
    pub fn elapsed_s(&self) -> Option<f64> {
        self.run
            .summary
            .as_ref()
            .map(|s| s.elapsed_s)
            .or_else(|| self.span_us.map(|(a, b)| (b - a) as f64 / 1e6))
    }

    /// Variants with an outcome per second.
    pub fn rate(&self) -> Option<f64> {
        self.elapsed_s()
            .filter(|&e| e > 0.0)
            .map(|e| (self.done + self.bad) as f64 / e)
    }
}

const MAX_REASONS: usize = 50;

/// Fine bins before merging: the x value times this, rounded.
const FINE: f64 = 1000.0;

struct Pick {
    why: &'static str,
    score: f64,
    kept: Option<GanttVariant>,
}

impl Pick {
    fn offer(&mut self, score: f64, row: &VariantRow, tasks: &[TaskRow], jobs: &[JobTimes]) {
        if self.kept.is_none() || score > self.score {
            self.score = score;
            self.kept = Some(GanttVariant {
                why: self.why.to_owned(),
                row: row.clone(),
                tasks: tasks.to_vec(),
                jobs: jobs.to_vec(),
            });
        }
    }
}

/// Read a result directory once and compute every figure of the report.
pub fn analyse(dir: &Path, opts: &ReportOptions) -> Result<Analysis, ReportError> {
    if let Some(w) = opts.bin_width {
        if !(w.is_finite() && w > 0.0) {
            return Err(ReportError::Option(format!(
                "--bin-width {w}: expected a positive number"
            )));
        }
    }
    let source = Source::open(dir)?;
    let run = source.run()?;
    let mut event_stream = source.event_types();
    let mut tasks_in = source.tasks();
    let mut jobs_in = source.jobs();
    let mut a = Analysis {
        dir: dir.to_owned(),
        origin_us: run.first_started_at_unix_us,
        run,
        source: match source {
            Source::Csv(_) => "csv".into(),
            Source::Sqlite(_) => "sqlite".into(),
        },
        done: 0,
        bad: 0,
        schedulable: 0,
        no_x: 0,
        bad_reasons: BTreeMap::new(),
        event_types: BTreeMap::new(),
        job_exits: BTreeMap::new(),
        span_us: None,
        targets: BTreeMap::new(),
        tasks: BTreeMap::new(),
        by: opts.by.clone(),
        curves: Vec::new(),
        gantt: Vec::new(),
    };
    let mut fine: BTreeMap<(Option<String>, i64), BinCounts> = BTreeMap::new();
    let mut picks = [
        Pick {
            why: "worst response time",
            score: 0.0,
            kept: None,
        },
        Pick {
            why: "most deadline misses",
            score: 0.0,
            kept: None,
        },
        Pick {
            why: "a job ended abnormally",
            score: 0.0,
            kept: None,
        },
    ];
    let mut wanted: BTreeMap<u64, Option<GanttVariant>> =
        opts.variants.iter().map(|&v| (v, None)).collect();
    let mut tasks = Vec::new();
    let mut jobs = Vec::new();
    let mut dropped_targets = false;
    for row in source.variants() {
        let row = row?;
        tasks_in.take(row.variant, &mut tasks)?;
        jobs_in.take(row.variant, &mut jobs)?;
        let target = row.target.to_string();
        let ts = a
            .targets
            .entry(target.clone())
            .or_insert_with(|| TargetStats {
                done: 0,
                bad: 0,
                retried: 0,
                busy_us: 0,
                timeline: Timeline::new(),
            });
        let is_bad = row.outcome == OutcomeKind::Bad;
        ts.timeline
            .record(row.finished_host_us.saturating_sub(a.origin_us), is_bad);
        a.span_us = Some(match a.span_us {
            None => (row.started_host_us, row.finished_host_us),
            Some((s, f)) => (s.min(row.started_host_us), f.max(row.finished_host_us)),
        });
        let times = job_times(&tasks, &jobs);
        if let Some(slot) = wanted.get_mut(&row.variant) {
            *slot = Some(GanttVariant {
                why: "chosen with --variant".into(),
                row: row.clone(),
                tasks: tasks.clone(),
                jobs: times.clone(),
            });
        }
        if is_bad {
            a.bad += 1;
            ts.bad += 1;
            let reason = row.reason.clone().unwrap_or_default();
            if a.bad_reasons.len() < MAX_REASONS || a.bad_reasons.contains_key(&reason) {
                *a.bad_reasons.entry(reason).or_default() += 1;
            } else {
                *a.bad_reasons.entry("other reasons".into()).or_default() += 1;
            }
            continue;
        }
        a.done += 1;
        ts.done += 1;
        ts.busy_us += row.duration_us;
        if row.attempts > 1 {
            ts.retried += 1;
        }
        let sched = schedulable(&tasks, &times);
        a.schedulable += u64::from(sched);
        let mut missed = 0;
        let mut abnormal = 0;
        let mut worst: Option<u64> = None;
        for j in &times {
            let ts = a.tasks.entry(j.task_id).or_default();
            ts.jobs += 1;
            if j.missed {
                ts.missed += 1;
                missed += 1;
            }
            if let Some(r) = j.response_ms {
                ts.response.record(r);
                worst = Some(worst.map_or(r, |w| w.max(r)));
            }
            if let Some(e) = j.execution_ms {
                ts.execution.record(e);
            }
            let exit = j.exit.as_ref().map_or("none", |k| k.as_wire());
            if exit != "EXIT" {
                abnormal += 1;
            }
            match a.job_exits.get_mut(exit) {
                Some(c) => *c += 1,
                None => {
                    a.job_exits.insert(exit.to_owned(), 1);
                }
            }
        }
        if let Some(w) = worst {
            picks[0].offer(w as f64, &row, &tasks, &times);
        }
        if missed > 0 {
            picks[1].offer(missed as f64, &row, &tasks, &times);
        }
        if abnormal > missed {
            picks[2].offer((abnormal - missed) as f64, &row, &tasks, &times);
        }
        let Some(x) = opts.by.value(&tasks) else {
            a.no_x += 1;
            continue;
        };
        let c = BinCounts {
            variants: 1,
            schedulable: u64::from(sched),
            with_miss: u64::from(missed > 0),
            jobs: times.len() as u64,
            missed_jobs: missed,
        };
        let key = (x * FINE).round() as i64;
        fine.entry((None, key)).or_default().add(&c);
        // per-target bins only while there are few enough targets to draw them
        if a.targets.len() <= opts.max_target_curves {
            fine.entry((Some(target), key)).or_default().add(&c);
        } else if !dropped_targets {
            fine.retain(|(g, _), _| g.is_none());
            dropped_targets = true;
        }
    }
    tasks_in.finish(dir)?;
    jobs_in.finish(dir)?;
    for r in &mut event_stream {
        let (k, v) = r?;
        *a.event_types.entry(k).or_default() += v;
    }
    let known = a.done + a.bad;
    let mut gantt = Vec::new();
    for (v, g) in wanted {
        match g {
            Some(g) => gantt.push(g),
            None => {
                return Err(ReportError::UnknownVariant {
                    variant: v,
                    dir: dir.to_owned(),
                    known,
                })
            }
        }
    }
    if opts.variants.is_empty() {
        for p in picks {
            if let Some(g) = p.kept {
                if !gantt
                    .iter()
                    .any(|k: &GanttVariant| k.row.variant == g.row.variant)
                {
                    gantt.push(g);
                }
            }
        }
    }
    a.gantt = gantt;
    a.curves = merge_bins(&fine, &opts.by, opts.bin_width, a.targets.len(), opts)?;
    Ok(a)
}

fn merge_bins(
    fine: &BTreeMap<(Option<String>, i64), BinCounts>,
    by: &XAttr,
    width: Option<f64>,
    targets: usize,
    opts: &ReportOptions,
) -> Result<Vec<(String, Vec<Bin>)>, ReportError> {
    let keys: Vec<i64> = fine
        .keys()
        .filter(|(g, _)| g.is_none())
        .map(|(_, k)| *k)
        .collect();
    let w = match (width, by) {
        (Some(w), _) => w,
        (None, XAttr::Utilisation) => 0.1,
        (None, _) if keys.len() <= 25 => 0.0, // one bin per value
        (None, _) => {
            let lo = keys.first().copied().unwrap_or(0) as f64 / FINE;
            let hi = keys.last().copied().unwrap_or(0) as f64 / FINE;
            ((hi - lo) / 20.0).max(1.0 / FINE)
        }
    };
    let centre = |k: i64| {
        let x = k as f64 / FINE;
        if w == 0.0 {
            x
        } else {
            (x / w).round() * w
        }
    };
    let mut groups: Vec<Option<String>> = vec![None];
    if (2..=opts.max_target_curves).contains(&targets) {
        let mut names: Vec<&String> = fine.keys().filter_map(|(g, _)| g.as_ref()).collect();
        names.dedup();
        groups.extend(names.into_iter().map(|n| Some(n.clone())));
    }
    let mut out = Vec::new();
    for g in groups {
        let mut bins: BTreeMap<i64, BinCounts> = BTreeMap::new();
        for ((_, k), c) in fine.range((g.clone(), i64::MIN)..=(g.clone(), i64::MAX)) {
            bins.entry((centre(*k) * FINE).round() as i64)
                .or_default()
                .add(c);
        }
        let name = g.unwrap_or_else(|| "all targets".into());
        out.push((
            name,
            bins.into_iter()
                .map(|(k, counts)| Bin {
                    x: k as f64 / FINE,
                    counts,
                })
                .collect(),
        ));
    }
    Ok(out)
}

/// One variant with its tasks and jobs, for `taskdist show`.
#[derive(Debug, Clone)]
pub struct VariantDetail {
    /// Its `variants.csv` row.
    pub row: VariantRow,
    /// Its tasks.
    pub tasks: Vec<TaskRow>,
    /// Its jobs with derived times.
    pub jobs: Vec<JobTimes>,
    /// Whether it is schedulable (done variants only).
    pub schedulable: bool,
}

/// Find one variant in a result directory (reads until it is found).
pub fn show(dir: &Path, variant: u64) -> Result<VariantDetail, ReportError> {
    let source = Source::open(dir)?;
    let mut tasks_in = source.tasks();
    let mut jobs_in = source.jobs();
    let mut tasks = Vec::new();
    let mut jobs = Vec::new();
    let mut known = 0;
    for row in source.variants() {
        let row = row?;
        known += 1;
        tasks_in.take(row.variant, &mut tasks)?;
        jobs_in.take(row.variant, &mut jobs)?;
        if row.variant == variant {
            let times = job_times(&tasks, &jobs);
            let schedulable = row.outcome == OutcomeKind::Done && schedulable(&tasks, &times);
            return Ok(VariantDetail {
                row,
                tasks,
                jobs: times,
                schedulable,
            });
        }
    }
    Err(ReportError::UnknownVariant {
        variant,
        dir: dir.to_owned(),
        known,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: u32, c: u64, t: u64, d: u64, n: u32) -> TaskRow {
        TaskRow {
            variant: 0,
            task_id: id,
            executiontime_ms: c,
            criticaltime_ms: 0,
            priority: 1,
            deadline_ms: d,
            period_ms: t,
            offset_ms: 0,
            numberofjobs: n,
            quota_bytes: 1,
            caps: 235,
            cores: 1,
            coreoffset: 0,
            pkg: "hey".into(),
            config: String::new(),
        }
    }

    fn job(id: u32, n: u32, s: Option<u64>, e: Option<u64>, k: Option<EventKind>) -> JobRow {
        JobRow {
            variant: 0,
            attempt: 1,
            target: "127.0.0.1:1".parse().unwrap(),
            task_id: id,
            job: n,
            start_ms: s,
            end_ms: e,
            exit_type: k,
            duration_ms: s.zip(e).map(|(s, e)| e - s),
        }
    }

    #[test]
    fn release_is_anchored_on_the_earliest_start_of_the_period_grid() {
        let tasks = [task(0, 10, 100, 0, 3)];
        // job 2 started 30 ms late; job 3 ends after its deadline (release 300 + 100)
        let jobs = [
            job(0, 1, Some(100), Some(110), Some(EventKind::Exit)),
            job(0, 2, Some(230), Some(250), Some(EventKind::Exit)),
            job(0, 3, Some(300), Some(401), Some(EventKind::Exit)),
        ];
        let t = job_times(&tasks, &jobs);
        assert_eq!(t[1].release_ms, Some(200));
        assert_eq!(t[1].response_ms, Some(50));
        assert_eq!(t[1].execution_ms, Some(20));
        assert!(!t[1].missed);
        assert_eq!(t[2].deadline_ms, Some(400));
        assert!(t[2].missed);
        assert!(!schedulable(&tasks, &t));
        let t = job_times(&tasks, &jobs[..2]);
        assert!(!schedulable(&tasks, &t), "a job is missing");
    }

    #[test]
    fn exit_period_and_unended_jobs_miss() {
        let tasks = [task(0, 10, 100, 50, 2)];
        let jobs = [
            job(0, 1, Some(0), Some(100), Some(EventKind::ExitPeriod)),
            job(0, 2, Some(100), None, None),
        ];
        let t = job_times(&tasks, &jobs);
        assert!(t[0].missed && t[1].missed);
        assert_eq!(t[0].deadline_ms, Some(50));
    }

    #[test]
    fn utilisation_needs_every_execution_time() {
        assert_eq!(
            utilisation(&[task(0, 10, 100, 0, 1), task(1, 30, 60, 0, 1)]),
            Some(0.6)
        );
        assert_eq!(utilisation(&[task(0, 99_999_999, 100, 0, 1)]), None);
    }

    #[test]
    fn wilson_interval_matches_known_values() {
        // 8 of 10: 0.4902 .. 0.9433 (Wilson 1927, as in textbooks)
        let (lo, hi) = wilson(8, 10);
        assert!(
            (lo - 0.4902).abs() < 1e-4 && (hi - 0.9433).abs() < 1e-4,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(0, 5);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.4345).abs() < 1e-4);
    }

    #[test]
    fn timeline_widens_and_keeps_counts() {
        let mut t = Timeline::new();
        for s in 0..1000u64 {
            t.record(s * 1_000_000, s % 10 == 0);
        }
        assert!(t.width_us >= 1000 * 1_000_000 / Timeline::BUCKETS as u64);
        assert_eq!(t.done.iter().sum::<u64>(), 900);
        assert_eq!(t.bad.iter().sum::<u64>(), 100);
    }

    #[test]
    fn by_parses() {
        assert_eq!("tasks".parse::<XAttr>().unwrap(), XAttr::Tasks);
        assert_eq!(
            "priority@1".parse::<XAttr>().unwrap(),
            XAttr::Column {
                column: "priority".into(),
                task: 1
            }
        );
        assert!("pkg@1".parse::<XAttr>().is_err());
    }
}
