//! A peer as both planes see it.
//!
//! The control plane creates peers, installs keys and sets keepalive; the
//! data path reaches a peer through an `Arc` it looks up per packet and then
//! works on the peer's own state without the device lock: TX and RX key
//! slots each behind their own spin lock (as ovpn-dco-win separates its
//! encrypt and decrypt paths), the transport endpoint behind a third (float
//! changes it), and counters and activity stamps as atomics.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

use crate::crypto::AeadKey;
use crate::crypto::slots::{RxSlots, TxSlots};
use crate::os::sync::SpinLock;
use crate::os::time::Instant;
use crate::proto::PeerId;

/// The transport addresses of a peer: ours and theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// Per-peer counters (OVPN_PEER_STATS), updated by the data path.
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Transport bytes received from the peer (whole datagrams).
    pub link_rx_bytes: AtomicU64,
    /// Transport bytes sent to the peer.
    pub link_tx_bytes: AtomicU64,
    /// Inner (tunnel) bytes delivered to the OS.
    pub vpn_rx_bytes: AtomicU64,
    /// Inner bytes taken from the OS and sent.
    pub vpn_tx_bytes: AtomicU64,
}

/// A snapshot of [`PeerStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStatsSnapshot {
    pub link_rx_bytes: u64,
    pub link_tx_bytes: u64,
    pub vpn_rx_bytes: u64,
    pub vpn_tx_bytes: u64,
}

impl PeerStats {
    pub fn snapshot(&self) -> PeerStatsSnapshot {
        PeerStatsSnapshot {
            link_rx_bytes: self.link_rx_bytes.load(Ordering::Relaxed),
            link_tx_bytes: self.link_tx_bytes.load(Ordering::Relaxed),
            vpn_rx_bytes: self.vpn_rx_bytes.load(Ordering::Relaxed),
            vpn_tx_bytes: self.vpn_tx_bytes.load(Ordering::Relaxed),
        }
    }
}

/// One peer.
pub struct Peer<K> {
    /// The id sent in P_DATA_V2 headers. Fixed in MP; in P2P NEW_PEER has no
    /// id field, so it starts at 0 and takes the PeerId of each NEW_KEY (the
    /// id the server pushed, which the server expects in our headers).
    id: AtomicU32,
    vpn_v4: Option<Ipv4Addr>,
    vpn_v6: Option<Ipv6Addr>,
    /// Keys used to send: the primary slot.
    pub tx: SpinLock<TxSlots<K>>,
    /// Keys used to receive, by key id, with their replay windows.
    pub rx: SpinLock<RxSlots<K>>,
    endpoint: SpinLock<Endpoint>,
    pub stats: PeerStats,
    /// Last authenticated packet received (keepalive timeout), ms.
    last_rx: AtomicU64,
    /// Last packet sent (keepalive ping when idle), ms.
    last_tx: AtomicU64,
    /// TCP MSS clamp value from SET_PEER; 0 = off.
    mss: AtomicU16,
}

/// Raises an activity clock to `ms`. Called per packet, mostly within the
/// same millisecond: the plain load skips the read-modify-write (a locked
/// compare-exchange loop on x64) when the clock is already there; the
/// value only ever grows, so a stale load can only lead to a redundant
/// `fetch_max`, never to a lower clock.
fn raise(clock: &AtomicU64, ms: u64) {
    if clock.load(Ordering::Relaxed) < ms {
        clock.fetch_max(ms, Ordering::Relaxed);
    }
}

impl<K: AeadKey> Peer<K> {
    /// A peer with no keys yet. `now` starts both activity clocks, so the
    /// keepalive timeout counts from creation.
    pub fn new(
        id: PeerId,
        endpoint: Endpoint,
        vpn_v4: Option<Ipv4Addr>,
        vpn_v6: Option<Ipv6Addr>,
        now: Instant,
    ) -> Self {
        Self {
            id: AtomicU32::new(id.get()),
            vpn_v4,
            vpn_v6,
            tx: SpinLock::new(TxSlots::default()),
            rx: SpinLock::new(RxSlots::default()),
            endpoint: SpinLock::new(endpoint),
            stats: PeerStats::default(),
            last_rx: AtomicU64::new(now.as_millis()),
            last_tx: AtomicU64::new(now.as_millis()),
            mss: AtomicU16::new(0),
        }
    }
}

