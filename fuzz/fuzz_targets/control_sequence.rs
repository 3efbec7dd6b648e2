//! Sequences of everything OpenVPN and the network do to one adapter, run
//! through the real `Adapter` (control plane + data path) over the host
//! model's in-memory WSK loopback in pump mode: no threads, no real sockets,
//! every event on this thread in input order.
//!
//! Input layout (the seeds in corpus/control_sequence follow it;
//! `make_seeds.py` writes them): a list of operations, each an opcode byte
//! (taken modulo [`OPS`]) followed by its fields; a field past the end of the
//! input reads as zero, and the sequence ends with the input. Addresses are
//! indices into [`ADDRS`]; output sizes are indices into [`OUT_LENS`] (or,
//! from 0x80 on, the byte itself as a length); a `shape` byte damages a
//! well-formed buffer: 0..=5 leave it, 6 truncates it by 1 + (shape >> 3) % 8
//! bytes, 7 flips bits of byte (shape >> 3) % len.
//!
//! | op | fields | what |
//! |---|---|---|
//! | 0 raw IOCTL | code u8 (< 19: `Ioctl::ALL`; 19..=23: codes that are not ovpn-dco-win's; else u32 LE follows), out u8, len u8, input bytes | any code, any buffer |
//! | 1 NEW_PEER | local, remote, proto u8 (bit 0 TCP, bit 1 listen at remote first, bit 2 raw Proto = proto >> 3), out, shape | |
//! | 2 NEW_KEY(_V2) | flags u8 (bit 0 V2, bit 1 epoch, bit 2 raw CryptoOptions = next byte), slot u8, cipher u8, key_len u8, key_id u8, peer u8, material u8, shape | |
//! | 3 SET_PEER / MP_SET_PEER | mp u8 (bit 0), peer u8, interval i8, timeout i8, mss u8, shape | |
//! | 4 MP_NEW_PEER | remote, vpn4 u8, vpn6 u8, peer u8, shape | |
//! | 5 small IOCTL | which u8, peer u8, out | SET_MODE, START_VPN, DEL_PEER, SWAP_KEYS, MP_SWAP_KEYS, MP_DEL_PEER, GET_STATS, GET_VERSION, NOTIFY_EVENT, GET_PEER_STATS |
//! | 6 MP_START_VPN | listen, ipv6_only u8, out, shape | |
//! | 7 MP_ADD/DEL_IROUTE | flags u8 (bit 0 del, bit 1 IPv6), prefix u8, netbits u8, peer u8, shape | |
//! | 8 ReadFile | out | |
//! | 9 WriteFile | flags u8 (bit 0 MP sockaddr prefix), to, len u8, bytes | |
//! | 10 cancel | back u8 | CancelIoEx of the back-th newest request |
//! | 11 timer | ms u16 LE (×16) | virtual time forward, network pumped, the timer run if due |
//! | 12 datagram | from u8 (remote socket), to, len u8, bytes | any bytes from the network |
//! | 13 data packet | from u8, to, len u8, payload | sealed with the last key installed, as its peer would |
//! | 14 TCP peer | what u8 (0 close, 1 reset, else framed), len u8, bytes | the peer end of a TCP NEW_PEER's connection |
//! | 15 cleanup | — | handle close, waiting for the socket; the next handle starts |
//! | 16 pump | — | the network delivers everything outstanding |
//!
//! Checks after every step, beyond "no panic": an IOCTL completes (at once
//! or later) with a status ovpn-dco-win documents for that code
//! (docs/openvpn-ioctl-sequences.md §5.2) and Information of the structure's
//! size; a failing IOCTL leaves the device snapshot, the link state and the
//! other requests unchanged; every request completes at most once, and a
//! cancel succeeds exactly for a request still pending; a parked read or
//! NOTIFY_EVENT never waits beside a queued packet or event; after cleanup
//! every request has completed, the device is empty, the socket closed and
//! every data-path table empty; neither the WSK nor the NetAdapterCx
//! verifier ever reports a violation.

#![no_main]

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::net::SocketAddr;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ovpn_dco::adapter::Adapter;
use ovpn_dco::control::ctl_queue::put_prefix;
use ovpn_dco::control::device::{Outcome, ReadOutcome};
use ovpn_dco::control::request::{Request, RequestId};
use ovpn_dco::crypto::Cipher;
use ovpn_dco::crypto::host::{HostCrypto, HostKey};
use ovpn_dco::crypto::slots::{DirectionKey, KeySlots, NewKey, SlotIndex};
use ovpn_dco::datapath::CloseProgress;
use ovpn_dco::netcx::wsk::WskDatagramIndication;
use ovpn_dco::ntstatus::NtStatus;
use ovpn_dco::os::host::netadapter::Notifier;
use ovpn_dco::os::host::os::HostOs;
use ovpn_dco::os::host::verifier::Verifier;
use ovpn_dco::os::host::wsk::{
    DatagramSocket, Delivery, ListLen, LoopbackConfig, LoopbackHub, Network, ReceiveConfig, SendConfig, StreamPeer,
    WskConfig, WskProvider, WskVerifier,
};
use ovpn_dco::os::{SendSlot, SocketEvents, Transport};
use ovpn_dco::proto::aead_frame::Layout;
use ovpn_dco::proto::{KeyId, PeerId};
use ovpn_dco::uapi::codes::Ioctl;
use ovpn_dco::uapi::types::{
    OvpnCryptoData, OvpnKeyDirection, OvpnMpIroute, OvpnMpNewPeer, OvpnMpSetPeer, OvpnMpStartVpn, OvpnNewPeer,
    OvpnPeerStats, OvpnSetPeer, OvpnStats, OvpnVersion,
};

