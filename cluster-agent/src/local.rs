//! `cluster-agent local`: a whole federation on loopback, as separate OS processes.
//!
//! ```text
//!   cluster-agent local
//!     ├─ gen-data (first run only)       data/tpch-sf0.1/<table>/part-N.parquet
//!     ├─ taskmanager × 2  ─┐
//!     ├─ jobmanager × 2  ──┤ each: <data-dir>/local/<name>.toml, logs in <data-dir>/local/logs/
//!     └─ gateway ──────────┘ http://127.0.0.1:8080
//! ```
//! Children are started with ephemeral internal ports and report them on a `LISTENING` line.
//! `local` then supervises them: a child that exits (drained with `POST /admin/drain`, or
//! killed) is started again on the same ports, so rolling restarts and fail-over drills
//! (`load-tests/`) work against it. `<data-dir>/local/federation.json` lists every child with its
//! pid and addresses. On Ctrl-C or SIGTERM every child gets SIGTERM (then SIGKILL after 10 s).

use crate::catalog::CatalogConfig;
use crate::config::{Config, Role};
use anyhow::Context as _;
use clap::Args;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The main job `local` runs once the federation is up.
const MAIN_JOB: &str = include_str!("../../sql-samples/tpch/q01.sql");

/// Flags of `cluster-agent local`.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Where the TPC-H data lives (generated on first run); default `data/tpch-sf<scale>`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TPC-H scale factor of the sample data.
    #[arg(long, default_value_t = 0.1)]
    scale: f64,
    /// The gateway's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Slots per TaskManager.
    #[arg(long, default_value_t = 4)]
    slots: usize,
    /// TaskManagers to start.
    #[arg(long, default_value_t = 2)]
    taskmanagers: usize,
    /// JobManager shards to start.
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Run the main job, print its result, then stop everything (instead of serving until
    /// Ctrl-C).
    #[arg(long)]
    once: bool,
    /// Serve HTTPS: with a self-signed certificate for localhost and 127.0.0.1, made on first
    /// use under `<data-dir>/local/tls/` (clients trust its `cert.pem`).
    #[arg(long)]
    tls: bool,
}

/// A child exiting more often than this within [`RESTART_WINDOW`] stops the federation.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// One child process and what it reported.
struct Node {
    name: String,
    role: String,
    child: Child,
    addresses: BTreeMap<String, String>,
    /// Its config, pinned to the ports it bound, for restarts.
    config: Option<RestartConfig>,
    restarts: Vec<Instant>,
}

/// How to start a node again: same role, same ports; seeds are filled in at restart.
enum RestartConfig {
    Agent(Box<Config>),
    Gateway(Box<gateway::Config>),
}

impl Node {
    fn address(&self, key: &str) -> anyhow::Result<&str> {
        self.addresses
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("{} did not report its {key} address", self.name))
    }
}

