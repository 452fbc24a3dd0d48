//! `cluster-agent local --once`: the README's first command, end to end.

use std::process::Command;

#[test]
fn local_generates_data_starts_five_processes_and_runs_the_main_job() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_cluster-agent"))
        .args([
            "local",
            "--scale",
            "0.001",
            "--http",
            "127.0.0.1:0",
            "--once",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env_clear()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "local failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("Generating TPC-H scale 0.001"), "{stdout}");
    assert!(
        stdout.contains("Flotilla local federation is up"),
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
