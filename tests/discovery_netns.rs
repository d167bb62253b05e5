//! Discovery against test hosts in a network namespace that each test creates and removes.
//!
//! Every test builds a "lab": a namespace joined to the root namespace by a veth pair, a /24
//! from 198.18.0.0/15 (reserved for benchmarking, RFC 2544) on it, some addresses configured in
//! the namespace (live hosts), some not (silent), and one configured address whose replies are
//! blackholed by a policy route (a host behind a dropping firewall). Only addresses of that /24
//! are probed. The lab is torn down by a Drop guard (routes first, then links, then the
//! namespace), also when the test fails. Without the rights to create namespaces (not root,
//! no `ip`) or to open ICMP sockets, the tests skip visibly, or fail under
//! `TASKDIST_REQUIRE_PRIVILEGED=1` (see `common::privileged`).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use taskdist::discovery::{
    icmp_sweep, sweep, Backoff, HostChange, HostPool, HostState, IcmpConfig, IcmpProber,
    IcmpSweepConfig, IcmpTimeout, Monitor, MonitorConfig, SweepConfig,
};
use tokio_util::sync::CancellationToken;

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A namespace with a veth link to the root namespace; removed on drop.
struct Lab {
    ns: String,
    veth_root: String,
    veth_ns: String,
    /// Third octet of the lab's 198.18.x.0/24.
    net: u8,
    route_added: bool,
}

impl Lab {
    /// Creates the lab; `Err` explains why it cannot be created here.
    fn new(tag: char) -> Result<Lab, String> {
        // Labs of one test process are created one at a time, so two never pick one /24.
        static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _serial = CREATE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pid = std::process::id();
        // Find a /24 that nothing on this machine uses yet.
        let mut net = None;
        let start = (pid % 200) as u8;
        for candidate in (0u8..=255).map(|n| n.wrapping_add(start)) {
            let prefix = format!("198.18.{candidate}.0/24");
            if ip(&["-4", "route", "show", "root", &prefix])?
                .trim()
                .is_empty()
                && ip(&["-4", "addr", "show", "to", &prefix])?
                    .trim()
                    .is_empty()
            {
                net = Some(candidate);
                break;
            }
        }
        let net = net.ok_or("no free 198.18.x.0/24")?;
        let mut lab = Lab {
            ns: format!("tdd{pid}{tag}"),
            veth_root: format!("tdv{pid}{tag}a"),
            veth_ns: format!("tdv{pid}{tag}b"),
            net,
            route_added: false,
        };
        ip(&["netns", "add", &lab.ns])?;
        // From here on, Drop cleans up whatever exists.
        let ns = lab.ns.clone();
        let (va, vb) = (lab.veth_root.clone(), lab.veth_ns.clone());
        ip(&[
            "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns", &ns,
        ])?;
        ip(&["addr", "add", &format!("{}/24", lab.addr(1)), "dev", &va])?;
        lab.route_added = true;
        ip(&["link", "set", &va, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "link", "set", &vb, "up"])?;
        Ok(lab)
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.net, host)
    }

    fn prefix(&self) -> String {
        format!("198.18.{}.0/24", self.net)
    }

    /// Configures `host` inside the namespace (it starts answering).
    fn add_host(&self, host: u8) -> Result<(), String> {
        ip(&[
            "-n",
            &self.ns,
            "addr",
            "add",
            &format!("{}/24", self.addr(host)),
            "dev",
            &self.veth_ns,
        ])
        .map(drop)
    }

    /// Removes `host` from the namespace (it falls silent).
    fn remove_host(&self, host: u8) -> Result<(), String> {
        ip(&[
            "-n",
            &self.ns,
            "addr",
            "del",
            &format!("{}/24", self.addr(host)),
            "dev",
            &self.veth_ns,
        ])
        .map(drop)
    }

    /// Configures `host` but drops every packet it sends (a firewalled host).
    fn add_dropping_host(&self, host: u8) -> Result<(), String> {
        self.add_host(host)?;
        let from = self.addr(host).to_string();
        ip(&[
            "-n", &self.ns, "rule", "add", "from", &from, "lookup", "100", "pref", "100",
        ])?;
        ip(&[
            "-n",
            &self.ns,
            "route",
            "add",
            "blackhole",
            &self.prefix(),
            "table",
            "100",
        ])
        .map(drop)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Routes first, then the link (its peer goes with it), then the namespace.
        if self.route_added {
            let _ = ip(&[
                "route",
                "flush",
                "root",
                &self.prefix(),
                "dev",
                &self.veth_root,
            ]);
            let _ = ip(&["addr", "flush", "dev", &self.veth_root]);
        }
        let _ = ip(&["link", "del", &self.veth_root]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

fn lab_or_skip(test: &str, tag: char) -> Option<Lab> {
    common::privileged::need(test, "a network namespace (root)", Lab::new(tag))
}

fn icmp(test: &str, timeout: Duration) -> Option<Arc<IcmpProber>> {
    common::privileged::need(
        test,
        "an ICMP socket",
        IcmpProber::open(IcmpConfig {
            timeout: IcmpTimeout::Fixed(timeout),
            ..IcmpConfig::default()
        }),
    )
    .map(Arc::new)
}

fn sa(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), 3001)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_sweep_of_a_namespace_finds_exactly_the_live_hosts() {
    let test = "icmp_sweep_of_a_namespace_finds_exactly_the_live_hosts";
    let Some(lab) = lab_or_skip(test, 'a') else {
        return;
    };
    let Some(prober) = icmp(test, Duration::from_millis(500)) else {
        return;
    };
    for host in [2, 3, 5, 9, 200] {
        lab.add_host(host).expect("configure a live host");
    }
    lab.add_dropping_host(7)
        .expect("configure a firewalled host");
    let pool = HostPool::parse([lab.prefix()], 3001).expect("valid pool");
    let report = sweep(&pool, prober, &SweepConfig::default()).await;
    // .1 is the root namespace's own end of the veth link.
    let expected: Vec<SocketAddr> = [1, 2, 3, 5, 9, 200]
        .into_iter()
        .map(|h| sa(lab.addr(h)))
        .collect();
    assert_eq!(report.up, expected, "{report:?}");
    assert_eq!(report.probed, 254);
}

/// The dedicated ICMP engine with its defaults (adaptive timeout, no pacing): exactly the live
/// hosts, the firewalled one (its requests dropped) and the absent ones stay silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_engine_of_a_namespace_finds_exactly_the_live_hosts() {
    let test = "icmp_engine_of_a_namespace_finds_exactly_the_live_hosts";
    let Some(lab) = lab_or_skip(test, 'd') else {
        return;
    };
    for host in [2, 4, 6, 77, 254] {
        lab.add_host(host).expect("configure a live host");
    }
    lab.add_dropping_host(8)
        .expect("configure a firewalled host");
    let pool = HostPool::parse([lab.prefix()], 3001).expect("valid pool");
    let got = tokio::task::spawn_blocking(move || {
        icmp_sweep(
            pool.iter(),
            &IcmpSweepConfig::default(),
            &CancellationToken::new(),
            |_, _| {},
        )
    })
    .await
    .expect("sweep thread");
    let Some(report) = common::privileged::need(test, "an ICMP socket", got) else {
        return;
    };
    let expected: Vec<SocketAddr> = [1, 2, 4, 6, 77, 254]
        .into_iter()
        .map(|h| sa(lab.addr(h)))
        .collect();
    assert_eq!(report.up, expected, "{report:?}");
    assert_eq!(report.probed, 254);
    assert_eq!(report.timed_out, 254 - 6);
}

