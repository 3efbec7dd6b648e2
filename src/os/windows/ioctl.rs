//! OpenVPN's handle: the default queue's EvtIoDeviceControl, EvtIoRead and
//! EvtIoWrite hand each request to the adapter, and [`WdfRequest`] is the
//! control plane's [`Request`] over a WDFREQUEST.
//!
//! Cancellation. A request the adapter may park is made cancelable
//! (`WdfRequestMarkCancelableEx`) before the adapter sees it, so that no
//! completion can race the marking. Completing it then needs
//! `WdfRequestUnmarkCancelable`, which returns STATUS_CANCELLED when
//! EvtRequestCancel has been or is about to be called; from then on the
//! request must be completed exactly once, and not before EvtRequestCancel
//! ran (Microsoft Learn, WdfRequestUnmarkCancelable / EvtRequestCancel).
//! The cancel routine asks the adapter to cancel the request
//! (`Adapter::cancel`, which completes it if it is parked). The two paths
//! meet in a per-request flag byte (request context [`REQUEST_TYPE`]):
//! - `IN_CANCEL`: EvtRequestCancel has started; a completion seeing it
//!   completes without unmarking (allowed once the cancel routine was
//!   called).
//! - `CANCEL_LOOKED` / `GAVE_UP`: the cancel routine did not find the
//!   request parked, and a completer's unmark came back STATUS_CANCELLED.
//!   Whichever of the two sets its bit second completes the request.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU8, Ordering};

use wdk_sys::{WDFQUEUE, WDFREQUEST, call_unsafe_wdf_function_binding};

use crate::control::device::{INTERFACE_VERSION, Outcome};
use crate::control::request::{Request, RequestId};
use crate::ntstatus::NtStatus;
use crate::os::windows::adapter::{DeviceContext, REQUEST_TYPE, context_of, device_context};
use crate::uapi::codes::Ioctl;
use crate::uapi::decode::encode_version;

/// Bytes of IOCTL input copied before the output is written (METHOD_BUFFERED
/// uses one system buffer for both). At least the largest input structure
/// (OVPN_CRYPTO_DATA_V2, 104 bytes; interface reference, "Structures"); the
/// device reads only the prefix its structure needs, so a longer input
/// loses nothing.
pub const IOCTL_INPUT_COPY: usize = 256;

const IN_CANCEL: u8 = 0x01;
const CANCEL_LOOKED: u8 = 0x02;
const GAVE_UP: u8 = 0x04;
const MARKED: u8 = 0x08;

/// A WDFREQUEST the adapter was given.
pub struct WdfRequest {
    handle: WDFREQUEST,
    output_len: usize,
}

// SAFETY: a WDFREQUEST may be completed from any thread at IRQL <=
// DISPATCH_LEVEL; this value is its only owner (moved, never copied).
unsafe impl Send for WdfRequest {}

/// The flag byte of a request (its REQUEST_TYPE context).
///
/// # Safety
/// `request` is live (not completed) and was delivered to this driver's
/// queues (WdfDeviceInitSetRequestAttributes gave it the context).
unsafe fn flags<'a>(request: WDFREQUEST) -> Option<&'a AtomicU8> {
    // SAFETY: the caller's contract; the context is one byte, zeroed by WDF
    // and reset on arrival, accessed only atomically.
    unsafe { context_of(request.cast(), &REQUEST_TYPE).cast::<AtomicU8>().as_ref() }
}

/// `WdfRequestCompleteWithInformation`.
///
/// # Safety
/// `request` is live and this is its one completion.
unsafe fn finish(request: WDFREQUEST, status: NtStatus, information: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        call_unsafe_wdf_function_binding!(WdfRequestCompleteWithInformation, request, status.0, information as u64)
    }
}

