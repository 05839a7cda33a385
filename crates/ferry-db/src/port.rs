//! The replica port: what a sync driver (`ferry-driver`) does with the database. A driver
//! gets it once, from [`Db::attach_replication`], when it attaches; an application never
//! holds one, so the database's own API stays what applications may call.

use std::collections::{BTreeMap, BTreeSet};

use ferry_journal::Change;
use ferry_store::{Acked, Durability};
use ferry_sync::Input;
use ferry_types::{Hlc, Key, Version};

use crate::apply::META_CLOUD_TIME;
use crate::db::CloudTime;
use crate::replication::lock;
use crate::triggers::Event;
use crate::{Db, Error, Replication, Result, WeakDb};

/// A driver's handle on the database it drives: the outbox, the clock, cloud changes to
/// apply and the cloud's answers to carry out, each in one commit with the data.
pub struct ReplicaPort {
    pub(crate) db: Db,
}

/// A [`ReplicaPort`] that does not keep its database open (a background driver's).
#[derive(Clone)]
pub struct WeakReplicaPort {
    db: WeakDb,
}

impl WeakReplicaPort {
    /// The port, while its database is open.
    pub fn upgrade(&self) -> Option<ReplicaPort> {
        self.db.upgrade().map(|db| ReplicaPort { db })
    }
}

/// How the database resolved a cloud answer about a pending change
/// ([`ReplicaPort::superseded`], [`ReplicaPort::restamp_behind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The outbox holds another version now: nothing to do.
    Stale,
    /// `up`, or a version the cloud found ahead of its time: the change was re-stamped
    /// and queued again at this version and size.
    Restamped {
        /// The new version.
        version: Version,
        /// Its encoded size.
        bytes: usize,
    },
    /// `both`: the cloud's newer version won and applied; the local change is in the
    /// conflict log and left the outbox. (Or the answer named a version no honest cloud
    /// holds: the local change left the outbox for the quarantine.)
    Lost,
}

impl Db {
    /// Gives the database its driver: the quarantine is applied again (a schema upgrade
    /// may let some of it apply), `make` builds the driver with the port it is handed and
    /// the cursor of each scope the device reads (the hook and whatever else the driver
    /// keeps), and from then on commits notify the hook. Returns the port and what `make`
    /// kept. A database attaches once.
    pub fn attach_replication<F, D>(&self, make: F) -> Result<(ReplicaPort, D)>
    where
        F: FnOnce(&ReplicaPort, BTreeMap<String, Hlc>) -> Result<(Box<dyn Replication>, D)>,
    {
        let attached =
            || Error::Argument("this database is already attached to a transport".into());
        if self.inner.sync.get().is_some() {
            return Err(attached());
        }
        let port = ReplicaPort { db: self.clone() };
        // What can refuse the attach comes first: a refused attach changes nothing.
        let cursors = port.cursors()?;
        self.retry_quarantined()?;
        let (replication, kept) = make(&port, cursors)?;
        (self.inner.sync.set(replication)).map_err(|_| attached())?;
        // Writes that committed while the hook was being set: tell them now.
        self.report_staged();
        Ok((port, kept))
    }
}

impl ReplicaPort {
    /// The database, for what applications may call too (`status`).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A mark of the writes committed so far (see [`ReplicaPort::is_persisted`]).
    pub fn commit_mark(&self) -> u64 {
        self.db.inner.store.commit_mark()
    }

    /// Whether every write committed by `mark` is on disk: an fsync since covered it.
    pub fn is_persisted(&self, mark: u64) -> bool {
        self.db.inner.store.is_persisted(mark)
    }

    /// The same port, without keeping the database open.
    pub fn downgrade(&self) -> WeakReplicaPort {
        WeakReplicaPort {
            db: self.db.downgrade(),
        }
    }

    /// The wall clock the database records by (epoch ms).
    pub fn now_ms(&self) -> i64 {
        self.db.now_ms()
    }

    /// The monotonic clock sync's timers run on ([`crate::Config::timer`]).
    pub fn timer_ms(&self) -> u64 {
        self.db.timer_ms()
    }

