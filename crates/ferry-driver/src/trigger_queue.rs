//! Cloud events on their way to the trigger thread of a background driver.
//!
//! Handing over never blocks the driver: a trigger may call `sync()`, which only the
//! driver can answer. Past the channel's bound, events wait in an overflow, in order, and
//! the driver waits before its next pull (or snapshot page) until the triggers catch up,
//! unless a trigger waits in `sync()`: that sync needs the driver's pulls, so the overflow
//! takes what they bring meanwhile (what one such `sync()` pulls, at most).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};

use ferry_db::{Event, WeakReplicaPort};

use crate::{Delivered, lock};

/// Cloud events waiting in the channel at most.
const EVENTS_QUEUED_MAX: usize = 1024;
/// The name of the thread that runs a background driver's cloud triggers.
pub(crate) const TRIGGER_THREAD: &str = "ferry-triggers";

/// The driver's end of the trigger thread's queue.
pub(crate) struct TriggerQueue {
    events: SyncSender<Event>,
    /// Events past the channel's bound; the trigger thread takes them once the channel is
    /// empty, and new events follow them here while any wait.
    overflow: Arc<Mutex<VecDeque<Event>>>,
    /// Triggers inside `sync()`.
    syncing: AtomicUsize,
}

/// A trigger inside `sync()`, while it lives.
pub(crate) struct Syncing<'q>(&'q TriggerQueue);

impl Drop for Syncing<'_> {
    fn drop(&mut self) {
        self.0.syncing.fetch_sub(1, Ordering::AcqRel);
    }
}

impl TriggerQueue {
    /// Starts the thread that runs the triggers of `db`'s cloud events, in order, counting
    /// them in `delivered`. It ends when the queue (and so the database) is dropped.
    pub(crate) fn start(
        port: WeakReplicaPort,
        delivered: Arc<Delivered>,
    ) -> std::io::Result<TriggerQueue> {
        let (events, received) = std::sync::mpsc::sync_channel::<Event>(EVENTS_QUEUED_MAX);
        let overflow = Arc::new(Mutex::new(VecDeque::new()));
        let taken = Arc::clone(&overflow);
        std::thread::Builder::new()
            .name(TRIGGER_THREAD.into())
            .spawn(move || {
                while let Some(event) = next_event(&received, &taken) {
                    let Some(port) = port.upgrade() else { return };
                    port.run_triggers(&event);
                    lock(&delivered.counts).1 += 1;
                    delivered.fired.notify_all();
                }
            })?;
        Ok(TriggerQueue {
            events,
            overflow,
            syncing: AtomicUsize::new(0),
        })
    }

    /// Hands `event` to the trigger thread without waiting; gives it back if the thread
    /// is gone.
    pub(crate) fn send(&self, event: Event) -> Option<Event> {
        let mut overflow = lock(&self.overflow);
        if !overflow.is_empty() {
            overflow.push_back(event);
            return None;
        }
        match self.events.try_send(event) {
            Ok(()) => None,
            Err(TrySendError::Full(event)) => {
                overflow.push_back(event);
                None
            }
            Err(TrySendError::Disconnected(event)) => Some(event),
        }
    }

    /// The triggers are behind and no trigger waits on the driver: pull nothing new.
    #[cfg(feature = "tokio")]
    pub(crate) fn behind(&self) -> bool {
        self.syncing.load(Ordering::Acquire) == 0 && !lock(&self.overflow).is_empty()
    }

    /// Marks a trigger inside `sync()` until the guard drops.
    pub(crate) fn syncing(&self) -> Syncing<'_> {
        self.syncing.fetch_add(1, Ordering::AcqRel);
        Syncing(self)
    }
}

/// The next event in order: the channel's, then the overflow's; `None` once the driver's
/// end is dropped.
fn next_event(received: &Receiver<Event>, overflow: &Mutex<VecDeque<Event>>) -> Option<Event> {
    match received.try_recv() {
        Ok(event) => Some(event),
        Err(TryRecvError::Disconnected) => None,
        Err(TryRecvError::Empty) => {
            let waiting = lock(overflow).pop_front();
            waiting.or_else(|| received.recv().ok())
        }
    }
}
