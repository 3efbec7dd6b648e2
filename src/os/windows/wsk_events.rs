//! The WSK side that needs no IRP: the client dispatch tables, the event
//! callbacks (trampolines from WSK's `extern "system"` calls to
//! [`SocketEvents`]), socket addresses in WSK's layout, and the socket
//! option calls whose IRP the caller supplies.
//!
//! Event contexts (Microsoft Learn, PFN_WSK_RECEIVE_FROM_EVENT,
//! PFN_WSK_RECEIVE_EVENT, PFN_WSK_DISCONNECT_EVENT): all at IRQL <=
//! DISPATCH_LEVEL, on any CPU, concurrently with each other (interface
//! reference "Lessons": no shared scratch buffers). A NULL indication list
//! means the socket stopped working and the client should close it.

use alloc::sync::Arc;
use core::ffi::c_void;
use core::net::SocketAddr;
use core::ptr::{self, NonNull};

use crate::netcx::wsk as ncx_wsk;
use crate::ntstatus::NtStatus;
use crate::os::SocketEvents;
use crate::os::windows::wsk::{
    self, AF_INET, AF_INET6, IPPROTO_IPV6, IPV6_V6ONLY, Irp, NPI_WSK_INTERFACE_ID, SIO_WSK_SET_REMOTE_ADDRESS,
    SO_WSK_EVENT_CALLBACK, SOL_SOCKET, WSK_FLAG_ABORTIVE, WSK_VERSION_1_0, WskClientConnectionDispatch,
    WskClientDatagramDispatch, WskClientDispatch, WskControlSocketType, WskEventCallbackControl,
    WskProviderBasicDispatch, WskSocket,
};

/// What WSK passes back as `SocketContext` to every event of one socket:
/// the data path's events. Owned by the transport, which keeps it at a
/// fixed address until `WskCloseSocket` has completed (after which WSK
/// raises no event for the socket).
pub struct SocketContext {
    pub events: Arc<dyn SocketEvents>,
}

impl SocketContext {
    pub fn new(events: Arc<dyn SocketEvents>) -> Self {
        Self { events }
    }
}

/// The events of the socket whose context WSK passed.
///
/// # Safety
/// `context` is the `SocketContext` given to `WskSocket`/`WskSocketConnect`
/// for a socket not yet closed.
unsafe fn events<'a>(context: *mut c_void) -> Option<&'a dyn SocketEvents> {
    // SAFETY: null or the transport's SocketContext, alive until the close
    // completes (contract), only shared.
    unsafe { context.cast::<SocketContext>().as_ref() }.map(|c| &*c.events)
}

/// `WskReceiveFromEvent`: hands the whole datagram list to the data path,
/// which returns STATUS_PENDING iff it retained some of it.
unsafe extern "system" fn receive_from_event(
    context: *mut c_void,
    _flags: u32,
    list: *mut wsk::WskDatagramIndication,
) -> NtStatus {
    // SAFETY: WSK passes back the context of this socket (WskSocket's).
    let Some(events) = (unsafe { events(context) }) else { return NtStatus::SUCCESS };
    match NonNull::new(list.cast::<ncx_wsk::WskDatagramIndication>()) {
        // SAFETY: WSK's list (netcx's mirror of WSK_DATAGRAM_INDICATION,
        // facts §4), valid until this returns or, if retained, released.
        Some(list) => unsafe { events.receive_from(list) },
        None => {
            events.disconnected(NtStatus::CONNECTION_ABORTED);
            NtStatus::SUCCESS
        }
    }
}

/// Most MDLs one stream indication is walked through. A TCP receive event
/// carries at most the socket's receive window; 4096 page-sized MDLs cover
/// 16 MiB, far above any Windows TCP window a single event indicates.
pub const STREAM_MDLS_MAX: usize = 4096;

/// Why a stream indication could not be delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamError {
    /// An MDL is not mapped in system space (WSK's buffers come mapped; an
    /// unmapped one cannot be mapped at DISPATCH_LEVEL without a fallible
    /// call the receive path does not make).
    Unmapped,
    /// The chain is shorter than the indicated length, or its offset is past
    /// the first MDL.
    Truncated,
    /// More than [`STREAM_MDLS_MAX`] MDLs.
    TooManyMdls,
}

