//! The control channel between OpenVPN and the peer: received control
//! packets waiting for a ReadFile, and the bytes of one WriteFile.
//!
//! In MP mode each packet travels with the peer's transport address in
//! front of it, as a bare SOCKADDR_IN (16 bytes) or SOCKADDR_IN6 (28 bytes)
//! chosen by `sa_family` at offset 0, with no padding or length field
//! (OpenVPN socket.c `read_sockaddr_from_packet`, `link_socket_write_win32`).

use alloc::boxed::Box;
use alloc::vec;
use core::mem::{offset_of, size_of};
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::ntstatus::NtStatus;
use crate::uapi::types::{AF_INET, AF_INET6, SockAddrIn, SockAddrIn6};

/// Longest control packet a write may carry: ovpn-dco-win's
/// `OVPN_DCO_MTU_MAX`, "the cap a write is refused past" (its ioctl test).
pub const CONTROL_WRITE_MAX: usize = 1500;

/// Largest received control packet including the MP address prefix: one
/// buffer of ovpn-dco-win's receive pool (`OVPN_SOCKET_RX_PACKET_BUFFER_SIZE`),
/// which drops longer ones; also the largest TCP frame (2-byte length).
pub const CONTROL_PACKET_MAX: usize = 2048;

/// Received control packets waiting for a ReadFile. ovpn-dco-win bounds
/// them only by its 100 000-buffer pool; OpenVPN's reliability layer resends
/// what is lost (a handshake keeps at most a few packets in flight per key
/// state), so a small queue drained by an always-pending read is enough and
/// keeps the reserved memory at 64 × 2 KiB per adapter. A packet arriving
/// with the queue full is dropped and counted in LostInControlPackets.
pub const CONTROL_QUEUE_MAX: usize = 64;

/// The address OpenVPN is told about: an IPv4 peer reached through a
/// dual-stack socket arrives v4-mapped, but OpenVPN treats v4-mapped
/// addresses as IPv4 (forward.c `extract_dco_float_peer_addr`), so the
/// device speaks plain IPv4 for them.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, a.port())),
            None => addr,
        },
        v4 => v4,
    }
}

/// Bytes the address takes as a prefix.
pub fn sockaddr_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => size_of::<SockAddrIn>(),
        SocketAddr::V6(_) => size_of::<SockAddrIn6>(),
    }
}

/// Why a WriteFile's address prefix was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixError {
    /// Shorter than its sockaddr plus one byte of packet.
    /// STATUS_INVALID_MESSAGE (ovpn-dco-win Driver.cpp `OvpnEvtIoWrite`).
    TooShort,
    /// `sa_family` is neither AF_INET nor AF_INET6. STATUS_INVALID_ADDRESS.
    UnknownFamily(u16),
}

impl PrefixError {
    pub const fn status(self) -> NtStatus {
        match self {
            PrefixError::TooShort => NtStatus::INVALID_MESSAGE,
            PrefixError::UnknownFamily(_) => NtStatus::INVALID_ADDRESS,
        }
    }
}

fn field<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Splits an MP write into its destination and the packet. The packet must
/// not be empty (upstream requires `len > sizeof(sockaddr)`).
pub fn split_prefix(input: &[u8]) -> Result<(SocketAddr, &[u8]), PrefixError> {
    let family = field::<2>(input, 0).map(u16::from_le_bytes).ok_or(PrefixError::TooShort)?;
    let (addr, len) = match family {
        AF_INET => {
            let len = size_of::<SockAddrIn>();
            let (Some(port), Some(ip)) = (
                field::<2>(input, offset_of!(SockAddrIn, sin_port)),
                field::<4>(input, offset_of!(SockAddrIn, sin_addr)),
            ) else {
                return Err(PrefixError::TooShort);
            };
            (SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), u16::from_be_bytes(port))), len)
        }
        AF_INET6 => {
            let len = size_of::<SockAddrIn6>();
            let (Some(port), Some(flow), Some(ip), Some(scope)) = (
                field::<2>(input, offset_of!(SockAddrIn6, sin6_port)),
                field::<4>(input, offset_of!(SockAddrIn6, sin6_flowinfo)),
                field::<16>(input, offset_of!(SockAddrIn6, sin6_addr)),
                field::<4>(input, offset_of!(SockAddrIn6, sin6_scope_id)),
            ) else {
                return Err(PrefixError::TooShort);
            };
            let a = SocketAddrV6::new(
                Ipv6Addr::from(ip),
                u16::from_be_bytes(port),
                u32::from_le_bytes(flow),
                u32::from_le_bytes(scope),
            );
            (SocketAddr::V6(a), len)
        }
        other => return Err(PrefixError::UnknownFamily(other)),
    };
    match input.get(len..) {
        Some(packet) if !packet.is_empty() => Ok((addr, packet)),
        _ => Err(PrefixError::TooShort),
    }
}

