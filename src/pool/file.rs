//! Pool files and simulated groups: where the targets are, what they speak, what they are.
//!
//! A pool file (`taskdist run --pool lab.toml`) lists groups of targets:
//!
//! ```
//! use taskdist::pool::PoolFile;
//!
//! let lab = PoolFile::parse(r#"
//!     port = 3001          # default port of every group (optional)
//!     dialect = "v3"       # default dialect of every group (optional)
//!
//!     [[group]]
//!     name = "imx6-lab2"
//!     hosts = ["10.200.45.0/28", "10.200.46.7:3002"]
//!     labels = { board = "imx6", cores = 4, site = "lab2" }
//!
//!     [[group]]
//!     name = "old-dom0"
//!     hosts = ["10.200.47.0/29"]
//!     dialect = "v1"
//!     labels = { board = "pandaboard", cores = 2 }
//! "#, "lab.toml").unwrap();
//! assert_eq!(lab.groups.len(), 2);
//! assert_eq!(lab.groups[1].dialect.to_string(), "v1");
//! assert_eq!(lab.groups[0].labels.to_string(), "board=imx6,cores=4,site=lab2");
//! ```
//!
//! Each group has `hosts` (the same syntax as the command line's HOSTS) and optional
//! `name` (default `group-N`), `port`, `dialect` and `labels`. An address may belong to one
//! group only.
//!
//! Instead of `hosts`, a group may have a `[group.launch]` table: the pool starts its targets
//! itself (see [`lifecycle`](super::lifecycle)). Any group may have a `[group.health]` table:
//! a health check its targets pass before they take work.
//!
//! ```
//! use taskdist::pool::{AddressSource, PoolFile};
//!
//! let lab = PoolFile::parse(r#"
//!     [[group]]
//!     name = "qemu"
//!     port = 3001
//!     labels = { board = "qemu-x86" }
//!     [group.launch]
//!     command = "launch-qemu.sh {index} {ip} {port}"  # `sh -c 'exec COMMAND'`
//!     address = "fixed"        # instance i at first_ip + i (or "stdout": printed by it)
//!     first_ip = "127.0.1.1"
//!     min = 1                  # kept running
//!     max = 8                  # at most, while work is queued and all are busy
//!     boot_s = 90              # to answer after its start
//!     idle_stop_s = 120        # an idle instance beyond min stops after this
//!     stop_signal = "TERM"     # then KILL after 5 s
//!     [group.health]
//!     spec = "hey"             # catalog name or spec file
//!     variants = 1             # of its variants, from the first
//!     every = 500              # task-sets between checks (optional)
//!     every_s = 3600           # seconds between checks (optional)
//!     max_response_ms = 2000   # optional bound on each job's response time
//!     backoff_s = 5            # first re-check delay of a failed target; doubles
//! "#, "lab.toml").unwrap();
//! let launch = lab.groups[0].launch.as_ref().unwrap();
//! assert_eq!((launch.min, launch.max, launch.address), (1, 8, AddressSource::Fixed));
//! assert_eq!(lab.groups[0].health.as_ref().unwrap().every, Some(500));
//! ```
//!
//! Simulated groups (`--simulate N[:DIALECT][:KEY=VALUE,...]`) are parsed by [`SimGroup`].

use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;

use super::labels::{LabelError, Labels};
use super::lifecycle::{AddressSource, HealthCheck, LaunchSpec};
use crate::discovery::{HostPool, PoolError};
use crate::protocol::{Dialect, DEFAULT_PORT};

/// A group of targets that share a port, a dialect and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetGroup {
    /// Name, for logs and metrics.
    pub name: String,
    /// Addresses and ranges, as on the command line.
    pub hosts: Vec<String>,
    /// Port of entries without one.
    pub port: u16,
    /// Protocol dialect of its targets.
    pub dialect: Dialect,
    /// Its labels.
    pub labels: Labels,
    /// Targets the pool starts itself (then `hosts` is empty): see [`lifecycle`](super::lifecycle).
    pub launch: Option<LaunchSpec>,
    /// A health check its targets must pass before they take work.
    pub health: Option<HealthCheck>,
}

impl TargetGroup {
    /// A group of `hosts` at `port` (for entries without one), speaking `dialect`, without
    /// labels, launch or health check.
    pub fn new(name: impl Into<String>, hosts: Vec<String>, port: u16, dialect: Dialect) -> Self {
        TargetGroup {
            name: name.into(),
            hosts,
            port,
            dialect,
            labels: Labels::new(),
            launch: None,
            health: None,
        }
    }

