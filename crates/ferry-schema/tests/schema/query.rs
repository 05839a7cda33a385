//! key_query: hash resolution, every sort condition, template prefixes and filters.

use ferry_schema::{Error, KeyQuery, SortCondition};
use ferry_types::{Key, Value};
use serde_json::{Value as Json, json};

use crate::fixture::{ctx, item, props, schema};

fn query(model: &str, given: Json, index: Option<&str>) -> Result<KeyQuery, Error> {
    let schema = schema();
    schema
        .model(model)
        .unwrap()
        .key_query(&schema, &props(given), &ctx(), index)
}

fn s(text: &str) -> Value {
    Value::S(text.to_string())
}

fn check(given: Json, want: Option<SortCondition>) {
    let got = query("User", given.clone(), None).unwrap_or_else(|e| panic!("{given}: {e}"));
    assert_eq!(
        (got.index.as_str(), &got.hash),
        ("primary", &s("user#u1")),
        "{given}"
    );
    assert_eq!(got.sort, want, "{given}");
}

#[test]
fn sort_conditions() {
    use SortCondition::*;
    check(
        json!({"id": "u1", "name": "ann"}),
        Some(Eq(s("User#00000ann"))),
    );
    check(json!({"id": "u1"}), Some(BeginsWith(s("User#"))));
    check(json!({"id": "u1", "sk": "x"}), Some(Eq(s("x"))));
    check(json!({"id": "u1", "sk": {"=": "x"}}), Some(Eq(s("x"))));
    check(json!({"id": "u1", "sk": {"<": "x"}}), Some(Lt(s("x"))));
    check(json!({"id": "u1", "sk": {"<=": "x"}}), Some(Le(s("x"))));
    check(json!({"id": "u1", "sk": {">": "x"}}), Some(Gt(s("x"))));
    check(json!({"id": "u1", "sk": {">=": "x"}}), Some(Ge(s("x"))));
    check(
        json!({"id": "u1", "sk": {"between": ["a", "b"]}}),
        Some(Between(s("a"), s("b"))),
    );
    check(
        json!({"id": "u1", "sk": {"begins": "User#"}}),
        Some(BeginsWith(s("User#"))),
    );
    check(
        json!({"id": "u1", "sk": {"begins_with": "User#a"}}),
        Some(BeginsWith(s("User#a"))),
    );
    check(json!({"pk": "user#u1"}), Some(BeginsWith(s("User#"))));
    for bad in [
        json!({"between": ["a"]}),
        json!({"like": "a"}),
        json!({"<": "a", ">": "b"}),
        json!({}),
    ] {
        assert!(
            matches!(
                query("User", json!({"id": "u1", "sk": bad}), None),
                Err(Error::Argument(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn full_key_needs_the_exact_sort() {
    let got = query("User", json!({"id": "u1", "name": "ann"}), None).unwrap();
    assert_eq!(
        got.full_key(),
        Some(Key {
            hash: s("user#u1"),
            sort: Some(s("User#00000ann"))
        })
    );
    assert_eq!(
        query("User", json!({"id": "u1"}), None).unwrap().full_key(),
        None
    );
    let thing = query("Thing", json!({"id": "t1"}), None).unwrap();
    assert_eq!(
        thing.full_key(),
        Some(Key {
            hash: s("thing#t1"),
            sort: Some(s("thing"))
        })
    );
    assert_eq!(
        thing.filters,
        item(json!({})),
        "encoded fields are part of a key, not filters"
    );
}

#[test]
fn other_properties_become_filters() {
    let got = query(
        "User",
        json!({"id": "u1", "age": "5", "nick": "a", "score": 2}),
        None,
    )
    .unwrap();
    assert_eq!(
        got.filters,
        item(json!({"id": "u1", "age": 5, "data.nick": "a", "s": 2}))
    );
}

#[test]
fn secondary_indexes_resolve_from_context() {
    let got = query("Order", json!({}), Some("gs1")).unwrap();
    assert_eq!((got.index.as_str(), &got.hash), ("gs1", &s("device#d1")));
    assert_eq!(got.sort, Some(SortCondition::BeginsWith(s("Order#"))));
    assert_eq!(got.full_key(), None, "only the primary index has full keys");
    let got = query("Order", json!({"total": 7}), Some("gs1")).unwrap();
    assert_eq!(got.sort, Some(SortCondition::Eq(s("Order#000007"))));
    assert_eq!(got.filters, item(json!({"total": 7})));
}

#[test]
fn unresolvable_keys_are_argument_errors() {
    let Err(Error::Argument(message)) = query("User", json!({"name": "ann"}), None) else {
        panic!("no id")
    };
    assert_eq!(
        message,
        "cannot resolve the hash key 'pk' of index primary for User: give pk or the properties its template 'user#${id}' uses (id)"
    );
    assert!(
        matches!(
            query("User", json!({"id": "u1"}), Some("gs1")),
            Err(Error::Argument(_))
        ),
        "User has no gs1 keys"
    );
    assert!(matches!(
        query("User", json!({"id": "u1"}), Some("gs9")),
        Err(Error::Argument(_))
    ));
    assert!(matches!(
        query("User", json!({"id": "u1", "nope": 1}), None),
        Err(Error::Argument(_))
    ));
    assert!(matches!(
        query("User", json!({"id": "u1", "age": "old"}), None),
        Err(Error::Argument(_))
    ));
}

#[test]
fn an_empty_template_prefix_gives_no_sort_condition() {
    let text = "{version: '1', indexes: {primary: {hash: 'pk', sort: 'sk'}}, models: {M: {pk: {value: 'm'}, sk: {value: '${name}'}, name: {}}}}";
    let schema = ferry_schema::Schema::parse(text).unwrap();
    let got = schema
        .model("M")
        .unwrap()
        .key_query(&schema, &props(json!({})), &ctx(), None)
        .unwrap();
    assert_eq!((got.hash, got.sort), (s("m"), None));
}
