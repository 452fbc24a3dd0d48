//! Routing: a routing key pins a shard, many keys spread over shards, and a dead shard costs
//! nothing visible.

mod common;

use common::{Federation, http};

async fn shard_for(url: &str, key: &str) -> String {
    let response = http(
        "POST",
        &format!("{url}/v1/query"),
        &[
            ("content-type", "text/plain"),
            ("accept", "application/json"),
            ("x-flotilla-routing-key", key),
        ],
        "SELECT count(*) AS n FROM region",
    )
    .await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.json()[0]["n"], 5);
    response
        .header("x-flotilla-shard")
        .expect("x-flotilla-shard header")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_pin_shards_spread_load_and_survive_a_dead_shard() {
    let mut federation = Federation::start();
    let url = federation.url();

    let pinned = shard_for(&url, "tenant-a").await;
    for _ in 0..10 {
        assert_eq!(
            shard_for(&url, "tenant-a").await,
            pinned,
            "a fixed key stays on its shard"
        );
    }

    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for key in 0..40 {
        *seen
            .entry(shard_for(&url, &format!("key-{key}")).await)
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "many keys reach both shards: {seen:?}");

    // Kill the shard that owns "tenant-a" and ask again at once, before any probe noticed.
    let victim = federation
        .shards
        .iter()
        .position(|shard| shard.grpc_url() == pinned)
        .unwrap();
    federation.shards[victim].kill();
    let survivor = federation.shards[1 - victim].grpc_url();
    assert_eq!(
        shard_for(&url, "tenant-a").await,
        survivor,
        "retried on the other shard"
    );
    for key in 0..20 {
        assert_eq!(shard_for(&url, &format!("key-{key}")).await, survivor);
    }
    let cluster = http(
        "GET",
        &format!("{url}/v1/cluster"),
        &[],
        bytes::Bytes::new(),
    )
    .await
    .json();
    let down: Vec<_> = cluster["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|shard| shard["health"] == "down")
        .map(|shard| shard["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(down, vec![pinned], "/v1/cluster shows the dead shard down");
}
