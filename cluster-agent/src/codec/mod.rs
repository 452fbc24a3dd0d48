//! Encodes a whole distributed plan, head stage included, so that a shard can plan a query and
//! a TaskManager can run it.
//!
//! datafusion-distributed encodes only the stages below the head: its `DistributedExec` (the
//! root that runs the head stage) and `DistributedLeafExec` (a leaf split into per-task
//! variants) never cross the wire in the library. Flotilla ships the head too, so this codec
//! adds both, composed with the library's `DistributedCodec`:
//!
//! ```text
//!   shard                                   head TaskManager
//!   ┌──────────────────────────┐            ┌──────────────────────────────┐
//!   │ DistributedExec          │  encode    │ DistributedExec              │ execute(): picks
//!   │  └ head stage ...        │ ─────────▶ │  └ head stage ...            │ workers, ships the
//!   │     └ NetworkShuffleExec │  (bytes)   │     └ NetworkShuffleExec     │ lower stages, runs
//!   │        └ DistributedLeaf │            │        └ DistributedLeafExec │ the head itself
//!   └──────────────────────────┘            └──────────────────────────────┘
//! ```
//!
//! Plans deeper than protobuf's nesting limit travel in chunks (`subtree.rs`). A plan may be
//! encoded once and run many times (the shard's plan cache): the head gives its stages fresh
//! ids each time ([`restamp_stages`]).

mod scans;
mod subtree;

use subtree::{ChunkingConverter, EncodedSubtree};

use bytes::Bytes;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion_distributed::{DistributedCodec, DistributedExec, DistributedLeafExec};
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_proto_converter, physical_plan_to_bytes_with_proto_converter,
};
use datafusion_proto::physical_plan::{
    ComposedPhysicalExtensionCodec, DeduplicatingProtoConverter, PhysicalExtensionCodec,
    PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::{FileScanExecConf, PhysicalPlanNode};
use prost::Message;
use std::sync::Arc;

/// Encodes and decodes the two plan nodes datafusion-distributed keeps to itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlotillaCodec;

/// The wire form of the nodes this codec owns.
#[derive(Clone, PartialEq, prost::Message)]
struct FlotillaNodeProto {
    #[prost(oneof = "FlotillaNode", tags = "1, 2, 3, 4")]
    node: Option<FlotillaNode>,
}

// A wire type decoded once per plan node: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, prost::Oneof)]
enum FlotillaNode {
    /// A `DistributedExec`; its one child travels as the node's input.
    #[prost(message, tag = "1")]
    DistributedExec(DistributedExecProto),
    /// A `DistributedLeafExec`: the original leaf and one variant per task.
    #[prost(message, tag = "2")]
    DistributedLeaf(DistributedLeafProto),
    /// A subtree encoded on its own (an `EncodedSubtree`): a `PhysicalPlanNode`'s bytes.
    #[prost(bytes, tag = "3")]
    Subtree(Vec<u8>),
    /// An ORC file scan (`scans.rs`).
    #[prost(message, tag = "4")]
    OrcScan(FileScanExecConf),
}

#[derive(Clone, PartialEq, prost::Message)]
struct DistributedExecProto {}

#[derive(Clone, PartialEq, prost::Message)]
struct DistributedLeafProto {
    #[prost(message, optional, tag = "1")]
    original: Option<PhysicalPlanNode>,
    #[prost(message, repeated, tag = "2")]
    variants: Vec<PhysicalPlanNode>,
}

/// Returns the codec stack every Flotilla process uses: the library's codec, then this one.
fn composed() -> ComposedPhysicalExtensionCodec {
    ComposedPhysicalExtensionCodec::new(vec![Arc::new(DistributedCodec), Arc::new(FlotillaCodec)])
}

impl PhysicalExtensionCodec for FlotillaCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let proto = FlotillaNodeProto::decode(buf).map_err(|error| {
            DataFusionError::Internal(format!("bad flotilla plan node: {error}"))
        })?;
        match proto.node {
            Some(FlotillaNode::DistributedExec(_)) => {
                let [input] = inputs else {
                    return Err(DataFusionError::Internal(format!(
                        "DistributedExec needs one input, got {}",
                        inputs.len()
                    )));
                };
                Ok(Arc::new(DistributedExec::new(Arc::clone(input))))
            }
            Some(FlotillaNode::DistributedLeaf(leaf)) => {
                let codec = composed();
                let decode_ctx = PhysicalPlanDecodeContext::new(ctx, &codec);
                let original = leaf.original.ok_or_else(|| {
                    DataFusionError::Internal("DistributedLeafExec without its leaf".into())
                })?;
                let original = proto_converter.proto_to_execution_plan(&original, &decode_ctx)?;
                let variants = leaf
                    .variants
                    .iter()
                    .map(|variant| proto_converter.proto_to_execution_plan(variant, &decode_ctx))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Arc::new(DistributedLeafExec::try_new(original, variants)?))
            }
            Some(FlotillaNode::Subtree(bytes)) => {
                let node = PhysicalPlanNode::decode(bytes.as_slice()).map_err(|error| {
                    DataFusionError::Internal(format!("bad encoded subtree: {error}"))
                })?;
                let codec = composed();
                let decode_ctx = PhysicalPlanDecodeContext::new(ctx, &codec);
                proto_converter.proto_to_execution_plan(&node, &decode_ctx)
            }
            Some(FlotillaNode::OrcScan(config)) => {
                let codec = composed();
                let decode_ctx = PhysicalPlanDecodeContext::new(ctx, &codec);
                scans::decode_orc(&config, &decode_ctx, proto_converter)
            }
            None => Err(DataFusionError::Internal("empty flotilla plan node".into())),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let proto = if let Some(subtree) = node.downcast_ref::<EncodedSubtree>() {
            FlotillaNode::Subtree(subtree.bytes.clone())
        } else if node.downcast_ref::<DistributedExec>().is_some() {
            FlotillaNode::DistributedExec(DistributedExecProto {})
        } else if let Some(leaf) = node.downcast_ref::<DistributedLeafExec>() {
            let codec = composed();
            let original = proto_converter.execution_plan_to_proto(leaf.original(), &codec)?;
            let variants = leaf
                .variants()
                .iter()
                .map(|variant| proto_converter.execution_plan_to_proto(variant, &codec))
                .collect::<Result<Vec<_>>>()?;
            FlotillaNode::DistributedLeaf(DistributedLeafProto {
                original: Some(original),
                variants,
            })
        } else if let Some(config) = scans::orc_scan(node.as_ref()) {
            FlotillaNode::OrcScan(scans::encode_orc(config, &composed(), proto_converter)?)
        } else {
            return Err(DataFusionError::Internal(format!(
                "flotilla codec cannot encode {}",
                node.name()
            )));
        };
        FlotillaNodeProto { node: Some(proto) }
            .encode(buf)
            .map_err(|error| DataFusionError::Internal(format!("encoding a plan node: {error}")))
    }
}

