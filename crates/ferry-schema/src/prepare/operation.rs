//! The checks every OneTable operation makes the same way wherever it runs: on a device
//! (`ferry-db`) and in cloud mode (`ferry-service`, over the relay or DynamoDB). One place,
//! so that the same mistake reads the same everywhere.

use ferry_types::Key;
use serde_json::Value as Json;

use crate::{Context, Crypto, Error, Model, Result, Schema};

use super::Props;

/// An operation's properties: a JSON object.
pub fn properties(props: &Json) -> Result<&Props> {
    props
        .as_object()
        .ok_or_else(|| Error::Argument(format!("properties must be a JSON object, not {props}")))
}

impl Schema {
    /// Refuses a schema with crypt fields when no key was given, naming the field.
    pub fn require_crypto(&self, crypto: Option<&Crypto>) -> Result<()> {
        match (crypto, self.crypt_field()) {
            (None, Some(field)) => Err(Error::Argument(format!(
                "{field} is a crypt field but no crypto key was given (OneTable's crypto: \
                 {{primary: {{cipher: 'aes-256-gcm', password: ...}}}})"
            ))),
            _ => Ok(()),
        }
    }
}

impl Model {
    /// The full primary key `props` (with `ctx`) name, as get, update and remove need it.
    pub fn full_key(&self, schema: &Schema, props: &Props, ctx: &Context) -> Result<Key> {
        let query = self.key_query(schema, props, ctx, None)?;
        query.full_key().ok_or_else(|| {
            let primary = schema.primary();
            let sort = primary.sort.as_deref().map(|s| format!(", {s}"));
            Error::Argument(format!(
                "{}: this operation needs the full primary key ({}{}); give the properties its \
                 templates use",
                self.name,
                primary.hash,
                sort.unwrap_or_default()
            ))
        })
    }

    /// Refuses an update whose item has another key than the one it was asked for.
    pub fn same_key(&self, asked: &Key, updated: &Key) -> Result<()> {
        match asked == updated {
            true => Ok(()),
            false => Err(Error::Argument(format!(
                "{}: update cannot change the primary key",
                self.name
            ))),
        }
    }

    /// Refuses an item of another model (`kind`, `None` when it names none) found at a
    /// key of this one.
    pub fn check_kind(&self, kind: Option<&str>) -> Result<()> {
        match kind {
            Some(name) if name == self.name => Ok(()),
            other => Err(Error::Argument(format!(
                "the item at that key is a {}, not a {}",
                other.unwrap_or("row of no model"),
                self.name
            ))),
        }
    }
}
