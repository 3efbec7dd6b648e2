//! Two driver instances (P2P) exchanging traffic through the host models:
//! the NetAdapterCx model plays each adapter's OS, the WSK model carries the
//! datagrams over the in-memory loopback (with loss, duplication and
//! reordering) or over real UDP on 127.0.0.1. Every delivered byte is
//! checked against what was sent, and both verifiers must stay clean.

#![cfg(not(windows))]

#[path = "../benches/common/p2p.rs"]
mod p2p;

use p2p::{Dp, P2p};

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ovpn_dco::control::actions::TransportId;
use ovpn_dco::control::peers::{Endpoint, Peer};
use ovpn_dco::control::stats::DeviceStats;
use ovpn_dco::crypto::Cipher;
use ovpn_dco::crypto::host::HostKey;
use ovpn_dco::crypto::slots::SlotIndex;
use ovpn_dco::datapath::{CloseProgress, Datapath, DropReason};
use ovpn_dco::os::Os;
use ovpn_dco::os::host::netadapter::{Hold, HostNetAdapter, ModelConfig, TxPacket};
use ovpn_dco::os::host::wsk::{CompletionMode, LoopbackConfig, LoopbackHub, Network, WskConfig, WskVerifier};
use ovpn_dco::proto::PeerId;

const WAIT: Duration = Duration::from_secs(10);

struct Node {
    dp: Arc<Dp>,
    nx: HostNetAdapter<Dp>,
    peer: Arc<Peer<HostKey>>,
}

/// Installs AES-256-GCM key `id` from (`enc`, `dec`) seeds into `slot`.
fn install(peer: &Peer<HostKey>, slot: SlotIndex, id: u8, enc: u8, dec: u8) {
    p2p::install_slot(peer, slot, id, Cipher::AesGcm, enc, dec);
}

fn node(
    network: Network,
    wsk_verifier: &Arc<WskVerifier>,
    config: ModelConfig,
    local: SocketAddr,
    remote: SocketAddr,
    keys: (u8, u8),
) -> Node {
    let wsk_config = WskConfig {
        send: ovpn_dco::os::host::wsk::SendConfig { completion: CompletionMode::Immediate, ..Default::default() },
        ..Default::default()
    };
    let (os, notifier) = p2p::host_os(network, wsk_config, wsk_verifier);
    let ep = Endpoint { local, remote };
    let peer = Arc::new(Peer::new(PeerId::new(1).unwrap(), ep, None, None, os.now()));
    install(&peer, SlotIndex::Primary, 1, keys.0, keys.1);
    let stats = Arc::new(DeviceStats::default());
    let dp = Arc::new(Datapath::new(os, P2p::new(peer.clone()), stats));
    dp.open_udp(TransportId(1), local, Some(remote), false).unwrap();
    let mut nx = HostNetAdapter::new(dp.clone(), notifier, config);
    nx.start().unwrap();
    p2p::wait_started(&dp);
    Node { dp, nx, peer }
}

fn pair(network: Network, config: ModelConfig, a: SocketAddr, b: SocketAddr) -> (Node, Node, Arc<WskVerifier>) {
    let wv = WskVerifier::new();
    let na = node(network.clone(), &wv, config.clone(), a, b, (0x11, 0x22));
    let nb = node(network, &wv, config, b, a, (0x22, 0x11));
    (na, nb, wv)
}

/// An IPv4/UDP packet of `len` bytes whose body encodes `id`.
fn packet(id: u32, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i as u32).wrapping_mul(31).wrapping_add(id) as u8).collect();
    p[0] = 0x45;
    p[1] = 0;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = 0;
    p[7] = 0;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 8, 0, 2]);
    p[16..20].copy_from_slice(&[10, 8, 0, 1]);
    p[20..24].copy_from_slice(&id.to_be_bytes());
    p
}

fn id_of(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[20..24].try_into().unwrap())
}

/// Sends `ids` from `from` (some split into fragments) and checks what `to`
/// delivered: each packet at most once, byte for byte; with `lossless`,
/// every one. Returns how many arrived.
/// What the network may lose: nothing, what a loopback hub counts as lost,
/// or an unknown number (real UDP).
#[derive(Clone, Copy)]
enum Loss<'a> {
    None,
    Counted(&'a LoopbackHub),
    Unknown,
}

