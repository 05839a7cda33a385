//! Compact binary encoding of values and items, shared by storage, journal and wire.
//!
//! A value is a tag byte and its payload; lengths and counts are LEB128 varints. The byte
//! layout is documented in `docs/formats.md`. Decoding never panics on bad input.

use std::collections::{BTreeMap, BTreeSet};

use crate::limits::NESTING_DEPTH_MAX;
use crate::view::{ItemRef, ValueRef};
use crate::{Error, Item, Number, Result, Value};

const S: u8 = 0;
const N: u8 = 1;
const B: u8 = 2;
const FALSE: u8 = 3;
const TRUE: u8 = 4;
const NULL: u8 = 5;
const M: u8 = 6;
const L: u8 = 7;
const SS: u8 = 8;
const NS: u8 = 9;
const BS: u8 = 10;

/// Appends the encoding of an item (count, then name and value pairs) to `out`.
pub fn encode_item(item: &Item, out: &mut Vec<u8>) {
    varint(item.len() as u64, out);
    for (name, value) in item {
        bytes(name.as_bytes(), out);
        encode_value(value, out);
    }
}

/// Appends the encoding of one value to `out`.
pub fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::S(s) => tagged(S, s.as_bytes(), out),
        Value::N(n) => tagged(N, n.as_str().as_bytes(), out),
        Value::B(b) => tagged(B, b, out),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Null => out.push(NULL),
        Value::M(map) => {
            out.push(M);
            encode_item(map, out);
        }
        Value::L(list) => {
            out.push(L);
            varint(list.len() as u64, out);
            list.iter().for_each(|v| encode_value(v, out));
        }
        Value::Ss(set) => {
            out.push(SS);
            varint(set.len() as u64, out);
            set.iter().for_each(|s| bytes(s.as_bytes(), out));
        }
        Value::Ns(set) => {
            out.push(NS);
            varint(set.len() as u64, out);
            set.iter().for_each(|n| bytes(n.as_str().as_bytes(), out));
        }
        Value::Bs(set) => {
            out.push(BS);
            varint(set.len() as u64, out);
            set.iter().for_each(|b| bytes(b, out));
        }
    }
}

fn tagged(tag: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    bytes(payload, out);
}

