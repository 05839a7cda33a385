//! Ferry's relay (docs/design.md section 8): the server devices connect to over WebSocket.
//!
//! - [`token`]: signed, expiring device tokens, checked in each connection's handshake.
//! - [`store`]: the [`CloudStore`] the relay writes to and reads from: the embedded store
//!   (a directory of its own, one relay, a true sequencer) or a DynamoDB table (feature
//!   `dynamo`; any number of relays).
//! - [`serve`]: the server. Per connection (`connection.rs`): the handshake, then pushes
//!   checked against the token's scopes and pulls served from the store; what lands is
//!   fanned out at once to the other devices whose scopes hold it (`hub.rs`). The listen
//!   address also serves `GET /metrics` (`metrics.rs`). Connections that have not
//!   authenticated are bounded overall and per address (`admission.rs`); a session's place
//!   is taken once its token verifies.
//!
//! Frames are `ferry-protocol`'s; the device side is `ferry-ws`.

mod admission;
mod connection;
mod http;
mod hub;
mod liveness;
mod metrics;
mod queue;
mod seats;
mod server;
pub mod store;
pub mod token;

pub use server::{Relay, RelayConfig, Socket, TlsError, serve, tls_config};
pub use store::CloudStore;
#[cfg(feature = "dynamo")]
pub use store::dynamo::DynamoStore;
pub use store::embedded::EmbeddedStore;
pub use token::{Claims, Secret, TokenError};

/// A clock in milliseconds: the relay's wall clock (epoch ms: sessions, stamps, token
/// expiries), or a monotonic one. Wall time steps; the relay never lets it move a stamp
/// back (the store's sequencer is a hybrid logical clock), and times sessions and
/// tombstone lifetimes on the monotonic clock.
pub type Clock = std::sync::Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system's wall clock as a [`Clock`].
pub fn wall_clock() -> Clock {
    std::sync::Arc::new(wall_ms)
}

/// A monotonic clock in milliseconds from the first reading in this process.
pub fn monotonic_clock() -> Clock {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    std::sync::Arc::new(move || start.elapsed().as_millis() as u64)
}

/// The wall clock, in epoch milliseconds.
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
