//! [`SqliteHandler`]: the CSV tables in one SQLite database.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rusqlite::{params, Connection};

use crate::event::{RunInfo, RunSummary, VariantBad, VariantFinished};
use crate::handler::{EventHandler, HandlerError};
use crate::rows::{
    duration_us, encode_config, unix_us, JobTable, EVENTS_HEADER, JOBS_HEADER, TASKS_HEADER,
    VARIANTS_HEADER,
};
use crate::run_file::RunFile;

/// Conventional file name of the SQLite output inside a result directory.
pub const SQLITE_FILE: &str = "results.sqlite";

/// Rows written in one transaction before it is committed even without a flush (bounds the
/// size of the write-ahead log).
const MAX_PENDING_ROWS: u64 = 1_000_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS run (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    tool_version TEXT NOT NULL,
    spec_name TEXT NOT NULL,
    seed TEXT NOT NULL,
    dialect TEXT NOT NULL,
    started_at_unix_us INTEGER NOT NULL,
    finished_at_unix_us INTEGER,
    resumed INTEGER NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    variant INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    target TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    job INTEGER NOT NULL,
    type TEXT NOT NULL,
    target_time_ms INTEGER NOT NULL,
    host_time_us INTEGER NOT NULL,
    PRIMARY KEY (variant, seq)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS jobs (
    variant INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    target TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    job INTEGER NOT NULL,
    start_ms INTEGER,
    end_ms INTEGER,
    exit_type TEXT,
    duration_ms INTEGER,
    PRIMARY KEY (variant, task_id, job)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_exit_type ON jobs (exit_type);
CREATE TABLE IF NOT EXISTS variants (
    variant INTEGER PRIMARY KEY,
    outcome TEXT NOT NULL CHECK (outcome IN ('done', 'bad')),
    attempts INTEGER NOT NULL,
    target TEXT NOT NULL,
    started_host_us INTEGER NOT NULL,
    finished_host_us INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    tasks INTEGER NOT NULL,
    events INTEGER NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS variants_outcome ON variants (outcome);
CREATE TABLE IF NOT EXISTS tasks (
    variant INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    executiontime_ms INTEGER NOT NULL,
    criticaltime_ms INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    period_ms INTEGER NOT NULL,
    offset_ms INTEGER NOT NULL,
    numberofjobs INTEGER NOT NULL,
    quota_bytes INTEGER NOT NULL,
    caps INTEGER NOT NULL,
    cores INTEGER NOT NULL,
    coreoffset INTEGER NOT NULL,
    pkg TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (variant, task_id)
) WITHOUT ROWID;
";

const INSERT_EVENT: &str = "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const INSERT_JOB: &str = "INSERT INTO jobs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const INSERT_VARIANT: &str =
    "INSERT INTO variants VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
const INSERT_TASK: &str =
    "INSERT INTO tasks VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

/// Rows per multi-row INSERT of events (9 parameters each, well below SQLite's limit).
const EVENT_BATCH: usize = 16;

fn insert_events_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO events VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?)");
    }
    sql
}

/// Writes a run's results into one SQLite database (WAL mode), with the tables `events`,
/// `jobs`, `variants` and `tasks` (the columns of the CSV files, see [`EVENTS_HEADER`] etc.,
/// with primary keys `(variant, seq)`, `(variant, task_id, job)`, `variant`,
/// `(variant, task_id)`, and indexes on `jobs.exit_type` and `variants.outcome`; an index on
/// `events.type` would cost a quarter of the insert rate, add one after the run if needed), plus `run` (one row: the `run.json` content as `json`, and its main
/// fields as columns).
///
/// Rows are inserted inside a transaction that [`EventHandler::flush`] commits (and that is
/// committed early after a million rows). The primary keys make the database itself refuse a
/// second result for the same variant. `seed` is stored as text (it may exceed SQLite's
/// signed 64-bit integers).
pub struct SqliteHandler {
    path: PathBuf,
    conn: Connection,
    in_tx: bool,
    pending: u64,
    table: JobTable,
    text: String,
    batch_sql: String,
    run: Option<RunFile>,
    previous_run: Option<RunFile>,
    resuming: bool,
}

impl std::fmt::Debug for SqliteHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteHandler")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn int(what: &str, v: u64) -> Result<i64, HandlerError> {
    i64::try_from(v).map_err(|_| {
        HandlerError::Other(format!(
            "SQLite output: {what} {v} exceeds the signed 64-bit integer range"
        ))
    })
}

