//! Ferry's sync driver: it owns the sans-IO engine of `ferry-sync` and a transport, feeds
//! the engine what happened (local commits, push results, pulled pages, time) and carries
//! out what it asks against the database (`ferry-db`'s replica port) and the transport.
//!
//! [`attach`] gives a database its driver. By default a thread of its own runs it on a
//! current-thread tokio runtime (feature `tokio`), every transport call under a timeout;
//! with `background: false`, `Db::drive` steps it on the caller's thread (simulations).
//!
//! **Architecture invariant:** no lock is held across a transport call or while triggers
//! run; `status()` reads the snapshot the last step published; `sync()` waits with its
//! timeout on a condition variable, never on the network. Storage and the meaning of
//! cloud changes are `ferry-db`'s: this crate names no store type.

mod background;
mod driver;
mod echoes;
mod in_flight;
mod link;
mod loaded;
mod trigger_queue;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ferry_db::{Db, Error, Event, Queued, ReplicaPort, Replication, Result};
use ferry_sync::{Engine, EngineConfig, EngineStatus, Input, Transport};
use ferry_types::Key;

use driver::Driver;
use trigger_queue::{TRIGGER_THREAD, TriggerQueue};

/// Longest pause of `Db::sync` between engine steps.
const SYNC_POLL_MS: u64 = 5;
/// Inputs waiting for the driver at most (see `Syncer::inbox`).
const INBOX_INPUTS_MAX: usize = 10_000;
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

/// The driver's state for an attached database, shared by the writers, `sync()`,
/// `status()` and whoever runs the driver.
struct Syncer {
    /// The driver, when `Db::drive` runs it (no background task); `None` while a step
    /// runs, or for good when the background task owns it.
    driver: Mutex<Option<Driver>>,
    /// Inputs from writers and `sync()`, for the next step. Bounded: past
    /// [`INBOX_INPUTS_MAX`] notifications are dropped and the next step reloads the whole
    /// outbox instead, so nothing is lost.
    inbox: Mutex<Inbox>,
    /// The engine as the last step left it, for `status()` (never waits for a step).
    snapshot: Mutex<EngineStatus>,
    /// Bytes of queued changes the engine can hear of at its next deadline
    /// ([`Engine::queue_slack_bytes`] after the last step): writers wake the driver only
    /// past them, not once a write.
    queue_slack_bytes: AtomicUsize,
    requested: AtomicU64,
    answered: Mutex<u64>,
    answer: Condvar,
    horizon_ms: AtomicU64,
    wake: background::Wake,
    /// Where a background driver's cloud events go (see [`Syncer::dispatch`]), and how
    /// many were sent and fired.
    events: Option<TriggerQueue>,
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
pub(crate) struct Inbox {
    inputs: Vec<Input>,
    overflowed: bool,
    /// Bytes of the `Queued` inputs since the last step took the inbox.
    queued_bytes: usize,
    /// The queued changes themselves, for the push.
    loaded: loaded::Loaded,
}

impl Inbox {
    /// Adds `input`; returns whether the driver must wake for it: always, but for queued
    /// changes the engine can hear of at its next deadline (`slack_bytes` of them).
    fn push(&mut self, input: Input, slack_bytes: usize) -> bool {
        let wake = match &input {
            Input::Queued { bytes, .. } => {
                self.queued_bytes = self.queued_bytes.saturating_add(*bytes);
                self.queued_bytes >= slack_bytes
            }
            _ => true,
        };
        match (&input, self.inputs.len() >= INBOX_INPUTS_MAX) {
            (Input::Queued { .. }, true) => self.overflowed = true,
            _ => self.inputs.push(input),
        }
        wake
    }
}

impl Syncer {
    /// Moves the inputs queued since the last step (the whole outbox again after an
    /// overflow) to `taken.inputs`, and the queued changes to `loaded`. `taken` is the
    /// inbox the last step emptied: the writers get it back with the room it grew, so that
    /// their commits do not grow a vector and a map from nothing at every step.
    fn take_inputs(&self, port: &ReplicaPort, loaded: &mut loaded::Loaded, taken: &mut Inbox) {
        std::mem::swap(&mut *lock(&self.inbox), taken);
        for queued in taken.loaded.drain() {
            loaded.keep(queued);
        }
        taken.queued_bytes = 0;
        if !std::mem::take(&mut taken.overflowed) {
            return;
        }
        // The outbox says every queued change; the other inputs are this step's either way.
        taken.inputs.retain(|i| !matches!(i, Input::Queued { .. }));
        match port.queued_inputs() {
            Ok(queued) => drop(taken.inputs.splice(0..0, queued)),
            Err(e) => {
                port.report_error(format!("{}: reloading the outbox: {e}", e.code()));
                // Reloaded at the next step, then.
                lock(&self.inbox).overflowed = true;
            }
        }
    }

