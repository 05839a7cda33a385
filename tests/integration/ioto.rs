//! What the Ioto device database gets wrong, as named regressions: each test's name says
//! the behaviour users rely on.

use std::collections::BTreeSet;
use std::path::Path;

use ferry::{Config, Db, FindOptions, Write, WriteOptions};
use serde_json::{Value as Json, json};

use crate::support::{config, example_db, fails};

/// Reopens a database with its stored schema, as a device does after a restart.
fn reopen(dir: &Path) -> Db {
    Db::open(
        dir,
        Config {
            ttl_sweep: None,
            ..Config::default()
        }
        .context("deviceId", "d1"),
    )
    .unwrap()
}

/// Pages through a find `limit` items at a time; returns every item and the page count.
/// Every page but a lone first one must be non-empty: a `next` promises more.
fn all_pages(db: &Db, model: &str, props: Json, limit: usize, reverse: bool) -> (Vec<Json>, usize) {
    let mut items = Vec::new();
    let mut next = None;
    let mut pages = 0;
    loop {
        let page = db
            .find(
                model,
                props.clone(),
                &FindOptions {
                    limit: Some(limit),
                    next: next.take(),
                    reverse,
                    ..FindOptions::default()
                },
            )
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= limit, "page over the limit: {page:?}");
        assert!(
            !page.items.is_empty() || pages == 1,
            "page {pages} of {model} is empty though the previous page had a next"
        );
        items.extend(page.items);
        match page.next {
            Some(cursor) => next = Some(cursor),
            None => return (items, pages),
        }
        assert!(pages < 1000, "pagination of {model} does not end");
    }
}

fn field(items: &[Json], name: &str) -> Vec<Json> {
    items.iter().map(|item| item[name].clone()).collect()
}

#[test]
fn pagination_scoped_to_a_model_never_repeats_pages() {
    // The example schema: Reading and Fault share the partition device#${deviceId}.
    let (_dir, db) = example_db();
    for i in 0..10 {
        db.create("Reading", json!({"sensor": "t", "at": i, "value": i}))
            .unwrap();
        db.create("Fault", json!({"code": i})).unwrap();
    }
    for limit in [1, 3, 4, 10, 11] {
        let (readings, pages) = all_pages(&db, "Reading", json!({}), limit, false);
        assert_eq!(
            field(&readings, "at"),
            (0..10).map(|i| json!(i)).collect::<Vec<_>>(),
            "limit {limit}"
        );
        assert_eq!(pages, 10_usize.div_ceil(limit), "limit {limit}");
        let (faults, _) = all_pages(&db, "Fault", json!({}), limit, false);
        let codes: BTreeSet<i64> = faults.iter().map(|f| f["code"].as_i64().unwrap()).collect();
        assert_eq!((faults.len(), codes.len()), (10, 10), "limit {limit}");
    }

    // Two models interleaved in one sort-key range: every other row is the other model's,
    // and the range ends with the other model's rows.
    let (_dir, db) = crate::support::db(
        r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: {
            Reading: {
                pk: { value: 'device#${deviceId}' }, sk: { value: 'event#${at:4:0}' },
                deviceId: { required: true }, at: { type: 'number', required: true },
            },
            Fault: {
                pk: { value: 'device#${deviceId}' }, sk: { value: 'event#${at:4:0}' },
                deviceId: { required: true }, at: { type: 'number', required: true },
            },
        },
    }"#,
    );
    for at in 0..30 {
        let model = if at % 2 == 0 && at < 20 {
            "Reading"
        } else {
            "Fault"
        };
        db.create(model, json!({"at": at})).unwrap();
    }
    let expected: Vec<Json> = (0..20).step_by(2).map(|at| json!(at)).collect();
    for limit in [1, 2, 3, 5, 10] {
        let (readings, pages) = all_pages(&db, "Reading", json!({}), limit, false);
        assert_eq!(field(&readings, "at"), expected, "limit {limit}");
        assert_eq!(pages, 10_usize.div_ceil(limit), "limit {limit}");
        let (backwards, _) = all_pages(&db, "Reading", json!({}), limit, true);
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(field(&backwards, "at"), reversed, "reverse, limit {limit}");
    }
}

