//! create / put: user properties to the complete item to store.

use ferry_types::limits::{
    HASH_KEY_BYTES_MAX, ITEM_BYTES_MAX, NESTING_DEPTH_MAX, SORT_KEY_BYTES_MAX,
};
use ferry_types::size::{item_size, nesting_depth, value_size};
use ferry_types::{Item, Value};

use super::shape::{fill_new, shape_fields};
use super::{Context, Props, PutMode};
use crate::{Field, FieldError, Model, Result, Schema};

impl Model {
    /// create / put: user props (+ context) -> the complete item to store, by attribute name:
    /// type field set, defaults, generate, value templates (dependency order), timestamps,
    /// coercion, map/encode packing, nested schemas, validation (required, enum, validate,
    /// types, unknown property). Every failing field is reported in one Validation error.
    /// Both modes prepare the same item; whether one may exist is the storage's check.
    pub fn prepare_put(
        &self,
        schema: &Schema,
        props: &Props,
        ctx: &Context,
        now_ms: i64,
        _mode: PutMode,
    ) -> Result<Item> {
        let mut errors = Vec::new();
        let mut merged = self.accept(props, ctx, &mut errors);
        self.fill_context(schema, &mut merged, ctx);
        fill_new(&self.fields, &mut merged, now_ms);
        self.stamp(schema, &mut merged, props, now_ms, true);
        self.run_templates(&mut merged, ctx);
        let values = shape_fields(&self.fields, &merged, "", true, &mut errors);
        let item = pack(values);
        self.check_limits(schema, &item, &mut errors);
        self.finish(item, errors)
    }

    /// DynamoDB's limits on key sizes, item size and nesting depth.
    pub(super) fn check_limits(&self, schema: &Schema, item: &Item, errors: &mut Vec<FieldError>) {
        for index in schema.indexes() {
            let keys = [
                (Some(&index.hash), HASH_KEY_BYTES_MAX, "hash"),
                (index.sort.as_ref(), SORT_KEY_BYTES_MAX, "sort"),
            ];
            for (attr, max, kind) in keys {
                let Some(value) = attr.and_then(|attr| item.get(attr)) else {
                    continue;
                };
                let size = value_size(value);
                let reason = if size > max {
                    format!(
                        "{size} bytes is over DynamoDB's {max}-byte limit for the {kind} key of index {}",
                        index.name
                    )
                } else if size == 0 && matches!(value, Value::S(_) | Value::B(_)) {
                    format!("the {kind} key of index {} cannot be empty", index.name)
                } else {
                    continue;
                };
                let field = self.name_of_attr(attr.map_or("", String::as_str));
                if !errors.iter().any(|e| e.field == field) {
                    errors.push(FieldError { field, reason });
                }
            }
        }
        for (attr, value) in item {
            if nesting_depth(value) > NESTING_DEPTH_MAX {
                errors.push(FieldError {
                    field: self.name_of_attr(attr),
                    reason: format!(
                        "nested deeper than DynamoDB's {NESTING_DEPTH_MAX} levels: flatten it"
                    ),
                });
            }
        }
        let size = item_size(item);
        if size > ITEM_BYTES_MAX {
            let largest = item
                .iter()
                .max_by_key(|(name, value)| name.len() + value_size(value));
            errors.push(FieldError {
                field: largest.map_or_else(String::new, |(attr, _)| self.name_of_attr(attr)),
                reason: format!("the item is {size} bytes, over DynamoDB's {ITEM_BYTES_MAX}-byte limit; this is its largest attribute"),
            });
        }
    }
}

/// Places stored values under their attributes: packed fields into their map attribute;
/// encoded fields are not stored (they live inside another attribute).
pub(super) fn pack(values: Vec<(&Field, Value)>) -> Item {
    let mut item = Item::new();
    for (field, value) in values {
        if field.encode.is_some() {
            continue;
        }
        match &field.sub {
            Some(sub) => {
                let map = item
                    .entry(field.attr.clone())
                    .or_insert_with(|| Value::M(Item::new()));
                if let Value::M(map) = map {
                    map.insert(sub.clone(), value);
                }
            }
            None => {
                item.insert(field.attr.clone(), value);
            }
        }
    }
    item
}
