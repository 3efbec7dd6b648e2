//! What an attacker on the network or a confused user-space program can do
//! to the driver, through the real adapters over the host models: replayed
//! and reflected packets, unknown peer ids, a key id whose slot is empty,
//! a sender at the end of its packet ids, spoofed floats, truncated and
//! garbage datagrams, and a flood of IOCTLs from many threads while traffic
//! flows. Each attack must be refused with the expected counter, leave the
//! device's state as it was, and leave legitimate traffic flowing; both
//! verifiers stay clean.

#![cfg(not(windows))]

mod adapter_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use adapter_common::traffic::{Balance, Ledger, drops_text, rx_drops};
use adapter_common::*;
use ovpn_dco::control::device::DeviceSnapshot;
use ovpn_dco::datapath::{DropReason, Peers};
use ovpn_dco::ntstatus::NtStatus;
use ovpn_dco::os::host::netadapter::{ModelConfig, Record, TxPacket};
use ovpn_dco::os::host::wsk::rng::XorShift;
use ovpn_dco::os::host::wsk::{LoopbackConfig, LoopbackHub};
use ovpn_dco::proto::PeerId;
use ovpn_dco::proto::packet_id::PACKET_ID_TX_LIMIT;
use ovpn_dco::uapi::Ioctl;

/// P_DATA_V2 (opcode 9) in the first byte's top five bits.
const P_DATA_V2: u8 = 9 << 3;

/// The server and two clients on a clean network, every delivery checked
/// by the ledger; the hub keeps what crosses it.
struct Lab {
    net: MpNet,
    ledger: Arc<Ledger>,
}

impl Lab {
    fn new() -> Self {
        let config = ModelConfig { record: Record::Counts, ..ModelConfig::default() };
        let net = MpNet::up(LoopbackHub::new(LoopbackConfig::default()), config, 2, true);
        let ledger = Ledger::new();
        ledger.attach(&net.server, 0);
        for (i, c) in net.clients.iter().enumerate() {
            ledger.attach(c, i as u8 + 1);
        }
        Lab { net, ledger }
    }

    fn node(&self, i: u8) -> &Node {
        if i == 0 { &self.net.server } else { &self.net.clients[usize::from(i) - 1] }
    }

    /// `n` packets from `src` to `dst` (one of them the server), sizes and
    /// IP versions mixed; waits until they are sent.
    fn send(&self, src: u8, dst: u8, n: usize) {
        let node = self.node(src);
        for i in 0..n {
            let v6 = i % 2 == 1;
            let len = [21 + 20 * usize::from(v6), 1500, 200 + i * 7 % 1200][i % 3];
            node.nx.send(TxPacket::new(self.ledger.make(v6, src, dst, len)));
        }
        let posted = self.ledger.posted(src) as usize;
        assert!(node.nx.wait_completed(posted, WAIT), "node {src}: {} of {posted} sent", node.nx.completed_count());
    }

    /// [`Lab::send`], then waits until all `n` were delivered.
    #[track_caller]
    fn deliver(&self, src: u8, dst: u8, n: usize) {
        let want = self.ledger.received(dst) + n as u64;
        self.send(src, dst, n);
        wait_until("packets delivered", || self.ledger.received(dst) >= want);
        assert_eq!(self.ledger.received(dst), want, "node {dst}: {}", drops_text(self.node(dst)));
    }

    /// Legitimate traffic both ways between the server and each client,
    /// every packet delivered.
    #[track_caller]
    fn traffic_flows(&self, n: usize) {
        let before: Vec<u64> = (0..3).map(|i| self.ledger.received(i)).collect();
        for k in 1..=2 {
            self.send(k, 0, n);
            self.send(0, k, n);
        }
        let want = [before[0] + 2 * n as u64, before[1] + n as u64, before[2] + n as u64];
        wait_until("legitimate traffic delivered", || (0..3).all(|i| self.ledger.received(i) >= want[i as usize]));
        for i in 0..3u8 {
            assert_eq!(self.ledger.received(i), want[usize::from(i)], "node {i}: {}", drops_text(self.node(i)));
        }
        self.ledger.assert_clean("legitimate traffic");
    }