    fn push_input(&self, input: Input) {
        let mut inbox = lock(&self.inbox);
        let wake = inbox.push(input, self.queue_slack_bytes.load(Ordering::Acquire));
        drop(inbox);
        if wake {
            self.wake.notify();
        }
    }

    /// A commit queued a change: the engine hears of it, the push may take it from here.
    fn push_queued(&self, queued: Queued) {
        let input = Input::Queued {
            key: queued.change.key.clone(),
            version: queued.change.version.clone(),
            bytes: queued.bytes,
        };
        let mut inbox = lock(&self.inbox);
        let wake = inbox.push(input, self.queue_slack_bytes.load(Ordering::Acquire));
        if !inbox.overflowed {
            inbox.loaded.keep(queued);
        }
        drop(inbox);
        if wake {
            self.wake.notify();
        }
    }

    /// Hands a cloud change's event to the trigger thread, so that a trigger runs off the
    /// driver's thread and may wait on the driver (`sync()`) for real; never waits (see
    /// `trigger_queue`). Returns the event when there is no trigger thread: the caller
    /// runs it.
    fn dispatch(&self, event: Event) -> Option<Event> {
        let Some(events) = &self.events else {
            return Some(event);
        };
        lock(&self.delivered.counts).0 += 1;
        let undelivered = events.send(event);
        if undelivered.is_some() {
            lock(&self.delivered.counts).0 -= 1;
        }
        undelivered
    }

    /// The triggers are behind: the driver pulls nothing new until they catch up.
    #[cfg(feature = "tokio")]
    fn triggers_behind(&self) -> bool {
        self.events.as_ref().is_some_and(TriggerQueue::behind)
    }

