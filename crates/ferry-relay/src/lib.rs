//! Ferry's relay (DESIGN.md 8): the server devices connect to over WebSocket. So far, the
//! device tokens it checks in the handshake; the server, its cloud stores and fan-out are
//! the relay issue's next steps.

pub mod token;

pub use token::{Claims, Secret, TokenError};
