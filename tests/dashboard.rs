//! The dashboard page in a real browser: headless Chromium loads the page of a running service
//! (simulated targets on 127.0.0.x), runs its script against the API and the event stream, and
//! the test reads what the page shows. Fails (does not skip) under
//! TASKDIST_REQUIRE_PRIVILEGED=1 when Chromium is missing.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use taskdist::distributor::ProbeKind;
use taskdist::pool::{Labels, PoolConfig, TargetGroup};
use taskdist::protocol::Dialect;
use taskdist::service::{Client, Service, ServiceConfig, SubmitRequest};
use taskdist::sim::{SimCluster, SimConfig};

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium(args: &[&str]) -> std::io::Result<std::process::Output> {
    let (mut c, _profile) = common::headless_chromium(std::path::Path::new(CHROMIUM))?;
    c.args(args).output()
}

/// The page's DOM after its script ran for `budget_ms` of virtual time.
fn dom(url: &str, budget_ms: u32) -> String {
    let out = chromium(&[
        &format!("--virtual-time-budget={budget_ms}"),
        "--dump-dom",
        url,
    ])
    .expect("chromium runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_experiments_and_targets_in_chromium() {
    let version = Command::new(CHROMIUM).arg("--version").output();
    let got = match version {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("{CHROMIUM} --version failed: {}", o.status)),
        Err(e) => Err(format!("{CHROMIUM}: {e}")),
    };
    if common::privileged::need("dashboard_in_chromium", "Chromium (Debian's chromium)", got)
        .is_none()
    {
        return;
    }
    let sim = SimCluster::start(6, Ipv4Addr::new(127, 0, 70, 2), 0, SimConfig::default())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut pool = PoolConfig::default();
    pool.groups = vec![TargetGroup {
        name: "sim".into(),
        hosts: sim.addrs().iter().map(|a| a.to_string()).collect(),
        port: sim.addrs()[0].port(),
        dialect: Dialect::V3,
        labels: Labels::parse_pairs("board=qemu").unwrap(),
        launch: None,
        health: None,
    }];
    pool.probe = ProbeKind::Tcp;
    let mut cfg = ServiceConfig::new(data.path(), pool);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let service = Service::start(cfg).await.unwrap();
    let base = format!("http://{}", service.local_addr());
    let client = Client::new(&base, service.token()).unwrap();
    let mut sweep = SubmitRequest::catalog("huge");
    sweep.name = Some("sweep".into());
    sweep.priority = Some(10);
    let sweep = client.submit(&sweep).await.unwrap();
    let mut waiting = SubmitRequest::catalog("hey-priorities");
    waiting.name = Some("waiting".into());
    let waiting = client.submit(&waiting).await.unwrap();
    client.act(waiting.id, "pause").await.unwrap();
    let drained = sim.addrs()[0].to_string();
    client.target_action(&drained, "drain", None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.experiment(sweep.id).await.unwrap().done < 50 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let url = format!("{base}/#token={}", service.token());
    let page = tokio::task::spawn_blocking(move || dom(&url, 4000))
        .await
        .unwrap();
    // Both experiments, with their states, and action buttons of the running one.
    let row = |id: u64| {
        let at = page
            .find(&format!("<tr data-id=\"{id}\">"))
            .unwrap_or_else(|| panic!("no row of experiment {id} in:\n{page}"));
        let end = page[at..].find("</tr>").unwrap() + at;
        page[at..end].to_owned()
    };
    let s = row(sweep.id);
    assert!(
        s.contains("sweep") && s.contains("class=\"state running\""),
        "{s}"
    );
    assert!(s.contains(">pause<") && s.contains(">cancel<"), "{s}");
    assert!(s.contains("class=\"bar\""), "{s}");
    let w = row(waiting.id);
    assert!(
        w.contains("class=\"state paused\"") && w.contains(">resume<"),
        "{w}"
    );
    assert!(w.contains(">127<"), "planned count shown: {w}");
    // One cell per target, coloured by state, with labels; the drained one says so.
    for a in sim.addrs() {
        assert!(
            page.contains(&format!("data-target=\"{a}\"")),
            "no cell of {a}"
        );
    }
    assert!(
        page.contains(&format!("data-target=\"{drained}\" data-state=\"drained\"")),
        "the drained target is not shown as drained"
    );
    assert!(page.contains("board=qemu"));
    assert!(page.contains(">live<"), "the event stream did not connect");
    // A page without the token asks for it.
    let bare = format!("{base}/");
    let login = tokio::task::spawn_blocking(move || dom(&bare, 1000))
        .await
        .unwrap();
    assert!(login.contains("no token"), "{login}");

    // A screenshot renders (and refreshes docs/dashboard.png with UPDATE_SCREENSHOTS=1).
    let shot = tempfile::tempdir().unwrap();
    let png = shot.path().join("dashboard.png");
    let url = format!("{base}/#token={}", service.token());
    let arg = format!("--screenshot={}", png.display());
    let out = tokio::task::spawn_blocking(move || {
        chromium(&[
            "--virtual-time-budget=3000",
            "--window-size=1280,760",
            &arg,
            &url,
        ])
    })
    .await
    .unwrap()
    .unwrap();
    assert!(out.status.success());
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "{} bytes",
        bytes.len()
    );
    if std::env::var("UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png"),
            &bytes,
        )
        .unwrap();
    }
    service.shutdown().await;
    sim.shutdown().await;
}
