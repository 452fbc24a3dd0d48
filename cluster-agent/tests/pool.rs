//! One shared TaskManager pool: gossip membership (joins and kills), slot leases owned by the
//! TaskManagers (never oversubscribed, returned within the TTL when a shard dies), queues
//! (tenant 429s, shard `cluster_busy`) and isolation pools.

mod common;

use common::{Federation, FederationOptions, HttpResponse, Process, http, state};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A query whose answer is known: 5 regions.
const REGIONS: &str = "SELECT count(*) AS n FROM region";
/// A query with a few stages and a known answer (SF 0.01 has 15,000 orders).
const ORDERS_BY_PRIORITY: &str = "SELECT o_orderpriority, count(*) AS n FROM orders GROUP BY o_orderpriority ORDER BY o_orderpriority";

async fn query(url: &str, sql: &str, headers: &[(&str, &str)]) -> HttpResponse {
    common::query_json(url, sql, headers).await
}

fn assert_regions(response: &HttpResponse) {
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.json()[0]["n"], 5);
}

fn assert_orders(response: &HttpResponse) {
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let rows = response.json();
    let total: u64 = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["n"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 15_000, "every order counted once: {rows}");
    assert_eq!(rows.as_array().unwrap().len(), 5);
}

fn u64_at(value: &serde_json::Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no {pointer} in {value}"))
}

