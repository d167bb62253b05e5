//! A dedicated ICMP echo sweep: one sender (the calling thread) and one receiver thread per
//! sweep, sharing nothing but a channel of replies and one timestamp.
//!
//! # Why not the [`Prober`](super::Prober) path
//! With one future per probe, a probe's timeout runs in the same task (or runtime) that sends
//! the next probes. An unpaced burst of thousands of sends keeps that task busy while replies
//! queue in the socket; the timers then fire before the replies are read, and answers that
//! arrived in time are counted as lost (measured: `discover --rate 0 --timeout-ms 10
//! 127.0.0.0/16` found 0 of 65,534).
//!
//! # How this sweep decides
//! - The receiver thread always reads: it waits in `poll` and drains each socket until it is
//!   empty, stamps every reply with the time it was read, and hands the replies over in
//!   batches. After each drain it publishes *when it last found the sockets empty*.
//! - A probe expires only when its deadline (send time + timeout) lies before that published
//!   instant, and only after the sender took every batch handed over before it. So no deadline
//!   can expire on a reply that was sitting in the socket, however busy the sender is.
//! - A probe's timeout counts from the moment `sendto` returned for it.
//! - A reply counts for its address while the address is still being probed, also when it
//!   arrives after that attempt's deadline (the retry is then already on its way); it makes
//!   the sweep find hosts on networks slower than the current timeout and teaches the timeout
//!   estimator their round-trip time.
//!
//! # Batching
//! On Linux the sender hands up to 64 echo requests to one `sendmmsg` call and the receiver
//! reads up to 64 replies per `recvmmsg` call (a loopback /16: 1,025 and about 10,000 calls
//! instead of 65,534 `sendto` and 88,506 `recvfrom`), which measurably shortened sweeps of
//! answering ranges (`docs/discovery.md`).
//!
//! # Adaptive timeouts
//! [`IcmpTimeout::Adaptive`] keeps a smoothed round-trip time and its variation from the
//! replies, the way TCP (RFC 6298) and nmap do: `srtt += (r - srtt)/8`,
//! `rttvar += (|r - srtt| - rttvar)/4`, timeout `srtt + max(4·rttvar, srtt/4)`, clamped to a
//! floor and a ceiling. The `srtt/4` margin matters on steady paths: there rttvar decays to
//! almost nothing, and without it the timeout shrank to the round trip itself (measured in a
//! namespace with 50 ms of delay: retries expired a hair before their answers, and lost hosts
//! were missed). Only unambiguous samples count (the sequence number names the attempt a reply
//! answers). Until the first reply, the initial timeout applies.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio_util::sync::CancellationToken;

use super::icmp::{IcmpError, IcmpSocketKind};
use super::probe::ProbeResult;
use super::sweep::SweepReport;

/// How long a probe waits for its echo reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpTimeout {
    /// Every probe waits exactly this long (`--timeout-ms`).
    Fixed(Duration),
    /// Derived from measured round-trip times (see the module docs).
    Adaptive {
        /// Timeout before the first reply was measured.
        initial: Duration,
        /// Least timeout, whatever the measurements say.
        floor: Duration,
        /// Largest timeout, whatever the measurements say.
        ceiling: Duration,
    },
}

impl IcmpTimeout {
    /// The default adaptive timeout: initial 100 ms, floor 20 ms, ceiling 3 s.
    pub const DEFAULT_ADAPTIVE: IcmpTimeout = IcmpTimeout::Adaptive {
        initial: Duration::from_millis(100),
        floor: Duration::from_millis(20),
        ceiling: Duration::from_secs(3),
    };
}

impl Default for IcmpTimeout {
    fn default() -> Self {
        IcmpTimeout::DEFAULT_ADAPTIVE
    }
}

/// Settings of [`icmp_sweep`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpSweepConfig {
    /// How long a probe waits.
    pub timeout: IcmpTimeout,
    /// Extra attempts for an address that did not answer.
    pub retries: u32,
    /// Most probes in flight; `None` derives it from the granted receive buffer (1 KiB per
    /// probe, 64 to 16384).
    pub window: Option<usize>,
    /// Most probes sent per second; `None` does not pace (the window and the send buffer
    /// then bound the rate).
    pub rate_per_sec: Option<u32>,
    /// Receive buffer to request per socket (`SO_RCVBUFFORCE`, else `SO_RCVBUF`); `None`
    /// keeps the kernel default.
    pub recv_buffer_bytes: Option<usize>,
    /// Which kind of ICMP socket to open.
    pub sock_type: IcmpSocketKind,
    /// Payload bytes per echo request.
    pub payload_len: usize,
    /// On Linux raw sockets, let only echo replies in (`ICMP_FILTER`; default true).
    pub filter_echo_replies: bool,
}

