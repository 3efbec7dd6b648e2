//! NET_PACKET and NET_PACKET_LAYOUT (wdk-abi-facts.md §2.1).
//!
//! The layout is five packed bytes of MSVC bit fields: a 16-bit unit holding
//! the layer-2 and layer-3 header lengths, then three 8-bit units. The
//! accessors below read and write those units little-endian, bit for bit as
//! the facts give them.

use core::mem::offset_of;

use super::FieldOverflow;

// §2.1: NET_PACKET is 12 bytes, align 4, fields at 0/4/6 and the flags byte at 11.
const _: () = assert!(size_of::<NetPacket>() == 12);
const _: () = assert!(align_of::<NetPacket>() == 4);
const _: () = assert!(offset_of!(NetPacket, fragment_index) == 0);
const _: () = assert!(offset_of!(NetPacket, fragment_count) == 4);
const _: () = assert!(offset_of!(NetPacket, layout) == 6);
const _: () = assert!(offset_of!(NetPacket, flags) == 11);
// §2.1: NET_PACKET_LAYOUT is 5 bytes, align 1 (declared under pack(1)).
const _: () = assert!(size_of::<NetPacketLayout>() == 5);
const _: () = assert!(align_of::<NetPacketLayout>() == 1);

/// Largest Layer2HeaderLength: 7 bits.
pub const MAX_LAYER2_HEADER_LENGTH: u16 = (1 << 7) - 1;
/// Largest Layer3HeaderLength: 9 bits.
pub const MAX_LAYER3_HEADER_LENGTH: u16 = (1 << 9) - 1;

// §2.1 bit positions. The 16-bit unit at layout byte 0: L2 length bits 0–6,
// L3 length bits 7–15. Byte 3: L2 type bits 0–3, L3 type bits 4–7. Byte 4:
// L4 type bits 0–3, Reserved0 bits 4–7.
const L3_LENGTH_SHIFT: u32 = 7;
const TYPE_MASK: u8 = 0x0F;
const HIGH_NIBBLE_SHIFT: u32 = 4;
// §2.1: NET_PACKET byte 11: Ignore bit 0, Scratch bit 1, Reserved1 bits 2–7.
const IGNORE_BIT: u8 = 0x01;
const SCRATCH_BIT: u8 = 0x02;

const _: () = assert!(MAX_LAYER2_HEADER_LENGTH == 0x7F && MAX_LAYER3_HEADER_LENGTH << L3_LENGTH_SHIFT == 0xFF80);

/// NET_PACKET: one packet in the packet ring; its fragments are
/// `[fragment_index, fragment_index + fragment_count)` of the fragment ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetPacket {
    /// FragmentIndex: fragment-ring index of the first fragment.
    pub fragment_index: u32,
    /// FragmentCount: number of fragments (never 0 for an indicated packet).
    pub fragment_count: u16,
    /// Layout: header types and lengths; all zero lets NetAdapterCx infer
    /// them from the medium.
    pub layout: NetPacketLayout,
    /// Ignore, Scratch and Reserved1 bits; see the accessors.
    flags: u8,
}

impl NetPacket {
    /// Ignore: on RX the driver sets it to drop the packet (and to return
    /// unused packets on cancel); on TX it is read-only and means "do not
    /// transmit".
    pub const fn ignore(&self) -> bool {
        self.flags & IGNORE_BIT != 0
    }

    pub fn set_ignore(&mut self, ignore: bool) {
        self.set_flag(IGNORE_BIT, ignore);
    }

    /// Scratch: free for the driver (TX marks completed packets with it).
    pub const fn scratch(&self) -> bool {
        self.flags & SCRATCH_BIT != 0
    }

    pub fn set_scratch(&mut self, scratch: bool) {
        self.set_flag(SCRATCH_BIT, scratch);
    }

    fn set_flag(&mut self, bit: u8, on: bool) {
        if on {
            self.flags |= bit;
        } else {
            self.flags &= !bit;
        }
    }
}

/// Layer-2 type, 4 bits (NetPacketLayer2Type*).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layer2Type(u8);

impl Layer2Type {
    pub const UNSPECIFIED: Self = Self(0);
    /// No link-layer header: what a VPN adapter (medium IP) carries.
    pub const NULL: Self = Self(1);
    pub const ETHERNET: Self = Self(2);
    pub const IEEE80211: Self = Self(3);

    /// A type from a raw value; `None` if it does not fit 4 bits.
    pub const fn new(raw: u8) -> Option<Self> {
        if raw <= TYPE_MASK { Some(Self(raw)) } else { None }
    }

    pub const fn get(self) -> u8 {
        self.0
    }
}

/// Layer-3 type, 4 bits (NetPacketLayer3Type*).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layer3Type(u8);

