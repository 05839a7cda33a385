//! Ferry's sync engine: what to send to the cloud and when, what to pull, and what to do
//! with what arrives.
//!
//! - [`Engine`]: the deterministic state machine a driver feeds with [`Input`]s and whose
//!   [`Output`]s it executes (batching, acknowledgements, retries, pulls, catch-up, resync,
//!   `db.sync()`).
//! - [`decide_inbound`]: the per-item conflict rule for cloud changes (docs/design.md section 5 and 6).
//! - The seam it works across is `ferry-cloud`'s ([`Transport`], the write rule, the
//!   reference [`MemoryCloud`]), re-exported here for the engine's users.
//!
//! **Architecture invariant:** the sync engine never does I/O, reads no clock and draws no
//! randomness of its own. Time comes in as `now_ms`, jitter from the seed given to
//! [`Engine::new`], messages as [`Input`]s; where order matters it iterates `BTreeMap`s and
//! `Vec`s only (its by-key lookups go through `KeyMap`s, fixed-hashed). The same seed and
//! inputs replay the same run, which is what the simulator relies on.

mod config;
mod engine;
mod inbound;

pub use config::{
    ACK_TIMEOUT_MS, BATCH_BYTES_MAX, BATCH_CHANGES_MAX, CATCHUP_WINDOW_MS, EngineConfig,
    HORIZON_MS, IN_FLIGHT_BATCHES_MAX, PAGE_CHANGES_MAX, POLL_INTERVAL_MS, RETRY_BASE_MS,
    RETRY_MAX_MS, SYNC_DELAY_MS, SYNC_LIMIT_BYTES, SYNC_WAITS_MAX,
};
pub use engine::{BatchId, Engine, EngineStatus, Input, Output};
pub use ferry_cloud::{
    AHEAD_MAX_MS, CloudStore, Grant, Jitter, Limits, MemoryCloud, MemoryTransport, Models,
    PullFrom, PullPage, PushOutcome, PushResults, Role, Session, StoreTransport, Transport,
    TransportError, cursor_after,
};
pub use inbound::{Inbound, decide_inbound};