impl Default for IcmpSweepConfig {
    fn default() -> Self {
        IcmpSweepConfig {
            timeout: IcmpTimeout::default(),
            retries: 2,
            window: None,
            rate_per_sec: None,
            recv_buffer_bytes: Some(8 << 20),
            sock_type: IcmpSocketKind::Auto,
            payload_len: 16,
            filter_echo_replies: true,
        }
    }
}

/// Smoothed round-trip time estimator (RFC 6298 constants).
#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    timeout: IcmpTimeout,
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl RttEstimator {
    pub(crate) fn new(timeout: IcmpTimeout) -> Self {
        RttEstimator {
            timeout,
            srtt: None,
            rttvar: Duration::ZERO,
        }
    }

    pub(crate) fn sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + r) / 8);
            }
        }
    }

    /// The timeout after `timeouts` consecutive unanswered probes: the current one doubled
    /// that many times (RFC 6298, 5.5), but not beyond the initial timeout (nor the
    /// ceiling) unless the current one already is: a host that stays silent is then probed
    /// no slower than a host never measured. A fixed timeout stays fixed.
    pub(crate) fn backed_off(&self, timeouts: u32) -> Duration {
        let current = self.current();
        match self.timeout {
            IcmpTimeout::Fixed(_) => current,
            IcmpTimeout::Adaptive {
                initial, ceiling, ..
            } => {
                let cap = initial.min(ceiling).max(current);
                current
                    .checked_mul(1u32 << timeouts.min(16))
                    .map_or(cap, |d| d.min(cap))
            }
        }
    }

    pub(crate) fn current(&self) -> Duration {
        match self.timeout {
            IcmpTimeout::Fixed(d) => d,
            IcmpTimeout::Adaptive {
                initial,
                floor,
                ceiling,
            } => match self.srtt {
                None => initial,
                // At least a quarter of the round trip as margin: on a steady path rttvar
                // decays towards zero, and the timeout would otherwise shrink to the round
                // trip itself, so that the least jitter expires answers on their way.
                Some(s) => (s + (self.rttvar * 4).max(s / 4)).clamp(floor, ceiling.max(floor)),
            },
        }
    }
}

/// The loss-controlled window and the loss-aware retries of a sweep: pure bookkeeping, fed
/// with the replies, asked before each send and at each expiry.
///
/// - **Window.** Without an explicit window, the most probes in flight are derived from the
///   receive buffer the kernel granted (1 KiB per probe, 64 to 16384; 256 when unknown), so a
///   reply to every probe in flight fits in it. A reply to a retry means an earlier attempt was
///   lost (or late): the window then halves, at most once per timeout and not below 64; each
///   reply to a first attempt grows it by one, back up to the buffer-derived size. An explicit
///   window stays as given.
/// - **Retries.** Before any reply, an address gets all its retries (nothing is known about the
///   network yet). While replies come on first attempts only (no loss seen), an address gets
///   one retry: on a lossless network a second silence means nobody is there, and a silent
///   range ends sooner. Once a retry was answered (loss seen), all retries. An address that
///   ran out of such cut retries is kept one more timeout before it is given up: a late
///   answer still counts, and if loss shows meanwhile it gets its remaining retries (the
///   sweep engine does this with [`LossControl::retries_cut`]; no window slot is held).
#[derive(Debug, Clone)]
pub(crate) struct LossControl {
    adapt: bool,
    window: usize,
    max_window: usize,
    floor: usize,
    last_cut: Instant,
    loss_seen: bool,
    first_replies: u64,
    retries: u32,
}

impl LossControl {
    /// A controller for a sweep with the `explicit` window (else derived from the `granted`
    /// receive buffer in bytes) and `retries` extra attempts, starting at `now`.
    pub(crate) fn new(
        explicit: Option<usize>,
        granted: Option<usize>,
        retries: u32,
        now: Instant,
    ) -> Self {
        let max_window = explicit
            .unwrap_or_else(|| granted.map_or(256, |b| (b / 1024).clamp(64, 16384)))
            .max(1);
        LossControl {
            adapt: explicit.is_none(),
            window: max_window,
            max_window,
            floor: 64.min(max_window),
            last_cut: now,
            loss_seen: false,
            first_replies: 0,
            retries,
        }
    }

    /// Most probes in flight now.
    pub(crate) fn window(&self) -> usize {
        self.window
    }

    /// A reply to `attempt` (0: the first) read at `at`, while the probe timeout is `timeout`.
    pub(crate) fn on_reply(&mut self, attempt: u32, at: Instant, timeout: Duration) {
        if attempt == 0 {
            self.first_replies += 1;
        } else {
            self.loss_seen = true;
        }
        if !self.adapt {
            return;
        }
        if attempt == 0 {
            self.window = (self.window + 1).min(self.max_window);
        } else if at.saturating_duration_since(self.last_cut) > timeout {
            self.window = (self.window / 2).max(self.floor);
            self.last_cut = at;
            tracing::debug!(window = self.window, "reply to a retry: window halved");
        }
    }

