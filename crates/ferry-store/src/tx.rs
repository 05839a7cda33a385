//! One atomic write: reads that see its own writes, and a commit that writes items, index
//! entries, expiries, unique claims and replication records in a single fjall batch.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_journal::{ConflictRecord, OutboxEntry, QuarantineRecord, StagedRecords, Tombstone};
use ferry_types::{Item, Key, Value, Version, item_size};

use crate::layout;
use crate::store::Store;
use crate::{Error, Result};
use ferry_types::Durability;

/// One change made by a write, for triggers and (later) the journal. Its items are shared
/// with the write that made them, which would otherwise copy each item several times.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemChange {
    /// The item's primary key.
    pub key: Key,
    /// The item before the change (`None`: it did not exist).
    pub old: Option<Arc<Item>>,
    /// The item after the change (`None`: it was removed).
    pub new: Option<Arc<Item>>,
}

/// An item as a write holds it, shared with the changes it reports (`None`: no item).
type Held = Option<Arc<Item>>;

/// A write in progress. Obtained from [`Store::write`].
pub struct Tx<'s> {
    store: &'s Store,
    durability: Durability,
    /// Per touched key: the stored item when first touched, and the latest state.
    touched: BTreeMap<Vec<u8>, (Held, Held)>,
    /// Items read from the store and not touched yet: a write reads its item once, however
    /// many of its steps (condition, version, the put itself) look at it.
    read: RefCell<BTreeMap<Vec<u8>, Held>>,
    /// Unique claims changed so far: claim text -> owning primary key bytes (`None`: released).
    claims: BTreeMap<String, Option<Vec<u8>>>,
    /// Outbox entries, tombstones, conflicts and sync state to write with the items.
    journal: StagedRecords,
    changes: Vec<ItemChange>,
    /// What the caller keeps in memory of this write, once it has committed.
    after_commit: Vec<Box<dyn FnOnce() + 's>>,
    /// Who hears of the outbox entries this write queued, once it has committed.
    on_queued: Option<QueuedHook<'s>>,
}

/// Takes the outbox entries a write queued, with their encoded sizes, and the number of
/// its commit ([`Store::settle`](crate::Store::settle) takes it back).
type QueuedHook<'s> = Box<dyn FnOnce(Vec<(OutboxEntry, usize)>, u64) + 's>;

