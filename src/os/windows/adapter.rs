//! The NETADAPTER of a device: creation with the data path's capabilities
//! (driver-managed RX with EvtAdapterReturnRxBuffer, TX, link-layer MTU
//! 1500, link state), the per-device state it shares with the other
//! callbacks, and the object context WDF keeps it in.
//!
//! Every WDF object the glue needs to find state from (the device, the
//! NETADAPTER, the queues, the timer's parent) carries one pointer-sized
//! context slot of the type [`SLOT_TYPE`] (Microsoft Learn, "Framework
//! Object Context Space": the framework allocates it zeroed with the object
//! and `WdfObjectGetTypedContextWorker` returns its address). The device's
//! and the NETADAPTER's slot point at the same boxed [`DeviceContext`],
//! which the device's EvtDestroyCallback frees (the NETADAPTER, its queues
//! and the timer are the device's children, destroyed before it).

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::ffi::c_void;
use core::ptr::{self, NonNull};
use core::sync::atomic::AtomicU8;

use wdk_sys::{WDF_OBJECT_CONTEXT_TYPE_INFO, WDFDEVICE, WDFOBJECT, WDFTIMER, call_unsafe_wdf_function_binding};

use crate::adapter::Adapter;
use crate::ntstatus::NtStatus;
use crate::os::windows::cng::CngCrypto;
use crate::os::windows::ioctl::WdfRequest;
use crate::os::windows::netadaptercx::{
    NET_ADAPTER_LINK_SPEED_UNKNOWN, NetAdapter, NetAdapterCx, NetAdapterDatapathCallbacks,
    NetAdapterLinkLayerCapabilities, NetAdapterRxCapabilities, NetAdapterTxCapabilities, PfnWdfObjectContextEvent,
    WdfDevice, WdfObject, WdfObjectAttributes,
};
use crate::os::windows::os::WindowsOs;
use crate::os::windows::queues::{self, AdapterQueues, QueueBinding, QueueNotifier};
use crate::os::windows::time;
use crate::os::windows::timer::AdapterTimer;

/// The adapter as the Windows glue instantiates it.
pub type WinAdapter = Adapter<WindowsOs, WdfRequest>;

/// `NetAdapterSetLinkLayerMtuSize`: OpenVPN's default tunnel MTU (`--tun-mtu
/// 1500`), the largest inner packet the data path's send slots are sized
/// for (`os::SEND_SLOT_SIZE`).
pub const LINK_LAYER_MTU: u32 = 1500;

/// `MaximumFrameSize` of RX: an IP-medium adapter (`*MediaType` 19, INF) has
/// no link-layer header, so the largest frame is one MTU-sized IP packet.
pub const MAXIMUM_FRAME_SIZE: usize = LINK_LAYER_MTU as usize;

/// One RX and one TX queue: the data path is not RSS-aware.
pub const QUEUES: usize = 1;

/// A `WDF_OBJECT_CONTEXT_TYPE_INFO` in a static (it holds raw pointers).
#[repr(transparent)]
pub struct ContextType(pub WDF_OBJECT_CONTEXT_TYPE_INFO);

// SAFETY: the type info is immutable after compilation; WDF only reads it.
unsafe impl Sync for ContextType {}

/// The slot context: one pointer, zeroed by WDF at object creation.
/// `UniqueType` points at itself, as `WDF_DECLARE_CONTEXT_TYPE` does.
pub static SLOT_TYPE: ContextType = ContextType(WDF_OBJECT_CONTEXT_TYPE_INFO {
    Size: size_of::<WDF_OBJECT_CONTEXT_TYPE_INFO>() as u32,
    ContextName: c"OVPN_DCO_SLOT".as_ptr().cast_mut(),
    ContextSize: size_of::<*mut c_void>(),
    UniqueType: &raw const SLOT_TYPE.0,
    EvtDriverGetUniqueContextType: None,
});

/// The request context: the completion/cancel handshake of `ioctl`.
pub static REQUEST_TYPE: ContextType = ContextType(WDF_OBJECT_CONTEXT_TYPE_INFO {
    Size: size_of::<WDF_OBJECT_CONTEXT_TYPE_INFO>() as u32,
    ContextName: c"OVPN_DCO_REQUEST".as_ptr().cast_mut(),
    ContextSize: size_of::<AtomicU8>(),
    UniqueType: &raw const REQUEST_TYPE.0,
    EvtDriverGetUniqueContextType: None,
});

