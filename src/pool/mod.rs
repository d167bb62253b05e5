//! One target pool shared by many experiments: labelled target groups, priorities, weights,
//! label requirements and distribution strategies.
//!
//! A [`Pool`] probes its hosts, keeps a session to every live target and lets a scheduler
//! decide, each time a target is idle, which experiment it serves: strict priority between
//! levels, weighted fair share of target time within a level, only experiments whose
//! `requires` the target's labels satisfy, and only v1 targets for experiments with
//! admission-control data. The [`Strategy`] refines the choice (see [`strategy`]). Each
//! experiment has its own handlers, ledger and results: every variant's outcome is recorded
//! exactly once per experiment.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use taskdist::pool::{Experiment, Pool, PoolConfig, PoolFile, Selector};
//! use taskdist::tasksets::Spec;
//!
//! let lab = PoolFile::parse(r#"
//!     [[group]]
//!     hosts = ["127.0.0.2", "127.0.0.3"]
//!     labels = { board = "a", cores = 4 }
//!     [[group]]
//!     hosts = ["127.0.0.4"]
//!     dialect = "v1"
//!     labels = { board = "b", cores = 2 }
//! "#, "lab.toml")?;
//! let mut cfg = PoolConfig::default();
//! cfg.groups = lab.groups;
//! let pool = Pool::start(cfg)?;
//! let sweep = pool.submit(Experiment::new(Spec::load("hey-priorities")?).priority(1))?;
//! let urgent = pool.submit(
//!     Experiment::new(Spec::load("hey-priorities")?)
//!         .priority(10)
//!         .requires(Selector::from_clauses(["board=a"])?),
//! )?;
//! let urgent = urgent.close().await?;   // waits for its variants, flushes its handlers
//! let sweep = sweep.close().await?;
//! println!("{} + {} variants done", urgent.done, sweep.done);
//! pool.shutdown().await;
//! # Ok(()) }
//! ```

mod engine;
pub mod file;
pub mod labels;
pub mod lifecycle;
mod sched;
pub mod strategy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use taskdist_handlers::{EventHandler, RunInfo, RunSummary};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use file::{PoolFile, PoolFileError, SimGroup, TargetGroup};
pub use labels::{LabelError, LabelValue, Labels, Selector};
pub use lifecycle::{AddressSource, HealthCheck, LaunchSpec, LifecycleStats, StopSignal};
pub use sched::PairStats;
pub use strategy::{Strategy, Verdict};

use crate::discovery::{HostPool, MonitorConfig};
use crate::distributor::fanout::{Fanout, FanoutSender, Msg};
use crate::distributor::{
    run_fingerprint, DistributorError, FileLog, Ledger, LedgerConfig, Metrics, MetricsSnapshot,
    ProbeKind, RangeSet, Selection, TargetState, TargetStats, WorkQueue, Workload,
};
use crate::protocol::{Binaries, SessionConfig};
use engine::{Ctl, ExpCtx, GroupRt, Hold, Shared};
use sched::{ExpSpec, Scheduler};

/// Settings of a pool (targets, probing, sessions, target health, strategy).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolConfig {
    /// The target groups; each has its hosts, port, dialect and labels.
    pub groups: Vec<TargetGroup>,
    /// How hosts are checked for availability.
    pub probe: ProbeKind,
    /// Session settings (timeouts); each group's dialect replaces the one set here.
    pub session: SessionConfig,
    /// Failures in a row after which a target is quarantined.
    pub quarantine_after: u32,
    /// How long a quarantined target is held out before it is re-checked.
    pub quarantine_for: Duration,
    /// Command run (via `sh -c`) when a target is declared dead; `{addr}`, `{ip}` and `{port}`
    /// are replaced, and `TASKDIST_TARGET` is set. Its binaries then count as unsent.
    pub recovery_cmd: Option<String>,
    /// Discovery settings: probe window, pacing, backoff of silent hosts.
    pub monitor: MonitorConfig,
    /// How targets are matched with experiments' variants (default
    /// [`strategy::DEFAULT_STRATEGY`]).
    pub strategy: Arc<dyn Strategy>,
    /// Leases that keep other processes off the targets this pool drives (default none; a
    /// shared store provides them, see `PgStore::target_leases` with the `postgres`
    /// feature).
    pub target_leases: Option<Arc<dyn TargetLeases>>,
    /// Where health-check results go: a JSON Lines file (created with its directory), one
    /// line per check with `time_unix_s`, `target`, `group`, `spec`, `passed` and `reason`.
    /// They are kept apart from every experiment's results. None: only counted.
    pub health_log: Option<PathBuf>,
}

