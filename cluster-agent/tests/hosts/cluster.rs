//! A federation on test hosts: one gateway, two shards and two TaskManagers, each on a host of
//! its own and bound to `0.0.0.0` with the ports a deployment would use; the test itself runs
//! on a sixth host, `client`.

use super::net::World;
use crate::common::{self, Process};
use std::future::Future;
use std::time::{Duration, Instant};

/// The hosts of every test, in address order (198.18.0.10 upwards).
pub const HOSTS: [&str; 6] = ["client", "gateway", "jm-0", "jm-1", "tm-0", "tm-1"];
/// The TaskManagers' hosts (and names).
pub const TASKMANAGERS: [&str; 2] = ["tm-0", "tm-1"];
/// The agents' hosts (and names).
pub const AGENTS: [&str; 4] = ["tm-0", "tm-1", "jm-0", "jm-1"];

/// Ports every member uses on its own host.
const GRPC_PORT: u16 = 50051;
const ADMIN_PORT: u16 = 9090;
const GOSSIP_PORT: u16 = 7946;
const HTTP_PORT: u16 = 8080;

/// The members running on the test hosts. Processes are dropped (killed) before the hosts.
pub struct HostCluster {
    pub taskmanagers: Vec<Process>,
    pub shards: Vec<Process>,
    pub gateway: Process,
    /// The gateway's URL, as the client host reaches it.
    pub url: String,
    /// The cluster secret every member holds.
    pub secret: String,
    dir: tempfile::TempDir,
    pub world: World,
}

/// Runs `body` against a federation on fresh test hosts, on a runtime whose threads are all on
/// the client host. Where this machine cannot make network namespaces the test is skipped with
/// the reason, unless `CI` is set: there a skip is a failure.
pub fn on_hosts<F, Fut>(body: F)
where
    F: FnOnce(HostCluster) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(world) = World::for_test(&HOSTS) else {
        return;
    };
    // The data is generated before entering the client host (the files are shared storage).
    common::tpch_dir();
    let client = world.host("client");
    client.enter();
    let namespace = client.namespace_path();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .on_thread_start(move || super::net::enter_namespace(&namespace))
        .build()
        .unwrap();
    let mut cluster = HostCluster::start(world);
    if std::env::var_os("FLOTILLA_KEEP_LOGS").is_some() {
        eprintln!("logs kept in {}", cluster.dir.path().display());
        cluster.dir.disable_cleanup(true);
    }
    runtime.block_on(body(cluster));
}

impl HostCluster {
    /// Starts every member on its host and waits until the gateway sees them all serving.
    fn start(world: World) -> HostCluster {
        let dir = tempfile::tempdir().unwrap();
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let gateway_ip = world.host("gateway").ip;
        let mut cluster = HostCluster {
            taskmanagers: Vec::new(),
            shards: Vec::new(),
            gateway: Process::placeholder(),
            url: format!("http://{gateway_ip}:{HTTP_PORT}"),
            secret,
            dir,
            world,
        };
        for name in ["jm-0", "jm-1"] {
            let process = cluster.start_member(name);
            cluster.shards.push(process);
        }
        for name in TASKMANAGERS {
            let process = cluster.start_member(name);
            cluster.taskmanagers.push(process);
        }
        cluster.gateway = cluster.start_member("gateway");
        cluster.wait_converged(Duration::from_secs(30));
        cluster
    }

    /// Writes the config of member `name` (its host's name) and starts it there.
    pub fn start_member(&self, name: &str) -> Process {
        let (role, config) = self.config(name);
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let log = self.dir.path().join(format!("{name}.log"));
        if log.exists() {
            let _ = std::fs::rename(&log, self.dir.path().join(format!("{name}.previous.log")));
        }
        let mut command = self
            .world
            .host(name)
            .command(env!("CARGO_BIN_EXE_cluster-agent"));
        command.args([role, "--config", path.to_str().unwrap()]);
        Process::start_command(name, command, self.dir.path())
    }

    /// The role and the whole config of member `name`: everything bound to `0.0.0.0`, nothing
    /// advertised but by the first shard (it has no seed to find its address by). Shards and
    /// the gateway gossip through the shards; TaskManagers report to both shards.
    fn config(&self, name: &str) -> (&'static str, String) {
        let seed_host = self.world.host("jm-0").ip;
        let other_shard = self.world.host("jm-1").ip;
        let seeds = if name == "jm-0" {
            // Rejoins through the other shard after a restart.
            format!("[\"{other_shard}:{GOSSIP_PORT}\"]")
        } else {
            format!("[\"{seed_host}:{GOSSIP_PORT}\", \"{other_shard}:{GOSSIP_PORT}\"]")
        };
        let advertise = |key: &str| {
            if name == "jm-0" {
                format!("{key} = \"{seed_host}\"\n")
            } else {
                String::new()
            }
        };
        let gossip = format!(
            "[gossip]\nlisten = \"0.0.0.0:{GOSSIP_PORT}\"\nseeds = {seeds}\nload_interval_ms = 50\n{}",
            advertise("advertise")
        );
        let reports = format!(
            "[reports]\ninterval_ms = 200\nsuspect_after_ms = 1000\n\
             shards = [\"{seed_host}:{GRPC_PORT}\", \"{other_shard}:{GRPC_PORT}\"]\n"
        );
        let cluster = format!("[cluster]\nsecret = \"{}\"\n", self.secret);
        let catalog = common::catalog_toml(&common::tpch_dir());
        let node = format!("[node]\nid = \"{name}\"\n");
        let listeners = format!(
            "listen = \"0.0.0.0:{GRPC_PORT}\"\nadmin_listen = \"0.0.0.0:{ADMIN_PORT}\"\n{}{}",
            advertise("advertise"),
            advertise("admin_advertise")
        );
        match name {
            "gateway" => (
                "gateway",
                format!("{cluster}[http]\nlisten = \"0.0.0.0:{HTTP_PORT}\"\n{gossip}"),
            ),
            _ if name.starts_with("tm-") => (
                "taskmanager",
                format!(
                    "{cluster}{node}[taskmanager]\n{listeners}slots = 4\n{gossip}{reports}{catalog}"
                ),
            ),
            // Small scan partitions: lineitem and orders (2 MB and 0.6 MB at SF 0.01) span both
            // TaskManagers, so a fault hits queries that run stages on a TaskManager as well as
            // those it heads.
            _ => (
                "jobmanager",
                format!(
                    "{cluster}{node}[jobmanager]\n{listeners}scan_bytes_per_partition = 262144\n{gossip}{reports}{catalog}"
                ),
            ),
        }
    }

