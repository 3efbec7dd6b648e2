//! A real point-to-point tunnel on Linux built from the driver's own data
//! path (Linux only): a TUN device plays the network stack above the
//! adapter, the NetAdapterCx model ([`HostNetAdapter`]) carries its packets
//! through the real RX and TX queues, and the WSK model's real UDP socket
//! (batched `recvmmsg`/`sendmmsg`) carries the datagrams.
//!
//! ```text
//! TUN read ─▶ PacketSource ─▶ TX queue (one-pass encrypt) ─▶ WSK sendmmsg
//! TUN write ◀─ UpperLayer ◀─ RX queue (in-place decrypt)  ◀─ WSK recvmmsg
//! ```
//!
//! Keys come from a static key file ([`keyfile`]) or from a session taken
//! over from real OpenVPN (the real-peer tests). Keepalive pings and the
//! silence timeout run on the control plane's timer logic
//! ([`crate::control::keepalive::Keepalive`]) over the data path's
//! [`Datapath::send_keepalive`], as the driver's timer would.
//!
//! [`Verification::Full`] runs every check the models make in tests;
//! [`Verification::Lean`] (benchmarks) leaves out only the WSK model's
//! buffer poisoning and send fingerprints, which cost a pass over every
//! byte and prove nothing new once the tests have passed, and packs ring
//! elements without stride padding (the tests prove strides are honoured).
//! Every ownership check of both models still runs.

pub mod keyfile;
pub mod tun;

use alloc::sync::Arc;
use core::net::{IpAddr, SocketAddr};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;
use std::string::String;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::vec::Vec;

use crate::control::actions::TransportId;
use crate::control::keepalive::Keepalive;
use crate::control::peers::{Endpoint, Peer};
use crate::crypto::host::{HostCrypto, HostKey};
use crate::crypto::slots::{SlotIndex, new_slot};
use crate::datapath::{CloseProgress, Datapath, Peers};
use crate::ntstatus::NtStatus;
use crate::os::host::netadapter::{
    CompletedTx, DeliveredPacket, HostNetAdapter, ModelConfig, Notifier, PacketSource, RingGeometry, TxPacket,
    UpperLayer,
};
use crate::os::host::verifier::Verifier;
use crate::os::host::wsk::{
    CompletionMode, HostSocket, ListLen, Network, ReceiveConfig, SendConfig, WskConfig, WskProvider, WskVerifier,
};
use crate::os::time::Instant;
use crate::os::{Os, SEND_SLOT_SIZE, SocketEvents};
use crate::proto::PeerId;
use crate::proto::aead_frame::STANDARD_HEAD_ROOM;
pub use keyfile::{Side, TunnelKeys};
pub use tun::{Tun, TunError};

/// Largest inner packet: the TUN MTU (OpenVPN's `tun-mtu` default), which
/// is also the adapter's MaximumFrameSize.
pub const TUN_MTU: usize = 1500;

/// Packets read from the TUN device per wake-up before looking at the stop
/// flag again.
const TUN_READ_BATCH: usize = 256;

/// TUN packets queued for the TX poll thread at most; the reader waits past
/// it (the kernel then queues in the TUN device, and drops there).
const TX_SOURCE_LIMIT: usize = 512;

/// The UDP socket's buffers: a few milliseconds of line rate, so that a
/// burst does not overflow while the receive thread runs the data path
/// (wireguard-go and OpenVPN's `--rcvbuf` make the same choice).
const SOCKET_BUFFER: usize = 4 << 20;

/// How long a blocked thread sleeps before it looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// How often the keepalive timers are looked at (the driver's timer DPC).
const KEEPALIVE_TICK: Duration = Duration::from_millis(100);

/// How long [`HostTunnel::stop`] waits for the socket to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

static CRYPTO: HostCrypto = HostCrypto;

/// How much of the models' checking runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verification {
    /// Every check the tests run.
    #[default]
    Full,
    /// No WSK buffer poisoning, no send fingerprints, no ring stride
    /// padding (benchmarks).
    Lean,
}

/// What a tunnel is made of.
#[derive(Clone, Debug)]
pub struct TunnelConfig {
    /// The TUN device (created if missing) in the caller's namespace.
    pub tun: String,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub keys: TunnelKeys,
    /// The first packet id sent: 1 for a fresh key; above the last id the
    /// real client used when taking over its session.
    pub first_packet_id: u32,
    /// Ping after this many seconds without sending (0: never).
    pub keepalive_interval: u32,
    /// Report the peer silent after this many seconds (0: never).
    pub keepalive_timeout: u32,
    /// Clamp TCP SYNs' MSS to this (SET_PEER's MSS).
    pub mss: Option<u16>,
    pub verification: Verification,
}

