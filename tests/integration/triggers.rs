//! Triggers: fired after commit, for their model, with the change as it happened.

use std::sync::{Arc, Mutex};

use ferry::{Db, Event, FindOptions, Op, Origin, Write, WriteOptions};
use serde_json::{Value as Json, json};

use crate::support::{db, fails};

const SCHEMA: &str = r#"{
    version: '1', indexes: { primary: { hash: 'pk', sort: 'sk' } },
    models: {
        User: {
            pk: { value: 'user#${id}' }, sk: { value: 'user#' },
            id: { required: true }, name: { required: true },
            email: { unique: true }, password: { hidden: true },
        },
        Fault: {
            pk: { value: 'fault#${id}' }, sk: { value: 'fault#' },
            id: { required: true }, code: { type: 'number' },
        },
    },
}"#;

/// Records every event a trigger on `model` receives.
fn record(db: &Db, model: Option<&str>) -> Arc<Mutex<Vec<Event>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    db.on_change(model, move |event| sink.lock().unwrap().push(event.clone()))
        .unwrap();
    events
}

fn taken(events: &Arc<Mutex<Vec<Event>>>) -> Vec<Event> {
    std::mem::take(&mut *events.lock().unwrap())
}

fn summary(events: &[Event]) -> Vec<(String, Op, Json)> {
    events
        .iter()
        .map(|e| {
            let item = e.new.as_ref().or(e.old.as_ref()).unwrap();
            (e.model.clone(), e.op, item["id"].clone())
        })
        .collect()
}

#[test]
fn triggers_fire_only_for_their_model() {
    let (_dir, db) = db(SCHEMA);
    let users = record(&db, Some("User"));
    let everything = record(&db, None);
    db.create("User", json!({"id": "1", "name": "Ada"}))
        .unwrap();
    db.create("Fault", json!({"id": "f", "code": 3})).unwrap();
    assert_eq!(
        summary(&taken(&users)),
        [("User".to_string(), Op::Create, json!("1"))]
    );
    assert_eq!(
        summary(&taken(&everything)),
        [
            ("User".to_string(), Op::Create, json!("1")),
            ("Fault".to_string(), Op::Create, json!("f"))
        ]
    );
    let (code, message) = fails(db.on_change(Some("Nobody"), |_| {}));
    assert_eq!(code, "ArgumentError");
    assert!(message.contains("Nobody"), "{message}");
}

#[test]
fn events_carry_the_op_and_the_old_and_new_items() {
    let (_dir, db) = db(SCHEMA);
    let recorded = record(&db, Some("User"));
    let plain = WriteOptions::default();
    db.create("User", json!({"id": "1", "name": "Ada", "password": "pw"}))
        .unwrap();
    db.update("User", json!({"id": "1", "name": "Ada L"}), &plain)
        .unwrap();
    db.put("User", json!({"id": "1", "name": "Ada P"})).unwrap();
    db.remove("User", json!({"id": "1"}), &plain).unwrap();
    let events = taken(&recorded);
    let ops: Vec<Op> = events.iter().map(|e| e.op).collect();
    assert_eq!(ops, [Op::Create, Op::Update, Op::Update, Op::Remove]);
    assert!(
        events
            .iter()
            .all(|e| e.origin == Origin::Local && e.model == "User")
    );
    let [create, update, put, remove] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(create.old, None);
    let new = create.new.as_ref().unwrap();
    assert_eq!(
        (&new["name"], &new["password"]),
        (&json!("Ada"), &json!("pw"))
    );
    assert_eq!(update.old.as_ref().unwrap()["name"], "Ada");
    assert_eq!(update.new.as_ref().unwrap()["name"], "Ada L");
    assert_eq!(update.new.as_ref().unwrap()["password"], "pw");
    assert_eq!(put.old.as_ref().unwrap()["name"], "Ada L");
    assert!(
        put.new.as_ref().unwrap().get("password").is_none(),
        "put replaces"
    );
    assert_eq!(remove.old.as_ref().unwrap()["name"], "Ada P");
    assert_eq!(remove.new, None);
    // Removing what is not there changes nothing and fires nothing.
    db.remove("User", json!({"id": "1"}), &plain).unwrap();
    assert_eq!(taken(&recorded), []);
}

