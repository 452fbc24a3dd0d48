//! Result encodings: Flight messages in, response body chunks out, batch by batch.
//!
//! ```text
//!  Flight messages ─┬─ Arrow: re-framed as IPC stream messages, never decoded ─▶ bytes
//!                   └─ JSON / NDJSON / CSV: decoded to record batches, encoded ─▶ bytes
//! ```
//! A failure after the first chunk ends the stream with an error, which makes hyper abort the
//! response: the client sees a broken transfer, never a clean but short result.

use crate::error::BoxError;
use arrow_array::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_json::writer::{JsonArray, LineDelimited};
use arrow_schema::SchemaRef;
use bytes::{BufMut, Bytes, BytesMut};
use flotilla_protocol::MediaType;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

/// The Arrow IPC end-of-stream marker.
const END_OF_STREAM: [u8; 8] = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];

/// A stream of Flight messages from a TaskManager.
pub(super) use crate::query::Messages;
/// A stream of response body chunks.
pub(super) type Chunks = BoxStream<'static, Result<Bytes, BoxError>>;

/// Encodes `messages` as `media`.
pub(super) fn encode(media: MediaType, messages: Messages) -> Chunks {
    match media {
        MediaType::ArrowStream => arrow_stream(messages),
        other => text(other, messages),
    }
}

/// Frames each Flight message as an IPC stream message, then the end-of-stream marker.
fn arrow_stream(messages: Messages) -> Chunks {
    // State: `Some(messages)` while running; the end marker is sent only after a clean end,
    // and nothing at all follows an error.
    futures::stream::unfold(Some(messages), |state| async move {
        let mut messages = state?;
        loop {
            match messages.next().await {
                Some(Ok(message)) => {
                    if let Some(frame) = frame_message(&message) {
                        return Some((Ok(frame), Some(messages)));
                    }
                }
                Some(Err(status)) => {
                    let error = crate::GatewayError::Remote((&status).into());
                    return Some((Err(BoxError::from(error)), None));
                }
                None => return Some((Ok(Bytes::from_static(&END_OF_STREAM)), None)),
            }
        }
    })
    .boxed()
}

/// Returns one IPC stream message: continuation marker, padded metadata length, metadata,
/// padding, body. Messages without metadata (application metadata only) are skipped.
pub(super) fn frame_message(message: &FlightData) -> Option<Bytes> {
    let header = &message.data_header;
    if header.is_empty() {
        return None;
    }
    let padded = (header.len() + 7) & !7;
    let mut frame = BytesMut::with_capacity(8 + padded + message.data_body.len());
    frame.put_u32_le(0xFFFF_FFFF);
    frame.put_i32_le(i32::try_from(padded).unwrap_or(i32::MAX));
    frame.put_slice(header);
    frame.put_bytes(0, padded - header.len());
    frame.put_slice(&message.data_body);
    Some(frame.freeze())
}

enum TextEncoder {
    Json(arrow_json::Writer<Vec<u8>, JsonArray>),
    NdJson(arrow_json::Writer<Vec<u8>, LineDelimited>),
    Csv { wrote_header: bool },
}

