//! TLS for the gateway's HTTP listener (rustls, ring), and the self-signed pair `local --tls`
//! makes for trying it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
        let (cert_file, key_file) = match (&self.cert_file, &self.key_file) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            _ => anyhow::bail!("tls.cert_file and tls.key_file must be set together"),
        };
        let certs = CertificateDer::pem_file_iter(cert_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|error| anyhow::anyhow!("tls.cert_file {}: {error}", cert_file.display()))?;
        if certs.is_empty() {
            anyhow::bail!("tls.cert_file {} holds no certificate", cert_file.display());
        }
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|error| anyhow::anyhow!("tls.key_file {}: {error}", key_file.display()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| anyhow::anyhow!("tls: the certificate and key do not match: {error}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
    }

    /// Says whether the listener speaks HTTPS.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

/// Writes a self-signed certificate for `localhost` and `127.0.0.1` (and its key) into `dir`,
/// unless both are there already; returns the `[tls]` section naming them. For trying TLS
/// locally: clients must trust `cert.pem` (`curl --cacert`).
pub fn self_signed(dir: &Path) -> anyhow::Result<TlsConfig> {
    let config = TlsConfig {
        cert_file: Some(dir.join("cert.pem")),
        key_file: Some(dir.join("key.pem")),
    };
    if config.acceptor().is_ok() {
        return Ok(config);
    }
    std::fs::create_dir_all(dir)?;
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    let key_path = dir.join("key.pem");
    std::fs::write(&key_path, pair.signing_key.serialize_pem())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
    std::fs::write(dir.join("cert.pem"), pair.cert.pem())?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_loads_and_half_a_pair_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = self_signed(dir.path()).unwrap();
        assert!(config.acceptor().unwrap().is_some());
        let first = std::fs::read(dir.path().join("cert.pem")).unwrap();
        // Kept across runs, so that clients that trust it keep trusting it.
        self_signed(dir.path()).unwrap();
        assert_eq!(first, std::fs::read(dir.path().join("cert.pem")).unwrap());
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
