//! The two tower layers of signed calls: [`SignedLayer`] around every internal client's channel
//! (signs each request as it leaves, whatever the client), [`VerifiedLayer`] around every
//! internal gRPC server (refuses an unsigned, forged, stale or replayed call with
//! `UNAUTHENTICATED` before any service sees it).

use super::{AUTH_HEADER, CallSigner, CallVerifier};
use flotilla_protocol::QUERY_ID_HEADER;
use futures::future::{Either, Ready, ready};
use std::task::{Context, Poll};
use tower::{Layer, Service};

fn query_id(headers: &http::HeaderMap) -> &str {
    headers
        .get(QUERY_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

/// Signs every request through it.
#[derive(Clone, Debug)]
pub struct SignedLayer(pub CallSigner);

impl<S> Layer<S> for SignedLayer {
    type Service = Signed<S>;
    fn layer(&self, inner: S) -> Signed<S> {
        Signed {
            inner,
            signer: self.0.clone(),
        }
    }
}

/// A channel whose requests carry the call signature.
#[derive(Clone, Debug)]
pub struct Signed<S> {
    inner: S,
    signer: CallSigner,
}

impl<S, B> Service<http::Request<B>> for Signed<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        let signature = self.signer.sign(
            request.uri().path(),
            query_id(request.headers()),
            super::unix_ms(),
        );
        if let Some(value) = signature.and_then(|text| http::HeaderValue::from_str(&text).ok()) {
            request.headers_mut().insert(AUTH_HEADER, value);
        }
        self.inner.call(request)
    }
}

/// Checks every request through it.
#[derive(Clone, Debug)]
pub struct VerifiedLayer(pub CallVerifier);

impl<S> Layer<S> for VerifiedLayer {
    type Service = Verified<S>;
    fn layer(&self, inner: S) -> Verified<S> {
        Verified {
            inner,
            verifier: self.0.clone(),
        }
    }
}

/// A server that refuses calls without a valid signature.
#[derive(Clone, Debug)]
pub struct Verified<S> {
    inner: S,
    verifier: CallVerifier,
}

impl<S, B> Service<http::Request<B>> for Verified<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let presented = request
            .headers()
            .get(AUTH_HEADER)
            .and_then(|value| value.to_str().ok());
        match self.verifier.verify(
            request.uri().path(),
            query_id(request.headers()),
            presented,
            super::unix_ms(),
        ) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(refused) => {
                tracing::debug!(path = request.uri().path(), %refused, "internal call refused");
                let status = tonic::Status::unauthenticated(format!(
                    "internal calls need a valid cluster signature ({refused}): is cluster.secret \
                     the same on every member, and are their clocks within 10 s?"
                ));
                Either::Right(ready(Ok(status.into_http())))
            }
        }
    }
}