async fn gateway_members(federation: &Federation) -> Vec<String> {
    let view = http(
        "GET",
        &format!("{}/v1/cluster", federation.url()),
        &[],
        bytes::Bytes::new(),
    )
    .await
    .json();
    view["members"]
        .as_array()
        .unwrap()
        .iter()
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
    gateway::spawn_instrumented(async move {
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
    let members = gateway_members(&federation).await;
    assert!(
        members.contains(&"tm-2".to_string()) && members.contains(&"jm-2".to_string()),
        "/v1/cluster shows the newcomers: {members:?}"
    );
    // SIGKILL the new TaskManager: once gossip drops it, no query fails or goes to it.
    federation.taskmanagers[tm].kill();
    let killed_at = Instant::now();
    let dropped = common::eventually(Duration::from_secs(15), async || {
        !gateway_members(&federation)
            .await
            .contains(&"tm-2".to_string())
    })
    .await;
    assert!(dropped, "/v1/cluster still lists the killed taskmanager");
    eprintln!(
        "killed taskmanager left the gossip view after {:?}",
        killed_at.elapsed()
    );
    for shard in &federation.shards {
        let dropped = common::eventually(Duration::from_secs(15), async || {
            !state(shard).await["cluster"]
                .as_array()
                .unwrap()
                .iter()
                .any(|member| member["id"] == "tm-2")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_never_oversubscribe_and_a_killed_shards_slots_return_within_the_ttl() {
    const TTL_MS: u64 = 2000;
    let mut federation = Federation::start_with_options(FederationOptions {
        slots: 2,
        jobmanager_toml: format!(
            "queue_max_wait_ms = 60000\ntaskmanagers_per_query = 1\nlease_ttl_ms = {TTL_MS}\n"
        ),
        ..FederationOptions::default()
    });
    let url = federation.url();

    // 24 concurrent queries on 2 × 2 slots: most wait in the shard queues, none fails.
    let mut queries = Vec::new();
    for index in 0..24 {
        let url = url.clone();
        queries.push(gateway::spawn_instrumented(async move {
            let key = format!("k{index}");
            query(
                &url,
                ORDERS_BY_PRIORITY,
                &[("x-flotilla-routing-key", &key)],
            )
            .await
        }));
    }
    for handle in queries {
        assert_orders(&handle.await.unwrap());
    }
    let mut refused = 0;
    for taskmanager in &federation.taskmanagers {
        let view = state(taskmanager).await;
        let used_max = u64_at(&view, "/slots/slots_used_max");
        assert!(
            used_max <= 2,
            "{} leased {used_max} of 2 slots",
            taskmanager.name
        );
        assert_eq!(
            u64_at(&view, "/slots/slots_used"),
            0,
            "every lease came back"
        );
        refused += u64_at(&view, "/slots/leases_refused_total");
    }
    eprintln!("24 queries on 4 slots: {refused} reservations refused, none oversubscribed");

    // Freeze shard jm-0 while it holds a lease it has not handed over, then SIGKILL it: the
    // slots come back by expiry alone.
    let url_for_load = url.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_load = Arc::clone(&stop);
    let load = gateway::spawn_instrumented(async move {
        let mut rounds = 0;
        while !stop_load.load(Ordering::Acquire) && rounds < 2_000 {
            let batch: Vec<_> = (0..6)
                .map(|index| {
                    let url = url_for_load.clone();
                    let key = format!("k{index}");
                    async move {
                        query(
                            &url,
                            ORDERS_BY_PRIORITY,
                            &[("x-flotilla-routing-key", &key)],
                        )
                        .await
                    }
                })
                .collect();
            futures::future::join_all(batch).await;
            rounds += 1;
        }
    });
    let victim = federation.shards[0].pid();
    let mut caught = Vec::new();
    for _attempt in 0..200 {
        tokio::time::sleep(Duration::from_millis(7)).await;
        signal(victim, nix::sys::signal::Signal::SIGSTOP);
        caught = unadopted_leases_of(&federation, "jm-0").await;
        if !caught.is_empty() {
            break;
        }
        signal(victim, nix::sys::signal::Signal::SIGCONT);
    }
    assert!(
        !caught.is_empty(),
        "never caught jm-0 holding a lease before its hand-over"
    );
    federation.shards[0].kill();
    let killed_at = Instant::now();
    let returned = common::eventually(Duration::from_millis(TTL_MS + 3000), async || {
        let mut still: Vec<String> = Vec::new();
        for taskmanager in &federation.taskmanagers {
            for lease in state(taskmanager).await["leases"].as_array().unwrap() {
                still.push(lease["lease_id"].as_str().unwrap().to_string());
            }
        }
        caught.iter().all(|lease| !still.contains(lease))
    })
    .await;
    let elapsed = killed_at.elapsed();
    stop.store(true, Ordering::Release);
    load.await.unwrap();
    assert!(returned, "the dead shard's leases {caught:?} never expired");
    eprintln!(
        "dead shard's {} lease(s) returned {elapsed:?} after SIGKILL (TTL {TTL_MS} ms)",
        caught.len()
    );
    assert!(elapsed <= Duration::from_millis(TTL_MS + 1000));
    assert!(
        common::eventually(Duration::from_secs(10), async || {
            let mut used = 0;
            for taskmanager in &federation.taskmanagers {
                used += u64_at(&state(taskmanager).await, "/slots/slots_used");
            }
            used == 0
        })
        .await
    );
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

async fn unadopted_leases_of(federation: &Federation, holder: &str) -> Vec<String> {
    let mut leases = Vec::new();
    for taskmanager in &federation.taskmanagers {
        for lease in state(taskmanager).await["leases"].as_array().unwrap() {
            if lease["holder"] == holder && lease["adopted"] == false {
                leases.push(lease["lease_id"].as_str().unwrap().to_string());
            }
        }
    }
    leases
}

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
            gateway::spawn_instrumented(async move {
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
            gateway::spawn_instrumented(async move {
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

/// Leases granted and stage tasks run so far, summed over the TaskManagers.
async fn leases_and_tasks(taskmanagers: &[Process]) -> (u64, u64) {
    let (mut leases, mut tasks) = (0, 0);
    for taskmanager in taskmanagers {
        let view = state(taskmanager).await;
        leases += u64_at(&view, "/slots/leases_granted_total");
        tasks += u64_at(&view, "/tasks_total");
    }
    (leases, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_leases_slots_only_on_the_taskmanagers_its_plan_uses() {
    // Small scan partitions, and spreading over TaskManagers that share a host (all do here):
    // the test data is big enough to spread over both.
    let federation = Federation::start_with_options(FederationOptions {
        jobmanager_toml:
            "queue_max_wait_ms = 30000\nscan_bytes_per_partition = 65536\nspread_within_host = true\n"
                .into(),
        ..FederationOptions::default()
    });
    let url = federation.url();
    // A single-stage query runs on its head alone: one lease (taken by the hand-over itself),
    // not one on each of `taskmanagers_per_query` TaskManagers; no stage task anywhere.
    let before = leases_and_tasks(&federation.taskmanagers).await;
    for _ in 0..5 {
        assert_regions(&query(&url, REGIONS, &[]).await);
    }
    let after = leases_and_tasks(&federation.taskmanagers).await;
    assert_eq!(after.0 - before.0, 5, "one lease per single-stage query");
    assert_eq!(after.1, before.1, "no stage task for a single-stage query");
    for taskmanager in &federation.taskmanagers {
        assert_eq!(u64_at(&state(taskmanager).await, "/slots/slots_used"), 0);
    }
    // A multi-stage query leases every TaskManager its stage tasks run on, and no other.
    let mut distributed = 0;
    for sql in [
        ORDERS_BY_PRIORITY,
        "SELECT l_returnflag, count(*) AS n FROM lineitem GROUP BY l_returnflag",
        "SELECT count(*) AS n FROM lineitem JOIN orders ON l_orderkey = o_orderkey",
    ] {
        let mut before = Vec::new();
        for taskmanager in &federation.taskmanagers {
            let view = state(taskmanager).await;
            before.push((
                u64_at(&view, "/slots/leases_granted_total"),
                u64_at(&view, "/tasks_total"),
            ));
        }
        let response = query(&url, sql, &[]).await;
        assert_eq!(response.status, 200, "{sql}");
        let (mut leased, mut ran_tasks) = (0, 0);
        for (taskmanager, (leases, tasks)) in federation.taskmanagers.iter().zip(before) {
            let view = state(taskmanager).await;
            leased += u64_at(&view, "/slots/leases_granted_total") - leases;
            ran_tasks += u64::from(u64_at(&view, "/tasks_total") > tasks);
        }
        println!("{sql}: {leased} lease(s), stage tasks on {ran_tasks} taskmanager(s)");
        assert_eq!(leased, ran_tasks.max(1), "{sql}");
        if ran_tasks > 1 {
            distributed += 1;
        }
    }
    assert!(
        distributed > 0,
        "some query ran stage tasks on both taskmanagers"
    );
}
