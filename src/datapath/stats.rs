//! Device counters (OVPN_STATS) and the per-reason drop counters every
//! bounded or failing step of the data path feeds.
//!
//! Relaxed atomics throughout: counters order nothing, they are summed when
//! OpenVPN asks (GET_STATS) and read by tests.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::crypto::slots::DataError;
use crate::uapi::types::OvpnStats;

/// The OVPN_STATS counters the data path owns.
#[derive(Debug, Default)]
pub struct DeviceStats {
    pub lost_in_control_packets: AtomicU64,
    pub lost_out_control_packets: AtomicU64,
    pub lost_in_data_packets: AtomicU64,
    pub lost_out_data_packets: AtomicU64,
    pub received_data_packets: AtomicU64,
    pub received_control_packets: AtomicU64,
    pub sent_control_packets: AtomicU64,
    pub sent_data_packets: AtomicU64,
    pub transport_bytes_sent: AtomicU64,
    pub transport_bytes_received: AtomicU64,
    pub tun_bytes_sent: AtomicU64,
    pub tun_bytes_received: AtomicU64,
    /// Not in OVPN_STATS: bytes of received data packets that took the copy
    /// path (design.md accounting: "bytes copied per delivered byte").
    pub rx_copied_bytes: AtomicU64,
    /// Not in OVPN_STATS: bytes of sent data packets gathered into a send
    /// slot before encryption (multi-fragment packets, MSS-clamped SYNs).
    pub tx_copied_bytes: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

fn to_long(v: &AtomicU64) -> i32 {
    i32::try_from(v.load(Ordering::Relaxed)).unwrap_or(i32::MAX)
}

fn to_long64(v: &AtomicU64) -> i64 {
    i64::try_from(v.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
}

impl DeviceStats {
    /// OVPN_STATS as GET_STATS returns it. The LONG fields saturate
    /// instead of wrapping negative.
    pub fn snapshot(&self) -> OvpnStats {
        OvpnStats {
            lost_in_control_packets: to_long(&self.lost_in_control_packets),
            lost_out_control_packets: to_long(&self.lost_out_control_packets),
            lost_in_data_packets: to_long(&self.lost_in_data_packets),
            lost_out_data_packets: to_long(&self.lost_out_data_packets),
            received_data_packets: to_long(&self.received_data_packets),
            received_control_packets: to_long(&self.received_control_packets),
            sent_control_packets: to_long(&self.sent_control_packets),
            sent_data_packets: to_long(&self.sent_data_packets),
            transport_bytes_sent: to_long64(&self.transport_bytes_sent),
            transport_bytes_received: to_long64(&self.transport_bytes_received),
            tun_bytes_sent: to_long64(&self.tun_bytes_sent),
            tun_bytes_received: to_long64(&self.tun_bytes_received),
        }
    }
}

/// Why a packet (or a whole indication) was not delivered or not sent.
/// One counter each; [`Drops::get`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    // --- receive ---
    /// An indication node without an MDL.
    RxNullMdl,
    /// Datagrams past [`super::RX_INDICATION_BATCH_MAX`] in one indication.
    RxBatchOverflow,
    /// Longer than the copy path (or the largest datagram) allows.
    RxTooLong,
    /// The datagram's bytes are not mapped in system space, or the MDL
    /// chain ends before the datagram does.
    RxUnmapped,
    /// Empty, or too short for its opcode.
    RxMalformed,
    /// No sender address and no connected remote to stand in for it.
    RxNoSource,
    /// P_DATA_V2 for a peer id nobody has.
    RxUnknownPeer,
    /// No key slot holds the packet's key id.
    RxUnknownKey,
    /// The replay window refused the packet id.
    RxReplay,
    /// The tag did not verify.
    RxAuthFailed,
    /// Framing, epoch, key-replacement or backend failure while decrypting.
    RxDecrypt,
    /// The plaintext is neither IPv4 nor IPv6.
    RxNotIp,
    /// MP: the inner source address does not belong to the sending peer.
    RxSourceNotAllowed,
    /// All [`super::RX_SLOTS_MAX`] RX slots are in use.
    RxNoSlot,
    /// The copy path's buffer pool ([`super::RX_COPY_BUFFERS`]) is empty.
    RxCopyPoolEmpty,
    /// The queue for Advance ([`super::RX_PENDING_MAX`]) is full.
    RxQueueFull,
    /// No RX queue is started (paused adapter, or cancel in progress).
    RxQueueStopped,
    /// Queued for Advance when the queue was cancelled.
    RxCancelled,
    /// TCP: the stream framing broke (a length OpenVPN never sends).
    RxStreamBroken,
    /// A return context that names no indicated slot.
    RxBadReturnContext,
    // --- send ---
    /// No peer routes the inner destination (or it is no IP packet).
    TxUnroutable,
    /// The peer has no primary key.
    TxNoKey,
    /// Packet plus overhead does not fit a send slot.
    TxOversize,
    /// Fragments the driver cannot read (none, too many, not owned, null).
    TxMalformed,
    /// The key's packet ids are used up, or encryption failed.
    TxEncrypt,
    /// `Transport::send` refused the send.
    TxSendRefused,
    /// The send completed with an error status.
    TxSendFailed,
    /// Posted after the queue was cancelled: returned unsent.
    TxCancelled,
    /// No transport is attached.
    TxNoTransport,
    /// Control or keepalive: no free send slot.
    TxNoSendSlot,
}

impl DropReason {
    /// Number of reasons (size of the counter array).
    pub const COUNT: usize = DropReason::TxNoSendSlot as usize + 1;

