//! Variant throughput: enumeration alone, and enumeration plus the XML description, for 3-task
//! sets. Run with `cargo bench -p taskdist-tasksets --bench variants`; criterion reports
//! "thrpt" in variants per second (elements/s).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use taskdist_tasksets::{Spec, TaskSet};

/// Variants per measured iteration.
const BATCH: u64 = 100_000;

fn specs() -> Vec<(&'static str, Spec)> {
    let random = Spec::from_toml_str(
        r#"
        seed = 3
        samples = "unbounded"
        [[task]]
        pkg = "hey"
        count = 3
        priority = { uniform = [1, 127] }
        period_ms = { log_uniform = [10, 2000] }
        numberofjobs = 2
        config = { arg1 = { uniform = [1, 100000] } }
        "#,
        "bench-random",
    )
    .expect("bench spec");
    vec![
        (
            "huge (3 tasks, enumerated, 10^12)",
            Spec::load("huge").expect("catalog"),
        ),
        ("random (3 tasks, seeded draws, unbounded)", random),
    ]
}

fn bench(c: &mut Criterion) {
    for (label, spec) in specs() {
        let space = spec.space().clone();
        let mut g = c.benchmark_group(label);
        g.throughput(Throughput::Elements(BATCH));

        let mut start = 0u64;
        g.bench_function("enumerate (next_into)", |b| {
            let mut set = TaskSet::default();
            b.iter(|| {
                let mut it = space.iter_from(start);
                for _ in 0..BATCH {
                    black_box(it.next_into(&mut set));
                }
                start += BATCH;
            })
        });

        let mut start = 0u64;
        g.bench_function("enumerate + XML (next_into, write_xml)", |b| {
            let mut set = TaskSet::default();
            let mut xml = String::with_capacity(2048);
            b.iter(|| {
                let mut it = space.iter_from(start);
                for _ in 0..BATCH {
                    it.next_into(&mut set);
                    xml.clear();
                    set.write_xml(&mut xml);
                    black_box(xml.len());
                }
                start += BATCH;
            })
        });

        let mut start = 0u64;
        g.bench_function("get (owned TaskSet per variant)", |b| {
            b.iter(|| {
                for i in start..start + BATCH {
                    black_box(space.get(i).ok());
                }
                start += BATCH;
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
