//! The command line: one subcommand per role, plus `local`, `gen-data`, `bench` and
//! `check-config`.

use crate::config::{Config, Role};
use clap::{Args, Parser, Subcommand};
use gateway::{EX_SOFTWARE, EX_USAGE};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flotilla cluster agent.
#[derive(Debug, Parser)]
#[command(name = "cluster-agent", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a JobManager shard: plans SQL, hands plans to TaskManagers.
    Jobmanager(RoleArgs),
    /// Run a TaskManager: executes plan stages and serves results.
    Taskmanager(RoleArgs),
    /// Run the HTTP gateway (the same code as the `gateway` binary).
    Gateway(RoleArgs),
    /// Start a gateway, 2 shards and 2 TaskManagers on loopback, with TPC-H sample data.
    Local(crate::local::LocalArgs),
    /// Generate TPC-H data as Parquet.
    GenData(GenDataArgs),
    /// Measure a running federation next to in-process DataFusion on the same data.
    Bench(crate::bench::BenchArgs),
    /// Simulate thousands of TaskManagers reporting to the shards (virtual time, one process)
    /// and print the traffic, detection times and false downs.
    Simulate(crate::simulate::SimulateArgs),
    /// Load a role's config through every layer (file, `AGENT_*`/`GATEWAY_*` env, flags) and
    /// print the result as TOML; exit 64 when it does not load (files it names are not read).
    CheckConfig(CheckConfigArgs),
}

#[derive(Debug, Args)]
struct CheckConfigArgs {
    /// The role whose config to check.
    #[arg(value_enum)]
    role: ConfigRole,
    #[command(flatten)]
    args: RoleArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ConfigRole {
    Jobmanager,
    Taskmanager,
    Gateway,
}

/// Flags shared by the long-running roles.
#[derive(Debug, Args)]
struct RoleArgs {
    /// TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address of the main service (gRPC for agents, HTTP for the gateway); overrides the file.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address of the HTTP admin service (agents only); overrides the file.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Any config value, as `section.field=value`; repeatable, applied last.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Debug, Args)]
struct GenDataArgs {
    /// TPC-H scale factor (1 = about 1 GB of CSV, 6 million lineitems).
    #[arg(long, default_value_t = 0.1)]
    scale: f64,
    /// Output directory; one sub-directory per table.
    #[arg(long)]
    out: PathBuf,
}

/// Runs the command line; `env` is the process environment (passed in for tests).
pub async fn run(cli: Cli, env: BTreeMap<String, String>) -> ExitCode {
    flotilla_cluster::use_ring_provider();
    match cli.command {
        Command::Jobmanager(args) => run_agent(Role::JobManager, args, &env).await,
        Command::Taskmanager(args) => run_agent(Role::TaskManager, args, &env).await,
        Command::Gateway(args) => run_gateway(args, &env).await,
        Command::Local(args) => exit(crate::local::run_local(args).await),
        Command::Bench(args) => exit(crate::bench::run_bench(args).await),
        Command::CheckConfig(check) => check_config(check, &env),
        Command::Simulate(args) => exit(crate::simulate::run_simulate(args).await),
        Command::GenData(args) => {
            let result = tokio::task::spawn_blocking(move || {
                crate::gendata::generate(args.scale, &args.out, &|line| eprintln!("{line}")).map(
                    |()| {
                        eprintln!(
                            "TPC-H scale {} written to {}",
                            args.scale,
                            args.out.display()
                        )
                    },
                )
            })
            .await;
            exit(result.map_err(anyhow::Error::from).and_then(|inner| inner))
        }
    }
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EX_SOFTWARE)
        }
    }
}

fn overrides(args: &RoleArgs, section: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = flotilla_cluster::parse_set(&args.set)?;
    if let Some(listen) = args.listen {
        let key = if section == "gateway" {
            "http.listen".to_string()
        } else {
            format!("{section}.listen")
        };
        pairs.push((key, format!("\"{listen}\"")));
    }
    if let Some(admin) = args.admin_listen {
        pairs.push((format!("{section}.admin_listen"), format!("\"{admin}\"")));
    }
    Ok(pairs)
}

/// Loads a config from the layers, or returns the exit code after saying what is wrong.
fn load<T: serde::de::DeserializeOwned>(
    args: &RoleArgs,
    section: &str,
    prefix: &str,
    env: &BTreeMap<String, String>,
) -> Result<T, ExitCode> {
    overrides(args, section)
        .and_then(|pairs| {
            flotilla_cluster::load_layered(args.config.as_deref(), env, prefix, &pairs)
        })
        .map_err(|error| {
            eprintln!("error: {error:#}");
            ExitCode::from(EX_USAGE)
        })
}

