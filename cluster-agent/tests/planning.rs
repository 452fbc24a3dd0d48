//! Planning across processes: the shards' plan cache, table versions (files added, removed
//! or rewritten while the federation runs), volatile functions, and plans deeper than
//! protobuf's nesting limit. Every result is checked against known values or in-process
//! DataFusion over the same files.

mod common;

use common::compare::assert_same;
use common::{Federation, FederationOptions, Process, metric_sum, query_json, reference_batches};
use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Asks for a fresh answer: planned (or taken from the plan cache) and run every time.
const NO_CACHE: (&str, &str) = ("cache-control", "no-cache");

/// Posts `sql` for an Arrow stream, bypassing the result cache.
async fn fresh(url: &str, sql: &str) -> common::HttpResponse {
    let headers = [
        ("content-type", "text/plain"),
        ("accept", "application/vnd.apache.arrow.stream"),
        NO_CACHE,
    ];
    common::http(
        "POST",
        &format!("{url}/v1/query"),
        &headers,
        sql.to_string(),
    )
    .await
}

/// How often the shards of the versions test list the table's files.
const REFRESH_MS: u64 = 200;

/// Sums a shard's plan cache counter (`hits`, `misses`, `invalidations`, ...).
async fn cache(shard: &Process, counter: &str) -> f64 {
    metric_sum(
        &format!("{}/metrics", shard.admin_url()),
        &format!("flotilla_jobmanager_plan_cache_{counter}_total"),
    )
    .await
}

/// Sums a counter over every shard.
async fn cache_total(federation: &Federation, counter: &str) -> f64 {
    let mut total = 0.0;
    for shard in &federation.shards {
        total += cache(shard, counter).await;
    }
    total
}

/// Runs `sql` pinned by `key` to one shard; returns its rows as JSON and the shard's URL. The
/// plan cache is what these tests watch: the result cache is bypassed.
async fn query(url: &str, sql: &str, key: &str) -> (serde_json::Value, String) {
    let headers = [("x-flotilla-routing-key", key), NO_CACHE];
    let response = query_json(url, sql, &headers).await;
    assert_eq!(
        response.status,
        200,
        "{sql}: {}",
        String::from_utf8_lossy(&response.body)
    );
    (
        response.json(),
        response.header("x-flotilla-shard").unwrap(),
    )
}

/// Writes a Parquet file of one `v` column holding `values`.
fn write_parquet(path: &Path, values: &[i64]) {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(Int64Array::from(values.to_vec()))],
    )
    .unwrap();
    // Written beside, then renamed: a shard never lists a half-written file.
    let staging = path.with_extension("staging");
    let file = std::fs::File::create(&staging).unwrap();
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    std::fs::rename(&staging, path).unwrap();
}

