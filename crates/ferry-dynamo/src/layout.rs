//! The cloud layout (docs/dynamodb.md): how a change is written as an item of the
//! user's table (its own attributes plus Ferry's hidden ones) and read back.

use aws_sdk_dynamodb::types::AttributeValue;
use ferry_journal::{Change, ChangeOp};
use ferry_schema::Schema;
use ferry_types::{Hlc, Item, ItemLayout, Key, Value, Version};

use crate::attrs::{AttrMap, from_attr, from_attrs, to_attr};
use crate::{Error, Result};

/// The item's version text (`{hlc}-{replica}`).
pub const VER: &str = "_ver";
/// The replica that wrote the row.
pub const SRC: &str = "_src";
/// Which devices see the item.
pub const SCOPE: &str = "_scope";
/// The row's change-feed position: the writer's stamp at the attempt, `{hlc}-{writer}`.
pub const SEQ: &str = "_seq";
/// `true` on a tombstone.
pub const DEL: &str = "_del";
/// When DynamoDB may purge a tombstone (epoch seconds: deleted at + horizon).
pub const TTL: &str = "_ttl";
/// The version the writer had of the item when it wrote this one (absent: none), so that
/// devices tell a write made on top of theirs from a conflicting one.
pub const BASE: &str = "_base";
/// Ferry's attributes other than `_ver` (which devices keep in their items too).
pub const HIDDEN: [&str; 6] = [SRC, SCOPE, SEQ, DEL, TTL, BASE];

/// The sync GSI: hash `_scope`, sort `_seq`, projection ALL.
pub const SYNC_INDEX: &str = "ferry-sync";

/// The key value of the table-settings item (its hash and, if any, its sort value).
pub const SETTINGS_KEY: &str = "_ferry:settings";

/// Where the schema puts things in the table: its item layout (key and type attributes),
/// and Ferry's rows over it.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The attributes of an item's model and primary key.
    pub item: ItemLayout,
}

impl Layout {
    /// The layout of `schema`'s table.
    pub fn new(schema: &Schema) -> Layout {
        Layout {
            item: schema.item_layout(),
        }
    }

    /// `key` as the SDK's key map.
    pub fn key_attrs(&self, key: &Key) -> AttrMap {
        let mut attrs = AttrMap::new();
        attrs.insert(self.item.hash.clone(), to_attr(&key.hash));
        if let (Some(name), Some(value)) = (&self.item.sort, &key.sort) {
            attrs.insert(name.clone(), to_attr(value));
        }
        attrs
    }

    /// The table-settings item's key.
    pub fn settings_key(&self) -> AttrMap {
        self.bookkeeping_key(SETTINGS_KEY)
    }

    /// The key of one of Ferry's own items (`_ferry:...` in the hash and sort attributes).
    pub fn bookkeeping_key(&self, name: &str) -> AttrMap {
        let text = Value::S(name.to_string());
        self.key_attrs(&Key {
            hash: text.clone(),
            sort: self.item.sort.as_ref().map(|_| text),
        })
    }

    /// The primary key of a stored item.
    pub fn key_of(&self, item: &Item) -> Result<Key> {
        let part = |name: &str| {
            item.get(name)
                .cloned()
                .ok_or_else(|| Error::Item(format!("the item has no key attribute {name}")))
        };
        Ok(Key {
            hash: part(&self.item.hash)?,
            sort: self.item.sort.as_deref().map(part).transpose()?,
        })
    }

    /// The row that records `change` at feed position `seq` (its text form), written by
    /// `writer`. A put is the item with `_ver`; a tombstone keeps only the key and the
    /// model, and expires `horizon_ms` after the delete.
    pub fn row(&self, change: &Change, seq: &str, writer: &str, horizon_ms: u64) -> Result<Item> {
        let mut row = match (change.op, &change.item) {
            (ChangeOp::Put, Some(item)) => item.clone(),
            (ChangeOp::Put, None) => {
                return Err(Error::Item(format!(
                    "the put of {} carries no item",
                    change.key
                )));
            }
            (ChangeOp::Delete, _) => {
                let mut row = Item::new();
                row.insert(self.item.hash.clone(), change.key.hash.clone());
                if let (Some(name), Some(value)) = (&self.item.sort, &change.key.sort) {
                    row.insert(name.clone(), value.clone());
                }
                row.insert(self.item.type_field.clone(), Value::S(change.model.clone()));
                row.insert(DEL.into(), Value::Bool(true));
                // From the write, not the delete: a delete queued offline for days still
                // lives a whole horizon in the cloud, as readers' `Expired` assumes.
                let written_ms =
                    seq_stamp(seq).map_or(change.version.hlc, |s| s.max(change.version.hlc));
                let expires_s = (written_ms.physical_ms() + horizon_ms).div_ceil(1000);
                row.insert(TTL.into(), Value::N(expires_s.into()));
                row
            }
        };
        let text = |s: &str| Value::S(s.to_string());
        row.insert(VER.into(), text(&change.version.to_text()));
        row.insert(SRC.into(), text(writer));
        row.insert(SCOPE.into(), text(&change.scope));
        row.insert(SEQ.into(), text(seq));
        if let Some(base) = &change.base {
            row.insert(BASE.into(), text(&base.to_text()));
        }
        Ok(row)
    }

