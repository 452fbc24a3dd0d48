//! Observability end to end: metrics move with the queries, every process exposes its process
//! metrics, `GET /v1/query/{id}` reports a query's phases, and one query's id and trace id join
//! the logs of the gateway, its shard and every TaskManager that ran it.

mod common;

use common::{Federation, FederationOptions, HttpResponse, Process, http, metric_sum, state};
use std::time::Duration;

const REGIONS: &str = "SELECT r_name FROM region ORDER BY r_name";

async fn query(url: &str, sql: &str, headers: &[(&str, &str)]) -> HttpResponse {
    common::query_json(url, sql, headers).await
}

fn gateway_metrics(federation: &Federation) -> String {
    format!("{}/metrics", federation.url())
}

async fn agents_sum(processes: &[Process], series: &str) -> f64 {
    let mut sum = 0.0;
    for process in processes {
        sum += metric_sum(&format!("{}/metrics", process.admin_url()), series).await;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_query_and_every_error_code() {
    let federation = Federation::start();
    let url = federation.url();
    let metrics = gateway_metrics(&federation);
    let ok = r#"flotilla_gateway_queries_total{code="ok",protocol="http"}"#;
    let syntax = r#"flotilla_gateway_queries_total{code="sql_syntax",protocol="http"}"#;
    let media = r#"flotilla_gateway_queries_total{code="unsupported_media_type",protocol="http"}"#;
    let totals = r#"flotilla_gateway_query_phase_seconds_count{phase="total",protocol="http"}"#;
    let before = (
        metric_sum(&metrics, ok).await,
        metric_sum(&metrics, syntax).await,
        metric_sum(&metrics, media).await,
        metric_sum(&metrics, "flotilla_gateway_rows_streamed_total").await,
        metric_sum(&metrics, totals).await,
        agents_sum(
            &federation.shards,
            "flotilla_jobmanager_queries_planned_total",
        )
        .await,
        agents_sum(
            &federation.taskmanagers,
            "flotilla_taskmanager_tickets_served_total",
        )
        .await,
    );

    const N: usize = 12;
    let mut last_ok = None;
    for _ in 0..N {
        let response = query(&url, REGIONS, &[]).await;
        assert_eq!(
            response.status,
            200,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(response.json().as_array().unwrap().len(), 5);
        last_ok = response.header("x-flotilla-query-id");
    }
    let bad = query(&url, "SELEC nothing", &[]).await;
    assert_eq!((bad.status, bad.error_code().as_str()), (400, "sql_syntax"));
    let refused = http(
        "POST",
        &format!("{url}/v1/query"),
        &[("content-type", "image/png")],
        "SELECT 1",
    )
    .await;
    assert_eq!(refused.status, 415);

    // The gateway records a query's end when its response body ends, which the client may see
    // a moment before: wait for the counters to settle.
    let settled = common::eventually(Duration::from_secs(10), async || {
        metric_sum(&metrics, totals).await - before.4 >= (N + 2) as f64
    })
    .await;
    assert!(settled, "every query's end was recorded");
    assert_eq!(metric_sum(&metrics, ok).await - before.0, N as f64);
    assert_eq!(metric_sum(&metrics, syntax).await - before.1, 1.0);
    assert_eq!(metric_sum(&metrics, media).await - before.2, 1.0);
    assert_eq!(
        metric_sum(&metrics, "flotilla_gateway_rows_streamed_total").await - before.3,
        (N * 5) as f64
    );
    assert_eq!(
        metric_sum(&metrics, totals).await - before.4,
        (N + 2) as f64
    );
    assert_eq!(
        agents_sum(
            &federation.shards,
            "flotilla_jobmanager_queries_planned_total"
        )
        .await
            - before.5,
        N as f64,
        "the bad query was refused by its shard, not planned"
    );
    assert_eq!(
        agents_sum(
            &federation.taskmanagers,
            "flotilla_taskmanager_tickets_served_total"
        )
        .await
            - before.6,
        N as f64
    );

    // Every process exposes its process metrics and build info with its role.
    for (metrics_url, role) in std::iter::once((metrics.clone(), "gateway"))
        .chain(
            federation
                .shards
                .iter()
                .map(|shard| (format!("{}/metrics", shard.admin_url()), "jobmanager")),
        )
        .chain(
            federation
                .taskmanagers
                .iter()
                .map(|tm| (format!("{}/metrics", tm.admin_url()), "taskmanager")),
        )
    {
        assert!(metric_sum(&metrics_url, "flotilla_process_resident_memory_bytes").await > 1e6);
        assert!(metric_sum(&metrics_url, "flotilla_process_open_fds").await > 0.0);
        let build = format!(
            "flotilla_build_info{{role=\"{role}\",version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(metric_sum(&metrics_url, &build).await, 1.0, "{metrics_url}");
    }

    // GET /v1/query/{id}: the phases of a finished query, the code of a failed one.
    let last_ok = last_ok.expect("a query id header");
    let record = http("GET", &format!("{url}/v1/query/{last_ok}"), &[], "").await;
    assert_eq!(record.status, 200);
    let record = record.json();
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["rows"], 5);
    assert_eq!(record["sql"], REGIONS);
    let phases = &record["phases"];
    let at = |name: &str| {
        phases[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} in {record}"))
    };
    assert!(at("admitted_ms") <= at("planned_ms"), "{record}");
    assert!(at("planned_ms") <= at("first_byte_ms"), "{record}");
    assert!(at("first_byte_ms") <= at("total_ms"), "{record}");
    assert_eq!(record["trace_id"].as_str().unwrap().len(), 32);
    // Who served it: the result's TaskManager is one of those its stages were leased on.
    let stages: Vec<&str> = record["taskmanagers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|url| url.as_str().unwrap())
        .collect();
    let head = record["taskmanager"].as_str().unwrap();
    assert!(stages.contains(&head), "{record}");
    assert!(
        stages.iter().all(|stage| federation
            .taskmanagers
            .iter()
            .any(|tm| tm.grpc_url() == *stage)),
        "{record}"
    );
    // A catalog answer comes from the shard itself: no TaskManager is named.
    let tables = http("POST", &format!("{url}/v1/query"), &[], "SHOW TABLES").await;
    let tables_id = tables.header("x-flotilla-query-id").unwrap();
    assert!(tables.header("x-flotilla-taskmanager").is_none());
    let record = http("GET", &format!("{url}/v1/query/{tables_id}"), &[], "")
        .await
        .json();
    assert_eq!(record["status"], "succeeded", "{record}");
    assert!(record["taskmanager"].is_null(), "{record}");
    assert_eq!(record["taskmanagers"], serde_json::json!([]), "{record}");
    let bad_id = bad.header("x-flotilla-query-id").unwrap();
    let failed = http("GET", &format!("{url}/v1/query/{bad_id}"), &[], "")
        .await
        .json();
    assert_eq!(
        (failed["status"].as_str(), failed["code"].as_str()),
        (Some("failed"), Some("sql_syntax"))
    );
    let unknown = http(
        "GET",
        &format!("{url}/v1/query/{}", uuid::Uuid::new_v4()),
        &[],
        "",
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (404, "not_found")
    );
}

/// The log lines of `process` that mention `needle`.
fn log_lines(process: &Process, needle: &str) -> Vec<String> {
    std::fs::read_to_string(&process.log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_query_id_and_trace_id_join_the_logs_of_every_process_it_touched() {
    // Small scan partitions, spread over both TaskManagers: some stage tasks run on each. The
    // gateway logs JSON, the others text: both carry the query id and trace id.
    let federation = Federation::start_with_options(FederationOptions {
        jobmanager_toml:
            "queue_max_wait_ms = 30000\nscan_bytes_per_partition = 65536\nspread_within_host = true\n"
                .into(),
        gateway_toml: "[log]\nformat = \"json\"\n".into(),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let mut joined = 0;
    for sql in [
        "SELECT l_returnflag, count(*) AS n FROM lineitem GROUP BY l_returnflag",
        "SELECT count(*) AS n FROM lineitem JOIN orders ON l_orderkey = o_orderkey",
    ] {
        let mut tasks_before = Vec::new();
        for taskmanager in &federation.taskmanagers {
            tasks_before.push(state(taskmanager).await["tasks_total"].as_u64().unwrap());
        }
        let query_id = uuid::Uuid::new_v4().to_string();
        let response = query(
            &url,
            sql,
            &[
                ("x-flotilla-query-id", &query_id),
                ("traceparent", &traceparent),
            ],
        )
        .await;
        assert_eq!(
            response.status,
            200,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        let echoed = response
            .header("traceparent")
            .expect("a traceparent answer");
        assert!(echoed.starts_with(&format!("00-{trace_id}-")), "{echoed}");

        // Which processes did the query touch? Its shard and head TaskManager are named in the
        // response; the TaskManagers that ran its stage tasks show in their task counters.
        let shard_url = response.header("x-flotilla-shard").unwrap();
        let head_url = response.header("x-flotilla-taskmanager").unwrap();
        let mut touched: Vec<(&Process, &str)> = vec![(&federation.gateway, "query finished")];
        touched.extend(
            federation
                .shards
                .iter()
                .filter(|shard| shard.grpc_url() == shard_url)
                .map(|shard| (shard, "query handed over")),
        );
        let mut ran_tasks = 0;
        for (taskmanager, before) in federation.taskmanagers.iter().zip(tasks_before) {
            if taskmanager.grpc_url() == head_url {
                touched.push((taskmanager, "result stream ended"));
            }
            if state(taskmanager).await["tasks_total"].as_u64().unwrap() > before {
                touched.push((taskmanager, "stage task accepted"));
                ran_tasks += 1;
            }
        }
        assert_eq!(
            touched.len(),
            3 + ran_tasks,
            "{sql}: gateway, shard, head and workers"
        );
        for (process, message) in touched {
            let found = common::eventually(Duration::from_secs(10), async || {
                log_lines(process, &query_id)
                    .iter()
                    .any(|line| line.contains(message) && line.contains(trace_id))
            })
            .await;
            assert!(
                found,
                "{}: no `{message}` line with query {query_id} and trace {trace_id}; its lines of the query: {:#?}",
                process.name,
                log_lines(process, &query_id)
            );
        }
        // No line of the query carries another trace id.
        for process in federation.processes() {
            for line in log_lines(process, &query_id) {
                assert!(
                    !line.contains("trace_id") || line.contains(trace_id),
                    "{}: {line}",
                    process.name
                );
            }
        }
        // The gateway's JSON lines name both in the query span's fields.
        let finished: Vec<serde_json::Value> = log_lines(&federation.gateway, &query_id)
            .iter()
            .map(|line| serde_json::from_str(line).expect("a JSON log line"))
            .filter(|line: &serde_json::Value| line["fields"]["message"] == "query finished")
            .collect();
        assert_eq!(finished.len(), 1, "{finished:?}");
        assert_eq!(finished[0]["span"]["query_id"], query_id.as_str());
        assert_eq!(finished[0]["span"]["trace_id"], trace_id);
        assert_eq!(finished[0]["fields"]["code"], "ok");
        if ran_tasks > 1 {
            joined += 1;
        }
    }
    assert!(
        joined > 0,
        "some query ran stage tasks on both taskmanagers"
    );
}
