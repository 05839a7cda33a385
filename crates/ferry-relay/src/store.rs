//! Where the relay keeps the cloud's rows: a [`CloudStore`], with the semantics of
//! DESIGN.md 7 (one row per key, conditional last writer wins by version, a change feed per
//! scope with a `safe` bound, tombstones purged past the horizon, `Expired` for a cursor
//! before a purged tombstone). `MemoryCloud` in `ferry-sync` is the reference.

pub mod embedded;

#[cfg(feature = "dynamo")]
pub mod dynamo;

use std::future::Future;

use ferry_journal::Change;
use ferry_sync::{PullFrom, PullPage, PushResults, Session, TransportError};

/// A backend of the relay: the embedded store (one relay, a true sequencer) or a DynamoDB
/// table (any number of relays).
pub trait CloudStore: Send + Sync + 'static {
    /// The store's side of a session: its time, horizon and per-call limits (the relay
    /// fills in each device's scopes).
    fn session(&self) -> impl Future<Output = Result<Session, TransportError>> + Send;

    /// Writes `changes` conditionally, one outcome per change processed (a change left
    /// out stays pending on its device).
    fn write(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<PushResults, TransportError>> + Send;

    /// One page of `scope`'s feed from `from`, at most `limit` changes in whole stamps.
    fn read(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> impl Future<Output = Result<PullPage, TransportError>> + Send;

    /// Whether writers other than this relay share the store (several relays over one
    /// table): the relay then polls the feeds its devices read to fan out their changes.
    fn shared(&self) -> bool;

    /// Periodic upkeep (purging tombstones past the horizon); by default none.
    fn maintain(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A shared store is a store: its owner keeps a handle (to read it, say) while the relay
/// serves it.
impl<T: CloudStore> CloudStore for std::sync::Arc<T> {
    fn session(&self) -> impl Future<Output = Result<Session, TransportError>> + Send {
        (**self).session()
    }

    fn write(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<PushResults, TransportError>> + Send {
        (**self).write(changes)
    }

    fn read(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> impl Future<Output = Result<PullPage, TransportError>> + Send {
        (**self).read(scope, from, limit)
    }

    fn shared(&self) -> bool {
        (**self).shared()
    }

    fn maintain(&self) -> impl Future<Output = ()> + Send {
        (**self).maintain()
    }
}
