//! The driver: owns the engine and the transport, feeds the engine what happened and
//! carries out what it asks, against the database's replica port and the transport.
//!
//! One step takes the inputs writers queued, ticks the engine and executes its outputs
//! until none is left. Whoever holds the `Driver` runs it (the background task, or
//! `Db::drive`); nothing else locks it, so no lock is held across a transport call and
//! `status()` reads the snapshot the last step published.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ferry_db::{Acked, ReplicaPort, Resolved, Result};
use ferry_journal::Change;
use ferry_sync::{BatchId, Engine, Input, Output, PullFrom, PushResults, TransportError};
use ferry_types::{Hlc, Key, KeyMap, Version};

use crate::echoes::Echoes;
use crate::in_flight::{Answer, InFlight};
use crate::link::{Link, timed};
use crate::loaded::{Loaded, QueuedBy};
use crate::{INBOX_INPUTS_MAX, Inbox, Syncer};

/// Attempts of one single-row read in a resync before the resync is tried again later.
const READ_ATTEMPTS: u32 = 3;

/// The time of one step: the wall clock's for what the database records, the timer's
/// (monotonic) for the engine.
#[derive(Debug, Clone, Copy)]
struct Now {
    wall: u64,
    timer: u64,
}

impl Now {
    fn of(port: &ReplicaPort) -> Now {
        Now {
            wall: port.now_ms().max(0) as u64,
            timer: port.timer_ms(),
        }
    }
}

/// The engine, the transport, and what the last push told about superseded keys.
pub(crate) struct Driver {
    pub engine: Engine,
    pub link: Arc<dyn Link>,
    /// Every transport call fails with `Timeout` after this (background driver only).
    pub call_timeout: Duration,
    /// Pushes sent and not yet answered.
    pub in_flight: InFlight,
    /// Answers the background task took while waiting, for the next step.
    pub arrived: Vec<Answer>,
    /// Queued changes as their commits handed them over, for the push.
    loaded: Loaded,
    /// The writers' inbox as the last step took it (see `Syncer::take_inputs`).
    taken: Inbox,
    /// Changes pushed to scopes this device pulls, not applied again when they come back.
    echoes: Echoes,
    /// Sessions the transport opened so far, and the one each push in flight went over:
    /// a failure speaks of its own session only.
    session: u64,
    sent_on: HashMap<BatchId, u64>,
    /// The cloud's change of each key whose push was superseded, until the engine asks
    /// (in the same step: the answer and the engine's `Superseded` come together).
    superseded: BTreeMap<Key, Change>,
    /// The store's commit mark when the engine last heard of queued changes, and the mark
    /// of the step that heard of each key's newest change (until its first push): a push
    /// fsyncs first unless an fsync covered the marks of its changes (see `Driver::push`).
    heard_mark: u64,
    heard_marks: KeyMap<u64>,
    /// Work carried over to the next step: acknowledged changes the store refused to take
    /// out of the outbox, and the cloud's answers (superseded, ahead, rejected) it refused
    /// to carry out. The engine counts both as done, so nothing else would.
    unsettled: Vec<Acked>,
    undone: Vec<Output>,
    /// The commit that queued each version pushed from memory, for its settle.
    queued_by: QueuedBy,
}

impl Driver {
    pub fn new(
        engine: Engine,
        link: Arc<dyn Link>,
        call_timeout: Duration,
        in_flight: InFlight,
    ) -> Driver {
        Driver {
            engine,
            link,
            call_timeout,
            in_flight,
            arrived: Vec::new(),
            loaded: Loaded::default(),
            taken: Inbox::default(),
            echoes: Echoes::default(),
            session: 0,
            sent_on: HashMap::new(),
            superseded: BTreeMap::new(),
            heard_mark: 0,
            heard_marks: KeyMap::default(),
            unsettled: Vec::new(),
            undone: Vec::new(),
            queued_by: QueuedBy::default(),
        }
    }