/// Writes `addr` as SOCKADDR_IN / SOCKADDR_IN6 into `out` (zeroing
/// `sin_zero`); returns its length, or `None` when `out` is too short.
pub fn put_prefix(out: &mut [u8], addr: &SocketAddr) -> Option<usize> {
    let len = sockaddr_len(addr);
    let buf = out.get_mut(..len)?;
    buf.fill(0);
    let mut put = |at: usize, v: &[u8]| {
        if let Some(dst) = buf.get_mut(at..at + v.len()) {
            dst.copy_from_slice(v);
        }
    };
    match addr {
        SocketAddr::V4(a) => {
            put(offset_of!(SockAddrIn, sin_family), &AF_INET.to_le_bytes());
            put(offset_of!(SockAddrIn, sin_port), &a.port().to_be_bytes());
            put(offset_of!(SockAddrIn, sin_addr), &a.ip().octets());
        }
        SocketAddr::V6(a) => {
            put(offset_of!(SockAddrIn6, sin6_family), &AF_INET6.to_le_bytes());
            put(offset_of!(SockAddrIn6, sin6_port), &a.port().to_be_bytes());
            put(offset_of!(SockAddrIn6, sin6_flowinfo), &a.flowinfo().to_le_bytes());
            put(offset_of!(SockAddrIn6, sin6_addr), &a.ip().octets());
            put(offset_of!(SockAddrIn6, sin6_scope_id), &a.scope_id().to_le_bytes());
        }
    }
    Some(len)
}

/// The bytes of one control packet to send, copied out of the WriteFile
/// buffer so that the request can complete before the send does.
#[derive(Clone)]
pub struct ControlBytes {
    len: u16,
    buf: [u8; CONTROL_PACKET_MAX],
}

impl ControlBytes {
    /// `None` when `bytes` is longer than [`CONTROL_PACKET_MAX`].
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let len = u16::try_from(bytes.len()).ok().filter(|l| usize::from(*l) <= CONTROL_PACKET_MAX)?;
        let mut buf = [0u8; CONTROL_PACKET_MAX];
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Self { len, buf })
    }

    pub fn as_slice(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl PartialEq for ControlBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for ControlBytes {}

impl core::fmt::Debug for ControlBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ControlBytes({} bytes)", self.len)
    }
}

/// Why a received control packet was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Prefix and packet exceed [`CONTROL_PACKET_MAX`].
    TooLong,
    /// [`CONTROL_QUEUE_MAX`] packets are waiting.
    QueueFull,
}

#[derive(Clone)]
struct Slot {
    len: u16,
    bytes: [u8; CONTROL_PACKET_MAX],
}

/// Received control packets, oldest first, each stored as ReadFile returns
/// it (MP: address prefix and packet). The slots are allocated once, with
/// the device, so queueing from the receive path never allocates.
pub struct ControlQueue {
    slots: Box<[Slot]>,
    head: usize,
    len: usize,
}