/// Refuse a database whose existing tables have other columns than this version writes
/// (tables that do not exist yet are fine: the schema creates them).
fn check_columns(conn: &Connection, path: &Path) -> Result<(), HandlerError> {
    let expected: [(&str, &[&str]); 4] = [
        ("events", &EVENTS_HEADER),
        ("jobs", &JOBS_HEADER),
        ("variants", &VARIANTS_HEADER),
        ("tasks", &TASKS_HEADER),
    ];
    for (table, header) in expected {
        let mut stmt = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .map_err(HandlerError::sqlite)?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(HandlerError::sqlite)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(HandlerError::sqlite)?;
        if !names.is_empty() && names != header {
            return Err(HandlerError::Format {
                path: path.to_owned(),
                line: 0,
                reason: format!(
                    "table {table} has columns {names:?}, expected {header:?}: written by \
                     another version or not a taskdist database"
                ),
            });
        }
    }
    Ok(())
}

impl SqliteHandler {
    /// Create a new database at `path` (parent directories too); fails with
    /// [`HandlerError::Exists`] if the file exists.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, HandlerError> {
        let path = path.as_ref();
        if path.exists() {
            return Err(HandlerError::Exists {
                path: path.to_owned(),
            });
        }
        Self::open(path, false, None)
    }

    /// Create a new database at `path`, deleting an existing one (and its `-wal`/`-shm`).
    pub fn create_overwrite(path: impl AsRef<Path>) -> Result<Self, HandlerError> {
        let path = path.as_ref();
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let p = PathBuf::from(name);
            if p.exists() {
                fs::remove_file(&p).map_err(|e| HandlerError::io(&p, e))?;
            }
        }
        Self::open(path, false, None)
    }

    /// Continue the database at `path` after a crash or stop: delete every row of variants
    /// for which `is_done` is false (SQLite itself already rolled back an unfinished
    /// transaction), then continue inserting. A missing database is created.
    pub fn resume(
        path: impl AsRef<Path>,
        is_done: &dyn Fn(u64) -> bool,
    ) -> Result<Self, HandlerError> {
        let path = path.as_ref();
        let mut h = Self::open(path, true, None)?;
        h.previous_run = h.read_run()?;
        let mut stale = Vec::new();
        {
            let mut stmt = h
                .conn
                .prepare(
                    "SELECT variant FROM variants UNION SELECT variant FROM events \
                 UNION SELECT variant FROM jobs UNION SELECT variant FROM tasks",
                )
                .map_err(HandlerError::sqlite)?;
            let mut rows = stmt.query([]).map_err(HandlerError::sqlite)?;
            while let Some(row) = rows.next().map_err(HandlerError::sqlite)? {
                let v: i64 = row.get(0).map_err(HandlerError::sqlite)?;
                match u64::try_from(v) {
                    Ok(u) if is_done(u) => {}
                    _ => stale.push(v),
                }
            }
        }
        if !stale.is_empty() {
            let tx = h.conn.transaction().map_err(HandlerError::sqlite)?;
            for table in ["events", "jobs", "variants", "tasks"] {
                let mut stmt = tx
                    .prepare(&format!("DELETE FROM {table} WHERE variant = ?1"))
                    .map_err(HandlerError::sqlite)?;
                for v in &stale {
                    stmt.execute([v]).map_err(HandlerError::sqlite)?;
                }
            }
            tx.commit().map_err(HandlerError::sqlite)?;
            tracing::info!(path = %path.display(), variants = stale.len(), "deleted rows of unfinished variants for resume");
        }
        Ok(h)
    }

    fn open(
        path: &Path,
        resuming: bool,
        previous_run: Option<RunFile>,
    ) -> Result<Self, HandlerError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| HandlerError::io(parent, e))?;
        }
        let conn = Connection::open(path).map_err(HandlerError::sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(HandlerError::sqlite)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(HandlerError::sqlite)?;
        check_columns(&conn, path)?;
        conn.execute_batch(SCHEMA).map_err(HandlerError::sqlite)?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(SqliteHandler {
            path: path.to_owned(),
            conn,
            in_tx: false,
            pending: 0,
            table: JobTable::default(),
            text: String::new(),
            batch_sql: insert_events_sql(EVENT_BATCH),
            run: None,
            previous_run,
            resuming,
        })
    }

    fn read_run(&self) -> Result<Option<RunFile>, HandlerError> {
        let mut stmt = self
            .conn
            .prepare("SELECT json FROM run WHERE id = 1")
            .map_err(HandlerError::sqlite)?;
        let mut rows = stmt.query([]).map_err(HandlerError::sqlite)?;
        match rows.next().map_err(HandlerError::sqlite)? {
            Some(row) => {
                let json: String = row.get(0).map_err(HandlerError::sqlite)?;
                Ok(Some(
                    serde_json::from_str(&json).map_err(HandlerError::json)?,
                ))
            }
            None => Ok(None),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open connection, for queries of the results so far (commit with
    /// [`SqliteHandler::commit`] first to see uncommitted rows from other connections).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn begin(&mut self) -> Result<(), HandlerError> {
        if !self.in_tx {
            self.conn
                .execute_batch("BEGIN")
                .map_err(HandlerError::sqlite)?;
            self.in_tx = true;
        }
        Ok(())
    }

    fn counted(&mut self, rows: u64) -> Result<(), HandlerError> {
        self.pending += rows;
        if self.pending >= MAX_PENDING_ROWS {
            self.commit()?;
        }
        Ok(())
    }

    /// Commit the open transaction (synchronous form of `flush`).
    pub fn commit(&mut self) -> Result<(), HandlerError> {
        if self.in_tx {
            self.conn
                .execute_batch("COMMIT")
                .map_err(HandlerError::sqlite)?;
            self.in_tx = false;
            self.pending = 0;
        }
        Ok(())
    }

    fn store_run(&mut self) -> Result<(), HandlerError> {
        let Some(run) = &self.run else {
            return Ok(());
        };
        let json = serde_json::to_string(run).map_err(HandlerError::json)?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO run VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    run.tool_version,
                    run.spec_name,
                    run.seed.to_string(),
                    run.dialect,
                    int("start time", run.started_at_unix_us)?,
                    run.finished_at_unix_us
                        .map(|t| int("end time", t))
                        .transpose()?,
                    run.resumed,
                    json
                ],
            )
            .map_err(HandlerError::sqlite)?;
        Ok(())
    }

    /// Store the run description (synchronous form of `run_started`).
    pub fn write_run(&mut self, run: &RunInfo) -> Result<(), HandlerError> {
        self.run = Some(RunFile::new(run, self.previous_run.as_ref(), self.resuming));
        self.begin()?;
        self.store_run()
    }

    /// Insert the rows of a finished attempt.
    pub fn write_finished(&mut self, v: &VariantFinished) -> Result<(), HandlerError> {
        self.begin()?;
        let variant = int("variant", v.id.variant)?;
        self.text.clear();
        let _ = write!(self.text, "{}", v.id.target);
        self.table.compute(&v.events);
        {
            let events: Vec<(usize, &crate::event::TimedEvent, u32)> = v
                .events
                .iter()
                .zip(self.table.event_jobs())
                .enumerate()
                .map(|(seq, (e, &job))| (seq, e, job))
                .collect();
            let mut chunks = events.chunks_exact(EVENT_BATCH);
            let mut batch = self
                .conn
                .prepare_cached(&self.batch_sql)
                .map_err(HandlerError::sqlite)?;
            for chunk in &mut chunks {
                let mut i = 1;
                for &(seq, e, job) in chunk {
                    batch
                        .raw_bind_parameter(i, variant)
                        .map_err(HandlerError::sqlite)?;
                    batch
                        .raw_bind_parameter(i + 1, v.id.attempt)
                        .map_err(HandlerError::sqlite)?;
                    batch
                        .raw_bind_parameter(i + 2, seq as i64)
                        .map_err(HandlerError::sqlite)?;
                    batch
                        .raw_bind_parameter(i + 3, self.text.as_str())
                        .map_err(HandlerError::sqlite)?;
                    batch
                        .raw_bind_parameter(i + 4, e.event.task_id)
                        .map_err(HandlerError::sqlite)?;
                    batch
                        .raw_bind_parameter(i + 5, job)
                        .map_err(HandlerError::sqlite)?;
                    batch
                        .raw_bind_parameter(i + 6, e.event.kind.as_wire())
                        .map_err(HandlerError::sqlite)?;
                    batch
                        .raw_bind_parameter(i + 7, int("target time", e.event.time_ms)?)
                        .map_err(HandlerError::sqlite)?;
                    batch
                        .raw_bind_parameter(i + 8, int("host time", unix_us(e.host_time))?)
                        .map_err(HandlerError::sqlite)?;
                    i += 9;
                }
                batch.raw_execute().map_err(HandlerError::sqlite)?;
            }
            let mut stmt = self
                .conn
                .prepare_cached(INSERT_EVENT)
                .map_err(HandlerError::sqlite)?;
            for &(seq, e, job) in chunks.remainder() {
                stmt.execute(params![
                    variant,
                    v.id.attempt,
                    seq as i64,
                    self.text,
                    e.event.task_id,
                    job,
                    e.event.kind.as_wire(),
                    int("target time", e.event.time_ms)?,
                    int("host time", unix_us(e.host_time))?,
                ])
                .map_err(HandlerError::sqlite)?;
            }
            let mut stmt = self
                .conn
                .prepare_cached(INSERT_JOB)
                .map_err(HandlerError::sqlite)?;
            for j in self.table.jobs() {
                stmt.execute(params![
                    variant,
                    v.id.attempt,
                    self.text,
                    j.task_id,
                    j.job,
                    j.start_ms(&v.events).map(|t| int("start", t)).transpose()?,
                    j.end_ms(&v.events).map(|t| int("end", t)).transpose()?,
                    j.exit_kind(&v.events).map(|k| k.as_wire()),
                    j.duration_ms(&v.events)
                        .map(|t| int("duration", t))
                        .transpose()?,
                ])
                .map_err(HandlerError::sqlite)?;
            }
            let mut stmt = self
                .conn
                .prepare_cached(INSERT_VARIANT)
                .map_err(HandlerError::sqlite)?;
            stmt.execute(params![
                variant,
                "done",
                v.id.attempt,
                self.text,
                int("start time", unix_us(v.started_at))?,
                int("end time", unix_us(v.finished_at))?,
                int("duration", duration_us(v.started_at, v.finished_at))?,
                v.taskset.tasks.len() as i64,
                v.events.len() as i64,
                None::<&str>,
            ])
            .map_err(HandlerError::sqlite)?;
        }
        self.insert_tasks(variant, &v.taskset.tasks)?;
        let rows = (v.events.len() + self.table.jobs().len() + 1 + v.taskset.tasks.len()) as u64;
        self.counted(rows)
    }

    /// Insert the rows of a variant given up as bad.
    pub fn write_bad(&mut self, v: &VariantBad) -> Result<(), HandlerError> {
        self.begin()?;
        let variant = int("variant", v.id.variant)?;
        {
            let mut stmt = self
                .conn
                .prepare_cached(INSERT_VARIANT)
                .map_err(HandlerError::sqlite)?;
            stmt.execute(params![
                variant,
                "bad",
                v.id.attempt,
                v.id.target.to_string(),
                int("start time", unix_us(v.started_at))?,
                int("end time", unix_us(v.finished_at))?,
                int("duration", duration_us(v.started_at, v.finished_at))?,
                v.taskset.tasks.len() as i64,
                0i64,
                v.reason,
            ])
            .map_err(HandlerError::sqlite)?;
        }
        self.insert_tasks(variant, &v.taskset.tasks)?;
        self.counted(1 + v.taskset.tasks.len() as u64)
    }

    fn insert_tasks(
        &mut self,
        variant: i64,
        tasks: &[taskdist_tasksets::Task],
    ) -> Result<(), HandlerError> {
        let mut stmt = self
            .conn
            .prepare_cached(INSERT_TASK)
            .map_err(HandlerError::sqlite)?;
        for t in tasks {
            stmt.execute(params![
                variant,
                t.id,
                int("executiontime", t.executiontime_ms)?,
                int("criticaltime", t.criticaltime_ms)?,
                t.priority,
                int("deadline", t.deadline_ms)?,
                int("period", t.period_ms)?,
                int("offset", t.offset_ms)?,
                t.numberofjobs,
                int("quota", t.quota_bytes)?,
                t.caps,
                t.cores,
                t.coreoffset,
                t.pkg,
                encode_config(&t.config),
            ])
            .map_err(HandlerError::sqlite)?;
        }
        Ok(())
    }

    /// Store the summary and commit (synchronous form of `run_finished`).
    pub fn write_summary(&mut self, summary: &RunSummary) -> Result<(), HandlerError> {
        if let Some(run) = &mut self.run {
            run.finished_at_unix_us = Some(unix_us(std::time::SystemTime::now()));
            run.summary = Some(summary.clone());
            self.begin()?;
            self.store_run()?;
        }
        self.commit()
    }
}

#[async_trait]
impl EventHandler for SqliteHandler {
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
        self.commit()
    }
}