const OPS: u8 = 17;
/// Operations run per input at most (longer inputs are cut there).
const MAX_OPS: usize = 256;

/// Transport addresses: the adapter binds and sends to them, the network's
/// sockets sit at [`REMOTES`] of them.
const ADDRS: [&str; 14] = [
    "10.0.0.1:1194",
    "10.0.0.2:1194",
    "[2001:db8::1]:1194",
    "[2001:db8::2]:1194",
    "0.0.0.0:0",
    "[::]:0",
    "0.0.0.0:1194",
    "[::]:1194",
    "198.51.100.7:5000",
    "[::ffff:198.51.100.7]:5000",
    "203.0.113.9:50000",
    "0.0.0.0:49152",
    "[2001:db8::3]:443",
    "[::ffff:10.0.0.2]:1194",
];
/// Indices into [`ADDRS`] where the network has a datagram socket.
const REMOTES: [usize; 5] = [1, 3, 8, 10, 12];

const OUT_LENS: [usize; 12] = [0, 3, 4, 12, 32, 39, 40, 64, 80, 143, 144, 2048];

fn addr(i: u8) -> SocketAddr {
    ADDRS[usize::from(i) % ADDRS.len()].parse().expect("a valid address")
}

// ---------------------------------------------------------------------------
// Input

struct Input<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at = self.at.saturating_add(1);
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
    fn out_len(&mut self) -> usize {
        let b = self.u8();
        if b >= 0x80 { usize::from(b) } else { OUT_LENS[usize::from(b) % OUT_LENS.len()] }
    }
    /// A small peer id (so that sequences meet their peers), or from 0xF0
    /// on a raw 32-bit one.
    fn peer(&mut self) -> i32 {
        match self.u8() {
            b @ 0..=0xEF => i32::from(b % 8),
            0xF0 => -1,
            _ => self.u32() as i32,
        }
    }
}

/// Applies a `shape` byte to a well-formed buffer.
fn damage(mut buf: Vec<u8>, shape: u8) -> Vec<u8> {
    match shape & 7 {
        6 => {
            let cut = 1 + usize::from(shape >> 3) % 8;
            buf.truncate(buf.len().saturating_sub(cut));
        }
        7 if !buf.is_empty() => {
            let at = usize::from(shape >> 3) % buf.len();
            buf[at] ^= shape | 1;
        }
        _ => {}
    }
    buf
}

// ---------------------------------------------------------------------------
// IOCTL buffers, laid out by the offsets of uapi::types

