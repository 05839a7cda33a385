//! Replication through Amazon's DynamoDB Local (started by `cargo xtask test`): the table
//! from the schema, the direct transport, and the layout a cloud app reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferry::Attach;
use ferry::dynamo::{Dynamo, DynamoTransport, Endpoint, Settings, Stream, Table};
use ferry::journal::{Change, ChangeOp};
use ferry::replication::{CloudStore, Grant, MemoryCloud, Models, StoreTransport, TransportError};
use ferry::types::{Hlc, Item, Key, ReplicaId, Value, Version};
use ferry::{Config, Db, Schema, SyncOptions};
use ferry_relay::EmbeddedStore;
use serde_json::json;

use crate::relay::RelayProcess;
use crate::support::schema;
use ferry::ws::WsTransport;

pub const SCHEMA: &str = r#"{
    version: '1', format: 'onetable:1.1.0',
    indexes: {
        primary: { hash: 'pk', sort: 'sk' },
        gs1: { hash: 'gs1pk', sort: 'gs1sk', project: ['name'] },
        ls1: { type: 'local', sort: 'lsk', project: 'keys' },
    },
    params: { timestamps: true },
    models: {
        Note: {
            pk: { type: 'string', value: 'note#${deviceId}' }, sk: { type: 'string', value: 'note#${id}' },
            deviceId: { type: 'string', required: true }, id: { type: 'string', required: true },
            text: { type: 'string' },
        },
        Shared: {
            pk: { type: 'string', value: 'shared#' }, sk: { type: 'string', value: 'shared#${id}' },
            gs1pk: { type: 'string', value: 'name#' }, gs1sk: { type: 'string', value: 'name#${name}' },
            id: { type: 'string', required: true }, name: { type: 'string' },
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
        Private: {
            pk: { type: 'string', value: 'private#' }, sk: { type: 'string', value: 'private#${id}' },
            id: { type: 'string', required: true },
        },
        Local: {
            pk: { type: 'string', value: 'local#' }, sk: { type: 'string', value: 'local#${id}' },
            id: { type: 'string', required: true }, text: { type: 'string' },
        },
        Gadget: {
            pk: { type: 'string', value: 'gadget#${name}' }, sk: { type: 'string', value: 'gadget#' },
            name: { type: 'string', required: true }, deviceId: { type: 'string', required: true },
            color: { type: 'string' },
        },
    },
    control: {
        Note: { sync: 'both' },
        Shared: { sync: 'both', scope: '*' },
        Fault: { sync: 'up' },
        Config: { sync: 'down', scope: '*' },
        Private: { enable: 'device' },
        Local: { sync: 'none', scope: '*' },
        Gadget: { sync: 'both' },
    },
}"#;

pub const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// The DynamoDB Local the test command started.
pub fn endpoint() -> Endpoint {
    let url = std::env::var("FERRY_TEST_DYNAMODB").expect(
        "FERRY_TEST_DYNAMODB is not set: run the suite with `cargo xtask test`, which starts \
         DynamoDB Local, or point it at a running one (http://127.0.0.1:PORT)",
    );
    Endpoint {
        url: Some(url),
        region: Some("us-east-1".into()),
    }
}

