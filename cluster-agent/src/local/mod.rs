//! `cluster-agent local`: a whole federation on loopback, as separate OS processes.
//!
//! ```text
//!   cluster-agent local [--table NAME=PATH]... [--catalog FILE]
//!     ├─ gen-data (first run, no own tables)  data/tpch-sf0.1/<table>/part-N.parquet
//!     ├─ taskmanager × 2  ─┐
//!     ├─ jobmanager × 2  ──┤ each: <data-dir>/local/<name>.toml, logs in <data-dir>/local/logs/
//!     └─ gateway ──────────┘ http://127.0.0.1:8080
//! ```
//! Children are started with ephemeral internal ports and report them on a `LISTENING` line.
//! `local` then supervises them: a child that exits (drained with `POST /admin/drain`, or
//! killed) is started again on the same ports, so rolling restarts and fail-over drills
//! (`load-tests/`) work against it. `<data-dir>/local/federation.json` lists every child with its
//! pid and addresses. On Ctrl-C or SIGTERM every child gets SIGTERM (5 s for running work, then SIGKILL after 13 s).

mod children;
mod files;
mod main_job;
mod start;
mod tables;

use anyhow::Context as _;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of `cluster-agent local`.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Where the TPC-H data lives (generated on first run); default `data/tpch-sf<scale>`, or
    /// `data/own` with --table or --catalog. Configs and logs go to its `local/`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve your own table instead of TPC-H: `NAME=PATH`, the format from the extension
    /// (`.parquet`, `.csv`, `.json`/`.ndjson`/`.jsonl`, `.orc`; a directory from its files', or
    /// a Delta table when it holds `_delta_log/`, an Iceberg table when it holds `metadata/`
    /// or is a `.metadata.json` file), or `NAME=PATH:FORMAT` (parquet, csv, ndjson, orc,
    /// delta, iceberg). Repeatable.
    #[arg(long = "table", value_name = "NAME=PATH[:FORMAT]")]
    tables: Vec<String>,
    /// Serve the tables of this TOML file's `[catalog]` section (tables, data_roots,
    /// object_stores, refresh_ms: what every shard and TaskManager reads), with any --table.
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
    /// TPC-H scale factor of the sample data.
    #[arg(long, default_value_t = 0.1)]
    scale: f64,
    /// The gateway's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// The gateway's Arrow Flight SQL address (ADBC, JDBC, DBeaver).
    #[arg(long, default_value = "127.0.0.1:8815")]
    flight: SocketAddr,
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

/// Runs the federation until Ctrl-C / SIGTERM (or, with `--once`, until the main job ran).
pub async fn run_local(args: LocalArgs) -> anyhow::Result<()> {
    let own = tables::own_catalog(args.catalog.as_deref(), &args.tables)?;
    let default_dir = match own {
        Some(_) => "data/own".to_string(),
        None => format!("data/tpch-sf{}", args.scale),
    };
    let data_dir = args.data_dir.clone().unwrap_or_else(|| default_dir.into());
    if own.is_none() {
        files::ensure_data(&data_dir, args.scale).await?;
    }
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let job = match &own {
        Some(catalog) => main_job::MainJob::count_rows(catalog),
        None => main_job::MainJob::tpch(),
    };
    let run_dir = data_dir.join("local");
    files::clear_logs(&run_dir)?;
    // With --tls, one self-signed pair serves the gateway's HTTPS and the internal gRPC.
    let tls = if args.tls {
        Some(flotilla_cluster::self_signed(&run_dir.join("tls"))?)
    } else {
        None
    };
    let shared = start::Shared {
        executable: std::env::current_exe().context("locating the cluster-agent executable")?,
        catalog: own.unwrap_or_else(|| crate::catalog::CatalogConfig::tpch(&data_dir)),
        // A fresh cluster secret per run: every child signs its calls and seals its datagrams
        // with keys derived from it.
        cluster: flotilla_cluster::ClusterConfig {
            secret: uuid::Uuid::new_v4().simple().to_string().into(),
            tls_cert_file: tls.as_ref().map(|pair| pair.cert_file.clone()),
            tls_key_file: tls.as_ref().map(|pair| pair.key_file.clone()),
            tls_ca_file: None,
            ..flotilla_cluster::ClusterConfig::default()
        },
        run_dir,
    };

    let mut nodes = Vec::new();
    let result = async {
        let started = start::start_federation(&shared, &args, tls, &mut nodes).await?;
        let tpch_scale = (args.tables.is_empty() && args.catalog.is_none()).then_some(args.scale);
        started.print_banner(&shared, &data_dir, tpch_scale);
        job.run(&started.url, started.ca.as_deref()).await?;
        // Written once the federation answered its first query: scripts wait for it.
        files::write_federation(&shared.run_dir, &started.url, &nodes)?;
        files::write_prometheus_targets(&shared.run_dir, &nodes)?;
        println!(
            "Metrics: Prometheus targets in {} (read by dashboards/prometheus.yml)",
            shared.run_dir.join(files::PROMETHEUS_TARGETS).display()
        );
        anyhow::Ok(started.url)
    }
    .await;

    if let (Ok(url), false) = (&result, args.once) {
        println!("Serving; press Ctrl-C to stop. Children that exit are started again.");
        tokio::select! {
            _ = flotilla_cluster::shutdown_signal() => {}
            error = children::supervise(&shared.executable, &shared.run_dir, url, &mut nodes) => {
                eprintln!("{error:#}; stopping the federation");
            }
        }
    }
    let result = result.map(|_| ());
    children::stop_all(&mut nodes).await;
    result
}
