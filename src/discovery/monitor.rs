//! Continuous mode: keeps a pool under watch during a long run and reports hosts coming and
//! going.
//!
//! The [`Monitor`] runs two kinds of probing:
//! - **Rounds** over every address of the pool it has never seen up, one sweep after another,
//!   spaced by [`MonitorConfig::round_backoff`] (capped exponential: a /16 of mostly empty
//!   addresses is not swept in a busy loop).
//! - **Checks** of single hosts it knows: hosts in backoff after a failed session or after going
//!   silent (spaced by [`MonitorConfig::failed_backoff`]), and watched hosts (up, not leased),
//!   re-probed every [`MonitorConfig::recheck_interval`].
//!
//! Host life cycle (with the default `lease_on_up = true`, the distributor's mode):
//! ```text
//!  never seen ──round finds it──▶ Up(addr) emitted ──▶ Leased (never probed by the monitor)
//!                                     ▲                   │ MonitorHandle::report_failed
//!                                     │ answers           ▼
//!                                     └──────────── Backoff{attempt} ◀─┐
//!                                                          │ silent   ──┘ attempt+1
//! ```
//! With `lease_on_up = false` (watching only) an up host is `Watched` instead: re-checked, and
//! `Down(addr)` is emitted when it stops answering; it then goes to backoff and is announced
//! `Up` again when it answers. [`MonitorHandle::release`] turns a leased host into a watched one,
//! [`MonitorHandle::lease`] the other way round.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::icmp_sweep::icmp_sweep;
use super::pool::HostPool;
use super::probe::{ProbeResult, Prober};
use super::sweep::{sweep_with, SweepConfig};

/// A change in the reachability of a host, as reported by a [`Monitor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostChange {
    /// The host became reachable. Emitted once per transition; with `lease_on_up` the host is
    /// now leased to the receiver and no longer probed by the monitor.
    Up(SocketAddr),
    /// A watched (up, not leased) host stopped answering; it is now in backoff.
    Down(SocketAddr),
}

impl HostChange {
    /// The host the change is about.
    pub fn addr(&self) -> SocketAddr {
        match self {
            HostChange::Up(a) | HostChange::Down(a) => *a,
        }
    }
}

/// What the monitor currently thinks of a host it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// Handed to the receiver of [`HostChange::Up`]; the monitor does not probe it.
    Leased,
    /// Up and not leased; re-checked every [`MonitorConfig::recheck_interval`].
    Watched,
    /// Silent (session failed or host stopped answering); re-probed with backoff.
    Backoff {
        /// Number of checks that found the host silent since it entered backoff.
        attempt: u32,
    },
}

/// Settings of a [`Monitor`].
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Window, pacing and retries of rounds (and retries of single checks).
    pub sweep: SweepConfig,
    /// Spacing of rounds over never-seen addresses (attempt = rounds done so far).
    pub round_backoff: Backoff,
    /// Spacing of checks of a silent host (attempt = failed checks since it went silent).
    pub failed_backoff: Backoff,
    /// Re-check interval of watched hosts.
    pub recheck_interval: Duration,
    /// Lease a host to the receiver when announcing it up (default true).
    pub lease_on_up: bool,
    /// Capacity of the change channel; the monitor waits when the receiver falls behind.
    pub channel_capacity: usize,
    /// Most single-host checks in flight at once.
    pub check_window: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            sweep: SweepConfig::default(),
            round_backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(120))
                .with_jitter(0.1),
            failed_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
                .with_jitter(0.2),
            recheck_interval: Duration::from_secs(10),
            lease_on_up: true,
            channel_capacity: 1024,
            check_window: 64,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    state: HostState,
    next_check: Instant,
    checking: bool,
    /// Bumped on every change made through the handle, so a check that was in flight during
    /// the change cannot overwrite it.
    generation: u64,
}

#[derive(Debug, Default)]
struct Shared {
    hosts: HashMap<SocketAddr, Entry>,
    generation: u64,
}

