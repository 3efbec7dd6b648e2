//! [`Transport`] over Winsock Kernel: the driver's WSK client registration
//! (at DriverEntry, provider NPI captured lazily with a bounded wait), UDP
//! and TCP sockets, send slots each with its own buffer, MDL and reusable
//! IRP, and socket close with a bounded wait.
//!
//! IRP discipline (Microsoft Learn, "Using IRPs with Winsock Kernel
//! Functions"): every WSK call that takes an IRP completes it, whatever it
//! returns, and the completion routine of an IRP the driver allocated
//! returns STATUS_MORE_PROCESSING_REQUIRED so that the IRP stays the
//! driver's (to reuse with `IoReuseIrp` or free with `IoFreeIrp`). The
//! result is in `IoStatus.Status`, and for WskSocket/WskSocketConnect the
//! new `PWSK_SOCKET` is in `IoStatus.Information`.
//!
//! `IoSetCompletionRoutine` and `IoGetNextIrpStackLocation` are inline in
//! wdm.h and are written out below from the header's behaviour.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::mem::ManuallyDrop;
use core::net::SocketAddr;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use wdk_sys::ntddk::{
    IoAllocateIrp, IoAllocateMdl, IoCancelIrp, IoFreeIrp, IoFreeMdl, IoReuseIrp, KeInitializeEvent, KeSetEvent,
    KeWaitForSingleObject, MmBuildMdlForNonPagedPool,
};
use wdk_sys::{_EVENT_TYPE, _KWAIT_REASON, _MODE, DEVICE_OBJECT, IRP, KEVENT, LARGE_INTEGER, MDL, NTSTATUS};

use crate::netcx::wsk::{WskBuf, WskBufList, WskDatagramIndication};
use crate::ntstatus::NtStatus;
use crate::os::windows::wsk::{
    self, AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, Irp, SOCK_DGRAM, SOCK_STREAM, WSK_EVENT_DISCONNECT,
    WSK_EVENT_RECEIVE, WSK_EVENT_RECEIVE_FROM, WSK_FLAG_DATAGRAM_SOCKET, WskClientNpi, WskProviderConnectionDispatch,
    WskProviderDatagramDispatch, WskProviderNpi, WskRegistration, WskSocket,
};
use crate::os::windows::wsk_events::{
    self, CLIENT_DISPATCH, CONNECTION_EVENTS, DATAGRAM_EVENTS, Sockaddr, SocketContext,
};
use crate::os::{SEND_BATCH_MAX, SEND_SLOT_SIZE, SendSlot, SocketEvents, Transport};

/// Send slots per socket: enough sends in flight to keep a gigabit link
/// busy at 1500-byte packets with WSK completing in tens of microseconds
/// (the data path leaves packets in the ring when all are busy).
pub const SEND_SLOTS: u16 = 256;

/// How long the first socket open waits for the WSK provider
/// (`WskCaptureProviderNPI`, milliseconds). Never WSK_INFINITE_WAIT: waiting
/// for WSK in device add hung boot for ovpn-dco-win (interface reference,
/// "Lessons"); a socket open that finds WSK not ready fails and OpenVPN
/// retries.
pub const PROVIDER_WAIT_MS: u32 = 1_000;

/// How long a synchronous WSK call (create, bind, option, close) may take
/// before its IRP is cancelled, in milliseconds.
pub const SYNC_IRP_WAIT_MS: i64 = 2_000;

/// How long to wait after `IoCancelIrp` for the IRP to come back before
/// giving up on it (and leaking it rather than freeing memory WSK may still
/// write), in milliseconds.
pub const CANCEL_WAIT_MS: i64 = 2_000;

/// `SL_INVOKE_ON_SUCCESS | SL_INVOKE_ON_ERROR | SL_INVOKE_ON_CANCEL`
/// (wdm.h: 0x40, 0x80, 0x20): the routine runs however the IRP ends.
const SL_INVOKE_ALWAYS: u8 = 0x40 | 0x80 | 0x20;

/// `STATUS_MORE_PROCESSING_REQUIRED`: the IRP stays the driver's (facts §6).
const MORE_PROCESSING_REQUIRED: NTSTATUS = 0xC000_0016_u32 as i32;

/// 100 ns units per millisecond, negative: a relative kernel timeout.
const RELATIVE_MS: i64 = -10_000;

// ---------------------------------------------------------------------------
// IRP helpers (wdm.h inline functions)
// ---------------------------------------------------------------------------

