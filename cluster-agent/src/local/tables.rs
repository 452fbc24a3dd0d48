//! The tables `local` serves when the user names their own: `--table NAME=PATH[:FORMAT]`
//! (repeatable) and `--catalog FILE` (a TOML file whose `[catalog]` section every shard and
//! TaskManager reads).

use crate::catalog::{CatalogConfig, Location, TableConfig, TableFormat};
use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// The catalog of `--catalog` and `--table`, or None when neither was given (TPC-H then).
pub(super) fn own_catalog(
    file: Option<&Path>,
    tables: &[String],
) -> anyhow::Result<Option<CatalogConfig>> {
    if file.is_none() && tables.is_empty() {
        return Ok(None);
    }
    let mut catalog = match file {
        Some(file) => read_catalog(file)?,
        None => CatalogConfig::default(),
    };
    for table in tables {
        catalog.tables.push(parse_table(table)?);
    }
    if catalog.tables.is_empty() {
        anyhow::bail!("the catalog names no table: add [[catalog.tables]] or --table NAME=PATH");
    }
    catalog.validate().map_err(anyhow::Error::msg)?;
    catalog.roots().map_err(anyhow::Error::msg)?;
    Ok(Some(catalog))
}

/// Reads the `[catalog]` section of a TOML file (other sections are ignored, so an agent's
/// own config file will do).
fn read_catalog(file: &Path) -> anyhow::Result<CatalogConfig> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the catalog file {}", file.display()))?;
    let mut document: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    let section = document
        .remove("catalog")
        .with_context(|| format!("{} has no [catalog] section", file.display()))?;
    section
        .try_into()
        .with_context(|| format!("the [catalog] section of {}", file.display()))
}

/// Parses `NAME=PATH` or `NAME=PATH:FORMAT`. The format comes from the file's extension, or a
/// directory's files'; a local path is made absolute.
fn parse_table(flag: &str) -> anyhow::Result<TableConfig> {
    let Some((name, rest)) = flag.split_once('=') else {
        anyhow::bail!("--table {flag}: expected NAME=PATH or NAME=PATH:FORMAT");
    };
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        anyhow::bail!(
            "--table {flag}: the name must be letters, digits and `_`, starting with a letter"
        );
    }
    let (path, format) = match rest.rsplit_once(':') {
        Some((path, format)) if !format.contains('/') => {
            let Some(format) = TableFormat::from_name(format) else {
                anyhow::bail!(
                    "--table {flag}: unknown format `{format}`; the formats are {}",
                    TableFormat::NAMES
                );
            };
            (path, Some(format))
        }
        _ => (rest, None),
    };
    let location = match Location::parse(path).map_err(anyhow::Error::msg)? {
        Location::Local(local) => local
            .canonicalize()
            .with_context(|| format!("--table {flag}: {}", local.display()))?
            .display()
            .to_string(),
        Location::Object { .. } => path.to_string(),
    };
    if let Some(format @ (TableFormat::Delta | TableFormat::Iceberg)) = format {
        // The table's log or metadata says which files are the table and how they are split.
        return Ok(TableConfig::new(name, format, location));
    }
    let first = first_file(&location);
    let format = match (format, &first) {
        (Some(format), _) => format,
        // A Delta table's directory: its log says which of the files are the table.
        _ if Path::new(&location).join("_delta_log").is_dir() => {
            return Ok(TableConfig::new(name, TableFormat::Delta, location));
        }
        // An Iceberg table's directory, or one of its metadata files.
        _ if Path::new(&location).join("metadata").is_dir()
            || location.ends_with(".metadata.json") =>
        {
            return Ok(TableConfig::new(name, TableFormat::Iceberg, location));
        }
        (None, Some(file)) => {
            TableFormat::from_extension(&file.to_string_lossy()).context("no known extension")?
        }
        (None, None) => anyhow::bail!(
            "--table {flag}: no _delta_log/, no metadata/ (Iceberg) and no .parquet, .csv, .json, \
             .ndjson, .jsonl or .orc file there; \
             say the format with NAME=PATH:FORMAT ({})",
            TableFormat::NAMES
        ),
    };
    let mut table = TableConfig::new(name, format, location.clone());
    if let Some(file) = first.filter(|file| file != Path::new(&location)) {
        // A directory: its files' extension, and `key=value` directories as partitions.
        table.extension = file
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()));
        if let Some(parent) = file.parent().and_then(|p| p.strip_prefix(&location).ok()) {
            let keys: Vec<String> = parent
                .iter()
                .map_while(|part| part.to_str()?.split_once('=').map(|(k, _)| k.to_string()))
                .collect();
            if keys.len() == parent.iter().count() {
                table.partitions = keys;
            }
        }
    }
    Ok(table)
}

