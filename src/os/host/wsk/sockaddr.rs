//! Socket addresses in the Windows layout (wdk-abi-facts.md §4: SOCKADDR_IN,
//! SOCKADDR_IN6, SOCKADDR_INET), which is what `RemoteAddress` of a
//! datagram indication points at. Ports and IPv4 addresses are in network
//! byte order, as on the wire; AF_INET6 is 23, not Linux's 10.

use core::mem::offset_of;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::netcx::wsk::{AF_INET, AF_INET6, SockAddr};

// §4: SOCKADDR_IN is 16 bytes, align 4: family @0, port @2, addr @4, zero @8.
const _: () = assert!(size_of::<SockAddrIn>() == 16 && align_of::<SockAddrIn>() == 4);
const _: () = assert!(offset_of!(SockAddrIn, sin_port) == 2 && offset_of!(SockAddrIn, sin_addr) == 4);
const _: () = assert!(offset_of!(SockAddrIn, sin_zero) == 8);
// §4: SOCKADDR_IN6 is 28 bytes, align 4: family @0, port @2, flowinfo @4,
// addr @8, scope id @24.
const _: () = assert!(size_of::<SockAddrIn6>() == 28 && align_of::<SockAddrIn6>() == 4);
const _: () = assert!(offset_of!(SockAddrIn6, sin6_port) == 2 && offset_of!(SockAddrIn6, sin6_flowinfo) == 4);
const _: () = assert!(offset_of!(SockAddrIn6, sin6_addr) == 8 && offset_of!(SockAddrIn6, sin6_scope_id) == 24);
// §4: SOCKADDR_INET is the 28-byte union of both.
const _: () = assert!(size_of::<SockAddrInet>() == 28 && align_of::<SockAddrInet>() == 4);

/// SOCKADDR_IN.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockAddrIn {
    pub sin_family: u16,
    /// Network byte order.
    pub sin_port: [u8; 2],
    /// Network byte order.
    pub sin_addr: [u8; 4],
    pub sin_zero: [u8; 8],
}

/// SOCKADDR_IN6.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockAddrIn6 {
    pub sin6_family: u16,
    /// Network byte order.
    pub sin6_port: [u8; 2],
    pub sin6_flowinfo: u32,
    pub sin6_addr: [u8; 16],
    pub sin6_scope_id: u32,
}

/// SOCKADDR_INET: room for either family; `RemoteAddress` points at one.
#[repr(C)]
#[derive(Clone, Copy)]
pub union SockAddrInet {
    pub v4: SockAddrIn,
    pub v6: SockAddrIn6,
    pub family: u16,
}

impl core::fmt::Debug for SockAddrInet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // SAFETY: every bit pattern of the union is a valid SockAddrIn6 (plain
        // integers and byte arrays), so reading the largest member is sound.
        let v6 = unsafe { self.v6 };
        write!(f, "SockAddrInet({:?})", from_inet(&v6))
    }
}

