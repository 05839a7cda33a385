//! The crate's single error type.

/// Everything that can go wrong while loading a schema or preparing an item.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The schema cannot be honoured. `at` names the place: "models.User.fields.email.validate".
    #[error("schema error at {at}: {message}")]
    Schema {
        /// Dotted path of the offending property in the schema document.
        at: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// An item failed validation: every failing field with its reason.
    #[error("{}", validation_message(model, errors))]
    Validation {
        /// The model whose item failed.
        model: String,
        /// Every failing field, in schema order.
        errors: Vec<FieldError>,
    },
    /// A bad call argument (unknown model, unknown index, key not resolvable, bad sort condition...).
    #[error("{0}")]
    Argument(String),
    /// A `where` / `set` expression that does not parse or cannot be evaluated.
    #[error("bad expression {text:?} at {position}: {message}")]
    Expression {
        /// The expression text.
        text: String,
        /// Byte offset of the problem in `text`.
        position: usize,
        /// What is wrong.
        message: String,
    },
}

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The property name.
    pub field: String,
    /// Why it failed, lowercase.
    pub reason: String,
}

impl Error {
    /// The DynamoDB-style error code: "SchemaError", "ValidationError", "ArgumentError"
    /// or "ExpressionError".
    pub fn code(&self) -> &'static str {
        match self {
            Error::Schema { .. } => "SchemaError",
            Error::Validation { .. } => "ValidationError",
            Error::Argument(_) => "ArgumentError",
            Error::Expression { .. } => "ExpressionError",
        }
    }

    /// Builds a schema error at `at`.
    pub(crate) fn schema(at: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Schema {
            at: at.into(),
            message: message.into(),
        }
    }
}

/// How a failed validation reads, wherever the item was written: the model, then each
/// failing field and why.
pub fn validation_message(model: &str, errors: &[FieldError]) -> String {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.reason))
        .collect();
    format!("{model}: {}", parts.join("; "))
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
