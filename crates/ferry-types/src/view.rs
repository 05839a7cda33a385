//! Borrowed views of encoded items: attributes read in place from the stored bytes.
//!
//! [`ItemRef::decode`] reads the codec's bytes once into a table of (name, value) pairs
//! that borrow their text and binaries from the input, so a read that only checks a few
//! attributes or maps them to JSON or a serde type builds no owned [`Item`]. Names are in
//! order (the codec writes them sorted): a lookup scans a small item and binary-searches a
//! large one.

use std::borrow::Cow;

use crate::codec::Reader;
use crate::json::{number_text_to_json, write_number, write_serialized};
use crate::{Error, Item, Number, Result, Value};

/// Items with at most this many attributes are scanned, not binary-searched ([`ItemRef::get`]).
const LINEAR_LOOKUP_MAX: usize = 16;

/// A value borrowed from encoded bytes or from an owned [`Value`].
#[derive(Debug, Clone, PartialEq)]
pub enum ValueRef<'a> {
    /// Text.
    S(&'a str),
    /// A number, as its decimal text.
    N(&'a str),
    /// Binary.
    B(&'a [u8]),
    /// A boolean.
    Bool(bool),
    /// Null.
    Null,
    /// A map.
    M(ItemRef<'a>),
    /// A list.
    L(Vec<ValueRef<'a>>),
    /// A set of texts.
    Ss(Vec<&'a str>),
    /// A set of numbers, as decimal texts.
    Ns(Vec<&'a str>),
    /// A set of binaries.
    Bs(Vec<&'a [u8]>),
}

/// An item's attributes, borrowed, in name order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ItemRef<'a> {
    attrs: Vec<(&'a str, ValueRef<'a>)>,
}

impl<'a> ItemRef<'a> {
    /// A view of an item encoded by [`crate::codec::encode_item`], requiring that nothing
    /// follows it. Every part is checked here (lengths, UTF-8, nesting), so a corrupt
    /// record is an error now rather than a surprise later.
    pub fn decode(bytes: &'a [u8]) -> Result<ItemRef<'a>> {
        let mut reader = Reader::texts_checked_once(bytes);
        let item = reader.item_ref()?;
        if !reader.rest().is_empty() {
            return Err(Error::Corrupt("trailing bytes after item".into()));
        }
        Ok(item)
    }

    /// A view of an owned item.
    pub fn of(item: &'a Item) -> ItemRef<'a> {
        ItemRef {
            attrs: item
                .iter()
                .map(|(name, value)| (name.as_str(), ValueRef::of(value)))
                .collect(),
        }
    }

    pub(crate) fn from_pairs(mut attrs: Vec<(&'a str, ValueRef<'a>)>) -> ItemRef<'a> {
        // The codec writes names in order; sort only what another writer left unsorted.
        if !attrs.is_sorted_by(|a, b| a.0 <= b.0) {
            attrs.sort_by(|a, b| a.0.cmp(b.0));
        }
        ItemRef { attrs }
    }

    /// The value of attribute `name`.
    pub fn get(&self, name: &str) -> Option<&ValueRef<'a>> {
        // A scan that compares lengths first beats a binary search of ordered texts on the
        // items most models store: 12 lookups in 12 attributes took a tenth of the time.
        // From the end, so a name held twice (only hostile bytes do) reads as its last
        // value, as `to_json` and `write_json` show it.
        if self.attrs.len() <= LINEAR_LOOKUP_MAX {
            let found =
                (self.attrs.iter().rev()).find(|(n, _)| n.len() == name.len() && *n == name);
            return found.map(|(_, value)| value);
        }
        // The last of the names not past `name`: the last of a name held twice, too.
        let past = self.attrs.partition_point(|(n, _)| *n <= name);
        let (found, value) = self.attrs.get(past.checked_sub(1)?)?;
        (*found == name).then_some(value)
    }

    /// The text of attribute `name`, when it is an `S`.
    pub fn text(&self, name: &str) -> Option<&'a str> {
        match self.get(name)? {
            ValueRef::S(s) => Some(s),
            _ => None,
        }
    }

    /// The attributes in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &ValueRef<'a>)> + '_ {
        self.attrs.iter().map(|(name, value)| (*name, value))
    }

    /// How many attributes the item has.
    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    /// Whether the item has no attributes.
    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }

    /// The item as an owned [`Item`].
    pub fn to_item(&self) -> Result<Item> {
        self.iter()
            .map(|(name, value)| Ok((name.to_string(), value.to_value()?)))
            .collect()
    }

    /// An owned [`Item`] of only the attributes `names` (those the item has): for work
    /// that needs owned values but reads a few attributes of a wide item.
    pub fn to_item_of<'n>(&self, names: impl IntoIterator<Item = &'n str>) -> Result<Item> {
        let present = names
            .into_iter()
            .filter_map(|name| Some((name, self.get(name)?)));
        present
            .map(|(name, value)| Ok((name.to_string(), value.to_value()?)))
            .collect()
    }

    /// The item as a JSON object (see [`Value::to_json`]).
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.iter()
            .map(|(name, value)| (name.to_string(), value.to_json()))
            .collect()
    }

    /// Appends the JSON text of [`ItemRef::to_json`] to `out`, building no
    /// `serde_json::Value`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (at, (name, value)) in self.attrs.iter().enumerate() {
            // A name held twice (only hostile bytes do) shows its last value, as the map of
            // `to_json` keeps it; names are sorted, so the two are neighbours.
            if self.attrs.get(at + 1).is_some_and(|(next, _)| next == name) {
                continue;
            }
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            write_serialized(*name, out);
            out.push(b':');
            value.write_json(out);
        }
        out.push(b'}');
    }
}