impl SockAddrInet {
    /// The Windows encoding of `addr` (an IPv4-mapped IPv6 address stays
    /// AF_INET6, as a dual-stack WSK socket reports it).
    pub fn new(addr: SocketAddr) -> Self {
        // Start from all zeros so the bytes past a SOCKADDR_IN are initialized too.
        let mut out = Self::zeroed();
        match addr {
            SocketAddr::V4(a) => {
                out.v4 = SockAddrIn {
                    sin_family: AF_INET,
                    sin_port: a.port().to_be_bytes(),
                    sin_addr: a.ip().octets(),
                    sin_zero: [0; 8],
                }
            }
            SocketAddr::V6(a) => {
                out.v6 = SockAddrIn6 {
                    sin6_family: AF_INET6,
                    sin6_port: a.port().to_be_bytes(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: a.ip().octets(),
                    sin6_scope_id: a.scope_id(),
                }
            }
        }
        out
    }

    /// An all-zero address (AF_UNSPEC).
    pub const fn zeroed() -> Self {
        Self {
            v6: SockAddrIn6 {
                sin6_family: 0,
                sin6_port: [0; 2],
                sin6_flowinfo: 0,
                sin6_addr: [0; 16],
                sin6_scope_id: 0,
            },
        }
    }

    /// The address as the `PSOCKADDR` an indication carries.
    pub fn as_sockaddr(&mut self) -> *mut SockAddr {
        (self as *mut Self).cast()
    }
}

fn from_inet(v6: &SockAddrIn6) -> Option<SocketAddr> {
    match v6.sin6_family {
        AF_INET6 => Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(v6.sin6_addr),
            u16::from_be_bytes(v6.sin6_port),
            v6.sin6_flowinfo,
            v6.sin6_scope_id,
        ))),
        AF_INET => {
            // SOCKADDR_IN's address sits where SOCKADDR_IN6's flowinfo does.
            let a = v6.sin6_flowinfo.to_ne_bytes();
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), u16::from_be_bytes(v6.sin6_port))))
        }
        _ => None,
    }
}

/// Reads a Windows socket address: `None` for null or a family other than
/// AF_INET and AF_INET6.
///
/// # Safety
/// `addr` is null or points at a readable SOCKADDR_IN (when its family is
/// AF_INET) or SOCKADDR_IN6 (AF_INET6), e.g. the `RemoteAddress` of an
/// indication the caller still owns.
pub unsafe fn decode(addr: *const SockAddr) -> Option<SocketAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees a readable SOCKADDR, which has a family.
    let family = unsafe { (*addr).sa_family };
    match family {
        AF_INET => {
            // SAFETY: AF_INET means a full SOCKADDR_IN is readable; SOCKADDR
            // has align 2 only, hence the unaligned read.
            let v4 = unsafe { addr.cast::<SockAddrIn>().read_unaligned() };
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(v4.sin_addr), u16::from_be_bytes(v4.sin_port))))
        }
        AF_INET6 => {
            // SAFETY: AF_INET6 means a full SOCKADDR_IN6 is readable.
            let v6 = unsafe { addr.cast::<SockAddrIn6>().read_unaligned() };
            from_inet(&v6)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_is_family_2_with_network_order_port_and_address() {
        let mut a = SockAddrInet::new("192.0.2.1:1194".parse().unwrap());
        // SAFETY: `a` is a live SOCKADDR_INET; reading 16 bytes of it.
        let bytes: [u8; 16] = unsafe { a.as_sockaddr().cast::<[u8; 16]>().read() };
        assert_eq!(bytes, [2, 0, 0x04, 0xaa, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        // SAFETY: as above.
        assert_eq!(unsafe { decode(a.as_sockaddr()) }, Some("192.0.2.1:1194".parse().unwrap()));
    }

    #[test]
    fn ipv6_is_family_23_with_scope_at_24() {
        let addr = SocketAddr::V6(SocketAddrV6::new("2001:db8::7".parse().unwrap(), 443, 0, 5));
        let mut a = SockAddrInet::new(addr);
        // SAFETY: `a` is a live 28-byte SOCKADDR_INET.
        let bytes: [u8; 28] = unsafe { a.as_sockaddr().cast::<[u8; 28]>().read() };
        assert_eq!(&bytes[..4], &[23, 0, 0x01, 0xbb]);
        assert_eq!(&bytes[8..12], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(bytes[23], 7);
        assert_eq!(&bytes[24..28], &5u32.to_ne_bytes());
        // SAFETY: as above.
        assert_eq!(unsafe { decode(a.as_sockaddr()) }, Some(addr));
    }

    #[test]
    fn unknown_family_and_null_decode_to_none() {
        let mut a = SockAddrInet::zeroed();
        // SAFETY: a live, zeroed SOCKADDR_INET; null is never read.
        unsafe {
            assert_eq!(decode(a.as_sockaddr()), None);
            assert_eq!(decode(core::ptr::null()), None);
        }
    }
}
