//! The `Transport` trait: the seam every way of reaching the cloud implements.
//!
//! The trait is async and its futures are `Send`, so a driver runs them on tokio; it names
//! no runtime itself, so this crate and the engine never depend on tokio. The
//! driver puts a timeout on every call: an implementation may wait as long as its network
//! does.

use std::collections::BTreeSet;
use std::future::Future;

use ferry_journal::Change;
use ferry_types::{Hlc, Key, Version};

use crate::defaults::{BATCH_BYTES_MAX, BATCH_CHANGES_MAX, PAGE_CHANGES_MAX};

/// What the cloud did with one pushed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The cloud now holds this version (also when it already held exactly this version:
    /// a retried write whose first answer was lost).
    Applied,
    /// The cloud holds a newer change of the key, `cloud` (DynamoDB's `ALL_OLD` on a failed
    /// condition); this one was not written.
    Superseded {
        /// The change the cloud holds (a `Delete` for a tombstone).
        cloud: Box<Change>,
    },
    /// The cloud refuses this change for good (scope not granted, invalid item).
    Rejected {
        /// Why, for the user.
        reason: String,
    },
    /// The change's version is too far past the cloud's time (the writer's clock is ahead):
    /// an honest writer re-stamps it at `server_time_ms` and sends it again.
    Ahead {
        /// The cloud's time when it refused.
        server_time_ms: u64,
    },
}

/// Where a pull starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFrom {
    /// The changes after a cursor (`_seq > since`): catch-up. `Expired` when tombstones
    /// after it may have been purged.
    Since(Hlc),
    /// A snapshot of the whole scope, paged by `_seq` (`_seq > after`, `Hlc::ZERO` for the
    /// first page): a resync or a new device. Never `Expired`, whatever the rows' age.
    Snapshot(Hlc),
}

/// One page of a scope's change feed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullPage {
    /// Changes in `_seq` order, each with its `_seq` (the feed position).
    pub changes: Vec<(Hlc, Change)>,
    /// Another page follows: pull again from the last `_seq` of this one.
    pub more: bool,
    /// Every change with `_seq <= safe` was visible when the page was read (the server's
    /// time minus the feed's window W, rule 2 of the feed in docs/sync.md). A cursor never moves past it,
    /// so a write that becomes visible late is still read; on the last page the cursor may
    /// move up to it although the page is empty, which keeps a quiet scope from expiring.
    pub safe: Hlc,
}

/// The cursor after a page read from `cursor`: a page with more to come proves the feed up
/// to its last `_seq`; the last page proves it up to `safe`. Never past `safe` (a change
/// stamped before it may still become visible: rule 2 of the feed), never backwards.
pub fn cursor_after(cursor: Hlc, last_seq: Option<Hlc>, more: bool, safe: Hlc) -> Hlc {
    let proven = match (more, last_seq) {
        (true, Some(seq)) => seq.min(safe),
        (true, None) => cursor,
        (false, _) => safe,
    };
    let next = cursor.max(proven);
    debug_assert!(
        next >= cursor && (next == cursor || next <= safe),
        "a cursor moves forward, to at most the page's safe position"
    );
    next
}

/// What a transport's handshake tells the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The server's time (epoch ms) when it answered: the device's clock is disciplined by
    /// it, and the difference is the skew `status()` reports.
    pub server_time_ms: u64,
    /// The scopes this device may write and read; `None`: every scope (a direct transport
    /// whose credentials decide).
    pub scopes: Option<BTreeSet<String>>,
    /// What one call may carry.
    pub limits: Limits,
    /// How long a tombstone lives in the cloud (the table setting).
    pub horizon_ms: u64,
}

/// Per-call limits of a transport. The engine builds no batch larger than these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Changes per push.
    pub push_changes_max: usize,
    /// Encoded bytes per push.
    pub push_bytes_max: usize,
    /// Changes per pulled page.
    pub page_changes_max: usize,
}

impl Default for Limits {
    /// Ferry's own bounds ([`BATCH_CHANGES_MAX`], [`BATCH_BYTES_MAX`], [`PAGE_CHANGES_MAX`]).
    fn default() -> Limits {
        Limits {
            push_changes_max: BATCH_CHANGES_MAX,
            push_bytes_max: BATCH_BYTES_MAX,
            page_changes_max: PAGE_CHANGES_MAX,
        }
    }
}

