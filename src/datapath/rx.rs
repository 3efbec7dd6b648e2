//! Receive: zero-copy where the budget allows, a bounded copy otherwise.
//!
//! `docs/datapath.md` ("RX ownership") is the contract:
//! 1. [`receive_indication`] walks a WSK indication list under one *walk
//!    reference* on an *indication record* (the retained-indication budget).
//!    A data packet of a known peer is decrypted in place, inside the
//!    indication's own buffer, and put into an *RX slot* queued for Advance;
//!    each queued slot holds one more reference on the record. Control
//!    packets are copied to the control plane and hold nothing.
//! 2. [`RxQueue`]'s Advance indicates queued slots: one NET_PACKET and one
//!    NET_FRAGMENT each, the fragment pointing at the plaintext.
//! 3. [`return_buffer`] (EvtAdapterReturnRxBuffer) frees the slot and drops
//!    its reference; the last reference releases the list with
//!    `Transport::release`.
//! 4. Cancel marks the rings' remaining packets Ignore and frees slots never
//!    indicated, which releases lists as their references run out.
//!
//! Datagrams spanning several MDLs, data past the retention budget and TCP
//! stream frames are copied into a pooled buffer ([`RX_COPY_BUFFERS`]) and
//! decrypted there; the slot then owns the buffer instead of a reference.

use crate::os::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use crate::os::sync::cell::UnsafeCell;
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Range;
use core::ptr::NonNull;

use super::pools::{BufferPool, IndexDeque, IndexPool};
use super::socket::{Link, same_endpoint};
use super::stats::{DropReason, add, bump, bump_by};
use super::{
    KeyOf, Peers, RX_BUFFER_SIZE, RX_COPY_BUFFERS, RX_INDICATION_BATCH_MAX, RX_MDL_CHAIN_MAX, RX_PENDING_MAX,
    RX_RETAINED_LISTS_MAX, RX_SLOTS_MAX, Shared, ip,
};
use crate::control::peers::Peer;
use crate::netcx::extension::{
    Extension, NetFragmentReturnContext, NetFragmentVirtualAddress, NetPacketChecksum, checksum,
};
use crate::netcx::mdl::Mdl;
use crate::netcx::ring::{NetRingCollection, QueueRings, advance_index};
use crate::netcx::wsk::{Datagram, IndicationError, WskDatagramIndication, datagrams};
use crate::ntstatus::NtStatus;
use crate::os::sync::SpinLock;
use crate::os::time::Instant;
use crate::os::{Os, PacketQueue, QueueExtensions, Transport};
use crate::proto::keepalive::is_keepalive;
use crate::proto::mss::{MssLimit, clamp_mss};
use crate::proto::opcode::{PacketKind, classify};

/// The head of a retained indication list.
#[derive(Clone, Copy, Debug)]
struct ListPtr(NonNull<WskDatagramIndication>);

// SAFETY: the pointer is only carried from the receive callback to the one
// `Transport::release` of its list ("every retained indication is released
// exactly once"); it is never dereferenced by the data path after the walk.
unsafe impl Send for ListPtr {}

/// What a record holds while its list is retained.
struct Held<O: Os, P: Peers<KeyOf<O>>> {
    list: ListPtr,
    /// The socket that delivered the list and must release it.
    link: Arc<Link<O, P>>,
}

/// An indication record: one retained list and the references on it (the
/// walk's own, plus one per queued or indicated slot).
struct Record<O: Os, P: Peers<KeyOf<O>>> {
    refs: AtomicU32,
    held: SpinLock<Option<Held<O, P>>>,
}

/// Where an RX slot's plaintext is.
#[derive(Clone, Copy, Debug)]
struct Payload(NonNull<u8>);

// SAFETY: the address points into bytes the slot owns (a retained indication
// or a taken pool buffer); it is only written into a NET_FRAGMENT for the OS
// to read, never dereferenced by another thread of the data path.
unsafe impl Send for Payload {}

/// An RX slot's state ([`RxSlot::state`]).
mod slot_state {
    pub const FREE: u8 = 0;
    /// Filled, waiting in the pending queue for Advance.
    pub const QUEUED: u8 = 1;
    /// In the rings; the OS returns it through EvtAdapterReturnRxBuffer.
    pub const INDICATED: u8 = 2;
}
use slot_state::{FREE, INDICATED, QUEUED};

/// What keeps an RX slot's bytes alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// A reference on record `.0`: the bytes are inside its indication.
    Retained(u16),
    /// Copy buffer `.0` of the pool.
    Copied(u16),
}

/// What a filled RX slot carries.
#[derive(Debug)]
struct SlotFields {
    owner: Option<Owner>,
    payload: Option<Payload>,
    len: u32,
}

/// An RX slot. Its fields have one owner at a time, handed on by `state`
/// (and the locks of the pool and the pending queue the index travels
/// through) rather than a per-slot lock: three lock acquisitions per
/// packet fewer, each a raise to DISPATCH_LEVEL and two locked operations
/// in the kernel.
/// - FREE, index taken from the slot pool (whose lock orders it after the
///   previous owner's put): the receive path, which fills the fields and
///   publishes QUEUED;
/// - QUEUED: whoever holds the index (a receive batch, the pending queue,
///   then Advance, or Cancel draining the queue). Advance reads the fields,
///   writes the ring elements and only then publishes INDICATED; whoever
///   frees a QUEUED slot is its holder;
/// - INDICATED: the return whose compare-exchange moves it back to FREE,
///   which alone then empties the fields and puts the index back into the
///   pool.
///
/// A return context naming a slot in any other state fails its
/// compare-exchange and touches nothing: a misbehaving OS cannot reach the
/// fields of a slot it was not given.
struct RxSlot {
    state: AtomicU8,
    fields: UnsafeCell<SlotFields>,
}

