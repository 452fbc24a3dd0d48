//! Flight clients of peer agents, one lazily-connected channel per address, and the trace
//! context their calls carry.

use crate::error::AgentError;
use arrow_flight::flight_service_client::FlightServiceClient;
use flotilla_cluster::ClusterSecret;
use flotilla_protocol::TraceContext;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tonic::transport::Channel;

/// A cache of Flight clients keyed by `http://host:port`.
pub(crate) struct FlightClients {
    clients: Mutex<HashMap<String, FlightServiceClient<Channel>>>,
    timeout: Duration,
    secret: ClusterSecret,
}

impl FlightClients {
    /// Clients whose calls time out after `timeout` (connects after the cluster's connect
    /// timeout), and carry the cluster secret.
    pub(crate) fn new(timeout: Duration, secret: ClusterSecret) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            timeout,
            secret,
        }
    }

    /// Returns the client of `address`, creating it on first use.
    pub(crate) fn get(&self, address: &str) -> Result<FlightServiceClient<Channel>, AgentError> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let channel = self
            .secret
            .endpoint(address)
            .map_err(|error| AgentError::Internal(format!("agent url {address}: {error}")))?
            .timeout(self.timeout)
            .connect_lazy();
        let client = FlightServiceClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024);
        clients.insert(address.to_string(), client.clone());
        Ok(client)
    }
}

tokio::task_local! {
    /// The trace of the query this task serves: every action it sends carries a child span of
    /// it as W3C `traceparent` metadata.
    pub(crate) static CURRENT_TRACE: TraceContext;
}

/// Runs one Flight action on `address` and returns the body of its first result.
pub(crate) async fn call_action(
    clients: &FlightClients,
    address: &str,
    action_type: &str,
    body: Vec<u8>,
) -> Result<bytes::Bytes, flotilla_protocol::ErrorBody> {
    use flotilla_protocol::{ErrorBody, ErrorCode};
    let mut client = clients.get(address).map_err(|error| error.to_body())?;
    let mut action = clients
        .secret
        .request(arrow_flight::Action::new(action_type.to_string(), body));
    if let Ok(trace) = CURRENT_TRACE.try_with(|trace| *trace) {
        flotilla_cluster::inject_child_trace(action.metadata_mut(), &trace);
    }
    let mut results = client
        .do_action(action)
        .await
        .map_err(|status| action_error(&status))?
        .into_inner();
    let result = results
        .message()
        .await
        .map_err(|status| action_error(&status))?
        .ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::Internal,
                format!("empty answer to {action_type}"),
            )
        })?;
    Ok(result.body)
}

/// The error of a failed action: the peer's own answer, or `unavailable` when the connection
/// failed (the peer died or reset the stream), so that callers try another TaskManager.
fn action_error(status: &tonic::Status) -> flotilla_protocol::ErrorBody {
    use flotilla_protocol::{ErrorBody, ErrorCode};
    if crate::error::is_transport_status(status) {
        return ErrorBody::new(ErrorCode::Unavailable, status.message());
    }
    ErrorBody::from(status)
}

/// Channels of datafusion-distributed's stage calls (head → worker, worker → worker) through
/// [`ClusterSecret::endpoint`]: the cluster's connect deadline and keep-alives (a frozen or
/// cut-off worker fails its stage instead of hanging it), and internal TLS when on (its default
/// resolver connects in clear, with neither). One lazily-connected channel per TaskManager URL.
#[derive(Clone)]
pub(crate) struct ClusterChannels {
    secret: ClusterSecret,
    channels:
        std::sync::Arc<Mutex<HashMap<url::Url, datafusion_distributed::grpc::BoxCloneSyncChannel>>>,
}

impl ClusterChannels {
    pub(crate) fn new(secret: ClusterSecret) -> Self {
        Self {
            secret,
            channels: Default::default(),
        }
    }
}

#[async_trait::async_trait]
impl datafusion_distributed::ChannelResolver for ClusterChannels {
    async fn get_worker_client_for_url(
        &self,
        url: &url::Url,
    ) -> Result<Box<dyn datafusion_distributed::WorkerChannel>, datafusion::error::DataFusionError>
    {
        use datafusion_distributed::grpc::{BoxCloneSyncChannel, create_worker_client};
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let channel = match channels.get(url) {
            Some(channel) => channel.clone(),
            None => {
                let endpoint = self.secret.endpoint(url.as_str()).map_err(|error| {
                    datafusion::error::DataFusionError::Configuration(format!(
                        "taskmanager url {url}: {error}"
                    ))
                })?;
                let channel = BoxCloneSyncChannel::new(endpoint.connect_lazy());
                channels.insert(url.clone(), channel.clone());
                channel
            }
        };
        Ok(create_worker_client(channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_protocol::{ErrorBody, ErrorCode};

    #[test]
    fn a_broken_connection_is_unavailable_and_a_peers_answer_keeps_its_code() {
        // What tonic reports when the peer dies mid-call: a bare status, no Flotilla body.
        for status in [
            tonic::Status::cancelled("operation was canceled"),
            tonic::Status::unknown("h2 protocol error: error reading a body from connection"),
            tonic::Status::unavailable("transport error"),
        ] {
            assert_eq!(
                action_error(&status).code,
                ErrorCode::Unavailable,
                "{status}"
            );
        }
        let answered = tonic::Status::from(ErrorBody::new(ErrorCode::ClusterBusy, "no slots"));
        assert_eq!(action_error(&answered).code, ErrorCode::ClusterBusy);
        let cancelled = tonic::Status::from(ErrorBody::new(ErrorCode::Cancelled, "by request"));
        assert_eq!(action_error(&cancelled).code, ErrorCode::Cancelled);
        let refused = tonic::Status::unauthenticated("internal calls need the cluster secret");
        assert_eq!(action_error(&refused).code, ErrorCode::NotAllowed);
    }
}
