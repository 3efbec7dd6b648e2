//! The send side of a modelled socket: the transport's slot buffers (boxed
//! once, stable addresses, as the kernel's buffer + MDL + IRP per slot) and
//! the engine that puts accepted sends on the wire and reports exactly one
//! completion for each, from the socket's own thread (or the caller's, in
//! `Inline` mode, or the test's, in pump mode).
//!
//! The verifier side: a send on a busy slot, a slot out of range, asking for
//! a slot's buffer while it is in flight, and bytes that changed between the
//! send and its completion (a fingerprint taken at both ends).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::ptr::NonNull;
use std::sync::Mutex;

use super::super::wake::Wakeup;
use std::time::{Duration, Instant};

use super::stats::{SocketCounters, bump};
use super::verifier::{SocketId, Violation, WskVerifier, lock};
use crate::ntstatus::NtStatus;
use crate::os::{SEND_SLOT_SIZE, SendSlot, SocketEvents};

/// When completions are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionMode {
    /// On the sending thread, before `send` returns.
    Inline,
    /// From the socket's thread right after the wire write.
    Immediate,
    /// From the socket's thread, at least this long after the wire write
    /// (in pump mode: on the next `pump` call).
    Delayed(Duration),
    /// From the socket's thread, once this many are waiting or the socket
    /// went idle (in pump mode: at the end of each round).
    Batched(usize),
}

/// Which stream sends the model cuts short (datagram sends are whole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartialSends {
    Never,
    /// Every n-th send (n >= 1) of two bytes or more.
    EveryNth(u32),
    /// Each send with this probability (parts per million).
    Random {
        ppm: u32,
    },
}

/// Send-side shape of a socket.
#[derive(Clone, Copy, Debug)]
pub struct SendConfig {
    pub slots: u16,
    pub completion: CompletionMode,
    pub partial: PartialSends,
    /// Fingerprint slot bytes at send and completion (off only for benchmarks).
    pub verify_buffers: bool,
}

impl Default for SendConfig {
    fn default() -> Self {
        Self { slots: 64, completion: CompletionMode::Immediate, partial: PartialSends::Never, verify_buffers: true }
    }
}

/// Which request a send belongs to, for its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// `WskSendTo`/`WskSend`: completed on its own.
    Single,
    /// The first of a `WskSendMessages` batch of this many datagrams, which
    /// follow it in order and complete with it, once.
    BatchHead(u16),
    /// A later datagram of the batch before it.
    BatchMember,
}

impl Request {
    /// The datagrams completed together with this one: its whole batch if
    /// it heads one, else itself.
    fn datagrams(self) -> usize {
        match self {
            Request::BatchHead(n) => usize::from(n).max(1),
            _ => 1,
        }
    }
}

/// An accepted send on its way to the wire.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outgoing {
    pub slot: SendSlot,
    /// The slot's bytes (owned by the transport until completion).
    pub data: NonNull<u8>,
    pub len: usize,
    pub remote: SocketAddr,
    pub request: Request,
}

// SAFETY: `data` points into a slot buffer the transport owns while the send
// is in flight; whichever thread carries the Outgoing only reads it.
unsafe impl Send for Outgoing {}

impl Outgoing {
    /// The bytes to send.
    ///
    /// # Safety
    /// The send is in flight (not yet completed), so the slot buffer is the
    /// transport's and the driver does not write it.
    pub unsafe fn bytes(&self) -> &[u8] {
        // SAFETY: the caller's guarantee; `len` <= SEND_SLOT_SIZE was checked
        // when the send was accepted.
        unsafe { core::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }
}

/// What the wire did with one send: status and bytes it took.
pub(crate) type WireResult = (NtStatus, usize);

/// A socket's wire: real socket or in-memory network.
pub(crate) trait Wire: Send + Sync {
    /// Puts each send on the wire, writing its result at the same index.
    fn transmit(&self, batch: &[Outgoing], results: &mut [WireResult]);
}

#[derive(Clone, Copy, Debug)]
enum SlotState {
    Idle,
    InFlight { len: usize, fingerprint: u64 },
}

struct SlotTable {
    slots: Vec<SlotState>,
    in_flight: usize,
    closed: bool,
}

/// A cheap fingerprint of slot bytes: detects writes, not adversaries.
/// Four independent lanes (each step a bijection of the lane, so a change
/// in one word always changes its lane) keep the multiplier pipeline busy:
/// it runs on every send and completion.
fn fingerprint(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0100_0000_01b3;
    let seed = 0xcbf2_9ce4_8422_2325_u64 ^ bytes.len() as u64;
    let mut lanes = [seed, seed.rotate_left(16), seed.rotate_left(32), seed.rotate_left(48)];
    let mut blocks = bytes.chunks_exact(32);
    for b in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(b.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            *lane = (*lane ^ u64::from_le_bytes(word)).wrapping_mul(PRIME).rotate_left(29);
        }
    }
    let mut h = lanes.iter().enumerate().fold(0u64, |h, (i, l)| (h ^ l.rotate_left(i as u32 * 8)).wrapping_mul(PRIME));
    for &b in blocks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    h
}

