//! Capped exponential backoff with optional jitter.

use std::time::Duration;

use rand::Rng;

/// Capped exponential backoff: attempt `n` (from 0) waits `initial * factor^n`, never more
/// than `max`. Optional jitter shortens each delay by a random fraction of up to `jitter`, so
/// hosts that fell silent together do not get re-probed in lockstep.
///
/// ```
/// use std::time::Duration;
/// use taskdist::discovery::Backoff;
///
/// let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
/// assert_eq!(b.delay(0), Duration::from_secs(1));
/// assert_eq!(b.delay(3), Duration::from_secs(8));
/// assert_eq!(b.delay(10), Duration::from_secs(60)); // capped: min(1 s * 2^10, 60 s)
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry (attempt 0).
    pub initial: Duration,
    /// Upper bound of every delay.
    pub max: Duration,
    /// Growth per attempt (1 keeps the delay constant).
    pub factor: u32,
    /// Fraction in `0.0..=1.0` by which [`Backoff::delay_with_jitter`] may shorten a delay;
    /// 0 disables jitter. Values outside the range are clamped.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 1 s doubling up to 60 s, with 20 % jitter.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            factor: 2,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// Doubling backoff from `initial` up to `max`, without jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            factor: 2,
            jitter: 0.0,
        }
    }

    /// The same backoff with the given jitter fraction.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay before retry number `attempt` (0-based), without jitter:
    /// `min(initial * factor^attempt, max)`. Never overflows.
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self.max.as_nanos();
        let mut nanos = self.initial.as_nanos().min(cap);
        let factor = u128::from(self.factor.max(1));
        for _ in 0..attempt {
            if nanos >= cap || factor == 1 {
                break;
            }
            nanos = nanos.saturating_mul(factor).min(cap);
        }
        duration_from_nanos(nanos)
    }

    /// [`Backoff::delay`] shortened by a random fraction of up to `jitter`: the result lies in
    /// `[delay * (1 - jitter), delay]`, so the cap still holds.
    pub fn delay_with_jitter<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let base = self.delay(attempt);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if jitter == 0.0 {
            return base;
        }
        let cut: f64 = rng.gen_range(0.0..=jitter);
        base.mul_f64(1.0 - cut)
    }
}

fn duration_from_nanos(nanos: u128) -> Duration {
    const NS: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NS).unwrap_or(u64::MAX);
    // The remainder is below 10^9 and fits in u32.
    Duration::new(secs, (nanos % NS) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn grows_exponentially_then_caps() {
        let b = Backoff::new(S(1), S(60));
        let got: Vec<_> = (0..9).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn cap_is_a_minimum_not_a_maximum() {
        // The classic bug: max(delay, cap) would return the cap for attempt 0.
        let b = Backoff::new(Duration::from_millis(100), S(30));
        assert_eq!(b.delay(0), Duration::from_millis(100));
        assert!(b.delay(0) < b.max);
    }

    #[test]
    fn initial_above_max_is_capped() {
        let b = Backoff::new(S(90), S(60));
        assert_eq!(b.delay(0), S(60));
        assert_eq!(b.delay(5), S(60));
    }

    #[test]
    fn huge_attempts_and_durations_do_not_overflow() {
        let b = Backoff {
            initial: S(u64::MAX / 2),
            max: Duration::MAX,
            factor: u32::MAX,
            jitter: 0.0,
        };
        assert_eq!(b.delay(u32::MAX), Duration::MAX);
        let small = Backoff::new(Duration::from_nanos(1), S(5));
        assert_eq!(small.delay(u32::MAX), S(5));
    }

    #[test]
    fn factor_one_and_zero_keep_the_delay() {
        let mut b = Backoff::new(S(3), S(60));
        b.factor = 1;
        assert_eq!(b.delay(10), S(3));
        b.factor = 0;
        assert_eq!(
            b.delay(10),
            S(3),
            "factor 0 is treated as 1, never shrinking to 0"
        );
    }

    proptest::proptest! {
        #[test]
        fn delays_never_shrink_and_never_pass_the_cap(
            initial_ms in 0u64..100_000,
            max_ms in 0u64..10_000_000,
            factor in 0u32..10,
            attempt in 0u32..200,
        ) {
            let b = Backoff {
                initial: Duration::from_millis(initial_ms),
                max: Duration::from_millis(max_ms),
                factor,
                jitter: 0.0,
            };
            let now = b.delay(attempt);
            let next = b.delay(attempt + 1);
            proptest::prop_assert!(now <= next);
            proptest::prop_assert!(next <= b.max);
            proptest::prop_assert_eq!(b.delay(0), b.initial.min(b.max));
        }
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b = Backoff::new(S(1), S(60)).with_jitter(0.5);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 0..12 {
            let full = b.delay(attempt);
            for _ in 0..50 {
                let d = b.delay_with_jitter(attempt, &mut rng);
                assert!(d <= full && d >= full.mul_f64(0.5), "{d:?} vs {full:?}");
            }
        }
        let none = Backoff::new(S(1), S(60)).with_jitter(f64::NAN);
        assert_eq!(none.delay_with_jitter(2, &mut rng), S(4));
    }
}
