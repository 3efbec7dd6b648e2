//! TCP segmentation and coalescing at the TUN device (`IFF_VNET_HDR` with
//! `TUNSETOFFLOAD`), the way a virtio NIC's host side does it: the kernel
//! hands the tunnel TCP super-packets of up to 64 KiB (one trip through
//! its TCP/IP output instead of one per segment) and takes back coalesced
//! ones (one trip through TCP/IP input). The adapter only ever sees
//! ordinary packets of at most the MTU: [`segment`] cuts what the TUN read
//! returned, and [`Coalescer`] joins what the RX queue delivered, byte for
//! byte what the segments would have been.
//!
//! Every packet starts with a `virtio_net_hdr` (10 bytes, host byte order,
//! which `tun` uses on little-endian hosts).

use std::vec::Vec;

/// `sizeof(struct virtio_net_hdr)`.
pub const VNET_HDR_LEN: usize = 10;

/// The largest TUN read or write with offloads: an IP datagram and the
/// header.
pub const OFFLOAD_PACKET_MAX: usize = VNET_HDR_LEN + 65_535;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start +
/// csum_offset` holds the pseudo-header sum; the rest is to be added.
const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

const IPPROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
/// Flags a coalesced run may carry: ACK, and PSH on its last segment.
const TCP_ACK: u8 = 0x10;

/// Segments one coalesced packet carries at most (the kernel's GRO limit).
const COALESCE_SEGMENTS_MAX: usize = 64;

/// `struct virtio_net_hdr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    pub fn bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// Why a TUN read could not be made into packets (it is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffloadError {
    /// Shorter than the header, or the headers it names.
    Truncated,
    /// A GSO type other than TCP over IPv4/IPv6, or a zero segment size.
    UnsupportedGso,
    /// A super-packet that is not plain IPv4/IPv6 + TCP (options in the
    /// IPv4 header are fine; IPv6 extension headers are not).
    NotTcp,
    /// The checksum position lies outside the packet.
    BadChecksumOffset,
}

