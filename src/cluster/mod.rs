//! Scale-out through PostgreSQL: several distributors, each with its own targets, share one
//! experiment.
//!
//! The experiment lives in the database ([`PgStore::join`]: the first distributor creates
//! it, the others attach to it by id or by the same spec, seed and selection). Its variant
//! indices are cut lazily into chunks; a distributor claims a chunk with a lease on the
//! database's clock and renews it while it works. A chunk whose lease expired (its
//! distributor died, froze or lost the database) is taken over by another one, which skips
//! the variants that already have a result.
//!
//! Every claim carries a fencing token. A batch of results is written in one transaction
//! that first locks the batch's chunks and checks that this distributor still holds them
//! with the same token and an unexpired lease; the result rows, the outcome rows and the
//! chunks' progress commit together, so a distributor that lost its lease writes nothing,
//! and every variant has exactly one outcome without a merge step. Rows are keyed by
//! `(experiment, variant, ...)` and inserted with `ON CONFLICT DO NOTHING`.
//!
//! Losing the database: the distributor stops claiming work, keeps running the variants of
//! its chunks only while their leases can still be valid, keeps their results in memory and
//! writes them after reconnecting (with backoff); results of a chunk whose lease ran out are
//! dropped, since another distributor does those variants again.
//!
//! Every distributor runs the same code, on its own machine with its own targets; the
//! first one to arrive creates the experiment:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use taskdist::cluster::PgStore;
//! use taskdist::distributor::Distributor;
//! use taskdist::tasksets::Spec;
//! use taskdist::HandlerKind;
//!
//! let store = PgStore::connect("postgres://taskdist:secret@127.0.0.1/lab").await?;
//! let mut d = Distributor::builder()
//!     .hosts(["10.1.0.0/24"])?
//!     .limit(20_000)
//!     .store(store.clone(), None) // the id: derived from the spec, seed and limit
//!     .build()?;
//! d.start(Spec::load("hey")?).await?;
//! let id = d.experiment().cloned().expect("joined");
//! println!("experiment {id}");
//! d.wait().await?; // until no variant is left for this distributor
//! d.close().await?;
//! // The same files as a local run, from whichever machine:
//! store.export(&id, "results".as_ref(), &[HandlerKind::Csv]).await?;
//! # Ok(()) }
//! ```

mod export;
mod rows;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use taskdist_handlers::{
    EventHandler, HandlerError, JobTable, RunInfo, VariantBad, VariantFinished,
};
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

use crate::distributor::{
    fingerprint, run_fingerprint, DistributorError, LedgerError, OutcomeLog, RangeSet, Selection,
    WorkQueue, Workload,
};
pub use export::ExportSummary;
use rows::VariantRows;

const SCHEMA: &str = include_str!("schema.sql");
/// The version `schema.sql` writes into `taskdist.meta`.
const SCHEMA_VERSION: i64 = 1;
/// Advisory lock taken while the schema is created (any constant unlikely to clash).
const SCHEMA_LOCK: i64 = 0x7461_736b_6469_7374;
/// Size of the first chunk a distributor claims, before it knows its rate.
const FIRST_CHUNK: i64 = 64;
/// A chunk should last about this long at the distributor's observed rate.
const CHUNK_SECONDS: f64 = 20.0;
/// Chunk sizes stay between these.
const MIN_CHUNK: i64 = 16;
const MAX_CHUNK: i64 = 1_000_000;
/// Claim more once fewer variants than this many seconds' worth wait undispatched, so the
/// queue does not run dry while a claim or a batch of writes is under way (a dry queue
/// would let a lower-priority experiment take the targets).
const PREFETCH_SECONDS: f64 = 2.0;
/// A paused experiment hands its chunks back this long after its last running attempt ended
/// (its results are written by then: the recorder flushes every 200 ms).
const PAUSE_HAND_BACK: Duration = Duration::from_secs(1);
/// At most this many chunks held at once (their results may still be waiting to be written).
const MAX_HELD: usize = 16;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The connection URL could not be parsed.
    #[error(
        "store URL {url}: {reason} (expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)"
    )]
    Url {
        /// The URL, with any password hidden.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The database refused a request or could not be reached.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// An experiment of this id exists with another spec, seed, admission data or limit.
    #[error("experiment {id} in the store runs a different spec, seed, admission data or limit (fingerprint {found}, this run has {expected}); attach with the same spec and options, or choose another --experiment id")]
    Mismatch {
        /// The experiment's id.
        id: String,
        /// Fingerprint stored with the experiment.
        found: String,
        /// Fingerprint of this spec and selection.
        expected: String,
    },
    /// No experiment of this id.
    #[error("experiment {0} not found in the store")]
    NotFound(String),
    /// The request cannot work as given.
    #[error("{0}")]
    Invalid(String),
    /// Writing the exported files failed.
    #[error(transparent)]
    Export(#[from] crate::ResultDirError),
    /// A result handler failed during an export.
    #[error("export: {0}")]
    Handler(#[from] HandlerError),
    /// The stored ledger could not be written during an export.
    #[error("export: {0}")]
    Ledger(#[from] LedgerError),
}

/// Whether a database error is worth a reconnect and a retry (the connection or the server
/// went away), rather than a bug or a refusal.
fn transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let c = code.code();
        return c.starts_with("08")
            || c.starts_with("57P")
            || c.starts_with("53")
            || c == "40001"
            || c == "40P01";
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if s.is::<std::io::Error>() {
            return true;
        }
        src = s.source();
    }
    // No SQL state and no I/O cause: the connection broke before an answer.
    e.as_db_error().is_none() && e.to_string().contains("connection")
}

/// An experiment's id in the store: 1 to 64 of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExperimentId(String);

impl std::str::FromStr for ExperimentId {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(ExperimentId(s.to_owned()))
        } else {
            Err(StoreError::Invalid(format!(
                "experiment id {s:?}: expected 1 to 64 letters, digits, '.', '_' or '-'"
            )))
        }
    }
}

