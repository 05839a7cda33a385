//! Cloud mode: a cloud service (or an operator) creates, reads, updates, removes and finds
//! items as a replica of its own, with no local store. One layer of OneTable's operations
//! ([`Service`]) over the places rows live ([`Rows`]): any [`Transport`] that reads single
//! rows (Ferry's relay with a service token: [`TransportRows`]), or a DynamoDB table
//! (`ferry_dynamo::DynamoRows`, with conditional writes and index queries).
//!
//! As on a device, the schema prepares every item (keys, templates, defaults, validation,
//! timestamps from the cloud's time) and `crypt` fields are sealed; every write reads the
//! row first, carries it as its base and a version past it, and lands by the cloud's write
//! rule, so devices receive it and log a conflict when a device's write lost. A write that
//! finds a newer row than the one it read fails with `ConditionalCheckFailed`.

mod find;
mod transport;

use std::future::Future;

use ferry_cloud::TransportError;
use ferry_journal::{Change, ChangeOp};
use ferry_schema::{Context, Crypto, KeyQuery, Model, PutMode, Schema, UpdateOps, properties};
use ferry_types::{Item, ItemLayout, ItemRef, Key, Value, Version};
use serde_json::Value as Json;

pub use transport::TransportRows;

/// The attribute holding an item's version text, as devices keep it.
const VERSION_ATTR: &str = "_ver";

/// What went wrong in cloud mode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad argument: an unknown model, a key that cannot be resolved, a missing key.
    #[error("{0}")]
    Argument(String),
    /// The schema refused the operation (validation, an unknown field).
    #[error(transparent)]
    Schema(#[from] ferry_schema::Error),
    /// The data said no: not found, changed meanwhile, or refused by the write rule.
    #[error("{message}")]
    Refused {
        /// `NotFoundError`, `ConditionalCheckFailed` or `Refused`.
        code: &'static str,
        /// What, and which item.
        message: String,
    },
    /// The cloud could not be reached, refused the credentials, or failed the call.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl Error {
    /// The error's code, as a device's operation gives it.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Argument(_) => "ArgumentError",
            Error::Schema(e) => e.code(),
            Error::Refused { code, .. } => code,
            Error::Transport(TransportError::Unauthorized(_)) => "Unauthorized",
            Error::Transport(TransportError::Rejected(_)) => "Refused",
            Error::Transport(_) => "TransportError",
        }
    }

    /// The data said no: `code` (`NotFoundError`, `ConditionalCheckFailed`, `Refused`).
    pub fn refused(code: &'static str, message: String) -> Error {
        Error::Refused { code, message }
    }
}

/// Results of cloud mode.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A row as cloud mode needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The row's version; `None` for a row Ferry did not write.
    pub version: Option<Version>,
    /// The model the row holds, when it says.
    pub model: Option<String>,
    /// The scope the row is in, when it records one.
    pub scope: Option<String>,
    /// The item, hidden attributes aside; `None` for a tombstone.
    pub item: Option<Item>,
}

/// How a cloud `find` reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloudFind<'a> {
    /// A secondary index (else the primary key).
    pub index: Option<&'a str>,
    /// Most items to return.
    pub limit: Option<usize>,
    /// The cursor a previous page gave.
    pub next: Option<&'a str>,
    /// Descending sort key order.
    pub reverse: bool,
}

/// A page of a cloud `find`.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The items, as a device's `find` returns them.
    pub items: Vec<Json>,
    /// The cursor of the next page, if there is one.
    pub next: Option<String>,
}

/// Where cloud mode's rows live: how one is read, how a write lands over it, and how a
/// `find` reads. Every operation's meaning is [`Service`]'s.
pub trait Rows: Send + Sync {
    /// A row as read, which the write after the read lands over.
    type Row: Send + Sync;
    /// What the place's calls fail with; cloud mode's own refusals become it.
    type Error: From<Error> + From<ferry_schema::Error> + Send;

    /// The row of `key`, a tombstone included, read strongly.
    fn read(
        &self,
        key: &Key,
    ) -> impl Future<Output = Result<Option<Self::Row>, Self::Error>> + Send;

    /// What cloud mode needs to know of `row`.
    fn seen(&self, row: &Self::Row) -> Result<Seen, Self::Error>;

