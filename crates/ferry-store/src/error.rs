/// Storage errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage engine failed (disk full, I/O error). The database may be poisoned.
    #[error("storage failure in {path}: {source}")]
    Storage {
        /// The database directory.
        path: String,
        /// What fjall reported.
        source: fjall::Error,
    },
    /// The background fsync thread could not start: `Default` durability would never fsync.
    #[error("cannot start the fsync thread of {path}: {source}")]
    Thread {
        /// The database directory.
        path: String,
        /// What the system reported.
        source: std::io::Error,
    },
    /// The outbox holds as many changes as it may: nothing is dropped, the write is refused.
    #[error(
        "the outbox is full: {limit} changes are waiting for the cloud (Config::outbox_changes_max); sync, or raise the limit, before writing more"
    )]
    OutboxFull {
        /// The bound that was reached.
        limit: usize,
    },
    /// Another process has the database open (one process at a time holds it).
    #[error("database {0} is held by another process")]
    Locked(String),
    /// An earlier storage failure (such as a failed fsync) poisoned the database.
    #[error(
        "database {0} is poisoned by an earlier storage failure: no write is accepted until it is reopened"
    )]
    Poisoned(String),
    /// Stored bytes that do not decode.
    #[error("corrupt {what} in {path}: {detail}")]
    Corrupt {
        /// The database directory.
        path: String,
        /// Which record.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Another item of the model already has this value in a unique field.
    #[error("{model}.{field} must be unique: another item already has this value")]
    Unique {
        /// The model.
        model: String,
        /// The unique field.
        field: String,
    },
    /// An item over DynamoDB's size limit.
    #[error("item {key} is {size} bytes: DynamoDB's limit is {limit} bytes")]
    TooLarge {
        /// The item's primary key.
        key: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The item has no value for a primary key attribute, or one of a type keys cannot have.
    #[error("item has no usable primary key: {0}")]
    Key(String),
}

/// The result of storage operations.
pub type Result<T> = std::result::Result<T, Error>;

impl From<ferry_journal::OutboxFull> for Error {
    fn from(full: ferry_journal::OutboxFull) -> Error {
        Error::OutboxFull { limit: full.limit }
    }
}
