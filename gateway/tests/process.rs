//! The `gateway` binary as a process: it starts on an ephemeral port, answers health and error
//! requests without any shard, refuses bad configuration with EX_USAGE, and stops on SIGTERM.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Gateway {
    child: Child,
    url: String,
    /// The Flight SQL address, when `flight.listen` is set.
    flight: Option<String>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("LISTENING ") {
                let _ = sender.send(line);
            }
        }
    });
    let line = receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("the gateway printed its address");
    let address = |key: &str| {
        line.split_whitespace()
            .find_map(|pair| pair.strip_prefix(key))
            .map(str::to_string)
    };
    Gateway {
        child,
        url: format!("http://{}", address("http=").expect("an http address")),
        flight: address("flight="),
    }
}

/// A loopback address nothing listens on (a shard that is down).
fn closed_address() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn request(
    method: &str,
    url: &str,
    content_type: &str,
    body: &'static str,
) -> (u16, serde_json::Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .unwrap()
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn serves_health_and_errors_without_shards_and_stops_on_sigterm() {
    let closed = closed_address();
    let mut gateway = start(&format!(
        "[shards]\nprobe_interval_ms = 100\naddresses = [\"http://{closed}\"]\n"
    ));
    let url = gateway.url.clone();

    assert_eq!(
        request("GET", &format!("{url}/healthz"), "text/plain", "")
            .await
            .0,
        200
    );
    let (status, body) =
        request("POST", &format!("{url}/v1/query"), "text/plain", "SELECT 1").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
    let (status, body) = request("POST", &format!("{url}/v1/query"), "image/png", "x").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let (status, body) = request("POST", &format!("{url}/v1/query"), "text/plain", "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, body) = request("GET", &format!("{url}/nope"), "text/plain", "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, cluster) = request("GET", &format!("{url}/v1/cluster"), "text/plain", "").await;
    assert_eq!(status, 200);
    assert_eq!(cluster["shards"][0]["address"], format!("http://{closed}"));
    let ready = request("GET", &format!("{url}/readyz"), "text/plain", "")
        .await
        .0;
    assert_eq!(ready, 503, "no shard is reachable");

    let pid = nix::unistd::Pid::from_raw(gateway.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut status = None;
    for _ in 0..100 {
        if let Some(exited) = gateway.child.try_wait().unwrap() {
            status = Some(exited);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(status.expect("stopped within 5 s of SIGTERM").success());
}

#[test]
fn bad_configuration_exits_with_ex_usage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, "[http]\nmax_body_bytes = \"lots\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--config")
        .arg(&path)
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid configuration"));

    let output = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--listen", "127.0.0.1:0"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "no shards configured");
}

#[tokio::test]
async fn serves_https_with_its_certificate_and_nothing_in_clear() {
    use flotilla_client::{Client, Error};
    let dir = tempfile::tempdir().unwrap();
    let tls = flotilla_cluster::self_signed(dir.path()).unwrap();
    let (cert, key) = (tls.cert_file, tls.key_file);
    let closed = closed_address();
    let gateway = start(&format!(
        "[shards]\naddresses = [\"http://{closed}\"]\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let https = gateway.url.replace("http://", "https://");
    let pem = std::fs::read(&cert).unwrap();

    // A client trusting the certificate gets the gateway's own answer (no shard is up), over
    // TLS with HTTP/2 or HTTP/1.1, for each of the two.
    let trusting = Client::builder(&https)
        .native_roots(false)
        .root_certificates_pem(&pem)
        .unwrap()
        .build()
        .unwrap();
    let error = trusting.query("SELECT 1").await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(flotilla_protocol::ErrorCode::Unavailable),
        "{error}"
    );
    // One that does not trust it cannot connect; nor can plain HTTP on the TLS port.
    let untrusting = Client::builder(&https).native_roots(false).build().unwrap();
    let error = untrusting.query("SELECT 1").await.unwrap_err();
    assert!(matches!(error, Error::Transport(_)), "{error}");
    assert!(
        format!("{error}").to_lowercase().contains("certificate"),
        "{error}"
    );
    let plain = Client::new(&gateway.url).unwrap();
    let error = plain.query("SELECT 1").await.unwrap_err();
    assert!(matches!(error, Error::Transport(_)), "{error}");
}

#[tokio::test]
async fn flight_sql_speaks_tls_with_the_https_certificate_and_checks_tokens() {
    use arrow_flight::sql::SqlInfo;
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use futures::TryStreamExt;
    use sha2::Digest;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let dir = tempfile::tempdir().unwrap();
    let tls = flotilla_cluster::self_signed(dir.path()).unwrap();
    let (cert, key) = (tls.cert_file, tls.key_file);
    let closed = closed_address();
    let token_hash: String = sha2::Sha256::digest(b"alpha-token")
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let gateway = start(&format!(
        "[shards]\naddresses = [\"http://{closed}\"]\n[flight]\nlisten = \"127.0.0.1:0\"\n\
         [tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
         [auth]\nenabled = true\n[[auth.tokens]]\nsha256 = \"{token_hash}\"\ntenant = \"alpha\"\n",
        cert.display(),
        key.display()
    ));
    let port = gateway
        .flight
        .as_ref()
        .expect("a flight address")
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let trusting = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&cert).unwrap()))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(trusting)
        .unwrap()
        .connect()
        .await
        .expect("TLS with the gateway's certificate");
    let mut client = FlightSqlServiceClient::new(channel);

    // Without a token: refused, with the stable code leading the message.
    let error = client
        .get_sql_info(vec![SqlInfo::FlightSqlServerName])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("unauthorized: "), "{error}");
    assert!(client.handshake("flotilla", "wrong-token").await.is_err());

    // The handshake (Basic, password = token) gives the bearer token every call then sends.
    let token = client.handshake("flotilla", "alpha-token").await.unwrap();
    assert_eq!(token.as_ref(), b"alpha-token");
    let info = client
        .get_sql_info(vec![SqlInfo::FlightSqlServerName])
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<_> = client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let text = arrow_cast_text(&batches);
    assert!(text.contains("Flotilla"), "{text}");
    // The SQL types, as JDBC's getTypeInfo() asks for them.
    let info = client.get_xdbc_type_info(Default::default()).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<_> = client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let text = arrow_cast_text(&batches);
    assert!(
        text.contains("BIGINT") && text.contains("VARCHAR"),
        "{text}"
    );
    // A statement needs a shard: none is up, and the client is told so.
    let error = client.execute("SELECT 1".into(), None).await.unwrap_err();
    assert!(error.to_string().contains("unavailable: "), "{error}");

    // SQL over the size limit of HTTP bodies (1 MiB by default) is refused the same way.
    let huge = format!("SELECT 1 -- {}", "x".repeat(2 << 20));
    let error = client.execute(huge, None).await.unwrap_err();
    assert!(error.to_string().contains("payload_too_large: "), "{error}");

    // Nothing in clear on the Flight SQL port.
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut plain = FlightSqlServiceClient::new(plain);
    assert!(plain.handshake("flotilla", "alpha-token").await.is_err());
}

/// The batches as text (the SQL info answer holds a dense union; its debug form names the
/// values).
fn arrow_cast_text(batches: &[arrow_array::RecordBatch]) -> String {
    batches.iter().map(|batch| format!("{batch:?}")).collect()
}
