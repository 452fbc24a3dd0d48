//! ORC files (written by pyarrow.orc): every sample query equals in-process DataFusion on the
//! same rows as Parquet.

use crate::common::compare::assert_same;
use crate::common::{
    Federation, FederationOptions, is_ordered, post_sql, reference_context, samples,
};
use crate::writer::{catalog, tpch_as};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_as_orc_files_matches_in_process_datafusion_on_parquet() {
    let orc = tpch_as("orc");
    let federation = Federation::start_with_options(FederationOptions {
        catalog_toml: Some(catalog(&orc, "orc")),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let reference = reference_context().await;
    let mut checked = 0;
    for (name, sql) in samples() {
        let expected = reference.sql(&sql).await.unwrap().collect().await.unwrap();
        let response = post_sql(&url, &sql, "application/vnd.apache.arrow.stream").await;
        if response.status != 200 {
            federation.dump_logs();
            panic!(
                "{name}: HTTP {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
        }
        assert_same(
            &format!("{name} on ORC"),
            &response.arrow(),
            &expected,
            is_ordered(&sql),
        );
        checked += 1;
    }
    assert_eq!(checked, 22 + 7);
}
