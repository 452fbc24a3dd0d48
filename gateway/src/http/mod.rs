//! The HTTP edge: parses requests, calls the query stack, and streams results in the format the
//! client accepts. Every error becomes a JSON error response; none reaches hyper.

mod cluster;
mod formats;
#[cfg(test)]
mod fuzz;
mod handler;
mod query;
mod records;
mod request;
mod response;
mod tracked;
mod ui;

pub use handler::{Gateway, Members, ResponseBody};
