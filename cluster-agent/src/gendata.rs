//! TPC-H sample data: the `tpchgen` generators written as Parquet, one directory per table.

use anyhow::Context as _;
use datafusion::arrow::record_batch::RecordBatchReader;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

/// The eight TPC-H tables, smallest first.
pub const TPCH_TABLES: [&str; 8] = [
    "region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem",
];

/// The file whose presence says a data directory is complete; it holds the scale factor.
const MARKER: &str = "_FLOTILLA_TPCH";

/// Says whether `dir` already holds complete TPC-H data at `scale`.
pub fn is_generated(dir: &Path, scale: f64) -> bool {
    std::fs::read_to_string(dir.join(MARKER))
        .ok()
        .and_then(|text| text.trim().parse::<f64>().ok())
        .is_some_and(|existing| existing == scale)
}

/// Generates every TPC-H table at `scale` into `dir/<table>/part-N.parquet`, reporting progress
/// through `progress`. Large tables are split into parts generated in parallel.
pub fn generate(scale: f64, dir: &Path, progress: &(dyn Fn(&str) + Sync)) -> anyhow::Result<()> {
    if !(scale > 0.0 && scale <= 1000.0) {
        anyhow::bail!("scale factor must be in (0, 1000], got {scale}");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::remove_file(dir.join(MARKER));
    let jobs: Vec<(&'static str, i32, i32)> = TPCH_TABLES
        .iter()
        .flat_map(|table| {
            let parts = part_count(table, scale);
            (1..=parts).map(move |part| (*table, part, parts))
        })
        .collect();
    for table in TPCH_TABLES {
        let table_dir = dir.join(table);
        if table_dir.exists() {
            std::fs::remove_dir_all(&table_dir)?;
        }
        std::fs::create_dir_all(&table_dir)?;
    }
    let total = jobs.len();
    let done = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(total);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(table, part, parts)) = jobs.get(index) else {
                            return Ok(());
                        };
                        let path = dir.join(table).join(format!("part-{part}.parquet"));
                        write_part(table, scale, part, parts, &path)
                            .with_context(|| format!("generating {}", path.display()))?;
                        let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                        progress(&format!(
                            "generated {table} part {part}/{parts} ({finished}/{total} files)"
                        ));
                    }
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
        }
        Ok(())
    })?;
    std::fs::write(dir.join(MARKER), format!("{scale}\n"))?;
    Ok(())
}

/// About 1.5 million rows per lineitem part, proportionally fewer for smaller tables.
fn part_count(table: &str, scale: f64) -> i32 {
    let per_scale = match table {
        "lineitem" => 4.0,
        "orders" => 1.0,
        "partsupp" => 0.5,
        _ => 0.0,
    };
    ((scale * per_scale).ceil() as i32).max(1)
}

fn write_part(table: &str, scale: f64, part: i32, parts: i32, path: &Path) -> anyhow::Result<()> {
    match table {
        "region" => write_reader(
            RegionArrow::new(RegionGenerator::new(scale, part, parts)),
            path,
        ),
        "nation" => write_reader(
            NationArrow::new(NationGenerator::new(scale, part, parts)),
            path,
        ),
        "supplier" => write_reader(
            SupplierArrow::new(SupplierGenerator::new(scale, part, parts)),
            path,
        ),
        "customer" => write_reader(
            CustomerArrow::new(CustomerGenerator::new(scale, part, parts)),
            path,
        ),
        "part" => write_reader(PartArrow::new(PartGenerator::new(scale, part, parts)), path),
        "partsupp" => write_reader(
            PartSuppArrow::new(PartSuppGenerator::new(scale, part, parts)),
            path,
        ),
        "orders" => write_reader(
            OrderArrow::new(OrderGenerator::new(scale, part, parts)),
            path,
        ),
        "lineitem" => write_reader(
            LineItemArrow::new(LineItemGenerator::new(scale, part, parts)),
            path,
        ),
        other => anyhow::bail!("unknown TPC-H table {other}"),
    }
}

fn write_reader(reader: impl RecordBatchReader, path: &Path) -> anyhow::Result<()> {
    let temporary = PathBuf::from(format!("{}.tmp", path.display()));
    let file = std::fs::File::create(&temporary)?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(128 * 1024))
        .build();
    let mut writer = ArrowWriter::try_new(file, reader.schema(), Some(properties))?;
    for batch in reader {
        writer.write(&batch?)?;
    }
    writer.close()?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_readable_tables_with_the_spec_row_counts() {
        let dir = tempfile::tempdir().unwrap();
        let lines = std::sync::Mutex::new(Vec::new());
        generate(0.001, dir.path(), &|line| {
            lines.lock().unwrap().push(line.to_string())
        })
        .unwrap();
        assert!(is_generated(dir.path(), 0.001));
        assert!(!is_generated(dir.path(), 0.01));
        assert_eq!(lines.lock().unwrap().len(), 8, "one progress line per file");
        let count = |table: &str| -> usize {
            let file = std::fs::File::open(dir.path().join(table).join("part-1.parquet")).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap();
            reader.map(|batch| batch.unwrap().num_rows()).sum()
        };
        assert_eq!(count("nation"), 25);
        assert_eq!(count("region"), 5);
        assert_eq!(count("orders"), 1500);
        assert_eq!(count("supplier"), 10);
    }
}
