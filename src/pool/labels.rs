//! Target labels (`board = "imx6"`, `cores = 4`) and the selectors experiments use to require
//! them (`board = "b"`, `board = a|b`, `cores >= 2`).
//!
//! ```
//! use taskdist::pool::{Labels, Selector};
//!
//! let target = Labels::parse_pairs("board=imx6,cores=4,site=lab2").unwrap();
//! let sel = Selector::from_clauses(["board=imx6|rpi", "cores >= 2", "site != lab1"]).unwrap();
//! assert!(sel.matches(&target));
//! assert!(!Selector::from_clauses(["cores>4"]).unwrap().matches(&target));
//! assert_eq!(sel.to_string(), r#"board in ["imx6", "rpi"], cores >= 2, site != "lab1""#);
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// A label's value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LabelValue {
    /// Text.
    Str(String),
    /// A whole number.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// Yes or no.
    Bool(bool),
}

impl LabelValue {
    /// The value of `text` as written on a command line: a whole number, a number, `true` or
    /// `false`, else text.
    pub fn parse(text: &str) -> LabelValue {
        let t = text.trim();
        if let Ok(i) = t.parse::<i64>() {
            LabelValue::Int(i)
        } else if let Ok(f) = t.parse::<f64>() {
            if f.is_finite() {
                LabelValue::Float(f)
            } else {
                LabelValue::Str(t.to_owned())
            }
        } else if t == "true" || t == "false" {
            LabelValue::Bool(t == "true")
        } else {
            LabelValue::Str(t.to_owned())
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            LabelValue::Int(i) => Some(*i as f64),
            LabelValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Equal as labels: numbers by value (4 equals 4.0), text and booleans exactly.
    fn same(&self, other: &LabelValue) -> bool {
        match (self.number(), other.number()) {
            (Some(a), Some(b)) => a == b,
            _ => self == other,
        }
    }

    fn from_toml(key: &str, v: &toml::Value) -> Result<LabelValue, LabelError> {
        Ok(match v {
            toml::Value::String(s) => LabelValue::Str(s.clone()),
            toml::Value::Integer(i) => LabelValue::Int(*i),
            toml::Value::Float(f) if f.is_finite() => LabelValue::Float(*f),
            toml::Value::Boolean(b) => LabelValue::Bool(*b),
            other => {
                return Err(LabelError(format!(
                    "label {key:?}: {} is not a label value; expected a string, number or boolean",
                    other.type_str()
                )))
            }
        })
    }
}

impl fmt::Display for LabelValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelValue::Str(s) => write!(f, "{s:?}"),
            LabelValue::Int(i) => write!(f, "{i}"),
            LabelValue::Float(x) => write!(f, "{x}"),
            LabelValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A label or selector that cannot be read; the message names the input and what was
/// expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LabelError(String);

fn check_key(key: &str, input: &str) -> Result<(), LabelError> {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        Ok(())
    } else {
        Err(LabelError(format!(
            "{input:?}: label name {key:?} must be letters, digits, '_', '.' or '-'"
        )))
    }
}

/// The labels of a target group: free-form keys with text, number or boolean values.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Labels(BTreeMap<String, LabelValue>);

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Labels::default()
    }

    /// Set a label.
    pub fn insert(&mut self, key: impl Into<String>, value: LabelValue) {
        self.0.insert(key.into(), value);
    }

    /// A label's value.
    pub fn get(&self, key: &str) -> Option<&LabelValue> {
        self.0.get(key)
    }

    /// The labels in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &LabelValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether there is no label.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Labels written `key=value,key=value` (values typed as by [`LabelValue::parse`]).
    pub fn parse_pairs(text: &str) -> Result<Labels, LabelError> {
        let mut out = Labels::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                LabelError(format!(
                    "label {part:?} in {text:?}: expected KEY=VALUE such as board=imx6"
                ))
            })?;
            let k = k.trim();
            check_key(k, text)?;
            if v.trim().is_empty() {
                return Err(LabelError(format!(
                    "label {part:?} in {text:?}: the value is empty"
                )));
            }
            out.insert(k, LabelValue::parse(v));
        }
        Ok(out)
    }

    /// Labels from a TOML table such as `{ board = "imx6", cores = 4 }`.
    pub fn from_toml(table: &toml::Table) -> Result<Labels, LabelError> {
        let mut out = Labels::new();
        for (k, v) in table {
            check_key(k, k)?;
            out.insert(k.clone(), LabelValue::from_toml(k, v)?);
        }
        Ok(out)
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match v {
                LabelValue::Str(s) => write!(f, "{k}={s}")?,
                other => write!(f, "{k}={other}")?,
            }
        }
        Ok(())
    }
}

/// A comparison of a [`Clause`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Ge,
    Gt,
    Le,
    Lt,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
        }
    }
}

