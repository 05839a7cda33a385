//! Every operation and option of the OneTable schema (docs: `ONETABLE.md`) through `Db`,
//! each test with the schema it needs written inline, so it shows the property it covers.

use ferry::{Config, Db, Durability, FindOptions, UpdateOps, Write, WriteOptions};
use serde_json::{Map, Value as Json, json};

use crate::support::{ManualClock, config, db, db_with, fails};

/// A find with no options.
fn all() -> FindOptions {
    FindOptions::default()
}

/// `field` of every item of a page.
fn values(items: &[Json], field: &str) -> Vec<Json> {
    items.iter().map(|item| item[field].clone()).collect()
}

/// Substitutions from a JSON object.
fn subs(value: Json) -> Map<String, Json> {
    match value {
        Json::Object(map) => map,
        other => panic!("substitutions must be an object, not {other}"),
    }
}

/// Update options with only `ops`.
fn ops(ops: UpdateOps) -> WriteOptions {
    WriteOptions {
        ops,
        ..WriteOptions::default()
    }
}

/// Update operations from a JSON object of `set`, `add`, `remove`, `delete`, `push`.
fn update_ops(value: Json) -> UpdateOps {
    let mut ops = UpdateOps::default();
    for (name, value) in subs(value) {
        match name.as_str() {
            "set" => ops.set = subs(value),
            "add" => ops.add = subs(value),
            "delete" => ops.delete = subs(value),
            "push" => ops.push = subs(value),
            "remove" => {
                ops.remove = value
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            }
            other => panic!("unknown update operation {other}"),
        }
    }
    ops
}

fn is_crockford(text: &str) -> bool {
    text.bytes()
        .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b))
}

// ---------------------------------------------------------------------------------------
// create

#[test]
fn create_generates_ulid_uuid_and_uid_ids_for_absent_properties() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Thing: {
            pk: { value: 'thing#${id}' }, sk: { value: 'thing#' },
            id: { generate: 'ulid' },
            uuid: { generate: 'uuid' },
            short: { generate: 'uid' },
            six: { generate: 'uid(6)' },
            legacy: { uuid: 'ulid' },
        } },
    }"#);
    let a = db.create("Thing", json!({})).unwrap();
    let b = db.create("Thing", json!({})).unwrap();
    let id = a["id"].as_str().unwrap();
    assert_eq!(id.len(), 26, "ulid: {id}");
    assert!(is_crockford(id), "ulid: {id}");
    assert_ne!(a["id"], b["id"]);
    let uuid = a["uuid"].as_str().unwrap();
    assert_eq!(uuid.len(), 36, "uuid: {uuid}");
    assert_eq!(&uuid[14..15], "4", "uuid v4: {uuid}");
    assert!("89ab".contains(&uuid[19..20]), "uuid variant: {uuid}");
    assert_eq!(a["short"].as_str().unwrap().len(), 10);
    assert!(is_crockford(a["short"].as_str().unwrap()));
    assert_eq!(a["six"].as_str().unwrap().len(), 6);
    assert_eq!(a["legacy"].as_str().unwrap().len(), 26);
    // The generated id is the key: the item reads back by it.
    assert_eq!(db.get("Thing", json!({"id": id})).unwrap(), Some(a));
    // A given id is kept.
    let given = db.create("Thing", json!({"id": "mine"})).unwrap();
    assert_eq!(given["id"], "mine");
    assert!(db.get("Thing", json!({"id": "mine"})).unwrap().is_some());
}

#[test]
fn create_applies_defaults_only_to_absent_properties() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Task: {
            pk: { value: 'task#${id}' }, sk: { value: 'task#' },
            id: { required: true },
            state: { enum: ['open', 'done'], default: 'open' },
            priority: { type: 'number', default: 3 },
            urgent: { type: 'boolean', default: false },
        } },
    }"#);
    let task = db.create("Task", json!({"id": "1"})).unwrap();
    assert_eq!(
        (&task["state"], &task["priority"], &task["urgent"]),
        (&json!("open"), &json!(3), &json!(false))
    );
    let task = db
        .create("Task", json!({"id": "2", "state": "done", "priority": 1}))
        .unwrap();
    assert_eq!(
        (&task["state"], &task["priority"]),
        (&json!("done"), &json!(1))
    );
    let stored = db.get("Task", json!({"id": "2"})).unwrap().unwrap();
    assert_eq!(stored["state"], "done");
}

#[test]
fn create_of_an_existing_item_is_conditional_check_failed_and_keeps_the_item() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { User: {
            pk: { value: 'user#${id}' }, sk: { value: 'user#' },
            id: { required: true }, name: {},
        } },
    }"#);
    db.create("User", json!({"id": "u1", "name": "Ada"}))
        .unwrap();
    let (code, message) = fails(db.create("User", json!({"id": "u1", "name": "Bob"})));
    assert_eq!(code, "ConditionalCheckFailed");
    assert!(message.contains("User"), "{message}");
    let user = db.get("User", json!({"id": "u1"})).unwrap().unwrap();
    assert_eq!(user["name"], "Ada");
    // put replaces.
    db.put("User", json!({"id": "u1", "name": "Bob"})).unwrap();
    let user = db.get("User", json!({"id": "u1"})).unwrap().unwrap();
    assert_eq!(user["name"], "Bob");
}

// ---------------------------------------------------------------------------------------
// get

#[test]
fn get_by_full_key_returns_the_item_or_none() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: {
            User: { pk: { value: 'user#${id}' }, sk: { value: 'user#' }, id: {}, name: {} },
            Group: { pk: { value: 'user#${id}' }, sk: { value: 'group#' }, id: {} },
        },
    }"#);
    db.create("User", json!({"id": "u1", "name": "Ada"}))
        .unwrap();
    assert_eq!(
        db.get("User", json!({"id": "u1"})).unwrap(),
        Some(json!({"id": "u1", "name": "Ada"}))
    );
    assert_eq!(db.get("User", json!({"id": "u2"})).unwrap(), None);
    // Same partition, another model: not a User.
    db.create("Group", json!({"id": "u3"})).unwrap();
    assert_eq!(db.get("User", json!({"id": "u3"})).unwrap(), None);
    let (code, message) = fails(db.get("Nobody", json!({"id": "u1"})));
    assert_eq!(code, "ArgumentError");
    assert!(message.contains("Nobody"), "{message}");
}

#[test]
fn get_with_only_the_hash_key_finds_one_item_and_refuses_two() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Member: {
            pk: { value: 'account#${account}' }, sk: { value: 'member#${name}' },
            account: { required: true }, name: { required: true }, role: {},
        } },
    }"#);
    db.create(
        "Member",
        json!({"account": "a", "name": "ada", "role": "admin"}),
    )
    .unwrap();
    let one = db.get("Member", json!({"account": "a"})).unwrap().unwrap();
    assert_eq!(one["name"], "ada");
    db.create("Member", json!({"account": "a", "name": "bob"}))
        .unwrap();
    let (code, message) = fails(db.get("Member", json!({"account": "a"})));
    assert_eq!(code, "NonUniqueError");
    assert!(message.contains("Member"), "{message}");
    // A filter narrowing to one makes it a valid get again.
    let admin = db
        .get("Member", json!({"account": "a", "role": "admin"}))
        .unwrap()
        .unwrap();
    assert_eq!(admin["name"], "ada");
}

/// Users by id, and by email through `gs1`, which holds every attribute.
const EMAIL_SCHEMA: &str = r#"{
    version: '1',
    indexes: { primary: { hash: 'pk', sort: 'sk' }, gs1: { hash: 'gs1pk', sort: 'gs1sk' } },
    models: { User: {
        pk: { value: 'user#${id}' }, sk: { value: 'user#' },
        id: { generate: 'ulid' }, email: { required: true }, name: {}, age: { type: 'number' },
        gs1pk: { value: 'email#${email}' }, gs1sk: { value: 'user#' },
    } },
}"#;

#[test]
fn get_on_a_gsi_reads_by_its_keys() {
    let (_dir, db) = db(EMAIL_SCHEMA);
    let ada = db
        .create("User", json!({"email": "ada@x", "name": "Ada"}))
        .unwrap();
    db.create("User", json!({"email": "bob@x", "name": "Bob"}))
        .unwrap();
    let on_gs1 = FindOptions {
        index: Some("gs1".into()),
        ..all()
    };
    let found = db
        .get_with("User", json!({"email": "ada@x"}), &on_gs1)
        .unwrap();
    assert_eq!(found, Some(ada));
    assert_eq!(
        db.get_with("User", json!({"email": "eve@x"}), &on_gs1)
            .unwrap(),
        None
    );
    let (code, message) = fails(db.get_with(
        "User",
        json!({"email": "ada@x"}),
        &FindOptions {
            index: Some("gs9".into()),
            ..all()
        },
    ));
    assert_eq!(code, "ArgumentError");
    assert!(message.contains("gs9"), "{message}");
}

