//! Two adapters in P2P mode, each configured through IOCTLs as OpenVPN
//! configures ovpn-dco-win, talking over the WSK model's in-memory loopback:
//! data both ways with every byte checked, the control channel through
//! WriteFile/ReadFile, keepalive in virtual time, renegotiation mid-stream,
//! reconnecting on the same handle, and handle close with buffers still
//! held by the OS. Both verifiers must stay clean.

#![cfg(not(windows))]

mod adapter_common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use adapter_common::*;
use ovpn_dco::control::device::ReadOutcome;
use ovpn_dco::datapath::{CloseProgress, DropReason};
use ovpn_dco::ntstatus::NtStatus;
use ovpn_dco::os::host::netadapter::{Hold, ModelConfig, TxPacket};
use ovpn_dco::os::host::wsk::{LoopbackConfig, LoopbackHub, Network, WskConfig, WskVerifier};
use ovpn_dco::uapi::Ioctl;

fn addrs() -> (SocketAddr, SocketAddr) {
    (sa("10.0.0.1:1194"), sa("10.0.0.2:1194"))
}

/// Two adapters up over `hub`, keepalive as given.
fn pair_on(hub: &LoopbackHub, config: ModelConfig, keepalive: (i32, i32)) -> (Node, Node, Arc<WskVerifier>) {
    let (a, b) = addrs();
    let wv = WskVerifier::new();
    let na = Node::new(Network::Loopback(hub.clone()), &wv, config.clone(), WskConfig::default());
    let nb = Node::new(Network::Loopback(hub.clone()), &wv, config, WskConfig::default());
    na.p2p_up(a, b, UDP, Side::A, keepalive);
    nb.p2p_up(b, a, UDP, Side::B, keepalive);
    (na, nb, wv)
}

fn pair(config: ModelConfig) -> (Node, Node, Arc<WskVerifier>, LoopbackHub) {
    let hub = LoopbackHub::new(LoopbackConfig::default());
    let (na, nb, wv) = pair_on(&hub, config, (0, 0));
    (na, nb, wv, hub)
}

fn finish(na: Node, nb: Node, wv: &WskVerifier) {
    na.finish();
    nb.finish();
    wv.assert_clean();
}

const AB: (std::net::Ipv4Addr, std::net::Ipv4Addr) = (A_VPN, B_VPN);
const BA: (std::net::Ipv4Addr, std::net::Ipv4Addr) = (B_VPN, A_VPN);

#[test]
fn two_adapters_configured_like_openvpn_exchange_data_and_control_packets() {
    let (na, nb, wv, _hub) = pair(ModelConfig::default());
    assert_eq!(exchange(&na, &nb, AB, 0..300, true), 300);
    assert_eq!(exchange(&nb, &na, BA, 1000..1300, true), 300);
    for n in [&na, &nb] {
        assert_eq!(n.rx_copied(), 0, "received data is never copied");
        assert_eq!(n.adapter.datapath().drops().total(), 0);
    }

    // The control channel: a read waiting on B completes with what A
    // writes; B's write waits queued on A until A reads.
    let (r, out) = nb.read(2048);
    assert_eq!(out, ReadOutcome::Parked);
    let hard_reset = [0x38, 1, 2, 3, 4, 5, 6, 7];
    assert_eq!(na.adapter.write(&hard_reset), Ok(hard_reset.len()));
    assert_eq!(nb.wait_completion(r).output, hard_reset);
    let answer = [0x40, 9, 8, 7];
    assert_eq!(nb.adapter.write(&answer), Ok(answer.len()));
    wait_until("A's control packet queued", || na.adapter.snapshot().control_queue.len() == 1);
    let (r, out) = na.read(2048);
    assert_eq!(out, ReadOutcome::Completed(NtStatus::SUCCESS));
    assert_eq!(na.completion(r).unwrap().output, answer);

    // GET_STATS counts what went through, in both layers.
    let s = na.stats();
    assert_eq!((s.sent_data_packets, s.received_data_packets), (300, 300));
    assert_eq!((s.sent_control_packets, s.received_control_packets), (1, 1));
    let tun: usize = (0..300).map(len_of).sum();
    assert_eq!(s.tun_bytes_sent as usize, tun);
    assert!(s.transport_bytes_sent as usize > tun);
    finish(na, nb, &wv);
}