    /// Datagrams captured from `from` to `to`.
    fn captured(&self, from: SocketAddr, to: SocketAddr) -> Vec<Vec<u8>> {
        self.net.hub.captured().into_iter().filter(|c| c.from == from && c.to == to).map(|c| c.bytes).collect()
    }

    /// Client 1's data packets to the server, captured from `n` sent.
    fn capture_client_packets(&self, n: usize) -> Vec<Vec<u8>> {
        self.net.hub.capture(n);
        self.deliver(1, 0, n);
        let got = self.captured(client_addr(1), server_addr());
        assert_eq!(got.len(), n);
        got
    }

    /// `n` data packets captured each way between client 1 and the server:
    /// (client → server, server → client).
    fn capture_both_ways(&self, n: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let to_server = self.capture_client_packets(n);
        self.net.hub.capture(n);
        self.deliver(0, 1, n);
        let to_client = self.captured(server_addr(), client_addr(1));
        assert_eq!(to_client.len(), n);
        (to_server, to_client)
    }

    fn finish(self) {
        self.ledger.assert_clean("the end");
        self.net.finish();
    }
}

/// What the device must keep through an attack: mode, sockets, peers
/// (ids, endpoints, VPN addresses, keepalive, MSS, keys), routes and
/// parked requests; not counters, times or the control queue.
fn state(s: &DeviceSnapshot) -> String {
    let peer = |p: &ovpn_dco::control::device::PeerSnapshot| {
        format!("{:?} {:?} {:?} {:?} {:?} {:?} {:?}", p.id, p.endpoint, p.vpn_v4, p.vpn_v6, p.keepalive, p.mss, p.keys)
    };
    format!(
        "{:?} {} {:?} {:?} [{}] {:?} {:?} {:?} {:?} {:?}",
        s.mode,
        s.link_up,
        s.p2p.as_ref().map(|(socket, p)| (socket, peer(p))),
        s.listener,
        s.mp_peers.iter().map(peer).collect::<Vec<_>>().join("; "),
        s.by_remote,
        s.routes,
        s.pending_open,
        s.parked_reads,
        s.parked_notify,
    )
}

fn states(lab: &Lab) -> Vec<String> {
    (0..3).map(|i| state(&lab.node(i).adapter.snapshot())).collect()
}

/// Injects `datagrams` from `from` to `to` and waits until `node`
/// accounted for all of them (a drop or the control plane).
fn inject_all(lab: &Lab, node: u8, from: SocketAddr, to: SocketAddr, datagrams: &[Vec<u8>]) {
    let n = lab.node(node);
    let accounted = |n: &Node| rx_drops(n) + n.stats().received_control_packets as u64;
    let target = accounted(n) + datagrams.len() as u64;
    let refused = lab.net.hub.stats().refused;
    for d in datagrams {
        lab.net.hub.inject(from, to, d);
    }
    wait_until("the injected datagrams accounted for", || {
        accounted(n) + lab.net.hub.stats().refused - refused >= target
    });
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(accounted(n) + lab.net.hub.stats().refused - refused, target, "{}", drops_text(n));
}

