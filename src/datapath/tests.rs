//! Unit scenarios of the data path over small fakes: an OS whose transport
//! records sends and releases, rings with the real layout, hand-built WSK
//! indication lists, and a one-peer control plane.

use super::*;
use crate::control::actions::TransportId;
use crate::control::peers::Endpoint;
use crate::control::stats::DeviceStats;
use crate::crypto::slots::{DirectionKey, KeySlots, NewKey, SlotIndex, new_slot};
use crate::crypto::{AeadKey, Cipher, CryptoError, CryptoProvider, Nonce, Tag};
use crate::netcx::extension::{NetExtension, checksum as checksum_values};
use crate::netcx::fragment::NetFragment;
use crate::netcx::mdl::{Mdl, flags};
use crate::netcx::packet::NetPacket;
use crate::netcx::ring::{NetRing, element_at};
use crate::netcx::wsk::{WskBuf, WskDatagramIndication};
use crate::os::host::os_ring::OsRing;
use crate::os::host::wsk::sockaddr::SockAddrInet;
use crate::os::time::Instant;
use crate::os::{PacketQueue, SendSlot, SocketEvents, Transport};
use crate::proto::aead_frame::Layout;
use crate::proto::keepalive::KEEPALIVE_PING;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::boxed::Box;
use std::sync::Mutex;
use std::vec::Vec;

// ---------------------------------------------------------------- fakes

// Miri cannot run `ring`'s assembly: under miri the scenarios use a toy
// AEAD (keyed XOR stream and a keyed checksum tag), which is enough to tell
// right keys, wrong keys and tampering apart. Everywhere else the real host
// crypto runs.
#[cfg(not(miri))]
use crate::crypto::host::{HostCrypto as TestCrypto, HostKey as TestKey};
#[cfg(miri)]
use toy::{ToyCrypto as TestCrypto, ToyKey as TestKey};

#[cfg_attr(not(miri), allow(dead_code))]
mod toy {
    use super::*;

    #[derive(Clone, Copy, Debug, Default)]
    pub struct ToyCrypto;
    pub struct ToyKey([u8; 32]);

    impl ToyKey {
        fn stream(&self, nonce: &Nonce, i: usize) -> u8 {
            self.0[i % 32] ^ nonce[i % 12] ^ (i as u8)
        }

        fn tag(&self, nonce: &Nonce, ad: &[u8], ct: &[u8]) -> Tag {
            let mut t = [0u8; 16];
            for (i, b) in nonce.iter().chain(ad).chain(ct).enumerate() {
                let k = i % 16;
                t[k] = t[k].rotate_left(3) ^ b ^ self.0[k];
            }
            t
        }
    }

    impl AeadKey for ToyKey {
        fn seal(
            &self,
            nonce: &Nonce,
            ad: &[u8],
            input: &[u8],
            output: &mut [u8],
            tag: &mut Tag,
        ) -> Result<(), CryptoError> {
            if input.len() != output.len() {
                return Err(CryptoError::BadLength);
            }
            for (i, (o, b)) in output.iter_mut().zip(input).enumerate() {
                *o = b ^ self.stream(nonce, i);
            }
            *tag = self.tag(nonce, ad, output);
            Ok(())
        }

        fn seal_in_place(&self, nonce: &Nonce, ad: &[u8], data: &mut [u8], tag: &mut Tag) -> Result<(), CryptoError> {
            for (i, b) in data.iter_mut().enumerate() {
                *b ^= self.stream(nonce, i);
            }
            *tag = self.tag(nonce, ad, data);
            Ok(())
        }

        fn open(
            &self,
            nonce: &Nonce,
            ad: &[u8],
            input: &[u8],
            output: &mut [u8],
            tag: &Tag,
        ) -> Result<(), CryptoError> {
            if input.len() != output.len() {
                return Err(CryptoError::BadLength);
            }
            if self.tag(nonce, ad, input) != *tag {
                return Err(CryptoError::AuthFailed);
            }
            for (i, (o, b)) in output.iter_mut().zip(input).enumerate() {
                *o = b ^ self.stream(nonce, i);
            }
            Ok(())
        }

        fn open_in_place(&self, nonce: &Nonce, ad: &[u8], data: &mut [u8], tag: &Tag) -> Result<(), CryptoError> {
            if self.tag(nonce, ad, data) != *tag {
                return Err(CryptoError::AuthFailed);
            }
            for (i, b) in data.iter_mut().enumerate() {
                *b ^= self.stream(nonce, i);
            }
            Ok(())
        }
    }

    impl CryptoProvider for ToyCrypto {
        type Key = ToyKey;

        fn new_key(&self, _cipher: Cipher, key: &[u8]) -> Result<ToyKey, CryptoError> {
            let mut k = [0u8; 32];
            k.iter_mut().zip(key).for_each(|(d, s)| *d = *s);
            Ok(ToyKey(k))
        }

        fn hkdf_sha256_expand(&self, prk: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
            for (i, o) in out.iter_mut().enumerate() {
                *o = prk.get(i % prk.len().max(1)).copied().unwrap_or(0)
                    ^ info.get(i % info.len().max(1)).copied().unwrap_or(0)
                    ^ (i as u8);
            }
            Ok(())
        }
    }
}

pub(super) struct TransportState {
    slots: Box<[UnsafeCell<[u8; SEND_SLOT_SIZE]>]>,
    pub sent: Mutex<Vec<(u16, Vec<u8>, SocketAddr)>>,
    pub released: Mutex<Vec<usize>>,
    pub refuse: AtomicBool,
    pub closed: AtomicBool,
    /// Accept `send_batch` (WskSendMessages); else it answers NOT_SUPPORTED
    /// and the data path sends slot by slot.
    pub batching: AtomicBool,
    /// Each accepted batch: its slots, in order.
    pub batches: Mutex<Vec<Vec<u16>>>,
    /// Dropped at close, as a real socket stops its events.
    events: Mutex<Option<Arc<dyn SocketEvents>>>,
}

// SAFETY: slot buffers are only touched by whoever owns the slot (the data
// path between take and send; the fake's `send` copies during the call).
unsafe impl Sync for TransportState {}

pub(super) struct FakeTransport(Arc<TransportState>);

impl Transport for FakeTransport {
    fn send_slots(&self) -> u16 {
        self.0.slots.len() as u16
    }

    unsafe fn slot_buffer(&self, slot: SendSlot) -> NonNull<[u8; SEND_SLOT_SIZE]> {
        NonNull::new(self.0.slots[usize::from(slot.0)].get()).unwrap()
    }

    fn send(&self, slot: SendSlot, len: usize, remote: SocketAddr) -> Result<(), NtStatus> {
        if self.0.refuse.load(Ordering::SeqCst) {
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        // SAFETY: the caller handed the slot over; the fake reads it now.
        let bytes = unsafe { &*self.0.slots[usize::from(slot.0)].get() }[..len].to_vec();
        self.0.sent.lock().unwrap().push((slot.0, bytes, remote));
        Ok(())
    }

    fn send_batch(&self, batch: &[(SendSlot, usize)], remote: SocketAddr) -> Result<(), NtStatus> {
        if !self.0.batching.load(Ordering::SeqCst) {
            return Err(NtStatus::NOT_SUPPORTED);
        }
        if self.0.refuse.load(Ordering::SeqCst) {
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        let mut sent = self.0.sent.lock().unwrap();
        for &(slot, len) in batch {
            // SAFETY: the caller handed the slots over; the fake reads them now.
            let bytes = unsafe { &*self.0.slots[usize::from(slot.0)].get() }[..len].to_vec();
            sent.push((slot.0, bytes, remote));
        }
        self.0.batches.lock().unwrap().push(batch.iter().map(|&(s, _)| s.0).collect());
        Ok(())
    }

    unsafe fn release(&self, list: NonNull<WskDatagramIndication>) {
        assert!(!self.0.closed.load(Ordering::SeqCst), "WskRelease after WskCloseSocket");
        self.0.released.lock().unwrap().push(list.as_ptr() as usize);
    }

    fn close(&self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.events.lock().unwrap().take();
    }
}

pub(super) struct FakeOs {
    pub now: AtomicU64,
    pub rx_notified: AtomicUsize,
    pub tx_notified: AtomicUsize,
    pub send_slots: u16,
    pub transport: Mutex<Option<Arc<TransportState>>>,
}

static CRYPTO: TestCrypto = TestCrypto;

impl FakeOs {
    fn new(send_slots: u16) -> Arc<Self> {
        Arc::new(Self {
            now: AtomicU64::new(1_000),
            rx_notified: AtomicUsize::new(0),
            tx_notified: AtomicUsize::new(0),
            send_slots,
            transport: Mutex::new(None),
        })
    }

    fn open(&self, events: Arc<dyn SocketEvents>) -> FakeTransport {
        let state = Arc::new(TransportState {
            slots: (0..self.send_slots).map(|_| UnsafeCell::new([0; SEND_SLOT_SIZE])).collect(),
            sent: Mutex::new(Vec::new()),
            released: Mutex::new(Vec::new()),
            refuse: AtomicBool::new(false),
            batching: AtomicBool::new(false),
            batches: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            events: Mutex::new(Some(events)),
        });
        *self.transport.lock().unwrap() = Some(state.clone());
        FakeTransport(state)
    }

    pub fn state(&self) -> Arc<TransportState> {
        self.transport.lock().unwrap().clone().unwrap()
    }

    pub fn events(&self) -> Arc<dyn SocketEvents> {
        self.state().events.lock().unwrap().clone().unwrap()
    }
}

impl Os for FakeOs {
    type Crypto = TestCrypto;
    type Transport = FakeTransport;

    fn crypto(&self) -> &TestCrypto {
        &CRYPTO
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.now.load(Ordering::SeqCst))
    }

    fn notify_rx(&self) {
        self.rx_notified.fetch_add(1, Ordering::SeqCst);
    }

    fn notify_tx(&self) {
        self.tx_notified.fetch_add(1, Ordering::SeqCst);
    }

    fn set_link_state(&self, _up: bool) {}

    fn schedule_timer(&self, _due: Instant) {}

    fn open_udp(
        &self,
        _local: SocketAddr,
        _remote: Option<SocketAddr>,
        _ipv6_only: bool,
        events: Arc<dyn SocketEvents>,
    ) -> Result<FakeTransport, NtStatus> {
        Ok(self.open(events))
    }

    fn open_tcp(
        &self,
        _local: SocketAddr,
        _remote: SocketAddr,
        events: Arc<dyn SocketEvents>,
    ) -> Result<FakeTransport, NtStatus> {
        Ok(self.open(events))
    }
}

#[derive(Default)]
pub(super) struct FakePeers {
    pub peer: Mutex<Option<Arc<Peer<TestKey>>>>,
    pub controls: Mutex<Vec<(SocketAddr, Vec<u8>)>>,
    pub floats: Mutex<Vec<SocketAddr>>,
    pub deny_sources: AtomicBool,
    pub disconnects: Mutex<Vec<NtStatus>>,
}

impl Peers<TestKey> for FakePeers {
    fn rx_peer(&self, peer_id: PeerId) -> Option<Arc<Peer<TestKey>>> {
        self.peer.lock().unwrap().clone().filter(|p| p.id() == peer_id)
    }

