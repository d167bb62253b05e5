//! A simulated target that speaks the target protocol and schedules jobs in virtual time.
//!
//! [`SimCluster::start`] binds one listener per simulated host on `127.0.0.x` addresses at one
//! port, so hosts look like separate machines. Each host behaves like a dom0 server of the
//! configured [`Dialect`]: one client at a time, the same replies and pushes, CLEAR/START
//! blocks in real-time modes. Jobs are scheduled for real (in the `sched` module): fixed priority and
//! EDF, releases, demands from [`model::DemandModel`], kills at criticaltime and at the next
//! period, admission test on v1 with OPTIMIZE data. [`fault::FaultConfig`] injects faults.
//!
//! ```no_run
//! # async fn demo() -> Result<(), taskdist::sim::SimError> {
//! use std::net::Ipv4Addr;
//! use taskdist::sim::{SimCluster, SimConfig};
//! let cluster = SimCluster::start(4, Ipv4Addr::new(127, 0, 0, 2), 0, SimConfig::default()).await?;
//! println!("{:?}", cluster.addrs());
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::protocol::Dialect;

pub mod fault;
pub mod model;
pub(crate) mod sched;
mod server;

pub use fault::{FaultConfig, FaultKind, FaultPlan, FaultRates};
pub use model::{BinaryModel, Demand, DemandModel};

/// How simulated time relates to wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Speed {
    /// One simulated ms per real ms; CLEAR blocks ~1 s, START blocks for the sum of offsets,
    /// events are pushed when they happen.
    RealTime,
    /// Simulated time runs this many times faster than real time (blocks shrink alike).
    Factor(f64),
    /// No waiting at all: at START every event of the task-set is computed and pushed at once;
    /// the virtual clock then jumps past the last event. CLEAR and START do not block.
    #[default]
    AsFastAsPossible,
}

/// A `--speed` value that is not a speed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("speed {0:?}: expected `fast`, `realtime` or a positive factor such as 10")]
pub struct ParseSpeedError(String);

impl std::str::FromStr for Speed {
    type Err = ParseSpeedError;

    /// The one parser of speeds (CLI `sim --speed` and `run --sim-speed`): `fast` (also `afap`,
    /// `as-fast-as-possible`) is [`Speed::AsFastAsPossible`]; `realtime` (also `real-time`)
    /// and any number equal to 1 (`1`, `1.0`) are [`Speed::RealTime`]; any other positive
    /// finite number F is [`Speed::Factor`]`(F)`. Case and surrounding blanks are ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fast" | "afap" | "as-fast-as-possible" => Ok(Speed::AsFastAsPossible),
            "realtime" | "real-time" => Ok(Speed::RealTime),
            other => match other.parse::<f64>() {
                Ok(1.0) => Ok(Speed::RealTime),
                Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
                _ => Err(ParseSpeedError(s.to_owned())),
            },
        }
    }
}

/// Settings of a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Dialect the hosts speak.
    pub dialect: Dialect,
    /// Time mode.
    pub speed: Speed,
    /// Seed of all random draws (faults, which job gets EXIT_ERROR, garbage bytes).
    pub seed: u64,
    /// Fault injection.
    pub faults: FaultConfig,
    /// Execution demand per binary.
    pub demand: DemandModel,
    /// CPU cores per host (v3: a task runs on core `coreoffset % cores`; v1/v2 use core 0).
    pub cores: u32,
    /// A task-set with more jobs in total is not started (guards memory).
    pub max_jobs_per_run: u64,
    /// Cap on SEND_DESCS/OPTIMIZE payloads; larger closes the connection.
    pub max_payload_bytes: usize,
    /// Cap on one binary image.
    pub max_binary_bytes: usize,
    /// Cap on the count of SEND_BINARIES.
    pub max_binaries: u32,
    /// Events per pushed frame (a frame of 1000 events is about 60 kB).
    pub max_frame_events: usize,
    /// Emulate the 32-bit microsecond counter: time stamps wrap at 4,294,967 ms.
    pub wrap_time_stamps: bool,
    /// How long CLEAR blocks in real-time modes (simulated time).
    pub clear_block: Duration,
}

