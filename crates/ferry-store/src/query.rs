//! Key-ordered reads of the primary table or a secondary index.

use std::ops::Bound;

use ferry_types::table::SortCondition;
use ferry_types::{Item, ItemRef, Value, keycode};

use crate::layout::prefix_end;
use crate::store::Store;
use crate::{Error, Result};

/// A key-condition read: one hash value, an optional sort condition, a direction and a
/// resume point.
#[derive(Debug, Clone)]
pub struct Query {
    /// `"primary"` or a secondary index name.
    pub index: String,
    /// The hash key value.
    pub hash: Value,
    /// The sort key condition, if any.
    pub sort: Option<SortCondition>,
    /// Descending sort key order.
    pub reverse: bool,
    /// Resume strictly after this row key (a [`Row::key`] from an earlier read).
    pub after: Option<Vec<u8>>,
}

/// One row of a query: its key and its stored bytes, read in place.
pub struct Row<'s> {
    store: &'s Store,
    key: fjall::Slice,
    value: fjall::Slice,
}

impl Row<'_> {
    /// The row's key in its index: an opaque resume point for [`Query::after`].
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The stored item (projected, for a secondary index), borrowed from the row.
    pub fn view(&self) -> Result<ItemRef<'_>> {
        self.store.view(&self.value, "index entry")
    }

    /// The stored item, owned.
    pub fn item(&self) -> Result<Item> {
        self.store.decode(&self.value, "index entry")
    }
}

impl Store {
    /// Iterates the rows that match a query's key condition, in order. Filtering by model,
    /// attributes and expressions is the caller's.
    pub fn rows(&self, query: &Query) -> Result<impl Iterator<Item = Result<Row<'_>>> + '_> {
        let keyspace = if query.index == "primary" {
            &self.items
        } else {
            self.indexes
                .iter()
                .find(|(index, _)| index.name == query.index)
                .map(|(_, keyspace)| keyspace)
                .ok_or_else(|| Error::Key(format!("unknown index '{}'", query.index)))?
        };
        let (mut lower, mut upper) = key_range(&query.hash, query.sort.as_ref());
        if let Some(after) = &query.after {
            // Resume strictly past the last row returned, in the query's direction.
            if query.reverse {
                upper = tighter(upper, Bound::Excluded(after.clone()), false);
            } else {
                lower = tighter(lower, Bound::Excluded(after.clone()), true);
            }
        }
        let iter = keyspace.range::<Vec<u8>, _>((lower, upper));
        let iter: Box<dyn Iterator<Item = fjall::Guard>> = if query.reverse {
            Box::new(iter.rev())
        } else {
            Box::new(iter)
        };
        Ok(iter.map(move |guard| {
            let (key, value) = guard.into_inner().map_err(|e| self.fail(e))?;
            Ok(Row {
                store: self,
                key,
                value,
            })
        }))
    }
}

/// The key range of a hash value and sort condition. Keys are self-delimiting encodings,
/// so "every key that starts with the encoding of v" is exactly "sort key equals v" (plus,
/// in a secondary index, the primary key suffix).
fn key_range(hash: &Value, sort: Option<&SortCondition>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let mut base = Vec::new();
    keycode::encode(hash, &mut base);
    let with = |v: &Value| {
        let mut k = base.clone();
        keycode::encode(v, &mut k);
        k
    };
    let end_of = |k: Vec<u8>| prefix_end(&k).map_or(Bound::Unbounded, Bound::Excluded);
    let all = (Bound::Included(base.clone()), end_of(base.clone()));
    match sort {
        None => all,
        Some(SortCondition::Eq(v)) => (Bound::Included(with(v)), end_of(with(v))),
        Some(SortCondition::Lt(v)) => (all.0, Bound::Excluded(with(v))),
        Some(SortCondition::Le(v)) => (all.0, end_of(with(v))),
        // Encodings start with a tag below 0xFF, so a key past every `v...` key exists.
        Some(SortCondition::Gt(v)) => (
            prefix_end(&with(v)).map_or(Bound::Unbounded, Bound::Included),
            all.1,
        ),
        Some(SortCondition::Ge(v)) => (Bound::Included(with(v)), all.1),
        Some(SortCondition::Between(a, b)) => (Bound::Included(with(a)), end_of(with(b))),
        Some(SortCondition::BeginsWith(v)) => {
            let prefix = match v {
                Value::B(bytes) => keycode::text_prefix(bytes, true),
                other => {
                    keycode::text_prefix(other.to_text().unwrap_or_default().as_bytes(), false)
                }
            };
            let mut k = base.clone();
            k.extend_from_slice(&prefix);
            (Bound::Included(k.clone()), end_of(k))
        }
    }
}

/// The narrower of two bounds on the same side: `lower` picks the larger key.
fn tighter(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>, lower: bool) -> Bound<Vec<u8>> {
    let key = |x: &Bound<Vec<u8>>| match x {
        Bound::Included(k) | Bound::Excluded(k) => Some(k.clone()),
        Bound::Unbounded => None,
    };
    match (key(&a), key(&b)) {
        (None, _) => b,
        (_, None) => a,
        (Some(ka), Some(kb)) if ka == kb => {
            if matches!(a, Bound::Excluded(_)) {
                a
            } else {
                b
            }
        }
        (Some(ka), Some(kb)) => {
            if (ka > kb) == lower {
                a
            } else {
                b
            }
        }
    }
}
