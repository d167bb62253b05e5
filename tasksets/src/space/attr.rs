//! The value model of a variant space: fixed, enumerated and random attributes, and the
//! mixed-radix digit helpers they use.

use crate::generate::DeadlineClass;
use crate::rng::SplitMix64;

/// A mixed-radix digit base; `0` stands for "larger than any `u64`".
#[inline]
pub(super) fn split(i: u64, radix: u64) -> (u64, u64) {
    match radix {
        0 => (i, 0),
        1 => (0, i),
        r => (i % r, i / r),
    }
}

/// Saturating conversion of a digit base to the `u64` form used by [`split`].
pub(crate) fn radix_of(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// An integer attribute.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum IntAttr {
    Fixed(u64),
    List(Box<[u64]>),
    Range {
        from: u64,
        step: u64,
        n: u64,
    },
    Uniform {
        lo: u64,
        hi: u64,
    },
    /// `ln_lo`, `ln_hi1` are `ln(lo)` and `ln(hi + 1)`, computed once.
    LogUniform {
        lo: u64,
        hi: u64,
        ln_lo: f64,
        ln_hi1: f64,
    },
    Choice(Box<[u64]>),
}

impl IntAttr {
    /// A log-uniform draw over `lo..=hi` (requires `1 <= lo <= hi`).
    pub(crate) fn log_uniform(lo: u64, hi: u64) -> Self {
        IntAttr::LogUniform {
            lo,
            hi,
            ln_lo: (lo as f64).ln(),
            ln_hi1: (hi as f64 + 1.0).ln(),
        }
    }

    /// Number of enumerated values (1 for fixed and random attributes).
    pub(crate) fn radix(&self) -> u64 {
        match self {
            IntAttr::List(v) => v.len() as u64,
            IntAttr::Range { n, .. } => *n,
            _ => 1,
        }
    }

    /// Smallest and largest value the attribute can take.
    pub(crate) fn bounds(&self) -> (u64, u64) {
        match self {
            IntAttr::Fixed(v) => (*v, *v),
            IntAttr::List(v) | IntAttr::Choice(v) => (
                v.iter().copied().min().unwrap_or(0),
                v.iter().copied().max().unwrap_or(0),
            ),
            IntAttr::Range { from, step, n } => (*from, from + step * (n - 1)),
            IntAttr::Uniform { lo, hi } | IntAttr::LogUniform { lo, hi, .. } => (*lo, *hi),
        }
    }

    pub(crate) fn is_random(&self) -> bool {
        matches!(
            self,
            IntAttr::Uniform { .. } | IntAttr::LogUniform { .. } | IntAttr::Choice(_)
        )
    }

    #[inline(always)]
    pub(super) fn value(&self, digit: u64, key: impl FnOnce() -> u64) -> u64 {
        match self {
            IntAttr::Fixed(v) => *v,
            IntAttr::List(v) => v[digit as usize],
            IntAttr::Range { from, step, .. } => from + step * digit,
            _ => self.draw(key()),
        }
    }

    /// The value of a random attribute for draw key `key`.
    #[inline(never)]
    fn draw(&self, key: u64) -> u64 {
        let mut rng = SplitMix64::new(key);
        match self {
            IntAttr::Uniform { lo, hi } => rng.uniform_u64(*lo, *hi),
            IntAttr::LogUniform {
                lo,
                hi,
                ln_lo,
                ln_hi1,
            } => rng.log_uniform_u64_with(*lo, *hi, *ln_lo, *ln_hi1),
            IntAttr::Choice(v) => v[rng.uniform_u64(0, v.len() as u64 - 1) as usize],
            IntAttr::Fixed(v) => *v,
            IntAttr::List(v) => v[0],
            IntAttr::Range { from, .. } => *from,
        }
    }
}

/// A text attribute (binary name or config value).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TextAttr {
    Fixed(String),
    List(Box<[String]>),
    Choice(Box<[String]>),
    /// An integer attribute written in decimal.
    Int(IntAttr),
}

impl TextAttr {
    pub(crate) fn radix(&self) -> u64 {
        match self {
            TextAttr::List(v) => v.len() as u64,
            TextAttr::Int(a) => a.radix(),
            _ => 1,
        }
    }

    pub(crate) fn is_random(&self) -> bool {
        match self {
            TextAttr::Choice(_) => true,
            TextAttr::Int(a) => a.is_random(),
            _ => false,
        }
    }

    #[inline(always)]
    pub(super) fn write(&self, digit: u64, key: impl FnOnce() -> u64, out: &mut String) {
        let s: &str = match self {
            TextAttr::Fixed(s) => s,
            TextAttr::List(v) => &v[digit as usize],
            TextAttr::Choice(v) => {
                let k = SplitMix64::new(key()).uniform_u64(0, v.len() as u64 - 1);
                &v[k as usize]
            }
            TextAttr::Int(a) => {
                let n = a.value(digit, key);
                out.clear();
                out.push_str(itoa::Buffer::new().format(n));
                return;
            }
        };
        if !same_bytes(out.as_bytes(), s.as_bytes()) {
            out.clear();
            out.push_str(s);
        }
    }
}

/// Byte equality without a `memcmp` call for the short names and values of tasks.
#[inline(always)]
pub(super) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A real-valued attribute (the utilisation total).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FloatAttr {
    Fixed(f64),
    List(Box<[f64]>),
    Range { from: f64, step: f64, n: u64 },
    Uniform { lo: f64, hi: f64 },
    LogUniform { lo: f64, hi: f64 },
    Choice(Box<[f64]>),
}

impl FloatAttr {
    pub(crate) fn radix(&self) -> u64 {
        match self {
            FloatAttr::List(v) => v.len() as u64,
            FloatAttr::Range { n, .. } => *n,
            _ => 1,
        }
    }

    pub(crate) fn bounds(&self) -> (f64, f64) {
        match self {
            FloatAttr::Fixed(v) => (*v, *v),
            FloatAttr::List(v) | FloatAttr::Choice(v) => (
                v.iter().copied().fold(f64::INFINITY, f64::min),
                v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ),
            FloatAttr::Range { from, step, n } => (*from, from + step * (*n - 1) as f64),
            FloatAttr::Uniform { lo, hi } | FloatAttr::LogUniform { lo, hi } => (*lo, *hi),
        }
    }

    #[allow(dead_code)]
    pub(crate) fn is_random(&self) -> bool {
        matches!(
            self,
            FloatAttr::Uniform { .. } | FloatAttr::LogUniform { .. } | FloatAttr::Choice(_)
        )
    }

    pub(super) fn value(&self, digit: u64, key: u64) -> f64 {
        match self {
            FloatAttr::Fixed(v) => *v,
            FloatAttr::List(v) => v[digit as usize],
            FloatAttr::Range { from, step, .. } => from + step * digit as f64,
            FloatAttr::Uniform { lo, hi } => SplitMix64::new(key).uniform_f64(*lo, *hi),
            FloatAttr::LogUniform { lo, hi } => SplitMix64::new(key).log_uniform_f64(*lo, *hi),
            FloatAttr::Choice(v) => {
                let k = SplitMix64::new(key).uniform_u64(0, v.len() as u64 - 1);
                v[k as usize]
            }
        }
    }
}

/// How a group's relative deadlines are set.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DeadlineAttr {
    Value(IntAttr),
    Class(DeadlineClass),
}

/// Which utilisation split a generator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SplitMethod {
    UUniFast,
    RandFixedSum,
}

/// Execution times derived from a utilisation split of the group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Utilisation {
    pub(crate) total: FloatAttr,
    pub(crate) method: SplitMethod,
    pub(crate) max: f64,
}