    /// Extra attempts an address gets now.
    pub(crate) fn retries(&self) -> u32 {
        if self.loss_seen || self.first_replies == 0 {
            self.retries
        } else {
            self.retries.min(1)
        }
    }

    /// True while fewer retries are granted than configured (replies came, no loss seen).
    pub(crate) fn retries_cut(&self) -> bool {
        self.retries() < self.retries
    }

    /// Whether an address whose `attempt` (0: the first) went unanswered is tried again.
    pub(crate) fn retry_after(&self, attempt: u32) -> bool {
        attempt < self.retries()
    }
}

/// One opened ICMP socket.
struct Sock {
    socket: Socket,
    v6: bool,
    raw: bool,
}

fn open_sock(v6: bool, cfg: &IcmpSweepConfig) -> io::Result<Sock> {
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let socket = match cfg.sock_type {
        IcmpSocketKind::Raw => Socket::new(domain, Type::from(libc::SOCK_RAW), Some(proto))?,
        IcmpSocketKind::Datagram => Socket::new(domain, Type::DGRAM, Some(proto))?,
        IcmpSocketKind::Auto => Socket::new(domain, Type::DGRAM, Some(proto))
            .or_else(|_| Socket::new(domain, Type::from(libc::SOCK_RAW), Some(proto)))?,
    };
    let raw = socket.r#type()? == Type::from(libc::SOCK_RAW);
    socket.set_nonblocking(true)?;
    if let Some(bytes) = cfg.recv_buffer_bytes {
        super::icmp::enlarge_recv_buffer(socket.as_raw_fd(), bytes);
    }
    #[cfg(target_os = "linux")]
    if raw && cfg.filter_echo_replies {
        let kind = if v6 {
            surge_ping::ICMP::V6
        } else {
            surge_ping::ICMP::V4
        };
        if let Err(e) = super::icmp::only_echo_replies(socket.as_raw_fd(), kind) {
            tracing::debug!("cannot install the ICMP filter: {e}");
        }
    }
    Ok(Sock { socket, v6, raw })
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A reply read by the receiver: source, identifier, sequence, time read.
type Reply = (IpAddr, u16, u16, Instant);

/// Parses an echo reply; `None` for anything else.
fn parse_reply(buf: &[u8], sock: &Sock, from: IpAddr) -> Option<(u16, u16)> {
    let icmp = if !sock.v6 && sock.raw {
        let ihl = usize::from(buf.first()? & 0x0f) * 4;
        buf.get(ihl..)?
    } else {
        buf
    };
    let want = if sock.v6 { 129 } else { 0 };
    if icmp.len() < 8 || icmp[0] != want || icmp[1] != 0 {
        return None;
    }
    let _ = from;
    Some((
        u16::from_be_bytes([icmp[4], icmp[5]]),
        u16::from_be_bytes([icmp[6], icmp[7]]),
    ))
}

/// The receiver thread: reads until `stop`, publishing drained-until instants in `empty_at`
/// (nanoseconds since `base`).
fn receive(
    socks: Vec<Arc<Sock>>,
    tx: mpsc::Sender<Vec<Reply>>,
    empty_at: Arc<AtomicU64>,
    base: Instant,
    stop: Arc<AtomicBool>,
) {
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut bufs = vec![0u8; RECV_BATCH * RECV_BUF];
    while !stop.load(Ordering::Acquire) {
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs for the call.
        let _ = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1) };
        let mut batch = Vec::new();
        let mut drained_at = Instant::now();
        for sock in &socks {
            loop {
                let before = Instant::now();
                let (n, full) = recv_batch(&sock.socket, &mut bufs, |bytes, from| {
                    if let Some((id, seq)) = parse_reply(bytes, sock, from) {
                        batch.push((from, id, seq, Instant::now()));
                    }
                });
                if n == 0 || !full {
                    // Empty (or failing): everything that arrived before `before` is read.
                    drained_at = drained_at.min(before);
                    break;
                }
            }
        }
        if !batch.is_empty() && tx.send(batch).is_err() {
            return;
        }
        let nanos = u64::try_from(drained_at.duration_since(base).as_nanos()).unwrap_or(u64::MAX);
        empty_at.fetch_max(nanos, Ordering::AcqRel);
    }
}

/// Most replies per `recvmmsg` call, and the bytes kept of each (an echo reply with its IPv4
/// header and the default payload is 44 bytes; longer packets are truncated, which keeps the
/// ICMP header).
const RECV_BATCH: usize = 64;
const RECV_BUF: usize = 256;

