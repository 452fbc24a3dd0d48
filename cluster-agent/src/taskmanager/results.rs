//! A result's Flight stream as `DoGet` serves it: errors as Flotilla statuses, bytes counted,
//! slot leases kept alive, and one log line on how it ended.

use crate::error::AgentError;
use arrow_flight::FlightData;
use arrow_flight::error::FlightError;
use datafusion::common::DataFusionError;
use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::Status;

pub(super) fn flight_result(item: Result<FlightData, FlightError>) -> Result<FlightData, Status> {
    item.map_err(flight_error_to_status)
}

pub(super) fn flight_error_to_status(error: FlightError) -> Status {
    match error {
        FlightError::ExternalError(external) => match external.downcast::<DataFusionError>() {
            Ok(datafusion) => AgentError::DataFusion(*datafusion).into(),
            Err(other) => AgentError::Internal(other.to_string()).into(),
        },
        FlightError::Tonic(status) => *status,
        other => AgentError::Internal(other.to_string()).into(),
    }
}

/// The status a stream of a query stopped by the memory guard ends with.
pub(super) fn memory_stop_status(reason: &str) -> Status {
    AgentError::DataFusion(DataFusionError::ResourcesExhausted(reason.to_string())).into()
}

/// Decrements the streaming gauge and logs the result's end when its stream ends or is
/// dropped (the reader went away).
pub(super) struct StreamingGuard {
    pub(super) streaming: prometheus::IntGauge,
    pub(super) span: tracing::Span,
    pub(super) started: std::time::Instant,
    pub(super) bytes: u64,
    pub(super) outcome: &'static str,
}

impl Drop for StreamingGuard {
    fn drop(&mut self) {
        self.streaming.dec();
        tracing::info!(
            parent: &self.span,
            outcome = self.outcome,
            bytes = self.bytes,
            elapsed_ms = self.started.elapsed().as_secs_f64() * 1e3,
            "result stream ended"
        );
    }
}

/// A result's Flight stream: counts its bytes, keeps its slot leases alive, fills its result
/// cache entry, and logs how it ended (`complete`, `failed`, or `dropped` when the reader went
/// away).
pub(super) struct ResultStream<K> {
    pub(super) inner: BoxStream<'static, Result<FlightData, Status>>,
    pub(super) guard: StreamingGuard,
    pub(super) bytes_sent: prometheus::IntCounter,
    /// The result cache entry the stream fills, if its result may be kept.
    pub(super) filler: Option<super::result_cache::Filler>,
    pub(super) _keep_alive: K,
}

impl<K: Unpin> futures::Stream for ResultStream<K> {
    type Item = Result<FlightData, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(data))) => {
                let bytes = (data.data_header.len() + data.data_body.len()) as u64;
                self.bytes_sent.inc_by(bytes);
                self.guard.bytes += bytes;
                if let Some(filler) = &mut self.filler {
                    filler.push(data);
                }
            }
            std::task::Poll::Ready(Some(Err(_))) => {
                self.guard.outcome = "failed";
                // A failed result is not kept.
                self.filler = None;
            }
            std::task::Poll::Ready(None) if self.guard.outcome == "dropped" => {
                self.guard.outcome = "complete";
                if let Some(filler) = self.filler.take() {
                    filler.finish();
                }
            }
            _ => {}
        }
        polled
    }
}
