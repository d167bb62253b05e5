//! ICMP echo probing through surge-ping, built for many probes in flight.
//!
//! # Why a naive surge-ping loop loses replies, and what this prober does instead
//! - **Receive buffer overflow (the cause).** surge-ping reads all replies of a client from one
//!   socket in one task. A burst of replies queues in that socket's receive buffer until the
//!   task drains it; when the buffer (`net.core.rmem_default`, 208 KiB) is full, the kernel
//!   drops further replies silently. A *raw* ICMP socket also receives every other ICMP packet
//!   of the host, on loopback including a copy of each echo request it sends, so each probe
//!   queues two packets of about 830 bytes of buffer accounting (`truesize`): the default
//!   buffer holds the packets of 128 probes. Measured (`tests/discovery_naive_icmp.rs`): one
//!   shared client with 256 probes in flight got exactly 128 of 254 replies, half of a /24;
//!   `surge_ping::ping` per address (a socket per call, each receiving every packet) got 196.
//!   Remedies here: the receive buffer is enlarged to [`IcmpConfig::recv_buffer_bytes`]
//!   (`SO_RCVBUFFORCE` as root, else `SO_RCVBUF` up to `net.core.rmem_max`); on Linux raw
//!   sockets an `ICMP_FILTER` lets only echo replies in; the default window of in-flight
//!   probes is derived from the buffer the kernel granted ([`Prober::suggested_window`]); the
//!   sweep paces starts and retries unanswered addresses.
//! - **One socket, unique tokens.** This prober shares one client per address family and gives
//!   each probe a unique (identifier, sequence) pair, so a late reply to an earlier probe can
//!   never complete a later one (with datagram sockets the kernel sets the identifier and
//!   demultiplexes; the sequence is then unique per prober).
//! - **Kernel rate limits do not apply to echo replies by default.**
//!   `net.ipv4.icmp_msgs_per_sec`/`icmp_msgs_burst` (global) and `icmp_ratelimit` (per
//!   destination) only limit the ICMP types in `net.ipv4.icmp_ratemask` (default 6168:
//!   unreachable, source quench, time exceeded, parameter problem). Echo reply (type 0) is not
//!   among them, and the counters `OutRateLimitGlobal`/`OutRateLimitHost` in `/proc/net/snmp`
//!   stayed 0 over ~600,000 echo replies in the benchmark (defaults 1000/s, burst 50). A system
//!   whose mask includes type 0 would cap replies at `icmp_msgs_per_sec`; the sweep's retries
//!   and a lower `--rate` recover those.
//!
//! With the defaults, 127.0.0.0/16 and a namespace /16 are found completely in under a second
//! without changing any sysctl (`scripts/bench-discovery.sh`).
//!
//! Unprivileged use: with `sock_type` [`IcmpSocketKind::Auto`] the prober first tries an ICMP
//! datagram socket (allowed where `net.ipv4.ping_group_range` includes the user's group) and
//! falls back to a raw socket (root or `CAP_NET_RAW`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use surge_ping::{Client, Config, PingIdentifier, PingSequence, SurgeError, ICMP};

use super::icmp_sweep::{IcmpTimeout, RttEstimator};
use super::probe::{ProbeResult, Prober};

/// `SOCK_DGRAM` and `SOCK_RAW` (the same values on Linux, the BSDs and macOS).
const SOCK_DGRAM: i32 = 2;
const SOCK_RAW: i32 = 3;

/// Which kind of ICMP socket to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IcmpSocketKind {
    /// Datagram ("ping") socket where `net.ipv4.ping_group_range` allows it, else raw.
    #[default]
    Auto,
    /// Raw socket only (needs root or `CAP_NET_RAW`).
    Raw,
    /// Unprivileged datagram socket only.
    Datagram,
}

