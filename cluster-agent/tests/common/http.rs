//! HTTP against a gateway or an agent's admin port, as a test client: a request read whole,
//! SQL posted for Arrow or JSON, a Prometheus series summed.

use bytes::Bytes;
use datafusion::arrow::record_batch::RecordBatch;
use http_body_util::{BodyExt, Full};
use std::time::Duration;

/// An HTTP response, fully read.
pub struct HttpResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    }

    /// Decodes an Arrow IPC stream body.
    pub fn arrow(&self) -> Vec<RecordBatch> {
        let reader = arrow_ipc::reader::StreamReader::try_new(
            std::io::Cursor::new(self.body.to_vec()),
            None,
        )
        .unwrap_or_else(|error| {
            panic!(
                "not an Arrow stream ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        });
        reader.map(Result::unwrap).collect()
    }
}

/// Sends one HTTP request and reads the whole response.
pub async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> HttpResponse {
    try_http(method, url, headers, body)
        .await
        .unwrap_or_else(|error| panic!("HTTP {method} {url}: {error}"))
}

/// Sends one HTTP request and reads the whole response; a transport failure or a response cut
/// short is an `Err`.
pub async fn try_http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<HttpResponse, String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(body.into()))
        .map_err(|error| error.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(120), client.request(request))
        .await
        .map_err(|_| "no answer within 120 s".to_string())?
        .map_err(|error| format!("request: {error:?}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| format!("reading the body: {error:?}"))?
        .to_bytes();
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Posts SQL as text/plain with the given Accept header.
pub async fn post_sql(url: &str, sql: &str, accept: &str) -> HttpResponse {
    http(
        "POST",
        &format!("{url}/v1/query"),
        &[("content-type", "text/plain"), ("accept", accept)],
        sql.to_string(),
    )
    .await
}

/// Sums the samples of `series` on the Prometheus endpoint `metrics_url`: `series` is a metric
/// name (every label set counts) or a name with its exact label set, as the text format prints
/// it (`flotilla_gateway_queries_total{code="ok",protocol="http"}`).
pub async fn metric_sum(metrics_url: &str, series: &str) -> f64 {
    let response = http("GET", metrics_url, &[], Bytes::new()).await;
    assert_eq!(response.status, 200, "GET {metrics_url}");
    String::from_utf8_lossy(&response.body)
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(key, _)| {
            *key == series || (!series.contains('{') && key.starts_with(&format!("{series}{{")))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

/// Posts SQL as text/plain asking for JSON rows, with extra headers.
pub async fn query_json(url: &str, sql: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut all = vec![
        ("content-type", "text/plain"),
        ("accept", "application/json"),
    ];
    all.extend_from_slice(headers);
    http("POST", &format!("{url}/v1/query"), &all, sql.to_string()).await
}
