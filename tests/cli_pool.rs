//! `taskdist run` on a shared pool: pool files, simulated groups with labels, requirements,
//! strategies, experiments files, and `kill -9` + `--resume` of several experiments.
//!
//! Network rule: every target is simulated on 127.0.0.x (in this process or by `--simulate`).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use taskdist::handlers::reader::read_variants;
use taskdist::protocol::Dialect;
use taskdist::sim::{SimCluster, SimConfig};

fn taskdist() -> Command {
    Command::new(env!("CARGO_BIN_EXE_taskdist"))
}

fn run(args: &[&str], cwd: &Path) -> Output {
    taskdist().args(args).current_dir(cwd).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn rows(dir: &Path) -> Vec<taskdist::handlers::reader::VariantRow> {
    read_variants(dir.join("variants.csv"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// `run` on a blocking thread (for tests that serve simulated targets from this runtime).
async fn run_blocking(args: &[&str], cwd: &Path) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let cwd = cwd.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args, &cwd)
    })
    .await
    .unwrap()
}

#[test]
fn list_strategies_names_each_with_a_description() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&["list", "strategies"], tmp.path());
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for name in [
        "greedy",
        "round-robin",
        "fastest",
        "affinity",
        "specialization",
    ] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(name)),
            "{out}"
        );
    }
}

#[test]
fn simulated_groups_and_a_requirement_choose_the_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(
        &[
            "-q",
            "run",
            "hey-priorities",
            "--simulate",
            "3:v3:board=a",
            "--simulate",
            "2:v3:board=b",
            "--require",
            "board=b",
            "--limit",
            "40",
            "--handler",
            "csv",
            "--out",
            "out",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let rows = rows(&tmp.path().join("out"));
    assert_eq!(rows.len(), 40);
    // Group b is the 4th and 5th simulated host: 127.0.0.5 and 127.0.0.6.
    for r in &rows {
        let last = match r.target.ip() {
            std::net::IpAddr::V4(ip) => ip.octets()[3],
            _ => 0,
        };
        assert!(
            matches!(last, 5 | 6),
            "variant {} ran on {}",
            r.variant,
            r.target
        );
    }
}

#[test]
fn an_unservable_requirement_is_named_and_the_run_gives_up() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(
        &[
            "run",
            "hey",
            "--simulate",
            "2:board=a",
            "--require",
            "board=b",
            "--give-up-after",
            "2s",
            "--out",
            "out",
        ],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("board") && err.contains("no target group"),
        "{err}"
    );
    assert!(err.contains("--resume"), "{err}");
}

