//! [`Tickets`]: the Flight SQL tickets this cluster's gateways hand to clients. A ticket is
//! self-contained and sealed: it carries the statement as it was admitted (tenant, SQL, bound
//! values, options) and the handle of the result its gateway started, encrypted and
//! authenticated with the cluster's tickets key (XChaCha20-Poly1305, from `cluster.secret`),
//! and opens for `flight.ticket_ttl_ms` after it was issued. So `DoGet` on ANY gateway serves
//! it:
//!
//! ```text
//!  GetFlightInfo ─▶ gateway A: runs the statement to its first batch, parks the stream
//!                   under a handle, answers seal(statement, handle, schema)
//!  DoGet(ticket) ─▶ gateway A: opens it, streams the parked result          (served: parked)
//!              └──▶ gateway B: opens it, runs the statement again for the
//!                   same tenant, checks the schema, streams                  (served: rerun)
//! ```
//!
//! A ticket may be presented more than once within its life: Flotilla runs read-only
//! statements, so a second `DoGet` is another run of the same statement for the same tenant,
//! admitted and counted as any. Without `cluster.secret` the cluster runs open and tickets are
//! not sealed; they grant nothing then either, as `DoGet` checks that its caller may act for
//! the ticket's tenant.

use super::results::query_of;
use super::state::FlightSql;
use super::statements::{cache_headers, stream};
use crate::error::GatewayError;
use arrow_flight::FlightData;
use arrow_schema::Schema;
use flotilla_cluster::keys::{Refused, Sealer, unix_ms};
use flotilla_protocol::{ErrorBody, ErrorCode};
use futures::stream::BoxStream;
use prost::Message;
use std::time::Duration;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tracing::Instrument;

/// What a ticket carries.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Statement {
    /// The handle of the result the issuing gateway started and parked.
    #[prost(bytes = "vec", tag = "1")]
    pub(super) handle: Vec<u8>,
    /// The tenant it runs for.
    #[prost(string, tag = "2")]
    pub(super) tenant: String,
    #[prost(string, tag = "3")]
    pub(super) sql: String,
    /// One row of bound values, as an Arrow IPC stream; empty for none.
    #[prost(bytes = "vec", tag = "4")]
    pub(super) params: Vec<u8>,
    /// The client's routing key; empty for none.
    #[prost(string, tag = "5")]
    pub(super) routing_key: String,
    /// The query's deadline, from its start.
    #[prost(uint64, tag = "6")]
    pub(super) timeout_ms: u64,
    /// The client asked to bypass the result cache.
    #[prost(bool, tag = "7")]
    pub(super) no_cache: bool,
    /// The result's schema as its `FlightInfo` gave it (Arrow IPC): a re-run must match it.
    #[prost(bytes = "vec", tag = "8")]
    pub(super) schema: Vec<u8>,
}

impl Statement {
    /// The schema its `FlightInfo` gave.
    pub(super) fn schema(&self) -> Option<Schema> {
        let message = arrow_flight::IpcMessage(self.schema.clone().into());
        Schema::try_from(message).ok()
    }

    /// Its deadline.
    pub(super) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Seals and opens tickets.
pub(super) struct Tickets {
    sealer: Sealer,
    ttl: Duration,
}

impl Tickets {
    /// Tickets sealed with `sealer` (the tickets key) that open for `ttl`.
    pub(super) fn new(sealer: Sealer, ttl: Duration) -> Self {
        Self { sealer, ttl }
    }

    /// The ticket of `statement`.
    pub(super) fn seal(&self, statement: &Statement) -> Vec<u8> {
        self.sealer.seal(&statement.encode_to_vec(), unix_ms())
    }

    /// The statement of `ticket`: refused if this cluster did not seal it, or it is older than
    /// the TTL.
    pub(super) fn open(&self, ticket: &[u8]) -> Result<Statement, Refused> {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let opened = self.sealer.open_within(ticket, unix_ms(), ttl_ms)?;
        Statement::decode(opened.payload.as_slice()).map_err(|_| Refused::Forged)
    }
}

impl FlightSql {
    /// Runs the statement of a ticket another gateway issued, for the tenant it names; its
    /// result must have the schema that gateway announced.
    pub(super) async fn rerun(
        &self,
        metadata: &MetadataMap,
        statement: Statement,
    ) -> Result<tonic::Response<BoxStream<'static, Result<FlightData, Status>>>, Status> {
        // What a gateway sealed passed this check; an unsealed ticket (a cluster without a
        // secret) is the client's own text.
        self.check_size(statement.sql.len().max(statement.params.len()))?;
        let begun = self.begin(metadata);
        tracing::info!(
            parent: &begun.span,
            issued_as = ?query_of(&statement.handle),
            "a ticket issued by another gateway: its statement runs here"
        );
        let started = async {
            let started = self.run(&statement, &begun).await?;
            if statement.schema().as_ref() != Some(&started.schema) {
                return Err(GatewayError::Remote(ErrorBody::new(
                    ErrorCode::TicketNotFound,
                    "the result's schema changed since the ticket was issued (a table changed): \
                     ask for a new ticket",
                )));
            }
            Ok(started)
        }
        .instrument(begun.span.clone())
        .await;
        match started {
            Err(error) => Err(self.failed(begun, error)),
            Ok(started) => {
                begun.timeline.first_byte();
                let mut response = tonic::Response::new(stream(started.messages, begun.outcome));
                cache_headers(response.metadata_mut(), started.cache.as_ref());
                Ok(response)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::{DataType, Field};
    use flotilla_cluster::keys::{Secrets, Traffic};

    fn statement() -> Statement {
        let schema = Schema::new(vec![Field::new("n", DataType::Int64, false)]);
        let options = arrow_ipc::writer::IpcWriteOptions::default();
        let ipc = arrow_flight::SchemaAsIpc::new(&schema, &options);
        let schema = arrow_flight::IpcMessage::try_from(ipc).unwrap();
        Statement {
            handle: vec![7; 32],
            tenant: "alpha".into(),
            sql: "SELECT count(*) AS n FROM lineitem".into(),
            params: Vec::new(),
            routing_key: String::new(),
            timeout_ms: 30_000,
            no_cache: true,
            schema: schema.0.to_vec(),
        }
    }

    fn tickets(secret: &str) -> Tickets {
        let secrets = Secrets::from(vec![secret.to_string()]);
        Tickets::new(
            Sealer::new(&secrets, Traffic::Tickets),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn a_ticket_opens_on_any_gateway_of_the_cluster_and_nowhere_else() {
        let (issuer, other_gateway) = (tickets("s3cret"), tickets("s3cret"));
        let ticket = issuer.seal(&statement());
        assert!(
            !ticket.windows(6).any(|window| window == b"SELECT"),
            "the statement is encrypted"
        );
        let opened = other_gateway.open(&ticket).unwrap();
        assert_eq!(opened, statement());
        assert_eq!(opened.schema().unwrap().field(0).name(), "n");

        let stranger = tickets("another cluster");
        assert_eq!(stranger.open(&ticket).unwrap_err(), Refused::UnknownKey);
        let mut tampered = ticket.clone();
        tampered[30] ^= 1;
        assert_eq!(issuer.open(&tampered).unwrap_err(), Refused::Forged);
        assert_eq!(issuer.open(&[7; 32]).unwrap_err(), Refused::Unsealed);
    }
}
