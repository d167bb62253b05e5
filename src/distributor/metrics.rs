//! Run metrics: totals, rates and per-target statistics, readable while the run goes on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What a target's worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// Opening a session.
    Connecting,
    /// Session open, waiting for work.
    Idle,
    /// Loading or running a task-set.
    Running,
    /// The session failed; the host is back in the discovery pool and re-checked later.
    Backoff,
    /// Repeated faults: the host is held out for a while (see `quarantine_for`); or taken
    /// out of service by the pool's owner until released.
    Quarantined,
    /// Drained by the pool's owner: takes no work until released.
    Drained,
    /// Running its group's health check; takes no work meanwhile.
    Checking,
    /// Failed its health check: takes no work until a re-check passes (the reason is in
    /// `last_error` and `health`).
    Unhealthy,
    /// The run ended; the session was closed.
    Closed,
}

/// Statistics of one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStats {
    /// Current state.
    pub state: TargetState,
    /// Task-sets completed on this target.
    pub completed: u64,
    /// Failed attempts on this target.
    pub failed: u64,
    /// Failures in a row (reset by a completed task-set).
    pub consecutive_failures: u32,
    /// Time spent running completed task-sets (in JSON: `busy_s`, seconds).
    #[serde(with = "secs", rename = "busy_s")]
    pub busy: Duration,
    /// The last failure.
    pub last_error: Option<String>,
    /// The last health check: `passed`, or `failed: REASON` (None: none ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// The current attempt has received events of its task-set (a sign of a working target
    /// even after earlier failures).
    #[serde(skip)]
    pub(crate) receiving: bool,
}

impl TargetStats {
    /// Mean wall time per completed task-set.
    pub fn mean_taskset_time(&self) -> Option<Duration> {
        (self.completed > 0).then(|| self.busy / self.completed as u32)
    }
}

fn targets_as_objects<S: serde::Serializer>(
    targets: &[(SocketAddr, TargetStats)],
    s: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Row<'a> {
        target: SocketAddr,
        #[serde(flatten)]
        stats: &'a TargetStats,
    }
    s.collect_seq(targets.iter().map(|(target, stats)| Row {
        target: *target,
        stats,
    }))
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Live counters of a distributor.
#[derive(Debug)]
pub struct Metrics {
    started: Mutex<Instant>,
    planned: Mutex<Option<u64>>,
    already: AtomicU64,
    pub(crate) done: AtomicU64,
    pub(crate) bad: AtomicU64,
    pub(crate) requeued: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) live_skipped: AtomicU64,
    pub(crate) stale_events: AtomicU64,
    queue_wait_ns: AtomicU64,
    queue_waits: AtomicU64,
    targets: Mutex<BTreeMap<SocketAddr, TargetStats>>,
    /// The pool's target states, when these are one experiment's metrics in a pool.
    board: std::sync::OnceLock<Arc<Metrics>>,
    about: Mutex<About>,
}

/// Who the metrics are about and the scheduler's figures, refreshed periodically.
#[derive(Debug, Clone, Default)]
struct About {
    name: String,
    priority: i64,
    weight: f64,
    queued: u64,
    running: u64,
    target_time: Duration,
    share: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Mutex::new(Instant::now()),
            planned: Mutex::new(None),
            already: AtomicU64::new(0),
            done: AtomicU64::new(0),
            bad: AtomicU64::new(0),
            requeued: AtomicU64::new(0),
            events: AtomicU64::new(0),
            live_skipped: AtomicU64::new(0),
            stale_events: AtomicU64::new(0),
            queue_wait_ns: AtomicU64::new(0),
            queue_waits: AtomicU64::new(0),
            targets: Mutex::new(BTreeMap::new()),
            board: std::sync::OnceLock::new(),
            about: Mutex::new(About {
                weight: 1.0,
                ..About::default()
            }),
        }
    }
}

