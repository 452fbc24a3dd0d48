//! Sealed datagrams: every gossip datagram, load report and shard list is encrypted and
//! authenticated with its traffic's key (XChaCha20-Poly1305: random 192-bit nonces never
//! repeat in practice, however many members send under one key) and carries its send time.
//!
//! ```text
//!  F7 5E │ 01 │ key id (4) │ nonce (24) │ sealed: send time (8, ms) + payload │ tag (16)
//!  └──── authenticated, in clear ────┘
//! ```

use super::{Keyring, MAX_SKEW_MS, Refused, Secrets, Traffic};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use ring::rand::{SecureRandom, SystemRandom};

const MAGIC: [u8; 2] = [0xF7, 0x5E];
const VERSION: u8 = 1;
const KEY_ID: usize = 4;
const NONCE: usize = 24;
const HEADER: usize = MAGIC.len() + 1 + KEY_ID + NONCE;
const TAG: usize = 16;
const TIME: usize = 8;

/// Bytes a seal adds to a payload.
pub const SEAL_OVERHEAD: usize = HEADER + TIME + TAG;

/// What an opened datagram held.
#[derive(Debug)]
pub struct Opened {
    /// The payload.
    pub payload: Vec<u8>,
    /// When the sender sealed it (its clock, ms since the Unix epoch).
    pub sent_ms: u64,
    /// Its nonce, for a [`super::ReplayWindow`].
    pub nonce: [u8; NONCE],
}

/// Seals and opens the datagrams of one traffic. Without a secret it passes payloads through
/// unchanged (the cluster runs open, as `cluster.secret` documents).
#[derive(Clone)]
pub struct Sealer {
    keys: Option<(Keyring, Vec<XChaCha20Poly1305>)>,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sealer")
            .field("keys", &self.keys.as_ref().map(|(keys, _)| keys))
            .finish()
    }
}

impl Sealer {
    /// The sealer of `traffic` under `secrets`.
    pub fn new(secrets: &Secrets, traffic: Traffic) -> Self {
        let keys = Keyring::new(secrets, traffic).map(|keys| {
            let ciphers = keys
                .keys
                .iter()
                .map(|key| XChaCha20Poly1305::new((&key.bytes).into()))
                .collect();
            (keys, ciphers)
        });
        Self {
            keys,
            random: SystemRandom::new(),
        }
    }

    /// A sealer that passes everything through (no secret).
    pub fn open_cluster() -> Self {
        Self::new(&Secrets::default(), Traffic::Gossip)
    }

    /// Says whether datagrams are sealed.
    pub fn is_sealed(&self) -> bool {
        self.keys.is_some()
    }

    /// Seals `payload`, sent at `now_ms`.
    pub fn seal(&self, payload: &[u8], now_ms: u64) -> Vec<u8> {
        let Some((keys, ciphers)) = &self.keys else {
            return payload.to_vec();
        };
        let mut nonce = [0u8; NONCE];
        self.random
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut out = Vec::with_capacity(payload.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&keys.first().id);
        out.extend_from_slice(&nonce);
        let mut plain = Vec::with_capacity(TIME + payload.len());
        plain.extend_from_slice(&now_ms.to_le_bytes());
        plain.extend_from_slice(payload);
        let sealed = ciphers[0]
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &out[..MAGIC.len() + 1 + KEY_ID],
                },
            )
            .expect("XChaCha20-Poly1305 seals any length a datagram has");
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens `datagram`, received at `now_ms`: refused (and counted) unless sealed by a key of
    /// this cluster within [`MAX_SKEW_MS`] of now. Replays are the caller's to refuse (with a
    /// [`super::ReplayWindow`] or the protocol's own sequence numbers).
    pub fn open(&self, datagram: &[u8], now_ms: u64) -> Result<Opened, Refused> {
        let Some((keys, ciphers)) = &self.keys else {
            return Ok(Opened {
                payload: datagram.to_vec(),
                sent_ms: now_ms,
                nonce: [0; NONCE],
            });
        };
        if datagram.len() < SEAL_OVERHEAD
            || datagram[..MAGIC.len()] != MAGIC
            || datagram[MAGIC.len()] != VERSION
        {
            return Err(keys.refuse(Refused::Unsealed));
        }
        let aad_end = MAGIC.len() + 1 + KEY_ID;
        let key_id = &datagram[MAGIC.len() + 1..aad_end];
        let Some(index) = keys.keys.iter().position(|key| key.id == key_id) else {
            return Err(keys.refuse(Refused::UnknownKey));
        };
        let mut nonce = [0u8; NONCE];
        nonce.copy_from_slice(&datagram[aad_end..HEADER]);
        let plain = ciphers[index]
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &datagram[HEADER..],
                    aad: &datagram[..aad_end],
                },
            )
            .map_err(|_| keys.refuse(Refused::Forged))?;
        let mut time = [0u8; TIME];
        time.copy_from_slice(&plain[..TIME]);
        let sent_ms = u64::from_le_bytes(time);
        if sent_ms.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err(keys.refuse(Refused::Stale));
        }
        Ok(Opened {
            payload: plain[TIME..].to_vec(),
            sent_ms,
            nonce,
        })
    }

    /// Counts a replay refused by the caller.
    pub fn refuse_replay(&self) {
        if let Some((keys, _)) = &self.keys {
            keys.refuse(Refused::Replayed);
        }
    }
}
