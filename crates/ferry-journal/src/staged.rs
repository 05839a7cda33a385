//! The journal's rules for one write: what its records do to what is committed. A write
//! stages records here (a store's transaction holds one [`StagedRecords`]), reading its own
//! records first and what is committed through [`Committed`]; the store then writes every
//! staged record in the same batch as the data.
//!
//! The rules: the outbox holds one entry per key, the newest version, keeping the oldest
//! pending write's `base` ([`OutboxEntry::replaced_by`]); a new key past the outbox's bound
//! is refused ([`OutboxFull`]), never dropped; settling removes an entry only at or
//! below the acknowledged version; the quarantine holds the newest refused change per key;
//! the conflict log keeps every record, apart by a sequence per key and millisecond, and
//! its newest [`CONFLICTS_MAX`].
//!
//! Record keys are a key's order-preserving bytes (`keycode::key_bytes`); conflict keys are
//! big-endian `at_ms` ++ key bytes ++ big-endian u32 sequence (the time first, so the
//! oldest come first).

use std::collections::BTreeMap;

use ferry_types::keycode::key_bytes;
use ferry_types::{Key, Version};

use crate::{ConflictRecord, OutboxEntry, QuarantineRecord, Tombstone};

/// Conflict records kept; older ones are dropped as new ones arrive.
pub const CONFLICTS_MAX: usize = 10_000;
/// Bytes of the sequence suffix of a conflict record key.
const CONFLICT_SEQ_BYTES: usize = 4;

/// The outbox holds as many changes as it may: the write is refused, nothing is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxFull {
    /// The bound that was reached.
    pub limit: usize,
}

/// What the journal reads of the committed records (a store implements it). Keys are
/// `ferry_types::keycode::key_bytes`.
pub trait Committed {
    /// The committed side's failure (corrupt bytes, I/O), which the journal's become.
    type Error: From<OutboxFull>;
    /// The pending outbox entry at `key`.
    fn pending(&self, key: &[u8]) -> Result<Option<OutboxEntry>, Self::Error>;
    /// Its version alone (the item need not be decoded).
    fn pending_version(&self, key: &[u8]) -> Result<Option<Version>, Self::Error>;
    /// The quarantined change at `key`.
    fn quarantined(&self, key: &[u8]) -> Result<Option<QuarantineRecord>, Self::Error>;
    /// The tombstone at `key`.
    fn tombstone(&self, key: &[u8]) -> Result<Option<Tombstone>, Self::Error>;
    /// The last conflict record key that starts with `prefix`.
    fn last_conflict(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, Self::Error>;
    /// How many outbox entries are committed.
    fn outbox_len(&self) -> usize;
    /// How many the outbox may hold.
    fn outbox_max(&self) -> usize;
}

/// Staged records of one kind by key; `None`: the record is removed. Records are boxed:
/// inline, eleven of them make a map node of up to several KiB, and glibc serves a request
/// that large only after consolidating every small chunk freed since the last one. Every
/// replicated write made one, at a sixth of the writer's CPU time.
pub type Records<T> = BTreeMap<Vec<u8>, Option<Box<T>>>;

/// A record with its encoding, made once: the size a queued entry reports and the bytes the
/// store writes.
pub struct Encoded<T> {
    /// The record.
    pub record: T,
    /// Its encoding.
    pub bytes: Vec<u8>,
}

/// The records one write has staged, keyed like the committed ones.
#[derive(Default)]
pub struct StagedRecords {
    outbox: Records<Encoded<OutboxEntry>>,
    tombstones: Records<Tombstone>,
    conflicts: BTreeMap<Vec<u8>, Box<ConflictRecord>>,
    quarantine: Records<QuarantineRecord>,
    meta: BTreeMap<String, Vec<u8>>,
    /// Outbox entries this write adds (new keys) minus those it settles.
    outbox_delta: isize,
    /// Quarantine records this write adds (new keys) minus those it releases.
    quarantine_delta: isize,
}

impl StagedRecords {
    /// Nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.outbox.is_empty()
            && self.tombstones.is_empty()
            && self.conflicts.is_empty()
            && self.quarantine.is_empty()
            && self.meta.is_empty()
    }

    /// The pending entry of `key`, as this write has left it so far.
    pub fn pending<C: Committed>(
        &self,
        committed: &C,
        key: &Key,
    ) -> Result<Option<OutboxEntry>, C::Error> {
        let bytes = key_bytes(key);
        match self.outbox.get(&bytes) {
            Some(staged) => Ok(staged.as_ref().map(|staged| staged.record.clone())),
            None => committed.pending(&bytes),
        }
    }

