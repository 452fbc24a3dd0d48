//! File scans whose source DataFusion's protobuf does not know: an ORC scan (`OrcFiles`, in
//! `catalog/orc.rs`) travels as its `FileScanConfig` (files, partition values, projection,
//! limit), which DataFusion encodes for every file source, and gets a fresh source on arrival.

use crate::catalog::orc::OrcFiles;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::from_proto::parse_protobuf_file_scan_config;
use datafusion_proto::physical_plan::to_proto::serialize_file_scan_config;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::FileScanExecConf;
use std::sync::Arc;

/// The scan config of `node` when it is an ORC scan.
pub(super) fn orc_scan(node: &dyn ExecutionPlan) -> Option<&FileScanConfig> {
    let config = node
        .downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()?;
    config
        .file_source()
        .downcast_ref::<OrcFiles>()
        .map(|_| config)
}

/// Encodes an ORC scan's config.
pub(super) fn encode_orc(
    config: &FileScanConfig,
    codec: &dyn PhysicalExtensionCodec,
    proto_converter: &dyn PhysicalProtoConverterExtension,
) -> Result<FileScanExecConf> {
    serialize_file_scan_config(config, codec, proto_converter)
}

/// Rebuilds an ORC scan from its config.
pub(super) fn decode_orc(
    proto: &FileScanExecConf,
    ctx: &PhysicalPlanDecodeContext<'_>,
    proto_converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Arc<dyn ExecutionPlan>> {
    let table_schema = FileScanConfig::parse_table_schema_from_proto(proto)
        .map_err(|error| DataFusionError::Internal(format!("bad ORC scan: {error}")))?;
    let source = Arc::new(OrcFiles::new(table_schema));
    let config = parse_protobuf_file_scan_config(proto, ctx, proto_converter, source)?;
    Ok(DataSourceExec::from_data_source(config))
}

#[cfg(test)]
mod tests {
    use crate::catalog::{TableConfig, TableFormat};
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
    use datafusion::prelude::SessionContext;
    use datafusion_proto::bytes::{
        physical_plan_from_bytes_with_proto_converter, physical_plan_to_bytes_with_proto_converter,
    };
    use datafusion_proto::physical_plan::DeduplicatingProtoConverter;
    use std::sync::Arc;

    /// Writes `day=<day>/part.orc` with rows `(name, v)` for v in `values`.
    fn write_orc(dir: &std::path::Path, day: &str, values: std::ops::Range<i64>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let names: Vec<String> = values.clone().map(|v| format!("n{}", v % 5)).collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(Int64Array::from(values.collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let partition = dir.join(format!("day={day}"));
        std::fs::create_dir_all(&partition).unwrap();
        let file = std::fs::File::create(partition.join("part.orc")).unwrap();
        let mut writer = orc_rust::ArrowWriterBuilder::new(file, schema)
            .try_build()
            .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    #[tokio::test]
    async fn an_orc_scan_with_partitions_round_trips_and_reads_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        write_orc(dir.path(), "2026-01-01", 0..100);
        write_orc(dir.path(), "2026-01-02", 100..130);
        let mut table = TableConfig::new("t", TableFormat::Orc, dir.path().display().to_string());
        table.partitions = vec!["day".into()];
        let ctx = SessionContext::new();
        table.register(&ctx).await.unwrap();

        let sql = "SELECT day, name, count(*) AS n, sum(v) AS s FROM t \
                   WHERE v % 3 = 0 AND day >= '2026-01-01' GROUP BY day, name ORDER BY day, name";
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let codec = super::super::composed();
        let converter = DeduplicatingProtoConverter::default();
        let bytes =
            physical_plan_to_bytes_with_proto_converter(Arc::clone(&plan), &codec, &converter)
                .unwrap();
        let task_ctx = ctx.task_ctx();
        let decoded =
            physical_plan_from_bytes_with_proto_converter(&bytes, &task_ctx, &codec, &converter)
                .unwrap();
        let text =
            |plan: &Arc<dyn ExecutionPlan>| displayable(plan.as_ref()).indent(true).to_string();
        assert_eq!(text(&decoded), text(&plan));
        assert!(text(&plan).contains("file_type=orc"), "{}", text(&plan));

        let rows = pretty_format_batches(&collect(decoded, task_ctx).await.unwrap())
            .unwrap()
            .to_string();
        // Known values: v in 0..130 with v % 3 = 0, by day (v < 100) and name (v % 5).
        let mut expected = Vec::new();
        for (day, range) in [("2026-01-01", 0..100), ("2026-01-02", 100..130)] {
            for name in 0..5 {
                let v: Vec<i64> = range
                    .clone()
                    .filter(|v| v % 3 == 0 && v % 5 == name)
                    .collect();
                let sum: i64 = v.iter().sum();
                expected.push(format!("| {day} | n{name}  | {:<2} | {sum:<4} |", v.len()));
            }
        }
        for line in &expected {
            let found = rows.lines().any(|row| {
                row.split_whitespace().collect::<String>()
                    == line.split_whitespace().collect::<String>()
            });
            assert!(found, "{line} missing in\n{rows}");
        }
        assert_eq!(rows.lines().count(), expected.len() + 4, "{rows}");
    }
}
