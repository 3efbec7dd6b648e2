//! NetAdapterCx, played in user mode for one adapter's RX and TX queues.
//!
//! [`HostNetAdapter`] creates both queues of any [`AdapterDatapath`] over
//! rings with the real layout (64-byte header, elements from offset 64,
//! strides larger than the elements), drives Start / Advance /
//! SetNotificationEnabled / Cancel / Stop from one poll thread per queue, and
//! plays the rest of the OS: an upper layer that receives, holds and returns
//! RX buffers, and a protocol that sends TX packets from OS-owned memory.
//! What NetAdapterCx does is `netadaptercx-datapath-facts.md`; every rule a
//! real kernel punishes is checked and reported to the shared [`Verifier`].
//!
//! # How writes the driver must not make are found
//! Every ring and extension array has a shadow: what the OS last wrote
//! there. After each callback into the driver (after each run of
//! ReturnRxBuffer calls), every byte the driver did not own (elements
//! outside `[BeginIndex, EndIndex)`, stride padding, header fields other
//! than BeginIndex/NextIndex/Scratch) is compared with the shadow; that also
//! finds writes made between callbacks, because each OS write first compares
//! the element or header bytes it replaces, so none is erased unseen. Elements the driver gives back (BeginIndex
//! moved) become the shadow as they are. TX payload memory is compared with
//! its image at completion, then poisoned and kept a while to catch late
//! writes. The driver's own threads may write elements it owns at any time;
//! they are never read then.
//!
//! # What index checks cannot see
//! On a ring whose n − 1 elements the driver all owns (the RX packet ring is
//! offered whole), every index lies in `[BeginIndex, EndIndex]`: a
//! BeginIndex moved back by k is the same value as one moved forward by
//! n − k, for any OS. The model then sees packets the driver never wrote
//! and reports them (FragmentCount 0). On rings the driver owns part of
//! (TX, the RX fragment ring under MDL-pool back-pressure) a backwards move
//! is reported as such.

use core::mem::offset_of;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::boxed::Box;
use std::collections::VecDeque;
use std::string::String;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::wake::Wakeup;
use std::thread::{self, JoinHandle};
use std::time::Instant;
use std::vec::Vec;

use super::memory::{Block, Damage, ElementArray, foreign_slice, read_foreign_into};
use super::verifier::{LoanKind, QueueKind, Rule, Verifier};
use crate::netcx::extension::{NetExtension, NetPacketChecksum};
use crate::netcx::fragment::{MAX_LENGTH, MAX_OFFSET, NetFragment};
use crate::netcx::packet::{Layer2Type, Layer3Type, NetPacket, NetPacketLayout};
use crate::netcx::ring::{
    IndexRange, NET_RING_ELEMENTS_OFFSET, NetRing, NetRingCollection, advance_index, range_count,
};
use crate::ntstatus::NtStatus;
use crate::os::{AdapterDatapath, PacketQueue, QueueExtensions};

const BEGIN_INDEX_OFFSET: usize = offset_of!(NetRing, begin_index);
const END_INDEX_OFFSET: usize = offset_of!(NetRing, end_index);
const PACKET_SIZE: usize = size_of::<NetPacket>();
const FRAGMENT_SIZE: usize = size_of::<NetFragment>();
/// Extension payloads: a pointer (virtual address, return context), or the
/// one-byte checksum.
const POINTER_SIZE: usize = size_of::<usize>();
const CHECKSUM_SIZE: usize = size_of::<NetPacketChecksum>();
/// NET_PACKET byte 11: Ignore bit 0, Scratch bit 1 (wdk-abi-facts.md §2.1).
const PACKET_FLAGS_BYTE: usize = 11;
const PACKET_IGNORE: u8 = 0x01;
const PACKET_SCRATCH: u8 = 0x02;
/// NET_FRAGMENT Scratch, bit 62 (wdk-abi-facts.md §2.2).
const FRAGMENT_SCRATCH: u64 = 1 << 62;

/// Completed TX payload blocks kept poisoned, to catch writes after
/// completion. A model choice: enough to span a few ring generations.
const TX_QUARANTINE: usize = 64;
/// TX payload blocks that passed quarantine kept for reuse instead of
/// freed (a long run would otherwise allocate per packet). A model choice:
/// a few rings' worth.
const TX_BLOCK_POOL: usize = 256;
/// Poison of completed TX payload memory.
const TX_POISON: u8 = 0xDD;
/// Filler of the bytes before a TX fragment's Offset and of the backfill.
const TX_LEAD_FILL: u8 = 0xEE;
const TX_BACKFILL_FILL: u8 = 0xBB;
/// How long a poll thread sleeps between Advance calls while draining
/// (cancel) or while waiting for a lagging fragment BeginIndex.
const DRAIN_POLL: Duration = Duration::from_millis(1);
/// Extra time [`HostNetAdapter::stop`] gives a poll thread beyond the
/// configured timeouts before it is declared stuck in a callback.
const THREAD_MARGIN: Duration = Duration::from_secs(2);

/// Sizes and strides of one queue's rings and extensions. Sizes must be
/// powers of two above 1; strides at least the element size and keeping
/// elements aligned. Strides larger than the elements prove the driver
/// honours ElementStride and the extension stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingGeometry {
    pub packets: u32,
    pub fragments: u32,
    /// ElementStride of the packet ring (NET_PACKET is 12 bytes, align 4).
    pub packet_stride: u16,
    /// ElementStride of the fragment ring (NET_FRAGMENT is 8 bytes, align 8).
    pub fragment_stride: u16,
    /// Stride of the fragment virtual-address extension (8-byte payload).
    pub virtual_address_stride: usize,
    /// Stride of the RX fragment return-context extension (8-byte payload).
    pub return_context_stride: usize,
    /// Stride of the RX packet checksum extension (1-byte payload).
    pub checksum_stride: usize,
}

impl Default for RingGeometry {
    fn default() -> Self {
        Self {
            packets: 16,
            fragments: 32,
            packet_stride: 20,
            fragment_stride: 24,
            virtual_address_stride: 16,
            return_context_stride: 24,
            checksum_stride: 5,
        }
    }
}

/// How long the upper layer keeps an indicated RX buffer before the OS
/// returns it (TCP reassembly and AFD hold NIC buffers indefinitely).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Returned at the next poll.
    Immediate,
    /// Returned once this much time has passed.
    For(Duration),
    /// Returned when the test calls [`HostNetAdapter::release_held`].
    UntilReleased,
}

/// What the model's OS does; the defaults are a small adapter with odd
/// strides and some back-pressure.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub rx: RingGeometry,
    pub tx: RingGeometry,
    /// MaximumFrameSize: an RX fragment's Capacity may not exceed it; larger
    /// TX frames (beyond the backfill) are dropped before posting.
    pub maximum_frame_size: u32,
    /// Entries of the RX queue's MDL pool: the fragment EndIndex is only
    /// extended while fragments the driver owns plus fragments held
    /// upstream stay below it.
    pub rx_mdl_pool: u32,
    /// Whether the RX packet checksum extension exists (checksum offload
    /// capabilities registered).
    pub rx_checksum: bool,
    pub hold: Hold,
    /// PayloadBackfill: bytes in front of the first TX fragment's payload,
    /// counted in its ValidLength; the driver may write them.
    pub tx_backfill: u16,
    /// Offset of the first TX fragment (its VirtualAddress points this far
    /// before the data, like an MDL's byte offset). At most 1023.
    pub tx_first_fragment_offset: u16,
    /// MaximumNumberOfFragments for TX; packets needing more are bounced
    /// into one fragment.
    pub tx_max_fragments: u16,
    /// How long stop waits for the upper layer to return held buffers.
    pub upper_layer_timeout: Duration,
    /// How long stop waits, after Cancel, for both rings to empty.
    pub stop_timeout: Duration,
    /// Advances the driver may hold TX fragments but no TX packet before
    /// the stall is reported.
    pub tx_stall_advances: u32,
    /// What the model keeps of the traffic for the test to inspect.
    pub record: Record,
}

/// What the upper layer and the protocol keep of the traffic. Every check
/// runs in both modes; only the test's copy of the data differs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Record {
    /// Every delivered RX packet and completed TX packet, in
    /// [`HostNetAdapter::delivered`] and [`HostNetAdapter::completed`].
    #[default]
    Everything,
    /// Counts only (long runs, benchmarks): delivered bytes go to the sink
    /// ([`HostNetAdapter::on_deliver`]) and are dropped, completed payloads
    /// are reused by the generator ([`HostNetAdapter::generate`]).
    Counts,
}

/// The upper layer's look at each delivered RX packet (its bytes, all
/// fragments concatenated), on the RX poll thread.
pub type RxSink = Box<dyn Fn(&[u8]) + Send + Sync>;

/// The protocol making TX packets on demand, on the TX poll thread, when the
/// queue of [`HostNetAdapter::send`] is empty and the rings have room: gets
/// the packet's id and a payload buffer to fill (cleared), returns how many
/// fragments to post it in, or `None` to send nothing now.
pub type TxGenerator = Box<dyn FnMut(u64, &mut Vec<u8>) -> Option<u16> + Send>;

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            rx: RingGeometry::default(),
            tx: RingGeometry::default(),
            maximum_frame_size: 1500,
            rx_mdl_pool: 24,
            rx_checksum: false,
            hold: Hold::Immediate,
            tx_backfill: 0,
            tx_first_fragment_offset: 0,
            tx_max_fragments: 8,
            upper_layer_timeout: Duration::from_secs(2),
            stop_timeout: Duration::from_secs(5),
            tx_stall_advances: 8,
            record: Record::Everything,
        }
    }
}

/// An RX packet the upper layer received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveredPacket {
    /// The payload: every fragment's `ValidLength` bytes from
    /// `VirtualAddress + Offset`, concatenated.
    pub bytes: Vec<u8>,
    pub fragments: u16,
    pub layout: NetPacketLayout,
    /// The checksum extension, when it exists.
    pub checksum: Option<NetPacketChecksum>,
}

/// A packet the protocol sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxPacket {
    /// The frame after the backfill (an IP packet for this adapter).
    pub payload: Vec<u8>,
    /// Fragments to split the payload into (at least 1).
    pub fragments: u16,
    /// Posted with Ignore set and no fragments: the driver must pass it
    /// through without transmitting.
    pub ignore: bool,
    /// Layout to post; by default inferred from the IP version nibble.
    pub layout: Option<NetPacketLayout>,
}