/// EvtRequestCancel: see the module comment.
unsafe extern "C" fn evt_request_cancel(request: WDFREQUEST) {
    // SAFETY: WDF passes a live, cancelled request of our queue.
    let Some(flags) = (unsafe { flags(request) }) else { return };
    flags.fetch_or(IN_CANCEL, Ordering::AcqRel);
    // SAFETY: the request is live (it is being cancelled, not completed).
    let queue = unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetIoQueue, request) };
    // SAFETY: the queue of a live request is live, and so is its device.
    let found = match unsafe { queue_context(queue) } {
        Some(context) => context.adapter().cancel(RequestId(request as usize as u64)),
        None => false,
    };
    if !found && flags.fetch_or(CANCEL_LOOKED, Ordering::AcqRel) & GAVE_UP != 0 {
        // SAFETY: the completer gave the request up to us: this is its one
        // completion, after EvtRequestCancel was called (we are in it).
        unsafe { finish(request, NtStatus::CANCELLED, 0) };
    }
}

impl WdfRequest {
    /// A request as it arrives: its flags reset.
    ///
    /// # Safety
    /// `handle` is a request just delivered to one of this driver's queue
    /// callbacks.
    unsafe fn arrive(handle: WDFREQUEST, output_len: usize) -> Self {
        // SAFETY: the caller's contract.
        if let Some(f) = unsafe { flags(handle) } {
            f.store(0, Ordering::Release);
        }
        Self { handle, output_len }
    }

    /// `WdfRequestMarkCancelableEx` with [`evt_request_cancel`]. Gives the
    /// request back in `Err` when it was already cancelled (and must be
    /// completed with STATUS_CANCELLED at once).
    fn mark_cancelable(self) -> Result<Self, Self> {
        // SAFETY: live request owned by this value, not yet marked.
        let status = unsafe {
            call_unsafe_wdf_function_binding!(WdfRequestMarkCancelableEx, self.handle, Some(evt_request_cancel))
        };
        if status < 0 {
            return Err(self);
        }
        // SAFETY: live request (as above).
        if let Some(f) = unsafe { flags(self.handle) } {
            f.fetch_or(MARKED, Ordering::AcqRel);
        }
        Ok(self)
    }

    /// Completes with `status` and Information = `information` (the output
    /// buffer already holds that many bytes), through the cancel handshake.
    pub fn complete_with_information(self, status: NtStatus, information: usize) {
        // SAFETY: this value owns the live request.
        let Some(flags) = (unsafe { flags(self.handle) }) else {
            // SAFETY: as above; no context means never marked cancelable.
            unsafe { finish(self.handle, status, information) };
            return;
        };
        let f = flags.load(Ordering::Acquire);
        if f & MARKED == 0 || f & IN_CANCEL != 0 {
            // SAFETY: not cancelable, or EvtRequestCancel was called: the
            // request may be completed directly, and this is its completion
            // (the adapter hands each request to one completer).
            unsafe { finish(self.handle, status, information) };
            return;
        }
        // SAFETY: a marked, live request owned by this value.
        let unmarked = unsafe { call_unsafe_wdf_function_binding!(WdfRequestUnmarkCancelable, self.handle) };
        if unmarked != NtStatus::CANCELLED.0 {
            // SAFETY: unmarked: no cancel routine will run; one completion.
            unsafe { finish(self.handle, status, information) };
        } else if flags.fetch_or(GAVE_UP, Ordering::AcqRel) & CANCEL_LOOKED != 0 {
            // SAFETY: the cancel routine ran and left the request to us.
            unsafe { finish(self.handle, status, information) };
        }
    }

    /// Completes a request that was never marked cancelable.
    fn finish_now(self, status: NtStatus) {
        self.finish_with(status, 0);
    }

    /// As [`Self::finish_now`], with Information.
    fn finish_with(self, status: NtStatus, information: usize) {
        // SAFETY: this value owns the live, unmarked request.
        unsafe { finish(self.handle, status, information) };
    }
}

impl Request for WdfRequest {
    fn id(&self) -> RequestId {
        RequestId(self.handle as usize as u64)
    }

