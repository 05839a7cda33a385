//! This database as a replica: its id, its hybrid logical clock, and how a local write of
//! a replicated model is journaled (version stamp, outbox entry, tombstone) in the same
//! batch as the data.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_journal::{Change, ChangeOp, OutboxEntry, Tombstone};
use ferry_schema::{Context, Enable, Model, SyncDirection};
use ferry_store::{Store, Tx};
use ferry_types::limits::ITEM_BYTES_MAX;
use ferry_types::version::MAX_FORWARD_MS_DEFAULT;
use ferry_types::{Hlc, HlcClock, Item, Key, ReplicaId, Value, Version, item_size};

use crate::replication::{Queued, lock};
use crate::{Error, Result};

/// Meta record holding this replica's id.
const META_REPLICA: &str = "replica";
/// Meta record holding the clock's reservation: a stamp past every one issued, where the
/// clock starts after a restart (a crash included), so no stamp is issued twice.
const META_HLC: &str = "hlc";
/// How far ahead of its stamps the clock reserves: a write persists the clock only when its
/// stamp passes the reservation (about once a second of writing, not once a write), and a
/// restart moves the clock up to this far ahead of the wall.
const CLOCK_RESERVE_MS: u64 = 1_000;
/// Attribute holding an item's version text (the cloud layout's `_ver`).
pub const VERSION_ATTR: &str = "_ver";
/// The most bytes the cloud's row adds to an uploaded item (which carries `_ver` already),
/// besides its scope's text: `_src` (4 + a replica id of at most 32), `_seq` (4 + 16 hex,
/// `-`, 32), `_base` (5 + 16, `-`, 32) and the `_scope` name (6), by DynamoDB's size rules.
/// An item past DynamoDB's 400 KiB with them is refused when it is written, not later.
pub const CLOUD_ATTRS_BYTES_MAX: usize = (4 + 32) + (4 + 49) + (5 + 49) + 6;

/// This database's replica identity and clock.
pub(crate) struct Replica {
    pub id: ReplicaId,
    clock: Mutex<HlcClock>,
    /// The reservation on disk (what committed, never what a failed write staged).
    reserved: Arc<AtomicU64>,
    /// Queued changes that commits queued, not yet told to the engine.
    pub(crate) committed: Arc<Mutex<Vec<Queued>>>,
}

impl Replica {
    /// Loads the id and clock from the store. On first open the id is `new_id` if given,
    /// else drawn from the OS's randomness; a stored id that does not parse is an error,
    /// never replaced (a new id would make the device a stranger to its own versions).
    pub fn load(store: &Store, new_id: Option<&ReplicaId>) -> Result<Replica> {
        let id = match store.meta_text(META_REPLICA)? {
            Some(text) => ReplicaId::parse(&text)
                .map_err(|e| Error::corrupt(store, "replica id", format!("'{text}': {e}")))?,
            None => {
                let id = new_id
                    .cloned()
                    .unwrap_or_else(|| ReplicaId::from_random(uuid::Uuid::new_v4().as_u128()));
                store.write(ferry_store::Durability::Immediate, |tx| {
                    tx.set_meta(META_REPLICA, id.as_str().as_bytes().to_vec());
                    Ok::<_, Error>(())
                })?;
                id
            }
        };
        // The clock starts at the reservation: past every stamp the last run issued.
        let reserved = store.meta_u64(META_HLC)?.map_or(Hlc::ZERO, Hlc::from_u64);
        Ok(Replica {
            id,
            clock: Mutex::new(HlcClock::new(reserved, MAX_FORWARD_MS_DEFAULT)),
            reserved: Arc::new(AtomicU64::new(reserved.as_u64())),
            committed: Arc::default(),
        })
    }

    /// A new version for a local write; the write's own batch extends the clock's
    /// reservation when the stamp passes it.
    pub fn stamp(&self, tx: &mut Tx<'_>, now_ms: i64) -> Version {
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        let hlc = clock.tick(now_ms.max(0) as u64);
        self.reserve_past(tx, hlc, now_ms);
        Version {
            hlc,
            replica: self.id.clone(),
        }
    }