#[test]
fn a_trigger_fires_after_commit_and_reads_the_new_state() {
    let (_dir, db) = db(SCHEMA);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (reader, sink) = (db.clone(), seen.clone());
    db.on_change(Some("User"), move |event| {
        let id = event.new.as_ref().or(event.old.as_ref()).unwrap()["id"].clone();
        let now = reader.get("User", json!({"id": id})).unwrap();
        let count = reader
            .find(
                "User",
                json!({"id": id}),
                &FindOptions {
                    count: true,
                    ..FindOptions::default()
                },
            )
            .unwrap()
            .count;
        sink.lock().unwrap().push((event.op, now, count));
    })
    .unwrap();
    db.create("User", json!({"id": "1", "name": "Ada"}))
        .unwrap();
    db.update(
        "User",
        json!({"id": "1", "name": "Bob"}),
        &WriteOptions::default(),
    )
    .unwrap();
    db.remove("User", json!({"id": "1"}), &WriteOptions::default())
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (Op::Create, Some(json!({"id": "1", "name": "Ada"})), 1),
            (Op::Update, Some(json!({"id": "1", "name": "Bob"})), 1),
            (Op::Remove, None, 0),
        ]
    );
}

#[test]
fn a_transaction_fires_each_change_in_order_after_it_commits() {
    let (_dir, db) = db(SCHEMA);
    let events = record(&db, None);
    db.transaction(&[
        Write::Create {
            model: "User".into(),
            props: json!({"id": "1", "name": "Ada"}),
        },
        Write::Create {
            model: "Fault".into(),
            props: json!({"id": "f", "code": 1}),
        },
        Write::Update {
            model: "User".into(),
            props: json!({"id": "1", "name": "Bob"}),
            options: WriteOptions::default(),
        },
        Write::Check {
            model: "Fault".into(),
            props: json!({"id": "f"}),
            options: WriteOptions::default(),
        },
    ])
    .unwrap();
    let events = taken(&events);
    assert_eq!(
        summary(&events),
        [
            ("User".to_string(), Op::Create, json!("1")),
            ("Fault".to_string(), Op::Create, json!("f")),
            ("User".to_string(), Op::Update, json!("1")),
        ]
    );
    assert_eq!(events[2].old.as_ref().unwrap()["name"], "Ada");
    // remove_many fires one Remove per item.
    let events = record(&db, Some("Fault"));
    db.create("Fault", json!({"id": "g", "code": 1})).unwrap();
    taken(&events);
    db.remove_many("Fault", json!({"id": "f"}), &FindOptions::default())
        .unwrap();
    db.remove_many("Fault", json!({"id": "g"}), &FindOptions::default())
        .unwrap();
    assert_eq!(
        summary(&taken(&events)),
        [
            ("Fault".to_string(), Op::Remove, json!("f")),
            ("Fault".to_string(), Op::Remove, json!("g")),
        ]
    );
}

#[test]
fn failed_writes_and_canceled_transactions_fire_nothing() {
    let (_dir, db) = db(SCHEMA);
    db.create("User", json!({"id": "1", "name": "Ada", "email": "a@x"}))
        .unwrap();
    let events = record(&db, None);
    let plain = WriteOptions::default();
    let failures = [
        db.create("User", json!({"id": "1", "name": "Again"}))
            .map(|_| ()),
        db.create("User", json!({"id": "2", "name": "Dup", "email": "a@x"}))
            .map(|_| ()),
        db.create("User", json!({"id": "3"})).map(|_| ()),
        db.update("User", json!({"id": "9", "name": "Nobody"}), &plain)
            .map(|_| ()),
        db.update(
            "User",
            json!({"id": "1", "name": "X"}),
            &WriteOptions {
                condition: Some("${name} = {\"Bob\"}".into()),
                ..plain.clone()
            },
        )
        .map(|_| ()),
        db.transaction(&[
            Write::Create {
                model: "Fault".into(),
                props: json!({"id": "f"}),
            },
            Write::Update {
                model: "User".into(),
                props: json!({"id": "1", "name": "Changed"}),
                options: plain.clone(),
            },
            Write::Create {
                model: "User".into(),
                props: json!({"id": "1", "name": "Clash"}),
            },
        ])
        .map(|_| ()),
    ];
    for (i, result) in failures.into_iter().enumerate() {
        assert!(result.is_err(), "write {i} should have failed");
    }
    assert_eq!(taken(&events), []);
    assert_eq!(db.get("Fault", json!({"id": "f"})).unwrap(), None);
    assert_eq!(
        db.get("User", json!({"id": "1"})).unwrap().unwrap()["name"],
        "Ada"
    );
}

#[test]
fn remove_trigger_stops_it() {
    let (_dir, db) = db(SCHEMA);
    let count = Arc::new(Mutex::new(0));
    let sink = count.clone();
    let id = db
        .on_change(Some("Fault"), move |_| *sink.lock().unwrap() += 1)
        .unwrap();
    let other = record(&db, Some("Fault"));
    db.create("Fault", json!({"id": "1"})).unwrap();
    assert!(db.remove_trigger(id));
    db.create("Fault", json!({"id": "2"})).unwrap();
    assert_eq!(*count.lock().unwrap(), 1);
    assert_eq!(taken(&other).len(), 2, "other triggers keep firing");
    assert!(!db.remove_trigger(id), "already removed");
}
