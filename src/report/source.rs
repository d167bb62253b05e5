//! Streaming access to a result directory's rows, from its CSV files or its SQLite database.
//!
//! Each table is read by its own thread into a bounded channel (batches of rows), so memory
//! stays bounded and reading overlaps with the analysis. Rows of one variant are consecutive
//! in every file, and the files list variants in the same order (the handlers write a
//! variant's rows together); [`Grouped`] takes the rows of one variant at a time and
//! [`Source`] checks that order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};

use taskdist_handlers::reader::{self, JobRow, OutcomeKind, TaskRow, VariantRow};
use taskdist_handlers::{
    EventKind, RunFile, EVENTS_FILE, JOBS_FILE, RUN_FILE, SQLITE_FILE, TASKS_FILE, VARIANTS_FILE,
};

use super::ReportError;

const BATCH: usize = 4096;

/// Where the rows come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// The CSV files of the directory.
    Csv(PathBuf),
    /// `results.sqlite` in the directory.
    Sqlite(PathBuf),
}

/// A stream of rows read by a background thread.
pub(crate) struct RowStream<T> {
    rx: Receiver<Result<Vec<T>, ReportError>>,
    buf: std::vec::IntoIter<T>,
}

impl<T: Send + 'static> RowStream<T> {
    fn spawn<I>(make: impl FnOnce() -> Result<I, ReportError> + Send + 'static) -> Self
    where
        I: Iterator<Item = Result<T, ReportError>>,
    {
        let (tx, rx) = sync_channel(4);
        std::thread::Builder::new()
            .name("taskdist-report-read".into())
            .spawn(move || {
                let rows = match make() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let mut batch = Vec::with_capacity(BATCH);
                for row in rows {
                    match row {
                        Ok(r) => batch.push(r),
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                    if batch.len() == BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        if tx.send(Ok(full)).is_err() {
                            return; // the reader went away
                        }
                    }
                }
                if !batch.is_empty() {
                    let _ = tx.send(Ok(batch));
                }
            })
            .expect("spawn a reader thread");
        RowStream {
            rx,
            buf: Vec::new().into_iter(),
        }
    }
}

