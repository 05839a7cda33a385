//! Applying cloud changes: the direction rules, versions kept as received, tombstones,
//! the conflict log, and triggers with origin `Cloud`.

use std::collections::BTreeSet;

use ferry_journal::{Change, ChangeOp, ConflictRecord, QuarantineRecord, Tombstone};
use ferry_schema::{Enable, Model, SyncDirection};
use ferry_store::{Durability, Tx};
use ferry_sync::{Inbound, decide_inbound};
use ferry_types::{Hlc, Key, Value, Version};

use crate::port::ReplicaPort;
use crate::replica::{VERSION_ATTR, downloads, version_of};
use crate::replication::{META_CURSOR_PREFIX, lock};
use crate::triggers::Origin;
use crate::{Db, Error, Result};

/// Items removed per transaction when a resync forgets what the cloud no longer has.
const FORGET_BATCH_ITEMS: usize = 256;

/// How far past the cloud's time a cloud change's version may be stamped: what the cloud's
/// write rule lets a version lead ([`ferry_sync::AHEAD_MAX_MS`]), and a day for a cloud
/// clock stepped back since. A version past it is no honest cloud's: applied, it would
/// outrank every later local write of its key (the clock never goes that far).
pub(crate) const CLOUD_STAMP_LEAD_MAX_MS: u64 = ferry_sync::AHEAD_MAX_MS + 24 * 3_600_000;

/// The cloud's time at the last handshake, kept for the next open (epoch ms).
pub(crate) const META_CLOUD_TIME: &str = "cloud_time";

impl Db {
    /// Applies again every quarantined change (after a schema upgrade some now can), each
    /// in its own transaction: those that still cannot stay, with their new reason.
    pub(crate) fn retry_quarantined(&self) -> Result<()> {
        let now = self.now_ms().max(0) as u64;
        for record in self.inner.store.quarantined(usize::MAX)? {
            // This device's own change the cloud refused is no cloud change to apply: it
            // stays, shown, and guarding its item (see `forget_absent`).
            if record.change.version.replica == self.inner.replica.id {
                continue;
            }
            let mut applied = Applied::default();
            let (_, committed) = self.inner.store.write(Durability::Default, |tx| {
                self.apply_change(tx, &record.change, now, &mut applied)
            })?;
            self.fire(&committed, Origin::Cloud);
            self.fire_conflicts(&applied.conflicts);
        }
        Ok(())
    }

    /// The cloud's winning change of a superseded upload, applied in `tx` (after the
    /// losing entry was settled) by the same rule as a pulled change: one that cannot
    /// apply here goes to the quarantine, and the loser is settled all the same. Returns
    /// the conflict it logged, if the loser was not its base.
    pub(crate) fn apply_winner(
        &self,
        tx: &mut Tx<'_>,
        change: &Change,
        now: u64,
    ) -> Result<Vec<ConflictRecord>> {
        let mut applied = Applied::default();
        self.apply_change(tx, change, now, &mut applied)?;
        Ok(applied.conflicts)
    }

    /// One cloud change, by the direction rule of its model. A change that cannot apply
    /// here goes to the quarantine (in the same transaction), so that its scope moves on.
    fn apply_change(
        &self,
        tx: &mut Tx<'_>,
        change: &Change,
        now: u64,
        out: &mut Applied,
    ) -> Result<()> {
        let Ok(model) = self.schema().model(&change.model) else {
            let reason = format!(
                "model {} is not in this device's schema: kept, it applies after a schema upgrade",
                change.model
            );
            return quarantine(tx, change, reason, now);
        };
        if let Some(reason) = self.malformed(model, change) {
            return quarantine(tx, change, reason, now);
        }
        if let Some(lead_ms) = self.past_cloud_time(&change.version) {
            let reason = format!(
                "its version is stamped {lead_ms} ms past the cloud's time, more than the \
                 {CLOUD_STAMP_LEAD_MAX_MS} ms a cloud change may lead: kept, not applied"
            );
            return quarantine(tx, change, reason, now);
        }
        if let Some(ahead) = (self.inner.replica).observe(tx, change.version.hlc, now as i64) {
            lock(&self.inner.report).skew_ms = Some(ahead);
        }
        match self.decide(tx, model, change, now, out) {
            Err(e) if cannot_apply(&e) => quarantine(tx, change, e.to_string(), now),
            Err(e) => Err(e),
            Ok(()) => tx
                .release_quarantine(&change.key, &change.version)
                .map_err(Error::from),
        }
    }

