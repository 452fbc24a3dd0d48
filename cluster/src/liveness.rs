//! How internal connections notice a dead peer: a connect deadline, HTTP/2 keep-alive pings on
//! both ends, and TCP keep-alive under them.

use crate::secret::ClusterConfig;
use std::time::Duration;
use tonic::transport::Endpoint;

/// How internal connections notice a dead peer: connect deadline and HTTP/2 keep-alives.
#[derive(Clone, Copy, Debug)]
pub struct Liveness {
    /// Longest a connection may take to open.
    pub connect_timeout: Duration,
    /// Ping interval.
    pub keepalive_interval: Duration,
    /// Longest a ping may go unanswered.
    pub keepalive_timeout: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        ClusterConfig::default().liveness()
    }
}

impl Liveness {
    /// Applies keep-alives to an internal gRPC server.
    pub fn server(&self, server: tonic::transport::Server) -> tonic::transport::Server {
        server
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .tcp_keepalive(Some(TCP_KEEPALIVE))
    }

    pub(crate) fn client(&self, endpoint: Endpoint) -> Endpoint {
        endpoint
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            .keep_alive_while_idle(true)
            .tcp_keepalive(Some(TCP_KEEPALIVE))
            .tcp_nodelay(true)
    }
}

/// TCP keep-alive on internal connections, below HTTP/2's pings: reclaims a connection whose
/// peer vanished while nothing was sent on it.
const TCP_KEEPALIVE: Duration = Duration::from_secs(10);
