//! The gateway's query records: `GET /v1/queries` (what runs), `GET /v1/query/{id}` (status
//! and phase times) and `DELETE /v1/query/{id}` (cancel).

use super::handler::{Gateway, QUERY_PATH, ResponseBody};
use super::response::{error_response, json_response};
use crate::auth::Caller;
use crate::error::GatewayError;
use flotilla_protocol::{ErrorBody, QueryId};
use http::{Response, StatusCode};

/// Most query records `GET /v1/queries` returns (about 600 bytes each).
const LISTED_RECORDS: usize = 200;

// === impl Gateway ===

impl Gateway {
    /// `GET /v1/queries`: the queries running on this gateway that the caller may see, and
    /// the records of the last ones (running, then ended), as `GET /v1/query/{id}` shows them.
    pub(super) fn running(&self, caller: &Caller) -> Response<ResponseBody> {
        let mut running = self.inner.running.list(1000);
        running.retain(|query| caller.sees(&query.tenant));
        let records: Vec<serde_json::Value> = self
            .inner
            .running
            .records(LISTED_RECORDS, |record| caller.sees(&record.tenant()))
            .iter()
            .map(|record| record.to_json())
            .collect();
        json_response(
            StatusCode::OK,
            &serde_json::json!({"running": running, "queries": records}),
        )
    }

    /// `DELETE /v1/query/{id}`: cancels a query running on this gateway.
    pub(super) fn cancel(&self, path: &str, caller: &Caller) -> Response<ResponseBody> {
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
    pub(super) fn status(&self, path: &str, caller: &Caller) -> Response<ResponseBody> {
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
}