// SAFETY: the fields are only reached by the one owner the state hand-off
// above designates, each access ordered after the previous owner's by the
// Release/Acquire pair on `state` or by the lock of the slot pool or the
// pending queue the index passed through.
unsafe impl Sync for RxSlot {}

impl RxSlot {
    fn new() -> Self {
        Self { state: AtomicU8::new(FREE), fields: UnsafeCell::new(SlotFields { owner: None, payload: None, len: 0 }) }
    }

    /// Empties the fields of a slot this caller just moved to FREE.
    ///
    /// # Safety
    /// The caller's own transition moved the slot to FREE, and its index is
    /// not in the pool yet: nobody else may touch the fields.
    unsafe fn take_owner(&self) -> Option<Owner> {
        self.fields.with_mut(|f| {
            // SAFETY: the caller's contract: the sole owner of the fields.
            let f = unsafe { &mut *f };
            f.payload = None;
            f.owner.take()
        })
    }
}

struct Pending {
    queue: IndexDeque,
    /// An RX queue is started and not cancelled.
    accepting: bool,
}

/// RX tables, allocated once with the adapter.
pub(crate) struct RxState<O: Os, P: Peers<KeyOf<O>>> {
    records: Box<[Record<O, P>]>,
    record_pool: IndexPool,
    slots: Box<[RxSlot]>,
    slot_pool: IndexPool,
    buffers: BufferPool<RX_BUFFER_SIZE>,
    pending: SpinLock<Pending>,
    /// Advance asked to be notified (one-shot, datapath facts).
    armed: AtomicBool,
}

impl<O: Os, P: Peers<KeyOf<O>>> RxState<O, P> {
    pub fn new() -> Self {
        let records = (0..RX_RETAINED_LISTS_MAX)
            .map(|_| Record { refs: AtomicU32::new(0), held: SpinLock::new(None) })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let slots = (0..RX_SLOTS_MAX).map(|_| RxSlot::new()).collect::<Vec<_>>().into_boxed_slice();
        Self {
            records,
            record_pool: IndexPool::full(RX_RETAINED_LISTS_MAX),
            slots,
            slot_pool: IndexPool::full(RX_SLOTS_MAX),
            buffers: BufferPool::new(RX_COPY_BUFFERS),
            pending: SpinLock::new(Pending { queue: IndexDeque::with_capacity(RX_PENDING_MAX), accepting: false }),
            armed: AtomicBool::new(false),
        }
    }

    pub fn records_free(&self) -> usize {
        self.record_pool.available()
    }

    pub fn slots_free(&self) -> usize {
        self.slot_pool.available()
    }

    pub fn buffers_free(&self) -> usize {
        self.buffers.available()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.lock().queue.len()
    }

    pub fn accepting(&self) -> bool {
        self.pending.lock().accepting
    }

    fn set_accepting(&self, accepting: bool) {
        self.pending.lock().accepting = accepting;
    }

    /// Notifies the RX queue if it armed notification (one-shot).
    ///
    /// Every write of `armed` is a swap: read-modify-writes of one location
    /// are totally ordered, so of a queueing kick and an arming swap one
    /// sees the other (the kick the flag up, or the arming, after the
    /// pending lock, the packet) without a store-load (SeqCst) argument,
    /// which loom could not check.
    fn kick(&self, os: &O) {
        if self.armed.swap(false, Ordering::AcqRel) {
            os.notify_rx();
        }
    }

    fn arm(&self, enabled: bool, os: &O) {
        self.armed.swap(enabled, Ordering::AcqRel);
        // Packets queued while the flag was down would otherwise wait for
        // the next datagram.
        if enabled && self.pending_len() > 0 {
            self.kick(os);
        }
    }

    /// Takes a record for `list` with the walk's reference.
    fn take_record(&self, link: &Link<O, P>, list: NonNull<WskDatagramIndication>) -> Option<u16> {
        // Only a socket with its transport attached can release a list
        // later; before that (events racing the attach) data is copied.
        link.transport()?;
        let me = link.me()?;
        let index = self.record_pool.take()?;
        let Some(record) = self.records.get(usize::from(index)) else {
            self.record_pool.put(index);
            return None;
        };
        if !link.begin_retain() {
            self.record_pool.put(index);
            return None;
        }
        *record.held.lock() = Some(Held { list: ListPtr(list), link: me });
        record.refs.store(1, Ordering::Release);
        Some(index)
    }

    /// Drops the walk's reference. `true` if datagrams still hold the list
    /// (the callback returns STATUS_PENDING); `false` if none does, and the
    /// record went back to the pool without a release (STATUS_SUCCESS: WSK
    /// keeps the list).
    fn end_walk(&self, index: u16) -> bool {
        let Some(record) = self.records.get(usize::from(index)) else { return false };
        if record.refs.fetch_sub(1, Ordering::AcqRel) != 1 {
            return true;
        }
        let held = record.held.lock().take();
        if let Some(held) = held {
            held.link.end_retain();
        }
        self.record_pool.put(index);
        false
    }