/// Exclusive use of targets among several processes (distributors sharing a store): a pool
/// opens a session to a target only while it holds the target's lease, renews it while the
/// session lasts, and gives it back when the session ends. A target that another process
/// holds goes back to discovery (backoff) and is tried again later.
#[async_trait::async_trait]
pub trait TargetLeases: Send + Sync + std::fmt::Debug + 'static {
    /// Take or renew the lease of `addr`: `Ok(true)` when this process holds it now,
    /// `Ok(false)` when another one does; `Err` when it cannot be known (the target is then
    /// not used).
    async fn acquire(&self, addr: SocketAddr) -> Result<bool, String>;
    /// Give the lease of `addr` back.
    async fn release(&self, addr: SocketAddr);
    /// How often a held lease is renewed.
    fn renew_every(&self) -> Duration;
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            groups: Vec::new(),
            probe: ProbeKind::default(),
            session: SessionConfig::default(),
            quarantine_after: 5,
            quarantine_for: Duration::from_secs(600),
            recovery_cmd: None,
            monitor: MonitorConfig::default(),
            strategy: strategy::default_strategy(),
            target_leases: None,
            health_log: None,
        }
    }
}

/// A target pool shared by any number of experiments. Dropping it stops everything; call
/// [`Pool::shutdown`] to wait for the sessions to close.
pub struct Pool {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("groups", &self.shared.groups().len())
            .field("strategy", &self.shared.cfg.strategy.name())
            .finish()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

impl Pool {
    /// Check the configuration, start probing the hosts and opening sessions. Must be called
    /// within a tokio runtime.
    /// A pool may start without groups and get them later from [`Pool::add_group`].
    pub fn start(cfg: PoolConfig) -> Result<Pool, DistributorError> {
        let mut groups = Vec::with_capacity(cfg.groups.len());
        let mut spans = Vec::new();
        for g in &cfg.groups {
            let rt = GroupRt::build(g, &cfg, false)?;
            spans.push(rt.hosts.clone());
            groups.push(Arc::new(rt));
        }
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                if a.overlaps(b) {
                    return Err(DistributorError::Config(format!(
                        "target groups {} and {} share addresses; each target must belong to one group",
                        groups[i].name,
                        groups[i + 1..]
                            .iter()
                            .zip(&spans[i + 1..])
                            .find(|(_, s)| a.overlaps(s))
                            .map_or("?", |(g, _)| g.name.as_str())
                    )));
                }
            }
        }
        // Launched groups' instances are not probed: their launcher knows when they answer.
        let all = HostPool::merge(
            spans
                .iter()
                .zip(&groups)
                .filter(|(_, g)| g.launch.is_none())
                .map(|(s, _)| s.clone()),
        );
        let health_log = match &cfg.health_log {
            Some(p) => Some(lifecycle::HealthLog::open(p).map_err(DistributorError::Config)?),
            None => None,
        };
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            sched: Mutex::new(Scheduler::new(cfg.strategy.clone())),
            cfg,
            groups: RwLock::new(groups),
            holds: Mutex::new(HashMap::new()),
            current: Mutex::new(HashMap::new()),
            ctl,
            changed: Arc::new(Notify::new()),
            board: Arc::new(Metrics::default()),
            exps: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
            life: Arc::new(lifecycle::Counters::default()),
            health_fails: Mutex::new(HashMap::new()),
            health_log,
        });
        let task = tokio::spawn(engine::run_pool(shared.clone(), all, ctl_rx));
        Ok(Pool {
            shared,
            task: Some(task),
        })
    }

    /// Start an experiment on the pool and return at once. Its variants go to the targets
    /// that can serve it, sharing them with the other experiments by priority and weight.
    pub fn submit(&self, exp: Experiment) -> Result<ExperimentHandle, DistributorError> {
        let mut exp = exp;
        #[cfg(feature = "postgres")]
        if let Some(j) = &exp.cluster {
            exp.handlers.push(j.sink());
        }
        let handlers = std::mem::take(&mut exp.handlers);
        let fanout = Fanout::spawn(handlers);
        let sender = fanout.sender();
        match self.submit_with(exp, sender) {
            Ok(mut h) => {
                h.fanout = Some(fanout);
                Ok(h)
            }
            Err(e) => {
                drop(fanout);
                Err(e)
            }
        }
    }

    /// Submit with an existing fan-out (the [`Distributor`](crate::Distributor) keeps one
    /// for all its runs).
    pub(crate) fn submit_with(
        &self,
        exp: Experiment,
        fanout: FanoutSender,
    ) -> Result<ExperimentHandle, DistributorError> {
        if self.shared.cancel.is_cancelled() {
            return Err(DistributorError::Config("the pool is shut down".into()));
        }
        if exp.attempts == 0 {
            return Err(DistributorError::Config(
                "attempts must be at least 1".into(),
            ));
        }
        if !(exp.weight.is_finite() && exp.weight > 0.0) {
            return Err(DistributorError::Config(format!(
                "weight {}: expected a positive number",
                exp.weight
            )));
        }
        if let Some((k, n)) = exp.selection.shard {
            if n == 0 || k >= n {
                return Err(DistributorError::Config(format!(
                    "shard {k}/{n}: expected K/N with N >= 1 and 0 <= K < N"
                )));
            }
        }
        let workload = exp.workload;
        let source = &workload.source;
        let len = source.variant_count();
        let fp = run_fingerprint(&workload, exp.selection);
        #[cfg(feature = "postgres")]
        if exp.cluster.is_some() && exp.ledger.is_some() {
            return Err(DistributorError::Config(
                "an experiment records its outcomes either in a ledger or in a store, not both"
                    .into(),
            ));
        }
        let (ledger, done): (Option<Box<dyn crate::distributor::OutcomeLog>>, RangeSet) =
            match &exp.ledger {
                #[cfg(feature = "postgres")]
                None if exp.cluster.is_some() => {
                    (exp.cluster.as_ref().map(|j| j.log()), RangeSet::default())
                }
                None => (None, RangeSet::default()),
                Some(l) => {
                    std::fs::create_dir_all(&l.dir).map_err(|e| {
                        DistributorError::Config(format!("cannot create {}: {e}", l.dir.display()))
                    })?;
                    if l.resume {
                        let (ledger, done) = Ledger::resume(&l.dir, &fp)?;
                        (Some(Box::new(FileLog(Some(ledger)))), done)
                    } else {
                        (
                            Some(Box::new(FileLog(Some(Ledger::create(&l.dir, &fp)?)))),
                            RangeSet::default(),
                        )
                    }
                }
            };
        let name = exp.name.unwrap_or_else(|| source.name());
        let planned = exp.selection.planned(len);
        let already = done.count();
        let metrics = exp.metrics.unwrap_or_default();
        metrics.attach(&self.shared.board, &name, exp.priority, exp.weight);
        metrics.reset_run(planned, already);
        let baseline = engine::Baseline::of(&metrics);
        let dialects: Vec<String> = {
            let mut d: Vec<String> = self
                .shared
                .groups()
                .iter()
                .map(|g| g.dialect().to_string())
                .collect();
            d.sort();
            d.dedup();
            d
        };
        let info = RunInfo {
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            spec_name: source.name(),
            spec_text: source.text(),
            seed: source.seed(),
            total_variants: len.map(u128::from),
            planned_variants: planned,
            dialect: dialects.join(","),
            command: exp.command.clone(),
            started_at: SystemTime::now(),
        };
        #[allow(unused_mut)]
        let mut feeder: Option<engine::Feeder> = None;
        #[allow(unused_mut)]
        let mut queue = None;
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(exp.paused));
        #[cfg(feature = "postgres")]
        if let Some(j) = exp.cluster.clone() {
            queue = Some(Arc::new(WorkQueue::gated(self.shared.changed.clone())));
            let paused = paused.clone();
            feeder = Some(Box::new(move |q, stopping, stop| {
                Box::pin(async move { j.feed(q, stopping, stop, paused).await })
            }));
        }
        let queue = queue.unwrap_or_else(|| {
            Arc::new(WorkQueue::with_notify(
                len,
                exp.selection,
                done,
                self.shared.changed.clone(),
            ))
        });
        let needs_optimize = workload.admission.is_some();
        let binaries_id = binaries_id(&exp.binaries);
        let cancel = self.shared.cancel.child_token();
        let id = self.shared.sched().reserve_id();
        let spec = ExpSpec {
            priority: exp.priority,
            weight: exp.weight,
            selector: exp.requires.clone(),
            needs_optimize,
            binaries_id,
            queue: queue.clone(),
            paused: exp.paused,
        };
        let ctx = Arc::new(ExpCtx {
            id,
            name,
            workload,
            selector: exp.requires,
            binaries: exp.binaries,
            binaries_id,
            attempts: exp.attempts,
            give_up_after: exp.give_up_after,
            flush_interval: exp.flush_interval,
            queue,
            fanout,
            metrics: metrics.clone(),
            unrecorded: Mutex::new(Vec::new()),
            fatal: Mutex::new(None),
            cancel: cancel.clone(),
            paused: paused.clone(),
        });
        self.shared
            .exps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, ctx.clone());
        if already > 0 {
            tracing::debug!(already, experiment = %ctx.name, "resuming: variants with an outcome are skipped");
        }
        let task = tokio::spawn(engine::run_experiment(
            self.shared.clone(),
            ctx,
            info,
            ledger,
            baseline,
            spec,
            feeder,
        ));
        self.shared.changed.notify_waiters();
        Ok(ExperimentHandle {
            shared: self.shared.clone(),
            id,
            paused,
            cancel,
            task: Some(task),
            metrics,
            fanout: None,
            summary: None,
        })
    }

    /// Targets and experiments as they are now.
    pub fn snapshot(&self) -> PoolSnapshot {
        let board = self.shared.board.snapshot();
        let exps: Vec<Arc<ExpCtx>> = self
            .shared
            .exps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut experiments: Vec<MetricsSnapshot> =
            exps.iter().map(|c| c.metrics.snapshot()).collect();
        experiments.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
        let labels = |a: SocketAddr| {
            self.shared
                .group_of(a)
                .map(|g| (g.name.clone(), g.dialect().to_string(), (*g.labels).clone()))
        };
        let holds = self
            .shared
            .holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let current = self.shared.current().clone();
        PoolSnapshot {
            lifecycle: self.shared.life.snapshot(),
            strategy: self.shared.cfg.strategy.name(),
            targets: board
                .targets
                .into_iter()
                .map(|(addr, stats)| {
                    let (group, dialect, labels) = labels(addr).unwrap_or_default();
                    PoolTarget {
                        target: addr,
                        group,
                        dialect,
                        labels,
                        hold: holds.get(&addr).map(ToString::to_string),
                        current: current.get(&addr).map(|c| CurrentWork {
                            experiment: c.experiment.clone(),
                            variant: c.variant,
                            since: c.since,
                        }),
                        stats,
                    }
                })
                .collect(),
            experiments,
        }
    }

    /// Add a target group while the pool runs: its hosts are probed as the others are. Its
    /// name must be new and its addresses must not belong to another group.
    pub fn add_group(&self, g: TargetGroup) -> Result<(), DistributorError> {
        let rt = Arc::new(GroupRt::build(&g, &self.shared.cfg, true)?);
        {
            let mut groups = self
                .shared
                .groups
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(other) = groups
                .iter()
                .find(|o| o.name == rt.name || o.hosts.overlaps(&rt.hosts))
            {
                return Err(DistributorError::Config(if other.name == rt.name {
                    format!("a target group named {} exists already", rt.name)
                } else {
                    format!(
                        "group {} shares addresses with group {}; each target must belong to one group",
                        rt.name, other.name
                    )
                }));
            }
            groups.push(rt.clone());
        }
        let _ = self.shared.ctl.send(Ctl::Watch(rt));
        Ok(())
    }

    /// Remove a target group: its targets finish their running variants, then leave the
    /// pool. Returns whether the group existed.
    pub fn remove_group(&self, name: &str) -> bool {
        let removed = {
            let mut groups = self
                .shared
                .groups
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let before = groups.len();
            groups.retain(|g| g.name != name);
            groups.len() != before
        };
        if removed {
            let _ = self.shared.ctl.send(Ctl::Unwatch(name.to_owned()));
            self.shared.changed.notify_waiters();
        }
        removed
    }

    /// Names of the target groups.
    pub fn group_names(&self) -> Vec<String> {
        self.shared
            .groups()
            .iter()
            .map(|g| g.name.clone())
            .collect()
    }

    /// Drain a target: it finishes its running variant, then takes no work until
    /// [`Pool::release`]. Fails for an address outside every group.
    pub fn drain(&self, target: SocketAddr) -> Result<(), DistributorError> {
        self.hold(target, Hold::Drain)
    }

    /// Take a target out of service at once: its running variant goes back to its queue
    /// (no result is recorded for it) and it takes no work until [`Pool::release`].
    pub fn quarantine(&self, target: SocketAddr, reason: &str) -> Result<(), DistributorError> {
        self.hold(target, Hold::Quarantine(reason.to_owned()))?;
        if let Some(c) = self.shared.current().get(&target) {
            c.cancel.cancel();
        }
        Ok(())
    }

    /// End a drain or a quarantine (one asked for, or one the pool imposed after repeated
    /// faults): the target is checked and takes work again once it answers. Returns whether
    /// it was held.
    pub fn release(&self, target: SocketAddr) -> bool {
        let was = self
            .shared
            .holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&target)
            .is_some();
        let auto = self
            .shared
            .board
            .snapshot()
            .targets
            .iter()
            .any(|(a, t)| *a == target && t.state == TargetState::Quarantined);
        if was || auto {
            let _ = self.shared.ctl.send(Ctl::Release(target));
            self.shared.changed.notify_waiters();
        }
        was || auto
    }

    /// Why the target takes no work by request (`drained`, `quarantined: REASON`), if it does
    /// not.
    pub fn hold_of(&self, target: SocketAddr) -> Option<String> {
        self.shared.hold_of(target).map(|h| h.to_string())
    }

    fn hold(&self, target: SocketAddr, hold: Hold) -> Result<(), DistributorError> {
        if self.shared.group_of(target).is_none() {
            return Err(DistributorError::Config(format!(
                "target {target}: not in any group of the pool"
            )));
        }
        let state = match hold {
            Hold::Drain => TargetState::Drained,
            Hold::Quarantine(_) => TargetState::Quarantined,
        };
        self.shared
            .holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target, hold);
        // A target already out of work shows its new hold at once.
        let parked = self.shared.board.snapshot().targets.iter().any(|(a, t)| {
            *a == target && matches!(t.state, TargetState::Drained | TargetState::Quarantined)
        });
        if parked {
            self.shared.board.set_state(target, state);
        }
        self.shared.changed.notify_waiters();
        Ok(())
    }

    /// The strategy in force.
    pub fn strategy(&self) -> String {
        self.shared.cfg.strategy.name()
    }

    /// Stop every experiment (their in-flight variants go back to their queues and stay out
    /// of their ledgers), close the sessions and stop the launched targets. Returns the final
    /// lifecycle counts.
    pub async fn shutdown(mut self) -> LifecycleStats {
        self.shared.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.shared.life.snapshot()
    }

    /// Launched instances and health checks so far.
    pub fn lifecycle(&self) -> LifecycleStats {
        self.shared.life.snapshot()
    }
}

