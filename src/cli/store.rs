//! `taskdist run --store URL` (a shared experiment in PostgreSQL) and `taskdist export`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use taskdist::cluster::{ExperimentId, JoinOptions, PgStore, StoreError};
use taskdist::distributor::DistributorError;
use taskdist::pool::{Pool, TargetGroup};
use taskdist::protocol::SessionConfig;

use super::run::{pool_config, start_sim_groups, usage, HandlerKind, Plan, RunArgs, Watch};
use super::{EXIT_BAD, EXIT_GAVE_UP, EXIT_INTERRUPTED, EXIT_OK};

/// Connect, with the URL's problems reported as usage errors.
pub(super) async fn connect(url: &str) -> anyhow::Result<PgStore> {
    match PgStore::connect(url).await {
        Ok(s) => Ok(s),
        Err(e @ StoreError::Url { .. }) => Err(usage(e.to_string())),
        Err(e) => Err(anyhow::Error::new(e).context("cannot use the store")),
    }
}

/// `taskdist run ... --store URL`: join the shared experiment (or every experiment of an
/// experiments file) and work on it until every variant has an outcome (here or elsewhere).
/// The store's priorities rule: an experiment runs at the priority recorded by its creator,
/// so every distributor of the cluster orders the experiments alike.
pub(super) async fn run(
    args: &RunArgs,
    mut plan: Plan,
    session: SessionConfig,
    url: &str,
) -> anyhow::Result<ExitCode> {
    let id = args
        .experiment
        .as_deref()
        .map(str::parse::<ExperimentId>)
        .transpose()
        .map_err(|err| usage(format!("--experiment: {err}")))?;
    if id.is_some() && plan.experiments.len() != 1 {
        return Err(usage(
            "--experiment names one experiment; an experiments file's experiments get ids from their specs",
        ));
    }
    let store = connect(url).await?.lease(args.lease);
    let mut joined = Vec::new();
    for e in &plan.experiments {
        let j = store
            .join(
                &e.workload,
                e.selection,
                JoinOptions {
                    id: id.clone(),
                    name: Some(e.name.clone()),
                    priority: e.priority,
                    dialect: args.dialect.to_string(),
                    command: std::env::args().collect(),
                },
            )
            .await
            .map_err(|err| match err {
                StoreError::Mismatch { .. } | StoreError::Invalid(_) => {
                    usage(format!("experiment {}: {err}", e.name))
                }
                other => anyhow::Error::new(other),
            })?;
        println!("experiment {}", j.id());
        tracing::info!(
            "{} experiment {} ({}) in {url_shown} as {}, priority {}",
            if j.created() { "created" } else { "joined" },
            j.id(),
            e.name,
            store.owner(),
            j.priority(),
            url_shown = redact(url)
        );
        if j.priority() != e.priority {
            tracing::warn!(
                "experiment {} ({}): runs at priority {} as recorded in the store by its creator, not {}",
                j.id(),
                e.name,
                j.priority(),
                e.priority
            );
        }
        joined.push(j);
    }

    let clusters;
    let mut groups: Vec<TargetGroup> = plan.pool_file.take().map(|f| f.groups).unwrap_or_default();
    if !args.hosts.is_empty() {
        groups.push(TargetGroup::new(
            "hosts",
            args.hosts.clone(),
            args.port,
            args.dialect,
        ));
    }
    super::run::lifecycle_groups(&args.lifecycle, args.port, args.dialect, &mut groups)?;
    let (c, g) = start_sim_groups(&plan.sim_groups, args.dialect, args.sim_speed).await?;
    clusters = c;
    groups.extend(g);
    // The results go to the store; the health checks of this machine's targets go to --out.
    let (mut pool_cfg, lifecycle) = pool_config(
        args,
        groups,
        !clusters.is_empty(),
        session,
        plan.strategy.clone(),
        &args.out,
    );
    pool_cfg.target_leases = Some(store.target_leases());
    let pool = Pool::start(pool_cfg)?;
    let mut handles = Vec::new();
    for (e, j) in plan.experiments.iter().zip(&joined) {
        // The store's priority (its creator's) rules across the cluster.
        let exp = e
            .experiment(args, &plan.binaries)
            .priority(j.priority())
            .store(j.clone());
        handles.push(pool.submit(exp)?);
    }

    let watch = Watch::start(&handles);
    let results = futures::future::join_all(handles.into_iter().map(|h| h.close())).await;
    let (metrics, verbose) = watch.finish().await;
    let life = pool.shutdown().await;
    for c in clusters {
        c.shutdown().await;
    }
    if let Some(line) = lifecycle.line(&life).filter(|_| verbose) {
        eprintln!("{line}");
    }
    let mut code = EXIT_OK;
    for (((result, j), m), e) in results
        .into_iter()
        .zip(&joined)
        .zip(&metrics)
        .zip(&plan.experiments)
    {
        let exp_id = j.id();
        let here = m.snapshot();
        let status = store.status(exp_id).await;
        if verbose {
            eprintln!(
                "this process, experiment {exp_id}: {} done, {} bad, {} results dropped (their chunks were taken over)",
                here.done,
                here.bad,
                j.rejected(),
            );
            match &status {
                Ok(s) => eprintln!(
                    "experiment {exp_id} ({}): {} done, {} bad of {}{}, by {} distributor(s)",
                    e.name,
                    s.done,
                    s.bad,
                    s.planned
                        .map_or("an endless space".to_owned(), |p| p.to_string()),
                    if s.complete { ", complete" } else { "" },
                    s.distributors
                ),
                Err(err) => eprintln!("experiment {exp_id}: status unavailable: {err}"),
            }
        }
        let this = match result {
            Ok(t) if t.interrupted => {
                eprintln!(
                    "interrupted: this process left experiment {exp_id}; run the same command again to rejoin it"
                );
                EXIT_INTERRUPTED
            }
            Ok(_) => {
                if status.map(|s| s.bad > 0).unwrap_or(false) {
                    EXIT_BAD
                } else {
                    EXIT_OK
                }
            }
            Err(DistributorError::GaveUp { waited }) => {
                eprintln!(
                    "gave up: no usable target for {} s (--give-up-after); run the same command again to rejoin {exp_id}",
                    waited.as_secs()
                );
                EXIT_GAVE_UP
            }
            Err(err) => return Err(err.into()),
        };
        code = worse(code, this);
    }
    if verbose {
        eprintln!("{} database round trips", store.round_trips());
    }
    Ok(ExitCode::from(code))
}

