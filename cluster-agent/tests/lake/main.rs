//! Table formats written by the tools their users write them with (`write.py`, in the
//! project's tool venv, installed by `scripts/install-lake-writers`): the TPC-H tables as ORC
//! files, Delta tables and Iceberg tables, queried through a real federation and compared with in-process
//! DataFusion on the same data as Parquet; a Delta table changing under load.

#[path = "../common/mod.rs"]
mod common;
mod delta;
mod iceberg;
mod orc;
mod tables;
