//! Real UDP under a modelled datagram socket: batched receive
//! (`recvmmsg`, scattering a datagram over two buffers when the model wants
//! it split over two MDLs) and batched send (`sendmmsg`).

use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use core::sync::atomic::Ordering;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd};

use super::datagram::DatagramInner;
use super::rx::{Filled, LIST_LEN_MAX};
use super::send::{Outgoing, POLL_INTERVAL, WireResult};
use super::stats::bump;
use crate::ntstatus::NtStatus;

/// STATUS_CONNECTION_REFUSED (ntstatus.h 0xC0000236).
pub const STATUS_CONNECTION_REFUSED: NtStatus = NtStatus(0xC000_0236_u32 as i32);
/// STATUS_NETWORK_UNREACHABLE (wdk-abi-facts.md §6).
pub const STATUS_NETWORK_UNREACHABLE: NtStatus = NtStatus(0xC000_023C_u32 as i32);
/// STATUS_HOST_UNREACHABLE (wdk-abi-facts.md §6).
pub const STATUS_HOST_UNREACHABLE: NtStatus = NtStatus(0xC000_023D_u32 as i32);
/// STATUS_ACCESS_DENIED (wdk-abi-facts.md §6).
pub const STATUS_ACCESS_DENIED: NtStatus = NtStatus(0xC000_0022_u32 as i32);

/// The NTSTATUS WSK would complete with for a Linux socket error.
pub fn status_of(e: &std::io::Error) -> NtStatus {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => super::loopback::STATUS_ADDRESS_ALREADY_EXISTS,
        Some(libc::ECONNREFUSED) => STATUS_CONNECTION_REFUSED,
        Some(libc::ENETUNREACH) => STATUS_NETWORK_UNREACHABLE,
        Some(libc::EHOSTUNREACH) => STATUS_HOST_UNREACHABLE,
        Some(libc::ECONNRESET) => NtStatus::CONNECTION_RESET,
        Some(libc::EPIPE | libc::ENOTCONN) => NtStatus::CONNECTION_DISCONNECTED,
        Some(libc::ECONNABORTED) => NtStatus::CONNECTION_ABORTED,
        Some(libc::ENOBUFS | libc::ENOMEM) => NtStatus::INSUFFICIENT_RESOURCES,
        Some(libc::EACCES | libc::EPERM) => STATUS_ACCESS_DENIED,
        Some(libc::EINVAL | libc::EAFNOSUPPORT) => NtStatus::INVALID_PARAMETER,
        _ => match e.kind() {
            std::io::ErrorKind::TimedOut => NtStatus::TIMEOUT,
            _ => NtStatus::UNSUCCESSFUL,
        },
    }
}

/// Writes `addr` as a Linux sockaddr; returns its length.
pub(crate) fn to_libc(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads a Linux sockaddr the kernel wrote.
pub(crate) fn from_libc(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain integers; all zeros is valid.
    unsafe { core::mem::zeroed() }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is integers and raw pointers; all zeros (nulls) is valid.
    unsafe { core::mem::zeroed() }
}

/// A bound UDP socket: IPv6 sockets get IPV6_V6ONLY as asked (dual stack
/// otherwise), and a receive timeout so the receive thread sees close.
pub(crate) fn bind_udp(local: SocketAddr, ipv6_only: bool, buffer: Option<usize>) -> Result<UdpSocket, NtStatus> {
    let domain = if local.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2) call; the fd it returns is owned below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(status_of(&std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh socket nobody else owns; the UdpSocket closes it.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    if local.is_ipv6() {
        let on: libc::c_int = ipv6_only.into();
        // SAFETY: a valid fd and a c_int option value of the right size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(status_of(&std::io::Error::last_os_error()));
        }
    }
    if let Some(size) = buffer {
        let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
            // SAFETY: a valid fd and a c_int option value of the right size.
            // The forced option needs CAP_NET_ADMIN; without it the plain one
            // is capped by the system limit, which is all it can be.
            unsafe {
                let value = (&size as *const libc::c_int).cast();
                let len = size_of::<libc::c_int>() as libc::socklen_t;
                if libc::setsockopt(fd, libc::SOL_SOCKET, force, value, len) < 0 {
                    libc::setsockopt(fd, libc::SOL_SOCKET, plain, value, len);
                }
            }
        }
    }
    let mut storage = zeroed_storage();
    let len = to_libc(local, &mut storage);
    // SAFETY: `storage` holds a sockaddr of `len` bytes.
    let r = unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) };
    if r < 0 {
        return Err(status_of(&std::io::Error::last_os_error()));
    }
    sock.set_read_timeout(Some(POLL_INTERVAL)).map_err(|e| status_of(&e))?;
    Ok(sock)
}

