//! ORC files (written by pyarrow.orc): every sample query equals in-process DataFusion on the
//! same rows as Parquet.

use crate::common::{Federation, FederationOptions};
use crate::tables::{assert_samples_match, catalog, tpch_as};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_as_orc_files_matches_in_process_datafusion_on_parquet() {
    let orc = tpch_as("orc");
    let federation = Federation::start_with_options(FederationOptions {
        catalog_toml: Some(catalog(&orc, "orc")),
        ..FederationOptions::default()
    });
    assert_samples_match(&federation, "ORC").await;
}