/// `IoSetCompletionRoutine(irp, routine, context, TRUE, TRUE, TRUE)`: the
/// next stack location (`Tail.Overlay.CurrentStackLocation - 1`, which for
/// an IRP from `IoAllocateIrp(1, …)` is its only location) gets the routine,
/// its context and the three invoke flags.
///
/// # Safety
/// `irp` is an IRP the driver allocated with at least one stack location
/// and currently owns (not passed to WSK).
unsafe fn set_completion_routine(
    irp: *mut IRP,
    routine: unsafe extern "C" fn(*mut DEVICE_OBJECT, *mut IRP, *mut c_void) -> NTSTATUS,
    context: *mut c_void,
) {
    // SAFETY: owned, allocated IRP (contract): the stack-location union arm
    // of Tail.Overlay is the live one for a driver-allocated IRP, and one
    // location below the current one exists.
    unsafe {
        let next = (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1.CurrentStackLocation.sub(1);
        (*next).CompletionRoutine = Some(routine);
        (*next).Context = context;
        (*next).Control = SL_INVOKE_ALWAYS;
    }
}

/// `IoStatus.Status` and `IoStatus.Information` of a completed IRP.
///
/// # Safety
/// `irp` is live and completed.
unsafe fn irp_result(irp: *mut IRP) -> (NtStatus, usize) {
    // SAFETY: completed IRP (contract): WSK wrote both fields.
    unsafe { (NtStatus((*irp).IoStatus.__bindgen_anon_1.Status), (*irp).IoStatus.Information as usize) }
}

/// `IoAllocateIrp(1, FALSE)`: one stack location, for the WSK provider.
fn allocate_irp() -> Result<NonNull<IRP>, NtStatus> {
    // SAFETY: plain allocation, IRQL <= DISPATCH_LEVEL.
    NonNull::new(unsafe { IoAllocateIrp(1, 0) }).ok_or(NtStatus::INSUFFICIENT_RESOURCES)
}

/// A synchronous WSK call: an IRP and an event the completion sets. Boxed
/// so that a call WSK never completes can be leaked without leaving WSK a
/// dangling pointer.
struct SyncCall {
    event: KEVENT,
    irp: NonNull<IRP>,
}

/// Completion routine of a [`SyncCall`]: signal the waiter, keep the IRP.
unsafe extern "C" fn sync_call_done(_device: *mut DEVICE_OBJECT, _irp: *mut IRP, context: *mut c_void) -> NTSTATUS {
    // SAFETY: the context is the SyncCall's event, which stays allocated
    // until this routine ran (SyncCall::run never frees it earlier).
    unsafe { KeSetEvent(context.cast(), 0, 0) };
    MORE_PROCESSING_REQUIRED
}

/// Waits for `event` up to `ms` milliseconds; true if it was signalled.
///
/// # Safety
/// PASSIVE_LEVEL; `event` is an initialized KEVENT.
unsafe fn wait(event: *mut KEVENT, ms: i64) -> bool {
    let mut timeout = LARGE_INTEGER { QuadPart: ms.saturating_mul(RELATIVE_MS) };
    // SAFETY: valid event and timeout; PASSIVE_LEVEL (contract).
    let status = unsafe {
        KeWaitForSingleObject(event.cast(), _KWAIT_REASON::Executive, _MODE::KernelMode as i8, 0, &mut timeout)
    };
    status == NtStatus::SUCCESS.0
}

impl SyncCall {
    fn new() -> Result<Box<Self>, NtStatus> {
        let irp = allocate_irp()?;
        let mut call = Box::new(Self { event: KEVENT::default(), irp });
        // SAFETY: the event is in nonpaged pool (the Box) and initialized
        // before use; Notification so that a late waiter still sees it.
        unsafe { KeInitializeEvent(&mut call.event, _EVENT_TYPE::NotificationEvent, 0) };
        Ok(call)
    }

    /// Runs `op` with the IRP and waits (bounded) for it to complete. On a
    /// timeout the IRP is cancelled and waited for again; if even that
    /// times out the call is leaked and STATUS_TIMEOUT returned.
    ///
    /// # Safety
    /// PASSIVE_LEVEL; `op` passes the IRP to exactly one WSK call.
    unsafe fn run(mut self: Box<Self>, op: impl FnOnce(*mut Irp) -> NtStatus) -> (NtStatus, usize) {
        let irp = self.irp.as_ptr();
        let event: *mut KEVENT = &mut self.event;
        // SAFETY: we own the fresh IRP; the event outlives the completion.
        unsafe { set_completion_routine(irp, sync_call_done, event.cast()) };
        let _ = op(irp.cast());
        // SAFETY: PASSIVE_LEVEL (contract), initialized event.
        if !unsafe { wait(event, SYNC_IRP_WAIT_MS) } {
            // SAFETY: the IRP is in WSK's hands and not completed yet;
            // cancelling an IRP already completing is harmless.
            let _ = unsafe { IoCancelIrp(irp) };
            // SAFETY: as above.
            if !unsafe { wait(event, CANCEL_WAIT_MS) } {
                // WSK still holds the IRP: leak it and the event with it.
                Box::leak(self);
                return (NtStatus::TIMEOUT, 0);
            }
        }
        // SAFETY: completed (the event was set by its completion routine).
        let result = unsafe { irp_result(irp) };
        // SAFETY: completed and ours again (MORE_PROCESSING_REQUIRED).
        unsafe { IoFreeIrp(irp) };
        result
    }
}

/// One synchronous WSK call with a bounded wait.
///
/// # Safety
/// PASSIVE_LEVEL; `op` passes the IRP to exactly one WSK call whose
/// buffers outlive it.
unsafe fn sync_call(op: impl FnOnce(*mut Irp) -> NtStatus) -> (NtStatus, usize) {
    match SyncCall::new() {
        // SAFETY: the caller's contract.
        Ok(call) => unsafe { call.run(op) },
        Err(status) => (status, 0),
    }
}

// ---------------------------------------------------------------------------
// Registration (DriverEntry / unload) and the provider NPI
// ---------------------------------------------------------------------------

const PROVIDER_NONE: u8 = 0;
const PROVIDER_CAPTURING: u8 = 1;
const PROVIDER_READY: u8 = 2;

/// The driver's WSK client: registration storage WSK owns while registered
/// (fixed address, never touched by the driver) and the provider NPI.
struct Client {
    registration: UnsafeCell<WskRegistration>,
    provider: UnsafeCell<WskProviderNpi>,
    state: AtomicU8,
}

// SAFETY: `registration` is only passed to WSK (which synchronizes it);
// `provider` is written once while `state` is CAPTURING by the only thread
// that won the CAS, and read only after `state` is READY (release/acquire).
unsafe impl Sync for Client {}

static CLIENT: Client = Client {
    registration: UnsafeCell::new(WskRegistration::new()),
    provider: UnsafeCell::new(WskProviderNpi::empty()),
    state: AtomicU8::new(PROVIDER_NONE),
};

/// `WskRegister` (DriverEntry, PASSIVE_LEVEL).
///
/// # Safety
/// Once, from DriverEntry; paired with [`deregister`] at unload.
pub unsafe fn register() -> Result<(), NtStatus> {
    let mut npi = WskClientNpi { client_context: ptr::null_mut(), dispatch: &CLIENT_DISPATCH };
    // SAFETY: the NPI is read during the call; the registration lives in a
    // static, as WSK requires until WskDeregister.
    let status = unsafe { wsk::WskRegister(&mut npi, CLIENT.registration.get()) };
    if status.is_success() { Ok(()) } else { Err(status) }
}

/// `WskReleaseProviderNPI` (if captured) and `WskDeregister`, which waits
/// for every socket to be closed (PASSIVE_LEVEL, driver unload).
///
/// # Safety
/// Once, at unload, after every adapter is gone.
pub unsafe fn deregister() {
    if CLIENT.state.swap(PROVIDER_NONE, Ordering::AcqRel) == PROVIDER_READY {
        // SAFETY: the NPI was captured on this registration.
        unsafe { wsk::WskReleaseProviderNPI(CLIENT.registration.get()) };
    }
    // SAFETY: registered in DriverEntry (contract).
    unsafe { wsk::WskDeregister(CLIENT.registration.get()) };
}

/// The provider NPI, captured on first use with a bounded wait.
fn provider() -> Result<WskProviderNpi, NtStatus> {
    match CLIENT.state.compare_exchange(PROVIDER_NONE, PROVIDER_CAPTURING, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            let mut npi = WskProviderNpi::empty();
            // SAFETY: registered at DriverEntry; bounded wait at
            // PASSIVE_LEVEL (socket opens run there).
            let status = unsafe { wsk::WskCaptureProviderNPI(CLIENT.registration.get(), PROVIDER_WAIT_MS, &mut npi) };
            if status.is_success() {
                // SAFETY: only the CAS winner writes, before READY is
                // published (Client's Sync rule).
                unsafe { CLIENT.provider.get().write(npi) };
                CLIENT.state.store(PROVIDER_READY, Ordering::Release);
                Ok(npi)
            } else {
                CLIENT.state.store(PROVIDER_NONE, Ordering::Release);
                Err(NtStatus::DEVICE_NOT_READY)
            }
        }
        // SAFETY: READY was published after the write (Client's Sync rule).
        Err(PROVIDER_READY) => Ok(unsafe { CLIENT.provider.get().read() }),
        Err(_) => Err(NtStatus::DEVICE_NOT_READY),
    }
}

