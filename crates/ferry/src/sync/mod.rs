//! Replication: a [`Db`] attached to a transport, driven through the sans-IO engine of
//! `ferry-sync`. The driver here owns the I/O: it feeds the engine what happened (local
//! commits, push results, pulled pages, time) and carries out what the engine asks
//! (push, settle, pull, resync), applying cloud changes to the store with the direction
//! rules of `ferry_sync::decide_inbound`.

mod background;
mod driver;
mod inbound;
mod link;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ferry_sync::{Engine, EngineConfig, EngineStatus, Input, Transport};
use ferry_types::{Hlc, Key};

use crate::{Db, Error, Result};
use driver::Driver;

/// Meta record prefix of per-scope cursors.
const META_CURSOR_PREFIX: &str = "cursor:";
/// Longest pause of `Db::sync` between engine steps.
const SYNC_POLL_MS: u64 = 5;
/// Inputs waiting for the driver at most (see `Syncer::inbox`).
const INBOX_INPUTS_MAX: usize = 10_000;
/// The name of the thread that runs a background driver's cloud triggers.
const TRIGGER_THREAD: &str = "ferry-triggers";
/// Cloud events waiting for the trigger thread at most.
const EVENTS_QUEUED_MAX: usize = 1024;
/// A transport call that has not answered after this fails with `Timeout`.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How an attached database syncs.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The engine's knobs: `sync_delay_ms` (syncDelay), `sync_limit_bytes` (syncLimit),
    /// retries, polling, catch-up window, horizon.
    pub engine: EngineConfig,
    /// A task of its own drives replication (the default; needs the `tokio` feature).
    /// `false`: only [`Db::sync`] and [`Db::drive`] move data (simulations step it by hand).
    pub background: bool,
    /// Every transport call of the background task fails with `Timeout` after this
    /// ([`CALL_TIMEOUT`]).
    pub call_timeout: Duration,
    /// Seed for the engine's retry jitter (any value; fixed for reproducible runs).
    pub seed: u64,
}

impl Default for SyncOptions {
    fn default() -> SyncOptions {
        SyncOptions {
            engine: EngineConfig::default(),
            background: cfg!(feature = "tokio"),
            call_timeout: CALL_TIMEOUT,
            seed: 0,
        }
    }
}

/// What [`Db::status`] reports.
#[derive(Debug, Clone, PartialEq)]
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
    /// The latest error the driver met (a rejected change, a failed apply).
    pub last_error: Option<String>,
}

/// A losing version under last writer wins (`sync: 'both'`), or a cloud change that lost
/// to a pending local one, as [`Db::conflicts`] reports it.
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
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

/// The driver's state for an attached database, shared by the writers, `sync()`,
/// `status()` and whoever runs the driver.
pub(crate) struct Syncer {
    /// The driver, when `Db::drive` runs it (no background task); `None` while a step
    /// runs, or for good when the background task owns it.
    driver: Mutex<Option<Driver>>,
    /// Inputs from writers and `sync()`, for the next step. Bounded: past
    /// [`INBOX_INPUTS_MAX`] notifications are dropped and the next step reloads the whole
    /// outbox instead, so nothing is lost.
    inbox: Mutex<Inbox>,
    /// The engine as the last step left it, for `status()` (never waits for a step).
    snapshot: Mutex<EngineStatus>,
    requested: AtomicU64,
    answered: Mutex<u64>,
    answer: Condvar,
    horizon_ms: AtomicU64,
    wake: background::Wake,
    /// Where a background driver's cloud events go (see [`Syncer::dispatch`]), and how
    /// many were sent and fired.
    events: Option<std::sync::mpsc::SyncSender<crate::Event>>,
    delivered: Arc<Delivered>,
}

/// Cloud events handed to the trigger thread and fired by it, so that `sync()` returns
/// only after the triggers of what it pulled ran.
#[derive(Default)]
struct Delivered {
    /// (sent, fired)
    counts: Mutex<(u64, u64)>,
    fired: Condvar,
}