    fn tx_peer(&self, _dst: IpAddr) -> Option<Arc<Peer<TestKey>>> {
        self.peer.lock().unwrap().clone()
    }

    fn source_allowed(&self, _peer: &Peer<TestKey>, _inner_src: IpAddr) -> bool {
        !self.deny_sources.load(Ordering::SeqCst)
    }

    fn control_packet(&self, _transport: TransportId, from: SocketAddr, bytes: &[u8]) {
        self.controls.lock().unwrap().push((from, bytes.to_vec()));
    }

    fn float(&self, _peer: &Peer<TestKey>, from: SocketAddr) {
        self.floats.lock().unwrap().push(from);
    }

    fn connected(&self, _transport: TransportId, _status: NtStatus) {}

    fn disconnected(&self, _transport: TransportId, status: NtStatus) {
        self.disconnects.lock().unwrap().push(status);
    }
}

// ---------------------------------------------------------------- setup

pub(super) const PEER: u32 = 5;
pub(super) fn remote() -> SocketAddr {
    "192.0.2.1:1194".parse().unwrap()
}

/// Our peer (keys installed) and the far end's key slots.
fn tunnel(layout: Layout) -> (Arc<Peer<TestKey>>, KeySlots<TestKey>) {
    let (k_out, k_in) = ([0x11u8; 32], [0x22u8; 32]);
    let ours = NewKey {
        key_id: crate::proto::KeyId::new(1).unwrap(),
        cipher: Cipher::AesGcm,
        layout,
        encrypt: DirectionKey { key: &k_out, key_len: 32, nonce_tail: [1; 8] },
        decrypt: DirectionKey { key: &k_in, key_len: 32, nonce_tail: [2; 8] },
    };
    let theirs = NewKey { encrypt: ours.decrypt, decrypt: ours.encrypt, ..ours };
    let ep = Endpoint { local: "0.0.0.0:0".parse().unwrap(), remote: remote() };
    let peer = Arc::new(Peer::new(PeerId::new(PEER).unwrap(), ep, None, None, Instant::ZERO));
    let slot = new_slot(&TestCrypto, &ours).unwrap();
    peer.tx.lock().install(SlotIndex::Primary, slot.tx);
    peer.rx.lock().install(SlotIndex::Primary, slot.rx);
    let mut far = KeySlots::new();
    far.install(&TestCrypto, SlotIndex::Primary, &theirs).unwrap();
    (peer, far)
}

/// NEW_KEY for the RX side only: a fresh key `key_id` in `index` (its bytes
/// match nothing the far end sends). Used by the loom models.
#[cfg_attr(not(loom), allow(dead_code))]
pub(super) fn install_rx_key(peer: &Peer<TestKey>, index: SlotIndex, key_id: u8) {
    let k = [key_id; 32];
    let direction = DirectionKey { key: &k, key_len: 32, nonce_tail: [key_id; 8] };
    let key = NewKey {
        key_id: crate::proto::KeyId::new(key_id).unwrap(),
        cipher: Cipher::AesGcm,
        layout: Layout::Standard,
        encrypt: direction,
        decrypt: direction,
    };
    peer.rx.lock().install(index, new_slot(&TestCrypto, &key).unwrap().rx);
}

pub(super) struct Harness {
    pub os: Arc<FakeOs>,
    pub dp: Datapath<FakeOs, FakePeers>,
    pub peer: Arc<Peer<TestKey>>,
    pub far: KeySlots<TestKey>,
}

impl Harness {
    pub fn new(send_slots: u16) -> Self {
        Self::with(send_slots, Layout::Standard, false)
    }

    pub fn with(send_slots: u16, layout: Layout, tcp: bool) -> Self {
        let os = FakeOs::new(send_slots);
        let dp = Datapath::new(os.clone(), FakePeers::default(), Arc::new(DeviceStats::default()));
        let (peer, far) = tunnel(layout);
        *dp.peers().peer.lock().unwrap() = Some(peer.clone());
        if tcp {
            dp.open_tcp(TransportId(1), "0.0.0.0:0".parse().unwrap(), remote()).unwrap();
        } else {
            dp.open_udp(TransportId(1), "0.0.0.0:0".parse().unwrap(), Some(remote()), false).unwrap();
        }
        Self { os, dp, peer, far }
    }

    /// A datagram the far end sends us.
    pub fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let mut buf = std::vec![0u8; plaintext.len() + 64];
        let n = self.far.tx.encrypt_from(&TestCrypto, PeerId::new(PEER).unwrap(), plaintext, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    /// What the far end reads from a datagram we sent.
    pub fn open(&mut self, datagram: &[u8]) -> Vec<u8> {
        let mut d = datagram.to_vec();
        let r = self.far.decrypt(&TestCrypto, &mut d, 1).unwrap();
        d[r.plaintext].to_vec()
    }
}

impl Drop for Harness {
    /// Every scenario ends the way the glue ends an adapter: its queues
    /// stopped, every indicated buffer returned and every send completed,
    /// then the socket closed, then the data path dropped. Anything still
    /// held at that point is a leak (a retained list pins the socket, the
    /// socket's events pin the data path); Miri would report it as one, and
    /// this reports it in every run, with the scenario's name.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        assert_eq!(self.dp.close_transport(), CloseProgress::Closed, "the scenario left the socket held");
        assert_eq!(self.dp.occupancy(), Occupancy::default(), "the scenario left tables in use");
        let closed = self.os.transport.lock().unwrap().as_ref().is_none_or(|t| t.closed.load(Ordering::SeqCst));
        assert!(closed, "the transport was closed");
    }
}

/// An IPv4 packet of `len` bytes (UDP, 10.8.0.2 → 10.8.0.1), body `seed`.
pub(super) fn ipv4(len: usize, seed: u8) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect();
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = 0;
    p[7] = 0;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 8, 0, 2]);
    p[16..20].copy_from_slice(&[10, 8, 0, 1]);
    p
}

/// A queue's rings and extensions as NetAdapterCx would hand them out.
pub(super) struct OsQueue {
    pub packets: OsRing,
    pub fragments: OsRing,
    // Extension storage, reached only through these raw pointers (the
    // driver holds copies of them), freed on drop.
    va: *mut *mut u8,
    rc: *mut usize,
    checksum_ext: *mut u8,
    collection: Box<NetRingCollection>,
}

pub(super) const RING: u32 = 8;

impl Drop for OsQueue {
    fn drop(&mut self) {
        let n = RING as usize;
        // SAFETY: each pointer came from Box::into_raw of an n-element slice
        // in `new`, freed once here after the queue is gone.
        unsafe {
            drop(Box::from_raw(core::ptr::slice_from_raw_parts_mut(self.va, n)));
            drop(Box::from_raw(core::ptr::slice_from_raw_parts_mut(self.rc, n)));
            drop(Box::from_raw(core::ptr::slice_from_raw_parts_mut(self.checksum_ext, n)));
        }
    }
}

impl OsQueue {
    pub fn new() -> Self {
        let packets = OsRing::new(16, RING);
        let fragments = OsRing::new(8, RING);
        let collection = Box::new(NetRingCollection::new(packets.ring(), fragments.ring()));
        Self {
            packets,
            fragments,
            va: Box::into_raw(std::vec![core::ptr::null_mut::<u8>(); RING as usize].into_boxed_slice()).cast(),
            rc: Box::into_raw(std::vec![0usize; RING as usize].into_boxed_slice()).cast(),
            checksum_ext: Box::into_raw(std::vec![0u8; RING as usize].into_boxed_slice()).cast(),
            collection,
        }
    }

