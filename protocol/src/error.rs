//! Stable error codes of the public API and their HTTP and gRPC forms.

use crate::QueryId;
use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code. The text form (`as_str`) is part of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed: empty or non-UTF-8 body, bad JSON, bad header.
    BadRequest,
    /// The SQL text does not parse.
    SqlSyntax,
    /// The SQL parses but cannot be planned: unknown table or column, type error.
    SqlPlanning,
    /// The statement is not a read-only query (DDL, DML, `SET`, ...).
    NotAllowed,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// The `Content-Type` of the request is not SQL text or JSON.
    UnsupportedMediaType,
    /// None of the formats in `Accept` can be produced.
    NotAcceptable,
    /// The path or method does not exist.
    NotFound,
    /// No valid bearer token (authentication is on).
    Unauthorized,
    /// No shard or TaskManager could take the query.
    Unavailable,
    /// Every TaskManager slot the query could use stayed taken for the shard's queue wait.
    ClusterBusy,
    /// The tenant's concurrent queries and its queue are full, or it waited too long.
    TenantQueueFull,
    /// The query ran out of time.
    #[serde(rename = "query_timeout")]
    Timeout,
    /// The query was cancelled.
    Cancelled,
    /// The query needs more memory than its TaskManager may give it.
    ResourcesExhausted,
    /// The result has more rows or bytes than the tenant's limit allows.
    ResultTooLarge,
    /// A result ticket is unknown or already used.
    TicketNotFound,
    /// The statement ran while two different members failed, one after the other: it is taken
    /// for a query of death and refused for a while (`routing.quarantine_ms`), without being
    /// run again, so that it cannot take down the rest of the cluster.
    Quarantined,
    /// The query's own expressions failed on its data while it ran: division by zero, an
    /// invalid cast, an overflow (SQLSTATE class 22). The client's fault, not the system's.
    DataException,
    /// The query failed while it ran, not because of its data (a fault of the system).
    #[serde(rename = "execution_error")]
    Execution,
    /// A bug or an unexpected state in Flotilla itself.
    Internal,
}

