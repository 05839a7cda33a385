//! The engine's knobs and their defaults, each with its source.

pub use ferry_cloud::defaults::{
    BATCH_BYTES_MAX, BATCH_CHANGES_MAX, CATCHUP_WINDOW_MS, HORIZON_MS, PAGE_CHANGES_MAX,
};

/// Wait after the first pending change before sending a batch (the seed's `syncDelay`).
pub const SYNC_DELAY_MS: u64 = 5_000;
/// Pending bytes that send a batch at once (the seed's `syncLimit`).
pub const SYNC_LIMIT_BYTES: usize = 10 * 1024;
/// Batches awaiting an answer at once: enough to fill a slow link, few enough to retry cheaply.
pub const IN_FLIGHT_BATCHES_MAX: usize = 4;
/// First retry delay; doubled per consecutive failure.
pub const RETRY_BASE_MS: u64 = 500;
/// Retry delays stop growing here, so a device reconnects within a minute of the cloud's return.
pub const RETRY_MAX_MS: u64 = 60_000;
/// An unanswered push or pull counts as failed after this long.
pub const ACK_TIMEOUT_MS: u64 = 30_000;
/// How often each scope is pulled while connected (no live stream yet).
pub const POLL_INTERVAL_MS: u64 = 30_000;
/// `db.sync()` calls waiting at once; more are merged into the newest (see `Engine::handle`).
pub const SYNC_WAITS_MAX: usize = 64;

/// The sync engine's configuration. `Default` gives the documented defaults above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Wait after the first pending change before sending ([`SYNC_DELAY_MS`]).
    pub sync_delay_ms: u64,
    /// Send at once when the bytes waiting to be sent reach this ([`SYNC_LIMIT_BYTES`]).
    pub sync_limit_bytes: usize,
    /// Changes per batch ([`BATCH_CHANGES_MAX`]); a transport may lower it.
    pub batch_changes_max: usize,
    /// Bytes per batch ([`BATCH_BYTES_MAX`]); a single larger change is sent alone.
    pub batch_bytes_max: usize,
    /// Batches awaiting an answer at once ([`IN_FLIGHT_BATCHES_MAX`]).
    pub in_flight_batches_max: usize,
    /// First retry delay, doubled per failure ([`RETRY_BASE_MS`]).
    pub retry_base_ms: u64,
    /// Cap of the retry delay ([`RETRY_MAX_MS`]).
    pub retry_max_ms: u64,
    /// An unanswered push or pull counts as failed after this ([`ACK_TIMEOUT_MS`]).
    pub ack_timeout_ms: u64,
    /// Pull each scope this often while connected ([`POLL_INTERVAL_MS`]).
    pub poll_interval_ms: u64,
    /// Pulls start at `cursor - catchup_window_ms` ([`CATCHUP_WINDOW_MS`], W in docs/design.md).
    pub catchup_window_ms: u64,
    /// Tombstone retention; older cursors need a full resync ([`HORIZON_MS`]).
    pub horizon_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            sync_delay_ms: SYNC_DELAY_MS,
            sync_limit_bytes: SYNC_LIMIT_BYTES,
            batch_changes_max: BATCH_CHANGES_MAX,
            batch_bytes_max: BATCH_BYTES_MAX,
            in_flight_batches_max: IN_FLIGHT_BATCHES_MAX,
            retry_base_ms: RETRY_BASE_MS,
            retry_max_ms: RETRY_MAX_MS,
            ack_timeout_ms: ACK_TIMEOUT_MS,
            poll_interval_ms: POLL_INTERVAL_MS,
            catchup_window_ms: CATCHUP_WINDOW_MS,
            horizon_ms: HORIZON_MS,
        }
    }
}

impl EngineConfig {
    /// The configuration with every limit that must allow progress raised to at least one
    /// (a zero batch size or in-flight limit would stall sync forever, a zero retry delay
    /// would spin), and `retry_max_ms` no lower than `retry_base_ms`.
    pub fn sanitized(mut self) -> EngineConfig {
        self.batch_changes_max = self.batch_changes_max.max(1);
        self.batch_bytes_max = self.batch_bytes_max.max(1);
        self.in_flight_batches_max = self.in_flight_batches_max.max(1);
        self.retry_base_ms = self.retry_base_ms.max(1);
        self.retry_max_ms = self.retry_max_ms.max(self.retry_base_ms);
        self.ack_timeout_ms = self.ack_timeout_ms.max(1);
        self.poll_interval_ms = self.poll_interval_ms.max(1);
        self
    }
}
