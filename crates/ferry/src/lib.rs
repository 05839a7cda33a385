//! Ferry: an embedded, DynamoDB-compatible database for devices.
//!
//! A device application opens a [`Db`] with a OneTable schema and reads and writes
//! items through its models, as JSON or as any serde type:
//!
//! ```
//! # fn main() -> Result<(), ferry::Error> {
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
//! }"#)?;
//! let db = ferry::Db::open(dir.path(), ferry::Config::with_schema(schema))?;
//! let user = db.create("User", json!({"name": "Ada"}))?;
//! let found = db.get("User", json!({"id": user["id"]}))?;
//! assert_eq!(found.as_ref().map(|u| &u["name"]), Some(&json!("Ada")));
//! # Ok(()) }
//! ```
//!
//! Architecture invariant: the facade gives OneTable's operations their meaning (create,
//! update, conditions, pagination, triggers); storage is `ferry-store`'s, schema rules are
//! `ferry-schema`'s.

mod config;
mod db;
mod error;
mod find;
mod inspect;
mod replica;
mod sync;
mod triggers;
mod typed;
mod write;

pub use config::{Clock, Config};
pub use db::Db;
pub use error::{Error, ErrorKind, Result};
pub use find::{FindOptions, Page};
#[doc(hidden)]
pub use inspect::{LocalState, PendingChange};
pub use sync::{CALL_TIMEOUT, Conflict, Quarantined, Status, SyncOptions};
pub use triggers::{Event, Op, Origin, TriggerId};
pub use typed::Model;
pub use write::{Write, WriteOptions};

pub use ferry_journal as journal;
pub use ferry_schema as schema;
pub use ferry_schema::{Context, Schema, UpdateOps};
pub use ferry_store::Durability;
pub use ferry_sync as replication;
pub use ferry_sync::{EngineConfig, MemoryCloud, MemoryTransport, Transport};
pub use ferry_types as types;
