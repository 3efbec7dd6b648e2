//! The data path alone, for the `direct` cells of `benches/datapath.rs`:
//! two real [`Datapath`] instances (A sends, B receives) driven on the
//! calling thread by a minimal OS that plays NetAdapterCx and WSK without
//! checking anything, so that what is timed is the data path's own code
//! and the AEAD under it.
//!
//! The OS here: real [`HostCrypto`]; a fixed clock; notifications that do
//! nothing (the harness calls Advance itself, as a busy poll loop would);
//! a transport whose send slots are preallocated buffers and whose `send`
//! only records (slot, length). The rings are NET_RING collections with
//! the real layout, operated the way NetAdapterCx does: TX packets posted
//! by moving EndIndex, taken back where the driver moved BeginIndex; RX
//! elements handed out by EndIndex, indicated packets read where the driver
//! moved BeginIndex, each fragment returned with its ReturnContext, then
//! handed out again. One round:
//!
//! 1. A's TX ring is posted a batch of packets whose fragments point at
//!    preallocated inner IPv4/UDP packets (never modified);
//! 2. A's TX Advance drains the previous batch (completed) and encrypts
//!    this one into send slots and sends;
//! 3. the harness puts each datagram on the wire: one copy into a
//!    preallocated receive buffer of B's, described by an MDL and a
//!    WSK_DATAGRAM_INDICATION, the batch as one list; then completes the
//!    send;
//! 4. B's `receive_from` decrypts in place and retains the list;
//! 5. B's RX Advance indicates the packets into B's RX ring;
//! 6. the harness, as the upper layer, checks every delivered packet
//!    (length, first and last 16 bytes, which carry the packet's number;
//!    every byte of one packet per batch, or of all with `--full-check`)
//!    and returns it; the last return releases the list.
//!
//! Nothing is allocated inside the timed loop; the bench's allocator
//! counts this thread's allocations to prove it.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System, alloc_zeroed, dealloc};
use std::cell::{Cell, UnsafeCell};
use std::net::SocketAddr;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ovpn_dco::control::actions::TransportId;
use ovpn_dco::control::peers::{Endpoint, Peer};
use ovpn_dco::control::stats::DeviceStats;
use ovpn_dco::crypto::Cipher;
use ovpn_dco::crypto::host::HostCrypto;
use ovpn_dco::datapath::rx::RxQueue;
use ovpn_dco::datapath::tx::TxQueue;
use ovpn_dco::datapath::{CloseProgress, Datapath, Occupancy};
use ovpn_dco::netcx::extension::NetExtension;
use ovpn_dco::netcx::fragment::NetFragment;
use ovpn_dco::netcx::mdl::{Mdl, flags};
use ovpn_dco::netcx::packet::NetPacket;
use ovpn_dco::netcx::ring::{NetRingCollection, advance_index, range_count};
use ovpn_dco::netcx::wsk::{WskBuf, WskDatagramIndication};
use ovpn_dco::ntstatus::NtStatus;
use ovpn_dco::os::host::os_ring::OsRing;
use ovpn_dco::os::host::wsk::sockaddr::SockAddrInet;
use ovpn_dco::os::{
    AdapterDatapath, Instant as OsInstant, Os, PacketQueue, QueueExtensions, SEND_SLOT_SIZE, SendSlot, SocketEvents,
    Transport,
};
use ovpn_dco::proto::PeerId;

use super::p2p::{self, P2p};

// ------------------------------------------------------------ allocations

/// The bench's allocator: the system's, counting each thread's allocations.
pub struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

/// Allocations this thread made so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.try_with(Cell::get).unwrap_or(0)
}

// SAFETY: every call is forwarded to System unchanged; counting touches a
// const-initialised thread-local Cell with no destructor, which allocates
// nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: GlobalAlloc's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

// ------------------------------------------------------------ the OS

/// Send slots the lean transport offers (as the WSK model in the bench).
const SEND_SLOTS: u16 = 256;