/// The slot buffers and their states.
pub(crate) struct SendSlots {
    socket: SocketId,
    verifier: Arc<WskVerifier>,
    counters: Arc<SocketCounters>,
    /// `count + 1` buffers; the last is scratch handed out for a slot out of
    /// range (already reported) so a buggy caller writes harmlessly.
    buffers: NonNull<[u8; SEND_SLOT_SIZE]>,
    count: u16,
    verify: bool,
    table: Mutex<SlotTable>,
}

// SAFETY: slot buffers are written only by the slot's owner (the driver
// while idle, nobody while in flight: the wire only reads), tracked in
// `table` under a mutex.
unsafe impl Send for SendSlots {}
// SAFETY: as for Send.
unsafe impl Sync for SendSlots {}

impl SendSlots {
    pub fn new(
        socket: SocketId,
        config: &SendConfig,
        verifier: Arc<WskVerifier>,
        counters: Arc<SocketCounters>,
    ) -> Self {
        let count = config.slots.clamp(1, u16::MAX - 1);
        let buffers: Box<[[u8; SEND_SLOT_SIZE]]> = alloc::vec![[0u8; SEND_SLOT_SIZE]; usize::from(count) + 1].into();
        Self {
            socket,
            verifier,
            counters,
            buffers: NonNull::from(Box::leak(buffers)).cast(),
            count,
            verify: config.verify_buffers,
            table: Mutex::new(SlotTable {
                slots: alloc::vec![SlotState::Idle; usize::from(count)],
                in_flight: 0,
                closed: false,
            }),
        }
    }

    pub fn count(&self) -> u16 {
        self.count
    }

    fn raw(&self, index: u16) -> NonNull<[u8; SEND_SLOT_SIZE]> {
        // In bounds: index <= count, and there are count + 1 buffers.
        // SAFETY: the offset stays inside the leaked slice.
        unsafe { self.buffers.add(usize::from(index.min(self.count))) }
    }

    /// `Transport::slot_buffer`.
    pub fn buffer(&self, slot: SendSlot) -> NonNull<[u8; SEND_SLOT_SIZE]> {
        let t = lock(&self.table);
        match t.slots.get(usize::from(slot.0)) {
            None => {
                self.verifier.report(Violation::SlotOutOfRange { socket: self.socket, slot: slot.0 });
                self.raw(self.count)
            }
            Some(SlotState::InFlight { .. }) => {
                self.verifier.report(Violation::SlotBufferWhileInFlight { socket: self.socket, slot: slot.0 });
                self.raw(slot.0)
            }
            Some(SlotState::Idle) => self.raw(slot.0),
        }
    }

    /// Takes `slot` in flight for a send of `len` bytes.
    pub fn accept(&self, slot: SendSlot, len: usize, remote: SocketAddr) -> Result<Outgoing, NtStatus> {
        let mut t = lock(&self.table);
        self.check(&t, slot, len)?;
        let out = self.take_in_flight(&mut t, slot, len, remote, Request::Single);
        bump(&self.counters.sends, 1);
        Ok(out)
    }

    /// Takes every slot of `batch` in flight for one `WskSendMessages`, or
    /// none: a refused batch leaves every slot the caller's.
    pub fn accept_batch(
        &self,
        batch: &[(SendSlot, usize)],
        remote: SocketAddr,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), NtStatus> {
        let socket = self.socket;
        let count = match u16::try_from(batch.len()) {
            Ok(n) if n > 0 && batch.len() <= crate::os::SEND_BATCH_MAX => n,
            _ => {
                self.verifier.report(Violation::BadSendBatch { socket, len: batch.len() });
                return Err(NtStatus::INVALID_PARAMETER);
            }
        };
        let mut t = lock(&self.table);
        for (k, &(slot, len)) in batch.iter().enumerate() {
            self.check(&t, slot, len)?;
            if batch[..k].iter().any(|&(s, _)| s == slot) {
                self.verifier.report(Violation::SendOnBusySlot { socket, slot: slot.0 });
                return Err(NtStatus::INVALID_DEVICE_STATE);
            }
        }
        for (k, &(slot, len)) in batch.iter().enumerate() {
            let request = if k == 0 { Request::BatchHead(count) } else { Request::BatchMember };
            out.push(self.take_in_flight(&mut t, slot, len, remote, request));
        }
        bump(&self.counters.sends, 1);
        Ok(())
    }

