//! The [`Client`]: one HTTP connection pool to one gateway.

use crate::error::Error;
use crate::stream::QueryStream;
use bytes::Bytes;
use flotilla_protocol::{
    ErrorCode, ErrorEnvelope, MediaType, QUERY_ID_HEADER, ROUTING_KEY_HEADER, TENANT_HEADER,
    TIMEOUT_HEADER,
};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A client of one gateway; cheap to clone, safe to share.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

/// Per-query options.
#[derive(Clone, Debug, Default)]
pub struct QueryOptions {
    /// Sent as `x-flotilla-routing-key`: queries with one key go to one shard.
    pub routing_key: Option<String>,
    /// Sent as `x-flotilla-tenant`: whose limits and pool the query runs under.
    pub tenant: Option<String>,
    /// Sent as `x-flotilla-timeout-ms`: a shorter timeout than the gateway's default.
    pub timeout_ms: Option<u64>,
    /// Sent as `x-flotilla-query-id`: the query's id (a UUID), so that it can be cancelled
    /// with [`Client::cancel`] before its first byte; the gateway picks one when absent.
    pub query_id: Option<String>,
}

impl Client {
    /// Creates a client for the gateway at `url` (`http://host:port`).
    pub fn new(url: &str) -> Result<Self, Error> {
        let base = url.trim_end_matches('/').to_string();
        let uri: http::Uri =
            base.parse()
                .map_err(|error: http::uri::InvalidUri| Error::InvalidUrl {
                    url: url.into(),
                    message: error.to_string(),
                })?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(Error::InvalidUrl {
                url: url.into(),
                message: "expected http://host:port".into(),
            });
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = HyperClient::builder(TokioExecutor::new()).build(connector);
        Ok(Self { base, http })
    }

    /// Runs `sql` and returns its result as a stream of record batches.
    pub async fn query(&self, sql: &str) -> Result<QueryStream, Error> {
        self.query_with(sql, &QueryOptions::default()).await
    }

    /// Runs `sql` with options.
    pub async fn query_with(
        &self,
        sql: &str,
        options: &QueryOptions,
    ) -> Result<QueryStream, Error> {
        let mut request = http::Request::post(format!("{}/v1/query", self.base))
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(http::header::ACCEPT, MediaType::ArrowStream.as_str());
        if let Some(key) = &options.routing_key {
            request = request.header(ROUTING_KEY_HEADER, key);
        }
        if let Some(tenant) = &options.tenant {
            request = request.header(TENANT_HEADER, tenant);
        }
        if let Some(query_id) = &options.query_id {
            request = request.header(QUERY_ID_HEADER, query_id);
        }
        if let Some(timeout_ms) = options.timeout_ms {
            request = request.header(TIMEOUT_HEADER, timeout_ms.to_string());
        }
        let response = self.send(request, Bytes::from(sql.to_string())).await?;
        let (query_id, body) = Self::check(response).await?;
        QueryStream::open(query_id, body).await
    }

    /// Cancels a running query (`DELETE /v1/query/{id}`); `Ok(false)` when it no longer runs.
    pub async fn cancel(&self, query_id: &str) -> Result<bool, Error> {
        let request = http::Request::delete(format!("{}/v1/query/{query_id}", self.base));
        let response = self.send(request, Bytes::new()).await?;
        match Self::check(response).await {
            Ok(_) => Ok(true),
            Err(error) if error.code() == Some(ErrorCode::NotFound) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn send(
        &self,
        request: http::request::Builder,
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, Error> {
        let request = request
            .body(Full::new(body))
            .map_err(|error| Error::Transport(error.to_string()))?;
        self.http
            .request(request)
            .await
            .map_err(|error| Error::Transport(format!("{error:?}")))
    }

    /// Returns the query id and body of a successful response, else its error.
    async fn check(
        response: http::Response<hyper::body::Incoming>,
    ) -> Result<(String, hyper::body::Incoming), Error> {
        let status = response.status();
        let query_id = response
            .headers()
            .get(QUERY_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        if !status.is_success() {
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| Error::Transport(error.to_string()))?
                .to_bytes();
            return Err(match serde_json::from_slice::<ErrorEnvelope>(&body) {
                Ok(envelope) => Error::Server {
                    code: envelope.error.code,
                    message: envelope.error.message,
                    status: status.as_u16(),
                    query_id,
                },
                Err(_) => Error::Server {
                    code: if status.is_server_error() {
                        ErrorCode::Internal
                    } else {
                        ErrorCode::BadRequest
                    },
                    message: String::from_utf8_lossy(&body).into_owned(),
                    status: status.as_u16(),
                    query_id,
                },
            });
        }
        Ok((query_id.unwrap_or_default(), response.into_body()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(Client::new("http://127.0.0.1:8080/").is_ok());
        assert!(matches!(
            Client::new("ftp://x"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            Client::new("not a url"),
            Err(Error::InvalidUrl { .. })
        ));
    }
}
