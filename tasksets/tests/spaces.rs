//! Variant spaces: index <-> enumeration agreement, completeness, seeded reproducibility,
//! limits, generators.

use std::collections::HashSet;

use proptest::prelude::*;
use taskdist_tasksets::{SpaceLen, Spec, TaskSet, VariantError};

fn spec(text: &str) -> Spec {
    Spec::from_toml_str(text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn finite(s: &Spec) -> u64 {
    match s.len() {
        SpaceLen::Finite(n) => u64::try_from(n).unwrap(),
        SpaceLen::Unbounded => panic!("unbounded"),
    }
}

/// Render one attribute value spec for the generated specs.
fn value_spec(kind: u8, a: u64, b: u64, c: u64) -> String {
    let (lo, hi) = (a.min(b), a.max(b));
    match kind % 6 {
        0 => format!("{lo}"),
        1 => format!("[{lo}, {hi}, {c}]"),
        2 => format!("{{ from = {lo}, to = {hi}, step = {} }}", c % 3 + 1),
        3 => format!("{{ uniform = [{lo}, {hi}] }}"),
        4 => format!("{{ log_uniform = [{}, {}] }}", lo.max(1), hi.max(1)),
        _ => format!("{{ choice = [{lo}, {hi}, {c}] }}"),
    }
}

prop_compose! {
    /// A small random spec (at most a few hundred variants), as TOML text.
    fn arb_spec_text()(
        groups in proptest::collection::vec(
            ((0u8..6, 0u64..6, 0u64..6, 0u64..6),   // priority
             (0u8..6, 1u64..9, 1u64..9, 1u64..9),   // period
             (0u8..3, 1u64..4),                     // count: fixed / list / range
             any::<bool>(),                         // independent
             (0u8..6, 0u64..5, 0u64..5, 0u64..5),   // config arg1
             0u8..3),                               // pkg: fixed / list / choice
            1..3),
        seed in 0..=i64::MAX as u64,
        samples in 0u8..3,
        shuffled in any::<bool>(),
    ) -> String {
        let mut t = format!("seed = {seed}\n");
        let mut random = false;
        for ((pk, pa, pb, pc), (qk, qa, qb, qc), (ck, cn), indep, (ak, aa, ab, ac), pkgk) in groups {
            random |= matches!(pk % 6, 3..=5) || matches!(qk % 6, 3..=5)
                || matches!(ak % 6, 3..=5) || pkgk == 2;
            t += "[[task]]\n";
            t += match pkgk {
                0 => "pkg = \"hey\"\n",
                1 => "pkg = [\"hey\", \"pi\"]\n",
                _ => "pkg = { choice = [\"hey\", \"pi\", \"linpack\"] }\n",
            };
            t += &match ck {
                0 => format!("count = {cn}\n"),
                1 => format!("count = [1, {cn}]\n"),
                _ => format!("count = {{ from = 1, to = {cn} }}\n"),
            };
            t += &format!("independent = {indep}\n");
            t += &format!("priority = {}\n", value_spec(pk, pa, pb, pc));
            t += &format!("period_ms = {}\n", value_spec(qk, qa * 100, qb * 100, qc * 100));
            t += &format!("config = {{ arg1 = {} }}\n", value_spec(ak, aa, ab, ac));
        }
        let unbounded = random && samples == 2;
        if random {
            t = match samples {
                0 => t,
                1 => format!("samples = 3\n{t}"),
                _ => format!("samples = \"unbounded\"\n{t}"),
            };
        }
        if shuffled && !unbounded {
            t = format!("order = \"shuffled\"\n{t}");
        }
        t
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn enumeration_agrees_with_get(text in arb_spec_text()) {
        let s = spec(&text);
        let space = s.space();
        let n = space.len().addressable().unwrap_or(300).min(300);
        let mut reused = TaskSet::default();
        let mut walker = space.iter();
        for (i, set) in space.iter().take(n as usize) {
            let direct = space.get(i).unwrap();
            prop_assert_eq!(&set, &direct, "index {}", i);
            prop_assert_eq!(walker.next_into(&mut reused), Some(i));
            prop_assert_eq!(&reused, &direct);
            direct.validate().unwrap();
            let ids: Vec<u32> = direct.tasks.iter().map(|t| t.id).collect();
            prop_assert_eq!(ids, (0..direct.tasks.len() as u32).collect::<Vec<_>>());
        }
        // Starting in the middle and skipping agree as well.
        let mid = n / 2;
        if let Some((i, set)) = space.iter_from(mid).next() {
            prop_assert_eq!(i, mid);
            prop_assert_eq!(set, space.get(mid).unwrap());
        }
        for (i, set) in space.iter().step_by(7).take(20) {
            prop_assert_eq!(i % 7, 0);
            prop_assert_eq!(set, space.get(i).unwrap());
        }
    }

    #[test]
    fn draws_do_not_depend_on_order_or_instance(text in arb_spec_text()) {
        let a = spec(&text);
        let b = spec(&text);
        let n = a.space().len().addressable().unwrap_or(50).min(50);
        let forward: Vec<TaskSet> = (0..n).map(|i| a.space().get(i).unwrap()).collect();
        // Reverse order, a different instance, and a reused buffer dirtied by other variants.
        let mut buf = TaskSet::default();
        for i in (0..n).rev() {
            b.space().get_into(i, &mut buf).unwrap();
            prop_assert_eq!(&buf, &forward[i as usize]);
        }
    }
}

#[test]
fn enumerated_space_is_the_full_cartesian_product() {
    let s = spec(
        r#"
        [[task]]
        pkg = ["hey", "pi"]
        priority = [1, 5, 9]
        period_ms = { from = 100, to = 350, step = 125 }
        config = { arg1 = [7, 8] }
        [[task]]
        pkg = "namaste"
        count = [1, 2]
        numberofjobs = { from = 1, to = 2 }
        "#,
    );
    // group 1: 2*3*3*2 = 36; group 2: count 1 -> 2, count 2 (shared) -> 2: 4
    assert_eq!(s.len(), SpaceLen::Finite(36 * 4));
    let mut seen = HashSet::new();
    let mut expected = HashSet::new();
    for pkg in ["hey", "pi"] {
        for prio in [1u32, 5, 9] {
            for per in [100u64, 225, 350] {
                for arg in ["7", "8"] {
                    for count in [1usize, 2] {
                        for jobs in [1u32, 2] {
                            expected.insert((
                                pkg.to_string(),
                                prio,
                                per,
                                arg.to_string(),
                                count,
                                jobs,
                            ));
                        }
                    }
                }
            }
        }
    }
    for (_, set) in s.space().iter() {
        let t0 = &set.tasks[0];
        let rest = &set.tasks[1..];
        assert!(rest
            .iter()
            .all(|t| t.pkg == "namaste" && t.numberofjobs == rest[0].numberofjobs));
        seen.insert((
            t0.pkg.clone(),
            t0.priority,
            t0.period_ms,
            t0.config_value("arg1").unwrap().to_string(),
            rest.len(),
            rest[0].numberofjobs,
        ));
    }
    assert_eq!(seen, expected);
}

#[test]
fn independent_copies_multiply_and_shared_copies_do_not() {
    let shared = spec("[[task]]\npkg = \"hey\"\ncount = 3\npriority = [1, 2, 3, 4]\n");
    assert_eq!(shared.len(), SpaceLen::Finite(4));
    let v = shared.space().get(2).unwrap();
    assert!(v.tasks.iter().all(|t| t.priority == 3));
    let indep =
        spec("[[task]]\npkg = \"hey\"\ncount = 3\nindependent = true\npriority = [1, 2, 3, 4]\n");
    assert_eq!(indep.len(), SpaceLen::Finite(64));
    let v = indep.space().get(1 + 2 * 4 + 3 * 16).unwrap();
    let prios: Vec<u32> = v.tasks.iter().map(|t| t.priority).collect();
    assert_eq!(prios, [2, 3, 4]);
    let all: HashSet<Vec<u32>> = indep
        .space()
        .iter()
        .map(|(_, s)| s.tasks.iter().map(|t| t.priority).collect())
        .collect();
    assert_eq!(all.len(), 64);
}

#[test]
fn variable_counts_reuse_buffers_correctly() {
    let s =
        spec("[[task]]\npkg = \"hey\"\ncount = [3, 1, 2]\nconfig = { arg1 = 5, arg2 = \"x\" }\n");
    let mut buf = TaskSet::default();
    for i in [0u64, 1, 2, 0, 2, 1] {
        s.space().get_into(i, &mut buf).unwrap();
        assert_eq!(buf, s.space().get(i).unwrap());
        assert_eq!(buf.tasks.len(), [3, 1, 2][i as usize]);
    }
}

#[test]
fn seeds_change_random_values_and_nothing_else() {
    let text = |seed: u64| {
        format!("seed = {seed}\nsamples = 5\n[[task]]\npkg = \"hey\"\ncount = 4\npriority = {{ uniform = [0, 127] }}\nperiod_ms = [100, 200]\n")
    };
    let a = spec(&text(1));
    let b = spec(&text(2));
    let pr = |s: &Spec, i| -> Vec<u32> {
        s.space()
            .get(i)
            .unwrap()
            .tasks
            .iter()
            .map(|t| t.priority)
            .collect()
    };
    assert_ne!(
        (0..10).map(|i| pr(&a, i)).collect::<Vec<_>>(),
        (0..10).map(|i| pr(&b, i)).collect::<Vec<_>>()
    );
    assert_eq!(a.space().get(1).unwrap().tasks[0].period_ms, 200);
    assert_eq!(a.space().get(8).unwrap().tasks[0].period_ms, 100);
    assert_eq!(pr(&a, 1), pr(&spec(&text(1)), 1));
    // Copies draw independently.
    let distinct: HashSet<u32> = (0..10).flat_map(|i| pr(&a, i)).collect();
    assert!(distinct.len() > 10);
}

#[test]
fn random_values_cover_their_range() {
    let s = spec("samples = 2000\n[[task]]\npkg = \"hey\"\npriority = { uniform = [3, 7] }\nperiod_ms = { log_uniform = [1, 1000] }\n");
    let mut prios = HashSet::new();
    let mut small = 0;
    for (_, set) in s.space().iter() {
        let t = &set.tasks[0];
        assert!((3..=7).contains(&t.priority));
        assert!((1..=1000).contains(&t.period_ms));
        prios.insert(t.priority);
        small += usize::from(t.period_ms < 32);
    }
    assert_eq!(prios.len(), 5);
    // log-uniform: P(period < 32) = ln(32)/ln(1001), about one half
    assert!((800..1200).contains(&small), "{small}");
}

#[test]
fn unbounded_and_huge_spaces_are_addressable() {
    let s = spec(
        "samples = \"unbounded\"\n[[task]]\npkg = \"hey\"\npriority = { uniform = [0, 127] }\n",
    );
    assert_eq!(s.len(), SpaceLen::Unbounded);
    assert!(s.space().get(u64::MAX).is_ok());
    assert_eq!(s.space().iter_from(u64::MAX - 1).count(), 2);

    // 127^10 > 2^64 variants: addressable in the first 2^64.
    let big = spec("[[task]]\npkg = \"hey\"\ncount = 10\nindependent = true\npriority = { from = 1, to = 127 }\n");
    assert_eq!(big.len(), SpaceLen::Finite(127u128.pow(10)));
    let last = big.space().get(u64::MAX).unwrap();
    assert_eq!(big.space().iter_from(u64::MAX).next().unwrap().1, last);
    // Decode u64::MAX in base 127 by hand.
    let mut i = u64::MAX;
    for t in &last.tasks {
        assert_eq!(u64::from(t.priority), 1 + i % 127);
        i /= 127;
    }
}

#[test]
fn out_of_range_index_is_an_error() {
    let s = Spec::load("hey").unwrap();
    assert_eq!(
        s.space().get(4),
        Err(VariantError::OutOfRange { index: 4, len: 4 })
    );
    assert_eq!(s.space().iter_from(3).count(), 1);
    assert_eq!(s.space().iter_from(9).count(), 0);
}

#[test]
fn samples_repeat_combinations_with_fresh_draws() {
    let s = spec("samples = 3\n[[task]]\npkg = \"hey\"\npriority = [1, 2]\nperiod_ms = { uniform = [1, 1000000] }\n");
    assert_eq!(s.len(), SpaceLen::Finite(6));
    let v: Vec<TaskSet> = (0..6).map(|i| s.space().get(i).unwrap()).collect();
    let prios: Vec<u32> = v.iter().map(|s| s.tasks[0].priority).collect();
    assert_eq!(prios, [1, 2, 1, 2, 1, 2]);
    let periods: HashSet<u64> = v.iter().map(|s| s.tasks[0].period_ms).collect();
    assert_eq!(periods.len(), 6);
}

#[test]
fn utilisation_generators_hit_their_totals() {
    for method in ["uunifast", "randfixedsum"] {
        let s = spec(&format!(
            "seed = 5\nsamples = 50\n[[task]]\npkg = \"hey\"\ncount = 4\nperiod_ms = {{ log_uniform = [1000, 100000] }}\n\
             deadline_ms = \"constrained\"\nutilisation = {{ total = [0.4, 1.6], method = \"{method}\", max = 0.5 }}\n"
        ));
        assert_eq!(finite(&s), 100);
        for (i, set) in s.space().iter() {
            let want = if i % 2 == 0 { 0.4 } else { 1.6 };
            let got: f64 = set
                .tasks
                .iter()
                .map(|t| t.executiontime_ms as f64 / t.period_ms as f64)
                .sum();
            // execution times are rounded to whole ms with periods >= 1000 ms
            assert!(
                (got - want).abs() < 4.0 * 0.0005 + 1e-9,
                "{method} {i}: {got} vs {want}"
            );
            for t in &set.tasks {
                assert!(
                    t.executiontime_ms as f64 <= 0.5 * t.period_ms as f64 + 0.5,
                    "{method}: share above max"
                );
                assert!(t.deadline_ms >= t.executiontime_ms && t.deadline_ms <= t.period_ms);
            }
        }
    }
}

#[test]
fn deadline_classes() {
    let class = |c: &str| {
        spec(&format!("samples = 200\n[[task]]\npkg = \"hey\"\nperiod_ms = {{ uniform = [10, 100] }}\nexecutiontime_ms = 5\ndeadline_ms = \"{c}\"\n"))
    };
    for (_, set) in class("implicit").space().iter() {
        assert_eq!(set.tasks[0].deadline_ms, set.tasks[0].period_ms);
    }
    let mut beyond = 0;
    for (_, set) in class("arbitrary").space().iter() {
        let t = &set.tasks[0];
        assert!(t.deadline_ms >= 5 && t.deadline_ms <= 2 * t.period_ms);
        beyond += usize::from(t.deadline_ms > t.period_ms);
    }
    assert!(beyond > 0);
    for (_, set) in class("constrained").space().iter() {
        let t = &set.tasks[0];
        assert!(t.deadline_ms >= 5 && t.deadline_ms <= t.period_ms);
    }
}

#[test]
fn catalog_variants_are_valid() {
    for e in taskdist_tasksets::catalog::entries() {
        let s = Spec::load(e.name).unwrap();
        let n = s.space().len().addressable().unwrap_or(500).min(500);
        for i in 0..n {
            s.space()
                .get(i)
                .unwrap()
                .validate()
                .unwrap_or_else(|err| panic!("{} #{i}: {err}", e.name));
        }
    }
    // The idle spec must end: its tasks carry a criticaltime.
    let idle = Spec::load("idle").unwrap();
    for (_, set) in idle.space().iter() {
        assert!(set
            .tasks
            .iter()
            .all(|t| t.pkg == "idle" && t.criticaltime_ms > 0));
    }
}

#[test]
fn draws_are_stable_across_versions() {
    // Recorded runs store (spec text, index); changing the draw function would silently
    // change what those indices mean. These values pin it.
    let s = Spec::load("hey-random-priorities").unwrap();
    let p = |i| -> Vec<u32> {
        s.space()
            .get(i)
            .unwrap()
            .tasks
            .iter()
            .map(|t| t.priority)
            .collect()
    };
    assert_eq!(p(0), PINNED_0);
    assert_eq!(p(99), PINNED_99);
}
const PINNED_0: [u32; 10] = [36, 118, 41, 126, 82, 37, 120, 8, 109, 112];
const PINNED_99: [u32; 10] = [111, 71, 106, 110, 35, 50, 9, 60, 9, 36];

#[test]
fn shuffled_order_is_a_permutation_of_the_same_variants() {
    let body = "[[task]]\npkg = \"hey\"\ncount = 2\nindependent = true\npriority = { from = 0, to = 9 }\nperiod_ms = { uniform = [10, 99] }\n";
    let plain = spec(&format!("seed = 4\n{body}"));
    let shuffled = spec(&format!("seed = 4\norder = \"shuffled\"\n{body}"));
    assert_eq!(plain.len(), shuffled.len());
    assert!(shuffled.space().is_shuffled() && !plain.space().is_shuffled());
    let n = finite(&plain);
    let mut seen: Vec<u64> = (0..n)
        .map(|i| shuffled.space().enumeration_index(i))
        .collect();
    assert_ne!(seen, (0..n).collect::<Vec<_>>(), "the order is shuffled");
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..n).collect::<Vec<_>>(),
        "every variant exactly once"
    );
    for (i, set) in shuffled.space().iter() {
        let e = shuffled.space().enumeration_index(i);
        assert_eq!(
            set,
            plain.space().get(e).unwrap(),
            "position {i} is variant {e}"
        );
        assert_eq!(set, shuffled.space().get(i).unwrap());
    }
    let huge = Spec::load("huge-shuffled").unwrap();
    assert_eq!(huge.len(), SpaceLen::Finite(1_000_000_000_000));
    let first: HashSet<u64> = (0..1000)
        .map(|i| huge.space().enumeration_index(i))
        .collect();
    assert_eq!(first.len(), 1000);
    assert!(
        first.iter().any(|&e| e > 500_000_000_000),
        "a prefix samples the whole space"
    );
}

#[test]
fn spaces_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Spec>();
    assert_send_sync::<taskdist_tasksets::VariantSpace>();
    assert_send_sync::<taskdist_tasksets::Variants>();
    // Two threads building disjoint shards of the same space agree with a single walk.
    let s = Spec::load("hey-random-periods").unwrap();
    let space = s.space().clone();
    let shards: Vec<Vec<(u64, TaskSet)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2u64)
            .map(|k| {
                let space = space.clone();
                scope.spawn(move || space.iter_from(k).step_by(2).take(50).collect())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for shard in shards {
        for (i, set) in shard {
            assert_eq!(set, s.space().get(i).unwrap());
        }
    }
}