impl<'a> ValueRef<'a> {
    /// A view of an owned value.
    pub fn of(value: &'a Value) -> ValueRef<'a> {
        match value {
            Value::S(s) => ValueRef::S(s),
            Value::N(n) => ValueRef::N(n.as_str()),
            Value::B(b) => ValueRef::B(b),
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Null => ValueRef::Null,
            Value::M(map) => ValueRef::M(ItemRef::of(map)),
            Value::L(list) => ValueRef::L(list.iter().map(ValueRef::of).collect()),
            Value::Ss(set) => ValueRef::Ss(set.iter().map(String::as_str).collect()),
            Value::Ns(set) => ValueRef::Ns(set.iter().map(Number::as_str).collect()),
            Value::Bs(set) => ValueRef::Bs(set.iter().map(Vec::as_slice).collect()),
        }
    }

    /// The value as an owned [`Value`]; an error when a number's text is not a number.
    pub fn to_value(&self) -> Result<Value> {
        Ok(match self {
            ValueRef::S(s) => Value::S(s.to_string()),
            ValueRef::N(n) => Value::N(Number::parse(n)?),
            ValueRef::B(b) => Value::B(b.to_vec()),
            ValueRef::Bool(b) => Value::Bool(*b),
            ValueRef::Null => Value::Null,
            ValueRef::M(map) => Value::M(map.to_item()?),
            ValueRef::L(list) => {
                Value::L(list.iter().map(ValueRef::to_value).collect::<Result<_>>()?)
            }
            ValueRef::Ss(set) => Value::Ss(set.iter().map(|s| s.to_string()).collect()),
            ValueRef::Ns(set) => Value::Ns(
                set.iter()
                    .map(|n| Number::parse(n))
                    .collect::<Result<_>>()?,
            ),
            ValueRef::Bs(set) => Value::Bs(set.iter().map(|b| b.to_vec()).collect()),
        })
    }

    /// Maps the value to JSON exactly as [`Value::to_json`] maps its owned twin.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as Json;
        match self {
            ValueRef::S(s) => Json::String(s.to_string()),
            ValueRef::N(n) => number_text_to_json(n),
            ValueRef::B(b) => crate::json::base64_json(b),
            ValueRef::Bool(b) => Json::Bool(*b),
            ValueRef::Null => Json::Null,
            ValueRef::M(map) => Json::Object(map.to_json()),
            ValueRef::L(list) => Json::Array(list.iter().map(ValueRef::to_json).collect()),
            ValueRef::Ss(set) => {
                Json::Array(set.iter().map(|s| Json::String(s.to_string())).collect())
            }
            ValueRef::Ns(set) => Json::Array(set.iter().map(|n| number_text_to_json(n)).collect()),
            ValueRef::Bs(set) => {
                Json::Array(set.iter().map(|b| crate::json::base64_json(b)).collect())
            }
        }
    }

