//! One shared TaskManager pool: gossip membership (joins, kills, advertised addresses), slot
//! leases owned by the TaskManagers (never oversubscribed, returned within the TTL when a shard
//! dies), queues (tenant 429s, shard `cluster_busy`) and isolation pools.

mod addresses;
#[path = "../common/mod.rs"]
mod common;
mod leases;
mod membership;
mod queues;

use common::{HttpResponse, Process, state};

/// A query whose answer is known: 5 regions.
const REGIONS: &str = "SELECT count(*) AS n FROM region";

/// A query with a few stages and a known answer (SF 0.01 has 15,000 orders).
const ORDERS_BY_PRIORITY: &str = "SELECT o_orderpriority, count(*) AS n FROM orders GROUP BY o_orderpriority ORDER BY o_orderpriority";

async fn query(url: &str, sql: &str, headers: &[(&str, &str)]) -> HttpResponse {
    // Slots, leases and queues are what these tests watch: every query runs, none is
    // answered from the result cache.
    let mut all = vec![("cache-control", "no-cache")];
    all.extend_from_slice(headers);
    common::query_json(url, sql, &all).await
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