#[test]
fn an_update_reaches_the_index_entries_that_hold_its_fields() {
    let (_dir, db) = db(EMAIL_SCHEMA);
    db.create("User", json!({"id": "u1", "email": "ada@x", "name": "Ada"}))
        .unwrap();
    let on_gs1 = FindOptions {
        index: Some("gs1".into()),
        ..all()
    };
    let by_email = |email: &str| {
        db.get_with("User", json!({ "email": email }), &on_gs1)
            .unwrap()
    };
    // Plain fields, changed in place: the primary item and the index's copy both move.
    let updated = db
        .update(
            "User",
            json!({"id": "u1", "name": "Ada L", "age": "36"}),
            &WriteOptions::default(),
        )
        .unwrap();
    assert_eq!(
        (updated["name"].clone(), updated["age"].clone()),
        (json!("Ada L"), json!(36))
    );
    assert_eq!(by_email("ada@x").unwrap()["name"], "Ada L");
    let got = db.get("User", json!({"id": "u1"})).unwrap().unwrap();
    assert_eq!(got, updated);
    // A template input: the index entry moves to the new key, the old one goes.
    db.update(
        "User",
        json!({"id": "u1", "email": "lovelace@x"}),
        &WriteOptions::default(),
    )
    .unwrap();
    assert_eq!(by_email("ada@x"), None);
    assert_eq!(by_email("lovelace@x").unwrap()["name"], "Ada L");
    // A bad value is refused, naming the field, and changes nothing.
    let (code, message) = fails(db.update(
        "User",
        json!({"id": "u1", "age": "old"}),
        &WriteOptions::default(),
    ));
    assert_eq!(code, "ArgumentError", "{message}");
    assert!(message.contains("'age'"), "{message}");
    assert_eq!(
        db.get("User", json!({"id": "u1"})).unwrap().unwrap()["age"],
        36
    );
}

// ---------------------------------------------------------------------------------------
// find

const LIST_SCHEMA: &str = r#"{
    version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
    models: { Entry: {
        pk: { value: 'list#${list}' }, sk: { value: 'entry#${n:3:0}' },
        list: { required: true }, n: { type: 'number', required: true },
        color: {}, size: { type: 'number' },
    } },
}"#;

/// A database with entries 1, 2, 3, 4, 5, 10, 11 in list `a` and one in list `b`.
fn entries() -> (tempfile::TempDir, Db) {
    let (dir, db) = db(LIST_SCHEMA);
    for n in [1, 2, 3, 4, 5, 10, 11] {
        let color = if n % 2 == 0 { "red" } else { "blue" };
        db.create(
            "Entry",
            json!({"list": "a", "n": n, "color": color, "size": n * 10}),
        )
        .unwrap();
    }
    db.create("Entry", json!({"list": "b", "n": 1})).unwrap();
    (dir, db)
}

fn ns(db: &Db, props: Json, options: &FindOptions) -> Vec<Json> {
    values(&db.find("Entry", props, options).unwrap().items, "n")
}

#[test]
fn find_by_hash_key_returns_the_partition_in_sort_order() {
    let (_dir, db) = entries();
    assert_eq!(
        ns(&db, json!({"list": "a"}), &all()),
        [1, 2, 3, 4, 5, 10, 11].map(|n| json!(n))
    );
    assert_eq!(ns(&db, json!({"list": "b"}), &all()), [json!(1)]);
    assert!(ns(&db, json!({"list": "c"}), &all()).is_empty());
    let (code, message) = fails(db.find("Entry", json!({}), &all()));
    assert_eq!(code, "ArgumentError");
    assert!(message.contains("list"), "{message}");
}

#[test]
fn find_with_each_sort_key_condition() {
    let (_dir, db) = entries();
    let cases = [
        (json!({"=": "entry#002"}), vec![2]),
        (json!({"<": "entry#003"}), vec![1, 2]),
        (json!({"<=": "entry#003"}), vec![1, 2, 3]),
        (json!({">": "entry#005"}), vec![10, 11]),
        (json!({">=": "entry#005"}), vec![5, 10, 11]),
        (
            json!({"between": ["entry#002", "entry#004"]}),
            vec![2, 3, 4],
        ),
        (json!({"begins": "entry#01"}), vec![10, 11]),
        (json!({"begins_with": "entry#00"}), vec![1, 2, 3, 4, 5]),
        (json!("entry#004"), vec![4]),
    ];
    for (condition, expected) in cases {
        let found = ns(&db, json!({"list": "a", "sk": condition.clone()}), &all());
        let expected: Vec<Json> = expected.into_iter().map(|n| json!(n)).collect();
        assert_eq!(found, expected, "sort condition {condition}");
    }
    let (code, message) = fails(db.find("Entry", json!({"list": "a", "sk": {"~": "x"}}), &all()));
    assert_eq!(code, "ArgumentError");
    assert!(message.contains("sk"), "{message}");
}

#[test]
fn find_with_an_unresolved_sort_template_uses_its_prefix() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: {
            Reading: {
                pk: { value: 'device#${deviceId}' }, sk: { value: 'reading#${sensor}#${at:4:0}' },
                deviceId: { required: true }, sensor: { required: true },
                at: { type: 'number', required: true },
            },
            Fault: {
                pk: { value: 'device#${deviceId}' }, sk: { value: 'fault#${at:4:0}' },
                deviceId: { required: true }, at: { type: 'number', required: true },
            },
        },
    }"#);
    for (sensor, at) in [("t", 1), ("te", 2), ("t", 3), ("h", 4)] {
        db.create("Reading", json!({"sensor": sensor, "at": at}))
            .unwrap();
    }
    db.create("Fault", json!({"at": 1})).unwrap();
    let at = |props| values(&db.find("Reading", props, &all()).unwrap().items, "at");
    // `reading#` only: every reading, no fault.
    assert_eq!(at(json!({})), [4, 1, 3, 2].map(|n| json!(n)));
    // `reading#t#`: sensor t, not sensor te.
    assert_eq!(at(json!({"sensor": "t"})), [json!(1), json!(3)]);
    // Fully resolved: the one item.
    assert_eq!(at(json!({"sensor": "t", "at": 3})), [json!(3)]);
}

#[test]
fn find_treats_other_properties_as_equality_filters() {
    let (_dir, db) = entries();
    assert_eq!(
        ns(&db, json!({"list": "a", "color": "red"}), &all()),
        [2, 4, 10].map(|n| json!(n))
    );
    assert_eq!(
        ns(
            &db,
            json!({"list": "a", "color": "red", "size": 40}),
            &all()
        ),
        [json!(4)]
    );
    // Numeric text is coerced like on a write.
    assert_eq!(
        ns(&db, json!({"list": "a", "size": "40"}), &all()),
        [json!(4)]
    );
    let (code, message) = fails(db.find("Entry", json!({"list": "a", "shape": 1}), &all()));
    assert_eq!(code, "ArgumentError");
    assert!(message.contains("shape"), "{message}");
}

#[test]
fn find_where_with_substitutions_and_list_expansion() {
    let (_dir, db) = entries();
    let find = |condition: &str, values: Json| {
        ns(
            &db,
            json!({"list": "a"}),
            &FindOptions {
                condition: Some(condition.into()),
                subs: subs(values),
                ..all()
            },
        )
    };
    assert_eq!(
        find(
            "${size} >= @{min} AND ${color} = @{color}",
            json!({"min": 30, "color": "blue"})
        ),
        [3, 5, 11].map(|n| json!(n))
    );
    assert_eq!(
        find("${n} IN (@{...wanted})", json!({"wanted": [2, 5, 11, 99]})),
        [2, 5, 11].map(|n| json!(n))
    );
    assert_eq!(
        find(
            "${size} BETWEEN {20} AND {40} AND NOT ${color} = {\"red\"}",
            json!({})
        ),
        [json!(3)]
    );
    assert_eq!(
        find("begins_with(${color}, {\"bl\"}) AND ${n} < {3}", json!({})),
        [json!(1)]
    );
    let (code, _) = fails(db.find(
        "Entry",
        json!({"list": "a"}),
        &FindOptions {
            condition: Some("${size} >>> {1}".into()),
            ..all()
        },
    ));
    assert_eq!(code, "ExpressionError");
}

#[test]
fn find_pages_with_limit_and_next_until_next_is_none() {
    let (_dir, db) = entries();
    let mut seen = Vec::new();
    let mut next = None;
    let mut pages = 0;
    loop {
        let page = db
            .find(
                "Entry",
                json!({"list": "a"}),
                &FindOptions {
                    limit: Some(3),
                    next: next.clone(),
                    ..all()
                },
            )
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        assert_eq!(page.count, page.items.len());
        seen.extend(values(&page.items, "n"));
        next = page.next;
        if next.is_none() {
            break;
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 10, 11].map(|n| json!(n)));
    assert_eq!(pages, 3);
    // A limit equal to the number of matches has no next page.
    let page = db
        .find(
            "Entry",
            json!({"list": "a"}),
            &FindOptions {
                limit: Some(7),
                ..all()
            },
        )
        .unwrap();
    assert_eq!((page.items.len(), page.next), (7, None));
    let (code, message) = fails(db.find(
        "Entry",
        json!({"list": "a"}),
        &FindOptions {
            next: Some("not-a-cursor".into()),
            ..all()
        },
    ));
    assert_eq!(code, "ArgumentError");
    assert!(message.contains("cursor"), "{message}");
}

#[test]
fn find_reverse_returns_descending_order_and_pages_backwards() {
    let (_dir, db) = entries();
    let reverse = FindOptions {
        reverse: true,
        ..all()
    };
    assert_eq!(
        ns(&db, json!({"list": "a"}), &reverse),
        [11, 10, 5, 4, 3, 2, 1].map(|n| json!(n))
    );
    let first = db
        .find(
            "Entry",
            json!({"list": "a", "sk": {"<": "entry#010"}}),
            &FindOptions {
                limit: Some(2),
                ..reverse.clone()
            },
        )
        .unwrap();
    assert_eq!(values(&first.items, "n"), [json!(5), json!(4)]);
    let second = db
        .find(
            "Entry",
            json!({"list": "a", "sk": {"<": "entry#010"}}),
            &FindOptions {
                limit: Some(2),
                next: first.next,
                ..reverse
            },
        )
        .unwrap();
    assert_eq!(values(&second.items, "n"), [json!(3), json!(2)]);
}

