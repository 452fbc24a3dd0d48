//! The children of `local`: starting one and reading its `LISTENING` line, starting again one
//! that exits (on the same ports), and stopping them all.

use super::files::write_federation;
use crate::config::{Config, Role};
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A child exiting more often than this within [`RESTART_WINDOW`] stops the federation.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// One child process and what it reported.
pub(super) struct Node {
    pub(super) name: String,
    pub(super) role: String,
    pub(super) child: Child,
    pub(super) addresses: BTreeMap<String, String>,
    /// Its config, pinned to the ports it bound, for restarts.
    pub(super) config: Option<RestartConfig>,
    pub(super) restarts: Vec<Instant>,
    /// The OOM kills of `local`'s cgroup when this child started: more when it exits means the
    /// kernel's OOM killer took it.
    pub(super) oom_kills: Option<u64>,
}

/// How to start a node again: same role, same ports; seeds are filled in at restart.
pub(super) enum RestartConfig {
    Agent(Box<Config>),
    Gateway(Box<gateway::Config>),
}

impl Node {
    pub(super) fn address(&self, key: &str) -> anyhow::Result<&str> {
        self.addresses
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("{} did not report its {key} address", self.name))
    }
}

/// Starts one child with its config written to `<run_dir>/<name>.toml` and waits for its
/// `LISTENING` line.
pub(super) async fn start(
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
    flotilla_cluster::spawn_instrumented(async move {
        while let Ok(Some(_)) = lines.next_line().await {}
    });
    let addresses = parse_listening(&line);
    Ok(Node {
        name: name.to_string(),
        role: role.to_string(),
        child,
        addresses,
        config: None,
        restarts: Vec::new(),
        oom_kills: oom_kills(),
    })
}

/// Parses `LISTENING key=value key=value`.
fn parse_listening(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Starts again any child that exits, on the same ports, seeded by the others; returns when
/// one keeps failing.
pub(super) async fn supervise(
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
    let exit = describe_exit(status, nodes[index].oom_kills);
    eprintln!("{name} {exit}; starting it again on the same ports");
    let seeds: Vec<String> = nodes
        .iter()
        .enumerate()
        .filter(|(other, node)| *other != index && node.role != Role::TaskManager.as_str())
        .filter_map(|(_, node)| node.addresses.get("gossip").cloned())
        .collect();
    let config = match nodes[index].config.as_mut() {
        Some(RestartConfig::Agent(config)) => {
            // TaskManagers keep their shards (which restart on the same ports).
            if config.reports.shards.is_empty() {
                config.gossip.seeds = seeds;
            }
            // Published over gossip: `/v1/cluster` and the web UI say why it was restarted.
            config.node.previous_exit = Some(format!("{exit} ({})", utc_now()));
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

/// How a child ended, as a person reads it: OOM-killed, killed by a signal, or its exit code.
fn describe_exit(status: std::process::ExitStatus, oom_kills_at_start: Option<u64>) -> String {
    use std::os::unix::process::ExitStatusExt;
    let oom_killed = oom_kills()
        .zip(oom_kills_at_start)
        .is_some_and(|(now, then)| now > then);
    match (status.code(), status.signal()) {
        (_, Some(9)) if oom_killed => "was OOM-killed (killed by the kernel for memory)".into(),
        (_, Some(signal)) => {
            let name = nix::sys::signal::Signal::try_from(signal)
                .map(|signal| signal.as_str().to_string())
                .unwrap_or_else(|_| "unknown".into());
            let hint = match signal {
                6 => ": it aborted (a failed allocation or a panic while panicking)",
                9 => ": killed by someone's SIGKILL",
                _ => "",
            };
            format!("was killed by signal {signal} ({name}){hint}")
        }
        (Some(code), None) => format!("exited with code {code}"),
        (None, None) => format!("ended ({status})"),
    }
}

/// OOM kills in this process's cgroup (v2) so far, where the kernel says.
fn oom_kills() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|line| line.strip_prefix("0::"))?;
    let events =
        std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.events", path.trim())).ok()?;
    events
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|count| count.trim().parse().ok())
}

/// The time now, UTC, to the second.
fn utc_now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    datafusion::arrow::temporal_conversions::timestamp_s_to_datetime(seconds)
        .map_or_else(|| seconds.to_string(), |time| format!("{time} UTC"))
}

/// How long a child of `local` waits for its running work on SIGTERM (`node.drain_timeout_ms`):
/// a development federation stops promptly.
pub(super) const CHILD_DRAIN: Duration = Duration::from_secs(5);

/// A child's whole stop: its drain, a few gossip rounds before it and the 5 s its gRPC server
/// gives open calls after it. Past this, `local` kills it.
const CHILD_STOP: Duration = Duration::from_secs(CHILD_DRAIN.as_secs() + 8);

/// Stops children in reverse start order: SIGTERM, then SIGKILL past [`CHILD_STOP`].
pub(super) async fn stop_all(nodes: &mut Vec<Node>) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for node in nodes.iter().rev() {
        if let Some(pid) = node.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    for node in nodes.iter_mut().rev() {
        match tokio::time::timeout(CHILD_STOP, node.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!(
                    "{} did not stop within {} s; killing it",
                    node.name,
                    CHILD_STOP.as_secs()
                );
                let _ = node.child.kill().await;
            }
        }
    }
    nodes.clear();
    println!("Federation stopped.");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn an_exit_is_told_as_a_person_reads_it() {
        let killed = std::process::ExitStatus::from_raw(9);
        assert_eq!(
            describe_exit(killed, None),
            "was killed by signal 9 (SIGKILL): killed by someone's SIGKILL"
        );
        let aborted = std::process::ExitStatus::from_raw(6);
        assert!(describe_exit(aborted, None).contains("(SIGABRT): it aborted"));
        let failed = std::process::ExitStatus::from_raw(101 << 8);
        assert_eq!(describe_exit(failed, None), "exited with code 101");
        assert!(utc_now().ends_with(" UTC"));
    }
}
