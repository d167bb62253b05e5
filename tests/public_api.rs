//! A whole experiment written against the crate root only (`taskdist::{...}` plus the
//! re-exported model and handler crates): the surface a library user sees. Creating a result
//! directory, running, resuming with nothing left, and the typed give-up error.

use std::net::Ipv4Addr;
use std::time::Duration;

use taskdist::distributor::{ProbeKind, Selection, Workload};
use taskdist::handlers::reader::read_variants;
use taskdist::sim::{SimCluster, SimConfig};
use taskdist::{
    Distributor, DistributorError, HandlerKind, ResultDir, ResumeOptions, Task, TaskSet,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_through_the_crate_root() {
    let sim = SimCluster::start(2, Ipv4Addr::new(127, 0, 0, 80), 0, SimConfig::default())
        .await
        .unwrap();
    let hosts: Vec<String> = sim.addrs().iter().map(|a| a.to_string()).collect();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let spec = taskdist::tasksets::Spec::load("hey").unwrap();
    let selection = Selection::default();

    let mut dir = ResultDir::create(&out, &Workload::from(spec.clone()), selection).unwrap();
    let mut d = Distributor::builder()
        .hosts(&hosts)
        .unwrap()
        .probe(ProbeKind::Tcp)
        .result_dir(&mut dir, &[HandlerKind::Csv])
        .unwrap()
        .build()
        .unwrap();
    d.start(Workload::from(spec.clone())).await.unwrap();
    let summary = d.wait().await.unwrap();
    assert_eq!((summary.done, summary.bad), (4, 0));
    d.close().await.unwrap();
    drop(dir);
    let rows: Vec<_> = read_variants(out.join("variants.csv"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 4);

    // Resuming a finished run: nothing is missing.
    let dir = ResultDir::resume(
        &out,
        &Workload::from(spec),
        selection,
        ResumeOptions::default(),
    )
    .unwrap();
    assert!(dir.first_missing().is_none());
    assert!(!dir.has_bad());
    drop(dir);

    // A single task-set, and the typed give-up error when no target is usable.
    let mut d = Distributor::builder()
        .hosts(["127.0.0.81:1"])
        .unwrap()
        .probe(ProbeKind::Tcp)
        .give_up_after(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    d.start(TaskSet::new(vec![Task::new(0, "hey")]).unwrap())
        .await
        .unwrap();
    let err = d.wait().await.unwrap_err();
    assert!(matches!(err, DistributorError::GaveUp { .. }), "{err}");
    d.close().await.unwrap();
    sim.shutdown().await;
}
