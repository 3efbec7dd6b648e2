//! NetAdapterCx data-path structures as `#[repr(C)]` mirrors, and the ring,
//! fragment and extension helpers the WDK headers only ship as inline C.
//!
//! Every layout is written from `wdk-abi-facts.md` (x64, computed from the
//! real headers) and asserted at compile time next to its declaration. The
//! ownership rules the `unsafe` code relies on are those of
//! `netadaptercx-datapath-facts.md`: the driver touches only ring elements in
//! `[BeginIndex, EndIndex)`, indices only move forward, and WSK indication
//! memory is read only until the list is released.

pub mod extension;
pub mod fragment;
pub mod mdl;
pub mod packet;
pub mod ring;
pub mod wsk;

// wdk-abi-facts.md describes x64 (pointers, SIZE_T and handles are 8 bytes);
// every mirror below assumes it.
const _: () = assert!(size_of::<usize>() == 8 && size_of::<*mut u8>() == 8);

/// A value does not fit the bit field it was meant for. Setters return this
/// instead of truncating; the variant names the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldOverflow {
    /// NET_FRAGMENT.ValidLength: 26 bits.
    ValidLength,
    /// NET_FRAGMENT.Capacity: 26 bits.
    Capacity,
    /// NET_FRAGMENT.Offset: 10 bits.
    Offset,
    /// NET_PACKET_LAYOUT.Layer2HeaderLength: 7 bits.
    Layer2HeaderLength,
    /// NET_PACKET_LAYOUT.Layer3HeaderLength: 9 bits.
    Layer3HeaderLength,
    /// A NET_PACKET_CHECKSUM layer field: 2 bits.
    Checksum,
}

/// Keeps the element and payload traits closed to the types mirrored here:
/// their implementations promise layouts the unsafe code depends on.
mod sealed {
    pub trait Sealed {}
}
