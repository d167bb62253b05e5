//! The lab service end to end over real HTTP (reqwest and the library's client), on simulated
//! targets on 127.0.0.x: authentication, validation errors, submissions, pause/resume/cancel,
//! downloads, registration and deregistration, metrics and the event stream.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use taskdist::distributor::ProbeKind;
use taskdist::pool::{Labels, PoolConfig, TargetGroup};
use taskdist::protocol::Dialect;
use taskdist::service::{
    Client, ExperimentState, Service, ServiceConfig, SubmitRequest, TargetRegistration,
};
use taskdist::sim::{SimCluster, SimConfig};

async fn sims(n: usize, first: [u8; 4]) -> SimCluster {
    SimCluster::start(n, Ipv4Addr::from(first), 0, SimConfig::default())
        .await
        .expect("simulated targets start on loopback")
}

fn group(name: &str, sim: &SimCluster) -> TargetGroup {
    TargetGroup {
        name: name.into(),
        hosts: sim.addrs().iter().map(|a| a.to_string()).collect(),
        port: sim.addrs()[0].port(),
        dialect: Dialect::V3,
        labels: Labels::new(),
        launch: None,
        health: None,
    }
}

fn config(data: &std::path::Path, groups: Vec<TargetGroup>) -> ServiceConfig {
    let mut pool = PoolConfig::default();
    pool.groups = groups;
    pool.probe = ProbeKind::Tcp;
    pool.monitor.failed_backoff =
        taskdist::discovery::Backoff::new(Duration::from_millis(50), Duration::from_millis(200));
    let mut cfg = ServiceConfig::new(data, pool);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg
}