    /// The drop reason for a failed decryption.
    pub fn of_rx(e: DataError) -> Self {
        match e {
            DataError::UnknownKeyId(_) => DropReason::RxUnknownKey,
            DataError::Replay(_) => DropReason::RxReplay,
            DataError::AuthFailed => DropReason::RxAuthFailed,
            DataError::NoPrimaryKey
            | DataError::PacketIdExhausted
            | DataError::UnknownEpoch(_)
            | DataError::Frame(_)
            | DataError::KeyReplaced
            | DataError::KeyDerivation(_) => DropReason::RxDecrypt,
        }
    }

    /// The drop reason for a failed encryption.
    pub fn of_tx(e: DataError) -> Self {
        match e {
            DataError::NoPrimaryKey => DropReason::TxNoKey,
            _ => DropReason::TxEncrypt,
        }
    }
}

/// One counter per [`DropReason`].
#[derive(Debug)]
pub struct Drops {
    counters: [AtomicU64; DropReason::COUNT],
}

impl Default for Drops {
    fn default() -> Self {
        Self { counters: core::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl Drops {
    pub(crate) fn count(&self, reason: DropReason) {
        if let Some(c) = self.counters.get(reason as usize) {
            bump(c);
        }
    }

    /// Packets dropped for `reason` so far.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counters.get(reason as usize).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// All drops, whatever the reason.
    pub fn total(&self) -> u64 {
        self.counters.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::KeyId;
    use crate::proto::replay::ReplayError;

    #[test]
    fn every_reason_has_its_own_counter() {
        let d = Drops::default();
        d.count(DropReason::RxNullMdl);
        d.count(DropReason::TxNoSendSlot);
        d.count(DropReason::TxNoSendSlot);
        assert_eq!(d.get(DropReason::RxNullMdl), 1);
        assert_eq!(d.get(DropReason::TxNoSendSlot), 2);
        assert_eq!(d.get(DropReason::RxReplay), 0);
        assert_eq!(d.total(), 3);
    }

    #[test]
    fn decrypt_errors_map_to_reasons() {
        assert_eq!(DropReason::of_rx(DataError::AuthFailed), DropReason::RxAuthFailed);
        assert_eq!(DropReason::of_rx(DataError::UnknownKeyId(KeyId::new(3).unwrap())), DropReason::RxUnknownKey);
        assert_eq!(DropReason::of_rx(DataError::Replay(ReplayError::Replayed)), DropReason::RxReplay);
        assert_eq!(DropReason::of_rx(DataError::KeyReplaced), DropReason::RxDecrypt);
        assert_eq!(DropReason::of_tx(DataError::NoPrimaryKey), DropReason::TxNoKey);
        assert_eq!(DropReason::of_tx(DataError::PacketIdExhausted), DropReason::TxEncrypt);
    }

    #[test]
    fn long_counters_saturate_in_the_snapshot() {
        let s = DeviceStats::default();
        s.sent_data_packets.store(u64::from(u32::MAX), Ordering::Relaxed);
        add(&s.tun_bytes_sent, 1500);
        let snap = s.snapshot();
        assert_eq!(snap.sent_data_packets, i32::MAX);
        assert_eq!(snap.tun_bytes_sent, 1500);
    }
}