impl TxPacket {
    pub fn new(payload: Vec<u8>) -> Self {
        Self { payload, fragments: 1, ignore: false, layout: None }
    }

    /// The same packet in `fragments` pieces.
    pub fn split(mut self, fragments: u16) -> Self {
        self.fragments = fragments.max(1);
        self
    }

    /// A packet NetAdapterCx posts with Ignore = 1 and FragmentCount = 0.
    pub fn ignored() -> Self {
        Self { payload: Vec::new(), fragments: 0, ignore: true, layout: None }
    }
}

/// A TX packet whose completion the OS saw (packet BeginIndex passed it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedTx {
    /// What [`HostNetAdapter::send`] returned.
    pub id: u64,
    pub payload: Vec<u8>,
    pub ignored: bool,
}

/// The OS above the adapter, when a program rather than a test plays it
/// (the host tunnel: a TUN device). Without one, the model records every
/// delivered and completed packet for the test to inspect
/// ([`HostNetAdapter::delivered`], [`HostNetAdapter::completed`]). Either
/// way, what reaches it has passed every check of the model.
pub trait UpperLayer: Send + Sync + 'static {
    /// An RX packet the driver indicated and the model validated, read in
    /// place: `fragments` are the driver's buffers (each fragment's
    /// `ValidLength` bytes at `VirtualAddress + Offset`), borrowed for the
    /// call, as the stack above NetAdapterCx reads them before the buffers
    /// go back to the driver (as [`Hold`] says).
    fn deliver(&self, fragments: &[&[u8]]);

    /// The end of one RX poll's deliveries (a stack that batches them
    /// writes them now).
    fn flush(&self) {}

    /// A TX packet whose completion the OS saw.
    fn completed(&self, packet: CompletedTx);
}

/// Fragments of one RX packet the upper layer reads in place; a packet of
/// more is copied into one buffer first (the data path indicates one).
pub const DELIVER_FRAGMENTS_MAX: usize = 8;

/// Accounting of one adapter across queue generations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Non-Ignore packets the driver indicated.
    pub rx_packets_indicated: u64,
    /// Their ValidLength sum (valid packets).
    pub rx_bytes_indicated: u64,
    pub rx_packets_dropped_invalid: u64,
    pub rx_packets_ignored: u64,
    /// EvtAdapterReturnRxBuffer calls.
    pub rx_fragments_returned: u64,
    /// Most fragments held upstream at once.
    pub rx_max_held_fragments: u64,
    pub tx_packets_posted: u64,
    pub tx_bytes_posted: u64,
    pub tx_packets_completed: u64,
    pub tx_bytes_completed: u64,
    pub tx_dropped_oversize: u64,
    /// Most TX packets the driver owned at once.
    pub tx_max_outstanding_packets: u64,
    pub rx_advances: u64,
    pub tx_advances: u64,
    pub rx_notifies: u64,
    pub tx_notifies: u64,
    /// Notifications that arrived while the queue had not armed them
    /// (harmless to NetAdapterCx, but not what the data path promises).
    pub unarmed_notifies: u64,
}

/// Where a queue is in its life, for notification validity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Life {
    #[default]
    NoQueue,
    Created,
    Started,
    Stopped,
}

#[derive(Default)]
struct SignalState {
    life: Life,
    /// The OS called SetNotificationEnabled(TRUE) and no notify came since.
    armed: bool,
    notified: bool,
    /// New TX source packets.
    work: bool,
    /// The test released held RX buffers.
    release: bool,
    stop: bool,
    notifies: u64,
    unarmed_notifies: u64,
}

/// What wakes one queue's poll thread.
#[derive(Default)]
struct Signal {
    state: Mutex<SignalState>,
    cv: Wakeup,
}

impl Signal {
    fn lock(&self) -> MutexGuard<'_, SignalState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn poke(&self, f: impl FnOnce(&mut SignalState)) {
        f(&mut self.lock());
        self.cv.notify_all();
    }

    /// New TX source packets. Only the first since the poll thread last
    /// looked wakes it: it takes every queued packet when it does.
    fn poke_work(&self) {
        let was = core::mem::replace(&mut self.lock().work, true);
        if !was {
            self.cv.notify_all();
        }
    }

    fn notify(&self, verifier: &Verifier, kind: QueueKind) {
        let mut s = self.lock();
        if matches!(s.life, Life::NoQueue | Life::Stopped) {
            let life = s.life;
            drop(s);
            verifier.report(
                kind,
                Rule::NotifyWithoutQueue,
                std::format!("notify while the queue is {life:?} (ovpn-dco-win crashed notifying a destroyed queue)"),
            );
            return;
        }
        s.notifies += 1;
        if !s.armed {
            s.unarmed_notifies += 1;
        }
        s.armed = false;
        s.notified = true;
        drop(s);
        self.cv.notify_all();
    }

    /// Sleeps until notified, new work, a release, a stop request, or
    /// `deadline`.
    fn wait(&self, deadline: Option<Instant>) {
        let mut s = self.lock();
        loop {
            if s.notified || s.work || s.release || s.stop {
                s.notified = false;
                s.work = false;
                return;
            }
            match deadline {
                None => s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return;
                    }
                    s = self.cv.wait_timeout(s, d - now).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
    }

    fn take_stop(&self) -> bool {
        core::mem::take(&mut self.lock().stop)
    }

    fn take_release(&self) -> bool {
        core::mem::take(&mut self.lock().release)
    }
}

/// `NetRxQueueNotifyMoreReceivedPacketsAvailable` and
/// `NetTxQueueNotifyMoreCompletedPacketsAvailable` for one adapter: what a
/// test's `Os::notify_rx`/`notify_tx` call. Cheap to clone; valid across
/// queue re-creation; a notification while no queue exists is a violation.
#[derive(Clone)]
pub struct Notifier {
    rx: Arc<Signal>,
    tx: Arc<Signal>,
    verifier: Arc<Verifier>,
}

impl core::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self { rx: Arc::default(), tx: Arc::default(), verifier }
    }

    /// NetRxQueueNotifyMoreReceivedPacketsAvailable: any thread.
    pub fn notify_rx(&self) {
        self.rx.notify(&self.verifier, QueueKind::Rx);
    }

    /// NetTxQueueNotifyMoreCompletedPacketsAvailable: any thread.
    pub fn notify_tx(&self) {
        self.tx.notify(&self.verifier, QueueKind::Tx);
    }

    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }
}

/// One NET_RING allocation with its shadow.
struct RingMemory {
    array: ElementArray,
}

impl RingMemory {
    fn new(stride: u16, count: u32, element_size: usize) -> Self {
        let size = NetRing::allocation_size(stride, count).expect("ring size overflows");
        let mut array = ElementArray::new(
            size,
            NET_RING_ELEMENTS_OFFSET,
            stride as usize,
            element_size,
            count,
            BEGIN_INDEX_OFFSET..NET_RING_ELEMENTS_OFFSET,
        );
        // SAFETY: the block is the model's, 64-aligned and at least 128
        // bytes (allocation_size), and not handed to any driver yet.
        unsafe { NetRing::init(array.block().as_ptr().cast(), stride, count) };
        array.resync();
        Self { array }
    }

    fn ring(&self) -> *mut NetRing {
        self.array.block().as_ptr().cast()
    }

    fn begin(&self) -> u32 {
        self.array.block().atomic_u32(BEGIN_INDEX_OFFSET).load(Ordering::Acquire)
    }

    /// Hands elements up to `end` to the driver: Release, after the
    /// elements were written.
    fn set_end(&mut self, end: u32) {
        self.array.guard_header();
        self.array.block().atomic_u32(END_INDEX_OFFSET).store(end, Ordering::Release);
        self.array.note_header_write(END_INDEX_OFFSET, &end.to_le_bytes());
    }
}

/// The collection handed to the driver; points into the queue's own rings.
struct Collection(Box<NetRingCollection>);

// SAFETY: the collection only holds addresses of rings owned by the same
// QueueMemory, which moves with it; it is never written after creation.
unsafe impl Send for Collection {}

/// Everything NetAdapterCx allocates for one queue.
struct QueueMemory {
    packets: RingMemory,
    fragments: RingMemory,
    virtual_address: ElementArray,
    return_context: Option<ElementArray>,
    checksum: Option<ElementArray>,
    collection: Collection,
}

fn extension_array(count: u32, stride: usize, payload: usize) -> ElementArray {
    assert!(stride >= payload && stride % payload == 0, "extension stride must fit and align its payload");
    ElementArray::new(count as usize * stride, 0, stride, payload, count, 0..0)
}

impl QueueMemory {
    fn new(g: &RingGeometry, rx: bool, checksum: bool) -> Self {
        assert!(g.packet_stride as usize >= PACKET_SIZE && g.packet_stride % 4 == 0, "packet stride");
        assert!(g.fragment_stride as usize >= FRAGMENT_SIZE && g.fragment_stride % 8 == 0, "fragment stride");
        let packets = RingMemory::new(g.packet_stride, g.packets, PACKET_SIZE);
        let fragments = RingMemory::new(g.fragment_stride, g.fragments, FRAGMENT_SIZE);
        let collection = Collection(Box::new(NetRingCollection::new(packets.ring(), fragments.ring())));
        Self {
            virtual_address: extension_array(g.fragments, g.virtual_address_stride, POINTER_SIZE),
            return_context: rx.then(|| extension_array(g.fragments, g.return_context_stride, POINTER_SIZE)),
            checksum: (rx && checksum).then(|| extension_array(g.packets, g.checksum_stride, CHECKSUM_SIZE)),
            packets,
            fragments,
            collection,
        }
    }

    fn collection(&self) -> NonNull<NetRingCollection> {
        NonNull::from(&*self.collection.0)
    }

    fn extensions(&self) -> QueueExtensions {
        let ext = |a: &ElementArray| NetExtension::new(a.block().as_ptr(), a.stride(), true);
        QueueExtensions {
            fragment_virtual_address: ext(&self.virtual_address),
            fragment_return_context: self.return_context.as_ref().map(ext),
            packet_checksum: self.checksum.as_ref().map(ext),
        }
    }
}

/// The model's view of what the driver owns on one ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Owned {
    begin: u32,
    end: u32,
}

/// Driver callbacks the poll threads make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Callback {
    Start,
    Advance,
    SetNotificationEnabled,
    Cancel,
    Stop,
    ReturnRxBuffer,
}

/// What one callback gave back: `[from, to)` on each ring.
#[derive(Clone, Copy, Debug)]
struct Returned {
    packets: (u32, u32),
    fragments: (u32, u32),
}

