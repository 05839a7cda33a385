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
        if let Some(existing) = existing
            && let Some(item) = self.update_in_place(schema, existing, props, ops, ctx, now_ms)
        {
            return item;
        }
        self.merge_update(schema, existing, props, ops, ctx, now_ms)
    }

    /// The full update: the item read back into properties, merged with the given ones and
    /// the operations, and shaped again like a put.
    fn merge_update(
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

    /// The common update, the same item as the full path makes, without reading the item
    /// back into properties and shaping all of it again: it only sets plain fields (and
    /// the `updated` stamp) of an existing item. `None` sends the update down the full
    /// path: operations, a null, a nested, packed or encoded field, a changed template
    /// input or key, a context value to fill, a property that is not a field, or a value
    /// that fails validation (the full path reports every failure).
    fn update_in_place(
        &self,
        schema: &Schema,
        existing: &Item,
        props: &Props,
        ops: &UpdateOps,
        ctx: &Context,
        now_ms: i64,
    ) -> Option<Result<Item>> {
        let params = schema.params();
        let stored = |field: &Field| existing.get(&field.attr);
        let plain =
            |field: &Field| field.has_own_attr() && field.schema.is_none() && field.items.is_none();
        // What the full path's `fill_context` would add must already be there.
        if !ops.is_empty()
            || self
                .field(&params.type_field)
                .is_some_and(|f| !matches!(stored(f), Some(Value::S(name)) if *name == self.name))
            || ctx
                .keys()
                .filter_map(|name| self.field(name))
                .any(|field| !plain(field) || stored(field).is_none())
        {
            return None;
        }
        let mut errors = Vec::new();
        let mut item = existing.clone();
        let stamp = params.timestamps.updated && !props.contains_key(&params.updated_field);
        let now = Json::from(now_ms);
        let stamp = stamp.then_some((params.updated_field.as_str(), &now));
        for (name, json) in props.iter().map(|(n, j)| (n.as_str(), j)).chain(stamp) {
            let Some(at) = self.fields.iter().position(|f| f.name == name) else {
                if ctx.contains_key(name) {
                    continue;
                }
                return None;
            };
            let field = &self.fields[at];
            if name == params.type_field {
                continue;
            }
            if json.is_null() || !plain(field) {
                return None;
            }
            let value = super::shape::shape_value(field, json, name, &mut errors)?;
            if self.pinned[at] {
                if stored(field) != Some(&value) {
                    return None;
                }
                continue;
            }
            item.insert(field.attr.clone(), value);
        }
        self.check_limits(schema, &item, &mut errors);
        Some(self.finish(item, errors))
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::prepare::PutMode;

    const NOW: i64 = 1_714_564_800_000;

    const SCHEMA: &str = r#"{
      version: '1', format: 'onetable:1.1.0',
      indexes: { primary: {hash: 'pk', sort: 'sk'}, gs1: {hash: 'gs1pk', sort: 'gs1sk'} },
      params: {timestamps: true},
      models: { User: {
        pk: {type: 'string', value: 'user#${id}'},
        sk: {type: 'string', value: '${_type}#${name}'},
        gs1pk: {type: 'string', value: 'kind#${kind}'},
        gs1sk: {type: 'string', value: '${id}'},
        id: {type: 'string', required: true},
        name: {type: 'string', required: true},
        kind: {type: 'string'},
        age: {type: 'number'},
        active: {type: 'boolean', default: true},
        role: {type: 'string', enum: ['admin', 'user']},
        email: {type: 'string', validate: '/^[^@]+@[^@]+$/', unique: true},
        born: {type: 'date'},
        expires: {type: 'date', ttl: true},
        tags: {type: 'set'},
        photo: {type: 'binary'},
        notes: {type: 'array'},
        nick: {type: 'string', map: 'data.nick'},
        address: {type: 'object', partial: true, schema: {street: {type: 'string'}}},
        deviceId: {type: 'string'},
      } },
    }"#;

    fn object(value: Json) -> Props {
        match value {
            Json::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    /// Both paths on one update (in context `ctx`) of `ann`, stored without a context: the
    /// fast path's result (None when it declines), and the full path's.
    fn both(given: Json, ops: &UpdateOps, ctx: &Context) -> (Option<Result<Item>>, Result<Item>) {
        let schema = Schema::parse(SCHEMA).unwrap();
        let user = schema.model("User").unwrap();
        let ann = json!({"id": "u1", "name": "ann", "kind": "staff", "age": 30, "role": "user",
                         "nick": "a", "address": {"street": "main"}, "deviceId": "d1"});
        let mut existing = user
            .prepare_put(&schema, &object(ann), &Context::new(), NOW, PutMode::Create)
            .unwrap();
        existing.insert("_ver".into(), Value::S("v1".into()));
        let given = object(given);
        let later = NOW + 60_000;
        let fast = user.update_in_place(&schema, &existing, &given, ops, ctx, later);
        let full = user.merge_update(&schema, Some(&existing), &given, ops, ctx, later);
        (fast, full)
    }

    fn same(a: &Result<Item>, b: &Result<Item>) -> bool {
        match (a, b) {
            (Ok(a), Ok(b)) => a == b,
            (Err(a), Err(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }

    #[test]
    fn in_place_makes_the_item_the_full_path_makes() {
        let none = UpdateOps::default();
        let cases = [
            json!({"id": "u1", "name": "ann", "age": 31}),
            json!({"id": "u1", "name": "ann", "age": "32.50"}),
            json!({"id": "u1", "name": "ann", "active": false, "role": "admin",
                   "born": "2024-01-02T03:04:05.678Z", "expires": 1_800_000_000_000_i64,
                   "tags": ["x", "y"], "photo": "AAEC", "notes": [1, "two"]}),
            json!({"id": "u1", "name": "ann", "email": "ann@example.com"}),
            json!({"id": "u1", "name": "ann", "kind": "staff", "_type": "Other"}),
            json!({"id": "u1", "name": "ann", "updated": 5, "deviceId": "d2"}),
            json!({"id": "u1", "name": "ann", "pk": "user#u1", "sk": "User#ann"}),
        ];
        for given in cases {
            let (fast, full) = both(given.clone(), &none, &Context::new());
            let fast = fast.unwrap_or_else(|| panic!("{given}: the fast path declined"));
            assert!(full.is_ok(), "{given}: {full:?}");
            assert!(same(&fast, &full), "{given}:\n{fast:?}\n{full:?}");
        }
    }

    #[test]
    fn in_place_declines_what_it_cannot_do_the_same() {
        let none = UpdateOps::default();
        let add = UpdateOps {
            add: object(json!({"age": 1})),
            ..UpdateOps::default()
        };
        let cases = [
            // A null, a packed field, a nested object, an operation.
            (json!({"id": "u1", "name": "ann", "age": null}), &none),
            (json!({"id": "u1", "name": "ann", "nick": "b"}), &none),
            (
                json!({"id": "u1", "name": "ann", "address": {"street": "high"}}),
                &none,
            ),
            (json!({"id": "u1", "name": "ann"}), &add),
            // A template input that changes: the index key, or the primary key (an error).
            (json!({"id": "u1", "name": "ann", "kind": "guest"}), &none),
            (json!({"id": "u1", "name": "bob"}), &none),
            (json!({"id": "u1", "name": "ann", "sk": "User#bob"}), &none),
            // Values the full path reports.
            (json!({"id": "u1", "name": "ann", "role": "boss"}), &none),
            (json!({"id": "u1", "name": "ann", "age": "old"}), &none),
            (json!({"id": "u1", "name": "ann", "email": "nope"}), &none),
            (json!({"id": "u1", "name": "ann", "shoe": 42}), &none),
        ];
        for (given, ops) in cases {
            let (fast, _) = both(given.clone(), ops, &Context::new());
            assert!(fast.is_none(), "{given}: {fast:?}");
        }
    }

    #[test]
    fn in_place_leaves_context_filling_to_the_full_path() {
        let none = UpdateOps::default();
        let given = json!({"id": "u1", "name": "ann", "age": 31});
        // The stored item has the context field: nothing to fill.
        let ctx = object(json!({"deviceId": "d9"}));
        let (fast, full) = both(given.clone(), &none, &ctx);
        assert!(same(&fast.unwrap(), &full));
        // A context field the item lacks is filled by the full path only.
        let ctx = object(json!({"deviceId": "d9", "born": 7}));
        let (fast, full) = both(given, &none, &ctx);
        assert!(fast.is_none());
        assert_eq!(full.unwrap().get("born"), Some(&Value::int(7)));
    }
}
