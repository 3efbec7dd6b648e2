//! The project's own declarations of NetAdapterCx 2.x (KMDF 1.33): the
//! client-side function table, the capability/config/callback structures
//! the adapter hands to the class extension, and their `*_INIT` helpers.
//!
//! Everything here is written from `wdk-abi-facts.md` (layouts computed from
//! the WDK 22621 headers, §2.5–2.7 and §3) and is independent of `wdk-sys`,
//! so it type-checks for `x86_64-pc-windows-msvc` on any host. On a Windows
//! host with the WDK, `build.rs` compares every layout here with bindgen's
//! view of the real headers (see `docs/windows-bring-up.md`).
//!
//! The ring, packet, fragment and extension types are `netcx`'s; until that
//! module is on this branch the getters below hand them out as opaque
//! pointers.
//!
//! How a call works: the C headers define every NetAdapterCx DDI as an inline
//! function that loads slot `XTableIndex` of the `NetFunctions` array (filled
//! by the WDF loader when it binds the driver to NetAdapterCx, before
//! `DriverEntry` runs) and calls it with `NetDriverGlobals` first. Here
//! [`NetAdapterCx::bind`] loads each slot the driver uses once, checks that
//! it is filled, and keeps the typed pointers; the methods then call them.

use core::ffi::c_void;
use core::marker::{PhantomData, PhantomPinned};
use core::mem::{align_of, offset_of, size_of};
use core::ptr::{self, NonNull};

use crate::ntstatus::NtStatus;

// ---------------------------------------------------------------------------
// Handles and opaque objects (facts §0 "Primitive sizes": every handle is a
// pointer-sized value).
// ---------------------------------------------------------------------------

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub struct $name(*mut c_void);

        impl $name {
            /// A null handle, as C passes `NULL`.
            pub const NULL: Self = Self(ptr::null_mut());

            /// Wraps a raw handle received from WDF or NetAdapterCx.
            pub const fn from_raw(raw: *mut c_void) -> Self {
                Self(raw)
            }

            /// The raw handle, for passing to WDF calls declared elsewhere.
            pub const fn as_raw(self) -> *mut c_void {
                self.0
            }

            /// Whether this is the null handle.
            pub fn is_null(self) -> bool {
                self.0.is_null()
            }
        }

        const _: () = assert!(size_of::<$name>() == 8 && align_of::<$name>() == 8);
    };
}

handle!(
    /// `NETADAPTER`
    NetAdapter
);
handle!(
    /// `NETPACKETQUEUE` (an RX or a TX queue)
    NetPacketQueue
);
handle!(
    /// `NETOFFLOAD`
    NetOffload
);
handle!(
    /// `NETEXECUTIONCONTEXT` (2.1+)
    NetExecutionContext
);
handle!(
    /// `NET_FRAGMENT_RETURN_CONTEXT_HANDLE`: the value a driver-managed RX
    /// fragment carries so that `EvtAdapterReturnRxBuffer` can find its
    /// buffer again.
    NetFragmentReturnContextHandle
);
handle!(
    /// `WDFDEVICE`
    WdfDevice
);
handle!(
    /// `WDFOBJECT`
    WdfObject
);
handle!(
    /// `WDFDMAENABLER`
    WdfDmaEnabler
);

macro_rules! opaque {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[repr(C)]
        pub struct $name {
            _private: [u8; 0],
            // Only ever behind a pointer the framework owns: not Send, not
            // Sync, not Unpin.
            _marker: PhantomData<(*mut u8, PhantomPinned)>,
        }
    };
}

opaque!(
    /// `NETADAPTER_INIT`: allocated by `NetAdapterInitAllocate`.
    NetAdapterInit
);
opaque!(
    /// `NETTXQUEUE_INIT`: passed to `EvtAdapterCreateTxQueue`.
    NetTxQueueInit
);
opaque!(
    /// `NETRXQUEUE_INIT`: passed to `EvtAdapterCreateRxQueue`.
    NetRxQueueInit
);
opaque!(
    /// `WDFDEVICE_INIT`: passed to `EvtDriverDeviceAdd`.
    WdfDeviceInit
);
opaque!(
    /// `NET_DRIVER_GLOBALS`: `{ ULONG Unused; }` (facts §3.1). Clients only
    /// pass the pointer through, so its content stays private.
    NetDriverGlobals
);

/// C `BOOLEAN`.
pub type Boolean = u8;

// ---------------------------------------------------------------------------
// Enumerations (facts §2.6; every enum is a 4-byte `int`). Newtypes rather
// than Rust enums: the values cross the ABI and an out-of-range one must not
// be undefined behaviour.
// ---------------------------------------------------------------------------

macro_rules! c_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $value:expr,)* }) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub struct $name(pub i32);

        impl $name {
            $($(#[$vdoc])* pub const $variant: Self = Self($value);)*
        }

        const _: () = assert!(size_of::<$name>() == 4);
    };
}

c_enum!(
    /// `NET_RX_FRAGMENT_BUFFER_ALLOCATION_MODE`
    NetRxFragmentBufferAllocationMode {
        SYSTEM = 0,
        DRIVER = 1,
    }
);
c_enum!(
    /// `NET_RX_FRAGMENT_BUFFER_ATTACHMENT_MODE`
    NetRxFragmentBufferAttachmentMode {
        SYSTEM = 0,
        DRIVER = 1,
    }
);
c_enum!(
    /// `NET_MEMORY_MAPPING_REQUIREMENT`
    NetMemoryMappingRequirement {
        NONE = 0,
        DMA_MAPPED = 1,
    }
);
c_enum!(
    /// `NET_IF_MEDIA_CONNECT_STATE`
    MediaConnectState {
        UNKNOWN = 0,
        CONNECTED = 1,
        DISCONNECTED = 2,
    }
);
c_enum!(
    /// `NET_IF_MEDIA_DUPLEX_STATE`
    MediaDuplexState {
        UNKNOWN = 0,
        HALF = 1,
        FULL = 2,
    }
);
c_enum!(
    /// `NET_ADAPTER_PAUSE_FUNCTION_TYPE`
    NetAdapterPauseFunctionType {
        UNSUPPORTED = 0,
        SEND_ONLY = 1,
        RECEIVE_ONLY = 2,
        SEND_AND_RECEIVE = 3,
        UNKNOWN = 4,
    }
);
c_enum!(
    /// `NET_ADAPTER_AUTO_NEGOTIATION_FLAGS` (a flag set)
    NetAdapterAutoNegotiationFlags {
        NONE = 0,
        XMIT_LINK_SPEED_AUTO_NEGOTIATED = 1,
        RCV_LINK_SPEED_AUTO_NEGOTIATED = 2,
        DUPLEX_AUTO_NEGOTIATED = 4,
        PAUSE_FUNCTIONS_AUTO_NEGOTIATED = 8,
    }
);
c_enum!(
    /// `WDF_EXECUTION_LEVEL`
    WdfExecutionLevel {
        INVALID = 0,
        INHERIT_FROM_PARENT = 1,
        PASSIVE = 2,
        DISPATCH = 3,
    }
);
c_enum!(
    /// `WDF_SYNCHRONIZATION_SCOPE`
    WdfSynchronizationScope {
        INVALID = 0,
        INHERIT_FROM_PARENT = 1,
        DEVICE = 2,
        QUEUE = 3,
        NONE = 4,
    }
);
c_enum!(
    /// `WDF_TRI_STATE`
    WdfTriState {
        FALSE = 0,
        TRUE = 1,
        USE_DEFAULT = 2,
    }
);