#[test]
fn an_oversize_item_is_refused_and_the_database_reopens_whole() {
    let (dir, db) = example_db();
    for i in 0..20 {
        db.create("Reading", json!({"sensor": "t", "at": i, "value": i}))
            .unwrap();
    }
    let fault = db
        .create("Fault", json!({"code": 1, "message": "m"}))
        .unwrap();
    let huge = "x".repeat(500 * 1024);
    let (code, message) = fails(db.create("Fault", json!({"code": 2, "message": huge})));
    assert_eq!(code, "ValidationError");
    assert!(
        message.contains("Fault") && message.contains("message"),
        "{message}"
    );
    let (code, _) = fails(db.update(
        "Fault",
        json!({"id": fault["id"], "message": huge}),
        &WriteOptions::default(),
    ));
    assert_eq!(code, "ValidationError");
    let error = db
        .transaction(&[
            Write::Create {
                model: "Reading".into(),
                props: json!({"sensor": "t", "at": 100, "value": 1}),
            },
            Write::Put {
                model: "Reading".into(),
                props: json!({"sensor": "big", "at": 1, "value": 1, "expires": huge}),
            },
        ])
        .unwrap_err();
    assert_eq!(error.code(), "TransactionCanceled");
    drop(db);

    let db = reopen(dir.path());
    let (readings, _) = all_pages(&db, "Reading", json!({}), 100, false);
    assert_eq!(
        field(&readings, "at"),
        (0..20).map(|i| json!(i)).collect::<Vec<_>>()
    );
    let faults = db
        .find("Fault", json!({}), &FindOptions::default())
        .unwrap();
    assert_eq!(faults.items, std::slice::from_ref(&fault));
    // And it takes writes again.
    db.update(
        "Fault",
        json!({"id": fault["id"], "message": "n"}),
        &WriteOptions::default(),
    )
    .unwrap();
    db.create("Reading", json!({"sensor": "t", "at": 20, "value": 20}))
        .unwrap();
}

#[test]
fn deleted_items_and_fields_stay_deleted_after_reopen() {
    let (dir, db) = example_db();
    let plain = WriteOptions::default();
    for at in 0..6 {
        db.create(
            "Reading",
            json!({"sensor": "t", "at": at, "value": at, "expires": "2100-01-01T00:00:00Z"}),
        )
        .unwrap();
    }
    let ada = db
        .create(
            "User",
            json!({"name": "Ada", "email": "ada@x", "role": "admin"}),
        )
        .unwrap();
    let fault = db
        .create("Fault", json!({"code": 7, "message": "hot"}))
        .unwrap();
    db.remove("Reading", json!({"sensor": "t", "at": 1}), &plain)
        .unwrap();
    db.update(
        "Reading",
        json!({"sensor": "t", "at": 2, "expires": null}),
        &plain,
    )
    .unwrap();
    db.update("Fault", json!({"id": fault["id"], "message": null}), &plain)
        .unwrap();
    db.remove("User", json!({"id": ada["id"]}), &plain).unwrap();
    assert_eq!(
        db.remove_many(
            "Reading",
            json!({"sensor": "t", "at": 4}),
            &FindOptions::default()
        )
        .unwrap(),
        1
    );
    // Dropped without a flush, twice over.
    drop(db);
    let db = reopen(dir.path());
    drop(db);
    let db = reopen(dir.path());

    let (readings, _) = all_pages(&db, "Reading", json!({}), 100, false);
    assert_eq!(field(&readings, "at"), [0, 2, 3, 5].map(|i| json!(i)));
    let two = db
        .get("Reading", json!({"sensor": "t", "at": 2}))
        .unwrap()
        .unwrap();
    assert!(two.get("expires").is_none(), "removed field is back: {two}");
    let three = db
        .get("Reading", json!({"sensor": "t", "at": 3}))
        .unwrap()
        .unwrap();
    assert!(three.get("expires").is_some());
    let fault = db
        .get("Fault", json!({"id": fault["id"]}))
        .unwrap()
        .unwrap();
    assert!(
        fault.get("message").is_none(),
        "removed field is back: {fault}"
    );
    assert_eq!(db.get("User", json!({"id": ada["id"]})).unwrap(), None);
    // Nor does the index or the unique claim remember the removed user.
    let admins = db
        .find(
            "User",
            json!({"role": "admin"}),
            &FindOptions {
                index: Some("gs1".into()),
                ..FindOptions::default()
            },
        )
        .unwrap();
    assert!(admins.items.is_empty(), "{admins:?}");
    db.create("User", json!({"name": "Ada 2", "email": "ada@x"}))
        .unwrap();
}

