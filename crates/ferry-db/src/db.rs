//! The database handle.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use ferry_schema::{Context, Enable, IndexKind, Model, Schema};
use ferry_store::{Claims, Durability, ItemChange, Kind, Store, StoreLayout, Tx};
use ferry_types::{Item, ItemRef, Key, Value};
use serde_json::Value as Json;

use crate::replica::{Replica, uploads, version_of};
use crate::replication::Replication;
use crate::triggers::{Event, Op, Origin, TriggerId, Triggers};
use crate::{Config, Error, Result};

/// Expired items removed per sweeper transaction.
const SWEEP_BATCH_ITEMS: usize = 256;

/// A handle that does not keep the database open (see [`Db::downgrade`]).
#[derive(Clone)]
pub struct WeakDb(Weak<Inner>);

impl WeakDb {
    /// The database, if it is still open.
    pub fn upgrade(&self) -> Option<Db> {
        self.0.upgrade().map(|inner| Db { inner })
    }
}

/// An open Ferry database. Cheap to clone; every clone is the same database.
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub store: Store,
    /// The schema the store keeps its items by (its layout is derived from it).
    pub schema: Schema,
    pub replica: Replica,
    /// The attached driver, once a transport is attached.
    pub sync: OnceLock<Box<dyn Replication>>,
    pub config: Config,
    pub triggers: Triggers,
    /// What background work (sync, the sweeper) met, for `Db::status`.
    pub report: Mutex<Report>,
    _sweeper: Option<Sweeper>,
}

/// A clean close gives back the clock's reservation (see `Replica::release_reservation`).
impl Drop for Inner {
    fn drop(&mut self) {
        self.replica.release_reservation(&self.store);
    }
}

/// Failures and observations of background work that no caller is there to receive.
#[derive(Default)]
pub(crate) struct Report {
    /// The latest sync failure and when (epoch ms), as persisted: a later process shows it
    /// until a sync succeeds.
    pub last_error: Option<(String, u64)>,
    pub skew_ms: Option<u64>,
    /// The last handshake's time, by which the device tells the cloud's time now.
    pub cloud_time: Option<CloudTime>,
}

/// The cloud's time at a handshake, with the device's timer and wall clock then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CloudTime {
    pub server_ms: u64,
    pub timer_ms: u64,
    pub wall_ms: u64,
}

impl CloudTime {
    /// The cloud's time now, moved on from the handshake's by the timer or the wall clock,
    /// whichever moved more: the timer stops while a device sleeps, and a wall clock may
    /// step back.
    pub fn now_ms(&self, timer_ms: u64, wall_ms: u64) -> u64 {
        let elapsed_ms =
            (timer_ms.saturating_sub(self.timer_ms)).max(wall_ms.saturating_sub(self.wall_ms));
        self.server_ms.saturating_add(elapsed_ms)
    }
}

/// The schema this open uses, `given` or the one `kept` with the store, and, when one is
/// given, the one the store kept before (the same, if it did not change) if it parses.
fn schema_of(
    dir: &Path,
    given: Option<Schema>,
    kept: Option<&[u8]>,
) -> Result<(Schema, Option<Schema>)> {
    let stored = |bytes: &[u8]| serde_json::from_slice::<Json>(bytes);
    match (given, kept) {
        (Some(schema), kept) => {
            let before = kept.and_then(|bytes| Schema::from_value(stored(bytes).ok()?).ok());
            Ok((schema, before))
        }
        (None, Some(bytes)) => {
            let document = stored(bytes).map_err(|e| {
                Error::Storage(ferry_store::Error::Corrupt {
                    path: dir.display().to_string(),
                    what: "stored schema".into(),
                    detail: e.to_string(),
                })
            })?;
            Ok((Schema::from_value(document)?, None))
        }
        (None, None) => Err(Error::Argument(format!(
            "database {} has no schema yet: give one (--schema FILE) to create it",
            dir.display()
        ))),
    }
}