/// Appends `payload` with its length (what [`Reader::bytes`] reads).
pub fn bytes(payload: &[u8], out: &mut Vec<u8>) {
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Appends `n` as an unsigned LEB128 varint.
pub fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads encoded data front to back.
pub struct Reader<'a> {
    bytes: &'a [u8],
    /// Maps and lists open around the value being read.
    depth: usize,
    /// The whole input, when [`Reader::texts_checked_once`] found all of it valid UTF-8.
    whole: Option<&'a str>,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader {
            bytes,
            depth: 0,
            whole: None,
        }
    }

    /// A reader over `bytes` that checks the UTF-8 of all of them in one pass. Most stored
    /// items pass (short texts, no binaries: every length and tag is one ASCII byte), and
    /// their texts are then slices of that text, checked at their two ends rather than
    /// byte by byte, which costs half a read of a small item. An input that does not pass
    /// is read as [`Reader::new`] reads it.
    pub fn texts_checked_once(bytes: &'a [u8]) -> Reader<'a> {
        Reader {
            whole: std::str::from_utf8(bytes).ok(),
            ..Reader::new(bytes)
        }
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    /// Reads one byte.
    #[inline(always)]
    pub fn byte(&mut self) -> Result<u8> {
        let (&b, rest) = self.bytes.split_first().ok_or_else(|| truncated("byte"))?;
        self.bytes = rest;
        Ok(b)
    }

    /// Reads an unsigned LEB128 varint.
    #[inline(always)]
    pub fn varint(&mut self) -> Result<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(Error::Corrupt("varint longer than 10 bytes".into()))
    }

    /// Reads a length-prefixed byte string.
    #[inline(always)]
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = usize::try_from(self.varint()?).map_err(|_| truncated("length"))?;
        if len > self.bytes.len() {
            return Err(truncated("byte string"));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    /// Reads a length-prefixed UTF-8 text.
    pub fn text(&mut self) -> Result<String> {
        self.str_ref().map(str::to_owned)
    }

    /// Reads a length-prefixed UTF-8 text in place.
    #[inline(always)]
    pub fn str_ref(&mut self) -> Result<&'a str> {
        let bytes = self.bytes()?;
        let text = match self.whole {
            // Within valid UTF-8, a range is valid UTF-8 exactly when both its ends fall
            // on character boundaries, which `get` checks.
            Some(whole) => {
                let end = whole.len() - self.bytes.len();
                whole.get(end - bytes.len()..end)
            }
            None => std::str::from_utf8(bytes).ok(),
        };
        text.ok_or_else(|| Error::Corrupt("text is not UTF-8".into()))
    }

    fn number(&mut self) -> Result<Number> {
        Number::parse(&self.text()?)
    }

    /// A number's text read in place: its shape is checked here, cheaply (sign, digits,
    /// point, exponent), so that garbage is an error now; its exact value is parsed where
    /// it is used (`ValueRef::to_value`).
    #[inline]
    fn number_ref(&mut self) -> Result<&'a str> {
        let text = self.str_ref()?;
        // What `Number::parse` takes passes: trimmed, signed, then digits first. A stored
        // number has nothing to trim, so it is tried as it is first.
        let shaped = |text: &str| {
            let digits = (text.strip_prefix(['-', '+'])).unwrap_or(text);
            digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
                && (digits.bytes())
                    .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        };
        match shaped(text) || shaped(text.trim()) {
            true => Ok(text),
            false => Err(Error::NotANumber(text.to_string())),
        }
    }

    /// Reads a count, refusing counts larger than the remaining bytes could hold.
    #[inline(always)]
    pub fn count(&mut self) -> Result<usize> {
        let n = self.varint()?;
        if n > self.bytes.len() as u64 {
            return Err(truncated("collection"));
        }
        Ok(n as usize)
    }

    /// Reads an item.
    pub fn item(&mut self) -> Result<Item> {
        let n = self.count()?;
        let mut item = BTreeMap::new();
        for _ in 0..n {
            let name = self.text()?;
            item.insert(name, self.value()?);
        }
        Ok(item)
    }

    /// Reads one value.
    pub fn value(&mut self) -> Result<Value> {
        Ok(match self.byte()? {
            S => Value::S(self.text()?),
            N => Value::N(self.number()?),
            B => Value::B(self.bytes()?.to_vec()),
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            NULL => Value::Null,
            M => Value::M(self.nested(Reader::item)?),
            L => Value::L(self.nested(|reader| {
                let n = reader.count()?;
                (0..n).map(|_| reader.value()).collect::<Result<_>>()
            })?),
            SS => {
                let n = self.count()?;
                Value::Ss(
                    (0..n)
                        .map(|_| self.text())
                        .collect::<Result<BTreeSet<_>>>()?,
                )
            }
            NS => {
                let n = self.count()?;
                Value::Ns(
                    (0..n)
                        .map(|_| self.number())
                        .collect::<Result<BTreeSet<_>>>()?,
                )
            }
            BS => {
                let n = self.count()?;
                Value::Bs(
                    (0..n)
                        .map(|_| Ok(self.bytes()?.to_vec()))
                        .collect::<Result<BTreeSet<_>>>()?,
                )
            }
            tag => return Err(Error::Corrupt(format!("unknown value tag {tag}"))),
        })
    }
}

