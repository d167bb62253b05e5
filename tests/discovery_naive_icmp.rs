//! Reproduces the reply loss of naive surge-ping loops next to [`IcmpProber`], on loopback
//! only. Run with `cargo test --release --test discovery_naive_icmp -- --ignored --nocapture`;
//! ignored by default because it measures (its loss counts depend on the machine), except for
//! the assertion that the engineered prober finds every address.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use surge_ping::{Client, Config, PingIdentifier, PingSequence};
use taskdist::discovery::{sweep, HostPool, IcmpConfig, IcmpProber, SweepConfig};

const IN_FLIGHT: usize = 256;

fn hosts(third: u8) -> Vec<IpAddr> {
    (1..=254)
        .map(|h| IpAddr::V4(Ipv4Addr::new(127, 3, third, h)))
        .collect()
}

/// `surge_ping::ping` per address: a new client (a new raw socket and reply task) per call.
async fn per_call_clients(third: u8) -> usize {
    stream::iter(hosts(third))
        .map(|ip| async move { surge_ping::ping(ip, &[0; 16]).await.is_ok() })
        .buffer_unordered(IN_FLIGHT)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await
}

/// One shared client with the kernel-default receive buffer and one identifier.
async fn shared_client(third: u8) -> usize {
    let client = Client::new(&Config::builder().sock_type_hint(3.into()).build())
        .or_else(|_| Client::new(&Config::default()))
        .expect("ICMP socket");
    stream::iter(hosts(third))
        .map(|ip| {
            let client = client.clone();
            async move {
                let mut pinger = client.pinger(ip, PingIdentifier(7)).await;
                pinger.timeout(Duration::from_secs(1));
                pinger.ping(PingSequence(0), &[0; 16]).await.is_ok()
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn naive_loops_lose_replies_the_prober_does_not() {
    let Some(prober) = common::privileged::need(
        "naive_loops_lose_replies_the_prober_does_not",
        "an ICMP socket",
        IcmpProber::open(IcmpConfig::default()),
    ) else {
        return;
    };
    let a = per_call_clients(1).await;
    let b = shared_client(2).await;
    let pool = HostPool::parse(["127.3.3.0/24"], 1).expect("valid pool");
    let cfg = SweepConfig {
        window: Some(IN_FLIGHT),
        rate_per_sec: None,
        retries: 2,
    };
    let c = sweep(&pool, Arc::new(prober), &cfg).await.up.len();
    eprintln!("replies of 254 with {IN_FLIGHT} in flight:");
    eprintln!("  surge_ping::ping per address (client per call): {a}");
    eprintln!("  one shared client, default receive buffer:      {b}");
    eprintln!("  IcmpProber + sweep:                             {c}");
    assert_eq!(c, 254);
}