impl<'s> Tx<'s> {
    pub(crate) fn new(store: &'s Store, durability: Durability) -> Tx<'s> {
        Tx {
            store,
            durability,
            touched: BTreeMap::new(),
            read: RefCell::default(),
            claims: BTreeMap::new(),
            journal: StagedRecords::default(),
            changes: Vec::new(),
            after_commit: Vec::new(),
            on_queued: None,
        }
    }

    /// Runs `f` once this write has committed, and never if it fails: how a caller keeps
    /// in memory only what is on disk (a clock's persisted reservation, queued entries to
    /// report). Commits are serialized, so these run in commit order.
    pub fn after_commit(&mut self, f: impl FnOnce() + 's) {
        self.after_commit.push(Box::new(f));
    }

    /// Hands `f` the outbox entries this write queued (as the write left them, with their
    /// encoded sizes) and the number of its commit, once it has committed, after the
    /// [`Tx::after_commit`] calls; never if it fails. One taker per write: the first; later
    /// calls change nothing (a write that queues many changes installs it once).
    pub fn after_commit_queued(&mut self, f: impl FnOnce(Vec<(OutboxEntry, usize)>, u64) + 's) {
        if self.on_queued.is_none() {
            self.on_queued = Some(Box::new(f));
        }
    }

    /// Asks for an fsync before the commit returns (it never lowers durability).
    pub fn require(&mut self, durability: Durability) {
        if durability == Durability::Immediate {
            self.durability = durability;
        }
    }

    /// Reads an item as this write has left it so far, shared rather than copied (a
    /// caller that changes it takes its own copy: `Arc::unwrap_or_clone`).
    pub fn get(&self, key: &Key) -> Result<Held> {
        self.shared(&layout::key_bytes(key), key)
    }

    fn shared(&self, bytes: &[u8], key: &Key) -> Result<Held> {
        if let Some((_, latest)) = self.touched.get(bytes) {
            return Ok(latest.clone());
        }
        if let Some(item) = self.read.borrow().get(bytes) {
            return Ok(item.clone());
        }
        let item = self.store.get(key)?.map(Arc::new);
        self.read.borrow_mut().insert(bytes.to_vec(), item.clone());
        Ok(item)
    }

    /// Stores `item` under its primary key, replacing what was there. Returns the item as
    /// stored, shared with the change it makes.
    pub fn put(&mut self, item: Item) -> Result<Arc<Item>> {
        let key = self.store.key_of(&item)?;
        let size = item_size(&item);
        if size > self.store.item_bytes_max {
            return Err(Error::TooLarge {
                key: key.to_string(),
                size,
                limit: self.store.item_bytes_max,
            });
        }
        let item = Arc::new(item);
        self.apply(key, Some(item.clone()))?;
        Ok(item)
    }

    /// Removes the item under `key`. Returns the removed item, if there was one.
    pub fn delete(&mut self, key: &Key) -> Result<Option<Arc<Item>>> {
        self.apply(key.clone(), None)
    }

    fn apply(&mut self, key: Key, new: Held) -> Result<Held> {
        let bytes = layout::key_bytes(&key);
        let old = match self.read.get_mut().remove(&bytes) {
            Some(read) => read,
            None => self.shared(&bytes, &key)?,
        };
        self.move_claims(&bytes, old.as_deref(), new.as_deref())?;
        match self.touched.get_mut(&bytes) {
            Some((_, latest)) => *latest = new.clone(),
            None => {
                self.touched.insert(bytes, (old.clone(), new.clone()));
            }
        }
        self.changes.push(ItemChange {
            key,
            old: old.clone(),
            new,
        });
        Ok(old)
    }

    /// Releases the old item's unique values and claims the new item's, failing if a
    /// value is claimed by another item.
    fn move_claims(&mut self, owner: &[u8], old: Option<&Item>, new: Option<&Item>) -> Result<()> {
        let old_claims = old.map(|i| self.unique_keys(i)).unwrap_or_default();
        let new_claims = new.map(|i| self.unique_keys(i)).unwrap_or_default();
        for (model, field, text) in &new_claims {
            let holder = match self.claims.get(text) {
                Some(holder) => holder.clone(),
                None => self
                    .store
                    .unique
                    .get(text)
                    .map_err(|e| self.store.fail(e))?
                    .map(|v| v.to_vec()),
            };
            if holder.is_some_and(|h| h != owner) {
                return Err(Error::Unique {
                    model: model.clone(),
                    field: field.clone(),
                });
            }
        }
        let kept: BTreeSet<&String> = new_claims.iter().map(|(_, _, t)| t).collect();
        for (_, _, text) in old_claims.iter().filter(|(_, _, t)| !kept.contains(t)) {
            self.claims.insert(text.clone(), None);
        }
        for (_, _, text) in new_claims {
            self.claims.insert(text, Some(owner.to_vec()));
        }
        Ok(())
    }

    /// (kind, field, claim text) for every unique claim of the item's kind.
    fn unique_keys(&self, item: &Item) -> Vec<(String, String, String)> {
        let layout = &self.store.layout;
        let Some(claims) = layout.kind_of(item).and_then(|k| k.claims.as_ref()) else {
            return Vec::new();
        };
        let kind = (item.get(&layout.type_field)).and_then(Value::as_str);
        let kind = kind.unwrap_or_default().to_string();
        (claims(item).into_iter())
            .map(|(field, text)| (kind.clone(), field, text))
            .collect()
    }

    /// Expiry second of an item whose kind has an expiry attribute set.
    fn expiry_of(&self, item: &Item) -> Option<u64> {
        let attr = self.store.layout.kind_of(item)?.ttl.as_deref()?;
        match item.get(attr)? {
            Value::N(n) => n.as_i64().map(|s| s.max(0) as u64),
            _ => None,
        }
    }

    /// Writes every touched key's final state, with its index, expiry and unique records,
    /// and the staged replication records, in one batch.
    pub(crate) fn commit(mut self) -> Result<Vec<ItemChange>> {
        let after_commit = std::mem::take(&mut self.after_commit);
        let on_queued = self.on_queued.take();
        let (changes, journal, commit) = self.commit_batch()?;
        after_commit.into_iter().for_each(|f| f());
        if let Some(f) = on_queued {
            f(journal.into_queued(), commit);
        }
        Ok(changes)
    }

    /// Writes the batch; returns the changes, the records and the number of the commit
    /// (`OutboxWrites`).
    fn commit_batch(self) -> Result<(Vec<ItemChange>, StagedRecords, u64)> {
        let store = self.store;
        if self.touched.is_empty() && self.journal.is_empty() {
            let commit = crate::journal::lock(&store.outbox_writes).latest();
            return Ok((self.changes, self.journal, commit));
        }
        let mut batch = store.db.batch();
        for (key, (old, new)) in &self.touched {
            match new {
                Some(item) => batch.insert(&store.items, key.clone(), layout::encode_item(item)),
                None if old.is_some() => batch.remove(&store.items, key.clone()),
                None => {}
            }
            self.write_indexes(&mut batch, key, old.as_deref(), new.as_deref());
            let in_memory = |item: &Held| {
                (item.as_ref())
                    .and_then(|i| store.layout.kind_of(i))
                    .is_some_and(|kind| kind.memory)
            };
            if in_memory(new) {
                batch.insert(&store.memory, key.clone(), []);
            } else if in_memory(old) {
                batch.remove(&store.memory, key.clone());
            }
            let old_expiry = old.as_ref().and_then(|i| self.expiry_of(i));
            let new_expiry = new.as_ref().and_then(|i| self.expiry_of(i));
            if old_expiry != new_expiry {
                if let Some(at) = old_expiry {
                    batch.remove(&store.expiry, layout::expiry_key(at, key));
                }
                if let Some(at) = new_expiry {
                    batch.insert(&store.expiry, layout::expiry_key(at, key), []);
                }
            }
        }
        for (text, owner) in &self.claims {
            match owner {
                Some(owner) => batch.insert(&store.unique, text.as_bytes(), owner.clone()),
                None => batch.remove(&store.unique, text.as_bytes()),
            }
        }
        // A batch reaches the OS only when asked to: `Buffer` is what makes a commit
        // survive a process crash; the syncer fsyncs it within the window.
        let mode = match self.durability {
            Durability::Immediate => fjall::PersistMode::SyncAll,
            Durability::Default => fjall::PersistMode::Buffer,
        };
        // Recorded before the batch is visible, whether it then commits or not: a settle
        // (under the write lock, as this is) finds every write to the outbox there.
        let outbox = (self.journal.outbox().iter()).map(|(key, staged)| {
            let version = staged.as_ref().map(|staged| &staged.record.change.version);
            (key.as_slice(), version)
        });
        let commit = crate::journal::lock(&store.outbox_writes).record(outbox);
        // Counted before the batch is visible: a reader who meets it and persists fsyncs it.
        let begun = store.flushes.begin();
        let written = (|| {
            if let Some(hook) = &store.on_commit {
                hook().map_err(|e| store.fail(fjall::Error::Io(e)))?;
            }
            let conflicts_len = crate::journal::write_staged(store, &self.journal, &mut batch);
            (batch.durability(Some(mode)).commit()).map_err(|e| store.fail(e))?;
            Ok::<_, Error>(conflicts_len)
        })();
        let ended = begun.end();
        let conflicts_len = written?;
        // An `Immediate` commit whose disk failed may be lost: refuse more, as
        // `Store::persist` does. Its fsync covers every commit before it.
        if mode != fjall::PersistMode::Buffer {
            store.fsynced().map_err(|e| {
                store.poisoned.store(true, Ordering::Release);
                store.fail(fjall::Error::Io(e))
            })?;
            store.flushes.covered(ended);
        }
        // Commits are serialized by the write lock, so the counts move by whole batches.
        let moved = |count: &AtomicUsize, delta: isize| {
            let len = count.load(Ordering::Acquire) as isize + delta;
            debug_assert!(len >= 0, "a batch removes no record it did not find");
            count.store(len.max(0) as usize, Ordering::Release);
        };
        moved(&store.outbox_len, self.journal.outbox_delta());
        moved(&store.quarantine_len, self.journal.quarantine_delta());
        store.conflicts_len.store(conflicts_len, Ordering::Release);
        Ok((self.changes, self.journal, commit))
    }

    /// Removes the entries the old item had and adds the new item's, per secondary index.
    fn write_indexes(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        key: &[u8],
        old: Option<&Item>,
        new: Option<&Item>,
    ) {
        let store = self.store;
        let (primary, type_field) = (&store.layout.primary, &store.layout.type_field);
        for (index, keyspace) in &store.indexes {
            let change = layout::index_change(index, primary, type_field, key, old, new);
            if let Some(entry) = change.remove {
                batch.remove(keyspace, entry);
            }
            if let Some((entry, value)) = change.put {
                batch.insert(keyspace, entry, value);
            }
        }
    }
}

/// Replication records, staged in the same batch as the items so that a write and its
/// outbox entry (or tombstone, or conflict) commit together or not at all.
impl Tx<'_> {
    /// Queues a local change for upload. A pending entry of the same key is replaced only
    /// by a newer version ([`OutboxEntry::replaced_by`]), and then its `base` is kept.
    /// Returns the queued entry's encoded size (what the outbox holds of it), `None` when
    /// a newer one is pending.
    pub fn queue(&mut self, entry: OutboxEntry) -> Result<Option<usize>> {
        self.journal.queue(self.store, entry)
    }

