//! Opcodes, the P_DATA_V2 header, and the data/control split.
//!
//! Byte 0 of every OpenVPN packet is `opcode << 3 | key_id`. Data packets in
//! the DCO world are always P_DATA_V2: that byte, then a 24-bit big-endian
//! peer id. Everything else, P_DATA_V1 included, belongs to OpenVPN in user
//! space and travels up the control channel untouched.

use super::{KeyId, PeerId};

/// P_DATA_V2 opcode (OpenVPN ssl_pkt.h).
pub const P_DATA_V2: u8 = Opcode::DataV2 as u8;
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

/// The OpenVPN opcodes (OpenVPN ssl_pkt.h, `P_CONTROL_HARD_RESET_CLIENT_V1`
/// through `P_CONTROL_WKC_V1`). Only [`Opcode::DataV2`] is the driver's
/// business; the rest are named so that logs and tests can speak of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// P_CONTROL_HARD_RESET_CLIENT_V1: key method 1, no longer accepted by OpenVPN.
    ControlHardResetClientV1 = 1,
    /// P_CONTROL_HARD_RESET_SERVER_V1: key method 1, no longer accepted by OpenVPN.
    ControlHardResetServerV1 = 2,
    /// P_CONTROL_SOFT_RESET_V1: renegotiation of a new key.
    ControlSoftResetV1 = 3,
    /// P_CONTROL_V1: TLS records of the control channel.
    ControlV1 = 4,
    /// P_ACK_V1: acknowledgements only.
    AckV1 = 5,
    /// P_DATA_V1: data without a peer id; OpenVPN handles it in user space.
    DataV1 = 6,
    /// P_CONTROL_HARD_RESET_CLIENT_V2: first packet from a client.
    ControlHardResetClientV2 = 7,
    /// P_CONTROL_HARD_RESET_SERVER_V2: first packet from a server.
    ControlHardResetServerV2 = 8,
    /// P_DATA_V2: data with a peer id, the only opcode the driver decrypts.
    DataV2 = 9,
    /// P_CONTROL_HARD_RESET_CLIENT_V3: client reset with a wrapped tls-crypt-v2 key.
    ControlHardResetClientV3 = 10,
    /// P_CONTROL_WKC_V1: P_CONTROL_V1 with an appended wrapped client key.
    ControlWkcV1 = 11,
}

/// The 5-bit opcode field holds a value OpenVPN does not define.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownOpcode(pub u8);

impl Opcode {
    /// The opcode in byte 0 of a packet, if it is one OpenVPN defines.
    pub const fn of_first_byte(byte0: u8) -> Result<Self, UnknownOpcode> {
        Self::from_value(byte0 >> OPCODE_SHIFT)
    }

    /// The opcode with this 5-bit value.
    pub const fn from_value(value: u8) -> Result<Self, UnknownOpcode> {
        Ok(match value {
            1 => Self::ControlHardResetClientV1,
            2 => Self::ControlHardResetServerV1,
            3 => Self::ControlSoftResetV1,
            4 => Self::ControlV1,
            5 => Self::AckV1,
            6 => Self::DataV1,
            7 => Self::ControlHardResetClientV2,
            8 => Self::ControlHardResetServerV2,
            9 => Self::DataV2,
            10 => Self::ControlHardResetClientV3,
            11 => Self::ControlWkcV1,
            other => return Err(UnknownOpcode(other)),
        })
    }
}

/// Where a received datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// P_DATA_V2: decrypt in the driver, for the peer and key in the header.
    Data(DataHeader),
    /// Anything else: queue for OpenVPN's ReadFile, bytes unchanged.
    Control,
}

/// Why a received datagram is dropped before it is classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassifyError {
    /// No bytes at all (a zero-length UDP datagram).
    Empty,
    /// Opcode P_DATA_V2 but fewer than [`DATA_V2_HEADER_LEN`] bytes.
    TruncatedDataHeader,
    /// Another opcode but fewer than [`MIN_PACKET_LEN`] bytes.
    TruncatedControl,
}

/// Every packet ovpn-dco-win looks at has at least this many bytes: its
/// socket.cpp (`OvpnSocketProcessIncomingPacket`) drops anything shorter than
/// `OVPN_DATA_V2_LEN` (4) before reading the opcode, control packets
/// included. OpenVPN's own smallest control packet (P_ACK_V1: opcode, 8-byte
/// session id, ack count) is longer, so nothing valid is lost.
pub const MIN_PACKET_LEN: usize = DATA_V2_HEADER_LEN;

