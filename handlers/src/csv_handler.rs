//! [`CsvHandler`]: a result directory of CSV files plus `run.json`.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::event::{AttemptId, RunInfo, RunSummary, VariantBad, VariantFinished};
use crate::handler::{EventHandler, HandlerError};
use crate::repair::{check_header, csv_key, repair_file, RepairStats};
use crate::rows::{
    duration_us, encode_config, one_line, unix_us, JobTable, EVENTS_HEADER, JOBS_HEADER,
    TASKS_HEADER, VARIANTS_HEADER,
};
use crate::run_file::{RunFile, RUN_FILE};

/// File name of the per-event table.
pub const EVENTS_FILE: &str = "events.csv";
/// File name of the per-job table.
pub const JOBS_FILE: &str = "jobs.csv";
/// File name of the per-variant table.
pub const VARIANTS_FILE: &str = "variants.csv";
/// File name of the per-task table.
pub const TASKS_FILE: &str = "tasks.csv";

/// One CSV output file with its path (for error messages) and a reused record: fields are
/// collected in `rec` and written with `write_byte_record`, the csv crate's fast path.
struct Out {
    path: PathBuf,
    w: csv::Writer<File>,
    rec: csv::ByteRecord,
}

impl Out {
    fn open(
        dir: &Path,
        name: &str,
        header: &[&str],
        mode: Mode,
        capacity: usize,
    ) -> Result<Self, HandlerError> {
        let path = dir.join(name);
        let mut opts = OpenOptions::new();
        let mut needs_header = true;
        match mode {
            Mode::CreateNew => {
                opts.write(true).create_new(true);
            }
            Mode::Overwrite => {
                opts.write(true).create(true).truncate(true);
            }
            Mode::Append(stats) => {
                opts.append(true).create(true);
                needs_header = stats.needs_header;
            }
        }
        let file = opts.open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                HandlerError::Exists { path: path.clone() }
            } else {
                HandlerError::io(&path, e)
            }
        })?;
        let w = csv::WriterBuilder::new()
            .has_headers(false)
            .buffer_capacity(capacity)
            .from_writer(file);
        let mut out = Out {
            path,
            w,
            rec: csv::ByteRecord::with_capacity(256, 16),
        };
        if needs_header {
            out.w
                .write_record(header)
                .map_err(|e| HandlerError::csv(&out.path, e))?;
            out.flush()?;
        }
        Ok(out)
    }

    #[inline]
    fn field(&mut self, bytes: &[u8]) {
        self.rec.push_field(bytes);
    }

    #[inline]
    fn end(&mut self) -> Result<(), HandlerError> {
        let r = self.w.write_byte_record(&self.rec);
        self.rec.clear();
        r.map_err(|e| HandlerError::csv(&self.path, e))
    }

    fn flush(&mut self) -> Result<(), HandlerError> {
        self.w.flush().map_err(|e| HandlerError::io(&self.path, e))
    }
}

#[derive(Clone, Copy)]
enum Mode {
    CreateNew,
    Overwrite,
    Append(RepairStats),
}

/// Writes a run's results as CSV files into one directory.
///
/// | file | one row per | written by |
/// |---|---|---|
/// | `events.csv` | event of a finished attempt | `taskset_finished` |
/// | `jobs.csv` | job of a finished attempt | `taskset_finished` |
/// | `variants.csv` | variant (outcome `done` or `bad`) | `taskset_finished`, `taskset_bad` |
/// | `tasks.csv` | task of each variant | `taskset_finished`, `taskset_bad` |
/// | `run.json` | run | `run_started`, rewritten by `run_finished` |
///
/// Columns and units are in the crate README and in [`EVENTS_HEADER`], [`JOBS_HEADER`],
/// [`VARIANTS_HEADER`], [`TASKS_HEADER`]. Live events ([`EventHandler::events`]) are not
/// written: only the attempt that finished contributes rows, so every variant has exactly one
/// row in `variants.csv` and no event is written twice.
///
/// Writes are buffered (4 MiB for events) and handed to the OS by [`EventHandler::flush`].
/// The writes are blocking file I/O: run the handler on its own task.
///
/// ```no_run
/// # async fn f() -> Result<(), taskdist_handlers::HandlerError> {
/// use taskdist_handlers::{CsvHandler, EventHandler};
/// let mut csv = CsvHandler::create("out/")?;          // refuses to overwrite results
/// // ... the distributor calls csv.taskset_finished(..), csv.flush(), ...
/// csv.flush().await?;
/// # Ok(()) }
/// ```
pub struct CsvHandler {
    dir: PathBuf,
    events: Out,
    jobs: Out,
    variants: Out,
    tasks: Out,
    table: JobTable,
    text: String,
    run: Option<RunFile>,
    previous_run: Option<RunFile>,
    resuming: bool,
}

impl std::fmt::Debug for CsvHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvHandler")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

const RESULT_FILES: [&str; 5] = [EVENTS_FILE, JOBS_FILE, VARIANTS_FILE, TASKS_FILE, RUN_FILE];