    /// How far `version` is stamped past the cloud's time, when that is more than
    /// [`CLOUD_STAMP_LEAD_MAX_MS`]. The cloud's time is the last handshake's, moved on
    /// since (see `CloudTime`). Before this process's first handshake (the quarantine
    /// applied again as the database attaches) it is at least the wall clock's and the
    /// last handshake's of an earlier process: a device with no real-time clock still
    /// knows a time the cloud reached.
    pub(crate) fn past_cloud_time(&self, version: &Version) -> Option<u64> {
        let wall_ms = self.now_ms().max(0) as u64;
        let handshake = lock(&self.inner.report).cloud_time;
        let cloud_now_ms = match handshake {
            Some(at) => at.now_ms(self.timer_ms(), wall_ms),
            None => {
                // A record that does not read leaves the wall's time alone: the more lenient.
                let kept = self.inner.store.meta_u64(META_CLOUD_TIME).ok().flatten();
                wall_ms.max(kept.unwrap_or(0))
            }
        };
        let lead_ms = version.hlc.physical_ms().saturating_sub(cloud_now_ms);
        (lead_ms > CLOUD_STAMP_LEAD_MAX_MS).then_some(lead_ms)
    }

    /// Why `change` can never apply as it is, if it cannot: its item does not belong to
    /// its key or model.
    fn malformed(&self, model: &Model, change: &Change) -> Option<String> {
        let item = match (&change.op, &change.item) {
            (ChangeOp::Put, Some(item)) => item,
            (ChangeOp::Put, None) => return Some(format!("put of {} carries no item", change.key)),
            (ChangeOp::Delete, _) => return None,
        };
        let type_field = &self.schema().params().type_field;
        if item.get(type_field).and_then(Value::as_str) != Some(model.name.as_str()) {
            return Some(format!("the item's {type_field} is not {}", model.name));
        }
        match self.inner.store.key_of(item) {
            Ok(key) if key == change.key => None,
            Ok(key) => Some(format!(
                "the item's key is {key}, not the change's {}",
                change.key
            )),
            Err(e) => Some(format!("the item has no usable key: {e}")),
        }
    }

    /// The direction rule of `model` for `change`, carried out in `tx`.
    fn decide(
        &self,
        tx: &mut Tx<'_>,
        model: &Model,
        change: &Change,
        now: u64,
        out: &mut Applied,
    ) -> Result<()> {
        // A tombstone past the horizon no longer counts, purged or not: the cloud forgot
        // its delete at the horizon too, so an older put that lands after it (an upload of
        // a device that was offline longer) must win here as it won there.
        let horizon_ms = self.horizon_ms();
        let live = |t: &ferry_journal::Tombstone| t.deleted_ms.saturating_add(horizon_ms) > now;
        let local = match tx.get(&change.key)? {
            Some(item) => version_of(&item),
            None => tx.tombstone(&change.key)?.filter(live).map(|t| t.version),
        };
        let pending = tx.pending(&change.key)?;
        let direction = if model.control.enable == Enable::Both {
            model.control.sync
        } else {
            SyncDirection::None
        };
        let pending_version = pending.as_ref().map(|e| &e.change.version);
        match decide_inbound(direction, local.as_ref(), pending_version, &change.version) {
            Inbound::Apply => {
                // An acknowledged write of this device that the change was not made on top of
                // lost: this device is the one to log it (docs/sync.md, conflicts).
                let lost = (local.as_ref()).filter(|local| {
                    direction == SyncDirection::Both && self.overwrote(change, local)
                });
                let loser = match lost {
                    Some(local) => Some(self.loser_of(tx, model, change, local)?),
                    None => None,
                };
                // Applied first: a change that cannot apply (a unique clash) goes to the
                // quarantine with nothing logged, and is decided again when it applies.
                self.write_remote(tx, model, change, now)?;
                match loser {
                    Some(loser) => self.log_conflict(tx, change, loser, now, out),
                    None => Ok(()),
                }
            }
            Inbound::ApplyOverPending => {
                self.write_remote(tx, model, change, now)?;
                if let Some(entry) = pending {
                    let version = entry.change.version.clone();
                    if self.overwrote(change, &version) {
                        self.log_conflict(tx, change, entry.change, now, out)?;
                    }
                    tx.settle(&change.key, &version)?;
                    out.settled.push((change.key.clone(), version));
                }
                Ok(())
            }
            // The pending change is newer: the cloud's writer lost and logs it on its side
            // when it hears of ours.
            Inbound::KeepLocal | Inbound::Ignore => Ok(()),
        }
    }

    /// Whether `change` replaced `ours`, a version this device wrote, without being made on
    /// top of it (its base is older, or absent): a genuine conflict that `ours` lost.
    /// Re-reads, echoes and writes made over ours are not conflicts.
    fn overwrote(&self, change: &Change, ours: &Version) -> bool {
        ours.replica == self.inner.replica.id
            && change.version > *ours
            && change.base.as_ref().is_none_or(|base| base < ours)
    }