fn put_i32(buf: &mut [u8], at: usize, v: i32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// A SOCKADDR_IN/IN6 at `at` (the 28-byte union).
fn put_addr(buf: &mut [u8], at: usize, a: &SocketAddr) {
    put_prefix(&mut buf[at..at + 28], a).expect("28 bytes hold either family");
}

fn new_peer(local: SocketAddr, remote: SocketAddr, proto: i32) -> Vec<u8> {
    let mut b = vec![0u8; size_of::<OvpnNewPeer>()];
    put_addr(&mut b, offset_of!(OvpnNewPeer, local), &local);
    put_addr(&mut b, offset_of!(OvpnNewPeer, remote), &remote);
    put_i32(&mut b, offset_of!(OvpnNewPeer, proto), proto);
    b
}

fn mp_new_peer(remote: SocketAddr, vpn4: u8, vpn6: u8, peer: i32) -> Vec<u8> {
    let mut b = vec![0u8; size_of::<OvpnMpNewPeer>()];
    // dco_win.c fills only the family of Local.
    let local: SocketAddr = if remote.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("valid");
    put_addr(&mut b, offset_of!(OvpnMpNewPeer, local), &local);
    put_addr(&mut b, offset_of!(OvpnMpNewPeer, remote), &remote);
    if vpn4 != 0 {
        let at = offset_of!(OvpnMpNewPeer, vpn_addr4);
        b[at..at + 4].copy_from_slice(&[10, 8, 0, vpn4]);
    }
    if vpn6 != 0 {
        let at = offset_of!(OvpnMpNewPeer, vpn_addr6);
        b[at..at + 2].copy_from_slice(&[0xfd, 0x00]);
        b[at + 15] = vpn6;
    }
    put_i32(&mut b, offset_of!(OvpnMpNewPeer, peer_id), peer);
    b
}

/// Key material both ends derive from `seed`: (encrypt key, tail, decrypt key, tail).
fn material(seed: u8) -> ([u8; 32], [u8; 8], [u8; 32], [u8; 8]) {
    let b = |base: u8, i: usize| base.wrapping_add(seed).wrapping_add(i as u8);
    (
        core::array::from_fn(|i| b(0x10, i)),
        core::array::from_fn(|i| b(0x30, i)),
        core::array::from_fn(|i| b(0x50, i)),
        core::array::from_fn(|i| b(0x70, i)),
    )
}

struct KeyParams {
    slot: i32,
    cipher: i32,
    key_len: u8,
    key_id: u8,
    peer: i32,
    seed: u8,
    options: Option<u32>,
}

fn crypto_data(k: &KeyParams) -> Vec<u8> {
    let size = size_of::<OvpnCryptoData>() + if k.options.is_some() { 4 } else { 0 };
    let mut b = vec![0u8; size];
    let (enc, enc_tail, dec, dec_tail) = material(k.seed);
    for (at, key, tail) in
        [(offset_of!(OvpnCryptoData, encrypt), enc, enc_tail), (offset_of!(OvpnCryptoData, decrypt), dec, dec_tail)]
    {
        let kl = at + offset_of!(OvpnKeyDirection, key_len);
        let nt = at + offset_of!(OvpnKeyDirection, nonce_tail);
        b[at..at + 32].copy_from_slice(&key);
        b[kl] = k.key_len;
        b[nt..nt + 8].copy_from_slice(&tail);
    }
    put_i32(&mut b, offset_of!(OvpnCryptoData, key_slot), k.slot);
    put_i32(&mut b, offset_of!(OvpnCryptoData, cipher_alg), k.cipher);
    b[offset_of!(OvpnCryptoData, key_id)] = k.key_id;
    put_i32(&mut b, offset_of!(OvpnCryptoData, peer_id), k.peer);
    if let Some(o) = k.options {
        b[size_of::<OvpnCryptoData>()..].copy_from_slice(&o.to_le_bytes());
    }
    b
}

/// The other end's slots for a key the adapter accepted: it encrypts with
/// what the adapter decrypts with.
fn mirror(k: &KeyParams) -> Option<KeySlots<HostKey>> {
    let cipher = if k.cipher == 1 { Cipher::AesGcm } else { Cipher::ChaCha20Poly1305 };
    let layout = if k.options.is_some_and(|o| o & 2 != 0) { Layout::Epoch } else { Layout::Standard };
    let (enc, enc_tail, dec, dec_tail) = material(k.seed);
    let new = NewKey {
        key_id: KeyId::new(k.key_id)?,
        cipher,
        layout,
        encrypt: DirectionKey { key: &dec, key_len: usize::from(k.key_len), nonce_tail: dec_tail },
        decrypt: DirectionKey { key: &enc, key_len: usize::from(k.key_len), nonce_tail: enc_tail },
    };
    let mut slots = KeySlots::new();
    slots.install(&HostCrypto, SlotIndex::Primary, &new).ok()?;
    Some(slots)
}

// ---------------------------------------------------------------------------
// Requests

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ioctl(u32),
    Read,
}

#[derive(Default)]
struct Log {
    done: Vec<(u64, NtStatus, usize)>,
}

/// A WDFREQUEST stand-in.
struct Req {
    id: u64,
    out_len: usize,
    log: Arc<Mutex<Log>>,
}

impl Request for Req {
    fn id(&self) -> RequestId {
        RequestId(self.id)
    }
    fn output_len(&self) -> usize {
        self.out_len
    }
    fn complete(self, status: NtStatus, output: &[u8]) {
        assert!(output.len() <= self.out_len, "request {} completed past its {}-byte buffer", self.id, self.out_len);
        self.log.lock().unwrap().done.push((self.id, status, output.len()));
    }
}