#[test]
fn find_count_counts_matches_without_returning_them() {
    let (_dir, db) = entries();
    let page = db
        .find(
            "Entry",
            json!({"list": "a", "color": "blue"}),
            &FindOptions {
                count: true,
                ..all()
            },
        )
        .unwrap();
    assert_eq!(page.count, 4);
    assert!(page.items.is_empty());
    assert_eq!(page.next, None);
}

#[test]
fn find_fields_returns_only_those_properties() {
    let (_dir, db) = entries();
    let page = db
        .find(
            "Entry",
            json!({"list": "a", "sk": "entry#002"}),
            &FindOptions {
                fields: Some(vec!["n".into(), "color".into()]),
                ..all()
            },
        )
        .unwrap();
    assert_eq!(page.items, [json!({"n": 2, "color": "red"})]);
}

#[test]
fn find_on_a_keys_only_gsi_follows_to_the_full_item() {
    let (_dir, db) = db(r#"{
        version: '1',
        indexes: {
            primary: { hash: 'pk', sort: 'sk' },
            gs1: { hash: 'gs1pk', sort: 'gs1sk', project: 'keys' },
        },
        models: { User: {
            pk: { value: 'user#${id}' }, sk: { value: 'user#' },
            id: { required: true }, name: { required: true }, team: { required: true },
            gs1pk: { value: 'team#${team}' }, gs1sk: { value: 'user#${name}' },
        } },
    }"#);
    db.create("User", json!({"id": "1", "name": "Cy", "team": "red"}))
        .unwrap();
    db.create("User", json!({"id": "2", "name": "Al", "team": "red"}))
        .unwrap();
    db.create("User", json!({"id": "3", "name": "Bo", "team": "blue"}))
        .unwrap();
    let on_gs1 = FindOptions {
        index: Some("gs1".into()),
        ..all()
    };
    // Only the keys are in the index: the name is not there without follow. (The team is
    // not projected either, so it is given as the index key, not as a filter.)
    let keys = db
        .find("User", json!({"gs1pk": "team#red"}), &on_gs1)
        .unwrap();
    assert_eq!(keys.items.len(), 2);
    assert!(
        keys.items.iter().all(|u| u.get("name").is_none()),
        "{keys:?}"
    );
    let full = db
        .find(
            "User",
            json!({"gs1pk": "team#red"}),
            &FindOptions {
                follow: true,
                ..on_gs1
            },
        )
        .unwrap();
    // Ordered by the index's sort key (the name), full items.
    assert_eq!(
        full.items,
        [
            json!({"id": "2", "name": "Al", "team": "red"}),
            json!({"id": "1", "name": "Cy", "team": "red"})
        ]
    );
}

#[test]
fn find_on_an_lsi_orders_and_conditions_by_its_sort_key() {
    let (_dir, db) = db(r#"{
        version: '1',
        indexes: {
            primary: { hash: 'pk', sort: 'sk' },
            ls1: { type: 'local', sort: 'ls1sk' },
        },
        models: { Score: {
            pk: { value: 'game#${game}' }, sk: { value: 'player#${player}' },
            game: { required: true }, player: { required: true },
            points: { type: 'number', required: true, map: 'ls1sk' },
        } },
    }"#);
    for (player, points) in [("a", 30), ("b", 10), ("c", 20), ("d", 40)] {
        db.create(
            "Score",
            json!({"game": "g", "player": player, "points": points}),
        )
        .unwrap();
    }
    db.create("Score", json!({"game": "h", "player": "z", "points": 25}))
        .unwrap();
    let on_ls1 = |reverse| FindOptions {
        index: Some("ls1".into()),
        reverse,
        ..all()
    };
    let players =
        |props, options| values(&db.find("Score", props, &options).unwrap().items, "player");
    assert_eq!(
        players(json!({"game": "g"}), on_ls1(false)),
        ["b", "c", "a", "d"].map(|p| json!(p))
    );
    assert_eq!(
        players(json!({"game": "g", "points": {">=": 20}}), on_ls1(true)),
        ["d", "a", "c"].map(|p| json!(p))
    );
}

// ---------------------------------------------------------------------------------------
// update

const ACCOUNT_SCHEMA: &str = r#"{
    version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
    models: { Account: {
        pk: { value: 'account#${id}' }, sk: { value: 'account#' },
        id: { required: true }, name: { required: true }, note: {},
        balance: { type: 'number' }, tags: { type: 'set' }, log: { type: 'array' },
        flags: { type: 'object' },
    } },
}"#;

fn account() -> (tempfile::TempDir, Db) {
    let (dir, db) = db(ACCOUNT_SCHEMA);
    db.create(
        "Account",
        json!({"id": "a", "name": "Ada", "note": "n", "balance": 100, "tags": ["x", "y"], "log": ["one"]}),
    )
    .unwrap();
    (dir, db)
}

fn read_account(db: &Db) -> Json {
    db.get("Account", json!({"id": "a"})).unwrap().unwrap()
}

#[test]
fn update_merges_given_properties_and_null_removes() {
    let (_dir, db) = account();
    let plain = WriteOptions::default();
    let updated = db
        .update(
            "Account",
            json!({"id": "a", "name": "Ada L", "note": null}),
            &plain,
        )
        .unwrap();
    assert_eq!(updated["name"], "Ada L");
    assert_eq!(updated["balance"], 100, "untouched fields stay");
    assert!(updated.get("note").is_none(), "{updated}");
    assert_eq!(read_account(&db), updated);
    // A required field cannot be nulled.
    let (code, message) = fails(db.update("Account", json!({"id": "a", "name": null}), &plain));
    assert_eq!(code, "ValidationError");
    assert!(
        message.contains("name") && message.contains("Account"),
        "{message}"
    );
    assert_eq!(read_account(&db)["name"], "Ada L");
}

#[test]
fn update_set_evaluates_expressions_with_substitutions() {
    let (_dir, db) = account();
    let id = json!({"id": "a"});
    db.update(
        "Account",
        id.clone(),
        &ops(update_ops(json!({"set": {"balance": "${balance} + {10}"}}))),
    )
    .unwrap();
    assert_eq!(read_account(&db)["balance"], 110);
    // A text in `set` is an expression: a literal text is written `{"..."}`.
    let options = WriteOptions {
        subs: subs(json!({"fee": 25})),
        ..ops(update_ops(
            json!({"set": {"balance": "${balance} - @{fee}", "note": "{\"paid\"}"}}),
        ))
    };
    let updated = db.update("Account", id, &options).unwrap();
    assert_eq!(
        (&updated["balance"], &updated["note"]),
        (&json!(85), &json!("paid"))
    );
}

#[test]
fn update_add_increments_numbers_and_unions_sets() {
    let (_dir, db) = account();
    let options = ops(update_ops(
        json!({"add": {"balance": -30, "tags": ["y", "z"]}}),
    ));
    let updated = db.update("Account", json!({"id": "a"}), &options).unwrap();
    assert_eq!(updated["balance"], 70);
    let mut tags: Vec<String> = serde_json::from_value(updated["tags"].clone()).unwrap();
    tags.sort();
    assert_eq!(tags, ["x", "y", "z"]);
    // add on an absent number starts from zero.
    db.update(
        "Account",
        json!({"id": "a", "balance": null}),
        &WriteOptions::default(),
    )
    .unwrap();
    let updated = db
        .update(
            "Account",
            json!({"id": "a"}),
            &ops(update_ops(json!({"add": {"balance": 5}}))),
        )
        .unwrap();
    assert_eq!(updated["balance"], 5);
    let (code, message) = fails(db.update(
        "Account",
        json!({"id": "a"}),
        &ops(update_ops(json!({"add": {"name": 1}}))),
    ));
    assert_eq!(code, "ArgumentError");
    assert!(message.contains("name"), "{message}");
}

#[test]
fn update_remove_drops_attributes_and_delete_takes_values_out_of_sets() {
    let (_dir, db) = account();
    let updated = db
        .update(
            "Account",
            json!({"id": "a"}),
            &ops(update_ops(
                json!({"remove": ["note"], "delete": {"tags": ["x"]}}),
            )),
        )
        .unwrap();
    assert!(updated.get("note").is_none(), "{updated}");
    assert_eq!(updated["tags"], json!(["y"]));
    // Deleting the last value removes the set.
    let updated = db
        .update(
            "Account",
            json!({"id": "a"}),
            &ops(update_ops(json!({"delete": {"tags": ["y"]}}))),
        )
        .unwrap();
    assert!(updated.get("tags").is_none(), "{updated}");
    assert!(read_account(&db).get("tags").is_none());
    let (code, message) = fails(db.update(
        "Account",
        json!({"id": "a"}),
        &ops(update_ops(json!({"remove": ["name"]}))),
    ));
    assert_eq!(code, "ValidationError");
    assert!(message.contains("name"), "{message}");
}