/// An identity for a set of binaries: equal for equal images, 0 for the synthetic ones.
fn binaries_id(b: &Binaries) -> u64 {
    use std::hash::{Hash, Hasher};
    if b.is_synthetic() && b.names().is_empty() {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.is_synthetic().hash(&mut h);
    let mut names = b.names();
    names.sort_unstable();
    for n in names {
        n.hash(&mut h);
        if let Some(img) = b.get(n) {
            img.hash(&mut h);
        }
    }
    h.finish() | 1
}

/// One experiment: a workload, which of its variants to run, how it shares the pool, and
/// where its results go.
pub struct Experiment {
    workload: Workload,
    name: Option<String>,
    priority: i64,
    weight: f64,
    requires: Selector,
    selection: Selection,
    attempts: u32,
    give_up_after: Option<Duration>,
    binaries: Binaries,
    ledger: Option<LedgerConfig>,
    flush_interval: Duration,
    command: Vec<String>,
    handlers: Vec<Box<dyn EventHandler>>,
    metrics: Option<Arc<Metrics>>,
    paused: bool,
    #[cfg(feature = "postgres")]
    cluster: Option<crate::cluster::Joined>,
}

impl std::fmt::Debug for Experiment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Experiment")
            .field("workload", &self.workload)
            .field("name", &self.name)
            .field("priority", &self.priority)
            .field("weight", &self.weight)
            .field("requires", &self.requires.to_string())
            .field("selection", &self.selection)
            .finish_non_exhaustive()
    }
}

