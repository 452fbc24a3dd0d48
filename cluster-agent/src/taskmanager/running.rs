//! [`CountTasks`]: wraps the datafusion-distributed worker service to count the stage tasks
//! running here, so that operators and tests can see a cancelled query's tasks stop, and to
//! charge each call's work to its query's memory account (the `x-flotilla-query-id` header).
//! A stage of a query the memory guard stopped ends its stream with a `resources_exhausted`
//! status in the trailers, which the head reads as the query's own error, not a lost peer.

use crate::memory::{MemoryGuard, Tracked, TrackedFuture};
use bytes::Bytes;
use flotilla_protocol::QUERY_ID_HEADER;
use futures::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyStream, StreamBody};
use prometheus::IntGauge;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::server::NamedService;
use tower::Service;

/// The path suffix of the worker call that streams one task's output.
const EXECUTE_TASK: &str = "/ExecuteTask";

/// The worker service, counting each `ExecuteTask` call until its response stream ends or is
/// dropped (which is what a cancelled query does to it).
#[derive(Clone)]
pub(super) struct CountTasks<S> {
    inner: S,
    running: IntGauge,
    memory: Arc<MemoryGuard>,
}

impl<S> CountTasks<S> {
    pub(super) fn new(inner: S, running: IntGauge, memory: Arc<MemoryGuard>) -> Self {
        Self {
            inner,
            running,
            memory,
        }
    }
}

impl<S: NamedService> NamedService for CountTasks<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for CountTasks<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let counted = request.uri().path().ends_with(EXECUTE_TASK);
        let running = self.running.clone();
        let account = request
            .headers()
            .get(QUERY_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(|query_id| self.memory.account(query_id));
        let response = match &account {
            Some(account) => crate::memory::charged(account, || self.inner.call(request)),
            None => self.inner.call(request),
        };
        Box::pin(async move {
            let response = match &account {
                Some(account) => TrackedFuture::new(response, Arc::clone(account)).await?,
                None => response.await?,
            };
            let response = match account {
                Some(account) => response.map(|body| {
                    let frames = Tracked::new(BodyStream::new(body), account, |reason: &str| {
                        Ok(Frame::trailers(stop_trailers(reason)))
                    });
                    tonic::body::Body::new(StreamBody::new(frames))
                }),
                None => response,
            };
            if !counted {
                return Ok(response);
            }
            running.inc();
            let guard = Running(running);
            Ok(response.map(|body| {
                tonic::body::Body::new(Counted {
                    body,
                    _guard: guard,
                })
            }))
        })
    }
}

/// The gRPC trailers of a stage stopped by the memory guard: `resources_exhausted` with the
/// reason, as Flotilla's error details.
fn stop_trailers(reason: &str) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    // A status always renders into headers; should it not, the stream still ends (unclean).
    let _ = super::results::memory_stop_status(reason).add_header(&mut trailers);
    trailers
}

/// Decrements the gauge when the response body is done or dropped.
struct Running(IntGauge);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct Counted {
    body: tonic::body::Body,
    _guard: Running,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
