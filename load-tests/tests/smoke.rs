//! A short `flotilla-load` run against a real `cluster-agent local` federation: the report is
//! written, counts what ran, and holds no error.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `cluster-agent`, built beside `flotilla-load` by a workspace test run.
fn agent_binary() -> PathBuf {
    let load = Path::new(env!("CARGO_BIN_EXE_flotilla-load"));
    load.with_file_name("cluster-agent")
}

/// Stops the federation (SIGTERM to the process started here, then SIGKILL) however the test ends.
struct Local(Child);

impl Drop for Local {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_steady_run_against_local_reports_every_query_and_no_error() {
    let agent = agent_binary();
    assert!(
        agent.exists(),
        "{} is built by `cargo nextest run --workspace`",
        agent.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut local = Local(
        Command::new(&agent)
            .args([
                "local",
                "--scale",
                "0.001",
                "--http",
                "127.0.0.1:0",
                "--flight",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(&data)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                std::fs::File::create(dir.path().join("local.log")).unwrap(),
            ))
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // federation.json appears once every child is up; the gateway URL is in it.
    let federation = data.join("local/federation.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    let url = loop {
        if let Some(url) = std::fs::read(&federation)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|document| document["gateway"].as_str().map(str::to_string))
        {
            break url;
        }
        assert!(local.0.try_wait().unwrap().is_none(), "local exited early");
        assert!(Instant::now() < deadline, "local not up within 120 s");
        std::thread::sleep(Duration::from_millis(100));
    };

    let report = dir.path().join("report.json");
    let samples = env!("CARGO_MANIFEST_DIR").to_string() + "/../sql-samples/short";
    let output = Command::new(env!("CARGO_BIN_EXE_flotilla-load"))
        .args([
            "--url",
            &url,
            "--rate",
            "20",
            "--duration",
            "3s",
            "--queries",
            &samples,
            "--out",
        ])
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "flotilla-load failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("p99"), "a summary is printed: {stdout}");
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let summary = &document["summary"];
    assert_eq!(summary["queries"], 60, "3 s at 20 q/s: {summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(summary["rows"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["p99_ms"].as_f64().unwrap() > 0.0, "{summary}");
    assert_eq!(document["samples"].as_array().unwrap().len(), 60);
    println!("{stdout}");
}