/// One condition on one label.
#[derive(Debug, Clone, PartialEq)]
enum Clause {
    /// The label has one of these values (one value: equality).
    In(String, Vec<LabelValue>),
    /// The label is missing or has another value.
    Not(String, LabelValue),
    /// The label is a number and compares so.
    Cmp(String, Op, f64),
}

impl Clause {
    fn key(&self) -> &str {
        match self {
            Clause::In(k, _) | Clause::Not(k, _) | Clause::Cmp(k, _, _) => k,
        }
    }

    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Clause::In(k, vs) => labels.get(k).is_some_and(|v| vs.iter().any(|x| x.same(v))),
            Clause::Not(k, x) => !labels.get(k).is_some_and(|v| x.same(v)),
            Clause::Cmp(k, op, n) => {
                labels
                    .get(k)
                    .and_then(LabelValue::number)
                    .is_some_and(|v| match op {
                        Op::Ge => v >= *n,
                        Op::Gt => v > *n,
                        Op::Le => v <= *n,
                        Op::Lt => v < *n,
                    })
            }
        }
    }
}

impl fmt::Display for Clause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clause::In(k, vs) if vs.len() == 1 => write!(f, "{k} = {}", vs[0]),
            Clause::In(k, vs) => {
                write!(f, "{k} in [")?;
                for (i, v) in vs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Clause::Not(k, v) => write!(f, "{k} != {v}"),
            Clause::Cmp(k, op, n) => write!(f, "{k} {} {n}", op.as_str()),
        }
    }
}

/// Which targets an experiment may run on: every clause must hold for the target's labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector(Vec<Clause>);

const FORMS: &str = "expected KEY=VALUE, KEY=A|B, KEY!=VALUE, or KEY>=N, KEY>N, KEY<=N, KEY<N";

impl Selector {
    /// Every target.
    pub fn any() -> Self {
        Selector::default()
    }

