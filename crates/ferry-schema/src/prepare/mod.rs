//! Turning user JSON into stored items and back: put, update, key queries and reads.

mod deserialize;
mod operation;
mod put;
mod query;
mod read;
mod shape;
mod update;

use ferry_types::{Item, Key};
use serde_json::{Map, Value as Json};

use crate::template::Rendered;
use crate::{Error, FieldError, Model, Result, Schema};

pub use deserialize::Reading;
pub use operation::properties;
pub use query::{KeyQuery, SortCondition};

/// Properties set once on the database and injected into every operation (`deviceId`, ...).
pub type Context = Map<String, Json>;

/// User properties by property name.
type Props = Map<String, Json>;

/// How a put treats an existing item (the storage's concern: both prepare the same item).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Fails if the item exists.
    Create,
    /// Replaces an existing item (upsert).
    Put,
}

/// The operations of an update besides the merged properties.
#[derive(Debug, Clone, Default)]
pub struct UpdateOps {
    /// Field -> expression text (`'${balance} + {10}'`); a non-text value is set as is.
    pub set: Map<String, Json>,
    /// Field -> number to add, or values to union into a set.
    pub add: Map<String, Json>,
    /// Fields to remove.
    pub remove: Vec<String>,
    /// Field -> values to remove from a set.
    pub delete: Map<String, Json>,
    /// Field -> values to append to a list.
    pub push: Map<String, Json>,
    /// `@{name}` substitutions for `set`.
    pub subs: Map<String, Json>,
}

impl UpdateOps {
    /// No operation besides the merged properties (substitutions alone change nothing).
    fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.add.is_empty()
            && self.remove.is_empty()
            && self.delete.is_empty()
            && self.push.is_empty()
    }
}

impl Model {
    /// Keeps the given properties that are fields; a name that is neither a field nor a
    /// context name is an "unknown property" error.
    fn accept(&self, given: &Props, ctx: &Context, errors: &mut Vec<FieldError>) -> Props {
        // Room for the templates, context and defaults still to come: growing in steps
        // reallocates it each write.
        let mut props = Props::with_capacity(self.fields.len());
        for (name, value) in given {
            if self.field(name).is_some() {
                props.insert(name.clone(), value.clone());
            } else if !ctx.contains_key(name) {
                errors.push(FieldError {
                    field: name.clone(),
                    reason: format!("unknown property: {} has no field '{name}'; add it to the schema or leave it out", self.name),
                });
            }
        }
        props
    }

    /// Context values fill absent fields; the type field always names the model.
    fn fill_context(&self, schema: &Schema, props: &mut Props, ctx: &Context) {
        for (name, value) in ctx {
            if self.field(name).is_some() && !props.contains_key(name) {
                props.insert(name.clone(), value.clone());
            }
        }
        props.insert(
            schema.params().type_field.clone(),
            Json::String(self.name.clone()),
        );
    }

    /// Sets the timestamps the schema keeps, unless the caller gave them (imports and
    /// replays keep their own: a change is never re-stamped).
    fn stamp(&self, schema: &Schema, props: &mut Props, given: &Props, now_ms: i64, create: bool) {
        let params = schema.params();
        let stamps = [
            (create && params.timestamps.created, &params.created_field),
            (params.timestamps.updated, &params.updated_field),
        ];
        for (_, name) in stamps.into_iter().filter(|(on, _)| *on) {
            if !given.contains_key(name.as_str()) {
                props.insert(name.clone(), Json::from(now_ms));
            }
        }
    }

    /// Computes value templates in dependency order; an unresolved one leaves the field as is.
    fn run_templates(&self, props: &mut Props, ctx: &Context) {
        for &i in &self.template_order {
            let field = &self.fields[i];
            let Some(template) = &field.template else {
                continue;
            };
            if let Rendered::Full(text) = template.render(&|path| lookup(props, ctx, path)) {
                props.insert(field.name.clone(), Json::String(text));
            }
        }
    }

    /// The property name users know an attribute by (for error messages).
    fn name_of_attr(&self, attr: &str) -> String {
        self.fields
            .iter()
            .find(|f| f.attr == attr)
            .map_or_else(|| attr.to_string(), |f| f.name.clone())
    }

    /// The primary key of a stored item, if it has one.
    fn key_of(&self, schema: &Schema, item: &Item) -> Option<Key> {
        let primary = schema.primary();
        let hash = item.get(&primary.hash)?.clone();
        let sort = match &primary.sort {
            Some(sort) => Some(item.get(sort)?.clone()),
            None => None,
        };
        Some(Key { hash, sort })
    }

    fn finish(&self, item: Item, errors: Vec<FieldError>) -> Result<Item> {
        if errors.is_empty() {
            Ok(item)
        } else {
            Err(Error::Validation {
                model: self.name.clone(),
                errors,
            })
        }
    }
}

/// A template variable's text: a dotted path into the properties, then the context.
fn lookup(props: &Props, ctx: &Context, path: &str) -> Option<String> {
    lookup_in(|name| props.get(name).or_else(|| ctx.get(name)), path)
}

/// A template variable's text: a dotted path whose first name `top` resolves.
fn lookup_in<'a>(top: impl Fn(&str) -> Option<&'a Json>, path: &str) -> Option<String> {
    let mut parts = path.split('.');
    let mut value = top(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    match value {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A JSON value's text for keys and messages: texts unquoted, the rest as JSON.
fn json_text(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}