    /// Lands `change` over `seen`, the row as read, by the cloud's write rule; a newer row
    /// than the change's version fails with `ConditionalCheckFailed`.
    fn write(
        &self,
        change: Change,
        seen: Option<&Self::Row>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A version of this service at the cloud's time, past `over`.
    fn version_past(&self, over: Option<&Version>) -> Result<Version, Self::Error>;

    /// The cloud's time now (epoch ms): the stamps of what the service writes.
    fn now_ms(&self) -> u64;

    /// The stored items (hidden attributes aside) of `model` that `query` selects, in
    /// the index's sort key order, and the cursor of the next page.
    fn find(
        &self,
        schema: &Schema,
        model: &Model,
        query: &KeyQuery,
        options: &CloudFind<'_>,
    ) -> impl Future<Output = Result<(Vec<Item>, Option<String>), Self::Error>> + Send;
}

/// A cloud service's OneTable operations over `R`.
pub struct Service<R> {
    rows: R,
    schema: std::sync::Arc<Schema>,
    /// Where the schema's items keep their key.
    layout: ItemLayout,
    crypto: Option<Crypto>,
    context: Context,
}

impl<R: Rows> Service<R> {
    /// Cloud mode for `schema` over `rows`; a schema with crypt fields needs `crypto`.
    pub fn new(
        rows: R,
        schema: std::sync::Arc<Schema>,
        crypto: Option<Crypto>,
    ) -> Result<Service<R>, R::Error> {
        schema.require_crypto(crypto.as_ref())?;
        Ok(Service {
            rows,
            layout: schema.item_layout(),
            schema,
            crypto,
            context: Context::new(),
        })
    }

    /// Creates an item; fails with `ConditionalCheckFailed` if it exists.
    pub async fn create(&self, model: &str, props: &Json) -> Result<Json, R::Error> {
        let model = self.schema.model(model)?;
        let now = self.rows.now_ms() as i64;
        let (props, mode) = (properties(props)?, PutMode::Create);
        let item = model.prepare_put(&self.schema, props, &self.context, now, mode)?;
        let key = self.key_of(&item)?;
        let read = self.read(&key).await?;
        if read.as_ref().is_some_and(|(_, seen)| seen.item.is_some()) {
            let message = format!("{} {key} already exists", model.name);
            return Err(Error::refused("ConditionalCheckFailed", message).into());
        }
        self.store(model, &key, item, read.as_ref()).await
    }

    /// Reads an item by its key; `None` when it is absent or removed.
    pub async fn get(
        &self,
        model: &str,
        props: &Json,
        hidden: bool,
    ) -> Result<Option<Json>, R::Error> {
        let model = self.schema.model(model)?;
        let key = model.full_key(&self.schema, properties(props)?, &self.context)?;
        let read = self.read(&key).await?;
        let item = live(model, read.as_ref())?;
        Ok(item.map(|item| self.shape(model, item, hidden)))
    }

    /// Updates an item (creates it with `upsert`); fails with `NotFoundError` if it is
    /// absent, or `ConditionalCheckFailed` if it changed meanwhile.
    pub async fn update(
        &self,
        model: &str,
        props: &Json,
        ops: &UpdateOps,
        upsert: bool,
    ) -> Result<Json, R::Error> {
        let model = self.schema.model(model)?;
        let props = properties(props)?;
        let key = model.full_key(&self.schema, props, &self.context)?;
        let read = self.read(&key).await?;
        let existing = live(model, read.as_ref())?.cloned();
        if existing.is_none() && !upsert {
            let message = format!("{} {key} does not exist", model.name);
            return Err(Error::refused("NotFoundError", message).into());
        }
        let existing = existing.map(|item| model.open_owned(item, self.crypto.as_ref()));
        let now = self.rows.now_ms() as i64;
        let item = model.prepare_update(
            &self.schema,
            existing.as_ref(),
            props,
            ops,
            &self.context,
            now,
        )?;
        model.same_key(&key, &self.key_of(&item)?)?;
        self.store(model, &key, item, read.as_ref()).await
    }

    /// Removes an item (a tombstone takes its place, so devices remove it too); returns it.
    pub async fn remove(&self, model: &str, props: &Json) -> Result<Option<Json>, R::Error> {
        let model = self.schema.model(model)?;
        let key = model.full_key(&self.schema, properties(props)?, &self.context)?;
        let read = self.read(&key).await?;
        let Some(removed) = live(model, read.as_ref())?.map(|item| self.shape(model, item, false))
        else {
            return Ok(None);
        };
        self.write(model, &key, None, read.as_ref()).await?;
        Ok(Some(removed))
    }