/// The exit code that says more: interrupted, then gave up, then bad, then ok.
fn worse(a: u8, b: u8) -> u8 {
    let rank = |c: u8| match c {
        EXIT_INTERRUPTED => 3,
        EXIT_GAVE_UP => 2,
        EXIT_BAD => 1,
        _ => 0,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

fn redact(url: &str) -> String {
    match url
        .split_once("://")
        .and_then(|(s, r)| r.split_once('@').map(|(a, h)| (s, a, h)))
    {
        Some((scheme, auth, host)) if auth.contains(':') => {
            format!(
                "{scheme}://{}:***@{host}",
                auth.split(':').next().unwrap_or("")
            )
        }
        _ => url.to_owned(),
    }
}

/// Write a shared experiment's results from the store as a local run's files.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  taskdist export --store postgres://taskdist@127.0.0.1/lab --experiment hey-0123456789abcdef --out results"
)]
pub struct ExportArgs {
    /// The store (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`)
    #[arg(
        long,
        value_name = "URL",
        env = "TASKDIST_STORE",
        hide_env_values = true
    )]
    pub store: String,

    /// The experiment's id (as printed by `taskdist run --store`)
    #[arg(long, value_name = "ID")]
    pub experiment: String,

    /// Directory to write; must not hold a run yet
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Result files to write (repeatable)
    #[arg(long = "handler", value_enum, default_values_t = [HandlerKind::Csv])]
    pub handlers: Vec<HandlerKind>,
}

/// Run `taskdist export`.
pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let id: ExperimentId = args
        .experiment
        .parse()
        .map_err(|e: StoreError| usage(format!("--experiment: {e}")))?;
    let kinds: Vec<taskdist::HandlerKind> = args
        .handlers
        .iter()
        .filter(|&&k| k != HandlerKind::Console)
        .map(|&k| k.into())
        .collect();
    if kinds.is_empty() {
        return Err(usage(
            "--handler: give at least one file kind (csv, jsonl or sqlite)",
        ));
    }
    let store = connect(&args.store).await?;
    let s = store
        .export(&id, &args.out, &kinds)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => usage(e.to_string()),
            other => anyhow::Error::new(other),
        })
        .with_context(|| format!("export of {id} to {}", args.out.display()))?;
    eprintln!(
        "{} done, {} bad of {} written to {}",
        s.done,
        s.bad,
        s.planned
            .map_or("an endless space".to_owned(), |p| p.to_string()),
        args.out.display()
    );
    Ok(ExitCode::from(EXIT_OK))
}
