//! Ferry: an embedded, DynamoDB-compatible database for devices that replicates to the
//! cloud.
//!
//! A device application opens a [`Db`] with a OneTable schema and reads and writes
//! items through its models, as JSON or as any serde type:
//!
//! ```
//! # fn main() -> Result<(), ferry::Error> {
//! use ferry::Attach;
//! use serde_json::json;
//! let dir = tempfile::tempdir().map_err(|e| ferry::Error::Argument(e.to_string()))?;
//! let schema = ferry::Schema::parse(r#"{
//!     version: '1', format: 'onetable:1.1.0',
//!     indexes: { primary: { hash: 'pk', sort: 'sk' } },
//!     models: { User: {
//!         pk: { type: 'string', value: 'user#${id}' },
//!         sk: { type: 'string', value: 'user#' },
//!         id: { type: 'string', generate: 'ulid' },
//!         name: { type: 'string', required: true },
//!     } },
//!     control: { User: { sync: 'both', scope: '*' } },
//! }"#)?;
//! let db = ferry::Db::open(dir.path(), ferry::Config::with_schema(schema))?;
//! let user = db.create("User", json!({"name": "Ada"}))?;
//! let found = db.get("User", json!({"id": user["id"]}))?;
//! assert_eq!(found.as_ref().map(|u| &u["name"]), Some(&json!("Ada")));
//!
//! // Replication: attach a transport (here the in-memory reference cloud).
//! let cloud = std::sync::Arc::new(std::sync::Mutex::new(ferry::MemoryCloud::default()));
//! db.attach(ferry::MemoryTransport::new(cloud), ferry::SyncOptions::default())?;
//! db.sync(std::time::Duration::from_secs(5))?;
//! # Ok(()) }
//! ```
//!
//! This crate is the thin facade of the workspace: the local database is `ferry-db`, the
//! sync driver `ferry-driver`, the engine `ferry-sync` over the cloud seam `ferry-cloud`,
//! cloud mode over any transport `ferry-service` (`ferry::service`); features choose what
//! is compiled (`tokio`, on by default: the background driver).

pub use ferry_db::{
    Clock, Config, Conflict, Db, Error, ErrorKind, Event, FindOptions, Op, Origin, Page,
    Quarantined, Result, Status, TriggerId, TypedModel, WeakDb, Write, WriteOptions,
};
#[doc(hidden)]
pub use ferry_db::{LocalState, PendingChange};
pub use ferry_driver::{CALL_TIMEOUT, SyncOptions};

/// The DynamoDB side: the table, the cloud writer, the direct transport (feature `dynamo`).
#[cfg(feature = "dynamo")]
pub use ferry_dynamo as dynamo;
pub use ferry_journal as journal;
pub use ferry_schema as schema;
pub use ferry_schema::{Context, Schema, UpdateOps};
pub use ferry_service as service;
pub use ferry_store::Durability;
#[doc(hidden)]
pub use ferry_store::{CommitHook, FsyncHook};
pub use ferry_sync as replication;
pub use ferry_sync::{EngineConfig, MemoryCloud, MemoryTransport, Transport};
pub use ferry_types as types;
/// The WebSocket transport to Ferry's relay (feature `ws`).
#[cfg(feature = "ws")]
pub use ferry_ws as ws;

mod link;
pub use link::Link;
#[cfg(feature = "dynamo")]
pub use link::{DynamoLink, dynamodb};
#[cfg(feature = "ws")]
pub use link::{RelayLink, relay};

/// Attaching a transport to a database: `db.connect(ferry::relay(url, token), options)`,
/// or `db.attach(transport, options)` with a transport built by hand.
pub trait Attach {
    /// From now on, local writes of uploading models go to the cloud through `transport`
    /// and cloud changes of downloading models come down. Pending changes from before
    /// (also from before a crash) are sent first. A database attaches once. With
    /// [`SyncOptions::background`] (the default) a task of its own drives it; otherwise
    /// [`Db::drive`] and [`Db::sync`] do.
    fn attach<T: Transport>(&self, transport: T, options: SyncOptions) -> Result<()>;

    /// [`Attach::attach`] with the transport `link` builds for this database:
    /// [`relay`] (feature `ws`) or [`dynamodb`] (feature `dynamo`).
    fn connect(&self, link: impl Link, options: SyncOptions) -> Result<()>;
}

impl Attach for Db {
    fn attach<T: Transport>(&self, transport: T, options: SyncOptions) -> Result<()> {
        ferry_driver::attach(self, transport, options)
    }

    fn connect(&self, link: impl Link, options: SyncOptions) -> Result<()> {
        link.attach_to(self, options)
    }
}
