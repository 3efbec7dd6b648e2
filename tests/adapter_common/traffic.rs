//! Traffic that checks itself, for long and hostile runs: every inner
//! packet says who sent it, its sequence number and its length, and its
//! payload is a function of those three, so the receiving side checks every
//! byte without a copy of what was sent. A [`Ledger`] records what each
//! node sent and what each received (at most once), and [`Balance`] ties
//! the data paths' counters to what the network did.
//!
//! Node 0 is the server (10.8.0.1, fd00::1); node k a client (10.8.0.1+k,
//! fd00::1+k).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ovpn_dco::datapath::DropReason;
use ovpn_dco::os::host::wsk::LoopbackStats;

use super::Node;

/// Shortest inner packets: one payload byte behind the header.
pub const IPV4_MIN: usize = 21;
pub const IPV6_MIN: usize = 41;
/// The adapter's MTU (the model's MaximumFrameSize).
pub const MTU: usize = 1500;
/// IP protocol 253 (RFC 3692, for experiments): nothing in the path
/// treats it specially.
const PROTO: u8 = 253;

pub fn vpn4(node: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 8, 0, 1 + node)
}

pub fn vpn6(node: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1 + u16::from(node))
}

fn node_of(addr: IpAddr) -> Option<u8> {
    let last = match addr {
        IpAddr::V4(a) if a.octets()[..3] == [10, 8, 0] => a.octets()[3],
        IpAddr::V6(a) if a.segments()[..7] == [0xfd00, 0, 0, 0, 0, 0, 0] => u8::try_from(a.segments()[7]).ok()?,
        _ => return None,
    };
    last.checked_sub(1)
}

fn pattern(src: u8, seq: u32, len: usize, i: usize) -> u8 {
    let x = (seq as usize).wrapping_mul(0x9E37_79B1).wrapping_add(len.wrapping_mul(31)).wrapping_add(i * 0x45);
    (x >> 3) as u8 ^ (i as u8).rotate_left(3) ^ src
}

