//! NET_EXTENSION, NET_EXTENSION_QUERY and the extension payloads the driver
//! uses (wdk-abi-facts.md §2.3, §2.4).
//!
//! An extension is a parallel array beside a ring: element `i` of the
//! fragment ring has its virtual address at `base + stride × i` of the
//! virtual-address extension. [`Extension`] is the checked, typed form; ring
//! views hand out its elements under the ring's ownership rule
//! ([`super::ring::RingView::extension_mut`]).

use core::ffi::c_void;
use core::marker::PhantomData;
use core::mem::offset_of;
use core::ptr::NonNull;

use super::FieldOverflow;
use super::fragment::NetFragment;
use super::mdl::Mdl;
use super::packet::NetPacket;
use super::ring::RingElement;
use super::sealed::Sealed;

// §2.3: NET_EXTENSION is 40 bytes, align 8: Reserved[0] (base) @0,
// Reserved[1] (stride) @8, Enabled @32.
const _: () = assert!(size_of::<NetExtension>() == 40);
const _: () = assert!(align_of::<NetExtension>() == 8);
const _: () = assert!(offset_of!(NetExtension, base) == 0);
const _: () = assert!(offset_of!(NetExtension, stride) == 8);
const _: () = assert!(offset_of!(NetExtension, enabled) == 32);
// §2.3: NET_EXTENSION_QUERY is 24 bytes: Size @0, Name @8, Version @16, Type @20.
const _: () = assert!(size_of::<NetExtensionQuery>() == 24);
const _: () = assert!(align_of::<NetExtensionQuery>() == 8);
const _: () = assert!(offset_of!(NetExtensionQuery, size) == 0);
const _: () = assert!(offset_of!(NetExtensionQuery, name) == 8);
const _: () = assert!(offset_of!(NetExtensionQuery, version) == 16);
const _: () = assert!(offset_of!(NetExtensionQuery, ty) == 20);
const _: () = assert!(size_of::<NetExtensionType>() == 4);
// §2.4: payload sizes.
const _: () = assert!(size_of::<NetFragmentVirtualAddress>() == 8 && align_of::<NetFragmentVirtualAddress>() == 8);
const _: () = assert!(size_of::<NetFragmentReturnContext>() == 8 && align_of::<NetFragmentReturnContext>() == 8);
const _: () = assert!(size_of::<NetFragmentMdl>() == 8 && align_of::<NetFragmentMdl>() == 8);
const _: () = assert!(size_of::<NetFragmentLogicalAddress>() == 8 && align_of::<NetFragmentLogicalAddress>() == 8);
const _: () = assert!(size_of::<NetPacketChecksum>() == 1 && align_of::<NetPacketChecksum>() == 1);

/// NET_EXTENSION: what Net{Rx,Tx}QueueGetExtension fills in.
#[repr(C)]
#[derive(Debug)]
pub struct NetExtension {
    /// Reserved[0]: address of element 0.
    pub base: *mut u8,
    /// Reserved[1]: byte distance between elements (pointer-sized integer).
    pub stride: usize,
    /// Reserved[2..3]: the OS's.
    os_reserved: [*mut c_void; 2],
    /// Enabled (BOOLEAN), overlaying the low byte of the pointer-sized
    /// Reserved1.
    pub enabled: u8,
    os_reserved1: [u8; 7],
}

impl NetExtension {
    /// The zeroed extension a query is answered into.
    pub const fn zeroed() -> Self {
        Self::new(core::ptr::null_mut(), 0, false)
    }

    /// An extension as the OS side (the host model) fills it.
    pub const fn new(base: *mut u8, stride: usize, enabled: bool) -> Self {
        Self { base, stride, os_reserved: [core::ptr::null_mut(); 2], enabled: enabled as u8, os_reserved1: [0; 7] }
    }

    /// NetExtensionGetData: the address of element `index`. Only computes
    /// the address (wrapping), so it is safe; dereferencing it is not.
    pub fn element(&self, index: u32) -> *mut u8 {
        self.base.wrapping_add(self.stride.wrapping_mul(index as usize))
    }
}

