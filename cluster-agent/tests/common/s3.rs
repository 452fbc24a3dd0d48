//! An S3-compatible object store for tests: s3s-fs (installed by `scripts/install-s3-server`)
//! on loopback, keeping its objects as files (one directory per bucket) and checking every
//! request's signature.

use super::tpch_dir;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// The credentials the test server accepts.
pub const ACCESS_KEY: &str = "flotilla-test";
pub const SECRET_KEY: &str = "flotilla-test-secret";
/// Where the TPC-H tables are put in the bucket.
pub const PREFIX: &str = "tpch-sf0.01";

/// An s3s-fs process on loopback with its own data directory, stopped (by PID) when dropped.
pub struct S3Server {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts s3s-fs with `buckets` and waits (at most 30 s) for its listening line.
    pub fn start(buckets: &[&str]) -> Self {
        Self::start_on(buckets, 0)
    }

    /// Starts s3s-fs with `buckets` on `port` (0: any free one).
    pub fn start_on(buckets: &[&str], port: u16) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let program = root.join("target/tools/s3s-fs/bin/s3s-fs");
        assert!(
            program.exists(),
            "{} is missing: run ./scripts/install-s3-server",
            program.display()
        );
        let dir = tempfile::tempdir().unwrap();
        for bucket in buckets {
            std::fs::create_dir(dir.path().join(bucket)).unwrap();
        }
        let mut child = Command::new(program)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(dir.path())
            .env_clear()
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting s3s-fs");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some((_, address)) = line.split_once("server is running at ") {
                    let _ = sender.send(address.trim().to_string());
                    break;
                }
            }
            for _ in lines {}
        });
        let Ok(endpoint) = receiver.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("s3s-fs did not start within 30 s");
        };
        Self {
            child,
            endpoint,
            _dir: dir,
        }
    }

    /// The directory holding `bucket`'s objects as files.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self._dir.path().join(bucket)
    }

    /// The server's `http://host:port`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A client of `bucket` signing with `secret`.
    pub fn client(&self, bucket: &str, secret: &str) -> Arc<dyn ObjectStore> {
        let store = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(secret)
            .with_allow_http(true)
            .build()
            .unwrap();
        Arc::new(store)
    }

    /// Uploads `tables` of the shared TPC-H data to `bucket` under [`PREFIX`].
    pub async fn upload(&self, bucket: &str, tables: &[&str]) {
        let store = self.client(bucket, SECRET_KEY);
        for table in tables {
            for file in std::fs::read_dir(tpch_dir().join(table)).unwrap() {
                let file = file.unwrap().path();
                let name = file.file_name().unwrap().to_string_lossy().to_string();
                let key = ObjectPath::from(format!("{PREFIX}/{table}/{name}"));
                let bytes = std::fs::read(&file).unwrap();
                store.put(&key, PutPayload::from(bytes)).await.unwrap();
            }
        }
    }

    /// The `[catalog]` of the TPC-H tables in `bucket`, whose store signs with `secret`.
    pub fn catalog_toml(&self, bucket: &str, secret: &str) -> String {
        let tables: String = cluster_agent::TPCH_TABLES
            .iter()
            .map(|table| {
                format!(
                    "[[catalog.tables]]\nname = \"{table}\"\nformat = \"parquet\"\n\
                     location = \"s3://{bucket}/{PREFIX}/{table}/\"\n"
                )
            })
            .collect();
        format!(
            "{tables}[catalog.object_stores.{bucket}]\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{secret}\"\nallow_http = true\n",
            self.endpoint
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
