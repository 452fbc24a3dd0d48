//! The HTTP edge: parses requests, calls the query stack, and streams results in the format the
//! client accepts. Every error becomes a JSON error response; none reaches hyper.

mod auth;
mod formats;
#[cfg(test)]
mod fuzz;
mod handler;
mod limits;

pub use handler::{Gateway, Members, ResponseBody};
