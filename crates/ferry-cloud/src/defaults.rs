//! Defaults both sides of the seam share, each with its source.

/// Changes per batch (a transport may lower it: DynamoDB's takes as many as it writes at
/// once, 64; the relay takes 1000).
pub const BATCH_CHANGES_MAX: usize = 100;
/// Bytes per batch: one MiB keeps a frame small on device links (DynamoDB allows 16 MiB).
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Changes per pulled page: a page of typical items stays well under a frame's size.
pub const PAGE_CHANGES_MAX: usize = 100;
/// The feed's window W: pulls start this far behind the cursor, for writes that became
/// visible late, and a cursor never passes the cloud's time minus W.
pub const CATCHUP_WINDOW_MS: u64 = 10_000;
/// Tombstone retention: a cursor older than this needs a full resync.
pub const HORIZON_MS: u64 = 30 * 24 * 60 * 60 * 1000;
