//! What the gateway knows of the cluster and of itself: `/readyz`, `/v1/cluster` and
//! `/metrics`. With gossip the gateway sees gateways and shards; TaskManagers report to the
//! shards, so their counts come from the shards' gossiped load and their list from one shard,
//! a page at a time (`/v1/cluster?taskmanagers=suspect&offset=0&limit=100`).

use super::handler::{Gateway, ResponseBody};
use super::response::{error_response, full, json_response, text_response};
use bytes::Bytes;
use flotilla_protocol::{
    ErrorBody, NodeRole, TASKMANAGERS_ACTION, TaskManagersRequest, TraceContext,
};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use prometheus::{Encoder, TextEncoder};

/// TaskManagers `/v1/cluster` lists unless asked for another page size.
const PAGE: usize = 100;

// === impl Gateway ===

impl Gateway {
    pub(super) fn ready(&self) -> Response<ResponseBody> {
        let shards = self.inner.shards.healthy().len();
        let (taskmanagers, _) = self.taskmanager_counts();
        let fixed_list_down = self
            .inner
            .taskmanagers
            .as_ref()
            .is_some_and(|list| !list.members().is_empty() && taskmanagers == 0);
        if shards > 0 && !fixed_list_down {
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

    pub(super) async fn cluster(&self, query: Option<&str>) -> Response<ResponseBody> {
        let asked = TaskManagersRequest::from_query(query, PAGE);
        let mut view = serde_json::json!({ "shards": self.inner.shards.members() });
        if let Some(list) = &self.inner.taskmanagers {
            let members = list.members();
            view["taskmanagers"] = serde_json::json!({
                "total": members.len(),
                "offset": asked.offset,
                "members": members.into_iter().skip(asked.offset).take(asked.limit).collect::<Vec<_>>(),
            });
        }
        if let Some(gossip) = &self.inner.gossip {
            view["members"] = serde_json::json!(*gossip.view());
            view["gossip"] = serde_json::json!(gossip.addr());
            view["taskmanagers"] = self.taskmanagers_from_a_shard(&asked).await;
        }
        json_response(StatusCode::OK, &view)
    }

    /// Asks the first serving shard for a page of its TaskManagers; the next one if it fails.
    async fn taskmanagers_from_a_shard(&self, asked: &TaskManagersRequest) -> serde_json::Value {
        let body = serde_json::to_vec(asked).unwrap_or_default();
        let mut last_error = "no shard is serving".to_string();
        for shard in self.inner.shards.healthy().into_iter().take(2) {
            match self
                .inner
                .shard_client
                .action(
                    &shard,
                    TASKMANAGERS_ACTION,
                    body.clone(),
                    &TraceContext::root(),
                )
                .await
            {
                Ok(answer) => match serde_json::from_slice::<serde_json::Value>(&answer) {
                    Ok(mut listing) => {
                        listing["shard"] = serde_json::json!(shard);
                        return listing;
                    }
                    Err(error) => last_error = format!("shard {shard}: {error}"),
                },
                Err(error) => last_error = error.to_string(),
            }
        }
        serde_json::json!({ "error": last_error, "members": [] })
    }

    /// TaskManagers up and known: the fixed list's probes, or the most any shard reports.
    fn taskmanager_counts(&self) -> (usize, usize) {
        if let Some(list) = &self.inner.taskmanagers {
            return (list.healthy().len(), list.members().len());
        }
        let Some(gossip) = &self.inner.gossip else {
            return (0, 0);
        };
        gossip
            .serving(NodeRole::JobManager)
            .iter()
            .map(|shard| {
                (
                    shard.load.taskmanagers_up as usize,
                    shard.load.taskmanagers_known as usize,
                )
            })
            .fold((0, 0), |(up, known), (a, b)| (up.max(a), known.max(b)))
    }

    pub(super) fn metrics(&self) -> Response<ResponseBody> {
        let inner = &self.inner;
        inner.metrics.in_flight.set(inner.running.len() as i64);
        let shards = (inner.shards.healthy().len(), inner.shards.members().len());
        for (role, (serving, known)) in [
            ("shard", shards),
            ("taskmanager", self.taskmanager_counts()),
        ] {
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
