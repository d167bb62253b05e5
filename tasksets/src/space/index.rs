//! Indexing: the digit layout of a group (`[[task]]` table) and the decoding of a variant
//! index into its tasks.

use crate::generate::{self, DeadlineClass};
use crate::model::{Task, TaskSet};
use crate::rng::{position_key, variant_key, SplitMix64};

use super::attr::{
    radix_of, same_bytes, split, DeadlineAttr, IntAttr, SplitMethod, TextAttr, Utilisation,
};
use super::iter::Odometer;
use super::VariantSpace;

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
    pub(super) fn build<D: Digits>(
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
pub(super) struct Digit {
    pub(super) value: u64,
    pub(super) radix: u64,
}

/// Where a group's digits come from: divided out of an index, or replayed from an odometer.
/// Digits of base 1 are always 0 and are neither stored nor read.
pub(super) trait Digits {
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
pub(super) struct Replay<'a> {
    pub(super) digits: &'a [Digit],
    pub(super) pos: usize,
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

impl VariantSpace {
    /// Build variant `index` by dividing its digits out; records them into `odo` if given.
    #[inline]
    pub(super) fn build(&self, index: u64, out: &mut TaskSet, mut odo: Option<&mut Odometer>) {
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
}
