//! Named regressions of the replication core: each test failed before its fix.

use ferry::Attach;
use ferry::journal::ChangeOp;
use ferry::types::{Item, Value, Version};
use ferry::{FindOptions, WriteOptions};
use serde_json::json;

use std::sync::atomic::Ordering::SeqCst;

use crate::sync::{SYNC_TIMEOUT, World, key};

const SCHEMA: &str = r#"{
    version: '1', format: 'onetable:1.1.0',
    indexes: { primary: { hash: 'pk', sort: 'sk' } },
    models: {
        Note: {
            pk: { type: 'string', value: 'note#${deviceId}' }, sk: { type: 'string', value: 'note#${id}' },
            deviceId: { type: 'string', required: true }, id: { type: 'string', required: true },
            text: { type: 'string' },
            level: { type: 'number', map: 'data.level' },
            pin: { type: 'string', map: 'data.pin', sync: 'none' },
        },
        Config: {
            pk: { type: 'string', value: 'config#' }, sk: { type: 'string', value: 'config#${name}' },
            name: { type: 'string', required: true }, value: { type: 'string' },
        },
        Padded: {
            pk: { type: 'string', value: 'padded#' }, sk: { type: 'string', value: 'padded#${id}' },
            id: { type: 'string', required: true },
        },
        Tag: {
            pk: { type: 'string', value: 'tag#' }, sk: { type: 'string', value: 'tag#${id}' },
            id: { type: 'string', required: true }, label: { type: 'string', unique: true },
            blob: { type: 'binary' },
        },
        Board: {
            pk: { type: 'string', value: 'board#' }, sk: { type: 'string', value: 'board#${id}' },
            id: { type: 'string', required: true }, text: { type: 'string' },
        },
        Badge: {
            pk: { type: 'string', value: 'badge#' }, sk: { type: 'string', value: 'badge#${id}' },
            id: { type: 'string', required: true }, label: { type: 'string', unique: true },
        },
        Fault: {
            pk: { type: 'string', value: 'fault#${deviceId}' }, sk: { type: 'string', value: 'fault#${id}' },
            deviceId: { type: 'string', required: true }, id: { type: 'string', required: true },
            code: { type: 'number' },
        },
    },
    control: {
        Note: { sync: 'both' },
        Config: { sync: 'down', scope: '*' },
        Padded: { sync: 'both', scope: 'site#${deviceId:6:0}' },
        Tag: { sync: 'down', scope: '*' },
        Fault: { sync: 'up' },
        Board: { sync: 'both', scope: '*' },
        Badge: { sync: 'both', scope: '*' },
    },
}"#;

fn item(pairs: &[(&str, Value)]) -> Item {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect()
}

fn s(text: &str) -> Value {
    Value::S(text.into())
}

#[test]
fn remove_many_refuses_a_down_model_and_uploads_tombstones_for_a_both_model() {
    let mut world = World::with_schema(SCHEMA);
    let (db, _, _) = world.device("d1", None);
    let config = item(&[
        ("_type", s("Config")),
        ("pk", s("config#")),
        ("sk", s("config#mode")),
        ("name", s("mode")),
        ("value", s("eco")),
    ]);
    world.cloud_write("Config", key("config#", "config#mode"), "*", Some(config));
    db.create("Note", json!({"id": "n1", "text": "a"})).unwrap();
    db.create("Note", json!({"id": "n2", "text": "b"})).unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();

    let refused = db.remove_many("Config", json!({}), &FindOptions::default());
    assert_eq!(refused.unwrap_err().code(), "ControlError");
    assert!(
        db.get("Config", json!({"name": "mode"})).unwrap().is_some(),
        "the cloud's item is still on the device"
    );

    assert_eq!(
        db.remove_many("Note", json!({}), &FindOptions::default())
            .unwrap(),
        2
    );
    db.sync(SYNC_TIMEOUT).unwrap();
    let cloud = world.cloud.lock().unwrap();
    for id in ["n1", "n2"] {
        let row = cloud.get(&key("note#d1", &format!("note#{id}")));
        assert_eq!(
            row.map(|c| c.op),
            Some(ChangeOp::Delete),
            "{id} is a tombstone"
        );
    }
}

#[test]
fn a_packed_local_only_field_keeps_the_rest_of_the_clouds_map() {
    let mut world = World::with_schema(SCHEMA);
    let (db, _, _) = world.device("d1", None);
    db.create("Note", json!({"id": "n1", "level": 1, "pin": "1234"}))
        .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    let mut cloud = world.cloud_item(&key("note#d1", "note#n1")).unwrap();
    let Some(Value::M(data)) = cloud.get_mut("data") else {
        panic!("the packed map reached the cloud: {cloud:?}");
    };
    assert!(!data.contains_key("pin"), "the pin stayed on the device");
    data.insert("level".into(), Value::int(5));
    world.advance(1_000);
    world.cloud_write("Note", key("note#d1", "note#n1"), "d1", Some(cloud));
    db.sync(SYNC_TIMEOUT).unwrap();
    let hidden = FindOptions {
        hidden: true,
        ..FindOptions::default()
    };
    let local = db.get_with("Note", json!({"id": "n1"}), &hidden).unwrap();
    let local = local.unwrap();
    assert_eq!(local["level"], json!(5), "the cloud's level: {local}");
    assert_eq!(local["pin"], json!("1234"), "the device's pin: {local}");
}

#[test]
fn scope_templates_render_like_value_templates_and_are_read_by_the_device() {
    let mut world = World::with_schema(SCHEMA);
    let (db, _, _) = world.device("d1", None);
    db.create("Padded", json!({"id": "p1"})).unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    let scopes: Vec<String> = db.status().cursors.into_iter().map(|(s, _)| s).collect();
    assert!(
        scopes.contains(&"site#0000d1".to_string()),
        "the padded scope is read: {scopes:?}"
    );
    let row = world
        .cloud
        .lock()
        .unwrap()
        .get(&key("padded#", "padded#p1"))
        .cloned();
    assert_eq!(row.map(|c| c.scope).as_deref(), Some("site#0000d1"));

    let padded = item(&[
        ("_type", s("Padded")),
        ("pk", s("padded#")),
        ("sk", s("padded#p2")),
        ("id", s("p2")),
    ]);
    world.advance(1_000);
    world.cloud_write(
        "Padded",
        key("padded#", "padded#p2"),
        "site#0000d1",
        Some(padded),
    );
    db.sync(SYNC_TIMEOUT).unwrap();
    assert!(db.get("Padded", json!({"id": "p2"})).unwrap().is_some());
}

#[test]
fn a_write_into_a_scope_the_device_does_not_read_is_refused() {
    let mut world = World::with_schema(SCHEMA);
    let (db, _, _) = world.device("d1", None);
    let error = db
        .create("Note", json!({"id": "n1", "deviceId": "d2"}))
        .unwrap_err();
    assert_eq!(error.code(), "ControlError");
    assert!(error.to_string().contains("'d2'"), "{error}");
    assert_eq!(db.status().pending_changes, 0);
}

#[test]
fn a_downloading_model_whose_scope_depends_on_the_item_cannot_attach() {
    const ITEM_SCOPED: &str = r#"{
        version: '1', format: 'onetable:1.1.0',
        indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Job: {
            pk: { type: 'string', value: 'job#' }, sk: { type: 'string', value: 'job#${id}' },
            id: { type: 'string', required: true }, site: { type: 'string' },
        } },
        control: { Job: { sync: 'down', scope: '${site}' } },
    }"#;
    let mut world = World::with_schema(ITEM_SCOPED);
    let (db, _) = world.open("d1", None);
    let transport = ferry::MemoryTransport::new(world.cloud.clone());
    let error = db
        .attach(transport, ferry::SyncOptions::default())
        .unwrap_err();
    assert_eq!(error.code(), "ControlError");
    assert!(error.to_string().contains("${site}"), "{error}");
}

