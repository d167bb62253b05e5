//! Variant spaces: lazy, index-addressable cartesian products of task attributes.
//!
//! A [`VariantSpace`] is built from a spec file ([`crate::Spec`]). It never materialises
//! variants: [`VariantSpace::get`] decodes an index into one task-set in O(tasks), and the
//! iterators decode consecutive indices. Memory is constant in the number of variants.
//!
//! # Index layout
//! An index `i` is split as a mixed-radix number. The lowest digits select the enumerated
//! combination: within each task group (a `[[task]]` table) the utilisation total varies fastest,
//! then the attributes of the first copy in field order (`executiontime_ms`, `criticaltime_ms`,
//! `priority`, `deadline_ms`, `period_ms`, `offset_ms`, `numberofjobs`, `quota`, `caps`, `cores`,
//! `coreoffset`, `pkg`, then `config` entries in file order), then the next copy (only when the
//! group is `independent`); the count of copies varies slowest within the group. Earlier groups
//! vary faster than later ones. Above all combinations comes the sample number (see `samples` in
//! the spec). Random attributes take no digit: their value is drawn from
//! `(seed, i, attribute position)`, so variant `i` is reproducible from its index alone.
//!
//! Indices are `u64`. A space may be larger than 2^64 ([`SpaceLen::Finite`] holds a `u128`);
//! only its first 2^64 variants are addressable.
//!
//! Module map: `attr` holds the value model (fixed, enumerated and random attributes),
//! `index` the digit layout of a group and the decoding of an index into a task-set, and
//! `iter` the sequential iterator that increments digits instead of dividing.

use std::sync::Arc;

use crate::model::TaskSet;
use crate::rng::Permutation;

mod attr;
mod index;
mod iter;

pub(crate) use attr::{
    radix_of, DeadlineAttr, FloatAttr, IntAttr, SplitMethod, TextAttr, Utilisation,
};
pub(crate) use index::{Attrs, Group};
pub use iter::Variants;

/// How many variants a space holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpaceLen {
    /// A finite number of variants (may exceed the `u64` index range).
    Finite(u128),
    /// An endless stream: every `u64` index is a variant (random draws per index).
    Unbounded,
}

impl SpaceLen {
    /// Whether `index` addresses a variant of the space.
    pub fn contains(self, index: u64) -> bool {
        match self {
            SpaceLen::Finite(n) => u128::from(index) < n,
            SpaceLen::Unbounded => true,
        }
    }

    /// The number of addressable indices, saturated at `u64::MAX` (unbounded gives `None`).
    pub fn addressable(self) -> Option<u64> {
        match self {
            SpaceLen::Finite(n) => Some(u64::try_from(n).unwrap_or(u64::MAX)),
            SpaceLen::Unbounded => None,
        }
    }
}

impl std::fmt::Display for SpaceLen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpaceLen::Finite(n) => write!(f, "{n}"),
            SpaceLen::Unbounded => f.write_str("unbounded"),
        }
    }
}

/// A variant could not be built. Every attribute's range is checked against the target's
/// limits when the spec is loaded, so a valid index always yields a valid task-set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariantError {
    /// The index lies beyond the end of a finite space.
    #[error("variant index {index} is out of range: the space has {len} variants")]
    OutOfRange {
        /// The requested index.
        index: u64,
        /// The size of the space.
        len: u128,
    },
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) seed: u64,
    pub(crate) groups: Box<[Group]>,
    /// Digit base of each group for `split`.
    group_radix: Box<[u64]>,
    /// Enumerated combinations (product of group sizes).
    combinations: u128,
    combinations_radix: u64,
    len: SpaceLen,
    max_tasks: usize,
    has_util: bool,
    /// Whether any attribute is random.
    random: bool,
    /// `order = "shuffled"`: position -> enumeration index.
    shuffle: Option<Permutation>,
}

/// A lazy, index-addressable space of task-set variants. Cheap to clone (shared).
///
/// ```
/// use taskdist_tasksets::{Spec, SpaceLen};
/// let spec = Spec::from_toml_str(r#"
///     [[task]]
///     pkg = "hey"
///     priority = [10, 20, 30]
///     period_ms = { from = 100, to = 200, step = 100 }
/// "#, "example").unwrap();
/// let space = spec.space();
/// assert_eq!(space.len(), SpaceLen::Finite(6));
/// let v4 = space.get(4).unwrap();
/// assert_eq!((v4.tasks[0].priority, v4.tasks[0].period_ms), (20, 200));
/// assert_eq!(space.iter().nth(4).unwrap().1, v4);
/// ```
#[derive(Debug, Clone)]
pub struct VariantSpace {
    inner: Arc<Inner>,
}