#[test]
fn update_push_appends_to_a_list() {
    let (_dir, db) = account();
    let updated = db
        .update(
            "Account",
            json!({"id": "a"}),
            &ops(update_ops(json!({"push": {"log": ["two", "three"]}}))),
        )
        .unwrap();
    assert_eq!(updated["log"], json!(["one", "two", "three"]));
    assert_eq!(read_account(&db)["log"], json!(["one", "two", "three"]));
    let (code, _) = fails(db.update(
        "Account",
        json!({"id": "a"}),
        &ops(update_ops(json!({"push": {"note": ["x"]}}))),
    ));
    assert_eq!(code, "ArgumentError");
}

#[test]
fn update_exists_conditions() {
    let (_dir, db) = account();
    let must_not_exist = WriteOptions {
        exists: Some(false),
        ..WriteOptions::default()
    };
    let (code, _) = fails(db.update("Account", json!({"id": "a", "note": "x"}), &must_not_exist));
    assert_eq!(code, "ConditionalCheckFailed");
    assert_eq!(read_account(&db)["note"], "n");
    // exists: false on a missing item creates it.
    let created = db
        .update(
            "Account",
            json!({"id": "b", "name": "Bob"}),
            &must_not_exist,
        )
        .unwrap();
    assert_eq!(created["name"], "Bob");
    let must_exist = WriteOptions {
        exists: Some(true),
        ..WriteOptions::default()
    };
    let (code, _) = fails(db.update("Account", json!({"id": "c", "name": "C"}), &must_exist));
    assert_eq!(code, "NotFoundError");
    assert_eq!(db.get("Account", json!({"id": "c"})).unwrap(), None);
}

#[test]
fn update_where_that_is_false_is_conditional_check_failed() {
    let (_dir, db) = account();
    let when = |condition: &str| WriteOptions {
        condition: Some(condition.into()),
        subs: subs(json!({"min": 50})),
        ..ops(update_ops(json!({"set": {"balance": "${balance} - {60}"}})))
    };
    db.update("Account", json!({"id": "a"}), &when("${balance} >= @{min}"))
        .unwrap();
    assert_eq!(read_account(&db)["balance"], 40);
    let (code, message) =
        fails(db.update("Account", json!({"id": "a"}), &when("${balance} >= @{min}")));
    assert_eq!(code, "ConditionalCheckFailed");
    assert!(message.contains("Account"), "{message}");
    assert_eq!(
        read_account(&db)["balance"],
        40,
        "a refused update changes nothing"
    );
}

#[test]
fn update_of_a_missing_item_is_not_found_unless_upserting() {
    let (_dir, db) = db(ACCOUNT_SCHEMA);
    let (code, message) = fails(db.update(
        "Account",
        json!({"id": "z", "name": "Zed"}),
        &WriteOptions::default(),
    ));
    assert_eq!(code, "NotFoundError");
    assert!(message.contains("Account"), "{message}");
    assert_eq!(db.get("Account", json!({"id": "z"})).unwrap(), None);
    let created = db
        .upsert(
            "Account",
            json!({"id": "z", "name": "Zed"}),
            &WriteOptions::default(),
        )
        .unwrap();
    assert_eq!(created["name"], "Zed");
    assert_eq!(
        db.get("Account", json!({"id": "z"})).unwrap(),
        Some(created)
    );
    // An upsert of a new item must still satisfy `required`.
    let (code, message) = fails(db.upsert("Account", json!({"id": "y"}), &WriteOptions::default()));
    assert_eq!(code, "ValidationError");
    assert!(message.contains("name"), "{message}");
}

#[test]
fn update_cannot_change_the_primary_key() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Member: {
            pk: { value: 'team#${team}' }, sk: { value: 'member#${name}' },
            team: { required: true }, name: { required: true }, role: {},
        } },
    }"#);
    db.create("Member", json!({"team": "t", "name": "ada"}))
        .unwrap();
    // The key is given, and the new name would recompute the sort key.
    let (code, message) = fails(db.update(
        "Member",
        json!({"team": "t", "sk": "member#ada", "name": "bob"}),
        &WriteOptions::default(),
    ));
    assert_eq!(code, "ArgumentError");
    assert!(
        message.contains("key") && message.contains("Member"),
        "{message}"
    );
    let found = db.find("Member", json!({"team": "t"}), &all()).unwrap();
    assert_eq!(values(&found.items, "name"), [json!("ada")]);
}

// ---------------------------------------------------------------------------------------
// remove

#[test]
fn remove_by_key_returns_the_removed_item() {
    let (_dir, db) = account();
    let plain = WriteOptions::default();
    let removed = db.remove("Account", json!({"id": "a"}), &plain).unwrap();
    assert_eq!(removed.unwrap()["name"], "Ada");
    assert_eq!(db.get("Account", json!({"id": "a"})).unwrap(), None);
    // Removing what is not there is no error, and returns nothing.
    assert_eq!(
        db.remove("Account", json!({"id": "a"}), &plain).unwrap(),
        None
    );
    let must_exist = WriteOptions {
        exists: Some(true),
        ..plain
    };
    let (code, _) = fails(db.remove("Account", json!({"id": "a"}), &must_exist));
    assert_eq!(code, "ConditionalCheckFailed");
}

#[test]
fn remove_with_where_removes_only_when_it_holds() {
    let (_dir, db) = account();
    let when = |condition: &str| WriteOptions {
        condition: Some(condition.into()),
        ..WriteOptions::default()
    };
    let (code, _) = fails(db.remove("Account", json!({"id": "a"}), &when("${balance} = {0}")));
    assert_eq!(code, "ConditionalCheckFailed");
    assert!(db.get("Account", json!({"id": "a"})).unwrap().is_some());
    db.remove("Account", json!({"id": "a"}), &when("${balance} = {100}"))
        .unwrap();
    assert_eq!(db.get("Account", json!({"id": "a"})).unwrap(), None);
}

#[test]
fn remove_many_removes_every_match_of_a_find() {
    let (_dir, db) = entries();
    let removed = db
        .remove_many("Entry", json!({"list": "a", "color": "red"}), &all())
        .unwrap();
    assert_eq!(removed, 3);
    assert_eq!(
        ns(&db, json!({"list": "a"}), &all()),
        [1, 3, 5, 11].map(|n| json!(n))
    );
    let removed = db
        .remove_many(
            "Entry",
            json!({"list": "a"}),
            &FindOptions {
                condition: Some("${size} > {20}".into()),
                ..all()
            },
        )
        .unwrap();
    assert_eq!(removed, 3);
    assert_eq!(ns(&db, json!({"list": "a"}), &all()), [json!(1)]);
    assert_eq!(
        ns(&db, json!({"list": "b"}), &all()),
        [json!(1)],
        "other partitions stay"
    );
}

// ---------------------------------------------------------------------------------------
// transactions

#[test]
fn a_transaction_applies_all_writes_or_none_and_names_the_failing_one() {
    let (_dir, db) = account();
    let update = |id: &str| Write::Update {
        model: "Account".into(),
        props: json!({"id": id, "note": "t"}),
        options: WriteOptions::default(),
    };
    let writes = [
        Write::Create {
            model: "Account".into(),
            props: json!({"id": "b", "name": "Bob"}),
        },
        update("a"),
        update("missing"),
    ];
    let error = db.transaction(&writes).unwrap_err();
    assert_eq!(error.code(), "TransactionCanceled");
    match &error {
        ferry::Error::TransactionCanceled { index, reason } => {
            assert_eq!(*index, 2);
            assert_eq!(reason.code(), "NotFoundError");
        }
        other => panic!("expected TransactionCanceled, got {other:?}"),
    }
    assert!(error.to_string().contains("write 2"), "{error}");
    assert_eq!(db.get("Account", json!({"id": "b"})).unwrap(), None);
    assert_eq!(read_account(&db)["note"], "n");
    // Without the failing write, everything commits.
    let results = db.batch(&writes[..2]).unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].as_ref().unwrap()["name"], "Bob");
    assert!(db.get("Account", json!({"id": "b"})).unwrap().is_some());
    assert_eq!(read_account(&db)["note"], "t");
    // A failing condition check cancels too.
    let check = Write::Check {
        model: "Account".into(),
        props: json!({"id": "a"}),
        options: WriteOptions {
            condition: Some("${balance} > {1000}".into()),
            ..WriteOptions::default()
        },
    };
    let error = db
        .transaction(&[
            Write::Remove {
                model: "Account".into(),
                props: json!({"id": "b"}),
                options: WriteOptions::default(),
            },
            check,
        ])
        .unwrap_err();
    match error {
        ferry::Error::TransactionCanceled { index, reason } => {
            assert_eq!((index, reason.code()), (1, "ConditionalCheckFailed"));
        }
        other => panic!("expected TransactionCanceled, got {other:?}"),
    }
    assert!(db.get("Account", json!({"id": "b"})).unwrap().is_some());
}

#[test]
fn later_writes_of_a_transaction_see_earlier_ones() {
    let (_dir, db) = db(ACCOUNT_SCHEMA);
    let results = db
        .transaction(&[
            Write::Create {
                model: "Account".into(),
                props: json!({"id": "a", "name": "Ada", "balance": 1}),
            },
            Write::Update {
                model: "Account".into(),
                props: json!({"id": "a"}),
                options: ops(update_ops(json!({"set": {"balance": "${balance} + {1}"}}))),
            },
            Write::Check {
                model: "Account".into(),
                props: json!({"id": "a"}),
                options: WriteOptions {
                    condition: Some("${balance} = {2}".into()),
                    ..WriteOptions::default()
                },
            },
        ])
        .unwrap();
    assert_eq!(results[1].as_ref().unwrap()["balance"], 2);
    assert_eq!(results[2], None);
    assert_eq!(read_account(&db)["balance"], 2);
    // Creating the same item twice in one transaction fails at the second.
    let create = Write::Create {
        model: "Account".into(),
        props: json!({"id": "b", "name": "Bob"}),
    };
    match db.transaction(&[create.clone(), create]).unwrap_err() {
        ferry::Error::TransactionCanceled { index, reason } => {
            assert_eq!((index, reason.code()), (1, "ConditionalCheckFailed"));
        }
        other => panic!("expected TransactionCanceled, got {other:?}"),
    }
    assert_eq!(db.get("Account", json!({"id": "b"})).unwrap(), None);
}