/// `WdfObjectGetTypedContextWorker(object, type)`.
///
/// # Safety
/// `object` is a live WDF object created with a context of `ty`.
pub unsafe fn context_of(object: WDFOBJECT, ty: &'static ContextType) -> *mut c_void {
    // SAFETY: live object with that context type (contract); any IRQL <=
    // DISPATCH_LEVEL.
    unsafe { call_unsafe_wdf_function_binding!(WdfObjectGetTypedContextWorker, object, &ty.0) }
}

/// The slot of `object`.
///
/// # Safety
/// As for [`context_of`], with [`SLOT_TYPE`].
pub unsafe fn slot_of(object: WDFOBJECT) -> Option<NonNull<*mut c_void>> {
    // SAFETY: the caller's contract.
    NonNull::new(unsafe { context_of(object, &SLOT_TYPE) }.cast::<*mut c_void>())
}

/// Attributes with the slot context (WDF_OBJECT_ATTRIBUTES_INIT +
/// WDF_OBJECT_ATTRIBUTES_SET_CONTEXT_TYPE), in the project's declaration
/// (same layout as wdk-sys's, checked by `abi_check`).
pub fn slot_attributes(destroy: PfnWdfObjectContextEvent) -> WdfObjectAttributes {
    let mut attributes = WdfObjectAttributes::init();
    attributes.context_type_info = (&raw const SLOT_TYPE.0).cast();
    attributes.evt_destroy_callback = destroy;
    attributes
}

/// Everything one adapter device keeps.
pub struct DeviceContext {
    pub queues: AdapterQueues<WinAdapter>,
    /// This device holds `\DosDevices\ovpn-dco` (the first adapter).
    pub owns_link: bool,
    /// The adapter's timer (also inside its `WindowsOs`), stopped at
    /// device cleanup.
    pub timer: AdapterTimer,
}

impl DeviceContext {
    pub fn adapter(&self) -> &WinAdapter {
        &self.queues.datapath
    }
}

/// The device context of a device, NETADAPTER or timer parent.
///
/// # Safety
/// `object` is a live device or NETADAPTER of this driver; the context is
/// used only while the device exists.
pub unsafe fn device_context<'a>(object: WDFOBJECT) -> Option<&'a DeviceContext> {
    // SAFETY: the caller's contract.
    let slot = unsafe { slot_of(object) }?;
    // SAFETY: null or the boxed DeviceContext written in device add, freed
    // only by the device's destroy callback; shared access only.
    unsafe { slot.as_ptr().read().cast::<DeviceContext>().as_ref() }
}

/// The binding the queue callbacks use.
pub struct Binding;

impl QueueBinding for Binding {
    type Datapath = WinAdapter;

    unsafe fn adapter(adapter: NetAdapter) -> Option<NonNull<AdapterQueues<WinAdapter>>> {
        // SAFETY: the NETADAPTER of a running callback, created with the
        // slot context (QueueBinding's contract).
        let context = unsafe { device_context(adapter.as_raw().cast()) }?;
        Some(NonNull::from(&context.queues))
    }

    fn slot_attributes(destroy: PfnWdfObjectContextEvent) -> WdfObjectAttributes {
        slot_attributes(destroy)
    }

    unsafe fn slot(object: WdfObject) -> Option<NonNull<*mut c_void>> {
        // SAFETY: QueueBinding::slot's contract.
        unsafe { slot_of(object.as_raw().cast()) }
    }
}

/// The device's EvtDestroyCallback: frees its [`DeviceContext`] (the
/// adapter, and with it the data path and any socket still open).
pub unsafe extern "C" fn evt_device_destroy(object: WDFOBJECT) {
    // SAFETY: WDF passes the device being destroyed; its context is valid
    // inside EvtDestroyCallback.
    let Some(slot) = (unsafe { slot_of(object) }) else { return };
    // SAFETY: the slot is ours and no other callback of the device or its
    // children runs any more; taking the value out makes the free unique.
    let raw = unsafe { slot.as_ptr().replace(ptr::null_mut()) }.cast::<DeviceContext>();
    if !raw.is_null() {
        // SAFETY: written with Box::into_raw in `create`, taken out once.
        drop(unsafe { Box::from_raw(raw) });
    }
}