/// Samples `(name, labels, value)` of an OpenMetrics text, by the official parser (the
/// Prometheus project's Python client, Debian's python3-prometheus-client).
fn parse_openmetrics(text: &str) -> Vec<(String, std::collections::BTreeMap<String, String>, f64)> {
    const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let python = "/usr/bin/python3";
    let probe = std::process::Command::new(python)
        .args(["-c", "import prometheus_client"])
        .output()
        .map_err(|e| e.to_string())
        .and_then(|o| {
            if o.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).into_owned())
            }
        });
    common::privileged::need(
        "metrics_parsed_by_the_official_parser",
        "Debian's python3-prometheus-client",
        probe,
    )
    .expect("the official OpenMetrics parser (apt-get install python3-prometheus-client)");
    use std::io::Write;
    let mut child = std::process::Command::new(python)
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_end_to_end() {
    let sim = sims(4, [127, 0, 60, 2]).await;
    let data = tempfile::tempdir().unwrap();
    let service = Service::start(config(data.path(), vec![group("sim", &sim)]))
        .await
        .unwrap();
    let base = format!("http://{}", service.local_addr());
    let token = service.token().to_owned();
    let http = reqwest::Client::new();

    // The token file holds the token and only its owner can read it.
    let text = std::fs::read_to_string(data.path().join("token")).unwrap();
    assert_eq!(text.trim(), token);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "token file mode {mode:o}");
    }

    // 401 without a token and with a wrong one; healthz needs none.
    let r = http
        .get(format!("{base}/api/v1/experiments"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{base}/metrics"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{base}/api/v1/experiments"))
        .bearer_auth(service.enrollment_token())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "the enrollment token is for registration only"
    );
    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // 400 with line and column for a bad spec; 404 for unknown ids.
    let bad = "name = \"x\"\n[[task]]\npkg = \"hey\"\npriority = \"high\"\n";
    let r = http
        .post(format!("{base}/api/v1/experiments/validate"))
        .bearer_auth(&token)
        .json(&SubmitRequest::spec_text(bad))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["line"], 4, "{v}");
    assert!(v["column"].as_u64().is_some(), "{v}");
    let r = http
        .post(format!("{base}/api/v1/experiments"))
        .bearer_auth(&token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for path in [
        "/api/v1/experiments/999",
        "/api/v1/experiments/abc",
        "/api/v1/nothing",
    ] {
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // A body over the limit is refused.
    let r = http
        .post(format!("{base}/api/v1/experiments"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Validation counts variants; submission runs them.
    let client = Client::new(&base, &token).unwrap();
    let v = client
        .validate(&SubmitRequest::catalog("hey-priorities"))
        .await
        .unwrap();
    assert_eq!((v.variants, v.planned), (Some(127), Some(127)));
    let mut req = SubmitRequest::catalog("hey-priorities");
    req.priority = Some(3);
    let first = client.submit(&req).await.unwrap();
    let done = wait_for("the first experiment done", async || {
        let e = client.experiment(first.id).await.unwrap();
        e.state.is_final().then_some(e)
    })
    .await;
    assert_eq!(done.state, ExperimentState::Done);
    assert_eq!((done.done, done.bad, done.priority), (127, 0, 3));

    // Its results download into a directory; each variant has exactly one row.
    let out = tempfile::tempdir().unwrap();
    let files = client.download_results(first.id, out.path()).await.unwrap();
    assert!(files.iter().any(|f| f.name == "variants.csv"), "{files:?}");
    common::assert_rows_exactly_once(out.path(), 127);
    // A download cannot leave the experiment's directory.
    for name in ["..%2Ftoken", "%2E%2E", "lock", "..%2F..%2Ftaskdist.db"] {
        let r = http
            .get(format!(
                "{base}/api/v1/experiments/{}/results/{name}",
                first.id
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{name}");
    }

    // A long experiment: pause, resume, cancel.
    let mut long = SubmitRequest::catalog("huge");
    long.name = Some("long".into());
    let long = client.submit(&long).await.unwrap();
    wait_for("progress", async || {
        (client.experiment(long.id).await.unwrap().done > 20).then_some(())
    })
    .await;
    let e = client.act(long.id, "pause").await.unwrap();
    assert_eq!(e.state, ExperimentState::Paused);
    // Wait until no attempt runs: two reads more than one figure refresh (500 ms) apart,
    // both idle with the same count.
    let mut last = None;
    let at = wait_for("the paused experiment idle", async || {
        let e = client.experiment(long.id).await.unwrap();
        let now = (e.running, e.done);
        let settled = now.0 == 0 && last == Some(now);
        last = Some(now);
        if !settled {
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        settled.then_some(now.1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        client.experiment(long.id).await.unwrap().done,
        at,
        "paused but ran"
    );
    assert_eq!(
        client.act(long.id, "resume").await.unwrap().state,
        ExperimentState::Running
    );
    wait_for("progress after resume", async || {
        (client.experiment(long.id).await.unwrap().done > at + 20).then_some(())
    })
    .await;

    // A name that needs escaping in the metrics.
    let mut odd = SubmitRequest::catalog("hey");
    odd.name = Some(r#"a"b\c} x{"#.into());
    let odd = client.submit(&odd).await.unwrap();
    // Metrics parse, and carry the experiment's counts.
    let text = http
        .get(format!("{base}/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse_openmetrics(&text);
    let value = |metric: &str, label: &str, want: &str| {
        samples
            .iter()
            .find(|(m, labels, _)| {
                m == metric && labels.get(label).map(String::as_str) == Some(want)
            })
            .map(|(_, _, v)| *v)
    };
    assert_eq!(
        value(
            "taskdist_experiment_variants_done_total",
            "experiment",
            &first.id.to_string()
        ),
        Some(127.0),
        "{text}"
    );
    assert!(samples
        .iter()
        .any(|(m, _, _)| m == "taskdist_target_tasksets_completed_total"));
    // The odd name comes back as it was given.
    let odd_sample = samples
        .iter()
        .find(|(m, labels, _)| {
            m == "taskdist_experiment_variants_done_total"
                && labels.get("experiment") == Some(&odd.id.to_string())
        })
        .unwrap_or_else(|| panic!("the oddly named experiment is missing:\n{text}"));
    assert_eq!(odd_sample.1["name"], r#"a"b\c} x{"#);

    // The event stream starts with the current state and then sends changes.
    let mut resp = http
        .get(format!("{base}/api/v1/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(seen.contains("event: experiment") && seen.contains("event: target")) {
        assert!(Instant::now() < deadline, "no events: {seen}");
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("\"name\":\"long\""), "{seen}");
    drop(resp);

    // A target registers itself with the enrollment token, works, and deregisters.
    let extra = sims(1, [127, 0, 61, 2]).await;
    let enroll = Client::new(&base, service.enrollment_token()).unwrap();
    let reg = TargetRegistration {
        address: extra.addrs()[0].ip(),
        port: extra.addrs()[0].port(),
        dialect: "v3".into(),
        labels: [("board".to_owned(), toml::Value::String("late".into()))].into(),
    };
    let key = reg.key();
    let t = enroll.register(&reg).await.unwrap();
    assert!(t.registered);
    wait_for("the registered target at work", async || {
        let ts = client.targets().await.unwrap();
        ts.iter()
            .find(|t| t.target == key && t.completed > 0)
            .map(|t| assert_eq!(t.labels["board"], "late"))
    })
    .await;
    let e = client.act(long.id, "cancel").await.unwrap();
    assert_eq!(e.state, ExperimentState::Cancelled);
    enroll.deregister(&key).await.unwrap();
    let err = enroll.deregister(&key).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    wait_for("the deregistered target gone", async || {
        let ts = client.targets().await.unwrap();
        ts.iter().all(|t| t.target != key).then_some(())
    })
    .await;
    // A registered target nobody answers for is listed (connecting) and can be drained.
    let down = TargetRegistration {
        address: "127.0.61.99".parse().unwrap(),
        port: 9,
        dialect: "v3".into(),
        labels: Default::default(),
    };
    enroll.register(&down).await.unwrap();
    let t = client
        .target_action(&down.key(), "drain", None)
        .await
        .unwrap();
    assert_eq!(
        (t.state.as_str(), t.hold.as_deref()),
        ("connecting", Some("drained"))
    );
    assert!(client
        .targets()
        .await
        .unwrap()
        .iter()
        .any(|t| t.target == down.key()));
    // A rejected re-registration leaves the registration as it was.
    let mut worse = down.clone();
    worse.dialect = "v9".into();
    assert_eq!(
        enroll.register(&worse).await.unwrap_err().status(),
        Some(400)
    );
    enroll.deregister(&down.key()).await.unwrap();
    // Bad registrations.
    let mut wrong = reg.clone();
    wrong.dialect = "v9".into();
    assert_eq!(
        enroll.register(&wrong).await.unwrap_err().status(),
        Some(400)
    );
    // Targets of the pool's own groups can be drained and released, not deregistered.
    let own = sim.addrs()[0].to_string();
    let t = client.target_action(&own, "drain", None).await.unwrap();
    assert_eq!(t.hold.as_deref(), Some("drained"));
    client.target_action(&own, "release", None).await.unwrap();
    assert_eq!(
        client.deregister(&own).await.unwrap_err().status(),
        Some(404)
    );

    // The list holds the experiments; a cancelled one cannot be paused or run again.
    let all = client.experiments().await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(
        client.act(long.id, "pause").await.unwrap_err().status(),
        Some(409)
    );
    assert_eq!(
        client.act(long.id, "retry-bad").await.unwrap_err().status(),
        Some(409)
    );
    // The data directory is its owner's alone (the database holds the tokens).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "data directory mode {mode:o}");
    }

    service.shutdown().await;
    sim.shutdown().await;
    extra.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart() {
    let sim = sims(2, [127, 0, 62, 2]).await;
    let extra = sims(1, [127, 0, 63, 2]).await;
    let data = tempfile::tempdir().unwrap();
    let service = Service::start(config(data.path(), vec![group("sim", &sim)]))
        .await
        .unwrap();
    let token = service.token().to_owned();
    let client = Client::new(&format!("http://{}", service.local_addr()), &token).unwrap();
    let done = client
        .submit(&SubmitRequest::catalog("hey-priorities"))
        .await
        .unwrap();
    wait_for("done", async || {
        client
            .experiment(done.id)
            .await
            .unwrap()
            .state
            .is_final()
            .then_some(())
    })
    .await;
    let mut paused = SubmitRequest::catalog("huge");
    paused.limit = Some(1_000_000);
    let paused = client.submit(&paused).await.unwrap();
    client.act(paused.id, "pause").await.unwrap();
    let reg = TargetRegistration {
        address: extra.addrs()[0].ip(),
        port: extra.addrs()[0].port(),
        dialect: "v3".into(),
        labels: Default::default(),
    };
    client.register(&reg).await.unwrap();
    service.shutdown().await;
    // As after a crash between the last result and the recorded end: the database still says
    // running, with no counts. The ledger has the truth.
    {
        let db = rusqlite::Connection::open(data.path().join("taskdist.db")).unwrap();
        db.execute(
            "UPDATE experiments SET state = 'running', done = 0, finished_at = NULL WHERE id = ?1",
            [done.id as i64],
        )
        .unwrap();
    }

    // Same data directory: same token, same experiments and states, the registration kept.
    let service = Service::start(config(data.path(), vec![group("sim", &sim)]))
        .await
        .unwrap();
    assert_eq!(service.token(), token);
    let client = Client::new(&format!("http://{}", service.local_addr()), &token).unwrap();
    let e = client.experiment(done.id).await.unwrap();
    assert_eq!((e.state, e.done), (ExperimentState::Done, 127));
    let p = client.experiment(paused.id).await.unwrap();
    assert_eq!(p.state, ExperimentState::Paused);
    assert_eq!(p.planned, Some(1_000_000));
    wait_for("the registered target back", async || {
        client
            .targets()
            .await
            .unwrap()
            .iter()
            .any(|t| t.target == reg.key() && t.registered && t.state == "idle")
            .then_some(())
    })
    .await;
    // A second service on the same directory is refused.
    let second = Service::start(config(data.path(), vec![])).await;
    assert!(second.is_err());
    service.shutdown().await;
    sim.shutdown().await;
    extra.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_variants_run_again_on_request() {
    // Both targets of the pool fail every task-set: every variant ends bad.
    let mut cfg = SimConfig::default();
    for h in 0..2 {
        cfg.faults.plans.push(
            format!("{h}=exit-error@0+")
                .parse::<taskdist::sim::FaultPlan>()
                .unwrap(),
        );
    }
    let broken = SimCluster::start(2, Ipv4Addr::new(127, 0, 64, 2), 0, cfg)
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(data.path(), vec![group("broken", &broken)]);
    // A variant is bad after attempts x 3 failures; no quarantine in the way.
    cfg.pool.quarantine_after = 1000;
    let service = Service::start(cfg).await.unwrap();
    let client = Client::new(&format!("http://{}", service.local_addr()), service.token()).unwrap();
    let mut req = SubmitRequest::catalog("hey");
    req.attempts = Some(2);
    let id = client.submit(&req).await.unwrap().id;
    let e = wait_for("the experiment to end", async || {
        let e = client.experiment(id).await.unwrap();
        e.state.is_final().then_some(e)
    })
    .await;
    assert_eq!(
        (e.state, e.done, e.bad),
        (ExperimentState::Done, 0, 4),
        "{e:?}"
    );
    // Running is refused while it runs; a healthy target joins, the broken ones are drained,
    // and the bad variants run again.
    let healthy = sims(1, [127, 0, 65, 2]).await;
    client
        .register(&TargetRegistration {
            address: healthy.addrs()[0].ip(),
            port: healthy.addrs()[0].port(),
            dialect: "v3".into(),
            labels: Default::default(),
        })
        .await
        .unwrap();
    for a in broken.addrs() {
        client
            .target_action(&a.to_string(), "drain", None)
            .await
            .unwrap();
    }
    let e = client.act(id, "retry-bad").await.unwrap();
    assert_eq!(e.state, ExperimentState::Running);
    assert_eq!(
        client.act(id, "retry-bad").await.unwrap_err().status(),
        Some(409)
    );
    let e = wait_for("the rerun to end", async || {
        let e = client.experiment(id).await.unwrap();
        e.state.is_final().then_some(e)
    })
    .await;
    assert_eq!(
        (e.state, e.done, e.bad),
        (ExperimentState::Done, 4, 0),
        "{e:?}"
    );
    // Its directory now has one row per variant, each done.
    let rows = taskdist::handlers::reader::read_variants(
        data.path()
            .join("experiments")
            .join(id.to_string())
            .join("variants.csv"),
    )
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(
        client.act(id, "retry-bad").await.unwrap_err().status(),
        Some(409),
        "nothing bad left"
    );
    service.shutdown().await;
    broken.shutdown().await;
    healthy.shutdown().await;
}
