//! create / put: defaults, generation, templates, timestamps, coercion, packing, validation.

use ferry_schema::{Error, PutMode, Schema};
use ferry_types::{Item, Number, Value};
use serde_json::{Value as Json, json};

use crate::fixture::{NOW, ctx, failing_fields, item, props, schema};

fn put(schema: &Schema, model: &str, given: Json) -> Result<Item, Error> {
    let model = schema.model(model).unwrap();
    model.prepare_put(schema, &props(given), &ctx(), NOW, PutMode::Create)
}

#[test]
fn fills_type_defaults_templates_context_and_timestamps() {
    let got = put(
        &schema(),
        "User",
        json!({"id": "u1", "name": "ann", "nick": "a", "color": "red", "score": 3}),
    )
    .unwrap();
    let want = item(json!({
        "pk": "user#u1", "sk": "User#00000ann", "_type": "User", "id": "u1", "name": "ann",
        "active": true, "role": "user", "balance": 0, "deviceId": "d1",
        "created": NOW, "updated": NOW, "data": {"nick": "a", "color": "red"}, "s": 3,
    }));
    assert_eq!(got, want);
}

#[test]
fn generates_ids() {
    let user = put(&schema(), "User", json!({"name": "ann"})).unwrap();
    let id = user["id"].as_str().unwrap();
    assert_eq!(id.len(), 26, "ulid");
    assert_eq!(
        user["pk"],
        Value::S(format!("user#{id}")),
        "templates see generated ids"
    );
    let order = put(&schema(), "Order", json!({"total": 5})).unwrap();
    assert_eq!(order["id"].as_str().unwrap().len(), 36, "uuid");
    assert_eq!(
        order["gs1pk"],
        Value::S("device#d1".into()),
        "templates see the context"
    );
    assert_eq!(order["gs1sk"], Value::S("Order#000005".into()));
}

fn check_coerce(field: &str, input: Json, want: Value) {
    let got = put(
        &schema(),
        "User",
        json!({"id": "u1", "name": "ann", field: input}),
    )
    .unwrap();
    assert_eq!(got.get(field), Some(&want), "{field} = {input}");
}

#[test]
fn coerces_to_field_types() {
    let n = |text: &str| Value::N(Number::parse(text).unwrap());
    check_coerce("name", json!(42), Value::S("42".into()));
    check_coerce("name", json!(true), Value::S("true".into()));
    check_coerce("age", json!("42"), n("42"));
    check_coerce("age", json!(" 1.50 "), n("1.5"));
    check_coerce(
        "age",
        json!(12345678901234567890_u64),
        n("12345678901234567890"),
    );
    check_coerce("active", json!("0"), Value::Bool(false));
    check_coerce("active", json!("true"), Value::Bool(true));
    check_coerce("born", json!("2024-05-01T12:00:00Z"), Value::int(NOW));
    check_coerce(
        "born",
        json!("2024-05-01"),
        Value::int(NOW - 12 * 3_600_000),
    );
    check_coerce("born", json!(NOW), Value::int(NOW));
    check_coerce(
        "expires",
        json!("2024-05-01T12:00:00.999Z"),
        Value::int(NOW / 1000),
    );
    check_coerce(
        "tags",
        json!(["b", "a", "b"]),
        Value::Ss(["a".to_string(), "b".to_string()].into()),
    );
    check_coerce(
        "tags",
        json!([2, 1]),
        Value::Ns([Number::from(1_i64), Number::from(2_i64)].into()),
    );
    check_coerce("photo", json!("AAH/"), Value::B(vec![0, 1, 255]));
    check_coerce(
        "notes",
        json!([1, "a"]),
        Value::L(vec![n("1"), Value::S("a".into())]),
    );
    check_coerce(
        "address",
        json!({"zip": "6011"}),
        Value::M(item(json!({"zip": 6011, "country": "NZ"}))),
    );
    check_coerce(
        "pets",
        json!([{"kind": "cat"}]),
        Value::L(vec![Value::M(item(json!({"kind": "cat"})))]),
    );
}

