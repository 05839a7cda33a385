//! Writes: create, put, update, remove and condition checks, alone or in a transaction.

use std::sync::Arc;

use ferry_schema::expr::{self, Condition};
use ferry_schema::{Model, PutMode, SyncDirection, UpdateOps};
use ferry_store::{Durability, Tx};
use ferry_types::limits::TRANSACTION_ITEMS_MAX;
use ferry_types::{Item, Key};
use serde_json::{Map, Value as Json};

use crate::{Db, Error, FindOptions, Result};

/// Options of a single write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `Some(true)`: the item must exist; `Some(false)`: it must not; `None`: the
    /// operation's own rule (update needs the item unless upserting, remove does not).
    pub exists: Option<bool>,
    /// A `where` expression the existing item must satisfy.
    pub condition: Option<String>,
    /// Values for `@{name}` in `condition` and in `ops.set`.
    pub subs: Map<String, Json>,
    /// Update operations: `set`, `add`, `remove`, `delete`, `push`.
    pub ops: UpdateOps,
    /// Update: create the item if it does not exist.
    pub upsert: bool,
    /// Fsync before returning, whatever the database's default.
    pub durability: Option<Durability>,
    /// Return hidden fields too.
    pub hidden: bool,
}

/// One write of a transaction.
#[derive(Debug, Clone)]
pub enum Write {
    /// Create an item that must not exist.
    Create {
        /// The model.
        model: String,
        /// The item's properties.
        props: Json,
    },
    /// Create or replace an item.
    Put {
        /// The model.
        model: String,
        /// The item's properties.
        props: Json,
    },
    /// Update an existing item (or upsert).
    Update {
        /// The model.
        model: String,
        /// The key and the properties to change.
        props: Json,
        /// Conditions and update operations.
        options: WriteOptions,
    },
    /// Remove an item.
    Remove {
        /// The model.
        model: String,
        /// The item's key.
        props: Json,
        /// Conditions.
        options: WriteOptions,
    },
    /// Check a condition without writing.
    Check {
        /// The model.
        model: String,
        /// The item's key.
        props: Json,
        /// The condition (`exists`, `condition`).
        options: WriteOptions,
    },
}

impl Write {
    fn model(&self) -> &str {
        match self {
            Write::Create { model, .. }
            | Write::Put { model, .. }
            | Write::Update { model, .. }
            | Write::Remove { model, .. }
            | Write::Check { model, .. } => model,
        }
    }

    fn options(&self) -> Option<&WriteOptions> {
        match self {
            Write::Update { options, .. }
            | Write::Remove { options, .. }
            | Write::Check { options, .. } => Some(options),
            _ => None,
        }
    }
}

impl Db {
    /// Creates an item; fails with `ConditionalCheckFailed` if it exists. Returns the item.
    pub fn create(&self, model: &str, props: Json) -> Result<Json> {
        let write = Write::Create {
            model: model.into(),
            props,
        };
        self.write_one(write, false)
            .map(|item| item.unwrap_or(Json::Null))
    }

    /// Creates or replaces an item. Returns the item.
    pub fn put(&self, model: &str, props: Json) -> Result<Json> {
        let write = Write::Put {
            model: model.into(),
            props,
        };
        self.write_one(write, false)
            .map(|item| item.unwrap_or(Json::Null))
    }

    /// Merges `props` and `options.ops` into an existing item (or creates it with
    /// `options.upsert`). Returns the updated item.
    pub fn update(&self, model: &str, props: Json, options: &WriteOptions) -> Result<Json> {
        let hidden = options.hidden;
        let write = Write::Update {
            model: model.into(),
            props,
            options: options.clone(),
        };
        self.write_one(write, hidden)
            .map(|item| item.unwrap_or(Json::Null))
    }

    /// [`Db::update`] that creates the item when it does not exist.
    pub fn upsert(&self, model: &str, props: Json, options: &WriteOptions) -> Result<Json> {
        let options = WriteOptions {
            upsert: true,
            ..options.clone()
        };
        self.update(model, props, &options)
    }

