//! A test federation: a gateway, shards and TaskManagers as separate processes on loopback
//! (shards and the gateway gossip; TaskManagers report to the shards), with helpers to add
//! members while it runs.

use super::{Process, catalog_toml, tpch_dir};
use std::time::{Duration, Instant};

/// A gateway, shards and TaskManagers, each a separate process (the first shard is the gossip
/// seed; TaskManagers report to the shards).
pub struct Federation {
    pub dir: tempfile::TempDir,
    pub taskmanagers: Vec<Process>,
    pub shards: Vec<Process>,
    pub gateway: Process,
    pub options: FederationOptions,
    /// The cluster secret every process of this federation shares.
    pub secret: String,
    seed: String,
    /// The `[catalog]` TOML of the members started from now on.
    pub catalog: String,
}

/// What a test federation is made of.
#[derive(Clone, Debug)]
pub struct FederationOptions {
    /// One entry per TaskManager: its pool.
    pub pools: Vec<String>,
    /// Slots of each TaskManager.
    pub slots: usize,
    /// Shards.
    pub shards: usize,
    /// Extra TOML for every shard's `[jobmanager]` section.
    pub jobmanager_toml: String,
    /// Extra TOML for every TaskManager's `[taskmanager]` section.
    pub taskmanager_toml: String,
    /// Extra TOML appended to the gateway's config.
    pub gateway_toml: String,
    /// An admin bearer token, when `gateway_toml` turns authentication on.
    pub admin_token: Option<String>,
    /// Extra TOML for every process's `[cluster]` section (internal TLS).
    pub cluster_toml: String,
    /// The `[catalog]` every shard and TaskManager reads; None: the shared TPC-H tables.
    pub catalog_toml: Option<String>,
    /// The `[reports]` section of every shard and TaskManager (the TaskManagers' `shards` is
    /// added); default: fast reports for tests.
    pub reports_toml: String,
}

impl Default for FederationOptions {
    fn default() -> Self {
        Self {
            pools: vec!["default".into(), "default".into()],
            slots: 4,
            shards: 2,
            jobmanager_toml: "queue_max_wait_ms = 30000\n".into(),
            taskmanager_toml: String::new(),
            gateway_toml: String::new(),
            admin_token: None,
            cluster_toml: String::new(),
            catalog_toml: None,
            reports_toml: REPORTS_TOML.into(),
        }
    }
}

/// Gossip settings for fast tests: frequent rounds and load updates.
const GOSSIP_TOML: &str = "[gossip]\ninterval_ms = 50\nload_interval_ms = 50\n";

/// Report settings for fast tests: TaskManagers report every 100 ms, shards pass one over after
/// 600 ms of silence.
pub const REPORTS_TOML: &str = "[reports]\ninterval_ms = 100\nsuspect_after_ms = 600\n";

impl Federation {
    /// Starts the federation over the shared TPC-H data.
    pub fn start() -> Federation {
        Self::start_with(2, 2)
    }

    /// Starts `taskmanagers` TaskManagers and `shards` shards behind one gateway.
    pub fn start_with(taskmanager_count: usize, shard_count: usize) -> Federation {
        Self::start_with_options(FederationOptions {
            pools: vec!["default".into(); taskmanager_count],
            shards: shard_count,
            ..FederationOptions::default()
        })
    }

    /// Starts a federation as `options` says, and waits until the gateway sees every member.
    pub fn start_with_options(options: FederationOptions) -> Federation {
        let dir = tempfile::tempdir().unwrap();
        let catalog = options
            .catalog_toml
            .clone()
            .unwrap_or_else(|| catalog_toml(&tpch_dir()));
        let mut federation = Federation {
            dir,
            taskmanagers: Vec::new(),
            shards: Vec::new(),
            gateway: Process::placeholder(),
            options: options.clone(),
            secret: uuid::Uuid::new_v4().simple().to_string(),
            seed: String::new(),
            catalog,
        };
        for _ in 0..options.shards {
            federation.add_shard();
        }
        for pool in &options.pools {
            federation.add_taskmanager(pool);
        }
        let secret = format!("\"{}\"", federation.secret);
        federation.gateway = federation.start_gateway("gateway", &secret);
        federation.wait_converged();
        federation
    }

    /// Starts a gateway called `name` (its config in `<name>.toml`) holding `secret` (a TOML
    /// string or list), gossiping through the shards running now.
    pub fn start_gateway(&self, name: &str, secret: &str) -> Process {
        let config = self.dir.path().join(format!("{name}.toml"));
        let seeds: Vec<String> = self
            .shards
            .iter()
            .map(|shard| shard.addresses["gossip"].clone())
            .collect();
        std::fs::write(
            &config,
            format!(
                "[cluster]\nsecret = {secret}\n{}[http]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 65536\n{GOSSIP_TOML}seeds = {}\n{}",
                self.options.cluster_toml, super::toml_list(&seeds), self.options.gateway_toml
            ),
        )
        .unwrap();
        Process::start(
            name,
            &["gateway", "--config", config.to_str().unwrap()],
            self.dir.path(),
        )
    }

    /// Sets the cluster secret in the config file of `name` (`tm-0`, `jm-1`, `gateway`...) to
    /// `secret`, a TOML string or list: what its next start holds.
    pub fn set_secret_of(&self, name: &str, secret: &str) {
        let path = self.dir.path().join(format!("{name}.toml"));
        let config = std::fs::read_to_string(&path).unwrap();
        let rewritten: Vec<String> = config
            .lines()
            .map(|line| {
                if line.starts_with("secret = ") {
                    format!("secret = {secret}")
                } else {
                    line.to_string()
                }
            })
            .collect();
        std::fs::write(&path, rewritten.join("\n") + "\n").unwrap();
    }