    /// Feeds the queued inputs, ticks, and executes every output. Failures of single
    /// outputs are reported in the status and retried: by the engine for what went to the
    /// cloud, by the next step for what the store refused.
    pub async fn step(&mut self, port: &ReplicaPort, syncer: &Syncer) {
        let now = Now::of(port);
        // Answers first: a batch whose answer came is not to time out at this step's tick.
        self.take_answers(port).await;
        syncer.take_inputs(port, &mut self.loaded, &mut self.taken);
        // Read after the inputs were taken: each change they queued was committed by then.
        self.heard_mark = port.commit_mark();
        for input in self.taken.inputs.drain(..) {
            if let Input::Queued { key, .. } = &input {
                self.heard_marks.insert(key.clone(), self.heard_mark);
            }
            self.engine.handle(input, now.timer);
        }
        // An attach or a reload hands over the whole outbox at once: that room goes back.
        self.taken.inputs.shrink_to(INBOX_INPUTS_MAX);
        self.engine.tick(now.timer);
        // Acknowledgements come one per change: settle a run of them in one commit.
        let mut acked = std::mem::take(&mut self.unsettled);
        let mut undone = std::mem::take(&mut self.undone).into_iter();
        loop {
            while let Some(output) = undone.next().or_else(|| self.engine.poll_output()) {
                if let Output::Acked { key, version } = output {
                    acked.push(self.acked(key, version));
                    continue;
                }
                self.settle(port, &mut acked);
                let local = matches!(
                    output,
                    Output::Superseded { .. } | Output::Ahead { .. } | Output::Rejected { .. }
                );
                let again = local.then(|| output.clone());
                // Calls can take long: each output at the time it starts.
                if let Err(e) = self.execute(port, syncer, output, Now::of(port)).await {
                    port.report_error(format!("{}: {e}", e.code()));
                    self.undone.extend(again);
                }
            }
            self.settle(port, &mut acked);
            // Answers that came meanwhile are this step's work too (their acknowledgements,
            // the batches they make room for).
            if !self.take_answers(port).await {
                break;
            }
        }
        let undone = &self.undone;
        self.superseded.retain(|key, _| {
            (undone.iter()).any(|o| matches!(o, Output::Superseded { key: k, .. } if k == key))
        });
        syncer.publish(&self.engine);
    }

    /// The acknowledgement of `version` of `key`, naming the commit that queued it when
    /// the push took it from memory.
    fn acked(&mut self, key: Key, version: Version) -> Acked {
        let queued_by = self.queued_by.acked(&key, &version);
        Acked {
            key,
            version,
            queued_by,
        }
    }

    /// Removes acknowledged changes from the outbox; if the store refuses, they are tried
    /// again at the next step (the engine counts them as acknowledged).
    fn settle(&mut self, port: &ReplicaPort, acked: &mut Vec<Acked>) {
        if acked.is_empty() {
            return;
        }
        for Acked { key, version, .. } in acked.iter() {
            self.loaded.forget(key, version);
        }
        match port.settle(acked) {
            Ok(()) => acked.clear(),
            Err(e) => {
                port.report_error(format!("{}: settling acknowledged changes: {e}", e.code()));
                self.unsettled.append(acked);
            }
        }
    }

