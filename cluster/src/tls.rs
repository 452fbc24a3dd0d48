//! Certificate pairs: loading one into a rustls server config, and the self-signed pair
//! `local --tls` makes for trying TLS (the gateway's HTTPS and internal gRPC alike).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Makes ring rustls's process-wide provider, for the TLS configs built by libraries (tonic's
/// `ServerTlsConfig`, `ClientTlsConfig`). Call first thing in `main`: a build of the whole
/// workspace also compiles in aws-lc-rs (deltalake-core's HTTP client asks for it), and with two
/// providers rustls has no default, so those libraries would panic. Calling it twice is fine.
pub fn use_ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate chain and its private key, both PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPair {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl CertPair {
    /// Loads the pair into a rustls server config (ring, TLS 1.2 and 1.3, no client
    /// certificates). Errors name the settings as `<section>.cert_file` and
    /// `<section>.key_file`.
    pub fn server_config(&self, section: &str) -> anyhow::Result<rustls::ServerConfig> {
        let (cert_file, key_file) = (&self.cert_file, &self.key_file);
        let certs = CertificateDer::pem_file_iter(cert_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|error| {
                anyhow::anyhow!("{section}.cert_file {}: {error}", cert_file.display())
            })?;
        if certs.is_empty() {
            anyhow::bail!(
                "{section}.cert_file {} holds no certificate",
                cert_file.display()
            );
        }
        let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| {
            anyhow::anyhow!("{section}.key_file {}: {error}", key_file.display())
        })?;
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| {
            anyhow::anyhow!("{section}: the certificate and key do not match: {error}")
        })
    }
}

/// Writes a self-signed certificate for `localhost` and `127.0.0.1` (and its key) into `dir`,
/// unless a valid pair is there already; returns the pair. For trying TLS locally: clients
/// must trust `cert.pem` (`curl --cacert`).
pub fn self_signed(dir: &Path) -> anyhow::Result<CertPair> {
    let pair = CertPair {
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
    };
    if pair.server_config("tls").is_ok() {
        return Ok(pair);
    }
    std::fs::create_dir_all(dir)?;
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    std::fs::write(&pair.key_file, generated.signing_key.serialize_pem())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pair.key_file, std::fs::Permissions::from_mode(0o600))?;
    std::fs::write(&pair.cert_file, generated.cert.pem())?;
    Ok(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_loads_is_kept_and_a_mismatched_pair_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pair = self_signed(dir.path()).unwrap();
        assert!(pair.server_config("tls").is_ok());
        let first = std::fs::read(&pair.cert_file).unwrap();
        // Kept across runs, so that clients that trust it keep trusting it.
        self_signed(dir.path()).unwrap();
        assert_eq!(first, std::fs::read(&pair.cert_file).unwrap());
        let wrong = CertPair {
            cert_file: pair.cert_file.clone(),
            key_file: pair.cert_file.clone(),
        };
        assert!(wrong.server_config("tls").is_err());
    }
}
