//! Slot leases owned by the TaskManagers: never oversubscribed, a killed shard's slots back
//! within the TTL, and slots leased only where a query's plan runs.

use super::{
    ORDERS_BY_PRIORITY, REGIONS, assert_orders, assert_regions, leases_and_tasks, query, u64_at,
};
use crate::common::{self, Federation, FederationOptions, state};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
        queries.push(flotilla_cluster::spawn_instrumented(async move {
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
    let load = flotilla_cluster::spawn_instrumented(async move {
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
