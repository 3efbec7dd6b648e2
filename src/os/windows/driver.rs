//! DriverEntry, EvtDriverDeviceAdd, the file object (one exclusive handle:
//! OpenVPN's), the names OpenVPN finds the adapter by, and the shared
//! `\Device\ovpn-dco-ver` control device. Everything else is handed off:
//! requests to `ioctl`, the NETADAPTER to `adapter`, sockets to
//! `wsk_transport`.
//!
//! Names and security (interface reference, "Names and discovery"):
//! `\DosDevices\ovpn-dco` for the first adapter, device interface
//! GUID_DEVINTERFACE_NET with reference string `ovpn-dco`, exclusive
//! device, SDDL `D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGWGX;;;WD)(A;;GRGX;;;RC)`,
//! and the control device answering GET_VERSION while at least one adapter
//! exists.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

use wdk_sys::ntddk::{KeInitializeEvent, KeSetEvent, KeWaitForSingleObject};
use wdk_sys::{
    _EVENT_TYPE, _KWAIT_REASON, _MODE, _WDF_DEVICE_IO_TYPE, _WDF_EXECUTION_LEVEL, _WDF_FILEOBJECT_CLASS,
    _WDF_IO_QUEUE_DISPATCH_TYPE, _WDF_SYNCHRONIZATION_SCOPE, _WDF_TRI_STATE, DRIVER_OBJECT, GUID, KEVENT, NTSTATUS,
    PCUNICODE_STRING, PWDFDEVICE_INIT, UNICODE_STRING, WDF_DRIVER_CONFIG, WDF_FILEOBJECT_CONFIG, WDF_IO_QUEUE_CONFIG,
    WDF_OBJECT_ATTRIBUTES, WDFDEVICE, WDFDRIVER, WDFFILEOBJECT, WDFOBJECT, WDFQUEUE, WDFREQUEST,
    call_unsafe_wdf_function_binding,
};

use crate::datapath::CloseProgress;
use crate::ntstatus::NtStatus;
use crate::os::windows::adapter::{self, REQUEST_TYPE, SLOT_TYPE, device_context};
use crate::os::windows::cng::CngCrypto;
use crate::os::windows::ioctl;
use crate::os::windows::netadaptercx::{NetAdapterCx, WdfDeviceInit};
use crate::os::windows::wsk_transport::{self, sleep_ms};

/// Pool tag of the driver's allocations, as `!pool` shows it.
const POOL_TAG: u32 = u32::from_le_bytes(*b"Ovpn");

/// Polls of a closing socket in file cleanup, and the pause between them:
/// the socket waits for NetAdapterCx to return RX buffers and WSK to
/// complete sends (milliseconds each, `Adapter::cleanup`), so 400 × 5 ms
/// bounds the handle close at 2 s; whatever is left the adapter's timer
/// finishes.
const CLEANUP_POLLS: u32 = 400;
const CLEANUP_POLL_MS: i64 = 5;

// ---------------------------------------------------------------------------
// Names (UTF-16, as UNICODE_STRING wants them)
// ---------------------------------------------------------------------------

const fn utf16<const N: usize>(s: &str) -> [u16; N] {
    let bytes = s.as_bytes();
    assert!(bytes.len() == N);
    let mut out = [0u16; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i] as u16;
        i += 1;
    }
    out
}

static SDDL: [u16; 51] = utf16("D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGWGX;;;WD)(A;;GRGX;;;RC)");
static DOS_NAME: [u16; 21] = utf16("\\DosDevices\\ovpn-dco");
static REFERENCE_STRING: [u16; 8] = utf16("ovpn-dco");
static VER_DEVICE_NAME: [u16; 20] = utf16("\\Device\\ovpn-dco-ver");
static VER_DOS_NAME: [u16; 25] = utf16("\\DosDevices\\ovpn-dco-ver");