/// The statuses ovpn-dco-win gives `code` (docs/openvpn-ioctl-sequences.md
/// §5.2, and the choices `control::device` and `uapi::decode` document), and
/// the Information of a success.
fn allowed(code: u32, status: NtStatus, info: usize) -> bool {
    use NtStatus as S;
    let Some(ioctl) = Ioctl::from_code(code) else {
        return status == S::INVALID_DEVICE_REQUEST && info == 0;
    };
    // A socket that could not be created or connected: the model's WSK status.
    let socket = [
        S::CONNECTION_ABORTED,
        S::CONNECTION_RESET,
        S::CONNECTION_DISCONNECTED,
        S(0xC000_0236_u32 as i32), // STATUS_CONNECTION_REFUSED
        S(0xC000_020A_u32 as i32), // STATUS_ADDRESS_ALREADY_EXISTS
        S::INSUFFICIENT_RESOURCES,
    ];
    let ok_info = match ioctl {
        Ioctl::GetStats => size_of::<OvpnStats>(),
        Ioctl::GetVersion => size_of::<OvpnVersion>(),
        Ioctl::MpStartVpn => size_of::<OvpnMpStartVpn>(),
        Ioctl::NotifyEvent => 144,
        Ioctl::GetPeerStats => {
            if status == S::SUCCESS {
                return info.is_multiple_of(size_of::<OvpnPeerStats>());
            }
            0
        }
        _ => 0,
    };
    if status == S::SUCCESS {
        return info == ok_info;
    }
    if status == S::BUFFER_OVERFLOW {
        return ioctl == Ioctl::GetPeerStats && info == 4;
    }
    if info != 0 {
        return false;
    }
    // The mode gate (OvpnDeviceCheckMode) applies to every code it names.
    if status == S::INVALID_DEVICE_STATE {
        return true;
    }
    let list: &[NtStatus] = match ioctl {
        Ioctl::NewPeer => &[S::BUFFER_TOO_SMALL, S::INVALID_DEVICE_REQUEST, S::INVALID_PARAMETER, S::CANCELLED],
        Ioctl::DelPeer => &[S::INSUFFICIENT_RESOURCES],
        Ioctl::StartVpn => &[S::INVALID_DEVICE_REQUEST, S::INSUFFICIENT_RESOURCES],
        Ioctl::SetPeer | Ioctl::MpSetPeer => &[S::INVALID_DEVICE_REQUEST, S::BUFFER_TOO_SMALL, S::INVALID_PARAMETER],
        Ioctl::SwapKeys => &[S::INVALID_DEVICE_REQUEST],
        Ioctl::MpSwapKeys => &[S::INVALID_DEVICE_REQUEST, S::BUFFER_TOO_SMALL],
        Ioctl::NewKey | Ioctl::NewKeyV2 => &[
            S::BUFFER_TOO_SMALL,
            S::OBJECTID_NOT_FOUND,
            S::INVALID_DEVICE_REQUEST,
            S::INVALID_PARAMETER,
            S::UNSUCCESSFUL,
            S::INSUFFICIENT_RESOURCES,
        ],
        Ioctl::GetStats | Ioctl::GetVersion => &[S::BUFFER_TOO_SMALL],
        Ioctl::SetMode => {
            &[S::BUFFER_TOO_SMALL, S::ALREADY_INITIALIZED, S::INVALID_PARAMETER, S::INSUFFICIENT_RESOURCES]
        }
        Ioctl::MpStartVpn => &[
            S::ALREADY_INITIALIZED,
            S::BUFFER_TOO_SMALL,
            S::INVALID_DEVICE_REQUEST,
            S::INVALID_PARAMETER,
            S::CANCELLED,
        ],
        Ioctl::MpNewPeer => {
            &[S::BUFFER_TOO_SMALL, S::OBJECTID_EXISTS, S::INVALID_DEVICE_REQUEST, S::NO_MEMORY, S::INVALID_PARAMETER]
        }
        Ioctl::MpDelPeer => &[S::BUFFER_TOO_SMALL, S::NOT_FOUND],
        Ioctl::MpAddIroute | Ioctl::MpDelIroute => {
            &[S::BUFFER_TOO_SMALL, S::INVALID_PARAMETER, S::INSUFFICIENT_RESOURCES]
        }
        Ioctl::GetPeerStats => &[S::BUFFER_TOO_SMALL, S::OBJECTID_NOT_FOUND],
        Ioctl::NotifyEvent => &[S::BUFFER_TOO_SMALL, S::INSUFFICIENT_RESOURCES, S::CANCELLED],
    };
    list.contains(&status) || (matches!(ioctl, Ioctl::NewPeer | Ioctl::MpStartVpn) && socket.contains(&status))
}

fn read_allowed(status: NtStatus) -> bool {
    [
        NtStatus::SUCCESS,
        NtStatus::BUFFER_TOO_SMALL,
        NtStatus::INSUFFICIENT_RESOURCES,
        NtStatus::CANCELLED,
        NtStatus::CONNECTION_DISCONNECTED,
        NtStatus::CONNECTION_ABORTED,
    ]
    .contains(&status)
}

// ---------------------------------------------------------------------------
// The network's end

/// A datagram socket of the network: takes whatever arrives, sends what the
/// input says.
#[derive(Default)]
struct RemoteEvents {
    free: Mutex<Vec<u16>>,
}

