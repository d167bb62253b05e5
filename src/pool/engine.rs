//! The running pool: the supervisor that turns discovered hosts into workers, the workers that
//! ask the scheduler for work and stream variants through sessions, and per experiment a
//! supervisor (give-up rule, warnings, end) and a recorder (handler flushes, ledger appends).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use taskdist_handlers::{
    AttemptId, RunInfo, RunSummary, TimedEvent, VariantBad, VariantFinished, VariantStarted,
    VariantStopped,
};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::labels::{Labels, Selector};
use super::lifecycle::{self, Counters, HealthRt, LaunchMsg, LaunchRt, PoolView};
use super::sched::{ExpId, Outcome, Scheduler};
use super::PoolConfig;
use crate::discovery::{HostChange, HostPool, Monitor, MonitorHandle};
use crate::distributor::fanout::{FanoutSender, Msg};
use crate::distributor::{DistributorError, Job, Metrics, OutcomeLog, TargetState, WorkQueue};

/// Starts a shared store's feeder: `(queue, stopping, stop)` (see `cluster::Joined::feed`).
pub(crate) type Feeder = Box<
    dyn FnOnce(
            Arc<WorkQueue>,
            CancellationToken,
            CancellationToken,
        ) -> futures::future::BoxFuture<'static, Result<(), DistributorError>>
        + Send,
>;
use crate::protocol::{Binaries, Dialect, Session, SessionConfig, TargetError};

/// After this long without a target that can serve an experiment, say so.
const NO_TARGET_WARNING: Duration = Duration::from_secs(15);

/// How often an experiment checks its health (give-up rule) and publishes its figures.
const HEALTH_CHECK: Duration = Duration::from_millis(500);

/// How often a waiting worker asks the scheduler again even without a change (time-based
/// rules such as the specialization hold).
const RECHECK: Duration = Duration::from_secs(1);

/// Below this chance that a healthy variant fails as often as it did by bad luck alone, its
/// failures count as evidence against the variant.
const BAD_LUCK: f64 = 1e-6;

/// A target group as the running pool uses it.
#[derive(Debug)]
pub(crate) struct GroupRt {
    pub name: String,
    pub hosts: HostPool,
    pub labels: Arc<Labels>,
    pub session: SessionConfig,
    /// Added while the pool runs (it has a monitor of its own).
    pub added: bool,
    /// Its instances, when the pool launches them.
    pub launch: Option<Arc<LaunchRt>>,
    /// Its health check.
    pub health: Option<Arc<HealthRt>>,
}

/// Why a target takes no work although it may be up (set by the pool's owner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Finish the running variant, then take no more.
    Drain,
    /// Out of service at once (its running variant goes back to the queue) until released.
    Quarantine(String),
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::Drain => f.write_str("drained"),
            Hold::Quarantine(r) if r.is_empty() => f.write_str("quarantined"),
            Hold::Quarantine(r) => write!(f, "quarantined: {r}"),
        }
    }
}

/// What a target runs now.
#[derive(Debug, Clone)]
pub(crate) struct Current {
    pub experiment: String,
    pub variant: u64,
    pub since: SystemTime,
    /// Stops this attempt alone (a child of the experiment's token).
    pub cancel: CancellationToken,
}

/// Requests of the pool's owner to the pool supervisor.
#[derive(Debug)]
pub(crate) enum Ctl {
    /// Probe the hosts of a group added while the pool runs.
    Watch(Arc<GroupRt>),
    /// Stop probing a removed group.
    Unwatch(String),
    /// A held or automatically quarantined target may work again: check it.
    Release(SocketAddr),
}

impl GroupRt {
    pub fn dialect(&self) -> Dialect {
        self.session.dialect
    }

    /// The running form of a configured group, checked.
    pub fn build(
        g: &super::TargetGroup,
        cfg: &PoolConfig,
        added: bool,
    ) -> Result<GroupRt, DistributorError> {
        let hosts = g.host_pool()?;
        if cfg.probe == crate::distributor::ProbeKind::Available
            && !g.dialect.has_available()
            && g.launch.is_none()
        {
            return Err(DistributorError::Config(format!(
                "--probe available needs v3 targets, but group {} speaks {}; use --probe tcp or icmp",
                g.name, g.dialect
            )));
        }
        let launch = match &g.launch {
            Some(l) => {
                l.check()
                    .map_err(|e| DistributorError::Config(format!("group {}: {e}", g.name)))?;
                Some(Arc::new(LaunchRt::new(l.clone(), g.port)))
            }
            None => None,
        };
        let health = match &g.health {
            Some(h) => Some(Arc::new(HealthRt::load(h).map_err(|e| {
                DistributorError::Config(format!("group {}: {e}", g.name))
            })?)),
            None => None,
        };
        let mut session = cfg.session.clone();
        session.dialect = g.dialect;
        Ok(GroupRt {
            name: g.name.clone(),
            hosts,
            labels: Arc::new(g.labels.clone()),
            session,
            added,
            launch,
            health,
        })
    }

    /// Whether `addr` is one of its targets.
    pub fn has(&self, addr: SocketAddr) -> bool {
        match &self.launch {
            Some(l) => l.owns(addr),
            None => self.hosts.contains(addr),
        }
    }
}

/// State shared by everything in a pool.
pub(crate) struct Shared {
    pub cfg: PoolConfig,
    pub groups: RwLock<Vec<Arc<GroupRt>>>,
    pub sched: Mutex<Scheduler>,
    /// Woken whenever work may have become available or an attempt ended.
    pub changed: Arc<Notify>,
    /// Pool-wide target states and counts.
    pub board: Arc<Metrics>,
    pub exps: Mutex<HashMap<ExpId, Arc<ExpCtx>>>,
    /// Binaries loaded on each target since its last (assumed) boot: name → binaries id.
    pub loaded: Mutex<HashMap<SocketAddr, HashMap<String, u64>>>,
    /// Targets held out of work by the pool's owner.
    pub holds: Mutex<HashMap<SocketAddr, Hold>>,
    /// The attempt each busy target runs.
    pub current: Mutex<HashMap<SocketAddr, Current>>,
    /// Requests to the supervisor.
    pub ctl: mpsc::UnboundedSender<Ctl>,
    pub cancel: CancellationToken,
    /// Launched instances and health checks.
    pub life: Arc<Counters>,
    /// Health checks failed in a row per target (for the re-check delay).
    pub health_fails: Mutex<HashMap<SocketAddr, u32>>,
    /// Where health-check results are written, if anywhere.
    pub health_log: Option<lifecycle::HealthLog>,
}

