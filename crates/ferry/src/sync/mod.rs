//! Replication: a [`Db`] attached to a transport, driven through the sans-IO engine of
//! `ferry-sync`. The driver here owns the I/O: it feeds the engine what happened (local
//! commits, push results, pulled pages, time) and carries out what the engine asks
//! (push, settle, pull, resync), applying cloud changes to the store with the direction
//! rules of `ferry_sync::decide_inbound`.

mod driver;
mod inbound;
mod link;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ferry_sync::{Engine, EngineConfig, Input, Transport};
use ferry_types::Hlc;

use crate::db::Inner;
use crate::{Db, Error, Result};
use link::Link;

/// Meta record prefix of per-scope cursors.
const META_CURSOR_PREFIX: &str = "cursor:";
/// Longest pause of `Db::sync` between engine steps.
const SYNC_POLL_MS: u64 = 5;
/// Rounds of `Db::sync` at most (each pushes what is pending and pulls every scope).
const SYNC_ROUNDS_MAX: usize = 3;
/// Changes asked for per pull.
const PULL_PAGE_CHANGES: usize = 100;

/// How an attached database syncs.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// The engine's knobs: `sync_delay_ms` (syncDelay), `sync_limit_bytes` (syncLimit),
    /// retries, polling, catch-up window, horizon.
    pub engine: EngineConfig,
    /// Drive the engine from a background thread at this period. `None`: only
    /// [`Db::sync`] and [`Db::drive`] move data (tests and simulations step it by hand).
    pub background: Option<Duration>,
    /// Seed for the engine's retry jitter (any value; fixed for reproducible runs).
    pub seed: u64,
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

/// The driver's state for an attached database.
pub(crate) struct Syncer {
    link: Box<dyn Link>,
    engine: Mutex<Engine>,
    /// Inputs from writers, fed to the engine at the next step.
    inbox: Mutex<Vec<Input>>,
    requested: AtomicU64,
    answered: AtomicU64,
}

impl Db {
    /// Attaches a transport: from now on, local writes of uploading models go to the
    /// cloud and cloud changes of downloading models come down. Pending changes from
    /// before (also from before a crash) are sent first. A database attaches once.
    pub fn attach<T: Transport + Send + Sync + 'static>(
        &self,
        transport: T,
        options: SyncOptions,
    ) -> Result<()> {
        let scopes = self.read_scopes()?;
        let mut cursors = std::collections::BTreeMap::new();
        for scope in &scopes {
            cursors.insert(scope.clone(), self.load_cursor(scope)?);
        }
        let mut engine = Engine::new(options.engine.clone(), cursors, options.seed);
        let now = self.now_ms().max(0) as u64;
        engine.handle(Input::Connected, now);
        for entry in self.inner.store.outbox() {
            let (key, entry) = entry?;
            let (version, bytes) = (entry.change.version.clone(), entry.encoded_len());
            engine.handle(
                Input::Queued {
                    key,
                    version,
                    bytes,
                },
                now,
            );
        }
        let syncer = Syncer {
            link: Box::new(transport),
            engine: Mutex::new(engine),
            inbox: Mutex::new(Vec::new()),
            requested: AtomicU64::new(0),
            answered: AtomicU64::new(0),
        };
        self.inner.sync.set(syncer).map_err(|_| {
            Error::Argument("this database is already attached to a transport".into())
        })?;
        // Writes committed before `set` were staged without a syncer to tell: tell it now.
        self.report_staged();
        if let Some(period) = options.background {
            start_background(Arc::downgrade(&self.inner), period);
        }
        Ok(())
    }

    /// Sends every pending change now and pulls every scope; returns when the cloud has
    /// acknowledged everything queued before the call (Ioto's `ioSync`), or fails with
    /// `SyncTimeout` after `timeout`.
    pub fn sync(&self, timeout: Duration) -> Result<()> {
        let syncer = self.syncer()?;
        // The caller's wait is real time, whatever clock the database runs on.
        let started = std::time::Instant::now();
        // A round can leave new work: an `up` change superseded in the cloud comes back
        // re-stamped. Another round sends it, so that sync() returns converged.
        for _ in 0..SYNC_ROUNDS_MAX {
            let ticket = syncer.requested.fetch_add(1, Ordering::AcqRel) + 1;
            lock(&syncer.inbox).push(Input::SyncRequested);
            while syncer.answered.load(Ordering::Acquire) < ticket {
                self.drive()?;
                if started.elapsed() >= timeout {
                    let pending = self.status().pending_changes;
                    return Err(Error::SyncTimeout { pending });
                }
                std::thread::sleep(Duration::from_millis(SYNC_POLL_MS));
            }
            if self.inner.store.outbox().next().is_none() {
                break;
            }
        }
        Ok(())
    }

    /// Runs the sync work that is due now, once: what [`SyncOptions::background`] does
    /// periodically, and what a simulation calls at each step of its virtual time.
    pub fn drive(&self) -> Result<()> {
        let syncer = self.syncer()?;
        let now = self.now_ms().max(0) as u64;
        let mut engine = lock(&syncer.engine);
        for input in std::mem::take(&mut *lock(&syncer.inbox)) {
            engine.handle(input, now);
        }
        engine.tick(now);
        // Acknowledgements come one per change: settle a run of them in one commit.
        let mut acked = Vec::new();
        while let Some(output) = engine.poll_output() {
            if let ferry_sync::Output::Acked { key, version } = output {
                acked.push((key, version));
                continue;
            }
            let settled = self.settle(&std::mem::take(&mut acked));
            let result = settled.and_then(|()| self.execute(syncer, &mut engine, output, now));
            if let Err(e) = result {
                self.report_error(format!("{}: {e}", e.code()));
            }
        }
        self.settle(&acked)
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
            failures: 0,
            last_error: None,
        };
        let mut oldest = None::<u64>;
        for (_, entry) in self.inner.store.outbox().flatten() {
            status.pending_changes += 1;
            status.pending_bytes += entry.encoded_len();
            oldest = Some(oldest.map_or(entry.queued_ms, |o| o.min(entry.queued_ms)));
        }
        status.oldest_pending_age_ms = oldest.map(|t| now.saturating_sub(t));
        if let Some(syncer) = self.inner.sync.get() {
            let engine = lock(&syncer.engine).status();
            let report = lock(&self.inner.report);
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

    /// Tells the engine about outbox entries that commits have queued.
    pub(crate) fn report_staged(&self) {
        let staged = self.inner.replica.take_staged();
        let Some(syncer) = self.inner.sync.get() else {
            return;
        };
        let mut inbox = lock(&syncer.inbox);
        inbox.extend(staged.into_iter().map(|s| Input::Queued {
            key: s.key,
            version: s.version,
            bytes: s.bytes,
        }));
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

fn start_background(db: Weak<Inner>, period: Duration) {
    let spawned = std::thread::Builder::new()
        .name("ferry-sync".into())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                let Some(inner) = db.upgrade() else { return };
                // The engine retries what failed; the status shows why.
                let db = Db { inner };
                if let Err(e) = db.drive() {
                    db.report_error(format!("background sync: {}: {e}", e.code()));
                }
            }
        });
    // Without the thread, `Db::sync` still moves data on demand.
    drop(spawned);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