    async fn execute(
        &mut self,
        port: &ReplicaPort,
        syncer: &Syncer,
        output: Output,
        now: Now,
    ) -> Result<()> {
        match output {
            Output::Connect => {
                self.connect(port, syncer, now).await;
                Ok(())
            }
            Output::Push { batch, changes } => self.push(port, batch, changes, now).await,
            Output::Acked { key, version } => {
                let acked = self.acked(key, version);
                self.settle(port, &mut vec![acked]);
                Ok(())
            }
            Output::Superseded { key, local, cloud } => {
                let winner = self.superseded.get(&key).cloned();
                match port.superseded(&key, &local, &cloud, winner.as_ref(), now.wall)? {
                    Resolved::Stale => {}
                    Resolved::Restamped { version, bytes } => {
                        self.requeue(port, key, version, bytes, now);
                    }
                    Resolved::Lost => {
                        self.loaded.forget(&key, &local);
                        let version = local;
                        self.engine
                            .handle(Input::Settled { key, version }, now.timer);
                    }
                }
                Ok(())
            }
            Output::Ahead {
                key,
                local,
                server_time_ms,
            } => {
                // Not an error: the change goes again at the cloud's time (a store write per
                // report would cost every change of a device whose clock runs ahead).
                if let Resolved::Restamped { version, bytes } =
                    port.restamp_behind(&key, &local, server_time_ms, now.wall)?
                {
                    // The new version is older than the refused one: that one leaves first.
                    let settled = Input::Settled {
                        key: key.clone(),
                        version: local,
                    };
                    self.engine.handle(settled, now.timer);
                    self.requeue(port, key, version, bytes, now);
                }
                Ok(())
            }
            Output::Rejected {
                key,
                version,
                reason,
            } => {
                port.report_error(format!("the cloud rejected {key} ({version}): {reason}"));
                port.refused(&key, &version, &reason, now.wall)
            }
            Output::Pull { scope, since } => {
                triggers_caught_up(syncer).await;
                let pulled = self.pull(port, &scope, since, now).await;
                self.failed_locally(&scope, pulled, now)
            }
            Output::Resync { scope } => {
                let resynced = self.resync(port, syncer, &scope, now).await;
                self.failed_locally(&scope, resynced, now)
            }
            Output::SyncDone { .. } => {
                syncer.answer_sync();
                Ok(())
            }
        }
    }

    /// A pull or resync of `scope` that failed on the device (its store) is a failed pull
    /// to the engine, retried after a backoff; a resync has no deadline, so without this it
    /// would wait for good.
    fn failed_locally(&mut self, scope: &str, result: Result<()>, now: Now) -> Result<()> {
        if result.is_err() {
            let scope = scope.to_string();
            self.engine.handle(Input::PullFailed { scope }, now.timer);
        }
        result
    }

    /// The engine hears of a re-stamped change as of a newly queued one. Its commit may
    /// be past the last fsync: the push that takes it waits for one that covers it.
    fn requeue(&mut self, port: &ReplicaPort, key: Key, version: Version, bytes: usize, now: Now) {
        self.heard_mark = port.commit_mark();
        self.heard_marks.insert(key.clone(), self.heard_mark);
        let queued = Input::Queued {
            key,
            version,
            bytes,
        };
        self.engine.handle(queued, now.timer);
    }

    async fn connect(&mut self, port: &ReplicaPort, syncer: &Syncer, now: Now) {
        match timed(self.call_timeout, self.link.connect()).await {
            Ok(session) => {
                self.session += 1;
                // The server's time disciplines this device's clock.
                if let Err(e) = port.observe_server(session.server_time_ms) {
                    port.report_error(format!("{}: {e}", e.code()));
                }
                syncer.set_horizon_ms(session.horizon_ms);
                let (limits, granted) = (session.limits, session.scopes);
                self.engine
                    .handle(Input::Connected { limits, granted }, now.timer);
                let ungranted = self.engine.ungranted();
                if !ungranted.is_empty() {
                    port.report_error(format!(
                        "not granted by the cloud, so not read: scopes {}",
                        ungranted.join(", ")
                    ));
                }
            }
            Err(e) => {
                let unauthorized = matches!(e, TransportError::Unauthorized(_));
                port.report_error(format!("connect failed: {e}"));
                self.engine
                    .handle(Input::ConnectFailed { unauthorized }, now.timer);
            }
        }
    }

