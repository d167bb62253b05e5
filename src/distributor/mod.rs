//! The distributor: variant queue, one worker per live target, requeue, ledger, handlers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use taskdist::distributor::Distributor;
//! use taskdist::{Task, TaskSet};
//!
//! let mut d = Distributor::builder()
//!     .hosts(["127.0.0.2", "127.0.0.3"])?
//!     .port(3001)
//!     .build()?;
//! let mut task = Task::new(0, "hey");
//! task.numberofjobs = 3;
//! d.start(TaskSet::new(vec![task])?).await?;   // returns at once
//! let summary = d.wait().await?;                  // until every variant has an outcome
//! println!("{} done, {} bad", summary.done, summary.bad);
//! d.close().await?;                               // sessions closed, handlers flushed
//! # Ok(()) }
//! ```
//!
//! Behaviour:
//! - One worker task per live target, pulling the next variant from a shared work queue,
//!   so an idle target always takes queued work.
//! - A variant whose attempt times out, loses its connection or hits a target fault goes back
//!   to the queue (requeued attempts go first). It is recorded `bad` only when the evidence
//!   points at the variant: it cannot be built or sent at all, or it failed at least
//!   `attempts` times on at least two different targets and too often for bad luck at the
//!   run's failure rate (`p ^ failures <= 1e-6`), or `3 × attempts` times in all.
//!   Target faults alone move it to another target.
//! - A run in which no target is healthy (an open session whose last attempt did not fail)
//!   for `give_up_after` ends with [`DistributorError::GaveUp`]; the ledger keeps what was
//!   done, so it can be resumed.
//!   The target goes back to the discovery pool (backoff), or into quarantine after
//!   `quarantine_after` failures in a row; an optional recovery command runs first.
//! - Results reach the handlers once per variant ([`EventHandler::taskset_finished`] or
//!   `taskset_bad`); the ledger records a variant only after every handler flushed it, so a
//!   resumed run neither loses nor repeats a variant.

pub(crate) mod fanout;
mod ledger;
mod metrics;
mod probe;
mod queue;
mod ranges;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use ledger::FileLog;
pub use ledger::{fingerprint, Ledger, LedgerError, OutcomeLog, Outcomes, LEDGER_FILE};
pub use metrics::{Metrics, MetricsSnapshot, TargetState, TargetStats};
pub use probe::ProbeKind;
pub use queue::Selection;
pub(crate) use queue::{Job, Take, WorkQueue};
pub use ranges::RangeSet;
pub use workload::{VariantSource, Workload};

use taskdist_handlers::{EventHandler, HandlerError, RunSummary};
use tokio_util::sync::CancellationToken;

use crate::discovery::{HostPool, MonitorConfig, PoolError};
use crate::pool::{
    Experiment, ExperimentHandle, Labels, Pool, PoolConfig, Selector, Strategy, TargetGroup,
};
use crate::protocol::{Binaries, Dialect, SessionConfig};
use fanout::Fanout;

/// The fingerprint that ties a ledger to a workload and selection: spec text, seed, shard
/// and admission data (not the limit, which may grow on resume).
pub fn run_fingerprint(workload: &Workload, selection: Selection) -> String {
    let shard = selection
        .shard
        .map(|(k, n)| format!("{k}/{n}"))
        .unwrap_or_default();
    let admission = workload.admission.map(|a| a.to_xml()).unwrap_or_default();
    fingerprint(&[
        &workload.source.text(),
        &workload.source.seed().to_string(),
        &shard,
        &admission,
    ])
}

pub use crate::protocol::DEFAULT_PORT;