    /// Queues `entry` unless a newer version of its key is pending; a pending older one
    /// is replaced and its `base` kept (a cloud change between the two writes was never
    /// seen either). Returns the queued entry's encoded size, `None` when it was not queued.
    pub fn queue<C: Committed>(
        &mut self,
        committed: &C,
        mut entry: OutboxEntry,
    ) -> Result<Option<usize>, C::Error> {
        match self.pending(committed, &entry.change.key)? {
            Some(pending) if !pending.replaced_by(&entry.change) => return Ok(None),
            Some(pending) => entry.change.base = pending.change.base,
            None => {
                let len = committed.outbox_len() as isize + self.outbox_delta;
                if len >= committed.outbox_max() as isize {
                    let limit = committed.outbox_max();
                    return Err(OutboxFull { limit }.into());
                }
                self.outbox_delta += 1;
            }
        }
        let key = key_bytes(&entry.change.key);
        let mut bytes = Vec::new();
        crate::encode_outbox_entry(&entry, &mut bytes);
        let size = bytes.len();
        let record = Encoded {
            record: entry,
            bytes,
        };
        self.outbox.insert(key, Some(Box::new(record)));
        Ok(Some(size))
    }

    /// Removes the pending entry of `key` if the cloud holds its version (`acked` is the
    /// same or newer). Returns whether it was removed: a newer entry stays pending.
    pub fn settle<C: Committed>(
        &mut self,
        committed: &C,
        key: &Key,
        acked: &Version,
    ) -> Result<bool, C::Error> {
        let read = |bytes: &[u8]| committed.pending_version(bytes);
        self.settle_with(key_bytes(key), acked, read)
    }

    /// [`StagedRecords::settle`] of the entry at `key_bytes`, by a caller who knows the
    /// committed entry is `acked` itself (nothing is read).
    pub fn settle_known(&mut self, key_bytes: Vec<u8>, acked: &Version) -> bool {
        let known = |_: &[u8]| Ok::<_, std::convert::Infallible>(Some(acked.clone()));
        (self.settle_with(key_bytes, acked, known)).unwrap_or_else(|never| match never {})
    }

