//! The [`Prober`] trait and the probes that need no raw sockets: TCP connect, the protocol's
//! AVAILABLE handshake, and a scripted prober for tests. ICMP lives in [`super::icmp`].

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::icmp_sweep::RttEstimator;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::protocol::{probe_available, Dialect, SessionConfig, TargetError};

/// The AVAILABLE command word (v3 targets echo it back).
pub const AVAILABLE: u32 = 0x000A_AAAA;

/// Largest pushed frame the AVAILABLE probe skips while waiting for the echo (1 MiB). A longer
/// length word means the peer is not a target (or is confused); the probe then reports
/// [`ProbeResult::Rejected`].
pub const MAX_SKIPPED_FRAME_BYTES: u32 = 1 << 20;

/// The outcome of probing one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// The host answered as a reachable target.
    Up {
        /// Round-trip time of the probe.
        rtt: Duration,
    },
    /// No answer within the probe's timeout. The only outcome a sweep retries.
    Timeout,
    /// The host refused the connection (TCP reset): it is there, but no target listens.
    Refused,
    /// The network reported the host or network unreachable.
    Unreachable,
    /// The host answered, but not as a target (e.g. a wrong AVAILABLE reply).
    Rejected(String),
    /// A local error prevented the probe (socket could not be opened, ...).
    Error(String),
}

impl ProbeResult {
    /// True for [`ProbeResult::Up`].
    pub fn is_up(&self) -> bool {
        matches!(self, ProbeResult::Up { .. })
    }

    /// True when another attempt could change the answer ([`ProbeResult::Timeout`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProbeResult::Timeout)
    }
}

/// Checks whether an address is a reachable target.
///
/// Implementations must be cheap to call concurrently from many tasks: a sweep keeps
/// thousands of probes in flight through one shared `Arc<dyn Prober>`. Every call must end
/// by itself (each implementation has a timeout).
#[async_trait]
pub trait Prober: Send + Sync + 'static {
    /// Probes one address. Ports are ignored by probes that do not use them (ICMP).
    async fn probe(&self, addr: SocketAddr) -> ProbeResult;

    /// A short name for logs and summaries (`icmp`, `tcp`, `available`, `scripted`).
    fn name(&self) -> &'static str;

    /// How many probes of this kind may sensibly be in flight at once; sweeps use it when
    /// their configuration leaves the window open. Connection-based probes hold one file
    /// descriptor per probe, so they default lower than ICMP.
    fn suggested_window(&self) -> usize {
        256
    }

    /// For an ICMP echo prober: the settings with which whole sweeps (a [`Monitor`]'s rounds
    /// over unseen addresses) go through the batch engine [`icmp_sweep`] instead of one probe
    /// at a time. `None` (the default) probes one address at a time.
    ///
    /// [`Monitor`]: super::Monitor
    /// [`icmp_sweep`]: super::icmp_sweep
    fn batch_icmp(&self) -> Option<super::IcmpSweepConfig> {
        None
    }

    /// Tells the prober that `addr` answered another probe (e.g. a batch sweep) after `rtt`,
    /// so that its own timeouts can start from that round trip. The default ignores it.
    fn observe(&self, addr: SocketAddr, rtt: Duration) {
        let _ = (addr, rtt);
    }
}

fn classify_io_error(e: &io::Error) -> ProbeResult {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ProbeResult::Refused,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            ProbeResult::Unreachable
        }
        io::ErrorKind::TimedOut => ProbeResult::Timeout,
        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => {
            ProbeResult::Rejected(format!("connection closed: {e}"))
        }
        _ => ProbeResult::Error(e.to_string()),
    }
}

