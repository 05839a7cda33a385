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
mod metrics;
mod queue;
mod server;
pub mod store;
pub mod token;

pub use server::{Relay, RelayConfig, Socket, TlsError, serve, tls_config};
pub use store::CloudStore;
#[cfg(feature = "dynamo")]
pub use store::dynamo::DynamoStore;
pub use store::embedded::EmbeddedStore;
pub use token::{Claims, Secret, TokenError};

/// A wall clock in epoch milliseconds: the relay's time for sessions, stamps and token
/// expiries. Wall time steps; the relay never lets it move a stamp back (the store's
/// sequencer is a hybrid logical clock) and times sessions on the monotonic clock.
pub type Clock = std::sync::Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system's wall clock as a [`Clock`].
pub fn wall_clock() -> Clock {
    std::sync::Arc::new(wall_ms)
}

/// The wall clock, in epoch milliseconds.
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
