//! Tests of the cluster secret, internal TLS and liveness settings.

use super::*;

#[test]
fn the_drain_accepts_any_listed_secret_and_an_open_cluster_checks_nothing() {
    let rotating = ClusterSecret::new(&Secrets::from(vec!["new".into(), "old".into()]));
    assert!(rotating.is_set());
    assert!(rotating.accepts(Some(b"new")) && rotating.accepts(Some(b"old")));
    assert!(!rotating.accepts(Some(b"olD")) && !rotating.accepts(None));
    let open = ClusterSecret::new(&Secrets::default());
    assert!(!open.is_set() && open.accepts(None));
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