/// Reads up to [`RECV_BATCH`] datagrams without waiting, calling `each` with the bytes and the
/// source of each. Returns how many were read and whether the batch was full (more may wait).
fn recv_batch(
    socket: &Socket,
    bufs: &mut [u8],
    mut each: impl FnMut(&[u8], IpAddr),
) -> (usize, bool) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: all-zero sockaddr_storage, iovec and mmsghdr values are valid.
        let mut names: Vec<libc::sockaddr_storage> =
            vec![unsafe { std::mem::zeroed() }; RECV_BATCH];
        let mut iovs: Vec<libc::iovec> = bufs
            .chunks_mut(RECV_BUF)
            .take(RECV_BATCH)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast::<libc::c_void>(),
                iov_len: b.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = names
            .iter_mut()
            .zip(iovs.iter_mut())
            .map(|(name, iov)| {
                // SAFETY: as above.
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_name = (name as *mut libc::sockaddr_storage).cast::<libc::c_void>();
                hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                hdr.msg_iov = iov as *mut libc::iovec;
                hdr.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: hdr,
                    msg_len: 0,
                }
            })
            .collect();
        // SAFETY: `msgs` holds RECV_BATCH headers whose names and buffers live until the end
        // of this block; the kernel writes at most `iov_len` bytes and `msg_namelen` bytes.
        let rc = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc <= 0 {
            return (0, false);
        }
        let n = rc as usize;
        for (i, msg) in msgs.iter().take(n).enumerate() {
            let len = (msg.msg_len as usize).min(RECV_BUF);
            // SAFETY: the kernel filled `names[i]` with `msg_namelen` bytes of a socket
            // address.
            let from = unsafe { SockAddr::new(names[i], msg.msg_hdr.msg_namelen) };
            if let Some(from) = from.as_socket() {
                each(&bufs[i * RECV_BUF..][..len], from.ip());
            }
        }
        (n, n == RECV_BATCH)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); RECV_BUF];
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                // SAFETY: `recv_from` initialised the first `n` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
                if let Some(from) = from.as_socket() {
                    each(bytes, from.ip());
                }
                (1, true)
            }
            Err(_) => (0, false),
        }
    }
}

/// Most echo requests per `sendmmsg` call.
const SEND_BATCH: usize = 64;

/// Sends `dests.len()` packets of `plen` bytes from `bufs` with one `sendmmsg` call (Linux) or
/// one `sendto` each. Returns how many were sent and the error that stopped the rest.
fn send_batch(
    socket: &Socket,
    bufs: &[u8],
    plen: usize,
    dests: &[SockAddr],
) -> (usize, Option<io::Error>) {
    #[cfg(target_os = "linux")]
    {
        let mut iovs: Vec<libc::iovec> = (0..dests.len())
            .map(|i| libc::iovec {
                iov_base: bufs[i * plen..].as_ptr() as *mut libc::c_void,
                iov_len: plen,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = dests
            .iter()
            .zip(iovs.iter_mut())
            .map(|(d, iov)| {
                // SAFETY: an all-zero msghdr is valid (no name, no control data).
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_name = d.as_ptr() as *mut libc::c_void;
                hdr.msg_namelen = d.len();
                hdr.msg_iov = iov as *mut libc::iovec;
                hdr.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: hdr,
                    msg_len: 0,
                }
            })
            .collect();
        let mut done = 0usize;
        while done < msgs.len() {
            let left = u32::try_from(msgs.len() - done).unwrap_or(u32::MAX);
            // SAFETY: `msgs[done..]` are initialised headers whose names and buffers (`dests`,
            // `iovs`, `bufs`) outlive the call; the kernel only reads them and writes
            // `msg_len`.
            let rc =
                unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs[done..].as_mut_ptr(), left, 0) };
            if rc < 0 {
                return (done, Some(io::Error::last_os_error()));
            }
            if rc == 0 {
                break;
            }
            done += rc as usize;
        }
        (done, None)
    }
    #[cfg(not(target_os = "linux"))]
    {
        for (i, d) in dests.iter().enumerate() {
            if let Err(e) = socket.send_to(&bufs[i * plen..][..plen], d) {
                return (i, Some(e));
            }
        }
        (dests.len(), None)
    }
}

/// State of an address being probed.
struct Entry {
    addr: SocketAddr,
    /// More addresses with the same IP (targets on one host, other ports): one probe answers
    /// for all of them.
    also: Vec<SocketAddr>,
    attempt: u32,
    /// The attempt the next send of this address makes.
    next_attempt: u32,
    first_sent: Instant,
    last_sent: Instant,
    /// The probe of the last attempt is still within its timeout.
    in_flight: bool,
}