/// Waits for `node`'s `reason` counter to move by `n` from `before`, and
/// checks it moved by exactly that.
#[track_caller]
fn expect_drops(node: &Node, reason: DropReason, before: u64, n: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    while node.drops(reason) < before + n {
        assert!(std::time::Instant::now() < deadline, "{reason:?}: {before} + {n} expected; {}", drops_text(node));
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(node.drops(reason), before + n, "{reason:?}: {}", drops_text(node));
}

fn with_packet_id(datagram: &[u8], id: u32) -> Vec<u8> {
    let mut d = datagram.to_vec();
    d[4..8].copy_from_slice(&id.to_be_bytes());
    d
}

#[test]
fn captured_packets_replayed_are_refused_and_never_delivered() {
    let lab = Lab::new();
    lab.traffic_flows(20);
    let (s, c1) = (lab.node(0), lab.node(1));
    let (to_server, to_client) = lab.capture_both_ways(40);
    let before = states(&lab);
    let received = (lab.ledger.received(0), lab.ledger.received(1));
    let (lost_s, lost_c) = (s.stats().lost_in_data_packets, c1.stats().lost_in_data_packets);
    let (replay_s, replay_c) = (s.drops(DropReason::RxReplay), c1.drops(DropReason::RxReplay));

    // Each captured datagram again, in order and then in reverse.
    let again: Vec<Vec<u8>> = to_server.iter().chain(to_server.iter().rev()).cloned().collect();
    inject_all(&lab, 0, client_addr(1), server_addr(), &again);
    expect_drops(s, DropReason::RxReplay, replay_s, 80);
    let again: Vec<Vec<u8>> = to_client.iter().chain(to_client.iter().rev()).cloned().collect();
    inject_all(&lab, 1, server_addr(), client_addr(1), &again);
    expect_drops(c1, DropReason::RxReplay, replay_c, 80);

    assert_eq!((lab.ledger.received(0), lab.ledger.received(1)), received, "a replay was delivered");
    assert_eq!(s.stats().lost_in_data_packets, lost_s + 80);
    assert_eq!(c1.stats().lost_in_data_packets, lost_c + 80);
    assert_eq!(states(&lab), before);
    lab.traffic_flows(20);
    lab.finish();
}

#[test]
fn a_peers_own_packets_reflected_back_to_it_fail_authentication() {
    let lab = Lab::new();
    let (s, c1) = (lab.node(0), lab.node(1));
    let received = |lab: &Lab| (lab.ledger.received(0), lab.ledger.received(1));
    // A reflected packet's id must be new to the window it meets, or the
    // replay check (before the tag) refuses it first: the server runs
    // ahead of client 1, then client 1 ahead of the server.
    let before = states(&lab);
    lab.deliver(0, 1, 70);
    lab.net.hub.capture(30);
    lab.deliver(0, 1, 30);
    let from_server = lab.captured(server_addr(), client_addr(1));
    let delivered = received(&lab);
    // The server's packets to client 1 come back to the server as if from
    // client 1 (peer id 1, its key id): they were sealed with the server's
    // send key, not client 1's.
    let auth = s.drops(DropReason::RxAuthFailed);
    inject_all(&lab, 0, client_addr(1), server_addr(), &from_server);
    expect_drops(s, DropReason::RxAuthFailed, auth, 30);
    assert_eq!(received(&lab), delivered, "a reflected packet was delivered");

    // And client 1's own packets back to client 1.
    lab.deliver(1, 0, 170);
    let from_client = lab.capture_client_packets(30);
    let delivered = received(&lab);
    let auth = c1.drops(DropReason::RxAuthFailed);
    inject_all(&lab, 1, server_addr(), client_addr(1), &from_client);
    expect_drops(c1, DropReason::RxAuthFailed, auth, 30);

    assert_eq!(received(&lab), delivered, "a reflected packet was delivered");
    assert_eq!(states(&lab), before, "nothing moved, nothing floated");
    lab.traffic_flows(20);
    lab.finish();
}

#[test]
fn data_for_unknown_peer_ids_is_dropped_by_the_server() {
    let lab = Lab::new();
    let s = lab.node(0);
    let valid = lab.capture_client_packets(8);
    let before = states(&lab);
    let (unknown, lost) = (s.drops(DropReason::RxUnknownPeer), s.stats().lost_in_data_packets);
    let received = lab.ledger.received(0);
    let mut forged = Vec::new();
    for (i, peer) in [0u32, 3, 4, 999, 0x7F_FFFF, 0xFF_FFFF].into_iter().enumerate() {
        let mut d = valid[i % valid.len()].clone();
        d[1..4].copy_from_slice(&peer.to_be_bytes()[1..]);
        forged.push(d);
    }
    // From client 1's address, and from addresses nobody uses.
    inject_all(&lab, 0, client_addr(1), server_addr(), &forged);
    inject_all(&lab, 0, SocketAddr::from(([203, 0, 113, 9], 999)), server_addr(), &forged);
    expect_drops(s, DropReason::RxUnknownPeer, unknown, 12);
    assert_eq!(s.stats().lost_in_data_packets, lost + 12);
    assert_eq!(lab.ledger.received(0), received);
    assert_eq!(states(&lab), before);
    lab.traffic_flows(10);
    lab.finish();
}

#[test]
fn a_data_packet_naming_an_empty_key_slot_is_dropped() {
    let lab = Lab::new();
    let (s, c1) = (lab.node(0), lab.node(1));
    let (valid, to_client) = lab.capture_both_ways(10);
    let before = states(&lab);
    let received = (lab.ledger.received(0), lab.ledger.received(1));
    let (ks, kc) = (s.drops(DropReason::RxUnknownKey), c1.drops(DropReason::RxUnknownKey));
    // Peer 1 holds key id 1 in its primary slot and nothing in the
    // secondary: every other key id names an empty slot.
    let rekey = |d: &Vec<u8>, id: u8| {
        let mut d = d.clone();
        d[0] = P_DATA_V2 | id;
        d
    };
    let forged: Vec<Vec<u8>> = (0..10).map(|i| rekey(&valid[i], [0, 2, 3, 4, 5, 6, 7][i % 7])).collect();
    inject_all(&lab, 0, client_addr(1), server_addr(), &forged);
    expect_drops(s, DropReason::RxUnknownKey, ks, 10);
    let forged: Vec<Vec<u8>> = (0..10).map(|i| rekey(&to_client[i], [0, 2, 3, 4, 5, 6, 7][i % 7])).collect();
    inject_all(&lab, 1, server_addr(), client_addr(1), &forged);
    expect_drops(c1, DropReason::RxUnknownKey, kc, 10);
    assert_eq!((lab.ledger.received(0), lab.ledger.received(1)), received);
    assert_eq!(states(&lab), before);
    lab.traffic_flows(10);
    lab.finish();
}

#[test]
fn a_sender_at_the_end_of_its_packet_ids_refuses_to_send_instead_of_wrapping() {
    let lab = Lab::new();
    let (s, c1) = (lab.node(0), lab.node(1));
    let peer = c1.adapter.datapath().peers().rx_peer(PeerId::new(1).unwrap()).unwrap();
    assert!(peer.tx.lock().set_next_packet_id_for_test(PACKET_ID_TX_LIMIT - 3));
    let (encrypt, lost_out, received) =
        (c1.drops(DropReason::TxEncrypt), c1.stats().lost_out_data_packets, lab.ledger.received(0));
    lab.net.hub.capture(100);
    lab.send(1, 0, 10);
    // The last three ids go out; then the key is used up and every packet
    // is refused (counted), none sent with a wrapped id.
    wait_until("three packets delivered", || lab.ledger.received(0) == received + 3);
    expect_drops(c1, DropReason::TxEncrypt, encrypt, 7);
    assert_eq!(c1.stats().lost_out_data_packets, lost_out + 7);
    let ids: Vec<u32> = lab
        .captured(client_addr(1), server_addr())
        .iter()
        .map(|d| u32::from_be_bytes(d[4..8].try_into().unwrap()))
        .collect();
    assert_eq!(ids, [PACKET_ID_TX_LIMIT - 3, PACKET_ID_TX_LIMIT - 2, PACKET_ID_TX_LIMIT - 1]);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(lab.ledger.received(0), received + 3);
    lab.send(1, 0, 5);
    expect_drops(c1, DropReason::TxEncrypt, encrypt, 12);
    // The other direction and the other client are not affected.
    lab.send(0, 1, 10);
    lab.send(2, 0, 10);
    wait_until("the rest delivered", || lab.ledger.received(1) >= 10 && lab.ledger.received(0) == received + 13);

    // OpenVPN renegotiates: new key in the secondary slot, swap on both
    // ends; ids start again from 1 under the new key.
    s.new_key_gen(Side::A, SECONDARY, 2, 1, 7);
    c1.new_key_gen(Side::B, SECONDARY, 2, 1, 7);
    s.ok(Ioctl::MpSwapKeys, &le(1), 0);
    c1.ok(Ioctl::SwapKeys, &[], 0);
    lab.traffic_flows(10);
    assert_eq!(s.drops(DropReason::RxReplay), 0);
    lab.finish();
}

#[test]
fn only_an_authenticated_packet_from_a_new_address_floats_an_mp_peer() {
    let lab = Lab::new();
    let s = lab.node(0);
    let valid = lab.capture_client_packets(10);
    let moved: SocketAddr = "10.0.9.9:4000".parse().unwrap();
    // OpenVPN keeps a NOTIFY_EVENT pending.
    let Io::Parked(notify) = s.ioctl(Ioctl::NotifyEvent, &[], 144) else { panic!("NOTIFY_EVENT should wait") };
    let before = states(&lab);
    let (auth, replay) = (s.drops(DropReason::RxAuthFailed), s.drops(DropReason::RxReplay));

    // Spoofed: peer 1's header with fresh packet ids but no valid tag.
    let forged: Vec<Vec<u8>> = valid.iter().enumerate().map(|(i, d)| with_packet_id(d, 1000 + i as u32)).collect();
    inject_all(&lab, 0, moved, server_addr(), &forged);
    expect_drops(s, DropReason::RxAuthFailed, auth, 10);
    // Replayed: valid packets, already seen.
    inject_all(&lab, 0, moved, server_addr(), &valid);
    expect_drops(s, DropReason::RxReplay, replay, 10);
    assert_eq!(states(&lab), before, "peer 1 did not float");
    assert!(s.completion(notify).is_none(), "no FLOAT_PEER for an unauthenticated packet");
    // The server still answers client 1 where it was.
    lab.traffic_flows(5);

    // A NAT rebinding: client 1's real packets now come from `moved`.
    lab.net.hub.nat(client_addr(1), moved);
    let received = lab.ledger.received(0);
    lab.send(1, 0, 5);
    wait_until("client 1's packets from the new address delivered", || lab.ledger.received(0) == received + 5);
    let c = s.wait_completion(notify);
    assert_eq!(c.status, NtStatus::SUCCESS);
    let (cmd, peer, _, address) = parse_event(&c.output);
    assert_eq!((cmd, peer), (CMD_FLOAT_PEER, 1));
    // SOCKADDR_IN: family AF_INET (2), port and address in network order.
    assert_eq!(&address[..8], &[2, 0, 0x0F, 0xA0, 10, 0, 9, 9]);
    let peer1 = s.adapter.snapshot().mp_peers.into_iter().find(|p| p.id.get() == 1).unwrap();
    assert_eq!(peer1.endpoint.remote, moved);
    // Replies now go to the new address, which reaches client 1.
    lab.traffic_flows(10);
    lab.finish();
}

#[test]
fn truncated_and_garbage_datagrams_of_every_length_up_to_64_are_refused() {
    let lab = Lab::new();
    let (s, c1) = (lab.node(0), lab.node(1));
    let (valid, to_client) = lab.capture_both_ways(4);
    let before = states(&lab);
    let received = (lab.ledger.received(0), lab.ledger.received(1));
    let mut rng = XorShift::new(64);
    let mut junk = |template: &[u8]| {
        let mut set = Vec::new();
        for len in 0..64usize {
            // Random bytes; the start of a valid packet; a valid data
            // header in front of random bytes.
            set.push((0..len).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>());
            set.push(template[..len.min(template.len())].to_vec());
            let mut d: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let head = len.min(8);
            d[..head].copy_from_slice(&template[..head]);
            set.push(d);
        }
        set
    };
    let to_server = junk(&valid[3]);
    let to_client = junk(&to_client[3]);
    inject_all(&lab, 0, client_addr(1), server_addr(), &to_server);
    inject_all(&lab, 1, server_addr(), client_addr(1), &to_client);
    assert_eq!((lab.ledger.received(0), lab.ledger.received(1)), received, "garbage delivered");
    assert_eq!(states(&lab), before);
    assert!(s.drops(DropReason::RxMalformed) > 0 && c1.drops(DropReason::RxMalformed) > 0);
    lab.traffic_flows(20);
    lab.finish();
}

/// IOCTLs that tear a session down or reroute it: a flood of random
/// requests leaves them out (their refusal of bad input is tested in
/// tests/control_bad_input.rs).
fn disruptive(code: u32) -> bool {
    matches!(
        Ioctl::from_code(code),
        Some(
            Ioctl::NewPeer
                | Ioctl::DelPeer
                | Ioctl::StartVpn
                | Ioctl::SetMode
                | Ioctl::MpStartVpn
                | Ioctl::MpNewPeer
                | Ioctl::MpDelPeer
                | Ioctl::MpAddIroute
                | Ioctl::MpDelIroute
        )
    )
}

/// The flood's key for peer 2: key id 5, generation 1.
const FLOOD_KEY: u8 = 5;

/// One flooding thread: `count` IOCTLs on `node`, valid and invalid. With
/// `keys`, key IOCTLs for peer 2 (its flood key into the secondary slot,
/// swaps); GET_STATS must never go backwards.
fn flood(node: Handle, server: bool, keys: bool, seed: u64, count: usize) {
    let mut rng = XorShift::new(seed);
    let mut last_received = 0;
    let key_ioctl = |c: u32| {
        matches!(Ioctl::from_code(c), Some(Ioctl::NewKey | Ioctl::NewKeyV2 | Ioctl::SwapKeys | Ioctl::MpSwapKeys))
    };
    let all: Vec<u32> =
        Ioctl::ALL.iter().map(|i| i.code()).filter(|c| !disruptive(*c) && (keys || !key_ioctl(*c))).collect();
    for _ in 0..count {
        let pick = match rng.below(10) {
            4 | 5 if !keys => 0,
            p => p,
        };
        let (code, input, out_len) = match pick {
            0 | 1 => (Ioctl::GetStats.code(), Vec::new(), [64, 63, 0, 200][rng.below(4) as usize]),
            2 => (Ioctl::GetPeerStats.code(), le([-1, 1, 2, 77][rng.below(4) as usize]).to_vec(), rng.between(0, 400)),
            3 => {
                let set = if server { mp_set_peer(1 + rng.below(3) as i32, 0, 0, -1) } else { set_peer(0, 0, -1) };
                (if server { Ioctl::MpSetPeer } else { Ioctl::SetPeer }.code(), set, 0)
            }
            4 => {
                let side = if server { Side::A } else { Side::B };
                let data = crypto_data_with(side, SECONDARY, FLOOD_KEY, 2, generation_material(FLOOD_KEY, 1));
                (Ioctl::NewKey.code(), data, 0)
            }
            5 => {
                if server {
                    (Ioctl::MpSwapKeys.code(), le(2).to_vec(), 0)
                } else {
                    (Ioctl::SwapKeys.code(), Vec::new(), 0)
                }
            }
            6 => (rng.next_u64() as u32, Vec::new(), rng.between(0, 64)),
            _ => {
                // A code the driver knows, with random bytes of random
                // length in and a random output buffer.
                let code = all[rng.below(all.len() as u64) as usize];
                let input = (0..rng.between(0, 160)).map(|_| rng.next_u64() as u8).collect();
                (code, input, rng.between(0, 300))
            }
        };
        let req = node.request(out_len);
        let mut out = vec![0xCC; out_len];
        let outcome = node.adapter.ioctl(code, &input, &mut out, req);
        if let ovpn_dco::control::device::Outcome::Complete { status, information, .. } = outcome {
            assert!(information <= out_len, "{code:#x}: Information {information} past {out_len}");
            if code == Ioctl::GetStats.code() && status == NtStatus::SUCCESS {
                let now = i32::from_le_bytes(out[16..20].try_into().unwrap());
                assert!(now >= last_received, "ReceivedDataPackets went back from {last_received} to {now}");
                last_received = now;
            }
        }
    }
}

/// IOCTLs per flooding thread.
const FLOOD_IOCTLS: usize = 4000;

#[test]
fn an_ioctl_flood_from_many_threads_while_traffic_flows_breaks_nothing() {
    let lab = Lab::new();
    // Peer 2's keys: its flood key in the secondary slot on both ends, so
    // that the flood's NEW_KEYs and swaps, in any order, leave each end
    // with keys the other knows, or one it does not (dropped, counted).
    let (s, c2) = (lab.node(0), lab.node(2));
    s.new_key_gen(Side::A, SECONDARY, FLOOD_KEY, 2, 1);
    c2.new_key_gen(Side::B, SECONDARY, FLOOD_KEY, 2, 1);
    let nodes: Vec<&Node> = (0..3).map(|i| lab.node(i)).collect();
    let balance = Balance::start(&nodes, lab.net.hub.stats());
    let posted_before: u64 = (0..3).map(|i| lab.ledger.posted(i)).sum();
    let received_before: Vec<u64> = (0..3).map(|i| lab.ledger.received(i)).collect();

    let handles: Vec<Handle> = nodes.iter().map(|n| n.handle()).collect();
    std::thread::scope(|scope| {
        let flooders = [
            scope.spawn(|| flood(handles[0].clone(), true, true, 1, FLOOD_IOCTLS)),
            scope.spawn(|| flood(handles[0].clone(), true, true, 2, FLOOD_IOCTLS)),
            scope.spawn(|| flood(handles[2].clone(), false, true, 3, FLOOD_IOCTLS)),
            scope.spawn(|| flood(handles[1].clone(), false, false, 4, FLOOD_IOCTLS)),
        ];
        // Traffic on every path while the flood runs.
        while flooders.iter().any(|f| !f.is_finished()) {
            for k in 1..=2 {
                lab.send(k, 0, 8);
                lab.send(0, k, 8);
            }
        }
        for f in flooders {
            f.join().unwrap();
        }
    });
    let posted: u64 = (0..3).map(|i| lab.ledger.posted(i)).sum::<u64>() - posted_before;
    // Let the network settle, then check the books.
    wait_until("the network is quiet", || {
        let (arrived, accounted) = balance.arrivals(&nodes, lab.net.hub.stats());
        arrived == accounted
    });
    balance.check(&nodes, lab.net.hub.stats(), posted, "IOCTL flood");
    lab.ledger.assert_clean("IOCTL flood");
    // Client 1's path shares the server with the flood but not its keys:
    // nothing of it was lost either way.
    for i in 0..3 {
        assert!(lab.ledger.received(i) > received_before[usize::from(i)], "node {i}: traffic stopped");
    }
    assert_eq!(rx_drops(lab.node(1)), 0, "client 1: {}", drops_text(lab.node(1)));
    assert_eq!(lab.node(1).stats().lost_out_data_packets, 0, "client 1: {}", drops_text(lab.node(1)));
    for n in &nodes {
        assert!(n.nx.verifier().violations().is_empty(), "{:?}", n.nx.verifier().violations());
    }
    lab.net.wv.assert_clean();

    // A clean renegotiation for peer 2 afterwards, and all traffic flows.
    s.new_key_gen(Side::A, SECONDARY, 3, 2, 2);
    c2.new_key_gen(Side::B, SECONDARY, 3, 2, 2);
    s.ok(Ioctl::MpSwapKeys, &le(2), 0);
    c2.ok(Ioctl::SwapKeys, &[], 0);
    lab.traffic_flows(20);
    lab.finish();
}