/// `NET_ADAPTER_LINK_SPEED_UNKNOWN` (2.1+; the 2.0 `NDIS_LINK_SPEED_UNKNOWN`
/// has the same value), facts §2.6.
pub const NET_ADAPTER_LINK_SPEED_UNKNOWN: u64 = u64::MAX;
/// `NET_ADAPTER_FRAGMENT_DEFAULT_ALIGNMENT`, facts §2.6.
pub const NET_ADAPTER_FRAGMENT_DEFAULT_ALIGNMENT: usize = 1;

// ---------------------------------------------------------------------------
// Callback types (facts §2.5 "Callback prototypes"; all NTAPI).
// ---------------------------------------------------------------------------

/// `PFN_NET_ADAPTER_CREATE_TXQUEUE` (PASSIVE_LEVEL)
pub type PfnNetAdapterCreateTxQueue =
    Option<unsafe extern "system" fn(adapter: NetAdapter, init: *mut NetTxQueueInit) -> NtStatus>;
/// `PFN_NET_ADAPTER_CREATE_RXQUEUE` (PASSIVE_LEVEL)
pub type PfnNetAdapterCreateRxQueue =
    Option<unsafe extern "system" fn(adapter: NetAdapter, init: *mut NetRxQueueInit) -> NtStatus>;
/// `PFN_PACKET_QUEUE_START`, `_STOP`, `_CANCEL` (== PASSIVE_LEVEL) and
/// `PFN_PACKET_QUEUE_ADVANCE` (<= DISPATCH_LEVEL): all take only the queue.
pub type PfnPacketQueueEvent = Option<unsafe extern "system" fn(queue: NetPacketQueue)>;
/// `PFN_PACKET_QUEUE_SET_NOTIFICATION_ENABLED` (== PASSIVE_LEVEL)
pub type PfnPacketQueueSetNotificationEnabled =
    Option<unsafe extern "system" fn(queue: NetPacketQueue, enabled: Boolean)>;
/// `PFN_NET_ADAPTER_RETURN_RX_BUFFER`
pub type PfnNetAdapterReturnRxBuffer =
    Option<unsafe extern "system" fn(adapter: NetAdapter, context: NetFragmentReturnContextHandle)>;
/// `PFN_NET_ADAPTER_OFFLOAD_SET_CHECKSUM`
pub type PfnNetAdapterOffloadSetChecksum = Option<unsafe extern "system" fn(adapter: NetAdapter, offload: NetOffload)>;
/// `PFN_WDF_OBJECT_CONTEXT_CLEANUP` / `PFN_WDF_OBJECT_CONTEXT_DESTROY`
pub type PfnWdfObjectContextEvent = Option<unsafe extern "system" fn(object: WdfObject)>;

// ---------------------------------------------------------------------------
// Link layer and link state (facts §2.5).
// ---------------------------------------------------------------------------

/// `NET_ADAPTER_LINK_LAYER_CAPABILITIES`, size 24.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetAdapterLinkLayerCapabilities {
    pub size: u32,
    pub max_tx_link_speed: u64,
    pub max_rx_link_speed: u64,
}

impl NetAdapterLinkLayerCapabilities {
    /// `NET_ADAPTER_LINK_LAYER_CAPABILITIES_INIT(c, tx, rx)`
    pub const fn init(max_tx_link_speed: u64, max_rx_link_speed: u64) -> Self {
        Self { size: size_of::<Self>() as u32, max_tx_link_speed, max_rx_link_speed }
    }
}

/// `NET_ADAPTER_LINK_STATE`, size 40.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetAdapterLinkState {
    pub size: u32,
    pub tx_link_speed: u64,
    pub rx_link_speed: u64,
    pub media_connect_state: MediaConnectState,
    pub media_duplex_state: MediaDuplexState,
    pub supported_pause_functions: NetAdapterPauseFunctionType,
    pub auto_negotiation_flags: NetAdapterAutoNegotiationFlags,
}

impl NetAdapterLinkState {
    /// `NET_ADAPTER_LINK_STATE_INIT(s, speed, connect, duplex, pause, autoneg)`:
    /// one speed for both directions.
    pub const fn init(
        link_speed: u64,
        media_connect_state: MediaConnectState,
        media_duplex_state: MediaDuplexState,
        supported_pause_functions: NetAdapterPauseFunctionType,
        auto_negotiation_flags: NetAdapterAutoNegotiationFlags,
    ) -> Self {
        Self {
            size: size_of::<Self>() as u32,
            tx_link_speed: link_speed,
            rx_link_speed: link_speed,
            media_connect_state,
            media_duplex_state,
            supported_pause_functions,
            auto_negotiation_flags,
        }
    }

    /// `NET_ADAPTER_LINK_STATE_INIT_DISCONNECTED(s)`
    pub const fn init_disconnected() -> Self {
        Self {
            size: size_of::<Self>() as u32,
            tx_link_speed: NET_ADAPTER_LINK_SPEED_UNKNOWN,
            rx_link_speed: NET_ADAPTER_LINK_SPEED_UNKNOWN,
            media_connect_state: MediaConnectState::DISCONNECTED,
            media_duplex_state: MediaDuplexState::UNKNOWN,
            supported_pause_functions: NetAdapterPauseFunctionType::UNSUPPORTED,
            auto_negotiation_flags: NetAdapterAutoNegotiationFlags::NONE,
        }
    }
}

// ---------------------------------------------------------------------------
// Datapath callbacks and queue configuration (facts §2.5).
// ---------------------------------------------------------------------------

/// `NET_ADAPTER_DATAPATH_CALLBACKS`, size 24.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetAdapterDatapathCallbacks {
    pub size: u32,
    pub evt_adapter_create_tx_queue: PfnNetAdapterCreateTxQueue,
    pub evt_adapter_create_rx_queue: PfnNetAdapterCreateRxQueue,
}

impl NetAdapterDatapathCallbacks {
    /// `NET_ADAPTER_DATAPATH_CALLBACKS_INIT(c, tx, rx)`
    pub const fn init(
        create_tx_queue: PfnNetAdapterCreateTxQueue,
        create_rx_queue: PfnNetAdapterCreateRxQueue,
    ) -> Self {
        Self {
            size: size_of::<Self>() as u32,
            evt_adapter_create_tx_queue: create_tx_queue,
            evt_adapter_create_rx_queue: create_rx_queue,
        }
    }
}

/// `NET_PACKET_QUEUE_CONFIG` as in the 2.1+ headers (size 56). A client
/// built against 2.0 headers passes `Size` 48; this crate targets 2.2.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetPacketQueueConfig {
    pub size: u32,
    pub evt_start: PfnPacketQueueEvent,
    pub evt_stop: PfnPacketQueueEvent,
    pub evt_advance: PfnPacketQueueEvent,
    pub evt_set_notification_enabled: PfnPacketQueueSetNotificationEnabled,
    pub evt_cancel: PfnPacketQueueEvent,
    /// 2.1+ only.
    pub execution_context: NetExecutionContext,
}

