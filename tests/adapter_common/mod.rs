//! Shared by the adapter scenarios: one `Adapter` per simulated Windows
//! machine, its OS played by the host models (NetAdapterCx model for the
//! packet queues, WSK model for the sockets, `HostOs` for clock, link state
//! and the passive timer), driven by IOCTL byte buffers laid out as
//! OpenVPN's dco_win.c fills them (the builders of `control_common`).

#![allow(dead_code)]

#[path = "../control_common/mod.rs"]
mod control_common;

#[allow(unused_imports)]
pub use control_common::{
    AES_GCM, KeyMaterial, PRIMARY, SECONDARY, TCP, UDP, iroute, le, material, mp_new_peer, mp_set_peer, mp_start_vpn,
    new_peer, parse_event, prefix, sa, set_mode, set_peer,
};

pub mod traffic;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ovpn_dco::adapter::Adapter;
use ovpn_dco::control::device::{Outcome, ReadOutcome};
use ovpn_dco::control::request::{Request, RequestId};
use ovpn_dco::datapath::{CloseProgress, DropReason};
use ovpn_dco::ntstatus::NtStatus;
use ovpn_dco::os::host::netadapter::{HostNetAdapter, ModelConfig, Notifier, TxPacket};
use ovpn_dco::os::host::os::{HostOs, TimerThread};
use ovpn_dco::os::host::verifier::Verifier;
use ovpn_dco::os::host::wsk::{LoopbackHub, Network, WskConfig, WskProvider, WskVerifier};
use ovpn_dco::uapi::Ioctl;
use ovpn_dco::uapi::types::OvpnStats;

pub const WAIT: Duration = Duration::from_secs(10);

/// A request's completion, as the WDFREQUEST would carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub id: u64,
    pub status: NtStatus,
    pub output: Vec<u8>,
}

#[derive(Default)]
pub struct Log {
    done: Mutex<Vec<Completion>>,
    changed: Condvar,
}

/// A WDFREQUEST stand-in that may complete on any thread.
pub struct Req {
    id: u64,
    out_len: usize,
    log: Arc<Log>,
}

impl Request for Req {
    fn id(&self) -> RequestId {
        RequestId(self.id)
    }
    fn output_len(&self) -> usize {
        self.out_len
    }
    fn complete(self, status: NtStatus, output: &[u8]) {
        assert!(output.len() <= self.out_len, "request {} completed past its buffer", self.id);
        self.log.done.lock().unwrap().push(Completion { id: self.id, status, output: output.to_vec() });
        self.log.changed.notify_all();
    }
}

pub type Dev = Adapter<HostOs, Req>;

/// An IOCTL's immediate result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Io {
    Done(NtStatus, Vec<u8>),
    Parked(u64),
}

/// Which end of a pair: the two ends encrypt with each other's decrypt key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// One machine: the adapter, its NetAdapterCx model and its timer.
pub struct Node {
    pub adapter: Arc<Dev>,
    pub nx: HostNetAdapter<Dev>,
    pub os: Arc<HostOs>,
    pub log: Arc<Log>,
    timer: Option<TimerThread>,
    next_id: Arc<AtomicU64>,
}

/// What other threads need to issue requests on a node's adapter (the
/// node itself stays with the test's thread).
#[derive(Clone)]
pub struct Handle {
    pub adapter: Arc<Dev>,
    log: Arc<Log>,
    next_id: Arc<AtomicU64>,
}

impl Handle {
    pub fn request(&self, out_len: usize) -> Req {
        Req { id: self.next_id.fetch_add(1, Ordering::SeqCst), out_len, log: self.log.clone() }
    }
}

