//! Built-in functions whose result can be far larger than their input (`repeat`, `lpad`,
//! `rpad`, `replace`; `array_repeat` and the list forms of `range` and `generate_series` when
//! DataFusion's nested functions are built in, which this workspace leaves out), registered in
//! place of DataFusion's own with a bound checked before they allocate.
//!
//! One call builds its whole result in one allocation that no cancellation can interrupt
//! halfway (`repeat('x', 2000000000)` asks for 2 GB at once), so the allocator-level accounts
//! of `account.rs` come too late for them: each call estimates what it would build from its
//! arguments and fails with `resources_exhausted` past `memory.max_call_mb`.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::{cast, kernels::length::length};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use std::sync::Arc;

/// How a function's result size follows from its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: `len(text) × n` bytes.
    Repeat,
    /// `lpad`/`rpad(text, n [, fill])`: `n` characters of at most 4 bytes.
    Pad,
    /// `replace(text, from, to)`: every `from` in `text` becomes `to`.
    Replace,
    /// `array_repeat(element, n)`: `n` copies of the element.
    ArrayRepeat,
    /// `range`/`generate_series(start, stop [, step])` over integers: one list of that many
    /// 8-byte values per row.
    Series,
}

/// A built-in function that refuses, before it runs, a call that would build more than
/// `max_bytes`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
    max_bytes: u64,
}

/// Replaces, in `state`, each growing built-in with its bounded form (the same name, so plans
/// that name it, planned here or decoded from a shard, get the bound).
pub(crate) fn register_bounded_functions(state: &mut SessionState, max_bytes: u64) -> Result<()> {
    let growing = [
        ("repeat", Growth::Repeat),
        ("lpad", Growth::Pad),
        ("rpad", Growth::Pad),
        ("replace", Growth::Replace),
        ("array_repeat", Growth::ArrayRepeat),
        ("range", Growth::Series),
        ("generate_series", Growth::Series),
    ];
    for (name, growth) in growing {
        let Some(inner) = state.scalar_functions().get(name).cloned() else {
            continue;
        };
        let bounded = ScalarUDF::new_from_impl(Bounded {
            inner,
            growth,
            max_bytes,
        });
        datafusion::execution::FunctionRegistry::register_udf(state, Arc::new(bounded))?;
    }
    Ok(())
}

impl Bounded {
    fn check(&self, args: &ScalarFunctionArgs) -> Result<()> {
        let estimate = estimate(self.growth, &args.args, args.number_rows)?;
        if estimate > self.max_bytes {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() would build {} MiB in one call over {} rows, more than one call may (memory.max_call_mb, {} MiB)",
                self.inner.name(),
                estimate >> 20,
                args.number_rows,
                self.max_bytes >> 20
            )));
        }
        Ok(())
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args)?;
        self.inner.invoke_with_args(args)
    }
}

// === estimates ===