// ---------------------------------------------------------------------------
// Send slots
// ---------------------------------------------------------------------------

/// One send slot: its buffer, the MDL over it, the IRP reused for every
/// send, the WSK_BUF and destination WSK reads until completion, and the
/// WSK_BUF_LIST node that links it into a WskSendMessages batch (the
/// batch's first slot lends its IRP and destination to the whole batch).
struct Slot {
    buffer: Box<UnsafeCell<[u8; SEND_SLOT_SIZE]>>,
    mdl: NonNull<MDL>,
    irp: NonNull<IRP>,
    wsk_buf: UnsafeCell<WskBuf>,
    buf_list: UnsafeCell<WskBufList>,
    remote: UnsafeCell<Sockaddr>,
    index: u16,
    /// Back to the socket's events for the completion.
    owner: *const Shared,
}

/// What the completion routines and the transport share; boxed at a fixed
/// address for the socket's lifetime.
struct Shared {
    context: SocketContext,
    socket: AtomicPtr<WskSocket>,
    kind: Kind,
    slots: Vec<Slot>,
    /// The connect IRP of a TCP socket while the connect is in flight.
    connect_irp: AtomicPtr<IRP>,
    /// The local and remote address the connect IRP reads until it
    /// completes (TCP only).
    connect_addrs: UnsafeCell<(Sockaddr, Sockaddr)>,
    /// Set by the connect completion after it is done with `self`.
    connect_done: UnsafeCell<KEVENT>,
    /// A connect IRP never came back: `self` must outlive the transport.
    leaked: AtomicU8,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Datagram,
    Stream,
}

