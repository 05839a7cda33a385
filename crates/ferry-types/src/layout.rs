//! Where a table keeps an item's model and key: the attribute names a schema gives.

use crate::{Item, Key, Value};

/// The attributes that name an item's model and hold its primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemLayout {
    /// The attribute naming the model (OneTable's `typeField`).
    pub type_field: String,
    /// The partition key attribute.
    pub hash: String,
    /// The sort key attribute, if the table has one.
    pub sort: Option<String>,
}

impl ItemLayout {
    /// The model `item` names, if it names one.
    pub fn model_of<'a>(&self, item: &'a Item) -> Option<&'a str> {
        item.get(&self.type_field).and_then(Value::as_str)
    }

    /// Whether `item` holds `key` in its key attributes (nothing copied).
    pub fn holds_key(&self, item: &Item, key: &Key) -> bool {
        let sort = match (&self.sort, &key.sort) {
            (Some(name), Some(sort)) => item.get(name) == Some(sort),
            (None, None) => true,
            _ => false,
        };
        sort && item.get(&self.hash) == Some(&key.hash)
    }

    /// The primary key `item` holds, if it holds one.
    pub fn key_of(&self, item: &Item) -> Option<Key> {
        let hash = item.get(&self.hash)?.clone();
        let sort = match &self.sort {
            Some(name) => Some(item.get(name)?.clone()),
            None => None,
        };
        Some(Key { hash, sort })
    }
}
