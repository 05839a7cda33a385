//! Resolving the key of a get / find / remove from properties and context.

use ferry_types::{Item, Key, Value};
use serde_json::Value as Json;

use super::{Context, Props};
use crate::coerce::coerce;
use crate::template::Rendered;
use crate::{Error, Field, Index, Model, Result, Schema};

pub use ferry_types::table::SortCondition;

/// The resolved key of a get / find / remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyQuery {
    /// "primary" or a secondary index name.
    pub index: String,
    /// The resolved hash value.
    pub hash: Value,
    /// From a given / resolved sort value, a `{op: v}` object, or an unresolved template prefix (BeginsWith).
    pub sort: Option<SortCondition>,
    /// Other given properties, as attribute-name equality filters (not key attributes).
    /// A packed property's name is its dotted path (`data.sub`).
    pub filters: Item,
    /// Does the index have a sort key?
    pub has_sort_key: bool,
}

impl KeyQuery {
    /// Some when the index is primary and sort is Eq (or the table has no sort key).
    pub fn full_key(&self) -> Option<Key> {
        if self.index != "primary" {
            return None;
        }
        match (&self.sort, self.has_sort_key) {
            (Some(SortCondition::Eq(sort)), true) => Some(Key {
                hash: self.hash.clone(),
                sort: Some(sort.clone()),
            }),
            (None, false) => Some(Key {
                hash: self.hash.clone(),
                sort: None,
            }),
            _ => None,
        }
    }
}

impl Model {
    /// Resolves the key of a get / find / remove on `index` (None = primary) from props + context.
    pub fn key_query(
        &self,
        schema: &Schema,
        props: &Props,
        ctx: &Context,
        index: Option<&str>,
    ) -> Result<KeyQuery> {
        let index = match index {
            Some(name) => schema.index(name)?,
            None => schema.primary(),
        };
        if let Some(name) = props
            .keys()
            .find(|name| self.field(name).is_none() && !ctx.contains_key(*name))
        {
            return Err(Error::Argument(format!(
                "unknown property '{name}': {} has no such field",
                self.name
            )));
        }
        let hash_field = self.key_field(index, &index.hash)?;
        let sort_field = index
            .sort
            .as_deref()
            .map(|sort| self.key_field(index, sort))
            .transpose()?;
        // A sort condition object is not a value: keep it away from the templates.
        let sort_given =
            sort_field.and_then(|field| props.get(&field.name).map(|given| (field, given)));
        let mut merged = KeyProps {
            rendered: Props::new(),
            kind: (&schema.params().type_field, Json::String(self.name.clone())),
            given: props,
            condition: sort_given.map(|(field, _)| field.name.as_str()),
            ctx,
        };
        let at = schema.indexes().iter().position(|i| i.name == index.name);
        for &i in at.map_or(&[][..], |at| &self.key_templates[at]) {
            let field = &self.fields[i];
            let Some(template) = &field.template else {
                continue;
            };
            if let Rendered::Full(text) = template.render(&|path| merged.text(path)) {
                merged
                    .rendered
                    .insert(field.name.clone(), Json::String(text));
            }
        }
        let hash = match merged.get(&hash_field.name).filter(|v| !v.is_null()) {
            Some(json) => key_value(hash_field, json)?,
            None => return Err(unresolved(self, index, hash_field)),
        };
        let sort = match (sort_given, sort_field) {
            (Some((field, given)), _) => Some(sort_condition(field, given)?),
            (None, Some(field)) => self.resolved_sort(field, &merged)?,
            (None, None) => None,
        };
        let filters = self.filters(index, props)?;
        Ok(KeyQuery {
            index: index.name.clone(),
            hash,
            sort,
            filters,
            has_sort_key: index.sort.is_some(),
        })
    }

    fn key_field(&self, index: &Index, attr: &str) -> Result<&Field> {
        self.field_for_attr(attr).ok_or_else(|| {
            Error::Argument(format!(
                "{} has no field for key '{attr}' of index {}: query another index",
                self.name, index.name
            ))
        })
    }

