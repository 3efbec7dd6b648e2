//! TCP MSS clamping of tunnelled packets.
//!
//! When SET_PEER configured an MSS, the driver lowers the MSS option of every
//! TCP SYN (and SYN-ACK) it carries, in both directions, so that the
//! endpoints never build segments that would not fit the tunnel. The packet
//! is edited in place and its TCP checksum adjusted incrementally
//! (RFC 1624), as OpenVPN's mss.c and ovpn-dco-win's mss.cpp do:
//!
//! - IPv4: only unfragmented packets or first fragments (fragment offset 0),
//!   whose total length is exactly the buffer, protocol TCP.
//! - IPv6: only when the fixed header's next header is TCP itself; extension
//!   headers are left alone (neither implementation walks them), and the
//!   payload length must match the buffer.
//! - IPv6 is clamped to the configured MSS minus 20, the extra size of the
//!   IPv6 header over IPv4's: ovpn-dco-win mss.cpp `OvpnMssDoIPv6` passes
//!   `mss - 20`, as OpenVPN's `mss_fixup_ipv6` passes `maxmss - 20`.
//! - Only an option of kind 2 and length 4 is an MSS; a value is lowered,
//!   never raised.
//!
//! Nothing is written unless every length on the way to the option checked
//! out; a packet that fails a check is reported and left as it was.

use core::num::NonZeroU16;

/// The MSS configured by SET_PEER (`OVPN_SET_PEER.MSS`). Zero there means
/// "no clamping", so a limit is never zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MssLimit(NonZeroU16);

impl MssLimit {
    /// The limit for a configured value; `None` for 0 (clamping off).
    pub const fn new(mss: u16) -> Option<Self> {
        match NonZeroU16::new(mss) {
            Some(mss) => Some(Self(mss)),
            None => None,
        }
    }

    /// The limit for TCP over IPv4, as configured.
    pub const fn get(self) -> u16 {
        self.0.get()
    }

    /// The limit for TCP over IPv6: 20 bytes less (see the module comment).
    /// `None` below 20. The C drivers compute `mss - 20` in unsigned 16-bit
    /// arithmetic there, wrapping to about 65,500, which in effect clamps
    /// nothing; this leaves such packets unchanged outright.
    pub const fn for_ipv6(self) -> Option<u16> {
        self.0.get().checked_sub(IPV6_EXTRA_HEADER_LEN)
    }
}

/// What clamping did to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MssOutcome {
    /// The MSS option said `from`; it now says `to` and the checksum agrees.
    /// Should a SYN carry several MSS options, each is clamped and `from` is
    /// the first one's.
    Clamped { from: u16, to: u16 },
    /// A TCP SYN with no MSS option, or one already at or below the limit.
    Unchanged,
    /// Not subject to clamping: not TCP, not a SYN, a later IPv4 fragment, or
    /// TCP behind IPv6 extension headers.
    NotTcpSyn,
    /// Lengths in the packet do not hold together; nothing was written.
    Malformed(MalformedPacket),
}

/// The first check a malformed packet failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MalformedPacket {
    /// Empty, or the version nibble is neither 4 nor 6.
    NotIp,
    /// Shorter than the fixed IPv4 (20) or IPv6 (40) header.
    TruncatedIpHeader,
    /// IPv4 IHL below 5 words or beyond the packet.
    Ipv4HeaderLength,
    /// The IPv4 total length or IPv6 payload length disagrees with the
    /// packet's size.
    IpLengthMismatch,
    /// Fewer than 20 bytes of TCP header after the IP header.
    TruncatedTcpHeader,
    /// TCP data offset below 5 words or beyond the segment.
    TcpDataOffset,
    /// An option length below 2 or running past the TCP header, met before
    /// any MSS option.
    TcpOption,
}