/// The store's layout for `schema`: its indexes and type attribute, and per model its TTL
/// attribute, whether it lives in memory only, and its unique claims; the schema's
/// document is kept with it.
fn store_layout(schema: &Schema) -> Result<StoreLayout> {
    let document = serde_json::to_vec(schema.document())
        .map_err(|e| Error::Argument(format!("the schema document does not serialize: {e}")))?;
    let kind = |model: &Model| {
        let claims = (model.fields.iter().any(|f| f.unique)).then(|| {
            let model = model.clone();
            Arc::new(move |item: &Item| model.unique_keys(item, &Context::new())) as Claims
        });
        let ttl = model.ttl_attr().map(str::to_string);
        let memory = model.control.mem;
        (
            model.name.clone(),
            Kind {
                ttl,
                memory,
                claims,
            },
        )
    };
    let secondary = (schema.indexes().iter()).filter(|i| i.kind != IndexKind::Primary);
    Ok(StoreLayout {
        primary: schema.primary().clone(),
        indexes: secondary.cloned().collect(),
        type_field: schema.params().type_field.clone(),
        kinds: schema.models().map(kind).collect(),
        document,
    })
}

/// Meta record holding the latest sync failure (JSON: message and epoch ms), until a success.
const META_LAST_ERROR: &str = "sync:last_error";

/// The persisted last sync failure, if one is recorded (empty: cleared).
fn last_error(store: &Store) -> Result<Option<(String, u64)>> {
    let Some(bytes) = store.meta(META_LAST_ERROR)?.filter(|b| !b.is_empty()) else {
        return Ok(None);
    };
    let record: Json = serde_json::from_slice(&bytes).unwrap_or_default();
    let message = record["message"].as_str().map(String::from);
    Ok(message.map(|message| (message, record["at_ms"].as_u64().unwrap_or(0))))
}

/// Meta record holding the context properties, as a JSON object.
const META_CONTEXT: &str = "context";

/// The stored context properties with `given` over them, stored again when that changed.
fn remembered_context(store: &Store, given: Context) -> Result<Context> {
    let stored: Context = match store.meta_text(META_CONTEXT)? {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| Error::corrupt(store, "context properties", format!("'{text}': {e}")))?,
        None => Context::new(),
    };
    let mut context = stored.clone();
    context.extend(given);
    if context != stored {
        let text = serde_json::Value::Object(context.clone()).to_string();
        store.write(Durability::Immediate, |tx| {
            tx.set_meta(META_CONTEXT, text.into_bytes());
            Ok::<_, Error>(())
        })?;
    }
    Ok(context)
}