/// One queue's memory and the checks around every callback into the
/// driver.
struct Core {
    kind: QueueKind,
    mem: QueueMemory,
    packets: Owned,
    fragments: Owned,
    verifier: Arc<Verifier>,
    /// An index went wrong: nothing the driver does on this queue can be
    /// interpreted any more, so no more callbacks are made.
    failed: bool,
    /// Inside a run of ReturnRxBuffer calls: the memory check around each
    /// is left to one check after the run ([`Core::end_returns`]).
    in_returns: bool,
}

impl Core {
    fn new(kind: QueueKind, mem: QueueMemory, verifier: Arc<Verifier>) -> Self {
        Self {
            kind,
            mem,
            packets: Owned::default(),
            fragments: Owned::default(),
            verifier,
            failed: false,
            in_returns: false,
        }
    }

    /// A run of ReturnRxBuffer calls (the upper layer giving back what is
    /// due) starts. Between two of them the model writes no ring memory, and
    /// an element the driver did not own cannot be handed back (adopted), so
    /// a write where the driver owned nothing stays in memory until the
    /// check at [`Core::end_returns`], which runs before the model writes
    /// anything again: every such write is still found, reported against
    /// the run instead of one call. Index checks stay per call.
    fn begin_returns(&mut self) {
        self.in_returns = true;
    }

    fn end_returns(&mut self, calls: usize) {
        self.in_returns = false;
        if calls > 0 && !self.failed {
            self.check_memory(&std::format!("before or during a run of {calls} ReturnRxBuffer calls"));
        }
    }

    fn report(&self, rule: Rule, message: String) {
        self.verifier.report(self.kind, rule, message);
    }

    fn packet_mask(&self) -> u32 {
        self.mem.packets.array.mask()
    }

    fn fragment_mask(&self) -> u32 {
        self.mem.fragments.array.mask()
    }

    /// Compares every byte the driver does not own with the shadow.
    fn check_memory(&mut self, when: &str) {
        let (p, f) = (self.packets, self.fragments);
        let mut damage = Vec::new();
        self.mem.packets.array.check(p.begin, p.end, &mut damage);
        self.report_damage("packet ring", p, &damage, when);
        damage.clear();
        self.mem.fragments.array.check(f.begin, f.end, &mut damage);
        self.report_damage("fragment ring", f, &damage, when);
        damage.clear();
        self.mem.virtual_address.check(f.begin, f.end, &mut damage);
        self.report_damage("virtual-address extension", f, &damage, when);
        if let Some(rc) = self.mem.return_context.as_mut() {
            damage.clear();
            rc.check(f.begin, f.end, &mut damage);
            self.report_damage("return-context extension", f, &damage, when);
        }
        if let Some(cs) = self.mem.checksum.as_mut() {
            damage.clear();
            cs.check(p.begin, p.end, &mut damage);
            self.report_damage("checksum extension", p, &damage, when);
        }
    }

    fn report_damage(&self, what: &str, owned: Owned, damage: &[Damage], when: &str) {
        for d in damage {
            let (rule, message) = match *d {
                Damage::Header(offset) => {
                    (Rule::RingHeaderWrite, std::format!("{what} header byte {offset} written {when}"))
                }
                Damage::Element(index) => (
                    Rule::UnownedWrite,
                    std::format!(
                        "{what} element {index} written {when}; the driver owned [{}, {})",
                        owned.begin,
                        owned.end
                    ),
                ),
                Damage::Padding(index) => {
                    (Rule::PaddingWrite, std::format!("{what}: stride padding after element {index} written {when}"))
                }
                Damage::Tail(offset) => {
                    (Rule::PaddingWrite, std::format!("{what}: allocation tail at byte {offset} written {when}"))
                }
            };
            self.report(rule, message);
        }
    }

    /// Checks a new BeginIndex: forward, within `[begin, end]`.
    fn check_begin(&self, ring: &str, owned: Owned, new: u32, mask: u32, cb: Callback) -> bool {
        if new > mask {
            self.report(Rule::BeginPastEnd, std::format!("{ring} BeginIndex {new} is not a ring index, in {cb:?}"));
            return false;
        }
        if range_count(mask, owned.begin, new) <= range_count(mask, owned.begin, owned.end) {
            return true;
        }
        // Outside [begin, end]: closer behind begin reads as a move backwards.
        if range_count(mask, new, owned.begin) <= range_count(mask, owned.end, new) {
            self.report(
                Rule::IndexBackwards,
                std::format!("{ring} BeginIndex moved backwards from {} to {new} in {cb:?}", owned.begin),
            );
        } else {
            self.report(
                Rule::BeginPastEnd,
                std::format!(
                    "{ring} BeginIndex moved from {} to {new}, past EndIndex {}, in {cb:?}",
                    owned.begin,
                    owned.end
                ),
            );
        }
        false
    }

    /// Runs one callback with the checks before and after it. `None` if the
    /// queue has failed (no callback is made then).
    fn invoke(&mut self, cb: Callback, f: impl FnOnce()) -> Option<Returned> {
        if self.failed {
            return None;
        }
        let (p, fr) = (self.mem.packets.begin(), self.mem.fragments.begin());
        if p != self.packets.begin || fr != self.fragments.begin {
            self.report(
                Rule::IndexMovedOutsideCallback,
                std::format!(
                    "BeginIndex moved between callbacks (packets {} -> {p}, fragments {} -> {fr}); NetAdapterCx reads it only after Advance",
                    self.packets.begin, self.fragments.begin
                ),
            );
        }
        // No memory check before the callback: nothing the model wrote since
        // the last one was written over a driver's write unseen (the
        // element and header writes check what they replace), so the check
        // after the callback finds whatever was written in between too,
        // against the same ownership.
        f();
        let (p1, f1) = (self.mem.packets.begin(), self.mem.fragments.begin());
        let (pm, fm) = (self.packet_mask(), self.fragment_mask());
        let ok_p = self.check_begin("packet", self.packets, p1, pm, cb);
        let ok_f = self.check_begin("fragment", self.fragments, f1, fm, cb);
        if !self.in_returns {
            self.check_memory(&std::format!("before or during {cb:?}"));
        }
        if !(ok_p && ok_f) {
            self.failed = true;
            return None;
        }
        let returned = Returned { packets: (self.packets.begin, p1), fragments: (self.fragments.begin, f1) };
        self.mem.packets.array.adopt(self.packets.begin, p1);
        self.mem.fragments.array.adopt(self.fragments.begin, f1);
        self.mem.virtual_address.adopt(self.fragments.begin, f1);
        if let Some(rc) = self.mem.return_context.as_mut() {
            rc.adopt(self.fragments.begin, f1);
        }
        if let Some(cs) = self.mem.checksum.as_mut() {
            cs.adopt(self.packets.begin, p1);
        }
        self.packets.begin = p1;
        self.fragments.begin = f1;
        Some(returned)
    }

    fn driver_packets(&self) -> u32 {
        range_count(self.packet_mask(), self.packets.begin, self.packets.end)
    }

    fn driver_fragments(&self) -> u32 {
        range_count(self.fragment_mask(), self.fragments.begin, self.fragments.end)
    }

    fn rings_empty(&self) -> bool {
        self.driver_packets() == 0 && self.driver_fragments() == 0
    }

    fn read_u64(array: &ElementArray, index: u32) -> u64 {
        let mut b = [0u8; 8];
        array.read_element(index, &mut b);
        u64::from_le_bytes(b)
    }

    fn read_packet(&self, index: u32) -> [u8; PACKET_SIZE] {
        let mut b = [0u8; PACKET_SIZE];
        self.mem.packets.array.read_element(index, &mut b);
        b
    }
}

/// NET_PACKET as stored (wdk-abi-facts.md §2.1): FragmentIndex @0,
/// FragmentCount @4, Layout @6, flags @11.
fn packet_bytes(fragment_index: u32, fragment_count: u16, layout: NetPacketLayout, flags: u8) -> [u8; PACKET_SIZE] {
    let mut b = [0u8; PACKET_SIZE];
    b[0..4].copy_from_slice(&fragment_index.to_le_bytes());
    b[4..6].copy_from_slice(&fragment_count.to_le_bytes());
    b[6..11].copy_from_slice(&layout.to_bytes());
    b[PACKET_FLAGS_BYTE] = flags;
    b
}

/// The fragment fields the NetAdapterCx verifier poisons before RX Advance:
/// ValidLength, Capacity and Offset all ones.
fn poisoned_rx_fragment() -> u64 {
    let mut f = NetFragment::default();
    // All three fit their fields by definition.
    let _ = (f.set_valid_length(MAX_LENGTH), f.set_capacity(MAX_LENGTH), f.set_offset(MAX_OFFSET));
    f.bits()
}

/// Packets seen so far: all of them ([`Record::Everything`]) or a count.
struct Seen<T> {
    items: Vec<T>,
    count: usize,
}

/// Waits on `wakeup` until `seen` counts `count` packets; false on timeout.
fn wait_for_count<T>(seen: &Mutex<Seen<T>>, wakeup: &Wakeup, count: usize, timeout: Duration) -> bool {
    let (guard, _) =
        wakeup.wait_timeout_while(lock(seen), timeout, |d| d.count < count).unwrap_or_else(|p| p.into_inner());
    guard.count >= count
}

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Self { items: Vec::new(), count: 0 }
    }
}

/// State shared by the adapter's test-facing handle and its poll threads.
#[derive(Default)]
struct Shared {
    delivered: Mutex<Seen<DeliveredPacket>>,
    delivered_cv: Wakeup,
    completed: Mutex<Seen<CompletedTx>>,
    completed_cv: Wakeup,
    source: Mutex<VecDeque<(u64, TxPacket)>>,
    /// Signalled when the TX poll thread takes packets from the source.
    source_cv: Wakeup,
    next_tx_id: AtomicU64,
    stats: Mutex<Stats>,
    upper: Option<Arc<dyn UpperLayer>>,
    sink: OnceLock<RxSink>,
    generator: Mutex<Option<TxGenerator>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn stats(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut lock(&self.stats));
    }
}

/// Buffers of one RX packet, held by the upper layer.
struct Held {
    /// Recycled through [`RxRunner::spare`]: no allocation per packet.
    contexts: Vec<usize>,
    /// None: until the test releases it.
    due: Option<Instant>,
}

