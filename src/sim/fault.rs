//! Fault injection for simulated targets: seeded random draws and explicit per-host plans.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use taskdist_tasksets::Task;

/// A fault a simulated host can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// At START: stop answering (no pushes, no echo), keep reading and keep the socket open,
    /// for the rest of the connection.
    Freeze,
    /// At START: push the first half of the events, then close the connection.
    Drop,
    /// At START: push a frame of the right length whose content is not XML.
    Garbage,
    /// At START: announce a frame of 64 MiB (and send a few bytes of it).
    Oversized,
    /// Delay every answer and push by [`FaultConfig::slow_delay`] (from the triggering START
    /// for the rest of the connection; a plan with `at_run = 0` applies from the first byte).
    Slow,
    /// At START: one job ends with EXIT_ERROR instead of its normal end.
    ExitError,
    /// At START: "reboot": forget binaries and tasks, reset the clock, close the connection.
    Reboot,
    /// Refuse connections: the host has no listener (plans only; rates use `refuse`).
    Refuse,
    /// At START: push START events of task 0 without end, as fast as the client reads,
    /// and ignore every command for the rest of the connection.
    Flood,
    /// At START: task 0 runs away: after its `numberofjobs` jobs it keeps starting and
    /// exiting jobs, one per period, and never sends JOBS_DONE.
    Runaway,
    /// At START: events for task ids that are not in the task-set (99 and 4294967295) are
    /// mixed into the run.
    Ghost,
    /// At SEND_DESCS of that run: push a leftover EXIT_EXTERNAL of task 0 (as a task killed by
    /// the previous CLEAR leaves behind), before any GO_SEND.
    StalePush,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 12] = [
        FaultKind::Freeze,
        FaultKind::Drop,
        FaultKind::Garbage,
        FaultKind::Oversized,
        FaultKind::Slow,
        FaultKind::ExitError,
        FaultKind::Reboot,
        FaultKind::Refuse,
        FaultKind::Flood,
        FaultKind::Runaway,
        FaultKind::Ghost,
        FaultKind::StalePush,
    ];

    /// The lowercase name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Freeze => "freeze",
            FaultKind::Drop => "drop",
            FaultKind::Garbage => "garbage",
            FaultKind::Oversized => "oversized",
            FaultKind::Slow => "slow",
            FaultKind::ExitError => "exit-error",
            FaultKind::Reboot => "reboot",
            FaultKind::Refuse => "refuse",
            FaultKind::Flood => "flood",
            FaultKind::Runaway => "runaway",
            FaultKind::Ghost => "ghost",
            FaultKind::StalePush => "stale-push",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fault specification that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad fault {input:?}: {reason}")]
pub struct FaultParseError {
    /// The input.
    pub input: String,
    /// What was expected.
    pub reason: String,
}

impl FromStr for FaultKind {
    type Err = FaultParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        FaultKind::ALL
            .into_iter()
            .find(|k| k.as_str() == norm)
            .ok_or_else(|| FaultParseError {
                input: s.to_owned(),
                reason: "expected one of freeze, drop, garbage, oversized, slow, exit-error, reboot, refuse, flood, runaway, ghost, stale-push".into(),
            })
    }
}

/// An explicit fault for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    /// Host index (0 = the first address of the cluster).
    pub host: usize,
    /// The fault.
    pub kind: FaultKind,
    /// The host's run (0-based count of STARTs it received) at which the fault triggers;
    /// with [`FaultPlan::pkg`], the count of only the STARTs of task-sets using that binary.
    pub at_run: u64,
    /// Trigger again at every later run (with `pkg`: every later run using the binary).
    pub repeat: bool,
    /// Only runs whose task-set has a task with this `pkg` (binary name) count and are hit,
    /// so a host can fail one experiment but not another. `None`: every run.
    pub pkg: Option<String>,
}

impl FaultPlan {
    /// The run index this plan sees at a START (or SEND_DESCS) of `view`, or `None` when the
    /// plan's binary filter excludes the run.
    fn run_in(&self, view: &RunView<'_>) -> Option<u64> {
        match &self.pkg {
            None => Some(view.run),
            Some(name) if view.tasks.iter().any(|t| t.pkg == *name) => {
                Some(view.pkg_runs.get(name).copied().unwrap_or(0))
            }
            Some(_) => None,
        }
    }

