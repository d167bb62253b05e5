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

/// Rounds of the Feistel network in [`Permutation`].
const FEISTEL_ROUNDS: usize = 6;

/// A keyed pseudo-random permutation of `0..n`, index-addressable: [`Permutation::apply`]
/// maps position `k` to the `k`-th index of a shuffled order without materialising it.
///
/// It is a balanced Feistel network (rounds keyed with [`mix64`]) over the smallest even
/// number of bits that covers `n`, made to stay inside `0..n` by cycle walking (re-applying
/// the network until the value falls below `n`; the domain is less than `4n`, so this takes
/// fewer than 4 steps on average). A Feistel network is a bijection whatever its round
/// function, so every index appears exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permutation {
    /// Size of the domain; `None` stands for 2^64.
    n: Option<u64>,
    half_bits: u32,
    mask: u64,
    keys: [u64; FEISTEL_ROUNDS],
}

impl Permutation {
    /// A permutation of `0..n` keyed by `seed` (`n = None` means all of `u64`).
    /// Returns `None` for `n == Some(0)`.
    pub fn new(n: Option<u64>, seed: u64) -> Option<Self> {
        let bits = match n {
            Some(0) => return None,
            Some(n) => (64 - (n - 1).leading_zeros()).max(2),
            None => 64,
        };
        let half_bits = bits.div_ceil(2);
        let mask = if half_bits >= 64 {
            u64::MAX
        } else {
            (1u64 << half_bits) - 1
        };
        let mut rng = SplitMix64::new(mix64(seed ^ 0x5EED_5EED_5EED_5EED));
        let keys = std::array::from_fn(|_| rng.next());
        Some(Permutation {
            n,
            half_bits,
            mask,
            keys,
        })
    }

    fn feistel(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> self.half_bits, x & self.mask);
        for k in self.keys {
            let f = mix64(r ^ k) & self.mask;
            (l, r) = (r, l ^ f);
        }
        (l << self.half_bits) | r
    }

    /// The image of `k` (requires `k < n`; larger `k` are reduced modulo `n` first).
    pub fn apply(&self, k: u64) -> u64 {
        let mut x = match self.n {
            Some(n) => k % n,
            None => k,
        };
        loop {
            x = self.feistel(x);
            match self.n {
                Some(n) if x >= n => continue,
                _ => return x,
            }
        }
    }
}

#[cfg(test)]
mod permutation_tests {
    use super::*;

    #[test]
    fn is_a_bijection_for_many_sizes() {
        for n in (1u64..=70).chain([255, 256, 257, 1000, 4096, 4097]) {
            for seed in [0, 1, 99] {
                let p = Permutation::new(Some(n), seed).unwrap();
                let mut out: Vec<u64> = (0..n).map(|k| p.apply(k)).collect();
                out.sort_unstable();
                assert_eq!(out, (0..n).collect::<Vec<_>>(), "n={n} seed={seed}");
            }
        }
        assert!(Permutation::new(Some(0), 1).is_none());
    }

    #[test]
    fn shuffles_and_depends_on_the_seed() {
        let a = Permutation::new(Some(1000), 1).unwrap();
        let b = Permutation::new(Some(1000), 2).unwrap();
        let fixed = (0..1000).filter(|&k| a.apply(k) == k).count();
        assert!(fixed < 20, "{fixed} fixed points");
        assert!((0..1000).any(|k| a.apply(k) != b.apply(k)));
        // Large domains work too, including all of u64.
        let big = Permutation::new(Some(1_000_000_000_000), 3).unwrap();
        assert!((0..100).all(|k| big.apply(k) < 1_000_000_000_000));
        let all = Permutation::new(None, 3).unwrap();
        let x = all.apply(u64::MAX);
        assert_ne!(x, all.apply(0));
    }
}