/// `UDP_SEGMENT` (linux/udp.h): the send's payload is cut into datagrams of
/// this many bytes (the last may be shorter) by the kernel, after one pass
/// through the socket, routing and the device queue.
const UDP_SEGMENT: libc::c_int = 103;

/// Datagrams one segmented send carries at most (UDP_MAX_SEGMENTS in
/// linux/udp.h is 64 on older kernels).
const GSO_SEGMENTS_MAX: usize = 64;

/// Bytes one segmented send carries at most: an IP datagram's 65535 less
/// the largest IPv6 and UDP headers, rounded down.
const GSO_BYTES_MAX: usize = 65_000;

/// Control-message room for one `UDP_SEGMENT` (CMSG_SPACE of a u16), in
/// u64s so that the buffer is aligned for `cmsghdr`.
const GSO_CMSG_WORDS: usize = 4;

/// Segmented sends refused in a row before the wire stops trying them (a
/// kernel without `UDP_SEGMENT`; a single refusal, e.g. a datagram larger
/// than the path MTU, only sends that run one datagram per message).
const GSO_REFUSALS_MAX: u32 = 8;

/// The send half: `sendmmsg` from the slot buffers. Runs of equal-size
/// datagrams to one remote (a bulk transfer's) go as one segmented send
/// (`UDP_SEGMENT`, one iovec per slot: still no copy), which saves the
/// kernel the per-datagram trip through routing and the device queue; the
/// datagrams on the wire are the same.
pub(crate) struct UdpWire {
    pub sock: UdpSocket,
    /// Segmented sends refused in a row.
    refusals: core::sync::atomic::AtomicU32,
}

/// Consecutive datagrams of a batch that go in one message.
#[derive(Clone, Copy)]
struct Group {
    start: usize,
    end: usize,
    segment: usize,
}

/// Cuts `chunk` into messages: with `gso`, a run to one remote whose
/// datagrams all have the first one's length except a shorter last one.
fn groups(chunk: &[Outgoing], gso: bool, out: &mut Vec<Group>) {
    out.clear();
    let mut i = 0;
    while i < chunk.len() {
        let (first, segment) = (&chunk[i], chunk[i].len);
        let mut end = i + 1;
        let mut bytes = segment;
        while gso && end < chunk.len() && end - i < GSO_SEGMENTS_MAX {
            let next = &chunk[end];
            if next.remote != first.remote || next.len > segment || next.len == 0 || bytes + next.len > GSO_BYTES_MAX {
                break;
            }
            bytes += next.len;
            end += 1;
            if next.len < segment {
                break;
            }
        }
        out.push(Group { start: i, end, segment });
        i = end;
    }
}

impl UdpWire {
    pub fn new(sock: UdpSocket) -> Self {
        Self { sock, refusals: core::sync::atomic::AtomicU32::new(0) }
    }

    pub fn transmit(&self, batch: &[Outgoing], results: &mut [WireResult]) {
        let gso = self.refusals.load(Ordering::Relaxed) < GSO_REFUSALS_MAX;
        self.send(batch, results, gso);
    }