impl SocketEvents for RemoteEvents {
    unsafe fn receive_from(&self, _list: NonNull<WskDatagramIndication>) -> NtStatus {
        // Nothing retained: WSK keeps the list.
        NtStatus::SUCCESS
    }
    fn stream_received(&self, _bytes: &[u8]) {}
    fn send_complete(&self, slot: SendSlot, _status: NtStatus, _bytes_sent: usize) {
        self.free.lock().unwrap().push(slot.0);
    }
    /// The remote only sends one slot at a time (`send`), so a batch
    /// completion never names more than that slot.
    fn send_batch_complete(&self, first: SendSlot, _status: NtStatus, _bytes_sent: usize) {
        self.free.lock().unwrap().push(first.0);
    }
    fn connected(&self, _status: NtStatus) {}
    fn disconnected(&self, _status: NtStatus) {}
}

struct Remote {
    socket: DatagramSocket,
    events: Arc<RemoteEvents>,
}

impl Remote {
    fn send(&self, bytes: &[u8], to: SocketAddr) {
        let Some(slot) = self.events.free.lock().unwrap().pop() else { return };
        let len = bytes.len().min(ovpn_dco::os::SEND_SLOT_SIZE);
        // SAFETY: the slot came off this socket's free list (never sent, or
        // its completion arrived), so its buffer is ours to write.
        let buf = unsafe { self.socket.slot_buffer(SendSlot(slot)) };
        // SAFETY: the buffer is SEND_SLOT_SIZE bytes, ours while the slot is
        // idle, and nothing else references it now.
        unsafe { (&mut *buf.as_ptr())[..len].copy_from_slice(&bytes[..len]) };
        if self.socket.send(SendSlot(slot), len, to).is_err() {
            self.events.free.lock().unwrap().push(slot);
        }
    }
}

// ---------------------------------------------------------------------------
// The run

/// Sockets with a few buffers and send slots: a sequence sends a few
/// hundred datagrams at most, and a fresh network per input must be cheap.
fn small_sockets() -> WskConfig {
    WskConfig {
        receive: ReceiveConfig { buffers: 16, lists: 8, list_len: ListLen::UpTo(4), ..ReceiveConfig::default() },
        send: SendConfig { slots: 8, ..SendConfig::default() },
        ..WskConfig::default()
    }
}

struct Run {
    hub: LoopbackHub,
    wv: Arc<WskVerifier>,
    nxv: Arc<Verifier>,
    os: Arc<HostOs>,
    adapter: Adapter<HostOs, Req>,
    remotes: Vec<Remote>,
    tcp_peer: Option<StreamPeer>,
    log: Arc<Mutex<Log>>,
    /// Every request: its kind, how often it completed, the last status.
    requests: BTreeMap<u64, (Kind, usize, Option<NtStatus>)>,
    next_id: u64,
    /// The last key the adapter accepted, as its peer holds it.
    key: Option<(u32, KeySlots<HostKey>)>,
}

impl Run {
    fn new() -> Self {
        let hub = LoopbackHub::new(LoopbackConfig { delivery: Delivery::Pump, ..LoopbackConfig::default() });
        let wv = WskVerifier::new();
        let nxv = Verifier::new();
        let wsk = WskProvider::new(Network::Loopback(hub.clone()), small_sockets(), wv.clone());
        let os = Arc::new(HostOs::new(wsk, Notifier::new(nxv.clone())));
        let adapter = Adapter::new(os.clone());
        let provider = WskProvider::new(Network::Loopback(hub.clone()), small_sockets(), wv.clone());
        let remotes = REMOTES
            .iter()
            .map(|&i| {
                let events = Arc::new(RemoteEvents::default());
                let socket = provider
                    .open_datagram(addr(i as u8), None, false, events.clone())
                    .expect("the network's sockets bind");
                *events.free.lock().unwrap() = (0..socket.send_slots()).collect();
                Remote { socket, events }
            })
            .collect();
        Self {
            hub,
            wv,
            nxv,
            os,
            adapter,
            remotes,
            tcp_peer: None,
            log: Arc::default(),
            requests: BTreeMap::new(),
            next_id: 1,
            key: None,
        }
    }

    fn request(&mut self, kind: Kind, out_len: usize) -> Req {
        let id = self.next_id;
        self.next_id += 1;
        self.requests.insert(id, (kind, 0, None));
        Req { id, out_len, log: self.log.clone() }
    }

    fn record(&mut self, id: u64, status: NtStatus, info: usize) {
        let (kind, n, last) = self.requests.get_mut(&id).unwrap_or_else(|| panic!("request {id} unknown"));
        *n += 1;
        *last = Some(status);
        assert_eq!(*n, 1, "request {id} ({kind:?}) completed twice");
        match *kind {
            Kind::Ioctl(code) => assert!(
                allowed(code, status, info),
                "{:?} ({code:#x}) completed with {status:?}, Information {info}",
                Ioctl::from_code(code)
            ),
            Kind::Read => assert!(read_allowed(status), "a read completed with {status:?}"),
        }
    }

    /// Completions made through `Request::complete` since the last look.
    fn settle(&mut self) {
        let done = std::mem::take(&mut self.log.lock().unwrap().done);
        for (id, status, info) in done {
            self.record(id, status, info);
        }
    }