impl Db {
    /// Opens the database in `dir`, creating it when `config.schema` is given. A database
    /// remembers its schema and its context properties (a device's `deviceId`): later opens
    /// need neither unless they change; a property given again replaces the stored one.
    pub fn open(dir: impl AsRef<Path>, mut config: Config) -> Result<Db> {
        let options = ferry_store::Options {
            sync_window: config.sync_window,
            outbox_changes_max: config.outbox_changes_max,
            on_fsync: config.on_fsync.clone(),
            on_commit: config.on_commit.clone(),
            ..ferry_store::Options::default()
        };
        let (store, (schema, replaced)) = Store::open(dir.as_ref(), &options, |kept| {
            let (schema, before) = schema_of(dir.as_ref(), config.schema.take(), kept)?;
            Ok::<_, Error>((store_layout(&schema)?, (schema, before)))
        })?;
        let last_error = last_error(&store)?;
        let replica = Replica::load(&store, config.replica.as_ref())?;
        config.context = remembered_context(&store, std::mem::take(&mut config.context))?;
        let context = &config.context;
        crate::replication::restart_cursors_of_new_downloads(&store, &schema, replaced, context)?;
        crate::crypt::check_key(&store, &schema, config.crypto.as_ref())?;
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| Inner {
            store,
            schema,
            replica,
            sync: OnceLock::new(),
            _sweeper: config
                .ttl_sweep
                .map(|every| Sweeper::start(weak.clone(), every)),
            config,
            triggers: Triggers::default(),
            report: Mutex::new(Report {
                last_error,
                skew_ms: None,
                cloud_time: None,
            }),
        });
        Ok(Db { inner })
    }

    /// A handle that does not keep the database open: background work holds one.
    pub fn downgrade(&self) -> WeakDb {
        WeakDb(Arc::downgrade(&self.inner))
    }

    /// The schema in force.
    pub fn schema(&self) -> &Schema {
        &self.inner.schema
    }

    /// The context properties injected into every operation.
    pub fn context(&self) -> &Context {
        &self.inner.config.context
    }

    /// Registers a callback fired after every committed change to `model` (every model
    /// when `None`), in commit order: on the writing thread for local writes, on the
    /// driver's trigger thread for cloud changes. A callback may call any method of the
    /// database; one that holds a `Db` keeps it open until the trigger is removed, so hold
    /// a [`WeakDb`] ([`Db::downgrade`]) where the database should close on its last drop.
    pub fn on_change(
        &self,
        model: Option<&str>,
        callback: impl Fn(&Event) + Send + Sync + 'static,
    ) -> Result<TriggerId> {
        if let Some(name) = model {
            self.schema().model(name)?;
        }
        Ok(self
            .inner
            .triggers
            .add(model.map(str::to_string), Box::new(callback)))
    }

    /// Removes a trigger. Returns whether it was registered.
    pub fn remove_trigger(&self, id: TriggerId) -> bool {
        self.inner.triggers.remove(id)
    }

    /// Removes every item whose TTL has passed, as real removes (triggers fire). Returns
    /// how many were removed. Expired items are invisible to reads before this runs.
    pub fn sweep_expired(&self) -> Result<usize> {
        let mut removed = 0;
        loop {
            let now_s = (self.now_ms() / 1000).max(0) as u64;
            let keys = self.inner.store.expired(now_s, SWEEP_BATCH_ITEMS)?;
            if keys.is_empty() {
                return Ok(removed);
            }
            let (count, changes) = self.inner.store.write(Durability::Default, |tx| {
                let mut count = 0;
                let now_ms = now_s as i64 * 1000;
                for key in &keys {
                    let Some(item) = tx.get(key)? else { continue };
                    let Some(model) = self.model_of(&item) else {
                        continue;
                    };
                    if self.expired(&item, now_ms) {
                        self.delete_in(tx, model, key, now_ms)?;
                        count += 1;
                    }
                }
                Ok::<_, Error>(count)
            })?;
            self.committed(&changes);
            removed += count;
            if count == 0 {
                // Records that no longer match their items; they are rewritten on the next
                // write of the item. Stop rather than spin on them.
                return Ok(removed);
            }
        }
    }

    /// Removes the item under `key` in `tx`, journaling the removal when the model uploads.
    pub(crate) fn delete_in(
        &self,
        tx: &mut Tx<'_>,
        model: &Model,
        key: &Key,
        now_ms: i64,
    ) -> Result<Option<Arc<Item>>> {
        let old = tx.delete(key)?;
        if let Some(old) = &old
            && uploads(model)
        {
            let ctx = self.context();
            self.inner
                .replica
                .journal_delete(tx, model, ctx, key, old, now_ms)?;
        }
        Ok(old)
    }

    /// Stores `item` in `tx`, stamping and journaling it when the model uploads.
    pub(crate) fn put_in(
        &self,
        tx: &mut Tx<'_>,
        model: &Model,
        key: &Key,
        mut item: Item,
        now_ms: i64,
    ) -> Result<Arc<Item>> {
        if uploads(model) {
            let ctx = self.context();
            self.inner
                .replica
                .journal_put(tx, model, ctx, key, &mut item, now_ms)?;
        }
        Ok(tx.put(item)?)
    }

    /// Forgets tombstones older than the retention horizon (30 days, docs/design.md section 6),
    /// except those whose delete still waits for the cloud's acknowledgement. Returns how
    /// many were forgotten. The background sweeper runs it with [`Db::sweep_expired`].
    pub fn purge_tombstones(&self) -> Result<usize> {
        let horizon_ms = self.horizon_ms();
        let before_ms = (self.now_ms().max(0) as u64).saturating_sub(horizon_ms);
        let mut purged = 0;
        loop {
            let keys = self
                .inner
                .store
                .expired_tombstones(before_ms, SWEEP_BATCH_ITEMS)?;
            let (count, _) = self.inner.store.write(Durability::Default, |tx| {
                let mut count = 0;
                for key in &keys {
                    if tx.pending(key)?.is_none() {
                        tx.take_tombstone(key)?;
                        count += 1;
                    }
                }
                Ok::<_, Error>(count)
            })?;
            purged += count;
            if keys.len() < SWEEP_BATCH_ITEMS || count == 0 {
                return Ok(purged);
            }
        }
    }

    /// Records a failure of background work for [`Db::status`].
    pub(crate) fn report_error(&self, what: String) {
        let at_ms = self.now_ms().max(0) as u64;
        // Memory first, and the lock released before the store write: a write applying
        // cloud changes takes the report lock inside the store's (the clock skew).
        let repeated = {
            let mut report = self.inner.report.lock().unwrap_or_else(|p| p.into_inner());
            let repeated = (report.last_error.as_ref()).is_some_and(|(last, _)| *last == what);
            report.last_error = Some((what.clone(), at_ms));
            repeated
        };
        if !repeated {
            let record = serde_json::json!({"message": what, "at_ms": at_ms}).to_string();
            self.set_last_error(record.into_bytes());
        }
    }

    /// Sync succeeded: the last failure is history (for this process and later ones).
    pub(crate) fn clear_error(&self) {
        let had = (self.inner.report.lock().unwrap_or_else(|p| p.into_inner()))
            .last_error
            .take()
            .is_some();
        if had {
            self.set_last_error(Vec::new());
        }
    }

    /// Persists the last failure's record (empty: none); a failure to store it loses only
    /// the report.
    fn set_last_error(&self, record: Vec<u8>) {
        let _ = self.inner.store.write(Durability::Default, |tx| {
            tx.set_meta(META_LAST_ERROR, record);
            Ok::<_, Error>(())
        });
    }

    /// Fsyncs every committed write now.
    pub fn flush(&self) -> Result<()> {
        Ok(self.inner.store.persist()?)
    }

    /// The database's clock (epoch ms).
    pub(crate) fn now_ms(&self) -> i64 {
        (self.inner.config.clock)()
    }

    /// The monotonic clock sync's timers run on ([`crate::Config::timer`]).
    pub(crate) fn timer_ms(&self) -> u64 {
        (self.inner.config.timer)().max(0) as u64
    }

    pub(crate) fn model(&self, name: &str) -> Result<&Model> {
        let model = self.schema().model(name)?;
        if model.control.enable == Enable::Cloud {
            return Err(Error::Control {
                model: name.to_string(),
                reason: "the model lives only in the cloud (control enable: 'cloud'); the device does not store it".into(),
            });
        }
        Ok(model)
    }

    /// The model a stored item belongs to.
    pub(crate) fn model_of(&self, item: &Item) -> Option<&Model> {
        let type_field = &self.schema().params().type_field;
        let name = item.get(type_field)?.as_str()?;
        self.schema().model(name).ok()
    }

    /// Has the item's TTL passed at `now_ms`?
    pub(crate) fn expired(&self, item: &Item, now_ms: i64) -> bool {
        let Some(attr) = self.model_of(item).and_then(|m| m.ttl_attr()) else {
            return false;
        };
        let seconds = match item.get(attr) {
            Some(Value::N(n)) => n.as_i64(),
            _ => None,
        };
        ttl_due(seconds, now_ms)
    }

    /// Item -> JSON for a caller, hidden fields only when asked.
    pub(crate) fn to_json(&self, model: &Model, item: &Item, hidden: bool) -> Json {
        let item = model.open(item, self.crypto());
        Json::Object(model.to_json(&ItemRef::of(&item), hidden))
    }

    /// The key of `crypt` fields, if the database was given one.
    pub(crate) fn crypto(&self) -> Option<&ferry_schema::Crypto> {
        self.inner.config.crypto.as_ref()
    }

    /// After a local commit: fires triggers and tells the sync engine what was queued.
    pub(crate) fn committed(&self, changes: &[ItemChange]) {
        self.fire(changes, Origin::Local);
        self.report_staged();
    }

    /// Fires triggers for committed changes.
    pub(crate) fn fire(&self, changes: &[ItemChange], origin: Origin) {
        if self.inner.triggers.is_empty() {
            return;
        }
        for change in changes {
            let Some(model) = change
                .new
                .as_ref()
                .or(change.old.as_ref())
                .and_then(|i| self.model_of(i))
            else {
                continue;
            };
            let op = match (&change.old, &change.new) {
                (None, _) => Op::Create,
                (Some(_), Some(_)) => Op::Update,
                (Some(_), None) => Op::Remove,
            };
            let version = match &change.new {
                Some(item) => version_of(item),
                None => self
                    .inner
                    .store
                    .tombstone(&change.key)
                    .ok()
                    .flatten()
                    .map(|t| t.version),
            };
            let event = Event {
                model: model.name.clone(),
                op,
                old: change.old.as_ref().map(|i| self.to_json(model, i, true)),
                new: change.new.as_ref().map(|i| self.to_json(model, i, true)),
                version: version.map(|v| v.to_text()),
                origin,
            };
            self.deliver(event);
        }
    }

    /// Runs the triggers of `event`: here, unless it comes from the cloud and a background
    /// driver applied it, whose events go to the trigger thread (see `sync::Events`).
    fn deliver(&self, event: Event) {
        let event = match (event.origin, self.inner.sync.get()) {
            (Origin::Cloud, Some(syncer)) => match syncer.dispatch(event) {
                None => return,
                Some(undelivered) => undelivered,
            },
            _ => event,
        };
        self.inner.triggers.fire(&event);
    }

    /// Fires a `Conflict` event per conflict decided while applying cloud changes.
    pub(crate) fn fire_conflicts(&self, conflicts: &[ferry_journal::ConflictRecord]) {
        if self.inner.triggers.is_empty() {
            return;
        }
        for conflict in conflicts {
            let Ok(model) = self.schema().model(&conflict.loser.model) else {
                continue;
            };
            let loser = conflict.loser.item.as_ref();
            let winner = self.inner.store.get(&conflict.loser.key).ok().flatten();
            let event = Event {
                model: model.name.clone(),
                op: Op::Conflict,
                old: loser.map(|i| self.to_json(model, i, true)),
                new: winner.map(|i| self.to_json(model, &i, true)),
                version: Some(conflict.winner.to_text()),
                origin: Origin::Cloud,
            };
            self.deliver(event);
        }
    }
}

