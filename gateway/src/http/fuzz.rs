//! Bounded fuzzing of the HTTP edge: arbitrary methods, paths, headers and bodies through
//! [`Gateway::handle`], with auth on, in front of a query stack that fails every query. No
//! request may panic; every error answer is the JSON envelope with a known code and the status
//! of that code.
//!
//! The budget is `FLOTILLA_FUZZ_SECONDS` (default 3 s, and 15 s when `CI` is set).

use super::{Gateway, Members};
use crate::config::{AuthConfig, Config, TokenConfig};
use crate::error::{BoxError, GatewayError};
use crate::metrics::GatewayMetrics;
use crate::query::{QueryRequest, QueryResult};
use bytes::Bytes;
use flotilla_cluster::{Membership, StaticMembership};
use flotilla_protocol::{ErrorCode, ErrorEnvelope};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::util::BoxCloneSyncService;

fn budget() -> Duration {
    let seconds = std::env::var("FLOTILLA_FUZZ_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(if std::env::var_os("CI").is_some() {
            30
        } else {
            3
        });
    Duration::from_secs(seconds)
}

pub(super) const TOKEN: &str = "fuzz-token";

pub(super) fn gateway() -> Gateway {
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(TOKEN.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut config = Config::default();
    config.http.max_body_bytes = 4096;
    config.auth = AuthConfig {
        enabled: true,
        tokens: vec![TokenConfig {
            sha256: hash,
            tenant: "fuzz".into(),
            admin: false,
        }],
        ..AuthConfig::default()
    };
    let failing = tower::service_fn(|_: QueryRequest| async {
        Err::<QueryResult, BoxError>(GatewayError::NoShard("fuzzing: no shard".into()).into())
    });
    let registry = prometheus::Registry::new();
    let metrics = GatewayMetrics::new(&registry).unwrap();
    let none: Arc<dyn Membership> = StaticMembership::new(Vec::new());
    Gateway::new(
        &config,
        BoxCloneSyncService::new(failing),
        crate::control::Registry::new(),
        Members {
            shards: Arc::clone(&none),
            taskmanagers: None,
            gossip: None,
        },
        metrics,
        registry,
    )
    .unwrap()
}

const PATHS: &[&str] = &[
    "/v1/query",
    "/v1/query/",
    "/v1/queries",
    "/v1/cluster",
    "/healthz",
    "/readyz",
    "/metrics",
    "/",
    "/v1",
    "/v1/query/00000000-0000-0000-0000-000000000000",
    "/ui",
    "/ui/",
    "/ui/app.js",
    "/ui/config.json",
    "/ui/../metrics",
];
const HEADERS: &[&str] = &[
    "content-type",
    "accept",
    "content-length",
    "authorization",
    "x-flotilla-query-id",
    "x-flotilla-tenant",
    "x-flotilla-timeout-ms",
    "x-flotilla-routing-key",
    "traceparent",
];
const VALUES: &[&str] = &[
    "text/plain",
    "application/json",
    "application/sql; charset=utf-8",
    "*/*",
    "text/csv",
    "application/vnd.apache.arrow.stream",
    "application/x-ndjson",
    "image/png",
    "Bearer fuzz-token",
    "Bearer nope",
    "Basic Zm9vOmJhcg==",
    "1",
    "0",
    "-1",
    "99999999999999999999",
    "default",
    "a b",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "",
];

#[derive(Debug, Clone)]
struct Fuzzed {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
}

fn request() -> impl Strategy<Value = Fuzzed> {
    let method = proptest::sample::select(&["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"][..]);
    let path = prop_oneof![
        3 => proptest::sample::select(PATHS).prop_map(str::to_string),
        1 => "[a-zA-Z0-9/%._~-]{0,40}".prop_map(|tail| format!("/{tail}")),
        1 => "[a-zA-Z0-9%-]{0,40}".prop_map(|id| format!("/v1/query/{id}")),
    ];
    let value = prop_oneof![
        3 => proptest::sample::select(VALUES).prop_map(|value| value.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ];
    let headers = proptest::collection::vec((proptest::sample::select(HEADERS), value), 0..6);
    let body = prop_oneof![
        2 => "(SELECT|select|INSERT|COPY|\\{\"sql\": ?|\\[)[ -~]{0,60}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => Just(vec![b'x'; 5000]),
    ];
    (method, path, headers, body).prop_map(|(method, path, headers, body)| Fuzzed {
        method,
        path,
        headers,
        body,
    })
}

#[test]
fn the_http_edge_never_panics_and_answers_errors_as_documented() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let gateway = gateway();
    let deadline = Instant::now() + budget();
    let tried = std::sync::atomic::AtomicU64::new(0);
    let mut result = Ok(());
    // Rounds of fresh random cases until the budget is spent.
    while result.is_ok() && Instant::now() < deadline {
        let mut runner = TestRunner::new(RunnerConfig {
            cases: 2_000,
            failure_persistence: None,
            ..RunnerConfig::default()
        });
        result = runner.run(&request(), |fuzzed| {
            if Instant::now() > deadline {
                return Ok(());
            }
            let mut builder = http::Request::builder()
                .method(fuzzed.method)
                .uri(fuzzed.path.as_str());
            for (name, value) in &fuzzed.headers {
                if let Ok(value) = http::HeaderValue::from_bytes(value) {
                    builder = builder.header(*name, value);
                }
            }
            let Ok(request) = builder.body(Full::new(Bytes::from(fuzzed.body.clone()))) else {
                return Ok(()); // Not an HTTP request hyper would hand over.
            };
            tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let response = runtime.block_on(gateway.handle(request));
            let status = response.status();
            let body = runtime
                .block_on(response.into_body().collect())
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            if status.as_u16() >= 400 {
                let envelope: ErrorEnvelope = serde_json::from_slice(&body).map_err(|error| {
                    TestCaseError::fail(format!(
                        "{status}: not an error envelope ({error}): {}",
                        String::from_utf8_lossy(&body)
                    ))
                })?;
                let code = envelope.error.code;
                prop_assert!(ErrorCode::ALL.contains(&code));
                prop_assert!(
                    code != ErrorCode::Internal,
                    "internal error: {}",
                    envelope.error.message
                );
                let expected = if status == http::StatusCode::METHOD_NOT_ALLOWED {
                    ErrorCode::BadRequest.http_status().as_u16().max(405)
                } else {
                    code.http_status().as_u16()
                };
                prop_assert_eq!(status.as_u16(), expected, "{}", envelope.error.message);
            }
            Ok(())
        });
    }
    println!(
        "HTTP fuzz: {} requests",
        tried.load(std::sync::atomic::Ordering::Relaxed)
    );
    if let Err(failure) = result {
        panic!("the HTTP edge failed on a request: {failure}");
    }
    assert!(tried.into_inner() > 0, "no request was tried");
}