impl Experiment {
    /// An experiment over `workload` with priority 0, weight 1, no requirement, 3 attempts,
    /// synthetic binaries, no handlers and no ledger.
    pub fn new(workload: impl Into<Workload>) -> Self {
        Experiment {
            workload: workload.into(),
            name: None,
            priority: 0,
            weight: 1.0,
            requires: Selector::any(),
            selection: Selection::default(),
            attempts: 3,
            give_up_after: Some(Duration::from_secs(30 * 60)),
            binaries: Binaries::synthetic(),
            ledger: None,
            flush_interval: Duration::from_millis(200),
            command: Vec::new(),
            handlers: Vec::new(),
            metrics: None,
            paused: false,
            #[cfg(feature = "postgres")]
            cluster: None,
        }
    }

    /// Share this experiment with other distributors through a store: its work comes in
    /// chunks claimed from the store, and its results and outcomes are written there (in
    /// place of a ledger and result files; see [`cluster`](crate::cluster)). The workload
    /// and selection must be the ones `joined` was made with.
    #[cfg(feature = "postgres")]
    pub fn store(mut self, joined: crate::cluster::Joined) -> Self {
        self.cluster = Some(joined);
        self
    }

    /// An experiment over a spec's variants, with the spec's admission data, `priority`,
    /// `weight` and `[requires]` (each can be overridden afterwards).
    pub fn from_spec(spec: taskdist_tasksets::Spec) -> Result<Self, LabelError> {
        let requires = match spec.requires() {
            Some(t) => Selector::from_toml(t)?,
            None => Selector::any(),
        };
        let mut e = Experiment::new(spec.clone()).requires(requires);
        if let Some(p) = spec.priority() {
            e = e.priority(p);
        }
        if let Some(w) = spec.weight() {
            e = e.weight(w);
        }
        Ok(e)
    }

