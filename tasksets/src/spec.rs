//! Spec files: TOML documents that describe a variant space (format reference in the crate's
//! README and in [`Spec`]).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::admission::{AdmissionControl, Goal};
use crate::generate::DeadlineClass;
use crate::model::{parse_quota, Task, MAX_PRIORITY};
use crate::space::{
    Attrs, DeadlineAttr, FloatAttr, Group, IntAttr, Samples, SpaceLen, SplitMethod, TextAttr,
    Utilisation, VariantSpace,
};

/// Most copies one `[[task]]` table may ask for.
pub const MAX_COUNT: u64 = 4096;
/// Most values one enumerated list or range may have when it is materialised (the `count` of a
/// task group); attribute ranges are never materialised and have no such limit.
const MAX_COUNT_VALUES: u64 = 4096;

/// Most values a range of real numbers may have.
const MAX_FLOAT_STEPS: f64 = 1e12;

/// A spec could not be loaded. Every variant names the spec (file path or catalog name).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A problem at a known place in the spec text.
    #[error("{origin}:{line}:{column}: {message}")]
    At {
        /// File path or catalog name.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A problem with the spec as a whole.
    #[error("{origin}: {message}")]
    Invalid {
        /// File path or catalog name.
        origin: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The spec file could not be read.
    #[error("cannot read spec file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The spec path is not a regular file (a directory, FIFO, device, ...).
    #[error("spec file {}: not a regular file ({kind}); expected a TOML file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The spec file is larger than [`MAX_SPEC_BYTES`].
    #[error("spec file {}: {size} bytes, more than the limit of {limit} bytes for a spec", path.display())]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size in bytes (at least this many).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Neither a catalog entry nor a file has this name.
    #[error(
        "{name:?} is neither a catalog spec nor a readable file; catalog specs: {}",
        known.join(", ")
    )]
    NotFound {
        /// The name or path asked for.
        name: String,
        /// The catalog's names.
        known: Vec<&'static str>,
    },
}

impl SpecError {
    /// The 1-based (line, column) of the error, if it has a place.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            SpecError::At { line, column, .. } => Some((*line, *column)),
            _ => None,
        }
    }
}

/// A parsed and checked spec file.
///
/// ```
/// use taskdist_tasksets::{Spec, SpaceLen};
/// let spec = Spec::from_toml_str(r#"
///     name = "demo"
///     description = "two hey tasks, 128 priorities each"
///     seed = 7
///
///     [[task]]
///     pkg = "hey"
///     count = 2
///     independent = true
///     priority = { from = 0, to = 127 }
///     period_ms = { uniform = [100, 1000] }
/// "#, "demo.toml").unwrap();
/// assert_eq!(spec.space().len(), SpaceLen::Finite(128 * 128));
/// let v = spec.space().get(129).unwrap();
/// assert_eq!((v.tasks[0].priority, v.tasks[1].priority), (1, 1));
/// ```
#[derive(Debug, Clone)]
pub struct Spec {
    name: String,
    description: String,
    seed: u64,
    admission: Option<AdmissionControl>,
    priority: Option<i64>,
    weight: Option<f64>,
    requires: Option<toml::Table>,
    text: String,
    origin: String,
    space: VariantSpace,
}

