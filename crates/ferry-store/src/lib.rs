//! Ferry's storage: items under their full primary key, every secondary index, TTL
//! bookkeeping, unique constraints and atomic multi-key writes, on fjall.
//!
//! Architecture invariant: this is the only crate that names `fjall`. It stores and finds
//! items by a plain [`StoreLayout`] (indexes, the kind attribute, per kind its expiry,
//! memory-only flag and unique claims); it knows neither OneTable's schema nor its
//! operations (create, update, conditions): `ferry-db` builds those on [`Tx`]. Every
//! logical write is one fjall batch, replication records (outbox, tombstones, conflicts,
//! sync state) included.

mod durability;
mod error;
mod journal;
mod layout;
mod outbox_writes;
mod query;
mod store;
mod store_layout;
mod tx;

pub use error::{Error, Result};
pub use ferry_types::Durability;
pub use journal::Acked;
pub use query::{Query, Row};
pub use store::{CommitHook, FsyncHook, OUTBOX_CHANGES_MAX, Options, Record, Store};
pub use store_layout::{Claims, Kind, StoreLayout};
pub use tx::{ItemChange, Tx};

#[cfg(test)]
mod tests;