#[test]
fn a_full_outbox_refuses_new_keys_with_outbox_full_and_drops_nothing() {
    let world = World::with_schema(SCHEMA);
    let dir = tempfile::tempdir().unwrap();
    let config = ferry::Config {
        outbox_changes_max: 3,
        ttl_sweep: None,
        clock: world.clock.clock(),
        timer: world.clock.clock(),
        ..ferry::Config::with_schema(crate::support::schema(SCHEMA)).context("deviceId", "d1")
    };
    let db = ferry::Db::open(dir.path(), config.clone()).unwrap();
    for id in ["n1", "n2", "n3"] {
        db.create("Note", json!({"id": id})).unwrap();
    }
    let full = db.create("Note", json!({"id": "n4"})).unwrap_err();
    assert_eq!(full.code(), "OutboxFull");
    assert!(full.to_string().contains('3'), "names the limit: {full}");
    assert!(
        db.get("Note", json!({"id": "n4"})).unwrap().is_none(),
        "not half written"
    );
    db.update(
        "Note",
        json!({"id": "n1", "text": "newer"}),
        &ferry::WriteOptions::default(),
    )
    .expect("a key already pending takes a newer change");
    drop(db);

    // The count survives a restart; syncing empties the outbox and writes go again.
    let db = ferry::Db::open(dir.path(), config).unwrap();
    assert_eq!(
        db.create("Note", json!({"id": "n4"})).unwrap_err().code(),
        "OutboxFull"
    );
    let transport = ferry::MemoryTransport::new(world.cloud.clone());
    db.attach(transport, ferry::SyncOptions::default()).unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    db.create("Note", json!({"id": "n4"})).unwrap();
    let cloud_text = world.cloud_item(&key("note#d1", "note#n1"));
    assert_eq!(
        cloud_text.and_then(|i| i.get("text").cloned()),
        Some(s("newer"))
    );
}

/// A transport whose every call hangs: a network that takes the request and never answers.
struct Hanging;

impl ferry::Transport for Hanging {
    fn connect(
        &self,
    ) -> impl Future<
        Output = Result<ferry::replication::Session, ferry::replication::TransportError>,
    > + Send {
        std::future::pending()
    }

    fn push(
        &self,
        _: Vec<ferry::journal::Change>,
    ) -> impl Future<
        Output = Result<ferry::replication::PushResults, ferry::replication::TransportError>,
    > + Send {
        std::future::pending()
    }

    fn pull(
        &self,
        _: &str,
        _: ferry::replication::PullFrom,
        _: usize,
    ) -> impl Future<
        Output = Result<ferry::replication::PullPage, ferry::replication::TransportError>,
    > + Send {
        std::future::pending()
    }
}

#[test]
fn sync_returns_by_its_timeout_and_status_answers_while_the_transport_hangs() {
    let mut world = World::with_schema(SCHEMA);
    let (db, _) = world.open("d1", None);
    let options = ferry::SyncOptions {
        call_timeout: std::time::Duration::from_millis(300),
        ..ferry::SyncOptions::default()
    };
    db.attach(Hanging, options).unwrap();
    db.create("Note", json!({"id": "n1"})).unwrap();
    let started = std::time::Instant::now();
    let error = db.sync(std::time::Duration::from_millis(500)).unwrap_err();
    assert_eq!(error.code(), "SyncTimeout");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let status = db.status();
    assert_eq!(status.pending_changes, 1);
    assert!(
        !status.connected,
        "a handshake that never answers is not a connection"
    );
    std::thread::sleep(std::time::Duration::from_millis(400));
    let last_error = db.status().last_error.unwrap_or_default();
    assert!(last_error.contains("did not answer"), "{last_error}");
}

#[test]
fn an_attached_db_syncs_in_the_background_and_triggers_may_call_back_into_it() {
    let mut world = World::with_schema(SCHEMA);
    let (a, _, _) = world.device("d1", None);
    let (b, _, _) = world.device("d2", None);
    // A trigger of a cloud change that reads the status, syncs and writes.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (db, events) = (b.clone(), seen.clone());
    b.on_change(Some("Config"), move |event| {
        let status = db.status();
        let synced = db.sync(std::time::Duration::from_secs(5)).is_ok();
        db.create("Padded", json!({"id": "from-trigger"})).unwrap();
        events
            .lock()
            .unwrap()
            .push((event.origin, status.attached, synced));
    })
    .unwrap();
    let config = item(&[
        ("_type", s("Config")),
        ("pk", s("config#")),
        ("sk", s("config#mode")),
        ("name", s("mode")),
        ("value", s("eco")),
    ]);
    world.cloud_write("Config", key("config#", "config#mode"), "*", Some(config));
    a.create("Note", json!({"id": "n1"})).unwrap();
    // Neither drive() nor sync(): the background drivers move both ways on their own
    // (the test clock stands still, so the sync delay is skipped by a poll of time).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        world.advance(1_000);
        let uploaded = world.cloud_item(&key("note#d1", "note#n1")).is_some();
        let downloaded = !seen.lock().unwrap().is_empty();
        let echoed = world
            .cloud_item(&key("padded#", "padded#from-trigger"))
            .is_some();
        if uploaded && downloaded && echoed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no background progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.len(),
        1,
        "one Cloud event per applied change: {seen:?}"
    );
    assert_eq!(seen[0], (ferry::Origin::Cloud, true, true));
}

fn tag(id: &str, label: &str) -> Item {
    item(&[
        ("_type", s("Tag")),
        ("pk", s("tag#")),
        ("sk", s(&format!("tag#{id}"))),
        ("id", s(id)),
        ("label", s(label)),
    ])
}

fn manual() -> ferry::SyncOptions {
    ferry::SyncOptions {
        background: false,
        ..ferry::SyncOptions::default()
    }
}

#[test]
fn a_change_that_cannot_apply_is_quarantined_and_its_scope_moves_on() {
    let mut world = World::with_schema(SCHEMA);
    let (db, _, _) = world.device_with("d1", None, manual());
    world.cloud_write("Tag", key("tag#", "tag#t1"), "*", Some(tag("t1", "red")));
    world.advance(1);
    // The same unique label under another key: fine in the cloud, a clash on the device.
    world.cloud_write("Tag", key("tag#", "tag#t2"), "*", Some(tag("t2", "red")));
    world.advance(1);
    // An item whose attributes name another key than the change's.
    world.cloud_write("Tag", key("tag#", "tag#t3"), "*", Some(tag("t9", "blue")));
    world.advance(1);
    // Under DynamoDB's limit in the cloud, over it once the device adds its version.
    let mut big = tag("t4", "big");
    big.insert("blob".into(), Value::B(vec![7; 400 * 1024 - 60]));
    world.cloud_write("Tag", key("tag#", "tag#t4"), "*", Some(big));
    world.advance(1);
    world.cloud_write("Tag", key("tag#", "tag#t5"), "*", Some(tag("t5", "green")));
    db.sync(SYNC_TIMEOUT).unwrap();

    assert!(
        db.get("Tag", json!({"id": "t5"})).unwrap().is_some(),
        "the scope moved on"
    );
    assert!(db.get("Tag", json!({"id": "t1"})).unwrap().is_some());
    let quarantined = db.quarantine(10).unwrap();
    let reasons: Vec<(String, String)> = quarantined
        .iter()
        .map(|q| (q.key.clone(), q.reason.clone()))
        .collect();
    assert_eq!(quarantined.len(), 3, "{reasons:?}");
    assert_eq!(db.status().quarantined, 3);
    let reason_of = |sk: &str| {
        let found = reasons.iter().find(|(key, _)| key.contains(sk));
        found.map(|(_, reason)| reason.clone()).unwrap_or_default()
    };
    assert!(reason_of("tag#t2").contains("unique"), "{reasons:?}");
    assert!(reason_of("tag#t3").contains("key"), "{reasons:?}");
    assert!(reason_of("tag#t4").contains("bytes"), "{reasons:?}");
    assert_eq!(quarantined[0].model, "Tag");

    // A newer change of a quarantined key that can apply releases it.
    world.advance(1_000);
    world.cloud_write("Tag", key("tag#", "tag#t2"), "*", Some(tag("t2", "orange")));
    db.sync(SYNC_TIMEOUT).unwrap();
    assert!(db.get("Tag", json!({"id": "t2"})).unwrap().is_some());
    assert_eq!(db.status().quarantined, 2);
}

