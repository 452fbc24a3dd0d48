//! The Arrow Flight SQL front door: ADBC drivers, the Flight SQL JDBC driver, DBeaver and
//! `pyarrow.flight` connect to the gateway unmodified.
//!
//! ```text
//!  GetFlightInfo(statement) ─▶ the query stack (control → admission → route → shard client),
//!                              as for HTTP; the result's stream waits here under a ticket
//!  DoGet(ticket)            ─▶ the same stream, proxied from its TaskManager
//! ```
//!
//! Tickets and prepared-statement handles name state kept on this gateway under random
//! 128-bit ids (with a TTL), bound to the caller's tenant: they cannot be forged into a call to
//! another host, and every call checks the caller's token again.

mod auth;
mod metadata;
mod prepared;
mod results;
mod server;
mod service;
mod shards;
mod state;
mod statements;
mod types;

pub(crate) use server::{FlightServer, start};