/// `GUID_DEVINTERFACE_NET` {CAC88484-7515-4C03-82E6-71A87ABAC361}.
static GUID_DEVINTERFACE_NET: GUID =
    GUID { Data1: 0xCAC8_8484, Data2: 0x7515, Data3: 0x4C03, Data4: [0x82, 0xE6, 0x71, 0xA8, 0x7A, 0xBA, 0xC3, 0x61] };

/// A counted string over static UTF-16 (Length and MaximumLength in bytes,
/// no terminator needed).
fn unicode(s: &'static [u16]) -> UNICODE_STRING {
    let bytes = (s.len() * 2) as u16;
    UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: s.as_ptr().cast_mut() }
}

// ---------------------------------------------------------------------------
// Driver-wide state
// ---------------------------------------------------------------------------

/// What DriverEntry sets up once and unload tears down.
struct Globals {
    cx: NetAdapterCx,
    crypto: CngCrypto,
}

/// A value written once in DriverEntry before any callback can run, taken
/// once at unload after the last one.
struct DriverCell<T> {
    ready: AtomicBool,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: written only by DriverEntry before WdfDriverCreate (no callback
// exists yet) and taken only by unload (no callback is left); in between it
// is only read.
unsafe impl<T: Sync> Sync for DriverCell<T> {}

impl<T> DriverCell<T> {
    const fn new() -> Self {
        Self { ready: AtomicBool::new(false), value: UnsafeCell::new(MaybeUninit::uninit()) }
    }

    /// # Safety
    /// DriverEntry only, once.
    unsafe fn set(&self, value: T) {
        // SAFETY: no reader exists yet (contract).
        unsafe { (*self.value.get()).write(value) };
        self.ready.store(true, Ordering::Release);
    }

    fn get(&self) -> Option<&T> {
        // SAFETY: set before `ready` was published and not taken until
        // unload (DriverCell's Sync rule).
        self.ready.load(Ordering::Acquire).then(|| unsafe { (*self.value.get()).assume_init_ref() })
    }

    /// # Safety
    /// Unload only, after every callback.
    unsafe fn take(&self) -> Option<T> {
        // SAFETY: written when `ready` was set; nothing reads it any more.
        self.ready.swap(false, Ordering::AcqRel).then(|| unsafe { (*self.value.get()).assume_init_read() })
    }
}

static GLOBALS: DriverCell<Globals> = DriverCell::new();

/// Holder of `\DosDevices\ovpn-dco` (only the first adapter gets it).
static LINK_TAKEN: AtomicBool = AtomicBool::new(false);

/// Adapters alive, and the control device that lives while any does;
/// changed under [`ControlLock`].
static ADAPTERS: AtomicU32 = AtomicU32::new(0);
static CONTROL_DEVICE: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());

/// A synchronization KEVENT used as a mutex around creating and deleting
/// the control device (both PASSIVE_LEVEL; two devices may be added or
/// removed at once).
struct ControlLock(UnsafeCell<MaybeUninit<KEVENT>>);
// SAFETY: a KEVENT is synchronized by the kernel; it is initialized in
// DriverEntry before any device exists.
unsafe impl Sync for ControlLock {}
static CONTROL_LOCK: ControlLock = ControlLock(UnsafeCell::new(MaybeUninit::zeroed()));

impl ControlLock {
    fn event(&self) -> *mut KEVENT {
        self.0.get().cast()
    }

    /// # Safety
    /// PASSIVE_LEVEL; released with [`ControlLock::release`].
    unsafe fn acquire(&self) {
        // SAFETY: initialized in DriverEntry; an unbounded wait is fine for
        // a lock held only around two WDF calls.
        unsafe {
            KeWaitForSingleObject(
                self.event().cast(),
                _KWAIT_REASON::Executive,
                _MODE::KernelMode as i8,
                0,
                ptr::null_mut(),
            )
        };
    }