/// `sizeof(NET_PACKET_QUEUE_CONFIG)` in the 2.0 headers (no
/// `ExecutionContext`), facts §2.5.
pub const NET_PACKET_QUEUE_CONFIG_SIZE_V2_0: u32 = 48;

impl NetPacketQueueConfig {
    /// `NET_PACKET_QUEUE_CONFIG_INIT(c, advance, setNotificationEnabled,
    /// cancel)`: `EvtStart`/`EvtStop` stay unset, `Size` is the 2.1+ size.
    pub const fn init(
        advance: PfnPacketQueueEvent,
        set_notification_enabled: PfnPacketQueueSetNotificationEnabled,
        cancel: PfnPacketQueueEvent,
    ) -> Self {
        Self {
            size: size_of::<Self>() as u32,
            evt_start: None,
            evt_stop: None,
            evt_advance: advance,
            evt_set_notification_enabled: set_notification_enabled,
            evt_cancel: cancel,
            execution_context: NetExecutionContext::NULL,
        }
    }
}

// ---------------------------------------------------------------------------
// Datapath capabilities (facts §2.5).
// ---------------------------------------------------------------------------

/// `NET_ADAPTER_DMA_CAPABILITIES`, size 32. Not used by a virtual adapter;
/// declared because both capability structures point at it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetAdapterDmaCapabilities {
    pub size: u32,
    pub dma_enabler: WdfDmaEnabler,
    /// `LARGE_INTEGER` (an 8-byte, 8-aligned union of `LONGLONG`).
    pub maximum_physical_address: i64,
    pub cache_enabled: WdfTriState,
    /// `NODE_REQUIREMENT` (ULONG)
    pub preferred_node: u32,
}

/// `NET_ADAPTER_TX_CAPABILITIES`, size 56.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetAdapterTxCapabilities {
    pub size: u32,
    pub mapping_requirement: NetMemoryMappingRequirement,
    pub payload_backfill: usize,
    pub maximum_number_of_fragments: usize,
    pub fragment_buffer_alignment: usize,
    pub fragment_ring_number_of_elements_hint: u32,
    pub maximum_number_of_queues: usize,
    pub dma_capabilities: *mut NetAdapterDmaCapabilities,
}

impl NetAdapterTxCapabilities {
    /// `NET_ADAPTER_TX_CAPABILITIES_INIT(c, nQueues)`: no mapping, default
    /// alignment, any number of fragments.
    pub const fn init(maximum_number_of_queues: usize) -> Self {
        Self {
            size: size_of::<Self>() as u32,
            mapping_requirement: NetMemoryMappingRequirement::NONE,
            payload_backfill: 0,
            maximum_number_of_fragments: usize::MAX,
            fragment_buffer_alignment: NET_ADAPTER_FRAGMENT_DEFAULT_ALIGNMENT,
            fragment_ring_number_of_elements_hint: 0,
            maximum_number_of_queues,
            dma_capabilities: ptr::null_mut(),
        }
    }
}

/// The union at offset 32 of `NET_ADAPTER_RX_CAPABILITIES`: the driver-
/// managed arm's `EvtAdapterReturnRxBuffer` overlays the system-managed
/// arm's `MappingRequirement`. The system arm's other two fields (offsets 40
/// and 48) overlap nothing, so [`NetAdapterRxCapabilities`] declares them as
/// plain fields; the layout is the header's either way.
#[repr(C)]
#[derive(Clone, Copy)]
pub union NetAdapterRxModeSlot {
    pub evt_adapter_return_rx_buffer: PfnNetAdapterReturnRxBuffer,
    pub mapping_requirement: NetMemoryMappingRequirement,
}

impl core::fmt::Debug for NetAdapterRxModeSlot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Which arm is live depends on the allocation mode next to it.
        f.write_str("NetAdapterRxModeSlot")
    }
}

/// `NET_ADAPTER_RX_CAPABILITIES`, size 56.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetAdapterRxCapabilities {
    pub size: u32,
    pub allocation_mode: NetRxFragmentBufferAllocationMode,
    pub attachment_mode: NetRxFragmentBufferAttachmentMode,
    pub fragment_ring_number_of_elements_hint: u32,
    pub maximum_frame_size: usize,
    pub maximum_number_of_queues: usize,
    pub mode_slot: NetAdapterRxModeSlot,
    pub fragment_buffer_alignment: usize,
    pub dma_capabilities: *mut NetAdapterDmaCapabilities,
}

impl NetAdapterRxCapabilities {
    /// `NET_ADAPTER_RX_CAPABILITIES_INIT_SYSTEM_MANAGED(c, maxFrame, n)`
    pub const fn init_system_managed(maximum_frame_size: usize, maximum_number_of_queues: usize) -> Self {
        let mut mode_slot = NetAdapterRxModeSlot { evt_adapter_return_rx_buffer: None };
        mode_slot.mapping_requirement = NetMemoryMappingRequirement::NONE;
        Self {
            size: size_of::<Self>() as u32,
            allocation_mode: NetRxFragmentBufferAllocationMode::SYSTEM,
            attachment_mode: NetRxFragmentBufferAttachmentMode::SYSTEM,
            fragment_ring_number_of_elements_hint: 0,
            maximum_frame_size,
            maximum_number_of_queues,
            mode_slot,
            fragment_buffer_alignment: NET_ADAPTER_FRAGMENT_DEFAULT_ALIGNMENT,
            dma_capabilities: ptr::null_mut(),
        }
    }

    /// `NET_ADAPTER_RX_CAPABILITIES_INIT_DRIVER_MANAGED(c, ret, maxFrame, n)`:
    /// the driver owns RX buffers and gets each back through
    /// `return_rx_buffer` (the zero-copy RX of the design).
    pub const fn init_driver_managed(
        return_rx_buffer: PfnNetAdapterReturnRxBuffer,
        maximum_frame_size: usize,
        maximum_number_of_queues: usize,
    ) -> Self {
        Self {
            size: size_of::<Self>() as u32,
            allocation_mode: NetRxFragmentBufferAllocationMode::DRIVER,
            attachment_mode: NetRxFragmentBufferAttachmentMode::DRIVER,
            fragment_ring_number_of_elements_hint: 0,
            maximum_frame_size,
            maximum_number_of_queues,
            mode_slot: NetAdapterRxModeSlot { evt_adapter_return_rx_buffer: return_rx_buffer },
            fragment_buffer_alignment: NET_ADAPTER_FRAGMENT_DEFAULT_ALIGNMENT,
            dma_capabilities: ptr::null_mut(),
        }
    }

    /// The allocation mode together with the union arm it selects, so the
    /// union is never read through the wrong arm.
    pub fn return_rx_buffer(&self) -> PfnNetAdapterReturnRxBuffer {
        if self.allocation_mode == NetRxFragmentBufferAllocationMode::DRIVER {
            // SAFETY: in driver allocation mode the live arm of the slot is
            // `EvtAdapterReturnRxBuffer` (facts §2.5 notes), which the
            // driver-managed INIT wrote.
            unsafe { self.mode_slot.evt_adapter_return_rx_buffer }
        } else {
            None
        }
    }
}

