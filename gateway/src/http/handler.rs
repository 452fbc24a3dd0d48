//! The [`Gateway`] HTTP service: routes paths, parses queries, answers errors as JSON.

use super::auth::{Access, Auth, Caller};
use super::formats;
use super::limits::TenantLimits;
use crate::config::Config;
use crate::control::{Registry as QueryRegistry, Timeline};
use crate::error::{BoxError, GatewayError};
use crate::gossip::Gossip;
use crate::membership::Membership;
use crate::metrics::GatewayMetrics;
use crate::query::QueryRequest;
use crate::stack::QueryService;
use bytes::Bytes;
use flotilla_protocol::{
    DEFAULT_POOL, DEFAULT_TENANT, ErrorBody, MediaType, QUERY_ID_HEADER, QueryId,
    ROUTING_KEY_HEADER, SHARD_HEADER, TASKMANAGER_HEADER, TENANT_HEADER, TIMEOUT_HEADER,
    TRACEPARENT_HEADER, TraceContext,
};
use futures::StreamExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use prometheus::{Encoder, Registry, TextEncoder};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use tracing::Instrument;

/// Prefix of a query's own resource.
const QUERY_PATH: &str = "/v1/query/";

/// Every response body: a fixed document or a streamed result.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What the gateway knows of the cluster, for `/readyz` and `/v1/cluster`.
pub struct Members {
    /// The shards.
    pub shards: Arc<dyn Membership>,
    /// The TaskManagers.
    pub taskmanagers: Arc<dyn Membership>,
    /// Gossip, unless shards are a fixed list.
    pub gossip: Option<Gossip>,
}

