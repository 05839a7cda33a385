//! Replication records beside the data: the outbox, tombstones, the conflict log and sync
//! state in `meta`. A [`Tx`](crate::Tx) stages them in [`StagedRecords`] and its commit writes
//! them in the same fjall batch as the items they describe.
//!
//! Keyspaces (values are `ferry_journal` encodings):
//! - `outbox`: primary key bytes -> `OutboxEntry`
//! - `tombstones`: primary key bytes -> `Tombstone`
//! - `conflicts`: big-endian `at_ms` ++ primary key bytes ++ big-endian u32 sequence ->
//!   `ConflictRecord` (the sequence keeps conflicts of one key in one millisecond apart)
//! - `quarantine`: primary key bytes -> `QuarantineRecord` (the newest refused change)
//! - `meta`: `state:` ++ name -> bytes (the prefix keeps them clear of the schema records)

use std::collections::BTreeMap;

use ferry_journal::{ConflictRecord, OutboxEntry, QuarantineRecord, Tombstone};
use ferry_types::{Key, Version};
use fjall::Keyspace;

use std::sync::atomic::Ordering;

use crate::store::Store;
use crate::{Error, Result, layout};

/// Prefix of sync state names in `meta` (clock, cursors, device identity).
const META_STATE_PREFIX: &str = "state:";
/// Conflict records kept; older ones are dropped as new ones arrive.
pub(crate) const CONFLICTS_MAX: usize = 10_000;
/// Bytes of the sequence suffix of a conflict record key.
const CONFLICT_SEQ_BYTES: usize = 4;

/// StagedRecords records of one keyspace by key; `None`: the record is removed. Records are boxed:
/// inline, eleven of them make a map node of up to several KiB, and glibc serves a request
/// that large only after consolidating every small chunk freed since the last one. Every
/// replicated write made one, at a sixth of the writer's CPU time.
type Records<T> = BTreeMap<Vec<u8>, Option<Box<T>>>;

/// Replication records a write has staged, keyed like their keyspaces.
#[derive(Default)]
pub(crate) struct StagedRecords {
    outbox: Records<OutboxEntry>,
    tombstones: Records<Tombstone>,
    conflicts: BTreeMap<Vec<u8>, Box<ConflictRecord>>,
    quarantine: Records<QuarantineRecord>,
    meta: BTreeMap<String, Vec<u8>>,
    /// Outbox entries this write adds (new keys) minus those it settles.
    pub(crate) outbox_delta: isize,
    /// Quarantine records this write adds (new keys) minus those it releases.
    pub(crate) quarantine_delta: isize,
}

impl StagedRecords {
    pub(crate) fn is_empty(&self) -> bool {
        self.outbox.is_empty()
            && self.tombstones.is_empty()
            && self.conflicts.is_empty()
            && self.quarantine.is_empty()
            && self.meta.is_empty()
    }

    pub(crate) fn pending(&self, store: &Store, key: &Key) -> Result<Option<OutboxEntry>> {
        let bytes = layout::key_bytes(key);
        match self.outbox.get(&bytes) {
            Some(staged) => Ok(staged.as_deref().cloned()),
            None => store.pending_at(&bytes),
        }
    }

    pub(crate) fn queue(&mut self, store: &Store, mut entry: OutboxEntry) -> Result<bool> {
        match self.pending(store, &entry.change.key)? {
            Some(pending) if !pending.replaced_by(&entry.change) => return Ok(false),
            // Coalesced: the older base stays (a cloud change between the two writes was
            // never seen either).
            Some(pending) => entry.change.base = pending.change.base,
            None => {
                let len = store.outbox_len.load(Ordering::Acquire) as isize + self.outbox_delta;
                if len >= store.outbox_changes_max as isize {
                    let limit = store.outbox_changes_max;
                    return Err(Error::OutboxFull { limit });
                }
                self.outbox_delta += 1;
            }
        }
        let bytes = layout::key_bytes(&entry.change.key);
        self.outbox.insert(bytes, Some(Box::new(entry)));
        Ok(true)
    }

    /// The version pending for `key`, reading no more of the entry than that.
    pub(crate) fn pending_version(&self, store: &Store, key: &Key) -> Result<Option<Version>> {
        let bytes = layout::key_bytes(key);
        match self.outbox.get(&bytes) {
            Some(staged) => Ok(staged.as_ref().map(|entry| entry.change.version.clone())),
            None => store.pending_version_at(&bytes),
        }
    }