/// A table name no other test (or earlier run against the same server) uses.
pub fn table_name(test: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{test}-{}-{n}-{nanos}", std::process::id())
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Which way a test's devices reach the cloud.
#[derive(Debug, Clone, Copy)]
pub enum Via {
    /// The reference cloud (`MemoryCloud`), in this process.
    Memory,
    /// The relay's embedded store, in this process (no relay in between).
    Embedded,
    /// Straight to a DynamoDB Local table.
    Dynamo,
    /// Through a `ferry relay serve` process over its embedded store.
    Relay,
    /// Through a `ferry relay serve` process over a DynamoDB Local table.
    RelayDynamo,
}

/// The reference cloud on the wall clock: its time is set to now before every call, as a
/// real cloud's is, so that the write rule's bound on versions sees the time devices see.
pub struct Reference(std::sync::Mutex<MemoryCloud>);

impl Reference {
    fn tick(&self) -> &std::sync::Mutex<MemoryCloud> {
        self.0.lock().unwrap().set_time_ms(now_ms());
        &self.0
    }
}

impl CloudStore for Reference {
    async fn session(&self) -> Result<ferry::replication::Session, TransportError> {
        self.tick().session().await
    }

    async fn write(
        &self,
        changes: Vec<Change>,
        grant: &Grant,
    ) -> Result<ferry::replication::PushResults, TransportError> {
        self.tick().write(changes, grant).await
    }

    async fn get(&self, key: &Key) -> Result<Option<Change>, TransportError> {
        self.tick().get(key).await
    }

    async fn read(
        &self,
        scope: &str,
        from: ferry::replication::PullFrom,
        limit: usize,
    ) -> Result<ferry::replication::PullPage, TransportError> {
        self.tick().read(scope, from, limit).await
    }

    fn shared(&self) -> bool {
        false
    }
}

/// A cloud the test reaches in process: the reference cloud or the relay's embedded store.
#[derive(Clone)]
pub enum Direct {
    Memory(Arc<Reference>),
    /// The store, and its directory (kept while any link lives).
    Embedded(
        Arc<EmbeddedStore>,
        #[allow(dead_code)] Arc<tempfile::TempDir>,
    ),
}

impl Direct {
    fn open(via: Via, schema: &Schema, horizon_ms: u64) -> Direct {
        let models = Models::new(schema.cloud_directions(), schema.item_layout());
        match via {
            Via::Memory => {
                let cloud = MemoryCloud::new(horizon_ms).with_models(models);
                Direct::Memory(Arc::new(Reference(std::sync::Mutex::new(cloud))))
            }
            _ => {
                let dir = tempfile::tempdir().unwrap();
                let store = Arc::new(EmbeddedStore::open(dir.path(), horizon_ms, models).unwrap());
                // The relay's upkeep: tombstones purged past the horizon, while the store lives.
                let upkeep = Arc::downgrade(&store);
                std::thread::spawn(move || {
                    while let Some(store) = upkeep.upgrade() {
                        let _ = store.purge();
                        drop(store);
                        std::thread::sleep(Duration::from_millis(250));
                    }
                });
                Direct::Embedded(store, Arc::new(dir))
            }
        }
    }

    fn link(&self, grant: Grant) -> Link {
        match self {
            Direct::Memory(cloud) => Link::Memory(StoreTransport::new(cloud.clone(), grant)),
            Direct::Embedded(store, _) => Link::Embedded(StoreTransport::new(store.clone(), grant)),
        }
    }
}

/// One cloud on a schema, and the devices syncing with it: a DynamoDB table, or a relay.
pub struct Cloud {
    pub rt: tokio::runtime::Runtime,
    pub dynamo: Dynamo,
    pub table: String,
    pub schema: Arc<Schema>,
    dirs: Vec<tempfile::TempDir>,
    /// The engine of the devices attached next.
    pub engine: ferry::EngineConfig,
    /// The key of `crypt` fields the devices open with.
    pub crypto: Option<ferry::schema::Crypto>,
    /// The wall clock of the devices attached next (else the system's).
    pub clock: Option<ferry::Clock>,
    /// The relay the devices sync through, instead of the table.
    pub relay: Option<RelayProcess>,
    /// The in-process cloud the devices sync with, instead of the table.
    pub direct: Option<Direct>,
    /// Which way the devices reach it.
    pub via: Via,
}

/// A device's transport, any way.
pub enum Link {
    Memory(StoreTransport<Arc<Reference>>),
    Embedded(StoreTransport<Arc<EmbeddedStore>>),
    Dynamo(Box<DynamoTransport>),
    Relay(WsTransport),
}

/// The same call on whichever transport a link is.
macro_rules! on_link {
    ($link:expr, $t:ident => $call:expr) => {
        match $link {
            Link::Memory($t) => $call,
            Link::Embedded($t) => $call,
            Link::Dynamo($t) => $call,
            Link::Relay($t) => $call,
        }
    };
}

impl ferry::Transport for Link {
    async fn connect(&self) -> Result<ferry::replication::Session, TransportError> {
        on_link!(self, t => t.connect().await)
    }

    async fn push(
        &self,
        changes: Vec<Change>,
    ) -> Result<ferry::replication::PushResults, TransportError> {
        on_link!(self, t => t.push(changes).await)
    }

    async fn pull(
        &self,
        scope: &str,
        from: ferry::replication::PullFrom,
        limit: usize,
    ) -> Result<ferry::replication::PullPage, TransportError> {
        on_link!(self, t => t.pull(scope, from, limit).await)
    }

    async fn get(&self, key: &Key) -> Result<Option<Change>, TransportError> {
        on_link!(self, t => t.get(key).await)
    }

    async fn live(&self) -> Result<Vec<Change>, TransportError> {
        on_link!(self, t => t.live().await)
    }
}

impl Cloud {
    /// A new table of [`SCHEMA`] with `settings` and no stream.
    pub fn new(test: &str, settings: Settings) -> Cloud {
        Cloud::with_stream(test, settings, Stream::Off)
    }

    /// A new table of [`SCHEMA`] with `settings` and `stream`.
    pub fn with_stream(test: &str, settings: Settings, stream: Stream) -> Cloud {
        Cloud::with_schema(test, settings, stream, schema(SCHEMA))
    }

    /// A new cloud of [`SCHEMA`] with `settings`, reached `via`.
    pub fn over(via: Via, test: &str, settings: Settings) -> Cloud {
        match via {
            Via::Dynamo => Cloud::new(test, settings),
            Via::Memory | Via::Embedded => {
                let cloud = Cloud::bare(test, schema(SCHEMA));
                Cloud {
                    direct: Some(Direct::open(via, &cloud.schema, settings.horizon_ms)),
                    via,
                    ..cloud
                }
            }
            Via::Relay => {
                let horizon = format!("{}ms", settings.horizon_ms);
                Cloud {
                    relay: Some(RelayProcess::start(&["--horizon", &horizon])),
                    via,
                    ..Cloud::bare(test, schema(SCHEMA))
                }
            }
            Via::RelayDynamo => {
                let cloud = Cloud::new(test, settings);
                let store = format!("dynamodb:{}", cloud.table);
                let endpoint = endpoint().url.unwrap();
                let args = ["--endpoint", &endpoint, "--poll-interval", "200ms"];
                let relay = RelayProcess::start_over(tempfile::tempdir().unwrap(), store, &args);
                Cloud {
                    relay: Some(relay),
                    via,
                    ..cloud
                }
            }
        }
    }

    /// A new table of `schema`.
    pub fn with_schema(test: &str, settings: Settings, stream: Stream, schema: Schema) -> Cloud {
        let cloud = Cloud::bare(test, schema);
        cloud
            .rt
            .block_on(cloud.table().create(settings, stream, &mut |_| {}))
            .unwrap();
        cloud
    }

    /// A cloud of `schema` whose table is not created yet.
    /// Devices syncing through a relay process started with `extra` arguments.
    pub fn over_relay(test: &str, extra: &[&str]) -> Cloud {
        Cloud {
            relay: Some(RelayProcess::start(extra)),
            via: Via::Relay,
            ..Cloud::bare(test, schema(SCHEMA))
        }
    }

    fn bare(test: &str, schema: Schema) -> Cloud {
        let rt = runtime();
        let dynamo = rt.block_on(Dynamo::connect(&endpoint()));
        let schema = Arc::new(schema);
        let table = table_name(test);
        Cloud {
            rt,
            dynamo,
            table,
            schema,
            dirs: Vec::new(),
            engine: ferry::EngineConfig {
                poll_interval_ms: 200,
                sync_delay_ms: 50,
                ..Default::default()
            },
            crypto: None,
            clock: None,
            relay: None,
            direct: None,
            via: Via::Dynamo,
        }
    }

    pub fn table(&self) -> Table<'_> {
        Table {
            dynamo: &self.dynamo,
            name: &self.table,
            schema: &self.schema,
        }
    }

    /// Builds transports to the table, without borrowing it.
    pub fn transport_maker(&self) -> impl Fn(&str) -> DynamoTransport + use<> {
        let (table, schema) = (self.table.clone(), self.schema.clone());
        move |replica| DynamoTransport::new(endpoint(), &table, schema.clone(), replica)
    }

    /// Builds device `id`'s transports (by replica id) to this cloud, any way: granted its
    /// own scope and `*` (a relay's default), or every scope straight to the table.
    pub fn link_maker(&self, id: &str) -> impl Fn(&str) -> Link + use<> {
        let own = [id.to_string(), "*".to_string()].into();
        let grant = match &self.direct {
            Some(_) => Grant::device(id, Some(own)),
            None => Grant::device(id, None),
        };
        self.grant_maker(grant)
    }

    /// Builds transports (by replica id) that write as `grant` says, any way.
    pub fn grant_maker(&self, grant: Grant) -> impl Fn(&str) -> Link + use<> {
        let relay = (self.relay.as_ref()).map(|relay| (relay.url(), relay.token_for(&grant)));
        let direct = self.direct.clone();
        let table = self.transport_maker();
        move |replica| match (&relay, &direct) {
            (Some((url, token)), _) => Link::Relay(WsTransport::new(url, token, replica).unwrap()),
            (None, Some(direct)) => direct.link(grant.clone()),
            (None, None) => Link::Dynamo(Box::new(table(replica).with_grant(grant.clone()))),
        }
    }

    /// A transport writing as `grant` says, with replica id `replica`, connected.
    pub fn link(&self, grant: Grant, replica: &str) -> Link {
        let link = self.grant_maker(grant)(replica);
        self.rt.block_on(ferry::Transport::connect(&link)).unwrap();
        link
    }

    /// A device attached to the cloud (new, or reopened from `dir`).
    pub fn device(&mut self, id: &str, dir: Option<usize>) -> (Db, usize) {
        let link = self.link_maker(id);
        self.device_via(id, dir, link)
    }

    /// A device attached to the cloud whose copy of the schema is `schema` (outdated, or
    /// tampered with).
    pub fn device_with_schema(&mut self, id: &str, schema: &str) -> (Db, usize) {
        let link = self.link_maker(id);
        self.dirs.push(tempfile::tempdir().unwrap());
        let index = self.dirs.len() - 1;
        let config = Config::with_schema(crate::support::schema(schema)).context("deviceId", id);
        let db = Db::open(self.dirs[index].path(), config).unwrap();
        let replica = db.status().replica;
        let options = SyncOptions {
            engine: self.engine.clone(),
            ..Default::default()
        };
        db.attach(link(&replica), options).unwrap();
        (db, index)
    }

    /// The database of device `id` in `dir`, opened offline (not attached).
    pub fn offline(&self, id: &str, dir: usize) -> Db {
        let config = Config::with_schema((*self.schema).clone()).context("deviceId", id);
        Db::open(self.dirs[dir].path(), config).unwrap()
    }

    /// A device attached through the transport `make` builds for its replica id.
    pub fn device_via<T: ferry::Transport>(
        &mut self,
        id: &str,
        dir: Option<usize>,
        make: impl FnOnce(&str) -> T,
    ) -> (Db, usize) {
        let index = dir.unwrap_or_else(|| {
            self.dirs.push(tempfile::tempdir().unwrap());
            self.dirs.len() - 1
        });
        let mut config = Config {
            crypto: self.crypto.clone(),
            ..Config::with_schema((*self.schema).clone()).context("deviceId", id)
        };
        if let Some(clock) = &self.clock {
            config.clock = clock.clone();
        }
        let db = Db::open(self.dirs[index].path(), config).unwrap();
        let replica = db.status().replica;
        let options = SyncOptions {
            engine: self.engine.clone(),
            ..Default::default()
        };
        db.attach(make(&replica), options).unwrap();
        (db, index)
    }

    /// Writes `change` as a cloud service would (Ferry's writer, or through the relay with
    /// a service token for the change's scope, as replica `cloud`).
    pub fn write(&self, change: Change) {
        let transport = self.service(&change.scope);
        let results = self.rt.block_on(async {
            ferry::Transport::connect(&transport).await.unwrap();
            ferry::Transport::push(&transport, vec![change])
                .await
                .unwrap()
        });
        assert!(
            matches!(results[0].2, ferry::replication::PushOutcome::Applied),
            "{results:?}"
        );
    }

    /// A cloud service's transport, as replica `cloud`, granted `scope` (Ferry's writer
    /// and the in-process clouds take every scope).
    fn service(&self, scope: &str) -> Link {
        let scopes = self.relay.as_ref().map(|_| [scope.to_string()].into());
        self.grant_maker(Grant::service("cloud", scopes))("cloud")
    }

    /// The change the cloud holds for `key` in `scope` (a tombstone is a `Delete`), read
    /// through the transport as a new device would: a snapshot of the scope.
    pub fn held(&self, key: &Key, scope: &str) -> Option<Change> {
        let link = self.service(scope);
        self.rt.block_on(async {
            ferry::Transport::connect(&link).await.unwrap();
            let mut after = Hlc::ZERO;
            loop {
                let from = ferry::replication::PullFrom::Snapshot(after);
                let page = ferry::Transport::pull(&link, scope, from, 500)
                    .await
                    .unwrap();
                if let Some((_, change)) = page.changes.iter().find(|(_, c)| c.key == *key) {
                    return Some(change.clone());
                }
                match (page.more, page.changes.last()) {
                    (true, Some((seq, _))) => after = *seq,
                    _ => return None,
                }
            }
        })
    }

    /// Deletes the row of `key` outright from a DynamoDB table, as DynamoDB's TTL purges a
    /// tombstone (DynamoDB Local runs no TTL). The other clouds purge by themselves, past
    /// their horizon.
    pub fn purge(&self, key: &Key) {
        if !matches!(self.via, Via::Dynamo | Via::RelayDynamo) {
            return;
        }
        let layout = ferry::dynamo::Layout::new(&self.schema);
        let request = (self.dynamo.client.delete_item())
            .table_name(&self.table)
            .set_key(Some(layout.key_attrs(key)))
            .send();
        self.rt.block_on(request).unwrap();
    }

    /// The raw row of `key`, as a cloud app reads it.
    pub fn row(&self, key: &Key) -> Option<ferry::dynamo::AttrMap> {
        let layout = ferry::dynamo::Layout::new(&self.schema);
        self.rt
            .block_on(
                self.dynamo
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .set_key(Some(layout.key_attrs(key)))
                    .consistent_read(true)
                    .send(),
            )
            .unwrap()
            .item
    }
}