/// Delivers one `WSK_BUF` (an MDL chain, an offset into the first MDL and a
/// total length) to `events` chunk by chunk, in order.
///
/// # Safety
/// `buf` describes locked memory that stays valid for the call.
unsafe fn deliver_buf(buf: &ncx_wsk::WskBuf, events: &dyn SocketEvents) -> Result<(), StreamError> {
    let mut mdl = buf.mdl;
    let mut offset = buf.offset as usize;
    let mut left = buf.length;
    for _ in 0..STREAM_MDLS_MAX {
        if left == 0 {
            return Ok(());
        }
        // SAFETY: the chain is WSK's, valid for the call (contract).
        let Some(m) = (unsafe { mdl.cast_const().as_ref() }) else { return Err(StreamError::Truncated) };
        let count = m.byte_count as usize;
        if offset > count {
            return Err(StreamError::Truncated);
        }
        let take = (count - offset).min(left);
        if take > 0 {
            let base = m.system_address().ok_or(StreamError::Unmapped)?;
            // SAFETY: `base` maps this MDL's `byte_count` bytes in system
            // space (MmGetSystemAddressForMdlSafe's fast path, netcx::mdl),
            // and offset + take <= byte_count was checked above.
            let bytes = unsafe { core::slice::from_raw_parts(base.add(offset), take) };
            events.stream_received(bytes);
        }
        left -= take;
        offset = 0;
        mdl = m.next;
    }
    if left == 0 { Ok(()) } else { Err(StreamError::TooManyMdls) }
}

/// Most indications in one receive-event list; each is one or more MDLs of
/// the same stream, so this bound is the MDL bound again.
pub const STREAM_INDICATIONS_MAX: usize = STREAM_MDLS_MAX;

/// `WskReceiveEvent` (TCP): every indicated byte is consumed at once into
/// the stream reassembly of the data path, so the list is never retained.
unsafe extern "system" fn receive_event(
    context: *mut c_void,
    _flags: u32,
    list: *mut wsk::WskDataIndication,
    bytes_indicated: usize,
    bytes_accepted: *mut usize,
) -> NtStatus {
    // SAFETY: WSK passes back the context of this socket (WskSocketConnect's).
    let Some(events) = (unsafe { events(context) }) else { return NtStatus::SUCCESS };
    let mut next = list.cast::<ncx_wsk::WskDataIndication>();
    if next.is_null() {
        events.disconnected(NtStatus::CONNECTION_ABORTED);
        return NtStatus::SUCCESS;
    }
    let mut result = Ok(());
    for _ in 0..STREAM_INDICATIONS_MAX {
        // SAFETY: WSK's list of WSK_DATA_INDICATION (netcx's mirror, facts
        // §4), valid until this callback returns.
        let Some(indication) = (unsafe { next.cast_const().as_ref() }) else { break };
        // SAFETY: the indication's buffer is locked memory, valid for the
        // callback (PFN_WSK_RECEIVE_EVENT).
        result = unsafe { deliver_buf(&indication.buffer, events) };
        if result.is_err() {
            break;
        }
        next = indication.next;
    }
    if result.is_err() || !next.is_null() {
        // Bytes of the stream were lost: framing cannot recover, so the
        // connection is over (as a reset would end it).
        events.disconnected(NtStatus::CONNECTION_ABORTED);
    }
    if !bytes_accepted.is_null() {
        // SAFETY: WSK's out parameter, valid for the callback. Everything is
        // accepted: delivered, or dropped with the connection reported dead.
        unsafe { bytes_accepted.write(bytes_indicated) };
    }
    NtStatus::SUCCESS
}

/// `WskDisconnectEvent` (TCP): the peer closed (graceful) or reset
/// (`WSK_FLAG_ABORTIVE`) the connection.
unsafe extern "system" fn disconnect_event(context: *mut c_void, flags: u32) -> NtStatus {
    // SAFETY: WSK passes back the context of this socket.
    if let Some(events) = unsafe { events(context) } {
        let status =
            if flags & WSK_FLAG_ABORTIVE != 0 { NtStatus::CONNECTION_RESET } else { NtStatus::CONNECTION_DISCONNECTED };
        events.disconnected(status);
    }
    NtStatus::SUCCESS
}