/// NET_EXTENSION_TYPE: whether the extension is indexed by packet or
/// fragment (or data buffer, unused here).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetExtensionType {
    Packet = 1,
    Fragment = 2,
    Buffer = 3,
}

/// NET_EXTENSION_QUERY.
#[repr(C)]
#[derive(Debug)]
pub struct NetExtensionQuery {
    /// Size: always `size_of::<NetExtensionQuery>()` (24).
    pub size: u32,
    /// Name: NUL-terminated UTF-16.
    pub name: *const u16,
    pub version: u32,
    pub ty: NetExtensionType,
}

impl NetExtensionQuery {
    /// NET_EXTENSION_QUERY_INIT. `None` if `name` is not NUL-terminated,
    /// which the OS would read past.
    pub const fn new(name: &'static [u16], version: u32, ty: NetExtensionType) -> Option<Self> {
        match name.last() {
            Some(0) => Some(Self { size: size_of::<Self>() as u32, name: name.as_ptr(), version, ty }),
            _ => None,
        }
    }

    /// The query for payload `P`: its name, version and type.
    pub const fn of<P: ExtensionPayload>() -> Self {
        Self { size: size_of::<Self>() as u32, name: P::NAME.as_ptr(), version: P::VERSION, ty: P::TYPE }
    }
}

/// ASCII to NUL-terminated UTF-16 at compile time; `N` must be the length
/// plus one, checked when the constant is evaluated.
const fn utf16z<const N: usize>(ascii: &str) -> [u16; N] {
    let bytes = ascii.as_bytes();
    assert!(bytes.len() + 1 == N, "N must be the string length plus the NUL");
    let mut out = [0u16; N];
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i].is_ascii());
        out[i] = bytes[i] as u16;
        i += 1;
    }
    out
}

// §2.4: names, all version 1. Statics, not consts, so each name has one
// address for the query's PCWSTR.
pub static NET_FRAGMENT_EXTENSION_VIRTUAL_ADDRESS_NAME: [u16; 27] = utf16z("ms_fragment_virtualaddress");
pub const NET_FRAGMENT_EXTENSION_VIRTUAL_ADDRESS_VERSION_1: u32 = 1;
pub static NET_FRAGMENT_EXTENSION_RETURN_CONTEXT_NAME: [u16; 26] = utf16z("ms_fragment_returncontext");
pub const NET_FRAGMENT_EXTENSION_RETURN_CONTEXT_VERSION_1: u32 = 1;
pub static NET_FRAGMENT_EXTENSION_MDL_NAME: [u16; 16] = utf16z("ms_fragment_mdl");
pub const NET_FRAGMENT_EXTENSION_MDL_VERSION_1: u32 = 1;
pub static NET_FRAGMENT_EXTENSION_LOGICAL_ADDRESS_NAME: [u16; 27] = utf16z("ms_fragment_logicaladdress");
pub const NET_FRAGMENT_EXTENSION_LOGICAL_ADDRESS_VERSION_1: u32 = 1;
pub static NET_PACKET_EXTENSION_CHECKSUM_NAME: [u16; 19] = utf16z("ms_packet_checksum");
pub const NET_PACKET_EXTENSION_CHECKSUM_VERSION_1: u32 = 1;

/// An extension payload: its layout, how to query it and which ring indexes
/// it. Sealed: [`Extension`] trusts these.
pub trait ExtensionPayload: Sealed + Sized {
    /// The ring whose indices index this extension.
    type Element: RingElement;
    const NAME: &'static [u16];
    const VERSION: u32;
    const TYPE: NetExtensionType;
}

/// NET_FRAGMENT_VIRTUAL_ADDRESS: where the fragment's buffer is. The
/// payload starts `Offset` bytes after it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetFragmentVirtualAddress {
    pub virtual_address: *mut c_void,
}

/// NET_FRAGMENT_RETURN_CONTEXT: the driver's handle for an RX buffer,
/// given back in EvtAdapterReturnRxBuffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetFragmentReturnContext {
    pub handle: *mut c_void,
}

/// NET_FRAGMENT_MDL (DMA and MBB adapters only; a virtual adapter never gets
/// it, datapath facts).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetFragmentMdl {
    pub mdl: *mut Mdl,
}

