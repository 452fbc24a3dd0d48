//! Calls to a cluster's gRPC services as a gateway makes them: a channel, a Flight client (plain,
//! or signing its calls with the cluster's keys), a query command, and a shard's plan (its head
//! and ticket).

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightDescriptor, Ticket};
use flotilla_cluster::ClusterSecret;
use flotilla_cluster::keys::Signed;
use flotilla_protocol::QueryCommand;

/// A connected gRPC channel to `url` (`http://host:port`).
pub async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A Flight client of `url` (an internal gRPC URL).
pub async fn flight(url: &str) -> FlightServiceClient<tonic::transport::Channel> {
    FlightServiceClient::new(channel(url).await)
}

/// A Flight client of `url` whose calls are signed with `secret`, as members sign theirs.
pub async fn signed(
    url: &str,
    secret: &str,
) -> FlightServiceClient<Signed<tonic::transport::Channel>> {
    let keys = ClusterSecret::new(&secret.into());
    FlightServiceClient::new(keys.signed(channel(url).await))
}

/// A query command for `sql`, as a gateway sends a shard; it bypasses the result cache, so
/// that every call plans and hands over.
pub fn command(sql: &str) -> FlightDescriptor {
    let command = QueryCommand {
        no_cache: true,
        ..QueryCommand::new(sql)
    };
    FlightDescriptor::new_cmd(command.to_bytes())
}

/// Asks the shard for a query's ticket as a gateway does after its TaskManager refused one:
/// the plan handed over by call and kept on its head under a ticket until fetched. Returns the
/// head and the ticket.
pub async fn plan(shard_url: &str, secret: &str) -> (String, Ticket) {
    plan_with(shard_url, secret, true).await
}

/// Asks the shard for a query's ticket as a gateway first does: the hand-over sealed in the
/// ticket, nothing held on the head until it is presented. Returns the head and the ticket.
pub async fn plan_in_ticket(shard_url: &str, secret: &str) -> (String, Ticket) {
    plan_with(shard_url, secret, false).await
}

async fn plan_with(shard_url: &str, secret: &str, via_handover: bool) -> (String, Ticket) {
    let command = QueryCommand {
        no_cache: true,
        via_handover,
        ..QueryCommand::new("SELECT * FROM region")
    };
    let info = signed(shard_url, secret)
        .await
        .get_flight_info(FlightDescriptor::new_cmd(command.to_bytes()))
        .await
        .unwrap()
        .into_inner();
    let endpoint = info.endpoint.into_iter().next().unwrap();
    let head = endpoint.location[0].uri.clone();
    (head, endpoint.ticket.unwrap())
}