impl Node {
    pub fn new(network: Network, wv: &Arc<WskVerifier>, config: ModelConfig, wsk: WskConfig) -> Node {
        let nx_verifier = Verifier::new();
        // WSK memory that goes back to WSK is poisoned: the NetAdapterCx model
        // flags any fragment still pointing into it.
        let v = nx_verifier.clone();
        wv.on_release(move |r| v.mark_released(r));
        let v = nx_verifier.clone();
        wv.on_indicate(move |r| v.mark_live(r));
        let notifier = Notifier::new(nx_verifier);
        let os = Arc::new(HostOs::new(WskProvider::new(network, wsk, wv.clone()), notifier.clone()));
        let adapter = Arc::new(Adapter::new(os.clone()));
        let weak = Arc::downgrade(&adapter);
        let timer = TimerThread::spawn(&os, move || {
            let Some(a) = weak.upgrade() else { return false };
            a.timer();
            true
        });
        let mut nx = HostNetAdapter::new(adapter.clone(), notifier, config);
        nx.start().unwrap();
        let node = Node {
            adapter,
            nx,
            os,
            log: Arc::new(Log::default()),
            timer: Some(timer),
            next_id: Arc::new(AtomicU64::new(1)),
        };
        node.wait_started();
        node
    }

    /// The model starts queues from its poll thread: data arriving before
    /// EvtPacketQueueStart is dropped.
    pub fn wait_started(&self) {
        for _ in 0..1000 {
            if self.adapter.datapath().rx_started() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("the RX queue never started");
    }

    pub fn request(&self, out_len: usize) -> Req {
        self.handle().request(out_len)
    }

    pub fn handle(&self) -> Handle {
        Handle { adapter: self.adapter.clone(), log: self.log.clone(), next_id: self.next_id.clone() }
    }

    pub fn ioctl(&self, ioctl: Ioctl, input: &[u8], out_len: usize) -> Io {
        let req = self.request(out_len);
        let id = req.id;
        let mut out = vec![0xCC; out_len];
        match self.adapter.ioctl(ioctl.code(), input, &mut out, req) {
            Outcome::Complete { request, status, information } => {
                assert_eq!(request.id, id);
                Io::Done(status, out[..information].to_vec())
            }
            Outcome::Parked => Io::Parked(id),
        }
    }

    #[track_caller]
    pub fn ok(&self, ioctl: Ioctl, input: &[u8], out_len: usize) -> Vec<u8> {
        match self.ioctl(ioctl, input, out_len) {
            Io::Done(NtStatus::SUCCESS, out) => out,
            other => panic!("{ioctl:?}: {other:?}"),
        }
    }

    /// An IOCTL that parks and later completes successfully (NEW_PEER,
    /// MP_START_VPN); its output.
    #[track_caller]
    pub fn parks_then_succeeds(&self, ioctl: Ioctl, input: &[u8], out_len: usize) -> Vec<u8> {
        let Io::Parked(id) = self.ioctl(ioctl, input, out_len) else { panic!("{ioctl:?} should park") };
        let c = self.wait_completion(id);
        assert_eq!(c.status, NtStatus::SUCCESS, "{ioctl:?}");
        c.output
    }

    /// Waits for request `id` to complete; returns its completion.
    #[track_caller]
    pub fn wait_completion(&self, id: u64) -> Completion {
        let deadline = std::time::Instant::now() + WAIT;
        let mut done = self.log.done.lock().unwrap();
        loop {
            if let Some(c) = done.iter().find(|c| c.id == id) {
                return c.clone();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "request {id} never completed");
            done = self.log.changed.wait_timeout(done, left).unwrap().0;
        }
    }

    pub fn completion(&self, id: u64) -> Option<Completion> {
        self.log.done.lock().unwrap().iter().find(|c| c.id == id).cloned()
    }

    /// ReadFile with a buffer of `out_len`: its request id and outcome.
    pub fn read(&self, out_len: usize) -> (u64, ReadOutcome) {
        let req = self.request(out_len);
        let id = req.id;
        (id, self.adapter.read(req))
    }

    /// GET_STATS, decoded.
    pub fn stats(&self) -> OvpnStats {
        let out = self.ok(Ioctl::GetStats, &[], 64);
        let l = |at: usize| i32::from_le_bytes(out[at..at + 4].try_into().unwrap());
        let ll = |at: usize| i64::from_le_bytes(out[at..at + 8].try_into().unwrap());
        OvpnStats {
            lost_in_control_packets: l(0),
            lost_out_control_packets: l(4),
            lost_in_data_packets: l(8),
            lost_out_data_packets: l(12),
            received_data_packets: l(16),
            received_control_packets: l(20),
            sent_control_packets: l(24),
            sent_data_packets: l(28),
            transport_bytes_sent: ll(32),
            transport_bytes_received: ll(40),
            tun_bytes_sent: ll(48),
            tun_bytes_received: ll(56),
        }
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.adapter.datapath().drops().get(reason)
    }

    pub fn rx_copied(&self) -> u64 {
        self.adapter.datapath().copies().rx_copied_bytes.load(Ordering::SeqCst)
    }

    /// NEW_KEY (or NEW_KEY with the slot) with this side's direction of
    /// key `key_id`'s material.
    pub fn new_key(&self, side: Side, slot: i32, key_id: u8, peer_id: i32) {
        self.ok(Ioctl::NewKey, &crypto_data(side, slot, key_id, peer_id), 0);
    }

    /// [`Node::new_key`] with the material of `generation` (see
    /// [`generation_material`]).
    pub fn new_key_gen(&self, side: Side, slot: i32, key_id: u8, peer_id: i32, generation: u32) {
        let data = crypto_data_with(side, slot, key_id, peer_id, generation_material(key_id, generation));
        self.ok(Ioctl::NewKey, &data, 0);
    }

    /// The OS pauses the data path and brings it back: both queues
    /// cancelled, drained, stopped and destroyed, then created and started
    /// again.
    pub fn restart_queues(&mut self) {
        self.nx.stop();
        self.nx.start().unwrap();
        self.wait_started();
    }

    /// P2P bring-up as OpenVPN 2.6 does it: NEW_PEER (completes once the
    /// socket exists, or for TCP once connected), the primary key, the
    /// keepalive, START_VPN.
    pub fn p2p_up(&self, local: SocketAddr, remote: SocketAddr, proto: i32, side: Side, keepalive: (i32, i32)) {
        self.p2p_up_with_key(local, remote, proto, side, keepalive, 1, 1);
    }

    /// [`Node::p2p_up`] with key `key_id`'s material and the peer id the
    /// server gave this client.
    #[allow(clippy::too_many_arguments)]
    pub fn p2p_up_with_key(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        proto: i32,
        side: Side,
        keepalive: (i32, i32),
        key_id: u8,
        peer_id: i32,
    ) {
        self.parks_then_succeeds(Ioctl::NewPeer, &new_peer(local, remote, proto), 0);
        self.new_key(side, PRIMARY, key_id, peer_id);
        self.ok(Ioctl::SetPeer, &set_peer(keepalive.0, keepalive.1, -1), 0);
        self.ok(Ioctl::StartVpn, &[], 0);
        assert!(self.os.link_up(), "START_VPN connects the adapter");
    }

    /// Handle close, then the bounded wait for the socket the glue does at
    /// PASSIVE_LEVEL.
    pub fn cleanup(&self) {
        let mut progress = self.adapter.cleanup();
        for _ in 0..500 {
            if progress == CloseProgress::Closed {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            progress = self.adapter.poll_close();
        }
        assert_eq!(progress, CloseProgress::Closed, "the socket closes once the OS gave everything back");
        assert!(!self.adapter.datapath().has_transport());
    }

    /// Cleanup, the adapter's queues stopped, both verifiers clean and
    /// every table empty.
    pub fn finish(mut self) {
        self.cleanup();
        assert!(!self.os.link_up(), "handle close disconnects the adapter");
        self.nx.assert_clean();
        let o = self.adapter.datapath().occupancy();
        assert_eq!((o.retained_lists, o.rx_slots, o.rx_copy_buffers, o.rx_pending), (0, 0, 0, 0), "no leak");
        self.timer.take();
    }
}

/// OVPN_CRYPTO_DATA for `side`: A encrypts with the material's `out` and
/// decrypts with `inn`, B the reverse, so that A and B talk. Encrypt @0,
/// Decrypt @41, KeySlot @84, CipherAlg @88, KeyId @92, PeerId @96.
pub fn crypto_data(side: Side, slot: i32, key_id: u8, peer_id: i32) -> Vec<u8> {
    crypto_data_with(side, slot, key_id, peer_id, material(key_id))
}

/// Key material of one TLS session's keys: each renegotiation or
/// reconnect (`generation`) brings material no earlier one had, even when
/// the 3-bit key id comes round again.
pub fn generation_material(key_id: u8, generation: u32) -> KeyMaterial {
    let mut m = material(key_id);
    let g = generation.to_le_bytes();
    for (i, b) in m.out.iter_mut().chain(m.inn.iter_mut()).enumerate() {
        *b ^= g[i % 4];
    }
    for (i, b) in m.out_tail.iter_mut().chain(m.inn_tail.iter_mut()).enumerate() {
        *b ^= g[i % 4].rotate_left(3);
    }
    m
}

/// [`crypto_data`] with material `m`.
pub fn crypto_data_with(side: Side, slot: i32, key_id: u8, peer_id: i32, m: KeyMaterial) -> Vec<u8> {
    let ((enc, enc_tail), (dec, dec_tail)) = match side {
        Side::A => ((m.out, m.out_tail), (m.inn, m.inn_tail)),
        Side::B => ((m.inn, m.inn_tail), (m.out, m.out_tail)),
    };
    let mut b = vec![0u8; 100];
    b[0..32].copy_from_slice(&enc);
    b[32] = 32;
    b[33..41].copy_from_slice(&enc_tail);
    b[41..73].copy_from_slice(&dec);
    b[73] = 32;
    b[74..82].copy_from_slice(&dec_tail);
    b[84..88].copy_from_slice(&le(slot));
    b[88..92].copy_from_slice(&le(AES_GCM));
    b[92] = key_id;
    b[96..100].copy_from_slice(&le(peer_id));
    b
}

/// An IPv4/UDP packet of `len` bytes from `src` to `dst` whose body encodes
/// `id` (and, through it, every other byte).
pub fn packet(src: Ipv4Addr, dst: Ipv4Addr, id: u32, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i as u32).wrapping_mul(31).wrapping_add(id) as u8).collect();
    p[0] = 0x45;
    p[1] = 0;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = 0;
    p[7] = 0;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..24].copy_from_slice(&id.to_be_bytes());
    p
}

