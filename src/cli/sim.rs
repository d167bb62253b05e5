//! `taskdist sim`: run simulated targets on 127.0.0.x until interrupted.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use taskdist::protocol::Dialect;
use taskdist::sim::{FaultKind, FaultPlan, SimCluster, SimConfig, Speed};

/// Arguments of `taskdist sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Number of simulated hosts.
    #[arg(long, short = 'n', default_value_t = 4)]
    pub hosts: usize,
    /// Address of the first host; the others follow (127.0.0.2, 127.0.0.3, ...).
    #[arg(long, default_value = "127.0.0.2")]
    pub first: Ipv4Addr,
    /// TCP port of every host (0: any port free on all addresses, printed at start).
    #[arg(long, short = 'p', default_value_t = 3001)]
    pub port: u16,
    /// Protocol dialect the hosts speak: v1, v2 or v3.
    #[arg(long, default_value = "v3")]
    pub dialect: Dialect,
    /// Time mode: `fast` (as fast as possible), `realtime`, or a speed-up factor like `10`.
    #[arg(long, default_value = "fast", value_parser = parse_speed)]
    pub speed: Speed,
    /// Seed of the random fault draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU cores per host (v3 places a task on core `coreoffset % cores`).
    #[arg(long, default_value_t = 4)]
    pub cores: u32,
    /// An explicit fault: HOST=KIND[@RUN][+], e.g. `2=freeze@3` (host index 2 freezes at its
    /// 4th START) or `0=exit-error@0+` (every run). Kinds: freeze, drop, garbage, oversized,
    /// slow, exit-error, reboot, refuse. Repeatable.
    #[arg(long = "fault", value_name = "HOST=KIND[@RUN][+]")]
    pub faults: Vec<FaultPlan>,
    /// A random fault rate: KIND=P, the probability per run (per host for `refuse`).
    /// Repeatable, e.g. `--fault-rate drop=0.01`.
    #[arg(long = "fault-rate", value_name = "KIND=P", value_parser = parse_rate)]
    pub fault_rates: Vec<(FaultKind, f64)>,
    /// Delay of the `slow` fault, in ms.
    #[arg(long, default_value_t = 2000)]
    pub slow_delay_ms: u64,
    /// Emulate the 32-bit time-stamp wrap at 4,294,967 ms.
    #[arg(long)]
    pub wrap_time_stamps: bool,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration_s: Option<u64>,
}

fn parse_speed(s: &str) -> Result<Speed, String> {
    Speed::from_str(s).map_err(|e| e.to_string())
}

fn parse_rate(s: &str) -> Result<(FaultKind, f64), String> {
    let (k, p) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KIND=P, got {s:?}"))?;
    let kind = k.parse::<FaultKind>().map_err(|e| e.to_string())?;
    let p: f64 = p
        .trim()
        .parse()
        .map_err(|_| format!("probability in {s:?} is not a number"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("probability in {s:?} must be within 0..=1"));
    }
    Ok((kind, p))
}

/// Run `taskdist sim`.
pub async fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = SimConfig {
        dialect: args.dialect,
        speed: args.speed,
        seed: args.seed,
        cores: args.cores,
        wrap_time_stamps: args.wrap_time_stamps,
        ..SimConfig::default()
    };
    cfg.faults.plans = args.faults;
    cfg.faults.slow_delay = Duration::from_millis(args.slow_delay_ms);
    for (k, p) in args.fault_rates {
        cfg.faults.rates.set(k, p);
    }
    let cluster = SimCluster::start(args.hosts, args.first, args.port, cfg)
        .await
        .with_context(|| {
            format!(
                "starting {} simulated hosts from {}",
                args.hosts, args.first
            )
        })?;
    for (i, a) in cluster.addrs().iter().enumerate() {
        if cluster.is_refusing(i) {
            println!("{a} refusing");
        } else {
            println!("{a}");
        }
    }
    eprintln!(
        "serving {} simulated {} hosts; Ctrl-C stops",
        cluster.addrs().len(),
        args.dialect
    );
    match args.duration_s {
        Some(s) => {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(s)) => {}
                r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            }
        }
        None => tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?,
    }
    cluster.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SimArgs,
    }

    #[test]
    fn speeds_and_rates_parse() {
        assert_eq!(parse_speed("fast"), Ok(Speed::AsFastAsPossible));
        assert_eq!(parse_speed("realtime"), Ok(Speed::RealTime));
        assert_eq!(parse_speed("10"), Ok(Speed::Factor(10.0)));
        assert!(parse_speed("-1").is_err());
        assert!(parse_speed("soon").is_err());
        assert_eq!(parse_rate("drop=0.5"), Ok((FaultKind::Drop, 0.5)));
        assert!(parse_rate("drop=2").is_err());
        assert!(parse_rate("drop").is_err());
    }

    #[test]
    fn arguments_parse() {
        let w = Wrap::try_parse_from([
            "sim",
            "-n",
            "8",
            "--dialect",
            "v1",
            "--fault",
            "2=freeze@3",
            "--fault",
            "0=refuse",
            "--fault-rate",
            "exit-error=0.01",
            "--port",
            "0",
        ])
        .unwrap();
        assert_eq!(w.args.hosts, 8);
        assert_eq!(w.args.dialect, Dialect::V1);
        assert_eq!(w.args.faults.len(), 2);
        assert_eq!(w.args.faults[0].at_run, 3);
        assert_eq!(w.args.fault_rates, vec![(FaultKind::ExitError, 0.01)]);
        assert!(Wrap::try_parse_from(["sim", "--dialect", "v4"]).is_err());
    }
}
