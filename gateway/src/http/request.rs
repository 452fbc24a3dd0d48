//! Reading a query request: headers (timeout, tenant), the SQL body (text or JSON) and what is
//! left of a refused body.

use crate::error::GatewayError;
use bytes::Bytes;
use http::Request;
use http_body::Body;
use http_body_util::BodyExt;

/// Reads and discards what is left of a refused request body (at most 4 × the limit plus
/// 1 MiB, for at most 2 s), so that closing the connection after the error response does not
/// reset it before the client has read that response.
pub(super) async fn drain<B>(mut body: B, limit: usize)
where
    B: Body<Data = Bytes> + Unpin,
{
    let budget = limit.saturating_mul(4).saturating_add(1024 * 1024);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let mut discarded = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                discarded += data.len();
                if discarded > budget {
                    break;
                }
            }
        }
    })
    .await;
}

pub(super) fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

pub(super) fn header_text<B>(
    request: &Request<B>,
    name: impl http::header::AsHeaderName,
) -> Result<Option<String>, GatewayError> {
    match request.headers().get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|text| Some(text.trim().to_ascii_lowercase()))
            .map_err(|_| GatewayError::BadRequest("a header is not visible ASCII".into())),
    }
}

/// Reads the SQL from a text or JSON body.
pub(super) fn parse_sql(body: &[u8], is_json: bool) -> Result<String, GatewayError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| GatewayError::BadRequest("the request body is not UTF-8".into()))?;
    let sql = if is_json {
        // An object with a string `sql`; serde would also take `["..."]` for the struct.
        let bad = |why: String| {
            GatewayError::BadRequest(format!("JSON body must be {{\"sql\": \"...\"}}: {why}"))
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|error| bad(error.to_string()))?;
        match value.get("sql") {
            Some(serde_json::Value::String(sql)) if value.is_object() => sql.clone(),
            Some(_) => return Err(bad("`sql` is not a string".into())),
            None => return Err(bad("no `sql` field".into())),
        }
    } else {
        text.to_string()
    };
    if sql.trim().is_empty() {
        return Err(GatewayError::BadRequest("the request has no SQL".into()));
    }
    Ok(sql)
}
