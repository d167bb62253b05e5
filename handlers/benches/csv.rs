//! Events per second written by the file handlers.
//!
//! Each iteration writes one finished variant of 3 tasks x 10 jobs (63 events, 30 jobs, 3
//! tasks, 1 variant row) to files in a fresh temporary directory and the measured time
//! includes the final flush to the OS. Throughput is reported in events (elements) per second.
//!
//! Run: `cargo bench -p taskdist-handlers --bench csv`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use taskdist_handlers::{CsvHandler, JsonlHandler, SqliteHandler, VariantFinished};

fn variant() -> VariantFinished {
    let v = common::finished(0, 1, 3, 10);
    assert_eq!(v.events.len(), 63);
    v
}

fn handlers(c: &mut Criterion) {
    let mut v = variant();
    let mut g = c.benchmark_group("write_finished_3x10");
    g.throughput(Throughput::Elements(v.events.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));

    g.bench_function("csv", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("temporary directory");
            let mut h = CsvHandler::create(dir.path()).expect("csv handler");
            let start = Instant::now();
            for i in 0..iters {
                v.id.variant = i;
                h.write_finished(&v).expect("write");
            }
            h.flush_files().expect("flush");
            start.elapsed()
        })
    });

    g.bench_function("jsonl", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("temporary directory");
            let mut h =
                JsonlHandler::create(dir.path().join("results.jsonl")).expect("jsonl handler");
            let start = Instant::now();
            for i in 0..iters {
                v.id.variant = i;
                h.write_finished(&v).expect("write");
            }
            h.flush_file().expect("flush");
            start.elapsed()
        })
    });

    g.bench_function("sqlite", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("temporary directory");
            let mut h =
                SqliteHandler::create(dir.path().join("results.sqlite")).expect("sqlite handler");
            let start = Instant::now();
            for i in 0..iters {
                v.id.variant = i;
                h.write_finished(&v).expect("write");
                // The distributor flushes in batches; commit every 1000 variants here.
                if i % 1000 == 999 {
                    h.commit().expect("commit");
                }
            }
            h.commit().expect("commit");
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, handlers);
criterion_main!(benches);
