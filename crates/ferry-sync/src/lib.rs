//! Ferry's sync engine: what to send to the cloud and when, what to pull, and what to do
//! with what arrives.
//!
//! - [`Engine`]: the deterministic state machine a driver feeds with [`Input`]s and whose
//!   [`Output`]s it executes (batching, acknowledgements, retries, pulls, catch-up, resync,
//!   `db.sync()`).
//! - [`decide_inbound`]: the per-item conflict rule for cloud changes (DESIGN.md 5 and 6).
//! - [`Transport`]: the async, runtime-agnostic way a driver reaches the cloud.
//! - [`MemoryCloud`] and [`MemoryTransport`]: the reference cloud whose rules every backend
//!   matches, for tests and the simulator.
//!
//! **Architecture invariant:** the sync engine never does I/O, reads no clock and draws no
//! randomness of its own. Time comes in as `now_ms`, jitter from the seed given to
//! [`Engine::new`], messages as [`Input`]s; it iterates `BTreeMap`s and `Vec`s only. The same
//! seed and inputs replay the same run, which is what the simulator relies on.

mod cloud;
mod config;
mod engine;
mod inbound;
mod jitter;
mod transport;

pub use cloud::{MemoryCloud, MemoryTransport, refusal};
pub use config::{
    ACK_TIMEOUT_MS, BATCH_BYTES_MAX, BATCH_CHANGES_MAX, CATCHUP_WINDOW_MS, EngineConfig,
    HORIZON_MS, IN_FLIGHT_BATCHES_MAX, PAGE_CHANGES_MAX, POLL_INTERVAL_MS, RETRY_BASE_MS,
    RETRY_MAX_MS, SYNC_DELAY_MS, SYNC_LIMIT_BYTES, SYNC_WAITS_MAX,
};
pub use engine::{BatchId, Engine, EngineStatus, Input, Output, cursor_after};
pub use inbound::{Inbound, decide_inbound};
pub use transport::{
    Limits, PullFrom, PullPage, PushOutcome, PushResults, Session, Transport, TransportError,
};