    fn pending(&self) -> Vec<u64> {
        self.requests.iter().filter(|(_, (_, n, _))| *n == 0).map(|(id, _)| *id).collect()
    }

    /// The rules that hold between any two steps.
    fn check(&mut self) {
        self.settle();
        let s = self.adapter.snapshot();
        assert!(
            s.parked_reads.is_empty() || (s.control_queue.is_empty() && s.read_signal.is_none()),
            "a read waits while a packet or signal is ready"
        );
        assert!(s.parked_notify.is_empty() || s.events.is_empty(), "a NOTIFY_EVENT waits while an event is queued");
        let w = self.wv.violations();
        assert!(w.is_empty(), "WSK violations: {w:?}");
        let n = self.nxv.violations();
        assert!(n.is_empty(), "NetAdapterCx violations: {n:?}");
    }

    fn ioctl(&mut self, code: u32, input: &[u8], out_len: usize) -> Option<NtStatus> {
        // Deferred socket work runs first, as the IOCTL itself would run it.
        self.adapter.poll_close();
        self.settle();
        let before = self.adapter.snapshot();
        let links = self.os.link_changes().len();
        let req = self.request(Kind::Ioctl(code), out_len);
        let id = req.id;
        let mut out = vec![0xA5u8; out_len];
        let outcome = self.adapter.ioctl(code, input, &mut out, req);
        match outcome {
            Outcome::Complete { request, status, information } => {
                assert_eq!(request.id, id);
                assert!(information <= out_len, "Information {information} past a {out_len}-byte buffer");
                if !status.is_success() && status != NtStatus::BUFFER_OVERFLOW {
                    let name = Ioctl::from_code(code);
                    assert!(self.log.lock().unwrap().done.is_empty(), "{name:?} failed but completed other requests");
                    assert_eq!(
                        self.adapter.snapshot(),
                        before,
                        "{name:?} failed with {status:?} but changed the device"
                    );
                    assert_eq!(self.os.link_changes().len(), links, "{name:?} failed but changed the link");
                }
                self.record(id, status, information);
                Some(status)
            }
            Outcome::Parked => None,
        }
    }

    fn read(&mut self, out_len: usize) {
        let req = self.request(Kind::Read, out_len);
        let id = req.id;
        match self.adapter.read(req) {
            ReadOutcome::Completed(status) => {
                self.settle();
                assert_eq!(self.requests[&id].1, 1, "read {id} reported {status:?} without completing");
            }
            ReadOutcome::Parked => {}
        }
    }

    fn cancel(&mut self, back: u8) {
        let Some(&id) = self.requests.keys().rev().nth(usize::from(back % 8)) else { return };
        self.settle();
        let was_pending = self.requests[&id].1 == 0;
        let cancelled = self.adapter.cancel(RequestId(id));
        self.settle();
        // Every pending request is parked in the device, so a cancel
        // reaches exactly those.
        assert_eq!(cancelled, was_pending, "cancel of request {id}");
        if cancelled {
            assert_eq!(self.requests[&id].2, Some(NtStatus::CANCELLED), "cancel of {id} completes it");
        }
    }

    /// The network delivers everything it holds, then the timer runs if due.
    fn pump(&mut self) {
        self.hub.pump();
        if self.os.timer_due().is_some_and(|due| due <= ovpn_dco::os::Os::now(&*self.os)) {
            self.adapter.timer();
            self.hub.pump();
        }
    }

    /// Handle close: everything completes, the socket closes, the tables empty.
    fn cleanup(&mut self) {
        let mut progress = self.adapter.cleanup();
        for _ in 0..64 {
            if progress == CloseProgress::Closed {
                break;
            }
            self.hub.pump();
            progress = self.adapter.poll_close();
        }
        assert_eq!(progress, CloseProgress::Closed, "the socket closes once the OS gave everything back");
        self.settle();
        let pending = self.pending();
        assert!(pending.is_empty(), "requests {pending:?} still pending after cleanup");
        let s = self.adapter.snapshot();
        assert!(s.p2p.is_none() && s.listener.is_none() && s.mp_peers.is_empty() && s.routes.is_empty(), "{s:?}");
        assert!(s.parked_reads.is_empty() && s.parked_notify.is_empty() && s.pending_open.is_none(), "{s:?}");
        assert!(!s.link_up && !self.os.link_up(), "cleanup takes the link down");
        assert!(!self.adapter.datapath().has_transport(), "cleanup closes the socket");
        let o = self.adapter.datapath().occupancy();
        assert_eq!(
            (o.retained_lists, o.rx_slots, o.rx_copy_buffers, o.rx_pending, o.sends_in_flight),
            (0, 0, 0, 0, 0),
            "a data-path table leaks across cleanup"
        );
        self.tcp_peer = None;
        self.key = None;
    }