/// Samples per enumerated combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Samples {
    Finite(u64),
    Unbounded,
}

impl VariantSpace {
    pub(crate) fn new(
        seed: u64,
        groups: Vec<Group>,
        samples: Samples,
        shuffled: bool,
    ) -> Result<Self, String> {
        let mut combinations: u128 = 1;
        for g in &groups {
            combinations = combinations
                .checked_mul(g.size)
                .ok_or_else(|| "the space has more than 2^128 variants".to_string())?;
        }
        let len = match samples {
            Samples::Finite(s) => SpaceLen::Finite(
                combinations
                    .checked_mul(u128::from(s))
                    .ok_or_else(|| "the space has more than 2^128 variants".to_string())?,
            ),
            Samples::Unbounded => SpaceLen::Unbounded,
        };
        let max_tasks = groups.iter().map(|g| g.max_count() as usize).sum();
        let shuffle = if shuffled {
            let n = match len {
                SpaceLen::Finite(n) => u64::try_from(n).ok(),
                SpaceLen::Unbounded => {
                    return Err("`order = \"shuffled\"` needs a finite space; \
                                an unbounded stream has no order to shuffle"
                        .to_string())
                }
            };
            Permutation::new(n, seed)
        } else {
            None
        };
        Ok(VariantSpace {
            inner: Arc::new(Inner {
                seed,
                group_radix: groups.iter().map(|g| radix_of(g.size)).collect(),
                has_util: groups.iter().any(|g| g.a.util.is_some()),
                random: groups.iter().any(Group::is_random),
                shuffle,
                groups: groups.into(),
                combinations,
                combinations_radix: radix_of(combinations),
                len,
                max_tasks,
            }),
        })
    }

    /// The number of variants.
    pub fn len(&self) -> SpaceLen {
        self.inner.len
    }

    /// Whether the space has no variant (never true for a space built from a valid spec).
    pub fn is_empty(&self) -> bool {
        self.inner.len == SpaceLen::Finite(0)
    }

    /// The number of enumerated combinations (the space without its `samples` factor).
    pub fn combinations(&self) -> u128 {
        self.inner.combinations
    }

    /// Whether any value is drawn at random (else all samples of a combination are equal).
    pub fn is_random(&self) -> bool {
        self.inner.random
    }

    /// Whether the space lists its variants in a shuffled order (`order = "shuffled"`).
    pub fn is_shuffled(&self) -> bool {
        self.inner.shuffle.is_some()
    }

    /// The position of variant `index` in enumeration order: `index` itself, or its image
    /// under the seeded permutation of a shuffled space. Random draws are keyed by this
    /// enumeration index, so a shuffled space holds exactly the variants of the unshuffled one.
    #[inline]
    pub fn enumeration_index(&self, index: u64) -> u64 {
        match &self.inner.shuffle {
            Some(p) => p.apply(index),
            None => index,
        }
    }

    /// The seed of all random draws.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// The most tasks any variant has.
    pub fn max_tasks(&self) -> usize {
        self.inner.max_tasks
    }

    /// Build variant `index`.
    pub fn get(&self, index: u64) -> Result<TaskSet, VariantError> {
        let mut set = TaskSet {
            tasks: Vec::with_capacity(self.inner.max_tasks),
        };
        self.get_into(index, &mut set)?;
        Ok(set)
    }

    /// Build variant `index` into `out`, reusing its allocations (tasks, names, config
    /// strings). This is the allocation-free path for hot loops.
    pub fn get_into(&self, index: u64, out: &mut TaskSet) -> Result<(), VariantError> {
        let inner = &*self.inner;
        if !inner.len.contains(index) {
            return Err(VariantError::OutOfRange {
                index,
                len: match inner.len {
                    SpaceLen::Finite(n) => n,
                    SpaceLen::Unbounded => u128::MAX,
                },
            });
        }
        self.build(self.enumeration_index(index), out, None);
        Ok(())
    }
}
