//! Replication through the reference cloud: the behaviours Ioto gets wrong, as named
//! regressions, and two devices converging.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::Attach;
use ferry::journal::{Change, ChangeOp};
use ferry::replication::{PullFrom, PullPage, PushResults, Session, TransportError};
use ferry::types::{Hlc, Item, Key, ReplicaId, Value, Version};
use ferry::{
    Config, Db, FindOptions, MemoryCloud, MemoryTransport, Origin, SyncOptions, WriteOptions,
};
use serde_json::{Value as Json, json};

use crate::support::{ManualClock, schema};

const SCHEMA: &str = r#"{
    version: '1', format: 'onetable:1.1.0',
    indexes: { primary: { hash: 'pk', sort: 'sk' } },
    params: { timestamps: true },
    models: {
        Note: {
            pk: { type: 'string', value: 'note#${deviceId}' }, sk: { type: 'string', value: 'note#${id}' },
            deviceId: { type: 'string', required: true }, id: { type: 'string', required: true },
            text: { type: 'string' }, secret: { type: 'string', sync: 'none' },
        },
        Fault: {
            pk: { type: 'string', value: 'fault#${deviceId}' }, sk: { type: 'string', value: 'fault#${id}' },
            deviceId: { type: 'string', required: true }, id: { type: 'string', required: true },
            code: { type: 'number' },
        },
        Config: {
            pk: { type: 'string', value: 'config#' }, sk: { type: 'string', value: 'config#${name}' },
            name: { type: 'string', required: true }, value: { type: 'string' },
        },
        Scratch: {
            pk: { type: 'string', value: 'scratch#' }, sk: { type: 'string', value: 'scratch#${id}' },
            id: { type: 'string', required: true },
        },
        Private: {
            pk: { type: 'string', value: 'private#' }, sk: { type: 'string', value: 'private#${id}' },
            id: { type: 'string', required: true },
        },
    },
    control: {
        Note: { sync: 'both' },
        Fault: { sync: 'up' },
        Config: { sync: 'down', scope: '*' },
        Private: { enable: 'device' },
    },
}"#;

const START_MS: i64 = 1_800_000_000_000;
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// One cloud and the devices attached to it, all on one schema.
pub struct World {
    pub cloud: Arc<Mutex<MemoryCloud>>,
    pub clock: ManualClock,
    dirs: Vec<tempfile::TempDir>,
    schema: &'static str,
}

impl World {
    /// A world on this file's schema.
    pub fn new() -> World {
        World::with_schema(SCHEMA)
    }

    /// A world whose devices open with the schema `text`.
    pub fn with_schema(text: &'static str) -> World {
        let mut cloud = MemoryCloud::default();
        cloud.set_time_ms(START_MS as u64);
        World {
            cloud: Arc::new(Mutex::new(cloud)),
            clock: ManualClock::at(START_MS),
            dirs: Vec::new(),
            schema: text,
        }
    }

    /// A device database (new, or reopened from `dir`) attached to the cloud.
    pub fn device(&mut self, id: &str, dir: Option<usize>) -> (Db, Arc<MemoryTransport>, usize) {
        self.device_with(id, dir, SyncOptions::default())
    }

    /// A device attached with `options` (`background: false` to step it by hand).
    pub fn device_with(
        &mut self,
        id: &str,
        dir: Option<usize>,
        options: SyncOptions,
    ) -> (Db, Arc<MemoryTransport>, usize) {
        let (db, index) = self.open(id, dir);
        let transport = Arc::new(MemoryTransport::new(self.cloud.clone()));
        db.attach(transport.clone(), options).unwrap();
        (db, transport, index)
    }

    /// The directory of device database `index`.
    pub fn dir(&self, index: usize) -> &std::path::Path {
        self.dirs[index].path()
    }

    /// A copy of the closed database `index` (a device image cloned with its replica id).
    pub fn copy_dir(&mut self, index: usize) -> usize {
        let copy = tempfile::tempdir().unwrap();
        copy_tree(self.dirs[index].path(), copy.path());
        self.dirs.push(copy);
        self.dirs.len() - 1
    }

    /// A device database (new, or reopened from `dir`), not attached yet.
    pub fn open(&mut self, id: &str, dir: Option<usize>) -> (Db, usize) {
        let index = dir.unwrap_or_else(|| {
            self.dirs.push(tempfile::tempdir().unwrap());
            self.dirs.len() - 1
        });
        let config = Config {
            clock: self.clock.clock(),
            timer: self.clock.clock(),
            ttl_sweep: None,
            ..Config::with_schema(schema(self.schema)).context("deviceId", id)
        };
        (Db::open(self.dirs[index].path(), config).unwrap(), index)
    }

    pub fn advance(&self, ms: i64) {
        let now = self.now() + ms;
        self.clock.set(now);
        self.cloud.lock().unwrap().set_time_ms(now as u64);
    }

    pub fn now(&self) -> i64 {
        self.cloud.lock().unwrap().now_ms() as i64
    }

    /// The cloud's item of `key`, if it is there and not deleted.
    pub fn cloud_item(&self, key: &Key) -> Option<Item> {
        let cloud = self.cloud.lock().unwrap();
        let change = cloud.get(key)?;
        (change.op == ChangeOp::Put)
            .then(|| change.item.clone())
            .flatten()
    }

