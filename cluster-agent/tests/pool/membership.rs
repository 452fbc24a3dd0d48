//! Membership: a member that joins gets work within 2 s, a killed one gets none.

use super::{REGIONS, u64_at};
use crate::common::{self, Federation, Process, http, state};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The ids of the members `/v1/cluster` shows usable: gateways and shards from gossip, and the
/// TaskManagers a shard has `up`.
async fn gateway_members(federation: &Federation) -> Vec<String> {
    let view = http(
        "GET",
        &format!("{}/v1/cluster", federation.url()),
        &[],
        bytes::Bytes::new(),
    )
    .await
    .json();
    common::all_members(&view)
        .iter()
        .filter(|member| member["role"] != "taskmanager" || member["state"] == "up")
        .map(|member| member["id"].as_str().unwrap().to_string())
        .collect()
}

/// Runs queries with rotating routing keys until `stop`, at most `limit` of them; counts
/// failures after `strict` is set.
fn background_load(
    url: String,
    stop: Arc<AtomicBool>,
    strict: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    limit: usize,
) -> tokio::task::JoinHandle<usize> {
    flotilla_cluster::spawn_instrumented(async move {
        let mut sent = 0;
        while !stop.load(Ordering::Acquire) && sent < limit {
            let key = format!("key-{}", sent % 16);
            let response = common::try_http(
                "POST",
                &format!("{url}/v1/query"),
                &[
                    ("content-type", "text/plain"),
                    ("accept", "application/json"),
                    ("x-flotilla-routing-key", &key),
                    ("cache-control", "no-cache"),
                ],
                REGIONS,
            )
            .await;
            let outcome = match response {
                Ok(response) if response.status == 200 && response.json()[0]["n"] == 5 => Ok(()),
                Ok(response) => Err(String::from_utf8_lossy(&response.body).to_string()),
                Err(error) => Err(error),
            };
            if let Err(error) = outcome
                && strict.load(Ordering::Acquire)
            {
                failures.fetch_add(1, Ordering::AcqRel);
                eprintln!("failed after the kill was known: {error}");
            }
            sent += 1;
        }
        sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_members_get_work_within_2s_and_killed_ones_get_none() {
    let mut federation = Federation::start();
    let url = federation.url();
    let stop = Arc::new(AtomicBool::new(false));
    let strict = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let load = background_load(
        url.clone(),
        Arc::clone(&stop),
        Arc::clone(&strict),
        Arc::clone(&failures),
        20_000,
    );

    // A third TaskManager, then a third shard, join while queries run; each gets work within
    // 2 s of listening.
    let tm = federation.add_taskmanager("default");
    let tm_joined = Instant::now();
    let tm_work = common::eventually(Duration::from_secs(10), async || {
        u64_at(
            &state(&federation.taskmanagers[tm]).await,
            "/handovers_total",
        ) > 0
    })
    .await;
    let tm_after = tm_joined.elapsed();
    let jm = federation.add_shard();
    let jm_joined = Instant::now();
    let jm_work = common::eventually(Duration::from_secs(10), async || {
        u64_at(&state(&federation.shards[jm]).await, "/queries_planned") > 0
    })
    .await;
    let jm_after = jm_joined.elapsed();
    assert!(tm_work && jm_work, "the new members never got work");
    eprintln!("joined: taskmanager got work {tm_after:?} after listening, shard {jm_after:?}");
    assert!(
        tm_after < Duration::from_secs(2),
        "the taskmanager waited {tm_after:?}"
    );
    assert!(
        jm_after < Duration::from_secs(2),
        "the shard waited {jm_after:?}"
    );
    // Every shard learns of tm-2 once tm-2 learns of jm-2 (from the other shards' answers).
    let mut members = Vec::new();
    let shown = common::eventually(Duration::from_secs(5), async || {
        members = gateway_members(&federation).await;
        members.contains(&"tm-2".to_string()) && members.contains(&"jm-2".to_string())
    })
    .await;
    assert!(shown, "/v1/cluster shows the newcomers: {members:?}");
    // SIGKILL the new TaskManager: once its reports stop, no query fails or goes to it.
    federation.taskmanagers[tm].kill();
    let killed_at = Instant::now();
    let dropped = common::eventually(Duration::from_secs(15), async || {
        !gateway_members(&federation)
            .await
            .contains(&"tm-2".to_string())
    })
    .await;
    assert!(dropped, "/v1/cluster still shows the killed taskmanager up");
    eprintln!(
        "killed taskmanager no longer up in /v1/cluster after {:?}",
        killed_at.elapsed()
    );
    for shard in &federation.shards {
        let dropped = common::eventually(Duration::from_secs(15), async || {
            !state(shard).await["taskmanagers"]["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|member| member["id"] == "tm-2" && member["state"] == "up")
        })
        .await;
        assert!(dropped, "{} still sees tm-2", shard.name);
    }
    eprintln!("every shard dropped it after {:?}", killed_at.elapsed());
    strict.store(true, Ordering::Release);
    let before = federation_handovers(&federation.taskmanagers[..2]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Release);
    let sent = load.await.unwrap();
    let after = federation_handovers(&federation.taskmanagers[..2]).await;
    assert!(after > before, "queries kept running on the survivors");
    assert_eq!(
        failures.load(Ordering::Acquire),
        0,
        "no query failed once the kill was known ({sent} sent in all)"
    );
}

async fn federation_handovers(taskmanagers: &[Process]) -> u64 {
    let mut total = 0;
    for taskmanager in taskmanagers {
        total += u64_at(&state(taskmanager).await, "/handovers_total");
    }
    total
}