// ---------------------------------------------------------------------------------------
// context, typed access, hidden fields, map, nested schemas

#[test]
fn context_properties_fill_absent_fields_and_keys() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Reading: {
            pk: { value: 'device#${deviceId}' }, sk: { value: 'reading#${at}' },
            deviceId: { required: true }, at: { type: 'number', required: true },
        } },
    }"#);
    // The test database's context has deviceId = d1.
    assert_eq!(db.context().get("deviceId"), Some(&json!("d1")));
    let reading = db.create("Reading", json!({"at": 1})).unwrap();
    assert_eq!(reading["deviceId"], "d1");
    db.create("Reading", json!({"at": 2, "deviceId": "d2"}))
        .unwrap();
    // Reads resolve the key from the context too: only d1's reading.
    let mine = db.find("Reading", json!({}), &all()).unwrap();
    assert_eq!(values(&mine.items, "at"), [json!(1)]);
    assert!(db.get("Reading", json!({"at": 1})).unwrap().is_some());
    let theirs = db
        .find("Reading", json!({"deviceId": "d2"}), &all())
        .unwrap();
    assert_eq!(values(&theirs.items, "at"), [json!(2)]);
}

#[test]
fn typed_access_reads_and_writes_serde_types() {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sensor {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        name: String,
        limit: i64,
        enabled: bool,
        #[serde(default)]
        tags: Vec<String>,
    }
    #[derive(Debug, Serialize, Deserialize)]
    struct WrongShape {
        name: i64,
    }

    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Sensor: {
            pk: { value: 'sensor#${id}' }, sk: { value: 'sensor#' },
            id: { generate: 'ulid' }, name: { required: true },
            limit: { type: 'number', required: true }, enabled: { type: 'boolean', default: true },
            tags: { type: 'array' },
        } },
    }"#);
    let sensors = db.typed::<Sensor>("Sensor").unwrap();
    let mut sensor = Sensor {
        id: None,
        name: "temp".into(),
        limit: 40,
        enabled: false,
        tags: vec!["a".into()],
    };
    let created = sensors.create(&sensor).unwrap();
    let id = created.id.clone().unwrap();
    assert_eq!(id.len(), 26);
    sensor.id = Some(id.clone());
    assert_eq!(created, sensor);
    assert_eq!(
        sensors.get(&json!({"id": id})).unwrap(),
        Some(sensor.clone())
    );
    let updated = sensors
        .update(&json!({"id": id, "limit": 45}), &WriteOptions::default())
        .unwrap();
    assert_eq!(updated.limit, 45);
    let (found, next) = sensors.find(&json!({"id": id}), &all()).unwrap();
    assert_eq!((found.len(), next), (1, None));
    let (code, message) = fails(
        db.typed::<WrongShape>("Sensor")
            .unwrap()
            .get(&json!({"id": id})),
    );
    assert_eq!(code, "ArgumentError");
    assert!(message.contains("does not fit"), "{message}");
    assert_eq!(
        sensors.remove(&json!({"id": id})).unwrap().unwrap().limit,
        45
    );
    assert_eq!(sensors.get(&json!({"id": id})).unwrap(), None);
    assert_eq!(
        fails(db.typed::<Sensor>("Nope").map(|_| ())).0,
        "ArgumentError"
    );
}

#[test]
fn hidden_fields_are_returned_only_when_asked() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        params: { typeField: 'kind' },
        models: { User: {
            pk: { value: 'user#${id}' }, sk: { value: 'user#' },
            id: { required: true }, name: {}, password: { hidden: true },
            shown: { value: 'name:${name}', hidden: false },
        } },
    }"#);
    let created = db
        .create("User", json!({"id": "1", "name": "Ada", "password": "pw"}))
        .unwrap();
    let visible = json!({"id": "1", "name": "Ada", "shown": "name:Ada"});
    assert_eq!(created, visible);
    assert_eq!(db.get("User", json!({"id": "1"})).unwrap(), Some(visible));
    let with_hidden = FindOptions {
        hidden: true,
        ..all()
    };
    let all_fields = db
        .get_with("User", json!({"id": "1"}), &with_hidden)
        .unwrap()
        .unwrap();
    assert_eq!(all_fields["password"], "pw");
    assert_eq!(all_fields["pk"], "user#1");
    assert_eq!(all_fields["sk"], "user#");
    assert_eq!(all_fields["kind"], "User");
    let page = db.find("User", json!({"id": "1"}), &with_hidden).unwrap();
    assert_eq!(page.items[0]["password"], "pw");
    let updated = db
        .update(
            "User",
            json!({"id": "1", "name": "Ada L"}),
            &WriteOptions {
                hidden: true,
                ..WriteOptions::default()
            },
        )
        .unwrap();
    assert_eq!(updated["password"], "pw");
}

#[test]
fn map_stores_a_property_under_another_attribute_or_packed_in_a_map() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Device: {
            pk: { value: 'device#${id}' }, sk: { value: 'device#' },
            id: { required: true },
            name: { map: 'n' },
            volts: { type: 'number', map: 'data.v' },
            amps: { type: 'number', map: 'data.a' },
        } },
    }"#);
    let created = db
        .create(
            "Device",
            json!({"id": "1", "name": "pump", "volts": 12, "amps": 2}),
        )
        .unwrap();
    assert_eq!(
        created,
        json!({"id": "1", "name": "pump", "volts": 12, "amps": 2})
    );
    // How it is stored: `name` as `n`, volts and amps in the map `data`.
    let model = db.schema().model("Device").unwrap();
    let stored = model
        .prepare_put(
            db.schema(),
            created.as_object().unwrap(),
            db.context(),
            0,
            ferry::schema::PutMode::Create,
        )
        .unwrap();
    assert_eq!(stored.get("n").and_then(|v| v.as_str()), Some("pump"));
    assert!(!stored.contains_key("name") && !stored.contains_key("volts"));
    let data = ferry::types::json::item_to_json(&stored)["data"].clone();
    assert_eq!(data, json!({"v": 12, "a": 2}));
    // Updating one packed property keeps the other.
    let updated = db
        .update(
            "Device",
            json!({"id": "1", "volts": 24}),
            &WriteOptions::default(),
        )
        .unwrap();
    assert_eq!(
        (&updated["volts"], &updated["amps"]),
        (&json!(24), &json!(2))
    );
    // Filters and conditions reach mapped properties.
    let by = |props: Json, condition: Option<&str>| {
        db.find(
            "Device",
            props,
            &FindOptions {
                condition: condition.map(str::to_string),
                ..all()
            },
        )
        .unwrap()
        .items
        .len()
    };
    assert_eq!(by(json!({"id": "1", "name": "pump"}), None), 1);
    assert_eq!(by(json!({"id": "1", "name": "fan"}), None), 0);
    assert_eq!(by(json!({"id": "1"}), Some("${name} = {\"pump\"}")), 1);
    assert_eq!(by(json!({"id": "1", "amps": 2}), None), 1);
    assert_eq!(by(json!({"id": "1", "amps": 3}), None), 0);
    assert_eq!(by(json!({"id": "1"}), Some("${data.v} = {24}")), 1);
    // A condition reads a copy of only the attributes it names: each of them, renamed,
    // in a map or measured, is there.
    let names = "${data.a} = {2} AND size(${name}) = {4} AND attribute_exists(${id})";
    assert_eq!(by(json!({"id": "1"}), Some(names)), 1);
    assert_eq!(
        by(json!({"id": "1"}), Some("attribute_not_exists(${name})")),
        0
    );
    assert_eq!(
        by(json!({"id": "1"}), Some("attribute_not_exists(${id})")),
        0
    );
}

#[test]
fn nested_object_schemas_are_validated_defaulted_and_merged() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Site: {
            pk: { value: 'site#${id}' }, sk: { value: 'site#' },
            id: { required: true },
            address: { type: 'object', partial: true, schema: {
                street: { required: true },
                zip: { validate: '/^[0-9]{5}$/' },
                country: { default: 'FR' },
                floor: { type: 'number' },
            } },
            contact: { type: 'object', partial: false, schema: {
                name: { required: true }, phone: {},
            } },
        } },
    }"#);
    let site = db
        .create(
            "Site",
            json!({"id": "1", "address": {"street": "Rue A", "zip": "75001", "floor": "3"},
                   "contact": {"name": "Ada", "phone": "123"}}),
        )
        .unwrap();
    assert_eq!(
        site["address"],
        json!({"street": "Rue A", "zip": "75001", "country": "FR", "floor": 3})
    );
    let error = db
        .create(
            "Site",
            json!({"id": "2", "address": {"zip": "abc", "color": "red"}}),
        )
        .unwrap_err();
    assert_eq!(error.code(), "ValidationError");
    let message = error.to_string();
    for field in ["address.street", "address.zip", "address.color"] {
        assert!(message.contains(field), "{field} missing from: {message}");
    }
    assert_eq!(db.get("Site", json!({"id": "2"})).unwrap(), None);
    // partial: true merges the given sub-fields; partial: false replaces the object.
    let updated = db
        .update(
            "Site",
            json!({"id": "1", "address": {"zip": "75002"}, "contact": {"name": "Bob"}}),
            &WriteOptions::default(),
        )
        .unwrap();
    assert_eq!(updated["address"]["street"], "Rue A");
    assert_eq!(updated["address"]["zip"], "75002");
    assert_eq!(updated["contact"], json!({"name": "Bob"}));
    let (code, message) = fails(db.update(
        "Site",
        json!({"id": "1", "address": {"zip": "x"}}),
        &WriteOptions::default(),
    ));
    assert_eq!(code, "ValidationError");
    assert!(message.contains("address.zip"), "{message}");
}

