//! The baseline: the design before reports, every member (TaskManagers too) in one chitchat
//! cluster gossiping every 100 ms, each TaskManager's load changing once a second. Real
//! chitchat over its in-memory transport (which serializes every message), in real time (the
//! release build keeps up to a few hundred members on 2 cores; past that the figures are what
//! the machine managed, and say so); sends larger than a UDP datagram fail as on a socket.

use async_trait::async_trait;
use chitchat::transport::{ChannelTransport, RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::{ChitchatEnvelope, ChitchatId};
use flotilla_cluster::GossipConfig;
use flotilla_protocol::{LOAD_KEY, NODE_KEY, NodeInfo, NodeLoad, NodeRole};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Largest UDP payload.
const MAX_UDP: usize = 65_507;

/// Counts the largest datagram and the sends that did not fit.
#[derive(Clone)]
struct Counting {
    inner: ChannelTransport,
    largest: Arc<AtomicUsize>,
    too_large: Arc<AtomicU64>,
}

struct CountingSocket {
    inner: Box<dyn Socket>,
    largest: Arc<AtomicUsize>,
    too_large: Arc<AtomicU64>,
}

#[async_trait]
impl Transport for Counting {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(CountingSocket {
            inner: self.inner.open(listen_addr).await?,
            largest: Arc::clone(&self.largest),
            too_large: Arc::clone(&self.too_large),
        }))
    }
}

#[async_trait]
impl Socket for CountingSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let sent = self.inner.send(to, envelope).await;
        match &sent {
            Ok(outcome) => {
                self.largest
                    .fetch_max(outcome.num_bytes_sent, Ordering::Relaxed);
            }
            Err(_) => {
                self.too_large.fetch_add(1, Ordering::Relaxed);
            }
        }
        sent
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.inner.recv().await
    }
}

fn info(index: usize, taskmanager: bool) -> NodeInfo {
    let host = format!("10.2.{}.{}", (index >> 8) & 255, index & 255);
    NodeInfo {
        id: format!(
            "{}-{index:05}",
            if taskmanager { "taskmanager" } else { "jm" }
        ),
        role: if taskmanager {
            NodeRole::TaskManager
        } else {
            NodeRole::JobManager
        },
        version: env!("CARGO_PKG_VERSION").to_string(),
        grpc_url: Some(format!("http://{host}:50051")),
        http_addr: None,
        admin_addr: Some(format!("{host}:9090")),
        pool: taskmanager.then(|| "default".to_string()),
        draining: false,
        starting: false,
        previous_exit: None,
    }
}

/// Runs `taskmanagers + shards` chitchat members for `seconds` virtual seconds and prints the
/// traffic per member, the largest datagram and whether member 0 saw everyone.
pub(super) async fn run(taskmanagers: usize, shards: usize, seconds: u64) -> anyhow::Result<()> {
    {
        let transport = Counting {
            inner: ChannelTransport::with_mtu(MAX_UDP),
            largest: Arc::default(),
            too_large: Arc::default(),
        };
        let defaults = GossipConfig::default();
        let members = taskmanagers + shards;
        let addr =
            |index: usize| SocketAddr::from(([10, 9, (index >> 8) as u8, index as u8], 7946));
        let seeds: Vec<String> = (0..3.min(members))
            .map(|index| addr(index).to_string())
            .collect();
        let mut handles = Vec::with_capacity(members);
        for index in 0..members {
            let taskmanager = index >= shards;
            let mut gossip = defaults.clone();
            gossip.seeds = seeds.clone();
            let config = flotilla_cluster::chitchat_config(
                &gossip,
                ChitchatId::new(format!("member-{index}"), 1, addr(index)),
                addr(index),
            );
            let load = NodeLoad {
                slots_total: 16,
                slots_free: 16,
                ..NodeLoad::default()
            };
            let initial = vec![
                (
                    NODE_KEY.to_string(),
                    serde_json::to_string(&info(index, taskmanager))?,
                ),
                (LOAD_KEY.to_string(), serde_json::to_string(&load)?),
            ];
            handles.push(chitchat::spawn_chitchat(config, initial, &transport).await?);
        }
        let mut converged = None;
        let mut steady = None;
        let mut behind = Duration::ZERO;
        for second in 1..=seconds {
            let tick = Instant::now();
            // Every TaskManager's free slots change once a second.
            for handle in &handles[shards..] {
                let load = NodeLoad {
                    slots_total: 16,
                    slots_free: second % 16,
                    ..NodeLoad::default()
                };
                let json = serde_json::to_string(&load)?;
                handle
                    .with_chitchat(|chitchat| chitchat.self_node_state().set(LOAD_KEY, &json))
                    .await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            behind += tick.elapsed().saturating_sub(Duration::from_millis(1100));
            let seen = handles[0].chitchat().lock().await.live_nodes().count();
            if converged.is_none() && seen == members {
                converged = Some(second);
            }
            if second == seconds / 3 {
                steady = Some((second, transport.inner.statistics()));
            }
            eprintln!("  {second} s: member 0 sees {seen} of {members} live");
        }
        let statistics = transport.inner.statistics();
        let (from, before) = steady.unwrap_or((0, Default::default()));
        let window = (seconds - from) as f64;
        let per_member =
            (statistics.num_bytes_total - before.num_bytes_total) as f64 / window / members as f64;
        let messages = (statistics.num_messages_total - before.num_messages_total) as f64
            / window
            / members as f64;
        println!(
            "simulate --design gossip: {taskmanagers} TaskManagers + {shards} shards in one chitchat cluster, every 100 ms, {seconds} s real time ({:.1} s of it behind schedule)",
            behind.as_secs_f64()
        );
        println!(
            "  per member       sends {per_member:>9.0} B/s in {messages:.1} datagrams/s (from {from} s on)"
        );
        println!(
            "  largest datagram {} bytes; {} sends did not fit one datagram",
            transport.largest.load(Ordering::Relaxed),
            transport.too_large.load(Ordering::Relaxed)
        );
        match converged {
            Some(second) => println!("  member 0 saw all {members} live after {second} s"),
            None => println!("  member 0 never saw all {members} live"),
        }
        for handle in handles {
            let _ = handle.initiate_shutdown();
        }
        Ok(())
    }
}
