//! Reads: get and find, with filters, pagination, projection and follow.

use ferry_schema::{KeyQuery, Model, Projection, Reading};
use ferry_store::Query;
use ferry_types::{ItemRef, Key, ValueRef};
use serde_json::{Map, Value as Json};

use crate::write::{object, parse_condition};
use crate::{Db, Error, Result};

/// Version byte of a pagination cursor.
const CURSOR_V1: u8 = 1;
/// Page slots reserved before a scan; a larger limit grows the page as items come.
const PAGE_ITEMS_RESERVED: usize = 100;

/// Options of a find.
#[derive(Debug, Clone, Default)]
pub struct FindOptions {
    /// A secondary index to query instead of the primary key.
    pub index: Option<String>,
    /// Most items to return.
    pub limit: Option<usize>,
    /// Resume after the page that returned this cursor.
    pub next: Option<String>,
    /// Descending sort key order.
    pub reverse: bool,
    /// A `where` expression items must satisfy.
    pub condition: Option<String>,
    /// Values for `@{name}` in `condition`.
    pub subs: Map<String, Json>,
    /// Return only these properties.
    pub fields: Option<Vec<String>>,
    /// Count the matches instead of returning them.
    pub count: bool,
    /// For an index that projects only some attributes, read each full item.
    pub follow: bool,
    /// Return hidden fields too.
    pub hidden: bool,
}

/// One page of a find: JSON items, or a typed model's items.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T = Json> {
    /// The items (empty when counting).
    pub items: Vec<T>,
    /// A cursor for the next page; `None` when there are no more matches.
    pub next: Option<String>,
    /// How many matched (with `count`), else the number of items returned.
    pub count: usize,
}

impl Db {
    /// Reads one item. Needs the full primary key after templates; with less (or on an
    /// index) it is a find that must match at most one item (`NonUniqueError` otherwise).
    pub fn get(&self, model: &str, props: Json) -> Result<Option<Json>> {
        self.get_with(model, props, &FindOptions::default())
    }

    /// [`Db::get`] with options (`index`, `hidden`, `fields`, `follow`).
    pub fn get_with(
        &self,
        model_name: &str,
        props: Json,
        options: &FindOptions,
    ) -> Result<Option<Json>> {
        self.get_as(model_name, &props, options, &json_of)
    }

    /// [`Db::get_with`], the item as JSON text (what `serde_json::to_string` of the
    /// `Value` gives), written from the stored bytes without building a
    /// `serde_json::Value`: for callers that hand the text on (a CLI, a socket).
    pub fn get_text(
        &self,
        model_name: &str,
        props: Json,
        options: &FindOptions,
    ) -> Result<Option<String>> {
        self.get_as(model_name, &props, options, &text_of)
    }

    /// [`Db::get_with`], each item handed back by `shape`.
    pub(crate) fn get_as<R>(
        &self,
        model_name: &str,
        props: &Json,
        options: &FindOptions,
        shape: Shape<'_, R>,
    ) -> Result<Option<R>> {
        let (model, query) = self.key_query(model_name, props, options)?;
        // With the full primary key a get is a point read; other properties (the inputs
        // of the key templates, typically) are not filters, as in OneTable.
        if let Some(key) = query.full_key() {
            let now = self.now_ms();
            let Some(record) = self.inner.store.record(&key)? else {
                return Ok(None);
            };
            let item = record.view()?;
            if !model.owns(self.schema(), &item) || ttl_passed(model, &item, now) {
                return Ok(None);
            }
            return self.shape(model, &item, options, false, shape).map(Some);
        }
        let options = FindOptions {
            limit: Some(2),
            next: None,
            count: false,
            ..options.clone()
        };
        let page = self.find_query(model, &query, &options, shape)?;
        match page.items.len() {
            0 | 1 => Ok(page.items.into_iter().next()),
            count => Err(Error::NonUnique {
                model: model.name.clone(),
                count,
            }),
        }
    }

