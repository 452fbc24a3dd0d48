//! Errors of the cluster agent and their stable codes.

use datafusion::error::DataFusionError;
use flotilla_protocol::{ErrorBody, ErrorCode};

/// Everything a shard or TaskManager can answer a request with, other than success.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request itself is malformed (bad command, bad ticket bytes).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The SQL does not parse.
    #[error("{0}")]
    SqlSyntax(String),
    /// The SQL names something that does not exist or does not type-check.
    #[error("{0}")]
    SqlPlanning(String),
    /// The statement is not a read-only query.
    #[error("only read-only queries are allowed, got {0}")]
    NotAllowed(String),
    /// The query calls a table function that may read files.
    #[error(
        "table function `{0}` is not allowed: queries read catalog tables only (allowed table functions: generate_series, range)"
    )]
    TableFunction(String),
    /// No TaskManager could take the query.
    #[error("no taskmanager available: {0}")]
    NoTaskManager(String),
    /// A table the statement reads cannot be read now (its store does not answer); the shard
    /// tries it again in the background.
    #[error("{0}; the shard tries it again every few seconds")]
    TableUnavailable(String),
    /// No free slots: a TaskManager refused a lease, or a query waited its maximum for one.
    #[error("cluster busy: {0}")]
    ClusterBusy(String),
    /// A task or result arrived without a valid slot lease.
    #[error("no valid slot lease: {0}")]
    NoLease(String),
    /// An answer is too large for the way it travels.
    #[error("{0}")]
    ResultTooLarge(String),
    /// A result ticket is unknown, expired or already fetched.
    #[error("ticket {0} is unknown, expired or already fetched")]
    TicketNotFound(String),
    /// DataFusion failed while planning or running.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// A bug or unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AgentError {
    /// Rebuilds an error received from a TaskManager so that it keeps its code.
    pub(crate) fn from_body(body: flotilla_protocol::ErrorBody) -> Self {
        match body.code {
            ErrorCode::SqlSyntax => Self::SqlSyntax(body.message),
            ErrorCode::SqlPlanning => Self::SqlPlanning(body.message),
            ErrorCode::BadRequest => Self::BadRequest(body.message),
            ErrorCode::Unavailable => Self::NoTaskManager(body.message),
            ErrorCode::ClusterBusy => Self::ClusterBusy(body.message),
            ErrorCode::Internal => Self::Internal(
                body.message
                    .strip_prefix("internal error: ")
                    .unwrap_or(&body.message)
                    .to_string(),
            ),
            _ => Self::Internal(format!("{}: {}", body.code, body.message)),
        }
    }

    /// Returns the stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::SqlSyntax(_) => ErrorCode::SqlSyntax,
            Self::SqlPlanning(_) => ErrorCode::SqlPlanning,
            Self::NotAllowed(_) | Self::TableFunction(_) => ErrorCode::NotAllowed,
            Self::NoTaskManager(_) | Self::TableUnavailable(_) => ErrorCode::Unavailable,
            Self::ClusterBusy(_) => ErrorCode::ClusterBusy,
            Self::NoLease(_) => ErrorCode::NotAllowed,
            Self::TicketNotFound(_) => ErrorCode::TicketNotFound,
            Self::ResultTooLarge(_) => ErrorCode::ResultTooLarge,
            Self::DataFusion(error) if is_peer_failure(error) => ErrorCode::Unavailable,
            Self::DataFusion(error) => datafusion_code(error),
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Classifies an error raised while turning SQL into a plan: what is not a resource or
    /// internal failure is the user's SQL.
    pub fn from_planning(error: DataFusionError) -> Self {
        match datafusion_code(&error) {
            ErrorCode::SqlSyntax => Self::SqlSyntax(root_message(&error)),
            ErrorCode::SqlPlanning | ErrorCode::Execution => {
                Self::SqlPlanning(root_message(&error))
            }
            // DataFusion gave up on this statement (an optimizer rule met a type mix it does
            // not handle): the statement cannot be planned, which is the client's answer; the
            // whole chain says where.
            ErrorCode::Internal => Self::SqlPlanning(format!(
                "DataFusion cannot plan this statement: {}",
                error
                    .to_string()
                    .split("\n\nbacktrace")
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .replace('\n', " ")
            )),
            _ => Self::DataFusion(error),
        }
    }

    /// Returns the error as the body sent over the wire.
    pub fn to_body(&self) -> ErrorBody {
        let message = match self {
            Self::DataFusion(error) => root_message(error),
            other => other.to_string(),
        };
        ErrorBody::new(self.code(), message)
    }
}