    /// A call failed: the link is down unless the cloud only asked to slow down or
    /// refused this one request.
    fn call_failed(&mut self, port: &ReplicaPort, what: String, error: &TransportError, now: Now) {
        port.report_error(format!("{what}: {error}"));
        let link_down = matches!(
            error,
            TransportError::Unavailable(_)
                | TransportError::Timeout(_)
                | TransportError::Unauthorized(_)
        );
        if link_down {
            self.engine.handle(Input::Disconnected, now.timer);
        }
    }

    /// A pull (or a resync's page) of `scope` failed: the engine retries it.
    fn pull_failed(
        &mut self,
        port: &ReplicaPort,
        scope: &str,
        what: &str,
        error: &TransportError,
        now: Now,
    ) {
        let input = Input::PullFailed {
            scope: scope.to_string(),
        };
        self.engine.handle(input, now.timer);
        self.call_failed(
            port,
            format!("{what} of scope '{scope}' failed"),
            error,
            now,
        );
    }

    /// Loads the listed changes from the outbox and sends them; the answer comes in a
    /// later round of the step, or a later step.
    async fn push(
        &mut self,
        port: &ReplicaPort,
        batch: BatchId,
        listed: Vec<(Key, Version)>,
        now: Now,
    ) -> Result<()> {
        let mut changes = Vec::with_capacity(listed.len());
        let mut newer_than_listed = false;
        let mut mark = 0;
        for (key, version) in listed {
            // A change sent before (a retry) has no mark of its own any more: the newest
            // step's covers it.
            mark = (self.heard_marks.remove(&key))
                .unwrap_or(self.heard_mark)
                .max(mark);
            if let Some(queued) = self.loaded.take(&key, &version) {
                self.queued_by.pushed(&queued);
                changes.push(queued.change);
                continue;
            }
            self.queued_by.forget(&key);
            match port.pending_change(&key)? {
                Some(change) => {
                    newer_than_listed |= change.version != version;
                    changes.push(change);
                }
                // Settled since the engine heard of it.
                None => self
                    .engine
                    .handle(Input::Settled { key, version }, now.timer),
            }
        }
        if changes.is_empty() {
            let outcomes = Vec::new();
            self.engine
                .handle(Input::Pushed { batch, outcomes }, now.timer);
            return Ok(());
        }
        // Only what a power loss cannot take back from the device goes up: otherwise the
        // cloud could keep an `up` change the device no longer has, or a version the
        // device's clock would stamp again. Each version the engine lists was committed
        // by the mark of the step that heard of it, so an fsync that covered the highest
        // of those covers them all: a writer far ahead of the pushes needs one fsync per
        // run of them, not one per push. A change read back newer than listed may have
        // been committed since, and needs another.
        let covered = !newer_than_listed && port.is_persisted(mark);
        if !covered && let Err(e) = port.db().flush() {
            self.engine.handle(Input::PushFailed { batch }, now.timer);
            return Err(e);
        }
        for change in &changes {
            if self.engine.cursor(&change.scope).is_some() && self.engine.reads(&change.scope) {
                self.echoes.pushed(change);
            }
        }
        self.sent_on.insert(batch, self.session);
        self.in_flight.send(&self.link, batch, changes);
        Ok(())
    }

    /// Feeds the engine every answer that came in (a driver stepped by hand runs its held
    /// pushes now); false when none did.
    async fn take_answers(&mut self, port: &ReplicaPort) -> bool {
        self.arrived.extend(self.in_flight.answered().await);
        let answers = std::mem::take(&mut self.arrived);
        let any = !answers.is_empty();
        for (batch, answer) in answers {
            self.answered(port, batch, answer, Now::of(port));
        }
        any
    }

