//! Errors with codes users can branch on.

use ferry_schema::{FieldError, validation_message};

/// What a database operation can fail with. [`Error::code`] gives OneTable's code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The item is not valid for its model: every failing field with its reason.
    #[error("{}", validation_message(model, errors))]
    Validation {
        /// The model.
        model: String,
        /// Each failing field and why.
        errors: Vec<FieldError>,
    },
    /// The item to update or check does not exist.
    #[error("{model} {key} does not exist")]
    NotFound {
        /// The model.
        model: String,
        /// The item's key.
        key: String,
    },
    /// A get that should match one item matched several.
    #[error("{model}: get matched {count} items; give the full key or use find")]
    NonUnique {
        /// The model.
        model: String,
        /// How many matched (at least).
        count: usize,
    },
    /// Another item already has this value in a unique field.
    #[error("{model}.{field} must be unique: another item already has this value")]
    Unique {
        /// The model.
        model: String,
        /// The unique field.
        field: String,
    },
    /// A write's condition (`exists`, `where`, or create's "must not exist") is false.
    #[error("{model} {key}: {reason}")]
    ConditionalCheckFailed {
        /// The model.
        model: String,
        /// The item's key.
        key: String,
        /// Which condition failed.
        reason: String,
    },
    /// A transaction was not applied because one of its writes failed.
    #[error("transaction canceled: write {index} failed: {reason}")]
    TransactionCanceled {
        /// The position of the failing write in the transaction.
        index: usize,
        /// Why it failed.
        reason: Box<Error>,
    },
    /// The model's `control` forbids this operation on the device.
    #[error("{model}: {reason}")]
    Control {
        /// The model.
        model: String,
        /// What the control section says.
        reason: String,
    },
    /// `Db::sync` did not see everything acknowledged in time.
    #[error(
        "sync timed out with {pending} changes still pending: the cloud is unreachable or slow; they stay queued and are retried"
    )]
    SyncTimeout {
        /// Changes still waiting for an acknowledgement.
        pending: usize,
    },
    /// `Db::sync` saw the cloud refuse changes for good: each key, with why. They left the
    /// outbox for the quarantine (`Db::quarantine`).
    #[error("the cloud refused {}: {}", plural(refused.len()), refused.iter().map(|(key, why)| format!("{key} ({why})")).collect::<Vec<_>>().join("; "))]
    SyncRefused {
        /// Each refused key and the cloud's reason.
        refused: Vec<(String, String)>,
    },
    /// A bad argument: unknown model or index, a key that cannot be resolved, a bad cursor.
    #[error("{0}")]
    Argument(String),
    /// The schema cannot be honoured, or an expression is malformed.
    #[error(transparent)]
    Schema(ferry_schema::Error),
    /// Storage failed (I/O, corruption, a poisoned database).
    #[error(transparent)]
    Storage(ferry_store::Error),
    /// The operating system refused what sync needs (a thread, a runtime).
    #[error("{what}: {source}")]
    System {
        /// What could not be done.
        what: String,
        /// What the system reported.
        source: std::io::Error,
    },
}

/// How a caller (such as the CLI's exit status) should treat an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The data said no: not found, a failed condition, a unique violation, many matches.
    Refused,
    /// The input is invalid: usage, schema, validation, a forbidden write, an oversize item.
    Invalid,
    /// Anything else: storage, the operating system, a sync that timed out.
    Failed,
}

impl Error {
    /// The OneTable-style code: `ValidationError`, `NotFoundError`, `NonUniqueError`,
    /// `UniqueError`, `ConditionalCheckFailed`, `TransactionCanceled`, `ControlError`,
    /// `ArgumentError`, `SchemaError`, `ExpressionError`, `SyncTimeout`, `SyncRefused`, `OutboxFull`,
    /// `StorageError`, `SystemError`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Validation { .. } => "ValidationError",
            Error::NotFound { .. } => "NotFoundError",
            Error::NonUnique { .. } => "NonUniqueError",
            Error::Unique { .. } => "UniqueError",
            Error::ConditionalCheckFailed { .. } => "ConditionalCheckFailed",
            Error::TransactionCanceled { .. } => "TransactionCanceled",
            Error::Control { .. } => "ControlError",
            Error::Argument(_) => "ArgumentError",
            Error::SyncTimeout { .. } => "SyncTimeout",
            Error::SyncRefused { .. } => "SyncRefused",
            Error::Schema(e) => e.code(),
            Error::Storage(ferry_store::Error::TooLarge { .. }) => "ValidationError",
            Error::Storage(ferry_store::Error::OutboxFull { .. }) => "OutboxFull",
            Error::Storage(_) => "StorageError",
            Error::System { .. } => "SystemError",
        }
    }

    /// Whether opening failed because another process holds the database.
    pub fn is_locked(&self) -> bool {
        matches!(self, Error::Storage(ferry_store::Error::Locked(_)))
    }

    /// Whether the data refused, the input was invalid, or something failed.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. }
            | Error::NonUnique { .. }
            | Error::Unique { .. }
            | Error::ConditionalCheckFailed { .. }
            | Error::SyncRefused { .. } => ErrorKind::Refused,
            Error::TransactionCanceled { reason, .. } => reason.kind(),
            Error::Validation { .. }
            | Error::Control { .. }
            | Error::Argument(_)
            | Error::Schema(_) => ErrorKind::Invalid,
            Error::Storage(ferry_store::Error::TooLarge { .. } | ferry_store::Error::Key(_)) => {
                ErrorKind::Invalid
            }
            Error::Storage(_) | Error::System { .. } | Error::SyncTimeout { .. } => {
                ErrorKind::Failed
            }
        }
    }
}

fn plural(changes: usize) -> String {
    match changes {
        1 => "1 change".into(),
        n => format!("{n} changes"),
    }
}

impl From<ferry_schema::Error> for Error {
    fn from(e: ferry_schema::Error) -> Error {
        match e {
            ferry_schema::Error::Validation { model, errors } => {
                Error::Validation { model, errors }
            }
            ferry_schema::Error::Argument(message) => Error::Argument(message),
            other => Error::Schema(other),
        }
    }
}

impl Error {
    /// What `store` holds under `what` does not decode: the database is damaged, not the
    /// caller's input.
    pub(crate) fn corrupt(store: &ferry_store::Store, what: &str, detail: String) -> Error {
        Error::Storage(ferry_store::Error::Corrupt {
            path: store.path().display().to_string(),
            what: what.to_string(),
            detail,
        })
    }
}

impl From<ferry_store::Error> for Error {
    fn from(e: ferry_store::Error) -> Error {
        match e {
            ferry_store::Error::Unique { model, field } => Error::Unique { model, field },
            other => Error::Storage(other),
        }
    }
}

/// The result of database operations.
pub type Result<T> = std::result::Result<T, Error>;