    /// Writes a change in the cloud as a cloud developer would, with a fresh cloud version.
    pub fn cloud_write(&self, model: &str, key: Key, scope: &str, item: Option<Item>) {
        let now = self.now() as u64;
        let mut cloud = self.cloud.lock().unwrap();
        let version = Version {
            hlc: Hlc::new(now, 7),
            replica: ReplicaId::parse("cloud").unwrap(),
        };
        let op = if item.is_some() {
            ChangeOp::Put
        } else {
            ChangeOp::Delete
        };
        let change = Change {
            model: model.into(),
            key,
            op,
            version,
            scope: scope.into(),
            item,
            base: None,
        };
        assert_eq!(
            cloud.write(change),
            ferry::replication::PushOutcome::Applied
        );
    }
}

pub fn key(pk: &str, sk: &str) -> Key {
    Key {
        hash: Value::S(pk.into()),
        sort: Some(Value::S(sk.into())),
    }
}

pub fn text(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(Value::as_str).map(String::from)
}

#[test]
fn two_updates_while_offline_upload_the_second() {
    let mut world = World::new();
    let (db, link, _) = world.device("d1", None);
    link.set_online(false);
    db.create("Note", json!({"id": "n1", "text": "first"}))
        .unwrap();
    db.update(
        "Note",
        json!({"id": "n1", "text": "second"}),
        &WriteOptions::default(),
    )
    .unwrap();
    db.update(
        "Note",
        json!({"id": "n1", "text": "third"}),
        &WriteOptions::default(),
    )
    .unwrap();
    assert_eq!(
        db.status().pending_changes,
        1,
        "one pending change per key, the latest"
    );
    assert!(
        db.sync(Duration::from_millis(50)).is_err(),
        "offline: sync times out"
    );
    link.set_online(true);
    world.advance(120_000);
    db.sync(SYNC_TIMEOUT).unwrap();
    let item = world
        .cloud_item(&key("note#d1", "note#n1"))
        .expect("uploaded");
    assert_eq!(text(&item, "text").as_deref(), Some("third"));
    assert_eq!(db.status().pending_changes, 0);
}

#[test]
fn a_crash_before_the_acknowledgement_resends_after_restart() {
    let mut world = World::new();
    let (db, link, dir) = world.device("d1", None);
    link.set_online(false);
    db.create("Fault", json!({"id": "f1", "code": 17})).unwrap();
    drop(db); // the process ends with the change committed locally but never acknowledged
    let (db, _, _) = world.device("d1", Some(dir));
    assert_eq!(
        db.status().pending_changes,
        1,
        "the outbox survived the restart"
    );
    db.sync(SYNC_TIMEOUT).unwrap();
    assert!(world.cloud_item(&key("fault#d1", "fault#f1")).is_some());
}

#[test]
fn unacknowledged_changes_are_resent_on_a_timer_without_new_traffic() {
    let mut world = World::new();
    let manual = SyncOptions {
        background: false,
        ..SyncOptions::default()
    };
    let (db, link, _) = world.device_with("d1", None, manual);
    link.set_online(false);
    db.create("Fault", json!({"id": "f1", "code": 3})).unwrap();
    world.advance(10_000); // past syncDelay: the first push fails
    db.drive().unwrap();
    assert_eq!(db.status().pending_changes, 1);
    link.set_online(true);
    for _ in 0..20 {
        world.advance(30_000); // only time passes: no write, no sync() call
        db.drive().unwrap();
    }
    assert!(
        world.cloud_item(&key("fault#d1", "fault#f1")).is_some(),
        "re-sent by the retry timer"
    );
    assert_eq!(db.status().pending_changes, 0);
}

#[test]
fn a_cloud_delete_applies_whatever_the_fields_say() {
    let mut world = World::new();
    let (db, _, _) = world.device("d1", None);
    let mut item = Item::new();
    for (k, v) in [
        ("_type", "Config"),
        ("pk", "config#"),
        ("sk", "config#rate"),
        ("name", "rate"),
        ("value", "10"),
    ] {
        item.insert(k.into(), Value::S(v.into()));
    }
    world.cloud_write("Config", key("config#", "config#rate"), "*", Some(item));
    db.sync(SYNC_TIMEOUT).unwrap();
    assert!(db.get("Config", json!({"name": "rate"})).unwrap().is_some());
    world.advance(1_000);
    world.cloud_write("Config", key("config#", "config#rate"), "*", None);
    db.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(
        db.get("Config", json!({"name": "rate"})).unwrap(),
        None,
        "the cloud delete applied"
    );
}