    /// Removes an item by its full key. Returns the removed item, if there was one.
    pub fn remove(&self, model: &str, props: Json, options: &WriteOptions) -> Result<Option<Json>> {
        let hidden = options.hidden;
        self.write_one(
            Write::Remove {
                model: model.into(),
                props,
                options: options.clone(),
            },
            hidden,
        )
    }

    /// Removes every item a find matches (all pages). Returns how many were removed.
    pub fn remove_many(&self, model: &str, props: Json, options: &FindOptions) -> Result<usize> {
        let model_name = model;
        let model = self.model(model_name)?;
        writable(model)?;
        let found = self.find_keys(model_name, &props, options)?;
        let durability = self.durability(model, None);
        let mut removed = 0;
        for chunk in found.chunks(TRANSACTION_ITEMS_MAX) {
            let now = self.now_ms();
            let (count, changes) = self.inner.store.write(durability, |tx| {
                let mut count = 0;
                for key in chunk {
                    count += usize::from(self.delete_in(tx, model, key, now)?.is_some());
                }
                Ok::<_, Error>(count)
            })?;
            self.committed(&changes);
            removed += count;
        }
        Ok(removed)
    }

    /// Applies writes atomically: all of them or none. On failure the error is
    /// `TransactionCanceled` with the index of the failing write. Returns each write's
    /// resulting item (the removed item for a remove, nothing for a check).
    pub fn transaction(&self, writes: &[Write]) -> Result<Vec<Option<Json>>> {
        if writes.len() > TRANSACTION_ITEMS_MAX {
            return Err(Error::Argument(format!(
                "a transaction holds at most {TRANSACTION_ITEMS_MAX} writes; this one has {}",
                writes.len()
            )));
        }
        let mut durability = self.inner.config.durability;
        for write in writes {
            let model = self.model(write.model())?;
            durability = durability.max(self.durability(model, write.options()));
        }
        let now = self.now_ms();
        let (items, changes) = self.inner.store.write(durability, |tx| {
            let mut items = Vec::with_capacity(writes.len());
            for (index, write) in writes.iter().enumerate() {
                let item =
                    self.apply(tx, write, now)
                        .map_err(|reason| Error::TransactionCanceled {
                            index,
                            reason: Box::new(reason),
                        })?;
                items.push(item);
            }
            Ok::<_, Error>(items)
        })?;
        self.committed(&changes);
        Ok(writes
            .iter()
            .zip(items)
            .map(|(write, item)| {
                let model = self.schema().model(write.model()).ok()?;
                let hidden = write.options().is_some_and(|o| o.hidden);
                item.map(|i| self.to_json(model, &i, hidden))
            })
            .collect())
    }

    /// A batch is a transaction: locally, every batch commits atomically.
    pub fn batch(&self, writes: &[Write]) -> Result<Vec<Option<Json>>> {
        self.transaction(writes)
    }

    fn write_one(&self, write: Write, hidden: bool) -> Result<Option<Json>> {
        let model = self.model(write.model())?;
        let durability = self.durability(model, write.options());
        let now = self.now_ms();
        let (item, changes) = self
            .inner
            .store
            .write(durability, |tx| self.apply(tx, &write, now))?;
        self.committed(&changes);
        Ok(item.map(|i| self.to_json(model, &i, hidden)))
    }

    fn durability(&self, model: &Model, options: Option<&WriteOptions>) -> Durability {
        let by_model = model.control.durability.unwrap_or_default();
        let by_call = options.and_then(|o| o.durability).unwrap_or_default();
        self.inner.config.durability.max(by_model).max(by_call)
    }

