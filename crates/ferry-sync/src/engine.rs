//! The sync engine: a deterministic state machine between the outbox, the cloud and the clock.
//!
//! The driver (the `ferry` facade) owns the store and the transport. It feeds [`Input`]s
//! with [`Engine::handle`], calls [`Engine::tick`] at [`Engine::next_deadline`], and executes
//! every [`Output`] it drains with [`Engine::poll_output`]. The engine holds only keys,
//! versions and sizes, never item data: the outbox in the store is the truth, the engine
//! decides when to send what.
//!
//! Push side: a key is pending from `Queued` until the cloud acknowledges a version at least
//! as new (or rejects it, or the driver settles it). Pending keys wait for `sync_delay_ms`
//! after the first one (or less if `sync_limit_bytes` fill up, or `db.sync()` asks), then go
//! in batches bounded by count and bytes, with at most `in_flight_batches_max` unanswered.
//! A key is in at most one batch at a time. Failed or timed-out batches go back to the queue
//! behind an exponential backoff with jitter.
//!
//! Pull side: every scope is pulled from `cursor - catchup_window_ms` on connect and then
//! every `poll_interval_ms`; `more` pages follow at once; cursors only move forward.

mod pull;
mod push;
mod wait;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ferry_types::{Hlc, Key, Version};

use crate::config::EngineConfig;
use ferry_cloud::Jitter;
use ferry_cloud::{Limits, PushOutcome};

use pull::Scope;
use push::Pushes;
use wait::SyncWait;

/// Identifies one pushed batch in its answer.
pub type BatchId = u64;

/// What the driver tells the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A local change was committed to the outbox (new key, or it replaced the key's pending
    /// change). `bytes` is its encoded size. A version not newer than the known one is ignored.
    Queued {
        /// The item's primary key.
        key: Key,
        /// The pending change's version.
        version: Version,
        /// Its size as sent (counts toward `sync_limit_bytes` and `batch_bytes_max`).
        bytes: usize,
    },
    /// The outbox entry of `key` at `version` left for a reason the engine did not see
    /// (superseded and handled, overwritten by a cloud change). A newer pending change stays.
    Settled {
        /// The item's primary key.
        key: Key,
        /// The version that left the outbox.
        version: Version,
    },
    /// The handshake of [`Output::Connect`] succeeded: pushes and pulls may go, within
    /// the transport's limits, and pulls only of the scopes the credentials grant.
    Connected {
        /// What one call may carry.
        limits: Limits,
        /// The scopes the cloud lets this device read (`None`: every scope); a scope the
        /// device reads but is not granted is not pulled, and `db.sync()` does not wait
        /// for it.
        granted: Option<BTreeSet<String>>,
    },
    /// The handshake failed; another is tried after a backoff (the longest one when the
    /// credentials were refused: retrying soon will not help).
    ConnectFailed {
        /// The cloud refused the credentials.
        unauthorized: bool,
    },
    /// The link went down (a call found the cloud unreachable): pushes and pulls pause,
    /// unanswered batches are re-sent after the next handshake.
    Disconnected,
    /// Per-change results of [`Output::Push`], in any order; a key missing from `outcomes`
    /// stays pending. `Version` is the version the driver actually sent.
    Pushed {
        /// The batch answered.
        batch: BatchId,
        /// One result per change that the cloud processed.
        outcomes: Vec<(Key, Version, PushOutcome)>,
    },
    /// The whole batch failed (network, timeout, throttling): its changes are retried.
    PushFailed {
        /// The batch that failed.
        batch: BatchId,
    },
    /// A page of cloud changes for `scope` was applied by the driver; `last_seq` is the highest
    /// `_seq` in it (None: empty page); `more`: another page follows; `safe`: the page's
    /// [`PullPage::safe`](crate::PullPage::safe). Also the answer to [`Output::Resync`],
    /// with `more: false` and the `safe` of its last page.
    Pulled {
        /// The scope pulled.
        scope: String,
        /// The highest `_seq` applied, if the page had changes.
        last_seq: Option<Hlc>,
        /// Another page follows.
        more: bool,
        /// Every change up to here was visible: the cursor may move up to it, never past.
        safe: Hlc,
    },
    /// A pull (or a resync) of `scope` failed; it is retried with backoff.
    PullFailed {
        /// The scope whose pull failed.
        scope: String,
    },
    /// The cloud says the cursor of `scope` is past its horizon.
    PullExpired {
        /// The scope that needs a full resync.
        scope: String,
    },
    /// `db.sync()`: push everything now, then pull every scope; answered by [`Output::SyncDone`].
    SyncRequested,
}