    /// Whether the plan hits the run of `view`.
    fn hits(&self, view: &RunView<'_>) -> bool {
        self.run_in(view)
            .is_some_and(|r| r == self.at_run || (self.repeat && r >= self.at_run))
    }
}

impl fmt::Display for FaultPlan {
    /// `HOST=KIND[@RUN][+][/pkg=NAME]`, the form [`FaultPlan::from_str`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.host, self.kind)?;
        if self.at_run != 0 {
            write!(f, "@{}", self.at_run)?;
        }
        if self.repeat {
            f.write_str("+")?;
        }
        if let Some(pkg) = &self.pkg {
            write!(f, "/pkg={pkg}")?;
        }
        Ok(())
    }
}

impl FromStr for FaultPlan {
    type Err = FaultParseError;

    /// `HOST=KIND[@RUN][+][/pkg=NAME]`, e.g. `3=freeze`, `0=exit-error@2`, `1=drop@0+` (every
    /// run), `2=exit-error@0+/pkg=cpu_hog` (every run of a task-set using binary `cpu_hog`;
    /// RUN then counts only such runs). `refuse` takes no `/pkg`: it is not tied to runs.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| FaultParseError {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (host, rest) = s
            .split_once('=')
            .ok_or_else(|| bad("expected HOST=KIND[@RUN][+][/pkg=NAME]"))?;
        let host: usize = host
            .trim()
            .parse()
            .map_err(|_| bad("HOST must be a host index (0, 1, ...)"))?;
        let (rest, pkg) = match rest.split_once('/') {
            None => (rest, None),
            Some((rest, filter)) => {
                let name = filter
                    .trim()
                    .strip_prefix("pkg=")
                    .ok_or_else(|| bad("after '/' expected pkg=NAME (a binary name)"))?
                    .trim();
                if name.is_empty() || name.len() > 15 || name.contains(char::is_whitespace) {
                    return Err(bad(
                        "NAME in /pkg=NAME must be a binary name of 1 to 15 bytes without blanks",
                    ));
                }
                (rest, Some(name.to_owned()))
            }
        };
        let (rest, repeat) = match rest.strip_suffix('+') {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let (kind, at_run) = match rest.split_once('@') {
            Some((k, n)) => (
                k,
                n.trim()
                    .parse()
                    .map_err(|_| bad("RUN must be a run index (0, 1, ...)"))?,
            ),
            None => (rest, 0),
        };
        let kind: FaultKind = kind.parse()?;
        if kind == FaultKind::Refuse && pkg.is_some() {
            return Err(bad(
                "refuse holds for the host, not for runs; expected no /pkg=NAME with refuse",
            ));
        }
        Ok(FaultPlan {
            host,
            kind,
            at_run,
            repeat,
            pkg,
        })
    }
}

/// What a fault plan needs to know about a run: its index on the host, its task-set, and per
/// binary name how many earlier runs of the host used that binary.
pub(crate) struct RunView<'a> {
    /// 0-based count of STARTs the host received before this run.
    pub(crate) run: u64,
    /// The task-set of the run.
    pub(crate) tasks: &'a [Task],
    /// Per binary named by a plan: earlier runs whose task-set used it.
    pub(crate) pkg_runs: &'a HashMap<String, u64>,
}

/// Per-run probabilities of each fault (0.0 = never). `refuse` is drawn once per host at
/// start.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// [`FaultKind::Freeze`]
    pub freeze: f64,
    /// [`FaultKind::Drop`]
    pub drop: f64,
    /// [`FaultKind::Garbage`]
    pub garbage: f64,
    /// [`FaultKind::Oversized`]
    pub oversized: f64,
    /// [`FaultKind::Slow`]
    pub slow: f64,
    /// [`FaultKind::ExitError`]
    pub exit_error: f64,
    /// [`FaultKind::Reboot`]
    pub reboot: f64,
    /// [`FaultKind::Refuse`], per host.
    pub refuse: f64,
    /// [`FaultKind::Flood`]
    pub flood: f64,
    /// [`FaultKind::Runaway`]
    pub runaway: f64,
    /// [`FaultKind::Ghost`]
    pub ghost: f64,
    /// [`FaultKind::StalePush`], drawn at each SEND_DESCS.
    pub stale_push: f64,
}