/// One socket: its send slots, what was sent and not yet taken by the
/// harness, what was released.
pub struct Wire {
    slots: Box<[UnsafeCell<[u8; SEND_SLOT_SIZE]>]>,
    /// `slot << 16 | len` of each send since the harness last took them.
    sent: Box<[AtomicU32]>,
    /// Per entry of `sent`: `SINGLE` (a `send`), the datagram count (the
    /// first of a `send_batch`), or `MEMBER` (a later one of that batch).
    request: Box<[AtomicU32]>,
    sent_len: AtomicUsize,
    releases: AtomicU64,
    last_released: AtomicPtr<WskDatagramIndication>,
    closed: AtomicBool,
    events: Mutex<Option<Arc<dyn SocketEvents>>>,
}

// SAFETY: a slot's buffer is touched only by its owner: the data path from
// taking the slot until `send`, the harness from `send` until it completes
// the slot (Transport::slot_buffer's contract). Everything else is atomic
// or locked.
unsafe impl Sync for Wire {}

impl Wire {
    fn new(events: Arc<dyn SocketEvents>) -> Self {
        Self {
            slots: (0..SEND_SLOTS).map(|_| UnsafeCell::new([0; SEND_SLOT_SIZE])).collect(),
            sent: (0..SEND_SLOTS).map(|_| AtomicU32::new(0)).collect(),
            request: (0..SEND_SLOTS).map(|_| AtomicU32::new(SINGLE)).collect(),
            sent_len: AtomicUsize::new(0),
            releases: AtomicU64::new(0),
            last_released: AtomicPtr::new(std::ptr::null_mut()),
            closed: AtomicBool::new(false),
            events: Mutex::new(Some(events)),
        }
    }

    /// Records a datagram of `slot` (its first `len` bytes) as request kind
    /// `request`; false if it cannot be taken.
    fn record(&self, at: usize, slot: SendSlot, len: usize, request: u32) -> bool {
        if at >= self.sent.len() || len > SEND_SLOT_SIZE || usize::from(slot.0) >= self.slots.len() {
            return false;
        }
        self.sent[at].store(u32::from(slot.0) << 16 | len as u32, Ordering::Release);
        self.request[at].store(request, Ordering::Release);
        true
    }

    /// The `i`-th send since the last [`Wire::clear_sent`]: (slot, length).
    fn sent(&self, i: usize) -> (u16, usize) {
        let v = self.sent[i].load(Ordering::Acquire);
        ((v >> 16) as u16, (v & 0xffff) as usize)
    }

    fn clear_sent(&self) {
        self.sent_len.store(0, Ordering::Release);
    }
}

/// `Wire::request` of a single send, and of a later datagram of a batch.
const SINGLE: u32 = 0;
const MEMBER: u32 = u32::MAX;

pub struct LeanTransport(Arc<Wire>);

impl Transport for LeanTransport {
    fn send_slots(&self) -> u16 {
        SEND_SLOTS
    }

    unsafe fn slot_buffer(&self, slot: SendSlot) -> NonNull<[u8; SEND_SLOT_SIZE]> {
        NonNull::new(self.0.slots[usize::from(slot.0)].get()).expect("slot buffer")
    }

    fn send(&self, slot: SendSlot, len: usize, _remote: SocketAddr) -> Result<(), NtStatus> {
        let at = self.0.sent_len.load(Ordering::Acquire);
        if !self.0.record(at, slot, len, SINGLE) {
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        self.0.sent_len.store(at + 1, Ordering::Release);
        Ok(())
    }

    fn send_batch(&self, batch: &[(SendSlot, usize)], _remote: SocketAddr) -> Result<(), NtStatus> {
        let at = self.0.sent_len.load(Ordering::Acquire);
        for (k, &(slot, len)) in batch.iter().enumerate() {
            let request = if k == 0 { batch.len() as u32 } else { MEMBER };
            if !self.0.record(at + k, slot, len, request) {
                return Err(NtStatus::INSUFFICIENT_RESOURCES);
            }
        }
        self.0.sent_len.store(at + batch.len(), Ordering::Release);
        Ok(())
    }

    unsafe fn release(&self, list: NonNull<WskDatagramIndication>) {
        self.0.last_released.store(list.as_ptr(), Ordering::Release);
        self.0.releases.fetch_add(1, Ordering::AcqRel);
    }

    fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.events.lock().unwrap().take();
    }
}

/// The kernel services, minimal: nothing is checked or counted.
pub struct LeanOs {
    wire: Mutex<Option<Arc<Wire>>>,
}