    /// Keeps the reservation on disk past `hlc`: when `hlc` passes it, `tx` persists a new
    /// one a step ahead of the wall (`now_ms`), which counts once `tx` commits (a failed
    /// write leaves the old one, and the next stamp persists again).
    fn reserve_past(&self, tx: &mut Tx<'_>, hlc: Hlc, now_ms: i64) {
        if hlc.as_u64() <= self.reserved.load(Ordering::Acquire) {
            return;
        }
        let wall = (now_ms.max(0) as u64).saturating_add(CLOCK_RESERVE_MS);
        self.persist_reservation(tx, Hlc::new(wall, 0).max(hlc));
    }

    /// A clean close: the reservation shrinks back to the last stamp issued or observed,
    /// so a process that opens, writes and closes moves the clock no further than its
    /// stamps (a crash leaves the reservation, at most a step ahead).
    pub fn release_reservation(&self, store: &Store) {
        let last = self.last();
        if last.as_u64() >= self.reserved.load(Ordering::Acquire) {
            return;
        }
        // Failing to shrink it leaves it ahead, which is safe.
        let _ = store.write(ferry_store::Durability::Default, |tx| {
            self.persist_reservation(tx, last);
            Ok::<_, Error>(())
        });
    }

    /// Persists `reservation` in `tx` (the next open starts the clock there), and takes it
    /// as the reservation once `tx` commits.
    fn persist_reservation(&self, tx: &mut Tx<'_>, reservation: Hlc) {
        tx.set_meta(META_HLC, reservation.as_u64().to_be_bytes().to_vec());
        let reserved = Arc::clone(&self.reserved);
        tx.after_commit(move || reserved.store(reservation.as_u64(), Ordering::Release));
    }

    /// A new version for a local write that replaces `over` (the version of the item, its
    /// tombstone, or the cloud's): past it even where the clock cannot go, because the
    /// writer has seen `over` and its write must win over it. The clock lags a version that
    /// was more than the forward bound ahead of the wall (it observes only up to the bound); a write stamped below what it replaces would lose to
    /// it by last writer wins although it came after, and the device would keep it while
    /// the cloud keeps the other. The clock itself is not moved, so one far-future stamp
    /// still cannot pull every later write ahead.
    pub fn stamp_over(&self, tx: &mut Tx<'_>, now_ms: i64, over: Option<&Version>) -> Version {
        let mut version = self.stamp(tx, now_ms);
        if let Some(over) = over.filter(|over| **over >= version) {
            version.hlc = Hlc::from_u64(over.hlc.as_u64().saturating_add(1));
        }
        version
    }

    /// The latest stamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.clock.lock().unwrap_or_else(|p| p.into_inner()).last()
    }

    /// Moves the clock past a received stamp and persists it in `tx`, so that a restart
    /// never stamps below a version this device has seen. Returns how far ahead of wall
    /// time the stamp was when that is more than the clock accepts.
    pub fn observe(&self, tx: &mut Tx<'_>, remote: Hlc, now_ms: i64) -> Option<u64> {
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        let observed = clock.observe(remote, now_ms.max(0) as u64);
        self.reserve_past(tx, clock.last(), now_ms);
        match observed {
            ferry_types::Observed::TooFarAhead { ahead_ms } => Some(ahead_ms),
            _ => None,
        }
    }

    /// Takes the entries commits have queued since the last call.
    pub fn take_committed(&self) -> Vec<Queued> {
        std::mem::take(&mut *lock(&self.committed))
    }
}

/// Does a local write of this model travel to the cloud?
pub(crate) fn uploads(model: &Model) -> bool {
    model.control.enable == Enable::Both
        && matches!(model.control.sync, SyncDirection::Up | SyncDirection::Both)
}

/// Does this model receive cloud changes?
pub(crate) fn downloads(model: &Model) -> bool {
    model.control.enable == Enable::Both
        && matches!(
            model.control.sync,
            SyncDirection::Down | SyncDirection::Both
        )
}

