//! Results bypass the shard: a result of tens of megabytes streams from a TaskManager through
//! the gateway while the shard that planned it sends almost nothing.

mod common;

use common::{Federation, post_sql, state};

/// The metric value of `name` in a Prometheus text exposition.
async fn metric(process: &common::Process, name: &str) -> f64 {
    common::metric_sum(&format!("{}/metrics", process.admin_url()), name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_never_passes_through_the_shard() {
    let federation = Federation::start_with(2, 1);
    let url = federation.url();
    let shard = &federation.shards[0];

    let copies = 6;
    let sql = vec!["SELECT * FROM lineitem"; copies].join(" UNION ALL ");
    let expected_rows: u64 = {
        let reference = common::reference_context().await;
        let batches = reference
            .sql("SELECT count(*) FROM lineitem")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let count = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap()
            .value(0);
        count as u64 * copies as u64
    };

    let shard_written_before = shard.written_bytes();
    let shard_sent_before = metric(shard, "flotilla_jobmanager_response_bytes_total").await;
    let mut taskmanager_sent_before = 0.0;
    for taskmanager in &federation.taskmanagers {
        taskmanager_sent_before +=
            metric(taskmanager, "flotilla_taskmanager_flight_bytes_sent_total").await;
    }

    let response = post_sql(&url, &sql, "application/vnd.apache.arrow.stream").await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let received = response.body.len() as u64;
    let rows: u64 = response
        .arrow()
        .iter()
        .map(|batch| batch.num_rows() as u64)
        .sum();
    assert_eq!(rows, expected_rows, "every row arrived");
    assert!(
        received >= 50 * 1024 * 1024,
        "the result is at least 50 MiB, got {received} bytes"
    );

    let shard_written = shard.written_bytes() - shard_written_before;
    let shard_sent =
        metric(shard, "flotilla_jobmanager_response_bytes_total").await - shard_sent_before;
    let mut taskmanager_sent = -taskmanager_sent_before;
    for taskmanager in &federation.taskmanagers {
        taskmanager_sent +=
            metric(taskmanager, "flotilla_taskmanager_flight_bytes_sent_total").await;
    }
    eprintln!(
        "result {received} bytes; taskmanagers sent {taskmanager_sent} Flight bytes; shard sent {shard_sent} response bytes and wrote {shard_written} bytes in all"
    );
    assert!(
        taskmanager_sent >= 50.0 * 1024.0 * 1024.0,
        "the TaskManagers streamed the result"
    );
    assert!(
        shard_sent < 64.0 * 1024.0,
        "the shard's gRPC answers stay tiny: {shard_sent}"
    );
    assert!(
        shard_written < 2 * 1024 * 1024,
        "the shard process wrote {shard_written} bytes (sockets and logs) while a {received}-byte result streamed"
    );
    assert_eq!(state(shard).await["queries_planned"], 1);
}