    /// The group's addresses. A launched group with fixed addresses has those of its `max`
    /// instances; one whose instances print their addresses has none known in advance.
    pub fn host_pool(&self) -> Result<HostPool, PoolError> {
        match &self.launch {
            None => HostPool::parse(&self.hosts, self.port),
            Some(l) if l.address == AddressSource::Stdout => Ok(HostPool::merge(Vec::new())),
            Some(l) => {
                let addrs: Vec<String> = (0..l.max)
                    .filter_map(|i| l.ip_of(i))
                    .map(|ip| std::net::SocketAddr::new(ip, self.port).to_string())
                    .collect();
                HostPool::parse(&addrs, self.port)
            }
        }
    }
}

/// A pool file that cannot be used; the message names the file, the group and what was
/// expected.
#[derive(Debug, thiserror::Error)]
pub enum PoolFileError {
    /// The file cannot be read.
    #[error("cannot read pool file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid pool file.
    #[error("pool file {origin}: {message}")]
    Invalid {
        /// The file.
        origin: String,
        /// What is wrong, and what was expected.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    port: Option<u16>,
    dialect: Option<String>,
    #[serde(default)]
    group: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Option<String>,
    hosts: Option<Vec<String>>,
    port: Option<u16>,
    dialect: Option<String>,
    labels: Option<toml::Table>,
    launch: Option<RawLaunch>,
    health: Option<RawHealth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLaunch {
    command: String,
    address: Option<String>,
    first_ip: Option<String>,
    min: Option<usize>,
    max: Option<usize>,
    boot_s: Option<f64>,
    idle_stop_s: Option<f64>,
    stop_signal: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    spec: String,
    variants: Option<u64>,
    every: Option<u64>,
    every_s: Option<f64>,
    max_response_ms: Option<u64>,
    binaries: Option<String>,
    backoff_s: Option<f64>,
}

fn seconds(v: f64, what: &str) -> Result<std::time::Duration, String> {
    std::time::Duration::try_from_secs_f64(v)
        .map_err(|_| format!("{what} {v}: expected a number of seconds >= 0"))
}

impl RawLaunch {
    fn build(self) -> Result<LaunchSpec, String> {
        let mut l = LaunchSpec::new(self.command, self.min.unwrap_or(1), 1);
        l.max = self.max.unwrap_or(l.min.max(1));
        if let Some(a) = &self.address {
            l.address = a.parse()?;
        }
        if let Some(ip) = &self.first_ip {
            l.first_ip = ip
                .parse()
                .map_err(|_| format!("launch first_ip {ip:?}: expected an IP address"))?;
        }
        if let Some(s) = self.boot_s {
            l.boot_time = seconds(s, "launch boot_s")?;
        }
        if let Some(s) = self.idle_stop_s {
            l.idle_stop = seconds(s, "launch idle_stop_s")?;
        }
        if let Some(s) = &self.stop_signal {
            l.stop_signal = s.parse()?;
        }
        l.check()?;
        Ok(l)
    }
}

impl RawHealth {
    fn build(self) -> Result<HealthCheck, String> {
        let mut h = HealthCheck::new(self.spec);
        if let Some(v) = self.variants {
            if v == 0 {
                return Err("health variants 0: expected at least 1".into());
            }
            h.variants = v;
        }
        if self.every == Some(0) {
            return Err("health every 0: expected at least 1 task-set".into());
        }
        h.every = self.every;
        h.every_time = self
            .every_s
            .map(|s| seconds(s, "health every_s"))
            .transpose()?;
        h.max_response = self.max_response_ms.map(std::time::Duration::from_millis);
        h.binaries = self.binaries.map(Into::into);
        if let Some(s) = self.backoff_s {
            h.backoff = seconds(s, "health backoff_s")?;
        }
        Ok(h)
    }
}

/// The groups of a pool file.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolFile {
    /// Its groups, in file order.
    pub groups: Vec<TargetGroup>,
}

/// Largest pool file read (a pool file lists ranges, not addresses).
const MAX_POOL_FILE: u64 = 1 << 20;

impl PoolFile {
    /// Read and check the pool file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<PoolFile, PoolFileError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let read = |source| PoolFileError::Read {
            path: shown.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if !meta.is_file() || meta.len() > MAX_POOL_FILE {
            return Err(PoolFileError::Invalid {
                origin: shown,
                message: format!("expected a regular file of at most {MAX_POOL_FILE} bytes"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        PoolFile::parse(&text, &shown)
    }

    /// Parse and check pool file text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<PoolFile, PoolFileError> {
        let invalid = |message: String| PoolFileError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].lines().count().max(1);
                    format!("line {line}: ")
                })
                .unwrap_or_default();
            invalid(format!("{at}{}", e.message().trim()))
        })?;
        if raw.group.is_empty() {
            return Err(invalid(
                "no [[group]] table; expected at least one group with hosts".into(),
            ));
        }
        let dialect_of = |text: &Option<String>,
                          at: &str|
         -> Result<Option<Dialect>, PoolFileError> {
            text.as_deref()
                .map(|d| {
                    d.parse::<Dialect>()
                        .map_err(|_| invalid(format!("{at}dialect {d:?}: expected v1, v2 or v3")))
                })
                .transpose()
        };
        let default_dialect = dialect_of(&raw.dialect, "")?.unwrap_or_default();
        let default_port = raw.port.unwrap_or(DEFAULT_PORT);
        let mut groups: Vec<TargetGroup> = Vec::new();
        let mut pools: Vec<HostPool> = Vec::new();
        for (i, g) in raw.group.into_iter().enumerate() {
            let name = g.name.unwrap_or_else(|| format!("group-{}", i + 1));
            let at = format!("group {name:?}: ");
            if groups.iter().any(|x| x.name == name) {
                return Err(invalid(format!("{at}the name is used twice")));
            }
            let hosts = g.hosts.unwrap_or_default();
            let launch = g
                .launch
                .map(RawLaunch::build)
                .transpose()
                .map_err(|e| invalid(format!("{at}{e}")))?;
            let health = g
                .health
                .map(RawHealth::build)
                .transpose()
                .map_err(|e| invalid(format!("{at}{e}")))?;
            if launch.is_some() && !hosts.is_empty() {
                return Err(invalid(format!(
                    "{at}has both hosts and [launch]; a launched group's addresses come from its instances"
                )));
            }
            if hosts.is_empty() && launch.is_none() {
                return Err(invalid(format!(
                    "{at}no hosts; expected hosts = [\"ADDRESS\", \"CIDR\", ...] or a [group.launch] table"
                )));
            }
            let port = g.port.unwrap_or(default_port);
            if port == 0 {
                return Err(invalid(format!("{at}port 0: expected 1 to 65535")));
            }
            let labels = match &g.labels {
                Some(t) => Labels::from_toml(t).map_err(|e| invalid(format!("{at}{e}")))?,
                None => Labels::new(),
            };
            let group = TargetGroup {
                dialect: dialect_of(&g.dialect, &at)?.unwrap_or(default_dialect),
                name,
                hosts,
                port,
                labels,
                launch,
                health,
            };
            let pool = group.host_pool().map_err(|e| invalid(format!("{at}{e}")))?;
            if let Some(j) = pools.iter().position(|p| p.overlaps(&pool)) {
                return Err(invalid(format!(
                    "{at}shares addresses with group {:?}; a target belongs to one group",
                    groups[j].name
                )));
            }
            pools.push(pool);
            groups.push(group);
        }
        Ok(PoolFile { groups })
    }
}

