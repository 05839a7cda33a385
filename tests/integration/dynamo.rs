//! Replication through Amazon's DynamoDB Local (started by `cargo xtask test`): the table
//! from the schema, the direct transport, and the layout a cloud app reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferry::Attach;
use ferry::dynamo::{Dynamo, DynamoTransport, Endpoint, Settings, Table};
use ferry::journal::{Change, ChangeOp};
use ferry::types::{Hlc, Item, Key, ReplicaId, Value, Version};
use ferry::{Config, Db, Schema, SyncOptions};
use serde_json::json;

use crate::support::schema;

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
    },
    control: {
        Note: { sync: 'both' },
        Shared: { sync: 'both', scope: '*' },
        Fault: { sync: 'up' },
        Config: { sync: 'down', scope: '*' },
        Private: { enable: 'device' },
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

/// One DynamoDB table on a schema, and the devices syncing with it.
pub struct Cloud {
    pub rt: tokio::runtime::Runtime,
    pub dynamo: Dynamo,
    pub table: String,
    pub schema: Arc<Schema>,
    dirs: Vec<tempfile::TempDir>,
}

impl Cloud {
    /// A new table of [`SCHEMA`] with `settings`.
    pub fn new(test: &str, settings: Settings) -> Cloud {
        let rt = runtime();
        let dynamo = rt.block_on(Dynamo::connect(&endpoint()));
        let schema = Arc::new(schema(SCHEMA));
        let table = table_name(test);
        let cloud = Cloud {
            rt,
            dynamo,
            table,
            schema,
            dirs: Vec::new(),
        };
        cloud
            .rt
            .block_on(cloud.table().create(settings, &mut |_| {}))
            .unwrap();
        cloud
    }

    pub fn table(&self) -> Table<'_> {
        Table {
            dynamo: &self.dynamo,
            name: &self.table,
            schema: &self.schema,
        }
    }

    /// A transport to the table writing as `id`.
    pub fn transport(&self, id: &str) -> DynamoTransport {
        DynamoTransport::new(self.dynamo.clone(), &self.table, self.schema.clone(), id)
    }

    /// A device attached to the table (new, or reopened from `dir`).
    pub fn device(&mut self, id: &str, dir: Option<usize>) -> (Db, usize) {
        let index = dir.unwrap_or_else(|| {
            self.dirs.push(tempfile::tempdir().unwrap());
            self.dirs.len() - 1
        });
        let config = Config::with_schema(schema(SCHEMA)).context("deviceId", id);
        let db = Db::open(self.dirs[index].path(), config).unwrap();
        let replica = db.status().replica;
        let options = SyncOptions {
            engine: ferry::EngineConfig {
                poll_interval_ms: 200,
                sync_delay_ms: 50,
                ..Default::default()
            },
            ..Default::default()
        };
        db.attach(self.transport(&replica), options).unwrap();
        (db, index)
    }

    /// Writes `change` as a cloud service would (Ferry's writer, replica `cloud`).
    pub fn write(&self, change: Change) {
        let transport = self.transport("cloud");
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

/// A cloud change of a `Config` item, stamped now by the cloud.
pub fn config_change(name: &str, value: Option<&str>) -> Change {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let key = key("config#", &format!("config#{name}"));
    let item = value.map(|value| {
        let mut item = Item::new();
        item.insert("pk".into(), key.hash.clone());
        item.insert("sk".into(), key.sort.clone().unwrap());
        item.insert("_type".into(), Value::S("Config".into()));
        item.insert("name".into(), Value::S(name.into()));
        item.insert("value".into(), Value::S(value.into()));
        item
    });
    Change {
        model: "Config".into(),
        key,
        op: if item.is_some() {
            ChangeOp::Put
        } else {
            ChangeOp::Delete
        },
        version: Version {
            hlc: Hlc::new(now, 0),
            replica: ReplicaId::parse("cloud").unwrap(),
        },
        scope: "*".into(),
        item,
    }
}

fn text(value: Option<serde_json::Value>, field: &str) -> Option<String> {
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
fn two_devices_and_a_cloud_writer_converge() {
    let mut cloud = Cloud::new("converge", Settings::default());
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
    let row = cloud
        .row(&key("note#a", "note#n1"))
        .expect("a's note is in the table");
    for attr in ["_ver", "_src", "_scope", "_seq", "text", "_type", "created"] {
        assert!(row.contains_key(attr), "{attr} in {row:?}");
    }
    assert_eq!(
        cloud.row(&key("private#", "private#p1")),
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
    let tombstone = cloud
        .row(&key("shared#", "shared#s1"))
        .expect("a tombstone row");
    assert!(
        tombstone.contains_key("_del") && tombstone.contains_key("_ttl"),
        "{tombstone:?}"
    );
    assert!(
        !tombstone.contains_key("name"),
        "a tombstone keeps only keys: {tombstone:?}"
    );
}