/// The OS side of the RX queue, on its poll thread.
struct RxRunner<D: AdapterDatapath> {
    datapath: Arc<D>,
    queue: D::RxQueue,
    core: Core,
    config: ModelConfig,
    shared: Arc<Shared>,
    signal: Arc<Signal>,
    held: VecDeque<Held>,
    held_fragments: u32,
    cancelled: bool,
    /// Reused per packet: context lists of returned packets, the packets
    /// due for return, the contexts one [`RxRunner::return_due`] gives
    /// back, the bytes of the packet being delivered, and its fragments
    /// (address and length of each, valid while its contexts are
    /// outstanding).
    spare_contexts: Vec<Vec<usize>>,
    due: Vec<Held>,
    returning: Vec<usize>,
    bytes: Vec<u8>,
    pieces: Vec<(usize, usize)>,
    /// Counters of the current callback, added to [`Stats`] once per
    /// callback rather than once per packet.
    pending: RxCounts,
}

/// RX counters gathered over one callback.
#[derive(Default)]
struct RxCounts {
    indicated: u64,
    bytes: u64,
    ignored: u64,
    invalid: u64,
}

/// Context lists kept for reuse at most (one per RX ring element is plenty).
const SPARE_CONTEXT_LISTS_MAX: usize = 1024;

impl<D: AdapterDatapath> RxRunner<D> {
    /// Adds the counters gathered since the last flush to [`Stats`].
    fn flush_counts(&mut self) {
        let c = core::mem::take(&mut self.pending);
        let held = u64::from(self.held_fragments);
        self.shared.stats(|s| {
            s.rx_packets_indicated += c.indicated;
            s.rx_bytes_indicated += c.bytes;
            s.rx_packets_ignored += c.ignored;
            s.rx_packets_dropped_invalid += c.invalid;
            s.rx_max_held_fragments = s.rx_max_held_fragments.max(held);
        });
    }

    fn call(&mut self, cb: Callback) -> bool {
        let queue = &self.queue;
        let returned = self.core.invoke(cb, || match cb {
            Callback::Start => queue.start(),
            Callback::Advance => queue.advance(),
            Callback::SetNotificationEnabled => queue.set_notification_enabled(true),
            Callback::Cancel => queue.cancel(),
            Callback::Stop => queue.stop(),
            Callback::ReturnRxBuffer => unreachable!("returns go through return_buffer"),
        });
        if cb == Callback::Advance {
            self.shared.stats(|s| s.rx_advances += 1);
        }
        self.consume(returned)
    }

    /// EvtAdapterReturnRxBuffer once per context, back to back (as
    /// NetAdapterCx returns a batch the upper layer gave back): the loans
    /// come back under one verifier lock, the index checks run after each
    /// call, the ring memory check after the last (see
    /// [`Core::begin_returns`]), so a write made during any of them is
    /// found, if not which one made it.
    fn return_buffers(&mut self, contexts: &[usize]) {
        if contexts.is_empty() {
            return;
        }
        self.core.verifier.give_back_all(QueueKind::Rx, LoanKind::RxReturnContext, contexts);
        self.core.begin_returns();
        for &context in contexts {
            let datapath = &self.datapath;
            let returned = self.core.invoke(Callback::ReturnRxBuffer, || datapath.return_rx_buffer(context));
            self.consume(returned);
        }
        self.core.end_returns(contexts.len());
        let n = contexts.len() as u64;
        self.shared.stats(|s| s.rx_fragments_returned += n);
    }

    /// Hands the driver every packet element and as many fragment elements
    /// as the MDL pool allows, each zeroed (fragment length fields
    /// poisoned) first.
    fn offer(&mut self) {
        if self.cancelled || self.core.failed {
            return;
        }
        let pm = self.core.packet_mask();
        let free = pm - self.core.driver_packets();
        let end = self.core.packets.end;
        for index in IndexRange::new(pm, end, advance_index(pm, end, free)) {
            self.core.mem.packets.array.write_element(index, &[0; PACKET_SIZE]);
            if let Some(cs) = self.core.mem.checksum.as_mut() {
                cs.write_element(index, &[0; CHECKSUM_SIZE]);
            }
        }
        if free > 0 {
            self.core.packets.end = advance_index(pm, end, free);
            self.core.mem.packets.set_end(self.core.packets.end);
        }

        let fm = self.core.fragment_mask();
        let owned = self.core.driver_fragments();
        let mdl_free = self.config.rx_mdl_pool.saturating_sub(owned + self.held_fragments);
        let free = (fm - owned).min(mdl_free);
        let end = self.core.fragments.end;
        let poison = poisoned_rx_fragment().to_le_bytes();
        for index in IndexRange::new(fm, end, advance_index(fm, end, free)) {
            self.core.mem.fragments.array.write_element(index, &poison);
            self.core.mem.virtual_address.write_element(index, &[0; POINTER_SIZE]);
            if let Some(rc) = self.core.mem.return_context.as_mut() {
                rc.write_element(index, &[0; POINTER_SIZE]);
            }
        }
        if free > 0 {
            self.core.fragments.end = advance_index(fm, end, free);
            self.core.mem.fragments.set_end(self.core.fragments.end);
        }
    }

    /// Translates what the driver indicated: validates, delivers, holds.
    fn consume(&mut self, returned: Option<Returned>) -> bool {
        let Some(r) = returned else { return false };
        let (pm, fm) = (self.core.packet_mask(), self.core.fragment_mask());
        let (f0, f1) = r.fragments;
        let returned_fragments = range_count(fm, f0, f1);
        let mut next_position = 0u32;
        for index in IndexRange::new(pm, r.packets.0, r.packets.1) {
            let b = self.core.read_packet(index);
            if b[PACKET_FLAGS_BYTE] & PACKET_IGNORE != 0 {
                self.pending.ignored += 1;
                if b[..PACKET_FLAGS_BYTE].iter().any(|&x| x != 0)
                    || b[PACKET_FLAGS_BYTE] & !(PACKET_IGNORE | PACKET_SCRATCH) != 0
                {
                    self.core.report(
                        Rule::IgnoredPacketModified,
                        std::format!("packet {index} marked Ignore but otherwise written: {b:02x?}"),
                    );
                }
                continue;
            }
            self.pending.indicated += 1;
            let fragment_index = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let fragment_count = u16::from_le_bytes([b[4], b[5]]);
            if fragment_count == 0 {
                self.core.report(Rule::InvalidRxPacket, std::format!("packet {index}: FragmentCount 0"));
                self.pending.invalid += 1;
                continue;
            }
            let position = range_count(fm, f0, fragment_index);
            if fragment_index > fm
                || position < next_position
                || position + u32::from(fragment_count) > returned_fragments
            {
                self.core.report(
                    Rule::RxFragmentOutOfOrder,
                    std::format!(
                        "packet {index}: fragments [{fragment_index}, +{fragment_count}) are not after the previous packet's within those returned in the same call [{f0}, {f1})"
                    ),
                );
                self.pending.invalid += 1;
                continue;
            }
            next_position = position + u32::from(fragment_count);
            self.translate(index, b, fragment_index, fragment_count);
        }
        if self.pending.indicated > 0
            && let Some(upper) = &self.shared.upper
        {
            upper.flush();
        }
        self.flush_counts();
        r.packets.0 != r.packets.1 || r.fragments.0 != r.fragments.1
    }

    /// One indicated packet whose fragments are in range.
    fn translate(&mut self, index: u32, b: [u8; PACKET_SIZE], first: u32, count: u16) {
        let fm = self.core.fragment_mask();
        let mut contexts = self.spare_contexts.pop().unwrap_or_default();
        contexts.clear();
        self.pieces.clear();
        let mut bytes = core::mem::take(&mut self.bytes);
        bytes.clear();
        // Counting only, one fragment, no upper layer: the sink reads it
        // where it is.
        let in_place = self.shared.upper.is_none() && self.config.record == Record::Counts && count == 1;
        let mut problem: Option<(Rule, String)> = None;
        for k in 0..count {
            let fi = advance_index(fm, first, u32::from(k));
            let fragment = NetFragment::from_bits(Core::read_u64(&self.core.mem.fragments.array, fi));
            let va = Core::read_u64(&self.core.mem.virtual_address, fi) as usize;
            let context = self.core.mem.return_context.as_ref().map_or(0, |rc| Core::read_u64(rc, fi) as usize);
            if context == 0 {
                self.core
                    .report(Rule::ZeroReturnContext, std::format!("packet {index} fragment {fi}: ReturnContext 0"));
            } else {
                self.core.verifier.lend(QueueKind::Rx, LoanKind::RxReturnContext, context);
                contexts.push(context);
            }
            if problem.is_some() {
                continue;
            }
            let (valid, capacity, offset) = (fragment.valid_length(), fragment.capacity(), fragment.offset());
            let unwritten = [
                (offset == MAX_OFFSET, "Offset"),
                (valid == MAX_LENGTH, "ValidLength"),
                (capacity == MAX_LENGTH, "Capacity"),
            ];
            problem = if let Some((_, field)) = unwritten.iter().find(|u| u.0) {
                Some((
                    Rule::UnwrittenRxField,
                    std::format!("packet {index} fragment {fi}: {field} not written (verifier poison)"),
                ))
            } else if va == 0 {
                Some((Rule::InvalidRxPacket, std::format!("packet {index} fragment {fi}: null VirtualAddress")))
            } else if capacity > self.config.maximum_frame_size {
                Some((
                    Rule::InvalidRxPacket,
                    std::format!(
                        "packet {index} fragment {fi}: Capacity {capacity} > MaximumFrameSize {}",
                        self.config.maximum_frame_size
                    ),
                ))
            } else if u64::from(offset) + u64::from(valid) > u64::from(capacity) {
                Some((
                    Rule::InvalidRxPacket,
                    std::format!(
                        "packet {index} fragment {fi}: Offset {offset} + ValidLength {valid} > Capacity {capacity}"
                    ),
                ))
            } else if k > 0 && offset != 0 {
                Some((
                    Rule::InvalidRxPacket,
                    std::format!("packet {index} fragment {fi}: non-first fragment with Offset {offset}"),
                ))
            } else if let Some(r) = self.core.verifier.released_overlap(va..va + capacity as usize) {
                Some((
                    Rule::ReleasedMemory,
                    std::format!(
                        "packet {index} fragment {fi}: [{va:#x}, +{capacity}) points into released memory [{:#x}, {:#x})",
                        r.start,
                        r.end
                    ),
                ))
            } else {
                self.pieces.push((va + offset as usize, valid as usize));
                None
            };
        }
        let due = match self.config.hold {
            _ if problem.is_some() => Some(Instant::now()),
            Hold::Immediate => Some(Instant::now()),
            Hold::For(d) => Some(Instant::now() + d),
            Hold::UntilReleased => None,
        };
        if let Some((rule, message)) = problem {
            self.core.report(rule, message);
            self.pending.invalid += 1;
        } else {
            self.pending.bytes += self.pieces.iter().map(|&(_, len)| len as u64).sum::<u64>();
            if let Some(upper) = &self.shared.upper {
                let n = self.pieces.len();
                if n <= DELIVER_FRAGMENTS_MAX {
                    let mut slices: [&[u8]; DELIVER_FRAGMENTS_MAX] = [&[]; DELIVER_FRAGMENTS_MAX];
                    for (slot, &(addr, len)) in slices.iter_mut().zip(&self.pieces) {
                        // SAFETY: an indicated fragment in range (checked
                        // above: written, mapped for Capacity, not in
                        // released memory); its ReturnContext was just
                        // lent and goes back only after `deliver`
                        // returns, so the driver keeps it alive and
                        // unwritten for the borrow.
                        *slot = unsafe { foreign_slice(addr as *const u8, len) };
                    }
                    upper.deliver(&slices[..n]);
                } else {
                    // More pieces than the stack takes in place: one copy.
                    self.copy_pieces(&mut bytes);
                    upper.deliver(&[&bytes]);
                }
            } else {
                let checksum = self.core.mem.checksum.as_ref().map(|cs| {
                    let mut c = [0u8; 1];
                    cs.read_element(index, &mut c);
                    NetPacketChecksum::from_bits(c[0])
                });
                let view: &[u8] = match self.pieces.first() {
                    Some(&(addr, len)) if in_place => {
                        // SAFETY: the fragment checked above (mapped for
                        // Capacity bytes while its ReturnContext is
                        // outstanding, which it is until the upper layer
                        // returns it after this; Offset + ValidLength ≤
                        // Capacity; no released memory).
                        unsafe { foreign_slice(addr as *const u8, len) }
                    }
                    _ => {
                        self.copy_pieces(&mut bytes);
                        &bytes
                    }
                };
                if let Some(sink) = self.shared.sink.get() {
                    sink(view);
                }
                let mut seen = lock(&self.shared.delivered);
                seen.count += 1;
                if self.config.record == Record::Everything {
                    let mut layout = [0u8; 5];
                    layout.copy_from_slice(&b[6..11]);
                    let layout = NetPacketLayout::from_bytes(layout);
                    seen.items.push(DeliveredPacket { bytes: bytes.clone(), fragments: count, layout, checksum });
                }
                drop(seen);
                self.shared.delivered_cv.notify_all();
            }
        }
        self.bytes = bytes;
        self.held_fragments += contexts.len() as u32;
        self.held.push_back(Held { contexts, due });
    }