#[test]
fn a_cloud_change_keeps_its_timestamps_and_a_newer_cloud_change_is_never_reverted() {
    let mut world = World::new();
    let (db, _, _) = world.device("d1", None);
    db.create("Note", json!({"id": "n1", "text": "device"}))
        .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    world.advance(60_000);
    let mut newer = world.cloud_item(&key("note#d1", "note#n1")).unwrap();
    newer.insert("text".into(), Value::S("cloud".into()));
    newer.insert("updated".into(), Value::int(START_MS - 5_000)); // set by the cloud writer
    world.cloud_write("Note", key("note#d1", "note#n1"), "d1", Some(newer));
    db.sync(SYNC_TIMEOUT).unwrap();
    let local = db.get("Note", json!({"id": "n1"})).unwrap().unwrap();
    assert_eq!(local["text"], "cloud");
    assert_eq!(
        local["updated"],
        json!(START_MS - 5_000),
        "the cloud's timestamp is kept, not re-stamped"
    );
    world.advance(60_000);
    db.sync(SYNC_TIMEOUT).unwrap();
    let cloud = world.cloud_item(&key("note#d1", "note#n1")).unwrap();
    assert_eq!(
        text(&cloud, "text").as_deref(),
        Some("cloud"),
        "the device never reverted the newer cloud change"
    );
}

#[test]
fn a_local_write_to_a_down_model_is_rejected() {
    let mut world = World::new();
    let (db, _, _) = world.device("d1", None);
    let error = db
        .create("Config", json!({"name": "rate", "value": "1"}))
        .unwrap_err();
    assert_eq!(error.code(), "ControlError");
    assert_eq!(db.status().pending_changes, 0);
}

#[test]
fn none_and_device_models_never_upload() {
    let mut world = World::new();
    let (db, _, _) = world.device("d1", None);
    db.create("Scratch", json!({"id": "s1"})).unwrap();
    db.create("Private", json!({"id": "p1"})).unwrap();
    assert_eq!(db.status().pending_changes, 0);
    db.sync(SYNC_TIMEOUT).unwrap();
    assert!(
        world.cloud.lock().unwrap().is_empty(),
        "nothing reached the cloud"
    );
}

#[test]
fn fields_with_sync_none_never_leave_the_device_and_survive_cloud_changes() {
    let mut world = World::new();
    let (db, _, _) = world.device("d1", None);
    db.create("Note", json!({"id": "n1", "text": "a", "secret": "pw"}))
        .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    let mut cloud = world.cloud_item(&key("note#d1", "note#n1")).unwrap();
    assert!(
        !cloud.contains_key("secret"),
        "the secret stayed on the device"
    );
    world.advance(1_000);
    cloud.insert("text".into(), Value::S("b".into()));
    world.cloud_write("Note", key("note#d1", "note#n1"), "d1", Some(cloud));
    db.sync(SYNC_TIMEOUT).unwrap();
    let local = db
        .get_with(
            "Note",
            json!({"id": "n1"}),
            &FindOptions {
                hidden: true,
                ..FindOptions::default()
            },
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        (local["text"].clone(), local["secret"].clone()),
        (json!("b"), json!("pw"))
    );
}

#[test]
fn an_up_model_converges_to_the_device_even_against_a_newer_cloud_write() {
    let mut world = World::new();
    let (db, link, _) = world.device("d1", None);
    link.set_online(false);
    db.create("Fault", json!({"id": "f1", "code": 1})).unwrap();
    // A cloud writer gets in first with a version from the future of the device's clock.
    world.advance(1_000);
    let mut item = Item::new();
    for (k, v) in [
        ("_type", "Fault"),
        ("pk", "fault#d1"),
        ("sk", "fault#f1"),
        ("deviceId", "d1"),
        ("id", "f1"),
    ] {
        item.insert(k.into(), Value::S(v.into()));
    }
    item.insert("code".into(), Value::int(99));
    world.cloud_write("Fault", key("fault#d1", "fault#f1"), "d1", Some(item));
    link.set_online(true);
    db.sync(SYNC_TIMEOUT).unwrap();
    let cloud = world.cloud_item(&key("fault#d1", "fault#f1")).unwrap();
    assert_eq!(
        cloud.get("code"),
        Some(&Value::int(1)),
        "the device is authoritative for an up model"
    );
}

#[test]
fn two_devices_converge_and_cloud_changes_fire_cloud_triggers() {
    let mut world = World::new();
    let (a, _, _) = world.device("d1", None);
    let (b, _, _) = world.device("d2", None);
    let seen = Arc::new(Mutex::new(Vec::<(Origin, Json)>::new()));
    let events = seen.clone();
    b.on_change(Some("Config"), move |e| {
        events
            .lock()
            .unwrap()
            .push((e.origin, e.new.clone().unwrap_or_default()))
    })
    .unwrap();
    let mut item = Item::new();
    for (k, v) in [
        ("_type", "Config"),
        ("pk", "config#"),
        ("sk", "config#mode"),
        ("name", "mode"),
        ("value", "eco"),
    ] {
        item.insert(k.into(), Value::S(v.into()));
    }
    world.cloud_write("Config", key("config#", "config#mode"), "*", Some(item));
    a.sync(SYNC_TIMEOUT).unwrap();
    b.sync(SYNC_TIMEOUT).unwrap();
    for db in [&a, &b] {
        assert_eq!(
            db.get("Config", json!({"name": "mode"})).unwrap().unwrap()["value"],
            "eco"
        );
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, Origin::Cloud);
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_tree(&entry.path(), &target),
            false => drop(std::fs::copy(entry.path(), target).unwrap()),
        }
    }
}

