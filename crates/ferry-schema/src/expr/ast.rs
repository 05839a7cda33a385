//! The parsed forms of conditions and `set` expressions.

use ferry_types::{PathPart, Value};

use super::CmpOp;

/// Byte offsets of a piece of the text, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub start: usize,
    pub end: usize,
}

/// An attribute path `${a.b[0]}`.
#[derive(Debug, Clone)]
pub(super) struct Path {
    pub parts: Vec<PathPart>,
    pub span: Span,
}

impl Path {
    /// The top-level attribute name.
    pub fn top(&self) -> Option<&str> {
        match self.parts.first() {
            Some(PathPart::Name(name)) => Some(name),
            _ => None,
        }
    }

    /// Renames the top-level attribute when `f` says so.
    pub fn rename(&mut self, f: &dyn Fn(&str) -> Option<String>) {
        if let Some(PathPart::Name(name)) = self.parts.first_mut()
            && let Some(renamed) = f(name)
        {
            *name = renamed;
        }
    }
}

/// A value in a condition.
#[derive(Debug, Clone)]
pub(super) enum Operand {
    Path(Path),
    Literal(Value, Span),
    Sub(String, Span),
    /// `size(${path})`; the span covers the whole call.
    Size(Path, Span),
}

impl Operand {
    pub fn span(&self) -> Span {
        match self {
            Operand::Path(path) => path.span,
            Operand::Literal(_, span) | Operand::Sub(_, span) | Operand::Size(_, span) => *span,
        }
    }

    fn path(&self) -> Option<&Path> {
        match self {
            Operand::Path(path) | Operand::Size(path, _) => Some(path),
            Operand::Literal(..) | Operand::Sub(..) => None,
        }
    }

    fn path_mut(&mut self) -> Option<&mut Path> {
        match self {
            Operand::Path(path) | Operand::Size(path, _) => Some(path),
            Operand::Literal(..) | Operand::Sub(..) => None,
        }
    }
}

/// One entry of an `IN (...)` list.
#[derive(Debug, Clone)]
pub(super) enum InItem {
    One(Operand),
    /// `@{...name}`: every element of a substituted list.
    Expand(String, Span),
}

/// A condition.
#[derive(Debug, Clone)]
pub(super) enum Cond {
    /// Flat lists rather than nested pairs, so a long `a AND b AND ...` chain does not
    /// make evaluation recurse once per link.
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Compare(CmpOp, Operand, Operand),
    Between(Operand, Operand, Operand),
    In(Operand, Vec<InItem>),
    Exists(Path),
    NotExists(Path),
    Type(Path, Operand),
    BeginsWith(Path, Operand),
    Contains(Path, Operand),
}

impl Cond {
    /// Every attribute path, in text order.
    pub fn visit_paths(&self, f: &mut dyn FnMut(&Path)) {
        let operands = |f: &mut dyn FnMut(&Path), list: &[&Operand]| {
            list.iter().filter_map(|o| o.path()).for_each(f);
        };
        match self {
            Cond::And(list) | Cond::Or(list) => list.iter().for_each(|c| c.visit_paths(f)),
            Cond::Not(c) => c.visit_paths(f),
            Cond::Compare(_, a, b) => operands(f, &[a, b]),
            Cond::Between(a, b, c) => operands(f, &[a, b, c]),
            Cond::In(a, items) => {
                operands(f, &[a]);
                for item in items {
                    if let InItem::One(o) = item {
                        operands(f, &[o]);
                    }
                }
            }
            Cond::Exists(p) | Cond::NotExists(p) => f(p),
            Cond::Type(p, o) | Cond::BeginsWith(p, o) | Cond::Contains(p, o) => {
                f(p);
                operands(f, &[o]);
            }
        }
    }

    /// Every attribute path, mutably, in text order.
    pub fn visit_paths_mut(&mut self, f: &mut dyn FnMut(&mut Path)) {
        let operand = |f: &mut dyn FnMut(&mut Path), o: &mut Operand| {
            if let Some(path) = o.path_mut() {
                f(path);
            }
        };
        match self {
            Cond::And(list) | Cond::Or(list) => list.iter_mut().for_each(|c| c.visit_paths_mut(f)),
            Cond::Not(c) => c.visit_paths_mut(f),
            Cond::Compare(_, a, b) => [a, b].into_iter().for_each(|o| operand(f, o)),
            Cond::Between(a, b, c) => [a, b, c].into_iter().for_each(|o| operand(f, o)),
            Cond::In(a, items) => {
                operand(f, a);
                for item in items {
                    if let InItem::One(o) = item {
                        operand(f, o);
                    }
                }
            }
            Cond::Exists(p) | Cond::NotExists(p) => f(p),
            Cond::Type(p, o) | Cond::BeginsWith(p, o) | Cond::Contains(p, o) => {
                f(p);
                operand(f, o);
            }
        }
    }
}

/// Addition or subtraction in a `set` expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ArithOp {
    Add,
    Sub,
}

/// A `set` expression and the span of its text.
#[derive(Debug, Clone)]
pub(super) struct Term {
    pub kind: TermKind,
    pub span: Span,
}

/// The kinds of `set` expression.
#[derive(Debug, Clone)]
pub(super) enum TermKind {
    /// A path, literal or substitution (never `size`).
    Operand(Operand),
    IfNotExists(Path, Box<Term>),
    ListAppend(Box<Term>, Box<Term>),
    /// `first op term op term ...`, left to right.
    Arith(Box<Term>, Vec<(ArithOp, Term)>),
}

impl Term {
    /// Every attribute path, mutably, in text order.
    pub fn visit_paths_mut(&mut self, f: &mut dyn FnMut(&mut Path)) {
        match &mut self.kind {
            TermKind::Operand(o) => {
                if let Some(path) = o.path_mut() {
                    f(path);
                }
            }
            TermKind::IfNotExists(path, fallback) => {
                f(path);
                fallback.visit_paths_mut(f);
            }
            TermKind::ListAppend(a, b) => {
                a.visit_paths_mut(f);
                b.visit_paths_mut(f);
            }
            TermKind::Arith(first, rest) => {
                first.visit_paths_mut(f);
                rest.iter_mut().for_each(|(_, t)| t.visit_paths_mut(f));
            }
        }
    }
}
