//! Resource limits end to end: result rows and bytes per tenant, and each query's share of a
//! TaskManager's memory. Each limit is a clean error of its own, and disturbs nothing else.

mod common;

use common::{Federation, FederationOptions, metric_sum, query_json, try_http};
use std::time::Duration;

/// Lineitem's rows at the tests' scale, from in-process DataFusion.
async fn lineitem_rows() -> u64 {
    let batches = common::reference_batches("SELECT count(*) AS n FROM lineitem").await;
    let column = batches[0].column(0);
    datafusion::arrow::array::cast::as_primitive_array::<datafusion::arrow::datatypes::Int64Type>(
        column,
    )
    .value(0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_over_a_tenants_limits_end_with_result_too_large() {
    let federation = Federation::start_with_options(FederationOptions {
        gateway_toml: "[tenants.tiny]\nmax_result_rows = 100\n\
                       [tenants.mid]\nmax_result_rows = 20000\n\
                       [tenants.narrow]\nmax_result_bytes = 10000\n"
            .into(),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let metrics = format!("{url}/metrics");
    let series = "flotilla_gateway_queries_total{code=\"result_too_large\",protocol=\"http\"}";
    let before = metric_sum(&metrics, series).await;
    let tenant = |name| [("x-flotilla-tenant", name)];
    let all = "SELECT l_orderkey, l_comment FROM lineitem";

    // The first batch already crosses the limit: the status says so.
    for name in ["tiny", "narrow"] {
        let response = query_json(&url, all, &tenant(name)).await;
        assert_eq!(
            (response.status, response.error_code().as_str()),
            (422, "result_too_large"),
            "{name}: {}",
            String::from_utf8_lossy(&response.body)
        );
        let message = response.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains("LIMIT"), "{message}");
    }
    // Exactly at the limit passes; under the limit, as before.
    let response = query_json(&url, &format!("{all} LIMIT 100"), &tenant("tiny")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json().as_array().unwrap().len(), 100);
    // Past the first batch, the response is aborted: the client sees a broken transfer, never
    // a short result that looks whole.
    let broken = try_http(
        "POST",
        &format!("{url}/v1/query"),
        &[
            ("content-type", "text/plain"),
            ("accept", "application/vnd.apache.arrow.stream"),
            ("x-flotilla-tenant", "mid"),
        ],
        all.to_string(),
    )
    .await;
    match broken {
        Err(error) => assert!(error.contains("body"), "{error}"),
        Ok(response) => panic!(
            "a result past 20,000 rows came back whole: {} with {} bytes",
            response.status,
            response.body.len()
        ),
    }
    // Other tenants are not limited: the whole table comes back, checked against DataFusion.
    let response = query_json(&url, all, &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json().as_array().unwrap().len() as u64,
        lineitem_rows().await
    );

    let counted = common::eventually(Duration::from_secs(5), async || {
        metric_sum(&metrics, series).await - before == 3.0
    })
    .await;
    assert!(counted, "three queries ended with result_too_large");
    let released = federation
        .taskmanagers_settle_to_zero("/slots/slots_used")
        .await;
    assert!(released, "every slot was released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_memory_share_fails_alone() {
    // A 1 GiB pool per TaskManager, of which one query may hold 4 MiB.
    let federation = Federation::start_with_options(FederationOptions {
        taskmanager_toml: "memory_limit_mb = 1024\nquery_memory_limit_mb = 4\n".into(),
        ..FederationOptions::default()
    });
    let url = federation.url();
    // A hash join's build side cannot spill: here 300,000 strings of about 35 bytes, more
    // than 4 MiB on each TaskManager (the pool would hold it many times over).
    let hog = query_json(
        &url,
        "WITH c AS (SELECT l_comment || r_name AS c FROM lineitem, region) \
         SELECT count(*) AS n FROM c x JOIN c y ON x.c = y.c",
        &[],
    );
    let normal = async {
        // Meanwhile other queries run as usual.
        let mut answers = Vec::new();
        for _ in 0..5 {
            answers.push(query_json(&url, "SELECT count(*) AS n FROM orders", &[]).await);
        }
        answers
    };
    let (hog, normal) = tokio::join!(hog, normal);
    for answer in normal {
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()[0]["n"], 15000);
    }
    if hog.status != 507 {
        federation.dump_logs();
    }
    assert_eq!(
        (hog.status, hog.error_code().as_str()),
        (507, "resources_exhausted"),
        "{}",
        String::from_utf8_lossy(&hog.body)
    );
    let message = hog.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("query_memory_limit_mb"), "{message}");
    // Its memory is back in the pool.
    let freed = federation
        .taskmanagers_settle_to_zero("/memory_used_bytes")
        .await;
    assert!(freed, "the TaskManagers' pools are empty again");
}
