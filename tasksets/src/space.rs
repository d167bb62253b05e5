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

use std::sync::Arc;

use crate::generate::{self, DeadlineClass};
use crate::model::{Task, TaskSet};
use crate::rng::{position_key, variant_key, Permutation, SplitMix64};

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

/// A mixed-radix digit base; `0` stands for "larger than any `u64`".
#[inline]
fn split(i: u64, radix: u64) -> (u64, u64) {
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
    fn value(&self, digit: u64, key: impl FnOnce() -> u64) -> u64 {
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
    fn write(&self, digit: u64, key: impl FnOnce() -> u64, out: &mut String) {
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
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
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

    fn value(&self, digit: u64, key: u64) -> f64 {
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

/// Attempts of UUniFast-Discard before falling back to RandFixedSum.
const DISCARD_ATTEMPTS: u32 = 1000;

// Field positions, used for draw keys (config entries follow from CONFIG_BASE).
const F_EXEC: u64 = 0;
const F_CRIT: u64 = 1;
const F_PRIO: u64 = 2;
const F_DEADLINE: u64 = 3;
const F_PERIOD: u64 = 4;
const F_OFFSET: u64 = 5;
const F_JOBS: u64 = 6;
const F_QUOTA: u64 = 7;
const F_CAPS: u64 = 8;
const F_CORES: u64 = 9;
const F_COREOFFSET: u64 = 10;
const F_PKG: u64 = 11;
const CONFIG_BASE: u64 = 16;
/// Copy number used for group-level draws (utilisation total and split).
const GROUP_COPY: u64 = 0xFFFF_FFFF;

/// The attribute position of a draw: group, copy within the group, field.
#[inline]
fn position(group: usize, copy: u64, field: u64) -> u64 {
    ((group as u64) << 48) | ((copy & 0xFFFF_FFFF) << 16) | (field & 0xFFFF)
}

/// The attributes of one `[[task]]` table, as compiled from the spec.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Attrs {
    /// Possible numbers of copies.
    pub(crate) counts: Box<[u32]>,
    /// Whether copies vary independently.
    pub(crate) independent: bool,
    pub(crate) exec: IntAttr,
    pub(crate) crit: IntAttr,
    pub(crate) prio: IntAttr,
    pub(crate) deadline: DeadlineAttr,
    pub(crate) period: IntAttr,
    pub(crate) offset: IntAttr,
    pub(crate) jobs: IntAttr,
    pub(crate) quota: IntAttr,
    pub(crate) caps: IntAttr,
    pub(crate) cores: IntAttr,
    pub(crate) coreoffset: IntAttr,
    pub(crate) pkg: TextAttr,
    pub(crate) config: Box<[(String, TextAttr)]>,
    pub(crate) util: Option<Utilisation>,
}

/// One `[[task]]` table: a task repeated `count` times, with its digit layout and build plan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Group {
    pub(crate) a: Attrs,
    // Derived by `finish`:
    /// Enumerated combinations of one copy.
    pub(crate) per_copy: u128,
    /// Combinations for each entry of `counts` (including the utilisation total's digit).
    pub(crate) count_sizes: Box<[u128]>,
    /// `count_sizes` as digit bases for `split`.
    count_radix: Box<[u64]>,
    /// All combinations of the group.
    pub(crate) size: u128,
    util_radix: u64,
    /// The build plan: numeric fields (indexed by `F_*`) that never change...
    consts: [u64; NUM_FIELDS],
    /// ...and those that do (enumerated or random), in digit order.
    int_ops: Box<[IntOp]>,
    pkg_radix: u64,
    config_radix: Box<[u64]>,
}

/// Number of numeric fields of a task (`F_EXEC..=F_COREOFFSET`).
const NUM_FIELDS: usize = 11;

/// A numeric field whose value varies between variants.
#[derive(Debug, Clone, PartialEq)]
struct IntOp {
    field: usize,
    radix: u64,
    attr: IntAttr,
}

impl Group {
    /// A group with its derived layout; fails if the group has more than 2^128 variants.
    pub(crate) fn new(a: Attrs) -> Result<Self, String> {
        let mut g = Group {
            a,
            per_copy: 1,
            count_sizes: Box::new([]),
            count_radix: Box::new([]),
            size: 0,
            util_radix: 1,
            consts: [0; NUM_FIELDS],
            int_ops: Box::new([]),
            pkg_radix: 1,
            config_radix: Box::new([]),
        };
        g.finish()?;
        Ok(g)
    }

    fn digit_radices(&self) -> impl Iterator<Item = u64> + '_ {
        let deadline = match &self.a.deadline {
            DeadlineAttr::Value(a) => a.radix(),
            DeadlineAttr::Class(_) => 1,
        };
        [
            self.a.exec.radix(),
            self.a.crit.radix(),
            self.a.prio.radix(),
            deadline,
            self.a.period.radix(),
            self.a.offset.radix(),
            self.a.jobs.radix(),
            self.a.quota.radix(),
            self.a.caps.radix(),
            self.a.cores.radix(),
            self.a.coreoffset.radix(),
            self.a.pkg.radix(),
        ]
        .into_iter()
        .chain(self.a.config.iter().map(|(_, a)| a.radix()))
    }

    /// The numeric attributes, indexed by `F_*` (a deadline class counts as fixed 0 here and
    /// is applied after the period is known).
    fn int_attrs(&self) -> [&IntAttr; NUM_FIELDS] {
        const CLASS: IntAttr = IntAttr::Fixed(0);
        [
            &self.a.exec,
            &self.a.crit,
            &self.a.prio,
            match &self.a.deadline {
                DeadlineAttr::Value(a) => a,
                DeadlineAttr::Class(_) => &CLASS,
            },
            &self.a.period,
            &self.a.offset,
            &self.a.jobs,
            &self.a.quota,
            &self.a.caps,
            &self.a.cores,
            &self.a.coreoffset,
        ]
    }

    fn finish(&mut self) -> Result<(), String> {
        let mut consts = [0u64; NUM_FIELDS];
        let mut ops = Vec::new();
        for (field, attr) in self.int_attrs().into_iter().enumerate() {
            match attr {
                IntAttr::Fixed(v) => consts[field] = *v,
                other => ops.push(IntOp {
                    field,
                    radix: other.radix(),
                    attr: other.clone(),
                }),
            }
        }
        self.consts = consts;
        self.int_ops = ops.into();
        self.pkg_radix = self.a.pkg.radix();
        self.config_radix = self.a.config.iter().map(|(_, a)| a.radix()).collect();
        let too_big = || "the space has more than 2^128 variants".to_string();
        let mut per_copy: u128 = 1;
        for r in self.digit_radices() {
            per_copy = per_copy.checked_mul(u128::from(r)).ok_or_else(too_big)?;
        }
        self.util_radix = self.a.util.as_ref().map_or(1, |u| u.total.radix());
        let mut sizes = Vec::with_capacity(self.a.counts.len());
        let mut size: u128 = 0;
        for &c in self.a.counts.iter() {
            let copies = if self.a.independent {
                checked_pow(per_copy, c).ok_or_else(too_big)?
            } else {
                per_copy
            };
            let s = copies
                .checked_mul(u128::from(self.util_radix))
                .ok_or_else(too_big)?;
            sizes.push(s);
            size = size.checked_add(s).ok_or_else(too_big)?;
        }
        self.per_copy = per_copy;
        self.count_radix = sizes.iter().map(|s| radix_of(*s)).collect();
        self.count_sizes = sizes.into();
        self.size = size;
        Ok(())
    }

    /// Whether any value of the group is drawn at random.
    pub(crate) fn is_random(&self) -> bool {
        let ints = [
            &self.a.exec,
            &self.a.crit,
            &self.a.prio,
            &self.a.period,
            &self.a.offset,
            &self.a.jobs,
            &self.a.quota,
            &self.a.caps,
            &self.a.cores,
            &self.a.coreoffset,
        ];
        ints.iter().any(|a| a.is_random())
            || match &self.a.deadline {
                DeadlineAttr::Value(a) => a.is_random(),
                DeadlineAttr::Class(c) => *c != DeadlineClass::Implicit,
            }
            || self.a.pkg.is_random()
            || self.a.config.iter().any(|(_, a)| a.is_random())
            || self.a.util.is_some()
    }

    /// Largest number of tasks this group can contribute.
    pub(crate) fn max_count(&self) -> u32 {
        self.a.counts.iter().copied().max().unwrap_or(0)
    }

    /// Pick the count for a group digit; returns (count, digit within that count).
    #[inline]
    fn pick_count(&self, mut digit: u64) -> (u32, u64) {
        for (i, &c) in self.a.counts.iter().enumerate() {
            let r = self.count_radix[i];
            if r == 0 || digit < r {
                return (c, digit);
            }
            digit -= r;
        }
        // Unreachable for digits below `size`; fall back to the last count.
        (self.a.counts.last().copied().unwrap_or(0), 0)
    }

    /// Write this group's tasks for variant `index` into `tasks[*at..]`, taking the group's
    /// digits (utilisation total, then each copy's attributes) from `src`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn build<D: Digits>(
        &self,
        gi: usize,
        vkey: u64,
        count: u32,
        src: &mut D,
        tasks: &mut Vec<Task>,
        at: &mut usize,
        shares: &mut Vec<f64>,
    ) {
        let udigit = src.take(self.util_radix);
        if let Some(u) = &self.a.util {
            let key = position_key(vkey, position(gi, GROUP_COPY, 0));
            let total = u.total.value(udigit, key);
            let mut rng = SplitMix64::new(position_key(vkey, position(gi, GROUP_COPY, 1)));
            let n = count as usize;
            match u.method {
                SplitMethod::UUniFast => {
                    if !generate::uunifast_discard(
                        &mut rng,
                        n,
                        total,
                        u.max,
                        DISCARD_ATTEMPTS,
                        shares,
                    ) {
                        generate::randfixedsum(&mut rng, n, total, u.max, shares);
                    }
                }
                SplitMethod::RandFixedSum => {
                    generate::randfixedsum(&mut rng, n, total, u.max, shares)
                }
            }
        }
        let base = src.mark();
        for copy in 0..u64::from(count) {
            if !self.a.independent {
                // Shared copies read the same digits again.
                src.rewind(base);
            }
            let pos = *at;
            *at += 1;
            let key = |f: u64| move || position_key(vkey, position(gi, copy, f));
            let mut v = self.consts;
            for op in self.int_ops.iter() {
                let d = src.take(op.radix);
                v[op.field] = op.attr.value(d, key(op.field as u64));
            }
            let dpkg = src.take(self.pkg_radix);

            if tasks.len() == pos {
                tasks.push(Task::new(0, String::new()));
            }
            let t = &mut tasks[pos];
            t.id = pos as u32;
            t.period_ms = v[F_PERIOD as usize];
            t.executiontime_ms = match &self.a.util {
                Some(_) => generate::execution_ms(
                    shares.get(copy as usize).copied().unwrap_or(0.0),
                    t.period_ms,
                ),
                None => v[F_EXEC as usize],
            };
            t.criticaltime_ms = v[F_CRIT as usize];
            t.priority = v[F_PRIO as usize] as u32;
            t.deadline_ms = match &self.a.deadline {
                DeadlineAttr::Value(_) => v[F_DEADLINE as usize],
                DeadlineAttr::Class(c) => c.deadline_ms(
                    &mut SplitMix64::new(key(F_DEADLINE)()),
                    t.executiontime_ms,
                    t.period_ms,
                ),
            };
            t.offset_ms = v[F_OFFSET as usize];
            t.numberofjobs = v[F_JOBS as usize] as u32;
            t.quota_bytes = v[F_QUOTA as usize];
            t.caps = v[F_CAPS as usize] as u32;
            t.cores = v[F_CORES as usize] as u32;
            t.coreoffset = v[F_COREOFFSET as usize] as u32;
            self.a.pkg.write(dpkg, key(F_PKG), &mut t.pkg);
            t.config.truncate(self.a.config.len());
            for (ci, ((name, attr), &radix)) in self
                .a
                .config
                .iter()
                .zip(self.config_radix.iter())
                .enumerate()
            {
                let dcfg = src.take(radix);
                if t.config.len() == ci {
                    t.config.push((name.clone(), String::new()));
                }
                let entry = &mut t.config[ci];
                if !same_bytes(entry.0.as_bytes(), name.as_bytes()) {
                    entry.0.clear();
                    entry.0.push_str(name);
                }
                attr.write(dcfg, key(CONFIG_BASE + ci as u64), &mut entry.1);
            }
        }
    }
}