    /// Drops a slot's reference; the last one releases the list.
    fn drop_reference(&self, index: u16) {
        let Some(record) = self.records.get(usize::from(index)) else { return };
        if record.refs.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let held = record.held.lock().take();
        if let Some(Held { list, link }) = held {
            if let Some(transport) = link.transport() {
                // SAFETY: "every retained indication list is released exactly
                // once": the walk's reference kept this count above zero until
                // the walk ended, so reaching zero on a slot's reference means
                // the callback returned (or returns) STATUS_PENDING for this
                // list, and `held` was taken out under its lock, so no other
                // path releases it. The data path touches nothing of the list
                // afterwards: every slot pointing into it is free.
                unsafe { transport.release(list.0) };
            }
            link.end_retain();
        }
        self.record_pool.put(index);
    }

    fn release_owner(&self, owner: Owner) {
        match owner {
            Owner::Retained(record) => self.drop_reference(record),
            Owner::Copied(buffer) => {
                self.buffers.put(buffer);
            }
        }
    }

    /// Frees a QUEUED slot, releasing what it owned. Only the holder of the
    /// index calls it (see [`RxSlot`]), never for an INDICATED slot: that
    /// one is the OS's to return.
    fn free_slot(&self, index: u16) {
        self.free_from(index, QUEUED);
    }

    /// Moves slot `index` from state `from` (QUEUED: its holder; INDICATED:
    /// a return) to FREE, releases what it owned and puts it back into the
    /// pool. `false`, touching nothing, if the slot was not in `from`.
    fn free_from(&self, index: u16, from: u8) -> bool {
        let Some(slot) = self.slots.get(usize::from(index)) else { return false };
        if slot.state.compare_exchange(from, FREE, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        // SAFETY: this compare-exchange made the slot FREE, and its index
        // goes back into the pool only below: a QUEUED slot's fields were
        // its holder's (no return can take it), an INDICATED slot's are
        // the winning return's; either way the caller's alone.
        let owner = unsafe { slot.take_owner() };
        if let Some(owner) = owner {
            self.release_owner(owner);
        }
        self.slot_pool.put(index);
        true
    }

    /// Puts a decrypted packet into slot `index` (Queued); the caller then
    /// pushes it onto the pending queue ([`RxBatch::push`]).
    fn fill(&self, index: u16, owner: Owner, payload: NonNull<u8>, len: u32) -> Result<(), DropReason> {
        let Some(slot) = self.slots.get(usize::from(index)) else { return Err(DropReason::RxNoSlot) };
        if let Owner::Retained(record) = owner {
            // Before the slot is visible to anyone who could drop it.
            if let Some(r) = self.records.get(usize::from(record)) {
                r.refs.fetch_add(1, Ordering::AcqRel);
            }
        }
        slot.fields.with_mut(|f| {
            // SAFETY: the caller took `index` from the slot pool: FREE, and
            // the fields are its own until QUEUED is published below.
            let f = unsafe { &mut *f };
            *f = SlotFields { owner: Some(owner), payload: Some(Payload(payload)), len };
        });
        slot.state.store(QUEUED, Ordering::Release);
        Ok(())
    }

    /// The copy buffer `index` as a slice of `len` bytes.
    ///
    /// # Safety
    /// The caller took buffer `index` from the pool and has not given it
    /// back, and makes no other reference to it meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn buffer(&self, index: u16, len: usize) -> Option<&mut [u8]> {
        if len > RX_BUFFER_SIZE {
            return None;
        }
        let p = self.buffers.ptr(index)?;
        // SAFETY: "the pool hands each buffer to one owner at a time": the
        // caller owns it (contract above); `len` is within the buffer.
        Some(unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), len) })
    }
}

/// Filled slots a receive callback pushes onto the pending queue per lock
/// acquisition, at most this many at a time (256 bytes of stack).
const RX_BATCH_CHUNK: usize = 32;

/// The peer of a run of received packets naming the same peer id: looked
/// up once per run instead of once per packet, with the remote address its
/// endpoint had (the float check), the inner source last found to route
/// back to it (the MP source check), and the run's byte counters.
///
/// A peer the control plane removes during a run is used for the rest of
/// that one indication list (at most [`RX_INDICATION_BATCH_MAX`]
/// datagrams), as if each packet's lookup had happened just before the
/// removal: the `Arc` keeps it alive, and nothing it is used for outlives
/// the callback except slots, which hold no peer. Likewise an iroute or
/// VPN address removed during the run still admits that source for the
/// rest of the list; a source not admitted is asked about every time.
struct RunPeer<K> {
    id: crate::proto::PeerId,
    peer: Arc<Peer<K>>,
    remote: core::net::SocketAddr,
    /// An inner source address the control plane admitted for this peer
    /// during the run (in the adapter each question takes the device lock).
    allowed_source: Option<core::net::IpAddr>,
    /// The peer's LinkBytesReceived and VpnBytesReceived of this run.
    link_bytes: usize,
    vpn_bytes: usize,
}

/// One receive callback's queued slots and counters. Slots are pushed onto
/// the pending queue [`RX_BATCH_CHUNK`] per lock; the counters
/// (ReceivedDataPackets, TunBytesReceived, the peer's link and VPN bytes)
/// are added to the shared ones once per callback and per peer run instead
/// of per packet, so readers (the stats IOCTL) see them at most one
/// indication list late. [`RxBatch::finish`] must run before the callback
/// ends its walk.
struct RxBatch<O: Os> {
    slots: [(u16, u32); RX_BATCH_CHUNK],
    filled: usize,
    run: Option<RunPeer<KeyOf<O>>>,
    received_packets: u32,
    tun_bytes: usize,
    /// Slots pushed onto the pending queue.
    queued: usize,
}

impl<O: Os> RxBatch<O> {
    fn new() -> Self {
        Self { slots: [(0, 0); RX_BATCH_CHUNK], filled: 0, run: None, received_packets: 0, tun_bytes: 0, queued: 0 }
    }

