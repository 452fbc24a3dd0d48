//! The [`Timeline`] of one query: what each layer saw, for `GET /v1/query/{id}`, the phase
//! histograms and the gateway's log line at the query's end.

use flotilla_protocol::{QueryId, TraceContext};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Longest SQL text and error message kept per query, in bytes.
const MAX_TEXT: usize = 1024;

/// One query's record, shared by the layers it passes and kept in the gateway's bounded
/// history after it ends.
#[derive(Debug)]
pub struct Timeline {
    query_id: QueryId,
    trace: TraceContext,
    protocol: Protocol,
    started: Instant,
    started_at: SystemTime,
    rows: AtomicU64,
    bytes: AtomicU64,
    marks: Mutex<Marks>,
}

#[derive(Debug, Default)]
struct Marks {
    tenant: String,
    sql: String,
    queued: Option<Duration>,
    admitted: Option<Duration>,
    planned: Option<Duration>,
    first_byte: Option<Duration>,
    finished: Option<Duration>,
    attempts: u32,
    shard: Option<String>,
    taskmanager: Option<String>,
    taskmanagers: Vec<String>,
    /// What the result cache did, as the shard said it.
    cache: Option<crate::query::CacheReport>,
    outcome: Option<(String, Option<String>)>,
}

/// The front door a query came in by (label `protocol` of the gateway's query metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `POST /v1/query`.
    Http,
    /// Arrow Flight SQL.
    FlightSql,
}

impl Protocol {
    /// The label value: `http` or `flight_sql`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::FlightSql => "flight_sql",
        }
    }
}

/// The durations of a finished query's phases, as the phase histograms observe them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseDurations {
    /// Waiting for admission.
    pub queued: Option<Duration>,
    /// From admission to the shard's answer (routing, planning, leasing, hand-over).
    pub planned: Option<Duration>,
    /// From the request to the first result byte.
    pub first_byte: Option<Duration>,
    /// From the request to its end.
    pub total: Option<Duration>,
}

impl Timeline {
    /// Starts the record of a query received now over HTTP.
    pub fn new(query_id: QueryId, trace: TraceContext) -> Self {
        Self::with_protocol(query_id, trace, Protocol::Http)
    }