const IPV4_VERSION: u8 = 4;
const IPV6_VERSION: u8 = 6;
/// RFC 791: header without options.
const IPV4_MIN_HEADER_LEN: usize = 20;
/// RFC 8200: the fixed header.
const IPV6_HEADER_LEN: usize = 40;
/// IPv6's fixed header is this much larger than IPv4's minimal one.
const IPV6_EXTRA_HEADER_LEN: u16 = (IPV6_HEADER_LEN - IPV4_MIN_HEADER_LEN) as u16;
/// IANA protocol number of TCP.
const IPPROTO_TCP: u8 = 6;
/// RFC 791: the low 13 bits of bytes 6..8 are the fragment offset.
const IPV4_FRAGMENT_OFFSET_MASK: u16 = 0x1fff;
/// RFC 9293: header without options.
const TCP_MIN_HEADER_LEN: usize = 20;
/// RFC 9293: SYN is bit 1 of the flags byte (offset 13).
const TCP_FLAGS_OFFSET: usize = 13;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_DATA_OFFSET_OFFSET: usize = 12;
const TCP_CHECKSUM_OFFSET: usize = 16;
/// RFC 9293 option kinds.
const TCP_OPT_END: u8 = 0;
const TCP_OPT_NOP: u8 = 1;
const TCP_OPT_MSS: u8 = 2;
/// RFC 9293: kind, length, 16-bit value.
const TCP_OPT_MSS_LEN: usize = 4;

/// Clamps the MSS option of a TCP SYN inside an IPv4 or IPv6 packet.
pub fn clamp_mss(packet: &mut [u8], limit: MssLimit) -> MssOutcome {
    let Some(&first) = packet.first() else {
        return MssOutcome::Malformed(MalformedPacket::NotIp);
    };
    match first >> 4 {
        IPV4_VERSION => clamp_ipv4(packet, limit.get()),
        IPV6_VERSION => clamp_ipv6(packet, limit.for_ipv6()),
        _ => MssOutcome::Malformed(MalformedPacket::NotIp),
    }
}