    /// Start paused (see [`ExperimentHandle::pause`]).
    pub fn paused(mut self, paused: bool) -> Self {
        self.paused = paused;
        self
    }

    /// Its name in logs and metrics (default: the spec's name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Priority: higher levels are served first, strictly (default 0).
    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = priority;
        self
    }
    /// Weight: its share of target time among experiments of equal priority (default 1).
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }
    /// Run only on targets whose labels satisfy `selector` (replaces the requirement).
    pub fn requires(mut self, selector: Selector) -> Self {
        self.requires = selector;
        self
    }
    /// Add clauses to the requirement (a clause on a key already required replaces it).
    pub fn also_requires(mut self, selector: Selector) -> Self {
        self.requires = self.requires.and(selector);
        self
    }
    /// Which variants to process.
    pub fn selection(mut self, selection: Selection) -> Self {
        self.selection = selection;
        self
    }
    /// Failed attempts before a variant can be recorded bad (default 3; see
    /// [`Config::attempts`](crate::distributor::Config::attempts)).
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n;
        self
    }
    /// End with [`DistributorError::GaveUp`] after `d` without a healthy target that can
    /// serve it (default 30 min; `None` waits forever).
    pub fn give_up_after(mut self, d: Option<Duration>) -> Self {
        self.give_up_after = d;
        self
    }
    /// Binaries sent to the targets (default: synthetic images).
    pub fn binaries(mut self, binaries: Binaries) -> Self {
        self.binaries = binaries;
        self
    }
    /// Keep a resume ledger in `dir`; with `resume`, continue the run recorded there.
    pub fn ledger(mut self, dir: impl Into<PathBuf>, resume: bool) -> Self {
        self.ledger = Some(LedgerConfig {
            dir: dir.into(),
            resume,
        });
        self
    }
    /// Interval of handler flushes and ledger appends (default 200 ms).
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.flush_interval = d;
        self
    }
    /// Command line to record in `run.json`.
    pub fn command(mut self, args: Vec<String>) -> Self {
        self.command = args;
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
    /// Write results to `dir` (the handlers of `kinds`, created or repaired on resume, and
    /// the directory's ledger); the directory stays locked until the experiment is closed.
    pub fn result_dir(
        mut self,
        dir: &mut crate::ResultDir,
        kinds: &[crate::HandlerKind],
    ) -> Result<Self, crate::ResultDirError> {
        let (ledger, handlers) = dir.attach(kinds)?;
        self.ledger = Some(LedgerConfig {
            dir: ledger,
            resume: true,
        });
        self.handlers.extend(handlers);
        Ok(self)
    }
    /// The workload.
    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    /// Use `metrics` as this experiment's metrics object (a distributor keeps one across
    /// runs).
    pub(crate) fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// A running experiment.
pub struct ExperimentHandle {
    shared: Arc<Shared>,
    id: sched::ExpId,
    /// Shared with the experiment's context (not the context itself: it holds the handlers'
    /// sender, which must close when the experiment ends).
    paused: Arc<std::sync::atomic::AtomicBool>,
    cancel: CancellationToken,
    task: Option<JoinHandle<Result<RunSummary, DistributorError>>>,
    metrics: Arc<Metrics>,
    fanout: Option<Fanout>,
    summary: Option<RunSummary>,
}

impl std::fmt::Debug for ExperimentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExperimentHandle")
            .field("running", &self.is_running())
            .finish()
    }
}

