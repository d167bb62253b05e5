//! Scale-out through a real PostgreSQL server: several `taskdist run --store` processes, each
//! with its own simulated targets (`taskdist sim` processes), share one experiment.
//!
//! The server comes from `TASKDIST_TEST_PG` (default
//! `postgres://taskdist:taskdist@127.0.0.1:5432/postgres`, the role `.ci/run` creates); each
//! test creates its own database and drops it at the end. Under
//! `TASKDIST_REQUIRE_PRIVILEGED=1` (CI) a missing server fails the tests.
#![cfg(feature = "postgres")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::privileged;
use tokio_postgres::NoTls;

const SPEC: &str = "huge";

fn admin_url() -> String {
    std::env::var("TASKDIST_TEST_PG")
        .unwrap_or_else(|_| "postgres://taskdist:taskdist@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test, dropped when the test ends (also on failure).
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    async fn create(test: &str) -> Option<TestDb> {
        let admin = admin_url();
        let client = privileged::need(
            test,
            "a PostgreSQL server (TASKDIST_TEST_PG)",
            async {
                let (c, conn) = tokio_postgres::connect(&admin, NoTls).await?;
                tokio::spawn(conn);
                Ok::<_, tokio_postgres::Error>(c)
            }
            .await,
        )?;
        let name = format!("taskdist_test_{}_{}", test, std::process::id());
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .expect("drop an old test database");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("TASKDIST_TEST_PG {admin:?}: expected postgres://.../DATABASE"),
        };
        Some(TestDb { name, url })
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (c, conn) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        c
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = admin_url();
        let name = self.name.clone();
        // A runtime of its own: drop may run while the test's runtime is going away.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((c, conn)) = tokio_postgres::connect(&admin, NoTls).await {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A `taskdist sim` process with `n` hosts from `first` on free ports; killed on drop.
struct Sim {
    child: Child,
    addrs: Vec<String>,
}

impl Sim {
    fn start(first: &str, n: u32) -> Sim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_taskdist"))
            .args(["sim", "-q", "--port", "0", "--first", first, "-n"])
            .arg(n.to_string())
            .args(["--duration-s", "600"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start taskdist sim");
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let mut addrs = Vec::new();
        while addrs.len() < n as usize {
            let line = lines.next().expect("sim prints its addresses").unwrap();
            let addr = line.split_whitespace().next().unwrap_or("").to_owned();
            if addr.parse::<std::net::SocketAddr>().is_ok() {
                addrs.push(addr);
            }
        }
        Sim { child, addrs }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `taskdist run --store` process on `sim`'s targets; its stdout and stderr go to files
/// in `logs` named `tag`.
fn distributor(db: &TestDb, sim: &Sim, limit: u64, lease: &str, logs: &Path, tag: &str) -> Child {
    distributor_on(db, &sim.addrs, limit, lease, logs, tag)
}

/// A `taskdist run --store` process on the targets `addrs`.
fn distributor_on(
    db: &TestDb,
    addrs: &[String],
    limit: u64,
    lease: &str,
    logs: &Path,
    tag: &str,
) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_taskdist"));
    c.args(["run", SPEC, "--limit"])
        .arg(limit.to_string())
        .args(["--store", &db.url, "--lease", lease, "--probe", "tcp"])
        .args(addrs)
        .stdout(std::fs::File::create(logs.join(format!("{tag}.out"))).unwrap())
        .stderr(std::fs::File::create(logs.join(format!("{tag}.err"))).unwrap());
    c.spawn().expect("start taskdist run --store")
}

fn wait_ok(mut child: Child, logs: &Path, tag: &str, within: Duration) {
    let end = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let err = std::fs::read_to_string(logs.join(format!("{tag}.err"))).unwrap_or_default();
            assert!(status.success(), "{tag} failed ({status}):\n{err}");
            return;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let mut all = String::new();
            for e in std::fs::read_dir(logs).unwrap().flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().filter(|l| !l.contains("progress:")).collect();
                all += &format!(
                    "== {}\n{}\n",
                    e.path().display(),
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
            panic!("{tag} did not finish within {within:?}:\n{all}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn experiment_id(logs: &Path, tag: &str) -> String {
    let out = std::fs::read_to_string(logs.join(format!("{tag}.out"))).unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("experiment "))
        .unwrap_or_else(|| panic!("{tag} printed no `experiment ID` line: {out:?}"))
        .trim()
        .to_owned()
}

/// Every variant of `0..n` has exactly one outcome row, each done, and the events and jobs
/// rows match the variants' counts.
async fn assert_exactly_once(db: &TestDb, id: &str, n: i64) -> BTreeMap<String, i64> {
    let c = db.client().await;
    let rows = c
        .query(
            "SELECT variant, outcome, events FROM taskdist.variants WHERE experiment = $1",
            &[&id],
        )
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    for r in &rows {
        let v: i64 = r.get(0);
        assert!((0..n).contains(&v), "unselected variant {v}");
        assert!(seen.insert(v), "variant {v} twice");
        assert_eq!(r.get::<_, &str>(1), "done", "variant {v}");
    }
    assert_eq!(seen.len() as i64, n, "variants with an outcome");
    let events: i64 = c
        .query_one(
            "SELECT count(*) FROM taskdist.events WHERE experiment = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    let expected: i64 = c
        .query_one(
            "SELECT coalesce(sum(events), 0)::bigint FROM taskdist.variants WHERE experiment = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, expected, "event rows match the variants' counts");
    let open: i64 = c
        .query_one(
            "SELECT count(*) FROM taskdist.chunks WHERE experiment = $1 AND NOT finished",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0, "every chunk finished");
    c.query(
        "SELECT distributor, count(*) FROM taskdist.variants WHERE experiment = $1 GROUP BY 1",
        &[&id],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The restart test runs alone: the others hold this shared, it holds it exclusively.
static SERVER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn count(db: &TestDb, id: &str) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT count(*) FROM taskdist.variants WHERE experiment = $1",
            &[&id],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// Wait until `tag` printed its experiment id and at least `n` outcomes are in the store.
async fn wait_progress(db: &TestDb, logs: &Path, tag: &str, n: i64) -> String {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let out = std::fs::read_to_string(logs.join(format!("{tag}.out"))).unwrap_or_default();
        if out.contains("experiment ") {
            let id = experiment_id(logs, tag);
            if count(db, &id).await >= n {
                return id;
            }
        }
        assert!(Instant::now() < end, "no progress of {tag} in the store");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_distributors_share_one_experiment_exactly_once() {
    let _shared = SERVER.read().await;
    let Some(db) = TestDb::create("three").await else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let sims: Vec<Sim> = (0..3)
        .map(|i| Sim::start(&format!("127.71.{i}.2"), 16))
        .collect();
    let n = 20_000;
    let runs: Vec<Child> = sims
        .iter()
        .enumerate()
        .map(|(i, s)| distributor(&db, s, n, "30s", logs.path(), &format!("d{i}")))
        .collect();
    for (i, r) in runs.into_iter().enumerate() {
        wait_ok(r, logs.path(), &format!("d{i}"), Duration::from_secs(600));
    }
    let ids: BTreeSet<String> = (0..3)
        .map(|i| experiment_id(logs.path(), &format!("d{i}")))
        .collect();
    assert_eq!(ids.len(), 1, "all three joined one experiment: {ids:?}");
    let id = ids.into_iter().next().unwrap();
    let by = assert_exactly_once(&db, &id, n as i64).await;
    assert_eq!(by.len(), 3, "all three distributors wrote outcomes: {by:?}");

    // The same id with another spec is refused, naming the experiment.
    let out = Command::new(env!("CARGO_BIN_EXE_taskdist"))
        .args([
            "run",
            "hey",
            "--store",
            &db.url,
            "--experiment",
            &id,
            "--probe",
            "tcp",
        ])
        .args(&sims[0].addrs)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&id) && err.contains("different spec"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_distributors_chunks_are_taken_over() {
    let _shared = SERVER.read().await;
    let Some(db) = TestDb::create("kill").await else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let a = Sim::start("127.72.0.2", 8);
    let b = Sim::start("127.72.1.2", 8);
    let n = 6_000;
    let mut victim = distributor(&db, &a, n, "2s", logs.path(), "victim");
    let id = wait_progress(&db, logs.path(), "victim", 200).await;
    let survivor = distributor(&db, &b, n, "2s", logs.path(), "survivor");
    // Let the survivor take chunks of its own, then kill the victim without warning.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    victim.kill().unwrap();
    victim.wait().unwrap();
    let at_kill = count(&db, &id).await;
    assert!(
        at_kill < n as i64,
        "the victim was killed before the end ({at_kill})"
    );
    wait_ok(survivor, logs.path(), "survivor", Duration::from_secs(600));
    assert_exactly_once(&db, &id, n as i64).await;
    let err = std::fs::read_to_string(logs.path().join("survivor.err")).unwrap();
    assert!(
        err.contains("took over an expired chunk"),
        "the survivor took over the victim's chunks:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_distributors_late_writes_are_rejected() {
    let _shared = SERVER.read().await;
    let Some(db) = TestDb::create("stop").await else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let a = Sim::start("127.73.0.2", 8);
    let b = Sim::start("127.73.1.2", 8);
    let n = 6_000;
    let sleeper = distributor(&db, &a, n, "2s", logs.path(), "sleeper");
    let id = wait_progress(&db, logs.path(), "sleeper", 200).await;
    let other = distributor(&db, &b, n, "2s", logs.path(), "other");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let pid = sleeper.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    // Past the lease: the other distributor takes the sleeper's chunks over.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let err = std::fs::read_to_string(logs.path().join("other.err")).unwrap_or_default();
        if err.contains("took over an expired chunk") {
            break;
        }
        assert!(
            Instant::now() < end,
            "no takeover while the sleeper is stopped:\n{err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    wait_ok(other, logs.path(), "other", Duration::from_secs(600));
    wait_ok(sleeper, logs.path(), "sleeper", Duration::from_secs(600));
    assert_exactly_once(&db, &id, n as i64).await;
    // The sleeper woke up with results of chunks it no longer held: none was written.
    let err = std::fs::read_to_string(logs.path().join("sleeper.err")).unwrap();
    assert!(err.contains("lease of a chunk lost"), "{err}");
}

/// `pg_ctlcluster VERSION NAME restart` for the first online cluster, or
/// `TASKDIST_TEST_PG_RESTART` (a shell command).
fn restart_server() {
    let cmd = std::env::var("TASKDIST_TEST_PG_RESTART").unwrap_or_else(|_| {
        let out = Command::new("pg_lsclusters")
            .arg("-h")
            .output()
            .expect("pg_lsclusters");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.contains("online"))
            .unwrap_or_else(|| panic!("no online cluster in pg_lsclusters: {text}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        format!("pg_ctlcluster {} {} restart", f[0], f[1])
    });
    let st = Command::new("sh").args(["-c", &cmd]).status().unwrap();
    assert!(st.success(), "{cmd} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_survives_a_database_restart() {
    let _alone = SERVER.write().await;
    let Some(db) = TestDb::create("restart").await else {
        return;
    };
    let Some(()) = privileged::need(
        "the_run_survives_a_database_restart",
        "pg_ctlcluster rights (root)",
        Command::new("pg_lsclusters")
            .arg("-h")
            .output()
            .map_err(|e| e.to_string())
            .and_then(|o| {
                if o.status.success() && unsafe_is_root() {
                    Ok(())
                } else {
                    Err("pg_lsclusters missing or not root".to_owned())
                }
            }),
    ) else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let a = Sim::start("127.74.0.2", 8);
    let b = Sim::start("127.74.1.2", 8);
    let n = 8_000;
    let d1 = distributor(&db, &a, n, "30s", logs.path(), "r1");
    let id = wait_progress(&db, logs.path(), "r1", 300).await;
    let d2 = distributor(&db, &b, n, "30s", logs.path(), "r2");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = count(&db, &id).await;
    assert!(before < n as i64, "restart before the end ({before})");
    restart_server();
    wait_ok(d1, logs.path(), "r1", Duration::from_secs(600));
    wait_ok(d2, logs.path(), "r2", Duration::from_secs(600));
    assert_exactly_once(&db, &id, n as i64).await;
    let err = std::fs::read_to_string(logs.path().join("r1.err")).unwrap()
        + &std::fs::read_to_string(logs.path().join("r2.err")).unwrap();
    assert!(
        err.contains("database reachable again") || err.contains("results wait for the database"),
        "the restart was noticed:\n{err}"
    );
}

fn unsafe_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Rows of a CSV file without the columns that differ between runs (targets, host times,
/// attempts), as a set.
fn rows_without(path: &Path, drop: &[&str]) -> BTreeSet<Vec<String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let headers = r.headers().unwrap().clone();
    let keep: Vec<usize> = headers
        .iter()
        .enumerate()
        .filter(|(_, h)| !drop.contains(h))
        .map(|(i, _)| i)
        .collect();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            keep.iter().map(|&i| rec[i].to_owned()).collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_equals_a_local_run() {
    let _shared = SERVER.read().await;
    let Some(db) = TestDb::create("export").await else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let sim = Sim::start("127.75.0.2", 4);
    let n = 500;
    let d = distributor(&db, &sim, n, "30s", logs.path(), "x");
    wait_ok(d, logs.path(), "x", Duration::from_secs(300));
    let id = experiment_id(logs.path(), "x");
    let exported = logs.path().join("exported");
    let st = Command::new(env!("CARGO_BIN_EXE_taskdist"))
        .args(["export", "--store", &db.url, "--experiment", &id, "--out"])
        .arg(&exported)
        .status()
        .unwrap();
    assert!(st.success());
    let local = logs.path().join("local");
    let st = Command::new(env!("CARGO_BIN_EXE_taskdist"))
        .args([
            "run",
            SPEC,
            "--limit",
            &n.to_string(),
            "--probe",
            "tcp",
            "--out",
        ])
        .arg(&local)
        .args(&sim.addrs)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    // Target clocks run on between runs (the same simulated hosts serve both), so absolute
    // target times differ; durations, job numbers, exit types and task-sets do not.
    let volatile = [
        "target_time_ms",
        "start_ms",
        "end_ms",
        "target",
        "attempt",
        "attempts",
        "host_time_us",
        "started_host_us",
        "finished_host_us",
        "duration_us",
    ];
    for f in ["variants.csv", "tasks.csv", "jobs.csv", "events.csv"] {
        let a = rows_without(&exported.join(f), &volatile);
        let b = rows_without(&local.join(f), &volatile);
        assert!(!a.is_empty(), "{f} has rows");
        assert_eq!(a, b, "{f}: export and local run hold the same rows");
    }
    common::assert_rows_exactly_once(&exported, n);
    // The exported directory is a result directory like any other: `report` reads it.
    assert!(exported.join("run.json").exists() && exported.join("ledger").exists());
    // An unknown experiment is a usage error naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_taskdist"))
        .args([
            "export",
            "--store",
            &db.url,
            "--experiment",
            "nope",
            "--out",
        ])
        .arg(logs.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("experiment nope not found"));

    // The README's queries run on the result tables and find this experiment's rows.
    let readme = include_str!("../README.md");
    let sql = readme
        .split("```sql\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the README's SQL block");
    let c = db.client().await;
    let queries: Vec<&str> = sql.split(';').filter(|q| q.contains("SELECT")).collect();
    assert_eq!(queries.len(), 3, "three queries in the README");
    for q in queries {
        let q = q.replace("huge-30b7c7230780c878", &id);
        let rows = c
            .query(q.as_str(), &[])
            .await
            .unwrap_or_else(|e| panic!("README query failed: {e}\n{q}"));
        assert!(!rows.is_empty(), "README query found no rows:\n{q}");
    }
}

/// The database itself refuses a write fenced by a stale token: the test takes a chunk away
/// from a running distributor (as another distributor would after its lease ran out) while
/// the distributor's own clock still counts its lease as valid. The distributor's results for
/// that chunk are rejected; after the thief's short lease expires the distributor takes the
/// chunk back and completes the experiment exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_with_a_stale_token_are_rejected_by_the_database() {
    let _shared = SERVER.read().await;
    let Some(db) = TestDb::create("fence").await else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let sim = Sim::start("127.76.0.2", 8);
    let n = 4_000;
    let d = distributor(&db, &sim, n, "60s", logs.path(), "victim");
    let id = wait_progress(&db, logs.path(), "victim", 300).await;
    let c = db.client().await;
    let stolen = c
        .query_opt(
            "UPDATE taskdist.chunks SET owner = 'thief', token = nextval('taskdist.fence'), \
               lease_until = now() + interval '3 seconds' \
             WHERE experiment = $1 AND first_variant = (SELECT max(first_variant) \
               FROM taskdist.chunks WHERE experiment = $1 AND NOT finished) \
             RETURNING first_variant, end_variant, recorded",
            &[&id],
        )
        .await
        .unwrap();
    let Some(stolen) = stolen else {
        panic!("no unfinished chunk to steal: the run ended too early");
    };
    let (first, end): (i64, i64) = (stolen.get(0), stolen.get(1));
    wait_ok(d, logs.path(), "victim", Duration::from_secs(600));
    assert_exactly_once(&db, &id, n as i64).await;
    let err = std::fs::read_to_string(logs.path().join("victim.err")).unwrap();
    assert!(
        err.contains("lease of a chunk lost"),
        "the fence rejected the victim's writes to chunk {first}..{end}:\n{err}"
    );
    assert!(
        err.contains(&format!(
            "took over an expired chunk experiment={id} first={first}"
        )),
        "the victim took chunk {first}..{end} back after the thief's lease:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributors_given_the_same_targets_never_share_one() {
    let _shared = SERVER.read().await;
    let Some(db) = TestDb::create("targets").await else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let sim = Sim::start("127.77.0.2", 12);
    // d0 is given targets 0..8, d1 targets 4..12: the four in the middle are given to both.
    let n = 3_000;
    let d0 = distributor_on(&db, &sim.addrs[..8], n, "30s", logs.path(), "d0");
    let d1 = distributor_on(&db, &sim.addrs[4..], n, "30s", logs.path(), "d1");
    wait_ok(d0, logs.path(), "d0", Duration::from_secs(300));
    wait_ok(d1, logs.path(), "d1", Duration::from_secs(300));
    let id = experiment_id(logs.path(), "d0");
    assert_eq!(id, experiment_id(logs.path(), "d1"));
    let by = assert_exactly_once(&db, &id, n as i64).await;
    assert_eq!(by.len(), 2, "both distributors wrote outcomes: {by:?}");
    let c = db.client().await;
    let rows = c
        .query(
            "SELECT target, count(DISTINCT distributor), max(attempts) \
             FROM taskdist.variants WHERE experiment = $1 GROUP BY target",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 12, "every target was used");
    for r in &rows {
        let (target, n, attempts): (&str, i64, i64) = (r.get(0), r.get(1), r.get(2));
        assert_eq!(n, 1, "target {target} was driven by {n} distributors");
        // Without leases the second client of a shared target waits in its accept queue
        // until the session times out, and the variant is tried again elsewhere.
        assert_eq!(
            attempts, 1,
            "a variant on {target} needed {attempts} attempts"
        );
    }
    // The leases were given back when the runs ended.
    let left: i64 = c
        .query_one("SELECT count(*) FROM taskdist.targets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "target leases left behind");
}

/// The library's face of the store: two `Distributor`s built with
/// [`DistributorBuilder::store`], each with its own in-process simulated targets, meet in one
/// experiment and record every variant exactly once; a store does not mix with handlers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_distributors_share_one_experiment() {
    use taskdist::cluster::PgStore;
    use taskdist::distributor::ProbeKind;
    use taskdist::sim::{SimCluster, SimConfig};
    use taskdist::tasksets::Spec;
    use taskdist::{Distributor, DistributorError};

    let _shared = SERVER.read().await;
    let Some(db) = TestDb::create("builder").await else {
        return;
    };
    let n = 2_000;
    let mut runs = Vec::new();
    for i in 0..2 {
        let sim = SimCluster::start(
            8,
            format!("127.78.{i}.2").parse().unwrap(),
            0,
            SimConfig::default(),
        )
        .await
        .expect("simulated targets");
        let store = PgStore::connect(&db.url).await.expect("connect the store");
        let mut d = Distributor::builder()
            .hosts(sim.addrs().iter().map(|a| a.to_string()))
            .unwrap()
            .probe(ProbeKind::Tcp)
            .limit(n)
            .store(store, None)
            .build()
            .expect("a distributor with a store");
        d.start(Spec::load(SPEC).unwrap())
            .await
            .expect("join and start");
        runs.push((sim, d));
    }
    let ids: BTreeSet<String> = runs
        .iter()
        .map(|(_, d)| d.experiment().expect("joined").to_string())
        .collect();
    assert_eq!(ids.len(), 1, "both joined one experiment: {ids:?}");
    let id = ids.into_iter().next().unwrap();
    let (a, b) = runs.split_at_mut(1);
    let (ra, rb) = tokio::join!(a[0].1.wait(), b[0].1.wait());
    let (ra, rb) = (ra.expect("first run"), rb.expect("second run"));
    assert_eq!(
        ra.done + rb.done,
        n,
        "outcomes recorded by the two: {ra:?} {rb:?}"
    );
    for (_sim, d) in runs {
        d.close().await.expect("close");
    }
    let by = assert_exactly_once(&db, &id, n as i64).await;
    assert_eq!(by.len(), 2, "both distributors wrote outcomes: {by:?}");

    // A store records the results itself: handlers beside it are refused, by name.
    let store = PgStore::connect(&db.url).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let refused = Distributor::builder()
        .hosts(["127.78.9.2"])
        .unwrap()
        .store(store, None)
        .handler(taskdist::handlers::CsvHandler::create(out.path()).unwrap())
        .build();
    match refused {
        Err(DistributorError::Config(msg)) => assert!(msg.contains("handlers"), "{msg}"),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a store with handlers was accepted"),
    }
}

/// `run --store` with launched simulated targets and a health check: every variant exactly
/// once in the store, the launched targets' and health checks' summary on stderr, the checks
/// in `--out`'s health log, and no launched process left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_run_launches_and_checks_its_targets() {
    let _shared = SERVER.read().await;
    let Some(db) = TestDb::create("launch").await else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let n = 400;
    let launch = format!(
        "{} sim -n 1 --first {{ip}} --port {{port}}",
        env!("CARGO_BIN_EXE_taskdist")
    );
    let child = Command::new(env!("CARGO_BIN_EXE_taskdist"))
        .args(["run", SPEC, "--limit"])
        .arg(n.to_string())
        .args(["--store", &db.url, "--launch", &launch])
        .args(["--min", "1", "--max", "2", "--launch-ip", "127.72.0.10"])
        .args(["--port", "3311", "--health-check", "hey", "--out"])
        .arg(out.path())
        .stdout(std::fs::File::create(logs.path().join("l.out")).unwrap())
        .stderr(std::fs::File::create(logs.path().join("l.err")).unwrap())
        .spawn()
        .unwrap();
    wait_ok(child, logs.path(), "l", Duration::from_secs(300));
    let id = experiment_id(logs.path(), "l");
    assert_exactly_once(&db, &id, n as i64).await;

    let err = std::fs::read_to_string(logs.path().join("l.err")).unwrap();
    let summary = err
        .lines()
        .find(|l| l.starts_with("launched targets: "))
        .unwrap_or_else(|| panic!("no summary of the launched targets:\n{err}"));
    assert!(
        summary.contains("health checks: ") && !summary.contains(" 0 passed"),
        "{summary}"
    );
    let health = std::fs::read_to_string(out.path().join("health").join("checks.jsonl")).unwrap();
    let checks: Vec<serde_json::Value> = health
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!checks.is_empty(), "no health check logged");
    for c in &checks {
        assert_eq!(c["passed"], true, "{c}");
        assert!(
            c["target"].as_str().unwrap().starts_with("127.72.0.1"),
            "{c}"
        );
    }
    assert!(
        !out.path().join("variants.csv").exists(),
        "results go to the store, not --out"
    );

    // Every launched instance was a child of the run and is gone with it.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("--first 127.72.0.1"))
        .collect();
    assert!(
        left.is_empty(),
        "launched targets outlived the run: {left:?}"
    );
}

/// Writes an experiments file with `urgent` and `background` (1,500 variants each) at the
/// given priorities.
fn experiments_file(dir: &Path, file: &str, urgent: i64, background: i64) -> String {
    let path = dir.join(file);
    std::fs::write(
        &path,
        format!(
            "[[experiment]]\nspec = \"{SPEC}\"\nname = \"urgent\"\nlimit = 1500\npriority = {urgent}\n\n\
             [[experiment]]\nspec = \"{SPEC}\"\nname = \"background\"\nlimit = 1500\npriority = {background}\n"
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

/// Priorities hold across the cluster: both distributors run every `urgent` variant before
/// the `background` ones, at the priorities the store recorded, even though the second one
/// was given the opposite priorities in its own experiments file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stores_priorities_order_every_distributor() {
    let _shared = SERVER.read().await;
    let Some(db) = TestDb::create("priorities").await else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let sims: Vec<Sim> = (0..2)
        .map(|i| Sim::start(&format!("127.79.{i}.2"), 8))
        .collect();
    let start = |file: &str, tag: &str, sim: &Sim| {
        Command::new(env!("CARGO_BIN_EXE_taskdist"))
            .args(["run", file, "--store", &db.url, "--probe", "tcp"])
            .args(&sim.addrs)
            .stdout(std::fs::File::create(logs.path().join(format!("{tag}.out"))).unwrap())
            .stderr(std::fs::File::create(logs.path().join(format!("{tag}.err"))).unwrap())
            .spawn()
            .expect("start taskdist run --store")
    };
    let first = experiments_file(logs.path(), "first.toml", 10, 0);
    let second = experiments_file(logs.path(), "second.toml", 0, 10);
    let d0 = start(&first, "d0", &sims[0]);
    // The first creates both experiments before the second joins them.
    let end = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(logs.path().join("d0.out"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("experiment "))
        .count()
        < 2
    {
        assert!(Instant::now() < end, "d0 did not create its experiments");
        std::thread::sleep(Duration::from_millis(50));
    }
    let d1 = start(&second, "d1", &sims[1]);
    wait_ok(d0, logs.path(), "d0", Duration::from_secs(300));
    wait_ok(d1, logs.path(), "d1", Duration::from_secs(300));
    let ids = |tag: &str| -> Vec<String> {
        std::fs::read_to_string(logs.path().join(format!("{tag}.out")))
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("experiment "))
            .map(|s| s.trim().to_owned())
            .collect()
    };
    let (ids0, ids1) = (ids("d0"), ids("d1"));
    assert_eq!(ids0, ids1, "both joined the same two experiments");
    let (urgent, background) = (&ids0[0], &ids0[1]);
    assert!(urgent.starts_with("urgent-") && background.starts_with("background-"));
    let by_u = assert_exactly_once(&db, urgent, 1500).await;
    let by_b = assert_exactly_once(&db, background, 1500).await;
    assert_eq!(
        by_u.len(),
        2,
        "both distributors ran urgent variants: {by_u:?}"
    );
    assert_eq!(
        by_b.len(),
        2,
        "both distributors ran background variants: {by_b:?}"
    );
    let err1 = std::fs::read_to_string(logs.path().join("d1.err")).unwrap();
    assert!(
        err1.contains("runs at priority 10 as recorded in the store"),
        "d1 said that the store's priority rules:\n{err1}"
    );

    // Per distributor: hardly any background variant started before the urgent ones were
    // nearly all running (strict priority leaves only the gaps while a chunk is claimed).
    let c = db.client().await;
    for who in by_u.keys() {
        let rows = c
            .query(
                "SELECT experiment, started_host_us FROM taskdist.variants \
                 WHERE distributor = $1 ORDER BY started_host_us",
                &[who],
            )
            .await
            .unwrap();
        let urgent_starts: Vec<i64> = rows
            .iter()
            .filter(|r| r.get::<_, &str>(0) == urgent.as_str())
            .map(|r| r.get(1))
            .collect();
        let p90 = urgent_starts[urgent_starts.len() * 9 / 10];
        let early = rows
            .iter()
            .filter(|r| r.get::<_, &str>(0) == background.as_str() && r.get::<_, i64>(1) < p90)
            .count();
        let background_here = by_b.get(who).copied().unwrap_or(0) as usize;
        assert!(
            early * 20 <= background_here.max(20),
            "{who}: {early} of its {background_here} background variants started before 90 % \
             of its {} urgent ones",
            urgent_starts.len()
        );
    }
}

/// A `taskdist serve --store` process (killed on drop), its URL and its log lines.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Lines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn start_service(db: &TestDb, data: &Path) -> (Service, String, Lines) {
    let mut serve = Command::new(env!("CARGO_BIN_EXE_taskdist"))
        .args(["serve", "--simulate", "8", "--listen", "127.0.0.1:0"])
        .args(["--lease", "3s", "--store"])
        .arg(&db.url)
        .arg("--data")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("taskdist serve --store starts");
    let stderr = serve.stderr.take().unwrap();
    let serve = Service(serve);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let url = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the service prints its address");
        if let Some(u) = l.strip_prefix("taskdist service on ") {
            break u.to_owned();
        }
    };
    let log: Lines = Default::default();
    let sink = log.clone();
    std::thread::spawn(move || {
        while let Ok(l) = rx.recv() {
            sink.lock().unwrap().push(l);
        }
    });
    (serve, url, log)
}

/// The `Authorization` header of the service with data in `data`.
fn bearer(data: &Path) -> String {
    let token = std::fs::read_to_string(data.join("token")).unwrap();
    format!("Bearer {}", token.trim())
}

/// Submits `n` variants of the test spec to the service; returns the service's id.
async fn submit(url: &str, auth: &str, n: u64) -> u64 {
    let submitted: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/api/v1/experiments"))
        .header("authorization", auth)
        .json(&serde_json::json!({"catalog": SPEC, "limit": n}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .expect("submitted")
        .json()
        .await
        .unwrap();
    submitted["id"].as_u64().unwrap()
}

/// Polls the service's experiment `sid` until it is done.
async fn service_done(url: &str, auth: &str, sid: u64, log: &Lines) -> serde_json::Value {
    let http = reqwest::Client::new();
    let end = Instant::now() + Duration::from_secs(180);
    loop {
        let v: serde_json::Value = http
            .get(format!("{url}/api/v1/experiments/{sid}"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["state"] == "done" {
            return v;
        }
        assert!(
            Instant::now() < end,
            "the service's experiment did not end: {v}\n{}",
            log.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `taskdist serve --store`: an experiment submitted to the service is shared with a
/// `taskdist run --store` on other targets; each variant has one outcome in the store, the
/// service shows the store's id, and once complete its result downloads hold every variant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_shares_its_experiments_through_the_store() {
    let _shared = SERVER.read().await;
    let Some(db) = TestDb::create("serve").await else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let data = logs.path().join("lab");
    let (serve, url, service_log) = start_service(&db, &data);
    let auth = bearer(&data);
    let http = reqwest::Client::new();
    let n = 3_000u64;
    let sid = submit(&url, &auth, n).await;
    // A distributor with targets of its own joins the same experiment.
    let sim = Sim::start("127.76.0.2", 8);
    let d = distributor(&db, &sim, n, "30s", logs.path(), "d");
    wait_ok(d, logs.path(), "d", Duration::from_secs(300));
    let id = experiment_id(logs.path(), "d");
    let view = service_done(&url, &auth, sid, &service_log).await;
    assert_eq!(view["store_experiment"], id.as_str(), "{view}");
    let by = assert_exactly_once(&db, &id, n as i64).await;
    assert_eq!(
        by.len(),
        2,
        "the service and the distributor both ran variants: {by:?}"
    );
    // Once done, the service shows the whole experiment's counts, not only its own.
    assert_eq!(view["done"].as_u64(), Some(n), "{view}");
    assert_eq!(view["bad"].as_u64(), Some(0), "{view}");
    // The complete experiment was exported into the service's result directory.
    let csv = http
        .get(format!(
            "{url}/api/v1/experiments/{sid}/results/variants.csv"
        ))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .expect("variants.csv downloads")
        .text()
        .await
        .unwrap();
    assert_eq!(
        csv.lines().count() as u64,
        n + 1,
        "a header and every variant"
    );
    // Bad variants cannot be run again on a shared experiment: a clear conflict.
    let retry = http
        .post(format!("{url}/api/v1/experiments/{sid}/retry-bad"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status().as_u16(), 409);
    let body = retry.text().await.unwrap();
    assert!(body.contains("shared through the store"), "{body}");
    drop(serve);
}

/// `kill -9` of a `serve --store` mid-run, then a restart on the same data directory: it
/// joins the store's experiment again, takes its chunks back once their leases expire, and
/// every variant has one outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_rejoins_its_store_experiment() {
    let _shared = SERVER.read().await;
    let Some(db) = TestDb::create("serve_kill").await else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let data = logs.path().join("lab");
    let (serve, url, _log) = start_service(&db, &data);
    let auth = bearer(&data);
    let n = 20_000u64;
    let sid = submit(&url, &auth, n).await;
    let c = db.client().await;
    let end = Instant::now() + Duration::from_secs(120);
    let id = loop {
        let row = c
            .query_opt("SELECT id FROM taskdist.experiments", &[])
            .await
            .unwrap();
        if let Some(r) = row {
            let id: String = r.get(0);
            if count(&db, &id).await >= 500 {
                break id;
            }
        }
        assert!(
            Instant::now() < end,
            "no progress of the service in the store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(serve); // SIGKILL
    let before = count(&db, &id).await;
    assert!(before < n as i64, "the run ended before the kill");
    let (_serve, url, log) = start_service(&db, &data);
    let view = service_done(&url, &auth, sid, &log).await;
    assert_eq!(view["store_experiment"], id.as_str(), "{view}");
    assert_exactly_once(&db, &id, n as i64).await;
    let took_over = log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("took over an expired chunk"));
    assert!(
        took_over,
        "the restarted service took the killed one's chunks back"
    );
}

/// Pausing a shared experiment in the service hands its chunks back: a distributor elsewhere
/// completes the experiment meanwhile, and the resumed service then ends it as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_service_experiment_leaves_its_work_to_the_others() {
    let _shared = SERVER.read().await;
    let Some(db) = TestDb::create("serve_pause").await else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let data = logs.path().join("lab");
    let (_serve, url, log) = start_service(&db, &data);
    let auth = bearer(&data);
    let n = 20_000u64;
    let sid = submit(&url, &auth, n).await;
    let http = reqwest::Client::new();
    let c = db.client().await;
    let end = Instant::now() + Duration::from_secs(120);
    let id = loop {
        if let Some(r) = c
            .query_opt("SELECT id FROM taskdist.experiments", &[])
            .await
            .unwrap()
        {
            let id: String = r.get(0);
            if count(&db, &id).await >= 200 {
                break id;
            }
        }
        assert!(
            Instant::now() < end,
            "no progress of the service in the store"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    http.post(format!("{url}/api/v1/experiments/{sid}/pause"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .expect("paused");
    let at_pause = count(&db, &id).await;
    assert!(at_pause < n as i64, "the run ended before the pause");
    // The service's chunks come back without waiting for the lease (30 s here for the
    // distributor; the service's own is 3 s, so wait for the hand-back message itself).
    let end = Instant::now() + Duration::from_secs(30);
    while !log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("chunks handed back"))
    {
        assert!(Instant::now() < end, "the paused service kept its chunks");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held: i64 = c
        .query_one(
            "SELECT count(*) FROM taskdist.chunks WHERE NOT finished AND lease_until > now()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        held, 0,
        "no chunk is leased while the only distributor is paused"
    );
    let sim = Sim::start("127.75.0.2", 8);
    let d = distributor(&db, &sim, n, "30s", logs.path(), "d");
    wait_ok(d, logs.path(), "d", Duration::from_secs(300));
    assert_eq!(experiment_id(logs.path(), "d"), id);
    assert_exactly_once(&db, &id, n as i64).await;
    http.post(format!("{url}/api/v1/experiments/{sid}/resume"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .expect("resumed");
    let view = service_done(&url, &auth, sid, &log).await;
    assert_eq!(view["store_experiment"], id.as_str());
}
