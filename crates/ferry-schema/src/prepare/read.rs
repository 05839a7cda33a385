//! Stored items back to user JSON, and the views of an item other layers need.

use ferry_types::{Item, ItemRef, Value, ValueRef};
use serde_json::{Map, Value as Json};

use super::{Context, Props, json_text, lookup};
use crate::coerce::coerce;
use crate::template::Rendered;
use crate::{Field, FieldType, Model, Schema};

/// Separates the parts of a unique key text; it cannot appear in model or field names.
const UNIQUE_SEPARATOR: char = '\u{1f}';

impl Model {
    /// Stored item -> user JSON: attribute names mapped back to property names, read defaults,
    /// hidden fields (value templates and the type field are hidden by default) left out unless `hidden`.
    /// It reads the item in place: a view of the stored bytes, or [`ItemRef::of`] an item.
    pub fn to_json(&self, item: &ItemRef<'_>, hidden: bool) -> Map<String, Json> {
        self.read_fields(item, hidden, true)
    }

    /// [`Model::to_json`] for an item read from an index that projects only some
    /// attributes: what is not projected is left out rather than shown as its default.
    pub fn to_json_projected(&self, item: &ItemRef<'_>, hidden: bool) -> Map<String, Json> {
        self.read_fields(item, hidden, false)
    }

    /// Every field's property, hidden ones included, without read defaults.
    pub(super) fn read_props(&self, item: &Item) -> Props {
        self.read_fields(&ItemRef::of(item), true, false)
    }

    fn read_fields(&self, item: &ItemRef<'_>, hidden: bool, defaults: bool) -> Props {
        read_fields(
            &self.fields,
            &|field, read| self.read_stored(field, item, read),
            hidden,
            defaults,
        )
    }

    /// Does this stored item belong to this model (type field == name)?
    pub fn owns(&self, schema: &Schema, item: &ItemRef<'_>) -> bool {
        item.text(&schema.params().type_field) == Some(self.name.as_str())
    }

    /// The attribute holding the model's ttl field (epoch seconds), if any.
    pub fn ttl_attr(&self) -> Option<&str> {
        self.fields.iter().find(|f| f.ttl).map(|f| f.attr.as_str())
    }

    /// For each unique field present in `item`: (field name, unique key text
    /// "Model\u{1f}field\u{1f}scope\u{1f}value") — two items conflict iff their texts are equal.
    pub fn unique_keys(&self, item: &Item, ctx: &Context) -> Vec<(String, String)> {
        let props = self.read_props(item);
        let mut keys = Vec::new();
        for field in self.fields.iter().filter(|f| f.unique) {
            let Some(value) = props.get(&field.name).filter(|v| !v.is_null()) else {
                continue;
            };
            let scope = match field
                .scope
                .as_ref()
                .map(|s| s.render(&|path| lookup(&props, ctx, path)))
            {
                Some(Rendered::Full(text) | Rendered::Prefix(text)) => text,
                None => String::new(),
            };
            let sep = UNIQUE_SEPARATOR;
            let text = format!(
                "{}{sep}{}{sep}{scope}{sep}{}",
                self.name,
                field.name,
                json_text(value)
            );
            keys.push((field.name.clone(), text));
        }
        keys
    }

    /// The item as it may leave the device: fields with `sync: 'none'` removed.
    pub fn cloud_view(&self, item: &Item) -> Item {
        let mut view = item.clone();
        for field in self
            .fields
            .iter()
            .filter(|f| f.sync_none && f.encode.is_none())
        {
            match &field.sub {
                Some(sub) => {
                    if let Some(Value::M(map)) = view.get_mut(&field.attr) {
                        map.remove(sub);
                    }
                }
                None => {
                    view.remove(&field.attr);
                }
            }
        }
        view
    }

    /// `incoming` (an item from the cloud) with this device's own values of the fields that
    /// never leave it (`sync: 'none'`) taken from `local`. A packed field restores only its
    /// own key inside the map: the rest of the map is the cloud's.
    pub fn keep_local_fields(&self, local: &Item, incoming: &mut Item) {
        let local_only = self
            .fields
            .iter()
            .filter(|f| f.sync_none && f.encode.is_none());
        for field in local_only {
            match &field.sub {
                Some(sub) => {
                    let Some(Value::M(mine)) = local.get(&field.attr) else {
                        continue;
                    };
                    let Some(value) = mine.get(sub) else { continue };
                    let map = incoming
                        .entry(field.attr.clone())
                        .or_insert_with(|| Value::M(Item::new()));
                    if let Value::M(map) = map {
                        map.insert(sub.clone(), value.clone());
                    }
                }
                None => {
                    if let Some(value) = local.get(&field.attr) {
                        incoming.insert(field.attr.clone(), value.clone());
                    }
                }
            }
        }
    }

    /// Which devices see `item` (docs/design.md section 7): the model's `control.scope` template
    /// rendered over the item's properties and the context, by the same engine as every
    /// value template; by default the `deviceId` property if the model has that field, else
    /// the shared scope `*`. The error names the variable that does not resolve.
    pub fn scope_of(&self, item: &Item, ctx: &Context) -> Result<String, String> {
        // Straight from the stored attributes (every replicated write renders it); only a
        // packed or encoded field needs the item read back as properties.
        let plain = |field: &Field| field.has_own_attr();
        if self
            .scope
            .inputs()
            .all(|name| self.field(name).is_none_or(plain))
        {
            return self.render_scope(&|path| {
                self.stored_text(item, path)
                    .or_else(|| lookup(&Props::new(), ctx, path))
            });
        }
        let props = self.read_props(item);
        self.render_scope(&|path| lookup(&props, ctx, path))
    }