impl Default for ControlQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlQueue {
    pub fn new() -> Self {
        let empty = Slot { len: 0, bytes: [0; CONTROL_PACKET_MAX] };
        Self { slots: vec![empty; CONTROL_QUEUE_MAX].into_boxed_slice(), head: 0, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `packet`, behind `prefix` when given (MP).
    pub fn push(&mut self, prefix: Option<&SocketAddr>, packet: &[u8]) -> Result<(), Dropped> {
        let prefix_len = prefix.map_or(0, sockaddr_len);
        let total =
            prefix_len.checked_add(packet.len()).filter(|t| *t <= CONTROL_PACKET_MAX).ok_or(Dropped::TooLong)?;
        if self.len >= self.slots.len() {
            return Err(Dropped::QueueFull);
        }
        let at = (self.head + self.len) % self.slots.len();
        let slot = self.slots.get_mut(at).ok_or(Dropped::QueueFull)?;
        if let Some(addr) = prefix {
            put_prefix(&mut slot.bytes, addr).ok_or(Dropped::TooLong)?;
        }
        slot.bytes.get_mut(prefix_len..total).ok_or(Dropped::TooLong)?.copy_from_slice(packet);
        // total <= CONTROL_PACKET_MAX, which fits u16.
        slot.len = total as u16;
        self.len += 1;
        Ok(())
    }

    /// The oldest packet as ReadFile returns it.
    pub fn front(&self) -> Option<&[u8]> {
        if self.len == 0 {
            return None;
        }
        let slot = self.slots.get(self.head)?;
        slot.bytes.get(..usize::from(slot.len))
    }

    pub fn pop(&mut self) {
        if self.len > 0 {
            self.head = (self.head + 1) % self.slots.len();
            self.len -= 1;
        }
    }

    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Every queued packet, oldest first (snapshots and diagnostics).
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len).filter_map(move |i| {
            let slot = self.slots.get((self.head + i) % self.slots.len())?;
            slot.bytes.get(..usize::from(slot.len))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_round_trips_in_both_families() {
        for addr in [sa("192.0.2.7:1194"), sa("[2001:db8::5%3]:443")] {
            let mut buf = [0xAAu8; 40];
            let n = put_prefix(&mut buf, &addr).unwrap();
            assert_eq!(n, sockaddr_len(&addr));
            buf[n] = 0x38; // one packet byte
            let (got, packet) = split_prefix(&buf[..n + 1]).unwrap();
            assert_eq!(got, addr);
            assert_eq!(packet, [0x38]);
        }
        // SOCKADDR_IN as OpenVPN lays it out: family 2 LE, port BE, address, 8 zero bytes.
        let mut buf = [0u8; 16];
        put_prefix(&mut buf, &sa("10.1.2.3:1194")).unwrap();
        assert_eq!(buf, [2, 0, 0x04, 0xaa, 10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn short_and_unknown_prefixes_are_refused() {
        assert_eq!(split_prefix(&[]), Err(PrefixError::TooShort));
        assert_eq!(split_prefix(&[2]), Err(PrefixError::TooShort));
        let mut v4 = [0u8; 16];
        put_prefix(&mut v4, &sa("10.0.0.1:1")).unwrap();
        assert_eq!(split_prefix(&v4), Err(PrefixError::TooShort), "a prefix with no packet");
        let mut v6 = [0u8; 28];
        put_prefix(&mut v6, &sa("[::1]:1")).unwrap();
        assert_eq!(split_prefix(&v6[..20]), Err(PrefixError::TooShort));
        assert_eq!(split_prefix(&[10, 0, 1, 2, 3]), Err(PrefixError::UnknownFamily(10)), "Linux's AF_INET6");
        assert_eq!(PrefixError::TooShort.status(), NtStatus::INVALID_MESSAGE);
        assert_eq!(PrefixError::UnknownFamily(0).status(), NtStatus::INVALID_ADDRESS);
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        assert_eq!(canonical(sa("[::ffff:192.0.2.1]:5000")), sa("192.0.2.1:5000"));
        assert_eq!(canonical(sa("[2001:db8::1]:5000")), sa("[2001:db8::1]:5000"));
        assert_eq!(canonical(sa("192.0.2.1:5000")), sa("192.0.2.1:5000"));
    }

    #[test]
    fn the_queue_is_fifo_bounded_and_refuses_oversize() {
        let mut q = ControlQueue::new();
        let from = sa("198.51.100.1:1194");
        q.push(Some(&from), &[0x20, 1]).unwrap();
        q.push(None, &[0x28, 2]).unwrap();
        assert_eq!(q.front().unwrap().len(), 18);
        assert_eq!(&q.front().unwrap()[16..], [0x20, 1]);
        q.pop();
        assert_eq!(q.front(), Some(&[0x28, 2][..]));
        q.pop();
        assert!(q.is_empty());
        assert_eq!(q.push(None, &[0; CONTROL_PACKET_MAX + 1]), Err(Dropped::TooLong));
        assert_eq!(q.push(Some(&from), &[0; CONTROL_PACKET_MAX - 15]), Err(Dropped::TooLong));
        q.push(Some(&from), &[0; CONTROL_PACKET_MAX - 16]).unwrap();
        q.clear();
        for i in 0..CONTROL_QUEUE_MAX {
            q.push(None, &[i as u8]).unwrap();
        }
        assert_eq!(q.push(None, &[0]), Err(Dropped::QueueFull));
        let firsts: Vec<u8> = q.iter().map(|p| p[0]).collect();
        assert_eq!(firsts.len(), CONTROL_QUEUE_MAX);
        assert_eq!(firsts[5], 5);
    }

    #[test]
    fn control_bytes_hold_at_most_the_bound() {
        assert_eq!(ControlBytes::new(&[1, 2, 3]).unwrap().as_slice(), [1, 2, 3]);
        assert!(ControlBytes::new(&[0; CONTROL_PACKET_MAX]).is_some());
        assert!(ControlBytes::new(&[0; CONTROL_PACKET_MAX + 1]).is_none());
    }
}
