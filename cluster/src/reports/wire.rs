//! The two datagrams of load reporting, in a small fixed binary layout (little-endian, strings
//! prefixed by one length byte): a TaskManager's report to a shard, and a page of the shard
//! list a shard sends back when the TaskManager's list is out of date. Every datagram fits
//! [`MAX_DATAGRAM`] bytes, so nothing fragments on a 1,500-byte MTU.

use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};

/// Largest datagram sent or accepted, in bytes, sealed: below a 1,500-byte MTU with IP and UDP
/// headers.
pub const MAX_DATAGRAM: usize = 1400;

/// Largest encoded datagram before it is sealed.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - crate::keys::SEAL_OVERHEAD;

const MAGIC: [u8; 2] = [0xF7, 0x01];
const REPORT: u8 = 1;
const SHARDS: u8 = 2;

/// Shard addresses per [`ShardsPage`]: 64 IPv6 entries (19 bytes each) stay under the cap,
/// sealed.
pub const SHARDS_PER_PAGE: usize = 64;

/// What a TaskManager tells each shard, at least once a second.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// First 8 bytes of SHA-256 of the (keyed) cluster id: reports of another cluster are dropped.
    pub cluster: u64,
    /// The TaskManager's node id.
    pub id: String,
    /// Increases at every start of the process: a newer one replaces the older.
    pub generation: u64,
    /// Increases with every report of this generation: older ones arriving late are dropped.
    pub seq: u64,
    /// Its gRPC URL, where leases are asked.
    pub grpc_url: String,
    /// Its admin (HTTP) address, shown in `/v1/cluster`.
    pub admin_addr: String,
    /// Its pool.
    pub pool: String,
    /// Its version, shown in `/v1/cluster`.
    pub version: String,
    /// How its previous process ended, when a supervisor restarted it (empty: not known).
    pub previous_exit: String,
    /// Task slots in all.
    pub slots_total: u32,
    /// Task slots not leased.
    pub slots_free: u32,
    /// Results being streamed.
    pub in_flight: u32,
    /// Takes no new work.
    pub draining: bool,
    /// Not ready yet.
    pub starting: bool,
    /// [`shards_hash`] of the shard list the TaskManager reports to (0: none yet).
    pub shards_hash: u64,
}

/// One page of the shard list, sent by a shard to a TaskManager whose list differs from its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardsPage {
    /// Same as [`Report::cluster`].
    pub cluster: u64,
    /// [`shards_hash`] of the whole list.
    pub hash: u64,
    /// This page's index, from 0.
    pub page: u8,
    /// Pages in all.
    pub pages: u8,
    /// Report addresses of the shards on this page.
    pub shards: Vec<SocketAddr>,
}

/// A datagram of load reporting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datagram {
    /// TaskManager to shard.
    Report(Report),
    /// Shard to TaskManager.
    Shards(ShardsPage),
}

/// The tag of a cluster id in reports.
pub fn cluster_tag(cluster_id: &str) -> u64 {
    first_u64(&Sha256::digest(cluster_id.as_bytes()))
}

/// A hash of a shard list, the same in every process whatever the order (0 only when empty).
pub fn shards_hash(shards: &[SocketAddr]) -> u64 {
    if shards.is_empty() {
        return 0;
    }
    let mut sorted = shards.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut hasher = Sha256::new();
    for shard in &sorted {
        hasher.update(shard.to_string().as_bytes());
        hasher.update(b"\n");
    }
    first_u64(&hasher.finalize()).max(1)
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes)
}

impl Datagram {
    /// Encodes the datagram; None when it would not fit [`MAX_DATAGRAM`] (a string over 255
    /// bytes, or too many shards on a page).
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&MAGIC);
        match self {
            Self::Report(report) => {
                out.push(REPORT);
                out.extend_from_slice(&report.cluster.to_le_bytes());
                out.extend_from_slice(&report.generation.to_le_bytes());
                out.extend_from_slice(&report.seq.to_le_bytes());
                out.extend_from_slice(&report.shards_hash.to_le_bytes());
                for value in [report.slots_total, report.slots_free, report.in_flight] {
                    out.extend_from_slice(&value.to_le_bytes());
                }
                out.push(u8::from(report.draining) | (u8::from(report.starting) << 1));
                for text in [
                    &report.id,
                    &report.grpc_url,
                    &report.admin_addr,
                    &report.pool,
                    &report.version,
                    &report.previous_exit,
                ] {
                    put_str(&mut out, text)?;
                }
            }
            Self::Shards(page) => {
                out.push(SHARDS);
                out.extend_from_slice(&page.cluster.to_le_bytes());
                out.extend_from_slice(&page.hash.to_le_bytes());
                out.push(page.page);
                out.push(page.pages);
                out.push(u8::try_from(page.shards.len()).ok()?);
                for shard in &page.shards {
                    match shard.ip() {
                        IpAddr::V4(ip) => {
                            out.push(4);
                            out.extend_from_slice(&ip.octets());
                        }
                        IpAddr::V6(ip) => {
                            out.push(6);
                            out.extend_from_slice(&ip.octets());
                        }
                    }
                    out.extend_from_slice(&shard.port().to_le_bytes());
                }
            }
        }
        (out.len() <= MAX_PAYLOAD).then_some(out)
    }

    /// Decodes a datagram; None for anything malformed, truncated or of another protocol.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut cursor = Cursor(bytes);
        if cursor.take(2)? != MAGIC {
            return None;
        }
        let datagram = match cursor.u8()? {
            REPORT => {
                let cluster = cursor.u64()?;
                let generation = cursor.u64()?;
                let seq = cursor.u64()?;
                let shards_hash = cursor.u64()?;
                let slots_total = cursor.u32()?;
                let slots_free = cursor.u32()?;
                let in_flight = cursor.u32()?;
                let flags = cursor.u8()?;
                Self::Report(Report {
                    cluster,
                    generation,
                    seq,
                    shards_hash,
                    slots_total,
                    slots_free,
                    in_flight,
                    draining: flags & 1 != 0,
                    starting: flags & 2 != 0,
                    id: cursor.string()?,
                    grpc_url: cursor.string()?,
                    admin_addr: cursor.string()?,
                    pool: cursor.string()?,
                    version: cursor.string()?,
                    previous_exit: cursor.string()?,
                })
            }
            SHARDS => {
                let cluster = cursor.u64()?;
                let hash = cursor.u64()?;
                let page = cursor.u8()?;
                let pages = cursor.u8()?;
                let count = cursor.u8()?;
                let mut shards = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    let ip = match cursor.u8()? {
                        4 => IpAddr::from(<[u8; 4]>::try_from(cursor.take(4)?).ok()?),
                        6 => IpAddr::from(<[u8; 16]>::try_from(cursor.take(16)?).ok()?),
                        _ => return None,
                    };
                    let port = u16::from_le_bytes(cursor.take(2)?.try_into().ok()?);
                    shards.push(SocketAddr::new(ip, port));
                }
                Self::Shards(ShardsPage {
                    cluster,
                    hash,
                    page,
                    pages,
                    shards,
                })
            }
            _ => return None,
        };
        cursor.0.is_empty().then_some(datagram)
    }
}

