//! Packet ids on the send side, in both AEAD layouts.
//!
//! **Standard layout** (tag first): a 32-bit big-endian id, also the first
//! four nonce bytes, so an id must never repeat under one key. The sender
//! starts at 1 and stops for good at [`PACKET_ID_TX_LIMIT`]; it never wraps.
//! OpenVPN renegotiates long before (its own soft trigger is
//! `PACKET_ID_WRAP_TRIGGER` 0xFF00_0000 in packet_id.h, and under DCO it
//! watches the driver's counters), so hitting the limit means the key was
//! kept far past its life and refusing to send is the only safe answer.
//!
//! **Epoch layout** (OpenVPN 2.7): a 64-bit big-endian id whose top 16 bits
//! are the epoch and low 48 bits a per-epoch counter ([`EpochPacketId`]).
//! Every epoch key counts from 1 again ([`EpochCounter`]); what happens when a
//! counter runs out (switch to the next epoch) is the framing layer's call.
//!
//! The receive side (replay windows) lives in [`super::replay`].

use core::fmt;

/// First value past the last 32-bit packet id the sender hands out.
///
/// ovpn-dco-win pktid.cpp: `PKTID_WRAP_WARN 0xf0000000`; `OvpnPktidXmitNext`
/// increments the sequence number and fails with `STATUS_INTEGER_OVERFLOW`
/// once the new value is `>= PKTID_WRAP_WARN`, so 0xEFFF_FFFF is the last id
/// sent. (Linux ovpn uses the full 32-bit space; we match the Windows driver
/// we replace.)
pub const PACKET_ID_TX_LIMIT: u32 = 0xF000_0000;

/// Largest per-epoch counter: 48 bits.
///
/// OpenVPN packet_id.h: `PACKET_ID_EPOCH_MAX 0x0000ffffffffffffull`; ovpn-dco-win
/// crypto_epoch.h defines the same value.
pub const EPOCH_COUNTER_MAX: u64 = (1 << EPOCH_COUNTER_BITS) - 1;

/// Width of the counter within an epoch packet id.
const EPOCH_COUNTER_BITS: u32 = 48;

/// Why no packet id can be handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketIdError {
    /// The id space of this key is used up; a new key (or epoch) is needed.
    Exhausted,
}

/// Hands out the 32-bit packet ids of one key, standard AEAD layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketIdSender {
    /// The id the next call returns.
    next: u32,
}

impl PacketIdSender {
    /// A sender for a fresh key: the first id is 1 (0 is never valid on the
    /// wire; receivers reject it).
    pub const fn new() -> Self {
        Self { next: 1 }
    }

    /// A sender whose next id is `first`; `None` for 0. For tests near the
    /// limit, which `new()` would need billions of packets to reach.
    pub const fn starting_at(first: u32) -> Option<Self> {
        if first == 0 { None } else { Some(Self { next: first }) }
    }

    /// The next packet id, or [`PacketIdError::Exhausted`] from
    /// [`PACKET_ID_TX_LIMIT`] on, for every call after that too.
    // The shared API names it `next`; it is no iterator (it fails, it does not end).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<u32, PacketIdError> {
        if self.next >= PACKET_ID_TX_LIMIT {
            return Err(PacketIdError::Exhausted);
        }
        let id = self.next;
        // Below the limit, so below u32::MAX: cannot overflow.
        self.next = id + 1;
        Ok(id)
    }
}

impl Default for PacketIdSender {
    fn default() -> Self {
        Self::new()
    }
}

/// A 64-bit epoch-layout packet id: epoch (16 bits) ‖ counter (48 bits), the
/// value whose big-endian bytes follow the P_DATA_V2 header.
///
/// Epoch 0 and counter 0 are representable because they can arrive on the
/// wire; receivers reject them (epoch lookup, [`super::replay`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpochPacketId(u64);

impl EpochPacketId {
    /// Length on the wire.
    pub const LEN: usize = 8;