impl Shared {
    pub fn sched(&self) -> std::sync::MutexGuard<'_, Scheduler> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn groups(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<GroupRt>>> {
        self.groups.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn group_of(&self, addr: SocketAddr) -> Option<Arc<GroupRt>> {
        self.groups().iter().find(|g| g.has(addr)).cloned()
    }

    pub fn hold_of(&self, addr: SocketAddr) -> Option<Hold> {
        self.holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .cloned()
    }

    pub fn current(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Current>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the target must stop taking work, if it must.
    fn must_stop(&self, addr: SocketAddr) -> bool {
        self.hold_of(addr).is_some() || self.group_of(addr).is_none()
    }

    /// The target may have rebooted: binaries sent to it count as unsent.
    fn forget_binaries(&self, addr: SocketAddr) {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&addr);
        self.sched().forget_binaries(addr);
    }
}

/// One experiment while it runs.
pub(crate) struct ExpCtx {
    pub id: ExpId,
    pub name: String,
    pub workload: super::super::distributor::Workload,
    pub selector: Selector,
    pub binaries: Binaries,
    pub binaries_id: u64,
    pub attempts: u32,
    pub give_up_after: Option<Duration>,
    pub flush_interval: Duration,
    pub queue: Arc<WorkQueue>,
    pub fanout: FanoutSender,
    pub metrics: Arc<Metrics>,
    /// Outcomes `(index, bad)` whose rows are not yet flushed and recorded in the ledger.
    pub unrecorded: Mutex<Vec<(u64, bool)>>,
    /// First fatal error (a handler or the ledger failed, or no target for too long).
    pub fatal: Mutex<Option<DistributorError>>,
    /// Stops this experiment's attempts (a child of the pool's token).
    pub cancel: CancellationToken,
    /// Paused by its owner (mirrored in the scheduler).
    pub paused: Arc<std::sync::atomic::AtomicBool>,
}

impl ExpCtx {
    fn fail(&self, e: DistributorError) {
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            tracing::error!(experiment = %self.name, error = %e, "experiment stops");
            *f = Some(e);
        }
        self.cancel.cancel();
    }

    async fn send(&self, m: Msg) -> bool {
        match self.fanout.send(m).await {
            Ok(()) => true,
            Err(e) => {
                self.fail(e.into());
                false
            }
        }
    }

    /// The variant has its outcome and its rows were handed to the handlers.
    fn outcome(&self, index: u64, bad: bool) {
        self.unrecorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((index, bad));
        self.queue.complete(index);
    }
}

// ---------------------------------------------------------------------------------------------
// The pool supervisor

