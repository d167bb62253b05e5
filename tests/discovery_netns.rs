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
    icmp_sweep, sweep, Backoff, HostChange, HostPool, HostState, IcmpConfig, IcmpError, IcmpProber,
    IcmpSweepConfig, IcmpTimeout, Monitor, MonitorConfig, ProbeResult, SweepConfig, SweepReport,
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

/// A slow, lossy network without `netem` (this kernel has no `sch_netem`: `tc qdisc add dev
/// VETH root netem delay 50ms loss 10%` fails with "Error: Specified qdisc kind is unknown."):
/// the lab's kernel stops answering echo requests (`net.ipv4.icmp_echo_ignore_all=1` in the
/// lab namespace only), and this responder, a thread inside the lab namespace, answers them
/// after `delay`, dropping a `loss_percent` share of the requests at random. Stops on drop.
struct DelayedEcho {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<EchoStats, String>>>,
}

/// What a [`DelayedEcho`] did.
#[derive(Debug, Default, Clone, Copy)]
struct EchoStats {
    requests: u64,
    dropped: u64,
    answered: u64,
}

impl DelayedEcho {
    fn start(lab: &Lab, delay: Duration, loss_percent: u64) -> Result<DelayedEcho, String> {
        ip(&[
            "netns",
            "exec",
            &lab.ns,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.icmp_echo_ignore_all=1",
        ])?;
        let ns_path = format!("/run/netns/{}", lab.ns);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let socket = match enter_and_open(&ns_path) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            respond(&socket, delay, loss_percent, &stop2)
        });
        ready_rx
            .recv()
            .map_err(|_| "the responder thread ended early".to_string())??;
        Ok(DelayedEcho {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the responder and returns what it did.
    fn finish(mut self) -> EchoStats {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let thread = self.thread.take().expect("running");
        thread
            .join()
            .expect("responder thread")
            .expect("responder worked")
    }
}

impl Drop for DelayedEcho {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Moves the calling thread into the namespace at `ns_path` and opens a raw ICMP socket there
/// that sends with its own IPv4 headers (replies come from the address that was pinged).
fn enter_and_open(ns_path: &str) -> Result<socket2::Socket, String> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(ns_path).map_err(|e| format!("open {ns_path}: {e}"))?;
    // SAFETY: a valid namespace descriptor; setns moves only the calling thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "setns {ns_path}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::from(libc::SOCK_RAW),
        Some(socket2::Protocol::ICMPV4),
    )
    .map_err(|e| format!("raw ICMP socket in the lab: {e}"))?;
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live c_int for the duration of the call; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_HDRINCL,
            (&on as *const libc::c_int).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!("IP_HDRINCL: {}", std::io::Error::last_os_error()));
    }
    socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    let _ = socket.set_recv_buffer_size(4 << 20);
    Ok(socket)
}

fn icmp_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Answers echo requests after `delay` until `stop`, dropping `loss_percent` % of them.
fn respond(
    socket: &socket2::Socket,
    delay: Duration,
    loss_percent: u64,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<EchoStats, String> {
    use rand::Rng;
    use std::mem::MaybeUninit;
    let mut rng = rand::thread_rng();
    let mut stats = EchoStats::default();
    let mut due: std::collections::VecDeque<(std::time::Instant, Vec<u8>, Ipv4Addr)> =
        std::collections::VecDeque::new();
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        // Waits at most 1 ms (SO_RCVTIMEO) for a request.
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            // SAFETY: `recv_from` initialised the first `n` bytes.
            let pkt = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            if n >= ihl + 8 && pkt[ihl] == 8 && pkt[ihl + 1] == 0 {
                stats.requests += 1;
                if rng.gen_range(0..100) < loss_percent {
                    stats.dropped += 1;
                } else {
                    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
                    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
                    let mut icmp = pkt[ihl..].to_vec();
                    icmp[0] = 0;
                    icmp[2..4].copy_from_slice(&[0, 0]);
                    let c = icmp_checksum(&icmp);
                    icmp[2..4].copy_from_slice(&c.to_be_bytes());
                    // IPv4 header from the pinged address; the kernel fills in the length,
                    // the identification and the header checksum.
                    let mut reply = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0];
                    reply.extend_from_slice(&dst.octets());
                    reply.extend_from_slice(&src.octets());
                    reply.extend_from_slice(&icmp);
                    due.push_back((std::time::Instant::now() + delay, reply, src));
                }
            }
        }
        let now = std::time::Instant::now();
        while due.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, reply, to) = due.pop_front().expect("checked");
            let to = socket2::SockAddr::from(SocketAddr::new(IpAddr::V4(to), 0));
            socket
                .send_to(&reply, &to)
                .map_err(|e| format!("sending a reply to {to:?}: {e}"))?;
            stats.answered += 1;
        }
    }
    Ok(stats)
}

/// Live hosts of the delay tests: .65 to .104 of the lab's /24, swept as .64/26 (62
/// addresses, 22 silent). The root namespace's own .1, which would answer at once, is outside.
fn slow_lab(test: &str, tag: char, delay: Duration, loss: u64) -> Option<(Lab, DelayedEcho)> {
    let lab = lab_or_skip(test, tag)?;
    for host in 65..=104 {
        lab.add_host(host).expect("configure a live host");
    }
    let echo = DelayedEcho::start(&lab, delay, loss).expect("start the delayed responder");
    Some((lab, echo))
}

fn live_hosts(lab: &Lab) -> Vec<SocketAddr> {
    (65..=104).map(|h| sa(lab.addr(h))).collect()
}

