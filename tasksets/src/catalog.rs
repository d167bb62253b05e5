//! Ready-made spec files, embedded from `tasksets/catalog/*.toml`.
//!
//! ```
//! use taskdist_tasksets::{catalog, Spec};
//! let entry = catalog::get("hey").unwrap();
//! let spec = Spec::from_toml_str(entry.text, entry.name).unwrap();
//! assert_eq!(spec.description(), entry.description);
//! ```

/// One catalog spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Name used on the command line (`taskdist run NAME`).
    pub name: &'static str,
    /// One-line description (the spec's `description` key).
    pub description: &'static str,
    /// The TOML text.
    pub text: &'static str,
}

macro_rules! entries {
    ($($name:literal => $desc:literal),* $(,)?) => {
        &[$(CatalogEntry {
            name: $name,
            description: $desc,
            text: include_str!(concat!("../catalog/", $name, ".toml")),
        }),*]
    };
}

static ENTRIES: &[CatalogEntry] = entries![
    "hey" => "One hey task, 2 periods x 2 priorities, 2 jobs each (4 variants): the quick start",
    "hey-tasks" => "1 to 10 identical hey tasks, priority 100, period 1 s (10 variants)",
    "hey-priorities" => "One hey task at each priority 1..=127 (127 variants)",
    "hey-random-periods" => "Two hey tasks, all 127 x 127 priority pairs, periods drawn uniformly from 100..2000 ms (16129 variants)",
    "hey-random-priorities" => "10 hey tasks with random priorities 1..=127, 100 seeded samples",
    "random-binaries" => "10 tasks with random binaries, arguments, low priorities and periods, endless seeded stream",
    "pi" => "One pi task (Leibniz series), arg1 = 10^4..10^6 steps in 5 sizes x 2 priorities (10 variants)",
    "tumatmul" => "One tumatmul task, arg1 = 1..=10 (10 variants)",
    "cond_42" => "One cond_42 task (stops when arg1 is 42), arg1 = 40..=44 (5 variants)",
    "cond_mod" => "One cond_mod task (stops at once when arg1 is even), arg1 = 1..=6 (6 variants)",
    "idle" => "One idle task (never ends) killed at criticaltime 200/400 ms, 3 jobs (2 variants)",
    "linpack" => "One linpack task, matrix size arg1 = 50..=200 step 50 (4 variants)",
    "namaste" => "One namaste task, 2 periods x 2 job counts (4 variants)",
    "util-uunifast" => "3 tasks, total utilisation 0.1..=0.9 step 0.1 split by UUniFast, log-uniform periods 10..1000 ms, implicit deadlines, 10 samples each (90 variants)",
    "util-randfixedsum" => "5 tasks, total utilisation 0.5..=3.0 step 0.5 split by RandFixedSum (share <= 0.8), periods from {50,100,200,500,1000} ms, constrained deadlines, 20 samples each (120 variants)",
    "util-stream" => "2..=6 tasks, total utilisation drawn from 0.2..0.95, UUniFast, log-uniform periods 10..2000 ms, arbitrary deadlines, endless stream",
    "huge" => "3 hey tasks, 100 priorities x 100 periods each, independent (10^12 variants): for benchmarks",
    "huge-shuffled" => "The 10^12-variant huge space in a seeded shuffled order: any prefix is a sample without repeats",
];

/// All catalog specs, in listing order.
pub fn entries() -> &'static [CatalogEntry] {
    ENTRIES
}

/// The catalog spec with this name.
pub fn get(name: &str) -> Option<&'static CatalogEntry> {
    ENTRIES.iter().find(|e| e.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SpaceLen, Spec};

    #[test]
    fn every_entry_loads_and_matches_its_description() {
        for e in entries() {
            let spec = Spec::from_toml_str(e.text, e.name)
                .unwrap_or_else(|err| panic!("catalog spec {} fails: {err}", e.name));
            assert_eq!(spec.name(), e.name, "name key of {}", e.name);
            assert_eq!(
                spec.description(),
                e.description,
                "description of {}",
                e.name
            );
        }
    }

    #[test]
    fn sizes_match_the_descriptions() {
        let len = |n: &str| Spec::load(n).unwrap().len();
        assert_eq!(len("hey"), SpaceLen::Finite(4));
        assert_eq!(len("hey-tasks"), SpaceLen::Finite(10));
        assert_eq!(len("hey-priorities"), SpaceLen::Finite(127));
        assert_eq!(len("hey-random-periods"), SpaceLen::Finite(127 * 127));
        assert_eq!(len("hey-random-priorities"), SpaceLen::Finite(100));
        assert_eq!(len("random-binaries"), SpaceLen::Unbounded);
        assert_eq!(len("util-uunifast"), SpaceLen::Finite(90));
        assert_eq!(len("util-randfixedsum"), SpaceLen::Finite(120));
        assert_eq!(len("huge"), SpaceLen::Finite(1_000_000_000_000));
    }

    #[test]
    fn names_are_unique() {
        for (i, e) in entries().iter().enumerate() {
            assert!(entries()[..i].iter().all(|o| o.name != e.name));
        }
    }
}
