//! Evaluation of conditions and `set` expressions against an item.

use std::borrow::Cow;
use std::cmp::Ordering;

use ferry_types::{Item, Number, Value};

use super::ast::{ArithOp, Cond, InItem, Operand, Path, Span, Term, TermKind};
use super::parse::{TYPE_NAMES, type_name_message};
use super::{CmpOp, Subs, error};
use crate::{Error, Result};

/// What an evaluation reads: the item, the substitutions, and the text for messages.
pub(super) struct Env<'a> {
    pub text: &'a str,
    pub item: &'a Item,
    pub subs: &'a Subs,
}

impl<'a> Env<'a> {
    fn error(&self, span: Span, message: impl Into<String>) -> Error {
        error(self.text, span.start, message)
    }

    fn source(&self, span: Span) -> &'a str {
        self.text.get(span.start..span.end).unwrap_or_default()
    }

    fn get(&self, path: &Path) -> Option<&'a Value> {
        Value::get_path(self.item, &path.parts)
    }

    /// Evaluates a condition. Every part runs (no short cut) so that errors such as a
    /// missing substitution do not depend on the item.
    pub fn condition(&self, cond: &'a Cond) -> Result<bool> {
        Ok(match cond {
            Cond::And(list) => self.all(list)?.into_iter().all(|b| b),
            Cond::Or(list) => self.all(list)?.into_iter().any(|b| b),
            Cond::Not(inner) => !self.condition(inner)?,
            Cond::Compare(op, a, b) => compare(
                *op,
                self.operand(a)?.as_deref(),
                self.operand(b)?.as_deref(),
            ),
            Cond::Between(a, low, high) => {
                let (a, low, high) = (self.operand(a)?, self.operand(low)?, self.operand(high)?);
                let ge = compare(CmpOp::Ge, a.as_deref(), low.as_deref());
                ge && compare(CmpOp::Le, a.as_deref(), high.as_deref())
            }
            Cond::In(a, items) => {
                let a = self.operand(a)?;
                let values = self.in_values(items)?;
                values
                    .iter()
                    .any(|v| compare(CmpOp::Eq, a.as_deref(), Some(v)))
            }
            Cond::Exists(path) => self.get(path).is_some(),
            Cond::NotExists(path) => self.get(path).is_none(),
            Cond::Type(path, name) => {
                let name = self.type_name(name)?;
                self.get(path).is_some_and(|v| v.type_name() == name)
            }
            Cond::BeginsWith(path, prefix) => {
                let prefix = self.operand(prefix)?;
                self.get(path)
                    .zip(prefix.as_deref())
                    .is_some_and(|(v, p)| begins_with(v, p))
            }
            Cond::Contains(path, part) => {
                let part = self.operand(part)?;
                self.get(path)
                    .zip(part.as_deref())
                    .is_some_and(|(v, p)| contains(v, p))
            }
        })
    }

    fn all(&self, list: &'a [Cond]) -> Result<Vec<bool>> {
        list.iter().map(|c| self.condition(c)).collect()
    }

    /// A condition operand's value; `None` when it reads a missing attribute.
    fn operand(&self, operand: &'a Operand) -> Result<Option<Cow<'a, Value>>> {
        Ok(match operand {
            Operand::Path(path) => self.get(path).map(Cow::Borrowed),
            Operand::Literal(value, _) => Some(Cow::Borrowed(value)),
            Operand::Sub(name, span) => Some(Cow::Owned(self.sub(name, *span)?)),
            Operand::Size(path, _) => self.get(path).and_then(size).map(Cow::Owned),
        })
    }

    /// The value of `@{name}`.
    fn sub(&self, name: &str, span: Span) -> Result<Value> {
        let json = self.subs.get(name).ok_or_else(|| {
            let message = format!(
                "substitution @{{{name}}} is not given: add \"{name}\" to the substitutions"
            );
            self.error(span, message)
        })?;
        Value::from_json(json).map_err(|e| {
            self.error(
                span,
                format!("substitution @{{{name}}} is not a valid value: {e}"),
            )
        })
    }

    /// The values of an `IN (...)` list, `@{...name}` expanded.
    fn in_values(&self, items: &'a [InItem]) -> Result<Vec<Cow<'a, Value>>> {
        let mut values = Vec::new();
        for item in items {
            match item {
                InItem::One(operand) => values.extend(self.operand(operand)?),
                InItem::Expand(name, span) => match self.sub(name, *span)? {
                    Value::L(list) => values.extend(list.into_iter().map(Cow::Owned)),
                    other => {
                        let message = format!(
                            "substitution @{{...{name}}} must be a list to expand in IN (...), not {}",
                            other.type_name()
                        );
                        return Err(self.error(*span, message));
                    }
                },
            }
        }
        Ok(values)
    }

    /// The type name an `attribute_type` argument names.
    fn type_name(&self, operand: &'a Operand) -> Result<&'static str> {
        let value = self.operand(operand)?;
        let name = value.as_deref().and_then(Value::as_str);
        match TYPE_NAMES.iter().find(|t| Some(**t) == name) {
            Some(t) => Ok(t),
            None => Err(self.error(
                operand.span(),
                type_name_message(self.source(operand.span())),
            )),
        }
    }

    /// Computes a `set` expression.
    pub fn term(&self, term: &'a Term) -> Result<Value> {
        match &term.kind {
            TermKind::Operand(operand) => match self.operand(operand)? {
                Some(value) => Ok(value.into_owned()),
                None => Err(self.missing(term.span)),
            },
            TermKind::IfNotExists(path, fallback) => match self.get(path) {
                Some(value) => Ok(value.clone()),
                None => self.term(fallback),
            },
            TermKind::ListAppend(a, b) => {
                let (a_value, b_value) = (self.term(a)?, self.term(b)?);
                match (a_value, b_value) {
                    (Value::L(mut first), Value::L(second)) => {
                        first.extend(second);
                        Ok(Value::L(first))
                    }
                    (Value::L(_), other) => Err(self.not_a_list(b, &other)),
                    (other, _) => Err(self.not_a_list(a, &other)),
                }
            }
            TermKind::Arith(first, rest) => {
                let first_op = rest.first().map_or(ArithOp::Add, |(op, _)| *op);
                let mut sum = self.number(first, first_op, None)?;
                for (op, term) in rest {
                    let n = self.number(term, *op, Some(first))?;
                    let result = match op {
                        ArithOp::Add => sum.add(&n),
                        ArithOp::Sub => sum.sub(&n),
                    };
                    sum = result.map_err(|e| self.error(term.span, e.to_string()))?;
                }
                Ok(Value::N(sum))
            }
        }
    }

    fn missing(&self, span: Span) -> Error {
        let what = self.source(span);
        let message = format!(
            "attribute {what} does not exist in the item: use if_not_exists({what}, {{...}}) for a default"
        );
        self.error(span, message)
    }

    fn not_a_list(&self, term: &Term, value: &Value) -> Error {
        let message = format!(
            "list_append needs two lists: {} is {}",
            self.source(term.span),
            value.type_name()
        );
        self.error(term.span, message)
    }

    /// One side of `+` / `-`, which must be a number. `left` is set for right-hand terms.
    fn number(&self, term: &'a Term, op: ArithOp, left: Option<&Term>) -> Result<Number> {
        let value = self.term(term)?;
        if let Value::N(n) = value {
            return Ok(n);
        }
        let noun = noun(&value);
        let what = match (op, left) {
            (ArithOp::Add, _) => format!("add {noun} to a number"),
            (ArithOp::Sub, Some(_)) => format!("subtract {noun} from a number"),
            (ArithOp::Sub, None) => format!("subtract a number from {noun}"),
        };
        let message = format!(
            "cannot {what}: {} is {}",
            self.source(term.span),
            value.type_name()
        );
        Err(self.error(term.span, message))
    }
}

/// How a non-number reads in "cannot add ... to a number".
fn noun(value: &Value) -> &'static str {
    match value {
        Value::S(_) => "text",
        Value::B(_) => "binary",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        Value::M(_) => "a map",
        Value::L(_) => "a list",
        Value::Ss(_) | Value::Ns(_) | Value::Bs(_) => "a set",
        Value::N(_) => "a number",
    }
}

/// DynamoDB's comparison: a missing value or a type mismatch is unequal and unordered.
fn compare(op: CmpOp, a: Option<&Value>, b: Option<&Value>) -> bool {
    let equal = matches!((a, b), (Some(a), Some(b)) if a == b);
    let order = match (a, b) {
        (Some(a), Some(b)) => order(a, b),
        _ => None,
    };
    match op {
        CmpOp::Eq => equal,
        CmpOp::Ne => !equal,
        CmpOp::Lt => order == Some(Ordering::Less),
        CmpOp::Le => matches!(order, Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Gt => order == Some(Ordering::Greater),
        CmpOp::Ge => matches!(order, Some(Ordering::Greater | Ordering::Equal)),
    }
}

/// Order within a type: numbers numerically, texts and binaries bytewise (Rust's `str`
/// order is UTF-8 byte order, as DynamoDB's). Other types have no order.
fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::N(a), Value::N(b)) => Some(a.cmp(b)),
        (Value::S(a), Value::S(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (Value::B(a), Value::B(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn begins_with(value: &Value, prefix: &Value) -> bool {
    match (value, prefix) {
        (Value::S(s), Value::S(p)) => s.starts_with(p.as_str()),
        (Value::B(b), Value::B(p)) => b.starts_with(p),
        _ => false,
    }
}

/// A substring of a text, an element of a set of the same type or of a list.
fn contains(value: &Value, part: &Value) -> bool {
    match (value, part) {
        (Value::S(s), Value::S(p)) => s.contains(p.as_str()),
        (Value::Ss(set), Value::S(p)) => set.contains(p),
        (Value::Ns(set), Value::N(p)) => set.contains(p),
        (Value::Bs(set), Value::B(p)) => set.contains(p),
        (Value::L(list), p) => list.contains(p),
        _ => false,
    }
}

/// DynamoDB's `size`: bytes of a text (UTF-8) or binary, elements of a set, list or map.
/// Other types have no size, which makes the comparison false.
fn size(value: &Value) -> Option<Value> {
    let len = match value {
        Value::S(s) => s.len(),
        Value::B(b) => b.len(),
        Value::Ss(set) => set.len(),
        Value::Ns(set) => set.len(),
        Value::Bs(set) => set.len(),
        Value::L(list) => list.len(),
        Value::M(map) => map.len(),
        Value::N(_) | Value::Bool(_) | Value::Null => return None,
    };
    Some(Value::N(Number::from(len as u64)))
}
