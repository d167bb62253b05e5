//! The lab service: one long-lived process that owns a target pool and runs the experiments
//! that people submit over HTTP (`taskdist serve`).
//!
//! - State (experiments, registered targets, tokens) lives in SQLite in the data directory;
//!   each experiment writes a result directory `DATA/experiments/ID/` with the same files and
//!   ledger as `taskdist run`. After a crash and a restart, unfinished experiments continue
//!   where they stopped, each variant still with exactly one outcome.
//! - Every request needs `Authorization: Bearer TOKEN` (the token is created on first start
//!   and kept in `DATA/token`, readable by its owner only); targets that register themselves
//!   use the enrollment token (`DATA/enroll-token`). `/healthz` and the dashboard page itself
//!   (which holds no data) need none.
//! - The HTTP API is under `/api/v1`; `/metrics` serves Prometheus' text format and
//!   `/api/v1/events` a server-sent-events stream of experiment and target changes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use taskdist::pool::{Labels, PoolConfig, TargetGroup};
//! use taskdist::protocol::Dialect;
//! use taskdist::service::{Client, Service, ServiceConfig, SubmitRequest};
//!
//! let mut pool = PoolConfig::default();
//! pool.groups.push(TargetGroup {
//!     name: "lab".into(),
//!     hosts: vec!["127.0.0.2".into()],
//!     port: 3001,
//!     dialect: Dialect::V3,
//!     labels: Labels::new(),
//!     launch: None,
//!     health: None,
//! });
//! let service = Service::start(ServiceConfig::new("lab-data", pool)).await?;
//! let client = Client::new(&format!("http://{}", service.local_addr()), service.token())?;
//! let id = client.submit(&SubmitRequest::catalog("hey")).await?.id;
//! println!("{:?}", client.experiment(id).await?.state);
//! service.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod client;
mod dashboard;
mod lab;
mod metrics;
mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use client::{Client, ClientError};
pub use store::DB_FILE;

use crate::pool::PoolConfig;
use crate::HandlerKind;

/// The admin token's file in the data directory.
pub const TOKEN_FILE: &str = "token";
/// The enrollment token's file in the data directory.
pub const ENROLL_TOKEN_FILE: &str = "enroll-token";
/// Default listening address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7410";

/// What can go wrong in the service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The data directory cannot be used.
    #[error("data directory {path}: {message}")]
    Data {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The database failed.
    #[error("state database: {0}")]
    Store(String),
    /// The listening socket cannot be opened.
    #[error("cannot listen on {addr}: {message}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
    /// The pool cannot start.
    #[error(transparent)]
    Pool(#[from] crate::DistributorError),
}

/// Settings of a [`Service`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// The data directory (database, tokens, result directories).
    pub data: PathBuf,
    /// Where the HTTP API listens (default [`DEFAULT_LISTEN`]; port 0 picks a free one).
    pub listen: SocketAddr,
    /// The pool: its groups, probing, sessions and strategy. Registered targets join it.
    pub pool: PoolConfig,
    /// Result files of each experiment (default: CSV).
    pub handlers: Vec<HandlerKind>,
    /// Largest request body, in bytes (default 1 MiB).
    pub body_limit: usize,
    /// A shared PostgreSQL store (feature `postgres`): every experiment joins the store's
    /// experiment of its spec, seed and limit, shares it with the other distributors that
    /// join it, and writes its results there; when it is complete the service exports them
    /// into its result directory. Targets are leased in the store.
    #[cfg(feature = "postgres")]
    pub store: Option<crate::cluster::PgStore>,
}

impl ServiceConfig {
    /// A service on `pool` with its data in `data`, on the default address.
    pub fn new(data: impl Into<PathBuf>, pool: PoolConfig) -> Self {
        ServiceConfig {
            data: data.into(),
            listen: DEFAULT_LISTEN.parse().expect("a valid address"),
            pool,
            handlers: vec![HandlerKind::Csv],
            body_limit: 1 << 20,
            #[cfg(feature = "postgres")]
            store: None,
        }
    }
}

/// An experiment to submit: a spec (TOML text, or a catalog name) and how to run it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The spec's TOML text (one of `spec` and `catalog`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    /// A catalog name (one of `spec` and `catalog`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    /// Its name (default: the spec's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Replaces the spec's seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Run only the first N selected variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Run only shard `K/N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Priority (default: the spec's, else 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Weight among equal priorities (default: the spec's, else 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Label requirements `KEY=VALUE`, `KEY>=N`, ... (added to the spec's `[requires]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Admission-control data as TOML (`goal`, `query_interval_ms`), as in `--admission`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<String>,
    /// Attempts per variant before it is bad (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

impl SubmitRequest {
    /// A request for the catalog spec `name` with every option at its default.
    pub fn catalog(name: &str) -> Self {
        SubmitRequest {
            catalog: Some(name.to_owned()),
            ..SubmitRequest::default()
        }
    }

    /// A request for a spec given as TOML text.
    pub fn spec_text(text: &str) -> Self {
        SubmitRequest {
            spec: Some(text.to_owned()),
            ..SubmitRequest::default()
        }
    }
}

/// Where an experiment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExperimentState {
    /// Its variants are being run.
    Running,
    /// No new variants start until it is resumed.
    Paused,
    /// Every selected variant has an outcome.
    Done,
    /// Cancelled by a user; its results so far stay.
    Cancelled,
    /// Stopped by an error (see its `error`).
    Failed,
}

