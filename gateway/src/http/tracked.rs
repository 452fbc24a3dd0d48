//! The streamed response body: counts bytes and records how the query ended.

use super::formats;
use crate::error::{BoxError, GatewayError};
use crate::outcome::Outcome;
use bytes::Bytes;
use futures::StreamExt;
use http_body::Frame;

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
                let code = error.downcast_ref::<GatewayError>().map(GatewayError::code);
                self.outcome.failed(code);
                tracing::warn!(parent: &self.outcome.span, %error, "result failed after the first byte; aborting the response");
            }
            std::task::Poll::Ready(None) => self.outcome.code = "ok",
            std::task::Poll::Pending => {}
        }
        polled.map(|item| item.map(|chunk| chunk.map(Frame::data)))
    }
}