/// Sorts a received datagram into data or control.
///
/// Opcodes OpenVPN does not define (0, 12..=31) are control, as are the
/// key-method-1 resets: ovpn-dco-win (socket.cpp,
/// `OvpnSocketProcessIncomingPacket`) tests only `opcode == OVPN_OP_DATA_V2`
/// and hands every other packet to user space, where OpenVPN validates it.
/// Matching that keeps the driver from having an opinion about the control
/// protocol, which OpenVPN may extend without a driver update.
pub fn classify(datagram: &[u8]) -> Result<PacketKind, ClassifyError> {
    let Some(&byte0) = datagram.first() else {
        return Err(ClassifyError::Empty);
    };
    if byte0 >> OPCODE_SHIFT == P_DATA_V2 {
        return match DataHeader::parse(datagram) {
            Ok(header) => Ok(PacketKind::Data(header)),
            Err(HeaderError::Truncated | HeaderError::NotData) => Err(ClassifyError::TruncatedDataHeader),
        };
    }
    if datagram.len() < MIN_PACKET_LEN {
        return Err(ClassifyError::TruncatedControl);
    }
    Ok(PacketKind::Control)
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

    #[test]
    fn opcode_values_are_openvpns() {
        // OpenVPN ssl_pkt.h.
        let expected = [
            (1, Opcode::ControlHardResetClientV1),
            (2, Opcode::ControlHardResetServerV1),
            (3, Opcode::ControlSoftResetV1),
            (4, Opcode::ControlV1),
            (5, Opcode::AckV1),
            (6, Opcode::DataV1),
            (7, Opcode::ControlHardResetClientV2),
            (8, Opcode::ControlHardResetServerV2),
            (9, Opcode::DataV2),
            (10, Opcode::ControlHardResetClientV3),
            (11, Opcode::ControlWkcV1),
        ];
        for (value, op) in expected {
            assert_eq!(op as u8, value);
            assert_eq!(Opcode::from_value(value), Ok(op));
            for key in 0..=KEY_ID_MASK {
                assert_eq!(Opcode::of_first_byte(value << OPCODE_SHIFT | key), Ok(op));
            }
        }
        assert_eq!(Opcode::from_value(0), Err(UnknownOpcode(0)));
        assert_eq!(Opcode::from_value(12), Err(UnknownOpcode(12)));
        assert_eq!(Opcode::of_first_byte(0xff), Err(UnknownOpcode(31)));
    }

    #[test]
    fn data_v2_is_data_with_its_header() {
        let wire = [0x4b, 0x00, 0x01, 0x02, 0xaa];
        let expected = DataHeader { key_id: KeyId::new(3).unwrap(), peer_id: PeerId::new(0x0102).unwrap() };
        assert_eq!(classify(&wire), Ok(PacketKind::Data(expected)));
        // The header alone, with no payload, is still data: the AEAD layer rejects it.
        assert_eq!(classify(&wire[..4]), Ok(PacketKind::Data(expected)));
    }

    #[test]
    fn every_other_opcode_is_control() {
        for op in (0u8..32).filter(|&op| op != P_DATA_V2) {
            for key in 0..=KEY_ID_MASK {
                let wire = [op << OPCODE_SHIFT | key, 1, 2, 3, 4, 5];
                assert_eq!(classify(&wire), Ok(PacketKind::Control), "opcode {op}");
            }
        }
        // P_DATA_V1 in particular goes to user space.
        assert_eq!(classify(&[(Opcode::DataV1 as u8) << OPCODE_SHIFT, 0, 0, 0]), Ok(PacketKind::Control));
    }

    #[test]
    fn short_datagrams_are_rejected() {
        assert_eq!(classify(&[]), Err(ClassifyError::Empty));
        assert_eq!(classify(&[0x48]), Err(ClassifyError::TruncatedDataHeader));
        assert_eq!(classify(&[0x48, 0, 0]), Err(ClassifyError::TruncatedDataHeader));
        assert_eq!(classify(&[0x20]), Err(ClassifyError::TruncatedControl));
        assert_eq!(classify(&[0x38, 0, 0]), Err(ClassifyError::TruncatedControl));
    }

    proptest::proptest! {
        #[test]
        fn classify_agrees_with_the_opcode_bits(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..16)) {
            let result = classify(&bytes);
            match bytes.first() {
                None => proptest::prop_assert_eq!(result, Err(ClassifyError::Empty)),
                Some(b) if b >> OPCODE_SHIFT == P_DATA_V2 => {
                    proptest::prop_assert_eq!(result.is_ok(), bytes.len() >= DATA_V2_HEADER_LEN);
                }
                Some(_) => proptest::prop_assert_eq!(result.is_ok(), bytes.len() >= MIN_PACKET_LEN),
            }
        }
    }
}
