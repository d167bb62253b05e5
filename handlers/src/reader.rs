//! Read result files back into typed rows: the "event files" face of taskdist, for analysis
//! and for tests.
//!
//! ```no_run
//! use taskdist_handlers::reader;
//! # fn main() -> Result<(), taskdist_handlers::HandlerError> {
//! let mut exits = 0;
//! for row in reader::read_events("out/events.csv")? {
//!     let row = row?;
//!     if row.kind.ends_job() {
//!         exits += 1;
//!     }
//! }
//! let variants: Vec<reader::VariantRow> = reader::read_variants("out/variants.csv")?
//!     .collect::<Result<_, _>>()?;
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use taskdist_tasksets::Task;

use crate::event::{EventKind, RunSummary};
use crate::handler::HandlerError;
use crate::rows::{decode_config, EVENTS_HEADER, JOBS_HEADER, TASKS_HEADER, VARIANTS_HEADER};
use crate::run_file::RunFile;

fn de_kind<'de, D: Deserializer<'de>>(d: D) -> Result<EventKind, D::Error> {
    let s = String::deserialize(d)?;
    Ok(EventKind::from_wire(&s))
}

fn de_opt_kind<'de, D: Deserializer<'de>>(d: D) -> Result<Option<EventKind>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty())
        .map(|s| EventKind::from_wire(&s)))
}

/// How a variant ended, as written in the `outcome` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeKind {
    /// Every task finished.
    Done,
    /// Given up after the allowed attempts.
    Bad,
}

/// A row of `events.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EventRow {
    /// Variant index.
    pub variant: u64,
    /// The attempt that finished (1-based).
    pub attempt: u32,
    /// Position of the event in the attempt's arrival order (0-based).
    pub seq: u64,
    /// The target it ran on.
    pub target: SocketAddr,
    /// Task id.
    pub task_id: u32,
    /// Job number within the task (1-based); 0 for events that belong to no job.
    pub job: u32,
    /// Event type.
    #[serde(rename = "type", deserialize_with = "de_kind")]
    pub kind: EventKind,
    /// Target time in ms (64-bit, wraps undone).
    pub target_time_ms: u64,
    /// Host arrival time, Unix µs.
    pub host_time_us: u64,
}

/// A row of `jobs.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JobRow {
    /// Variant index.
    pub variant: u64,
    /// The attempt that finished.
    pub attempt: u32,
    /// The target it ran on.
    pub target: SocketAddr,
    /// Task id.
    pub task_id: u32,
    /// Job number within the task (1-based).
    pub job: u32,
    /// Target time of START in ms; `None` for a job that never started.
    pub start_ms: Option<u64>,
    /// Target time of the ending event in ms; `None` if it never ended in the attempt.
    pub end_ms: Option<u64>,
    /// The ending event's type.
    #[serde(deserialize_with = "de_opt_kind")]
    pub exit_type: Option<EventKind>,
    /// `end_ms - start_ms` when both are known.
    pub duration_ms: Option<u64>,
}

/// A row of `variants.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VariantRow {
    /// Variant index.
    pub variant: u64,
    /// Outcome.
    pub outcome: OutcomeKind,
    /// Number of the attempt that finished (done) or of the last attempt (bad).
    pub attempts: u32,
    /// Target of that attempt.
    pub target: SocketAddr,
    /// Start, Unix µs (of the finished attempt for done, of the first attempt for bad).
    pub started_host_us: u64,
    /// End, Unix µs.
    pub finished_host_us: u64,
    /// `finished_host_us - started_host_us`.
    pub duration_us: u64,
    /// Number of tasks in the variant.
    pub tasks: u32,
    /// Number of events (rows in `events.csv`) of the variant; 0 for bad.
    pub events: u64,
    /// Why the variant is bad; `None` for done.
    pub reason: Option<String>,
}

