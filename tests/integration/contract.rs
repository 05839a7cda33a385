//! The cloud contract: the same cases over every backend a device can meet. The reference
//! cloud and the relay's embedded store in process, DynamoDB Local straight, and the real
//! relay process over its embedded store and over DynamoDB Local. A backend that answers
//! otherwise than the reference cloud has a bug. A new backend is one line in the macro
//! call below (and a [`Via`]).
//!
//! The cases: every answer of the write rule, scope ownership and the read it must not
//! leak, each model's direction by role, versions bounded by the cloud's time, the feed's
//! order and completeness, tombstones and the horizon (a resync past it), and the
//! conflict log in both sync orders.

use std::collections::BTreeSet;

use ferry::dynamo::Settings;
use ferry::journal::{Change, ChangeOp};
use ferry::replication::{Grant, PullFrom, PushOutcome, PushResults};
use ferry::types::{Hlc, Item, Key, ReplicaId, Value, Version};
use ferry::{Db, Transport};
use serde_json::json;

use crate::dynamo::{Cloud, Link, SYNC_TIMEOUT, Via, key, now_ms, text};
use crate::transports::a_device_past_the_horizon_resyncs_and_keeps_its_pending_writes;

/// Runs each case (a function taking a [`Via`]) over every backend, as
/// `contract::BACKEND::CASE`.
macro_rules! over_every_backend {
    (backends: [$($backend:ident => $via:expr),* $(,)?], cases: $cases:tt) => {
        $( over_every_backend!(@one $backend => $via, $cases); )*
    };
    (@one $backend:ident => $via:expr, [$($case:ident),* $(,)?]) => {
        mod $backend {
            use crate::dynamo::Via;
            $( #[test] fn $case() { super::$case($via) } )*
        }
    };
}

over_every_backend!(
    backends: [
        memory => Via::Memory,
        embedded => Via::Embedded,
        dynamodb => Via::Dynamo,
        relay_embedded => Via::Relay,
        relay_dynamodb => Via::RelayDynamo,
    ],
    cases: [
        every_answer_of_the_write_rule,
        a_device_neither_takes_over_nor_reads_another_scopes_row,
        each_role_writes_only_the_models_its_direction_allows,
        a_version_far_ahead_is_refused_with_the_cloud_time_and_lands_restamped,
        the_feed_is_in_seq_order_one_entry_per_key_and_complete,
        a_conflict_is_logged_once_on_the_loser_in_either_sync_order,
        a_device_past_the_horizon_resyncs_and_keeps_its_pending_writes,
        a_device_whose_clock_runs_ahead_lands_its_writes_at_the_clouds_time,
        a_key_never_leaves_its_scope_while_the_cloud_holds_it,
    ]
);

/// A device of `name` granted its own scope and `*`.
fn device(name: &str) -> Grant {
    Grant::device(name, Some(scopes(&[name, "*"])))
}

/// A cloud service granted every scope the cases use.
fn service() -> Grant {
    Grant::service("config-service", Some(scopes(&["*", "devA", "devB"])))
}

fn scopes(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A version at `ms` of `replica`.
fn version(ms: u64, replica: &str) -> Version {
    Version {
        hlc: Hlc::new(ms, 0),
        replica: ReplicaId::parse(replica).unwrap(),
    }
}

/// A change of `model` at (`pk`, `sk`) in `scope`, with `fields` (`None`: a delete),
/// stamped `ms` by `replica`.
fn change(
    model: &str,
    (pk, sk): (&str, &str),
    scope: &str,
    fields: Option<serde_json::Value>,
    (ms, replica): (u64, &str),
) -> Change {
    let key = key(pk, sk);
    let item = fields.map(|fields| {
        let mut item = Item::from([
            ("pk".to_string(), key.hash.clone()),
            ("sk".to_string(), key.sort.clone().unwrap()),
            ("_type".to_string(), Value::S(model.into())),
        ]);
        for (name, value) in fields.as_object().unwrap() {
            item.insert(name.clone(), Value::S(value.as_str().unwrap().into()));
        }
        item
    });
    Change {
        model: model.into(),
        key,
        op: match item {
            Some(_) => ChangeOp::Put,
            None => ChangeOp::Delete,
        },
        version: version(ms, replica),
        scope: scope.into(),
        item,
        base: None,
    }
}

fn config(name: &str, value: Option<&str>, ms: u64) -> Change {
    let fields = value.map(|value| json!({"name": name, "value": value}));
    let sk = format!("config#{name}");
    change(
        "Config",
        ("config#", &sk),
        "*",
        fields,
        (ms, "config-service"),
    )
}

fn gadget(name: &str, owner: &str, ms: u64) -> Change {
    let fields = json!({"name": name, "deviceId": owner, "color": owner});
    let pk = format!("gadget#{name}");
    change("Gadget", (&pk, "gadget#"), owner, Some(fields), (ms, owner))
}

/// Pushes `changes` on `link`; the outcomes in order.
fn push(cloud: &Cloud, link: &Link, changes: Vec<Change>) -> Vec<PushOutcome> {
    let results: PushResults = cloud.rt.block_on(link.push(changes)).unwrap();
    results.into_iter().map(|(_, _, outcome)| outcome).collect()
}

fn push_one(cloud: &Cloud, link: &Link, change: Change) -> PushOutcome {
    push(cloud, link, vec![change]).remove(0)
}

fn rejected(outcome: &PushOutcome) -> &str {
    match outcome {
        PushOutcome::Rejected { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Every change of `scope` as a snapshot reads it, in pages of `limit`, with their `_seq`.
fn snapshot(cloud: &Cloud, link: &Link, scope: &str, limit: usize) -> Vec<(Hlc, Change)> {
    let mut after = Hlc::ZERO;
    let mut all = Vec::new();
    loop {
        let page = cloud
            .rt
            .block_on(link.pull(scope, PullFrom::Snapshot(after), limit))
            .unwrap();
        all.extend(page.changes.iter().cloned());
        match (page.more, page.changes.last()) {
            (true, Some((seq, _))) => after = *seq,
            _ => return all,
        }
    }
}

fn held(cloud: &Cloud, link: &Link, scope: &str, key: &Key) -> Option<Change> {
    let all = snapshot(cloud, link, scope, 100);
    all.into_iter().map(|(_, c)| c).find(|c| c.key == *key)
}

/// A key of a model devices download keeps its scope while the cloud holds its row: moved
/// in place (or over its tombstone), the devices of its old scope would never hear of its
/// end, since a key's changes are one row in one scope's feed.
fn a_key_never_leaves_its_scope_while_the_cloud_holds_it(via: Via) {
    let cloud = Cloud::over(via, "moves", Settings::default());
    let writer = cloud.link(service(), "config-service");
    let t = now_ms() - 60_000;
    let owned = |owner: &str, fields: bool, ms: u64| {
        let fields = fields.then(|| json!({"name": "g1", "deviceId": owner}));
        let version = (ms, "config-service");
        change("Gadget", ("gadget#g1", "gadget#"), owner, fields, version)
    };
    let moved = |outcome: PushOutcome| {
        let reason = rejected(&outcome).to_string();
        assert!(
            reason.contains("belongs to scope 'devA' and may not move to 'devB'"),
            "{reason}"
        );
    };
    assert_eq!(
        push_one(&cloud, &writer, owned("devA", true, t)),
        PushOutcome::Applied
    );
    moved(push_one(&cloud, &writer, owned("devB", true, t + 10)));
    let key = key("gadget#g1", "gadget#");
    let there = held(&cloud, &writer, "devA", &key).unwrap();
    assert_eq!(there.version, version(t, "config-service"), "nothing moved");
    // Its tombstone holds it too: the devices of devA learn of its end from it.
    assert_eq!(
        push_one(&cloud, &writer, owned("devA", false, t + 20)),
        PushOutcome::Applied
    );
    moved(push_one(&cloud, &writer, owned("devB", true, t + 30)));
    let end = held(&cloud, &writer, "devA", &key).unwrap();
    assert_eq!(
        (end.op, end.version),
        (ChangeOp::Delete, version(t + 20, "config-service"))
    );
    assert_eq!(held(&cloud, &writer, "devB", &key), None);
}

fn every_answer_of_the_write_rule(via: Via) {
    let cloud = Cloud::over(via, "rule", Settings::default());
    let writer = cloud.link(service(), "config-service");
    let t = now_ms() - 60_000;
    let first = config("mode", Some("fast"), t);
    let key = first.key.clone();
    assert_eq!(
        push_one(&cloud, &writer, first.clone()),
        PushOutcome::Applied,
        "no row: lands"
    );
    assert_eq!(
        push_one(&cloud, &writer, first.clone()),
        PushOutcome::Applied,
        "the same version again: a retry whose answer was lost"
    );
    let older = config("mode", Some("slow"), t - 1_000);
    match push_one(&cloud, &writer, older) {
        PushOutcome::Superseded { cloud: held } => {
            assert_eq!(held.version, first.version, "the held change comes back");
            assert_eq!(held.item.unwrap()["value"], Value::S("fast".into()));
        }
        other => panic!("an older version is superseded, not {other:?}"),
    }
    let empty = Change {
        item: None,
        ..config("mode", Some("x"), t + 10)
    };
    let reason = push_one(&cloud, &writer, empty).clone();
    assert!(rejected(&reason).contains("no item"), "{reason:?}");
    // Tombstones: a delete beats older puts and loses to newer ones.
    let delete = config("mode", None, t + 1_000);
    assert_eq!(
        push_one(&cloud, &writer, delete.clone()),
        PushOutcome::Applied
    );
    match push_one(&cloud, &writer, config("mode", Some("late"), t + 500)) {
        PushOutcome::Superseded { cloud: held } => assert_eq!(held.op, ChangeOp::Delete),
        other => panic!("an older put over a tombstone is superseded by it, not {other:?}"),
    }
    let back = config("mode", Some("back"), t + 2_000);
    assert_eq!(
        push_one(&cloud, &writer, back.clone()),
        PushOutcome::Applied
    );
    let now = held(&cloud, &writer, "*", &key).expect("the row");
    assert_eq!((now.op, now.version), (ChangeOp::Put, back.version));
}

fn a_device_neither_takes_over_nor_reads_another_scopes_row(via: Via) {
    let cloud = Cloud::over(via, "takeover", Settings::default());
    let (a, b) = (
        cloud.link(device("devA"), "devA"),
        cloud.link(device("devB"), "devB"),
    );
    let t = now_ms() - 60_000;
    let theirs = gadget("g", "devB", t);
    assert_eq!(push_one(&cloud, &b, theirs.clone()), PushOutcome::Applied);
    // devA's own gadget of the same name: a newer write that would move the row.
    let takeover = push_one(&cloud, &a, gadget("g", "devA", t + 1_000));
    let reason = rejected(&takeover);
    assert!(
        reason.contains("devB") && reason.contains("gadget#g"),
        "{reason}"
    );
    // A stale write of the same key would be answered with the row: refused instead.
    let stale = push_one(&cloud, &a, gadget("g", "devA", t - 1_000));
    assert!(
        !matches!(stale, PushOutcome::Superseded { .. }),
        "a stale write must not read another scope's row: {stale:?}"
    );
    rejected(&stale);
    // A change claiming a scope devA is not granted.
    let foreign = Change {
        scope: "devB".into(),
        ..gadget("h", "devA", t)
    };
    rejected(&push_one(&cloud, &a, foreign));
    // devB's row is intact, in devB's scope, and devA cannot read that scope.
    let row = held(&cloud, &b, "devB", &theirs.key).expect("devB still has g");
    assert_eq!(row.version, theirs.version);
    assert!(
        held(&cloud, &a, "devA", &theirs.key).is_none(),
        "nothing moved to devA"
    );
    let read = cloud
        .rt
        .block_on(a.pull("devB", PullFrom::Snapshot(Hlc::ZERO), 10));
    assert!(read.is_err(), "devA read devB's scope: {read:?}");
    // Nor may a service of both scopes move it: devB's devices would never hear of it
    // again (a_key_never_leaves_its_scope_while_the_cloud_holds_it).
    let service = cloud.link(service(), "config-service");
    let moved = Change {
        version: version(t + 2_000, "config-service"),
        ..gadget("g", "devA", t + 2_000)
    };
    let reason = push_one(&cloud, &service, moved);
    assert!(
        rejected(&reason).contains("may not move to 'devA'"),
        "{reason:?}"
    );
}

fn each_role_writes_only_the_models_its_direction_allows(via: Via) {
    let cloud = Cloud::over(via, "direction", Settings::default());
    let dev = cloud.link(device("devA"), "devA");
    let service = cloud.link(service(), "config-service");
    let t = now_ms() - 60_000;
    // A device whose schema says otherwise still may not write fleet configuration.
    let reason = push_one(&cloud, &dev, config("rate", Some("9"), t)).clone();
    assert!(rejected(&reason).contains("Config"), "{reason:?}");
    assert_eq!(
        push_one(&cloud, &service, config("rate", Some("1"), t)),
        PushOutcome::Applied
    );
    let fault = change(
        "Fault",
        ("fault#devA", "fault#f1"),
        "devA",
        Some(json!({"deviceId": "devA", "id": "f1"})),
        (t, "devA"),
    );
    assert_eq!(
        push_one(&cloud, &dev, fault.clone()),
        PushOutcome::Applied,
        "up"
    );
    // A service writes what the cloud keeps; devices decide what comes down.
    let as_service = Change {
        version: version(t + 1, "config-service"),
        ..fault
    };
    assert_eq!(push_one(&cloud, &service, as_service), PushOutcome::Applied);
    let private = change(
        "Private",
        ("private#", "private#p1"),
        "*",
        Some(json!({"id": "p1"})),
        (t, "config-service"),
    );
    let reason = push_one(&cloud, &service, private).clone();
    assert!(
        rejected(&reason).contains("Private"),
        "device-only: {reason:?}"
    );
    let unknown = Change {
        model: "Nothing".into(),
        ..gadget("u", "devA", t)
    };
    let reason = push_one(&cloud, &dev, unknown).clone();
    assert!(rejected(&reason).contains("Nothing"), "{reason:?}");
    let local = change(
        "Local",
        ("local#", "local#l1"),
        "*",
        Some(json!({"id": "l1"})),
        (t, "devA"),
    );
    rejected(&push_one(&cloud, &dev, local));
    // A delete that names a model devices write, at the key of fleet configuration.
    let disguised = Change {
        model: "Shared".into(),
        op: ChangeOp::Delete,
        item: None,
        version: version(t + 10, "devA"),
        ..config("rate", None, t)
    };
    let reason = push_one(&cloud, &dev, disguised).clone();
    assert!(rejected(&reason).contains("Config"), "{reason:?}");
    let held = held(&cloud, &dev, "*", &config("rate", None, t).key).expect("the config");
    assert_eq!(
        held.item.unwrap()["value"],
        Value::S("1".into()),
        "the device's write did not land"
    );
}

fn a_version_far_ahead_is_refused_with_the_cloud_time_and_lands_restamped(via: Via) {
    let cloud = Cloud::over(via, "ahead", Settings::default());
    let dev = cloud.link(device("devA"), "devA");
    let year_ms = 365 * 24 * 3600 * 1000;
    let before = now_ms();
    let far = gadget("clock", "devA", before + year_ms);
    let server_time_ms = match push_one(&cloud, &dev, far.clone()) {
        PushOutcome::Ahead { server_time_ms } => server_time_ms,
        other => panic!("a version a year ahead is refused, not {other:?}"),
    };
    assert!(
        server_time_ms.abs_diff(before) < 60_000,
        "the refusal carries the cloud's time: {server_time_ms} vs {before}"
    );
    let bogus = Change {
        version: Version {
            hlc: Hlc::from_u64(u64::MAX),
            ..far.version.clone()
        },
        ..far.clone()
    };
    assert!(matches!(
        push_one(&cloud, &dev, bogus),
        PushOutcome::Ahead { .. }
    ));
    assert!(
        held(&cloud, &dev, "devA", &far.key).is_none(),
        "nothing landed"
    );
    let restamped = gadget("clock", "devA", server_time_ms);
    assert_eq!(
        push_one(&cloud, &dev, restamped.clone()),
        PushOutcome::Applied
    );
    let row = held(&cloud, &dev, "devA", &far.key).expect("the re-stamped change");
    assert_eq!(row.version, restamped.version);
}

fn the_feed_is_in_seq_order_one_entry_per_key_and_complete(via: Via) {
    let cloud = Cloud::over(via, "feed", Settings::default());
    let writer = cloud.link(service(), "config-service");
    let t = now_ms() - 60_000;
    let names: Vec<String> = (0..12).map(|n| format!("k{n:02}")).collect();
    let batch = (names.iter().enumerate())
        .map(|(n, name)| config(name, Some("v1"), t + n as u64))
        .collect();
    assert!(
        push(&cloud, &writer, batch)
            .iter()
            .all(|o| *o == PushOutcome::Applied)
    );
    // k03 again: it moves to the end of the feed.
    assert_eq!(
        push_one(&cloud, &writer, config("k03", Some("v2"), t + 100)),
        PushOutcome::Applied
    );
    let feed = snapshot(&cloud, &writer, "*", 5);
    let keys: Vec<String> = (feed.iter())
        .map(|(_, c)| c.key.sort.clone().unwrap().as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), names.len(), "each key once: {keys:?}");
    let distinct: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), names.len(), "{keys:?}");
    assert_eq!(
        keys.last().map(String::as_str),
        Some("config#k03"),
        "{keys:?}"
    );
    assert!(feed.windows(2).all(|w| w[0].0 <= w[1].0), "in _seq order");
    let latest = &feed.last().unwrap().1;
    assert_eq!(
        latest.item.as_ref().unwrap()["value"],
        Value::S("v2".into())
    );
    // From the last position, only what comes after.
    let cursor = feed.last().unwrap().0;
    push(
        &cloud,
        &writer,
        vec![
            config("k20", Some("v1"), t + 200),
            config("k21", Some("v1"), t + 201),
        ],
    );
    let page = cloud
        .rt
        .block_on(writer.pull("*", PullFrom::Since(cursor), 100))
        .unwrap();
    let after: Vec<&Key> = page.changes.iter().map(|(_, c)| &c.key).collect();
    assert_eq!(
        after,
        [&config("k20", None, 0).key, &config("k21", None, 0).key]
    );
}

/// A device whose clock runs two hours ahead writes and syncs, from the user's side: the
/// cloud refuses the version as ahead, the device re-stamps it at the cloud's time, and
/// the write lands with nothing left pending or quarantined.
fn a_device_whose_clock_runs_ahead_lands_its_writes_at_the_clouds_time(via: Via) {
    const TWO_HOURS_MS: i64 = 2 * 3_600_000;
    let mut cloud = Cloud::over(via, "clock-ahead", Settings::default());
    cloud.clock = Some(std::sync::Arc::new(|| now_ms() as i64 + TWO_HOURS_MS));
    let (a, _) = cloud.device("a", None);
    a.create("Shared", json!({"id": "fast", "name": "from ahead"}))
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    let status = a.status();
    assert_eq!(
        (status.pending_changes, status.quarantined),
        (0, 0),
        "{status:?}"
    );
    let held = cloud
        .held(&key("shared#", "shared#fast"), "*")
        .expect("it landed");
    let ahead_ms = held.version.hlc.physical_ms().saturating_sub(now_ms());
    assert!(ahead_ms <= ferry::replication::AHEAD_MAX_MS, "{held:?}");
    assert_eq!(held.item.unwrap()["name"], Value::S("from ahead".into()));
}

/// Two devices change one shared item offline; `first` syncs, then `second`, then `first`
/// again. The loser is the earlier writer whichever syncs first.
fn offline_edits(a: &Db, b: &Db, round: &str, a_first: bool) {
    a.update(
        "Shared",
        json!({"id": "p", "name": format!("{round} by a")}),
        &Default::default(),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    b.update(
        "Shared",
        json!({"id": "p", "name": format!("{round} by b")}),
        &Default::default(),
    )
    .unwrap();
    let (first, second) = if a_first { (a, b) } else { (b, a) };
    for db in [first, second, first, second] {
        db.sync(SYNC_TIMEOUT).unwrap();
    }
}

fn a_conflict_is_logged_once_on_the_loser_in_either_sync_order(via: Via) {
    let mut cloud = Cloud::over(via, "conflicts", Settings::default());
    let (a, _) = cloud.device("a", None);
    let (b, _) = cloud.device("b", None);
    a.create("Shared", json!({"id": "p", "name": "start"}))
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    b.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(
        text(b.get("Shared", json!({"id": "p"})).unwrap(), "name").as_deref(),
        Some("start")
    );
    // The earlier writer (a) syncs first: b's later write replaces it in the cloud.
    offline_edits(&a, &b, "one", true);
    // The later writer (b) syncs first: a's earlier write is superseded.
    offline_edits(&a, &b, "two", false);
    for db in [&a, &b] {
        let name = text(db.get("Shared", json!({"id": "p"})).unwrap(), "name");
        assert_eq!(name.as_deref(), Some("two by b"), "b's later write wins");
    }
    let logged = a.conflicts(10).unwrap();
    assert_eq!(
        logged.len(),
        2,
        "a lost twice, logged once each: {logged:#?}"
    );
    assert!(logged.iter().all(|c| c.model == "Shared"), "{logged:#?}");
    let losers: Vec<String> = (logged.iter())
        .map(|c| {
            (c.loser_item.as_ref())
                .map(|item| item["name"].to_string())
                .unwrap_or_default()
        })
        .collect();
    assert!(
        losers.iter().any(|l| l.contains("one by a"))
            && losers.iter().any(|l| l.contains("two by a")),
        "each record holds the losing item: {losers:?}"
    );
    assert!(
        b.conflicts(10).unwrap().is_empty(),
        "the winner logs nothing: {:#?}",
        b.conflicts(10).unwrap()
    );
}

/// The takeover of issue-sized consequence, from the user's side through the real relay
/// process over either store: devB's gadget stays devB's, devA hears of the refusal in
/// `sync`, `status` and `quarantine`, and a fresh database of devB's scope still gets it.
fn a_takeover_through_the_relay_is_refused_and_reported_to_the_device(via: Via) {
    let mut cloud = Cloud::over(via, "takeover-db", Settings::default());
    let (b, _) = cloud.device("devB", None);
    b.create("Gadget", json!({"name": "g", "color": "blue"}))
        .unwrap();
    b.sync(SYNC_TIMEOUT).unwrap();
    let (a, _) = cloud.device("devA", None);
    a.create("Gadget", json!({"name": "g", "color": "red"}))
        .unwrap();
    let refused = a.sync(SYNC_TIMEOUT).unwrap_err();
    assert_eq!(refused.code(), "SyncRefused", "{refused}");
    assert!(
        refused.to_string().contains("gadget#g"),
        "names the key: {refused}"
    );
    let status = a.status();
    assert_eq!(
        (status.pending_changes, status.quarantined),
        (0, 1),
        "{status:?}"
    );
    let quarantined = a.quarantine(10).unwrap();
    assert!(
        quarantined[0].reason.contains("devB"),
        "{}",
        quarantined[0].reason
    );
    assert_eq!(
        text(a.get("Gadget", json!({"name": "g"})).unwrap(), "color").as_deref(),
        Some("red"),
        "kept on devA"
    );
    let (fresh, _) = cloud.device("devB", None);
    fresh.sync(SYNC_TIMEOUT).unwrap();
    let theirs = fresh.get("Gadget", json!({"name": "g"})).unwrap();
    assert_eq!(
        text(theirs, "color").as_deref(),
        Some("blue"),
        "devB's row intact"
    );
}

/// A device's write of a `down` model (its schema copy says `both`) is refused by the
/// relay over either store, while a service's write reaches every device of the scope.
fn only_a_service_writes_fleet_configuration_through_the_relay(via: Via) {
    let mut cloud = Cloud::over(via, "fleet-config", Settings::default());
    let tampered =
        crate::dynamo::SCHEMA.replace("Config: { sync: 'down'", "Config: { sync: 'both'");
    assert_ne!(tampered, crate::dynamo::SCHEMA);
    let (rogue, _) = cloud.device_with_schema("rogue", &tampered);
    rogue
        .create("Config", json!({"name": "rate", "value": "evil"}))
        .unwrap();
    let refused = rogue.sync(SYNC_TIMEOUT).unwrap_err().to_string();
    assert!(
        refused.contains("config#rate") && refused.contains("Config"),
        "{refused}"
    );
    let (a, _) = cloud.device("a", None);
    let (b, _) = cloud.device("b", None);
    cloud.write(crate::dynamo::config_change("rate", Some("10")));
    for db in [&a, &b] {
        db.sync(SYNC_TIMEOUT).unwrap();
        let config = db.get("Config", json!({"name": "rate"})).unwrap();
        assert_eq!(text(config, "value").as_deref(), Some("10"));
    }
}

mod through_the_relay {
    use crate::dynamo::Via;

    #[test]
    fn a_takeover_is_refused_and_reported_over_the_embedded_store() {
        super::a_takeover_through_the_relay_is_refused_and_reported_to_the_device(Via::Relay)
    }

    #[test]
    fn a_takeover_is_refused_and_reported_over_dynamodb() {
        super::a_takeover_through_the_relay_is_refused_and_reported_to_the_device(Via::RelayDynamo)
    }

    #[test]
    fn only_a_service_writes_fleet_configuration_over_the_embedded_store() {
        super::only_a_service_writes_fleet_configuration_through_the_relay(Via::Relay)
    }

    #[test]
    fn only_a_service_writes_fleet_configuration_over_dynamodb() {
        super::only_a_service_writes_fleet_configuration_through_the_relay(Via::RelayDynamo)
    }
}

/// `ferry cloud ... --relay URL --token T` from the user's side, over the relay process
/// on either store: a service token writes fleet configuration that a device's `sync`
/// brings down; a device token may not; `get`, `update`, `find` and `remove` work as on a
/// table.
fn cloud_commands_write_through_the_relay_with_a_service_token(via: Via) {
    let mut cloud = Cloud::over(via, "cloud-cli", Settings::default());
    let relay = cloud.relay.as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json5");
    std::fs::write(&schema, crate::dynamo::SCHEMA).unwrap();
    let url = relay.url();
    let service = relay.token_for(&Grant::service("ops", Some(scopes(&["*"]))));
    let device = relay.token("pump-7", &[]);
    let run = |token: &str, args: &[&str]| {
        let schema = schema.display().to_string();
        let mut all = vec!["--schema", schema.as_str(), "cloud"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--relay", url.as_str(), "--token", token]);
        crate::support::ferry(&all)
    };
    let (code, out, err) = run(
        &service,
        &["create", "Config", r#"{"name":"mode","value":"eco"}"#],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["value"],
        json!("eco")
    );
    let (code, _, err) = run(
        &service,
        &["create", "Config", r#"{"name":"mode","value":"x"}"#],
    );
    assert_eq!(code, 1, "create of an existing item: {err}");
    assert!(err.contains("ConditionalCheckFailed"), "{err}");
    let (code, _, err) = run(
        &device,
        &["update", "Config", r#"{"name":"mode","value":"evil"}"#],
    );
    assert_eq!(code, 1, "a device token may not write configuration: {err}");
    assert!(
        err.contains("Config") && err.contains("devices write only"),
        "{err}"
    );
    let (code, out, err) = run(
        &service,
        &["update", "Config", r#"{"name":"mode","value":"turbo"}"#],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (a, _) = cloud.device("pump-7", None);
    a.sync(SYNC_TIMEOUT).unwrap();
    let config = a.get("Config", json!({"name": "mode"})).unwrap();
    assert_eq!(
        text(config, "value").as_deref(),
        Some("turbo"),
        "reached the device"
    );
    let (code, out, _) = run(&service, &["get", "Config", r#"{"name":"mode"}"#]);
    assert_eq!(
        (
            code,
            serde_json::from_str::<serde_json::Value>(&out).unwrap()["value"].clone()
        ),
        (0, json!("turbo"))
    );
    let (code, out, err) = run(&service, &["find", "Config", "{}"]);
    assert_eq!(code, 0, "{err}");
    let found: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1), "{found}");
    let (code, out, _) = run(&service, &["remove", "Config", r#"{"name":"mode"}"#]);
    assert_eq!((code, out.trim()), (0, r#"{"removed":1}"#));
    a.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(
        a.get("Config", json!({"name": "mode"})).unwrap(),
        None,
        "removed on the device"
    );
}

mod cloud_commands_through_the_relay {
    use crate::dynamo::Via;

    #[test]
    fn over_the_embedded_store() {
        super::cloud_commands_write_through_the_relay_with_a_service_token(Via::Relay)
    }

    #[test]
    fn over_dynamodb() {
        super::cloud_commands_write_through_the_relay_with_a_service_token(Via::RelayDynamo)
    }
}

/// DynamoDB only (the relay's store is a true sequencer): an attempt the writer abandoned
/// after W/2 that lands later carries a `_seq` behind readers' cursors. When the change
/// is pushed again (its answer was lost), the writer finds it already there with that old
/// stamp and gives it a fresh one, so readers see it.
#[test]
fn a_late_landing_of_an_abandoned_attempt_reaches_readers_once_pushed_again() {
    let settings = Settings {
        horizon_ms: 600_000,
        window_ms: 3_000,
    };
    let cloud = Cloud::new("late-seq", settings);
    let make = cloud.transport_maker();
    // The abandoned attempt: stamped a minute before it landed.
    let late = make("cfg").with_grant(service());
    late.clock().set_skew_ms(-60_000);
    let writer = make("cfg").with_grant(service());
    let reader = make("reader").with_grant(service());
    for link in [&late, &writer, &reader] {
        cloud.rt.block_on(link.connect()).unwrap();
    }
    let pull = |from| cloud.rt.block_on(reader.pull("*", from, 100)).unwrap();
    let cursor = pull(PullFrom::Snapshot(Hlc::ZERO)).safe;
    let change = config("late", Some("landed late"), now_ms());
    let seen = || (pull(PullFrom::Since(cursor)).changes.iter()).any(|(_, c)| c.key == change.key);
    let outcome = |link: &ferry::dynamo::DynamoTransport| {
        let results = cloud.rt.block_on(link.push(vec![change.clone()])).unwrap();
        results.into_iter().next().unwrap().2
    };
    assert_eq!(outcome(&late), PushOutcome::Applied);
    assert!(!seen(), "its `_seq` lies behind the reader's cursor");
    assert_eq!(outcome(&writer), PushOutcome::Applied, "already there");
    assert!(seen(), "pushed again, it has a fresh `_seq`");
}