impl Spec {
    /// Parse a spec from TOML text. `origin` (a file path or catalog name) prefixes error
    /// messages and is the default name.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Spec, SpecError> {
        let ctx = Ctx { text, origin };
        let raw: RawSpec = toml::from_str(text).map_err(|e| ctx.toml(&e))?;
        compile(raw, &ctx)
    }

    /// The same spec with another seed (the `seed` key replaced): other draws, same space.
    pub fn with_seed(&self, seed: u64) -> Result<Spec, SpecError> {
        let ctx = Ctx {
            text: &self.text,
            origin: &self.origin,
        };
        let mut raw: RawSpec = toml::from_str(&self.text).map_err(|e| ctx.toml(&e))?;
        raw.seed = Some(seed);
        let mut spec = compile(raw, &ctx)?;
        spec.name = self.name.clone();
        Ok(spec)
    }

    /// Read and parse a spec file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Spec, SpecError> {
        let path = path.as_ref();
        let text = read_spec_file(path)?;
        let mut spec = Spec::from_toml_str(&text, &path.display().to_string())?;
        if spec.name == spec.origin {
            if let Some(stem) = path.file_stem() {
                spec.name = stem.to_string_lossy().into_owned();
            }
        }
        Ok(spec)
    }

    /// Load a catalog spec by name, or else a spec file by path (a regular file of at most
    /// [`MAX_SPEC_BYTES`]). When neither exists the error
    /// lists the catalog's names.
    pub fn load(name_or_path: &str) -> Result<Spec, SpecError> {
        if let Some(entry) = crate::catalog::get(name_or_path) {
            return Spec::from_toml_str(entry.text, entry.name);
        }
        let path = Path::new(name_or_path);
        // Something that looks like a path is read as one, so a missing file is reported as
        // such rather than as an unknown catalog name.
        let looks_like_path = name_or_path.contains(std::path::MAIN_SEPARATOR)
            || name_or_path.contains('/')
            || name_or_path.ends_with(".toml");
        if path.is_file() || looks_like_path {
            return Spec::from_file(path);
        }
        Err(SpecError::NotFound {
            name: name_or_path.to_string(),
            known: crate::catalog::entries().iter().map(|e| e.name).collect(),
        })
    }

    /// The spec's name (`name` key, else the catalog name or file stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The one-line description (`description` key, empty if absent).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The seed of all random draws (`seed` key, default 0).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Admission-control data (`[admission]` table), if any.
    pub fn admission(&self) -> Option<AdmissionControl> {
        self.admission
    }

    /// The experiment's priority on a shared pool (top-level `priority`), if given.
    pub fn priority(&self) -> Option<i64> {
        self.priority
    }

    /// The experiment's weight among equal priorities (top-level `weight`), if given.
    pub fn weight(&self) -> Option<f64> {
        self.weight
    }

    /// The `[requires]` table: labels a target must have to run this spec (read by
    /// `taskdist::pool::Selector::from_toml`).
    pub fn requires(&self) -> Option<&toml::Table> {
        self.requires.as_ref()
    }

    /// The original TOML text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Where the spec came from (file path or catalog name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The variant space.
    pub fn space(&self) -> &VariantSpace {
        &self.space
    }

    /// The number of variants (shortcut for `space().len()`).
    pub fn len(&self) -> SpaceLen {
        self.space.len()
    }

    /// Whether the space is empty (never true for a loaded spec).
    pub fn is_empty(&self) -> bool {
        self.space.is_empty()
    }
}

