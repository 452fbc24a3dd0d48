//! The embeddable Rust client of a Flotilla gateway: send SQL over HTTP, read the Arrow result
//! incrementally as a stream of record batches.
//!
//! ```no_run
//! # async fn example() -> Result<(), flotilla_client::Error> {
//! use futures::TryStreamExt;
//! let client = flotilla_client::Client::new("http://127.0.0.1:8080")?;
//! let result = client.query("SELECT n_name FROM nation ORDER BY n_name").await?;
//! println!("query {} on schema {:?}", result.query_id(), result.schema());
//! let batches: Vec<_> = result.try_collect().await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod client;
mod error;
mod stream;

pub use client::{Client, ClientBuilder, QueryOptions};
pub use error::Error;
pub use stream::QueryStream;