    /// The `[cluster]` section of every process's config.
    fn cluster_toml(&self) -> String {
        format!(
            "[cluster]\nsecret = \"{}\"\n{}",
            self.secret, self.options.cluster_toml
        )
    }

    /// Starts one more TaskManager in `pool`; returns its index.
    pub fn add_taskmanager(&mut self, pool: &str) -> usize {
        let index = self.taskmanagers.len();
        let config = self.dir.path().join(format!("tm-{index}.toml"));
        std::fs::write(
            &config,
            format!(
                "{}[node]\nid = \"tm-{index}\"\n[taskmanager]\nlisten = \"127.0.0.1:0\"\nslots = {}\npool = \"{pool}\"\n{}{GOSSIP_TOML}{}shards = {}\n{}",
                self.cluster_toml(), self.options.slots, self.options.taskmanager_toml, self.options.reports_toml, self.report_to(), self.catalog
            ),
        )
        .unwrap();
        let process = Process::start(
            &format!("tm-{index}"),
            &["taskmanager", "--config", config.to_str().unwrap()],
            self.dir.path(),
        );
        self.taskmanagers.push(process);
        index
    }

    /// Starts one more shard; returns its index.
    pub fn add_shard(&mut self) -> usize {
        let index = self.shards.len();
        let seeds = if self.seed.is_empty() {
            "[]".to_string()
        } else {
            format!("[\"{}\"]", self.seed)
        };
        let config = self.dir.path().join(format!("jm-{index}.toml"));
        std::fs::write(
            &config,
            format!(
                "{}[node]\nid = \"jm-{index}\"\n[jobmanager]\nlisten = \"127.0.0.1:0\"\n{}{GOSSIP_TOML}seeds = {}\n{}{}",
                self.cluster_toml(), self.options.jobmanager_toml, seeds, self.options.reports_toml, self.catalog
            ),
        )
        .unwrap();
        let process = Process::start(
            &format!("jm-{index}"),
            &["jobmanager", "--config", config.to_str().unwrap()],
            self.dir.path(),
        );
        if self.seed.is_empty() {
            self.seed = process.addresses["gossip"].clone();
        }
        self.shards.push(process);
        index
    }

    /// The shards' report addresses (their gRPC `host:port`), as a TOML array.
    fn report_to(&self) -> String {
        let shards: Vec<String> = self
            .shards
            .iter()
            .map(|shard| format!("\"{}\"", shard.addresses["grpc"]))
            .collect();
        format!("[{}]", shards.join(", "))
    }

    /// Starts TaskManager `index` again (after it exited) from its config file, reporting to the
    /// shards running now.
    pub fn restart_taskmanager(&mut self, index: usize) {
        let name = format!("tm-{index}");
        let process = self.restart(&name, "taskmanager");
        self.taskmanagers[index] = process;
    }

    /// Starts shard `index` again (after it exited) from its config file.
    pub fn restart_shard(&mut self, index: usize) {
        let name = format!("jm-{index}");
        let process = self.restart(&name, "jobmanager");
        self.shards[index] = process;
    }

    fn restart(&self, name: &str, role: &str) -> Process {
        let config = self.dir.path().join(format!("{name}.toml"));
        let seeds = if role == "taskmanager" {
            format!("reports.shards={}", self.report_to())
        } else {
            let gateway_gossip = self.gateway.addresses["gossip"].clone();
            format!("gossip.seeds=[\"{gateway_gossip}\"]")
        };
        let old_log = self.dir.path().join(format!("{name}.log"));
        let _ = std::fs::rename(
            &old_log,
            self.dir.path().join(format!("{name}.previous.log")),
        );
        Process::start(
            name,
            &[role, "--config", config.to_str().unwrap(), "--set", &seeds],
            self.dir.path(),
        )
    }

    /// Waits (at most 20 s) until the gateway's gossip view holds every running shard and
    /// gateway, each ready for work, and every shard can choose every TaskManager.
    pub fn wait_converged(&self) {
        let expected = self.taskmanagers.len() + self.shards.len() + 1;
        let url = self.url();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let authorization = self
                .options
                .admin_token
                .as_ref()
                .map(|token| format!("authorization: Bearer {token}\r\n"))
                .unwrap_or_default();
            let members = super::serving_members(&url, &authorization);
            let every_shard = self
                .shards
                .iter()
                .all(|shard| super::taskmanagers_up(shard) == self.taskmanagers.len() as u64);
            if members == expected && every_shard {
                return;
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("the gateway sees {members} members, not {expected}, after 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most 5 s) until the TaskManagers' `/v1/state` values at JSON `pointer` (e.g.
    /// `/slots/slots_used`) add up to 0; says whether they did.
    pub async fn taskmanagers_settle_to_zero(&self, pointer: &str) -> bool {
        super::eventually(Duration::from_secs(5), async || {
            let mut sum = 0;
            for taskmanager in &self.taskmanagers {
                let state = super::state(taskmanager).await;
                sum += state
                    .pointer(pointer)
                    .and_then(|value| value.as_u64())
                    .unwrap_or(u64::MAX / 8);
            }
            sum == 0
        })
        .await
    }

    /// The gateway's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.gateway.addresses["http"])
    }

    /// Every process: TaskManagers, shards, the gateway.
    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        self.taskmanagers
            .iter()
            .chain(&self.shards)
            .chain([&self.gateway])
    }

    /// Prints every process's warnings and errors.
    pub fn dump_logs(&self) {
        for process in self.processes() {
            super::print_notable_log(process);
        }
    }
}