impl FaultRates {
    /// The rate of a kind.
    pub fn get(&self, kind: FaultKind) -> f64 {
        match kind {
            FaultKind::Freeze => self.freeze,
            FaultKind::Drop => self.drop,
            FaultKind::Garbage => self.garbage,
            FaultKind::Oversized => self.oversized,
            FaultKind::Slow => self.slow,
            FaultKind::ExitError => self.exit_error,
            FaultKind::Reboot => self.reboot,
            FaultKind::Refuse => self.refuse,
            FaultKind::Flood => self.flood,
            FaultKind::Runaway => self.runaway,
            FaultKind::Ghost => self.ghost,
            FaultKind::StalePush => self.stale_push,
        }
    }

    /// Set the rate of a kind (clamped to 0..=1).
    pub fn set(&mut self, kind: FaultKind, p: f64) {
        let p = if p.is_finite() {
            p.clamp(0.0, 1.0)
        } else {
            0.0
        };
        match kind {
            FaultKind::Freeze => self.freeze = p,
            FaultKind::Drop => self.drop = p,
            FaultKind::Garbage => self.garbage = p,
            FaultKind::Oversized => self.oversized = p,
            FaultKind::Slow => self.slow = p,
            FaultKind::ExitError => self.exit_error = p,
            FaultKind::Reboot => self.reboot = p,
            FaultKind::Refuse => self.refuse = p,
            FaultKind::Flood => self.flood = p,
            FaultKind::Runaway => self.runaway = p,
            FaultKind::Ghost => self.ghost = p,
            FaultKind::StalePush => self.stale_push = p,
        }
    }
}

/// Fault injection settings of a simulated cluster. The draws use
/// [`SimConfig::seed`](super::SimConfig::seed) and the host index, so a run is repeatable.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Random faults per run.
    pub rates: FaultRates,
    /// Explicit faults.
    pub plans: Vec<FaultPlan>,
    /// Delay of the slow fault.
    pub slow_delay: Duration,
}

impl Default for FaultConfig {
    /// No faults; slow delay 2 s.
    fn default() -> Self {
        FaultConfig {
            rates: FaultRates::default(),
            plans: Vec::new(),
            slow_delay: Duration::from_secs(2),
        }
    }
}

impl FaultConfig {
    /// Whether host `host` refuses connections (an explicit plan, or the `refuse` rate drawn
    /// with `rng`).
    pub(crate) fn refuses(&self, host: usize, rng: &mut StdRng) -> bool {
        let planned = self
            .plans
            .iter()
            .any(|p| p.host == host && p.kind == FaultKind::Refuse);
        let drawn = self.rates.refuse > 0.0 && rng.gen_bool(self.rates.refuse);
        planned || drawn
    }

    /// Whether a planned `kind` applies to `host` at the run of `view`.
    pub(crate) fn planned(&self, host: usize, view: &RunView<'_>, kind: FaultKind) -> bool {
        self.plans
            .iter()
            .any(|p| p.host == host && p.kind == kind && p.hits(view))
    }

    /// Whether a slow plan applies from the first byte of a connection to `host`, which has
    /// seen `runs` STARTs: a plan at run 0, or a repeating plan whose run has come. Plans with
    /// a binary filter never do (the task-set is not known yet); they slow a connection from
    /// the START they hit.
    pub(crate) fn slow_at_connect(&self, host: usize, runs: u64) -> bool {
        self.plans.iter().any(|p| {
            p.host == host
                && p.kind == FaultKind::Slow
                && p.pkg.is_none()
                && (p.at_run == 0 || (p.repeat && runs >= p.at_run))
        })
    }

    /// Whether a leftover push comes at the SEND_DESCS of the run of `view` on `host` (a
    /// plan, or the `stale_push` rate drawn with `rng`).
    pub(crate) fn stale_push(&self, host: usize, view: &RunView<'_>, rng: &mut StdRng) -> bool {
        let p = self.rates.stale_push;
        let drawn = p > 0.0 && rng.gen_bool(p);
        drawn || self.planned(host, view, FaultKind::StalePush)
    }

    /// The faults of the run of `view` on `host` at START (plans plus random draws, in
    /// [`FaultKind::ALL`] order, without Refuse and StalePush).
    pub(crate) fn draw(&self, host: usize, view: &RunView<'_>, rng: &mut StdRng) -> Vec<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .filter(|&k| k != FaultKind::Refuse && k != FaultKind::StalePush)
            .filter(|&k| {
                let p = self.rates.get(k);
                let drawn = p > 0.0 && rng.gen_bool(p);
                drawn || self.planned(host, view, k)
            })
            .collect()
    }

