//! The journal's records on disk: the outbox, tombstones, the conflict log, the quarantine
//! and sync state in `meta`. A [`Tx`](crate::Tx) stages them in `ferry_journal`'s
//! [`StagedRecords`], which reads what is committed through [`Committed`] (here), and its
//! commit writes them in the same fjall batch as the items they describe.
//!
//! Keyspaces (values are `ferry_journal` encodings):
//! - `outbox`: primary key bytes -> `OutboxEntry`
//! - `tombstones`: primary key bytes -> `Tombstone`
//! - `conflicts`: big-endian `at_ms` ++ primary key bytes ++ big-endian u32 sequence ->
//!   `ConflictRecord` (the sequence keeps conflicts of one key in one millisecond apart)
//! - `quarantine`: primary key bytes -> `QuarantineRecord` (the newest refused change)
//! - `meta`: `state:` ++ name -> bytes (the prefix keeps them clear of the schema records)

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use ferry_journal::{
    Committed, ConflictRecord, OutboxEntry, QuarantineRecord, Records, StagedRecords, Tombstone,
};
use ferry_types::{Durability, Key, Version};
use fjall::Keyspace;

use crate::outbox_writes::OutboxWrites;
use crate::store::Store;
use crate::{Error, Result, layout};

/// Prefix of sync state names in `meta` (clock, cursors, device identity).
const META_STATE_PREFIX: &str = "state:";

/// What a write reads of the committed journal (its own staged records come first).
impl Committed for Store {
    type Error = Error;

    fn pending(&self, key: &[u8]) -> Result<Option<OutboxEntry>> {
        self.pending_at(key)
    }

    fn pending_version(&self, key: &[u8]) -> Result<Option<Version>> {
        self.pending_version_at(key)
    }

    fn quarantined(&self, key: &[u8]) -> Result<Option<QuarantineRecord>> {
        self.quarantined_at(key)
    }

    fn tombstone(&self, key: &[u8]) -> Result<Option<Tombstone>> {
        self.tombstone_at(key)
    }

    fn last_conflict(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.conflicts.prefix(prefix).next_back() {
            Some(guard) => Ok(Some(guard.key().map_err(|e| self.fail(e))?.to_vec())),
            None => Ok(None),
        }
    }

    fn outbox_len(&self) -> usize {
        self.outbox_len.load(Ordering::Acquire)
    }

    fn outbox_max(&self) -> usize {
        self.outbox_changes_max
    }
}

/// Adds every record `staged` holds to `batch`; returns how many conflict records the log
/// holds after it (the oldest beyond the journal's bound are dropped).
pub(crate) fn write_staged(
    store: &Store,
    staged: &StagedRecords,
    batch: &mut fjall::OwnedWriteBatch,
) -> usize {
    // Outbox entries come encoded: the size a write reports is of these bytes, taken as
    // they are.
    for (key, record) in staged.outbox() {
        match record {
            Some(staged) => batch.insert(&store.outbox, key.clone(), staged.bytes.as_slice()),
            None => batch.remove(&store.outbox, key.clone()),
        }
    }
    write_records(
        batch,
        &store.tombstones,
        staged.tombstones(),
        encode(ferry_journal::encode_tombstone),
    );
    write_records(
        batch,
        &store.quarantine,
        staged.quarantine_records(),
        encode(ferry_journal::encode_quarantine),
    );
    for (key, conflict) in staged.conflicts() {
        let value = encode(ferry_journal::encode_conflict)(conflict);
        batch.insert(&store.conflicts, key.clone(), value);
    }
    // The log keeps the newest records: the oldest go as new ones come (keys start with
    // the time, so the oldest come first).
    let held = store.conflicts_len.load(Ordering::Acquire);
    let excess = staged.conflicts_to_trim(held);
    for key in (store.conflicts.iter().take(excess)).filter_map(|g| g.key().ok()) {
        batch.remove(&store.conflicts, key);
    }
    for (name, value) in staged.meta() {
        batch.insert(&store.meta, meta_key(name), value.clone());
    }
    held + staged.conflicts().len() - excess
}

