//! Send: one pass from the OS's packet memory to the wire.
//!
//! `docs/datapath.md` ("TX ownership") is the contract:
//! 1. Advance posts packets from the packet ring's NextIndex: route by inner
//!    destination, take a send slot (none: stop, the packets stay posted for
//!    later: back-pressure), encrypt out of place from the fragment memory
//!    (read only) into the slot, with the packet's ring index in the slot's
//!    record. Consecutive packets to one remote go out together, up to
//!    `SEND_BATCH_MAX` per `Transport::send_batch` (WskSendMessages: one
//!    request and one completion for the run); a transport that cannot batch
//!    gets them one by one (`Transport::send`, WskSendTo).
//! 2. The completion sets each of its packets' Scratch bit (atomically: the
//!    driver owns the element, the poll thread may be reading its
//!    neighbours), frees the slots and notifies if armed, once per request.
//! 3. Advance drains in ring order: packet BeginIndex over leading done
//!    packets, fragment BeginIndex to the end of the last one's fragments.
//!
//! TCP: each datagram gets its 2-byte length in front, in the slot; sends go
//! out one at a time in submission order, so the stream stays ordered even
//! when a send completes partially and the rest is sent again.

use crate::os::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::ptr::NonNull;
use core::sync::atomic::AtomicUsize;

use super::pools::{IndexDeque, IndexPool};
use super::socket::{Link, LinkKind};
use super::stats::{DropReason, add, bump, bump_by};
use super::{
    KeyOf, Peers, SEND_SLOTS_CONTROL_RESERVE, SEND_SLOTS_CONTROL_SHARE, SEND_SLOTS_MAX, Shared, TX_MAX_FRAGMENTS,
    TX_PAYLOAD_BACKFILL, ip,
};
use crate::control::peers::Peer;
use crate::control::stats::DeviceStats;
use crate::netcx::extension::{Extension, NetFragmentVirtualAddress};
use crate::netcx::packet::NetPacket;
use crate::netcx::ring::{NetRing, NetRingCollection, QueueRings, advance_index, increment_index};
use crate::ntstatus::NtStatus;
use crate::os::sync::SpinLock;
use crate::os::{Os, PacketQueue, QueueExtensions, SEND_BATCH_MAX, SEND_SLOT_SIZE, SendSlot, Transport};
use crate::proto::keepalive::KEEPALIVE_PING;
use crate::proto::mss::{MssLimit, clamp_mss};
use crate::proto::tcp_frame::{LENGTH_PREFIX_LEN, length_prefix};

/// Why a control packet or keepalive was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxError {
    /// No socket is open.
    NoTransport,
    /// Every send slot is in flight.
    NoSendSlot,
    /// Empty, or longer than a send slot holds.
    BadLength,
    /// Keepalive: the peer has no primary key.
    NoKey,
    /// Keepalive: encryption failed (packet ids used up, backend error).
    Encrypt,
}

impl TxError {
    /// The status a WriteFile (control packet) completes with.
    pub const fn status(self) -> NtStatus {
        match self {
            TxError::NoTransport | TxError::NoKey => NtStatus::INVALID_DEVICE_STATE,
            TxError::NoSendSlot => NtStatus::INSUFFICIENT_RESOURCES,
            TxError::BadLength => NtStatus::INVALID_BUFFER_SIZE,
            TxError::Encrypt => NtStatus::UNSUCCESSFUL,
        }
    }
}

/// NET_PACKET's flag byte: offset 11, Ignore bit 0, Scratch bit 1
/// (wdk-abi-facts.md §2.1; `netcx::packet` asserts the same layout).
const PACKET_FLAGS_OFFSET: usize = 11;
const PACKET_IGNORE: u8 = 0x01;
const PACKET_SCRATCH: u8 = 0x02;
const _: () = assert!(PACKET_FLAGS_OFFSET < size_of::<NetPacket>());

/// Atomic access to the flag byte of the TX packet ring's elements.
struct PacketFlags {
    ring: NonNull<NetRing>,
    /// Loom can only watch atomics it made, not bytes of foreign memory:
    /// under `cfg(loom)` each element's flag byte is one of these, indexed
    /// like the ring (the models post no Ignore packets, whose bit the OS
    /// sets in the ring itself).
    #[cfg(all(loom, test))]
    model: Box<[AtomicU8]>,
}

// SAFETY: only the flag byte of elements the driver owns is reached, and only
// atomically ("TX packet fields other than Scratch are never written"); the
// ring lives until the queue is destroyed, which cannot happen while a send
// of one of its packets is in flight (the packet is not drained before its
// completion sets Scratch, and Stop waits for the rings to empty).
unsafe impl Send for PacketFlags {}
// SAFETY: as above; every access is an atomic operation.
unsafe impl Sync for PacketFlags {}