    fn send(&self, batch: &[Outgoing], results: &mut [WireResult], gso: bool) {
        let fd = self.sock.as_raw_fd();
        let v6 = matches!(self.sock.local_addr(), Ok(SocketAddr::V6(_)));
        let mut groups_of_chunk = Vec::new();
        for (chunk, res) in batch.chunks(LIST_LEN_MAX).zip(results.chunks_mut(LIST_LEN_MAX)) {
            groups(chunk, gso, &mut groups_of_chunk);
            let n = groups_of_chunk.len();
            let mut names: Vec<libc::sockaddr_storage> = (0..n).map(|_| zeroed_storage()).collect();
            let mut lens: Vec<libc::socklen_t> = Vec::with_capacity(n);
            let mut iovs: Vec<libc::iovec> =
                chunk.iter().map(|o| libc::iovec { iov_base: o.data.as_ptr().cast(), iov_len: o.len }).collect();
            let mut controls: Vec<[u64; GSO_CMSG_WORDS]> = std::vec![[0; GSO_CMSG_WORDS]; n];
            let mut hdrs: Vec<libc::mmsghdr> = (0..n).map(|_| zeroed_mmsghdr()).collect();
            for (g, name) in groups_of_chunk.iter().zip(names.iter_mut()) {
                // A dual-stack socket reaches IPv4 peers through mapped addresses.
                let to = match (v6, chunk[g.start].remote) {
                    (true, SocketAddr::V4(a)) => {
                        SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
                    }
                    (_, a) => a,
                };
                lens.push(to_libc(to, name));
            }
            for (k, g) in groups_of_chunk.iter().enumerate() {
                let h = &mut hdrs[k].msg_hdr;
                h.msg_name = (&mut names[k] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = lens[k];
                h.msg_iov = iovs[g.start..].as_mut_ptr();
                h.msg_iovlen = g.end - g.start;
                if g.end - g.start > 1 {
                    let segment = u16::try_from(g.segment).unwrap_or(u16::MAX);
                    h.msg_control = controls[k].as_mut_ptr().cast();
                    // SAFETY: CMSG_SPACE of a u16 (24 bytes) fits the
                    // 32-byte, 8-aligned control buffer of this message,
                    // which CMSG_FIRSTHDR then points into.
                    unsafe {
                        h.msg_controllen = libc::CMSG_SPACE(2) as usize;
                        let c = libc::CMSG_FIRSTHDR(h);
                        (*c).cmsg_level = libc::SOL_UDP;
                        (*c).cmsg_type = UDP_SEGMENT;
                        (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                        libc::CMSG_DATA(c).cast::<u16>().write_unaligned(segment);
                    }
                }
            }
            let mut done = 0;
            while done < n {
                let rest = &mut hdrs[done..];
                // SAFETY: every header points at a sockaddr, its iovecs over
                // in-flight slot buffers (the transport's until their
                // completions) and its control buffer, all alive for this
                // call.
                let sent = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
                if sent <= 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    let g = groups_of_chunk[done];
                    if g.end - g.start > 1 {
                        // Segmentation refused: this run one datagram per
                        // message.
                        self.refusals.fetch_add(1, Ordering::Relaxed);
                        self.send(&chunk[g.start..g.end], &mut res[g.start..g.end], false);
                        done += 1;
                        continue;
                    }
                    // The first unsent message failed: complete its
                    // datagrams with the error and carry on with the rest.
                    for r in &mut res[g.start..g.end] {
                        *r = (status_of(&e), 0);
                    }
                    done += 1;
                    continue;
                }
                if groups_of_chunk[done..done + sent as usize].iter().any(|g| g.end - g.start > 1) {
                    self.refusals.store(0, Ordering::Relaxed);
                }
                for g in &groups_of_chunk[done..done + sent as usize] {
                    for (r, o) in res[g.start..g.end].iter_mut().zip(&chunk[g.start..g.end]) {
                        *r = (NtStatus::SUCCESS, o.len);
                    }
                }
                done += sent as usize;
            }
        }
    }
}

/// The receive thread of a real UDP socket: fills receive buffers with
/// `recvmmsg` and indicates each batch as one list.
pub(crate) fn receive_loop(inner: &DatagramInner, sock: &UdpSocket) {
    let fd = sock.as_raw_fd();
    let mut names: Vec<libc::sockaddr_storage> = (0..LIST_LEN_MAX).map(|_| zeroed_storage()).collect();
    let mut iovs: Vec<[libc::iovec; 2]> =
        (0..LIST_LEN_MAX).map(|_| [libc::iovec { iov_base: core::ptr::null_mut(), iov_len: 0 }; 2]).collect();
    let mut hdrs: Vec<libc::mmsghdr> = (0..LIST_LEN_MAX).map(|_| zeroed_mmsghdr()).collect();
    let mut taken: Vec<(u32, Option<usize>)> = Vec::with_capacity(LIST_LEN_MAX);
    let mut filled: Vec<Filled> = Vec::with_capacity(LIST_LEN_MAX);
    while !inner.closed.load(Ordering::Acquire) {
        let Some(list) = inner.rx.take_list() else {
            inner.rx.wait_freed(POLL_INTERVAL);
            continue;
        };
        let want = inner.rx.next_list_len().min(LIST_LEN_MAX);
        taken.clear();
        while taken.len() < want {
            let Some(b) = inner.rx.take_buffer() else { break };
            taken.push((b, inner.rx.split_point(None)));
        }
        if taken.is_empty() {
            inner.rx.put_list(list);
            inner.rx.wait_freed(POLL_INTERVAL);
            continue;
        }
        for (i, &(b, split)) in taken.iter().enumerate() {
            let p = inner.rx.parts(b, None, split);
            iovs[i] = [
                libc::iovec { iov_base: p.first.cast(), iov_len: p.first_len },
                libc::iovec { iov_base: p.second.cast(), iov_len: p.second_len },
            ];
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = iovs[i].as_mut_ptr();
            h.msg_iovlen = if p.second_len > 0 { 2 } else { 1 };
            h.msg_control = core::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        // SAFETY: each header's iovecs cover receive buffers this thread took
        // off the free list (the model's until indicated) and its name points
        // at storage of the stated size; all live across the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                taken.len() as libc::c_uint,
                libc::MSG_WAITFORONE,
                core::ptr::null_mut(),
            )
        };
        let n = if n < 0 { 0 } else { n as usize };
        filled.clear();
        for (i, &(buffer, split)) in taken.iter().enumerate() {
            let keep = i < n && {
                let len = hdrs[i].msg_len as usize;
                let from = from_libc(&names[i]);
                if hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    bump(&inner.counters.rx_truncated, 1);
                    false
                } else if let Some(from) = from.filter(|f| inner.accepts(*f)) {
                    filled.push(Filled { buffer, len, split_at: split.filter(|&k| k < len), from });
                    true
                } else {
                    false
                }
            };
            if !keep {
                inner.rx.put_buffer(buffer);
            }
        }
        inner.rx.indicate(list, &filled, &*inner.events);
    }
}