    /// Finds items by key condition (on the primary key or `options.index`) and equality
    /// filters, as a device's `find` does; `next` continues a previous page where the rows
    /// page (DynamoDB), `reverse` reads the sort key descending.
    pub async fn find(
        &self,
        model: &str,
        props: &Json,
        options: &CloudFind<'_>,
    ) -> Result<Found, R::Error> {
        let model = self.schema.model(model)?;
        let props = properties(props)?;
        let query = model.key_query(&self.schema, props, &self.context, options.index)?;
        let (items, next) = self.rows.find(&self.schema, model, &query, options).await?;
        let items = (items.iter())
            .map(|item| self.shape(model, item, false))
            .collect();
        Ok(Found { items, next })
    }

    fn key_of(&self, item: &Item) -> Result<Key> {
        self.layout.key_of(item).ok_or_else(|| {
            Error::Argument(format!(
                "the item has no {} key attributes",
                self.layout.hash
            ))
        })
    }

    /// The row of `key` as read, with what cloud mode knows of it.
    async fn read(&self, key: &Key) -> Result<Option<(R::Row, Seen)>, R::Error> {
        let Some(row) = self.rows.read(key).await? else {
            return Ok(None);
        };
        let seen = self.rows.seen(&row)?;
        Ok(Some((row, seen)))
    }

    /// Seals `item`'s crypt fields and writes it over `row`; returns it as a device shows it.
    async fn store(
        &self,
        model: &Model,
        key: &Key,
        mut item: Item,
        read: Option<&(R::Row, Seen)>,
    ) -> Result<Json, R::Error> {
        (model.seal(&mut item, self.crypto.as_ref())).map_err(Error::Argument)?;
        self.write(model, key, Some(&item), read).await?;
        Ok(self.shape(model, &item, false))
    }

    /// Writes `item` (or, for `None`, a tombstone where the item was) over the row as
    /// `read`: its base, with a version past it.
    async fn write(
        &self,
        model: &Model,
        key: &Key,
        item: Option<&Item>,
        read: Option<&(R::Row, Seen)>,
    ) -> Result<(), R::Error> {
        let (row, seen) = (read.map(|(row, _)| row), read.map(|(_, seen)| seen));
        let base = seen.and_then(|seen| seen.version.clone());
        let version = self.rows.version_past(base.as_ref())?;
        let scope_of = |item: &Item| model.scope_of(item, &self.context).map_err(Error::Argument);
        let (op, scope, item) = match item {
            Some(item) => {
                let mut view = model.cloud_view(item);
                view.insert(VERSION_ATTR.into(), Value::S(version.to_text()));
                (ChangeOp::Put, scope_of(item)?, Some(view))
            }
            // The tombstone goes where the item was: the devices that have it read there.
            None => {
                let scope = match (
                    seen.and_then(|s| s.scope.clone()),
                    seen.and_then(|s| s.item.as_ref()),
                ) {
                    (Some(scope), _) => scope,
                    (None, Some(old)) => scope_of(old)?,
                    (None, None) => String::new(),
                };
                (ChangeOp::Delete, scope, None)
            }
        };
        let change = Change {
            model: model.name.clone(),
            key: key.clone(),
            op,
            version,
            scope,
            item,
            base,
        };
        self.rows.write(change, row).await
    }

    fn shape(&self, model: &Model, item: &Item, hidden: bool) -> Json {
        let item = model.open(item, self.crypto.as_ref());
        Json::Object(model.to_json(&ItemRef::of(&item), hidden))
    }
}

/// The item of the row as `read`, of `model`, unless it is a tombstone.
fn live<'r, Row>(
    model: &Model,
    read: Option<&'r (Row, Seen)>,
) -> ferry_schema::Result<Option<&'r Item>> {
    let Some((_, seen)) = read else {
        return Ok(None);
    };
    let Some(item) = &seen.item else {
        return Ok(None);
    };
    model.check_kind(seen.model.as_deref())?;
    Ok(Some(item))
}

#[cfg(test)]
mod tests;
