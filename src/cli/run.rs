//! `taskdist run`: distribute a spec's variants to targets and write the results.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::path::Path;

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use taskdist::discovery::HostPool;
use taskdist::distributor::{
    DistributorError, Metrics, MetricsSnapshot, ProbeKind, Selection, Workload, DEFAULT_PORT,
};
use taskdist::pool::{
    strategy, AddressSource, Experiment, ExperimentHandle, HealthCheck, Labels, LaunchSpec,
    LifecycleStats, Pool, PoolConfig, PoolFile, Selector, SimGroup, StopSignal, TargetGroup,
};
use taskdist::sim::{SimCluster, SimConfig, Speed};
use taskdist::{HandlerKind as LibHandlerKind, ResultDir, ResumeOptions};

use super::{UsageError, EXIT_BAD, EXIT_GAVE_UP, EXIT_INTERRUPTED, EXIT_OK};
use taskdist::protocol::{Binaries, Dialect, SessionConfig};
use taskdist::tasksets::{AdmissionControl, Spec};
use tokio_util::sync::CancellationToken;

/// Arguments of `taskdist run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Task-set spec: a catalog name (see `taskdist list tasksets`), the path of a spec file
    /// (TOML), or an experiments file whose `[[experiment]]` tables name several specs to run
    /// at once on the same targets (results in --out DIR/NAME).
    pub taskset: String,

    /// Target hosts: addresses, host:port, or CIDR ranges such as 10.200.45.0/24 or
    /// fd00::/120. Only these addresses are probed and contacted. Leave empty with --simulate.
    pub hosts: Vec<String>,

    /// Target TCP port for hosts given without one.
    #[arg(long, default_value_t = DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Output directory for result files and the resume ledger; must not hold an earlier run.
    #[arg(
        long,
        default_value = "results",
        value_name = "DIR",
        conflicts_with = "resume"
    )]
    pub out: PathBuf,

    /// Continue the interrupted run in this directory (same spec, seed and shard), skipping
    /// variants that already have an outcome.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,

    /// With --resume: run the variants recorded as bad again (their earlier rows are
    /// replaced).
    #[arg(long, requires = "resume")]
    pub retry_bad: bool,

    /// Result handlers to write (repeatable; giving any replaces the default csv + console).
    #[arg(long = "handler", value_enum, default_values_t = [HandlerKind::Csv, HandlerKind::Console])]
    pub handlers: Vec<HandlerKind>,

    /// Admission-control data to send with every variant: an `<optimize>` XML document or a
    /// TOML file with `goal` and `query_interval_ms`. Only v1 targets accept it.
    #[arg(long, value_name = "FILE")]
    pub admission: Option<PathBuf>,

    /// Protocol dialect of the targets: v1, v2 or v3 (see `taskdist list dialects`).
    #[arg(long, default_value = "v3", value_name = "v1|v2|v3")]
    pub dialect: Dialect,

    /// Directory holding the binaries named by the tasks' `pkg` (file DIR/<pkg>). Without it,
    /// small synthetic images are sent, which only simulated targets accept.
    #[arg(long, value_name = "DIR")]
    pub binaries: Option<PathBuf>,

    /// How hosts are checked for availability before a session is opened [default: icmp, or
    /// tcp with --simulate].
    #[arg(long, value_enum)]
    pub probe: Option<ProbeKind>,

    /// Failed attempts before a variant can be recorded as bad (on at least two targets, and
    /// too many for bad luck at the run's failure rate); 3 x N failures are bad in any case.
    #[arg(long, default_value_t = 3, value_parser = parse_attempts)]
    pub attempts: u32,

    /// Process at most this many variants (of this shard).
    #[arg(long, value_parser = parse_limit)]
    pub limit: Option<u64>,

    /// Process only variants whose index % N == K, written K/N (e.g. 0/4).
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<(u64, u64)>,

    /// Start N simulated targets on 127.0.0.2, 127.0.0.3, ... in this process and use them
    /// (instead of HOSTS). Repeatable, each a group with its own dialect (default --dialect)
    /// and labels: `--simulate 4:v3:board=a --simulate 2:v1:board=b`.
    #[arg(long, value_name = "N[:DIALECT][:KEY=VALUE,...]")]
    pub simulate: Vec<String>,

    /// Pool file (TOML) listing target groups with their hosts, port, dialect and labels
    /// (see the README); used together with HOSTS and --simulate groups.
    #[arg(long, value_name = "FILE")]
    pub pool: Option<PathBuf>,

    /// How targets are matched with variants: greedy, round-robin, fastest, affinity,
    /// specialization, or several joined by commas (see `taskdist list strategies`).
    #[arg(long, default_value = strategy::DEFAULT_STRATEGY, value_parser = parse_strategy)]
    pub strategy: String,

    /// Priority of the experiment (higher first; overrides the spec's `priority`).
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i64>,

    /// Weight of the experiment among experiments of equal priority (overrides the spec's).
    #[arg(long, value_parser = parse_weight)]
    pub weight: Option<f64>,

    /// Run only on targets whose labels satisfy this, added to the spec's `[requires]`:
    /// `board=imx6`, `board=a|b`, `site!=lab1`, `cores>=2`. Repeatable (all must hold).
    #[arg(long = "require", value_name = "KEY=VALUE")]
    pub require: Vec<String>,

    /// Speed of the simulated targets: `fast` (as fast as possible), `realtime`, or a factor
    /// such as `10` (ten times real time).
    #[arg(long, default_value = "fast", value_name = "SPEED", value_parser = parse_speed)]
    pub sim_speed: Speed,

    /// Command run when a target is declared dead, e.g. to restart its QEMU; `{addr}`, `{ip}`
    /// and `{port}` are replaced.
    #[arg(long, value_name = "CMD")]
    pub recovery_cmd: Option<String>,

    /// Seconds without any sign of life before an attempt counts as timed out, on top of the
    /// time the task-set itself needs.
    #[arg(long, default_value_t = 40, value_name = "SECONDS")]
    pub silence: u64,

    /// End the run (exit code 4, with the resume command) after this long without a usable
    /// target (an open session whose last attempt succeeded, or whose current attempt is
    /// receiving events): e.g. `90s`, `30m`, `2h`; `0` waits forever.
    #[arg(long, default_value = "30m", value_name = "DURATION", value_parser = parse_duration)]
    pub give_up_after: Duration,

    /// Launched targets and health checks.
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,

    /// v1/v2 targets that do not answer GET_LIVE only: milliseconds to collect leftover
    /// events after CLEAR. Targets that answer GET_LIVE (and every v3 target) need no wait.
    #[arg(long, default_value_t = 1500, value_name = "MS")]
    pub drain_window_ms: u64,

    /// Share the experiment with other taskdist processes through PostgreSQL
    /// (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`): work is claimed in leased chunks
    /// and results go to the database instead of --out (get files with `taskdist export`).
    /// The first process creates the experiment, the others attach to it. Prints
    /// `experiment ID` at the start
    #[arg(long, value_name = "URL", env = "TASKDIST_STORE", hide_env_values = true, conflicts_with_all = ["resume", "shard"])]
    pub store: Option<String>,

    /// With --store: the experiment's id (default: derived from the spec's name and its
    /// fingerprint, so processes given the same spec, seed and --limit meet). An id that
    /// exists with another spec is refused
    #[arg(long, value_name = "ID", requires = "store")]
    pub experiment: Option<String>,

    /// With --store: how long a claimed chunk of work stays leased without renewal; a
    /// process silent for longer loses its chunks to the others
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration, requires = "store")]
    pub lease: Duration,
}

