//! A real point-to-point tunnel on Linux built from the driver's own
//! adapter (Linux only): a TUN device plays the network stack above it, the
//! NetAdapterCx model ([`HostNetAdapter`]) carries its packets through the
//! real RX and TX queues, and the WSK model's real sockets carry the
//! datagrams (UDP, batched `recvmmsg`/`sendmmsg`) or the stream (TCP).
//!
//! ```text
//! TUN read ─▶ PacketSource ─▶ TX queue (one-pass encrypt) ─▶ WSK send
//! TUN write ◀─ UpperLayer ◀─ RX queue (in-place decrypt)  ◀─ WSK receive
//! ```
//!
//! The tunnel is OpenVPN's side of the handle: it configures the
//! [`Adapter`] only with IOCTL buffers laid out as `dco_win.c` fills them
//! ([`ioctl`]: NEW_PEER, NEW_KEY, SET_PEER for keepalive and MSS,
//! START_VPN), keeps a ReadFile pending for control packets and sends its
//! own with WriteFile, and lets the adapter's timer ([`Adapter::timer`],
//! run by the host model's passive timer) send keepalives and notice a
//! silent peer. Keys come from a static key file ([`keyfile`]) or from a
//! session taken over from real OpenVPN (the real-peer tests).
//!
//! Without a TUN device ([`Upper::Memory`]) the model records what it
//! delivers and the caller sends with [`HostTunnel::send_packet`]: the same
//! tunnel, testable without root.
//!
//! [`Verification::Full`] runs every check the models make in tests;
//! [`Verification::Lean`] (benchmarks) leaves out only the WSK model's
//! buffer poisoning and send fingerprints, which cost a pass over every
//! byte and prove nothing new once the tests have passed, and packs ring
//! elements without stride padding (the tests prove strides are honoured).
//! Every ownership check of both models still runs.

pub mod ioctl;
pub mod keyfile;
pub mod offload;
pub mod splice;
pub mod tun;

use alloc::sync::Arc;
use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;
use std::collections::VecDeque;
use std::string::String;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::vec::Vec;

use crate::adapter::{Adapter, DevicePeers};
use crate::control::device::{Outcome, ReadOutcome};
use crate::control::peers::Peer;
use crate::control::request::{Request, RequestId};
use crate::crypto::host::HostKey;
use crate::datapath::{CloseProgress, Datapath, Peers};
use crate::ntstatus::NtStatus;
use crate::os::host::netadapter::{
    CompletedTx, DeliveredPacket, HostNetAdapter, ModelConfig, Notifier, PacketSource, RingGeometry, TxPacket,
    UpperLayer,
};
use crate::os::host::os::{HostOs, TimerThread};
use crate::os::host::verifier::Verifier;
use crate::os::host::wsk::{
    CompletionMode, ListLen, Network, ReceiveConfig, SendConfig, WskConfig, WskProvider, WskVerifier,
};
use crate::os::{Os, SEND_SLOT_SIZE};
use crate::proto::aead_frame::STANDARD_HEAD_ROOM;
use crate::uapi::Ioctl;
pub use ioctl::Proto;
pub use keyfile::{Side, TunnelKeys};
pub use splice::Splice;
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

/// How long an IOCTL that parks (NEW_PEER: the socket, or for TCP the
/// connect) may take before the tunnel gives up.
const IOCTL_WAIT: Duration = Duration::from_secs(10);

/// How long [`HostTunnel::stop`] waits for the socket to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A ReadFile's buffer: the largest control packet OpenVPN reads
/// (`dco_win.c` reads into a 2048-byte buffer, TCP's frame limit too).
const CONTROL_READ_LEN: usize = 2048;

/// Control packets kept for [`HostTunnel::control_packets`]; older ones are
/// only counted.
const CONTROL_KEPT_MAX: usize = 64;

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

