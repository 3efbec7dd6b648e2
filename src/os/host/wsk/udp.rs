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

/// The send half: `sendmmsg` from the slot buffers.
pub(crate) struct UdpWire {
    pub sock: UdpSocket,
}

impl UdpWire {
    pub fn transmit(&self, batch: &[Outgoing], results: &mut [WireResult]) {
        let fd = self.sock.as_raw_fd();
        let v6 = matches!(self.sock.local_addr(), Ok(SocketAddr::V6(_)));
        for (chunk, res) in batch.chunks(LIST_LEN_MAX).zip(results.chunks_mut(LIST_LEN_MAX)) {
            let mut names: Vec<libc::sockaddr_storage> = (0..chunk.len()).map(|_| zeroed_storage()).collect();
            let mut iovs: Vec<libc::iovec> = Vec::with_capacity(chunk.len());
            let mut lens: Vec<libc::socklen_t> = Vec::with_capacity(chunk.len());
            let mut hdrs: Vec<libc::mmsghdr> = (0..chunk.len()).map(|_| zeroed_mmsghdr()).collect();
            for (o, name) in chunk.iter().zip(names.iter_mut()) {
                // A dual-stack socket reaches IPv4 peers through mapped addresses.
                let to = match (v6, o.remote) {
                    (true, SocketAddr::V4(a)) => {
                        SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
                    }
                    (_, a) => a,
                };
                lens.push(to_libc(to, name));
                iovs.push(libc::iovec { iov_base: o.data.as_ptr().cast(), iov_len: o.len });
            }
            for (((h, name), iov), len) in hdrs.iter_mut().zip(names.iter_mut()).zip(iovs.iter_mut()).zip(&lens) {
                h.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = *len;
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
            }
            let mut done = 0;
            while done < chunk.len() {
                let rest = &mut hdrs[done..];
                // SAFETY: every header points at a sockaddr and one iovec
                // over an in-flight slot buffer (the transport's until its
                // completion), all alive for this call.
                let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
                if n <= 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    // The first unsent datagram failed: complete it with the
                    // error and carry on with the rest.
                    res[done] = (status_of(&e), 0);
                    done += 1;
                    continue;
                }
                for i in done..done + n as usize {
                    res[i] = (NtStatus::SUCCESS, hdrs[i].msg_len as usize);
                }
                done += n as usize;
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