    /// Finds the items of `model` whose key matches `props` (hash key equality, a sort-key
    /// condition or template prefix), other given properties and `options.condition`.
    pub fn find(&self, model_name: &str, props: Json, options: &FindOptions) -> Result<Page> {
        self.find_as(model_name, &props, options, &json_of)
    }

    /// [`Db::find`], each item as JSON text (see [`Db::get_text`]).
    pub fn find_text(
        &self,
        model_name: &str,
        props: Json,
        options: &FindOptions,
    ) -> Result<Page<String>> {
        self.find_as(model_name, &props, options, &text_of)
    }

    /// [`Db::find`], each item handed back by `shape`.
    pub(crate) fn find_as<R>(
        &self,
        model_name: &str,
        props: &Json,
        options: &FindOptions,
        shape: Shape<'_, R>,
    ) -> Result<Page<R>> {
        let (model, query) = self.key_query(model_name, props, options)?;
        self.find_query(model, &query, options, shape)
    }

    /// The model and the resolved key condition of a get or find.
    fn key_query(
        &self,
        model_name: &str,
        props: &Json,
        options: &FindOptions,
    ) -> Result<(&Model, KeyQuery)> {
        let model = self.model(model_name)?;
        let index = options.index.as_deref();
        let query = model.key_query(self.schema(), object(props)?, self.context(), index)?;
        Ok((model, query))
    }

    /// The primary keys of every match of a find (all pages).
    pub(crate) fn find_keys(
        &self,
        model_name: &str,
        props: &Json,
        options: &FindOptions,
    ) -> Result<Vec<Key>> {
        let (model, query) = self.key_query(model_name, props, options)?;
        let mut keys = Vec::new();
        self.scan_rows(model, &query, options, |_, item| {
            keys.push(self.inner.store.key_of_view(item)?);
            Ok(true)
        })?;
        Ok(keys)
    }

    fn find_query<R>(
        &self,
        model: &Model,
        query: &KeyQuery,
        options: &FindOptions,
        shape: Shape<'_, R>,
    ) -> Result<Page<R>> {
        let limit = options.limit.unwrap_or(usize::MAX);
        let projected = query.index != "primary"
            && !options.follow
            && self.schema().index(&query.index)?.project != Projection::All;
        let reserved = if options.count {
            0
        } else {
            limit.min(PAGE_ITEMS_RESERVED)
        };
        let mut items = Vec::with_capacity(reserved);
        let mut count = 0;
        let mut last_key = Vec::new();
        let mut more = false;
        self.scan_rows(model, query, options, |row_key, item| {
            if count == limit {
                // One more match exists: the page has a next.
                more = true;
                return Ok(false);
            }
            count += 1;
            if !options.count {
                items.push(self.shape(model, item, options, projected, shape)?);
            }
            last_key.clear();
            last_key.extend_from_slice(row_key);
            Ok(true)
        })?;
        // A zero limit matches nothing to resume after.
        let next = (more && count > 0).then(|| encode_cursor(&last_key));
        Ok(Page { items, next, count })
    }