/// The adapter timer's callback (PASSIVE_LEVEL): `Adapter::timer`.
pub unsafe extern "C" fn evt_timer(timer: WDFTIMER) {
    // SAFETY: WDF passes the live timer; its parent is the device.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfTimerGetParentObject, timer) };
    // SAFETY: the device is live while its child timer fires.
    if let Some(context) = unsafe { device_context(device) } {
        let _ = context.adapter().timer();
    }
}

/// Creates the NETADAPTER of `device`, its timer and the adapter, and
/// starts the NETADAPTER (`NetAdapterStart`).
///
/// # Safety
/// PASSIVE_LEVEL, in EvtDriverDeviceAdd, after `WdfDeviceCreate` with the
/// slot context and [`evt_device_destroy`].
pub unsafe fn create(
    cx: &NetAdapterCx,
    device: WDFDEVICE,
    crypto: &'static CngCrypto,
    owns_link: bool,
) -> Result<(), NtStatus> {
    // SAFETY: PASSIVE_LEVEL, live device (contract).
    let mut init = unsafe { cx.adapter_init_allocate(WdfDevice::from_raw(device.cast())) }
        .ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
    init.set_datapath_callbacks(&NetAdapterDatapathCallbacks::init(
        Some(queues::evt_create_tx_queue::<Binding>),
        Some(queues::evt_create_rx_queue::<Binding>),
    ));
    // The NETADAPTER's slot is filled below; the device's destroy frees the
    // shared context, so the adapter object needs no destroy callback.
    let attributes = slot_attributes(None);
    let adapter = init.create(Some(&attributes))?;
    drop(init);

    // SAFETY (the four calls): PASSIVE_LEVEL, the adapter was just created
    // and is not started; the structures are copied.
    unsafe {
        cx.adapter_set_link_layer_capabilities(
            adapter,
            &NetAdapterLinkLayerCapabilities::init(NET_ADAPTER_LINK_SPEED_UNKNOWN, NET_ADAPTER_LINK_SPEED_UNKNOWN),
        );
        cx.adapter_set_link_layer_mtu_size(adapter, LINK_LAYER_MTU);
        // TX: the data path encrypts out of place into its own send buffers,
        // so it needs no backfill (datapath facts, "TX").
        let tx = NetAdapterTxCapabilities::init(QUEUES);
        let rx = NetAdapterRxCapabilities::init_driver_managed(
            Some(queues::evt_return_rx_buffer::<Binding>),
            MAXIMUM_FRAME_SIZE,
            QUEUES,
        );
        cx.adapter_set_data_path_capabilities(adapter, &tx, &rx);
        time::set_link_state(cx, adapter, false);
    }

    // SAFETY: PASSIVE_LEVEL in device add, live device (contract).
    let timer = unsafe { AdapterTimer::create(device, evt_timer) }?;
    let notifier = Arc::new(QueueNotifier::new(*cx));
    let os = Arc::new(WindowsOs::new(*cx, adapter, crypto, notifier.clone(), timer));
    let context = Box::new(DeviceContext {
        queues: AdapterQueues { cx: *cx, datapath: Adapter::new(os), notifier },
        owns_link,
        timer,
    });
    let raw = Box::into_raw(context);
    // SAFETY: both objects were created with the slot context; their slots
    // are fresh (null) and no callback reads them before NetAdapterStart.
    unsafe {
        let device_slot = slot_of(device.cast()).ok_or(NtStatus::INSUFFICIENT_RESOURCES);
        let adapter_slot = slot_of(adapter.as_raw().cast()).ok_or(NtStatus::INSUFFICIENT_RESOURCES);
        match (device_slot, adapter_slot) {
            (Ok(d), Ok(a)) => {
                d.as_ptr().write(raw.cast());
                a.as_ptr().write(raw.cast());
            }
            (Err(status), _) | (_, Err(status)) => {
                drop(Box::from_raw(raw));
                return Err(status);
            }
        }
    }
    // SAFETY: PASSIVE_LEVEL; capabilities set; the context is in place.
    unsafe { cx.adapter_start(adapter) }
}
