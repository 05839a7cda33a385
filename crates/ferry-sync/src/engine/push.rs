//! The push side: pending keys, batches in flight, acknowledgements and retries.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rustc_hash::FxBuildHasher;

use ferry_types::{Key, KeyMap, KeySet, Version};

use super::{BatchId, Engine, Output};
use ferry_cloud::PushOutcome;

/// Where a pending key stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyState {
    /// Waiting to be sent (it is in `Pushes::ready`).
    Ready,
    /// In batch `batch`. The key's pending version may be newer: it is sent again once this
    /// batch answers, never in a second batch at the same time.
    InFlight { batch: BatchId },
    /// The cloud holds a newer version; the driver decides (re-queue or settle).
    Parked,
    /// Left out of an answer that took others of its batch (the cloud keeps failing this
    /// key, as a policy that denies one key does): held back until `Pushes::held` lets it
    /// go, behind every key queued meanwhile, so that it holds up no other.
    Held,
}

/// One pending key: the newest version the driver queued and where it stands.
#[derive(Debug, Clone)]
struct Entry {
    version: Version,
    bytes: usize,
    /// When the change the cloud has not acknowledged yet was queued (for status).
    queued_ms: u64,
    /// When `version` was queued: becomes `queued_ms` if an older version is acknowledged.
    latest_ms: u64,
    /// Send order: keys go oldest first, and a retried key keeps its place.
    order: u64,
    state: KeyState,
    /// Answers in a row that left this key out while taking others (its own backoff).
    misses: u32,
}

/// One batch awaiting its answer.
#[derive(Debug, Clone)]
struct Batch {
    changes: Vec<(Key, Version)>,
    deadline_ms: u64,
}

/// Push-side state. Counters are kept in step with `entries` by the helpers below.
#[derive(Debug, Default)]
pub(super) struct Pushes {
    entries: KeyMap<Entry>,
    /// Keys in `KeyState::Ready`, by send order.
    ready: BTreeSet<(u64, Key)>,
    ready_bytes: usize,
    pending_bytes: usize,
    next_order: u64,
    batches: BTreeMap<BatchId, Batch>,
    /// Every key of `batches` and its batch. Outlives the key's entry if the driver settles
    /// it meanwhile, so that a new write of the key waits for that batch too.
    in_flight_keys: KeyMap<BatchId>,
    next_batch: BatchId,
    /// When the ready keys are due (the sync delay, or now).
    send_at_ms: Option<u64>,
    /// No batch goes before this (backoff after a failure).
    retry_at_ms: u64,
    failures: u32,
    /// Keys in `KeyState::Held`, by when they may go again (stale pairs are skipped).
    held: BTreeSet<(u64, Key)>,
    /// Keys refused as ahead of the cloud's time: the driver settles the refused version and
    /// queues the key again, re-stamped; it waited its delay once and goes with the next
    /// batch.
    restamping: KeySet,
}

impl Pushes {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    pub(super) fn oldest_queued_ms(&self) -> Option<u64> {
        self.entries.values().map(|entry| entry.queued_ms).min()
    }

    pub(super) fn in_flight_batches(&self) -> usize {
        self.batches.len()
    }

    pub(super) fn is_in_flight(&self, batch: BatchId) -> bool {
        self.batches.contains_key(&batch)
    }

    pub(super) fn failures(&self) -> u32 {
        self.failures
    }

    /// Every pending key with its version (what a `db.sync()` waits for).
    pub(super) fn snapshot(&self) -> KeyMap<Version> {
        self.entries
            .iter()
            .map(|(key, entry)| (key.clone(), entry.version.clone()))
            .collect()
    }

    /// Puts `key` in the send queue, if it is pending and not there yet.
    fn make_ready(&mut self, key: &Key) {
        if let Some(entry) = self.entries.get_mut(key)
            && entry.state != KeyState::Ready
        {
            entry.state = KeyState::Ready;
            self.ready.insert((entry.order, key.clone()));
            self.ready_bytes += entry.bytes;
        }
    }

