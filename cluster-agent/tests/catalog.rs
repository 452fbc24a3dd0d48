//! The catalog through the real federation: hive-partitioned Parquet (a filter on a partition
//! column reads only the matching files), NDJSON, and the questions SQL tools start with
//! (`SHOW TABLES`, `SHOW COLUMNS`, `DESCRIBE`, `information_schema`), answered by a shard
//! without any TaskManager.

mod common;

use common::compare::assert_same;
use common::{Federation, FederationOptions, metric_sum, query_json};
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::{JsonReadOptions, ParquetReadOptions, SessionContext};
use std::path::Path;
use std::sync::Arc;

/// Writes `events/year=Y/part-N.parquet` (2 files in 2024, 1 in 2023, 3 rows each) and
/// `logs.ndjson`.
fn write_tables(dir: &Path) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
    ]));
    for (year, part, first) in [(2023, 0, 0), (2024, 0, 10), (2024, 1, 20)] {
        let directory = dir.join(format!("events/year={year}"));
        std::fs::create_dir_all(&directory).unwrap();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(first..first + 3)),
                Arc::new(StringArray::from(vec!["a", "b", "a"])),
            ],
        )
        .unwrap();
        let file = std::fs::File::create(directory.join(format!("part-{part}.parquet"))).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
    let lines: String = (0..5)
        .map(|i| {
            format!(
                "{{\"level\":\"{}\",\"ms\":{}}}\n",
                ["info", "warn"][i % 2],
                i * 10
            )
        })
        .collect();
    std::fs::write(dir.join("logs.ndjson"), lines).unwrap();
}

/// In-process DataFusion over the same files, registered as the catalog says.
async fn reference(dir: &Path) -> SessionContext {
    let config = datafusion::prelude::SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    let events = format!("{}/events/", dir.display());
    let partitions = vec![("year".to_string(), DataType::Int32)];
    let options = ParquetReadOptions::default().table_partition_cols(partitions);
    ctx.register_parquet("events", &events, options)
        .await
        .unwrap();
    let logs = format!("{}/logs.ndjson", dir.display());
    let options = JsonReadOptions::default().file_extension(".ndjson");
    ctx.register_json("logs", &logs, options).await.unwrap();
    ctx
}

/// The TaskManagers' hand-overs so far.
async fn handovers(federation: &Federation) -> f64 {
    let mut sum = 0.0;
    for taskmanager in &federation.taskmanagers {
        let url = format!("{}/metrics", taskmanager.admin_url());
        sum += metric_sum(&url, "flotilla_taskmanager_handovers_total").await;
    }
    sum
}

