//! Replication as the database sees it: the [`Replication`] hook a driver (`ferry-driver`)
//! attaches, and what [`Db::status`], [`Db::conflicts`] and [`Db::quarantine`] report. The
//! driver works through the replica port (`port.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use ferry_journal::Change;
use ferry_store::Durability;
use ferry_sync::EngineStatus;
use ferry_types::Hlc;

use crate::port::ReplicaPort;
use crate::triggers::Event;
use crate::{Db, Error, Result};

/// Meta record prefix of per-scope cursors.
pub(crate) const META_CURSOR_PREFIX: &str = "cursor:";
/// Meta record of the models each read scope's cursor covers (scope to model names).
const META_DOWNLOADS: &str = "downloads";

/// The models each scope downloads under `schema`, for a device of `context`. A model
/// whose scope depends on the item is left out (attaching refuses it, saying why).
fn downloads_by_scope(
    schema: &ferry_schema::Schema,
    context: &ferry_schema::Context,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut scopes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for model in (schema.models()).filter(|m| crate::replica::downloads(m)) {
        if let Some(scope) = model.device_scope(context) {
            scopes.entry(scope).or_default().insert(model.name.clone());
        }
    }
    scopes
}

/// Starts over the cursor of every scope that now downloads a model it did not when its
/// cursor moved (a schema upgrade that brings a model down): the cloud's existing items of
/// that model lie behind the cursor, and only a pull from the start (a snapshot) brings
/// them.
pub(crate) fn restart_cursors_of_new_downloads(
    store: &ferry_store::Store,
    schema: &ferry_schema::Schema,
    replaced: Option<ferry_schema::Schema>,
    context: &ferry_schema::Context,
) -> Result<()> {
    let now = downloads_by_scope(schema, context);
    let encoded = serde_json::to_vec(&now).map_err(|e| Error::Argument(e.to_string()))?;
    let stored = store.meta(META_DOWNLOADS)?;
    if stored.as_deref() == Some(&encoded[..]) {
        return Ok(());
    }
    // Without a record (a database older than it), the schema this open replaced says
    // what the cursors covered; a new database has no cursors to start over.
    let before: Option<BTreeMap<String, BTreeSet<String>>> = match stored {
        Some(bytes) => serde_json::from_slice(&bytes).ok(),
        None => replaced.map(|schema| downloads_by_scope(&schema, context)),
    };
    let grown: Vec<&String> = match &before {
        None => Vec::new(),
        Some(before) => (now.iter())
            .filter(|(scope, models)| {
                let known = before.get(*scope);
                models.iter().any(|m| known.is_none_or(|k| !k.contains(m)))
            })
            .map(|(scope, _)| scope)
            .collect(),
    };
    store.write(Durability::Immediate, |tx| {
        for scope in &grown {
            crate::apply::set_cursor(tx, scope, Hlc::ZERO);
        }
        tx.set_meta(META_DOWNLOADS, encoded);
        Ok::<_, Error>(())
    })?;
    Ok(())
}

/// A change a local commit queued in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    /// The change as the outbox holds it.
    pub change: Change,
    /// Its encoded size.
    pub bytes: usize,
    /// The commit that queued it: a settle of this version names it
    /// ([`Acked::queued_by`](crate::Acked::queued_by)).
    pub commit: u64,
}

/// What a sync driver does for the database it is attached to (`ferry-driver` implements
/// it). The database calls it without holding any lock.
pub trait Replication: Send + Sync {
    /// A local commit queued a change in the outbox (the engine hears of it as
    /// `Input::Queued`; the driver may keep the change to push it).
    fn queued(&self, queued: Queued);
    /// Runs a cloud change's triggers elsewhere (a background driver's trigger thread);
    /// returns the event when the caller must run them itself.
    fn dispatch(&self, event: Event) -> Option<Event>;
    /// [`Db::sync`].
    fn sync(&self, port: &ReplicaPort, timeout: Duration) -> Result<()>;
    /// [`Db::drive`].
    fn drive(&self, port: &ReplicaPort) -> Result<()>;
    /// The engine as the driver's last step left it.
    fn engine_status(&self) -> EngineStatus;
    /// How long tombstones live in the cloud (the handshake's horizon).
    fn horizon_ms(&self) -> u64;
}

