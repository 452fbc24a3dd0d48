//! `POST /v1/query`: reads the request, runs it through the query stack, and streams the
//! result in the format the client accepts (the first batch decides the status).

use super::formats;
use super::handler::{Gateway, ResponseBody};
use super::request::{drain, essence, header_text, parse_sql};
use super::response::{error_response, insert_header};
use super::tracked::Tracked;
use crate::auth::Caller;
use crate::control::Timeline;
use crate::error::{BoxError, GatewayError};
use crate::outcome::{Outcome, record_end};
use crate::query::{QueryRequest, first_batch};
use bytes::Bytes;
use flotilla_protocol::{
    CACHE_HEADER, DEFAULT_POOL, MediaType, QUERY_ID_HEADER, QueryId, ROUTING_KEY_HEADER,
    SHARD_HEADER, TABLE_VERSIONS_HEADER, TASKMANAGER_HEADER, TENANT_HEADER, TIMEOUT_HEADER,
    TRACEPARENT_HEADER, TraceContext,
};
use futures::StreamExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, StreamBody};
use std::sync::Arc;
use tower::ServiceExt;
use tracing::Instrument;

// === impl Gateway ===

impl Gateway {
    pub(super) async fn query<B>(
        &self,
        request: Request<B>,
        caller: Caller,
    ) -> Response<ResponseBody>
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

    pub(super) async fn run_query<B>(
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
        let tenant = caller.tenant_for(tenant_header.as_deref())?;
        let timeout = crate::query::query_timeout(
            header_text(&request, http::HeaderName::from_static(TIMEOUT_HEADER))?.as_deref(),
            self.inner.timeout,
        )?;
        let no_cache = crate::query::wants_fresh(
            header_text(&request, http::header::CACHE_CONTROL)?.as_deref(),
        );
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
        tracing::debug!(sql_bytes = sql.len(), "query read");
        timeline.describe(&tenant, &sql);
        let query_id = timeline.query_id();
        let limits = self.inner.limits.of(&tenant);
        let request = QueryRequest {
            query_id,
            sql,
            params: Vec::new(),
            routing_key,
            tenant,
            pool: DEFAULT_POOL.to_string(),
            timeout,
            timeline: Arc::clone(&timeline),
            no_cache,
        };
        let result = self
            .inner
            .queries
            .clone()
            .oneshot(request)
            .await
            .map_err(GatewayError::from_boxed)?;
        // The limits apply from the first message: a first batch over them is the status.
        let (head, rest) = first_batch(limits.apply(result.messages)).await?;
        let messages = futures::stream::iter(head.into_iter().map(Ok))
            .chain(rest)
            .boxed();
        let metrics = self.inner.metrics.clone();
        timeline.first_byte();
        tracing::debug!(shard = %result.shard, taskmanager = ?result.taskmanager, "result streaming");
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
            outcome: Outcome::streaming(metrics, timeline),
        };
        let mut response = Response::new(StreamBody::new(chunks).boxed_unsync());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(media.as_str()));
        insert_header(headers, QUERY_ID_HEADER, &query_id.to_string());
        insert_header(headers, SHARD_HEADER, &result.shard);
        if let Some(taskmanager) = &result.taskmanager {
            insert_header(headers, TASKMANAGER_HEADER, taskmanager);
        }
        if let Some(cache) = &result.cache {
            insert_header(headers, CACHE_HEADER, &cache.outcome);
            if !cache.table_versions.is_empty() {
                insert_header(headers, TABLE_VERSIONS_HEADER, &cache.table_versions);
            }
        }
        Ok(response)
    }
}