pub fn id_of(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[20..24].try_into().unwrap())
}

pub fn len_of(id: u32) -> usize {
    60 + (id as usize * 37) % 1400
}

pub fn src_of(bytes: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15])
}

pub const A_VPN: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
pub const B_VPN: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);

/// Sends `ids` from `from` to `dst` (some split into fragments) and checks
/// what `to` delivered after `before`: each packet at most once, byte for
/// byte, from `src`. With `lossless`, every one. Returns how many arrived.
pub fn exchange(
    from: &Node,
    to: &Node,
    (src, dst): (Ipv4Addr, Ipv4Addr),
    ids: std::ops::Range<u32>,
    lossless: bool,
) -> usize {
    let before = to.nx.delivered().len();
    let completed = from.nx.completed().len();
    for id in ids.clone() {
        from.nx.send(TxPacket::new(packet(src, dst, id, len_of(id))).split(1 + (id % 3) as u16));
    }
    let n = ids.len();
    assert!(from.nx.wait_completed(completed + n, WAIT), "sent {} of {n}", from.nx.completed().len() - completed);
    if lossless {
        assert!(
            to.nx.wait_delivered(before + n, WAIT),
            "{} of {n} delivered; receiver {:?}",
            to.nx.delivered().len() - before,
            to.adapter.datapath().drops()
        );
    } else {
        std::thread::sleep(Duration::from_millis(300));
    }
    check_delivered(to, before, src, dst, &ids)
}