/// A device does not apply again the changes it pushed when its scope's feed brings them
/// back, and tells them by key and version, not by its replica id: a twin cloned from its
/// image, with the same replica id, writes changes the device applies like any other.
#[test]
fn a_twin_with_a_copied_replica_id_still_gets_its_changes_applied() {
    let mut world = World::new();
    let (original, index) = world.open("d1", None);
    let replica = original.status().replica;
    drop(original);
    let twin_index = world.copy_dir(index);
    let (original, _, _) = world.device("d1", Some(index));
    let (twin, _, _) = world.device("d1", Some(twin_index));
    assert_eq!(twin.status().replica, replica, "a clone's replica id");

    original
        .create("Note", json!({"id": "mine", "text": "original"}))
        .unwrap();
    original.sync(SYNC_TIMEOUT).unwrap();
    world.advance(5);
    twin.create("Note", json!({"id": "twins", "text": "twin"}))
        .unwrap();
    twin.sync(SYNC_TIMEOUT).unwrap();
    world.advance(5);
    original.sync(SYNC_TIMEOUT).unwrap();
    let note = |db: &Db, id: &str| {
        db.get("Note", json!({"id": id}))
            .unwrap()
            .map(|n| n["text"].clone())
    };
    assert_eq!(
        note(&original, "twins"),
        Some(json!("twin")),
        "the twin's change applied"
    );
    assert_eq!(note(&twin, "mine"), Some(json!("original")));
    assert_eq!(note(&original, "mine"), Some(json!("original")));
}

#[test]
fn last_writer_wins_on_both_models_and_the_loser_is_logged() {
    let mut world = World::new();
    let (db, link, _) = world.device("d1", None);
    db.create("Note", json!({"id": "n1", "text": "v1"}))
        .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    link.set_online(false);
    db.update(
        "Note",
        json!({"id": "n1", "text": "device"}),
        &WriteOptions::default(),
    )
    .unwrap();
    world.advance(10 * 60_000); // the cloud write is later than the device's
    let mut newer = world.cloud_item(&key("note#d1", "note#n1")).unwrap();
    newer.insert("text".into(), Value::S("cloud".into()));
    world.cloud_write("Note", key("note#d1", "note#n1"), "d1", Some(newer));
    link.set_online(true);
    db.sync(SYNC_TIMEOUT).unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(
        db.get("Note", json!({"id": "n1"})).unwrap().unwrap()["text"],
        "cloud"
    );
    let cloud = world.cloud_item(&key("note#d1", "note#n1")).unwrap();
    assert_eq!(text(&cloud, "text").as_deref(), Some("cloud"));
    assert_eq!(
        db.status().conflicts,
        1,
        "the device's losing version is in the conflict log"
    );
    let conflicts = db.conflicts(10).unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].model, "Note");
    let loser_text = conflicts[0].loser_item.as_ref().map(|i| i["text"].clone());
    assert_eq!(loser_text, Some(json!("device")));
    assert!(
        conflicts[0].winner > conflicts[0].loser,
        "version texts sort like versions"
    );
}

#[test]
fn tombstones_are_forgotten_after_the_horizon_unless_their_delete_is_pending() {
    let mut world = World::new();
    let (db, link, _) = world.device("d1", None);
    db.create("Note", json!({"id": "gone", "text": "x"}))
        .unwrap();
    db.create("Note", json!({"id": "waiting", "text": "y"}))
        .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    db.remove("Note", json!({"id": "gone"}), &WriteOptions::default())
        .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    link.set_online(false);
    db.remove("Note", json!({"id": "waiting"}), &WriteOptions::default())
        .unwrap();
    world.advance(31 * 24 * 3600 * 1000);
    assert_eq!(
        db.purge_tombstones().unwrap(),
        1,
        "only the acknowledged delete's tombstone goes"
    );
    link.set_online(true);
    db.sync(SYNC_TIMEOUT).unwrap();
    let cloud = world.cloud.lock().unwrap();
    let waiting = cloud.get(&key("note#d1", "note#waiting")).map(|c| c.op);
    assert_eq!(
        waiting,
        Some(ChangeOp::Delete),
        "the pending delete still reached the cloud"
    );
}

