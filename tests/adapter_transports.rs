//! The P2P pair over the other transports: real UDP on 127.0.0.1, and TCP
//! through the WSK model's stream sockets (NEW_PEER completes only once
//! connected; sends are cut short and resumed; received bytes arrive in
//! random chunks), with a relay standing in for the network between the two
//! TCP clients.

#![cfg(not(windows))]

mod adapter_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use adapter_common::*;
use ovpn_dco::control::device::ReadOutcome;
use ovpn_dco::ntstatus::NtStatus;
use ovpn_dco::os::host::netadapter::ModelConfig;
use ovpn_dco::os::host::wsk::{
    Chunking, LoopbackConfig, LoopbackHub, Network, PartialSends, SendConfig, StreamConfig, StreamPeer, WskConfig,
    WskVerifier,
};
use ovpn_dco::uapi::Ioctl;

const AB: (std::net::Ipv4Addr, std::net::Ipv4Addr) = (A_VPN, B_VPN);
const BA: (std::net::Ipv4Addr, std::net::Ipv4Addr) = (B_VPN, A_VPN);

#[test]
fn two_adapters_exchange_traffic_over_real_udp() {
    let base = 30_000 + (std::process::id() % 15_000) as u16;
    let a = SocketAddr::from(([127, 0, 0, 1], base));
    let b = SocketAddr::from(([127, 0, 0, 1], base + 1));
    let wv = WskVerifier::new();
    let na = Node::new(Network::Real, &wv, ModelConfig::default(), WskConfig::default());
    let nb = Node::new(Network::Real, &wv, ModelConfig::default(), WskConfig::default());
    na.p2p_up(a, b, UDP, Side::A, (10, 60));
    nb.p2p_up(b, a, UDP, Side::B, (10, 60));
    // Real UDP on loopback rarely loses; a loss shows as a shortfall here,
    // never as a wrong byte.
    assert!(exchange(&na, &nb, AB, 0..200, false) >= 190);
    assert!(exchange(&nb, &na, BA, 500..700, false) >= 190);
    let (r, _) = nb.read(2048);
    let hello = [0x38, 5, 5, 5, 5, 5, 5, 5];
    assert_eq!(na.adapter.write(&hello), Ok(hello.len()));
    assert_eq!(nb.wait_completion(r).output, hello);
    assert_eq!(nb.rx_copied(), 0);
    na.finish();
    nb.finish();
    wv.assert_clean();
}

/// Copies bytes between two in-memory TCP peers until stopped.
struct Relay {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn new(x: StreamPeer, y: StreamPeer) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let from_x = x.read_at_least(1, Duration::from_millis(2));
                if !from_x.is_empty() {
                    y.write(&from_x);
                }
                let from_y = y.read_at_least(1, Duration::from_millis(2));
                if !from_y.is_empty() {
                    x.write(&from_y);
                }
            }
        });
        Self { stop, handle: Some(handle) }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn tcp_config(seed: u64) -> WskConfig {
    WskConfig {
        send: SendConfig { partial: PartialSends::EveryNth(3), ..Default::default() },
        stream: StreamConfig { chunking: Chunking::Random { max: 700 }, ..Default::default() },
        seed,
        ..Default::default()
    }
}

#[test]
fn two_adapters_exchange_traffic_over_tcp_with_partial_sends() {
    let hub = LoopbackHub::new(LoopbackConfig::default());
    let (xa, xb) = (sa("10.0.0.10:1194"), sa("10.0.0.11:1194"));
    let relay = Relay::new(hub.listen_stream(xa), hub.listen_stream(xb));
    let wv = WskVerifier::new();
    let na = Node::new(Network::Loopback(hub.clone()), &wv, ModelConfig::default(), tcp_config(1));
    let nb = Node::new(Network::Loopback(hub.clone()), &wv, ModelConfig::default(), tcp_config(2));
    // NEW_PEER over TCP parks until the connect completes.
    na.p2p_up(sa("10.0.0.1:0"), xa, TCP, Side::A, (0, 0));
    nb.p2p_up(sa("10.0.0.2:0"), xb, TCP, Side::B, (0, 0));
    assert_eq!(exchange(&na, &nb, AB, 0..300, true), 300);
    assert_eq!(exchange(&nb, &na, BA, 1000..1300, true), 300);
    // The control channel rides the same stream.
    let (r, _) = nb.read(2048);
    let hello = [0x38, 7, 7, 7, 7, 7, 7, 7, 7];
    assert_eq!(na.adapter.write(&hello), Ok(hello.len()));
    assert_eq!(nb.wait_completion(r).output, hello);
    drop(relay);
    na.finish();
    nb.finish();
    wv.assert_clean();
}

#[test]
fn a_tcp_connect_that_fails_fails_new_peer() {
    let hub = LoopbackHub::new(LoopbackConfig::default());
    let wv = WskVerifier::new();
    let na = Node::new(Network::Loopback(hub.clone()), &wv, ModelConfig::default(), tcp_config(3));
    // Nobody listens there.
    let Io::Parked(id) = na.ioctl(Ioctl::NewPeer, &new_peer(sa("10.0.0.1:0"), sa("10.0.0.99:1194"), TCP), 0) else {
        panic!("NEW_PEER over TCP should wait for the connect")
    };
    let c = na.wait_completion(id);
    assert!(!c.status.is_success(), "{:?}", c.status);
    // The failed socket is closed from the timer, and the device has no peer.
    wait_until("the failed socket closed", || !na.adapter.datapath().has_transport());
    assert_eq!(na.adapter.snapshot().p2p, None);
    na.finish();
    wv.assert_clean();
}

#[test]
fn a_tcp_reset_by_the_server_aborts_the_pending_read() {
    let hub = LoopbackHub::new(LoopbackConfig::default());
    let server = hub.listen_stream(sa("10.0.0.10:1194"));
    let wv = WskVerifier::new();
    let na = Node::new(Network::Loopback(hub.clone()), &wv, ModelConfig::default(), tcp_config(4));
    na.p2p_up(sa("10.0.0.1:0"), sa("10.0.0.10:1194"), TCP, Side::A, (0, 0));
    let (r, out) = na.read(2048);
    assert_eq!(out, ReadOutcome::Parked);
    server.reset();
    // OpenVPN: ERROR_CONNECTION_ABORTED → connection-reset, SIGUSR1.
    assert_eq!(na.wait_completion(r).status, NtStatus::CONNECTION_ABORTED);
    // Then DEL_PEER and handle close, as OpenVPN tears down.
    na.ok(Ioctl::DelPeer, &[], 0);
    na.finish();
    wv.assert_clean();
}
