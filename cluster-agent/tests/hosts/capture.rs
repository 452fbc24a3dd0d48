//! Recording the switch: `tcpdump` on every link in the switch's namespace (so every frame
//! between the test hosts), read back from its pcap file.

use super::net::World;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

/// A running recording; [`Capture::stop`] ends it and reads it.
pub struct Capture {
    child: Child,
    path: PathBuf,
    /// Its standard error, kept open (it reports its counts there as it stops).
    _stderr: BufReader<std::process::ChildStderr>,
}

/// One frame of a recording.
pub struct Frame {
    /// The whole frame as recorded.
    pub bytes: Vec<u8>,
    /// When it is an IPv4 UDP datagram: from, to and its payload.
    pub udp: Option<(SocketAddrV4, SocketAddrV4, Vec<u8>)>,
    /// When it is an IPv4 TCP segment: its destination port.
    pub tcp_to: Option<u16>,
}

impl World {
    /// Starts recording every frame that crosses the switch into `dir`; returns once `tcpdump`
    /// listens. Under CI a missing `tcpdump` fails (`scripts/install-test-hosts` installs it).
    pub fn capture(&self, dir: &Path) -> Capture {
        let path = dir.join("switch.pcap");
        let mut child = self
            .switch_command("tcpdump")
            .args(["-i", "any", "-n", "-U", "-s", "0", "-Z", "root", "-w"])
            .arg(&path)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("tcpdump runs (scripts/install-test-hosts installs it)");
        // It says which link type it records, then that it listens.
        let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
        let mut said = String::new();
        for _ in 0..5 {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                break;
            }
            said.push_str(&line);
            if line.contains("listening") {
                return Capture {
                    child,
                    path,
                    _stderr: stderr,
                };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("tcpdump did not start: {said}");
    }
}

impl Capture {
    /// Stops the recording (SIGINT: tcpdump writes out what it holds) and reads its frames.
    pub fn stop(mut self) -> Vec<Frame> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.child.wait();
        let bytes = std::fs::read(&self.path).unwrap();
        read_pcap(&bytes)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn u16_be(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn u32_le(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// The frames of a little-endian pcap file of Linux cooked captures (what `-i any` records:
/// SLL, link type 113, or SLL2, 276) or Ethernet (1).
fn read_pcap(file: &[u8]) -> Vec<Frame> {
    assert!(file.len() >= 24, "no pcap header");
    assert_eq!(u32_le(file, 0), 0xa1b2_c3d4, "a little-endian pcap");
    let link_type = u32_le(file, 20);
    let (header, protocol_at) = match link_type {
        1 => (14, 12),
        113 => (16, 14),
        276 => (20, 0),
        other => panic!("link type {other} not read here"),
    };
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= file.len() {
        let length = u32_le(file, at + 8) as usize;
        let Some(bytes) = file.get(at + 16..at + 16 + length) else {
            break;
        };
        at += 16 + length;
        let mut frame = Frame {
            bytes: bytes.to_vec(),
            udp: None,
            tcp_to: None,
        };
        if bytes.len() > header + 20 && u16_be(bytes, protocol_at) == 0x0800 {
            let ip = &bytes[header..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let source = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let destination = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            match ip[9] {
                17 if ip.len() >= ihl + 8 => {
                    let udp = &ip[ihl..];
                    let end = usize::from(u16_be(udp, 4)).min(udp.len());
                    frame.udp = Some((
                        SocketAddrV4::new(source, u16_be(udp, 0)),
                        SocketAddrV4::new(destination, u16_be(udp, 2)),
                        udp[8..end].to_vec(),
                    ));
                }
                6 if ip.len() >= ihl + 4 => frame.tcp_to = Some(u16_be(&ip[ihl..], 2)),
                _ => {}
            }
        }
        frames.push(frame);
    }
    frames
}
