//! Result limits: the rows and bytes one query's result may have, per tenant.
//!
//! Counted on the Flight messages as they pass (rows from each record batch's header, bytes of
//! Arrow IPC as the TaskManager sent them, whatever format the client asked for). The message
//! that would cross a limit is not sent: the result ends there with `result_too_large`. When
//! the first batch already crosses it, that is the response's status (422); later, the
//! response is aborted, as for any failure after the first byte.

use crate::config::Config;
use crate::query::Messages;
use flotilla_protocol::{ErrorBody, ErrorCode};
use futures::StreamExt;
use std::collections::HashMap;

/// The most rows and bytes a result may have; 0 means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ResultLimits {
    rows: u64,
    bytes: u64,
}

/// Every tenant's result limits: the `[query]` defaults and each tenant's own.
#[derive(Clone, Debug)]
pub(crate) struct TenantLimits {
    default: ResultLimits,
    tenants: HashMap<String, ResultLimits>,
}

impl TenantLimits {
    pub(crate) fn new(config: &Config) -> Self {
        let default = ResultLimits {
            rows: config.query.max_result_rows,
            bytes: config.query.max_result_bytes,
        };
        let tenants = config
            .tenants
            .iter()
            .map(|(name, tenant)| {
                let limits = ResultLimits {
                    rows: tenant.max_result_rows.unwrap_or(default.rows),
                    bytes: tenant.max_result_bytes.unwrap_or(default.bytes),
                };
                (name.to_ascii_lowercase(), limits)
            })
            .collect();
        Self { default, tenants }
    }

    /// Returns `tenant`'s limits.
    pub(crate) fn of(&self, tenant: &str) -> ResultLimits {
        self.tenants
            .get(&tenant.to_ascii_lowercase())
            .copied()
            .unwrap_or(self.default)
    }
}

impl ResultLimits {
    /// Returns the error for a result that has reached `rows` and `bytes`, if that is over.
    fn exceeded(self, rows: u64, bytes: u64) -> Option<tonic::Status> {
        let (what, limit, setting) = if self.rows > 0 && rows > self.rows {
            ("rows", self.rows, "max_result_rows")
        } else if self.bytes > 0 && bytes > self.bytes {
            ("bytes of Arrow data", self.bytes, "max_result_bytes")
        } else {
            return None;
        };
        let message = format!(
            "the result has more than {limit} {what} ({setting} of the tenant, or of [query]): add a LIMIT or select less"
        );
        Some(ErrorBody::new(ErrorCode::ResultTooLarge, message).into())
    }

    /// Passes `messages` on until the result would cross a limit, then ends it with the error.
    pub(crate) fn apply(self, messages: Messages) -> Messages {
        if self.rows == 0 && self.bytes == 0 {
            return messages;
        }
        let counted = futures::stream::unfold(
            (messages, 0u64, 0u64, false),
            move |(mut messages, mut rows, mut bytes, over)| async move {
                if over {
                    return None;
                }
                let item = messages.next().await?;
                if let Ok(message) = &item {
                    rows += crate::shard::batch_rows(message).unwrap_or(0);
                    bytes += (message.data_header.len() + message.data_body.len()) as u64;
                    if let Some(error) = self.exceeded(rows, bytes) {
                        return Some((Err(error), (messages, rows, bytes, true)));
                    }
                }
                Some((item, (messages, rows, bytes, false)))
            },
        );
        counted.fuse().boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, RecordBatch};
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use futures::TryStreamExt;
    use std::sync::Arc;

    /// Three batches of 10 rows each, as Flight messages.
    async fn messages() -> Messages {
        let batches: Vec<_> = (0..3)
            .map(|_| {
                RecordBatch::try_from_iter([(
                    "a",
                    Arc::new(Int64Array::from_iter_values(0..10)) as _,
                )])
                .unwrap()
            })
            .collect();
        let encoded: Vec<_> = FlightDataEncoderBuilder::new()
            .build(futures::stream::iter(batches.into_iter().map(Ok)))
            .try_collect()
            .await
            .unwrap();
        futures::stream::iter(encoded.into_iter().map(Ok)).boxed()
    }

    async fn rows_then_error(limits: ResultLimits) -> (u64, Option<tonic::Status>) {
        let mut stream = limits.apply(messages().await);
        let mut rows = 0;
        while let Some(item) = stream.next().await {
            match item {
                Ok(message) => rows += crate::shard::batch_rows(&message).unwrap_or(0),
                Err(status) => {
                    assert!(stream.next().await.is_none(), "nothing follows the error");
                    return (rows, Some(status));
                }
            }
        }
        (rows, None)
    }

    #[tokio::test]
    async fn a_result_stops_before_the_batch_that_crosses_a_limit() {
        let (rows, error) = rows_then_error(ResultLimits { rows: 0, bytes: 0 }).await;
        assert_eq!((rows, error.is_none()), (30, true));
        let (rows, error) = rows_then_error(ResultLimits { rows: 30, bytes: 0 }).await;
        assert_eq!(
            (rows, error.is_none()),
            (30, true),
            "exactly at the limit passes"
        );
        let (rows, error) = rows_then_error(ResultLimits { rows: 25, bytes: 0 }).await;
        assert_eq!(rows, 20);
        let body = ErrorBody::from(&error.unwrap());
        assert_eq!(body.code, ErrorCode::ResultTooLarge);
        assert!(
            body.message.contains("more than 25 rows"),
            "{}",
            body.message
        );
        let (rows, error) = rows_then_error(ResultLimits {
            rows: 0,
            bytes: 100,
        })
        .await;
        assert!(rows < 30);
        assert!(
            ErrorBody::from(&error.unwrap())
                .message
                .contains("max_result_bytes")
        );
    }

    #[test]
    fn tenants_override_the_defaults() {
        let mut config = Config::default();
        config.query.max_result_rows = 100;
        config.tenants.insert(
            "Etl".into(),
            crate::config::TenantConfig {
                max_result_rows: Some(0),
                max_result_bytes: Some(5),
                ..Default::default()
            },
        );
        let limits = TenantLimits::new(&config);
        assert_eq!(limits.of("etl"), ResultLimits { rows: 0, bytes: 5 });
        assert_eq!(
            limits.of("web"),
            ResultLimits {
                rows: 100,
                bytes: config.query.max_result_bytes
            }
        );
    }
}
