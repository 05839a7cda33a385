//! The demo's cloud: an embedded relay in this process (the default), a DynamoDB table
//! (`--dynamodb`), or, in a build without the relay, the in-memory reference cloud.

use std::path::Path;
#[cfg(any(feature = "dynamo", not(feature = "relay")))]
use std::sync::Arc;
#[cfg(not(feature = "relay"))]
use std::sync::Mutex;

#[cfg(any(feature = "dynamo", not(feature = "relay")))]
use anyhow::Context as _;
use anyhow::Result;
#[cfg(not(feature = "relay"))]
use anyhow::bail;
#[cfg(not(feature = "relay"))]
use ferry::journal::{Change, ChangeOp};
#[cfg(not(feature = "relay"))]
use ferry::schema::{Context, PutMode};
#[cfg(not(feature = "relay"))]
use ferry::types::{Hlc, ReplicaId, Value, Version};
use ferry::{Attach, Db, EngineConfig, Schema, SyncOptions};
#[cfg(not(feature = "relay"))]
use ferry::{MemoryCloud, MemoryTransport};
use serde_json::Value as Json;

/// Which cloud the demo syncs with.
pub enum DemoCloud {
    /// Ferry's relay over its embedded store, on loopback in this process; or, in a build
    /// without the relay, the in-memory reference cloud.
    Local,
    /// A DynamoDB table (created from the schema if it does not exist).
    #[cfg(feature = "dynamo")]
    Dynamo {
        /// The table.
        table: String,
        /// Where DynamoDB is.
        endpoint: ferry::dynamo::Endpoint,
    },
}

/// The cloud, open: what the story writes and checks through.
pub enum CloudSide {
    #[cfg(not(feature = "relay"))]
    Memory(Arc<Mutex<MemoryCloud>>),
    #[cfg(feature = "relay")]
    Relay(Box<super::relay::RelaySide>),
    #[cfg(feature = "dynamo")]
    Dynamo(Box<DynamoSide>),
}

/// A DynamoDB table as the demo's cloud: a cloud replica for its writes and checks.
#[cfg(feature = "dynamo")]
pub struct DynamoSide {
    rt: tokio::runtime::Runtime,
    replica: ferry::dynamo::CloudReplica,
    table: String,
    endpoint: ferry::dynamo::Endpoint,
}

/// Devices poll often, so that the story moves at a reader's pace.
fn sync_options() -> SyncOptions {
    SyncOptions {
        engine: EngineConfig {
            poll_interval_ms: 500,
            sync_delay_ms: 100,
            ..EngineConfig::default()
        },
        ..SyncOptions::default()
    }
}

impl CloudSide {
    /// Opens `cloud` for `schema` in `root` (creates the DynamoDB table if needed), for a
    /// cloud service that reads the scopes of `devices` and the shared one.
    pub fn open(
        cloud: &DemoCloud,
        schema: &Schema,
        root: &Path,
        devices: &[&str],
    ) -> Result<CloudSide> {
        match cloud {
            #[cfg(feature = "relay")]
            DemoCloud::Local => {
                let relay = super::relay::RelaySide::start(&root.join("relay"), schema, devices)?;
                Ok(CloudSide::Relay(Box::new(relay)))
            }
            #[cfg(not(feature = "relay"))]
            DemoCloud::Local => {
                let _ = (schema, root, devices); // the reference cloud reads every scope
                let mut memory = MemoryCloud::default();
                memory.set_time_ms(now_ms() as u64);
                Ok(CloudSide::Memory(Arc::new(Mutex::new(memory))))
            }
            #[cfg(feature = "dynamo")]
            DemoCloud::Dynamo { table, endpoint } => {
                let _ = devices; // the table's credentials reach every scope
                use ferry::dynamo::{Dynamo, DynamoRows, Settings, Stream, Table, Writer};
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let dynamo = rt.block_on(Dynamo::connect(endpoint));
                let target = Table {
                    dynamo: &dynamo,
                    name: table,
                    schema,
                };
                let mut progress = |line: &str| println!("  {line}");
                let create = target.create(Settings::default(), Stream::Off, &mut progress);
                rt.block_on(create)
                    .with_context(|| format!("preparing table {table}"))?;
                let writer = Writer::new(dynamo, table, Arc::new(schema.clone()), "demo-cloud");
                let replica = rt.block_on(DynamoRows::cloud_replica(writer, None))?;
                Ok(CloudSide::Dynamo(Box::new(DynamoSide {
                    rt,
                    replica,
                    table: table.clone(),
                    endpoint: endpoint.clone(),
                })))
            }
        }
    }