    /// Records a failure of sync work for [`Db::status`], until a sync succeeds.
    pub fn report_error(&self, what: String) {
        self.db.report_error(what);
    }

    /// A sync succeeded: the last failure is history (for this process and later ones).
    pub fn clear_error(&self) {
        self.db.clear_error();
    }

    /// Each scope this device reads with its persisted cursor (`Hlc::ZERO` for a scope
    /// never pulled).
    fn cursors(&self) -> Result<BTreeMap<String, Hlc>> {
        let scopes: BTreeSet<String> = self.db.read_scopes()?;
        (scopes.into_iter())
            .map(|scope| Ok((scope.clone(), self.db.load_cursor(&scope)?)))
            .collect()
    }

    /// The key and version of every pending change.
    pub fn pending_versions(&self) -> Result<Vec<(Key, Version)>> {
        let entries = (self.db.inner.store.outbox())
            .map(|entry| entry.map(|(key, entry)| (key, entry.change.version)));
        Ok(entries.collect::<std::result::Result<_, _>>()?)
    }

    /// The changes this device wrote that the cloud refused for good, of the `waited` keys
    /// at their pending version or a later one: each key and why. What `Db::sync` reports
    /// of the changes pending when it was called (matched by version, not by a wall clock
    /// that may step).
    pub fn refused_of(&self, waited: &[(Key, Version)]) -> Result<Vec<(String, String)>> {
        if self.db.inner.store.quarantine_count()? == 0 {
            return Ok(Vec::new());
        }
        let waited: BTreeMap<&Key, &Version> = waited.iter().map(|(k, v)| (k, v)).collect();
        let records = self.db.inner.store.quarantined(usize::MAX)?;
        Ok((records.into_iter())
            .filter(|record| {
                let change = &record.change;
                change.version.replica == self.db.inner.replica.id
                    && waited
                        .get(&change.key)
                        .is_some_and(|v| change.version >= **v)
            })
            .map(|record| (record.change.key.to_string(), record.reason))
            .collect())
    }

    /// Every outbox entry as the engine hears of it.
    pub fn queued_inputs(&self) -> Result<Vec<Input>> {
        let mut inputs = Vec::new();
        for entry in self.db.inner.store.outbox() {
            let (key, entry) = entry?;
            let (version, bytes) = (entry.change.version.clone(), entry.encoded_len());
            inputs.push(Input::Queued {
                key,
                version,
                bytes,
            });
        }
        Ok(inputs)
    }

    /// Whether `key` has a pending upload.
    pub fn is_pending(&self, key: &Key) -> Result<bool> {
        Ok(self.db.inner.store.pending(key)?.is_some())
    }

    /// The pending change of `key`, as it goes up.
    pub fn pending_change(&self, key: &Key) -> Result<Option<Change>> {
        Ok(self.db.inner.store.pending(key)?.map(|entry| entry.change))
    }

    /// The cloud refused the pending change of `key` at `version` for good (a scope the
    /// device is not granted, an item it cannot hold): the change leaves the outbox for the
    /// quarantine, where [`Db::quarantine`] and `status` show it with `reason`, in one commit.
    pub fn refused(&self, key: &Key, version: &Version, reason: &str, now: u64) -> Result<()> {
        self.db.inner.store.write(Durability::Default, |tx| {
            if let Some(entry) = tx.pending(key)?
                && entry.change.version == *version
            {
                tx.quarantine(ferry_journal::QuarantineRecord {
                    change: entry.change,
                    reason: format!("the cloud refused this device's change: {reason}"),
                    at_ms: now,
                })?;
            }
            tx.settle(key, version).map(|_| ())
        })?;
        Ok(())
    }

    /// Drops each outbox entry whose version the cloud holds (or a newer one), in one commit.
    /// An entry whose queuing commit `acked` names goes unread when no commit wrote it
    /// since ([`ferry_store::Store::settle`]).
    pub fn settle(&self, acked: &[Acked]) -> Result<()> {
        Ok(self.db.inner.store.settle(acked)?)
    }

