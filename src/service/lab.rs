//! The service's core: the pool, the experiments on it and their durable state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::store::{ExperimentRow, Store};
use super::{
    ExperimentState, ExperimentTarget, ExperimentView, ServiceConfig, ServiceError, SubmitRequest,
    Submitted, TargetRegistration, TargetView, Validated, ENROLL_TOKEN_FILE, TOKEN_FILE,
};
use crate::distributor::{Metrics, Selection, Workload};
use crate::pool::{
    Experiment, ExperimentControl, Labels, Pool, PoolSnapshot, Selector, TargetGroup,
};
use crate::protocol::Dialect;
use crate::result_dir::DirLock;
use crate::{HandlerKind, ResultDir, ResumeOptions};
use taskdist_tasksets::{AdmissionControl, Spec, SpecError};

/// Prefix of the group of a registered target.
pub(crate) const REGISTERED: &str = "registered/";

/// Most targets registered at once (each is probed and listed).
const MAX_REGISTERED: usize = 4096;

/// An error of a request, with its HTTP status.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// 400: the request is wrong.
    Bad {
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    /// 404: no such thing.
    NotFound(String),
    /// 409: not in a state for that.
    Conflict(String),
    /// 500: the service failed.
    Internal(String),
}

impl ApiError {
    pub fn bad(message: impl Into<String>) -> Self {
        ApiError::Bad {
            message: message.into(),
            line: None,
            column: None,
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// A request checked and turned into what the pool runs.
struct Built {
    name: String,
    workload: Workload,
    selection: Selection,
    priority: i64,
    weight: f64,
    requires: Selector,
    attempts: u32,
    seed: u64,
}

/// One experiment the service knows.
struct Entry {
    row: ExperimentRow,
    priority: i64,
    weight: f64,
    requires: String,
    seed: u64,
    planned: Option<u64>,
    control: Option<ExperimentControl>,
    metrics: Option<Arc<Metrics>>,
    /// Outcomes in its ledger when the current run started (done, bad).
    base: (u64, u64),
    cancel_requested: bool,
    /// The shared store's experiment id (`serve --store`).
    store_id: Option<String>,
}

/// Where an experiment's results go.
enum Results {
    /// Its result directory, with handlers and the ledger.
    Dir(ResultDir),
    /// A shared store's experiment; exported into the result directory when complete.
    #[cfg(feature = "postgres")]
    Store(crate::cluster::Joined),
}

pub(crate) struct Lab {
    data: PathBuf,
    store: Arc<Store>,
    pool: Mutex<Option<Pool>>,
    kinds: Vec<HandlerKind>,
    #[cfg(feature = "postgres")]
    cluster: Option<crate::cluster::PgStore>,
    token: String,
    enroll: String,
    first_start: bool,
    exps: Mutex<BTreeMap<u64, Entry>>,
    /// Orders state changes of experiments (their database writes included).
    transitions: tokio::sync::Mutex<()>,
    /// Bumped whenever rendered views are dropped.
    views_gen: std::sync::atomic::AtomicU64,
    registered: Mutex<BTreeMap<String, TargetRegistration>>,
    events: broadcast::Sender<Arc<str>>,
    stopping: AtomicBool,
    waiters: Mutex<Vec<JoinHandle<()>>>,
    /// Rendered experiment views (`None`: the list) and when they were rendered.
    views: Mutex<std::collections::HashMap<Option<u64>, (std::time::Instant, bytes::Bytes)>>,
    _lock: DirLock,
}

/// How long a rendered experiment view serves polls (a state change renders afresh).
const VIEW_TTL: Duration = Duration::from_millis(100);

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// 32 random bytes from the operating system, in hex.
fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Write `text` to `path`, readable by the owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    writeln!(f, "{text}")?;
    f.sync_all()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("blocking task: {e}")))?
}

