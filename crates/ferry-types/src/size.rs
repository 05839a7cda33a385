//! DynamoDB's item size accounting.

use crate::{Item, Value};

/// The size DynamoDB charges for an item: every attribute name plus its value.
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

/// The size of one value, by DynamoDB's published rules.
pub fn value_size(value: &Value) -> usize {
    match value {
        Value::S(s) => s.len(),
        Value::N(n) => number_size(n.as_str()),
        Value::B(b) => b.len(),
        Value::Bool(_) | Value::Null => 1,
        Value::M(map) => {
            3 + map
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        Value::L(list) => 3 + list.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        Value::Ss(set) => set.iter().map(String::len).sum(),
        Value::Ns(set) => set.iter().map(|n| number_size(n.as_str())).sum(),
        Value::Bs(set) => set.iter().map(Vec::len).sum(),
    }
}

/// About one byte per two significant digits, plus one.
fn number_size(text: &str) -> usize {
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    digits.div_ceil(2) + 1
}

/// How deeply maps and lists nest inside a value (a scalar is 0).
pub fn nesting_depth(value: &Value) -> usize {
    match value {
        Value::M(map) => 1 + map.values().map(nesting_depth).max().unwrap_or(0),
        Value::L(list) => 1 + list.iter().map(nesting_depth).max().unwrap_or(0),
        _ => 0,
    }
}
