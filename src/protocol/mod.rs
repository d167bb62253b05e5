//! The target wire protocol (see `PROTOCOL.md`): a byte codec ([`frame`]), the XML documents
//! ([`xml`]), and a client [`Session`] over tokio TCP that drives one target.
//!
//! ```no_run
//! # async fn demo() -> Result<(), taskdist::protocol::TargetError> {
//! use std::collections::HashSet;
//! use taskdist::protocol::{Binaries, Session, SessionConfig};
//! use taskdist::{Task, TaskSet};
//! use tokio_util::sync::CancellationToken;
//!
//! let set = TaskSet::new(vec![Task::new(0, "hey")]).unwrap();
//! let mut session = Session::connect("127.0.0.2:3001".parse().unwrap(), SessionConfig::default()).await?;
//! let mut sent = HashSet::new();
//! let run = session
//!     .run_taskset(&set, None, &Binaries::synthetic(), &mut sent, &mut |_live| {}, &CancellationToken::new())
//!     .await?;
//! println!("{} events", run.events.len());
//! # Ok(()) }
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub mod binaries;
pub mod error;
pub mod frame;
mod session;
pub mod xml;

pub use binaries::{Binaries, BinariesError};
pub use error::{ErrorKind, TargetError};
pub use session::{
    attempt_limit, event_budget, probe_available, silence_limit, Session, TaskCount, TasksetRun,
};

/// Default TCP port of a target's dom0 server.
pub const DEFAULT_PORT: u16 = 3001;

/// The server generation a target runs (PROTOCOL.md, table of dialects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Dialect {
    /// dom0-HW master (2017): OPTIMIZE, events only logged (fetched with GET_PROFILE).
    V1,
    /// dom0-HW 1608 (2018-06): events pushed, no OPTIMIZE, no AVAILABLE.
    V2,
    /// dom0-HW 1802 (2018-10): v2 plus AVAILABLE; admission control off.
    #[default]
    V3,
}

impl Dialect {
    /// Whether the server answers AVAILABLE with an echo.
    pub fn has_available(self) -> bool {
        self == Dialect::V3
    }

    /// Whether the server takes OPTIMIZE (admission-control data).
    pub fn has_optimize(self) -> bool {
        self == Dialect::V1
    }

    /// Whether the server pushes profile frames after job exits (else poll GET_PROFILE).
    pub fn pushes_events(self) -> bool {
        self != Dialect::V1
    }

    /// The lowercase name (`v1`, `v2`, `v3`).
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::V1 => "v1",
            Dialect::V2 => "v2",
            Dialect::V3 => "v3",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dialect name that is not `v1`, `v2` or `v3`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dialect {0:?}: expected v1, v2 or v3")]
pub struct UnknownDialect(pub String);

impl FromStr for Dialect {
    type Err = UnknownDialect;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v1" | "1" => Ok(Dialect::V1),
            "v2" | "2" => Ok(Dialect::V2),
            "v3" | "3" => Ok(Dialect::V3),
            _ => Err(UnknownDialect(s.to_owned())),
        }
    }
}

/// Settings of a [`Session`]. Every wait of a session is bounded by one of these.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Protocol dialect of the target.
    pub dialect: Dialect,
    /// Limit for the TCP connect.
    pub connect_timeout: Duration,
    /// Limit for a reply (AVAILABLE echo, GO_SEND). Must cover CLEAR's ~1 s block on real
    /// targets, since the echo that fences CLEAR comes after it.
    pub reply_timeout: Duration,
    /// v1/v2 targets that do not answer GET_LIVE only: how long to collect frames after
    /// CLEAR. v3 fences CLEAR with AVAILABLE, and v1/v2 with GET_LIVE, whose document cannot
    /// be mistaken for a push; neither waits for this.
    pub drain_window: Duration,
    /// v3: after this long without a frame during a run, send AVAILABLE on the session's
    /// connection and expect the echo within `reply_timeout`.
    pub liveness_interval: Duration,
    /// Cap on announced frame sizes; larger is a protocol violation.
    pub max_frame_bytes: usize,
    /// Added to the silence limit and to the attempt's hard limit, both derived from the
    /// task-set (see [`silence_limit`] and [`attempt_limit`]).
    pub silence_margin: Duration,
    /// Most events one attempt may hold; a task-set whose [`event_budget`] is larger is
    /// refused as invalid before anything is sent (bounds the memory of an attempt).
    pub max_events: u64,
    /// v1 only: how long to wait for a GET_PROFILE answer before asking again (the server
    /// answers nothing when no events are pending).
    pub poll_interval: Duration,
}

impl Default for SessionConfig {
    /// v3, connect 5 s, reply 5 s, drain 1.5 s, liveness 10 s, 256 KiB frames, margin 10 s,
    /// 4,000,000 events per attempt, poll 200 ms.
    fn default() -> Self {
        SessionConfig {
            dialect: Dialect::V3,
            connect_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(5),
            drain_window: Duration::from_millis(1500),
            liveness_interval: Duration::from_secs(10),
            max_frame_bytes: frame::DEFAULT_MAX_FRAME_BYTES,
            silence_margin: Duration::from_secs(10),
            max_events: 4_000_000,
            poll_interval: Duration::from_millis(200),
        }
    }
}

impl SessionConfig {
    /// The default settings for a dialect.
    pub fn for_dialect(dialect: Dialect) -> Self {
        SessionConfig {
            dialect,
            ..Self::default()
        }
    }
}