async fn next(changes: &mut tokio::sync::mpsc::Receiver<HostChange>) -> Option<HostChange> {
    tokio::time::timeout(Duration::from_secs(30), changes.recv())
        .await
        .expect("a change within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_namespace_hosts_come_up_go_down_and_return() {
    let test = "watched_namespace_hosts_come_up_go_down_and_return";
    let Some(lab) = lab_or_skip(test, 'b') else {
        return;
    };
    let Some(prober) = icmp(test, Duration::from_millis(300)) else {
        return;
    };
    let pool = HostPool::parse([format!("198.18.{}.8/29", lab.net)], 3001).expect("valid pool");
    let cancel = CancellationToken::new();
    let cfg = MonitorConfig {
        sweep: SweepConfig {
            retries: 1,
            ..SweepConfig::default()
        },
        round_backoff: Backoff::new(Duration::from_millis(100), Duration::from_millis(500)),
        failed_backoff: Backoff::new(Duration::from_millis(100), Duration::from_millis(500)),
        recheck_interval: Duration::from_millis(200),
        lease_on_up: false,
        ..MonitorConfig::default()
    };
    let (handle, mut changes) = Monitor::spawn(pool, prober, cfg, cancel.clone());
    while handle.rounds_completed() < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(changes.try_recv().is_err(), "nothing is up yet");
    let host = sa(lab.addr(12));

    lab.add_host(12).expect("host comes up");
    assert_eq!(next(&mut changes).await, Some(HostChange::Up(host)));
    assert_eq!(handle.state(host), Some(HostState::Watched));

    lab.remove_host(12).expect("host goes silent");
    assert_eq!(next(&mut changes).await, Some(HostChange::Down(host)));
    assert!(matches!(
        handle.state(host),
        Some(HostState::Backoff { .. })
    ));

    lab.add_host(12).expect("host returns");
    assert_eq!(next(&mut changes).await, Some(HostChange::Up(host)));
    cancel.cancel();
}

#[test]
fn unprivileged_datagram_icmp_sockets_work_where_allowed() {
    let Some(lab) = lab_or_skip("unprivileged_datagram_icmp_sockets_work_where_allowed", 'c')
    else {
        return;
    };
    // ping_group_range is per network namespace: allow datagram ICMP sockets in the lab only.
    ip(&[
        "netns",
        "exec",
        &lab.ns,
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ping_group_range=0 2147483647",
    ])
    .expect("allow unprivileged ICMP in the lab");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns, env!("CARGO_BIN_EXE_taskdist")])
        .args(["discover", "--socket", "dgram", "--sort", "127.0.0.0/22"])
        .output()
        .expect("run taskdist in the lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The lab's own loopback answers for all of 127/8.
    assert_eq!(stdout.lines().count(), 1022, "{stderr}");
    assert!(stderr.contains("probed 1022, up 1022"), "{stderr}");
}
