//! `taskdist serve` and the commands that talk to a running service: `submit`, `status`,
//! `pause`, `resume`, `cancel`, `targets`, `results`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::ProgressStyle;
use taskdist::discovery::HostPool;
use taskdist::distributor::{ProbeKind, DEFAULT_PORT};
use taskdist::pool::{strategy, Labels, PoolConfig, PoolFile, TargetGroup};
use taskdist::protocol::{Dialect, SessionConfig};
use taskdist::service::{
    Client, ExperimentState, ExperimentView, Service, ServiceConfig, SubmitRequest, DEFAULT_LISTEN,
    TOKEN_FILE,
};
use taskdist::sim::Speed;

use super::run::{
    lifecycle_groups, parse_attempts, parse_limit, parse_shard, parse_sim_groups, parse_speed,
    parse_strategy, parse_weight, start_sim_groups, LifecycleArgs,
};
use super::{UsageError, EXIT_BAD, EXIT_OK, EXIT_RUNTIME};

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Arguments of `taskdist serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Target hosts: addresses, host:port, or CIDR ranges (more can register over HTTP).
    #[arg(value_name = "HOSTS")]
    pub hosts: Vec<String>,
    /// Data directory: state database, tokens, and each experiment's results in
    /// DATA/experiments/ID.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Address of the HTTP API. Loopback by default; another address makes the API (with
    /// its bearer token, over plain HTTP) reachable from the network.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Pool file (TOML) with target groups, as for `taskdist run --pool`.
    #[arg(long, value_name = "FILE")]
    pub pool: Option<PathBuf>,
    /// Start simulated targets in this process: `N[:DIALECT][:KEY=VALUE,...]`, repeatable.
    #[arg(long, value_name = "N[:DIALECT][:KEY=VALUE,...]")]
    pub simulate: Vec<String>,
    /// Target TCP port for hosts given without one.
    #[arg(long, default_value_t = DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Protocol dialect of HOSTS and of simulated groups without one.
    #[arg(long, default_value = "v3", value_name = "v1|v2|v3")]
    pub dialect: Dialect,
    /// How targets are matched with variants (see `taskdist list strategies`).
    #[arg(long, default_value = strategy::DEFAULT_STRATEGY, value_parser = parse_strategy)]
    pub strategy: String,
    /// How hosts are checked (default: icmp, tcp for simulated targets).
    #[arg(long, value_enum)]
    pub probe: Option<ProbeKind>,
    /// Speed of the simulated targets: fast, realtime, or a factor.
    #[arg(long, default_value = "fast", value_name = "SPEED", value_parser = parse_speed)]
    pub sim_speed: Speed,
    /// Launched targets and health checks.
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
    /// Share every experiment with other taskdist processes through PostgreSQL
    /// (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`), as `taskdist run --store` does:
    /// results go to the database, and into DATA/experiments/ID when complete
    #[arg(
        long,
        value_name = "URL",
        env = "TASKDIST_STORE",
        hide_env_values = true
    )]
    pub store: Option<String>,
    /// With --store: how long a claimed chunk of work stays leased without renewal
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = super::run::parse_duration, requires = "store")]
    pub lease: std::time::Duration,
}

/// Where the service is and how to authenticate.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The service's address, e.g. http://127.0.0.1:7410 (default: $TASKDIST_SERVER). The
    /// token comes from $TASKDIST_TOKEN (the content of DATA/token).
    #[arg(long, env = "TASKDIST_SERVER", value_name = "URL", global = true)]
    pub server: Option<String>,
}

impl ServerArgs {
    fn client(&self) -> anyhow::Result<Client> {
        let server = self.server.as_deref().ok_or_else(|| {
            usage("no server: give --server http://HOST:PORT or set TASKDIST_SERVER")
        })?;
        let token = std::env::var("TASKDIST_TOKEN").map_err(|_| {
            usage(format!(
                "no token: set TASKDIST_TOKEN to the content of the service's DATA/{TOKEN_FILE}"
            ))
        })?;
        if token.trim().is_empty() {
            return Err(usage(
                "TASKDIST_TOKEN is empty; expected the service's token",
            ));
        }
        Client::new(server, &token).map_err(|e| usage(e.to_string()))
    }
}

