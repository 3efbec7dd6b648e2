//! Requests the OS hands the device and the device may park: ReadFile,
//! NOTIFY_EVENT, and NEW_PEER / MP_START_VPN while their socket opens.
//!
//! A parked request is owned by the device until it completes it, exactly
//! once: by the event it waits for, by a cancellation from the OS
//! ([`crate::control::device::Device::cancel`], user mode's `CancelIoEx`),
//! or by teardown. The device never holds a request it did not park.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::ntstatus::NtStatus;

/// Identifies a request for cancellation. In the kernel the WDFREQUEST
/// handle value; in tests any unique number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// A request the OS is waiting on (a WDFREQUEST in the kernel).
pub trait Request {
    fn id(&self) -> RequestId;

    /// Size of the request's output buffer.
    fn output_len(&self) -> usize;

    /// Copies `output` into the request's output buffer and completes the
    /// request with `status` and Information = `output.len()`. `output` is
    /// never longer than [`Request::output_len`].
    fn complete(self, status: NtStatus, output: &[u8]);
}

/// Why a request could not be parked; gives the request back.
pub struct QueueFull<R>(pub R);

impl<R> core::fmt::Debug for QueueFull<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("QueueFull")
    }
}

/// A bounded FIFO of parked requests. Room for all of them is reserved when
/// the queue is made, so parking never allocates.
pub struct Parked<R> {
    items: VecDeque<R>,
    max: usize,
}

impl<R: Request> Parked<R> {
    pub fn new(max: usize) -> Self {
        Self { items: VecDeque::with_capacity(max), max }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.items.len() >= self.max
    }

    pub fn park(&mut self, request: R) -> Result<(), QueueFull<R>> {
        if self.is_full() {
            return Err(QueueFull(request));
        }
        self.items.push_back(request);
        Ok(())
    }

    /// The oldest parked request.
    pub fn pop(&mut self) -> Option<R> {
        self.items.pop_front()
    }

    /// Takes out the request with `id`, wherever it waits.
    pub fn take(&mut self, id: RequestId) -> Option<R> {
        let at = self.items.iter().position(|r| r.id() == id)?;
        self.items.remove(at)
    }

    /// Completes every parked request with `status` and no output.
    pub fn complete_all(&mut self, status: NtStatus) {
        while let Some(r) = self.items.pop_front() {
            r.complete(status, &[]);
        }
    }

    pub fn ids(&self) -> Vec<RequestId> {
        self.items.iter().map(Request::id).collect()
    }
}
