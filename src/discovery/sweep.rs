//! One pass over a pool: a paced, sliding window of probes in flight over the lazy address
//! iterator, with retries of unanswered addresses.
//!
//! The probes in flight are futures polled by the sweep's own task (a `FuturesUnordered`), not
//! spawned tasks: per probe that saves a task allocation and a cross-thread wake-up, which
//! measurably cut user CPU time of ICMP sweeps (0.16 s to 0.11 s for 65,534 loopback echoes).
//! Each probe runs outside Tokio's cooperative budget (see the comment at the push).
//!
//! For the fastest one-shot ICMP sweeps, run the sweep on a current-thread runtime (as
//! `taskdist discover` does): surge-ping's reply task then drains replies in batches between
//! bursts of sends instead of being woken per reply on another worker, which halves the
//! system time (fewer `epoll_wait` and futex calls). On a multi-thread runtime (the
//! distributor's) sweeps work the same, somewhat slower.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pool::HostPool;
use super::probe::{ProbeResult, Prober};

/// Settings of a sweep.
///
/// ```
/// use taskdist::discovery::SweepConfig;
/// let cfg = SweepConfig { window: Some(1024), rate_per_sec: Some(20_000), ..Default::default() };
/// assert_eq!(cfg.retries, 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepConfig {
    /// Most probes in flight at once; `None` uses the prober's
    /// [`Prober::suggested_window`]. At least 1 is used.
    pub window: Option<usize>,
    /// Most probes started per second (smoothly paced, bursts of at most 5 ms worth);
    /// `None` does not pace. Pacing keeps bursts of replies below what receive buffers and
    /// networks absorb.
    pub rate_per_sec: Option<u32>,
    /// Extra attempts for an address whose probe timed out (only [`ProbeResult::Timeout`] is
    /// retried; a refusal is an answer).
    pub retries: u32,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            window: None,
            rate_per_sec: None,
            retries: 2,
        }
    }
}

/// What a sweep found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Addresses that answered, ascending.
    pub up: Vec<SocketAddr>,
    /// Distinct addresses whose probing finished (answered, or out of attempts).
    pub probed: u64,
    /// Probes sent, retries included.
    pub probes_sent: u64,
    /// Addresses that never answered within all attempts.
    pub timed_out: u64,
    /// Addresses that gave another negative answer (refused, unreachable, rejected, error).
    pub negative: u64,
    /// The first local error seen, if any (e.g. a socket could not be opened).
    pub first_error: Option<String>,
    /// Wall-clock time of the sweep.
    pub elapsed: Duration,
    /// True when the sweep was cancelled before it finished.
    pub cancelled: bool,
}

impl SweepReport {
    /// Count the final result of one address.
    pub(crate) fn tally(&mut self, addr: SocketAddr, result: &ProbeResult) {
        self.probed += 1;
        match result {
            ProbeResult::Up { .. } => self.up.push(addr),
            ProbeResult::Timeout => self.timed_out += 1,
            ProbeResult::Error(e) => {
                self.negative += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e.clone());
                }
            }
            _ => self.negative += 1,
        }
    }
}

/// Spaces probe starts `1/rate` apart, allowing a small burst after idle time.
#[derive(Debug)]
struct Pacer {
    interval: Option<Duration>,
    burst: Duration,
    next: Instant,
}

impl Pacer {
    fn new(rate_per_sec: Option<u32>) -> Self {
        let interval = rate_per_sec
            .filter(|r| *r > 0)
            .map(|r| Duration::from_secs(1) / r);
        Pacer {
            interval,
            burst: Duration::from_millis(5),
            next: Instant::now(),
        }
    }

    /// Waits until the next probe may start (cancel safe: does not consume the slot).
    async fn ready(&self) {
        if self.interval.is_some() {
            tokio::time::sleep_until(self.next).await;
        }
    }

    fn is_ready(&self, now: Instant) -> bool {
        self.interval.is_none() || self.next <= now
    }

    /// Consumes one slot.
    fn consume(&mut self, now: Instant) {
        if let Some(interval) = self.interval {
            // Credit from idle time is capped at one burst.
            let floor = now.checked_sub(self.burst).unwrap_or(now);
            if self.next < floor {
                self.next = floor;
            }
            self.next += interval;
        }
    }
}

/// Sweeps `pool` once and collects the addresses that answered.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use taskdist::discovery::{sweep, HostPool, IcmpConfig, IcmpProber, SweepConfig};
///
/// let pool = HostPool::parse(["127.0.0.0/24"], 3001)?;
/// let prober = Arc::new(IcmpProber::open(IcmpConfig::default())?);
/// let report = sweep(&pool, prober, &SweepConfig::default()).await;
/// println!("{} of {} up", report.up.len(), report.probed);
/// # Ok(()) }
/// ```
pub async fn sweep(pool: &HostPool, prober: Arc<dyn Prober>, cfg: &SweepConfig) -> SweepReport {
    sweep_with(
        pool.iter(),
        prober,
        cfg,
        &CancellationToken::new(),
        |_, _| {},
    )
    .await
}