    /// Starts the record of a query received now by `protocol`.
    pub fn with_protocol(query_id: QueryId, trace: TraceContext, protocol: Protocol) -> Self {
        Self {
            query_id,
            trace,
            protocol,
            started: Instant::now(),
            started_at: SystemTime::now(),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            marks: Mutex::default(),
        }
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The front door the query came in by.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The query's id.
    pub fn query_id(&self) -> QueryId {
        self.query_id
    }

    /// The gateway's trace context of this query.
    pub fn trace(&self) -> TraceContext {
        self.trace
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records the tenant and (the start of) the SQL text, once the request is read.
    pub fn describe(&self, tenant: &str, sql: &str) {
        let mut marks = self.marks();
        marks.tenant = tenant.to_string();
        marks.sql = truncate(sql);
    }

    /// The query's tenant, once known.
    pub fn tenant(&self) -> String {
        self.marks().tenant.clone()
    }

    /// Records the end of admission, after `waited` in the tenant's queue.
    pub fn admitted(&self, waited: Duration) {
        let mut marks = self.marks();
        marks.queued = Some(waited);
        marks.admitted = Some(self.started.elapsed());
    }

    /// Records an attempt on `shard`.
    pub fn attempt(&self, shard: &str) {
        let mut marks = self.marks();
        marks.attempts += 1;
        marks.shard = Some(shard.to_string());
    }

    /// Records the shard's answer: the result waits on `taskmanager` (none when the shard
    /// answered itself), and the query's stages run on `taskmanagers`.
    pub fn planned(&self, taskmanager: Option<&str>, taskmanagers: Vec<String>) {
        let mut marks = self.marks();
        marks.planned = Some(self.started.elapsed());
        marks.taskmanager = taskmanager.map(str::to_string);
        marks.taskmanagers = taskmanagers;
    }

    /// Records what the result cache did for the planned attempt.
    pub fn cache(&self, report: Option<&crate::query::CacheReport>) {
        self.marks().cache = report.cloned();
    }

    /// The TaskManagers the query's last planned attempt runs on.
    pub fn taskmanagers(&self) -> Vec<String> {
        self.marks().taskmanagers.clone()
    }

    /// Records the first result byte.
    pub fn first_byte(&self) {
        self.marks().first_byte = Some(self.started.elapsed());
    }

    /// Counts streamed rows.
    pub fn add_rows(&self, rows: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// Counts streamed bytes.
    pub fn add_bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Rows streamed so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Bytes streamed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Records the query's end with its outcome code; the first call wins. Returns the phase
    /// durations to observe, or `None` when the query had ended already.
    pub fn finish(&self, code: &str, error: Option<&str>) -> Option<PhaseDurations> {
        let mut marks = self.marks();
        if marks.outcome.is_some() {
            return None;
        }
        let total = self.started.elapsed();
        marks.finished = Some(total);
        marks.outcome = Some((code.to_string(), error.map(truncate)));
        Some(PhaseDurations {
            queued: marks.queued,
            planned: marks
                .planned
                .zip(marks.admitted)
                .map(|(planned, admitted)| planned.saturating_sub(admitted)),
            first_byte: marks.first_byte,
            total: Some(total),
        })
    }

    /// Says whether the query has ended.
    pub fn is_finished(&self) -> bool {
        self.marks().outcome.is_some()
    }

    /// The record as `GET /v1/query/{id}` shows it; times in milliseconds since the request.
    pub fn to_json(&self) -> serde_json::Value {
        let marks = self.marks();
        let millis = |mark: Option<Duration>| mark.map(|mark| mark.as_secs_f64() * 1e3);
        let (status, code, error) = match &marks.outcome {
            None => ("running", None, None),
            Some((code, error)) if code == "ok" => ("succeeded", Some(code.clone()), error.clone()),
            Some((code, error)) => ("failed", Some(code.clone()), error.clone()),
        };
        let started_unix_ms = self
            .started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        serde_json::json!({
            "query_id": self.query_id,
            "trace_id": self.trace.trace_id(),
            "tenant": marks.tenant,
            "sql": marks.sql,
            "status": status,
            "code": code,
            "error": error,
            "started_unix_ms": started_unix_ms,
            "elapsed_ms": millis(Some(marks.finished.unwrap_or_else(|| self.started.elapsed()))),
            "shard": marks.shard,
            "taskmanager": marks.taskmanager,
            "taskmanagers": marks.taskmanagers,
            "cache": marks.cache.as_ref().map(|cache| serde_json::json!({
                "outcome": cache.outcome,
                "table_versions": cache.table_versions,
            })),
            "attempts": marks.attempts,
            "rows": self.rows(),
            "bytes": self.bytes(),
            "phases": {
                "queued_ms": millis(marks.queued),
                "admitted_ms": millis(marks.admitted),
                "planned_ms": millis(marks.planned),
                "first_byte_ms": millis(marks.first_byte),
                "total_ms": millis(marks.finished),
            },
        })
    }
}

/// Cuts `text` to at most [`MAX_TEXT`] bytes, on a character boundary.
fn truncate(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_string();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_the_marks_and_only_the_first_end_counts() {
        let timeline = Timeline::new(QueryId::new(), TraceContext::root());
        timeline.describe("t", &"x".repeat(5000));
        timeline.admitted(Duration::from_millis(3));
        timeline.attempt("http://shard");
        timeline.planned(
            Some("http://tm"),
            vec!["http://tm".into(), "http://tm2".into()],
        );
        timeline.first_byte();
        timeline.add_rows(7);
        timeline.add_bytes(100);
        let json = timeline.to_json();
        assert_eq!(json["status"], "running");
        assert_eq!(
            json["sql"].as_str().unwrap().len(),
            MAX_TEXT + '…'.len_utf8()
        );
        let phases = timeline.finish("ok", None).unwrap();
        assert_eq!(phases.queued, Some(Duration::from_millis(3)));
        assert!(phases.planned.is_some() && phases.first_byte <= phases.total);
        assert!(timeline.finish("cancelled", None).is_none(), "ends once");
        let json = timeline.to_json();
        assert_eq!(json["status"], "succeeded");
        assert_eq!(json["rows"], 7);
        assert_eq!(json["attempts"], 1);
        assert_eq!(json["taskmanager"], "http://tm");
        assert_eq!(json["taskmanagers"][1], "http://tm2");
        assert!(json["phases"]["total_ms"].as_f64().unwrap() >= 0.0);
    }
}
