//! The [`Client`]: one HTTP connection pool to one gateway.

use crate::error::Error;
use crate::stream::QueryStream;
use bytes::Bytes;
use flotilla_protocol::{
    ErrorCode, ErrorEnvelope, MediaType, QUERY_ID_HEADER, ROUTING_KEY_HEADER, TENANT_HEADER,
    TIMEOUT_HEADER,
};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;

/// A client of one gateway; cheap to clone, safe to share.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `Authorization` header value, when a bearer token was given.
    authorization: Option<http::HeaderValue>,
}

/// Builds a [`Client`]: which certificates to trust for `https://`, which token to send.
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    url: String,
    roots: Vec<CertificateDer<'static>>,
    native_roots: bool,
    token: Option<String>,
}

impl ClientBuilder {
    /// Also trusts the certificates of `pem` (e.g. `local --tls`'s self-signed `cert.pem`).
    pub fn root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| Error::InvalidCertificate(error.to_string()))?;
        if certs.is_empty() {
            return Err(Error::InvalidCertificate(
                "no certificate in the PEM".into(),
            ));
        }
        self.roots.extend(certs);
        Ok(self)
    }

    /// Whether to trust the operating system's certificate authorities too (default: yes).
    pub fn native_roots(mut self, trust: bool) -> Self {
        self.native_roots = trust;
        self
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn bearer_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client, Error> {
        let url = self.url.as_str();
        let base = url.trim_end_matches('/').to_string();
        let uri: http::Uri =
            base.parse()
                .map_err(|error: http::uri::InvalidUri| Error::InvalidUrl {
                    url: url.into(),
                    message: error.to_string(),
                })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(Error::InvalidUrl {
                url: url.into(),
                message: "expected http://host:port or https://host:port".into(),
            });
        }
        let authorization = self
            .token
            .map(|token| {
                http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    Error::InvalidUrl {
                        url: url.into(),
                        message: "the bearer token is not a header value".into(),
                    }
                })
            })
            .transpose()?;
        let mut roots = rustls::RootCertStore::empty();
        if self.native_roots && uri.scheme_str() == Some("https") {
            // Unreadable system certificates are skipped; the ones given explicitly still count.
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
        for cert in self.roots {
            roots
                .add(cert)
                .map_err(|error| Error::InvalidCertificate(error.to_string()))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::Transport(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let http = HyperClient::builder(TokioExecutor::new()).build(connector);
        Ok(Client {
            base,
            http,
            authorization,
        })
    }
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
    /// Sent as `cache-control: no-cache`: a fresh answer, not one from the result cache.
    pub no_cache: bool,
}

impl Client {
    /// Creates a client for the gateway at `url` (`http://host:port`, or `https://host:port`
    /// trusting the system's certificate authorities).
    pub fn new(url: &str) -> Result<Self, Error> {
        Self::builder(url).build()
    }

    /// Starts a client for `url` with more settings: certificates to trust, a bearer token.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_string(),
            roots: Vec::new(),
            native_roots: true,
            token: None,
        }
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
        if options.no_cache {
            request = request.header(http::header::CACHE_CONTROL, "no-cache");
        }
        let response = self.send(request, Bytes::from(sql.to_string())).await?;
        let (query_id, body) = Self::check(response).await?;
        QueryStream::open(query_id, body).await
    }

    /// Asks the gateway whether it takes queries (`GET /readyz`): `Ok(())` when it does, else
    /// its `unavailable` error saying what it still waits for.
    pub async fn ready(&self) -> Result<(), Error> {
        let request = http::Request::get(format!("{}/readyz", self.base));
        let response = self.send(request, Bytes::new()).await?;
        Self::check(response).await.map(|_| ())
    }

    /// Waits until the gateway takes queries, asking every 100 ms for at most `wait`; returns
    /// the last answer's error when it is still not ready by then.
    pub async fn wait_ready(&self, wait: std::time::Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.ready().await {
                Ok(()) => return Ok(()),
                Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
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
        let request = match &self.authorization {
            Some(value) => request.header(http::header::AUTHORIZATION, value),
            None => request,
        };
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
        assert!(Client::new("https://localhost:8443").is_ok());
        assert!(matches!(
            Client::builder("https://localhost:8443").root_certificates_pem(b"not pem"),
            Err(Error::InvalidCertificate(_))
        ));
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