    /// Appends the JSON text of [`ValueRef::to_json`] to `out`, building no
    /// `serde_json::Value` (but for binaries and sets, which are rare).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            ValueRef::S(s) => write_serialized(*s, out),
            ValueRef::N(n) => write_number(n, out),
            ValueRef::Bool(b) => write_serialized(b, out),
            ValueRef::Null => out.extend_from_slice(b"null"),
            ValueRef::M(map) => map.write_json(out),
            ValueRef::L(list) => {
                out.push(b'[');
                for (at, value) in list.iter().enumerate() {
                    if at > 0 {
                        out.push(b',');
                    }
                    value.write_json(out);
                }
                out.push(b']');
            }
            other => write_serialized(&other.to_json(), out),
        }
    }

    /// The text of an `S`.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            ValueRef::S(s) => Some(s),
            _ => None,
        }
    }

    /// A number as an `i64`, when it is an integer in range.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ValueRef::N(n) => n.parse().ok(),
            _ => None,
        }
    }

    /// Text of scalars (S, N, BOOL), as [`Value::to_text`] gives it.
    pub fn to_text(&self) -> Option<Cow<'a, str>> {
        match self {
            ValueRef::S(s) | ValueRef::N(s) => Some(Cow::Borrowed(s)),
            ValueRef::Bool(b) => Some(Cow::Owned(b.to_string())),
            _ => None,
        }
    }
}