    /// # Safety
    /// Held by the caller.
    unsafe fn release(&self) {
        // SAFETY: initialized; a synchronization event wakes one waiter.
        unsafe { KeSetEvent(self.event(), 0, 0) };
    }
}

// ---------------------------------------------------------------------------
// DriverEntry and unload
// ---------------------------------------------------------------------------

/// The driver's entry point (the KMDF stub's FxDriverEntry calls it after
/// binding WDF and NetAdapterCx).
///
/// # Safety
/// Called by the I/O manager only.
#[unsafe(export_name = "DriverEntry")]
pub unsafe extern "system" fn driver_entry(driver: *mut DRIVER_OBJECT, registry_path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: the loader bound NetAdapterCx before DriverEntry.
    let cx = match unsafe { NetAdapterCx::bind() } {
        Ok(cx) => cx,
        Err(e) => return NtStatus::from(e).0,
    };
    let crypto = match CngCrypto::open() {
        Ok(crypto) => crypto,
        Err(status) => return status.0,
    };
    // SAFETY: the event lives in a static; initialized once, signalled (a
    // free mutex), before any device exists.
    unsafe { KeInitializeEvent(CONTROL_LOCK.event(), _EVENT_TYPE::SynchronizationEvent, 1) };
    // SAFETY: DriverEntry, once, before any callback.
    unsafe { GLOBALS.set(Globals { cx, crypto }) };
    // SAFETY: DriverEntry, once; deregistered at unload or below.
    if let Err(status) = unsafe { wsk_transport::register() } {
        // SAFETY: nothing else used the globals.
        drop(unsafe { GLOBALS.take() });
        return status.0;
    }
    // WDF_DRIVER_CONFIG_INIT(config, EvtDriverDeviceAdd) + unload + tag.
    let mut config = WDF_DRIVER_CONFIG {
        Size: size_of::<WDF_DRIVER_CONFIG>() as u32,
        EvtDriverDeviceAdd: Some(evt_device_add),
        EvtDriverUnload: Some(evt_driver_unload),
        DriverInitFlags: 0,
        DriverPoolTag: POOL_TAG,
    };
    // SAFETY: the arguments DriverEntry got; config valid for the call; no
    // attributes, no handle out (WDF_NO_OBJECT_ATTRIBUTES, WDF_NO_HANDLE).
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDriverCreate,
            driver,
            registry_path,
            ptr::null_mut(),
            &mut config,
            ptr::null_mut()
        )
    };
    if status < 0 {
        // SAFETY: no device was added; undo what DriverEntry did.
        unsafe {
            wsk_transport::deregister();
            drop(GLOBALS.take());
        }
    }
    status
}

/// EvtDriverUnload (PASSIVE_LEVEL, after every device is gone).
unsafe extern "C" fn evt_driver_unload(_driver: WDFDRIVER) {
    // SAFETY: unload, once; no socket is open (every adapter is gone).
    unsafe { wsk_transport::deregister() };
    // SAFETY: after every callback: closes the CNG providers last.
    drop(unsafe { GLOBALS.take() });
}

// ---------------------------------------------------------------------------
// Device add
// ---------------------------------------------------------------------------

fn check(status: NTSTATUS) -> Result<(), NtStatus> {
    if status < 0 { Err(NtStatus(status)) } else { Ok(()) }
}