impl<T> Iterator for RowStream<T> {
    type Item = Result<T, ReportError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.buf.next() {
                return Some(Ok(r));
            }
            match self.rx.recv().ok()? {
                Ok(batch) => self.buf = batch.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Rows with a variant number.
pub(crate) trait HasVariant {
    fn variant(&self) -> u64;
}

impl HasVariant for TaskRow {
    fn variant(&self) -> u64 {
        self.variant
    }
}

impl HasVariant for JobRow {
    fn variant(&self) -> u64 {
        self.variant
    }
}

/// Takes the consecutive rows of one variant at a time from a row stream.
pub(crate) struct Grouped<T> {
    rows: RowStream<T>,
    head: Option<T>,
    file: &'static str,
    taken: u64,
}

impl<T: HasVariant> Grouped<T> {
    fn new(rows: RowStream<T>, file: &'static str) -> Self {
        Grouped {
            rows,
            head: None,
            file,
            taken: 0,
        }
    }

    fn fill(&mut self) -> Result<(), ReportError> {
        if self.head.is_none() {
            self.head = self.rows.next().transpose()?;
        }
        Ok(())
    }

    /// The rows of `variant` if they come next; empty if the next rows belong to another
    /// variant (a variant without rows in this file).
    pub(crate) fn take(&mut self, variant: u64, out: &mut Vec<T>) -> Result<(), ReportError> {
        out.clear();
        loop {
            self.fill()?;
            match &self.head {
                Some(r) if r.variant() == variant => {
                    out.push(self.head.take().expect("head"));
                    self.taken += 1;
                }
                _ => return Ok(()),
            }
        }
    }

    /// Fails if rows are left over: they belong to no variant of `variants` in its order.
    pub(crate) fn finish(mut self, dir: &Path) -> Result<(), ReportError> {
        self.fill()?;
        match self.head {
            None => Ok(()),
            Some(r) => Err(ReportError::Order {
                file: dir.join(self.file),
                variant: r.variant(),
                row: self.taken + 1,
            }),
        }
    }
}

impl Source {
    /// The source of a result directory: its CSV files, or its SQLite database when it has
    /// no `variants.csv`.
    pub(crate) fn open(dir: &Path) -> Result<Self, ReportError> {
        let meta = std::fs::metadata(dir).map_err(|e| ReportError::NotADirectory {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        if !meta.is_dir() {
            return Err(ReportError::NotADirectory {
                path: dir.to_owned(),
                reason: "not a directory".into(),
            });
        }
        if dir.join(VARIANTS_FILE).exists() {
            for f in [TASKS_FILE, JOBS_FILE, EVENTS_FILE, RUN_FILE] {
                let p = dir.join(f);
                if !p.is_file() {
                    return Err(ReportError::MissingFile { path: p });
                }
            }
            return Ok(Source::Csv(dir.to_owned()));
        }
        let db = dir.join(SQLITE_FILE);
        if db.is_file() {
            return Ok(Source::Sqlite(db));
        }
        Err(ReportError::NoResults {
            dir: dir.to_owned(),
        })
    }

    /// The directory's `run.json` (or the run record of the database).
    pub(crate) fn run(&self) -> Result<RunFile, ReportError> {
        match self {
            Source::Csv(dir) => Ok(reader::read_run(dir)?),
            Source::Sqlite(db) => {
                let json = dir_of(db).join(RUN_FILE);
                if json.is_file() {
                    return Ok(reader::read_run(dir_of(db))?);
                }
                let conn = open_db(db)?;
                let text: String = conn
                    .query_row("SELECT json FROM run", [], |r| r.get(0))
                    .map_err(|e| sqlite_err(db, e))?;
                serde_json::from_str(&text).map_err(|e| ReportError::Sqlite {
                    path: db.clone(),
                    reason: format!("run.json column: {e}"),
                })
            }
        }
    }

    /// The variants in file order.
    pub(crate) fn variants(&self) -> RowStream<VariantRow> {
        match self.clone() {
            Source::Csv(dir) => RowStream::spawn(move || {
                Ok(reader::read_variants(dir.join(VARIANTS_FILE))?.map(|r| r.map_err(Into::into)))
            }),
            Source::Sqlite(db) => sqlite_stream(
                db,
                "SELECT variant, outcome, attempts, target, started_host_us, finished_host_us, \
                 duration_us, tasks, events, reason FROM variants ORDER BY variant",
                |r| {
                    let outcome: String = r.get(1)?;
                    let target: String = r.get(3)?;
                    Ok(VariantRow {
                        variant: r.get(0)?,
                        outcome: if outcome == "bad" {
                            OutcomeKind::Bad
                        } else {
                            OutcomeKind::Done
                        },
                        attempts: r.get(2)?,
                        target: target.parse().map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                3,
                                rusqlite::types::Type::Text,
                                Box::new(e),
                            )
                        })?,
                        started_host_us: r.get(4)?,
                        finished_host_us: r.get(5)?,
                        duration_us: r.get(6)?,
                        tasks: r.get(7)?,
                        events: r.get(8)?,
                        reason: r.get(9)?,
                    })
                },
            ),
        }
    }

    /// The tasks, grouped by variant, in the order of [`Source::variants`].
    pub(crate) fn tasks(&self) -> Grouped<TaskRow> {
        let rows = match self.clone() {
            Source::Csv(dir) => RowStream::spawn(move || {
                Ok(reader::read_tasks(dir.join(TASKS_FILE))?.map(|r| r.map_err(Into::into)))
            }),
            Source::Sqlite(db) => sqlite_stream(
                db,
                "SELECT variant, task_id, executiontime_ms, criticaltime_ms, priority, \
                 deadline_ms, period_ms, offset_ms, numberofjobs, quota_bytes, caps, cores, \
                 coreoffset, pkg, config FROM tasks ORDER BY variant, task_id",
                |r| {
                    Ok(TaskRow {
                        variant: r.get(0)?,
                        task_id: r.get(1)?,
                        executiontime_ms: r.get(2)?,
                        criticaltime_ms: r.get(3)?,
                        priority: r.get(4)?,
                        deadline_ms: r.get(5)?,
                        period_ms: r.get(6)?,
                        offset_ms: r.get(7)?,
                        numberofjobs: r.get(8)?,
                        quota_bytes: r.get(9)?,
                        caps: r.get(10)?,
                        cores: r.get(11)?,
                        coreoffset: r.get(12)?,
                        pkg: r.get(13)?,
                        config: r.get::<_, Option<String>>(14)?.unwrap_or_default(),
                    })
                },
            ),
        };
        Grouped::new(rows, TASKS_FILE)
    }

    /// The jobs, grouped by variant, in the order of [`Source::variants`].
    pub(crate) fn jobs(&self) -> Grouped<JobRow> {
        let rows = match self.clone() {
            Source::Csv(dir) => RowStream::spawn(move || {
                Ok(reader::read_jobs(dir.join(JOBS_FILE))?.map(|r| r.map_err(Into::into)))
            }),
            Source::Sqlite(db) => sqlite_stream(
                db,
                "SELECT variant, attempt, target, task_id, job, start_ms, end_ms, exit_type, \
                 duration_ms FROM jobs ORDER BY variant, task_id, job",
                |r| {
                    let target: String = r.get(2)?;
                    let exit: Option<String> = r.get(7)?;
                    Ok(JobRow {
                        variant: r.get(0)?,
                        attempt: r.get(1)?,
                        target: target.parse().map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                2,
                                rusqlite::types::Type::Text,
                                Box::new(e),
                            )
                        })?,
                        task_id: r.get(3)?,
                        job: r.get(4)?,
                        start_ms: r.get(5)?,
                        end_ms: r.get(6)?,
                        exit_type: exit
                            .filter(|s| !s.is_empty())
                            .map(|s| EventKind::from_wire(&s)),
                        duration_ms: r.get(8)?,
                    })
                },
            ),
        };
        Grouped::new(rows, JOBS_FILE)
    }

    /// Number of events of each type (wire name), over all finished attempts.
    pub(crate) fn event_types(&self) -> RowStream<(String, u64)> {
        match self.clone() {
            Source::Csv(dir) => RowStream::spawn(move || {
                let path = dir.join(EVENTS_FILE);
                Ok(count_event_types(&path)?.into_iter().map(Ok))
            }),
            Source::Sqlite(db) => {
                sqlite_stream(db, "SELECT type, count(*) FROM events GROUP BY type", |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
            }
        }
    }
}