    /// A row read back as the change it records and its feed position. Rows that Ferry did
    /// not write (no `_ver`, `_scope` or `_seq`) are an error naming what is missing.
    pub fn change_of(&self, row: &AttrMap) -> Result<(Hlc, Change)> {
        let text = |name: &str| match row.get(name) {
            Some(AttributeValue::S(s)) => Ok(s.as_str()),
            _ => Err(Error::Item(format!("the row has no text attribute {name}"))),
        };
        let version_text = text(VER)?;
        let version = Version::parse(version_text)
            .map_err(|e| Error::Item(format!("attribute {VER}: {e}")))?;
        let seq = seq_stamp(text(SEQ)?)?;
        let scope = text(SCOPE)?.to_string();
        let model = text(&self.item.type_field)?.to_string();
        let deleted = matches!(row.get(DEL), Some(AttributeValue::Bool(true)));
        let base = match row.get(BASE) {
            Some(AttributeValue::S(text)) => Some(
                Version::parse(text).map_err(|e| Error::Item(format!("attribute {BASE}: {e}")))?,
            ),
            _ => None,
        };
        let item = without_hidden(from_attrs(row)?);
        let key = self.key_of(&item)?;
        let (op, item) = match deleted {
            true => (ChangeOp::Delete, None),
            false => (ChangeOp::Put, Some(item)),
        };
        let change = Change {
            model,
            key,
            op,
            version,
            scope,
            item,
            base,
        };
        Ok((seq, change))
    }

    /// The version a row carries, if it has a readable one.
    pub fn version_of(row: &AttrMap) -> Option<Version> {
        match from_attr(VER, row.get(VER)?).ok()? {
            Value::S(text) => Version::parse(&text).ok(),
            _ => None,
        }
    }
}

/// `item` without Ferry's feed attributes (`_ver` stays: devices keep it in their items).
pub fn without_hidden(mut item: Item) -> Item {
    for name in HIDDEN {
        item.remove(name);
    }
    item
}

/// The stamp part of a `_seq` text (`{hlc}-{writer}`).
pub fn seq_stamp(seq: &str) -> Result<Hlc> {
    let stamp = seq.split_once('-').map_or(seq, |(stamp, _)| stamp);
    Hlc::parse(stamp).map_err(|e| Error::Item(format!("attribute {SEQ} '{seq}': {e}")))
}

/// The smallest `_seq` text after every stamp at or before `hlc`: feed reads ask for
/// `_seq >= seq_floor_after(cursor)`.
pub fn seq_floor_after(hlc: Hlc) -> String {
    Hlc::from_u64(hlc.as_u64().saturating_add(1)).to_text()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::to_attrs;
    use ferry_types::ReplicaId;

    fn layout() -> Layout {
        Layout {
            item: ItemLayout {
                hash: "pk".into(),
                sort: Some("sk".into()),
                type_field: "_type".into(),
            },
        }
    }

    fn change(op: ChangeOp) -> Change {
        let key = Key {
            hash: Value::S("User#1".into()),
            sort: Some(Value::S("User#".into())),
        };
        let item: Item = [
            ("pk", Value::S("User#1".into())),
            ("sk", Value::S("User#".into())),
            ("_type", Value::S("User".into())),
            ("name", Value::S("Ann".into())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Change {
            model: "User".into(),
            key,
            op,
            version: Version {
                hlc: Hlc::new(1_700_000_000_000, 3),
                replica: ReplicaId::parse("dev1").unwrap(),
            },
            scope: "*".into(),
            item: (op == ChangeOp::Put).then_some(item),
            base: None,
        }
    }

    #[test]
    fn a_row_reads_back_as_its_change() {
        let seq = format!("{}-writer", Hlc::new(1_700_000_000_500, 0));
        for op in [ChangeOp::Put, ChangeOp::Delete] {
            let mut change = change(op);
            let row = to_attrs(&layout().row(&change, &seq, "writer", 60_000).unwrap());
            let (stamp, back) = layout().change_of(&row).unwrap();
            assert_eq!(stamp, Hlc::new(1_700_000_000_500, 0));
            if let Some(item) = &mut change.item {
                item.insert(VER.into(), Value::S(change.version.to_text()));
            }
            assert_eq!(back, change);
        }
    }

    #[test]
    fn a_tombstone_expires_a_horizon_after_its_delete() {
        let row = layout()
            .row(&change(ChangeOp::Delete), "x", "w", 60_000)
            .unwrap();
        assert_eq!(row[TTL], Value::int(1_700_000_060));
        assert_eq!(row[DEL], Value::Bool(true));
        assert!(!row.contains_key("name"));
    }

    #[test]
    fn a_delete_queued_offline_lives_a_horizon_from_when_it_reached_the_cloud() {
        let days = 86_400_000;
        let written = Hlc::new(1_700_000_000_000 + 20 * days, 0);
        let seq = format!("{written}-w");
        let row = layout()
            .row(&change(ChangeOp::Delete), &seq, "w", 30 * days)
            .unwrap();
        let expected = (1_700_000_000_000 + 50 * days) / 1000;
        assert_eq!(row[TTL], Value::N(expected.into()));
    }

    #[test]
    fn a_row_ferry_did_not_write_names_what_it_lacks() {
        let mut row = to_attrs(&layout().row(&change(ChangeOp::Put), "x", "w", 1).unwrap());
        row.remove(VER);
        let error = layout().change_of(&row).unwrap_err().to_string();
        assert!(error.contains("_ver"), "{error}");
    }

    #[test]
    fn the_feed_floor_is_past_every_writer_of_the_cursor_stamp() {
        let cursor = Hlc::new(5, 1);
        let same = format!("{cursor}-zzzz");
        let next = format!("{}-a", Hlc::new(5, 2));
        assert!(same < seq_floor_after(cursor));
        assert!(next >= seq_floor_after(cursor));
    }
}