    /// Makes `id`'s peer the run's (a lookup only when the id changes).
    /// `false` if the control plane knows no such peer.
    fn enter<P: Peers<KeyOf<O>>>(&mut self, shared: &Shared<O, P>, id: crate::proto::PeerId) -> bool {
        if self.run.as_ref().is_some_and(|r| r.id == id) {
            return true;
        }
        let Some(peer) = shared.peers.rx_peer(id) else { return false };
        self.end_run(shared);
        let remote = peer.endpoint().remote;
        self.run = Some(RunPeer { id, peer, remote, allowed_source: None, link_bytes: 0, vpn_bytes: 0 });
        true
    }

    /// Pushes the filled slots, then adds the run's peer counters.
    fn end_run<P: Peers<KeyOf<O>>>(&mut self, shared: &Shared<O, P>) {
        self.push(shared);
        if let Some(run) = self.run.take() {
            if run.link_bytes > 0 {
                add(&run.peer.stats.link_rx_bytes, run.link_bytes);
            }
            if run.vpn_bytes > 0 {
                add(&run.peer.stats.vpn_rx_bytes, run.vpn_bytes);
            }
        }
    }

    /// Slot `index`, filled with `len` plaintext bytes of the run's peer,
    /// for the pending queue.
    fn queue<P: Peers<KeyOf<O>>>(&mut self, shared: &Shared<O, P>, index: u16, len: u32) {
        if self.filled == RX_BATCH_CHUNK {
            self.push(shared);
        }
        if let Some(entry) = self.slots.get_mut(self.filled) {
            *entry = (index, len);
            self.filled += 1;
        } else {
            // Cannot happen (pushed above); the slot must not be lost.
            shared.rx.free_slot(index);
            drop_data(shared, DropReason::RxQueueFull);
        }
    }

    /// The filled slots onto the pending queue under one lock; a slot the
    /// queue refuses is freed (with what it owned) and counted as dropped.
    fn push<P: Peers<KeyOf<O>>>(&mut self, shared: &Shared<O, P>) {
        let rx = &shared.rx;
        let filled = core::mem::take(&mut self.filled);
        let Some(slots) = self.slots.get(..filled) else { return };
        let mut refused = [None::<DropReason>; RX_BATCH_CHUNK];
        {
            let mut p = rx.pending.lock();
            for (&(index, _), refusal) in slots.iter().zip(refused.iter_mut()) {
                *refusal = if !p.accepting {
                    Some(DropReason::RxQueueStopped)
                } else if !p.queue.push_back(index) {
                    Some(DropReason::RxQueueFull)
                } else {
                    None
                };
            }
        }
        for (&(index, len), refusal) in slots.iter().zip(refused.iter()) {
            match refusal {
                None => {
                    self.queued += 1;
                    self.tun_bytes += len as usize;
                    if let Some(run) = self.run.as_mut() {
                        run.vpn_bytes += len as usize;
                    }
                }
                Some(reason) => {
                    rx.free_slot(index);
                    drop_data(shared, *reason);
                }
            }
        }
    }

    /// Everything pushed and counted; returns the slots queued.
    fn finish<P: Peers<KeyOf<O>>>(&mut self, shared: &Shared<O, P>) -> usize {
        self.end_run(shared);
        if self.received_packets > 0 {
            bump_by(&shared.stats.received_data_packets, self.received_packets);
            self.received_packets = 0;
        }
        if self.tun_bytes > 0 {
            add(&shared.stats.tun_bytes_received, self.tun_bytes);
            self.tun_bytes = 0;
        }
        core::mem::take(&mut self.queued)
    }
}

/// One pass over an indication list.
struct Walk<O: Os> {
    list: NonNull<WskDatagramIndication>,
    /// The record holding the walk's reference, once a data packet needed it.
    record: Option<u16>,
    /// No record can be had for this list: data goes the copy path.
    no_record: bool,
    batch: RxBatch<O>,
}

impl<O: Os> Walk<O> {
    fn record<P: Peers<KeyOf<O>>>(&mut self, link: &Link<O, P>) -> Option<u16> {
        if self.record.is_none() && !self.no_record {
            self.record = link.shared.rx.take_record(link, self.list);
            self.no_record = self.record.is_none();
        }
        self.record
    }
}

/// WskReceiveFromEvent: every datagram of `list`, then STATUS_PENDING iff
/// one of them is still retained.
///
/// # Safety
/// `list` is a list WSK delivered to this socket, valid until this returns
/// or, if retained, until released.
pub(crate) unsafe fn receive_indication<O: Os, P: Peers<KeyOf<O>>>(
    link: &Link<O, P>,
    list: NonNull<WskDatagramIndication>,
) -> NtStatus {
    let shared = &*link.shared;
    let now = shared.os.now();
    let mut walk = Walk { list, record: None, no_record: link.is_detached(), batch: RxBatch::new() };
    // SAFETY: WSK delivered the list and it stays valid for this call; the
    // walk reference taken with the first retained datagram keeps it from
    // being released before the walk ends ("nothing is read after
    // WskRelease"), and nothing modifies its nodes.
    let walker = unsafe { datagrams(list.as_ptr()) };
    // TransportBytesReceived, added once per list rather than per datagram.
    let mut transport_bytes = 0usize;
    for (n, item) in walker.enumerate() {
        if n == RX_INDICATION_BATCH_MAX {
            shared.drop_packet(DropReason::RxBatchOverflow);
            break;
        }
        match item {
            Ok(datagram) => {
                transport_bytes = transport_bytes.saturating_add(datagram.length);
                receive_datagram(link, &mut walk, &datagram, now);
            }
            Err(IndicationError::NullMdl) => shared.drop_packet(DropReason::RxNullMdl),
            Err(IndicationError::TooManyDatagrams) => shared.drop_packet(DropReason::RxBatchOverflow),
        }
    }
    if transport_bytes > 0 {
        add(&shared.stats.transport_bytes_received, transport_bytes);
    }
    // Before the walk's reference goes: a refused slot drops its own.
    let queued = walk.batch.finish(shared);
    let retained = walk.record.is_some_and(|r| shared.rx.end_walk(r));
    if queued > 0 {
        shared.rx.kick(&shared.os);
    }
    if retained { NtStatus::PENDING } else { NtStatus::SUCCESS }
}

