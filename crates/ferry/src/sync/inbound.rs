//! Applying cloud changes: the direction rules, versions kept as received, tombstones,
//! the conflict log, and triggers with origin `Cloud`.

use std::collections::BTreeSet;

use ferry_journal::{Change, ChangeOp, ConflictRecord, Tombstone};
use ferry_schema::{Enable, Model, SyncDirection};
use ferry_store::{Durability, Tx};
use ferry_sync::{Engine, Inbound, Input, decide_inbound};
use ferry_types::{Hlc, Key, Value, Version};

use super::{META_CURSOR_PREFIX, lock};
use crate::replica::{VERSION_ATTR, downloads, version_of};
use crate::triggers::Origin;
use crate::{Db, Error, Result};

/// Items removed per transaction when a resync forgets what the cloud no longer has.
const FORGET_BATCH_ITEMS: usize = 256;

impl Db {
    /// Applies a page of a scope's changes and advances its persisted cursor, in one
    /// transaction. Returns the page's highest `_seq`, or the feed `position` the cloud
    /// gave with the last page if that is higher (see `PullPage::position`).
    pub(super) fn apply_page(
        &self,
        engine: &mut Engine,
        scope: &str,
        changes: &[(Hlc, Change)],
        position: Option<Hlc>,
        now: u64,
    ) -> Result<Option<Hlc>> {
        let last_seq = changes.iter().map(|(seq, _)| *seq).max().max(position);
        let cursor = engine
            .cursor(scope)
            .unwrap_or(Hlc::ZERO)
            .max(last_seq.unwrap_or(Hlc::ZERO));
        let mut settled = Vec::new();
        let (_, committed) = self.inner.store.write(Durability::Default, |tx| {
            for (_, change) in changes {
                self.apply_change(tx, change, now, &mut settled)?;
            }
            tx.set_meta(
                &format!("{META_CURSOR_PREFIX}{scope}"),
                cursor.as_u64().to_be_bytes().to_vec(),
            );
            Ok::<_, Error>(())
        })?;
        for (key, version) in settled {
            engine.handle(Input::Settled { key, version }, now);
        }
        self.fire(&committed, Origin::Cloud);
        Ok(last_seq)
    }

    /// One cloud change, by the direction rule of its model.
    fn apply_change(
        &self,
        tx: &mut Tx<'_>,
        change: &Change,
        now: u64,
        settled: &mut Vec<(Key, Version)>,
    ) -> Result<()> {
        let Ok(model) = self.schema().model(&change.model) else {
            self.report_error(format!(
                "a cloud change names unknown model '{}'",
                change.model
            ));
            return Ok(());
        };
        if let Some(ahead) = (self.inner.replica).observe(tx, change.version.hlc, now as i64) {
            lock(&self.inner.report).skew_ms = Some(ahead);
        }
        let local = match tx.get(&change.key)? {
            Some(item) => version_of(&item),
            None => tx.tombstone(&change.key)?.map(|t| t.version),
        };
        let pending = tx.pending(&change.key)?;
        let direction = if model.control.enable == Enable::Both {
            model.control.sync
        } else {
            SyncDirection::None
        };
        let pending_version = pending.as_ref().map(|e| &e.change.version);
        match decide_inbound(direction, local.as_ref(), pending_version, &change.version) {
            Inbound::Apply => self.write_remote(tx, model, change, now),
            Inbound::ApplyOverPending => {
                self.write_remote(tx, model, change, now)?;
                if let Some(entry) = pending {
                    let version = entry.change.version.clone();
                    tx.log_conflict(ConflictRecord {
                        winner: change.version.clone(),
                        loser: entry.change,
                        at_ms: now,
                    })?;
                    tx.settle(&change.key, &version)?;
                    settled.push((change.key.clone(), version));
                }
                Ok(())
            }
            Inbound::KeepLocal => {
                if let (SyncDirection::Both, Some(winner)) = (direction, pending_version) {
                    let conflict = ConflictRecord {
                        winner: winner.clone(),
                        loser: change.clone(),
                        at_ms: now,
                    };
                    tx.log_conflict(conflict)?;
                }
                Ok(())
            }
            Inbound::Ignore => Ok(()),
        }
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
                tx.clear_tombstone(&change.key);
                tx.put(item)?;
            }
            _ => {
                tx.delete(&change.key)?;
                let tombstone = Tombstone {
                    model: model.name.clone(),
                    version: change.version.clone(),
                    deleted_ms: now,
                };
                tx.set_tombstone(&change.key, tombstone);
            }
        }
        Ok(())
    }

    /// After a resync of `scope`: removes local items of downloading models in that scope
    /// that the cloud no longer has, unless a local change of them is pending.
    pub(super) fn forget_absent(&self, scope: &str, seen: &BTreeSet<Key>) -> Result<()> {
        let mut absent = Vec::new();
        for item in self.inner.store.items() {
            let item = item?;
            let Some(model) = self.model_of(&item).filter(|m| downloads(m)) else {
                continue;
            };
            if model.scope_of(&item, self.context()).ok().as_deref() != Some(scope) {
                continue;
            }
            let key = self.inner.store.key_of(&item)?;
            if !seen.contains(&key) && self.inner.store.pending(&key)?.is_none() {
                absent.push(key);
            }
        }
        for chunk in absent.chunks(FORGET_BATCH_ITEMS) {
            let (_, committed) = self.inner.store.write(Durability::Default, |tx| {
                chunk.iter().try_for_each(|key| tx.delete(key).map(|_| ()))
            })?;
            self.fire(&committed, Origin::Cloud);
        }
        Ok(())
    }
}