    pub fn extensions(&mut self, rx: bool) -> QueueExtensions {
        QueueExtensions {
            fragment_virtual_address: NetExtension::new(self.va.cast(), 8, true),
            fragment_return_context: rx.then(|| NetExtension::new(self.rc.cast(), 8, true)),
            packet_checksum: None,
        }
    }

    pub fn checksum(&self, index: u32) -> crate::netcx::extension::NetPacketChecksum {
        // SAFETY: a masked index into the live storage.
        crate::netcx::extension::NetPacketChecksum::from_bits(unsafe {
            self.checksum_ext.add((index & (RING - 1)) as usize).read()
        })
    }

    pub fn collection(&self) -> NonNull<NetRingCollection> {
        NonNull::from(&*self.collection)
    }

    fn ring_index(ring: *mut NetRing, which: usize) -> u32 {
        // SAFETY: the test ring is live; indices are atomics.
        unsafe {
            match which {
                0 => (*ring).begin_index.load(Ordering::SeqCst),
                _ => (*ring).end_index.load(Ordering::SeqCst),
            }
        }
    }

    pub fn packet_begin(&self) -> u32 {
        Self::ring_index(self.packets.ring(), 0)
    }

    pub fn fragment_begin(&self) -> u32 {
        Self::ring_index(self.fragments.ring(), 0)
    }

    pub fn fragments_end(&self) -> u32 {
        Self::ring_index(self.fragments.ring(), 1)
    }

    pub fn packet(&self, index: u32) -> NetPacket {
        // SAFETY: the OS side reads an element it got back (or inspects).
        unsafe { element_at(self.packets.ring(), index).cast::<NetPacket>().read() }
    }

    pub fn fragment(&self, index: u32) -> NetFragment {
        // SAFETY: as above.
        unsafe { element_at(self.fragments.ring(), index).cast::<NetFragment>().read() }
    }

    pub fn fragment_bytes(&self, index: u32) -> Vec<u8> {
        let f = self.fragment(index);
        // SAFETY: a masked index into the live storage.
        let va = unsafe { self.va.add((index & (RING - 1)) as usize).read() }.cast_const();
        // SAFETY: the driver pointed the fragment at `valid_length` live bytes.
        unsafe { core::slice::from_raw_parts(va.add(f.offset() as usize), f.valid_length() as usize) }.to_vec()
    }

    /// The address the driver put in fragment `index`'s VirtualAddress
    /// (used by the loom models).
    #[cfg_attr(not(loom), allow(dead_code))]
    pub fn fragment_address(&self, index: u32) -> usize {
        let f = self.fragment(index);
        // SAFETY: a masked index into the live storage.
        let va = unsafe { self.va.add((index & (RING - 1)) as usize).read() };
        va as usize + f.offset() as usize
    }

    pub fn return_context(&self, index: u32) -> usize {
        // SAFETY: a masked index into the live storage.
        unsafe { self.rc.add((index & (RING - 1)) as usize).read() }
    }

    /// TX: the OS posts a packet made of `parts` at packet `p`, fragments
    /// from `f`; returns the next fragment index.
    pub fn post(&mut self, p: u32, f: u32, parts: &[&[u8]]) -> u32 {
        for (k, part) in parts.iter().enumerate() {
            let fi = (f + k as u32) & (RING - 1);
            let mut frag = NetFragment::default();
            frag.set_valid_length(part.len() as u32).unwrap();
            frag.set_capacity(part.len() as u32).unwrap();
            // SAFETY: the OS side writes an element before handing it over.
            unsafe { element_at(self.fragments.ring(), fi).cast::<NetFragment>().write(frag) };
            // SAFETY: a masked index into the live storage.
            unsafe { self.va.add(fi as usize).write(part.as_ptr().cast_mut()) };
        }
        let mut packet = NetPacket::default();
        packet.fragment_index = f & (RING - 1);
        packet.fragment_count = parts.len() as u16;
        // SAFETY: as above.
        unsafe { element_at(self.packets.ring(), p & (RING - 1)).cast::<NetPacket>().write(packet) };
        (f + parts.len() as u32) & (RING - 1)
    }

    /// Posts `packets` from ring index 0, one fragment each, and hands them
    /// all to the driver (both EndIndex values).
    pub fn post_each(&mut self, packets: &[Vec<u8>]) {
        let mut f = 0;
        for (i, p) in packets.iter().enumerate() {
            f = self.post(i as u32, f, &[p]);
        }
        self.packets.set_end(packets.len() as u32);
        self.fragments.set_end(packets.len() as u32);
    }
}

/// A WSK indication list: datagrams with their bytes split over MDLs. All
/// memory is leaked into raw pointers while the list lives (WSK memory is
/// only ever reached through raw pointers) and freed on drop.
pub(super) struct Indication {
    bufs: Vec<*mut [u8]>,
    mdls: Vec<*mut Mdl>,
    addr: *mut SockAddrInet,
    nodes: *mut [WskDatagramIndication],
}

impl Drop for Indication {
    fn drop(&mut self) {
        // SAFETY: every pointer came from Box::into_raw in `new` and is
        // freed once, here; the data path released (or never retained) the
        // list before the test drops it.
        unsafe {
            for b in &self.bufs {
                drop(Box::from_raw(*b));
            }
            for m in &self.mdls {
                drop(Box::from_raw(*m));
            }
            drop(Box::from_raw(self.addr));
            drop(Box::from_raw(self.nodes));
        }
    }
}

impl Indication {
    /// Each datagram given as its MDL pieces; a few bytes of slack sit in
    /// front of every first piece, so the datagram starts at an offset.
    pub fn new(datagrams: &[Vec<Vec<u8>>], from: SocketAddr) -> Self {
        let addr = Box::into_raw(Box::new(SockAddrInet::new(from)));
        let mut bufs = Vec::new();
        let mut mdls: Vec<*mut Mdl> = Vec::new();
        let mut nodes = Vec::new();
        const SLACK: usize = 3;
        for pieces in datagrams {
            let mut first: *mut Mdl = core::ptr::null_mut();
            let mut prev: *mut Mdl = core::ptr::null_mut();
            let mut total = 0;
            for (k, piece) in pieces.iter().enumerate() {
                let slack = if k == 0 { SLACK } else { 0 };
                let mut b = std::vec![0xEEu8; slack + piece.len()].into_boxed_slice();
                b[slack..].copy_from_slice(piece);
                total += piece.len();
                let len = b.len() as u32;
                let b = Box::into_raw(b);
                let va = b.cast::<core::ffi::c_void>();
                let m = Box::into_raw(Box::new(Mdl {
                    next: core::ptr::null_mut(),
                    size: 48,
                    mdl_flags: flags::SOURCE_IS_NONPAGED_POOL,
                    process: core::ptr::null_mut(),
                    mapped_system_va: va,
                    start_va: va,
                    byte_count: len,
                    byte_offset: 0,
                }));
                if prev.is_null() {
                    first = m;
                } else {
                    // SAFETY: `prev` is a live MDL of this list.
                    unsafe { (*prev).next = m };
                }
                prev = m;
                mdls.push(m);
                bufs.push(b);
            }
            nodes.push(WskDatagramIndication {
                next: core::ptr::null_mut(),
                buffer: WskBuf { mdl: first, offset: SLACK as u32, length: total },
                control_info: core::ptr::null(),
                control_info_length: 0,
                remote_address: addr.cast(),
            });
        }
        let count = nodes.len();
        let nodes = Box::into_raw(nodes.into_boxed_slice());
        let base = nodes.cast::<WskDatagramIndication>();
        for i in 1..count {
            // SAFETY: both nodes are in the leaked slice.
            unsafe { (*base.add(i - 1)).next = base.add(i) };
        }
        Self { bufs, mdls, addr, nodes }
    }

    pub fn single(datagrams: &[Vec<u8>]) -> Self {
        let d: Vec<Vec<Vec<u8>>> = datagrams.iter().map(|d| std::vec![d.clone()]).collect();
        Self::new(&d, remote())
    }

    /// Where the datagrams' bytes are, with the slack in front (used by the
    /// loom models).
    #[cfg_attr(not(loom), allow(dead_code))]
    pub fn buffers(&self) -> Vec<core::ops::Range<usize>> {
        self.bufs.iter().map(|b| (b.cast::<u8>() as usize)..(b.cast::<u8>() as usize + b.len())).collect()
    }

    pub fn head(&mut self) -> NonNull<WskDatagramIndication> {
        NonNull::new(self.nodes.cast::<WskDatagramIndication>()).unwrap()
    }

    /// Delivers the list to `events` (WskReceiveFromEvent).
    pub fn deliver(&mut self, events: &Arc<dyn SocketEvents>) -> NtStatus {
        let head = self.head();
        // SAFETY: the list lives in `self`, which the test keeps until the
        // datapath released it (or it returned SUCCESS).
        unsafe { events.receive_from(head) }
    }
}

pub(super) fn rx_queue(h: &Harness, q: &mut OsQueue) -> rx::RxQueue<FakeOs, FakePeers> {
    let ext = q.extensions(true);
    // SAFETY: the OsQueue outlives the queue in every test.
    let queue = unsafe { h.dp.create_rx_queue(q.collection(), ext) }.unwrap();
    queue.start();
    queue
}