/// NET_FRAGMENT_LOGICAL_ADDRESS (DMA adapters only).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetFragmentLogicalAddress {
    pub logical_address: u64,
}

/// NetPacketRxChecksumEvaluation* and NetPacketTxChecksumAction* (§2.4):
/// the 2-bit values of each [`NetPacketChecksum`] layer.
pub mod checksum {
    pub const RX_NOT_CHECKED: u8 = 0;
    pub const RX_VALID: u8 = 1;
    pub const RX_INVALID: u8 = 2;
    pub const TX_PASSTHROUGH: u8 = 0;
    pub const TX_REQUIRED: u8 = 2;
}

/// NET_PACKET_CHECKSUM: Layer2 bits 0–1, Layer3 bits 2–3, Layer4 bits 4–5,
/// Reserved bits 6–7 (§2.4).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetPacketChecksum(u8);

const CHECKSUM_FIELD_MASK: u8 = 0b11;
const LAYER2_SHIFT: u32 = 0;
const LAYER3_SHIFT: u32 = 2;
const LAYER4_SHIFT: u32 = 4;

impl NetPacketChecksum {
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn layer2(self) -> u8 {
        (self.0 >> LAYER2_SHIFT) & CHECKSUM_FIELD_MASK
    }

    pub const fn layer3(self) -> u8 {
        (self.0 >> LAYER3_SHIFT) & CHECKSUM_FIELD_MASK
    }

    pub const fn layer4(self) -> u8 {
        (self.0 >> LAYER4_SHIFT) & CHECKSUM_FIELD_MASK
    }

    pub fn set_layer2(&mut self, value: u8) -> Result<(), FieldOverflow> {
        self.set(LAYER2_SHIFT, value)
    }

    pub fn set_layer3(&mut self, value: u8) -> Result<(), FieldOverflow> {
        self.set(LAYER3_SHIFT, value)
    }

    pub fn set_layer4(&mut self, value: u8) -> Result<(), FieldOverflow> {
        self.set(LAYER4_SHIFT, value)
    }

    fn set(&mut self, shift: u32, value: u8) -> Result<(), FieldOverflow> {
        if value > CHECKSUM_FIELD_MASK {
            return Err(FieldOverflow::Checksum);
        }
        self.0 = (self.0 & !(CHECKSUM_FIELD_MASK << shift)) | (value << shift);
        Ok(())
    }
}

impl Sealed for NetFragmentVirtualAddress {}
impl ExtensionPayload for NetFragmentVirtualAddress {
    type Element = NetFragment;
    const NAME: &'static [u16] = &NET_FRAGMENT_EXTENSION_VIRTUAL_ADDRESS_NAME;
    const VERSION: u32 = NET_FRAGMENT_EXTENSION_VIRTUAL_ADDRESS_VERSION_1;
    const TYPE: NetExtensionType = NetExtensionType::Fragment;
}

impl Sealed for NetFragmentReturnContext {}
impl ExtensionPayload for NetFragmentReturnContext {
    type Element = NetFragment;
    const NAME: &'static [u16] = &NET_FRAGMENT_EXTENSION_RETURN_CONTEXT_NAME;
    const VERSION: u32 = NET_FRAGMENT_EXTENSION_RETURN_CONTEXT_VERSION_1;
    const TYPE: NetExtensionType = NetExtensionType::Fragment;
}

impl Sealed for NetFragmentMdl {}
impl ExtensionPayload for NetFragmentMdl {
    type Element = NetFragment;
    const NAME: &'static [u16] = &NET_FRAGMENT_EXTENSION_MDL_NAME;
    const VERSION: u32 = NET_FRAGMENT_EXTENSION_MDL_VERSION_1;
    const TYPE: NetExtensionType = NetExtensionType::Fragment;
}

impl Sealed for NetFragmentLogicalAddress {}
impl ExtensionPayload for NetFragmentLogicalAddress {
    type Element = NetFragment;
    const NAME: &'static [u16] = &NET_FRAGMENT_EXTENSION_LOGICAL_ADDRESS_NAME;
    const VERSION: u32 = NET_FRAGMENT_EXTENSION_LOGICAL_ADDRESS_VERSION_1;
    const TYPE: NetExtensionType = NetExtensionType::Fragment;
}

