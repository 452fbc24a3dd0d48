//! The client's errors.

use flotilla_protocol::ErrorCode;

/// Everything a query can fail with, as seen by the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gateway URL is not valid.
    #[error("invalid gateway url `{url}`: {message}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why it is invalid.
        message: String,
    },
    /// A certificate given to trust is not valid PEM.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// The gateway answered with an error.
    #[error("{code}: {message} (http {status})")]
    Server {
        /// The stable error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
        /// The HTTP status.
        status: u16,
        /// The query id, when the server assigned one.
        query_id: Option<String>,
    },
    /// The connection failed or broke, before or during the result.
    #[error("transport: {0}")]
    Transport(String),
    /// The result stream ended without its end-of-stream marker: it is incomplete.
    #[error("the result ended early: {0}")]
    Truncated(String),
    /// The result bytes are not a valid Arrow IPC stream.
    #[error("invalid arrow stream: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl Error {
    /// Returns the server's error code, when the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}