// ---------------------------------------------------------------------------
// WDF object attributes (facts §2.7, KMDF 1.33).
// ---------------------------------------------------------------------------

/// `WDF_OBJECT_ATTRIBUTES`, size 56. Declared here so that the NetAdapterCx
/// signatures are typed; on Windows a `wdk-sys` value of the same type may be
/// passed by pointer cast (`build.rs` asserts both layouts agree).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WdfObjectAttributes {
    pub size: u32,
    pub evt_cleanup_callback: PfnWdfObjectContextEvent,
    pub evt_destroy_callback: PfnWdfObjectContextEvent,
    pub execution_level: WdfExecutionLevel,
    pub synchronization_scope: WdfSynchronizationScope,
    pub parent_object: WdfObject,
    pub context_size_override: usize,
    /// `PCWDF_OBJECT_CONTEXT_TYPE_INFO`
    pub context_type_info: *const c_void,
}

impl WdfObjectAttributes {
    /// `WDF_OBJECT_ATTRIBUTES_INIT(a)`: no context, inherit execution level
    /// and synchronization scope from the parent.
    pub const fn init() -> Self {
        Self {
            size: size_of::<Self>() as u32,
            evt_cleanup_callback: None,
            evt_destroy_callback: None,
            execution_level: WdfExecutionLevel::INHERIT_FROM_PARENT,
            synchronization_scope: WdfSynchronizationScope::INHERIT_FROM_PARENT,
            parent_object: WdfObject::NULL,
            context_size_override: 0,
            context_type_info: ptr::null(),
        }
    }
}

// ---------------------------------------------------------------------------
// Layout asserts: every size, alignment and offset in facts §2.5 and §2.7.
// ---------------------------------------------------------------------------

macro_rules! assert_layout {
    ($ty:ty, size $size:expr, align $align:expr $(, $field:ident @ $offset:expr)* $(,)?) => {
        const _: () = {
            assert!(size_of::<$ty>() == $size);
            assert!(align_of::<$ty>() == $align);
            $(assert!(offset_of!($ty, $field) == $offset);)*
        };
    };
}

assert_layout!(NetAdapterLinkLayerCapabilities, size 24, align 8,
    size @ 0, max_tx_link_speed @ 8, max_rx_link_speed @ 16);
assert_layout!(NetAdapterLinkState, size 40, align 8,
    size @ 0, tx_link_speed @ 8, rx_link_speed @ 16, media_connect_state @ 24,
    media_duplex_state @ 28, supported_pause_functions @ 32, auto_negotiation_flags @ 36);
assert_layout!(NetAdapterDatapathCallbacks, size 24, align 8,
    size @ 0, evt_adapter_create_tx_queue @ 8, evt_adapter_create_rx_queue @ 16);
assert_layout!(NetPacketQueueConfig, size 56, align 8,
    size @ 0, evt_start @ 8, evt_stop @ 16, evt_advance @ 24,
    evt_set_notification_enabled @ 32, evt_cancel @ 40, execution_context @ 48);
const _: () =
    assert!(offset_of!(NetPacketQueueConfig, execution_context) == NET_PACKET_QUEUE_CONFIG_SIZE_V2_0 as usize);
assert_layout!(NetAdapterDmaCapabilities, size 32, align 8,
    size @ 0, dma_enabler @ 8, maximum_physical_address @ 16, cache_enabled @ 24, preferred_node @ 28);
assert_layout!(NetAdapterTxCapabilities, size 56, align 8,
    size @ 0, mapping_requirement @ 4, payload_backfill @ 8, maximum_number_of_fragments @ 16,
    fragment_buffer_alignment @ 24, fragment_ring_number_of_elements_hint @ 32,
    maximum_number_of_queues @ 40, dma_capabilities @ 48);
assert_layout!(NetAdapterRxModeSlot, size 8, align 8,
    evt_adapter_return_rx_buffer @ 0, mapping_requirement @ 0);
assert_layout!(NetAdapterRxCapabilities, size 56, align 8,
    size @ 0, allocation_mode @ 4, attachment_mode @ 8, fragment_ring_number_of_elements_hint @ 12,
    maximum_frame_size @ 16, maximum_number_of_queues @ 24, mode_slot @ 32,
    fragment_buffer_alignment @ 40, dma_capabilities @ 48);
assert_layout!(WdfObjectAttributes, size 56, align 8,
    size @ 0, evt_cleanup_callback @ 8, evt_destroy_callback @ 16, execution_level @ 24,
    synchronization_scope @ 28, parent_object @ 32, context_size_override @ 40, context_type_info @ 48);

// The INIT helpers set what facts §2.5's table says they set, checked when
// the Windows target is type-checked.
const _: () = {
    let state = NetAdapterLinkState::init_disconnected();
    assert!(state.size == 40 && state.tx_link_speed == u64::MAX && state.rx_link_speed == u64::MAX);
    assert!(state.media_connect_state.0 == 2 && state.media_duplex_state.0 == 0);
    assert!(state.supported_pause_functions.0 == 0);

    let tx = NetAdapterTxCapabilities::init(1);
    assert!(tx.size == 56 && tx.fragment_buffer_alignment == 1 && tx.maximum_number_of_queues == 1);
    assert!(tx.maximum_number_of_fragments == usize::MAX && tx.mapping_requirement.0 == 0);

    let rx = NetAdapterRxCapabilities::init_driver_managed(None, 1600, 1);
    assert!(rx.size == 56 && rx.allocation_mode.0 == 1 && rx.attachment_mode.0 == 1);
    assert!(rx.fragment_buffer_alignment == 1 && rx.maximum_frame_size == 1600 && rx.maximum_number_of_queues == 1);

    let rx = NetAdapterRxCapabilities::init_system_managed(1600, 1);
    assert!(rx.allocation_mode.0 == 0 && rx.attachment_mode.0 == 0 && rx.fragment_buffer_alignment == 1);

    let queue = NetPacketQueueConfig::init(None, None, None);
    assert!(queue.size == 56 && queue.execution_context.0.is_null());

    assert!(NetAdapterLinkLayerCapabilities::init(1, 2).size == 24);
    assert!(NetAdapterDatapathCallbacks::init(None, None).size == 24);

    let attributes = WdfObjectAttributes::init();
    assert!(attributes.size == 56 && attributes.execution_level.0 == 1 && attributes.synchronization_scope.0 == 1);
};

// ---------------------------------------------------------------------------
// The function table (facts §3 and §3.1).
// ---------------------------------------------------------------------------

/// `NETFUNC`: `void (*)(void)`, the untyped slot type of `NetFunctions`.
pub type NetFunc = Option<unsafe extern "system" fn()>;

/// `NetFunctionTableNumEntries` of the 2.0 headers. Indices are append-only,
/// so every table from 2.0 on has at least these slots; the stub library of
/// the version linked defines the array with its own (larger or equal)
/// count, and NetAdapterCx fills that many at bind time.
pub const NET_FUNCTION_TABLE_ENTRIES_V2_0: usize = 75;
/// `NetFunctionTableNumEntries` of the 2.2 headers this driver targets.
pub const NET_FUNCTION_TABLE_ENTRIES_V2_2: usize = 124;