/// One routing key per shard, found by trying keys (at most 64).
async fn key_per_shard(federation: &Federation, sql: &str) -> Vec<(String, String)> {
    let url = federation.url();
    let mut found: Vec<(String, String)> = Vec::new();
    for n in 0..64 {
        let key = format!("key-{n}");
        let (_, shard) = query(&url, sql, &key).await;
        if !found.iter().any(|(_, seen)| *seen == shard) {
            found.push((key, shard));
        }
        if found.len() == federation.shards.len() {
            return found;
        }
    }
    panic!("64 routing keys reached {} shards only", found.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_added_removed_or_rewritten_show_up_on_every_shard() {
    let data = tempfile::tempdir().unwrap();
    let table = data.path().join("events");
    std::fs::create_dir(&table).unwrap();
    write_parquet(&table.join("a.parquet"), &[1, 2, 3]);
    let federation = Federation::start_with_options(FederationOptions {
        catalog_toml: Some(format!(
            "[catalog]\nrefresh_ms = {REFRESH_MS}\ndata_roots = [\"{}\"]\n[[catalog.tables]]\nname = \"events\"\nformat = \"parquet\"\nlocation = \"{}\"\n",
            data.path().display(),
            table.display()
        )),
        ..FederationOptions::default()
    });
    let url = federation.url();
    // count(*) is answered from the files' statistics, sum(v) by reading them.
    let sql = "SELECT count(*) AS n, sum(v) AS s FROM events";
    let keys = key_per_shard(&federation, sql).await;
    let shard = |address: &str| {
        federation
            .shards
            .iter()
            .find(|shard| shard.grpc_url() == address)
            .unwrap()
    };

    // Each step changes the files, then every shard must answer with the new rows from a plan
    // made after the change: its cached plan is dropped (an invalidation), never served.
    let steps: [(&str, &dyn Fn(), i64, i64); 4] = [
        ("as started", &|| {}, 3, 6),
        (
            "a file added",
            &|| write_parquet(&table.join("b.parquet"), &[10, 20]),
            5,
            36,
        ),
        (
            "a file rewritten",
            &|| write_parquet(&table.join("b.parquet"), &[100, 200, 300]),
            6,
            606,
        ),
        (
            "a file removed",
            &|| std::fs::remove_file(table.join("a.parquet")).unwrap(),
            3,
            600,
        ),
    ];
    for (step, change, rows, sum) in steps {
        let mut invalidations = Vec::new();
        for (_, address) in &keys {
            invalidations.push(cache(shard(address), "invalidations").await);
        }
        change();
        let changed = Instant::now();
        for ((key, address), invalidated_before) in keys.iter().zip(invalidations) {
            let shard = shard(address);
            if step != "as started" {
                // The refresher notices within refresh_ms (plus a noisy machine's margin).
                let noticed = common::eventually(Duration::from_secs(10), async || {
                    cache(shard, "invalidations").await > invalidated_before
                })
                .await;
                assert!(noticed, "{step}: shard {address} kept its plan");
            }
            let hits = cache(shard, "hits").await;
            let (rows_seen, answered_by) = query(&url, sql, key).await;
            assert_eq!(answered_by, *address);
            assert_eq!(
                rows_seen,
                serde_json::json!([{ "n": rows, "s": sum }]),
                "{step} on {address}"
            );
            let hits = if step == "as started" {
                cache(shard, "hits").await
            } else {
                assert_eq!(
                    cache(shard, "hits").await,
                    hits,
                    "{step}: a stale plan was served"
                );
                hits
            };
            // The next run of the same statement reuses the new plan.
            let (again, _) = query(&url, sql, key).await;
            assert_eq!(again, rows_seen);
            assert_eq!(cache(shard, "hits").await, hits + 1.0, "{step}: not cached");
        }
        eprintln!(
            "{step}: seen on every shard {:?} after the change",
            changed.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_queries_hit_the_cache_and_always_match_datafusion() {
    // Small scan partitions: the lineitem plans run on both TaskManagers.
    let federation = Federation::start_with_options(FederationOptions {
        jobmanager_toml:
            "queue_max_wait_ms = 30000\nscan_bytes_per_partition = 65536\nspread_within_host = true\n"
                .into(),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let queries = [
        "SELECT count(*) AS n FROM lineitem WHERE l_quantity < 10",
        "SELECT count(*) AS n FROM lineitem WHERE l_quantity < 20",
        "SELECT count(*) AS n FROM lineitem WHERE l_quantity < 10 ",
        "SELECT l_returnflag, sum(l_quantity) AS q FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag",
        "SELECT n_name, count(*) AS c FROM nation JOIN customer ON n_nationkey = c_nationkey GROUP BY n_name ORDER BY n_name",
    ];
    let hits_before = cache_total(&federation, "hits").await;
    for round in 0..3 {
        for sql in queries {
            let response = fresh(&url, sql).await;
            assert_eq!(response.status, 200, "{sql}");
            assert_same(
                &format!("round {round}: {sql}"),
                &response.arrow(),
                &reference_batches(sql).await,
                common::is_ordered(sql),
            );
        }
    }
    // Different literals never share a plan: every statement was planned once, then reused
    // (the third differs from the first by a trailing space only: one plan).
    let hits = cache_total(&federation, "hits").await - hits_before;
    assert_eq!(
        hits,
        1.0 + 2.0 * queries.len() as f64,
        "hits over two repeat rounds"
    );

    // One cached plan run many times at once: its stages get fresh ids each run.
    let sql = queries[4];
    let expected = reference_batches(sql).await;
    let runs = futures::future::join_all((0..8).map(|_| {
        let url = url.clone();
        async move { fresh(&url, sql).await }
    }))
    .await;
    for response in runs {
        assert_eq!(response.status, 200);
        assert_same(
            "concurrent runs of one plan",
            &response.arrow(),
            &expected,
            true,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_functions_give_fresh_values_per_query() {
    let federation = Federation::start_with(1, 1);
    let url = federation.url();
    let shard = &federation.shards[0];
    for sql in [
        "SELECT CAST(now() AS VARCHAR) AS x",
        "SELECT CAST(random() AS VARCHAR) AS x FROM region WHERE r_regionkey = 0",
    ] {
        let hits = cache(shard, "hits").await;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let (rows, _) = query(&url, sql, "volatile").await;
            seen.insert(rows[0]["x"].as_str().unwrap().to_string());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(seen.len(), 3, "{sql} repeated a value: {seen:?}");
        assert_eq!(
            cache(shard, "hits").await,
            hits,
            "{sql} came from the cache"
        );
    }
    // A stable query next to them is cached.
    let sql = "SELECT count(*) AS n FROM region";
    let hits = cache(shard, "hits").await;
    query(&url, sql, "volatile").await;
    query(&url, sql, "volatile").await;
    assert_eq!(cache(shard, "hits").await, hits + 1.0);
}

/// A 20-way join of aggregating subqueries: far deeper than protobuf's 100 nesting levels.
fn deep_query(tables: usize) -> String {
    let subquery = |n: usize| {
        format!(
            "(SELECT n_regionkey AS k, count(*) AS c{n}, sum(n_nationkey) AS s{n} FROM nation WHERE n_nationkey >= {n} GROUP BY n_regionkey) t{n}"
        )
    };
    let mut sql = format!(
        "SELECT t0.k, {} FROM {}",
        (0..tables)
            .map(|n| format!("t{n}.c{n} + t{n}.s{n}"))
            .collect::<Vec<_>>()
            .join(" + "),
        subquery(0)
    );
    for n in 1..tables {
        sql.push_str(&format!(" JOIN {} ON t{}.k = t{n}.k", subquery(n), n - 1));
    }
    sql.push_str(" ORDER BY t0.k");
    sql
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_deeper_than_the_protobuf_limit_are_shipped() {
    let federation = Federation::start();
    let sql = deep_query(20);
    let response = common::post_sql(
        &federation.url(),
        &sql,
        "application/vnd.apache.arrow.stream",
    )
    .await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_same(
        "20-way join",
        &response.arrow(),
        &reference_batches(&sql).await,
        true,
    );
}
