//! Queues and isolation pools: a flooding tenant gets 429s while others run, a saturated pool
//! queues and then answers `cluster_busy`, and a tenant bound to a pool runs only there.

use super::{ORDERS_BY_PRIORITY, REGIONS, assert_orders, assert_regions, query, u64_at};
use crate::common::{Federation, FederationOptions, state};
use std::collections::BTreeMap;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_gets_429_while_another_runs_and_busy_pools_answer_cluster_busy() {
    let federation = Federation::start_with_options(FederationOptions {
        pools: vec!["default".into()],
        jobmanager_toml: "queue_max_wait_ms = 30000\ntaskmanagers_per_query = 1\n".into(),
        gateway_toml: "[admission]\ntenant_max_concurrent = 2\ntenant_queue_length = 2\ntenant_max_wait_ms = 20000\n".into(),
        ..FederationOptions::default()
    });
    let url = federation.url();

    // Tenant A sends 16 at once: 2 run, 2 wait, 12 are refused with 429 + Retry-After.
    let flood: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            flotilla_cluster::spawn_instrumented(async move {
                query(&url, ORDERS_BY_PRIORITY, &[("x-flotilla-tenant", "a")]).await
            })
        })
        .collect();
    // Tenant B meanwhile runs 5 queries one after another; none is refused.
    let mut b_latencies = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let response = query(&url, REGIONS, &[("x-flotilla-tenant", "b")]).await;
        b_latencies.push(started.elapsed());
        assert_regions(&response);
    }
    let mut outcomes = BTreeMap::<String, usize>::new();
    for handle in flood {
        let response = handle.await.unwrap();
        if response.status == 200 {
            assert_orders(&response);
            *outcomes.entry("200".into()).or_default() += 1;
        } else {
            assert_eq!(
                response.status,
                429,
                "{}",
                String::from_utf8_lossy(&response.body)
            );
            assert_eq!(response.error_code(), "tenant_queue_full");
            assert_eq!(response.header("retry-after").as_deref(), Some("1"));
            *outcomes.entry("429".into()).or_default() += 1;
        }
    }
    eprintln!("tenant a: {outcomes:?}; tenant b latencies: {b_latencies:?}");
    assert!(
        outcomes.get("429").copied().unwrap_or(0) >= 1,
        "{outcomes:?}"
    );
    assert!(
        outcomes.get("200").copied().unwrap_or(0) >= 2,
        "{outcomes:?}"
    );
    assert_eq!(outcomes.values().sum::<usize>(), 16, "none lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_pool_queues_then_answers_cluster_busy_never_silently() {
    let federation = Federation::start_with_options(FederationOptions {
        pools: vec!["default".into()],
        slots: 1,
        shards: 1,
        jobmanager_toml: "queue_max_wait_ms = 200\nqueue_length = 2\ntaskmanagers_per_query = 1\n"
            .into(),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let queries: Vec<_> = (0..12)
        .map(|index| {
            let url = url.clone();
            let tenant = format!("t{index}");
            flotilla_cluster::spawn_instrumented(async move {
                query(&url, ORDERS_BY_PRIORITY, &[("x-flotilla-tenant", &tenant)]).await
            })
        })
        .collect();
    let mut outcomes = BTreeMap::<u16, usize>::new();
    for handle in queries {
        let response = handle.await.unwrap();
        match response.status {
            200 => assert_orders(&response),
            503 => {
                assert_eq!(response.error_code(), "cluster_busy");
                assert_eq!(response.header("retry-after").as_deref(), Some("1"));
            }
            other => panic!("{other}: {}", String::from_utf8_lossy(&response.body)),
        }
        *outcomes.entry(response.status).or_default() += 1;
    }
    eprintln!("12 queries on 1 slot, queue of 2 for 200 ms: {outcomes:?}");
    assert!(outcomes.get(&200).copied().unwrap_or(0) >= 1);
    assert!(outcomes.get(&503).copied().unwrap_or(0) >= 1);
    let shard = state(&federation.shards[0]).await;
    assert_eq!(u64_at(&shard, "/queued"), 0, "the queue drained");
    let tm = state(&federation.taskmanagers[0]).await;
    assert_eq!(u64_at(&tm, "/slots/slots_used"), 0, "no slot leaked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_bound_to_a_pool_runs_only_there() {
    let federation = Federation::start_with_options(FederationOptions {
        pools: vec!["default".into(), "default".into(), "iso".into()],
        gateway_toml: "[tenants.secure]\npool = \"iso\"\n".into(),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let work = async |federation: &Federation| -> Vec<u64> {
        let mut counts = Vec::new();
        for taskmanager in &federation.taskmanagers {
            let view = state(taskmanager).await;
            counts.push(u64_at(&view, "/handovers_total") + u64_at(&view, "/tasks_total"));
        }
        counts
    };
    let before = work(&federation).await;
    for _ in 0..6 {
        assert_orders(&query(&url, ORDERS_BY_PRIORITY, &[("x-flotilla-tenant", "secure")]).await);
    }
    let after_secure = work(&federation).await;
    assert_eq!(
        after_secure[..2],
        before[..2],
        "the default pool did no work for tenant secure"
    );
    assert!(
        after_secure[2] > before[2],
        "the iso pool ran tenant secure's queries"
    );
    for _ in 0..6 {
        assert_orders(&query(&url, ORDERS_BY_PRIORITY, &[]).await);
    }
    let after_default = work(&federation).await;
    assert_eq!(
        after_default[2], after_secure[2],
        "the iso pool did no other work"
    );
    assert!(after_default[0] + after_default[1] > after_secure[0] + after_secure[1]);
}