    /// The sort value from templates: complete gives `=`, partial gives `begins_with` its prefix.
    fn resolved_sort(&self, field: &Field, merged: &KeyProps<'_>) -> Result<Option<SortCondition>> {
        if let Some(json) = merged.get(&field.name).filter(|v| !v.is_null()) {
            return Ok(Some(SortCondition::Eq(key_value(field, json)?)));
        }
        let Some(template) = &field.template else {
            return Ok(None);
        };
        match template.render(&|path| merged.text(path)) {
            Rendered::Prefix(prefix) if !prefix.is_empty() => {
                Ok(Some(SortCondition::BeginsWith(Value::S(prefix))))
            }
            _ => Ok(None),
        }
    }

    fn filters(&self, index: &Index, props: &Props) -> Result<Item> {
        let mut filters = Item::new();
        for (name, json) in props {
            let Some(field) = self.field(name) else {
                continue;
            };
            let is_key = field.sub.is_none() && index.keys().any(|key| key == field.attr);
            // A null is no value to match (and in an update it means "remove the field").
            if is_key || field.encode.is_some() || json.is_null() {
                continue;
            }
            filters.insert(field.attr_path(), key_value(field, json)?);
        }
        Ok(filters)
    }
}

/// What a key query's templates read, without copying the given properties: the key
/// templates rendered so far, the type field naming the model, the given properties (but
/// not a sort condition), then the context.
struct KeyProps<'q> {
    rendered: Props,
    kind: (&'q str, Json),
    given: &'q Props,
    condition: Option<&'q str>,
    ctx: &'q Context,
}

impl KeyProps<'_> {
    fn get(&self, name: &str) -> Option<&Json> {
        if let Some(value) = self.rendered.get(name) {
            return Some(value);
        }
        if name == self.kind.0 {
            return Some(&self.kind.1);
        }
        let given = (self.condition != Some(name)).then(|| self.given.get(name));
        given.flatten().or_else(|| self.ctx.get(name))
    }

    fn text(&self, path: &str) -> Option<String> {
        super::lookup_in(|name| self.get(name), path)
    }
}

fn key_value(field: &Field, json: &Json) -> Result<Value> {
    coerce(field, json)
        .map_err(|reason| Error::Argument(format!("bad value for '{}': {reason}", field.name)))
}

/// A given sort value: a plain value is `=`; `{op: value}` names the condition.
fn sort_condition(field: &Field, given: &Json) -> Result<SortCondition> {
    let Json::Object(map) = given else {
        return Ok(SortCondition::Eq(key_value(field, given)?));
    };
    let bad = || {
        Error::Argument(format!(
            "bad condition on sort key '{}': use one of {{'=': v}}, {{'<': v}}, {{'<=': v}}, {{'>': v}}, {{'>=': v}}, {{between: [a, b]}}, {{begins: v}}",
            field.name
        ))
    };
    let mut entries = map.iter();
    let (Some((op, value)), None) = (entries.next(), entries.next()) else {
        return Err(bad());
    };
    let v = |json: &Json| key_value(field, json);
    Ok(match op.as_str() {
        "=" => SortCondition::Eq(v(value)?),
        "<" => SortCondition::Lt(v(value)?),
        "<=" => SortCondition::Le(v(value)?),
        ">" => SortCondition::Gt(v(value)?),
        ">=" => SortCondition::Ge(v(value)?),
        "begins" | "begins_with" => SortCondition::BeginsWith(v(value)?),
        "between" => match value.as_array().map(Vec::as_slice) {
            Some([low, high]) => SortCondition::Between(v(low)?, v(high)?),
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    })
}

fn unresolved(model: &Model, index: &Index, field: &Field) -> Error {
    let how = match &field.template {
        Some(template) => {
            let inputs: Vec<&str> = template.inputs().collect();
            format!(
                "give {} or the properties its template '{}' uses ({})",
                field.name,
                template.text(),
                inputs.join(", ")
            )
        }
        None => format!("give {}", field.name),
    };
    Error::Argument(format!(
        "cannot resolve the hash key '{}' of index {} for {}: {how}",
        index.hash, index.name, model.name
    ))
}
