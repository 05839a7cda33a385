//! Callbacks fired after a change commits.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value as Json;

/// What a change did to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The item did not exist before.
    Create,
    /// The item existed and was replaced or updated.
    Update,
    /// The item was removed (by a call, or by the TTL sweeper).
    Remove,
    /// Last writer wins decided between a local and a cloud version (`sync: 'both'`):
    /// `old` is the losing item (`None` when the loser was a remove), `new` the winning
    /// one as this device holds it, `version` the winner's. The loser is also in
    /// `Db::conflicts`.
    Conflict,
}

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A write on this device.
    Local,
    /// A change received from the cloud.
    Cloud,
}

/// One committed change, as a trigger sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The item's model.
    pub model: String,
    /// What happened.
    pub op: Op,
    /// The item before (hidden fields included), if it existed.
    pub old: Option<Json>,
    /// The item after (hidden fields included), unless removed.
    pub new: Option<Json>,
    /// The version the change gave the item (its `_ver`; a remove's tombstone version),
    /// for models that replicate.
    pub version: Option<String>,
    /// Where the change came from.
    pub origin: Origin,
}

/// Identifies a registered trigger, to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TriggerId(u64);

type Callback = Box<dyn Fn(&Event) + Send + Sync>;

/// The registered triggers, fired in registration order.
#[derive(Default)]
pub(crate) struct Triggers {
    next: AtomicU64,
    list: RwLock<Vec<(TriggerId, Option<String>, Callback)>>,
}

impl Triggers {
    pub fn add(&self, model: Option<String>, callback: Callback) -> TriggerId {
        let id = TriggerId(self.next.fetch_add(1, Ordering::Relaxed));
        self.list
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, model, callback));
        id
    }

    pub fn remove(&self, id: TriggerId) -> bool {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        let before = list.len();
        list.retain(|(t, _, _)| *t != id);
        list.len() != before
    }

    pub fn is_empty(&self) -> bool {
        self.list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    pub fn fire(&self, event: &Event) {
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        for (_, model, callback) in list.iter() {
            if model.as_deref().is_none_or(|m| m == event.model) {
                callback(event);
            }
        }
    }
}
