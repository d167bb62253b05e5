//! `taskdist sim`: run simulated targets on 127.0.0.x until interrupted.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use taskdist::pool::file::SimGroup;
use taskdist::pool::labels::Labels;
use taskdist::protocol::Dialect;
use taskdist::sim::{FaultKind, FaultPlan, SimCluster, SimConfig, SimError, Speed};

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
    /// A group of hosts: N[:DIALECT][:KEY=VALUE,...], e.g. `4:v3:board=a,cores=2` or
    /// `2:v1`. Repeatable; replaces --hosts and --dialect. Groups are started one after the
    /// other on consecutive addresses from --first, and each host is printed with its group's
    /// dialect and labels (for a pool file). --fault host indices count across all groups in
    /// order (0 is the first host of the first group).
    #[arg(
        long = "group",
        value_name = "N[:DIALECT][:LABELS]",
        conflicts_with_all = ["hosts", "dialect"]
    )]
    pub groups: Vec<SimGroup>,
    /// Time mode: `fast` (as fast as possible), `realtime`, or a speed-up factor like `10`.
    #[arg(long, default_value = "fast", value_parser = parse_speed)]
    pub speed: Speed,
    /// Seed of the random fault draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU cores per host (v3 places a task on core `coreoffset % cores`).
    #[arg(long, default_value_t = 4)]
    pub cores: u32,
    /// An explicit fault: HOST=KIND[@RUN][+][/pkg=NAME], e.g. `2=freeze@3` (host index 2
    /// freezes at its 4th START) or `0=exit-error@0+` (every run). With `/pkg=NAME` only
    /// task-sets that use binary NAME are hit and RUN counts only those:
    /// `1=exit-error@0+/pkg=cpu_hog` fails every cpu_hog task-set on host 1 and no other.
    /// Kinds: freeze, drop, garbage, oversized, slow, exit-error, reboot, refuse, flood,
    /// runaway, ghost, stale-push. Repeatable.
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

/// One started group of simulated hosts.
struct Started {
    cluster: SimCluster,
    dialect: Dialect,
    labels: Labels,
}

/// Splits `plans` (host indices across all groups, in order) into one list per group with
/// the host index rebased to the group. A host past the last group is an input error.
fn route_faults(plans: Vec<FaultPlan>, counts: &[usize]) -> Result<Vec<Vec<FaultPlan>>, SimError> {
    let total: usize = counts.iter().sum();
    let mut out = vec![Vec::new(); counts.len()];
    for mut plan in plans {
        let mut offset = 0;
        let mut placed = false;
        for (g, &count) in counts.iter().enumerate() {
            if plan.host < offset + count {
                plan.host -= offset;
                out[g].push(plan.clone());
                placed = true;
                break;
            }
            offset += count;
        }
        if !placed {
            return Err(SimError::Invalid(format!(
                "fault {} names host {}, but the groups have hosts 0 to {}",
                plan.kind,
                plan.host,
                total.saturating_sub(1)
            )));
        }
    }
    Ok(out)
}

/// Starts the groups one after the other on consecutive addresses from `args.first`. With
/// port 0 the later groups try the first group's port, so all hosts share one port when it is
/// free.
async fn start_groups(args: &SimArgs, groups: &[SimGroup]) -> anyhow::Result<Vec<Started>> {
    let counts: Vec<usize> = groups.iter().map(|g| g.count).collect();
    let mut plans = route_faults(args.faults.clone(), &counts)?;
    let mut started: Vec<Started> = Vec::with_capacity(groups.len());
    let mut offset: u32 = 0;
    for (g, group) in groups.iter().enumerate() {
        let first = u32::from(args.first)
            .checked_add(offset)
            .map(Ipv4Addr::from)
            .ok_or_else(|| {
                SimError::Invalid(format!(
                    "group {} ({group}) starts past the end of the IPv4 range from {}",
                    g + 1,
                    args.first
                ))
            })?;
        let mut cfg = SimConfig {
            dialect: group.dialect.unwrap_or(args.dialect),
            speed: args.speed,
            // Every group draws its own faults; group 0 keeps the seed as given.
            seed: args.seed.wrapping_add(g as u64),
            cores: args.cores,
            wrap_time_stamps: args.wrap_time_stamps,
            ..SimConfig::default()
        };
        cfg.faults.plans = std::mem::take(&mut plans[g]);
        cfg.faults.slow_delay = Duration::from_millis(args.slow_delay_ms);
        for &(k, p) in &args.fault_rates {
            cfg.faults.rates.set(k, p);
        }
        let shared_port = match started.first() {
            Some(s) if args.port == 0 => s.cluster.addrs().first().map(|a| a.port()),
            _ => None,
        };
        let context = || {
            format!(
                "starting group {} ({group}): {} simulated hosts from {first}",
                g + 1,
                group.count
            )
        };
        let cluster = match shared_port {
            Some(port) => match SimCluster::start(group.count, first, port, cfg.clone()).await {
                Ok(c) => c,
                // The shared port is taken on one of this group's addresses: any free port.
                Err(SimError::Bind { .. }) => SimCluster::start(group.count, first, 0, cfg)
                    .await
                    .with_context(context)?,
                Err(e) => return Err(anyhow::Error::new(e).context(context())),
            },
            None => SimCluster::start(group.count, first, args.port, cfg)
                .await
                .with_context(context)?,
        };
        started.push(Started {
            cluster,
            dialect: group.dialect.unwrap_or(args.dialect),
            labels: group.labels.clone(),
        });
        offset = offset.saturating_add(u32::try_from(group.count).unwrap_or(u32::MAX));
    }
    Ok(started)
}