pub fn key(pk: &str, sk: &str) -> Key {
    Key {
        hash: Value::S(pk.into()),
        sort: Some(Value::S(sk.into())),
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A cloud change of the `model` item at (`pk`, `sk`) with `fields`, stamped `at_ms` by
/// replica `cloud`; `None` fields: a delete.
pub fn cloud_change(
    model: &str,
    pk: &str,
    sk: &str,
    fields: Option<serde_json::Value>,
    at_ms: u64,
) -> Change {
    let key = key(pk, sk);
    let item = fields.map(|fields| {
        let mut item = Item::new();
        item.insert("pk".into(), key.hash.clone());
        item.insert("sk".into(), key.sort.clone().unwrap());
        item.insert("_type".into(), Value::S(model.into()));
        for (name, value) in fields.as_object().unwrap() {
            let value = match value {
                serde_json::Value::Number(n) => Value::N(n.to_string().parse().unwrap()),
                other => Value::S(other.as_str().unwrap().into()),
            };
            item.insert(name.clone(), value);
        }
        item
    });
    Change {
        model: model.into(),
        key,
        op: if item.is_some() {
            ChangeOp::Put
        } else {
            ChangeOp::Delete
        },
        version: Version {
            hlc: Hlc::new(at_ms, 0),
            replica: ReplicaId::parse("cloud").unwrap(),
        },
        scope: "*".into(),
        item,
        base: None,
    }
}

/// A cloud change of a `Config` item, stamped now by the cloud.
pub fn config_change(name: &str, value: Option<&str>) -> Change {
    let fields = value.map(|value| json!({ "name": name, "value": value }));
    cloud_change(
        "Config",
        "config#",
        &format!("config#{name}"),
        fields,
        now_ms(),
    )
}

pub fn text(value: Option<serde_json::Value>, field: &str) -> Option<String> {
    value?.get(field)?.as_str().map(String::from)
}

#[test]
fn a_table_from_the_schema_matches_it_and_a_different_one_does_not() {
    let cloud = Cloud::new("check", Settings::default());
    let differences = cloud.rt.block_on(cloud.table().check()).unwrap();
    assert_eq!(differences, Vec::<String>::new());
    let other = schema(
        &SCHEMA
            .replace("project: ['name']", "project: 'all'")
            .replace("gs1:", "gs2:"),
    );
    let table = Table {
        dynamo: &cloud.dynamo,
        name: &cloud.table,
        schema: &other,
    };
    let differences = cloud.rt.block_on(table.check()).unwrap();
    assert!(
        differences.iter().any(|d| d == "index gs2 is missing"),
        "{differences:?}"
    );
    assert!(
        differences
            .iter()
            .any(|d| d == "index gs1 is not in the schema"),
        "{differences:?}"
    );
    let missing = Table {
        name: "no-such-table",
        ..table
    };
    let error = cloud.rt.block_on(missing.check()).unwrap_err().to_string();
    assert!(
        error.contains("no-such-table") && error.contains("does not exist"),
        "{error}"
    );
}

#[test]
fn rows_carry_ferrys_attributes_and_tombstones_keep_only_keys() {
    let mut cloud = Cloud::new("rows", Settings::default());
    let (a, _) = cloud.device("a", None);
    a.create("Note", json!({"id": "n1", "text": "a's own"}))
        .unwrap();
    a.create("Fault", json!({"id": "f1", "code": 1})).unwrap();
    a.create("Shared", json!({"id": "s1", "name": "gone soon"}))
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    a.remove("Shared", json!({"id": "s1"}), &Default::default())
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    let row = cloud.row(&key("note#a", "note#n1")).unwrap();
    for attr in ["_ver", "_src", "_scope", "_seq", "text", "_type", "created"] {
        assert!(row.contains_key(attr), "{attr} in {row:?}");
    }
    let fault = cloud.row(&key("fault#a", "fault#f1")).unwrap();
    assert_eq!(fault["code"], aws_n("1"), "{fault:?}");
    let tombstone = cloud.row(&key("shared#", "shared#s1")).unwrap();
    assert!(
        tombstone.contains_key("_del") && tombstone.contains_key("_ttl"),
        "{tombstone:?}"
    );
    assert!(
        !tombstone.contains_key("name"),
        "a tombstone keeps only keys: {tombstone:?}"
    );
}

fn aws_n(text: &str) -> ferry::dynamo::sdk::types::AttributeValue {
    ferry::dynamo::sdk::types::AttributeValue::N(text.into())
}

/// The direct transport with the faults of a real network and a real GSI: the answers of
/// the first pushes lost after their writes landed, and a feed that shows each row only
/// some time (up to `delay_ms`, by key) after its `_seq`, as a lagging index and a late
/// writer's clock together do.
pub struct Faulty<T> {
    inner: T,
    answers_to_lose: AtomicUsize,
    delay_ms: u64,
}

impl<T: ferry::Transport> Faulty<T> {
    pub fn new(inner: T, answers_to_lose: usize, delay_ms: u64) -> Faulty<T> {
        Faulty {
            inner,
            answers_to_lose: AtomicUsize::new(answers_to_lose),
            delay_ms,
        }
    }

    fn delay_of(&self, key: &Key) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        hasher.finish() % (self.delay_ms + 1)
    }
}

impl<T: ferry::Transport> ferry::Transport for Faulty<T> {
    async fn connect(&self) -> Result<ferry::replication::Session, TransportError> {
        self.inner.connect().await
    }

    async fn push(
        &self,
        changes: Vec<Change>,
    ) -> Result<ferry::replication::PushResults, TransportError> {
        let results = self.inner.push(changes).await?;
        let lose = |n: usize| n.checked_sub(1);
        match self
            .answers_to_lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, lose)
        {
            Ok(_) => Err(TransportError::Unavailable("the answer was lost".into())),
            Err(_) => Ok(results),
        }
    }

    async fn pull(
        &self,
        scope: &str,
        from: ferry::replication::PullFrom,
        limit: usize,
    ) -> Result<ferry::replication::PullPage, TransportError> {
        let mut page = self.inner.pull(scope, from, limit).await?;
        let now = now_ms();
        page.changes
            .retain(|(seq, change)| seq.physical_ms() + self.delay_of(&change.key) <= now);
        Ok(page)
    }
}

