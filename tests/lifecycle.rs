//! Launched targets and health checks, end to end: `taskdist sim` processes (one simulated
//! host each, on its own 127.0.0.x address) are the targets `taskdist run --launch` and the
//! pool start, grow, shrink, restart and stop; one freezes, one reports wrong events and fails
//! its health check. No launched process may outlive taskdist, also after Ctrl-C and
//! `kill -9`: checked by scanning /proc for the children's pids.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TASKDIST: &str = env!("CARGO_BIN_EXE_taskdist");

/// A process as /proc shows it: pid and start time (so a reused pid is not mistaken for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Proc {
    pid: i32,
    start: u64,
}

/// (ppid, state, start time) of `pid`, from /proc/PID/stat.
fn stat(pid: i32) -> Option<(i32, char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    Some((ppid, state, start))
}

/// The live (not zombie) children of `parent` whose command line mentions `sim`.
fn sim_children(parent: i32) -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Some((ppid, state, start)) = stat(pid) else {
            continue;
        };
        if ppid != parent || matches!(state, 'Z' | 'X') {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        // `taskdist sim ...`: the word `sim` as an argument of its own.
        if cmd.windows(5).any(|w| w == b"\0sim\0") {
            out.push(Proc { pid, start });
        }
    }
    out
}

/// Like [`sim_children`], only those whose command line contains `needle` (tests of one
/// binary run side by side in one process).
fn sim_children_with(parent: i32, needle: &str) -> Vec<Proc> {
    sim_children(parent)
        .into_iter()
        .filter(|p| {
            let cmd = std::fs::read(format!("/proc/{}/cmdline", p.pid)).unwrap_or_default();
            String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .contains(needle)
        })
        .collect()
}

fn alive(p: Proc) -> bool {
    matches!(stat(p.pid), Some((_, state, start)) if start == p.start && !matches!(state, 'Z' | 'X'))
}