impl PacketFlags {
    fn new(ring: NonNull<NetRing>, _mask: u32) -> Self {
        Self {
            ring,
            #[cfg(all(loom, test))]
            model: (0..=_mask).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    #[cfg(all(loom, test))]
    fn byte(&self, index: u32) -> &AtomicU8 {
        let _ = self.ring;
        &self.model[index as usize % self.model.len()]
    }

    #[cfg(not(all(loom, test)))]
    fn byte(&self, index: u32) -> &AtomicU8 {
        // SAFETY: the ring's header is valid for the queue's life
        // (RingView::from_raw checked it), so element_at computes an
        // in-bounds element address; the flag byte is at offset 11 within
        // the 12-byte element.
        let at = unsafe { crate::netcx::ring::element_at(self.ring.as_ptr(), index).add(PACKET_FLAGS_OFFSET) };
        // SAFETY: the byte is live ring memory (above) that the driver owns
        // while the packet is in [BeginIndex, EndIndex); all concurrent
        // accesses to it (completion vs. drain) are atomic.
        unsafe { AtomicU8::from_ptr(at) }
    }

    /// Completion (or drop): the packet is done. Release: the completion's
    /// work happens before the drain that sees the bit.
    fn set_done(&self, index: u32) {
        self.byte(index).fetch_or(PACKET_SCRATCH, Ordering::Release);
    }

    /// Post: the bit is cleared only if set, so the usual case is a load,
    /// not a locked read-modify-write. Nothing else writes this byte now:
    /// the packet is not sent yet, so no completion for it can run.
    fn clear_done(&self, index: u32) {
        let byte = self.byte(index);
        if byte.load(Ordering::Relaxed) & PACKET_SCRATCH != 0 {
            byte.fetch_and(!PACKET_SCRATCH, Ordering::Relaxed);
        }
    }

    fn is_done(&self, index: u32) -> bool {
        self.byte(index).load(Ordering::Acquire) & (PACKET_SCRATCH | PACKET_IGNORE) != 0
    }
}

/// TX notification, adapter-wide (one TX queue at a time).
#[derive(Debug, Default)]
pub(crate) struct TxNotify {
    armed: AtomicBool,
    /// A send completed (or a slot freed) since the last Advance started.
    progress: AtomicBool,
}

impl TxNotify {
    /// Every write of both flags is a swap (a read-modify-write, AcqRel):
    /// of a completion's and an arming's swaps of `armed` the later reads
    /// the earlier, so either the completion sees the flag up and notifies,
    /// or the arming synchronises with the completion and sees its
    /// progress. No store-load (SeqCst) argument, which loom could not
    /// check.
    pub(crate) fn progressed<O: Os>(&self, os: &O) {
        self.progress.swap(true, Ordering::AcqRel);
        if self.armed.swap(false, Ordering::AcqRel) {
            os.notify_tx();
        }
    }

    fn arm<O: Os>(&self, enabled: bool, os: &O) {
        self.armed.swap(enabled, Ordering::AcqRel);
        if enabled && self.progress.load(Ordering::Acquire) && self.armed.swap(false, Ordering::AcqRel) {
            os.notify_tx();
        }
    }
}

/// What a send slot carries.
#[derive(Clone)]
pub(crate) enum SendUse {
    Free,
    /// A packet of the TX ring at `packet`; the first slot of a batch.
    Data {
        queue: Arc<TxShared>,
        packet: u32,
    },
    /// A later packet of a batch: its queue is the batch's first slot's.
    Batched {
        packet: u32,
    },
    Control,
    Keepalive,
}

struct SendEntry {
    usage: SendUse,
    /// Bytes still to send from the start of the slot.
    len: usize,
    remote: SocketAddr,
    /// The next slot of the same `send_batch`, if any.
    next: Option<u16>,
}

/// A socket's send slots: what each carries, and which are free.
pub(crate) struct SendSlots {
    entries: Box<[SpinLock<SendEntry>]>,
    free: IndexPool,
    /// Free slots data packets leave to control writes and keepalives
    /// ([`SEND_SLOTS_CONTROL_RESERVE`]); set when the socket attaches.
    control_reserve: AtomicUsize,
}

impl SendSlots {
    pub(crate) fn new(capacity: u16) -> Self {
        let unspecified = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        let entries = (0..capacity)
            .map(|_| SpinLock::new(SendEntry { usage: SendUse::Free, len: 0, remote: unspecified, next: None }))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Self { entries, free: IndexPool::empty(capacity), control_reserve: AtomicUsize::new(0) }
    }

    /// The transport's slots `0..count` are free (socket attach).
    pub(crate) fn fill(&self, count: u16) {
        let reserve = (count / SEND_SLOTS_CONTROL_SHARE).min(SEND_SLOTS_CONTROL_RESERVE);
        self.control_reserve.store(usize::from(reserve), Ordering::Relaxed);
        self.free.fill(count);
    }

    fn take(&self) -> Option<u16> {
        self.free.take()
    }

    fn put(&self, slot: u16) {
        self.free.put(slot);
    }

    /// A slot for a keepalive: never the lower half of the control reserve.
    fn take_for_keepalive(&self) -> Option<u16> {
        self.free.take_leaving(self.control_reserve.load(Ordering::Relaxed) / 2)
    }

    /// Slots for data packets: up to `out.len()`, never the control
    /// reserve.
    fn take_for_data(&self, out: &mut [u16]) -> usize {
        self.free.take_into_leaving(out, self.control_reserve.load(Ordering::Relaxed))
    }

    fn put_all(&self, slots: &[u16]) {
        self.free.put_all(slots);
    }

    fn set(&self, slot: u16, usage: SendUse, len: usize, remote: SocketAddr) {
        self.set_in_batch(slot, usage, len, remote, None);
    }

    /// As [`SendSlots::set`], for a slot of a batch followed by `next`.
    fn set_in_batch(&self, slot: u16, usage: SendUse, len: usize, remote: SocketAddr, next: Option<u16>) {
        if let Some(e) = self.entries.get(usize::from(slot)) {
            *e.lock() = SendEntry { usage, len, remote, next };
        }
    }

    fn pending(&self, slot: u16) -> Option<(usize, SocketAddr)> {
        let e = self.entries.get(usize::from(slot))?.lock();
        match e.usage {
            SendUse::Free => None,
            _ => Some((e.len, e.remote)),
        }
    }

    fn set_len(&self, slot: u16, len: usize) {
        if let Some(e) = self.entries.get(usize::from(slot)) {
            e.lock().len = len;
        }
    }

    /// Ends the slot's use: what it carried and the next slot of its batch.
    /// None if it was free, or a later slot of a batch in flight: only its
    /// batch's completion ends that ([`SendSlots::finish_member`]).
    fn finish(&self, slot: u16) -> Option<(SendUse, Option<u16>)> {
        let mut e = self.entries.get(usize::from(slot))?.lock();
        if matches!(e.usage, SendUse::Free | SendUse::Batched { .. }) {
            return None;
        }
        let usage = core::mem::replace(&mut e.usage, SendUse::Free);
        Some((usage, e.next.take()))
    }

    /// Ends a later slot of a batch: its packet and the batch's next slot;
    /// None (and the slot untouched) if it is not one.
    fn finish_member(&self, slot: u16) -> Option<(u32, Option<u16>)> {
        let mut e = self.entries.get(usize::from(slot))?.lock();
        let SendUse::Batched { packet } = e.usage else { return None };
        e.usage = SendUse::Free;
        Some((packet, e.next.take()))
    }
}

/// TCP: slots waiting to go into the stream, and whether one is on its way.
pub(crate) struct TcpSendQueue {
    fifo: IndexDeque,
    in_flight: bool,
    /// A thread is in [`pump`]; others only hand it work.
    pumping: bool,
}

impl TcpSendQueue {
    pub(crate) fn new(capacity: u16) -> Self {
        Self { fifo: IndexDeque::with_capacity(capacity), in_flight: false, pumping: false }
    }
}

fn prefix_len<O: Os, P: Peers<KeyOf<O>>>(link: &Link<O, P>) -> usize {
    match link.kind() {
        LinkKind::Udp => 0,
        LinkKind::Tcp => LENGTH_PREFIX_LEN,
    }
}

/// Hands a filled slot to the transport. Failures are reported like a
/// failed completion, so every path ends in [`finish`].
fn submit<O: Os, P: Peers<KeyOf<O>>>(
    link: &Link<O, P>,
    transport: &O::Transport,
    slot: u16,
    len: usize,
    remote: SocketAddr,
    usage: SendUse,
) {
    link.send.set(slot, usage, len, remote);
    if !link.begin_send() {
        // Detached meanwhile: never reaches the transport.
        link.sends_in_flight.fetch_add(1, Ordering::AcqRel);
        finish(link, slot, Err(DropReason::TxNoTransport));
        return;
    }
    match (link.kind(), link.tcp_tx.as_ref()) {
        (LinkKind::Tcp, Some(queue)) => {
            let queued = queue.lock().fifo.push_back(slot);
            if !queued {
                finish(link, slot, Err(DropReason::TxSendRefused));
                return;
            }
            pump(link);
        }
        _ => {
            if transport.send(SendSlot(slot), len, remote).is_err() {
                finish(link, slot, Err(DropReason::TxSendRefused));
            }
        }
    }
}

/// Upper bound of one pump's rounds: each sends or fails one queued slot,
/// and at most every slot twice over (a partial send puts one back).
const PUMP_ROUNDS_MAX: usize = 2 * SEND_SLOTS_MAX as usize;

/// TCP: sends the next queued slot if none is in flight. One thread pumps at
/// a time; a completion arriving inside `send` (synchronously) only clears
/// `in_flight`, and the pumping thread's loop picks up the next slot, so the
/// stack never grows with the queue.
fn pump<O: Os, P: Peers<KeyOf<O>>>(link: &Link<O, P>) {
    let Some(queue) = link.tcp_tx.as_ref() else { return };
    {
        let mut q = queue.lock();
        if q.pumping {
            return;
        }
        q.pumping = true;
    }
    let transport = link.transport();
    for _ in 0..PUMP_ROUNDS_MAX {
        let slot = {
            let mut q = queue.lock();
            let next = if q.in_flight { None } else { q.fifo.pop_front() };
            match next {
                Some(slot) => {
                    q.in_flight = true;
                    slot
                }
                None => {
                    q.pumping = false;
                    return;
                }
            }
        };
        let sent = match (&transport, link.send.pending(slot)) {
            (Some(t), Some((len, remote))) => t.send(SendSlot(slot), len, remote).is_ok(),
            _ => false,
        };
        if !sent {
            queue.lock().in_flight = false;
            finish(link, slot, Err(DropReason::TxSendRefused));
        }
    }
    queue.lock().pumping = false;
}

/// The transport's completion of slot `slot`.
pub(crate) fn send_complete<O: Os, P: Peers<KeyOf<O>>>(
    link: &Link<O, P>,
    slot: SendSlot,
    status: NtStatus,
    bytes_sent: usize,
) {
    let slot = slot.0;
    let Some(queue) = link.tcp_tx.as_ref().filter(|_| link.kind() == LinkKind::Tcp) else {
        // UDP: the datagram went whole or not at all. `finish` ignores a
        // completion for a slot that carries nothing, or that is a later
        // slot of a batch in flight (not ours to free).
        let outcome = if status.is_success() { Ok(bytes_sent) } else { Err(DropReason::TxSendFailed) };
        finish(link, slot, outcome);
        return;
    };
    let Some((len, _)) = link.send.pending(slot) else {
        // A completion for a slot that carries nothing: not ours to free.
        return;
    };
    if status.is_success() && bytes_sent > 0 && bytes_sent < len {
        if let Some(transport) = link.transport() {
            // SAFETY: the completion for `slot` arrived, so the slot is the
            // data path's again (Transport::slot_buffer's contract) and
            // nobody else touches it until it is sent again below.
            let buf = unsafe { transport.slot_buffer(SendSlot(slot)).as_mut() };
            buf.copy_within(bytes_sent..len, 0);
            link.send.set_len(slot, len - bytes_sent);
            add(&link.shared.stats.transport_bytes_sent, bytes_sent);
            {
                let mut q = queue.lock();
                q.in_flight = false;
                // The rest goes first: the stream stays in order.
                q.fifo.push_front(slot);
            }
            pump(link);
            return;
        }
    }
    queue.lock().in_flight = false;
    let outcome = if status.is_success() && bytes_sent >= len { Ok(bytes_sent) } else { Err(DropReason::TxSendFailed) };
    finish(link, slot, outcome);
    pump(link);
}

/// The end of a slot's send, successful or not: counters, the packet's
/// Scratch bit, the slot back to the free list, notification.
fn finish<O: Os, P: Peers<KeyOf<O>>>(link: &Link<O, P>, slot: u16, outcome: Result<usize, DropReason>) {
    let Some((usage, _)) = link.send.finish(slot) else { return };
    finish_taken(link, slot, usage, outcome);
}

/// [`finish`] once the slot's use was taken out of its record.
fn finish_taken<O: Os, P: Peers<KeyOf<O>>>(
    link: &Link<O, P>,
    slot: u16,
    usage: SendUse,
    outcome: Result<usize, DropReason>,
) {
    let queue = match &usage {
        SendUse::Data { queue, packet } => {
            queue.flags.set_done(*packet);
            Some(&**queue)
        }
        _ => None,
    };
    end_sends(link, &[slot], matches!(usage, SendUse::Control), queue, outcome);
}

/// The end of one request's sends (a single slot, or a batch), their
/// records already taken and their packets' Scratch set: the slots back,
/// the link's send count, the counters of `slots.len()` data (or control)
/// packets, the in-flight count of the TX queue they came from, and the
/// notification.
fn end_sends<O: Os, P: Peers<KeyOf<O>>>(
    link: &Link<O, P>,
    slots: &[u16],
    control: bool,
    queue: Option<&TxShared>,
    outcome: Result<usize, DropReason>,
) {
    let shared = &*link.shared;
    link.send.put_all(slots);
    link.end_send();
    let (stats, n) = (&shared.stats, slots.len() as u32);
    match outcome {
        Ok(bytes) => {
            // SentControlPackets is counted by the control plane when it
            // accepts the write; a failed send shows in LostOutControlPackets.
            if !control {
                bump_by(&stats.sent_data_packets, n);
            }
            add(&stats.transport_bytes_sent, bytes);
        }
        Err(reason) => {
            shared.drop_packets(reason, u64::from(n));
            bump_by(if control { &stats.lost_out_control_packets } else { &stats.lost_out_data_packets }, n);
        }
    }
    if let Some(queue) = queue {
        queue.in_flight.fetch_sub(n, Ordering::AcqRel);
    }
    shared.tx_notify.progressed(&*shared.os);
}

/// The transport's completion of the batch whose first slot is `first`.
pub(crate) fn send_batch_complete<O: Os, P: Peers<KeyOf<O>>>(
    link: &Link<O, P>,
    first: SendSlot,
    status: NtStatus,
    bytes_sent: usize,
) {
    let outcome = if status.is_success() { Ok(bytes_sent) } else { Err(DropReason::TxSendFailed) };
    finish_batch(link, first.0, outcome);
}

/// The end of a batch's send: every slot's packet done and the slots free,
/// with the counters, the link's send count, the queue's in-flight count
/// and the notification touched once for the batch.
fn finish_batch<O: Os, P: Peers<KeyOf<O>>>(link: &Link<O, P>, first: u16, outcome: Result<usize, DropReason>) {
    let Some((usage, mut next)) = link.send.finish(first) else { return };
    let SendUse::Data { queue, packet } = usage else {
        // A slot sent alone (a transport bug): end that slot alone. A later
        // slot of a batch was left to its batch by `finish`.
        finish_taken(link, first, usage, outcome);
        return;
    };
    let mut slots = [first; SEND_BATCH_MAX];
    queue.flags.set_done(packet);
    let mut n = 1;
    while let (Some(slot), Some(at)) = (next, slots.get_mut(n)) {
        let Some((packet, after)) = link.send.finish_member(slot) else { break };
        queue.flags.set_done(packet);
        *at = slot;
        n += 1;
        next = after;
    }
    end_sends(link, &slots[..n], false, Some(&queue), outcome);
}

/// A packet's bytes: its fragments after the backfill, OS memory read only.
struct Fragments<'a> {
    parts: [&'a [u8]; TX_MAX_FRAGMENTS as usize],
    count: usize,
    total: usize,
}

impl<'a> Fragments<'a> {
    fn single(bytes: &'a [u8]) -> Self {
        let mut parts: [&[u8]; TX_MAX_FRAGMENTS as usize] = [&[]; TX_MAX_FRAGMENTS as usize];
        parts[0] = bytes;
        Self { parts, count: 1, total: bytes.len() }
    }

    fn parts(&self) -> &[&'a [u8]] {
        self.parts.get(..self.count).unwrap_or(&[])
    }

    /// Copies the packet's first bytes into `out`; returns how many.
    fn copy_prefix(&self, out: &mut [u8]) -> usize {
        let mut at = 0;
        for part in self.parts() {
            let Some(rest) = out.get_mut(at..) else { break };
            let n = rest.len().min(part.len());
            rest[..n].copy_from_slice(&part[..n]);
            at += n;
            if at == out.len() {
                break;
            }
        }
        at
    }
}

/// Encrypts the packet for `peer` into slot `slot`, after `prefix` bytes.
/// Returns the bytes to send and whether the plaintext was gathered (copied)
/// first.
#[allow(clippy::too_many_arguments)]
fn seal<O: Os, P: Peers<KeyOf<O>>>(
    shared: &Shared<O, P>,
    peer: &Peer<KeyOf<O>>,
    transport: &O::Transport,
    slot: u16,
    prefix: usize,
    packet: &Fragments<'_>,
    clamp: Option<MssLimit>,
) -> Result<(usize, bool), DropReason> {
    // SAFETY: the slot was taken from this socket's free list and not passed
    // to `send` since (Transport::slot_buffer's contract): only this thread
    // touches its buffer.
    let buf = unsafe { transport.slot_buffer(SendSlot(slot)).as_mut() };
    let (prefix_room, out) = buf.split_at_mut(prefix.min(SEND_SLOT_SIZE));
    let crypto = shared.os.crypto();
    let mut tx = peer.tx.lock();
    let layout = tx.layout().map_err(DropReason::of_tx)?;
    let fits = packet.total.checked_add(layout.overhead()).is_some_and(|n| n <= out.len());
    if !fits {
        return Err(DropReason::TxOversize);
    }
    // A single fragment is encrypted straight out of OS memory. Several are
    // gathered first; so is a SYN to clamp, which must never be edited in
    // OS memory.
    let gather = packet.count > 1 || clamp.is_some();
    let len = if gather {
        let head = layout.head_room();
        let room = out.get_mut(head..head + packet.total).ok_or(DropReason::TxOversize)?;
        packet.copy_prefix(room);
        if let Some(limit) = clamp {
            let _ = clamp_mss(room, limit);
        }
        tx.encrypt_in_place(crypto, peer.id(), out, packet.total)
    } else {
        let plaintext = packet.parts().first().copied().unwrap_or(&[]);
        tx.encrypt_from(crypto, peer.id(), plaintext, out)
    }
    .map_err(DropReason::of_tx)?;
    drop(tx);
    if prefix > 0 {
        let wire = length_prefix(len).map_err(|_| DropReason::TxOversize)?;
        prefix_room.copy_from_slice(&wire);
    }
    Ok((prefix + len, gather))
}

/// WriteFile: a control packet to `to`.
pub(crate) fn send_control<O: Os, P: Peers<KeyOf<O>>>(
    shared: &Shared<O, P>,
    to: SocketAddr,
    bytes: &[u8],
) -> Result<(), TxError> {
    let lost = |reason: DropReason| {
        shared.drop_packet(reason);
        bump(&shared.stats.lost_out_control_packets);
    };
    let Some((link, transport)) = shared.current_link().and_then(|l| l.transport().map(|t| (l, t))) else {
        lost(DropReason::TxNoTransport);
        return Err(TxError::NoTransport);
    };
    let prefix = prefix_len(&link);
    let len = prefix + bytes.len();
    if bytes.is_empty() || len > SEND_SLOT_SIZE {
        lost(DropReason::TxOversize);
        return Err(TxError::BadLength);
    }
    let Some(slot) = link.send.take() else {
        lost(DropReason::TxNoSendSlot);
        return Err(TxError::NoSendSlot);
    };
    // SAFETY: the slot was just taken from the free list and not sent since
    // (Transport::slot_buffer's contract).
    let buf = unsafe { transport.slot_buffer(SendSlot(slot)).as_mut() };
    if prefix > 0 {
        match length_prefix(bytes.len()) {
            Ok(wire) => buf[..prefix].copy_from_slice(&wire),
            Err(_) => {
                link.send.put(slot);
                lost(DropReason::TxOversize);
                return Err(TxError::BadLength);
            }
        }
    }
    buf[prefix..len].copy_from_slice(bytes);
    submit(&link, &transport, slot, len, to, SendUse::Control);
    Ok(())
}

/// The keepalive ping to `peer`.
pub(crate) fn send_keepalive<O: Os, P: Peers<KeyOf<O>>>(
    shared: &Shared<O, P>,
    peer: &Peer<KeyOf<O>>,
) -> Result<(), TxError> {
    let lost = |reason: DropReason| {
        shared.drop_packet(reason);
        bump(&shared.stats.lost_out_data_packets);
    };
    let Some((link, transport)) = shared.current_link().and_then(|l| l.transport().map(|t| (l, t))) else {
        lost(DropReason::TxNoTransport);
        return Err(TxError::NoTransport);
    };
    let Some(slot) = link.send.take_for_keepalive() else {
        lost(DropReason::TxNoSendSlot);
        return Err(TxError::NoSendSlot);
    };
    let ping = Fragments::single(&KEEPALIVE_PING);
    let len = match seal(shared, peer, &transport, slot, prefix_len(&link), &ping, None) {
        Ok((len, _)) => len,
        Err(reason) => {
            link.send.put(slot);
            lost(reason);
            return Err(if reason == DropReason::TxNoKey { TxError::NoKey } else { TxError::Encrypt });
        }
    };
    peer.mark_sent(shared.os.now());
    submit(&link, &transport, slot, len, peer.endpoint().remote, SendUse::Keepalive);
    Ok(())
}

/// The ring views and extension of the TX queue.
struct TxRings {
    rings: QueueRings,
    virtual_address: Extension<NetFragmentVirtualAddress>,
}

impl TxRings {
    /// The packet's fragments after the backfill, or why it cannot be read.
    fn fragments(&self, packet: &NetPacket) -> Result<Fragments<'_>, DropReason> {
        let count = usize::from(packet.fragment_count);
        if count == 0 || count > usize::from(TX_MAX_FRAGMENTS) {
            return Err(DropReason::TxMalformed);
        }
        let mask = self.rings.fragments.mask();
        let mut parts: [&[u8]; TX_MAX_FRAGMENTS as usize] = [&[]; TX_MAX_FRAGMENTS as usize];
        let mut skip = TX_PAYLOAD_BACKFILL;
        let mut total = 0usize;
        for (k, part) in parts.iter_mut().enumerate().take(count) {
            let index = advance_index(mask, packet.fragment_index, k as u32);
            let fragment = self.rings.fragments.get(index).map_err(|_| DropReason::TxMalformed)?;
            let va = self
                .rings
                .fragments
                .extension(&self.virtual_address, index)
                .map_err(|_| DropReason::TxMalformed)?
                .virtual_address;
            if va.is_null() {
                return Err(DropReason::TxMalformed);
            }
            let start = va.cast::<u8>().wrapping_add(usize::from(fragment.offset()));
            // SAFETY: TX fragment memory is the sender's buffer, valid and
            // unchanged while the driver owns the packet (until BeginIndex
            // passes it, which happens only after this send completed); the
            // driver only reads it ("TX fragment and packet fields other than
            // Scratch are never written", and the payload is never written
            // either). The returned slices borrow `self`, i.e. the rings lock.
            let bytes = unsafe { core::slice::from_raw_parts(start, fragment.valid_length() as usize) };
            let cut = skip.min(bytes.len());
            skip -= cut;
            *part = &bytes[cut..];
            total = total.checked_add(part.len()).ok_or(DropReason::TxOversize)?;
        }
        if skip > 0 {
            return Err(DropReason::TxMalformed);
        }
        Ok(Fragments { parts, count, total })
    }
}

/// TX queue state that send completions reach.
pub(crate) struct TxShared {
    flags: PacketFlags,
    /// Packets of this queue handed to the transport and not completed.
    in_flight: AtomicU32,
}

/// The byte counters of one Advance's sent packets (OVPN_STATS TunBytesSent,
/// the peer's VPN and link bytes), added to the shared counters once per
/// Advance, and per run of packets to the same peer, instead of three
/// atomic read-modify-writes per packet. Readers (the stats IOCTL) see them
/// at most one Advance late.
///
/// The run also remembers where its peer's endpoint sent to when the run
/// started (one endpoint lock per run, not per packet): a float on another
/// CPU during an Advance takes effect with the next run or Advance, as if
/// it had happened just after this one read the endpoint.
struct TxTally<K> {
    tun_bytes: usize,
    /// The peer of the current run, its remote address and its bytes so far.
    peer: Option<Arc<Peer<K>>>,
    remote: SocketAddr,
    vpn_bytes: usize,
    link_bytes: usize,
}

impl<K> Default for TxTally<K> {
    fn default() -> Self {
        Self {
            tun_bytes: 0,
            peer: None,
            remote: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            vpn_bytes: 0,
            link_bytes: 0,
        }
    }
}

impl<K> TxTally<K> {
    /// Counts a sent packet of `peer`; returns the address to send it to.
    fn count(&mut self, peer: &Arc<Peer<K>>, plaintext: usize, wire: usize) -> SocketAddr {
        if !self.peer.as_ref().is_some_and(|p| Arc::ptr_eq(p, peer)) {
            self.flush_peer();
            self.peer = Some(peer.clone());
            self.remote = peer.endpoint().remote;
        }
        self.tun_bytes += plaintext;
        self.vpn_bytes += plaintext;
        self.link_bytes += wire;
        self.remote
    }