impl<'a> Reader<'a> {
    /// Reads an item in place (see [`ItemRef`]).
    pub fn item_ref(&mut self) -> Result<ItemRef<'a>> {
        let n = self.count()?;
        // A count says how many follow, not that they do: reserve for few.
        let mut attrs = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let name = self.str_ref()?;
            attrs.push((name, self.value_ref()?));
        }
        Ok(ItemRef::from_pairs(attrs))
    }

    /// Reads one value in place.
    #[inline]
    pub fn value_ref(&mut self) -> Result<ValueRef<'a>> {
        Ok(match self.byte()? {
            S => ValueRef::S(self.str_ref()?),
            N => ValueRef::N(self.number_ref()?),
            B => ValueRef::B(self.bytes()?),
            FALSE => ValueRef::Bool(false),
            TRUE => ValueRef::Bool(true),
            NULL => ValueRef::Null,
            M => ValueRef::M(self.nested(Reader::item_ref)?),
            L => ValueRef::L(self.nested(|reader| {
                let n = reader.count()?;
                (0..n).map(|_| reader.value_ref()).collect::<Result<_>>()
            })?),
            SS => ValueRef::Ss(self.each(Reader::str_ref)?),
            NS => ValueRef::Ns(self.each(Reader::number_ref)?),
            BS => ValueRef::Bs(self.each(Reader::bytes)?),
            tag => return Err(Error::Corrupt(format!("unknown value tag {tag}"))),
        })
    }

    fn each<T>(&mut self, read: impl Fn(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let n = self.count()?;
        (0..n).map(|_| read(self)).collect()
    }

    /// Reads a map or list one level deeper. The bound keeps a corrupt record (or a hostile
    /// frame) from recursing until the stack overflows: nothing valid nests deeper than
    /// DynamoDB's limit, and the item itself is the first level.
    fn nested<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= NESTING_DEPTH_MAX {
            return Err(Error::Corrupt(format!(
                "values nested deeper than {NESTING_DEPTH_MAX} levels"
            )));
        }
        self.depth += 1;
        let value = read(self);
        self.depth -= 1;
        value
    }
}

fn truncated(what: &str) -> Error {
    Error::Corrupt(format!("truncated {what}"))
}

