//! The gateway's errors and their stable codes.

use flotilla_protocol::{ErrorBody, ErrorCode};

/// Boxed errors crossing tower layers; classified at the HTTP edge.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything a query can fail with at the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The body is over the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request's content type is not SQL text or JSON.
    #[error("unsupported content type `{0}`: send SQL as text/plain or JSON {{\"sql\": ...}}")]
    UnsupportedMediaType(String),
    /// No acceptable result format.
    #[error(
        "cannot produce any of `{0}`: use application/vnd.apache.arrow.stream, application/json, application/x-ndjson or text/csv"
    )]
    NotAcceptable(String),
    /// No route for the path.
    #[error("no such endpoint: {method} {path}")]
    NotFound {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
    /// No shard is up.
    #[error("no shard available: {0}")]
    NoShard(String),
    /// A shard failed at the transport level before answering: another may be tried.
    #[error("shard {shard} failed: {message}")]
    ShardUnavailable {
        /// The shard's address.
        shard: String,
        /// What failed.
        message: String,
    },
    /// A TaskManager failed before the first result message: the query may be re-run.
    #[error("taskmanager {taskmanager} failed before the result started: {message}")]
    TaskManagerUnavailable {
        /// The TaskManager's address.
        taskmanager: String,
        /// What failed.
        message: String,
    },
    /// The statement is quarantined as a query of death.
    #[error("{0}")]
    Quarantined(String),
    /// The tenant's concurrency limit and queue are full, or its query waited too long.
    #[error("tenant `{tenant}` is over its limits: {reason}; retry later")]
    TenantQueueFull {
        /// The tenant.
        tenant: String,
        /// Which limit.
        reason: String,
    },
    /// The query produced no first result message in time.
    #[error("no result within {0} ms")]
    Timeout(u64),
    /// The query ran past its timeout (the config default, or less if the request asked).
    #[error("the query ran longer than its timeout of {0} ms")]
    QueryTimeout(u64),
    /// The query was cancelled by `DELETE /v1/query/{id}`.
    #[error("{0}")]
    Cancelled(String),
    /// An error reported by a shard or TaskManager, with its code.
    #[error("{}", .0.message)]
    Remote(ErrorBody),
    /// No valid bearer token, and authentication is on.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this (an admin endpoint without an admin token, or a tenant
    /// header naming another tenant than the token's).
    #[error("{0}")]
    NotAllowed(String),
    /// A bug or unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// Returns the stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Self::NotAcceptable(_) => ErrorCode::NotAcceptable,
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::NoShard(_)
            | Self::ShardUnavailable { .. }
            | Self::TaskManagerUnavailable { .. } => ErrorCode::Unavailable,
            Self::Timeout(_) | Self::QueryTimeout(_) => ErrorCode::Timeout,
            Self::Cancelled(_) => ErrorCode::Cancelled,
            Self::Quarantined(_) => ErrorCode::Quarantined,
            Self::TenantQueueFull { .. } => ErrorCode::TenantQueueFull,
            Self::Remote(body) => body.code,
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::NotAllowed(_) => ErrorCode::NotAllowed,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Says whether running the query through another shard may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::ShardUnavailable { .. } | Self::TaskManagerUnavailable { .. } => true,
            Self::Remote(body) => body.code.is_retryable(),
            _ => false,
        }
    }

    /// Recovers the gateway error from a boxed error of the tower stack; anything else is a bug.
    pub fn from_boxed(error: BoxError) -> Self {
        match error.downcast::<GatewayError>() {
            Ok(gateway) => *gateway,
            Err(other) => Self::Internal(other.to_string()),
        }
    }

    /// Returns the error body sent to the client.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            Self::Remote(body) => ErrorBody::new(body.code, body.message.clone()),
            other => ErrorBody::new(other.code(), other.to_string()),
        }
    }
}