/// What [`Db::status`] reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Status {
    /// This database's replica id.
    pub replica: String,
    /// The latest HLC stamp issued or observed, as text.
    pub clock: String,
    /// A transport is attached.
    pub attached: bool,
    /// The transport is up (as far as the engine knows).
    pub connected: bool,
    /// Local changes not yet acknowledged by the cloud.
    pub pending_changes: usize,
    /// Their encoded bytes.
    pub pending_bytes: usize,
    /// Age of the oldest pending change, in milliseconds.
    pub oldest_pending_age_ms: Option<u64>,
    /// When the cloud last acknowledged a change (epoch ms).
    pub last_ack_ms: Option<u64>,
    /// When a pull last answered (epoch ms).
    pub last_receive_ms: Option<u64>,
    /// Per scope, the highest cloud `_seq` applied.
    pub cursors: Vec<(String, String)>,
    /// How far ahead of this device's clock the latest too-far-ahead stamp was (ms).
    pub clock_skew_ms: Option<u64>,
    /// Conflicts in the log (last-writer-wins losers; the log keeps the newest 10,000).
    pub conflicts: usize,
    /// Cloud changes this device could not apply, kept in the quarantine
    /// ([`Db::quarantine`]).
    pub quarantined: usize,
    /// Consecutive failed pushes.
    pub failures: u32,
    /// The latest sync failure (a refused change, a failed call, a failed apply), kept
    /// across processes until a sync succeeds.
    pub last_error: Option<String>,
    /// When it happened (epoch ms).
    pub last_error_at_ms: Option<u64>,
}

/// A losing version under last writer wins (`sync: 'both'`), or a cloud change that lost
/// to a pending local one, as [`Db::conflicts`] reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Conflict {
    /// The item's model.
    pub model: String,
    /// The item's primary key, as text.
    pub key: String,
    /// The version that won.
    pub winner: String,
    /// The version that lost.
    pub loser: String,
    /// The losing item (hidden fields included); `None` when the loser was a remove.
    pub loser_item: Option<serde_json::Value>,
    /// When the conflict was decided (epoch ms).
    pub at_ms: u64,
}

/// A cloud change this device could not apply, as [`Db::quarantine`] reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Quarantined {
    /// The change's model.
    pub model: String,
    /// The item's primary key, as text.
    pub key: String,
    /// The change's version.
    pub version: String,
    /// A remove, rather than a put.
    pub remove: bool,
    /// Why it could not apply.
    pub reason: String,
    /// The item as the cloud sent it (hidden fields included), for a put.
    pub item: Option<serde_json::Value>,
    /// When it was quarantined (epoch ms).
    pub at_ms: u64,
}

impl Db {
    /// Sends every pending change now and pulls every scope; returns when the cloud has
    /// acknowledged every change pending at the call (Ioto's `ioSync`), or fails with
    /// `SyncTimeout` after `timeout`, whatever the transport does meanwhile.
    pub fn sync(&self, timeout: Duration) -> Result<()> {
        self.replication()?.sync(&self.port(), timeout)
    }

    /// Runs the sync work that is due now, once, when no background task drives this
    /// database (attached with `background: false`): what a simulation calls at each step
    /// of its virtual time. With a background task it does nothing.
    pub fn drive(&self) -> Result<()> {
        self.replication()?.drive(&self.port())
    }

