//! The query mix: SQL texts with weights, picked in a fixed, evenly spread order.

use anyhow::Context as _;
use std::path::Path;

/// The short query used when no mix is given.
pub const DEFAULT_SQL: &str = "SELECT count(*) FROM nation";

/// Weighted SQL texts.
#[derive(Clone, Debug)]
pub struct Mix {
    entries: Vec<(String, String)>,
    /// Entry indexes, each repeated by its weight: query `n` is `order[n % len]`.
    order: Vec<usize>,
}

impl Mix {
    /// One SQL text.
    pub fn single(sql: &str) -> Self {
        Self {
            entries: vec![("sql".into(), sql.to_string())],
            order: vec![0],
        }
    }

    /// Reads `FILE[:WEIGHT]` items; a directory contributes each of its `.sql` files.
    pub fn from_files(items: &[String]) -> anyhow::Result<Self> {
        let mut weighted = Vec::new();
        for item in items {
            let (path, weight) = match item.rsplit_once(':') {
                Some((path, weight)) if weight.chars().all(|c| c.is_ascii_digit()) => (
                    path,
                    weight
                        .parse::<usize>()
                        .with_context(|| format!("weight in `{item}`"))?,
                ),
                _ => (item.as_str(), 1),
            };
            let path = Path::new(path);
            if path.is_dir() {
                let mut files: Vec<_> = std::fs::read_dir(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .flatten()
                    .map(|entry| entry.path())
                    .filter(|file| file.extension().is_some_and(|ext| ext == "sql"))
                    .collect();
                files.sort();
                for file in files {
                    weighted.push((read(&file)?, weight));
                }
            } else {
                weighted.push((read(path)?, weight));
            }
        }
        Self::weighted(weighted)
    }

    fn weighted(items: Vec<((String, String), usize)>) -> anyhow::Result<Self> {
        anyhow::ensure!(!items.is_empty(), "the query mix is empty");
        anyhow::ensure!(
            items.iter().any(|(_, weight)| *weight > 0),
            "every weight in the query mix is 0"
        );
        let mut order = Vec::new();
        let max = items.iter().map(|(_, weight)| *weight).max().unwrap_or(0);
        // Interleave: round r takes every entry whose weight exceeds r.
        for round in 0..max {
            for (index, (_, weight)) in items.iter().enumerate() {
                if *weight > round {
                    order.push(index);
                }
            }
        }
        Ok(Self {
            entries: items.into_iter().map(|(entry, _)| entry).collect(),
            order,
        })
    }

    /// Returns the name and SQL of query number `n`.
    pub fn pick(&self, n: u64) -> (&str, &str) {
        let index = self.order[(n % self.order.len() as u64) as usize];
        let (name, sql) = &self.entries[index];
        (name, sql)
    }
}

fn read(path: &Path) -> anyhow::Result<(String, String)> {
    let sql =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((name, sql))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_interleave() {
        let mix = Mix::weighted(vec![
            (("a".into(), "select 1".into()), 2),
            (("b".into(), "select 2".into()), 1),
        ])
        .unwrap();
        let names: Vec<&str> = (0..6).map(|n| mix.pick(n).0).collect();
        assert_eq!(names, ["a", "b", "a", "a", "b", "a"]);
        assert!(Mix::weighted(vec![]).is_err());
        assert!(Mix::weighted(vec![(("a".into(), "x".into()), 0)]).is_err());
    }
}
