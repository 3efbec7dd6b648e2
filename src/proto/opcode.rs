//! Opcodes and the P_DATA_V2 header.
//!
//! Byte 0 of every OpenVPN packet is `opcode << 3 | key_id`. Data packets in
//! the DCO world are always P_DATA_V2: that byte, then a 24-bit big-endian
//! peer id.

use super::{KeyId, PeerId};

/// P_DATA_V2 opcode (OpenVPN ssl_pkt.h).
pub const P_DATA_V2: u8 = 9;
/// Bits of byte 0 that hold the key id.
pub const KEY_ID_MASK: u8 = 0x07;
/// Shift of the opcode within byte 0.
pub const OPCODE_SHIFT: u8 = 3;
/// Length of the P_DATA_V2 header: opcode/key-id byte and 24-bit peer id.
pub const DATA_V2_HEADER_LEN: usize = 4;

/// The P_DATA_V2 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    pub key_id: KeyId,
    pub peer_id: PeerId,
}

/// Why bytes are not a P_DATA_V2 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`DATA_V2_HEADER_LEN`] bytes.
    Truncated,
    /// The opcode is not P_DATA_V2 (the packet is for the control channel).
    NotData,
}

impl DataHeader {
    /// The four header bytes as sent.
    pub const fn to_bytes(self) -> [u8; DATA_V2_HEADER_LEN] {
        let p = self.peer_id.get().to_be_bytes();
        [(P_DATA_V2 << OPCODE_SHIFT) | self.key_id.get(), p[1], p[2], p[3]]
    }

    /// Parses the header at the start of `datagram`.
    pub fn parse(datagram: &[u8]) -> Result<Self, HeaderError> {
        let [op, p1, p2, p3, ..] = *datagram else {
            return Err(HeaderError::Truncated);
        };
        if op >> OPCODE_SHIFT != P_DATA_V2 {
            return Err(HeaderError::NotData);
        }
        // Both constructors accept every value the masked bits can hold.
        let key_id = KeyId::new(op & KEY_ID_MASK).ok_or(HeaderError::NotData)?;
        let peer_id = PeerId::new(u32::from_be_bytes([0, p1, p2, p3])).ok_or(HeaderError::NotData)?;
        Ok(Self { key_id, peer_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_on_the_wire() {
        // From a real OpenVPN 2.7 capture (ovpn-dco-interface.md): key 0, peer 0.
        let h = DataHeader::parse(&[0x48, 0, 0, 0, 0xff]).unwrap();
        assert_eq!(h, DataHeader { key_id: KeyId::new(0).unwrap(), peer_id: PeerId::new(0).unwrap() });
        let h = DataHeader { key_id: KeyId::new(7).unwrap(), peer_id: PeerId::new(0x12_3456).unwrap() };
        assert_eq!(h.to_bytes(), [0x4f, 0x12, 0x34, 0x56]);
        assert_eq!(DataHeader::parse(&h.to_bytes()), Ok(h));
    }

    #[test]
    fn short_and_control_packets_are_not_data() {
        assert_eq!(DataHeader::parse(&[0x48, 0, 0]), Err(HeaderError::Truncated));
        assert_eq!(DataHeader::parse(&[]), Err(HeaderError::Truncated));
        // P_CONTROL_V1 (4) and P_DATA_V1 (6) are control-channel business here.
        assert_eq!(DataHeader::parse(&[4 << 3, 0, 0, 0]), Err(HeaderError::NotData));
        assert_eq!(DataHeader::parse(&[6 << 3, 0, 0, 0]), Err(HeaderError::NotData));
    }
}
