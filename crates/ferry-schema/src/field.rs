//! Model fields: their properties as the schema states them, checked at load.

use ferry_types::Value;
use regex::Regex;
use serde_json::{Map, Value as Json};

use crate::coerce::coerce;
use crate::doc::{self, at};
use crate::schema::Params;
use crate::template::Template;
use crate::{Error, Result};

/// `filter`, `fixed`, `reference`, `timestamp` and `drop` are accepted and not interpreted.
const FIELD_PROPERTIES: &[&str] = &[
    "type",
    "required",
    "default",
    "generate",
    "uuid",
    "value",
    "enum",
    "validate",
    "hidden",
    "unique",
    "scope",
    "ttl",
    "nulls",
    "isoDates",
    "schema",
    "items",
    "partial",
    "map",
    "encode",
    "crypt",
    "filter",
    "fixed",
    "reference",
    "timestamp",
    "drop",
    "sync",
];

/// Properties that only make sense on a model's own (top-level) fields.
const TOP_LEVEL_ONLY: &[&str] = &["value", "unique", "scope", "ttl", "encode", "sync", "crypt"];

/// Longest `uid(N)`: keeps a generated id inside DynamoDB's 1024-byte sort key.
pub const UID_LEN_MAX: usize = 1024;

/// One property of a model (or of a nested schema).
#[derive(Debug, Clone)]
pub struct Field {
    /// The property name users read and write.
    pub name: String,
    /// The stored attribute name (`map`); for a packed field (`map: 'data.sub'`), the map attribute.
    pub attr: String,
    /// The value type.
    pub ty: FieldType,
    /// Must be present on create, and cannot be set to null or removed.
    pub required: bool,
    /// Left out of results unless hidden fields are asked for.
    pub hidden: bool,
    /// No two items of the model share a value (within `scope`).
    pub unique: bool,
    /// The item's expiry, stored as epoch seconds.
    pub ttl: bool,
    /// `sync: 'none'`: the field never leaves the device.
    pub sync_none: bool,
    /// Encrypted at rest by the database (the facade's job).
    pub crypt: bool,
    /// Applied when the property is absent on create, and on read when the attribute is missing.
    pub default: Option<Json>,
    /// Fills an absent property on create.
    pub generate: Option<Generate>,
    /// Updates of a nested object set the given sub-fields instead of replacing it.
    pub partial: bool,
    /// A null is stored as NULL instead of removing the attribute.
    pub nulls: bool,
    /// Dates stored as ISO-8601 text.
    pub iso_dates: bool,
    /// The key inside `attr` for a packed field.
    pub(crate) sub: Option<String>,
    pub(crate) template: Option<Template>,
    pub(crate) choices: Vec<Value>,
    pub(crate) pattern: Option<Regex>,
    pub(crate) scope: Option<Template>,
    pub(crate) schema: Option<Vec<Field>>,
    pub(crate) items: Option<Box<Field>>,
    pub(crate) encode: Option<Encode>,
}

/// A field's value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// Text (`S`).
    String,
    /// A number (`N`).
    Number,
    /// A boolean (`BOOL`).
    Boolean,
    /// A date: epoch milliseconds (`N`) or ISO text (`S`).
    Date,
    /// A map (`M`), optionally with a nested schema.
    Object,
    /// A list (`L`), optionally with an `items` schema.
    Array,
    /// Binary (`B`), given as base64 text.
    Binary,
    /// A set of texts or numbers (`SS` / `NS`).
    Set,
}

/// How an absent property is generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generate {
    /// 26 Crockford base-32 characters, time-ordered.
    Ulid,
    /// A random UUID (version 4).
    Uuid,
    /// N random Crockford base-32 characters.
    Uid(usize),
}

/// `encode: [field, separator, part]`: the property is read back from part `part` of the
/// attribute of `field` split by `separator`, and not stored on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encode {
    pub source: String,
    pub separator: String,
    pub part: usize,
}

impl Field {
    /// Is the field stored in an attribute of its own (not packed into a map, not encoded
    /// into another attribute)?
    pub(crate) fn has_own_attr(&self) -> bool {
        self.sub.is_none() && self.encode.is_none()
    }

    /// A field with no properties but its type, as the schema adds for `_type` and timestamps.
    pub(crate) fn plain(name: &str, ty: FieldType, params: &Params) -> Field {
        Field {
            name: name.to_string(),
            attr: name.to_string(),
            ty,
            required: false,
            hidden: false,
            unique: false,
            ttl: false,
            sync_none: false,
            crypt: false,
            default: None,
            generate: None,
            partial: false,
            nulls: params.nulls,
            iso_dates: params.iso_dates,
            sub: None,
            template: None,
            choices: Vec::new(),
            pattern: None,
            scope: None,
            schema: None,
            items: None,
            encode: None,
        }
    }

    /// The value template's text, if the field has one.
    pub fn template(&self) -> Option<&str> {
        self.template.as_ref().map(Template::text)
    }

