//! ferry-schema's tests through its public API: loading, preparation, queries and reads.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on unexpected errors by design"
)]

mod fixture;
mod load;
mod put;
mod query;
mod read;
mod update;