/// A parallel default queue with `ioctl`'s callbacks at PASSIVE_LEVEL (the
/// adapter opens and closes sockets from IOCTLs), not power-managed so that
/// OpenVPN's handle works while the adapter is in low power.
///
/// # Safety
/// PASSIVE_LEVEL; `device` is live and not yet started.
unsafe fn create_default_queue(device: WDFDEVICE, control_only: bool) -> Result<(), NtStatus> {
    // WDF_IO_QUEUE_CONFIG_INIT_DEFAULT_QUEUE(config, WdfIoQueueDispatchParallel).
    let mut config = WDF_IO_QUEUE_CONFIG {
        Size: size_of::<WDF_IO_QUEUE_CONFIG>() as u32,
        DispatchType: _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchParallel,
        PowerManaged: _WDF_TRI_STATE::WdfFalse,
        DefaultQueue: 1,
        ..WDF_IO_QUEUE_CONFIG::default()
    };
    // SAFETY: writing the Parallel arm of the Settings union, the one the
    // Parallel dispatch type reads (the INIT macro sets it to (ULONG)-1:
    // no limit on requests presented at once).
    unsafe { config.Settings.Parallel.NumberOfPresentedRequests = u32::MAX };
    if control_only {
        config.EvtIoDeviceControl = Some(ioctl::evt_control_device_control);
    } else {
        config.EvtIoDeviceControl = Some(ioctl::evt_io_device_control);
        config.EvtIoRead = Some(ioctl::evt_io_read);
        config.EvtIoWrite = Some(ioctl::evt_io_write);
    }
    let mut attributes = WDF_OBJECT_ATTRIBUTES {
        Size: size_of::<WDF_OBJECT_ATTRIBUTES>() as u32,
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelPassive,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        ..WDF_OBJECT_ATTRIBUTES::default()
    };
    let mut queue: WDFQUEUE = ptr::null_mut();
    // SAFETY: live device (contract); config and attributes valid for the
    // call; `queue` is a valid out pointer.
    check(unsafe {
        call_unsafe_wdf_function_binding!(WdfIoQueueCreate, device, &mut config, &mut attributes, &mut queue)
    })
}

/// EvtDriverDeviceAdd (PASSIVE_LEVEL): one adapter device.
unsafe extern "C" fn evt_device_add(_driver: WDFDRIVER, init: PWDFDEVICE_INIT) -> NTSTATUS {
    // SAFETY: WDF's device init of this callback.
    match unsafe { device_add(init) } {
        Ok(()) => NtStatus::SUCCESS.0,
        Err(status) => status.0,
    }
}

