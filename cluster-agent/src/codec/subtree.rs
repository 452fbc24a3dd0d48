//! Deep plans on the wire: protobuf decoders refuse messages nested more than 100 levels deep
//! (prost's recursion limit), and every plan node nests its input two levels further down. A
//! many-way join passes that easily. So the encoder cuts the plan every
//! [`LEVELS_PER_CHUNK`] nodes: the subtree below the cut is encoded on its own and travels as
//! the bytes of one extension node, which the decoder decodes with a fresh nesting budget.
//!
//! ```text
//!   HashJoinExec ─ ... 16 levels ... ─ EncodedSubtree(bytes) ──decode──▶ HashJoinExec ─ ...
//! ```
//!
//! The limit stays in force for every message: nothing decodes without a bound.

use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr_with_converter;
use datafusion_proto::physical_plan::{
    DeduplicatingProtoConverter, PhysicalExtensionCodec, PhysicalPlanDecodeContext,
    PhysicalPlanNodeExt, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::{PhysicalExprNode, PhysicalPlanNode};
use prost::Message;
use std::cell::Cell;
use std::sync::Arc;

/// Plan nodes per separately encoded chunk: 32 protobuf levels, which leaves two thirds of the
/// decoder's budget to the expressions of the chunk's deepest node.
pub(super) const LEVELS_PER_CHUNK: usize = 16;

/// Encodes plans as DataFusion's deduplicating converter does, cutting them into chunks.
#[derive(Default)]
pub(super) struct ChunkingConverter {
    inner: DeduplicatingProtoConverter,
    /// Plan nodes between the node being encoded and the root of its chunk.
    depth: Cell<usize>,
}

impl PhysicalProtoConverterExtension for ChunkingConverter {
    fn proto_to_execution_plan(
        &self,
        proto: &PhysicalPlanNode,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.proto_to_execution_plan(proto, ctx)
    }

    fn execution_plan_to_proto(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<PhysicalPlanNode> {
        let depth = self.depth.get();
        if depth >= LEVELS_PER_CHUNK {
            self.depth.set(0);
            let subtree = self.execution_plan_to_proto(plan, codec);
            self.depth.set(depth);
            let marker: Arc<dyn ExecutionPlan> = Arc::new(EncodedSubtree {
                bytes: subtree?.encode_to_vec(),
                properties: Arc::clone(plan.properties()),
            });
            return PhysicalPlanNode::try_from_physical_plan_with_converter(marker, codec, self);
        }
        self.depth.set(depth + 1);
        let node =
            PhysicalPlanNode::try_from_physical_plan_with_converter(Arc::clone(plan), codec, self);
        self.depth.set(depth);
        node
    }

    fn proto_to_physical_expr(
        &self,
        proto: &PhysicalExprNode,
        input_schema: &datafusion::arrow::datatypes::Schema,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        self.inner.proto_to_physical_expr(proto, input_schema, ctx)
    }

    fn physical_expr_to_proto(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<PhysicalExprNode> {
        serialize_physical_expr_with_converter(expr, codec, self)
    }
}

/// A subtree already encoded, standing in for it while its parent is encoded. It exists only
/// on the encoding side: the decoder turns its bytes back into the subtree.
#[derive(Debug)]
pub(super) struct EncodedSubtree {
    /// The subtree's `PhysicalPlanNode`.
    pub(super) bytes: Vec<u8>,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for EncodedSubtree {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "EncodedSubtree: {} bytes", self.bytes.len())
    }
}

impl ExecutionPlan for EncodedSubtree {
    fn name(&self) -> &'static str {
        "EncodedSubtree"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        datafusion::common::internal_err!("an encoded subtree is decoded before it runs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::{CsvReadOptions, SessionContext};
    use datafusion_proto::bytes::{
        physical_plan_from_bytes_with_proto_converter, physical_plan_to_bytes_with_proto_converter,
    };

    /// `tables` aggregating subqueries joined one after the other.
    fn deep_join(tables: usize) -> String {
        let subquery = |n: usize| {
            format!(
                "(SELECT k, count(*) AS c{n}, sum(v) AS s{n} FROM t WHERE v >= {n} GROUP BY k) t{n}"
            )
        };
        let sum: Vec<String> = (0..tables)
            .map(|n| format!("t{n}.c{n} + t{n}.s{n}"))
            .collect();
        let mut sql = format!("SELECT t0.k, {} AS x FROM {}", sum.join(" + "), subquery(0));
        for n in 1..tables {
            sql.push_str(&format!(" JOIN {} ON t{}.k = t{n}.k", subquery(n), n - 1));
        }
        sql + " ORDER BY t0.k"
    }

    #[tokio::test]
    async fn a_plan_deeper_than_the_nesting_limit_round_trips_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let rows: String = (0..100).map(|v| format!("{},{v}\n", v % 7)).collect();
        std::fs::write(dir.path().join("t.csv"), format!("k,v\n{rows}")).unwrap();
        let ctx = SessionContext::new();
        let location = dir.path().join("t.csv");
        ctx.register_csv("t", location.to_str().unwrap(), CsvReadOptions::new())
            .await
            .unwrap();
        let sql = deep_join(40);
        let plan = ctx
            .sql(&sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let codec = super::super::composed();

        // In one piece, the decoder refuses it.
        let whole = physical_plan_to_bytes_with_proto_converter(
            Arc::clone(&plan),
            &codec,
            &DeduplicatingProtoConverter::default(),
        )
        .unwrap();
        let Err(refused) = PhysicalPlanNode::decode(whole.as_ref()) else {
            panic!("the plan decoded in one piece: not deep enough for this test");
        };
        assert!(refused.to_string().contains("recursion limit"), "{refused}");

        let chunked = physical_plan_to_bytes_with_proto_converter(
            Arc::clone(&plan),
            &codec,
            &ChunkingConverter::default(),
        )
        .unwrap();
        let task_ctx = ctx.task_ctx();
        let decoded = physical_plan_from_bytes_with_proto_converter(
            &chunked,
            &task_ctx,
            &codec,
            &DeduplicatingProtoConverter::default(),
        )
        .unwrap();
        let text =
            |plan: &Arc<dyn ExecutionPlan>| displayable(plan.as_ref()).indent(true).to_string();
        assert_eq!(text(&decoded), text(&plan));
        let expected = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        let actual = collect(decoded, task_ctx).await.unwrap();
        assert_eq!(
            datafusion::arrow::util::pretty::pretty_format_batches(&actual)
                .unwrap()
                .to_string(),
            datafusion::arrow::util::pretty::pretty_format_batches(&expected)
                .unwrap()
                .to_string()
        );
    }
}
