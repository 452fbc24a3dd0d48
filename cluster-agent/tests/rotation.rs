//! Rotating the cluster secret without downtime, as the README tells an operator to: three
//! rolling restarts under load (add the new secret, make it first, remove the old), each
//! member drained by SIGTERM and started again, the gateway replaced by a new one before the
//! old one drains. No query fails and every answer is exact; at the end a call signed with the
//! old secret is refused and one signed with the new is served.

mod common;

use common::internal::{command, signed};
use common::{Federation, FederationOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Queries with known answers, sent round-robin.
const QUERIES: [(&str, &str); 3] = [
    ("SELECT count(*) AS n FROM region", "[{\"n\":5}]"),
    ("SELECT count(*) AS n FROM nation", "[{\"n\":25}]"),
    ("SELECT sum(n_regionkey) AS s FROM nation", "[{\"s\":50}]"),
];
const CLIENTS: usize = 3;
/// Bounds of each client's loop.
const MAX_QUERIES: usize = 20_000;
const MAX_TIME: Duration = Duration::from_secs(240);

#[derive(Default)]
struct Tally {
    ok: usize,
    failures: Vec<String>,
}

async fn client(url: Arc<RwLock<String>>, stop: Arc<AtomicBool>, tally: Arc<Mutex<Tally>>) {
    let started = Instant::now();
    for index in 0..MAX_QUERIES {
        if stop.load(Ordering::Relaxed) || started.elapsed() > MAX_TIME {
            return;
        }
        let (sql, expected) = QUERIES[index % QUERIES.len()];
        let base = url.read().unwrap().clone();
        let outcome = common::try_http(
            "POST",
            &format!("{base}/v1/query"),
            &[
                ("content-type", "text/plain"),
                ("accept", "application/json"),
            ],
            sql.to_string(),
        )
        .await;
        let mut tally = tally.lock().unwrap();
        match outcome {
            Ok(response) if response.status == 200 => {
                let rows: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
                if rows == serde_json::from_str::<serde_json::Value>(expected).unwrap() {
                    tally.ok += 1;
                } else {
                    tally.failures.push(format!("{sql}: wrong answer {rows}"));
                }
            }
            Ok(response) => tally.failures.push(format!(
                "{sql}: {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            )),
            Err(error) => tally.failures.push(format!("{sql}: {error}")),
        }
    }
}

/// One rolling restart: every shard, then every TaskManager, drained and started again with
/// `secret`; then a new gateway with it takes the load before the old one drains.
async fn roll(federation: &mut Federation, secret: &str, url: &RwLock<String>, step: usize) {
    for index in 0..federation.shards.len() {
        let name = format!("jm-{index}");
        federation.set_secret_of(&name, secret);
        federation.shards[index]
            .terminate(Duration::from_secs(40))
            .await;
        federation.restart_shard(index);
        converge(federation).await;
    }
    for index in 0..federation.taskmanagers.len() {
        let name = format!("tm-{index}");
        federation.set_secret_of(&name, secret);
        federation.taskmanagers[index]
            .terminate(Duration::from_secs(40))
            .await;
        federation.restart_taskmanager(index);
        converge(federation).await;
    }
    let replacement = federation.start_gateway(&format!("gateway-{step}"), secret);
    let mut old = std::mem::replace(&mut federation.gateway, replacement);
    let ready = format!("{}/readyz", federation.url());
    assert!(
        common::eventually(Duration::from_secs(30), async || {
            common::try_http("GET", &ready, &[], bytes::Bytes::new())
                .await
                .is_ok_and(|response| response.status == 200)
        })
        .await,
        "the new gateway never became ready"
    );
    *url.write().unwrap() = federation.url();
    // A load balancer's deregistration delay: a client that read the old address just before
    // the switch still reaches it. Then the old gateway drains (its queries finish).
    tokio::time::sleep(Duration::from_secs(1)).await;
    old.terminate(Duration::from_secs(40)).await;
    converge(federation).await;
}

async fn converge(federation: &Federation) {
    tokio::task::block_in_place(|| federation.wait_converged());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_secret_rotates_by_rolling_restarts_without_a_failed_query() {
    let mut federation = Federation::start_with_options(FederationOptions {
        pools: vec!["default".into(), "default".into()],
        shards: 2,
        ..FederationOptions::default()
    });
    let old = federation.secret.clone();
    let new = uuid::Uuid::new_v4().simple().to_string();
    let url = Arc::new(RwLock::new(federation.url()));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            flotilla_cluster::spawn_instrumented(client(
                Arc::clone(&url),
                Arc::clone(&stop),
                Arc::clone(&tally),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let steps = [
        format!("[\"{old}\", \"{new}\"]"),
        format!("[\"{new}\", \"{old}\"]"),
        format!("\"{new}\""),
    ];
    for (step, secret) in steps.iter().enumerate() {
        roll(&mut federation, secret, &url, step).await;
        let tally = tally.lock().unwrap();
        println!(
            "step {} ({secret}) done after {:.1} s: {} answers, {} failures",
            step + 1,
            started.elapsed().as_secs_f64(),
            tally.ok,
            tally.failures.len()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, failures) = {
        let tally = tally.lock().unwrap();
        (tally.ok, tally.failures.clone())
    };
    if !failures.is_empty() {
        federation.dump_logs();
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries failed during the rotation: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(ok > 100, "only {ok} answers");

    // The old secret is gone from the cluster, the new one serves.
    let shard = federation.shards[0].grpc_url();
    let refused = signed(&shard, &old)
        .await
        .get_flight_info(command("SELECT 1"))
        .await
        .expect_err("the old secret is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    signed(&shard, &new)
        .await
        .get_flight_info(command("SELECT 1"))
        .await
        .expect("the new secret is served");
}