/// Run `taskdist sim`.
pub async fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let grouped = !args.groups.is_empty();
    let started = if grouped {
        start_groups(&args, &args.groups).await?
    } else {
        let mut cfg = SimConfig {
            dialect: args.dialect,
            speed: args.speed,
            seed: args.seed,
            cores: args.cores,
            wrap_time_stamps: args.wrap_time_stamps,
            ..SimConfig::default()
        };
        cfg.faults.plans = args.faults.clone();
        cfg.faults.slow_delay = Duration::from_millis(args.slow_delay_ms);
        for &(k, p) in &args.fault_rates {
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
        vec![Started {
            cluster,
            dialect: args.dialect,
            labels: Labels::new(),
        }]
    };
    let mut hosts = 0;
    for s in &started {
        for (i, a) in s.cluster.addrs().iter().enumerate() {
            hosts += 1;
            let mut line = a.to_string();
            if grouped {
                line.push_str(&format!(" {}", s.dialect));
                if !s.labels.is_empty() {
                    line.push_str(&format!(" {}", s.labels));
                }
            }
            if s.cluster.is_refusing(i) {
                line.push_str(" refusing");
            }
            println!("{line}");
        }
    }
    if grouped {
        let list: Vec<String> = args.groups.iter().map(|g| g.to_string()).collect();
        eprintln!(
            "serving {hosts} simulated hosts in {} groups ({}); Ctrl-C stops",
            started.len(),
            list.join(" ")
        );
    } else {
        eprintln!(
            "serving {hosts} simulated {} hosts; Ctrl-C stops",
            args.dialect
        );
    }
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
    for s in started {
        s.cluster.shutdown().await;
    }
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

    #[test]
    fn groups_parse_and_replace_hosts_and_dialect() {
        let w = Wrap::try_parse_from([
            "sim",
            "--group",
            "2:v1:board=a",
            "--group",
            "3",
            "--fault",
            "4=drop/pkg=hey",
        ])
        .unwrap();
        assert_eq!(w.args.groups.len(), 2);
        assert_eq!(w.args.groups[0].dialect, Some(Dialect::V1));
        assert_eq!(w.args.groups[1].count, 3);
        assert_eq!(w.args.faults[0].pkg.as_deref(), Some("hey"));
        for other in [["-n", "3"], ["--dialect", "v2"]] {
            let e = Wrap::try_parse_from(["sim", "--group", "2", other[0], other[1]]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{e}");
        }
        let e = Wrap::try_parse_from(["sim", "--group", "0:v1"]).unwrap_err();
        assert!(e.to_string().contains("expected 1 to 250"), "{e}");
    }

    #[test]
    fn faults_are_routed_to_their_group() {
        let plans: Vec<FaultPlan> = ["0=drop", "2=freeze@1", "4=refuse", "3=slow/pkg=pi"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        let routed = route_faults(plans, &[2, 1, 2]).unwrap();
        let shown: Vec<Vec<String>> = routed
            .iter()
            .map(|g| g.iter().map(|p| p.to_string()).collect())
            .collect();
        assert_eq!(
            shown,
            [
                vec!["0=drop".to_string()],
                vec!["0=freeze@1".to_string()],
                vec!["1=refuse".to_string(), "0=slow/pkg=pi".to_string()],
            ]
        );
        let e = route_faults(vec!["5=drop".parse().unwrap()], &[2, 3]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid simulator settings: fault drop names host 5, but the groups have hosts 0 to 4"
        );
    }
}
