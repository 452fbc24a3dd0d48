//! The Arrow Flight SQL front door: ADBC drivers, the Flight SQL JDBC driver, DBeaver and
//! `pyarrow.flight` connect to the gateway unmodified.
//!
//! ```text
//!  GetFlightInfo(statement) ─▶ the query stack (control → admission → route → shard client),
//!                              as for HTTP; the result's stream waits here, and the client
//!                              gets a sealed, self-contained ticket (`tickets.rs`)
//!  DoGet(ticket)            ─▶ on this gateway: the same stream, proxied from its TaskManager;
//!                              on any other: the ticket's statement, run again there
//! ```
//!
//! Tickets are sealed with the cluster's tickets key, bound to the caller's tenant and open
//! for `flight.ticket_ttl_ms`; every call checks the caller's token again. Prepared-statement
//! handles still name state kept on this gateway (random 128-bit ids, closed when idle).

mod auth;
mod metadata;
mod prepared;
mod results;
mod server;
mod service;
mod shards;
mod state;
mod statements;
mod tickets;
mod types;

pub(crate) use server::{FlightServer, start};