    /// Takes `key` out of the send queue, into `state`.
    fn set_state(&mut self, key: &Key, state: KeyState) {
        if let Some(entry) = self.entries.get_mut(key) {
            if entry.state == KeyState::Ready {
                self.ready.remove(&(entry.order, key.clone()));
                self.ready_bytes -= entry.bytes;
            }
            entry.state = state;
        }
    }

    fn remove(&mut self, key: &Key) {
        self.set_state(key, KeyState::Parked);
        if let Some(entry) = self.entries.remove(key) {
            self.pending_bytes -= entry.bytes;
        }
    }

    /// Drops `key` if its pending version is <= `version`; otherwise the newer version is
    /// what waits now (its queue time starts then). Returns whether it was dropped.
    fn settle(&mut self, key: &Key, version: &Version) -> bool {
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        if entry.version <= *version {
            self.remove(key);
            return true;
        }
        // The key stays where it is: ready, in flight (its batch's answer frees it) or parked.
        entry.queued_ms = entry.latest_ms;
        false
    }

    /// Records a newly queued version of `key`; false if it is not newer than the known one
    /// (a replayed or reordered notification: the outbox already holds something newer).
    fn queue(&mut self, key: Key, version: Version, bytes: usize, now_ms: u64) -> bool {
        let Some(entry) = self.entries.get_mut(&key) else {
            let order = self.next_order;
            self.next_order += 1;
            // An older version may still be in flight (settled meanwhile): wait for its batch.
            let state = match self.in_flight_keys.get(&key) {
                Some(&batch) => KeyState::InFlight { batch },
                None => {
                    self.ready.insert((order, key.clone()));
                    self.ready_bytes += bytes;
                    KeyState::Ready
                }
            };
            self.pending_bytes += bytes;
            let (queued_ms, latest_ms) = (now_ms, now_ms);
            let entry = Entry {
                version,
                bytes,
                queued_ms,
                latest_ms,
                order,
                state,
                misses: 0,
            };
            self.entries.insert(key, entry);
            return true;
        };
        if version <= entry.version {
            return false;
        }
        self.pending_bytes = self.pending_bytes - entry.bytes + bytes;
        if entry.state == KeyState::Ready {
            self.ready_bytes = self.ready_bytes - entry.bytes + bytes;
        }
        (entry.version, entry.bytes, entry.latest_ms) = (version, bytes, now_ms);
        // A parked key was re-stamped by the driver (`up`): it may go again. An in-flight
        // key waits for its batch's answer.
        if entry.state == KeyState::Parked {
            self.make_ready(&key);
        }
        true
    }

    fn start_batch(&mut self, batch: BatchId, record: Batch) {
        for (key, _) in &record.changes {
            self.in_flight_keys.insert(key.clone(), batch);
        }
        self.batches.insert(batch, record);
    }

    /// Takes `batch` out of flight; its keys may be sent again.
    fn end_batch(&mut self, batch: BatchId) -> Option<Batch> {
        let record = self.batches.remove(&batch)?;
        for (key, _) in &record.changes {
            self.in_flight_keys.remove(key);
        }
        Some(record)
    }

    /// Returns a key of `batch` to the send queue (unless it left or moved on meanwhile).
    /// Holds `key`, left out of `batch`'s answer, for `delay_ms` of its misses in a row;
    /// it then goes behind every key queued by then.
    fn hold(&mut self, key: &Key, batch: BatchId, delay_ms: impl FnOnce(u32) -> u64, now_ms: u64) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if !matches!(entry.state, KeyState::InFlight { batch: b } if b == batch) {
            return;
        }
        entry.misses = entry.misses.saturating_add(1);
        let until_ms = now_ms.saturating_add(delay_ms(entry.misses));
        entry.state = KeyState::Held;
        self.held.insert((until_ms, key.clone()));
    }

    /// Held keys whose time came go back to the send queue.
    fn release_held(&mut self, now_ms: u64) {
        while let Some((until_ms, key)) = self.held.first().cloned() {
            if until_ms > now_ms {
                break;
            }
            self.held.pop_first();
            if let Some(entry) = self.entries.get_mut(&key)
                && entry.state == KeyState::Held
            {
                entry.order = self.next_order;
                self.next_order += 1;
                self.make_ready(&key);
            }
        }
    }

    fn release(&mut self, key: &Key, batch: BatchId) {
        let in_this_batch = self.entries.get(key).is_some_and(
            |entry| matches!(entry.state, KeyState::InFlight { batch: b, .. } if b == batch),
        );
        if in_this_batch {
            self.make_ready(key);
        }
    }
}