/// Launched targets and health checks (`taskdist run` and `taskdist serve`).
#[derive(Debug, Args)]
pub struct LifecycleArgs {
    /// Launch the targets instead of (or besides) addressing them: a command that starts one
    /// target, e.g. a QEMU or `taskdist sim` command line, with `{index}` (0, 1, ...), `{ip}`
    /// (--launch-ip + index) and `{port}` (--port) replaced. It runs as `sh -c 'exec CMD'`;
    /// --min to --max instances are kept, growing while work waits and every instance is busy.
    /// All are stopped when the run ends (also after Ctrl-C or when taskdist is killed).
    #[arg(long, value_name = "CMD")]
    pub launch: Option<String>,

    /// With --launch: instances kept running even without work.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub min: usize,

    /// With --launch: most instances at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub max: usize,

    /// With --launch: the IP of instance 0 (`{ip}`); instance i has this + i.
    #[arg(long, default_value = "127.0.0.2", value_name = "IP")]
    pub launch_ip: std::net::IpAddr,

    /// With --launch: how an instance's address is known: `fixed` (--launch-ip + index, at
    /// --port) or `stdout` (the first word of a line the command prints, IP:PORT or IP).
    #[arg(long, default_value = "fixed", value_name = "fixed|stdout", value_parser = parse_address_source)]
    pub launch_address: AddressSource,

    /// With --launch: how long an instance may take to answer after its start.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration)]
    pub boot_time: Duration,

    /// With --launch: an instance beyond --min without work for this long is stopped.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration)]
    pub idle_stop: Duration,

    /// With --launch: the signal that stops an instance (SIGKILL follows after 5 s).
    #[arg(long, default_value = "TERM", value_name = "SIGNAL", value_parser = parse_stop_signal)]
    pub stop_signal: StopSignal,

    /// A health check for every target of the run (pool-file groups may set their own): a
    /// spec (catalog name or file) whose first variant a target must run correctly (all jobs
    /// done, no EXIT_ERROR, no stray events) when it joins and after each recovery, before it
    /// takes work. A failing target is held out with the reason and checked again later.
    #[arg(long, value_name = "SPEC")]
    pub health_check: Option<String>,

    /// With --health-check: check again after this many task-sets on the target.
    #[arg(long, value_name = "N", requires = "health_check", value_parser = parse_limit)]
    pub health_every: Option<u64>,

    /// With --health-check: check again after this long, e.g. `10m`.
    #[arg(long, value_name = "DURATION", requires = "health_check", value_parser = parse_duration)]
    pub health_every_time: Option<Duration>,

    /// With --health-check: healthy only if every job's response time is at most this.
    #[arg(long, value_name = "MS", requires = "health_check")]
    pub health_max_response_ms: Option<u64>,
}