#[derive(Debug)]
struct Inner {
    shared: Mutex<Shared>,
    /// (rounds completed, monitor stopped), for [`MonitorHandle::wait_for_rounds`].
    progress: watch::Sender<(u64, bool)>,
    notify: Notify,
    cfg: MonitorConfig,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Every critical section leaves the map consistent, so a poisoned lock is usable.
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Watches a pool continuously and streams [`HostChange`]s (see the module docs).
#[derive(Debug)]
pub struct Monitor;

/// Control of a running [`Monitor`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct MonitorHandle {
    inner: Arc<Inner>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Monitor {
    /// Starts watching `pool` with `prober`; returns the handle and the stream of changes.
    /// The monitor stops when `cancel` fires or the receiver is dropped. Must be called inside
    /// a Tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use taskdist::discovery::{HostChange, HostPool, Monitor, MonitorConfig, TcpProber};
    /// use tokio_util::sync::CancellationToken;
    ///
    /// let pool = HostPool::parse(["127.0.0.0/29"], 3001)?;
    /// let cancel = CancellationToken::new();
    /// let (handle, mut changes) =
    ///     Monitor::spawn(pool, Arc::new(TcpProber::default()), MonitorConfig::default(), cancel.clone());
    /// while let Some(HostChange::Up(addr)) = changes.recv().await {
    ///     // ... run a session on addr; if it fails:
    ///     handle.report_failed(addr);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn spawn(
        pool: HostPool,
        prober: Arc<dyn Prober>,
        cfg: MonitorConfig,
        cancel: CancellationToken,
    ) -> (MonitorHandle, mpsc::Receiver<HostChange>) {
        let (tx, rx) = mpsc::channel(cfg.channel_capacity.max(1));
        let inner = Arc::new(Inner {
            shared: Mutex::new(Shared::default()),
            progress: watch::Sender::new((0, false)),
            notify: Notify::new(),
            cfg,
        });
        let task = tokio::spawn(run(Arc::clone(&inner), pool, prober, tx, cancel));
        (
            MonitorHandle {
                inner,
                task: Arc::new(task),
            },
            rx,
        )
    }
}

impl MonitorHandle {
    /// The session on `addr` failed: the host leaves the lease, goes to backoff, is re-probed
    /// with [`MonitorConfig::failed_backoff`], and is announced `Up` again when it answers.
    /// Works for any address, also one the monitor has not announced.
    pub fn report_failed(&self, addr: SocketAddr) {
        let delay = self
            .inner
            .cfg
            .failed_backoff
            .delay_with_jitter(0, &mut rand::thread_rng());
        let mut shared = self.inner.lock();
        shared.generation += 1;
        let generation = shared.generation;
        shared.hosts.insert(
            addr,
            Entry {
                state: HostState::Backoff { attempt: 0 },
                next_check: Instant::now() + delay,
                checking: false,
                generation,
            },
        );
        drop(shared);
        tracing::debug!(%addr, ?delay, "session failed; host in backoff");
        self.inner.notify.notify_one();
    }

    /// Gives a healthy leased host back without a failure: the monitor watches it from now on
    /// and emits `Down` if it stops answering. Returns false if `addr` was not leased.
    pub fn release(&self, addr: SocketAddr) -> bool {
        let recheck = self.inner.cfg.recheck_interval;
        let mut shared = self.inner.lock();
        shared.generation += 1;
        let generation = shared.generation;
        let released = match shared.hosts.get_mut(&addr) {
            Some(e) if e.state == HostState::Leased => {
                e.state = HostState::Watched;
                e.next_check = Instant::now() + recheck;
                e.generation = generation;
                e.checking = false;
                true
            }
            _ => false,
        };
        drop(shared);
        self.inner.notify.notify_one();
        released
    }

    /// Leases a watched host (the monitor stops probing it). Returns false if `addr` is not
    /// currently watched (unknown, leased already, or in backoff).
    pub fn lease(&self, addr: SocketAddr) -> bool {
        let mut shared = self.inner.lock();
        shared.generation += 1;
        let generation = shared.generation;
        match shared.hosts.get_mut(&addr) {
            Some(e) if e.state == HostState::Watched => {
                e.state = HostState::Leased;
                e.generation = generation;
                // A check in flight now carries an old generation and will be ignored.
                e.checking = false;
                true
            }
            _ => false,
        }
    }