/// Probes by opening a TCP connection to the address's port: up when the connection is
/// accepted. The connection is closed right away without sending anything.
///
/// [`TcpProber::new`] waits a fixed time; [`TcpProber::adaptive`] derives the timeout from the
/// connect times measured so far (accepted and refused connections both count), like the ICMP
/// engine ([`super::IcmpTimeout`]).
#[derive(Debug, Clone)]
pub struct TcpProber {
    /// How long one connection attempt may take (with an adaptive timeout: the initial value).
    pub timeout: Duration,
    adaptive: Option<Arc<Mutex<RttEstimator>>>,
}

impl Default for TcpProber {
    fn default() -> Self {
        TcpProber::new(Duration::from_secs(1))
    }
}

impl TcpProber {
    /// A TCP prober with the given, fixed connect timeout.
    pub fn new(timeout: Duration) -> Self {
        TcpProber {
            timeout,
            adaptive: None,
        }
    }

    /// A TCP prober whose timeout adapts to measured connect times (`timeout` must be an
    /// [`IcmpTimeout::Adaptive`](super::IcmpTimeout::Adaptive); a fixed one stays fixed).
    pub fn adaptive(timeout: super::IcmpTimeout) -> Self {
        let est = RttEstimator::new(timeout);
        TcpProber {
            timeout: est.current(),
            adaptive: Some(Arc::new(Mutex::new(est))),
        }
    }

    /// The timeout the next probe uses.
    pub fn current_timeout(&self) -> Duration {
        match &self.adaptive {
            None => self.timeout,
            Some(est) => est.lock().unwrap_or_else(|e| e.into_inner()).current(),
        }
    }

    fn sample(&self, rtt: Duration) {
        if let Some(est) = &self.adaptive {
            est.lock().unwrap_or_else(|e| e.into_inner()).sample(rtt);
        }
    }
}

#[async_trait]
impl Prober for TcpProber {
    async fn probe(&self, addr: SocketAddr) -> ProbeResult {
        let start = Instant::now();
        let result =
            match tokio::time::timeout(self.current_timeout(), TcpStream::connect(addr)).await {
                Err(_) => ProbeResult::Timeout,
                Ok(Err(e)) => classify_io_error(&e),
                Ok(Ok(_stream)) => ProbeResult::Up {
                    rtt: start.elapsed(),
                },
            };
        if matches!(result, ProbeResult::Up { .. } | ProbeResult::Refused) {
            self.sample(start.elapsed());
        }
        result
    }

    fn name(&self) -> &'static str {
        "tcp"
    }

    fn suggested_window(&self) -> usize {
        512
    }
}

/// Probes with the target protocol's AVAILABLE handshake (v3 targets): connect, send the
/// word `0x000AAAAA` (u32 little-endian), and read until the echo arrives. This is the
/// session's handshake ([`crate::protocol::probe_available`]), so discovery and the distributor
/// agree on what a target is: frames the target pushes meanwhile (queued profile events) must
/// be valid frames of at most [`MAX_SKIPPED_FRAME_BYTES`]; a longer length or an undecodable
/// frame rejects the peer. The whole exchange runs under one timeout.
///
/// A target serves one client at a time, so never probe a target that has a session open:
/// the probe would stall until the timeout (the [`super::Monitor`] leaves leased hosts alone).
#[derive(Debug, Clone)]
pub struct AvailableProber {
    /// Time limit for connect, send and echo together.
    pub timeout: Duration,
}

impl Default for AvailableProber {
    fn default() -> Self {
        AvailableProber {
            timeout: Duration::from_secs(2),
        }
    }
}

impl AvailableProber {
    /// An AVAILABLE prober with the given time limit for the whole exchange.
    pub fn new(timeout: Duration) -> Self {
        AvailableProber { timeout }
    }
}

/// What an AVAILABLE handshake that failed says about the host.
fn classify_target_error(e: TargetError) -> ProbeResult {
    match e {
        TargetError::Refused => ProbeResult::Refused,
        TargetError::Timeout { .. } => ProbeResult::Timeout,
        TargetError::Io { source, .. } => classify_io_error(&source),
        TargetError::ConnectionLost { during, .. } => {
            ProbeResult::Rejected(format!("connection closed while {during}"))
        }
        TargetError::Protocol { detail, .. } => ProbeResult::Rejected(detail),
        other => ProbeResult::Error(other.to_string()),
    }
}