/// A duration such as `90s`, `30m`, `2h`, `500ms`, or a whole number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("duration {s:?}: expected a whole number with s, m, h or ms, such as 30m")
    })?;
    let unit_ms: u64 = match unit.trim() {
        "" | "s" => 1000,
        "ms" => 1,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        other => {
            return Err(format!(
                "duration {s:?}: unknown unit {other:?}; expected s, m, h or ms"
            ))
        }
    };
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

/// Result handlers selectable on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HandlerKind {
    /// events.csv, jobs.csv, variants.csv, tasks.csv and run.json in the output directory.
    Csv,
    /// results.jsonl in the output directory: one JSON object per variant.
    Jsonl,
    /// results.sqlite in the output directory.
    Sqlite,
    /// A summary on standard error at the end.
    Console,
}

impl From<HandlerKind> for LibHandlerKind {
    fn from(k: HandlerKind) -> Self {
        match k {
            HandlerKind::Csv => LibHandlerKind::Csv,
            HandlerKind::Jsonl => LibHandlerKind::Jsonl,
            HandlerKind::Sqlite => LibHandlerKind::Sqlite,
            HandlerKind::Console => LibHandlerKind::Console,
        }
    }
}

fn at_least_one(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("expected at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?}: expected a whole number, at least 1")),
    }
}

pub(crate) fn parse_limit(s: &str) -> Result<u64, String> {
    at_least_one(s)
}

pub(crate) fn parse_attempts(s: &str) -> Result<u32, String> {
    let n = at_least_one(s)?;
    u32::try_from(n).map_err(|_| format!("{s}: expected at most {}", u32::MAX))
}

pub(crate) fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let (k, n) = s
        .split_once('/')
        .ok_or_else(|| format!("expected K/N such as 0/4, found {s:?}"))?;
    let k: u64 = k
        .trim()
        .parse()
        .map_err(|_| format!("shard {s:?}: K must be a whole number"))?;
    let n: u64 = n
        .trim()
        .parse()
        .map_err(|_| format!("shard {s:?}: N must be a whole number"))?;
    if n == 0 || k >= n {
        return Err(format!("shard {s:?}: expected 0 <= K < N"));
    }
    Ok((k, n))
}

pub(crate) fn parse_strategy(s: &str) -> Result<String, String> {
    strategy::by_name(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

pub(crate) fn parse_weight(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(w) if w.is_finite() && w > 0.0 => Ok(w),
        _ => Err(format!(
            "{s:?}: expected a positive number such as 1 or 2.5"
        )),
    }
}

fn parse_address_source(s: &str) -> Result<AddressSource, String> {
    s.parse()
}

fn parse_stop_signal(s: &str) -> Result<StopSignal, String> {
    s.parse()
}

/// The `--launch` group and `--health-check` of the command line.
pub(crate) fn lifecycle_groups(
    args: &LifecycleArgs,
    port: u16,
    dialect: Dialect,
    groups: &mut Vec<TargetGroup>,
) -> anyhow::Result<()> {
    if args.launch.is_none() {
        let given = [("--min", args.min != 1), ("--max", args.max != 4)];
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            return Err(usage(format!("{flag} applies to --launch CMD")));
        }
    }
    if let Some(cmd) = &args.launch {
        let mut l = LaunchSpec::new(cmd.clone(), args.min, args.max);
        l.first_ip = args.launch_ip;
        l.address = args.launch_address;
        l.boot_time = args.boot_time;
        l.idle_stop = args.idle_stop;
        l.stop_signal = args.stop_signal;
        l.check().map_err(|e| usage(format!("--launch: {e}")))?;
        let mut g = TargetGroup::new("launched", Vec::new(), port, dialect);
        g.launch = Some(l);
        groups.push(g);
    }
    if let Some(spec) = &args.health_check {
        let mut h = HealthCheck::new(spec.clone());
        h.every = args.health_every;
        h.every_time = args.health_every_time;
        h.max_response = args.health_max_response_ms.map(Duration::from_millis);
        for g in groups.iter_mut().filter(|g| g.health.is_none()) {
            g.health = Some(h.clone());
        }
    }
    Ok(())
}

pub(crate) fn parse_speed(s: &str) -> Result<Speed, String> {
    s.parse::<Speed>().map_err(|e| e.to_string())
}

fn load_admission(path: &PathBuf) -> anyhow::Result<AdmissionControl> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read admission file {}", path.display()))?;
    if text.trim_start().starts_with('<') {
        AdmissionControl::from_xml(&text).with_context(|| {
            format!(
                "admission file {}: expected an <optimize> document",
                path.display()
            )
        })
    } else {
        toml::from_str(&text).with_context(|| {
            format!(
                "admission file {}: expected TOML with goal = \"fairness\"|\"utilization\"|\"none\" and query_interval_ms",
                path.display()
            )
        })
    }
}

/// One experiment of a `taskdist run`, checked before any result directory is touched.
pub(super) struct ExpPlan {
    pub(super) name: String,
    pub(super) workload: Workload,
    pub(super) selection: Selection,
    pub(super) priority: i64,
    pub(super) weight: f64,
    pub(super) requires: Selector,
    /// Its result directory (`--out`/`--resume`, or DIR/NAME in an experiments file).
    dir: PathBuf,
}