    /// The monitor's view of `addr`; `None` for a host never seen up nor reported.
    pub fn state(&self, addr: SocketAddr) -> Option<HostState> {
        self.inner.lock().hosts.get(&addr).map(|e| e.state)
    }

    /// Every known host with its state, ascending.
    pub fn hosts(&self) -> Vec<(SocketAddr, HostState)> {
        let mut v: Vec<_> = self
            .inner
            .lock()
            .hosts
            .iter()
            .map(|(a, e)| (*a, e.state))
            .collect();
        v.sort_unstable_by_key(|(a, _)| *a);
        v
    }

    /// Number of rounds over never-seen addresses completed so far.
    pub fn rounds_completed(&self) -> u64 {
        self.inner.progress.borrow().0
    }

    /// Waits until at least `n` rounds over the pool have completed (`n = 1`: the initial
    /// sweep is done, every host that answered then has been announced), or until the monitor
    /// stops. Returns the number of rounds completed.
    pub async fn wait_for_rounds(&self, n: u64) -> u64 {
        let mut rx = self.inner.progress.subscribe();
        // The sender lives in `inner`, which this handle keeps alive: the wait cannot fail.
        let result = rx
            .wait_for(|(rounds, stopped)| *rounds >= n || *stopped)
            .await;
        result.map_or(0, |progress| progress.0)
    }

