//! Splits expression text into tokens, each with its byte span.

use ferry_types::{Number, PathPart, Value};

use super::{CmpOp, error};
use crate::Result;

/// One token and where it sits in the text.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub tok: Tok,
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset just past the last character.
    pub end: usize,
}

/// The kinds of token.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// `${a.b[0]}`: an attribute path.
    Path(Vec<PathPart>),
    /// `{42}`, `{"42"}`, `{true}`, `{text}`: a literal value.
    Literal(Value),
    /// `@{name}`: a substitution.
    Sub(String),
    /// `@{...name}`: a substitution expanded into an `IN` list.
    Expand(String),
    /// A keyword or function name.
    Word(String),
    LParen,
    RParen,
    Comma,
    Cmp(CmpOp),
    Plus,
    Minus,
    /// The end of the text (always the last token).
    End,
}

/// Tokenizes the whole text; the result always ends with [`Tok::End`].
pub(super) fn tokenize(text: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(c) = text[at..].chars().next() {
        if c.is_whitespace() {
            at += c.len_utf8();
            continue;
        }
        let (tok, end) = next_token(text, at, c)?;
        tokens.push(Token {
            tok,
            start: at,
            end,
        });
        at = end;
    }
    tokens.push(Token {
        tok: Tok::End,
        start: text.len(),
        end: text.len(),
    });
    Ok(tokens)
}

/// Reads the token starting with `c` at `at`; returns it and the offset just past it.
fn next_token(text: &str, at: usize, c: char) -> Result<(Tok, usize)> {
    let rest = &text[at..];
    let simple = |tok: Tok, len: usize| Ok((tok, at + len));
    if rest.starts_with("${") {
        return path(text, at);
    }
    if rest.starts_with("@{") {
        return substitution(text, at);
    }
    match c {
        '{' => literal(text, at),
        '(' => simple(Tok::LParen, 1),
        ')' => simple(Tok::RParen, 1),
        ',' => simple(Tok::Comma, 1),
        '+' => simple(Tok::Plus, 1),
        '-' => simple(Tok::Minus, 1),
        '=' if rest.starts_with("==") => Err(error(text, at, "unknown operator '==': use '='")),
        '=' => simple(Tok::Cmp(CmpOp::Eq), 1),
        '!' if rest.starts_with("!=") => Err(error(text, at, "unknown operator '!=': use '<>'")),
        '<' if rest.starts_with("<>") => simple(Tok::Cmp(CmpOp::Ne), 2),
        '<' if rest.starts_with("<=") => simple(Tok::Cmp(CmpOp::Le), 2),
        '<' => simple(Tok::Cmp(CmpOp::Lt), 1),
        '>' if rest.starts_with(">=") => simple(Tok::Cmp(CmpOp::Ge), 2),
        '>' => simple(Tok::Cmp(CmpOp::Gt), 1),
        c if c.is_ascii_alphanumeric() || c == '_' => {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            simple(Tok::Word(rest[..len].to_string()), len)
        }
        '$' | '@' => Err(error(
            text,
            at,
            format!("expected '{{' after '{c}': write {c}{{name}}"),
        )),
        c => Err(error(
            text,
            at,
            format!("unexpected character '{c}': names go in ${{...}}, values in {{...}}"),
        )),
    }
}

/// The text between `{` at `open` and the next `}`, and the offset just past the `}`;
/// errors point at `at`, where the token starts.
/// A `{` inside means the first brace was never closed (`${a = {1}`): saying so beats
/// reading `a = {1` as a name. Text with braces must be quoted: `{"a{b}"}`.
fn braced<'t>(text: &'t str, at: usize, open: usize, what: &str) -> Result<(&'t str, usize)> {
    let inner = open + 1;
    match text[inner..].find(['{', '}']) {
        Some(len) if text[inner + len..].starts_with('}') => {
            Ok((&text[inner..inner + len], inner + len + 1))
        }
        _ => Err(error(
            text,
            at,
            format!("{what} is not closed: expected '}}'"),
        )),
    }
}

/// `${path}` starting at `at`.
fn path(text: &str, at: usize) -> Result<(Tok, usize)> {
    let (inner, end) = braced(text, at, at + 1, "'${'")?;
    match PathPart::parse_path(inner.trim()) {
        Some(parts) => Ok((Tok::Path(parts), end)),
        None => Err(error(
            text,
            at,
            format!(
                "bad attribute path '{inner}': expected a name such as ${{status}}, \
                 ${{address.city}} or ${{tags[0]}}"
            ),
        )),
    }
}

/// `@{name}` or `@{...name}` starting at `at`.
fn substitution(text: &str, at: usize) -> Result<(Tok, usize)> {
    let (inner, end) = braced(text, at, at + 1, "'@{'")?;
    let inner = inner.trim();
    let (expand, name) = match inner.strip_prefix("...") {
        Some(name) => (true, name.trim()),
        None => (false, inner),
    };
    if name.is_empty() {
        return Err(error(text, at, "substitution has no name: write @{name}"));
    }
    let tok = if expand {
        Tok::Expand(name.to_string())
    } else {
        Tok::Sub(name.to_string())
    };
    Ok((tok, end))
}

/// `{value}` starting at `at`: quoted text, or a bare number, boolean, null or text.
fn literal(text: &str, at: usize) -> Result<(Tok, usize)> {
    let after = &text[at + 1..];
    let body = after.trim_start();
    match body.chars().next() {
        Some(quote @ ('"' | '\'')) => quoted(text, at + 1 + (after.len() - body.len()), quote),
        _ => {
            let (inner, end) = braced(text, at, at, "'{'")?;
            Ok((Tok::Literal(bare_value(text, at, inner)?), end))
        }
    }
}

/// What an unquoted literal means: OneTable reads a number when the text looks like one,
/// so `{42}` is N and `{"42"}` is S.
fn bare_value(text: &str, at: usize, inner: &str) -> Result<Value> {
    let trimmed = inner.trim();
    let value = match trimmed {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        _ => match Number::parse(trimmed) {
            Ok(n) => Value::N(n),
            // A well-formed number DynamoDB cannot hold (39 digits, 1e200) is a mistake, not
            // text: read as text it would silently never match.
            Err(e @ ferry_types::Error::NumberOutOfRange(_)) => {
                return Err(error(text, at, format!("bad number {{{trimmed}}}: {e}")));
            }
            // `{2024-01-01}`, `{1.2.3}`, `{active}`: text.
            Err(_) => Value::S(inner.to_string()),
        },
    };
    Ok(value)
}

/// A quoted literal: `quote_at` is the offset of the opening quote inside `{...}`.
/// A backslash escapes the next character so a text can hold quotes and braces.
fn quoted(text: &str, quote_at: usize, quote: char) -> Result<(Tok, usize)> {
    let mut value = String::new();
    let mut chars = text[quote_at + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped)) => value.push(escaped),
                None => break,
            },
            c if c == quote => {
                let close = quote_at + 1 + i + 1;
                let rest = &text[close..];
                let trimmed = rest.trim_start();
                if !trimmed.starts_with('}') {
                    let at = close + rest.len() - trimmed.len();
                    return Err(error(text, at, "expected '}' after the quoted text"));
                }
                return Ok((
                    Tok::Literal(Value::S(value)),
                    text.len() - trimmed.len() + 1,
                ));
            }
            c => value.push(c),
        }
    }
    Err(error(
        text,
        quote_at,
        format!("quoted text is not closed: expected {quote}"),
    ))
}