/// The fixed time the lean OS reports (the data path only stamps activity
/// with it).
const NOW: OsInstant = OsInstant::from_millis(1_000_000);

impl Os for LeanOs {
    type Crypto = HostCrypto;
    type Transport = LeanTransport;

    fn crypto(&self) -> &HostCrypto {
        &HostCrypto
    }

    fn now(&self) -> OsInstant {
        NOW
    }

    fn notify_rx(&self) {}

    fn notify_tx(&self) {}

    fn set_link_state(&self, _up: bool) {}

    fn schedule_timer(&self, _due: OsInstant) {}

    fn open_udp(
        &self,
        _local: SocketAddr,
        _remote: Option<SocketAddr>,
        _ipv6_only: bool,
        events: Arc<dyn SocketEvents>,
    ) -> Result<LeanTransport, NtStatus> {
        let wire = Arc::new(Wire::new(events));
        *self.wire.lock().unwrap() = Some(wire.clone());
        Ok(LeanTransport(wire))
    }

    fn open_tcp(
        &self,
        _local: SocketAddr,
        _remote: SocketAddr,
        _events: Arc<dyn SocketEvents>,
    ) -> Result<LeanTransport, NtStatus> {
        Err(NtStatus::NOT_SUPPORTED)
    }
}

pub type LeanDp = Datapath<LeanOs, P2p>;

// ------------------------------------------------------------ OS memory

/// Zeroed memory the OS side owns, 64-byte aligned (a NET_RING's alignment,
/// enough for every element and extension payload).
struct Region {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Region {
    fn new(size: usize) -> Self {
        let layout = Layout::from_size_align(size.max(1), 64).expect("region size");
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).expect("out of memory");
        Self { ptr, layout }
    }

    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// An 8-byte extension payload per element, 8 bytes apart.
struct OsExtension {
    memory: Region,
    mask: u32,
}

impl OsExtension {
    const STRIDE: usize = 8;

    fn new(count: u32) -> Self {
        Self { memory: Region::new(count as usize * Self::STRIDE), mask: count - 1 }
    }

    fn query(&self) -> NetExtension {
        NetExtension::new(self.memory.as_ptr(), Self::STRIDE, true)
    }

    fn slot(&self, index: u32) -> *mut usize {
        self.query().element(index & self.mask).cast()
    }

    fn read(&self, index: u32) -> usize {
        // SAFETY: a masked index into the live region, 8-aligned; read only
        // for elements the OS owns again.
        unsafe { self.slot(index).read() }
    }

    fn write(&self, index: u32, value: usize) {
        // SAFETY: as above, for an element the OS owns.
        unsafe { self.slot(index).write(value) }
    }
}

/// A queue's memory: packet and fragment rings, the fragment virtual-address
/// extension and (RX) the fragment return-context extension.
struct OsQueue {
    packets: OsRing,
    fragments: OsRing,
    virtual_address: OsExtension,
    return_context: Option<OsExtension>,
    collection: Box<NetRingCollection>,
}

impl OsQueue {
    /// NET_PACKET is 12 bytes, align 4; NET_FRAGMENT 8 bytes, align 8.
    const PACKET_STRIDE: u16 = 12;
    const FRAGMENT_STRIDE: u16 = 8;

    fn new(count: u32, rx: bool) -> Self {
        let packets = OsRing::new(Self::PACKET_STRIDE, count);
        let fragments = OsRing::new(Self::FRAGMENT_STRIDE, count);
        let collection = Box::new(NetRingCollection::new(packets.ring(), fragments.ring()));
        Self {
            packets,
            fragments,
            virtual_address: OsExtension::new(count),
            return_context: rx.then(|| OsExtension::new(count)),
            collection,
        }
    }

    fn collection(&self) -> NonNull<NetRingCollection> {
        NonNull::from(&*self.collection)
    }

