//! [`CountTasks`]: wraps the datafusion-distributed worker service to count the stage tasks
//! running here, so that operators and tests can see a cancelled query's tasks stop.

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use prometheus::IntGauge;
use std::convert::Infallible;
use std::pin::Pin;
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
}

impl<S> CountTasks<S> {
    pub(super) fn new(inner: S, running: IntGauge) -> Self {
        Self { inner, running }
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
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
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
