//! [`YieldAfterJoins`]: a physical optimizer rule that makes joins yield, so that cancelling a
//! query stops its computation at once.
//!
//! DataFusion cancels by dropping streams, and a dropped task stops only when it next yields.
//! Its tasks yield when a source runs out of its tokio budget, one unit per *input* batch; a
//! join can turn one input batch into hundreds of output batches, which an aggregation above it
//! consumes in one long poll. Measured before this rule: a cancelled join-heavy query kept a
//! TaskManager core busy for about 2 s (debug build), and the TaskManager's other endpoints,
//! on the same runtime, answered late meanwhile. A [`CooperativeExec`] above every join spends
//! one unit per *output* batch, so the task yields (and a cancel takes effect) within a budget's
//! worth of batches.

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PiecewiseMergeJoinExec, SortMergeJoinExec,
    SymmetricHashJoinExec,
};
use std::sync::Arc;

/// Wraps every join in a [`CooperativeExec`]; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct YieldAfterJoins;

fn is_join(plan: &dyn ExecutionPlan) -> bool {
    plan.is::<HashJoinExec>()
        || plan.is::<NestedLoopJoinExec>()
        || plan.is::<CrossJoinExec>()
        || plan.is::<SortMergeJoinExec>()
        || plan.is::<SymmetricHashJoinExec>()
        || plan.is::<PiecewiseMergeJoinExec>()
}

impl PhysicalOptimizerRule for YieldAfterJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if is_join(node.as_ref()) {
                return Ok(Transformed::yes(
                    Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
                ));
            }
            // A wrapper already above a join this rule wrapped: keep one.
            if node.is::<CooperativeExec>()
                && node
                    .children()
                    .first()
                    .is_some_and(|child| child.is::<CooperativeExec>())
            {
                return Ok(Transformed::yes(Arc::clone(node.children()[0])));
            }
            Ok(Transformed::no(node))
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "flotilla_yield_after_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn every_join_gets_one_yield_point() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE a AS VALUES (1, 'x'), (2, 'y')")
            .await
            .unwrap();
        ctx.sql("CREATE TABLE b AS VALUES (1, 'z'), (3, 'w')")
            .await
            .unwrap();
        let plan = ctx
            .sql("SELECT count(*) FROM a JOIN b ON a.column1 = b.column1 CROSS JOIN b AS c")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let rule = YieldAfterJoins;
        let once = rule.optimize(plan, &ConfigOptions::default()).unwrap();
        let twice = rule
            .optimize(Arc::clone(&once), &ConfigOptions::default())
            .unwrap();
        let text = displayable(twice.as_ref()).indent(false).to_string();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for (index, line) in lines.iter().enumerate() {
            if line.starts_with("HashJoinExec") || line.starts_with("CrossJoinExec") {
                assert!(
                    lines[index - 1].starts_with("CooperativeExec"),
                    "no yield point above {line}:\n{text}"
                );
                assert!(
                    index < 2 || !lines[index - 2].starts_with("CooperativeExec"),
                    "two yield points above {line}:\n{text}"
                );
            }
        }
        assert!(
            text.contains("HashJoinExec") && text.contains("CrossJoinExec"),
            "{text}"
        );
    }
}
