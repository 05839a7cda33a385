//! The cloud seam: everything the device side and the cloud side agree on, and the one rule
//! that decides every cloud write.
//!
//! - [`Transport`]: how a device (or a service) reaches a cloud: a handshake, pushes
//!   answered per change, pulls of a scope's change feed, an optional live stream.
//! - [`decide`]: the write rule (version order, tombstones, scope ownership, the model's
//!   direction, versions bounded by the cloud's time), as a pure function. No other code
//!   decides whether a cloud write lands.
//! - [`CloudStore`]: a cloud backend as the rule sees it: the reference [`MemoryCloud`],
//!   the relay's embedded store and DynamoDB. [`StoreTransport`] is a writer's
//!   [`Transport`] straight onto a store (the relay serves the same over the network).
//!
//! **Architecture invariant:** pure definitions and the in-memory reference: no I/O, no
//! clock, no tokio, no schema (the write rule learns each model's direction as
//! [`Models`]).

pub mod defaults;
mod jitter;
mod memory;
mod rule;
mod store;
mod transport;

pub use jitter::Jitter;
pub use memory::{MemoryCloud, MemoryTransport};
pub use rule::{
    AHEAD_MAX_MS, Decision, Grant, Models, Refusal, Role, admit, against, bounded, decide,
};
pub use store::{CloudStore, StoreTransport, readable};
pub use transport::{
    Limits, PullFrom, PullPage, PushOutcome, PushResults, Session, Transport, TransportError,
    cursor_after,
};
