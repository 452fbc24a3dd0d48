//! Where a table lives (a local path or an `s3://` object key), and where every process may
//! read: the data roots, local and per bucket.

use super::{CatalogConfig, TableFormat};
use object_store::path::Path as ObjectPath;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A table's or a data root's location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A file or directory on every host's file system.
    Local(PathBuf),
    /// An object or a prefix in an S3-compatible bucket.
    Object {
        /// The bucket.
        bucket: String,
        /// The key or prefix, without a leading `/` (empty: the whole bucket).
        key: String,
    },
}

impl Location {
    /// Parses a path, a `file://` URL or an `s3://bucket/key` URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Self::Local(PathBuf::from(text)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => Ok(Self::Local(PathBuf::from(rest))),
            "s3" | "s3a" => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(format!("location {text} names no bucket"));
                }
                Ok(Self::Object {
                    bucket: bucket.to_string(),
                    key: key.trim_start_matches('/').to_string(),
                })
            }
            other => Err(format!(
                "location {text}: `{other}://` is not supported; use a path or s3://bucket/prefix/"
            )),
        }
    }

    /// The file's name when the location is one file (not a directory or prefix). An object
    /// key is a file when its last part has a known table file extension.
    pub(crate) fn file_name(&self) -> Option<String> {
        match self {
            Self::Local(path) if path.is_file() => {
                path.file_name().map(|name| name.to_string_lossy().into())
            }
            Self::Local(_) => None,
            Self::Object { key, .. } => {
                let last = key.rsplit('/').next().unwrap_or_default();
                TableFormat::from_extension(last).map(|_| last.to_string())
            }
        }
    }

    /// The location as DataFusion's listing table takes it: a directory or prefix ends in `/`.
    pub(crate) fn listing_url(&self) -> String {
        let is_file = self.file_name().is_some();
        let mut url = match self {
            Self::Local(path) => path.to_string_lossy().to_string(),
            Self::Object { bucket, key } => format!("s3://{bucket}/{key}"),
        };
        if !is_file && !url.ends_with('/') {
            url.push('/');
        }
        url
    }
}

/// Where every process may read: files under `local` (all files when None: there is no
/// catalog), and in each bucket the keys under its prefixes. Other buckets are refused.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Roots {
    pub(crate) local: Option<Vec<PathBuf>>,
    pub(crate) buckets: BTreeMap<String, Vec<ObjectPath>>,
}

