//! The service's durable state: experiments, registered targets and tokens, in one SQLite
//! database (`DIR/taskdist.db`). Every call blocks briefly; the service makes them from
//! blocking threads.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::{ExperimentState, ServiceError, SubmitRequest, TargetRegistration};

/// The database file in the data directory.
pub const DB_FILE: &str = "taskdist.db";

/// One experiment as stored.
#[derive(Debug, Clone)]
pub(crate) struct ExperimentRow {
    pub id: u64,
    pub name: String,
    pub request: SubmitRequest,
    pub state: ExperimentState,
    pub error: Option<String>,
    pub created_at: f64,
    pub finished_at: Option<f64>,
    /// Outcomes when it ended (done, bad).
    pub done: u64,
    pub bad: u64,
}

/// The service's database.
#[derive(Debug)]
pub(crate) struct Store {
    conn: Mutex<Connection>,
}

fn db_err(e: rusqlite::Error) -> ServiceError {
    ServiceError::Store(e.to_string())
}

impl Store {
    /// Open (and create or upgrade) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Store, ServiceError> {
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path)
            .map_err(|e| ServiceError::Store(format!("{}: {e}", path.display())))?;
        // WAL: readers do not wait for the writer; synchronous=FULL: a committed state change
        // survives a power loss, not only a killed process.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS experiments (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 name TEXT NOT NULL,
                 request TEXT NOT NULL,
                 state TEXT NOT NULL,
                 error TEXT,
                 created_at REAL NOT NULL,
                 finished_at REAL,
                 done INTEGER NOT NULL DEFAULT 0,
                 bad INTEGER NOT NULL DEFAULT 0
             );
             CREATE TABLE IF NOT EXISTS targets (
                 address TEXT PRIMARY KEY,
                 registration TEXT NOT NULL,
                 registered_at REAL NOT NULL
             );
             CREATE TABLE IF NOT EXISTS tokens (
                 kind TEXT PRIMARY KEY,
                 token TEXT NOT NULL
             );",
        )
        .map_err(db_err)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token of `kind`, created with `make` on first use; and whether it was created.
    pub fn token(
        &self,
        kind: &str,
        make: impl FnOnce() -> String,
    ) -> Result<(String, bool), ServiceError> {
        let conn = self.conn();
        let found: Option<String> = conn
            .query_row("SELECT token FROM tokens WHERE kind = ?1", [kind], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err)?;
        if let Some(t) = found {
            return Ok((t, false));
        }
        let t = make();
        conn.execute(
            "INSERT INTO tokens (kind, token) VALUES (?1, ?2)",
            params![kind, t],
        )
        .map_err(db_err)?;
        Ok((t, true))
    }

    /// Store a new experiment; returns its id.
    pub fn insert_experiment(
        &self,
        name: &str,
        request: &SubmitRequest,
        state: ExperimentState,
        now: f64,
    ) -> Result<u64, ServiceError> {
        let json =
            serde_json::to_string(request).map_err(|e| ServiceError::Store(e.to_string()))?;
        let conn = self.conn();
        conn.execute(
            "INSERT INTO experiments (name, request, state, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, json, state.as_str(), now],
        )
        .map_err(db_err)?;
        Ok(conn.last_insert_rowid() as u64)
    }

    /// Change an experiment's state (and error, and end time for final states).
    pub fn set_state(
        &self,
        id: u64,
        state: ExperimentState,
        error: Option<&str>,
        now: f64,
    ) -> Result<(), ServiceError> {
        let finished = state.is_final().then_some(now);
        self.conn()
            .execute(
                "UPDATE experiments SET state = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
                params![id as i64, state.as_str(), error, finished],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Record an experiment's outcome counts.
    pub fn set_counts(&self, id: u64, done: u64, bad: u64) -> Result<(), ServiceError> {
        self.conn()
            .execute(
                "UPDATE experiments SET done = ?2, bad = ?3 WHERE id = ?1",
                params![id as i64, done as i64, bad as i64],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Every experiment, oldest first.
    pub fn experiments(&self) -> Result<Vec<ExperimentRow>, ServiceError> {
        let conn = self.conn();
        let mut st = conn
            .prepare(
                "SELECT id, name, request, state, error, created_at, finished_at, done, bad
                 FROM experiments ORDER BY id",
            )
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, f64>(5)?,
                    r.get::<_, Option<f64>>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                ))
            })
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, request, state, error, created_at, finished_at, done, bad) =
                row.map_err(db_err)?;
            let request: SubmitRequest = serde_json::from_str(&request).map_err(|e| {
                ServiceError::Store(format!("experiment {id}: stored request: {e}"))
            })?;
            let state = ExperimentState::parse(&state).ok_or_else(|| {
                ServiceError::Store(format!("experiment {id}: unknown state {state:?}"))
            })?;
            out.push(ExperimentRow {
                id: id as u64,
                name,
                request,
                state,
                error,
                created_at,
                finished_at,
                done: done as u64,
                bad: bad as u64,
            });
        }
        Ok(out)
    }

    /// Remember a registered target (replacing an earlier registration of the address).
    pub fn put_target(&self, reg: &TargetRegistration, now: f64) -> Result<(), ServiceError> {
        let json = serde_json::to_string(reg).map_err(|e| ServiceError::Store(e.to_string()))?;
        self.conn()
            .execute(
                "INSERT INTO targets (address, registration, registered_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(address) DO UPDATE SET registration = ?2, registered_at = ?3",
                params![reg.key(), json, now],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Forget a registered target; returns whether it was registered.
    pub fn delete_target(&self, key: &str) -> Result<bool, ServiceError> {
        let n = self
            .conn()
            .execute("DELETE FROM targets WHERE address = ?1", [key])
            .map_err(db_err)?;
        Ok(n > 0)
    }

    /// Every registered target.
    pub fn targets(&self) -> Result<Vec<TargetRegistration>, ServiceError> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT registration FROM targets ORDER BY registered_at")
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let text = row.map_err(db_err)?;
            out.push(
                serde_json::from_str(&text)
                    .map_err(|e| ServiceError::Store(format!("stored target: {e}")))?,
            );
        }
        Ok(out)
    }
}