impl Sealed for NetPacketChecksum {}
impl ExtensionPayload for NetPacketChecksum {
    type Element = NetPacket;
    const NAME: &'static [u16] = &NET_PACKET_EXTENSION_CHECKSUM_NAME;
    const VERSION: u32 = NET_PACKET_EXTENSION_CHECKSUM_VERSION_1;
    const TYPE: NetExtensionType = NetExtensionType::Packet;
}

/// Why a queried extension cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtensionError {
    /// Enabled is FALSE: the OS did not enable this extension on the queue.
    NotEnabled,
    /// Enabled, but the base address is null.
    NullBase,
    /// The stride is smaller than the payload.
    StrideTooSmall,
    /// The base or stride does not keep every element aligned for the payload.
    Misaligned,
}

/// A queried, enabled extension with payload `P`, checked once when the
/// queue is created so that element access needs no further checks.
pub struct Extension<P: ExtensionPayload> {
    base: NonNull<u8>,
    stride: usize,
    _payload: PhantomData<*mut P>,
}

impl<P: ExtensionPayload> core::fmt::Debug for Extension<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Extension").field("base", &self.base).field("stride", &self.stride).finish()
    }
}

// SAFETY: an Extension is only addresses; its elements are reached through
// a RingView, whose ownership rule (the driver owns [BeginIndex, EndIndex))
// governs them. The queue's callbacks that use it are serialized by
// NetAdapterCx, so moving it between CPUs hands it from one to the next.
unsafe impl<P: ExtensionPayload> Send for Extension<P> {}

impl<P: ExtensionPayload> Extension<P> {
    /// Checks an extension the OS returned.
    ///
    /// # Safety
    /// `ext` was filled by Net{Rx,Tx}QueueGetExtension for
    /// [`NetExtensionQuery::of::<P>()`](NetExtensionQuery::of) on the queue
    /// whose ring this extension will be used with; the OS keeps its storage
    /// (one element per ring element, `stride` apart) alive until the queue
    /// is destroyed, and the Extension is not used after that.
    pub unsafe fn from_queried(ext: &NetExtension) -> Result<Self, ExtensionError> {
        if ext.enabled == 0 {
            return Err(ExtensionError::NotEnabled);
        }
        let base = NonNull::new(ext.base).ok_or(ExtensionError::NullBase)?;
        if ext.stride < size_of::<P>() {
            return Err(ExtensionError::StrideTooSmall);
        }
        if !base.cast::<P>().is_aligned() || ext.stride % align_of::<P>() != 0 {
            return Err(ExtensionError::Misaligned);
        }
        Ok(Self { base, stride: ext.stride, _payload: PhantomData })
    }

