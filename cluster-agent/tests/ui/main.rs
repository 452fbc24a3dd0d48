//! The web UI in a real headless Chromium (Debian's, driven by `playwright-core`; both
//! installed by `scripts/install-browser`) against a real `cluster-agent local` federation.
//! `browser.mjs` clicks through the pages and reports what it saw; the query it cancelled is
//! then checked here through the API, and the TaskManagers must give every slot back.
//!
//! Screenshots of each page go to `FLOTILLA_UI_SCREENSHOTS` (default
//! `target/ui-screenshots/`); the README's are made this way.

#[path = "../common/mod.rs"]
mod common;

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Seconds of CPU before its only row: lineitem joined with itself on a 7-valued key.
const SLOW: &str = "SELECT count(*) AS n FROM lineitem a JOIN lineitem b ON a.l_linenumber = b.l_linenumber WHERE a.l_comment < b.l_comment";
/// The longest the browser script may run.
const BROWSER_LIMIT: Duration = Duration::from_secs(240);

/// `cluster-agent local`, stopped by SIGTERM to its PID when dropped (it stops its children).
struct Local {
    child: Child,
    run: PathBuf,
    stdout: PathBuf,
}

impl Local {
    fn start(dir: &Path) -> (Local, serde_json::Value) {
        let run = dir.join("run");
        let stdout = dir.join("local.out");
        let child = Command::new(env!("CARGO_BIN_EXE_cluster-agent"))
            .args(["local", "--scale", "0.01", "--http", "127.0.0.1:0"])
            .args(["--flight", "127.0.0.1:0", "--data-dir"])
            .arg(&run)
            .env_clear()
            .env("TMPDIR", dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut local = Local { child, run, stdout };
        // federation.json appears once the main job ran.
        let federation = local.run.join("local/federation.json");
        let deadline = Instant::now() + Duration::from_secs(180);
        while !federation.exists() {
            let exited = local.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "local did not come up ({exited:?}):\n{}",
                local.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let document = serde_json::from_slice(&std::fs::read(&federation).unwrap()).unwrap();
        (local, document)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `node`, with `playwright-core` where `scripts/install-browser` put it, and Chromium.
fn browser_tools() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let playwright = root.join("target/tools/browser/node_modules/playwright-core");
    let chromium = PathBuf::from("/usr/bin/chromium");
    assert!(
        playwright.join("package.json").exists() && chromium.exists(),
        "the browser is not installed: run scripts/install-browser ({}, {})",
        playwright.display(),
        chromium.display()
    );
    (playwright, chromium)
}

fn screenshots() -> PathBuf {
    std::env::var_os("FLOTILLA_UI_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_shows_the_cluster_runs_sql_and_cancels_a_query_in_chromium() {
    let (playwright, chromium) = browser_tools();
    let dir = tempfile::tempdir().unwrap();
    let (local, federation) = Local::start(dir.path());
    let url = federation["gateway"].as_str().unwrap().to_string();
    let shots = screenshots();
    std::fs::create_dir_all(&shots).unwrap();
    let report = dir.path().join("report.json");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/browser.mjs");
    let mut command = tokio::process::Command::new("node");
    command
        .arg(script)
        .env("GATEWAY", &url)
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOTS", &shots)
        .env("DOWNLOADS", dir.path())
        .env("SLOW_SQL", SLOW)
        .env("REPORT", &report)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(BROWSER_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("browser.mjs ran over {BROWSER_LIMIT:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}\nlocal:\n{}",
        local.output()
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();

    // The query cancelled by a click ended as cancelled, by the API's own account too.
    let cancelled = report["cancelled_query"].as_str().unwrap();
    let record = common::blocking_get_json(&format!("{url}/v1/query/{cancelled}"), "")
        .expect("the cancelled query's record");
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["code"], "cancelled", "{record}");
    // And its work stopped: every slot of both TaskManagers comes back.
    let taskmanagers: Vec<String> = federation["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| node["role"] == "taskmanager")
        .map(|node| node["addresses"]["admin"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(taskmanagers.len(), 2, "{federation}");
    let settled = common::eventually(Duration::from_secs(30), async || {
        let mut used = 0;
        for admin in &taskmanagers {
            let state = common::http(
                "GET",
                &format!("http://{admin}/v1/state"),
                &[],
                Bytes::new(),
            )
            .await
            .json();
            used += state
                .pointer("/slots/slots_used")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(u64::MAX / 8);
        }
        used == 0
    })
    .await;
    assert!(
        settled,
        "the TaskManagers still lease slots 30 s after the cancel"
    );
    for page in ["overview", "queries", "detail", "console"] {
        let shot = shots.join(format!("{page}.png"));
        assert!(
            std::fs::metadata(&shot).is_ok_and(|meta| meta.len() > 10_000),
            "{} was taken",
            shot.display()
        );
    }
}