    fn extensions(&self) -> QueueExtensions {
        QueueExtensions {
            fragment_virtual_address: self.virtual_address.query(),
            fragment_return_context: self.return_context.as_ref().map(OsExtension::query),
            packet_checksum: None,
        }
    }
}

// ------------------------------------------------------------ the wire

/// B's receive side of the wire: one indication list per batch, with a
/// receive buffer and MDL per datagram, all made once.
struct Indications {
    nodes: NonNull<WskDatagramIndication>,
    mdls: NonNull<Mdl>,
    buffers: NonNull<[u8; SEND_SLOT_SIZE]>,
    /// The remote address every node names; boxed so its address is stable.
    sender: Box<SockAddrInet>,
    capacity: usize,
}

impl Indications {
    fn new(capacity: usize, sender: SocketAddr) -> Self {
        let mut sender = Box::new(SockAddrInet::new(sender));
        let sender_ptr = sender.as_sockaddr();
        let buffers: Box<[[u8; SEND_SLOT_SIZE]]> = vec![[0u8; SEND_SLOT_SIZE]; capacity].into_boxed_slice();
        let buffers = NonNull::new(Box::into_raw(buffers).cast::<[u8; SEND_SLOT_SIZE]>()).unwrap();
        let mdls: Box<[Mdl]> = (0..capacity)
            .map(|i| {
                // SAFETY: i < capacity: inside the buffers' allocation.
                let va = unsafe { buffers.as_ptr().add(i) }.cast();
                Mdl {
                    next: std::ptr::null_mut(),
                    size: size_of::<Mdl>() as i16,
                    mdl_flags: flags::MAPPED_TO_SYSTEM_VA | flags::SOURCE_IS_NONPAGED_POOL,
                    process: std::ptr::null_mut(),
                    mapped_system_va: va,
                    start_va: va,
                    byte_count: 0,
                    byte_offset: 0,
                }
            })
            .collect();
        let mdls = NonNull::new(Box::into_raw(mdls).cast::<Mdl>()).unwrap();
        let nodes: Box<[WskDatagramIndication]> = (0..capacity)
            .map(|i| WskDatagramIndication {
                next: std::ptr::null_mut(),
                // SAFETY: i < capacity.
                buffer: WskBuf { mdl: unsafe { mdls.as_ptr().add(i) }, offset: 0, length: 0 },
                control_info: std::ptr::null(),
                control_info_length: 0,
                remote_address: sender_ptr,
            })
            .collect();
        let nodes = NonNull::new(Box::into_raw(nodes).cast::<WskDatagramIndication>()).unwrap();
        Self { nodes, mdls, buffers, sender, capacity }
    }

    /// Datagram `i` of the next list: `bytes` into its receive buffer (the
    /// wire's one write, a NIC's DMA), its MDL and node set to them.
    ///
    /// The list is WSK's again (released, or never retained).
    fn put(&mut self, i: usize, bytes: &[u8]) {
        assert!(i < self.capacity && bytes.len() <= SEND_SLOT_SIZE);
        // SAFETY: i < capacity; the list and its buffers are the OS side's
        // (no retained list points into them: the previous one was
        // released), and nothing else references them now.
        unsafe {
            let buffer = self.buffers.as_ptr().add(i).cast::<u8>();
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer, bytes.len());
            (*self.mdls.as_ptr().add(i)).byte_count = bytes.len() as u32;
            let node = self.nodes.as_ptr().add(i);
            (*node).buffer.length = bytes.len();
            (*node).next = std::ptr::null_mut();
            if i > 0 {
                (*node.sub(1)).next = node;
            }
        }
    }

    fn head(&self) -> NonNull<WskDatagramIndication> {
        self.nodes
    }
}

impl Drop for Indications {
    fn drop(&mut self) {
        // SAFETY: each pointer came from Box::into_raw of a `capacity`-long
        // slice in `new`; freed once, after every list was released.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.nodes.as_ptr(), self.capacity)));
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.mdls.as_ptr(), self.capacity)));
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.buffers.as_ptr(), self.capacity)));
        }
    }
}

// ------------------------------------------------------------ the pair

/// How the upper layer checks delivered packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Length, first and last 16 bytes of every packet; every byte of one
    /// packet per batch (a different one each round).
    Sampled,
    /// Every byte of every packet.
    Full,
}

#[derive(Clone, Copy, Debug)]
pub struct DirectSetup {
    pub cipher: Cipher,
    pub size: usize,
    /// Packets per round.
    pub batch: usize,
    pub check: Check,
}

/// What the direct cell found besides its rate.
pub struct DirectResult {
    /// Bytes the data paths copied (RX copy path, TX gathers) in the timed
    /// part, per delivered inner byte.
    pub copies_per_byte: f64,
    pub problems: Vec<String>,
}