// ---------------------------------------------------------------------------------------
// field rules: unique, enum, required, validate, coercion, dates, timestamps, nulls

#[test]
fn unique_fields_refuse_a_second_item_with_the_same_value() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { User: {
            pk: { value: 'user#${id}' }, sk: { value: 'user#' },
            id: { required: true }, email: { unique: true },
        } },
    }"#);
    let plain = WriteOptions::default();
    db.create("User", json!({"id": "1", "email": "a@x"}))
        .unwrap();
    let (code, message) = fails(db.create("User", json!({"id": "2", "email": "a@x"})));
    assert_eq!(code, "UniqueError");
    assert!(message.contains("User.email"), "{message}");
    assert_eq!(db.get("User", json!({"id": "2"})).unwrap(), None);
    // Rewriting the same value keeps the claim.
    db.update("User", json!({"id": "1", "email": "a@x"}), &plain)
        .unwrap();
    let (code, _) = fails(db.create("User", json!({"id": "3", "email": "a@x"})));
    assert_eq!(code, "UniqueError");
    // Changing the value frees the old one; removing frees the new one.
    db.update("User", json!({"id": "1", "email": "b@x"}), &plain)
        .unwrap();
    db.create("User", json!({"id": "2", "email": "a@x"}))
        .unwrap();
    let (code, _) = fails(db.update("User", json!({"id": "2", "email": "b@x"}), &plain));
    assert_eq!(code, "UniqueError");
    db.remove("User", json!({"id": "1"}), &plain).unwrap();
    db.update("User", json!({"id": "2", "email": "b@x"}), &plain)
        .unwrap();
    // Items without the field do not conflict.
    db.create("User", json!({"id": "4"})).unwrap();
    db.create("User", json!({"id": "5"})).unwrap();
}

#[test]
fn unique_with_scope_is_unique_within_the_scope_only() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Member: {
            pk: { value: 'member#${id}' }, sk: { value: 'member#' },
            id: { required: true }, account: { required: true },
            name: { unique: true, scope: '${account}' },
        } },
    }"#);
    db.create("Member", json!({"id": "1", "account": "a", "name": "ada"}))
        .unwrap();
    db.create("Member", json!({"id": "2", "account": "b", "name": "ada"}))
        .unwrap();
    let (code, message) =
        fails(db.create("Member", json!({"id": "3", "account": "a", "name": "ada"})));
    assert_eq!(code, "UniqueError");
    assert!(message.contains("Member.name"), "{message}");
}

#[test]
fn enum_required_and_validate_failures_are_reported_together() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { User: {
            pk: { value: 'user#${id}' }, sk: { value: 'user#' },
            id: { required: true }, name: { required: true },
            role: { enum: ['admin', 'viewer'] },
            email: { validate: '/^[^@ ]+@[^@ ]+$/' },
            code: { validate: '/^ab/i' },
        } },
    }"#);
    let error = db
        .create(
            "User",
            json!({"id": "1", "role": "root", "email": "nope", "code": "xAB"}),
        )
        .unwrap_err();
    assert_eq!(error.code(), "ValidationError");
    assert_eq!(error.kind(), ferry::ErrorKind::Invalid);
    match &error {
        ferry::Error::Validation { model, errors } => {
            assert_eq!(model, "User");
            let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
            for field in ["name", "role", "email", "code"] {
                assert!(fields.contains(&field), "{field} not in {fields:?}");
            }
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert!(error.to_string().contains("root"), "{error}");
    // Case-insensitive flag, allowed enum value, required present: accepted.
    db.create(
        "User",
        json!({"id": "1", "name": "Ada", "role": "admin", "email": "a@x", "code": "ABc"}),
    )
    .unwrap();
    let (code, message) = fails(db.update(
        "User",
        json!({"id": "1", "role": "owner"}),
        &WriteOptions::default(),
    ));
    assert_eq!(code, "ValidationError");
    assert!(message.contains("role"), "{message}");
    let (code, message) = fails(db.create("User", json!({"id": "2", "name": "B", "age": 3})));
    assert_eq!(code, "ValidationError");
    assert!(
        message.contains("age"),
        "unknown properties are named: {message}"
    );
}

#[test]
fn values_are_coerced_to_the_field_type() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Thing: {
            pk: { value: 'thing#${id}' }, sk: { value: 'thing#' },
            id: { required: true }, count: { type: 'number' }, on: { type: 'boolean' },
            off: { type: 'boolean' }, at: { type: 'date' }, label: { type: 'string' },
        } },
    }"#);
    let thing = db
        .create(
            "Thing",
            json!({"id": "1", "count": "42.5", "on": "1", "off": "false",
                   "at": "2024-01-02T03:04:05Z", "label": 7}),
        )
        .unwrap();
    assert_eq!(thing["count"], json!(42.5));
    assert_eq!((&thing["on"], &thing["off"]), (&json!(true), &json!(false)));
    assert_eq!(thing["at"], json!(1_704_164_645_000_i64));
    assert_eq!(thing["label"], "7");
    let thing = db
        .put(
            "Thing",
            json!({"id": "2", "on": "true", "off": "0", "at": 1000}),
        )
        .unwrap();
    assert_eq!(
        (&thing["on"], &thing["off"], &thing["at"]),
        (&json!(true), &json!(false), &json!(1000))
    );
    for (field, bad) in [
        ("count", json!("ten")),
        ("on", json!("yes")),
        ("at", json!("soon")),
    ] {
        let (code, message) = fails(db.create("Thing", json!({"id": "3", field: bad})));
        assert_eq!(code, "ValidationError", "{field}");
        assert!(message.contains(field), "{message}");
    }
}

#[test]
fn iso_dates_are_stored_and_read_as_iso_text() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        params: { isoDates: true },
        models: { Event: {
            pk: { value: 'event#${id}' }, sk: { value: 'event#' },
            id: { required: true }, at: { type: 'date' }, epoch: { type: 'date', isoDates: false },
        } },
    }"#);
    let event = db
        .create(
            "Event",
            json!({"id": "1", "at": 1_704_164_645_000_i64, "epoch": "2024-01-02T03:04:05Z"}),
        )
        .unwrap();
    assert_eq!(event["at"], "2024-01-02T03:04:05.000Z");
    assert_eq!(event["epoch"], json!(1_704_164_645_000_i64));
    let found = db
        .find(
            "Event",
            json!({"id": "1"}),
            &FindOptions {
                condition: Some("begins_with(${at}, {\"2024-01-02\"})".into()),
                ..all()
            },
        )
        .unwrap();
    assert_eq!(found.items.len(), 1);
}

#[test]
fn timestamps_set_created_and_refresh_updated() {
    let clock = ManualClock::at(1_000);
    let text = r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        params: { timestamps: true },
        models: { Note: {
            pk: { value: 'note#${id}' }, sk: { value: 'note#' }, id: {}, text: {},
        } },
    }"#;
    let (_dir, db) = db_with(Config {
        clock: clock.clock(),
        ..config(text)
    });
    let note = db.create("Note", json!({"id": "1", "text": "a"})).unwrap();
    assert_eq!(
        (&note["created"], &note["updated"]),
        (&json!(1000), &json!(1000))
    );
    clock.set(5_000);
    let note = db
        .update(
            "Note",
            json!({"id": "1", "text": "b"}),
            &WriteOptions::default(),
        )
        .unwrap();
    assert_eq!(
        (&note["created"], &note["updated"]),
        (&json!(1000), &json!(5000))
    );
    assert_eq!(db.get("Note", json!({"id": "1"})).unwrap(), Some(note));

    let (_dir, db) = db_with(Config {
        clock: clock.clock(),
        ..config(&text.replace(
            "timestamps: true",
            "timestamps: 'create', createdField: 'born'",
        ))
    });
    let note = db.create("Note", json!({"id": "1"})).unwrap();
    assert_eq!(note["born"], json!(5000));
    assert!(
        note.get("updated").is_none() && note.get("created").is_none(),
        "{note}"
    );
}