impl From<AgentError> for tonic::Status {
    fn from(error: AgentError) -> Self {
        error.to_body().into()
    }
}

/// Maps a DataFusion error (looking through context and sharing wrappers) to a code.
pub fn datafusion_code(error: &DataFusionError) -> ErrorCode {
    if let Some(body) = peer_body(error) {
        return body.code;
    }
    match root(error) {
        DataFusionError::SQL(..) => ErrorCode::SqlSyntax,
        DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => ErrorCode::SqlPlanning,
        DataFusionError::ResourcesExhausted(_) => ErrorCode::ResourcesExhausted,
        DataFusionError::ObjectStore(error)
            if matches!(**error, object_store::Error::PermissionDenied { .. }) =>
        {
            ErrorCode::NotAllowed
        }
        DataFusionError::Internal(_) => ErrorCode::Internal,
        DataFusionError::ArrowError(arrow, _) => arrow_code(arrow),
        _ => ErrorCode::Execution,
    }
}

/// Maps an Arrow error: the kernels' failures on the query's own data (SQLSTATE class 22) are
/// the client's; a DataFusion error carried inside is classified as itself.
fn arrow_code(error: &datafusion::arrow::error::ArrowError) -> ErrorCode {
    use datafusion::arrow::error::ArrowError;
    match error {
        ArrowError::DivideByZero
        | ArrowError::CastError(_)
        | ArrowError::ArithmeticOverflow(_)
        | ArrowError::ParseError(_) => ErrorCode::DataException,
        ArrowError::ExternalError(inner) => inner
            .downcast_ref::<DataFusionError>()
            .map_or(ErrorCode::Execution, datafusion_code),
        _ => ErrorCode::Execution,
    }
}

/// The foreign error a DataFusion error carries (external, or inside an Arrow error), looking
/// through DataFusion errors nested in it: a peer's gRPC status, a transport or I/O error.
fn carried_error(error: &DataFusionError) -> Option<&(dyn std::error::Error + 'static)> {
    let external: &(dyn std::error::Error + 'static) = match root(error) {
        DataFusionError::External(inner) => inner.as_ref(),
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            datafusion::arrow::error::ArrowError::ExternalError(inner) => inner.as_ref(),
            _ => return None,
        },
        _ => return None,
    };
    match external.downcast_ref::<DataFusionError>() {
        Some(inner) => carried_error(inner),
        None => Some(external),
    }
}

/// The error of a query a peer TaskManager answered with, carried as a gRPC status inside
/// DataFusion's error (a stage its memory guard stopped): Flotilla's body in the details.
fn peer_body(error: &DataFusionError) -> Option<ErrorBody> {
    let status = carried_error(error)?.downcast_ref::<tonic::Status>()?;
    serde_json::from_slice::<ErrorBody>(status.details()).ok()
}

/// Says whether a DataFusion error is another TaskManager failing at the transport level (a
/// bare gRPC status, as datafusion-distributed passes those on) rather than the query's own
/// error: the query never produced a result and may be run again.
pub fn is_peer_failure(error: &DataFusionError) -> bool {
    let Some(external) = carried_error(error) else {
        return false;
    };
    if let Some(status) = external.downcast_ref::<tonic::Status>() {
        return is_transport_status(status);
    }
    is_relayed_transport_failure(&external.to_string())
        || external.downcast_ref::<tonic::transport::Error>().is_some()
        || external.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        })
}

/// Says whether an error's text is a gRPC status that a connection failure made, relayed by
/// another TaskManager: datafusion-distributed passes a worker's foreign errors on as text
/// only, so a stage whose input TaskManager was unreachable arrives as `code: '…', message:
/// …, source: tonic::transport::Error(…)`. A status with a transport error as its source is
/// always made locally from a failed connection, never decoded from a peer's answer.
fn is_relayed_transport_failure(text: &str) -> bool {
    text.starts_with("code: '")
        && [
            ", source: tonic::transport::Error(",
            ", source: hyper::Error(",
        ]
        .iter()
        .any(|source| text.contains(source))
}

/// Says whether a gRPC status is the connection failing rather than the peer's answer: a
/// Flotilla peer's own errors carry their body in the details, while a peer that died or reset
/// the stream leaves a bare status of one of these codes.
pub(crate) fn is_transport_status(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
            | tonic::Code::Internal
    ) && status.details().is_empty()
}

