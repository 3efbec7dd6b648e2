//! The data path's own counters: drops by reason and the copy accounting.
//! The OVPN_STATS counters are the control plane's
//! ([`crate::control::stats::DeviceStats`]), shared through an `Arc` and
//! fed by the data path per packet.
//!
//! Relaxed atomics throughout: counters order nothing, they are summed when
//! OpenVPN asks (GET_STATS) and read by tests.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::crypto::slots::DataError;

pub(crate) use crate::control::stats::{bump, bump_by};

/// `n` more bytes on an OVPN_STATS byte counter (or a copy counter).
pub(crate) fn add(counter: &AtomicU64, n: usize) {
    crate::control::stats::add_bytes(counter, n as u64);
}

/// Bytes the data path copied instead of handing over in place (design.md
/// accounting: "bytes copied per delivered byte"). Not in OVPN_STATS and
/// not reset by NEW_PEER: they describe the driver, not the session.
#[derive(Debug, Default)]
pub struct CopyStats {
    /// Bytes of received data packets that took the copy path.
    pub rx_copied_bytes: AtomicU64,
    /// Bytes of sent data packets gathered into a send slot before
    /// encryption (multi-fragment packets, MSS-clamped SYNs).
    pub tx_copied_bytes: AtomicU64,
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

    /// Every reason, in counter order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::RxNullMdl,
        DropReason::RxBatchOverflow,
        DropReason::RxTooLong,
        DropReason::RxUnmapped,
        DropReason::RxMalformed,
        DropReason::RxNoSource,
        DropReason::RxUnknownPeer,
        DropReason::RxUnknownKey,
        DropReason::RxReplay,
        DropReason::RxAuthFailed,
        DropReason::RxDecrypt,
        DropReason::RxNotIp,
        DropReason::RxSourceNotAllowed,
        DropReason::RxNoSlot,
        DropReason::RxCopyPoolEmpty,
        DropReason::RxQueueFull,
        DropReason::RxQueueStopped,
        DropReason::RxCancelled,
        DropReason::RxStreamBroken,
        DropReason::RxBadReturnContext,
        DropReason::TxUnroutable,
        DropReason::TxNoKey,
        DropReason::TxOversize,
        DropReason::TxMalformed,
        DropReason::TxEncrypt,
        DropReason::TxSendRefused,
        DropReason::TxSendFailed,
        DropReason::TxCancelled,
        DropReason::TxNoTransport,
        DropReason::TxNoSendSlot,
    ];

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
        self.count_n(reason, 1);
    }

    pub(crate) fn count_n(&self, reason: DropReason, n: u64) {
        if let Some(c) = self.counters.get(reason as usize) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Packets dropped for `reason` so far.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counters.get(reason as usize).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The reasons with at least one drop, and their counts.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.into_iter().map(|r| (r, self.get(r))).filter(|&(_, n)| n > 0)
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
        assert_eq!(
            d.nonzero().collect::<std::vec::Vec<_>>(),
            [(DropReason::RxNullMdl, 1), (DropReason::TxNoSendSlot, 2)]
        );
    }

    #[test]
    fn all_lists_every_reason_at_its_own_index() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
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
}