#[test]
fn a_change_of_an_unknown_model_is_kept_and_applies_after_a_schema_upgrade() {
    const BEFORE: &str = r#"{
        version: '1', format: 'onetable:1.1.0',
        indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: { Config: {
            pk: { type: 'string', value: 'config#' }, sk: { type: 'string', value: 'config#${name}' },
            name: { type: 'string', required: true }, value: { type: 'string' },
        } },
        control: { Config: { sync: 'down', scope: '*' } },
    }"#;
    const AFTER: &str = r#"{
        version: '2', format: 'onetable:1.1.0',
        indexes: { primary: { hash: 'pk', sort: 'sk' } },
        models: {
            Config: {
                pk: { type: 'string', value: 'config#' }, sk: { type: 'string', value: 'config#${name}' },
                name: { type: 'string', required: true }, value: { type: 'string' },
            },
            Gadget: {
                pk: { type: 'string', value: 'gadget#' }, sk: { type: 'string', value: 'gadget#${id}' },
                id: { type: 'string', required: true },
            },
        },
        control: { Config: { sync: 'down', scope: '*' }, Gadget: { sync: 'down', scope: '*' } },
    }"#;
    let mut world = World::with_schema(BEFORE);
    let (db, dir) = world.open("d1", None);
    db.attach(ferry::MemoryTransport::new(world.cloud.clone()), manual())
        .unwrap();
    let gadget = item(&[
        ("_type", s("Gadget")),
        ("pk", s("gadget#")),
        ("sk", s("gadget#g1")),
        ("id", s("g1")),
    ]);
    world.cloud_write("Gadget", key("gadget#", "gadget#g1"), "*", Some(gadget));
    db.sync(SYNC_TIMEOUT).unwrap();
    let kept = db.quarantine(10).unwrap();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].reason.contains("Gadget"), "{}", kept[0].reason);
    drop(db);

    // The device upgrades its schema: the kept change applies, though its feed position
    // is behind the cursor.
    let config = ferry::Config {
        clock: world.clock.clock(),
        timer: world.clock.clock(),
        ttl_sweep: None,
        ..ferry::Config::with_schema(crate::support::schema(AFTER)).context("deviceId", "d1")
    };
    let db = ferry::Db::open(world.dir(dir), config).unwrap();
    db.attach(ferry::MemoryTransport::new(world.cloud.clone()), manual())
        .unwrap();
    assert!(db.get("Gadget", json!({"id": "g1"})).unwrap().is_some());
    assert_eq!(db.status().quarantined, 0);
}

#[test]
fn only_genuine_losers_are_conflicts_logged_once_and_seen_by_triggers() {
    let mut world = World::with_schema(SCHEMA);
    // A long syncDelay keeps a local update pending across several polls.
    let mut options = manual();
    options.engine.sync_delay_ms = 10 * 60_000;
    let (db, _, _) = world.device_with("d1", None, options);
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    db.on_change(Some("Note"), move |event| {
        seen.lock()
            .unwrap()
            .push((event.op, event.origin, event.version.clone()));
    })
    .unwrap();
    db.create("Note", json!({"id": "n1", "text": "v1"}))
        .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    // A local update, pending (inside syncDelay) when the next poll re-reads the
    // device's own acknowledged v1 within the catch-up window: old news, not a conflict.
    world.advance(1_000);
    db.update(
        "Note",
        json!({"id": "n1", "text": "v2"}),
        &WriteOptions::default(),
    )
    .unwrap();
    world.advance(30_000);
    db.drive().unwrap();
    assert_eq!(db.status().pending_changes, 1, "v2 waits for its delay");
    assert_eq!(db.status().conflicts, 0, "a re-read of our own version");

    // A cloud writer's version older than the pending v2, made without seeing v1's
    // successor: v2 wins, and the loser is the cloud's writer, not this device.
    let note = key("note#d1", "note#n1");
    let before_v2_ms = world.now() as u64 - 30_500; // after v1, before v2
    let v1 = world
        .cloud
        .lock()
        .unwrap()
        .get(&note)
        .unwrap()
        .version
        .clone();
    let cloud_write = |world: &mut World, ms: u64, text: &str, base: Option<Version>| {
        let mut item = world.cloud_item(&note).unwrap();
        item.insert("text".into(), s(text));
        let version = Version {
            hlc: ferry::types::Hlc::new(ms, 0),
            replica: ferry::types::ReplicaId::parse("cloud").unwrap(),
        };
        let change = ferry::journal::Change {
            model: "Note".into(),
            key: note.clone(),
            op: ChangeOp::Put,
            version: version.clone(),
            scope: "d1".into(),
            item: Some(item),
            base,
        };
        world.cloud.lock().unwrap().write(change);
        version
    };
    cloud_write(&mut world, before_v2_ms, "older", Some(v1));
    for _ in 0..3 {
        world.advance(30_000);
        db.drive().unwrap();
    }
    assert_eq!(db.status().conflicts, 0, "{:?}", db.conflicts(10).unwrap());
    db.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(db.status().conflicts, 0, "v2 won in the cloud too");
    let v2 = world
        .cloud
        .lock()
        .unwrap()
        .get(&note)
        .unwrap()
        .version
        .clone();

    // A newer cloud write made on top of v2: the device's write did not lose.
    world.advance(1_000);
    let now = world.now() as u64;
    let over = cloud_write(&mut world, now, "over v2", Some(v2.clone()));
    world.advance(40_000);
    db.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(db.status().conflicts, 0, "made on top of ours");

    // A newer cloud write made without seeing the device's latest (its base is older):
    // the device's acknowledged write lost, and the device logs it once, however often
    // the feed is re-read.
    db.update(
        "Note",
        json!({"id": "n1", "text": "v3"}),
        &WriteOptions::default(),
    )
    .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    world.advance(1_000);
    let now = world.now() as u64;
    let winner = cloud_write(&mut world, now, "blind", Some(over));
    for _ in 0..3 {
        world.advance(30_000);
        db.sync(SYNC_TIMEOUT).unwrap();
    }
    assert_eq!(db.status().conflicts, 1, "logged once");
    let conflicts = db.conflicts(10).unwrap();
    assert_eq!(
        conflicts[0].loser_item.as_ref().map(|i| i["text"].clone()),
        Some(json!("v3"))
    );
    assert_eq!(conflicts[0].winner, winner.to_text());
    let events = events.lock().unwrap();
    let conflict_events: Vec<_> = events
        .iter()
        .filter(|(op, ..)| *op == ferry::Op::Conflict)
        .collect();
    assert_eq!(conflict_events.len(), 1, "{events:?}");
    assert_eq!(
        conflict_events[0].2.as_deref(),
        Some(conflicts[0].winner.as_str())
    );
    assert!(
        events.iter().all(|(_, _, version)| version.is_some()),
        "{events:?}"
    );
}

