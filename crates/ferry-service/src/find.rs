//! `find` in cloud mode: the snapshot of each scope the model's items can be in, filtered by
//! the key condition and the equality filters a device's `find` takes, sorted by the
//! index's sort key. A transport has no queries, so this reads whole scopes: it suits
//! configuration and small scopes, and stops past [`FIND_ROWS_MAX`] rows read.
//!
//! A snapshot pages by feed position, so a row written during the read shows up again on a
//! later page: each key keeps its latest change (a delete removes it), and a page that does
//! not move forward is an error, never a loop.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use ferry_cloud::{PullFrom, Transport};
use ferry_journal::ChangeOp;
use ferry_schema::{Context, Index, KeyQuery, Model, Schema, SortCondition};
use ferry_types::{Hlc, Item, Key, Value, keycode};

use crate::{CloudFind, Error, Result, TransportRows};

/// The most rows one `find` reads: past it, the scopes are too large to read whole.
pub(crate) const FIND_ROWS_MAX: usize = 100_000;

impl<T: Transport> TransportRows<T> {
    /// The items of `model` that `query` selects, at most `limit`, by the index's sort key
    /// (descending with `reverse`). It reads the model's scope when its scope template
    /// names no item property (`'*'`, a context property), else every scope the service is
    /// granted.
    pub(crate) async fn find_in_snapshots(
        &self,
        schema: &Schema,
        model: &Model,
        query: &KeyQuery,
        options: &CloudFind<'_>,
    ) -> Result<Vec<Item>> {
        if options.next.is_some() {
            let why = "a find through the relay reads whole scopes: it has no --next pages";
            return Err(Error::Argument(why.into()));
        }
        // A service has no context properties.
        let context = Context::new();
        let index = schema.index(&query.index)?;
        let scopes: Vec<String> = match (model.device_scope(&context), &self.session.scopes) {
            (Some(scope), _) => vec![scope],
            (None, Some(granted)) => granted.iter().cloned().collect(),
            (None, None) => {
                return Err(Error::Argument(format!(
                    "{}: its scope depends on the item and this service is granted every scope: \
                     give the service token the scopes to read",
                    model.name
                )));
            }
        };
        // Per key, its latest change read: a later page has the newer one.
        let mut latest: BTreeMap<Key, Option<Item>> = BTreeMap::new();
        let page_max = self.session.limits.page_changes_max;
        let mut read = 0;
        for scope in scopes {
            let mut after = Hlc::ZERO;
            loop {
                let from = PullFrom::Snapshot(after);
                let page = self.transport.pull(&scope, from, page_max).await?;
                read += page.changes.len();
                if read > FIND_ROWS_MAX {
                    return Err(Error::Argument(format!(
                        "{}: the scopes hold over {FIND_ROWS_MAX} rows, too many to read whole",
                        model.name
                    )));
                }
                for (_, change) in page.changes.iter().filter(|(_, c)| c.model == model.name) {
                    let item = match (&change.op, &change.item) {
                        (ChangeOp::Put, Some(item)) => Some(item.clone()),
                        _ => None,
                    };
                    latest.insert(change.key.clone(), item);
                }
                match (page.more, page.changes.last()) {
                    (true, Some((seq, _))) if *seq > after => after = *seq,
                    (true, _) => {
                        return Err(Error::Transport(ferry_cloud::TransportError::Unavailable(
                            "the cloud's snapshot did not move forward".into(),
                        )));
                    }
                    (false, _) => break,
                }
            }
        }
        let mut found: Vec<(Vec<u8>, Item)> = (latest.into_values().flatten())
            .filter(|item| matches(item, index, query))
            .map(|item| (sort_bytes(&item, index), item))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        if options.reverse {
            found.reverse();
        }
        found.truncate(options.limit.unwrap_or(usize::MAX));
        Ok(found.into_iter().map(|(_, item)| item).collect())
    }
}

/// Whether `item` is in `index` under the query's key condition and has its filters.
fn matches(item: &Item, index: &Index, query: &KeyQuery) -> bool {
    if item.get(&index.hash) != Some(&query.hash) {
        return false;
    }
    let sort = index.sort.as_ref().and_then(|attr| item.get(attr));
    let sorted = match (&query.sort, sort) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(condition), Some(value)) => satisfies(value, condition),
    };
    sorted && (query.filters.iter()).all(|(path, wanted)| at_path(item, path) == Some(wanted))
}

/// Whether a sort key value meets `condition`, in DynamoDB's key order.
fn satisfies(value: &Value, condition: &SortCondition) -> bool {
    let order = |other: &Value| compare(value, other);
    match condition {
        SortCondition::Eq(v) => value == v,
        SortCondition::Lt(v) => order(v) == Some(Ordering::Less),
        SortCondition::Le(v) => matches!(order(v), Some(Ordering::Less | Ordering::Equal)),
        SortCondition::Gt(v) => order(v) == Some(Ordering::Greater),
        SortCondition::Ge(v) => matches!(order(v), Some(Ordering::Greater | Ordering::Equal)),
        SortCondition::Between(low, high) => {
            matches!(order(low), Some(Ordering::Greater | Ordering::Equal))
                && matches!(order(high), Some(Ordering::Less | Ordering::Equal))
        }
        SortCondition::BeginsWith(prefix) => match (value, prefix) {
            (Value::S(s), Value::S(p)) => s.starts_with(p.as_str()),
            (Value::B(b), Value::B(p)) => b.starts_with(p),
            _ => false,
        },
    }
}

/// Key order between two values of one type (none between types).
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    if std::mem::discriminant(a) != std::mem::discriminant(b) {
        return None;
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    keycode::encode(a, &mut x);
    keycode::encode(b, &mut y);
    Some(x.cmp(&y))
}

/// The value at a dotted attribute path (`data.sub`).
fn at_path<'a>(item: &'a Item, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut value = item.get(parts.next()?)?;
    for part in parts {
        match value {
            Value::M(map) => value = map.get(part)?,
            _ => return None,
        }
    }
    Some(value)
}

/// The item's sort key in the index, as ordered bytes (empty without one).
fn sort_bytes(item: &Item, index: &Index) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(value) = index.sort.as_ref().and_then(|attr| item.get(attr)) {
        keycode::encode(value, &mut bytes);
    }
    bytes
}