impl Delivered {
    /// Waits until every event sent so far has fired; false if `deadline` came first.
    fn wait(&self, deadline: Instant) -> bool {
        let mut counts = lock(&self.counts);
        let sent = counts.0;
        while counts.1 < sent {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            counts = (self.fired.wait_timeout(counts, left))
                .map_or_else(|p| p.into_inner().0, |(guard, _)| guard);
        }
        true
    }
}

#[derive(Default)]
struct Inbox {
    inputs: Vec<Input>,
    overflowed: bool,
}

impl Syncer {
    /// The inputs queued since the last step (the whole outbox again after an overflow).
    fn take_inputs(&self, db: &Db) -> Vec<Input> {
        let inbox = std::mem::take(&mut *lock(&self.inbox));
        if !inbox.overflowed {
            return inbox.inputs;
        }
        let mut inputs = queued_inputs(db).unwrap_or_else(|e| {
            db.report_error(format!("{}: reloading the outbox: {e}", e.code()));
            Vec::new()
        });
        inputs.extend(
            inbox
                .inputs
                .into_iter()
                .filter(|i| !matches!(i, Input::Queued { .. })),
        );
        inputs
    }

    fn push_input(&self, input: Input) {
        let mut inbox = lock(&self.inbox);
        match (&input, inbox.inputs.len() >= INBOX_INPUTS_MAX) {
            (Input::Queued { .. }, true) => inbox.overflowed = true,
            _ => inbox.inputs.push(input),
        }
        drop(inbox);
        self.wake.notify();
    }

    /// Hands a cloud change's event to the trigger thread, so that a trigger runs off the
    /// driver's thread and may wait on the driver (`sync()`) for real. Bounded: when
    /// [`EVENTS_QUEUED_MAX`] events wait, the driver waits for the triggers (it never waits
    /// on them otherwise, so this cannot deadlock). Returns the event when there is no
    /// trigger thread: the caller runs it.
    pub(crate) fn dispatch(&self, event: crate::Event) -> Option<crate::Event> {
        let Some(events) = &self.events else {
            return Some(event);
        };
        lock(&self.delivered.counts).0 += 1;
        let undelivered = events.send(event).err().map(|e| e.0);
        if undelivered.is_some() {
            lock(&self.delivered.counts).0 -= 1;
        }
        undelivered
    }

    fn publish(&self, engine: &Engine) {
        *lock(&self.snapshot) = engine.status();
    }

    fn answer_sync(&self) {
        *lock(&self.answered) += 1;
        self.answer.notify_all();
    }

    fn set_horizon_ms(&self, horizon_ms: u64) {
        self.horizon_ms.store(horizon_ms, Ordering::Release);
    }

    /// Waits until `ticket` syncs were answered; false if `deadline` came first.
    fn wait_answered(&self, ticket: u64, deadline: Instant) -> bool {
        let mut answered = lock(&self.answered);
        while *answered < ticket {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            answered = (self.answer.wait_timeout(answered, left))
                .map_or_else(|p| p.into_inner().0, |(guard, _)| guard);
        }
        true
    }
}

/// The thread that runs the triggers of a background driver's cloud changes, in order.
/// It ends when the database (and so the sender) is dropped.
fn start_trigger_thread(
    db: std::sync::Weak<crate::db::Inner>,
    delivered: &Arc<Delivered>,
) -> Result<std::sync::mpsc::SyncSender<crate::Event>> {
    let (events, received) = std::sync::mpsc::sync_channel::<crate::Event>(EVENTS_QUEUED_MAX);
    let delivered = Arc::clone(delivered);
    std::thread::Builder::new()
        .name(TRIGGER_THREAD.into())
        .spawn(move || {
            for event in received {
                let Some(inner) = db.upgrade() else { return };
                inner.triggers.fire(&event);
                lock(&delivered.counts).1 += 1;
                delivered.fired.notify_all();
            }
        })
        .map_err(|e| Error::Argument(format!("cannot start the trigger thread: {e}")))?;
    Ok(events)
}

