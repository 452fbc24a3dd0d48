//! Who is calling over Flight SQL: the handshake (HTTP Basic, whose password is a token)
//! answers with `authorization: Bearer <token>`, and every call carries that bearer token, or
//! one the client was given, mapped to a tenant exactly as on HTTP.

use super::state::FlightSql;
use crate::auth::{Access, Caller};
use crate::error::GatewayError;
use arrow_flight::HandshakeResponse;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use futures::stream::BoxStream;
use tonic::metadata::MetadataMap;
use tonic::{Response, Status};

/// Standard base64, padded or not (ADBC sends it unpadded).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl FlightSql {
    /// Identifies the caller of a call (any valid token; anyone when authentication is off).
    pub(super) fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let headers = metadata.clone().into_headers();
        self.inner
            .auth
            .check(&headers, Access::Tenant)
            .map_err(|error| client_status(&error))
    }

    /// The handshake: takes `authorization: Basic base64(user:token)` (or a bearer token),
    /// checks the token, and answers with it as `authorization: Bearer <token>`.
    pub(super) fn handshake(
        &self,
        metadata: &MetadataMap,
    ) -> Result<Response<BoxStream<'static, Result<HandshakeResponse, Status>>>, Status> {
        let presented = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::trim);
        let token = match presented.and_then(|value| value.split_once(' ')) {
            Some((scheme, credentials)) if scheme.eq_ignore_ascii_case("basic") => {
                Some(basic_password(credentials.trim())?)
            }
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Some(token.trim().to_string())
            }
            _ => None,
        };
        let mut checked = MetadataMap::new();
        if let Some(token) = &token {
            let bearer = format!("Bearer {token}");
            let value = bearer
                .parse()
                .map_err(|_| Status::unauthenticated("unauthorized: the token is not ASCII"))?;
            checked.insert("authorization", value);
        }
        self.caller(&checked)?;
        let payload = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().unwrap_or_default().into_bytes().into(),
        };
        let mut response = Response::new(Box::pin(futures::stream::iter([Ok(payload)]))
            as BoxStream<'static, Result<HandshakeResponse, Status>>);
        if let Some(value) = checked.get("authorization") {
            response
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(response)
    }
}

/// The password of `base64(user:password)`: the token. A token alone (no colon) is taken too.
fn basic_password(credentials: &str) -> Result<String, Status> {
    let refuse = || Status::unauthenticated("unauthorized: malformed Basic credentials");
    let decoded = BASE64.decode(credentials).map_err(|_| refuse())?;
    let text = String::from_utf8(decoded).map_err(|_| refuse())?;
    Ok(match text.split_once(':') {
        Some((_user, password)) => password.to_string(),
        None => text,
    })
}

/// The status a client gets for a gateway error: the gRPC code, the stable code first in the
/// message.
pub(super) fn client_status(error: &GatewayError) -> Status {
    error.to_body().to_client_status()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode_padded_or_not() {
        let padded = base64::engine::general_purpose::STANDARD.encode("user:token1");
        assert!(padded.ends_with('='));
        assert_eq!(basic_password(&padded).unwrap(), "token1");
        assert_eq!(
            basic_password(padded.trim_end_matches('=')).unwrap(),
            "token1"
        );
        let bare = base64::engine::general_purpose::STANDARD_NO_PAD.encode("tok2");
        assert_eq!(basic_password(&bare).unwrap(), "tok2");
        assert_eq!(
            basic_password("%%%").unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