/// The glue's end of an RX queue: EvtPacketQueueCancel, Advance once the
/// rings are empty, EvtPacketQueueStop. Queued packets are dropped and their
/// lists released; indicated ones stay with the OS until it returns them.
pub(super) fn end_rx(rxq: &rx::RxQueue<FakeOs, FakePeers>) {
    rxq.cancel();
    rxq.advance();
    rxq.stop();
}

pub(super) fn tx_queue(h: &Harness, q: &mut OsQueue) -> tx::TxQueue<FakeOs, FakePeers> {
    let ext = q.extensions(false);
    // SAFETY: the OsQueue outlives the queue in every test.
    let queue = unsafe { h.dp.create_tx_queue(q.collection(), ext) }.unwrap();
    queue.start();
    queue
}

// ---------------------------------------------------------------- RX

#[test]
fn received_data_is_decrypted_in_place_and_indicated_without_a_copy() {
    let mut h = Harness::new(8);
    let mut q = OsQueue::new();
    let rxq = rx_queue(&h, &mut q);
    let (a, b) = (ipv4(100, 1), ipv4(1400, 2));
    let control = std::vec![0x38, 1, 2, 3, 4, 5];
    let mut ind = Indication::single(&[h.seal(&a), control.clone(), h.seal(&b)]);
    let events = h.os.events();
    assert_eq!(ind.deliver(&events), NtStatus::PENDING);
    assert_eq!(h.dp.peers().controls.lock().unwrap().as_slice(), &[(remote(), control)]);
    assert_eq!(
        h.dp.occupancy(),
        Occupancy { retained_lists: 1, rx_slots: 2, rx_copy_buffers: 0, rx_pending: 2, sends_in_flight: 0 }
    );

    rxq.set_notification_enabled(true);
    assert_eq!(h.os.rx_notified.load(Ordering::SeqCst), 1, "queued packets notify at once when armed");
    q.packets.set_end(RING - 1);
    q.fragments.set_end(RING - 1);
    rxq.advance();
    assert_eq!((q.packet_begin(), q.fragment_begin()), (2, 2));
    for (i, want) in [a, b].iter().enumerate() {
        let i = i as u32;
        let p = q.packet(i);
        assert_eq!((p.fragment_index, p.fragment_count, p.ignore()), (i, 1, false));
        let f = q.fragment(i);
        assert_eq!((f.offset(), f.capacity(), f.valid_length()), (0, want.len() as u32, want.len() as u32));
        assert_eq!(&q.fragment_bytes(i), want);
        assert_eq!(q.return_context(i), i as usize + 1);
    }
    assert_eq!(h.dp.copies().rx_copied_bytes.load(Ordering::SeqCst), 0);
    let s = h.dp.stats();
    assert_eq!(s.received_data_packets.load(Ordering::SeqCst), 2);
    assert_eq!(s.tun_bytes_received.load(Ordering::SeqCst), 1500);

    let state = h.os.state();
    h.dp.return_rx_buffer(q.return_context(1));
    assert!(state.released.lock().unwrap().is_empty(), "one datagram still up the stack");
    h.dp.return_rx_buffer(q.return_context(0));
    assert_eq!(state.released.lock().unwrap().as_slice(), &[ind.head().as_ptr() as usize]);
    h.dp.return_rx_buffer(q.return_context(0));
    assert_eq!(h.dp.drops().get(DropReason::RxBadReturnContext), 1, "a second return is refused");
    assert_eq!(h.dp.occupancy(), Occupancy::default());
}

/// A return context the OS was never given (a slot free, or queued and not
/// yet indicated, or out of range) is refused and counted, and the slot it
/// names is left alone: its packet is still indicated intact and returned
/// once, and the list released once.
#[test]
fn returns_naming_slots_not_indicated_are_refused_without_touching_them() {
    let mut h = Harness::new(8);
    let mut q = OsQueue::new();
    let rxq = rx_queue(&h, &mut q);
    let (a, b) = (ipv4(300, 7), ipv4(1200, 8));
    let mut ind = Indication::single(&[h.seal(&a), h.seal(&b)]);
    assert_eq!(ind.deliver(&h.os.events()), NtStatus::PENDING);
    let bogus = [0, usize::from(RX_SLOTS_MAX) + 1, usize::MAX];
    for context in (1..=usize::from(RX_SLOTS_MAX)).chain(bogus) {
        h.dp.return_rx_buffer(context);
    }
    let refused = usize::from(RX_SLOTS_MAX) + bogus.len();
    assert_eq!(h.dp.drops().get(DropReason::RxBadReturnContext), refused as u64);
    assert_eq!(h.dp.occupancy().rx_slots, 2, "both queued slots still held");
    assert_eq!(h.dp.occupancy().rx_pending, 2);

    q.packets.set_end(RING - 1);
    q.fragments.set_end(RING - 1);
    rxq.advance();
    assert_eq!(q.packet_begin(), 2);
    assert_eq!((q.fragment_bytes(0), q.fragment_bytes(1)), (a, b));
    let state = h.os.state();
    h.dp.return_rx_buffer(q.return_context(0));
    h.dp.return_rx_buffer(q.return_context(1));
    assert_eq!(state.released.lock().unwrap().as_slice(), &[ind.head().as_ptr() as usize]);
    assert_eq!(h.dp.drops().get(DropReason::RxBadReturnContext), refused as u64, "both real returns taken");
    assert_eq!(h.dp.occupancy(), Occupancy::default());
}

/// The RX counters are added once per list and per run of one peer's
/// packets: across runs broken by an unknown peer id, failures after the
/// peer lookup (a replay, a forged tag), a keepalive, several pushes of
/// the pending queue, and slots the stopped queue refuses, each counter
/// must still equal the per-packet sum.
#[test]
fn batched_rx_counters_equal_the_per_packet_sums_on_every_path() {
    let mut h = Harness::new(8);
    let mut q = OsQueue::new();
    let rxq = rx_queue(&h, &mut q);
    let (mut list, mut delivered, mut decrypted) = (Vec::new(), 0u64, Vec::new());
    for i in 0..70u8 {
        let inner = ipv4(60 + usize::from(i) * 13, i);
        let wire = h.seal(&inner);
        match i % 10 {
            3 => {
                // Unknown peer id: dropped before decryption, breaks the run.
                let mut d = wire;
                d[3] ^= 0x40;
                list.push(d);
            }
            6 => {
                // A forged tag: the peer looked up, decryption fails.
                let mut d = wire;
                let last = d.len() - 1;
                d[last] ^= 1;
                list.push(d);
            }
            _ => {
                delivered += inner.len() as u64;
                decrypted.push(wire.len() as u64);
                list.push(wire);
            }
        }
        if i % 10 == 8 {
            // A replay of the packet just sent: refused by the window.
            let again = list.last().unwrap().clone();
            list.push(again);
        }
    }
    let ping = h.seal(&KEEPALIVE_PING);
    decrypted.push(ping.len() as u64);
    list.push(ping);
    // Sealed now, delivered after the first list.
    let late: Vec<Vec<u8>> = (0..40u8).map(|i| h.seal(&ipv4(100, i))).collect();
    let all: u64 = list.iter().map(|d| d.len() as u64).sum();
    let mut ind = Indication::single(&list);
    assert_eq!(ind.deliver(&h.os.events()), NtStatus::PENDING);

    let s = h.dp.stats();
    let d = h.dp.drops();
    let data = 70 - 7 - 7;
    assert_eq!(
        (d.get(DropReason::RxUnknownPeer), d.get(DropReason::RxAuthFailed), d.get(DropReason::RxReplay)),
        (7, 7, 7)
    );
    assert_eq!(h.dp.occupancy().rx_pending, data);
    assert_eq!(s.received_data_packets.load(Ordering::SeqCst) as usize, data + 1, "data and the keepalive");
    assert_eq!(s.tun_bytes_received.load(Ordering::SeqCst), delivered);
    assert_eq!(s.transport_bytes_received.load(Ordering::SeqCst), all);
    assert_eq!(s.lost_in_data_packets.load(Ordering::SeqCst), 21);
    assert_eq!(h.peer.stats.vpn_rx_bytes.load(Ordering::SeqCst), delivered);
    assert_eq!(h.peer.stats.link_rx_bytes.load(Ordering::SeqCst), decrypted.iter().sum::<u64>());

    // A stopped queue refuses what a list decrypts: counted as received
    // (decrypted) and lost, never as delivered bytes.
    rxq.cancel();
    rxq.stop();
    let lost = s.lost_in_data_packets.load(Ordering::SeqCst);
    let late_link: u64 = late.iter().map(|d| d.len() as u64).sum();
    let mut refused = Indication::single(&late);
    assert_eq!(refused.deliver(&h.os.events()), NtStatus::SUCCESS, "nothing of it is held");
    assert_eq!(h.dp.drops().get(DropReason::RxQueueStopped), 40);
    assert_eq!(s.received_data_packets.load(Ordering::SeqCst) as usize, data + 1 + 40);
    assert_eq!(s.lost_in_data_packets.load(Ordering::SeqCst), lost + 40);
    assert_eq!(s.tun_bytes_received.load(Ordering::SeqCst), delivered);
    assert_eq!(h.peer.stats.vpn_rx_bytes.load(Ordering::SeqCst), delivered);
    assert_eq!(h.peer.stats.link_rx_bytes.load(Ordering::SeqCst), decrypted.iter().sum::<u64>() + late_link);
    assert_eq!(h.dp.occupancy(), Occupancy::default());
}