/// # Safety
/// PASSIVE_LEVEL, inside EvtDriverDeviceAdd with its `init`.
unsafe fn device_add(mut init: PWDFDEVICE_INIT) -> Result<(), NtStatus> {
    let globals = GLOBALS.get().ok_or(NtStatus::DEVICE_NOT_READY)?;
    let sddl = unicode(&SDDL);
    // SAFETY (this block): WdfDeviceInit* calls on the live init object of
    // this callback, before WdfDeviceCreate consumes it; every structure is
    // valid for its call.
    unsafe {
        // NetDeviceInitConfig below sets WdfDeviceIoDirect again (NetAdapterCx
        // nxdeviceapi.cpp, "as done by Ndis.sys for its miniports"), so reads
        // and writes arrive as direct I/O whatever is set here; `ioctl` only
        // uses WdfRequestRetrieve{Input,Output}Buffer, which serve both.
        call_unsafe_wdf_function_binding!(WdfDeviceInitSetIoType, init, _WDF_DEVICE_IO_TYPE::WdfDeviceIoBuffered);
        call_unsafe_wdf_function_binding!(WdfDeviceInitSetExclusive, init, 1);
        // The SDDL applies only to a named device object: Microsoft Learn,
        // WdfDeviceInitAssignSDDLString ("Before calling ... your driver
        // must call WdfDeviceInitAssignName, or it must call
        // WdfDeviceInitSetCharacteristics and specify
        // FILE_AUTOGENERATED_DEVICE_NAME"); WdfDeviceCreate otherwise fails
        // with STATUS_INVALID_SECURITY_DESCR (Microsoft Learn,
        // WdfDeviceCreate return values). KMDF creates the device with
        // IoCreateDeviceSecure and the name it has (Windows-Driver-Frameworks
        // fxdevice.cpp, FxDevice::CreateDevice), and IoCreateDeviceSecure
        // without a name requires that flag (Microsoft Learn,
        // WdmlibIoCreateDeviceSecure, DeviceName). wdm.h:
        // FILE_AUTOGENERATED_DEVICE_NAME = 0x00000080. OR-ed in (TRUE), so
        // NetDeviceInitConfig's FILE_DEVICE_SECURE_OPEN (NetAdapterCx
        // nxdeviceapi.cpp, also OR-ed) is kept.
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetCharacteristics,
            init,
            wdk_sys::FILE_AUTOGENERATED_DEVICE_NAME,
            1
        );
        check(call_unsafe_wdf_function_binding!(WdfDeviceInitAssignSDDLString, init, &sddl))?;
        // WDF_FILEOBJECT_CONFIG_INIT(config, create, close = NULL, cleanup).
        let mut file_config = WDF_FILEOBJECT_CONFIG {
            Size: size_of::<WDF_FILEOBJECT_CONFIG>() as u32,
            EvtDeviceFileCreate: Some(evt_file_create),
            EvtFileClose: None,
            EvtFileCleanup: Some(evt_file_cleanup),
            AutoForwardCleanupClose: _WDF_TRI_STATE::WdfUseDefault,
            FileObjectClass: _WDF_FILEOBJECT_CLASS::WdfFileObjectWdfCannotUseFsContexts,
        };
        call_unsafe_wdf_function_binding!(WdfDeviceInitSetFileObjectConfig, init, &mut file_config, ptr::null_mut());
        let mut request_attributes = WDF_OBJECT_ATTRIBUTES {
            Size: size_of::<WDF_OBJECT_ATTRIBUTES>() as u32,
            ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
            SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
            ContextTypeInfo: &REQUEST_TYPE.0,
            ..WDF_OBJECT_ATTRIBUTES::default()
        };
        call_unsafe_wdf_function_binding!(WdfDeviceInitSetRequestAttributes, init, &mut request_attributes);
        let device_init = NonNull::new(init.cast::<WdfDeviceInit>()).ok_or(NtStatus::INVALID_PARAMETER)?;
        globals.cx.device_init_config(device_init)?;
    }

    let mut attributes = WDF_OBJECT_ATTRIBUTES {
        Size: size_of::<WDF_OBJECT_ATTRIBUTES>() as u32,
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        EvtCleanupCallback: Some(evt_device_cleanup),
        EvtDestroyCallback: Some(adapter::evt_device_destroy),
        ContextTypeInfo: &SLOT_TYPE.0,
        ..WDF_OBJECT_ATTRIBUTES::default()
    };
    let mut device: WDFDEVICE = ptr::null_mut();
    // SAFETY: consumes the init object (WDF frees it whatever the result);
    // attributes valid; `device` a valid out pointer.
    check(unsafe { call_unsafe_wdf_function_binding!(WdfDeviceCreate, &mut init, &mut attributes, &mut device) })?;
    // From here on the device exists, and if device add fails WDF deletes it,
    // running `evt_device_cleanup` (Windows-Driver-Frameworks fxdriverkm.cpp,
    // FxDriver::AddDevice: "Created a device, but returned error" ->
    // DeleteDeviceFromFailedCreate). That cleanup
    // counts the adapter out, so it is counted in now, before anything else
    // can fail; counting it in only on success let a failed add take
    // ADAPTERS below zero (wrapping), after which no control device was
    // ever created or deleted again.
    // SAFETY: PASSIVE_LEVEL.
    unsafe { adapter_added() };

    let owns_link = LINK_TAKEN.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok();
    if owns_link {
        let name = unicode(&DOS_NAME);
        // SAFETY: live device, PASSIVE_LEVEL; the name is copied.
        if unsafe { call_unsafe_wdf_function_binding!(WdfDeviceCreateSymbolicLink, device, &name) } < 0 {
            // OpenVPN also finds the adapter through its device interface.
            LINK_TAKEN.store(false, Ordering::Release);
        }
    }
    let owns_link = owns_link && LINK_TAKEN.load(Ordering::Acquire);
    // SAFETY: PASSIVE_LEVEL in device add, on the device just created.
    let result = unsafe { finish_device_add(globals, device, owns_link) };
    // SAFETY: the live device just created; its slot is null unless
    // adapter::create installed the context.
    if result.is_err() && owns_link && unsafe { device_context(device.cast()) }.is_none() {
        // The cleanup callback gives the link back only through the device
        // context (`owns_link`); without one, give it back here so that a
        // later adapter can take `\DosDevices\ovpn-dco` (WDF deletes the
        // link itself with the device).
        LINK_TAKEN.store(false, Ordering::Release);
    }
    result
}