pub fn shared_names(db: &Db) -> Vec<String> {
    let options = ferry::FindOptions {
        limit: Some(10_000),
        ..Default::default()
    };
    let page = db.find("Shared", json!({}), &options).unwrap();
    page.items
        .iter()
        .filter_map(|item| text(Some(item.clone()), "id"))
        .collect()
}

#[test]
fn late_visibility_and_writer_skew_lose_nothing() {
    // W = 3 s covers a writer 1.5 s late plus an index 1 s behind.
    let settings = Settings {
        horizon_ms: 60_000,
        window_ms: 3_000,
    };
    let mut cloud = Cloud::new("late", settings);
    let transport = cloud.transport_maker();
    let (a, _) = cloud.device_via("a", None, |replica| {
        let late = transport(replica);
        late.clock().set_skew_ms(-1_500);
        late
    });
    // b re-reads nothing behind its cursor: only the feed's window keeps late rows in view.
    cloud.engine.catchup_window_ms = 0;
    let transport = cloud.transport_maker();
    let (b, _) = cloud.device_via("b", None, |replica| {
        Faulty::new(transport(replica), 0, 2_500)
    });
    let mut written = Vec::new();
    for burst in 0..6 {
        for i in 0..10 {
            let id = format!("s{burst}-{i}");
            a.create("Shared", json!({"id": id, "name": "late"}))
                .unwrap();
            written.push(id);
        }
        a.sync(SYNC_TIMEOUT).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = shared_names(&b);
    while seen.len() < written.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        seen = shared_names(&b);
    }
    written.sort();
    seen.sort();
    assert_eq!(seen, written, "every late write reached b");
}

