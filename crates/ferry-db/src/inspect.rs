//! The replication journal as stored, for the simulator (`cargo xtask sim`) and tests.
//!
//! Hidden from the documentation and not a stable API: the public API deliberately shows
//! neither versions nor tombstones, but the simulator's safety checks (every pending change
//! matches the item it describes; nothing acknowledged is lost) need both.

use ferry_journal::ChangeOp;
use ferry_types::{Item, Key, Version};

use crate::{Db, Result};

/// One outbox entry: the latest pending local change of a key.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    /// The item's primary key.
    pub key: Key,
    /// The model the change belongs to.
    pub model: String,
    /// The version that waits for the cloud's acknowledgement.
    pub version: Version,
    /// A remove (a tombstone) rather than a put.
    pub delete: bool,
}

/// What the device holds for one key.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub enum LocalState {
    /// A stored item, hidden attributes (`_ver`) included.
    Item(Item),
    /// No item; a tombstone at this version.
    Tombstone(Version),
    /// Neither.
    Absent,
}

impl Db {
    /// Every pending outbox entry, in key order.
    #[doc(hidden)]
    pub fn inspect_pending(&self) -> Result<Vec<PendingChange>> {
        let mut pending = Vec::new();
        for entry in self.inner.store.outbox() {
            let (key, entry) = entry?;
            pending.push(PendingChange {
                key,
                model: entry.change.model,
                version: entry.change.version,
                delete: entry.change.op == ChangeOp::Delete,
            });
        }
        Ok(pending)
    }

    /// The stored item of `key` as is, else its tombstone.
    #[doc(hidden)]
    pub fn inspect_key(&self, key: &Key) -> Result<LocalState> {
        if let Some(item) = self.inner.store.get(key)? {
            return Ok(LocalState::Item(item));
        }
        Ok(match self.inner.store.tombstone(key)? {
            Some(tombstone) => LocalState::Tombstone(tombstone.version),
            None => LocalState::Absent,
        })
    }
}