/// `NETFUNCENUM` indices of the calls this driver makes (facts §3; the same
/// in 2.0–2.3).
pub mod table_index {
    pub const NET_ADAPTER_INIT_ALLOCATE: usize = 0;
    pub const NET_ADAPTER_INIT_FREE: usize = 1;
    pub const NET_ADAPTER_INIT_SET_DATAPATH_CALLBACKS: usize = 2;
    pub const NET_ADAPTER_CREATE: usize = 3;
    pub const NET_ADAPTER_START: usize = 4;
    pub const NET_ADAPTER_STOP: usize = 5;
    pub const NET_ADAPTER_SET_LINK_LAYER_CAPABILITIES: usize = 6;
    pub const NET_ADAPTER_SET_LINK_LAYER_MTU_SIZE: usize = 7;
    pub const NET_ADAPTER_SET_DATA_PATH_CAPABILITIES: usize = 14;
    pub const NET_ADAPTER_SET_LINK_STATE: usize = 15;
    pub const NET_ADAPTER_GET_LINK_LAYER_MTU_SIZE: usize = 31;
    pub const NET_DEVICE_INIT_CONFIG: usize = 46;
    pub const NET_RX_QUEUE_CREATE: usize = 58;
    pub const NET_RX_QUEUE_NOTIFY_MORE_RECEIVED_PACKETS_AVAILABLE: usize = 59;
    pub const NET_RX_QUEUE_INIT_GET_QUEUE_ID: usize = 60;
    pub const NET_RX_QUEUE_GET_RING_COLLECTION: usize = 61;
    pub const NET_RX_QUEUE_GET_EXTENSION: usize = 62;
    pub const NET_TX_QUEUE_CREATE: usize = 63;
    pub const NET_TX_QUEUE_NOTIFY_MORE_COMPLETED_PACKETS_AVAILABLE: usize = 64;
    pub const NET_TX_QUEUE_INIT_GET_QUEUE_ID: usize = 65;
    pub const NET_TX_QUEUE_GET_RING_COLLECTION: usize = 66;
    pub const NET_TX_QUEUE_GET_EXTENSION: usize = 67;

    /// Every index above, for the bound check below and for `bind`.
    pub const ALL: [usize; 22] = [
        NET_ADAPTER_INIT_ALLOCATE,
        NET_ADAPTER_INIT_FREE,
        NET_ADAPTER_INIT_SET_DATAPATH_CALLBACKS,
        NET_ADAPTER_CREATE,
        NET_ADAPTER_START,
        NET_ADAPTER_STOP,
        NET_ADAPTER_SET_LINK_LAYER_CAPABILITIES,
        NET_ADAPTER_SET_LINK_LAYER_MTU_SIZE,
        NET_ADAPTER_SET_DATA_PATH_CAPABILITIES,
        NET_ADAPTER_SET_LINK_STATE,
        NET_ADAPTER_GET_LINK_LAYER_MTU_SIZE,
        NET_DEVICE_INIT_CONFIG,
        NET_RX_QUEUE_CREATE,
        NET_RX_QUEUE_NOTIFY_MORE_RECEIVED_PACKETS_AVAILABLE,
        NET_RX_QUEUE_INIT_GET_QUEUE_ID,
        NET_RX_QUEUE_GET_RING_COLLECTION,
        NET_RX_QUEUE_GET_EXTENSION,
        NET_TX_QUEUE_CREATE,
        NET_TX_QUEUE_NOTIFY_MORE_COMPLETED_PACKETS_AVAILABLE,
        NET_TX_QUEUE_INIT_GET_QUEUE_ID,
        NET_TX_QUEUE_GET_RING_COLLECTION,
        NET_TX_QUEUE_GET_EXTENSION,
    ];
}

// Every call the driver makes exists in the smallest (2.0) table, so the
// declared array bound below is never exceeded.
const _: () = {
    let mut i = 0;
    while i < table_index::ALL.len() {
        assert!(table_index::ALL[i] < NET_FUNCTION_TABLE_ENTRIES_V2_0);
        i += 1;
    }
};

// Both symbols are defined by `netadaptercxstub.lib` (facts §3.1); the build
// script puts its directory on the linker path. The stub is a static library
// that defines the data, not an import library: with the default `dylib`
// kind rustc would reference these statics through `__imp_` pointers
// (dllimport), which only link through link.exe's LNK4217 fix-up. `static`
// + `-bundle` is how wdk-build 0.6 links the WDK's own stub libraries
// (`WdfDriverEntry`, `WdfLdr`: `LinkDirective::render` in wdk-build's lib.rs).
#[link(name = "netadaptercxstub", kind = "static", modifiers = "-bundle")]
unsafe extern "C" {
    /// `NETFUNC NetFunctions[]`: written once by the WDF loader when it binds
    /// this driver to NetAdapterCx, before `DriverEntry`; read-only after.
    #[link_name = "NetFunctions"]
    static NET_FUNCTIONS: [NetFunc; NET_FUNCTION_TABLE_ENTRIES_V2_0];
    /// `PNET_DRIVER_GLOBALS NetDriverGlobals`: stored at the same time.
    #[link_name = "NetDriverGlobals"]
    static NET_DRIVER_GLOBALS: *mut NetDriverGlobals;
}

// Typed prototypes of the table functions (facts §3 table; NTAPI, first
// argument `PNET_DRIVER_GLOBALS`). `NetAdapterGetLinkLayerMtuSize` is listed
// there by index only; its prototype `ULONG (NETADAPTER)` is Microsoft
// Learn's.
type G = *mut NetDriverGlobals;
type PfnNetAdapterInitAllocate = unsafe extern "system" fn(G, WdfDevice) -> *mut NetAdapterInit;
type PfnNetAdapterInitFree = unsafe extern "system" fn(G, *mut NetAdapterInit);
type PfnNetAdapterInitSetDatapathCallbacks =
    unsafe extern "system" fn(G, *mut NetAdapterInit, *mut NetAdapterDatapathCallbacks);
type PfnNetAdapterCreate =
    unsafe extern "system" fn(G, *mut NetAdapterInit, *mut WdfObjectAttributes, *mut NetAdapter) -> NtStatus;
type PfnNetAdapterStart = unsafe extern "system" fn(G, NetAdapter) -> NtStatus;
type PfnNetAdapterStop = unsafe extern "system" fn(G, NetAdapter);
type PfnNetAdapterSetLinkLayerCapabilities =
    unsafe extern "system" fn(G, NetAdapter, *mut NetAdapterLinkLayerCapabilities);
type PfnNetAdapterSetLinkLayerMtuSize = unsafe extern "system" fn(G, NetAdapter, u32);
type PfnNetAdapterSetDataPathCapabilities =
    unsafe extern "system" fn(G, NetAdapter, *mut NetAdapterTxCapabilities, *mut NetAdapterRxCapabilities);