    /// The acknowledged local change at `version` of `change`'s key, as it lost.
    fn loser_of(
        &self,
        tx: &mut Tx<'_>,
        model: &Model,
        change: &Change,
        version: &Version,
    ) -> Result<Change> {
        let item = tx.get(&change.key)?.map(|item| model.cloud_view(&item));
        Ok(Change {
            model: model.name.clone(),
            key: change.key.clone(),
            op: match item {
                Some(_) => ChangeOp::Put,
                None => ChangeOp::Delete,
            },
            version: version.clone(),
            scope: change.scope.clone(),
            item,
            base: None,
        })
    }

    /// Logs that `loser` lost to `winner`, in `tx`, for the triggers too.
    fn log_conflict(
        &self,
        tx: &mut Tx<'_>,
        winner: &Change,
        loser: Change,
        now: u64,
        out: &mut Applied,
    ) -> Result<()> {
        let conflict = ConflictRecord {
            winner: winner.version.clone(),
            loser,
            at_ms: now,
        };
        tx.log_conflict(conflict.clone())?;
        out.conflicts.push(conflict);
        Ok(())
    }

    /// Stores a cloud change as it is: its version and timestamps are kept, never re-stamped.
    fn write_remote(
        &self,
        tx: &mut Tx<'_>,
        model: &Model,
        change: &Change,
        now: u64,
    ) -> Result<()> {
        match (&change.op, &change.item) {
            (ChangeOp::Put, Some(item)) => {
                let mut item = item.clone();
                item.insert(VERSION_ATTR.to_string(), Value::S(change.version.to_text()));
                // Fields that never leave the device (sync: 'none') stay as they were here.
                if let Some(local) = tx.get(&change.key)? {
                    model.keep_local_fields(&local, &mut item);
                }
                // The put first: if it fails (a unique clash) nothing was changed.
                tx.put(item)?;
                tx.take_tombstone(&change.key)?;
            }
            _ => {
                tx.delete(&change.key)?;
                let tombstone = Tombstone {
                    model: model.name.clone(),
                    version: change.version.clone(),
                    deleted_ms: deleted_ms(&change.version, now),
                };
                tx.set_tombstone(&change.key, tombstone);
            }
        }
        Ok(())
    }
}

/// What a driver applies through its port.
impl ReplicaPort {
    /// Applies a page of a scope's changes and, with `cursor`, persists the scope's new
    /// cursor in the same transaction. Returns the outbox entries the page overwrote.
    /// `echoes` are changes of the page this device pushed itself: it holds each of them
    /// or a newer version, so they only release the quarantined change of their key that
    /// they outdate, as an applied change does.
    pub fn apply_page(
        &self,
        scope: &str,
        changes: &[(Hlc, Change)],
        echoes: &[(Key, Version)],
        cursor: Option<Hlc>,
        now: u64,
    ) -> Result<Vec<(Key, Version)>> {
        let mut applied = Applied::default();
        let (_, committed) = self.db.inner.store.write(Durability::Default, |tx| {
            for (_, change) in changes {
                self.db.apply_change(tx, change, now, &mut applied)?;
            }
            // Most devices quarantine nothing: then an echo reads nothing. The count is read
            // under the write lock, so no commit changes it meanwhile (a record this page
            // staged is of another key: an honest page brings a key once).
            if self.db.inner.store.quarantine_count()? > 0 {
                for (key, version) in echoes {
                    tx.release_quarantine(key, version)?;
                }
            }
            if let Some(cursor) = cursor {
                set_cursor(tx, scope, cursor);
            }
            Ok::<_, Error>(())
        })?;
        self.db.fire(&committed, Origin::Cloud);
        self.db.fire_conflicts(&applied.conflicts);
        Ok(applied.settled)
    }

    /// Changes the cloud pushed without being asked: applied like a page (idempotent by
    /// version), without moving any cursor. Returns the pending changes they overwrote,
    /// which left the outbox (the engine must hear of them, as of a page's).
    pub fn apply_live(&self, changes: &[Change]) -> Vec<(Key, Version)> {
        let now = self.db.now_ms().max(0) as u64;
        // A token may grant scopes this device does not read; its pulls never bring them,
        // and neither may the live feed.
        let reads = match self.db.read_scopes() {
            Ok(reads) => reads,
            Err(e) => {
                let error = format!("{}: applying live changes: {e}", e.code());
                self.db.report_error(error);
                return Vec::new();
            }
        };
        let mut applied = Applied::default();
        let result = self.db.inner.store.write(Durability::Default, |tx| {
            (changes.iter())
                .filter(|change| reads.contains(&change.scope))
                .try_for_each(|change| self.db.apply_change(tx, change, now, &mut applied))
        });
        match result {
            Ok((_, committed)) => {
                self.db.fire(&committed, Origin::Cloud);
                self.db.fire_conflicts(&applied.conflicts);
                applied.settled
            }
            Err(e) => {
                let error = format!("{}: applying live changes: {e}", e.code());
                self.db.report_error(error);
                Vec::new()
            }
        }
    }

