//! NET_FRAGMENT: one 64-bit bit field (wdk-abi-facts.md §2.2).
//!
//! C bit fields have no portable Rust form, so the fragment is its `u64`
//! storage unit with shift/mask accessors. Setters reject values that do not
//! fit instead of truncating, and never touch `OsReserved_Bounced`, which
//! belongs to NetAdapterCx.

use super::FieldOverflow;

/// Largest ValidLength or Capacity: 26 bits (§2.2: 67,108,863).
pub const MAX_LENGTH: u32 = (1 << 26) - 1;
/// Largest Offset: 10 bits (§2.2: 1023). NetAdapterCx's verifier reads an
/// Offset of exactly 1023 as "not written" (datapath facts, driver-managed RX).
pub const MAX_OFFSET: u16 = (1 << 10) - 1;

const VALID_LENGTH_SHIFT: u32 = 0;
const CAPACITY_SHIFT: u32 = 26;
const OFFSET_SHIFT: u32 = 52;
const SCRATCH_SHIFT: u32 = 62;
const BOUNCED_SHIFT: u32 = 63;

const VALID_LENGTH_MASK: u64 = (MAX_LENGTH as u64) << VALID_LENGTH_SHIFT;
const CAPACITY_MASK: u64 = (MAX_LENGTH as u64) << CAPACITY_SHIFT;
const OFFSET_MASK: u64 = (MAX_OFFSET as u64) << OFFSET_SHIFT;
const SCRATCH_MASK: u64 = 1 << SCRATCH_SHIFT;
const BOUNCED_MASK: u64 = 1 << BOUNCED_SHIFT;

// §2.2: the masks as computed from the header.
const _: () = assert!(VALID_LENGTH_MASK == 0x3FF_FFFF);
const _: () = assert!(CAPACITY_MASK == 0xF_FFFF_FC00_0000);
const _: () = assert!(OFFSET_MASK == 0x3FF0_0000_0000_0000);
const _: () = assert!(SCRATCH_MASK == 0x4000_0000_0000_0000);
const _: () = assert!(BOUNCED_MASK == 0x8000_0000_0000_0000);
// The five fields tile the word exactly.
const _: () = assert!(VALID_LENGTH_MASK ^ CAPACITY_MASK ^ OFFSET_MASK ^ SCRATCH_MASK ^ BOUNCED_MASK == u64::MAX);
// §2.2: NET_FRAGMENT is 8 bytes, align 8.
const _: () = assert!(size_of::<NetFragment>() == 8);
const _: () = assert!(align_of::<NetFragment>() == 8);

/// NET_FRAGMENT: one buffer of a packet.
#[repr(transparent)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct NetFragment(u64);

impl NetFragment {
    /// A fragment from its raw storage word.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw storage word, as the OS sees it.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Payload length in bytes (≤ Capacity).
    pub const fn valid_length(self) -> u32 {
        ((self.0 & VALID_LENGTH_MASK) >> VALID_LENGTH_SHIFT) as u32
    }

    /// Total buffer length in bytes.
    pub const fn capacity(self) -> u32 {
        ((self.0 & CAPACITY_MASK) >> CAPACITY_SHIFT) as u32
    }

    /// Offset of the payload from the buffer's virtual address.
    pub const fn offset(self) -> u16 {
        ((self.0 & OFFSET_MASK) >> OFFSET_SHIFT) as u16
    }

    /// The driver's scratch bit (the only bit the verifier lets a TX driver
    /// change).
    pub const fn scratch(self) -> bool {
        self.0 & SCRATCH_MASK != 0
    }

    /// OsReserved_Bounced: NetAdapterCx copied this fragment into its own
    /// buffer. Read-only for the driver.
    pub const fn bounced(self) -> bool {
        self.0 & BOUNCED_MASK != 0
    }

    pub fn set_valid_length(&mut self, length: u32) -> Result<(), FieldOverflow> {
        if length > MAX_LENGTH {
            return Err(FieldOverflow::ValidLength);
        }
        self.0 = (self.0 & !VALID_LENGTH_MASK) | (u64::from(length) << VALID_LENGTH_SHIFT);
        Ok(())
    }

    pub fn set_capacity(&mut self, capacity: u32) -> Result<(), FieldOverflow> {
        if capacity > MAX_LENGTH {
            return Err(FieldOverflow::Capacity);
        }
        self.0 = (self.0 & !CAPACITY_MASK) | (u64::from(capacity) << CAPACITY_SHIFT);
        Ok(())
    }