impl std::fmt::Display for ExperimentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A PostgreSQL database holding shared experiments (see the [module docs](self)).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: tokio_postgres::Config,
    shown: String,
    owner: String,
    lease: Duration,
    give_up_after: Duration,
    round_trips: AtomicU64,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.inner.shown)
            .field("owner", &self.inner.owner)
            .field("lease", &self.inner.lease)
            .finish()
    }
}

/// The URL with its password replaced by `***`.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl Inner {
    async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, conn) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    fn trip(&self, n: u64) {
        self.round_trips.fetch_add(n, Ordering::Relaxed);
    }
}

impl PgStore {
    /// Connect to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`,
    /// or the key-value form `host=... user=... dbname=...`) and create taskdist's tables in
    /// the schema `taskdist` if they are missing. Leases last 30 s.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let shown = hide_password(url);
        let mut config: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| StoreError::Url {
                    url: shown.clone(),
                    reason: e.to_string(),
                })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.keepalives_idle(Duration::from_secs(10));
        config.application_name("taskdist");
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        let owner = format!(
            "{host}:{}:{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let store = PgStore {
            inner: Arc::new(Inner {
                config,
                shown,
                owner,
                lease: Duration::from_secs(30),
                give_up_after: Duration::from_secs(600),
                round_trips: AtomicU64::new(0),
            }),
        };
        let mut client = store.inner.connect().await?;
        let current = client
            .query_opt(
                "SELECT version FROM taskdist.meta WHERE to_regclass('taskdist.meta') IS NOT NULL",
                &[],
            )
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.get::<_, i64>(0) == SCHEMA_VERSION);
        if current {
            return Ok(store);
        }
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await?;
        tx.batch_execute(SCHEMA).await?;
        tx.commit().await?;
        Ok(store)
    }

    /// Leases of chunks and targets last `lease` (at least 1 s; default 30 s) and are renewed
    /// every third of it. A distributor that stops for longer loses its chunks to others.
    pub fn lease(mut self, lease: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.lease = lease.max(Duration::from_secs(1));
        } else {
            tracing::warn!("lease not changed: the store is already in use");
        }
        self
    }

    /// An experiment stops when the database has been unreachable this long (default
    /// 10 minutes); it can be joined again later.
    pub fn give_up_after(mut self, d: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.give_up_after = d;
        }
        self
    }

    /// This process's name in the store's `owner` and `distributor` columns.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Database round trips made so far by everything using this store (for measurements).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// Create the experiment of `workload` and `selection`, or attach to it if it exists.
    /// Its id is [`JoinOptions::id`], or else derived from the spec's name and the
    /// fingerprint of spec, seed, admission data and limit, so processes given the same
    /// spec and options meet in the same experiment. An existing experiment with that id
    /// but another fingerprint is refused. Sharding does not mix with a store (the store
    /// splits the work).
    pub async fn join(
        &self,
        workload: &Workload,
        selection: Selection,
        opts: JoinOptions,
    ) -> Result<Joined, StoreError> {
        if selection.shard.is_some() {
            return Err(StoreError::Invalid(
                "a shard selection and a store do not mix: the store divides the variants among the distributors that join".into(),
            ));
        }
        let limit = selection.limit.map(|l| l.to_string()).unwrap_or_default();
        let fp = fingerprint(&[&run_fingerprint(workload, selection), &limit]);
        let name = opts.name.clone().unwrap_or_else(|| workload.source.name());
        let id = match &opts.id {
            Some(id) => id.clone(),
            None => {
                let stem: String = name
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                            c
                        } else {
                            '-'
                        }
                    })
                    .take(40)
                    .collect();
                format!("{stem}-{fp}").parse()?
            }
        };
        let len = workload.source.variant_count();
        let planned = selection.planned(len);
        let info = RunInfo {
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            spec_name: workload.source.name(),
            spec_text: workload.source.text(),
            seed: workload.source.seed(),
            total_variants: len.map(u128::from),
            planned_variants: planned,
            dialect: opts.dialect.clone(),
            command: opts.command.clone(),
            started_at: std::time::SystemTime::now(),
        };
        let client = self.inner.connect().await?;
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let inserted = client
            .execute(
                "INSERT INTO taskdist.experiments (id, fingerprint, name, spec_text, seed, \
                 admission, variant_limit, planned, priority, run_info) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
                &[
                    &id.0,
                    &fp,
                    &name,
                    &workload.source.text(),
                    &workload.source.seed().to_string(),
                    &workload.admission.as_ref().map(|a| a.to_xml()),
                    &selection.limit.map(to_i64),
                    &planned.map(to_i64),
                    &opts.priority,
                    &serde_json::to_string(&info).unwrap_or_default(),
                ],
            )
            .await?;
        let row = client
            .query_one(
                "SELECT fingerprint, priority FROM taskdist.experiments WHERE id = $1",
                &[&id.0],
            )
            .await?;
        let found: String = row.get(0);
        let priority: i64 = row.get(1);
        if found != fp {
            return Err(StoreError::Mismatch {
                id: id.0,
                found,
                expected: fp,
            });
        }
        self.inner.trip(3);
        Ok(Joined {
            id: id.clone(),
            created: inserted == 1,
            priority,
            state: Arc::new(ExpState {
                id: id.0.clone(),
                store: self.inner.clone(),
                held: Mutex::new(BTreeMap::new()),
                pending: Mutex::new(HashMap::new()),
                queue: OnceLock::new(),
                recorded: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
            }),
        })
    }

    /// Target leases in this store, for [`PoolConfig::target_leases`](crate::pool::PoolConfig):
    /// several distributors given overlapping target ranges never drive one target at once.
    /// A target is known by its address as each distributor sees it.
    pub fn target_leases(&self) -> Arc<dyn crate::pool::TargetLeases> {
        Arc::new(PgTargetLeases {
            store: self.inner.clone(),
            conn: tokio::sync::Mutex::new(Conn::new(self.inner.clone())),
        })
    }

    /// Progress of an experiment as the database records it.
    pub async fn status(&self, id: &ExperimentId) -> Result<ClusterStatus, StoreError> {
        let client = self.inner.connect().await?;
        let row = client
            .query_opt(
                "SELECT e.planned, e.cut, \
                   (SELECT count(*) FROM taskdist.chunks c WHERE c.experiment = e.id AND NOT c.finished), \
                   (SELECT count(*) FROM taskdist.variants v WHERE v.experiment = e.id AND v.outcome = 'done'), \
                   (SELECT count(*) FROM taskdist.variants v WHERE v.experiment = e.id AND v.outcome = 'bad'), \
                   (SELECT count(DISTINCT v.distributor) FROM taskdist.variants v WHERE v.experiment = e.id) \
                 FROM taskdist.experiments e WHERE e.id = $1",
                &[&id.0],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(id.0.clone()))?;
        let planned: Option<i64> = row.get(0);
        let cut: i64 = row.get(1);
        let open: i64 = row.get(2);
        Ok(ClusterStatus {
            planned: planned.map(|p| p as u64),
            done: row.get::<_, i64>(3) as u64,
            bad: row.get::<_, i64>(4) as u64,
            distributors: row.get::<_, i64>(5) as u64,
            complete: planned.is_some_and(|p| cut >= p) && open == 0,
        })
    }

    /// Write the results of experiment `id` into `out` as a local run of the same spec and
    /// seed would (the files of `kinds`, `run.json` and the ledger), so analysis code reads
    /// them unchanged. `out` must not hold a run yet.
    pub async fn export(
        &self,
        id: &ExperimentId,
        out: &std::path::Path,
        kinds: &[crate::HandlerKind],
    ) -> Result<ExportSummary, StoreError> {
        export::export(&self.inner, &id.0, out, kinds).await
    }
}