/// The reference cloud behind a slow link: push number n takes `delays_ms[n]` (the last
/// one past the list) and fails early once a newer session replaced the one it went over
/// (the relay ends a replaced session without answering its pushes). With
/// `time_out_first_pull`, the first pull times out, which takes the first session down;
/// with `hang_first_session`, pushes over the first session never answer (a half-open
/// link). It counts the sessions and the pushes that ran at once.
struct SlowLink {
    inner: MemoryTransport,
    delays_ms: Vec<u64>,
    time_out_first_pull: bool,
    hang_first_session: bool,
    sessions: AtomicU64,
    pulls: AtomicU64,
    started: AtomicUsize,
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl SlowLink {
    fn new(world: &World, delays_ms: Vec<u64>, time_out_first_pull: bool) -> SlowLink {
        SlowLink {
            inner: MemoryTransport::new(world.cloud.clone()),
            delays_ms,
            time_out_first_pull,
            hang_first_session: false,
            sessions: AtomicU64::new(0),
            pulls: AtomicU64::new(0),
            started: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }
}

impl ferry::replication::Transport for SlowLink {
    fn connect(&self) -> impl Future<Output = Result<Session, TransportError>> + Send {
        self.sessions.fetch_add(1, SeqCst);
        self.inner.connect()
    }

    async fn push(&self, changes: Vec<Change>) -> Result<PushResults, TransportError> {
        let nth = self.started.fetch_add(1, SeqCst);
        let delay_ms = (self.delays_ms.get(nth))
            .or(self.delays_ms.last())
            .copied()
            .unwrap_or(0);
        let session = self.sessions.load(SeqCst);
        let delay_ms = match self.hang_first_session && session == 1 {
            true => u64::MAX,
            false => delay_ms,
        };
        let running = self.running.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(running, SeqCst);
        let mut waited_ms = 0;
        let answer = loop {
            if self.sessions.load(SeqCst) != session {
                let gone = "the session was replaced".to_string();
                break Err(TransportError::Unavailable(gone));
            }
            if waited_ms >= delay_ms {
                break self.inner.push(changes).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited_ms += 10;
        };
        self.running.fetch_sub(1, SeqCst);
        answer
    }

    fn pull(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> impl Future<Output = Result<PullPage, TransportError>> + Send {
        let first = self.pulls.fetch_add(1, SeqCst) == 0;
        let page = self.inner.pull(scope, from, limit);
        async move {
            match first && self.time_out_first_pull {
                true => Err(TransportError::Timeout(1)),
                false => page.await,
            }
        }
    }
}

#[test]
fn a_background_driver_keeps_several_batches_in_flight_and_takes_their_answers_in_any_order() {
    let mut world = World::new();
    let (db, _) = world.open("d1", None);
    // The first push the longest: the answers come back in the other order.
    let transport = Arc::new(SlowLink::new(&world, vec![400, 300, 200, 100, 0], false));
    let options = SyncOptions {
        engine: ferry::replication::EngineConfig {
            batch_changes_max: 1,
            ..Default::default()
        },
        ..SyncOptions::default()
    };
    create_faults(&db, 8);
    db.attach(Arc::clone(&transport), options).unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    for n in 0..8 {
        let key = key("fault#d1", &format!("fault#f{n}"));
        assert!(world.cloud_item(&key).is_some(), "f{n} is in the cloud");
    }
    assert_eq!(db.status().pending_changes, 0, "every answer settled");
    let peak = transport.peak.load(SeqCst);
    assert!(
        (2..=ferry::replication::IN_FLIGHT_BATCHES_MAX).contains(&peak),
        "pushes in flight at once: {peak}"
    );
}

/// Faults `f0` to `f{count - 1}` of device d1, queued before it attaches.
fn create_faults(db: &Db, count: u64) {
    for n in 0..count {
        db.create("Fault", json!({"id": format!("f{n}"), "code": n}))
            .unwrap();
    }
}

/// Device d1 of `world` whose engine runs on the real monotonic clock (the world's timer
/// stands still): its retries and reconnects come by themselves.
fn on_the_real_timer(world: &World) -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        clock: world.clock.clock(),
        ttl_sweep: None,
        ..Config::with_schema(schema(SCHEMA)).context("deviceId", "d1")
    };
    let db = Db::open(dir.path(), config).unwrap();
    (dir, db)
}

#[test]
fn a_late_failure_of_a_push_from_a_replaced_session_leaves_the_new_one_up() {
    let world = World::new();
    let (_dir, db) = on_the_real_timer(&world);
    let transport = Arc::new(SlowLink::new(&world, vec![600], true));
    let options = SyncOptions {
        engine: ferry::replication::EngineConfig {
            batch_changes_max: 1,
            retry_base_ms: 50,
            retry_max_ms: 100,
            ..Default::default()
        },
        ..SyncOptions::default()
    };
    create_faults(&db, 8);
    db.attach(Arc::clone(&transport), options).unwrap();
    db.sync(Duration::from_secs(20)).unwrap();
    assert_eq!(db.status().pending_changes, 0);
    let sessions = transport.sessions.load(SeqCst);
    assert!(
        sessions <= 3,
        "the old session's failures took the new one down: {sessions} sessions"
    );
}

#[test]
fn a_push_that_times_out_takes_a_half_open_link_down_and_the_next_session_delivers_it() {
    let world = World::new();
    let (_dir, db) = on_the_real_timer(&world);
    let transport = Arc::new(SlowLink {
        hang_first_session: true,
        ..SlowLink::new(&world, vec![0], false)
    });
    // The engine gives up on a batch before the transport's call times out: the timeout
    // comes as a late answer, and it is what tells the link is gone (nothing is pulled).
    let options = SyncOptions {
        engine: ferry::replication::EngineConfig {
            ack_timeout_ms: 300,
            poll_interval_ms: 3_600_000,
            retry_base_ms: 50,
            retry_max_ms: 100,
            ..Default::default()
        },
        call_timeout: Duration::from_millis(400),
        ..SyncOptions::default()
    };
    db.create("Fault", json!({"id": "f1", "code": 1})).unwrap();
    db.attach(Arc::clone(&transport), options).unwrap();
    db.sync(Duration::from_secs(10)).unwrap();
    assert!(world.cloud_item(&key("fault#d1", "fault#f1")).is_some());
    assert_eq!(transport.sessions.load(SeqCst), 2, "one reconnect");
}

/// The reference cloud behind a check of the fsync-before-push rule: a write the test made
/// since the last fsync must not be pushed. The database's fsync hook clears the writes.
struct DurableOnly {
    inner: MemoryTransport,
    unsynced: Arc<Mutex<Vec<Key>>>,
    pushed_unsynced: Mutex<Vec<Key>>,
}

impl ferry::replication::Transport for DurableOnly {
    fn connect(&self) -> impl Future<Output = Result<Session, TransportError>> + Send {
        self.inner.connect()
    }

    async fn push(&self, changes: Vec<Change>) -> Result<PushResults, TransportError> {
        let unsynced = self.unsynced.lock().unwrap().clone();
        let pushed = (changes.iter().map(|change| &change.key))
            .filter(|key| unsynced.contains(key))
            .cloned();
        self.pushed_unsynced.lock().unwrap().extend(pushed);
        self.inner.push(changes).await
    }

    fn pull(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> impl Future<Output = Result<PullPage, TransportError>> + Send {
        self.inner.pull(scope, from, limit)
    }
}

/// Only what an fsync covered goes up: changes written after the fsync that served earlier
/// pushes (new keys and newer versions of pushed ones) wait for one of their own.
#[test]
fn a_push_goes_only_after_an_fsync_that_covers_its_changes() {
    let world = World::new();
    let dir = tempfile::tempdir().unwrap();
    let unsynced: Arc<Mutex<Vec<Key>>> = Arc::default();
    let cleared = unsynced.clone();
    let config = Config {
        clock: world.clock.clock(),
        timer: world.clock.clock(),
        ttl_sweep: None,
        // No background fsync: each one is the driver's.
        sync_window: Duration::from_secs(3600),
        on_fsync: Some(Arc::new(move || {
            cleared.lock().unwrap().clear();
            Ok(())
        })),
        ..Config::with_schema(schema(SCHEMA)).context("deviceId", "d1")
    };
    let db = Db::open(dir.path(), config).unwrap();
    let transport = Arc::new(DurableOnly {
        inner: MemoryTransport::new(world.cloud.clone()),
        unsynced: unsynced.clone(),
        pushed_unsynced: Mutex::default(),
    });
    let options = SyncOptions {
        engine: ferry::replication::EngineConfig {
            batch_changes_max: 2,
            sync_delay_ms: 0,
            ..Default::default()
        },
        background: false,
        ..SyncOptions::default()
    };
    db.attach(Arc::clone(&transport), options).unwrap();
    let write = |from: u64, to: u64, code: u64| {
        for n in from..to {
            let item = json!({"id": format!("f{n}"), "code": code});
            db.upsert("Fault", item, &WriteOptions::default()).unwrap();
            let written = key("fault#d1", &format!("fault#f{n}"));
            unsynced.lock().unwrap().push(written);
        }
    };
    write(0, 10, 1);
    db.drive().unwrap();
    // Changed and new keys, written after the fsyncs that served those pushes.
    write(8, 12, 2);
    db.drive().unwrap();
    let pushed_unsynced = transport.pushed_unsynced.lock().unwrap().clone();
    assert!(
        pushed_unsynced.is_empty(),
        "pushed before their fsync: {pushed_unsynced:?}"
    );
    for n in 0..12 {
        let item = world.cloud_item(&key("fault#d1", &format!("fault#f{n}")));
        let code = item.and_then(|item| item.get("code").cloned());
        let expected = Value::N(if (8..12).contains(&n) { 2u64 } else { 1 }.into());
        assert_eq!(code, Some(expected), "f{n} in the cloud");
    }
}

/// The reference cloud behind a hostile link that stamps the pulled changes of `key` (of
/// every key, if `None`) at the end of time and, when it `supersedes`, answers every push:
/// superseded, by such a version. It counts the pushes.
struct FromTheFuture {
    inner: MemoryTransport,
    key: Option<Key>,
    supersedes: bool,
    pushes: AtomicUsize,
}

impl FromTheFuture {
    fn new(world: &World, key: Option<Key>, supersedes: bool) -> FromTheFuture {
        FromTheFuture {
            inner: MemoryTransport::new(world.cloud.clone()),
            key,
            supersedes,
            pushes: AtomicUsize::new(0),
        }
    }
}

impl ferry::replication::Transport for FromTheFuture {
    fn connect(&self) -> impl Future<Output = Result<Session, TransportError>> + Send {
        self.inner.connect()
    }

    async fn push(&self, changes: Vec<Change>) -> Result<PushResults, TransportError> {
        self.pushes.fetch_add(1, SeqCst);
        if !self.supersedes {
            return self.inner.push(changes).await;
        }
        let superseded = |change: Change| {
            let mut cloud = change.clone();
            cloud.version.hlc = Hlc::from_u64(u64::MAX);
            let cloud = Box::new(cloud);
            let outcome = ferry::replication::PushOutcome::Superseded { cloud };
            (change.key, change.version, outcome)
        };
        Ok(changes.into_iter().map(superseded).collect())
    }

    async fn pull(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> Result<PullPage, TransportError> {
        let mut page = self.inner.pull(scope, from, limit).await?;
        for (_, change) in &mut page.changes {
            if self.key.as_ref().is_none_or(|key| *key == change.key) {
                change.version.hlc = Hlc::from_u64(u64::MAX);
            }
        }
        Ok(page)
    }
}

/// A cloud change stamped past any time an honest cloud's rule allows would outrank every
/// later local write of its key: it is quarantined, and the key stays the device's to write.
#[test]
fn a_cloud_change_stamped_past_the_clouds_time_is_quarantined_and_the_key_stays_writable() {
    let mut world = World::new();
    let (db, index) = world.open("d1", None);
    let note = key("note#d1", "note#n1");
    let transport = FromTheFuture::new(&world, Some(note.clone()), false);
    db.attach(Arc::new(transport), SyncOptions::default())
        .unwrap();
    db.create("Note", json!({"id": "n1", "text": "device"}))
        .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();

    world.advance(1_000);
    let mut hostile = world.cloud_item(&note).unwrap();
    hostile.insert("text".into(), Value::S("end of time".into()));
    world.cloud_write("Note", note.clone(), "d1", Some(hostile));
    db.sync(SYNC_TIMEOUT).unwrap();
    let quarantined = db.quarantine(10).unwrap();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(
        quarantined[0].reason.contains("past the cloud's time"),
        "{}",
        quarantined[0].reason
    );
    let local = db.get("Note", json!({"id": "n1"})).unwrap().unwrap();
    assert_eq!(local["text"], "device", "the hostile change did not apply");

    world.advance(1_000);
    db.update(
        "Note",
        json!({"id": "n1", "text": "written after"}),
        &WriteOptions::default(),
    )
    .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    let cloud = world.cloud_item(&note).unwrap();
    assert_eq!(cloud["text"], Value::S("written after".into()));
    let local = db.get("Note", json!({"id": "n1"})).unwrap().unwrap();
    assert_eq!(local["text"], "written after");

    // Opened again, the quarantine is applied again as the database attaches (no
    // handshake yet) and after the handshake: the hostile change stays out both times.
    drop(db);
    let (db, _) = world.open("d1", Some(index));
    let honest = MemoryTransport::new(world.cloud.clone());
    db.attach(honest, SyncOptions::default()).unwrap();
    let kept = db.status().quarantined;
    assert!(kept >= 1, "the hostile change is still kept");
    db.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(db.status().quarantined, kept);
    let local = db.get("Note", json!({"id": "n1"})).unwrap().unwrap();
    assert_eq!(local["text"], "written after");
}

/// The cloud's time moves on with the wall clock too: a device whose timer stood still
/// while it slept (the monotonic clock stops in a suspend) applies the cloud's changes
/// made meanwhile, though no handshake told it the time since.
#[test]
fn a_device_whose_timer_stood_still_for_days_applies_the_clouds_new_changes() {
    let world = World::new();
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        clock: world.clock.clock(),
        timer: ManualClock::at(0).clock(),
        ttl_sweep: None,
        ..Config::with_schema(schema(SCHEMA)).context("deviceId", "d1")
    };
    let db = Db::open(dir.path(), config).unwrap();
    db.attach(
        MemoryTransport::new(world.cloud.clone()),
        SyncOptions::default(),
    )
    .unwrap();
    db.create("Note", json!({"id": "n1", "text": "device"}))
        .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();

    world.advance(3 * 24 * 3_600_000);
    let note = key("note#d1", "note#n1");
    let mut newer = world.cloud_item(&note).unwrap();
    newer.insert("text".into(), Value::S("cloud".into()));
    world.cloud_write("Note", note, "d1", Some(newer));
    db.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(db.status().quarantined, 0, "{:?}", db.quarantine(10));
    let local = db.get("Note", json!({"id": "n1"})).unwrap().unwrap();
    assert_eq!(local["text"], "cloud");
}

/// This device's own change the cloud refused stays in the quarantine, and its item on
/// the device, when the database opens again (the quarantine is applied again as it
/// attaches: the refused change is no cloud change to apply, and leaving would free its
/// item for a resync to remove).
#[test]
fn a_refused_change_of_this_device_stays_quarantined_across_a_reopen() {
    let mut world = World::new();
    let (db, index) = world.open("d1", None);
    let link = MemoryTransport::new(world.cloud.clone()).with_write_scopes(["elsewhere"]);
    db.attach(link, SyncOptions::default()).unwrap();
    db.create("Note", json!({"id": "n1", "text": "kept"}))
        .unwrap();
    let refused = db.sync(SYNC_TIMEOUT).unwrap_err();
    assert!(refused.to_string().contains("refused"), "{refused}");
    assert_eq!(db.status().quarantined, 1, "{:?}", db.quarantine(10));
    drop(db);

    let (db, _) = world.open("d1", Some(index));
    let link = MemoryTransport::new(world.cloud.clone());
    db.attach(link, SyncOptions::default()).unwrap();
    let kept = db.quarantine(10).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].reason.contains("refused"), "{}", kept[0].reason);
    let note = db.get("Note", json!({"id": "n1"})).unwrap().unwrap();
    assert_eq!(note["text"], "kept");

    // A newer write of the key lands: the refused change it outdates leaves the quarantine,
    // also when the pull that brings the newer version back skips it as this device's own.
    let newer = json!({"id": "n1", "text": "newer"});
    db.update("Note", newer, &Default::default()).unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    world.advance(1_000);
    db.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(db.status().quarantined, 0, "{:?}", db.quarantine(10));
}

/// A push answer that names a version no honest cloud holds neither re-stamps the change
/// at the end of time (`up`) nor drops it as lost (`both`): the change is quarantined and
/// not sent again, and its item stays. It takes the place of a pulled change of its key
/// stamped as far ahead in the quarantine (a record a key), so that it stays shown.
#[test]
fn a_push_answer_naming_a_version_past_the_clouds_time_quarantines_the_change() {
    let mut world = World::new();
    let (db, _) = world.open("d1", None);
    let link = Arc::new(FromTheFuture::new(&world, None, true));
    db.attach(Arc::clone(&link), SyncOptions::default())
        .unwrap();
    // The cloud's note comes down stamped at the end of time: quarantined.
    let mut cloud_note = Item::new();
    let fields = [
        ("_type", "Note"),
        ("pk", "note#d1"),
        ("sk", "note#n1"),
        ("deviceId", "d1"),
        ("id", "n1"),
        ("text", "cloud"),
    ];
    for (name, value) in fields {
        cloud_note.insert(name.into(), Value::S(value.into()));
    }
    world.cloud_write("Note", key("note#d1", "note#n1"), "d1", Some(cloud_note));
    db.sync(SYNC_TIMEOUT).unwrap();
    assert_eq!(db.status().quarantined, 1, "{:?}", db.quarantine(10));

    create_faults(&db, 1);
    db.create("Note", json!({"id": "n1", "text": "mine"}))
        .unwrap();
    let refused = db.sync(SYNC_TIMEOUT).unwrap_err();
    assert!(refused.to_string().contains("past its time"), "{refused}");
    let kept = db.quarantine(10).unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept.iter().all(|q| q.reason.contains("past its time")),
        "{kept:?}"
    );
    assert_eq!(db.status().pending_changes, 0);
    assert_eq!(db.status().conflicts, 0, "nothing lost to it");
    let pushes = link.pushes.load(SeqCst);
    let _ = db.sync(SYNC_TIMEOUT);
    assert_eq!(link.pushes.load(SeqCst), pushes, "not sent again");
    assert!(db.get("Fault", json!({"id": "f0"})).unwrap().is_some());
    let note = db.get("Note", json!({"id": "n1"})).unwrap().unwrap();
    assert_eq!(note["text"], "mine");
}