impl Default for SimConfig {
    /// v3, as fast as possible, seed 0, no faults, default demand model, 4 cores, 1,000,000
    /// jobs per run, 16 MiB payloads, 64 MiB binaries, 1024 binaries per SEND_BINARIES,
    /// 1000 events per frame, no wrap, CLEAR blocks 1 s.
    fn default() -> Self {
        SimConfig {
            dialect: Dialect::V3,
            speed: Speed::AsFastAsPossible,
            seed: 0,
            faults: FaultConfig::default(),
            demand: DemandModel::default(),
            cores: 4,
            max_jobs_per_run: 1_000_000,
            max_payload_bytes: 16 << 20,
            max_binary_bytes: 64 << 20,
            max_binaries: 1024,
            max_frame_events: 1000,
            wrap_time_stamps: false,
            clear_block: Duration::from_secs(1),
        }
    }
}

/// Counters of one simulated host (read with [`SimCluster::stats`]).
#[derive(Debug, Default)]
pub struct HostStats {
    /// Connections served.
    pub connections: AtomicU64,
    /// STARTs received.
    pub runs: AtomicU64,
    /// Binaries received (including ignored duplicates).
    pub binaries_received: AtomicU64,
    /// Commands decoded.
    pub commands: AtomicU64,
    /// Profile frames pushed or answered.
    pub frames: AtomicU64,
    /// Events sent.
    pub events: AtomicU64,
    /// Faults injected.
    pub faults: AtomicU64,
    /// Reboots (fault or REBOOT command).
    pub reboots: AtomicU64,
}

/// A snapshot of [`HostStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStatsSnapshot {
    /// Connections served.
    pub connections: u64,
    /// STARTs received.
    pub runs: u64,
    /// Binaries received.
    pub binaries_received: u64,
    /// Commands decoded.
    pub commands: u64,
    /// Frames sent.
    pub frames: u64,
    /// Events sent.
    pub events: u64,
    /// Faults injected.
    pub faults: u64,
    /// Reboots.
    pub reboots: u64,
}

impl HostStats {
    fn snapshot(&self) -> HostStatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HostStatsSnapshot {
            connections: l(&self.connections),
            runs: l(&self.runs),
            binaries_received: l(&self.binaries_received),
            commands: l(&self.commands),
            frames: l(&self.frames),
            events: l(&self.events),
            faults: l(&self.faults),
            reboots: l(&self.reboots),
        }
    }
}

/// The simulated cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A listener could not be bound.
    #[error("cannot bind simulated host {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// No port was free on all addresses after several tries.
    #[error("no port is free on all {count} addresses from {first} after {tries} tries")]
    NoCommonPort {
        /// First address.
        first: Ipv4Addr,
        /// Number of addresses.
        count: usize,
        /// Tries made.
        tries: u32,
    },
    /// The settings cannot work.
    #[error("invalid simulator settings: {0}")]
    Invalid(String),
}