    /// The translated packet's bytes, copied out of the driver's buffers
    /// into `bytes`.
    fn copy_pieces(&self, bytes: &mut Vec<u8>) {
        for &(addr, len) in &self.pieces {
            // SAFETY: as in `translate`: a checked fragment (mapped for
            // Capacity bytes, Offset + ValidLength ≤ Capacity, no released
            // memory) whose ReturnContext is outstanding.
            unsafe { read_foreign_into(addr as *const u8, len, bytes) };
        }
    }

    /// Returns held buffers that are due (all of them with `force`).
    fn return_due(&mut self, force: bool) -> bool {
        let released = self.signal.take_release();
        if self.held.is_empty() {
            return false;
        }
        let now = Instant::now();
        let mut due = core::mem::take(&mut self.due);
        // In place, order kept: what is due moves to `due`, the rest stays.
        for _ in 0..self.held.len() {
            let Some(h) = self.held.pop_front() else { break };
            if force || released || h.due.is_some_and(|d| d <= now) {
                due.push(h);
            } else {
                self.held.push_back(h);
            }
        }
        let any = !due.is_empty();
        let mut returning = core::mem::take(&mut self.returning);
        returning.clear();
        for mut h in due.drain(..) {
            self.held_fragments -= h.contexts.len() as u32;
            returning.extend_from_slice(&h.contexts);
            if self.spare_contexts.len() < SPARE_CONTEXT_LISTS_MAX {
                h.contexts.clear();
                self.spare_contexts.push(h.contexts);
            }
        }
        self.due = due;
        self.return_buffers(&returning);
        self.returning = returning;
        any
    }

    fn next_due(&self) -> Option<Instant> {
        self.held.iter().filter_map(|h| h.due).min()
    }

    fn run(mut self) -> Core {
        self.signal.poke(|s| s.life = Life::Started);
        self.call(Callback::Start);
        loop {
            if self.signal.take_stop() {
                break;
            }
            if self.core.failed {
                self.signal.wait(None);
                continue;
            }
            let mut progress = self.return_due(false);
            self.offer();
            progress |= self.call(Callback::Advance);
            if progress {
                continue;
            }
            // Idle: arm the one-shot notification, then sleep.
            self.signal.poke(|s| s.armed = true);
            if self.call(Callback::SetNotificationEnabled) {
                continue;
            }
            self.signal.wait(self.next_due());
        }
        self.stop_sequence();
        self.signal.poke(|s| s.life = Life::Stopped);
        let RxRunner { queue, mut core, .. } = self;
        drop(queue);
        core.check_memory("after Stop");
        core
    }

    /// The upper layer returns what it holds (bounded), Cancel, Advance and
    /// returns until both rings are empty (bounded), Stop.
    fn stop_sequence(&mut self) {
        if self.core.failed {
            return;
        }
        let deadline = Instant::now() + self.config.upper_layer_timeout;
        loop {
            self.return_due(false);
            if self.held.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                self.core.report(
                    Rule::UpperLayerTimeout,
                    std::format!(
                        "{} RX buffers ({} fragments) still held upstream {:?} into stop",
                        self.held.len(),
                        self.held_fragments,
                        self.config.upper_layer_timeout
                    ),
                );
                break;
            }
            let wake = self.next_due().map_or(deadline, |d| d.min(deadline));
            self.signal.wait(Some(wake));
        }
        self.cancelled = true;
        self.call(Callback::Cancel);
        self.drain_and_stop();
    }
}

impl<D: AdapterDatapath> Draining for RxRunner<D> {
    fn core(&self) -> &Core {
        &self.core
    }
    fn call(&mut self, cb: Callback) -> bool {
        RxRunner::call(self, cb)
    }
    fn stop_timeout(&self) -> Duration {
        self.config.stop_timeout
    }
    fn settle(&mut self) -> bool {
        self.return_due(true);
        self.held.is_empty()
    }
}

/// The end of NetAdapterCx's stop sequence, shared by both queues: after
/// Cancel, keep polling Advance (and taking returns) until the driver owns
/// nothing on either ring, then Stop. A driver that never empties its rings
/// would hang a real stop; here it is reported after the stop timeout.
trait Draining {
    fn core(&self) -> &Core;
    fn call(&mut self, cb: Callback) -> bool;
    fn stop_timeout(&self) -> Duration;
    /// Gives back what the upper layer holds that is due; true when it holds
    /// nothing more.
    fn settle(&mut self) -> bool {
        true
    }

    fn drain_and_stop(&mut self) {
        let deadline = Instant::now() + self.stop_timeout();
        loop {
            let settled = self.settle();
            let core = self.core();
            if core.failed {
                return;
            }
            if core.rings_empty() && settled {
                break;
            }
            if Instant::now() >= deadline {
                core.report(
                    Rule::StopTimeout,
                    std::format!(
                        "after Cancel the driver still owns {} packets and {} fragments ({:?}); Stop would hang",
                        core.driver_packets(),
                        core.driver_fragments(),
                        self.stop_timeout()
                    ),
                );
                return;
            }
            if !self.call(Callback::Advance) {
                thread::sleep(DRAIN_POLL);
            }
        }
        self.call(Callback::Stop);
    }
}

/// One posted TX fragment's memory: what it held at post, and which bytes
/// (the backfill) the driver may write.
/// Besides the backfill, the block holds [`TX_LEAD_FILL`] around `data`,
/// and `data` holds the packet payload's bytes `source`: the image it is
/// compared with at completion, without a copy of its own.
struct TxBuffer {
    block: Block,
    writable: core::ops::Range<usize>,
    data: core::ops::Range<usize>,
    source: core::ops::Range<usize>,
}

impl TxBuffer {
    /// Whether every byte but the backfill still is what the OS posted.
    fn intact(&self, payload: &[u8]) -> bool {
        let Some(posted) = payload.get(self.source.clone()) else { return false };
        let (b, w, d) = (&self.block, &self.writable, &self.data);
        b.all_in(0, w.start, TX_LEAD_FILL)
            && b.all_in(w.end, d.start - w.end, TX_LEAD_FILL)
            && b.holds(d.start, posted)
            && b.all_in(d.end, b.len() - d.end, TX_LEAD_FILL)
    }

    /// The first byte (outside the backfill) that differs from what the OS
    /// posted.
    fn first_change(&self, payload: &[u8], current: &mut Vec<u8>) -> usize {
        current.resize(self.block.len(), 0);
        self.block.read(0, current);
        let posted = payload.get(self.source.clone()).unwrap_or(&[]);
        (0..current.len())
            .find(|&i| {
                let expected = match i {
                    _ if self.writable.contains(&i) => return false,
                    _ if self.data.contains(&i) => posted.get(i - self.data.start).copied().unwrap_or(!current[i]),
                    _ => TX_LEAD_FILL,
                };
                current[i] != expected
            })
            .unwrap_or(0)
    }
}

/// A TX packet the driver owns.
struct PostedTx {
    id: u64,
    index: u32,
    bytes: [u8; PACKET_SIZE],
    buffers: Vec<TxBuffer>,
    payload: Vec<u8>,
    ignored: bool,
}

/// What a posted fragment must still hold when it comes back.
#[derive(Clone, Copy)]
struct ExpectedFragment {
    packet_id: u64,
    bits: u64,
    virtual_address: usize,
}

/// The OS side of the TX queue, on its poll thread.
struct TxRunner<Q: PacketQueue> {
    queue: Q,
    core: Core,
    config: ModelConfig,
    shared: Arc<Shared>,
    signal: Arc<Signal>,
    posted: VecDeque<PostedTx>,
    expected: Vec<Option<ExpectedFragment>>,
    quarantine: VecDeque<TxBuffer>,
    stall_advances: u32,
    stall_reported: bool,
    cancelled: bool,
    /// Reused instead of allocated per packet: payload blocks that passed
    /// quarantine, fragment lists, generator payloads ([`Record::Counts`]),
    /// and the buffer completed memory is read into.
    free_blocks: Vec<TxBuffer>,
    spare_lists: Vec<Vec<TxBuffer>>,
    spare_payloads: Vec<Vec<u8>>,
    scratch: Vec<u8>,
}