/// The host model as the data path's `Os`.
pub struct TunnelOs {
    wsk: WskProvider,
    notifier: Notifier,
    epoch: std::time::Instant,
}

impl TunnelOs {
    /// The model's OS for one adapter: sockets from `wsk`, notifications to
    /// `notifier` (also what tests use to run the data path over the
    /// in-memory network).
    pub fn new(wsk: WskProvider, notifier: Notifier) -> Self {
        Self { wsk, notifier, epoch: std::time::Instant::now() }
    }
}

impl Os for TunnelOs {
    type Crypto = HostCrypto;
    type Transport = HostSocket;

    fn crypto(&self) -> &HostCrypto {
        &CRYPTO
    }

    fn now(&self) -> Instant {
        Instant::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn notify_rx(&self) {
        self.notifier.notify_rx();
    }

    fn notify_tx(&self) {
        self.notifier.notify_tx();
    }

    fn set_link_state(&self, _up: bool) {}

    fn schedule_timer(&self, _due: Instant) {}

    fn open_udp(
        &self,
        local: SocketAddr,
        remote: Option<SocketAddr>,
        ipv6_only: bool,
        events: Arc<dyn SocketEvents>,
    ) -> Result<HostSocket, NtStatus> {
        self.wsk.open_udp(local, remote, ipv6_only, events)
    }

    fn open_tcp(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        events: Arc<dyn SocketEvents>,
    ) -> Result<HostSocket, NtStatus> {
        self.wsk.open_tcp(local, remote, events)
    }
}

/// The P2P control plane as the data path sees it: one peer, whatever id a
/// received packet names (P2P has one peer; OpenVPN's server sends its own
/// peer id or none).
pub struct OnePeer {
    peer: Arc<Peer<HostKey>>,
    control_packets: AtomicU64,
}

impl OnePeer {
    pub fn new(peer: Arc<Peer<HostKey>>) -> Self {
        Self { peer, control_packets: AtomicU64::new(0) }
    }

    pub fn peer(&self) -> &Arc<Peer<HostKey>> {
        &self.peer
    }

    /// Control-channel packets received (and dropped: no control channel).
    pub fn control_packets(&self) -> u64 {
        self.control_packets.load(Ordering::Relaxed)
    }
}

impl Peers<HostKey> for OnePeer {
    fn rx_peer(&self, _peer_id: PeerId) -> Option<Arc<Peer<HostKey>>> {
        Some(self.peer.clone())
    }
    fn tx_peer(&self, _dst: IpAddr) -> Option<Arc<Peer<HostKey>>> {
        Some(self.peer.clone())
    }
    fn source_allowed(&self, _peer: &Peer<HostKey>, _inner_src: IpAddr) -> bool {
        true
    }
    fn control_packet(&self, _transport: TransportId, _from: SocketAddr, _bytes: &[u8]) {
        // No control channel here: the keys are static or taken over.
        self.control_packets.fetch_add(1, Ordering::Relaxed);
    }
    // The socket only accepts the configured remote, so no float.
    fn float(&self, _peer: &Peer<HostKey>, _from: SocketAddr) {}
    fn connected(&self, _transport: TransportId, _status: NtStatus) {}
    fn disconnected(&self, _transport: TransportId, _status: NtStatus) {}
}

/// The tunnel's data path.
pub type TunnelDatapath = Datapath<TunnelOs, OnePeer>;

/// Counters of the TUN side and the timers.
#[derive(Debug, Default)]
struct Counters {
    tun_read: AtomicU64,
    tun_read_dropped: AtomicU64,
    tun_written: AtomicU64,
    tun_write_dropped: AtomicU64,
    tun_write_errors: AtomicU64,
    keepalives_sent: AtomicU64,
    timeouts: AtomicU64,
}

/// A snapshot of the tunnel's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Packets read from the TUN device (handed to the TX queue).
    pub tun_read: u64,
    /// Read but not queued: the TX source stayed full.
    pub tun_read_dropped: u64,
    /// RX packets written to the TUN device.
    pub tun_written: u64,
    /// RX packets the TUN device's queue had no room for.
    pub tun_write_dropped: u64,
    pub tun_write_errors: u64,
    pub keepalives_sent: u64,
    /// Authenticated data packets that were not delivered: the peer's
    /// keepalive pings (and any packet dropped after decryption).
    pub consumed_after_decrypt: u64,
    /// Times the peer was silent for the keepalive timeout.
    pub timeouts: u64,
    pub control_packets: u64,
    /// Packets dropped anywhere in the data path.
    pub datapath_drops: u64,
}

