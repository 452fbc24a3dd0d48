//! The Python Flight SQL clients (`client.py`, in the project's tool venv) as the tests run
//! them, and the Arrow files they write.

use crate::common::Process;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The Python of the project's tool venv, with the Flight SQL clients in it.
fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("target/tools/venv/bin/python");
    let ready = std::process::Command::new(&python)
        .args(["-c", "import adbc_driver_flightsql.dbapi, pyarrow.flight"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        ready,
        "the Flight SQL clients are not installed: run scripts/install-flight-clients ({})",
        python.display()
    );
    python
}

/// Runs `client.py <mode>` against the gateway's Flight SQL port, for at most `limit`;
/// returns the JSON document it wrote as `<out>/<report>`.
pub(crate) async fn client(
    gateway: &Process,
    mode: &str,
    args: &[&str],
    out: &Path,
    report: &str,
    limit: Duration,
) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flight_sql/client.py");
    let uri = format!("grpc://{}", gateway.addresses["flight"]);
    let mut command = tokio::process::Command::new(python());
    command
        .arg(script)
        .arg(mode)
        .args(["--uri", &uri, "--out"])
        .arg(out)
        .args(args)
        .kill_on_drop(true);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("client.py {mode} ran over {limit:?}"))
        .unwrap();
    assert!(
        output.status.success(),
        "client.py {mode} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(out.join(report)).unwrap()).unwrap()
}

pub(crate) fn read_arrow(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap_or_else(|error| panic!("{path:?}: {error}"));
    FileReader::try_new(file, None)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}