fn infer_layout(payload: &[u8]) -> NetPacketLayout {
    let mut layout = NetPacketLayout::default();
    layout.set_layer2_type(Layer2Type::NULL);
    match payload.first().map(|b| b >> 4) {
        Some(4) => {
            layout.set_layer3_type(Layer3Type::IPV4_UNSPECIFIED_OPTIONS);
            let _ = layout.set_layer3_header_length(u16::from(payload[0] & 0x0F) * 4);
        }
        Some(6) => {
            layout.set_layer3_type(Layer3Type::IPV6_UNSPECIFIED_EXTENSIONS);
            let _ = layout.set_layer3_header_length(40);
        }
        _ => {}
    }
    layout
}

/// The first byte of `bytes` that is not `fill`.
fn first_not(bytes: &[u8], fill: u8) -> Option<usize> {
    const CHUNK: usize = 64;
    let pattern = [fill; CHUNK];
    let mut chunks = bytes.chunks_exact(CHUNK);
    let clean = chunks.by_ref().all(|c| c == pattern) && chunks.remainder().iter().all(|&b| b == fill);
    if clean { None } else { bytes.iter().position(|&b| b != fill) }
}

/// Piece `i` of `payload` cut into `n` nearly equal pieces (the last ones
/// one byte shorter); `n` is at least 1 and at most the payload's length.
fn piece(payload: &[u8], n: usize, i: usize) -> &[u8] {
    let n = n.clamp(1, payload.len().max(1));
    let (size, extra) = (payload.len() / n, payload.len() % n);
    let at = i * size + i.min(extra);
    &payload[at..at + size + usize::from(i < extra)]
}

/// `payload` in `n` nearly equal pieces (the last ones one byte shorter).
#[cfg(test)]
fn split(payload: &[u8], n: usize) -> Vec<&[u8]> {
    let n = n.clamp(1, payload.len().max(1));
    (0..n).map(|i| piece(payload, n, i)).collect()
}

impl<Q: PacketQueue> TxRunner<Q> {
    fn call(&mut self, cb: Callback) -> bool {
        let queue = &self.queue;
        let returned = self.core.invoke(cb, || match cb {
            Callback::Start => queue.start(),
            Callback::Advance => queue.advance(),
            Callback::SetNotificationEnabled => queue.set_notification_enabled(true),
            Callback::Cancel => queue.cancel(),
            Callback::Stop => queue.stop(),
            Callback::ReturnRxBuffer => unreachable!("no RX returns on a TX queue"),
        });
        if cb == Callback::Advance {
            self.shared.stats(|s| s.tx_advances += 1);
        }
        self.consume(returned)
    }

    fn fragments_needed(&self, p: &TxPacket) -> u32 {
        if p.ignore {
            return 0;
        }
        let limit = u32::from(self.config.tx_max_fragments).min(self.core.fragment_mask()).max(1);
        let wanted = u32::from(p.fragments).clamp(1, (p.payload.len() as u32).max(1));
        // NetAdapterCx bounces packets with too many fragments into one.
        if wanted > limit { 1 } else { wanted }
    }

    /// Writes source packets into the rings while both have room.
    fn post(&mut self) -> bool {
        if self.cancelled || self.core.failed {
            return false;
        }
        let (pm, fm) = (self.core.packet_mask(), self.core.fragment_mask());
        let mut posted = false;
        loop {
            let free_packets = pm - self.core.driver_packets();
            let free_fragments = fm - self.core.driver_fragments();
            if free_packets == 0 {
                break;
            }
            let next = {
                let mut source = lock(&self.shared.source);
                match source.front() {
                    Some((_, p)) if self.fragments_needed(p) <= free_fragments => source.pop_front(),
                    Some(_) => break,
                    None => None,
                }
            };
            if next.is_some() {
                self.shared.source_cv.notify_all();
            }
            let Some((id, packet)) = next.or_else(|| self.generate()) else { break };
            if self.fragments_needed(&packet) > free_fragments {
                // Generated but too many fragments for now: first in line.
                lock(&self.shared.source).push_front((id, packet));
                break;
            }
            if !packet.ignore && packet.payload.len() > self.config.maximum_frame_size as usize {
                self.shared.stats(|s| s.tx_dropped_oversize += 1);
                continue;
            }
            self.write_packet(id, packet);
            posted = true;
        }
        if posted {
            // Fragments first: the driver finds them when it sees the packet.
            self.core.mem.fragments.set_end(self.core.fragments.end);
            self.core.mem.packets.set_end(self.core.packets.end);
            let outstanding = u64::from(self.core.driver_packets());
            self.shared.stats(|s| s.tx_max_outstanding_packets = s.tx_max_outstanding_packets.max(outstanding));
        }
        posted
    }

    /// The protocol's next packet from the generator, if there is one.
    fn generate(&mut self) -> Option<(u64, TxPacket)> {
        let mut generator = lock(&self.shared.generator);
        let generate = generator.as_mut()?;
        let mut payload = self.spare_payloads.pop().unwrap_or_default();
        payload.clear();
        let id = self.shared.next_tx_id.fetch_add(1, Ordering::Relaxed);
        match generate(id, &mut payload) {
            Some(fragments) => Some((id, TxPacket::new(payload).split(fragments))),
            None => {
                self.spare_payloads.push(payload);
                None
            }
        }
    }

    /// A payload block of `len` bytes: one that passed quarantine, or new.
    /// Its bytes are all rewritten by the caller.
    fn take_block(&mut self, len: usize) -> Block {
        match self.free_blocks.iter().rposition(|b| b.block.len() == len.max(1)) {
            Some(i) => self.free_blocks.swap_remove(i).block,
            None => Block::new(len, TX_LEAD_FILL),
        }
    }

    fn write_packet(&mut self, id: u64, packet: TxPacket) {
        let (pm, fm) = (self.core.packet_mask(), self.core.fragment_mask());
        let count = self.fragments_needed(&packet);
        let first = self.core.fragments.end;
        let mut buffers = self.spare_lists.pop().unwrap_or_default();
        let mut source = 0;
        for k in 0..count as usize {
            let chunk = piece(&packet.payload, count as usize, k);
            let (lead, backfill) = if k == 0 {
                (self.config.tx_first_fragment_offset as usize, self.config.tx_backfill as usize)
            } else {
                (0, 0)
            };
            let used = lead + backfill + chunk.len();
            let block = self.take_block(used);
            block.fill(0, lead, TX_LEAD_FILL);
            block.fill(used, block.len() - used, TX_LEAD_FILL);
            block.fill(lead, backfill, TX_BACKFILL_FILL);
            block.write(lead + backfill, chunk);
            let mut f = NetFragment::default();
            f.set_valid_length((backfill + chunk.len()) as u32).expect("TX fragment length");
            f.set_capacity((lead + backfill + chunk.len()) as u32).expect("TX fragment capacity");
            f.set_offset(lead as u16).expect("tx_first_fragment_offset must be at most 1023");
            let fi = advance_index(fm, first, k as u32);
            let va = block.as_ptr() as usize;
            self.core.mem.fragments.array.write_element(fi, &f.bits().to_le_bytes());
            self.core.mem.virtual_address.write_element(fi, &va.to_le_bytes());
            self.expected[fi as usize] = Some(ExpectedFragment { packet_id: id, bits: f.bits(), virtual_address: va });
            buffers.push(TxBuffer {
                block,
                writable: lead..lead + backfill,
                data: lead + backfill..used,
                source: source..source + chunk.len(),
            });
            source += chunk.len();
        }
        self.core.fragments.end = advance_index(fm, first, count);
        let layout = packet.layout.unwrap_or_else(|| infer_layout(&packet.payload));
        let flags = if packet.ignore { PACKET_IGNORE } else { 0 };
        let index = self.core.packets.end;
        let bytes = packet_bytes(first, count as u16, layout, flags);
        self.core.mem.packets.array.write_element(index, &bytes);
        self.core.packets.end = advance_index(pm, index, 1);
        let len = packet.payload.len() as u64;
        self.shared.stats(|s| {
            s.tx_packets_posted += 1;
            s.tx_bytes_posted += len;
        });
        self.posted.push_back(PostedTx { id, index, bytes, buffers, payload: packet.payload, ignored: packet.ignore });
    }

    /// Completions (packet BeginIndex) and returned fragments, each checked
    /// against what was posted.
    fn consume(&mut self, returned: Option<Returned>) -> bool {
        let Some(r) = returned else { return false };
        for index in IndexRange::new(self.core.packet_mask(), r.packets.0, r.packets.1) {
            let Some(posted) = self.posted.pop_front() else { break };
            debug_assert_eq!(posted.index, index, "posted packets are completed in ring order");
            self.complete(posted);
        }
        for index in IndexRange::new(self.core.fragment_mask(), r.fragments.0, r.fragments.1) {
            let Some(e) = self.expected[index as usize].take() else { continue };
            if self.posted.front().is_some_and(|p| p.id <= e.packet_id) {
                self.core.report(
                    Rule::TxFragmentsReturnedEarly,
                    std::format!(
                        "fragment {index} returned while its packet (id {}) is still the driver's",
                        e.packet_id
                    ),
                );
            }
            let bits = Core::read_u64(&self.core.mem.fragments.array, index);
            if (bits ^ e.bits) & !FRAGMENT_SCRATCH != 0 {
                self.core.report(
                    Rule::TxFieldModified,
                    std::format!(
                        "fragment {index}: posted {:?}, returned {:?}",
                        NetFragment::from_bits(e.bits),
                        NetFragment::from_bits(bits)
                    ),
                );
            }
            let va = Core::read_u64(&self.core.mem.virtual_address, index) as usize;
            if va != e.virtual_address {
                self.core.report(
                    Rule::TxFieldModified,
                    std::format!("fragment {index}: VirtualAddress posted {:#x}, returned {va:#x}", e.virtual_address),
                );
            }
        }
        r.packets.0 != r.packets.1 || r.fragments.0 != r.fragments.1
    }