/// Bytes the call would build, as an upper bound; 0 where the arguments say nothing (null or
/// of a type not estimated here).
fn estimate(growth: Growth, args: &[ColumnarValue], rows: usize) -> Result<u64> {
    // Per-row values of argument `index` (a scalar is measured once, not materialized: the
    // estimate must not build what it guards against).
    let per_row =
        |index: usize, measure: fn(&ArrayRef) -> Result<Vec<u64>>| -> Result<Option<Vec<u64>>> {
            Ok(match args.get(index) {
                None => None,
                Some(ColumnarValue::Array(array)) => Some(measure(array)?),
                Some(ColumnarValue::Scalar(scalar)) => {
                    let one = measure(&scalar.to_array_of_size(1)?)?;
                    Some(vec![one.first().copied().unwrap_or(0); rows])
                }
            })
        };
    let column = |index: usize| args.get(index).map(|arg| arg.to_array(1)).transpose();
    let sum = |values: &[u64]| {
        values
            .iter()
            .fold(0u64, |total, value| total.saturating_add(*value))
    };
    Ok(match growth {
        Growth::Repeat => {
            let (Some(lengths), Some(counts)) = (per_row(0, byte_lengths)?, per_row(1, integers)?)
            else {
                return Ok(0);
            };
            sum(&multiply(&lengths, &counts))
        }
        Growth::Pad => {
            let Some(target) = per_row(1, integers)? else {
                return Ok(0);
            };
            let fill_width = match args.get(2) {
                Some(ColumnarValue::Scalar(fill)) => {
                    max_bytes_per_char(&fill.to_array_of_size(1)?)?
                }
                Some(ColumnarValue::Array(fill)) => max_bytes_per_char(fill)?,
                None => 1,
            };
            sum(&target).saturating_mul(fill_width.max(1))
        }
        Growth::Replace => {
            let (Some(text), Some(from), Some(to)) = (
                per_row(0, byte_lengths)?,
                per_row(1, byte_lengths)?,
                per_row(2, byte_lengths)?,
            ) else {
                return Ok(0);
            };
            let sizes = text.iter().zip(&from).zip(&to).map(|((text, from), to)| {
                // An empty pattern matches between every character.
                let matches = if *from == 0 { text + 1 } else { text / from };
                text.saturating_add(matches.saturating_mul(*to))
            });
            sum(&sizes.collect::<Vec<_>>())
        }
        Growth::ArrayRepeat => {
            let (Some(element), Some(counts)) = (column(0)?, per_row(1, integers)?) else {
                return Ok(0);
            };
            let element_bytes =
                (element.get_array_memory_size() / element.len().max(1)).max(8) as u64;
            sum(&counts).saturating_mul(element_bytes)
        }
        Growth::Series => {
            let integer = |index: usize| {
                args.get(index)
                    .is_some_and(|arg| arg.data_type().is_integer())
            };
            if !integer(0) || !integer(1) || (args.len() > 2 && !integer(2)) {
                return Ok(0);
            }
            let signed = |index: usize| -> Result<Vec<i64>> {
                Ok(match args.get(index) {
                    None => vec![1; rows],
                    Some(ColumnarValue::Array(array)) => integers_signed(array)?,
                    Some(ColumnarValue::Scalar(scalar)) => {
                        vec![integers_signed(&scalar.to_array_of_size(1)?)?[0]; rows]
                    }
                })
            };
            let (start, stop, step) = (signed(0)?, signed(1)?, signed(2)?);
            let sizes = start
                .iter()
                .zip(&stop)
                .zip(&step)
                .map(|((start, stop), step)| {
                    let span = (i128::from(*stop) - i128::from(*start)).unsigned_abs();
                    let step = i128::from(*step).unsigned_abs().max(1);
                    u64::try_from(span / step + 1)
                        .unwrap_or(u64::MAX)
                        .saturating_mul(8)
                });
            sum(&sizes.collect::<Vec<_>>())
        }
    })
}

/// Byte length of each value (0 for nulls).
fn byte_lengths(array: &ArrayRef) -> Result<Vec<u64>> {
    let array = match array.data_type() {
        DataType::Utf8View => cast(array, &DataType::LargeUtf8)?,
        DataType::BinaryView => cast(array, &DataType::LargeBinary)?,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary => {
            Arc::clone(array)
        }
        _ => cast(array, &DataType::LargeUtf8)?,
    };
    integers(&length(&array)?)
}

/// Each value as a non-negative integer (0 for nulls and negatives).
fn integers(array: &ArrayRef) -> Result<Vec<u64>> {
    Ok(integers_signed(array)?
        .into_iter()
        .map(|value| u64::try_from(value).unwrap_or(0))
        .collect())
}

fn integers_signed(array: &ArrayRef) -> Result<Vec<i64>> {
    let array = cast(array, &DataType::Int64)?;
    let values = array.as_primitive::<Int64Type>();
    Ok((0..values.len())
        .map(|index| {
            if values.is_null(index) {
                0
            } else {
                values.value(index)
            }
        })
        .collect())
}