impl Cloud {
    /// A plain SDK `PutItem` of `item`, as a cloud app without Ferry writes.
    fn sdk_put(&self, item: serde_json::Value) {
        let attrs = item
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), sdk_attr(v)))
            .collect();
        let request = (self.dynamo.client.put_item())
            .table_name(&self.table)
            .set_item(Some(attrs))
            .send();
        self.rt.block_on(request).unwrap();
    }
}

fn sdk_attr(value: &serde_json::Value) -> ferry::dynamo::sdk::types::AttributeValue {
    use ferry::dynamo::sdk::types::AttributeValue;
    match value {
        serde_json::Value::Number(n) => AttributeValue::N(n.to_string()),
        other => AttributeValue::S(other.as_str().unwrap().to_string()),
    }
}

/// A follower of the table on a thread of its own, stopped and joined on drop.
struct FollowerThread {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FollowerThread {
    fn start(cloud: &Cloud) -> FollowerThread {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, table, schema) = (stop.clone(), cloud.table.clone(), cloud.schema.clone());
        let thread = std::thread::spawn(move || {
            let rt = runtime();
            let dynamo = rt.block_on(Dynamo::connect(&endpoint()));
            let writer = ferry::dynamo::Writer::new(dynamo, &table, schema, "follower");
            let follower = ferry::dynamo::Follower::new(writer);
            let stopped = || flag.load(Ordering::SeqCst);
            rt.block_on(follower.run(&stopped, &mut |_| {})).unwrap();
        });
        FollowerThread {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FollowerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !std::thread::panicking() {
                result.unwrap();
            }
        }
    }
}

