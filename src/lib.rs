//! # taskdist
//!
//! Distribute real-time task-set variants to Genode targets (or to the built-in simulated
//! targets) and collect every job event.
//!
//! Module map:
//! - [`discovery`]: host pools from CIDR ranges, probing, re-checks with backoff.
//! - [`protocol`]: the target wire protocol (codec, XML, sessions).
//! - [`sim`]: a simulated target speaking the same protocol.
//! - [`distributor`]: one experiment's run: queue, requeue, ledger, handler fan-out.
//! - [`pool`]: a target pool shared by many experiments: labels, priorities, strategies.
//! - [`report`]: HTML/SVG reports and per-variant views of a result directory.

#![warn(missing_docs)]

#[cfg(feature = "postgres")]
pub mod cluster;
pub mod discovery;
pub mod distributor;
pub mod pool;
pub mod protocol;
pub mod report;
#[cfg(feature = "service")]
pub mod service;
pub mod sim;
mod time;

mod result_dir;
pub use result_dir::{
    HandlerKind, ResultDir, ResultDirError, ResumeOptions, LOCK_FILE, METRICS_FILE,
};

/// The README's Rust examples, compiled (and, unless marked `no_run`, run) by
/// `cargo test --doc`, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use distributor::{Distributor, DistributorBuilder, DistributorError};
pub use taskdist_handlers as handlers;
pub use taskdist_tasksets as tasksets;
pub use taskdist_tasksets::{AdmissionControl, Goal, Task, TaskSet};
