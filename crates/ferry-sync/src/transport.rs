//! The `Transport` trait: how a driver talks to the cloud, whatever carries the bytes.
//!
//! The trait is async but names no runtime: implementations return plain futures, so the
//! engine and this crate never depend on tokio (DESIGN.md 2).

use std::future::Future;

use ferry_journal::Change;
use ferry_types::{Hlc, Key, Version};

/// What the cloud did with one pushed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The cloud now holds this version (also when it already held exactly this version:
    /// a retried write whose first answer was lost).
    Applied,
    /// The cloud holds a newer version, `cloud`; this one was not written.
    Superseded {
        /// The version the cloud holds.
        cloud: Version,
    },
    /// The cloud refuses this change for good (scope not granted, invalid item).
    Rejected {
        /// Why, for the user.
        reason: String,
    },
}

/// One page of a scope's change feed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullPage {
    /// Changes in `_seq` order, each with its `_seq` (the feed position).
    pub changes: Vec<(Hlc, Change)>,
    /// Another page follows: pull again from the last `_seq` of this one.
    pub more: bool,
    /// On the last page (`more == false`): a feed position that every later change of the
    /// scope will be stamped after, so the cursor may move there even when the page is
    /// empty. Without it a scope that sees no change for longer than the horizon would keep
    /// answering `Expired` (and the device resyncing) at every poll. `None`: the cloud cannot
    /// say, and the cursor stays at the last change received.
    pub position: Option<Hlc>,
}

/// Why a transport call failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The cloud could not be reached or did not answer; retry later.
    #[error("cloud unavailable: {0}")]
    Unavailable(String),
    /// The pull cursor is older than the cloud's tombstone horizon; resync the scope.
    #[error("pull cursor is older than the cloud's horizon: resync the scope")]
    Expired,
    /// The cloud refused the whole request (credentials, malformed request); do not retry as is.
    #[error("cloud rejected the request: {0}")]
    Rejected(String),
}

/// How a driver reaches the cloud: push batches of changes, pull pages of a scope's feed.
pub trait Transport {
    /// Writes `changes` conditionally (last writer wins by version) and answers per change.
    /// A change missing from the answer was not processed and stays pending.
    fn push(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<Vec<(Key, Version, PushOutcome)>, TransportError>> + Send;

    /// Reads at most `limit` changes of `scope` with `_seq > since`, in `_seq` order.
    /// `since == Hlc::ZERO` reads from the start (a snapshot) and never expires.
    fn pull(
        &self,
        scope: &str,
        since: Hlc,
        limit: usize,
    ) -> impl Future<Output = Result<PullPage, TransportError>> + Send;
}

/// A shared transport is a transport: the owner keeps a handle (to take a test link down,
/// say) while the driver uses it.
impl<T: Transport + Send + Sync> Transport for std::sync::Arc<T> {
    fn push(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<Vec<(Key, Version, PushOutcome)>, TransportError>> + Send {
        (**self).push(changes)
    }

    fn pull(
        &self,
        scope: &str,
        since: Hlc,
        limit: usize,
    ) -> impl Future<Output = Result<PullPage, TransportError>> + Send {
        (**self).pull(scope, since, limit)
    }
}
