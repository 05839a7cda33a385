//! Properties to stored values: coercion and validation, every failure collected.

use ferry_types::{Item, Value};
use serde_json::Value as Json;

use super::Props;
use crate::coerce::coerce;
use crate::{Field, FieldError, FieldType};

/// Fills absent properties from `default` and `generate`, into nested objects too.
pub(super) fn fill_new(fields: &[Field], props: &mut Props, now_ms: i64) {
    for field in fields {
        match props.get_mut(&field.name) {
            None => {
                let value = match (&field.default, &field.generate) {
                    (Some(default), _) => default.clone(),
                    (None, Some(generate)) => Json::String(generate.id(now_ms)),
                    (None, None) => continue,
                };
                props.insert(field.name.clone(), value);
            }
            Some(Json::Object(nested)) => {
                if let Some(schema) = &field.schema {
                    fill_new(schema, nested, now_ms);
                }
            }
            Some(_) => {}
        }
    }
}

/// Converts each field's property to its stored value. `presence`: required fields must be
/// present (create); otherwise only an explicit null of a required field fails.
pub(super) fn shape_fields<'f>(
    fields: &'f [Field],
    props: &Props,
    prefix: &str,
    presence: bool,
    errors: &mut Vec<FieldError>,
) -> Vec<(&'f Field, Value)> {
    let mut out = Vec::new();
    for field in fields {
        let path = join(prefix, &field.name);
        let value = props.get(&field.name);
        match value {
            Some(Json::Null) if field.nulls && !field.required => out.push((field, Value::Null)),
            None | Some(Json::Null) => {
                if field.required && (presence || value.is_some()) {
                    errors.push(missing(field, path));
                }
            }
            Some(json) => {
                if let Some(stored) = shape_value(field, json, &path, errors) {
                    out.push((field, stored));
                }
            }
        }
    }
    out
}

pub(super) fn shape_value(
    field: &Field,
    json: &Json,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Value> {
    let stored = match (field.ty, json, &field.schema, &field.items) {
        (FieldType::Object, Json::Object(props), Some(schema), _) => {
            for name in props
                .keys()
                .filter(|name| !schema.iter().any(|f| &f.name == *name))
            {
                errors.push(fail(
                    join(path, name),
                    "unknown property: not in the nested schema; add it there or leave it out",
                ));
            }
            let values = shape_fields(schema, props, path, true, errors);
            Value::M(
                values
                    .into_iter()
                    .map(|(f, v)| (f.attr.clone(), v))
                    .collect::<Item>(),
            )
        }
        (FieldType::Array, Json::Array(list), _, Some(items)) => {
            let elements = list.iter().enumerate();
            Value::L(
                elements
                    .filter_map(|(i, el)| shape_value(items, el, &format!("{path}[{i}]"), errors))
                    .collect(),
            )
        }
        _ => match coerce(field, json) {
            Ok(value) => value,
            Err(reason) => {
                errors.push(fail(path.to_string(), &reason));
                return None;
            }
        },
    };
    check_rules(field, &stored, path, errors).then_some(stored)
}

/// `enum` and `validate`.
fn check_rules(field: &Field, value: &Value, path: &str, errors: &mut Vec<FieldError>) -> bool {
    if !field.choices.is_empty() && !field.choices.contains(value) {
        let choices: Vec<String> = field
            .choices
            .iter()
            .map(|c| c.to_json().to_string())
            .collect();
        errors.push(fail(
            path.to_string(),
            &format!(
                "{} is not allowed: use one of {}",
                value.to_json(),
                choices.join(", ")
            ),
        ));
        return false;
    }
    if let (Some(pattern), Some(text)) = (&field.pattern, value.to_text())
        && !pattern.is_match(&text)
    {
        errors.push(fail(
            path.to_string(),
            &format!("'{text}' does not match the field's validate pattern {pattern}"),
        ));
        return false;
    }
    true
}

fn missing(field: &Field, path: String) -> FieldError {
    let reason = match &field.template {
        Some(template) => {
            let inputs: Vec<&str> = template.inputs().collect();
            format!(
                "required: give it or the properties its template '{}' uses ({})",
                template.text(),
                inputs.join(", ")
            )
        }
        None => "required: give a value that is not null".to_string(),
    };
    FieldError {
        field: path,
        reason,
    }
}

fn fail(field: String, reason: &str) -> FieldError {
    FieldError {
        field,
        reason: reason.to_string(),
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
