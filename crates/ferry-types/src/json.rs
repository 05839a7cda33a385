//! JSON <-> [`Value`] without a schema: the default mapping, which a schema refines.

use base64::Engine;
use serde_json::Value as Json;

use crate::{Item, Number, Value};

impl Value {
    /// Maps JSON to a value: text to `S`, numbers to `N` (full precision), booleans to
    /// `BOOL`, null to `NULL`, arrays to `L`, objects to `M`.
    pub fn from_json(json: &Json) -> crate::Result<Value> {
        Ok(match json {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::N(Number::parse(&n.to_string())?),
            Json::String(s) => Value::S(s.clone()),
            Json::Array(items) => Value::L(
                items
                    .iter()
                    .map(Value::from_json)
                    .collect::<crate::Result<_>>()?,
            ),
            Json::Object(map) => Value::M(item_from_json(map)?),
        })
    }

    /// Maps a value to JSON: binaries as base64 text, sets as arrays, numbers exactly.
    pub fn to_json(&self) -> Json {
        let b64 = base64_json;
        match self {
            Value::S(s) => Json::String(s.clone()),
            Value::N(n) => number_to_json(n),
            Value::B(b) => b64(b),
            Value::Bool(b) => Json::Bool(*b),
            Value::Null => Json::Null,
            Value::M(map) => Json::Object(item_to_json(map)),
            Value::L(list) => Json::Array(list.iter().map(Value::to_json).collect()),
            Value::Ss(set) => Json::Array(set.iter().cloned().map(Json::String).collect()),
            Value::Ns(set) => Json::Array(set.iter().map(number_to_json).collect()),
            Value::Bs(set) => Json::Array(set.iter().map(|b| b64(b)).collect()),
        }
    }
}

/// Decodes base64 text (standard alphabet, padding optional).
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let engine = base64::engine::general_purpose::STANDARD;
    engine.decode(text).ok().or_else(|| {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .ok()
    })
}

fn number_to_json(n: &Number) -> Json {
    number_text_to_json(n.as_str())
}

/// A number's decimal text as a JSON number (its own text, should it not parse).
pub fn number_text_to_json(text: &str) -> Json {
    // Most numbers are integers: skip the JSON parser for them.
    if let Ok(int) = text.parse::<i64>() {
        return Json::from(int);
    }
    // serde_json keeps the exact text with `arbitrary_precision`.
    serde_json::from_str::<serde_json::Number>(text)
        .map(Json::Number)
        .unwrap_or_else(|_| Json::String(text.to_string()))
}

/// Appends [`number_text_to_json`]'s JSON text for `text` to `out`, by its same rule but
/// without its `Value` for an integer (with `arbitrary_precision` each holds a `String`).
pub fn write_number(text: &str, out: &mut Vec<u8>) {
    if let Ok(int) = text.parse::<i64>() {
        write_serialized(&int, out);
        return;
    }
    match serde_json::from_str::<serde_json::Number>(text) {
        Ok(number) => write_serialized(&number, out),
        Err(_) => write_serialized(text, out),
    }
}

/// Appends `value` serialized as JSON to `out`.
pub fn write_serialized<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Into memory, a string, a number or a `serde_json::Value` cannot fail to serialize.
    let _ = serde_json::to_writer(out, value);
}

/// Binary as base64 text.
pub fn base64_json(bytes: &[u8]) -> Json {
    Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Maps a JSON object to an item (see [`Value::from_json`]).
pub fn item_from_json(map: &serde_json::Map<String, Json>) -> crate::Result<Item> {
    map.iter()
        .map(|(k, v)| Ok((k.clone(), Value::from_json(v)?)))
        .collect()
}

/// Maps an item to a JSON object (see [`Value::to_json`]).
pub fn item_to_json(item: &Item) -> serde_json::Map<String, Json> {
    item.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_full_precision() {
        let text = r#"{"n": 12345678901234567890123456789012345678, "f": 0.1}"#;
        let json: Json = serde_json::from_str(text).unwrap();
        let value = Value::from_json(&json).unwrap();
        assert_eq!(
            serde_json::to_string(&value.to_json()).unwrap(),
            r#"{"f":0.1,"n":12345678901234567890123456789012345678}"#
        );
    }

    #[test]
    fn binary_round_trips_through_base64() {
        let value = Value::B(vec![0, 1, 255]);
        let Json::String(text) = value.to_json() else {
            panic!("binary maps to text")
        };
        assert_eq!(decode_base64(&text), Some(vec![0, 1, 255]));
    }
}