/// A group of simulated targets: `N[:DIALECT][:KEY=VALUE,...]`, e.g. `4`, `4:v1`,
/// `4:v3:board=a,cores=2`, `2:board=b`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimGroup {
    /// Number of simulated targets (1 to 250).
    pub count: usize,
    /// Their dialect (None: the command line's `--dialect`).
    pub dialect: Option<Dialect>,
    /// Their labels.
    pub labels: Labels,
}

impl std::fmt::Display for SimGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.count)?;
        if let Some(d) = self.dialect {
            write!(f, ":{d}")?;
        }
        if !self.labels.is_empty() {
            write!(f, ":{}", self.labels)?;
        }
        Ok(())
    }
}

/// A simulated group that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SimGroupError(String);

impl From<LabelError> for SimGroupError {
    fn from(e: LabelError) -> Self {
        SimGroupError(e.to_string())
    }
}

impl FromStr for SimGroup {
    type Err = SimGroupError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let form = "expected N[:DIALECT][:KEY=VALUE,...] such as 4, 4:v1 or 4:v3:board=a,cores=2";
        let mut parts = s.trim().splitn(3, ':');
        let n = parts.next().unwrap_or_default().trim();
        let count: usize = n
            .parse()
            .map_err(|_| SimGroupError(format!("{s:?}: {n:?} is not a count; {form}")))?;
        if !(1..=250).contains(&count) {
            return Err(SimGroupError(format!(
                "{s:?}: expected 1 to 250 simulated targets"
            )));
        }
        let mut dialect = None;
        let mut labels = Labels::new();
        for part in parts {
            let part = part.trim();
            if part.contains('=') {
                if !labels.is_empty() {
                    return Err(SimGroupError(format!("{s:?}: labels given twice; {form}")));
                }
                labels = Labels::parse_pairs(part)?;
            } else if dialect.is_none() && labels.is_empty() {
                dialect = Some(part.parse::<Dialect>().map_err(|_| {
                    SimGroupError(format!("{s:?}: dialect {part:?}: expected v1, v2 or v3"))
                })?);
            } else {
                return Err(SimGroupError(format!(
                    "{s:?}: {part:?} is unexpected; {form}"
                )));
            }
        }
        Ok(SimGroup {
            count,
            dialect,
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_groups() {
        let g: SimGroup = "4:v1:board=a,cores=2".parse().unwrap();
        assert_eq!((g.count, g.dialect), (4, Some(Dialect::V1)));
        assert_eq!(g.labels.to_string(), "board=a,cores=2");
        let g: SimGroup = "2:board=b".parse().unwrap();
        assert_eq!((g.count, g.dialect), (2, None));
        let g: SimGroup = "3".parse().unwrap();
        assert!(g.labels.is_empty());
        for (bad, needle) in [
            ("0", "1 to 250"),
            ("251", "1 to 250"),
            ("x", "not a count"),
            ("2:v9", "dialect"),
            ("2:v1:v3", "unexpected"),
            ("2:board", "dialect"),
            ("2:board=", "empty"),
        ] {
            let e = bad.parse::<SimGroup>().unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn pool_file_errors_name_the_group() {
        let cases = [
            ("", "no [[group]]"),
            ("[[group]]\nname = \"a\"\n", "group \"a\": no hosts"),
            ("[[group]]\nhosts = [\"127.0.0.2\"]\ndialect = \"v7\"\n", "dialect \"v7\""),
            ("[[group]]\nhosts = [\"127.0.0.300\"]\n", "group \"group-1\""),
            ("[[group]]\nhosts = [\"127.0.0.2\"]\nlables = {}\n", "lables"),
            (
                "[[group]]\nhosts = [\"127.0.0.2\"]\nlabels = { board = [1] }\n",
                "board",
            ),
            (
                "[[group]]\nname = \"x\"\nhosts = [\"127.0.0.0/30\"]\n[[group]]\nname = \"y\"\nhosts = [\"127.0.0.2\"]\n",
                "group \"y\": shares addresses with group \"x\"",
            ),
        ];
        for (text, needle) in cases {
            let e = PoolFile::parse(text, "lab.toml").unwrap_err().to_string();
            assert!(e.starts_with("pool file lab.toml: "), "{e}");
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        // Launched groups.
        let launch_cases = [
            (
                "[[group]]\nhosts = [\"127.0.0.2\"]\n[group.launch]\ncommand = \"x\"\n",
                "both hosts and [launch]",
            ),
            (
                "[[group]]\n[group.launch]\ncommand = \"x\"\nmin = 3\nmax = 2\n",
                "min 3 / max 2",
            ),
            (
                "[[group]]\n[group.launch]\ncommand = \"x\"\naddress = \"dhcp\"\n",
                "address \"dhcp\"",
            ),
            (
                "[[group]]\n[group.launch]\ncommand = \"x\"\nstop_signal = \"STOP\"\n",
                "stop signal",
            ),
            (
                "[[group]]\n[group.launch]\ncommand = \"x\"\nboot_s = -1\n",
                "boot_s -1",
            ),
            (
                "[[group]]\nhosts = [\"127.0.0.2\"]\n[group.health]\nspec = \"hey\"\nevery = 0\n",
                "every 0",
            ),
            (
                "[[group]]\nhosts = [\"127.0.0.2\"]\n[group.health]\nspecs = \"hey\"\n",
                "specs",
            ),
            (
                "[[group]]\nname = \"a\"\n[group.launch]\ncommand = \"x\"\nfirst_ip = \"127.0.0.2\"\nmax = 4\n[[group]]\nhosts = [\"127.0.0.5\"]\n",
                "shares addresses",
            ),
        ];
        for (text, needle) in launch_cases {
            let e = PoolFile::parse(text, "lab.toml").unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        // Different ports: different targets.
        PoolFile::parse(
            "[[group]]\nhosts = [\"127.0.0.2\"]\n[[group]]\nhosts = [\"127.0.0.2\"]\nport = 4000\n",
            "lab.toml",
        )
        .unwrap();
    }
}
