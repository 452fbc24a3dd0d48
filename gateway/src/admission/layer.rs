//! The [`AdmissionLayer`].

use super::service::Admission;
use super::tenants::Tenants;
use std::sync::Arc;
use tower::Layer;

/// Wraps a query service in [`Admission`].
#[derive(Clone)]
pub struct AdmissionLayer {
    tenants: Arc<Tenants>,
}

impl AdmissionLayer {
    pub(crate) fn new(tenants: Arc<Tenants>) -> Self {
        Self { tenants }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission::new(inner, Arc::clone(&self.tenants))
    }
}