/// Distributor failures.
#[derive(Debug, thiserror::Error)]
pub enum DistributorError {
    /// A host or range could not be parsed.
    #[error(transparent)]
    Hosts(#[from] PoolError),
    /// No hosts were given.
    #[error("no hosts: give at least one address or CIDR range")]
    NoHosts,
    /// A run is already going on.
    #[error("a run is already in progress: call wait() or stop() first")]
    Busy,
    /// No run was started.
    #[error("no run in progress: call start() first")]
    NotStarted,
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The resume ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// An event handler failed; the run stopped so that no result is lost.
    #[error("event handler failed: {0}")]
    Handler(#[from] HandlerError),
    /// A worker or the supervisor died unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
    /// The shared store failed or refused the experiment (feature `postgres`).
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    Store(#[from] crate::cluster::StoreError),
    /// No target was healthy for `waited` (see [`Config::give_up_after`]); the run stopped
    /// and can be resumed.
    #[error("no usable target for {} s; giving up (wait longer with --give-up-after)", waited.as_secs())]
    GaveUp {
        /// How long no target was usable.
        waited: Duration,
    },
}

/// Where the resume ledger lives and whether to continue an earlier run.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Output directory holding the `ledger` file.
    pub dir: PathBuf,
    /// Continue the run recorded there instead of starting a new one.
    pub resume: bool,
}

/// Configuration of a distributor; build it with [`Distributor::builder`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Host ranges as given.
    pub hosts: Vec<String>,
    /// Target port for entries without one.
    pub port: u16,
    /// How hosts are checked for availability.
    pub probe: ProbeKind,
    /// Session settings (dialect, timeouts).
    pub session: SessionConfig,
    /// Binaries to send to targets.
    pub binaries: Binaries,
    /// Failed attempts before a variant can be `bad`: they must have happened on at least two
    /// targets and be too many for bad luck at the run's failure rate; `3 × attempts` failures
    /// are bad in any case.
    pub attempts: u32,
    /// End the run with [`DistributorError::GaveUp`] after this long without a healthy target
    /// (None: wait forever).
    pub give_up_after: Option<Duration>,
    /// Failures in a row after which a target is quarantined.
    pub quarantine_after: u32,
    /// How long a quarantined target is held out before it is re-checked.
    pub quarantine_for: Duration,
    /// Command run (via `sh -c`) when a target is declared dead; `{addr}`, `{ip}` and `{port}`
    /// are replaced, and `TASKDIST_TARGET` is set. Its binaries then count as unsent.
    pub recovery_cmd: Option<String>,
    /// Which variants to process.
    pub selection: Selection,
    /// Resume ledger.
    pub ledger: Option<LedgerConfig>,
    /// Interval of handler flushes and ledger appends.
    pub flush_interval: Duration,
    /// Discovery settings: probe window, pacing, backoff of silent hosts.
    pub monitor: MonitorConfig,
    /// Command line recorded in `run.json`.
    pub command: Vec<String>,
    /// Labelled target groups, in addition to `hosts` (an unlabelled group).
    pub groups: Vec<TargetGroup>,
    /// How targets are matched with variants.
    pub strategy: Arc<dyn Strategy>,
    /// Only targets whose labels satisfy this take part.
    pub requires: Selector,
    /// A shared store in place of a ledger and handlers (feature `postgres`): each run joins
    /// an experiment there, with the other distributors that join it (see
    /// [`cluster`](crate::cluster)).
    #[cfg(feature = "postgres")]
    pub store: Option<StoreConfig>,
}

/// Where a distributor's runs are shared (feature `postgres`).
#[cfg(feature = "postgres")]
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The database.
    pub store: crate::cluster::PgStore,
    /// The experiment's id (default: derived from the spec's name and fingerprint, so
    /// distributors given the same spec and selection meet in one experiment).
    pub experiment: Option<crate::cluster::ExperimentId>,
    /// The experiment's priority among the store's experiments.
    pub priority: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hosts: Vec::new(),
            port: DEFAULT_PORT,
            probe: ProbeKind::default(),
            session: SessionConfig::default(),
            binaries: Binaries::synthetic(),
            attempts: 3,
            give_up_after: Some(Duration::from_secs(30 * 60)),
            quarantine_after: 5,
            quarantine_for: Duration::from_secs(600),
            recovery_cmd: None,
            selection: Selection::default(),
            ledger: None,
            flush_interval: Duration::from_millis(200),
            monitor: MonitorConfig::default(),
            command: Vec::new(),
            groups: Vec::new(),
            strategy: crate::pool::strategy::default_strategy(),
            requires: Selector::any(),
            #[cfg(feature = "postgres")]
            store: None,
        }
    }
}

