/// Errors of the change records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Stored bytes that do not decode as the record they should hold.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// The record being decoded (`change`, `outbox entry`, ...).
        what: &'static str,
        /// What is wrong with the bytes.
        detail: String,
    },
}

/// The result of this crate's fallible operations.
pub type Result<T> = std::result::Result<T, Error>;