impl Layer3Type {
    pub const UNSPECIFIED: Self = Self(0);
    pub const IPV4_UNSPECIFIED_OPTIONS: Self = Self(1);
    pub const IPV4_WITH_OPTIONS: Self = Self(2);
    pub const IPV4_NO_OPTIONS: Self = Self(3);
    pub const IPV6_UNSPECIFIED_EXTENSIONS: Self = Self(4);
    pub const IPV6_WITH_EXTENSIONS: Self = Self(5);
    pub const IPV6_NO_EXTENSIONS: Self = Self(6);

    /// A type from a raw value; `None` if it does not fit 4 bits.
    pub const fn new(raw: u8) -> Option<Self> {
        if raw <= TYPE_MASK { Some(Self(raw)) } else { None }
    }

    pub const fn get(self) -> u8 {
        self.0
    }

    /// NetPacketIsIpv4: one of the three IPv4 types.
    pub const fn is_ipv4(self) -> bool {
        matches!(self.0, 1..=3)
    }

    /// NetPacketIsIpv6: one of the three IPv6 types.
    pub const fn is_ipv6(self) -> bool {
        matches!(self.0, 4..=6)
    }
}

/// Layer-4 type, 4 bits (NetPacketLayer4Type*).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layer4Type(u8);

impl Layer4Type {
    pub const UNSPECIFIED: Self = Self(0);
    pub const TCP: Self = Self(1);
    pub const UDP: Self = Self(2);
    pub const IP_FRAGMENT: Self = Self(3);
    pub const IP_NOT_FRAGMENT: Self = Self(4);

    /// A type from a raw value; `None` if it does not fit 4 bits.
    pub const fn new(raw: u8) -> Option<Self> {
        if raw <= TYPE_MASK { Some(Self(raw)) } else { None }
    }

    pub const fn get(self) -> u8 {
        self.0
    }
}

/// NET_PACKET_LAYOUT: 40 bits of header types and lengths.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetPacketLayout {
    bytes: [u8; 5],
}

impl NetPacketLayout {
    /// The five bytes as stored.
    pub const fn to_bytes(self) -> [u8; 5] {
        self.bytes
    }

    pub const fn from_bytes(bytes: [u8; 5]) -> Self {
        Self { bytes }
    }

    const fn lengths_unit(&self) -> u16 {
        u16::from_le_bytes([self.bytes[0], self.bytes[1]])
    }

    fn set_lengths_unit(&mut self, unit: u16) {
        [self.bytes[0], self.bytes[1]] = unit.to_le_bytes();
    }

    pub const fn layer2_header_length(&self) -> u16 {
        self.lengths_unit() & MAX_LAYER2_HEADER_LENGTH
    }

    pub const fn layer3_header_length(&self) -> u16 {
        self.lengths_unit() >> L3_LENGTH_SHIFT
    }

    pub const fn layer4_header_length(&self) -> u8 {
        self.bytes[2]
    }

    pub const fn layer2_type(&self) -> Layer2Type {
        Layer2Type(self.bytes[3] & TYPE_MASK)
    }

    pub const fn layer3_type(&self) -> Layer3Type {
        Layer3Type(self.bytes[3] >> HIGH_NIBBLE_SHIFT)
    }

    pub const fn layer4_type(&self) -> Layer4Type {
        Layer4Type(self.bytes[4] & TYPE_MASK)
    }

    pub fn set_layer2_header_length(&mut self, length: u16) -> Result<(), FieldOverflow> {
        if length > MAX_LAYER2_HEADER_LENGTH {
            return Err(FieldOverflow::Layer2HeaderLength);
        }
        self.set_lengths_unit((self.lengths_unit() & !MAX_LAYER2_HEADER_LENGTH) | length);
        Ok(())
    }

    pub fn set_layer3_header_length(&mut self, length: u16) -> Result<(), FieldOverflow> {
        if length > MAX_LAYER3_HEADER_LENGTH {
            return Err(FieldOverflow::Layer3HeaderLength);
        }
        self.set_lengths_unit((self.lengths_unit() & MAX_LAYER2_HEADER_LENGTH) | (length << L3_LENGTH_SHIFT));
        Ok(())
    }

    /// The whole 8-bit unit: every value fits.
    pub fn set_layer4_header_length(&mut self, length: u8) {
        self.bytes[2] = length;
    }

    pub fn set_layer2_type(&mut self, ty: Layer2Type) {
        self.bytes[3] = (self.bytes[3] & !TYPE_MASK) | ty.0;
    }

    pub fn set_layer3_type(&mut self, ty: Layer3Type) {
        self.bytes[3] = (self.bytes[3] & TYPE_MASK) | (ty.0 << HIGH_NIBBLE_SHIFT);
    }