/// The version an item carries, if it has one.
pub(crate) fn version_of(item: &Item) -> Option<Version> {
    item.get(VERSION_ATTR)?
        .as_str()
        .and_then(|text| Version::parse(text).ok())
}

/// Which devices see `item` (its model's scope template); a local write of a model that
/// also downloads must land in a scope this device reads, or it would never hear of the
/// item again.
pub(crate) fn scope_of(model: &Model, item: &Item, ctx: &Context) -> Result<String> {
    let control = |reason: String| Error::Control {
        model: model.name.clone(),
        reason,
    };
    let scope = model.scope_of(item, ctx).map_err(control)?;
    if model.control.sync == SyncDirection::Both && model.device_scope(ctx).as_ref() != Some(&scope)
    {
        return Err(control(format!(
            "the item is in scope '{scope}', which this device does not read (its scope for {} is {}): \
             write items of its own scope, or give the model a scope template of context properties",
            model.name,
            model
                .device_scope(ctx)
                .map_or("item-dependent".to_string(), |s| format!("'{s}'"))
        )));
    }
    Ok(scope)
}

impl Replica {
    /// Stamps `item` with a new version and queues its upload, in `tx`.
    pub fn journal_put(
        &self,
        tx: &mut Tx<'_>,
        model: &Model,
        ctx: &Context,
        key: &Key,
        item: &mut Item,
        now_ms: i64,
    ) -> Result<()> {
        let tombstone = tx.take_tombstone(key)?;
        let over = match tx.get(key)? {
            Some(old) => version_of(&old),
            None => tombstone.map(|t| t.version),
        };
        let version = self.stamp_over(tx, now_ms, over.as_ref());
        item.insert(VERSION_ATTR.to_string(), Value::S(version.to_text()));
        let change = Change {
            model: model.name.clone(),
            key: key.clone(),
            op: ChangeOp::Put,
            scope: scope_of(model, item, ctx)?,
            item: Some(model.cloud_view(item)),
            version,
            base: over,
        };
        let cloud_view = change.item.as_ref().map_or(0, item_size);
        let size = cloud_view + CLOUD_ATTRS_BYTES_MAX + change.scope.len();
        if size > ITEM_BYTES_MAX {
            return Err(Error::Storage(ferry_store::Error::TooLarge {
                key: format!("{key} (with the cloud's attributes)"),
                size,
                limit: ITEM_BYTES_MAX,
            }));
        }
        self.queue(tx, change, now_ms)
    }

    /// Records the removal of `old` with a versioned tombstone and queues it, in `tx`.
    pub fn journal_delete(
        &self,
        tx: &mut Tx<'_>,
        model: &Model,
        ctx: &Context,
        key: &Key,
        old: &Item,
        now_ms: i64,
    ) -> Result<()> {
        let over = version_of(old);
        let version = self.stamp_over(tx, now_ms, over.as_ref());
        let deleted_ms = crate::apply::deleted_ms(&version, now_ms.max(0) as u64);
        tx.set_tombstone(
            key,
            Tombstone {
                model: model.name.clone(),
                version: version.clone(),
                deleted_ms,
            },
        );
        let change = Change {
            model: model.name.clone(),
            key: key.clone(),
            op: ChangeOp::Delete,
            scope: scope_of(model, old, ctx)?,
            item: None,
            version,
            base: over,
        };
        self.queue(tx, change, now_ms)
    }

    /// Gives a pending change a new version past `cloud`, the newer version the cloud holds,
    /// in `tx`: the device-authoritative answer to a superseded upload. Returns the new
    /// version and its size for the driver that asked, which is the one to tell: staging it
    /// for the next step would race with other writers' notifications.
    pub fn restamp(
        &self,
        tx: &mut Tx<'_>,
        mut entry: OutboxEntry,
        cloud: &Version,
        now_ms: i64,
    ) -> Result<(Version, usize)> {
        let version = self.stamp_over(tx, now_ms, Some(cloud));
        // The device has seen the cloud's version now: it is the base of the new one.
        entry.change.base = entry.change.base.max(Some(cloud.clone()));
        self.rewrite(tx, entry, version, now_ms)
    }