/// Settings of an [`IcmpProber`].
#[derive(Debug, Clone)]
pub struct IcmpConfig {
    /// How long to wait for one echo reply: [`IcmpConfig::DEFAULT_TIMEOUT`] adapts per host
    /// (see [`IcmpProber`]); [`IcmpTimeout::Fixed`] waits exactly that long for every probe.
    pub timeout: IcmpTimeout,
    /// Requested receive buffer of each ICMP socket in bytes (the kernel doubles it and caps it
    /// at `net.core.rmem_max`); `None` keeps the kernel default. Default 8 MiB.
    pub recv_buffer_bytes: Option<usize>,
    /// Kind of socket to open.
    pub sock_type: IcmpSocketKind,
    /// Bytes of payload in each echo request.
    pub payload_len: usize,
    /// On Linux raw sockets, install `ICMP_FILTER`/`ICMP6_FILTER` so that only echo replies
    /// reach the socket (default true).
    pub filter_echo_replies: bool,
}

impl IcmpConfig {
    /// The default timeout of single probes: 1 s for a host never measured, then derived from
    /// that host's round-trip times, between 20 ms and 3 s (the sweep engine's floor and
    /// ceiling, [`IcmpTimeout::DEFAULT_ADAPTIVE`]).
    pub const DEFAULT_TIMEOUT: IcmpTimeout = IcmpTimeout::Adaptive {
        initial: Duration::from_secs(1),
        floor: Duration::from_millis(20),
        ceiling: Duration::from_secs(3),
    };
}

impl Default for IcmpConfig {
    fn default() -> Self {
        IcmpConfig {
            timeout: IcmpConfig::DEFAULT_TIMEOUT,
            recv_buffer_bytes: Some(8 << 20),
            sock_type: IcmpSocketKind::Auto,
            payload_len: 16,
            filter_echo_replies: true,
        }
    }
}

/// Why an [`IcmpProber`] could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum IcmpError {
    /// Neither an IPv4 nor an IPv6 ICMP socket could be opened.
    #[error(
        "cannot open an ICMP socket (IPv4: {v4}; IPv6: {v6}); run as root, grant CAP_NET_RAW, \
         allow unprivileged ICMP with `sysctl net.ipv4.ping_group_range=\"0 2147483647\"`, or \
         use --probe tcp"
    )]
    Open {
        /// The IPv4 error.
        v4: String,
        /// The IPv6 error.
        v6: String,
    },
}

/// One opened ICMP client (socket plus surge-ping's reply-dispatch task).
struct Family {
    client: Client,
    raw: bool,
    /// Only echo replies reach the socket (datagram socket, or raw socket with a filter).
    replies_only: bool,
    recv_buffer: Option<usize>,
}

/// Most hosts whose round-trip times an [`IcmpProber`] keeps; hosts beyond it are probed with
/// the initial timeout.
const MAX_TIMED_HOSTS: usize = 1 << 16;

/// Round-trip estimates of the hosts that answered an [`IcmpProber`].
#[derive(Debug, Default)]
struct HostTimers {
    /// Per host: its estimator and the probes unanswered since its last reply.
    hosts: HashMap<IpAddr, (RttEstimator, u32)>,
}

/// ICMP echo prober: one shared surge-ping client per address family, a unique
/// (identifier, sequence) per probe, and an enlarged receive buffer. See the module docs for
/// why. Ports of probed addresses are ignored.
///
/// # Timeouts of single probes
/// With an adaptive [`IcmpConfig::timeout`] (the default, [`IcmpConfig::DEFAULT_TIMEOUT`]) the
/// prober keeps a round-trip estimate per host that answered (up to 65,536 hosts), with the
/// sweep engine's rule ([`IcmpTimeout`]): `srtt + max(4·rttvar, srtt/4)`, clamped to the floor
/// and the ceiling. A host never measured gets the initial timeout. Each unanswered probe of a
/// measured host doubles its next timeout until it answers again, up to the initial timeout (or
/// the host's own estimate where that is longer): a host whose round trip grew is still found
/// by the retries, a host that went silent is noticed after a few round trips instead of a
/// fixed second per attempt, and a host that stays silent is never probed slower than one never
/// measured. [`Prober::observe`] seeds the estimate with a round trip measured elsewhere (the
/// monitor passes on what its sweep rounds measured). A fixed timeout is used as given.
pub struct IcmpProber {
    cfg: IcmpConfig,
    timers: Mutex<HostTimers>,
    v4: Result<Family, String>,
    v6: Result<Family, String>,
    ident_base: u16,
    counter: AtomicU32,
    payload: Vec<u8>,
}