struct Node {
    dp: Arc<LeanDp>,
    os: Arc<LeanOs>,
    wire: Arc<Wire>,
    events: Option<Arc<dyn SocketEvents>>,
}

impl Node {
    fn new(cipher: Cipher, local: SocketAddr, remote: SocketAddr, keys: (u8, u8)) -> Node {
        let os = Arc::new(LeanOs { wire: Mutex::new(None) });
        let peer = Arc::new(Peer::new(PeerId::new(1).unwrap(), Endpoint { local, remote }, None, None, NOW));
        p2p::install(&peer, cipher, keys.0, keys.1);
        let dp = Arc::new(Datapath::new(os.clone(), P2p::new(peer), Arc::new(DeviceStats::default())));
        dp.open_udp(TransportId(1), local, Some(remote), false).expect("open the UDP socket");
        let wire = os.wire.lock().unwrap().clone().expect("the socket's wire");
        let events = wire.events.lock().unwrap().clone();
        Node { dp, os, wire, events }
    }

    fn copied_bytes(&self) -> u64 {
        let s = self.dp.copies();
        s.rx_copied_bytes.load(Ordering::Relaxed) + s.tx_copied_bytes.load(Ordering::Relaxed)
    }

    fn drops(&self) -> String {
        self.dp.drops().nonzero().map(|(r, n)| format!("{r:?}={n}")).collect::<Vec<_>>().join(",")
    }
}

/// A sending and a receiving instance with their queues and the OS memory
/// behind them. Field order is drop order: queues before their rings.
struct Pair {
    tx: TxQueue<LeanOs, P2p>,
    rx: RxQueue<LeanOs, P2p>,
    a: Node,
    b: Node,
    tx_mem: OsQueue,
    rx_mem: OsQueue,
    indications: Indications,
    /// The inner packets A sends, packet `k` of a batch stamped `k`.
    inner: Vec<Box<[u8]>>,
    batch: u32,
    check: Check,
    /// Where B's RX BeginIndex was after the last round.
    rx_seen: (u32, u32),
    rounds: u64,
    delivered: u64,
    problems: Vec<String>,
}

/// Ring elements per queue: room for two batches on TX (one completed and
/// waiting for the drain, one being posted).
fn ring_size(batch: usize) -> u32 {
    (2 * batch + 1).next_power_of_two().max(256) as u32
}