    fn output_len(&self) -> usize {
        self.output_len
    }

    fn complete(self, status: NtStatus, output: &[u8]) {
        let mut status = status;
        let mut information = 0;
        if !output.is_empty() {
            let mut buffer: *mut c_void = ptr::null_mut();
            let mut length: usize = 0;
            // SAFETY: live request owned by this value; METHOD_BUFFERED and
            // buffered reads: the system buffer, valid until completion.
            let got = unsafe {
                call_unsafe_wdf_function_binding!(
                    WdfRequestRetrieveOutputBuffer,
                    self.handle,
                    output.len(),
                    &mut buffer,
                    &mut length
                )
            };
            if got >= 0 && !buffer.is_null() && length >= output.len() {
                // SAFETY: `buffer` holds at least output.len() writable bytes
                // (checked); the adapter no longer holds a slice of it (it
                // completes only after ioctl() returned or from elsewhere).
                unsafe { ptr::copy_nonoverlapping(output.as_ptr(), buffer.cast::<u8>(), output.len()) };
                information = output.len();
            } else {
                status = NtStatus::BUFFER_TOO_SMALL;
            }
        }
        self.complete_with_information(status, information);
    }
}

/// The adapter device of a queue.
///
/// # Safety
/// `queue` is a live queue of an adapter device.
unsafe fn queue_context<'a>(queue: WDFQUEUE) -> Option<&'a DeviceContext> {
    // SAFETY: live queue (contract).
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfIoQueueGetDevice, queue) };
    // SAFETY: the device of a live queue is live; adapter devices carry the
    // slot context.
    unsafe { device_context(device.cast()) }
}

/// The input buffer of a request, or an empty slice.
///
/// # Safety
/// `request` is live and stays so while the slice is used.
unsafe fn input_buffer<'a>(request: WDFREQUEST, length: usize) -> Result<&'a [u8], NtStatus> {
    if length == 0 {
        return Ok(&[]);
    }
    let mut buffer: *mut c_void = ptr::null_mut();
    let mut got: usize = 0;
    // SAFETY: live request (contract).
    let status =
        unsafe { call_unsafe_wdf_function_binding!(WdfRequestRetrieveInputBuffer, request, 1, &mut buffer, &mut got) };
    if status < 0 || buffer.is_null() {
        return Err(NtStatus(status));
    }
    // SAFETY: WDF returned `got` readable bytes at `buffer`, valid until the
    // request completes (contract).
    Ok(unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), got) })
}

/// The output buffer of a request, or an empty slice.
///
/// # Safety
/// As for [`input_buffer`]; no other slice of the buffer is live.
unsafe fn output_buffer<'a>(request: WDFREQUEST, length: usize) -> Result<&'a mut [u8], NtStatus> {
    if length == 0 {
        return Ok(&mut []);
    }
    let mut buffer: *mut c_void = ptr::null_mut();
    let mut got: usize = 0;
    // SAFETY: live request (contract).
    let status =
        unsafe { call_unsafe_wdf_function_binding!(WdfRequestRetrieveOutputBuffer, request, 1, &mut buffer, &mut got) };
    if status < 0 || buffer.is_null() {
        return Err(NtStatus(status));
    }
    // SAFETY: as for input_buffer, writable, and not aliased (contract).
    Ok(unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), got) })
}