#[test]
fn a_list_with_nothing_deliverable_stays_with_wsk() {
    let mut h = Harness::new(8);
    let mut q = OsQueue::new();
    let _rxq = rx_queue(&h, &mut q);
    let ping = h.seal(&KEEPALIVE_PING);
    let mut forged = h.seal(&ipv4(60, 3));
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let unknown_peer = {
        let mut d = h.seal(&ipv4(60, 4));
        d[3] = 0x77;
        d
    };
    let mut ind = Indication::single(&[ping, forged, unknown_peer, std::vec![], std::vec![0x48, 0]]);
    h.os.now.store(9_000, Ordering::SeqCst);
    assert_eq!(ind.deliver(&h.os.events()), NtStatus::SUCCESS);
    assert_eq!(h.peer.last_received(), Instant::from_millis(9_000), "the keepalive counts as activity");
    let d = h.dp.drops();
    assert_eq!(d.get(DropReason::RxAuthFailed), 1);
    assert_eq!(d.get(DropReason::RxUnknownPeer), 1);
    assert_eq!(d.get(DropReason::RxMalformed), 2);
    assert_eq!(h.dp.occupancy(), Occupancy::default());
    assert!(h.os.state().released.lock().unwrap().is_empty());
}

#[test]
fn with_the_checksum_extension_decrypted_packets_are_reported_valid() {
    let mut h = Harness::new(8);
    let mut q = OsQueue::new();
    let mut ext = q.extensions(true);
    ext.packet_checksum = Some(NetExtension::new(q.checksum_ext, 1, true));
    // SAFETY: the OsQueue outlives the queue.
    let rxq = unsafe { h.dp.create_rx_queue(q.collection(), ext) }.unwrap();
    rxq.start();
    let mut ind = Indication::single(&[h.seal(&ipv4(64, 1))]);
    ind.deliver(&h.os.events());
    q.packets.set_end(2);
    q.fragments.set_end(2);
    rxq.advance();
    let c = q.checksum(0);
    assert_eq!((c.layer3(), c.layer4()), (checksum_values::RX_VALID, checksum_values::RX_VALID));
    assert_eq!(q.checksum(1).bits(), 0, "only indicated packets");
    h.dp.return_rx_buffer(q.return_context(0));
}

#[test]
fn a_datagram_over_several_mdls_takes_the_counted_copy_path() {
    let mut h = Harness::new(8);
    let mut q = OsQueue::new();
    let rxq = rx_queue(&h, &mut q);
    let plain = ipv4(700, 9);
    let d = h.seal(&plain);
    let pieces = std::vec![d[..5].to_vec(), d[5..300].to_vec(), d[300..].to_vec()];
    let mut ind = Indication::new(&[pieces], remote());
    assert_eq!(ind.deliver(&h.os.events()), NtStatus::SUCCESS, "nothing of the list is kept");
    assert_eq!(h.dp.copies().rx_copied_bytes.load(Ordering::SeqCst), d.len() as u64);
    q.packets.set_end(4);
    q.fragments.set_end(4);
    rxq.advance();
    assert_eq!(q.fragment_bytes(0), plain);
    assert_eq!(h.dp.occupancy().rx_copy_buffers, 1);
    h.dp.return_rx_buffer(q.return_context(0));
    assert_eq!(h.dp.occupancy(), Occupancy::default());
}

#[test]
fn past_the_retention_budget_data_is_copied() {
    let mut h = Harness::new(8);
    let mut q = OsQueue::new();
    let rxq = rx_queue(&h, &mut q);
    let events = h.os.events();
    let mut lists: Vec<Indication> = Vec::new();
    for i in 0..=RX_RETAINED_LISTS_MAX {
        let d = h.seal(&ipv4(40, i as u8));
        let mut ind = Indication::single(&[d]);
        let status = ind.deliver(&events);
        let expect = if i < RX_RETAINED_LISTS_MAX { NtStatus::PENDING } else { NtStatus::SUCCESS };
        assert_eq!(status, expect, "list {i}");
        lists.push(ind);
    }
    let o = h.dp.occupancy();
    let budget = usize::from(RX_RETAINED_LISTS_MAX);
    assert_eq!((o.retained_lists, o.rx_copy_buffers, o.rx_pending), (budget, 1, budget + 1));
    end_rx(&rxq);
    assert_eq!(h.os.state().released.lock().unwrap().len(), usize::from(RX_RETAINED_LISTS_MAX));
}

#[test]
fn cancel_ignores_the_rings_and_releases_what_was_never_indicated() {
    let mut h = Harness::new(8);
    let mut q = OsQueue::new();
    let rxq = rx_queue(&h, &mut q);
    let mut ind = Indication::single(&[h.seal(&ipv4(64, 1)), h.seal(&ipv4(64, 2)), h.seal(&ipv4(64, 3))]);
    assert_eq!(ind.deliver(&h.os.events()), NtStatus::PENDING);
    q.packets.set_end(1);
    q.fragments.set_end(1);
    rxq.advance();
    assert_eq!(q.packet_begin(), 1, "one indicated, two still queued");
    q.packets.set_end(5);
    q.fragments.set_end(5);
    rxq.cancel();
    assert_eq!((q.packet_begin(), q.fragment_begin()), (5, 5));
    for i in 1..5 {
        let p = q.packet(i);
        assert!(p.ignore(), "packet {i} Ignore");
        assert_eq!((p.fragment_index, p.fragment_count), (0, 0), "otherwise untouched");
    }
    let state = h.os.state();
    assert!(state.released.lock().unwrap().is_empty(), "the indicated datagram still holds the list");
    assert_eq!(h.dp.drops().get(DropReason::RxCancelled), 2);
    h.dp.return_rx_buffer(q.return_context(0));
    assert_eq!(state.released.lock().unwrap().len(), 1);
    assert_eq!(h.dp.occupancy(), Occupancy::default());
    // After cancel nothing is queued any more.
    let mut late = Indication::single(&[h.seal(&ipv4(64, 4))]);
    assert_eq!(late.deliver(&h.os.events()), NtStatus::SUCCESS);
    assert_eq!(h.dp.drops().get(DropReason::RxQueueStopped), 1);
}

#[test]
fn mss_is_clamped_in_received_syns_and_foreign_sources_are_refused() {
    let mut h = Harness::new(8);
    let mut q = OsQueue::new();
    let rxq = rx_queue(&h, &mut q);
    h.peer.set_mss(1300);
    // IPv4 + TCP SYN with MSS 1460 (checksum 0 is fine for the clamp).
    let mut syn = std::vec![0u8; 44];
    syn[0] = 0x45;
    syn[2..4].copy_from_slice(&44u16.to_be_bytes());
    syn[9] = 6;
    syn[12..16].copy_from_slice(&[10, 8, 0, 2]);
    syn[32] = 6 << 4;
    syn[33] = 0x02;
    syn[40..44].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    let mut ind = Indication::single(&[h.seal(&syn)]);
    ind.deliver(&h.os.events());
    q.packets.set_end(2);
    q.fragments.set_end(2);
    rxq.advance();
    let got = q.fragment_bytes(0);
    assert_eq!(&got[42..44], &1300u16.to_be_bytes());
    h.dp.return_rx_buffer(q.return_context(0));

    h.dp.peers().deny_sources.store(true, Ordering::SeqCst);
    let mut ind = Indication::single(&[h.seal(&ipv4(64, 1))]);
    assert_eq!(ind.deliver(&h.os.events()), NtStatus::SUCCESS);
    assert_eq!(h.dp.drops().get(DropReason::RxSourceNotAllowed), 1);
}

#[test]
fn authenticated_data_from_a_new_address_asks_the_control_plane_to_float() {
    let mut h = Harness::new(8);
    let mut q = OsQueue::new();
    let rxq = rx_queue(&h, &mut q);
    let elsewhere: SocketAddr = "198.51.100.9:4000".parse().unwrap();
    let d = h.seal(&ipv4(64, 1));
    let mut forged = d.clone();
    forged[10] ^= 0xff;
    let mut ind = Indication::new(&[std::vec![forged], std::vec![d]], elsewhere);
    ind.deliver(&h.os.events());
    assert_eq!(h.dp.peers().floats.lock().unwrap().as_slice(), &[elsewhere], "only the authentic one");
    end_rx(&rxq);
    assert_eq!(h.os.state().released.lock().unwrap().as_slice(), &[ind.head().as_ptr() as usize]);
}

// ---------------------------------------------------------------- TX

#[test]
fn a_posted_packet_is_encrypted_out_of_place_and_drained_on_completion() {
    let mut h = Harness::new(8);
    let mut q = OsQueue::new();
    let txq = tx_queue(&h, &mut q);
    let packet = ipv4(1200, 5);
    let before = packet.clone();
    q.post(0, 0, &[&packet]);
    q.packets.set_end(1);
    q.fragments.set_end(1);
    txq.advance();
    let state = h.os.state();
    let (slot, wire, to) = state.sent.lock().unwrap()[0].clone();
    assert_eq!(to, remote());
    assert_eq!(h.open(&wire), packet);
    assert_eq!(packet, before, "OS memory is never written");
    assert_eq!(q.packet_begin(), 0, "not drained before completion");
    assert_eq!(h.dp.copies().tx_copied_bytes.load(Ordering::SeqCst), 0);

    txq.set_notification_enabled(true);
    h.os.events().send_complete(SendSlot(slot), NtStatus::SUCCESS, wire.len());
    assert_eq!(h.os.tx_notified.load(Ordering::SeqCst), 1);
    assert!(q.packet(0).scratch());
    txq.advance();
    assert_eq!((q.packet_begin(), q.fragment_begin()), (1, 1));
    let s = h.dp.stats().snapshot();
    assert_eq!((s.sent_data_packets, s.transport_bytes_sent, s.tun_bytes_sent), (1, wire.len() as i64, 1200));
}