    /// The attribute path users' expressions mean by this property (`attr` or `attr.sub`).
    pub fn attr_path(&self) -> String {
        match &self.sub {
            Some(sub) => format!("{}.{sub}", self.attr),
            None => self.attr.clone(),
        }
    }

    /// Loads a field at `place` (`models.User.fields.email`); `nested` inside a `schema`.
    pub(crate) fn load(
        name: &str,
        value: &Json,
        place: &str,
        params: &Params,
        nested: bool,
    ) -> Result<Field> {
        let map = doc::object(value, place)?;
        doc::check_keys(map, place, FIELD_PROPERTIES)?;
        if nested && let Some(key) = TOP_LEVEL_ONLY.iter().find(|key| map.contains_key(**key)) {
            return Err(Error::schema(
                at(place, key),
                format!("'{key}' is not supported in a nested schema: move the field to the model"),
            ));
        }
        let mut field = Field::plain(name, field_type(map, place)?, params);
        field.template = match doc::text(map, place, "value")? {
            Some(text) => {
                Some(Template::parse(text).map_err(|m| Error::schema(at(place, "value"), m))?)
            }
            None => None,
        };
        field.load_flags(map, place, params)?;
        field.generate = generate(map, place, field.ty)?;
        field.pattern = pattern(map, place)?;
        field.load_map(map, place, nested)?;
        field.load_nested(map, place, params)?;
        field.load_encode(map, place, params)?;
        field.load_values(map, place)?;
        Ok(field)
    }

    fn load_flags(&mut self, map: &Map<String, Json>, place: &str, params: &Params) -> Result<()> {
        let flag = |key: &str| doc::boolean(map, place, key);
        self.required = flag("required")?.unwrap_or(false);
        // Template fields are derived data (usually keys), so they are hidden unless asked.
        self.hidden = flag("hidden")?.unwrap_or(self.template.is_some());
        self.unique = flag("unique")?.unwrap_or(false);
        self.ttl = flag("ttl")?.unwrap_or(false);
        self.crypt = flag("crypt")?.unwrap_or(false);
        self.partial = flag("partial")?.unwrap_or(false);
        self.nulls = flag("nulls")?.unwrap_or(params.nulls);
        self.iso_dates = flag("isoDates")?.unwrap_or(params.iso_dates);
        self.sync_none = doc::choice(map, place, "sync", &["none"])?.is_some();
        if self.ttl && !matches!(self.ty, FieldType::Date | FieldType::Number) {
            return Err(Error::schema(
                at(place, "ttl"),
                "a ttl field holds an expiry: give it type 'date'",
            ));
        }
        if let Some(scope) = doc::text(map, place, "scope")? {
            if !self.unique {
                return Err(Error::schema(
                    at(place, "scope"),
                    "scope applies to unique fields: add unique: true or remove scope",
                ));
            }
            self.scope =
                Some(Template::parse(scope).map_err(|m| Error::schema(at(place, "scope"), m))?);
        }
        Ok(())
    }

    fn load_map(&mut self, map: &Map<String, Json>, place: &str, nested: bool) -> Result<()> {
        let Some(target) = doc::text(map, place, "map")? else {
            return Ok(());
        };
        let parts: Vec<&str> = target.split('.').collect();
        match parts.as_slice() {
            [attr] if !attr.is_empty() => self.attr = attr.to_string(),
            [attr, sub] if !nested && !attr.is_empty() && !sub.is_empty() => {
                self.attr = attr.to_string();
                self.sub = Some(sub.to_string());
            }
            _ => {
                let allowed = if nested {
                    "'attr'"
                } else {
                    "'attr' or 'attr.sub'"
                };
                return Err(Error::schema(
                    at(place, "map"),
                    format!("bad map '{target}': use {allowed}"),
                ));
            }
        }
        Ok(())
    }

    fn load_nested(&mut self, map: &Map<String, Json>, place: &str, params: &Params) -> Result<()> {
        if let Some(schema) = map.get("schema") {
            let schema_place = at(place, "schema");
            if self.ty != FieldType::Object {
                return Err(Error::schema(
                    schema_place,
                    "a nested schema needs type 'object' (for lists use items)",
                ));
            }
            let mut fields = Vec::new();
            for (name, def) in doc::object(schema, &schema_place)? {
                fields.push(Field::load(
                    name,
                    def,
                    &at(&schema_place, name),
                    params,
                    true,
                )?);
            }
            self.schema = Some(fields);
        }
        if let Some(items) = map.get("items") {
            let items_place = at(place, "items");
            if self.ty != FieldType::Array {
                return Err(Error::schema(
                    items_place,
                    "items describes list elements: give the field type 'array'",
                ));
            }
            self.items = Some(Box::new(Field::load(
                &self.name,
                items,
                &items_place,
                params,
                true,
            )?));
        }
        Ok(())
    }