const DAY_MS: i64 = 24 * 3600 * 1000;

fn config_item(name: &str) -> Item {
    item(&[
        ("_type", s("Config")),
        ("pk", s("config#")),
        ("sk", s(&format!("config#{name}"))),
        ("name", s(name)),
        ("value", s("x")),
    ])
}

#[test]
fn a_resync_of_many_pages_of_rows_older_than_the_horizon_finishes() {
    let mut world = World::with_schema(SCHEMA);
    let (old, link, _) = world.device_with("d1", None, manual());
    world.cloud_write(
        "Config",
        key("config#", "config#gone"),
        "*",
        Some(config_item("gone")),
    );
    for n in 0..250 {
        let name = format!("c{n:03}");
        world.cloud_write(
            "Config",
            key("config#", &format!("config#{name}")),
            "*",
            Some(config_item(&name)),
        );
    }
    old.sync(SYNC_TIMEOUT).unwrap();
    assert!(
        old.get("Config", json!({"name": "gone"}))
            .unwrap()
            .is_some()
    );
    link.set_online(false);
    world.advance(3_600_000);
    world.cloud_write("Config", key("config#", "config#gone"), "*", None);
    world.advance(40 * DAY_MS); // the tombstone is purged; every row is older than the horizon
    world.cloud_write(
        "Config",
        key("config#", "config#fresh"),
        "*",
        Some(config_item("fresh")),
    );
    link.set_online(true);
    old.sync(SYNC_TIMEOUT)
        .expect("the resync pages through every old row");
    assert!(
        old.get("Config", json!({"name": "gone"}))
            .unwrap()
            .is_none(),
        "the purged delete"
    );
    assert!(
        old.get("Config", json!({"name": "fresh"}))
            .unwrap()
            .is_some()
    );
    let count = |db: &ferry::Db| {
        let page = db
            .find("Config", json!({}), &FindOptions::default())
            .unwrap();
        page.items.len()
    };
    assert_eq!(count(&old), 251);
    // A new device's first sync of the same scope.
    let (new, _, _) = world.device_with("d2", None, manual());
    new.sync(SYNC_TIMEOUT)
        .expect("a new device's first sync finishes");
    assert_eq!(count(&new), 251);
}

type PushHook = Box<dyn Fn(&[ferry::journal::Change]) + Send + Sync>;
type PullHook = Box<dyn Fn(ferry::replication::PullFrom) -> bool + Send + Sync>;

/// The reference cloud's transport with a test's hand on it: `before_push` sees every push
/// before the cloud does; a pull that `cut` says true to fails as a lost link; a snapshot
/// page leaves out the changes `unseen` says true to (an index not caught up yet), which a
/// single-row read still finds.
struct Hooked {
    inner: ferry::MemoryTransport,
    before_push: PushHook,
    cut: PullHook,
    unseen: Box<dyn Fn(&ferry::journal::Change) -> bool + Send + Sync>,
    /// Answers a single-row read in the cloud's place when it says so.
    read: ReadHook,
}

type RowRead = Result<Option<ferry::journal::Change>, ferry::replication::TransportError>;
type ReadHook = Box<dyn Fn(&ferry::types::Key) -> Option<RowRead> + Send + Sync>;

impl Hooked {
    fn new(world: &World) -> Hooked {
        Hooked {
            inner: ferry::MemoryTransport::new(world.cloud.clone()),
            before_push: Box::new(|_| {}),
            cut: Box::new(|_| false),
            unseen: Box::new(|_| false),
            read: Box::new(|_| None),
        }
    }
}

impl ferry::Transport for Hooked {
    fn connect(
        &self,
    ) -> impl Future<
        Output = Result<ferry::replication::Session, ferry::replication::TransportError>,
    > + Send {
        self.inner.connect()
    }

    fn push(
        &self,
        changes: Vec<ferry::journal::Change>,
    ) -> impl Future<
        Output = Result<ferry::replication::PushResults, ferry::replication::TransportError>,
    > + Send {
        (self.before_push)(&changes);
        self.inner.push(changes)
    }

    fn pull(
        &self,
        scope: &str,
        from: ferry::replication::PullFrom,
        limit: usize,
    ) -> impl Future<
        Output = Result<ferry::replication::PullPage, ferry::replication::TransportError>,
    > + Send {
        let cut = (self.cut)(from);
        let snapshot = matches!(from, ferry::replication::PullFrom::Snapshot(_));
        let page = self.inner.pull(scope, from, limit);
        async move {
            if cut {
                let lost = "link lost".into();
                return Err(ferry::replication::TransportError::Unavailable(lost));
            }
            let mut page = page.await?;
            if snapshot {
                page.changes.retain(|(_, change)| !(self.unseen)(change));
            }
            Ok(page)
        }
    }

    fn get(&self, key: &ferry::types::Key) -> impl Future<Output = RowRead> + Send {
        let answer = (self.read)(key);
        let read = self.inner.get(key);
        async move {
            match answer {
                Some(answer) => answer,
                None => read.await,
            }
        }
    }
}

#[test]
fn a_resync_cut_short_starts_again_instead_of_believing_it_caught_up() {
    let mut world = World::with_schema(SCHEMA);
    let (db, _) = world.open("d1", None);
    // The second page of a snapshot fails once, when armed: a resync cut short.
    let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trigger = armed.clone();
    let transport = std::sync::Arc::new(Hooked {
        cut: Box::new(move |from| {
            let second_page = matches!(from, ferry::replication::PullFrom::Snapshot(after)
                if after != ferry::types::Hlc::ZERO);
            second_page && trigger.swap(false, std::sync::atomic::Ordering::SeqCst)
        }),
        ..Hooked::new(&world)
    });
    db.attach(transport.clone(), manual()).unwrap();
    world.cloud_write(
        "Config",
        key("config#", "config#gone"),
        "*",
        Some(config_item("gone")),
    );
    db.sync(SYNC_TIMEOUT).unwrap();
    transport.inner.set_online(false);
    world.advance(3_600_000);
    world.cloud_write("Config", key("config#", "config#gone"), "*", None);
    world.advance(3_600_000);
    // Written after the delete: the first snapshot page ends past the purged tombstone.
    for n in 0..150 {
        let name = format!("c{n:03}");
        world.cloud_write(
            "Config",
            key("config#", &format!("config#{name}")),
            "*",
            Some(config_item(&name)),
        );
    }
    world.advance(40 * DAY_MS);
    transport.inner.set_online(true);
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    // The cut fails this sync (the retry waits out a backoff on the test's clock).
    let _ = db.sync(std::time::Duration::from_millis(200));
    world.advance(60_000);
    db.sync(SYNC_TIMEOUT).unwrap();
    assert!(
        !armed.load(std::sync::atomic::Ordering::SeqCst),
        "the cut happened"
    );
    assert!(
        db.get("Config", json!({"name": "gone"})).unwrap().is_none(),
        "the resync ran again to its end and forgot the item the cloud purged"
    );
}

