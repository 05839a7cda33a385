//! update: merging properties and operations into an existing item.

use ferry_types::{Item, Number, Value};
use serde_json::Value as Json;

use super::put::pack;
use super::shape::{fill_new, shape_fields};
use super::{Context, Props, UpdateOps};
use crate::coerce::coerce;
use crate::expr::parse_expr;
use crate::{Error, Field, FieldError, FieldType, Model, Result, Schema};

impl Model {
    /// update: merges props and ops into `existing` (None = upsert of a new item, which then
    /// behaves like create with defaults). Keys cannot change (Argument error if a given key differs).
    /// `null` removes a field (unless nulls). `updated` is refreshed; templates are recomputed when
    /// all their inputs are present.
    pub fn prepare_update(
        &self,
        schema: &Schema,
        existing: Option<&Item>,
        props: &Props,
        ops: &UpdateOps,
        ctx: &Context,
        now_ms: i64,
    ) -> Result<Item> {
        let mut errors = Vec::new();
        let none = Item::new();
        let base = existing.unwrap_or(&none);
        let mut merged = self.read_props(base);
        let given = self.accept(props, ctx, &mut errors);
        merge(&self.fields, &mut merged, &given, "", &mut errors);
        self.apply_ops(&mut merged, base, ops, &mut errors)?;
        self.fill_context(schema, &mut merged, ctx);
        if existing.is_none() {
            fill_new(&self.fields, &mut merged, now_ms);
        }
        self.stamp(schema, &mut merged, props, now_ms, existing.is_none());
        self.run_templates(&mut merged, ctx);
        let values = shape_fields(&self.fields, &merged, "", existing.is_none(), &mut errors);
        let mut item = self.foreign_attrs(base);
        item.extend(pack(values));
        if let Some(existing) = existing {
            self.check_same_key(schema, existing, &item, &given)?;
        }
        self.check_limits(schema, &item, &mut errors);
        self.finish(item, errors)
    }

    /// Attributes no field owns (such as the sync layer's metadata) survive an update.
    fn foreign_attrs(&self, item: &Item) -> Item {
        let owned = |attr: &str| {
            self.fields
                .iter()
                .any(|f| f.attr == attr && f.encode.is_none())
        };
        item.iter()
            .filter(|(attr, _)| !owned(attr))
            .map(|(a, v)| (a.clone(), v.clone()))
            .collect()
    }

    /// The key a template recomputes, and any key value given outright, must match `existing`.
    fn check_same_key(
        &self,
        schema: &Schema,
        existing: &Item,
        item: &Item,
        given: &Props,
    ) -> Result<()> {
        let before = self.key_of(schema, existing);
        let mut after = self.key_of(schema, item);
        for attr in schema.primary().keys() {
            let field = self.field_for_attr(attr);
            let value = field.and_then(|f| Some((f, given.get(&f.name)?)));
            if let Some((field, json)) = value
                && let Ok(value) = coerce(field, json)
                && existing.get(attr) != Some(&value)
            {
                after = None;
            }
        }
        if before == after {
            return Ok(());
        }
        let show = |key: Option<ferry_types::Key>| {
            key.map_or_else(|| "none".to_string(), |k| k.to_string())
        };
        Err(Error::Argument(format!(
            "cannot change the key of a {} item from {} to {}: remove the item and create it again",
            self.name,
            show(before),
            show(after)
        )))
    }

    fn apply_ops(
        &self,
        props: &mut Props,
        base: &Item,
        ops: &UpdateOps,
        errors: &mut Vec<FieldError>,
    ) -> Result<()> {
        for (name, value) in &ops.set {
            let field = self.op_field(name, "set")?;
            let value = match value {
                Json::String(text) => {
                    let mut expr = parse_expr(text)?;
                    expr.rename(&self.rename_expr());
                    let result = expr.eval(base, &ops.subs)?;
                    super::read::value_json(field, &result)
                }
                literal => literal.clone(),
            };
            props.insert(name.clone(), value);
        }
        for (name, value) in &ops.add {
            let field = self.op_field(name, "add")?;
            let sum = add(field, props.get(name), value)?;
            props.insert(name.clone(), sum);
        }
        for (name, values) in &ops.delete {
            self.delete(props, name, values)?;
        }
        for (name, values) in &ops.push {
            let field = self.op_field(name, "push")?;
            self.push(props, field, values)?;
        }
        for name in &ops.remove {
            let field = self.op_field(name, "remove")?;
            if field.required {
                errors.push(FieldError {
                    field: name.clone(),
                    reason: "required: it cannot be removed".to_string(),
                });
            }
            props.remove(name);
        }
        Ok(())
    }

