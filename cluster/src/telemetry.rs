//! Logging and spans for every Flotilla process, the instrumented spawn helper, and the W3C
//! `traceparent` that carries a query's trace over gRPC hops.

use flotilla_protocol::{TRACEPARENT_HEADER, TraceContext};
use serde::{Deserialize, Serialize};
use std::future::Future;
use tracing::Instrument as _;

/// How a process writes its logs (to stderr).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `gateway=debug,info`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".to_string(),
        }
    }
}

/// A log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, span fields included.
    Json,
}

/// Installs the process-wide tracing subscriber. Call once, from `main`.
pub fn init_tracing(config: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match config.format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    if let Err(error) = result {
        eprintln!("tracing was already initialised: {error}");
    }
}

/// Spawns a task that keeps the caller's tracing span. Use instead of `tokio::spawn`.
#[allow(clippy::disallowed_methods)]
pub fn spawn_instrumented<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.in_current_span())
}

/// The trace context a gRPC call arrived with, or a new trace when it carried none (or a bad
/// one).
pub fn incoming_trace(metadata: &tonic::metadata::MetadataMap) -> TraceContext {
    metadata
        .get(TRACEPARENT_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceContext::parse)
        .unwrap_or_else(TraceContext::root)
}

/// Adds a new span of `trace` to an outgoing gRPC call's metadata, as W3C `traceparent`.
pub fn inject_child_trace(metadata: &mut tonic::metadata::MetadataMap, trace: &TraceContext) {
    if let Ok(value) = trace.child().header().parse() {
        metadata.insert(TRACEPARENT_HEADER, value);
    }
}
