//! Two P2P driver instances in the host model, for the data-path benchmark
//! (`benches/datapath.rs`) and the loopback example (`examples/loopback.rs`);
//! `tests/datapath_p2p.rs` shares its one-peer control plane, key install and
//! OS wiring:
//! the NetAdapterCx model plays each adapter's OS, the WSK model carries the
//! datagrams over the in-memory loopback or real UDP on 127.0.0.1. Traffic
//! is made by the model's generator on each TX poll thread and checked byte
//! for byte by a sink on each RX poll thread, so nothing is kept per packet.
//!
//! Included with `#[path]`; not every user needs every item.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovpn_dco::control::actions::TransportId;
use ovpn_dco::control::peers::{Endpoint, Peer};
use ovpn_dco::control::stats::DeviceStats;
use ovpn_dco::crypto::Cipher;
use ovpn_dco::crypto::host::{HostCrypto, HostKey};
use ovpn_dco::crypto::slots::{DirectionKey, NewKey, SlotIndex, new_slot};
use ovpn_dco::datapath::{CloseProgress, Datapath, Peers};
use ovpn_dco::ntstatus::NtStatus;
use ovpn_dco::os::Os;
use ovpn_dco::os::host::netadapter::{HostNetAdapter, ModelConfig, Notifier, Record, RingGeometry};
use ovpn_dco::os::host::os::HostOs;
use ovpn_dco::os::host::verifier::Verifier;
use ovpn_dco::os::host::wsk::{
    CompletionMode, ListLen, LoopbackConfig, LoopbackHub, Network, ReceiveConfig, SendConfig, WskConfig, WskProvider,
    WskVerifier,
};
use ovpn_dco::proto::aead_frame::Layout;
use ovpn_dco::proto::{KeyId, PeerId};

/// The P2P control plane as the data path sees it: one peer.
pub struct P2p {
    peer: Arc<Peer<HostKey>>,
    /// Control packets the data path handed up, as received.
    pub controls: Mutex<Vec<Vec<u8>>>,
}

impl P2p {
    pub fn new(peer: Arc<Peer<HostKey>>) -> P2p {
        P2p { peer, controls: Mutex::new(Vec::new()) }
    }
}

impl Peers<HostKey> for P2p {
    fn rx_peer(&self, peer_id: PeerId) -> Option<Arc<Peer<HostKey>>> {
        (self.peer.id() == peer_id).then(|| self.peer.clone())
    }
    fn tx_peer(&self, _dst: IpAddr) -> Option<Arc<Peer<HostKey>>> {
        Some(self.peer.clone())
    }
    fn source_allowed(&self, _peer: &Peer<HostKey>, _inner_src: IpAddr) -> bool {
        true
    }
    fn control_packet(&self, _transport: TransportId, _from: SocketAddr, bytes: &[u8]) {
        self.controls.lock().unwrap().push(bytes.to_vec());
    }
    fn float(&self, _peer: &Peer<HostKey>, _from: SocketAddr) {}
    fn connected(&self, _transport: TransportId, _status: NtStatus) {}
    fn disconnected(&self, _transport: TransportId, _status: NtStatus) {}
}

pub type Dp = Datapath<HostOs, P2p>;

/// What the receiving upper layer found, checked on its RX poll thread.
#[derive(Default)]
pub struct Received {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Delivered packets whose bytes are not what was sent.
    pub mismatched: AtomicU64,
    /// Delivered packets whose id was seen before.
    pub duplicates: AtomicU64,
}

/// One driver instance with its OS.
pub struct Node {
    pub dp: Arc<Dp>,
    pub nx: HostNetAdapter<Dp>,
    pub wsk: Arc<WskVerifier>,
    pub received: Arc<Received>,
    /// Packets this node's generator made.
    pub generated: Arc<AtomicU64>,
    sending: Arc<AtomicBool>,
}

