//! How a query ended, recorded once whichever front door it came in by: its outcome counter,
//! its phase histograms, its timeline and one log line.

use crate::control::Timeline;
use crate::metrics::GatewayMetrics;
use std::sync::Arc;

/// Records a query's end: its outcome counter, its phase histograms, its timeline and one
/// log line (inside the query's span, so it carries the query id and trace id).
pub(crate) fn record_end(
    metrics: &GatewayMetrics,
    timeline: &Timeline,
    code: &str,
    error: Option<&str>,
    span: &tracing::Span,
) {
    let Some(phases) = timeline.finish(code, error) else {
        return;
    };
    let protocol = timeline.protocol().as_str();
    metrics.queries.with_label_values(&[code, protocol]).inc();
    for (phase, duration) in [
        ("queued", phases.queued),
        ("planned", phases.planned),
        ("first_byte", phases.first_byte),
        ("total", phases.total),
    ] {
        if let Some(duration) = duration {
            metrics.observe_phase(phase, protocol, duration.as_secs_f64());
        }
    }
    let total_ms = phases.total.unwrap_or_default().as_secs_f64() * 1e3;
    match error {
        None => tracing::info!(
            parent: span,
            code,
            protocol,
            total_ms,
            rows = timeline.rows(),
            bytes = timeline.bytes(),
            "query finished"
        ),
        Some(error) => {
            tracing::info!(parent: span, code, protocol, total_ms, error, "query finished")
        }
    }
}

/// Records a query's outcome when its result stream is done or dropped by the client; until
/// the stream says otherwise, a drop is `cancelled`.
pub(crate) struct Outcome {
    pub(crate) metrics: GatewayMetrics,
    pub(crate) code: &'static str,
    pub(crate) timeline: Arc<Timeline>,
    pub(crate) span: tracing::Span,
}

impl Outcome {
    /// The outcome of a query running in the current span: `cancelled` until said otherwise.
    pub(crate) fn streaming(metrics: GatewayMetrics, timeline: Arc<Timeline>) -> Self {
        Self::new(metrics, timeline, tracing::Span::current())
    }

    /// The outcome of a query running in `span`: `cancelled` until said otherwise.
    pub(crate) fn new(
        metrics: GatewayMetrics,
        timeline: Arc<Timeline>,
        span: tracing::Span,
    ) -> Self {
        Self {
            metrics,
            code: "cancelled",
            timeline,
            span,
        }
    }

    /// Notes a failure after the first byte: the code it ends with.
    pub(crate) fn failed(&mut self, code: Option<flotilla_protocol::ErrorCode>) {
        use flotilla_protocol::ErrorCode;
        self.code = match code {
            Some(
                code @ (ErrorCode::Cancelled | ErrorCode::Timeout | ErrorCode::ResultTooLarge),
            ) => code.as_str(),
            _ => "stream_aborted",
        };
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        record_end(&self.metrics, &self.timeline, self.code, None, &self.span);
    }
}