impl std::fmt::Debug for IcmpProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcmpProber")
            .field("cfg", &self.cfg)
            .field("v4_raw", &self.v4.as_ref().map(|f| f.raw))
            .field("v6_raw", &self.v6.as_ref().map(|f| f.raw))
            .field("recv_buffer_v4", &self.recv_buffer_bytes())
            .finish()
    }
}

fn open_family(kind: ICMP, cfg: &IcmpConfig) -> Result<Family, String> {
    // surge-ping uses its own socket2 version; socket types are passed as their C values.
    let hint = match cfg.sock_type {
        IcmpSocketKind::Raw => SOCK_RAW,
        IcmpSocketKind::Auto | IcmpSocketKind::Datagram => SOCK_DGRAM,
    };
    let config = Config::builder()
        .kind(kind)
        .sock_type_hint(hint.into())
        .build();
    let client = Client::new(&config).map_err(|e| e.to_string())?;
    let socket = client.get_socket();
    let raw = i32::from(socket.get_type()) == SOCK_RAW;
    match (cfg.sock_type, raw) {
        (IcmpSocketKind::Raw, false) => return Err("no raw ICMP socket allowed".into()),
        (IcmpSocketKind::Datagram, true) => {
            return Err("unprivileged ICMP sockets are not allowed \
                        (net.ipv4.ping_group_range)"
                .into())
        }
        _ => {}
    }
    let fd = socket.get_native_sock();
    if let Some(bytes) = cfg.recv_buffer_bytes {
        enlarge_recv_buffer(fd, bytes);
    }
    let mut replies_only = !raw;
    #[cfg(target_os = "linux")]
    if raw && cfg.filter_echo_replies {
        match linux::only_echo_replies(fd, kind) {
            Ok(()) => replies_only = true,
            Err(e) => tracing::debug!("cannot install the ICMP filter: {e}"),
        }
    }
    // SAFETY: the descriptor belongs to `client`'s socket, which `client` keeps open for the
    // whole lifetime of this borrow (the borrow ends within this function).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let recv_buffer = socket2::SockRef::from(&borrowed).recv_buffer_size().ok();
    tracing::debug!(?kind, raw, ?recv_buffer, "opened ICMP socket");
    Ok(Family {
        client,
        raw,
        replies_only,
        recv_buffer,
    })
}

/// Requests a receive buffer of `bytes`: first with `SO_RCVBUFFORCE` (root or
/// `CAP_NET_ADMIN`, not capped by `net.core.rmem_max`), else with `SO_RCVBUF`.
pub(super) fn enlarge_recv_buffer(fd: std::os::fd::RawFd, bytes: usize) {
    #[cfg(target_os = "linux")]
    match linux::force_recv_buffer(fd, bytes) {
        Ok(()) => return,
        Err(e) => tracing::debug!("SO_RCVBUFFORCE refused ({e}); using SO_RCVBUF"),
    }
    // SAFETY: as in `open_family`: the descriptor stays open while it is borrowed here.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if let Err(e) = socket2::SockRef::from(&borrowed).set_recv_buffer_size(bytes) {
        tracing::warn!("cannot enlarge the ICMP receive buffer to {bytes} bytes: {e}");
    }
}

#[cfg(target_os = "linux")]
pub(super) use linux::only_echo_replies;

#[cfg(target_os = "linux")]
mod linux {
    //! Socket options that neither socket2 nor surge-ping expose.
    use std::io;
    use std::os::fd::RawFd;

    use surge_ping::ICMP;

    /// `SO_RCVBUFFORCE` from the generic `asm/socket.h` (mips, sparc, parisc and alpha use
    /// other numbers; there the call fails and `SO_RCVBUF` is used).
    const SO_RCVBUFFORCE: libc::c_int = 33;
    /// `ICMP_FILTER` (linux/icmp.h), option of `SOL_RAW`.
    const ICMP_FILTER: libc::c_int = 1;
    /// `ICMP6_FILTER` (linux/icmpv6.h), option of `IPPROTO_ICMPV6`.
    const ICMP6_FILTER: libc::c_int = 1;
    const ICMP_ECHOREPLY: u32 = 0;
    const ICMP6_ECHO_REPLY: usize = 129;

