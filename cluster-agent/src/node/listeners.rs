//! A node's listeners: its gRPC and admin ports, bound before its services are built so that
//! its gossip identity can name the addresses peers are told to call; and its gRPC server.

use crate::config::Role;
use flotilla_protocol::{NodeInfo, NodeRole};
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// A node's listeners, bound before its services are built so that its gossip state can name
/// the real addresses.
pub(crate) struct NodeListeners {
    pub(super) grpc: TcpListener,
    pub(super) admin: TcpListener,
    /// The bound gRPC address.
    pub(crate) grpc_addr: SocketAddr,
    /// The bound HTTP admin address.
    pub(crate) admin_addr: SocketAddr,
    /// The `host:port` peers are told to call for gRPC.
    grpc_advertised: String,
    /// The `host:port` published for the admin service.
    admin_advertised: String,
}

/// The gRPC server of a shard or TaskManager, checking every call's signature.
pub(crate) type GrpcServer = tonic::transport::Server<
    tower::layer::util::Stack<flotilla_cluster::keys::VerifiedLayer, tower::layer::util::Identity>,
>;

/// Its router.
pub(crate) type GrpcRouter = tonic::transport::server::Router<
    tower::layer::util::Stack<flotilla_cluster::keys::VerifiedLayer, tower::layer::util::Identity>,
>;

/// The gRPC server of a shard or TaskManager: HTTP/2 keep-alives that drop a peer gone silent
/// (its streams end, its leases are released), over TLS when `cluster.tls_*` is set, refusing
/// any call not signed with the cluster's keys (`secret`).
pub(crate) fn grpc_server(
    cluster: &flotilla_cluster::ClusterConfig,
    secret: &flotilla_cluster::ClusterSecret,
) -> anyhow::Result<GrpcServer> {
    let server = cluster
        .liveness()
        .server(tonic::transport::Server::builder());
    let server = match cluster.tls()? {
        Some(tls) => server.tls_config(tls.server())?,
        None => server,
    };
    Ok(server.layer(secret.verified_layer()))
}

impl NodeListeners {
    /// Binds both listeners and works out what peers are told to call for each (see
    /// [`flotilla_cluster::advertised_address`]; `seeds` are the gossip seeds). With internal
    /// TLS, refuses a certificate that peers would refuse at the advertised gRPC address.
    pub(crate) async fn bind(
        role: Role,
        (grpc_listen, grpc_advertise): (SocketAddr, Option<&str>),
        (admin_listen, admin_advertise): (SocketAddr, Option<&str>),
        seeds: &[String],
        cluster: &flotilla_cluster::ClusterConfig,
    ) -> anyhow::Result<Self> {
        let grpc = TcpListener::bind(grpc_listen).await.map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on {grpc_listen} for {}: {error}",
                role.as_str()
            )
        })?;
        let admin = TcpListener::bind(admin_listen).await.map_err(|error| {
            anyhow::anyhow!("cannot listen on {admin_listen} for admin: {error}")
        })?;
        let (grpc_addr, admin_addr) = (grpc.local_addr()?, admin.local_addr()?);
        let section = role.as_str();
        let grpc_advertised = flotilla_cluster::advertised_address(
            &format!("{section}.advertise"),
            grpc_addr,
            grpc_advertise,
            seeds,
        )
        .await?;
        if let Some(tls) = cluster.tls()? {
            tls.check_peers_accept(&grpc_advertised, &format!("{section}.advertise"))?;
        }
        let admin_advertised = flotilla_cluster::advertised_address(
            &format!("{section}.admin_advertise"),
            admin_addr,
            admin_advertise,
            seeds,
        )
        .await?;
        Ok(Self {
            grpc_addr,
            admin_addr,
            grpc_advertised,
            admin_advertised,
            grpc,
            admin,
        })
    }

    /// Returns this node's gossip identity with its addresses filled in.
    pub(crate) fn node_info(
        &self,
        id: String,
        role: Role,
        pool: Option<String>,
        cluster: &flotilla_cluster::ClusterConfig,
    ) -> NodeInfo {
        NodeInfo {
            id,
            role: match role {
                Role::JobManager => NodeRole::JobManager,
                Role::TaskManager => NodeRole::TaskManager,
            },
            version: env!("CARGO_PKG_VERSION").to_string(),
            grpc_url: Some(format!("{}://{}", cluster.scheme(), self.grpc_advertised)),
            http_addr: None,
            admin_addr: Some(self.admin_advertised.clone()),
            pool,
            draining: false,
            starting: false,
            previous_exit: None,
        }
    }
}