/// The shape of the run: network, cipher, sizes of the model's tables.
#[derive(Clone)]
pub struct Setup {
    pub network: Network,
    pub cipher: Cipher,
    /// Inner packet size in bytes (an IPv4/UDP packet).
    pub size: usize,
}

/// The model's tables sized for throughput rather than for provoking
/// corner cases (the tests do that): rings, send slots and receive
/// buffers deep enough that each thread handoff carries a batch. Every
/// check stays on.
fn model_config() -> ModelConfig {
    let ring = RingGeometry { packets: 128, fragments: 256, ..RingGeometry::default() };
    ModelConfig { rx: ring, tx: ring, rx_mdl_pool: 256, record: Record::Counts, ..ModelConfig::default() }
}

fn wsk_config() -> WskConfig {
    WskConfig {
        receive: ReceiveConfig { buffers: 1024, lists: 128, list_len: ListLen::UpTo(64), ..ReceiveConfig::default() },
        send: SendConfig { slots: 256, completion: CompletionMode::Immediate, ..SendConfig::default() },
        ..WskConfig::default()
    }
}

/// Installs the primary key (key id 1) from (`enc`, `dec`) seeds.
pub fn install(peer: &Peer<HostKey>, cipher: Cipher, enc: u8, dec: u8) {
    install_slot(peer, SlotIndex::Primary, 1, cipher, enc, dec);
}

/// Installs key `key_id` into `slot` from (`enc`, `dec`) seeds: each seed is
/// the 32-byte key's every byte and the 8-byte implicit IV's.
pub fn install_slot(peer: &Peer<HostKey>, slot: SlotIndex, key_id: u8, cipher: Cipher, enc: u8, dec: u8) {
    let (e, d) = ([enc; 32], [dec; 32]);
    let new = NewKey {
        key_id: KeyId::new(key_id).unwrap(),
        cipher,
        layout: Layout::Standard,
        encrypt: DirectionKey { key: &e, key_len: 32, nonce_tail: [enc; 8] },
        decrypt: DirectionKey { key: &d, key_len: 32, nonce_tail: [dec; 8] },
    };
    let s = new_slot(&HostCrypto, &new).unwrap();
    peer.tx.lock().install(slot, s.tx);
    peer.rx.lock().install(slot, s.rx);
}

/// The OS of one instance: the WSK model on `network`, its verifier wired to
/// a fresh NetAdapterCx verifier so that WSK memory given back (and
/// poisoned) is flagged if a fragment still points into it.
pub fn host_os(network: Network, config: WskConfig, wsk: &Arc<WskVerifier>) -> (Arc<HostOs>, Notifier) {
    let nx_verifier = Verifier::new();
    let v = nx_verifier.clone();
    wsk.on_release(move |r| v.mark_released(r));
    let v = nx_verifier.clone();
    wsk.on_indicate(move |r| v.mark_live(r));
    let notifier = Notifier::new(nx_verifier);
    (Arc::new(HostOs::new(WskProvider::new(network, config, wsk.clone()), notifier.clone())), notifier)
}

/// The model starts the queues from its poll thread: data arriving before
/// EvtPacketQueueStart has no queue to be indicated to.
pub fn wait_started(dp: &Dp) {
    for _ in 0..1000 {
        if dp.rx_started() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("the RX queue never started");
}

/// The inner packet every id is made from: an IPv4/UDP packet of `size`
/// bytes from 10.8.0.2 to 10.8.0.1 with a patterned body; the id goes into
/// bytes 20..24 and into the last four.
pub fn template(size: usize) -> Vec<u8> {
    assert!(size >= 28, "an IPv4/UDP packet with an id is at least 28 bytes");
    let mut p: Vec<u8> = (0..size).map(|i| (i as u32).wrapping_mul(31).wrapping_add(7) as u8).collect();
    p[0] = 0x45;
    p[1] = 0;
    p[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    p[6] = 0;
    p[7] = 0;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 8, 0, 2]);
    p[16..20].copy_from_slice(&[10, 8, 0, 1]);
    p
}