impl ExperimentState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentState::Running => "running",
            ExperimentState::Paused => "paused",
            ExperimentState::Done => "done",
            ExperimentState::Cancelled => "cancelled",
            ExperimentState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => ExperimentState::Running,
            "paused" => ExperimentState::Paused,
            "done" => ExperimentState::Done,
            "cancelled" => ExperimentState::Cancelled,
            "failed" => ExperimentState::Failed,
            _ => return None,
        })
    }

    /// Whether it has ended (done, cancelled or failed).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ExperimentState::Done | ExperimentState::Cancelled | ExperimentState::Failed
        )
    }
}

impl std::fmt::Display for ExperimentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A target that registers itself with the service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetRegistration {
    /// Its IP address.
    pub address: std::net::IpAddr,
    /// Its protocol port (default 3001).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Its dialect: v1, v2 or v3 (default v3).
    #[serde(default = "default_dialect")]
    pub dialect: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, toml::Value>,
}

fn default_port() -> u16 {
    3001
}

fn default_dialect() -> String {
    "v3".into()
}

impl TargetRegistration {
    /// `ADDRESS:PORT`, the key of the registration.
    pub fn key(&self) -> String {
        SocketAddr::new(self.address, self.port).to_string()
    }
}

/// Per-target figures of one experiment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExperimentTarget {
    /// The target.
    pub target: String,
    /// Task-sets of the experiment it completed.
    pub completed: u64,
    /// Its failed attempts.
    pub failed: u64,
    /// Seconds it spent on completed task-sets.
    pub busy_s: f64,
}

/// An experiment as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExperimentView {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: ExperimentState,
    /// Why it failed.
    pub error: Option<String>,
    /// Priority.
    pub priority: i64,
    /// Weight.
    pub weight: f64,
    /// Label requirements.
    pub requires: String,
    /// The spec's seed.
    pub seed: u64,
    /// Variants selected (`None`: endless).
    pub planned: Option<u64>,
    /// Variants done (all runs of the experiment).
    pub done: u64,
    /// Bad variants.
    pub bad: u64,
    /// Variants queued now.
    pub queued: u64,
    /// Attempts running now.
    pub running: u64,
    /// Completed variants per second in the current run.
    pub rate_per_s: f64,
    /// Seconds left at the current rate.
    pub eta_s: Option<f64>,
    /// Submission time (seconds since the epoch).
    pub created_at: f64,
    /// End time.
    pub finished_at: Option<f64>,
    /// Per-target figures of the current run.
    pub targets: Vec<ExperimentTarget>,
    /// With a shared store (`taskdist serve --store`): the store's experiment id, which
    /// other distributors join and `taskdist export` reads. `done` and `bad` then count
    /// this service's outcomes while it runs, and the whole experiment's once it is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_experiment: Option<String>,
}

/// A pool target as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetView {
    /// `ADDRESS:PORT`.
    pub target: String,
    /// Its group (`registered/ADDRESS:PORT` for registered targets).
    pub group: String,
    /// State: connecting, idle, running, backoff, quarantined, drained, checking (its health
    /// check runs), unhealthy (it failed its health check; the reason is in `health` and
    /// `last_error`), closed.
    pub state: String,
    /// Why it takes no work by a user's request.
    pub hold: Option<String>,
    /// Whether it registered itself.
    pub registered: bool,
    /// Its dialect.
    pub dialect: String,
    /// Its labels.
    pub labels: BTreeMap<String, serde_json::Value>,
    /// The experiment it runs now.
    pub experiment: Option<String>,
    /// The variant it runs now.
    pub variant: Option<u64>,
    /// Task-sets completed (all experiments).
    pub completed: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Seconds spent on completed task-sets.
    pub busy_s: f64,
    /// The last failure.
    pub last_error: Option<String>,
    /// The last health check of its group's: `passed` or `failed: REASON`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

/// Answer to a submission.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Submitted {
    /// The experiment's id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Variants selected (`None`: endless).
    pub planned: Option<u64>,
}

/// Answer to a validation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Validated {
    /// The spec's name.
    pub name: String,
    /// Variants of the spec (`None`: endless).
    pub variants: Option<u64>,
    /// Variants the request selects.
    pub planned: Option<u64>,
}

/// A running service. Dropping it stops it; [`Service::shutdown`] waits for the end.
pub struct Service {
    addr: SocketAddr,
    token: String,
    enroll: String,
    lab: Arc<lab::Lab>,
    stop: CancellationToken,
    server: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("addr", &self.addr).finish()
    }
}

impl Service {
    /// Open the data directory (creating it, its database and tokens on first start),
    /// start the pool, continue every unfinished experiment and listen. Must be called
    /// within a tokio runtime.
    pub async fn start(cfg: ServiceConfig) -> Result<Service, ServiceError> {
        // The address first: a port in use stops the start before anything else happens.
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| ServiceError::Listen {
                addr: cfg.listen,
                message: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| ServiceError::Listen {
            addr: cfg.listen,
            message: e.to_string(),
        })?;
        let lab = lab::Lab::open(&cfg).await?;
        let stop = CancellationToken::new();
        let app = api::router(lab.clone(), cfg.body_limit, stop.clone());
        let stopped = stop.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                stopped.cancelled().await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        let events = lab.clone();
        let stopped = stop.clone();
        tokio::spawn(async move { events.publish_changes(stopped).await });
        Ok(Service {
            addr,
            token: lab.token().to_owned(),
            enroll: lab.enroll_token().to_owned(),
            lab,
            stop,
            server: Some(server),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token of every request.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether this start created the data directory (and its tokens).
    pub fn first_start(&self) -> bool {
        self.lab.first_start()
    }

    /// The token with which targets register.
    pub fn enrollment_token(&self) -> &str {
        &self.enroll
    }

    /// Stop listening, stop the experiments (their state stays, so the next start continues
    /// them) and close the pool.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(s) = self.server.take() {
            // Open event streams end with the stop token; the server then ends.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s).await;
        }
        self.lab.shutdown().await;
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