/// A consistent copy of the metrics.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsSnapshot {
    /// The experiment's name.
    pub name: String,
    /// Its priority (higher first).
    pub priority: i64,
    /// Its weight among experiments of equal priority.
    pub weight: f64,
    /// Variants waiting for a target (requeued ones included; an upper bound on resume).
    pub queued: u64,
    /// Attempts running.
    pub running: u64,
    /// Target time used so far (finished and running attempts), in seconds.
    pub target_time_s: f64,
    /// Share of the pool's target time used by the running experiments that went to this one.
    pub share: f64,
    /// Variants of the selection (None: unbounded), including those that already had an
    /// outcome when the run was resumed.
    pub planned: Option<u64>,
    /// Variants that already had an outcome when the run started (resume).
    pub already_done: u64,
    /// Variants done (finished on a target).
    pub done: u64,
    /// Variants given up as bad.
    pub bad: u64,
    /// Attempts stopped or failed and requeued.
    pub requeued: u64,
    /// Events in finished attempts.
    pub events: u64,
    /// Stale events: leftovers of earlier task-sets that arrived before a task-set began
    /// (never charged to it).
    pub stale_events: u64,
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Outcomes (done + bad) per second.
    pub rate_per_s: f64,
    /// Mean time a requeued variant waited before a target took it again, in seconds.
    pub mean_queue_wait_s: f64,
    /// Targets of the pool with an open session (idle or running).
    pub targets_up: usize,
    /// Targets running a task-set.
    pub targets_busy: usize,
    /// Targets in backoff, quarantine, or held out after a failed health check.
    pub targets_backoff: usize,
    /// Per-target statistics of this experiment (in JSON: objects with a `target` key); the
    /// state is the target's in the pool.
    #[serde(serialize_with = "targets_as_objects")]
    pub targets: Vec<(SocketAddr, TargetStats)>,
}