    pub(crate) fn settle(&mut self, store: &Store, key: &Key, acked: &Version) -> Result<bool> {
        match self.pending_version(store, key)? {
            Some(pending) if pending <= *acked => {
                self.outbox.insert(layout::key_bytes(key), None);
                self.outbox_delta -= 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub(crate) fn quarantined(
        &self,
        store: &Store,
        bytes: &[u8],
    ) -> Result<Option<QuarantineRecord>> {
        match self.quarantine.get(bytes) {
            Some(staged) => Ok(staged.as_deref().cloned()),
            None => store.quarantined_at(bytes),
        }
    }

    pub(crate) fn quarantine(&mut self, store: &Store, record: QuarantineRecord) -> Result<()> {
        let bytes = layout::key_bytes(&record.change.key);
        let held = self.quarantined(store, &bytes)?;
        // One record per key: the newest change refused.
        match held {
            Some(held) if held.change.version > record.change.version => {}
            Some(_) => {
                self.quarantine.insert(bytes, Some(Box::new(record)));
            }
            None => {
                self.quarantine.insert(bytes, Some(Box::new(record)));
                self.quarantine_delta += 1;
            }
        }
        Ok(())
    }

    /// Removes `key`'s quarantined change if it is at or below `version`.
    pub(crate) fn release_quarantine(
        &mut self,
        store: &Store,
        key: &Key,
        version: &Version,
    ) -> Result<()> {
        let bytes = layout::key_bytes(key);
        if self
            .quarantined(store, &bytes)?
            .is_some_and(|held| held.change.version <= *version)
        {
            self.quarantine.insert(bytes, None);
            self.quarantine_delta -= 1;
        }
        Ok(())
    }

    pub(crate) fn set_tombstone(&mut self, key: &Key, tombstone: Option<Tombstone>) {
        let tombstone = tombstone.map(Box::new);
        self.tombstones.insert(layout::key_bytes(key), tombstone);
    }

    pub(crate) fn tombstone(&self, store: &Store, key: &Key) -> Result<Option<Tombstone>> {
        let bytes = layout::key_bytes(key);
        match self.tombstones.get(&bytes) {
            Some(staged) => Ok(staged.as_deref().cloned()),
            None => store.tombstone_at(&bytes),
        }
    }

    pub(crate) fn log_conflict(&mut self, store: &Store, conflict: ConflictRecord) -> Result<()> {
        let mut prefix = conflict.at_ms.to_be_bytes().to_vec();
        prefix.extend_from_slice(&layout::key_bytes(&conflict.loser.key));
        let seq = self.next_conflict_seq(store, &prefix)?;
        prefix.extend_from_slice(&seq.to_be_bytes());
        self.conflicts.insert(prefix, Box::new(conflict));
        Ok(())
    }

    /// The sequence after every conflict record of this time and key, stored or staged.
    /// Primary key bytes are self-delimiting, so `prefix` matches this key's records only.
    fn next_conflict_seq(&self, store: &Store, prefix: &[u8]) -> Result<u32> {
        let staged = self
            .conflicts
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .last()
            .map(|(k, _)| k.clone());
        let stored = match store.conflicts.prefix(prefix).next_back() {
            Some(guard) => Some(guard.key().map_err(|e| store.fail(e))?.to_vec()),
            None => None,
        };
        let last = staged.max(stored).and_then(|k| conflict_seq(&k));
        // 4 billion conflicts of one key in one millisecond cannot happen: saturating
        // (which would overwrite the last record) only rules out a panic.
        Ok(last.map_or(0, |seq| seq.saturating_add(1)))
    }

    pub(crate) fn set_meta(&mut self, name: &str, value: Vec<u8>) {
        self.meta.insert(name.to_string(), value);
    }

    /// Adds every staged record to `batch`; returns how many conflict records the log holds
    /// after it (the oldest beyond `CONFLICTS_MAX` are dropped).
    pub(crate) fn write(&self, store: &Store, batch: &mut fjall::OwnedWriteBatch) -> usize {
        write_records(
            batch,
            &store.outbox,
            &self.outbox,
            encode(ferry_journal::encode_outbox_entry),
        );
        write_records(
            batch,
            &store.tombstones,
            &self.tombstones,
            encode(ferry_journal::encode_tombstone),
        );
        write_records(
            batch,
            &store.quarantine,
            &self.quarantine,
            encode(ferry_journal::encode_quarantine),
        );
        for (key, conflict) in &self.conflicts {
            let value = encode(ferry_journal::encode_conflict)(conflict);
            batch.insert(&store.conflicts, key.clone(), value);
        }
        // The log keeps the newest records: the oldest go as new ones come (keys start
        // with the time, so the oldest come first).
        let held = store.conflicts_len.load(Ordering::Acquire) + self.conflicts.len();
        let excess = held.saturating_sub(CONFLICTS_MAX).min(self.conflicts.len());
        for key in store
            .conflicts
            .iter()
            .take(excess)
            .filter_map(|g| g.key().ok())
        {
            batch.remove(&store.conflicts, key);
        }
        for (name, value) in &self.meta {
            batch.insert(&store.meta, meta_key(name), value.clone());
        }
        held - excess
    }
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

/// The sequence at the end of a conflict record key.
fn conflict_seq(key: &[u8]) -> Option<u32> {
    let seq = key.get(key.len().checked_sub(CONFLICT_SEQ_BYTES)?..)?;
    Some(u32::from_be_bytes(seq.try_into().ok()?))
}

fn meta_key(name: &str) -> String {
    format!("{META_STATE_PREFIX}{name}")
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
        let has_sort = self.schema.primary().sort.is_some();
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

    /// The pending version of `key` (committed state) and the encoded size of its entry,
    /// without decoding the entry's item.
    pub fn pending_version_and_bytes(&self, key: &Key) -> Result<Option<(Version, usize)>> {
        let value = (self.outbox.get(layout::key_bytes(key))).map_err(|e| self.fail(e))?;
        value
            .map(|v| {
                Ok((
                    self.decoded(ferry_journal::decode_outbox_version(&v))?,
                    v.len(),
                ))
            })
            .transpose()
    }

    fn pending_version_at(&self, key: &[u8]) -> Result<Option<Version>> {
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