    fn flush_peer(&mut self) {
        if let Some(peer) = self.peer.take() {
            add(&peer.stats.vpn_tx_bytes, self.vpn_bytes);
            add(&peer.stats.link_tx_bytes, self.link_bytes);
        }
        (self.vpn_bytes, self.link_bytes) = (0, 0);
    }

    fn flush(&mut self, stats: &DeviceStats) {
        self.flush_peer();
        if self.tun_bytes > 0 {
            add(&stats.tun_bytes_sent, self.tun_bytes);
            self.tun_bytes = 0;
        }
    }
}

/// The last route of one Advance: a run of packets to one inner destination
/// costs one lookup (in the adapter, the device lock and a peer reference)
/// instead of one per packet. A route or peer change on another CPU during
/// an Advance (MP_DEL_PEER, an iroute, DEL_PEER + NEW_PEER) takes effect
/// with the next destination or Advance: the packets before it still go to
/// a live peer object with its own keys, as if the change had come just
/// after them.
struct TxRoute<K> {
    last: Option<(IpAddr, Arc<Peer<K>>)>,
}

impl<K> TxRoute<K> {
    /// The peer for inner destination `dst`: the last route's if `dst` is
    /// its destination, else `lookup`'s (None: unroutable; the last route
    /// is kept).
    fn peer(&mut self, dst: IpAddr, lookup: impl FnOnce(IpAddr) -> Option<Arc<Peer<K>>>) -> Option<&Arc<Peer<K>>> {
        if self.last.as_ref().is_none_or(|(last, _)| *last != dst) {
            self.last = Some((dst, lookup(dst)?));
        }
        self.last.as_ref().map(|(_, peer)| peer)
    }
}

/// Send slots an Advance takes from the socket's free list at a time: one
/// lock per this many packets instead of one per packet, and never more than
/// the packets it still has to post, nor the control reserve. The unused
/// ones go back when the Advance ends.
const TX_SLOT_BATCH: usize = 16;

/// The send slots one Advance holds and has not used yet.
struct SlotStash {
    slots: [u16; TX_SLOT_BATCH],
    next: usize,
    len: usize,
    /// Packets of the Advance not posted yet, the one being posted included.
    unposted: usize,
}

impl SlotStash {
    const fn new(unposted: usize) -> Self {
        Self { slots: [0; TX_SLOT_BATCH], next: 0, len: 0, unposted }
    }