    /// The element for ring index `index`, which the caller has already
    /// masked to the ring.
    ///
    /// # Safety
    /// `index` is below the ring's NumberOfElements, so by the contract of
    /// [`Extension::from_queried`] the element lies inside the extension's
    /// storage.
    pub(crate) unsafe fn element(&self, index: u32) -> NonNull<P> {
        // SAFETY: from_queried's contract: storage holds one element per ring
        // element, `stride` apart, and `index` is a masked ring index.
        unsafe { self.base.add(self.stride * index as usize).cast() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(name: &[u16]) -> std::string::String {
        let (nul, text) = name.split_last().unwrap();
        assert_eq!(*nul, 0, "NUL-terminated");
        assert!(!text.contains(&0));
        std::string::String::from_utf16(text).unwrap()
    }

    #[test]
    fn names_are_the_headers_strings_nul_terminated() {
        // wdk-abi-facts.md §2.4.
        assert_eq!(decode(&NET_FRAGMENT_EXTENSION_VIRTUAL_ADDRESS_NAME), "ms_fragment_virtualaddress");
        assert_eq!(decode(&NET_FRAGMENT_EXTENSION_RETURN_CONTEXT_NAME), "ms_fragment_returncontext");
        assert_eq!(decode(&NET_FRAGMENT_EXTENSION_MDL_NAME), "ms_fragment_mdl");
        assert_eq!(decode(&NET_FRAGMENT_EXTENSION_LOGICAL_ADDRESS_NAME), "ms_fragment_logicaladdress");
        assert_eq!(decode(&NET_PACKET_EXTENSION_CHECKSUM_NAME), "ms_packet_checksum");
    }

    #[test]
    fn query_carries_size_name_version_and_type() {
        let q = NetExtensionQuery::of::<NetFragmentReturnContext>();
        assert_eq!((q.size, q.version, q.ty), (24, 1, NetExtensionType::Fragment));
        assert_eq!(q.name, NET_FRAGMENT_EXTENSION_RETURN_CONTEXT_NAME.as_ptr());
        let q = NetExtensionQuery::of::<NetPacketChecksum>();
        assert_eq!((q.ty as i32, q.version), (1, 1));
        static UNTERMINATED: [u16; 2] = [b'm' as u16, b's' as u16];
        assert!(NetExtensionQuery::new(&UNTERMINATED, 1, NetExtensionType::Packet).is_none());
        let q = NetExtensionQuery::new(&NET_FRAGMENT_EXTENSION_MDL_NAME, 1, NetExtensionType::Fragment).unwrap();
        assert_eq!(q.size, 24);
    }

    #[test]
    fn element_address_is_base_plus_stride_times_index() {
        let mut storage = [0u64; 16];
        let base = storage.as_mut_ptr().cast::<u8>();
        // A stride of 24 for an 8-byte payload: elements are not adjacent.
        let ext = NetExtension::new(base, 24, true);
        assert_eq!(ext.element(0), base);
        assert_eq!(ext.element(3), base.wrapping_add(72));
        // SAFETY: `storage` holds 5 elements of stride 24 (128 bytes), outlives
        // `checked`, and only masked indices below 5 are used.
        let checked = unsafe { Extension::<NetFragmentVirtualAddress>::from_queried(&ext) }.unwrap();
        // SAFETY: index 4 is inside `storage` (4 × 24 + 8 ≤ 128).
        let e = unsafe { checked.element(4) };
        assert_eq!(e.as_ptr().cast::<u8>(), base.wrapping_add(96));
    }

    #[test]
    fn unusable_extensions_are_rejected() {
        let mut storage = [0u64; 4];
        let base = storage.as_mut_ptr().cast::<u8>();
        // SAFETY (all four): only checks are exercised; no element is accessed.
        unsafe {
            let off = NetExtension::new(base, 8, false);
            assert_eq!(Extension::<NetFragmentMdl>::from_queried(&off).unwrap_err(), ExtensionError::NotEnabled);
            let null = NetExtension::new(core::ptr::null_mut(), 8, true);
            assert_eq!(Extension::<NetFragmentMdl>::from_queried(&null).unwrap_err(), ExtensionError::NullBase);
            let small = NetExtension::new(base, 4, true);
            assert_eq!(Extension::<NetFragmentMdl>::from_queried(&small).unwrap_err(), ExtensionError::StrideTooSmall);
            let odd = NetExtension::new(base, 12, true);
            assert_eq!(Extension::<NetFragmentMdl>::from_queried(&odd).unwrap_err(), ExtensionError::Misaligned);
            // A one-byte payload fits any stride.
            assert!(Extension::<NetPacketChecksum>::from_queried(&NetExtension::new(base, 3, true)).is_ok());
        }
    }

    #[test]
    fn checksum_layers_use_two_bits_each() {
        let mut c = NetPacketChecksum::default();
        c.set_layer3(checksum::RX_VALID).unwrap();
        c.set_layer4(checksum::RX_VALID).unwrap();
        assert_eq!(c.bits(), 0b0001_0100);
        c.set_layer2(checksum::RX_INVALID).unwrap();
        assert_eq!((c.layer2(), c.layer3(), c.layer4()), (2, 1, 1));
        assert_eq!(c.set_layer4(4), Err(FieldOverflow::Checksum));
        assert_eq!(c.bits(), 0b0001_0110);
        // Reserved bits survive.
        let mut c = NetPacketChecksum::from_bits(0xC0);
        c.set_layer4(checksum::TX_REQUIRED).unwrap();
        assert_eq!(c.bits(), 0xE0);
    }
}