/// What the engine asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Run the transport's handshake and answer with [`Input::Connected`] or
    /// [`Input::ConnectFailed`].
    Connect,
    /// Send these pending changes (the driver loads them from the outbox) and answer with
    /// [`Input::Pushed`] or [`Input::PushFailed`].
    Push {
        /// Echo it in the answer.
        batch: BatchId,
        /// The keys and the versions the engine knows as pending.
        changes: Vec<(Key, Version)>,
    },
    /// The cloud holds `version` (or newer) of `key`: drop the outbox entry if its version
    /// is <= `version`.
    Acked {
        /// The item's primary key.
        key: Key,
        /// The version the cloud acknowledged.
        version: Version,
    },
    /// The cloud holds a newer version than the pending one: the driver applies the model's
    /// direction rule (up: re-stamp past `cloud` and queue again; both: the newer one wins,
    /// the loser goes to the conflict log), then feeds `Queued` or `Settled`.
    Superseded {
        /// The item's primary key.
        key: Key,
        /// The version that was pushed.
        local: Version,
        /// The newer version the cloud holds.
        cloud: Version,
    },
    /// The pending version of `key` is too far past the cloud's time (this device's clock
    /// ran ahead): the driver re-stamps it at the cloud's time and feeds `Queued` (or
    /// `Settled`, when the outbox moved on).
    Ahead {
        /// The item's primary key.
        key: Key,
        /// The version that was pushed.
        local: Version,
        /// The cloud's time when it refused.
        server_time_ms: u64,
    },
    /// The cloud refused the change for good (scope, validation): the driver drops the
    /// outbox entry if it still has this version, and reports it.
    Rejected {
        /// The item's primary key.
        key: Key,
        /// The refused version.
        version: Version,
        /// The cloud's reason.
        reason: String,
    },
    /// Pull `scope`'s change feed (from the cursor moved back by the catch-up window on the
    /// first page of a round) and answer with `Pulled`, `PullFailed` or `PullExpired`.
    Pull {
        /// The scope to pull.
        scope: String,
        /// Exclusive start of the feed (`_seq > since`).
        since: Hlc,
    },
    /// Download the whole scope; remove local synced items absent from it unless pending;
    /// answer with `Pulled { last_seq: highest _seq, more: false }` or `PullFailed`.
    Resync {
        /// The scope to download.
        scope: String,
    },
    /// Answers one `SyncRequested`, oldest first: everything queued before it is acked (or
    /// superseded, rejected or settled) and every scope was pulled after it. The engine
    /// only says `ok: true`; `ok: false` is the driver's own timeout.
    SyncDone {
        /// Always true from the engine.
        ok: bool,
    },
}

/// A snapshot of the engine for `db.status()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStatus {
    /// The transport is up.
    pub connected: bool,
    /// Keys with a pending (not yet acknowledged) change.
    pub pending_changes: usize,
    /// Their bytes.
    pub pending_bytes: usize,
    /// When the oldest pending change was queued (engine time).
    pub oldest_pending_ms: Option<u64>,
    /// Batches awaiting an answer.
    pub in_flight_batches: usize,
    /// Last time the cloud acknowledged a change.
    pub last_ack_ms: Option<u64>,
    /// Last time a pull answered.
    pub last_receive_ms: Option<u64>,
    /// Push failures since the last success (drives the backoff).
    pub consecutive_failures: u32,
    /// Failed handshakes since the last one that succeeded.
    pub connect_failures: u32,
    /// Per scope, the highest `_seq` applied.
    pub cursors: BTreeMap<String, Hlc>,
}