#[async_trait]
impl Prober for AvailableProber {
    async fn probe(&self, addr: SocketAddr) -> ProbeResult {
        let start = Instant::now();
        // The session's own handshake: pushed frames are read (and must be valid profile or
        // live frames of at most MAX_SKIPPED_FRAME_BYTES) until the echo arrives.
        let cfg = SessionConfig {
            connect_timeout: self.timeout,
            reply_timeout: self.timeout,
            max_frame_bytes: MAX_SKIPPED_FRAME_BYTES as usize,
            ..SessionConfig::for_dialect(Dialect::V3)
        };
        match tokio::time::timeout(self.timeout, probe_available(addr, &cfg)).await {
            Err(_) => ProbeResult::Timeout,
            Ok(Err(e)) => classify_target_error(e),
            Ok(Ok(())) => ProbeResult::Up {
                rtt: start.elapsed(),
            },
        }
    }

    fn name(&self) -> &'static str {
        "available"
    }

    fn suggested_window(&self) -> usize {
        512
    }
}

#[derive(Debug, Default)]
struct Script {
    up: HashSet<SocketAddr>,
    probes: HashMap<SocketAddr, u64>,
    total: u64,
}

/// A prober that answers from a script, for tests: addresses in its "up" set answer after
/// `latency`, all others time out after `silence`. The set can be changed while probes run.
/// It counts the probes per address, so tests can check who was probed how often.
///
/// Delays use `tokio::time`, so tests with `tokio::time::pause` run instantly.
///
/// ```
/// # tokio_test_block_on(async {
/// use std::sync::Arc;
/// use taskdist::discovery::{Prober, ScriptedProber};
///
/// let a = "127.0.0.9:3001".parse().unwrap();
/// let prober = Arc::new(ScriptedProber::new());
/// assert!(!prober.probe(a).await.is_up());
/// prober.set_up(a);
/// assert!(prober.probe(a).await.is_up());
/// assert_eq!(prober.probes_of(a), 2);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true)
/// #         .build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug)]
pub struct ScriptedProber {
    script: Mutex<Script>,
    /// Delay before an up address answers.
    pub latency: Duration,
    /// Delay before a silent address reports [`ProbeResult::Timeout`].
    pub silence: Duration,
}

impl Default for ScriptedProber {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedProber {
    /// A scripted prober with no address up, 1 ms latency and a 100 ms timeout.
    pub fn new() -> Self {
        ScriptedProber {
            script: Mutex::new(Script::default()),
            latency: Duration::from_millis(1),
            silence: Duration::from_millis(100),
        }
    }

    /// A scripted prober where `up` answers.
    pub fn with_up<I: IntoIterator<Item = SocketAddr>>(up: I) -> Self {
        let prober = Self::new();
        for a in up {
            prober.set_up(a);
        }
        prober
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        // A panic while holding this lock cannot leave the script inconsistent (every
        // critical section is a single insert/remove), so a poisoned lock is still usable.
        self.script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `addr` answer from now on.
    pub fn set_up(&self, addr: SocketAddr) {
        self.lock().up.insert(addr);
    }

    /// Makes `addr` silent from now on.
    pub fn set_down(&self, addr: SocketAddr) {
        self.lock().up.remove(&addr);
    }

    /// True when `addr` currently answers.
    pub fn is_up(&self, addr: SocketAddr) -> bool {
        self.lock().up.contains(&addr)
    }

    /// How many probes `addr` has received so far.
    pub fn probes_of(&self, addr: SocketAddr) -> u64 {
        self.lock().probes.get(&addr).copied().unwrap_or(0)
    }

    /// How many probes were made in total.
    pub fn total_probes(&self) -> u64 {
        self.lock().total
    }
}

#[async_trait]
impl Prober for ScriptedProber {
    async fn probe(&self, addr: SocketAddr) -> ProbeResult {
        {
            let mut script = self.lock();
            *script.probes.entry(addr).or_insert(0) += 1;
            script.total += 1;
        }
        // Whether the host answers is decided when the answer would arrive.
        tokio::time::sleep(self.latency.min(self.silence)).await;
        if self.is_up(addr) {
            ProbeResult::Up { rtt: self.latency }
        } else {
            tokio::time::sleep(self.silence.saturating_sub(self.latency)).await;
            ProbeResult::Timeout
        }
    }