    /// After a resync of `scope` whose snapshot showed `seen`: the keys of local items of
    /// the scope's downloading models that the snapshot lacked (items that never synced
    /// aside: the cloud's snapshot says nothing of them). The driver confirms each with a
    /// strongly consistent read before [`ReplicaPort::forget_absent`] removes it: a snapshot may not
    /// show yet what was written just before it.
    pub fn absent_from(&self, scope: &str, seen: &BTreeSet<Key>) -> Result<Vec<Key>> {
        let mut absent = Vec::new();
        for item in self.db.inner.store.items() {
            let item = item?;
            let Some(model) = self.db.model_of(&item).filter(|m| downloads(m)) else {
                continue;
            };
            if model.scope_of(&item, self.db.context()).ok().as_deref() != Some(scope) {
                continue;
            }
            // An item with no version never came from the cloud nor went to it (written
            // while its model did not sync): the cloud's snapshot says nothing of it.
            if version_of(&item).is_none() {
                continue;
            }
            let key = self.db.inner.store.key_of(&item)?;
            if !seen.contains(&key) {
                absent.push(key);
            }
        }
        Ok(absent)
    }

    /// Removes the `absent` items of `scope` (which the cloud no longer has), unless a
    /// local change of them is pending or was refused by the cloud (kept on the device, as
    /// the quarantine says), checked in the transaction that removes them: a write may have
    /// come meanwhile. The last transaction persists the scope's cursor at `safe`: only a
    /// complete resync moves it.
    pub fn forget_absent(&self, scope: &str, absent: &[Key], safe: Hlc) -> Result<()> {
        let chunks = absent.chunks(FORGET_BATCH_ITEMS);
        let last = chunks.len().saturating_sub(1);
        for (index, chunk) in chunks
            .chain(absent.is_empty().then_some(&[][..]))
            .enumerate()
        {
            let (_, committed) = self.db.inner.store.write(Durability::Default, |tx| {
                for key in chunk {
                    let refused = (tx.quarantined(key)?)
                        .is_some_and(|r| r.change.version.replica == self.db.inner.replica.id);
                    if tx.pending(key)?.is_none() && !refused {
                        tx.delete(key)?;
                    }
                }
                if index == last {
                    set_cursor(tx, scope, safe);
                }
                Ok::<_, Error>(())
            })?;
            self.db.fire(&committed, Origin::Cloud);
        }
        Ok(())
    }
}

/// Persists `scope`'s cursor in `tx`.
pub(crate) fn set_cursor(tx: &mut Tx<'_>, scope: &str, cursor: Hlc) {
    let name = format!("{META_CURSOR_PREFIX}{scope}");
    tx.set_meta(&name, cursor.as_u64().to_be_bytes().to_vec());
}

/// What applying cloud changes did beside the data: outbox entries the cloud overwrote
/// (the engine must hear of them) and conflicts decided (triggers must).
#[derive(Default)]
pub(super) struct Applied {
    pub settled: Vec<(Key, Version)>,
    pub conflicts: Vec<ConflictRecord>,
}

/// Keeps `change` in the quarantine with `reason`, in `tx`.
fn quarantine(tx: &mut Tx<'_>, change: &Change, reason: String, now: u64) -> Result<()> {
    let record = QuarantineRecord {
        change: change.clone(),
        reason,
        at_ms: now,
    };
    Ok(tx.quarantine(record)?)
}

/// Failures of one change that no retry can mend: it goes to the quarantine. Storage
/// failures are not among them: they fail the page, which is retried.
fn cannot_apply(error: &Error) -> bool {
    matches!(
        error,
        Error::Unique { .. }
            | Error::Validation { .. }
            | Error::Storage(ferry_store::Error::TooLarge { .. } | ferry_store::Error::Key(_))
    )
}

/// When a delete at `version` happened, as far as this device can tell: its version's
/// time, or now if that is earlier. A tombstone lives from the delete, not from when a
/// device that was away heard of it. The cloud forgets it a horizon after it landed (on
/// DynamoDB, after the later of its landing and its version), so a device forgets it about
/// when the cloud does, not a horizon after the device came back online.
pub(crate) fn deleted_ms(version: &Version, now: u64) -> u64 {
    version.hlc.physical_ms().min(now)
}