/// Writes `id` into bytes 20..24 and the last four of a [`template`] packet.
pub fn stamp(p: &mut [u8], id: u32) {
    let n = p.len();
    p[20..24].copy_from_slice(&id.to_be_bytes());
    p[n - 4..].copy_from_slice(&id.to_be_bytes());
}

/// The id of a delivered packet if it is byte for byte the template
/// stamped with one id.
fn check(template: &[u8], p: &[u8]) -> Option<u32> {
    let n = template.len();
    if p.len() != n || p[..20] != template[..20] || p[24..n - 4] != template[24..n - 4] || p[20..24] != p[n - 4..] {
        return None;
    }
    Some(u32::from_be_bytes(p[20..24].try_into().ok()?))
}

/// Ids seen, one bit each (grows with the run: 1 MiB per 8 M packets).
#[derive(Default)]
struct Seen(Vec<u64>);

impl Seen {
    fn insert(&mut self, id: u32) -> bool {
        let (word, bit) = (id as usize / 64, id % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let fresh = self.0[word] & (1 << bit) == 0;
        self.0[word] |= 1 << bit;
        fresh
    }
}

impl Node {
    fn new(setup: &Setup, wsk: &Arc<WskVerifier>, local: SocketAddr, remote: SocketAddr, keys: (u8, u8)) -> Node {
        let (os, notifier) = host_os(setup.network.clone(), wsk_config(), wsk);
        let ep = Endpoint { local, remote };
        let peer = Arc::new(Peer::new(PeerId::new(1).unwrap(), ep, None, None, os.now()));
        install(&peer, setup.cipher, keys.0, keys.1);
        let dp = Arc::new(Datapath::new(os, P2p::new(peer), Arc::new(DeviceStats::default())));
        dp.open_udp(TransportId(1), local, Some(remote), false).expect("open the UDP socket");
        let mut nx = HostNetAdapter::new(dp.clone(), notifier, model_config());

        let received = Arc::new(Received::default());
        let (r, t) = (received.clone(), template(setup.size));
        let seen = Mutex::new(Seen::default());
        nx.on_deliver(move |bytes| {
            r.packets.fetch_add(1, Ordering::Relaxed);
            r.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            match check(&t, bytes) {
                None => r.mismatched.fetch_add(1, Ordering::Relaxed),
                Some(id) if !seen.lock().unwrap().insert(id) => r.duplicates.fetch_add(1, Ordering::Relaxed),
                Some(_) => 0,
            };
        });
        nx.start().expect("start the queues");
        wait_started(&dp);
        Node {
            dp,
            nx,
            wsk: wsk.clone(),
            received,
            generated: Arc::new(AtomicU64::new(0)),
            sending: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts sending packets of `size` bytes as fast as the TX ring takes
    /// them (the generator runs on the TX poll thread).
    pub fn start_sending(&self, size: usize) {
        let t = template(size);
        let (generated, sending) = (self.generated.clone(), self.sending.clone());
        sending.store(true, Ordering::Release);
        self.nx.generate(move |id, payload| {
            if !sending.load(Ordering::Acquire) {
                return None;
            }
            payload.extend_from_slice(&t);
            stamp(payload, id as u32);
            generated.fetch_add(1, Ordering::Relaxed);
            Some(1)
        });
    }

    /// Stops the generator; what is queued still goes out.
    pub fn stop_sending(&self) {
        self.sending.store(false, Ordering::Release);
        self.nx.stop_generating();
    }

    /// Every non-zero drop counter.
    pub fn drops(&self) -> String {
        self.dp.drops().nonzero().map(|(r, n)| format!("{r:?}={n}")).collect::<Vec<_>>().join(",")
    }

    /// Bytes the data path copied: RX copy path, TX gathers.
    pub fn copied_bytes(&self) -> u64 {
        let s = self.dp.copies();
        s.rx_copied_bytes.load(Ordering::Relaxed) + s.tx_copied_bytes.load(Ordering::Relaxed)
    }

    /// Violations and leaks the NetAdapterCx verifier holds now (leaks
    /// include buffers legitimately out while traffic runs).
    pub fn violations(&self) -> usize {
        self.nx.verifier().violations().len()
    }
}

/// Two nodes talking to each other. Each has its own WSK (and WSK
/// verifier), as two machines would: its NetAdapterCx verifier then tracks
/// only its own socket's receive buffers.
pub struct Pair {
    pub a: Node,
    pub b: Node,
}

/// Addresses for the pair: fixed ones on the in-memory loopback, two free
/// ports on 127.0.0.1 for real UDP.
fn addresses(network: &Network) -> (SocketAddr, SocketAddr) {
    match network {
        Network::Loopback(_) => ("10.0.0.1:1194".parse().unwrap(), "10.0.0.2:1194".parse().unwrap()),
        Network::Real => {
            let free = || {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1");
                s.local_addr().unwrap()
            };
            // Bound and dropped at once: a small race with other processes,
            // reported as a bind failure if lost.
            let (a, b) = (free(), free());
            (a, b)
        }
    }
}

pub fn loopback() -> Network {
    Network::Loopback(LoopbackHub::new(LoopbackConfig::default()))
}

impl Pair {
    pub fn new(setup: &Setup) -> Pair {
        let (la, lb) = addresses(&setup.network);
        let a = Node::new(setup, &WskVerifier::new(), la, lb, (0x11, 0x22));
        let b = Node::new(setup, &WskVerifier::new(), lb, la, (0x22, 0x11));
        Pair { a, b }
    }

    /// WSK violations of both nodes so far.
    pub fn wsk_violations(&self) -> Vec<String> {
        [&self.a, &self.b].iter().flat_map(|n| n.wsk.violations()).map(|v| format!("WSK: {v:?}")).collect()
    }

    /// Stops both adapters and closes both sockets, then asks both
    /// verifiers. Returns every problem found (empty: clean).
    pub fn finish(mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for n in [&mut self.a, &mut self.b] {
            n.stop_sending();
            n.nx.finish();
            let v = n.nx.verifier();
            problems.extend(v.violations().iter().map(|v| format!("NetAdapterCx: {v}")));
            problems.extend(v.leaks().iter().map(|l| format!("NetAdapterCx leak: {l:?}")));
            let mut progress = n.dp.close_transport();
            for _ in 0..500 {
                if progress == CloseProgress::Closed {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
                progress = n.dp.close_transport();
            }
            if progress != CloseProgress::Closed {
                problems.push(format!("socket did not close: {progress:?}"));
            }
            let o = n.dp.occupancy();
            if (o.retained_lists, o.rx_slots, o.rx_copy_buffers, o.rx_pending) != (0, 0, 0, 0) {
                problems.push(format!("data path leak at teardown: {o:?}"));
            }
            let r = &n.received;
            let bad = r.mismatched.load(Ordering::Relaxed);
            if bad > 0 {
                problems.push(format!("{bad} delivered packets differ from what was sent"));
            }
            let dup = r.duplicates.load(Ordering::Relaxed);
            if dup > 0 {
                problems.push(format!("{dup} packets delivered twice"));
            }
        }
        // The sockets are closed now: WSK's own leak checks have run.
        problems.extend(self.wsk_violations());
        problems
    }
}

/// CPU time this process used so far (user + system), from getrusage.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage writes one rusage into the zeroed struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Pins this process (and every thread it starts afterwards) to the CPU it
/// runs on now. Returns that CPU, or None if the kernel refused.
pub fn pin_to_one_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        return None;
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET writes a bit inside it
    // (cpu < CPU_SETSIZE, as the kernel returned it); sched_setaffinity
    // reads the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        (libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0).then_some(cpu as usize)
    }
}