#[test]
fn keepalive_pings_flow_in_virtual_time_and_a_silent_peer_times_out() {
    let hub = LoopbackHub::new(LoopbackConfig::default());
    let (na, nb, wv) = pair_on(&hub, ModelConfig::default(), (10, 60));
    let before = nb.stats().received_data_packets;
    // Ten idle seconds on A: its timer sends a ping, which B takes as
    // traffic and does not deliver.
    na.os.advance(Duration::from_secs(11));
    wait_until("B received A's ping", || nb.stats().received_data_packets > before);
    assert_eq!(nb.nx.delivered().len(), 0, "a keepalive is consumed, not delivered");
    assert!(na.stats().sent_data_packets >= 1);

    // Sixty silent seconds on B: the pending read completes with
    // STATUS_CONNECTION_DISCONNECTED (OpenVPN's ping-restart).
    let (r, out) = nb.read(2048);
    assert_eq!(out, ReadOutcome::Parked);
    nb.os.advance(Duration::from_secs(61));
    assert_eq!(nb.wait_completion(r).status, NtStatus::CONNECTION_DISCONNECTED);
    // The peer stays: data still flows.
    assert_eq!(exchange(&na, &nb, AB, 0..20, true), 20);
    finish(na, nb, &wv);
}

#[test]
fn renegotiation_mid_stream_loses_nothing() {
    let (na, nb, wv, _hub) = pair(ModelConfig::default());
    let before = nb.nx.delivered().len();
    // A keeps sending while both ends renegotiate: the first 300 packets
    // are still in the TX ring and on the wire when the keys change.
    for id in 0..600u32 {
        na.nx.send(TxPacket::new(packet(A_VPN, B_VPN, id, len_of(id))));
        if id == 300 {
            // TLS renegotiation done: NEW_KEY into the secondary slot on
            // both ends, then SWAP_KEYS on both (OpenVPN's order).
            na.new_key(Side::A, SECONDARY, 2, 1);
            nb.new_key(Side::B, SECONDARY, 2, 1);
            nb.ok(Ioctl::SwapKeys, &[], 0);
            na.ok(Ioctl::SwapKeys, &[], 0);
        }
    }
    assert!(nb.nx.wait_delivered(before + 600, WAIT), "drops {:?}", nb.adapter.datapath().drops());
    assert_eq!(check_delivered(&nb, before, A_VPN, B_VPN, &(0..600)), 600);
    let keys = nb.adapter.snapshot().p2p.unwrap().1.keys;
    assert_eq!(keys.map(|k| k.map(|k| k.key_id.get())), [Some(2), Some(1)], "new key primary, old secondary");
    // After the swap both directions use key 2.
    assert_eq!(exchange(&nb, &na, BA, 1000..1100, true), 100);
    finish(na, nb, &wv);
}

#[test]
fn del_peer_and_new_peer_on_the_same_handle_reconnect_while_the_os_holds_buffers() {
    let config = ModelConfig { hold: Hold::For(Duration::from_millis(40)), ..Default::default() };
    let (na, nb, wv, _hub) = pair(config);
    let (a, b) = addrs();
    assert_eq!(exchange(&na, &nb, AB, 0..100, true), 100);
    assert_eq!(exchange(&nb, &na, BA, 100..200, true), 100);
    // A read waits on each side: DEL_PEER cancels it.
    let (ra, _) = na.read(2048);
    na.ok(Ioctl::DelPeer, &[], 0);
    nb.ok(Ioctl::DelPeer, &[], 0);
    assert_eq!(na.wait_completion(ra).status, NtStatus::CANCELLED);
    assert!(na.os.link_up(), "DEL_PEER leaves the link state alone");
    // The old sockets may still wait for their buffers; NEW_PEER on the same
    // address waits for them, then completes.
    na.p2p_up(a, b, UDP, Side::A, (0, 0));
    nb.p2p_up(b, a, UDP, Side::B, (0, 0));
    assert_eq!(exchange(&na, &nb, AB, 1000..1200, true), 200);
    assert_eq!(exchange(&nb, &na, BA, 2000..2200, true), 200);
    let s = na.stats();
    assert_eq!((s.sent_data_packets, s.received_data_packets), (200, 200), "NEW_PEER started the counters over");
    finish(na, nb, &wv);
}