/// Waits until `ready` holds on `db` (which syncs in the background), or panics.
fn eventually(what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + SYNC_TIMEOUT;
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen in time"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn plain_sdk_puts_updates_and_deletes_reach_a_device_through_the_follower() {
    let mut cloud = Cloud::with_stream("follow", Settings::default(), Stream::ForFollower);
    // Before the follower ever ran: its first run reconciles by a scan.
    cloud.sdk_put(json!({"pk": "config#", "sk": "config#early", "_type": "Config", "name": "early", "value": "scanned"}));
    let (a, _) = cloud.device("a", None);
    for id in ["s1", "s2"] {
        a.create("Shared", json!({"id": id, "name": "by a"}))
            .unwrap();
    }
    a.sync(SYNC_TIMEOUT).unwrap();
    let _follower = FollowerThread::start(&cloud);

    cloud.sdk_put(json!({"pk": "config#", "sk": "config#late", "_type": "Config", "name": "late", "value": "streamed"}));
    let update = (cloud.dynamo.client.update_item())
        .table_name(&cloud.table)
        .set_key(Some(
            ferry::dynamo::Layout::new(&cloud.schema).key_attrs(&key("shared#", "shared#s1")),
        ))
        .update_expression("SET #n = :n")
        .expression_attribute_names("#n", "name")
        .expression_attribute_values(":n", sdk_attr(&json!("edited in the cloud")))
        .send();
    cloud.rt.block_on(update).unwrap();
    cloud.purge(&key("shared#", "shared#s2"));

    let value = |name: &str| text(a.get("Config", json!({"name": name})).unwrap(), "value");
    eventually("the scanned put", || {
        value("early").as_deref() == Some("scanned")
    });
    eventually("the streamed put", || {
        value("late").as_deref() == Some("streamed")
    });
    eventually("the in-place update", || {
        text(a.get("Shared", json!({"id": "s1"})).unwrap(), "name").as_deref()
            == Some("edited in the cloud")
    });
    eventually("the hard delete", || {
        a.get("Shared", json!({"id": "s2"})).unwrap().is_none()
    });
    let tombstone = cloud
        .row(&key("shared#", "shared#s2"))
        .expect("the follower wrote a tombstone");
    assert!(tombstone.contains_key("_del"), "{tombstone:?}");
    assert_eq!(a.status().conflicts, 0);
}

/// A follower past its first run's scan (which has no stream image to take a replaced
/// version from), following the stream: a plain write has reached device `a` through it.
fn follower_on_the_stream(cloud: &Cloud, a: &Db) -> FollowerThread {
    let follower = FollowerThread::start(cloud);
    cloud.sdk_put(json!({"pk": "config#", "sk": "config#warm", "_type": "Config", "name": "warm", "value": "up"}));
    eventually("the follower runs", || {
        a.get("Config", json!({"name": "warm"})).unwrap().is_some()
    });
    follower
}

#[test]
fn a_plain_sdk_replace_right_after_a_device_write_reaches_the_device() {
    let mut cloud = Cloud::with_stream("follow-replace", Settings::default(), Stream::ForFollower);
    // The device's clock runs 3 s ahead of the server's (well inside the bound): its
    // versions are ahead of the time the follower stamps at.
    cloud.clock = Some(Arc::new(|| now_ms() as i64 + 3_000));
    let (a, _) = cloud.device("a", None);
    let _follower = follower_on_the_stream(&cloud, &a);
    a.create("Shared", json!({"id": "s1", "name": "by a"}))
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    cloud.sdk_put(json!({"pk": "shared#", "sk": "shared#s1", "_type": "Shared", "id": "s1", "name": "replaced"}));
    eventually("the replace reaches the device", || {
        text(a.get("Shared", json!({"id": "s1"})).unwrap(), "name").as_deref() == Some("replaced")
    });
}

