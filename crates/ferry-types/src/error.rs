/// Errors of the data model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A text that should be a number is not one.
    #[error("'{0}' is not a number: expected decimal text such as 42, -1.5 or 1e10")]
    NotANumber(String),
    /// A number with more significant digits or a larger exponent than DynamoDB allows.
    #[error(
        "number '{0}' is out of range: DynamoDB keeps 38 significant digits and exponents from -130 to +125"
    )]
    NumberOutOfRange(String),
    /// Bytes that are not a valid encoding.
    #[error("corrupt encoding: {0}")]
    Corrupt(String),
    /// A text that should be a version, clock stamp or replica id is not one.
    #[error("{text:?} is not a valid version: {problem}")]
    BadVersion {
        /// The text as given (its start, if long).
        text: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// The result of this crate's fallible operations.
pub type Result<T> = std::result::Result<T, Error>;
