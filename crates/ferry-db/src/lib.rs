//! Ferry's local database: OneTable's operations on the store, the replica bookkeeping that
//! commits with every write, and cloud changes applied by each model's direction.
//!
//! Apps use it through the `ferry` facade, which re-exports [`Db`] and attaches drivers.
//!
//! **Architecture invariant:** it gives OneTable's operations their meaning (create,
//! update, conditions, pagination, triggers) and replication state (outbox, tombstones,
//! cursors, clock, conflicts, quarantine) only ever changes in the same batch as the data;
//! storage is `ferry-store`'s, schema rules are `ferry-schema`'s. It does no I/O beyond
//! the store and knows no runtime: a driver reaches it through the [`Replication`] hook
//! it gives the database and the [`ReplicaPort`] it is handed when it attaches.

mod apply;
mod config;
mod crypt;
mod db;
mod error;
mod find;
mod inspect;
mod port;
mod replica;
mod replication;
mod triggers;
mod typed;
mod write;

pub use config::{Clock, Config};
pub use db::{Db, WeakDb};
pub use error::{Error, ErrorKind, Result};
pub use ferry_store::Acked;
pub use find::{FindOptions, Page};
#[doc(hidden)]
pub use inspect::{LocalState, PendingChange};
pub use port::{ReplicaPort, Resolved, WeakReplicaPort};
pub use replication::{Conflict, Quarantined, Queued, Replication, Status};
pub use triggers::{Event, Op, Origin, TriggerId};
pub use typed::TypedModel;
pub use write::{Write, WriteOptions};
