//! [`Auth`]: who is calling. Bearer tokens are kept as SHA-256 hashes; each names a tenant,
//! and admin tokens see every tenant.

use crate::config::AuthConfig;
use crate::error::GatewayError;
use flotilla_protocol::{DEFAULT_TENANT, TENANT_HEADER};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// What an endpoint asks of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone (`/healthz`, `/readyz`).
    Open,
    /// Any valid token.
    Tenant,
    /// An admin token.
    Admin,
}

/// The authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The token's tenant; `None` when authentication is off (the tenant header decides).
    pub(crate) tenant: Option<String>,
    /// Sees every tenant's queries.
    pub(crate) admin: bool,
}

impl Caller {
    /// The tenant this caller's query runs for: the token's (the tenant header may only repeat
    /// it); without authentication, the tenant header's, or the default tenant.
    pub(crate) fn tenant_for(&self, header: Option<&str>) -> Result<String, GatewayError> {
        match &self.tenant {
            Some(own) => match header.map(str::trim) {
                Some(asked) if !asked.is_empty() && asked != own.to_ascii_lowercase() => {
                    Err(GatewayError::NotAllowed(format!(
                        "the token is for tenant `{own}`, not `{asked}`"
                    )))
                }
                _ => Ok(own.clone()),
            },
            None => parse_tenant(header),
        }
    }

    /// Says whether this caller may see a query of `tenant`.
    pub(crate) fn sees(&self, tenant: &str) -> bool {
        self.admin || self.tenant.as_deref().is_none_or(|own| own == tenant)
    }
}

/// The token table.
pub(crate) struct Auth {
    enabled: bool,
    open_metrics: bool,
    open_admin: bool,
    tokens: HashMap<[u8; 32], Caller>,
}

impl Auth {
    /// Builds the table; a malformed hash or a token without a tenant is a config error.
    pub(crate) fn new(config: &AuthConfig) -> anyhow::Result<Self> {
        let mut tokens = HashMap::new();
        for (index, token) in config.tokens.iter().enumerate() {
            let hash = parse_hash(&token.sha256).ok_or_else(|| {
                anyhow::anyhow!("auth.tokens[{index}].sha256 must be 64 hex digits (SHA-256)")
            })?;
            if token.tenant.is_empty() {
                anyhow::bail!("auth.tokens[{index}].tenant is empty");
            }
            let caller = Caller {
                tenant: Some(token.tenant.clone()),
                admin: token.admin,
            };
            if tokens.insert(hash, caller).is_some() {
                anyhow::bail!("auth.tokens[{index}] repeats a token");
            }
        }
        if config.enabled && tokens.is_empty() {
            anyhow::bail!("auth.enabled is true but auth.tokens is empty");
        }
        Ok(Self {
            enabled: config.enabled,
            open_metrics: config.open_metrics,
            open_admin: config.open_admin,
            tokens,
        })
    }

    /// What `/metrics` and the admin endpoints ask for.
    pub(crate) fn metrics_access(&self) -> Access {
        if self.open_metrics {
            Access::Open
        } else {
            Access::Admin
        }
    }

    /// What `/v1/cluster` asks for.
    pub(crate) fn admin_access(&self) -> Access {
        if self.open_admin {
            Access::Open
        } else {
            Access::Admin
        }
    }

    /// Identifies the caller of a request that needs `access`.
    pub(crate) fn check(
        &self,
        headers: &http::HeaderMap,
        access: Access,
    ) -> Result<Caller, GatewayError> {
        if !self.enabled || access == Access::Open {
            return Ok(Caller {
                tenant: None,
                admin: !self.enabled,
            });
        }
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                GatewayError::Unauthorized("send `Authorization: Bearer <token>`".into())
            })?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let caller =
            self.tokens.get(&hash).cloned().ok_or_else(|| {
                GatewayError::Unauthorized("the bearer token is not valid".into())
            })?;
        if access == Access::Admin && !caller.admin {
            return Err(GatewayError::NotAllowed(
                "this endpoint needs an admin token".into(),
            ));
        }
        Ok(caller)
    }
}

/// Reads the tenant header: absent means the default tenant; a name is 1-64 characters of
/// `A-Z a-z 0-9 . _ -`.
fn parse_tenant(header: Option<&str>) -> Result<String, GatewayError> {
    let Some(tenant) = header.map(str::trim).filter(|tenant| !tenant.is_empty()) else {
        return Ok(DEFAULT_TENANT.to_string());
    };
    let valid = tenant.len() <= 64
        && tenant
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if !valid {
        return Err(GatewayError::BadRequest(format!(
            "{TENANT_HEADER} must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
        )));
    }
    Ok(tenant.to_string())
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (index, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    fn sha256_hex(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    fn headers(authorization: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn tokens_name_tenants_and_admins_see_all() {
        let auth = Auth::new(&AuthConfig {
            enabled: true,
            tokens: vec![
                TokenConfig {
                    sha256: sha256_hex("alpha-token"),
                    tenant: "alpha".into(),
                    admin: false,
                },
                TokenConfig {
                    sha256: sha256_hex("root-token").to_uppercase(),
                    tenant: "ops".into(),
                    admin: true,
                },
            ],
            ..AuthConfig::default()
        })
        .unwrap();
        let alpha = auth
            .check(&headers("Bearer alpha-token"), Access::Tenant)
            .unwrap();
        assert_eq!(alpha.tenant.as_deref(), Some("alpha"));
        assert!(alpha.sees("alpha") && !alpha.sees("beta"));
        let refused = |value: &str, access| auth.check(&headers(value), access).unwrap_err().code();
        use flotilla_protocol::ErrorCode;
        assert_eq!(
            refused("Bearer wrong", Access::Tenant),
            ErrorCode::Unauthorized
        );
        assert_eq!(
            refused("Basic alpha-token", Access::Tenant),
            ErrorCode::Unauthorized
        );
        assert_eq!(refused("Bearer ", Access::Tenant), ErrorCode::Unauthorized);
        assert_eq!(
            refused("Bearer alpha-token", Access::Admin),
            ErrorCode::NotAllowed
        );
        assert_eq!(
            auth.check(&http::HeaderMap::new(), Access::Tenant)
                .unwrap_err()
                .code(),
            ErrorCode::Unauthorized
        );
        let root = auth
            .check(&headers("bearer root-token"), Access::Admin)
            .unwrap();
        assert!(root.sees("alpha") && root.sees("beta"));
        assert!(auth.check(&http::HeaderMap::new(), Access::Open).is_ok());
    }

    #[test]
    fn bad_configs_are_refused_and_off_means_open() {
        let bad = |sha256: &str, tenant: &str| {
            Auth::new(&AuthConfig {
                enabled: true,
                tokens: vec![TokenConfig {
                    sha256: sha256.into(),
                    tenant: tenant.into(),
                    admin: false,
                }],
                ..AuthConfig::default()
            })
            .is_err()
        };
        assert!(bad("abc", "t"));
        assert!(bad(&"g".repeat(64), "t"));
        assert!(bad(&sha256_hex("x"), ""));
        assert!(
            Auth::new(&AuthConfig {
                enabled: true,
                ..AuthConfig::default()
            })
            .is_err()
        );
        let off = Auth::new(&AuthConfig::default()).unwrap();
        let caller = off.check(&http::HeaderMap::new(), Access::Admin).unwrap();
        assert!(caller.tenant.is_none() && caller.sees("anyone"));
    }
}
