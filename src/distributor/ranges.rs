//! A compact set of `u64` indices stored as disjoint inclusive ranges.

use std::collections::BTreeMap;

/// A set of variant indices kept as disjoint, non-adjacent inclusive ranges.
///
/// Completion order in a run is close to index order, so a run of millions of variants keeps
/// only a handful of ranges in memory.
///
/// ```
/// use taskdist::distributor::RangeSet;
/// let mut s = RangeSet::default();
/// s.insert(1);
/// s.insert(3);
/// s.insert(2);
/// assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(1, 3)]);
/// assert!(s.contains(2) && !s.contains(4));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    // start -> end (inclusive)
    map: BTreeMap<u64, u64>,
    count: u64,
}

impl RangeSet {
    /// Whether `i` is in the set.
    pub fn contains(&self, i: u64) -> bool {
        self.map
            .range(..=i)
            .next_back()
            .is_some_and(|(_, &end)| i <= end)
    }

    /// Number of indices in the set.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Number of stored ranges.
    pub fn range_count(&self) -> usize {
        self.map.len()
    }

    /// Insert `i`; returns false if it was already present.
    pub fn insert(&mut self, i: u64) -> bool {
        self.insert_range(i, i) == 1
    }

    /// Insert every index of `start..=end`; returns how many were new.
    pub fn insert_range(&mut self, start: u64, end: u64) -> u64 {
        if start > end {
            return 0;
        }
        let mut new_start = start;
        let mut new_end = end;
        let mut covered = 0u64;
        // Find ranges overlapping or adjacent to [start, end].
        let lo = start.saturating_sub(1);
        let first = self
            .map
            .range(..=lo)
            .next_back()
            .filter(|(_, &e)| e >= lo)
            .map(|(&s, _)| s);
        let from = first.unwrap_or(start);
        let hi = end.saturating_add(1);
        let touching: Vec<(u64, u64)> = self.map.range(from..=hi).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in touching {
            self.map.remove(&s);
            // overlap of [s,e] with [start,end]
            let os = s.max(start);
            let oe = e.min(end);
            if os <= oe {
                covered += oe - os + 1;
            }
            self.count -= e - s + 1;
            new_start = new_start.min(s);
            new_end = new_end.max(e);
        }
        self.map.insert(new_start, new_end);
        self.count += new_end - new_start + 1;
        (end - start + 1) - covered
    }

    /// Remove every index of `start..=end`; returns how many were present.
    ///
    /// ```
    /// use taskdist::distributor::RangeSet;
    /// let mut s = RangeSet::default();
    /// s.insert_range(0, 9);
    /// assert_eq!(s.remove_range(3, 5), 3);
    /// assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(0, 2), (6, 9)]);
    /// ```
    pub fn remove_range(&mut self, start: u64, end: u64) -> u64 {
        if start > end {
            return 0;
        }
        let from = self
            .map
            .range(..=start)
            .next_back()
            .filter(|(_, &e)| e >= start)
            .map_or(start, |(&s, _)| s);
        let hit: Vec<(u64, u64)> = self.map.range(from..=end).map(|(&s, &e)| (s, e)).collect();
        let mut removed = 0;
        for (s, e) in hit {
            self.map.remove(&s);
            self.count -= e - s + 1;
            if s < start {
                self.map.insert(s, start - 1);
                self.count += start - s;
            }
            if e > end {
                self.map.insert(end + 1, e);
                self.count += e - end;
            }
            removed += e.min(end) - s.max(start) + 1;
        }
        removed
    }

    /// The ranges in ascending order, as inclusive `(start, end)` pairs.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }

    /// The smallest index `>= i` that is not in the set (None only at `u64::MAX` saturation).
    pub fn next_absent(&self, i: u64) -> Option<u64> {
        match self.map.range(..=i).next_back() {
            Some((_, &end)) if i <= end => end.checked_add(1),
            _ => Some(i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn agrees_with_btreeset(ops in proptest::collection::vec((0u64..200, 0u64..6), 0..200)) {
            let mut rs = RangeSet::default();
            let mut bs = BTreeSet::new();
            for (start, len) in ops {
                let end = start + len;
                let before = bs.len() as u64;
                for i in start..=end { bs.insert(i); }
                let added = rs.insert_range(start, end);
                prop_assert_eq!(added, bs.len() as u64 - before);
            }
            prop_assert_eq!(rs.count(), bs.len() as u64);
            for i in 0..210 {
                prop_assert_eq!(rs.contains(i), bs.contains(&i));
                let next = (i..).find(|j| !bs.contains(j));
                prop_assert_eq!(rs.next_absent(i), next);
            }
            // ranges are disjoint and non-adjacent
            let r: Vec<_> = rs.ranges().collect();
            for w in r.windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0);
            }
        }
    }

    #[test]
    fn extremes() {
        let mut rs = RangeSet::default();
        assert_eq!(rs.insert_range(u64::MAX - 1, u64::MAX), 2);
        assert_eq!(rs.next_absent(u64::MAX), None);
        assert_eq!(rs.insert_range(0, 0), 1);
        assert_eq!(rs.count(), 3);
        assert!(!rs.insert(0));
    }
}