/// Watches the launched children of a process: every one seen, and the most at once.
struct Watcher {
    seen: Arc<Mutex<(HashSet<Proc>, usize)>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(parent: i32) -> Watcher {
        let seen = Arc::new(Mutex::new((HashSet::new(), 0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let now = sim_children(parent);
                let mut g = s.lock().unwrap();
                g.1 = g.1.max(now.len());
                g.0.extend(now);
                drop(g);
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        Watcher {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Every child seen and the most at once.
    fn finish(mut self) -> (HashSet<Proc>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let g = self.seen.lock().unwrap();
        (g.0.clone(), g.1)
    }

    fn now(&self) -> (usize, usize) {
        let g = self.seen.lock().unwrap();
        (g.0.len(), g.1)
    }
}

/// Fails unless every process in `procs` is gone within `limit`.
fn assert_all_gone(procs: &HashSet<Proc>, limit: Duration, when: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<_> = procs.iter().filter(|p| alive(**p)).collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            // Clean up before failing, so a failed test leaves nothing behind either.
            for p in &left {
                // SAFETY: kill(2) on a process this test saw as a child of its taskdist.
                unsafe { libc::kill(p.pid, libc::SIGKILL) };
            }
            panic!("{when}: launched processes still alive after {limit:?}: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A launch script: `launch.sh INDEX IP PORT` runs one simulated host at IP:PORT at
/// `speed`; instance `special` gets `fault` (once, if `once`: a restarted instance is healthy).
fn launch_script(dir: &Path, speed: &str, special: Option<(u32, &str, bool)>) -> String {
    let marker = dir.join("faulted");
    let mut text = String::from("#!/bin/sh\n");
    if let Some((index, fault, once)) = special {
        let guard = if once {
            format!(" && mkdir {} 2>/dev/null", marker.display())
        } else {
            String::new()
        };
        text.push_str(&format!(
            "if [ \"$1\" = {index} ]{guard}; then\n  exec {TASKDIST} sim -n 1 --first \"$2\" --port \"$3\" --speed {speed} --fault 0={fault}\nfi\n"
        ));
    }
    text.push_str(&format!(
        "exec {TASKDIST} sim -n 1 --first \"$2\" --port \"$3\" --speed {speed}\n"
    ));
    let path = dir.join("launch.sh");
    std::fs::write(&path, text).unwrap();
    format!("sh {} {{index}} {{ip}} {{port}}", path.display())
}

fn run_command(spec: &Path, out: &Path, launch: &str, first_ip: &str, port: u16) -> Command {
    let mut c = Command::new(TASKDIST);
    c.arg("run")
        .arg(spec)
        .args([
            "--handler",
            "csv",
            "--launch",
            launch,
            "--launch-ip",
            first_ip,
        ])
        .args(["--port", &port.to_string()])
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("taskdist did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut s).unwrap();
    s
}

/// The done-when run: 5,000 variants on launched simulated targets, min 1, max 8. The pool
/// grows to 8 while work is queued, the instance that freezes is restarted, every variant has
/// exactly one outcome, and no launched process is left.
#[test]
fn launched_targets_grow_restart_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    // 5,000 variants, one period each: 100, 101, ... ms, except the last, 400 s: at speed
    // 200 it runs for 6 s after the queue has drained, while the other instances are idle.
    let mut periods: Vec<String> = (0..4999).map(|i| (100 + i).to_string()).collect();
    periods.push("400000".into());
    let text = common::spec_with(5000).text().replace(
        "period_ms = { from = 100, to = 5099 }",
        &format!("period_ms = [{}]", periods.join(", ")),
    );
    assert!(
        text.contains("400000"),
        "the spec's period line changed:\n{text}"
    );
    std::fs::write(&spec, text).unwrap();
    let out = dir.path().join("out");
    // Instance 2 freezes at its 20th task-set (once: its restart is healthy). At speed 200 a
    // variant takes 10-80 ms, so the run lasts long enough for the pool to grow.
    let launch = launch_script(dir.path(), "200", Some((2, "freeze@20", true)));
    let mut child = run_command(&spec, &out, &launch, "127.0.0.60", 3301)
        .args([
            "--min",
            "1",
            "--max",
            "8",
            "--idle-stop",
            "3s",
            "--silence",
            "2",
        ])
        .args(["--boot-time", "60s"])
        .spawn()
        .unwrap();
    // Drain stderr while it runs (a full pipe would block taskdist).
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).unwrap();
        s
    });
    let watcher = Watcher::start(child.id() as i32);
    let status = wait_bounded(&mut child, Duration::from_secs(600));
    let (procs, most) = watcher.finish();
    let stderr = reader.join().unwrap();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert_eq!(most, 8, "at most {most} instances at once\n{stderr}");
    assert!(
        stderr.contains("restarting a launched target") && stderr.contains("index=2"),
        "the frozen instance was not restarted\n{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("launched targets:"))
        .unwrap_or_else(|| panic!("no lifecycle line\n{stderr}"));
    assert!(line.contains("at most 8 at once"), "{line}");
    // It shrank when the work drained (while the last, long variant ran).
    assert!(!line.contains(" 0 stopped when idle"), "{line}");
    assert!(
        stderr.contains("stopping an idle launched target"),
        "{stderr}"
    );
    assert!(!line.contains(" 0 restarted"), "{line}");
    assert!(line.contains("0 still running"), "{line}");
    // 8 instances and the restart of one: at least 9 processes.
    assert!(procs.len() >= 9, "{} processes seen", procs.len());
    common::assert_rows_exactly_once(&out, 5000);
    let events = taskdist::handlers::reader::read_events(out.join("events.csv"))
        .unwrap()
        .count();
    assert_eq!(events, 5000 * 12, "events of the finished variants");
    assert_all_gone(&procs, Duration::from_secs(1), "after the run");
}

/// Ctrl-C (SIGINT) and `kill -9` of taskdist: every launched process ends.
fn interrupted(signal: libc::c_int, first_ip: &str, port: u16) {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, common::spec_with(5000).text()).unwrap();
    let out = dir.path().join("out");
    // Real time: the run cannot end before the signal.
    let launch = launch_script(dir.path(), "realtime", None);
    let mut child = run_command(&spec, &out, &launch, first_ip, port)
        .args(["--min", "3", "--max", "3"])
        .spawn()
        .unwrap();
    let parent = child.id() as i32;
    let watcher = Watcher::start(parent);
    let deadline = Instant::now() + Duration::from_secs(120);
    // Three instances up, and work going on (the ledger has outcomes).
    while watcher.now().1 < 3 || std::fs::metadata(out.join("ledger")).map_or(0, |m| m.len()) == 0 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("taskdist ended early: {status}\n{}", stderr_of(&mut child));
        }
        assert!(Instant::now() < deadline, "the instances did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) with the id of our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(parent, signal) }, 0);
    let status = wait_bounded(&mut child, Duration::from_secs(120));
    let (procs, most) = watcher.finish();
    assert_eq!(most, 3);
    assert!(procs.len() >= 3);
    if signal == libc::SIGKILL {
        // Nothing in taskdist ran: the parent-death signal ends them.
        assert_eq!(status.code(), None, "{status:?}");
        assert_all_gone(&procs, Duration::from_secs(10), "after kill -9");
    } else {
        let stderr = stderr_of(&mut child);
        assert_eq!(status.code(), Some(130), "{status:?}\n{stderr}");
        // taskdist stopped them before it exited.
        assert_all_gone(&procs, Duration::from_millis(200), "after Ctrl-C");
    }
}

#[test]
fn ctrl_c_stops_every_launched_target() {
    interrupted(libc::SIGINT, "127.0.0.70", 3302);
}

#[test]
fn kill_9_of_taskdist_leaves_no_launched_target() {
    interrupted(libc::SIGKILL, "127.0.0.80", 3303);
}

/// Through the Rust API: a launched group with a health check. Instance 1 answers but ends a
/// job of every task-set with EXIT_ERROR: it fails its health check, shows why, and runs no
/// experiment variant. When the work has drained, idle instances beyond `min` stop; at
/// shutdown all do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_targets_take_no_work_and_idle_ones_stop() {
    use taskdist::distributor::{ProbeKind, TargetState};
    use taskdist::pool::{Experiment, HealthCheck, LaunchSpec, Pool, PoolConfig, TargetGroup};

    let dir = tempfile::tempdir().unwrap();
    let health_spec = dir.path().join("health.toml");
    std::fs::write(&health_spec, common::spec_with(1).text()).unwrap();
    let launch = launch_script(dir.path(), "200", Some((1, "exit-error@0+", false)));
    let mut l = LaunchSpec::new(launch, 2, 4);
    l.first_ip = "127.0.0.90".parse().unwrap();
    l.idle_stop = Duration::from_secs(1);
    let mut h = HealthCheck::new(health_spec.display().to_string());
    h.backoff = Duration::from_secs(1);
    let mut g = TargetGroup::new("qemu", Vec::new(), 3304, taskdist::protocol::Dialect::V3);
    g.launch = Some(l);
    g.health = Some(h);
    let mut cfg = PoolConfig::default();
    cfg.groups = vec![g];
    cfg.probe = ProbeKind::Tcp;
    let health_log = dir.path().join("health").join("checks.jsonl");
    cfg.health_log = Some(health_log.clone());
    let pool = Pool::start(cfg).unwrap();
    let sick: std::net::SocketAddr = "127.0.0.91:3304".parse().unwrap();

    let rec = common::Recorder::default();
    let exp = Experiment::new(common::spec_with(400)).handler(rec.clone());
    let summary = tokio::time::timeout(Duration::from_secs(300), pool.submit(exp).unwrap().close())
        .await
        .expect("the experiment ends")
        .unwrap();
    assert_eq!(summary.done, 400);
    rec.seen().assert_exactly_once(400);
    assert!(
        !rec.seen().finished_on.contains(&sick),
        "the unhealthy target ran experiment work"
    );
    assert!(
        !rec.seen().starts.iter().any(|(_, t, _)| *t == sick),
        "the unhealthy target started experiment work"
    );

    // Its reason is visible; the others passed.
    let snap = pool.snapshot();
    let t = snap
        .targets
        .iter()
        .find(|t| t.target == sick)
        .expect("the unhealthy target is listed");
    // Unhealthy, or (restarted meanwhile) being checked again.
    assert!(
        matches!(
            t.stats.state,
            TargetState::Unhealthy | TargetState::Connecting | TargetState::Checking
        ),
        "{t:?}"
    );
    let why = t.stats.last_error.clone().unwrap_or_default();
    assert!(
        why.contains("health check failed") && why.contains("EXIT_ERROR"),
        "{why}"
    );
    let health = t.stats.health.clone().unwrap_or_default();
    assert!(
        health.starts_with("failed") && health.contains("EXIT_ERROR"),
        "{health}"
    );
    let life = snap.lifecycle;
    assert!(
        life.health_failed >= 1 && life.health_passed >= 1,
        "{life:?}"
    );
    assert!(life.peak >= 3, "the pool did not grow: {life:?}");

    // Drained: idle instances beyond min stop.
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.lifecycle().idle_stopped == 0 || pool.lifecycle().running > 2 {
        assert!(
            Instant::now() < deadline,
            "no idle instance stopped: {:?}",
            pool.lifecycle()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let me = std::process::id() as i32;
    let procs: HashSet<Proc> = sim_children_with(me, "--first 127.0.0.9")
        .into_iter()
        .collect();
    assert!(!procs.is_empty() && procs.len() <= 2, "{procs:?}");
    let life = pool.shutdown().await;
    assert_eq!(life.running, 0, "{life:?}");
    assert_all_gone(&procs, Duration::from_millis(200), "after shutdown");

    // The checks' results, apart from the experiment's: one line per check.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&health_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let failed: Vec<_> = lines.iter().filter(|l| l["passed"] == false).collect();
    assert_eq!(failed.len() as u64, life.health_failed, "{lines:?}");
    assert_eq!(lines.len() as u64, life.health_passed + life.health_failed);
    assert!(failed.iter().all(|l| l["target"] == "127.0.0.91:3304"
        && l["reason"].as_str().unwrap_or("").contains("EXIT_ERROR")));
}

/// The lab service with a launched group from a pool file: the unhealthy target shows its
/// state and reason in the `targets` view and the event stream, the metrics count instances
/// and checks, and the service's shutdown stops every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_shows_unhealthy_launched_targets() {
    use taskdist::distributor::ProbeKind;
    use taskdist::pool::{PoolConfig, PoolFile};
    use taskdist::service::{Client, Service, ServiceConfig};

    let dir = tempfile::tempdir().unwrap();
    let health_spec = dir.path().join("health.toml");
    std::fs::write(&health_spec, common::spec_with(1).text()).unwrap();
    let launch = launch_script(dir.path(), "200", Some((1, "exit-error@0+", false)));
    let file = format!(
        r#"
        [[group]]
        name = "qemu"
        port = 3305
        [group.launch]
        command = "{launch}"
        first_ip = "127.0.0.100"
        min = 2
        max = 2
        boot_s = 60
        [group.health]
        spec = "{}"
        backoff_s = 1
        "#,
        health_spec.display()
    );
    let lab = PoolFile::parse(&file, "lab.toml").unwrap();
    let mut pool = PoolConfig::default();
    pool.groups = lab.groups;
    pool.probe = ProbeKind::Tcp;
    let data = dir.path().join("data");
    // As `taskdist serve` sets it.
    pool.health_log = Some(data.join("health").join("checks.jsonl"));
    let mut cfg = ServiceConfig::new(&data, pool);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let service = Service::start(cfg).await.unwrap();
    let base = format!("http://{}", service.local_addr());
    let client = Client::new(&base, service.token()).unwrap();

    // The event stream, read while the targets come up.
    let http = reqwest::Client::new();
    let mut stream = http
        .get(format!("{base}/api/v1/events"))
        .bearer_auth(service.token())
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(seen.contains("\"unhealthy\"") && seen.contains("EXIT_ERROR")) {
        assert!(
            Instant::now() < deadline,
            "no unhealthy target in the events:\n{seen}"
        );
        match tokio::time::timeout(Duration::from_secs(5), stream.chunk()).await {
            Ok(Ok(Some(b))) => seen.push_str(&String::from_utf8_lossy(&b)),
            Ok(Ok(None)) => panic!("the event stream ended:\n{seen}"),
            Ok(Err(e)) => panic!("event stream: {e}"),
            Err(_) => {}
        }
    }
    drop(stream);

    let targets = client.targets().await.unwrap();
    let sick = targets
        .iter()
        .find(|t| t.target == "127.0.0.101:3305")
        .unwrap_or_else(|| panic!("{targets:?}"));
    assert!(
        sick.health.as_deref().unwrap_or("").contains("EXIT_ERROR"),
        "{sick:?}"
    );
    assert!(sick.completed == 0 && sick.experiment.is_none(), "{sick:?}");
    let metrics = http
        .get(format!("{base}/metrics"))
        .bearer_auth(service.token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "taskdist_health_checks_total{result=\"failed\"}",
        "taskdist_launched_instances_total{event=\"started\"}",
        "taskdist_launched_instances_running",
        "state=\"unhealthy\"",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    let procs: HashSet<Proc> = sim_children_with(std::process::id() as i32, "--first 127.0.0.10")
        .into_iter()
        .collect();
    assert!(!procs.is_empty());
    service.shutdown().await;
    assert_all_gone(
        &procs,
        Duration::from_millis(200),
        "after the service's shutdown",
    );
    let log = std::fs::read_to_string(data.join("health").join("checks.jsonl")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("127.0.0.101:3305") && l.contains("EXIT_ERROR")),
        "{log}"
    );
}

/// An addressed (not launched) target that fails its health check once: it takes no work
/// until the re-check passes, then it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_works_again_after_its_health_check_passes() {
    use taskdist::distributor::{ProbeKind, TargetState};
    use taskdist::pool::{Experiment, HealthCheck, Pool, PoolConfig, TargetGroup};
    use taskdist::sim::{SimCluster, SimConfig, Speed};

    let mut sim_cfg = SimConfig {
        speed: Speed::Factor(200.0),
        ..SimConfig::default()
    };
    // Host 0 ends a job with EXIT_ERROR in its first task-set only: the first health check.
    sim_cfg.faults.plans = vec!["0=exit-error@0".parse().unwrap()];
    let sim = SimCluster::start(2, "127.0.0.110".parse().unwrap(), 0, sim_cfg)
        .await
        .unwrap();
    let flaky = sim.addrs()[0];
    let dir = tempfile::tempdir().unwrap();
    let health_spec = dir.path().join("health.toml");
    std::fs::write(&health_spec, common::spec_with(1).text()).unwrap();
    let mut h = HealthCheck::new(health_spec.display().to_string());
    h.backoff = Duration::from_millis(500);
    let mut g = TargetGroup::new(
        "boards",
        sim.addrs().iter().map(|a| a.to_string()).collect(),
        sim.addrs()[0].port(),
        taskdist::protocol::Dialect::V3,
    );
    g.health = Some(h);
    let mut cfg = PoolConfig::default();
    cfg.groups = vec![g];
    cfg.probe = ProbeKind::Tcp;
    cfg.monitor.failed_backoff =
        taskdist::discovery::Backoff::new(Duration::from_millis(50), Duration::from_millis(200));
    let pool = Pool::start(cfg).unwrap();

    // The flaky target is held out with its reason before any work is submitted.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let snap = pool.snapshot();
        if snap.lifecycle.health_failed >= 1 {
            let t = snap.targets.iter().find(|t| t.target == flaky).unwrap();
            assert!(
                t.stats
                    .last_error
                    .as_deref()
                    .unwrap_or("")
                    .contains("EXIT_ERROR"),
                "{t:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no failed health check");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let rec = common::Recorder::default();
    let exp = Experiment::new(common::spec_with(400)).handler(rec.clone());
    let summary = tokio::time::timeout(Duration::from_secs(300), pool.submit(exp).unwrap().close())
        .await
        .expect("the experiment ends")
        .unwrap();
    assert_eq!((summary.done, summary.bad), (400, 0));
    rec.seen().assert_exactly_once(400);
    let snap = pool.snapshot();
    let t = snap.targets.iter().find(|t| t.target == flaky).unwrap();
    assert_eq!(t.stats.health.as_deref(), Some("passed"), "{t:?}");
    assert_ne!(t.stats.state, TargetState::Unhealthy);
    // It passed its re-check and then took work.
    assert!(
        rec.seen().finished_on.contains(&flaky),
        "the target never worked after passing its re-check"
    );
    assert_eq!(snap.lifecycle.health_failed, 1, "{:?}", snap.lifecycle);
    assert!(snap.lifecycle.health_passed >= 2, "{:?}", snap.lifecycle);
    pool.shutdown().await;
    sim.shutdown().await;
}

/// Addresses printed by the command (`--launch-address stdout`): `taskdist sim --port 0`
/// prints the port it got.
#[test]
fn launched_targets_may_print_their_address() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, common::spec_with(60).text()).unwrap();
    let out = dir.path().join("out");
    let launch = format!("{TASKDIST} sim -n 1 --first {{ip}} --port 0");
    let mut child = run_command(&spec, &out, &launch, "127.0.0.130", 3306)
        .args(["--min", "2", "--max", "2", "--launch-address", "stdout"])
        .spawn()
        .unwrap();
    let watcher = Watcher::start(child.id() as i32);
    let status = wait_bounded(&mut child, Duration::from_secs(300));
    let (procs, most) = watcher.finish();
    let stderr = stderr_of(&mut child);
    assert!(status.success(), "{status:?}\n{stderr}");
    assert_eq!(most, 2, "{stderr}");
    common::assert_rows_exactly_once(&out, 60);
    let rows = taskdist::handlers::reader::read_variants(out.join("variants.csv"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let targets: HashSet<String> = rows.iter().map(|r| r.target.to_string()).collect();
    assert!(
        targets
            .iter()
            .all(|t| t.starts_with("127.0.0.13") && !t.ends_with(":3306")),
        "{targets:?}"
    );
    assert_all_gone(&procs, Duration::from_secs(1), "after the run");
}
