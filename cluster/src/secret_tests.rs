//! Tests of the cluster secret, internal TLS and liveness settings.

use super::*;
use tonic::service::Interceptor;

#[test]
fn only_calls_with_the_secret_pass() {
    let mut secret = ClusterSecret::new("s3cret");
    assert!(secret.call(secret.request(())).is_ok());
    assert!(secret.call(tonic::Request::new(())).is_err());
    let mut wrong = tonic::Request::new(());
    ClusterSecret::new("s3creT").attach(wrong.metadata_mut());
    assert_eq!(
        secret.call(wrong).unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let mut open = ClusterSecret::new("");
    assert!(!open.is_set() && open.call(tonic::Request::new(())).is_ok());
}

#[test]
fn the_secret_keys_gossip_without_showing() {
    let gossip = GossipConfig::default();
    let plain = ClusterConfig::default().gossip(&gossip);
    assert_eq!(plain.cluster_id, gossip.cluster_id);
    let keyed = ClusterConfig {
        secret: "s3cret".into(),
        ..ClusterConfig::default()
    }
    .gossip(&gossip);
    assert!(keyed.cluster_id.starts_with(&gossip.cluster_id));
    assert!(!keyed.cluster_id.contains("s3cret"));
    let other = ClusterConfig {
        secret: "other".into(),
        ..ClusterConfig::default()
    }
    .gossip(&gossip);
    assert_ne!(keyed.cluster_id, other.cluster_id);
}

#[test]
fn internal_tls_loads_whole_or_not_at_all() {
    let off = ClusterConfig::default();
    assert!(off.tls().unwrap().is_none());
    assert_eq!(off.scheme(), "http");
    assert!(!off.secret().has_tls());
    let dir = tempfile::tempdir().unwrap();
    let pair = crate::tls::self_signed(dir.path()).unwrap();
    let on = ClusterConfig {
        tls_cert_file: Some(pair.cert_file.clone()),
        tls_key_file: Some(pair.key_file.clone()),
        ..ClusterConfig::default()
    };
    assert!(on.tls().unwrap().is_some());
    assert_eq!(on.scheme(), "https");
    let secret = on.secret();
    assert!(secret.has_tls());
    assert!(secret.endpoint("https://127.0.0.1:1").is_ok());
    let half = ClusterConfig {
        tls_cert_file: Some(pair.cert_file),
        ..ClusterConfig::default()
    };
    assert!(half.tls().is_err());
    let missing = ClusterConfig {
        tls_cert_file: Some(dir.path().join("nope.pem")),
        tls_key_file: Some(dir.path().join("nope.key")),
        ..ClusterConfig::default()
    };
    let error = missing.tls().unwrap_err().to_string();
    assert!(error.contains("cluster.tls_cert_file"), "{error}");
}

#[test]
fn a_certificate_that_does_not_name_the_advertised_host_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let pair = crate::tls::self_signed(dir.path()).unwrap();
    let config = ClusterConfig {
        tls_cert_file: Some(pair.cert_file),
        tls_key_file: Some(pair.key_file),
        ..ClusterConfig::default()
    };
    let tls = config.tls().unwrap().unwrap();
    // The self-signed pair names localhost and 127.0.0.1.
    tls.check_peers_accept("127.0.0.1:50051", "taskmanager.advertise")
        .unwrap();
    tls.check_peers_accept("localhost:50051", "taskmanager.advertise")
        .unwrap();
    let error = tls
        .check_peers_accept("tm-7.example:50051", "taskmanager.advertise")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("tm-7.example:50051 (taskmanager.advertise)")
            && error.contains("must name every advertised host"),
        "{error}"
    );
}

#[test]
fn liveness_settings_reach_internal_endpoints() {
    let liveness = ClusterConfig::default().liveness();
    assert_eq!(liveness.connect_timeout, Duration::from_secs(1));
    assert_eq!(liveness.keepalive_interval, Duration::from_millis(500));
    assert_eq!(liveness.keepalive_timeout, Duration::from_secs(1));
    let endpoint = ClusterConfig::default()
        .secret()
        .endpoint("http://127.0.0.1:1")
        .unwrap();
    assert_eq!(endpoint.get_connect_timeout(), Some(Duration::from_secs(1)));
}