impl ErrorCode {
    /// Returns the code's stable text form, as sent in error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::SqlSyntax => "sql_syntax",
            Self::SqlPlanning => "sql_planning",
            Self::NotAllowed => "not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::NotAcceptable => "not_acceptable",
            Self::NotFound => "not_found",
            Self::Unauthorized => "unauthorized",
            Self::Unavailable => "unavailable",
            Self::ClusterBusy => "cluster_busy",
            Self::TenantQueueFull => "tenant_queue_full",
            Self::Timeout => "query_timeout",
            Self::Cancelled => "cancelled",
            Self::ResourcesExhausted => "resources_exhausted",
            Self::ResultTooLarge => "result_too_large",
            Self::TicketNotFound => "ticket_not_found",
            Self::Quarantined => "quarantined",
            Self::DataException => "data_exception",
            Self::Execution => "execution_error",
            Self::Internal => "internal",
        }
    }

    /// Parses the stable text form.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == text)
    }

    /// Every code.
    pub const ALL: [ErrorCode; 21] = [
        Self::BadRequest,
        Self::SqlSyntax,
        Self::SqlPlanning,
        Self::NotAllowed,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::NotAcceptable,
        Self::NotFound,
        Self::Unauthorized,
        Self::Unavailable,
        Self::ClusterBusy,
        Self::TenantQueueFull,
        Self::Timeout,
        Self::Cancelled,
        Self::ResourcesExhausted,
        Self::ResultTooLarge,
        Self::TicketNotFound,
        Self::Quarantined,
        Self::DataException,
        Self::Execution,
        Self::Internal,
    ];

    /// Returns the HTTP status the gateway answers with.
    pub fn http_status(self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::BadRequest | Self::SqlSyntax | Self::SqlPlanning => StatusCode::BAD_REQUEST,
            Self::NotAllowed => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Self::NotFound | Self::TicketNotFound => StatusCode::NOT_FOUND,
            Self::Unavailable | Self::ClusterBusy => StatusCode::SERVICE_UNAVAILABLE,
            Self::TenantQueueFull => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Self::ResourcesExhausted => StatusCode::INSUFFICIENT_STORAGE,
            // The request is valid, but what it asks for is over a limit the client can stay
            // under (a `LIMIT`, fewer columns): not a server fault, and not worth a retry.
            // Likewise a query whose expressions fail on the data (division by zero): the
            // same statement fails the same way again, and no server-error alert should fire.
            // A statement quarantined as a query of death: sending it again fails again until
            // its quarantine ends.
            Self::ResultTooLarge | Self::DataException | Self::Quarantined => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::Execution | Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Says whether another shard may succeed where this error came from: the query never ran,
    /// so running it elsewhere is safe and may work.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Unavailable)
    }

    /// Says whether the client should come back later: the answer carries `Retry-After`.
    pub fn is_backpressure(self) -> bool {
        matches!(self, Self::ClusterBusy | Self::TenantQueueFull)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The body of every error response: `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// The error itself.
    pub error: ErrorBody,
}

/// One error: a stable code, a human message and the query it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The stable code.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
    /// The query the error belongs to, when one was assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_id: Option<QueryId>,
}

impl ErrorBody {
    /// Builds an error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            query_id: None,
        }
    }

    /// Attaches the query id.
    pub fn with_query_id(mut self, query_id: QueryId) -> Self {
        self.query_id = Some(query_id);
        self
    }

    /// Encodes the `{"error": ...}` JSON document.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&ErrorEnvelope {
            error: self.clone(),
        })
        .unwrap_or_default()
    }
}

#[cfg(feature = "grpc")]
mod grpc {
    //! The gRPC form: the code maps to a `tonic::Code`, the body travels in the status details.

    use super::{ErrorBody, ErrorCode};

    impl ErrorCode {
        /// Returns the gRPC code a shard or TaskManager answers with.
        pub fn grpc_code(self) -> tonic::Code {
            use tonic::Code;
            match self {
                Self::BadRequest | Self::SqlSyntax | Self::SqlPlanning | Self::DataException => {
                    Code::InvalidArgument
                }
                Self::NotAllowed => Code::PermissionDenied,
                Self::Unauthorized => Code::Unauthenticated,
                Self::PayloadTooLarge | Self::ResourcesExhausted | Self::ResultTooLarge => {
                    Code::ResourceExhausted
                }
                Self::UnsupportedMediaType | Self::NotAcceptable => Code::InvalidArgument,
                Self::NotFound | Self::TicketNotFound => Code::NotFound,
                Self::Unavailable => Code::Unavailable,
                Self::ClusterBusy | Self::TenantQueueFull => Code::ResourceExhausted,
                Self::Timeout => Code::DeadlineExceeded,
                Self::Cancelled => Code::Cancelled,
                Self::Quarantined => Code::FailedPrecondition,
                Self::Execution => Code::Aborted,
                Self::Internal => Code::Internal,
            }
        }

        /// Returns the code for a status that carries no Flotilla details (a transport failure
        /// or a peer that is not Flotilla).
        pub fn from_grpc_code(code: tonic::Code) -> Self {
            use tonic::Code;
            match code {
                Code::Unavailable => Self::Unavailable,
                Code::DeadlineExceeded => Self::Timeout,
                Code::Cancelled => Self::Cancelled,
                Code::NotFound => Self::NotFound,
                Code::ResourceExhausted => Self::ResourcesExhausted,
                Code::InvalidArgument => Self::BadRequest,
                Code::PermissionDenied | Code::Unauthenticated => Self::NotAllowed,
                Code::Aborted => Self::Execution,
                _ => Self::Internal,
            }
        }
    }

    /// Longest error message a status carries, in bytes. Status messages and details travel
    /// in HTTP/2 headers, which peers cap (16 KiB by default): a message quoting a huge SQL
    /// text would otherwise break the connection instead of reporting the error.
    const MAX_STATUS_MESSAGE: usize = 2048;

    /// Cuts `message` to [`MAX_STATUS_MESSAGE`] bytes (on a character boundary), saying so.
    fn truncate(message: &mut String) {
        if message.len() > MAX_STATUS_MESSAGE {
            let mut end = MAX_STATUS_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("… (truncated)");
        }
    }

    impl From<ErrorBody> for tonic::Status {
        fn from(mut body: ErrorBody) -> Self {
            truncate(&mut body.message);
            let details = serde_json::to_vec(&body).unwrap_or_default();
            tonic::Status::with_details(body.code.grpc_code(), body.message, details.into())
        }
    }

    impl ErrorBody {
        /// The status a public gRPC front door (Flight SQL) answers with: the gRPC code, and the
        /// stable code leading the message (`sql_syntax: ...`), so that clients which show only
        /// the message can tell a busy cluster from bad SQL. No details: gRPC clients read the
        /// details as a `google.rpc.Status`, which this JSON is not.
        pub fn to_client_status(&self) -> tonic::Status {
            let mut message = format!("{}: {}", self.code, self.message);
            if let Some(query_id) = self.query_id {
                message.push_str(&format!(" (query {query_id})"));
            }
            truncate(&mut message);
            tonic::Status::new(self.code.grpc_code(), message)
        }
    }

    impl From<&tonic::Status> for ErrorBody {
        fn from(status: &tonic::Status) -> Self {
            serde_json::from_slice::<ErrorBody>(status.details()).unwrap_or_else(|_| {
                ErrorBody::new(ErrorCode::from_grpc_code(status.code()), status.message())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_text() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(
                json,
                format!("\"{}\"", code.as_str()),
                "serde and as_str agree"
            );
        }
    }

    #[test]
    fn envelope_has_the_documented_shape() {
        let body = ErrorBody::new(ErrorCode::SqlSyntax, "bad").with_query_id(QueryId::new());
        let value: serde_json::Value = serde_json::from_slice(&body.to_json()).unwrap();
        assert_eq!(value["error"]["code"], "sql_syntax");
        assert_eq!(value["error"]["message"], "bad");
        assert!(value["error"]["query_id"].is_string());
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn status_details_carry_the_body() {
        let body = ErrorBody::new(ErrorCode::SqlPlanning, "no such table: x");
        let status = tonic::Status::from(body.clone());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(ErrorBody::from(&status), body);
        let foreign = tonic::Status::unavailable("connection refused");
        assert_eq!(ErrorBody::from(&foreign).code, ErrorCode::Unavailable);
        let huge = ErrorBody::new(ErrorCode::SqlPlanning, "é".repeat(30_000));
        let status = tonic::Status::from(huge);
        assert!(status.message().len() < 2100, "{}", status.message().len());
        assert!(ErrorBody::from(&status).message.ends_with("(truncated)"));
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn client_statuses_lead_with_the_code_and_carry_no_details() {
        let body = ErrorBody::new(ErrorCode::DataException, "Divide by zero error");
        let status = body.to_client_status();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "data_exception: Divide by zero error");
        assert!(status.details().is_empty());
        assert_eq!(ErrorCode::DataException.http_status().as_u16(), 422);
        let busy = ErrorBody::new(ErrorCode::ClusterBusy, "x").to_client_status();
        assert!(busy.message().starts_with("cluster_busy: "));
        assert_eq!(busy.code(), tonic::Code::ResourceExhausted);
    }
}