/// A set of simulated hosts serving on `127.0.0.x` addresses.
#[derive(Debug)]
pub struct SimCluster {
    addrs: Vec<SocketAddr>,
    refusing: Vec<bool>,
    stats: Vec<Arc<HostStats>>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

fn host_addr(first: Ipv4Addr, i: usize) -> Option<Ipv4Addr> {
    u32::from(first)
        .checked_add(u32::try_from(i).ok()?)
        .map(Ipv4Addr::from)
}

async fn bind_all(
    first: Ipv4Addr,
    count: usize,
    port: u16,
) -> Result<Vec<TcpListener>, (SocketAddr, std::io::Error)> {
    let mut out = Vec::with_capacity(count);
    let mut port = port;
    for i in 0..count {
        let ip = host_addr(first, i).ok_or_else(|| {
            let a = SocketAddr::V4(SocketAddrV4::new(first, port));
            (a, std::io::Error::other("address range overflows"))
        })?;
        let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
        let l = TcpListener::bind(addr).await.map_err(|e| (addr, e))?;
        if port == 0 {
            port = l.local_addr().map_err(|e| (addr, e))?.port();
        }
        out.push(l);
    }
    Ok(out)
}

impl SimCluster {
    /// Bind one listener per address `first`, `first+1`, ... at `port` (0: a port free on all
    /// of them) and start serving. Hosts that refuse connections (fault) are bound and then
    /// closed, so connections to them are refused.
    pub async fn start(
        count: usize,
        first: Ipv4Addr,
        port: u16,
        cfg: SimConfig,
    ) -> Result<SimCluster, SimError> {
        if count == 0 {
            return Err(SimError::Invalid("at least one host is needed".into()));
        }
        if let Some(p) = cfg.faults.plans.iter().find(|p| p.host >= count) {
            return Err(SimError::Invalid(format!(
                "fault {} names host {}, but the cluster has hosts 0 to {}",
                p.kind,
                p.host,
                count - 1
            )));
        }
        if let Some(p) = cfg
            .faults
            .plans
            .iter()
            .find(|p| p.kind == FaultKind::Refuse && p.pkg.is_some())
        {
            return Err(SimError::Invalid(format!(
                "fault {p}: refuse holds for the host, not for runs; expected no /pkg=NAME"
            )));
        }
        if host_addr(first, count - 1).is_none() {
            return Err(SimError::Invalid(format!(
                "{count} addresses from {first} overflow the IPv4 range"
            )));
        }
        const TRIES: u32 = 20;
        let mut listeners = None;
        for _ in 0..TRIES {
            match bind_all(first, count, port).await {
                Ok(l) => {
                    listeners = Some(l);
                    break;
                }
                Err((addr, source)) => {
                    if port != 0 || source.kind() != std::io::ErrorKind::AddrInUse {
                        return Err(SimError::Bind { addr, source });
                    }
                }
            }
        }
        let listeners = listeners.ok_or(SimError::NoCommonPort {
            first,
            count,
            tries: TRIES,
        })?;
        let cfg = Arc::new(cfg);
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut addrs = Vec::with_capacity(count);
        let mut stats = Vec::with_capacity(count);
        let mut refusing = Vec::with_capacity(count);
        for (i, l) in listeners.into_iter().enumerate() {
            let addr = l.local_addr().map_err(|e| SimError::Bind {
                addr: SocketAddr::V4(SocketAddrV4::new(first, port)),
                source: e,
            })?;
            addrs.push(addr);
            let st = Arc::new(HostStats::default());
            stats.push(st.clone());
            let mut host = server::Host::new(i, cfg.clone(), st);
            if host.refuses() {
                tracing::info!(%addr, "simulated host refuses connections");
                refusing.push(true);
                drop(l);
                continue;
            }
            refusing.push(false);
            tasks.spawn(host.run(l, cancel.child_token()));
        }
        Ok(SimCluster {
            addrs,
            refusing,
            stats,
            cancel,
            tasks,
        })
    }

    /// The hosts' addresses, in host-index order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Whether host `i` refuses connections.
    pub fn is_refusing(&self, i: usize) -> bool {
        self.refusing.get(i).copied().unwrap_or(false)
    }

    /// Counters of host `i`.
    pub fn stats(&self, i: usize) -> Option<HostStatsSnapshot> {
        self.stats.get(i).map(|s| s.snapshot())
    }

    /// Stop every host and wait for them.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::Speed;

    #[test]
    fn one_parser_for_speeds() {
        for s in ["fast", "afap", "as-fast-as-possible", " FAST "] {
            assert_eq!(s.parse::<Speed>(), Ok(Speed::AsFastAsPossible), "{s}");
        }
        // 1 means real time however it is written.
        for s in ["realtime", "real-time", "1", "1.0", "1e0"] {
            assert_eq!(s.parse::<Speed>(), Ok(Speed::RealTime), "{s}");
        }
        assert_eq!("10".parse::<Speed>(), Ok(Speed::Factor(10.0)));
        assert_eq!("0.5".parse::<Speed>(), Ok(Speed::Factor(0.5)));
        for s in ["0", "-1", "inf", "NaN", "soon", ""] {
            let e = s.parse::<Speed>().expect_err(s);
            assert!(e.to_string().contains("positive factor"), "{e}");
        }
    }
}