    fn setsockopt<T>(
        fd: RawFd,
        level: libc::c_int,
        name: libc::c_int,
        value: &T,
    ) -> io::Result<()> {
        let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `value` points to a live, initialised `T` of `len` bytes for the duration
        // of the call; the kernel only reads it. An invalid `fd` makes the call fail (EBADF).
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (value as *const T).cast::<libc::c_void>(),
                len,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub(super) fn force_recv_buffer(fd: RawFd, bytes: usize) -> io::Result<()> {
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        setsockopt(fd, libc::SOL_SOCKET, SO_RCVBUFFORCE, &value)
    }

    /// Lets only echo replies into a raw ICMP socket. A raw socket otherwise receives every
    /// ICMP packet of the host, on loopback including a copy of each request it sends, which
    /// doubles the load on its receive buffer.
    pub(crate) fn only_echo_replies(fd: RawFd, kind: ICMP) -> io::Result<()> {
        match kind {
            ICMP::V4 => {
                // A set bit blocks that type.
                let mask: u32 = !(1u32 << ICMP_ECHOREPLY);
                setsockopt(fd, libc::SOL_RAW, ICMP_FILTER, &mask)
            }
            ICMP::V6 => {
                let mut filter = [u32::MAX; 8];
                filter[ICMP6_ECHO_REPLY >> 5] &= !(1u32 << (ICMP6_ECHO_REPLY & 31));
                setsockopt(fd, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &filter)
            }
        }
    }
}

impl IcmpProber {
    /// Opens the ICMP sockets (IPv4 and IPv6). Must run inside a Tokio runtime (surge-ping
    /// spawns its reply-dispatch task). Fails only when neither family can be opened; probes
    /// of a family that failed report [`ProbeResult::Error`].
    pub fn open(cfg: IcmpConfig) -> Result<IcmpProber, IcmpError> {
        let v4 = open_family(ICMP::V4, &cfg);
        let v6 = open_family(ICMP::V6, &cfg);
        if let (Err(a), Err(b)) = (&v4, &v6) {
            return Err(IcmpError::Open {
                v4: a.clone(),
                v6: b.clone(),
            });
        }
        let payload = vec![0x5a; cfg.payload_len];
        Ok(IcmpProber {
            cfg,
            timers: Mutex::new(HostTimers::default()),
            v4,
            v6,
            ident_base: rand::random(),
            counter: AtomicU32::new(0),
            payload,
        })
    }

    /// True when the IPv4 socket is a raw socket (false: datagram socket, or not open).
    pub fn is_raw(&self) -> bool {
        self.v4.as_ref().map(|f| f.raw).unwrap_or(false)
    }

    /// The receive buffer size the kernel granted to the IPv4 socket, if it is open.
    pub fn recv_buffer_bytes(&self) -> Option<usize> {
        self.v4.as_ref().ok().and_then(|f| f.recv_buffer)
    }

    /// The prober's settings.
    pub fn config(&self) -> &IcmpConfig {
        &self.cfg
    }

    fn timers(&self) -> MutexGuard<'_, HostTimers> {
        // Every critical section leaves the map consistent, so a poisoned lock is usable.
        self.timers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long the next probe of `ip` waits for its reply (see "Timeouts of single probes").
    pub fn current_timeout(&self, ip: IpAddr) -> Duration {
        match self.timers().hosts.get(&ip) {
            Some((est, unanswered)) => est.backed_off(*unanswered),
            None => RttEstimator::new(self.cfg.timeout).current(),
        }
    }