/// With a transport that batches (WskSendMessages), an Advance's packets to
/// one remote go out as one request, and its one completion finishes them
/// all: Scratch, counters, slots, notification.
#[test]
fn an_advance_sends_its_packets_as_one_batch_and_one_completion_drains_them() {
    let mut h = Harness::new(8);
    let mut q = OsQueue::new();
    let txq = tx_queue(&h, &mut q);
    let state = h.os.state();
    state.batching.store(true, Ordering::SeqCst);
    let packets: Vec<Vec<u8>> = (0..5).map(|k| ipv4(100 + 200 * k, k as u8)).collect();
    q.post_each(&packets);
    txq.advance();
    let batches = state.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 1, "one request");
    assert_eq!(batches[0].len(), 5);
    let sent = state.sent.lock().unwrap().clone();
    for ((_, wire, to), p) in sent.iter().zip(&packets) {
        assert_eq!(*to, remote());
        assert_eq!(&h.open(wire), p, "in ring order");
    }
    assert_eq!(txq.in_flight(), 5);
    txq.set_notification_enabled(true);
    let bytes: usize = sent.iter().map(|(_, w, _)| w.len()).sum();
    h.os.events().send_batch_complete(SendSlot(batches[0][0]), NtStatus::SUCCESS, bytes);
    assert_eq!(h.os.tx_notified.load(Ordering::SeqCst), 1, "one notification for the batch");
    assert!((0..5).all(|k| q.packet(k).scratch()));
    txq.advance();
    assert_eq!((q.packet_begin(), q.fragment_begin()), (5, 5));
    assert_eq!(txq.in_flight(), 0);
    let s = h.dp.stats().snapshot();
    assert_eq!((s.sent_data_packets, s.transport_bytes_sent), (5, bytes as i64));
    // Every slot is free again: eight control packets fit.
    control_fills_every_slot(&h, 8);
}

/// Sends `slots` control packets (each must find a slot, and one more must
/// not), then completes them, so the socket is idle again.
pub(super) fn control_fills_every_slot(h: &Harness, slots: u8) {
    let state = h.os.state();
    let before = state.sent.lock().unwrap().len();
    for i in 0..slots {
        assert_eq!(h.dp.send_control(remote(), &[0x38, i]), Ok(()), "control packet {i}");
    }
    assert_eq!(h.dp.send_control(remote(), &[0x38, slots]), Err(TxError::NoSendSlot));
    let sent = state.sent.lock().unwrap()[before..].to_vec();
    for (slot, wire, _) in sent {
        h.os.events().send_complete(SendSlot(slot), NtStatus::SUCCESS, wire.len());
    }
}

/// A batch the transport refuses, or completes with an error, loses every
/// packet of it, each counted; the ring still drains and the slots return.
#[test]
fn a_refused_or_failed_batch_counts_every_packet_lost() {
    let h = Harness::new(8);
    let mut q = OsQueue::new();
    let txq = tx_queue(&h, &mut q);
    let state = h.os.state();
    state.batching.store(true, Ordering::SeqCst);
    let (a, b, c) = (ipv4(64, 1), ipv4(64, 2), ipv4(64, 3));
    let f = q.post(0, 0, &[&a]);
    let f = q.post(1, f, &[&b]);
    q.post(2, f, &[&c]);
    q.packets.set_end(3);
    q.fragments.set_end(3);
    txq.advance();
    let first = state.batches.lock().unwrap()[0][0];
    h.os.events().send_batch_complete(SendSlot(first), NtStatus::UNSUCCESSFUL, 0);
    // A second completion for the same batch is not the data path's: ignored.
    h.os.events().send_batch_complete(SendSlot(first), NtStatus::SUCCESS, 1);
    txq.advance();
    assert_eq!((q.packet_begin(), q.fragment_begin()), (3, 3));
    assert_eq!(h.dp.drops().get(DropReason::TxSendFailed), 3);
    state.refuse.store(true, Ordering::SeqCst);
    let (d, e) = (ipv4(64, 4), ipv4(64, 5));
    let f = q.post(3, 3, &[&d]);
    q.post(4, f, &[&e]);
    q.packets.set_end(5);
    q.fragments.set_end(5);
    txq.advance();
    assert_eq!((q.packet_begin(), q.fragment_begin()), (5, 5), "refused: returned at once");
    assert_eq!(h.dp.drops().get(DropReason::TxSendRefused), 2);
    let s = h.dp.stats().snapshot();
    assert_eq!((s.sent_data_packets, s.lost_out_data_packets), (0, 5));
    assert_eq!(txq.in_flight(), 0);
    state.refuse.store(false, Ordering::SeqCst);
    control_fills_every_slot(&h, 8);
}

/// A completion that names a later slot of a batch in flight (a member
/// completed on its own, or a batch completion naming a member: a transport
/// bug) is not the data path's: the member stays the batch's, and the
/// batch's own completion still finishes every packet, once, and frees
/// every slot.
#[test]
fn a_completion_naming_a_batch_member_leaves_the_batch_whole() {
    let h = Harness::new(8);
    let mut q = OsQueue::new();
    let txq = tx_queue(&h, &mut q);
    let state = h.os.state();
    state.batching.store(true, Ordering::SeqCst);
    let packets: Vec<Vec<u8>> = (0..3).map(|k| ipv4(64, k as u8)).collect();
    q.post_each(&packets);
    txq.advance();
    let batch = state.batches.lock().unwrap()[0].clone();
    assert_eq!(batch.len(), 3);
    let events = h.os.events();
    events.send_complete(SendSlot(batch[1]), NtStatus::SUCCESS, 1);
    events.send_batch_complete(SendSlot(batch[2]), NtStatus::SUCCESS, 1);
    txq.advance();
    assert_eq!(q.packet_begin(), 0, "nothing back before the batch's completion");
    assert_eq!(txq.in_flight(), 3);
    let bytes: usize = state.sent.lock().unwrap().iter().map(|(_, w, _)| w.len()).sum();
    events.send_batch_complete(SendSlot(batch[0]), NtStatus::SUCCESS, bytes);
    txq.advance();
    assert_eq!((q.packet_begin(), q.fragment_begin()), (3, 3));
    assert_eq!(txq.in_flight(), 0);
    let s = h.dp.stats().snapshot();
    assert_eq!((s.sent_data_packets, s.lost_out_data_packets, s.transport_bytes_sent), (3, 0, bytes as i64));
    control_fills_every_slot(&h, 8);
}

#[test]
fn without_send_slots_packets_wait_and_drain_in_ring_order() {
    let mut h = Harness::new(2);
    let mut q = OsQueue::new();
    let txq = tx_queue(&h, &mut q);
    let packets: Vec<Vec<u8>> = (0..4).map(|i| ipv4(200 + i, i as u8)).collect();
    q.post_each(&packets);
    txq.advance();
    let state = h.os.state();
    assert_eq!(state.sent.lock().unwrap().len(), 2, "back-pressure: two slots, two sends");
    assert_eq!(h.dp.drops().total(), 0, "nothing dropped");
    let events = h.os.events();
    let sent: Vec<_> = state.sent.lock().unwrap().clone();
    // The second completes first: nothing drains past the first.
    events.send_complete(SendSlot(sent[1].0), NtStatus::SUCCESS, sent[1].1.len());
    txq.advance();
    assert_eq!(q.packet_begin(), 0);
    assert_eq!(state.sent.lock().unwrap().len(), 3, "the freed slot carried packet 2");
    events.send_complete(SendSlot(sent[0].0), NtStatus::SUCCESS, sent[0].1.len());
    txq.advance();
    assert_eq!(q.packet_begin(), 2);
    let all: Vec<_> = state.sent.lock().unwrap().clone();
    assert_eq!(all.len(), 4);
    for (i, (_, wire, _)) in all.iter().enumerate() {
        assert_eq!(h.open(wire), packets[i]);
    }
    for (slot, wire, _) in &all[2..] {
        events.send_complete(SendSlot(*slot), NtStatus::SUCCESS, wire.len());
    }
    txq.advance();
    assert_eq!((q.packet_begin(), q.fragment_begin()), (4, 4));
}