/// Watch the hosts and keep one worker per live target, until the pool is cancelled.
pub(crate) async fn run_pool(
    shared: Arc<Shared>,
    hosts: HostPool,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
) {
    let prober = shared.cfg.probe.prober(&shared.cfg.session);
    let monitor_cancel = CancellationToken::new();
    // Every monitor's changes, merged.
    let (change_tx, mut changes) = mpsc::channel::<HostChange>(1024);
    let watch = |hosts: HostPool, cancel: CancellationToken| {
        let (handle, mut rx) =
            Monitor::spawn(hosts, prober.clone(), shared.cfg.monitor.clone(), cancel);
        let tx = change_tx.clone();
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                if tx.send(c).await.is_err() {
                    break;
                }
            }
        });
        handle
    };
    // Launched groups: a launcher each, stopped after the workers.
    let launch_cancel = CancellationToken::new();
    let mut launchers: JoinSet<()> = JoinSet::new();
    let mut launcher_tokens: HashMap<String, CancellationToken> = HashMap::new();
    let launch = |g: &Arc<GroupRt>,
                  launchers: &mut JoinSet<()>,
                  tokens: &mut HashMap<String, CancellationToken>| {
        if let Some(l) = &g.launch {
            let token = launch_cancel.child_token();
            tokens.insert(g.name.clone(), token.clone());
            launchers.spawn(lifecycle::run_launcher(
                g.name.clone(),
                l.clone(),
                pool_view(&shared, g, change_tx.clone()),
                token,
            ));
        }
    };
    for g in shared.groups().clone().iter() {
        launch(g, &mut launchers, &mut launcher_tokens);
    }
    // The groups the pool started with share one monitor; each added group has its own.
    let initial = watch(hosts, monitor_cancel.child_token());
    let mut added: HashMap<String, (MonitorHandle, CancellationToken)> = HashMap::new();
    let mut workers: JoinSet<(SocketAddr, WorkerExit)> = JoinSet::new();
    let mut active: HashSet<SocketAddr> = HashSet::new();
    // Targets out of work by their owner's request, leased from their monitor until released.
    let mut parked: HashSet<SocketAddr> = HashSet::new();
    let mut side: JoinSet<()> = JoinSet::new();
    // Automatic quarantines in progress; cancelling one ends its hold early.
    let mut held_out: HashMap<SocketAddr, CancellationToken> = HashMap::new();
    let monitor_of = |addr: SocketAddr,
                      added: &HashMap<String, (MonitorHandle, CancellationToken)>|
     -> Option<MonitorHandle> {
        let g = shared.group_of(addr)?;
        if g.added {
            added.get(&g.name).map(|(m, _)| m.clone())
        } else {
            Some(initial.clone())
        }
    };
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => break,
            Some(change) = changes.recv() => match change {
                HostChange::Up(addr) => {
                    if shared.group_of(addr).is_none() {
                        // Its group was removed meanwhile.
                        continue;
                    }
                    if shared.hold_of(addr).is_some() {
                        parked.insert(addr);
                        shared.board.set_state(addr, held_state(&shared, addr));
                        continue;
                    }
                    if active.insert(addr) {
                        tracing::debug!(%addr, "target up");
                        workers.spawn(worker(addr, shared.clone()));
                    }
                }
                HostChange::Down(addr) => {
                    tracing::debug!(%addr, "host down");
                    // It may come back rebooted, without the binaries sent to it.
                    shared.forget_binaries(addr);
                }
            },
            Some(req) = ctl.recv() => match req {
                Ctl::Watch(g) if g.launch.is_some() => {
                    launch(&g, &mut launchers, &mut launcher_tokens);
                }
                Ctl::Watch(g) => {
                    let cancel = monitor_cancel.child_token();
                    let m = watch(g.hosts.clone(), cancel.clone());
                    added.insert(g.name.clone(), (m, cancel));
                }
                Ctl::Unwatch(name) => {
                    if let Some((_, cancel)) = added.remove(&name) {
                        cancel.cancel();
                    }
                    if let Some(cancel) = launcher_tokens.remove(&name) {
                        cancel.cancel();
                    }
                    // Targets of the removed group that are not at work leave the books now;
                    // working ones when their worker ends.
                    let gone: Vec<SocketAddr> = shared
                        .board
                        .snapshot()
                        .targets
                        .iter()
                        .map(|(a, _)| *a)
                        .filter(|a| shared.group_of(*a).is_none() && !active.contains(a))
                        .collect();
                    for a in gone {
                        parked.remove(&a);
                        shared.board.forget(a);
                    }
                }
                Ctl::Release(addr) => {
                    let launched = shared.group_of(addr).and_then(|g| g.launch.clone());
                    if let (true, Some(l)) = (parked.contains(&addr), launched) {
                        // Its launcher probes it again and brings it back.
                        parked.remove(&addr);
                        shared.board.set_state(addr, TargetState::Backoff);
                        let _ = l.tx.send(LaunchMsg::Failed { addr, restart: false, delay: Duration::ZERO });
                    } else if parked.remove(&addr) {
                        if let Some(m) = monitor_of(addr, &added) {
                            shared.board.set_state(addr, TargetState::Backoff);
                            m.report_failed(addr);
                        }
                    } else if let Some(t) = held_out.remove(&addr) {
                        t.cancel();
                    }
                }
            },
            Some(joined) = workers.join_next(), if !workers.is_empty() => {
                let Ok((addr, exit)) = joined else {
                    tracing::error!("a worker panicked");
                    continue;
                };
                active.remove(&addr);
                if shared.group_of(addr).is_none() {
                    // Its group was removed: forgotten by the pool.
                    shared.board.forget(addr);
                    continue;
                }
                if shared.hold_of(addr).is_some() {
                    parked.insert(addr);
                    shared.board.set_state(addr, held_state(&shared, addr));
                    continue;
                }
                let delay = health_delay(&shared, addr);
                if let Some(l) = shared.group_of(addr).and_then(|g| g.launch.clone()) {
                    // A launched target is restarted (or rejoins) by its launcher.
                    let msg = match exit {
                        WorkerExit::Cancelled => None,
                        WorkerExit::Failed { suspect, rebooted, .. } => Some(LaunchMsg::Failed {
                            addr,
                            restart: suspect || rebooted,
                            delay: Duration::ZERO,
                        }),
                        WorkerExit::Unhealthy => Some(LaunchMsg::Failed { addr, restart: true, delay }),
                    };
                    if let Some(m) = msg {
                        let _ = l.tx.send(m);
                    }
                    continue;
                }
                if let WorkerExit::Unhealthy = exit {
                    if let Some(m) = monitor_of(addr, &added) {
                        side.spawn(recheck(shared.clone(), m, addr, delay));
                    }
                    continue;
                }
                if let WorkerExit::Failed { consecutive, suspect, .. } = exit {
                    let quarantine = consecutive >= shared.cfg.quarantine_after;
                    let state = if quarantine { TargetState::Quarantined } else { TargetState::Backoff };
                    shared.board.set_state(addr, state);
                    held_out.retain(|_, t| !t.is_cancelled());
                    let early = CancellationToken::new();
                    if quarantine {
                        held_out.insert(addr, early.clone());
                    }
                    if let Some(m) = monitor_of(addr, &added) {
                        side.spawn(return_to_pool(shared.clone(), m, addr, suspect, quarantine, early));
                    }
                }
            }
        }
    }
    while let Some(joined) = workers.join_next().await {
        if let Ok((addr, _)) = joined {
            shared.board.set_state(addr, TargetState::Closed);
        }
    }
    monitor_cancel.cancel();
    side.abort_all();
    launch_cancel.cancel();
    while launchers.join_next().await.is_some() {}
}

/// What a group's launcher sees of the pool.
fn pool_view(shared: &Arc<Shared>, g: &Arc<GroupRt>, up: mpsc::Sender<HostChange>) -> PoolView {
    let s = shared.clone();
    let labels = g.labels.clone();
    let v1 = g.dialect().has_optimize();
    let demand = move || -> u64 {
        s.exps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|c| {
                !c.paused.load(Ordering::Relaxed)
                    && !c.cancel.is_cancelled()
                    && c.selector.matches(&labels)
                    && (c.workload.admission.is_none() || v1)
            })
            .map(|c| c.queue.queued())
            .sum()
    };
    let s = shared.clone();
    let busy = move |a: SocketAddr| -> bool {
        s.current().contains_key(&a)
            || matches!(
                s.board.state_of(a),
                Some(TargetState::Running | TargetState::Checking)
            )
    };
    PoolView {
        counters: shared.life.clone(),
        demand: Box::new(demand),
        busy: Box::new(busy),
        changed: shared.changed.clone(),
        up,
    }
}