    /// Counts the run of `tasks` in `pkg_runs` for every binary a plan of `host` filters on
    /// (call after the run's faults are drawn).
    pub(crate) fn count_run(
        &self,
        host: usize,
        tasks: &[Task],
        pkg_runs: &mut HashMap<String, u64>,
    ) {
        // Several plans may name one binary: count each run once per name.
        let names: std::collections::BTreeSet<&String> = self
            .plans
            .iter()
            .filter(|p| p.host == host)
            .filter_map(|p| p.pkg.as_ref())
            .filter(|name| tasks.iter().any(|t| t.pkg == **name))
            .collect();
        for name in names {
            *pkg_runs.entry(name.clone()).or_insert(0) += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_syntax() {
        let p: FaultPlan = "3=exit_error@2+".parse().unwrap();
        assert_eq!(
            p,
            FaultPlan {
                host: 3,
                kind: FaultKind::ExitError,
                at_run: 2,
                repeat: true,
                pkg: None,
            }
        );
        let p: FaultPlan = "0=freeze".parse().unwrap();
        assert_eq!((p.at_run, p.repeat), (0, false));
        assert!("x=freeze".parse::<FaultPlan>().is_err());
        assert!("1=melt".parse::<FaultPlan>().is_err());
    }

    #[test]
    fn plan_syntax_with_a_binary_filter() {
        let p: FaultPlan = "2=exit-error@1+/pkg=cpu_hog".parse().unwrap();
        assert_eq!(
            p,
            FaultPlan {
                host: 2,
                kind: FaultKind::ExitError,
                at_run: 1,
                repeat: true,
                pkg: Some("cpu_hog".into()),
            }
        );
        assert_eq!(p.to_string(), "2=exit-error@1+/pkg=cpu_hog");
        let p: FaultPlan = "0=drop/pkg=hey".parse().unwrap();
        assert_eq!(
            (p.at_run, p.repeat, p.pkg.as_deref()),
            (0, false, Some("hey"))
        );
        assert_eq!(p.to_string(), "0=drop/pkg=hey");
        for (bad, needle) in [
            ("0=drop/hey", "after '/' expected pkg=NAME"),
            ("0=drop/pkg=", "1 to 15 bytes"),
            ("0=drop/pkg=a_very_long_binary", "1 to 15 bytes"),
            ("0=refuse/pkg=hey", "expected no /pkg=NAME with refuse"),
            ("0=drop@x/pkg=hey", "RUN must be a run index"),
        ] {
            let e = bad.parse::<FaultPlan>().expect_err(bad).to_string();
            assert!(e.starts_with(&format!("bad fault {bad:?}: ")), "{e}");
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn a_binary_filter_counts_and_hits_only_runs_using_the_binary() {
        let cfg = FaultConfig {
            plans: vec!["0=exit-error@1/pkg=pi".parse().unwrap()],
            ..FaultConfig::default()
        };
        let with_pi = vec![Task::new(0, "hey"), Task::new(1, "pi")];
        let without = vec![Task::new(0, "hey")];
        let mut pkg_runs = HashMap::new();
        let mut rng = rand::SeedableRng::seed_from_u64(1);
        let mut hit = Vec::new();
        // Runs: hey, hey+pi (pi run 0), hey, hey+pi (pi run 1: hit), hey+pi (pi run 2).
        for (run, tasks) in [&without, &with_pi, &without, &with_pi, &with_pi]
            .into_iter()
            .enumerate()
        {
            let view = RunView {
                run: run as u64,
                tasks,
                pkg_runs: &pkg_runs,
            };
            if !cfg.draw(0, &view, &mut rng).is_empty() {
                hit.push(run);
            }
            // Another host is never hit.
            assert!(cfg.draw(1, &view, &mut rng).is_empty());
            cfg.count_run(0, tasks, &mut pkg_runs);
        }
        assert_eq!(hit, [3]);
        assert_eq!(pkg_runs.get("pi"), Some(&3));
        assert!(
            !pkg_runs.contains_key("hey"),
            "only binaries named by plans are counted"
        );
        // A filtered slow plan does not slow a connection before its START.
        let slow = FaultConfig {
            plans: vec!["0=slow/pkg=pi".parse().unwrap()],
            ..FaultConfig::default()
        };
        assert!(!slow.slow_at_connect(0, 0));
    }
}