/// Data packets never take the last free send slots: with the link slower
/// than the offered load, the TX ring's packets may hold every other slot
/// in flight, and OpenVPN's control writes and the keepalive must still go
/// out (a failed WriteFile is a lost TLS record). Keepalives may not use
/// the last half of the reserve. Data past the limit waits in the ring
/// (back-pressure, nothing dropped) and goes out in order once slots
/// free.
#[test]
fn data_leaves_the_control_reserve_to_control_writes_and_keepalives() {
    let slots = 2 * SEND_SLOTS_CONTROL_SHARE;
    let reserve = usize::from((slots / SEND_SLOTS_CONTROL_SHARE).min(SEND_SLOTS_CONTROL_RESERVE));
    assert_eq!(reserve, 2);
    let mut h = Harness::new(slots);
    let mut q = OsQueue::new();
    let txq = tx_queue(&h, &mut q);
    let state = h.os.state();
    let events = h.os.events();
    // Earlier control packets still in flight leave data 4 slots above the
    // reserve.
    let busy = usize::from(slots) - reserve - 4;
    for i in 0..busy {
        h.dp.send_control(remote(), &[0x38, i as u8]).unwrap();
    }
    let packets: Vec<Vec<u8>> = (0..7).map(|i| ipv4(300 + i, i as u8)).collect();
    q.post_each(&packets);
    txq.advance();
    assert_eq!(state.sent.lock().unwrap().len(), busy + 4, "data stops at the reserve");
    assert_eq!(h.dp.drops().total(), 0, "nothing dropped: the rest waits in the ring");

    let peer = h.peer.clone();
    h.dp.send_keepalive(&peer).unwrap();
    assert_eq!(h.dp.send_keepalive(&peer), Err(TxError::NoSendSlot), "keepalives leave half the reserve");
    h.dp.send_control(remote(), &[0x38, 0xee]).unwrap();
    assert_eq!(h.dp.send_control(remote(), &[0x38, 0xef]), Err(TxError::NoSendSlot), "the reserve is used up");
    let sent = state.sent.lock().unwrap().clone();
    assert_eq!(h.open(&sent[busy + 4].1), KEEPALIVE_PING.to_vec());
    assert_eq!(sent[busy + 5].1, [0x38, 0xee]);

    for (slot, wire, _) in &sent {
        events.send_complete(SendSlot(*slot), NtStatus::SUCCESS, wire.len());
    }
    txq.advance();
    let sent = state.sent.lock().unwrap().clone();
    for (slot, wire, _) in &sent[busy + 6..] {
        events.send_complete(SendSlot(*slot), NtStatus::SUCCESS, wire.len());
    }
    txq.advance();
    assert_eq!(q.packet_begin(), 7, "every data packet sent and returned");
    let data: Vec<Vec<u8>> = sent[busy..busy + 4].iter().chain(&sent[busy + 6..]).map(|(_, w, _)| h.open(w)).collect();
    assert_eq!(data, packets, "in ring order");
    assert_eq!(h.dp.drops().get(DropReason::TxNoSendSlot), 2, "only the keepalive and the write past the reserve");
}

#[test]
fn fragmented_packets_and_syns_to_clamp_are_gathered_into_the_slot() {
    let mut h = Harness::new(8);
    let mut q = OsQueue::new();
    let txq = tx_queue(&h, &mut q);
    let packet = ipv4(900, 4);
    let f = q.post(0, 0, &[&packet[..10], &packet[10..500], &packet[500..]]);
    h.peer.set_mss(1200);
    let mut syn = std::vec![0u8; 44];
    syn[0] = 0x45;
    syn[2..4].copy_from_slice(&44u16.to_be_bytes());
    syn[9] = 6;
    syn[32] = 6 << 4;
    syn[33] = 0x02;
    syn[40..44].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    let syn_before = syn.clone();
    q.post(1, f, &[&syn]);
    q.packets.set_end(2);
    q.fragments.set_end(4);
    txq.advance();
    let sent = h.os.state().sent.lock().unwrap().clone();
    assert_eq!(h.open(&sent[0].1), packet);
    let clamped = h.open(&sent[1].1);
    assert_eq!(&clamped[42..44], &1200u16.to_be_bytes());
    assert_eq!(syn, syn_before, "the SYN was clamped in the slot, not in OS memory");
    assert_eq!(h.dp.copies().tx_copied_bytes.load(Ordering::SeqCst), 944);
    for (slot, wire, _) in &sent {
        h.os.events().send_complete(SendSlot(*slot), NtStatus::SUCCESS, wire.len());
    }
    txq.advance();
    assert_eq!((q.packet_begin(), q.fragment_begin()), (2, 4));
}

#[test]
fn unroutable_oversize_and_refused_packets_are_dropped_and_counted() {
    let h = Harness::new(8);
    let mut q = OsQueue::new();
    let txq = tx_queue(&h, &mut q);
    let not_ip = std::vec![0x2au8; 64];
    let big = ipv4(2040, 1);
    let ok = ipv4(64, 2);
    let mut f = q.post(0, 0, &[&not_ip]);
    f = q.post(1, f, &[&big]);
    f = q.post(2, f, &[&ok]);
    q.packets.set_end(3);
    q.fragments.set_end(f);
    h.os.state().refuse.store(true, Ordering::SeqCst);
    txq.advance();
    let d = h.dp.drops();
    assert_eq!(
        (d.get(DropReason::TxUnroutable), d.get(DropReason::TxOversize), d.get(DropReason::TxSendRefused)),
        (1, 1, 1)
    );
    assert_eq!(h.dp.stats().snapshot().lost_out_data_packets, 3);
    assert_eq!((q.packet_begin(), q.fragment_begin()), (3, 3), "all three returned at once");
}

/// An Advance takes send slots several at a time; the ones it did not use
/// (a packet that failed to seal, a ring with fewer packets) are free again
/// once it returns, so control packets and keepalives still find them.
#[test]
fn an_advance_leaves_the_send_slots_it_did_not_use_free() {
    let h = Harness::new(8);
    let mut q = OsQueue::new();
    let txq = tx_queue(&h, &mut q);
    let (big, ok) = (ipv4(2040, 1), ipv4(64, 2));
    let f = q.post(0, 0, &[&big]);
    let f = q.post(1, f, &[&ok]);
    q.packets.set_end(2);
    q.fragments.set_end(f);
    txq.advance();
    assert_eq!(h.dp.drops().get(DropReason::TxOversize), 1);
    let state = h.os.state();
    assert_eq!(state.sent.lock().unwrap().len(), 1, "the packet that fits is sent");
    // One slot carries it; the other seven each take a control packet.
    control_fills_every_slot(&h, 7);
    let (slot, wire, _) = state.sent.lock().unwrap()[0].clone();
    h.os.events().send_complete(SendSlot(slot), NtStatus::SUCCESS, wire.len());
    txq.advance();
    assert_eq!((q.packet_begin(), q.fragment_begin()), (2, 2));
}

#[test]
fn cancel_returns_unposted_packets_and_waits_for_sends_in_flight() {
    let h = Harness::new(1);
    let mut q = OsQueue::new();
    let txq = tx_queue(&h, &mut q);
    let (a, b) = (ipv4(64, 1), ipv4(64, 2));
    let f = q.post(0, 0, &[&a]);
    q.post(1, f, &[&b]);
    q.packets.set_end(2);
    q.fragments.set_end(2);
    txq.advance();
    txq.cancel();
    txq.advance();
    assert_eq!(q.packet_begin(), 0, "packet 0 is still in flight");
    let (slot, wire, _) = h.os.state().sent.lock().unwrap()[0].clone();
    h.os.events().send_complete(SendSlot(slot), NtStatus::SUCCESS, wire.len());
    txq.advance();
    assert_eq!((q.packet_begin(), q.fragment_begin()), (2, 2));
    assert_eq!(h.dp.drops().get(DropReason::TxCancelled), 1);
    assert_eq!(h.os.state().sent.lock().unwrap().len(), 1, "nothing new was sent");
}

#[test]
fn keepalive_and_control_packets_share_the_send_slots() {
    let mut h = Harness::new(1);
    h.dp.send_keepalive(&h.peer.clone()).unwrap();
    assert_eq!(h.dp.send_control(remote(), &[0x38, 1, 2, 3]), Err(TxError::NoSendSlot));
    let state = h.os.state();
    let (slot, wire, to) = state.sent.lock().unwrap()[0].clone();
    assert_eq!((h.open(&wire), to), (KEEPALIVE_PING.to_vec(), remote()));
    h.os.events().send_complete(SendSlot(slot), NtStatus::SUCCESS, wire.len());
    h.dp.send_control(remote(), &[0x38, 1, 2, 3]).unwrap();
    let (slot, wire, _) = state.sent.lock().unwrap()[1].clone();
    assert_eq!(wire, [0x38, 1, 2, 3]);
    h.os.events().send_complete(SendSlot(slot), NtStatus::SUCCESS, wire.len());
    let s = h.dp.stats().snapshot();
    // Sent control packets are the device's count (WriteFile); the data path
    // counts only the one it could not send.
    assert_eq!((s.sent_data_packets, s.sent_control_packets, s.lost_out_control_packets), (1, 0, 1));
}

#[test]
fn close_waits_for_retained_lists_and_sends() {
    let mut h = Harness::new(4);
    let mut q = OsQueue::new();
    let rxq = rx_queue(&h, &mut q);
    let mut ind = Indication::single(&[h.seal(&ipv4(64, 1))]);
    assert_eq!(ind.deliver(&h.os.events()), NtStatus::PENDING);
    h.dp.send_control(remote(), &[0x38, 0, 0, 0]).unwrap();
    q.packets.set_end(2);
    q.fragments.set_end(2);
    rxq.advance();
    assert_eq!(h.dp.close_transport(), CloseProgress::Waiting { retained_lists: 1, sends_in_flight: 1 });
    assert_eq!(h.dp.send_control(remote(), &[0x38, 0, 0, 0]), Err(TxError::NoTransport));
    let state = h.os.state();
    h.dp.return_rx_buffer(q.return_context(0));
    assert_eq!(state.released.lock().unwrap().len(), 1);
    assert!(!state.closed.load(Ordering::SeqCst));
    let (slot, wire, _) = state.sent.lock().unwrap()[0].clone();
    h.os.events().send_complete(SendSlot(slot), NtStatus::SUCCESS, wire.len());
    assert_eq!(h.dp.close_transport(), CloseProgress::Closed);
    assert!(state.closed.load(Ordering::SeqCst));
}

