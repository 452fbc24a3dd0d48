//! `cluster-agent local`: the README's first command, end to end, on TPC-H and on the user's
//! own files.

mod common;

use common::compare::assert_same;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cluster-agent local --once` at scale 0.001 on an ephemeral port with `extra` flags;
/// asserts it succeeded and returns its standard output.
fn run_local(extra: &[&str], data: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_cluster-agent"))
        .arg("local")
        .args(extra)
        .args([
            "--scale",
            "0.001",
            "--http",
            "127.0.0.1:0",
            "--flight",
            "127.0.0.1:0",
            "--once",
            "--data-dir",
        ])
        .arg(data)
        .env_clear()
        // Spill directories of members the test kills stay in its folder.
        .env("TMPDIR", data.parent().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "local {extra:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

#[test]
fn local_generates_data_starts_five_processes_and_runs_the_main_job() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = run_local(&[], &dir.path().join("data"));
    assert!(stdout.contains("Generating TPC-H scale 0.001"), "{stdout}");
    assert!(
        stdout.contains("Flotilla local federation is up"),
        "{stdout}"
    );
    assert!(
        stdout.contains("flight sql    grpc://127.0.0.1:")
            && stdout.contains("jdbc:arrow-flight-sql://127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("curl -sS http://127.0.0.1:"),
        "a ready-to-paste curl line: {stdout}"
    );
    assert!(stdout.contains("Main job: TPC-H Q1"), "{stdout}");
    assert!(
        stdout.contains("| l_returnflag |"),
        "Q1's result is printed: {stdout}"
    );
    assert!(stdout.contains("Federation stopped."), "{stdout}");
    let logs = std::fs::read_dir(dir.path().join("data/local/logs"))
        .unwrap()
        .count();
    assert_eq!(
        logs, 5,
        "gateway + 2 shards + 2 TaskManagers each wrote a log"
    );
}

#[test]
fn local_tls_serves_https_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stdout = run_local(&["--tls"], &data);
    let cert = data.join("local/tls/cert.pem");
    assert!(cert.exists(), "the certificate was written");
    assert!(
        stdout.contains(&format!(
            "curl -sS --cacert {} https://127.0.0.1:",
            cert.display()
        )),
        "the curl line trusts the certificate: {stdout}"
    );
    // The main job ran through the Rust client over HTTPS, trusting that certificate only.
    assert!(stdout.contains("| l_returnflag |"), "{stdout}");
}

/// Writes `sales.csv` and `items.parquet` into `dir`.
fn write_own_files(dir: &Path) {
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    std::fs::write(
        dir.join("sales.csv"),
        "region,amount\nnorth,10\nsouth,20\nnorth,5\neast,7\n",
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec!["north", "south", "north"])),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(dir.join("items.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_serves_your_own_csv_and_parquet_files() {
    let dir = tempfile::tempdir().unwrap();
    write_own_files(dir.path());
    let run = dir.path().join("run");
    let stdout_file = dir.path().join("local.out");
    let csv = dir.path().join("sales.csv");
    let parquet = dir.path().join("items.parquet");
    let mut local = Command::new(env!("CARGO_BIN_EXE_cluster-agent"))
        .arg("local")
        .arg(format!("--table=sales={}", csv.display()))
        .arg(format!("--table=items={}", parquet.display()))
        .args(["--http", "127.0.0.1:0", "--flight", "127.0.0.1:0"])
        .args(["--shards", "1", "--taskmanagers", "1", "--data-dir"])
        .arg(&run)
        .env_clear()
        .env("TMPDIR", dir.path())
        .stdout(std::fs::File::create(&stdout_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // federation.json appears once the main job ran.
    let federation = run.join("local/federation.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !federation.exists() {
        let exited = local.try_wait().unwrap();
        if exited.is_some() || Instant::now() > deadline {
            let _ = local.kill();
            let output = std::fs::read_to_string(&stdout_file).unwrap_or_default();
            panic!("local did not come up ({exited:?}):\n{output}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&federation).unwrap()).unwrap();
    let url = document["gateway"].as_str().unwrap().to_string();

    // A newcomer's first view holds no failure: the main job waited for /readyz, then ran once.
    let queries = common::http("GET", &format!("{url}/v1/queries"), &[], "").await;
    let queries = queries.json()["queries"].as_array().cloned().unwrap();
    assert_eq!(queries.len(), 1, "only the main job ran: {queries:#?}");
    assert_eq!(queries[0]["status"], "succeeded", "{queries:#?}");

    let tables = common::query_json(&url, "SHOW TABLES", &[]).await;
    let names: Vec<String> = tables
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["table_schema"] == "public")
        .map(|row| row["table_name"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["items", "sales"]);

    let sql = "SELECT s.region, sum(s.amount) AS amount, count(i.id) AS items \
               FROM sales s LEFT JOIN items i ON s.region = i.region \
               GROUP BY s.region ORDER BY s.region";
    let response = common::post_sql(&url, sql, "application/vnd.apache.arrow.stream").await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let reference = datafusion::prelude::SessionContext::new();
    reference
        .register_csv("sales", csv.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    reference
        .register_parquet("items", parquet.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    let expected = reference.sql(sql).await.unwrap().collect().await.unwrap();
    assert_same(sql, &response.arrow(), &expected, true);

    // A member that dies is started again at once, and the cluster view says how it ended.
    let taskmanager_pid = document["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["role"] == "taskmanager")
        .and_then(|node| node["pid"].as_i64())
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(taskmanager_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    let said = common::eventually(Duration::from_secs(60), async || {
        let cluster = common::http("GET", &format!("{url}/v1/cluster"), &[], "").await;
        common::all_members(&cluster.json()).iter().any(|member| {
            member["role"] == "taskmanager"
                && member["previous_exit"]
                    .as_str()
                    .is_some_and(|exit| exit.contains("killed by signal 9 (SIGKILL)"))
        })
    })
    .await;
    assert!(said, "/v1/cluster says how the TaskManager ended");
    let back = common::eventually(Duration::from_secs(60), async || {
        common::post_sql(&url, sql, "application/vnd.apache.arrow.stream")
            .await
            .status
            == 200
    })
    .await;
    assert!(back, "queries run again after the restart");
    println!(
        "TaskManager back and serving {:?} after SIGKILL",
        killed.elapsed()
    );

    // Stopped by its PID, as a user's Ctrl-C would.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(local.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while local.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = local.kill();
            panic!("local did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stdout = std::fs::read_to_string(&stdout_file).unwrap();
    assert!(
        stdout.contains("Main job: row counts of your tables"),
        "{stdout}"
    );
    assert!(stdout.contains("| sales      | 4"), "{stdout}");
    assert!(stdout.contains("tables        sales, items"), "{stdout}");
    assert!(
        !stdout.contains("Generating TPC-H"),
        "no TPC-H data: {stdout}"
    );
}