type PfnNetAdapterSetLinkState = unsafe extern "system" fn(G, NetAdapter, *mut NetAdapterLinkState);
type PfnNetAdapterGetLinkLayerMtuSize = unsafe extern "system" fn(G, NetAdapter) -> u32;
type PfnNetDeviceInitConfig = unsafe extern "system" fn(G, *mut WdfDeviceInit) -> NtStatus;
type PfnNetRxQueueCreate = unsafe extern "system" fn(
    G,
    *mut NetRxQueueInit,
    *mut WdfObjectAttributes,
    *mut NetPacketQueueConfig,
    *mut NetPacketQueue,
) -> NtStatus;
type PfnNetTxQueueCreate = unsafe extern "system" fn(
    G,
    *mut NetTxQueueInit,
    *mut WdfObjectAttributes,
    *mut NetPacketQueueConfig,
    *mut NetPacketQueue,
) -> NtStatus;
type PfnNetQueueNotify = unsafe extern "system" fn(G, NetPacketQueue);
type PfnNetRxQueueInitGetQueueId = unsafe extern "system" fn(G, *mut NetRxQueueInit) -> u32;
type PfnNetTxQueueInitGetQueueId = unsafe extern "system" fn(G, *mut NetTxQueueInit) -> u32;
/// Returns `const NET_RING_COLLECTION *` (a `netcx` type, opaque here).
type PfnNetQueueGetRingCollection = unsafe extern "system" fn(G, NetPacketQueue) -> *const c_void;
/// `(queue, const NET_EXTENSION_QUERY *, NET_EXTENSION *)`, `netcx` types.
type PfnNetQueueGetExtension = unsafe extern "system" fn(G, NetPacketQueue, *const c_void, *mut c_void);

/// Why [`NetAdapterCx::bind`] refused: the loader did not bind this driver
/// to NetAdapterCx (which would already have failed the driver load, so this
/// is a should-never-happen diagnosis, not a code path to recover on).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NetCxBindError {
    /// `NetDriverGlobals` is null.
    NoDriverGlobals,
    /// The table slot with this index is empty.
    UnboundFunction(usize),
}

impl From<NetCxBindError> for NtStatus {
    fn from(_: NetCxBindError) -> Self {
        NtStatus::NOT_SUPPORTED
    }
}

/// The NetAdapterCx functions this driver calls, loaded from the bound
/// table once. Calls through it are what the WDK's inline wrappers do.
#[derive(Clone, Copy)]
pub struct NetAdapterCx {
    globals: *mut NetDriverGlobals,
    init_allocate: PfnNetAdapterInitAllocate,
    init_free: PfnNetAdapterInitFree,
    init_set_datapath_callbacks: PfnNetAdapterInitSetDatapathCallbacks,
    create: PfnNetAdapterCreate,
    start: PfnNetAdapterStart,
    stop: PfnNetAdapterStop,
    set_link_layer_capabilities: PfnNetAdapterSetLinkLayerCapabilities,
    set_link_layer_mtu_size: PfnNetAdapterSetLinkLayerMtuSize,
    set_data_path_capabilities: PfnNetAdapterSetDataPathCapabilities,
    set_link_state: PfnNetAdapterSetLinkState,
    get_link_layer_mtu_size: PfnNetAdapterGetLinkLayerMtuSize,
    device_init_config: PfnNetDeviceInitConfig,
    rx_queue_create: PfnNetRxQueueCreate,
    rx_queue_notify: PfnNetQueueNotify,
    rx_queue_init_get_queue_id: PfnNetRxQueueInitGetQueueId,
    rx_queue_get_ring_collection: PfnNetQueueGetRingCollection,
    rx_queue_get_extension: PfnNetQueueGetExtension,
    tx_queue_create: PfnNetTxQueueCreate,
    tx_queue_notify: PfnNetQueueNotify,
    tx_queue_init_get_queue_id: PfnNetTxQueueInitGetQueueId,
    tx_queue_get_ring_collection: PfnNetQueueGetRingCollection,
    tx_queue_get_extension: PfnNetQueueGetExtension,
}

// SAFETY: the globals pointer and the function pointers are written by the
// loader before DriverEntry and never change for the driver's lifetime;
// NetAdapterCx functions may be called from any thread at the IRQL each
// documents, which every method's contract repeats.
unsafe impl Send for NetAdapterCx {}
// SAFETY: as for Send; the value is read-only.
unsafe impl Sync for NetAdapterCx {}

/// Reads slot `index` and gives it the prototype `F` of that index.
///
/// # Safety
/// The table must be bound (any time from `DriverEntry` on), and `F` must be
/// the prototype facts §3 gives for `index`.
unsafe fn load<F: Copy>(index: usize) -> Result<F, NetCxBindError> {
    const { assert!(size_of::<F>() == size_of::<unsafe extern "system" fn()>()) };
    // SAFETY: NetFunctions is written only before DriverEntry (caller's
    // contract), so a shared reference to it is not aliased by a writer.
    let table: &[NetFunc; NET_FUNCTION_TABLE_ENTRIES_V2_0] = unsafe { &NET_FUNCTIONS };
    match table.get(index).copied().flatten() {
        // SAFETY: both are plain function pointers of the same size (checked
        // above); the slot holds the function whose prototype is `F`
        // (caller's contract), so calling it through `F` is the C call.
        Some(function) => Ok(unsafe { core::mem::transmute_copy::<unsafe extern "system" fn(), F>(&function) }),
        None => Err(NetCxBindError::UnboundFunction(index)),
    }
}

fn status_to_result(status: NtStatus) -> Result<(), NtStatus> {
    if status.is_success() { Ok(()) } else { Err(status) }
}

impl NetAdapterCx {
    /// Loads every function the driver uses from the bound table.
    ///
    /// # Safety
    /// Call from `DriverEntry` or later (the loader binds the table before
    /// `DriverEntry`), with `netadaptercxstub.lib` of NetAdapterCx 2.x linked.
    pub unsafe fn bind() -> Result<Self, NetCxBindError> {
        use table_index as ix;
        // SAFETY: written with NetFunctions, before DriverEntry (contract).
        let globals = unsafe { NET_DRIVER_GLOBALS };
        if globals.is_null() {
            return Err(NetCxBindError::NoDriverGlobals);
        }
        // SAFETY (every `load` below): the table is bound (contract) and each
        // prototype is the one facts §3 lists for the index it is loaded from.
        unsafe {
            Ok(Self {
                globals,
                init_allocate: load(ix::NET_ADAPTER_INIT_ALLOCATE)?,
                init_free: load(ix::NET_ADAPTER_INIT_FREE)?,
                init_set_datapath_callbacks: load(ix::NET_ADAPTER_INIT_SET_DATAPATH_CALLBACKS)?,
                create: load(ix::NET_ADAPTER_CREATE)?,
                start: load(ix::NET_ADAPTER_START)?,
                stop: load(ix::NET_ADAPTER_STOP)?,
                set_link_layer_capabilities: load(ix::NET_ADAPTER_SET_LINK_LAYER_CAPABILITIES)?,
                set_link_layer_mtu_size: load(ix::NET_ADAPTER_SET_LINK_LAYER_MTU_SIZE)?,
                set_data_path_capabilities: load(ix::NET_ADAPTER_SET_DATA_PATH_CAPABILITIES)?,
                set_link_state: load(ix::NET_ADAPTER_SET_LINK_STATE)?,
                get_link_layer_mtu_size: load(ix::NET_ADAPTER_GET_LINK_LAYER_MTU_SIZE)?,
                device_init_config: load(ix::NET_DEVICE_INIT_CONFIG)?,
                rx_queue_create: load(ix::NET_RX_QUEUE_CREATE)?,
                rx_queue_notify: load(ix::NET_RX_QUEUE_NOTIFY_MORE_RECEIVED_PACKETS_AVAILABLE)?,
                rx_queue_init_get_queue_id: load(ix::NET_RX_QUEUE_INIT_GET_QUEUE_ID)?,
                rx_queue_get_ring_collection: load(ix::NET_RX_QUEUE_GET_RING_COLLECTION)?,
                rx_queue_get_extension: load(ix::NET_RX_QUEUE_GET_EXTENSION)?,
                tx_queue_create: load(ix::NET_TX_QUEUE_CREATE)?,
                tx_queue_notify: load(ix::NET_TX_QUEUE_NOTIFY_MORE_COMPLETED_PACKETS_AVAILABLE)?,
                tx_queue_init_get_queue_id: load(ix::NET_TX_QUEUE_INIT_GET_QUEUE_ID)?,
                tx_queue_get_ring_collection: load(ix::NET_TX_QUEUE_GET_RING_COLLECTION)?,
                tx_queue_get_extension: load(ix::NET_TX_QUEUE_GET_EXTENSION)?,
            })
        }
    }