/// Ones'-complement sum of `data` (big-endian 16-bit words, an odd last
/// byte padded) added to `sum`, not folded.
pub fn add_words(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        sum += (w >> 48) + ((w >> 32) & 0xFFFF) + ((w >> 16) & 0xFFFF) + (w & 0xFFFF);
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = rest.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a sum to 16 bits.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

/// The pseudo-header sum of a TCP segment of `tcp_len` bytes in `ip`.
fn pseudo_sum(ip: &[u8], v6: bool, tcp_len: usize) -> u64 {
    let (src, dst) = if v6 { (&ip[8..24], &ip[24..40]) } else { (&ip[12..16], &ip[16..20]) };
    add_words(add_words(u64::from(IPPROTO_TCP) + tcp_len as u64, src), dst)
}

/// The IPv4 header checksum of `header` (its checksum field zeroed first).
fn set_ipv4_checksum(header: &mut [u8]) {
    header[10..12].fill(0);
    let c = !fold(add_words(0, header));
    header[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Sets the TCP checksum of the segment `packet` (IP header `ip_len` bytes).
fn set_tcp_checksum(packet: &mut [u8], ip_len: usize, v6: bool) {
    let tcp_len = packet.len() - ip_len;
    packet[ip_len + 16..ip_len + 18].fill(0);
    let sum = add_words(pseudo_sum(packet, v6, tcp_len), &packet[ip_len..]);
    let c = !fold(sum);
    packet[ip_len + 16..ip_len + 18].copy_from_slice(&c.to_be_bytes());
}

/// Whether the TCP checksum of the segment `packet` is right.
fn tcp_checksum_ok(packet: &[u8], ip_len: usize, v6: bool) -> bool {
    let tcp_len = packet.len() - ip_len;
    fold(add_words(pseudo_sum(packet, v6, tcp_len), &packet[ip_len..])) == 0xFFFF
}

/// An IP + TCP packet's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TcpLayout {
    v6: bool,
    ip_len: usize,
    /// IP + TCP headers.
    hdr_len: usize,
}

fn tcp_layout(p: &[u8]) -> Option<TcpLayout> {
    let (v6, ip_len) = match p.first()? >> 4 {
        4 => (false, usize::from(p[0] & 0x0F) * 4),
        6 => (true, 40),
        _ => return None,
    };
    if ip_len < 20 || p.len() < ip_len + 20 {
        return None;
    }
    let proto = if v6 { p[6] } else { p[9] };
    if proto != IPPROTO_TCP {
        return None;
    }
    let hdr_len = ip_len + usize::from(p[ip_len + 12] >> 4) * 4;
    (hdr_len >= ip_len + 20 && p.len() >= hdr_len).then_some(TcpLayout { v6, ip_len, hdr_len })
}

/// Completes a partial checksum (`F_NEEDS_CSUM`) in place.
fn complete_checksum(p: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let at = start.checked_add(offset).ok_or(OffloadError::BadChecksumOffset)?;
    if at + 2 > p.len() || start > p.len() {
        return Err(OffloadError::BadChecksumOffset);
    }
    let c = !fold(add_words(0, &p[start..]));
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// What one TUN read returned (header included), as the packets the
/// adapter takes: each handed to `emit`, built in `scratch`. A TCP
/// super-packet is cut into `gso_size` segments with their own lengths,
/// IPv4 ids, sequence numbers, flags and checksums; a packet with a partial
/// checksum gets it completed.
pub fn segment(read: &mut [u8], scratch: &mut Vec<u8>, emit: &mut dyn FnMut(&[u8])) -> Result<(), OffloadError> {
    let hdr = VnetHdr::parse(read).ok_or(OffloadError::Truncated)?;
    let p = &mut read[VNET_HDR_LEN..];
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                complete_checksum(p, usize::from(hdr.csum_start), usize::from(hdr.csum_offset))?;
            }
            emit(p);
            Ok(())
        }
        GSO_TCPV4 | GSO_TCPV6 if hdr.gso_size > 0 => {
            let l = tcp_layout(p).ok_or(OffloadError::NotTcp)?;
            if l.v6 != (hdr.gso_type & !GSO_ECN == GSO_TCPV6) {
                return Err(OffloadError::NotTcp);
            }
            let (headers, payload) = p.split_at(l.hdr_len);
            let mss = usize::from(hdr.gso_size);
            let seq = u32::from_be_bytes([
                headers[l.ip_len + 4],
                headers[l.ip_len + 5],
                headers[l.ip_len + 6],
                headers[l.ip_len + 7],
            ]);
            let id = u16::from_be_bytes([headers[4], headers[5]]);
            let flags = headers[l.ip_len + 13];
            let count = payload.len().div_ceil(mss).max(1);
            for (i, chunk) in payload.chunks(mss).chain(payload.is_empty().then_some(&[][..])).enumerate() {
                scratch.clear();
                scratch.extend_from_slice(headers);
                scratch.extend_from_slice(chunk);
                let total = scratch.len();
                if l.v6 {
                    let plen = u16::try_from(total - 40).map_err(|_| OffloadError::Truncated)?;
                    scratch[4..6].copy_from_slice(&plen.to_be_bytes());
                } else {
                    let tlen = u16::try_from(total).map_err(|_| OffloadError::Truncated)?;
                    scratch[2..4].copy_from_slice(&tlen.to_be_bytes());
                    scratch[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
                    set_ipv4_checksum(&mut scratch[..l.ip_len]);
                }
                let t = l.ip_len;
                let s = seq.wrapping_add((i * mss) as u32);
                scratch[t + 4..t + 8].copy_from_slice(&s.to_be_bytes());
                let mut f = flags;
                if i + 1 < count {
                    f &= !(TCP_FIN | TCP_PSH);
                }
                if i > 0 {
                    f &= !TCP_CWR;
                }
                scratch[t + 13] = f;
                set_tcp_checksum(scratch, t, l.v6);
                emit(scratch);
            }
            Ok(())
        }
        _ => Err(OffloadError::UnsupportedGso),
    }
}

/// Joins consecutive in-order segments of one TCP flow (as the RX queue
/// delivers a bulk transfer) into one super-packet for a TUN write. Only
/// segments whose checksum is right, whose headers equal the first one's
/// but for the lengths, IPv4 id and checksums and the sequence number, and
/// which carry only ACK (PSH allowed on the last) are joined; everything
/// else is written as it came.
pub struct Coalescer {
    /// vnet header room, then the super-packet.
    buf: Vec<u8>,
    layout: Option<TcpLayout>,
    /// Payload bytes of each segment (the last may be shorter).
    segment: usize,
    segments: usize,
    next_seq: u32,
    /// The run ended (a short or PSH segment): nothing more joins it.
    closed: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the coalescer sends whole TUN writes (vnet header included).
pub trait Writer {
    fn write(&mut self, parts: &[&[u8]]);
}

impl Coalescer {
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(OFFLOAD_PACKET_MAX),
            layout: None,
            segment: 0,
            segments: 0,
            next_seq: 0,
            closed: false,
        }
    }

    /// Whether `p` (layout `l`) continues the run held.
    fn joins(&self, p: &[u8], l: &TcpLayout) -> bool {
        let Some(held) = &self.layout else { return false };
        let first = &self.buf[VNET_HDR_LEN..];
        let payload = p.len() - l.hdr_len;
        let t = l.ip_len;
        let same_headers = if l.v6 {
            // Version/class/flow, next header, hop limit, addresses.
            p[..4] == first[..4] && p[6..40] == first[6..40]
        } else {
            // Version/IHL/TOS, flags/fragment, TTL/protocol, addresses and
            // options.
            p[..2] == first[..2] && p[6..10] == first[6..10] && p[12..t] == first[12..t]
        };
        !self.closed
            && held == l
            && same_headers
            // Ports, ack, data offset, window, urgent pointer, options.
            && p[t..t + 4] == first[t..t + 4]
            && p[t + 8..t + 13] == first[t + 8..t + 13]
            && p[t + 14..t + 16] == first[t + 14..t + 16]
            && p[t + 18..l.hdr_len] == first[t + 18..l.hdr_len]
            && p[t + 13] & !TCP_PSH == TCP_ACK
            && payload > 0
            && payload <= self.segment
            && u32::from_be_bytes([p[t + 4], p[t + 5], p[t + 6], p[t + 7]]) == self.next_seq
            && self.segments < COALESCE_SEGMENTS_MAX
            && self.buf.len() + payload <= OFFLOAD_PACKET_MAX
    }

    /// One delivered packet: joined to the run held, or the run is written
    /// and this one starts the next (or goes out alone).
    pub fn push(&mut self, parts: &[&[u8]], out: &mut dyn Writer) {
        let [p] = parts else {
            self.flush(out);
            out.write(&[&VnetHdr::default().bytes(), parts.concat().as_slice()]);
            return;
        };
        let layout = tcp_layout(p).filter(|l| {
            let t = l.ip_len;
            let plain_v4 =
                l.v6 || (p[6] & 0x3F == 0 && p[7] == 0 && usize::from(u16::from_be_bytes([p[2], p[3]])) == p.len());
            let plain_v6 = !l.v6 || usize::from(u16::from_be_bytes([p[4], p[5]])) + 40 == p.len();
            plain_v4
                && plain_v6
                && p[t + 13] & !TCP_PSH == TCP_ACK
                && p.len() > l.hdr_len
                && tcp_checksum_ok(p, l.ip_len, l.v6)
        });
        let Some(l) = layout else {
            self.flush(out);
            out.write(&[&VnetHdr::default().bytes(), p]);
            return;
        };
        let payload = p.len() - l.hdr_len;
        let seq = u32::from_be_bytes([p[l.ip_len + 4], p[l.ip_len + 5], p[l.ip_len + 6], p[l.ip_len + 7]]);
        if self.joins(p, &l) {
            self.buf.extend_from_slice(&p[l.hdr_len..]);
            self.segments += 1;
            self.next_seq = seq.wrapping_add(payload as u32);
            let t = VNET_HDR_LEN + l.ip_len;
            // PSH moves to the run's header and ends it, as does a short one.
            if p[l.ip_len + 13] & TCP_PSH != 0 {
                self.buf[t + 13] |= TCP_PSH;
                self.closed = true;
            }
            if payload < self.segment {
                self.closed = true;
            }
            return;
        }
        self.flush(out);
        self.buf.clear();
        self.buf.extend_from_slice(&[0; VNET_HDR_LEN]);
        self.buf.extend_from_slice(p);
        self.layout = Some(l);
        self.segment = payload;
        self.segments = 1;
        self.next_seq = seq.wrapping_add(payload as u32);
        self.closed = p[l.ip_len + 13] & TCP_PSH != 0;
    }

    /// Writes the run held, if any: as it came if it is one segment,
    /// else as one super-packet whose headers say what the segments were.
    pub fn flush(&mut self, out: &mut dyn Writer) {
        let Some(l) = self.layout.take() else { return };
        if self.segments > 1 {
            let p = &mut self.buf[VNET_HDR_LEN..];
            let total = p.len();
            if l.v6 {
                p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            } else {
                p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                set_ipv4_checksum(&mut p[..l.ip_len]);
            }
            // The pseudo-header sum for the whole segment, as a sender
            // with checksum offload leaves it: every segment was checked.
            let pseudo = fold(pseudo_sum(p, l.v6, total - l.ip_len));
            p[l.ip_len + 16..l.ip_len + 18].copy_from_slice(&pseudo.to_be_bytes());
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: if l.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
                hdr_len: l.hdr_len as u16,
                gso_size: self.segment as u16,
                csum_start: l.ip_len as u16,
                csum_offset: 16,
            };
            self.buf[..VNET_HDR_LEN].copy_from_slice(&hdr.bytes());
        }
        out.write(&[&self.buf]);
        self.segments = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 (or IPv6) TCP segment with a right checksum.
    fn tcp(v6: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let ip_len = if v6 { 40 } else { 20 };
        let mut p = std::vec![0u8; ip_len + 20];
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            p[6] = IPPROTO_TCP;
            p[7] = 64;
            p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
            p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
            p[6] = 0x40;
            p[8] = 64;
            p[9] = IPPROTO_TCP;
            p[12..16].copy_from_slice(&[10, 0, 0, 1]);
            p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        }
        let t = ip_len;
        p[t..t + 2].copy_from_slice(&5201u16.to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&40000u16.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        p[t + 8..t + 12].copy_from_slice(&77u32.to_be_bytes());
        p[t + 12] = 5 << 4;
        p[t + 13] = flags;
        p[t + 14..t + 16].copy_from_slice(&512u16.to_be_bytes());
        p.extend_from_slice(payload);
        if !v6 {
            set_ipv4_checksum(&mut p[..20]);
        }
        set_tcp_checksum(&mut p, t, v6);
        p
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[derive(Default)]
    struct Sink(Vec<Vec<u8>>);

    impl Writer for Sink {
        fn write(&mut self, parts: &[&[u8]]) {
            self.0.push(parts.concat());
        }
    }

    /// RFC 1071 §3's example: the words 0x0001, 0xf203, 0xf4f5, 0xf6f7
    /// sum to 0xddf2 (folded).
    #[test]
    fn the_sum_is_rfc_1071s() {
        assert_eq!(fold(add_words(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])), 0xddf2);
        assert_eq!(
            fold(add_words(0, &[0xff, 0xff, 0xff])),
            0xff00,
            "odd length: the last byte is the high half (0xffff + 0xff00)"
        );
    }

    #[test]
    fn a_super_packet_is_cut_into_the_segments_a_stack_would_send() {
        for v6 in [false, true] {
            let body = data(3000);
            let mut sup = tcp(v6, 1000, TCP_ACK | TCP_PSH, &body);
            let ip_len = if v6 { 40 } else { 20 };
            // As the kernel leaves it: the pseudo-header sum, not the checksum.
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
                hdr_len: (ip_len + 20) as u16,
                gso_size: 1400,
                csum_start: ip_len as u16,
                csum_offset: 16,
            };
            sup[ip_len + 16..ip_len + 18].fill(0xAB);
            let mut read = hdr.bytes().to_vec();
            read.extend_from_slice(&sup);
            let mut got = Vec::new();
            segment(&mut read, &mut Vec::new(), &mut |p| got.push(p.to_vec())).unwrap();
            let want = [
                tcp(v6, 1000, TCP_ACK, &body[..1400]),
                tcp(v6, 2400, TCP_ACK, &body[1400..2800]),
                tcp(v6, 3800, TCP_ACK | TCP_PSH, &body[2800..]),
            ];
            let mut want = want.to_vec();
            if !v6 {
                // Each segment its own IPv4 id.
                for (i, w) in want.iter_mut().enumerate() {
                    w[4..6].copy_from_slice(&(0x1234u16 + i as u16).to_be_bytes());
                    set_ipv4_checksum(&mut w[..20]);
                }
            }
            assert_eq!(got, want, "v6 {v6}");
        }
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let mut p = tcp(false, 1, TCP_ACK, &data(100));
        let right = p.clone();
        // The stack left the pseudo-header sum in the field.
        let pseudo = fold(pseudo_sum(&p, false, p.len() - 20));
        p[36..38].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 20, csum_offset: 16, ..VnetHdr::default() };
        let mut read = hdr.bytes().to_vec();
        read.extend_from_slice(&p);
        let mut got = Vec::new();
        segment(&mut read, &mut Vec::new(), &mut |p| got.push(p.to_vec())).unwrap();
        assert_eq!(got, [right]);
        let bad = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 20, csum_offset: 500, ..VnetHdr::default() };
        let mut read = bad.bytes().to_vec();
        read.extend_from_slice(&p);
        assert_eq!(segment(&mut read, &mut Vec::new(), &mut |_| {}), Err(OffloadError::BadChecksumOffset));
    }

    #[test]
    fn in_order_segments_join_and_cutting_the_join_gives_them_back() {
        for v6 in [false, true] {
            let body = data(5000);
            let segs: Vec<Vec<u8>> = body
                .chunks(1400)
                .enumerate()
                .map(|(i, c)| {
                    let flags = if (i + 1) * 1400 >= body.len() { TCP_ACK | TCP_PSH } else { TCP_ACK };
                    tcp(v6, 500 + (i * 1400) as u32, flags, c)
                })
                .collect();
            let mut c = Coalescer::new();
            let mut sink = Sink::default();
            for s in &segs {
                c.push(&[s], &mut sink);
            }
            assert!(sink.0.is_empty(), "held until the flush");
            c.flush(&mut sink);
            assert_eq!(sink.0.len(), 1, "one write");
            let mut joined = sink.0.remove(0);
            let hdr = VnetHdr::parse(&joined).unwrap();
            assert_eq!(hdr.gso_size, 1400);
            assert_eq!(hdr.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
            // The kernel would cut it back into the same segments (IPv4 ids
            // aside, which it numbers from the first).
            let mut again = Vec::new();
            segment(&mut joined, &mut Vec::new(), &mut |p| again.push(p.to_vec())).unwrap();
            let mut want = segs.clone();
            if !v6 {
                for (i, w) in want.iter_mut().enumerate() {
                    w[4..6].copy_from_slice(&(0x1234u16 + i as u16).to_be_bytes());
                    set_ipv4_checksum(&mut w[..20]);
                }
            }
            assert_eq!(again, want, "v6 {v6}");
        }
    }

    #[test]
    fn gaps_other_flows_bad_checksums_and_control_flags_are_not_joined() {
        let a = tcp(false, 100, TCP_ACK, &data(1000));
        let gap = tcp(false, 1200, TCP_ACK, &data(1000));
        let fin = tcp(false, 2200, TCP_ACK | TCP_FIN, &data(10));
        let mut bad = tcp(false, 2210, TCP_ACK, &data(1000));
        *bad.last_mut().unwrap() ^= 1;
        let mut c = Coalescer::new();
        let mut sink = Sink::default();
        for p in [&a, &gap, &fin, &bad] {
            c.push(&[p], &mut sink);
        }
        c.flush(&mut sink);
        let plain = |p: &Vec<u8>| [VnetHdr::default().bytes().to_vec(), p.clone()].concat();
        assert_eq!(sink.0, [plain(&a), plain(&gap), plain(&fin), plain(&bad)], "each written as it came");
    }
}