/// The sync engine. Deterministic: the same config, cursors, seed and inputs (with their
/// times) give the same outputs.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    /// The latest time seen; never goes backwards even if the driver's clock does.
    now_ms: u64,
    connected: bool,
    /// The handshake: when the next one may start (None: one is running or the link is up).
    connect_at_ms: Option<u64>,
    connect_failures: u32,
    jitter: Jitter,
    pushes: Pushes,
    scopes: BTreeMap<String, Scope>,
    waits: VecDeque<SyncWait>,
    outputs: VecDeque<Output>,
    /// The transport's limits met with the config's (`Input::Connected`).
    limits: Limits,
    /// The scopes the last handshake granted (`None`: every scope).
    granted: Option<BTreeSet<String>>,
    last_ack_ms: Option<u64>,
    last_receive_ms: Option<u64>,
}

impl Engine {
    /// A disconnected engine that asks for a handshake at its first tick. `cursors`: every scope the device reads, with the highest `_seq`
    /// applied so far (persisted by the driver; `Hlc::ZERO` for a scope never pulled).
    /// `seed` feeds the retry jitter. The config is [`EngineConfig::sanitized`].
    pub fn new(config: EngineConfig, cursors: BTreeMap<String, Hlc>, seed: u64) -> Engine {
        let scopes = cursors
            .into_iter()
            .map(|(name, cursor)| (name, Scope::new(cursor)))
            .collect();
        let config = config.sanitized();
        let limits = Limits {
            push_changes_max: config.batch_changes_max,
            push_bytes_max: config.batch_bytes_max,
            page_changes_max: crate::config::PAGE_CHANGES_MAX,
        };
        Engine {
            config,
            now_ms: 0,
            connected: false,
            connect_at_ms: Some(0),
            connect_failures: 0,
            jitter: Jitter::new(seed),
            pushes: Pushes::default(),
            scopes,
            waits: VecDeque::new(),
            outputs: VecDeque::new(),
            limits,
            granted: None,
            last_ack_ms: None,
            last_receive_ms: None,
        }
    }

    /// Feeds one input at `now_ms`, then runs whatever became due.
    pub fn handle(&mut self, input: Input, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        match input {
            Input::Queued {
                key,
                version,
                bytes,
            } => self.on_queued(key, version, bytes),
            Input::Settled { key, version } => self.on_settled(&key, &version),
            Input::Connected { limits, granted } => self.on_connected(limits, granted),
            Input::ConnectFailed { unauthorized } => self.on_connect_failed(unauthorized),
            Input::Disconnected => self.on_disconnected(),
            Input::Pushed { batch, outcomes } => self.on_pushed(batch, outcomes),
            Input::PushFailed { batch } => self.on_push_failed(batch),
            Input::Pulled {
                scope,
                last_seq,
                more,
                safe,
            } => self.on_pulled(&scope, last_seq, more, safe),
            Input::PullFailed { scope } => self.on_pull_failed(&scope),
            Input::PullExpired { scope } => self.on_pull_expired(&scope),
            Input::SyncRequested => self.on_sync_requested(),
        }
        self.tick(now_ms);
    }