fn clamp_ipv4(packet: &mut [u8], max_mss: u16) -> MssOutcome {
    let Some(header) = packet.first_chunk::<IPV4_MIN_HEADER_LEN>() else {
        return MssOutcome::Malformed(MalformedPacket::TruncatedIpHeader);
    };
    let header_len = usize::from(header[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_HEADER_LEN || header_len > packet.len() {
        return MssOutcome::Malformed(MalformedPacket::Ipv4HeaderLength);
    }
    if usize::from(u16::from_be_bytes([header[2], header[3]])) != packet.len() {
        return MssOutcome::Malformed(MalformedPacket::IpLengthMismatch);
    }
    if header[9] != IPPROTO_TCP {
        return MssOutcome::NotTcpSyn;
    }
    // A later fragment has no TCP header; a first fragment has one.
    if u16::from_be_bytes([header[6], header[7]]) & IPV4_FRAGMENT_OFFSET_MASK != 0 {
        return MssOutcome::NotTcpSyn;
    }
    match packet.get_mut(header_len..) {
        Some(segment) => clamp_segment(segment, Some(max_mss)),
        None => MssOutcome::Malformed(MalformedPacket::Ipv4HeaderLength),
    }
}

fn clamp_ipv6(packet: &mut [u8], max_mss: Option<u16>) -> MssOutcome {
    let Some(header) = packet.first_chunk::<IPV6_HEADER_LEN>() else {
        return MssOutcome::Malformed(MalformedPacket::TruncatedIpHeader);
    };
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if packet.len() - IPV6_HEADER_LEN != payload_len {
        return MssOutcome::Malformed(MalformedPacket::IpLengthMismatch);
    }
    if header[6] != IPPROTO_TCP {
        return MssOutcome::NotTcpSyn;
    }
    match packet.get_mut(IPV6_HEADER_LEN..) {
        Some(segment) => clamp_segment(segment, max_mss),
        None => MssOutcome::Malformed(MalformedPacket::TruncatedIpHeader),
    }
}

/// Clamps within a TCP segment (header and payload). `max_mss` is `None`
/// when no value may be clamped to (IPv6 with a configured MSS below 20).
fn clamp_segment(segment: &mut [u8], max_mss: Option<u16>) -> MssOutcome {
    let Some(header) = segment.first_chunk::<TCP_MIN_HEADER_LEN>() else {
        return MssOutcome::Malformed(MalformedPacket::TruncatedTcpHeader);
    };
    if header[TCP_FLAGS_OFFSET] & TCP_FLAG_SYN == 0 {
        return MssOutcome::NotTcpSyn;
    }
    let header_len = usize::from(header[TCP_DATA_OFFSET_OFFSET] >> 4) * 4;
    if header_len < TCP_MIN_HEADER_LEN || header_len > segment.len() {
        return MssOutcome::Malformed(MalformedPacket::TcpDataOffset);
    }
    let Some(max_mss) = max_mss else {
        return MssOutcome::Unchanged;
    };

    let mut clamped = None;
    let mut pos = TCP_MIN_HEADER_LEN;
    // Each pass moves `pos` forward by at least one byte, and it never passes
    // `header_len` (at most 60, RFC 9293), so the walk ends within 40 passes.
    // A final lone byte cannot begin a kind-length option and is not read,
    // as in both C implementations.
    while header_len - pos > 1 {
        let (Some(&kind), Some(&len)) = (segment.get(pos), segment.get(pos + 1)) else {
            break;
        };
        if kind == TCP_OPT_END {
            break;
        }
        if kind == TCP_OPT_NOP {
            pos += 1;
            continue;
        }
        let len = usize::from(len);
        // Below 2 the length does not even cover kind and length; OpenVPN and
        // ovpn-dco-win only stop on 0, but a receiving stack (Linux's
        // tcp_parse_options, for one) stops on 1 too and ignores what
        // follows, so nothing after it is treated as an MSS here either.
        if len < 2 || len > header_len - pos {
            return match clamped {
                // The receiver honours options read before the bad one, so
                // an MSS already lowered stays lowered.
                Some(outcome) => outcome,
                None => MssOutcome::Malformed(MalformedPacket::TcpOption),
            };
        }
        if kind == TCP_OPT_MSS && len == TCP_OPT_MSS_LEN {
            if let Some(from) = lower_mss_option(segment, pos, max_mss) {
                clamped = clamped.or(Some(MssOutcome::Clamped { from, to: max_mss }));
            }
        }
        pos += len;
    }
    clamped.unwrap_or(MssOutcome::Unchanged)
}

/// Lowers the MSS option at `pos` to `max_mss` if it says more, adjusting the
/// checksum; returns the old value when it did.
fn lower_mss_option(segment: &mut [u8], pos: usize, max_mss: u16) -> Option<u16> {
    let value_at = pos + 2;
    let old_bytes: [u8; 2] = segment.get(value_at..value_at + 2)?.try_into().ok()?;
    let old = u16::from_be_bytes(old_bytes);
    if old <= max_mss {
        return None;
    }
    let check_bytes: [u8; 2] = segment.get(TCP_CHECKSUM_OFFSET..TCP_CHECKSUM_OFFSET + 2)?.try_into().ok()?;
    // After an odd number of NOPs the value straddles two checksummed words:
    // its first byte is the low half of one, its second the high half of the
    // next, so it counts byte-swapped (RFC 1071's byte-order independence).
    // OpenVPN and ovpn-dco-win assume the even case and leave a bad checksum
    // on such packets; the segment starts at an even offset of the
    // checksummed data (pseudo-header 12 or 40 bytes, IP header whole words),
    // so the parity of `value_at` decides.
    let (old_word, new_word) =
        if value_at % 2 == 0 { (old, max_mss) } else { (old.swap_bytes(), max_mss.swap_bytes()) };
    let check = adjust_checksum(u16::from_be_bytes(check_bytes), old_word, new_word);
    // Both ranges were just read, so both writes land.
    segment.get_mut(value_at..value_at + 2)?.copy_from_slice(&max_mss.to_be_bytes());
    segment.get_mut(TCP_CHECKSUM_OFFSET..TCP_CHECKSUM_OFFSET + 2)?.copy_from_slice(&check.to_be_bytes());
    Some(old)
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word of the checksummed
/// data changed from `old` to `new`, `HC' = ~(~HC + ~m + m')` in
/// one's-complement arithmetic.
fn adjust_checksum(check: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    // Three 16-bit terms: two folds bring the carries back in.
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    // --- An independent reference: full Internet checksum (RFC 1071). ---

    fn ones_complement_sum(chunks: &[&[u8]]) -> u16 {
        let mut sum: u64 = 0;
        for chunk in chunks {
            for pair in chunk.chunks(2) {
                let hi = u64::from(pair[0]) << 8;
                let lo = pair.get(1).copied().map_or(0, u64::from);
                sum += hi | lo;
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    fn tcp_pseudo_header(packet: &[u8]) -> Vec<u8> {
        if packet[0] >> 4 == 4 {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let tcp_len = (packet.len() - ihl) as u16;
            let mut p = Vec::from(&packet[12..20]);
            p.extend_from_slice(&[0, packet[9]]);
            p.extend_from_slice(&tcp_len.to_be_bytes());
            p
        } else {
            let tcp_len = (packet.len() - 40) as u32;
            let mut p = Vec::from(&packet[8..40]);
            p.extend_from_slice(&tcp_len.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, packet[6]]);
            p
        }
    }

    fn tcp_offset(packet: &[u8]) -> usize {
        if packet[0] >> 4 == 4 { usize::from(packet[0] & 0x0f) * 4 } else { 40 }
    }

    /// Whether the TCP checksum over pseudo-header and segment verifies.
    fn tcp_checksum_ok(packet: &[u8]) -> bool {
        let seg = &packet[tcp_offset(packet)..];
        ones_complement_sum(&[&tcp_pseudo_header(packet), seg]) == 0xffff
    }

    /// Fills in the TCP checksum (and the IPv4 header checksum) from scratch.
    fn seal(packet: &mut [u8]) {
        let off = tcp_offset(packet);
        let protocol = if packet[0] >> 4 == 4 { packet[9] } else { packet[6] };
        if protocol == IPPROTO_TCP {
            packet[off + 16..off + 18].copy_from_slice(&[0, 0]);
            let sum = ones_complement_sum(&[&tcp_pseudo_header(packet), &packet[off..]]);
            packet[off + 16..off + 18].copy_from_slice(&(!sum).to_be_bytes());
        }
        if packet[0] >> 4 == 4 {
            packet[10..12].copy_from_slice(&[0, 0]);
            let sum = ones_complement_sum(&[&packet[..off]]);
            packet[10..12].copy_from_slice(&(!sum).to_be_bytes());
        }
    }

    /// A TCP header with `flags` and `options` (padded to whole words by the
    /// caller), followed by `payload`.
    fn tcp_segment(flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let words = (20 + options.len()) / 4;
        let mut seg = Vec::new();
        seg.extend_from_slice(&[0xc3, 0x50, 0x01, 0xbb]); // ports 50000 -> 443
        seg.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // sequence
        seg.extend_from_slice(&0u32.to_be_bytes()); // acknowledgement
        seg.extend_from_slice(&[(words as u8) << 4, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
        seg.extend_from_slice(options);
        seg.extend_from_slice(payload);
        seg
    }

    fn ipv4(ip_options: &[u8], protocol: u8, flags_fragment: u16, l4: &[u8]) -> Vec<u8> {
        let ihl = (20 + ip_options.len()) / 4;
        let total = (ihl * 4 + l4.len()) as u16;
        let mut p = Vec::new();
        p.extend_from_slice(&[0x40 | ihl as u8, 0]);
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0xab, 0xcd]);
        p.extend_from_slice(&flags_fragment.to_be_bytes());
        p.extend_from_slice(&[64, protocol, 0, 0, 10, 8, 0, 2, 192, 0, 2, 33]);
        p.extend_from_slice(ip_options);
        p.extend_from_slice(l4);
        seal(&mut p);
        p
    }

    fn ipv6(next_header: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = Vec::from([0x60, 0x01, 0x23, 0x45]);
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next_header, 64]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x33]);
        p.extend_from_slice(l4);
        seal(&mut p);
        p
    }

    const SYN: u8 = 0x02;
    const SYN_ACK: u8 = 0x12;
    const ACK: u8 = 0x10;

    fn mss_option(value: u16) -> [u8; 4] {
        let v = value.to_be_bytes();
        [TCP_OPT_MSS, 4, v[0], v[1]]
    }

    /// What a Linux SYN carries: MSS, SACK permitted, timestamps, NOP, window scale.
    fn linux_syn_options(mss: u16) -> Vec<u8> {
        let mut o = Vec::from(mss_option(mss));
        o.extend_from_slice(&[4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7]);
        o
    }

    fn mss_of(packet: &[u8]) -> u16 {
        let off = tcp_offset(packet) + 20;
        assert_eq!(packet[off], TCP_OPT_MSS);
        u16::from_be_bytes([packet[off + 2], packet[off + 3]])
    }

    fn limit(mss: u16) -> MssLimit {
        MssLimit::new(mss).unwrap()
    }

    /// Clamps a copy; asserts that only the MSS value and the TCP checksum may
    /// have changed and that the checksum still verifies.
    fn clamp_checked(packet: &[u8], mss: u16) -> (MssOutcome, Vec<u8>) {
        let mut out = packet.to_vec();
        let outcome = clamp_mss(&mut out, limit(mss));
        assert!(tcp_checksum_ok(&out) == tcp_checksum_ok(packet), "checksum validity preserved");
        let diff: Vec<usize> = (0..out.len()).filter(|&i| out[i] != packet[i]).collect();
        match outcome {
            MssOutcome::Clamped { .. } => assert!(!diff.is_empty()),
            _ => assert!(diff.is_empty(), "{outcome:?} but bytes changed at {diff:?}"),
        }
        (outcome, out)
    }

    #[test]
    fn ipv4_syn_mss_is_lowered_and_checksum_stays_valid() {
        let packet = ipv4(&[], IPPROTO_TCP, 0x4000, &tcp_segment(SYN, &linux_syn_options(1460), &[]));
        assert!(tcp_checksum_ok(&packet));
        let (outcome, out) = clamp_checked(&packet, 1360);
        assert_eq!(outcome, MssOutcome::Clamped { from: 1460, to: 1360 });
        assert_eq!(mss_of(&out), 1360);
        assert!(tcp_checksum_ok(&out));
        // Equal to the freshly computed checksum, not merely valid.
        let mut resealed = out.clone();
        seal(&mut resealed);
        assert_eq!(out, resealed);
    }

    #[test]
    fn syn_ack_is_clamped_too() {
        let packet = ipv4(&[], IPPROTO_TCP, 0, &tcp_segment(SYN_ACK, &linux_syn_options(8960), b"x"));
        let (outcome, out) = clamp_checked(&packet, 1400);
        assert_eq!(outcome, MssOutcome::Clamped { from: 8960, to: 1400 });
        assert!(tcp_checksum_ok(&out));
    }

    #[test]
    fn an_mss_at_or_below_the_limit_is_left_alone() {
        for mss in [1360, 1000, 0] {
            let packet = ipv4(&[], IPPROTO_TCP, 0, &tcp_segment(SYN, &linux_syn_options(mss), &[]));
            assert_eq!(clamp_checked(&packet, 1360).0, MssOutcome::Unchanged, "mss {mss}");
        }
    }

    #[test]
    fn ipv4_header_options_are_skipped_by_ihl() {
        // IHL 6: a NOP-padded router-alert option.
        let packet = ipv4(&[0x94, 0x04, 0, 0], IPPROTO_TCP, 0, &tcp_segment(SYN, &mss_option(1460), &[]));
        let (outcome, out) = clamp_checked(&packet, 1300);
        assert_eq!(outcome, MssOutcome::Clamped { from: 1460, to: 1300 });
        assert_eq!(mss_of(&out), 1300);
        assert!(tcp_checksum_ok(&out));
    }

    #[test]
    fn mss_option_found_after_other_options() {
        let mut options = Vec::from([1u8, 1, 4, 2, 3, 3, 7, 1]); // NOP NOP SACK-perm WS NOP
        options.extend_from_slice(&mss_option(1460));
        let packet = ipv4(&[], IPPROTO_TCP, 0, &tcp_segment(SYN, &options, &[]));
        let (outcome, out) = clamp_checked(&packet, 1200);
        assert_eq!(outcome, MssOutcome::Clamped { from: 1460, to: 1200 });
        assert_eq!(&out[20 + 28..20 + 32], &mss_option(1200));
    }

    #[test]
    fn an_mss_at_an_odd_offset_keeps_the_checksum_valid() {
        // One NOP first puts the MSS value at an odd offset (23) of the segment.
        let mut options = Vec::from([TCP_OPT_NOP]);
        options.extend_from_slice(&mss_option(0xc300));
        options.extend_from_slice(&[TCP_OPT_NOP, TCP_OPT_NOP, TCP_OPT_NOP]);
        for packet in [
            ipv4(&[], IPPROTO_TCP, 0, &tcp_segment(SYN, &options, &[])),
            ipv6(IPPROTO_TCP, &tcp_segment(SYN, &options, &[7])),
        ] {
            let (outcome, out) = clamp_checked(&packet, 1421);
            let to = if packet[0] >> 4 == 4 { 1421 } else { 1401 };
            assert_eq!(outcome, MssOutcome::Clamped { from: 0xc300, to });
            assert!(tcp_checksum_ok(&out));
        }
    }

    #[test]
    fn ipv6_syn_is_clamped_to_mss_minus_20() {
        let packet = ipv6(IPPROTO_TCP, &tcp_segment(SYN, &linux_syn_options(1440), &[]));
        assert!(tcp_checksum_ok(&packet));
        let (outcome, out) = clamp_checked(&packet, 1400);
        // ovpn-dco-win mss.cpp and OpenVPN mss.c: IPv6 uses mss - 20.
        assert_eq!(outcome, MssOutcome::Clamped { from: 1440, to: 1380 });
        assert_eq!(mss_of(&out), 1380);
        assert!(tcp_checksum_ok(&out));
        // 1380 itself is already fine for a limit of 1400.
        assert_eq!(clamp_checked(&out, 1400).0, MssOutcome::Unchanged);
    }

    #[test]
    fn ipv6_below_twenty_clamps_nothing() {
        assert_eq!(limit(20).for_ipv6(), Some(0));
        assert_eq!(limit(19).for_ipv6(), None);
        let packet = ipv6(IPPROTO_TCP, &tcp_segment(SYN, &mss_option(1440), &[]));
        assert_eq!(clamp_checked(&packet, 19).0, MssOutcome::Unchanged);
    }

    #[test]
    fn ipv6_extension_headers_are_not_walked() {
        // Hop-by-hop (0) in front of TCP: neither C implementation follows it.
        let mut l4 = Vec::from([IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
        l4.extend_from_slice(&tcp_segment(SYN, &mss_option(1440), &[]));
        let packet = ipv6(0, &l4);
        assert_eq!(clamp_checked(&packet, 1000).0, MssOutcome::NotTcpSyn);
    }

    #[test]
    fn non_syn_and_non_tcp_are_not_touched() {
        let ack = ipv4(&[], IPPROTO_TCP, 0, &tcp_segment(ACK, &mss_option(1460), &[]));
        assert_eq!(clamp_checked(&ack, 1000).0, MssOutcome::NotTcpSyn);
        let udp = ipv4(&[], 17, 0, &[0x13, 0x88, 0x13, 0x88, 0, 28, 0, 0, 2, 4, 5, 0xb4, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(clamp_mss(&mut udp.clone(), limit(1000)), MssOutcome::NotTcpSyn);
        let ack6 = ipv6(IPPROTO_TCP, &tcp_segment(ACK, &mss_option(1460), &[]));
        assert_eq!(clamp_checked(&ack6, 1000).0, MssOutcome::NotTcpSyn);
    }

    #[test]
    fn only_first_ipv4_fragments_are_clamped() {
        let seg = tcp_segment(SYN, &mss_option(1460), &[0; 8]);
        // More-fragments set, offset 0: the TCP header is here.
        let first = ipv4(&[], IPPROTO_TCP, 0x2000, &seg);
        assert_eq!(clamp_checked(&first, 1000).0, MssOutcome::Clamped { from: 1460, to: 1000 });
        // Offset 1 (8 bytes): what looks like a SYN is payload.
        let later = ipv4(&[], IPPROTO_TCP, 0x0001, &seg);
        assert_eq!(clamp_checked(&later, 1000).0, MssOutcome::NotTcpSyn);
    }

    #[test]
    fn a_syn_without_options_or_mss_is_unchanged() {
        let bare = ipv4(&[], IPPROTO_TCP, 0, &tcp_segment(SYN, &[], &[]));
        assert_eq!(clamp_checked(&bare, 1000).0, MssOutcome::Unchanged);
        let no_mss = ipv4(&[], IPPROTO_TCP, 0, &tcp_segment(SYN, &[1, 3, 3, 7], &[]));
        assert_eq!(clamp_checked(&no_mss, 1000).0, MssOutcome::Unchanged);
        // End of options list first: the MSS after it is not an option.
        let mut options = Vec::from([TCP_OPT_END, 0, 0, 0]);
        options.extend_from_slice(&mss_option(1460));
        let ended = ipv4(&[], IPPROTO_TCP, 0, &tcp_segment(SYN, &options, &[]));
        assert_eq!(clamp_checked(&ended, 1000).0, MssOutcome::Unchanged);
        // Kind 2 with a length other than 4 is skipped, as in both C drivers.
        let odd = ipv4(&[], IPPROTO_TCP, 0, &tcp_segment(SYN, &[2, 3, 0xff, 1, 2, 4, 0x05, 0xb4], &[]));
        let (outcome, out) = clamp_checked(&odd, 1000);
        assert_eq!(outcome, MssOutcome::Clamped { from: 1460, to: 1000 });
        assert_eq!(&out[44..48], &mss_option(1000));
    }

    #[test]
    fn malformed_options_stop_the_walk() {
        for bad in [[8u8, 0], [8, 1], [8, 40]] {
            let mut options = Vec::from(bad);
            options.extend_from_slice(&[1, 1]);
            options.extend_from_slice(&mss_option(1460));
            let packet = ipv4(&[], IPPROTO_TCP, 0, &tcp_segment(SYN, &options, &[]));
            assert_eq!(
                clamp_checked(&packet, 1000).0,
                MssOutcome::Malformed(MalformedPacket::TcpOption),
                "option {bad:?}"
            );
        }
        // An MSS before the bad option is still lowered: receivers honour it.
        let mut options = Vec::from(mss_option(1460));
        options.extend_from_slice(&[8, 0, 1, 1]);
        let packet = ipv4(&[], IPPROTO_TCP, 0, &tcp_segment(SYN, &options, &[]));
        assert_eq!(clamp_checked(&packet, 1000).0, MssOutcome::Clamped { from: 1460, to: 1000 });
    }

    #[test]
    fn option_lengths_are_bounded_by_the_data_offset_not_the_packet() {
        // The MSS option's length would reach into the payload: malformed.
        let mut seg = tcp_segment(SYN, &[1, 1, 1, 1], &mss_option(1460));
        seg[20..24].copy_from_slice(&[1, 1, 2, 4]);
        let packet = ipv4(&[], IPPROTO_TCP, 0, &seg);
        assert_eq!(clamp_checked(&packet, 1000).0, MssOutcome::Malformed(MalformedPacket::TcpOption));
    }

    #[test]
    fn broken_headers_are_reported_and_untouched() {
        let good = ipv4(&[], IPPROTO_TCP, 0, &tcp_segment(SYN, &mss_option(1460), &[]));
        let check = |mut p: Vec<u8>, want: MalformedPacket| {
            let before = p.clone();
            assert_eq!(clamp_mss(&mut p, limit(1000)), MssOutcome::Malformed(want));
            assert_eq!(p, before);
        };
        check(Vec::new(), MalformedPacket::NotIp);
        check(Vec::from([0x55; 40]), MalformedPacket::NotIp);
        check(good[..19].to_vec(), MalformedPacket::TruncatedIpHeader);
        check(Vec::from([0x60; 39]), MalformedPacket::TruncatedIpHeader);

        let mut p = good.clone();
        p[0] = 0x44; // IHL 4
        check(p, MalformedPacket::Ipv4HeaderLength);
        let mut p = good[..20].to_vec();
        p[0] = 0x46; // IHL 6 in a 20-byte packet
        check(p, MalformedPacket::Ipv4HeaderLength);

        check(good[..good.len() - 1].to_vec(), MalformedPacket::IpLengthMismatch);
        let mut padded = good.clone();
        padded.push(0);
        check(padded, MalformedPacket::IpLengthMismatch);

        let mut p = good[..30].to_vec();
        p[2..4].copy_from_slice(&30u16.to_be_bytes());
        check(p, MalformedPacket::TruncatedTcpHeader);

        let mut p = good.clone();
        p[20 + 12] = 0x40; // data offset 4
        check(p, MalformedPacket::TcpDataOffset);
        let mut p = good.clone();
        p[20 + 12] = 0xf0; // 60 bytes of header in a 24-byte segment
        check(p, MalformedPacket::TcpDataOffset);

        let good6 = ipv6(IPPROTO_TCP, &tcp_segment(SYN, &mss_option(1460), &[]));
        check(good6[..good6.len() - 2].to_vec(), MalformedPacket::IpLengthMismatch);
        let mut p = good6[..50].to_vec();
        p[4..6].copy_from_slice(&10u16.to_be_bytes());
        check(p, MalformedPacket::TruncatedTcpHeader);
    }

    #[test]
    fn every_truncation_of_a_syn_is_safe() {
        let full = ipv6(IPPROTO_TCP, &tcp_segment(SYN, &linux_syn_options(1460), b"abc"));
        for cut in 0..full.len() {
            // Keep the IP length consistent so the checks go past it.
            let mut p = full[..cut].to_vec();
            if p.len() >= 40 {
                let payload = (p.len() - 40) as u16;
                p[4..6].copy_from_slice(&payload.to_be_bytes());
            }
            let before = p.clone();
            let outcome = clamp_mss(&mut p, limit(1000));
            if !matches!(outcome, MssOutcome::Clamped { .. }) {
                assert_eq!(p, before, "cut {cut}: {outcome:?}");
            }
        }
    }

    #[test]
    fn limit_zero_means_off() {
        assert_eq!(MssLimit::new(0), None);
        assert_eq!(MssLimit::new(1360).map(MssLimit::get), Some(1360));
    }

    #[test]
    fn adjust_checksum_matches_rfc_1624_example() {
        // RFC 1624's worked example (section 3): HC = 0xDD2F, m = 0x5555 -> m' = 0x3285 gives 0x0000.
        assert_eq!(adjust_checksum(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    proptest::proptest! {
        #[test]
        fn clamped_syns_always_verify(
            v6 in proptest::bool::ANY,
            from in proptest::num::u16::ANY,
            max in 21u16..=u16::MAX,
            nops in 0usize..4,
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            seq in proptest::num::u32::ANY,
        ) {
            let mut options = std::vec![TCP_OPT_NOP; nops];
            options.extend_from_slice(&mss_option(from));
            while options.len() % 4 != 0 {
                options.push(TCP_OPT_END);
            }
            let mut seg = tcp_segment(SYN, &options, &payload);
            seg[4..8].copy_from_slice(&seq.to_be_bytes());
            let packet = if v6 { ipv6(IPPROTO_TCP, &seg) } else { ipv4(&[], IPPROTO_TCP, 0, &seg) };
            let mut out = packet.clone();
            let outcome = clamp_mss(&mut out, limit(max));
            let effective = if v6 { max - 20 } else { max };
            if from > effective {
                proptest::prop_assert_eq!(outcome, MssOutcome::Clamped { from, to: effective });
            } else {
                proptest::prop_assert_eq!(outcome, MssOutcome::Unchanged);
                proptest::prop_assert_eq!(&out, &packet);
            }
            proptest::prop_assert!(tcp_checksum_ok(&out));
        }

        #[test]
        fn random_bytes_never_panic_and_change_only_on_clamp(
            mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120),
            version in proptest::prop_oneof![proptest::strategy::Just(4u8), proptest::strategy::Just(6u8), 0u8..16],
            fix_lengths in proptest::bool::ANY,
            max in 1u16..=u16::MAX,
        ) {
            // Steer half the inputs past the IP checks so the TCP walk sees garbage.
            if let Some(b) = bytes.first_mut() {
                *b = (version << 4) | (*b & 0x0f);
            }
            if fix_lengths && bytes.len() >= 40 {
                let len = bytes.len();
                if version == 4 {
                    bytes[0] = 0x45;
                    bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                    bytes[6..8].copy_from_slice(&[0, 0]);
                    bytes[9] = IPPROTO_TCP;
                    bytes[33] |= SYN;
                } else if version == 6 {
                    bytes[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
                    bytes[6] = IPPROTO_TCP;
                }
            }
            let before = bytes.clone();
            let outcome = clamp_mss(&mut bytes, limit(max));
            if !matches!(outcome, MssOutcome::Clamped { .. }) {
                proptest::prop_assert_eq!(bytes, before);
            }
        }
    }
}
