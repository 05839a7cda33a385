//! OneTable's expression language: `where` conditions and `set` value expressions.
//!
//! `${field}` names an attribute (`${address.city}`, `${tags[0]}`), `{value}` is a literal
//! (`{42}` a number, `{"42"}` or `{'42'}` the text 42, `{true}`, `{false}`, `{null}`, any
//! other `{text}` a text), `@{name}` takes a value from the call's substitutions and
//! `@{...name}` expands a list of them inside `IN (...)`. A number DynamoDB cannot hold
//! (`{1e200}`, 39 digits) is an error rather than text. Text holding braces must be quoted;
//! inside quotes a backslash escapes the next character (`{"say \"hi\" {x}"}`).
//!
//! Conditions use DynamoDB's operators and functions with DynamoDB's meaning: `=`, `<>`,
//! `<`, `<=`, `>`, `>=`, `BETWEEN`, `IN`, `AND`, `OR`, `NOT` and parentheses,
//! `attribute_exists`, `attribute_not_exists`, `attribute_type`, `begins_with`, `contains`
//! and `size`. Keywords and function names are case-insensitive.
//! Precedence, tightest first: comparisons, `NOT`, `AND`, `OR`.
//!
//! Comparisons follow DynamoDB: values of different types are never equal and never
//! ordered; `<`, `<=`, `>`, `>=` and `BETWEEN` only order numbers (numerically), texts and
//! binaries (bytewise). A missing attribute makes every comparison false except `<>`, which
//! is true, as in DynamoDB (a missing value is unequal to anything). `size` counts the
//! UTF-8 bytes of a text, the bytes of a binary and the elements of a set, list or map; on
//! other types, like a missing attribute, it makes the comparison false.
//!
//! `set` expressions are an operand, `a + b` or `a - b` on numbers (exact decimal
//! arithmetic), `if_not_exists(${f}, value)` and `list_append(a, b)`.

mod ast;
mod eval;
mod lexer;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use ferry_types::{Item, Value};

use crate::{Error, Result};

/// Deepest nesting of parentheses, `NOT` and functions. A bound keeps a hostile
/// `((((...` from overflowing the stack; real conditions stay far below it.
pub const DEPTH_MAX: usize = 64;

/// The substitutions of a call: the values of `@{name}` (internal shorthand).
type Subs = serde_json::Map<String, serde_json::Value>;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed `where` condition.
#[derive(Debug, Clone)]
pub struct Condition {
    text: String,
    root: ast::Cond,
}

/// Parses a `where` condition such as `${status} = {active} AND ${age} >= {18}`.
pub fn parse_condition(text: &str) -> Result<Condition> {
    Ok(Condition {
        text: text.to_string(),
        root: parse::condition(text)?,
    })
}

impl Condition {
    /// Rewrites top-level attribute names (first path segment), e.g. property -> mapped attribute.
    pub fn rename(&mut self, f: &dyn Fn(&str) -> Option<String>) {
        self.root.visit_paths_mut(&mut |path| path.rename(f));
    }

    /// Evaluates against a stored item; `subs` supplies `@{name}` values.
    ///
    /// Every part is evaluated (no short cut), so a missing substitution is reported
    /// whatever the item holds.
    pub fn eval(
        &self,
        item: &Item,
        subs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<bool> {
        eval::Env {
            text: &self.text,
            item,
            subs,
        }
        .condition(&self.root)
    }

    /// Top-level attribute names the condition reads (for projections / follow decisions),
    /// each once, in name order.
    pub fn attributes(&self) -> Vec<String> {
        let mut names = BTreeSet::new();
        self.root.visit_paths(&mut |path| {
            if let Some(name) = path.top() {
                names.insert(name.to_string());
            }
        });
        names.into_iter().collect()
    }

    /// The text the condition was parsed from.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// A parsed `set` value expression.
#[derive(Debug, Clone)]
pub struct Expr {
    text: String,
    root: ast::Term,
}

/// Parses a `set` value expression such as `${balance} + {10}` or
/// `list_append(if_not_exists(${tags}, @{empty}), @{more})`.
pub fn parse_expr(text: &str) -> Result<Expr> {
    Ok(Expr {
        text: text.to_string(),
        root: parse::expr(text)?,
    })
}

impl Expr {
    /// Rewrites top-level attribute names (first path segment), e.g. property -> mapped attribute.
    pub fn rename(&mut self, f: &dyn Fn(&str) -> Option<String>) {
        self.root.visit_paths_mut(&mut |path| path.rename(f));
    }

    /// Computes the value against the current item; `subs` supplies `@{name}` values.
    /// Reading a missing attribute outside `if_not_exists` is an error, as in DynamoDB.
    pub fn eval(
        &self,
        item: &Item,
        subs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Value> {
        eval::Env {
            text: &self.text,
            item,
            subs,
        }
        .term(&self.root)
    }

    /// The text the expression was parsed from.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// An expression error at byte `position` of `text`.
fn error(text: &str, position: usize, message: impl Into<String>) -> Error {
    Error::Expression {
        text: text.to_string(),
        position,
        message: message.into(),
    }
}