/// Count the `type` column of an `events.csv` without building whole rows.
fn count_event_types(path: &Path) -> Result<BTreeMap<String, u64>, ReportError> {
    let file = std::fs::File::open(path).map_err(|e| ReportError::Io {
        path: path.to_owned(),
        source: e,
    })?;
    let mut rd = csv::ReaderBuilder::new()
        .buffer_capacity(1 << 20)
        .from_reader(file);
    let header = rd.byte_headers().map_err(|e| format_err(path, 1, e))?;
    let expected = taskdist_handlers::EVENTS_HEADER;
    if header.iter().ne(expected.iter().map(|s| s.as_bytes())) {
        return Err(ReportError::Read(taskdist_handlers::HandlerError::Format {
            path: path.to_owned(),
            line: 1,
            reason: format!("header differs from the expected {expected:?}"),
        }));
    }
    let mut counts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut rec = csv::ByteRecord::new();
    let mut line = 1;
    loop {
        match rd.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(format_err(path, line + 1, e)),
        }
        line += 1;
        let Some(kind) = rec.get(6) else {
            return Err(format_err(path, line, "fewer than 7 fields"));
        };
        match counts.get_mut(kind) {
            Some(c) => *c += 1,
            None => {
                counts.insert(kind.to_vec(), 1);
            }
        }
    }
    Ok(counts
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
        .collect())
}

fn format_err(path: &Path, line: u64, e: impl std::fmt::Display) -> ReportError {
    ReportError::Read(taskdist_handlers::HandlerError::Format {
        path: path.to_owned(),
        line,
        reason: e.to_string(),
    })
}

fn dir_of(db: &Path) -> &Path {
    db.parent().unwrap_or(Path::new("."))
}

fn open_db(db: &Path) -> Result<rusqlite::Connection, ReportError> {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| sqlite_err(db, e))
}

fn sqlite_err(db: &Path, e: rusqlite::Error) -> ReportError {
    ReportError::Sqlite {
        path: db.to_owned(),
        reason: e.to_string(),
    }
}

fn sqlite_stream<T: Send + 'static>(
    db: PathBuf,
    sql: &'static str,
    map: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> RowStream<T> {
    let (tx, rx) = sync_channel(4);
    std::thread::Builder::new()
        .name("taskdist-report-sqlite".into())
        .spawn(move || {
            let run = || -> Result<(), ReportError> {
                let conn = open_db(&db)?;
                let mut stmt = conn.prepare(sql).map_err(|e| sqlite_err(&db, e))?;
                let mut rows = stmt.query([]).map_err(|e| sqlite_err(&db, e))?;
                let mut batch = Vec::with_capacity(BATCH);
                while let Some(row) = rows.next().map_err(|e| sqlite_err(&db, e))? {
                    batch.push(map(row).map_err(|e| sqlite_err(&db, e))?);
                    if batch.len() == BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        if tx.send(Ok(full)).is_err() {
                            return Ok(());
                        }
                    }
                }
                if !batch.is_empty() {
                    let _ = tx.send(Ok(batch));
                }
                Ok(())
            };
            if let Err(e) = run() {
                let _ = tx.send(Err(e));
            }
        })
        .expect("spawn a reader thread");
    RowStream {
        rx,
        buf: Vec::new().into_iter(),
    }
}