fn receive_datagram<O: Os, P: Peers<KeyOf<O>>>(link: &Link<O, P>, walk: &mut Walk<O>, d: &Datagram, now: Instant) {
    let shared = &*link.shared;
    let Some(from) = link.source_of(d.remote_address) else {
        shared.drop_packet(DropReason::RxNoSource);
        return;
    };
    // SAFETY: the MDL belongs to the indication WSK delivered, valid while
    // the list is (the walk's contract above); it is only read.
    let mdl = unsafe { d.mdl.as_ref() };
    match mdl.mapped_range(d.offset, d.length) {
        Some(at) => {
            // SAFETY: [at, at + length) lies inside this MDL's system-mapped
            // buffer (mapped_range). WSK lent the indication to this socket
            // alone: the driver may read it, and write a unicast datagram
            // in place, until the list is released, which cannot happen
            // before the walk ends (walk reference). Datagrams of one list
            // occupy disjoint bytes, so this is the only reference to them.
            let bytes = unsafe { core::slice::from_raw_parts_mut(at, d.length) };
            receive_in_place(link, walk, bytes, from, now);
        }
        None => {
            let (head, offset) = (d.mdl, d.offset);
            let fill = |buf: &mut [u8]| {
                // SAFETY: the chain belongs to the delivered indication, valid
                // for the walk (as above), and is only read.
                unsafe { copy_chain(head, offset, buf) }
            };
            receive_copy(link, &mut walk.batch, from, d.length, fill, now);
        }
    }
}

/// Copies `dst.len()` bytes starting `offset` bytes into the MDL chain at
/// `head`, following at most [`RX_MDL_CHAIN_MAX`] MDLs.
///
/// # Safety
/// `head` starts a chain of live MDLs whose mapped buffers may be read.
unsafe fn copy_chain(head: NonNull<Mdl>, offset: u32, dst: &mut [u8]) -> Result<(), DropReason> {
    let mut skip = offset as usize;
    let mut written = 0usize;
    let mut next = Some(head);
    for _ in 0..RX_MDL_CHAIN_MAX {
        if written == dst.len() {
            return Ok(());
        }
        let Some(mdl) = next else { break };
        // SAFETY: a live MDL of the chain (caller's contract).
        let mdl = unsafe { mdl.as_ref() };
        let count = mdl.byte_count as usize;
        if skip >= count {
            skip -= count;
        } else {
            let rest = dst.get_mut(written..).ok_or(DropReason::RxUnmapped)?;
            let take = (count - skip).min(rest.len());
            let src = mdl.mapped_range(skip as u32, take).ok_or(DropReason::RxUnmapped)?;
            // SAFETY: `src` is `take` mapped bytes of this MDL's buffer
            // (mapped_range), readable by the caller's contract, and `rest`
            // is at least `take` bytes of the driver's own buffer; the two
            // cannot overlap.
            unsafe { core::ptr::copy_nonoverlapping(src, rest.as_mut_ptr(), take) };
            written += take;
            skip = 0;
        }
        next = NonNull::new(mdl.next);
    }
    if written == dst.len() { Ok(()) } else { Err(DropReason::RxUnmapped) }
}

/// The control plane counts what it accepts (ReceivedControlPackets), as it
/// alone knows whether the socket is still its own.
fn deliver_control<O: Os, P: Peers<KeyOf<O>>>(link: &Link<O, P>, from: core::net::SocketAddr, bytes: &[u8]) {
    link.shared.peers.control_packet(link.id(), from, bytes);
}

fn drop_data<O: Os, P: Peers<KeyOf<O>>>(shared: &Shared<O, P>, reason: DropReason) {
    shared.drop_packet(reason);
    bump(&shared.stats.lost_in_data_packets);
}

/// A datagram whose bytes are one mapped range of the indication.
fn receive_in_place<O: Os, P: Peers<KeyOf<O>>>(
    link: &Link<O, P>,
    walk: &mut Walk<O>,
    bytes: &mut [u8],
    from: core::net::SocketAddr,
    now: Instant,
) {
    let shared = &*link.shared;
    let header = match classify(bytes) {
        Ok(PacketKind::Control) => {
            deliver_control(link, from, bytes);
            return;
        }
        Ok(PacketKind::Data(header)) => header,
        Err(_) => {
            shared.drop_packet(DropReason::RxMalformed);
            return;
        }
    };
    if !walk.batch.enter(shared, header.peer_id) {
        drop_data(shared, DropReason::RxUnknownPeer);
        return;
    }
    let Some(record) = walk.record(link) else {
        // Past the retention budget (or the socket is closing): copy.
        let len = bytes.len();
        return receive_copy(
            link,
            &mut walk.batch,
            from,
            len,
            |buf| {
                buf.copy_from_slice(bytes);
                Ok(())
            },
            now,
        );
    };
    data_into_slot(shared, &mut walk.batch, bytes, Owner::Retained(record), from, now);
}

