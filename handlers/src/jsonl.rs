//! [`JsonlHandler`]: one JSON object per line.

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use taskdist_tasksets::Task;

use crate::event::{RunInfo, RunSummary, TimedEvent, VariantBad, VariantFinished};
use crate::handler::{EventHandler, HandlerError};
use crate::repair::{parse_u64, repair_file, LineKey};
use crate::rows::{duration_us, unix_us, JobTable};
use crate::run_file::RunFile;

/// Conventional file name of the JSON Lines output inside a result directory.
pub const JSONL_FILE: &str = "results.jsonl";

const VARIANT_PREFIX: &[u8] = br#"{"record":"variant","variant":"#;
const RECORD_PREFIX: &[u8] = br#"{"record":""#;
const RUN_PREFIX: &[u8] = br#"{"record":"run","#;

/// Writes a run's results as JSON Lines: one object per line, told apart by `record`:
///
/// - `{"record":"run", ...}`: the run description (fields of [`RunFile`]), one per start or
///   resume of the run;
/// - `{"record":"variant","variant":N, ...}`: one per variant (outcome `done` or `bad`) with
///   its tasks, its events (each with its job number) and its jobs;
/// - `{"record":"summary", ...}`: the [`RunSummary`] at the end of a run, with
///   `finished_at_unix_us`.
///
/// One line per variant keeps a variant's data together, so a line is either wholly there or
/// (torn by a crash) wholly dropped on resume. Read it back with
/// [`crate::reader::read_jsonl`].
pub struct JsonlHandler {
    path: PathBuf,
    w: BufWriter<File>,
    table: JobTable,
    resuming: bool,
    previous_run: Option<RunFile>,
}

impl std::fmt::Debug for JsonlHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlHandler")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl JsonlHandler {
    /// Create `path` (and its parent directories); fails with [`HandlerError::Exists`] if the
    /// file exists.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, HandlerError> {
        Self::open(
            path.as_ref(),
            OpenOptions::new().write(true).create_new(true),
            false,
        )
    }

    /// Create or truncate `path`.
    pub fn create_overwrite(path: impl AsRef<Path>) -> Result<Self, HandlerError> {
        Self::open(
            path.as_ref(),
            OpenOptions::new().write(true).create(true).truncate(true),
            false,
        )
    }

    /// Continue `path` after a crash or stop: keep `run`/`summary` lines and the variant lines
    /// of variants for which `is_done` is true, drop a torn final line, then append.
    pub fn resume(
        path: impl AsRef<Path>,
        is_done: &dyn Fn(u64) -> bool,
    ) -> Result<Self, HandlerError> {
        let path = path.as_ref();
        // Remember the last run record: the resumed part continues its count.
        let last_run: RefCell<Option<RunFile>> = RefCell::new(None);
        let key = |line: &[u8]| {
            let k = jsonl_key(line)?;
            if line.starts_with(RUN_PREFIX) {
                let run = serde_json::from_slice(line)
                    .map_err(|e| format!("unreadable run record: {e}"))?;
                *last_run.borrow_mut() = Some(run);
            }
            Ok(k)
        };
        repair_file(path, None, key, is_done)?;
        let mut h = Self::open(path, OpenOptions::new().append(true).create(true), true)?;
        h.previous_run = last_run.into_inner();
        Ok(h)
    }

    fn open(path: &Path, opts: &OpenOptions, resuming: bool) -> Result<Self, HandlerError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| HandlerError::io(parent, e))?;
        }
        let file = opts.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                HandlerError::Exists {
                    path: path.to_owned(),
                }
            } else {
                HandlerError::io(path, e)
            }
        })?;
        Ok(JsonlHandler {
            path: path.to_owned(),
            w: BufWriter::with_capacity(1 << 20, file),
            table: JobTable::default(),
            resuming,
            previous_run: None,
        })
    }

    /// The output file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn line(&mut self, value: &impl Serialize) -> Result<(), HandlerError> {
        serde_json::to_writer(&mut self.w, value).map_err(HandlerError::json)?;
        self.w
            .write_all(b"\n")
            .map_err(|e| HandlerError::io(&self.path, e))
    }

    /// Write the `run` record (synchronous form of `run_started`).
    pub fn write_run(&mut self, run: &RunInfo) -> Result<(), HandlerError> {
        let file = RunFile::new(run, self.previous_run.as_ref(), self.resuming);
        self.line(&Tagged {
            record: "run",
            body: &file,
        })
    }

    /// Write the variant line of a finished attempt.
    pub fn write_finished(&mut self, v: &VariantFinished) -> Result<(), HandlerError> {
        self.table.compute(&v.events);
        let line = VariantLine {
            record: "variant",
            variant: v.id.variant,
            outcome: "done",
            attempts: v.id.attempt,
            target: v.id.target,
            started_host_us: unix_us(v.started_at),
            finished_host_us: unix_us(v.finished_at),
            duration_us: duration_us(v.started_at, v.finished_at),
            reason: None,
            tasks: &v.taskset.tasks,
            events: EventsOut {
                events: &v.events,
                jobs: self.table.event_jobs(),
            },
            jobs: JobsOut {
                events: &v.events,
                table: &self.table,
            },
        };
        serde_json::to_writer(&mut self.w, &line).map_err(HandlerError::json)?;
        self.w
            .write_all(b"\n")
            .map_err(|e| HandlerError::io(&self.path, e))
    }

    /// Write the variant line of a variant given up as bad.
    pub fn write_bad(&mut self, v: &VariantBad) -> Result<(), HandlerError> {
        self.table.compute(&[]);
        let line = VariantLine {
            record: "variant",
            variant: v.id.variant,
            outcome: "bad",
            attempts: v.id.attempt,
            target: v.id.target,
            started_host_us: unix_us(v.started_at),
            finished_host_us: unix_us(v.finished_at),
            duration_us: duration_us(v.started_at, v.finished_at),
            reason: Some(&v.reason),
            tasks: &v.taskset.tasks,
            events: EventsOut {
                events: &[],
                jobs: &[],
            },
            jobs: JobsOut {
                events: &[],
                table: &self.table,
            },
        };
        serde_json::to_writer(&mut self.w, &line).map_err(HandlerError::json)?;
        self.w
            .write_all(b"\n")
            .map_err(|e| HandlerError::io(&self.path, e))
    }

    /// Write the `summary` record and flush.
    pub fn write_summary(&mut self, summary: &RunSummary) -> Result<(), HandlerError> {
        self.line(&Tagged {
            record: "summary",
            body: &SummaryBody {
                finished_at_unix_us: unix_us(std::time::SystemTime::now()),
                summary,
            },
        })?;
        self.flush_file()
    }

    /// Hand buffered lines to the OS.
    pub fn flush_file(&mut self) -> Result<(), HandlerError> {
        self.w.flush().map_err(|e| HandlerError::io(&self.path, e))
    }
}