    /// Brings the clock back to the cloud's time and stamps a pending change there, in
    /// `tx`: the answer to a version the cloud refused as too far ahead (this device's
    /// clock ran ahead). Versions stamped ahead never landed anywhere, so none is reused.
    /// The new version stays past the change's base (it was written over that version
    /// and must win over it); the clock only goes back, whatever time the cloud names.
    pub fn restamp_at(
        &self,
        tx: &mut Tx<'_>,
        entry: OutboxEntry,
        server_time_ms: u64,
        now_ms: i64,
    ) -> Result<(Version, usize)> {
        let hlc = {
            let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
            let back_to = Hlc::new(server_time_ms, 0).min(clock.last());
            *clock = HlcClock::new(back_to, MAX_FORWARD_MS_DEFAULT);
            clock.tick(back_to.physical_ms())
        };
        // The reservation comes back with the clock: the stamps past it never landed.
        let ahead = Hlc::new(server_time_ms.saturating_add(CLOCK_RESERVE_MS), 0);
        self.persist_reservation(tx, ahead.max(hlc));
        let mut version = Version {
            hlc,
            replica: self.id.clone(),
        };
        if let Some(base) = entry.change.base.as_ref().filter(|base| **base >= version) {
            version.hlc = Hlc::from_u64(base.hlc.as_u64().saturating_add(1));
        }
        self.rewrite(tx, entry, version, now_ms)
    }

    /// Gives the pending `entry` and its item (or tombstone) `version`, in `tx`.
    fn rewrite(
        &self,
        tx: &mut Tx<'_>,
        entry: OutboxEntry,
        version: Version,
        now_ms: i64,
    ) -> Result<(Version, usize)> {
        let mut change = entry.change;
        // The old version leaves first: the new one may be older (stamped at the cloud's time).
        tx.settle(&change.key, &change.version)?;
        change.version = version;
        match change.op {
            ChangeOp::Put => {
                if let Some(item) = tx.get(&change.key)? {
                    let mut item = Arc::unwrap_or_clone(item);
                    item.insert(VERSION_ATTR.to_string(), Value::S(change.version.to_text()));
                    tx.put(item)?;
                }
            }
            ChangeOp::Delete => {
                let tombstone = Tombstone {
                    model: change.model.clone(),
                    version: change.version.clone(),
                    deleted_ms: crate::apply::deleted_ms(&change.version, now_ms.max(0) as u64),
                };
                tx.set_tombstone(&change.key, tombstone);
            }
        }
        let version = change.version.clone();
        let bytes = queue_entry(tx, change, now_ms)?.unwrap_or(0);
        Ok((version, bytes))
    }

    /// Queues `change` in `tx`; once `tx` commits, the sync engine is to hear of it (a
    /// write that fails tells nothing).
    fn queue(&self, tx: &mut Tx<'_>, change: Change, now_ms: i64) -> Result<()> {
        if queue_entry(tx, change, now_ms)?.is_some() {
            let committed = Arc::clone(&self.committed);
            tx.after_commit_queued(move |queued, commit| {
                let changes = queued.into_iter().map(|(entry, bytes)| Queued {
                    change: entry.change,
                    bytes,
                    commit,
                });
                lock(&committed).extend(changes);
            });
        }
        Ok(())
    }
}

/// Puts `change` in the outbox in `tx`; returns its encoded size, `None` when nothing was
/// queued. Coalescing over a pending change keeps that one's base (the store's).
fn queue_entry(tx: &mut Tx<'_>, change: Change, now_ms: i64) -> Result<Option<usize>> {
    let entry = OutboxEntry {
        change,
        queued_ms: now_ms.max(0) as u64,
    };
    // A fresh stamp is newer than anything pending, so the entry replaces it; only a
    // version at the clock's end (a hostile one) can tie: nothing is queued then.
    Ok(tx.queue(entry)?)
}