impl ExpPlan {
    /// The experiment to submit to the pool, with the run's options.
    pub(super) fn experiment(&self, args: &RunArgs, binaries: &Binaries) -> Experiment {
        Experiment::new(self.workload.clone())
            .name(self.name.clone())
            .priority(self.priority)
            .weight(self.weight)
            .requires(self.requires.clone())
            .selection(self.selection)
            .attempts(args.attempts)
            .give_up_after((!args.give_up_after.is_zero()).then_some(args.give_up_after))
            .binaries(binaries.clone())
            .command(std::env::args().collect())
    }
}

/// Everything `taskdist run` needs, checked before the result directory is touched.
pub(super) struct Plan {
    pub(super) experiments: Vec<ExpPlan>,
    /// Whether the experiments came from an experiments file.
    pub(super) batch: bool,
    pub(super) binaries: Binaries,
    pub(super) kinds: Vec<LibHandlerKind>,
    pub(super) sim_groups: Vec<SimGroup>,
    pub(super) pool_file: Option<PoolFile>,
    pub(super) strategy: Arc<dyn strategy::Strategy>,
}

pub(super) fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// An experiments file: several specs run at once on the same targets.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentsFile {
    experiment: Vec<ExperimentEntry>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentEntry {
    /// A catalog name or a spec file, relative to the experiments file.
    spec: String,
    name: Option<String>,
    priority: Option<i64>,
    weight: Option<f64>,
    limit: Option<u64>,
    shard: Option<String>,
    requires: Option<toml::Table>,
    admission: Option<PathBuf>,
}

/// The experiments file at `path`, if it is one (a TOML file with `[[experiment]]` tables).
fn experiments_file(path: &str) -> anyhow::Result<Option<ExperimentsFile>> {
    let p = Path::new(path);
    if !p.is_file() {
        return Ok(None);
    }
    let Ok(text) = std::fs::read_to_string(p) else {
        return Ok(None);
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return Ok(None);
    };
    if !table.contains_key("experiment") {
        return Ok(None);
    }
    let file: ExperimentsFile = toml::from_str(&text).map_err(|e| {
        usage(format!(
            "experiments file {path}: {}; expected [[experiment]] tables with spec and optional \
             name, priority, weight, limit, shard, requires, admission",
            e.message()
        ))
    })?;
    if file.experiment.is_empty() {
        return Err(usage(format!(
            "experiments file {path}: no [[experiment]] table"
        )));
    }
    Ok(Some(file))
}

fn check_admission(workload: &Workload, origin: &str, groups_v1: bool) -> anyhow::Result<()> {
    if workload.admission.is_some() && !groups_v1 {
        return Err(usage(format!(
            "admission-control data (from {origin}) needs v1 targets (--dialect v1, or a v1 group \
             in --pool or --simulate); v2 and v3 targets have no OPTIMIZE"
        )));
    }
    Ok(())
}

/// The `--simulate` groups, with at most 250 targets in all.
pub(crate) fn parse_sim_groups(texts: &[String]) -> anyhow::Result<Vec<SimGroup>> {
    let mut sim_groups = Vec::new();
    for text in texts {
        let g: SimGroup = text
            .parse()
            .map_err(|e| usage(format!("--simulate {text}: {e}")))?;
        sim_groups.push(g);
    }
    let total: usize = sim_groups.iter().map(|g| g.count).sum();
    if total > 250 {
        return Err(usage(format!(
            "--simulate: {total} simulated targets in all; expected 1 to 250"
        )));
    }
    Ok(sim_groups)
}

