//! The `tower::Layer` that wraps a shard client in [`Route`].

use super::quarantine::Quarantine;
use super::ring::RingCache;
use super::service::{Route, Shared};
use crate::config::RoutingConfig;
use crate::metrics::GatewayMetrics;
use flotilla_cluster::Membership;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tower::Layer;

/// Adds shard routing to a service of [`crate::query::Routed`] queries.
#[derive(Clone)]
pub struct RouteLayer {
    shared: Arc<Shared>,
}

impl RouteLayer {
    /// Routes over `shards` with the given policy, recording decisions in `metrics`; `probe`
    /// asks a suspected TaskManager whether it answers.
    pub fn new(
        shards: Arc<dyn Membership>,
        config: RoutingConfig,
        metrics: GatewayMetrics,
        probe: super::Probe,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                shards,
                ring: RingCache::new(config.virtual_nodes),
                in_flight: Mutex::new(HashMap::new()),
                quarantine: Quarantine::new(
                    std::time::Duration::from_millis(config.quarantine_ms),
                    config.strikes_to_mark_down,
                ),
                hedging: super::hedge::Hedging::new(&config),
                sideline: super::sideline::Sideline::new(probe, metrics.sidelined.clone()),
                together: super::together::Together::default(),
                config,
                metrics,
            }),
        }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Route::new(inner, Arc::clone(&self.shared))
    }
}
