//! The few inner (tunnelled) IP header fields the data path looks at:
//! source and destination for routing and the MP source check, and whether a
//! packet is a TCP SYN (the only packets MSS clamping edits).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const IPPROTO_TCP: u8 = 6;
const IPV4_FRAGMENT_OFFSET_MASK: u16 = 0x1fff;
const TCP_FLAGS_OFFSET: usize = 13;
const TCP_FLAG_SYN: u8 = 0x02;

/// Bytes of a packet's start that decide routing and SYN-ness: the longest
/// IPv4 header (60) plus the TCP header up to its flags byte (14).
pub const HEADER_PEEK_LEN: usize = 60 + TCP_FLAGS_OFFSET + 1;

/// The inner addresses of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerAddrs {
    pub src: IpAddr,
    pub dst: IpAddr,
}

/// Source and destination of an IPv4 or IPv6 packet, from its first bytes.
pub fn addresses(packet: &[u8]) -> Option<InnerAddrs> {
    match packet.first()? >> 4 {
        4 => {
            let h = packet.first_chunk::<IPV4_MIN_HEADER_LEN>()?;
            let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
            let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
            Some(InnerAddrs { src: src.into(), dst: dst.into() })
        }
        6 => {
            let h = packet.first_chunk::<IPV6_HEADER_LEN>()?;
            let src: [u8; 16] = h[8..24].try_into().ok()?;
            let dst: [u8; 16] = h[24..40].try_into().ok()?;
            Some(InnerAddrs { src: Ipv6Addr::from(src).into(), dst: Ipv6Addr::from(dst).into() })
        }
        _ => None,
    }
}

/// Whether `head` (the first bytes of a packet) shows a TCP segment with
/// SYN set that MSS clamping would look at: IPv4 unfragmented or first
/// fragment, or IPv6 with TCP as the fixed header's next header
/// (`proto::mss` leaves everything else alone too).
pub fn is_tcp_syn(head: &[u8]) -> bool {
    let tcp_at = match head.first().map(|b| b >> 4) {
        Some(4) => {
            let Some(h) = head.first_chunk::<IPV4_MIN_HEADER_LEN>() else { return false };
            let fragment_offset = u16::from_be_bytes([h[6], h[7]]) & IPV4_FRAGMENT_OFFSET_MASK;
            if h[9] != IPPROTO_TCP || fragment_offset != 0 {
                return false;
            }
            usize::from(h[0] & 0x0f) * 4
        }
        Some(6) => {
            let Some(h) = head.first_chunk::<IPV6_HEADER_LEN>() else { return false };
            if h[6] != IPPROTO_TCP {
                return false;
            }
            IPV6_HEADER_LEN
        }
        _ => return false,
    };
    head.get(tcp_at + TCP_FLAGS_OFFSET).is_some_and(|flags| flags & TCP_FLAG_SYN != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_tcp(flags: u8, ihl_words: u8) -> std::vec::Vec<u8> {
        let hl = usize::from(ihl_words) * 4;
        let mut p = std::vec![0u8; hl + 20];
        p[0] = 0x40 | ihl_words;
        p[9] = IPPROTO_TCP;
        p[12..16].copy_from_slice(&[10, 8, 0, 2]);
        p[16..20].copy_from_slice(&[10, 8, 0, 1]);
        p[hl + 13] = flags;
        p
    }

    #[test]
    fn addresses_of_ipv4_and_ipv6() {
        let p = ipv4_tcp(0x10, 5);
        let a = addresses(&p).unwrap();
        assert_eq!(a.src, "10.8.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(a.dst, "10.8.0.1".parse::<IpAddr>().unwrap());
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[23] = 2;
        v6[39] = 1;
        let a = addresses(&v6).unwrap();
        assert_eq!(a.src, "::2".parse::<IpAddr>().unwrap());
        assert_eq!(a.dst, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(addresses(&v6[..39]), None);
        assert_eq!(addresses(&[0x45; 19]), None);
        assert_eq!(addresses(&[]), None);
        assert_eq!(addresses(&[0x2a; 40]), None, "the keepalive ping is no IP packet");
    }

    #[test]
    fn syn_is_found_past_ipv4_options_and_in_ipv6() {
        assert!(is_tcp_syn(&ipv4_tcp(0x02, 5)));
        assert!(is_tcp_syn(&ipv4_tcp(0x12, 15)), "SYN-ACK after a 60-byte header");
        assert!(!is_tcp_syn(&ipv4_tcp(0x10, 5)), "plain ACK");
        let mut frag = ipv4_tcp(0x02, 5);
        frag[7] = 1;
        assert!(!is_tcp_syn(&frag), "not a first fragment");
        let mut udp = ipv4_tcp(0x02, 5);
        udp[9] = 17;
        assert!(!is_tcp_syn(&udp));
        let mut v6 = [0u8; 60];
        v6[0] = 0x60;
        v6[6] = IPPROTO_TCP;
        v6[53] = TCP_FLAG_SYN;
        assert!(is_tcp_syn(&v6));
        assert!(!is_tcp_syn(&v6[..53]), "truncated before the flags");
        assert!(HEADER_PEEK_LEN >= ipv4_tcp(0x02, 15).len() - 6);
    }
}