#[test]
fn reports_every_failing_field() {
    let given = json!({
        "id": "u1", "extra": 1, "age": "abc", "active": "maybe", "role": "boss", "email": "bad",
        "born": "yesterday", "tags": [1, "a"], "photo": "%%", "address": {"street": "x", "foo": 1},
        "pets": [{"kind": "cat"}, {}], "notes": "n",
    });
    let errors = failing_fields(put(&schema(), "User", given));
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "extra",
            "sk",
            "name",
            "email",
            "age",
            "active",
            "role",
            "born",
            "tags",
            "photo",
            "address.foo",
            "address.zip",
            "pets[1].kind",
            "notes",
        ]
    );
    let reason = |field: &str| {
        errors
            .iter()
            .find(|e| e.field == field)
            .unwrap()
            .reason
            .clone()
    };
    assert!(
        reason("extra").starts_with("unknown property"),
        "{}",
        reason("extra")
    );
    assert!(reason("sk").contains("(_type, name)"), "{}", reason("sk"));
    assert!(
        reason("role").contains("\"admin\", \"user\""),
        "{}",
        reason("role")
    );
    assert!(
        reason("age").contains("'abc' is not a number"),
        "{}",
        reason("age")
    );
}

#[test]
fn context_only_names_are_accepted_and_not_stored() {
    let got = put(&schema(), "Thing", json!({"id": "t1", "deviceId": "d2"})).unwrap();
    assert_eq!(
        got,
        item(
            json!({"pk": "thing#t1", "sk": "thing", "_type": "Thing", "created": NOW, "updated": NOW})
        )
    );
}

#[test]
fn nulls_are_dropped_or_stored() {
    let got = put(
        &schema(),
        "User",
        json!({"id": "u1", "name": "ann", "age": null, "role": null}),
    )
    .unwrap();
    assert!(
        !got.contains_key("age") && !got.contains_key("role"),
        "a null is not stored and not defaulted"
    );
    let text =
        crate::fixture::SCHEMA.replace("params: {timestamps: true}", "params: {nulls: true}");
    let schema = Schema::parse(&text).unwrap();
    let got = put(
        &schema,
        "User",
        json!({"id": "u1", "name": "ann", "age": null}),
    )
    .unwrap();
    assert_eq!(got["age"], Value::Null);
    assert!(!got.contains_key("created"), "no timestamps unless asked");
}

#[test]
fn iso_dates_store_text() {
    let text = crate::fixture::SCHEMA.replace(
        "params: {timestamps: true}",
        "params: {timestamps: 'create', isoDates: true}",
    );
    let schema = Schema::parse(&text).unwrap();
    let got = put(
        &schema,
        "User",
        json!({"id": "u1", "name": "ann", "born": "2024-05-01T14:00+02:00", "expires": NOW}),
    )
    .unwrap();
    assert_eq!(got["born"], Value::S("2024-05-01T12:00:00.000Z".into()));
    assert_eq!(got["created"], Value::S("2024-05-01T12:00:00.000Z".into()));
    assert_eq!(
        got["expires"],
        Value::int(NOW / 1000),
        "ttl stays epoch seconds"
    );
    assert!(!got.contains_key("updated"));
}

#[test]
fn enforces_dynamodb_limits() {
    let long = "x".repeat(1100);
    let errors = failing_fields(put(&schema(), "User", json!({"id": "u1", "name": long})));
    assert_eq!(errors[0].field, "sk");
    assert!(
        errors[0]
            .reason
            .contains("1024-byte limit for the sort key"),
        "{}",
        errors[0].reason
    );
    let errors = failing_fields(put(
        &schema(),
        "User",
        json!({"id": "x".repeat(2100), "name": "a"}),
    ));
    assert_eq!(errors[0].field, "pk");
    let big = vec!["y".repeat(1000); 420];
    let errors = failing_fields(put(
        &schema(),
        "User",
        json!({"id": "u1", "name": "a", "notes": big}),
    ));
    assert_eq!(errors[0].field, "notes");
    assert!(
        errors[0].reason.contains("409600-byte limit"),
        "{}",
        errors[0].reason
    );
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let errors = failing_fields(put(
        &schema(),
        "User",
        json!({"id": "u1", "name": "a", "notes": deep}),
    ));
    assert!(
        errors[0].reason.contains("32 levels"),
        "{}",
        errors[0].reason
    );
}

#[test]
fn encoded_fields_live_in_another_attribute() {
    let got = put(&schema(), "Thing", json!({"id": "t1"})).unwrap();
    assert!(!got.contains_key("id"));
    assert_eq!(got["pk"], Value::S("thing#t1".into()));
}
