//! `cluster-agent local --once`: the README's first command, end to end.

use std::path::Path;
use std::process::Command;

/// Runs `cluster-agent local --once` at scale 0.001 on an ephemeral port with `extra` flags;
/// asserts it succeeded and returns its standard output.
fn run_local(extra: &[&str], data: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_cluster-agent"))
        .arg("local")
        .args(extra)
        .args([
            "--scale",
            "0.001",
            "--http",
            "127.0.0.1:0",
            "--flight",
            "127.0.0.1:0",
            "--once",
            "--data-dir",
        ])
        .arg(data)
        .env_clear()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "local {extra:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

#[test]
fn local_generates_data_starts_five_processes_and_runs_the_main_job() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = run_local(&[], &dir.path().join("data"));
    assert!(stdout.contains("Generating TPC-H scale 0.001"), "{stdout}");
    assert!(
        stdout.contains("Flotilla local federation is up"),
        "{stdout}"
    );
    assert!(
        stdout.contains("flight sql    grpc://127.0.0.1:")
            && stdout.contains("jdbc:arrow-flight-sql://127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("curl -sS http://127.0.0.1:"),
        "a ready-to-paste curl line: {stdout}"
    );
    assert!(stdout.contains("Main job: TPC-H Q1"), "{stdout}");
    assert!(
        stdout.contains("| l_returnflag |"),
        "Q1's result is printed: {stdout}"
    );
    assert!(stdout.contains("Federation stopped."), "{stdout}");
    let logs = std::fs::read_dir(dir.path().join("data/local/logs"))
        .unwrap()
        .count();
    assert_eq!(
        logs, 5,
        "gateway + 2 shards + 2 TaskManagers each wrote a log"
    );
}

#[test]
fn local_tls_serves_https_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stdout = run_local(&["--tls"], &data);
    let cert = data.join("local/tls/cert.pem");
    assert!(cert.exists(), "the certificate was written");
    assert!(
        stdout.contains(&format!(
            "curl -sS --cacert {} https://127.0.0.1:",
            cert.display()
        )),
        "the curl line trusts the certificate: {stdout}"
    );
    // The main job ran through the Rust client over HTTPS, trusting that certificate only.
    assert!(stdout.contains("| l_returnflag |"), "{stdout}");
}
