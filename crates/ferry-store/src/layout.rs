//! How items, index entries, expiries and unique claims are laid out as fjall keys and
//! values. Byte layouts are documented in `docs/formats.md`.

use std::borrow::Cow;

use ferry_types::table::{Index, Projection};
use ferry_types::{Item, ItemRef, Key, Value, codec, keycode};

/// Leading byte of every stored item and index entry: the encoding's version.
pub const FORMAT_ITEM_V1: u8 = 1;

pub use ferry_types::keycode::key_bytes;

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
pub fn project<'i>(
    index: &Index,
    primary: &Index,
    type_field: &str,
    item: &'i Item,
) -> Cow<'i, Item> {
    let names: Vec<&str> = match &index.project {
        Projection::All => return Cow::Borrowed(item),
        Projection::Keys => Vec::new(),
        Projection::Attrs(attrs) => attrs.iter().map(String::as_str).collect(),
    };
    let keys = [
        Some(&index.hash),
        index.sort.as_ref(),
        Some(&primary.hash),
        primary.sort.as_ref(),
    ];
    Cow::Owned(
        item.iter()
            .filter(|(name, _)| {
                let name = name.as_str();
                name == type_field
                    || names.contains(&name)
                    || keys.iter().flatten().any(|k| k.as_str() == name)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// What a write does to one secondary index: the entry to remove, the entry to write.
#[derive(Debug, PartialEq)]
pub struct IndexChange {
    pub remove: Option<Vec<u8>>,
    pub put: Option<(Vec<u8>, Vec<u8>)>,
}

/// The index writes that take an item at primary key bytes `key` from `old` to `new`: the
/// old entry goes when its key changes, and the new one is written only when its key or
/// its projected attributes changed (an update of an attribute the index does not hold
/// leaves the index alone).
pub fn index_change(
    index: &Index,
    primary: &Index,
    type_field: &str,
    key: &[u8],
    old: Option<&Item>,
    new: Option<&Item>,
) -> IndexChange {
    let old_entry = old.and_then(|i| index_entry_key(index, i, key));
    let new_entry = new.and_then(|i| index_entry_key(index, i, key));
    let remove = old_entry.clone().filter(|_| old_entry != new_entry);
    let put = match (new_entry, new) {
        (Some(entry), Some(item)) => {
            let projected = project(index, primary, type_field, item);
            let unchanged = old_entry.as_ref() == Some(&entry)
                && old.is_some_and(|o| project(index, primary, type_field, o) == projected);
            (!unchanged).then(|| (entry, encode_item(&projected)))
        }
        _ => None,
    };
    IndexChange { remove, put }
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

    fn index(project: Projection) -> Index {
        Index {
            name: "gs1".into(),
            hash: "gs1pk".into(),
            sort: Some("gs1sk".into()),
            kind: ferry_types::table::IndexKind::Global,
            project,
        }
    }

    fn primary() -> Index {
        Index {
            name: "primary".into(),
            hash: "pk".into(),
            sort: None,
            kind: ferry_types::table::IndexKind::Primary,
            project: Projection::All,
        }
    }

    fn reading(gs1sk: &str, value: &str) -> Item {
        [
            ("pk", "r1"),
            ("gs1pk", "kind"),
            ("gs1sk", gs1sk),
            ("value", value),
            ("_type", "R"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::S(v.to_string())))
        .collect()
    }

    #[test]
    fn only_changed_index_entries_are_written() {
        let (old, new) = (reading("a", "1"), reading("a", "2"));
        let change = |project, old: &Item, new: &Item| {
            index_change(
                &index(project),
                &primary(),
                "_type",
                b"r1",
                Some(old),
                Some(new),
            )
        };
        let keys_only = change(Projection::Keys, &old, &new);
        assert_eq!(
            keys_only,
            IndexChange {
                remove: None,
                put: None
            },
            "value is not in it"
        );
        let all = change(Projection::All, &old, &new);
        assert!(
            all.remove.is_none() && all.put.is_some(),
            "value is in it: {all:?}"
        );
        assert_eq!(
            change(Projection::All, &old, &old),
            IndexChange {
                remove: None,
                put: None
            }
        );
        let moved = change(Projection::Keys, &old, &reading("b", "1"));
        assert!(
            moved.remove.is_some() && moved.put.is_some(),
            "a new key: {moved:?}"
        );
        let gone = index_change(
            &index(Projection::Keys),
            &primary(),
            "_type",
            b"r1",
            Some(&old),
            None,
        );
        assert!(gone.remove.is_some() && gone.put.is_none());
    }

    #[test]
    fn prefix_end_skips_every_extension() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }
}