#[test]
fn sync_returns_ok_only_once_every_change_pending_at_the_call_has_left() {
    let mut world = World::with_schema(SCHEMA);
    let (db, _) = world.open("d1", None);
    // A cloud writer overwrites the key with a newer version before each of the first five
    // pushes that carry it: an `up` change superseded again and again.
    let left = std::sync::atomic::AtomicUsize::new(5);
    let cloud = world.cloud.clone();
    let transport = Hooked {
        before_push: Box::new(move |changes| {
            for change in changes {
                let fetched = left.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
                if fetched.is_ok() {
                    let mut newer = change.clone();
                    newer.version = ferry::types::Version {
                        hlc: ferry::types::Hlc::new(change.version.hlc.physical_ms() + 1_000, 0),
                        replica: ferry::types::ReplicaId::parse("cloud").unwrap(),
                    };
                    cloud.lock().unwrap().write(newer);
                }
            }
        }),
        ..Hooked::new(&world)
    };
    db.attach(transport, manual()).unwrap();
    db.create("Fault", json!({"id": "f1", "code": 1})).unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(
        db.status().pending_changes,
        0,
        "Ok means nothing of it is left"
    );
    let cloud = world.cloud_item(&key("fault#d1", "fault#f1")).unwrap();
    assert_eq!(
        cloud.get("code"),
        Some(&Value::int(1)),
        "the device won, as up says"
    );
}

#[test]
fn observed_stamps_survive_a_restart_and_connected_tells_the_truth() {
    let mut world = World::with_schema(SCHEMA);
    let (db, link, dir) = world.device_with("d1", None, manual());
    assert!(!db.status().connected, "not before a handshake");
    db.sync(SYNC_TIMEOUT).unwrap();
    assert!(db.status().connected);
    // A cloud version 20 minutes ahead of the device's clock (within the 1 h bound).
    let ahead_ms = world.now() as u64 + 20 * 60_000;
    world.cloud.lock().unwrap().write(ferry::journal::Change {
        model: "Config".into(),
        key: key("config#", "config#mode"),
        op: ChangeOp::Put,
        version: ferry::types::Version {
            hlc: ferry::types::Hlc::new(ahead_ms, 0),
            replica: ferry::types::ReplicaId::parse("cloud").unwrap(),
        },
        scope: "*".into(),
        item: Some(config_item("mode")),
        base: None,
    });
    db.sync(SYNC_TIMEOUT).unwrap();
    let seen = ferry::types::Hlc::new(ahead_ms, 0).to_text();
    assert!(db.status().clock >= seen, "{} < {seen}", db.status().clock);
    link.set_online(false);
    assert!(db.sync(std::time::Duration::from_millis(50)).is_err());
    assert!(!db.status().connected, "a failed call takes the link down");
    drop(db);
    let (db, _) = world.open("d1", Some(dir));
    assert!(
        db.status().clock >= seen,
        "after a restart: {} < {seen}",
        db.status().clock
    );
}

#[test]
fn background_drivers_with_concurrent_writers_converge() {
    let mut world = World::with_schema(SCHEMA);
    let devices: Vec<_> = ["d1", "d2"]
        .iter()
        .map(|id| world.device(id, None).0)
        .collect();
    let writers: Vec<_> = devices
        .iter()
        .map(|db| {
            let db = db.clone();
            std::thread::spawn(move || {
                for n in 0..200 {
                    let id = format!("n{}", n % 20);
                    db.put("Note", json!({"id": id, "text": format!("t{n}")}))
                        .unwrap();
                    db.put("Fault", json!({"id": format!("f{n}"), "code": n}))
                        .unwrap();
                }
            })
        })
        .collect();
    for n in 0..50 {
        let name = format!("c{n}");
        let key = key("config#", &format!("config#{name}"));
        world.cloud_write("Config", key, "*", Some(config_item(&name)));
        world.advance(10);
    }
    for writer in writers {
        writer.join().unwrap();
    }
    for db in &devices {
        db.sync(std::time::Duration::from_secs(20)).unwrap();
    }
    for (db, device) in devices.iter().zip(["d1", "d2"]) {
        assert_eq!(db.status().pending_changes, 0);
        for n in 180..200 {
            let id = format!("n{}", n % 20);
            let note = world.cloud_item(&key(&format!("note#{device}"), &format!("note#{id}")));
            let text = note.and_then(|item| item.get("text").cloned());
            assert_eq!(
                text,
                Some(s(&format!("t{n}"))),
                "{device} {id}: the last write"
            );
        }
        for n in 0..200 {
            let fault = key(&format!("fault#{device}"), &format!("fault#f{n}"));
            assert!(world.cloud_item(&fault).is_some(), "{device} f{n}");
        }
        let configs = db
            .find("Config", json!({}), &FindOptions::default())
            .unwrap();
        assert_eq!(
            configs.items.len(),
            50,
            "{device}: every cloud change came down"
        );
    }
}

#[test]
fn a_tombstone_past_the_horizon_no_longer_beats_a_put_the_cloud_took() {
    let mut world = World::with_schema(SCHEMA);
    let (a, _, _) = world.device_with("d1", None, manual());
    let (b, b_link, _) = world.device_with("d2", None, manual());
    a.create("Board", json!({"id": "x", "text": "first"}))
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    b.sync(SYNC_TIMEOUT).unwrap();
    // b edits offline; a deletes after it, and the cloud keeps the delete.
    b_link.set_online(false);
    an_offline_edit_then_a_delete(&world, &a, &b);
    // b stays away past the horizon: the cloud forgets the delete, and b's edit lands.
    world.advance(31 * DAY_MS);
    b_link.set_online(true);
    b.sync(SYNC_TIMEOUT).unwrap();
    let cloud = world.cloud_item(&key("board#", "board#x"));
    assert_eq!(
        cloud.and_then(|i| i.get("text").cloned()),
        Some(s("offline edit"))
    );
    // a's own tombstone is as old: it must not keep a away from what the cloud holds.
    a.sync(SYNC_TIMEOUT).unwrap();
    let on_a = a.get("Board", json!({"id": "x"})).unwrap();
    assert_eq!(
        on_a.map(|i| i["text"].clone()),
        Some(json!("offline edit")),
        "converged"
    );
}