/// Inserts each present record and removes each absent one.
fn write_records<T>(
    batch: &mut fjall::OwnedWriteBatch,
    keyspace: &Keyspace,
    records: &Records<T>,
    encode: impl Fn(&T) -> Vec<u8>,
) {
    for (key, record) in records {
        match record {
            Some(record) => batch.insert(keyspace, key.clone(), encode(record)),
            None => batch.remove(keyspace, key.clone()),
        }
    }
}

/// Turns an appending encoder into one that returns the bytes.
fn encode<T>(append: fn(&T, &mut Vec<u8>)) -> impl Fn(&T) -> Vec<u8> {
    move |record| {
        let mut out = Vec::new();
        append(record, &mut out);
        out
    }
}

fn meta_key(name: &str) -> String {
    format!("{META_STATE_PREFIX}{name}")
}

/// A change the cloud acknowledged: it holds `version` of `key`, or a newer one.
#[derive(Debug, Clone, PartialEq)]
pub struct Acked {
    /// The change's key.
    pub key: Key,
    /// The version acknowledged.
    pub version: Version,
    /// The commit that queued this very version, when the pusher knows it
    /// ([`Tx::after_commit_queued`](crate::Tx::after_commit_queued) names it).
    pub queued_by: Option<u64>,
}

impl Store {
    /// Removes the pending entry of each acknowledged key whose version the cloud holds (or
    /// a newer one), in one commit; a newer entry stays pending.
    ///
    /// An entry whose queuing commit is named, when that commit is the last to have
    /// written it and left the acknowledged version there (the store remembers what its
    /// latest commits wrote), is that version still: it goes unread. Any other is read
    /// under the write lock.
    pub fn settle(&self, acked: &[Acked]) -> Result<()> {
        if acked.is_empty() {
            return Ok(());
        }
        self.write(Durability::Default, |tx| {
            // Under the write lock every commit is recorded (and none records meanwhile:
            // the log's lock is let go before this write commits).
            let known: Vec<Option<Vec<u8>>> = {
                let log = lock(&self.outbox_writes);
                (acked.iter())
                    .map(|acked| {
                        let commit = acked.queued_by?;
                        let bytes = layout::key_bytes(&acked.key);
                        log.left(&bytes, commit, &acked.version).then_some(bytes)
                    })
                    .collect()
            };
            for (Acked { key, version, .. }, known) in acked.iter().zip(known) {
                match known {
                    Some(bytes) => tx.settle_known(bytes, version),
                    None => {
                        tx.settle(key, version)?;
                    }
                }
            }
            Ok::<_, Error>(())
        })?;
        Ok(())
    }
}

pub(crate) fn lock(writes: &Mutex<OutboxWrites>) -> std::sync::MutexGuard<'_, OutboxWrites> {
    writes.lock().unwrap_or_else(|p| p.into_inner())
}