    /// Whether `slot` may carry a send of `len` bytes now (a violation is
    /// reported if not).
    fn check(&self, t: &SlotTable, slot: SendSlot, len: usize) -> Result<(), NtStatus> {
        let socket = self.socket;
        if t.closed {
            self.verifier.report(Violation::SendAfterClose { socket, slot: slot.0 });
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        if len > SEND_SLOT_SIZE {
            self.verifier.report(Violation::SendTooLong { socket, slot: slot.0, len });
            return Err(NtStatus::INVALID_PARAMETER);
        }
        match t.slots.get(usize::from(slot.0)) {
            None => {
                self.verifier.report(Violation::SlotOutOfRange { socket, slot: slot.0 });
                Err(NtStatus::INVALID_PARAMETER)
            }
            Some(SlotState::InFlight { .. }) => {
                self.verifier.report(Violation::SendOnBusySlot { socket, slot: slot.0 });
                Err(NtStatus::INVALID_DEVICE_STATE)
            }
            Some(SlotState::Idle) => Ok(()),
        }
    }

    /// Marks a checked slot in flight (fingerprinting its bytes).
    fn take_in_flight(
        &self,
        t: &mut SlotTable,
        slot: SendSlot,
        len: usize,
        remote: SocketAddr,
        request: Request,
    ) -> Outgoing {
        let data = self.raw(slot.0).cast::<u8>();
        let fp = if self.verify {
            // SAFETY: the slot is idle (checked), so the caller owns it and is
            // not writing it during its own send call; len <= SEND_SLOT_SIZE.
            fingerprint(unsafe { core::slice::from_raw_parts(data.as_ptr(), len) })
        } else {
            0
        };
        if let Some(state) = t.slots.get_mut(usize::from(slot.0)) {
            *state = SlotState::InFlight { len, fingerprint: fp };
            t.in_flight += 1;
        }
        Outgoing { slot, data, len, remote, request }
    }

    /// Gives `slot` back to the driver (just before its completion is reported).
    pub fn finish(&self, slot: SendSlot) {
        let mut t = lock(&self.table);
        let Some(state) = t.slots.get_mut(usize::from(slot.0)) else { return };
        if let SlotState::InFlight { len, fingerprint: fp } = *state {
            if self.verify {
                let data = self.raw(slot.0).cast::<u8>();
                // SAFETY: the slot is still in flight, the transport's; a
                // driver writing it now is the violation this detects.
                let now = fingerprint(unsafe { core::slice::from_raw_parts(data.as_ptr(), len) });
                if now != fp {
                    self.verifier.report(Violation::SlotWrittenWhileInFlight { socket: self.socket, slot: slot.0 });
                }
            }
            *state = SlotState::Idle;
            t.in_flight -= 1;
        }
    }

    pub fn in_flight(&self) -> usize {
        lock(&self.table).in_flight
    }

    /// WskCloseSocket: refuses sends from now on; reports sends in flight and
    /// a completion count that does not match the accepted sends.
    pub fn close(&self) {
        let in_flight = {
            let mut t = lock(&self.table);
            t.closed = true;
            t.in_flight
        };
        if in_flight > 0 {
            self.verifier.report(Violation::SendsInFlightAtClose { socket: self.socket, in_flight });
        } else {
            let s = self.counters.snapshot();
            if s.sends != s.send_completions {
                self.verifier.report(Violation::CompletionCountMismatch {
                    socket: self.socket,
                    accepted: s.sends,
                    completed: s.send_completions,
                });
            }
        }
    }
}

impl Drop for SendSlots {
    fn drop(&mut self) {
        let in_flight = self.table.get_mut().map(|t| t.in_flight).unwrap_or(1);
        if in_flight > 0 {
            return; // a wire thread may still read them: keep the memory
        }
        // SAFETY: the slice came from Box::leak in `new` with this length and
        // no send is in flight, so nothing reads it any more.
        unsafe {
            drop(Box::from_raw(core::ptr::slice_from_raw_parts_mut(
                self.buffers.as_ptr(),
                usize::from(self.count) + 1,
            )));
        }
    }
}

struct Done {
    slot: SendSlot,
    request: Request,
    result: WireResult,
    asked: usize,
    due: Instant,
    round: u64,
}

struct EngineState {
    pending: VecDeque<Outgoing>,
    done: VecDeque<Done>,
    stop: bool,
    round: u64,
}

/// What one round works on, kept between rounds (no allocation per round).
#[derive(Default)]
struct RoundBuffers {
    batch: Vec<Outgoing>,
    results: Vec<WireResult>,
    deliver: Vec<Done>,
}

/// Accepted sends → wire → completions, for one socket.
pub(crate) struct TxEngine {
    pub slots: SendSlots,
    config: SendConfig,
    counters: Arc<SocketCounters>,
    events: Arc<dyn SocketEvents>,
    state: Mutex<EngineState>,
    wake: Wakeup,
    /// Taken by the round in progress; a concurrent round (pump and thread
    /// both) starts with empty ones.
    buffers: Mutex<Option<RoundBuffers>>,
}

/// How long a batched-completion socket waits for more before flushing.
const BATCH_IDLE: Duration = Duration::from_millis(1);

/// Longest a socket thread sleeps before looking at its stop flag again.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

impl TxEngine {
    pub fn new(
        slots: SendSlots,
        config: SendConfig,
        counters: Arc<SocketCounters>,
        events: Arc<dyn SocketEvents>,
    ) -> Self {
        Self {
            slots,
            config,
            counters,
            events,
            state: Mutex::new(EngineState { pending: VecDeque::new(), done: VecDeque::new(), stop: false, round: 0 }),
            wake: Wakeup::new(),
            buffers: Mutex::new(Some(RoundBuffers::default())),
        }
    }