/// The copy path: `len` bytes put into a pool buffer by `fill`, then
/// classified and, for data, decrypted there.
fn receive_copy<O: Os, P: Peers<KeyOf<O>>>(
    link: &Link<O, P>,
    batch: &mut RxBatch<O>,
    from: core::net::SocketAddr,
    len: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<(), DropReason>,
    now: Instant,
) {
    let shared = &*link.shared;
    let rx = &shared.rx;
    if len > RX_BUFFER_SIZE {
        shared.drop_packet(DropReason::RxTooLong);
        return;
    }
    let Some(index) = rx.buffers.take() else {
        shared.drop_packet(DropReason::RxCopyPoolEmpty);
        return;
    };
    // SAFETY: buffer `index` was just taken from the pool; this is the only
    // reference to it until it is given back or handed to a slot.
    let Some(buf) = (unsafe { rx.buffer(index, len) }) else {
        rx.buffers.put(index);
        shared.drop_packet(DropReason::RxTooLong);
        return;
    };
    if let Err(reason) = fill(buf) {
        rx.buffers.put(index);
        shared.drop_packet(reason);
        return;
    }
    let header = match classify(buf) {
        Ok(PacketKind::Control) => {
            deliver_control(link, from, buf);
            rx.buffers.put(index);
            return;
        }
        Ok(PacketKind::Data(header)) => header,
        Err(_) => {
            rx.buffers.put(index);
            shared.drop_packet(DropReason::RxMalformed);
            return;
        }
    };
    if !batch.enter(shared, header.peer_id) {
        rx.buffers.put(index);
        drop_data(shared, DropReason::RxUnknownPeer);
        return;
    }
    add(&shared.copies.rx_copied_bytes, len);
    data_into_slot(shared, batch, buf, Owner::Copied(index), from, now);
}

/// Decrypts `datagram` in place for the batch's current peer and queues its
/// plaintext in an RX slot kept alive by `owner`. On any failure `owner` is
/// given up (a copy buffer goes back; a record reference was not taken
/// yet).
fn data_into_slot<O: Os, P: Peers<KeyOf<O>>>(
    shared: &Shared<O, P>,
    batch: &mut RxBatch<O>,
    datagram: &mut [u8],
    owner: Owner,
    from: core::net::SocketAddr,
    now: Instant,
) {
    let rx = &shared.rx;
    let give_up = |reason: DropReason| {
        if let Owner::Copied(buffer) = owner {
            rx.buffers.put(buffer);
        }
        drop_data(shared, reason);
    };
    let Some(run) = batch.run.as_mut() else {
        return give_up(DropReason::RxUnknownPeer);
    };
    // The slot first: decrypting commits the packet id, so a packet that
    // then found no slot would be lost for good.
    let Some(slot) = rx.slot_pool.take() else {
        return give_up(DropReason::RxNoSlot);
    };
    let plaintext = match open(shared, run, &mut batch.received_packets, datagram, from, now) {
        Ok(Some(range)) => range,
        Ok(None) => {
            // A keepalive: consumed.
            rx.slot_pool.put(slot);
            if let Owner::Copied(buffer) = owner {
                rx.buffers.put(buffer);
            }
            return;
        }
        Err(reason) => {
            rx.slot_pool.put(slot);
            return give_up(reason);
        }
    };
    let Some(bytes) = datagram.get_mut(plaintext) else {
        rx.slot_pool.put(slot);
        return give_up(DropReason::RxDecrypt);
    };
    let len = bytes.len();
    let (Some(payload), Ok(len32)) = (NonNull::new(bytes.as_mut_ptr()), u32::try_from(len)) else {
        rx.slot_pool.put(slot);
        return give_up(DropReason::RxTooLong);
    };
    match rx.fill(slot, owner, payload, len32) {
        Ok(()) => batch.queue(shared, slot, len32),
        Err(reason) => {
            rx.slot_pool.put(slot);
            give_up(reason);
        }
    }
}

/// Authenticates and decrypts for the run's peer, then applies what a
/// received packet implies: activity, float, keepalive, MSS, source check.
/// `Ok(None)` for a keepalive (consumed), else where the plaintext is. Once
/// decrypted (`Ok` or a later `Err`) the datagram counts in the run's
/// LinkBytesReceived and in `received` (ReceivedDataPackets).
fn open<O: Os, P: Peers<KeyOf<O>>>(
    shared: &Shared<O, P>,
    run: &mut RunPeer<KeyOf<O>>,
    received: &mut u32,
    datagram: &mut [u8],
    from: core::net::SocketAddr,
    now: Instant,
) -> Result<Option<Range<usize>>, DropReason> {
    let crypto = shared.os.crypto();
    let peer = &*run.peer;
    let decrypted = peer.rx.lock().decrypt(crypto, datagram, now.as_secs()).map_err(DropReason::of_rx)?;
    if let Some(epoch) = decrypted.follow_epoch {
        // A failure leaves the sender on its epoch; the receiver already
        // moved, which only costs the peer a later promotion of its own.
        let _ = peer.tx.lock().follow_epoch(crypto, decrypted.key_id, epoch);
    }
    peer.mark_received(now);
    run.link_bytes += datagram.len();
    *received = received.wrapping_add(1);
    if !same_endpoint(&run.remote, &from) {
        shared.peers.float(peer, from);
        // The control plane may have moved the endpoint.
        run.remote = peer.endpoint().remote;
    }
    let plaintext = datagram.get_mut(decrypted.plaintext.clone()).ok_or(DropReason::RxDecrypt)?;
    if is_keepalive(plaintext) {
        return Ok(None);
    }
    if let Some(limit) = peer.mss().and_then(MssLimit::new) {
        // Only a TCP SYN is edited; anything else is left as it is.
        let _ = clamp_mss(plaintext, limit);
    }
    let addrs = ip::addresses(plaintext).ok_or(DropReason::RxNotIp)?;
    if run.allowed_source != Some(addrs.src) {
        if !shared.peers.source_allowed(peer, addrs.src) {
            return Err(DropReason::RxSourceNotAllowed);
        }
        run.allowed_source = Some(addrs.src);
    }
    Ok(Some(decrypted.plaintext))
}

