//! Sequential iteration: consecutive indices are decoded by incrementing the previous
//! variant's digits (an odometer) instead of dividing each index anew.

use crate::model::TaskSet;
use crate::rng::variant_key;

use super::index::{Digit, Replay};
use super::{SpaceLen, VariantSpace};

/// The decoded digits of the variant a [`Variants`] iterator built last, so that the next
/// index is an increment with carry instead of a chain of divisions.
#[derive(Debug, Clone, Default)]
pub(super) struct Odometer {
    /// The index the digits stand for; `None` when they are not valid.
    pub(super) index: Option<u64>,
    pub(super) digits: Vec<Digit>,
    /// Per group: its chosen count and the range of its digits.
    pub(super) groups: Vec<(u32, usize, usize)>,
}

impl VariantSpace {
    /// Build variant `index` from the odometer's digits if `index` follows the variant it
    /// holds and the increment stays within the current counts; else divide.
    #[inline]
    fn build_next(&self, index: u64, out: &mut TaskSet, odo: &mut Odometer) {
        let follows = odo
            .index
            .is_some_and(|prev| prev.checked_add(1) == Some(index));
        if !follows || !self.increment(odo) {
            self.build(index, out, Some(odo));
            return;
        }
        odo.index = Some(index);
        let inner = &*self.inner;
        let mut shares = Vec::new();
        if inner.has_util {
            shares.reserve(inner.max_tasks);
        }
        // Keys are only needed by random attributes.
        let vkey = if inner.random {
            variant_key(inner.seed, index)
        } else {
            0
        };
        let tasks = &mut out.tasks;
        let mut at = 0usize;
        let mut src = Replay {
            digits: &odo.digits,
            pos: 0,
        };
        for (gi, g) in inner.groups.iter().enumerate() {
            let count = odo.groups[gi].0;
            g.build(gi, vkey, count, &mut src, tasks, &mut at, &mut shares);
        }
        tasks.truncate(at);
    }

    /// Add one to the odometer. Returns `false` when the carry would change a group's count
    /// or leave the enumerated combinations (then the caller divides instead).
    #[inline]
    fn increment(&self, odo: &mut Odometer) -> bool {
        for (gi, &(_, start, end)) in odo.groups.iter().enumerate() {
            for d in &mut odo.digits[start..end] {
                d.value += 1;
                if d.value < d.radix {
                    return true;
                }
                d.value = 0;
            }
            // Carry out of this group: only a group with a single count wraps around cleanly.
            if self.inner.groups[gi].a.counts.len() != 1 {
                return false;
            }
        }
        false
    }

    /// Iterate over all variants from index 0, lazily.
    pub fn iter(&self) -> Variants {
        self.iter_from(0)
    }

    /// Iterate over the variants from index `start` on, lazily.
    pub fn iter_from(&self, start: u64) -> Variants {
        Variants {
            space: self.clone(),
            next: Some(start),
            end: match self.inner.len {
                SpaceLen::Finite(n) => Some(n),
                SpaceLen::Unbounded => None,
            },
            scratch: TaskSet { tasks: Vec::new() },
            odometer: Odometer::default(),
        }
    }
}

/// A lazy iterator over `(index, variant)` pairs. See [`VariantSpace::iter_from`].
///
/// `nth` skips without building the skipped variants, so `step_by(n)` shards cheaply.
/// [`Variants::next_into`] reuses a caller's task-set instead of allocating one per variant.
#[derive(Debug, Clone)]
pub struct Variants {
    space: VariantSpace,
    /// The next index, `None` once `u64::MAX` has been yielded.
    next: Option<u64>,
    /// Exclusive end, `None` for an unbounded space.
    end: Option<u128>,
    scratch: TaskSet,
    odometer: Odometer,
}

impl Variants {
    /// Build the next variant into `out` (reusing its allocations) and return its index.
    #[inline]
    pub fn next_into(&mut self, out: &mut TaskSet) -> Option<u64> {
        let i = self.next?;
        if self.end.is_some_and(|e| u128::from(i) >= e) {
            return None;
        }
        if self.space.inner.shuffle.is_some() {
            self.space.build(self.space.enumeration_index(i), out, None);
        } else {
            self.space.build_next(i, out, &mut self.odometer);
        }
        self.next = i.checked_add(1);
        Some(i)
    }
}

impl Iterator for Variants {
    type Item = (u64, TaskSet);

    fn next(&mut self) -> Option<Self::Item> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let i = self.next_into(&mut scratch)?;
        let out = scratch.clone();
        self.scratch = scratch;
        Some((i, out))
    }

    fn nth(&mut self, n: usize) -> Option<Self::Item> {
        self.next = self.next.and_then(|i| i.checked_add(n as u64));
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let Some(next) = self.next else {
            return (0, Some(0));
        };
        // Indices left: up to the end of the space and at most up to u64::MAX inclusive.
        let to_end = self
            .end
            .map_or(u128::MAX, |e| e.saturating_sub(u128::from(next)));
        let left = to_end.min(u128::from(u64::MAX - next) + 1);
        let n = usize::try_from(left).unwrap_or(usize::MAX);
        let upper = usize::try_from(left).ok();
        (n, upper)
    }
}
