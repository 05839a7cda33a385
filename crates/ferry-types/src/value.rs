//! The DynamoDB attribute-value model.

use std::collections::{BTreeMap, BTreeSet};

use crate::Number;

/// An item: attribute names to values, in name order (deterministic everywhere).
pub type Item = BTreeMap<String, Value>;

/// One DynamoDB attribute value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// Text (`S`).
    S(String),
    /// A number, kept as exact decimal text (`N`).
    N(Number),
    /// Binary (`B`).
    B(Vec<u8>),
    /// A boolean (`BOOL`).
    Bool(bool),
    /// The null value (`NULL`).
    Null,
    /// A map of attribute names to values (`M`).
    M(Item),
    /// A list (`L`).
    L(Vec<Value>),
    /// A set of texts (`SS`).
    Ss(BTreeSet<String>),
    /// A set of numbers (`NS`).
    Ns(BTreeSet<Number>),
    /// A set of binaries (`BS`).
    Bs(BTreeSet<Vec<u8>>),
}

impl Value {
    /// DynamoDB's short type name: `S`, `N`, `B`, `BOOL`, `NULL`, `M`, `L`, `SS`, `NS`, `BS`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::S(_) => "S",
            Value::N(_) => "N",
            Value::B(_) => "B",
            Value::Bool(_) => "BOOL",
            Value::Null => "NULL",
            Value::M(_) => "M",
            Value::L(_) => "L",
            Value::Ss(_) => "SS",
            Value::Ns(_) => "NS",
            Value::Bs(_) => "BS",
        }
    }

    /// The text of an `S` value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::S(s) => Some(s),
            _ => None,
        }
    }

    /// The number of an `N` value.
    pub fn as_number(&self) -> Option<&Number> {
        match self {
            Value::N(n) => Some(n),
            _ => None,
        }
    }

    /// Is this the null value?
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Builds a number value from an integer.
    pub fn int(value: i64) -> Value {
        Value::N(Number::from(value))
    }

    /// Follows a document path (`a.b[2].c`) into nested maps and lists.
    pub fn get_path<'a>(item: &'a Item, path: &[PathPart]) -> Option<&'a Value> {
        let (first, rest) = path.split_first()?;
        let PathPart::Name(name) = first else {
            return None;
        };
        let mut current = item.get(name)?;
        for part in rest {
            current = match (part, current) {
                (PathPart::Name(name), Value::M(map)) => map.get(name)?,
                (PathPart::Index(i), Value::L(list)) => list.get(*i)?,
                _ => return None,
            };
        }
        Some(current)
    }

    /// Text form used where a value is interpolated into a template or compared as text:
    /// `S` as is, `N` as its decimal text, `BOOL` as `true`/`false`.
    pub fn to_text(&self) -> Option<String> {
        match self {
            Value::S(s) => Some(s.clone()),
            Value::N(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// One step of a document path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPart {
    /// A map key (or, first, a top-level attribute name).
    Name(String),
    /// A list subscript.
    Index(usize),
}

impl PathPart {
    /// Parses `a.b[2].c` into its parts. Returns `None` for an empty or malformed path.
    pub fn parse_path(text: &str) -> Option<Vec<PathPart>> {
        let mut parts = Vec::new();
        for segment in text.split('.') {
            let (name, mut rest) = match segment.find('[') {
                Some(at) => (&segment[..at], &segment[at..]),
                None => (segment, ""),
            };
            if name.is_empty() {
                return None;
            }
            parts.push(PathPart::Name(name.to_string()));
            while let Some(stripped) = rest.strip_prefix('[') {
                let end = stripped.find(']')?;
                parts.push(PathPart::Index(stripped[..end].trim().parse().ok()?));
                rest = &stripped[end + 1..];
            }
            if !rest.is_empty() {
                return None;
            }
        }
        Some(parts)
    }
}

/// A map by primary key, for lookups. Hashed, not ordered: a lookup costs one hash of the
/// key's bytes where a `BTreeMap` compares whole keys a dozen times. The hasher is fixed
/// (no per-process seed), so a run replays the same; code that needs key order keeps a
/// `BTreeMap`.
pub type KeyMap<V> = std::collections::HashMap<Key, V, rustc_hash::FxBuildHasher>;

/// A set of primary keys, for lookups (see [`KeyMap`]).
pub type KeySet = std::collections::HashSet<Key, rustc_hash::FxBuildHasher>;

/// A primary key: the hash (partition) value and, when the table has one, the sort value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The partition key value.
    pub hash: Value,
    /// The sort key value, if the table has a sort key.
    pub sort: Option<Value>,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Value| v.to_text().unwrap_or_else(|| format!("{v:?}"));
        match &self.sort {
            Some(sort) => write!(f, "{}/{}", show(&self.hash), show(sort)),
            None => write!(f, "{}", show(&self.hash)),
        }
    }
}