    /// The text of a dotted property path of a stored item whose first field is plain.
    fn stored_text(&self, item: &Item, path: &str) -> Option<String> {
        let mut parts = path.split('.');
        let field = self.field(parts.next()?)?;
        let mut value = item.get(&field.attr)?;
        for part in parts {
            match value {
                Value::M(map) => value = map.get(part)?,
                _ => return None,
            }
        }
        value.to_text()
    }

    /// The scope of this model's items on a device with context `ctx`, when the scope
    /// template reads context properties only (`'*'`, `'${deviceId}'`, `'${accountId}'`):
    /// the scope the device reads to receive them. `None` when it depends on the item.
    pub fn device_scope(&self, ctx: &Context) -> Option<String> {
        self.render_scope(&|path| lookup(&Props::new(), ctx, path))
            .ok()
    }

    fn render_scope(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        match self.scope.render(lookup) {
            Rendered::Full(scope) => Ok(scope),
            Rendered::Prefix(_) => Err(format!(
                "the scope '{}' of model {} does not resolve: give every variable it names",
                self.scope.text(),
                self.name
            )),
        }
    }

    /// Rewrites a parsed expression's property names to attribute names. A packed field
    /// (`map: 'data.sub'`) is not renamed: expressions reach it as `${data.sub}`.
    pub fn rename_expr(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| {
            let field = self.field(name).filter(|f| f.has_own_attr())?;
            (field.attr != name).then(|| field.attr.clone())
        }
    }

    /// A field's stored value, passed to `read`: its attribute, its key in a packed map,
    /// or its encoded part.
    pub(super) fn read_stored<R>(
        &self,
        field: &Field,
        item: &ItemRef<'_>,
        read: &dyn Fn(&ValueRef<'_>) -> R,
    ) -> Option<R> {
        if let Some(encode) = &field.encode {
            let source = self.field(&encode.source)?;
            let text =
                self.read_stored(source, item, &|v| v.to_text().map(|t| t.into_owned()))??;
            let part = text.split(encode.separator.as_str()).nth(encode.part)?;
            let value = coerce(field, &Json::String(part.to_string())).ok()?;
            return Some(read(&ValueRef::of(&value)));
        }
        self.stored_ref(field, item).map(read)
    }

    /// The stored value of a field that is not an encoded part: its attribute, or its key
    /// in a packed map.
    pub(super) fn stored_ref<'i, 'a>(
        &self,
        field: &Field,
        item: &'i ItemRef<'a>,
    ) -> Option<&'i ValueRef<'a>> {
        let value = item.get(&field.attr)?;
        match (&field.sub, value) {
            (None, _) => Some(value),
            (Some(sub), ValueRef::M(map)) => map.get(sub),
            (Some(_), _) => None,
        }
    }
}

/// Maps one stored value to its property.
type ReadOne<'r> = &'r dyn Fn(&ValueRef<'_>) -> Json;

/// Reads `fields` through `get`, which passes a field's stored value to its reader;
/// `hidden` includes hidden fields, `defaults` fills missing values from the field's default.
fn read_fields(
    fields: &[Field],
    get: &dyn Fn(&Field, ReadOne<'_>) -> Option<Json>,
    hidden: bool,
    defaults: bool,
) -> Props {
    let shown = |field: &&Field| hidden || !field.hidden;
    // Sized for what it can hold: a map sized for every field can reach the allocator's
    // slow large-request path on each read.
    let mut props = Props::with_capacity(fields.iter().filter(shown).count());
    for field in fields.iter().filter(shown) {
        let json = match get(field, &|value| read_value(field, value, hidden, defaults)) {
            Some(json) => json,
            None => match (&field.default, defaults) {
                (Some(default), true) => default.clone(),
                _ => continue,
            },
        };
        props.insert(field.name.clone(), json);
    }
    props
}

/// A stored value as a property (hidden nested fields included, no defaults).
pub(super) fn value_json(field: &Field, value: &Value) -> Json {
    read_value(field, &ValueRef::of(value), true, false)
}

/// Whether a stored value reads as its plain JSON mapping (no rule of [`read_value`]).
pub(super) fn read_as_is(field: &Field, value: &ValueRef<'_>) -> bool {
    let ttl_date = field.ty == FieldType::Date && field.ttl && matches!(value, ValueRef::N(_));
    let nested = matches!(
        (field.ty, value, &field.schema, &field.items),
        (FieldType::Object, ValueRef::M(_), Some(_), _)
            | (FieldType::Array, ValueRef::L(_), _, Some(_))
    );
    !(ttl_date || nested)
}

pub(super) fn read_value(
    field: &Field,
    value: &ValueRef<'_>,
    hidden: bool,
    defaults: bool,
) -> Json {
    match (field.ty, value, &field.schema, &field.items) {
        (FieldType::Object, ValueRef::M(map), Some(schema), _) => Json::Object(read_fields(
            schema,
            &|f, read| map.get(&f.attr).map(read),
            hidden,
            defaults,
        )),
        (FieldType::Array, ValueRef::L(list), _, Some(items)) => Json::Array(
            list.iter()
                .map(|v| read_value(items, v, hidden, defaults))
                .collect(),
        ),
        // A ttl is stored in epoch seconds (DynamoDB's TTL) but read like any other date,
        // so that what a read returns can be written back unchanged.
        (FieldType::Date, ValueRef::N(_), _, _) if field.ttl => {
            let ms = value.as_i64().unwrap_or_default().saturating_mul(1000);
            if field.iso_dates {
                Json::String(crate::coerce::format_iso(ms))
            } else {
                Json::from(ms)
            }
        }
        _ => value.to_json(),
    }
}