/// How to join an experiment (see [`PgStore::join`]).
#[derive(Debug, Clone, Default)]
pub struct JoinOptions {
    /// The experiment's id; default: derived from the spec's name and fingerprint.
    pub id: Option<ExperimentId>,
    /// Its name (default: the spec's name).
    pub name: Option<String>,
    /// Its priority among the store's experiments, recorded when it is created; a joiner
    /// gets the recorded one ([`Joined::priority`]).
    pub priority: i64,
    /// Protocol dialects of the creator's targets, for `run.json`.
    pub dialect: String,
    /// The creator's command line, for `run.json`.
    pub command: Vec<String>,
}

/// An experiment's progress in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Variants selected (None: endless).
    pub planned: Option<u64>,
    /// Variants done.
    pub done: u64,
    /// Variants given up as bad.
    pub bad: u64,
    /// Distributors that wrote at least one outcome.
    pub distributors: u64,
    /// Every selected variant has an outcome.
    pub complete: bool,
}

/// This process's membership in a shared experiment: pass it to
/// [`Experiment::store`](crate::pool::Experiment::store).
#[derive(Clone)]
pub struct Joined {
    id: ExperimentId,
    created: bool,
    priority: i64,
    state: Arc<ExpState>,
}

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined")
            .field("id", &self.id)
            .field("created", &self.created)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

