//! Shards lost or restarted: a shard killed under load costs no query, a result outlives its
//! shard, and a rolling restart of every process under load fails nothing.

use super::{
    BIG_RESULT, assert_none_failed, expected_answers, gateway_counter, kill9, reference_count,
    spawn_load, states,
};
use crate::common::{self, Federation, FederationOptions, http};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_shard_under_load_fails_no_query() {
    let mut federation = Federation::start_with_options(FederationOptions {
        shards: 3,
        jobmanager_toml: "queue_max_wait_ms = 30000\nlease_ttl_ms = 3000\n".into(),
        ..FederationOptions::default()
    });
    let answers = Arc::new(expected_answers().await);
    let url = federation.url();
    let load = spawn_load(&url, 50.0, Duration::from_secs(12), &answers);
    tokio::time::sleep(Duration::from_secs(4)).await;
    kill9(&mut federation.shards[1]);
    let (sent, failures) = load.await.unwrap();
    let retries = gateway_counter(&url, "flotilla_gateway_retries_total").await;
    println!(
        "{sent} queries at 50/s, shard jm-1 killed -9 at 4 s: {} failed, {retries} retried",
        failures.len()
    );
    assert_none_failed(&federation, &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streaming_result_outlives_its_shard() {
    let mut federation = Federation::start();
    let expected = reference_count(&format!("SELECT count(*) FROM ({BIG_RESULT})")).await;
    let client = flotilla_client::Client::new(&federation.url()).unwrap();
    let mut stream = client.query(BIG_RESULT).await.unwrap();
    let mut rows = stream.next().await.unwrap().unwrap().num_rows() as i64;
    // The result is still streaming from its TaskManager when the shards die.
    let streaming: i64 = states(&federation.taskmanagers)
        .await
        .iter()
        .map(|state| state["results_streaming"].as_i64().unwrap())
        .sum();
    assert_eq!(streaming, 1, "the result should still be streaming");
    for shard in &mut federation.shards {
        kill9(shard);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Some(batch) = stream.next().await {
        rows += batch.expect("the result survives its shard").num_rows() as i64;
    }
    println!("{rows} rows streamed after every shard was killed -9 (expected {expected})");
    assert_eq!(rows, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_fails_no_query() {
    let mut federation = Federation::start_with_options(FederationOptions {
        jobmanager_toml: "queue_max_wait_ms = 30000\n".into(),
        ..FederationOptions::default()
    });
    let answers = Arc::new(expected_answers().await);
    let url = federation.url();
    let secret = federation.secret.clone();
    let load = spawn_load(&url, 30.0, Duration::from_secs(16), &answers);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let roles = [
        ("jobmanager", 0),
        ("jobmanager", 1),
        ("taskmanager", 0),
        ("taskmanager", 1),
    ];
    for (role, index) in roles {
        let process = if role == "jobmanager" {
            &mut federation.shards[index]
        } else {
            &mut federation.taskmanagers[index]
        };
        let drained = Instant::now();
        let answer = http(
            "POST",
            &format!("{}/admin/drain", process.admin_url()),
            &[("x-flotilla-cluster-secret", &secret)],
            "",
        )
        .await;
        assert_eq!(answer.status, 202);
        let status = tokio::task::block_in_place(|| process.child.wait().unwrap());
        assert!(status.success(), "{role} {index} exited with {status}");
        let exited = drained.elapsed();
        if role == "jobmanager" {
            federation.restart_shard(index);
        } else {
            federation.restart_taskmanager(index);
        }
        let process = if role == "jobmanager" {
            &federation.shards[index]
        } else {
            &federation.taskmanagers[index]
        };
        let grpc_url = process.grpc_url();
        let serving = common::eventually(Duration::from_secs(20), async || {
            let view = http("GET", &format!("{url}/v1/cluster"), &[], "")
                .await
                .json();
            common::all_members(&view).iter().any(|member| {
                member["grpc_url"] == grpc_url.as_str()
                    && member["draining"] == false
                    && member["starting"] == false
            })
        })
        .await;
        assert!(serving, "{role} {index} did not come back");
        println!(
            "{role} {index}: drained and exited 0 in {exited:?}, serving again after {:?}",
            drained.elapsed()
        );
    }
    let (sent, failures) = load.await.unwrap();
    println!(
        "rolling restart of 2 shards and 2 taskmanagers took {:?}; {sent} queries at 30/s, {} failed",
        started.elapsed(),
        failures.len()
    );
    assert_none_failed(&federation, &failures);
}