/// The gateway's request handler; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    max_body_bytes: usize,
    timeout: Duration,
    queries: QueryService,
    running: Arc<QueryRegistry>,
    shards: Arc<dyn Membership>,
    taskmanagers: Arc<dyn Membership>,
    gossip: Option<Gossip>,
    metrics: GatewayMetrics,
    registry: Registry,
    auth: Auth,
    limits: TenantLimits,
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
                metrics,
                registry,
                auth,
                limits: TenantLimits::new(config),
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
            (Method::GET, "/v1/cluster") => self.cluster(),
            (Method::GET, "/metrics") => self.metrics(),
            (Method::DELETE, path) if path.starts_with(QUERY_PATH) => self.cancel(path, &caller),
            (Method::GET, path) if path.starts_with(QUERY_PATH) => self.status(path, &caller),
            (Method::GET, "/v1/queries") => {
                let mut running = self.inner.running.list(1000);
                running.retain(|query| caller.sees(&query.tenant));
                json_response(StatusCode::OK, &serde_json::json!({"running": running}))
            }
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
            _ => {
                let error = GatewayError::NotFound {
                    method: method.to_string(),
                    path,
                };
                error_response(None, &error.to_body(), error.code().http_status())
            }
        }
    }

    async fn query<B>(&self, request: Request<B>, caller: Caller) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        // A client may name its query (to cancel it before the first byte); else a fresh id.
        let query_id = match header_text(&request, http::HeaderName::from_static(QUERY_ID_HEADER)) {
            Ok(None) => QueryId::new(),
            Ok(Some(text)) => match QueryId::parse(&text) {
                Some(query_id) => query_id,
                None => {
                    let error = GatewayError::BadRequest(format!(
                        "{QUERY_ID_HEADER} must be a UUID, got `{text}`"
                    ));
                    return error_response(None, &error.to_body(), error.code().http_status());
                }
            },
            Err(error) => {
                return error_response(None, &error.to_body(), error.code().http_status());
            }
        };
        // A client's W3C trace goes on through the gateway; without one, a trace starts here.
        let trace = request
            .headers()
            .get(TRACEPARENT_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(TraceContext::parse)
            .map_or_else(TraceContext::root, |parent| parent.child());
        let timeline = Arc::new(Timeline::new(query_id, trace));
        let span = tracing::info_span!("query", query_id = %query_id, trace_id = %trace.trace_id());
        let result = self
            .run_query(Arc::clone(&timeline), request, caller)
            .instrument(span.clone())
            .await;
        let mut response = match result {
            Ok(response) => response,
            Err(error) => {
                let code = error.code();
                if timeline.tenant().is_empty() {
                    // Refused while its request was read: never registered, remembered here.
                    self.inner.running.remember(Arc::clone(&timeline));
                }
                let message = error.to_string();
                record_end(
                    &self.inner.metrics,
                    &timeline,
                    code.as_str(),
                    Some(&message),
                    &span,
                );
                error_response(Some(query_id), &error.to_body(), code.http_status())
            }
        };
        insert_header(response.headers_mut(), TRACEPARENT_HEADER, &trace.header());
        response
    }

    async fn run_query<B>(
        &self,
        timeline: Arc<Timeline>,
        request: Request<B>,
        caller: Caller,
    ) -> Result<Response<ResponseBody>, GatewayError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let accept = header_text(&request, http::header::ACCEPT)?;
        let media = MediaType::negotiate(accept.as_deref())
            .ok_or_else(|| GatewayError::NotAcceptable(accept.clone().unwrap_or_default()))?;
        let content_type = header_text(&request, CONTENT_TYPE)?;
        let routing_key = header_text(&request, http::HeaderName::from_static(ROUTING_KEY_HEADER))?
            .filter(|key| !key.is_empty());
        let tenant_header = header_text(&request, http::HeaderName::from_static(TENANT_HEADER))?;
        let tenant = match caller.tenant {
            // A token names its tenant; the header may only repeat it.
            Some(own) => match tenant_header.as_deref().map(str::trim) {
                Some(asked) if !asked.is_empty() && asked != own.to_ascii_lowercase() => {
                    return Err(GatewayError::NotAllowed(format!(
                        "the token is for tenant `{own}`, not `{asked}`"
                    )));
                }
                _ => own,
            },
            None => parse_tenant(tenant_header.as_deref())?,
        };
        let timeout_header = parse_timeout(
            header_text(&request, http::HeaderName::from_static(TIMEOUT_HEADER))?.as_deref(),
        )?;
        let declared_length =
            header_text(&request, CONTENT_LENGTH)?.and_then(|length| length.parse::<usize>().ok());
        let limit = self.inner.max_body_bytes;
        let is_json = match content_type.as_deref().map(essence) {
            None | Some("text/plain" | "application/sql" | "application/x-www-form-urlencoded") => {
                false
            }
            Some("application/json") => true,
            Some(other) => {
                drain(request.into_body(), limit).await;
                return Err(GatewayError::UnsupportedMediaType(other.to_string()));
            }
        };
        if declared_length.is_some_and(|length| length > limit) {
            drain(request.into_body(), limit).await;
            return Err(GatewayError::PayloadTooLarge { limit });
        }
        let mut body = request.into_body();
        let mut collected = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| {
                GatewayError::BadRequest(format!("reading the request body: {}", error.into()))
            })?;
            if let Ok(data) = frame.into_data() {
                if collected.len() + data.len() > limit {
                    drain(body, limit).await;
                    return Err(GatewayError::PayloadTooLarge { limit });
                }
                collected.extend_from_slice(&data);
            }
        }
        let body = Bytes::from(collected);
        let sql = parse_sql(&body, is_json)?;
        let timeout = match timeout_header {
            Some(asked) => asked.min(self.inner.timeout),
            None => self.inner.timeout,
        };
        tracing::debug!(sql_bytes = sql.len(), "query read");
        timeline.describe(&tenant, &sql);
        let query_id = timeline.query_id();
        let limits = self.inner.limits.of(&tenant);
        let request = QueryRequest {
            query_id,
            sql,
            routing_key,
            tenant,
            pool: DEFAULT_POOL.to_string(),
            timeout,
            timeline: Arc::clone(&timeline),
        };
        let result = self
            .inner
            .queries
            .clone()
            .oneshot(request)
            .await
            .map_err(GatewayError::from_boxed)?;
        // The limits apply from the first message: a first batch over them is the status.
        let mut limited = limits.apply(result.messages);
        let mut head = Vec::new();
        while let Some(message) = limited.next().await {
            let message = message.map_err(|status| GatewayError::Remote((&status).into()))?;
            let is_batch = crate::shard::batch_rows(&message).is_some();
            head.push(Ok(message));
            if is_batch {
                break;
            }
        }
        let messages = futures::stream::iter(head).chain(limited).boxed();
        let metrics = self.inner.metrics.clone();
        timeline.first_byte();
        tracing::debug!(shard = %result.shard, taskmanager = %result.taskmanager, "result streaming");
        let counted = {
            let (timeline, rows) = (Arc::clone(&timeline), metrics.rows_streamed.clone());
            messages.inspect(move |message| {
                if let Some(count) = message.as_ref().ok().and_then(crate::shard::batch_rows) {
                    timeline.add_rows(count);
                    rows.inc_by(count);
                }
            })
        };
        let chunks = Tracked {
            inner: formats::encode(media, counted.boxed()),
            outcome: Outcome {
                metrics,
                code: "cancelled",
                timeline,
                span: tracing::Span::current(),
            },
        };
        let mut response = Response::new(StreamBody::new(chunks).boxed_unsync());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(media.as_str()));
        insert_header(headers, QUERY_ID_HEADER, &query_id.to_string());
        insert_header(headers, SHARD_HEADER, &result.shard);
        insert_header(headers, TASKMANAGER_HEADER, &result.taskmanager);
        Ok(response)
    }

    /// `DELETE /v1/query/{id}`: cancels a query running on this gateway.
    fn cancel(&self, path: &str, caller: &Caller) -> Response<ResponseBody> {
        let id = &path[QUERY_PATH.len()..];
        let Some(query_id) = QueryId::parse(id) else {
            let error = GatewayError::BadRequest(format!("`{id}` is not a query id"));
            return error_response(None, &error.to_body(), error.code().http_status());
        };
        let visible = self
            .inner
            .running
            .tenant_of(&query_id)
            .is_some_and(|tenant| caller.sees(&tenant));
        if visible && self.inner.running.cancel(&query_id) {
            tracing::info!(%query_id, "query cancelled by request");
            return json_response(
                StatusCode::OK,
                &serde_json::json!({"query_id": query_id, "cancelled": true}),
            );
        }
        let error = ErrorBody::new(
            flotilla_protocol::ErrorCode::NotFound,
            format!("query {query_id} is not running on this gateway"),
        );
        error_response(Some(query_id), &error, StatusCode::NOT_FOUND)
    }

    /// `GET /v1/query/{id}`: the status and phase times of a running or recent query.
    fn status(&self, path: &str, caller: &Caller) -> Response<ResponseBody> {
        let id = &path[QUERY_PATH.len()..];
        let Some(query_id) = QueryId::parse(id) else {
            let error = GatewayError::BadRequest(format!("`{id}` is not a query id"));
            return error_response(None, &error.to_body(), error.code().http_status());
        };
        // Another tenant's query is as unknown as a query that never ran.
        match self
            .inner
            .running
            .find(&query_id)
            .filter(|timeline| caller.sees(&timeline.tenant()))
        {
            Some(timeline) => json_response(StatusCode::OK, &timeline.to_json()),
            None => {
                let error = ErrorBody::new(
                    flotilla_protocol::ErrorCode::NotFound,
                    format!(
                        "query {query_id} is neither running nor among the recent queries of this gateway"
                    ),
                );
                error_response(Some(query_id), &error, StatusCode::NOT_FOUND)
            }
        }
    }

    fn ready(&self) -> Response<ResponseBody> {
        let shards = self.inner.shards.healthy().len();
        let taskmanagers_known = !self.inner.taskmanagers.members().is_empty();
        let taskmanagers = self.inner.taskmanagers.healthy().len();
        if shards > 0 && (taskmanagers > 0 || !taskmanagers_known) {
            return json_response(
                StatusCode::OK,
                &serde_json::json!({"ready": true, "shards_up": shards, "taskmanagers_up": taskmanagers}),
            );
        }
        let message =
            format!("not ready: {shards} shards and {taskmanagers} taskmanagers reachable");
        error_response(
            None,
            &ErrorBody::new(flotilla_protocol::ErrorCode::Unavailable, message),
            StatusCode::SERVICE_UNAVAILABLE,
        )
    }

    fn cluster(&self) -> Response<ResponseBody> {
        let mut view = serde_json::json!({
            "shards": self.inner.shards.members(),
            "taskmanagers": self.inner.taskmanagers.members(),
        });
        if let Some(gossip) = &self.inner.gossip {
            view["members"] = serde_json::json!(*gossip.view());
            view["gossip"] = serde_json::json!(gossip.addr());
        }
        json_response(StatusCode::OK, &view)
    }

    fn metrics(&self) -> Response<ResponseBody> {
        let inner = &self.inner;
        inner.metrics.in_flight.set(inner.running.len() as i64);
        for (role, members) in [
            ("shard", &inner.shards),
            ("taskmanager", &inner.taskmanagers),
        ] {
            let known = members.members().len();
            let serving = members.healthy().len();
            let gauge = |state: &str| inner.metrics.members.with_label_values(&[role, state]);
            gauge("serving").set(serving as i64);
            gauge("down").set(known.saturating_sub(serving) as i64);
        }
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.inner.registry.gather(), &mut buffer) {
            return text_response(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string());
        }
        let mut response = full(StatusCode::OK, Bytes::from(buffer));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        response
    }
}