    /// Replication state: pending changes, acknowledgements, cursors, clock, errors.
    pub fn status(&self) -> Status {
        let now = self.now_ms().max(0) as u64;
        let replica = &self.inner.replica;
        let mut status = Status {
            replica: replica.id.to_string(),
            clock: replica.last().to_text(),
            attached: false,
            connected: false,
            pending_changes: 0,
            pending_bytes: 0,
            oldest_pending_age_ms: None,
            last_ack_ms: None,
            last_receive_ms: None,
            cursors: Vec::new(),
            clock_skew_ms: None,
            conflicts: self.inner.store.conflict_count().unwrap_or(0),
            quarantined: self.inner.store.quarantine_count().unwrap_or(0),
            failures: 0,
            last_error: None,
            last_error_at_ms: None,
        };
        // The count is the store's, exact and O(1); bytes and age are the engine's (as of
        // its last step) once attached, since walking the outbox costs O(pending).
        status.pending_changes = self.inner.store.outbox_len();
        if self.inner.sync.get().is_none() {
            let mut oldest = None::<u64>;
            for (_, entry) in self.inner.store.outbox().flatten() {
                status.pending_bytes += entry.encoded_len();
                oldest = Some(oldest.map_or(entry.queued_ms, |o| o.min(entry.queued_ms)));
            }
            status.oldest_pending_age_ms = oldest.map(|t| now.saturating_sub(t));
            // The persisted cursors of the scopes this device reads (none pulled: none).
            let scopes = self.read_scopes().unwrap_or_default();
            status.cursors = (scopes.into_iter())
                .filter_map(|scope| match self.load_cursor(&scope) {
                    Ok(cursor) if cursor != Hlc::ZERO => Some((scope, cursor.to_text())),
                    _ => None,
                })
                .collect();
        }
        if let Some(replication) = self.inner.sync.get() {
            let engine = replication.engine_status();
            let report = lock(&self.inner.report);
            // The engine's times are the timer's: ages by it, dates by the wall clock now.
            let timer = self.timer_ms();
            let age = |at: u64| timer.saturating_sub(at);
            status.pending_bytes = engine.pending_bytes;
            status.oldest_pending_age_ms = engine.oldest_pending_ms.map(age);
            status.attached = true;
            status.connected = engine.connected;
            status.last_ack_ms = engine.last_ack_ms.map(|at| now.saturating_sub(age(at)));
            status.last_receive_ms = engine.last_receive_ms.map(|at| now.saturating_sub(age(at)));
            status.failures = engine.consecutive_failures;
            status.cursors = engine
                .cursors
                .iter()
                .map(|(s, c)| (s.clone(), c.to_text()))
                .collect();
            status.clock_skew_ms = report.skew_ms;
        }
        let last_error = lock(&self.inner.report).last_error.clone();
        (status.last_error, status.last_error_at_ms) = last_error.unzip();
        status
    }

    /// The cloud changes this device could not apply (at most `limit`, by key): each kept
    /// with its reason while its scope moved on. A newer change of the key that applies
    /// releases it; changes of models this schema does not know apply after an upgrade
    /// (they are retried when the database attaches).
    pub fn quarantine(&self, limit: usize) -> Result<Vec<Quarantined>> {
        let records = self.inner.store.quarantined(limit)?;
        Ok((records.into_iter())
            .map(|record| {
                let change = record.change;
                let model = self.schema().model(&change.model).ok();
                let item = change.item.as_ref().map(|item| match model {
                    Some(model) => self.to_json(model, item, true),
                    None => ferry_types::Value::M(item.clone()).to_json(),
                });
                Quarantined {
                    model: change.model.clone(),
                    key: change.key.to_string(),
                    version: change.version.to_text(),
                    remove: change.op == ferry_journal::ChangeOp::Delete,
                    reason: record.reason,
                    item,
                    at_ms: record.at_ms,
                }
            })
            .collect())
    }