    /// What the story says it syncs through.
    pub fn describe(&self) -> String {
        match self {
            #[cfg(not(feature = "relay"))]
            CloudSide::Memory(_) => "the in-memory reference cloud".into(),
            #[cfg(feature = "relay")]
            CloudSide::Relay(relay) => relay.describe(),
            #[cfg(feature = "dynamo")]
            CloudSide::Dynamo(side) => format!(
                "DynamoDB table {}{}",
                side.table,
                side.endpoint
                    .url
                    .as_ref()
                    .map(|u| format!(" at {u}"))
                    .unwrap_or_default()
            ),
        }
    }

    /// Attaches `db` to this cloud, syncing in the background.
    pub fn attach(&self, db: &Db) -> Result<()> {
        match self {
            #[cfg(not(feature = "relay"))]
            CloudSide::Memory(cloud) => {
                db.attach(MemoryTransport::new(cloud.clone()), sync_options())?
            }
            #[cfg(feature = "relay")]
            CloudSide::Relay(relay) => db.attach(relay.transport(db)?, sync_options())?,
            #[cfg(feature = "dynamo")]
            CloudSide::Dynamo(side) => {
                let schema = Arc::new(db.schema().clone());
                let replica = db.status().replica;
                let endpoint = side.endpoint.clone();
                let transport =
                    ferry::dynamo::DynamoTransport::new(endpoint, &side.table, schema, &replica);
                db.attach(transport, sync_options())?
            }
        }
        Ok(())
    }

    /// A cloud service's write of a `model` item (prepared by the schema, versioned).
    pub fn put(&self, schema: &Schema, model: &str, props: &Json) -> Result<()> {
        match self {
            #[cfg(feature = "relay")]
            CloudSide::Relay(relay) => {
                let _ = schema; // the service prepares items by its own copy
                relay.put(model, props)
            }
            #[cfg(not(feature = "relay"))]
            CloudSide::Memory(cloud) => {
                let change = cloud_change(schema, model, props)?;
                let mut cloud = cloud
                    .lock()
                    .map_err(|_| anyhow::anyhow!("the cloud's lock"))?;
                cloud.set_time_ms(now_ms() as u64);
                match cloud.write(change) {
                    ferry::replication::PushOutcome::Applied => Ok(()),
                    other => bail!("the cloud refused the write: {other:?}"),
                }
            }
            #[cfg(feature = "dynamo")]
            CloudSide::Dynamo(side) => {
                let ops = ferry::UpdateOps::default();
                side.rt
                    .block_on(side.replica.update(model, props, &ops, true))?;
                Ok(())
            }
        }
    }

    /// The cloud's item of `model` at the key `props` give, if it holds one.
    pub fn get(&self, schema: &Schema, model: &str, props: &Json) -> Result<Option<Json>> {
        match self {
            #[cfg(feature = "relay")]
            CloudSide::Relay(relay) => {
                let _ = schema; // the service reads by its own copy
                relay.get(model, props)
            }
            #[cfg(not(feature = "relay"))]
            CloudSide::Memory(cloud) => {
                let model = schema.model(model)?;
                let props = props.as_object().context("cloud props are an object")?;
                let key = (model.key_query(schema, props, &Context::new(), None)?)
                    .full_key()
                    .context("the cloud read names its item's key")?;
                let cloud = cloud
                    .lock()
                    .map_err(|_| anyhow::anyhow!("the cloud's lock"))?;
                let item = cloud.get(&key).and_then(|change| change.item.clone());
                Ok(item.map(|item| {
                    Json::Object(model.to_json(&ferry::types::ItemRef::of(&item), false))
                }))
            }
            #[cfg(feature = "dynamo")]
            CloudSide::Dynamo(side) => {
                let _ = schema;
                Ok(side.rt.block_on(side.replica.get(model, props, false))?)
            }
        }
    }
}

/// A cloud service's write of a `model` item, prepared by the schema and versioned.
#[cfg(not(feature = "relay"))]
fn cloud_change(schema: &Schema, model: &str, props: &Json) -> Result<Change> {
    let model = schema.model(model)?;
    let ctx = Context::new();
    let props = props.as_object().context("cloud props are an object")?;
    let now = now_ms();
    let mut item = model.prepare_put(schema, props, &ctx, now, PutMode::Put)?;
    let version = Version {
        hlc: Hlc::new(now as u64, 0),
        replica: ReplicaId::parse("demo-cloud")?,
    };
    item.insert("_ver".into(), Value::S(version.to_text()));
    let scope = model.scope_of(&item, &ctx).map_err(anyhow::Error::msg)?;
    let key = model
        .key_query(schema, props, &ctx, None)?
        .full_key()
        .context("the cloud write names its item's key")?;
    Ok(Change {
        model: model.name.clone(),
        key,
        op: ChangeOp::Put,
        version,
        scope,
        item: Some(model.cloud_view(&item)),
        base: None,
    })
}

#[cfg(not(feature = "relay"))]
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