/// Splits a shard list into the pages that carry it.
pub fn shard_pages(cluster: u64, shards: &[SocketAddr]) -> Vec<ShardsPage> {
    let hash = shards_hash(shards);
    let chunks: Vec<&[SocketAddr]> = shards.chunks(SHARDS_PER_PAGE).collect();
    let pages = u8::try_from(chunks.len().max(1)).unwrap_or(u8::MAX);
    if chunks.is_empty() {
        return vec![ShardsPage {
            cluster,
            hash,
            page: 0,
            pages,
            shards: Vec::new(),
        }];
    }
    chunks
        .into_iter()
        .take(usize::from(u8::MAX))
        .enumerate()
        .map(|(index, chunk)| ShardsPage {
            cluster,
            hash,
            page: index as u8,
            pages,
            shards: chunk.to_vec(),
        })
        .collect()
}

fn put_str(out: &mut Vec<u8>, text: &str) -> Option<()> {
    out.push(u8::try_from(text.len()).ok()?);
    out.extend_from_slice(text.as_bytes());
    Some(())
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.0.len() < count {
            return None;
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::from(self.u8()?);
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn report(id: &str) -> Report {
        Report {
            cluster: cluster_tag("flotilla"),
            id: id.to_string(),
            generation: 1_764_000_000_000_000,
            seq: 7,
            grpc_url: "http://10.0.0.12:50051".to_string(),
            admin_addr: "10.0.0.12:9464".to_string(),
            pool: "default".to_string(),
            version: "0.1.0".to_string(),
            previous_exit: String::new(),
            slots_total: 16,
            slots_free: 9,
            in_flight: 2,
            draining: false,
            starting: true,
            shards_hash: 42,
        }
    }

    #[test]
    fn datagrams_round_trip_and_stay_small() {
        let report = Datagram::Report(report("taskmanager-0042"));
        let bytes = report.encode().unwrap();
        assert!(bytes.len() < 128, "a report is {} bytes", bytes.len());
        assert_eq!(Datagram::decode(&bytes), Some(report));

        let shards: Vec<SocketAddr> = (0..150u16)
            .map(|index| {
                if index % 2 == 0 {
                    SocketAddr::from(([10, 0, (index >> 8) as u8, index as u8], 50051))
                } else {
                    SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, index], 50051))
                }
            })
            .collect();
        let pages = shard_pages(cluster_tag("flotilla"), &shards);
        assert_eq!(pages.len(), 3);
        let mut seen = Vec::new();
        for page in pages {
            let datagram = Datagram::Shards(page);
            let bytes = datagram.encode().unwrap();
            assert!(
                bytes.len() <= MAX_PAYLOAD,
                "a page is {} bytes",
                bytes.len()
            );
            let Some(Datagram::Shards(decoded)) = Datagram::decode(&bytes) else {
                panic!("page did not decode");
            };
            assert_eq!(decoded.hash, shards_hash(&shards));
            seen.extend(decoded.shards);
        }
        assert_eq!(seen, shards);
    }

    #[test]
    fn garbage_and_truncation_are_refused() {
        let bytes = Datagram::Report(report("tm")).encode().unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(Datagram::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Datagram::decode(&longer), None);
        assert_eq!(Datagram::decode(b"\x00\x00chitchat"), None);
        let mut long_id = report("tm");
        long_id.id = "x".repeat(300);
        assert_eq!(Datagram::Report(long_id).encode(), None);
    }

    #[test]
    fn the_shard_hash_ignores_order() {
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        let b = SocketAddr::from(([127, 0, 0, 1], 2));
        assert_eq!(shards_hash(&[a, b]), shards_hash(&[b, a]));
        assert_ne!(shards_hash(&[a]), shards_hash(&[a, b]));
        assert_eq!(shards_hash(&[]), 0);
    }
}
