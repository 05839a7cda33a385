//! Recursive-descent parsing of conditions and `set` expressions.

use super::ast::{ArithOp, Cond, InItem, Operand, Path, Span, Term, TermKind};
use super::lexer::{Tok, Token, tokenize};
use super::{DEPTH_MAX, error};
use crate::{Error, Result};

/// DynamoDB's type names, as `attribute_type` takes them.
pub(super) const TYPE_NAMES: [&str; 10] =
    ["S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"];

/// What an operand may be, for messages.
const OPERAND: &str = "a value (${name}, {value} or @{name})";

/// Parses a whole condition.
pub(super) fn condition(text: &str) -> Result<Cond> {
    let mut parser = Parser::new(text)?;
    let cond = parser.or()?;
    parser.finish("expected AND, OR or the end of the condition")?;
    Ok(cond)
}

/// Parses a whole `set` expression.
pub(super) fn expr(text: &str) -> Result<Term> {
    let mut parser = Parser::new(text)?;
    let term = parser.sum()?;
    parser.finish("expected '+', '-' or the end of the expression")?;
    Ok(term)
}

/// A cursor over the tokens of one text, tracking how deep it has nested.
struct Parser<'t> {
    text: &'t str,
    /// Always ends with [`Tok::End`]; `pos` never moves past it.
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl<'t> Parser<'t> {
    fn new(text: &'t str) -> Result<Parser<'t>> {
        Ok(Parser {
            text,
            tokens: tokenize(text)?,
            pos: 0,
            depth: 0,
        })
    }

    fn peek(&self) -> &Token {
        // `tokens` is never empty: it ends with `End`.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        if token.tok != Tok::End {
            self.pos += 1;
        }
        token
    }

    /// Is the next token the keyword `word` (any case)?
    fn at_word(&self, word: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(w) if w.eq_ignore_ascii_case(word))
    }

    /// An error at the next token, naming it after `message`.
    fn unexpected(&self, message: &str) -> Error {
        let token = self.peek();
        let found = match token.tok {
            Tok::End => "the end of the text".to_string(),
            _ => format!("'{}'", &self.text[token.start..token.end]),
        };
        error(self.text, token.start, format!("{message}, found {found}"))
    }

    fn expect(&mut self, tok: &Tok, message: &str) -> Result<Token> {
        if &self.peek().tok == tok {
            Ok(self.bump())
        } else {
            Err(self.unexpected(message))
        }
    }

    fn finish(&self, message: &str) -> Result<()> {
        match self.peek().tok {
            Tok::End => Ok(()),
            _ => Err(self.unexpected(message)),
        }
    }

    /// Enters one nesting level; pair with `leave`.
    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > DEPTH_MAX {
            let at = self.peek().start;
            return Err(error(
                self.text,
                at,
                format!("nested deeper than {DEPTH_MAX} levels"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn span_from(&self, start: usize) -> Span {
        let end = self.tokens[..self.pos].last().map_or(start, |t| t.end);
        Span { start, end }
    }

    fn or(&mut self) -> Result<Cond> {
        let mut list = vec![self.and()?];
        while self.at_word("OR") {
            self.bump();
            list.push(self.and()?);
        }
        Ok(if list.len() == 1 {
            list.remove(0)
        } else {
            Cond::Or(list)
        })
    }

    fn and(&mut self) -> Result<Cond> {
        let mut list = vec![self.not()?];
        while self.at_word("AND") {
            self.bump();
            list.push(self.not()?);
        }
        Ok(if list.len() == 1 {
            list.remove(0)
        } else {
            Cond::And(list)
        })
    }

    fn not(&mut self) -> Result<Cond> {
        if !self.at_word("NOT") {
            return self.primary();
        }
        self.bump();
        self.enter()?;
        let inner = self.not()?;
        self.leave();
        Ok(Cond::Not(Box::new(inner)))
    }

    fn primary(&mut self) -> Result<Cond> {
        let token = self.peek().clone();
        match &token.tok {
            Tok::LParen => {
                self.bump();
                self.enter()?;
                let inner = self.or()?;
                self.leave();
                self.expect(&Tok::RParen, "expected ')' to close the '('")?;
                Ok(inner)
            }
            Tok::Word(word) => match word.to_ascii_lowercase().as_str() {
                "size" => self.comparison(),
                "and" | "or" | "between" | "in" => Err(self.unexpected("expected a condition")),
                name => self.function(name, &token),
            },
            _ => self.comparison(),
        }
    }

    /// A function that is itself a condition: `attribute_exists(${a})`, `begins_with(...)`.
    fn function(&mut self, name: &str, token: &Token) -> Result<Cond> {
        let known = [
            "attribute_exists",
            "attribute_not_exists",
            "attribute_type",
            "begins_with",
            "contains",
        ];
        if !known.contains(&name) {
            return Err(self.unknown_word(token));
        }
        self.bump();
        self.expect(&Tok::LParen, &format!("expected '(' after {name}"))?;
        let path = self.path_arg(name)?;
        let cond = match name {
            "attribute_exists" => Cond::Exists(path),
            "attribute_not_exists" => Cond::NotExists(path),
            _ => {
                self.expect(
                    &Tok::Comma,
                    &format!("expected ',' and a second argument to {name}"),
                )?;
                let arg = self.operand()?;
                match name {
                    "attribute_type" => Cond::Type(path, self.type_name(arg)?),
                    "begins_with" => Cond::BeginsWith(path, arg),
                    _ => Cond::Contains(path, arg),
                }
            }
        };
        self.expect(&Tok::RParen, &format!("expected ')' to close {name}("))?;
        Ok(cond)
    }

    /// A literal type name is checked now; a substitution when evaluated.
    fn type_name(&self, arg: Operand) -> Result<Operand> {
        if let Operand::Literal(value, span) = &arg
            && !value
                .as_str()
                .is_some_and(|name| TYPE_NAMES.contains(&name))
        {
            return Err(error(
                self.text,
                span.start,
                type_name_message(&self.text[span.start..span.end]),
            ));
        }
        Ok(arg)
    }

    /// A word that is not valid here: an unknown function or a stray name.
    fn unknown_word(&self, token: &Token) -> Error {
        let word = &self.text[token.start..token.end];
        let next = self.tokens.get(self.pos + 1).map(|t| &t.tok);
        let message = match word.to_ascii_lowercase().as_str() {
            "if_not_exists" | "list_append" => {
                format!("{word}() is only valid in a set expression")
            }
            "attribute_exists"
            | "attribute_not_exists"
            | "attribute_type"
            | "begins_with"
            | "contains" => format!("{word}() is a condition, not a value"),
            "size" => "size() is only valid in a condition".to_string(),
            _ if next == Some(&Tok::LParen) => format!("unknown function '{word}'"),
            _ => format!("unexpected word '{word}': names go in ${{...}}, values in {{...}}"),
        };
        error(self.text, token.start, message)
    }

    /// The `${path}` first argument of a function.
    fn path_arg(&mut self, function: &str) -> Result<Path> {
        let token = self.peek().clone();
        let span = span(&token);
        match token.tok {
            Tok::Path(parts) => {
                self.bump();
                Ok(Path { parts, span })
            }
            _ => Err(self.unexpected(&format!(
                "expected an attribute ${{name}} as the first argument of {function}"
            ))),
        }
    }

    /// `operand (op operand | BETWEEN operand AND operand | IN (list))`.
    fn comparison(&mut self) -> Result<Cond> {
        let left = self.operand()?;
        let token = self.peek().clone();
        match &token.tok {
            Tok::Cmp(op) => {
                self.bump();
                Ok(Cond::Compare(*op, left, self.operand()?))
            }
            _ if self.at_word("BETWEEN") => {
                self.bump();
                let low = self.operand()?;
                if !self.at_word("AND") {
                    return Err(self.unexpected("expected AND between the BETWEEN bounds"));
                }
                self.bump();
                Ok(Cond::Between(left, low, self.operand()?))
            }
            _ if self.at_word("IN") => {
                self.bump();
                Ok(Cond::In(left, self.in_list()?))
            }
            _ => {
                let span = left.span();
                let what = &self.text[span.start..span.end];
                Err(self.unexpected(&format!(
                    "expected a comparison (=, <>, <, <=, >, >=, BETWEEN or IN) after {what}"
                )))
            }
        }
    }

    /// `( item, item, ... )` after IN.
    fn in_list(&mut self) -> Result<Vec<InItem>> {
        self.expect(&Tok::LParen, "expected '(' after IN")?;
        let mut items = Vec::new();
        loop {
            let token = self.peek().clone();
            let span = span(&token);
            match token.tok {
                Tok::Expand(name) => {
                    self.bump();
                    items.push(InItem::Expand(name, span));
                }
                _ => items.push(InItem::One(self.operand()?)),
            }
            if self.peek().tok != Tok::Comma {
                break;
            }
            self.bump();
        }
        self.expect(&Tok::RParen, "expected ')' after IN list")?;
        Ok(items)
    }

    /// A condition operand: a path, literal, substitution or `size(${path})`.
    fn operand(&mut self) -> Result<Operand> {
        let token = self.peek().clone();
        let span = span(&token);
        let operand = match token.tok {
            Tok::Path(parts) => Operand::Path(Path { parts, span }),
            Tok::Literal(value) => Operand::Literal(value, span),
            Tok::Sub(name) => Operand::Sub(name, span),
            Tok::Word(word) if word.eq_ignore_ascii_case("size") => {
                self.bump();
                self.expect(&Tok::LParen, "expected '(' after size")?;
                let path = self.path_arg("size")?;
                self.expect(&Tok::RParen, "expected ')' to close size(")?;
                return Ok(Operand::Size(path, self.span_from(token.start)));
            }
            _ => return Err(self.bad_operand(&token)),
        };
        self.bump();
        Ok(operand)
    }

    fn bad_operand(&self, token: &Token) -> Error {
        match &token.tok {
            Tok::Expand(name) => error(
                self.text,
                token.start,
                format!("@{{...{name}}} expands a list and is only valid inside IN (...)"),
            ),
            Tok::Word(word) if !is_keyword(word) => self.unknown_word(token),
            _ => self.unexpected(&format!("expected {OPERAND}")),
        }
    }

    /// `term (+|- term)*`.
    fn sum(&mut self) -> Result<Term> {
        let start = self.peek().start;
        let first = self.term()?;
        let mut rest = Vec::new();
        loop {
            let op = match self.peek().tok {
                Tok::Plus => ArithOp::Add,
                Tok::Minus => ArithOp::Sub,
                _ => break,
            };
            self.bump();
            rest.push((op, self.term()?));
        }
        if rest.is_empty() {
            return Ok(first);
        }
        Ok(Term {
            kind: TermKind::Arith(Box::new(first), rest),
            span: self.span_from(start),
        })
    }

    /// A `set` operand: a path, literal, substitution, `if_not_exists` or `list_append`.
    fn term(&mut self) -> Result<Term> {
        let token = self.peek().clone();
        let function = match &token.tok {
            Tok::Word(word) => word.to_ascii_lowercase(),
            Tok::Path(_) | Tok::Literal(_) | Tok::Sub(_) => {
                let operand = self.operand()?;
                return Ok(Term {
                    span: operand.span(),
                    kind: TermKind::Operand(operand),
                });
            }
            _ => return Err(self.bad_operand(&token)),
        };
        if function != "if_not_exists" && function != "list_append" {
            return Err(self.bad_operand(&token));
        }
        self.bump();
        self.expect(&Tok::LParen, &format!("expected '(' after {function}"))?;
        self.enter()?;
        let kind = if function == "if_not_exists" {
            let path = self.path_arg("if_not_exists")?;
            self.expect(
                &Tok::Comma,
                "expected ',' and a default value in if_not_exists",
            )?;
            TermKind::IfNotExists(path, Box::new(self.sum()?))
        } else {
            let first = self.sum()?;
            self.expect(&Tok::Comma, "expected ',' and a second list in list_append")?;
            TermKind::ListAppend(Box::new(first), Box::new(self.sum()?))
        };
        self.leave();
        self.expect(&Tok::RParen, &format!("expected ')' to close {function}("))?;
        Ok(Term {
            kind,
            span: self.span_from(token.start),
        })
    }
}

fn span(token: &Token) -> Span {
    Span {
        start: token.start,
        end: token.end,
    }
}

fn is_keyword(word: &str) -> bool {
    ["AND", "OR", "NOT", "BETWEEN", "IN"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(word))
}

/// The message for an `attribute_type` argument that is not a type name.
pub(super) fn type_name_message(found: &str) -> String {
    format!(
        "attribute_type needs a type name ({}), got {found}",
        TYPE_NAMES.join(", ")
    )
}
