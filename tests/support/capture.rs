//! Packet capture on one interface of a namespace with an AF_PACKET socket:
//! the IP packets a device sent and received, in order, without tcpdump and
//! without the flush races of a pcap file. The kernel queues a copy of each
//! packet on the socket as the device handles it, so after a `ping` returns,
//! [`Capture::drain`] sees every packet of that exchange.

use super::netns::NetNs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// linux/if_packet.h: a packet the device sent.
const PACKET_OUTGOING: u8 = 4;

/// asm-generic/socket.h; not exported by the libc crate for every target.
const SO_RCVBUFFORCE: libc::c_int = 33;

/// Socket receive buffer: room for a few thousand full-size packets between
/// drains (root may exceed net.core.rmem_max with SO_RCVBUFFORCE).
const CAPTURE_BUFFER_BYTES: libc::c_int = 32 << 20;

/// Largest packet read whole (veth and tun here use MTU 1500; GRO may merge
/// up to 64 KiB on veth).
const MAX_PACKET: usize = 65_536;

/// Reads per drain at most: more than the buffer can hold, so a drain ends
/// even while traffic keeps arriving.
const MAX_DRAIN_READS: usize = 100_000;

/// linux/if_ether.h.
const ETH_P_IP: u16 = 0x0800;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The device sent it.
    Outgoing,
    /// The device received it.
    Incoming,
}

/// One IPv4 packet as seen on the device (link header removed).
#[derive(Clone, Debug)]
pub struct Packet {
    pub direction: Direction,
    pub bytes: Vec<u8>,
}

/// An open capture; packets accumulate in order across drains.
pub struct Capture {
    fd: OwnedFd,
    interface: String,
    packets: Vec<Packet>,
}

impl Capture {
    /// Starts capturing IPv4 on `interface` of `ns`. Only packets handled
    /// after this returns are seen.
    pub fn start(ns: &NetNs, interface: &str) -> Result<Capture, String> {
        let name = std::ffi::CString::new(interface).map_err(|_| format!("bad interface name {interface:?}"))?;
        let fd = ns.run(|| -> Result<OwnedFd, String> {
            // SAFETY: plain socket creation; the fd is owned below.
            let raw = unsafe {
                libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
            };
            if raw < 0 {
                return Err(format!("AF_PACKET socket: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: `raw` is a fresh descriptor nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: `name` is a NUL-terminated string that outlives the call.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if index == 0 {
                return Err(format!("no interface {interface} in {}", ns.name()));
            }
            let size = CAPTURE_BUFFER_BYTES;
            // SAFETY: the option value is a c_int that lives across the call.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    SO_RCVBUFFORCE,
                    (&raw const size).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            // The socket was created with protocol 0, so it receives nothing
            // until bound here to one interface and every protocol.
            // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = index as i32;
            // SAFETY: `sll` is a valid sockaddr_ll of the length passed.
            let rc = unsafe {
                libc::bind(fd.as_raw_fd(), (&raw const sll).cast(), size_of::<libc::sockaddr_ll>() as libc::socklen_t)
            };
            if rc != 0 {
                return Err(format!("bind AF_PACKET to {interface}: {}", std::io::Error::last_os_error()));
            }
            Ok(fd)
        })??;
        Ok(Capture { fd, interface: interface.to_owned(), packets: Vec::new() })
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Reads everything queued so far; returns all packets since the start.
    pub fn drain(&mut self) -> &[Packet] {
        let mut buf = vec![0u8; MAX_PACKET];
        for _ in 0..MAX_DRAIN_READS {
            // SAFETY: as in `start`.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf` and `from` are writable for the lengths passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut from).cast(),
                    &mut from_len,
                )
            };
            let Ok(n) = usize::try_from(n) else { break }; // EAGAIN: drained
            if u16::from_be(from.sll_protocol) != ETH_P_IP {
                continue;
            }
            let direction = if from.sll_pkttype == PACKET_OUTGOING { Direction::Outgoing } else { Direction::Incoming };
            self.packets.push(Packet { direction, bytes: buf[..n.min(buf.len())].to_vec() });
        }
        &self.packets
    }

    /// Packets captured up to the last drain.
    pub fn packets(&self) -> &[Packet] {
        &self.packets
    }
}

/// One UDP datagram out of an IPv4 packet.
#[derive(Clone, Debug)]
pub struct UdpDatagram {
    pub direction: Direction,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// The UDP payload; for a first IP fragment only its part of it.
    pub payload: Vec<u8>,
    /// False for a first fragment (later fragments are not returned).
    pub complete: bool,
}

/// The UDP datagrams among `packets`, in order. Reassembly is left out: the
/// tests keep their datagrams below the path MTU and check `complete`.
pub fn udp_datagrams(packets: &[Packet]) -> Vec<UdpDatagram> {
    packets
        .iter()
        .filter_map(|p| {
            let ip = &p.bytes;
            if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
                return None;
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            let (more_fragments, offset) = (frag & 0x2000 != 0, frag & 0x1fff);
            if offset != 0 || total < ihl + 8 {
                return None;
            }
            let udp = &ip[ihl..total];
            let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
            let port = |at: usize| u16::from_be_bytes([udp[at], udp[at + 1]]);
            let udp_len = usize::from(port(4)).clamp(8, udp.len());
            Some(UdpDatagram {
                direction: p.direction,
                src: SocketAddrV4::new(addr(12), port(0)),
                dst: SocketAddrV4::new(addr(16), port(2)),
                payload: udp[8..if more_fragments { udp.len() } else { udp_len }].to_vec(),
                complete: !more_fragments,
            })
        })
        .collect()
}