impl<K> Peer<K> {
    pub fn id(&self) -> PeerId {
        // Only ever stored from a PeerId, so always in range.
        PeerId::new(self.id.load(Ordering::Relaxed)).unwrap_or(PeerId::UNDEFINED)
    }

    /// P2P: the id NEW_KEY names becomes the id sent in headers.
    pub(crate) fn set_id(&self, id: PeerId) {
        self.id.store(id.get(), Ordering::Relaxed);
    }

    pub fn vpn_v4(&self) -> Option<Ipv4Addr> {
        self.vpn_v4
    }

    pub fn vpn_v6(&self) -> Option<Ipv6Addr> {
        self.vpn_v6
    }

    /// Whether `addr` is one of this peer's own VPN addresses.
    pub fn owns_vpn_address(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.vpn_v4 == Some(a),
            IpAddr::V6(a) => self.vpn_v6 == Some(a),
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        *self.endpoint.lock()
    }

    /// Float: the peer now sends from `remote`.
    pub fn set_remote(&self, remote: SocketAddr) {
        self.endpoint.lock().remote = remote;
    }

    pub fn mark_received(&self, now: Instant) {
        raise(&self.last_rx, now.as_millis());
    }

    pub fn mark_sent(&self, now: Instant) {
        raise(&self.last_tx, now.as_millis());
    }

    pub fn last_received(&self) -> Instant {
        Instant::from_millis(self.last_rx.load(Ordering::Relaxed))
    }

    pub fn last_sent(&self) -> Instant {
        Instant::from_millis(self.last_tx.load(Ordering::Relaxed))
    }

    /// The TCP MSS to clamp to, if clamping is on.
    pub fn mss(&self) -> Option<u16> {
        match self.mss.load(Ordering::Relaxed) {
            0 => None,
            m => Some(m),
        }
    }

    pub fn set_mss(&self, mss: u16) {
        self.mss.store(mss, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::host::HostKey;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn activity_clocks_only_move_forward() {
        let ep = Endpoint { local: addr("0.0.0.0:0"), remote: addr("192.0.2.1:1194") };
        let p = Peer::<HostKey>::new(PeerId::new(3).unwrap(), ep, None, None, Instant::from_millis(1_000));
        p.mark_received(Instant::from_millis(5_000));
        // A late CPU reporting an older time must not move the clock back.
        p.mark_received(Instant::from_millis(4_000));
        assert_eq!(p.last_received(), Instant::from_millis(5_000));
        assert_eq!(p.last_sent(), Instant::from_millis(1_000));
        p.set_remote(addr("198.51.100.7:5000"));
        assert_eq!(p.endpoint().remote, addr("198.51.100.7:5000"));
        assert_eq!(p.mss(), None);
        p.set_mss(1360);
        assert_eq!(p.mss(), Some(1360));
    }

    #[test]
    fn a_peer_owns_only_its_own_vpn_addresses() {
        let ep = Endpoint { local: addr("0.0.0.0:0"), remote: addr("192.0.2.1:1194") };
        let p = Peer::<HostKey>::new(
            PeerId::new(1).unwrap(),
            ep,
            Some("10.8.0.2".parse().unwrap()),
            Some("fd00::2".parse().unwrap()),
            Instant::ZERO,
        );
        assert!(p.owns_vpn_address("10.8.0.2".parse().unwrap()));
        assert!(p.owns_vpn_address("fd00::2".parse().unwrap()));
        assert!(!p.owns_vpn_address("10.8.0.3".parse().unwrap()));
    }
}