    fn step(&mut self, inp: &mut Input<'_>) {
        match inp.u8() % OPS {
            0 => {
                let code = match inp.u8() {
                    b @ 0..=18 => Ioctl::ALL[usize::from(b)].code(),
                    19 => 0,
                    20 => 0x0022_0000,
                    21 => 0x0022_0000 | (20 << 2),
                    22 => Ioctl::NewPeer.code() | 3,
                    23 => u32::MAX,
                    _ => inp.u32(),
                };
                let out = inp.out_len();
                let len = usize::from(inp.u8());
                let input = inp.bytes(len);
                self.ioctl(code, &input, out);
            }
            1 => {
                let (local, remote, proto) = (addr(inp.u8()), addr(inp.u8()), inp.u8());
                let out = inp.out_len();
                let shape = inp.u8();
                let raw = if proto & 4 != 0 { i32::from(proto >> 3) } else { i32::from(proto & 1) };
                if proto & 3 == 3 {
                    self.tcp_peer = Some(self.hub.listen_stream(remote));
                }
                self.ioctl(Ioctl::NewPeer.code(), &damage(new_peer(local, remote, raw), shape), out);
            }
            2 => {
                let flags = inp.u8();
                let options = match flags & 7 {
                    f if f & 4 != 0 => Some(u32::from(inp.u8())),
                    f if f & 1 != 0 => Some(u32::from(f & 2)),
                    _ => None,
                };
                let slot = i32::from(inp.u8() % 3);
                let cipher = match inp.u8() {
                    b @ 0..=0x7F => 1 + i32::from(b & 1),
                    b => i32::from(b & 7),
                };
                let key_len = match inp.u8() {
                    b @ 0..=0x7F => [32, 16, 24, 32][usize::from(b & 3)],
                    b => b & 0x3F,
                };
                let key_id = match inp.u8() {
                    b @ 0..=0xEF => b % 8,
                    b => b,
                };
                let k = KeyParams { slot, cipher, key_len, key_id, peer: inp.peer(), seed: inp.u8(), options };
                let shape = inp.u8();
                let code = if options.is_some() { Ioctl::NewKeyV2 } else { Ioctl::NewKey }.code();
                let status = self.ioctl(code, &damage(crypto_data(&k), shape), 0);
                if status == Some(NtStatus::SUCCESS)
                    && shape & 7 < 6
                    && let Some(slots) = mirror(&k)
                {
                    self.key = Some((u32::try_from(k.peer).unwrap_or(0), slots));
                }
            }
            3 => {
                let mp = inp.u8() & 1 == 1;
                let peer = inp.peer();
                let interval = i32::from(inp.u8() as i8);
                let timeout = i32::from(inp.u8() as i8);
                let mss = match inp.u8() {
                    0 => -1,
                    1 => 0,
                    b @ 2..=0x7F => 1200 + i32::from(b),
                    b => i32::from(b) * 300 - 40_000,
                };
                let shape = inp.u8();
                let (code, buf) = if mp {
                    let mut b = vec![0u8; size_of::<OvpnMpSetPeer>()];
                    put_i32(&mut b, offset_of!(OvpnMpSetPeer, peer_id), peer);
                    put_i32(&mut b, offset_of!(OvpnMpSetPeer, keepalive_interval), interval);
                    put_i32(&mut b, offset_of!(OvpnMpSetPeer, keepalive_timeout), timeout);
                    put_i32(&mut b, offset_of!(OvpnMpSetPeer, mss), mss);
                    (Ioctl::MpSetPeer, b)
                } else {
                    let mut b = vec![0u8; size_of::<OvpnSetPeer>()];
                    put_i32(&mut b, offset_of!(OvpnSetPeer, keepalive_interval), interval);
                    put_i32(&mut b, offset_of!(OvpnSetPeer, keepalive_timeout), timeout);
                    put_i32(&mut b, offset_of!(OvpnSetPeer, mss), mss);
                    (Ioctl::SetPeer, b)
                };
                self.ioctl(code.code(), &damage(buf, shape), 0);
            }
            4 => {
                let remote = addr(inp.u8());
                let (vpn4, vpn6, peer) = (inp.u8(), inp.u8(), inp.peer());
                let shape = inp.u8();
                self.ioctl(Ioctl::MpNewPeer.code(), &damage(mp_new_peer(remote, vpn4, vpn6, peer), shape), 0);
            }
            5 => {
                let which = inp.u8();
                let peer = inp.peer();
                let out = inp.out_len();
                let (ioctl, input) = match which % 10 {
                    0 => (Ioctl::SetMode, i32::from(which >> 4).to_le_bytes().to_vec()),
                    1 => (Ioctl::StartVpn, vec![]),
                    2 => (Ioctl::DelPeer, vec![]),
                    3 => (Ioctl::SwapKeys, vec![]),
                    4 => (Ioctl::MpSwapKeys, peer.to_le_bytes().to_vec()),
                    5 => (Ioctl::MpDelPeer, peer.to_le_bytes().to_vec()),
                    6 => (Ioctl::GetStats, vec![]),
                    7 => (Ioctl::GetVersion, vec![]),
                    8 => (Ioctl::NotifyEvent, vec![]),
                    _ => (Ioctl::GetPeerStats, peer.to_le_bytes().to_vec()),
                };
                self.ioctl(ioctl.code(), &input, out);
            }
            6 => {
                let listen = addr(inp.u8());
                let v6only = i32::from(inp.u8() & 1);
                let out = inp.out_len();
                let shape = inp.u8();
                let mut b = vec![0u8; size_of::<OvpnMpStartVpn>()];
                put_addr(&mut b, offset_of!(OvpnMpStartVpn, listen_address), &listen);
                put_i32(&mut b, offset_of!(OvpnMpStartVpn, ipv6_only), v6only);
                self.ioctl(Ioctl::MpStartVpn.code(), &damage(b, shape), out);
            }
            7 => {
                let flags = inp.u8();
                let prefix = inp.u8();
                let netbits = i32::from(inp.u8() as i8);
                let peer = inp.peer();
                let shape = inp.u8();
                let mut b = vec![0u8; size_of::<OvpnMpIroute>()];
                let at = offset_of!(OvpnMpIroute, addr);
                if flags & 2 != 0 {
                    b[at..at + 16].copy_from_slice(&[0xfd, 0, 0, prefix, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                } else {
                    b[at..at + 4].copy_from_slice(&[192, 168, prefix, 0]);
                }
                put_i32(&mut b, offset_of!(OvpnMpIroute, netbits), netbits);
                put_i32(&mut b, offset_of!(OvpnMpIroute, peer_id), peer);
                put_i32(&mut b, offset_of!(OvpnMpIroute, ipv6), i32::from(flags >> 1 & 1));
                let ioctl = if flags & 1 == 1 { Ioctl::MpDelIroute } else { Ioctl::MpAddIroute };
                self.ioctl(ioctl.code(), &damage(b, shape), 0);
            }
            8 => {
                let out = inp.out_len();
                self.read(out);
            }
            9 => {
                let flags = inp.u8();
                let to = addr(inp.u8());
                let len = usize::from(inp.u8());
                let mut bytes = vec![0u8; 28];
                let n = if flags & 1 == 1 { put_prefix(&mut bytes, &to).expect("28 bytes") } else { 0 };
                bytes.truncate(n);
                bytes.extend(inp.bytes(len));
                match self.adapter.write(&bytes) {
                    Ok(n) => assert_eq!(n, bytes.len(), "a write takes the whole packet"),
                    Err(status) => assert!(
                        [
                            NtStatus::INVALID_DEVICE_STATE,
                            NtStatus::INVALID_MESSAGE,
                            NtStatus::INVALID_ADDRESS,
                            NtStatus::INVALID_BUFFER_SIZE,
                            NtStatus::INSUFFICIENT_RESOURCES,
                        ]
                        .contains(&status),
                        "a write failed with {status:?}"
                    ),
                }
            }
            10 => {
                let back = inp.u8();
                self.cancel(back);
            }
            11 => {
                let ms = u64::from(inp.u16()) * 16;
                self.os.advance(Duration::from_millis(ms));
                self.pump();
            }
            12 => {
                let (from, to, len) = (inp.u8(), addr(inp.u8()), usize::from(inp.u8()));
                let bytes = inp.bytes(len);
                self.remotes[usize::from(from) % REMOTES.len()].send(&bytes, to);
                self.pump();
            }
            13 => {
                let (from, to, len) = (inp.u8(), addr(inp.u8()), usize::from(inp.u8()));
                let payload = inp.bytes(len);
                let Some((peer, slots)) = self.key.as_mut() else { return };
                let Some(peer) = PeerId::new(*peer) else { return };
                let mut buf = vec![0u8; payload.len() + 64];
                if let Ok(n) = slots.tx.encrypt_from(&HostCrypto, peer, &payload, &mut buf) {
                    buf.truncate(n);
                    self.remotes[usize::from(from) % REMOTES.len()].send(&buf, to);
                    self.pump();
                }
            }
            14 => {
                let (what, len) = (inp.u8(), usize::from(inp.u8()));
                let bytes = inp.bytes(len);
                if let Some(peer) = &self.tcp_peer {
                    match what {
                        0 => peer.close(),
                        1 => peer.reset(),
                        2..=0x7F => {
                            let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&bytes);
                            peer.write(&framed);
                        }
                        _ => peer.write(&bytes),
                    }
                }
                self.pump();
            }
            15 => self.cleanup(),
            _ => self.pump(),
        }
        self.check();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut run = Run::new();
    let mut inp = Input { bytes: data, at: 0 };
    for _ in 0..MAX_OPS {
        if inp.done() {
            break;
        }
        run.step(&mut inp);
    }
    // The handle closes at the end of every sequence.
    run.cleanup();
    run.check();
});
