//! Typed access: a model read and written as a serde type.

use std::marker::PhantomData;

use ferry_schema::Reading;
use ferry_types::ItemRef;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Db, Error, FindOptions, Result, WriteOptions};

/// A model whose items are the serde type `T`. Obtained from [`Db::typed`].
pub struct TypedModel<T> {
    db: Db,
    name: String,
    _item: PhantomData<fn() -> T>,
}

impl Db {
    /// Typed access to a model.
    pub fn typed<T: Serialize + DeserializeOwned>(&self, model: &str) -> Result<TypedModel<T>> {
        self.model(model)?;
        Ok(TypedModel {
            db: self.clone(),
            name: model.to_string(),
            _item: PhantomData,
        })
    }
}

impl<T: Serialize + DeserializeOwned> TypedModel<T> {
    /// Creates an item; returns it as stored (with generated and default values).
    pub fn create(&self, item: &T) -> Result<T> {
        from_json(self.db.create(&self.name, to_json(item)?)?)
    }

    /// Creates or replaces an item.
    pub fn put(&self, item: &T) -> Result<T> {
        from_json(self.db.put(&self.name, to_json(item)?)?)
    }

    /// Reads an item by key (any serializable value with the key properties). The item
    /// is deserialized from its stored bytes, with no JSON between.
    pub fn get(&self, key: &impl Serialize) -> Result<Option<T>> {
        self.get_with(key, &FindOptions::default())
    }

    /// [`TypedModel::get`] with options (`index`, `hidden`, `fields`, `follow`).
    pub fn get_with(&self, key: &impl Serialize, options: &FindOptions) -> Result<Option<T>> {
        self.db
            .get_as(&self.name, &to_json(key)?, options, &deserialize)
    }

    /// Finds items, deserialized from their stored bytes; returns them and the next-page
    /// cursor.
    pub fn find(
        &self,
        props: &impl Serialize,
        options: &FindOptions,
    ) -> Result<(Vec<T>, Option<String>)> {
        let page = self
            .db
            .find_as(&self.name, &to_json(props)?, options, &deserialize)?;
        Ok((page.items, page.next))
    }

    /// Updates an item with the given properties.
    pub fn update(&self, props: &impl Serialize, options: &WriteOptions) -> Result<T> {
        from_json(self.db.update(&self.name, to_json(props)?, options)?)
    }

    /// Removes an item; returns it if it existed.
    pub fn remove(&self, key: &impl Serialize) -> Result<Option<T>> {
        self.db
            .remove(&self.name, to_json(key)?, &WriteOptions::default())?
            .map(from_json)
            .transpose()
    }
}

fn to_json(value: &impl Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(value)
        .map_err(|e| Error::Argument(format!("cannot serialize the item: {e}")))
}

fn from_json<T: DeserializeOwned>(json: serde_json::Value) -> Result<T> {
    serde_json::from_value(json).map_err(|e| misfit(&e))
}

fn deserialize<T: DeserializeOwned>(
    model: &ferry_schema::Model,
    item: &ItemRef<'_>,
    reading: Reading<'_>,
) -> Result<T> {
    model.deserialize(item, reading).map_err(|e| misfit(&e))
}

fn misfit(error: &dyn std::fmt::Display) -> Error {
    Error::Argument(format!("the stored item does not fit the type: {error}"))
}
