//! A log-scaled histogram of non-negative integers with bounded memory and known precision.
//!
//! Values below `2^(SUB_BITS + 1)` (2048) each have their own bucket and are exact. Above,
//! every power of two is split into `2^SUB_BITS` (1024) equal buckets, so a value is known to
//! within 1/1024 of itself (under 0.1 %). A quantile is reported as the largest value of its
//! bucket, so it is never below the true quantile and at most 0.1 % above it. The histogram
//! grows to the bucket of the largest value seen: about 8 KiB per factor of two above 2048
//! (a histogram of values up to 10^6 ms takes 90 KiB), whatever the number of values.

/// Bits of sub-bucket resolution per power of two.
pub const SUB_BITS: u32 = 10;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this bound are counted exactly.
pub const EXACT_BELOW: u64 = 2 * SUB;

/// Counts of values in log-scaled buckets; see the module documentation for the precision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogHistogram {
    counts: Vec<u64>,
    total: u64,
    min: Option<u64>,
    max: Option<u64>,
    sum: u128,
}

fn index_of(v: u64) -> usize {
    if v < EXACT_BELOW {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let shift = exp - SUB_BITS;
    let sub = (v >> shift) - SUB; // 0..SUB
    (EXACT_BELOW + u64::from(shift - 1) * SUB + sub) as usize
}

/// The smallest and largest value of bucket `i`.
fn bounds_of(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < EXACT_BELOW {
        return (i, i);
    }
    let k = i - EXACT_BELOW;
    let shift = (k / SUB + 1) as u32;
    let sub = k % SUB;
    let lo = (SUB + sub) << shift;
    let hi = lo.saturating_add((1u64 << shift) - 1);
    (lo, hi)
}

impl LogHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one value.
    pub fn record(&mut self, v: u64) {
        let i = index_of(v);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
        self.sum += u128::from(v);
        self.min = Some(self.min.map_or(v, |m| m.min(v)));
        self.max = Some(self.max.map_or(v, |m| m.max(v)));
    }

    /// Number of values counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The smallest value (exact).
    pub fn min(&self) -> Option<u64> {
        self.min
    }

    /// The largest value (exact).
    pub fn max(&self) -> Option<u64> {
        self.max
    }

    /// The mean (exact).
    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum as f64 / self.total as f64)
    }

    /// Nearest-rank quantile: the smallest value `v` such that at least `ceil(q * n)` values
    /// are `<= v` (at least one), up to the bucket precision. `q` in `0..=1`.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                // Never report beyond the exact maximum.
                return Some(bounds_of(i).1.min(self.max.unwrap_or(u64::MAX)));
            }
        }
        self.max
    }

    /// Non-empty buckets as `(largest value of the bucket, count)`, in increasing order.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let max = self.max.unwrap_or(0);
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(move |(i, &c)| (bounds_of(i).1.min(max), c))
    }

    /// Add the counts of another histogram.
    pub fn merge(&mut self, other: &LogHistogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.min = match (self.min, other.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    #[test]
    fn buckets_cover_every_value_once() {
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let (lo, hi) = bounds_of(index_of(v));
            assert!(lo <= v && v <= hi, "{v} not in [{lo}, {hi}]");
        }
        for i in 0..20_000 {
            let (lo, hi) = bounds_of(i);
            assert_eq!(index_of(lo), i);
            assert_eq!(index_of(hi), i);
            assert_eq!(bounds_of(i + 1).0, hi + 1);
        }
    }

    #[test]
    fn small_values_are_exact_and_large_ones_within_a_thousandth() {
        let mut h = LogHistogram::new();
        let mut values: Vec<u64> = (0..5000).map(|i| (i * 7919) % 2000).collect();
        for &v in &values {
            h.record(v);
        }
        values.sort_unstable();
        for q in [0.0, 0.01, 0.5, 0.95, 0.99, 1.0] {
            assert_eq!(h.quantile(q), Some(exact_quantile(&values, q)), "q={q}");
        }
        let mut h = LogHistogram::new();
        let mut values: Vec<u64> = (1..20_000u64).map(|i| i * i * 13 % 9_999_991).collect();
        for &v in &values {
            h.record(v);
        }
        values.sort_unstable();
        for q in [0.5, 0.9, 0.99] {
            let exact = exact_quantile(&values, q) as f64;
            let got = h.quantile(q).unwrap() as f64;
            assert!(got >= exact && got <= exact * (1.0 + 1.0 / 1024.0), "q={q}");
        }
        assert_eq!(h.max(), values.last().copied());
        assert_eq!(h.quantile(1.0), values.last().copied());
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = LogHistogram::new();
        let mut b = LogHistogram::new();
        a.record(5);
        b.record(70_000);
        b.record(1);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.min(), Some(1));
        assert_eq!(a.max(), Some(70_000));
        assert_eq!(a.quantile(0.5), Some(5));
    }
}