    /// True once the monitor task has ended (cancelled, or the receiver was dropped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

async fn probe_with_retries(prober: &dyn Prober, addr: SocketAddr, retries: u32) -> ProbeResult {
    let mut result = prober.probe(addr).await;
    for _ in 0..retries {
        if !result.is_retryable() {
            break;
        }
        result = prober.probe(addr).await;
    }
    result
}

enum RoundMsg {
    Up(SocketAddr),
    Done,
}

/// Sends `change`, waiting for room; false when the monitor should stop.
async fn emit(
    tx: &mpsc::Sender<HostChange>,
    change: HostChange,
    cancel: &CancellationToken,
) -> bool {
    tracing::debug!(?change, "host change");
    tokio::select! {
        _ = cancel.cancelled() => false,
        sent = tx.send(change) => sent.is_ok(),
    }
}

/// Most messages of a round taken in one go.
const ROUND_BATCH: usize = 4096;

async fn run(
    inner: Arc<Inner>,
    pool: HostPool,
    prober: Arc<dyn Prober>,
    tx: mpsc::Sender<HostChange>,
    cancel: CancellationToken,
) {
    let cfg = inner.cfg.clone();
    let pool = Arc::new(pool);
    let mut rng = StdRng::from_entropy();
    let mut checks: JoinSet<(SocketAddr, u64, ProbeResult)> = JoinSet::new();
    let (round_tx, mut round_rx) = mpsc::unbounded_channel::<RoundMsg>();
    let mut round_running = false;
    let mut rounds_started: u32 = 0;
    let mut next_round = Instant::now();
    let round_cancel = cancel.child_token();

    'outer: loop {
        let now = Instant::now();
        if !round_running && next_round <= now {
            round_running = true;
            rounds_started = rounds_started.saturating_add(1);
            let (pool, prober, inner2, tx2, c2) = (
                Arc::clone(&pool),
                Arc::clone(&prober),
                Arc::clone(&inner),
                round_tx.clone(),
                round_cancel.clone(),
            );
            let sweep_cfg = cfg.sweep.clone();
            tokio::spawn(async move {
                // ICMP rounds go through the batch engine (replies read while sending,
                // adaptive timeouts) on a blocking thread; other probes one at a time.
                let batched = match prober.batch_icmp() {
                    Some(mut ecfg) => {
                        ecfg.retries = sweep_cfg.retries;
                        ecfg.rate_per_sec = sweep_cfg.rate_per_sec;
                        ecfg.window = sweep_cfg.window;
                        let (pool, inner3, tx3, c3, p3) = (
                            Arc::clone(&pool),
                            Arc::clone(&inner2),
                            tx2.clone(),
                            c2.clone(),
                            Arc::clone(&prober),
                        );
                        let swept = tokio::task::spawn_blocking(move || {
                            let unseen =
                                pool.iter().filter(|a| !inner3.lock().hosts.contains_key(a));
                            icmp_sweep(unseen, &ecfg, &c3, |addr, r| {
                                if let ProbeResult::Up { rtt } = r {
                                    // The engine reports zero when it cannot tell which
                                    // attempt was answered; the checks' timeouts start from
                                    // the measured round trips.
                                    if !rtt.is_zero() {
                                        p3.observe(addr, *rtt);
                                    }
                                    let _ = tx3.send(RoundMsg::Up(addr));
                                }
                            })
                        })
                        .await;
                        match swept {
                            Ok(Ok(report)) => Some(report),
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "ICMP sweep engine unavailable; probing one address at a time");
                                None
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "ICMP sweep failed; probing one address at a time");
                                None
                            }
                        }
                    }
                    None => None,
                };
                let report = match batched {
                    Some(r) => r,
                    None => {
                        let unseen = pool.iter().filter(|a| !inner2.lock().hosts.contains_key(a));
                        sweep_with(unseen, prober, &sweep_cfg, &c2, |addr, r| {
                            if r.is_up() {
                                let _ = tx2.send(RoundMsg::Up(addr));
                            }
                        })
                        .await
                    }
                };
                tracing::debug!(?report.elapsed, up = report.up.len(), "monitor round done");
                let _ = tx2.send(RoundMsg::Done);
            });
        }

        // Start due checks, and find the next time something is due.
        let mut wake = if round_running {
            None
        } else {
            Some(next_round)
        };
        {
            let mut shared = inner.lock();
            for (addr, e) in shared.hosts.iter_mut() {
                if e.checking || e.state == HostState::Leased {
                    continue;
                }
                if e.next_check <= now && checks.len() < cfg.check_window.max(1) {
                    e.checking = true;
                    let (addr, generation, p) = (*addr, e.generation, Arc::clone(&prober));
                    let retries = cfg.sweep.retries;
                    checks.spawn(async move {
                        (
                            addr,
                            generation,
                            probe_with_retries(p.as_ref(), addr, retries).await,
                        )
                    });
                } else if e.next_check > now {
                    wake = Some(wake.map_or(e.next_check, |w| w.min(e.next_check)));
                }
            }
        }
        let sleep_until = wake.unwrap_or_else(|| now + Duration::from_secs(3600));

        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            msg = round_rx.recv() => {
                // Take what the round has queued in one go (bounded): the scan for due checks
                // above then runs once per batch, not once per host that came up.
                let mut next = msg;
                for _ in 0..ROUND_BATCH {
                    match next {
                        Some(RoundMsg::Up(addr)) => {
                            let state = if cfg.lease_on_up { HostState::Leased } else { HostState::Watched };
                            let fresh = {
                                let mut shared = inner.lock();
                                if shared.hosts.contains_key(&addr) {
                                    false
                                } else {
                                    let generation = shared.generation;
                                    shared.hosts.insert(addr, Entry {
                                        state,
                                        next_check: Instant::now() + cfg.recheck_interval,
                                        checking: false,
                                        generation,
                                    });
                                    true
                                }
                            };
                            if fresh && !emit(&tx, HostChange::Up(addr), &cancel).await {
                                break 'outer;
                            }
                        }
                        Some(RoundMsg::Done) => {
                            round_running = false;
                            inner.progress.send_modify(|(rounds, _)| *rounds += 1);
                            let delay = cfg
                                .round_backoff
                                .delay_with_jitter(rounds_started.saturating_sub(1), &mut rng);
                            next_round = Instant::now() + delay;
                        }
                        // round_tx lives in this function, so the channel cannot close.
                        None => break 'outer,
                    }
                    match round_rx.try_recv() {
                        Ok(m) => next = Some(m),
                        Err(_) => break,
                    }
                }
            }
            done = checks.join_next(), if !checks.is_empty() => {
                let Some(Ok((addr, generation, result))) = done else {
                    if let Some(Err(e)) = done {
                        tracing::warn!("host check task failed: {e}");
                    }
                    continue;
                };
                let change = {
                    let mut shared = inner.lock();
                    let Some(e) = shared.hosts.get_mut(&addr) else { continue };
                    if e.generation != generation {
                        // Changed through the handle while the check ran: the result is stale
                        // (the handle already cleared `checking` for the new state).
                        continue;
                    }
                    e.checking = false;
                    let now = Instant::now();
                    match (e.state, result.is_up()) {
                        (HostState::Backoff { .. }, true) => {
                            e.state = if cfg.lease_on_up { HostState::Leased } else { HostState::Watched };
                            e.next_check = now + cfg.recheck_interval;
                            Some(HostChange::Up(addr))
                        }
                        (HostState::Backoff { attempt }, false) => {
                            let attempt = attempt.saturating_add(1);
                            e.state = HostState::Backoff { attempt };
                            e.next_check = now + cfg.failed_backoff.delay_with_jitter(attempt, &mut rng);
                            None
                        }
                        (HostState::Watched, true) => {
                            e.next_check = now + cfg.recheck_interval;
                            None
                        }
                        (HostState::Watched, false) => {
                            e.state = HostState::Backoff { attempt: 0 };
                            e.next_check = now + cfg.failed_backoff.delay_with_jitter(0, &mut rng);
                            Some(HostChange::Down(addr))
                        }
                        (HostState::Leased, _) => None,
                    }
                };
                if let Some(change) = change {
                    if !emit(&tx, change, &cancel).await {
                        break 'outer;
                    }
                }
            }
            _ = inner.notify.notified() => {}
            _ = tokio::time::sleep_until(sleep_until) => {}
        }
    }
    round_cancel.cancel();
    checks.abort_all();
    inner.progress.send_modify(|(_, stopped)| *stopped = true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::ScriptedProber;

    fn quick_cfg() -> MonitorConfig {
        MonitorConfig {
            sweep: SweepConfig {
                window: Some(64),
                rate_per_sec: None,
                retries: 1,
            },
            round_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(8)),
            failed_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(16)),
            recheck_interval: Duration::from_secs(2),
            lease_on_up: true,
            channel_capacity: 16,
            check_window: 8,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn never_seen_hosts_are_swept_with_capped_backoff() {
        let pool = HostPool::parse(["10.9.0.1"], 1).expect("valid");
        let a = pool.iter().next().expect("addr");
        let prober = Arc::new(ScriptedProber::new());
        let cancel = CancellationToken::new();
        let (handle, mut rx) = Monitor::spawn(pool, prober.clone(), quick_cfg(), cancel.clone());
        tokio::time::sleep(Duration::from_secs(100)).await;
        // Rounds start 1, 2, 4, 8, 8, ... s apart: about 14 rounds in 100 s, each probing the
        // address twice (one retry). A busy loop would make thousands.
        let rounds = handle.rounds_completed();
        assert!((10..=20).contains(&rounds), "{rounds} rounds");
        let probes = prober.probes_of(a);
        assert!(
            probes >= 2 * rounds && probes <= 2 * rounds + 2,
            "{probes} probes"
        );
        assert!(rx.try_recv().is_err(), "nothing came up");
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn leased_hosts_are_left_alone_until_reported_failed() {
        let pool = HostPool::parse(["10.9.0.0/29"], 1).expect("valid");
        let a: SocketAddr = "10.9.0.3:1".parse().expect("addr");
        let prober = Arc::new(ScriptedProber::with_up([a]));
        let cancel = CancellationToken::new();
        let (handle, mut rx) = Monitor::spawn(pool, prober.clone(), quick_cfg(), cancel.clone());
        assert_eq!(handle.wait_for_rounds(1).await, 1);
        assert_eq!(rx.recv().await, Some(HostChange::Up(a)));
        assert_eq!(handle.state(a), Some(HostState::Leased));
        let probes = prober.probes_of(a);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(prober.probes_of(a), probes, "a leased host is not probed");

        // The session fails and the host is silent: backoff, growing attempts, no Up.
        prober.set_down(a);
        handle.report_failed(a);
        assert_eq!(handle.state(a), Some(HostState::Backoff { attempt: 0 }));
        tokio::time::sleep(Duration::from_secs(40)).await;
        let Some(HostState::Backoff { attempt }) = handle.state(a) else {
            panic!("expected backoff, got {:?}", handle.state(a));
        };
        // Checks at 1, +2, +4, +8, +16 s: attempt 4 or 5 after 40 s, never a busy loop.
        assert!((3..=5).contains(&attempt), "attempt {attempt}");
        assert!(prober.probes_of(a) - probes <= 2 * 6);

        // It comes back: announced again and leased again.
        prober.set_up(a);
        assert_eq!(rx.recv().await, Some(HostChange::Up(a)));
        assert_eq!(handle.state(a), Some(HostState::Leased));
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn watched_hosts_go_down_and_up() {
        let pool = HostPool::parse(["10.9.0.0/30"], 1).expect("valid");
        let a: SocketAddr = "10.9.0.1:1".parse().expect("addr");
        let prober = Arc::new(ScriptedProber::with_up([a]));
        let cancel = CancellationToken::new();
        let cfg = MonitorConfig {
            lease_on_up: false,
            ..quick_cfg()
        };
        let (handle, mut rx) = Monitor::spawn(pool, prober.clone(), cfg, cancel.clone());
        assert_eq!(rx.recv().await.map(|c| c.addr()), Some(a));
        assert_eq!(handle.state(a), Some(HostState::Watched));
        prober.set_down(a);
        assert_eq!(rx.recv().await, Some(HostChange::Down(a)));
        assert!(matches!(handle.state(a), Some(HostState::Backoff { .. })));
        prober.set_up(a);
        assert_eq!(rx.recv().await, Some(HostChange::Up(a)));
        assert!(handle.lease(a));
        assert!(!handle.lease(a));
        assert!(handle.release(a));
        assert_eq!(handle.state(a), Some(HostState::Watched));
        cancel.cancel();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(handle.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_in_flight_during_lease_is_ignored() {
        let pool = HostPool::parse(["10.9.0.1"], 1).expect("valid");
        let a = pool.iter().next().expect("addr");
        let prober = Arc::new(ScriptedProber::with_up([a]));
        let cancel = CancellationToken::new();
        let cfg = MonitorConfig {
            lease_on_up: false,
            ..quick_cfg()
        };
        let (handle, mut rx) = Monitor::spawn(pool, prober.clone(), cfg, cancel.clone());
        assert_eq!(rx.recv().await, Some(HostChange::Up(a)));
        // The host falls silent; wait until a re-check is in flight (it takes 100 ms to time
        // out), then lease the host.
        prober.set_down(a);
        let before = prober.probes_of(a);
        while prober.probes_of(a) == before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(handle.lease(a));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            handle.state(a),
            Some(HostState::Leased),
            "stale check ignored"
        );
        assert!(rx.try_recv().is_err(), "no Down for a leased host");
        let probes = prober.probes_of(a);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(prober.probes_of(a), probes, "a leased host is not probed");
        // Released, it is checked again and reported down.
        assert!(handle.release(a));
        assert_eq!(rx.recv().await, Some(HostChange::Down(a)));
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_receiver_stops_the_monitor() {
        let pool = HostPool::parse(["10.9.0.1"], 1).expect("valid");
        let a = pool.iter().next().expect("addr");
        let prober = Arc::new(ScriptedProber::with_up([a]));
        let (handle, rx) = Monitor::spawn(pool, prober, quick_cfg(), CancellationToken::new());
        drop(rx);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(handle.is_finished());
        // Waiting for more rounds than will ever come ends because the monitor stopped.
        assert!(handle.wait_for_rounds(1000).await < 1000);
    }
}