/// Records a query's end: its outcome counter, its phase histograms, its timeline and one
/// log line (inside the query's span, so it carries the query id and trace id).
fn record_end(
    metrics: &GatewayMetrics,
    timeline: &Timeline,
    code: &str,
    error: Option<&str>,
    span: &tracing::Span,
) {
    let Some(phases) = timeline.finish(code, error) else {
        return;
    };
    metrics.queries.with_label_values(&[code]).inc();
    for (phase, duration) in [
        ("queued", phases.queued),
        ("planned", phases.planned),
        ("first_byte", phases.first_byte),
        ("total", phases.total),
    ] {
        if let Some(duration) = duration {
            metrics.observe_phase(phase, duration.as_secs_f64());
        }
    }
    let total_ms = phases.total.unwrap_or_default().as_secs_f64() * 1e3;
    match error {
        None => tracing::info!(
            parent: span,
            code,
            total_ms,
            rows = timeline.rows(),
            bytes = timeline.bytes(),
            "query finished"
        ),
        Some(error) => tracing::info!(parent: span, code, total_ms, error, "query finished"),
    }
}

/// Records a query's outcome when its response body is done (or dropped by the client).
struct Outcome {
    metrics: GatewayMetrics,
    code: &'static str,
    timeline: Arc<Timeline>,
    span: tracing::Span,
}