/// Delay before the re-check of a target that failed its health check `n` times in a row:
/// the group's backoff, doubled each time, at most 5 minutes.
fn health_delay(shared: &Shared, addr: SocketAddr) -> Duration {
    let n = shared
        .health_fails
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&addr)
        .copied()
        .unwrap_or(0);
    let base = shared
        .group_of(addr)
        .and_then(|g| g.health.as_ref().map(|h| h.spec.backoff))
        .unwrap_or(Duration::from_secs(5));
    if n == 0 {
        return Duration::ZERO;
    }
    base.saturating_mul(1u32 << (n - 1).min(16))
        .min(Duration::from_secs(300))
}

/// A target that failed its health check: its recovery command, then after `delay` it is
/// probed again (and checked again when it answers).
async fn recheck(shared: Arc<Shared>, monitor: MonitorHandle, addr: SocketAddr, delay: Duration) {
    if let Some(cmd) = &shared.cfg.recovery_cmd {
        shared.forget_binaries(addr);
        recover(cmd, addr, &shared.cancel).await;
    }
    tracing::info!(%addr, delay_s = delay.as_secs_f64(), "unhealthy target: checked again after the delay");
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shared.cancel.cancelled() => return,
    }
    monitor.report_failed(addr);
}

/// The state a held target shows.
fn held_state(shared: &Shared, addr: SocketAddr) -> TargetState {
    match shared.hold_of(addr) {
        Some(Hold::Drain) => TargetState::Drained,
        _ => TargetState::Quarantined,
    }
}

/// A failed target goes back to the discovery pool: after the recovery command if it
/// misbehaved during work, and after the quarantine hold if it failed too often in a row.
async fn return_to_pool(
    shared: Arc<Shared>,
    monitor: MonitorHandle,
    addr: SocketAddr,
    suspect: bool,
    quarantine: bool,
    early: CancellationToken,
) {
    if let (Some(cmd), true) = (&shared.cfg.recovery_cmd, suspect) {
        // A recovered target may have rebooted: its binaries count as unsent.
        shared.forget_binaries(addr);
        recover(cmd, addr, &shared.cancel).await;
    }
    if quarantine {
        tracing::warn!(%addr, hold_s = shared.cfg.quarantine_for.as_secs(), "target quarantined after repeated faults");
        tokio::select! {
            _ = tokio::time::sleep(shared.cfg.quarantine_for) => {}
            _ = early.cancelled() => tracing::info!(%addr, "quarantine ended by request"),
            _ = shared.cancel.cancelled() => return,
        }
        early.cancel();
    }
    monitor.report_failed(addr);
}

/// Run the recovery command for a dead target, bounded by a timeout.
async fn recover(cmd: &str, addr: SocketAddr, cancel: &CancellationToken) {
    let text = cmd
        .replace("{addr}", &addr.to_string())
        .replace("{ip}", &addr.ip().to_string())
        .replace("{port}", &addr.port().to_string());
    tracing::info!(%addr, command = %text, "running recovery command");
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&text)
        .env("TASKDIST_TARGET", addr.to_string())
        .kill_on_drop(true)
        .status();
    tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(300), child) => match r {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => tracing::warn!(%addr, %status, "recovery command failed"),
            Ok(Err(e)) => tracing::warn!(%addr, error = %e, "recovery command could not run"),
            Err(_) => tracing::warn!(%addr, "recovery command timed out after 300 s"),
        },
        _ = cancel.cancelled() => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Workers

/// Why a worker ended.
#[derive(Debug)]
enum WorkerExit {
    /// The pool is shutting down.
    Cancelled,
    /// The session failed; the host goes back to the pool. `consecutive` counts failed
    /// attempts in a row (quarantine); `suspect` is set when the target misbehaved during
    /// work (timeout, lost connection, protocol violation, fault), which calls for the
    /// recovery command. A session that could not be opened is neither: backoff alone.
    /// `rebooted` is set when the target may have rebooted (its binaries count as unsent).
    Failed {
        consecutive: u32,
        suspect: bool,
        rebooted: bool,
    },
    /// The target failed its health check (the reason is on the board).
    Unhealthy,
}

const NOT_SUSPECT: WorkerExit = WorkerExit::Failed {
    consecutive: 0,
    suspect: false,
    rebooted: false,
};

