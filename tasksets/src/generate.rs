//! Generators from the real-time literature: utilisation splits and deadline classes.
//!
//! * [`uunifast`]: Bini and Buttazzo, "Measuring the performance of schedulability tests",
//!   Real-Time Systems 30 (2005). Splits a total utilisation `U` over `n` tasks uniformly over
//!   the simplex `{u_i >= 0, sum u_i = U}`. [`uunifast_discard`] (Davis and Burns 2009) redraws
//!   while a share exceeds a cap.
//! * [`randfixedsum`]: Stafford's RandFixedSum as used by Emberson, Stafford and Davis,
//!   "Techniques for the synthesis of multiprocessor tasksets", WATERS 2010. Uniform over
//!   `{0 <= u_i <= max, sum u_i = U}` without rejection, so it also works for totals above 1.
//!
//! All take a [`SplitMix64`] stream so that a split is a pure function of its draw key.

use crate::rng::SplitMix64;

/// Split `total` over `n` shares with UUniFast. Shares are non-negative and sum to `total`
/// (up to rounding).
pub fn uunifast(rng: &mut SplitMix64, n: usize, total: f64, out: &mut Vec<f64>) {
    out.clear();
    let mut sum = total;
    for i in 1..n {
        let next = sum * rng.next_f64().powf(1.0 / (n - i) as f64);
        out.push(sum - next);
        sum = next;
    }
    if n > 0 {
        out.push(sum);
    }
}

/// UUniFast-Discard: redraw UUniFast until every share is at most `max`, up to `attempts`
/// times. Returns `false` (with the last draw in `out`) when no draw fit.
pub fn uunifast_discard(
    rng: &mut SplitMix64,
    n: usize,
    total: f64,
    max: f64,
    attempts: u32,
    out: &mut Vec<f64>,
) -> bool {
    for _ in 0..attempts {
        uunifast(rng, n, total, out);
        if out.iter().all(|u| *u <= max) {
            return true;
        }
    }
    false
}

/// Split `total` over `n` shares, each in `[0, max]`, uniformly over that polytope
/// (Stafford's RandFixedSum). Requires `0 <= total <= n * max` and `max > 0`; other totals
/// are clamped into that range.
pub fn randfixedsum(rng: &mut SplitMix64, n: usize, total: f64, max: f64, out: &mut Vec<f64>) {
    out.clear();
    if n == 0 {
        return;
    }
    if n == 1 {
        out.push(total.clamp(0.0, max));
        return;
    }
    // Work in the unit cube [0,1]^n with sum s, then scale by `max`.
    let nf = n as f64;
    let s = (total / max).clamp(0.0, nf);
    let k = (s.floor() as i64).clamp(0, n as i64 - 1);
    let s = s.clamp(k as f64, k as f64 + 1.0);
    // s1[i] = s - (k - i), s2[i] = (k + n - i) - s, for i = 0..n.
    let s1: Vec<f64> = (0..n).map(|i| s - (k - i as i64) as f64).collect();
    let s2: Vec<f64> = (0..n)
        .map(|i| (k + n as i64 - i as i64) as f64 - s)
        .collect();
    // w is n x (n+1), t is (n-1) x n, both row-major.
    let mut w = vec![0.0f64; n * (n + 1)];
    let mut t = vec![0.0f64; (n - 1) * n];
    let huge = f64::MAX;
    let tiny = f64::from_bits(1); // smallest positive subnormal
    w[1] = huge;
    for i in 2..=n {
        // MATLAB's 1-based row i is our row i-1.
        for j in 1..=i {
            let tmp1 = w[(i - 2) * (n + 1) + j] * s1[j - 1] / i as f64;
            let tmp2 = w[(i - 2) * (n + 1) + j - 1] * s2[n - i + j - 1] / i as f64;
            let wij = tmp1 + tmp2;
            w[(i - 1) * (n + 1) + j] = wij;
            let tmp3 = wij + tiny;
            let tmp4 = s2[n - i + j - 1] > s1[j - 1];
            t[(i - 2) * n + j - 1] = if tmp4 { tmp2 / tmp3 } else { 1.0 - tmp1 / tmp3 };
        }
    }
    out.resize(n, 0.0);
    let mut s = s;
    let mut j = (k + 1) as usize; // 1-based column into t
    let mut sm = 0.0;
    let mut pr = 1.0;
    for i in (1..n).rev() {
        let rt = rng.next_f64();
        let rs = rng.next_f64();
        let e = rt <= t[(i - 1) * n + (j - 1).min(n - 1)];
        let sx = rs.powf(1.0 / i as f64);
        sm += (1.0 - sx) * pr * s / (i + 1) as f64;
        pr *= sx;
        out[n - i - 1] = sm + if e { pr } else { 0.0 };
        if e {
            s -= 1.0;
            j = j.saturating_sub(1).max(1);
        }
    }
    out[n - 1] = sm + pr * s;
    // Random permutation (Fisher-Yates), then scale.
    for i in (1..n).rev() {
        let j = rng.uniform_u64(0, i as u64) as usize;
        out.swap(i, j);
    }
    for u in out.iter_mut() {
        *u = (*u * max).clamp(0.0, max);
    }
}

/// How a task's relative deadline relates to its period `T` and execution time `C`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadlineClass {
    /// `D = T`.
    Implicit,
    /// `D` uniform in `[C, T]` (`C` capped at `T`).
    Constrained,
    /// `D` uniform in `[C, 2T]` (`C` capped at `2T`).
    Arbitrary,
}

