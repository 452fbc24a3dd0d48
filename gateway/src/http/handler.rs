//! The [`Gateway`] HTTP service: checks access and routes each path to its endpoint. Every
//! error becomes a JSON response; none reaches hyper.

use super::response::{error_response, text_response};
use super::ui::{UiSettings, is_ui_path};
use crate::auth::{Access, Auth};
use crate::config::Config;
use crate::control::Registry as QueryRegistry;
use crate::error::{BoxError, GatewayError};
use crate::limits::TenantLimits;
use crate::metrics::GatewayMetrics;
use crate::shard::ShardClient;
use crate::stack::QueryService;
use bytes::Bytes;
use flotilla_cluster::{Gossip, Membership};
use flotilla_protocol::ErrorBody;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use prometheus::Registry;
use std::sync::Arc;
use std::time::Duration;

/// Prefix of a query's own resource.
pub(super) const QUERY_PATH: &str = "/v1/query/";

/// Every response body: a fixed document or a streamed result.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What the gateway knows of the cluster, for `/readyz` and `/v1/cluster`.
pub struct Members {
    /// The shards.
    pub shards: Arc<dyn Membership>,
    /// The TaskManagers of a fixed list; with gossip the shards know them (they report to
    /// the shards) and `/v1/cluster` asks one.
    pub taskmanagers: Option<Arc<dyn Membership>>,
    /// Gossip, unless shards are a fixed list.
    pub gossip: Option<Gossip>,
}

/// The gateway's request handler; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) max_body_bytes: usize,
    pub(super) timeout: Duration,
    pub(super) queries: QueryService,
    pub(super) running: Arc<QueryRegistry>,
    pub(super) shards: Arc<dyn Membership>,
    pub(super) taskmanagers: Option<Arc<dyn Membership>>,
    pub(super) gossip: Option<Gossip>,
    /// Asks a shard for its TaskManagers (`/v1/cluster`).
    pub(super) shard_client: ShardClient,
    pub(super) metrics: GatewayMetrics,
    pub(super) registry: Registry,
    pub(super) auth: Auth,
    pub(super) limits: TenantLimits,
    pub(super) ui: UiSettings,
}

impl Gateway {
    /// Builds the handler around a query stack.
    pub fn new(
        config: &Config,
        queries: QueryService,
        running: Arc<QueryRegistry>,
        members: Members,
        metrics: GatewayMetrics,
        registry: Registry,
    ) -> anyhow::Result<Self> {
        let Members {
            shards,
            taskmanagers,
            gossip,
        } = members;
        let auth = Auth::new(&config.auth)?;
        Ok(Self {
            inner: Arc::new(Inner {
                max_body_bytes: config.http.max_body_bytes,
                timeout: Duration::from_millis(config.query.timeout_ms),
                queries,
                running,
                shards,
                taskmanagers,
                gossip,
                shard_client: ShardClient::new(
                    Duration::from_millis(config.shards.first_result_timeout_ms),
                    config.cluster.secret(),
                ),
                metrics,
                registry,
                auth,
                limits: TenantLimits::new(config),
                ui: UiSettings {
                    enabled: config.ui.enabled,
                    allow_cancel: config.ui.allow_cancel,
                    auth: config.auth.enabled,
                },
            }),
        })
    }

    /// Answers one HTTP request. Never fails: errors are JSON responses.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let auth = &self.inner.auth;
        let access = match path.as_str() {
            "/healthz" | "/readyz" => Access::Open,
            // The UI's files hold no data; what they fetch is checked as any other call.
            path if is_ui_path(path) => Access::Open,
            "/metrics" => auth.metrics_access(),
            "/v1/cluster" => auth.admin_access(),
            _ => Access::Tenant,
        };
        let caller = match auth.check(request.headers(), access) {
            Ok(caller) => caller,
            Err(error) => {
                let mut response =
                    error_response(None, &error.to_body(), error.code().http_status());
                if error.code() == flotilla_protocol::ErrorCode::Unauthorized {
                    response.headers_mut().insert(
                        http::header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"flotilla\""),
                    );
                }
                return response;
            }
        };
        match (method.clone(), path.as_str()) {
            (Method::POST, "/v1/query") => self.query(request, caller).await,
            (Method::GET, "/healthz") => text_response(StatusCode::OK, "ok\n"),
            (Method::GET, "/readyz") => self.ready(),
            (Method::GET, "/v1/cluster") => self.cluster(request.uri().query()).await,
            (Method::GET, "/metrics") => self.metrics(),
            (Method::DELETE, path) if path.starts_with(QUERY_PATH) => self.cancel(path, &caller),
            (Method::GET, path) if path.starts_with(QUERY_PATH) => self.status(path, &caller),
            (Method::GET, "/v1/queries") => self.running(&caller),
            (Method::GET, path) if is_ui_path(path) => match self.ui(path) {
                Some(response) => response,
                None => not_found(&method, path),
            },
            (_, "/v1/query" | "/healthz" | "/readyz" | "/v1/cluster" | "/metrics") => {
                error_response(
                    None,
                    &ErrorBody::new(
                        flotilla_protocol::ErrorCode::BadRequest,
                        format!("method {method} not allowed on {path}"),
                    ),
                    StatusCode::METHOD_NOT_ALLOWED,
                )
            }
            _ => not_found(&method, &path),
        }
    }
}

fn not_found(method: &Method, path: &str) -> Response<ResponseBody> {
    let error = GatewayError::NotFound {
        method: method.to_string(),
        path: path.to_string(),
    };
    error_response(None, &error.to_body(), error.code().http_status())
}
