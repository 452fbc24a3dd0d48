//! A node's HTTP admin service: `/healthz`, `/metrics`, `/v1/state` and `POST /admin/drain`
//! (which needs the cluster secret).

use super::{Drain, Presence, RefreshGauges, StateView};
use crate::config::Role;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::{Encoder, Registry, TextEncoder};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serves `admin` on `listener`, one task per connection, until `stopped` turns true.
pub(super) fn serve(listener: TcpListener, admin: Admin, mut stopped: watch::Receiver<bool>) {
    let admin = Arc::new(admin);
    flotilla_cluster::spawn_instrumented(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.wait_for(|stop| *stop) => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let admin = Arc::clone(&admin);
            flotilla_cluster::spawn_instrumented(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let admin = Arc::clone(&admin);
                    async move { Ok::<_, std::convert::Infallible>(admin.handle(&request)) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// What the admin endpoints read.
pub(super) struct Admin {
    pub(super) role: Role,
    pub(super) registry: Registry,
    pub(super) state: StateView,
    pub(super) refresh: RefreshGauges,
    pub(super) presence: Presence,
    pub(super) drain: Drain,
    pub(super) secret: flotilla_cluster::ClusterSecret,
}

impl Admin {
    fn handle(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match (request.method().as_str(), request.uri().path()) {
            ("GET", "/healthz") => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
            ("GET", "/metrics") => {
                (self.refresh)();
                let mut buffer = Vec::new();
                let encoder = TextEncoder::new();
                match encoder.encode(&self.registry.gather(), &mut buffer) {
                    Ok(()) => (
                        StatusCode::OK,
                        "text/plain; version=0.0.4",
                        Bytes::from(buffer),
                    ),
                    Err(error) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        Bytes::from(error.to_string()),
                    ),
                }
            }
            ("POST", "/admin/drain")
                if !self.secret.accepts(
                    request
                        .headers()
                        .get(flotilla_protocol::CLUSTER_SECRET_HEADER)
                        .map(|value| value.as_bytes()),
                ) =>
            {
                tracing::warn!("drain refused: the request lacks the cluster secret");
                let body = flotilla_protocol::ErrorBody::new(
                    flotilla_protocol::ErrorCode::Unauthorized,
                    format!(
                        "a drain needs the cluster secret in {}",
                        flotilla_protocol::CLUSTER_SECRET_HEADER
                    ),
                );
                (
                    StatusCode::UNAUTHORIZED,
                    "application/json",
                    Bytes::from(body.to_json()),
                )
            }
            ("POST", "/admin/drain") => {
                tracing::info!("drain requested over the admin API");
                self.drain.request();
                let body = serde_json::json!({"draining": true});
                (
                    StatusCode::ACCEPTED,
                    "application/json",
                    Bytes::from(body.to_string()),
                )
            }
            ("GET", "/v1/state") => {
                let mut state = (self.state)(request.uri().query());
                state["draining"] = serde_json::Value::from(self.drain.is_draining());
                state["role"] = serde_json::Value::from(self.role.as_str());
                let (addr, cluster) = self.presence.state();
                state["gossip"] = addr;
                state["cluster"] = cluster;
                let body = serde_json::to_vec_pretty(&state).unwrap_or_default();
                (StatusCode::OK, "application/json", Bytes::from(body))
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                Bytes::from_static(b"not found\n"),
            ),
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        if let Ok(value) = http::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        response
    }
}