    /// The id of `counter` in `epoch`; `None` if the counter needs more
    /// than 48 bits.
    pub fn new(epoch: u16, counter: u64) -> Option<Self> {
        if counter > EPOCH_COUNTER_MAX {
            return None;
        }
        Some(Self((u64::from(epoch) << EPOCH_COUNTER_BITS) | counter))
    }

    /// The id as read from the wire (already converted from big-endian).
    pub fn from_wire(id: u64) -> Self {
        Self(id)
    }

    /// The id from its eight wire bytes.
    pub fn from_be_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(u64::from_be_bytes(bytes))
    }

    pub fn epoch(self) -> u16 {
        // The shift leaves exactly 16 bits.
        (self.0 >> EPOCH_COUNTER_BITS) as u16
    }

    pub fn counter(self) -> u64 {
        self.0 & EPOCH_COUNTER_MAX
    }

    /// The eight bytes as sent.
    pub fn to_be_bytes(self) -> [u8; Self::LEN] {
        self.0.to_be_bytes()
    }

    /// The whole 64-bit value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for EpochPacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EpochPacketId(epoch {}, counter {})", self.epoch(), self.counter())
    }
}

/// The send counter of one epoch key: 1, 2, … [`EPOCH_COUNTER_MAX`], then
/// [`PacketIdError::Exhausted`].
///
/// OpenVPN packet_id.c `packet_id_send_update_epoch` refuses to go past
/// `PACKET_ID_EPOCH_MAX`; both OpenVPN and ovpn-dco-win move to the next epoch
/// key before that happens, restarting the counter with a fresh `EpochCounter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochCounter {
    /// The counter the next call returns; `EPOCH_COUNTER_MAX + 1` once spent.
    next: u64,
}

impl EpochCounter {
    pub const fn new() -> Self {
        Self { next: 1 }
    }

    /// A counter whose next value is `first`; `None` for 0 or a value past
    /// `EPOCH_COUNTER_MAX + 1` (that one is the exhausted state). For tests
    /// near the end of the counter space.
    pub const fn starting_at(first: u64) -> Option<Self> {
        if first == 0 || first > EPOCH_COUNTER_MAX + 1 { None } else { Some(Self { next: first }) }
    }

    /// The next counter value, or [`PacketIdError::Exhausted`] past
    /// [`EPOCH_COUNTER_MAX`].
    // The shared API names it `next`; it is no iterator (it fails, it does not end).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<u64, PacketIdError> {
        if self.next > EPOCH_COUNTER_MAX {
            return Err(PacketIdError::Exhausted);
        }
        let counter = self.next;
        // At most EPOCH_COUNTER_MAX + 1, far below u64::MAX.
        self.next = counter + 1;
        Ok(counter)
    }

    /// The value the next call to [`Self::next`] returns if it succeeds;
    /// greater than [`EPOCH_COUNTER_MAX`] once the counter is spent.
    pub fn peek(&self) -> u64 {
        self.next
    }

    /// How many counter values were handed out (the "packets sent with this
    /// key" that the AEAD usage limit counts).
    pub fn sent(&self) -> u64 {
        self.next - 1
    }

    /// True once [`Self::next`] can only fail.
    pub fn is_exhausted(&self) -> bool {
        self.next > EPOCH_COUNTER_MAX
    }
}