    /// The answer to the push of `batch`.
    fn answered(
        &mut self,
        port: &ReplicaPort,
        batch: BatchId,
        answer: std::result::Result<PushResults, TransportError>,
        now: Now,
    ) {
        // A late answer (its batch timed out, or was abandoned with a link that dropped)
        // only proves what landed: the engine keeps that much of it, nothing more. A
        // failure says the link is down only if it is of the session up now (a push that
        // timed out on it, say), not of one a reconnect replaced.
        let late = !self.engine.is_in_flight(batch);
        let this_session = self.sent_on.remove(&batch) == Some(self.session);
        match answer {
            Ok(outcomes) => {
                for (key, _, outcome) in (outcomes.iter()).filter(|_| !late) {
                    if let ferry_sync::PushOutcome::Superseded { cloud } = outcome {
                        self.superseded.insert(key.clone(), (**cloud).clone());
                    }
                }
                self.engine
                    .handle(Input::Pushed { batch, outcomes }, now.timer);
            }
            Err(e) if !this_session => {
                port.report_error(format!("a push of an earlier session failed: {e}"));
            }
            Err(e) => {
                self.engine.handle(Input::PushFailed { batch }, now.timer);
                self.call_failed(port, "push failed".into(), &e, now);
            }
        }
    }

    /// Pulls one page of a scope's change feed and applies it.
    async fn pull(&mut self, port: &ReplicaPort, scope: &str, since: Hlc, now: Now) -> Result<()> {
        let limit = self.engine.limits().page_changes_max;
        let from = PullFrom::Since(since);
        match timed(self.call_timeout, self.link.pull(scope, from, limit)).await {
            Ok(mut page) => {
                let cursor = self.next_cursor(scope, &page);
                let last_seq = page.changes.last().map(|(seq, _)| *seq);
                let mut echoes = Vec::new();
                page.changes.retain(|(_, change)| {
                    let echo = self.echoes.came_back(change);
                    if echo {
                        echoes.push((change.key.clone(), change.version.clone()));
                    }
                    !echo
                });
                let applied =
                    port.apply_page(scope, &page.changes, &echoes, Some(cursor), now.wall)?;
                self.settled(applied, now);
                let (scope, more, safe) = (scope.to_string(), page.more, page.safe);
                let input = Input::Pulled {
                    scope,
                    last_seq,
                    more,
                    safe,
                };
                self.engine.handle(input, now.timer);
            }
            Err(TransportError::Expired) => {
                let scope = scope.to_string();
                self.engine.handle(Input::PullExpired { scope }, now.timer);
            }
            Err(e) => self.pull_failed(port, scope, "pull", &e, now),
        }
        Ok(())
    }

    /// The cursor after `page`, by the engine's rule (persisted with the page it proves).
    fn next_cursor(&self, scope: &str, page: &ferry_sync::PullPage) -> Hlc {
        let cursor = self.engine.cursor(scope).unwrap_or(Hlc::ZERO);
        let last_seq = page.changes.last().map(|(seq, _)| *seq);
        ferry_sync::cursor_after(cursor, last_seq, page.more, page.safe)
    }

    /// Downloads a whole scope as a snapshot (which never expires, whatever the age of its
    /// rows), then removes local synced items of it that the cloud no longer has, unless
    /// they are pending upload. The cursor is persisted only when the resync is complete:
    /// a resync cut short by a crash starts again, rather than leaving the device believing
    /// it caught up.
    async fn resync(
        &mut self,
        port: &ReplicaPort,
        syncer: &Syncer,
        scope: &str,
        now: Now,
    ) -> Result<()> {
        let limit = self.engine.limits().page_changes_max;
        let mut after = Hlc::ZERO;
        let mut seen = std::collections::BTreeSet::new();
        let safe = loop {
            triggers_caught_up(syncer).await;
            let from = PullFrom::Snapshot(after);
            let page = match timed(self.call_timeout, self.link.pull(scope, from, limit)).await {
                Ok(page) => page,
                Err(e) => {
                    self.pull_failed(port, scope, "resync", &e, now);
                    return Ok(());
                }
            };
            seen.extend(page.changes.iter().map(|(_, c)| c.key.clone()));
            let applied = port.apply_page(scope, &page.changes, &[], None, now.wall)?;
            self.settled(applied, now);
            if let Some((seq, _)) = page.changes.last() {
                after = *seq;
            }
            if !page.more {
                break page.safe;
            }
        };
        let Some(absent) = self.confirm_absent(port, scope, &seen, now).await? else {
            return Ok(());
        };
        port.forget_absent(scope, &absent, safe)?;
        // Items forgotten without a newer version: their own pushed changes must apply again.
        self.echoes = Echoes::default();
        let input = Input::Pulled {
            scope: scope.to_string(),
            last_seq: None,
            more: false,
            safe,
        };
        self.engine.handle(input, now.timer);
        Ok(())
    }