    /// A free slot (refilling from `send` when empty, for at most the
    /// packets still to post), or None if every slot is in flight.
    fn take(&mut self, send: &SendSlots) -> Option<u16> {
        if self.next >= self.len {
            let want = self.unposted.clamp(1, TX_SLOT_BATCH);
            self.len = self.slots.get_mut(..want).map_or(0, |out| send.take_for_data(out));
            self.next = 0;
        }
        let slot = *self.slots.get(self.next..self.len)?.first()?;
        self.next += 1;
        Some(slot)
    }

    /// The slots not used go back to `send`.
    fn give_back(&mut self, send: &SendSlots) {
        if let Some(unused) = self.slots.get(self.next..self.len) {
            send.put_all(unused);
        }
        (self.next, self.len) = (0, 0);
    }
}

/// Sealed datagrams of one Advance that go out together in one
/// `send_batch` (`WskSendMessages`: one request, one IRP, one completion):
/// consecutive packets to one remote address, at most [`SEND_BATCH_MAX`].
struct TxBatch {
    slots: [(SendSlot, usize); SEND_BATCH_MAX],
    packets: [u32; SEND_BATCH_MAX],
    len: usize,
    remote: SocketAddr,
}

impl TxBatch {
    fn new() -> Self {
        Self {
            slots: [(SendSlot(0), 0); SEND_BATCH_MAX],
            packets: [0; SEND_BATCH_MAX],
            len: 0,
            remote: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        }
    }
}

/// What one Advance carries from packet to packet.
struct AdvanceRun<'a, O: Os, P: Peers<KeyOf<O>>> {
    link: Option<&'a Arc<Link<O, P>>>,
    transport: Option<&'a Arc<O::Transport>>,
    tally: TxTally<KeyOf<O>>,
    route: TxRoute<KeyOf<O>>,
    slots: SlotStash,
    batch: TxBatch,
}

