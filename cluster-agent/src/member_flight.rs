//! The Flight service of a member, shard or TaskManager. A member serves a few calls of the
//! Flight protocol ([`MemberFlight`]); [`MemberFlightService`] is the one place that answers
//! the others (handshake, listing, polling, schemas, puts, exchanges) with `unimplemented`.

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use async_trait::async_trait;
use futures::stream::BoxStream;
use tonic::{Request, Response, Status, Streaming};

/// A stream of one Flight call's answers.
pub(crate) type FlightStream<T> = BoxStream<'static, Result<T, Status>>;

/// The Flight calls a member serves; those it does not keep the default, `unimplemented`.
#[async_trait]
pub(crate) trait MemberFlight: Send + Sync + 'static {
    /// `GetFlightInfo`: a shard plans a query.
    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("get_flight_info"))
    }

    /// `DoGet`: a result, by its ticket.
    async fn do_get(
        &self,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        Err(Status::unimplemented("do_get"))
    }

    /// `DoAction`: the member's internal actions (hand-overs, leases, describe, catalog).
    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<FlightStream<arrow_flight::Result>>, Status>;

    /// `ListActions`.
    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<FlightStream<ActionType>>, Status> {
        Err(Status::unimplemented("list_actions"))
    }
}

/// A member's [`MemberFlight`] as a complete Flight service.
#[derive(Clone)]
pub(crate) struct MemberFlightService<T>(pub(crate) T);

#[async_trait]
impl<T: MemberFlight> FlightService for MemberFlightService<T> {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;
    type DoExchangeStream = FlightStream<FlightData>;

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.0.get_flight_info(request).await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.0.do_get(request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.0.do_action(request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.0.list_actions(request).await
    }

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("handshake"))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("list_flights"))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("poll_flight_info"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("get_schema"))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("do_put"))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange"))
    }
}