/// A row of `tasks.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskRow {
    /// Variant index.
    pub variant: u64,
    /// Task id.
    pub task_id: u32,
    /// See [`Task::executiontime_ms`].
    pub executiontime_ms: u64,
    /// See [`Task::criticaltime_ms`].
    pub criticaltime_ms: u64,
    /// See [`Task::priority`].
    pub priority: u32,
    /// See [`Task::deadline_ms`].
    pub deadline_ms: u64,
    /// See [`Task::period_ms`].
    pub period_ms: u64,
    /// See [`Task::offset_ms`].
    pub offset_ms: u64,
    /// See [`Task::numberofjobs`].
    pub numberofjobs: u32,
    /// See [`Task::quota_bytes`].
    pub quota_bytes: u64,
    /// See [`Task::caps`].
    pub caps: u32,
    /// See [`Task::cores`].
    pub cores: u32,
    /// See [`Task::coreoffset`].
    pub coreoffset: u32,
    /// See [`Task::pkg`].
    pub pkg: String,
    /// The config as `k=v;k=v` (see [`crate::decode_config`]).
    pub config: String,
}

impl TaskRow {
    /// The task this row describes.
    pub fn to_task(&self) -> Task {
        Task {
            id: self.task_id,
            executiontime_ms: self.executiontime_ms,
            criticaltime_ms: self.criticaltime_ms,
            priority: self.priority,
            deadline_ms: self.deadline_ms,
            period_ms: self.period_ms,
            offset_ms: self.offset_ms,
            numberofjobs: self.numberofjobs,
            quota_bytes: self.quota_bytes,
            caps: self.caps,
            cores: self.cores,
            coreoffset: self.coreoffset,
            pkg: self.pkg.clone(),
            config: decode_config(&self.config),
        }
    }
}

/// Typed rows of one CSV result file; each item names the file and line on error.
pub struct Rows<T> {
    path: PathBuf,
    inner: csv::DeserializeRecordsIntoIter<File, T>,
    _row: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Rows<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows").field("path", &self.path).finish()
    }
}

impl<T: DeserializeOwned> Iterator for Rows<T> {
    type Item = Result<T, HandlerError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.next()?;
        Some(item.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            HandlerError::Format {
                path: self.path.clone(),
                line,
                reason: e.to_string(),
            }
        }))
    }
}

fn open_rows<T: DeserializeOwned>(path: &Path, header: &[&str]) -> Result<Rows<T>, HandlerError> {
    let file = File::open(path).map_err(|e| HandlerError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .buffer_capacity(1 << 20)
        .from_reader(file);
    let found = reader
        .headers()
        .map_err(|e| HandlerError::csv(path, e))?
        .clone();
    if found.iter().ne(header.iter().copied()) {
        return Err(HandlerError::Format {
            path: path.to_owned(),
            line: 1,
            reason: format!(
                "header {:?} differs from the expected {:?}",
                found.iter().collect::<Vec<_>>(),
                header
            ),
        });
    }
    Ok(Rows {
        path: path.to_owned(),
        inner: reader.into_deserialize(),
        _row: PhantomData,
    })
}

/// Rows of an `events.csv`.
pub fn read_events(path: impl AsRef<Path>) -> Result<Rows<EventRow>, HandlerError> {
    open_rows(path.as_ref(), &EVENTS_HEADER)
}

/// Rows of a `jobs.csv`.
pub fn read_jobs(path: impl AsRef<Path>) -> Result<Rows<JobRow>, HandlerError> {
    open_rows(path.as_ref(), &JOBS_HEADER)
}

/// Rows of a `variants.csv`.
pub fn read_variants(path: impl AsRef<Path>) -> Result<Rows<VariantRow>, HandlerError> {
    open_rows(path.as_ref(), &VARIANTS_HEADER)
}

/// Rows of a `tasks.csv`.
pub fn read_tasks(path: impl AsRef<Path>) -> Result<Rows<TaskRow>, HandlerError> {
    open_rows(path.as_ref(), &TASKS_HEADER)
}

/// The `run.json` of a result directory.
pub fn read_run(dir: impl AsRef<Path>) -> Result<RunFile, HandlerError> {
    RunFile::read(&dir.as_ref().join(crate::run_file::RUN_FILE))
}

/// An event inside a JSON Lines variant record.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EventRecord {
    /// Task id.
    pub task_id: u32,
    /// Job number (0 for no job).
    pub job: u32,
    /// Event type.
    #[serde(rename = "type", deserialize_with = "de_kind")]
    pub kind: EventKind,
    /// Target time in ms.
    pub target_time_ms: u64,
    /// Host arrival time, Unix µs.
    pub host_time_us: u64,
}