impl PartialEq<Value> for ValueRef<'_> {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (ValueRef::S(a), Value::S(b)) => a == b,
            // Both sides hold canonical text (what the codec stores is a Number's text).
            (ValueRef::N(a), Value::N(b)) => *a == b.as_str(),
            (ValueRef::B(a), Value::B(b)) => a == b,
            (ValueRef::Bool(a), Value::Bool(b)) => a == b,
            (ValueRef::Null, Value::Null) => true,
            (ValueRef::M(a), Value::M(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((na, va), (nb, vb))| na == nb && va == vb)
            }
            (ValueRef::L(a), Value::L(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
            }
            (ValueRef::Ss(a), Value::Ss(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
            }
            (ValueRef::Ns(a), Value::Ns(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| *x == y.as_str())
            }
            (ValueRef::Bs(a), Value::Bs(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_item, encode_item};

    fn sample() -> Item {
        let mut inner = Item::new();
        inner.insert("x".into(), Value::N(Number::from(7i64)));
        let mut item = crate::codec::tests::every_type();
        item.insert("m".into(), Value::M(inner));
        item
    }

    #[test]
    fn json_text_is_the_serialized_json_of_every_type_and_of_a_name_held_twice() {
        let item = sample();
        let mut text = Vec::new();
        ItemRef::of(&item).write_json(&mut text);
        let json = serde_json::Value::Object(ItemRef::of(&item).to_json());
        assert_eq!(String::from_utf8(text).unwrap(), json.to_string());
        // Only hostile bytes hold a name twice: the text shows what the map keeps.
        let one = Value::N(Number::from(1i64));
        let two = Value::N(Number::from(2i64));
        let pairs = vec![
            ("b", ValueRef::of(&one)),
            ("a", ValueRef::of(&one)),
            ("a", ValueRef::of(&two)),
        ];
        let twice = ItemRef::from_pairs(pairs);
        let mut text = Vec::new();
        twice.write_json(&mut text);
        let json = serde_json::Value::Object(twice.to_json());
        assert_eq!(String::from_utf8(text).unwrap(), json.to_string());
    }

    #[test]
    fn a_view_reads_what_the_owned_decoder_reads() {
        let item = sample();
        let mut bytes = Vec::new();
        encode_item(&item, &mut bytes);
        let view = ItemRef::decode(&bytes).unwrap();
        assert_eq!(view.to_item().unwrap(), decode_item(&bytes).unwrap());
        assert_eq!(view, ItemRef::of(&item));
        assert_eq!(view.to_json(), crate::json::item_to_json(&item));
        assert_eq!(view.text("s"), Some("hé"));
        assert_eq!(view.get("n").unwrap(), &item["n"]);
        assert!(view.get("missing").is_none());
        for (name, value) in &item {
            assert_eq!(view.get(name).unwrap(), value, "{name}");
        }
    }

    #[test]
    fn a_lookup_finds_every_name_and_no_other_in_small_and_large_items() {
        for width in [1, LINEAR_LOOKUP_MAX, LINEAR_LOOKUP_MAX + 1, 40] {
            let item: Item = (0..width)
                .map(|i| {
                    (
                        format!("{}{i}", "a".repeat(i % 3)),
                        Value::N(Number::from(i as i64)),
                    )
                })
                .collect();
            let mut bytes = Vec::new();
            encode_item(&item, &mut bytes);
            let view = ItemRef::decode(&bytes).unwrap();
            for (name, value) in &item {
                assert_eq!(view.get(name).unwrap(), value, "{name} of {width}");
            }
            for absent in ["", "b", "aa", "a0a", "zzzz"] {
                assert!(view.get(absent).is_none(), "{absent} of {width}");
            }
        }
        // Only hostile bytes hold a name twice: a lookup reads the last, as `to_json` does.
        let (one, two) = (Value::N(Number::from(1i64)), Value::N(Number::from(2i64)));
        let twice = ItemRef::from_pairs(vec![("a", ValueRef::of(&one)), ("a", ValueRef::of(&two))]);
        assert_eq!(twice.get("a"), Some(&ValueRef::of(&two)));
        assert_eq!(twice.to_json()["a"], serde_json::json!(2));
        // So does the binary search of a large item.
        let numbers: Vec<Value> = (0..20).map(|i| Value::N(Number::from(i as i64))).collect();
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let pairs = (numbers.iter().enumerate())
            .map(|(i, n)| (names[if i < 10 { i } else { 4 }], ValueRef::of(n)))
            .collect();
        let wide = ItemRef::from_pairs(pairs);
        assert!(wide.len() > LINEAR_LOOKUP_MAX);
        assert_eq!(wide.get("e"), Some(&ValueRef::of(&numbers[19])));
        assert_eq!(wide.to_json()["e"], serde_json::json!(19));
        assert_eq!(wide.to_item().unwrap()["e"], numbers[19]);
        assert_eq!(wide.get("j"), Some(&ValueRef::of(&numbers[9])));
        assert!(wide.get("k").is_none() && wide.get("0").is_none());
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_a_panic() {
        let mut bytes = Vec::new();
        encode_item(&sample(), &mut bytes);
        for cut in 0..bytes.len() {
            assert!(
                ItemRef::decode(&bytes[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut bad_utf8 = vec![1, 1, b'a', 0, 1, 0xFF];
        assert!(ItemRef::decode(&bad_utf8).is_err());
        bad_utf8.truncate(3);
        bad_utf8.push(77);
        assert!(ItemRef::decode(&bad_utf8).is_err(), "unknown tag");
    }
}