/// What became of one posted packet.
enum Posted {
    Sent,
    Ignored,
    Dropped(DropReason),
    /// No send slot: stop posting, the packet stays for the next Advance.
    Stalled,
}

/// The TX queue.
pub struct TxQueue<O: Os, P: Peers<KeyOf<O>>> {
    shared: Arc<Shared<O, P>>,
    inner: Arc<TxShared>,
    rings: SpinLock<TxRings>,
    cancelled: AtomicBool,
}

impl<O: Os, P: Peers<KeyOf<O>>> TxQueue<O, P> {
    /// # Safety
    /// As for [`super::rx::RxQueue::new`].
    pub(crate) unsafe fn new(
        shared: Arc<Shared<O, P>>,
        rings: NonNull<NetRingCollection>,
        extensions: &QueueExtensions,
    ) -> Result<Self, NtStatus> {
        // SAFETY: the caller's contract: the OS's collection for this queue.
        let rings = unsafe { QueueRings::from_collection(rings.as_ptr()) }.map_err(|_| NtStatus::INVALID_PARAMETER)?;
        // SAFETY: queried on this queue; storage lives as long as the queue.
        let virtual_address = unsafe { Extension::from_queried(&extensions.fragment_virtual_address) }
            .map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let ring = NonNull::new(rings.packets.as_ptr()).ok_or(NtStatus::INVALID_PARAMETER)?;
        let flags = PacketFlags::new(ring, rings.packets.mask());
        Ok(Self {
            shared,
            inner: Arc::new(TxShared { flags, in_flight: AtomicU32::new(0) }),
            rings: SpinLock::new(TxRings { rings, virtual_address }),
            cancelled: AtomicBool::new(false),
        })
    }

