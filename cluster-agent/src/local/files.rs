//! What `local` keeps on disk: the sample data (generated on first run), `federation.json`
//! for the scripts in `load-tests/`, and Prometheus's file-discovery targets.

use super::children::Node;
use std::path::Path;
use std::time::Instant;

/// Makes `<run_dir>/logs` and removes the logs of an earlier run: logs are appended across a
/// child's restarts, and each run of `local` starts them afresh.
pub(super) fn clear_logs(run_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(run_dir.join("logs"))?;
    for entry in std::fs::read_dir(run_dir.join("logs"))?.flatten() {
        if entry.path().extension().is_some_and(|ext| ext == "log") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Generates the TPC-H sample data at `scale` into `data_dir`, unless it is there already.
pub(super) async fn ensure_data(data_dir: &Path, scale: f64) -> anyhow::Result<()> {
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

/// Writes `federation.json`: the gateway URL and every child's role, pid and addresses, for
/// the scripts in `load-tests/`.
pub(super) fn write_federation(run_dir: &Path, url: &str, nodes: &[Node]) -> anyhow::Result<()> {
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
pub(super) const PROMETHEUS_TARGETS: &str = "prometheus-targets.json";

/// Writes every child's metrics address for Prometheus's `file_sd_configs`: one target group
/// per child, labelled `job` (`flotilla-<role>`) and `node` (its id).
pub(super) fn write_prometheus_targets(run_dir: &Path, nodes: &[Node]) -> anyhow::Result<()> {
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