#[test]
fn handle_close_with_buffers_held_upstream_waits_for_them_and_leaks_nothing() {
    let config = ModelConfig { hold: Hold::UntilReleased, ..Default::default() };
    let (na, nb, wv, _hub) = pair(config);
    // Fewer than the model's RX MDL pool: all of them fit while held.
    assert_eq!(exchange(&na, &nb, AB, 0..16, true), 16);
    let (r, _) = nb.read(2048);
    let held = nb.adapter.datapath().occupancy();
    assert!(held.rx_slots > 0 && held.retained_lists > 0, "the OS holds B's buffers: {held:?}");
    // Handle close on B while its RX buffers are up the stack: the read is
    // cancelled, the link goes down, and the socket waits.
    let progress = nb.adapter.cleanup();
    assert!(matches!(progress, CloseProgress::Waiting { .. }), "{progress:?}");
    assert_eq!(nb.wait_completion(r).status, NtStatus::CANCELLED);
    assert!(!nb.os.link_up());
    // Nothing more is received meanwhile.
    for id in 100..110 {
        na.nx.send(TxPacket::new(packet(A_VPN, B_VPN, id, 200)));
    }
    assert!(na.nx.wait_completed(26, WAIT));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(nb.nx.delivered().len(), 16);
    // The OS gives the buffers back; the timer closes the socket.
    nb.nx.release_held();
    wait_until("B's socket closed", || !nb.adapter.datapath().has_transport());
    na.nx.release_held();
    finish(na, nb, &wv);
}

#[test]
fn loss_duplication_and_reordering_with_a_key_swap_lose_only_what_the_network_lost() {
    let net = LoopbackConfig { loss_ppm: 20_000, duplicate_ppm: 30_000, reorder_ppm: 50_000, ..Default::default() };
    let hub = LoopbackHub::new(net);
    let (na, nb, wv) = pair_on(&hub, ModelConfig::default(), (0, 0));
    let sent = 800u32;
    for id in 0..sent {
        na.nx.send(TxPacket::new(packet(A_VPN, B_VPN, id, len_of(id))).split(1 + (id % 2) as u16));
        if id % 25 == 24 {
            // At a pace the receiving OS keeps up with, so that received data
            // stays within the retention budget and is never copied (past it
            // the data path copies by design, counted).
            assert!(na.nx.wait_completed(id as usize + 1, WAIT));
            for _ in 0..500 {
                if nb.adapter.datapath().occupancy().retained_lists == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if id == sent / 2 {
            na.new_key(Side::A, SECONDARY, 2, 1);
            nb.new_key(Side::B, SECONDARY, 2, 1);
            nb.ok(Ioctl::SwapKeys, &[], 0);
            na.ok(Ioctl::SwapKeys, &[], 0);
        }
    }
    assert!(na.nx.wait_completed(sent as usize, WAIT));
    for _ in 0..2000 {
        if nb.nx.delivered().len() + hub.stats().lost as usize >= sent as usize {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    let got = check_delivered(&nb, 0, A_VPN, B_VPN, &(0..sent));
    let lost = hub.stats().lost as usize;
    assert_eq!(got + lost, sent as usize, "delivered {got} + lost {lost}; drops {:?}", nb.adapter.datapath().drops());
    assert!(hub.stats().duplicated > 0 && hub.stats().reordered > 0);
    assert_eq!(nb.drops(DropReason::RxReplay), hub.stats().duplicated, "every duplicate refused, nothing else");
    assert_eq!(nb.rx_copied(), 0, "RX data copies");
    let delivered: HashSet<u32> = nb.nx.delivered().iter().map(|d| id_of(&d.bytes)).collect();
    assert!(delivered.iter().any(|id| *id > sent / 2 + 50), "traffic after the swap arrives");
    finish(na, nb, &wv);
}
