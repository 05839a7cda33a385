//! How items, index entries, expiries and unique claims are laid out as fjall keys and
//! values. Byte layouts are documented in `docs/formats.md`.

use ferry_schema::{Index, Projection};
use ferry_types::{Item, ItemRef, Key, Value, codec, keycode};

/// Leading byte of every stored item and index entry: the encoding's version.
pub const FORMAT_ITEM_V1: u8 = 1;

/// The bytes of a primary key: the encoded hash value, then the encoded sort value.
pub fn key_bytes(key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    keycode::encode(&key.hash, &mut out);
    if let Some(sort) = &key.sort {
        keycode::encode(sort, &mut out);
    }
    out
}

/// The primary key of `item` under `primary`, checking that key attributes are S, N or B.
pub fn item_key(primary: &Index, item: &Item) -> Result<Key, String> {
    let hash = key_value(item, &primary.hash)?;
    let sort = match &primary.sort {
        Some(name) => Some(key_value(item, name)?),
        None => None,
    };
    Ok(Key { hash, sort })
}

fn key_value(item: &Item, name: &str) -> Result<Value, String> {
    match item.get(name) {
        Some(v @ (Value::S(_) | Value::N(_) | Value::B(_))) => Ok(v.clone()),
        Some(other) => Err(format!(
            "key attribute '{name}' is {}: keys must be text, number or binary",
            other.type_name()
        )),
        None => Err(format!("key attribute '{name}' is missing")),
    }
}

/// Decodes primary key bytes back into a key.
pub fn decode_key(bytes: &[u8], has_sort: bool) -> Result<Key, String> {
    let (hash, rest) = keycode::decode(bytes).map_err(|e| e.to_string())?;
    let (sort, rest) = if has_sort {
        let (sort, rest) = keycode::decode(rest).map_err(|e| e.to_string())?;
        (Some(sort), rest)
    } else {
        (None, rest)
    };
    if !rest.is_empty() {
        return Err("trailing bytes after primary key".into());
    }
    Ok(Key { hash, sort })
}

/// The key of `item`'s entry in a secondary index: index hash, index sort, then the
/// primary key bytes (which make entries with equal index keys distinct). `None` when the
/// item lacks an index key attribute (DynamoDB's sparse indexes) or has one of a non-key type.
pub fn index_entry_key(index: &Index, item: &Item, primary_key: &[u8]) -> Option<Vec<u8>> {
    let is_key = |v: &Value| matches!(v, Value::S(_) | Value::N(_) | Value::B(_));
    let hash = item.get(&index.hash).filter(|v| is_key(v))?;
    let mut out = Vec::with_capacity(primary_key.len() + 32);
    keycode::encode(hash, &mut out);
    if let Some(sort_name) = &index.sort {
        let sort = item.get(sort_name).filter(|v| is_key(v))?;
        keycode::encode(sort, &mut out);
    }
    out.extend_from_slice(primary_key);
    Some(out)
}

/// The attributes of `item` an index stores: all, or the keys (index and primary) and the
/// type field plus any listed attributes. The type field is always kept so that results
/// can be told apart by model.
pub fn project(index: &Index, primary: &Index, type_field: &str, item: &Item) -> Item {
    let names: Vec<&str> = match &index.project {
        Projection::All => return item.clone(),
        Projection::Keys => Vec::new(),
        Projection::Attrs(attrs) => attrs.iter().map(String::as_str).collect(),
    };
    let keys = [
        Some(&index.hash),
        index.sort.as_ref(),
        Some(&primary.hash),
        primary.sort.as_ref(),
    ];
    item.iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            name == type_field
                || names.contains(&name)
                || keys.iter().flatten().any(|k| k.as_str() == name)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A stored item or index entry: the format byte, then the item encoding.
pub fn encode_item(item: &Item) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(FORMAT_ITEM_V1);
    codec::encode_item(item, &mut out);
    out
}

/// Decodes [`encode_item`]'s bytes.
pub fn decode_item(bytes: &[u8]) -> Result<Item, String> {
    codec::decode_item(item_payload(bytes)?).map_err(|e| e.to_string())
}

/// A borrowed view of [`encode_item`]'s bytes.
pub fn view_item(bytes: &[u8]) -> Result<ItemRef<'_>, String> {
    ItemRef::decode(item_payload(bytes)?).map_err(|e| e.to_string())
}

/// The item encoding inside a stored record, past its format byte.
fn item_payload(bytes: &[u8]) -> Result<&[u8], String> {
    match bytes.split_first() {
        Some((&FORMAT_ITEM_V1, rest)) => Ok(rest),
        Some((v, _)) => Err(format!(
            "unknown item format version {v}: written by a newer Ferry?"
        )),
        None => Err("empty item record".into()),
    }
}

/// The expiry record key: big-endian epoch seconds, then the primary key bytes.
pub fn expiry_key(seconds: u64, primary_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + primary_key.len());
    out.extend_from_slice(&seconds.to_be_bytes());
    out.extend_from_slice(primary_key);
    out
}

/// The first key after every key that starts with `prefix` (`None`: no such key).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_skips_every_extension() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }
}
