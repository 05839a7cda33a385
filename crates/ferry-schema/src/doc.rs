//! Reading the JSON schema document: typed property access with precise error places.

use serde_json::{Map, Value as Json};

use crate::{Error, Result};

/// Joins a place and a property name: `models.User` + `fields` = `models.User.fields`.
pub(crate) fn at(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Fails on the first property of `map` that is not in `allowed`.
pub(crate) fn check_keys(map: &Map<String, Json>, place: &str, allowed: &[&str]) -> Result<()> {
    match map.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(Error::schema(
            at(place, key),
            format!(
                "unknown property '{key}': remove it or use one of {}",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// The value at `place` as an object.
pub(crate) fn object<'a>(value: &'a Json, place: &str) -> Result<&'a Map<String, Json>> {
    value
        .as_object()
        .ok_or_else(|| Error::schema(place, format!("expected an object, got {value}")))
}

/// The optional boolean property `key` of `map`.
pub(crate) fn boolean(map: &Map<String, Json>, place: &str, key: &str) -> Result<Option<bool>> {
    match map.get(key) {
        None => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(Error::schema(
            at(place, key),
            format!("expected true or false, got {other}"),
        )),
    }
}

/// The optional text property `key` of `map`.
pub(crate) fn text<'a>(
    map: &'a Map<String, Json>,
    place: &str,
    key: &str,
) -> Result<Option<&'a str>> {
    match map.get(key) {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(other) => Err(Error::schema(
            at(place, key),
            format!("expected text, got {other}"),
        )),
    }
}

/// The optional text property `key`, which must be one of `choices`.
pub(crate) fn choice<'a>(
    map: &Map<String, Json>,
    place: &str,
    key: &str,
    choices: &[&'a str],
) -> Result<Option<&'a str>> {
    let Some(value) = text(map, place, key)? else {
        return Ok(None);
    };
    match choices.iter().find(|c| **c == value) {
        Some(choice) => Ok(Some(choice)),
        None => Err(Error::schema(
            at(place, key),
            format!(
                "'{value}' is not supported: use one of {}",
                choices.join(", ")
            ),
        )),
    }
}
