//! The schema most tests share, and helpers to build items and props.

use ferry_schema::{Context, Error, FieldError, Schema};
use ferry_types::Item;
use serde_json::{Map, Value as Json, json};

/// The fixed clock of the tests: 2024-05-01T12:00:00Z.
pub const NOW: i64 = 1_714_564_800_000;

pub const SCHEMA: &str = r#"{
  // JSON5: comments, single quotes and trailing commas.
  version: '1.0.0',
  format: 'onetable:1.1.0',
  indexes: {
    primary: {hash: 'pk', sort: 'sk'},
    gs1: {hash: 'gs1pk', sort: 'gs1sk', project: 'keys'},
  },
  params: {timestamps: true},
  models: {
    User: {
      pk: {type: 'string', value: 'user#${id}'},
      sk: {type: 'string', value: '${_type}#${name:8:0}'},
      id: {type: 'string', generate: 'ulid'},
      name: {type: 'string', required: true},
      email: {type: 'string', validate: '/^[^@]+@[^@]+$/', unique: true, scope: '${deviceId}'},
      age: {type: 'number'},
      active: {type: 'boolean', default: true},
      role: {type: 'string', enum: ['admin', 'user'], default: 'user'},
      born: {type: 'date'},
      expires: {type: 'date', ttl: true},
      tags: {type: 'set'},
      photo: {type: 'binary'},
      address: {type: 'object', partial: true, schema: {
        street: {type: 'string'},
        zip: {type: 'number', required: true},
        country: {type: 'string', default: 'NZ'},
      }},
      pets: {type: 'array', items: {type: 'object', schema: {kind: {type: 'string', required: true}}}},
      notes: {type: 'array'},
      nick: {type: 'string', map: 'data.nick'},
      color: {type: 'string', map: 'data.color'},
      password: {type: 'string', sync: 'none', hidden: true, crypt: true},
      deviceId: {type: 'string'},
      balance: {type: 'number', default: 0},
      score: {type: 'number', map: 's'},
    },
    Order: {
      pk: {type: 'string', value: 'order#${id}'},
      sk: {type: 'string', value: 'order'},
      gs1pk: {type: 'string', value: 'device#${deviceId}'},
      gs1sk: {type: 'string', value: '${_type}#${total:6}'},
      id: {type: 'string', generate: 'uuid'},
      deviceId: {type: 'string'},
      total: {type: 'number', default: 0},
    },
    Thing: {
      pk: {type: 'string', value: 'thing#${id}'},
      sk: {type: 'string', value: 'thing'},
      id: {type: 'string', encode: ['pk', '#', 1]},
    },
  },
  control: {Order: {sync: 'up'}},
}"#;

pub fn schema() -> Schema {
    Schema::parse(SCHEMA).unwrap()
}

pub fn props(value: Json) -> Map<String, Json> {
    match value {
        Json::Object(map) => map,
        other => panic!("props must be an object, got {other}"),
    }
}

pub fn item(value: Json) -> Item {
    ferry_types::json::item_from_json(&props(value)).unwrap()
}

pub fn ctx() -> Context {
    props(json!({"deviceId": "d1"}))
}

/// The fields of a validation error, sorted, or the error itself.
pub fn failing_fields(result: Result<Item, Error>) -> Vec<FieldError> {
    match result {
        Err(Error::Validation { errors, .. }) => errors,
        other => panic!("expected a validation error, got {other:?}"),
    }
}