// ---------------------------------------------------------------- TCP

#[test]
fn tcp_frames_carry_a_length_and_partial_sends_resend_the_rest_in_order() {
    let h = Harness::with(4, Layout::Standard, true);
    h.dp.send_control(remote(), &[0x38, 9, 9, 9, 9]).unwrap();
    h.dp.send_control(remote(), &[0x38, 7, 7]).unwrap();
    let state = h.os.state();
    let events = h.os.events();
    assert_eq!(state.sent.lock().unwrap().len(), 1, "one send at a time keeps the stream ordered");
    let (slot, first, _) = state.sent.lock().unwrap()[0].clone();
    assert_eq!(first, [0, 5, 0x38, 9, 9, 9, 9]);
    events.send_complete(SendSlot(slot), NtStatus::SUCCESS, 3);
    let sent = state.sent.lock().unwrap().clone();
    assert_eq!(sent[1].1, [9, 9, 9, 9], "the rest of the first frame before the second");
    events.send_complete(SendSlot(sent[1].0), NtStatus::SUCCESS, 4);
    let sent = state.sent.lock().unwrap().clone();
    assert_eq!(sent[2].1, [0, 3, 0x38, 7, 7]);
    events.send_complete(SendSlot(sent[2].0), NtStatus::SUCCESS, 5);
    let s = h.dp.stats().snapshot();
    // SentControlPackets belongs to the control plane (counted at WriteFile).
    assert_eq!((s.sent_control_packets, s.transport_bytes_sent), (0, 12));
}

#[test]
fn tcp_stream_bytes_are_reframed_and_go_through_the_copy_path() {
    let mut h = Harness::with(4, Layout::Epoch, true);
    let mut q = OsQueue::new();
    let rxq = rx_queue(&h, &mut q);
    let (a, b) = (ipv4(300, 1), ipv4(80, 2));
    let mut stream = Vec::new();
    for d in [h.seal(&a), std::vec![0x38, 1, 2, 3], h.seal(&b)] {
        stream.extend_from_slice(&(d.len() as u16).to_be_bytes());
        stream.extend_from_slice(&d);
    }
    let events = h.os.events();
    for chunk in stream.chunks(7) {
        events.stream_received(chunk);
    }
    assert_eq!(h.dp.peers().controls.lock().unwrap().len(), 1);
    q.packets.set_end(4);
    q.fragments.set_end(4);
    rxq.advance();
    assert_eq!((q.fragment_bytes(0), q.fragment_bytes(1)), (a, b));
    h.dp.return_rx_buffer(q.return_context(0));
    h.dp.return_rx_buffer(q.return_context(1));
    events.stream_received(&[0, 0]);
    assert_eq!(h.dp.peers().disconnects.lock().unwrap().as_slice(), &[NtStatus::CONNECTION_ABORTED]);
}

// ---------------------------------------------------------------- threads

// SAFETY: an Indication owns all its memory (boxes); the raw pointers inside
// point only into it, so moving it between threads moves the whole.
unsafe impl Send for Indication {}

#[test]
fn concurrent_receives_advances_and_returns_deliver_every_packet_once_and_leak_nothing() {
    const THREADS: usize = 3;
    const LISTS: usize = if cfg!(miri) { 3 } else { 100 };
    const PER_LIST: usize = 4;
    let mut h = Harness::new(8);
    let mut q = OsQueue::new();
    let rxq = rx_queue(&h, &mut q);
    // Sealed in round-robin order so every reordering stays inside the
    // replay window (1200 packets < 2048).
    let mut per_thread: Vec<Vec<Vec<Vec<u8>>>> = (0..THREADS).map(|_| Vec::new()).collect();
    for list in 0..LISTS {
        for (t, lists) in per_thread.iter_mut().enumerate() {
            let datagrams = (0..PER_LIST)
                .map(|k| {
                    let id = ((t * LISTS + list) * PER_LIST + k) as u32;
                    let mut p = ipv4(60 + (id as usize % 500), id as u8);
                    p[20..24].copy_from_slice(&id.to_be_bytes());
                    h.seal(&p)
                })
                .collect();
            lists.push(datagrams);
        }
    }
    let total = THREADS * LISTS * PER_LIST;
    let events = h.os.events();
    let done = AtomicUsize::new(0);
    let pending_statuses = AtomicUsize::new(0);
    let mut seen = std::vec![false; total];
    let mut kept: Vec<Vec<Indication>> = Vec::new();
    std::thread::scope(|s| {
        let receivers: Vec<_> = per_thread
            .into_iter()
            .map(|lists| {
                let events = events.clone();
                let (done, pending_statuses) = (&done, &pending_statuses);
                s.spawn(move || {
                    let mut keep = Vec::new();
                    for datagrams in lists {
                        let mut ind = Indication::single(&datagrams);
                        if ind.deliver(&events) == NtStatus::PENDING {
                            pending_statuses.fetch_add(1, Ordering::SeqCst);
                        }
                        keep.push(ind);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    keep
                })
            })
            .collect();
        // This thread plays NetAdapterCx's poll: offer, advance, read,
        // return.
        let mask = RING - 1;
        loop {
            let finished = done.load(Ordering::SeqCst) == THREADS;
            let (pb, fb) = (q.packet_begin(), q.fragment_begin());
            q.packets.set_end((pb + mask) & mask);
            q.fragments.set_end((fb + mask) & mask);
            rxq.advance();
            let n = (q.packet_begin().wrapping_sub(pb)) & mask;
            for k in 0..n {
                let p = q.packet((pb + k) & mask);
                let bytes = q.fragment_bytes(p.fragment_index);
                let id = u32::from_be_bytes(bytes[20..24].try_into().unwrap()) as usize;
                let mut want = ipv4(60 + (id % 500), id as u8);
                want[20..24].copy_from_slice(&(id as u32).to_be_bytes());
                assert_eq!(bytes, want, "packet {id}");
                assert!(!seen[id], "packet {id} twice");
                seen[id] = true;
                h.dp.return_rx_buffer(q.return_context(p.fragment_index));
            }
            if finished && n == 0 && h.dp.occupancy().rx_pending == 0 {
                break;
            }
        }
        for r in receivers {
            kept.push(r.join().unwrap());
        }
    });
    let delivered = seen.iter().filter(|s| **s).count();
    let dropped = h.dp.drops().total() as usize;
    assert_eq!(delivered + dropped, total, "every packet delivered or counted");
    // The poll here lags the receivers (8-element rings), so the retention
    // budget runs out and some data takes the copy path: both paths meet.
    let released = h.os.state().released.lock().unwrap().len();
    assert_eq!(released, pending_statuses.load(Ordering::SeqCst), "each retained list released once");
    assert_eq!(h.dp.occupancy(), Occupancy::default());
    drop(kept);
}

#[test]
fn completions_on_another_thread_drain_every_packet_in_order() {
    const PACKETS: usize = if cfg!(miri) { 12 } else { 400 };
    let h = Harness::new(3);
    let mut q = OsQueue::new();
    let txq = tx_queue(&h, &mut q);
    let packets: Vec<Vec<u8>> = (0..PACKETS).map(|i| ipv4(64 + i % 100, i as u8)).collect();
    let state = h.os.state();
    let events = h.os.events();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // The transport's completion thread: completes sends as they come.
        let completer = s.spawn(|| {
            let mut done = 0;
            while !stop.load(Ordering::SeqCst) {
                let next = state.sent.lock().unwrap().get(done).cloned();
                match next {
                    Some((slot, wire, _)) => {
                        events.send_complete(SendSlot(slot), NtStatus::SUCCESS, wire.len());
                        done += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
            done
        });
        // This thread plays the OS: post into free ring space, advance.
        let mask = RING - 1;
        let (mut posted, mut p, mut f) = (0usize, 0u32, 0u32);
        while q.packet_begin() != p || posted < PACKETS {
            let free = (q.packet_begin().wrapping_sub(p).wrapping_sub(1)) & mask;
            for _ in 0..free.min((PACKETS - posted) as u32) {
                f = q.post(p, f, &[&packets[posted]]);
                p = (p + 1) & mask;
                posted += 1;
            }
            q.packets.set_end(p);
            q.fragments.set_end(f);
            txq.advance();
            std::thread::yield_now();
        }
        stop.store(true, Ordering::SeqCst);
        assert_eq!(completer.join().unwrap(), PACKETS);
    });
    let sent = state.sent.lock().unwrap().clone();
    let mut h = h;
    for (i, (_, wire, _)) in sent.iter().enumerate() {
        assert_eq!(h.open(wire), packets[i], "packet {i} in ring order");
    }
    assert_eq!(q.fragment_begin(), q.fragments_end());
    assert_eq!(h.dp.drops().total(), 0);
    assert_eq!(h.dp.occupancy().sends_in_flight, 0);
}