    fn settle_with<E>(
        &mut self,
        bytes: Vec<u8>,
        acked: &Version,
        committed: impl FnOnce(&[u8]) -> Result<Option<Version>, E>,
    ) -> Result<bool, E> {
        // The version alone: the entry's item need not be decoded.
        let pending = match self.outbox.get(&bytes) {
            Some(staged) => (staged.as_ref()).map(|staged| staged.record.change.version.clone()),
            None => committed(&bytes)?,
        };
        match pending {
            Some(pending) if pending <= *acked => {
                self.outbox.insert(bytes, None);
                self.outbox_delta -= 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The quarantined change of `key`, as this write has left it so far.
    pub fn quarantined<C: Committed>(
        &self,
        committed: &C,
        key: &Key,
    ) -> Result<Option<QuarantineRecord>, C::Error> {
        let bytes = key_bytes(key);
        match self.quarantine.get(&bytes) {
            Some(staged) => Ok(staged.as_deref().cloned()),
            None => committed.quarantined(&bytes),
        }
    }

    /// Keeps a change that cannot apply: one record per key, the newest change.
    pub fn quarantine<C: Committed>(
        &mut self,
        committed: &C,
        record: QuarantineRecord,
    ) -> Result<(), C::Error> {
        let held = self.quarantined(committed, &record.change.key)?;
        let bytes = key_bytes(&record.change.key);
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
    pub fn release_quarantine<C: Committed>(
        &mut self,
        committed: &C,
        key: &Key,
        version: &Version,
    ) -> Result<(), C::Error> {
        let held = self.quarantined(committed, key)?;
        if held.is_some_and(|held| held.change.version <= *version) {
            self.quarantine.insert(key_bytes(key), None);
            self.quarantine_delta -= 1;
        }
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) the tombstone of `key`.
    pub fn set_tombstone(&mut self, key: &Key, tombstone: Option<Tombstone>) {
        let tombstone = tombstone.map(Box::new);
        self.tombstones.insert(key_bytes(key), tombstone);
    }

    /// The tombstone of `key`, as this write has left it so far.
    pub fn tombstone<C: Committed>(
        &self,
        committed: &C,
        key: &Key,
    ) -> Result<Option<Tombstone>, C::Error> {
        let bytes = key_bytes(key);
        match self.tombstones.get(&bytes) {
            Some(staged) => Ok(staged.as_deref().cloned()),
            None => committed.tombstone(&bytes),
        }
    }

    /// Adds a losing version to the conflict log; conflicts of one key in one millisecond
    /// are all kept.
    pub fn log_conflict<C: Committed>(
        &mut self,
        committed: &C,
        conflict: ConflictRecord,
    ) -> Result<(), C::Error> {
        let mut prefix = conflict.at_ms.to_be_bytes().to_vec();
        prefix.extend_from_slice(&key_bytes(&conflict.loser.key));
        let seq = self.next_conflict_seq(committed, &prefix)?;
        prefix.extend_from_slice(&seq.to_be_bytes());
        self.conflicts.insert(prefix, Box::new(conflict));
        Ok(())
    }

    /// The sequence after every conflict record of this time and key, committed or staged.
    /// Key bytes are self-delimiting, so `prefix` matches this key's records only.
    fn next_conflict_seq<C: Committed>(
        &self,
        committed: &C,
        prefix: &[u8],
    ) -> Result<u32, C::Error> {
        let staged = (self.conflicts.range(prefix.to_vec()..))
            .take_while(|(k, _)| k.starts_with(prefix))
            .last()
            .map(|(k, _)| k.clone());
        let stored = committed.last_conflict(prefix)?;
        let last = staged.max(stored).and_then(|k| conflict_seq(&k));
        // 4 billion conflicts of one key in one millisecond cannot happen: saturating
        // (which would overwrite the last record) only rules out a panic.
        Ok(last.map_or(0, |seq| seq.saturating_add(1)))
    }

    /// Stores a sync state value (clock, cursor, device identity).
    pub fn set_meta(&mut self, name: &str, value: Vec<u8>) {
        self.meta.insert(name.to_string(), value);
    }

    /// The staged outbox records, encoded (`None`: removed).
    pub fn outbox(&self) -> &Records<Encoded<OutboxEntry>> {
        &self.outbox
    }

    /// The outbox entries this write queued, with their encoded sizes, taken out once they
    /// are written: what the sync engine hears of, and the driver pushes without reading
    /// them back.
    pub fn into_queued(self) -> Vec<(OutboxEntry, usize)> {
        (self.outbox.into_values().flatten())
            .map(|staged| (staged.record, staged.bytes.len()))
            .collect()
    }

    /// The staged tombstones (`None`: removed).
    pub fn tombstones(&self) -> &Records<Tombstone> {
        &self.tombstones
    }

    /// The staged quarantine records (`None`: released).
    pub fn quarantine_records(&self) -> &Records<QuarantineRecord> {
        &self.quarantine
    }

    /// The conflict records this write adds.
    pub fn conflicts(&self) -> &BTreeMap<Vec<u8>, Box<ConflictRecord>> {
        &self.conflicts
    }

    /// The sync state values this write sets.
    pub fn meta(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.meta
    }

    /// Outbox entries this write adds (new keys) minus those it settles.
    pub fn outbox_delta(&self) -> isize {
        self.outbox_delta
    }

    /// Quarantine records this write adds minus those it releases.
    pub fn quarantine_delta(&self) -> isize {
        self.quarantine_delta
    }

    /// How many of the oldest committed conflict records to drop when this write commits
    /// over `held` of them, so that the log keeps its newest [`CONFLICTS_MAX`].
    pub fn conflicts_to_trim(&self, held: usize) -> usize {
        let after = held + self.conflicts.len();
        after
            .saturating_sub(CONFLICTS_MAX)
            .min(self.conflicts.len())
    }
}

/// The sequence at the end of a conflict record key.
fn conflict_seq(key: &[u8]) -> Option<u32> {
    let seq = key.get(key.len().checked_sub(CONFLICT_SEQ_BYTES)?..)?;
    Some(u32::from_be_bytes(seq.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use ferry_types::{Hlc, ReplicaId, Value};

    use super::*;
    use crate::{Change, ChangeOp};

    /// Committed records in memory: what a store holds between writes.
    #[derive(Default)]
    struct Memory {
        outbox: BTreeMap<Vec<u8>, OutboxEntry>,
        quarantine: BTreeMap<Vec<u8>, QuarantineRecord>,
        tombstones: BTreeMap<Vec<u8>, Tombstone>,
        conflicts: BTreeMap<Vec<u8>, ConflictRecord>,
        outbox_max: usize,
    }

    impl Committed for Memory {
        type Error = OutboxFull;

        fn pending(&self, key: &[u8]) -> Result<Option<OutboxEntry>, OutboxFull> {
            Ok(self.outbox.get(key).cloned())
        }

        fn pending_version(&self, key: &[u8]) -> Result<Option<Version>, OutboxFull> {
            Ok(self.outbox.get(key).map(|e| e.change.version.clone()))
        }

        fn quarantined(&self, key: &[u8]) -> Result<Option<QuarantineRecord>, OutboxFull> {
            Ok(self.quarantine.get(key).cloned())
        }

        fn tombstone(&self, key: &[u8]) -> Result<Option<Tombstone>, OutboxFull> {
            Ok(self.tombstones.get(key).cloned())
        }

        fn last_conflict(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, OutboxFull> {
            let after = (self.conflicts.range(prefix.to_vec()..))
                .take_while(|(k, _)| k.starts_with(prefix))
                .last();
            Ok(after.map(|(k, _)| k.clone()))
        }

        fn outbox_len(&self) -> usize {
            self.outbox.len()
        }

        fn outbox_max(&self) -> usize {
            self.outbox_max
        }
    }

    impl Memory {
        fn with_outbox_max(outbox_max: usize) -> Memory {
            Memory {
                outbox_max,
                ..Memory::default()
            }
        }

        /// Commits `staged` as a store's batch would.
        fn commit(&mut self, staged: StagedRecords) {
            fn apply<T: Clone>(into: &mut BTreeMap<Vec<u8>, T>, records: &Records<T>) {
                for (key, record) in records {
                    match record {
                        Some(record) => into.insert(key.clone(), (**record).clone()),
                        None => into.remove(key),
                    };
                }
            }
            for (key, record) in staged.outbox() {
                match record {
                    Some(staged) => self.outbox.insert(key.clone(), staged.record.clone()),
                    None => self.outbox.remove(key),
                };
            }
            apply(&mut self.quarantine, staged.quarantine_records());
            apply(&mut self.tombstones, staged.tombstones());
            for (key, conflict) in staged.conflicts() {
                self.conflicts.insert(key.clone(), (**conflict).clone());
            }
        }
    }

    fn key(n: u8) -> Key {
        Key {
            hash: Value::S(format!("k{n}")),
            sort: None,
        }
    }

    fn version(hlc: u64) -> Version {
        Version {
            hlc: Hlc::from_u64(hlc),
            replica: ReplicaId::parse("dev1").unwrap(),
        }
    }

    fn change(n: u8, hlc: u64, base: Option<u64>) -> Change {
        Change {
            model: "T".into(),
            key: key(n),
            op: ChangeOp::Put,
            version: version(hlc),
            scope: "*".into(),
            item: None,
            base: base.map(version),
        }
    }

    fn entry(n: u8, hlc: u64) -> OutboxEntry {
        OutboxEntry {
            change: change(n, hlc, Some(hlc - 1)),
            queued_ms: hlc,
        }
    }

    fn queued(memory: &mut Memory, entry: OutboxEntry) -> Result<bool, OutboxFull> {
        let mut staged = StagedRecords::default();
        let queued = staged.queue(memory, entry)?;
        memory.commit(staged);
        Ok(queued.is_some())
    }

    #[test]
    fn the_outbox_keeps_the_newest_change_of_a_key_with_the_oldest_base() {
        let mut memory = Memory::with_outbox_max(10);
        assert_eq!(queued(&mut memory, entry(0, 2)), Ok(true));
        assert_eq!(
            queued(&mut memory, entry(0, 1)),
            Ok(false),
            "an older change does not replace"
        );
        assert_eq!(
            queued(&mut memory, entry(0, 2)),
            Ok(false),
            "nor does a replay"
        );
        // Within one write, the second queue sees the first.
        let mut staged = StagedRecords::default();
        let size = staged.queue(&memory, entry(0, 3)).unwrap();
        assert_eq!(
            size,
            Some(entry(0, 3).encoded_len()),
            "the size the store writes"
        );
        assert!(staged.queue(&memory, entry(0, 4)).unwrap().is_some());
        let pending = staged.pending(&memory, &key(0)).unwrap().unwrap();
        assert_eq!(pending.change.version, version(4));
        assert_eq!(
            pending.change.base,
            Some(version(1)),
            "the first pending write's base"
        );
        assert_eq!(staged.outbox_delta(), 0, "the key was pending already");
        memory.commit(staged);
        assert_eq!(memory.outbox.len(), 1, "one entry per key");
    }

    #[test]
    fn a_full_outbox_refuses_a_new_key_and_still_takes_a_newer_write_of_a_pending_one() {
        let mut memory = Memory::with_outbox_max(2);
        queued(&mut memory, entry(0, 1)).unwrap();
        let mut staged = StagedRecords::default();
        assert!(staged.queue(&memory, entry(1, 1)).unwrap().is_some());
        assert_eq!(
            staged.queue(&memory, entry(2, 1)),
            Err(OutboxFull { limit: 2 }),
            "the bound counts what this write staged"
        );
        memory.commit(staged);
        assert_eq!(
            queued(&mut memory, entry(0, 5)),
            Ok(true),
            "coalescing adds no entry"
        );
        // Settling makes room within the same write.
        let mut staged = StagedRecords::default();
        assert_eq!(staged.settle(&memory, &key(1), &version(1)), Ok(true));
        assert!(staged.queue(&memory, entry(2, 1)).unwrap().is_some());
    }

    #[test]
    fn settling_removes_only_an_acknowledged_version() {
        let mut memory = Memory::with_outbox_max(10);
        let mut staged = StagedRecords::default();
        assert_eq!(
            staged.settle(&memory, &key(0), &version(5)),
            Ok(false),
            "nothing pending"
        );
        queued(&mut memory, entry(0, 5)).unwrap();
        let mut staged = StagedRecords::default();
        assert_eq!(
            staged.settle(&memory, &key(0), &version(4)),
            Ok(false),
            "an older ack keeps it"
        );
        assert_eq!(
            staged.settle(&memory, &key(0), &version(6)),
            Ok(true),
            "a newer ack covers it"
        );
        assert_eq!(staged.outbox_delta(), -1);
        assert_eq!(staged.pending(&memory, &key(0)), Ok(None));
        // A change queued in the same write is settled by the same write.
        staged.queue(&memory, entry(1, 7)).unwrap();
        assert_eq!(staged.settle(&memory, &key(1), &version(7)), Ok(true));
        memory.commit(staged);
        assert!(memory.outbox.is_empty());
    }

    #[test]
    fn the_quarantine_keeps_the_newest_refused_change_and_releases_it_only_when_covered() {
        let record = |hlc| QuarantineRecord {
            change: change(0, hlc, None),
            reason: format!("refused at {hlc}"),
            at_ms: hlc,
        };
        let mut memory = Memory::with_outbox_max(10);
        let mut staged = StagedRecords::default();
        staged.quarantine(&memory, record(5)).unwrap();
        staged.quarantine(&memory, record(3)).unwrap();
        assert_eq!(staged.quarantine_delta(), 1, "one record per key");
        memory.commit(staged);
        assert_eq!(
            memory.quarantine[&key_bytes(&key(0))].reason,
            "refused at 5"
        );
        let mut staged = StagedRecords::default();
        staged
            .release_quarantine(&memory, &key(0), &version(4))
            .unwrap();
        assert_eq!(
            staged.quarantine_delta(),
            0,
            "an older version releases nothing"
        );
        staged
            .release_quarantine(&memory, &key(0), &version(5))
            .unwrap();
        assert_eq!(staged.quarantine_delta(), -1);
        assert_eq!(staged.quarantined(&memory, &key(0)), Ok(None));
    }

    #[test]
    fn conflicts_of_one_key_in_one_millisecond_are_all_kept_and_the_log_trims_its_oldest() {
        let conflict = |loser| ConflictRecord {
            winner: version(100),
            loser: change(0, loser, None),
            at_ms: 7,
        };
        let mut memory = Memory::with_outbox_max(10);
        let mut staged = StagedRecords::default();
        staged.log_conflict(&memory, conflict(1)).unwrap();
        staged.log_conflict(&memory, conflict(2)).unwrap();
        memory.commit(staged);
        let mut staged = StagedRecords::default();
        staged.log_conflict(&memory, conflict(3)).unwrap();
        memory.commit(staged);
        let losers: Vec<Version> = memory
            .conflicts
            .values()
            .map(|c| c.loser.version.clone())
            .collect();
        assert_eq!(
            losers,
            vec![version(1), version(2), version(3)],
            "apart, in order"
        );
        let mut staged = StagedRecords::default();
        staged.log_conflict(&memory, conflict(4)).unwrap();
        assert_eq!(staged.conflicts_to_trim(CONFLICTS_MAX - 1), 0);
        assert_eq!(staged.conflicts_to_trim(CONFLICTS_MAX), 1);
        assert_eq!(
            staged.conflicts_to_trim(CONFLICTS_MAX + 50),
            1,
            "one out per one in"
        );
    }
}