/// The widest character of any fill string, in bytes (1 to 4).
fn max_bytes_per_char(array: &ArrayRef) -> Result<u64> {
    let array = cast(array, &DataType::LargeUtf8)?;
    let strings = array.as_string::<i64>();
    Ok(strings
        .iter()
        .flatten()
        .flat_map(str::chars)
        .map(|character| character.len_utf8() as u64)
        .max()
        .unwrap_or(1))
}

fn multiply(left: &[u64], right: &[u64]) -> Vec<u64> {
    left.iter()
        .zip(right)
        .map(|(left, right)| left.saturating_mul(*right))
        .collect()
}

/// The scalar form, for tests and callers that hold one value.
#[cfg(test)]
fn scalar(value: impl Into<datafusion::common::ScalarValue>) -> ColumnarValue {
    ColumnarValue::Scalar(value.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    async fn run(sql: &str) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
        let mut state = SessionStateBuilder::new().with_default_features().build();
        register_bounded_functions(&mut state, 1 << 20)?;
        SessionContext::new_with_state(state)
            .sql(sql)
            .await?
            .collect()
            .await
    }

    #[test]
    fn estimates_follow_the_arguments() {
        let rows = 3;
        let text =
            ColumnarValue::Array(Arc::new(datafusion::arrow::array::StringArray::from(vec![
                Some("ab"),
                None,
                Some("abcd"),
            ])));
        assert_eq!(
            estimate(Growth::Repeat, &[text.clone(), scalar(10i64)], rows).unwrap(),
            60
        );
        assert_eq!(
            estimate(Growth::Pad, &[text.clone(), scalar(5i64)], rows).unwrap(),
            15
        );
        assert_eq!(
            estimate(
                Growth::Pad,
                &[text.clone(), scalar(5i64), scalar("é")],
                rows
            )
            .unwrap(),
            30
        );
        assert_eq!(
            estimate(Growth::Replace, &[text, scalar("b"), scalar("xyz")], rows).unwrap(),
            // "ab": 2 + 2 × 3; null: 0; "abcd": 4 + 4 × 3.
            8 + 16
        );
        assert_eq!(
            estimate(Growth::Series, &[scalar(1i64), scalar(100i64)], 1).unwrap(),
            800
        );
        assert_eq!(
            estimate(
                Growth::Series,
                &[scalar(1i64), scalar(100_000_000_000i64)],
                1
            )
            .unwrap(),
            800_000_000_000
        );
        assert_eq!(
            estimate(Growth::Repeat, &[scalar("x"), scalar(-5i64)], 1).unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn a_call_over_the_bound_fails_before_it_allocates_and_small_ones_run() {
        for sql in [
            "SELECT length(repeat('x', 2000000000)) AS n",
            "SELECT length(lpad('x', 2000000000)) AS n",
            "SELECT length(replace(repeat('a', 1000), 'a', repeat('b', 10000))) AS n",
            "SELECT max(length(repeat(CAST(value AS VARCHAR), 1000000))) FROM generate_series(1, 100)",
        ] {
            let error = run(sql).await.unwrap_err();
            assert!(
                crate::error::datafusion_code(&error)
                    == flotilla_protocol::ErrorCode::ResourcesExhausted,
                "{sql}: {error}"
            );
            assert!(
                error.to_string().contains("memory.max_call_mb"),
                "{sql}: {error}"
            );
        }
        let batches = run("SELECT length(repeat('ab', 1000)) AS a, length(lpad('x', 10, 'é')) AS b, length(rpad('x', 3)) AS c, replace('aXa', 'X', 'yy') AS e")
            .await
            .unwrap();
        let row = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(row.contains("| 2000 | 10 | 3 | ayya |"), "{row}");
    }
}