#[test]
fn two_updates_keep_the_second() {
    let (dir, db) = example_db();
    let plain = WriteOptions::default();
    let fault = db
        .create("Fault", json!({"code": 1, "message": "a"}))
        .unwrap();
    let id = fault["id"].clone();
    db.update(
        "Fault",
        json!({"id": id, "message": "first", "code": 2}),
        &plain,
    )
    .unwrap();
    db.update("Fault", json!({"id": id, "message": "second"}), &plain)
        .unwrap();
    let read = db.get("Fault", json!({"id": id})).unwrap().unwrap();
    assert_eq!(
        (&read["message"], &read["code"]),
        (&json!("second"), &json!(2))
    );
    // In one transaction too.
    db.transaction(&[
        Write::Update {
            model: "Fault".into(),
            props: json!({"id": id, "message": "third"}),
            options: plain.clone(),
        },
        Write::Update {
            model: "Fault".into(),
            props: json!({"id": id, "message": "fourth"}),
            options: plain.clone(),
        },
    ])
    .unwrap();
    // And many in a row on one reading.
    for value in 0..50 {
        db.update(
            "Reading",
            json!({"sensor": "t", "at": 1, "value": value}),
            &WriteOptions {
                upsert: true,
                ..plain.clone()
            },
        )
        .unwrap();
    }
    drop(db);
    let db = reopen(dir.path());
    let read = db.get("Fault", json!({"id": id})).unwrap().unwrap();
    assert_eq!(
        (&read["message"], &read["code"]),
        (&json!("fourth"), &json!(2))
    );
    let reading = db
        .get("Reading", json!({"sensor": "t", "at": 1}))
        .unwrap()
        .unwrap();
    assert_eq!(reading["value"], 49);
}

#[test]
fn types_and_defaults_survive_reopen() {
    let text = r#"{
        version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Thing: {
            pk: { value: 'thing#${id}' }, sk: { value: 'thing#' },
            id: { required: true },
            text: { type: 'string', default: 'none' },
            count: { type: 'number', default: 0 },
            ratio: { type: 'number' },
            on: { type: 'boolean', default: true },
            off: { type: 'boolean', default: false },
            at: { type: 'date' },
            data: { type: 'object' },
            list: { type: 'array' },
            names: { type: 'set' },
            numbers: { type: 'set' },
            blob: { type: 'binary' },
            empty: { type: 'string' },
        } },
    }"#;
    let dir = tempfile::tempdir().unwrap();
    let full = json!({
        "id": "1", "text": "hello", "count": -12, "ratio": 0.125, "on": false, "off": true,
        "at": "2024-05-01T12:00:00Z", "data": {"a": 1, "b": [true, null, "x"], "c": {"d": 1.5}},
        "list": [1, "two", {"three": 3}], "names": ["b", "a"], "numbers": [3, 1, 2],
        "blob": "AAEC/w==", "empty": "",
    });
    let (created, defaulted) = {
        let db = Db::open(dir.path(), config(text)).unwrap();
        let created = db.create("Thing", full).unwrap();
        let defaulted = db.create("Thing", json!({"id": "2"})).unwrap();
        assert_eq!(
            defaulted,
            json!({"id": "2", "text": "none", "count": 0, "on": true, "off": false})
        );
        (created, defaulted)
    };
    assert_eq!(created["at"], json!(1_714_564_800_000_i64));
    assert_eq!(created["count"], json!(-12));
    assert_eq!(created["on"], json!(false));
    let db = reopen(dir.path());
    assert_eq!(db.get("Thing", json!({"id": "1"})).unwrap(), Some(created));
    assert_eq!(
        db.get("Thing", json!({"id": "2"})).unwrap(),
        Some(defaulted)
    );
    drop(db);
    // A default added later is returned for items stored before it.
    let later = text.replace(
        "empty: {",
        "level: { type: 'number', default: 5 }, empty: {",
    );
    let db = Db::open(dir.path(), config(&later)).unwrap();
    assert_eq!(
        db.get("Thing", json!({"id": "2"})).unwrap().unwrap()["level"],
        5
    );
}

#[test]
fn create_with_generated_ids_is_time_ordered() {
    let (_dir, db) = example_db();
    // As fast as the device can: many creates share a millisecond.
    let ids: Vec<Json> = (0..300)
        .map(|code| db.create("Fault", json!({"code": code})).unwrap()["id"].clone())
        .collect();
    if let Some(i) = (1..ids.len()).find(|&i| ids[i - 1].as_str() >= ids[i].as_str()) {
        panic!(
            "id {} {} sorts before id {} {}",
            i,
            ids[i],
            i - 1,
            ids[i - 1]
        );
    }
    let (faults, _) = all_pages(&db, "Fault", json!({}), 50, false);
    let codes: Vec<Json> = field(&faults, "code");
    assert_eq!(codes, (0..300).map(|c| json!(c)).collect::<Vec<_>>());
}
