//! The cluster secret and internal TLS: what a process needs to be trusted by the others.
//!
//! ```text
//!  gateway ──GetFlightInfo / DoGet──▶ shard / TaskManager   x-flotilla-cluster-auth: signature
//!  shard ──hand-over, reserve──────▶ TaskManager            (signed by a SignedLayer around the
//!  TaskManager ──ExecuteTask, renew─▶ TaskManager             channel, checked by a VerifiedLayer)
//!  gossip, reports: sealed datagrams (crate::keys)
//! ```
//! The secret itself never travels: calls carry a signature, datagrams are sealed, both with
//! keys derived from it (`crate::keys`). Internal TLS (`cluster.tls_*`) adds confidentiality
//! to the calls (plans name files; results are data). An empty secret turns the checks off
//! (a warning is logged).

use crate::keys::{CallSigner, CallVerifier, Sealer, Secrets, SignedLayer, Traffic, VerifiedLayer};
use crate::liveness::Liveness;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// What every process of one cluster shares.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The shared secret (`local` generates one per run): internal calls are signed and
    /// membership datagrams sealed with keys derived from it. A list while rotating: the first
    /// signs and seals, every one is accepted (see the README's rotation steps). Empty:
    /// nothing is checked.
    pub secret: Secrets,
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
            secret: Secrets::default(),
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

    /// The sealer of `traffic`'s datagrams (gossip or reports).
    pub fn sealer(&self, traffic: Traffic) -> Sealer {
        Sealer::new(&self.secret, traffic)
    }
}

/// What an internal call needs, cheap to clone: the signer of outgoing calls and verifier of
/// incoming ones (both off without a secret) and, with internal TLS, the certificates to
/// verify the peer with.
#[derive(Clone, Debug)]
pub struct ClusterSecret {
    secrets: Secrets,
    signer: CallSigner,
    verifier: CallVerifier,
    tls: Option<ClientTlsConfig>,
    liveness: Liveness,
}

impl Default for ClusterSecret {
    fn default() -> Self {
        Self::new(&Secrets::default())
    }
}

impl ClusterSecret {
    /// Signs and verifies with `secrets` (none: nothing is checked).
    pub fn new(secrets: &Secrets) -> Self {
        Self {
            secrets: secrets.clone(),
            signer: CallSigner::new(secrets),
            verifier: CallVerifier::new(secrets),
            tls: None,
            liveness: Liveness::default(),
        }
    }

    /// Says whether calls are checked.
    pub fn is_set(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// Returns the endpoint of an internal gRPC `url`: the cluster's connect deadline and
    /// keep-alives, and TLS for `https://` ones. Wrap its channel with [`Self::signed`].
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, tonic::transport::Error> {
        let endpoint = self
            .liveness
            .client(Endpoint::from_shared(url.to_string())?);
        match &self.tls {
            Some(tls) if url.starts_with("https://") => endpoint.tls_config(tls.clone()),
            _ => Ok(endpoint),
        }
    }

    /// `channel`, signing every call it carries.
    pub fn signed<S>(&self, channel: S) -> crate::keys::Signed<S> {
        tower::Layer::layer(&SignedLayer(self.signer.clone()), channel)
    }

    /// The layer of internal gRPC servers: refuses calls without a valid signature.
    pub fn verified_layer(&self) -> VerifiedLayer {
        VerifiedLayer(self.verifier.clone())
    }

    /// Says whether internal calls use TLS.
    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Says whether `presented` is one of the secrets (always, when there is none); for the
    /// admin drain, which an operator calls on the member's own admin port. Compares in
    /// constant time.
    pub fn accepts(&self, presented: Option<&[u8]>) -> bool {
        if self.secrets.is_empty() {
            return true;
        }
        let Some(presented) = presented else {
            return false;
        };
        self.secrets.all().iter().fold(false, |found, secret| {
            let secret = secret.as_bytes();
            let same = presented.len() == secret.len()
                && presented
                    .iter()
                    .zip(secret)
                    .fold(0u8, |difference, (a, b)| difference | (a ^ b))
                    == 0;
            found | same
        })
    }
}

#[cfg(test)]
#[path = "secret_tests.rs"]
mod tests;