/// The values of column `name` in a JSON result.
fn column(response: &common::HttpResponse, name: &str) -> Vec<String> {
    let body = response.json();
    let rows = body.as_array().unwrap_or_else(|| panic!("rows: {body}"));
    rows.iter()
        .map(|row| {
            row[name]
                .as_str()
                .map_or(row[name].to_string(), String::from)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_prune_ndjson_reads_and_the_catalog_answers_without_taskmanagers() {
    let data = tempfile::tempdir().unwrap();
    write_tables(data.path());
    let catalog = format!(
        "[[catalog.tables]]\nname = \"events\"\nformat = \"parquet\"\nlocation = \"{}/events\"\n\
         partitions = [\"year:int\"]\n\
         [[catalog.tables]]\nname = \"logs\"\nformat = \"ndjson\"\nlocation = \"{}/logs.ndjson\"\n",
        data.path().display(),
        data.path().display()
    );
    let federation = Federation::start_with_options(FederationOptions {
        catalog_toml: Some(catalog),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let reference = reference(data.path()).await;

    // Results equal DataFusion's, partition column included.
    for sql in [
        "SELECT year, kind, count(*) AS n, sum(id) AS s FROM events WHERE year = 2024 \
         GROUP BY year, kind ORDER BY kind",
        "SELECT * FROM events ORDER BY id",
        "SELECT level, count(*) AS n, sum(ms) AS total FROM logs GROUP BY level ORDER BY level",
    ] {
        let response = common::post_sql(&url, sql, "application/vnd.apache.arrow.stream").await;
        assert_eq!(
            response.status,
            200,
            "{sql}: {}",
            String::from_utf8_lossy(&response.body)
        );
        let expected = reference.sql(sql).await.unwrap().collect().await.unwrap();
        assert_same(sql, &response.arrow(), &expected, true);
    }

    // The plan the TaskManagers run reads only the 2024 files.
    let explained = query_json(
        &url,
        "EXPLAIN SELECT sum(id) FROM events WHERE year = 2024",
        &[],
    )
    .await;
    assert_eq!(explained.status, 200);
    let plan = column(&explained, "plan").join("\n");
    assert!(
        plan.contains("year=2024/part-0.parquet") && plan.contains("year=2024/part-1.parquet"),
        "{plan}"
    );
    assert!(!plan.contains("year=2023"), "2023 is pruned:\n{plan}");

    // The catalog's answers come from a shard: no TaskManager takes a hand-over.
    let before = handovers(&federation).await;
    let tables = query_json(&url, "SHOW TABLES", &[]).await;
    assert_eq!(
        tables.status,
        200,
        "{}",
        String::from_utf8_lossy(&tables.body)
    );
    let names = column(&tables, "table_name");
    assert!(
        names.contains(&"events".into()) && names.contains(&"logs".into()),
        "{names:?}"
    );
    let columns = query_json(&url, "SHOW COLUMNS FROM events", &[]).await;
    assert_eq!(column(&columns, "column_name"), ["id", "kind", "year"]);
    let described = query_json(&url, "DESCRIBE logs", &[]).await;
    assert_eq!(column(&described, "column_name"), ["level", "ms"]);
    let sql = "SELECT table_name, column_name, data_type FROM information_schema.columns \
               WHERE table_schema = 'public' ORDER BY table_name, ordinal_position";
    let from_schema = query_json(&url, sql, &[]).await;
    assert_eq!(from_schema.status, 200);
    let expected = reference.sql(sql).await.unwrap().collect().await.unwrap();
    let expected_names: Vec<String> = expected
        .iter()
        .flat_map(|batch| {
            let names = batch
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            names
                .iter()
                .map(|name| name.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(column(&from_schema, "column_name"), expected_names);
    // Flotilla's own view adds each table's format and current version.
    let listed = query_json(
        &url,
        "SELECT table_name, format, version FROM system.tables ORDER BY table_name",
        &[],
    )
    .await;
    assert_eq!(column(&listed, "format"), ["parquet", "ndjson"]);
    let versions = listed.json();
    assert!(
        versions
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["version"].is_u64()),
        "every table was listed: {versions}"
    );
    assert_eq!(
        handovers(&federation).await,
        before,
        "no hand-over for the catalog"
    );

    // Mixing the catalog with a table, or naming a missing table, is the user's error.
    let mixed = query_json(
        &url,
        "SELECT count(*) FROM information_schema.tables, events",
        &[],
    )
    .await;
    assert_eq!(
        (mixed.status, mixed.error_code().as_str()),
        (400, "sql_planning")
    );
    let missing = query_json(&url, "DESCRIBE nothing_here", &[]).await;
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (400, "sql_planning")
    );

    // A shard's answers are bounded in size and in time (cross joins of the views).
    let settings = "information_schema.df_settings";
    let big = format!("SELECT * FROM {settings} a, {settings} b, {settings} c");
    let big = query_json(&url, &big, &[]).await;
    assert_eq!(
        (big.status, big.error_code().as_str()),
        (422, "result_too_large")
    );
    let slow = format!(
        "SELECT sum(length(concat(a.name, b.name, c.name, d.name))) \
         FROM {settings} a, {settings} b, {settings} c, {settings} d"
    );
    let started = std::time::Instant::now();
    let slow = query_json(&url, &slow, &[]).await;
    assert_eq!(
        (slow.status, slow.error_code().as_str()),
        (507, "resources_exhausted"),
        "{}",
        String::from_utf8_lossy(&slow.body)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let again = query_json(&url, "SHOW TABLES", &[]).await;
    assert_eq!(again.status, 200, "the shards still answer");
}