/// The OS above the adapter: received packets go to the TUN device,
/// completed TX buffers back to the reader's pool.
struct TunStack {
    tun: Arc<Tun>,
    counters: Arc<Counters>,
    free: Mutex<Vec<Vec<u8>>>,
}

/// TX buffers kept for reuse; more are dropped.
const FREE_BUFFERS_MAX: usize = TX_SOURCE_LIMIT * 2;

impl TunStack {
    fn buffer(&self) -> Vec<u8> {
        let mut b = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
        b.resize(SEND_SLOT_SIZE, 0);
        b
    }

    fn recycle(&self, mut buffer: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < FREE_BUFFERS_MAX {
            buffer.clear();
            free.push(buffer);
        }
    }
}

impl UpperLayer for TunStack {
    fn deliver(&self, packet: DeliveredPacket) {
        let counter = match self.tun.write_packet(&packet.bytes) {
            Ok(true) => &self.counters.tun_written,
            Ok(false) => &self.counters.tun_write_dropped,
            Err(_) => &self.counters.tun_write_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn completed(&self, packet: CompletedTx) {
        self.recycle(packet.payload);
    }
}

/// Why a tunnel did not start or did not stop cleanly.
#[derive(Debug)]
pub enum TunnelError {
    Tun(TunError),
    /// The key did not install (wrong length for the cipher).
    Key,
    /// The take-over's packet ids could not be skipped.
    PacketIds,
    /// NEW_PEER's socket did not open.
    Socket(NtStatus),
    /// The NetAdapterCx model did not start the queues.
    Queues(NtStatus),
    /// A model found broken ownership rules, leaks, or a socket that did
    /// not close: each, as the verifiers put it.
    Violations(Vec<String>),
}

impl core::fmt::Display for TunnelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TunnelError::Tun(e) => write!(f, "{e}"),
            TunnelError::Violations(v) => write!(f, "{} violations:\n{}", v.len(), v.join("\n")),
            other => write!(f, "{other:?}"),
        }
    }
}

/// A running tunnel.
pub struct HostTunnel {
    dp: Arc<TunnelDatapath>,
    nx: HostNetAdapter<TunnelDatapath>,
    peer: Arc<Peer<HostKey>>,
    stack: Arc<TunStack>,
    wsk_verifier: Arc<WskVerifier>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    stopped: bool,
}

fn model_config(verification: Verification) -> ModelConfig {
    let geometry = |packets: u32, fragments: u32| match verification {
        // The test geometry's odd strides: proves ElementStride is honoured.
        Verification::Full => RingGeometry { packets, fragments, ..RingGeometry::default() },
        // Elements back to back: the ring checks compare runs, not pieces.
        Verification::Lean => RingGeometry {
            packets,
            fragments,
            packet_stride: 12,
            fragment_stride: 8,
            virtual_address_stride: 8,
            return_context_stride: 8,
            checksum_stride: 1,
        },
    };
    ModelConfig {
        rx: geometry(512, 512),
        tx: geometry(256, 512),
        maximum_frame_size: TUN_MTU as u32,
        rx_mdl_pool: 512,
        ..ModelConfig::default()
    }
}

fn wsk_config(verification: Verification) -> WskConfig {
    let full = verification == Verification::Full;
    WskConfig {
        receive: ReceiveConfig {
            buffers: 2048,
            lists: 256,
            list_len: ListLen::UpTo(64),
            poison: full,
            socket_buffer: Some(SOCKET_BUFFER),
            ..ReceiveConfig::default()
        },
        send: SendConfig {
            slots: 512,
            completion: CompletionMode::Immediate,
            verify_buffers: full,
            ..SendConfig::default()
        },
        ..WskConfig::default()
    }
}

