//! The [`Control`] service: registers the query, races it against its cancel switch and
//! deadline, and hands both on to the result stream.

use super::registry::{Registration, Registry};
use crate::error::{BoxError, GatewayError};
use crate::query::{QueryRequest, QueryResult};
use arrow_flight::FlightData;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tower::{Service, ServiceExt};

/// Cancels or times out queries; see the module docs.
#[derive(Clone)]
pub struct Control<S> {
    inner: S,
    registry: Arc<Registry>,
}

impl<S> Control<S> {
    pub(super) fn new(inner: S, registry: Arc<Registry>) -> Self {
        Self { inner, registry }
    }
}

impl<S> Service<QueryRequest> for Control<S>
where
    S: Service<QueryRequest, Response = QueryResult, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = QueryResult;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<QueryResult, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: QueryRequest) -> Self::Future {
        let inner = self.inner.clone();
        let Some((registration, cancelled)) = self.registry.register(
            request.query_id,
            &request.tenant,
            Arc::clone(&request.timeline),
        ) else {
            let error = GatewayError::BadRequest(format!(
                "query id {} is already running; send a new id or none",
                request.query_id
            ));
            return Box::pin(async move { Err(error.into()) });
        };
        let mut stop = stopped(cancelled, request.timeout).boxed();
        Box::pin(async move {
            let mut result = tokio::select! {
                biased;
                error = &mut stop => return Err(error.into()),
                result = inner.oneshot(request) => result?,
            };
            let messages =
                std::mem::replace(&mut result.messages, futures::stream::empty().boxed());
            result.messages = Stoppable {
                messages,
                stop,
                _registration: registration,
                done: false,
            }
            .boxed();
            Ok(result)
        })
    }
}

/// Resolves with the reason when the query is cancelled or its time is up.
async fn stopped(mut cancelled: watch::Receiver<bool>, timeout: Duration) -> GatewayError {
    let deadline = tokio::time::sleep(timeout);
    let cancel = async move {
        // An error means the sender is gone, which the registration this future travels
        // with prevents; it would only mean "never cancelled".
        if cancelled.wait_for(|cancelled| *cancelled).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = cancel => GatewayError::Cancelled("the query was cancelled (DELETE /v1/query/{id})".into()),
        () = deadline => GatewayError::QueryTimeout(timeout.as_millis() as u64),
    }
}

/// The result stream, ended with an error as soon as the query is cancelled or times out.
struct Stoppable {
    messages: BoxStream<'static, Result<FlightData, tonic::Status>>,
    stop: BoxFuture<'static, GatewayError>,
    _registration: Registration,
    done: bool,
}

impl Stream for Stoppable {
    type Item = Result<FlightData, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(error) = self.stop.poll_unpin(cx) {
            self.done = true;
            // Dropping the inner stream now cancels the fetch on the TaskManager.
            self.messages = futures::stream::empty().boxed();
            return Poll::Ready(Some(Err(error.to_body().into())));
        }
        let polled = self.messages.poll_next_unpin(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.done = true;
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_protocol::{ErrorCode, QueryId};

    fn endless_result() -> QueryResult {
        QueryResult {
            shard: "s".into(),
            taskmanager: Some("tm".into()),
            cache: None,
            messages: futures::stream::pending().boxed(),
        }
    }

    #[tokio::test]
    async fn cancel_ends_a_streaming_result_with_an_error() {
        let registry = Registry::new();
        let service =
            tower::service_fn(|_: QueryRequest| async { Ok::<_, BoxError>(endless_result()) });
        let mut control = Control::new(service, Arc::clone(&registry));
        let query_id = QueryId::new();
        let result = control
            .call(QueryRequest::new(query_id, "select 1"))
            .await
            .unwrap();
        assert!(registry.cancel(&query_id));
        let mut messages = result.messages;
        let status = messages.next().await.unwrap().unwrap_err();
        assert_eq!(
            flotilla_protocol::ErrorBody::from(&status).code,
            ErrorCode::Cancelled
        );
        assert!(messages.next().await.is_none());
        drop(messages);
        assert!(
            registry.is_empty(),
            "the stream's end unregisters the query"
        );
    }

    #[tokio::test]
    async fn a_query_over_its_timeout_fails_before_the_first_byte() {
        let registry = Registry::new();
        let service = tower::service_fn(|_: QueryRequest| async {
            std::future::pending::<()>().await;
            Ok::<_, BoxError>(endless_result())
        });
        let mut control = Control::new(service, Arc::clone(&registry));
        let mut request = QueryRequest::new(QueryId::new(), "select 1");
        request.timeout = Duration::from_millis(20);
        let error = GatewayError::from_boxed(control.call(request).await.unwrap_err());
        assert_eq!(error.code(), ErrorCode::Timeout);
        assert!(registry.is_empty());
    }
}