/// Arguments of `taskdist submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A catalog name or a spec file (its text is sent to the service).
    #[arg(value_name = "SPEC")]
    pub spec: String,
    /// Name of the experiment (default: the spec's).
    #[arg(long)]
    pub name: Option<String>,
    /// Priority: higher runs first.
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i64>,
    /// Weight among experiments of the same priority.
    #[arg(long, value_parser = parse_weight)]
    pub weight: Option<f64>,
    /// Run only on targets whose labels satisfy this (repeatable).
    #[arg(long = "require", value_name = "KEY=VALUE")]
    pub require: Vec<String>,
    /// Replace the spec's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run only the first N selected variants.
    #[arg(long, value_parser = parse_limit)]
    pub limit: Option<u64>,
    /// Run only shard K of N.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<(u64, u64)>,
    /// Attempts before a variant can be bad.
    #[arg(long, value_parser = parse_attempts)]
    pub attempts: Option<u32>,
    /// Admission-control data: TOML file with goal and query_interval_ms (v1 targets).
    #[arg(long, value_name = "FILE")]
    pub admission: Option<PathBuf>,
    /// Only check the spec and options: print the variant count, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `taskdist status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One experiment (default: a table of all).
    pub id: Option<u64>,
    /// Follow until the experiment ends (a progress bar), or refresh the table.
    #[arg(long)]
    pub watch: bool,
    /// Print JSON instead.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `taskdist pause|resume|cancel`.
#[derive(Debug, Args)]
pub struct ActArgs {
    /// The experiment.
    pub id: u64,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `taskdist targets`.
#[derive(Debug, Args)]
pub struct TargetsArgs {
    /// Drain a target (ADDRESS:PORT): it finishes its variant, then takes no more work.
    #[arg(long, value_name = "ADDR:PORT", group = "action")]
    pub drain: Option<String>,
    /// Take a target out of service at once (its variant is requeued).
    #[arg(long, value_name = "ADDR:PORT", group = "action")]
    pub quarantine: Option<String>,
    /// Why, with --quarantine.
    #[arg(long, requires = "quarantine")]
    pub reason: Option<String>,
    /// End a drain or quarantine.
    #[arg(long, value_name = "ADDR:PORT", group = "action")]
    pub release: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `taskdist results`.
#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// The experiment.
    pub id: u64,
    /// Directory to write the files to (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Run `taskdist serve` until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let sim_groups = parse_sim_groups(&args.simulate)?;
    let mut groups: Vec<TargetGroup> = match &args.pool {
        Some(p) => PoolFile::load(p).map_err(|e| usage(e.to_string()))?.groups,
        None => Vec::new(),
    };
    if !args.hosts.is_empty() {
        HostPool::parse(&args.hosts, args.port)?;
        groups.push(TargetGroup {
            name: "hosts".into(),
            hosts: args.hosts.clone(),
            port: args.port,
            dialect: args.dialect,
            labels: Labels::new(),
            launch: None,
            health: None,
        });
    }
    lifecycle_groups(&args.lifecycle, args.port, args.dialect, &mut Vec::new())?;
    let (clusters, sims) = start_sim_groups(&sim_groups, args.dialect, args.sim_speed).await?;
    groups.extend(sims);
    if let Err(e) = lifecycle_groups(&args.lifecycle, args.port, args.dialect, &mut groups) {
        for c in clusters {
            c.shutdown().await;
        }
        return Err(e);
    }
    let no_targets = groups.is_empty();
    // Only launched groups: nothing to probe but their instances, which are reached by TCP.
    let launched_only = !no_targets && groups.iter().all(|g| g.launch.is_some());
    let mut pool = PoolConfig::default();
    pool.groups = groups;
    pool.session = SessionConfig::for_dialect(args.dialect);
    pool.strategy = strategy::by_name(&args.strategy).map_err(|e| usage(e.to_string()))?;
    pool.probe = match args.probe {
        Some(p) => p,
        None if !clusters.is_empty() || launched_only => ProbeKind::Tcp,
        None => ProbeKind::default(),
    };
    if pool.groups.iter().any(|g| g.health.is_some()) {
        pool.health_log = Some(args.data.join("health").join("checks.jsonl"));
    }
    let mut cfg = ServiceConfig::new(&args.data, pool);
    cfg.listen = args.listen;
    if let Some(url) = &args.store {
        cfg.store = Some(super::store::connect(url).await?.lease(args.lease));
    }
    let service = Service::start(cfg).await.with_context(|| {
        format!(
            "cannot start the service with data in {}",
            args.data.display()
        )
    })?;
    let addr = service.local_addr();
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "listening on {addr}, reachable from the network: requests carry the token in \
             plain HTTP; put the service behind TLS or an SSH tunnel on untrusted networks"
        );
    }
    eprintln!("taskdist service on http://{addr}");
    let (token, enroll) = (
        args.data.join(TOKEN_FILE),
        args.data.join(taskdist::service::ENROLL_TOKEN_FILE),
    );
    if service.first_start() {
        // Printed once, when made; later starts name the files (logs keep no token).
        eprintln!("  token: {} (in {})", service.token(), token.display());
        eprintln!(
            "  enrollment token for targets: {} (in {})",
            service.enrollment_token(),
            enroll.display()
        );
        eprintln!("  dashboard: http://{addr}/#token={}", service.token());
    } else {
        eprintln!(
            "  token in {}, enrollment token in {}",
            token.display(),
            enroll.display()
        );
        eprintln!(
            "  dashboard: http://{addr}/#token=$(cat {})",
            token.display()
        );
    }
    eprintln!(
        "  client: export TASKDIST_SERVER=http://{addr} TASKDIST_TOKEN=$(cat {})",
        args.data.join(TOKEN_FILE).display()
    );
    if no_targets {
        eprintln!(
            "  no targets yet: give HOSTS, --pool or --simulate, or register targets with \
             POST /api/v1/targets and the enrollment token"
        );
    }
    super::run::signal().await;
    eprintln!("stopping: unfinished experiments continue at the next start");
    service.shutdown().await;
    for c in clusters {
        c.shutdown().await;
    }
    Ok(ExitCode::from(EXIT_OK))
}