    fn complete(&mut self, posted: PostedTx) {
        let now = self.core.read_packet(posted.index);
        let mut diff = now;
        diff.iter_mut().zip(posted.bytes).for_each(|(a, b)| *a ^= b);
        diff[PACKET_FLAGS_BYTE] &= !PACKET_SCRATCH;
        if diff.iter().any(|&x| x != 0) {
            self.core.report(
                Rule::TxFieldModified,
                std::format!(
                    "packet {} (id {}): posted {:02x?}, returned {now:02x?}",
                    posted.index,
                    posted.id,
                    posted.bytes
                ),
            );
        }
        let mut buffers = posted.buffers;
        for (k, buffer) in buffers.drain(..).enumerate() {
            if !buffer.intact(&posted.payload) {
                let at = buffer.first_change(&posted.payload, &mut self.scratch);
                self.core.report(
                    Rule::TxPayloadModified,
                    std::format!("packet id {} fragment {k}: OS-owned byte {at} changed before completion", posted.id),
                );
            }
            buffer.block.fill(0, buffer.block.len(), TX_POISON);
            self.quarantine.push_back(buffer);
            if self.quarantine.len() > TX_QUARANTINE {
                self.check_quarantined_front();
            }
        }
        self.spare_lists.push(buffers);
        let len = posted.payload.len() as u64;
        self.shared.stats(|s| {
            s.tx_packets_completed += 1;
            s.tx_bytes_completed += len;
        });
        let completed = CompletedTx { id: posted.id, payload: posted.payload, ignored: posted.ignored };
        if let Some(upper) = &self.shared.upper {
            upper.completed(completed);
            return;
        }
        let mut seen = lock(&self.shared.completed);
        seen.count += 1;
        if self.config.record == Record::Everything {
            seen.items.push(completed);
        } else if self.spare_payloads.len() < TX_BLOCK_POOL {
            self.spare_payloads.push(completed.payload);
        }
        drop(seen);
        self.shared.completed_cv.notify_all();
    }

    /// Whether `block` still holds only the poison it got at completion.
    fn poison_intact(core: &Core, scratch: &mut Vec<u8>, block: &Block) {
        if !block.all(TX_POISON) {
            scratch.resize(block.len(), 0);
            block.read(0, scratch);
            let at = first_not(scratch, TX_POISON).unwrap_or(0);
            core.report(
                Rule::TxPayloadModified,
                std::format!(
                    "completed TX buffer at {:#x}: byte {at} written after completion",
                    block.as_ptr() as usize
                ),
            );
        }
    }

    fn check_quarantined_front(&mut self) {
        let Some(buffer) = self.quarantine.pop_front() else { return };
        Self::poison_intact(&self.core, &mut self.scratch, &buffer.block);
        if self.free_blocks.len() < TX_BLOCK_POOL {
            self.free_blocks.push(buffer);
        }
    }

    /// The driver holds fragments but no packet: NetAdapterCx has no reason
    /// to call Advance again, and the fragment ring fills up.
    fn stalled(&mut self) -> bool {
        if self.core.driver_packets() != 0 || self.core.driver_fragments() == 0 {
            self.stall_advances = 0;
            self.stall_reported = false;
            return false;
        }
        self.stall_advances += 1;
        if self.stall_advances >= self.config.tx_stall_advances && !self.stall_reported {
            self.stall_reported = true;
            self.core.report(
                Rule::TxFragmentStall,
                std::format!(
                    "the driver completed every packet but still holds {} fragments after {} Advance calls: TX stalls",
                    self.core.driver_fragments(),
                    self.stall_advances
                ),
            );
        }
        !self.stall_reported
    }

    fn run(mut self) -> Core {
        self.signal.poke(|s| s.life = Life::Started);
        self.call(Callback::Start);
        loop {
            if self.signal.take_stop() {
                break;
            }
            if self.core.failed {
                self.signal.wait(None);
                continue;
            }
            let mut progress = self.post();
            progress |= self.call(Callback::Advance);
            if self.stalled() {
                // Give a lagging fragment BeginIndex a few more Advances.
                thread::sleep(DRAIN_POLL);
                continue;
            }
            if progress {
                continue;
            }
            // SetNotificationEnabled(TRUE) is forwarded only while the
            // driver holds packets.
            if self.core.driver_packets() > 0 {
                self.signal.poke(|s| s.armed = true);
                if self.call(Callback::SetNotificationEnabled) {
                    continue;
                }
            }
            self.signal.wait(None);
        }
        self.stop_sequence();
        self.signal.poke(|s| s.life = Life::Stopped);
        let TxRunner { queue, mut core, quarantine, mut scratch, .. } = self;
        drop(queue);
        core.check_memory("after Stop");
        for buffer in quarantine {
            Self::poison_intact(&core, &mut scratch, &buffer.block);
        }
        core
    }

    fn stop_sequence(&mut self) {
        if self.core.failed {
            return;
        }
        self.cancelled = true;
        self.call(Callback::Cancel);
        self.drain_and_stop();
    }
}

impl<Q: PacketQueue> Draining for TxRunner<Q> {
    fn core(&self) -> &Core {
        &self.core
    }
    fn call(&mut self, cb: Callback) -> bool {
        TxRunner::call(self, cb)
    }
    fn stop_timeout(&self) -> Duration {
        self.config.stop_timeout
    }
}

/// The protocol's end of the TX packet source, for any thread: what it
/// sends is posted to the driver by the TX poll thread, in order.
#[derive(Clone)]
pub struct PacketSource {
    shared: Arc<Shared>,
    notifier: Notifier,
}

impl PacketSource {
    /// Queues `packet` for posting; returns its id (as in [`CompletedTx`]).
    pub fn send(&self, packet: TxPacket) -> u64 {
        let id = self.shared.next_tx_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.source).push_back((id, packet));
        self.notifier.tx.poke_work();
        id
    }

    /// [`PacketSource::send`], once fewer than `limit` packets wait to be
    /// posted (a protocol's send queue is bounded too). Gives the packet
    /// back if that did not happen within `timeout`.
    pub fn send_bounded(&self, packet: TxPacket, limit: usize, timeout: Duration) -> Result<u64, TxPacket> {
        let limit = limit.max(1);
        let mut source = lock(&self.shared.source);
        if source.len() >= limit {
            source = self
                .shared
                .source_cv
                .wait_timeout_while(source, timeout, |s| s.len() >= limit)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if source.len() >= limit {
            return Err(packet);
        }
        let id = self.shared.next_tx_id.fetch_add(1, Ordering::Relaxed);
        source.push_back((id, packet));
        drop(source);
        self.notifier.tx.poke_work();
        Ok(id)
    }
}

impl core::fmt::Debug for PacketSource {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PacketSource").finish_non_exhaustive()
    }
}

struct Running {
    rx: JoinHandle<Core>,
    tx: JoinHandle<Core>,
}

/// NetAdapterCx for one adapter: creates, runs, stops and re-creates the
/// RX and TX queues of `D`, plays the upper layer and the protocol, and
/// reports every ownership violation to the verifier.
pub struct HostNetAdapter<D: AdapterDatapath + 'static> {
    datapath: Arc<D>,
    config: ModelConfig,
    notifier: Notifier,
    shared: Arc<Shared>,
    running: Option<Running>,
    /// Memory of stopped queues, kept (never freed while the adapter lives)
    /// so that late writes are found instead of corrupting the heap.
    retired: Vec<Core>,
}

