//! Chitchat over sealed UDP: every gossip datagram is sealed with the cluster's gossip key
//! ([`crate::keys::Sealer`]); one that does not open, is stale or was seen before is dropped
//! and counted before chitchat parses it.
//!
//! Chitchat 0.13 keeps its wire encoding crate-private (only whole sockets are public), so its
//! own [`chitchat::transport::UdpSocket`] serves as the codec, over loopback inside this
//! process:
//!
//! ```text
//!  send:  envelope ─▶ codec socket ──loopback──▶ pipe ─▶ seal ─▶ public socket ─▶ peer
//!  recv:  peer ─▶ public socket ─▶ open ─▶ pipe ──loopback──▶ codec socket ─▶ envelope
//! ```
//! Both loopback sockets take datagrams only from each other (anything else reaching their
//! ports is dropped). Without a secret the plain bytes go through the same path.

use crate::keys::{ReplayWindow, Sealer, unix_ms};
use anyhow::Context;
use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};
use std::net::SocketAddr;
use std::time::Duration;

/// Largest UDP payload.
const MAX_PAYLOAD: usize = 65_507;
/// Longest wait for the codec's loopback hop (it is immediate unless this process stalls).
const HOP: Duration = Duration::from_millis(500);

/// Chitchat's transport: UDP, sealed.
pub(crate) struct SealedUdp(pub(crate) Sealer);

#[async_trait]
impl Transport for SealedUdp {
    async fn open(&self, listen: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let public = tokio::net::UdpSocket::bind(listen)
            .await
            .with_context(|| format!("failed to bind to {listen}/UDP for gossip"))?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let codec = UdpSocket::open(loopback).await?;
        let pipe = tokio::net::UdpSocket::bind(loopback).await?;
        Ok(Box::new(SealedSocket {
            codec_addr: codec.local_addr()?,
            pipe_addr: pipe.local_addr()?,
            public,
            codec,
            pipe,
            sealer: self.0.clone(),
            buf: vec![0u8; MAX_PAYLOAD],
            seen: ReplayWindow::new(unix_ms()),
            decoding: None,
        }))
    }
}

struct SealedSocket {
    public: tokio::net::UdpSocket,
    codec: UdpSocket,
    codec_addr: SocketAddr,
    pipe: tokio::net::UdpSocket,
    pipe_addr: SocketAddr,
    sealer: Sealer,
    buf: Vec<u8>,
    seen: ReplayWindow,
    /// The sender and size of an opened datagram handed to the codec and not decoded yet:
    /// chitchat cancels `recv` whenever its gossip timer fires, and the next call picks it up.
    decoding: Option<(SocketAddr, usize)>,
}

impl SealedSocket {
    /// Receives the next datagram the codec sent into the pipe (its encoding of an envelope).
    async fn encoded(&mut self) -> anyhow::Result<usize> {
        loop {
            let (len, from) = tokio::time::timeout(HOP, self.pipe.recv_from(&mut self.buf))
                .await
                .context("the gossip codec did not answer")??;
            if from == self.codec_addr {
                return Ok(len);
            }
        }
    }

    /// Decodes what was handed to the codec; None when it was no envelope.
    async fn decoded(&mut self) -> anyhow::Result<Option<RecvOutcome>> {
        let Some((from_addr, size)) = self.decoding else {
            return Ok(None);
        };
        loop {
            match tokio::time::timeout(HOP, self.codec.recv()).await {
                Ok(outcome) => {
                    let outcome = outcome?;
                    if outcome.from_addr != self.pipe_addr {
                        continue;
                    }
                    self.decoding = None;
                    return Ok(Some(RecvOutcome {
                        from_addr,
                        envelope: outcome.envelope,
                        num_bytes_received: size,
                    }));
                }
                // Sealed by a member, yet no chitchat message: the codec dropped it.
                Err(_) => {
                    self.decoding = None;
                    return Ok(None);
                }
            }
        }
    }
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.public
            .local_addr()
            .context("failed to get UDP socket address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        self.codec.send(self.pipe_addr, envelope).await?;
        let len = self.encoded().await?;
        let sealed = self.sealer.seal(&self.buf[..len], unix_ms());
        if sealed.len() > MAX_PAYLOAD {
            // Chitchat fills a datagram up to the UDP limit; the seal's bytes then do not fit.
            // Only a gossip state far beyond gateways and shards gets there (see SCALE.md).
            tracing::warn!(
                bytes = sealed.len(),
                "a sealed gossip datagram exceeds the UDP limit; not sent"
            );
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        let num_bytes_sent = self
            .public
            .send_to(&sealed, to)
            .await
            .context("failed to send chitchat message to peer")?;
        Ok(SendOutcome { num_bytes_sent })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some(outcome) = self.decoded().await? {
                return Ok(outcome);
            }
            let (len, from) = match self.public.recv_from(&mut self.buf).await {
                Ok(received) => received,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::OutOfMemory
                    ) =>
                {
                    continue;
                }
                Err(error) => return Err(error).context("fatal UDP recv error"),
            };
            let now = unix_ms();
            let Ok(opened) = self.sealer.open(&self.buf[..len], now) else {
                continue;
            };
            if self.sealer.is_sealed() && !self.seen.first_time(&opened.nonce, now) {
                self.sealer.refuse_replay();
                continue;
            }
            self.pipe.send_to(&opened.payload, self.codec_addr).await?;
            self.decoding = Some((from, len));
        }
    }
}