/// Encodes a physical plan planned with `config` (the session must have `FlotillaCodec`
/// registered as a distributed user codec).
pub fn encode_plan(plan: Arc<dyn ExecutionPlan>, config: &SessionConfig) -> Result<Bytes> {
    let codec = DistributedCodec::new_combined_with_user(config);
    physical_plan_to_bytes_with_proto_converter(plan, &codec, &ChunkingConverter::default())
}

/// Decodes a plan encoded by [`encode_plan`] for execution in `task_ctx`.
pub fn decode_plan(bytes: &[u8], task_ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    let codec = DistributedCodec::new_combined_with_user(task_ctx.session_config());
    let converter = DeduplicatingProtoConverter::default();
    physical_plan_from_bytes_with_proto_converter(bytes, task_ctx, &codec, &converter)
}

/// Gives every stage of a decoded plan one fresh query id: TaskManagers key the stages they
/// run by it, so two runs of one cached plan must not share it.
pub fn restamp_stages(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion_distributed::{NetworkBoundaryExt, Stage};
    let query_id = uuid::Uuid::new_v4();
    plan.transform_up(|node| {
        let Some(boundary) = node.as_network_boundary() else {
            return Ok(Transformed::no(node));
        };
        let mut stage = boundary.input_stage().clone();
        let Stage::Local(local) = &mut stage else {
            return Ok(Transformed::no(node));
        };
        local.query_id = query_id;
        let restamped: Arc<dyn ExecutionPlan> = boundary.with_input_stage(stage)?;
        Ok(Transformed::yes(restamped))
    })
    .map(|transformed| transformed.data)
}