#[test]
fn nulls_param_stores_null_instead_of_removing() {
    let text = r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        params: { nulls: NULLS },
        models: { Note: {
            pk: { value: 'note#${id}' }, sk: { value: 'note#' },
            id: {}, text: {}, kept: { nulls: true },
        } },
    }"#;
    let (_dir, db) = db(&text.replace("NULLS", "true"));
    let note = db.create("Note", json!({"id": "1", "text": null})).unwrap();
    assert_eq!(note["text"], Json::Null);
    assert!(note.as_object().unwrap().contains_key("text"));
    let found = db
        .find(
            "Note",
            json!({"id": "1"}),
            &FindOptions {
                condition: Some("attribute_type(${text}, {\"NULL\"})".into()),
                ..all()
            },
        )
        .unwrap();
    assert_eq!(found.items.len(), 1, "stored as a NULL attribute");

    let (_dir, db) = crate::support::db(&text.replace("NULLS", "false"));
    let note = db
        .create("Note", json!({"id": "1", "text": null, "kept": null}))
        .unwrap();
    assert!(!note.as_object().unwrap().contains_key("text"), "{note}");
    assert!(
        note.as_object().unwrap().contains_key("kept"),
        "per-field nulls: {note}"
    );
    let note = db
        .update(
            "Note",
            json!({"id": "1", "text": "t"}),
            &WriteOptions::default(),
        )
        .unwrap();
    assert_eq!(note["text"], "t");
    let note = db
        .update(
            "Note",
            json!({"id": "1", "text": null}),
            &WriteOptions::default(),
        )
        .unwrap();
    assert!(!note.as_object().unwrap().contains_key("text"), "{note}");
}

#[test]
fn a_sync_none_field_stays_on_the_device() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { User: {
            pk: { value: 'user#${id}' }, sk: { value: 'user#' },
            id: {}, name: {}, password: { hidden: true, sync: 'none' },
            pin: { type: 'number', map: 'secret.pin', sync: 'none' },
            color: { map: 'secret.color' },
        } },
    }"#);
    db.create(
        "User",
        json!({"id": "1", "name": "Ada", "password": "pw", "pin": 1234, "color": "red"}),
    )
    .unwrap();
    let hidden = FindOptions {
        hidden: true,
        ..all()
    };
    let local = db
        .get_with("User", json!({"id": "1"}), &hidden)
        .unwrap()
        .unwrap();
    assert_eq!(
        (&local["password"], &local["pin"]),
        (&json!("pw"), &json!(1234))
    );
    let model = db.schema().model("User").unwrap();
    let stored = model
        .prepare_put(
            db.schema(),
            local.as_object().unwrap(),
            db.context(),
            0,
            ferry::schema::PutMode::Put,
        )
        .unwrap();
    let cloud = ferry::types::json::item_to_json(&model.cloud_view(&stored));
    assert!(!cloud.contains_key("password"), "{cloud:?}");
    assert_eq!(cloud["secret"], json!({"color": "red"}));
    assert_eq!(cloud["name"], "Ada");
    assert_eq!(cloud["pk"], "user#1");
}

// ---------------------------------------------------------------------------------------
// ttl, durability, numbers, limits

const TTL_SCHEMA: &str = r#"{
    version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
    models: { Session: {
        pk: { value: 'session#${id}' }, sk: { value: 'session#' },
        id: { required: true }, expires: { type: 'date', ttl: true },
    } },
}"#;

#[test]
fn an_expired_item_is_invisible_at_once_and_swept_as_a_real_remove() {
    let t0 = 1_700_000_000_000_i64;
    let clock = ManualClock::at(t0);
    let (_dir, db) = db_with(Config {
        clock: clock.clock(),
        ..config(TTL_SCHEMA)
    });
    db.create("Session", json!({"id": "short", "expires": t0 + 10_000}))
        .unwrap();
    db.create("Session", json!({"id": "long", "expires": t0 + 100_000}))
        .unwrap();
    db.create("Session", json!({"id": "forever"})).unwrap();
    let session = db.get("Session", json!({"id": "short"})).unwrap().unwrap();
    assert_eq!(
        session["expires"],
        json!(t0 + 10_000),
        "a ttl reads back as a date"
    );
    let removed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = removed.clone();
    db.on_change(Some("Session"), move |event| {
        sink.lock().unwrap().push((event.op, event.old.clone()));
    })
    .unwrap();

    clock.set(t0 + 10_000);
    assert_eq!(db.get("Session", json!({"id": "short"})).unwrap(), None);
    let mut ids = Vec::new();
    db.scan(Some("Session"), false, |_, item| {
        ids.push(item["id"].clone());
        true
    })
    .unwrap();
    assert_eq!(ids, [json!("forever"), json!("long")]);
    assert!(
        removed.lock().unwrap().is_empty(),
        "hidden, not yet removed"
    );
    // The expired item no longer blocks a create... of another key; the sweep removes it.
    assert_eq!(db.sweep_expired().unwrap(), 1);
    let events = removed.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, ferry::Op::Remove);
    assert_eq!(events[0].1.as_ref().unwrap()["id"], "short");
    assert_eq!(db.sweep_expired().unwrap(), 0);
    // Moving the expiry later keeps an item alive.
    db.update(
        "Session",
        json!({"id": "long", "expires": t0 + 500_000}),
        &WriteOptions::default(),
    )
    .unwrap();
    clock.set(t0 + 200_000);
    assert_eq!(db.sweep_expired().unwrap(), 0);
    assert!(db.get("Session", json!({"id": "long"})).unwrap().is_some());
}

#[test]
fn an_expired_item_can_be_created_again_and_cannot_be_updated() {
    let t0 = 1_700_000_000_000_i64;
    let clock = ManualClock::at(t0);
    let (_dir, db) = db_with(Config {
        clock: clock.clock(),
        ..config(TTL_SCHEMA)
    });
    db.create("Session", json!({"id": "s", "expires": t0 + 1_000}))
        .unwrap();
    clock.set(t0 + 2_000);
    let (code, _) = fails(db.update(
        "Session",
        json!({"id": "s", "expires": t0 + 9_000}),
        &WriteOptions::default(),
    ));
    assert_eq!(code, "NotFoundError");
    db.create("Session", json!({"id": "s", "expires": t0 + 9_000}))
        .unwrap();
    assert_eq!(
        db.sweep_expired().unwrap(),
        0,
        "the new item is not expired"
    );
    assert!(db.get("Session", json!({"id": "s"})).unwrap().is_some());
}

#[test]
fn immediate_durability_per_model_and_per_call_writes_survive_reopen() {
    let text = r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: {
            Audit: { pk: { value: 'audit#${id}' }, sk: { value: 'audit#' }, id: {} },
            Note: { pk: { value: 'note#${id}' }, sk: { value: 'note#' }, id: {} },
        },
        control: { Audit: { durability: 'immediate' } },
    }"#;
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path(), config(text)).unwrap();
        db.create("Audit", json!({"id": "1"})).unwrap();
        db.update(
            "Note",
            json!({"id": "1"}),
            &WriteOptions {
                upsert: true,
                durability: Some(Durability::Immediate),
                ..WriteOptions::default()
            },
        )
        .unwrap();
    }
    let db = Db::open(
        dir.path(),
        Config {
            durability: Durability::Immediate,
            ..Config::default()
        },
    )
    .unwrap();
    assert!(db.get("Audit", json!({"id": "1"})).unwrap().is_some());
    assert!(db.get("Note", json!({"id": "1"})).unwrap().is_some());
    db.create("Note", json!({"id": "2"})).unwrap();
}

#[test]
fn numbers_keep_38_significant_digits_exactly() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Counter: {
            pk: { value: 'counter#${id}' }, sk: { value: 'counter#' },
            id: {}, big: { type: 'number' }, small: { type: 'number' },
        } },
    }"#);
    let big = "12345678901234567890123456789012345678";
    let props: Json =
        serde_json::from_str(&format!(r#"{{"id": "1", "big": {big}, "small": 0.1}}"#)).unwrap();
    let created = db.create("Counter", props).unwrap();
    assert_eq!(created["big"].to_string(), big);
    let updated = db
        .update(
            "Counter",
            json!({"id": "1"}),
            &ops(update_ops(json!({"add": {"big": 1, "small": 0.2}}))),
        )
        .unwrap();
    assert_eq!(
        updated["big"].to_string(),
        "12345678901234567890123456789012345679"
    );
    assert_eq!(updated["small"].to_string(), "0.3");
    let read = db.get("Counter", json!({"id": "1"})).unwrap().unwrap();
    assert_eq!(
        read["big"].to_string(),
        "12345678901234567890123456789012345679"
    );
    // As numeric text too, and 39 digits are refused.
    let created = db
        .create("Counter", json!({"id": "2", "big": format!("-{big}")}))
        .unwrap();
    assert_eq!(created["big"].to_string(), format!("-{big}"));
    let (code, message) = fails(db.create("Counter", json!({"id": "3", "big": format!("{big}9")})));
    assert_eq!(code, "ValidationError");
    assert!(message.contains("big"), "{message}");
}

#[test]
fn items_and_keys_over_dynamodb_limits_are_refused_naming_the_part() {
    let (_dir, db) = db(r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Blob: {
            pk: { value: 'blob#${id}' }, sk: { value: 'blob#${part}' },
            id: { required: true }, part: { required: true }, data: {}, note: {},
        } },
    }"#);
    let long = |n: usize| "x".repeat(n);
    let cases = [
        (
            json!({"id": "1", "part": "p", "data": long(401 * 1024)}),
            "data",
            "409600",
        ),
        (json!({"id": long(2050), "part": "p"}), "pk", "2048"),
        (json!({"id": "1", "part": long(1030)}), "sk", "1024"),
    ];
    for (props, field, limit) in cases {
        let (code, message) = fails(db.create("Blob", props));
        assert_eq!(code, "ValidationError", "{field}");
        assert!(
            message.contains(field) && message.contains(limit) && message.contains("Blob"),
            "{field}: {message}"
        );
    }
    // Just under the limits is fine.
    db.create(
        "Blob",
        json!({"id": "1", "part": "p", "data": long(399 * 1024)}),
    )
    .unwrap();
    // An update that grows the item over the limit is refused too.
    let (code, message) = fails(db.update(
        "Blob",
        json!({"id": "1", "part": "p", "note": long(2 * 1024)}),
        &WriteOptions::default(),
    ));
    assert_eq!(code, "ValidationError");
    assert!(message.contains("409600"), "{message}");
    let blob = db
        .get("Blob", json!({"id": "1", "part": "p"}))
        .unwrap()
        .unwrap();
    assert!(blob.get("note").is_none());
}