/// The reference cloud behind a link that hides `key` from every pull until `shown`, and
/// answers the first catch-up pull of `scope` after `expire` with `Expired` (a resync
/// follows). It reads no single rows, so a resync takes a key its snapshot lacks for gone.
struct Hiding {
    inner: MemoryTransport,
    key: Key,
    scope: &'static str,
    shown: AtomicBool,
    expire: AtomicBool,
}

impl ferry::replication::Transport for Hiding {
    fn connect(&self) -> impl Future<Output = Result<Session, TransportError>> + Send {
        self.inner.connect()
    }

    fn push(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<PushResults, TransportError>> + Send {
        self.inner.push(changes)
    }

    async fn pull(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> Result<PullPage, TransportError> {
        let catch_up = matches!(from, PullFrom::Since(_)) && scope == self.scope;
        if catch_up && self.expire.swap(false, SeqCst) {
            return Err(TransportError::Expired);
        }
        let mut page = self.inner.pull(scope, from, limit).await?;
        if !self.shown.load(SeqCst) {
            page.changes.retain(|(_, change)| change.key != self.key);
        }
        Ok(page)
    }
}

/// A resync removes the items its snapshot lacks without a newer version: a change this
/// device pushed of such an item, when the feed brings it back, applies again rather than
/// passing for an echo of what the device holds.
#[test]
fn an_item_a_resync_removed_comes_back_with_the_device_s_own_pushed_change() {
    let mut world = World::new();
    let (db, _) = world.open("d1", None);
    let note = key("note#d1", "note#n1");
    let link = Arc::new(Hiding {
        inner: MemoryTransport::new(world.cloud.clone()),
        key: note.clone(),
        scope: "d1",
        shown: AtomicBool::new(false),
        expire: AtomicBool::new(false),
    });
    db.attach(Arc::clone(&link), SyncOptions::default())
        .unwrap();
    db.create("Note", json!({"id": "n1", "text": "mine"}))
        .unwrap();
    // Pushed, and not brought back yet: the device remembers it went up.
    db.sync(SYNC_TIMEOUT).unwrap();
    assert!(world.cloud_item(&note).is_some());

    // A resync whose snapshot lacks the note removes it here.
    link.expire.store(true, SeqCst);
    world.advance(1_000);
    db.sync(SYNC_TIMEOUT).unwrap();
    let gone = db.get("Note", json!({"id": "n1"})).unwrap();
    assert_eq!(gone, None, "the resync removed what its snapshot lacked");

    // The feed shows it again: the device's own change applies.
    link.shown.store(true, SeqCst);
    world.advance(1_000);
    db.sync(SYNC_TIMEOUT).unwrap();
    let back = db.get("Note", json!({"id": "n1"})).unwrap();
    assert_eq!(back.map(|n| n["text"].clone()), Some(json!("mine")));
}