    /// Leaves Reserved0 (the high nibble) as it was.
    pub fn set_layer4_type(&mut self, ty: Layer4Type) {
        self.bytes[4] = (self.bytes[4] & !TYPE_MASK) | ty.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes(p: &NetPacket) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[0..4].copy_from_slice(&p.fragment_index.to_le_bytes());
        out[4..6].copy_from_slice(&p.fragment_count.to_le_bytes());
        out[6..11].copy_from_slice(&p.layout.to_bytes());
        out[11] = p.flags;
        out
    }

    #[test]
    fn layout_fields_land_on_the_documented_bits() {
        // wdk-abi-facts.md §2.1 as one little-endian 40-bit value: L2 length 0–6,
        // L3 length 7–15, L4 length 16–23, L2 type 24–27, L3 type 28–31, L4 type 32–35.
        let value = |l: NetPacketLayout| {
            let b = l.to_bytes();
            u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], 0, 0, 0])
        };
        let mut l = NetPacketLayout::default();
        l.set_layer2_header_length(MAX_LAYER2_HEADER_LENGTH).unwrap();
        assert_eq!(value(l), 0x7F);
        let mut l = NetPacketLayout::default();
        l.set_layer3_header_length(MAX_LAYER3_HEADER_LENGTH).unwrap();
        assert_eq!(value(l), 0x1FF << 7);
        let mut l = NetPacketLayout::default();
        l.set_layer4_header_length(0xFF);
        assert_eq!(value(l), 0xFF << 16);
        let mut l = NetPacketLayout::default();
        l.set_layer2_type(Layer2Type::new(0xF).unwrap());
        assert_eq!(value(l), 0xF << 24);
        let mut l = NetPacketLayout::default();
        l.set_layer3_type(Layer3Type::new(0xF).unwrap());
        assert_eq!(value(l), 0xF << 28);
        let mut l = NetPacketLayout::default();
        l.set_layer4_type(Layer4Type::new(0xF).unwrap());
        assert_eq!(value(l), 0xF << 32);
    }

    #[test]
    fn layout_round_trips_an_ipv6_udp_packet() {
        let mut l = NetPacketLayout::from_bytes([0xFF; 5]);
        l.set_layer2_header_length(0).unwrap();
        l.set_layer3_header_length(40).unwrap();
        l.set_layer4_header_length(8);
        l.set_layer2_type(Layer2Type::NULL);
        l.set_layer3_type(Layer3Type::IPV6_NO_EXTENSIONS);
        l.set_layer4_type(Layer4Type::UDP);
        assert_eq!(l.layer2_header_length(), 0);
        assert_eq!(l.layer3_header_length(), 40);
        assert_eq!(l.layer4_header_length(), 8);
        assert_eq!(l.layer2_type(), Layer2Type::NULL);
        assert_eq!(l.layer3_type(), Layer3Type::IPV6_NO_EXTENSIONS);
        assert_eq!(l.layer4_type(), Layer4Type::UDP);
        assert!(l.layer3_type().is_ipv6() && !l.layer3_type().is_ipv4());
        // Reserved0 (high nibble of byte 4) is untouched.
        assert_eq!(l.to_bytes()[4] >> 4, 0xF);
    }

    #[test]
    fn layout_rejects_lengths_and_types_that_do_not_fit() {
        let mut l = NetPacketLayout::default();
        assert_eq!(l.set_layer2_header_length(128), Err(FieldOverflow::Layer2HeaderLength));
        assert_eq!(l.set_layer3_header_length(512), Err(FieldOverflow::Layer3HeaderLength));
        assert_eq!(l, NetPacketLayout::default());
        assert_eq!(Layer2Type::new(16), None);
        assert_eq!(Layer3Type::new(16), None);
        assert_eq!(Layer4Type::new(0x10), None);
        assert!(Layer3Type::IPV4_UNSPECIFIED_OPTIONS.is_ipv4() && Layer3Type::IPV4_NO_OPTIONS.is_ipv4());
        assert!(!Layer3Type::UNSPECIFIED.is_ipv4() && !Layer3Type::UNSPECIFIED.is_ipv6());
    }

    #[test]
    fn packet_flags_use_bits_0_and_1_of_byte_11() {
        let mut p = NetPacket { fragment_index: 0x0403_0201, fragment_count: 0x0605, ..Default::default() };
        p.set_ignore(true);
        assert_eq!(as_bytes(&p), [1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0x01]);
        p.set_scratch(true);
        assert_eq!(as_bytes(&p)[11], 0x03);
        p.set_ignore(false);
        assert!(p.scratch() && !p.ignore());
        assert_eq!(as_bytes(&p)[11], 0x02);
        // Reserved1 bits written by the OS survive flag changes.
        p.flags |= 0xFC;
        p.set_scratch(false);
        assert_eq!(p.flags, 0xFC);
    }
}