impl ExperimentHandle {
    /// Wait until every selected variant has an outcome (or the experiment stopped, gave up or
    /// the pool shut down). Its handlers stay open until [`ExperimentHandle::close`].
    pub async fn wait(&mut self) -> Result<RunSummary, DistributorError> {
        if let Some(s) = &self.summary {
            return Ok(s.clone());
        }
        let Some(task) = self.task.take() else {
            return Err(DistributorError::NotStarted);
        };
        let summary = task
            .await
            .map_err(|e| DistributorError::Internal(format!("experiment task: {e}")))??;
        self.summary = Some(summary.clone());
        Ok(summary)
    }

    /// Stop the experiment: its running attempts stop and go back to its queue (and stay out
    /// of the ledger, so a resumed run does them). Other experiments go on.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Pause: no new attempts start; running ones finish. Other experiments get the targets.
    pub fn pause(&self) {
        self.control().pause();
    }

    /// Resume a paused experiment.
    pub fn resume(&self) {
        self.control().resume();
    }

    /// Whether the experiment is paused.
    pub fn is_paused(&self) -> bool {
        self.control().is_paused()
    }

    /// A cheap handle that pauses, resumes or stops the experiment while another task waits
    /// for it with [`ExperimentHandle::close`].
    pub fn control(&self) -> ExperimentControl {
        ExperimentControl {
            shared: self.shared.clone(),
            id: self.id,
            paused: self.paused.clone(),
            cancel: self.cancel.clone(),
        }
    }