    /// Sends handed to the transport and not yet completed.
    pub fn in_flight(&self) -> u32 {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    fn post(&self, r: &mut TxRings, index: u32, run: &mut AdvanceRun<'_, O, P>) -> Posted {
        let shared = &*self.shared;
        let AdvanceRun { link, transport, tally, route, slots, batch } = run;
        let Ok(packet) = r.rings.packets.get(index).copied() else { return Posted::Stalled };
        if packet.ignore() {
            return Posted::Ignored;
        }
        if self.cancelled.load(Ordering::SeqCst) {
            return Posted::Dropped(DropReason::TxCancelled);
        }
        // Scratch is the driver's "done" bit: clear whatever it held.
        self.inner.flags.clear_done(index);
        let packet_bytes = match r.fragments(&packet) {
            Ok(f) => f,
            Err(reason) => return Posted::Dropped(reason),
        };
        let mut head = [0u8; ip::HEADER_PEEK_LEN];
        let head_len = packet_bytes.copy_prefix(&mut head);
        let head = &head[..head_len];
        let Some(peer) = ip::addresses(head).and_then(|a| route.peer(a.dst, |dst| shared.peers.tx_peer(dst))) else {
            return Posted::Dropped(DropReason::TxUnroutable);
        };
        let (Some(link), Some(transport)) = (*link, *transport) else {
            return Posted::Dropped(DropReason::TxNoTransport);
        };
        let Some(slot) = slots.take(&link.send) else { return Posted::Stalled };
        let clamp = peer.mss().and_then(MssLimit::new).filter(|_| ip::is_tcp_syn(head));
        let (len, copied) = match seal(shared, peer, transport, slot, prefix_len(link), &packet_bytes, clamp) {
            Ok(sealed) => sealed,
            Err(reason) => {
                link.send.put(slot);
                return Posted::Dropped(reason);
            }
        };
        let plaintext = packet_bytes.total;
        let remote = tally.count(peer, plaintext, len);
        if copied {
            add(&shared.copies.tx_copied_bytes, plaintext);
        }
        peer.mark_sent(shared.os.now());
        if link.kind() == LinkKind::Tcp {
            // One ordered stream: slot by slot through the TCP queue.
            self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
            let usage = SendUse::Data { queue: self.inner.clone(), packet: index };
            submit(link, transport, slot, len, remote, usage);
            return Posted::Sent;
        }
        if batch.len > 0 && batch.remote != remote {
            self.flush(link, transport, batch);
        }
        if let (Some(at), Some(p)) = (batch.slots.get_mut(batch.len), batch.packets.get_mut(batch.len)) {
            *at = (SendSlot(slot), len);
            *p = index;
            batch.len += 1;
            batch.remote = remote;
        }
        if batch.len == SEND_BATCH_MAX {
            self.flush(link, transport, batch);
        }
        Posted::Sent
    }

    /// Sends the Advance's batch: every slot's record (its packet, and the
    /// next slot of the batch) written before the one `send_batch`. A
    /// transport that cannot batch gets the slots one by one.
    fn flush(&self, link: &Link<O, P>, transport: &O::Transport, batch: &mut TxBatch) {
        let n = core::mem::take(&mut batch.len);
        let (Some(slots), Some(packets)) = (batch.slots.get(..n), batch.packets.get(..n)) else { return };
        let Some(&(SendSlot(first), _)) = slots.first() else { return };
        let remote = batch.remote;
        for (k, (&(slot, len), &packet)) in slots.iter().zip(packets).enumerate() {
            let usage =
                if k == 0 { SendUse::Data { queue: self.inner.clone(), packet } } else { SendUse::Batched { packet } };
            let next = slots.get(k + 1).map(|&(SendSlot(s), _)| s);
            link.send.set_in_batch(slot.0, usage, len, remote, next);
        }
        self.inner.in_flight.fetch_add(n as u32, Ordering::AcqRel);
        if !link.begin_send() {
            // Detached meanwhile: never reaches the transport.
            link.sends_in_flight.fetch_add(1, Ordering::AcqRel);
            finish_batch(link, first, Err(DropReason::TxNoTransport));
            return;
        }
        match transport.send_batch(slots, remote) {
            Ok(()) => {}
            Err(status) if status == NtStatus::NOT_SUPPORTED => {
                link.end_send();
                for (&(SendSlot(slot), len), &packet) in slots.iter().zip(packets) {
                    let usage = SendUse::Data { queue: self.inner.clone(), packet };
                    submit(link, transport, slot, len, remote, usage);
                }
            }
            Err(_) => finish_batch(link, first, Err(DropReason::TxSendRefused)),
        }
    }

    /// Returns leading done packets (and their fragments) to the OS.
    fn drain(&self, r: &mut TxRings) {
        let Ok(section) = r.rings.packets.drain_section() else { return };
        let (packet_mask, fragment_mask) = (r.rings.packets.mask(), r.rings.fragments.mask());
        let mut packet_begin = None;
        let mut fragment_begin = None;
        for index in section {
            if !self.inner.flags.is_done(index) {
                break;
            }
            // Scratch was seen with Acquire: the completion is done with the
            // element, so a plain read races nothing.
            let Ok(packet) = r.rings.packets.get(index).copied() else { break };
            if packet.fragment_count > 0 {
                fragment_begin =
                    Some(advance_index(fragment_mask, packet.fragment_index, u32::from(packet.fragment_count)));
            }
            packet_begin = Some(increment_index(packet_mask, index));
        }
        if let Some(f) = fragment_begin {
            let _ = r.rings.fragments.set_begin(f);
        }
        if let Some(p) = packet_begin {
            let _ = r.rings.packets.set_begin(p);
        }
        if self.cancelled.load(Ordering::SeqCst) && r.rings.packets.owned().is_empty() && self.in_flight() == 0 {
            // Everything is back: no fragment can belong to a packet any more.
            let end = r.rings.fragments.end();
            let _ = r.rings.fragments.set_begin(end);
        }
    }
}

impl<O: Os, P: Peers<KeyOf<O>>> PacketQueue for TxQueue<O, P> {
    fn start(&self) {
        self.cancelled.store(false, Ordering::SeqCst);
    }