/// What plays the network stack above the adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upper {
    /// A TUN device (created if missing) in the caller's namespace.
    Tun(String),
    /// None: the NetAdapterCx model records what it delivers
    /// ([`HostTunnel::delivered`]); the caller sends with
    /// [`HostTunnel::send_packet`].
    Memory,
}

/// The transport, as the tunnel uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelProto {
    Udp,
    /// Connects to the remote (what ovpn-dco-win does).
    TcpClient,
    /// Accepts the remote's connection on `local` and splices it to the
    /// adapter's own connection ([`splice`]).
    TcpServer,
}

/// What a tunnel is made of.
#[derive(Clone, Debug)]
pub struct TunnelConfig {
    pub upper: Upper,
    pub proto: TunnelProto,
    /// The network the WSK model's sockets use: the host's, or an in-memory
    /// one shared with other tunnels (tests).
    pub network: Network,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub keys: TunnelKeys,
    /// The first packet id sent: 1 for a fresh key; above the last id the
    /// real client used when taking over its session (see
    /// [`HostTunnel::start`]).
    pub first_packet_id: u32,
    /// Ping after this many seconds without sending (0: never).
    pub keepalive_interval: u32,
    /// Report the peer silent after this many seconds (0: never).
    pub keepalive_timeout: u32,
    /// Clamp TCP SYNs' MSS to this (SET_PEER's MSS).
    pub mss: Option<u16>,
    /// TCP segmentation and coalescing at the TUN device ([`offload`]).
    pub tun_offload: bool,
    pub verification: Verification,
}

/// A request's completion, as the WDFREQUEST carries it back.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Completion {
    id: u64,
    status: NtStatus,
    output: Vec<u8>,
}

