//! A cloud backend: a [`CloudStore`] keeps the cloud's rows with the semantics of
//! [`crate::MemoryCloud`], the reference (one row per key, every write decided by the write
//! rule, a change feed per scope with a `safe` bound, tombstones purged past the horizon,
//! `Expired` for a cursor before a purged tombstone). Three backends: the reference cloud,
//! the relay's embedded store and a DynamoDB table.
//!
//! [`StoreTransport`] is one writer's [`Transport`] straight onto a store; the relay serves
//! the same to devices over WebSocket, with the grant their token carries.

use std::future::Future;

use ferry_journal::Change;
use ferry_types::Key;

use crate::rule::Grant;
use crate::transport::{PullFrom, PullPage, PushResults, Session, Transport, TransportError};

/// A cloud backend: the reference cloud, the relay's embedded store (one relay, a true
/// sequencer) or a DynamoDB table (any number of relays).
pub trait CloudStore: Send + Sync + 'static {
    /// The store's side of a session: its time, horizon and per-call limits (the relay
    /// fills in each device's scopes).
    fn session(&self) -> impl Future<Output = Result<Session, TransportError>> + Send;

    /// Writes `changes` of `grant`'s writer, each as the write rule decides, one outcome
    /// per change processed (a change left out stays pending on its device).
    fn write(
        &self,
        changes: Vec<Change>,
        grant: &Grant,
    ) -> impl Future<Output = Result<PushResults, TransportError>> + Send;

    /// The change the store holds for `key` (a tombstone is a `Delete`), strongly
    /// consistent; the caller checks that the reader may read its scope.
    fn get(&self, key: &Key)
    -> impl Future<Output = Result<Option<Change>, TransportError>> + Send;

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
        grant: &Grant,
    ) -> impl Future<Output = Result<PushResults, TransportError>> + Send {
        (**self).write(changes, grant)
    }

    fn get(
        &self,
        key: &Key,
    ) -> impl Future<Output = Result<Option<Change>, TransportError>> + Send {
        (**self).get(key)
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

/// One writer's [`Transport`] straight onto a store: the session with the grant's scopes,
/// pushes decided by the write rule with the grant, pulls of granted scopes only.
#[derive(Debug)]
pub struct StoreTransport<S> {
    store: S,
    grant: Grant,
}

impl<S: CloudStore> StoreTransport<S> {
    /// `grant`'s writer on `store`.
    pub fn new(store: S, grant: Grant) -> StoreTransport<S> {
        StoreTransport { store, grant }
    }
}

impl<S: CloudStore> Transport for StoreTransport<S> {
    async fn connect(&self) -> Result<Session, TransportError> {
        let mut session = self.store.session().await?;
        session.scopes = self.grant.scopes.clone();
        Ok(session)
    }

    async fn push(&self, changes: Vec<Change>) -> Result<PushResults, TransportError> {
        self.store.write(changes, &self.grant).await
    }

    async fn pull(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> Result<PullPage, TransportError> {
        self.grant.may_read(scope)?;
        self.store.read(scope, from, limit).await
    }

    async fn get(&self, key: &Key) -> Result<Option<Change>, TransportError> {
        let held = self.store.get(key).await?;
        readable(held, &self.grant)
    }
}

/// `held` if `grant`'s holder may read it. A row of a scope not granted is refused without
/// naming the scope, as a key that holds nothing this holder may see.
pub fn readable(held: Option<Change>, grant: &Grant) -> Result<Option<Change>, TransportError> {
    match held {
        Some(change) if !grant.has_scope(&change.scope) => Err(TransportError::Rejected(format!(
            "{} is not readable by '{}' (a scope it is not granted)",
            change.key, grant.name
        ))),
        held => Ok(held),
    }
}