#[test]
fn bad_pool_input_is_a_usage_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("lab.toml"),
        "[[group]]\nhosts = [\"127.0.0.2\"]\nlables = { board = \"a\" }\n",
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec!["run", "hey", "--pool", "lab.toml"],
            &["lab.toml", "lables"],
        ),
        (
            vec!["run", "hey", "--pool", "missing.toml"],
            &["missing.toml"],
        ),
        (
            vec!["run", "hey", "--simulate", "2", "--require", "cores>>2"],
            &["cores>>2"],
        ),
        (
            vec!["run", "hey", "--simulate", "2", "--strategy", "fast"],
            &["fast", "round-robin"],
        ),
        (vec!["run", "hey", "--simulate", "2:v9"], &["2:v9"]),
        (
            vec!["run", "hey", "--simulate", "2", "--weight", "0"],
            &["positive"],
        ),
    ];
    for (args, needles) in cases {
        let o = run(&args, tmp.path());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        for n in needles {
            assert!(err.contains(n), "{args:?}: {n:?} missing in {err}");
        }
        assert!(
            !tmp.path().join("results").exists(),
            "{args:?} wrote results"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_file_with_mixed_dialects_and_labels() {
    let v1 = SimCluster::start(
        2,
        Ipv4Addr::new(127, 0, 50, 2),
        0,
        SimConfig {
            dialect: Dialect::V1,
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    let v3 = SimCluster::start(2, Ipv4Addr::new(127, 0, 50, 10), 0, SimConfig::default())
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let list = |s: &SimCluster| {
        s.addrs()
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    std::fs::write(
        tmp.path().join("lab.toml"),
        format!(
            "[[group]]\nname = \"old\"\nhosts = [{}]\ndialect = \"v1\"\nlabels = {{ board = \"imx6\", cores = 2 }}\n\n\
             [[group]]\nname = \"new\"\nhosts = [{}]\nlabels = {{ board = \"imx6\", cores = 4 }}\n",
            list(&v1),
            list(&v3)
        ),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("adm.toml"),
        "goal = \"fairness\"\nquery_interval_ms = 100\n",
    )
    .unwrap();
    let o = run_blocking(
        &[
            "-q",
            "run",
            "hey",
            "--pool",
            "lab.toml",
            "--probe",
            "tcp",
            "--limit",
            "30",
            "--admission",
            "adm.toml",
            "--handler",
            "csv",
            "--out",
            "adm",
        ],
        tmp.path(),
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let v1_addrs: Vec<SocketAddr> = v1.addrs().to_vec();
    for r in rows(&tmp.path().join("adm")) {
        assert!(
            v1_addrs.contains(&r.target),
            "admission data went to {}",
            r.target
        );
    }
    let o = run_blocking(
        &[
            "-q",
            "run",
            "hey",
            "--pool",
            "lab.toml",
            "--probe",
            "tcp",
            "--limit",
            "30",
            "--require",
            "cores>=4",
            "--handler",
            "csv",
            "--out",
            "big",
        ],
        tmp.path(),
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let v3_addrs: Vec<SocketAddr> = v3.addrs().to_vec();
    for r in rows(&tmp.path().join("big")) {
        assert!(v3_addrs.contains(&r.target), "cores>=4 ran on {}", r.target);
    }
    v1.shutdown().await;
    v3.shutdown().await;
}

#[test]
fn kill_9_then_resume_keeps_every_experiment_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (na, nb) = (6_000u32, 4_000u32);
    std::fs::write(
        tmp.path().join("a.toml"),
        common::spec_named("a", "hey", na).text(),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("b.toml"),
        common::spec_named("b", "hey", nb).text(),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("week.toml"),
        "[[experiment]]\nspec = \"a.toml\"\npriority = 1\n\n\
         [[experiment]]\nspec = \"b.toml\"\nname = \"urgent\"\npriority = 1\nweight = 3\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let mut child = taskdist()
        .args([
            "-q",
            "run",
            "week.toml",
            "--simulate",
            "4",
            "--handler",
            "csv",
            "--out",
            "out",
        ])
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let lines = |name: &str| {
        std::fs::read_to_string(out.join(name).join("ledger"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    while lines("a") < 3 || lines("urgent") < 3 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed; make it longer");
        }
        assert!(Instant::now() < deadline, "no progress in the ledgers");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    const RESUME: [&str; 8] = [
        "run",
        "week.toml",
        "--simulate",
        "4",
        "--handler",
        "csv",
        "--resume",
        "out",
    ];
    let o = run(&[&["-q"][..], &RESUME[..]].concat(), tmp.path());
    assert!(o.status.success(), "{}", text(&o));
    common::assert_rows_exactly_once(&out.join("a"), u64::from(na));
    common::assert_rows_exactly_once(&out.join("urgent"), u64::from(nb));
    // Running it again finds nothing to do.
    let o = run(&RESUME, tmp.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing to do"),
        "{}",
        text(&o)
    );
}

#[test]
fn an_experiments_file_with_a_repeated_name_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("week.toml"),
        "[[experiment]]\nspec = \"hey\"\n\n[[experiment]]\nspec = \"hey\"\n",
    )
    .unwrap();
    let o = run(&["run", "week.toml", "--simulate", "2"], tmp.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("used twice"),
        "{}",
        text(&o)
    );
    assert!(!tmp.path().join("results").exists());
}
