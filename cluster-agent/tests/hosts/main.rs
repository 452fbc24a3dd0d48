//! A cluster across hosts: the real binaries on six test hosts of their own (network
//! namespaces on one bridge, MTU 1500, every process bound to `0.0.0.0`), TPC-H across them,
//! and network faults under load with every answer checked against in-process DataFusion:
//! a TaskManager cut off (link down; dropped both ways), a gray TaskManager (inbound dropped,
//! its gossip still out), a frozen one (SIGSTOP), a shard the gateway alone cannot reach, a
//! gateway cut off mid-stream; each healed and serving again. And controls that are no fault
//! (every host under CPU stress, a TaskManager slowed but alive) and must sideline no one.

mod capture;
mod chaos;
mod cluster;
#[path = "../common/mod.rs"]
mod common;
mod controls;
mod faults;
mod load;
mod net;
mod scale;
mod tpch;
mod trust;