// ---------------------------------------------------------------------------------------
// control

const CONTROL_SCHEMA: &str = r#"{
    version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
    models: {
        Status: { pk: { value: 'status#${id}' }, sk: { value: 'status#' }, id: {} },
        Config: { pk: { value: 'config#${id}' }, sk: { value: 'config#' }, id: {}, value: {} },
        Local: { pk: { value: 'local#${id}' }, sk: { value: 'local#' }, id: {} },
    },
    control: {
        Status: { enable: 'cloud' },
        Config: { sync: 'down' },
        Local: { enable: 'device' },
    },
}"#;

#[test]
fn a_cloud_only_model_refuses_every_call_on_the_device() {
    let (_dir, db) = db(CONTROL_SCHEMA);
    let plain = WriteOptions::default();
    let id = || json!({"id": "1"});
    let results = [
        db.create("Status", id()).map(|_| ()),
        db.put("Status", id()).map(|_| ()),
        db.get("Status", id()).map(|_| ()),
        db.find("Status", id(), &all()).map(|_| ()),
        db.update("Status", id(), &plain).map(|_| ()),
        db.remove("Status", id(), &plain).map(|_| ()),
        db.remove_many("Status", id(), &all()).map(|_| ()),
        db.scan(Some("Status"), false, |_, _| true),
        db.typed::<Json>("Status").map(|_| ()),
        db.transaction(&[Write::Create {
            model: "Status".into(),
            props: id(),
        }])
        .map(|_| ()),
    ];
    for (i, result) in results.into_iter().enumerate() {
        let (code, message) = fails(result);
        assert_eq!(code, "ControlError", "call {i}");
        assert!(
            message.contains("Status") && message.contains("cloud"),
            "{message}"
        );
    }
    db.create("Local", id()).unwrap();
}

#[test]
fn a_sync_down_model_is_read_only_on_the_device() {
    let (_dir, db) = db(CONTROL_SCHEMA);
    let plain = WriteOptions::default();
    let id = || json!({"id": "1"});
    let writes = [
        db.create("Config", id()).map(|_| ()),
        db.put("Config", id()).map(|_| ()),
        db.upsert("Config", id(), &plain).map(|_| ()),
        db.remove("Config", id(), &plain).map(|_| ()),
    ];
    for (i, result) in writes.into_iter().enumerate() {
        let (code, message) = fails(result);
        assert_eq!(code, "ControlError", "write {i}");
        assert!(
            message.contains("Config") && message.contains("down"),
            "{message}"
        );
    }
    assert_eq!(db.get("Config", id()).unwrap(), None);
    assert!(db.find("Config", id(), &all()).unwrap().items.is_empty());
    // In a transaction the write is refused and nothing else commits.
    let error = db
        .transaction(&[
            Write::Create {
                model: "Local".into(),
                props: id(),
            },
            Write::Put {
                model: "Config".into(),
                props: id(),
            },
        ])
        .unwrap_err();
    match error {
        ferry::Error::TransactionCanceled { index, reason } => {
            assert_eq!((index, reason.code()), (1, "ControlError"));
        }
        other => panic!("expected TransactionCanceled, got {other:?}"),
    }
    assert_eq!(db.get("Local", id()).unwrap(), None);
}

#[test]
fn a_device_only_model_that_syncs_is_a_schema_error() {
    let error = ferry::Schema::parse(
        r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Local: { pk: { value: 'local#${id}' }, sk: { value: 'local#' }, id: {} } },
        control: { Local: { enable: 'device', sync: 'up' } },
    }"#,
    )
    .unwrap_err();
    assert_eq!(error.code(), "SchemaError");
    let message = error.to_string();
    assert!(message.contains("control.Local.sync"), "{message}");
}

// ---------------------------------------------------------------------------------------
// schema changes

#[test]
fn adding_a_gsi_later_indexes_the_items_already_stored() {
    // The key attributes are stored from the start; the index comes in version 2.
    let v1 = r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { User: {
            pk: { value: 'user#${id}' }, sk: { value: 'user#' }, id: {}, team: {},
            gs1pk: { value: 'team#${team}' }, gs1sk: { value: 'user#${id}' },
        } },
    }"#;
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path(), config(v1)).unwrap();
        for (id, team) in [("1", "red"), ("2", "blue"), ("3", "red")] {
            db.create("User", json!({"id": id, "team": team})).unwrap();
        }
        let (code, message) = fails(db.find(
            "User",
            json!({"team": "red"}),
            &FindOptions {
                index: Some("gs1".into()),
                ..all()
            },
        ));
        assert_eq!(code, "ArgumentError");
        assert!(message.contains("gs1"), "{message}");
    }
    let v2 = v1.replace(
        "primary: { hash: 'pk', sort: 'sk' }",
        "primary: { hash: 'pk', sort: 'sk' }, gs1: { hash: 'gs1pk', sort: 'gs1sk' }",
    );
    let on_gs1 = FindOptions {
        index: Some("gs1".into()),
        ..all()
    };
    {
        let db = Db::open(dir.path(), config(&v2)).unwrap();
        let red = db.find("User", json!({"team": "red"}), &on_gs1).unwrap();
        assert_eq!(values(&red.items, "id"), [json!("1"), json!("3")]);
        db.create("User", json!({"id": "4", "team": "red"}))
            .unwrap();
        db.update(
            "User",
            json!({"id": "1", "team": "blue"}),
            &WriteOptions::default(),
        )
        .unwrap();
    }
    // Reopened without a schema: the stored one (with gs1) is used.
    let db = Db::open(dir.path(), Config::default().context("deviceId", "d1")).unwrap();
    assert!(db.schema().index("gs1").is_ok());
    let red = db.find("User", json!({"team": "red"}), &on_gs1).unwrap();
    assert_eq!(values(&red.items, "id"), [json!("3"), json!("4")]);
    let blue = db.find("User", json!({"team": "blue"}), &on_gs1).unwrap();
    assert_eq!(values(&blue.items, "id"), [json!("1"), json!("2")]);
}

#[test]
fn opening_a_new_database_without_a_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let error = Db::open(dir.path(), Config::default()).err().unwrap();
    assert!(error.to_string().contains("schema"), "{error}");
    assert_eq!(error.kind(), ferry::ErrorKind::Invalid);
}

#[test]
fn json_text_is_what_the_json_api_serializes() {
    let (_dir, db) = db(r#"{
        version: '1',
        indexes: {
            primary: { hash: 'pk', sort: 'sk' },
            gs1: { hash: 'gs1pk', sort: 'gs1sk', project: 'keys' },
        },
        models: { Thing: {
            pk: { value: 'thing#${id}' }, sk: { value: 'thing#' },
            gs1pk: { value: 'things' }, gs1sk: { value: '${name}' },
            id: { required: true }, name: { type: 'string' },
            big: { type: 'number' }, ratio: { type: 'number' },
            on: { type: 'boolean', default: true }, at: { type: 'date' },
            tags: { type: 'set' }, log: { type: 'array' }, flags: { type: 'object' },
            secret: { hidden: true }, note: { default: 'none' },
        } },
    }"#);
    for (id, name) in [
        ("t1", "quo\"te \u{fc}\n\u{1}"),
        ("t2", "plain"),
        ("t3", "z"),
    ] {
        db.create(
            "Thing",
            json!({
                "id": id, "name": name, "big": 12345678901234567890123_u128,
                "ratio": -0.000_5, "at": "2026-01-02T03:04:05.000Z", "tags": ["b", "a"],
                "log": [1, "x", {"k": [true, null]}], "flags": {"z": 1, "a": "\u{e9}"},
                "secret": "s",
            }),
        )
        .unwrap();
    }
    let readings = [
        FindOptions::default(),
        FindOptions {
            hidden: true,
            ..FindOptions::default()
        },
        FindOptions {
            fields: Some(vec!["name".into(), "big".into(), "note".into()]),
            ..FindOptions::default()
        },
    ];
    for options in &readings {
        let key = json!({"id": "t1"});
        let value = db.get_with("Thing", key.clone(), options).unwrap().unwrap();
        let text = db.get_text("Thing", key, options).unwrap().unwrap();
        assert_eq!(text, value.to_string(), "{options:?}");
    }
    let gs1 = || FindOptions {
        index: Some("gs1".into()),
        ..all()
    };
    let pages = [
        (json!({"id": "t1"}), all()),
        (
            json!({}),
            FindOptions {
                limit: Some(2),
                ..gs1()
            },
        ),
        (
            json!({}),
            FindOptions {
                follow: true,
                hidden: true,
                reverse: true,
                ..gs1()
            },
        ),
    ];
    for (props, options) in pages {
        let values = db.find("Thing", props.clone(), &options).unwrap();
        let texts = db.find_text("Thing", props, &options).unwrap();
        let expected: Vec<String> = values.items.iter().map(|v| v.to_string()).collect();
        assert!(!expected.is_empty());
        assert_eq!(texts.items, expected, "{options:?}");
        assert_eq!(texts.next, values.next);
    }
}