/// Check every argument; nothing is written here.
fn plan(args: &RunArgs) -> anyhow::Result<Plan> {
    let sim_groups = parse_sim_groups(&args.simulate)?;
    let pool_file = match &args.pool {
        Some(p) => Some(PoolFile::load(p).map_err(|e| usage(e.to_string()))?),
        None => None,
    };
    if !sim_groups.is_empty() && !args.hosts.is_empty() {
        return Err(usage("give either HOSTS or --simulate N, not both"));
    }
    if sim_groups.is_empty()
        && args.hosts.is_empty()
        && pool_file.is_none()
        && args.lifecycle.launch.is_none()
    {
        return Err(usage(
            "no targets: give HOSTS (addresses or CIDR ranges), --pool FILE, --simulate N or --launch CMD",
        ));
    }
    // The launch and health-check flags, checked before anything is written.
    lifecycle_groups(&args.lifecycle, args.port, args.dialect, &mut Vec::new())?;
    if !args.hosts.is_empty() {
        HostPool::parse(&args.hosts, args.port)?;
    }
    // Which dialects the pool will have (for admission data).
    let mut v1 = (!args.hosts.is_empty()
        || args.lifecycle.launch.is_some()
        || sim_groups.iter().any(|g| g.dialect.is_none()))
        && args.dialect.has_optimize();
    v1 |= sim_groups
        .iter()
        .any(|g| g.dialect.is_some_and(|d| d.has_optimize()));
    v1 |= pool_file
        .as_ref()
        .is_some_and(|f| f.groups.iter().any(|g| g.dialect.has_optimize()));

    let cli_requires = Selector::from_clauses(args.require.iter().map(String::as_str))
        .map_err(|e| usage(format!("--require: {e}")))?;
    let mut experiments = Vec::new();
    let batch = experiments_file(&args.taskset)?;
    let is_batch = batch.is_some();
    match batch {
        None => {
            let spec = Spec::load(&args.taskset)?;
            let mut workload = Workload::new(spec.clone());
            workload.admission = spec.admission();
            if let Some(path) = &args.admission {
                workload.admission =
                    Some(load_admission(path).map_err(|e| usage(format!("{e:#}")))?);
            }
            let origin = args
                .admission
                .as_ref()
                .map_or_else(|| "the spec".to_owned(), |p| p.display().to_string());
            check_admission(&workload, &origin, v1)?;
            let spec_requires = match spec.requires() {
                Some(t) => Selector::from_toml(t)
                    .map_err(|e| usage(format!("{}: [requires]: {e}", args.taskset)))?,
                None => Selector::any(),
            };
            experiments.push(ExpPlan {
                name: spec.name().to_owned(),
                workload,
                selection: Selection {
                    limit: args.limit,
                    shard: args.shard,
                },
                priority: args.priority.or(spec.priority()).unwrap_or(0),
                weight: args.weight.or(spec.weight()).unwrap_or(1.0),
                requires: spec_requires.and(cli_requires),
                dir: args.resume.clone().unwrap_or_else(|| args.out.clone()),
            });
        }
        Some(file) => {
            let here = Path::new(&args.taskset)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let per_experiment = [
                ("--limit", args.limit.is_some()),
                ("--shard", args.shard.is_some()),
                ("--priority", args.priority.is_some()),
                ("--weight", args.weight.is_some()),
                ("--admission", args.admission.is_some()),
            ];
            if let Some((flag, _)) = per_experiment.iter().find(|(_, given)| *given) {
                return Err(usage(format!(
                    "{flag} applies to one spec; with the experiments file {} set it per \
                     [[experiment]]",
                    args.taskset
                )));
            }
            let base = args.resume.clone().unwrap_or_else(|| args.out.clone());
            for (i, e) in file.experiment.iter().enumerate() {
                let at = format!("{} experiment {}", args.taskset, i + 1);
                let rel = here.join(&e.spec);
                let spec_ref = if rel.is_file() {
                    rel.display().to_string()
                } else {
                    e.spec.clone()
                };
                let spec = Spec::load(&spec_ref).with_context(|| at.clone())?;
                let name = e.name.clone().unwrap_or_else(|| spec.name().to_owned());
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    || name.starts_with('.')
                {
                    return Err(usage(format!(
                        "{at}: name {name:?}: expected letters, digits, '-', '_' or '.' (it names \
                         the result directory)"
                    )));
                }
                if experiments.iter().any(|x: &ExpPlan| x.name == name) {
                    return Err(usage(format!(
                        "{at}: name {name:?} is used twice; give each experiment its own name"
                    )));
                }
                let mut workload = Workload::new(spec.clone());
                workload.admission = spec.admission();
                if let Some(p) = &e.admission {
                    let p = if p.is_relative() {
                        here.join(p)
                    } else {
                        p.clone()
                    };
                    workload.admission =
                        Some(load_admission(&p).map_err(|e| usage(format!("{at}: {e:#}")))?);
                }
                check_admission(&workload, &at, v1)?;
                let shard = match &e.shard {
                    Some(s) => Some(parse_shard(s).map_err(|m| usage(format!("{at}: {m}")))?),
                    None => None,
                };
                if e.limit == Some(0) {
                    return Err(usage(format!("{at}: limit 0: expected at least 1")));
                }
                let weight = e.weight.or(spec.weight()).unwrap_or(1.0);
                if !(weight.is_finite() && weight > 0.0) {
                    return Err(usage(format!(
                        "{at}: weight {weight}: expected a positive number"
                    )));
                }
                let mut requires = match spec.requires() {
                    Some(t) => Selector::from_toml(t)
                        .map_err(|m| usage(format!("{at}: spec [requires]: {m}")))?,
                    None => Selector::any(),
                };
                if let Some(t) = &e.requires {
                    requires = requires.and(
                        Selector::from_toml(t)
                            .map_err(|m| usage(format!("{at}: requires: {m}")))?,
                    );
                }
                experiments.push(ExpPlan {
                    dir: base.join(&name),
                    name,
                    workload,
                    selection: Selection {
                        limit: e.limit,
                        shard,
                    },
                    priority: e.priority.or(spec.priority()).unwrap_or(0),
                    weight,
                    requires: requires.and(cli_requires.clone()),
                });
            }
        }
    }
    let binaries = match &args.binaries {
        Some(dir) => Binaries::from_dir(dir).map_err(|e| usage(e.to_string()))?,
        None => Binaries::synthetic(),
    };
    // Each handler once, in the order given (a repeated --handler is not a second writer).
    let mut kinds = Vec::new();
    for k in &args.handlers {
        let k = LibHandlerKind::from(*k);
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    let strategy = strategy::by_name(&args.strategy).map_err(|e| usage(e.to_string()))?;
    Ok(Plan {
        experiments,
        batch: is_batch,
        binaries,
        kinds,
        sim_groups,
        pool_file,
        strategy,
    })
}

/// An experiment with its result directory open.
struct Opened {
    plan: ExpPlan,
    dir: ResultDir,
}

/// Run `taskdist run`.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let plan = plan(&args)?;
    let mut session = SessionConfig::for_dialect(args.dialect);
    session.silence_margin = Duration::from_secs(args.silence);
    session.drain_window = Duration::from_millis(args.drain_window_ms);
    if let Some(url) = args.store.clone() {
        return super::store::run(&args, plan, session, &url).await;
    }

    // The result directories: locked, checked, and on resume repaired.
    let opts = if args.retry_bad {
        ResumeOptions::retry_bad()
    } else {
        ResumeOptions::default()
    };
    let mut opened: Vec<Opened> = Vec::new();
    let mut finished_before = Vec::new();
    for e in plan.experiments {
        let dir = if args.resume.is_some() {
            ResultDir::resume(&e.dir, &e.workload, e.selection, opts)
        } else {
            ResultDir::create(&e.dir, &e.workload, e.selection)
        };
        let dir = match dir {
            Ok(d) => d,
            Err(err) => {
                for o in opened {
                    o.dir.abandon();
                }
                return Err(err.into());
            }
        };
        if dir.is_resumed() && dir.first_missing().is_none() {
            finished_before.push((e.dir.clone(), dir.has_bad()));
            continue;
        }
        opened.push(Opened { plan: e, dir });
    }
    for (path, bad) in &finished_before {
        eprintln!(
            "nothing to do: every selected variant of {} already has an outcome{}",
            path.display(),
            if *bad {
                " (some are bad: run them again with --retry-bad)"
            } else {
                ""
            }
        );
    }
    let any_bad_before = finished_before.iter().any(|(_, bad)| *bad);
    if opened.is_empty() {
        return Ok(ExitCode::from(if any_bad_before {
            EXIT_BAD
        } else {
            EXIT_OK
        }));
    }

    // The targets: pool file groups, HOSTS, simulated groups (nothing is written for them).
    let clusters;
    let mut groups: Vec<TargetGroup> = plan.pool_file.map(|f| f.groups).unwrap_or_default();
    if !args.hosts.is_empty() {
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
    match start_sim_groups(&plan.sim_groups, args.dialect, args.sim_speed).await {
        Ok((c, g)) => {
            clusters = c;
            groups.extend(g);
        }
        Err(e) => {
            for o in opened {
                o.dir.abandon();
            }
            return Err(e);
        }
    }
    if let Err(e) = lifecycle_groups(&args.lifecycle, args.port, args.dialect, &mut groups) {
        for c in clusters {
            c.shutdown().await;
        }
        for o in opened {
            o.dir.abandon();
        }
        return Err(e);
    }
    // Kept apart from the experiments' results.
    let health_dir = args.resume.clone().unwrap_or_else(|| args.out.clone());
    let (pool_cfg, lifecycle) = pool_config(
        &args,
        groups,
        !clusters.is_empty(),
        session,
        plan.strategy,
        &health_dir,
    );
    let started = async {
        let pool = Pool::start(pool_cfg)?;
        let mut handles = Vec::new();
        for o in &mut opened {
            let exp = o
                .plan
                .experiment(&args, &plan.binaries)
                .result_dir(&mut o.dir, &plan.kinds)?;
            handles.push(pool.submit(exp)?);
        }
        anyhow::Ok((pool, handles))
    }
    .await;
    let (pool, handles) = match started {
        Ok(x) => x,
        Err(e) => {
            for o in opened {
                o.dir.abandon();
            }
            return Err(e);
        }
    };
    for o in &mut opened {
        o.dir.keep();
        if o.dir.is_resumed() {
            tracing::info!(
                "resuming {}: {} variants already have an outcome",
                o.dir.path().display(),
                o.dir.outcomes().count()
            );
        }
    }

    let watch = Watch::start(&handles);
    let mut results = Vec::new();
    for h in handles {
        results.push(h.close().await);
    }
    let (metrics, verbose) = watch.finish().await;
    let snapshot = pool.snapshot();
    let life = pool.shutdown().await;
    for c in clusters {
        c.shutdown().await;
    }
    if let Some(line) = lifecycle.line(&life).filter(|_| verbose) {
        eprintln!("{line}");
    }

    let mut gave_up = None;
    let mut interrupted = false;
    let mut bad = any_bad_before;
    let mut first_error = None;
    for ((o, r), m) in opened.iter().zip(results).zip(&metrics) {
        let snap = m.snapshot();
        o.dir.write_metrics(&snap)?;
        match r {
            Ok(totals) => {
                interrupted |= totals.interrupted;
                bad |= totals.bad > 0 || o.dir.has_bad();
            }
            Err(DistributorError::GaveUp { waited }) => gave_up = Some(waited),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        if verbose {
            report(&snap, &plan.kinds, plan.batch);
            eprintln!("results in {}", o.dir.path().display());
        }
    }
    if verbose && plan.batch {
        eprint!("targets:\n{}", pool_report(&snapshot));
    }
    if let Some(e) = first_error {
        return Err(e.into());
    }
    let out = if plan.batch {
        args.resume.clone().unwrap_or_else(|| args.out.clone())
    } else {
        opened[0].dir.path().to_path_buf()
    };
    if let Some(waited) = gave_up {
        eprintln!(
            "gave up: no usable target for {} s (--give-up-after); continue the run with `{}`",
            waited.as_secs(),
            resume_command(&out)
        );
        return Ok(ExitCode::from(EXIT_GAVE_UP));
    }
    if interrupted {
        eprintln!(
            "run interrupted: continue it with `{}`",
            resume_command(&out)
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    Ok(ExitCode::from(if bad { EXIT_BAD } else { EXIT_OK }))
}

/// Start the simulated target groups on 127.0.0.2, 127.0.0.3, ... (one address per target,
/// in the order given) and describe them as pool groups `sim-1`, `sim-2`, ...
pub(crate) async fn start_sim_groups(
    sim_groups: &[SimGroup],
    dialect: Dialect,
    speed: Speed,
) -> anyhow::Result<(Vec<SimCluster>, Vec<TargetGroup>)> {
    let mut clusters = Vec::new();
    let mut groups = Vec::new();
    let mut next_ip = std::net::Ipv4Addr::new(127, 0, 0, 2);
    for (i, g) in sim_groups.iter().enumerate() {
        let dialect = g.dialect.unwrap_or(dialect);
        let cfg = SimConfig {
            dialect,
            speed,
            ..SimConfig::default()
        };
        let started = SimCluster::start(g.count, next_ip, 0, cfg)
            .await
            .context("cannot start the simulated targets");
        let c = match started {
            Ok(c) => c,
            Err(e) => {
                for c in clusters {
                    SimCluster::shutdown(c).await;
                }
                return Err(e);
            }
        };
        next_ip = std::net::Ipv4Addr::from(u32::from(next_ip) + g.count as u32);
        groups.push(TargetGroup {
            name: format!("sim-{}", i + 1),
            hosts: c.addrs().iter().map(|a| a.to_string()).collect(),
            port: c.addrs().first().map_or(DEFAULT_PORT, |a| a.port()),
            dialect,
            labels: g.labels.clone(),
            launch: None,
            health: None,
        });
        clusters.push(c);
    }
    Ok((clusters, groups))
}

/// The pool of a `taskdist run` (local or `--store`) over its target groups: launched-only
/// pools and simulated targets are probed over TCP unless `--probe` says otherwise, and health
/// checks are logged to `HEALTH_DIR/health/checks.jsonl`.
pub(super) fn pool_config(
    args: &RunArgs,
    groups: Vec<TargetGroup>,
    simulated: bool,
    session: SessionConfig,
    strategy: Arc<dyn strategy::Strategy>,
    health_dir: &Path,
) -> (PoolConfig, LifecycleReport) {
    let report = LifecycleReport {
        launched: groups.iter().any(|g| g.launch.is_some()),
        checked: groups.iter().any(|g| g.health.is_some()),
    };
    let launched_only = groups.iter().all(|g| g.launch.is_some());
    let mut cfg = PoolConfig::default();
    cfg.groups = groups;
    cfg.session = session;
    cfg.strategy = strategy;
    cfg.recovery_cmd = args.recovery_cmd.clone();
    if report.checked {
        cfg.health_log = Some(health_dir.join("health").join("checks.jsonl"));
    }
    cfg.probe = match args.probe {
        Some(p) => p,
        None if simulated || launched_only => ProbeKind::Tcp,
        None => ProbeKind::default(),
    };
    (cfg, report)
}

/// Whether a run's pool has launched targets or health checks to report at the end.
pub(super) struct LifecycleReport {
    launched: bool,
    checked: bool,
}

impl LifecycleReport {
    /// One line on the launched targets and health checks of the run, if it had any.
    pub(super) fn line(&self, l: &LifecycleStats) -> Option<String> {
        let mut parts = Vec::new();
        if self.launched {
            parts.push(format!(
                "launched targets: {} started, at most {} at once, {} stopped when idle, {} restarted, {} failed, {} stopped in all, {} still running",
                l.launched, l.peak, l.idle_stopped, l.restarted, l.failed, l.stopped, l.running
            ));
        }
        if self.checked {
            parts.push(format!(
                "health checks: {} passed, {} failed",
                l.health_passed, l.health_failed
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// The end-of-run report of one experiment.
pub(super) fn report(s: &MetricsSnapshot, kinds: &[LibHandlerKind], batch: bool) {
    if s.targets.is_empty() {
        return;
    }
    if batch {
        eprintln!(
            "experiment {} (priority {}, weight {}): {} done, {} bad, {:.0} % of target time",
            s.name,
            s.priority,
            s.weight,
            s.done,
            s.bad,
            s.share * 100.0
        );
    }
    if kinds.contains(&LibHandlerKind::Console) && !batch {
        eprint!("targets:\n{}", s.targets_report());
    } else if !batch {
        eprint!("{}", s.report());
    }
}

/// One line per target of the pool: group, labels, totals over all experiments.
fn pool_report(s: &taskdist::pool::PoolSnapshot) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for t in &s.targets {
        let _ = writeln!(
            out,
            "  {} [{} {}{}]: {} completed, {} failed",
            t.target,
            t.group,
            t.dialect,
            if t.labels.is_empty() {
                String::new()
            } else {
                format!(" {}", t.labels)
            },
            t.stats.completed,
            t.stats.failed
        );
    }
    out
}

/// The command line of this run with `--out DIR` replaced by `--resume DIR`.
fn resume_command(out: &Path) -> String {
    let mut words = vec!["taskdist".to_owned()];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--out" || a == "--resume" {
            args.next();
        } else if !(a.starts_with("--out=") || a.starts_with("--resume=")) {
            words.push(shell_word(&a));
        }
    }
    words.push("--resume".to_owned());
    words.push(shell_word(&out.display().to_string()));
    words.join(" ")
}

fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The progress display and the graceful stop on Ctrl-C or SIGTERM while experiments run.
pub(super) struct Watch {
    metrics: Vec<Arc<Metrics>>,
    verbose: bool,
    stop: CancellationToken,
    progress: tokio::task::JoinHandle<()>,
    signals: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Show the progress of these experiments and stop them on the first signal.
    pub(super) fn start(handles: &[ExperimentHandle]) -> Watch {
        let metrics: Vec<Arc<Metrics>> = handles.iter().map(|h| h.metrics_handle()).collect();
        let verbose = tracing::enabled!(tracing::Level::INFO);
        let bar = (verbose && std::io::stderr().is_terminal()).then(new_bar);
        let stop = CancellationToken::new();
        let progress = tokio::spawn(show_progress(
            metrics.clone(),
            bar.clone(),
            verbose,
            stop.clone(),
        ));
        let stops = handles.iter().map(|h| h.stop_token()).collect();
        let signals = tokio::spawn(stop_on_signals(stops, bar));
        Watch {
            metrics,
            verbose,
            stop,
            progress,
            signals,
        }
    }

    /// Once the experiments have closed: the display ends. Returns their metrics and whether
    /// the end-of-run report is wanted.
    pub(super) async fn finish(self) -> (Vec<Arc<Metrics>>, bool) {
        self.stop.cancel();
        let _ = self.progress.await;
        self.signals.abort();
        (self.metrics, self.verbose)
    }
}

/// First Ctrl-C or SIGTERM: stop gracefully (in-flight variants are requeued and stay out of
/// the ledger). Second: abort at once; the ledger still allows a correct resume.
async fn stop_on_signals(stops: Vec<CancellationToken>, bar: Option<ProgressBar>) {
    let say = |msg: &str| match &bar {
        Some(b) => b.suspend(|| eprintln!("{msg}")),
        None => eprintln!("{msg}"),
    };
    signal().await;
    say("stopping: targets stop, in-flight variants go back to the queue (again to abort)");
    for t in stops {
        t.cancel();
    }
    signal().await;
    say("aborted");
    std::process::exit(130);
}

pub(crate) async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub(crate) fn new_bar() -> ProgressBar {
    ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
}

/// Totals over the experiments, and one short part per experiment when there are several.
fn progress_line(snaps: &[MetricsSnapshot]) -> (u64, Option<u64>, String) {
    let pos: u64 = snaps.iter().map(|s| s.already_done + s.done + s.bad).sum();
    let planned: Option<u64> = snaps.iter().map(|s| s.planned).sum();
    let rate: f64 = snaps.iter().map(|s| s.rate_per_s).sum();
    let bad: u64 = snaps.iter().map(|s| s.bad).sum();
    let first = snaps.first();
    let mut msg = format!(
        "{rate:.0}/s | targets {} up, {} busy, {} backoff | {bad} bad",
        first.map_or(0, |s| s.targets_up),
        first.map_or(0, |s| s.targets_busy),
        first.map_or(0, |s| s.targets_backoff),
    );
    if snaps.len() > 1 {
        for s in snaps {
            msg.push_str(&format!(
                " | {} {}/{} {:.0}%",
                s.name,
                s.already_done + s.done + s.bad,
                s.planned.map_or_else(|| "∞".to_owned(), |p| p.to_string()),
                s.share * 100.0
            ));
        }
    }
    (pos, planned, msg)
}

async fn show_progress(
    metrics: Vec<Arc<Metrics>>,
    bar: Option<ProgressBar>,
    verbose: bool,
    stop: CancellationToken,
) {
    if !verbose {
        return;
    }
    let snaps = || metrics.iter().map(|m| m.snapshot()).collect::<Vec<_>>();
    let Some(pb) = bar else {
        // Not a terminal: a plain line every 10 s.
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let (pos, planned, msg) = progress_line(&snaps());
            eprintln!(
                "progress: {pos}/{} variants, {msg}",
                planned.map_or_else(|| "unbounded".to_owned(), |p| p.to_string()),
            );
        }
    };
    let bounded = progress_line(&snaps()).1.is_some();
    let template = if bounded {
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} variants {msg}"
    } else {
        "{spinner} [{elapsed_precise}] {pos}/∞ variants {msg}"
    };
    pb.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    loop {
        let all = snaps();
        let (pos, planned, msg) = progress_line(&all);
        let rate: f64 = all.iter().map(|s| s.rate_per_s).sum();
        if let Some(p) = planned {
            pb.set_length(p);
        }
        pb.set_position(pos);
        let eta = match planned {
            Some(p) if rate > 0.0 && !stop.is_cancelled() => {
                let left = p.saturating_sub(pos) as f64 / rate;
                format!(", ETA {}", HumanDuration(Duration::from_secs_f64(left)))
            }
            _ => String::new(),
        };
        pb.set_message(format!("{msg}{eta}"));
        if stop.is_cancelled() {
            // Leave the last state on screen, without pretending an interrupted run finished.
            pb.abandon();
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.cancelled() => {}
        }
    }
}
