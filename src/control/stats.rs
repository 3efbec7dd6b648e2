//! Device-wide counters (OVPN_STATS), shared with the data path.
//!
//! The data path increments them per packet without the device lock, so
//! they are atomics; GET_STATS reads a snapshot and NEW_PEER zeroes them
//! (ovpn-dco-win peer.cpp `OvpnPeerNew` clears the whole structure).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::uapi::types::OvpnStats;

/// OVPN_STATS as atomics. The eight packet counters are LONGs upstream and
/// wrap as `InterlockedIncrement` does; the byte counters are LONG64.
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// Control packets dropped on receive (queue full, too long).
    pub lost_in_control_packets: AtomicU32,
    /// Control packets the transport failed to send.
    pub lost_out_control_packets: AtomicU32,
    /// Data packets dropped on receive (no peer, bad tag, replay, ...).
    pub lost_in_data_packets: AtomicU32,
    /// Data packets dropped on send (no peer, no key, no send slot).
    pub lost_out_data_packets: AtomicU32,
    pub received_data_packets: AtomicU32,
    pub received_control_packets: AtomicU32,
    pub sent_control_packets: AtomicU32,
    pub sent_data_packets: AtomicU32,
    pub transport_bytes_sent: AtomicU64,
    pub transport_bytes_received: AtomicU64,
    pub tun_bytes_sent: AtomicU64,
    pub tun_bytes_received: AtomicU64,
}

/// One more packet.
pub fn bump(counter: &AtomicU32) {
    bump_by(counter, 1);
}

/// `n` more packets at once: the same (wrapping) value as `n` [`bump`]s.
pub fn bump_by(counter: &AtomicU32, n: u32) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// `n` more bytes.
pub fn add_bytes(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl DeviceStats {
    fn counters32(&self) -> [&AtomicU32; 8] {
        [
            &self.lost_in_control_packets,
            &self.lost_out_control_packets,
            &self.lost_in_data_packets,
            &self.lost_out_data_packets,
            &self.received_data_packets,
            &self.received_control_packets,
            &self.sent_control_packets,
            &self.sent_data_packets,
        ]
    }

    fn counters64(&self) -> [&AtomicU64; 4] {
        [&self.transport_bytes_sent, &self.transport_bytes_received, &self.tun_bytes_sent, &self.tun_bytes_received]
    }

    /// NEW_PEER and handle close start the counters over.
    pub fn reset(&self) {
        for c in self.counters32() {
            c.store(0, Ordering::Relaxed);
        }
        for c in self.counters64() {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// The values GET_STATS reports. Each counter is read on its own, as
    /// upstream copies them without a lock.
    pub fn snapshot(&self) -> OvpnStats {
        let l = |c: &AtomicU32| c.load(Ordering::Relaxed) as i32;
        let ll = |c: &AtomicU64| c.load(Ordering::Relaxed) as i64;
        OvpnStats {
            lost_in_control_packets: l(&self.lost_in_control_packets),
            lost_out_control_packets: l(&self.lost_out_control_packets),
            lost_in_data_packets: l(&self.lost_in_data_packets),
            lost_out_data_packets: l(&self.lost_out_data_packets),
            received_data_packets: l(&self.received_data_packets),
            received_control_packets: l(&self.received_control_packets),
            sent_control_packets: l(&self.sent_control_packets),
            sent_data_packets: l(&self.sent_data_packets),
            transport_bytes_sent: ll(&self.transport_bytes_sent),
            transport_bytes_received: ll(&self.transport_bytes_received),
            tun_bytes_sent: ll(&self.tun_bytes_sent),
            tun_bytes_received: ll(&self.tun_bytes_received),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_wrap_like_longs_and_reset_to_zero() {
        let s = DeviceStats::default();
        s.sent_data_packets.store(u32::MAX, Ordering::Relaxed);
        bump(&s.sent_data_packets);
        bump(&s.received_control_packets);
        s.lost_in_data_packets.store(0x8000_0000, Ordering::Relaxed);
        add_bytes(&s.tun_bytes_received, 1500);
        let snap = s.snapshot();
        assert_eq!(snap.sent_data_packets, 0);
        assert_eq!(snap.received_control_packets, 1);
        assert_eq!(snap.lost_in_data_packets, i32::MIN, "a LONG reads back negative past 2^31");
        assert_eq!(snap.tun_bytes_received, 1500);
        s.reset();
        assert_eq!(s.snapshot(), OvpnStats::default());
    }
}
