//! Closed-loop throughput of one query through a running federation: `clients` concurrent
//! loops, each sending the next query when the previous answer is fully read, for `seconds`.
//! Prints queries/s, p50/p99 of the successes and the answers by status and code. (The full
//! load tool, with open loops and query mixes, lives in `load-tests/`.)
//!
//! `cargo run --release -p cluster-agent --example throughput -- URL CLIENTS SECONDS [SQL] [TENANT]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let clients: usize = args
        .next()
        .map(|text| text.parse())
        .transpose()?
        .unwrap_or(8);
    let seconds: u64 = args
        .next()
        .map(|text| text.parse())
        .transpose()?
        .unwrap_or(10);
    let sql = args.next().unwrap_or_else(|| {
        "SELECT o_orderpriority, count(*) AS n FROM orders GROUP BY o_orderpriority".into()
    });
    let tenant = args.next();
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let loops = (0..clients).map(|_| {
        let http = http.clone();
        let url = format!("{url}/v1/query");
        let sql = sql.clone();
        let tenant = tenant.clone();
        flotilla_cluster::spawn_instrumented(async move {
            let mut latencies = Vec::new();
            let mut outcomes = BTreeMap::<String, usize>::new();
            // Bounded by time and by count.
            for _ in 0..1_000_000 {
                if Instant::now() >= deadline {
                    break;
                }
                let mut request = http::Request::post(&url)
                    .header("content-type", "text/plain")
                    .header("accept", "application/vnd.apache.arrow.stream");
                if let Some(tenant) = &tenant {
                    request = request.header("x-flotilla-tenant", tenant);
                }
                let request =
                    request.body(http_body_util::Full::new(bytes::Bytes::from(sql.clone())))?;
                let sent = Instant::now();
                let response = http.request(request).await?;
                let status = response.status().as_u16();
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await?
                    .to_bytes();
                let key = if status == 200 {
                    latencies.push(sent.elapsed());
                    "200".to_string()
                } else {
                    let code = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|json| json["error"]["code"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    format!("{status} {code}")
                };
                *outcomes.entry(key).or_default() += 1;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((latencies, outcomes))
        })
    });
    let mut latencies = Vec::new();
    let mut outcomes = BTreeMap::<String, usize>::new();
    for handle in futures::future::join_all(loops).await {
        let (mut own, counts) = handle?.map_err(|error| error.to_string())?;
        latencies.append(&mut own);
        for (key, count) in counts {
            *outcomes.entry(key).or_default() += count;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * q).round() as usize)
            .map_or(0.0, |latency| latency.as_secs_f64() * 1e3)
    };
    println!(
        "clients={clients} seconds={elapsed:.1} ok={} qps={:.1} p50={:.2} ms p99={:.2} ms outcomes={outcomes:?}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        quantile(0.50),
        quantile(0.99)
    );
    Ok(())
}