impl Engine {
    pub(super) fn on_queued(&mut self, key: Key, version: Version, bytes: usize) {
        let parked = (self.pushes.entries.get(&key)).is_some_and(|e| e.state == KeyState::Parked);
        let restamped = parked || self.pushes.restamping.remove(&key);
        if self.pushes.queue(key, version, bytes, self.now_ms) {
            match restamped {
                // Re-stamped by the driver after `Superseded` or `Ahead` (settled first, so
                // new here): it waited its delay once, and a sync may wait for it. It goes
                // with the next batch.
                true => {
                    let at_ms = self
                        .pushes
                        .send_at_ms
                        .map_or(self.now_ms, |at| at.min(self.now_ms));
                    self.pushes.send_at_ms = Some(at_ms);
                }
                false => self.schedule_send(),
            }
        }
    }

    /// The first pending change starts the delay; a full `sync_limit_bytes` ends it.
    fn schedule_send(&mut self) {
        let delay_end_ms = self.now_ms.saturating_add(self.config.sync_delay_ms);
        let pushes = &mut self.pushes;
        let mut send_at_ms = pushes.send_at_ms.unwrap_or(delay_end_ms);
        if pushes.ready_bytes >= self.config.sync_limit_bytes {
            send_at_ms = send_at_ms.min(self.now_ms);
        }
        pushes.send_at_ms = Some(send_at_ms);
    }

    pub(super) fn on_settled(&mut self, key: &Key, version: &Version) {
        if self.pushes.settle(key, version) {
            self.resolve_waits(key, version);
        }
    }

    /// Keys that became ready again (after their batch answered or failed) have waited
    /// long enough: they go with the next batch the limits allow.
    fn wake_sender(&mut self) {
        if !self.pushes.ready.is_empty() && self.pushes.send_at_ms.is_none() {
            self.pushes.send_at_ms = Some(self.now_ms);
        }
    }

    /// Ends the delay and the backoff: `Connected` and `db.sync()` send at once.
    pub(super) fn push_now(&mut self) {
        self.pushes.retry_at_ms = self.now_ms;
        self.pushes.release_held(u64::MAX);
        if !self.pushes.ready.is_empty() {
            self.pushes.send_at_ms = Some(self.now_ms);
        }
    }

    pub(super) fn send_due_batches(&mut self) {
        if self
            .pushes
            .held
            .first()
            .is_some_and(|(at_ms, _)| *at_ms <= self.now_ms)
        {
            self.pushes.release_held(self.now_ms);
            self.wake_sender();
        }
        while self.can_send() {
            let changes = self.take_batch();
            let batch = self.pushes.next_batch;
            self.pushes.next_batch += 1;
            let deadline_ms = self.now_ms.saturating_add(self.config.ack_timeout_ms);
            let record = Batch {
                changes: changes.clone(),
                deadline_ms,
            };
            self.pushes.start_batch(batch, record);
            self.emit(Output::Push { batch, changes });
        }
        if self.pushes.ready.is_empty() {
            self.pushes.send_at_ms = None;
        }
    }

    fn can_send(&self) -> bool {
        let pushes = &self.pushes;
        let due = pushes.send_at_ms.is_some_and(|at_ms| at_ms <= self.now_ms);
        self.connected
            && due
            && pushes.retry_at_ms <= self.now_ms
            && pushes.batches.len() < self.config.in_flight_batches_max
            && !pushes.ready.is_empty()
    }