    fn publish(&self, engine: &Engine) {
        *lock(&self.snapshot) = engine.status();
        let slack = engine.queue_slack_bytes();
        self.queue_slack_bytes.store(slack, Ordering::Release);
        // Writers during the step judged by the slack before it.
        let queued = lock(&self.inbox).queued_bytes;
        if queued > 0 && queued >= slack {
            self.wake.notify();
        }
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

/// Attaches `transport` to `db`: from now on, local writes of uploading models go to the
/// cloud and cloud changes of downloading models come down. Pending changes from before
/// (also from before a crash) are sent first. A database attaches once. With
/// [`SyncOptions::background`] (the default) a task of its own drives it; otherwise
/// `Db::drive` and `Db::sync` do.
pub fn attach<T: Transport>(db: &Db, transport: T, options: SyncOptions) -> Result<()> {
    let (port, (driver, syncer)) = db.attach_replication(|port, cursors| {
        let (driver, syncer) = build(port, cursors, transport, &options)?;
        Ok((Box::new(Handle(Arc::clone(&syncer))), (driver, syncer)))
    })?;
    // The outbox as it is once writers report to the hook: a write committed before is
    // in it, one committed after is reported (both is harmless: the engine keeps the newest).
    let pending = port.queued_inputs()?;
    lock(&syncer.inbox).inputs.splice(0..0, pending);
    match options.background {
        true => background::start(port.downgrade(), driver, Arc::clone(&syncer))?,
        false => *lock(&syncer.driver) = Some(driver),
    }
    Ok(())
}

/// The driver of the database behind `port`, from its scopes' `cursors`, and its shared
/// state.
fn build<T: Transport>(
    port: &ReplicaPort,
    cursors: std::collections::BTreeMap<String, ferry_types::Hlc>,
    transport: T,
    options: &SyncOptions,
) -> Result<(Driver, Arc<Syncer>)> {
    let engine = Engine::new(options.engine.clone(), cursors, options.seed);
    let in_flight = match options.background {
        #[cfg(feature = "tokio")]
        true => in_flight::InFlight::spawned(options.call_timeout),
        // The seed's own stream, apart from the engine's jitter.
        _ => in_flight::InFlight::held(options.seed.rotate_left(32)),
    };
    let driver = Driver::new(engine, Arc::new(transport), options.call_timeout, in_flight);
    let delivered = Arc::new(Delivered::default());
    let syncer = Arc::new(Syncer {
        driver: Mutex::new(None),
        inbox: Mutex::new(Inbox::default()),
        snapshot: Mutex::new(driver.engine.status()),
        queue_slack_bytes: AtomicUsize::new(0),
        requested: AtomicU64::new(0),
        answered: Mutex::new(0),
        answer: Condvar::new(),
        horizon_ms: AtomicU64::new(options.engine.horizon_ms),
        wake: match options.background {
            true => background::Wake::for_background(),
            false => background::Wake::default(),
        },
        events: match options.background {
            true => Some(
                TriggerQueue::start(port.downgrade(), Arc::clone(&delivered))
                    .map_err(|e| system("cannot start the trigger thread", e))?,
            ),
            false => None,
        },
        delivered,
    });
    Ok((driver, syncer))
}

/// The driver as the database sees it.
struct Handle(Arc<Syncer>);

impl Replication for Handle {
    fn queued(&self, queued: Queued) {
        self.0.push_queued(queued);
    }

    fn dispatch(&self, event: Event) -> Option<Event> {
        self.0.dispatch(event)
    }

    fn sync(&self, port: &ReplicaPort, timeout: Duration) -> Result<()> {
        self.0.sync(port, timeout)
    }

    fn drive(&self, port: &ReplicaPort) -> Result<()> {
        self.0.drive(port)
    }

    fn engine_status(&self) -> EngineStatus {
        lock(&self.0.snapshot).clone()
    }

    fn horizon_ms(&self) -> u64 {
        self.0.horizon_ms.load(Ordering::Acquire)
    }
}

impl Syncer {
    /// `Db::sync`: sends every pending change now and pulls every scope; returns when the
    /// cloud has acknowledged every change pending at the call (Ioto's `ioSync`) and the
    /// triggers of what it pulled ran, or fails with `SyncTimeout` after `timeout`, whatever
    /// the transport does meanwhile.
    fn sync(&self, port: &ReplicaPort, timeout: Duration) -> Result<()> {
        // The caller's wait is real time, whatever clock the database runs on.
        let deadline = Instant::now() + timeout;
        let on_trigger_thread = std::thread::current().name() == Some(TRIGGER_THREAD);
        // A trigger waiting here needs the driver's pulls, whatever the triggers' backlog.
        let _syncing = (self.events.as_ref())
            .filter(|_| on_trigger_thread)
            .map(TriggerQueue::syncing);
        let pending = port.pending_versions()?;
        let waited: Vec<&Key> = pending.iter().map(|(key, _)| key).collect();
        // A round can leave new work: an `up` change superseded in the cloud comes back
        // re-stamped. Rounds go on until every change pending at the call has left.
        loop {
            let ticket = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
            self.push_input(Input::SyncRequested);
            let answered = match self.wake.is_manual() {
                true => self.drive_until(port, ticket, deadline)?,
                false => self.wait_answered(ticket, deadline),
            };
            let left = waited
                .iter()
                .filter(|key| !matches!(port.is_pending(key), Ok(false)));
            if answered && left.count() == 0 {
                // The triggers of what was pulled have run, unless this is one of them.
                if on_trigger_thread || self.delivered.wait(deadline) {
                    // Everything left the outbox: acknowledged, or refused for good.
                    let refused = port.refused_of(&pending)?;
                    return match refused.is_empty() {
                        true => {
                            port.clear_error();
                            Ok(())
                        }
                        false => Err(Error::SyncRefused { refused }),
                    };
                }
            }
            if !answered || Instant::now() >= deadline {
                let pending = port.db().status().pending_changes;
                return Err(Error::SyncTimeout { pending });
            }
        }
    }

    fn drive_until(&self, port: &ReplicaPort, ticket: u64, deadline: Instant) -> Result<bool> {
        while *lock(&self.answered) < ticket {
            self.drive(port)?;
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(SYNC_POLL_MS));
        }
        Ok(true)
    }

    /// `Db::drive`: one step on the caller's thread, when no background task drives.
    fn drive(&self, port: &ReplicaPort) -> Result<()> {
        // Taken out for the step: no lock is held while it talks to the transport.
        let Some(mut driver) = lock(&self.driver).take() else {
            return Ok(());
        };
        link::block_on(driver.step(port, self));
        *lock(&self.driver) = Some(driver);
        Ok(())
    }
}

/// The operating system refused `what`.
fn system(what: &str, source: std::io::Error) -> Error {
    Error::System {
        what: what.to_string(),
        source,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_types::{Hlc, Version};

    fn queued(sk: u64, bytes: usize) -> Input {
        let key = Key {
            hash: ferry_types::Value::S("k".into()),
            sort: Some(ferry_types::Value::N(sk.into())),
        };
        let version = Version {
            hlc: Hlc::new(1, 0),
            replica: ferry_types::ReplicaId::from_random(1),
        };
        Input::Queued {
            key,
            version,
            bytes,
        }
    }

    #[test]
    fn queued_changes_wake_the_driver_only_past_the_engines_slack() {
        let mut inbox = Inbox::default();
        assert!(
            inbox.push(queued(1, 100), 0),
            "no slack: every change wakes"
        );
        let mut inbox = Inbox::default();
        assert!(!inbox.push(queued(1, 100), 250));
        assert!(!inbox.push(queued(2, 100), 250));
        assert!(inbox.push(queued(3, 100), 250), "300 bytes reach the slack");
        assert!(
            inbox.push(Input::SyncRequested, usize::MAX),
            "other inputs always wake"
        );
        assert_eq!(inbox.inputs.len(), 4, "every input is kept");
    }
}