    /// The cloud holds `cloud`, newer than the pending `local` of `key`: the model's
    /// direction decides. `winner` is the cloud's change when the push returned it.
    pub fn superseded(
        &self,
        key: &Key,
        local: &Version,
        cloud: &Version,
        winner: Option<&Change>,
        now: u64,
    ) -> Result<Resolved> {
        let replica = &self.db.inner.replica;
        // The entry is read in the transaction that carries out the answer: a local write
        // committing meanwhile makes it stale rather than overwritten by its older content.
        let ((resolved, conflicts), committed) =
            self.db.inner.store.write(Durability::Default, |tx| {
                let Some(entry) = tx.pending(key)?.filter(|e| &e.change.version == local) else {
                    return Ok((Resolved::Stale, Vec::new())); // a newer write is pending
                };
                if let Some(lead_ms) = self.db.past_cloud_time(cloud) {
                    // No honest cloud holds such a version (see `CLOUD_STAMP_LEAD_MAX_MS`):
                    // re-stamped over it the change would be stamped at the end of time too,
                    // and lost to it, it would be dropped. It is kept, shown, and not sent.
                    let reason = format!(
                        "the cloud answered that it holds a version stamped {lead_ms} ms past \
                         its time: kept on this device, not sent again"
                    );
                    // The quarantine keeps a record a key: one of a cloud change stamped as
                    // far ahead gives way, this device's own change must stay shown.
                    let hostile = |held: &ferry_journal::QuarantineRecord| {
                        self.db.past_cloud_time(&held.change.version).is_some()
                    };
                    if let Some(held) = tx.quarantined(key)?.filter(hostile) {
                        tx.release_quarantine(key, &held.change.version)?;
                    }
                    let record = ferry_journal::QuarantineRecord {
                        change: entry.change,
                        reason,
                        at_ms: now,
                    };
                    tx.quarantine(record)?;
                    tx.settle(key, local)?;
                    return Ok((Resolved::Lost, Vec::new()));
                }
                let model = self.db.schema().model(&entry.change.model);
                if model.is_ok_and(|m| m.control.sync == ferry_schema::SyncDirection::Up) {
                    // The device is authoritative: come back with a version past the cloud's.
                    replica.observe(tx, cloud.hlc, now as i64);
                    let (version, bytes) = replica.restamp(tx, entry, cloud, now as i64)?;
                    return Ok((Resolved::Restamped { version, bytes }, Vec::new()));
                }
                // Last writer wins: the cloud's newer version stands and comes down now;
                // ours lost, and applying the winner logs the conflict unless it was made on
                // top of ours (a retry whose answer was lost).
                tx.settle(key, local)?;
                let conflicts = match winner {
                    Some(change) => self.db.apply_winner(tx, change, now)?,
                    None => {
                        let conflict = ferry_journal::ConflictRecord {
                            winner: cloud.clone(),
                            loser: entry.change,
                            at_ms: now,
                        };
                        tx.log_conflict(conflict.clone())?;
                        vec![conflict]
                    }
                };
                Ok::<_, Error>((Resolved::Lost, conflicts))
            })?;
        self.db.fire(&committed, crate::Origin::Cloud);
        self.db.fire_conflicts(&conflicts);
        Ok(resolved)
    }

    /// The cloud refused the pending `local` of `key` as too far past its time (this
    /// device's clock ran ahead): the clock comes back to `server_time_ms` and the change is
    /// stamped there, to be sent again.
    pub fn restamp_behind(
        &self,
        key: &Key,
        local: &Version,
        server_time_ms: u64,
        now: u64,
    ) -> Result<Resolved> {
        let replica = &self.db.inner.replica;
        // Read in the transaction that re-stamps it (see `superseded`).
        let (resolved, _) = self.db.inner.store.write(Durability::Default, |tx| {
            let Some(entry) = tx.pending(key)?.filter(|e| &e.change.version == local) else {
                return Ok(Resolved::Stale);
            };
            let (version, bytes) = replica.restamp_at(tx, entry, server_time_ms, now as i64)?;
            Ok::<_, Error>(Resolved::Restamped { version, bytes })
        })?;
        Ok(resolved)
    }