impl TextEncoder {
    fn new(media: MediaType) -> Self {
        let builder = arrow_json::WriterBuilder::new().with_explicit_nulls(true);
        match media {
            MediaType::Json => Self::Json(builder.build(Vec::new())),
            MediaType::NdJson => Self::NdJson(builder.build(Vec::new())),
            _ => Self::Csv {
                wrote_header: false,
            },
        }
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<Bytes, BoxError> {
        match self {
            Self::Json(writer) => {
                writer.write(batch)?;
                Ok(Bytes::from(std::mem::take(writer.get_mut())))
            }
            Self::NdJson(writer) => {
                writer.write(batch)?;
                Ok(Bytes::from(std::mem::take(writer.get_mut())))
            }
            Self::Csv { wrote_header } => {
                let mut writer = arrow_csv::WriterBuilder::new()
                    .with_header(!*wrote_header)
                    .build(Vec::new());
                writer.write(batch)?;
                *wrote_header = true;
                Ok(Bytes::from(writer.into_inner()))
            }
        }
    }

    fn finish(&mut self, schema: Option<SchemaRef>) -> Result<Bytes, BoxError> {
        match self {
            Self::Json(writer) => {
                writer.finish()?;
                Ok(Bytes::from(std::mem::take(writer.get_mut())))
            }
            Self::NdJson(_) => Ok(Bytes::new()),
            Self::Csv {
                wrote_header: false,
            } => match schema {
                Some(schema) => self.write(&RecordBatch::new_empty(schema)),
                None => Ok(Bytes::new()),
            },
            Self::Csv { .. } => Ok(Bytes::new()),
        }
    }
}

enum TextState {
    Running(Box<(FlightRecordBatchStream, TextEncoder)>),
    Done,
}

/// Decodes batches and encodes each as rows as soon as it arrives.
fn text(media: MediaType, messages: Messages) -> Chunks {
    let batches =
        FlightRecordBatchStream::new_from_flight_data(messages.map_err(FlightError::from));
    futures::stream::unfold(
        TextState::Running(Box::new((batches, TextEncoder::new(media)))),
        |state| async move {
            let TextState::Running(running) = state else {
                return None;
            };
            let (mut batches, mut encoder) = *running;
            match batches.next().await {
                Some(Ok(batch)) => match encoder.write(&batch) {
                    Ok(chunk) => {
                        Some((Ok(chunk), TextState::Running(Box::new((batches, encoder)))))
                    }
                    Err(error) => Some((Err(error), TextState::Done)),
                },
                Some(Err(error)) => Some((Err(flight_error(error)), TextState::Done)),
                None => {
                    let schema = batches.schema().cloned();
                    Some((encoder.finish(schema), TextState::Done))
                }
            }
        },
    )
    .try_filter(|chunk| futures::future::ready(!chunk.is_empty()))
    .boxed()
}

fn flight_error(error: FlightError) -> BoxError {
    match error {
        FlightError::Tonic(status) => crate::GatewayError::Remote((&*status).into()).into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use std::sync::Arc;

    fn batches() -> Vec<RecordBatch> {
        let schema = Arc::new(arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("n", arrow_schema::DataType::Int64, false),
            arrow_schema::Field::new("s", arrow_schema::DataType::Utf8, true),
        ]));
        (0..3)
            .map(|index| {
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(Int64Array::from(vec![index, index + 10])),
                        Arc::new(StringArray::from(vec![Some("a,b"), None])),
                    ],
                )
                .unwrap()
            })
            .collect()
    }

    async fn messages(batches: Vec<RecordBatch>) -> Messages {
        let encoded: Vec<FlightData> = FlightDataEncoderBuilder::new()
            .build(futures::stream::iter(batches.into_iter().map(Ok)))
            .try_collect()
            .await
            .unwrap();
        futures::stream::iter(encoded.into_iter().map(Ok)).boxed()
    }

    async fn collect(media: MediaType, messages: Messages) -> Vec<u8> {
        let chunks: Vec<Bytes> = encode(media, messages).try_collect().await.unwrap();
        chunks.concat()
    }

    #[tokio::test]
    async fn arrow_frames_read_back_with_the_ipc_reader() {
        let input = batches();
        let bytes = collect(MediaType::ArrowStream, messages(input.clone()).await).await;
        let reader =
            arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        let output: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(output, input);
    }

    #[tokio::test]
    async fn text_formats_stream_rows() {
        let json = collect(MediaType::Json, messages(batches()).await).await;
        let rows: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(rows.as_array().unwrap().len(), 6);
        assert_eq!(rows[1]["n"], 10);
        assert!(rows[1]["s"].is_null(), "nulls are explicit");

        let ndjson =
            String::from_utf8(collect(MediaType::NdJson, messages(batches()).await).await).unwrap();
        assert_eq!(ndjson.lines().count(), 6);

        let csv =
            String::from_utf8(collect(MediaType::Csv, messages(batches()).await).await).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "n,s", "one header row");
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[1], "0,\"a,b\"");
    }

    #[tokio::test]
    async fn empty_results_are_well_formed() {
        let empty = vec![RecordBatch::new_empty(batches()[0].schema())];
        let json = collect(MediaType::Json, messages(empty.clone()).await).await;
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&json).unwrap(),
            serde_json::json!([])
        );
        let csv = String::from_utf8(collect(MediaType::Csv, messages(empty).await).await).unwrap();
        assert_eq!(csv.trim(), "n,s");
    }

    #[tokio::test]
    async fn a_failure_mid_stream_is_an_error_not_an_end() {
        let mut input: Vec<Result<FlightData, tonic::Status>> =
            messages(batches()).await.collect().await;
        input.truncate(2);
        input.push(Err(tonic::Status::unavailable("taskmanager died")));
        for media in MediaType::ALL {
            let chunks: Vec<Result<Bytes, BoxError>> =
                encode(media, futures::stream::iter(input.clone()).boxed())
                    .collect()
                    .await;
            assert!(
                chunks.last().unwrap().is_err(),
                "{media:?} must end in an error"
            );
            let text: Vec<u8> = chunks
                .iter()
                .filter_map(|c| c.as_ref().ok())
                .flat_map(|c| c.to_vec())
                .collect();
            if media == MediaType::Json {
                assert!(
                    !String::from_utf8_lossy(&text).trim_end().ends_with(']'),
                    "array left open"
                );
            }
            if media == MediaType::ArrowStream {
                assert!(!text.ends_with(&END_OF_STREAM), "no end-of-stream marker");
            }
        }
    }
}
