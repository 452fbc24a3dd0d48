//! Result batches compacted before they are sent. DataFusion reads Parquet strings as views
//! (`Utf8View`), whose values stay in the buffers they were read into: a top-20 of customers
//! still points into every customer's comment. Arrow IPC writes every buffer an array points
//! into, so TPC-H q10's 20 rows went out as 52-99 MB. A view column that holds much more than
//! its rows use is copied into buffers of its own first.

use datafusion::arrow::array::{Array, ArrayRef, BinaryViewArray, RecordBatch, StringViewArray};
use datafusion::arrow::datatypes::DataType;
use std::sync::Arc;

/// Buffers this much larger than what the rows use (and at least [`SMALLEST_WASTE`] larger) are
/// compacted; below that, copying would cost more than sending.
const WASTE_FACTOR: usize = 2;
/// Waste never worth a copy.
const SMALLEST_WASTE: usize = 256 * 1024;

/// Returns `batch` with its wasteful view columns compacted; `batch` itself when none is.
pub(super) fn compact(batch: RecordBatch) -> RecordBatch {
    let compacted: Vec<Option<ArrayRef>> = batch.columns().iter().map(compact_column).collect();
    if compacted.iter().all(Option::is_none) {
        return batch;
    }
    let columns = compacted
        .into_iter()
        .zip(batch.columns())
        .map(|(compacted, column)| compacted.unwrap_or_else(|| Arc::clone(column)))
        .collect();
    // Same schema, same lengths, same types: cannot fail; keep the original if it somehow did.
    RecordBatch::try_new(batch.schema(), columns).unwrap_or(batch)
}

/// A compacted copy of `column`, when it is a view column that wastes its buffers.
fn compact_column(column: &ArrayRef) -> Option<ArrayRef> {
    fn wasteful(held: usize, used: usize) -> bool {
        held > used.saturating_mul(WASTE_FACTOR) && held - used > SMALLEST_WASTE
    }
    let held = |buffers: &[datafusion::arrow::buffer::Buffer]| -> usize {
        buffers.iter().map(|buffer| buffer.len()).sum()
    };
    match column.data_type() {
        DataType::Utf8View => {
            let array = column.as_any().downcast_ref::<StringViewArray>()?;
            wasteful(held(array.data_buffers()), array.total_buffer_bytes_used())
                .then(|| Arc::new(array.gc()) as ArrayRef)
        }
        DataType::BinaryView => {
            let array = column.as_any().downcast_ref::<BinaryViewArray>()?;
            wasteful(held(array.data_buffers()), array.total_buffer_bytes_used())
                .then(|| Arc::new(array.gc()) as ArrayRef)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn ipc_bytes(batch: &RecordBatch) -> usize {
        let mut bytes = Vec::new();
        let mut writer =
            datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &batch.schema())
                .unwrap();
        writer.write(batch).unwrap();
        writer.finish().unwrap();
        bytes.len()
    }

    #[test]
    fn a_few_rows_of_a_big_view_column_are_sent_alone() {
        let comments: StringViewArray = (0..100_000)
            .map(|row| {
                Some(format!(
                    "a comment long enough not to be inlined, row {row}"
                ))
            })
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("comment", DataType::Utf8View, false),
        ]));
        let ids = Int64Array::from_iter_values(0..100_000);
        let all = RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(comments)]).unwrap();
        let top = all.slice(500, 20);
        let sent = compact(top.clone());
        assert_eq!(sent, top, "the same rows and values");
        assert!(ipc_bytes(&top) > 4_000_000, "{}", ipc_bytes(&top));
        assert!(ipc_bytes(&sent) < 10_000, "{}", ipc_bytes(&sent));

        // A batch that uses what it holds is sent as it is.
        let whole = compact(all.clone());
        assert!(Arc::ptr_eq(whole.column(1), all.column(1)));
    }
}