/// Decodes an item encoded by [`encode_item`], requiring that nothing follows it.
pub fn decode_item(bytes: &[u8]) -> Result<Item> {
    let mut reader = Reader::texts_checked_once(bytes);
    let item = reader.item()?;
    if !reader.rest().is_empty() {
        return Err(Error::Corrupt("trailing bytes after item".into()));
    }
    Ok(item)
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        // Fuzzing on stable (`cargo xtask fuzz` runs these for longer): whatever the bytes,
        // an item decodes, owned or in place, to the same thing or to an error, never a
        // panic; an encoded item with bytes changed, cut or added does too.
        #[test]
        fn fuzz_any_bytes_decode_to_an_item_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            agree(&bytes)?;
        }

        // Texts of any script, their lengths and neighbours damaged with the bytes that
        // keep or break UTF-8: most such inputs stay valid UTF-8 as a whole, where a view
        // checks each text by its two ends only.
        #[test]
        fn fuzz_a_damaged_item_of_texts_decodes_to_an_item_or_an_error(
            pairs in prop::collection::vec((".{0,6}", ".{0,6}"), 1..6),
            edits in prop::collection::vec(
                (any::<prop::sample::Index>(), prop::sample::select(vec![0x01, 0x41, 0x7F, 0x80, 0xA9, 0xBF, 0xC3, 0xE2, 0xF0]), 0..3u8),
                1..4,
            ),
        ) {
            let item: Item = pairs.into_iter().map(|(name, text)| (name, Value::S(text))).collect();
            let mut bytes = Vec::new();
            encode_item(&item, &mut bytes);
            damage(&mut bytes, edits);
            agree(&bytes)?;
        }

        #[test]
        fn fuzz_a_damaged_item_decodes_to_an_item_or_an_error(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8),
        ) {
            let mut bytes = Vec::new();
            encode_item(&every_type(), &mut bytes);
            damage(&mut bytes, edits);
            agree(&bytes)?;
        }
    }

    /// Applies `edits` to `bytes`: each sets a byte, inserts one or cuts the rest.
    fn damage(bytes: &mut Vec<u8>, edits: Vec<(prop::sample::Index, u8, u8)>) {
        for (at, byte, how) in edits {
            let at = at.index(bytes.len() + 1);
            match how {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => bytes.truncate(at),
            }
        }
    }

    /// What decodes owned decodes in place to the same item; the in place view checks a
    /// number's shape only, so a view may hold one whose value does not parse, which it
    /// says when it is used.
    fn agree(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
        let viewed = ItemRef::decode(bytes);
        // Both check the texts of an input that is UTF-8 as a whole at their ends only:
        // a reader that checks each text byte by byte must agree.
        let mut each_text_checked = Reader::new(bytes);
        let checked = (each_text_checked.item()).and_then(|item| {
            let rest = each_text_checked.rest();
            rest.is_empty()
                .then_some(item)
                .ok_or(Error::Corrupt("trailing bytes".into()))
        });
        prop_assert_eq!(checked.ok(), decode_item(bytes).ok());
        if let Ok(owned) = decode_item(bytes) {
            let viewed = viewed.map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(viewed.to_item().ok(), Some(owned));
        } else if let Ok(viewed) = viewed {
            prop_assert!(viewed.to_item().is_err());
            let _ = viewed.to_json();
        }
        Ok(())
    }

    /// An item with a value of every type (shared by the view's tests).
    pub(crate) fn every_type() -> Item {
        let mut item = Item::new();
        item.insert("s".into(), Value::S("hé".into()));
        item.insert("n".into(), Value::N(Number::parse("-1.5e3").unwrap()));
        item.insert("b".into(), Value::B(vec![0, 200]));
        item.insert("t".into(), Value::Bool(true));
        item.insert("z".into(), Value::Null);
        item.insert(
            "l".into(),
            Value::L(vec![Value::Bool(false), Value::M(Item::new())]),
        );
        item.insert(
            "ss".into(),
            Value::Ss(["a".to_string(), "b".to_string()].into()),
        );
        item.insert("ns".into(), Value::Ns([Number::from(1i64)].into()));
        item.insert("bs".into(), Value::Bs([vec![1u8]].into()));
        item
    }

    #[test]
    fn a_text_cut_inside_a_character_is_refused_where_the_whole_record_is_valid_utf8() {
        // Attribute "a" holds the text [0xC3]; the next name's length is the varint
        // [0xA9, 0x00], so the record holds "é" across the two and is valid UTF-8 as a
        // whole, while the text alone is not.
        let mut bytes = vec![2, 1, b'a', S, 1, 0xC3, 0xA9, 0x00];
        std::str::from_utf8(&bytes).unwrap();
        bytes.extend([NULL]);
        assert!(decode_item(&bytes).is_err());
        assert!(matches!(ItemRef::decode(&bytes), Err(Error::Corrupt(m)) if m.contains("UTF-8")));
        // The same bytes with a text that is whole: both readings take it.
        let good = [1, 1, b'a', S, 2, 0xC3, 0xA9];
        assert_eq!(ItemRef::decode(&good).unwrap().text("a"), Some("é"));
        assert_eq!(decode_item(&good).unwrap()["a"], Value::S("é".into()));
    }

    #[test]
    fn round_trip_every_type() {
        let item = every_type();
        let mut bytes = Vec::new();
        encode_item(&item, &mut bytes);
        assert_eq!(decode_item(&bytes).unwrap(), item);
        for cut in 0..bytes.len() {
            assert!(
                decode_item(&bytes[..cut]).is_err(),
                "truncated at {cut} must fail"
            );
        }
    }

    /// An item whose one attribute is `depth` lists nested in each other.
    fn nested_lists(depth: usize) -> Vec<u8> {
        let mut bytes = vec![1, 1, b'a'];
        for _ in 0..depth {
            bytes.extend([L, 1]);
        }
        bytes.push(NULL);
        bytes
    }

    #[test]
    fn nesting_is_bounded_so_a_corrupt_record_cannot_overflow_the_stack() {
        assert!(decode_item(&nested_lists(NESTING_DEPTH_MAX)).is_ok());
        let error = decode_item(&nested_lists(NESTING_DEPTH_MAX + 1)).unwrap_err();
        assert!(error.to_string().contains("nested deeper"), "{error}");
        // Deep enough to overflow any thread's stack if decoding recursed without a bound.
        assert!(decode_item(&nested_lists(1_000_000)).is_err());
    }
}