async fn worker(addr: SocketAddr, shared: Arc<Shared>) -> (SocketAddr, WorkerExit) {
    let Some(group) = shared.group_of(addr) else {
        // Its group was removed.
        return (addr, WorkerExit::Cancelled);
    };
    let (labels, session_cfg) = (group.labels.clone(), group.session.clone());
    let board = shared.board.clone();
    board.set_state(addr, TargetState::Connecting);
    // With target leases, only the process holding a target's lease drives it.
    let lease = match &shared.cfg.target_leases {
        None => None,
        Some(leases) => match leases.acquire(addr).await {
            Ok(true) => Some(LeaseGuard::start(leases.clone(), addr)),
            Ok(false) => {
                tracing::info!(%addr, "target driven by another distributor (its lease is held elsewhere)");
                board.connect_failed(
                    addr,
                    "driven by another distributor (target lease held elsewhere)",
                );
                return (addr, NOT_SUSPECT);
            }
            Err(e) => {
                board.connect_failed(addr, &format!("target lease unknown: {e}"));
                return (addr, NOT_SUSPECT);
            }
        },
    };
    let lease_lost = lease
        .as_ref()
        .map_or_else(CancellationToken::new, |g| g.lost.clone());
    let connected = tokio::select! {
        r = Session::connect(addr, session_cfg.clone()) => r,
        _ = shared.cancel.cancelled() => return (addr, WorkerExit::Cancelled),
    };
    let mut session = match connected {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot open a session");
            if matches!(e, TargetError::Refused) {
                // Nothing listens: dom0 is restarting, so the target may come back rebooted.
                shared.forget_binaries(addr);
            }
            board.connect_failed(addr, &e.to_string());
            return (addr, NOT_SUSPECT);
        }
    };
    let mut loaded = shared
        .loaded
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&addr)
        .unwrap_or_default();
    // A target joining (or back from a recovery) is checked before it takes work.
    let health = group.health.clone();
    if let Some(h) = &health {
        if let Err(exit) = health_check(addr, &shared, h, &mut session, &mut loaded).await {
            session.close().await;
            return (addr, exit);
        }
    }
    let (mut since_check, mut checked_at) = (0u64, Instant::now());
    board.set_state(addr, TargetState::Idle);
    shared.sched().add_target(addr, labels, session_cfg.dialect);
    shared.changed.notify_waiters();
    let exit = 'work: loop {
        if let Some(h) = &health {
            let due = h.spec.every.is_some_and(|n| since_check >= n)
                || h.spec.every_time.is_some_and(|d| checked_at.elapsed() >= d);
            if due && !shared.must_stop(addr) {
                if let Err(exit) = health_check(addr, &shared, h, &mut session, &mut loaded).await {
                    break 'work exit;
                }
                (since_check, checked_at) = (0, Instant::now());
            }
        }
        board.set_state(addr, TargetState::Idle);
        let (ctx, mut job) = loop {
            let notified = shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if shared.must_stop(addr) {
                break 'work WorkerExit::Cancelled;
            }
            if lease_lost.is_cancelled() {
                tracing::warn!(%addr, "target lease lost: the session ends");
                break 'work NOT_SUSPECT;
            }
            let next = shared.sched().take(addr, Instant::now());
            if let Some(a) = next {
                let ctx = shared
                    .exps
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&a.exp)
                    .cloned();
                match ctx {
                    Some(ctx) => break (ctx, a.job),
                    None => {
                        // Cannot happen: an experiment leaves the registry only when none of
                        // its attempts runs. Close the books and look again.
                        shared
                            .sched()
                            .finish(a.exp, addr, Outcome::Neutral, false, Instant::now());
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(RECHECK) => {}
                _ = lease_lost.cancelled() => {}
                _ = shared.cancel.cancelled() => break 'work WorkerExit::Cancelled,
            }
        };
        if let Some(q) = job.queued_at.take() {
            ctx.metrics.queue_wait(q.elapsed());
        }
        let mut sent: HashSet<String> = loaded
            .iter()
            .filter(|(_, id)| **id == ctx.binaries_id)
            .map(|(n, _)| n.clone())
            .collect();
        let (outcome, result) =
            run_one(addr, &shared, &ctx, &mut session, &mut sent, &mut job).await;
        loaded.retain(|n, id| *id != ctx.binaries_id || sent.contains(n));
        for n in sent {
            loaded.insert(n, ctx.binaries_id);
        }
        shared.sched().finish(
            ctx.id,
            addr,
            outcome,
            outcome == Outcome::Done,
            Instant::now(),
        );
        since_check += 1;
        shared.changed.notify_waiters();
        match result {
            Ok(()) => {}
            Err(exit) => break exit,
        }
        if shared.cancel.is_cancelled() {
            break WorkerExit::Cancelled;
        }
        if session.is_broken() {
            // An attempt stopped by its experiment can leave the session unusable: reconnect.
            break NOT_SUSPECT;
        }
    };
    shared.sched().remove_target(addr);
    shared.changed.notify_waiters();
    // A target that may have rebooted has lost its binaries; after a fault on a live
    // connection they stay loaded (the recovery command, if it runs, forgets them).
    if !matches!(exit, WorkerExit::Failed { rebooted: true, .. }) {
        shared
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, loaded);
    } else {
        shared.sched().forget_binaries(addr);
    }
    session.close().await;
    if matches!(exit, WorkerExit::Cancelled) {
        board.set_state(addr, TargetState::Closed);
    }
    (addr, exit)
}

/// A held target lease, renewed in the background until dropped (then given back).
struct LeaseGuard {
    leases: Arc<dyn super::TargetLeases>,
    addr: SocketAddr,
    renewer: tokio::task::JoinHandle<()>,
    /// Cancelled when a renewal was refused or failed.
    lost: CancellationToken,
}

impl LeaseGuard {
    fn start(leases: Arc<dyn super::TargetLeases>, addr: SocketAddr) -> Self {
        let lost = CancellationToken::new();
        let (l, flag) = (leases.clone(), lost.clone());
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(l.renew_every()).await;
                match l.acquire(addr).await {
                    Ok(true) => {}
                    Ok(false) | Err(_) => {
                        flag.cancel();
                        return;
                    }
                }
            }
        });
        LeaseGuard {
            leases,
            addr,
            renewer,
            lost,
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewer.abort();
        let (l, addr) = (self.leases.clone(), self.addr);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { l.release(addr).await });
        }
    }
}

/// Run the group's health check on the session. A failure is recorded (state `unhealthy`,
/// with the reason) and ends the worker; the check's results go to no experiment.
async fn health_check(
    addr: SocketAddr,
    shared: &Shared,
    h: &HealthRt,
    session: &mut Session,
    loaded: &mut HashMap<String, u64>,
) -> Result<(), WorkerExit> {
    shared.board.set_state(addr, TargetState::Checking);
    let cancel = shared.cancel.child_token();
    let mut verdict = Ok(());
    for set in &h.sets {
        let mut sent = HashSet::new();
        let r = session
            .run_taskset(
                set,
                None,
                &h.binaries,
                &mut sent,
                &mut |_: &[TimedEvent]| {},
                &cancel,
            )
            .await;
        if !sent.is_empty() {
            // The check's binaries replace the experiments' ones of the same name.
            loaded.retain(|n, _| !sent.contains(n));
            shared.sched().forget_binaries(addr);
        }
        verdict = match r {
            Ok(run) => lifecycle::judge(&run, h.spec.max_response),
            Err(TargetError::Cancelled) => return Err(WorkerExit::Cancelled),
            Err(e) => Err(e.to_string()),
        };
        if verdict.is_err() {
            break;
        }
    }
    if shared.cancel.is_cancelled() {
        return Err(WorkerExit::Cancelled);
    }
    if let Some(log) = &shared.health_log {
        let group = shared
            .group_of(addr)
            .map(|g| g.name.clone())
            .unwrap_or_default();
        log.record(
            addr,
            &group,
            &h.spec.spec,
            verdict.as_ref().err().map(String::as_str),
        )
        .await;
    }
    match verdict {
        Ok(()) => {
            shared.life.health_passed.fetch_add(1, Ordering::Relaxed);
            shared
                .health_fails
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&addr);
            shared.board.health(addr, Ok(()));
            tracing::debug!(%addr, "health check passed");
            Ok(())
        }
        Err(reason) => {
            let reason = format!("{}: {reason}", h.spec.spec);
            shared.life.health_failed.fetch_add(1, Ordering::Relaxed);
            *shared
                .health_fails
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(addr)
                .or_insert(0) += 1;
            shared.board.health(addr, Err(&reason));
            tracing::warn!(%addr, %reason, "health check failed: the target takes no work");
            Err(WorkerExit::Unhealthy)
        }
    }
}

