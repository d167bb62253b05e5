//! Index-addressable random draws.
//!
//! Every random value of a variant is a pure function of `(seed, variant index, attribute
//! position)`: [`draw_key`] mixes the three with the SplitMix64 finaliser (Steele, Lea and
//! Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014), and a [`SplitMix64`]
//! stream seeded with that key supplies as many numbers as one attribute needs (one for a
//! uniform draw, 2n for a RandFixedSum split). Nothing depends on the order in which variants
//! are built, so variant `i` is the same whether it is built alone, first or last.

/// The SplitMix64 output function: a bijective 64-bit mixer.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The key of one attribute's draws in one variant:
/// `position_key(variant_key(seed, index), position)`.
#[inline]
pub fn draw_key(seed: u64, index: u64, position: u64) -> u64 {
    position_key(variant_key(seed, index), position)
}

/// The part of [`draw_key`] shared by all attributes of variant `index` (computed once per
/// variant on the hot path).
#[inline]
pub fn variant_key(seed: u64, index: u64) -> u64 {
    mix64(mix64(seed.wrapping_add(GOLDEN)) ^ index)
}

/// The key of the attribute at `position` within a variant whose key is `variant_key`.
#[inline]
pub fn position_key(variant_key: u64, position: u64) -> u64 {
    mix64(variant_key.wrapping_add(GOLDEN) ^ position)
}

/// A SplitMix64 stream: `next` adds the golden gamma and mixes.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A stream starting at `key`.
    #[inline]
    pub fn new(key: u64) -> Self {
        SplitMix64 { state: key }
    }

    /// The next 64 random bits.
    #[inline]
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// A float uniform in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// An integer uniform in `lo..=hi` (requires `lo <= hi`). Uses the multiply-high
    /// reduction; its bias is below `(hi - lo + 1) / 2^64`, far below anything measurable here.
    #[inline]
    pub fn uniform_u64(&mut self, lo: u64, hi: u64) -> u64 {
        let span = u128::from(hi - lo) + 1;
        lo + ((u128::from(self.next()) * span) >> 64) as u64
    }

    /// An integer log-uniform in `lo..=hi` (requires `1 <= lo <= hi`): `floor(exp(x))` with
    /// `x` uniform in `[ln lo, ln(hi + 1))`, clamped to the bounds.
    #[inline]
    pub fn log_uniform_u64(&mut self, lo: u64, hi: u64) -> u64 {
        self.log_uniform_u64_with(lo, hi, (lo as f64).ln(), ((hi as f64) + 1.0).ln())
    }

    /// [`SplitMix64::log_uniform_u64`] with `ln(lo)` and `ln(hi + 1)` precomputed.
    #[inline]
    pub fn log_uniform_u64_with(&mut self, lo: u64, hi: u64, ln_lo: f64, ln_hi1: f64) -> u64 {
        let v = (ln_lo + self.next_f64() * (ln_hi1 - ln_lo)).exp().floor();
        (v as u64).clamp(lo, hi)
    }

    /// A float uniform in `[lo, hi]`.
    #[inline]
    pub fn uniform_f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + self.next_f64() * (hi - lo)
    }

    /// A float log-uniform in `[lo, hi]` (requires `0 < lo <= hi`).
    #[inline]
    pub fn log_uniform_f64(&mut self, lo: f64, hi: f64) -> f64 {
        let (a, b) = (lo.ln(), hi.ln());
        (a + self.next_f64() * (b - a)).exp().clamp(lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // Outputs of the reference SplitMix64 (Vigna's splitmix64.c) seeded with 1234567.
        let mut r = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..5).map(|_| r.next()).collect();
        assert_eq!(
            got,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423,
                4593380528125082431,
                16408922859458223821
            ]
        );
    }

    #[test]
    fn keys_differ_by_each_input() {
        let k = draw_key(1, 2, 3);
        assert_ne!(k, draw_key(0, 2, 3));
        assert_ne!(k, draw_key(1, 3, 3));
        assert_ne!(k, draw_key(1, 2, 4));
        assert_eq!(k, draw_key(1, 2, 3));
    }

    #[test]
    fn uniform_stays_in_bounds_and_covers_them() {
        let mut r = SplitMix64::new(7);
        let mut seen = [false; 6];
        for _ in 0..1000 {
            let v = r.uniform_u64(10, 15);
            assert!((10..=15).contains(&v));
            seen[(v - 10) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        for _ in 0..1000 {
            let v = r.log_uniform_u64(1, 1000);
            assert!((1..=1000).contains(&v));
        }
        // The full 64-bit span must not overflow.
        let _ = r.uniform_u64(0, u64::MAX);
    }

    #[test]
    fn log_uniform_favours_small_values() {
        let mut r = SplitMix64::new(99);
        let n = 10_000;
        let below_100 = (0..n)
            .filter(|_| r.log_uniform_u64(1, 10_000) < 100)
            .count();
        // ln(100)/ln(10001) is one half: about n/2 draws land below 100.
        assert!(
            below_100 > n * 4 / 10 && below_100 < n * 6 / 10,
            "{below_100}"
        );
    }
}
