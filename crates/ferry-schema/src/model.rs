//! Models: their fields, keys, template order and control, checked at load.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value as Json};

use crate::control::{self, Control};
use crate::doc::{self, at};
use crate::field::{Field, FieldType};
use crate::index::Index;
use crate::schema::Params;
use crate::template::Template;
use crate::{Error, Result};

/// One model of the schema.
#[derive(Debug, Clone)]
pub struct Model {
    /// The model name (the value of the type field).
    pub name: String,
    /// Fields in schema order, then the implicit type field and timestamps if not declared.
    pub fields: Vec<Field>,
    /// Ferry's control settings.
    pub control: Control,
    /// Indexes into `fields` of template fields, each after the fields its template reads.
    pub(crate) template_order: Vec<usize>,
    /// `control.scope` parsed, or the default scope (see [`Model::scope_of`]).
    pub(crate) scope: Template,
    /// Per index of the schema (in its order): the template fields its keys need, each
    /// after the template fields it reads (a key query renders only these).
    pub(crate) key_templates: Vec<Vec<usize>>,
    /// Per field: a value template or the primary key depends on it, so an update in place
    /// must find it unchanged (see `Model::update_in_place`).
    pub(crate) pinned: Vec<bool>,
}

impl Model {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The field stored as attribute `attr` (not packed inside a map).
    pub fn field_for_attr(&self, attr: &str) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| f.attr == attr && f.has_own_attr())
    }
}

/// Loads `models`, attaching each model's `control` entry.
pub(crate) fn load_models(
    root: &Map<String, Json>,
    params: &Params,
    indexes: &[Index],
) -> Result<BTreeMap<String, Model>> {
    let (section, mut controls) = control::load(root)?;
    let defs = root.get("models").ok_or_else(|| {
        Error::schema(
            "models",
            "missing models: add models: {User: {pk: {...}, ...}}",
        )
    })?;
    let name_rule = Regex::new("^[A-Za-z_][A-Za-z0-9_]*$")
        .map_err(|e| Error::schema("models", e.to_string()))?;
    let mut models = BTreeMap::new();
    for (name, def) in doc::object(defs, "models")? {
        let place = at("models", name);
        if !name_rule.is_match(name) {
            return Err(Error::schema(
                place,
                format!(
                    "bad model name '{name}': use letters, digits and _, not starting with a digit"
                ),
            ));
        }
        let control = controls.remove(name).unwrap_or_default();
        models.insert(
            name.clone(),
            load_model(name, def, &place, params, indexes, control)?,
        );
    }
    if let Some(name) = controls.keys().next() {
        let known: Vec<&str> = models.keys().map(String::as_str).collect();
        return Err(Error::schema(
            at(section, name),
            format!(
                "{section} entry for unknown model '{name}': the schema has {}",
                known.join(", ")
            ),
        ));
    }
    Ok(models)
}

fn load_model(
    name: &str,
    def: &Json,
    place: &str,
    params: &Params,
    indexes: &[Index],
    control: Control,
) -> Result<Model> {
    let fields_place = at(place, "fields");
    let mut fields = Vec::new();
    for (field_name, field_def) in doc::object(def, place)? {
        fields.push(Field::load(
            field_name,
            field_def,
            &at(&fields_place, field_name),
            params,
            false,
        )?);
    }
    add_implicit_fields(&mut fields, params);
    check_attrs(&fields, &fields_place)?;
    check_keys(&mut fields, &fields_place, indexes)?;
    check_encode(&fields, &fields_place)?;
    let template_order = template_order(&fields, &fields_place)?;
    let scope = scope_template(&control, &fields, place)?;
    let pinned = pinned_fields(&fields, indexes.first());
    let key_templates = indexes
        .iter()
        .map(|index| key_templates(&fields, &template_order, index))
        .collect();
    Ok(Model {
        name: name.to_string(),
        fields,
        control,
        template_order,
        scope,
        key_templates,
        pinned,
    })
}

/// The template fields `index`'s key attributes need, directly or through the templates
/// they read, in template order.
fn key_templates(fields: &[Field], template_order: &[usize], index: &Index) -> Vec<usize> {
    let position = |name: &str| fields.iter().position(|f| f.name == name);
    let mut needed = vec![false; fields.len()];
    let mut next: Vec<usize> = index
        .keys()
        .filter_map(|attr| {
            fields
                .iter()
                .position(|f| f.attr == attr && f.has_own_attr())
        })
        .collect();
    while let Some(at) = next.pop() {
        if std::mem::replace(&mut needed[at], true) {
            continue;
        }
        let inputs = fields[at].template.iter().flat_map(|t| t.inputs());
        next.extend(inputs.filter_map(position));
    }
    template_order
        .iter()
        .copied()
        .filter(|&at| needed[at])
        .collect()
}

/// Which fields a value template reads, carry a template, or hold the primary key.
fn pinned_fields(fields: &[Field], primary: Option<&Index>) -> Vec<bool> {
    let read: Vec<&str> = fields
        .iter()
        .flat_map(|f| f.template.iter().flat_map(|t| t.inputs()))
        .collect();
    fields
        .iter()
        .map(|f| {
            f.template.is_some()
                || read.contains(&f.name.as_str())
                || primary.is_some_and(|p| p.keys().any(|key| key == f.attr))
        })
        .collect()
}