/// One enumerated digit of a decoded variant: its value and base (always at least 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Digit {
    value: u64,
    radix: u64,
}

/// Where a group's digits come from: divided out of an index, or replayed from an odometer.
/// Digits of base 1 are always 0 and are neither stored nor read.
trait Digits {
    /// The next digit of base `radix`.
    fn take(&mut self, radix: u64) -> u64;
    /// The current position, to read the same digits again (shared copies).
    fn mark(&self) -> (u64, usize);
    /// Go back to a position from `mark`.
    fn rewind(&mut self, mark: (u64, usize));
}

/// Divides digits out of a number; optionally records each new digit.
struct Splitter<'a> {
    rest: u64,
    pos: usize,
    record: Option<&'a mut Vec<Digit>>,
}

impl Digits for Splitter<'_> {
    #[inline(always)]
    fn take(&mut self, radix: u64) -> u64 {
        if radix == 1 {
            return 0;
        }
        let (d, rest) = split(self.rest, radix);
        self.rest = rest;
        if let Some(rec) = self.record.as_deref_mut() {
            if rec.len() == self.pos {
                rec.push(Digit { value: d, radix });
            }
        }
        self.pos += 1;
        d
    }

    #[inline(always)]
    fn mark(&self) -> (u64, usize) {
        (self.rest, self.pos)
    }

    #[inline(always)]
    fn rewind(&mut self, mark: (u64, usize)) {
        (self.rest, self.pos) = mark;
    }
}

