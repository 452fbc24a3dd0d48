//! The cluster secret: every internal gRPC call carries it, every internal server refuses calls
//! without it, and it keys gossip, so that only members that know it can join.
//!
//! ```text
//!  gateway ──GetFlightInfo / DoGet──▶ shard / TaskManager   x-flotilla-cluster-secret: <secret>
//!  shard ──hand-over, reserve──────▶ TaskManager            (checked by ClusterSecret::check,
//!  TaskManager ──ExecuteTask, renew─▶ TaskManager             a tonic interceptor)
//!  gossip: cluster id = <gossip.cluster_id>-<first 16 hex of SHA-256(secret)>
//! ```
//! The secret travels as it is: on a network others can read, turn on internal TLS
//! (`cluster.tls_*`: every shard and TaskManager serves gRPC over TLS, and every internal call
//! verifies its peer against `tls_ca_file`) or use a private network. An empty secret turns the
//! checks off (a warning is logged).

use crate::gossip::GossipConfig;
use crate::liveness::Liveness;
use flotilla_protocol::CLUSTER_SECRET_HEADER;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// What every process of one cluster shares.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The shared secret of internal calls and gossip (`local` generates one per run). Empty:
    /// internal calls are not checked.
    pub secret: String,
    /// Internal TLS: the certificate (PEM, chain) every shard and TaskManager serves gRPC with.
    /// It must name the hosts of their advertised addresses. Set with `tls_key_file`; then
    /// internal URLs are `https://`.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of `tls_cert_file` (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// The certificates internal calls trust (PEM); default `tls_cert_file` itself (one
    /// self-signed certificate shared by the cluster).
    pub tls_ca_file: Option<PathBuf>,
    /// Longest an internal connection may take to open, in milliseconds: a peer whose host is
    /// cut off fails this fast instead of after the kernel's SYN retries.
    pub connect_timeout_ms: u64,
    /// Interval of the HTTP/2 pings on every internal connection, both ends, busy or idle, in
    /// milliseconds.
    pub keepalive_interval_ms: u64,
    /// A connection whose ping is not answered within this many milliseconds is closed and its
    /// calls fail: a frozen, cut-off or half-open peer costs this, not a hang.
    pub keepalive_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            secret: String::new(),
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            connect_timeout_ms: 1000,
            keepalive_interval_ms: 500,
            keepalive_timeout_ms: 1000,
        }
    }
}

/// Internal TLS, loaded: what servers present and what clients trust.
#[derive(Clone, Debug)]
pub struct InternalTls {
    identity: Identity,
    trusted: Certificate,
    cert_pem: Vec<u8>,
    trusted_pem: Vec<u8>,
}

impl InternalTls {
    /// The server side, for `tonic::transport::Server::tls_config`.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity.clone())
    }

    /// Checks that peers will accept this process's certificate when they call `address`
    /// (`host:port`, what `setting` advertises): its chain verifies against the trusted
    /// certificates and it names the host. Peers verify exactly this, so a mismatch found here
    /// would otherwise be every internal call to this process failing.
    pub fn check_peers_accept(&self, address: &str, setting: &str) -> anyhow::Result<()> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::client::danger::ServerCertVerifier;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let chain = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| anyhow::anyhow!("cluster.tls_cert_file: {error}"))?;
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| anyhow::anyhow!("cluster.tls_cert_file holds no certificate"))?;
        let mut roots = rustls::RootCertStore::empty();
        for trusted in CertificateDer::pem_slice_iter(&self.trusted_pem) {
            let trusted =
                trusted.map_err(|error| anyhow::anyhow!("cluster.tls_ca_file: {error}"))?;
            roots
                .add(trusted)
                .map_err(|error| anyhow::anyhow!("cluster.tls_ca_file: {error}"))?;
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()?;
        let host = crate::address::host_of(address);
        let name = ServerName::try_from(host.to_string())
            .map_err(|error| anyhow::anyhow!("{setting} {address}: not a host name: {error}"))?;
        verifier
            .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|error| {
                anyhow::anyhow!(
                    "peers calling {address} ({setting}) would refuse cluster.tls_cert_file: {error}; \
                     the certificate must name every advertised host (subject alternative names) \
                     and be signed by cluster.tls_ca_file"
                )
            })
    }
}

impl ClusterConfig {
    /// Logs a warning when no secret is set: anything that reaches an internal port can then
    /// hand a TaskManager a plan (which may read any file it can).
    pub fn warn_if_open(&self) {
        if self.secret.is_empty() {
            tracing::warn!(
                "cluster.secret is empty: internal calls are not checked; set the same secret on every process"
            );
        }
    }