impl Lab {
    pub async fn open(cfg: &ServiceConfig) -> Result<Arc<Lab>, ServiceError> {
        let data = cfg.data.clone();
        let data_err = |message: String| ServiceError::Data {
            path: data.clone(),
            message,
        };
        std::fs::create_dir_all(data.join("experiments"))
            .map_err(|e| data_err(format!("cannot create it: {e}")))?;
        // The database holds the tokens: the directory is its owner's alone.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| data_err(format!("cannot make it private (mode 0700): {e}")))?;
        }
        let (lock, _) = DirLock::acquire(&data).map_err(|e| data_err(e.to_string()))?;
        let store = Arc::new(Store::open(&data)?);
        let (token, created) = store.token("admin", new_token)?;
        let (enroll, _) = store.token("enroll", new_token)?;
        for (file, t) in [(TOKEN_FILE, &token), (ENROLL_TOKEN_FILE, &enroll)] {
            write_private(&data.join(file), t)
                .map_err(|e| data_err(format!("cannot write {file}: {e}")))?;
        }
        #[allow(unused_mut)]
        let mut pool_cfg = cfg.pool.clone();
        #[cfg(feature = "postgres")]
        if let Some(c) = &cfg.store {
            pool_cfg.target_leases = Some(c.target_leases());
        }
        let pool = Pool::start(pool_cfg)?;
        let (events, _) = broadcast::channel(1024);
        let lab = Arc::new(Lab {
            data,
            store: store.clone(),
            pool: Mutex::new(Some(pool)),
            kinds: cfg.handlers.clone(),
            #[cfg(feature = "postgres")]
            cluster: cfg.store.clone(),
            token,
            enroll,
            first_start: created,
            exps: Mutex::new(BTreeMap::new()),
            registered: Mutex::new(BTreeMap::new()),
            events,
            stopping: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
            views: Mutex::new(std::collections::HashMap::new()),
            transitions: tokio::sync::Mutex::new(()),
            views_gen: std::sync::atomic::AtomicU64::new(0),
            _lock: lock,
        });
        // Registered targets rejoin; unfinished experiments continue.
        for reg in store.targets()? {
            if let Err(e) = lab.add_registered(&reg) {
                tracing::warn!(target = %reg.key(), error = ?e, "a registered target cannot rejoin");
            }
        }
        for row in store.experiments()? {
            lab.restore(row).await;
        }
        Ok(lab)
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether this start created the data directory's tokens.
    pub fn first_start(&self) -> bool {
        self.first_start
    }

    pub fn enroll_token(&self) -> &str {
        &self.enroll
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.events.subscribe()
    }

    /// The current state of every experiment and target as event-stream frames.
    pub fn state_frames(&self) -> String {
        let mut out = String::new();
        for e in self.experiments() {
            if let Ok(j) = serde_json::to_string(&e) {
                out.push_str(&format!("event: experiment\ndata: {j}\n\n"));
            }
        }
        for t in self.targets() {
            if let Ok(j) = serde_json::to_string(&t) {
                out.push_str(&format!("event: target\ndata: {j}\n\n"));
            }
        }
        out
    }

    fn with_pool<R>(&self, f: impl FnOnce(&Pool) -> R) -> Option<R> {
        self.pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(f)
    }

