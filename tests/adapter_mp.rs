//! One MP server adapter and three P2P client adapters on the loopback
//! hub, configured as OpenVPN 2.7 configures ovpn-dco-win (SET_MODE,
//! MP_START_VPN, MP_NEW_PEER with VPN addresses, NEW_KEY per peer, an
//! iroute): traffic routed by inner address both ways, anti-spoofing,
//! MP_DEL_PEER, keepalive expiry notified through NOTIFY_EVENT, and the
//! control channel with its sockaddr prefix.

#![cfg(not(windows))]

mod adapter_common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use adapter_common::*;
use ovpn_dco::control::device::ReadOutcome;
use ovpn_dco::datapath::DropReason;
use ovpn_dco::ntstatus::NtStatus;
use ovpn_dco::os::host::netadapter::{ModelConfig, TxPacket};
use ovpn_dco::os::host::wsk::{LoopbackConfig, LoopbackHub};
use ovpn_dco::uapi::Ioctl;

const SERVER_VPN: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);
const IROUTE_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 3, 7);

/// The server up with three clients connected, an iroute to client 3.
fn network() -> MpNet {
    let net = MpNet::up(LoopbackHub::new(LoopbackConfig::default()), ModelConfig::default(), 3, false);
    net.server.ok(Ioctl::MpAddIroute, &iroute(IpAddr::V4(Ipv4Addr::new(192, 168, 3, 0)), 24, 3), 0);
    net
}

fn finish(net: MpNet) {
    net.finish();
}

/// Client `k` sends `ids` with inner source `src` to the server.
fn client_sends(c: &Node, src: Ipv4Addr, ids: std::ops::Range<u32>) {
    let done = c.nx.completed().len();
    for id in ids.clone() {
        c.nx.send(TxPacket::new(packet(src, SERVER_VPN, id, len_of(id))));
    }
    assert!(c.nx.wait_completed(done + ids.len(), WAIT));
}

#[test]
fn a_server_routes_three_clients_by_vpn_address_and_iroute() {
    let net = network();
    let s = &net.server;

    // Each client's traffic reaches the server's OS with its own source.
    for (i, c) in net.clients.iter().enumerate() {
        let k = i as u32 + 1;
        client_sends(c, client_vpn(k), k * 1000..k * 1000 + 50);
    }
    assert!(s.nx.wait_delivered(150, WAIT), "{} delivered; {:?}", s.nx.delivered().len(), s.adapter.datapath().drops());
    for d in s.nx.delivered() {
        let id = id_of(&d.bytes);
        let k = id / 1000;
        assert_eq!(src_of(&d.bytes), client_vpn(k), "packet {id}");
        assert_eq!(d.bytes, packet(client_vpn(k), SERVER_VPN, id, len_of(id)));
    }

    // Server → clients: by destination VPN address, and by iroute.
    for k in 1..=3u32 {
        for id in 0..30 {
            s.nx.send(TxPacket::new(packet(SERVER_VPN, client_vpn(k), k * 100 + id, len_of(id))));
        }
    }
    for id in 0..20 {
        s.nx.send(TxPacket::new(packet(SERVER_VPN, IROUTE_HOST, 900 + id, len_of(id))));
    }
    for (i, c) in net.clients.iter().enumerate() {
        let k = i as u32 + 1;
        let want = if k == 3 { 50 } else { 30 };
        assert!(c.nx.wait_delivered(want, WAIT), "client {k}: {}", c.nx.delivered().len());
        for d in c.nx.delivered() {
            let id = id_of(&d.bytes);
            let dst = if id >= 900 { IROUTE_HOST } else { client_vpn(k) };
            assert!(id / 100 == k || (k == 3 && id >= 900), "client {k} got packet {id}");
            assert_eq!(d.bytes, packet(SERVER_VPN, dst, id, len_of(id % 100)));
        }
    }
    for n in std::iter::once(s).chain(&net.clients) {
        assert_eq!(n.rx_copied(), 0);
    }
    finish(net);
}