impl CsvHandler {
    /// Create the directory (and parents) and new result files in it. Fails with
    /// [`HandlerError::Exists`] if any result file (`events.csv`, `jobs.csv`, `variants.csv`,
    /// `tasks.csv`, `run.json`) already exists there; use [`CsvHandler::create_overwrite`] to
    /// replace old results or [`CsvHandler::resume`] to continue them.
    pub fn create(dir: impl AsRef<Path>) -> Result<Self, HandlerError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|e| HandlerError::io(dir, e))?;
        for name in RESULT_FILES {
            let path = dir.join(name);
            if path.exists() {
                return Err(HandlerError::Exists { path });
            }
        }
        Self::open(dir, Mode::CreateNew, false, None)
    }

    /// Like [`CsvHandler::create`], but truncates existing result files.
    pub fn create_overwrite(dir: impl AsRef<Path>) -> Result<Self, HandlerError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|e| HandlerError::io(dir, e))?;
        let run = dir.join(RUN_FILE);
        if run.exists() {
            fs::remove_file(&run).map_err(|e| HandlerError::io(&run, e))?;
        }
        Self::open(dir, Mode::Overwrite, false, None)
    }

    /// Continue the result files in `dir` after a crash or stop: every CSV file is rewritten
    /// to keep only rows of variants for which `is_done` is true (the resume ledger's view),
    /// a torn final line is dropped, and writing continues at the end. Missing files are
    /// created. A file whose header differs from this version's is an error (nothing is
    /// changed then). `run.json` is kept until `run_started` rewrites it with `resumed`
    /// incremented.
    pub fn resume(
        dir: impl AsRef<Path>,
        is_done: &dyn Fn(u64) -> bool,
    ) -> Result<Self, HandlerError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|e| HandlerError::io(dir, e))?;
        // Check every header before changing any file.
        for (name, header) in Self::files() {
            check_header(&dir.join(name), header.join(",").as_bytes())?;
        }
        let mut stats = Vec::with_capacity(4);
        for (name, header) in Self::files() {
            let path = dir.join(name);
            stats.push(repair_file(
                &path,
                Some(header.join(",").as_bytes()),
                csv_key,
                is_done,
            )?);
        }
        let run_path = dir.join(RUN_FILE);
        let previous = if run_path.exists() {
            Some(RunFile::read(&run_path)?)
        } else {
            None
        };
        let mut h = Self::open_with(dir, |i| Mode::Append(stats[i]), true, previous)?;
        h.resuming = true;
        Ok(h)
    }

    fn files() -> [(&'static str, &'static [&'static str]); 4] {
        [
            (EVENTS_FILE, &EVENTS_HEADER),
            (JOBS_FILE, &JOBS_HEADER),
            (VARIANTS_FILE, &VARIANTS_HEADER),
            (TASKS_FILE, &TASKS_HEADER),
        ]
    }

    fn open(
        dir: &Path,
        mode: Mode,
        resuming: bool,
        previous: Option<RunFile>,
    ) -> Result<Self, HandlerError> {
        Self::open_with(dir, |_| mode, resuming, previous)
    }

    fn open_with(
        dir: &Path,
        mode: impl Fn(usize) -> Mode,
        resuming: bool,
        previous_run: Option<RunFile>,
    ) -> Result<Self, HandlerError> {
        let [e, j, v, t] = Self::files();
        Ok(CsvHandler {
            dir: dir.to_owned(),
            events: Out::open(dir, e.0, e.1, mode(0), 4 << 20)?,
            jobs: Out::open(dir, j.0, j.1, mode(1), 1 << 20)?,
            variants: Out::open(dir, v.0, v.1, mode(2), 256 << 10)?,
            tasks: Out::open(dir, t.0, t.1, mode(3), 256 << 10)?,
            table: JobTable::default(),
            text: String::with_capacity(256),
            run: None,
            previous_run,
            resuming,
        })
    }

    /// The result directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write `run.json` for a run that starts (synchronous form of `run_started`).
    pub fn write_run(&mut self, run: &RunInfo) -> Result<(), HandlerError> {
        let file = RunFile::new(run, self.previous_run.as_ref(), self.resuming);
        file.write(&self.dir.join(RUN_FILE))?;
        self.run = Some(file);
        Ok(())
    }

    /// Write the rows of a finished attempt (synchronous form of `taskset_finished`).
    pub fn write_finished(&mut self, v: &VariantFinished) -> Result<(), HandlerError> {
        let mut vbuf = itoa::Buffer::new();
        let mut abuf = itoa::Buffer::new();
        let mut n = itoa::Buffer::new();
        let variant = vbuf.format(v.id.variant).as_bytes();
        let attempt = abuf.format(v.id.attempt).as_bytes();
        self.text.clear();
        let _ = write!(self.text, "{}", v.id.target);
        let target = self.text.as_bytes();

        self.table.compute(&v.events);
        let jobs_of_events = self.table.event_jobs();
        let w = &mut self.events;
        for (seq, (e, &job)) in v.events.iter().zip(jobs_of_events).enumerate() {
            w.field(variant);
            w.field(attempt);
            w.field(n.format(seq).as_bytes());
            w.field(target);
            w.field(n.format(e.event.task_id).as_bytes());
            w.field(n.format(job).as_bytes());
            w.field(one_line(e.event.kind.as_wire()).as_bytes());
            w.field(n.format(e.event.time_ms).as_bytes());
            w.field(n.format(unix_us(e.host_time)).as_bytes());
            w.end()?;
        }

        let w = &mut self.jobs;
        for job in self.table.jobs() {
            w.field(variant);
            w.field(attempt);
            w.field(target);
            w.field(n.format(job.task_id).as_bytes());
            w.field(n.format(job.job).as_bytes());
            opt_field(w, &mut n, job.start_ms(&v.events));
            opt_field(w, &mut n, job.end_ms(&v.events));
            match job.exit_kind(&v.events) {
                Some(k) => w.field(one_line(k.as_wire()).as_bytes()),
                None => w.field(b""),
            }
            opt_field(w, &mut n, job.duration_ms(&v.events));
            w.end()?;
        }

        let w = &mut self.variants;
        w.field(variant);
        w.field(b"done");
        w.field(attempt);
        w.field(target);
        w.field(n.format(unix_us(v.started_at)).as_bytes());
        w.field(n.format(unix_us(v.finished_at)).as_bytes());
        w.field(
            n.format(duration_us(v.started_at, v.finished_at))
                .as_bytes(),
        );
        w.field(n.format(v.taskset.tasks.len()).as_bytes());
        w.field(n.format(v.events.len()).as_bytes());
        w.field(b"");
        w.end()?;

        write_tasks(&mut self.tasks, variant, &v.taskset.tasks)
    }

    /// Write the rows of a variant given up as bad (synchronous form of `taskset_bad`).
    pub fn write_bad(&mut self, v: &VariantBad) -> Result<(), HandlerError> {
        let AttemptId {
            variant,
            attempt,
            target,
        } = v.id;
        let mut vbuf = itoa::Buffer::new();
        let mut n = itoa::Buffer::new();
        let variant = vbuf.format(variant).as_bytes();
        self.text.clear();
        let _ = write!(self.text, "{target}");
        let w = &mut self.variants;
        w.field(variant);
        w.field(b"bad");
        w.field(n.format(attempt).as_bytes());
        w.field(self.text.as_bytes());
        w.field(n.format(unix_us(v.started_at)).as_bytes());
        w.field(n.format(unix_us(v.finished_at)).as_bytes());
        w.field(
            n.format(duration_us(v.started_at, v.finished_at))
                .as_bytes(),
        );
        w.field(n.format(v.taskset.tasks.len()).as_bytes());
        w.field(b"0");
        w.field(one_line(&v.reason).as_bytes());
        w.end()?;
        write_tasks(&mut self.tasks, variant, &v.taskset.tasks)
    }

    /// Hand every buffered row to the OS (synchronous form of `flush`).
    pub fn flush_files(&mut self) -> Result<(), HandlerError> {
        self.events.flush()?;
        self.jobs.flush()?;
        self.variants.flush()?;
        self.tasks.flush()
    }

    /// Flush and rewrite `run.json` with the summary (synchronous form of `run_finished`).
    pub fn write_summary(&mut self, summary: &RunSummary) -> Result<(), HandlerError> {
        self.flush_files()?;
        if let Some(run) = &mut self.run {
            run.finished_at_unix_us = Some(unix_us(std::time::SystemTime::now()));
            run.summary = Some(summary.clone());
            run.write(&self.dir.join(RUN_FILE))?;
        } else {
            tracing::warn!(dir = %self.dir.display(), "run ended without run_started: run.json not written");
        }
        Ok(())
    }
}

#[inline]
fn opt_field(w: &mut Out, n: &mut itoa::Buffer, v: Option<u64>) {
    match v {
        Some(v) => w.field(n.format(v).as_bytes()),
        None => w.field(b""),
    }
}

fn write_tasks(
    w: &mut Out,
    variant: &[u8],
    tasks: &[taskdist_tasksets::Task],
) -> Result<(), HandlerError> {
    let mut n = itoa::Buffer::new();
    for t in tasks {
        w.field(variant);
        w.field(n.format(t.id).as_bytes());
        w.field(n.format(t.executiontime_ms).as_bytes());
        w.field(n.format(t.criticaltime_ms).as_bytes());
        w.field(n.format(t.priority).as_bytes());
        w.field(n.format(t.deadline_ms).as_bytes());
        w.field(n.format(t.period_ms).as_bytes());
        w.field(n.format(t.offset_ms).as_bytes());
        w.field(n.format(t.numberofjobs).as_bytes());
        w.field(n.format(t.quota_bytes).as_bytes());
        w.field(n.format(t.caps).as_bytes());
        w.field(n.format(t.cores).as_bytes());
        w.field(n.format(t.coreoffset).as_bytes());
        w.field(one_line(&t.pkg).as_bytes());
        w.field(encode_config(&t.config).as_bytes());
        w.end()?;
    }
    Ok(())
}

#[async_trait]
impl EventHandler for CsvHandler {
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
        self.flush_files()
    }
}
