//! Two host tunnels (each an adapter configured by IOCTLs as OpenVPN does,
//! over the NetAdapterCx model and the WSK model's real sockets) talking on
//! 127.0.0.1 without TUN devices, so no root is needed: over TCP (one end
//! connects as ovpn-dco-win does, the other accepts and splices the stream
//! to its adapter) and over UDP. Every packet arrives once, byte for byte,
//! in both directions; a control packet written on one end is read on the
//! other; both models' verifiers stay clean.

#![cfg(target_os = "linux")]

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ovpn_dco::os::host::tunnel::keyfile::{self, Side};
use ovpn_dco::os::host::tunnel::{HostTunnel, TunnelConfig, TunnelProto, Upper, Verification};
use ovpn_dco::os::host::wsk::Network;
use ovpn_dco::proto::{KeyId, PeerId};

const WAIT: Duration = Duration::from_secs(20);
const A_VPN: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
const B_VPN: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);

/// A key file with fixed material (the tests need no secrecy).
fn key_text(cipher: &str) -> String {
    let mut counter = 0u8;
    let mut fill = |b: &mut [u8]| {
        for x in b {
            counter = counter.wrapping_add(37);
            *x = counter;
        }
    };
    keyfile::generate(cipher, PeerId::new(7).unwrap(), KeyId::new(1).unwrap(), &mut fill).unwrap()
}

fn config(side: Side, proto: TunnelProto, local: SocketAddr, remote: SocketAddr, cipher: &str) -> TunnelConfig {
    TunnelConfig {
        upper: Upper::Memory,
        proto,
        network: Network::Real,
        local,
        remote,
        keys: keyfile::parse(&key_text(cipher), side).unwrap(),
        first_packet_id: 1,
        keepalive_interval: 1,
        keepalive_timeout: 0,
        mss: None,
        tun_offload: false,
        verification: Verification::Full,
    }
}

/// An IPv4/UDP packet whose body encodes `id` in every byte.
fn packet(src: Ipv4Addr, dst: Ipv4Addr, id: u32) -> Vec<u8> {
    let len = 60 + (id as usize * 37) % 1400;
    let mut p: Vec<u8> = (0..len).map(|i| (i as u32).wrapping_mul(31).wrapping_add(id) as u8).collect();
    p[0] = 0x45;
    p[1] = 0;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[6..8].fill(0);
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..24].copy_from_slice(&id.to_be_bytes());
    p
}

/// Packets in flight at most (sent, not yet delivered). The RX copy pool
/// that TCP frames land in is bounded and its overflow is dropped like a
/// congested link's; the window keeps a debug build from overrunning it, so
/// TCP can be held to lossless.
const WINDOW: usize = 64;

/// Sends `ids` from `from` and checks `to` delivered each once, exactly.
/// `lossless` (TCP) wants every one; UDP on loopback may lose a few.
fn exchange(
    from: &HostTunnel,
    to: &HostTunnel,
    (src, dst): (Ipv4Addr, Ipv4Addr),
    ids: std::ops::Range<u32>,
    lossless: bool,
) {
    let before = to.delivered().len();
    for (sent, id) in ids.clone().enumerate() {
        if sent >= WINDOW {
            let wait = if lossless { WAIT } else { Duration::from_millis(50) };
            to.wait_delivered(before + sent - WINDOW, wait);
        }
        from.send_packet(packet(src, dst, id));
    }
    let n = ids.len();
    let arrived = to.wait_delivered(before + n, WAIT);
    if !lossless {
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = to.delivered();
    let mut seen = HashSet::new();
    for d in &got[before..] {
        let id = u32::from_be_bytes(d.bytes[20..24].try_into().unwrap());
        assert!(ids.contains(&id), "unexpected packet {id}");
        assert!(seen.insert(id), "packet {id} delivered twice");
        assert_eq!(d.bytes, packet(src, dst, id), "packet {id} bytes");
    }
    if lossless {
        assert!(arrived, "{} of {n} delivered; drops {}", seen.len(), to.drop_summary());
    } else {
        assert!(seen.len() * 100 >= n * 95, "{} of {n} delivered over UDP", seen.len());
    }
}

fn control_packet_crosses(from: &HostTunnel, to: &HostTunnel) {
    let hello = [0x38, 9, 9, 9, 9, 9, 9, 9, 9];
    assert_eq!(from.send_raw(&hello), Ok(hello.len()));
    let deadline = std::time::Instant::now() + WAIT;
    while !to.control_packets().contains(&hello.to_vec()) {
        assert!(std::time::Instant::now() < deadline, "the control packet never arrived: {:?}", to.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops both; over UDP, asserts received data was never copied (a TCP
/// stream's frames are reassembled into pooled buffers by design).
fn finish(a: HostTunnel, b: HostTunnel, udp: bool) {
    for t in [a, b] {
        let copied = t.datapath().copies().rx_copied_bytes.load(std::sync::atomic::Ordering::Relaxed);
        assert!(!udp || copied == 0, "received datagrams are never copied ({copied} bytes were)");
        t.stop().unwrap_or_else(|e| panic!("models: {e}"));
    }
}

fn tcp_pair(cipher: &str) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    // B listens (its adapter connects to B's own splice); A connects to B.
    let b = HostTunnel::start(&config(Side::B, TunnelProto::TcpServer, any, any, cipher)).expect("B starts");
    let (listening, _) = b.listening().expect("B listens");
    let a = HostTunnel::start(&config(Side::A, TunnelProto::TcpClient, any, listening, cipher)).expect("A connects");

    exchange(&a, &b, (A_VPN, B_VPN), 0..500, true);
    exchange(&b, &a, (B_VPN, A_VPN), 1000..1500, true);
    control_packet_crosses(&a, &b);
    control_packet_crosses(&b, &a);
    let (_, spliced) = b.listening().unwrap();
    assert!(spliced > 500 * 60, "the traffic crossed the TCP splice ({spliced} bytes)");
    // Idle for longer than the keepalive interval: the adapter timers ping.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(a.stats().keepalives_sent > 0 && b.stats().keepalives_sent > 0, "{:?} {:?}", a.stats(), b.stats());
    assert!(b.stats().consumed_after_decrypt > 0, "B consumed A's pings");
    assert_eq!(
        (a.stats().datapath_drops, b.stats().datapath_drops),
        (0, 0),
        "{} / {}",
        a.drop_summary(),
        b.drop_summary()
    );
    finish(a, b, false);
}

#[test]
fn two_host_tunnels_talk_over_tcp_on_loopback_aes_256_gcm() {
    tcp_pair("AES-256-GCM");
}

#[test]
fn two_host_tunnels_talk_over_tcp_on_loopback_chacha20_poly1305() {
    tcp_pair("CHACHA20-POLY1305");
}

#[test]
fn two_host_tunnels_talk_over_udp_on_loopback() {
    let base = 40_000 + (std::process::id() % 10_000) as u16;
    let (pa, pb) = (SocketAddr::from(([127, 0, 0, 1], base)), SocketAddr::from(([127, 0, 0, 1], base + 1)));
    let a = HostTunnel::start(&config(Side::A, TunnelProto::Udp, pa, pb, "AES-128-GCM")).expect("A starts");
    let b = HostTunnel::start(&config(Side::B, TunnelProto::Udp, pb, pa, "AES-128-GCM")).expect("B starts");
    exchange(&a, &b, (A_VPN, B_VPN), 0..300, false);
    exchange(&b, &a, (B_VPN, A_VPN), 1000..1300, false);
    control_packet_crosses(&a, &b);
    finish(a, b, true);
}