    /// `Transport::send`.
    pub fn send(&self, wire: &dyn Wire, slot: SendSlot, len: usize, remote: SocketAddr) -> Result<(), NtStatus> {
        let out = self.slots.accept(slot, len, remote)?;
        self.enqueue(wire, &[out]);
        Ok(())
    }

    /// `Transport::send_batch` (`WskSendMessages`): the datagrams go on the
    /// wire like single sends, and complete together, once.
    pub fn send_batch(&self, wire: &dyn Wire, batch: &[(SendSlot, usize)], remote: SocketAddr) -> Result<(), NtStatus> {
        let mut outs = Vec::with_capacity(batch.len());
        self.slots.accept_batch(batch, remote, &mut outs)?;
        self.enqueue(wire, &outs);
        Ok(())
    }

    /// Accepted sends of one request: on the wire and completed now
    /// (`Inline`), or queued for the socket's thread.
    fn enqueue(&self, wire: &dyn Wire, outs: &[Outgoing]) {
        if self.config.completion == CompletionMode::Inline {
            let mut results = alloc::vec![(NtStatus::SUCCESS, 0usize); outs.len()];
            wire.transmit(outs, &mut results);
            let done: Vec<Done> = outs
                .iter()
                .zip(results)
                .map(|(o, result)| Done {
                    slot: o.slot,
                    request: o.request,
                    result,
                    asked: o.len,
                    due: Instant::now(),
                    round: 0,
                })
                .collect();
            self.complete_request(&done);
        } else {
            let first = {
                let mut st = lock(&self.state);
                let was_empty = st.pending.is_empty();
                st.pending.extend(outs.iter().copied());
                was_empty
            };
            // Only the send that finds the queue empty wakes the socket
            // thread: it takes everything queued until it gets there.
            if first {
                self.wake.notify_all();
            }
        }
    }

    /// Completes one request: a single send, or a batch head followed by
    /// its members (all of `done`).
    fn complete_request(&self, done: &[Done]) {
        let Some(head) = done.first() else { return };
        if head.request == Request::Single {
            self.complete(head.slot, head.result, head.asked);
            return;
        }
        let mut status = NtStatus::SUCCESS;
        let mut bytes = 0usize;
        for d in done {
            self.slots.finish(d.slot);
            let (s, b) = d.result;
            if s.is_success() {
                bytes += b;
            } else if status.is_success() {
                status = s;
            }
        }
        bump(&self.counters.send_completions, 1);
        if status.is_success() {
            bump(&self.counters.tx_wire_bytes, bytes as u64);
        } else {
            bump(&self.counters.send_errors, 1);
        }
        self.events.send_batch_complete(head.slot, status, bytes);
    }