/// The rest of device add once the device exists: its interface, queue and
/// NETADAPTER.
///
/// # Safety
/// PASSIVE_LEVEL, inside EvtDriverDeviceAdd, `device` just created with the
/// slot context and the destroy callback.
unsafe fn finish_device_add(globals: &'static Globals, device: WDFDEVICE, owns_link: bool) -> Result<(), NtStatus> {
    let reference = unicode(&REFERENCE_STRING);
    // SAFETY: live device, PASSIVE_LEVEL; GUID and string are copied.
    check(unsafe {
        call_unsafe_wdf_function_binding!(WdfDeviceCreateDeviceInterface, device, &GUID_DEVINTERFACE_NET, &reference)
    })?;
    // SAFETY: live device, PASSIVE_LEVEL, not started.
    unsafe { create_default_queue(device, false) }?;
    // SAFETY: PASSIVE_LEVEL in device add, after WdfDeviceCreate with the
    // slot context and the destroy callback.
    unsafe { adapter::create(&globals.cx, device, &globals.crypto, owns_link) }
}

// ---------------------------------------------------------------------------
// The control device
// ---------------------------------------------------------------------------

/// Counts an adapter in; the first creates the control device.
///
/// # Safety
/// PASSIVE_LEVEL.
unsafe fn adapter_added() {
    // SAFETY: PASSIVE_LEVEL (contract), released below.
    unsafe { CONTROL_LOCK.acquire() };
    if ADAPTERS.fetch_add(1, Ordering::AcqRel) == 0 {
        // SAFETY: PASSIVE_LEVEL, under the lock.
        match unsafe { create_control_device() } {
            Ok(device) => CONTROL_DEVICE.store(device.cast(), Ordering::Release),
            // GET_VERSION on `\\.\ovpn-dco-ver` is then missing; OpenVPN
            // falls back to the adapter's own GET_VERSION.
            Err(_) => CONTROL_DEVICE.store(ptr::null_mut(), Ordering::Release),
        }
    }
    // SAFETY: acquired above.
    unsafe { CONTROL_LOCK.release() };
}

/// Counts an adapter out; the last deletes the control device.
///
/// # Safety
/// PASSIVE_LEVEL.
unsafe fn adapter_removed() {
    // SAFETY: PASSIVE_LEVEL (contract), released below.
    unsafe { CONTROL_LOCK.acquire() };
    if ADAPTERS.fetch_sub(1, Ordering::AcqRel) == 1 {
        let device = CONTROL_DEVICE.swap(ptr::null_mut(), Ordering::AcqRel);
        if !device.is_null() {
            // SAFETY: the control device we created; deleting it at
            // PASSIVE_LEVEL removes its name and link.
            unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, device as WDFOBJECT) };
        }
    }
    // SAFETY: acquired above.
    unsafe { CONTROL_LOCK.release() };
}