/// The general sweep: probes every address `addrs` yields, calls `on_result` with the final
/// result of each address as soon as it is known (in completion order), and stops early when
/// `cancel` fires (probes in flight are then abandoned).
pub async fn sweep_with<I, F>(
    addrs: I,
    prober: Arc<dyn Prober>,
    cfg: &SweepConfig,
    cancel: &CancellationToken,
    mut on_result: F,
) -> SweepReport
where
    I: IntoIterator<Item = SocketAddr>,
    F: FnMut(SocketAddr, &ProbeResult),
{
    let start = Instant::now();
    let window = cfg
        .window
        .unwrap_or_else(|| prober.suggested_window())
        .max(1);
    let mut addrs = addrs.into_iter();
    let mut retry: VecDeque<(SocketAddr, u32)> = VecDeque::new();
    let mut pending: Option<(SocketAddr, u32)> = None;
    let mut exhausted = false;
    let mut pacer = Pacer::new(cfg.rate_per_sec);
    let mut in_flight: FuturesUnordered<BoxFuture<'static, (SocketAddr, u32, ProbeResult)>> =
        FuturesUnordered::new();
    let mut report = SweepReport::default();

    loop {
        if pending.is_none() {
            pending = retry.pop_front().or_else(|| {
                if exhausted {
                    return None;
                }
                let next = addrs.next().map(|a| (a, 0));
                exhausted = next.is_none();
                next
            });
        }
        if pending.is_none() && in_flight.is_empty() {
            break;
        }
        let can_start = pending.is_some() && in_flight.len() < window;
        // Start as many probes as the window and the pacer allow without waiting.
        if can_start && pacer.is_ready(Instant::now()) {
            if let Some((addr, attempt)) = pending.take() {
                let p = Arc::clone(&prober);
                // Unconstrained: all probes share this task's cooperative budget, which would
                // run out after 128 sends and make every further probe wake itself and be
                // polled again, quadratic in the window. A probe sends once and waits once,
                // so it cannot hog the thread.
                in_flight.push(Box::pin(tokio::task::unconstrained(async move {
                    (addr, attempt, p.probe(addr).await)
                })));
                pacer.consume(Instant::now());
                report.probes_sent += 1;
                continue;
            }
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                report.cancelled = true;
                break;
            }
            done = in_flight.next(), if !in_flight.is_empty() => {
                let Some((addr, attempt, result)) = done else { continue };
                if result.is_retryable() && attempt < cfg.retries {
                    retry.push_back((addr, attempt + 1));
                    continue;
                }
                report.tally(addr, &result);
                on_result(addr, &result);
            }
            _ = pacer.ready(), if can_start => {}
        }
    }
    // Dropping the futures abandons the probes still in flight.
    drop(in_flight);
    report.up.sort_unstable();
    report.elapsed = start.elapsed();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::ScriptedProber;

    fn pool(items: &[&str]) -> HostPool {
        HostPool::parse(items, 3001).expect("valid pool")
    }

    #[tokio::test(start_paused = true)]
    async fn finds_exactly_the_scripted_hosts() {
        let pool = pool(&["10.9.0.0/24"]);
        let up: Vec<SocketAddr> = pool
            .iter()
            .filter(|a| a.ip().to_string().ends_with('7'))
            .collect();
        let prober = Arc::new(ScriptedProber::with_up(up.clone()));
        let cfg = SweepConfig {
            window: Some(16),
            rate_per_sec: Some(10_000),
            retries: 1,
        };
        let report = sweep(&pool, prober.clone(), &cfg).await;
        assert_eq!(report.up, up);
        assert_eq!(report.probed, 254);
        assert_eq!(report.timed_out, 254 - up.len() as u64);
        // Every silent address got exactly one retry.
        assert_eq!(report.probes_sent, 254 + (254 - up.len() as u64));
        assert_eq!(prober.total_probes(), report.probes_sent);
        assert!(!report.cancelled);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_catch_a_host_that_answers_late() {
        let pool = pool(&["10.9.0.1"]);
        let a = pool.iter().next().expect("one address");
        let prober = Arc::new(ScriptedProber::new());
        let p2 = prober.clone();
        // The host comes up at 50 ms: the first probe has found it silent by then (its
        // answer would have come at 1 ms) and times out at 100 ms; the retry finds it.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            p2.set_up(a);
        });
        let report = sweep(&pool, prober.clone(), &SweepConfig::default()).await;
        assert_eq!(report.up, vec![a]);
        assert_eq!(prober.probes_of(a), 2);
        assert_eq!(report.probes_sent, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_spaces_probe_starts() {
        let pool = pool(&["10.9.0.0/24"]);
        let prober = Arc::new(ScriptedProber::new());
        let cfg = SweepConfig {
            window: Some(1000),
            rate_per_sec: Some(100),
            retries: 0,
        };
        let report = sweep(&pool, prober, &cfg).await;
        // 254 starts at 100/s take about 2.5 s of (virtual) time.
        assert!(
            report.elapsed >= Duration::from_millis(2400),
            "{:?}",
            report.elapsed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn window_bounds_probes_in_flight() {
        let pool = pool(&["10.9.0.0/24"]);
        let prober = Arc::new(ScriptedProber::new());
        let cfg = SweepConfig {
            window: Some(10),
            rate_per_sec: None,
            retries: 0,
        };
        let report = sweep(&pool, prober, &cfg).await;
        // Silent hosts take 100 ms each; 254 with 10 in flight need 26 rounds.
        assert!(
            report.elapsed >= Duration::from_millis(2500),
            "{:?}",
            report.elapsed
        );
        assert_eq!(report.timed_out, 254);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_stops_the_sweep() {
        let pool = HostPool::parse(["10.0.0.0/8"], 1).expect("valid");
        let prober = Arc::new(ScriptedProber::new());
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            c2.cancel();
        });
        let report = sweep_with(
            pool.iter(),
            prober,
            &SweepConfig::default(),
            &cancel,
            |_, _| {},
        )
        .await;
        assert!(report.cancelled);
        assert!(report.probed < 1 << 20);
    }
}
