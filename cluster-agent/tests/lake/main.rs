//! Table formats written by the tools their users write them with (`write.py`, in the
//! project's tool venv, installed by `scripts/install-lake-writers`): the TPC-H tables as ORC
//! files and as Delta tables, queried through a real federation and compared with in-process
//! DataFusion on the same data as Parquet; a Delta table changing under load.

#[path = "../common/mod.rs"]
mod common;
mod delta;
mod orc;
mod tables;