impl CatalogConfig {
    /// Returns where files may be read from, resolved (symbolic links followed): the configured
    /// data roots, else every table's location. A table outside them is an error, as is a
    /// bucket without an object store.
    pub(crate) fn roots(&self) -> Result<Roots, String> {
        let resolve = |path: &Path, what: &str| {
            path.canonicalize()
                .map_err(|error| format!("{what} {}: {error}", path.display()))
        };
        let mut roots = Roots {
            local: (!self.tables.is_empty() || !self.data_roots.is_empty()).then(Vec::new),
            buckets: BTreeMap::new(),
        };
        let configured: Vec<(String, String)> = if self.data_roots.is_empty() {
            self.tables
                .iter()
                .map(|table| {
                    let what = format!("table `{}`: location", table.name);
                    (what, table.location.clone())
                })
                .collect()
        } else {
            let what = || "data root".to_string();
            self.data_roots
                .iter()
                .map(|root| (what(), root.clone()))
                .collect()
        };
        for (what, root) in &configured {
            match Location::parse(root).map_err(|error| format!("{what}: {error}"))? {
                Location::Local(path) => {
                    let path = resolve(&path, what)?;
                    roots.local.get_or_insert_with(Vec::new).push(path);
                }
                Location::Object { bucket, key } => {
                    if !self.object_stores.contains_key(&bucket) {
                        return Err(format!(
                            "{what}: no [catalog.object_stores.{bucket}] serves s3://{bucket}/"
                        ));
                    }
                    let prefix = ObjectPath::from(key.trim_end_matches('/'));
                    roots.buckets.entry(bucket).or_default().push(prefix);
                }
            }
        }
        for table in &self.tables {
            let inside = match table.parsed_location()? {
                Location::Local(path) => {
                    let path = resolve(&path, &format!("table `{}`: location", table.name))?;
                    let local = roots.local.as_deref().unwrap_or_default();
                    local.iter().any(|root| path.starts_with(root))
                }
                Location::Object { bucket, key } => {
                    let key = ObjectPath::from(key.trim_end_matches('/'));
                    roots.buckets.get(&bucket).is_some_and(|prefixes| {
                        prefixes.iter().any(|prefix| key.prefix_matches(prefix))
                    })
                }
            };
            if !inside {
                return Err(format!(
                    "table `{}`: location {} is outside catalog.data_roots",
                    table.name, table.location
                ));
            }
        }
        Ok(roots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ObjectStoreConfig, TableConfig};

    fn table(name: &str, location: &Path) -> TableConfig {
        TableConfig::new(name, TableFormat::Csv, location.display().to_string())
    }

    #[test]
    fn locations_parse_as_paths_or_buckets() {
        assert_eq!(
            Location::parse("s3://lake/tpch/lineitem/").unwrap(),
            Location::Object {
                bucket: "lake".into(),
                key: "tpch/lineitem/".into()
            }
        );
        assert_eq!(
            Location::parse("file:///data/t.csv").unwrap(),
            Location::Local("/data/t.csv".into())
        );
        assert!(Location::parse("s3:///key").is_err());
        assert!(
            Location::parse("http://host/x")
                .unwrap_err()
                .contains("http://")
        );
        let prefix = Location::parse("s3://lake/tpch/lineitem").unwrap();
        assert_eq!(prefix.listing_url(), "s3://lake/tpch/lineitem/");
        let file = Location::parse("s3://lake/one.parquet").unwrap();
        assert_eq!(file.listing_url(), "s3://lake/one.parquet");
        assert_eq!(
            Location::parse("s3://lake").unwrap().listing_url(),
            "s3://lake/"
        );
    }

    #[test]
    fn tables_must_lie_under_the_data_roots() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let inside = root.path().join("sales");
        std::fs::create_dir(&inside).unwrap();
        let mut catalog = CatalogConfig {
            tables: vec![table("sales", &inside)],
            data_roots: vec![root.path().display().to_string()],
            ..CatalogConfig::default()
        };
        let local = |catalog: &CatalogConfig| catalog.roots().unwrap().local.unwrap();
        assert_eq!(local(&catalog), vec![root.path().canonicalize().unwrap()]);
        // Without data roots, the tables' own locations are the roots.
        catalog.data_roots.clear();
        assert_eq!(local(&catalog), vec![inside.canonicalize().unwrap()]);
        // A table outside the roots, also by a `..` or a symbolic link, fails.
        catalog.data_roots = vec![root.path().display().to_string()];
        catalog.tables.push(table("escape", &inside.join("../..")));
        let error = catalog.roots().unwrap_err();
        assert!(
            error.contains("table `escape`") && error.contains("outside catalog.data_roots"),
            "{error}"
        );
        catalog.tables.pop();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
        catalog.tables.push(table("linked", &link));
        assert!(catalog.roots().unwrap_err().contains("table `linked`"));
        // A root that does not exist fails too.
        catalog.tables.pop();
        catalog.data_roots = vec![root.path().join("missing").display().to_string()];
        assert!(catalog.roots().unwrap_err().contains("data root"));
        // No catalog at all: local reads are not confined.
        assert_eq!(CatalogConfig::default().roots().unwrap().local, None);
    }

    #[test]
    fn object_tables_must_lie_under_their_buckets_prefixes() {
        let mut catalog = CatalogConfig {
            tables: vec![TableConfig::new(
                "orders",
                TableFormat::Parquet,
                "s3://lake/tpch/orders/",
            )],
            ..CatalogConfig::default()
        };
        assert!(catalog.roots().unwrap_err().contains("object_stores.lake"));
        catalog
            .object_stores
            .insert("lake".into(), ObjectStoreConfig::default());
        let roots = catalog.roots().unwrap();
        // Only S3 tables: no local file may be read.
        assert_eq!(roots.local, Some(vec![]));
        assert_eq!(roots.buckets["lake"], vec![ObjectPath::from("tpch/orders")]);
        catalog.data_roots = vec!["s3://lake/tpch/".into()];
        assert_eq!(
            catalog.roots().unwrap().buckets["lake"],
            vec![ObjectPath::from("tpch")]
        );
        catalog.data_roots = vec!["s3://lake/other/".into()];
        assert!(catalog.roots().unwrap_err().contains("table `orders`"));
    }
}
