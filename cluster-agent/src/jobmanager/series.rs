//! `generate_series` and `range` as table functions, scanned whole and projected above the
//! scan. DataFusion's plan encoding keeps a series scan's projected schema but drops the
//! projection itself, so a TaskManager decoding `count(*) FROM generate_series(..)` (no column
//! read) got batches of one column under a schema of none: an internal error for a valid
//! statement. Projected in a `ProjectionExec`, which encodes whole, the plan means the same
//! on both sides.

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::Result;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use std::sync::Arc;

/// Replaces, in `state`, the series table functions with their whole-scan forms.
pub(super) fn register_whole_series(state: &mut SessionState) {
    for name in ["generate_series", "range"] {
        if let Some(function) = state.table_functions().get(name).cloned() {
            let inner = Arc::clone(function.function());
            state.register_udtf(name, Arc::new(WholeSeries(inner)));
        }
    }
}

/// A series table function whose tables scan every column.
#[derive(Debug)]
struct WholeSeries(Arc<dyn TableFunctionImpl>);

impl TableFunctionImpl for WholeSeries {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        Ok(Arc::new(WholeScan(self.0.call_with_args(args)?)))
    }
}

/// A table scanned without a projection, the projection applied above the scan.
#[derive(Debug)]
struct WholeScan(Arc<dyn TableProvider>);

#[async_trait]
impl TableProvider for WholeScan {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        self.0.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let scan = self.0.scan(state, None, filters, limit).await?;
        let Some(columns) = projection else {
            return Ok(scan);
        };
        let schema = scan.schema();
        let expressions = columns
            .iter()
            .map(|index| {
                let field = schema.field(*index);
                (
                    Arc::new(Column::new(field.name(), *index)) as _,
                    field.name().to_string(),
                )
            })
            .collect::<Vec<_>>();
        Ok(Arc::new(ProjectionExec::try_new(expressions, scan)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_plan, encode_plan};
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn a_count_over_a_series_survives_the_plan_s_trip_to_a_taskmanager() {
        let mut state = SessionStateBuilder::new().with_default_features().build();
        register_whole_series(&mut state);
        let ctx = SessionContext::new_with_state(state);
        for (sql, expected) in [
            ("SELECT count(*) AS n FROM generate_series(1, 1000)", "1000"),
            ("SELECT count(*) AS n FROM range(5, 10)", "5"),
            ("SELECT sum(value) AS n FROM generate_series(1, 10)", "55"),
        ] {
            let plan = ctx
                .sql(sql)
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap();
            let encoded = encode_plan(plan, &ctx.copied_config()).unwrap();
            let decoded = decode_plan(&encoded, &ctx.task_ctx()).unwrap();
            let batches = collect(decoded, ctx.task_ctx()).await.unwrap();
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string();
            assert!(text.contains(&format!("| {expected} ")), "{sql}: {text}");
        }
    }
}