    /// A token that stops the experiment when cancelled (for signal handlers).
    pub fn stop_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Whether the experiment still runs.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Current metrics.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Shared handle on the live metrics (for progress displays).
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Wait for the end (see [`ExperimentHandle::wait`]), report it to the handlers, flush and
    /// close them. A failed experiment still gets its handlers closed; its error is returned
    /// afterwards.
    pub async fn close(mut self) -> Result<RunSummary, DistributorError> {
        let waited = self.wait().await;
        let mut first_error = waited.as_ref().err().map(|e| e.to_string());
        let summary = waited.as_ref().cloned().unwrap_or_default();
        if let Some(fanout) = self.fanout.take() {
            let finished = {
                let sender = fanout.sender();
                match sender
                    .send(Msg::RunFinished(Arc::new(summary.clone())))
                    .await
                {
                    Ok(()) => sender.flush().await,
                    Err(e) => Err(e),
                }
            };
            let joined = fanout.join().await;
            if let Err(e) = finished.and(joined) {
                if first_error.is_none() {
                    return Err(e.into());
                }
                first_error.get_or_insert(e.to_string());
            }
        }
        waited
    }
}

/// Pauses, resumes or stops a running experiment (from [`ExperimentHandle::control`]).
#[derive(Clone)]
pub struct ExperimentControl {
    shared: Arc<Shared>,
    id: sched::ExpId,
    paused: Arc<std::sync::atomic::AtomicBool>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for ExperimentControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExperimentControl")
            .field("id", &self.id)
            .field("paused", &self.is_paused())
            .finish()
    }
}