    fn load_encode(&mut self, map: &Map<String, Json>, place: &str, params: &Params) -> Result<()> {
        let Some(value) = map.get("encode") else {
            return Ok(());
        };
        let bad = || {
            Error::schema(
                at(place, "encode"),
                format!("expected [field, separator, part] such as ['sk', '#', 1], got {value}"),
            )
        };
        let list = value.as_array().ok_or_else(bad)?;
        let (source, separator, part) = match list.as_slice() {
            [source, separator, part] => (source, separator.as_str().ok_or_else(bad)?, part),
            [source, part] => (source, params.separator.as_str(), part),
            _ => return Err(bad()),
        };
        let source = source.as_str().ok_or_else(bad)?.to_string();
        let part = part
            .as_u64()
            .and_then(|p| usize::try_from(p).ok())
            .ok_or_else(bad)?;
        if separator.is_empty() {
            return Err(bad());
        }
        self.encode = Some(Encode {
            source,
            separator: separator.to_string(),
            part,
        });
        Ok(())
    }

    /// Checks that `default` and every `enum` value fit the field's type.
    fn load_values(&mut self, map: &Map<String, Json>, place: &str) -> Result<()> {
        self.default = map.get("default").filter(|d| !d.is_null()).cloned();
        if let Some(default) = &self.default {
            coerce(self, default).map_err(|reason| Error::schema(at(place, "default"), reason))?;
        }
        let Some(choices) = map.get("enum") else {
            return Ok(());
        };
        let list = choices.as_array().ok_or_else(|| {
            Error::schema(
                at(place, "enum"),
                format!("expected a list of values, got {choices}"),
            )
        })?;
        for choice in list {
            let value =
                coerce(self, choice).map_err(|reason| Error::schema(at(place, "enum"), reason))?;
            self.choices.push(value);
        }
        Ok(())
    }
}

fn field_type(map: &Map<String, Json>, place: &str) -> Result<FieldType> {
    let types = [
        "string",
        "number",
        "boolean",
        "date",
        "object",
        "array",
        "binary",
        "buffer",
        "arraybuffer",
        "set",
    ];
    Ok(match doc::choice(map, place, "type", &types)? {
        None | Some("string") => FieldType::String,
        Some("number") => FieldType::Number,
        Some("boolean") => FieldType::Boolean,
        Some("date") => FieldType::Date,
        Some("object") => FieldType::Object,
        Some("array") => FieldType::Array,
        Some("set") => FieldType::Set,
        Some(_) => FieldType::Binary,
    })
}

fn generate(map: &Map<String, Json>, place: &str, ty: FieldType) -> Result<Option<Generate>> {
    let (key, text) = match (
        doc::text(map, place, "generate")?,
        doc::text(map, place, "uuid")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(Error::schema(
                at(place, "uuid"),
                "uuid is the older name of generate: keep only generate",
            ));
        }
        (Some(text), None) => ("generate", text),
        (None, Some(text)) => ("uuid", text),
        (None, None) => return Ok(None),
    };
    let place = at(place, key);
    if ty != FieldType::String {
        return Err(Error::schema(
            place,
            "generated ids are text: give the field type 'string'",
        ));
    }
    let uid_len = |text: &str| -> Option<usize> {
        let len = text
            .strip_prefix("uid(")?
            .strip_suffix(')')?
            .trim()
            .parse()
            .ok()?;
        (1..=UID_LEN_MAX).contains(&len).then_some(len)
    };
    let uid = if key == "generate" && text == "uid" {
        Some(10)
    } else {
        uid_len(text).filter(|_| key == "generate")
    };
    match (text, uid) {
        ("ulid", _) => Ok(Some(Generate::Ulid)),
        ("uuid", _) => Ok(Some(Generate::Uuid)),
        (_, Some(len)) => Ok(Some(Generate::Uid(len))),
        _ => {
            let choices = if key == "generate" {
                "'ulid', 'uuid', 'uid' or 'uid(N)'"
            } else {
                "'ulid' or 'uuid'"
            };
            Err(Error::schema(
                place,
                format!("unknown generator '{text}': use {choices} (N from 1 to {UID_LEN_MAX})"),
            ))
        }
    }
}

/// `validate: '/pattern/flags'` (JavaScript style) or a bare pattern.
fn pattern(map: &Map<String, Json>, place: &str) -> Result<Option<Regex>> {
    let Some(text) = doc::text(map, place, "validate")? else {
        return Ok(None);
    };
    let place = at(place, "validate");
    let (body, flags) = match text
        .strip_prefix('/')
        .and_then(|rest| rest.rsplit_once('/'))
    {
        Some((body, flags)) => (body, flags),
        None => (text, ""),
    };
    let mut inline = String::new();
    for flag in flags.chars() {
        match flag {
            'i' | 'm' | 's' | 'x' => inline.push(flag),
            // Global and unicode matching change nothing for a whole-value test.
            'g' | 'u' => {}
            _ => {
                return Err(Error::schema(
                    place,
                    format!("unsupported regex flag '{flag}': use i, m, s, x, g or u"),
                ));
            }
        }
    }
    let source = if inline.is_empty() {
        body.to_string()
    } else {
        format!("(?{inline}){body}")
    };
    Regex::new(&source)
        .map(Some)
        .map_err(|e| Error::schema(place, format!("invalid regular expression '{text}': {e}")))
}