/// A job inside a JSON Lines variant record (fields as in [`JobRow`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JobRecord {
    /// Task id.
    pub task_id: u32,
    /// Job number (1-based).
    pub job: u32,
    /// Target time of START in ms.
    pub start_ms: Option<u64>,
    /// Target time of the ending event in ms.
    pub end_ms: Option<u64>,
    /// The ending event's type.
    #[serde(default, deserialize_with = "de_opt_kind")]
    pub exit_type: Option<EventKind>,
    /// `end_ms - start_ms`.
    pub duration_ms: Option<u64>,
}

/// A `variant` record of the JSON Lines file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VariantRecord {
    /// Variant index.
    pub variant: u64,
    /// Outcome.
    pub outcome: OutcomeKind,
    /// As in [`VariantRow::attempts`].
    pub attempts: u32,
    /// Target of that attempt.
    pub target: SocketAddr,
    /// Start, Unix µs.
    pub started_host_us: u64,
    /// End, Unix µs.
    pub finished_host_us: u64,
    /// Duration in µs.
    pub duration_us: u64,
    /// Why the variant is bad; `None` for done.
    pub reason: Option<String>,
    /// The tasks.
    pub tasks: Vec<Task>,
    /// Events in arrival order (empty for bad).
    pub events: Vec<EventRecord>,
    /// Jobs by task and job number (empty for bad).
    pub jobs: Vec<JobRecord>,
}

/// A `summary` record of the JSON Lines file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SummaryRecord {
    /// End of the run, Unix µs.
    pub finished_at_unix_us: u64,
    /// The distributor's summary.
    #[serde(flatten)]
    pub summary: RunSummary,
}

/// One line of a JSON Lines result file.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonlRecord {
    /// A run (or a resumed part of it) started.
    Run(Box<RunFile>),
    /// A variant's result.
    Variant(Box<VariantRecord>),
    /// A run ended.
    Summary(SummaryRecord),
}

/// Iterator over the records of a JSON Lines result file.
pub struct JsonlRecords {
    path: PathBuf,
    lines: std::io::Split<BufReader<File>>,
    line: u64,
}

impl std::fmt::Debug for JsonlRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlRecords")
            .field("path", &self.path)
            .field("line", &self.line)
            .finish()
    }
}

#[derive(Deserialize)]
struct Tag {
    record: String,
}

impl JsonlRecords {
    fn parse(&self, bytes: &[u8]) -> Result<JsonlRecord, String> {
        let err = |e: serde_json::Error| e.to_string();
        let tag: Tag = serde_json::from_slice(bytes).map_err(err)?;
        match tag.record.as_str() {
            "run" => Ok(JsonlRecord::Run(Box::new(
                serde_json::from_slice(bytes).map_err(err)?,
            ))),
            "variant" => Ok(JsonlRecord::Variant(Box::new(
                serde_json::from_slice(bytes).map_err(err)?,
            ))),
            "summary" => Ok(JsonlRecord::Summary(
                serde_json::from_slice(bytes).map_err(err)?,
            )),
            other => Err(format!(
                "unknown record {other:?}, expected run, variant or summary"
            )),
        }
    }
}

impl Iterator for JsonlRecords {
    type Item = Result<JsonlRecord, HandlerError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let bytes = match self.lines.next()? {
                Ok(b) => b,
                Err(e) => return Some(Err(HandlerError::io(&self.path, e))),
            };
            self.line += 1;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(self.parse(&bytes).map_err(|reason| HandlerError::Format {
                path: self.path.clone(),
                line: self.line,
                reason,
            }));
        }
    }
}

/// The records of a JSON Lines result file written by [`crate::JsonlHandler`].
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<JsonlRecords, HandlerError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| HandlerError::io(path, e))?;
    Ok(JsonlRecords {
        path: path.to_owned(),
        lines: BufReader::with_capacity(1 << 20, file).split(b'\n'),
        line: 0,
    })
}