/// `\Device\ovpn-dco-ver` + `\DosDevices\ovpn-dco-ver` with a GET_VERSION
/// queue (WdfControlDeviceInitAllocate … WdfControlFinishInitializing).
///
/// # Safety
/// PASSIVE_LEVEL.
unsafe fn create_control_device() -> Result<WDFDEVICE, NtStatus> {
    let sddl = unicode(&SDDL);
    // SAFETY: PASSIVE_LEVEL; the driver object exists (WdfDriverCreate
    // succeeded before any device add).
    let driver = unsafe { call_unsafe_wdf_function_binding!(WdfGetDriver) };
    // SAFETY: as above; the SDDL string is copied.
    let mut init = unsafe { call_unsafe_wdf_function_binding!(WdfControlDeviceInitAllocate, driver, &sddl) };
    if init.is_null() {
        return Err(NtStatus::INSUFFICIENT_RESOURCES);
    }
    let name = unicode(&VER_DEVICE_NAME);
    // SAFETY: the live init object; on failure it is freed here, since
    // WdfDeviceCreate did not consume it.
    if let Err(status) = check(unsafe { call_unsafe_wdf_function_binding!(WdfDeviceInitAssignName, init, &name) }) {
        // SAFETY: allocated above, not consumed.
        unsafe { call_unsafe_wdf_function_binding!(WdfDeviceInitFree, init) };
        return Err(status);
    }
    // SAFETY: live init object.
    unsafe {
        call_unsafe_wdf_function_binding!(WdfDeviceInitSetIoType, init, _WDF_DEVICE_IO_TYPE::WdfDeviceIoBuffered)
    };
    let mut device: WDFDEVICE = ptr::null_mut();
    // SAFETY: consumes `init` on success; no attributes.
    let status = unsafe { call_unsafe_wdf_function_binding!(WdfDeviceCreate, &mut init, ptr::null_mut(), &mut device) };
    if status < 0 {
        // SAFETY: WdfDeviceCreate failed: the init object is still ours.
        unsafe { call_unsafe_wdf_function_binding!(WdfDeviceInitFree, init) };
        return Err(NtStatus(status));
    }
    let link = unicode(&VER_DOS_NAME);
    // SAFETY: the device was just created (live), PASSIVE_LEVEL.
    let linked = check(unsafe { call_unsafe_wdf_function_binding!(WdfDeviceCreateSymbolicLink, device, &link) })
        // SAFETY: as above.
        .and_then(|()| unsafe { create_default_queue(device, true) });
    if let Err(status) = linked {
        // SAFETY: our device, not yet finished: delete it.
        unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, device as WDFOBJECT) };
        return Err(status);
    }
    // SAFETY: live control device, fully set up.
    unsafe { call_unsafe_wdf_function_binding!(WdfControlFinishInitializing, device) };
    Ok(device)
}

// ---------------------------------------------------------------------------
// File object and device cleanup
// ---------------------------------------------------------------------------

/// EvtDeviceFileCreate: OpenVPN opens the adapter (WDF enforces the single
/// handle of an exclusive device).
unsafe extern "C" fn evt_file_create(_device: WDFDEVICE, request: WDFREQUEST, _file: WDFFILEOBJECT) {
    // SAFETY: the create request of this callback, completed once.
    unsafe { call_unsafe_wdf_function_binding!(WdfRequestComplete, request, NtStatus::SUCCESS.0) };
}

/// EvtFileCleanup (PASSIVE_LEVEL): the handle closes, the tunnel goes down.
/// Waits a bounded time for the socket to finish closing.
unsafe extern "C" fn evt_file_cleanup(file: WDFFILEOBJECT) {
    // SAFETY: the live file object of this callback.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfFileObjectGetDevice, file) };
    // SAFETY: the device of a live file object is live.
    let Some(context) = (unsafe { device_context(device.cast()) }) else { return };
    let mut progress = context.adapter().cleanup();
    for _ in 0..CLEANUP_POLLS {
        if progress == CloseProgress::Closed {
            break;
        }
        sleep_ms(CLEANUP_POLL_MS);
        progress = context.adapter().poll_close();
    }
}

/// The device's EvtCleanupCallback (PASSIVE_LEVEL): gives up the symbolic
/// link for a later first adapter and counts the adapter out.
unsafe extern "C" fn evt_device_cleanup(object: WDFOBJECT) {
    // SAFETY: WDF passes the device being cleaned up; its context is valid.
    if let Some(context) = unsafe { device_context(object) } {
        // SAFETY: the adapter's timer must not fire into a context about to
        // be freed; PASSIVE_LEVEL, not the timer's callback.
        unsafe { context.timer.stop() };
        if context.owns_link {
            LINK_TAKEN.store(false, Ordering::Release);
        }
    }
    // SAFETY: PASSIVE_LEVEL.
    unsafe { adapter_removed() };
}
