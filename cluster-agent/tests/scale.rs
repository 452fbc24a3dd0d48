//! One cluster of many TaskManagers: 48 TaskManagers of one slot report to 2 shards with the
//! default report settings. Every shard sees every TaskManager; a TaskManager's report traffic
//! is what one report per shard per second costs, whatever the cluster's size; the short mix
//! answers what in-process DataFusion answers; 5 TaskManagers killed with SIGKILL under load
//! leave every shard's choice within 3 s, with no wrong answer and at most 0.5 % errors.

mod common;

use common::compare::same;
use common::{Federation, FederationOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TASKMANAGERS: usize = 48;
const KILLED: usize = 5;

/// `report_bytes_sent` of TaskManager `index`, from its `/v1/state`.
async fn report_bytes(federation: &Federation, index: usize) -> u64 {
    common::state(&federation.taskmanagers[index]).await["cluster"]["report_bytes_sent"]
        .as_u64()
        .unwrap()
}

/// Runs the short mix from `clients` clients, `rounds` times each; returns (answers, wrong,
/// errors).
async fn short_mix(url: &str, clients: usize, rounds: usize) -> (u64, u64, u64) {
    let samples = common::short_samples();
    let mut expected = Vec::new();
    for (_, sql) in &samples {
        expected.push(common::reference_batches(sql).await);
    }
    let cases: Arc<Vec<(String, Vec<_>)>> = Arc::new(
        samples
            .into_iter()
            .map(|(_, sql)| sql)
            .zip(expected)
            .collect(),
    );
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (url, cases, counts) = (url.to_string(), Arc::clone(&cases), Arc::clone(&counts));
        tasks.push(flotilla_cluster::spawn_instrumented(async move {
            for round in 0..rounds {
                let (sql, expected) = &cases[(client + round) % cases.len()];
                let response = common::try_http(
                    "POST",
                    &format!("{url}/v1/query"),
                    &[
                        ("content-type", "text/plain"),
                        ("accept", "application/vnd.apache.arrow.stream"),
                    ],
                    sql.clone(),
                )
                .await;
                match response {
                    Ok(response) if response.status == 200 => {
                        let right = same(&response.arrow(), expected, common::is_ordered(sql));
                        counts[if right { 0 } else { 1 }].fetch_add(1, Ordering::AcqRel);
                    }
                    Ok(response) => {
                        eprintln!(
                            "error {}: {}",
                            response.status,
                            String::from_utf8_lossy(&response.body)
                        );
                        counts[2].fetch_add(1, Ordering::AcqRel);
                    }
                    Err(error) => {
                        eprintln!("transport error: {error}");
                        counts[2].fetch_add(1, Ordering::AcqRel);
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let [right, wrong, errors] = &*counts;
    (
        right.load(Ordering::Acquire),
        wrong.load(Ordering::Acquire),
        errors.load(Ordering::Acquire),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_eight_taskmanagers_report_to_every_shard_and_killed_ones_leave_within_3s() {
    let started = Instant::now();
    let mut federation = Federation::start_with_options(FederationOptions {
        pools: vec!["default".into(); TASKMANAGERS],
        slots: 1,
        shards: 2,
        // The defaults: a report per shard each second, passed over after 2.5 s of silence.
        reports_toml: "[reports]\n".into(),
        ..FederationOptions::default()
    });
    eprintln!(
        "{TASKMANAGERS} TaskManagers seen by both shards after {:?}",
        started.elapsed()
    );
    let url = federation.url();

    // Report traffic per TaskManager: one report (≈ 120 bytes) per shard per second.
    let sampled = [0, TASKMANAGERS / 2, TASKMANAGERS - 1];
    let mut before = Vec::new();
    for &index in &sampled {
        before.push(report_bytes(&federation, index).await);
    }
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (&index, before) in sampled.iter().zip(before) {
        let rate = (report_bytes(&federation, index).await - before) as f64
            / window.elapsed().as_secs_f64();
        eprintln!("tm-{index} sends {rate:.0} B/s of reports");
        assert!((100.0..=600.0).contains(&rate), "tm-{index}: {rate:.0} B/s");
    }

    // The short mix answers what DataFusion answers.
    let (right, wrong, errors) = short_mix(&url, 4, 14).await;
    assert_eq!((wrong, errors), (0, 0), "{right} right answers");

    // SIGKILL 5 TaskManagers while the mix runs: every shard passes them over within 3 s.
    let load = {
        let url = url.clone();
        flotilla_cluster::spawn_instrumented(async move { short_mix(&url, 4, 50).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed: Vec<String> = (0..KILLED)
        .map(|index| format!("tm-{}", index * 9 + 1))
        .collect();
    for index in (0..KILLED).map(|index| index * 9 + 1) {
        federation.taskmanagers[index].kill();
    }
    let killed_at = Instant::now();
    let passed_over = common::eventually(Duration::from_secs(10), async || {
        for shard in &federation.shards {
            let state = common::state(shard).await;
            let members = state["taskmanagers"]["members"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if members.iter().any(|member| {
                killed.contains(&member["id"].as_str().unwrap_or_default().to_string())
                    && member["state"] == "up"
            }) {
                return false;
            }
        }
        true
    })
    .await;
    let after = killed_at.elapsed();
    eprintln!("the {KILLED} killed TaskManagers were passed over by both shards after {after:?}");
    assert!(passed_over, "a shard still chooses a killed TaskManager");
    // 2.5 s of silence, a 100 ms sweep, and this test's polling on a shared 2-core machine.
    assert!(after < Duration::from_millis(3500), "{after:?}");
    let (right, wrong, errors) = load.await.unwrap();
    eprintln!("under the kill: {right} right, {wrong} wrong, {errors} errors");
    assert_eq!(wrong, 0);
    assert!(
        errors * 200 <= right + wrong + errors,
        "{errors} errors of {}",
        right + errors
    );
}