/// Sweeps the slow lab's /26; returns the report and the least round trip measured.
fn sweep_blocking(
    lab: &Lab,
    cfg: IcmpSweepConfig,
) -> Result<(SweepReport, Option<Duration>), IcmpError> {
    let pool = HostPool::parse([format!("198.18.{}.64/26", lab.net)], 3001).expect("valid pool");
    let mut least: Option<Duration> = None;
    let report = icmp_sweep(pool.iter(), &cfg, &CancellationToken::new(), |_, r| {
        if let ProbeResult::Up { rtt } = r {
            // Zero: the engine could not tell which attempt was answered.
            if !rtt.is_zero() {
                least = Some(least.map_or(*rtt, |l| l.min(*rtt)));
            }
        }
    })?;
    Ok((report, least))
}

/// 50 ms round trips, no loss: the defaults (100 ms until the first reply, then adaptive) find
/// every live host, and the silent ones time out.
#[test]
fn icmp_engine_defaults_find_every_host_behind_50ms() {
    let test = "icmp_engine_defaults_find_every_host_behind_50ms";
    let Some((lab, echo)) = slow_lab(test, 'e', Duration::from_millis(50), 0) else {
        return;
    };
    let got = sweep_blocking(&lab, IcmpSweepConfig::default());
    let Some((report, least_rtt)) = common::privileged::need(test, "an ICMP socket", got) else {
        return;
    };
    let stats = echo.finish();
    // A batch's send time is taken when `sendmmsg` returns, a little after the first of
    // its packets left: a round trip can measure a fraction of a millisecond short.
    assert!(
        least_rtt.is_some_and(|r| r >= Duration::from_millis(45)),
        "every measured round trip includes the delay: {least_rtt:?}"
    );
    assert_eq!(report.up, live_hosts(&lab), "{report:?} {stats:?}");
    assert_eq!(report.probed, 62);
    assert_eq!(report.timed_out, 22, "{report:?}");
    // The round trips the engine saw are the responder's delay, not a shortcut.
    assert!(stats.answered >= 40, "{stats:?}");
}

/// 50 ms round trips and 20 % of the requests lost: with more retries (the loss-aware rule
/// grants them once a retry is answered) every live host is found.
#[test]
fn icmp_engine_finds_every_host_behind_50ms_with_20_percent_loss() {
    let test = "icmp_engine_finds_every_host_behind_50ms_with_20_percent_loss";
    let Some((lab, echo)) = slow_lab(test, 'f', Duration::from_millis(50), 20) else {
        return;
    };
    let cfg = IcmpSweepConfig {
        retries: 6,
        ..IcmpSweepConfig::default()
    };
    let got = sweep_blocking(&lab, cfg);
    let Some((report, least_rtt)) = common::privileged::need(test, "an ICMP socket", got) else {
        return;
    };
    let stats = echo.finish();
    assert!(
        least_rtt.is_some_and(|r| r >= Duration::from_millis(45)),
        "every measured round trip includes the delay: {least_rtt:?}"
    );
    assert_eq!(report.up, live_hosts(&lab), "{report:?} {stats:?}");
    assert_eq!(report.timed_out, 22, "{report:?}");
    assert!(stats.dropped > 0, "the loss was applied: {stats:?}");
    // Lost requests were retried: more requests than hosts reached the lab.
    assert!(stats.requests > 40, "{stats:?}");
}

/// The monitor's re-checks (single ICMP probes with per-host adaptive timeouts, seeded by the
/// sweep rounds) behind 50 ms round trips: no watched host is reported down while it answers,
/// and one that falls silent is reported down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_rechecks_behind_50ms_report_only_real_downs() {
    let test = "adaptive_rechecks_behind_50ms_report_only_real_downs";
    let Some((lab, echo)) = slow_lab(test, 'g', Duration::from_millis(50), 0) else {
        return;
    };
    let Some(prober) = common::privileged::need(
        test,
        "an ICMP socket",
        IcmpProber::open(IcmpConfig::default()),
    ) else {
        return;
    };
    let prober = Arc::new(prober);
    let pool = HostPool::parse([format!("198.18.{}.64/26", lab.net)], 3001).expect("valid pool");
    let cancel = CancellationToken::new();
    let cfg = MonitorConfig {
        failed_backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(1)),
        recheck_interval: Duration::from_millis(100),
        lease_on_up: false,
        ..MonitorConfig::default()
    };
    let (handle, mut changes) = Monitor::spawn(pool, prober.clone(), cfg, cancel.clone());
    let mut up = std::collections::BTreeSet::new();
    while up.len() < 40 {
        match next(&mut changes).await {
            Some(HostChange::Up(a)) => assert!(up.insert(a), "{a} came up twice"),
            other => panic!("while the hosts come up: {other:?}"),
        }
    }
    assert_eq!(up.into_iter().collect::<Vec<_>>(), live_hosts(&lab));
    // The rounds' round trips seeded the re-checks: about 50 ms + margins, not 1 s.
    let seeded = prober.current_timeout(lab.addr(65).into());
    assert!(
        seeded >= Duration::from_millis(50) && seeded < Duration::from_millis(500),
        "{seeded:?}"
    );
    // About 20 re-checks of every host: none may report an answering host down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Ok(change) = changes.try_recv() {
        panic!("no change while every host answers, got {change:?}");
    }
    // The last address added: removing the first (the primary address of the /24 on the
    // link) would take every secondary address with it.
    lab.remove_host(104).expect("host falls silent");
    let silent = sa(lab.addr(104));
    assert_eq!(next(&mut changes).await, Some(HostChange::Down(silent)));
    assert!(matches!(
        handle.state(silent),
        Some(HostState::Backoff { .. })
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Ok(change) = changes.try_recv() {
        panic!("only the silent host changed, got {change:?}");
    }
    cancel.cancel();
    let stats = echo.finish();
    assert!(
        stats.answered > 40 * 5,
        "re-checks went through the delay: {stats:?}"
    );
}
