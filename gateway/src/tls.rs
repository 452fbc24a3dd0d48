//! TLS for the gateway's HTTP listener (rustls, ring).

use flotilla_cluster::CertPair;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// `[tls]`: HTTPS on the gateway's listener. Both files set: HTTPS only; neither: plain HTTP.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first.
    pub cert_file: Option<PathBuf>,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Returns the acceptor for the configured pair, `None` without one. Offers HTTP/2 and
    /// HTTP/1.1 by ALPN; TLS 1.2 and 1.3 only.
    pub fn acceptor(&self) -> anyhow::Result<Option<TlsAcceptor>> {
        let pair = match (&self.cert_file, &self.key_file) {
            (None, None) => return Ok(None),
            (Some(cert_file), Some(key_file)) => CertPair {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            },
            _ => anyhow::bail!("tls.cert_file and tls.key_file must be set together"),
        };
        let mut config = pair.server_config("tls")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
    }

    /// Returns the same pair for a gRPC listener (the Flight SQL port), `None` without one.
    pub fn grpc(&self) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
        let (Some(cert_file), Some(key_file)) = (&self.cert_file, &self.key_file) else {
            return Ok(None);
        };
        let read = |path: &std::path::Path, setting: &str| {
            std::fs::read(path)
                .map_err(|error| anyhow::anyhow!("{setting} {}: {error}", path.display()))
        };
        let identity = tonic::transport::Identity::from_pem(
            read(cert_file, "tls.cert_file")?,
            read(key_file, "tls.key_file")?,
        );
        Ok(Some(
            tonic::transport::ServerTlsConfig::new().identity(identity),
        ))
    }

    /// Says whether the listener speaks HTTPS.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

impl From<CertPair> for TlsConfig {
    fn from(pair: CertPair) -> Self {
        Self {
            cert_file: Some(pair.cert_file),
            key_file: Some(pair.key_file),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_loads_and_half_a_pair_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = TlsConfig::from(flotilla_cluster::self_signed(dir.path()).unwrap());
        assert!(config.acceptor().unwrap().is_some());
        assert!(TlsConfig::default().acceptor().unwrap().is_none());
        let half = TlsConfig {
            cert_file: config.cert_file.clone(),
            key_file: None,
        };
        assert!(half.acceptor().is_err());
        let wrong = TlsConfig {
            cert_file: config.cert_file.clone(),
            key_file: config.cert_file.clone(),
        };
        assert!(wrong.acceptor().is_err());
    }
}