/// Run one job on the session. `Err` ends the worker.
async fn run_one(
    addr: SocketAddr,
    shared: &Shared,
    ctx: &ExpCtx,
    session: &mut Session,
    sent: &mut HashSet<String>,
    job: &mut Job,
) -> (Outcome, Result<(), WorkerExit>) {
    let board = &shared.board;
    let id = AttemptId {
        variant: job.index,
        attempt: job.attempt,
        target: addr,
    };
    let started_at = job.dispatched.unwrap_or_else(SystemTime::now);
    let first_started = *job.first_started.get_or_insert(started_at);
    let taskset = match ctx.workload.source.get(job.index) {
        Ok(t) => Arc::new(t),
        Err(reason) => {
            // No target can run a variant that cannot be built: bad at once.
            let reason = format!("variant cannot be built: {reason}");
            bad(
                ctx,
                id,
                Arc::new(taskdist_tasksets::TaskSet::default()),
                reason,
                first_started,
            )
            .await;
            return (Outcome::Neutral, Ok(()));
        }
    };
    if !ctx
        .send(Msg::Started(Arc::new(VariantStarted {
            id,
            taskset: taskset.clone(),
            started_at,
        })))
        .await
    {
        ctx.queue.requeue(job.clone());
        return (Outcome::Neutral, Ok(()));
    }
    board.set_state(addr, TargetState::Running);
    ctx.metrics.set_state(addr, TargetState::Running);
    let t0 = Instant::now();
    let fanout = ctx.fanout.clone();
    let metrics = ctx.metrics.clone();
    let board2 = board.clone();
    let mut on_events = move |events: &[TimedEvent]| {
        board2.saw_events(addr);
        let missed = fanout.offer(Msg::Live(id, Arc::new(events.to_vec())));
        if missed > 0 {
            metrics
                .live_skipped
                .fetch_add(missed as u64, Ordering::Relaxed);
        }
    };
    let stale_before = session.stale_events();
    let attempt_cancel = ctx.cancel.child_token();
    shared.current().insert(
        addr,
        Current {
            experiment: ctx.name.clone(),
            variant: job.index,
            since: started_at,
            cancel: attempt_cancel.clone(),
        },
    );
    if matches!(shared.hold_of(addr), Some(Hold::Quarantine(_))) {
        // Quarantined between the scheduler's answer and now.
        attempt_cancel.cancel();
    }
    let result = session
        .run_taskset(
            &taskset,
            ctx.workload.admission.as_ref(),
            &ctx.binaries,
            sent,
            &mut on_events,
            &attempt_cancel,
        )
        .await;
    shared.current().remove(&addr);
    // Stale events of this attempt, whether it finished or failed.
    ctx.metrics.stale_events.fetch_add(
        session.stale_events().saturating_sub(stale_before),
        Ordering::Relaxed,
    );
    ctx.metrics.set_state(addr, TargetState::Idle);
    match result {
        Ok(run) => {
            let n = run.events.len() as u64;
            let took = t0.elapsed();
            board.completed(addr, took);
            ctx.metrics.completed(addr, took);
            let finished = VariantFinished {
                id,
                taskset,
                events: run.events,
                started_at,
                finished_at: SystemTime::now(),
            };
            if !ctx.send(Msg::Finished(Arc::new(finished))).await {
                ctx.queue.requeue(job.clone());
                return (Outcome::Done, Ok(()));
            }
            ctx.metrics.events.fetch_add(n, Ordering::Relaxed);
            ctx.metrics.done.fetch_add(1, Ordering::Relaxed);
            ctx.outcome(job.index, false);
            (Outcome::Done, Ok(()))
        }
        Err(TargetError::Cancelled) => {
            ctx.queue.requeue(job.clone());
            ctx.metrics.requeued.fetch_add(1, Ordering::Relaxed);
            ctx.send(Msg::Stopped(Arc::new(VariantStopped {
                id,
                reason: "stopped".into(),
            })))
            .await;
            let exit = if shared.cancel.is_cancelled() {
                Err(WorkerExit::Cancelled)
            } else {
                Ok(())
            };
            (Outcome::Neutral, exit)
        }
        Err(e) if !e.is_retryable() && !session.is_broken() => {
            // The variant itself cannot run (invalid task-set, a binary that is missing,
            // admission data the dialect cannot take): no retry helps and the target is fine.
            let reason = e.to_string();
            tracing::warn!(%addr, experiment = %ctx.name, variant = job.index, error = %reason, "variant cannot run");
            bad(ctx, id, taskset, reason, first_started).await;
            (Outcome::Neutral, Ok(()))
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(%addr, experiment = %ctx.name, variant = job.index, attempt = job.attempt, error = %reason, "attempt failed");
            let consecutive = board.failed(addr, &reason);
            ctx.metrics.failed(addr, &reason);
            job.failures += 1;
            if !job.failed_on.contains(&addr) {
                job.failed_on.push(addr);
            }
            let (ok, failed) = ctx.metrics.attempts();
            // Laplace's rule: a fresh experiment counts as one failure in two attempts.
            let p_fail = (failed + 1) as f64 / (failed + ok + 2) as f64;
            if points_at_variant(job, ctx.attempts, p_fail) {
                let reason = format!(
                    "{reason} (failed {} times on {} targets)",
                    job.failures,
                    job.failed_on.len()
                );
                bad(ctx, id, taskset, reason, first_started).await;
            } else {
                ctx.queue.requeue(job.clone());
                ctx.metrics.requeued.fetch_add(1, Ordering::Relaxed);
                ctx.send(Msg::Stopped(Arc::new(VariantStopped { id, reason })))
                    .await;
            }
            (
                Outcome::Failed,
                Err(WorkerExit::Failed {
                    consecutive,
                    suspect: e.target_suspect(),
                    rebooted: e.may_have_rebooted(),
                }),
            )
        }
    }
}

