//! The demo's cloud: the in-memory reference cloud, or a DynamoDB table (`--dynamodb`).

use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, bail};
use ferry::journal::{Change, ChangeOp};
use ferry::schema::{Context, PutMode};
use ferry::types::{Hlc, ReplicaId, Value, Version};
use ferry::{Attach, Db, EngineConfig, MemoryCloud, MemoryTransport, Schema, SyncOptions};
use serde_json::Value as Json;

/// Which cloud the demo syncs with.
pub enum DemoCloud {
    /// The in-memory reference cloud, in this process.
    Memory,
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
    Memory(Arc<Mutex<MemoryCloud>>),
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
    /// Opens `cloud` for `schema` (creates the DynamoDB table if needed).
    pub fn open(cloud: &DemoCloud, schema: &Schema) -> Result<CloudSide> {
        match cloud {
            DemoCloud::Memory => {
                let _ = schema; // the reference cloud keeps no table of the schema
                let mut memory = MemoryCloud::default();
                memory.set_time_ms(now_ms() as u64);
                Ok(CloudSide::Memory(Arc::new(Mutex::new(memory))))
            }
            #[cfg(feature = "dynamo")]
            DemoCloud::Dynamo { table, endpoint } => {
                use ferry::dynamo::{CloudReplica, Dynamo, Settings, Stream, Table, Writer};
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
                let replica = rt.block_on(CloudReplica::open(writer, None))?;
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
            CloudSide::Memory(_) => "the in-memory reference cloud".into(),
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
            CloudSide::Memory(cloud) => {
                db.attach(MemoryTransport::new(cloud.clone()), sync_options())?
            }
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
            CloudSide::Memory(cloud) => {
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
                let change = Change {
                    model: model.name.clone(),
                    key,
                    op: ChangeOp::Put,
                    version,
                    scope,
                    item: Some(model.cloud_view(&item)),
                };
                let mut cloud = cloud
                    .lock()
                    .map_err(|_| anyhow::anyhow!("the cloud's lock"))?;
                cloud.set_time_ms(now as u64);
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
            CloudSide::Memory(cloud) => {
                let model = schema.model(model)?;
                let props = props.as_object().context("cloud props are an object")?;
                let key = model
                    .key_query(schema, props, &Context::new(), None)?
                    .full_key()
                    .context("the cloud read names its item's key")?;
                let cloud = cloud
                    .lock()
                    .map_err(|_| anyhow::anyhow!("the cloud's lock"))?;
                Ok(cloud
                    .get(&key)
                    .and_then(|change| change.item.as_ref())
                    .map(|item| Json::Object(model.to_json(schema, item, false))))
            }
            #[cfg(feature = "dynamo")]
            CloudSide::Dynamo(side) => {
                Ok(side.rt.block_on(side.replica.get(model, props, false))?)
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