/// Builds a [`Distributor`].
pub struct DistributorBuilder {
    cfg: Config,
    handlers: Vec<Box<dyn EventHandler>>,
}

impl DistributorBuilder {
    /// Add hosts: addresses, `host:port`, CIDR ranges (IPv4 and IPv6). Checked here, so a bad
    /// entry is reported before anything runs.
    pub fn hosts<I, S>(mut self, hosts: I) -> Result<Self, DistributorError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let hosts: Vec<String> = hosts.into_iter().map(|s| s.as_ref().to_owned()).collect();
        HostPool::parse(&hosts, self.cfg.port)?;
        self.cfg.hosts.extend(hosts);
        Ok(self)
    }
    /// Target port for entries without one (default 3001).
    pub fn port(mut self, port: u16) -> Self {
        self.cfg.port = port;
        self
    }
    /// Protocol dialect of the targets (default v3).
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.cfg.session.dialect = dialect;
        self
    }
    /// Availability check (default: see [`ProbeKind`]).
    pub fn probe(mut self, probe: ProbeKind) -> Self {
        self.cfg.probe = probe;
        self
    }
    /// Session settings (timeouts; the dialect set here is kept).
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.cfg.session = session;
        self
    }
    /// Binaries sent to the targets (default: synthetic images, fine for simulated targets).
    pub fn binaries(mut self, binaries: Binaries) -> Self {
        self.cfg.binaries = binaries;
        self
    }
    /// Add an event handler.
    pub fn handler(mut self, h: impl EventHandler + 'static) -> Self {
        self.handlers.push(Box::new(h));
        self
    }
    /// Add a boxed event handler.
    pub fn boxed_handler(mut self, h: Box<dyn EventHandler>) -> Self {
        self.handlers.push(h);
        self
    }
    /// Failed attempts before a variant can be recorded `bad` (default 3; see [`Config::attempts`]).
    pub fn attempts(mut self, n: u32) -> Self {
        self.cfg.attempts = n;
        self
    }
    /// Give up after `d` without a healthy target (default 30 min; `None` waits forever).
    pub fn give_up_after(mut self, d: Option<Duration>) -> Self {
        self.cfg.give_up_after = d;
        self
    }
    /// Quarantine a target after `after` failures in a row, for `hold` (default 5, 10 min).
    pub fn quarantine(mut self, after: u32, hold: Duration) -> Self {
        self.cfg.quarantine_after = after;
        self.cfg.quarantine_for = hold;
        self
    }
    /// Command to run when a target is declared dead (see [`Config::recovery_cmd`]).
    pub fn recovery_cmd(mut self, cmd: impl Into<String>) -> Self {
        self.cfg.recovery_cmd = Some(cmd.into());
        self
    }
    /// Process at most `n` variants.
    pub fn limit(mut self, n: u64) -> Self {
        self.cfg.selection.limit = Some(n);
        self
    }
    /// Process only variants with `index % n == k`.
    pub fn shard(mut self, k: u64, n: u64) -> Self {
        self.cfg.selection.shard = Some((k, n));
        self
    }
    /// Which variants to process (limit and shard together).
    pub fn selection(mut self, selection: Selection) -> Self {
        self.cfg.selection = selection;
        self
    }
    /// The configuration as built so far.
    pub fn config_ref(&self) -> &Config {
        &self.cfg
    }
    /// Keep a resume ledger in `dir`; with `resume`, continue the run recorded there.
    pub fn ledger(mut self, dir: impl Into<PathBuf>, resume: bool) -> Self {
        self.cfg.ledger = Some(LedgerConfig {
            dir: dir.into(),
            resume,
        });
        self
    }
    /// Discovery settings (probe window, pacing, backoff of silent hosts).
    pub fn monitor(mut self, monitor: MonitorConfig) -> Self {
        self.cfg.monitor = monitor;
        self
    }
    /// Command line to record in `run.json`.
    pub fn command(mut self, args: Vec<String>) -> Self {
        self.cfg.command = args;
        self
    }
    /// Add a labelled target group (e.g. from a pool file).
    pub fn group(mut self, group: TargetGroup) -> Self {
        self.cfg.groups.push(group);
        self
    }
    /// How targets are matched with variants (see [`crate::pool::strategy`]).
    pub fn strategy(mut self, strategy: Arc<dyn Strategy>) -> Self {
        self.cfg.strategy = strategy;
        self
    }
    /// Use only targets whose labels satisfy `selector`.
    pub fn requires(mut self, selector: Selector) -> Self {
        self.cfg.requires = selector;
        self
    }
    /// Replace the whole configuration (handlers are kept).
    pub fn config(mut self, cfg: Config) -> Self {
        self.cfg = cfg;
        self
    }

    /// Share the runs through a PostgreSQL store (feature `postgres`): each
    /// [`start`](Distributor::start) joins the experiment of its workload (`experiment`, or
    /// an id derived from the spec and selection) and works on it with every distributor
    /// that joins it; results go to the store's tables (read them with
    /// [`PgStore::export`](crate::cluster::PgStore::export)), and targets are leased so that
    /// two distributors never drive one. A store takes the place of a ledger and handlers.
    #[cfg(feature = "postgres")]
    pub fn store(
        mut self,
        store: crate::cluster::PgStore,
        experiment: Option<crate::cluster::ExperimentId>,
    ) -> Self {
        self.cfg.store = Some(StoreConfig {
            store,
            experiment,
            priority: 0,
        });
        self
    }

    /// Check the configuration and build the distributor.
    pub fn build(self) -> Result<Distributor, DistributorError> {
        let cfg = self.cfg;
        #[cfg(feature = "postgres")]
        if cfg.store.is_some() && (cfg.ledger.is_some() || !self.handlers.is_empty()) {
            return Err(DistributorError::Config(
                "a store records the results and the progress itself: drop the ledger and the \
                 handlers (export the experiment from the store for files)"
                    .into(),
            ));
        }
        if cfg.hosts.is_empty() && cfg.groups.is_empty() {
            return Err(DistributorError::NoHosts);
        }
        if cfg.attempts == 0 {
            return Err(DistributorError::Config(
                "attempts must be at least 1".into(),
            ));
        }
        if let Some((k, n)) = cfg.selection.shard {
            if n == 0 || k >= n {
                return Err(DistributorError::Config(format!(
                    "shard {k}/{n}: expected K/N with N >= 1 and 0 <= K < N"
                )));
            }
        }
        let mut pools = Vec::new();
        if !cfg.hosts.is_empty() {
            pools.push(HostPool::parse(&cfg.hosts, cfg.port)?);
        }
        for g in &cfg.groups {
            pools.push(g.host_pool()?);
        }
        Ok(Distributor {
            cfg: Arc::new(cfg),
            hosts: HostPool::merge(pools),
            targets: None,
            handlers: Some(self.handlers),
            fanout: None,
            run: None,
            metrics: Arc::new(Metrics::default()),
            totals: RunSummary::default(),
            #[cfg(feature = "postgres")]
            experiment: None,
        })
    }
}