    fn exps(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        // Whoever may change an experiment drops the rendered views.
        self.views_gen.fetch_add(1, Ordering::SeqCst);
        self.views.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.exps.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn exps_read(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.exps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The JSON of `render()`, rendered at most every [`VIEW_TTL`] for `key`.
    pub fn cached_json<T: serde::Serialize>(
        &self,
        key: Option<u64>,
        render: impl FnOnce() -> Result<T, ApiError>,
    ) -> Result<bytes::Bytes, ApiError> {
        let now = std::time::Instant::now();
        if let Some((at, b)) = self
            .views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if now.duration_since(*at) < VIEW_TTL {
                return Ok(b.clone());
            }
        }
        let gen = self.views_gen.load(Ordering::SeqCst);
        let value = render()?;
        let b = bytes::Bytes::from(
            serde_json::to_vec(&value).map_err(|e| ApiError::Internal(e.to_string()))?,
        );
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        // Kept only if nothing changed while it was rendered.
        if self.views_gen.load(Ordering::SeqCst) == gen {
            views.insert(key, (std::time::Instant::now(), b.clone()));
        }
        Ok(b)
    }

    fn dir_of(&self, id: u64) -> PathBuf {
        self.data.join("experiments").join(id.to_string())
    }

    // -----------------------------------------------------------------------------------------
    // Experiments

    /// Check a request without running it.
    pub fn validate(&self, req: &SubmitRequest) -> Result<Validated, ApiError> {
        let b = build(req)?;
        let variants = b.workload.source.variant_count();
        Ok(Validated {
            name: b.name,
            variants,
            planned: b.selection.planned(variants),
        })
    }

    /// Store, create the result directory and start the experiment.
    pub async fn submit(self: &Arc<Self>, req: SubmitRequest) -> Result<Submitted, ApiError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(ApiError::Conflict("the service is stopping".into()));
        }
        let b = build(&req)?;
        let name = b.name.clone();
        let planned = b.selection.planned(b.workload.source.variant_count());
        // Keep the spec's text, not a catalog name: a restart runs the same spec even if the
        // catalog changed with a new version.
        let mut stored = req.clone();
        stored.name = Some(name.clone());
        if stored.spec.is_none() {
            stored.spec = Some(b.workload.source.text());
            stored.catalog = None;
        }
        let store = self.store.clone();
        let (n, r) = (name.clone(), stored.clone());
        let created_at = now_s();
        let id = blocking(move || {
            Ok(store.insert_experiment(&n, &r, ExperimentState::Running, created_at)?)
        })
        .await?;
        let mut row = ExperimentRow {
            id,
            name: name.clone(),
            request: stored,
            state: ExperimentState::Running,
            error: None,
            created_at,
            finished_at: None,
            done: 0,
            bad: 0,
        };
        let results = self.results_for(id, &b, false).await;
        let started = match results {
            Ok(Some(results)) => self.launch(row.clone(), b, results, false),
            Ok(None) => Err(ApiError::Internal("no results to write to".into())),
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            let msg = match &e {
                ApiError::Bad { message, .. }
                | ApiError::NotFound(message)
                | ApiError::Conflict(message)
                | ApiError::Internal(message) => message.clone(),
            };
            let store = self.store.clone();
            let m = msg.clone();
            let _ = blocking(move || {
                Ok(store.set_state(id, ExperimentState::Failed, Some(&m), now_s())?)
            })
            .await;
            // Listed as failed, with its reason, as after a restart.
            row.state = ExperimentState::Failed;
            row.error = Some(msg);
            row.finished_at = Some(now_s());
            self.insert_entry(row, None, planned, None);
            return Err(e);
        }
        tracing::info!(id, name = %name, "experiment submitted");
        Ok(Submitted { id, name, planned })
    }

    /// Continue an experiment found in the database at start.
    async fn restore(self: &Arc<Self>, row: ExperimentRow) {
        let id = row.id;
        let b = match build(&row.request) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(id, error = ?e, "a stored experiment cannot be rebuilt");
                self.insert_entry(row, None, None, None);
                return;
            }
        };
        if row.state.is_final() {
            let planned = b.selection.planned(b.workload.source.variant_count());
            self.insert_entry(row, Some(&b), planned, None);
            return;
        }
        let paused = row.state == ExperimentState::Paused;
        #[cfg(feature = "postgres")]
        if self.cluster.is_some() {
            // The store knows what is done: join its experiment again.
            let result = match self.results_for(id, &b, true).await {
                Ok(Some(results)) => self.launch(row.clone(), b, results, paused),
                Ok(None) => Err(ApiError::Internal("no results to write to".into())),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                self.restore_failed(row, e).await;
            }
            return;
        }
        let path = self.dir_of(id);
        let (workload, selection) = (b.workload.clone(), b.selection);
        let p = path.clone();
        let dir = blocking(move || {
            // Killed between storing the experiment and creating its directory: create it.
            let has_run = p.join(crate::distributor::LEDGER_FILE).exists();
            let dir = if has_run {
                ResultDir::resume(&p, &workload, selection, ResumeOptions::default())
            } else {
                ResultDir::create(&p, &workload, selection)
            };
            dir.map_err(|e| ApiError::Internal(e.to_string()))
        })
        .await;
        let result = match dir {
            Ok(dir) if dir.is_resumed() && dir.first_missing().is_none() => {
                // Every variant had its outcome when the service stopped: the ledger has the
                // counts.
                let (done, bad) = (dir.outcomes().done.count(), dir.outcomes().bad.count());
                let store = self.store.clone();
                let now = now_s();
                let _ = blocking(move || {
                    store.set_counts(id, done, bad)?;
                    Ok(store.set_state(id, ExperimentState::Done, None, now)?)
                })
                .await;
                let mut row = row;
                row.state = ExperimentState::Done;
                row.done = done;
                row.bad = bad;
                row.finished_at = Some(now);
                let planned = b.selection.planned(b.workload.source.variant_count());
                self.insert_entry(row, Some(&b), planned, None);
                return;
            }
            Ok(dir) => {
                tracing::info!(id, done = dir.outcomes().count(), "experiment continues");
                self.launch(row.clone(), b, Results::Dir(dir), paused)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.restore_failed(row, e).await;
        }
    }

    /// Where the results of experiment `id` go: a new result directory, or with a store
    /// the store's experiment (joined again on `restore`).
    async fn results_for(
        &self,
        id: u64,
        b: &Built,
        restore: bool,
    ) -> Result<Option<Results>, ApiError> {
        #[cfg(feature = "postgres")]
        if let Some(cluster) = &self.cluster {
            use crate::cluster::{JoinOptions, StoreError};
            let joined = cluster
                .join(
                    &b.workload,
                    b.selection,
                    JoinOptions {
                        id: None,
                        name: Some(b.name.clone()),
                        priority: b.priority,
                        dialect: "service".into(),
                        command: vec![format!("taskdist serve: experiment {id}")],
                    },
                )
                .await
                .map_err(|e| match e {
                    StoreError::Mismatch { .. } | StoreError::Invalid(_) => {
                        ApiError::bad(e.to_string())
                    }
                    e => ApiError::Internal(format!("the store: {e}")),
                })?;
            tracing::info!(id, experiment = %joined.id(), created = joined.created(), restore, "joined the store's experiment");
            return Ok(Some(Results::Store(joined)));
        }
        let _ = restore;
        let path = self.dir_of(id);
        let (workload, selection) = (b.workload.clone(), b.selection);
        blocking(move || {
            ResultDir::create(&path, &workload, selection).map_err(|e| {
                ApiError::Internal(format!(
                    "cannot create the experiment's result directory {}: {e}",
                    path.display()
                ))
            })
        })
        .await
        .map(|d| Some(Results::Dir(d)))
    }

    /// A stored experiment could not continue: listed as failed, with the reason.
    async fn restore_failed(&self, row: ExperimentRow, e: ApiError) {
        let id = row.id;
        tracing::error!(id, error = ?e, "a stored experiment cannot continue");
        let mut row = row;
        row.state = ExperimentState::Failed;
        row.error = Some(format!("{e:?}"));
        let store = self.store.clone();
        let err = row.error.clone();
        let _ = blocking(move || {
            Ok(store.set_state(id, ExperimentState::Failed, err.as_deref(), now_s())?)
        })
        .await;
        self.insert_entry(row, None, None, None);
    }

    fn insert_entry(
        &self,
        row: ExperimentRow,
        b: Option<&Built>,
        planned: Option<u64>,
        metrics: Option<Arc<Metrics>>,
    ) {
        let e = Entry {
            priority: b.map_or(0, |b| b.priority),
            weight: b.map_or(1.0, |b| b.weight),
            requires: b.map(|b| b.requires.to_string()).unwrap_or_default(),
            seed: b.map_or(0, |b| b.seed),
            planned,
            control: None,
            metrics,
            base: (0, 0),
            cancel_requested: false,
            store_id: None,
            row,
        };
        self.exps().insert(e.row.id, e);
    }

    /// Submit to the pool and watch the end.
    fn launch(
        self: &Arc<Self>,
        row: ExperimentRow,
        b: Built,
        results: Results,
        paused: bool,
    ) -> Result<(), ApiError> {
        let id = row.id;
        let planned = b.selection.planned(b.workload.source.variant_count());
        let exp = Experiment::new(b.workload.clone())
            .name(b.name.clone())
            .priority(b.priority)
            .weight(b.weight)
            .requires(b.requires.clone())
            .selection(b.selection)
            .attempts(b.attempts)
            // A service waits for targets however long they are away.
            .give_up_after(None)
            .paused(paused)
            .command(vec![format!("taskdist serve: experiment {id}")]);
        let (exp, mut dir, store_id) = match results {
            Results::Dir(mut dir) => {
                let exp = exp
                    .result_dir(&mut dir, &self.kinds)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                (exp, Some(dir), None)
            }
            #[cfg(feature = "postgres")]
            Results::Store(joined) => {
                let sid = joined.id().to_string();
                // The store's priority (its creator's) rules across the cluster.
                (
                    exp.priority(joined.priority()).store(joined),
                    None,
                    Some(sid),
                )
            }
        };
        let handle = self
            .with_pool(|p| p.submit(exp))
            .ok_or_else(|| ApiError::Conflict("the service is stopping".into()))?
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if let Some(d) = dir.as_mut() {
            d.keep();
        }
        let control = handle.control();
        let metrics = handle.metrics_handle();
        let base = dir.as_ref().map_or((0, 0), |d| {
            (d.outcomes().done.count(), d.outcomes().bad.count())
        });
        {
            let mut exps = self.exps();
            let mut row = row;
            row.state = if paused {
                ExperimentState::Paused
            } else {
                ExperimentState::Running
            };
            row.error = None;
            row.finished_at = None;
            exps.insert(
                id,
                Entry {
                    priority: b.priority,
                    weight: b.weight,
                    requires: b.requires.to_string(),
                    seed: b.seed,
                    planned,
                    control: Some(control),
                    metrics: Some(metrics.clone()),
                    base,
                    cancel_requested: false,
                    store_id: store_id.clone(),
                    row,
                },
            );
        }
        let lab = self.clone();
        let waiter = tokio::spawn(async move {
            let result = handle.close().await;
            let snap = metrics.snapshot();
            if let Some(dir) = dir {
                let write = {
                    let snap = snap.clone();
                    tokio::task::spawn_blocking(move || dir.write_metrics(&snap)).await
                };
                if let Ok(Err(e)) = write {
                    tracing::warn!(id, error = %e, "cannot write metrics.json");
                }
            }
            #[cfg(feature = "postgres")]
            if let (Some(sid), Ok(s)) = (&store_id, &result) {
                if !s.interrupted {
                    lab.export_from_store(id, sid).await;
                }
            }
            lab.finished(id, result).await;
        });
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.retain(|w| !w.is_finished());
        waiters.push(waiter);
        Ok(())
    }

    /// A store's experiment is complete: write its results into the experiment's result
    /// directory, as a local run would have (the downloads serve them).
    #[cfg(feature = "postgres")]
    async fn export_from_store(&self, id: u64, store_id: &str) {
        let Some(cluster) = &self.cluster else { return };
        let dir = self.dir_of(id);
        if dir.join(crate::distributor::LEDGER_FILE).exists() {
            return; // exported before a restart
        }
        let exported = match store_id.parse() {
            Ok(sid) => cluster.export(&sid, &dir, &self.kinds).await,
            Err(e) => Err(e),
        };
        match exported {
            Ok(s) => {
                tracing::info!(
                    id,
                    experiment = store_id,
                    done = s.done,
                    bad = s.bad,
                    "results exported from the store"
                );
                // From now on the experiment's counts are the whole experiment's.
                if let Some(e) = self.exps().get_mut(&id) {
                    let here = e.metrics.as_ref().map(|m| m.snapshot());
                    let (d, b) = here.map_or((0, 0), |m| (m.done, m.bad));
                    e.base = (s.done.saturating_sub(d), s.bad.saturating_sub(b));
                }
            }
            Err(e) => {
                tracing::warn!(id, experiment = store_id, error = %e, "results not exported from the store; `taskdist export` writes them")
            }
        }
    }

    /// An experiment's run ended: record its state.
    async fn finished(
        &self,
        id: u64,
        result: Result<taskdist_handlers::RunSummary, crate::DistributorError>,
    ) {
        let _order = self.transitions.lock().await;
        let cancelled = self.exps().get(&id).is_some_and(|e| e.cancel_requested);
        let counts = self.exps().get(&id).map_or((0, 0), counts);
        let (state, error) = match result {
            Ok(s) if !s.interrupted => (ExperimentState::Done, None),
            Ok(_) if cancelled => (ExperimentState::Cancelled, None),
            // Interrupted by the service's stop: it continues at the next start.
            Ok(_) => return,
            Err(e) => (ExperimentState::Failed, Some(e.to_string())),
        };
        let now = now_s();
        let store = self.store.clone();
        let err = error.clone();
        let saved = blocking(move || {
            store.set_counts(id, counts.0, counts.1)?;
            Ok(store.set_state(id, state, err.as_deref(), now)?)
        })
        .await;
        if let Err(e) = saved {
            tracing::error!(id, error = ?e, "cannot record the experiment's end");
        }
        if let Some(e) = self.exps().get_mut(&id) {
            e.row.state = state;
            e.row.error = error;
            e.row.finished_at = Some(now);
            e.row.done = counts.0;
            e.row.bad = counts.1;
            e.control = None;
        }
        tracing::info!(id, state = %state, "experiment ended");
    }

    pub fn experiments(&self) -> Vec<ExperimentView> {
        self.exps_read().values().map(view).collect()
    }

    pub fn experiment(&self, id: u64) -> Result<ExperimentView, ApiError> {
        self.exps_read()
            .get(&id)
            .map(view)
            .ok_or_else(|| ApiError::NotFound(format!("no experiment {id}")))
    }

    /// Pause, resume or cancel.
    pub async fn control(&self, id: u64, action: &str) -> Result<ExperimentView, ApiError> {
        let order = self.transitions.lock().await;
        let new_state = {
            let mut exps = self.exps();
            let e = exps
                .get_mut(&id)
                .ok_or_else(|| ApiError::NotFound(format!("no experiment {id}")))?;
            let Some(c) = e.control.clone() else {
                return Err(ApiError::Conflict(format!(
                    "experiment {id} is {}; only a running or paused experiment can be {}",
                    e.row.state,
                    match action {
                        "pause" => "paused",
                        "resume" => "resumed",
                        _ => "cancelled",
                    }
                )));
            };
            match action {
                "pause" => {
                    c.pause();
                    e.row.state = ExperimentState::Paused;
                    Some(ExperimentState::Paused)
                }
                "resume" => {
                    c.resume();
                    e.row.state = ExperimentState::Running;
                    Some(ExperimentState::Running)
                }
                "cancel" => {
                    e.cancel_requested = true;
                    c.stop();
                    None
                }
                other => return Err(ApiError::NotFound(format!("no action {other:?}"))),
            }
        };
        if let Some(state) = new_state {
            let store = self.store.clone();
            blocking(move || Ok(store.set_state(id, state, None, now_s())?)).await?;
            drop(order);
        } else {
            // The end is recorded by `finished`, which waits for this lock.
            drop(order);
            // Wait (briefly) for the cancellation to be recorded.
            for _ in 0..100 {
                if self.experiment(id)?.state.is_final() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.experiment(id)
    }

    /// Run the bad variants of an ended experiment again.
    pub async fn retry_bad(self: &Arc<Self>, id: u64) -> Result<ExperimentView, ApiError> {
        #[cfg(feature = "postgres")]
        if self.cluster.is_some() {
            return Err(ApiError::Conflict(format!(
                "experiment {id} is shared through the store, which keeps each variant's one \
                 outcome; its bad variants cannot run again here"
            )));
        }
        let _order = self.transitions.lock().await;
        let row = {
            let exps = self.exps();
            let e = exps
                .get(&id)
                .ok_or_else(|| ApiError::NotFound(format!("no experiment {id}")))?;
            if e.row.state != ExperimentState::Done {
                return Err(ApiError::Conflict(format!(
                    "experiment {id} is {}; bad variants run again once it is done",
                    e.row.state
                )));
            }
            if counts(e).1 == 0 {
                return Err(ApiError::Conflict(format!(
                    "experiment {id} has no bad variant to run again"
                )));
            }
            e.row.clone()
        };
        let b = build(&row.request)?;
        let path = self.dir_of(id);
        let (workload, selection) = (b.workload.clone(), b.selection);
        let dir = blocking(move || {
            ResultDir::resume(&path, &workload, selection, ResumeOptions::retry_bad()).map_err(
                |e| match e {
                    crate::ResultDirError::Locked { .. } => {
                        ApiError::Conflict(format!("experiment {id} is being run again already"))
                    }
                    e => ApiError::Internal(e.to_string()),
                },
            )
        })
        .await?;
        let store = self.store.clone();
        blocking(move || Ok(store.set_state(id, ExperimentState::Running, None, now_s())?)).await?;
        self.launch(row, b, Results::Dir(dir), false)?;
        self.experiment(id)
    }

    /// The result files of an experiment: (name, size).
    pub fn result_files(&self, id: u64) -> Result<Vec<(String, u64)>, ApiError> {
        self.experiment(id)?;
        let dir = self.dir_of(id);
        let mut out = Vec::new();
        if !dir.exists() {
            // A store's experiment before its export.
            return Ok(out);
        }
        let rd = std::fs::read_dir(&dir)
            .map_err(|e| ApiError::Internal(format!("{}: {e}", dir.display())))?;
        for entry in rd.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if meta.is_file() && name != crate::LOCK_FILE {
                out.push((name, meta.len()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The path of one result file: a plain name listed in the experiment's directory, so
    /// that no request can reach outside it.
    pub fn result_file(&self, id: u64, name: &str) -> Result<PathBuf, ApiError> {
        let files = self.result_files(id)?;
        if !files.iter().any(|(n, _)| n == name) {
            return Err(ApiError::NotFound(format!(
                "experiment {id} has no result file {name:?}"
            )));
        }
        Ok(self.dir_of(id).join(name))
    }

    // -----------------------------------------------------------------------------------------
    // Targets

    /// Launched instances and health checks of the pool.
    pub fn lifecycle(&self) -> crate::pool::LifecycleStats {
        self.with_pool(|p| p.lifecycle()).unwrap_or_default()
    }

    /// The pool's targets, and registered ones its probes have not reached yet.
    pub fn targets(&self) -> Vec<TargetView> {
        let Some(snap) = self.with_pool(Pool::snapshot) else {
            return Vec::new();
        };
        let mut out = targets_view(&snap);
        let registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
        for (key, reg) in registered.iter() {
            if !out.iter().any(|t| &t.target == key) {
                let hold = self.with_pool(|p| p.hold_of(SocketAddr::new(reg.address, reg.port)));
                out.push(pending_view(reg, hold.flatten()));
            }
        }
        out
    }

    /// A registration checked and turned into its pool group.
    fn registered_group(reg: &TargetRegistration) -> Result<TargetGroup, ApiError> {
        let dialect: Dialect = reg.dialect.parse().map_err(|_| {
            ApiError::bad(format!("dialect {:?}: expected v1, v2 or v3", reg.dialect))
        })?;
        let table: toml::Table = reg
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let labels =
            Labels::from_toml(&table).map_err(|e| ApiError::bad(format!("labels: {e}")))?;
        let key = reg.key();
        Ok(TargetGroup {
            name: format!("{REGISTERED}{key}"),
            hosts: vec![key],
            port: reg.port,
            dialect,
            labels,
            launch: None,
            health: None,
        })
    }

    fn add_registered(&self, reg: &TargetRegistration) -> Result<(), ApiError> {
        let group = Self::registered_group(reg)?;
        let key = reg.key();
        self.with_pool(|p| p.add_group(group))
            .ok_or_else(|| ApiError::Conflict("the service is stopping".into()))?
            .map_err(|e| ApiError::Conflict(e.to_string()))?;
        self.registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, reg.clone());
        Ok(())
    }

    pub async fn register(&self, reg: TargetRegistration) -> Result<TargetView, ApiError> {
        let broadcast = matches!(reg.address, std::net::IpAddr::V4(a) if a.is_broadcast());
        if reg.address.is_unspecified() || reg.address.is_multicast() || broadcast || reg.port == 0
        {
            return Err(ApiError::bad(format!(
                "address {}: expected a unicast address and a port from 1 to 65535",
                reg.key()
            )));
        }
        // Check it all before touching a registration it replaces.
        Self::registered_group(&reg)?;
        let key = reg.key();
        {
            let registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
            if registered.len() >= MAX_REGISTERED && !registered.contains_key(&key) {
                return Err(ApiError::Conflict(format!(
                    "{MAX_REGISTERED} targets are registered; deregister one first"
                )));
            }
        }
        // A new registration of the same address replaces the old one.
        if self
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&key)
        {
            self.with_pool(|p| p.remove_group(&format!("{REGISTERED}{key}")));
            self.registered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
        self.add_registered(&reg)?;
        let store = self.store.clone();
        let r = reg.clone();
        blocking(move || Ok(store.put_target(&r, now_s())?)).await?;
        tracing::info!(target = %key, "target registered");
        Ok(self
            .targets()
            .into_iter()
            .find(|t| t.target == key)
            .unwrap_or_else(|| pending_view(&reg, None)))
    }

    pub async fn deregister(&self, key: &str) -> Result<(), ApiError> {
        let known = self
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
            .is_some();
        if !known {
            return Err(ApiError::NotFound(format!(
                "no registered target {key} (targets of the pool's own groups cannot be \
                 deregistered; drain them instead)"
            )));
        }
        self.with_pool(|p| p.remove_group(&format!("{REGISTERED}{key}")));
        let store = self.store.clone();
        let k = key.to_owned();
        blocking(move || Ok(store.delete_target(&k)?)).await?;
        tracing::info!(target = %key, "target deregistered");
        Ok(())
    }

    /// Drain, quarantine or release a target.
    pub fn target_action(
        &self,
        key: &str,
        action: &str,
        reason: Option<&str>,
    ) -> Result<TargetView, ApiError> {
        let addr: std::net::SocketAddr = key
            .parse()
            .map_err(|_| ApiError::bad(format!("target {key:?}: expected ADDRESS:PORT")))?;
        let r = self
            .with_pool(|p| match action {
                "drain" => p.drain(addr).map(|_| ()),
                "quarantine" => p.quarantine(addr, reason.unwrap_or("by request")),
                "release" => {
                    p.release(addr);
                    Ok(())
                }
                _ => Ok(()),
            })
            .ok_or_else(|| ApiError::Conflict("the service is stopping".into()))?;
        r.map_err(|_| ApiError::NotFound(format!("no target {key} in the pool")))?;
        self.targets()
            .into_iter()
            .find(|t| t.target == key)
            .ok_or_else(|| ApiError::NotFound(format!("no target {key}")))
    }

    // -----------------------------------------------------------------------------------------
    // Events and the end

    /// Publish changed experiments and targets to the event stream, twice a second.
    pub async fn publish_changes(self: Arc<Self>, stop: CancellationToken) {
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            if self.events.receiver_count() == 0 {
                continue;
            }
            let mut frames = Vec::new();
            for e in self.experiments() {
                frames.push((
                    format!("e{}", e.id),
                    "experiment",
                    serde_json::to_string(&e),
                ));
            }
            for t in self.targets() {
                frames.push((
                    format!("t{}", t.target),
                    "target",
                    serde_json::to_string(&t),
                ));
            }
            // What no longer exists is forgotten.
            last.retain(|k, _| frames.iter().any(|(f, _, _)| f == k));
            for (key, kind, json) in frames {
                let Ok(json) = json else { continue };
                if last.get(&key) == Some(&json) {
                    continue;
                }
                let frame: Arc<str> = format!("event: {kind}\ndata: {json}\n\n").into();
                last.insert(key, json);
                let _ = self.events.send(frame);
            }
        }
    }

    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(pool) = pool {
            pool.shutdown().await;
        }
        let waiters: Vec<_> =
            std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for w in waiters {
            let _ = w.await;
        }
    }
}

/// Check a request and build the workload.
fn build(req: &SubmitRequest) -> Result<Built, ApiError> {
    let spec = match (&req.spec, &req.catalog) {
        (Some(text), None) => Spec::from_toml_str(text, "spec").map_err(spec_error)?,
        (None, Some(name)) => {
            let entry = taskdist_tasksets::catalog::get(name).ok_or_else(|| {
                ApiError::bad(format!(
                    "catalog {name:?}: no such spec; expected one of {}",
                    taskdist_tasksets::catalog::entries()
                        .iter()
                        .map(|e| e.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            Spec::from_toml_str(entry.text, entry.name).map_err(spec_error)?
        }
        _ => {
            return Err(ApiError::bad(
                "expected exactly one of \"spec\" (TOML text) and \"catalog\" (a catalog name)",
            ))
        }
    };
    let spec = match req.seed {
        Some(seed) => spec.with_seed(seed).map_err(spec_error)?,
        None => spec,
    };
    let name = req.name.clone().unwrap_or_else(|| spec.name().to_owned());
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::bad(format!(
            "name {name:?}: expected 1 to 200 printable characters"
        )));
    }
    let mut workload = Workload::new(spec.clone());
    workload.admission = spec.admission();
    if let Some(text) = &req.admission {
        let a: AdmissionControl = toml::from_str(text).map_err(|e| ApiError::Bad {
            message: format!(
                "admission: {}; expected TOML with goal = \"fairness\"|\"utilization\"|\"none\" \
                 and query_interval_ms",
                e.message()
            ),
            line: None,
            column: None,
        })?;
        workload.admission = Some(a);
    }
    let shard = match &req.shard {
        None => None,
        Some(s) => {
            let (k, n) = s
                .split_once('/')
                .and_then(|(k, n)| Some((k.trim().parse().ok()?, n.trim().parse().ok()?)))
                .ok_or_else(|| ApiError::bad(format!("shard {s:?}: expected K/N")))?;
            if n == 0 || k >= n {
                return Err(ApiError::bad(format!(
                    "shard {s}: expected K/N with N >= 1 and 0 <= K < N"
                )));
            }
            Some((k, n))
        }
    };
    if req.limit == Some(0) {
        return Err(ApiError::bad("limit 0: expected at least 1"));
    }
    let weight = req.weight.or(spec.weight()).unwrap_or(1.0);
    if !(weight.is_finite() && weight > 0.0) {
        return Err(ApiError::bad(format!(
            "weight {weight}: expected a positive number"
        )));
    }
    let attempts = req.attempts.unwrap_or(3);
    if attempts == 0 || attempts > 1000 {
        return Err(ApiError::bad(format!(
            "attempts {attempts}: expected 1 to 1000"
        )));
    }
    let mut requires = match spec.requires() {
        Some(t) => {
            Selector::from_toml(t).map_err(|e| ApiError::bad(format!("spec [requires]: {e}")))?
        }
        None => Selector::any(),
    };
    requires = requires.and(
        Selector::from_clauses(req.requires.iter().map(String::as_str))
            .map_err(|e| ApiError::bad(format!("requires: {e}")))?,
    );
    Ok(Built {
        name,
        seed: spec.seed(),
        workload,
        selection: Selection {
            limit: req.limit,
            shard,
        },
        priority: req.priority.or(spec.priority()).unwrap_or(0),
        weight,
        requires,
        attempts,
    })
}

fn spec_error(e: SpecError) -> ApiError {
    let (line, column) = e.location().unzip();
    ApiError::Bad {
        message: e.to_string(),
        line,
        column,
    }
}

/// Outcomes (done, bad) of an experiment over all its runs.
fn counts(e: &Entry) -> (u64, u64) {
    match &e.metrics {
        Some(m) => {
            let s = m.snapshot();
            (e.base.0 + s.done, e.base.1 + s.bad)
        }
        None => (e.row.done, e.row.bad),
    }
}

fn view(e: &Entry) -> ExperimentView {
    let snap = e.metrics.as_ref().map(|m| m.snapshot());
    let (done, bad) = counts(e);
    let (queued, running, rate, targets) = match &snap {
        Some(s) => (
            s.queued,
            s.running,
            s.rate_per_s,
            s.targets
                .iter()
                .map(|(a, t)| ExperimentTarget {
                    target: a.to_string(),
                    completed: t.completed,
                    failed: t.failed,
                    busy_s: t.busy.as_secs_f64(),
                })
                .collect(),
        ),
        None => (0, 0, 0.0, Vec::new()),
    };
    let running_now = matches!(e.row.state, ExperimentState::Running);
    let left = e.planned.map(|p| p.saturating_sub(done + bad));
    let eta_s = match left {
        _ if e.row.state.is_final() => None,
        Some(0) => Some(0.0),
        Some(n) if running_now && rate > 0.0 => Some(n as f64 / rate),
        _ => None,
    };
    ExperimentView {
        id: e.row.id,
        name: e.row.name.clone(),
        state: e.row.state,
        error: e.row.error.clone(),
        priority: e.priority,
        weight: e.weight,
        requires: e.requires.clone(),
        seed: e.seed,
        planned: e.planned,
        done,
        bad,
        queued: if e.row.state.is_final() { 0 } else { queued },
        running,
        rate_per_s: if running_now { rate } else { 0.0 },
        eta_s,
        created_at: e.row.created_at,
        finished_at: e.row.finished_at,
        targets,
        store_experiment: e.store_id.clone(),
    }
}

fn targets_view(snap: &PoolSnapshot) -> Vec<TargetView> {
    snap.targets
        .iter()
        .map(|t| TargetView {
            target: t.target.to_string(),
            group: t.group.clone(),
            state: serde_json::to_value(t.stats.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            hold: t.hold.clone(),
            registered: t.group.starts_with(REGISTERED),
            dialect: t.dialect.clone(),
            labels: serde_json::to_value(&t.labels)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .map(|m| m.into_iter().collect())
                .unwrap_or_default(),
            experiment: t.current.as_ref().map(|c| c.experiment.clone()),
            variant: t.current.as_ref().map(|c| c.variant),
            completed: t.stats.completed,
            failed: t.stats.failed,
            busy_s: t.stats.busy.as_secs_f64(),
            last_error: t.stats.last_error.clone(),
            health: t.stats.health.clone(),
        })
        .collect()
}

/// A registered target not yet seen by the pool's probes.
fn pending_view(reg: &TargetRegistration, hold: Option<String>) -> TargetView {
    TargetView {
        target: reg.key(),
        group: format!("{REGISTERED}{}", reg.key()),
        state: "connecting".into(),
        hold,
        registered: true,
        dialect: reg.dialect.clone(),
        labels: reg
            .labels
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), serde_json::to_value(v).ok()?)))
            .collect(),
        experiment: None,
        variant: None,
        completed: 0,
        failed: 0,
        busy_s: 0.0,
        last_error: None,
        health: None,
    }
}
