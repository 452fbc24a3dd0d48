//! The result cache through the real federation: a repeated statement is served from the
//! TaskManager that kept its result, and only while every table it read is unchanged (files
//! added, rewritten or removed between two queries are seen by the next one, with the
//! catalog's own refresh an hour away); tenants never share an entry; `cache-control:
//! no-cache` bypasses it; statements with clocks or random values are never cached; a kept
//! result lost with its TaskManager's restart is run again at once; identical statements sent
//! together run once; and answers under a writer changing the files are never stale.

mod common;

use common::compare::assert_same;
use common::{Federation, FederationOptions, HttpResponse, metric_sum};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{CsvReadOptions, SessionContext};
use std::path::Path;

const ARROW: &str = "application/vnd.apache.arrow.stream";
const SQL: &str =
    "SELECT region, sum(amount) AS total, count(*) AS n FROM sales GROUP BY region ORDER BY region";

fn write_csv(dir: &Path, name: &str, rows: &[(&str, i64)]) {
    let mut text = String::from("region,amount\n");
    for (region, amount) in rows {
        text.push_str(&format!("{region},{amount}\n"));
    }
    std::fs::write(dir.join(name), text).unwrap();
}

/// `sql` in process over the files as they are now.
async fn reference(dir: &Path, sql: &str) -> Vec<RecordBatch> {
    let ctx = SessionContext::new();
    let location = format!("{}/", dir.display());
    ctx.register_csv("sales", &location, CsvReadOptions::new())
        .await
        .unwrap();
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

async fn ask(url: &str, sql: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut all = vec![("content-type", "text/plain"), ("accept", ARROW)];
    all.extend_from_slice(headers);
    let response = common::http("POST", &format!("{url}/v1/query"), &all, sql.to_string()).await;
    assert_eq!(
        response.status,
        200,
        "{sql}: {}",
        String::from_utf8_lossy(&response.body)
    );
    response
}

/// Asks `SQL` and checks the answer against DataFusion on the files now; returns what the
/// cache did.
async fn checked(url: &str, dir: &Path, headers: &[(&str, &str)]) -> (String, HttpResponse) {
    let response = ask(url, SQL, headers).await;
    assert_same(SQL, &response.arrow(), &reference(dir, SQL).await, true);
    let outcome = response.header("x-flotilla-cache").unwrap_or_default();
    (outcome, response)
}

async fn sum_over(federation: &Federation, series: &str) -> f64 {
    let mut sum = 0.0;
    for taskmanager in &federation.taskmanagers {
        sum += metric_sum(&format!("{}/metrics", taskmanager.admin_url()), series).await;
    }
    sum
}

fn sales_catalog(dir: &Path) -> String {
    format!(
        "[catalog]\nrefresh_ms = 3600000\n[[catalog.tables]]\nname = \"sales\"\nformat = \"csv\"\nlocation = \"{}\"\n",
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_result_is_served_only_while_its_tables_are_unchanged() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    write_csv(dir, "a.csv", &[("north", 10), ("south", 5), ("north", 7)]);
    write_csv(dir, "b.csv", &[("east", 3), ("south", 1)]);
    let mut federation = Federation::start_with_options(FederationOptions {
        catalog_toml: Some(sales_catalog(dir)),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let handovers = "flotilla_taskmanager_handovers_total";

    let (first, response) = checked(&url, dir, &[]).await;
    assert_eq!(first, "miss");
    let versions = response.header("x-flotilla-table-versions").unwrap();
    assert!(versions.starts_with("sales@"), "{versions}");
    let before = sum_over(&federation, handovers).await;
    let (second, response) = checked(&url, dir, &[]).await;
    assert_eq!(second, "hit");
    assert_eq!(
        response.header("x-flotilla-table-versions").unwrap(),
        versions
    );
    assert_eq!(
        sum_over(&federation, handovers).await,
        before,
        "a hit runs nothing"
    );

    // Every change of the files is seen by the next query: added, rewritten, removed.
    write_csv(dir, "c.csv", &[("west", 100)]);
    assert_eq!(checked(&url, dir, &[]).await.0, "miss", "a file added");
    assert_eq!(checked(&url, dir, &[]).await.0, "hit");
    write_csv(dir, "b.csv", &[("east", 4), ("south", 2), ("east", 9)]);
    assert_eq!(checked(&url, dir, &[]).await.0, "miss", "a file rewritten");
    std::fs::remove_file(dir.join("c.csv")).unwrap();
    assert_eq!(checked(&url, dir, &[]).await.0, "miss", "a file removed");
    assert_eq!(checked(&url, dir, &[]).await.0, "hit");

    // Asked for fresh: run, and the kept result stays.
    let before = sum_over(&federation, handovers).await;
    let fresh = [("cache-control", "no-cache")];
    assert_eq!(checked(&url, dir, &fresh).await.0, "bypass");
    assert_eq!(sum_over(&federation, handovers).await, before + 1.0);
    assert_eq!(checked(&url, dir, &[]).await.0, "hit");

    // Tenants never share an entry.
    let other = [("x-flotilla-tenant", "other")];
    assert_eq!(checked(&url, dir, &other).await.0, "miss");
    assert_eq!(checked(&url, dir, &other).await.0, "hit");

    // Clocks and random values: never cached.
    for sql in [
        "SELECT region, random() < 2 AS r FROM sales ORDER BY region",
        "SELECT now() IS NOT NULL AS set",
        "SELECT count(*) AS n FROM sales WHERE current_date() > DATE '2000-01-01'",
    ] {
        for _ in 0..2 {
            let response = ask(&url, sql, &[]).await;
            assert_eq!(
                response.header("x-flotilla-cache").as_deref(),
                Some("uncachable"),
                "{sql}"
            );
        }
    }

    // The TaskManager keeping the result restarts: the next query is answered all the same
    // (the gateway asks again at once, without a fault retry), and kept again.
    let (outcome, response) = checked(&url, dir, &[]).await;
    assert_eq!(outcome, "hit");
    let keeper = response.header("x-flotilla-taskmanager").unwrap();
    let index = federation
        .taskmanagers
        .iter()
        .position(|taskmanager| taskmanager.grpc_url() == keeper)
        .unwrap_or_else(|| panic!("{keeper} is not a TaskManager of the federation"));
    let gateway_metrics = format!("{url}/metrics");
    let retries = metric_sum(&gateway_metrics, "flotilla_gateway_retries_total").await;
    federation.restart_taskmanager(index);
    federation.wait_converged();
    assert_eq!(checked(&url, dir, &[]).await.0, "miss");
    assert_eq!(checked(&url, dir, &[]).await.0, "hit");
    assert_eq!(
        metric_sum(&gateway_metrics, "flotilla_gateway_retries_total").await,
        retries,
        "a lost cached result is no fault"
    );
    assert!(
        federation
            .taskmanagers_settle_to_zero("/slots/slots_used")
            .await,
        "no slot is held after the queries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_statements_sent_together_run_once_and_all_get_the_answer() {
    let federation = Federation::start();
    let url = federation.url();
    let sql = "SELECT l_returnflag, l_linestatus, sum(l_quantity) AS q, \
               sum(l_extendedprice * (1 - l_discount)) AS revenue, count(*) AS n \
               FROM lineitem GROUP BY l_returnflag, l_linestatus \
               ORDER BY l_returnflag, l_linestatus";
    let expected = {
        let ctx = SessionContext::new();
        let lineitem = common::tpch_dir().join("lineitem");
        ctx.register_parquet("lineitem", lineitem.to_str().unwrap(), Default::default())
            .await
            .unwrap();
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    };
    let handovers = "flotilla_taskmanager_handovers_total";
    let before = sum_over(&federation, handovers).await;
    let clients = 100;
    let answers = futures::future::join_all((0..clients).map(|_| {
        let url = url.clone();
        async move { ask(&url, sql, &[]).await }
    }))
    .await;
    for answer in &answers {
        assert_same(sql, &answer.arrow(), &expected, true);
    }
    let runs = sum_over(&federation, handovers).await - before;
    let coalesced = sum_over(
        &federation,
        "flotilla_taskmanager_result_cache_served_total{source=\"coalesced\"}",
    )
    .await;
    let outcomes = answers
        .iter()
        .map(|answer| answer.header("x-flotilla-cache").unwrap_or_default())
        .fold(std::collections::BTreeMap::new(), |mut counts, outcome| {
            *counts.entry(outcome).or_insert(0) += 1;
            counts
        });
    println!(
        "{clients} identical statements: {runs} runs, {coalesced} waited for a run, {outcomes:?}"
    );
    // The gateway sends them all to the shard running the first (whatever the load bound),
    // which gives the others its entry; they wait for its result on the TaskManager.
    assert_eq!(runs, 1.0, "{runs} runs for {clients} identical statements");
}

/// One state of the table: its answer, and when the writer's one step into it began and
/// ended (it is in place from some moment between the two).
struct State {
    from: std::time::Instant,
    done: std::time::Instant,
    answer: Vec<RecordBatch>,
}

/// Takes the table to state `n` in one atomic step: a file added or rewritten (written beside
/// the table and renamed into place, so that no reader sees it half written), or removed.
fn write_state(dir: &Path, n: usize) {
    let table = dir.join("table");
    if n % 5 == 4 {
        let _ = std::fs::remove_file(table.join(format!("part-{}.csv", (n + 1) % 3)));
        return;
    }
    let staging = dir.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let rows: Vec<(&str, i64)> = (0..=n % 4)
        .map(|i| (["north", "south", "east"][i % 3], (n * 10 + i) as i64))
        .collect();
    let name = format!("part-{}.csv", n % 3);
    write_csv(&staging, &name, &rows);
    std::fs::rename(staging.join(&name), table.join(&name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_under_a_writer_are_never_stale() {
    let data = tempfile::tempdir().unwrap();
    let table = data.path().join("table");
    std::fs::create_dir_all(&table).unwrap();
    write_state(data.path(), 0);
    let federation = Federation::start_with_options(FederationOptions {
        catalog_toml: Some(sales_catalog(&table)),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let now = std::time::Instant::now();
    let states = std::sync::Arc::new(std::sync::Mutex::new(vec![State {
        from: now,
        done: now,
        answer: reference(&table, SQL).await,
    }]));
    let writes = 16;
    let writer = {
        let (states, dir) = (std::sync::Arc::clone(&states), data.path().to_path_buf());
        flotilla_cluster::spawn_instrumented(async move {
            for n in 1..=writes {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                let from = std::time::Instant::now();
                write_state(&dir, n);
                let done = std::time::Instant::now();
                let answer = reference(&dir.join("table"), SQL).await;
                states.lock().unwrap().push(State { from, done, answer });
            }
        })
    };
    let clients = (0..4).map(|_| {
        let url = url.clone();
        async move {
            let mut answers = Vec::new();
            let end = std::time::Instant::now()
                + std::time::Duration::from_millis(250 * writes as u64 + 300);
            while std::time::Instant::now() < end && answers.len() < 2_000 {
                let sent = std::time::Instant::now();
                let response = ask(&url, SQL, &[]).await;
                let received = std::time::Instant::now();
                let outcome = response.header("x-flotilla-cache").unwrap_or_default();
                answers.push((sent, received, response.arrow(), outcome));
            }
            answers
        }
    });
    let answers: Vec<_> = futures::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect();
    writer.await.unwrap();
    // Any state in place at some moment between a query's send and its answer is right.
    let states = states.lock().unwrap();
    let mut total = std::collections::BTreeMap::new();
    for (sent, received, answer, outcome) in &answers {
        let right = states.iter().enumerate().any(|(k, state)| {
            let until = states.get(k + 1).map(|next| next.done);
            state.from <= *received
                && until.is_none_or(|until| until >= *sent)
                && common::compare::same(answer, &state.answer, true)
        });
        assert!(right, "a stale or wrong answer ({outcome})");
        *total.entry(outcome.clone()).or_insert(0) += 1;
    }
    println!("{writes} writes under 4 clients: {total:?}, none stale");
    assert!(total.get("hit").copied().unwrap_or(0) > 0, "{total:?}");
    assert!(
        total.get("miss").copied().unwrap_or(0) > writes / 2,
        "{total:?}"
    );
}