    /// The local items of `scope` the resync's snapshot lacked that the cloud does not
    /// hold either, by a strongly consistent read of each: a snapshot (a query of an
    /// index, over DynamoDB) may not show yet a row written just before it, and forgetting
    /// such an item would drop its local-only fields and fire a spurious delete. A row the
    /// read finds in the scope is applied instead. `None`: a read kept failing, and the
    /// resync is retried. A transport that reads no single rows (or whose credentials may
    /// not) leaves the snapshot's word.
    async fn confirm_absent(
        &mut self,
        port: &ReplicaPort,
        scope: &str,
        seen: &std::collections::BTreeSet<Key>,
        now: Now,
    ) -> Result<Option<Vec<Key>>> {
        let mut absent = Vec::new();
        for key in port.absent_from(scope, seen)? {
            match self.read_row(&key).await {
                // The answer must be of this key and scope: anything else says nothing of it.
                Ok(Some(held)) if held.key == key && held.scope == scope => {
                    let page = [(Hlc::ZERO, held)];
                    let applied = port.apply_page(scope, &page, &[], None, now.wall)?;
                    self.settled(applied, now);
                }
                Ok(_) | Err(TransportError::Rejected(_) | TransportError::Unauthorized(_)) => {
                    absent.push(key);
                }
                Err(e) => {
                    self.pull_failed(port, scope, "resync", &e, now);
                    return Ok(None);
                }
            }
        }
        Ok(Some(absent))
    }

    /// One strongly consistent read of `key`, tried again at once after a passing failure
    /// (a resync reads many: one lost answer must not start it over).
    async fn read_row(&self, key: &Key) -> std::result::Result<Option<Change>, TransportError> {
        let mut attempts = 1;
        loop {
            let answer = timed(self.call_timeout, self.link.get(key)).await;
            let passing = matches!(
                answer,
                Err(TransportError::Unavailable(_)
                    | TransportError::Timeout(_)
                    | TransportError::Throttled { .. })
            );
            if !passing || attempts == READ_ATTEMPTS {
                return answer;
            }
            attempts += 1;
        }
    }

    /// Outbox entries that live changes overwrote leave the engine's pending set.
    #[cfg(feature = "tokio")]
    pub fn left_outbox(&mut self, port: &ReplicaPort, settled: Vec<(Key, Version)>) {
        self.settled(settled, Now::of(port));
    }

    /// Outbox entries a cloud change overwrote leave the engine's pending set.
    fn settled(&mut self, settled: Vec<(Key, Version)>, now: Now) {
        for (key, version) in settled {
            self.loaded.forget(&key, &version);
            self.heard_marks.remove(&key);
            self.engine
                .handle(Input::Settled { key, version }, now.timer);
        }
    }
}

/// Waits while the triggers are behind: nothing new comes down until they catch up, so
/// what waits for them stays within a page of the trigger channel's bound (unless a
/// trigger waits in `sync()`, which needs the pulls: see `trigger_queue`).
async fn triggers_caught_up(syncer: &Syncer) {
    #[cfg(feature = "tokio")]
    while syncer.triggers_behind() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    #[cfg(not(feature = "tokio"))]
    let _ = syncer;
}