impl Drop for Outcome {
    fn drop(&mut self) {
        record_end(&self.metrics, &self.timeline, self.code, None, &self.span);
    }
}

/// The response body stream: counts bytes and records how the query ended.
struct Tracked {
    inner: formats::Chunks,
    outcome: Outcome,
}

impl futures::Stream for Tracked {
    type Item = Result<Frame<Bytes>, BoxError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(chunk))) => {
                let bytes = chunk.len() as u64;
                self.outcome.metrics.bytes_streamed.inc_by(bytes);
                self.outcome.timeline.add_bytes(bytes);
            }
            std::task::Poll::Ready(Some(Err(error))) => {
                self.outcome.code =
                    match error.downcast_ref::<GatewayError>().map(GatewayError::code) {
                        Some(
                            code @ (flotilla_protocol::ErrorCode::Cancelled
                            | flotilla_protocol::ErrorCode::Timeout
                            | flotilla_protocol::ErrorCode::ResultTooLarge),
                        ) => code.as_str(),
                        _ => "stream_aborted",
                    };
                tracing::warn!(parent: &self.outcome.span, %error, "result failed after the first byte; aborting the response");
            }
            std::task::Poll::Ready(None) => self.outcome.code = "ok",
            std::task::Poll::Pending => {}
        }
        polled.map(|item| item.map(|chunk| chunk.map(Frame::data)))
    }
}