    fn op_field(&self, name: &str, op: &str) -> Result<&Field> {
        self.field(name).ok_or_else(|| {
            Error::Argument(format!(
                "{op}: {} has no field '{name}'; name a field of the model",
                self.name
            ))
        })
    }

    fn delete(&self, props: &mut Props, name: &str, values: &Json) -> Result<()> {
        let field = self.op_field(name, "delete")?;
        if field.ty != FieldType::Set {
            return Err(Error::Argument(format!(
                "delete removes values from a set: {}.{name} is not a set field",
                self.name
            )));
        }
        let gone = as_list(values);
        if let Some(Json::Array(list)) = props.get_mut(name) {
            list.retain(|v| !gone.contains(v));
            // DynamoDB cannot store an empty set: the attribute goes.
            if list.is_empty() {
                props.remove(name);
            }
        }
        Ok(())
    }

    fn push(&self, props: &mut Props, field: &Field, values: &Json) -> Result<()> {
        if field.ty != FieldType::Array {
            return Err(Error::Argument(format!(
                "push appends to a list: {}.{} is not an array field",
                self.name, field.name
            )));
        }
        let entry = props
            .entry(field.name.clone())
            .or_insert_with(|| Json::Array(Vec::new()));
        match entry {
            Json::Array(list) => list.extend(as_list(values)),
            other => *other = Json::Array(as_list(values)),
        }
        Ok(())
    }
}

/// `add`: a number field is incremented exactly, a set field gets the union.
fn add(field: &Field, current: Option<&Json>, value: &Json) -> Result<Json> {
    let bad = |what: &str| Error::Argument(format!("add on '{}': {what}", field.name));
    match field.ty {
        FieldType::Number => {
            let number = |json: &Json| {
                Number::parse(&super::json_text(json)).map_err(|e| bad(&e.to_string()))
            };
            let base = match current {
                Some(json) if !json.is_null() => number(json)?,
                _ => Number::from(0_i64),
            };
            let sum = base.add(&number(value)?).map_err(|e| bad(&e.to_string()))?;
            Ok(Value::N(sum).to_json())
        }
        FieldType::Set => {
            let mut list = current.map(as_list).unwrap_or_default();
            for v in as_list(value) {
                if !list.contains(&v) {
                    list.push(v);
                }
            }
            Ok(Json::Array(list))
        }
        _ => Err(bad(
            "add works on number and set fields; use set for others",
        )),
    }
}

fn as_list(values: &Json) -> Vec<Json> {
    match values {
        Json::Array(list) => list.clone(),
        Json::Null => Vec::new(),
        single => vec![single.clone()],
    }
}

/// Merges given properties: null removes (or stores NULL with `nulls`); a partial nested
/// object takes only the given sub-fields; anything else replaces.
fn merge(
    fields: &[Field],
    base: &mut Props,
    given: &Props,
    prefix: &str,
    errors: &mut Vec<FieldError>,
) {
    for (name, value) in given {
        let Some(field) = fields.iter().find(|f| &f.name == name) else {
            // Kept so that shaping reports it as an unknown nested property.
            base.insert(name.clone(), value.clone());
            continue;
        };
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match (value, &field.schema, base.get_mut(name)) {
            (Json::Null, _, _) if field.nulls => {
                base.insert(name.clone(), Json::Null);
            }
            (Json::Null, _, _) => {
                if field.required {
                    errors.push(FieldError {
                        field: path,
                        reason: "required: it cannot be set to null".to_string(),
                    });
                }
                base.remove(name);
            }
            (Json::Object(sub), Some(schema), Some(Json::Object(existing))) if field.partial => {
                merge(schema, existing, sub, &path, errors);
            }
            _ => {
                base.insert(name.clone(), value.clone());
            }
        }
    }
}