    /// The oldest ready keys that fit one batch. The first key always fits, so a change
    /// larger than `batch_bytes_max` still goes (alone) and the cloud judges it.
    fn take_batch(&mut self) -> Vec<(Key, Version)> {
        let (changes_max, bytes_max) = (self.limits.push_changes_max, self.limits.push_bytes_max);
        let mut picked: Vec<(Key, Version)> = Vec::new();
        let mut bytes = 0;
        for (_, key) in &self.pushes.ready {
            let Some(entry) = self.pushes.entries.get(key) else {
                continue;
            };
            let fits = picked.len() < changes_max && bytes + entry.bytes <= bytes_max;
            if !picked.is_empty() && !fits {
                break;
            }
            bytes += entry.bytes;
            picked.push((key.clone(), entry.version.clone()));
        }
        let batch = self.pushes.next_batch;
        for (key, _) in &picked {
            self.pushes.set_state(key, KeyState::InFlight { batch });
        }
        picked
    }

    pub(super) fn on_pushed(&mut self, batch: BatchId, outcomes: Vec<(Key, Version, PushOutcome)>) {
        let Some(record) = self.pushes.end_batch(batch) else {
            // The batch timed out or the link dropped before this answer: keep what it proves.
            for (key, version, outcome) in outcomes {
                if outcome == PushOutcome::Applied {
                    self.on_late_ack(&key, &version);
                }
            }
            return;
        };
        // Each key of the batch takes its first answer; answers for keys it did not send
        // are ignored.
        let mut sent: HashMap<&Key, bool, FxBuildHasher> = (record.changes.iter())
            .map(|(key, _)| (key, false))
            .collect();
        for (key, version, outcome) in outcomes {
            if let Some(answered @ false) = sent.get_mut(&key) {
                *answered = true;
                self.apply_outcome(batch, key, version, outcome);
            }
        }
        let unanswered: Vec<&Key> = (record.changes.iter().map(|(key, _)| key))
            .filter(|key| sent.get(key) == Some(&false))
            .collect();
        let progress = unanswered.len() < record.changes.len();
        if unanswered.is_empty() {
            self.pushes.failures = 0;
        } else if progress {
            // The cloud took others: these keys fail on their own (one key denied by a
            // policy, say). Each backs off alone, then goes behind the rest, so that a key
            // the cloud keeps failing neither leads every batch nor slows the outbox.
            // (Throttling is the transports' to pace: DynamoDB's writer retries each
            // throttled write with its own backoff before leaving it out.)
            self.pushes.failures = 0;
            let (base_ms, max_ms) = (self.config.retry_base_ms, self.config.retry_max_ms);
            let jitter = &mut self.jitter;
            for key in &unanswered {
                let delay_ms = |misses| jitter.backoff_ms(misses, base_ms, max_ms);
                self.pushes.hold(key, batch, delay_ms, self.now_ms);
            }
        } else {
            // Nothing of the batch went through (throttling, or the cloud refusing them
            // all for now): the outbox backs off.
            for key in &unanswered {
                self.pushes.release(key, batch);
            }
            self.back_off();
        }
        self.wake_sender();
    }

    fn apply_outcome(&mut self, batch: BatchId, key: Key, version: Version, outcome: PushOutcome) {
        self.pushes.release(&key, batch);
        match outcome {
            PushOutcome::Applied => {
                self.last_ack_ms = Some(self.now_ms);
                self.pushes.settle(&key, &version);
                self.emit(Output::Acked {
                    key: key.clone(),
                    version: version.clone(),
                });
            }
            PushOutcome::Superseded { cloud } => {
                if self.park_for_driver(&key, &version) {
                    let (key, local, cloud) = (key.clone(), version.clone(), cloud.version);
                    self.emit(Output::Superseded { key, local, cloud });
                }
            }
            PushOutcome::Ahead { server_time_ms } => {
                if self.park_for_driver(&key, &version) {
                    self.pushes.restamping.insert(key.clone());
                    let (key, local) = (key.clone(), version.clone());
                    self.emit(Output::Ahead {
                        key,
                        local,
                        server_time_ms,
                    });
                }
            }
            PushOutcome::Rejected { reason } => {
                self.pushes.settle(&key, &version);
                let (key, version) = (key.clone(), version.clone());
                self.emit(Output::Rejected {
                    key,
                    version,
                    reason,
                });
            }
        }
        self.resolve_waits(&key, &version);
    }