#[test]
fn a_plain_sdk_write_back_of_a_stale_row_reaches_the_device() {
    let mut cloud = Cloud::with_stream("follow-stale", Settings::default(), Stream::ForFollower);
    let (a, _) = cloud.device("a", None);
    let _follower = follower_on_the_stream(&cloud, &a);
    a.create("Shared", json!({"id": "s1", "name": "first"}))
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    // A cloud app reads the row (with its `_ver`), the device writes again, then the app
    // writes its copy back, stale `_ver` and all.
    let mut stale = cloud.row(&key("shared#", "shared#s1")).unwrap();
    a.update(
        "Shared",
        json!({"id": "s1", "name": "second"}),
        &ferry::WriteOptions::default(),
    )
    .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    stale.insert(
        "name".into(),
        ferry::dynamo::sdk::types::AttributeValue::S("written back".into()),
    );
    let request = (cloud.dynamo.client.put_item())
        .table_name(&cloud.table)
        .set_item(Some(stale))
        .send();
    cloud.rt.block_on(request).unwrap();
    eventually("the write-back reaches the device", || {
        text(a.get("Shared", json!({"id": "s1"})).unwrap(), "name").as_deref()
            == Some("written back")
    });
}

/// An application attaches the table in a line, with the usual AWS configuration.
#[test]
fn a_device_connects_to_dynamodb_in_a_line() {
    use ferry::Attach;
    let cloud = Cloud::new("in-a-line", Settings::default());
    let dir = tempfile::tempdir().unwrap();
    let config = Config::with_schema((*cloud.schema).clone()).context("deviceId", "a");
    let db = Db::open(dir.path(), config).unwrap();
    let url = endpoint().url.unwrap();
    db.connect(
        ferry::dynamodb(&cloud.table).endpoint(&url),
        SyncOptions::default(),
    )
    .unwrap();
    db.create("Shared", json!({"id": "s1", "name": "in a line"}))
        .unwrap();
    db.sync(SYNC_TIMEOUT).unwrap();
    assert!(cloud.row(&key("shared#", "shared#s1")).is_some());
}

/// The schema as a OneTable app loads it: JSON, without Ferry's `control` section.
fn onetable_schema(dir: &std::path::Path, schema: &Schema) -> std::path::PathBuf {
    let mut document = schema.document().clone();
    document.as_object_mut().unwrap().remove("control");
    let path = dir.join("onetable-schema.json");
    std::fs::write(&path, document.to_string()).unwrap();
    path
}

/// Runs the OneTable app (`js/onetable.cjs`, the npm dynamodb-onetable package that the
/// test command installs) against the table; returns what it printed.
fn onetable(cloud: &Cloud, schema: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let modules = std::env::var("FERRY_TEST_NODE_MODULES").expect(
        "FERRY_TEST_NODE_MODULES is not set: run the suite with `cargo xtask test`, which \
         installs dynamodb-onetable",
    );
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/js/onetable.cjs");
    let out = std::process::Command::new("node")
        .arg(script)
        .arg(endpoint().url.unwrap())
        .arg(&cloud.table)
        .arg(schema)
        .args(args)
        .env("NODE_PATH", modules)
        .env("ONETABLE_CRYPTO", CRYPTO)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "OneTable failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("OneTable printed {stdout}: {e}"))
}

