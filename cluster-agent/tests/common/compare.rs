//! Compares query results: same rows, floats within a tolerance, order where the query orders.

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::ArrayFormatter;

/// One cell, normalized for comparison.
#[derive(Clone, Debug, PartialEq, PartialOrd)]
pub enum Cell {
    Null,
    Float(f64),
    Text(String),
}

/// Turns batches into rows of comparable cells.
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    let mut rows = Vec::new();
    for batch in batches {
        let columns: Vec<_> = batch.columns().iter().collect();
        for row in 0..batch.num_rows() {
            let cells = columns
                .iter()
                .map(|column| cell(column.as_ref(), row))
                .collect();
            rows.push(cells);
        }
    }
    rows
}

fn cell(array: &dyn Array, row: usize) -> Cell {
    if array.is_null(row) {
        return Cell::Null;
    }
    let formatter = ArrayFormatter::try_new(array, &Default::default()).unwrap();
    let text = formatter.value(row).to_string();
    match array.data_type() {
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => text
            .parse::<f64>()
            .map(Cell::Float)
            .unwrap_or(Cell::Text(text)),
        _ => Cell::Text(text),
    }
}

fn cells_match(left: &Cell, right: &Cell) -> bool {
    match (left, right) {
        (Cell::Float(a), Cell::Float(b)) => {
            a == b || (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
        }
        _ => left == right,
    }
}

fn rows_match(left: &[Vec<Cell>], right: &[Vec<Cell>]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .all(|(a, b)| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| cells_match(x, y)))
}

/// Rows of `actual` and `expected`, sorted unless `ordered`.
fn comparable(
    actual: &[RecordBatch],
    expected: &[RecordBatch],
    ordered: bool,
) -> (Vec<Vec<Cell>>, Vec<Vec<Cell>>) {
    let mut actual_rows = rows(actual);
    let mut expected_rows = rows(expected);
    if !ordered {
        let key = |row: &Vec<Cell>| format!("{row:?}");
        actual_rows.sort_by_key(key);
        expected_rows.sort_by_key(key);
    }
    (actual_rows, expected_rows)
}

/// Says whether `actual` equals `expected`: in order when `ordered`, as multisets otherwise.
pub fn same(actual: &[RecordBatch], expected: &[RecordBatch], ordered: bool) -> bool {
    let (actual_rows, expected_rows) = comparable(actual, expected, ordered);
    rows_match(&actual_rows, &expected_rows)
}

/// Asserts that `actual` equals `expected`: in order when `ordered`, as multisets otherwise.
pub fn assert_same(name: &str, actual: &[RecordBatch], expected: &[RecordBatch], ordered: bool) {
    let (actual_rows, expected_rows) = comparable(actual, expected, ordered);
    assert!(
        rows_match(&actual_rows, &expected_rows),
        "{name}: results differ\n  actual ({} rows): {:?}\n  expected ({} rows): {:?}",
        actual_rows.len(),
        actual_rows.iter().take(5).collect::<Vec<_>>(),
        expected_rows.len(),
        expected_rows.iter().take(5).collect::<Vec<_>>(),
    );
}
