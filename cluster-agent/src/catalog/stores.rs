//! The object stores tables are read through: the confined local files, and one S3 store per
//! configured bucket, confined to the prefixes the catalog names. A URL no store serves (a
//! plan naming another bucket) is refused as not allowed.

use super::CatalogConfig;
use crate::files::{ConfinedFiles, confine_local_files};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use url::Url;

/// An S3-compatible store serving one bucket (`[catalog.object_stores.<bucket>]`).
///
/// Credentials come from here, else from the standard AWS environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), else from the shared
/// credentials file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile
/// `AWS_PROFILE` or `default`), else from the instance's metadata service. They are never
/// logged.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// The service's URL, for S3-compatible stores (MinIO, Ceph, ...), e.g.
    /// `http://minio.internal:9000`. None: AWS S3 (or `AWS_ENDPOINT`).
    pub endpoint: Option<String>,
    /// The region. None: `AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// A session token, with temporary credentials.
    pub session_token: Option<String>,
    /// Allows an `http://` endpoint (an on-premises store without TLS).
    pub allow_http: bool,
    /// Times a failed request (connection refused, 5xx, timeout) is tried again, with
    /// exponential backoff from 100 ms. None: 3, as the AWS SDKs' standard mode; a store that
    /// is down then costs a query well under a second, not object_store's own minute.
    pub max_retries: Option<usize>,
    /// Longest a request and its retries may take, in milliseconds. None: 10,000.
    pub retry_timeout_ms: Option<u64>,
}

/// Retries of a failed store request, unless its config says otherwise.
const MAX_RETRIES: usize = 3;
/// How long a store request may keep retrying, unless its config says otherwise.
const RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for ObjectStoreConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        formatter
            .debug_struct("ObjectStoreConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("allow_http", &self.allow_http)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout_ms", &self.retry_timeout_ms)
            .finish()
    }
}

impl ObjectStoreConfig {
    /// Builds the S3 client of `bucket`.
    fn build(&self, bucket: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
        let retry = object_store::RetryConfig {
            max_retries: self.max_retries.unwrap_or(MAX_RETRIES),
            retry_timeout: self
                .retry_timeout_ms
                .map_or(RETRY_TIMEOUT, std::time::Duration::from_millis),
            ..object_store::RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_allow_http(self.allow_http)
            .with_retry(retry);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        let credentials = match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => {
                Some((id.clone(), secret.clone(), self.session_token.clone()))
            }
            (None, None) if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() => shared_credentials(),
            (None, None) => None,
            _ => anyhow::bail!(
                "[catalog.object_stores.{bucket}]: set both access_key_id and secret_access_key, or neither"
            ),
        };
        if let Some((id, secret, token)) = credentials {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
            if let Some(token) = token {
                builder = builder.with_token(token);
            }
        }
        let store = builder
            .build()
            .map_err(|error| anyhow::anyhow!("[catalog.object_stores.{bucket}]: {error}"))?;
        Ok(Arc::new(store))
    }

    /// How errors name the store: its bucket and where it is.
    fn describe(&self, bucket: &str) -> String {
        let endpoint = self.endpoint.as_deref().unwrap_or("AWS S3");
        format!("object store s3://{bucket} at {endpoint}")
    }
}

/// Reads the shared credentials file's profile: `(key id, secret, session token)`.
fn shared_credentials() -> Option<(String, String, Option<String>)> {
    let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".aws/credentials"))
        })?;
    let text = std::fs::read_to_string(path).ok()?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    profile_credentials(&text, &profile)
}

/// Parses one profile of an AWS credentials file (INI: `[profile]`, then `key = value`).
fn profile_credentials(text: &str, profile: &str) -> Option<(String, String, Option<String>)> {
    let mut inside = false;
    let mut values = std::collections::HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            inside = name.trim() == profile;
        } else if inside && let Some((key, value)) = line.split_once('=') {
            values.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    Some((
        values.remove("aws_access_key_id")?,
        values.remove("aws_secret_access_key")?,
        values.remove("aws_session_token"),
    ))
}

/// The object store registry every process builds its runtime with: DataFusion's, except
/// that a URL no store serves is refused as not allowed (not a planning error).
pub(crate) fn registry() -> Arc<dyn ObjectStoreRegistry> {
    Arc::new(CatalogStores::default())
}

#[derive(Debug, Default)]
struct CatalogStores {
    inner: DefaultObjectStoreRegistry,
}

impl ObjectStoreRegistry for CatalogStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.inner.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.inner.get_store(url).map_err(|_| {
            let bucket = &url[..url::Position::BeforePath];
            DataFusionError::ObjectStore(Box::new(object_store::Error::PermissionDenied {
                path: url.to_string(),
                source: format!("no store of the catalog serves {bucket} (catalog.object_stores)")
                    .into(),
            }))
        })
    }
}

impl CatalogConfig {
    /// Installs the catalog's stores in `runtime` (built with [`registry`]): the local files,
    /// confined to the data roots, and a store per bucket that the catalog's tables or roots
    /// name, confined to their prefixes.
    pub(crate) fn install_stores(&self, runtime: &RuntimeEnv) -> anyhow::Result<()> {
        let roots = self.roots().map_err(anyhow::Error::msg)?;
        confine_local_files(runtime, roots.local.as_deref())?;
        for (bucket, prefixes) in roots.buckets {
            let config = &self.object_stores[&bucket];
            let store = ConfinedFiles::new(config.build(&bucket)?, Some(prefixes))
                .named(config.describe(&bucket));
            let url = Url::parse(&format!("s3://{bucket}"))?;
            runtime.register_object_store(&url, Arc::new(store));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_in_debug_output() {
        let config = ObjectStoreConfig {
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI".into()),
            session_token: Some("FwoGZXIvYXdzE".into()),
            ..ObjectStoreConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
        assert!(!shown.contains("wJalrXUtnFEMI") && !shown.contains("FwoGZXIvYXdzE"));
    }

    #[test]
    fn a_credentials_file_profile_is_read() {
        let text = "# comment\n[default]\naws_access_key_id = A\naws_secret_access_key=B\n\n\
                    [ci]\naws_access_key_id = C\naws_secret_access_key = D\naws_session_token = E\n";
        assert_eq!(
            profile_credentials(text, "default"),
            Some(("A".into(), "B".into(), None))
        );
        assert_eq!(
            profile_credentials(text, "ci"),
            Some(("C".into(), "D".into(), Some("E".into())))
        );
        assert_eq!(profile_credentials(text, "missing"), None);
    }

    #[tokio::test]
    async fn a_bucket_without_a_store_is_not_allowed() {
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_object_store_registry(registry())
            .build()
            .unwrap();
        let url = datafusion::execution::object_store::ObjectStoreUrl::parse("s3://other").unwrap();
        let error = runtime.object_store(&url).unwrap_err();
        assert_eq!(
            crate::error::datafusion_code(&error),
            flotilla_protocol::ErrorCode::NotAllowed,
            "{error}"
        );
        assert!(error.to_string().contains("s3://other"), "{error}");
    }
}