/// Destinations that change from packet to packet within one burst (the TX
/// path routes a run of packets to one destination once): every packet
/// still reaches exactly the client its destination routes to, including
/// an unroutable one between two routable ones.
#[test]
fn interleaved_destinations_each_reach_their_own_client() {
    let net = network();
    let s = &net.server;
    let unroutable = Ipv4Addr::new(172, 16, 0, 9);
    let dst = |k: u32| if k == 4 { IROUTE_HOST } else { client_vpn(k) };
    let mut want = [0usize; 5];
    for id in 0..240u32 {
        // 1 2 3 4(iroute) 1 1 2 2 ... and an unroutable one every 7th.
        let k = if id % 7 == 6 {
            0
        } else if id < 120 {
            id % 4 + 1
        } else {
            (id / 2) % 4 + 1
        };
        let to = if k == 0 { unroutable } else { dst(k) };
        s.nx.send(TxPacket::new(packet(SERVER_VPN, to, k * 1000 + id, len_of(id))));
        want[k as usize] += 1;
    }
    for (i, c) in net.clients.iter().enumerate() {
        let k = i as u32 + 1;
        let expected = want[k as usize] + if k == 3 { want[4] } else { 0 };
        assert!(c.nx.wait_delivered(expected, WAIT), "client {k}: {} of {expected}", c.nx.delivered().len());
        let delivered = c.nx.delivered();
        assert_eq!(delivered.len(), expected, "client {k}");
        for d in delivered {
            let tag = id_of(&d.bytes);
            let (from_k, id) = (tag / 1000, tag % 1000);
            assert!(from_k == k || (k == 3 && from_k == 4), "client {k} got packet {id} meant for {from_k}");
            assert_eq!(d.bytes, packet(SERVER_VPN, dst(from_k), tag, len_of(id)));
        }
    }
    assert!(s.nx.wait_completed(240, WAIT));
    assert_eq!(s.drops(DropReason::TxUnroutable), want[0] as u64);
    finish(net);
}

#[test]
fn a_spoofed_inner_source_is_dropped_and_counted() {
    let net = network();
    let s = &net.server;
    let lost_before = s.stats().lost_in_data_packets;
    // Client 2 claims client 3's VPN address: not routed back to it.
    client_sends(&net.clients[1], client_vpn(3), 0..10);
    // ... and then its own, which passes.
    client_sends(&net.clients[1], client_vpn(2), 10..20);
    assert!(s.nx.wait_delivered(10, WAIT));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(check_delivered(s, 0, client_vpn(2), SERVER_VPN, &(10..20)), 10);
    assert_eq!(s.drops(DropReason::RxSourceNotAllowed), 10);
    assert_eq!(s.stats().lost_in_data_packets - lost_before, 10);
    // An address inside client 3's iroute is client 3's to use.
    client_sends(&net.clients[2], IROUTE_HOST, 30..35);
    assert!(s.nx.wait_delivered(15, WAIT));
    finish(net);
}

/// Inner sources that change from packet to packet within one burst of one
/// client (the RX path remembers the last source it admitted for a peer):
/// exactly the spoofed packets are dropped, wherever they fall.
#[test]
fn spoofed_packets_between_admitted_ones_are_each_dropped() {
    let net = network();
    let s = &net.server;
    let c = &net.clients[1];
    let done = c.nx.completed().len();
    let mut admitted = Vec::new();
    for id in 0..120u32 {
        // Its own address, client 3's (spoofed) every third packet, and
        // client 1's twice in a row now and then.
        let src = match id % 9 {
            2 | 5 => client_vpn(3),
            7 | 8 => client_vpn(1),
            _ => client_vpn(2),
        };
        if src == client_vpn(2) {
            admitted.push(id);
        }
        c.nx.send(TxPacket::new(packet(src, SERVER_VPN, id, len_of(id))));
    }
    assert!(c.nx.wait_completed(done + 120, WAIT));
    assert!(s.nx.wait_delivered(admitted.len(), WAIT), "{} delivered", s.nx.delivered().len());
    wait_until("every spoofed packet counted", || {
        s.drops(DropReason::RxSourceNotAllowed) == 120 - admitted.len() as u64
    });
    let delivered: Vec<u32> = s.nx.delivered().iter().map(|d| id_of(&d.bytes)).collect();
    assert_eq!(delivered, admitted);
    finish(net);
}