#[test]
fn past_the_inbox_bound_notifications_give_way_to_a_reload_and_nothing_is_lost() {
    let mut world = World::with_schema(SCHEMA);
    let (db, _, _) = world.device_with("d1", None, manual());
    // More writes than the driver's inbox holds, with no step in between.
    let writes = 10_050;
    let faults: Vec<ferry::Write> = (0..writes)
        .map(|n| ferry::Write::Put {
            model: "Fault".into(),
            props: json!({"id": format!("f{n}"), "code": n}),
        })
        .collect();
    for chunk in faults.chunks(100) {
        db.transaction(chunk).unwrap();
    }
    db.sync(std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(db.status().pending_changes, 0);
    let cloud = world.cloud.lock().unwrap();
    assert_eq!(cloud.len(), writes, "every change reached the cloud");
}

/// A device whose clock runs two hours ahead edits an item the cloud holds at a version
/// half an hour ahead of its own time. The cloud refuses the edit's version as ahead; the
/// device re-stamps it at the cloud's time but past the version it edited, so the edit
/// lands instead of losing to its own base (and no conflict is logged for it).
#[test]
fn a_change_restamped_at_the_clouds_time_stays_past_the_version_it_replaced() {
    let mut world = World::with_schema(SCHEMA);
    let (db, _, _) = world.device_with("d1", None, manual());
    db.sync(SYNC_TIMEOUT).unwrap();
    let note = key("note#d1", "note#n1");
    let half_hour_ahead = world.now() as u64 + 30 * 60_000;
    let item = item(&[
        ("_type", s("Note")),
        ("pk", s("note#d1")),
        ("sk", s("note#n1")),
        ("deviceId", s("d1")),
        ("id", s("n1")),
        ("text", s("from the cloud")),
    ]);
    let cloud_version = Version {
        hlc: ferry::types::Hlc::new(half_hour_ahead, 0),
        replica: ferry::types::ReplicaId::parse("cloud").unwrap(),
    };
    let written = world.cloud.lock().unwrap().write(ferry::journal::Change {
        model: "Note".into(),
        key: note.clone(),
        op: ChangeOp::Put,
        version: cloud_version.clone(),
        scope: "d1".into(),
        item: Some(item),
        base: None,
    });
    assert_eq!(written, ferry::replication::PushOutcome::Applied);
    db.sync(SYNC_TIMEOUT).unwrap();
    // The device's clock steps two hours ahead; the cloud's does not.
    world.clock.set(world.now() + 2 * 3_600_000);
    db.update(
        "Note",
        json!({"id": "n1", "text": "from the device"}),
        &WriteOptions::default(),
    )
    .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    let held = world.cloud.lock().unwrap().get(&note).cloned().unwrap();
    assert!(held.version > cloud_version, "{held:?}");
    assert_eq!(
        held.item.unwrap()["text"],
        s("from the device"),
        "the edit landed"
    );
    assert_eq!(db.status().conflicts, 0, "{:?}", db.conflicts(10).unwrap());
    assert_eq!(db.status().pending_changes, 0);
}

/// A cloud change over this device's acknowledged write that cannot apply here (a unique
/// clash) goes to the quarantine and logs nothing; re-reading it logs nothing either. Once
/// a newer cloud change of the key applies, the device's write lost, logged once
/// (found by `cargo xtask sim --seed 403`: the conflict was logged on every re-read).
#[test]
fn a_winner_that_cannot_apply_logs_no_conflict_until_one_applies() {
    let mut world = World::with_schema(SCHEMA);
    let (db, _, _) = world.device_with("d1", None, manual());
    db.create("Badge", json!({"id": "b1", "label": "x"}))
        .unwrap();
    db.create("Badge", json!({"id": "b2", "label": "y"}))
        .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    let badge = |label: &str| {
        item(&[
            ("_type", s("Badge")),
            ("pk", s("badge#")),
            ("sk", s("badge#b1")),
            ("id", s("b1")),
            ("label", s(label)),
        ])
    };
    world.advance(1_000);
    world.cloud_write("Badge", key("badge#", "badge#b1"), "*", Some(badge("y")));
    for _ in 0..3 {
        world.advance(30_000);
        db.sync(SYNC_TIMEOUT).unwrap();
    }
    assert_eq!(db.status().quarantined, 1);
    assert_eq!(db.status().conflicts, 0, "{:?}", db.conflicts(10).unwrap());
    world.advance(1_000);
    world.cloud_write("Badge", key("badge#", "badge#b1"), "*", Some(badge("z")));
    for _ in 0..3 {
        world.advance(30_000);
        db.sync(SYNC_TIMEOUT).unwrap();
    }
    assert_eq!(db.status().conflicts, 1, "{:?}", db.conflicts(10).unwrap());
    let got = db.get("Badge", json!({"id": "b1"})).unwrap().unwrap();
    assert_eq!(got["label"], json!("z"));
}

/// A device whose disk fails while `failing` is set: every commit errs as the disk's would.
fn device_on_a_failing_disk(
    world: &World,
    dir: &std::path::Path,
) -> (ferry::Db, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fails = failing.clone();
    let config = ferry::Config {
        clock: world.clock.clock(),
        timer: world.clock.clock(),
        ttl_sweep: None,
        on_commit: Some(std::sync::Arc::new(move || match fails.load(SeqCst) {
            true => Err(std::io::Error::other("the disk failed (test)")),
            false => Ok(()),
        })),
        ..ferry::Config::with_schema(crate::support::schema(SCHEMA)).context("deviceId", "d1")
    };
    (ferry::Db::open(dir, config).unwrap(), failing)
}

#[test]
fn a_resync_that_fails_on_the_device_is_retried_instead_of_wedging_its_scope() {
    let world = World::with_schema(SCHEMA);
    let dir = tempfile::tempdir().unwrap();
    let (db, failing) = device_on_a_failing_disk(&world, dir.path());
    let transport = std::sync::Arc::new(ferry::MemoryTransport::new(world.cloud.clone()));
    db.attach(transport.clone(), manual()).unwrap();
    let config = |name: &str| key("config#", &format!("config#{name}"));
    world.cloud_write("Config", config("before"), "*", Some(config_item("before")));
    db.sync(SYNC_TIMEOUT).unwrap();
    // Offline past the horizon: the next pull of `*` is a resync, and the disk fails in it.
    transport.set_online(false);
    world.advance(40 * DAY_MS);
    world.cloud_write("Config", config("after"), "*", Some(config_item("after")));
    transport.set_online(true);
    failing.store(true, SeqCst);
    assert!(db.sync(std::time::Duration::from_millis(300)).is_err());
    failing.store(false, SeqCst);
    world.advance(60_000);
    db.sync(SYNC_TIMEOUT)
        .expect("the resync is retried once the disk works");
    assert!(
        db.get("Config", json!({"name": "after"}))
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_settle_that_fails_on_the_device_loses_neither_the_next_step_nor_the_change() {
    let world = World::with_schema(SCHEMA);
    let dir = tempfile::tempdir().unwrap();
    let (db, failing) = device_on_a_failing_disk(&world, dir.path());
    db.attach(ferry::MemoryTransport::new(world.cloud.clone()), manual())
        .unwrap();
    db.create("Note", json!({"id": "n1", "text": "kept"}))
        .unwrap();
    // The cloud acknowledges; removing the change from the outbox fails.
    failing.store(true, SeqCst);
    assert!(db.sync(std::time::Duration::from_millis(300)).is_err());
    assert_eq!(db.status().pending_changes, 1, "nothing was settled");
    failing.store(false, SeqCst);
    world.advance(60_000);
    db.sync(SYNC_TIMEOUT)
        .expect("the change goes again, is already there, and settles");
    assert_eq!(db.status().pending_changes, 0);
    let note = key("note#d1", "note#n1");
    assert!(world.cloud_item(&note).is_some());
}

#[test]
fn a_tombstone_lives_from_its_delete_not_from_when_a_device_applied_it() {
    let mut world = World::with_schema(SCHEMA);
    let (a, _, _) = world.device_with("d1", None, manual());
    let (b, b_link, _) = world.device_with("d2", None, manual());
    let (c, c_link, _) = world.device_with("d3", None, manual());
    a.create("Board", json!({"id": "x", "text": "first"}))
        .unwrap();
    for db in [&a, &b, &c] {
        db.sync(SYNC_TIMEOUT).unwrap();
    }
    // b edits offline; a deletes after it; c is away and hears of the delete 20 days on.
    b_link.set_online(false);
    c_link.set_online(false);
    an_offline_edit_then_a_delete(&world, &a, &b);
    world.advance(20 * DAY_MS);
    c_link.set_online(true);
    c.sync(SYNC_TIMEOUT).unwrap();
    assert!(c.get("Board", json!({"id": "x"})).unwrap().is_none());
    // Past the horizon of the delete, the cloud forgot it and took b's edit: c's tombstone,
    // as old as the delete, must not keep c from it.
    world.advance(11 * DAY_MS);
    b_link.set_online(true);
    b.sync(SYNC_TIMEOUT).unwrap();
    c.sync(SYNC_TIMEOUT).unwrap();
    let on_c = c.get("Board", json!({"id": "x"})).unwrap();
    assert_eq!(
        on_c.map(|i| i["text"].clone()),
        Some(json!("offline edit")),
        "converged"
    );
}

#[test]
fn a_schema_upgrade_that_brings_a_model_down_brings_the_items_the_cursor_had_passed() {
    let before = config_and_board("none", "both");
    let after = config_and_board("down", "both");
    let mut world = World::with_schema(before);
    let (db, dir) = world.open("d1", None);
    db.attach(ferry::MemoryTransport::new(world.cloud.clone()), manual())
        .unwrap();
    let config = |name: &str| key("config#", &format!("config#{name}"));
    world.cloud_write("Config", config("early"), "*", Some(config_item("early")));
    world.advance(1_000);
    // Scope `*` is read for Board: its cursor passes the Config the device ignores.
    db.sync(SYNC_TIMEOUT).unwrap();
    world.advance(120_000);
    db.sync(SYNC_TIMEOUT).unwrap();
    assert!(
        db.get("Config", json!({"name": "early"}))
            .unwrap()
            .is_none()
    );
    drop(db);

    let db = reopened_with(&world, dir, after);
    db.sync(SYNC_TIMEOUT).unwrap();
    assert!(
        db.get("Config", json!({"name": "early"}))
            .unwrap()
            .is_some(),
        "the cloud's existing Config came down after the upgrade"
    );
}

#[test]
fn a_resync_right_after_pushes_keeps_the_rows_its_snapshot_did_not_show_yet() {
    let mut world = World::with_schema(SCHEMA);
    {
        // A feed (and so a snapshot) that shows a landed change up to W/2 late.
        let mut cloud = world.cloud.lock().unwrap();
        let now = cloud.now_ms();
        *cloud =
            ferry::MemoryCloud::default().with_lag(ferry::replication::CATCHUP_WINDOW_MS / 2, 3);
        cloud.set_time_ms(now);
    }
    let (db, link, _) = world.device_with("d1", None, manual());
    db.sync(SYNC_TIMEOUT).unwrap();
    // Away past the horizon (a tombstone of its scope purged meanwhile), it writes; back,
    // it pushes them and resyncs at once.
    link.set_online(false);
    let gone = key("board#", "board#gone");
    let board = item(&[
        ("_type", s("Board")),
        ("pk", s("board#")),
        ("sk", s("board#gone")),
        ("id", s("gone")),
    ]);
    world.cloud_write("Board", gone.clone(), "*", Some(board));
    world.advance(1_000);
    world.cloud_write("Board", gone, "*", None);
    world.advance(40 * DAY_MS);
    let ids: Vec<String> = (0..5).map(|n| format!("b{n}")).collect();
    for id in &ids {
        db.create("Board", json!({"id": id, "text": "mine"}))
            .unwrap();
    }
    link.set_online(true);
    db.sync(SYNC_TIMEOUT).unwrap();
    for id in &ids {
        assert!(
            db.get("Board", json!({"id": id})).unwrap().is_some(),
            "{id} landed in the cloud and stays on the device"
        );
    }
}

/// Over DynamoDB a resync's snapshot is a query of an index, which may not show yet a row
/// written just before it: the item a device pushed was forgotten, with its local-only
/// fields, and a delete fired. Each item the snapshot lacks is read strongly first.
#[test]
fn a_resync_whose_snapshot_lags_keeps_what_a_strong_read_finds() {
    let mut world = World::with_schema(SCHEMA);
    let (db, _) = world.open("d1", None);
    let fresh = key("note#d1", "note#fresh");
    let hidden = fresh.clone();
    let transport = std::sync::Arc::new(Hooked {
        unseen: Box::new(move |change| change.key == hidden),
        ..Hooked::new(&world)
    });
    db.attach(transport.clone(), manual()).unwrap();
    db.create(
        "Note",
        json!({"deviceId": "d1", "id": "fresh", "pin": "1234"}),
    )
    .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    // Away past the horizon: a tombstone of its scope is purged meanwhile, so its next
    // pull expires and it resyncs; the snapshot does not show the item it pushed.
    transport.inner.set_online(false);
    let gone = key("note#d1", "note#gone");
    let note = item(&[
        ("_type", s("Note")),
        ("pk", s("note#d1")),
        ("sk", s("note#gone")),
    ]);
    world.cloud_write("Note", gone.clone(), "d1", Some(note));
    world.advance(1_000);
    world.cloud_write("Note", gone, "d1", None);
    world.advance(40 * DAY_MS);
    let deletes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = deletes.clone();
    db.on_change(Some("Note"), move |event| {
        if event.op == ferry::Op::Remove {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    })
    .unwrap();
    transport.inner.set_online(true);
    db.sync(SYNC_TIMEOUT).unwrap();
    assert!(
        world.cloud.lock().unwrap().get(&fresh).is_some(),
        "it landed"
    );
    let note = db
        .get("Note", json!({"deviceId": "d1", "id": "fresh"}))
        .unwrap();
    assert_eq!(
        note.as_ref().and_then(|n| n["pin"].as_str()),
        Some("1234"),
        "the item stays, its local-only field with it"
    );
    assert_eq!(
        deletes.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no delete fired"
    );
}

/// A device's item that the cloud deleted and purged meanwhile, resynced with the reads
/// `read` answers: whether the device still holds it once `sync` returns, and whether
/// `sync` did return.
fn resync_of_a_purged_item(
    read: impl Fn(&ferry::types::Key) -> Option<RowRead> + Send + Sync + 'static,
) -> (bool, bool) {
    let mut world = World::with_schema(SCHEMA);
    let (db, _) = world.open("d1", None);
    let transport = std::sync::Arc::new(Hooked {
        read: Box::new(read),
        ..Hooked::new(&world)
    });
    db.attach(transport.clone(), manual()).unwrap();
    db.create("Note", json!({"deviceId": "d1", "id": "x"}))
        .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    transport.inner.set_online(false);
    world.advance(1_000);
    world.cloud_write("Note", key("note#d1", "note#x"), "d1", None);
    world.advance(40 * DAY_MS);
    transport.inner.set_online(true);
    let synced = db.sync(std::time::Duration::from_secs(3)).is_ok();
    let held = db
        .get("Note", json!({"deviceId": "d1", "id": "x"}))
        .unwrap();
    (held.is_some(), synced)
}

/// A transport whose credentials may not read single rows (the documented device policy
/// over DynamoDB grants `GetItem` on its own keys only) resynced round after round,
/// reconnecting each time. A denied read leaves the snapshot's word.
#[test]
fn a_resync_whose_single_row_reads_are_denied_trusts_its_snapshot() {
    let denied = |_: &ferry::types::Key| {
        let denied = ferry::replication::TransportError::Unauthorized("AccessDenied".into());
        Some(Err(denied))
    };
    assert_eq!(
        resync_of_a_purged_item(denied),
        (false, true),
        "(held, synced)"
    );
}

/// A read answered with a row of another scope (moved by a writer outside Ferry, or a
/// hostile relay's) says nothing of the item in this one: it was applied, and the item
/// stayed on the device for good.
#[test]
fn a_resync_read_answered_with_another_scopes_row_forgets_the_item() {
    let elsewhere = |key: &ferry::types::Key| {
        let item = item(&[
            ("_type", s("Note")),
            ("pk", s("note#d1")),
            ("sk", s("note#x")),
        ]);
        let version = Version::parse("0fffffffffff0000-elsewhere").unwrap();
        Some(Ok(Some(ferry::journal::Change {
            model: "Note".into(),
            key: key.clone(),
            op: ChangeOp::Put,
            version,
            scope: "d2".into(),
            item: Some(item),
            base: None,
        })))
    };
    assert_eq!(
        resync_of_a_purged_item(elsewhere),
        (false, true),
        "(held, synced)"
    );
}

#[test]
fn a_settle_the_disk_keeps_refusing_uploads_nothing_again() {
    let world = World::with_schema(SCHEMA);
    let dir = tempfile::tempdir().unwrap();
    let (db, failing) = device_on_a_failing_disk(&world, dir.path());
    let pushed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = pushed.clone();
    let transport = Hooked {
        before_push: Box::new(move |changes| {
            counted.fetch_add(changes.len(), SeqCst);
        }),
        ..Hooked::new(&world)
    };
    db.attach(transport, manual()).unwrap();
    for n in 0..40 {
        let text = "x".repeat(300);
        db.create("Note", json!({"id": format!("n{n}"), "text": text}))
            .unwrap();
    }
    failing.store(true, SeqCst);
    assert!(db.sync(std::time::Duration::from_millis(300)).is_err());
    for _ in 0..20 {
        db.drive().unwrap();
    }
    assert_eq!(
        pushed.load(SeqCst),
        40,
        "acknowledged once; only the local settle is tried again"
    );
    failing.store(false, SeqCst);
    db.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(db.status().pending_changes, 0);
}

#[test]
fn a_superseded_answer_the_disk_refused_is_carried_out_at_the_next_step() {
    let world = World::with_schema(SCHEMA);
    let dir = tempfile::tempdir().unwrap();
    let (db, failing) = device_on_a_failing_disk(&world, dir.path());
    db.attach(ferry::MemoryTransport::new(world.cloud.clone()), manual())
        .unwrap();
    db.create("Fault", json!({"id": "f1", "code": 1})).unwrap();
    world.advance(1_000);
    // A cloud writer got in first with a newer version: the upload is superseded, and
    // re-stamping it (`up`: the device is authoritative) fails on the disk.
    let fault = item(&[
        ("_type", s("Fault")),
        ("pk", s("fault#d1")),
        ("sk", s("fault#f1")),
        ("deviceId", s("d1")),
        ("id", s("f1")),
        ("code", Value::int(2)),
    ]);
    world.cloud_write("Fault", key("fault#d1", "fault#f1"), "d1", Some(fault));
    failing.store(true, SeqCst);
    assert!(db.sync(std::time::Duration::from_millis(300)).is_err());
    failing.store(false, SeqCst);
    world.advance(60_000);
    if let Err(e) = db.sync(SYNC_TIMEOUT) {
        panic!(
            "the re-stamp is tried again and goes up: {e:?} {:?}",
            db.status()
        );
    }
    assert_eq!(db.status().pending_changes, 0);
    let cloud = world.cloud_item(&key("fault#d1", "fault#f1")).unwrap();
    assert_eq!(cloud.get("code"), Some(&Value::int(1)), "the device won");
}

#[test]
fn turning_sync_on_for_a_model_keeps_the_items_the_device_already_had() {
    let before = config_and_board("down", "none");
    let after = config_and_board("down", "both");
    let mut world = World::with_schema(before);
    let (db, dir) = world.open("d1", None);
    db.attach(ferry::MemoryTransport::new(world.cloud.clone()), manual())
        .unwrap();
    db.create("Board", json!({"id": "b1", "text": "local only"}))
        .unwrap();
    // A tombstone of scope `*` purged past the device's cursor: a pull from the start
    // is a resync.
    let gone = key("config#", "config#gone");
    world.cloud_write("Config", gone.clone(), "*", Some(config_item("gone")));
    world.advance(1_000);
    world.cloud_write("Config", gone, "*", None);
    db.sync(SYNC_TIMEOUT).unwrap();
    world.advance(31 * DAY_MS);
    db.sync(SYNC_TIMEOUT).unwrap();
    drop(db);

    let db = reopened_with(&world, dir, after);
    db.sync(SYNC_TIMEOUT).unwrap();
    assert!(
        db.get("Board", json!({"id": "b1"})).unwrap().is_some(),
        "an item that never synced is not the cloud's to remove"
    );
}

#[test]
fn a_trigger_that_syncs_while_thousands_of_cloud_changes_arrive_is_answered() {
    let mut world = World::with_schema(SCHEMA);
    let (b, _, _) = world.device("d2", None);
    // The first cloud change's trigger syncs: the driver must answer it while the
    // triggers of the changes after it wait.
    let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let fired = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (db, seen, count) = (b.clone(), answers.clone(), fired.clone());
    b.on_change(Some("Config"), move |_| {
        if count.fetch_add(1, SeqCst) == 0 {
            let answer = db.sync(std::time::Duration::from_secs(5));
            seen.lock().unwrap().push(answer.map_err(|e| e.to_string()));
        }
    })
    .unwrap();
    const CHANGES: usize = 3_000;
    for n in 0..CHANGES {
        let name = format!("c{n:04}");
        let key = key("config#", &format!("config#{name}"));
        world.cloud_write("Config", key, "*", Some(config_item(&name)));
    }
    b.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(fired.load(SeqCst), CHANGES, "every change fired once");
    assert_eq!(
        *answers.lock().unwrap(),
        vec![Ok(())],
        "the trigger's sync was answered"
    );
}

/// A schema of a `Config` and a `Board` model, both of scope `*`, syncing as given.
fn config_and_board(config: &str, board: &str) -> &'static str {
    let schema = format!(
        r#"{{
        version: '1', format: 'onetable:1.1.0',
        indexes: {{ primary: {{ hash: 'pk', sort: 'sk' }} }},
        models: {{
            Config: {{
                pk: {{ type: 'string', value: 'config#' }}, sk: {{ type: 'string', value: 'config#${{name}}' }},
                name: {{ type: 'string', required: true }}, value: {{ type: 'string' }},
            }},
            Board: {{
                pk: {{ type: 'string', value: 'board#' }}, sk: {{ type: 'string', value: 'board#${{id}}' }},
                id: {{ type: 'string', required: true }}, text: {{ type: 'string' }},
            }},
        }},
        control: {{ Config: {{ sync: '{config}', scope: '*' }}, Board: {{ sync: '{board}', scope: '*' }} }},
    }}"#
    );
    schema.leak()
}

/// Device `d1` of `world` reopened from directory `dir` with `schema` (an upgrade),
/// attached to the cloud, stepped by hand.
fn reopened_with(world: &World, dir: usize, schema: &str) -> ferry::Db {
    let config = ferry::Config {
        clock: world.clock.clock(),
        timer: world.clock.clock(),
        ttl_sweep: None,
        ..ferry::Config::with_schema(crate::support::schema(schema)).context("deviceId", "d1")
    };
    let db = ferry::Db::open(world.dir(dir), config).unwrap();
    db.attach(ferry::MemoryTransport::new(world.cloud.clone()), manual())
        .unwrap();
    db
}

/// `b` (offline) edits board `x`; `a` deletes it a second later and syncs: the cloud
/// keeps the delete.
fn an_offline_edit_then_a_delete(world: &World, a: &ferry::Db, b: &ferry::Db) {
    world.advance(1_000);
    b.update(
        "Board",
        json!({"id": "x", "text": "offline edit"}),
        &WriteOptions::default(),
    )
    .unwrap();
    world.advance(1_000);
    a.remove("Board", json!({"id": "x"}), &WriteOptions::default())
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
}