    /// `NetDeviceInitConfig`: makes the device a NetAdapterCx device.
    ///
    /// # Safety
    /// PASSIVE_LEVEL, in `EvtDriverDeviceAdd`, before `WdfDeviceCreate`
    /// consumes `device_init`.
    pub unsafe fn device_init_config(&self, device_init: NonNull<WdfDeviceInit>) -> Result<(), NtStatus> {
        // SAFETY: live WDFDEVICE_INIT (contract), bound function.
        status_to_result(unsafe { (self.device_init_config)(self.globals, device_init.as_ptr()) })
    }

    /// `NetAdapterInitAllocate`: `None` when NetAdapterCx is out of memory.
    /// The returned value frees itself (`NetAdapterInitFree`) on drop, which
    /// the C contract requires after `NetAdapterCreate` too.
    ///
    /// # Safety
    /// PASSIVE_LEVEL; `device` is a live WDFDEVICE of this driver. The
    /// returned value must also be dropped at PASSIVE_LEVEL.
    pub unsafe fn adapter_init_allocate(&self, device: WdfDevice) -> Option<AdapterInit<'_>> {
        // SAFETY: live device (contract), bound function.
        let raw = unsafe { (self.init_allocate)(self.globals, device) };
        NonNull::new(raw).map(|init| AdapterInit { cx: self, init })
    }

    /// `NetAdapterStart`
    ///
    /// # Safety
    /// PASSIVE_LEVEL; `adapter` was created by this driver and not deleted.
    pub unsafe fn adapter_start(&self, adapter: NetAdapter) -> Result<(), NtStatus> {
        // SAFETY: live adapter (contract), bound function.
        status_to_result(unsafe { (self.start)(self.globals, adapter) })
    }

    /// `NetAdapterStop`
    ///
    /// # Safety
    /// PASSIVE_LEVEL; `adapter` was started by this driver.
    pub unsafe fn adapter_stop(&self, adapter: NetAdapter) {
        // SAFETY: live adapter (contract), bound function.
        unsafe { (self.stop)(self.globals, adapter) }
    }

    /// `NetAdapterSetLinkLayerCapabilities` (before `NetAdapterStart`).
    ///
    /// # Safety
    /// PASSIVE_LEVEL; `adapter` is live.
    pub unsafe fn adapter_set_link_layer_capabilities(
        &self,
        adapter: NetAdapter,
        capabilities: &NetAdapterLinkLayerCapabilities,
    ) {
        // SAFETY: NetAdapterCx only reads the structure (it copies it);
        // live adapter (contract), bound function.
        unsafe { (self.set_link_layer_capabilities)(self.globals, adapter, ptr::from_ref(capabilities).cast_mut()) }
    }

    /// `NetAdapterSetLinkLayerMtuSize`
    ///
    /// # Safety
    /// PASSIVE_LEVEL; `adapter` is live.
    pub unsafe fn adapter_set_link_layer_mtu_size(&self, adapter: NetAdapter, mtu: u32) {
        // SAFETY: live adapter (contract), bound function.
        unsafe { (self.set_link_layer_mtu_size)(self.globals, adapter, mtu) }
    }

    /// `NetAdapterGetLinkLayerMtuSize`
    ///
    /// # Safety
    /// PASSIVE_LEVEL; `adapter` is live.
    pub unsafe fn adapter_get_link_layer_mtu_size(&self, adapter: NetAdapter) -> u32 {
        // SAFETY: live adapter (contract), bound function.
        unsafe { (self.get_link_layer_mtu_size)(self.globals, adapter) }
    }

    /// `NetAdapterSetDataPathCapabilities` (before `NetAdapterStart`).
    ///
    /// # Safety
    /// PASSIVE_LEVEL; `adapter` is live; for driver-managed RX the return
    /// callback stays valid for the adapter's lifetime.
    pub unsafe fn adapter_set_data_path_capabilities(
        &self,
        adapter: NetAdapter,
        tx: &NetAdapterTxCapabilities,
        rx: &NetAdapterRxCapabilities,
    ) {
        // SAFETY: both structures are only read (copied) by NetAdapterCx;
        // live adapter (contract), bound function.
        unsafe {
            (self.set_data_path_capabilities)(
                self.globals,
                adapter,
                ptr::from_ref(tx).cast_mut(),
                ptr::from_ref(rx).cast_mut(),
            )
        }
    }

    /// `NetAdapterSetLinkState`
    ///
    /// # Safety
    /// IRQL <= DISPATCH_LEVEL; `adapter` is live.
    pub unsafe fn adapter_set_link_state(&self, adapter: NetAdapter, state: &NetAdapterLinkState) {
        // SAFETY: the state is only read; live adapter (contract).
        unsafe { (self.set_link_state)(self.globals, adapter, ptr::from_ref(state).cast_mut()) }
    }

    /// `NetRxQueueCreate`, from `EvtAdapterCreateRxQueue`.
    ///
    /// # Safety
    /// PASSIVE_LEVEL; `init` is the one passed to the running
    /// `EvtAdapterCreateRxQueue`; the callbacks in `config` stay valid for
    /// the queue's lifetime.
    pub unsafe fn rx_queue_create(
        &self,
        init: NonNull<NetRxQueueInit>,
        attributes: Option<&WdfObjectAttributes>,
        config: &NetPacketQueueConfig,
    ) -> Result<NetPacketQueue, NtStatus> {
        let mut queue = NetPacketQueue::NULL;
        // SAFETY: attributes and config are only read; `queue` is a valid
        // out pointer; init is live (contract).
        let status = unsafe {
            (self.rx_queue_create)(
                self.globals,
                init.as_ptr(),
                attributes.map_or(ptr::null_mut(), |a| ptr::from_ref(a).cast_mut()),
                ptr::from_ref(config).cast_mut(),
                &mut queue,
            )
        };
        status_to_result(status).map(|()| queue)
    }

    /// `NetTxQueueCreate`, from `EvtAdapterCreateTxQueue`.
    ///
    /// # Safety
    /// As for [`Self::rx_queue_create`], with the TX init object.
    pub unsafe fn tx_queue_create(
        &self,
        init: NonNull<NetTxQueueInit>,
        attributes: Option<&WdfObjectAttributes>,
        config: &NetPacketQueueConfig,
    ) -> Result<NetPacketQueue, NtStatus> {
        let mut queue = NetPacketQueue::NULL;
        // SAFETY: as in rx_queue_create.
        let status = unsafe {
            (self.tx_queue_create)(
                self.globals,
                init.as_ptr(),
                attributes.map_or(ptr::null_mut(), |a| ptr::from_ref(a).cast_mut()),
                ptr::from_ref(config).cast_mut(),
                &mut queue,
            )
        };
        status_to_result(status).map(|()| queue)
    }

    /// `NetRxQueueInitGetQueueId`
    ///
    /// # Safety
    /// PASSIVE_LEVEL; `init` is live (inside `EvtAdapterCreateRxQueue`).
    pub unsafe fn rx_queue_init_get_queue_id(&self, init: NonNull<NetRxQueueInit>) -> u32 {
        // SAFETY: live init object (contract), bound function.
        unsafe { (self.rx_queue_init_get_queue_id)(self.globals, init.as_ptr()) }
    }

    /// `NetTxQueueInitGetQueueId`
    ///
    /// # Safety
    /// PASSIVE_LEVEL; `init` is live (inside `EvtAdapterCreateTxQueue`).
    pub unsafe fn tx_queue_init_get_queue_id(&self, init: NonNull<NetTxQueueInit>) -> u32 {
        // SAFETY: live init object (contract), bound function.
        unsafe { (self.tx_queue_init_get_queue_id)(self.globals, init.as_ptr()) }
    }

    /// `NetRxQueueNotifyMoreReceivedPacketsAvailable`: callable at any IRQL
    /// up to HIGH_LEVEL, e.g. from the WSK receive event.
    ///
    /// # Safety
    /// `queue` is a live RX queue whose notification the OS enabled.
    pub unsafe fn rx_queue_notify_more_received_packets_available(&self, queue: NetPacketQueue) {
        // SAFETY: live queue (contract), bound function.
        unsafe { (self.rx_queue_notify)(self.globals, queue) }
    }

    /// `NetTxQueueNotifyMoreCompletedPacketsAvailable` (any IRQL up to
    /// HIGH_LEVEL, e.g. from a send completion).
    ///
    /// # Safety
    /// `queue` is a live TX queue whose notification the OS enabled.
    pub unsafe fn tx_queue_notify_more_completed_packets_available(&self, queue: NetPacketQueue) {
        // SAFETY: live queue (contract), bound function.
        unsafe { (self.tx_queue_notify)(self.globals, queue) }
    }

    /// `NetRxQueueGetRingCollection`: a `const NET_RING_COLLECTION *` valid
    /// for the queue's lifetime (opaque until `netcx` lands here).
    ///
    /// # Safety
    /// PASSIVE_LEVEL (call it once, after creating the queue); `queue` is a
    /// live RX queue.
    pub unsafe fn rx_queue_get_ring_collection(&self, queue: NetPacketQueue) -> *const c_void {
        // SAFETY: live queue (contract), bound function.
        unsafe { (self.rx_queue_get_ring_collection)(self.globals, queue) }
    }

    /// `NetTxQueueGetRingCollection`
    ///
    /// # Safety
    /// As for [`Self::rx_queue_get_ring_collection`], with a TX queue.
    pub unsafe fn tx_queue_get_ring_collection(&self, queue: NetPacketQueue) -> *const c_void {
        // SAFETY: live queue (contract), bound function.
        unsafe { (self.tx_queue_get_ring_collection)(self.globals, queue) }
    }

    /// `NetRxQueueGetExtension(queue, query, extension)`: fills
    /// `extension` (a `NET_EXTENSION`, zeroed if the extension is absent).
    ///
    /// # Safety
    /// PASSIVE_LEVEL; `queue` is a live RX queue; `query` points at a valid
    /// `NET_EXTENSION_QUERY` and `extension` at writable `NET_EXTENSION`
    /// storage.
    pub unsafe fn rx_queue_get_extension(&self, queue: NetPacketQueue, query: *const c_void, extension: *mut c_void) {
        // SAFETY: pointers valid (contract), bound function.
        unsafe { (self.rx_queue_get_extension)(self.globals, queue, query, extension) }
    }

    /// `NetTxQueueGetExtension`
    ///
    /// # Safety
    /// As for [`Self::rx_queue_get_extension`], with a TX queue.
    pub unsafe fn tx_queue_get_extension(&self, queue: NetPacketQueue, query: *const c_void, extension: *mut c_void) {
        // SAFETY: pointers valid (contract), bound function.
        unsafe { (self.tx_queue_get_extension)(self.globals, queue, query, extension) }
    }
}

