//! Flight clients of peer agents, one lazily-connected channel per address (dropped, and its
//! connection with it, after [`IDLE`] unused: a shard keeps connections to the TaskManagers its
//! recent queries used, not to the whole pool), and the trace context their calls carry.

use crate::error::AgentError;
use arrow_flight::flight_service_client::FlightServiceClient;
use flotilla_cluster::ClusterSecret;
use flotilla_cluster::keys::Signed;
use flotilla_protocol::TraceContext;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How long an unused channel (and its connection, keep-alive pings and all) is kept.
const IDLE: Duration = Duration::from_secs(30);

/// Channels by peer, each dropped after [`IDLE`] unused (checked at most once a second).
pub(crate) struct IdleCache<K, V> {
    entries: HashMap<K, (V, Instant)>,
    pruned: Instant,
}

impl<K: Hash + Eq + Clone, V: Clone> IdleCache<K, V> {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
            pruned: Instant::now(),
        }
    }

    /// The value of `key`, made by `make` when missing; marks it used.
    fn get_or_try<E>(&mut self, key: &K, make: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        let now = Instant::now();
        if now.duration_since(self.pruned) > Duration::from_secs(1) {
            self.entries
                .retain(|_, (_, used)| now.duration_since(*used) < IDLE);
            self.pruned = now;
        }
        if let Some((value, used)) = self.entries.get_mut(key) {
            *used = now;
            return Ok(value.clone());
        }
        let value = make()?;
        self.entries.insert(key.clone(), (value.clone(), now));
        Ok(value)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A cache of Flight clients keyed by `http://host:port`.
pub(crate) struct FlightClients {
    clients: Mutex<IdleCache<String, FlightServiceClient<Signed<Channel>>>>,
    timeout: Duration,
    secret: ClusterSecret,
}

impl FlightClients {
    /// Clients whose calls time out after `timeout` (connects after the cluster's connect
    /// timeout), and are signed with the cluster's keys.
    pub(crate) fn new(timeout: Duration, secret: ClusterSecret) -> Self {
        Self {
            clients: Mutex::new(IdleCache::new()),
            timeout,
            secret,
        }
    }

    /// Returns the client of `address`, creating it on first use.
    pub(crate) fn get(
        &self,
        address: &str,
    ) -> Result<FlightServiceClient<Signed<Channel>>, AgentError> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        clients.get_or_try(&address.to_string(), || {
            let channel = self
                .secret
                .endpoint(address)
                .map_err(|error| AgentError::Internal(format!("agent url {address}: {error}")))?
                .timeout(self.timeout)
                .connect_lazy();
            Ok(FlightServiceClient::new(self.secret.signed(channel))
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(256 * 1024 * 1024))
        })
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
    let mut action = tonic::Request::new(arrow_flight::Action::new(action_type.to_string(), body));
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
    channels: std::sync::Arc<
        Mutex<IdleCache<url::Url, datafusion_distributed::grpc::BoxCloneSyncChannel>>,
    >,
}

impl ClusterChannels {
    pub(crate) fn new(secret: ClusterSecret) -> Self {
        Self {
            secret,
            channels: std::sync::Arc::new(Mutex::new(IdleCache::new())),
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
        let channel = channels.get_or_try(url, || {
            let endpoint = self.secret.endpoint(url.as_str()).map_err(|error| {
                datafusion::error::DataFusionError::Configuration(format!(
                    "taskmanager url {url}: {error}"
                ))
            })?;
            Ok::<_, datafusion::error::DataFusionError>(BoxCloneSyncChannel::new(
                self.secret.signed(endpoint.connect_lazy()),
            ))
        })?;
        Ok(create_worker_client(channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_protocol::{ErrorBody, ErrorCode};

    #[test]
    fn unused_channels_are_dropped_after_the_idle_time() {
        let mut cache: IdleCache<u32, u32> = IdleCache::new();
        assert_eq!(cache.get_or_try(&1, || Ok::<_, ()>(10)), Ok(10));
        assert_eq!(cache.get_or_try(&1, || Err(())), Ok(10), "kept while used");
        cache.entries.get_mut(&1).unwrap().1 -= IDLE;
        cache.pruned -= Duration::from_secs(2);
        assert_eq!(cache.get_or_try(&2, || Ok::<_, ()>(20)), Ok(20));
        assert_eq!(cache.len(), 1, "the idle one is gone");
    }

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