impl Pair {
    fn new(s: &DirectSetup) -> Pair {
        let (la, lb): (SocketAddr, SocketAddr) = ("10.0.0.1:1194".parse().unwrap(), "10.0.0.2:1194".parse().unwrap());
        let a = Node::new(s.cipher, la, lb, (0x11, 0x22));
        let b = Node::new(s.cipher, lb, la, (0x22, 0x11));
        let count = ring_size(s.batch);
        let tx_mem = OsQueue::new(count, false);
        let rx_mem = OsQueue::new(count, true);
        // SAFETY: the rings and extensions are this pair's and outlive the
        // queues (dropped first, field order).
        let tx = unsafe { a.dp.create_tx_queue(tx_mem.collection(), tx_mem.extensions()) }.expect("TX queue");
        // SAFETY: as above.
        let rx = unsafe { b.dp.create_rx_queue(rx_mem.collection(), rx_mem.extensions()) }.expect("RX queue");
        tx.start();
        rx.start();
        // Driver-managed RX buffers: every element goes to the driver at once.
        rx_mem.fragments.set_end(count - 1);
        rx_mem.packets.set_end(count - 1);
        let inner = (0..s.batch)
            .map(|k| {
                let mut p = p2p::template(s.size);
                p2p::stamp(&mut p, k as u32);
                p.into_boxed_slice()
            })
            .collect();
        Pair {
            tx,
            rx,
            a,
            b,
            tx_mem,
            rx_mem,
            indications: Indications::new(s.batch, la),
            inner,
            batch: s.batch as u32,
            check: s.check,
            rx_seen: (0, 0),
            rounds: 0,
            delivered: 0,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 20 {
            self.problems.push(p);
        }
    }

    /// NetAdapterCx posts a batch of packets on A's TX ring.
    fn post_tx(&mut self) {
        let m = &self.tx_mem;
        if m.packets.room() < self.batch || m.fragments.room() < self.batch {
            let msg = format!("round {}: A's TX ring not drained", self.rounds);
            self.problem(msg);
            return;
        }
        let (p_end, f_end, mask) = (m.packets.end(), m.fragments.end(), m.packets.mask());
        for (k, packet) in self.inner.iter().enumerate() {
            let (p, f) = (advance_index(mask, p_end, k as u32), advance_index(mask, f_end, k as u32));
            let mut element = NetPacket::default();
            element.fragment_index = f;
            element.fragment_count = 1;
            let mut fragment = NetFragment::default();
            let len = packet.len() as u32;
            fragment.set_valid_length(len).expect("length");
            fragment.set_capacity(len).expect("capacity");
            // SAFETY: elements outside [BeginIndex, EndIndex) are the OS's
            // to write (room checked above).
            unsafe {
                m.fragments.element::<NetFragment>(f).write(fragment);
                m.packets.element::<NetPacket>(p).write(element);
            }
            m.virtual_address.write(f, packet.as_ptr() as usize);
        }
        m.fragments.set_end(f_end + self.batch);
        m.packets.set_end(p_end + self.batch);
    }

    /// The wire: A's datagrams into one indication list for B, A's sends
    /// completed. Returns the number of datagrams.
    fn carry(&mut self) -> usize {
        let wire = &self.a.wire;
        let n = wire.sent_len.load(Ordering::Acquire);
        for i in 0..n {
            let (slot, len) = wire.sent(i);
            // SAFETY: the slot was sent and not completed yet: its buffer
            // is the transport's, unchanged, and nobody else touches it.
            let bytes = unsafe { &(&*wire.slots[usize::from(slot)].get())[..len] };
            self.indications.put(i, bytes);
        }
        wire.clear_sent();
        let events = self.a.events.as_ref().expect("A's events");
        let mut i = 0;
        while i < n {
            let (slot, len) = wire.sent(i);
            match wire.request[i].load(Ordering::Acquire) {
                SINGLE => {
                    events.send_complete(SendSlot(slot), NtStatus::SUCCESS, len);
                    i += 1;
                }
                count => {
                    let count = (count as usize).clamp(1, n - i);
                    let bytes = (i..i + count).map(|k| wire.sent(k).1).sum();
                    events.send_batch_complete(SendSlot(slot), NtStatus::SUCCESS, bytes);
                    i += count;
                }
            }
        }
        n
    }

    /// NetAdapterCx reads what B indicated, hands it to the upper layer,
    /// returns every fragment and gives the elements back to the driver.
    fn deliver_rx(&mut self) -> u32 {
        let m = &self.rx_mem;
        let (p_begin, f_begin) = (m.packets.begin(), m.fragments.begin());
        let mask = m.packets.mask();
        let count = range_count(mask, self.rx_seen.0, p_begin);
        let return_context = m.return_context.as_ref().expect("RX return context");
        let sample = (self.rounds % u64::from(self.batch)) as u32;
        let mut bad = 0u32;
        for k in 0..count {
            let p = advance_index(mask, self.rx_seen.0, k);
            // SAFETY: BeginIndex moved past the element: it is the OS's.
            let packet = unsafe { m.packets.element::<NetPacket>(p).read() };
            let f = packet.fragment_index;
            // SAFETY: as above for the packet's fragment.
            let fragment = unsafe { m.fragments.element::<NetFragment>(f).read() };
            let va = m.virtual_address.read(f) as *const u8;
            let len = fragment.valid_length() as usize;
            // SAFETY: the driver indicated this fragment: its memory stays
            // valid and unchanged until its ReturnContext is returned below.
            let bytes = unsafe { std::slice::from_raw_parts(va.add(usize::from(fragment.offset())), len) };
            let want = self.inner.get(k as usize).map(|b| &b[..]).unwrap_or(&[]);
            let ok = packet.fragment_count == 1
                && len == want.len()
                && len >= 16
                && bytes[..16] == want[..16]
                && bytes[len - 16..] == want[len - 16..]
                && ((self.check == Check::Sampled && k != sample) || bytes == want);
            if !ok {
                bad += 1;
            }
            self.b.dp.return_rx_buffer(return_context.read(f));
        }
        let (p_end, f_end) = (m.packets.end(), m.fragments.end());
        m.fragments.set_end(f_end + range_count(mask, self.rx_seen.1, f_begin));
        m.packets.set_end(p_end + count);
        self.rx_seen = (p_begin, f_begin);
        if bad > 0 {
            let msg = format!("round {}: {bad} of {count} delivered packets differ from what was sent", self.rounds);
            self.problem(msg);
        }
        count
    }

    /// One batch from A's TX ring to B's upper layer.
    fn round(&mut self) {
        self.post_tx();
        self.tx.advance();
        let releases = self.b.wire.releases.load(Ordering::Acquire);
        let n = self.carry();
        if n > 0 {
            let events = self.b.events.as_ref().expect("B's events");
            // SAFETY: the list is valid until released (the harness touches
            // it again only after the release, checked below).
            let status = unsafe { events.receive_from(self.indications.head()) };
            if status != NtStatus::PENDING {
                let msg = format!("round {}: B did not retain the list ({status:?})", self.rounds);
                self.problem(msg);
            }
        }
        self.rx.advance();
        let delivered = self.deliver_rx();
        self.delivered += u64::from(delivered);
        let released = self.b.wire.releases.load(Ordering::Acquire) - releases;
        let head = self.b.wire.last_released.load(Ordering::Acquire);
        if delivered != self.batch
            || n != self.batch as usize
            || (released, head) != (1, self.indications.head().as_ptr())
        {
            let msg = format!(
                "round {}: sent {n}, delivered {delivered} of {}, lists released {released}",
                self.rounds, self.batch
            );
            self.problem(msg);
        }
        self.rounds += 1;
    }

    /// Drains A, stops both queues, closes both sockets; every problem found.
    fn finish(mut self) -> Vec<String> {
        // The last batch's completions are drained by one more Advance.
        self.tx.advance();
        let m = &self.tx_mem;
        if m.packets.begin() != m.packets.end() || m.fragments.begin() != m.fragments.end() {
            self.problem("A's TX ring not returned at the end".into());
        }
        self.tx.cancel();
        self.tx.advance();
        self.tx.stop();
        self.rx.cancel();
        self.rx.advance();
        self.rx.stop();
        for (name, n) in [("A", &mut self.a), ("B", &mut self.b)] {
            n.events = None;
            let progress = n.dp.close_transport();
            if progress != CloseProgress::Closed {
                self.problems.push(format!("{name}: socket did not close: {progress:?}"));
            }
            if n.dp.occupancy() != Occupancy::default() {
                self.problems.push(format!("{name}: data path tables in use at the end: {:?}", n.dp.occupancy()));
            }
            let drops = n.drops();
            if !drops.is_empty() {
                self.problems.push(format!("{name}: drops {drops}"));
            }
            if !n.wire.closed.load(Ordering::Acquire) {
                self.problems.push(format!("{name}: transport not closed"));
            }
        }
        std::mem::take(&mut self.problems)
    }
}

/// The direct cell, driven one round at a time so that the bench can
/// measure it in turns with its baselines.
pub struct DirectCell {
    pair: Pair,
    size: usize,
}

impl DirectCell {
    pub fn new(s: &DirectSetup) -> Self {
        Self { pair: Pair::new(s), size: s.size }
    }

    /// One batch from A's TX ring to B's upper layer; the packets delivered.
    pub fn round(&mut self) -> u64 {
        let before = self.pair.delivered;
        self.pair.round();
        self.pair.delivered - before
    }

    /// Bytes both data paths copied so far (RX copy path, TX gathers).
    pub fn copied_bytes(&self) -> u64 {
        self.pair.a.copied_bytes() + self.pair.b.copied_bytes()
    }

    /// Drains, stops and closes everything; every problem found over the
    /// whole run, given the `packets` and `copied` bytes and `allocations`
    /// of its measured part.
    pub fn finish(self, packets: u64, copied: u64, allocations: u64) -> DirectResult {
        let mut problems = self.pair.finish();
        if packets == 0 {
            problems.push("nothing delivered".into());
        }
        if allocations > 0 {
            problems.push(format!("{allocations} allocations inside the timed loop"));
        }
        DirectResult { copies_per_byte: copied as f64 / (packets * self.size as u64).max(1) as f64, problems }
    }
}