/// TCP: stream bytes through the connection's frame decoder, each
/// complete packet into the copy path.
pub(crate) fn receive_stream<O: Os, P: Peers<KeyOf<O>>>(link: &Link<O, P>, bytes: &[u8]) {
    let shared = &*link.shared;
    let (Some(decoder), Some(from)) = (link.tcp_rx.as_ref(), link.remote()) else {
        shared.drop_packet(DropReason::RxNoSource);
        return;
    };
    add(&shared.stats.transport_bytes_received, bytes.len());
    let now = shared.os.now();
    let mut batch = RxBatch::new();
    let mut broken = false;
    {
        let mut decoder = decoder.lock();
        let mut input = bytes;
        // Each round consumes at least the 2-byte prefix of a frame or the
        // rest of the input, so this ends within bytes.len() / 2 + 1 rounds.
        for _ in 0..=bytes.len() / 2 + 1 {
            match decoder.decode(&mut input) {
                Ok(Some(frame)) => {
                    let packet = frame.bytes();
                    let fill = |buf: &mut [u8]| {
                        buf.copy_from_slice(packet);
                        Ok(())
                    };
                    receive_copy(link, &mut batch, from, packet.len(), fill, now);
                }
                Ok(None) => break,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
    }
    if batch.finish(shared) > 0 {
        shared.rx.kick(&shared.os);
    }
    if broken {
        // The framing is lost for good: the connection is useless.
        shared.drop_packet(DropReason::RxStreamBroken);
        shared.peers.disconnected(link.id(), NtStatus::CONNECTION_ABORTED);
    }
}

/// EvtAdapterReturnRxBuffer.
pub(crate) fn return_buffer<O: Os, P: Peers<KeyOf<O>>>(shared: &Shared<O, P>, return_context: usize) {
    let rx = &shared.rx;
    let index = return_context.checked_sub(1).and_then(|i| u16::try_from(i).ok()).filter(|i| *i < RX_SLOTS_MAX);
    if !index.is_some_and(|index| rx.free_from(index, INDICATED)) {
        shared.drop_packet(DropReason::RxBadReturnContext);
    }
}

/// Queued slots RX Advance takes from the pending queue per lock: 64 bytes
/// of stack, and the lock is held for a few dozen index moves at most.
const RX_ADVANCE_CHUNK: usize = 32;

/// The ring views and extensions of the RX queue.
struct RxRings {
    rings: QueueRings,
    virtual_address: Extension<NetFragmentVirtualAddress>,
    return_context: Extension<NetFragmentReturnContext>,
    checksum: Option<Extension<NetPacketChecksum>>,
}

/// The RX queue (driver-managed buffers).
pub struct RxQueue<O: Os, P: Peers<KeyOf<O>>> {
    shared: Arc<Shared<O, P>>,
    rings: SpinLock<RxRings>,
    cancelled: AtomicBool,
}

impl<O: Os, P: Peers<KeyOf<O>>> RxQueue<O, P> {
    /// # Safety
    /// `rings` is the queue's ring collection and `extensions` were queried
    /// on the same queue; both stay valid until the queue is destroyed,
    /// which drops this value first.
    pub(crate) unsafe fn new(
        shared: Arc<Shared<O, P>>,
        rings: NonNull<NetRingCollection>,
        extensions: &QueueExtensions,
    ) -> Result<Self, NtStatus> {
        // SAFETY: the caller's contract: the OS's collection for this queue.
        let rings = unsafe { QueueRings::from_collection(rings.as_ptr()) }.map_err(|_| NtStatus::INVALID_PARAMETER)?;
        // SAFETY: each extension was queried on this queue (caller's
        // contract) and its storage lives as long as the queue.
        let virtual_address = unsafe { Extension::from_queried(&extensions.fragment_virtual_address) }
            .map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let return_context = match &extensions.fragment_return_context {
            // SAFETY: as above.
            Some(e) => unsafe { Extension::from_queried(e) }.map_err(|_| NtStatus::INVALID_PARAMETER)?,
            None => return Err(NtStatus::INVALID_PARAMETER),
        };
        // SAFETY: as above. A disabled checksum extension is simply absent.
        let checksum = extensions.packet_checksum.as_ref().and_then(|e| unsafe { Extension::from_queried(e) }.ok());
        Ok(Self {
            shared,
            rings: SpinLock::new(RxRings { rings, virtual_address, return_context, checksum }),
            cancelled: AtomicBool::new(false),
        })
    }

    /// Fills one packet and fragment for slot `index`. `false` if the slot
    /// was not queued (nothing written).
    fn indicate(&self, r: &mut RxRings, index: u16, packet: u32, fragment: u32) -> bool {
        let rx = &self.shared.rx;
        let Some(slot) = rx.slots.get(usize::from(index)) else { return false };
        if slot.state.load(Ordering::Acquire) != QUEUED {
            return false;
        }
        // SAFETY: Advance took `index` off the pending queue and the slot is
        // QUEUED: its fields are Advance's until INDICATED is published
        // below (nothing but the holder moves a QUEUED slot).
        let fields = slot.fields.with(|f| unsafe { (*f).payload.map(|p| (p, (*f).len)) });
        let Some((payload, len)) = fields else { return false };
        let written = (|| {
            r.rings.fragments.get_mut(fragment).ok()?.set_rx_payload(len).ok()?;
            r.rings.fragments.extension_mut(&r.virtual_address, fragment).ok()?.virtual_address =
                payload.0.as_ptr().cast();
            // Handle = slot index + 1: never 0 (docs/datapath.md).
            r.rings.fragments.extension_mut(&r.return_context, fragment).ok()?.handle =
                core::ptr::without_provenance_mut(usize::from(index) + 1);
            let p = r.rings.packets.get_mut(packet).ok()?;
            p.fragment_index = fragment;
            p.fragment_count = 1;
            // RX checksum: the extension exists only if the adapter
            // registered RX checksum offload. When it does, both layers are
            // reported Valid: every byte of the plaintext was authenticated
            // by the AEAD tag, so no transit corruption a checksum could
            // catch is possible (ovpn-dco-win reports Valid the same way).
            // NetAdapterCx applies L4 only to TCP/UDP layouts. Without the
            // extension the stack verifies checksums itself.
            if let Some(ext) = &r.checksum {
                let c = r.rings.packets.extension_mut(ext, packet).ok()?;
                c.set_layer3(checksum::RX_VALID).ok()?;
                c.set_layer4(checksum::RX_VALID).ok()?;
            }
            Some(())
        })();
        if written.is_none() {
            // Only an OS that moved the rings' indices under Advance gets
            // here; the elements stay unindicated and the slot, still
            // QUEUED and Advance's alone (a return cannot take it), goes
            // back.
            rx.free_slot(index);
            self.shared.drop_packet(DropReason::RxNoSlot);
            return false;
        }
        // Only now may a return (even a stale one) take the slot: the OS
        // sees the packet when Advance moves BeginIndex after this.
        slot.state.store(INDICATED, Ordering::Release);
        true
    }

    /// Cancel's ring work: every owned packet Ignore (otherwise untouched)
    /// and returned, every owned fragment returned.
    fn ignore_all(r: &mut RxRings) {
        for index in r.rings.packets.owned() {
            if let Ok(p) = r.rings.packets.get_mut(index) {
                p.set_ignore(true);
            }
        }
        let (packet_end, fragment_end) = (r.rings.packets.end(), r.rings.fragments.end());
        let _ = r.rings.packets.set_begin(packet_end);
        let _ = r.rings.fragments.set_begin(fragment_end);
    }

    /// Frees every slot still queued (their lists released as the last
    /// reference goes).
    fn drain_pending(&self) {
        let rx = &self.shared.rx;
        for _ in 0..RX_PENDING_MAX {
            let next = rx.pending.lock().queue.pop_front();
            match next {
                Some(index) => {
                    rx.free_slot(index);
                    self.shared.drop_packet(DropReason::RxCancelled);
                }
                None => break,
            }
        }
    }
}

impl<O: Os, P: Peers<KeyOf<O>>> PacketQueue for RxQueue<O, P> {
    fn start(&self) {
        self.cancelled.store(false, Ordering::SeqCst);
        self.shared.rx.set_accepting(true);
    }

    fn advance(&self) {
        let mut r = self.rings.lock();
        if self.cancelled.load(Ordering::SeqCst) {
            Self::ignore_all(&mut r);
            return;
        }
        let room = r.rings.packets.owned().len().min(r.rings.fragments.owned().len());
        let (packet_begin, fragment_begin) = (r.rings.packets.begin(), r.rings.fragments.begin());
        let (packet_mask, fragment_mask) = (r.rings.packets.mask(), r.rings.fragments.mask());
        let mut filled = 0u32;
        // Queued slots are taken a chunk per pending-lock acquisition, at
        // most as many as there is room for. Each round takes at least one
        // (and indicates it or gives it back): bounded by the pending
        // queue's length.
        let mut chunk = [0u16; RX_ADVANCE_CHUNK];
        for _ in 0..RX_PENDING_MAX {
            let want = ((room - filled) as usize).min(RX_ADVANCE_CHUNK);
            let taken = match chunk.get_mut(..want) {
                Some(out) if want > 0 => self.shared.rx.pending.lock().queue.pop_front_into(out),
                _ => 0,
            };
            if taken == 0 {
                break;
            }
            for &index in chunk.iter().take(taken) {
                let packet = advance_index(packet_mask, packet_begin, filled);
                let fragment = advance_index(fragment_mask, fragment_begin, filled);
                if self.indicate(&mut r, index, packet, fragment) {
                    filled += 1;
                }
            }
        }
        if filled > 0 {
            // Both rings move in the same Advance (datapath facts).
            let _ = r.rings.fragments.set_begin(advance_index(fragment_mask, fragment_begin, filled));
            let _ = r.rings.packets.set_begin(advance_index(packet_mask, packet_begin, filled));
        }
    }

    fn set_notification_enabled(&self, enabled: bool) {
        self.shared.rx.arm(enabled, &self.shared.os);
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.shared.rx.set_accepting(false);
        self.drain_pending();
        Self::ignore_all(&mut self.rings.lock());
    }

    fn stop(&self) {
        self.shared.rx.set_accepting(false);
        self.shared.rx.armed.swap(false, Ordering::AcqRel);
        self.drain_pending();
    }
}