/// Runs the federation until Ctrl-C / SIGTERM (or, with `--once`, until the main job ran).
pub async fn run_local(args: LocalArgs) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("data/tpch-sf{}", args.scale)));
    ensure_data(&data_dir, args.scale).await?;
    let data_dir = data_dir.canonicalize()?;
    let run_dir = data_dir.join("local");
    std::fs::create_dir_all(run_dir.join("logs"))?;
    // Logs are appended across a child's restarts; each run of `local` starts them afresh.
    for entry in std::fs::read_dir(run_dir.join("logs"))?.flatten() {
        if entry.path().extension().is_some_and(|ext| ext == "log") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let executable = std::env::current_exe().context("locating the cluster-agent executable")?;
    let catalog = CatalogConfig::tpch(&data_dir);
    // A fresh cluster secret per run: every child carries it on its internal calls.
    // With --tls, one self-signed pair serves the gateway's HTTPS and the internal gRPC.
    let tls = if args.tls {
        Some(gateway::self_signed(&run_dir.join("tls"))?)
    } else {
        None
    };
    let cluster = gateway::ClusterConfig {
        secret: uuid::Uuid::new_v4().simple().to_string(),
        tls_cert_file: tls.as_ref().and_then(|tls| tls.cert_file.clone()),
        tls_key_file: tls.as_ref().and_then(|tls| tls.key_file.clone()),
        tls_ca_file: None,
    };

    let mut nodes: Vec<Node> = Vec::new();
    let result = async {
        // Everyone discovers everyone by gossip; the first TaskManager is the seed.
        let mut seeds: Vec<String> = Vec::new();
        let mut taskmanagers = Vec::new();
        for index in 1..=args.taskmanagers.max(1) {
            let mut config = Config::default();
            config.node.id = Some(format!("tm-{index}"));
            config.taskmanager.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            config.taskmanager.slots = args.slots;
            config.gossip.seeds = seeds.clone();
            config.catalog = catalog.clone();
            config.cluster = cluster.clone();
            let mut node = start(&executable, Role::TaskManager.as_str(), &format!("tm-{index}"), &toml::to_string(&config)?, &run_dir).await?;
            taskmanagers.push(format!("{}://{}", cluster.scheme(), node.address("grpc")?));
            if seeds.is_empty() {
                seeds.push(node.address("gossip")?.to_string());
            }
            config.taskmanager.listen = node.address("grpc")?.parse()?;
            config.taskmanager.admin_listen = node.address("admin")?.parse()?;
            config.gossip.listen = node.address("gossip")?.parse()?;
            node.config = Some(RestartConfig::Agent(Box::new(config)));
            nodes.push(node);
        }
        let mut shards = Vec::new();
        for index in 1..=args.shards.max(1) {
            let mut config = Config::default();
            config.node.id = Some(format!("jm-{index}"));
            config.jobmanager.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            config.gossip.seeds = seeds.clone();
            config.catalog = catalog.clone();
            config.cluster = cluster.clone();
            let mut node = start(&executable, Role::JobManager.as_str(), &format!("jm-{index}"), &toml::to_string(&config)?, &run_dir).await?;
            shards.push(format!("{}://{}", cluster.scheme(), node.address("grpc")?));
            config.jobmanager.listen = node.address("grpc")?.parse()?;
            config.jobmanager.admin_listen = node.address("admin")?.parse()?;
            config.gossip.listen = node.address("gossip")?.parse()?;
            node.config = Some(RestartConfig::Agent(Box::new(config)));
            nodes.push(node);
        }
        let mut config = gateway::Config::default();
        config.http.listen = args.http;
        config.gossip.seeds = seeds.clone();
        config.cluster = cluster.clone();
        if let Some(tls) = &tls {
            config.tls = tls.clone();
        }
        let ca = config.tls.cert_file.clone();
        let mut node = start(&executable, "gateway", "gateway", &toml::to_string(&config)?, &run_dir).await?;
        let scheme = if ca.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", node.address("http")?);
        let cacert = ca.as_ref().map(|path| format!("--cacert {} ", path.display())).unwrap_or_default();
        config.http.listen = node.address("http")?.parse()?;
        config.gossip.listen = node.address("gossip")?.parse()?;
        node.config = Some(RestartConfig::Gateway(Box::new(config)));
        nodes.push(node);

        println!();
        println!("Flotilla local federation is up:");
        println!("  gateway       {url}");
        println!("  shards        {}", shards.join(", "));
        println!("  taskmanagers  {}", taskmanagers.join(", "));
        println!("  gossip seed   {} (join more agents with --set gossip.seeds=[\"{}\"])", seeds.join(", "), seeds.join("\",\""));
        println!("  data          {} (TPC-H scale {})", data_dir.display(), args.scale);
        println!("  configs/logs  {}", run_dir.display());
        println!();
        println!("Try:");
        println!("  curl -sS {cacert}{url}/v1/query -H 'accept: application/json' -H 'content-type: text/plain' \\");
        println!("       --data-binary 'SELECT n_name, r_name FROM nation JOIN region ON n_regionkey = r_regionkey ORDER BY n_name LIMIT 5'");
        println!();
        run_main_job(&url, ca.as_deref()).await?;
        // Written once the federation answered its first query: scripts wait for it.
        write_federation(&run_dir, &url, &nodes)?;
        write_prometheus_targets(&run_dir, &nodes)?;
        println!("Metrics: Prometheus targets in {} (read by dashboards/prometheus.yml)", run_dir.join(PROMETHEUS_TARGETS).display());
        anyhow::Ok(url)
    }
    .await;

    if let (Ok(url), false) = (&result, args.once) {
        println!("Serving; press Ctrl-C to stop. Children that exit are started again.");
        tokio::select! {
            _ = gateway::shutdown_signal() => {}
            error = supervise(&executable, &run_dir, url, &mut nodes) => eprintln!("{error:#}; stopping the federation"),
        }
    }
    let result = result.map(|_| ());
    stop_all(&mut nodes).await;
    result
}