/// Whether a variant's failures point at the variant rather than at the targets that ran it.
/// `p_fail` is the share of the experiment's attempts that failed. Either the variant failed
/// at least `attempts` times, on at least two different targets, and so often that bad luck
/// is unlikely (`p_fail ^ failures <= 1e-6`: with 0.5 % of attempts failing, 3 failures; with
/// 5 %, 5; with 7 %, 6), or it failed `3 × attempts` times in all, which also ends a pool of
/// one target.
pub(crate) fn points_at_variant(job: &Job, attempts: u32, p_fail: f64) -> bool {
    let f = job.failures;
    if f >= attempts.saturating_mul(3) {
        return true;
    }
    f >= attempts
        && job.failed_on.len() >= 2
        && p_fail.clamp(0.0, 1.0).powi(f.min(64) as i32) <= BAD_LUCK
}

async fn bad(
    ctx: &ExpCtx,
    id: AttemptId,
    taskset: Arc<taskdist_tasksets::TaskSet>,
    reason: String,
    started_at: SystemTime,
) {
    let sent = ctx
        .send(Msg::Bad(Arc::new(VariantBad {
            id,
            taskset,
            reason,
            started_at,
            finished_at: SystemTime::now(),
        })))
        .await;
    if sent {
        ctx.metrics.bad.fetch_add(1, Ordering::Relaxed);
        ctx.outcome(id.variant, true);
    }
}

// ---------------------------------------------------------------------------------------------
// Experiments

/// The experiment's counters when it was submitted (a distributor's metrics carry over from
/// run to run), read before any of its attempts can start.
pub(crate) struct Baseline {
    started: Instant,
    done: u64,
    bad: u64,
    requeued: u64,
    events: u64,
}

impl Baseline {
    pub fn of(m: &Metrics) -> Self {
        Baseline {
            started: Instant::now(),
            done: m.done.load(Ordering::Relaxed),
            bad: m.bad.load(Ordering::Relaxed),
            requeued: m.requeued.load(Ordering::Relaxed),
            events: m.events.load(Ordering::Relaxed),
        }
    }
}