impl DeadlineClass {
    /// The deadline for one task. `rng` is used for constrained and arbitrary deadlines.
    pub fn deadline_ms(self, rng: &mut SplitMix64, execution_ms: u64, period_ms: u64) -> u64 {
        match self {
            DeadlineClass::Implicit => period_ms,
            DeadlineClass::Constrained => rng.uniform_u64(execution_ms.min(period_ms), period_ms),
            DeadlineClass::Arbitrary => {
                let hi = period_ms.saturating_mul(2);
                rng.uniform_u64(execution_ms.min(hi), hi)
            }
        }
    }

    /// The largest deadline this class can give for periods up to `max_period_ms`.
    pub fn max_deadline_ms(self, max_period_ms: u64) -> u64 {
        match self {
            DeadlineClass::Implicit | DeadlineClass::Constrained => max_period_ms,
            DeadlineClass::Arbitrary => max_period_ms.saturating_mul(2),
        }
    }
}

/// Execution time for utilisation `u` and period `period_ms`: `round(u * T)`, at least 1 ms
/// and at most `T`.
pub fn execution_ms(u: f64, period_ms: u64) -> u64 {
    ((u * period_ms as f64).round() as u64).clamp(1, period_ms.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(v: &[f64]) -> f64 {
        v.iter().sum()
    }

    #[test]
    fn uunifast_sums_to_total() {
        let mut r = SplitMix64::new(1);
        let mut v = Vec::new();
        for n in 1..12 {
            uunifast(&mut r, n, 0.75, &mut v);
            assert_eq!(v.len(), n);
            assert!((sum(&v) - 0.75).abs() < 1e-9);
            assert!(v.iter().all(|u| *u >= 0.0));
        }
    }

    #[test]
    fn uunifast_discard_respects_cap() {
        let mut r = SplitMix64::new(2);
        let mut v = Vec::new();
        assert!(uunifast_discard(&mut r, 4, 1.6, 0.5, 10_000, &mut v));
        assert!(v.iter().all(|u| *u <= 0.5));
        assert!((sum(&v) - 1.6).abs() < 1e-9);
    }

    #[test]
    fn randfixedsum_sums_and_bounds() {
        let mut r = SplitMix64::new(3);
        let mut v = Vec::new();
        for n in 1..10usize {
            for total in [0.0, 0.1, 0.5, 0.99, 1.5, n as f64 * 0.4, n as f64 * 0.5] {
                if total > n as f64 * 0.5 {
                    continue;
                }
                randfixedsum(&mut r, n, total, 0.5, &mut v);
                assert_eq!(v.len(), n);
                assert!(
                    (sum(&v) - total).abs() < 1e-6,
                    "n={n} total={total} got {v:?}"
                );
                assert!(v.iter().all(|u| (0.0..=0.5).contains(u)), "{v:?}");
            }
        }
    }

    #[test]
    fn randfixedsum_shares_have_the_expected_mean() {
        // By symmetry each share has mean total/n.
        let mut r = SplitMix64::new(4);
        let mut v = Vec::new();
        let (n, total, trials) = (3usize, 1.2, 20_000);
        let mut acc = vec![0.0; n];
        for _ in 0..trials {
            randfixedsum(&mut r, n, total, 0.6, &mut v);
            for (a, u) in acc.iter_mut().zip(&v) {
                *a += u;
            }
        }
        for a in acc {
            assert!((a / trials as f64 - 0.4).abs() < 0.01, "{a}");
        }
    }

    /// Fraction of draws whose first share is below `x`.
    fn below(split: impl Fn(&mut SplitMix64, &mut Vec<f64>), x: f64) -> f64 {
        let mut r = SplitMix64::new(11);
        let mut v = Vec::new();
        let trials = 20_000;
        let mut hits = 0;
        for _ in 0..trials {
            split(&mut r, &mut v);
            hits += usize::from(v[0] < x);
        }
        hits as f64 / trials as f64
    }

    #[test]
    fn splits_are_uniform_over_the_simplex() {
        // Uniform on {u1+u2+u3 = 1, u >= 0}: u1 has density 2(1-x), so P(u1 < 0.5) = 0.75.
        let p = below(|r, v| uunifast(r, 3, 1.0, v), 0.5);
        assert!((p - 0.75).abs() < 0.015, "uunifast {p}");
        let p = below(|r, v| randfixedsum(r, 3, 1.0, 1.0, v), 0.5);
        assert!((p - 0.75).abs() < 0.015, "randfixedsum {p}");
    }

    #[test]
    fn randfixedsum_is_uniform_over_the_capped_slice() {
        // Uniform on {u1+u2+u3 = 1.5, 0 <= u <= 1}: u1 has a triangular density peaking at
        // 0.5 (0.5+x below, 1.5-x above), so P(u1 < 0.25) = 0.15625 / 0.75.
        let p = below(|r, v| randfixedsum(r, 3, 1.5, 1.0, v), 0.25);
        assert!((p - 0.15625 / 0.75).abs() < 0.015, "{p}");
        // Two shares summing to 0.5: u1 is uniform on [0, 0.5].
        let p = below(|r, v| randfixedsum(r, 2, 0.5, 1.0, v), 0.125);
        assert!((p - 0.25).abs() < 0.015, "{p}");
    }

    #[test]
    fn deadline_classes() {
        let mut r = SplitMix64::new(5);
        assert_eq!(DeadlineClass::Implicit.deadline_ms(&mut r, 10, 100), 100);
        for _ in 0..200 {
            let d = DeadlineClass::Constrained.deadline_ms(&mut r, 10, 100);
            assert!((10..=100).contains(&d));
            let d = DeadlineClass::Arbitrary.deadline_ms(&mut r, 10, 100);
            assert!((10..=200).contains(&d));
        }
        assert_eq!(execution_ms(0.25, 1000), 250);
        assert_eq!(execution_ms(0.0, 1000), 1);
        assert_eq!(execution_ms(1.0, 7), 7);
    }
}