/// Sweeps `addrs` with ICMP echo, calling `on_result` with each address's final result as soon
/// as it is known. Blocking: run it on a thread of its own (or `spawn_blocking`). Stops early
/// when `cancel` fires. Fails only when no ICMP socket can be opened.
pub fn icmp_sweep<I, F>(
    addrs: I,
    cfg: &IcmpSweepConfig,
    cancel: &CancellationToken,
    mut on_result: F,
) -> Result<SweepReport, IcmpError>
where
    I: IntoIterator<Item = SocketAddr>,
    F: FnMut(SocketAddr, &ProbeResult),
{
    let start = Instant::now();
    let v4 = open_sock(false, cfg).map(Arc::new);
    let v6 = open_sock(true, cfg).map(Arc::new);
    if let (Err(a), Err(b)) = (&v4, &v6) {
        return Err(IcmpError::Open {
            v4: a.to_string(),
            v6: b.to_string(),
        });
    }
    let granted = v4
        .as_ref()
        .ok()
        .and_then(|s| s.socket.recv_buffer_size().ok());
    let mut control = LossControl::new(cfg.window, granted, cfg.retries, Instant::now());
    tracing::debug!(
        ?granted,
        window = control.window(),
        "ICMP sweep sockets open"
    );
    let socks: Vec<Arc<Sock>> = [&v4, &v6]
        .into_iter()
        .filter_map(|s| s.as_ref().ok().cloned())
        .collect();
    let ident: u16 = rand::random();
    let base = Instant::now();
    let empty_at = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Vec<Reply>>();
    let receiver = {
        let (socks, empty_at, stop) = (socks.clone(), Arc::clone(&empty_at), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("icmp-recv".into())
            .spawn(move || receive(socks, tx, empty_at, base, stop))
            .map_err(|e| IcmpError::Open {
                v4: format!("cannot start the receiver thread: {e}"),
                v6: String::new(),
            })?
    };

    let mut packet = vec![0u8; 8 + cfg.payload_len];
    packet[0] = 8;
    for (i, b) in packet[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut est = RttEstimator::new(cfg.timeout);
    let interval = cfg
        .rate_per_sec
        .filter(|r| *r > 0)
        .map(|r| Duration::from_secs(1) / r);
    let mut next_send = Instant::now();
    let mut addrs = addrs.into_iter();
    let mut exhausted = false;
    let mut entries: HashMap<IpAddr, Entry> = HashMap::new();
    // Sent probes in send order: (address, attempt, sent).
    let mut queue: VecDeque<(IpAddr, u32, Instant)> = VecDeque::new();
    let mut retry: VecDeque<IpAddr> = VecDeque::new();
    // Addresses out of (cut) retries, waiting one more timeout: (address, last deadline).
    let mut parked: VecDeque<(IpAddr, Instant)> = VecDeque::new();
    let mut in_flight = 0usize;
    let mut carry: Vec<Vec<Reply>> = Vec::new();
    let plen = packet.len();
    let mut batch_bufs = vec![0u8; plen * SEND_BATCH];
    let mut batch_ips: Vec<IpAddr> = Vec::with_capacity(SEND_BATCH);
    let mut batch_dests: Vec<SockAddr> = Vec::with_capacity(SEND_BATCH);
    let mut report = SweepReport::default();

    let mut finish = |report: &mut SweepReport, e: &Entry, result: ProbeResult| {
        for addr in std::iter::once(e.addr).chain(e.also.iter().copied()) {
            report.tally(addr, &result);
            on_result(addr, &result);
        }
    };

    loop {
        if cancel.is_cancelled() {
            report.cancelled = true;
            break;
        }
        // 1. Replies first.
        let drained = empty_at.load(Ordering::Acquire);
        let drained = base + Duration::from_nanos(drained);
        carry.extend(rx.try_iter());
        for batch in carry.drain(..) {
            for (ip, id, seq, at) in batch {
                let Some(e) = entries.get(&ip) else { continue };
                let ours = match v4.as_ref().ok().filter(|_| ip.is_ipv4()) {
                    Some(s) if s.raw => id == ident,
                    _ => match v6.as_ref().ok().filter(|_| ip.is_ipv6()) {
                        Some(s) if s.raw => id == ident,
                        _ => true,
                    },
                };
                if !ours {
                    continue;
                }
                let attempt = u32::from(seq);
                let sent = if attempt == e.attempt {
                    Some(e.last_sent)
                } else if attempt == 0 {
                    Some(e.first_sent)
                } else {
                    None
                };
                let rtt = sent.map_or(Duration::ZERO, |s| at.saturating_duration_since(s));
                if let Some(s) = sent {
                    if e.attempt == 0 || attempt == e.attempt {
                        est.sample(at.saturating_duration_since(s));
                    }
                }
                control.on_reply(attempt, at, est.current());
                let e = entries.remove(&ip).expect("present");
                if e.in_flight {
                    in_flight -= 1;
                }
                finish(&mut report, &e, ProbeResult::Up { rtt });
            }
        }
        // 2. Expire probes whose deadline lies before the drained instant.
        let timeout = est.current();
        while let Some(&(ip, attempt, sent)) = queue.front() {
            let stale = entries
                .get(&ip)
                .is_none_or(|e| e.attempt != attempt || !e.in_flight || e.last_sent != sent);
            if stale {
                queue.pop_front();
                continue;
            }
            if sent + timeout > drained {
                break;
            }
            queue.pop_front();
            in_flight -= 1;
            let e = entries.get_mut(&ip).expect("present");
            e.in_flight = false;
            if control.retry_after(e.attempt) {
                retry.push_back(ip);
            } else if control.retries_cut() {
                // Fewer retries than asked for (no loss seen yet): wait one more timeout for
                // a late answer, and for loss to show, before giving the address up.
                parked.push_back((ip, sent + timeout));
            } else {
                let e = entries.remove(&ip).expect("present");
                finish(&mut report, &e, ProbeResult::Timeout);
            }
        }
        // Parked addresses: retried after all once loss shows, given up one timeout after
        // their last deadline otherwise. (An answer removes the entry meanwhile.)
        while let Some(&(ip, deadline)) = parked.front() {
            let Some(e) = entries.get(&ip) else {
                parked.pop_front();
                continue;
            };
            if control.retry_after(e.attempt) {
                parked.pop_front();
                retry.push_back(ip);
                continue;
            }
            if deadline + timeout > drained {
                break;
            }
            parked.pop_front();
            let e = entries.remove(&ip).expect("present");
            finish(&mut report, &e, ProbeResult::Timeout);
        }
        // 3. Send what the window and the pacer allow, in batches of one `sendmmsg` call
        //    (one family per batch; single probes when paced).
        let mut sent_any = false;
        let mut blocked = false;
        let batch_max = if interval.is_some() { 1 } else { SEND_BATCH };
        let window = control.window();
        'send: while in_flight < window && !blocked {
            batch_ips.clear();
            batch_dests.clear();
            let mut family: Option<bool> = None;
            while in_flight + batch_ips.len() < window && batch_ips.len() < batch_max {
                let now = Instant::now();
                if interval.is_some() && next_send > now {
                    break;
                }
                let (ip, from_retry) = if let Some(ip) = retry.front().copied() {
                    (ip, true)
                } else if exhausted {
                    break;
                } else {
                    match addrs.next() {
                        Some(a) if entries.contains_key(&a.ip()) => {
                            if let Some(e) = entries.get_mut(&a.ip()) {
                                if e.addr != a && !e.also.contains(&a) {
                                    e.also.push(a);
                                }
                            }
                            continue;
                        }
                        Some(a) => {
                            entries.insert(
                                a.ip(),
                                Entry {
                                    addr: a,
                                    also: Vec::new(),
                                    attempt: 0,
                                    next_attempt: 0,
                                    first_sent: now,
                                    last_sent: now,
                                    in_flight: false,
                                },
                            );
                            retry.push_front(a.ip());
                            (a.ip(), false)
                        }
                        None => {
                            exhausted = true;
                            break;
                        }
                    }
                };
                let _ = from_retry;
                let sock = match ip {
                    IpAddr::V4(_) => &v4,
                    IpAddr::V6(_) => &v6,
                };
                let sock = match sock {
                    Ok(s) => s,
                    Err(err) => {
                        retry.pop_front();
                        let e = entries.remove(&ip).expect("present");
                        let msg = format!("no ICMP socket for {}: {err}", e.addr.ip());
                        finish(&mut report, &e, ProbeResult::Error(msg));
                        continue;
                    }
                };
                if family.is_some_and(|f| f != sock.v6) {
                    break;
                }
                family = Some(sock.v6);
                retry.pop_front();
                let e = entries.get(&ip).expect("present");
                let attempt = e.next_attempt;
                let dest = SockAddr::from(match e.addr {
                    SocketAddr::V4(a) => SocketAddr::V4(std::net::SocketAddrV4::new(*a.ip(), 0)),
                    SocketAddr::V6(a) => {
                        SocketAddr::V6(std::net::SocketAddrV6::new(*a.ip(), 0, 0, a.scope_id()))
                    }
                });
                let buf = &mut batch_bufs[batch_ips.len() * plen..][..plen];
                buf.copy_from_slice(&packet);
                buf[0] = if sock.v6 { 128 } else { 8 };
                buf[4..6].copy_from_slice(&ident.to_be_bytes());
                buf[6..8].copy_from_slice(&(attempt.min(u32::from(u16::MAX)) as u16).to_be_bytes());
                if !sock.v6 {
                    let c = checksum(buf);
                    buf[2..4].copy_from_slice(&c.to_be_bytes());
                }
                batch_ips.push(ip);
                batch_dests.push(dest);
                if let Some(i) = interval {
                    next_send = (next_send + i)
                        .max(now.checked_sub(Duration::from_millis(5)).unwrap_or(now));
                }
            }
            let Some(v6fam) = family else { break };
            let sock = if v6fam { &v6 } else { &v4 };
            let sock = sock.as_ref().expect("family checked above");
            let (n, err) = send_batch(&sock.socket, &batch_bufs, plen, &batch_dests);
            let sent = Instant::now();
            for &ip in &batch_ips[..n] {
                let e = entries.get_mut(&ip).expect("present");
                e.attempt = e.next_attempt;
                e.next_attempt += 1;
                if e.attempt == 0 {
                    e.first_sent = sent;
                }
                e.last_sent = sent;
                e.in_flight = true;
                in_flight += 1;
                queue.push_back((ip, e.attempt, sent));
                report.probes_sent += 1;
                sent_any = true;
            }
            // Not sent: back to the front of the queue, in order (the failed one first).
            let mut rest = n;
            if let Some(err) = err {
                let transient = matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::OutOfMemory
                ) || err.raw_os_error() == Some(libc::ENOBUFS);
                if transient {
                    blocked = true;
                } else {
                    let ip = batch_ips[n];
                    let e = entries.remove(&ip).expect("present");
                    let result = match err.kind() {
                        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                            ProbeResult::Unreachable
                        }
                        _ => ProbeResult::Error(format!("ping {}: {err}", e.addr.ip())),
                    };
                    finish(&mut report, &e, result);
                    rest = n + 1;
                }
            }
            for &ip in batch_ips[rest..].iter().rev() {
                retry.push_front(ip);
            }
            if blocked {
                break 'send;
            }
        }
        if entries.is_empty() && exhausted && retry.is_empty() {
            break;
        }
        if sent_any && !blocked {
            continue;
        }
        // 4. Wait for replies, the next deadline or the pacer (at most 1 ms: the drained
        //    instant advances in the receiver's own rhythm).
        let mut wait = Duration::from_millis(1);
        if let (Some(_), true) = (interval, in_flight < control.window()) {
            wait = wait.min(next_send.saturating_duration_since(Instant::now()));
        }
        if let Ok(batch) = rx.recv_timeout(wait) {
            carry.push(batch);
        }
    }
    stop.store(true, Ordering::Release);
    let _ = receiver.join();
    report.up.sort_unstable();
    report.elapsed = start.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn adaptive_timeout_starts_at_initial_then_follows_the_round_trips() {
        let mut est = RttEstimator::new(IcmpTimeout::DEFAULT_ADAPTIVE);
        assert_eq!(est.current(), 100 * MS);
        // Fast network: clamps to the floor.
        for _ in 0..20 {
            est.sample(Duration::from_micros(50));
        }
        assert_eq!(est.current(), 20 * MS);
        // Slow network: grows with the samples (srtt + 4 rttvar), capped by the ceiling.
        let mut slow = RttEstimator::new(IcmpTimeout::DEFAULT_ADAPTIVE);
        slow.sample(400 * MS);
        assert_eq!(slow.current(), 400 * MS + 4 * 200 * MS);
        let mut slower = RttEstimator::new(IcmpTimeout::DEFAULT_ADAPTIVE);
        slower.sample(2000 * MS);
        assert_eq!(slower.current(), 3000 * MS);
    }

    #[test]
    fn a_steady_round_trip_keeps_a_quarter_of_it_as_margin() {
        let mut est = RttEstimator::new(IcmpTimeout::DEFAULT_ADAPTIVE);
        for _ in 0..200 {
            est.sample(80 * MS);
        }
        // rttvar has decayed to nothing; the timeout stays above the round trip.
        assert_eq!(est.current(), 100 * MS);
    }

    #[test]
    fn fixed_timeout_ignores_samples() {
        let mut est = RttEstimator::new(IcmpTimeout::Fixed(10 * MS));
        est.sample(500 * MS);
        assert_eq!(est.current(), 10 * MS);
        assert_eq!(
            est.backed_off(3),
            10 * MS,
            "a fixed timeout is not backed off"
        );
    }

    #[test]
    fn unanswered_probes_double_the_timeout_up_to_the_initial_one() {
        let single = IcmpTimeout::Adaptive {
            initial: 1000 * MS,
            floor: 20 * MS,
            ceiling: 3000 * MS,
        };
        let mut est = RttEstimator::new(single);
        for _ in 0..20 {
            est.sample(Duration::from_micros(50));
        }
        assert_eq!(est.backed_off(0), 20 * MS);
        assert_eq!(est.backed_off(1), 40 * MS);
        assert_eq!(est.backed_off(3), 160 * MS);
        assert_eq!(
            est.backed_off(6),
            1000 * MS,
            "capped at the initial timeout"
        );
        assert_eq!(est.backed_off(u32::MAX), 1000 * MS);
        // A host slower than the initial timeout keeps its own (no doubling beyond it).
        let mut slow = RttEstimator::new(single);
        slow.sample(600 * MS);
        assert_eq!(slow.current(), 1800 * MS);
        assert_eq!(slow.backed_off(2), 1800 * MS);
        // The ceiling bounds the cap when the initial timeout lies above it.
        let mut high = RttEstimator::new(IcmpTimeout::Adaptive {
            initial: 5000 * MS,
            floor: 20 * MS,
            ceiling: 3000 * MS,
        });
        high.sample(Duration::from_micros(50));
        assert_eq!(high.backed_off(10), 3000 * MS);
    }

    #[test]
    fn window_follows_the_granted_buffer_or_the_explicit_value() {
        let t0 = Instant::now();
        let w = |explicit, granted| LossControl::new(explicit, granted, 2, t0).window();
        assert_eq!(w(None, Some(16 << 20)), 16384, "16 MiB: 1 KiB per probe");
        assert_eq!(w(None, Some(1 << 30)), 16384, "capped");
        assert_eq!(w(None, Some(100 << 10)), 100);
        assert_eq!(w(None, Some(4096)), 64, "at least 64");
        assert_eq!(w(None, None), 256, "buffer unknown");
        assert_eq!(w(Some(10), Some(16 << 20)), 10, "explicit wins");
        assert_eq!(w(Some(0), None), 1, "never zero");
    }

    #[test]
    fn replies_to_retries_halve_the_window_once_per_timeout_down_to_64() {
        let t0 = Instant::now();
        let timeout = 20 * MS;
        let mut c = LossControl::new(None, Some(1 << 20), 2, t0);
        assert_eq!(c.window(), 1024);
        // First-attempt replies at the full window change nothing.
        c.on_reply(0, t0 + MS, timeout);
        assert_eq!(c.window(), 1024);
        // Within the first timeout of the sweep: no cut yet.
        c.on_reply(1, t0 + 10 * MS, timeout);
        assert_eq!(c.window(), 1024);
        c.on_reply(1, t0 + 30 * MS, timeout);
        assert_eq!(c.window(), 512, "a reply to a retry halves the window");
        c.on_reply(2, t0 + 40 * MS, timeout);
        assert_eq!(c.window(), 512, "at most one cut per timeout");
        c.on_reply(1, t0 + 51 * MS, timeout);
        assert_eq!(c.window(), 256);
        for i in 0..10u32 {
            c.on_reply(1, t0 + (80 + 30 * i) * MS, timeout);
        }
        assert_eq!(c.window(), 64, "not below 64");
        // First-attempt replies grow it by one each, back up to the buffer-derived size.
        for _ in 0..100 {
            c.on_reply(0, t0 + 500 * MS, timeout);
        }
        assert_eq!(c.window(), 164);
        for _ in 0..2000 {
            c.on_reply(0, t0 + 500 * MS, timeout);
        }
        assert_eq!(c.window(), 1024);
    }

    #[test]
    fn an_explicit_window_is_not_adapted() {
        let t0 = Instant::now();
        let mut c = LossControl::new(Some(300), Some(16 << 20), 2, t0);
        for i in 1..20u32 {
            c.on_reply(1, t0 + i * 100 * MS, 20 * MS);
        }
        assert_eq!(c.window(), 300);
        // Loss still counts for the retries.
        assert_eq!(c.retries(), 2);
    }

    #[test]
    fn retries_depend_on_the_loss_seen() {
        let t0 = Instant::now();
        let mut c = LossControl::new(None, None, 3, t0);
        // Nothing known yet: every retry.
        assert_eq!(c.retries(), 3);
        assert!(!c.retries_cut());
        assert!(c.retry_after(0) && c.retry_after(2) && !c.retry_after(3));
        // Replies to first attempts only: one retry.
        c.on_reply(0, t0 + MS, 20 * MS);
        assert_eq!(c.retries(), 1);
        assert!(
            c.retries_cut(),
            "an address out of retries now is kept a while"
        );
        assert!(c.retry_after(0));
        assert!(!c.retry_after(1));
        // A retry was answered: loss, every retry again.
        c.on_reply(1, t0 + 2 * MS, 20 * MS);
        assert_eq!(c.retries(), 3);
        assert!(!c.retries_cut());
        assert!(c.retry_after(2) && !c.retry_after(3));
        // Without retries configured there are none, loss or not.
        let mut none = LossControl::new(None, None, 0, t0);
        assert!(!none.retry_after(0));
        none.on_reply(0, t0 + MS, 20 * MS);
        assert!(!none.retry_after(0));
    }

    #[test]
    fn checksum_of_an_echo_request_verifies() {
        let mut p = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1, 1, 2, 3];
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&p), 0);
    }
}