#[cfg(test)]
mod tests {
    use super::super::send::Request;
    use super::*;
    use crate::os::SendSlot;
    use core::ptr::NonNull;

    fn out(len: usize, port: u16) -> Outgoing {
        let remote = SocketAddr::from(([127, 0, 0, 1], port));
        Outgoing { slot: SendSlot(0), data: NonNull::dangling(), len, remote, request: Request::Single }
    }

    fn cut(batch: &[Outgoing], gso: bool) -> Vec<(usize, usize)> {
        let mut g = Vec::new();
        groups(batch, gso, &mut g);
        g.iter().map(|g| (g.start, g.end)).collect()
    }

    #[test]
    fn equal_datagrams_to_one_remote_share_a_message_and_a_shorter_one_ends_it() {
        let b = [out(1400, 1), out(1400, 1), out(900, 1), out(1400, 1), out(1400, 2), out(1500, 2), out(1400, 2)];
        // [0,3): two full and a shorter last; then 3 alone (next remote);
        // 4 alone (5 is longer); [5,7).
        assert_eq!(cut(&b, true), [(0, 3), (3, 4), (4, 5), (5, 7)]);
        assert_eq!(cut(&b, false).len(), b.len(), "one datagram per message without segmentation");
        let many: Vec<Outgoing> = (0..100).map(|_| out(500, 1)).collect();
        assert_eq!(cut(&many, true), [(0, 64), (64, 100)], "at most 64 segments per send");
        let big: Vec<Outgoing> = (0..60).map(|_| out(1400, 1)).collect();
        assert_eq!(cut(&big, true)[0], (0, 46), "at most 65000 bytes per send");
    }
}