impl Limits {
    /// Every limit at least one, so that a transport's zero cannot stall sync.
    pub fn sanitized(self) -> Limits {
        Limits {
            push_changes_max: self.push_changes_max.max(1),
            push_bytes_max: self.push_bytes_max.max(1),
            page_changes_max: self.page_changes_max.max(1),
        }
    }
}

/// Why a transport call failed as a whole. A per-change refusal is a
/// [`PushOutcome::Rejected`] instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The cloud could not be reached or did not answer; reconnect and retry later.
    #[error("cloud unavailable: {0}")]
    Unavailable(String),
    /// The credentials (a token, keys) were refused; retrying soon will not help.
    #[error("cloud refused the credentials: {0}")]
    Unauthorized(String),
    /// The cloud asks the device to slow down; retry after a backoff.
    #[error("cloud throttled the request{}", .retry_after_ms.map(|ms| format!(" (retry after {ms} ms)")).unwrap_or_default())]
    Throttled {
        /// How long the cloud asked to wait, if it said.
        retry_after_ms: Option<u64>,
    },
    /// The pull cursor is older than tombstones the cloud has purged: resync the scope.
    #[error("pull cursor is older than tombstones the cloud has purged: resync the scope")]
    Expired,
    /// The cloud refused the whole request (malformed, over a limit); not retried as is.
    #[error("cloud rejected the request: {0}")]
    Rejected(String),
    /// The call did not answer within the driver's timeout.
    #[error("cloud did not answer within {0} ms")]
    Timeout(u64),
}

/// Per-change results of a push: key, the version sent, and what the cloud did.
pub type PushResults = Vec<(Key, Version, PushOutcome)>;

/// How a driver reaches the cloud: a handshake, pushes of changes, pulls of a scope's feed,
/// and optionally a live stream of changes.
pub trait Transport: Send + Sync + 'static {
    /// The handshake: server time, granted scopes, limits, horizon.
    fn connect(&self) -> impl Future<Output = Result<Session, TransportError>> + Send;

    /// Writes `changes` conditionally (last writer wins by version) and answers per change.
    /// A change missing from the answer was not processed and stays pending.
    fn push(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<PushResults, TransportError>> + Send;

    /// Reads at most `limit` changes of `scope` from `from`, in `_seq` order.
    fn pull(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> impl Future<Output = Result<PullPage, TransportError>> + Send;

    /// The change the cloud holds for `key` (a tombstone is a `Delete`), read strongly
    /// consistent, if the writer may read its scope: what cloud mode reads before it
    /// writes. By default a transport reads no single rows (`Rejected`).
    fn get(
        &self,
        key: &Key,
    ) -> impl Future<Output = Result<Option<Change>, TransportError>> + Send {
        let reason = format!("this transport reads no single rows ({key})");
        std::future::ready(Err(TransportError::Rejected(reason)))
    }

    /// The next changes the cloud pushes without being asked (the relay's fan-out). Must be
    /// cancel-safe: the driver drops the future whenever other work comes first. Applying
    /// them is idempotent and never moves a cursor: pulls stay the source of truth. By
    /// default there is no stream (the future never resolves) and the driver polls.
    fn live(&self) -> impl Future<Output = Result<Vec<Change>, TransportError>> + Send {
        std::future::pending()
    }
}

/// A shared transport is a transport: the owner keeps a handle (to take a test link down,
/// say) while the driver uses it.
impl<T: Transport> Transport for std::sync::Arc<T> {
    fn connect(&self) -> impl Future<Output = Result<Session, TransportError>> + Send {
        (**self).connect()
    }

    fn push(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<PushResults, TransportError>> + Send {
        (**self).push(changes)
    }

    fn pull(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> impl Future<Output = Result<PullPage, TransportError>> + Send {
        (**self).pull(scope, from, limit)
    }

    fn get(
        &self,
        key: &Key,
    ) -> impl Future<Output = Result<Option<Change>, TransportError>> + Send {
        (**self).get(key)
    }

    fn live(&self) -> impl Future<Output = Result<Vec<Change>, TransportError>> + Send {
        (**self).live()
    }
}