fn exchange(from: &Node, to: &Node, ids: std::ops::Range<u32>, loss: Loss) -> usize {
    let before = to.nx.delivered().len();
    let completed = from.nx.completed().len();
    for id in ids.clone() {
        let len = 60 + (id as usize * 37) % 1400;
        from.nx.send(TxPacket::new(packet(id, len)).split(1 + (id % 3) as u16));
    }
    let n = ids.len();
    assert!(from.nx.wait_completed(completed + n, WAIT), "sent {} of {n}", from.nx.completed().len() - completed);
    match loss {
        Loss::None => assert!(
            to.nx.wait_delivered(before + n, WAIT),
            "{} of {n} delivered; receiver drops {}; sender drops {}; receiver {:?}",
            to.nx.delivered().len() - before,
            drops(to),
            drops(from),
            to.nx.stats()
        ),
        // Until every packet arrived or is known lost.
        Loss::Counted(hub) => {
            let deadline = std::time::Instant::now() + WAIT;
            while to.nx.delivered_count() - before + (hub.stats().lost as usize) < n
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Returns at once when all are in; only a datagram the socket
        // really lost keeps it waiting the full time.
        Loss::Unknown => {
            to.nx.wait_delivered(before + n, WAIT);
        }
    }
    let got = to.nx.delivered();
    let mut seen = HashSet::new();
    for d in &got[before..] {
        let id = id_of(&d.bytes);
        assert!(ids.contains(&id), "unexpected packet {id}");
        assert!(seen.insert(id), "packet {id} delivered twice");
        let len = 60 + (id as usize * 37) % 1400;
        assert_eq!(d.bytes, packet(id, len), "packet {id} bytes");
    }
    seen.len()
}

/// Every non-zero drop counter, for failure messages.
fn drops(n: &Node) -> String {
    n.dp.drops().nonzero().map(|(r, n)| format!("{r:?}={n}")).collect::<Vec<_>>().join(",")
}

fn teardown(mut a: Node, mut b: Node, wv: &WskVerifier) {
    a.nx.assert_clean();
    b.nx.assert_clean();
    for n in [&a, &b] {
        let mut progress = n.dp.close_transport();
        for _ in 0..200 {
            if progress == CloseProgress::Closed {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            progress = n.dp.close_transport();
        }
        assert_eq!(progress, CloseProgress::Closed);
        let o = n.dp.occupancy();
        assert_eq!((o.retained_lists, o.rx_slots, o.rx_copy_buffers, o.rx_pending), (0, 0, 0, 0), "no leak");
    }
    wv.assert_clean();
}

fn loopback(config: LoopbackConfig) -> Network {
    Network::Loopback(LoopbackHub::new(config))
}

fn addrs() -> (SocketAddr, SocketAddr) {
    ("10.0.0.1:1194".parse().unwrap(), "10.0.0.2:1194".parse().unwrap())
}

#[test]
fn two_peers_exchange_traffic_over_the_loopback_without_copying_received_data() {
    let (a, b) = addrs();
    let (na, nb, wv) = pair(loopback(LoopbackConfig::default()), ModelConfig::default(), a, b);
    assert_eq!(exchange(&na, &nb, 0..300, Loss::None), 300);
    assert_eq!(exchange(&nb, &na, 1000..1300, Loss::None), 300);
    for n in [&na, &nb] {
        let s = n.dp.copies();
        assert_eq!(s.rx_copied_bytes.load(std::sync::atomic::Ordering::Relaxed), 0, "RX zero-copy");
        assert_eq!(n.dp.drops().total(), 0);
    }
    // Control packets pass through to the control plane.
    na.dp.send_control(b, &[0x38, 1, 2, 3, 4]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(nb.dp.peers().controls.lock().unwrap().as_slice(), &[vec![0x38, 1, 2, 3, 4]]);
    teardown(na, nb, &wv);
}

#[test]
fn loss_duplication_and_reordering_lose_only_what_the_network_lost() {
    let (a, b) = addrs();
    let net = LoopbackConfig { loss_ppm: 20_000, duplicate_ppm: 30_000, reorder_ppm: 50_000, ..Default::default() };
    let hub = LoopbackHub::new(net);
    let (na, nb, wv) = pair(Network::Loopback(hub.clone()), ModelConfig::default(), a, b);
    let got = exchange(&na, &nb, 0..500, Loss::Counted(&hub));
    let lost = hub.stats().lost as usize;
    assert_eq!(got + lost, 500, "delivered {got}, lost {lost}; drops {}", drops(&nb));
    assert!(nb.dp.drops().get(DropReason::RxReplay) >= hub.stats().duplicated.min(1), "duplicates refused");
    teardown(na, nb, &wv);
}

#[test]
fn a_key_swap_mid_stream_loses_nothing() {
    let (a, b) = addrs();
    let (na, nb, wv) = pair(loopback(LoopbackConfig::default()), ModelConfig::default(), a, b);
    for i in 0..200 {
        let len = 60 + (i as usize * 37) % 1400;
        na.nx.send(TxPacket::new(packet(i, len)));
        if i == 100 {
            // NEW_KEY (secondary) on both ends, then SWAP_KEYS, with
            // packets of the old key still on their way.
            install(&nb.peer, SlotIndex::Secondary, 2, 0x44, 0x33);
            install(&na.peer, SlotIndex::Secondary, 2, 0x33, 0x44);
            nb.peer.rx.lock().swap();
            nb.peer.tx.lock().swap();
            na.peer.tx.lock().swap();
            na.peer.rx.lock().swap();
        }
    }
    assert!(nb.nx.wait_delivered(200, WAIT), "{} delivered; drops {}", nb.nx.delivered().len(), drops(&nb));
    let ids: HashSet<u32> = nb.nx.delivered().iter().map(|d| id_of(&d.bytes)).collect();
    assert_eq!(ids.len(), 200);
    teardown(na, nb, &wv);
}

#[test]
fn slow_returns_and_a_restart_with_buffers_outstanding_stay_clean() {
    let (a, b) = addrs();
    let config = ModelConfig { hold: Hold::For(Duration::from_millis(30)), ..Default::default() };
    let (na, mut nb, wv) = pair(loopback(LoopbackConfig::default()), config, a, b);
    assert_eq!(exchange(&na, &nb, 0..200, Loss::None), 200);
    // Pause while the upper layer still holds buffers: cancel, drain, stop,
    // then a fresh pair of queues.
    for id in 200..260 {
        na.nx.send(TxPacket::new(packet(id, 500)));
    }
    nb.nx.stop();
    nb.nx.start().unwrap();
    p2p::wait_started(&nb.dp);
    // Datagrams of the burst still in the loopback may land on the new
    // queues; let them settle so the next exchange counts only its own.
    let settle_deadline = std::time::Instant::now() + WAIT;
    let mut before = nb.nx.delivered().len();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = nb.nx.delivered().len();
        if now == before || std::time::Instant::now() >= settle_deadline {
            break;
        }
        before = now;
    }
    assert_eq!(exchange(&na, &nb, 300..400, Loss::None), 100);
    assert!(nb.nx.delivered().len() >= before + 100);
    teardown(na, nb, &wv);
}

#[test]
fn two_peers_exchange_traffic_over_real_udp() {
    let base = 20_000 + (std::process::id() % 20_000) as u16;
    let a: SocketAddr = SocketAddr::from(([127, 0, 0, 1], base));
    let b: SocketAddr = SocketAddr::from(([127, 0, 0, 1], base + 1));
    let (na, nb, wv) = pair(Network::Real, ModelConfig::default(), a, b);
    // Real UDP on loopback rarely loses; a lost datagram would show as a
    // shortfall here, never as a wrong byte.
    let got = exchange(&na, &nb, 0..200, Loss::Unknown);
    assert!(got >= 190, "{got} of 200");
    let got = exchange(&nb, &na, 500..700, Loss::Unknown);
    assert!(got >= 190, "{got} of 200");
    assert_eq!(nb.dp.copies().rx_copied_bytes.load(std::sync::atomic::Ordering::Relaxed), 0);
    teardown(na, nb, &wv);
}
