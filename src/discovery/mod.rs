//! Host pools: CIDR ranges, probers, availability checks and re-checks with backoff.
//!
//! - [`HostPool`] turns user ranges (`10.0.0.0/24`, `fd00::/120`, `127.0.0.5:4000`, ...) into a
//!   merged, lazily iterated set of socket addresses.
//! - [`Prober`] checks one address: [`IcmpProber`] (echo via surge-ping), [`TcpProber`]
//!   (connect), [`AvailableProber`] (the target protocol's AVAILABLE handshake) and
//!   [`ScriptedProber`] (answers from a script, for tests).
//! - [`icmp_sweep`] sweeps with ICMP echo on a dedicated sender and receiver thread, with
//!   adaptive timeouts ([`IcmpTimeout`]); `taskdist discover` uses it for one-shot ICMP sweeps.
//! - [`sweep`] / [`sweep_with`] probe a pool once: a paced sliding window of probes in flight
//!   over the lazy iterator, with retries of unanswered addresses.
//! - [`Monitor`] watches a pool during a run and streams [`HostChange`]s; silent hosts are
//!   re-probed with capped exponential [`Backoff`].
//!
//! Network safety: a sweep sends probes to every address of the pool and to nothing else.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use taskdist::discovery::{sweep, HostPool, ScriptedProber, SweepConfig};
//!
//! let pool = HostPool::parse(["10.1.0.0/29"], 3001).unwrap();
//! let up = "10.1.0.3:3001".parse().unwrap();
//! let report = sweep(&pool, Arc::new(ScriptedProber::with_up([up])), &SweepConfig::default()).await;
//! assert_eq!(report.up, vec![up]);
//! assert_eq!(report.probed, 6);
//! # });
//! ```

mod backoff;
mod icmp;
mod icmp_sweep;
mod monitor;
mod pool;
mod probe;
mod sweep;

pub use backoff::Backoff;
pub use icmp::{IcmpConfig, IcmpError, IcmpProber, IcmpSocketKind};
pub use icmp_sweep::{icmp_sweep, IcmpSweepConfig, IcmpTimeout};
pub use monitor::{HostChange, HostState, Monitor, MonitorConfig, MonitorHandle};
pub use pool::{HostIter, HostPool, PoolError, DEFAULT_MAX_HOSTS};
pub use probe::{
    AvailableProber, ProbeResult, Prober, ScriptedProber, TcpProber, AVAILABLE,
    MAX_SKIPPED_FRAME_BYTES,
};
pub use sweep::{sweep, sweep_with, SweepConfig, SweepReport};
