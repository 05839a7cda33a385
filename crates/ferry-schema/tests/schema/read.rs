//! Reading items back, and the views other layers need.

use ferry_schema::PutMode;
use ferry_types::{Item, ItemRef, Value};
use serde_json::json;

use crate::fixture::{NOW, ctx, item, props, schema};

fn stored() -> Item {
    let schema = schema();
    let given = json!({"id": "u1", "name": "ann", "email": "a@b.c", "password": "pw", "nick": "a", "score": 1,
                       "address": {"zip": 1}, "photo": "AAH/", "tags": ["x"]});
    schema
        .model("User")
        .unwrap()
        .prepare_put(&schema, &props(given), &ctx(), NOW, PutMode::Create)
        .unwrap()
}

#[test]
fn to_json_maps_back_and_hides() {
    let schema = schema();
    let user = schema.model("User").unwrap();
    let mut item = stored();
    item.remove("role");
    let shown = user.to_json(&ItemRef::of(&item), false);
    let want = json!({
        "id": "u1", "name": "ann", "email": "a@b.c", "active": true, "role": "user",
        "tags": ["x"], "photo": "AAH/", "address": {"zip": 1, "country": "NZ"}, "nick": "a",
        "deviceId": "d1", "balance": 0, "score": 1, "created": NOW, "updated": NOW,
    });
    assert_eq!(
        serde_json::Value::Object(shown),
        want,
        "role comes from its default on read"
    );
    let all = user.to_json(&ItemRef::of(&item), true);
    for hidden in ["pk", "sk", "_type", "password"] {
        assert!(all.contains_key(hidden), "{hidden} with hidden");
    }
    let thing = schema.model("Thing").unwrap();
    let stored_thing = item_of(json!({"pk": "thing#t1", "sk": "thing", "_type": "Thing"}));
    assert_eq!(
        serde_json::Value::Object(thing.to_json(&ItemRef::of(&stored_thing), false)),
        json!({"id": "t1"}),
        "encode reads back"
    );
}

fn item_of(value: serde_json::Value) -> Item {
    item(value)
}

#[test]
fn views_for_other_layers() {
    let schema = schema();
    let user = schema.model("User").unwrap();
    let item = stored();
    assert!(user.owns(&schema, &ItemRef::of(&item)));
    assert!(
        !schema
            .model("Order")
            .unwrap()
            .owns(&schema, &ItemRef::of(&item))
    );
    assert_eq!(user.ttl_attr(), Some("expires"));
    assert_eq!(schema.model("Order").unwrap().ttl_attr(), None);
    assert_eq!(
        user.unique_keys(&item, &ctx()),
        [(
            "email".to_string(),
            "User\u{1f}email\u{1f}d1\u{1f}a@b.c".to_string()
        )]
    );
    let cloud = user.cloud_view(&item);
    assert!(item.contains_key("password") && !cloud.contains_key("password"));
    assert_eq!(cloud.len(), item.len() - 1);
    let rename = user.rename_expr();
    assert_eq!(
        (
            rename("score"),
            rename("name"),
            rename("nick"),
            rename("nope")
        ),
        (Some("s".to_string()), None, None, None)
    );
    assert_eq!(item["photo"], Value::B(vec![0, 1, 255]));
}

/// A typed view of `User`, with an enum, options, a nested struct and a ttl date.
#[derive(Debug, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    id: String,
    name: String,
    email: String,
    active: bool,
    role: Role,
    age: Option<u32>,
    expires: Option<i64>,
    tags: Vec<String>,
    photo: String,
    address: Address,
    nick: Option<String>,
    device_id: String,
    balance: f64,
    score: i64,
    created: u64,
}

#[derive(Debug, PartialEq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    Admin,
    User,
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct Address {
    zip: u16,
    country: String,
    street: Option<String>,
}

#[test]
fn deserialize_reads_what_to_json_shows() {
    use ferry_schema::Reading;
    let schema = schema();
    let user = schema.model("User").unwrap();
    let mut item = stored();
    item.insert(
        "expires".into(),
        Value::N(ferry_types::Number::from(1_900_000_000i64)),
    );
    item.remove("role");
    let view = ItemRef::of(&item);
    for reading in [
        Reading::default(),
        Reading {
            hidden: true,
            ..Reading::default()
        },
        Reading {
            projected: true,
            ..Reading::default()
        },
    ] {
        let json = if reading.projected {
            user.to_json_projected(&view, reading.hidden)
        } else {
            user.to_json(&view, reading.hidden)
        };
        let direct: serde_json::Value = user.deserialize(&view, reading).unwrap();
        assert_eq!(
            direct,
            serde_json::Value::Object(json.clone()),
            "{reading:?}"
        );
        if !reading.projected {
            let typed: User = user.deserialize(&view, reading).unwrap();
            let via_json: User = serde_json::from_value(serde_json::Value::Object(json)).unwrap();
            assert_eq!(typed, via_json);
            assert_eq!(typed.role, Role::User, "the read default");
            assert_eq!(typed.expires, Some(1_900_000_000_000), "a ttl reads in ms");
        }
    }
    let fields = ["name".to_string(), "score".to_string()];
    let only: serde_json::Value = user
        .deserialize(
            &view,
            Reading {
                fields: Some(&fields),
                ..Reading::default()
            },
        )
        .unwrap();
    assert_eq!(only, json!({"name": "ann", "score": 1}));
    let thing = schema.model("Thing").unwrap();
    let stored_thing = item_of(json!({"pk": "thing#t1", "sk": "thing", "_type": "Thing"}));
    let read: serde_json::Value = thing
        .deserialize(&ItemRef::of(&stored_thing), Reading::default())
        .unwrap();
    assert_eq!(read, json!({"id": "t1"}), "encode reads back");
    let wrong = user
        .deserialize::<Address>(&view, Reading::default())
        .unwrap_err();
    assert!(wrong.contains("zip"), "{wrong}");
}
