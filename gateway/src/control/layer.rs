//! The [`ControlLayer`].

use super::registry::Registry;
use super::service::Control;
use std::sync::Arc;
use tower::Layer;

/// Wraps a query service in [`Control`].
#[derive(Clone)]
pub struct ControlLayer {
    registry: Arc<Registry>,
}

impl ControlLayer {
    /// Registers queries in `registry` while they run.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

impl<S> Layer<S> for ControlLayer {
    type Service = Control<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Control::new(inner, Arc::clone(&self.registry))
    }
}