    /// Waits until the gateway sees all five members serving.
    pub fn wait_converged(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let serving = common::serving_members(&self.url, "");
            if serving == 5 {
                return;
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("the gateway sees {serving} of 5 members after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every member process.
    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        self.taskmanagers
            .iter()
            .chain(&self.shards)
            .chain([&self.gateway])
    }

    /// The member process called `name`.
    pub fn member(&mut self, name: &str) -> &mut Process {
        self.taskmanagers
            .iter_mut()
            .chain(&mut self.shards)
            .chain([&mut self.gateway])
            .find(|process| process.name == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    /// Prints every member's warnings and errors.
    pub fn dump_logs(&self) {
        for process in self.processes() {
            common::print_notable_log(process);
        }
    }

    /// Prints the gateway's view of the cluster and every member's state (for a failing
    /// test's output).
    pub async fn print_views(&self) {
        let view = common::try_http(
            "GET",
            &format!("{}/v1/cluster", self.url),
            &[],
            bytes::Bytes::new(),
        )
        .await
        .map(|response| String::from_utf8_lossy(&response.body).to_string());
        eprintln!("==== gateway /v1/cluster: {view:?}");
        for name in AGENTS {
            eprintln!("==== {name} /v1/state: {:?}", self.state(name).await);
        }
    }

    /// Waits (at most `timeout`) until no TaskManager holds a slot, a lease or a streaming
    /// result; says whether they all settled.
    pub async fn taskmanagers_idle(&self, timeout: Duration) -> bool {
        common::eventually(timeout, async || {
            let mut busy = 0;
            for name in TASKMANAGERS {
                let Some(state) = self.state(name).await else {
                    return false;
                };
                for pointer in [
                    "/slots/slots_used",
                    "/slots/leases_active",
                    "/results_streaming",
                ] {
                    busy += state
                        .pointer(pointer)
                        .and_then(|value| value.as_u64())
                        .unwrap_or(1);
                }
            }
            busy == 0
        })
        .await
    }
}

impl HostCluster {
    /// Sends `signal` to member `name`.
    pub fn signal(&mut self, name: &str, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.member(name).pid());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Time from `healed` until member `name` has done work beyond `baseline` (by default what
    /// it had done at its first answer after the heal; 0 for a restarted one), at most
    /// `limit`.
    pub async fn time_to_work(
        &self,
        name: &str,
        healed: tokio::time::Instant,
        limit: Duration,
        mut baseline: Option<u64>,
    ) -> Option<Duration> {
        while healed.elapsed() < limit {
            if let Some(done) = self.work_done(name).await {
                match baseline {
                    None => baseline = Some(done),
                    Some(before) if done > before => return Some(healed.elapsed()),
                    Some(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl HostCluster {
    /// Agent `name`'s `/v1/state` (from its admin port on its host), or `None` when it does not
    /// answer within 2 s.
    pub async fn state(&self, name: &str) -> Option<serde_json::Value> {
        let url = format!("http://{}:{ADMIN_PORT}/v1/state", self.world.host(name).ip);
        let response = tokio::time::timeout(
            Duration::from_secs(2),
            common::try_http("GET", &url, &[], bytes::Bytes::new()),
        )
        .await
        .ok()?
        .ok()?;
        (response.status == 200).then(|| response.json())
    }

    /// Sum of `series` on member `name`'s `/metrics` (since its last start).
    pub async fn metric(&self, name: &str, series: &str) -> f64 {
        let url = format!("http://{}:{ADMIN_PORT}/metrics", self.world.host(name).ip);
        common::metric_sum(&url, series).await
    }

    /// Work agent `name` has done so far: hand-overs and tasks of a TaskManager, plans of a
    /// shard.
    pub async fn work_done(&self, name: &str) -> Option<u64> {
        let state = self.state(name).await?;
        let count = |key: &str| state[key].as_u64().unwrap_or(0);
        Some(count("handovers_total") + count("tasks_total") + count("queries_planned"))
    }
}