    /// Whether it selects every target.
    pub fn is_any(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `labels` satisfy every clause.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|c| c.matches(labels))
    }

    /// One clause as given to `--require`: `board=imx6`, `board=a|b`, `site!=lab1`,
    /// `cores>=2` (blanks around the operator allowed).
    pub fn parse_clause(text: &str) -> Result<Selector, LabelError> {
        let t = text.trim();
        let bad = || LabelError(format!("requirement {text:?}: {FORMS}"));
        let pos = t.find(['=', '!', '<', '>']).ok_or_else(bad)?;
        let key = t[..pos].trim();
        let rest = &t[pos..];
        let (op, value) = ["!=", ">=", "<=", "=", ">", "<"]
            .iter()
            .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v.trim())))
            .ok_or_else(bad)?;
        check_key(key, text)?;
        if value.is_empty() || value.contains(['=', '<', '>', '!']) {
            return Err(bad());
        }
        let number = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .ok_or_else(|| {
                    LabelError(format!(
                        "requirement {text:?}: {v:?} is not a number; {op} compares numbers"
                    ))
                })
        };
        let clause = match op {
            "=" => {
                let values: Vec<LabelValue> = value.split('|').map(LabelValue::parse).collect();
                if value.split('|').any(|v| v.trim().is_empty()) {
                    return Err(bad());
                }
                Clause::In(key.to_owned(), values)
            }
            "!=" => Clause::Not(key.to_owned(), LabelValue::parse(value)),
            ">=" => Clause::Cmp(key.to_owned(), Op::Ge, number(value)?),
            ">" => Clause::Cmp(key.to_owned(), Op::Gt, number(value)?),
            "<=" => Clause::Cmp(key.to_owned(), Op::Le, number(value)?),
            _ => Clause::Cmp(key.to_owned(), Op::Lt, number(value)?),
        };
        Ok(Selector(vec![clause]))
    }

    /// All of the clauses (see [`Selector::parse_clause`]).
    pub fn from_clauses<'a>(
        clauses: impl IntoIterator<Item = &'a str>,
    ) -> Result<Selector, LabelError> {
        let mut out = Selector::any();
        for c in clauses {
            out.0.extend(Selector::parse_clause(c)?.0);
        }
        Ok(out)
    }

    /// A `[requires]` table: `board = "b"` (equality), `board = ["a", "b"]` (one of),
    /// `cores = ">= 2"` (a string starting with `>=`, `>`, `<=`, `<` or `!=` compares),
    /// numbers and booleans (equality).
    pub fn from_toml(table: &toml::Table) -> Result<Selector, LabelError> {
        let mut out = Selector::any();
        for (k, v) in table {
            check_key(k, k)?;
            let clause = match v {
                toml::Value::Array(items) => {
                    if items.is_empty() {
                        return Err(LabelError(format!(
                            "requires.{k}: an empty list matches no target; give at least one value"
                        )));
                    }
                    let values = items
                        .iter()
                        .map(|x| LabelValue::from_toml(k, x))
                        .collect::<Result<Vec<_>, _>>()?;
                    Clause::In(k.clone(), values)
                }
                toml::Value::String(s)
                    if [">=", ">", "<=", "<", "!="]
                        .iter()
                        .any(|op| s.trim_start().starts_with(op)) =>
                {
                    let mut c = Selector::parse_clause(&format!("{k}{s}"))
                        .map_err(|e| LabelError(format!("requires.{k} = {s:?}: {e}")))?;
                    c.0.remove(0)
                }
                other => Clause::In(k.clone(), vec![LabelValue::from_toml(k, other)?]),
            };
            out.0.push(clause);
        }
        Ok(out)
    }

    /// These clauses and `other`'s; a clause of `other` on a key replaces this selector's
    /// clauses on that key (the caller overrides the spec).
    pub fn and(mut self, other: Selector) -> Selector {
        self.0
            .retain(|c| !other.0.iter().any(|o| o.key() == c.key()));
        self.0.extend(other.0);
        self
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("any target");
        }
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(s: &str) -> Labels {
        Labels::parse_pairs(s).unwrap()
    }

    fn sel(c: &[&str]) -> Selector {
        Selector::from_clauses(c.iter().copied()).unwrap()
    }

    #[test]
    fn clauses_match_as_documented() {
        let t = labels("board=imx6,cores=4,site=lab2,fast=true,ghz=1.5");
        assert!(sel(&["board=imx6"]).matches(&t));
        assert!(!sel(&["board=rpi"]).matches(&t));
        assert!(sel(&["board=rpi|imx6"]).matches(&t));
        assert!(sel(&["cores=4.0"]).matches(&t));
        assert!(sel(&["cores >= 4", "cores<5", "ghz>1"]).matches(&t));
        assert!(!sel(&["cores>4"]).matches(&t));
        assert!(sel(&["site!=lab1"]).matches(&t));
        assert!(!sel(&["site!=lab2"]).matches(&t));
        assert!(sel(&["fast=true"]).matches(&t));
        // A missing label satisfies only !=.
        assert!(!sel(&["rack=3"]).matches(&t));
        assert!(!sel(&["rack>=0"]).matches(&t));
        assert!(sel(&["rack!=3"]).matches(&t));
        // A text label never compares as a number.
        assert!(!sel(&["board>=1"]).matches(&t));
        assert!(Selector::any().matches(&Labels::new()));
    }

    #[test]
    fn toml_requirements() {
        let t: toml::Table =
            toml::from_str("board = [\"a\", \"b\"]\ncores = \">= 2\"\nsite = \"lab2\"\nfpu = true")
                .unwrap();
        let s = Selector::from_toml(&t).unwrap();
        assert!(s.matches(&labels("board=b,cores=2,site=lab2,fpu=true")));
        assert!(!s.matches(&labels("board=c,cores=2,site=lab2,fpu=true")));
        assert!(!s.matches(&labels("board=a,cores=1,site=lab2,fpu=true")));
        assert_eq!(
            s.to_string(),
            r#"board in ["a", "b"], cores >= 2, fpu = true, site = "lab2""#
        );
        let bad: toml::Table = toml::from_str("cores = \">= many\"").unwrap();
        let e = Selector::from_toml(&bad).unwrap_err().to_string();
        assert!(
            e.contains("requires.cores") && e.contains("not a number"),
            "{e}"
        );
        let empty: toml::Table = toml::from_str("board = []").unwrap();
        assert!(Selector::from_toml(&empty).is_err());
    }

    #[test]
    fn caller_clauses_replace_the_spec_s_on_the_same_key() {
        let spec = sel(&["board=a", "cores>=2"]);
        let s = spec.and(sel(&["board=b"]));
        assert_eq!(s.to_string(), r#"cores >= 2, board = "b""#);
    }

    #[test]
    fn bad_input_is_named() {
        for (input, needle) in [
            ("board", "expected KEY=VALUE"),
            ("cores>>2", "expected KEY=VALUE"),
            ("=a", "label name"),
            ("cores>=lots", "not a number"),
            ("board=a||b", "expected"),
            ("bo ard=a", "label name"),
        ] {
            let e = Selector::parse_clause(input).unwrap_err().to_string();
            assert!(e.contains(input) && e.contains(needle), "{input}: {e}");
        }
        let e = Labels::parse_pairs("board").unwrap_err().to_string();
        assert!(e.contains("KEY=VALUE"), "{e}");
        let t: toml::Table = toml::from_str("board = { x = 1 }").unwrap();
        let e = Labels::from_toml(&t).unwrap_err().to_string();
        assert!(e.contains("board") && e.contains("table"), "{e}");
    }

    #[test]
    fn labels_display_and_types() {
        let l = labels("cores=4,board=imx6,ghz=1.5,fast=false");
        assert_eq!(l.to_string(), "board=imx6,cores=4,fast=false,ghz=1.5");
        assert_eq!(l.get("cores"), Some(&LabelValue::Int(4)));
        assert_eq!(l.get("fast"), Some(&LabelValue::Bool(false)));
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"board":"imx6","cores":4,"fast":false,"ghz":1.5}"#
        );
    }
}