/// The model's scope template: `control.scope`, else `${deviceId}` when the model has a
/// `deviceId` field, else the shared scope `*` (docs/design.md section 7).
fn scope_template(control: &Control, fields: &[Field], place: &str) -> Result<Template> {
    let text = match &control.scope {
        Some(text) => text.as_str(),
        None if fields.iter().any(|f| f.name == "deviceId") => "${deviceId}",
        None => "*",
    };
    Template::parse(text).map_err(|message| Error::schema(at(place, "scope"), message))
}

/// OneTable adds the type field and the timestamps to every model that does not declare them.
fn add_implicit_fields(fields: &mut Vec<Field>, params: &Params) {
    let mut implicit = vec![(params.type_field.as_str(), FieldType::String)];
    if params.timestamps.created {
        implicit.push((params.created_field.as_str(), FieldType::Date));
    }
    if params.timestamps.updated {
        implicit.push((params.updated_field.as_str(), FieldType::Date));
    }
    for (name, ty) in implicit {
        if !fields.iter().any(|f| f.name == name) {
            let mut field = Field::plain(name, ty, params);
            field.hidden = name == params.type_field;
            fields.push(field);
        }
    }
}

/// Two fields may share an attribute only when both pack into it as a map.
fn check_attrs(fields: &[Field], place: &str) -> Result<()> {
    for (i, field) in fields.iter().enumerate() {
        let clash = fields[..i].iter().find(|other| {
            other.attr == field.attr
                && (other.sub.is_none() || field.sub.is_none() || other.sub == field.sub)
                && other.encode.is_none()
                && field.encode.is_none()
        });
        if let Some(other) = clash {
            return Err(Error::schema(
                at(&at(place, &field.name), "map"),
                format!(
                    "fields '{}' and '{}' are both stored as '{}': map one of them elsewhere",
                    other.name,
                    field.name,
                    field.attr_path()
                ),
            ));
        }
    }
    Ok(())
}

/// Key attributes must be plain string, number or binary fields, and are required.
fn check_keys(fields: &mut [Field], place: &str, indexes: &[Index]) -> Result<()> {
    for index in indexes {
        for key in index.keys() {
            let Some(field) = fields
                .iter_mut()
                .find(|f| f.attr == key && f.encode.is_none())
            else {
                continue;
            };
            let field_place = at(place, &field.name);
            if field.sub.is_some() {
                return Err(Error::schema(
                    at(&field_place, "map"),
                    format!(
                        "'{key}' is a key of index {}: it cannot be packed into a map",
                        index.name
                    ),
                ));
            }
            if !matches!(
                field.ty,
                FieldType::String | FieldType::Number | FieldType::Binary
            ) {
                return Err(Error::schema(
                    at(&field_place, "type"),
                    format!(
                        "'{key}' is a key of index {}: give it type 'string', 'number' or 'binary'",
                        index.name
                    ),
                ));
            }
            field.required = true;
        }
    }
    let primary = &indexes[0];
    for key in primary.keys() {
        if !fields.iter().any(|f| f.attr == key && f.encode.is_none()) {
            return Err(Error::schema(
                place,
                format!(
                    "no field for the primary key attribute '{key}': add {key}: {{type: 'string', value: '...'}}"
                ),
            ));
        }
    }
    Ok(())
}

fn check_encode(fields: &[Field], place: &str) -> Result<()> {
    for field in fields {
        if let Some(encode) = &field.encode
            && !fields
                .iter()
                .any(|f| f.name == encode.source && f.encode.is_none())
        {
            return Err(Error::schema(
                at(&at(place, &field.name), "encode"),
                format!(
                    "encode reads from unknown field '{}': name a stored field of the model",
                    encode.source
                ),
            ));
        }
    }
    Ok(())
}

/// Orders template fields so each comes after the template fields it reads; a cycle is an error.
fn template_order(fields: &[Field], place: &str) -> Result<Vec<usize>> {
    let mut marks = vec![Mark::New; fields.len()];
    let mut order = Vec::new();
    for i in (0..fields.len()).filter(|&i| fields[i].template.is_some()) {
        let mut path = Vec::new();
        if let Err(cycle) = visit(i, fields, &mut marks, &mut order, &mut path) {
            let names: Vec<&str> = cycle.iter().map(|&c| fields[c].name.as_str()).collect();
            return Err(Error::schema(
                at(&at(place, names[0]), "value"),
                format!(
                    "templates depend on each other in a cycle ({}): break the cycle",
                    names.join(" -> ")
                ),
            ));
        }
    }
    Ok(order)
}

/// Depth-first visit state of a template field.
#[derive(Clone, Copy, PartialEq)]
enum Mark {
    New,
    Visiting,
    Done,
}

/// Appends field `i` to `order` after its template inputs; on a cycle returns its fields,
/// first and last the same.
fn visit(
    i: usize,
    fields: &[Field],
    marks: &mut [Mark],
    order: &mut Vec<usize>,
    path: &mut Vec<usize>,
) -> std::result::Result<(), Vec<usize>> {
    match marks[i] {
        Mark::Done => return Ok(()),
        Mark::Visiting => {
            let start = path.iter().position(|&p| p == i).unwrap_or(0);
            let mut cycle = path[start..].to_vec();
            cycle.push(i);
            return Err(cycle);
        }
        Mark::New => {}
    }
    marks[i] = Mark::Visiting;
    path.push(i);
    for input in fields[i].template.iter().flat_map(|t| t.inputs()) {
        if let Some(j) = fields
            .iter()
            .position(|f| f.name == input && f.template.is_some())
        {
            visit(j, fields, marks, order, path)?;
        }
    }
    path.pop();
    marks[i] = Mark::Done;
    order.push(i);
    Ok(())
}