    /// The secret (when one is set) and the internal TLS client config (when TLS is on).
    /// Call [`ClusterConfig::tls`] first at start-up: it reports unreadable files, which this
    /// skips.
    pub fn secret(&self) -> ClusterSecret {
        let mut secret = ClusterSecret::new(&self.secret);
        secret.liveness = self.liveness();
        if let Ok(Some(tls)) = self.tls() {
            secret.tls = Some(
                ClientTlsConfig::new()
                    .ca_certificate(tls.trusted)
                    .assume_http2(true),
            );
        }
        secret
    }

    /// Loads internal TLS: `None` when off, an error when half set or unreadable.
    pub fn tls(&self) -> anyhow::Result<Option<InternalTls>> {
        let (cert, key) = match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            _ => {
                anyhow::bail!("cluster.tls_cert_file and cluster.tls_key_file must be set together")
            }
        };
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path)
                .map_err(|error| anyhow::anyhow!("cluster.{what} {}: {error}", path.display()))
        };
        let cert_pem = read(cert, "tls_cert_file")?;
        let key_pem = read(key, "tls_key_file")?;
        let trusted = match &self.tls_ca_file {
            Some(ca) => read(ca, "tls_ca_file")?,
            None => cert_pem.clone(),
        };
        Ok(Some(InternalTls {
            identity: Identity::from_pem(&cert_pem, key_pem),
            trusted: Certificate::from_pem(&trusted),
            cert_pem,
            trusted_pem: trusted,
        }))
    }

    /// How internal connections notice a dead peer.
    pub fn liveness(&self) -> Liveness {
        Liveness {
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            keepalive_interval: Duration::from_millis(self.keepalive_interval_ms),
            keepalive_timeout: Duration::from_millis(self.keepalive_timeout_ms),
        }
    }

    /// The scheme of internal URLs: `https` with internal TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert_file.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The gossip config keyed by the secret: members without it are in another cluster.
    pub fn gossip(&self, gossip: &GossipConfig) -> GossipConfig {
        let mut keyed = gossip.clone();
        if !self.secret.is_empty() {
            let digest = Sha256::digest(self.secret.as_bytes());
            let hex: String = digest[..8]
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            keyed.cluster_id = format!("{}-{hex}", gossip.cluster_id);
        }
        keyed
    }
}

/// What an internal call needs, cheap to clone: the cluster secret (`None` when checks are
/// off) and, with internal TLS, the certificates to verify the peer with.
#[derive(Clone, Debug, Default)]
pub struct ClusterSecret {
    secret: Option<Arc<str>>,
    tls: Option<ClientTlsConfig>,
    liveness: Liveness,
}

impl ClusterSecret {
    /// Wraps `secret`; empty means no secret.
    pub fn new(secret: &str) -> Self {
        Self {
            secret: (!secret.is_empty()).then(|| Arc::from(secret)),
            tls: None,
            liveness: Liveness::default(),
        }
    }

    /// Says whether calls are checked.
    pub fn is_set(&self) -> bool {
        self.secret.is_some()
    }

    /// Returns the endpoint of an internal gRPC `url`: the cluster's connect deadline and
    /// keep-alives, and TLS for `https://` ones.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, tonic::transport::Error> {
        let endpoint = self
            .liveness
            .client(Endpoint::from_shared(url.to_string())?);
        match &self.tls {
            Some(tls) if url.starts_with("https://") => endpoint.tls_config(tls.clone()),
            _ => Ok(endpoint),
        }
    }

    /// Says whether internal calls use TLS.
    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Adds the secret to an outgoing call's metadata.
    pub fn attach(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if let Some(secret) = &self.secret
            && let Ok(value) = secret.parse()
        {
            metadata.insert(CLUSTER_SECRET_HEADER, value);
        }
    }

    /// Wraps `message` into a request carrying the secret.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.attach(request.metadata_mut());
        request
    }

    /// Says whether `presented` is the secret (always, when there is none). Compares in
    /// constant time.
    pub fn accepts(&self, presented: Option<&[u8]>) -> bool {
        let Some(secret) = &self.secret else {
            return true;
        };
        let Some(presented) = presented else {
            return false;
        };
        let secret = secret.as_bytes();
        presented.len() == secret.len()
            && presented
                .iter()
                .zip(secret)
                .fold(0u8, |difference, (a, b)| difference | (a ^ b))
                == 0
    }
}

impl tonic::service::Interceptor for ClusterSecret {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let presented = request
            .metadata()
            .get(CLUSTER_SECRET_HEADER)
            .map(|value| value.as_bytes());
        if self.accepts(presented) {
            Ok(request)
        } else {
            Err(tonic::Status::unauthenticated(
                "internal calls need the cluster secret (cluster.secret)",
            ))
        }
    }
}

#[cfg(test)]
#[path = "secret_tests.rs"]
mod tests;