impl Metrics {
    fn targets(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, TargetStats>> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// These are the metrics of experiment `name` in a pool whose target states are in
    /// `board` (the first board given stays).
    pub(crate) fn attach(&self, board: &Arc<Metrics>, name: &str, priority: i64, weight: f64) {
        let _ = self.board.set(board.clone());
        let mut a = self.about.lock().unwrap_or_else(|p| p.into_inner());
        a.name = name.to_owned();
        a.priority = priority;
        a.weight = weight;
    }

    /// The scheduler's figures of the experiment.
    pub(crate) fn set_figures(&self, queued: u64, running: u64, target_time: Duration, share: f64) {
        let mut a = self.about.lock().unwrap_or_else(|p| p.into_inner());
        a.queued = queued;
        a.running = running;
        a.target_time = target_time;
        a.share = share;
    }

    pub(crate) fn reset_run(&self, planned: Option<u64>, already: u64) {
        self.already.store(already, Ordering::Relaxed);
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        *self.planned.lock().unwrap_or_else(|p| p.into_inner()) = planned;
    }

    /// Forget a target that left the pool for good.
    pub(crate) fn forget(&self, addr: SocketAddr) {
        self.targets().remove(&addr);
    }

    pub(crate) fn set_state(&self, addr: SocketAddr, state: TargetState) {
        let mut targets = self.targets();
        let t = targets.entry(addr).or_insert_with(|| TargetStats {
            state,
            completed: 0,
            failed: 0,
            consecutive_failures: 0,
            busy: Duration::ZERO,
            last_error: None,
            health: None,
            receiving: false,
        });
        if state == TargetState::Running || t.state != state {
            t.receiving = false;
        }
        t.state = state;
    }

    pub(crate) fn completed(&self, addr: SocketAddr, took: Duration) {
        if let Some(t) = self.targets().get_mut(&addr) {
            t.completed += 1;
            t.busy += took;
            t.consecutive_failures = 0;
        }
    }

    /// The target's state, if it is known.
    pub(crate) fn state_of(&self, addr: SocketAddr) -> Option<TargetState> {
        self.targets().get(&addr).map(|t| t.state)
    }

    /// Records a health check: passed (`Ok`), or failed with the reason (the target shows
    /// [`TargetState::Unhealthy`]).
    pub(crate) fn health(&self, addr: SocketAddr, verdict: Result<(), &str>) {
        if verdict.is_err() {
            self.set_state(addr, TargetState::Unhealthy);
        }
        if let Some(t) = self.targets().get_mut(&addr) {
            match verdict {
                Ok(()) => t.health = Some("passed".into()),
                Err(reason) => {
                    t.health = Some(format!("failed: {reason}"));
                    t.last_error = Some(format!("health check failed: {reason}"));
                }
            }
        }
    }

    /// Records a session that could not be opened (not counted as a failed attempt).
    pub(crate) fn connect_failed(&self, addr: SocketAddr, error: &str) {
        if let Some(t) = self.targets().get_mut(&addr) {
            t.last_error = Some(error.to_owned());
        }
    }

    /// Records a failure; returns the number of failures in a row.
    pub(crate) fn failed(&self, addr: SocketAddr, error: &str) -> u32 {
        let mut targets = self.targets();
        let Some(t) = targets.get_mut(&addr) else {
            return 1;
        };
        t.failed += 1;
        t.consecutive_failures += 1;
        t.last_error = Some(error.to_owned());
        t.consecutive_failures
    }

    /// Attempts completed and failed on all targets so far.
    pub(crate) fn attempts(&self) -> (u64, u64) {
        self.targets().values().fold((0, 0), |(ok, failed), t| {
            (ok + t.completed, failed + t.failed)
        })
    }

    /// Records that the attempt running on `addr` received events of its task-set.
    pub(crate) fn saw_events(&self, addr: SocketAddr) {
        if let Some(t) = self.targets().get_mut(&addr) {
            t.receiving = true;
        }
    }

    /// Whether some target is usable: an open session whose last attempt did not fail, or
    /// one whose current attempt is receiving its task-set's events.
    pub(crate) fn has_healthy_target(&self, mut eligible: impl FnMut(SocketAddr) -> bool) -> bool {
        self.targets().iter().any(|(a, t)| {
            eligible(*a)
                && match t.state {
                    TargetState::Idle => t.consecutive_failures == 0,
                    TargetState::Running => t.consecutive_failures == 0 || t.receiving,
                    _ => false,
                }
        })
    }

    pub(crate) fn queue_wait(&self, waited: Duration) {
        self.queue_wait_ns
            .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        self.queue_waits.fetch_add(1, Ordering::Relaxed);
    }

    /// Copy the current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let elapsed = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
            .as_secs_f64();
        let done = self.done.load(Ordering::Relaxed);
        let bad = self.bad.load(Ordering::Relaxed);
        let waits = self.queue_waits.load(Ordering::Relaxed);
        let own: Vec<_> = self
            .targets()
            .iter()
            .map(|(a, s)| (*a, s.clone()))
            .collect();
        // In a pool: every target of the pool, in its pool state, with this experiment's
        // counts (zero where it ran nothing of it).
        let targets: Vec<(SocketAddr, TargetStats)> = match self.board.get() {
            None => own,
            Some(b) => {
                let mine: BTreeMap<_, _> = own.into_iter().collect();
                b.targets()
                    .iter()
                    .map(|(a, pool)| {
                        let mut t = match mine.get(a) {
                            Some(m) => m.clone(),
                            None => TargetStats {
                                completed: 0,
                                failed: 0,
                                consecutive_failures: 0,
                                busy: Duration::ZERO,
                                ..pool.clone()
                            },
                        };
                        t.state = pool.state;
                        t.health = pool.health.clone();
                        if t.last_error.is_none() {
                            t.last_error = pool.last_error.clone();
                        }
                        (*a, t)
                    })
                    .collect()
            }
        };
        let pool: Vec<(SocketAddr, TargetState)> =
            targets.iter().map(|(a, s)| (*a, s.state)).collect();
        let count = |f: &dyn Fn(TargetState) -> bool| pool.iter().filter(|(_, s)| f(*s)).count();
        let about = self.about.lock().unwrap_or_else(|p| p.into_inner()).clone();
        MetricsSnapshot {
            name: about.name,
            priority: about.priority,
            weight: about.weight,
            queued: about.queued,
            running: about.running,
            target_time_s: about.target_time.as_secs_f64(),
            share: about.share,
            planned: *self.planned.lock().unwrap_or_else(|p| p.into_inner()),
            already_done: self.already.load(Ordering::Relaxed),
            done,
            bad,
            requeued: self.requeued.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            stale_events: self.stale_events.load(Ordering::Relaxed),
            elapsed_s: elapsed,
            rate_per_s: if elapsed > 0.0 {
                (done + bad) as f64 / elapsed
            } else {
                0.0
            },
            mean_queue_wait_s: if waits > 0 {
                self.queue_wait_ns.load(Ordering::Relaxed) as f64 / waits as f64 / 1e9
            } else {
                0.0
            },
            targets_up: count(&|s| matches!(s, TargetState::Idle | TargetState::Running)),
            targets_busy: count(&|s| s == TargetState::Running),
            targets_backoff: count(&|s| {
                matches!(
                    s,
                    TargetState::Backoff | TargetState::Quarantined | TargetState::Unhealthy
                )
            }),
            targets,
        }
    }
}

impl MetricsSnapshot {
    /// A human-readable report: totals and one line per target.
    pub fn report(&self) -> String {
        format!(
            "variants: {} done, {} bad, {} requeued attempts; {} events; {:.1} s, {:.1} variants/s; mean requeue wait {:.3} s\n{}",
            self.done, self.bad, self.requeued, self.events, self.elapsed_s, self.rate_per_s, self.mean_queue_wait_s,
            self.targets_report()
        )
    }

    /// One line per target: completed, failed, mean time per task-set, last error.
    pub fn targets_report(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (addr, t) in &self.targets {
            let mean = t
                .mean_taskset_time()
                .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "  {addr}: {} completed, {} failed, mean {mean} per task-set{}",
                t.completed,
                t.failed,
                t.last_error
                    .as_deref()
                    .map(|e| format!(", last error: {e}"))
                    .unwrap_or_default()
            );
        }
        out
    }
}