/// EvtIoDeviceControl of an adapter device (PASSIVE_LEVEL: the queue's
/// execution level).
pub unsafe extern "C" fn evt_io_device_control(
    queue: WDFQUEUE,
    request: WDFREQUEST,
    output_len: usize,
    input_len: usize,
    code: u32,
) {
    // SAFETY: WDF delivers a live request to this callback.
    let req = unsafe { WdfRequest::arrive(request, output_len) };
    // SAFETY: the queue of the running callback.
    let Some(context) = (unsafe { queue_context(queue) }) else {
        req.finish_now(NtStatus::INVALID_DEVICE_STATE);
        return;
    };
    // METHOD_BUFFERED: input and output share the system buffer, so the
    // input is copied before the device writes any output.
    let mut copy = [0u8; IOCTL_INPUT_COPY];
    // SAFETY: the request is live until completed below or by the adapter.
    let input_len = match unsafe { input_buffer(request, input_len) } {
        Ok(input) => {
            let n = input.len().min(IOCTL_INPUT_COPY);
            copy[..n].copy_from_slice(&input[..n]);
            n
        }
        Err(status) => return req.finish_now(status),
    };
    // SAFETY: as above; the input slice is dead (copied), so the output is
    // the only live view of the system buffer.
    let output = match unsafe { output_buffer(request, output_len) } {
        Ok(output) => output,
        Err(status) => return req.finish_now(status),
    };
    let req = match req.mark_cancelable() {
        Ok(req) => req,
        Err(req) => return req.finish_now(NtStatus::CANCELLED),
    };
    match context.adapter().ioctl(code, &copy[..input_len], output, req) {
        Outcome::Complete { request, status, information } => request.complete_with_information(status, information),
        Outcome::Parked => {}
    }
}

/// EvtIoRead: the next control packet (the device parks the read until
/// one arrives).
pub unsafe extern "C" fn evt_io_read(queue: WDFQUEUE, request: WDFREQUEST, length: usize) {
    // SAFETY: WDF delivers a live request to this callback.
    let req = unsafe { WdfRequest::arrive(request, length) };
    // SAFETY: the queue of the running callback.
    let Some(context) = (unsafe { queue_context(queue) }) else {
        return req.finish_now(NtStatus::INVALID_DEVICE_STATE);
    };
    match req.mark_cancelable() {
        // The device completes the read itself, now or later.
        Ok(req) => {
            let _ = context.adapter().read(req);
        }
        Err(req) => req.finish_now(NtStatus::CANCELLED),
    }
}

/// EvtIoWrite: one control packet to send; completes at once.
pub unsafe extern "C" fn evt_io_write(queue: WDFQUEUE, request: WDFREQUEST, length: usize) {
    // SAFETY: WDF delivers a live request to this callback.
    let req = unsafe { WdfRequest::arrive(request, 0) };
    // SAFETY: the queue of the running callback.
    let Some(context) = (unsafe { queue_context(queue) }) else {
        return req.finish_now(NtStatus::INVALID_DEVICE_STATE);
    };
    // SAFETY: live until completed just below.
    let result = unsafe { input_buffer(request, length) }.and_then(|input| context.adapter().write(input));
    match result {
        Ok(written) => req.finish_with(NtStatus::SUCCESS, written),
        Err(status) => req.finish_now(status),
    }
}

/// EvtIoDeviceControl of the shared `\Device\ovpn-dco-ver` control device:
/// GET_VERSION only, every other code STATUS_INVALID_DEVICE_REQUEST
/// (interface reference, "Names and discovery").
pub unsafe extern "C" fn evt_control_device_control(
    _queue: WDFQUEUE,
    request: WDFREQUEST,
    output_len: usize,
    _input_len: usize,
    code: u32,
) {
    // SAFETY: WDF delivers a live request to this callback.
    let req = unsafe { WdfRequest::arrive(request, output_len) };
    if !matches!(Ioctl::from_code(code), Some(Ioctl::GetVersion)) {
        return req.finish_now(NtStatus::INVALID_DEVICE_REQUEST);
    }
    // SAFETY: live request; no other view of its buffer.
    match unsafe { output_buffer(request, output_len) } {
        Ok(output) => match encode_version(output, &INTERFACE_VERSION) {
            Ok(n) => req.finish_with(NtStatus::SUCCESS, n),
            Err(_) => req.finish_now(NtStatus::BUFFER_TOO_SMALL),
        },
        Err(_) => req.finish_now(NtStatus::BUFFER_TOO_SMALL),
    }
}