fn status_error(e: taskdist::service::ClientError) -> anyhow::Error {
    match e.status() {
        Some(400 | 401 | 404 | 409 | 413) => usage(e.to_string()),
        _ => anyhow::Error::new(e),
    }
}

/// `taskdist submit`.
pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    // A catalog name or a spec file, as for `taskdist run`; a file is checked here first, so
    // its errors name the file, line and column.
    let mut req = if taskdist::tasksets::catalog::get(&args.spec).is_some() {
        SubmitRequest::catalog(&args.spec)
    } else {
        let spec = taskdist::tasksets::Spec::load(&args.spec)?;
        let mut r = SubmitRequest::spec_text(spec.text());
        r.name = Some(spec.name().to_owned());
        r
    };
    if args.name.is_some() {
        req.name = args.name.clone();
    }
    req.priority = args.priority;
    req.weight = args.weight;
    req.requires = args.require.clone();
    req.seed = args.seed;
    req.limit = args.limit;
    req.shard = args.shard.map(|(k, n)| format!("{k}/{n}"));
    req.attempts = args.attempts;
    if let Some(p) = &args.admission {
        req.admission = Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read admission file {}", p.display()))?,
        );
    }
    let client = args.server.client()?;
    if args.dry_run {
        let v = client.validate(&req).await.map_err(|e| match e.status() {
            Some(400) => usage(format!("{}: {e}", args.spec)),
            _ => status_error(e),
        })?;
        let count = |n: Option<u64>| n.map_or("endless".to_owned(), |n| n.to_string());
        println!(
            "{}: {} variants, {} selected",
            v.name,
            count(v.variants),
            count(v.planned)
        );
        return Ok(ExitCode::from(EXIT_OK));
    }
    let s = client.submit(&req).await.map_err(|e| match e.status() {
        Some(400) => usage(format!("{}: {e}", args.spec)),
        _ => status_error(e),
    })?;
    println!("{}", s.id);
    eprintln!(
        "experiment {} ({}): {} variants; follow it with `taskdist status {} --watch`",
        s.id,
        s.name,
        s.planned.map_or("endless".into(), |n| n.to_string()),
        s.id
    );
    Ok(ExitCode::from(EXIT_OK))
}

fn fmt_eta(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 1.0 => "0s".into(),
        Some(s) => indicatif::HumanDuration(Duration::from_secs_f64(s.min(1e9))).to_string(),
    }
}

fn table(exps: &[ExperimentView]) -> String {
    let mut out = format!(
        "{:>4}  {:<20} {:<9} {:>4} {:>12} {:>8} {:>6} {:>9}  {}\n",
        "ID", "NAME", "STATE", "PRIO", "DONE", "PLANNED", "BAD", "RATE/s", "ETA"
    );
    for e in exps {
        out.push_str(&format!(
            "{:>4}  {:<20} {:<9} {:>4} {:>12} {:>8} {:>6} {:>9.1}  {}\n",
            e.id,
            e.name.chars().take(20).collect::<String>(),
            e.state.as_str(),
            e.priority,
            e.done,
            e.planned.map_or("-".into(), |n| n.to_string()),
            e.bad,
            e.rate_per_s,
            fmt_eta(e.eta_s)
        ));
    }
    out
}

fn exit_for(e: &ExperimentView) -> u8 {
    match e.state {
        ExperimentState::Done if e.bad == 0 => EXIT_OK,
        ExperimentState::Failed => EXIT_RUNTIME,
        _ => EXIT_BAD,
    }
}