/// The location itself when it is a file with a known extension, else the first such file
/// found in the directory (subdirectories included, for partitioned tables).
fn first_file(location: &str) -> Option<PathBuf> {
    if TableFormat::from_extension(location).is_some() {
        return Some(PathBuf::from(location));
    }
    let mut pending = vec![PathBuf::from(location)];
    let mut seen = 0;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        entries.sort();
        for path in entries {
            seen += 1;
            if seen > 10_000 {
                return None;
            }
            if path.is_dir() {
                pending.push(path);
            } else if TableFormat::from_extension(&path.to_string_lossy()).is_some() {
                return Some(path);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_flags_name_a_path_and_maybe_a_format() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("sales.csv");
        std::fs::write(&csv, "a\n1\n").unwrap();
        let nested = dir.path().join("events/year=2024");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(nested.join("part-0.jsonl"), "{\"a\":1}\n").unwrap();

        let table = parse_table(&format!("sales={}", csv.display())).unwrap();
        assert_eq!(table.format, TableFormat::Csv);
        assert_eq!(
            table.location,
            csv.canonicalize().unwrap().display().to_string()
        );
        let events = dir.path().join("events");
        let table = parse_table(&format!("events={}", events.display())).unwrap();
        assert_eq!(table.format, TableFormat::Ndjson);
        assert_eq!(table.file_extension().unwrap(), ".jsonl");
        assert_eq!(
            table.partitions,
            ["year"],
            "key=value directories are partitions"
        );
        let table = parse_table(&format!("raw={}:csv", events.display())).unwrap();
        assert_eq!(table.format, TableFormat::Csv);
        let table = parse_table("lake=s3://bucket/orders/:parquet").unwrap();
        assert_eq!(table.location, "s3://bucket/orders/");
        // Table formats: their log or metadata says the files and partitions.
        let trips = dir.path().join("trips");
        std::fs::create_dir_all(trips.join("metadata")).unwrap();
        std::fs::create_dir_all(trips.join("data/day=1")).unwrap();
        std::fs::write(trips.join("data/day=1/a.parquet"), "").unwrap();
        std::fs::write(trips.join("metadata/00001-a.metadata.json"), "{}").unwrap();
        for flag in [
            format!("trips={}", trips.display()),
            format!("trips={}:iceberg", trips.display()),
            format!("trips={}/metadata/00001-a.metadata.json", trips.display()),
        ] {
            let table = parse_table(&flag).unwrap();
            assert_eq!(table.format, TableFormat::Iceberg, "{flag}");
            assert!(table.partitions.is_empty(), "{flag}");
        }

        for (flag, expected) in [
            ("sales", "expected NAME=PATH"),
            ("1x=/tmp", "the name must be"),
            ("x=/no/such/file.csv", "/no/such/file.csv"),
            ("x=s3://bucket/orders/", "say the format"),
        ] {
            let error = format!("{:#}", parse_table(flag).unwrap_err());
            assert!(error.contains(expected), "{flag}: {error}");
        }
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let error = format!(
            "{:#}",
            parse_table(&format!("x={}", empty.display())).unwrap_err()
        );
        assert!(error.contains("say the format"), "{error}");
        let error = parse_table(&format!("x={}:xml", csv.display())).unwrap_err();
        assert!(
            error.to_string().contains("unknown format `xml`"),
            "{error}"
        );
    }

    #[test]
    fn a_catalog_file_is_its_catalog_section() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("t.csv");
        std::fs::write(&csv, "a\n1\n").unwrap();
        let file = dir.path().join("catalog.toml");
        std::fs::write(
            &file,
            format!(
                "[node]\nid = \"ignored\"\n[catalog]\nrefresh_ms = 50\n[[catalog.tables]]\n\
                 name = \"t\"\nformat = \"csv\"\nlocation = \"{}\"\n",
                csv.display()
            ),
        )
        .unwrap();
        let extra = format!("u={}", csv.display());
        let catalog = own_catalog(Some(&file), &[extra]).unwrap().unwrap();
        assert_eq!(catalog.refresh_ms, 50);
        let names: Vec<_> = catalog.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["t", "u"]);
        assert!(own_catalog(None, &[]).unwrap().is_none());
        std::fs::write(&file, "[catalog]\nrefresh_ms = 50\n").unwrap();
        let error = own_catalog(Some(&file), &[]).unwrap_err();
        assert!(error.to_string().contains("names no table"), "{error}");
    }
}
