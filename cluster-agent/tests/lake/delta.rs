//! Delta Lake tables written by delta-rs's Python package: TPC-H (two tables partitioned)
//! equals in-process DataFusion on the same rows as Parquet; a table changed commit after
//! commit while 4 clients query it gives only answers of committed versions (as deltalake reads
//! them), the plan cache lets go of each version, and time travel and the history read the old
//! versions; and a Delta table on the S3-compatible server.

use crate::common::s3::{S3Server, SECRET_KEY};
use crate::common::{Federation, FederationOptions, metric_sum, query_json};
use crate::tables::{
    assert_samples_match, catalog, count_and_sum, python, read_answers, script, tpch_as,
};
use std::path::Path;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_as_delta_tables_matches_in_process_datafusion_on_parquet() {
    let delta = tpch_as("delta");
    let federation = Federation::start_with_options(FederationOptions {
        catalog_toml: Some(catalog(&delta, "delta")),
        ..FederationOptions::default()
    });
    assert_samples_match(&federation, "Delta").await;
    let url = federation.url();
    // A filter on the partition column reads only that partition's files.
    let explained = query_json(
        &url,
        "EXPLAIN SELECT count(*) FROM lineitem WHERE l_returnflag = 'R'",
        &[],
    )
    .await;
    let plan = String::from_utf8_lossy(&explained.body).to_string();
    assert!(plan.contains("l_returnflag=R/"), "{plan}");
    assert!(
        !plan.contains("l_returnflag=A/") && !plan.contains("l_returnflag=N/"),
        "{plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_table_changing_under_load_gives_only_committed_versions() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("events");
    // The first version exists before the cluster starts; the writer adds the others.
    let federation = {
        let answers = dir.path().join("first.json");
        run_writer(dir.path(), &answers, 1, 0).await;
        Federation::start_with_options(FederationOptions {
            catalog_toml: Some(format!(
                "[catalog]\nrefresh_ms = 100\n[[catalog.tables]]\nname = \"events\"\n\
                 format = \"delta\"\nlocation = \"{}\"\n",
                table.display()
            )),
            ..FederationOptions::default()
        })
    };
    let url = federation.url();
    let sql = "SELECT count(*) AS n, sum(x) AS s FROM events";
    assert_eq!(count_and_sum(&url, sql).await, Ok((1000, 499_500)));

    // 4 clients query while the writer commits 7 more versions, 300 ms apart.
    let answers_file = dir.path().join("answers.json");
    let writer = run_writer(dir.path(), &answers_file, 8, 300);
    let client = async || {
        let mut seen = Vec::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(8) && seen.len() < 2_000 {
            seen.push(count_and_sum(&url, sql).await);
        }
        seen
    };
    let (_, seen) = tokio::join!(
        writer,
        futures::future::join_all([client(), client(), client(), client()])
    );
    let answers: Vec<_> = seen.into_iter().flatten().collect();
    let committed = read_answers(&answers_file);
    let valid: Vec<(i64, i64)> = committed.iter().map(|version| version.answer).collect();
    let mut versions_seen = std::collections::BTreeSet::new();
    for answer in &answers {
        let answer = answer
            .as_ref()
            .unwrap_or_else(|error| panic!("a query failed: {error}"));
        let version = valid
            .iter()
            .position(|valid| valid == answer)
            .unwrap_or_else(|| panic!("{answer:?} is no committed version's answer: {valid:?}"));
        versions_seen.insert(version);
    }
    assert!(
        versions_seen.len() >= 3,
        "{} answers saw only versions {versions_seen:?}",
        answers.len()
    );

    // Once the writer is done, the latest version is seen within the refresh (bounded wait).
    let last = committed.last().unwrap();
    let started = Instant::now();
    loop {
        if count_and_sum(&url, sql).await == Ok(last.answer) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "version {} unseen",
            last.version
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics: Vec<String> = federation
        .processes()
        .filter(|process| process.name.starts_with("jm"))
        .map(|process| format!("{}/metrics", process.admin_url()))
        .collect();
    let mut invalidated = 0.0;
    for url in &metrics {
        invalidated += metric_sum(url, "flotilla_jobmanager_plan_cache_invalidations_total").await;
    }
    assert!(invalidated >= 1.0, "no cached plan was let go");

    // Time travel: every version by number, and by the time of its commit.
    for version in &committed {
        let by_number = format!(
            "SELECT count(*) AS n, sum(x) AS s FROM events@v{}",
            version.version
        );
        assert_eq!(
            count_and_sum(&url, &by_number).await,
            Ok(version.answer),
            "{by_number}"
        );
        let time = chrono::DateTime::from_timestamp_millis(version.timestamp_ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let by_time = format!("SELECT count(*) AS n, sum(x) AS s FROM \"events@{time}\"");
        assert_eq!(
            count_and_sum(&url, &by_time).await,
            Ok(version.answer),
            "{by_time}"
        );
    }
    let missing = query_json(&url, "SELECT * FROM events@v99", &[]).await;
    assert_eq!(
        missing.status,
        400,
        "{}",
        String::from_utf8_lossy(&missing.body)
    );
    assert!(
        String::from_utf8_lossy(&missing.body).contains("no version 99"),
        "{}",
        String::from_utf8_lossy(&missing.body)
    );

    // The history: one row per commit, newest first.
    let history = query_json(
        &url,
        "SELECT version, operation FROM \"events$history\" ORDER BY version DESC",
        &[],
    )
    .await;
    let rows = history.json();
    let versions: Vec<u64> = rows
        .as_array()
        .unwrap_or_else(|| panic!("{rows}"))
        .iter()
        .map(|row| row["version"].as_u64().unwrap())
        .collect();
    assert_eq!(
        versions,
        (0..committed.len() as u64).rev().collect::<Vec<_>>()
    );

    // `system.tables` names its format and its current version: the last commit.
    let listed = query_json(
        &url,
        "SELECT format, version, version_of FROM system.tables WHERE table_name = 'events'",
        &[],
    )
    .await
    .json();
    assert_eq!(listed[0]["format"], "delta", "{listed}");
    assert_eq!(listed[0]["version"], last.version, "{listed}");
    assert_eq!(listed[0]["version_of"], "commit", "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_table_on_s3_is_read_through_its_object_store() {
    let s3 = S3Server::start(&["lake"]);
    // s3s-fs keeps a bucket's objects as files: the table is written into the bucket's
    // directory and read back through the S3 API.
    let answers = s3.bucket_dir("lake").join("answers.json");
    run_writer(&s3.bucket_dir("lake"), &answers, 3, 0).await;
    let committed = read_answers(&answers);
    let catalog = format!(
        "[[catalog.tables]]\nname = \"events\"\nformat = \"delta\"\n\
         location = \"s3://lake/events/\"\n[catalog.object_stores.lake]\nendpoint = \"{}\"\n\
         region = \"us-east-1\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{SECRET_KEY}\"\n\
         allow_http = true\n",
        s3.endpoint(),
        crate::common::s3::ACCESS_KEY
    );
    let federation = Federation::start_with_options(FederationOptions {
        catalog_toml: Some(catalog),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let sql = "SELECT count(*) AS n, sum(x) AS s FROM events";
    assert_eq!(count_and_sum(&url, sql).await, Ok(committed[2].answer));
    let old = "SELECT count(*) AS n, sum(x) AS s FROM events@v0";
    assert_eq!(count_and_sum(&url, old).await, Ok(committed[0].answer));
}

/// Runs `write.py changes` in `dir`: the first `commits` versions of `events`, `pause_ms` apart.
async fn run_writer(dir: &Path, answers: &Path, commits: usize, pause_ms: u64) {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python())
            .arg(script())
            .args(["changes", "--out"])
            .arg(dir)
            .arg("--answers")
            .arg(answers)
            .args([
                "--commits",
                &commits.to_string(),
                "--pause-ms",
                &pause_ms.to_string(),
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("write.py changes ran over 120 s")
    .unwrap();
    assert!(
        output.status.success(),
        "write.py changes failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