impl ExperimentControl {
    /// See [`ExperimentHandle::pause`].
    pub fn pause(&self) {
        self.set_paused(true);
    }

    /// See [`ExperimentHandle::resume`].
    pub fn resume(&self) {
        self.set_paused(false);
    }

    /// Whether the experiment is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// See [`ExperimentHandle::stop`].
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    fn set_paused(&self, paused: bool) {
        // Under the scheduler's lock, so that an experiment not yet registered with it is
        // registered in the same state.
        let mut sched = self.shared.sched();
        self.paused
            .store(paused, std::sync::atomic::Ordering::Relaxed);
        sched.set_paused(self.id, paused);
        drop(sched);
        self.shared.changed.notify_waiters();
    }
}

/// A target in a [`PoolSnapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct PoolTarget {
    /// Its address.
    pub target: SocketAddr,
    /// Its group's name.
    pub group: String,
    /// Its dialect.
    pub dialect: String,
    /// Its labels.
    pub labels: Labels,
    /// Why it takes no work by its owner's request (`drained`, `quarantined: REASON`).
    pub hold: Option<String>,
    /// What it runs now.
    pub current: Option<CurrentWork>,
    /// State and totals over all experiments.
    #[serde(flatten)]
    pub stats: TargetStats,
}

/// The attempt a target runs.
#[derive(Debug, Clone, Serialize)]
pub struct CurrentWork {
    /// The experiment's name.
    pub experiment: String,
    /// The variant's index.
    pub variant: u64,
    /// When the attempt was handed out (in JSON: `since_unix_s`, seconds since the epoch).
    #[serde(rename = "since_unix_s", serialize_with = "unix_secs")]
    pub since: SystemTime,
}

fn unix_secs<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    s.serialize_f64(secs)
}

/// The pool as it is now: targets (over all experiments) and running experiments.
#[derive(Debug, Clone, Serialize)]
pub struct PoolSnapshot {
    /// The strategy in force.
    pub strategy: String,
    /// Every target seen so far.
    pub targets: Vec<PoolTarget>,
    /// Running experiments, highest priority first.
    pub experiments: Vec<MetricsSnapshot>,
    /// Launched instances and health checks.
    pub lifecycle: LifecycleStats,
}

impl PoolSnapshot {
    /// Targets with an open session.
    pub fn targets_up(&self) -> usize {
        self.targets
            .iter()
            .filter(|t| matches!(t.stats.state, TargetState::Idle | TargetState::Running))
            .count()
    }
}