/// A `NETADAPTER_INIT` owned by the driver: freed with `NetAdapterInitFree`
/// when dropped (after `NetAdapterCreate` as well, as the C contract asks).
pub struct AdapterInit<'cx> {
    cx: &'cx NetAdapterCx,
    init: NonNull<NetAdapterInit>,
}

impl AdapterInit<'_> {
    /// `NetAdapterInitSetDatapathCallbacks`
    pub fn set_datapath_callbacks(&mut self, callbacks: &NetAdapterDatapathCallbacks) {
        // SAFETY: `init` came from NetAdapterInitAllocate and is not freed
        // before drop; the structure is only read (copied). The allocating
        // call's contract put us at PASSIVE_LEVEL for this value's lifetime.
        unsafe {
            (self.cx.init_set_datapath_callbacks)(
                self.cx.globals,
                self.init.as_ptr(),
                ptr::from_ref(callbacks).cast_mut(),
            )
        }
    }

    /// `NetAdapterCreate`
    pub fn create(&mut self, attributes: Option<&WdfObjectAttributes>) -> Result<NetAdapter, NtStatus> {
        let mut adapter = NetAdapter::NULL;
        // SAFETY: `init` is live (as above); attributes only read; `adapter`
        // is a valid out pointer.
        let status = unsafe {
            (self.cx.create)(
                self.cx.globals,
                self.init.as_ptr(),
                attributes.map_or(ptr::null_mut(), |a| ptr::from_ref(a).cast_mut()),
                &mut adapter,
            )
        };
        status_to_result(status).map(|()| adapter)
    }
}

impl Drop for AdapterInit<'_> {
    fn drop(&mut self) {
        // SAFETY: `init` came from NetAdapterInitAllocate and is freed here
        // exactly once; PASSIVE_LEVEL per the allocating call's contract.
        unsafe { (self.cx.init_free)(self.cx.globals, self.init.as_ptr()) }
    }
}