impl Shared {
    fn new(events: Arc<dyn SocketEvents>, kind: Kind) -> Result<Box<Self>, NtStatus> {
        let placeholder = Sockaddr::new(&SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut shared = Box::new(Self {
            context: SocketContext::new(events),
            socket: AtomicPtr::new(ptr::null_mut()),
            kind,
            slots: Vec::new(),
            connect_irp: AtomicPtr::new(ptr::null_mut()),
            connect_addrs: UnsafeCell::new((placeholder, placeholder)),
            connect_done: UnsafeCell::new(KEVENT::default()),
            leaked: AtomicU8::new(0),
        });
        // SAFETY: the event is in nonpaged pool (the Box), initialized once
        // before any use; Notification so that a late waiter sees it.
        unsafe { KeInitializeEvent(shared.connect_done.get(), _EVENT_TYPE::NotificationEvent, 0) };
        shared.slots.try_reserve_exact(usize::from(SEND_SLOTS)).map_err(|_| NtStatus::INSUFFICIENT_RESOURCES)?;
        let owner: *const Shared = &*shared;
        for index in 0..SEND_SLOTS {
            let buffer = Box::new(UnsafeCell::new([0u8; SEND_SLOT_SIZE]));
            // SAFETY: the buffer is nonpaged pool (wdk-alloc) of
            // SEND_SLOT_SIZE bytes that lives as long as the MDL (both are
            // freed in Drop, MDL first); no IRP is attached.
            let mdl = unsafe { IoAllocateMdl(buffer.get().cast(), SEND_SLOT_SIZE as u32, 0, 0, ptr::null_mut()) };
            let Some(mdl) = NonNull::new(mdl) else { return Err(NtStatus::INSUFFICIENT_RESOURCES) };
            // SAFETY: the MDL describes nonpaged pool, which is what this
            // call fills the page array for (Microsoft Learn).
            unsafe { MmBuildMdlForNonPagedPool(mdl.as_ptr()) };
            let irp = match allocate_irp() {
                Ok(irp) => irp,
                Err(status) => {
                    // SAFETY: allocated just above, not yet in a slot.
                    unsafe { IoFreeMdl(mdl.as_ptr()) };
                    return Err(status);
                }
            };
            shared.slots.push(Slot {
                buffer,
                mdl,
                irp,
                wsk_buf: UnsafeCell::new(WskBuf { mdl: mdl.as_ptr().cast(), offset: 0, length: 0 }),
                buf_list: UnsafeCell::new(WskBufList {
                    next: ptr::null_mut(),
                    buffer: WskBuf { mdl: mdl.as_ptr().cast(), offset: 0, length: 0 },
                }),
                remote: UnsafeCell::new(placeholder),
                index,
                owner,
            });
        }
        Ok(shared)
    }

    fn events(&self) -> &dyn SocketEvents {
        &*self.context.events
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        for slot in &self.slots {
            // SAFETY: the transport is dropped only after close, and every
            // accepted send completed before close (Transport::close's
            // contract): the IRPs and MDLs are idle and ours.
            unsafe {
                IoFreeIrp(slot.irp.as_ptr());
                IoFreeMdl(slot.mdl.as_ptr());
            }
        }
    }
}

/// Completion routine of a send: hands status and bytes sent to the data
/// path and keeps the IRP for the slot's next send.
unsafe extern "C" fn send_done(_device: *mut DEVICE_OBJECT, irp: *mut IRP, context: *mut c_void) -> NTSTATUS {
    // SAFETY: the context is the slot the IRP belongs to; slots live until
    // the transport is dropped, after every send completed.
    let slot = unsafe { &*context.cast::<Slot>() };
    // SAFETY: the IRP is completed (this is its completion routine).
    let (status, sent) = unsafe { irp_result(irp) };
    // SAFETY: the owner outlives its slots' completions (as above).
    let shared = unsafe { &*slot.owner };
    shared.events().send_complete(SendSlot(slot.index), status, sent);
    MORE_PROCESSING_REQUIRED
}

/// Completion routine of a WskSendMessages batch: the IRP is its first
/// slot's, and so is the context; one completion for the whole batch.
unsafe extern "C" fn send_batch_done(_device: *mut DEVICE_OBJECT, irp: *mut IRP, context: *mut c_void) -> NTSTATUS {
    // SAFETY: the context is the batch's first slot; slots live until the
    // transport is dropped, after every send completed.
    let slot = unsafe { &*context.cast::<Slot>() };
    // SAFETY: the IRP is completed (this is its completion routine).
    let (status, sent) = unsafe { irp_result(irp) };
    // SAFETY: the owner outlives its slots' completions (as above).
    let shared = unsafe { &*slot.owner };
    shared.events().send_batch_complete(SendSlot(slot.index), status, sent);
    MORE_PROCESSING_REQUIRED
}

// ---------------------------------------------------------------------------
// The transport
// ---------------------------------------------------------------------------

/// One WSK socket as [`Transport`].
pub struct WskTransport {
    shared: ManuallyDrop<Box<Shared>>,
    send_slots: u16,
}

// SAFETY: the socket, IRPs and MDLs are kernel objects any thread may use at
// the IRQLs WSK documents; the buffers are handed out only per the slot
// ownership rule of Transport::slot_buffer; the rest is atomics.
unsafe impl Send for WskTransport {}
// SAFETY: as for Send.
unsafe impl Sync for WskTransport {}

/// The datagram dispatch of a live UDP socket.
///
/// # Safety
/// `socket` is a live WSK datagram socket.
unsafe fn datagram_dispatch<'a>(socket: NonNull<WskSocket>) -> Option<&'a WskProviderDatagramDispatch> {
    // SAFETY: a datagram socket's Dispatch is a WSK_PROVIDER_DATAGRAM_DISPATCH
    // (facts §4), valid while the socket lives.
    unsafe { socket.as_ref().dispatch.cast::<WskProviderDatagramDispatch>().as_ref() }
}

/// The connection dispatch of a live TCP socket.
///
/// # Safety
/// `socket` is a live WSK connection socket.
unsafe fn connection_dispatch<'a>(socket: NonNull<WskSocket>) -> Option<&'a WskProviderConnectionDispatch> {
    // SAFETY: as for datagram_dispatch, WSK_PROVIDER_CONNECTION_DISPATCH.
    unsafe { socket.as_ref().dispatch.cast::<WskProviderConnectionDispatch>().as_ref() }
}

/// Closes `socket` with a bounded wait (`WskCloseSocket`). After it, WSK
/// raises no more events for it (Microsoft Learn, WskCloseSocket).
///
/// # Safety
/// PASSIVE_LEVEL; `socket` is live and nothing uses it afterwards.
unsafe fn close_socket(socket: NonNull<WskSocket>) {
    // SAFETY: live socket (contract).
    let Some(close) = (unsafe { wsk_events::basic_dispatch(socket) }).and_then(|d| d.wsk_close_socket) else {
        return;
    };
    // SAFETY: PASSIVE_LEVEL; one WSK call with the IRP.
    let _ = unsafe { sync_call(|irp| close(socket.as_ptr(), irp)) };
}

/// `Os::open_udp`: WskSocket, IPV6_V6ONLY for an IPv6 socket, WskBind,
/// SIO_WSK_SET_REMOTE_ADDRESS with a remote (P2P), then receive events.
pub fn open_udp(
    local: SocketAddr,
    remote: Option<SocketAddr>,
    ipv6_only: bool,
    events: Arc<dyn SocketEvents>,
) -> Result<WskTransport, NtStatus> {
    let npi = provider()?;
    // SAFETY: the captured NPI's dispatch stays valid until it is released
    // at unload.
    let Some(create) = (unsafe { npi.dispatch.as_ref() }).and_then(|d| d.wsk_socket) else {
        return Err(NtStatus::DEVICE_NOT_READY);
    };
    let shared = Shared::new(events, Kind::Datagram)?;
    let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
    let context: *const SocketContext = &shared.context;
    // SAFETY: PASSIVE_LEVEL; the context and the dispatch table outlive the
    // socket (the context is boxed in `shared`, which the transport keeps
    // until after close; the table is static).
    let (status, info) = unsafe {
        sync_call(|irp| {
            create(
                npi.client,
                family,
                SOCK_DGRAM,
                IPPROTO_UDP,
                WSK_FLAG_DATAGRAM_SOCKET,
                context.cast_mut().cast(),
                (&raw const DATAGRAM_EVENTS).cast(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                irp,
            )
        })
    };
    if !status.is_success() {
        return Err(status);
    }
    let Some(socket) = NonNull::new(info as *mut WskSocket) else { return Err(NtStatus::UNSUCCESSFUL) };
    shared.socket.store(socket.as_ptr(), Ordering::Release);
    let transport = WskTransport { shared: ManuallyDrop::new(shared), send_slots: SEND_SLOTS };
    // SAFETY: the socket was just created (live); PASSIVE_LEVEL.
    match unsafe { configure_udp(socket, local, remote, ipv6_only) } {
        Ok(()) => Ok(transport),
        Err(status) => {
            transport.close();
            Err(status)
        }
    }
}

/// Options, bind, remote address and events of a fresh UDP socket.
///
/// # Safety
/// PASSIVE_LEVEL; `socket` is a live datagram socket.
unsafe fn configure_udp(
    socket: NonNull<WskSocket>,
    local: SocketAddr,
    remote: Option<SocketAddr>,
    ipv6_only: bool,
) -> Result<(), NtStatus> {
    // SAFETY: live datagram socket (contract).
    let dispatch = unsafe { datagram_dispatch(socket) }.ok_or(NtStatus::DEVICE_NOT_READY)?;
    if local.is_ipv6() {
        let value = u32::from(ipv6_only);
        // SAFETY: PASSIVE_LEVEL; `value` outlives the synchronous call.
        let (status, _) =
            unsafe { sync_call(|irp| wsk_events::set_ipv6_only(socket, &value, NonNull::new_unchecked(irp))) };
        check(status)?;
    }
    let bind = dispatch.wsk_bind.ok_or(NtStatus::DEVICE_NOT_READY)?;
    let local = Sockaddr::new(&local);
    // SAFETY: PASSIVE_LEVEL; the address outlives the synchronous call.
    let (status, _) = unsafe { sync_call(|irp| bind(socket.as_ptr(), local.as_ptr(), 0, irp)) };
    check(status)?;
    if let Some(remote) = remote {
        let remote = Sockaddr::new(&remote);
        // SAFETY: as above.
        let (status, _) =
            unsafe { sync_call(|irp| wsk_events::set_remote_address(socket, &remote, NonNull::new_unchecked(irp))) };
        check(status)?;
    }
    // SAFETY: live, bound socket; events are enabled after bind.
    check(unsafe { wsk_events::enable_events(socket, WSK_EVENT_RECEIVE_FROM) })
}

fn check(status: NtStatus) -> Result<(), NtStatus> {
    if status.is_success() { Ok(()) } else { Err(status) }
}

/// Completion of the TCP connect: keep the socket, enable its events and
/// tell the data path (`SocketEvents::connected`).
unsafe extern "C" fn connect_done(_device: *mut DEVICE_OBJECT, irp: *mut IRP, context: *mut c_void) -> NTSTATUS {
    // SAFETY: the context is the transport's Shared, which lives until the
    // connect IRP came back (close waits for it).
    let shared = unsafe { &*context.cast::<Shared>() };
    // SAFETY: the IRP completed (its completion routine runs).
    let (mut status, info) = unsafe { irp_result(irp) };
    if status.is_success() {
        match NonNull::new(info as *mut WskSocket) {
            Some(socket) => {
                shared.socket.store(socket.as_ptr(), Ordering::Release);
                // SAFETY: the socket was just connected (live); enabling
                // events is allowed at DISPATCH_LEVEL without an IRP.
                status = unsafe { wsk_events::enable_events(socket, WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT) };
            }
            None => status = NtStatus::UNSUCCESSFUL,
        }
    }
    // The IRP is freed by whoever takes it out of `connect_irp` last: here
    // if close is not waiting for it, else by close.
    let taken = shared.connect_irp.swap(ptr::null_mut(), Ordering::AcqRel);
    shared.events().connected(status);
    if !taken.is_null() {
        // SAFETY: completed, ours again (MORE_PROCESSING_REQUIRED), and no
        // one else holds it (we took it out).
        unsafe { IoFreeIrp(taken) };
    }
    // Last touch of `shared`: close may free it once this is set.
    // SAFETY: initialized in Shared::new, alive until then.
    unsafe { KeSetEvent(shared.connect_done.get(), 0, 0) };
    MORE_PROCESSING_REQUIRED
}

/// `Os::open_tcp`: WskSocketConnect, completing asynchronously into
/// `SocketEvents::connected`. Never blocks.
pub fn open_tcp(
    local: SocketAddr,
    remote: SocketAddr,
    events: Arc<dyn SocketEvents>,
) -> Result<WskTransport, NtStatus> {
    let npi = provider()?;
    // SAFETY: as in open_udp.
    let Some(connect) = (unsafe { npi.dispatch.as_ref() }).and_then(|d| d.wsk_socket_connect) else {
        return Err(NtStatus::DEVICE_NOT_READY);
    };
    let shared = Shared::new(events, Kind::Stream)?;
    // SAFETY: nothing else reads the addresses before the connect starts.
    unsafe { shared.connect_addrs.get().write((Sockaddr::new(&local), Sockaddr::new(&remote))) };
    let irp = allocate_irp()?;
    let context: *const Shared = &*shared;
    // SAFETY: fresh IRP; the context is boxed and outlives the IRP.
    unsafe { set_completion_routine(irp.as_ptr(), connect_done, context.cast_mut().cast()) };
    shared.connect_irp.store(irp.as_ptr(), Ordering::Release);
    // SAFETY: as the write above: the addresses are not written again.
    let (local, remote) = unsafe { &*shared.connect_addrs.get() };
    let socket_context: *const SocketContext = &shared.context;
    // SAFETY: PASSIVE_LEVEL; addresses, context and dispatch outlive the
    // IRP; the IRP is completed whatever this returns (connect_done runs).
    let _ = unsafe {
        connect(
            npi.client,
            SOCK_STREAM,
            IPPROTO_TCP,
            local.as_ptr(),
            remote.as_ptr(),
            0,
            socket_context.cast_mut().cast(),
            &CONNECTION_EVENTS,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            irp.as_ptr().cast(),
        )
    };
    Ok(WskTransport { shared: ManuallyDrop::new(shared), send_slots: SEND_SLOTS })
}

impl Transport for WskTransport {
    fn send_slots(&self) -> u16 {
        self.send_slots
    }

    unsafe fn slot_buffer(&self, slot: SendSlot) -> NonNull<[u8; SEND_SLOT_SIZE]> {
        // The data path only names slots below send_slots(); anything else
        // would be a bug there, answered with slot 0's buffer rather than a
        // panic (the caller owns whatever it names).
        let s = self.shared.slots.get(usize::from(slot.0)).unwrap_or(&self.shared.slots[0]);
        // SAFETY: the UnsafeCell's pointer is never null.
        unsafe { NonNull::new_unchecked(s.buffer.get()) }
    }

    fn send(&self, slot: SendSlot, len: usize, remote: SocketAddr) -> Result<(), NtStatus> {
        let s = self.shared.slots.get(usize::from(slot.0)).ok_or(NtStatus::INVALID_PARAMETER)?;
        if len > SEND_SLOT_SIZE {
            return Err(NtStatus::INVALID_BUFFER_SIZE);
        }
        let socket = NonNull::new(self.shared.socket.load(Ordering::Acquire)).ok_or(NtStatus::INVALID_DEVICE_STATE)?;
        let irp = s.irp.as_ptr();
        // SAFETY: the caller owns the slot (its previous send completed), so
        // the IRP, WSK_BUF and address are idle and ours to rewrite.
        unsafe {
            IoReuseIrp(irp, NtStatus::UNSUCCESSFUL.0);
            set_completion_routine(irp, send_done, ptr::from_ref(s).cast_mut().cast());
            (*s.wsk_buf.get()).length = len;
            s.remote.get().write(Sockaddr::new(&remote));
        }
        match self.shared.kind {
            Kind::Datagram => {
                // SAFETY: live socket (stored after creation, cleared never
                // before close, which follows the last send).
                let send_to = unsafe { datagram_dispatch(socket) }
                    .and_then(|d| d.wsk_send_to)
                    .ok_or(NtStatus::INVALID_DEVICE_STATE)?;
                // SAFETY: buffer, MDL, WSK_BUF and address stay valid until
                // the IRP completes (the slot is the transport's until then);
                // WSK completes the IRP whatever it returns, so one
                // send_complete follows.
                let _ = unsafe {
                    send_to(
                        socket.as_ptr(),
                        s.wsk_buf.get().cast(),
                        0,
                        (*s.remote.get()).as_ptr(),
                        0,
                        ptr::null_mut(),
                        irp.cast(),
                    )
                };
            }
            Kind::Stream => {
                // SAFETY: as above, a connection socket.
                let send = unsafe { connection_dispatch(socket) }
                    .and_then(|d| d.wsk_send)
                    .ok_or(NtStatus::INVALID_DEVICE_STATE)?;
                // SAFETY: as above.
                let _ = unsafe { send(socket.as_ptr(), s.wsk_buf.get().cast(), 0, irp.cast()) };
            }
        }
        Ok(())
    }

    fn send_batch(&self, batch: &[(SendSlot, usize)], remote: SocketAddr) -> Result<(), NtStatus> {
        if self.shared.kind != Kind::Datagram {
            return Err(NtStatus::NOT_SUPPORTED);
        }
        if batch.is_empty() || batch.len() > SEND_BATCH_MAX {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let mut slots: [Option<&Slot>; SEND_BATCH_MAX] = [None; SEND_BATCH_MAX];
        for (k, (at, &(slot, len))) in slots.iter_mut().zip(batch).enumerate() {
            if len > SEND_SLOT_SIZE {
                return Err(NtStatus::INVALID_BUFFER_SIZE);
            }
            // A slot twice would link its node to itself: WSK would walk a
            // cycle.
            if batch[..k].iter().any(|&(s, _)| s == slot) {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            *at = Some(self.shared.slots.get(usize::from(slot.0)).ok_or(NtStatus::INVALID_PARAMETER)?);
        }
        let Some(first) = slots[0] else { return Err(NtStatus::INVALID_PARAMETER) };
        let socket = NonNull::new(self.shared.socket.load(Ordering::Acquire)).ok_or(NtStatus::INVALID_DEVICE_STATE)?;
        // A provider without WskSendMessages (older than Windows 8) makes the
        // data path fall back to WskSendTo per slot.
        // SAFETY: live socket (stored after creation, cleared never before
        // close, which follows the last send).
        let send_messages =
            unsafe { datagram_dispatch(socket) }.and_then(|d| d.wsk_send_messages).ok_or(NtStatus::NOT_SUPPORTED)?;
        let irp = first.irp.as_ptr();
        // SAFETY: the caller owns every slot of the batch (their previous
        // sends completed), so their IRPs, WSK_BUF_LIST nodes and the first
        // slot's address are idle and ours to rewrite; each node links to the
        // next slot's node, the last to none.
        unsafe {
            IoReuseIrp(irp, NtStatus::UNSUCCESSFUL.0);
            set_completion_routine(irp, send_batch_done, ptr::from_ref(first).cast_mut().cast());
            first.remote.get().write(Sockaddr::new(&remote));
            for (k, &(_, len)) in batch.iter().enumerate() {
                let Some(slot) = slots[k] else { break };
                let next = slots.get(k + 1).copied().flatten().map_or(ptr::null_mut(), |n| n.buf_list.get());
                let node = &mut *slot.buf_list.get();
                node.buffer.length = len;
                node.next = next;
            }
        }
        // SAFETY: buffers, MDLs, the node chain and the address stay valid
        // until the IRP completes (every slot of the batch is the
        // transport's until then); WSK completes the IRP whatever it
        // returns, so one send_batch_complete follows. The facts give
        // WskSendMessages from NTDDI_WIN8 on, but no IRQL, and neither does
        // its DDI page: it is called where WskSendTo is (an Advance, up to
        // DISPATCH_LEVEL), an assumption checked by bring-up item 9.26.
        let _ = unsafe {
            send_messages(
                socket.as_ptr(),
                first.buf_list.get().cast(),
                0,
                (*first.remote.get()).as_ptr(),
                0,
                ptr::null_mut(),
                irp.cast(),
            )
        };
        Ok(())
    }

    unsafe fn release(&self, list: NonNull<WskDatagramIndication>) {
        let Some(socket) = NonNull::new(self.shared.socket.load(Ordering::Acquire)) else { return };
        // SAFETY: a datagram socket (only UDP retains lists), live until
        // close, which comes after every release (contract).
        let Some(release) = (unsafe { datagram_dispatch(socket) }).and_then(|d| d.wsk_release) else { return };
        // SAFETY: the list was retained from this socket's receive event and
        // is released once (contract).
        let _ = unsafe { release(socket.as_ptr(), list.as_ptr().cast()) };
    }

    fn close(&self) {
        // TCP: every stream transport issued one connect (open_tcp), whose
        // completion touches `shared` until it sets `connect_done`. A connect
        // in flight is cancelled; either way close waits (bounded) for that
        // event before the socket is closed and `shared` may be freed. Waiting
        // only when this side took the IRP out of `connect_irp` would let a
        // completion that took it first (and is still reporting `connected`)
        // run on after the transport is dropped.
        if self.shared.kind == Kind::Stream {
            let pending = self.shared.connect_irp.swap(ptr::null_mut(), Ordering::AcqRel);
            if !pending.is_null() {
                // SAFETY: the IRP is in WSK's hands; connect_done will not
                // free it (it was taken out here), so it stays allocated for
                // the call.
                let _ = unsafe { IoCancelIrp(pending) };
            }
            // SAFETY: PASSIVE_LEVEL (sockets close only there); the event was
            // initialized in Shared::new and is a notification event, so a
            // connect that completed long ago left it signalled.
            if unsafe { wait(self.shared.connect_done.get(), CANCEL_WAIT_MS) } {
                if !pending.is_null() {
                    // SAFETY: completed and ours (taken out of connect_irp).
                    unsafe { IoFreeIrp(pending) };
                }
            } else {
                // Closing a socket with a pending connect must not block
                // forever (interface reference, "Lessons"): give up on the
                // IRP and keep everything it points at alive.
                self.shared.leaked.store(1, Ordering::Release);
                return;
            }
        }
        let socket = self.shared.socket.swap(ptr::null_mut(), Ordering::AcqRel);
        if let Some(socket) = NonNull::new(socket) {
            // SAFETY: PASSIVE_LEVEL (the adapter closes sockets only there);
            // the socket is live and taken out, so nothing uses it after.
            unsafe { close_socket(socket) };
        }
    }
}

impl Drop for WskTransport {
    fn drop(&mut self) {
        // A connect IRP that never came back may still be completed into
        // `shared` by WSK: then it stays allocated for good.
        if self.shared.leaked.load(Ordering::Acquire) == 0 {
            // SAFETY: dropped once, here; nothing refers to it any more (the
            // socket is closed and every IRP came back).
            unsafe { ManuallyDrop::drop(&mut self.shared) };
        }
    }
}

/// `KeDelayExecutionThread(KernelMode, FALSE, -ms)` (PASSIVE_LEVEL).
pub fn sleep_ms(ms: i64) {
    let mut interval = LARGE_INTEGER { QuadPart: ms.saturating_mul(RELATIVE_MS) };
    // SAFETY: a relative interval; the callers run at PASSIVE_LEVEL.
    let _ = unsafe { wdk_sys::ntddk::KeDelayExecutionThread(_MODE::KernelMode as i8, 0, &mut interval) };
}