    /// Calls `f` with each matching item (full or projected) in order, until it returns
    /// false. Items are read in place from the stored bytes.
    fn scan_rows(
        &self,
        model: &Model,
        query: &KeyQuery,
        options: &FindOptions,
        mut f: impl FnMut(&[u8], &ItemRef<'_>) -> Result<bool>,
    ) -> Result<()> {
        let condition = options
            .condition
            .as_deref()
            .map(|text| parse_condition(model, text))
            .transpose()?;
        // A condition is evaluated on a copy of only the attributes it reads.
        let read = condition
            .as_ref()
            .map(|c| c.attributes())
            .unwrap_or_default();
        let store_query = Query {
            index: query.index.clone(),
            hash: query.hash.clone(),
            sort: query.sort.clone(),
            reverse: options.reverse,
            after: options.next.as_deref().map(decode_cursor).transpose()?,
        };
        let now = self.now_ms();
        let follow = options.follow && query.index != "primary";
        for row in self.inner.store.rows(&store_query)? {
            let row = row?;
            let entry = row.view()?;
            if !model.owns(self.schema(), &entry) {
                continue;
            }
            let full;
            let item = if follow {
                let key = self.inner.store.key_of_view(&entry)?;
                full = self.inner.store.record(&key)?;
                match &full {
                    Some(record) => &record.view()?,
                    None => continue,
                }
            } else {
                &entry
            };
            if ttl_passed(model, item, now)
                || !query
                    .filters
                    .iter()
                    .all(|(path, v)| filter_value(item, path).is_some_and(|found| found == v))
            {
                continue;
            }
            if let Some(condition) = &condition
                && !condition.eval(
                    &self
                        .inner
                        .store
                        .owned_of(item, read.iter().map(String::as_str))?,
                    &options.subs,
                )?
            {
                continue;
            }
            if !f(row.key(), item)? {
                break;
            }
        }
        Ok(())
    }

    /// An item for the caller, by `shape`, with hidden fields and the `fields` projection
    /// applied. `projected`: the item holds only an index's projected attributes (no
    /// defaults for the others).
    fn shape<R>(
        &self,
        model: &Model,
        item: &ItemRef<'_>,
        options: &FindOptions,
        projected: bool,
        shape: Shape<'_, R>,
    ) -> Result<R> {
        let reading = Reading {
            hidden: options.hidden,
            projected,
            fields: options.fields.as_deref(),
        };
        match self.crypto() {
            Some(crypto) if model.has_crypt() => {
                let opened = model.open_owned(self.inner.store.owned(item)?, Some(crypto));
                shape(model, &ItemRef::of(&opened), reading)
            }
            _ => shape(model, item, reading),
        }
    }
}

/// How a read hands back an item read in place: as JSON ([`json_of`]) or a caller's type.
pub(crate) type Shape<'s, R> = &'s dyn Fn(&Model, &ItemRef<'_>, Reading<'_>) -> Result<R>;

/// An item as the JSON API returns it.
fn json_of(model: &Model, item: &ItemRef<'_>, reading: Reading<'_>) -> Result<Json> {
    let mut json = if reading.projected {
        model.to_json_projected(item, reading.hidden)
    } else {
        model.to_json(item, reading.hidden)
    };
    if let Some(fields) = reading.fields {
        json.retain(|name, _| fields.iter().any(|f| f == name));
    }
    Ok(Json::Object(json))
}

/// An item as JSON text: [`json_of`]'s, serialized, written from the item in place.
fn text_of(model: &Model, item: &ItemRef<'_>, reading: Reading<'_>) -> Result<String> {
    let mut text = Vec::with_capacity(256);
    model.write_json(item, reading, &mut text);
    String::from_utf8(text).map_err(|e| Error::System {
        what: "writing an item's JSON".into(),
        source: std::io::Error::other(e),
    })
}

/// Has the TTL of `model`'s item passed at `now_ms`?
fn ttl_passed(model: &Model, item: &ItemRef<'_>, now_ms: i64) -> bool {
    let seconds = model
        .ttl_attr()
        .and_then(|attr| item.get(attr))
        .and_then(ValueRef::as_i64);
    crate::db::ttl_due(seconds, now_ms)
}

/// The value a filter compares: an attribute, or a packed property's `attr.sub` in a map.
fn filter_value<'i, 'a>(item: &'i ItemRef<'a>, path: &str) -> Option<&'i ValueRef<'a>> {
    if let Some(value) = item.get(path) {
        return Some(value);
    }
    let (attr, sub) = path.split_once('.')?;
    match item.get(attr)? {
        ValueRef::M(map) => map.get(sub),
        _ => None,
    }
}

fn encode_cursor(key: &[u8]) -> String {
    let mut out = format!("{CURSOR_V1:02x}");
    for byte in key {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

fn decode_cursor(text: &str) -> Result<Vec<u8>> {
    let bad = || {
        Error::Argument(format!(
            "'{text}' is not a cursor from an earlier find's next"
        ))
    };
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad())?;
    match bytes.split_first() {
        Some((&CURSOR_V1, key)) => Ok(key.to_vec()),
        _ => Err(bad()),
    }
}