impl Joined {
    /// The experiment's id.
    pub fn id(&self) -> &ExperimentId {
        &self.id
    }
    /// Whether this process created the experiment (rather than attaching to it).
    pub fn created(&self) -> bool {
        self.created
    }
    /// The experiment's priority as the store records it (its creator's): the priority to
    /// run it at, so that every distributor of the cluster orders its experiments alike.
    pub fn priority(&self) -> i64 {
        self.priority
    }
    /// Results this process wrote whose chunk had been taken over meanwhile (dropped).
    pub fn rejected(&self) -> u64 {
        self.state.rejected.load(Ordering::Relaxed)
    }

    /// The handler that collects result rows for the store.
    pub(crate) fn sink(&self) -> Box<dyn EventHandler> {
        Box::new(PgSink {
            state: self.state.clone(),
            table: JobTable::default(),
        })
    }

    /// The outcome log writing to the store.
    pub(crate) fn log(&self) -> Box<dyn OutcomeLog> {
        Box::new(PgLog {
            state: self.state.clone(),
            conn: Conn::new(self.state.store.clone()),
            unwritten: Vec::new(),
        })
    }

    /// Claims chunks into `queue` and keeps their leases until `stop` (after the last
    /// results are written); claims nothing new once `stopping` is cancelled.
    pub(crate) async fn feed(
        &self,
        queue: Arc<WorkQueue>,
        stopping: CancellationToken,
        stop: CancellationToken,
        paused: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<(), DistributorError> {
        feed(self.state.clone(), queue, stopping, stop, paused).await
    }
}

/// A claimed chunk.
#[derive(Debug, Clone, Copy)]
struct Held {
    end: u64,
    token: i64,
    /// The lease surely holds until then (measured from before the claim or renewal).
    valid_until: Instant,
}

pub(crate) struct ExpState {
    id: String,
    store: Arc<Inner>,
    /// Chunks this process holds, by first index.
    held: Mutex<BTreeMap<u64, Held>>,
    /// Rows of variants whose outcome is not yet recorded.
    pending: Mutex<HashMap<u64, VariantRows>>,
    queue: OnceLock<Arc<WorkQueue>>,
    recorded: AtomicU64,
    rejected: AtomicU64,
}

impl ExpState {
    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The held chunk containing `index`, with its first index.
    fn chunk_of(&self, index: u64) -> Option<(u64, Held)> {
        let held = self.held();
        held.range(..=index)
            .next_back()
            .filter(|(_, h)| index < h.end)
            .map(|(&f, &h)| (f, h))
    }

    /// Forget a chunk: it was finished, or lost to another distributor.
    fn drop_chunk(&self, first: u64, lost: bool) {
        let Some(h) = self.held().remove(&first) else {
            return;
        };
        if lost {
            tracing::warn!(experiment = %self.id, first, end = h.end, "lease of a chunk lost: its variants are left to the distributor that takes it over");
            if let Some(q) = self.queue.get() {
                q.revoke(first, h.end);
            }
        }
    }

    /// Give a held chunk back (a paused experiment): its variants not done yet are left to
    /// whoever claims it next.
    fn hand_back(&self, first: u64) {
        if let Some(h) = self.held().remove(&first) {
            if let Some(q) = self.queue.get() {
                q.revoke(first, h.end);
            }
        }
    }