/// Distributes task-set variants to targets and reports every event to handlers.
pub struct Distributor {
    cfg: Arc<Config>,
    hosts: HostPool,
    /// The target pool, started with the first run.
    targets: Option<Pool>,
    handlers: Option<Vec<Box<dyn EventHandler>>>,
    fanout: Option<Fanout>,
    run: Option<ExperimentHandle>,
    metrics: Arc<Metrics>,
    totals: RunSummary,
    /// The store's experiment of the latest run.
    #[cfg(feature = "postgres")]
    experiment: Option<crate::cluster::ExperimentId>,
}

impl Distributor {
    /// Start building a distributor.
    pub fn builder() -> DistributorBuilder {
        DistributorBuilder {
            cfg: Config::default(),
            handlers: Vec::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Start distributing `workload` (a [`TaskSet`](crate::TaskSet), a spec's variant space,
    /// or a [`Workload`]) and return at once.
    pub async fn start(&mut self, workload: impl Into<Workload>) -> Result<(), DistributorError> {
        let workload = workload.into();
        if self.run.is_some() {
            return Err(DistributorError::Busy);
        }
        if self.targets.is_none() {
            self.targets = Some(Pool::start(self.pool_config())?);
        }
        let Some(pool) = self.targets.as_ref() else {
            return Err(DistributorError::Internal("no pool".into()));
        };
        let v1 = self
            .pool_config_groups()
            .iter()
            .any(|g| g.dialect.has_optimize());
        if workload.admission.is_some() && !v1 {
            return Err(DistributorError::Config(format!(
                "admission-control data cannot be delivered to {} targets (only v1 has OPTIMIZE); \
                 drop the admission data or use --dialect v1",
                self.cfg.session.dialect
            )));
        }
        if self.fanout.is_none() {
            let handlers = self.handlers.take().unwrap_or_default();
            self.fanout = Some(Fanout::spawn(handlers));
        }
        let Some(fanout) = self.fanout.as_ref() else {
            return Err(DistributorError::Internal("handlers are closed".into()));
        };
        let cfg = &self.cfg;
        let mut exp = Experiment::new(workload)
            .selection(cfg.selection)
            .attempts(cfg.attempts)
            .give_up_after(cfg.give_up_after)
            .binaries(cfg.binaries.clone())
            .flush_interval(cfg.flush_interval)
            .command(cfg.command.clone())
            .requires(cfg.requires.clone())
            .with_metrics(self.metrics.clone());
        if let Some(l) = &cfg.ledger {
            exp = exp.ledger(l.dir.clone(), l.resume);
        }
        #[cfg(feature = "postgres")]
        if let Some(sc) = &cfg.store {
            let joined = sc
                .store
                .join(
                    exp.workload(),
                    cfg.selection,
                    crate::cluster::JoinOptions {
                        id: sc.experiment.clone(),
                        name: None,
                        priority: sc.priority,
                        dialect: cfg.session.dialect.to_string(),
                        command: cfg.command.clone(),
                    },
                )
                .await?;
            tracing::info!(experiment = %joined.id(), created = joined.created(), "joined the store's experiment");
            self.experiment = Some(joined.id().clone());
            self.run = Some(pool.submit(exp.store(joined))?);
            return Ok(());
        }
        self.run = Some(pool.submit_with(exp, fanout.sender())?);
        Ok(())
    }

    /// The groups of the pool: `hosts` as an unlabelled group, then the labelled ones.
    fn pool_config_groups(&self) -> Vec<TargetGroup> {
        let cfg = &self.cfg;
        let mut groups = Vec::new();
        if !cfg.hosts.is_empty() {
            groups.push(TargetGroup {
                name: "hosts".into(),
                hosts: cfg.hosts.clone(),
                port: cfg.port,
                dialect: cfg.session.dialect,
                labels: Labels::new(),
                launch: None,
                health: None,
            });
        }
        groups.extend(cfg.groups.iter().cloned());
        groups
    }

    fn pool_config(&self) -> PoolConfig {
        let cfg = &self.cfg;
        PoolConfig {
            groups: self.pool_config_groups(),
            probe: cfg.probe,
            session: cfg.session.clone(),
            quarantine_after: cfg.quarantine_after,
            quarantine_for: cfg.quarantine_for,
            recovery_cmd: cfg.recovery_cmd.clone(),
            monitor: cfg.monitor.clone(),
            strategy: cfg.strategy.clone(),
            #[cfg(feature = "postgres")]
            target_leases: cfg.store.as_ref().map(|s| s.store.target_leases()),
            #[cfg(not(feature = "postgres"))]
            target_leases: None,
            health_log: None,
        }
    }

    /// Start with admission-control data (v1 targets only).
    pub async fn start_with(
        &mut self,
        workload: impl Into<Workload>,
        admission: taskdist_tasksets::AdmissionControl,
    ) -> Result<(), DistributorError> {
        self.start(workload.into().with_admission(admission)).await
    }

    /// Wait until every variant of the current run has an outcome.
    pub async fn wait(&mut self) -> Result<RunSummary, DistributorError> {
        let Some(run) = self.run.take() else {
            return Err(DistributorError::NotStarted);
        };
        self.finish(run).await
    }

    /// Stop the current run: targets stop, in-flight variants go back to the queue (and stay
    /// unrecorded in the ledger, so a resumed run does them).
    pub async fn stop(&mut self) -> Result<RunSummary, DistributorError> {
        let Some(run) = self.run.take() else {
            return Err(DistributorError::NotStarted);
        };
        run.stop();
        self.finish(run).await
    }

    async fn finish(&mut self, run: ExperimentHandle) -> Result<RunSummary, DistributorError> {
        // close: a run with a fan-out of its own (a store's) flushes and joins it.
        let summary = run.close().await?;
        self.totals.done += summary.done;
        self.totals.bad += summary.bad;
        self.totals.requeued += summary.requeued;
        self.totals.events += summary.events;
        self.totals.elapsed_s += summary.elapsed_s;
        self.totals.interrupted |= summary.interrupted;
        Ok(summary)
    }

    /// The id of the store's experiment that the latest [`start`](Self::start) joined (with
    /// [`DistributorBuilder::store`]).
    #[cfg(feature = "postgres")]
    pub fn experiment(&self) -> Option<&crate::cluster::ExperimentId> {
        self.experiment.as_ref()
    }

    /// A token that stops the current run when cancelled (for signal handlers).
    pub fn stop_token(&self) -> Option<CancellationToken> {
        self.run.as_ref().map(|r| r.stop_token())
    }

    /// Whether a run is in progress.
    pub fn is_running(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.is_running())
    }

    /// Current metrics.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Shared handle on the live metrics (for progress displays).
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Stop any run, report the run end to the handlers, flush and close them.
    pub async fn close(mut self) -> Result<RunSummary, DistributorError> {
        // A failed run still gets its handlers flushed and joined (files closed in order);
        // the run's error is returned afterwards.
        let mut first_error = None;
        if let Some(run) = self.run.take() {
            run.stop();
            if let Err(e) = self.finish(run).await {
                first_error = Some(e);
            }
        }
        let totals = self.totals.clone();
        if let Some(fanout) = self.fanout.take() {
            let finished = {
                // This sender must be gone before the join: the handler threads end when
                // every sender is dropped.
                let sender = fanout.sender();
                match sender
                    .send(fanout::Msg::RunFinished(Arc::new(totals.clone())))
                    .await
                {
                    Ok(()) => sender.flush().await,
                    Err(e) => Err(e),
                }
            };
            let joined = fanout.join().await;
            if let Err(e) = finished.and(joined) {
                first_error.get_or_insert(e.into());
            }
        }
        if let Some(pool) = self.targets.take() {
            pool.shutdown().await;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(totals),
        }
    }

    /// The targets' addresses as configured (for logs).
    pub fn hosts(&self) -> &[String] {
        &self.cfg.hosts
    }

    /// Address of every host in the pool, lazily.
    pub fn pool(&self) -> &HostPool {
        &self.hosts
    }

    /// The target pool and its running experiments (None before the first run).
    pub fn pool_snapshot(&self) -> Option<crate::pool::PoolSnapshot> {
        self.targets.as_ref().map(|p| p.snapshot())
    }
}

impl std::fmt::Debug for Distributor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distributor")
            .field("hosts", &self.cfg.hosts)
            .field("running", &self.run.is_some())
            .finish()
    }
}