#[test]
fn mp_del_peer_stops_that_client_and_notifies_userspace() {
    let net = network();
    let s = &net.server;
    s.ok(Ioctl::MpDelPeer, &le(2), 0);
    assert_eq!(notify_event(s), (CMD_DEL_PEER, 2, REASON_USERSPACE));
    // Client 2's data is no longer accepted, nor is anything routed to it.
    client_sends(&net.clients[1], client_vpn(2), 0..10);
    wait_until("client 2's packets refused", || s.drops(DropReason::RxUnknownPeer) == 10);
    let done = s.nx.completed().len();
    for id in 0..5 {
        s.nx.send(TxPacket::new(packet(SERVER_VPN, client_vpn(2), id, 100)));
    }
    assert!(s.nx.wait_completed(done + 5, WAIT));
    assert_eq!(s.drops(DropReason::TxUnroutable), 5);
    // The others carry on.
    client_sends(&net.clients[0], client_vpn(1), 100..110);
    assert!(s.nx.wait_delivered(10, WAIT));
    assert_eq!(s.nx.delivered().len(), 10);
    assert_eq!(s.ioctl(Ioctl::MpDelPeer, &le(2), 0), Io::Done(NtStatus::NOT_FOUND, vec![]));
    finish(net);
}

#[test]
fn a_silent_client_expires_and_the_server_is_notified() {
    let net = network();
    let s = &net.server;
    // --keepalive 10 60 on the server: MP_SET_PEER with the timeout doubled.
    s.ok(Ioctl::MpSetPeer, &mp_set_peer(1, 10, 120, -1), 0);
    // OpenVPN keeps a NOTIFY_EVENT pending.
    let Io::Parked(id) = s.ioctl(Ioctl::NotifyEvent, &[], 144) else { panic!("NOTIFY_EVENT should wait") };
    // Ten seconds on: the server pings client 1 (which takes it as traffic).
    let before = net.clients[0].stats().received_data_packets;
    s.os.advance(Duration::from_secs(11));
    wait_until("client 1 got the ping", || net.clients[0].stats().received_data_packets > before);
    // Two silent minutes: peer 1 is gone, and the parked request says so.
    s.os.advance(Duration::from_secs(121));
    let c = s.wait_completion(id);
    assert_eq!(c.status, NtStatus::SUCCESS);
    let (cmd, peer, reason, _) = parse_event(&c.output);
    assert_eq!((cmd, peer, reason), (CMD_DEL_PEER, 1, REASON_EXPIRED));
    assert_eq!(s.adapter.snapshot().mp_peers.len(), 2);
    // Peers without keepalive stay.
    client_sends(&net.clients[2], client_vpn(3), 0..5);
    assert!(s.nx.wait_delivered(5, WAIT));
    finish(net);
}

#[test]
fn control_packets_carry_the_peer_address_in_mp() {
    let net = network();
    let s = &net.server;
    let hello = [0x38, 1, 1, 1, 1];
    assert_eq!(net.clients[0].adapter.write(&hello), Ok(hello.len()));
    wait_until("the server queued it", || s.adapter.snapshot().control_queue.len() == 1);
    let (r, out) = s.read(2048);
    assert_eq!(out, ReadOutcome::Completed(NtStatus::SUCCESS));
    let got = s.completion(r).unwrap().output;
    assert_eq!(got, [prefix(client_addr(1)), hello.to_vec()].concat());
    // The server answers client 2 through the same prefix.
    let (r, _) = net.clients[1].read(2048);
    let answer = [0x40, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2];
    let write = [prefix(client_addr(2)), answer.to_vec()].concat();
    assert_eq!(s.adapter.write(&write), Ok(write.len()));
    assert_eq!(net.clients[1].wait_completion(r).output, answer);
    finish(net);
}
