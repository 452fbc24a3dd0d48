//! The [`Admission`] service: takes the tenant's and the global permit, then runs the query
//! and keeps both permits with the result stream until it ends.

use super::tenants::Tenants;
use crate::error::BoxError;
use crate::query::{QueryRequest, QueryResult};
use futures::StreamExt;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Service, ServiceExt};

/// Admits queries per tenant; see the module docs.
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    tenants: Arc<Tenants>,
}

impl<S> Admission<S> {
    pub(super) fn new(inner: S, tenants: Arc<Tenants>) -> Self {
        Self { inner, tenants }
    }
}

impl<S> Service<QueryRequest> for Admission<S>
where
    S: Service<QueryRequest, Response = QueryResult, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = QueryResult;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<QueryResult, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Waiting happens per tenant inside `call`, never for the whole service.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: QueryRequest) -> Self::Future {
        let inner = self.inner.clone();
        let tenants = Arc::clone(&self.tenants);
        Box::pin(async move {
            let permit = tenants.admit(&request.tenant).await?;
            request.pool = permit.pool().to_string();
            request.timeline.admitted(permit.waited());
            let mut result = inner.oneshot(request).await?;
            let messages =
                std::mem::replace(&mut result.messages, futures::stream::empty().boxed());
            result.messages = messages
                .map(move |message| {
                    let _held_until_the_stream_ends = &permit;
                    message
                })
                .boxed();
            Ok(result)
        })
    }
}