    /// The latest conflicts, newest first, at most `limit`.
    pub fn conflicts(&self, limit: usize) -> Result<Vec<Conflict>> {
        let records = self.inner.store.conflicts(limit)?;
        Ok(records
            .into_iter()
            .map(|record| {
                let loser = record.loser;
                let model = self.schema().model(&loser.model).ok();
                let loser_item = loser.item.as_ref().map(|item| match model {
                    Some(model) => self.to_json(model, item, true),
                    None => ferry_types::Value::M(item.clone()).to_json(),
                });
                Conflict {
                    model: loser.model.clone(),
                    key: loser.key.to_string(),
                    winner: record.winner.to_text(),
                    loser: loser.version.to_text(),
                    loser_item,
                    at_ms: record.at_ms,
                }
            })
            .collect())
    }

    /// Tells the engine about outbox entries that commits have queued (a commit reports
    /// them with their sizes: nothing is read back). An entry of a write that has not
    /// committed yet is not among them: told too early, the driver would find no such
    /// change in the outbox and forget it.
    pub(crate) fn report_staged(&self) {
        let taken = self.inner.replica.take_committed();
        // Not attached: the driver reads the outbox once its hook is set, and these
        // entries are in it already.
        let Some(replication) = self.inner.sync.get() else {
            return;
        };
        for queued in taken {
            replication.queued(queued);
        }
    }

    /// How long tombstones live in the cloud this database syncs with.
    pub(crate) fn horizon_ms(&self) -> u64 {
        (self.inner.sync.get()).map_or(ferry_sync::HORIZON_MS, |r| r.horizon_ms())
    }

    /// The port a driver's `sync` and `drive` work through.
    fn port(&self) -> ReplicaPort {
        ReplicaPort { db: self.clone() }
    }

    fn replication(&self) -> Result<&dyn Replication> {
        (self.inner.sync.get())
            .map(|r| r.as_ref())
            .ok_or_else(|| Error::Argument("no transport attached: call Db::attach first".into()))
    }

    /// The scopes this device reads: the scope of every model that downloads, rendered
    /// with this device's context. A downloading model whose scope depends on the item
    /// cannot be read by scope, and is refused.
    pub(crate) fn read_scopes(&self) -> Result<BTreeSet<String>> {
        let mut scopes = BTreeSet::new();
        for model in self
            .schema()
            .models()
            .filter(|m| crate::replica::downloads(m))
        {
            let scope = model.device_scope(self.context()).ok_or_else(|| Error::Control {
                model: model.name.clone(),
                reason: format!(
                    "the model downloads but its scope '{}' depends on the item: a device reads \
                     only scopes named by its context (deviceId, accountId, ...) or '*'",
                    model.control.scope.as_deref().unwrap_or("${deviceId}")
                ),
            })?;
            scopes.insert(scope);
        }
        Ok(scopes)
    }

    /// A scope's persisted cursor (`Hlc::ZERO` for a scope never pulled).
    pub(crate) fn load_cursor(&self, scope: &str) -> Result<Hlc> {
        let name = format!("{META_CURSOR_PREFIX}{scope}");
        Ok(self
            .inner
            .store
            .meta_u64(&name)?
            .map_or(Hlc::ZERO, Hlc::from_u64))
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use crate::{Config, Db, Error, ErrorKind};

    fn schema() -> ferry_schema::Schema {
        ferry_schema::Schema::parse(
            r#"{
                version: '1',
                indexes: { primary: { hash: 'pk', sort: 'sk' } },
                models: { R: {
                    pk: { type: 'string', value: 'r' }, sk: { type: 'string', value: '${n}' },
                    n: { type: 'number', required: true },
                } },
                control: { R: { sync: 'up' } },
            }"#,
        )
        .unwrap()
    }

