//! Signed internal calls: instead of the secret, every internal gRPC call carries a signature
//! (HMAC-SHA256 with the calls key) over its method, its query id, its time and a fresh nonce.
//! The callee checks it, refuses a time further than [`MAX_SKEW_MS`] from its clock and a
//! nonce it has seen: a recorded call cannot be played again, and nothing on the wire lets
//! anyone sign another.
//!
//! ```text
//!  x-flotilla-cluster-auth: <key id, 8 hex>.<time, ms>.<nonce, 32 hex>.<HMAC, 64 hex>
//!  HMAC over "flotilla call v1\n<path>\n<query id>\n<time>\n<nonce>"
//! ```

use super::{Keyring, MAX_SKEW_MS, Refused, ReplayWindow, Secrets, Traffic};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::{Arc, Mutex};

/// The header an internal call's signature travels in.
pub const AUTH_HEADER: &str = "x-flotilla-cluster-auth";

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

fn message(path: &str, query_id: &str, time_ms: u64, nonce: &str) -> String {
    format!("flotilla call v1\n{path}\n{query_id}\n{time_ms}\n{nonce}")
}

/// Signs outgoing calls with the first secret's calls key (nothing without a secret).
#[derive(Clone)]
pub struct CallSigner {
    key: Option<([u8; 4], hmac::Key)>,
    random: SystemRandom,
}

impl std::fmt::Debug for CallSigner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "CallSigner(signs: {})", self.key.is_some())
    }
}

impl CallSigner {
    /// The signer of a process holding `secrets`.
    pub fn new(secrets: &Secrets) -> Self {
        let key = Keyring::new(secrets, Traffic::Calls).map(|keys| {
            let first = keys.first();
            (first.id, hmac::Key::new(hmac::HMAC_SHA256, &first.bytes))
        });
        Self {
            key,
            random: SystemRandom::new(),
        }
    }

    /// The signature of a call to `path` (`/package.Service/Method`) for `query_id` (empty when
    /// none) at `now_ms`; `None` without a secret.
    pub fn sign(&self, path: &str, query_id: &str, now_ms: u64) -> Option<String> {
        let (id, key) = self.key.as_ref()?;
        let mut nonce = [0u8; 16];
        self.random
            .fill(&mut nonce)
            .expect("the system's random source works");
        let nonce = hex(&nonce);
        let tag = hmac::sign(key, message(path, query_id, now_ms, &nonce).as_bytes());
        Some(format!(
            "{}.{now_ms}.{nonce}.{}",
            hex(id),
            hex(tag.as_ref())
        ))
    }
}

/// Checks incoming calls' signatures against every accepted secret, and refuses replays.
#[derive(Clone)]
pub struct CallVerifier {
    keys: Option<(Keyring, Arc<[hmac::Key]>)>,
    seen: Arc<Mutex<ReplayWindow>>,
}

impl std::fmt::Debug for CallVerifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "CallVerifier(checks: {})", self.keys.is_some())
    }
}

impl CallVerifier {
    /// The verifier of a process holding `secrets`.
    pub fn new(secrets: &Secrets) -> Self {
        let keys = Keyring::new(secrets, Traffic::Calls).map(|keys| {
            let macs = keys
                .keys
                .iter()
                .map(|key| hmac::Key::new(hmac::HMAC_SHA256, &key.bytes))
                .collect();
            (keys, macs)
        });
        Self {
            keys,
            seen: Arc::new(Mutex::new(ReplayWindow::new(super::unix_ms()))),
        }
    }

    /// Says whether calls are checked (a secret is set).
    pub fn is_set(&self) -> bool {
        self.keys.is_some()
    }

    /// Checks the signature `presented` of a call to `path` for `query_id`, received at
    /// `now_ms`; a refusal is counted.
    pub fn verify(
        &self,
        path: &str,
        query_id: &str,
        presented: Option<&str>,
        now_ms: u64,
    ) -> Result<(), Refused> {
        let Some((keys, macs)) = &self.keys else {
            return Ok(());
        };
        let Some(presented) = presented else {
            return Err(keys.refuse(Refused::Unsealed));
        };
        let mut parts = presented.split('.');
        let (Some(id), Some(time), Some(nonce), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(keys.refuse(Refused::Unsealed));
        };
        let (Some(id), Ok(time_ms), Some(nonce_bytes), Some(tag)) =
            (unhex(id), time.parse::<u64>(), unhex(nonce), unhex(tag))
        else {
            return Err(keys.refuse(Refused::Unsealed));
        };
        let Some(index) = keys.keys.iter().position(|key| key.id[..] == id[..]) else {
            return Err(keys.refuse(Refused::UnknownKey));
        };
        hmac::verify(
            &macs[index],
            message(path, query_id, time_ms, nonce).as_bytes(),
            &tag,
        )
        .map_err(|_| keys.refuse(Refused::Forged))?;
        if time_ms.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err(keys.refuse(Refused::Stale));
        }
        let first_time = self
            .seen
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .first_time(&nonce_bytes, now_ms);
        if !first_time {
            return Err(keys.refuse(Refused::Replayed));
        }
        Ok(())
    }
}
