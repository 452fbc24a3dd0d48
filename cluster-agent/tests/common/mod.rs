//! End-to-end test support: a federation of real `cluster-agent` processes on 127.0.0.1 with
//! ephemeral ports, TPC-H data shared by every test, an HTTP helper and a reference DataFusion.

#![allow(dead_code)]

pub mod compare;
mod federation;
mod http;
pub mod internal;
pub mod s3;
mod samples;

#[allow(unused_imports)] // Not every test binary uses both.
pub use federation::{Federation, FederationOptions};
#[allow(unused_imports)] // Not every test binary uses every helper.
pub use http::{HttpResponse, http, metric_sum, post_sql, query_json, try_http};
#[allow(unused_imports)] // Not every test binary uses every helper.
pub use samples::{
    is_ordered, reference_batches, reference_context, sample, samples, short_samples,
};

use bytes::Bytes;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Scale factor of the shared test data.
pub const SCALE: f64 = 0.01;
/// The longest any single process may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Returns the TPC-H data directory shared by all tests, generating it once.
pub fn tpch_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tpch-sf{SCALE}"));
        if !cluster_agent::is_tpch_generated(&dir, SCALE) {
            // Generate beside the final place, then rename: concurrent test processes never
            // see a half-written directory.
            let staging = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("tpch-staging-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&staging);
            cluster_agent::generate_tpch(SCALE, &staging, &|_| {}).expect("generating TPC-H");
            if std::fs::rename(&staging, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&staging);
                assert!(
                    cluster_agent::is_tpch_generated(&dir, SCALE),
                    "no TPC-H data at {}",
                    dir.display()
                );
            }
        }
        dir
    })
    .clone()
}

/// One child process, killed when dropped.
pub struct Process {
    pub name: String,
    pub child: Child,
    pub addresses: BTreeMap<String, String>,
    pub log: PathBuf,
}

impl Process {
    /// Starts `cluster-agent <args>` with a clean environment and waits for its LISTENING line.
    pub fn start(name: &str, args: &[&str], dir: &Path) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cluster-agent"));
        command.args(args);
        Self::start_command(name, command, dir)
    }

    /// Starts `command` (which runs `cluster-agent`, perhaps through a wrapper that `exec`s it)
    /// with a clean environment and waits for its LISTENING line.
    pub fn start_command(name: &str, mut command: Command, dir: &Path) -> Process {
        let log = dir.join(format!("{name}.log"));
        let mut child = command
            .env_clear()
            .env("RUST_BACKTRACE", "1")
            // Spill directories of a process the test kills stay in the test's folder.
            .env("TMPDIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap_or_else(|error| panic!("starting {name}: {error}"));
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if line.starts_with("LISTENING ") {
                    let _ = sender.send(line);
                    break;
                }
            }
            for _ in lines {}
        });
        let line = match receiver.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "{name} did not start; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let addresses = line
            .split_whitespace()
            .skip(1)
            .filter_map(|pair| pair.split_once('='))
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        Process {
            name: name.to_string(),
            child,
            addresses,
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The gRPC URL of an agent.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.addresses["grpc"])
    }

    /// The admin base URL of an agent.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.addresses["admin"])
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process with SIGTERM (it drains) and waits for it, at most `within`; panics
    /// if it is still running then or ended in failure.
    pub async fn terminate(&mut self, within: Duration) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let asked = std::time::Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                asked.elapsed() < within,
                "{} still running {within:?} after SIGTERM",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "{} ended with {status}", self.name);
    }

    /// Bytes this process passed to write-like system calls (sockets included), from /proc.
    pub fn written_bytes(&self) -> u64 {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.pid())).unwrap();
        io.lines()
            .find_map(|line| line.strip_prefix("wchar: "))
            .and_then(|value| value.trim().parse().ok())
            .unwrap()
    }
}

impl Process {
    /// A process slot not started yet.
    pub fn placeholder() -> Process {
        let child = Command::new("true").spawn().unwrap();
        Process {
            name: "placeholder".into(),
            child,
            addresses: BTreeMap::new(),
            log: PathBuf::new(),
        }
    }
}

/// Prints a process's warnings and errors (INFO lines would bury them: CI shows only part of a
/// failing test's output), at most the last 200 such lines.
pub fn print_notable_log(process: &Process) {
    let log = std::fs::read_to_string(&process.log).unwrap_or_default();
    let notable: Vec<&str> = log
        .lines()
        .filter(|line| !line.contains(" INFO ") && !line.contains(" DEBUG "))
        .collect();
    let shown = &notable[notable.len().saturating_sub(200)..];
    eprintln!(
        "==== {} ({} of {} log lines are not INFO; last {} shown) ====\n{}",
        process.name,
        notable.len(),
        log.lines().count(),
        shown.len(),
        shown.join("\n")
    );
}

/// How many members the gateway at `url` sees ready for work, by its `/v1/cluster`: gateways
/// and shards gossip shows not `starting`, plus the TaskManagers a shard has `up`; 0 when it
/// does not answer.
pub fn serving_members(url: &str, extra_headers: &str) -> usize {
    blocking_get_json(&format!("{url}/v1/cluster"), extra_headers)
        .and_then(|view| {
            let gossiping = view["members"].as_array().map(|members| {
                members
                    .iter()
                    .filter(|member| member["starting"] == false)
                    .count()
            })?;
            let taskmanagers = view["taskmanagers"]["counts"]["up"].as_u64().unwrap_or(0);
            Some(gossiping + taskmanagers as usize)
        })
        .unwrap_or(0)
}

/// Every member a gateway's `/v1/cluster` lists: gateways and shards (gossip), then the page of
/// TaskManagers one shard reported.
pub fn all_members(view: &serde_json::Value) -> Vec<serde_json::Value> {
    let gossiping = view["members"].as_array().into_iter().flatten();
    let taskmanagers = view["taskmanagers"]["members"]
        .as_array()
        .into_iter()
        .flatten();
    gossiping.chain(taskmanagers).cloned().collect()
}

/// How many TaskManagers the shard `process` can choose now, by its `/v1/state`.
pub fn taskmanagers_up(process: &Process) -> u64 {
    blocking_get_json(&format!("{}/v1/state", process.admin_url()), "")
        .and_then(|state| state["taskmanagers"]["counts"]["up"].as_u64())
        .unwrap_or(0)
}

/// GETs a JSON document without an async runtime (for set-up code).
pub fn blocking_get_json(url: &str, extra_headers: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = std::net::TcpStream::connect(authority).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n{extra_headers}\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let body = response.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn toml_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|item| format!("\"{item}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The catalog section for the TPC-H tables under `data`.
pub fn catalog_toml(data: &Path) -> String {
    cluster_agent::TPCH_TABLES
        .iter()
        .map(|table| {
            format!(
                "[[catalog.tables]]\nname = \"{table}\"\nformat = \"parquet\"\nlocation = \"{}\"\n",
                data.join(table).display()
            )
        })
        .collect()
}

/// Reads an agent's `/v1/state` JSON.
pub async fn state(process: &Process) -> serde_json::Value {
    http(
        "GET",
        &format!("{}/v1/state", process.admin_url()),
        &[],
        Bytes::new(),
    )
    .await
    .json()
}

/// Waits until `condition` holds, at most `timeout`.
pub async fn eventually(timeout: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
