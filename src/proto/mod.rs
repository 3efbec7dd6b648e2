//! The OpenVPN data channel on the wire: pure functions and state machines
//! over caller-provided buffers, no I/O, no allocation per packet.

pub mod aead_frame;
pub mod epoch;
pub mod keepalive;
pub mod mss;
pub mod opcode;
pub mod packet_id;
pub mod replay;
pub mod tcp_frame;

use core::fmt;

/// A peer id: 24 bits on the wire (P_DATA_V2 bytes 1..4).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(u32);

impl PeerId {
    /// Largest value the 24-bit field carries. OpenVPN uses it to mean "no
    /// peer id assigned" (`MAX_PEER_ID`).
    pub const MAX: u32 = 0x00FF_FFFF;
    /// The id OpenVPN sends when none was assigned.
    pub const UNDEFINED: PeerId = PeerId(Self::MAX);

    /// A peer id from a value that must fit 24 bits.
    pub const fn new(id: u32) -> Option<Self> {
        if id <= Self::MAX { Some(Self(id)) } else { None }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.0)
    }
}

/// A key id: 3 bits in the opcode byte, 0..=7.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(u8);

impl KeyId {
    pub const MAX: u8 = 7;

    pub const fn new(id: u8) -> Option<Self> {
        if id <= Self::MAX { Some(Self(id)) } else { None }
    }

    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}