    /// Keeps a change that cannot apply, with why; one record per key, the newest.
    pub fn quarantine(&mut self, record: QuarantineRecord) -> Result<()> {
        self.journal.quarantine(self.store, record)
    }

    /// The quarantined change of `key`, as this write has left it so far.
    pub fn quarantined(&self, key: &Key) -> Result<Option<QuarantineRecord>> {
        self.journal.quarantined(self.store, key)
    }

    /// Forgets the quarantined change of `key` if it is at or below `version` (that change
    /// applied, or a newer one did).
    pub fn release_quarantine(&mut self, key: &Key, version: &Version) -> Result<()> {
        self.journal.release_quarantine(self.store, key, version)
    }

    /// Removes the pending entry of `key` when the cloud acknowledged its version (`acked`
    /// is the same or newer). Returns whether it was removed: a newer entry stays pending.
    pub fn settle(&mut self, key: &Key, acked: &Version) -> Result<bool> {
        self.journal.settle(self.store, key, acked)
    }

    /// [`Tx::settle`] of the entry at `key_bytes`, by a caller who knows the committed
    /// entry is `acked` itself ([`Store::settle`]).
    pub(crate) fn settle_known(&mut self, key_bytes: Vec<u8>, acked: &Version) {
        self.journal.settle_known(key_bytes, acked);
    }