#[test]
fn a_onetable_app_reads_what_a_device_wrote_and_its_writes_reach_the_device() {
    let mut cloud = Cloud::with_stream("onetable", Settings::default(), Stream::ForFollower);
    let dir = tempfile::tempdir().unwrap();
    let schema_file = onetable_schema(dir.path(), &cloud.schema);
    let (a, _) = cloud.device("a", None);
    a.create("Shared", json!({"id": "s1", "name": "from the device"}))
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    let item = onetable(&cloud, &schema_file, &["get", "Shared", r#"{"id":"s1"}"#]);
    assert_eq!(item["name"], json!("from the device"), "{item}");
    assert!(item.get("created").is_some(), "timestamps travel: {item}");

    let _follower = FollowerThread::start(&cloud);
    let created = onetable(
        &cloud,
        &schema_file,
        &["create", "Shared", r#"{"id":"s2","name":"from OneTable"}"#],
    );
    assert_eq!(created["name"], json!("from OneTable"), "{created}");
    eventually("the OneTable write reaching the device", || {
        text(a.get("Shared", json!({"id": "s2"})).unwrap(), "name").as_deref()
            == Some("from OneTable")
    });
    assert_eq!(a.status().quarantined, 0, "{:?}", a.quarantine(10));
}

/// OneTable's key configuration, shared by the devices and the OneTable app.
const CRYPTO: &str =
    r#"{"primary": {"cipher": "aes-256-gcm", "password": "correct horse battery staple"}}"#;

fn crypto() -> ferry::schema::Crypto {
    ferry::schema::Crypto::from_json(&serde_json::from_str(CRYPTO).unwrap()).unwrap()
}

#[test]
fn crypt_fields_are_sealed_on_the_device_and_in_the_cloud_and_onetable_reads_them() {
    let with_pin = SCHEMA.replace(
        "id: { type: 'string', required: true }, name: { type: 'string' },",
        "id: { type: 'string', required: true }, name: { type: 'string' }, pin: { type: 'string', crypt: true },",
    );
    assert_ne!(with_pin, SCHEMA, "the schema gained a crypt field");
    let crypt_schema = schema(&with_pin);

    // No key: the database does not open, and says which field needs one.
    let dir = tempfile::tempdir().unwrap();
    let error = Db::open(dir.path(), Config::with_schema(crypt_schema.clone()))
        .err()
        .expect("no key, no database");
    assert!(
        error.to_string().contains("Shared.pin is a crypt field"),
        "{error}"
    );

    let mut cloud = Cloud::with_schema(
        "crypt",
        Settings::default(),
        Stream::ForFollower,
        crypt_schema,
    );
    cloud.crypto = Some(crypto());
    let (a, a_dir) = cloud.device("a", None);
    let created = a
        .create("Shared", json!({"id": "s1", "name": "n", "pin": "4321"}))
        .unwrap();
    assert_eq!(created["pin"], json!("4321"), "the caller sees the text");
    a.sync(SYNC_TIMEOUT).unwrap();
    let row = cloud.row(&key("shared#", "shared#s1")).unwrap();
    let sealed = row["pin"].as_s().unwrap();
    assert!(
        sealed.starts_with("primary:") && !sealed.contains("4321"),
        "sealed in the cloud: {sealed}"
    );

    let schema_file = onetable_schema(dir.path(), &cloud.schema);
    let item = onetable(&cloud, &schema_file, &["get", "Shared", r#"{"id":"s1"}"#]);
    assert_eq!(
        item["pin"],
        json!("4321"),
        "OneTable with the same key reads it: {item}"
    );
    let _follower = FollowerThread::start(&cloud);
    onetable(
        &cloud,
        &schema_file,
        &["create", "Shared", r#"{"id":"s2","name":"m","pin":"8765"}"#],
    );
    eventually("OneTable's sealed write reaching the device", || {
        text(a.get("Shared", json!({"id": "s2"})).unwrap(), "pin").as_deref() == Some("8765")
    });

    // Reopened with another key, the database refuses rather than show ciphertext.
    drop(a);
    let wrong = ferry::schema::Crypto::from_json(
        &json!({"primary": {"cipher": "aes-256-gcm", "password": "wrong"}}),
    )
    .unwrap();
    let config = Config {
        crypto: Some(wrong),
        ..Config::default()
    };
    let error = Db::open(cloud.dirs[a_dir].path(), config)
        .err()
        .expect("a wrong key, no database");
    assert!(
        error.to_string().contains("crypto key is not the one"),
        "{error}"
    );
}

#[test]
fn the_follower_adopts_the_rows_latest_content_not_an_older_stream_image() {
    let mut cloud = Cloud::with_stream("follow-latest", Settings::default(), Stream::ForFollower);
    let (a, _) = cloud.device("a", None);
    a.create("Shared", json!({"id": "s1", "name": "by a"}))
        .unwrap();
    a.sync(SYNC_TIMEOUT).unwrap();
    let layout = ferry::dynamo::Layout::new(&cloud.schema);
    for name in ["edited once", "edited twice"] {
        let update = (cloud.dynamo.client.update_item())
            .table_name(&cloud.table)
            .set_key(Some(layout.key_attrs(&key("shared#", "shared#s1"))))
            .update_expression("SET #n = :n")
            .expression_attribute_names("#n", "name")
            .expression_attribute_values(":n", sdk_attr(&json!(name)))
            .send();
        cloud.rt.block_on(update).unwrap();
    }
    // The follower reads both updates from the stream's start, after both happened.
    let _follower = FollowerThread::start(&cloud);
    eventually("the latest update reaching the device", || {
        text(a.get("Shared", json!({"id": "s1"})).unwrap(), "name").as_deref()
            == Some("edited twice")
    });
    std::thread::sleep(Duration::from_millis(600));
    let row = cloud.row(&key("shared#", "shared#s1")).unwrap();
    assert_eq!(
        row["name"],
        sdk_attr(&json!("edited twice")),
        "the row kept the latest write"
    );
}

#[test]
fn an_item_that_fits_the_device_but_not_the_cloud_with_ferrys_attributes_is_refused_by_name() {
    let mut cloud = Cloud::new("oversize", Settings::default());
    let (a, _) = cloud.device("a", None);
    // The longest text the device takes for an uploading model: its item leaves room for
    // Ferry's `_src`, `_scope`, `_seq` and `_base` in the cloud's 400 KiB.
    let mut len = 409_600;
    let mut refusal = None;
    let created = loop {
        let text = "x".repeat(len);
        match a.create("Note", json!({"id": "big", "text": text})) {
            Ok(item) => break item,
            Err(e) if e.code() == "ValidationError" => {
                refusal = Some(e.to_string()); // the last: just past the cloud's room
                len -= 16;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let refusal = refusal.unwrap_or_default();
    assert!(
        refusal.contains("note#big") && refusal.contains("cloud") && refusal.contains("409600"),
        "refused when written, naming the item and the limit: {refusal}"
    );
    assert!(len > 409_000, "the device refused only for size: {len}");
    assert_eq!(created["id"], json!("big"));
    a.sync(SYNC_TIMEOUT).unwrap();
    let row = cloud
        .row(&key("note#a", "note#big"))
        .expect("the largest item fits the cloud");
    assert!(row.contains_key("_seq"), "written with Ferry's attributes");
    assert_eq!(a.status().quarantined, 0);
}
