//! All 22 TPC-H queries and the short queries through the real federation, over HTTP (Arrow)
//! and through the Rust client, each compared with in-process DataFusion on the same files.

mod common;

use common::compare::assert_same;
use common::{Federation, is_ordered, post_sql, reference_context, samples};
use futures::TryStreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_query_matches_in_process_datafusion() {
    let federation = Federation::start();
    let url = federation.url();
    let reference = reference_context().await;
    let client = flotilla_client::Client::new(&url).unwrap();
    let mut checked = 0;
    for (name, sql) in samples() {
        let expected = reference.sql(&sql).await.unwrap().collect().await.unwrap();

        let response = post_sql(&url, &sql, "application/vnd.apache.arrow.stream").await;
        if response.status != 200 {
            federation.dump_logs();
            panic!(
                "{name}: HTTP {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
        }
        assert!(
            response.header("x-flotilla-query-id").is_some(),
            "{name}: query id header"
        );
        assert_same(
            &format!("{name} over HTTP"),
            &response.arrow(),
            &expected,
            is_ordered(&sql),
        );

        let stream = client
            .query(&sql)
            .await
            .unwrap_or_else(|error| panic!("{name}: client: {error}"));
        assert_eq!(
            stream.schema().fields().len(),
            expected[0].schema().fields().len(),
            "{name}: schema"
        );
        let batches: Vec<_> = stream
            .try_collect()
            .await
            .unwrap_or_else(|error| panic!("{name}: client stream: {error}"));
        assert_same(
            &format!("{name} via the Rust client"),
            &batches,
            &expected,
            is_ordered(&sql),
        );
        checked += 1;
    }
    assert_eq!(checked, 22 + 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_carries_the_same_rows() {
    let federation = Federation::start();
    let url = federation.url();
    let sql = "SELECT n_nationkey, n_name, n_comment FROM nation ORDER BY n_nationkey";
    let expected = common::reference_batches(sql).await;
    let expected_rows: usize = expected.iter().map(|batch| batch.num_rows()).sum();

    let json = post_sql(&url, sql, "application/json").await;
    assert_eq!(json.status, 200);
    assert_eq!(
        json.header("content-type").as_deref(),
        Some("application/json")
    );
    let rows = json.json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), expected_rows);
    assert_eq!(rows[7]["n_nationkey"], 7);
    assert_eq!(rows[7]["n_name"], "GERMANY");

    let ndjson = post_sql(&url, sql, "application/x-ndjson").await;
    let lines: Vec<serde_json::Value> = String::from_utf8(ndjson.body.to_vec())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), expected_rows);
    assert_eq!(lines[0]["n_name"], "ALGERIA");

    let csv = post_sql(&url, sql, "text/csv").await;
    let text = String::from_utf8(csv.body.to_vec()).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("n_nationkey,n_name,n_comment"));
    assert_eq!(lines.count(), expected_rows);

    // JSON request bodies work like text ones.
    let from_json = common::http(
        "POST",
        &format!("{url}/v1/query"),
        &[
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ],
        serde_json::to_vec(&serde_json::json!({ "sql": sql })).unwrap(),
    )
    .await;
    assert_eq!(from_json.json(), json.json());
}