struct Ctx<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Ctx<'_> {
    fn at(&self, span: Range<usize>, message: impl Into<String>) -> SpecError {
        let (line, column) = line_col(self.text, span.start);
        SpecError::At {
            origin: self.origin.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    fn whole(&self, message: impl Into<String>) -> SpecError {
        SpecError::Invalid {
            origin: self.origin.to_string(),
            message: message.into(),
        }
    }

    fn toml(&self, e: &toml::de::Error) -> SpecError {
        let message = e.message().trim_end().replace('\n', "; ");
        match e.span() {
            Some(span) => self.at(span, message),
            None => self.whole(message),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

// ---------------------------------------------------------------------------------------------
// Raw (serde) form

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: Option<String>,
    description: Option<String>,
    seed: Option<u64>,
    samples: Option<Spanned<Scalar>>,
    order: Option<Spanned<String>>,
    admission: Option<RawAdmission>,
    priority: Option<i64>,
    weight: Option<Spanned<f64>>,
    requires: Option<toml::Table>,
    #[serde(default)]
    task: Vec<Spanned<RawTask>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmission {
    goal: Goal,
    query_interval_ms: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    pkg: Spanned<RawValue>,
    count: Option<Spanned<RawValue>>,
    #[serde(default)]
    independent: bool,
    executiontime_ms: Option<Spanned<RawValue>>,
    criticaltime_ms: Option<Spanned<RawValue>>,
    priority: Option<Spanned<RawValue>>,
    deadline_ms: Option<Spanned<RawValue>>,
    period_ms: Option<Spanned<RawValue>>,
    offset_ms: Option<Spanned<RawValue>>,
    numberofjobs: Option<Spanned<RawValue>>,
    quota: Option<Spanned<RawValue>>,
    caps: Option<Spanned<RawValue>>,
    cores: Option<Spanned<RawValue>>,
    coreoffset: Option<Spanned<RawValue>>,
    config: Option<Spanned<OrderedConfig>>,
    utilisation: Option<Spanned<RawUtil>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUtil {
    total: Spanned<RawValue>,
    method: Option<Spanned<String>>,
    max: Option<Spanned<f64>>,
}

/// `config` entries in file order.
#[derive(Default)]
struct OrderedConfig(Vec<(String, Spanned<RawValue>)>);

impl<'de> Deserialize<'de> for OrderedConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of config values, such as `{ arg1 = 100000 }`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Spanned<RawValue>>()? {
                    out.push((k, v));
                }
                Ok(OrderedConfig(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// One TOML scalar.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Int(i64),
    Float(f64),
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => write!(f, "{s:?}"),
        }
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or a string")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        i64::try_from(v)
            .map(Scalar::Int)
            .map_err(|_| E::custom(format!("{v} is too large")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_string()))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// An attribute's value spec as written.
#[derive(Debug, Clone, PartialEq)]
enum RawValue {
    One(Scalar),
    List(Vec<Scalar>),
    Range {
        from: Scalar,
        to: Scalar,
        step: Option<Scalar>,
    },
    Uniform(Scalar, Scalar),
    LogUniform(Scalar, Scalar),
    Choice(Vec<Scalar>),
}

const VALUE_FORMS: &str = "a value, a list `[a, b, ...]`, a range `{ from = a, to = b, step = s }`, \
     or a random draw `{ uniform = [lo, hi] }`, `{ log_uniform = [lo, hi] }`, `{ choice = [a, b, ...] }`";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    from: Option<Scalar>,
    to: Option<Scalar>,
    step: Option<Scalar>,
    uniform: Option<Vec<Scalar>>,
    log_uniform: Option<Vec<Scalar>>,
    choice: Option<Vec<Scalar>>,
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(VALUE_FORMS)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawValue, E> {
                ScalarVisitor.visit_i64(v).map(RawValue::One)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawValue, E> {
                ScalarVisitor.visit_u64(v).map(RawValue::One)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawValue, E> {
                ScalarVisitor.visit_f64(v).map(RawValue::One)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawValue, E> {
                ScalarVisitor.visit_str(v).map(RawValue::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = seq.next_element::<Scalar>()? {
                    out.push(x);
                }
                if out.is_empty() {
                    return Err(de::Error::custom(
                        "an empty list has no values; expected at least one",
                    ));
                }
                Ok(RawValue::List(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawValue, A::Error> {
                let t = RawTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                table_form(t).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

fn table_form(t: RawTable) -> Result<RawValue, String> {
    let pair = |name: &str, v: Vec<Scalar>| -> Result<(Scalar, Scalar), String> {
        match <[Scalar; 2]>::try_from(v) {
            Ok([a, b]) => Ok((a, b)),
            Err(v) => Err(format!(
                "`{name}` takes two bounds `[lo, hi]`, found {} values",
                v.len()
            )),
        }
    };
    let forms = usize::from(t.from.is_some() || t.to.is_some() || t.step.is_some())
        + usize::from(t.uniform.is_some())
        + usize::from(t.log_uniform.is_some())
        + usize::from(t.choice.is_some());
    if forms != 1 {
        return Err(format!(
            "expected exactly one of `from`/`to`/`step`, `uniform`, `log_uniform`, `choice`, found {forms}"
        ));
    }
    if let Some(v) = t.uniform {
        let (a, b) = pair("uniform", v)?;
        return Ok(RawValue::Uniform(a, b));
    }
    if let Some(v) = t.log_uniform {
        let (a, b) = pair("log_uniform", v)?;
        return Ok(RawValue::LogUniform(a, b));
    }
    if let Some(v) = t.choice {
        if v.is_empty() {
            return Err("`choice` needs at least one value".into());
        }
        return Ok(RawValue::Choice(v));
    }
    match (t.from, t.to) {
        (Some(from), Some(to)) => Ok(RawValue::Range {
            from,
            to,
            step: t.step,
        }),
        _ => Err("a range needs both `from` and `to` (inclusive), and optionally `step`".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Compilation into a VariantSpace

fn compile(raw: RawSpec, ctx: &Ctx) -> Result<Spec, SpecError> {
    let seed = raw.seed.unwrap_or(0);
    let samples = match &raw.samples {
        None => Samples::Finite(1),
        Some(s) => match s.get_ref() {
            Scalar::Int(n) if *n >= 1 => Samples::Finite(*n as u64),
            Scalar::Str(u) if u == "unbounded" => Samples::Unbounded,
            other => {
                return Err(ctx.at(
                    s.span(),
                    format!(
                        "`samples`: expected a positive integer or \"unbounded\", found {other}"
                    ),
                ))
            }
        },
    };
    if raw.task.is_empty() {
        return Err(
            ctx.whole("the spec has no task; expected at least one `[[task]]` table with a `pkg`")
        );
    }
    let mut groups = Vec::with_capacity(raw.task.len());
    for t in &raw.task {
        let group = compile_task(t, ctx)?;
        groups.push(group);
    }
    let total_tasks: u64 = groups.iter().map(|g| u64::from(g.max_count())).sum();
    if total_tasks > u64::from(u32::MAX) {
        return Err(ctx.whole("a variant would have more than 2^32 tasks"));
    }
    let shuffled = match &raw.order {
        None => false,
        Some(o) => match o.get_ref().as_str() {
            "enumerated" => false,
            "shuffled" => true,
            other => {
                return Err(ctx.at(
                    o.span(),
                    format!(
                        "`order`: unknown order {other:?}; expected \"enumerated\" or \"shuffled\""
                    ),
                ))
            }
        },
    };
    let space =
        VariantSpace::new(seed, groups, samples, shuffled).map_err(|m| match &raw.order {
            Some(o) if shuffled => ctx.at(o.span(), m),
            _ => ctx.whole(m),
        })?;
    if samples != Samples::Finite(1) && !space.is_random() {
        let span = raw.samples.as_ref().map_or(0..0, |s| s.span());
        return Err(ctx.at(
            span,
            "`samples` repeats each combination, but no attribute is random, so every sample \
             would be the same task-set; remove `samples` or make an attribute random",
        ));
    }
    // Defence in depth: the checks above bound every attribute, so these variants are valid;
    // building a few proves the space is well-formed before a run starts.
    let probes: Vec<u64> = match space.len() {
        SpaceLen::Finite(n) => {
            let last = u64::try_from(n.saturating_sub(1)).unwrap_or(u64::MAX);
            vec![0, last / 2, last]
        }
        SpaceLen::Unbounded => vec![0, 1, u64::MAX],
    };
    for i in probes {
        let set = space
            .get(i)
            .map_err(|e| ctx.whole(format!("variant {i}: {e}")))?;
        set.validate()
            .map_err(|e| ctx.whole(format!("variant {i} is invalid: {e}")))?;
    }
    let weight = match &raw.weight {
        Some(w) if !(w.get_ref().is_finite() && *w.get_ref() > 0.0) => {
            return Err(ctx.at(
                w.span(),
                format!(
                    "`weight`: {} is not a positive number; expected e.g. 1 or 2.5",
                    w.get_ref()
                ),
            ))
        }
        Some(w) => Some(*w.get_ref()),
        None => None,
    };
    Ok(Spec {
        name: raw.name.unwrap_or_else(|| ctx.origin.to_string()),
        priority: raw.priority,
        weight,
        requires: raw.requires,
        description: raw.description.unwrap_or_default(),
        seed,
        admission: raw.admission.map(|a| AdmissionControl {
            goal: a.goal,
            query_interval_ms: a.query_interval_ms,
        }),
        text: ctx.text.to_string(),
        origin: ctx.origin.to_string(),
        space,
    })
}

const U32: u64 = u32::MAX as u64;

fn compile_task(t: &Spanned<RawTask>, ctx: &Ctx) -> Result<Group, SpecError> {
    let t_span = t.span();
    let t = t.get_ref();
    let defaults = Task::new(0, "x");
    let int = |v: &Option<Spanned<RawValue>>,
               name: &str,
               default: u64,
               lo: u64,
               hi: u64|
     -> Result<IntAttr, SpecError> {
        match v {
            None => Ok(IntAttr::Fixed(default)),
            Some(v) => int_attr(v, name, lo, hi, ctx, as_u64),
        }
    };

    let counts = compile_counts(t.count.as_ref(), ctx)?;
    let min_count = counts.iter().copied().min().unwrap_or(1);

    let period = int(&t.period_ms, "period_ms", defaults.period_ms, 1, U32)?;
    let exec = int(
        &t.executiontime_ms,
        "executiontime_ms",
        defaults.executiontime_ms,
        0,
        U32,
    )?;
    let crit = int(
        &t.criticaltime_ms,
        "criticaltime_ms",
        defaults.criticaltime_ms,
        0,
        U32,
    )?;
    let prio = int(
        &t.priority,
        "priority",
        u64::from(defaults.priority),
        0,
        u64::from(MAX_PRIORITY),
    )?;
    let offset = int(&t.offset_ms, "offset_ms", defaults.offset_ms, 0, U32)?;
    let jobs = int(
        &t.numberofjobs,
        "numberofjobs",
        u64::from(defaults.numberofjobs),
        1,
        U32,
    )?;
    let quota = match &t.quota {
        None => IntAttr::Fixed(defaults.quota_bytes),
        Some(v) => int_attr(v, "quota", 0, U32, ctx, as_quota)?,
    };
    let caps = int(&t.caps, "caps", u64::from(defaults.caps), 0, U32)?;
    let cores = int(&t.cores, "cores", u64::from(defaults.cores), 0, U32)?;
    let coreoffset = int(
        &t.coreoffset,
        "coreoffset",
        u64::from(defaults.coreoffset),
        0,
        U32,
    )?;

    let max_period = period.bounds().1;
    let deadline = compile_deadline(t.deadline_ms.as_ref(), max_period, ctx)?;

    let pkg = text_attr(&t.pkg, "pkg", ctx, |s| {
        let task = Task::new(0, s);
        task.validate().map_err(|e| e.reason)
    })?;

    let config = compile_config(t.config.as_ref(), ctx)?;

    let util = compile_utilisation(t, min_count, ctx)?;

    Group::new(Attrs {
        counts,
        independent: t.independent,
        exec,
        crit,
        prio,
        deadline,
        period,
        offset,
        jobs,
        quota,
        caps,
        cores,
        coreoffset,
        pkg,
        config: config.into_boxed_slice(),
        util,
    })
    .map_err(|m| ctx.at(t_span, m))
}

/// The possible numbers of copies of a task: a number, a list or a short range (no random
/// counts).
fn compile_counts(count: Option<&Spanned<RawValue>>, ctx: &Ctx) -> Result<Box<[u32]>, SpecError> {
    Ok(match count {
        None => vec![1u32].into_boxed_slice(),
        Some(c) => {
            let attr = int_attr(c, "count", 1, MAX_COUNT, ctx, as_u64)?;
            let values: Vec<u64> = match attr {
                IntAttr::Fixed(v) => vec![v],
                IntAttr::List(v) => v.into_vec(),
                IntAttr::Range { from, step, n } if n <= MAX_COUNT_VALUES => {
                    (0..n).map(|k| from + step * k).collect()
                }
                IntAttr::Range { .. } => {
                    return Err(ctx.at(
                        c.span(),
                        format!("`count`: a range of counts may have at most {MAX_COUNT_VALUES} values"),
                    ))
                }
                _ => {
                    return Err(ctx.at(
                        c.span(),
                        "`count`: expected a number, a list or a range; a random count is not supported \
                         (use a list of counts with `samples` instead)",
                    ))
                }
            };
            values.into_iter().map(|v| v as u32).collect()
        }
    })
}

/// A relative deadline: milliseconds (fixed, enumerated or random) or a deadline class, whose
/// largest value for periods up to `max_period` must fit the target's 32-bit range.
fn compile_deadline(
    deadline: Option<&Spanned<RawValue>>,
    max_period: u64,
    ctx: &Ctx,
) -> Result<DeadlineAttr, SpecError> {
    let defaults = Task::new(0, "x");
    Ok(match deadline {
        None => DeadlineAttr::Value(IntAttr::Fixed(defaults.deadline_ms)),
        Some(v) => match v.get_ref() {
            RawValue::One(Scalar::Str(class)) => {
                let class = match class.as_str() {
                    "implicit" => DeadlineClass::Implicit,
                    "constrained" => DeadlineClass::Constrained,
                    "arbitrary" => DeadlineClass::Arbitrary,
                    other => {
                        return Err(ctx.at(
                            v.span(),
                            format!(
                                "`deadline_ms`: unknown deadline class {other:?}; expected \"implicit\", \
                                 \"constrained\", \"arbitrary\" or milliseconds"
                            ),
                        ))
                    }
                };
                if class.max_deadline_ms(max_period) > U32 {
                    return Err(ctx.at(
                        v.span(),
                        format!(
                            "`deadline_ms`: {class:?} deadlines reach {} ms for periods up to {max_period} ms, \
                             beyond the target's 32-bit range",
                            class.max_deadline_ms(max_period)
                        ),
                    ));
                }
                DeadlineAttr::Class(class)
            }
            _ => DeadlineAttr::Value(int_attr(v, "deadline_ms", 0, U32, ctx, as_u64)?),
        },
    })
}

/// The `config` entries in file order; every key and value must pass the target's checks.
fn compile_config(
    config: Option<&Spanned<OrderedConfig>>,
    ctx: &Ctx,
) -> Result<Vec<(String, TextAttr)>, SpecError> {
    let no_config = Vec::new();
    let entries = config.map_or(&no_config, |c| &c.get_ref().0);
    let mut config = Vec::with_capacity(entries.len());
    for (key, v) in entries {
        let mut probe = Task::new(0, "x");
        probe.config.push((key.clone(), "0".into()));
        if let Err(e) = probe.validate() {
            return Err(ctx.at(v.span(), format!("config: {}", e.reason)));
        }
        if config.iter().any(|(k, _)| k == key) {
            return Err(ctx.at(v.span(), format!("config: key `{key}` appears twice")));
        }
        let attr = text_attr(v, &format!("config.{key}"), ctx, |s| {
            let mut probe = Task::new(0, "x");
            probe.config.push((key.clone(), s.to_string()));
            probe.validate().map_err(|e| e.reason)
        })?;
        config.push((key.clone(), attr));
    }
    Ok(config)
}

/// The utilisation split of a group, if any: `utilisation.total` must be reachable by
/// `min_count` tasks of at most `utilisation.max` each, and excludes `executiontime_ms`.
fn compile_utilisation(
    t: &RawTask,
    min_count: u32,
    ctx: &Ctx,
) -> Result<Option<Utilisation>, SpecError> {
    Ok(match &t.utilisation {
        None => None,
        Some(u) => {
            let u = u.get_ref();
            if let Some(e) = &t.executiontime_ms {
                return Err(ctx.at(
                    e.span(),
                    "`executiontime_ms` is derived from `utilisation` (utilisation x period); \
                     remove one of them",
                ));
            }
            let max = match &u.max {
                None => 1.0,
                Some(m) => {
                    let x = *m.get_ref();
                    if !(x > 0.0 && x <= 1.0) {
                        return Err(ctx.at(
                            m.span(),
                            format!("`utilisation.max`: expected a share in (0, 1], found {x}"),
                        ));
                    }
                    x
                }
            };
            let method = match &u.method {
                None => SplitMethod::UUniFast,
                Some(m) => match m.get_ref().as_str() {
                    "uunifast" => SplitMethod::UUniFast,
                    "randfixedsum" => SplitMethod::RandFixedSum,
                    other => {
                        return Err(ctx.at(
                            m.span(),
                            format!(
                                "`utilisation.method`: unknown method {other:?}; expected \"uunifast\" or \"randfixedsum\""
                            ),
                        ))
                    }
                },
            };
            let total = float_attr(&u.total, "utilisation.total", ctx)?;
            let (lo, hi) = total.bounds();
            let cap = f64::from(min_count) * max;
            if lo <= 0.0 || hi > cap + 1e-12 {
                return Err(ctx.at(
                    u.total.span(),
                    format!(
                        "`utilisation.total` ranges over [{lo}, {hi}]; expected totals in (0, {cap}] \
                         (at least {min_count} task(s) with at most {max} each)"
                    ),
                ));
            }
            Some(Utilisation { total, method, max })
        }
    })
}

fn as_u64(s: &Scalar) -> Result<u64, String> {
    match s {
        Scalar::Int(i) if *i >= 0 => Ok(*i as u64),
        Scalar::Int(i) => Err(format!("{i} is negative; expected a non-negative integer")),
        other => Err(format!("expected an integer, found {other}")),
    }
}

fn as_quota(s: &Scalar) -> Result<u64, String> {
    match s {
        Scalar::Str(text) => parse_quota(text).ok_or_else(|| {
            format!("{text:?} is not a size; expected bytes with an optional K, M or G suffix")
        }),
        other => as_u64(other),
    }
}

fn as_f64(s: &Scalar) -> Result<f64, String> {
    match s {
        Scalar::Int(i) => Ok(*i as f64),
        Scalar::Float(x) if x.is_finite() => Ok(*x),
        other => Err(format!("expected a number, found {other}")),
    }
}

fn int_attr(
    v: &Spanned<RawValue>,
    name: &str,
    lo: u64,
    hi: u64,
    ctx: &Ctx,
    conv: fn(&Scalar) -> Result<u64, String>,
) -> Result<IntAttr, SpecError> {
    let err = |m: String| ctx.at(v.span(), format!("`{name}`: {m}"));
    let list = |xs: &[Scalar]| -> Result<Box<[u64]>, SpecError> {
        xs.iter().map(|x| conv(x).map_err(err)).collect()
    };
    let attr = match v.get_ref() {
        RawValue::One(x) => IntAttr::Fixed(conv(x).map_err(err)?),
        RawValue::List(xs) => IntAttr::List(list(xs)?),
        RawValue::Choice(xs) => IntAttr::Choice(list(xs)?),
        RawValue::Range { from, to, step } => {
            let from = conv(from).map_err(err)?;
            let to = conv(to).map_err(err)?;
            let step = match step {
                None => 1,
                Some(s) => as_u64(s).map_err(err)?,
            };
            if step == 0 {
                return Err(err("`step` must be at least 1".into()));
            }
            if from > to {
                return Err(err(format!(
                    "range from {from} to {to} is empty; expected `from <= to`"
                )));
            }
            IntAttr::Range {
                from,
                step,
                n: (to - from) / step + 1,
            }
        }
        RawValue::Uniform(a, b) | RawValue::LogUniform(a, b) => {
            let a = conv(a).map_err(err)?;
            let b = conv(b).map_err(err)?;
            if a > b {
                return Err(err(format!(
                    "bounds [{a}, {b}] are reversed; expected lo <= hi"
                )));
            }
            if matches!(v.get_ref(), RawValue::LogUniform(..)) {
                if a == 0 {
                    return Err(err("`log_uniform` needs a lower bound of at least 1".into()));
                }
                IntAttr::log_uniform(a, b)
            } else {
                IntAttr::Uniform { lo: a, hi: b }
            }
        }
    };
    let (min, max) = attr.bounds();
    if min < lo || max > hi {
        let bad = if min < lo { min } else { max };
        return Err(err(format!(
            "can take the value {bad}, outside the allowed range {lo}..={hi}"
        )));
    }
    Ok(attr)
}

fn float_attr(v: &Spanned<RawValue>, name: &str, ctx: &Ctx) -> Result<FloatAttr, SpecError> {
    let err = |m: String| ctx.at(v.span(), format!("`{name}`: {m}"));
    let list = |xs: &[Scalar]| -> Result<Box<[f64]>, SpecError> {
        xs.iter().map(|x| as_f64(x).map_err(err)).collect()
    };
    Ok(match v.get_ref() {
        RawValue::One(x) => FloatAttr::Fixed(as_f64(x).map_err(err)?),
        RawValue::List(xs) => FloatAttr::List(list(xs)?),
        RawValue::Choice(xs) => FloatAttr::Choice(list(xs)?),
        RawValue::Range { from, to, step } => {
            let from = as_f64(from).map_err(err)?;
            let to = as_f64(to).map_err(err)?;
            let step = match step {
                None => 1.0,
                Some(s) => as_f64(s).map_err(err)?,
            };
            if step <= 0.0 || from > to {
                return Err(err(format!(
                    "range from {from} to {to} step {step}: expected from <= to and step > 0"
                )));
            }
            // Tolerate rounding so that `from = 0.1, to = 0.9, step = 0.1` has 9 values.
            let steps = ((to - from) / step + 1e-9).floor();
            if steps >= MAX_FLOAT_STEPS {
                return Err(err(format!(
                    "range from {from} to {to} step {step} has more than {MAX_FLOAT_STEPS} values"
                )));
            }
            let n = steps as u64 + 1;
            FloatAttr::Range { from, step, n }
        }
        RawValue::Uniform(a, b) | RawValue::LogUniform(a, b) => {
            let a = as_f64(a).map_err(err)?;
            let b = as_f64(b).map_err(err)?;
            if a > b {
                return Err(err(format!(
                    "bounds [{a}, {b}] are reversed; expected lo <= hi"
                )));
            }
            if matches!(v.get_ref(), RawValue::LogUniform(..)) {
                if a <= 0.0 {
                    return Err(err("`log_uniform` needs a positive lower bound".into()));
                }
                FloatAttr::LogUniform { lo: a, hi: b }
            } else {
                FloatAttr::Uniform { lo: a, hi: b }
            }
        }
    })
}

fn text_attr(
    v: &Spanned<RawValue>,
    name: &str,
    ctx: &Ctx,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<TextAttr, SpecError> {
    let err = |m: String| ctx.at(v.span(), format!("`{name}`: {m}"));
    let text = |x: &Scalar| -> Result<String, SpecError> {
        let s = match x {
            Scalar::Str(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => {
                return Err(err(format!(
                    "expected a string or an integer, found the float {f}"
                )))
            }
        };
        check(&s).map_err(err)?;
        Ok(s)
    };
    let list =
        |xs: &[Scalar]| -> Result<Box<[String]>, SpecError> { xs.iter().map(text).collect() };
    Ok(match v.get_ref() {
        RawValue::One(x) => TextAttr::Fixed(text(x)?),
        RawValue::List(xs) => TextAttr::List(list(xs)?),
        RawValue::Choice(xs) => TextAttr::Choice(list(xs)?),
        RawValue::Range { .. } | RawValue::Uniform(..) | RawValue::LogUniform(..)
            if name == "pkg" =>
        {
            return Err(err(
                "expected a binary name, a list of names or `{ choice = [...] }`".into(),
            ))
        }
        RawValue::Range { .. } | RawValue::Uniform(..) | RawValue::LogUniform(..) => {
            // Integer ranges and draws, written in decimal (e.g. a binary's `arg1`).
            let attr = int_attr(v, name, 0, u64::MAX, ctx, as_u64)?;
            TextAttr::Int(attr)
        }
    })
}

/// Largest spec file read, in bytes (1 MiB); a spec is a short TOML text.
pub const MAX_SPEC_BYTES: u64 = 1 << 20;

/// Read a spec file: only a regular file (a FIFO would block, a device might never end), and
/// at most [`MAX_SPEC_BYTES`].
fn read_spec_file(path: &Path) -> Result<String, SpecError> {
    use std::io::Read;
    let io = |source| SpecError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "a directory"
        } else {
            file_kind(&ft)
        };
        return Err(SpecError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    let too_large = |size| SpecError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit: MAX_SPEC_BYTES,
    };
    if meta.len() > MAX_SPEC_BYTES {
        return Err(too_large(meta.len()));
    }
    // The file may be replaced or grow between the check and the read: read at most one byte
    // more than the limit.
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text: {e}"),
        ))
    })
}

#[cfg(unix)]
fn file_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(not(unix))]
fn file_kind(_ft: &std::fs::FileType) -> &'static str {
    "not a regular file"
}