fn root(error: &DataFusionError) -> &DataFusionError {
    match error {
        DataFusionError::Context(_, inner) => root(inner),
        DataFusionError::Shared(inner) => root(inner),
        DataFusionError::Diagnostic(_, inner) => root(inner),
        other => other,
    }
}

/// Returns the innermost message, without DataFusion's "Error during planning:" style prefixes
/// repeated by every wrapper, and without backtraces.
pub fn root_message(error: &DataFusionError) -> String {
    if let Some(body) = peer_body(error) {
        return body.message;
    }
    let message = root(error).to_string();
    message
        .split("\n\nbacktrace")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_look_through_wrappers() {
        let inner = DataFusionError::Plan("table 'x' not found".into());
        let wrapped = DataFusionError::Context("while planning".into(), Box::new(inner));
        assert_eq!(datafusion_code(&wrapped), ErrorCode::SqlPlanning);
        let shared = DataFusionError::Shared(std::sync::Arc::new(
            DataFusionError::ResourcesExhausted("pool".into()),
        ));
        assert_eq!(datafusion_code(&shared), ErrorCode::ResourcesExhausted);
        assert!(root_message(&wrapped).contains("table 'x' not found"));
    }

    #[test]
    fn a_lost_worker_is_unavailable_but_a_worker_sql_error_is_not() {
        let lost = DataFusionError::External(Box::new(tonic::Status::unavailable(
            "tcp connect error: Connection refused",
        )));
        let wrapped = DataFusionError::Context("stage 2".into(), Box::new(lost));
        assert_eq!(
            AgentError::DataFusion(wrapped).code(),
            ErrorCode::Unavailable
        );
        // A worker's lost input, relayed by datafusion-distributed as text only.
        let relayed = DataFusionError::External(Box::new(std::io::Error::other(
            "code: 'The service is currently unavailable', message: \"tcp connect error\", \
             source: tonic::transport::Error(Transport, ConnectError(\"tcp connect error\"))",
        )));
        assert_eq!(
            AgentError::DataFusion(relayed).code(),
            ErrorCode::Unavailable
        );
        let answered = DataFusionError::External(Box::new(std::io::Error::other(
            "code: 'Permission denied', message: \"no lease\"",
        )));
        assert_eq!(
            AgentError::DataFusion(answered).code(),
            ErrorCode::Execution
        );
        let refused =
            DataFusionError::External(Box::new(tonic::Status::permission_denied("no lease")));
        assert_eq!(AgentError::DataFusion(refused).code(), ErrorCode::Execution);
        let division = DataFusionError::ArrowError(
            Box::new(datafusion::arrow::error::ArrowError::DivideByZero),
            None,
        );
        assert_eq!(
            AgentError::DataFusion(division).code(),
            ErrorCode::DataException
        );
        let cast = DataFusionError::Context(
            "stage 1".into(),
            Box::new(DataFusionError::ArrowError(
                Box::new(datafusion::arrow::error::ArrowError::ExternalError(
                    Box::new(DataFusionError::ArrowError(
                        Box::new(datafusion::arrow::error::ArrowError::CastError(
                            "'x'".into(),
                        )),
                        None,
                    )),
                )),
                None,
            )),
        );
        assert_eq!(datafusion_code(&cast), ErrorCode::DataException);
        let io = DataFusionError::ArrowError(
            Box::new(datafusion::arrow::error::ArrowError::IoError(
                "disk".into(),
                std::io::Error::other("disk"),
            )),
            None,
        );
        assert_eq!(datafusion_code(&io), ErrorCode::Execution);
    }

    #[test]
    fn a_peer_s_flotilla_error_keeps_its_code_and_message() {
        let stopped: tonic::Status = AgentError::DataFusion(DataFusionError::ResourcesExhausted(
            "the query allocated 600 MiB".into(),
        ))
        .into();
        let wrapped = DataFusionError::Context(
            "stage 1".into(),
            Box::new(DataFusionError::External(Box::new(stopped))),
        );
        assert_eq!(datafusion_code(&wrapped), ErrorCode::ResourcesExhausted);
        assert!(!is_peer_failure(&wrapped));
        assert!(
            root_message(&wrapped).ends_with(": the query allocated 600 MiB"),
            "{}",
            root_message(&wrapped)
        );
    }

    #[test]
    fn status_carries_code_and_message() {
        let status = tonic::Status::from(AgentError::NotAllowed("CREATE TABLE".into()));
        let body = ErrorBody::from(&status);
        assert_eq!(body.code, ErrorCode::NotAllowed);
        assert!(body.message.contains("CREATE TABLE"));
    }
}