/// Reads and discards what is left of a refused request body (at most 4 × the limit plus
/// 1 MiB, for at most 2 s), so that closing the connection after the error response does not
/// reset it before the client has read that response.
async fn drain<B>(mut body: B, limit: usize)
where
    B: Body<Data = Bytes> + Unpin,
{
    let budget = limit.saturating_mul(4).saturating_add(1024 * 1024);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let mut discarded = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                discarded += data.len();
                if discarded > budget {
                    break;
                }
            }
        }
    })
    .await;
}

fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

fn header_text<B>(
    request: &Request<B>,
    name: impl http::header::AsHeaderName,
) -> Result<Option<String>, GatewayError> {
    match request.headers().get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|text| Some(text.trim().to_ascii_lowercase()))
            .map_err(|_| GatewayError::BadRequest("a header is not visible ASCII".into())),
    }
}

/// Reads the SQL from a text or JSON body.
fn parse_sql(body: &[u8], is_json: bool) -> Result<String, GatewayError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| GatewayError::BadRequest("the request body is not UTF-8".into()))?;
    let sql = if is_json {
        // An object with a string `sql`; serde would also take `["..."]` for the struct.
        let bad = |why: String| {
            GatewayError::BadRequest(format!("JSON body must be {{\"sql\": \"...\"}}: {why}"))
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|error| bad(error.to_string()))?;
        match value.get("sql") {
            Some(serde_json::Value::String(sql)) if value.is_object() => sql.clone(),
            Some(_) => return Err(bad("`sql` is not a string".into())),
            None => return Err(bad("no `sql` field".into())),
        }
    } else {
        text.to_string()
    };
    if sql.trim().is_empty() {
        return Err(GatewayError::BadRequest("the request has no SQL".into()));
    }
    Ok(sql)
}

fn insert_header(headers: &mut http::HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(http::HeaderName::from_static(name), value);
    }
}

fn full(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

fn text_response(status: StatusCode, text: &str) -> Response<ResponseBody> {
    let mut response = full(status, Bytes::from(text.to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = full(status, Bytes::from(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(
    query_id: Option<QueryId>,
    error: &ErrorBody,
    status: StatusCode,
) -> Response<ResponseBody> {
    let mut body = error.clone();
    body.query_id = query_id;
    let mut response = full(status, Bytes::from(body.to_json()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(query_id) = query_id {
        insert_header(
            response.headers_mut(),
            QUERY_ID_HEADER,
            &query_id.to_string(),
        );
    }
    if error.code.is_backpressure() {
        // Queues drain in about a second at the rates Flotilla is sized for.
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Reads the timeout header: a whole number of milliseconds, at least 1.
fn parse_timeout(header: Option<&str>) -> Result<Option<Duration>, GatewayError> {
    let Some(text) = header.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    match text.parse::<u64>() {
        Ok(millis) if millis > 0 => Ok(Some(Duration::from_millis(millis))),
        _ => Err(GatewayError::BadRequest(format!(
            "{TIMEOUT_HEADER} must be a whole number of milliseconds, at least 1; got `{text}`"
        ))),
    }
}

/// Reads the tenant header: absent means the default tenant; a name is 1-64 characters of
/// `A-Z a-z 0-9 . _ -`.
fn parse_tenant(header: Option<&str>) -> Result<String, GatewayError> {
    let Some(tenant) = header.map(str::trim).filter(|tenant| !tenant.is_empty()) else {
        return Ok(DEFAULT_TENANT.to_string());
    };
    let valid = tenant.len() <= 64
        && tenant
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if !valid {
        return Err(GatewayError::BadRequest(format!(
            "{TENANT_HEADER} must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
        )));
    }
    Ok(tenant.to_string())
}
