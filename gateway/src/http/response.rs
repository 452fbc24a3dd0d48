//! Fixed responses: text, JSON and the JSON error document with its headers.

use super::handler::ResponseBody;
use bytes::Bytes;
use flotilla_protocol::{ErrorBody, QUERY_ID_HEADER, QueryId};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

pub(super) fn insert_header(headers: &mut http::HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(http::HeaderName::from_static(name), value);
    }
}

pub(super) fn full(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

pub(super) fn text_response(status: StatusCode, text: &str) -> Response<ResponseBody> {
    let mut response = full(status, Bytes::from(text.to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

pub(super) fn json_response(
    status: StatusCode,
    value: &serde_json::Value,
) -> Response<ResponseBody> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = full(status, Bytes::from(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub(super) fn error_response(
    query_id: Option<QueryId>,
    error: &ErrorBody,
    status: StatusCode,
) -> Response<ResponseBody> {
    let mut body = error.clone();
    body.query_id = query_id;
    let mut response = full(status, Bytes::from(body.to_json()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(query_id) = query_id {
        insert_header(
            response.headers_mut(),
            QUERY_ID_HEADER,
            &query_id.to_string(),
        );
    }
    if error.code.is_backpressure() {
        // Queues drain in about a second at the rates Flotilla is sized for.
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