    /// The pending outbox entry of `key`, as this write has left it so far.
    pub fn pending(&self, key: &Key) -> Result<Option<OutboxEntry>> {
        self.journal.pending(self.store, key)
    }

    /// Remembers that `key` was deleted, replacing an earlier tombstone.
    pub fn set_tombstone(&mut self, key: &Key, tombstone: Tombstone) {
        self.journal.set_tombstone(key, Some(tombstone));
    }

    /// Forgets the tombstone of `key` (a newer put revived it, or retention expired it) and
    /// returns it. Without one it stages nothing: a removal of nothing would still be a
    /// record in the batch, and one more for compaction to drop.
    pub fn take_tombstone(&mut self, key: &Key) -> Result<Option<Tombstone>> {
        let tombstone = self.tombstone(key)?;
        if tombstone.is_some() {
            self.journal.set_tombstone(key, None);
        }
        Ok(tombstone)
    }

    /// The tombstone of `key`, as this write has left it so far.
    pub fn tombstone(&self, key: &Key) -> Result<Option<Tombstone>> {
        self.journal.tombstone(self.store, key)
    }

    /// Adds a losing version to the conflict log; conflicts of the same key at the same
    /// millisecond are all kept.
    pub fn log_conflict(&mut self, conflict: ConflictRecord) -> Result<()> {
        self.journal.log_conflict(self.store, conflict)
    }

    /// Stores a sync state value (clock, cursor, device identity), read by [`Store::meta`].
    pub fn set_meta(&mut self, name: &str, value: Vec<u8>) {
        self.journal.set_meta(name, value);
    }
}