    fn advance(&self) {
        let shared = &*self.shared;
        // A swap: if it reads a completion's progress, it synchronises with
        // it, and the drain below sees that completion's Scratch bit.
        shared.tx_notify.progress.swap(false, Ordering::AcqRel);
        let link = shared.current_link();
        let transport = link.as_ref().and_then(|l| l.transport());
        let mut r = self.rings.lock();
        let mask = r.rings.packets.mask();
        let mut run = AdvanceRun {
            link: link.as_ref(),
            transport: transport.as_ref(),
            tally: TxTally::default(),
            route: TxRoute { last: None },
            slots: SlotStash::new(0),
            batch: TxBatch::new(),
        };
        if let Ok(post) = r.rings.packets.post_section() {
            run.slots.unposted = post.len() as usize;
            for index in post {
                match self.post(&mut r, index, &mut run) {
                    Posted::Sent | Posted::Ignored => {}
                    Posted::Dropped(reason) => {
                        shared.drop_packet(reason);
                        bump(&shared.stats.lost_out_data_packets);
                        self.inner.flags.set_done(index);
                    }
                    Posted::Stalled => break,
                }
                let _ = r.rings.packets.set_next(increment_index(mask, index));
                run.slots.unposted = run.slots.unposted.saturating_sub(1);
            }
        }
        if let (Some(link), Some(transport)) = (run.link, run.transport) {
            self.flush(link, transport, &mut run.batch);
        }
        if let Some(link) = run.link {
            run.slots.give_back(&link.send);
        }
        run.tally.flush(&shared.stats);
        self.drain(&mut r);
    }

