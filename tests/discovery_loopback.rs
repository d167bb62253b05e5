//! Discovery against loopback only (127.0.0.0/8): every address there answers ICMP echo on
//! Linux, and TCP listeners can bind any of them. The ICMP tests need a raw ICMP socket
//! (root or CAP_NET_RAW): see `common::privileged` for what happens without one.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use taskdist::discovery::{
    icmp_sweep, sweep, AvailableProber, Backoff, HostChange, HostPool, HostState, IcmpConfig,
    IcmpProber, IcmpSweepConfig, IcmpTimeout, Monitor, MonitorConfig, SweepConfig, TcpProber,
    AVAILABLE,
};
use taskdist::discovery::{ProbeResult, Prober};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Raw ICMP sockets receive every echo reply of the host, also the replies to the other tests'
/// probes; the ICMP tests of this file take turns so that the one with a small receive buffer
/// measures its own sweep only.
static ICMP_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Opens the ICMP prober, or skips (fails under `TASKDIST_REQUIRE_PRIVILEGED=1`).
fn icmp_or_skip(test: &str) -> Option<Arc<IcmpProber>> {
    common::privileged::need(
        test,
        "an ICMP socket",
        IcmpProber::open(IcmpConfig::default()),
    )
    .map(Arc::new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_sweep_of_a_loopback_slash16_finds_every_address() {
    let _turn = ICMP_TURN.lock().await;
    let Some(prober) = icmp_or_skip("icmp_sweep_of_a_loopback_slash16_finds_every_address") else {
        return;
    };
    let pool = HostPool::parse(["127.1.0.0/16"], 3001).expect("valid pool");
    let report = sweep(&pool, prober, &SweepConfig::default()).await;
    assert_eq!(report.probed, 65534);
    assert_eq!(
        report.up.len(),
        65534,
        "missed {} addresses ({} probes sent)",
        65534 - report.up.len(),
        report.probes_sent
    );
    let expected: Vec<SocketAddr> = pool.iter().collect();
    assert_eq!(report.up, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_with_the_kernel_default_buffer_still_finds_everything() {
    let _turn = ICMP_TURN.lock().await;
    // Where the receive buffer cannot be enlarged (no root, small net.core.rmem_max) and no
    // filter is installed, the default window shrinks to what the buffer holds, and the sweep
    // must still find every address.
    let Some(prober) = common::privileged::need(
        "icmp_with_the_kernel_default_buffer_still_finds_everything",
        "an ICMP socket",
        IcmpProber::open(IcmpConfig {
            recv_buffer_bytes: None,
            filter_echo_replies: false,
            ..IcmpConfig::default()
        }),
    ) else {
        return;
    };
    let pool = HostPool::parse(["127.2.0.0/20"], 3001).expect("valid pool");
    let report = sweep(&pool, Arc::new(prober), &SweepConfig::default()).await;
    assert_eq!(report.up.len(), 4094, "{report:?}");
}

/// Reserves a port on `ip` and frees it again, so a listener can bind it later.
async fn free_port(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).await.expect("bind loopback");
    l.local_addr().expect("local addr")
}

#[tokio::test]
async fn tcp_sweep_finds_listeners_only() {
    let a = TcpListener::bind("127.0.3.2:0").await.expect("bind");
    let port = a.local_addr().expect("addr").port();
    let b = TcpListener::bind(("127.0.3.5", port)).await.expect("bind");
    let pool = HostPool::parse(["127.0.3.0/29"], port).expect("valid pool");
    let report = sweep(
        &pool,
        Arc::new(TcpProber::default()),
        &SweepConfig::default(),
    )
    .await;
    let up: Vec<String> = report.up.iter().map(|a| a.to_string()).collect();
    assert_eq!(
        up,
        [format!("127.0.3.2:{port}"), format!("127.0.3.5:{port}")]
    );
    assert_eq!(report.negative, 4, "the others refuse");
    drop((a, b));
}

/// A minimal stand-in for a v3 target: answers AVAILABLE, one client at a time.
async fn fake_target(listener: TcpListener) {
    while let Ok((mut s, _)) = listener.accept().await {
        let mut w = [0u8; 4];
        while s.read_exact(&mut w).await.is_ok() {
            if u32::from_le_bytes(w) == AVAILABLE && s.write_all(&w).await.is_err() {
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_host_that_comes_up_mid_run_is_reported() {
    let addr = free_port("127.0.4.6").await;
    let pool = HostPool::parse(["127.0.4.0/29"], addr.port()).expect("valid pool");
    let cancel = CancellationToken::new();
    let cfg = MonitorConfig {
        round_backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(200)),
        sweep: SweepConfig {
            retries: 0,
            ..SweepConfig::default()
        },
        ..MonitorConfig::default()
    };
    let (handle, mut changes) = Monitor::spawn(
        pool,
        Arc::new(AvailableProber::new(Duration::from_millis(500))),
        cfg,
        cancel.clone(),
    );
    // Let at least one round find nothing.
    while handle.rounds_completed() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(changes.try_recv().is_err(), "nothing is up yet");
    let listener = TcpListener::bind(addr).await.expect("bind the late target");
    let server = tokio::spawn(fake_target(listener));
    let change = tokio::time::timeout(Duration::from_secs(30), changes.recv())
        .await
        .expect("the monitor reports the new host");
    assert_eq!(change, Some(HostChange::Up(addr)));
    assert_eq!(handle.state(addr), Some(HostState::Leased));
    cancel.cancel();
    server.abort();
}

#[tokio::test]
async fn a_host_whose_session_failed_goes_to_backoff_and_returns() {
    let addr = free_port("127.0.5.3").await;
    let listener = TcpListener::bind(addr).await.expect("bind");
    let server = tokio::spawn(fake_target(listener));
    let pool = HostPool::parse([addr.to_string()], 1).expect("valid pool");
    let cancel = CancellationToken::new();
    let cfg = MonitorConfig {
        failed_backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(400)),
        sweep: SweepConfig {
            retries: 0,
            ..SweepConfig::default()
        },
        ..MonitorConfig::default()
    };
    let prober = Arc::new(AvailableProber::new(Duration::from_millis(300)));
    let (handle, mut changes) = Monitor::spawn(pool, prober, cfg, cancel.clone());
    assert_eq!(changes.recv().await, Some(HostChange::Up(addr)));

    // The target dies; the distributor's session notices and reports it.
    server.abort();
    let _ = server.await;
    handle.report_failed(addr);
    assert_eq!(handle.state(addr), Some(HostState::Backoff { attempt: 0 }));
    // It stays in backoff, with growing attempts, while it is silent.
    let mut attempt = 0;
    for _ in 0..300 {
        if let Some(HostState::Backoff { attempt: a }) = handle.state(addr) {
            attempt = a;
            if a >= 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        attempt >= 2,
        "backoff attempts grow while the host is silent"
    );
    assert!(changes.try_recv().is_err(), "no Up while silent");

    // It comes back on the same address: announced again.
    let listener = TcpListener::bind(addr).await.expect("rebind");
    let server = tokio::spawn(fake_target(listener));
    let change = tokio::time::timeout(Duration::from_secs(30), changes.recv())
        .await
        .expect("the monitor reports the host again");
    assert_eq!(change, Some(HostChange::Up(addr)));
    cancel.cancel();
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_probe_of_ipv6_loopback() {
    let test = "icmp_probe_of_ipv6_loopback";
    let _turn = ICMP_TURN.lock().await;
    // Skipped only when the loopback has no IPv6 at all; with ::1 there, any probe error
    // is a failure.
    if common::privileged::need(test, "IPv6 on ::1", common::privileged::ipv6_loopback()).is_none()
    {
        return;
    }
    let Some(prober) = icmp_or_skip(test) else {
        return;
    };
    let pool = HostPool::parse(["::1"], 1).expect("valid pool");
    let report = sweep(&pool, prober, &SweepConfig::default()).await;
    assert!(
        report.first_error.is_none(),
        "probe of ::1 failed: {report:?}"
    );
    assert_eq!(report.up.len(), 1, "{report:?}");
    assert_eq!(report.up[0].ip(), IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]));
}

/// Replies are read while an unpaced burst is being sent: with a 10 ms fixed timeout and no
/// pacing, every loopback address must still be found (the old per-probe path found 0 of
/// 65,534 here, because its timers fired before the replies waiting in the socket were read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_sweep_unpaced_with_a_10ms_timeout_finds_every_address() {
    let _turn = ICMP_TURN.lock().await;
    let test = "icmp_sweep_unpaced_with_a_10ms_timeout_finds_every_address";
    let pool = HostPool::parse(["127.3.0.0/16"], 3001).expect("valid pool");
    let cfg = IcmpSweepConfig {
        timeout: IcmpTimeout::Fixed(Duration::from_millis(10)),
        rate_per_sec: None,
        retries: 0,
        ..IcmpSweepConfig::default()
    };
    let got = tokio::task::spawn_blocking(move || {
        let report = icmp_sweep(pool.iter(), &cfg, &CancellationToken::new(), |_, _| {});
        (pool, report)
    })
    .await
    .expect("sweep thread");
    let (pool, report) = got;
    let Some(report) = common::privileged::need(test, "an ICMP socket", report) else {
        return;
    };
    assert_eq!(report.probed, 65534);
    assert_eq!(report.probes_sent, 65534, "no retries were allowed");
    assert_eq!(
        report.up.len(),
        65534,
        "missed {} addresses",
        65534 - report.up.len()
    );
    let expected: Vec<SocketAddr> = pool.iter().collect();
    assert_eq!(report.up, expected);
}

/// The adaptive default (no pacing, timeout from measured round trips) finds a whole loopback
/// /16 without a single timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_sweep_adaptive_default_finds_every_address() {
    let _turn = ICMP_TURN.lock().await;
    let test = "icmp_sweep_adaptive_default_finds_every_address";
    let pool = HostPool::parse(["127.4.0.0/16"], 3001).expect("valid pool");
    let got = tokio::task::spawn_blocking(move || {
        let report = icmp_sweep(
            pool.iter(),
            &IcmpSweepConfig::default(),
            &CancellationToken::new(),
            |_, _| {},
        );
        (pool, report)
    })
    .await
    .expect("sweep thread");
    let (pool, report) = got;
    let Some(report) = common::privileged::need(test, "an ICMP socket", report) else {
        return;
    };
    assert_eq!(report.up.len(), 65534);
    assert_eq!(report.up, pool.iter().collect::<Vec<_>>());
    assert_eq!(report.timed_out, 0);
}

/// IPv6 echo (type 128) through the same engine: `::1` answers; needs IPv6 on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_sweep_finds_ipv6_loopback() {
    let test = "icmp_sweep_finds_ipv6_loopback";
    if common::privileged::need(test, "IPv6 on ::1", common::privileged::ipv6_loopback()).is_none()
    {
        return;
    }
    let pool = HostPool::parse(["::1", "127.0.0.9"], 3001).expect("valid pool");
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
    let ips: Vec<IpAddr> = report.up.iter().map(|a| a.ip()).collect();
    let v6: IpAddr = "::1".parse().expect("address");
    let v4: IpAddr = "127.0.0.9".parse().expect("address");
    assert_eq!(ips, vec![v4, v6], "{report:?}");
}

/// The adaptive TCP prober learns the loopback connect time: after one accepted and one
/// refused connection its timeout drops from the initial 100 ms to the 20 ms floor, and it
/// still reports both answers correctly.
#[tokio::test]
async fn adaptive_tcp_prober_learns_the_connect_time() {
    let listener = TcpListener::bind("127.0.8.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let prober = TcpProber::adaptive(IcmpTimeout::DEFAULT_ADAPTIVE);
    assert_eq!(prober.current_timeout(), Duration::from_millis(100));
    let up = SocketAddr::new("127.0.8.1".parse().expect("ip"), port);
    let closed = SocketAddr::new("127.0.8.2".parse().expect("ip"), port);
    assert!(prober.probe(up).await.is_up());
    assert_eq!(prober.probe(closed).await, ProbeResult::Refused);
    assert_eq!(prober.current_timeout(), Duration::from_millis(20));
}

/// A monitor's ICMP rounds go through the batch engine: a loopback /20 comes up whole, and
/// targets sharing one IP on different ports (QEMU instances behind one host) each come up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_icmp_rounds_bring_up_every_address_including_shared_ips() {
    let _turn = ICMP_TURN.lock().await;
    let test = "monitor_icmp_rounds_bring_up_every_address_including_shared_ips";
    let Some(prober) = icmp_or_skip(test) else {
        return;
    };
    let pool = HostPool::parse(
        [
            "127.0.16.0/20",
            "127.0.40.1:4001",
            "127.0.40.1:4002",
            "127.0.40.1:4003",
        ],
        3001,
    )
    .expect("valid pool");
    let expected = pool.len();
    let cancel = CancellationToken::new();
    let (_handle, mut changes) =
        Monitor::spawn(pool, prober, MonitorConfig::default(), cancel.clone());
    let mut up = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (up.len() as u128) < expected {
        let change = tokio::time::timeout_at(deadline, changes.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {expected} came up", up.len()))
            .expect("monitor open");
        if let HostChange::Up(a) = change {
            assert!(up.insert(a), "{a} came up twice");
        }
    }
    for port in [4001, 4002, 4003] {
        assert!(up.contains(&format!("127.0.40.1:{port}").parse().unwrap()));
    }
    cancel.cancel();
}

/// Single ICMP probes (the monitor's re-checks) adapt per host: a host never measured waits the
/// initial 1 s; after a reply its timeout drops to the 20 ms floor of a loopback round trip;
/// a round trip observed elsewhere (a sweep round) seeds another host; a fixed timeout stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_prober_timeouts_adapt_per_host() {
    let _turn = ICMP_TURN.lock().await;
    let Some(prober) = icmp_or_skip("icmp_prober_timeouts_adapt_per_host") else {
        return;
    };
    let a: SocketAddr = "127.0.9.1:3001".parse().expect("addr");
    let b: SocketAddr = "127.0.9.2:3001".parse().expect("addr");
    let c: SocketAddr = "127.0.9.3:3001".parse().expect("addr");
    assert_eq!(prober.current_timeout(a.ip()), Duration::from_secs(1));
    assert!(prober.probe(a).await.is_up());
    assert_eq!(prober.current_timeout(a.ip()), Duration::from_millis(20));
    assert_eq!(
        prober.current_timeout(b.ip()),
        Duration::from_secs(1),
        "another host keeps the initial timeout"
    );
    prober.observe(c, Duration::from_millis(200));
    // srtt 200 ms, rttvar 100 ms: 600 ms.
    assert_eq!(prober.current_timeout(c.ip()), Duration::from_millis(600));

    let fixed = IcmpProber::open(IcmpConfig {
        timeout: IcmpTimeout::Fixed(Duration::from_millis(300)),
        ..IcmpConfig::default()
    })
    .expect("the same socket opened a moment ago");
    assert!(fixed.probe(a).await.is_up());
    assert_eq!(fixed.current_timeout(a.ip()), Duration::from_millis(300));
}
