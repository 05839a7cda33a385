//! Errors of the DynamoDB side, and how an SDK failure maps onto the transport's errors.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use ferry_cloud::TransportError;

/// What went wrong on the DynamoDB side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A row or item that cannot be read or written as Ferry's layout says.
    #[error("{0}")]
    Item(String),
    /// The table is missing, does not match the schema, or lacks Ferry's settings.
    #[error("table {table} {reason}")]
    Table {
        /// The table's name.
        table: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A DynamoDB call failed.
    #[error("{0}")]
    Call(#[from] Failure),
    /// A bad argument (a setting out of range, an unknown model).
    #[error("{0}")]
    Argument(String),
    /// The schema refused the operation (validation, an unknown model or field).
    #[error("{0}")]
    Schema(#[from] ferry_schema::Error),
    /// The data said no: not found, or changed meanwhile.
    #[error("{message}")]
    Refused {
        /// `NotFoundError` or `ConditionalCheckFailed`, as a device's operation says it.
        code: &'static str,
        /// What, and which item.
        message: String,
    },
}

impl Error {
    /// The error's code, as the CLI prints it.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Item(_) => "ItemError",
            Error::Table { .. } => "TableError",
            Error::Call(_) => "DynamoError",
            Error::Argument(_) => "ArgumentError",
            Error::Schema(e) => e.code(),
            Error::Refused { code, .. } => code,
        }
    }
}

/// Cloud mode's own failures (`ferry_service::Service` over the table's rows).
impl From<ferry_service::Error> for Error {
    fn from(e: ferry_service::Error) -> Error {
        match e {
            ferry_service::Error::Argument(message) => Error::Argument(message),
            ferry_service::Error::Schema(e) => Error::Schema(e),
            ferry_service::Error::Refused { code, message } => Error::Refused { code, message },
            // The table's rows make no transport calls; a transport's failure is a call's.
            ferry_service::Error::Transport(e) => Error::Call(Failure {
                kind: FailureKind::Transient,
                operation: "transport",
                code: "TransportError".into(),
                message: e.to_string(),
            }),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed DynamoDB call: what kind of failure, DynamoDB's code and message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {code}: {message}")]
pub struct Failure {
    /// The kind, which decides whether to retry.
    pub kind: FailureKind,
    /// The SDK operation.
    pub operation: &'static str,
    /// DynamoDB's error code, or the SDK's kind of failure.
    pub code: String,
    /// The detail.
    pub message: String,
}

/// Whether a failure passes with time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The table asked to slow down: retry after a backoff.
    Throttled,
    /// Network, timeout or a server error: retry.
    Transient,
    /// The credentials were refused.
    Unauthorized,
    /// The table does not exist.
    NoTable,
    /// The request itself is wrong (validation, access to one key denied): not retried.
    Rejected,
}

impl Failure {
    /// Classifies an SDK error of `operation`.
    pub fn of<E>(operation: &'static str, error: &SdkError<E, HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (kind, code, message) = match error {
            SdkError::ServiceError(service) => {
                let inner = service.err();
                let code = inner.code().unwrap_or("Unknown").to_string();
                let message = inner.message().unwrap_or_default().to_string();
                let status = service.raw().status().as_u16();
                (kind_of_code(&code, status), code, message)
            }
            // The chain of causes reads best: "dispatch failure: io error: ...".
            other => {
                let code = match other {
                    SdkError::TimeoutError(_) => "Timeout",
                    SdkError::DispatchFailure(_) => "DispatchFailure",
                    _ => "ResponseError",
                };
                (FailureKind::Transient, code.into(), causes(other))
            }
        };
        Failure {
            kind,
            operation,
            code,
            message,
        }
    }

    /// Worth another attempt soon.
    pub fn retryable(&self) -> bool {
        matches!(self.kind, FailureKind::Throttled | FailureKind::Transient)
    }
}

/// An error and its causes, each by its `Display`, joined: "dispatch failure: io error: ...".
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// What DynamoDB's error code means for a retry. Only the codes that say the request
/// itself is wrong are final: an unknown code is retried (a change dropped by mistake is
/// lost for good; one retried by mistake only waits), and a denied request is
/// `Unauthorized`, which keeps the change pending: a policy deployed wrong for a minute
/// must not discard what devices wrote.
fn kind_of_code(code: &str, status: u16) -> FailureKind {
    match code {
        "ProvisionedThroughputExceededException"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "LimitExceededException" => FailureKind::Throttled,
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException"
        | "MissingAuthenticationTokenException"
        | "IncompleteSignatureException"
        | "AccessDeniedException" => FailureKind::Unauthorized,
        "ResourceNotFoundException" => FailureKind::NoTable,
        _ if status >= 500 => FailureKind::Transient,
        "ValidationException"
        | "SerializationException"
        | "ItemCollectionSizeLimitExceededException" => FailureKind::Rejected,
        _ => FailureKind::Transient,
    }
}

impl From<Failure> for TransportError {
    fn from(failure: Failure) -> TransportError {
        match failure.kind {
            FailureKind::Throttled => TransportError::Throttled {
                retry_after_ms: None,
            },
            FailureKind::Transient => TransportError::Unavailable(failure.to_string()),
            FailureKind::Unauthorized => TransportError::Unauthorized(failure.to_string()),
            FailureKind::NoTable | FailureKind::Rejected => {
                TransportError::Rejected(failure.to_string())
            }
        }
    }
}

impl From<Error> for TransportError {
    fn from(error: Error) -> TransportError {
        match error {
            Error::Call(failure) => failure.into(),
            other => TransportError::Rejected(other.to_string()),
        }
    }
}