/// Every packet `to` delivered after `before` is one of `ids`, once, byte for
/// byte. Returns how many.
pub fn check_delivered(to: &Node, before: usize, src: Ipv4Addr, dst: Ipv4Addr, ids: &std::ops::Range<u32>) -> usize {
    let got = to.nx.delivered();
    let mut seen = HashSet::new();
    for d in &got[before..] {
        let id = id_of(&d.bytes);
        assert!(ids.contains(&id), "unexpected packet {id}");
        assert!(seen.insert(id), "packet {id} delivered twice");
        assert_eq!(d.bytes, packet(src, dst, id, len_of(id)), "packet {id} bytes");
    }
    seen.len()
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// NOTIFY_EVENT Cmd values (ovpn-dco-win uapi: OVPN_CMD_*).
pub const CMD_DEL_PEER: i32 = ovpn_dco::uapi::types::OVPN_CMD_DEL_PEER;
pub const CMD_FLOAT_PEER: i32 = ovpn_dco::uapi::types::OVPN_CMD_FLOAT_PEER;
/// OVPN_DEL_PEER_REASON values.
pub const REASON_USERSPACE: i32 = 1;
pub const REASON_EXPIRED: i32 = 2;

/// The MP server's UDP listen address.
pub fn server_addr() -> SocketAddr {
    sa("10.0.0.1:1194")
}

/// Client `k`'s transport address.
pub fn client_addr(k: u32) -> SocketAddr {
    SocketAddr::from(([10, 0, 1, k as u8], 5000))
}

/// Client `k`'s VPN address (the server is 10.8.0.1).
pub fn client_vpn(k: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 8, 0, 1 + k as u8)
}