impl HostTunnel {
    /// Opens the TUN device and the socket in the calling thread's network
    /// namespace (the tunnel's threads inherit it), installs the key and
    /// starts both queues.
    pub fn start(config: &TunnelConfig) -> Result<HostTunnel, TunnelError> {
        let tun = Arc::new(Tun::open(&config.tun).map_err(TunnelError::Tun)?);
        let nx_verifier = Verifier::new();
        let wsk_verifier = WskVerifier::new();
        // WSK memory that goes back to WSK is poisoned for the NetAdapterCx
        // model: a fragment still pointing into it is a violation.
        let v = nx_verifier.clone();
        wsk_verifier.on_release(move |r| v.mark_released(r));
        let v = nx_verifier.clone();
        wsk_verifier.on_indicate(move |r| v.mark_live(r));
        let notifier = Notifier::new(nx_verifier);
        let wsk = WskProvider::new(Network::Real, wsk_config(config.verification), wsk_verifier.clone());
        let os = Arc::new(TunnelOs::new(wsk, notifier.clone()));

        let endpoint = Endpoint { local: config.local, remote: config.remote };
        let peer = Arc::new(Peer::new(config.keys.peer_id, endpoint, None, None, os.now()));
        let slot = new_slot(&CRYPTO, &config.keys.new_key()).map_err(|_| TunnelError::Key)?;
        {
            let mut tx = peer.tx.lock();
            tx.install(SlotIndex::Primary, slot.tx);
            // A key starts sending at packet id 1. Taking over a key the
            // real client already used means continuing above its ids (the
            // server's replay window refuses the rest): the ids below are
            // used up through the slot's own API.
            let mut scratch = [0u8; STANDARD_HEAD_ROOM];
            for _ in 1..config.first_packet_id {
                tx.encrypt_from(&CRYPTO, config.keys.peer_id, &[], &mut scratch).map_err(|_| TunnelError::PacketIds)?;
            }
        }
        peer.rx.lock().install(SlotIndex::Primary, slot.rx);
        if let Some(mss) = config.mss {
            peer.set_mss(mss);
        }

        let peers = OnePeer::new(peer.clone());
        let dp = Arc::new(Datapath::new(os.clone(), peers, Arc::default()));
        let counters = Arc::new(Counters::default());
        let stack = Arc::new(TunStack { tun: tun.clone(), counters, free: Mutex::new(Vec::new()) });
        let mut nx =
            HostNetAdapter::with_upper_layer(dp.clone(), notifier, model_config(config.verification), stack.clone());
        nx.start().map_err(TunnelError::Queues)?;
        // Queues first, then the socket: nothing received is dropped for
        // want of a started RX queue.
        for _ in 0..1000 {
            if dp.rx_started() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        dp.open_udp(TransportId(1), config.local, Some(config.remote), false).map_err(TunnelError::Socket)?;

        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (source, s, st) = (nx.source(), stack.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name("tun-read".into())
                .spawn(move || read_tun(&s, &source, &st))
                .expect("spawn the TUN reader"),
        );
        let (d, st, c) = (dp.clone(), stop.clone(), stack.counters.clone());
        let (interval, timeout) = (config.keepalive_interval, config.keepalive_timeout);
        threads.push(
            std::thread::Builder::new()
                .name("keepalive".into())
                .spawn(move || keepalive(&d, &os, &c, interval, timeout, &st))
                .expect("spawn the keepalive timer"),
        );
        Ok(HostTunnel { dp, nx, peer, stack, wsk_verifier, stop, threads, stopped: false })
    }

    /// The data path, for its counters.
    pub fn datapath(&self) -> &TunnelDatapath {
        &self.dp
    }

    /// The peer, for its key slots and activity clocks.
    pub fn peer(&self) -> &Arc<Peer<HostKey>> {
        &self.peer
    }

    /// The NetAdapterCx model's accounting.
    pub fn adapter_stats(&self) -> crate::os::host::netadapter::Stats {
        self.nx.stats()
    }

    pub fn stats(&self) -> TunnelStats {
        let c = &self.stack.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let received = u64::from(self.dp.stats().received_data_packets.load(Ordering::Relaxed));
        TunnelStats {
            tun_read: get(&c.tun_read),
            tun_read_dropped: get(&c.tun_read_dropped),
            tun_written: get(&c.tun_written),
            tun_write_dropped: get(&c.tun_write_dropped),
            tun_write_errors: get(&c.tun_write_errors),
            keepalives_sent: get(&c.keepalives_sent),
            consumed_after_decrypt: received.saturating_sub(self.nx.stats().rx_packets_indicated),
            timeouts: get(&c.timeouts),
            control_packets: self.dp.peers().control_packets.load(Ordering::Relaxed),
            datapath_drops: self.dp.drops().total(),
        }
    }

    /// Every drop reason with a non-zero count, as `Reason=count` words.
    pub fn drop_summary(&self) -> String {
        use crate::datapath::DropReason::*;
        let all = [
            RxNullMdl,
            RxBatchOverflow,
            RxTooLong,
            RxUnmapped,
            RxMalformed,
            RxNoSource,
            RxUnknownPeer,
            RxUnknownKey,
            RxReplay,
            RxAuthFailed,
            RxDecrypt,
            RxNotIp,
            RxSourceNotAllowed,
            RxNoSlot,
            RxCopyPoolEmpty,
            RxQueueFull,
            RxQueueStopped,
            RxCancelled,
            RxStreamBroken,
            RxBadReturnContext,
            TxUnroutable,
            TxNoKey,
            TxOversize,
            TxMalformed,
            TxEncrypt,
            TxSendRefused,
            TxSendFailed,
            TxCancelled,
            TxNoTransport,
            TxNoSendSlot,
        ];
        let drops = self.dp.drops();
        let words: Vec<String> =
            all.iter().filter(|r| drops.get(**r) > 0).map(|r| std::format!("{r:?}={}", drops.get(*r))).collect();
        words.join(" ")
    }

    /// Encrypts `plaintext` as the next data packet of the primary key,
    /// without sending it (tests: a packet to replay or tamper with).
    pub fn seal(&self, plaintext: &[u8]) -> Option<Vec<u8>> {
        let mut buf = std::vec![0u8; STANDARD_HEAD_ROOM + plaintext.len()];
        let n = self.peer.tx.lock().encrypt_from(&CRYPTO, self.peer.id(), plaintext, &mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// Sends `bytes` as they are from the tunnel's socket (the WriteFile
    /// path OpenVPN uses for control packets).
    pub fn send_raw(&self, bytes: &[u8]) -> Result<(), crate::datapath::TxError> {
        self.dp.send_control(self.peer.endpoint().remote, bytes)
    }

    /// Stops the threads and the queues, closes the socket, and reports
    /// anything either model found.
    pub fn stop(mut self) -> Result<TunnelStats, TunnelError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<TunnelStats, TunnelError> {
        self.stopped = true;
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let stats = self.stats();
        self.nx.finish();
        let mut problems: Vec<String> = Vec::new();
        let verifier = self.nx.verifier();
        problems.extend(verifier.violations().iter().map(|v| std::format!("NetAdapterCx: {v:?}")));
        problems.extend(verifier.leaks().iter().map(|l| std::format!("NetAdapterCx leak: {l:?}")));
        let deadline = std::time::Instant::now() + CLOSE_TIMEOUT;
        while self.dp.close_transport() != CloseProgress::Closed {
            if std::time::Instant::now() >= deadline {
                problems.push(std::format!("the socket did not close: {:?}", self.dp.occupancy()));
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        problems.extend(self.wsk_verifier.violations().iter().map(|v| std::format!("WSK: {v:?}")));
        if problems.is_empty() { Ok(stats) } else { Err(TunnelError::Violations(problems)) }
    }
}

impl Drop for HostTunnel {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.shutdown();
        }
    }
}

impl core::fmt::Debug for HostTunnel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostTunnel").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// TUN → TX queue, until `stop`.
fn read_tun(stack: &TunStack, source: &PacketSource, stop: &AtomicBool) {
    let counters = &stack.counters;
    while !stop.load(Ordering::Relaxed) {
        match stack.tun.wait_readable(STOP_POLL) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => {
                std::thread::sleep(STOP_POLL);
                continue;
            }
        }
        for _ in 0..TUN_READ_BATCH {
            let mut buffer = stack.buffer();
            let n = match stack.tun.read_packet(&mut buffer) {
                Ok(Some(n)) if n > 0 => n,
                _ => {
                    stack.recycle(buffer);
                    break;
                }
            };
            buffer.truncate(n);
            counters.tun_read.fetch_add(1, Ordering::Relaxed);
            if let Err(packet) = source.send_bounded(TxPacket::new(buffer), TX_SOURCE_LIMIT, STOP_POLL) {
                counters.tun_read_dropped.fetch_add(1, Ordering::Relaxed);
                stack.recycle(packet.payload);
            }
        }
    }
}

/// The driver's keepalive timer for the one peer, until `stop`.
fn keepalive(dp: &TunnelDatapath, os: &TunnelOs, counters: &Counters, interval: u32, timeout: u32, stop: &AtomicBool) {
    let peer = &dp.peers().peer;
    let mut timers = Keepalive::default();
    timers.configure(Some(interval), Some(timeout), os.now());
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(KEEPALIVE_TICK);
        let now = os.now();
        let due = timers.due(peer.last_sent(), peer.last_received(), now);
        if due.ping {
            if dp.send_keepalive(peer).is_ok() {
                counters.keepalives_sent.fetch_add(1, Ordering::Relaxed);
            }
            timers.pinged(now);
        }
        if due.expired {
            counters.timeouts.fetch_add(1, Ordering::Relaxed);
            timers.expired(now);
        }
    }
}
