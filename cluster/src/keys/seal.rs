//! Sealed datagrams: every gossip datagram, load report and shard list is encrypted and
//! authenticated with its traffic's key (XChaCha20-Poly1305) and carries its send time. The
//! 192-bit nonce is the send time (ms) and 128 random bits: it never repeats in practice,
//! however many members send under one key, and the time needs no bytes of its own (a changed
//! nonce fails the tag like a changed byte). 43 bytes in all, so a report stays near 160.
//!
//! ```text
//!  F5 │ key id (2) │ nonce: send time (8, ms) + random (16) │ sealed payload │ tag (16)
//!  └─ authenticated ┘
//! ```

use super::{Keyring, MAX_SKEW_MS, Refused, Secrets, Traffic};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use ring::rand::{SecureRandom, SystemRandom};

/// The first byte of a sealed datagram: its format (neither chitchat's magic nor a report's).
const MAGIC: u8 = 0xF5;
const KEY_ID: usize = 2;
const AAD: usize = 1 + KEY_ID;
const TIME: usize = 8;
const NONCE: usize = 24;
const HEADER: usize = AAD + NONCE;
const TAG: usize = 16;

/// Bytes a seal adds to a payload.
pub const SEAL_OVERHEAD: usize = HEADER + TAG;

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
        nonce[..TIME].copy_from_slice(&now_ms.to_le_bytes());
        self.random
            .fill(&mut nonce[TIME..])
            .expect("the system's random source works");
        let mut out = Vec::with_capacity(payload.len() + SEAL_OVERHEAD);
        out.push(MAGIC);
        out.extend_from_slice(&keys.first().id[..KEY_ID]);
        out.extend_from_slice(&nonce);
        let sealed = ciphers[0]
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: payload,
                    aad: &out[..AAD],
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
        self.open_within(datagram, now_ms, MAX_SKEW_MS)
    }

    /// Opens `datagram` as [`Self::open`] does, but accepts it for `max_age_ms` after it was
    /// sealed (plus the clock skew [`MAX_SKEW_MS`] allows): for what a client holds a while, a
    /// Flight SQL ticket.
    pub fn open_within(
        &self,
        datagram: &[u8],
        now_ms: u64,
        max_age_ms: u64,
    ) -> Result<Opened, Refused> {
        let Some((keys, ciphers)) = &self.keys else {
            return Ok(Opened {
                payload: datagram.to_vec(),
                sent_ms: now_ms,
                nonce: [0; NONCE],
            });
        };
        if datagram.len() < SEAL_OVERHEAD || datagram[0] != MAGIC {
            return Err(keys.refuse(Refused::Unsealed));
        }
        let key_id = &datagram[1..AAD];
        let mut nonce = [0u8; NONCE];
        nonce.copy_from_slice(&datagram[AAD..HEADER]);
        // Two secrets may share a 2-byte id: each is tried.
        let mut known = false;
        for (key, cipher) in keys.keys.iter().zip(ciphers) {
            if key.id[..KEY_ID] != *key_id {
                continue;
            }
            known = true;
            let Ok(payload) = cipher.decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &datagram[HEADER..],
                    aad: &datagram[..AAD],
                },
            ) else {
                continue;
            };
            let mut time = [0u8; TIME];
            time.copy_from_slice(&nonce[..TIME]);
            let sent_ms = u64::from_le_bytes(time);
            let from_future = sent_ms > now_ms.saturating_add(MAX_SKEW_MS);
            if from_future || now_ms > sent_ms.saturating_add(max_age_ms.max(MAX_SKEW_MS)) {
                return Err(keys.refuse(Refused::Stale));
            }
            return Ok(Opened {
                payload,
                sent_ms,
                nonce,
            });
        }
        Err(keys.refuse(if known {
            Refused::Forged
        } else {
            Refused::UnknownKey
        }))
    }

    /// Counts a replay refused by the caller.
    pub fn refuse_replay(&self) {
        if let Some((keys, _)) = &self.keys {
            keys.refuse(Refused::Replayed);
        }
    }
}