fn jsonl_key(line: &[u8]) -> Result<LineKey, String> {
    if let Some(rest) = line.strip_prefix(VARIANT_PREFIX) {
        let digits = rest.split(|&b| b == b',').next().unwrap_or_default();
        return parse_u64(digits).map(LineKey::Variant).ok_or_else(|| {
            format!(
                "expected a variant index after {:?}",
                String::from_utf8_lossy(VARIANT_PREFIX)
            )
        });
    }
    if line.starts_with(RECORD_PREFIX) {
        Ok(LineKey::Keep)
    } else {
        Err(format!(
            "expected a line starting with {:?}",
            String::from_utf8_lossy(RECORD_PREFIX)
        ))
    }
}

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    record: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Serialize)]
struct SummaryBody<'a> {
    finished_at_unix_us: u64,
    #[serde(flatten)]
    summary: &'a RunSummary,
}

#[derive(Serialize)]
struct VariantLine<'a> {
    record: &'static str,
    variant: u64,
    outcome: &'static str,
    attempts: u32,
    target: SocketAddr,
    started_host_us: u64,
    finished_host_us: u64,
    duration_us: u64,
    reason: Option<&'a str>,
    tasks: &'a [Task],
    events: EventsOut<'a>,
    jobs: JobsOut<'a>,
}

struct EventsOut<'a> {
    events: &'a [TimedEvent],
    jobs: &'a [u32],
}

#[derive(Serialize)]
struct EventOut<'a> {
    task_id: u32,
    job: u32,
    #[serde(rename = "type")]
    kind: &'a str,
    target_time_ms: u64,
    host_time_us: u64,
}

impl Serialize for EventsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.events.len()))?;
        for (e, &job) in self.events.iter().zip(self.jobs) {
            seq.serialize_element(&EventOut {
                task_id: e.event.task_id,
                job,
                kind: e.event.kind.as_wire(),
                target_time_ms: e.event.time_ms,
                host_time_us: unix_us(e.host_time),
            })?;
        }
        seq.end()
    }
}

struct JobsOut<'a> {
    events: &'a [TimedEvent],
    table: &'a JobTable,
}

#[derive(Serialize)]
struct JobOut<'a> {
    task_id: u32,
    job: u32,
    start_ms: Option<u64>,
    end_ms: Option<u64>,
    exit_type: Option<&'a str>,
    duration_ms: Option<u64>,
}

impl Serialize for JobsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let jobs = self.table.jobs();
        let mut seq = s.serialize_seq(Some(jobs.len()))?;
        for j in jobs {
            seq.serialize_element(&JobOut {
                task_id: j.task_id,
                job: j.job,
                start_ms: j.start_ms(self.events),
                end_ms: j.end_ms(self.events),
                exit_type: j.exit_kind(self.events).map(|k| k.as_wire()),
                duration_ms: j.duration_ms(self.events),
            })?;
        }
        seq.end()
    }
}

#[async_trait]
impl EventHandler for JsonlHandler {
    async fn run_started(&mut self, run: &RunInfo) -> Result<(), HandlerError> {
        self.write_run(run)
    }

    async fn taskset_finished(&mut self, v: &VariantFinished) -> Result<(), HandlerError> {
        self.write_finished(v)
    }

    async fn taskset_bad(&mut self, v: &VariantBad) -> Result<(), HandlerError> {
        self.write_bad(v)
    }

    async fn run_finished(&mut self, summary: &RunSummary) -> Result<(), HandlerError> {
        self.write_summary(summary)
    }

    async fn flush(&mut self) -> Result<(), HandlerError> {
        self.flush_file()
    }
}