    fn complete(&self, slot: SendSlot, (status, bytes): WireResult, asked: usize) {
        self.slots.finish(slot);
        bump(&self.counters.send_completions, 1);
        if status.is_success() {
            bump(&self.counters.tx_wire_bytes, bytes as u64);
            if bytes < asked {
                bump(&self.counters.partial_sends, 1);
            }
        } else {
            bump(&self.counters.send_errors, 1);
        }
        self.events.send_complete(slot, status, bytes);
    }

    /// One round: transmit everything pending, then report the completions
    /// that are due. `pump` selects the deterministic rules; `idle` says the
    /// socket had nothing to do for a while (flushes a batch). Returns how
    /// many sends and completions it handled.
    pub fn round(&self, wire: &dyn Wire, pump: bool, idle: bool) -> usize {
        let mut buffers = lock(&self.buffers).take().unwrap_or_default();
        let RoundBuffers { batch, results, deliver } = &mut buffers;
        batch.clear();
        deliver.clear();
        {
            let mut st = lock(&self.state);
            st.round += 1;
            batch.extend(st.pending.drain(..));
        }
        results.clear();
        results.resize(batch.len(), (NtStatus::SUCCESS, 0usize));
        if !batch.is_empty() {
            wire.transmit(batch, results);
        }
        let now = Instant::now();
        {
            let mut st = lock(&self.state);
            let delay = match self.config.completion {
                CompletionMode::Delayed(d) => d,
                _ => Duration::ZERO,
            };
            let round = st.round;
            for (o, r) in batch.iter().zip(results.iter()) {
                st.done.push_back(Done {
                    slot: o.slot,
                    request: o.request,
                    result: *r,
                    asked: o.len,
                    due: now + delay,
                    round,
                });
            }
            let flush = match self.config.completion {
                CompletionMode::Batched(n) => pump || idle || st.done.len() >= n.max(1),
                _ => true,
            };
            if flush {
                let delayed = matches!(self.config.completion, CompletionMode::Delayed(_));
                while let Some(d) = st.done.front() {
                    let due = if pump { !delayed || d.round < round } else { d.due <= now };
                    if !due {
                        break;
                    }
                    // A batch's datagrams were queued together, in order,
                    // and transmitted in the same round: they are due with
                    // their head and delivered with it.
                    let n = d.request.datagrams().min(st.done.len());
                    deliver.extend(st.done.drain(..n));
                }
            }
        }
        let handled = batch.len() + deliver.len();
        let mut at = 0;
        while let Some(d) = deliver.get(at) {
            let end = (at + d.request.datagrams()).min(deliver.len());
            self.complete_request(&deliver[at..end]);
            at = end;
        }
        deliver.clear();
        *lock(&self.buffers) = Some(buffers);
        handled
    }

    /// The socket thread's loop: rounds until `stop`.
    pub fn run(&self, wire: &dyn Wire) {
        loop {
            let mut idle = false;
            {
                let mut st = lock(&self.state);
                loop {
                    if st.stop {
                        return;
                    }
                    if !st.pending.is_empty() {
                        break;
                    }
                    let wait = match (st.done.front(), self.config.completion) {
                        (None, _) => POLL_INTERVAL,
                        (Some(_), CompletionMode::Batched(_)) => BATCH_IDLE,
                        (Some(d), _) => d.due.saturating_duration_since(Instant::now()),
                    };
                    if st.done.front().is_some() && wait.is_zero() {
                        idle = true;
                        break;
                    }
                    let (next, timeout) = self.wake.wait_timeout(st, wait).unwrap_or_else(|p| p.into_inner());
                    st = next;
                    if timeout.timed_out() && !st.done.is_empty() {
                        idle = true;
                        break;
                    }
                }
            }
            self.round(wire, false, idle);
        }
    }

    /// Stops `run`; undelivered completions are dropped (events stop at close).
    pub fn stop(&self) {
        lock(&self.state).stop = true;
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_sees_a_one_byte_change_anywhere() {
        let mut b = [7u8; 37];
        let f = fingerprint(&b);
        for i in 0..b.len() {
            b[i] ^= 1;
            assert_ne!(fingerprint(&b), f, "byte {i}");
            b[i] ^= 1;
        }
        assert_eq!(fingerprint(&b), f);
    }
}
