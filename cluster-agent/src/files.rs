//! The file stores every process reads tables through: read-only, and confined to the
//! catalog's data roots (local directories, and prefixes of each bucket).
//!
//! A TaskManager runs the plans it is sent, and a plan names its files: without this, a plan
//! could read any file the process can. Every read goes through DataFusion's object store
//! registry, so wrapping its stores confines shards (listing and schemas) and TaskManagers
//! (scans) alike. Writes are refused whatever the path.

use async_trait::async_trait;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use std::ops::Range;
use std::sync::Arc;

/// Installs the confined store as `runtime`'s `file://` store. With no roots (None: there is
/// no catalog), reads are not confined (and a warning says so); writes are refused either way.
pub fn confine_local_files(
    runtime: &RuntimeEnv,
    roots: Option<&[std::path::PathBuf]>,
) -> anyhow::Result<()> {
    let url = ObjectStoreUrl::local_filesystem();
    let inner = runtime.object_store(&url)?;
    let roots = roots
        .map(|roots| {
            roots
                .iter()
                .map(|root| {
                    Path::from_absolute_path(root)
                        .map_err(|error| anyhow::anyhow!("data root {}: {error}", root.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .transpose()?;
    if roots.is_none() {
        tracing::warn!(
            "no catalog.data_roots and no tables: plans may read any file this process can"
        );
    }
    runtime.register_object_store(url.as_ref(), Arc::new(ConfinedFiles::new(inner, roots)));
    Ok(())
}

/// A read-only view of a store limited to paths under its roots (every path when None).
#[derive(Debug)]
pub struct ConfinedFiles {
    inner: Arc<dyn ObjectStore>,
    roots: Option<Arc<Vec<Path>>>,
    /// The store's name in the errors it passes on (an object store's: which bucket, where).
    name: Option<&'static str>,
}

impl std::fmt::Display for ConfinedFiles {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "ConfinedFiles({})", self.inner)
    }
}

impl ConfinedFiles {
    /// Confines `inner` to `roots` (None: every path).
    pub fn new(inner: Arc<dyn ObjectStore>, roots: Option<Vec<Path>>) -> Self {
        Self {
            inner,
            roots: roots.map(Arc::new),
            name: None,
        }
    }

    /// Names the store in the errors of `inner` that are not about one file (refused
    /// credentials, an unreachable service). One name per configured store, made at start-up.
    pub fn named(mut self, name: String) -> Self {
        self.name = Some(Box::leak(name.into_boxed_str()));
        self
    }

    /// Returns `Ok` when `location` lies under a data root.
    fn check(&self, location: &Path) -> Result<()> {
        check(self.roots.as_deref().map(Vec::as_slice), location)
    }

    /// Wraps an error of `inner` with the store's name.
    fn named_error(&self, error: object_store::Error) -> object_store::Error {
        with_name(self.name, error)
    }

    fn named_stream(
        &self,
        stream: BoxStream<'static, Result<ObjectMeta>>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let name = self.name;
        stream
            .map(move |item| item.map_err(|error| with_name(name, error)))
            .boxed()
    }
}

/// Wraps a store's error that is not about one file in a `Generic` error naming the store.
fn with_name(name: Option<&'static str>, error: object_store::Error) -> object_store::Error {
    use object_store::Error;
    match (name, error) {
        (
            Some(store),
            error @ (Error::Generic { .. }
            | Error::PermissionDenied { .. }
            | Error::Unauthenticated { .. }),
        ) => Error::Generic {
            store,
            source: Box::new(error),
        },
        (_, error) => error,
    }
}

fn check(roots: Option<&[Path]>, location: &Path) -> Result<()> {
    // `..` cannot be a part of a parsed path, but `Path::from` percent-encodes it instead of
    // refusing it: refuse both spellings rather than rely on how a store decodes them.
    let climbs = location.parts().any(|part| {
        let part = part.as_ref();
        part == ".." || part.eq_ignore_ascii_case("%2E%2E")
    });
    let inside = roots.is_none_or(|roots| roots.iter().any(|root| location.prefix_matches(root)));
    if !climbs && inside {
        return Ok(());
    }
    Err(object_store::Error::PermissionDenied {
        path: format!("/{location}"),
        source: "outside the catalog's data roots (catalog.data_roots)".into(),
    })
}

fn read_only(location: &Path) -> object_store::Error {
    object_store::Error::PermissionDenied {
        path: format!("/{location}"),
        source: "the file store is read-only".into(),
    }
}

#[async_trait]
impl ObjectStore for ConfinedFiles {
    async fn put_opts(&self, location: &Path, _: PutPayload, _: PutOptions) -> Result<PutResult> {
        Err(read_only(location))
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Err(read_only(location))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.check(location)?;
        let result = self.inner.get_opts(location, options).await;
        result.map_err(|error| self.named_error(error))
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.check(location)?;
        let result = self.inner.get_ranges(location, ranges).await;
        result.map_err(|error| self.named_error(error))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        locations
            .map(|location| location.and_then(|location| Err(read_only(&location))))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.check(prefix.unwrap_or(&Path::default())) {
            Ok(()) => self.named_stream(self.inner.list(prefix)),
            Err(error) => stream::once(async move { Err(error) }).boxed(),
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.check(prefix.unwrap_or(&Path::default())) {
            Ok(()) => self.named_stream(self.inner.list_with_offset(prefix, offset)),
            Err(error) => stream::once(async move { Err(error) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.check(prefix.unwrap_or(&Path::default()))?;
        let result = self.inner.list_with_delimiter(prefix).await;
        result.map_err(|error| self.named_error(error))
    }

    async fn copy_opts(&self, _: &Path, to: &Path, _: CopyOptions) -> Result<()> {
        Err(read_only(to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::{CsvReadOptions, SessionConfig, SessionContext};

    fn paths(roots: &[&str]) -> Vec<Path> {
        roots
            .iter()
            .map(|root| Path::from_absolute_path(root).unwrap())
            .collect()
    }

    #[test]
    fn only_paths_under_a_root_pass() {
        let roots = paths(&["/data/tpch", "/srv/sales"]);
        for allowed in [
            "data/tpch/lineitem/part-0.parquet",
            "srv/sales",
            "data/tpch",
        ] {
            assert!(
                check(Some(&roots), &Path::from(allowed)).is_ok(),
                "{allowed}"
            );
        }
        for refused in [
            "etc/passwd",
            "data/tpch2/x.parquet",
            "data",
            "",
            "data/tpch/../../etc/passwd",
        ] {
            let error = check(Some(&roots), &Path::from(refused)).unwrap_err();
            assert!(
                matches!(error, object_store::Error::PermissionDenied { .. }),
                "{refused}: {error}"
            );
        }
        // No roots: reads are not confined, but `..` still is refused.
        assert!(check(None, &Path::from("etc/passwd")).is_ok());
        assert!(check(None, &Path::from("a/../b")).is_err());
        // Empty roots: nothing may be read.
        assert!(check(Some(&[]), &Path::from("etc/passwd")).is_err());
    }

    #[tokio::test]
    async fn a_session_reads_inside_its_roots_and_nothing_else() {
        let inside = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        for dir in [&inside, &outside] {
            std::fs::write(dir.path().join("t.csv"), "a,b\n1,2\n3,4\n").unwrap();
        }
        let runtime = RuntimeEnvBuilder::new().build_arc().unwrap();
        confine_local_files(&runtime, Some(&[inside.path().canonicalize().unwrap()])).unwrap();
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        let csv = |dir: &tempfile::TempDir| {
            dir.path()
                .canonicalize()
                .unwrap()
                .join("t.csv")
                .display()
                .to_string()
        };
        ctx.register_csv("inside", &csv(&inside), CsvReadOptions::new())
            .await
            .unwrap();
        let rows = ctx
            .sql("SELECT sum(a) FROM inside")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(rows[0].num_rows(), 1);
        let error = ctx
            .register_csv("outside", &csv(&outside), CsvReadOptions::new())
            .await
            .unwrap_err();
        assert_eq!(
            crate::error::datafusion_code(&error),
            flotilla_protocol::ErrorCode::NotAllowed,
            "{error}"
        );
        assert!(error.to_string().contains("data roots"), "{error}");
        // Nor can a query write a file inside the roots.
        let copy = ctx
            .sql(&format!(
                "COPY (SELECT 1 AS a) TO '{}' STORED AS CSV",
                inside
                    .path()
                    .canonicalize()
                    .unwrap()
                    .join("new.csv")
                    .display()
            ))
            .await;
        // (The shard refuses `COPY` before planning; this is the store's own refusal, which
        // DataFusion's writer reports as a failed write.)
        match copy {
            Ok(frame) => assert!(frame.collect().await.is_err()),
            Err(error) => assert!(error.to_string().contains("read-only"), "{error}"),
        }
        assert!(!inside.path().join("new.csv").exists());
    }
}