/// `taskdist status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    match (args.id, args.watch) {
        (None, false) => {
            let exps = client.experiments().await.map_err(status_error)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&exps)?);
            } else {
                print!("{}", table(&exps));
            }
        }
        (None, true) => loop {
            let exps = client.experiments().await.map_err(status_error)?;
            if std::io::stdout().is_terminal() {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", table(&exps));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = super::run::signal() => return Ok(ExitCode::from(EXIT_OK)),
            }
        },
        (Some(id), false) => {
            let e = client.experiment(id).await.map_err(status_error)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                print!("{}", table(std::slice::from_ref(&e)));
                if let Some(err) = &e.error {
                    println!("error: {err}");
                }
                for t in &e.targets {
                    println!(
                        "  {:<22} completed {:>8}  failed {:>4}  busy {:>8.1} s",
                        t.target, t.completed, t.failed, t.busy_s
                    );
                }
            }
        }
        (Some(id), true) => {
            let bar = super::run::new_bar();
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            let last = loop {
                let e = match client.experiment(id).await {
                    Ok(e) => e,
                    // The service may be restarting: keep watching.
                    Err(e @ taskdist::service::ClientError::Unreachable { .. }) => {
                        bar.set_message(format!("{e}; retrying"));
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                            _ = super::run::signal() => {
                                bar.abandon();
                                return Ok(ExitCode::from(EXIT_OK));
                            }
                        }
                    }
                    Err(e) => return Err(status_error(e)),
                };
                bar.set_prefix(format!("{} {}", e.id, e.name));
                if let Some(p) = e.planned {
                    bar.set_length(p);
                }
                bar.set_position(e.done + e.bad);
                bar.set_message(format!(
                    "{} · {:.1}/s · ETA {} · bad {}",
                    e.state,
                    e.rate_per_s,
                    fmt_eta(e.eta_s),
                    e.bad
                ));
                if !std::io::stderr().is_terminal() {
                    eprintln!(
                        "{} {}: {} {}/{} bad {} {:.1}/s",
                        e.id,
                        e.name,
                        e.state,
                        e.done,
                        e.planned.map_or("-".into(), |n| n.to_string()),
                        e.bad,
                        e.rate_per_s
                    );
                }
                if e.state.is_final() {
                    break e;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = super::run::signal() => {
                        bar.abandon();
                        return Ok(ExitCode::from(EXIT_OK));
                    }
                }
            };
            bar.finish();
            println!(
                "experiment {} {}: {} done, {} bad{}",
                last.id,
                last.state,
                last.done,
                last.bad,
                last.error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            return Ok(ExitCode::from(exit_for(&last)));
        }
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// `taskdist pause|resume|cancel ID`.
pub async fn act(args: ActArgs, action: &str) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    let e = client.act(args.id, action).await.map_err(status_error)?;
    println!("experiment {} ({}): {}", e.id, e.name, e.state);
    Ok(ExitCode::from(EXIT_OK))
}

/// `taskdist targets`.
pub async fn targets(args: TargetsArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    let action = [
        ("drain", &args.drain),
        ("quarantine", &args.quarantine),
        ("release", &args.release),
    ]
    .into_iter()
    .find_map(|(a, t)| t.as_ref().map(|t| (a, t)));
    if let Some((action, target)) = action {
        let t = client
            .target_action(target, action, args.reason.as_deref())
            .await
            .map_err(status_error)?;
        println!(
            "{}: {action} requested; now {}{}",
            t.target,
            t.state,
            t.hold.map(|h| format!(", held: {h}")).unwrap_or_default()
        );
        return Ok(ExitCode::from(EXIT_OK));
    }
    let ts = client.targets().await.map_err(status_error)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&ts)?);
        return Ok(ExitCode::from(EXIT_OK));
    }
    println!(
        "{:<22} {:<12} {:<26} {:<4} {:>9} {:>6}  {:<24} LABELS",
        "TARGET", "STATE", "GROUP", "DIAL", "COMPLETED", "FAILED", "RUNNING"
    );
    for t in ts {
        let labels: Vec<String> = t
            .labels
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) => format!("{k}={s}"),
                None => format!("{k}={v}"),
            })
            .collect();
        let running = match (&t.experiment, t.variant) {
            (Some(e), Some(v)) => format!("{e} #{v}"),
            _ => "-".into(),
        };
        println!(
            "{:<22} {:<12} {:<26} {:<4} {:>9} {:>6}  {:<24} {}",
            t.target,
            t.state,
            t.group,
            t.dialect,
            t.completed,
            t.failed,
            running,
            labels.join(",")
        );
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// `taskdist results ID --out DIR`.
pub async fn results(args: ResultsArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    let state = client
        .experiment(args.id)
        .await
        .map_err(status_error)?
        .state;
    if !state.is_final() {
        eprintln!(
            "experiment {} is {state}: its files are a snapshot of the results so far",
            args.id
        );
    }
    let files = client
        .download_results(args.id, &args.out)
        .await
        .map_err(status_error)?;
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    eprintln!(
        "{} files ({} bytes) of experiment {} in {}",
        files.len(),
        bytes,
        args.id,
        args.out.display()
    );
    Ok(ExitCode::from(EXIT_OK))
}