async fn ensure_data(data_dir: &Path, scale: f64) -> anyhow::Result<()> {
    if crate::gendata::is_generated(data_dir, scale) {
        return Ok(());
    }
    println!(
        "Generating TPC-H scale {scale} into {} (first run only)...",
        data_dir.display()
    );
    let started = Instant::now();
    let dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        crate::gendata::generate(scale, &dir, &|line| println!("  {line}"))
    })
    .await??;
    println!("Generated in {:.1} s.", started.elapsed().as_secs_f64());
    Ok(())
}

/// Starts one child with its config written to `<run_dir>/<name>.toml` and waits for its
/// `LISTENING` line.
async fn start(
    executable: &Path,
    role: &str,
    name: &str,
    config: &str,
    run_dir: &Path,
) -> anyhow::Result<Node> {
    let config_path = run_dir.join(format!("{name}.toml"));
    std::fs::write(&config_path, config)?;
    let log_path = run_dir.join("logs").join(format!("{name}.log"));
    // Appended to, so that a restarted child's log follows its predecessor's.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut child = Command::new(executable)
        .arg(role)
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("LISTENING ") {
                return anyhow::Ok(line);
            }
        }
        anyhow::bail!(
            "{name} exited before it was listening; see {}",
            log_path.display()
        )
    })
    .await
    .with_context(|| {
        format!(
            "{name} did not start within 120 s; see {}",
            log_path.display()
        )
    })??;
    gateway::spawn_instrumented(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let addresses = parse_listening(&line);
    Ok(Node {
        name: name.to_string(),
        role: role.to_string(),
        child,
        addresses,
        config: None,
        restarts: Vec::new(),
    })
}