    /// Drop the chunks whose lease may have expired by now (no renewal got through).
    fn expire(&self, now: Instant) {
        let gone: Vec<u64> = self
            .held()
            .iter()
            .filter(|(_, h)| h.valid_until <= now)
            .map(|(&f, _)| f)
            .collect();
        for f in gone {
            self.drop_chunk(f, true);
        }
    }
}

/// Collects each outcome's rows until the outcome log writes them.
struct PgSink {
    state: Arc<ExpState>,
    table: JobTable,
}

#[async_trait]
impl EventHandler for PgSink {
    async fn taskset_finished(&mut self, v: &VariantFinished) -> Result<(), HandlerError> {
        let rows = VariantRows::finished(v, &mut self.table);
        self.state
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(v.id.variant, rows);
        Ok(())
    }
    async fn taskset_bad(&mut self, v: &VariantBad) -> Result<(), HandlerError> {
        self.state
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(v.id.variant, VariantRows::bad(v));
        Ok(())
    }
}

/// A connection that is opened again after it broke.
struct Conn {
    store: Arc<Inner>,
    client: Option<Client>,
}

impl Conn {
    fn new(store: Arc<Inner>) -> Self {
        Conn {
            store,
            client: None,
        }
    }
    async fn get(&mut self) -> Result<&mut Client, tokio_postgres::Error> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        let client = match self.client.take() {
            Some(c) => c,
            None => self.store.connect().await?,
        };
        Ok(self.client.insert(client))
    }
    fn reset(&mut self) {
        self.client = None;
    }
}

/// Writes outcomes with their rows, fenced by the chunks' tokens.
struct PgLog {
    state: Arc<ExpState>,
    conn: Conn,
    unwritten: Vec<VariantRows>,
}