/// Replication reads: committed state only (a [`Tx`](crate::Tx) also sees its own writes).
impl Store {
    /// Every pending outbox entry, in primary key order.
    pub fn outbox(&self) -> impl Iterator<Item = Result<(Key, OutboxEntry)>> + '_ {
        self.outbox.iter().map(move |guard| {
            let value = guard.value().map_err(|e| self.fail(e))?;
            let entry = self.decoded(ferry_journal::decode_outbox_entry(&value))?;
            Ok((entry.change.key.clone(), entry))
        })
    }

    /// How many outbox entries are pending (a counter: no scan).
    pub fn outbox_len(&self) -> usize {
        self.outbox_len.load(Ordering::Acquire)
    }

    /// The pending outbox entry of `key`.
    pub fn pending(&self, key: &Key) -> Result<Option<OutboxEntry>> {
        self.pending_at(&layout::key_bytes(key))
    }

    /// The tombstone of `key`, if it was deleted and the tombstone is still kept.
    pub fn tombstone(&self, key: &Key) -> Result<Option<Tombstone>> {
        self.tombstone_at(&layout::key_bytes(key))
    }

    /// How many conflict records the log holds (it keeps the newest `CONFLICTS_MAX`).
    pub fn conflict_count(&self) -> Result<usize> {
        Ok(self.conflicts_len.load(Ordering::Acquire))
    }

    /// The latest `limit` conflicts, newest first.
    pub fn conflicts(&self, limit: usize) -> Result<Vec<ConflictRecord>> {
        self.conflicts
            .iter()
            .rev()
            .take(limit)
            .map(|guard| {
                let value = guard.value().map_err(|e| self.fail(e))?;
                self.decoded(ferry_journal::decode_conflict(&value))
            })
            .collect()
    }

    /// The quarantined changes (those the device could not apply), in primary key order,
    /// at most `limit`.
    pub fn quarantined(&self, limit: usize) -> Result<Vec<QuarantineRecord>> {
        (self.quarantine.iter().take(limit))
            .map(|guard| {
                let value = guard.value().map_err(|e| self.fail(e))?;
                self.decoded(ferry_journal::decode_quarantine(&value))
            })
            .collect()
    }

    /// How many changes are quarantined.
    pub fn quarantine_count(&self) -> Result<usize> {
        Ok(self.quarantine_len.load(Ordering::Acquire))
    }

    fn quarantined_at(&self, key: &[u8]) -> Result<Option<QuarantineRecord>> {
        let value = self.quarantine.get(key).map_err(|e| self.fail(e))?;
        value
            .map(|v| self.decoded(ferry_journal::decode_quarantine(&v)))
            .transpose()
    }

    /// A sync state value stored by [`Tx::set_meta`](crate::Tx::set_meta).
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let value = self.meta.get(meta_key(name)).map_err(|e| self.fail(e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    /// A sync state number (a cursor, a clock) stored as 8 big-endian bytes; any other
    /// length is corruption, never read as zero.
    pub fn meta_u64(&self, name: &str) -> Result<Option<u64>> {
        let Some(bytes) = self.meta(name)? else {
            return Ok(None);
        };
        let bytes = <[u8; 8]>::try_from(bytes.as_slice()).map_err(|_| {
            let detail = format!("{} bytes where 8 were written", bytes.len());
            self.corrupt(&format!("meta record {name}"), detail)
        })?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    /// A sync state text (the replica id); anything but UTF-8 is corruption.
    pub fn meta_text(&self, name: &str) -> Result<Option<String>> {
        let Some(bytes) = self.meta(name)? else {
            return Ok(None);
        };
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| self.corrupt(&format!("meta record {name}"), e.to_string()))
    }

    /// Keys of at most `limit` tombstones deleted before `before_ms`, for retention.
    /// Tombstones are kept by key, so this scans them in key order.
    pub fn expired_tombstones(&self, before_ms: u64, limit: usize) -> Result<Vec<Key>> {
        let has_sort = self.layout.primary.sort.is_some();
        let mut keys = Vec::new();
        for guard in self.tombstones.iter() {
            if keys.len() >= limit {
                break;
            }
            let (key, value) = guard.into_inner().map_err(|e| self.fail(e))?;
            let tombstone = self.decoded(ferry_journal::decode_tombstone(&value))?;
            if tombstone.deleted_ms < before_ms {
                let key = layout::decode_key(&key, has_sort)
                    .map_err(|detail| self.corrupt("tombstone key", detail))?;
                keys.push(key);
            }
        }
        Ok(keys)
    }

    fn pending_version_at(&self, key: &[u8]) -> Result<Option<Version>> {
        #[cfg(test)]
        self.pending_reads.fetch_add(1, Ordering::Relaxed);
        let value = self.outbox.get(key).map_err(|e| self.fail(e))?;
        value
            .map(|v| self.decoded(ferry_journal::decode_outbox_version(&v)))
            .transpose()
    }

    fn pending_at(&self, key: &[u8]) -> Result<Option<OutboxEntry>> {
        let value = self.outbox.get(key).map_err(|e| self.fail(e))?;
        value
            .map(|v| self.decoded(ferry_journal::decode_outbox_entry(&v)))
            .transpose()
    }

    fn tombstone_at(&self, key: &[u8]) -> Result<Option<Tombstone>> {
        let value = self.tombstones.get(key).map_err(|e| self.fail(e))?;
        value
            .map(|v| self.decoded(ferry_journal::decode_tombstone(&v)))
            .transpose()
    }

    /// Names the database in a journal record's decoding error.
    fn decoded<T>(&self, decoded: ferry_journal::Result<T>) -> Result<T> {
        decoded.map_err(|error| match error {
            ferry_journal::Error::Corrupt { what, detail } => self.corrupt(what, detail),
            other => self.corrupt("journal record", other.to_string()),
        })
    }
}