    /// Applies one write inside a transaction; returns the resulting (or removed) item.
    fn apply(&self, tx: &mut Tx<'_>, write: &Write, now: i64) -> Result<Option<Arc<Item>>> {
        let model = self.model(write.model())?;
        if !matches!(write, Write::Check { .. }) {
            writable(model)?;
        }
        let schema = self.schema();
        let ctx = self.context();
        match write {
            Write::Create { props, .. } | Write::Put { props, .. } => {
                let create = matches!(write, Write::Create { .. });
                let mode = if create {
                    PutMode::Create
                } else {
                    PutMode::Put
                };
                let mut item = model.prepare_put(schema, object(props)?, ctx, now, mode)?;
                crate::crypt::seal(model, &mut item, self.crypto())?;
                let key = self.inner.store.key_of(&item)?;
                if create && self.live(tx, &key, now)?.is_some() {
                    return Err(refused(model, &key, "already exists"));
                }
                Ok(Some(self.put_in(tx, model, &key, item, now)?))
            }
            Write::Update { props, options, .. } => {
                let props = object(props)?;
                let key = self.full_key(model, props)?;
                let existing = self.live(tx, &key, now)?;
                if existing.is_none() && !options.upsert && options.exists != Some(false) {
                    return Err(Error::NotFound {
                        model: model.name.clone(),
                        key: key.to_string(),
                    });
                }
                self.check(model, &key, existing.as_deref(), options)?;
                let mut ops = options.ops.clone();
                ops.subs.extend(options.subs.clone());
                let crypto = self.crypto();
                let existing = existing.as_deref().map(|e| model.open(e, crypto));
                let mut item =
                    model.prepare_update(schema, existing.as_deref(), props, &ops, ctx, now)?;
                crate::crypt::seal(model, &mut item, crypto)?;
                model.same_key(&key, &self.inner.store.key_of(&item)?)?;
                Ok(Some(self.put_in(tx, model, &key, item, now)?))
            }
            Write::Remove { props, options, .. } => {
                let key = self.full_key(model, object(props)?)?;
                let existing = self.live(tx, &key, now)?;
                self.check(model, &key, existing.as_deref(), options)?;
                match existing {
                    Some(_) => self.delete_in(tx, model, &key, now),
                    None => Ok(None),
                }
            }
            Write::Check { props, options, .. } => {
                let key = self.full_key(model, object(props)?)?;
                let existing = self.live(tx, &key, now)?;
                let options = WriteOptions {
                    exists: options.exists.or(Some(true)),
                    ..options.clone()
                };
                self.check(model, &key, existing.as_deref(), &options)?;
                Ok(None)
            }
        }
    }

    /// The item under `key` if it exists and has not expired.
    fn live(&self, tx: &Tx<'_>, key: &Key, now: i64) -> Result<Option<Arc<Item>>> {
        Ok(tx.get(key)?.filter(|item| !self.expired(item, now)))
    }

    pub(crate) fn full_key(&self, model: &Model, props: &Map<String, Json>) -> Result<Key> {
        Ok(model.full_key(self.schema(), props, self.context())?)
    }

    /// Checks `exists` and `condition` against the existing item.
    fn check(
        &self,
        model: &Model,
        key: &Key,
        existing: Option<&Item>,
        options: &WriteOptions,
    ) -> Result<()> {
        match (options.exists, existing) {
            (Some(true), None) => return Err(refused(model, key, "does not exist (exists: true)")),
            (Some(false), Some(_)) => {
                return Err(refused(model, key, "already exists (exists: false)"));
            }
            _ => {}
        }
        let Some(text) = &options.condition else {
            return Ok(());
        };
        let condition = parse_condition(model, text)?;
        let holds = match existing {
            Some(item) => condition.eval(item, &options.subs)?,
            None => false,
        };
        if !holds {
            return Err(refused(model, key, &format!("condition is false: {text}")));
        }
        Ok(())
    }
}

/// Parses a `where` expression and maps its property names to attribute names.
pub(crate) fn parse_condition(model: &Model, text: &str) -> Result<Condition> {
    let mut condition = expr::parse_condition(text)?;
    condition.rename(&model.rename_expr());
    Ok(condition)
}

pub(crate) fn object(props: &Json) -> Result<&Map<String, Json>> {
    Ok(ferry_schema::properties(props)?)
}

/// Refuses local writes of a model the cloud owns.
fn writable(model: &Model) -> Result<()> {
    if model.control.sync == SyncDirection::Down {
        return Err(Error::Control {
            model: model.name.clone(),
            reason: "the cloud owns this model (control sync: 'down'); devices cannot write it"
                .into(),
        });
    }
    Ok(())
}

fn refused(model: &Model, key: &Key, reason: &str) -> Error {
    Error::ConditionalCheckFailed {
        model: model.name.clone(),
        key: key.to_string(),
        reason: reason.to_string(),
    }
}
