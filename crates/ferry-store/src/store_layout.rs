//! What the store needs to know of what it stores, and nothing of OneTable: the table's
//! indexes, the attribute naming an item's kind, and per kind its expiry attribute,
//! whether it lives in memory only, and its unique claims. `ferry-db` derives one from a
//! OneTable schema; the relay's embedded store writes its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_types::Item;
use ferry_types::table::{Index, IndexKind};

/// The unique claims of an item: (field, claim text) pairs; two items may not hold one
/// claim text.
pub type Claims = Arc<dyn Fn(&Item) -> Vec<(String, String)> + Send + Sync>;

/// The layout a store keeps its items by.
#[derive(Clone)]
pub struct StoreLayout {
    /// The table's primary key.
    pub primary: Index,
    /// Its secondary indexes.
    pub indexes: Vec<Index>,
    /// The attribute naming an item's kind (OneTable's `typeField`).
    pub type_field: String,
    /// Per kind of item (the value of `type_field`), what the store does for it; items of
    /// kinds not listed are kept as they are.
    pub kinds: BTreeMap<String, Kind>,
    /// A document kept with the store and handed back at the next open (the schema).
    pub document: Vec<u8>,
}

/// What the store does for the items of one kind.
#[derive(Clone, Default)]
pub struct Kind {
    /// The attribute holding the epoch second the item expires at, if the kind has one.
    pub ttl: Option<String>,
    /// The kind lives in memory only: its items are gone after a restart.
    pub memory: bool,
    /// Its unique claims, if it has unique fields.
    pub claims: Option<Claims>,
}

impl StoreLayout {
    /// The kind of `item`, if the layout knows it.
    pub(crate) fn kind_of(&self, item: &Item) -> Option<&Kind> {
        let name = item.get(&self.type_field)?.as_str()?;
        self.kinds.get(name)
    }

    /// Whether the layout can be kept: the primary index is one, the others secondary.
    pub(crate) fn check(&self) -> Result<(), String> {
        let secondary = |i: &Index| i.kind != IndexKind::Primary && i.name != self.primary.name;
        match self.primary.kind == IndexKind::Primary && self.indexes.iter().all(secondary) {
            true => Ok(()),
            false => Err("a store layout has one primary index and secondary ones".into()),
        }
    }
}
