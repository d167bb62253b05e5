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
    Distributor, DistributorError, Metrics, ProbeKind, Selection, Workload, DEFAULT_PORT,
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
    /// Task-set spec: a catalog name (see `taskdist list tasksets`) or the path of a spec file
    /// (TOML).
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
    /// (instead of HOSTS).
    #[arg(long, value_name = "N")]
    pub simulate: Option<usize>,

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

    /// v1/v2 targets that do not answer GET_LIVE only: milliseconds to collect leftover
    /// events after CLEAR. Targets that answer GET_LIVE (and every v3 target) need no wait.
    #[arg(long, default_value_t = 1500, value_name = "MS")]
    pub drain_window_ms: u64,
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

fn parse_limit(s: &str) -> Result<u64, String> {
    at_least_one(s)
}

fn parse_attempts(s: &str) -> Result<u32, String> {
    let n = at_least_one(s)?;
    u32::try_from(n).map_err(|_| format!("{s}: expected at most {}", u32::MAX))
}

fn parse_shard(s: &str) -> Result<(u64, u64), String> {
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

fn parse_speed(s: &str) -> Result<Speed, String> {
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

/// Everything `taskdist run` needs, checked before the result directory is touched.
struct Plan {
    workload: Workload,
    selection: Selection,
    binaries: Binaries,
    kinds: Vec<LibHandlerKind>,
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Check every argument; nothing is written here.
fn plan(args: &RunArgs) -> anyhow::Result<Plan> {
    let spec = Spec::load(&args.taskset)?;
    let mut workload = Workload::new(spec.clone());
    workload.admission = spec.admission();
    if let Some(path) = &args.admission {
        workload.admission = Some(load_admission(path).map_err(|e| usage(format!("{e:#}")))?);
    }
    if workload.admission.is_some() && !args.dialect.has_optimize() {
        return Err(usage(format!(
            "admission-control data (from {}) needs --dialect v1; {} targets have no OPTIMIZE",
            args.admission
                .as_ref()
                .map_or_else(|| "the spec".to_owned(), |p| p.display().to_string()),
            args.dialect
        )));
    }
    if args.simulate.is_some() && !args.hosts.is_empty() {
        return Err(usage("give either HOSTS or --simulate N, not both"));
    }
    if args.simulate.is_none() && args.hosts.is_empty() {
        return Err(usage(
            "no targets: give HOSTS (addresses or CIDR ranges) or --simulate N",
        ));
    }
    if let Some(n) = args.simulate {
        if n == 0 || n > 250 {
            return Err(usage(format!(
                "--simulate {n}: expected 1 to 250 simulated targets"
            )));
        }
    } else {
        HostPool::parse(&args.hosts, args.port)?;
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
    Ok(Plan {
        workload,
        selection: Selection {
            limit: args.limit,
            shard: args.shard,
        },
        binaries,
        kinds,
    })
}

/// Run `taskdist run`.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let plan = plan(&args)?;
    let mut session = SessionConfig::for_dialect(args.dialect);
    session.silence_margin = Duration::from_secs(args.silence);
    session.drain_window = Duration::from_millis(args.drain_window_ms);

    // Simulated targets, if asked for (nothing is written for them).
    let mut cluster = None;
    let mut hosts = args.hosts.clone();
    let mut port = args.port;
    if let Some(n) = args.simulate {
        let cfg = SimConfig {
            dialect: args.dialect,
            speed: args.sim_speed,
            ..SimConfig::default()
        };
        let c = SimCluster::start(n, std::net::Ipv4Addr::new(127, 0, 0, 2), 0, cfg)
            .await
            .context("cannot start the simulated targets")?;
        hosts = c.addrs().iter().map(|a| a.to_string()).collect();
        port = c.addrs().first().map_or(port, |a| a.port());
        cluster = Some(c);
    }
    let mut builder = Distributor::builder()
        .port(port)
        .hosts(&hosts)?
        .session(session)
        .binaries(plan.binaries)
        .attempts(args.attempts)
        .give_up_after((!args.give_up_after.is_zero()).then_some(args.give_up_after))
        .selection(plan.selection)
        .command(std::env::args().collect());
    if let Some(p) = args.probe {
        builder = builder.probe(p);
    } else if cluster.is_some() {
        builder = builder.probe(ProbeKind::Tcp);
    }
    if let Some(cmd) = &args.recovery_cmd {
        builder = builder.recovery_cmd(cmd.clone());
    }

    // The result directory: locked, checked, and on resume repaired.
    let mut dir = match &args.resume {
        Some(path) => {
            let opts = if args.retry_bad {
                ResumeOptions::retry_bad()
            } else {
                ResumeOptions::default()
            };
            ResultDir::resume(path, &plan.workload, plan.selection, opts)?
        }
        None => ResultDir::create(&args.out, &plan.workload, plan.selection)?,
    };
    let out = dir.path().to_path_buf();
    if dir.is_resumed() && dir.first_missing().is_none() {
        let bad = dir.has_bad();
        eprintln!(
            "nothing to do: every selected variant of {} already has an outcome{}",
            out.display(),
            if bad {
                " (some are bad: run them again with --retry-bad)"
            } else {
                ""
            }
        );
        return Ok(ExitCode::from(if bad { EXIT_BAD } else { EXIT_OK }));
    }
    let started = async {
        let mut d = builder.result_dir(&mut dir, &plan.kinds)?.build()?;
        d.start(plan.workload).await?;
        anyhow::Ok(d)
    }
    .await;
    let mut d = match started {
        Ok(d) => d,
        Err(e) => {
            dir.abandon();
            return Err(e);
        }
    };
    dir.keep();
    if dir.is_resumed() {
        tracing::info!(
            "resuming {}: {} variants already have an outcome",
            out.display(),
            dir.outcomes().count()
        );
    }

    // Progress display, and a graceful stop on Ctrl-C or SIGTERM.
    let metrics = d.metrics_handle();
    let verbose = tracing::enabled!(tracing::Level::INFO);
    let bar = (verbose && std::io::stderr().is_terminal()).then(new_bar);
    let progress_stop = CancellationToken::new();
    let progress = tokio::spawn(show_progress(
        metrics.clone(),
        bar.clone(),
        verbose,
        progress_stop.clone(),
    ));
    let signals = tokio::spawn(stop_on_signals(d.stop_token(), bar.clone()));
    let waited = d.wait().await;
    progress_stop.cancel();
    let _ = progress.await;
    signals.abort();
    let gave_up = match waited {
        Err(DistributorError::GaveUp { waited }) => Some(waited),
        other => {
            other?;
            None
        }
    };
    let totals = d.close().await?;
    if let Some(c) = cluster {
        c.shutdown().await;
    }
    let snapshot = metrics.snapshot();
    dir.write_metrics(&snapshot)?;
    if verbose {
        if !snapshot.targets.is_empty() {
            if plan.kinds.contains(&LibHandlerKind::Console) {
                eprint!("targets:\n{}", snapshot.targets_report());
            } else {
                eprint!("{}", snapshot.report());
            }
        }
        eprintln!("results in {}", out.display());
    }
    if let Some(waited) = gave_up {
        eprintln!(
            "gave up: no usable target for {} s (--give-up-after); continue the run with `{}`",
            waited.as_secs(),
            resume_command(&out)
        );
        return Ok(ExitCode::from(EXIT_GAVE_UP));
    }
    if totals.interrupted {
        eprintln!(
            "run interrupted: continue it with `{}`",
            resume_command(&out)
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    Ok(ExitCode::from(if totals.bad > 0 || dir.has_bad() {
        EXIT_BAD
    } else {
        EXIT_OK
    }))
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

/// First Ctrl-C or SIGTERM: stop gracefully (in-flight variants are requeued and stay out of
/// the ledger). Second: abort at once; the ledger still allows a correct resume.
async fn stop_on_signals(stop: Option<CancellationToken>, bar: Option<ProgressBar>) {
    let say = |msg: &str| match &bar {
        Some(b) => b.suspend(|| eprintln!("{msg}")),
        None => eprintln!("{msg}"),
    };
    signal().await;
    say("stopping: targets stop, in-flight variants go back to the queue (again to abort)");
    if let Some(t) = stop {
        t.cancel();
    }
    signal().await;
    say("aborted");
    std::process::exit(130);
}

async fn signal() {
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

fn new_bar() -> ProgressBar {
    ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
}

async fn show_progress(
    metrics: Arc<Metrics>,
    bar: Option<ProgressBar>,
    verbose: bool,
    stop: CancellationToken,
) {
    if !verbose {
        return;
    }
    let Some(pb) = bar else {
        // Not a terminal: a plain line every 10 s.
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let s = metrics.snapshot();
            eprintln!(
                "progress: {}/{} variants, {} bad, {:.0}/s, targets {} up, {} busy, {} backoff",
                s.already_done + s.done + s.bad,
                s.planned
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "unbounded".into()),
                s.bad,
                s.rate_per_s,
                s.targets_up,
                s.targets_busy,
                s.targets_backoff
            );
        }
    };
    let bounded = metrics.snapshot().planned.is_some();
    let template = if bounded {
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} variants {msg}"
    } else {
        "{spinner} [{elapsed_precise}] {pos}/∞ variants {msg}"
    };
    pb.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    loop {
        let s = metrics.snapshot();
        let pos = s.already_done + s.done + s.bad;
        if let Some(p) = s.planned {
            pb.set_length(p);
        }
        pb.set_position(pos);
        let eta = match s.planned {
            Some(p) if s.rate_per_s > 0.0 && !stop.is_cancelled() => {
                let left = p.saturating_sub(pos) as f64 / s.rate_per_s;
                format!(", ETA {}", HumanDuration(Duration::from_secs_f64(left)))
            }
            _ => String::new(),
        };
        pb.set_message(format!(
            "{:.0}/s{eta} | targets {} up, {} busy, {} backoff | {} bad",
            s.rate_per_s, s.targets_up, s.targets_busy, s.targets_backoff, s.bad
        ));
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