/// `WSK_CLIENT_DISPATCH` of the driver: WSK 1.0, no client-level events.
pub static CLIENT_DISPATCH: WskClientDispatch =
    WskClientDispatch { version: WSK_VERSION_1_0, reserved: 0, wsk_client_event: None };

/// `WSK_CLIENT_DATAGRAM_DISPATCH` for the UDP sockets.
pub static DATAGRAM_EVENTS: WskClientDatagramDispatch =
    WskClientDatagramDispatch { wsk_receive_from_event: Some(receive_from_event) };

/// `WSK_CLIENT_CONNECTION_DISPATCH` for the TCP socket (no send backlog
/// event: the data path sends one slot at a time per completion).
pub static CONNECTION_EVENTS: WskClientConnectionDispatch = WskClientConnectionDispatch {
    wsk_receive_event: Some(receive_event),
    wsk_disconnect_event: Some(disconnect_event),
    wsk_send_backlog_event: None,
};

// ---------------------------------------------------------------------------
// Socket addresses
// ---------------------------------------------------------------------------

const SOCKADDR_IN_LEN: usize = 16;
const SOCKADDR_IN6_LEN: usize = 28;

/// A SOCKADDR_IN or SOCKADDR_IN6 (facts §4: 16 / 28 bytes, align 4), in
/// storage WSK may read as either. WSK only reads it during the call it is
/// passed to (or, for IRP calls, until the IRP completes).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sockaddr {
    bytes: [u8; SOCKADDR_IN6_LEN],
    len: u32,
}

impl Sockaddr {
    /// `addr` in WSK's layout: family (little-endian), port (big-endian),
    /// address; IPv6 adds flow info and scope id (little-endian).
    pub fn new(addr: &SocketAddr) -> Self {
        let mut bytes = [0u8; SOCKADDR_IN6_LEN];
        match addr {
            SocketAddr::V4(a) => {
                bytes[0..2].copy_from_slice(&AF_INET.to_le_bytes());
                bytes[2..4].copy_from_slice(&a.port().to_be_bytes());
                bytes[4..8].copy_from_slice(&a.ip().octets());
                Self { bytes, len: SOCKADDR_IN_LEN as u32 }
            }
            SocketAddr::V6(a) => {
                bytes[0..2].copy_from_slice(&AF_INET6.to_le_bytes());
                bytes[2..4].copy_from_slice(&a.port().to_be_bytes());
                bytes[4..8].copy_from_slice(&a.flowinfo().to_le_bytes());
                bytes[8..24].copy_from_slice(&a.ip().octets());
                bytes[24..28].copy_from_slice(&a.scope_id().to_le_bytes());
                Self { bytes, len: SOCKADDR_IN6_LEN as u32 }
            }
        }
    }

    /// `ADDRESS_FAMILY` of the address.
    pub fn family(&self) -> u16 {
        u16::from_le_bytes([self.bytes[0], self.bytes[1]])
    }

    /// Bytes of the structure (16 or 28).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Never empty: a SOCKADDR has at least its family.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `PSOCKADDR` WSK takes (it does not write through it).
    pub fn as_ptr(&self) -> *mut wsk::Sockaddr {
        ptr::from_ref(&self.bytes).cast_mut().cast()
    }
}

// ---------------------------------------------------------------------------
// Socket control (WskControlSocket; facts §4 "[docs]" paragraph)
// ---------------------------------------------------------------------------

/// The basic dispatch every socket's `Dispatch` starts with (facts §4:
/// `WskControlSocket` @0, `WskCloseSocket` @8 for every socket type).
///
/// # Safety
/// `socket` is a live WSK socket.
pub unsafe fn basic_dispatch<'a>(socket: NonNull<WskSocket>) -> Option<&'a WskProviderBasicDispatch> {
    // SAFETY: a live socket's Dispatch points at its provider table, whose
    // first two slots are the basic dispatch (facts §4), valid while the
    // socket lives.
    unsafe { socket.as_ref().dispatch.cast::<WskProviderBasicDispatch>().as_ref() }
}