impl<D> HostNetAdapter<D>
where
    D: AdapterDatapath + 'static,
    D::RxQueue: 'static,
    D::TxQueue: 'static,
{
    /// An adapter over `datapath`, whose `Os` must route `notify_rx` /
    /// `notify_tx` to `notifier`.
    pub fn new(datapath: Arc<D>, notifier: Notifier, config: ModelConfig) -> Self {
        Self { datapath, config, notifier, shared: Arc::default(), running: None, retired: Vec::new() }
    }

    /// An adapter whose received and completed packets go to `upper`
    /// instead of being recorded.
    pub fn with_upper_layer(
        datapath: Arc<D>,
        notifier: Notifier,
        config: ModelConfig,
        upper: Arc<dyn UpperLayer>,
    ) -> Self {
        let shared = Arc::new(Shared { upper: Some(upper), ..Shared::default() });
        Self { datapath, config, notifier, shared, running: None, retired: Vec::new() }
    }

    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.notifier.verifier
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The data path comes up: both queues are created (fresh rings),
    /// started and polled, each from its own thread.
    pub fn start(&mut self) -> Result<(), NtStatus> {
        assert!(self.running.is_none(), "the data path is already running");
        let verifier = self.notifier.verifier.clone();
        let rx_mem = QueueMemory::new(&self.config.rx, true, self.config.rx_checksum);
        // SAFETY: the collection and every ring and extension it points to
        // live in `rx_mem`, which the poll thread keeps until after it has
        // dropped the queue, and the adapter then keeps until it is dropped.
        let rx_queue = unsafe { self.datapath.create_rx_queue(rx_mem.collection(), rx_mem.extensions()) }?;
        self.notifier.rx.poke(|s| *s = SignalState { life: Life::Created, ..SignalState::default() });
        let tx_mem = QueueMemory::new(&self.config.tx, false, false);
        // SAFETY: as for the RX queue.
        let tx_queue = match unsafe { self.datapath.create_tx_queue(tx_mem.collection(), tx_mem.extensions()) } {
            Ok(q) => q,
            Err(status) => {
                drop(rx_queue);
                self.notifier.rx.poke(|s| s.life = Life::Stopped);
                self.retired.push(Core::new(QueueKind::Rx, rx_mem, verifier.clone()));
                self.retired.push(Core::new(QueueKind::Tx, tx_mem, verifier));
                return Err(status);
            }
        };
        self.notifier.tx.poke(|s| *s = SignalState { life: Life::Created, work: true, ..SignalState::default() });

        let rx = RxRunner {
            datapath: self.datapath.clone(),
            queue: rx_queue,
            core: Core::new(QueueKind::Rx, rx_mem, verifier.clone()),
            config: self.config.clone(),
            shared: self.shared.clone(),
            signal: self.notifier.rx.clone(),
            held: VecDeque::new(),
            held_fragments: 0,
            cancelled: false,
            spare_contexts: Vec::new(),
            due: Vec::new(),
            returning: Vec::new(),
            bytes: Vec::new(),
            pieces: Vec::new(),
            pending: RxCounts::default(),
        };
        let tx = TxRunner {
            queue: tx_queue,
            core: Core::new(QueueKind::Tx, tx_mem, verifier),
            config: self.config.clone(),
            shared: self.shared.clone(),
            signal: self.notifier.tx.clone(),
            posted: VecDeque::new(),
            expected: std::vec![None; self.config.tx.fragments as usize],
            quarantine: VecDeque::new(),
            stall_advances: 0,
            stall_reported: false,
            cancelled: false,
            free_blocks: Vec::new(),
            spare_lists: Vec::new(),
            spare_payloads: Vec::new(),
            scratch: Vec::new(),
        };
        let rx = thread::Builder::new().name("netcx-rx-poll".into()).spawn(move || rx.run()).expect("spawn RX poll");
        let tx = thread::Builder::new().name("netcx-tx-poll".into()).spawn(move || tx.run()).expect("spawn TX poll");
        self.running = Some(Running { rx, tx });
        Ok(())
    }

    /// The data path goes down (pause, D3): each queue waits for the upper
    /// layer, is cancelled, drained and stopped; its memory is retired.
    pub fn stop(&mut self) {
        let Some(running) = self.running.take() else { return };
        self.notifier.rx.poke(|s| s.stop = true);
        self.notifier.tx.poke(|s| s.stop = true);
        let limit = self.config.upper_layer_timeout + self.config.stop_timeout + THREAD_MARGIN;
        for (kind, handle) in [(QueueKind::Rx, running.rx), (QueueKind::Tx, running.tx)] {
            let deadline = Instant::now() + limit;
            while !handle.is_finished() && Instant::now() < deadline {
                thread::sleep(DRAIN_POLL);
            }
            if !handle.is_finished() {
                self.notifier.verifier.report(
                    kind,
                    Rule::StopTimeout,
                    std::format!("the poll thread did not finish within {limit:?}: stuck in a driver callback"),
                );
                // Detached: its rings stay allocated with it.
                continue;
            }
            match handle.join() {
                Ok(core) => self.retired.push(core),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }

    /// The protocol sends `packet`; returns its id (as in [`CompletedTx`]).
    pub fn send(&self, packet: TxPacket) -> u64 {
        self.source().send(packet)
    }

    /// A handle through which other threads send (see [`PacketSource`]).
    pub fn source(&self) -> PacketSource {
        PacketSource { shared: self.shared.clone(), notifier: self.notifier.clone() }
    }

    /// The upper layer also hands every delivered RX packet's bytes to
    /// `sink`, on the RX poll thread (one sink per adapter: false if one is
    /// set already).
    pub fn on_deliver(&self, sink: impl Fn(&[u8]) + Send + Sync + 'static) -> bool {
        self.shared.sink.set(Box::new(sink)).is_ok()
    }

    /// The protocol makes packets with `generator` whenever the queue of
    /// [`HostNetAdapter::send`] is empty and the TX rings have room
    /// (replacing any earlier generator). Ids it is given are unique and
    /// shared with `send`'s.
    pub fn generate(&self, generator: impl FnMut(u64, &mut Vec<u8>) -> Option<u16> + Send + 'static) {
        *lock(&self.shared.generator) = Some(Box::new(generator));
        self.notifier.tx.poke(|s| s.work = true);
    }

    /// Stops the generator (packets it made and the TX queue still holds
    /// are sent).
    pub fn stop_generating(&self) {
        lock(&self.shared.generator).take();
    }

    /// RX packets the upper layer received so far (none kept with
    /// [`Record::Counts`]).
    pub fn delivered(&self) -> Vec<DeliveredPacket> {
        lock(&self.shared.delivered).items.clone()
    }

    /// How many RX packets the upper layer received so far.
    pub fn delivered_count(&self) -> usize {
        lock(&self.shared.delivered).count
    }

    /// Waits until at least `count` RX packets were delivered.
    pub fn wait_delivered(&self, count: usize, timeout: Duration) -> bool {
        wait_for_count(&self.shared.delivered, &self.shared.delivered_cv, count, timeout)
    }

    /// TX packets completed so far, in completion (ring) order (none kept
    /// with [`Record::Counts`]).
    pub fn completed(&self) -> Vec<CompletedTx> {
        lock(&self.shared.completed).items.clone()
    }

    /// How many TX packets were completed so far.
    pub fn completed_count(&self) -> usize {
        lock(&self.shared.completed).count
    }

    /// Waits until at least `count` TX packets were completed.
    pub fn wait_completed(&self, count: usize, timeout: Duration) -> bool {
        wait_for_count(&self.shared.completed, &self.shared.completed_cv, count, timeout)
    }

    /// The upper layer lets go of every RX buffer it holds now
    /// ([`Hold::UntilReleased`]); they are returned from the poll thread.
    pub fn release_held(&self) {
        self.notifier.rx.poke(|s| s.release = true);
    }

    pub fn stats(&self) -> Stats {
        let mut stats = *lock(&self.shared.stats);
        let rx = self.notifier.rx.lock();
        let tx = self.notifier.tx.lock();
        stats.rx_notifies = rx.notifies;
        stats.tx_notifies = tx.notifies;
        stats.unarmed_notifies = rx.unarmed_notifies + tx.unarmed_notifies;
        stats
    }

    /// Stops the data path if it runs and checks that nothing wrote the
    /// memory of stopped queues since.
    pub fn finish(&mut self) {
        self.stop();
        for core in &mut self.retired {
            core.check_memory("after the queue was stopped and destroyed");
        }
    }

    /// [`HostNetAdapter::finish`], then panics listing every violation and
    /// leak.
    pub fn assert_clean(&mut self) {
        self.finish();
        self.notifier.verifier.assert_clean();
    }
}

impl<D: AdapterDatapath + 'static> Drop for HostNetAdapter<D> {
    fn drop(&mut self) {
        // Without the bounds of the main impl only the stop signal can be
        // sent; the threads own everything they touch (rings included) and
        // end on their own.
        if let Some(running) = self.running.take() {
            self.notifier.rx.poke(|s| s.stop = true);
            self.notifier.tx.poke(|s| s.stop = true);
            let limit = self.config.upper_layer_timeout + self.config.stop_timeout + THREAD_MARGIN;
            for handle in [running.rx, running.tx] {
                let deadline = Instant::now() + limit;
                while !handle.is_finished() && Instant::now() < deadline {
                    thread::sleep(DRAIN_POLL);
                }
                if handle.is_finished() {
                    // A poll thread's panic was already printed; do not
                    // panic again while dropping.
                    let _ = handle.join();
                }
            }
        }
    }
}

impl<D: AdapterDatapath + 'static> core::fmt::Debug for HostNetAdapter<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostNetAdapter").field("running", &self.running.is_some()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_memory_has_the_real_layout_and_the_configured_strides() {
        let g = RingGeometry::default();
        let mem = QueueMemory::new(&g, true, true);
        let packets = mem.packets.array.block();
        let mut header = [0u8; 16];
        packets.read(0, &mut header);
        // wdk-abi-facts.md §1.1: ElementStride @2, NumberOfElements @4,
        // ElementIndexMask @8, EndIndex @12.
        assert_eq!(u16::from_le_bytes([header[2], header[3]]), g.packet_stride);
        assert_eq!(u32::from_le_bytes([header[4], header[5], header[6], header[7]]), g.packets);
        assert_eq!(u32::from_le_bytes([header[8], header[9], header[10], header[11]]), g.packets - 1);
        // The collection names the packet ring first, then the fragment ring.
        // SAFETY: the collection lives in `mem`.
        let c = unsafe { mem.collection().as_ref() };
        assert_eq!(c.packet_ring(), mem.packets.ring());
        assert_eq!(c.fragment_ring(), mem.fragments.ring());
        // Element i at 64 + i × stride, as NetRingGetElementAtIndex computes.
        for i in [0u32, 1, 15] {
            // SAFETY: the ring header is initialised and the index masked.
            let at = unsafe { crate::netcx::ring::element_at(mem.packets.ring(), i) };
            assert_eq!(at as usize - packets.as_ptr() as usize, 64 + i as usize * 20);
        }
        let ext = mem.extensions();
        assert_eq!((ext.fragment_virtual_address.stride, ext.fragment_virtual_address.enabled), (16, 1));
        assert_eq!(ext.fragment_return_context.as_ref().map(|e| e.stride), Some(24));
        assert_eq!(ext.packet_checksum.as_ref().map(|e| e.stride), Some(5));
        let tx = QueueMemory::new(&g, false, true).extensions();
        assert!(tx.fragment_return_context.is_none() && tx.packet_checksum.is_none());
    }

    #[test]
    fn rx_fragments_are_handed_over_poisoned() {
        // ValidLength, Capacity, Offset all ones; Scratch and Bounced clear.
        assert_eq!(poisoned_rx_fragment(), 0x3FFF_FFFF_FFFF_FFFF);
        let f = NetFragment::from_bits(poisoned_rx_fragment());
        assert_eq!((f.offset(), f.valid_length(), f.capacity()), (MAX_OFFSET, MAX_LENGTH, MAX_LENGTH));
    }

    #[test]
    fn changes_outside_the_writable_bytes_are_found_at_their_offset() {
        // Lead 0..10, backfill 10..20 (the driver's), payload 20..120.
        let payload: Vec<u8> = (0..100).map(|i| i as u8).collect();
        let block = Block::new(120, TX_LEAD_FILL);
        block.fill(10, 10, TX_BACKFILL_FILL);
        block.write(20, &payload);
        let buffer = TxBuffer { block, writable: 10..20, data: 20..120, source: 0..100 };
        let mut scratch = Vec::new();
        assert!(buffer.intact(&payload));
        buffer.block.write(12, &[0]);
        assert!(buffer.intact(&payload), "inside the backfill");
        buffer.block.write(70, &[payload[50] ^ 1]);
        assert!(!buffer.intact(&payload));
        assert_eq!(buffer.first_change(&payload, &mut scratch), 70);
        buffer.block.write(3, &[!TX_LEAD_FILL]);
        assert_eq!(buffer.first_change(&payload, &mut scratch), 3);
        let mut poisoned = std::vec![TX_POISON; 200];
        assert_eq!(first_not(&poisoned, TX_POISON), None);
        poisoned[130] = 0;
        poisoned[199] = 0;
        assert_eq!(first_not(&poisoned, TX_POISON), Some(130));
        assert_eq!(first_not(&poisoned[131..], TX_POISON), Some(68));
    }

    #[test]
    fn tx_payload_splits_into_near_equal_fragments() {
        let data: Vec<u8> = (0..10).collect();
        let parts = split(&data, 3);
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [4, 3, 3]);
        assert_eq!(parts.concat(), data);
        assert_eq!(split(&data[..2], 5).len(), 2, "never an empty fragment");
        assert_eq!(split(&[], 3), [&[] as &[u8]]);
    }
}
