//! Any packet and any configured MSS through `clamp_mss`, checked against an
//! independent reading of IPv4/IPv6 + TCP and a full Internet checksum.
//!
//! Input layout: 2 bytes MSS (big endian; 0 means clamping is off and is
//! skipped), 1 flags byte, then the packet. Flags help the fuzzer past the
//! length checks, so that mutations land in the TCP options:
//! - bit 0: set the IPv4 total length / IPv6 payload length to the packet's
//!   size and the protocol (next header) to TCP;
//! - bit 1: fill in a correct TCP checksum before clamping.
//!
//! Properties: nothing panics; `Clamped` changes exactly the MSS options
//! above the limit (to the limit) and the checksum, and the checksum still
//! verifies if it verified before; every other outcome leaves the bytes as
//! they were.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ovpn_dco::proto::mss::{self, MssLimit, MssOutcome};

const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const TCP_MIN_HEADER_LEN: usize = 20;
const IPPROTO_TCP: u8 = 6;
const TCP_CHECKSUM_AT: usize = 16;

/// Where the TCP segment starts, if the packet is IPv4/IPv6 carrying TCP
/// with a whole fixed TCP header (this reading's own, not the crate's).
fn tcp_offset(p: &[u8]) -> Option<usize> {
    let off = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if ihl < IPV4_MIN_HEADER_LEN || p.len() < ihl || p[9] != IPPROTO_TCP {
                return None;
            }
            ihl
        }
        6 if p.len() >= IPV6_HEADER_LEN && p[6] == IPPROTO_TCP => IPV6_HEADER_LEN,
        _ => return None,
    };
    (p.len() - off >= TCP_MIN_HEADER_LEN).then_some(off)
}

/// RFC 1071 one's-complement sum, folded.
fn sum16(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            sum += u64::from(pair[0]) << 8 | pair.get(1).copied().map_or(0, u64::from);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn pseudo_header(p: &[u8], off: usize) -> Vec<u8> {
    let seg_len = p.len() - off;
    let mut h = Vec::with_capacity(40);
    if p[0] >> 4 == 4 {
        h.extend_from_slice(&p[12..20]);
        h.extend_from_slice(&[0, IPPROTO_TCP]);
        h.extend_from_slice(&(seg_len as u16).to_be_bytes());
    } else {
        h.extend_from_slice(&p[8..40]);
        h.extend_from_slice(&(seg_len as u32).to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, IPPROTO_TCP]);
    }
    h
}

fn checksum_ok(p: &[u8]) -> bool {
    tcp_offset(p).is_some_and(|off| sum16(&[&pseudo_header(p, off), &p[off..]]) == 0xffff)
}

fn fill_checksum(p: &mut [u8]) {
    if let Some(off) = tcp_offset(p) {
        p[off + TCP_CHECKSUM_AT..off + TCP_CHECKSUM_AT + 2].fill(0);
        let sum = sum16(&[&pseudo_header(p, off), &p[off..]]);
        p[off + TCP_CHECKSUM_AT..off + TCP_CHECKSUM_AT + 2].copy_from_slice(&(!sum).to_be_bytes());
    }
}

fn fix_lengths(p: &mut [u8]) {
    match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= IPV4_MIN_HEADER_LEN => {
            if let Ok(len) = u16::try_from(p.len()) {
                p[2..4].copy_from_slice(&len.to_be_bytes());
            }
            p[9] = IPPROTO_TCP;
        }
        Some(6) if p.len() >= IPV6_HEADER_LEN => {
            if let Ok(len) = u16::try_from(p.len() - IPV6_HEADER_LEN) {
                p[4..6].copy_from_slice(&len.to_be_bytes());
            }
            p[6] = IPPROTO_TCP;
        }
        _ => {}
    }
}

/// The options walk as RFC 9293 describes it, stopping where a receiver
/// would: the positions of the MSS values (kind 2, length 4) it reads.
fn mss_value_positions(segment: &[u8]) -> Vec<usize> {
    let header_len = usize::from(segment[12] >> 4) * 4;
    let mut found = Vec::new();
    let mut pos = TCP_MIN_HEADER_LEN;
    while pos + 1 < header_len.min(segment.len()) {
        match segment[pos] {
            0 => break,
            1 => pos += 1,
            kind => {
                let len = usize::from(segment[pos + 1]);
                if len < 2 || pos + len > header_len {
                    break;
                }
                if kind == 2 && len == 4 {
                    found.push(pos + 2);
                }
                pos += len;
            }
        }
    }
    found
}

fuzz_target!(|data: &[u8]| {
    let Some((head, packet)) = data.split_first_chunk::<3>() else { return };
    let Some(limit) = MssLimit::new(u16::from_be_bytes([head[0], head[1]])) else { return };
    let flags = head[2];
    let mut before = packet.to_vec();
    if flags & 1 != 0 {
        fix_lengths(&mut before);
    }
    if flags & 2 != 0 {
        fill_checksum(&mut before);
    }
    let mut after = before.clone();
    let outcome = mss::clamp_mss(&mut after, limit);

    let MssOutcome::Clamped { from, to } = outcome else {
        assert_eq!(after, before, "{outcome:?} but the packet changed");
        return;
    };
    let off = tcp_offset(&before).expect("clamped a packet that is not TCP");
    let ipv6 = before[0] >> 4 == 6;
    assert_eq!(Some(to), if ipv6 { limit.for_ipv6() } else { Some(limit.get()) });
    assert!(from > to);
    assert_eq!(checksum_ok(&after), checksum_ok(&before), "clamping broke the TCP checksum");

    // Exactly the MSS options above the limit now say the limit.
    let mut expected = before.clone();
    let mut first = None;
    for at in mss_value_positions(&before[off..]) {
        let at = off + at;
        let value = u16::from_be_bytes([before[at], before[at + 1]]);
        if value > to {
            first = first.or(Some(value));
            expected[at..at + 2].copy_from_slice(&to.to_be_bytes());
        }
    }
    assert_eq!(first, Some(from));
    let check = off + TCP_CHECKSUM_AT..off + TCP_CHECKSUM_AT + 2;
    expected[check.clone()].copy_from_slice(&after[check]);
    assert_eq!(after, expected);
});
