//! The streamed response body: counts bytes and records how the query ended (its outcome
//! counter, phase histograms, timeline and one log line).

use super::formats;
use crate::control::Timeline;
use crate::error::{BoxError, GatewayError};
use crate::metrics::GatewayMetrics;
use bytes::Bytes;
use futures::StreamExt;
use http_body::Frame;
use std::sync::Arc;

/// Records a query's end: its outcome counter, its phase histograms, its timeline and one
/// log line (inside the query's span, so it carries the query id and trace id).
pub(super) fn record_end(
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
pub(super) struct Outcome {
    pub(super) metrics: GatewayMetrics,
    pub(super) code: &'static str,
    pub(super) timeline: Arc<Timeline>,
    pub(super) span: tracing::Span,
}

impl Drop for Outcome {
    fn drop(&mut self) {
        record_end(&self.metrics, &self.timeline, self.code, None, &self.span);
    }
}

/// The response body stream: counts bytes and records how the query ended.
pub(super) struct Tracked {
    pub(super) inner: formats::Chunks,
    pub(super) outcome: Outcome,
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