    #[test]
    fn a_database_never_attached_keeps_no_notifications() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), Config::with_schema(schema())).unwrap();
        for n in 0..100 {
            db.create("R", serde_json::json!({ "n": n })).unwrap();
        }
        assert_eq!(db.status().pending_changes, 100, "every write is queued");
        let staged = db.inner.replica.committed.lock().unwrap().len();
        assert_eq!(staged, 0, "the outbox holds them; memory does not");
    }

    #[test]
    fn a_corrupt_stored_replica_id_is_a_storage_failure_not_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), Config::with_schema(schema())).unwrap();
        (db.inner.store)
            .write(ferry_store::Durability::Immediate, |tx| {
                tx.set_meta("replica", b"not a replica id".to_vec());
                Ok::<_, Error>(())
            })
            .unwrap();
        drop(db);
        let Err(error) = Db::open(dir.path(), Config::with_schema(schema())) else {
            panic!("a database whose replica id does not parse opened");
        };
        assert_eq!(
            (error.kind(), error.code()),
            (ErrorKind::Failed, "StorageError")
        );
        let message = error.to_string();
        assert!(
            message.contains("corrupt replica id") && message.contains("not a replica id"),
            "{message}"
        );
    }

    /// The clock persists a reservation ahead of its stamps, and only what committed
    /// counts: a write whose commit failed staged a reservation that is not on disk, so
    /// the next write persists one again. Reopened on a clock an hour behind, the next
    /// stamp goes past every stamp issued.
    #[test]
    fn no_stamp_is_reused_after_a_restart_even_when_a_reserving_write_failed() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(AtomicI64::new(1_800_000_000_000));
        let fail_next = Arc::new(AtomicBool::new(false));
        let config = || {
            let mut config = Config::with_schema(schema());
            let clock = Arc::clone(&now);
            config.clock = Arc::new(move || clock.load(Ordering::SeqCst));
            let fail = Arc::clone(&fail_next);
            config.on_commit = Some(Arc::new(move || match fail.swap(false, Ordering::SeqCst) {
                true => Err(std::io::Error::other("a failing disk")),
                false => Ok(()),
            }));
            config
        };
        let newest = |db: &Db| {
            (db.inspect_pending().unwrap().into_iter())
                .map(|p| p.version)
                .max()
        };
        let db = Db::open(dir.path(), config()).unwrap();
        db.create("R", serde_json::json!({ "n": 1 })).unwrap();
        now.fetch_add(2_000, Ordering::SeqCst);
        fail_next.store(true, Ordering::SeqCst);
        assert!(
            db.create("R", serde_json::json!({ "n": 2 })).is_err(),
            "its commit fails"
        );
        db.create("R", serde_json::json!({ "n": 3 })).unwrap();
        let before = newest(&db).unwrap();
        drop(db);
        now.fetch_sub(3_600_000, Ordering::SeqCst);
        let db = Db::open(dir.path(), config()).unwrap();
        db.create("R", serde_json::json!({ "n": 4 })).unwrap();
        let after = newest(&db).unwrap();
        assert!(after > before, "{after} after a restart, past {before}");
    }

    /// The reservation runs a step ahead of the wall, and a clean close gives it back: a
    /// process that opens, writes and closes again and again (a CLI in a loop, a device
    /// that reboots) does not move the clock ahead of the wall.
    #[test]
    fn restarts_do_not_move_the_clock_ahead_of_the_wall() {
        use std::sync::Arc;

        let dir = tempfile::tempdir().unwrap();
        let wall: i64 = 1_800_000_000_000;
        let config = || {
            let mut config = Config::with_schema(schema());
            config.clock = Arc::new(move || wall);
            config
        };
        for n in 0..50 {
            let db = Db::open(dir.path(), config()).unwrap();
            db.create("R", serde_json::json!({ "n": n })).unwrap();
        }
        let db = Db::open(dir.path(), config()).unwrap();
        let newest = (db.inspect_pending().unwrap().into_iter())
            .map(|p| p.version)
            .max()
            .unwrap();
        assert!(newest.hlc.physical_ms() <= wall as u64 + 1_000, "{newest}");
    }
}