    /// The server's time at a handshake: the clock observes it (persisted), the difference
    /// is the skew `status()` reports, and it is the cloud's time cloud changes are judged
    /// by (kept for the next open too: see `Db::past_cloud_time`).
    pub fn observe_server(&self, server_time_ms: u64) -> Result<()> {
        let now = self.db.now_ms();
        let skew_ms = server_time_ms.abs_diff(now.max(0) as u64);
        let mut report = lock(&self.db.inner.report);
        report.skew_ms = Some(skew_ms);
        report.cloud_time = Some(CloudTime {
            server_ms: server_time_ms,
            timer_ms: self.db.timer_ms(),
            wall_ms: now.max(0) as u64,
        });
        drop(report);
        let replica = &self.db.inner.replica;
        self.db.inner.store.write(Durability::Default, |tx| {
            replica.observe(tx, Hlc::new(server_time_ms, 0), now);
            tx.set_meta(META_CLOUD_TIME, server_time_ms.to_be_bytes().to_vec());
            Ok::<_, Error>(())
        })?;
        Ok(())
    }

    /// Runs the triggers of `event` here (a driver's trigger thread).
    pub fn run_triggers(&self, event: &Event) {
        self.db.inner.triggers.fire(event);
    }
}

#[cfg(test)]
mod tests {
    use ferry_journal::{Change, ChangeOp, QuarantineRecord};
    use ferry_types::{Hlc, Item, Key, ReplicaId, Value, Version};

    use crate::{Config, Db, Error};

    /// A refused attach changes nothing: before, an attach whose scopes could not be read
    /// had already applied the quarantine (and run its triggers).
    #[test]
    fn an_attach_refused_for_its_scopes_leaves_the_quarantine_alone() {
        let schema = ferry_schema::Schema::parse(
            r#"{
                version: '1',
                indexes: { primary: { hash: 'pk', sort: 'sk' } },
                models: {
                    Mine: { pk: { type: 'string', value: 'mine' }, sk: { type: 'string', value: '${n}' },
                            n: { type: 'number', required: true } },
                    Shared: { pk: { type: 'string', value: 'shared' }, sk: { type: 'string', value: '${n}' },
                              n: { type: 'number', required: true } },
                },
                control: { Mine: { sync: 'down', scope: '${deviceId}' }, Shared: { sync: 'down', scope: '*' } },
            }"#,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), Config::with_schema(schema)).unwrap();
        let key = Key {
            hash: Value::S("shared".into()),
            sort: Some(Value::S("1".into())),
        };
        let item = Item::from([
            ("_type".to_string(), Value::S("Shared".into())),
            ("pk".to_string(), key.hash.clone()),
            ("sk".to_string(), Value::S("1".into())),
            ("n".to_string(), Value::N(1i64.into())),
        ]);
        let version = Version {
            hlc: Hlc::new(1_800_000_000_000, 0),
            replica: ReplicaId::parse("cloud").unwrap(),
        };
        let change = Change {
            model: "Shared".into(),
            key,
            op: ChangeOp::Put,
            version,
            scope: "*".into(),
            item: Some(item),
            base: None,
        };
        let record = QuarantineRecord {
            change,
            reason: "an earlier schema did not know the model".into(),
            at_ms: 1,
        };
        (db.inner.store)
            .write(ferry_store::Durability::Immediate, |tx| {
                tx.quarantine(record)
            })
            .unwrap();
        let attached =
            db.attach_replication(|_, _| -> crate::Result<(Box<dyn crate::Replication>, ())> {
                panic!("no driver is built for a refused attach")
            });
        assert!(
            matches!(attached, Err(Error::Control { .. })),
            "refused: no deviceId"
        );
        assert_eq!(
            db.inner.store.quarantine_count().unwrap(),
            1,
            "the quarantine is as it was"
        );
    }
}
