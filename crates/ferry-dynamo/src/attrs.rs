//! Ferry's values as DynamoDB attribute values and back.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use ferry_types::{Item, Number, Value};

use crate::{Error, Result};

/// A DynamoDB item as the SDK holds it.
pub type AttrMap = HashMap<String, AttributeValue>;

/// `value` as an attribute value.
pub fn to_attr(value: &Value) -> AttributeValue {
    match value {
        Value::S(s) => AttributeValue::S(s.clone()),
        Value::N(n) => AttributeValue::N(n.as_str().to_string()),
        Value::B(b) => AttributeValue::B(Blob::new(b.clone())),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Null => AttributeValue::Null(true),
        Value::M(m) => AttributeValue::M(to_attrs(m)),
        Value::L(l) => AttributeValue::L(l.iter().map(to_attr).collect()),
        Value::Ss(s) => AttributeValue::Ss(s.iter().cloned().collect()),
        Value::Ns(s) => AttributeValue::Ns(s.iter().map(|n| n.as_str().to_string()).collect()),
        Value::Bs(s) => AttributeValue::Bs(s.iter().map(|b| Blob::new(b.clone())).collect()),
    }
}

/// `item` as an SDK item.
pub fn to_attrs(item: &Item) -> AttrMap {
    item.iter().map(|(k, v)| (k.clone(), to_attr(v))).collect()
}

/// An attribute value as a value; `name` says where it was, for the error.
pub fn from_attr(name: &str, attr: &AttributeValue) -> Result<Value> {
    let number =
        |text: &str| Number::parse(text).map_err(|e| Error::Item(format!("attribute {name}: {e}")));
    Ok(match attr {
        AttributeValue::S(s) => Value::S(s.clone()),
        AttributeValue::N(n) => Value::N(number(n)?),
        AttributeValue::B(b) => Value::B(b.clone().into_inner()),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::M(m) => Value::M(from_attrs(m)?),
        AttributeValue::L(l) => Value::L(
            (l.iter().enumerate())
                .map(|(i, v)| from_attr(&format!("{name}[{i}]"), v))
                .collect::<Result<_>>()?,
        ),
        AttributeValue::Ss(s) => Value::Ss(s.iter().cloned().collect()),
        AttributeValue::Ns(s) => Value::Ns(s.iter().map(|n| number(n)).collect::<Result<_>>()?),
        AttributeValue::Bs(s) => Value::Bs(s.iter().map(|b| b.clone().into_inner()).collect()),
        other => {
            return Err(Error::Item(format!(
                "attribute {name} has a type Ferry does not know: {other:?}"
            )));
        }
    })
}

/// An SDK item as an item.
pub fn from_attrs(attrs: &AttrMap) -> Result<Item> {
    (attrs.iter())
        .map(|(k, v)| Ok((k.clone(), from_attr(k, v)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_survives_the_round_trip() {
        let mut inner = Item::new();
        inner.insert("n".into(), Value::N(Number::parse("-1.5e3").unwrap()));
        let item: Item = [
            ("s", Value::S("text".into())),
            ("b", Value::B(vec![0, 255])),
            ("t", Value::Bool(true)),
            ("z", Value::Null),
            ("m", Value::M(inner)),
            ("l", Value::L(vec![Value::int(1), Value::S("x".into())])),
            ("ss", Value::Ss(["a".to_string(), "b".to_string()].into())),
            (
                "ns",
                Value::Ns([Number::from(1i64), Number::from(2i64)].into()),
            ),
            ("bs", Value::Bs([vec![1u8], vec![2u8]].into())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(from_attrs(&to_attrs(&item)).unwrap(), item);
    }

    #[test]
    fn a_bad_number_names_the_attribute() {
        let attrs: AttrMap = [("price".to_string(), AttributeValue::N("1.2.3".into()))].into();
        let error = from_attrs(&attrs).unwrap_err().to_string();
        assert!(error.contains("price"), "{error}");
    }
}
