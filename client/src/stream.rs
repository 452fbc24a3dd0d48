//! [`QueryStream`]: an Arrow IPC stream decoded as the HTTP body arrives.

use crate::error::Error;
use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamDecoder;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use futures::Stream;
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The Arrow IPC end-of-stream marker.
const END_OF_STREAM: [u8; 8] = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];

/// A query's result: its schema, then its record batches as they arrive.
///
/// The stream yields `Err` (never a clean end) when the result is cut short: a broken
/// connection, or a body that ends without the Arrow end-of-stream marker.
pub struct QueryStream {
    query_id: String,
    schema: SchemaRef,
    body: Incoming,
    decoder: StreamDecoder,
    pending: arrow_buffer::Buffer,
    tail: Vec<u8>,
    ready: Option<RecordBatch>,
    done: bool,
    bytes: u64,
}

impl std::fmt::Debug for QueryStream {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("QueryStream")
            .field("query_id", &self.query_id)
            .finish_non_exhaustive()
    }
}

impl QueryStream {
    /// Reads the body until the schema is known.
    pub(crate) async fn open(query_id: String, body: Incoming) -> Result<Self, Error> {
        let mut stream = Self {
            query_id,
            schema: std::sync::Arc::new(arrow_schema::Schema::empty()),
            body,
            decoder: StreamDecoder::new(),
            pending: arrow_buffer::Buffer::from_vec(Vec::<u8>::new()),
            tail: Vec::new(),
            ready: None,
            done: false,
            bytes: 0,
        };
        while stream.decoder.schema().is_none() {
            match stream.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        stream.push(data);
                        // The schema and the first batch may share a chunk: keep the batch.
                        if let Some(batch) = stream.decoder.decode(&mut stream.pending)? {
                            stream.ready = Some(batch);
                        }
                    }
                }
                Some(Err(error)) => return Err(Error::Transport(error.to_string())),
                None => {
                    return Err(Error::Truncated(
                        "the response ended before the schema".into(),
                    ));
                }
            }
        }
        stream.schema = stream.decoder.schema().unwrap_or(stream.schema);
        Ok(stream)
    }

    /// Returns the id the gateway gave the query.
    pub fn query_id(&self) -> &str {
        &self.query_id
    }

    /// Returns the result's schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Returns the result bytes received so far (the Arrow IPC stream).
    pub fn bytes_received(&self) -> u64 {
        self.bytes
    }

    fn push(&mut self, data: Bytes) {
        self.bytes += data.len() as u64;
        self.tail.extend_from_slice(&data);
        if self.tail.len() > END_OF_STREAM.len() {
            let excess = self.tail.len() - END_OF_STREAM.len();
            self.tail.drain(..excess);
        }
        let mut joined = self.pending.as_slice().to_vec();
        joined.extend_from_slice(&data);
        self.pending = arrow_buffer::Buffer::from_vec(joined);
    }
}

impl Stream for QueryStream {
    type Item = Result<RecordBatch, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(batch) = this.ready.take() {
                return Poll::Ready(Some(Ok(batch)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if !this.pending.is_empty() {
                match this.decoder.decode(&mut this.pending) {
                    Ok(Some(batch)) => return Poll::Ready(Some(Ok(batch))),
                    Ok(None) => {}
                    Err(error) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(error.into())));
                    }
                }
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.push(data);
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::Transport(format!(
                        "result broken off: {error}"
                    )))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if this.tail != END_OF_STREAM || this.decoder.finish().is_err() {
                        return Poll::Ready(Some(Err(Error::Truncated(
                            "the response ended without the end-of-stream marker".into(),
                        ))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}