    /// Parks `key` for the driver's decision on its refused `version` (superseded, or ahead
    /// of the cloud's time), unless a newer local version was queued meanwhile: that one is
    /// sent as is.
    fn park_for_driver(&mut self, key: &Key, version: &Version) -> bool {
        let newest = self.pushes.entries.get(key).map(|entry| &entry.version);
        let parks = newest.is_some_and(|newest| newest <= version);
        if parks {
            self.pushes.set_state(key, KeyState::Parked);
        }
        parks
    }

    /// An `Applied` for a batch already given up: the cloud holds `version`. Unless the key
    /// is in flight again (that batch will answer), its older pending versions are done.
    fn on_late_ack(&mut self, key: &Key, version: &Version) {
        let Some(entry) = self.pushes.entries.get(key) else {
            return;
        };
        if matches!(entry.state, KeyState::InFlight { .. }) || entry.version > *version {
            return;
        }
        self.last_ack_ms = Some(self.now_ms);
        self.pushes.remove(key);
        self.emit(Output::Acked {
            key: key.clone(),
            version: version.clone(),
        });
        self.resolve_waits(key, version);
    }

    pub(super) fn on_push_failed(&mut self, batch: BatchId) {
        if self.fail_batch(batch) {
            self.back_off();
        }
    }

    /// Returns the keys of `batch` to the queue; false if it was not in flight.
    fn fail_batch(&mut self, batch: BatchId) -> bool {
        let Some(record) = self.pushes.end_batch(batch) else {
            return false;
        };
        for (key, _) in &record.changes {
            self.pushes.release(key, batch);
        }
        true
    }

    /// Counts a failure and holds every batch back for the next backoff delay.
    fn back_off(&mut self) {
        let pushes = &mut self.pushes;
        pushes.failures = pushes.failures.saturating_add(1);
        let (base_ms, max_ms) = (self.config.retry_base_ms, self.config.retry_max_ms);
        let delay_ms = self.jitter.backoff_ms(pushes.failures, base_ms, max_ms);
        pushes.retry_at_ms = self.now_ms.saturating_add(delay_ms);
        self.wake_sender();
    }

    /// Fails every batch whose answer is overdue: one failure for the backoff, however many
    /// batches a dead link left unanswered.
    pub(super) fn expire_batches(&mut self) {
        let overdue: Vec<BatchId> = (self.pushes.batches.iter())
            .filter(|(_, batch)| batch.deadline_ms <= self.now_ms)
            .map(|(id, _)| *id)
            .collect();
        for batch in &overdue {
            self.fail_batch(*batch);
        }
        if !overdue.is_empty() {
            self.back_off();
        }
    }

    /// The link dropped: unanswered batches go back to the queue, to be sent on reconnect.
    /// Not a failure of the cloud, so no backoff.
    pub(super) fn abandon_batches(&mut self) {
        let batches: Vec<BatchId> = self.pushes.batches.keys().copied().collect();
        for batch in batches {
            self.fail_batch(batch);
        }
    }

    /// How many bytes of newly queued changes the engine may hear of late (at its next
    /// deadline) without acting differently before then, so a driver need not wake for
    /// them: 0 when a queued change would start the sync delay, the bytes left to
    /// `sync_limit_bytes` while the delay runs, and all of them when a send is due already
    /// (queued changes join it).
    pub fn queue_slack_bytes(&self) -> usize {
        match self.pushes.send_at_ms {
            None => 0,
            Some(at_ms) if at_ms <= self.now_ms => usize::MAX,
            Some(_) => (self.config.sync_limit_bytes).saturating_sub(self.pushes.ready_bytes),
        }
    }

    pub(super) fn next_push_deadline(&self) -> Option<u64> {
        let pushes = &self.pushes;
        let timeout_ms = pushes.batches.values().map(|batch| batch.deadline_ms).min();
        let can_send_later = self.connected
            && !pushes.ready.is_empty()
            && pushes.batches.len() < self.config.in_flight_batches_max;
        let send_ms = (pushes.send_at_ms)
            .filter(|_| can_send_later)
            .map(|at_ms| at_ms.max(pushes.retry_at_ms));
        let held_ms = (pushes.held.first())
            .filter(|_| self.connected)
            .map(|(at_ms, _)| *at_ms);
        [timeout_ms, send_ms, held_ms].into_iter().flatten().min()
    }
}