/// `WskControlSocket(WskSetOption, SO_WSK_EVENT_CALLBACK, SOL_SOCKET,
/// {&NPI_WSK_INTERFACE_ID, mask}, Irp = NULL)`: enables `mask` events.
/// Enabling takes no IRP (Microsoft Learn, SO_WSK_EVENT_CALLBACK); after bind
/// for datagram sockets, after connect for connection sockets.
///
/// # Safety
/// `socket` is live; IRQL <= DISPATCH_LEVEL.
pub unsafe fn enable_events(socket: NonNull<WskSocket>, mask: u32) -> NtStatus {
    // SAFETY: live socket (contract).
    let Some(control) = (unsafe { basic_dispatch(socket) }).and_then(|d| d.wsk_control_socket) else {
        return NtStatus::INVALID_DEVICE_STATE;
    };
    let mut ctrl = WskEventCallbackControl { npi_id: &raw const NPI_WSK_INTERFACE_ID, event_mask: mask };
    // SAFETY: the input is a WSK_EVENT_CALLBACK_CONTROL (16 bytes, facts §4)
    // read during the call; no output; no IRP, as documented for enabling.
    unsafe {
        control(
            socket.as_ptr(),
            WskControlSocketType::SET_OPTION,
            SO_WSK_EVENT_CALLBACK,
            SOL_SOCKET,
            size_of::<WskEventCallbackControl>(),
            ptr::from_mut(&mut ctrl).cast(),
            0,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    }
}

/// `WskControlSocket(WskSetOption, IPV6_V6ONLY, IPPROTO_IPV6, ULONG)`: a
/// dual-stack listener clears it (before bind). Returns STATUS_PENDING
/// when the IRP completes later.
///
/// # Safety
/// `socket` is live; `irp` is an IRP the caller owns, set up with a
/// completion routine, and kept until it completes; `value` outlives it.
pub unsafe fn set_ipv6_only(socket: NonNull<WskSocket>, value: &u32, irp: NonNull<Irp>) -> NtStatus {
    // SAFETY: live socket (contract).
    let Some(control) = (unsafe { basic_dispatch(socket) }).and_then(|d| d.wsk_control_socket) else {
        return NtStatus::INVALID_DEVICE_STATE;
    };
    // SAFETY: the input is a ULONG that outlives the IRP (contract).
    unsafe {
        control(
            socket.as_ptr(),
            WskControlSocketType::SET_OPTION,
            IPV6_V6ONLY,
            IPPROTO_IPV6,
            size_of::<u32>(),
            ptr::from_ref(value).cast_mut().cast(),
            0,
            ptr::null_mut(),
            ptr::null_mut(),
            irp.as_ptr(),
        )
    }
}

/// `WskControlSocket(WskIoctl, SIO_WSK_SET_REMOTE_ADDRESS, 0, SOCKADDR)`:
/// after bind, only datagrams from `remote` are accepted and sends default
/// to it (P2P). An IRP is required.
///
/// # Safety
/// As for [`set_ipv6_only`]; `remote` outlives the IRP.
pub unsafe fn set_remote_address(socket: NonNull<WskSocket>, remote: &Sockaddr, irp: NonNull<Irp>) -> NtStatus {
    // SAFETY: live socket (contract).
    let Some(control) = (unsafe { basic_dispatch(socket) }).and_then(|d| d.wsk_control_socket) else {
        return NtStatus::INVALID_DEVICE_STATE;
    };
    // SAFETY: the input is a SOCKADDR of its family's length that outlives
    // the IRP (contract).
    unsafe {
        control(
            socket.as_ptr(),
            WskControlSocketType::IOCTL,
            SIO_WSK_SET_REMOTE_ADDRESS,
            0,
            remote.len(),
            remote.as_ptr().cast(),
            0,
            ptr::null_mut(),
            ptr::null_mut(),
            irp.as_ptr(),
        )
    }
}
