//! Order-preserving, self-delimiting byte encoding of key values.
//!
//! `encode(a) < encode(b)` (bytewise) exactly when `a < b` in DynamoDB's key order
//! (text and binary bytewise, numbers numerically), and each encoding can be followed by
//! another, so a composite key `hash ++ sort` sorts by hash, then by sort. The byte layout
//! is documented in `docs/formats.md`.

use crate::number::Decimal;
use crate::{Error, Key, Number, Result, Value};

const TAG_NEGATIVE: u8 = 0x10;
const TAG_ZERO: u8 = 0x15;
const TAG_POSITIVE: u8 = 0x20;
const TAG_TEXT: u8 = 0x30;
const TAG_BINARY: u8 = 0x40;
/// Ends a text or binary component; `0x00` inside one is escaped as `0x00 0xFF`.
const END: [u8; 2] = [0x00, 0x01];

/// The bytes of a primary key: the encoded hash value, then the encoded sort value. Each
/// value's bytes end themselves, so a key's bytes start no other key's.
pub fn key_bytes(key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    encode(&key.hash, &mut out);
    if let Some(sort) = &key.sort {
        encode(sort, &mut out);
    }
    out
}

/// Appends the encoding of a key value (`S`, `N` or `B`) to `out`.
///
/// Other types cannot be keys; they are rejected by the schema before they get here and
/// encode as an empty text so that this function never fails.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::S(s) => escaped(TAG_TEXT, s.as_bytes(), out),
        Value::B(b) => escaped(TAG_BINARY, b, out),
        Value::N(n) => number(n, out),
        _ => escaped(TAG_TEXT, b"", out),
    }
}

/// The encoding of a text prefix: every text that starts with `prefix` encodes to bytes
/// that start with the result (used for `begins_with`).
pub fn text_prefix(prefix: &[u8], tag_binary: bool) -> Vec<u8> {
    let mut out = vec![if tag_binary { TAG_BINARY } else { TAG_TEXT }];
    for &byte in prefix {
        out.push(byte);
        if byte == 0 {
            out.push(0xFF);
        }
    }
    out
}

fn escaped(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 3);
    out.push(tag);
    for &byte in bytes {
        out.push(byte);
        if byte == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&END);
}

fn number(n: &Number, out: &mut Vec<u8>) {
    let d = n.decimal();
    if d.digits.is_empty() {
        out.push(TAG_ZERO);
        return;
    }
    // Exponent biased into u16 so that it sorts as unsigned; digits 1..=10, ended by 0.
    let exponent = (d.exponent + 0x8000) as u16;
    if d.negative {
        out.push(TAG_NEGATIVE);
        out.extend_from_slice(&(!exponent).to_be_bytes());
        out.extend(d.digits.iter().map(|c| 10 - (c - b'0')));
        out.push(0xFF);
    } else {
        out.push(TAG_POSITIVE);
        out.extend_from_slice(&exponent.to_be_bytes());
        out.extend(d.digits.iter().map(|c| 1 + (c - b'0')));
        out.push(0x00);
    }
}

/// Decodes one key value from the front of `bytes`, returning it and the bytes after it.
pub fn decode(bytes: &[u8]) -> Result<(Value, &[u8])> {
    let corrupt = || Error::Corrupt("key value is truncated or has an unknown tag".into());
    let (&tag, rest) = bytes.split_first().ok_or_else(corrupt)?;
    match tag {
        TAG_TEXT | TAG_BINARY => {
            let mut raw = Vec::new();
            let mut i = 0;
            loop {
                match (rest.get(i), rest.get(i + 1)) {
                    (Some(0), Some(0xFF)) => {
                        raw.push(0);
                        i += 2;
                    }
                    (Some(0), Some(1)) => break,
                    (Some(&b), _) => {
                        raw.push(b);
                        i += 1;
                    }
                    (None, _) => return Err(corrupt()),
                }
            }
            let value = if tag == TAG_TEXT {
                Value::S(String::from_utf8(raw).map_err(|_| corrupt())?)
            } else {
                Value::B(raw)
            };
            Ok((value, &rest[i + 2..]))
        }
        TAG_ZERO => Ok((Value::N(Number::from(0i64)), rest)),
        TAG_POSITIVE | TAG_NEGATIVE => {
            let negative = tag == TAG_NEGATIVE;
            let exp_bytes: [u8; 2] = rest
                .get(..2)
                .ok_or_else(corrupt)?
                .try_into()
                .map_err(|_| corrupt())?;
            let mut exponent = u16::from_be_bytes(exp_bytes);
            if negative {
                exponent = !exponent;
            }
            let end = if negative { 0xFF } else { 0x00 };
            let body = &rest[2..];
            let len = body.iter().position(|&b| b == end).ok_or_else(corrupt)?;
            let digits = body[..len]
                .iter()
                .map(|&b| {
                    if negative {
                        b'0' + (10 - b)
                    } else {
                        b'0' + (b - 1)
                    }
                })
                .collect();
            let decimal = Decimal {
                negative,
                digits,
                exponent: exponent as i32 - 0x8000,
            };
            Ok((
                Value::N(Number::parse(&decimal.to_text())?),
                &body[len + 1..],
            ))
        }
        _ => Err(corrupt()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out);
        out
    }

    #[test]
    fn numbers_sort_numerically_and_round_trip() {
        let texts = [
            "-1e20", "-100", "-2.5", "-2", "-0.001", "0", "0.001", "0.12", "0.123", "2", "10",
            "1e20",
        ];
        let values: Vec<Value> = texts
            .iter()
            .map(|t| Value::N(Number::parse(t).unwrap()))
            .collect();
        for pair in values.windows(2) {
            assert!(
                enc(&pair[0]) < enc(&pair[1]),
                "{:?} < {:?}",
                pair[0],
                pair[1]
            );
        }
        for v in &values {
            let bytes = enc(v);
            assert_eq!(decode(&bytes).unwrap(), (v.clone(), &[][..]));
        }
    }

    #[test]
    fn texts_sort_bytewise_and_compose() {
        let a = Value::S("ab".into());
        let b = Value::S("ab\0c".into());
        let c = Value::S("abc".into());
        assert!(enc(&a) < enc(&b) && enc(&b) < enc(&c));
        let mut both = enc(&b);
        encode(&c, &mut both);
        let (first, rest) = decode(&both).unwrap();
        assert_eq!(first, b);
        assert_eq!(decode(rest).unwrap().0, c);
        assert!(enc(&c).starts_with(&text_prefix(b"ab", false)));
    }
}