/// Removes expired items in the background.
struct Sweeper {
    _stop: mpsc::Sender<()>,
}

impl Sweeper {
    fn start(db: Weak<Inner>, every: Duration) -> Sweeper {
        let (stop, stopped) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("ferry-ttl".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let Some(inner) = db.upgrade() else { return };
                    // A failed sweep is retried next round (reads already hide expired
                    // items); the status shows why.
                    let db = Db { inner };
                    if let Err(e) = db.sweep_expired().and_then(|_| db.purge_tombstones()) {
                        db.report_error(format!("sweeper: {}: {e}", e.code()));
                    }
                }
            });
        // Without the thread, expired items stay hidden and are swept on demand.
        drop(spawned);
        Sweeper { _stop: stop }
    }
}

impl Db {
    /// Calls `f` with every item of `model` (every model when `None`), in primary key
    /// order, as `(model name, item)`, until it returns false. Expired items are skipped.
    pub fn scan(
        &self,
        model: Option<&str>,
        hidden: bool,
        mut f: impl FnMut(&str, Json) -> bool,
    ) -> Result<()> {
        if let Some(name) = model {
            self.model(name)?;
        }
        let now = self.now_ms();
        for item in self.inner.store.items() {
            let item = item?;
            let Some(owner) = self.model_of(&item) else {
                continue;
            };
            if model.is_some_and(|m| m != owner.name) || self.expired(&item, now) {
                continue;
            }
            if !f(&owner.name, self.to_json(owner, &item, hidden)) {
                break;
            }
        }
        Ok(())
    }
}

/// The TTL rule, for owned items and views alike: the attribute holds epoch seconds, and
/// the item is gone from that second on.
pub(crate) fn ttl_due(seconds: Option<i64>, now_ms: i64) -> bool {
    seconds.is_some_and(|seconds| seconds.saturating_mul(1000) <= now_ms)
}
