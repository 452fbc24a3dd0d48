//! What the gateway knows of the cluster and of itself: `/readyz`, `/v1/cluster` and
//! `/metrics`.

use super::handler::{Gateway, ResponseBody};
use super::response::{error_response, full, json_response, text_response};
use bytes::Bytes;
use flotilla_protocol::ErrorBody;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use prometheus::{Encoder, TextEncoder};

// === impl Gateway ===

impl Gateway {
    pub(super) fn ready(&self) -> Response<ResponseBody> {
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

    pub(super) fn cluster(&self) -> Response<ResponseBody> {
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

    pub(super) fn metrics(&self) -> Response<ResponseBody> {
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
