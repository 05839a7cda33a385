//! Stored item -> a caller's serde type, or JSON text, straight from the stored bytes.
//!
//! The result is what `serde_json::from_value` of [`Model::to_json`]'s object gives, but
//! no JSON is built for a field that reads as is: its value is handed to the type's
//! visitor from the item view. A field with a read rule (ttl dates, nested schemas,
//! encoded parts) and a read default go through their JSON.

use ferry_types::json::write_serialized;
use ferry_types::{ItemRef, ValueRef};
use serde::de::value::{Error, StrDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::Value as Json;

use super::read::{read_as_is, read_value};
use crate::{Field, Model};

/// What a read shows of an item.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading<'o> {
    /// Hidden fields too.
    pub hidden: bool,
    /// The item holds only an index's projected attributes: no read defaults.
    pub projected: bool,
    /// Only these properties.
    pub fields: Option<&'o [String]>,
}

impl Model {
    /// The item as `T`, read in place (see the module's comment).
    pub fn deserialize<T: DeserializeOwned>(
        &self,
        item: &ItemRef<'_>,
        reading: Reading<'_>,
    ) -> Result<T, String> {
        let fields = Fields {
            model: self,
            item,
            reading,
            next: self.fields.iter(),
            pending: None,
        };
        T::deserialize(de::value::MapAccessDeserializer::new(fields)).map_err(|e| e.to_string())
    }
}

impl Model {
    /// The item as JSON text, appended to `out`: what serializing [`Model::to_json`]'s
    /// object (with `reading`'s hidden fields, projection and field list) gives. A field
    /// that reads as is is written from the stored bytes, building no `serde_json::Value`.
    pub fn write_json(&self, item: &ItemRef<'_>, reading: Reading<'_>, out: &mut Vec<u8>) {
        let mut fields = Fields {
            model: self,
            item,
            reading,
            next: self.fields.iter(),
            pending: None,
        };
        out.push(b'{');
        let mut first = true;
        while let Some((field, value)) = fields.advance() {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            write_serialized(field.name.as_str(), out);
            out.push(b':');
            match value {
                Pending::AsIs(value) => value.write_json(out),
                Pending::Json(json) => write_serialized(&json, out),
            }
        }
        out.push(b'}');
    }
}

/// The item's properties as a serde map, one field at a time.
struct Fields<'m, 'i, 'a, 'o> {
    model: &'m Model,
    item: &'i ItemRef<'a>,
    reading: Reading<'o>,
    next: std::slice::Iter<'m, Field>,
    pending: Option<Pending<'i, 'a>>,
}

/// The value of the property whose name was just given.
enum Pending<'i, 'a> {
    AsIs(&'i ValueRef<'a>),
    Json(Json),
}

impl<'m, 'i, 'a> Fields<'m, 'i, 'a, '_> {
    /// The next shown field and its value.
    fn advance(&mut self) -> Option<(&'m Field, Pending<'i, 'a>)> {
        let Reading {
            hidden,
            projected,
            fields,
        } = self.reading;
        for field in self.next.by_ref() {
            if (field.hidden && !hidden) || fields.is_some_and(|f| !f.contains(&field.name)) {
                continue;
            }
            let value = if field.encode.is_some() {
                self.model
                    .read_stored(field, self.item, &|v| {
                        read_value(field, v, hidden, !projected)
                    })
                    .map(Pending::Json)
            } else {
                self.model.stored_ref(field, self.item).map(|v| {
                    if read_as_is(field, v) {
                        Pending::AsIs(v)
                    } else {
                        Pending::Json(read_value(field, v, hidden, !projected))
                    }
                })
            };
            match (value, &field.default) {
                (Some(value), _) => return Some((field, value)),
                (None, Some(default)) if !projected => {
                    return Some((field, Pending::Json(default.clone())));
                }
                (None, _) => {}
            }
        }
        None
    }
}

impl<'de> de::MapAccess<'de> for Fields<'_, '_, '_, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((field, value)) = self.advance() else {
            return Ok(None);
        };
        self.pending = Some(value);
        seed.deserialize(field.name.as_str().into_deserializer())
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.pending.take() {
            Some(Pending::AsIs(value)) => seed.deserialize(ValueDe(value)),
            Some(Pending::Json(json)) => seed.deserialize(json).map_err(de::Error::custom),
            None => Err(de::Error::custom("a value was asked for before its key")),
        }
    }
}

/// One stored value as a serde deserializer, mapped as [`ValueRef::to_json`] maps it.
struct ValueDe<'v, 'a>(&'v ValueRef<'a>);

impl<'de> de::Deserializer<'de> for ValueDe<'_, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            ValueRef::S(s) => visitor.visit_str(s),
            ValueRef::N(n) => visit_number(n, visitor),
            ValueRef::Bool(b) => visitor.visit_bool(*b),
            ValueRef::Null => visitor.visit_unit(),
            ValueRef::M(map) => visitor.visit_map(de::value::MapDeserializer::new(
                map.iter()
                    .map(|(name, value)| (StrDeserializer::new(name), ValueDe(value))),
            )),
            ValueRef::L(list) => {
                visitor.visit_seq(de::value::SeqDeserializer::new(list.iter().map(ValueDe)))
            }
            // Binaries and sets have no serde form of their own: they read as their JSON.
            other => other
                .to_json()
                .deserialize_any(visitor)
                .map_err(de::Error::custom),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            ValueRef::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            ValueRef::S(s) => visitor.visit_enum(s.into_deserializer()),
            other => other
                .to_json()
                .deserialize_enum(name, variants, visitor)
                .map_err(de::Error::custom),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, Error> for ValueDe<'_, '_> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// A number as JSON gives it to a visitor: unsigned, signed, or else floating point.
fn visit_number<'de, V: Visitor<'de>>(text: &str, visitor: V) -> Result<V::Value, Error> {
    if let Ok(n) = text.parse::<u64>() {
        return visitor.visit_u64(n);
    }
    if let Ok(n) = text.parse::<i64>() {
        return visitor.visit_i64(n);
    }
    match text.parse::<f64>() {
        Ok(n) => visitor.visit_f64(n),
        Err(_) => Err(de::Error::custom(format!("'{text}' is not a number"))),
    }
}