    /// Records the outcome of a probe of `ip`: a measured round trip, or `None` for no answer.
    fn record(&self, ip: IpAddr, rtt: Option<Duration>) {
        if matches!(self.cfg.timeout, IcmpTimeout::Fixed(_)) {
            return;
        }
        let mut timers = self.timers();
        let full = timers.hosts.len() >= MAX_TIMED_HOSTS;
        match (timers.hosts.get_mut(&ip), rtt) {
            (Some((est, unanswered)), Some(rtt)) => {
                est.sample(rtt);
                *unanswered = 0;
            }
            (Some((_, unanswered)), None) => *unanswered = unanswered.saturating_add(1),
            (None, Some(rtt)) if !full => {
                let mut est = RttEstimator::new(self.cfg.timeout);
                est.sample(rtt);
                timers.hosts.insert(ip, (est, 0));
            }
            // A host never measured keeps the initial timeout.
            (None, _) => {}
        }
    }
}

#[async_trait]
impl Prober for IcmpProber {
    async fn probe(&self, addr: SocketAddr) -> ProbeResult {
        let family = match addr.ip() {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => &self.v6,
        };
        let family = match family {
            Ok(f) => f,
            Err(e) => return ProbeResult::Error(format!("no ICMP socket for {addr}: {e}")),
        };
        // A unique (identifier, sequence) per probe: 2^32 probes before a pair repeats.
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let ident = PingIdentifier(self.ident_base ^ (n >> 16) as u16);
        let seq = PingSequence(n as u16);
        let mut pinger = family.client.pinger(addr.ip(), ident).await;
        pinger.timeout(self.current_timeout(addr.ip()));
        if let SocketAddr::V6(sa) = addr {
            pinger.scope_id(sa.scope_id());
        }
        match pinger.ping(seq, &self.payload).await {
            Ok((_packet, rtt)) => {
                self.record(addr.ip(), Some(rtt));
                ProbeResult::Up { rtt }
            }
            Err(SurgeError::Timeout { .. }) => {
                self.record(addr.ip(), None);
                ProbeResult::Timeout
            }
            Err(SurgeError::IOError(e)) => match e.kind() {
                std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => {
                    ProbeResult::Unreachable
                }
                // The kernel refused to queue the request (send buffer full): the probe did
                // not go out, so a retry can still answer.
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::OutOfMemory => {
                    ProbeResult::Timeout
                }
                _ => ProbeResult::Error(format!("ping {}: {e}", addr.ip())),
            },
            Err(e) => ProbeResult::Error(format!("ping {}: {e}", addr.ip())),
        }
    }

    fn name(&self) -> &'static str {
        "icmp"
    }

    fn observe(&self, addr: SocketAddr, rtt: Duration) {
        self.record(addr.ip(), Some(rtt));
    }

    /// Bounded by the granted receive buffer, so that a reply to every probe in flight fits
    /// in it: 1 KiB per probe when only echo replies reach the socket (a reply is charged about
    /// 830 bytes), 2 KiB when a raw socket also sees other ICMP (on loopback, a copy of each
    /// request); between 64 and 16384. With the default 8 MiB request (16 MiB granted) that is
    /// 16384, so silent addresses, which hold a slot for the whole timeout, do not slow a
    /// sweep of a mostly empty range more than needed.
    fn batch_icmp(&self) -> Option<super::IcmpSweepConfig> {
        Some(super::IcmpSweepConfig {
            // The engine counts late replies while it retries, so it starts lower (100 ms);
            // a fixed timeout is kept.
            timeout: match self.cfg.timeout {
                IcmpTimeout::Fixed(d) => IcmpTimeout::Fixed(d),
                IcmpTimeout::Adaptive { .. } => IcmpTimeout::DEFAULT_ADAPTIVE,
            },
            recv_buffer_bytes: self.cfg.recv_buffer_bytes,
            sock_type: self.cfg.sock_type,
            payload_len: self.cfg.payload_len,
            filter_echo_replies: self.cfg.filter_echo_replies,
            ..super::IcmpSweepConfig::default()
        })
    }

    fn suggested_window(&self) -> usize {
        let Ok(family) = &self.v4 else { return 256 };
        let per_probe = if family.replies_only { 1024 } else { 2048 };
        family
            .recv_buffer
            .map_or(256, |bytes| (bytes / per_probe).clamp(64, 16384))
    }
}
