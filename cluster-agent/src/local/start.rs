//! Starting the federation: TaskManagers first (the first is everyone's gossip seed), then the
//! shards, then the gateway, each child pinned afterwards to the ports it bound.

use super::LocalArgs;
use super::children::{Node, RestartConfig, start};
use crate::catalog::CatalogConfig;
use crate::config::{Config, Role};
use flotilla_cluster::{CertPair, ClusterConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What every child of one run of `local` shares.
pub(super) struct Shared {
    /// The `cluster-agent` executable every child runs.
    pub(super) executable: PathBuf,
    /// `<data-dir>/local`: configs, logs and the files scripts read.
    pub(super) run_dir: PathBuf,
    /// The tables every shard and TaskManager serves.
    pub(super) catalog: CatalogConfig,
    /// The cluster secret and internal TLS of this run.
    pub(super) cluster: ClusterConfig,
}

/// A federation that is up: where to reach it.
pub(super) struct Started {
    /// The gateway's URL.
    pub(super) url: String,
    /// The gateway's Flight SQL address, `host:port`.
    flight: String,
    /// The certificate clients trust, with `--tls`.
    pub(super) ca: Option<PathBuf>,
    shards: Vec<String>,
    taskmanagers: Vec<String>,
    seeds: Vec<String>,
    report_to: Vec<String>,
}

/// Starts every child, pushing each onto `nodes` as it comes up (so that a failure part-way
/// still stops those already running).
pub(super) async fn start_federation(
    shared: &Shared,
    args: &LocalArgs,
    tls: Option<CertPair>,
    nodes: &mut Vec<Node>,
) -> anyhow::Result<Started> {
    // Shards and the gateway gossip, through the first shard; TaskManagers report to the shards.
    let mut seeds: Vec<String> = Vec::new();
    let mut report_to: Vec<String> = Vec::new();
    // The processes share one host: each gets a share of its memory as its watermark (60 %
    // for the TaskManagers, 10 % for the shards), not 80 % each.
    let host_mib = crate::memory::available_memory() >> 20;
    let taskmanager_mib = (host_mib * 6 / 10 / args.taskmanagers.max(1) as u64).max(256);
    let shard_mib = (host_mib / 10 / args.shards.max(1) as u64).max(256);
    let mut shards = Vec::new();
    for index in 1..=args.shards.max(1) {
        let name = format!("jm-{index}");
        let mut config = agent_config(shared, &name, &seeds);
        config.memory.limit_mb = shard_mib;
        config.jobmanager.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut node = start_child(shared, Role::JobManager.as_str(), &name, &config).await?;
        shards.push(internal_url(shared, &node)?);
        if seeds.is_empty() {
            seeds.push(node.address("gossip")?.to_string());
        }
        report_to.push(node.address("grpc")?.to_string());
        config.jobmanager.listen = node.address("grpc")?.parse()?;
        config.jobmanager.admin_listen = node.address("admin")?.parse()?;
        config.gossip.listen = node.address("gossip")?.parse()?;
        node.config = Some(RestartConfig::Agent(Box::new(config)));
        nodes.push(node);
    }
    let mut taskmanagers = Vec::new();
    for index in 1..=args.taskmanagers.max(1) {
        let name = format!("tm-{index}");
        let mut config = agent_config(shared, &name, &[]);
        config.reports.shards = report_to.clone();
        config.memory.limit_mb = taskmanager_mib;
        config.taskmanager.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.taskmanager.slots = args.slots;
        let mut node = start_child(shared, Role::TaskManager.as_str(), &name, &config).await?;
        taskmanagers.push(internal_url(shared, &node)?);
        config.taskmanager.listen = node.address("grpc")?.parse()?;
        config.taskmanager.admin_listen = node.address("admin")?.parse()?;
        config.gossip.listen = node.address("gossip")?.parse()?;
        node.config = Some(RestartConfig::Agent(Box::new(config)));
        nodes.push(node);
    }
    let mut config = gateway::Config::default();
    config.http.listen = args.http;
    config.flight.listen = Some(args.flight);
    config.gossip.seeds = seeds.clone();
    config.cluster = shared.cluster.clone();
    if let Some(pair) = tls {
        config.tls = pair.into();
    }
    let ca = config.tls.cert_file.clone();
    let mut node = start_child(shared, "gateway", "gateway", &config).await?;
    let scheme = if ca.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", node.address("http")?);
    config.http.listen = node.address("http")?.parse()?;
    let flight = node.address("flight")?.to_string();
    config.flight.listen = Some(flight.parse()?);
    config.gossip.listen = node.address("gossip")?.parse()?;
    node.config = Some(RestartConfig::Gateway(Box::new(config)));
    nodes.push(node);
    Ok(Started {
        url,
        flight,
        ca,
        shards,
        taskmanagers,
        seeds,
        report_to,
    })
}

impl Started {
    /// Tells the user where everything is and how to send a first query (`tpch_scale`: the
    /// TPC-H data's scale, None with the user's own tables).
    pub(super) fn print_banner(&self, shared: &Shared, data_dir: &Path, tpch_scale: Option<f64>) {
        let Self {
            url,
            flight,
            ca,
            shards,
            taskmanagers,
            seeds,
            report_to,
        } = self;
        let cacert = ca
            .as_ref()
            .map(|path| format!("--cacert {} ", path.display()))
            .unwrap_or_default();
        println!();
        println!("Flotilla local federation is up:");
        let (flight_scheme, encryption) = if ca.is_some() {
            ("grpc+tls", "true")
        } else {
            ("grpc", "false")
        };
        println!("  gateway       {url}");
        println!("  flight sql    {flight_scheme}://{flight}");
        println!(
            "                (ADBC: adbc_driver_flightsql.dbapi.connect(\"{flight_scheme}://{flight}\");"
        );
        println!(
            "                 JDBC/DBeaver: jdbc:arrow-flight-sql://{flight}?useEncryption={encryption})"
        );
        println!("  shards        {}", shards.join(", "));
        if taskmanagers.len() > 8 {
            println!(
                "  taskmanagers  {} ({} …)",
                taskmanagers.len(),
                taskmanagers[..4].join(", ")
            );
        } else {
            println!("  taskmanagers  {}", taskmanagers.join(", "));
        }
        println!(
            "  gossip seed   {} (join more shards with --set gossip.seeds=[\"{}\"])",
            seeds.join(", "),
            seeds.join("\",\"")
        );
        println!(
            "  report to     {} (join more TaskManagers with --set reports.shards=[\"{}\"])",
            report_to.join(", "),
            report_to.join("\",\"")
        );
        match tpch_scale {
            Some(scale) => println!(
                "  data          {} (TPC-H scale {scale})",
                data_dir.display()
            ),
            None => {
                let names: Vec<&str> = shared
                    .catalog
                    .tables
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect();
                println!("  tables        {}", names.join(", "));
            }
        }
        println!("  configs/logs  {}", shared.run_dir.display());
        println!();
        println!("Try:");
        println!(
            "  curl -sS {cacert}{url}/v1/query -H 'accept: application/json' -H 'content-type: text/plain' \\"
        );
        let example = match tpch_scale {
            Some(_) => {
                "SELECT n_name, r_name FROM nation JOIN region ON n_regionkey = r_regionkey ORDER BY n_name LIMIT 5"
            }
            None => "SHOW TABLES",
        };
        println!("       --data-binary '{example}'");
        println!();
    }
}

/// A shard's or TaskManager's config before it binds: its id, the seeds, the catalog and the
/// cluster's secret and TLS.
fn agent_config(shared: &Shared, name: &str, seeds: &[String]) -> Config {
    let mut config = Config::default();
    config.node.id = Some(name.to_string());
    config.gossip.seeds = seeds.to_vec();
    config.catalog = shared.catalog.clone();
    config.cluster = shared.cluster.clone();
    config.node.drain_timeout_ms = super::children::CHILD_DRAIN.as_millis() as u64;
    config
}

/// Starts one child with `config` written as its TOML file.
async fn start_child(
    shared: &Shared,
    role: &str,
    name: &str,
    config: &impl serde::Serialize,
) -> anyhow::Result<Node> {
    let text = toml::to_string(config)?;
    start(&shared.executable, role, name, &text, &shared.run_dir).await
}

/// The gRPC URL a shard or TaskManager serves on.
fn internal_url(shared: &Shared, node: &Node) -> anyhow::Result<String> {
    Ok(format!(
        "{}://{}",
        shared.cluster.scheme(),
        node.address("grpc")?
    ))
}