/// Reads recorded digits back.
struct Replay<'a> {
    digits: &'a [Digit],
    pos: usize,
}

impl Digits for Replay<'_> {
    #[inline(always)]
    fn take(&mut self, radix: u64) -> u64 {
        if radix == 1 {
            return 0;
        }
        let d = self.digits.get(self.pos).map_or(0, |d| d.value);
        self.pos += 1;
        d
    }

    #[inline(always)]
    fn mark(&self) -> (u64, usize) {
        (0, self.pos)
    }

    #[inline(always)]
    fn rewind(&mut self, mark: (u64, usize)) {
        self.pos = mark.1;
    }
}

/// The decoded digits of the variant a [`Variants`] iterator built last, so that the next
/// index is an increment with carry instead of a chain of divisions.
#[derive(Debug, Clone, Default)]
struct Odometer {
    /// The index the digits stand for; `None` when they are not valid.
    index: Option<u64>,
    digits: Vec<Digit>,
    /// Per group: its chosen count and the range of its digits.
    groups: Vec<(u32, usize, usize)>,
}

fn checked_pow(base: u128, exp: u32) -> Option<u128> {
    let mut acc: u128 = 1;
    for _ in 0..exp {
        acc = acc.checked_mul(base)?;
        if acc == 0 {
            return Some(0);
        }
    }
    Some(acc)
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

    /// Build variant `index` by dividing its digits out; records them into `odo` if given.
    #[inline]
    fn build(&self, index: u64, out: &mut TaskSet, mut odo: Option<&mut Odometer>) {
        let inner = &*self.inner;
        // Most indices lie in the first sample: skip the division then.
        let mut combo = if u128::from(index) < inner.combinations {
            index
        } else {
            split(index, inner.combinations_radix).0
        };
        let mut shares = Vec::new();
        if inner.has_util {
            shares.reserve(inner.max_tasks);
        }
        if let Some(o) = odo.as_deref_mut() {
            o.index = Some(index);
            o.digits.clear();
            o.groups.clear();
        }
        // Existing tasks (and their string buffers) are overwritten in order; the vector
        // grows when a variant has more tasks and is truncated when it has fewer.
        // Keys are only needed by random attributes.
        let vkey = if inner.random {
            variant_key(inner.seed, index)
        } else {
            0
        };
        let tasks = &mut out.tasks;
        let mut at = 0usize;
        let last = inner.groups.len().saturating_sub(1);
        let recording = odo.is_some();
        // Reuse the odometer's group list (no allocation per variant).
        let mut ranges = odo
            .as_deref_mut()
            .map(|o| std::mem::take(&mut o.groups))
            .unwrap_or_default();
        ranges.clear();
        let mut src = Splitter {
            rest: 0,
            pos: 0,
            record: odo.as_deref_mut().map(|o| &mut o.digits),
        };

        for (gi, g) in inner.groups.iter().enumerate() {
            // The last group takes what is left (always below its size): no division.
            let (digit, rest) = if gi == last {
                (combo, 0)
            } else {
                split(combo, inner.group_radix[gi])
            };
            combo = rest;
            let (count, within) = g.pick_count(digit);
            src.rest = within;
            let start = src.pos;
            g.build(gi, vkey, count, &mut src, tasks, &mut at, &mut shares);
            if recording {
                ranges.push((count, start, src.pos));
            }
        }
        tasks.truncate(at);
        if let Some(o) = odo {
            o.groups = ranges;
        }
    }

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