/// Parses `LISTENING key=value key=value`.
pub(crate) fn parse_listening(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Runs TPC-H Q1 through the gateway with the Rust client and prints the result.
async fn run_main_job(url: &str, ca: Option<&Path>) -> anyhow::Result<()> {
    use futures::TryStreamExt;
    let mut client = flotilla_client::Client::builder(url);
    if let Some(ca) = ca {
        client = client.root_certificates_pem(&std::fs::read(ca)?)?;
    }
    let client = client.build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started = Instant::now();
        match client.query(MAIN_JOB).await {
            Ok(stream) => {
                let query_id = stream.query_id().to_string();
                let batches: Vec<_> = stream.try_collect().await?;
                let elapsed = started.elapsed();
                println!(
                    "Main job: TPC-H Q1 (sql-samples/tpch/q01.sql), query {query_id}, {:.1} ms:",
                    elapsed.as_secs_f64() * 1000.0
                );
                println!(
                    "{}",
                    datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
                );
                return Ok(());
            }
            Err(error)
                if error.code() == Some(flotilla_protocol::ErrorCode::Unavailable)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Starts again any child that exits, on the same ports, seeded by the others; returns when
/// one keeps failing.
async fn supervise(
    executable: &Path,
    run_dir: &Path,
    url: &str,
    nodes: &mut [Node],
) -> anyhow::Error {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for index in 0..nodes.len() {
            let Ok(Some(status)) = nodes[index].child.try_wait() else {
                continue;
            };
            if let Err(error) = restart(executable, run_dir, nodes, index, status).await {
                return error;
            }
            if let Err(error) = write_federation(run_dir, url, nodes) {
                return error;
            }
        }
    }
}

async fn restart(
    executable: &Path,
    run_dir: &Path,
    nodes: &mut [Node],
    index: usize,
    status: std::process::ExitStatus,
) -> anyhow::Result<()> {
    let name = nodes[index].name.clone();
    let now = Instant::now();
    nodes[index]
        .restarts
        .retain(|at| now.duration_since(*at) < RESTART_WINDOW);
    if nodes[index].restarts.len() >= MAX_RESTARTS {
        anyhow::bail!(
            "{name} exited {} times within {} s (last: {status})",
            MAX_RESTARTS + 1,
            RESTART_WINDOW.as_secs()
        );
    }
    eprintln!("{name} exited ({status}); starting it again on the same ports");
    let seeds: Vec<String> = nodes
        .iter()
        .enumerate()
        .filter(|(other, _)| *other != index)
        .filter_map(|(_, node)| node.addresses.get("gossip").cloned())
        .collect();
    let config = match nodes[index].config.as_mut() {
        Some(RestartConfig::Agent(config)) => {
            config.gossip.seeds = seeds;
            toml::to_string(config)?
        }
        Some(RestartConfig::Gateway(config)) => {
            config.gossip.seeds = seeds;
            toml::to_string(config)?
        }
        None => anyhow::bail!("{name} cannot be restarted"),
    };
    let role = nodes[index].role.clone();
    // The old process's sockets are closed; give the kernel a moment to free the ports.
    let mut attempt = 0;
    let mut node = loop {
        match start(executable, &role, &name, &config, run_dir).await {
            Ok(node) => break node,
            Err(error) if attempt < 20 => {
                attempt += 1;
                tracing::debug!(%error, attempt, "restart failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => return Err(error),
        }
    };
    let old = &mut nodes[index];
    node.config = old.config.take();
    node.restarts = std::mem::take(&mut old.restarts);
    node.restarts.push(now);
    eprintln!(
        "{name} is back (pid {})",
        node.child.id().unwrap_or_default()
    );
    *old = node;
    Ok(())
}

/// Writes `federation.json`: the gateway URL and every child's role, pid and addresses, for
/// the scripts in `load-tests/`.
fn write_federation(run_dir: &Path, url: &str, nodes: &[Node]) -> anyhow::Result<()> {
    let listed: Vec<serde_json::Value> = nodes
        .iter()
        .map(|node| {
            serde_json::json!({
                "name": node.name,
                "role": node.role,
                "pid": node.child.id(),
                "addresses": node.addresses,
                "restarts": node.restarts.len(),
            })
        })
        .collect();
    let document = serde_json::json!({
        "local_pid": std::process::id(),
        "gateway": url,
        "nodes": listed,
    });
    let path = run_dir.join("federation.json");
    let temporary = run_dir.join("federation.json.tmp");
    std::fs::write(&temporary, serde_json::to_vec_pretty(&document)?)?;
    std::fs::rename(&temporary, &path)?;
    Ok(())
}

/// The Prometheus file-discovery targets `local` writes into its run directory.
const PROMETHEUS_TARGETS: &str = "prometheus-targets.json";

/// Writes every child's metrics address for Prometheus's `file_sd_configs`: one target group
/// per child, labelled `job` (`flotilla-<role>`) and `node` (its id).
fn write_prometheus_targets(run_dir: &Path, nodes: &[Node]) -> anyhow::Result<()> {
    let groups: Vec<serde_json::Value> = nodes
        .iter()
        .map(|node| {
            // Shards and TaskManagers serve /metrics on their admin address; the gateway on
            // its HTTP address.
            let address = node.address("admin").or_else(|_| node.address("http"))?;
            anyhow::Ok(serde_json::json!({
                "targets": [address],
                "labels": {"job": format!("flotilla-{}", node.role), "node": node.name},
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    let path = run_dir.join(PROMETHEUS_TARGETS);
    let temporary = run_dir.join(format!("{PROMETHEUS_TARGETS}.tmp"));
    std::fs::write(&temporary, serde_json::to_vec_pretty(&groups)?)?;
    std::fs::rename(&temporary, &path)?;
    Ok(())
}

/// Stops children in reverse start order: SIGTERM, then SIGKILL after 10 s.
async fn stop_all(nodes: &mut Vec<Node>) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for node in nodes.iter().rev() {
        if let Some(pid) = node.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    for node in nodes.iter_mut().rev() {
        match tokio::time::timeout(Duration::from_secs(10), node.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("{} did not stop within 10 s; killing it", node.name);
                let _ = node.child.kill().await;
            }
        }
    }
    nodes.clear();
    println!("Federation stopped.");
}