    fn set_notification_enabled(&self, enabled: bool) {
        self.shared.tx_notify.arm(enabled, &*self.shared.os);
    }

    fn cancel(&self) {
        // Nothing new is sent; Advance returns what is unposted and drains
        // the rest as the in-flight sends complete.
        self.cancelled.store(true, Ordering::SeqCst);
    }

    fn stop(&self) {
        self.shared.tx_notify.armed.swap(false, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_byte_is_where_netcx_puts_scratch_and_ignore() {
        let mut p = NetPacket::default();
        p.set_scratch(true);
        // SAFETY: NetPacket is 12 bytes of repr(C) integers without padding.
        let bytes: [u8; 12] = unsafe { core::mem::transmute(p) };
        assert_eq!(bytes[PACKET_FLAGS_OFFSET], PACKET_SCRATCH);
        let mut p = NetPacket::default();
        p.set_ignore(true);
        // SAFETY: as above.
        let bytes: [u8; 12] = unsafe { core::mem::transmute(p) };
        assert_eq!(bytes[PACKET_FLAGS_OFFSET], PACKET_IGNORE);
    }

    #[test]
    fn errors_map_to_write_statuses() {
        assert_eq!(TxError::NoSendSlot.status(), NtStatus::INSUFFICIENT_RESOURCES);
        assert_eq!(TxError::BadLength.status(), NtStatus::INVALID_BUFFER_SIZE);
    }

    #[test]
    fn an_advance_holds_no_more_free_slots_than_packets_it_has_left() {
        let send = SendSlots::new(64);
        send.fill(64);
        // Two packets to post: two slots leave the free list, not sixteen.
        let mut stash = SlotStash::new(2);
        assert!(stash.take(&send).is_some());
        assert_eq!(send.free.available(), 62);
        stash.unposted = 1;
        assert!(stash.take(&send).is_some());
        assert_eq!(send.free.available(), 62);
        // A long Advance refills a batch at a time, and gives back the rest.
        let mut stash = SlotStash::new(40);
        assert!(stash.take(&send).is_some());
        assert_eq!(send.free.available(), 62 - TX_SLOT_BATCH);
        stash.give_back(&send);
        assert_eq!(send.free.available(), 61);
    }

    #[test]
    fn fragments_copy_their_prefix_across_parts() {
        let (a, b) = ([1u8, 2, 3], [4u8, 5]);
        let mut f = Fragments::single(&a);
        f.parts[1] = &b;
        f.count = 2;
        f.total = 5;
        let mut out = [0u8; 4];
        assert_eq!(f.copy_prefix(&mut out), 4);
        assert_eq!(out, [1, 2, 3, 4]);
        let mut out = [0u8; 8];
        assert_eq!(f.copy_prefix(&mut out), 5);
    }
}