    fn name(&self) -> &'static str {
        "scripted"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a = l.local_addr().expect("addr");
        (l, a)
    }

    #[tokio::test]
    async fn tcp_up_and_refused() {
        let (l, a) = listener().await;
        let p = TcpProber::default();
        assert!(p.probe(a).await.is_up());
        drop(l);
        assert_eq!(p.probe(a).await, ProbeResult::Refused);
    }

    /// Serves one connection with a scripted reply after reading the AVAILABLE word.
    async fn serve_once(reply: Vec<u8>) -> SocketAddr {
        let (l, a) = listener().await;
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut w = [0u8; 4];
                if s.read_exact(&mut w).await.is_ok() && u32::from_le_bytes(w) == AVAILABLE {
                    let _ = s.write_all(&reply).await;
                    // Keep the connection open a moment so the client reads everything.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        a
    }

    #[tokio::test]
    async fn available_echo_is_up() {
        let a = serve_once(AVAILABLE.to_le_bytes().to_vec()).await;
        assert!(AvailableProber::default().probe(a).await.is_up());
    }

    #[tokio::test]
    async fn available_skips_pushed_frames() {
        let frame: &[u8] =
            b"<profile><events><event type=\"EXIT\" task-id=\"0\" time-stamp=\"7\"/></events></profile>\0";
        let mut reply = (frame.len() as u32).to_le_bytes().to_vec();
        reply.extend_from_slice(frame);
        reply.extend_from_slice(&AVAILABLE.to_le_bytes());
        let a = serve_once(reply).await;
        assert!(AvailableProber::default().probe(a).await.is_up());
    }

    #[tokio::test]
    async fn available_rejects_huge_length_and_short_frame() {
        let a = serve_once((MAX_SKIPPED_FRAME_BYTES + 1).to_le_bytes().to_vec()).await;
        let r = AvailableProber::default().probe(a).await;
        assert!(matches!(r, ProbeResult::Rejected(_)), "{r:?}");

        let mut reply = 100u32.to_le_bytes().to_vec();
        reply.extend_from_slice(b"short");
        let (l, a) = listener().await;
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut w = [0u8; 4];
                let _ = s.read_exact(&mut w).await;
                let _ = s.write_all(&reply).await;
            }
        });
        let r = AvailableProber::default().probe(a).await;
        assert!(matches!(r, ProbeResult::Rejected(_)), "{r:?}");
    }

    #[tokio::test]
    async fn available_silent_server_times_out() {
        // Accepts but never answers, like a target busy with another client.
        let (l, a) = listener().await;
        let keep = tokio::spawn(async move {
            let conn = l.accept().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(conn);
        });
        let r = AvailableProber::new(Duration::from_millis(200))
            .probe(a)
            .await;
        assert_eq!(r, ProbeResult::Timeout);
        keep.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_follows_its_script() {
        let a: SocketAddr = "127.0.0.9:1".parse().expect("addr");
        let p = ScriptedProber::new();
        assert_eq!(p.probe(a).await, ProbeResult::Timeout);
        p.set_up(a);
        assert!(p.probe(a).await.is_up());
        p.set_down(a);
        assert!(!p.probe(a).await.is_up());
        assert_eq!(p.probes_of(a), 3);
        assert_eq!(p.total_probes(), 3);
    }
}
