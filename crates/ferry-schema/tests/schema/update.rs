//! update: merging, nulls, partial objects, operations, timestamps and fixed keys.

use ferry_schema::{Error, PutMode, UpdateOps};
use ferry_types::{Item, Value};
use serde_json::{Value as Json, json};

use crate::fixture::{NOW, ctx, failing_fields, props, schema};

const LATER: i64 = NOW + 60_000;

fn existing() -> Item {
    let schema = schema();
    let given = json!({"id": "u1", "name": "ann", "age": 30, "tags": ["a", "b"], "notes": ["n1"], "nick": "a",
                       "address": {"street": "main", "zip": 1000}, "pets": [{"kind": "cat"}]});
    let mut item = schema
        .model("User")
        .unwrap()
        .prepare_put(&schema, &props(given), &ctx(), NOW, PutMode::Create)
        .unwrap();
    // Attributes no field owns (the sync layer's) must survive updates.
    item.insert("_ver".into(), Value::S("v1".into()));
    item
}

fn update(given: Json, ops: UpdateOps) -> Result<Item, Error> {
    let schema = schema();
    let user = schema.model("User").unwrap();
    user.prepare_update(
        &schema,
        Some(&existing()),
        &props(given),
        &ops,
        &ctx(),
        LATER,
    )
}

/// The attributes that changed from `existing()`: (attribute, new value or None if removed).
fn changes(updated: &Item) -> Vec<(String, Option<Value>)> {
    let before = existing();
    let names: std::collections::BTreeSet<&String> = before.keys().chain(updated.keys()).collect();
    names
        .into_iter()
        .filter(|name| before.get(*name) != updated.get(*name))
        .map(|name| (name.clone(), updated.get(name).cloned()))
        .collect()
}

fn check(given: Json, ops: UpdateOps, want: Json) {
    let got = update(given.clone(), ops).unwrap_or_else(|e| panic!("{given}: {e}"));
    let mut want: Vec<(String, Option<Value>)> = props(want)
        .into_iter()
        .map(|(k, v)| (k, (!v.is_null()).then(|| Value::from_json(&v).unwrap())))
        .collect();
    want.push(("updated".into(), Some(Value::int(LATER))));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(changes(&got), want, "{given}");
}

fn ops(value: Json) -> UpdateOps {
    let map = props(value);
    let field = |name: &str| {
        map.get(name)
            .and_then(Json::as_object)
            .cloned()
            .unwrap_or_default()
    };
    UpdateOps {
        set: field("set"),
        add: field("add"),
        delete: field("delete"),
        push: field("push"),
        subs: field("subs"),
        remove: map
            .get("remove")
            .and_then(Json::as_array)
            .map_or_else(Vec::new, |list| {
                list.iter()
                    .filter_map(Json::as_str)
                    .map(str::to_string)
                    .collect()
            }),
    }
}

#[test]
fn merges_properties() {
    check(
        json!({"age": "31"}),
        UpdateOps::default(),
        json!({"age": 31}),
    );
    check(
        json!({"age": null}),
        UpdateOps::default(),
        json!({"age": null}),
    );
    check(
        json!({"color": "red"}),
        UpdateOps::default(),
        json!({"data": {"nick": "a", "color": "red"}}),
    );
    check(
        json!({"nick": null}),
        UpdateOps::default(),
        json!({"data": null}),
    );
    check(
        json!({"address": {"street": "high"}}),
        UpdateOps::default(),
        json!({"address": {"street": "high", "zip": 1000, "country": "NZ"}}),
    );
    check(
        json!({"pets": [{"kind": "dog"}]}),
        UpdateOps::default(),
        json!({"pets": [{"kind": "dog"}]}),
    );
    let kept = update(json!({"id": "u1", "updated": 5}), UpdateOps::default()).unwrap();
    assert_eq!(
        (&kept["updated"], &kept["_ver"]),
        (&Value::int(5), &Value::S("v1".into())),
        "a given timestamp is kept"
    );
}

#[test]
fn applies_operations() {
    let tags = |list: &[&str]| Value::Ss(list.iter().map(|s| s.to_string()).collect());
    let got = update(
        json!({}),
        ops(json!({"add": {"tags": ["c", "a"], "balance": 2.5}})),
    )
    .unwrap();
    assert_eq!(
        (&got["tags"], &got["balance"]),
        (&tags(&["a", "b", "c"]), &Value::N("2.5".parse().unwrap()))
    );
    let got = update(
        json!({}),
        ops(json!({"delete": {"tags": ["a"]}, "push": {"notes": ["n2"]}, "remove": ["age"]})),
    )
    .unwrap();
    assert_eq!(got["tags"], tags(&["b"]));
    assert_eq!(
        got["notes"],
        Value::L(vec![Value::S("n1".into()), Value::S("n2".into())])
    );
    assert!(!got.contains_key("age"));
    let got = update(json!({}), ops(json!({"delete": {"tags": ["a", "b"]}}))).unwrap();
    assert!(!got.contains_key("tags"), "an emptied set is removed");
    let got = update(
        json!({}),
        ops(json!({"set": {"age": "${age} + @{n}", "score": 7}, "subs": {"n": 12}})),
    )
    .unwrap();
    assert_eq!(
        (&got["age"], &got["s"]),
        (&Value::int(42), &Value::int(7)),
        "set evaluates on the stored item"
    );
    for bad in [
        json!({"add": {"name": 1}}),
        json!({"delete": {"age": [1]}}),
        json!({"push": {"age": 1}}),
        json!({"set": {"nope": 1}}),
    ] {
        assert!(
            matches!(update(json!({}), ops(bad.clone())), Err(Error::Argument(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        update(json!({}), ops(json!({"set": {"age": "${age} +"}}))),
        Err(Error::Expression { .. })
    ));
}

#[test]
fn required_fields_cannot_be_removed() {
    for (given, ops) in [
        (json!({"name": null}), UpdateOps::default()),
        (json!({}), ops(json!({"remove": ["name"]}))),
    ] {
        let errors = failing_fields(update(given, ops));
        assert_eq!(errors[0].field, "name");
    }
    let errors = failing_fields(update(json!({"nope": 1}), UpdateOps::default()));
    assert!(errors[0].reason.starts_with("unknown property"));
}

#[test]
fn keys_cannot_change() {
    let Err(Error::Argument(message)) = update(json!({"name": "bob"}), UpdateOps::default()) else {
        panic!("a new name changes the sort key")
    };
    assert!(
        message.contains("cannot change the key of a User item"),
        "{message}"
    );
    assert!(matches!(
        update(json!({"sk": "other"}), UpdateOps::default()),
        Err(Error::Argument(_))
    ));
}

#[test]
fn upsert_creates_with_defaults() {
    let schema = schema();
    let user = schema.model("User").unwrap();
    let got = user
        .prepare_update(
            &schema,
            None,
            &props(json!({"id": "u2", "name": "bo"})),
            &UpdateOps::default(),
            &ctx(),
            LATER,
        )
        .unwrap();
    assert_eq!(
        (&got["role"], &got["created"], &got["sk"]),
        (
            &Value::S("user".into()),
            &Value::int(LATER),
            &Value::S("User#000000bo".into())
        )
    );
    let missing = user.prepare_update(
        &schema,
        None,
        &props(json!({"id": "u2"})),
        &UpdateOps::default(),
        &ctx(),
        LATER,
    );
    let fields: Vec<String> = failing_fields(missing)
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(fields, ["sk", "name"], "an upsert must be complete");
}