/// Completed requests nobody has collected yet. Every request the tunnel
/// makes is waited for by its maker, so this stays small.
#[derive(Default)]
struct Completions {
    done: Mutex<Vec<Completion>>,
    changed: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Completions {
    /// Takes request `id`'s completion, waiting up to `timeout` for it.
    fn take(&self, id: u64, timeout: Duration) -> Option<Completion> {
        let deadline = std::time::Instant::now() + timeout;
        let mut done = lock(&self.done);
        loop {
            if let Some(at) = done.iter().position(|c| c.id == id) {
                return Some(done.swap_remove(at));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            done = self.changed.wait_timeout(done, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// The tunnel's WDFREQUEST: completed by the adapter on any thread.
pub struct TunnelRequest {
    id: u64,
    out_len: usize,
    completions: Arc<Completions>,
}

impl Request for TunnelRequest {
    fn id(&self) -> RequestId {
        RequestId(self.id)
    }

    fn output_len(&self) -> usize {
        self.out_len
    }

    fn complete(self, status: NtStatus, output: &[u8]) {
        let output = output.get(..self.out_len).unwrap_or(output).to_vec();
        lock(&self.completions.done).push(Completion { id: self.id, status, output });
        self.completions.changed.notify_all();
    }
}

/// The adapter the tunnel drives.
pub type TunnelAdapter = Adapter<HostOs, TunnelRequest>;

/// The adapter's data path.
pub type TunnelDatapath = Datapath<HostOs, DevicePeers<HostOs, TunnelRequest>>;

/// OpenVPN's handle on the adapter: IOCTLs, reads and writes.
struct Handle {
    adapter: Arc<TunnelAdapter>,
    completions: Arc<Completions>,
    next_id: AtomicU64,
}

impl Handle {
    fn request(&self, out_len: usize) -> TunnelRequest {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        TunnelRequest { id, out_len, completions: self.completions.clone() }
    }

    /// DeviceIoControl: the status, waiting for an IOCTL the adapter parks.
    fn ioctl(&self, ioctl: Ioctl, input: &[u8]) -> Result<(), TunnelError> {
        let request = self.request(0);
        let id = request.id;
        let status = match self.adapter.ioctl(ioctl.code(), input, &mut [], request) {
            Outcome::Complete { status, .. } => status,
            Outcome::Parked => match self.completions.take(id, IOCTL_WAIT) {
                Some(c) => c.status,
                None => {
                    self.adapter.cancel(RequestId(id));
                    // Collect the cancellation (or a late completion).
                    let _ = self.completions.take(id, Duration::ZERO);
                    return Err(TunnelError::IoctlTimeout(ioctl));
                }
            },
        };
        if status.is_success() { Ok(()) } else { Err(TunnelError::Ioctl { ioctl, status }) }
    }
}

/// Counters of the TUN side and the control channel.
#[derive(Debug, Default)]
struct Counters {
    tun_read: AtomicU64,
    tun_read_dropped: AtomicU64,
    tun_super_reads: AtomicU64,
    tun_written: AtomicU64,
    tun_writes: AtomicU64,
    tun_write_dropped: AtomicU64,
    tun_write_errors: AtomicU64,
    timeouts: AtomicU64,
    transport_errors: AtomicU64,
    control_packets: AtomicU64,
}

/// A snapshot of the tunnel's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Packets read from the TUN device (handed to the TX queue).
    pub tun_read: u64,
    /// Read but not queued: the TX source stayed full.
    pub tun_read_dropped: u64,
    /// With offloads: reads that were TCP super-packets (cut into
    /// `tun_read` packets with the rest).
    pub tun_super_reads: u64,
    /// RX packets handed to the TUN device.
    pub tun_written: u64,
    /// Writes that took them (fewer with offloads: segments joined).
    pub tun_writes: u64,
    /// Writes the TUN device's queue had no room for.
    pub tun_write_dropped: u64,
    pub tun_write_errors: u64,
    /// Data packets sent beyond the packets the TX queue was given: the
    /// adapter timer's keepalive pings.
    pub keepalives_sent: u64,
    /// Authenticated data packets that were not delivered: the peer's
    /// keepalive pings (and any packet dropped after decryption).
    pub consumed_after_decrypt: u64,
    /// Reads completed with STATUS_CONNECTION_DISCONNECTED: the peer was
    /// silent for the keepalive timeout.
    pub timeouts: u64,
    /// Reads completed with another error (a TCP reset or close).
    pub transport_errors: u64,
    /// Control packets read from the adapter.
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
    /// With offloads: the run of TCP segments being joined (the RX poll
    /// thread's; a lock for `Sync`).
    coalescer: Mutex<offload::Coalescer>,
}

/// Coalesced writes to the TUN device, counted.
struct TunWriter<'a> {
    tun: &'a Tun,
    counters: &'a Counters,
}

impl offload::Writer for TunWriter<'_> {
    fn write(&mut self, parts: &[&[u8]]) {
        let counter = match self.tun.write_packet_parts(parts) {
            Ok(true) => &self.counters.tun_writes,
            Ok(false) => &self.counters.tun_write_dropped,
            Err(_) => &self.counters.tun_write_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// TX buffers kept for reuse; more are dropped.
const FREE_BUFFERS_MAX: usize = TX_SOURCE_LIMIT * 2;

impl TunStack {
    /// A buffer with room for a TUN packet (its bytes are not cleared:
    /// [`Tun::read_into`] fills what it reads).
    fn buffer(&self) -> Vec<u8> {
        let mut b = lock(&self.free).pop().unwrap_or_default();
        b.reserve(SEND_SLOT_SIZE);
        b
    }

    fn recycle(&self, mut buffer: Vec<u8>) {
        let mut free = lock(&self.free);
        if free.len() < FREE_BUFFERS_MAX {
            buffer.clear();
            free.push(buffer);
        }
    }
}

impl UpperLayer for TunStack {
    fn deliver(&self, fragments: &[&[u8]]) {
        self.counters.tun_written.fetch_add(1, Ordering::Relaxed);
        let mut out = TunWriter { tun: &self.tun, counters: &self.counters };
        if self.tun.offload() {
            lock(&self.coalescer).push(fragments, &mut out);
        } else {
            // Straight from the driver's buffers into the TUN device: the
            // one copy is the kernel's.
            offload::Writer::write(&mut out, fragments);
        }
    }

    fn flush(&self) {
        if self.tun.offload() {
            lock(&self.coalescer).flush(&mut TunWriter { tun: &self.tun, counters: &self.counters });
        }
    }

    fn completed(&self, packet: CompletedTx) {
        self.recycle(packet.payload);
    }
}

/// Why a tunnel did not start or did not stop cleanly.
#[derive(Debug)]
pub enum TunnelError {
    Tun(TunError),
    /// The TCP listener of [`TunnelProto::TcpServer`] could not be made.
    Listen(std::io::Error),
    /// The adapter refused an IOCTL.
    Ioctl {
        ioctl: Ioctl,
        status: NtStatus,
    },
    /// A parked IOCTL did not complete within [`IOCTL_WAIT`] (a TCP
    /// connect that never finished); it was cancelled.
    IoctlTimeout(Ioctl),
    /// NEW_KEY installed no peer to continue the packet ids of.
    NoPeer,
    /// The take-over's packet ids could not be skipped.
    PacketIds,
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
            TunnelError::Listen(e) => write!(f, "listen: {e}"),
            TunnelError::Violations(v) => write!(f, "{} violations:\n{}", v.len(), v.join("\n")),
            other => write!(f, "{other:?}"),
        }
    }
}

/// A running tunnel.
pub struct HostTunnel {
    handle: Arc<Handle>,
    os: Arc<HostOs>,
    nx: HostNetAdapter<TunnelAdapter>,
    counters: Arc<Counters>,
    control: Arc<Mutex<VecDeque<Vec<u8>>>>,
    wsk_verifier: Arc<WskVerifier>,
    splice: Option<Splice>,
    timer: Option<TimerThread>,
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
        rx: geometry(1024, 1024),
        tx: geometry(256, 512),
        maximum_frame_size: TUN_MTU as u32,
        rx_mdl_pool: 1024,
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
    /// namespace (the tunnel's threads inherit it), and brings the adapter
    /// up as OpenVPN 2.6 does: NEW_PEER, NEW_KEY, SET_PEER, START_VPN.
    ///
    /// Taking over a session ([`TunnelConfig::first_packet_id`] above 1)
    /// has no IOCTL: OpenVPN never hands a driver a key whose packet ids
    /// were already used. The tunnel uses them up between NEW_KEY and
    /// START_VPN through the adapter's own peer (its TX key slot's
    /// encryption, results discarded): a host-only test hook that leaves the
    /// adapter's one data path in charge of everything sent afterwards.
    pub fn start(config: &TunnelConfig) -> Result<HostTunnel, TunnelError> {
        let tun = match &config.upper {
            Upper::Tun(name) => Some(Arc::new(Tun::open(name, config.tun_offload).map_err(TunnelError::Tun)?)),
            Upper::Memory => None,
        };
        let nx_verifier = Verifier::new();
        let wsk_verifier = WskVerifier::new();
        // WSK memory that goes back to WSK is poisoned for the NetAdapterCx
        // model: a fragment still pointing into it is a violation.
        let v = nx_verifier.clone();
        wsk_verifier.on_release(move |r| v.mark_released(r));
        let v = nx_verifier.clone();
        wsk_verifier.on_indicate(move |r| v.mark_live(r));
        let notifier = Notifier::new(nx_verifier);
        let wsk = WskProvider::new(config.network.clone(), wsk_config(config.verification), wsk_verifier.clone());
        let os = Arc::new(HostOs::new(wsk, notifier.clone()));
        let adapter = Arc::new(Adapter::new(os.clone()));
        let weak = Arc::downgrade(&adapter);
        let timer = TimerThread::spawn(&os, move || {
            let Some(a) = weak.upgrade() else { return false };
            a.timer();
            true
        });

        let counters = Arc::new(Counters::default());
        let model = model_config(config.verification);
        let stack = tun.map(|tun| {
            Arc::new(TunStack {
                tun,
                counters: counters.clone(),
                free: Mutex::new(Vec::new()),
                coalescer: Mutex::new(offload::Coalescer::new()),
            })
        });
        let mut nx = match &stack {
            Some(s) => HostNetAdapter::with_upper_layer(adapter.clone(), notifier, model, s.clone()),
            None => HostNetAdapter::new(adapter.clone(), notifier, model),
        };
        nx.start().map_err(TunnelError::Queues)?;
        // Queues first, then the socket: nothing received is dropped for
        // want of a started RX queue.
        for _ in 0..1000 {
            if adapter.datapath().rx_started() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }

        let handle = Arc::new(Handle { adapter, completions: Arc::default(), next_id: AtomicU64::new(1) });
        let (splice, remote) = match config.proto {
            TunnelProto::TcpServer => {
                let splice = Splice::listen(config.local).map_err(TunnelError::Listen)?;
                let inner = splice.adapter_side();
                (Some(splice), inner)
            }
            TunnelProto::Udp | TunnelProto::TcpClient => (None, config.remote),
        };
        let proto = if config.proto == TunnelProto::Udp { Proto::Udp } else { Proto::Tcp };
        let stop = Arc::new(AtomicBool::new(false));
        let mut tunnel = HostTunnel {
            handle: handle.clone(),
            os,
            nx,
            counters: counters.clone(),
            control: Arc::default(),
            wsk_verifier,
            splice,
            timer: Some(timer),
            stop: stop.clone(),
            threads: Vec::new(),
            stopped: false,
        };
        handle.ioctl(Ioctl::NewPeer, &ioctl::new_peer(config.local, remote, proto))?;
        handle.ioctl(Ioctl::NewKey, &ioctl::new_key(&config.keys))?;
        tunnel.continue_packet_ids(config.first_packet_id)?;
        handle
            .ioctl(Ioctl::SetPeer, &ioctl::set_peer(config.keepalive_interval, config.keepalive_timeout, config.mss))?;
        handle.ioctl(Ioctl::StartVpn, &[])?;

        let (h, c, k, st) = (handle.clone(), counters, tunnel.control.clone(), stop.clone());
        tunnel.threads.push(
            std::thread::Builder::new()
                .name("control-read".into())
                .spawn(move || read_control(&h, &c, &k, &st))
                .expect("spawn the control reader"),
        );
        if let Some(stack) = stack {
            let (source, st) = (tunnel.nx.source(), stop);
            tunnel.threads.push(
                std::thread::Builder::new()
                    .name("tun-read".into())
                    .spawn(move || read_tun(&stack, &source, &st))
                    .expect("spawn the TUN reader"),
            );
        }
        Ok(tunnel)
    }

    /// The host-only take-over hook (see [`HostTunnel::start`]): the
    /// adapter's peer skips packet ids below `first`.
    fn continue_packet_ids(&self, first: u32) -> Result<(), TunnelError> {
        if first <= 1 {
            return Ok(());
        }
        let peer = self.peer().ok_or(TunnelError::NoPeer)?;
        let mut tx = peer.tx.lock();
        let mut scratch = [0u8; STANDARD_HEAD_ROOM];
        for _ in 1..first {
            tx.encrypt_from(self.os.crypto(), peer.id(), &[], &mut scratch).map_err(|_| TunnelError::PacketIds)?;
        }
        Ok(())
    }

    /// The adapter (its data path, counters and device state).
    pub fn adapter(&self) -> &TunnelAdapter {
        &self.handle.adapter
    }

    /// The adapter's data path, for its counters.
    pub fn datapath(&self) -> &TunnelDatapath {
        self.handle.adapter.datapath()
    }

    /// The P2P peer NEW_PEER made, for its key slots and activity clocks.
    pub fn peer(&self) -> Option<Arc<Peer<HostKey>>> {
        // P2P: the one peer, whatever id is asked for.
        self.datapath().peers().rx_peer(crate::proto::PeerId::new(0)?)
    }

    /// [`TunnelProto::TcpServer`]: where the peer connects, and the bytes
    /// the splice moved so far.
    pub fn listening(&self) -> Option<(SocketAddr, u64)> {
        self.splice.as_ref().map(|s| (s.public_side(), s.bytes()))
    }

    /// The NetAdapterCx model's accounting.
    pub fn adapter_stats(&self) -> crate::os::host::netadapter::Stats {
        self.nx.stats()
    }

    /// [`Upper::Memory`]: what the adapter delivered so far.
    pub fn delivered(&self) -> Vec<DeliveredPacket> {
        self.nx.delivered()
    }

    /// [`Upper::Memory`]: waits until `count` packets were delivered.
    pub fn wait_delivered(&self, count: usize, timeout: Duration) -> bool {
        self.nx.wait_delivered(count, timeout)
    }

    /// Sends `packet` through the TX queue, as the stack above would.
    pub fn send_packet(&self, packet: Vec<u8>) -> u64 {
        self.nx.send(TxPacket::new(packet))
    }

    /// The last control packets read from the adapter (at most
    /// [`CONTROL_KEPT_MAX`]).
    pub fn control_packets(&self) -> Vec<Vec<u8>> {
        lock(&self.control).iter().cloned().collect()
    }

    pub fn stats(&self) -> TunnelStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let device = self.handle.adapter.stats();
        let received = u64::from(device.received_data_packets.load(Ordering::Relaxed));
        let sent = u64::from(device.sent_data_packets.load(Ordering::Relaxed));
        let nx = self.nx.stats();
        TunnelStats {
            tun_read: get(&c.tun_read),
            tun_read_dropped: get(&c.tun_read_dropped),
            tun_super_reads: get(&c.tun_super_reads),
            tun_written: get(&c.tun_written),
            tun_writes: get(&c.tun_writes),
            tun_write_dropped: get(&c.tun_write_dropped),
            tun_write_errors: get(&c.tun_write_errors),
            keepalives_sent: sent.saturating_sub(nx.tx_packets_posted),
            consumed_after_decrypt: received.saturating_sub(nx.rx_packets_indicated),
            timeouts: get(&c.timeouts),
            transport_errors: get(&c.transport_errors),
            control_packets: get(&c.control_packets),
            datapath_drops: self.datapath().drops().total(),
        }
    }

    /// Every drop reason with a non-zero count, as `Reason=count` words.
    pub fn drop_summary(&self) -> String {
        let words: Vec<String> = self.datapath().drops().nonzero().map(|(r, n)| std::format!("{r:?}={n}")).collect();
        words.join(" ")
    }

    /// Encrypts `plaintext` as the next data packet of the adapter peer's
    /// primary key, without sending it (tests: a packet to replay or tamper
    /// with).
    pub fn seal(&self, plaintext: &[u8]) -> Option<Vec<u8>> {
        let peer = self.peer()?;
        let mut buf = std::vec![0u8; STANDARD_HEAD_ROOM + plaintext.len()];
        let n = peer.tx.lock().encrypt_from(self.os.crypto(), peer.id(), plaintext, &mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// WriteFile: `bytes` go out as they are (OpenVPN's control packets).
    pub fn send_raw(&self, bytes: &[u8]) -> Result<usize, NtStatus> {
        self.handle.adapter.write(bytes)
    }

    /// Stops the threads, closes the handle (the adapter closes the socket
    /// once the OS gave its buffers back), stops the queues, and reports
    /// anything either model found.
    pub fn stop(mut self) -> Result<TunnelStats, TunnelError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<TunnelStats, TunnelError> {
        self.stopped = true;
        self.stop.store(true, Ordering::Relaxed);
        let stats = self.stats();
        let mut problems: Vec<String> = Vec::new();
        // EvtFileCleanup: parked reads complete, the socket closes while
        // the queues still run and give its buffers back.
        let adapter = &self.handle.adapter;
        let deadline = std::time::Instant::now() + CLOSE_TIMEOUT;
        let mut progress = adapter.cleanup();
        while progress != CloseProgress::Closed {
            if std::time::Instant::now() >= deadline {
                problems.push(std::format!("the socket did not close: {:?}", adapter.datapath().occupancy()));
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            progress = adapter.poll_close();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.splice.take();
        self.nx.finish();
        self.timer.take();
        let verifier = self.nx.verifier();
        problems.extend(verifier.violations().iter().map(|v| std::format!("NetAdapterCx: {v:?}")));
        problems.extend(verifier.leaks().iter().map(|l| std::format!("NetAdapterCx leak: {l:?}")));
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

/// OpenVPN's pending ReadFile, until `stop`: control packets are counted
/// and the last few kept; a completion with an error is what OpenVPN acts
/// on (keepalive expiry, TCP reset), here only counted.
fn read_control(handle: &Handle, counters: &Counters, kept: &Mutex<VecDeque<Vec<u8>>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let request = handle.request(CONTROL_READ_LEN);
        let id = request.id;
        // Completed at once or parked: either way the completion arrives
        // through the request.
        let _: ReadOutcome = handle.adapter.read(request);
        let completion = loop {
            if let Some(c) = handle.completions.take(id, STOP_POLL) {
                break Some(c);
            }
            if stop.load(Ordering::Relaxed) {
                handle.adapter.cancel(RequestId(id));
                break None;
            }
        };
        let Some(c) = completion else { return };
        match c.status {
            NtStatus::SUCCESS => {
                counters.control_packets.fetch_add(1, Ordering::Relaxed);
                let mut kept = lock(kept);
                if kept.len() >= CONTROL_KEPT_MAX {
                    kept.pop_front();
                }
                kept.push_back(c.output);
            }
            status => {
                let counter = if status == NtStatus::CONNECTION_DISCONNECTED {
                    &counters.timeouts
                } else {
                    &counters.transport_errors
                };
                counter.fetch_add(1, Ordering::Relaxed);
                // Do not spin on a handle that keeps failing reads.
                std::thread::sleep(STOP_POLL);
            }
        }
    }
}

/// TUN → TX queue, until `stop`.
fn read_tun(stack: &TunStack, source: &PacketSource, stop: &AtomicBool) {
    let counters = &stack.counters;
    // With offloads: one read (a super-packet, header included) and the
    // segment being built.
    let (mut read, mut scratch) = (Vec::with_capacity(offload::OFFLOAD_PACKET_MAX), Vec::new());
    let queue = |packet: Vec<u8>| {
        counters.tun_read.fetch_add(1, Ordering::Relaxed);
        if let Err(packet) = source.send_bounded(TxPacket::new(packet), TX_SOURCE_LIMIT, STOP_POLL) {
            counters.tun_read_dropped.fetch_add(1, Ordering::Relaxed);
            stack.recycle(packet.payload);
        }
    };
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
            if stack.tun.offload() {
                match stack.tun.read_into(&mut read) {
                    Ok(Some(n)) if n > offload::VNET_HDR_LEN => {}
                    _ => break,
                }
                let mut segments = 0u64;
                let cut = offload::segment(&mut read, &mut scratch, &mut |p| {
                    segments += 1;
                    let mut buffer = stack.buffer();
                    buffer.extend_from_slice(p);
                    queue(buffer);
                });
                if cut.is_err() {
                    counters.tun_read_dropped.fetch_add(1, Ordering::Relaxed);
                } else if segments > 1 {
                    counters.tun_super_reads.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            let mut buffer = stack.buffer();
            match stack.tun.read_into(&mut buffer) {
                Ok(Some(n)) if n > 0 => {}
                _ => {
                    stack.recycle(buffer);
                    break;
                }
            }
            queue(buffer);
        }
    }
}