    /// Runs the timers due at `now_ms`: ack and pull timeouts, batches whose delay or backoff
    /// ended, polls. Call it at [`Engine::next_deadline`] (earlier or later is harmless).
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.expire_batches();
        self.expire_pulls();
        if self.connect_at_ms.is_some_and(|at_ms| at_ms <= self.now_ms) {
            self.connect_at_ms = None;
            self.emit(Output::Connect);
        }
        if self.connected {
            self.send_due_batches();
            self.start_due_pulls();
        }
        self.answer_sync_waits();
    }

    /// The next output to execute, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Engine::tick`] must run next, if any timer is set. May be in the past: tick now.
    pub fn next_deadline(&self) -> Option<u64> {
        [
            self.next_push_deadline(),
            self.next_pull_deadline(),
            self.connect_at_ms,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The highest `_seq` applied for `scope`; it never goes backwards.
    pub fn cursor(&self, scope: &str) -> Option<Hlc> {
        self.scopes.get(scope).map(|scope| scope.cursor)
    }

    /// Whether `scope` is pulled: the last handshake granted it (or granted every scope).
    pub fn reads(&self, scope: &str) -> bool {
        (self.granted.as_ref()).is_none_or(|granted| granted.contains(scope))
    }

    /// The scopes the device reads that the last handshake did not grant: not pulled.
    pub fn ungranted(&self) -> Vec<String> {
        (self.scopes.keys())
            .filter(|scope| !self.reads(scope))
            .cloned()
            .collect()
    }

    /// A snapshot for `db.status()`. Walks the pending keys, so it costs O(pending).
    pub fn status(&self) -> EngineStatus {
        EngineStatus {
            connected: self.connected,
            pending_changes: self.pushes.len(),
            pending_bytes: self.pushes.pending_bytes(),
            oldest_pending_ms: self.pushes.oldest_queued_ms(),
            in_flight_batches: self.pushes.in_flight_batches(),
            last_ack_ms: self.last_ack_ms,
            last_receive_ms: self.last_receive_ms,
            consecutive_failures: self.pushes.failures(),
            connect_failures: self.connect_failures,
            cursors: self
                .scopes
                .iter()
                .map(|(name, scope)| (name.clone(), scope.cursor))
                .collect(),
        }
    }

    /// Whether `batch` awaits its answer: not yet answered, failed, timed out or
    /// abandoned with the link. An answer to a batch that is not is late: it tells
    /// nothing of the link as it is now.
    pub fn is_in_flight(&self, batch: BatchId) -> bool {
        self.pushes.is_in_flight(batch)
    }

    /// The limits a batch and a page respect: the config's, lowered by the transport's.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn on_connected(&mut self, limits: Limits, granted: Option<BTreeSet<String>>) {
        self.granted = granted;
        self.limits = Limits {
            push_changes_max: limits.push_changes_max.min(self.config.batch_changes_max),
            push_bytes_max: limits.push_bytes_max.min(self.config.batch_bytes_max),
            page_changes_max: limits.page_changes_max,
        }
        .sanitized();
        (self.connected, self.connect_at_ms, self.connect_failures) = (true, None, 0);
        self.push_now();
        self.pull_all_now();
    }

    fn on_connect_failed(&mut self, unauthorized: bool) {
        self.connect_failures = self.connect_failures.saturating_add(1);
        let (base_ms, max_ms) = (self.config.retry_base_ms, self.config.retry_max_ms);
        let delay_ms = match unauthorized {
            true => max_ms,
            false => (self.jitter).backoff_ms(self.connect_failures, base_ms, max_ms),
        };
        self.connect_at_ms = Some(self.now_ms.saturating_add(delay_ms));
    }

    fn on_disconnected(&mut self) {
        if self.connected {
            self.connected = false;
            self.abandon_batches();
            self.abandon_pulls();
            self.on_connect_failed(false);
        }
    }

    fn on_sync_requested(&mut self) {
        self.add_sync_wait();
        // `db.sync()` means now: a handshake waiting out its backoff starts at once.
        if let Some(at_ms) = &mut self.connect_at_ms {
            *at_ms = (*at_ms).min(self.now_ms);
        }
        self.push_now();
        self.pull_all_now();
    }

    fn emit(&mut self, output: Output) {
        self.outputs.push_back(output);
    }
}