impl Default for EpochCounter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_starts_at_one_and_counts_up() {
        let mut s = PacketIdSender::new();
        assert_eq!(s.next(), Ok(1));
        assert_eq!(s.next(), Ok(2));
        assert_eq!(s.next(), Ok(3));
        assert_eq!(PacketIdSender::default(), PacketIdSender::new());
    }

    #[test]
    fn sender_stops_at_the_ovpn_dco_win_limit_and_never_wraps() {
        assert_eq!(PACKET_ID_TX_LIMIT, 0xF000_0000);
        let mut s = PacketIdSender::starting_at(0xEFFF_FFFE).unwrap();
        assert_eq!(s.next(), Ok(0xEFFF_FFFE));
        assert_eq!(s.next(), Ok(0xEFFF_FFFF));
        for _ in 0..3 {
            assert_eq!(s.next(), Err(PacketIdError::Exhausted));
        }
        // Starting at or beyond the limit (even at u32::MAX) yields nothing.
        for first in [PACKET_ID_TX_LIMIT, u32::MAX - 1, u32::MAX] {
            let mut s = PacketIdSender::starting_at(first).unwrap();
            assert_eq!(s.next(), Err(PacketIdError::Exhausted));
            assert_eq!(s.next(), Err(PacketIdError::Exhausted));
        }
        assert_eq!(PacketIdSender::starting_at(0), None);
    }

    #[test]
    fn epoch_id_layout_matches_the_wire() {
        // From a real OpenVPN 2.7.6 capture (ovpn-dco-interface.md): epoch 1,
        // counter 5 is sent as 00 01 00 00 00 00 00 05.
        let id = EpochPacketId::new(1, 5).unwrap();
        assert_eq!(id.to_be_bytes(), [0, 1, 0, 0, 0, 0, 0, 5]);
        assert_eq!(id.get(), 0x0001_0000_0000_0005);
        assert_eq!(EpochPacketId::from_be_bytes([0, 1, 0, 0, 0, 0, 0, 5]), id);
        assert_eq!((id.epoch(), id.counter()), (1, 5));

        let top = EpochPacketId::new(0xFFFF, EPOCH_COUNTER_MAX).unwrap();
        assert_eq!(top.get(), u64::MAX);
        assert_eq!(top.to_be_bytes(), [0xFF; 8]);
        assert_eq!(EpochPacketId::from_wire(u64::MAX), top);
        assert_eq!((top.epoch(), top.counter()), (0xFFFF, EPOCH_COUNTER_MAX));

        let w = EpochPacketId::from_wire(0x1234_5678_9ABC_DEF0);
        assert_eq!((w.epoch(), w.counter()), (0x1234, 0x5678_9ABC_DEF0));
        assert_eq!(EpochPacketId::new(w.epoch(), w.counter()), Some(w));
    }

    #[test]
    fn epoch_id_rejects_counters_wider_than_48_bits() {
        assert_eq!(EPOCH_COUNTER_MAX, 0x0000_FFFF_FFFF_FFFF);
        assert_eq!(EpochPacketId::new(1, EPOCH_COUNTER_MAX + 1), None);
        assert_eq!(EpochPacketId::new(0, u64::MAX), None);
        assert!(EpochPacketId::new(0, 0).is_some());
    }

    #[test]
    fn epoch_counter_starts_at_one() {
        let mut c = EpochCounter::new();
        assert_eq!((c.peek(), c.sent()), (1, 0));
        assert_eq!(c.next(), Ok(1));
        assert_eq!(c.next(), Ok(2));
        assert_eq!((c.peek(), c.sent()), (3, 2));
        assert!(!c.is_exhausted());
        assert_eq!(EpochCounter::default(), EpochCounter::new());
    }

    #[test]
    fn epoch_counter_is_exhausted_past_48_bits() {
        let mut c = EpochCounter::starting_at(EPOCH_COUNTER_MAX - 1).unwrap();
        assert_eq!(c.next(), Ok(EPOCH_COUNTER_MAX - 1));
        assert_eq!(c.peek(), EPOCH_COUNTER_MAX);
        assert_eq!(c.next(), Ok(EPOCH_COUNTER_MAX));
        assert!(c.is_exhausted());
        assert_eq!(c.sent(), EPOCH_COUNTER_MAX);
        for _ in 0..3 {
            assert_eq!(c.next(), Err(PacketIdError::Exhausted));
            assert_eq!(c.peek(), EPOCH_COUNTER_MAX + 1);
        }
        assert_eq!(EpochCounter::starting_at(0), None);
        assert_eq!(EpochCounter::starting_at(EPOCH_COUNTER_MAX + 2), None);
        let mut spent = EpochCounter::starting_at(EPOCH_COUNTER_MAX + 1).unwrap();
        assert_eq!(spent.next(), Err(PacketIdError::Exhausted));
    }
}