/// Drive one experiment from its start to its end (every variant has an outcome, it was
/// stopped, it gave up, or the pool shut down).
pub(crate) async fn run_experiment(
    shared: Arc<Shared>,
    ctx: Arc<ExpCtx>,
    info: RunInfo,
    ledger: Option<Box<dyn OutcomeLog>>,
    base: Baseline,
    spec: super::sched::ExpSpec,
    feeder: Option<Feeder>,
) -> Result<RunSummary, DistributorError> {
    let started = base.started;
    let base = (base.done, base.bad, base.requeued, base.events);
    // The handlers hear of the run before any of its variants: only now is it scheduled.
    ctx.send(Msg::RunStarted(Arc::new(info))).await;
    {
        let mut sched = shared.sched();
        let mut spec = spec;
        spec.paused = ctx.paused.load(Ordering::Relaxed);
        sched.add_experiment_as(ctx.id, spec);
    }
    shared.changed.notify_waiters();
    let recorder_stop = CancellationToken::new();
    let recorder = tokio::spawn(record(ctx.clone(), ledger, recorder_stop.clone()));
    // A shared store hands out the work: its feeder claims chunks until the experiment
    // stops, and keeps their leases until the last results are written.
    let feeder_stop = CancellationToken::new();
    let feeder = feeder.map(|f| {
        let fctx = ctx.clone();
        let fut = f(ctx.queue.clone(), ctx.cancel.clone(), feeder_stop.clone());
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                fctx.fail(e);
            }
        })
    });
    warn_if_unservable(&shared, &ctx);

    let mut health = tokio::time::interval(HEALTH_CHECK);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unhealthy_since = Some(tokio::time::Instant::now());
    let mut lonely_since = Some(tokio::time::Instant::now());
    let mut warned = false;
    loop {
        tokio::select! {
            _ = health.tick() => {
                let now = tokio::time::Instant::now();
                let eligible: HashSet<SocketAddr> = shared.sched().eligible(ctx.id).into_iter().collect();
                publish_figures(&shared, &ctx);
                // Say once (again after a target came and went) that nothing can serve it.
                if eligible.is_empty() {
                    let since = *lonely_since.get_or_insert(now);
                    if !warned && now.duration_since(since) >= NO_TARGET_WARNING {
                        warned = true;
                        warn_no_target(&shared, &ctx);
                    }
                } else {
                    lonely_since = None;
                    warned = false;
                }
                if let Some(limit) = ctx.give_up_after {
                    if shared.board.has_healthy_target(|a| eligible.contains(&a)) {
                        unhealthy_since = None;
                    } else {
                        let since = *unhealthy_since.get_or_insert(now);
                        if now.duration_since(since) >= limit {
                            ctx.fail(DistributorError::GaveUp { waited: limit });
                            break;
                        }
                    }
                }
            }
            _ = ctx.queue.wait_all_done() => break,
            _ = ctx.cancel.cancelled() => break,
        }
    }

    // No new attempts; running ones stop (requeued, so a resumed run does them).
    shared.sched().close_experiment(ctx.id);
    ctx.cancel.cancel();
    loop {
        let notified = shared.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if shared.sched().running(ctx.id) == 0 {
            break;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
    publish_figures(&shared, &ctx);
    shared.sched().remove_experiment(ctx.id);
    shared
        .exps
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&ctx.id);
    shared.changed.notify_waiters();

    recorder_stop.cancel();
    let recorded = recorder
        .await
        .map_err(|e| DistributorError::Internal(format!("recorder: {e}")));
    feeder_stop.cancel();
    if let Some(f) = feeder {
        let _ = f.await;
    }
    let recorded = recorded?;
    if let Some(e) = ctx.fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    recorded?;
    let m = &ctx.metrics;
    Ok(RunSummary {
        done: m.done.load(Ordering::Relaxed) - base.0,
        bad: m.bad.load(Ordering::Relaxed) - base.1,
        requeued: m.requeued.load(Ordering::Relaxed) - base.2,
        events: m.events.load(Ordering::Relaxed) - base.3,
        interrupted: !ctx.queue.all_done(),
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

fn publish_figures(shared: &Shared, ctx: &ExpCtx) {
    let (figures, pairs) = {
        let s = shared.sched();
        (s.figures().get(&ctx.id).copied(), s.pair_stats(ctx.id))
    };
    if let Some(f) = figures {
        ctx.metrics
            .set_figures(ctx.queue.queued(), f.running, f.target_time, f.share);
    }
    let _ = pairs;
}

/// At submission: say at once when no group of the pool can ever serve the experiment.
fn warn_if_unservable(shared: &Shared, ctx: &ExpCtx) {
    let needs_v1 = ctx.workload.admission.is_some();
    let servable = shared
        .groups()
        .iter()
        .any(|g| ctx.selector.matches(&g.labels) && (!needs_v1 || g.dialect().has_optimize()));
    if !servable {
        tracing::warn!(
            "experiment {}: no target group of the pool can serve it ({}); it waits for one{}",
            ctx.name,
            requirement(ctx),
            give_up_note(ctx)
        );
    }
}

fn warn_no_target(shared: &Shared, ctx: &ExpCtx) {
    let secs = NO_TARGET_WARNING.as_secs();
    let m = shared.board.snapshot();
    if m.targets_up == 0 {
        if let Some((addr, error)) = m
            .targets
            .iter()
            .find_map(|(a, t)| t.last_error.as_ref().map(|e| (a, e)))
        {
            tracing::warn!(
                "experiment {}: after {secs} s no session could be opened: hosts answer the \
                 probe, but e.g. {addr} fails with \"{error}\"; check --port, --dialect and \
                 that the dom0 server runs",
                ctx.name
            );
            return;
        }
        let hosts: u128 = shared.groups().iter().map(|g| g.hosts.len()).sum();
        tracing::warn!(
            "experiment {}: no host of the {hosts} addresses has answered the probe after \
             {secs} s; still probing (check the addresses and --probe)",
            ctx.name
        );
        return;
    }
    tracing::warn!(
        "experiment {}: none of the {} targets up can serve it ({}) after {secs} s; it waits{}",
        ctx.name,
        m.targets_up,
        requirement(ctx),
        give_up_note(ctx)
    );
}

fn requirement(ctx: &ExpCtx) -> String {
    let mut parts = Vec::new();
    if !ctx.selector.is_any() {
        parts.push(format!("requires {}", ctx.selector));
    }
    if ctx.workload.admission.is_some() {
        parts.push("admission-control data needs v1 targets".to_owned());
    }
    if parts.is_empty() {
        "no target is up".to_owned()
    } else {
        parts.join("; ")
    }
}

fn give_up_note(ctx: &ExpCtx) -> String {
    ctx.give_up_after
        .map(|d| format!(" (gives up after {} s, --give-up-after)", d.as_secs()))
        .unwrap_or_default()
}

/// Periodically: flush every handler, then append the flushed outcomes to the ledger (with
/// its fsyncs on a blocking thread). A ledger error stops the experiment at once: results that
/// cannot be recorded must not pile up for hours.
async fn record(
    ctx: Arc<ExpCtx>,
    mut ledger: Option<Box<dyn OutcomeLog>>,
    stop: CancellationToken,
) -> Result<(), DistributorError> {
    let mut tick = tokio::time::interval(ctx.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        let batch = std::mem::take(&mut *ctx.unrecorded.lock().unwrap_or_else(|p| p.into_inner()));
        if !batch.is_empty() || last {
            // Every message about `batch` was sent before this flush request.
            if let Err(e) = ctx.fanout.flush().await {
                ctx.fail(e.into());
                return Ok(());
            }
        }
        // Called on every tick: a store may hold results back from an earlier call.
        if let Some(l) = ledger.as_mut() {
            if let Err(e) = l.record(batch, last).await {
                ctx.fail(e.into());
                return Ok(());
            }
        }
        if last {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(failed_on: &[u8], failures: u32) -> Job {
        Job {
            index: 0,
            attempt: failures,
            failures,
            failed_on: failed_on
                .iter()
                .map(|&i| SocketAddr::from(([127, 0, 0, i], 3001)))
                .collect(),
            first_started: None,
            queued_at: None,
            dispatched: None,
        }
    }

    #[test]
    fn bad_needs_evidence_against_the_variant() {
        let rare = 0.005; // 0.5 % of attempts fail
                          // three failures on one target: the target's fault, not the variant's
        assert!(!points_at_variant(&job(&[2], 3), 3, rare));
        // on two targets, where failures are rare: the variant
        assert!(points_at_variant(&job(&[2, 3], 3), 3, rare));
        assert!(!points_at_variant(&job(&[2, 3], 2), 3, rare));
        // where 7 % of attempts fail, three failures are bad luck; six are not
        assert!(!points_at_variant(&job(&[2, 3, 4], 3), 3, 0.07));
        assert!(!points_at_variant(&job(&[2, 3], 5), 3, 0.07));
        assert!(points_at_variant(&job(&[2, 3], 6), 3, 0.07));
        // a pool of one, or a run where everything fails, still ends: 3 × attempts
        assert!(points_at_variant(&job(&[2], 9), 3, rare));
        assert!(points_at_variant(&job(&[2, 3], 9), 3, 1.0));
        assert!(!points_at_variant(&job(&[2], 1), 1, rare));
        assert!(points_at_variant(&job(&[2], 3), 1, rare));
    }
}