async fn run_agent(role: Role, args: RoleArgs, env: &BTreeMap<String, String>) -> ExitCode {
    let config: Config = match load(&args, role.as_str(), "AGENT", env) {
        Ok(config) => config,
        Err(code) => return code,
    };
    flotilla_cluster::init_tracing(&config.log);
    let registry = match flotilla_cluster::process_registry(role.as_str()) {
        Ok(registry) => registry,
        Err(error) => {
            eprintln!("error: cannot register metrics: {error}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    let started = match role {
        Role::JobManager => crate::jobmanager::start_jobmanager(config, registry).await,
        Role::TaskManager => crate::taskmanager::start_taskmanager(config, registry).await,
    };
    let handle = match started {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("error: cannot start {}: {error:#}", role.as_str());
            return ExitCode::from(EX_USAGE);
        }
    };
    println!("{}", handle.listening_line(role));
    tracing::info!(role = role.as_str(), grpc = %handle.grpc_addr, admin = %handle.admin_addr, "listening");
    tokio::select! {
        () = flotilla_cluster::shutdown_signal() => {}
        () = handle.drain.requested() => {}
    }
    tracing::info!(role = role.as_str(), "draining, then stopping");
    exit(handle.shutdown().await)
}

fn check_config(check: CheckConfigArgs, env: &BTreeMap<String, String>) -> ExitCode {
    let printed = match check.role {
        ConfigRole::Gateway => {
            load_printable::<gateway::Config>(&check.args, "gateway", "GATEWAY", env, |config| {
                hide_secret(&mut config.cluster)
            })
        }
        ConfigRole::Jobmanager => {
            load_printable::<Config>(&check.args, "jobmanager", "AGENT", env, hide_agent_secrets)
        }
        ConfigRole::Taskmanager => {
            load_printable::<Config>(&check.args, "taskmanager", "AGENT", env, hide_agent_secrets)
        }
    };
    match printed {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Loads a config as the role would and returns it as TOML, its secrets hidden.
fn load_printable<T: serde::de::DeserializeOwned + serde::Serialize>(
    args: &RoleArgs,
    section: &str,
    prefix: &str,
    env: &BTreeMap<String, String>,
    hide_secrets: impl FnOnce(&mut T),
) -> Result<String, ExitCode> {
    let mut config: T = load(args, section, prefix, env)?;
    hide_secrets(&mut config);
    toml::to_string(&config).map_err(|error| {
        eprintln!("error: cannot print the config: {error}");
        ExitCode::from(EX_SOFTWARE)
    })
}

/// Replaces a set cluster secret with a note: printed configs end up in terminals and tickets.
fn hide_secret(cluster: &mut flotilla_cluster::ClusterConfig) {
    if !cluster.secret.is_empty() {
        cluster.secret = "(set; not shown)".into();
    }
}

/// Hides an agent's cluster secret and its object stores' secret keys and session tokens.
fn hide_agent_secrets(config: &mut Config) {
    hide_secret(&mut config.cluster);
    for store in config.catalog.object_stores.values_mut() {
        for secret in [&mut store.secret_access_key, &mut store.session_token] {
            if secret.is_some() {
                *secret = Some("(set; not shown)".to_string());
            }
        }
    }
}

async fn run_gateway(args: RoleArgs, env: &BTreeMap<String, String>) -> ExitCode {
    let config: gateway::Config = match load(&args, "gateway", "GATEWAY", env) {
        Ok(config) => config,
        Err(code) => return code,
    };
    flotilla_cluster::init_tracing(&config.log);
    gateway::run_until_signal(config).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_agent_configs_hide_every_secret() {
        let mut config = Config::default();
        config.cluster.secret = "cluster-secret".into();
        config.catalog.object_stores.insert(
            "lake".into(),
            crate::catalog::ObjectStoreConfig {
                access_key_id: Some("AKID".into()),
                secret_access_key: Some("store-secret".into()),
                session_token: Some("store-token".into()),
                ..Default::default()
            },
        );
        hide_agent_secrets(&mut config);
        let printed = toml::to_string(&config).unwrap();
        for secret in ["cluster-secret", "store-secret", "store-token"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("AKID"), "{printed}");
    }
}
