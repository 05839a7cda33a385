//! The replication suite that must behave the same whichever way a device reaches the
//! cloud: straight to DynamoDB Local, or through the real relay process over its embedded
//! store. Each test is written once, against a [`Via`], and runs over both.

use std::time::Duration;

use ferry::journal::ChangeOp;
use ferry::types::Value;
use serde_json::json;

use crate::dynamo::{
    Cloud, Faulty, SYNC_TIMEOUT, Via, cloud_change, config_change, key, now_ms, shared_names, text,
};
use ferry::dynamo::Settings;

over_both_transports!(
    two_devices_and_a_cloud_writer_converge,
    a_device_offline_for_a_while_catches_up_deletes_included,
    each_direction_behaves_as_its_model_says,
    lost_answers_cause_no_harm,
);

fn two_devices_and_a_cloud_writer_converge(via: Via) {
    let mut cloud = Cloud::over(via, "converge", Settings::default());
    let (a, _) = cloud.device("a", None);
    let (b, _) = cloud.device("b", None);
    a.create("Shared", json!({"id": "s1", "name": "from a"}))
        .unwrap();
    b.create("Shared", json!({"id": "s2", "name": "from b"}))
        .unwrap();
    a.create("Note", json!({"id": "n1", "text": "a's own"}))
        .unwrap();
    a.create("Private", json!({"id": "p1"})).unwrap();
    cloud.write(config_change("mode", Some("fast")));
    for db in [&a, &b] {
        db.sync(SYNC_TIMEOUT).unwrap();
    }
    a.sync(SYNC_TIMEOUT).unwrap();
    for db in [&a, &b] {
        for (id, name) in [("s1", "from a"), ("s2", "from b")] {
            let item = db.get("Shared", json!({"id": id})).unwrap();
            assert_eq!(text(item, "name").as_deref(), Some(name));
        }
        let config = db.get("Config", json!({"name": "mode"})).unwrap();
        assert_eq!(text(config, "value").as_deref(), Some("fast"));
    }
    assert_eq!(
        b.get("Note", json!({"id": "n1", "deviceId": "a"})).unwrap(),
        None,
        "scope a is a's"
    );
    let note = (cloud.held(&key("note#a", "note#n1"), "a")).expect("a's note is in the cloud");
    assert_eq!(note.item.unwrap()["text"], Value::S("a's own".into()));
    assert_eq!(
        cloud.held(&key("private#", "private#p1"), "*"),
        None,
        "device-only stays home"
    );

    b.remove("Shared", json!({"id": "s1"}), &Default::default())
        .unwrap();
    b.sync(SYNC_TIMEOUT).unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(
        a.get("Shared", json!({"id": "s1"})).unwrap(),
        None,
        "the delete reached a"
    );
    let tombstone = (cloud.held(&key("shared#", "shared#s1"), "*")).expect("a tombstone");
    assert_eq!(tombstone.op, ChangeOp::Delete, "{tombstone:?}");
}

fn a_device_offline_for_a_while_catches_up_deletes_included(via: Via) {
    let mut cloud = Cloud::over(via, "catchup", Settings::default());
    let (a, _) = cloud.device("a", None);
    let (b, b_dir) = cloud.device("b", None);
    for i in 0..20 {
        a.create("Shared", json!({"id": format!("s{i}"), "name": "v1"}))
            .unwrap();
    }
    a.sync(SYNC_TIMEOUT).unwrap();
    b.sync(SYNC_TIMEOUT).unwrap();
    assert!(b.get("Shared", json!({"id": "s7"})).unwrap().is_some());
    drop(b);
    for i in 0..10 {
        a.remove(
            "Shared",
            json!({"id": format!("s{i}")}),
            &Default::default(),
        )
        .unwrap();
    }
    for i in 10..20 {
        a.update(
            "Shared",
            json!({"id": format!("s{i}"), "name": "v2"}),
            &Default::default(),
        )
        .unwrap();
    }
    a.sync(SYNC_TIMEOUT).unwrap();
    let (b, _) = cloud.device("b", Some(b_dir));
    b.sync(SYNC_TIMEOUT).unwrap();
    for i in 0..10 {
        assert_eq!(
            b.get("Shared", json!({"id": format!("s{i}")})).unwrap(),
            None,
            "s{i} deleted"
        );
    }
    for i in 10..20 {
        let item = b.get("Shared", json!({"id": format!("s{i}")})).unwrap();
        assert_eq!(text(item, "name").as_deref(), Some("v2"), "s{i} updated");
    }
}