/// Client `k`'s IPv6 VPN address (the server is fd00::1).
pub fn client_vpn6(k: u32) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1 + k as u16)
}

/// One MP server adapter and P2P client adapters on one hub, configured
/// as OpenVPN 2.7 configures ovpn-dco-win: SET_MODE(MP), MP_START_VPN,
/// then per client MP_NEW_PEER (peer id k, VPN addresses) and its key
/// (key id k) on the server, and NEW_PEER, NEW_KEY, SET_PEER, START_VPN on
/// the client.
pub struct MpNet {
    pub hub: LoopbackHub,
    pub server: Node,
    pub clients: Vec<Node>,
    pub wv: Arc<WskVerifier>,
}

impl MpNet {
    /// `clients` clients (1..=clients), with IPv6 VPN addresses when
    /// `vpn6`.
    pub fn up(hub: LoopbackHub, config: ModelConfig, clients: u32, vpn6: bool) -> Self {
        let wv = WskVerifier::new();
        let node = || Node::new(Network::Loopback(hub.clone()), &wv, config.clone(), WskConfig::default());
        let server = node();
        // ovpn_dco_init_mp: SET_MODE(MP) connects the adapter.
        server.ok(Ioctl::SetMode, &set_mode(1), 0);
        assert!(server.os.link_up(), "SET_MODE(MP) connects the adapter");
        let start = mp_start_vpn(server_addr(), false);
        let echo = server.parks_then_succeeds(Ioctl::MpStartVpn, &start, 32);
        assert_eq!(echo, start, "MP_START_VPN echoes the listen address");
        let mut nodes = Vec::new();
        for k in 1..=clients {
            // After the handshake: MP_NEW_PEER, the peer's key, (iroutes).
            let id = k as i32;
            let v6 = if vpn6 { client_vpn6(k).octets() } else { [0; 16] };
            server.ok(Ioctl::MpNewPeer, &mp_new_peer(client_addr(k), client_vpn(k).octets(), v6, id), 0);
            server.new_key(Side::A, PRIMARY, k as u8, id);
            let client = node();
            client.p2p_up_with_key(client_addr(k), server_addr(), UDP, Side::B, (0, 0), k as u8, id);
            nodes.push(client);
        }
        MpNet { hub, server, clients: nodes, wv }
    }

    /// Every node finished (see [`Node::finish`]), and the WSK verifier
    /// clean.
    pub fn finish(self) {
        self.server.finish();
        for c in self.clients {
            c.finish();
        }
        self.wv.assert_clean();
    }
}

/// A NOTIFY_EVENT that completes at once: (Cmd, PeerId, DelPeerReason).
#[track_caller]
pub fn notify_event(server: &Node) -> (i32, i32, i32) {
    let out = server.ok(Ioctl::NotifyEvent, &[], 144);
    let (cmd, peer, reason, _) = parse_event(&out);
    (cmd, peer, reason)
}