#[async_trait]
impl OutcomeLog for PgLog {
    async fn record(&mut self, batch: Vec<(u64, bool)>, last: bool) -> Result<(), LedgerError> {
        {
            let mut pending = self.state.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (i, _) in &batch {
                if let Some(r) = pending.remove(i) {
                    self.unwritten.push(r);
                }
            }
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            // Rows of chunks no longer held cannot be written: another distributor does them.
            self.state.expire(Instant::now());
            let before = self.unwritten.len();
            let state = &self.state;
            self.unwritten
                .retain(|r| state.chunk_of(r.variant as u64).is_some());
            let dropped = (before - self.unwritten.len()) as u64;
            if dropped > 0 {
                self.state.rejected.fetch_add(dropped, Ordering::Relaxed);
            }
            if self.unwritten.is_empty() {
                return Ok(());
            }
            match self.write().await {
                Ok(()) => return Ok(()),
                Err(e) if transient(&e) => {
                    self.conn.reset();
                    tracing::warn!(experiment = %self.state.id, error = %e, unwritten = self.unwritten.len(), "results wait for the database");
                    if !last {
                        return Ok(());
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(LedgerError::Store(Box::new(StoreError::Postgres(e)))),
            }
        }
    }
}

impl PgLog {
    async fn write(&mut self) -> Result<(), tokio_postgres::Error> {
        let state = self.state.clone();
        let store = state.store.clone();
        let mut tokens: Vec<i64> = self
            .unwritten
            .iter()
            .filter_map(|r| state.chunk_of(r.variant as u64).map(|(_, h)| h.token))
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        let client = self.conn.get().await?;
        let tx = client.transaction().await?;
        // The fence: chunks still ours, with the same token and an unexpired lease, locked
        // until the commit so that no claim can take them meanwhile.
        let valid: Vec<(u64, u64)> = tx
            .query(
                "SELECT first_variant, end_variant FROM taskdist.chunks \
                 WHERE experiment = $1 AND owner = $2 AND token = ANY($3) AND lease_until > now() \
                 FOR UPDATE",
                &[&state.id, &store.owner, &tokens],
            )
            .await?
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
            .collect();
        let chunk = |v: i64| {
            valid
                .iter()
                .find(|&&(a, b)| (v as u64) >= a && (v as u64) < b)
                .map(|&(a, _)| a)
        };
        let ok: Vec<&VariantRows> = self
            .unwritten
            .iter()
            .filter(|r| chunk(r.variant).is_some())
            .collect();
        let new = rows::insert(&tx, &state.id, &store.owner, &ok).await?;
        let mut per_chunk: BTreeMap<i64, i64> = BTreeMap::new();
        for &v in &new {
            if let Some(a) = chunk(v) {
                *per_chunk.entry(a as i64).or_default() += 1;
            }
        }
        let firsts: Vec<i64> = per_chunk.keys().copied().collect();
        let counts: Vec<i64> = per_chunk.values().copied().collect();
        let finished: Vec<u64> = tx
            .query(
                "UPDATE taskdist.chunks c SET recorded = c.recorded + u.n, \
                   finished = c.recorded + u.n >= c.end_variant - c.first_variant \
                 FROM unnest($2::bigint[], $3::bigint[]) AS u(f, n) \
                 WHERE c.experiment = $1 AND c.first_variant = u.f \
                 RETURNING c.first_variant, c.finished",
                &[&state.id, &firsts, &counts],
            )
            .await?
            .iter()
            .filter(|r| r.get::<_, bool>(1))
            .map(|r| r.get::<_, i64>(0) as u64)
            .collect();
        tx.commit().await?;
        store.trip(8);
        let written = ok.len();
        let lost: Vec<u64> = self
            .unwritten
            .iter()
            .filter(|r| chunk(r.variant).is_none())
            .filter_map(|r| state.chunk_of(r.variant as u64).map(|(f, _)| f))
            .collect();
        let rejected = self.unwritten.len() - written;
        self.unwritten.clear();
        state.recorded.fetch_add(written as u64, Ordering::Relaxed);
        if rejected > 0 {
            state.rejected.fetch_add(rejected as u64, Ordering::Relaxed);
            // Their chunks were taken over: stop working on them.
            let mut lost = lost;
            lost.sort_unstable();
            lost.dedup();
            for f in lost {
                state.drop_chunk(f, true);
            }
        }
        for f in finished {
            state.drop_chunk(f, false);
        }
        Ok(())
    }
}

/// The feeder: claim chunks as the queue runs low, renew leases, end the queue when the
/// experiment is complete, release what is held at the end.
async fn feed(
    state: Arc<ExpState>,
    queue: Arc<WorkQueue>,
    stopping: CancellationToken,
    stop: CancellationToken,
    paused: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), DistributorError> {
    let _ = state.queue.set(queue.clone());
    // While paused: since when no attempt of this experiment has been running.
    let mut paused_idle_since: Option<Instant> = None;
    let store = state.store.clone();
    let lease = store.lease;
    let lease_s = lease.as_secs_f64();
    let renew_every = lease / 3;
    let poll_idle = (lease / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut conn = Conn::new(store.clone());
    let mut last_renew = Instant::now();
    let mut next_claim = Instant::now();
    let mut backoff = Duration::from_millis(200);
    let mut down_since: Option<Instant> = None;
    let mut finished = false;
    let started = Instant::now();
    let mut size = FIRST_CHUNK;
    // After a successful claim the next step follows at once (the queue may want more).
    let mut claimed = false;
    loop {
        let tick = if down_since.is_some() {
            backoff
        } else if claimed {
            Duration::ZERO
        } else {
            Duration::from_millis(20)
        };
        claimed = false;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
        state.expire(Instant::now());
        let step: Result<(), tokio_postgres::Error> = async {
            let client = conn.get().await?;
            if last_renew.elapsed() >= renew_every {
                let sent = Instant::now();
                let tokens: Vec<i64> = state.held().values().map(|h| h.token).collect();
                if !tokens.is_empty() {
                    // Finished chunks come back too (a write may have finished one since
                    // the tokens were taken): they are done, not lost.
                    let answered: Vec<(i64, bool)> = client
                        .query(
                            "UPDATE taskdist.chunks SET lease_until = CASE WHEN finished \
                               THEN lease_until ELSE now() + make_interval(secs => $4) END \
                             WHERE experiment = $1 AND owner = $2 AND token = ANY($3) \
                               AND (finished OR lease_until > now()) RETURNING token, finished",
                            &[&state.id, &store.owner, &tokens, &lease_s],
                        )
                        .await?
                        .iter()
                        .map(|r| (r.get(0), r.get(1)))
                        .collect();
                    store.trip(1);
                    let (mut lost, mut done) = (Vec::new(), Vec::new());
                    {
                        let mut held = state.held();
                        for (f, h) in held.iter_mut() {
                            match answered.iter().find(|(t, _)| *t == h.token) {
                                Some((_, false)) => h.valid_until = sent + lease,
                                Some((_, true)) => done.push(*f),
                                None if tokens.contains(&h.token) => lost.push(*f),
                                None => {}
                            }
                        }
                    }
                    for f in lost {
                        state.drop_chunk(f, true);
                    }
                    for f in done {
                        state.drop_chunk(f, false);
                    }
                }
                last_renew = sent;
            }
            if paused.load(Ordering::Relaxed) && !finished {
                // Paused: claim nothing, and once the attempts running at the pause have
                // ended (and their results had a flush to be written), hand the chunks back
                // so the other distributors need not wait for the resume.
                queue.set_awaiting(false);
                if queue.in_flight() > 0 {
                    paused_idle_since = None;
                    return Ok(());
                }
                let since = *paused_idle_since.get_or_insert_with(Instant::now);
                let held: Vec<(u64, i64)> =
                    state.held().iter().map(|(f, h)| (*f, h.token)).collect();
                if held.is_empty() || since.elapsed() < PAUSE_HAND_BACK {
                    return Ok(());
                }
                let tokens: Vec<i64> = held.iter().map(|h| h.1).collect();
                client
                    .execute(
                        "UPDATE taskdist.chunks SET lease_until = now() - interval '1 second' \
                         WHERE experiment = $1 AND owner = $2 AND token = ANY($3) AND NOT finished",
                        &[&state.id, &store.owner, &tokens],
                    )
                    .await?;
                store.trip(1);
                for (f, _) in &held {
                    state.hand_back(*f);
                }
                tracing::info!(experiment = %state.id, chunks = held.len(), "paused: chunks handed back to the store");
                return Ok(());
            }
            paused_idle_since = None;
            if finished || stopping.is_cancelled() || Instant::now() < next_claim {
                return Ok(());
            }
            // Chunk size from this process's rate: a chunk should last CHUNK_SECONDS.
            let recorded = state.recorded.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64();
            let mut low = (size as u64 / 2).max(1);
            if recorded >= 32 && secs > 0.5 {
                let rate = recorded as f64 / secs;
                size = ((rate * CHUNK_SECONDS) as i64).clamp(MIN_CHUNK, MAX_CHUNK);
                low = ((rate * PREFETCH_SECONDS) as u64).clamp(1, size as u64 / 2);
            }
            // Whether written yet or not, a chunk whose variants are all handed out does
            // not hold the next claim back (up to MAX_HELD chunks).
            if queue.fresh_granted() >= low || state.held().len() >= MAX_HELD {
                return Ok(());
            }
            let sent = Instant::now();
            match claim(client, &state, size, lease_s).await? {
                Some((first, end, token, done)) => {
                    state.held().insert(
                        first,
                        Held {
                            end,
                            token,
                            valid_until: sent + lease,
                        },
                    );
                    queue.grant(first, end, &done);
                    queue.set_awaiting(true);
                    claimed = true;
                    tracing::debug!(experiment = %state.id, first, end, "chunk claimed");
                }
                None => {
                    // Nothing to claim now: the others hold the rest. Lower priorities may
                    // have this process's targets until a chunk expires.
                    queue.set_awaiting(false);
                    if complete(client, &state).await? {
                        finished = true;
                        queue.finish();
                    } else {
                        next_claim = Instant::now() + poll_idle;
                    }
                }
            }
            Ok(())
        }
        .await;
        match step {
            Ok(()) => {
                if down_since.take().is_some() {
                    tracing::info!(experiment = %state.id, "database reachable again");
                }
                backoff = Duration::from_millis(200);
            }
            Err(e) if transient(&e) => {
                conn.reset();
                queue.set_awaiting(false);
                let since = *down_since.get_or_insert_with(|| {
                    tracing::warn!(experiment = %state.id, error = %e, "database unreachable: no new work until it is back");
                    Instant::now()
                });
                if since.elapsed() >= store.give_up_after {
                    return Err(DistributorError::Internal(format!(
                        "the database ({}) was unreachable for {} s: {e}",
                        store.shown,
                        since.elapsed().as_secs()
                    )));
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(DistributorError::Internal(format!(
                    "store {}: {e}",
                    store.shown
                )))
            }
        }
    }
    // Hand back what is held, so others need not wait for the leases to expire.
    let tokens: Vec<i64> = state.held().values().map(|h| h.token).collect();
    if !tokens.is_empty() {
        if let Ok(client) = conn.get().await {
            let released = client
                .execute(
                    "UPDATE taskdist.chunks SET lease_until = now() - interval '1 second' \
                     WHERE experiment = $1 AND owner = $2 AND token = ANY($3) AND NOT finished",
                    &[&state.id, &store.owner, &tokens],
                )
                .await;
            if let Err(e) = released {
                tracing::warn!(error = %e, "chunks not released: others take them over when their leases expire");
            }
        }
        state.held().clear();
    }
    Ok(())
}

/// Take over the first expired chunk, or else cut a new one. Returns `(first, end, token,
/// indices already recorded)`.
async fn claim(
    client: &mut Client,
    state: &ExpState,
    size: i64,
    lease_s: f64,
) -> Result<Option<(u64, u64, i64, RangeSet)>, tokio_postgres::Error> {
    let store = &state.store;
    let taken = client
        .query_opt(
            "WITH c AS (SELECT first_variant FROM taskdist.chunks \
               WHERE experiment = $1 AND NOT finished AND lease_until < now() \
               ORDER BY first_variant LIMIT 1 FOR UPDATE SKIP LOCKED) \
             UPDATE taskdist.chunks k SET owner = $2, token = nextval('taskdist.fence'), \
               lease_until = now() + make_interval(secs => $3) \
             FROM c WHERE k.experiment = $1 AND k.first_variant = c.first_variant \
             RETURNING k.first_variant, k.end_variant, k.token",
            &[&state.id, &store.owner, &lease_s],
        )
        .await?;
    store.trip(1);
    if let Some(r) = taken {
        let (first, end, token): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
        let mut done = RangeSet::default();
        for row in client
            .query(
                "SELECT variant FROM taskdist.variants WHERE experiment = $1 \
                 AND variant >= $2 AND variant < $3",
                &[&state.id, &first, &end],
            )
            .await?
        {
            done.insert(row.get::<_, i64>(0) as u64);
        }
        store.trip(1);
        tracing::info!(experiment = %state.id, first, end, already = done.count(), "took over an expired chunk");
        return Ok(Some((first as u64, end as u64, token, done)));
    }
    // A new chunk: at most a sixteenth of what is left, so the end is shared out.
    let cut = client
        .query_opt(
            "WITH e AS (SELECT id, cut, planned FROM taskdist.experiments \
               WHERE id = $1 AND (planned IS NULL OR cut < planned) FOR UPDATE), \
             u AS (UPDATE taskdist.experiments x SET cut = CASE WHEN e.planned IS NULL \
                 THEN e.cut + $4 \
                 ELSE LEAST(e.planned, e.cut + GREATEST($5, LEAST($4, (e.planned - e.cut) / 16))) END \
               FROM e WHERE x.id = e.id RETURNING e.cut AS first_variant, x.cut AS end_variant) \
             INSERT INTO taskdist.chunks (experiment, first_variant, end_variant, owner, token, lease_until) \
             SELECT $1, first_variant, end_variant, $2, nextval('taskdist.fence'), \
               now() + make_interval(secs => $3) FROM u \
             RETURNING first_variant, end_variant, token",
            &[&state.id, &store.owner, &lease_s, &size, &MIN_CHUNK],
        )
        .await?;
    store.trip(1);
    Ok(cut.map(|r| {
        (
            r.get::<_, i64>(0) as u64,
            r.get::<_, i64>(1) as u64,
            r.get(2),
            RangeSet::default(),
        )
    }))
}

/// Every selected variant of the experiment has an outcome (all cut, all chunks finished).
async fn complete(client: &mut Client, state: &ExpState) -> Result<bool, tokio_postgres::Error> {
    let r = client
        .query_one(
            "SELECT e.planned IS NOT NULL AND e.cut >= e.planned AND NOT EXISTS \
               (SELECT 1 FROM taskdist.chunks c WHERE c.experiment = e.id AND NOT c.finished) \
             FROM taskdist.experiments e WHERE e.id = $1",
            &[&state.id],
        )
        .await?;
    state.store.trip(1);
    Ok(r.get(0))
}

/// Target leases in the `taskdist.targets` table.
struct PgTargetLeases {
    store: Arc<Inner>,
    conn: tokio::sync::Mutex<Conn>,
}

impl std::fmt::Debug for PgTargetLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTargetLeases")
            .field("store", &self.store.shown)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl crate::pool::TargetLeases for PgTargetLeases {
    async fn acquire(&self, addr: std::net::SocketAddr) -> Result<bool, String> {
        let mut conn = self.conn.lock().await;
        let lease_s = self.store.lease.as_secs_f64();
        let got = async {
            conn.get()
                .await?
                .query_opt(
                    "INSERT INTO taskdist.targets (address, owner, lease_until) \
                     VALUES ($1, $2, now() + make_interval(secs => $3)) \
                     ON CONFLICT (address) DO UPDATE SET owner = EXCLUDED.owner, \
                       lease_until = EXCLUDED.lease_until \
                     WHERE taskdist.targets.owner = EXCLUDED.owner \
                        OR taskdist.targets.lease_until < now() \
                     RETURNING owner",
                    &[&addr.to_string(), &self.store.owner, &lease_s],
                )
                .await
        }
        .await;
        self.store.trip(1);
        match got {
            Ok(row) => Ok(row.is_some()),
            Err(e) => {
                if transient(&e) {
                    conn.reset();
                }
                Err(e.to_string())
            }
        }
    }

    async fn release(&self, addr: std::net::SocketAddr) {
        let mut conn = self.conn.lock().await;
        if let Ok(c) = conn.get().await {
            let _ = c
                .execute(
                    "DELETE FROM taskdist.targets WHERE address = $1 AND owner = $2",
                    &[&addr.to_string(), &self.store.owner],
                )
                .await;
        }
    }

    fn renew_every(&self) -> Duration {
        self.store.lease / 3
    }
}