/// Every outbox entry as the engine hears of it.
fn queued_inputs(db: &Db) -> Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for entry in db.inner.store.outbox() {
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

impl Db {
    /// Attaches a transport: from now on, local writes of uploading models go to the
    /// cloud and cloud changes of downloading models come down. Pending changes from
    /// before (also from before a crash) are sent first. A database attaches once. With
    /// [`SyncOptions::background`] (the default) a task of its own drives it; otherwise
    /// [`Db::drive`] and [`Db::sync`] do.
    pub fn attach<T: Transport>(&self, transport: T, options: SyncOptions) -> Result<()> {
        let scopes = self.read_scopes()?;
        let mut cursors = std::collections::BTreeMap::new();
        for scope in &scopes {
            cursors.insert(scope.clone(), self.load_cursor(scope)?);
        }
        self.retry_quarantined()?;
        let engine = Engine::new(options.engine.clone(), cursors, options.seed);
        let driver = Driver::new(engine, Box::new(transport), options.call_timeout);
        let delivered = Arc::new(Delivered::default());
        let syncer = Syncer {
            driver: Mutex::new(None),
            inbox: Mutex::new(Inbox {
                inputs: queued_inputs(self)?,
                overflowed: false,
            }),
            snapshot: Mutex::new(driver.engine.status()),
            requested: AtomicU64::new(0),
            answered: Mutex::new(0),
            answer: Condvar::new(),
            horizon_ms: AtomicU64::new(options.engine.horizon_ms),
            wake: match options.background {
                true => background::Wake::for_background(),
                false => background::Wake::default(),
            },
            events: match options.background {
                true => Some(start_trigger_thread(
                    Arc::downgrade(&self.inner),
                    &delivered,
                )?),
                false => None,
            },
            delivered,
        };
        self.inner.sync.set(syncer).map_err(|_| {
            Error::Argument("this database is already attached to a transport".into())
        })?;
        // Writes committed before `set` were staged without a syncer to tell: tell it now.
        self.report_staged();
        let syncer = self.syncer()?;
        match options.background {
            true => background::start(Arc::downgrade(&self.inner), driver, &syncer.wake)?,
            false => *lock(&syncer.driver) = Some(driver),
        }
        Ok(())
    }

    /// Sends every pending change now and pulls every scope; returns when the cloud has
    /// acknowledged every change pending at the call (Ioto's `ioSync`), or fails with
    /// `SyncTimeout` after `timeout`, whatever the transport does meanwhile.
    pub fn sync(&self, timeout: Duration) -> Result<()> {
        let syncer = self.syncer()?;
        // The caller's wait is real time, whatever clock the database runs on.
        let deadline = Instant::now() + timeout;
        let waited: Vec<Key> = (self.inner.store.outbox())
            .map(|entry| entry.map(|(key, _)| key))
            .collect::<std::result::Result<_, _>>()?;
        // A round can leave new work: an `up` change superseded in the cloud comes back
        // re-stamped. Rounds go on until every change pending at the call has left.
        loop {
            let ticket = syncer.requested.fetch_add(1, Ordering::AcqRel) + 1;
            syncer.push_input(Input::SyncRequested);
            let answered = match self.driven_here() {
                true => self.drive_until(ticket, deadline)?,
                false => syncer.wait_answered(ticket, deadline),
            };
            let left = waited
                .iter()
                .filter(|key| !matches!(self.inner.store.pending(key), Ok(None)));
            if answered && left.count() == 0 {
                // The triggers of what was pulled have run, unless this is one of them.
                let on_trigger_thread = std::thread::current().name() == Some(TRIGGER_THREAD);
                if on_trigger_thread || syncer.delivered.wait(deadline) {
                    return Ok(());
                }
            }
            if !answered || Instant::now() >= deadline {
                let pending = self.status().pending_changes;
                return Err(Error::SyncTimeout { pending });
            }
        }
    }

    /// Whether this database is driven by `Db::drive` (no background task).
    fn driven_here(&self) -> bool {
        self.inner.sync.get().is_some_and(|s| s.wake.is_manual())
    }

    fn drive_until(&self, ticket: u64, deadline: Instant) -> Result<bool> {
        let syncer = self.syncer()?;
        while *lock(&syncer.answered) < ticket {
            self.drive()?;
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(SYNC_POLL_MS));
        }
        Ok(true)
    }

    /// Runs the sync work that is due now, once, when no background task drives this
    /// database (`SyncOptions { background: false, .. }`): what a simulation calls at each
    /// step of its virtual time. With a background task it does nothing.
    pub fn drive(&self) -> Result<()> {
        let syncer = self.syncer()?;
        // Taken out for the step: no lock is held while it talks to the transport.
        let Some(mut driver) = lock(&syncer.driver).take() else {
            return Ok(());
        };
        link::block_on(driver.step(self, syncer));
        *lock(&syncer.driver) = Some(driver);
        Ok(())
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
        }
        if let Some(syncer) = self.inner.sync.get() {
            let engine = lock(&syncer.snapshot).clone();
            let report = lock(&self.inner.report);
            status.pending_bytes = engine.pending_bytes;
            status.oldest_pending_age_ms =
                (engine.oldest_pending_ms).map(|t| now.saturating_sub(t));
            status.attached = true;
            status.connected = engine.connected;
            status.last_ack_ms = engine.last_ack_ms;
            status.last_receive_ms = engine.last_receive_ms;
            status.failures = engine.consecutive_failures;
            status.cursors = engine
                .cursors
                .iter()
                .map(|(s, c)| (s.clone(), c.to_text()))
                .collect();
            status.clock_skew_ms = report.skew_ms;
        }
        status.last_error = lock(&self.inner.report).last_error.clone();
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

    /// Tells the engine about outbox entries that commits have queued. An entry staged by
    /// a write that has not committed yet (another thread's, still in its transaction)
    /// waits for a later call: told too early, the driver would find no such change in
    /// the outbox and forget it.
    pub(crate) fn report_staged(&self) {
        let Some(syncer) = self.inner.sync.get() else {
            return;
        };
        let committed = |s: &crate::replica::Staged| matches!(self.inner.store.pending(&s.key), Ok(Some(e)) if e.change.version >= s.version);
        for staged in self.inner.replica.take_staged_if(committed) {
            syncer.push_input(Input::Queued {
                key: staged.key,
                version: staged.version,
                bytes: staged.bytes,
            });
        }
    }

    /// How long tombstones live in the cloud this database syncs with.
    pub(crate) fn horizon_ms(&self) -> u64 {
        (self.inner.sync.get()).map_or(ferry_sync::HORIZON_MS, |s| {
            s.horizon_ms.load(Ordering::Acquire)
        })
    }

    fn syncer(&self) -> Result<&Syncer> {
        self.inner
            .sync
            .get()
            .ok_or_else(|| Error::Argument("no transport attached: call Db::attach first".into()))
    }

    /// The scopes this device reads: the scope of every model that downloads, rendered
    /// with this device's context. A downloading model whose scope depends on the item
    /// cannot be read by scope, and is refused.
    fn read_scopes(&self) -> Result<std::collections::BTreeSet<String>> {
        let mut scopes = std::collections::BTreeSet::new();
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

    fn load_cursor(&self, scope: &str) -> Result<Hlc> {
        let name = format!("{META_CURSOR_PREFIX}{scope}");
        Ok(self
            .inner
            .store
            .meta_u64(&name)?
            .map_or(Hlc::ZERO, Hlc::from_u64))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
