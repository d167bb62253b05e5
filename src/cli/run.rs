//! `taskdist run`: distribute a spec's variants to targets and write the results.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::path::Path;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use indicatif::{HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use taskdist::discovery::HostPool;
use taskdist::distributor::{
    run_fingerprint, Distributor, DistributorError, Ledger, Metrics, ProbeKind, RangeSet,
    Selection, Workload, DEFAULT_PORT, LEDGER_FILE,
};
use taskdist::handlers::{
    ConsoleHandler, CsvHandler, EventHandler, JsonlHandler, SqliteHandler, EVENTS_FILE, JOBS_FILE,
    JSONL_FILE, SQLITE_FILE, TASKS_FILE, VARIANTS_FILE,
};
use taskdist::sim::{SimCluster, SimConfig, Speed};
use taskdist::target::{Binaries, Dialect, SessionConfig};
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

    /// Failed attempts after which a variant is recorded as bad.
    #[arg(long, default_value_t = 3)]
    pub attempts: u32,

    /// Process at most this many variants (of this shard).
    #[arg(long)]
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
    /// target, i.e. none with an open session whose last attempt succeeded: e.g. `90s`, `30m`,
    /// `2h`; `0` waits forever.
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
    match s {
        "fast" => Ok(Speed::AsFastAsPossible),
        "realtime" => Ok(Speed::RealTime),
        other => match other.parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
            _ => Err(format!(
                "{other:?}: expected fast, realtime or a positive factor such as 10"
            )),
        },
    }
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

/// Run `taskdist run`.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let spec = Spec::load(&args.taskset)?;
    let mut workload = Workload::new(spec.clone());
    workload.admission = spec.admission();
    if let Some(path) = &args.admission {
        workload.admission = Some(load_admission(path)?);
    }
    let selection = Selection {
        limit: args.limit,
        shard: args.shard,
    };
    if args.simulate.is_some() && !args.hosts.is_empty() {
        bail!("give either HOSTS or --simulate N, not both");
    }
    if args.simulate.is_none() && args.hosts.is_empty() {
        bail!("no targets: give HOSTS (addresses or CIDR ranges) or --simulate N");
    }
    if let Some(n) = args.simulate {
        if n == 0 || n > 250 {
            bail!("--simulate {n}: expected 1 to 250 simulated targets");
        }
    } else {
        // Check every host item before anything is created or sent.
        HostPool::parse(&args.hosts, args.port)?;
    }
    let binaries = match &args.binaries {
        Some(dir) => Binaries::from_dir(dir)?,
        None => Binaries::synthetic(),
    };
    let (out, resume) = match &args.resume {
        Some(dir) => (dir.clone(), true),
        None => (args.out.clone(), false),
    };
    if !resume {
        refuse_earlier_run(&out)?;
    }

    // On resume, the result files keep only rows of variants the ledger records as done.
    let done = if resume {
        let fp = run_fingerprint(&workload, selection);
        let (_, done) = Ledger::resume(&out, &fp)?;
        done
    } else {
        RangeSet::default()
    };
    let is_done = |i: u64| done.contains(i);
    if let Some(planned) = selection.planned(workload.source.variant_count()) {
        if resume && done.count() >= planned {
            eprintln!(
                "nothing to do: all {planned} variants of {} already have an outcome",
                out.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
    }

    // Simulated targets, if asked for.
    let mut cluster = None;
    let mut hosts = args.hosts.clone();
    let mut port = args.port;
    let mut session = SessionConfig::for_dialect(args.dialect);
    session.silence_margin = Duration::from_secs(args.silence);
    session.drain_window = Duration::from_millis(args.drain_window_ms);
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

    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create output directory {}", out.display()))?;
    let mut builder = Distributor::builder()
        .port(port)
        .hosts(&hosts)?
        .session(session)
        .binaries(binaries)
        .attempts(args.attempts)
        .give_up_after((!args.give_up_after.is_zero()).then_some(args.give_up_after))
        .selection(selection)
        .ledger(&out, resume)
        .command(std::env::args().collect());
    if let Some(p) = args.probe {
        builder = builder.probe(p);
    } else if cluster.is_some() {
        builder = builder.probe(ProbeKind::Tcp);
    }
    if let Some(cmd) = &args.recovery_cmd {
        builder = builder.recovery_cmd(cmd.clone());
    }
    // Each handler once, in the order given (a repeated --handler is not a second writer).
    let mut kinds: Vec<HandlerKind> = Vec::new();
    for k in &args.handlers {
        if !kinds.contains(k) {
            kinds.push(*k);
        }
    }
    for kind in &kinds {
        let h: Box<dyn EventHandler> = match (kind, resume) {
            (HandlerKind::Csv, false) => Box::new(CsvHandler::create(&out)?),
            (HandlerKind::Csv, true) => Box::new(CsvHandler::resume(&out, &is_done)?),
            (HandlerKind::Jsonl, false) => Box::new(JsonlHandler::create(out.join(JSONL_FILE))?),
            (HandlerKind::Jsonl, true) => {
                Box::new(JsonlHandler::resume(out.join(JSONL_FILE), &is_done)?)
            }
            (HandlerKind::Sqlite, false) => Box::new(SqliteHandler::create(out.join(SQLITE_FILE))?),
            (HandlerKind::Sqlite, true) => {
                Box::new(SqliteHandler::resume(out.join(SQLITE_FILE), &is_done)?)
            }
            (HandlerKind::Console, _) => Box::new(ConsoleHandler::stderr()),
        };
        builder = builder.boxed_handler(h);
    }
    let mut d = builder.build()?;
    d.start(workload).await?;
    if resume {
        tracing::info!(
            "resuming {}: {} variants already have an outcome",
            out.display(),
            done.count()
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
    let metrics_file = out.join("metrics.json");
    let json = serde_json::to_string_pretty(&snapshot).context("cannot encode the metrics")?;
    std::fs::write(&metrics_file, json + "\n")
        .with_context(|| format!("cannot write {}", metrics_file.display()))?;
    if verbose {
        if !snapshot.targets.is_empty() {
            if kinds.contains(&HandlerKind::Console) {
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
        return Ok(ExitCode::from(4));
    }
    if totals.interrupted {
        eprintln!(
            "run interrupted: continue it with `{}`",
            resume_command(&out)
        );
        return Ok(ExitCode::from(130));
    }
    Ok(if totals.bad > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Refuse an output directory that holds results of an earlier run.
fn refuse_earlier_run(out: &Path) -> anyhow::Result<()> {
    let names = [
        LEDGER_FILE,
        EVENTS_FILE,
        VARIANTS_FILE,
        JOBS_FILE,
        TASKS_FILE,
        JSONL_FILE,
        SQLITE_FILE,
    ];
    if let Some(found) = names.iter().map(|n| out.join(n)).find(|p| p.exists()) {
        bail!(
            "{} already holds results of an earlier run ({} exists): choose another --out \
             directory, or continue that run with `taskdist run TASKSET ... --resume {}`",
            out.display(),
            found.display(),
            out.display()
        );
    }
    Ok(())
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