    pub fn set_offset(&mut self, offset: u16) -> Result<(), FieldOverflow> {
        if offset > MAX_OFFSET {
            return Err(FieldOverflow::Offset);
        }
        self.0 = (self.0 & !OFFSET_MASK) | (u64::from(offset) << OFFSET_SHIFT);
        Ok(())
    }

    pub fn set_scratch(&mut self, scratch: bool) {
        self.0 = (self.0 & !SCRATCH_MASK) | (u64::from(scratch) << SCRATCH_SHIFT);
    }

    /// Describes a received payload the way driver-managed RX must: the
    /// virtual address points at the payload itself, so Offset is 0 and
    /// Capacity equals ValidLength (datapath facts, "Point VirtualAddress at
    /// the payload itself"). Nothing is written if `length` does not fit.
    pub fn set_rx_payload(&mut self, length: u32) -> Result<(), FieldOverflow> {
        self.set_valid_length(length)?;
        // Both fields share one limit, so this cannot fail after the above.
        self.set_capacity(length)?;
        self.set_offset(0)
    }
}

impl core::fmt::Debug for NetFragment {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NetFragment")
            .field("valid_length", &self.valid_length())
            .field("capacity", &self.capacity())
            .field("offset", &self.offset())
            .field("scratch", &self.scratch())
            .field("bounced", &self.bounced())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_at_their_limits() {
        let mut f = NetFragment::default();
        f.set_valid_length(MAX_LENGTH).unwrap();
        f.set_capacity(MAX_LENGTH).unwrap();
        f.set_offset(MAX_OFFSET).unwrap();
        f.set_scratch(true);
        assert_eq!((f.valid_length(), f.capacity(), f.offset(), f.scratch()), (MAX_LENGTH, MAX_LENGTH, 1023, true));
        // Everything but the OS's Bounced bit is set.
        assert_eq!(f.bits(), !BOUNCED_MASK);
        assert!(!f.bounced());

        f.set_valid_length(0).unwrap();
        f.set_capacity(1).unwrap();
        f.set_offset(0).unwrap();
        f.set_scratch(false);
        assert_eq!(f.bits(), 1 << 26);
    }

    #[test]
    fn each_field_lands_on_the_documented_bits() {
        // wdk-abi-facts.md §2.2: ValidLength 0–25, Capacity 26–51, Offset 52–61, Scratch 62.
        let mut f = NetFragment::default();
        f.set_valid_length(1).unwrap();
        assert_eq!(f.bits(), 1);
        let mut f = NetFragment::default();
        f.set_capacity(1).unwrap();
        assert_eq!(f.bits(), 1 << 26);
        let mut f = NetFragment::default();
        f.set_offset(1).unwrap();
        assert_eq!(f.bits(), 1 << 52);
        let mut f = NetFragment::default();
        f.set_scratch(true);
        assert_eq!(f.bits(), 1 << 62);
        assert!(NetFragment::from_bits(1 << 63).bounced());
    }

    #[test]
    fn out_of_range_values_are_rejected_not_truncated() {
        let mut f = NetFragment::from_bits(0x0123_4567_89AB_CDEF);
        let before = f;
        assert_eq!(f.set_valid_length(MAX_LENGTH + 1), Err(FieldOverflow::ValidLength));
        assert_eq!(f.set_capacity(u32::MAX), Err(FieldOverflow::Capacity));
        assert_eq!(f.set_offset(MAX_OFFSET + 1), Err(FieldOverflow::Offset));
        assert_eq!(f.set_rx_payload(MAX_LENGTH + 1), Err(FieldOverflow::ValidLength));
        assert_eq!(f, before);
    }

    #[test]
    fn setters_preserve_the_bounced_bit() {
        for bounced in [0, BOUNCED_MASK] {
            let mut f = NetFragment::from_bits(bounced);
            f.set_valid_length(MAX_LENGTH).unwrap();
            f.set_capacity(MAX_LENGTH).unwrap();
            f.set_offset(MAX_OFFSET).unwrap();
            f.set_scratch(true);
            f.set_scratch(false);
            f.set_rx_payload(1500).unwrap();
            assert_eq!(f.bits() & BOUNCED_MASK, bounced);
        }
    }

    #[test]
    fn rx_payload_points_at_the_payload_itself() {
        let mut f = NetFragment::from_bits(!BOUNCED_MASK);
        f.set_rx_payload(1400).unwrap();
        assert_eq!((f.valid_length(), f.capacity(), f.offset()), (1400, 1400, 0));
        // The driver's scratch bit is left alone.
        assert!(f.scratch());
    }
}