/// Part of the cloud contract (`contract.rs`), over every backend.
pub(crate) fn a_device_past_the_horizon_resyncs_and_keeps_its_pending_writes(via: Via) {
    let settings = Settings {
        horizon_ms: 8_000,
        window_ms: 2_000,
    };
    let mut cloud = Cloud::over(via, "horizon", settings);
    let (a, _) = cloud.device("a", None);
    let (b, b_dir) = cloud.device("b", None);
    a.create("Shared", json!({"id": "old", "name": "v1"}))
        .unwrap();
    a.create("Shared", json!({"id": "kept", "name": "v1"}))
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    b.sync(SYNC_TIMEOUT).unwrap();
    drop(b);
    // Offline past the horizon: a deletes and writes; b writes on its own.
    a.remove("Shared", json!({"id": "old"}), &Default::default())
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    // Past the horizon the tombstone is gone (DynamoDB Local runs no TTL): only a resync,
    // which finds "old" absent, can tell b.
    cloud.purge(&key("shared#", "shared#old"));
    let offline = cloud.offline("b", b_dir);
    offline
        .create("Shared", json!({"id": "from-b", "name": "offline"}))
        .unwrap();
    drop(offline);
    std::thread::sleep(Duration::from_millis(settings.horizon_ms + 3_000));
    // A relay purges the tombstone itself within a second or two of its horizon, once a
    // later write is a catch-up window past it (it keeps its newest tombstones: docs/relay.md).
    a.create("Shared", json!({"id": "new", "name": "v1"}))
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    let old = key("shared#", "shared#old");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cloud.held(&old, "*").is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(cloud.held(&old, "*"), None, "the tombstone is purged");
    let (b, _) = cloud.device("b", Some(b_dir));
    b.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(
        b.get("Shared", json!({"id": "old"})).unwrap(),
        None,
        "the resync found the purged item absent"
    );
    assert!(b.get("Shared", json!({"id": "new"})).unwrap().is_some());
    assert!(b.get("Shared", json!({"id": "kept"})).unwrap().is_some());
    assert!(
        b.get("Shared", json!({"id": "from-b"})).unwrap().is_some(),
        "the pending write stays"
    );
    a.sync(SYNC_TIMEOUT).unwrap();
    let item = a.get("Shared", json!({"id": "from-b"})).unwrap();
    assert_eq!(
        text(item, "name").as_deref(),
        Some("offline"),
        "and it reached the cloud"
    );
}

fn each_direction_behaves_as_its_model_says(via: Via) {
    let mut cloud = Cloud::over(via, "directions", Settings::default());
    let (device, _) = cloud.device("d", None);
    // up: the device is authoritative, even over a newer cloud version.
    let future = now_ms() + 60_000;
    cloud.write(cloud_change(
        "Fault",
        "fault#d",
        "fault#f1",
        Some(json!({"id": "f1", "deviceId": "d", "code": 9})),
        future,
    ));
    device
        .create("Fault", json!({"id": "f1", "code": 1}))
        .unwrap();
    device.sync(SYNC_TIMEOUT).unwrap();
    let fault = cloud.held(&key("fault#d", "fault#f1"), "d").unwrap();
    let code = &fault.item.as_ref().unwrap()["code"];
    assert_eq!(
        code,
        &Value::N(1i64.into()),
        "the device's fault won: {fault:?}"
    );
    // up: cloud writes of the model never come down.
    cloud.write(cloud_change(
        "Fault",
        "fault#d",
        "fault#f2",
        Some(json!({"id": "f2", "deviceId": "d", "code": 2})),
        now_ms(),
    ));
    // down: the cloud owns it; device writes are refused.
    cloud.write(config_change("mode", Some("cloud")));
    let refused = device
        .create("Config", json!({"name": "x", "value": "y"}))
        .unwrap_err();
    assert_eq!(refused.code(), "ControlError", "{refused}");
    // none: stays where it was written.
    device
        .create("Local", json!({"id": "l1", "text": "device"}))
        .unwrap();
    cloud.write(cloud_change(
        "Local",
        "local#",
        "local#l2",
        Some(json!({"id": "l2", "text": "cloud"})),
        now_ms(),
    ));
    device.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(
        device.get("Fault", json!({"id": "f2"})).unwrap(),
        None,
        "up never comes down"
    );
    let config = device.get("Config", json!({"name": "mode"})).unwrap();
    assert_eq!(
        text(config, "value").as_deref(),
        Some("cloud"),
        "down comes down"
    );
    assert_eq!(
        cloud.held(&key("local#", "local#l1"), "*"),
        None,
        "none stays on the device"
    );
    assert_eq!(
        device.get("Local", json!({"id": "l2"})).unwrap(),
        None,
        "none stays in the cloud"
    );
}

fn lost_answers_cause_no_harm(via: Via) {
    let mut cloud = Cloud::over(via, "lost", Settings::default());
    let link = cloud.link_maker("a");
    let (a, _) = cloud.device_via("a", None, |replica| Faulty::new(link(replica), 2, 0));
    for i in 0..10 {
        a.create("Shared", json!({"id": format!("s{i}"), "name": "once"}))
            .unwrap();
    }
    a.sync(SYNC_TIMEOUT).unwrap();
    let status = a.status();
    assert_eq!(
        (status.pending_changes, status.conflicts),
        (0, 0),
        "{status:?}"
    );
    for i in 0..10 {
        let held = cloud
            .held(&key("shared#", &format!("shared#s{i}")), "*")
            .unwrap();
        assert_eq!(
            held.version.replica.as_str(),
            status.replica,
            "the cloud holds a's one version: {held:?}"
        );
    }
    let (b, _) = cloud.device("b", None);
    b.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(shared_names(&b).len(), 10);
    assert_eq!(b.status().conflicts, 0);
}
