//! The soak's clients besides the short mix, each a loop bounded in count and time that checks
//! every answer against in-process DataFusion: big results read at full speed, big results read
//! slowly (the result backs up to its TaskManager), cancels (a big query dropped after its
//! first batch) and Flight SQL prepared statements executed with bound parameters.

use crate::common::{self, compare};
use crate::load::kind;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A big result: every lineitem row, every column (about 10 MB of Arrow at the tests' scale).
pub const BIG: &str = "SELECT * FROM lineitem";
/// The prepared statement, and the parameter rows it is executed with in turn.
const PREPARED: &str = "SELECT count(*) AS n, sum(o_totalprice) AS total FROM orders \
                        WHERE o_orderkey < $1 AND o_orderstatus = $2";
const PARAMETERS: [(i64, &str); 3] = [(1_000, "F"), (30_000, "O"), (60_000, "P")];
/// The slow client's pace: [`BIG`] takes it about 10 s.
const SLOW_ROWS_PER_SECOND: f64 = 6_000.0;
/// Longest one call of a client may take before it counts as unanswered.
const CALL_LIMIT: Duration = Duration::from_secs(60);

/// A client running.
pub type Running = BoxFuture<'static, Tally>;

/// What one client saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub exact: u64,
    pub explicit: BTreeMap<String, u64>,
    pub wrong: Vec<String>,
    pub unanswered: u64,
}

impl Tally {
    pub fn calls(&self) -> u64 {
        self.exact + self.explicit.values().sum::<u64>() + self.wrong.len() as u64 + self.unanswered
    }

    fn count(&mut self, outcome: Option<Result<Result<(), String>, String>>) {
        match outcome {
            Some(Ok(Ok(()))) => self.exact += 1,
            Some(Ok(Err(wrong))) => self.wrong.push(wrong),
            Some(Err(kind)) => *self.explicit.entry(kind).or_default() += 1,
            None => self.unanswered += 1,
        }
    }
}

/// Rows and an order-independent fingerprint of every value (each row's values, as text,
/// hashed; the hashes added): two results with the same fingerprint hold the same rows.
pub fn fingerprint(batches: &[RecordBatch]) -> (usize, u64) {
    let mut rows = 0;
    let mut sum = 0u64;
    for batch in batches {
        let columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|column| cast(column, &DataType::Utf8).unwrap())
            .collect();
        let columns: Vec<&StringArray> = columns.iter().map(|column| column.as_string()).collect();
        for row in 0..batch.num_rows() {
            let mut hasher = DefaultHasher::new();
            for column in &columns {
                (!column.is_null(row))
                    .then(|| column.value(row))
                    .hash(&mut hasher);
            }
            sum = sum.wrapping_add(hasher.finish());
        }
        rows += batch.num_rows();
    }
    (rows, sum)
}

/// Runs `body` every `every` until `until`, at most `until / every + 1` times, counting each
/// call's outcome (`None`: it took longer than [`CALL_LIMIT`]).
async fn every<F, Fut>(every: Duration, until: Instant, mut body: F) -> Tally
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<(), String>, String>>,
{
    let mut tally = Tally::default();
    let most = (until
        .saturating_duration_since(Instant::now())
        .as_secs_f64()
        / every.as_secs_f64().max(0.001)) as usize
        + 1;
    for _ in 0..most {
        let next = Instant::now() + every;
        if Instant::now() >= until {
            break;
        }
        tally.count(tokio::time::timeout(CALL_LIMIT, body()).await.ok());
        tokio::time::sleep_until(next).await;
    }
    tally
}

/// Reads [`BIG`] whole, every `pace`, at full speed or at [`SLOW_ROWS_PER_SECOND`].
pub async fn big(url: String, pace: Duration, slowly: bool, until: Instant) -> Tally {
    let expected = fingerprint(&common::reference_batches(BIG).await);
    let client = flotilla_client::Client::new(&url).unwrap();
    every(pace, until, || async {
        let mut stream = client.query(BIG).await.map_err(kind)?;
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(kind)?;
            if slowly {
                let rows = batch.num_rows() as f64;
                tokio::time::sleep(Duration::from_secs_f64(rows / SLOW_ROWS_PER_SECOND)).await;
            }
            batches.push(batch);
        }
        let got = fingerprint(&batches);
        Ok((got == expected)
            .then_some(())
            .ok_or_else(|| format!("{BIG}: {got:?}, expected {expected:?}")))
    })
    .await
}

/// Starts [`BIG`] every `pace` and drops it after its first batch.
pub async fn cancels(url: String, pace: Duration, until: Instant) -> Tally {
    let client = flotilla_client::Client::new(&url).unwrap();
    every(pace, until, || async {
        let mut stream = client.query(BIG).await.map_err(kind)?;
        match stream.next().await {
            Some(Ok(batch)) if batch.num_rows() > 0 => Ok(Ok(())),
            Some(Ok(_)) | None => Ok(Err(format!("{BIG}: no rows in the first batch"))),
            Some(Err(error)) => Err(kind(error)),
        }
    })
    .await
}

/// Prepares [`PREPARED`] over Flight SQL every `pace`, executes it with the next row of
/// [`PARAMETERS`], reads every endpoint, and closes it.
pub async fn prepared(flight_url: String, pace: Duration, until: Instant) -> Tally {
    let mut expected = Vec::new();
    for (key, status) in PARAMETERS {
        let sql = PREPARED
            .replace("$1", &key.to_string())
            .replace("$2", &format!("'{status}'"));
        expected.push(common::reference_batches(&sql).await);
    }
    let expected = Arc::new(expected);
    let channel = common::internal::channel(&flight_url).await;
    let client = FlightSqlServiceClient::new(channel);
    let mut turn = 0;
    every(pace, until, || {
        let (mut client, expected) = (client.clone(), Arc::clone(&expected));
        turn += 1;
        async move {
            let flight = |error: arrow_flight::error::FlightError| flight_kind(&error.to_string());
            let (key, status) = PARAMETERS[turn % PARAMETERS.len()];
            let mut statement = client
                .prepare(PREPARED.to_string(), None)
                .await
                .map_err(flight)?;
            let values = RecordBatch::try_from_iter([
                ("$1", Arc::new(Int64Array::from(vec![key])) as ArrayRef),
                ("$2", Arc::new(StringArray::from(vec![status])) as ArrayRef),
            ])
            .unwrap();
            statement.set_parameters(values).map_err(flight)?;
            let info = statement.execute().await.map_err(flight)?;
            let mut batches = Vec::new();
            for endpoint in info.endpoint {
                let ticket = endpoint
                    .ticket
                    .ok_or_else(|| "flight: an endpoint without a ticket".to_string())?;
                let stream = client.do_get(ticket).await.map_err(flight)?;
                batches.extend(stream.try_collect::<Vec<_>>().await.map_err(flight)?);
            }
            statement.close().await.map_err(flight)?;
            let want = &expected[turn % PARAMETERS.len()];
            Ok(compare::same(&batches, want, false)
                .then_some(())
                .ok_or_else(|| format!("prepared ({key}, {status}): {batches:?}")))
        }
    })
    .await
}

/// The stable code a Flight SQL error message carries (`code: message`), or `flight`.
fn flight_kind(message: &str) -> String {
    message
        .split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
        .find_map(flotilla_protocol::ErrorCode::parse)
        .map_or_else(
            || "flight".to_string(),
            |code| format!("flight {}", code.as_str()),
        )
}
