//! Ferry's change journal: what replication remembers between a local write and the
//! cloud's answer, and what it keeps afterwards, with the rules a write follows when it
//! stages them.
//!
//! - [`Change`]: one replicated write, as it travels up (outbox) and down (pull).
//! - [`OutboxEntry`]: the latest pending local change of one key.
//! - [`Tombstone`]: a delete, remembered so that older puts do not resurrect the item.
//! - [`ConflictRecord`]: a version that lost under last-writer-wins, kept for users.
//! - [`QuarantineRecord`]: a cloud change that could not apply, with why.
//! - [`StagedRecords`]: one write's records over the committed ones ([`Committed`]):
//!   coalescing, the outbox's bound, settling, the quarantine, the conflict log's sequence
//!   and trim (`staged.rs`).
//!
//! Each record has an `encode_*`/`decode_*` pair (a leading format byte, then
//! `ferry_types::codec` primitives); decoding returns [`Error::Corrupt`] on bad bytes and
//! never panics.
//!
//! Architecture invariant: no I/O. `ferry-store` implements [`Committed`] and writes the
//! staged records in the same batch as the data they describe, so a write and its outbox
//! entry commit together or not at all; `ferry-db` decides what a write journals.

mod encode;
mod error;
mod staged;
#[cfg(test)]
mod tests;

pub use encode::{
    decode_change, decode_conflict, decode_outbox_entry, decode_outbox_version, decode_quarantine,
    decode_tombstone, encode_change, encode_conflict, encode_outbox_entry, encode_quarantine,
    encode_tombstone,
};
pub use error::{Error, Result};
pub use staged::{CONFLICTS_MAX, Committed, Encoded, OutboxFull, Records, StagedRecords};

use ferry_types::{Item, Key, Version};

/// Whether a change writes or removes its item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeOp {
    /// The item was created or replaced.
    Put,
    /// The item was removed.
    Delete,
}

/// One replicated change, as it travels up (outbox) and down (pull / push from the cloud).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The model (entity type) of the item.
    pub model: String,
    /// The item's primary key.
    pub key: Key,
    /// Write or remove.
    pub op: ChangeOp,
    /// The version this change gives the item.
    pub version: Version,
    /// Which devices see it: `"*"` for shared items, or e.g. a device id.
    pub scope: String,
    /// Put: the item as it leaves the device (fields with sync `none` removed); Delete: `None`.
    pub item: Option<Item>,
    /// The version the writer had of the key when it wrote this change (the item's or
    /// tombstone's it replaced), `None` when it had nothing: a change written on top of a
    /// version is no conflict with it. Kept as far as it travels: through coalescing it is
    /// the oldest pending write's, which is what the cloud held for all of them.
    pub base: Option<Version>,
}

/// The latest pending local change of one key (the outbox holds one per key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The change to send.
    pub change: Change,
    /// When it was queued (wall milliseconds), to report how long changes wait.
    pub queued_ms: u64,
}

impl OutboxEntry {
    /// Coalescing: a newer local write of the same key replaces the pending one (never
    /// first-write-wins, which loses the later update).
    pub fn replaced_by(&self, newer: &Change) -> bool {
        debug_assert_eq!(newer.key, self.change.key, "coalescing across keys");
        newer.version > self.change.version
    }

    /// The size of the encoded entry: what it costs in the outbox and, roughly, on the wire.
    pub fn encoded_len(&self) -> usize {
        let mut out = Vec::new();
        encode_outbox_entry(self, &mut out);
        out.len()
    }
}

/// A delete, remembered so that older puts do not resurrect the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// The model of the removed item.
    pub model: String,
    /// The version of the delete.
    pub version: Version,
    /// When it was removed (wall milliseconds), for retention.
    pub deleted_ms: u64,
}

/// A cloud change this device could not apply (a unique clash, an item over the size
/// limit, an item whose key does not match, a model this schema does not know), kept so
/// that its scope moves on and the user can see it; retried after a schema upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineRecord {
    /// The change as it arrived.
    pub change: Change,
    /// Why it could not apply.
    pub reason: String,
    /// When it was quarantined (wall milliseconds).
    pub at_ms: u64,
}

/// A losing version under last-writer-wins (`sync: 'both'`), kept for users to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictRecord {
    /// The version that won.
    pub winner: Version,
    /// The change that lost.
    pub loser: Change,
    /// When the conflict was resolved (wall milliseconds).
    pub at_ms: u64,
}