/// IPv4 header checksum (RFC 791) over `h`.
fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The inner packet `seq` of node `src` to node `dst`: IPv4 or IPv6, `len`
/// bytes in all (at least [`IPV4_MIN`] / [`IPV6_MIN`], at most [`MTU`]).
/// The sequence number sits in header fields nobody on the path reads
/// (IPv4 identification and fragment field, IPv6 traffic class, flow label
/// and hop limit), so even a one-byte payload carries it.
pub fn inner(v6: bool, src: u8, dst: u8, seq: u32, len: usize) -> Vec<u8> {
    let head = if v6 { IPV6_MIN - 1 } else { IPV4_MIN - 1 };
    assert!(len > head && len <= MTU, "inner packet length {len}");
    let mut p: Vec<u8> = (0..len).map(|i| pattern(src, seq, len, i)).collect();
    if v6 {
        let tc = (seq >> 24) as u8;
        let flow = (seq >> 4) & 0xF_FFFF;
        p[0] = 0x60 | (tc >> 4);
        p[1] = (tc << 4) | (flow >> 16) as u8;
        p[2..4].copy_from_slice(&(flow as u16).to_be_bytes());
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        p[6] = PROTO;
        p[7] = 0x40 | (seq & 0xF) as u8;
        p[8..24].copy_from_slice(&vpn6(src).octets());
        p[24..40].copy_from_slice(&vpn6(dst).octets());
    } else {
        p[0] = 0x45;
        p[1] = 0;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[4..8].copy_from_slice(&seq.to_be_bytes());
        p[8] = 64;
        p[9] = PROTO;
        p[10..12].copy_from_slice(&[0, 0]);
        p[12..16].copy_from_slice(&vpn4(src).octets());
        p[16..20].copy_from_slice(&vpn4(dst).octets());
        let sum = ipv4_checksum(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// What a delivered packet says about itself: (sender, receiver,
/// sequence), once its length, addresses, header checksum and every
/// payload byte are found to be what that sender made.
pub fn read_inner(bytes: &[u8]) -> Result<(u8, u8, u32), String> {
    let bad = |what: &str| Err(format!("{what}: {} bytes {:02x?}", bytes.len(), &bytes[..bytes.len().min(48)]));
    let (v6, len, src, dst, seq) = match bytes.first().map(|b| b >> 4) {
        Some(4) if bytes.len() >= IPV4_MIN => {
            let src = IpAddr::from(<[u8; 4]>::try_from(&bytes[12..16]).unwrap());
            let dst = IpAddr::from(<[u8; 4]>::try_from(&bytes[16..20]).unwrap());
            if ipv4_checksum(&bytes[..20]) != 0 {
                return bad("IPv4 header checksum");
            }
            let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
            (false, len, src, dst, u32::from_be_bytes(bytes[4..8].try_into().unwrap()))
        }
        Some(6) if bytes.len() >= IPV6_MIN => {
            let src = IpAddr::from(<[u8; 16]>::try_from(&bytes[8..24]).unwrap());
            let dst = IpAddr::from(<[u8; 16]>::try_from(&bytes[24..40]).unwrap());
            let tc = (bytes[0] << 4) | (bytes[1] >> 4);
            let flow = (u32::from(bytes[1] & 0xF) << 16) | u32::from(u16::from_be_bytes([bytes[2], bytes[3]]));
            let seq = (u32::from(tc) << 24) | (flow << 4) | u32::from(bytes[7] & 0xF);
            let len = 40 + usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
            (true, len, src, dst, seq)
        }
        _ => return bad("not an inner packet of this test"),
    };
    if len != bytes.len() {
        return bad("length field");
    }
    let (Some(s), Some(d)) = (node_of(src), node_of(dst)) else { return bad("addresses") };
    if bytes != inner(v6, s, d, seq, len).as_slice() {
        return bad(&format!("bytes of packet {seq} from node {s}"));
    }
    Ok((s, d, seq))
}

/// Errors kept for the failure message (the rest are counted).
const ERRORS_KEPT: usize = 20;

/// What every node sent and received.
#[derive(Default)]
pub struct Ledger {
    /// Next sequence number per sender.
    next: [AtomicU32; 8],
    /// Packets handed to each node's TX queue (whatever became of them).
    posted: [AtomicU64; 8],
    /// Packets each node's upper layer received, checked.
    received: [AtomicU64; 8],
    /// (sender, sequence) of every packet delivered.
    seen: Mutex<HashSet<u64>>,
    errors: Mutex<(Vec<String>, u64)>,
}

impl Ledger {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The next packet `src` sends to `dst`.
    pub fn make(&self, v6: bool, src: u8, dst: u8, len: usize) -> Vec<u8> {
        let seq = self.next[usize::from(src)].fetch_add(1, Ordering::SeqCst);
        self.posted[usize::from(src)].fetch_add(1, Ordering::SeqCst);
        inner(v6, src, dst, seq, len)
    }

    /// Counts a packet handed to `src`'s TX queue that did not come from
    /// [`Ledger::make`].
    pub fn posted_raw(&self, src: u8) {
        self.posted[usize::from(src)].fetch_add(1, Ordering::SeqCst);
    }

    pub fn posted(&self, node: u8) -> u64 {
        self.posted[usize::from(node)].load(Ordering::SeqCst)
    }

    pub fn received(&self, node: u8) -> u64 {
        self.received[usize::from(node)].load(Ordering::SeqCst)
    }

    pub fn delivered_total(&self) -> u64 {
        self.seen.lock().unwrap().len() as u64
    }

    fn error(&self, e: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.0.len() < ERRORS_KEPT {
            errors.0.push(e);
        }
        errors.1 += 1;
    }

    /// Node `at`'s upper layer got `bytes`: it must be a packet some other
    /// node made for `at`, byte for byte, and not seen before.
    pub fn deliver(&self, at: u8, bytes: &[u8]) {
        self.received[usize::from(at)].fetch_add(1, Ordering::SeqCst);
        match read_inner(bytes) {
            Err(e) => self.error(format!("node {at}: {e}")),
            Ok((src, dst, seq)) => {
                if dst != at || src == at {
                    self.error(format!("node {at} got packet {seq} from node {src} to node {dst}"));
                } else if seq >= self.next[usize::from(src)].load(Ordering::SeqCst) {
                    self.error(format!("node {at} got packet {seq} from node {src}, which never sent it"));
                } else if !self.seen.lock().unwrap().insert((u64::from(src) << 32) | u64::from(seq)) {
                    self.error(format!("node {at} got packet {seq} from node {src} twice"));
                }
            }
        }
    }

    /// Panics with the first errors, if any.
    #[track_caller]
    pub fn assert_clean(&self, context: &str) {
        let errors = self.errors.lock().unwrap();
        assert!(errors.1 == 0, "{context}: {} delivery errors, first:\n  {}", errors.1, errors.0.join("\n  "));
    }

    /// Makes `node`'s upper layer check everything it is given.
    pub fn attach(self: &Arc<Self>, node: &Node, index: u8) {
        let ledger = self.clone();
        assert!(node.nx.on_deliver(move |bytes| ledger.deliver(index, bytes)), "one sink per adapter");
    }
}

/// Receive drops of the data path, every reason.
pub fn rx_drops(n: &Node) -> u64 {
    let d = n.adapter.datapath().drops();
    DropReason::ALL.iter().filter(|r| is_rx(**r)).map(|r| d.get(*r)).sum()
}

pub fn is_rx(r: DropReason) -> bool {
    (r as usize) <= DropReason::RxBadReturnContext as usize
}

/// Every non-zero drop counter of `n`, for failure messages.
pub fn drops_text(n: &Node) -> String {
    n.adapter.datapath().drops().nonzero().map(|(r, c)| format!("{r:?}={c}")).collect::<Vec<_>>().join(",")
}

/// One node's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub sent_data: u64,
    pub lost_out_data: u64,
    pub sent_control: u64,
    pub received_control: u64,
    pub delivered: u64,
    pub rx_drops: u64,
}

impl Counters {
    pub fn of(n: &Node) -> Self {
        let s = n.adapter.stats();
        let get = |c: &std::sync::atomic::AtomicU32| u64::from(c.load(Ordering::SeqCst));
        Self {
            sent_data: get(&s.sent_data_packets),
            lost_out_data: get(&s.lost_out_data_packets),
            sent_control: get(&s.sent_control_packets),
            received_control: get(&s.received_control_packets),
            delivered: n.nx.delivered_count() as u64,
            rx_drops: rx_drops(n),
        }
    }
}

/// The books of a set of nodes on one hub, from a starting point: what
/// went onto the network must be what the data paths say they sent, and
/// every datagram that reached a socket must have been delivered, dropped
/// with a reason, or taken by the control plane, exactly once.
pub struct Balance {
    base: Vec<Counters>,
    hub: LoopbackStats,
    /// Datagrams the test put on the network itself.
    pub injected: u64,
}

impl Balance {
    pub fn start(nodes: &[&Node], hub: LoopbackStats) -> Self {
        Self { base: nodes.iter().map(|n| Counters::of(n)).collect(), hub, injected: 0 }
    }

    fn totals(&self, nodes: &[&Node]) -> Counters {
        let mut t = Counters::default();
        for (n, b) in nodes.iter().zip(&self.base) {
            let c = Counters::of(n);
            t.sent_data += c.sent_data - b.sent_data;
            t.lost_out_data += c.lost_out_data - b.lost_out_data;
            t.sent_control += c.sent_control - b.sent_control;
            t.received_control += c.received_control - b.received_control;
            t.delivered += c.delivered - b.delivered;
            t.rx_drops += c.rx_drops - b.rx_drops;
        }
        t
    }

    /// (datagrams that reached a driver, datagrams the drivers accounted
    /// for): equal once everything sent has arrived.
    pub fn arrivals(&self, nodes: &[&Node], hub: LoopbackStats) -> (u64, u64) {
        let t = self.totals(nodes);
        let h = |f: fn(&LoopbackStats) -> u64| f(&hub) - f(&self.hub);
        let arrived = h(|s| s.sent) + h(|s| s.duplicated) - h(|s| s.lost) - h(|s| s.unroutable) - h(|s| s.refused);
        (arrived, t.delivered + t.rx_drops + t.received_control)
    }

    /// Checks the books once the network is quiet; `posted` is how many
    /// packets the test gave all the nodes' TX queues since the start.
    #[track_caller]
    pub fn check(&self, nodes: &[&Node], hub: LoopbackStats, posted: u64, context: &str) {
        let t = self.totals(nodes);
        let sent = hub.sent - self.hub.sent;
        assert_eq!(
            t.sent_data + t.lost_out_data,
            posted,
            "{context}: every packet posted is sent or dropped with a reason ({t:?})"
        );
        assert_eq!(
            sent,
            t.sent_data + t.sent_control + self.injected,
            "{context}: the network carried what the drivers sent ({t:?}, injected {})",
            self.injected
        );
        let (arrived, accounted) = self.arrivals(nodes, hub);
        assert_eq!(arrived, accounted, "{context}: each datagram that arrived is accounted for once ({t:?}, {hub:?})");
    }
}
