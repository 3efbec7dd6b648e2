//! The device driven step by step as OpenVPN 2.6, 2.7 (client and server)
//! and OpenVPN 3 drive ovpn-dco-win (docs/openvpn-ioctl-sequences.md), and
//! the control channel's edge cases.

mod control_common;

use control_common::*;
use ovpn_dco::control::actions::{Action, LinkState, TransportId};
use ovpn_dco::control::ctl_queue::{CONTROL_PACKET_MAX, CONTROL_QUEUE_MAX, CONTROL_WRITE_MAX};
use ovpn_dco::control::device::{INTERFACE_VERSION, KeyInfo, ReadOutcome};
use ovpn_dco::control::request::RequestId;
use ovpn_dco::crypto::Cipher;
use ovpn_dco::crypto::host::HostCrypto;
use ovpn_dco::crypto::slots::DataError;
use ovpn_dco::ntstatus::NtStatus;
use ovpn_dco::proto::aead_frame::Layout;
use ovpn_dco::proto::keepalive::KEEPALIVE_PING;
use ovpn_dco::proto::{KeyId, PeerId};
use ovpn_dco::uapi::Ioctl;
use ovpn_dco::uapi::decode::Mode;

const SERVER: &str = "192.0.2.1:1194";
/// A control packet: P_CONTROL_V1 (opcode 4, key id 0) and some bytes.
const HARD_RESET: [u8; 14] = [0x38, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];

fn pid(id: u32) -> PeerId {
    PeerId::new(id).unwrap()
}

fn stats(h: &mut Harness) -> Vec<i64> {
    let out = h.ok(Ioctl::GetStats, &[], 64);
    let mut v: Vec<i64> = out[..32].chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect();
    v.extend(out[32..].chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())));
    v
}

/// NEW_PEER (UDP) as OpenVPN 2.x sends it, with the glue reporting the
/// socket at once: the request completes successfully before DeviceIoControl
/// returns. Returns the socket's id.
fn udp_new_peer(h: &mut Harness, remote: &str) -> TransportId {
    let id = h.parks(Ioctl::NewPeer, &new_peer(sa("0.0.0.0:0"), sa(remote), UDP), 0);
    let actions = h.take_actions();
    let Some(&Action::OpenUdp { transport, local, remote: Some(r), ipv6_only: false }) = actions.last() else {
        panic!("{actions:?}")
    };
    assert_eq!((local, r), (sa("0.0.0.0:0"), sa(remote)));
    h.dev.transport_opened(transport, Ok(()), &mut h.actions);
    assert_eq!(h.completed(), Completion { id, status: NtStatus::SUCCESS, output: vec![] });
    transport
}

/// Decrypts one packet of the remote side with the device's peer.
fn device_decrypts(
    h: &Harness,
    remote: &mut ovpn_dco::crypto::slots::KeySlots<ovpn_dco::crypto::host::HostKey>,
) -> Result<KeyId, DataError> {
    let mut pkt = remote_packet(&HostCrypto, remote, 7, &KEEPALIVE_PING);
    let peer = h.dev.rx_peer(pid(7)).unwrap();
    let d = peer.rx.lock().decrypt(&HostCrypto, &mut pkt, h.now.as_secs())?;
    assert_eq!(&pkt[d.plaintext], KEEPALIVE_PING);
    Ok(d.key_id)
}

#[test]
fn openvpn_2_6_udp_client_connects_renegotiates_and_reconnects_on_the_same_handle() {
    let mut h = Harness::new();
    // dco_version_string: GET_VERSION, printed only.
    let v = h.ok(Ioctl::GetVersion, &[], 12);
    assert_eq!(v, [le(INTERFACE_VERSION.major), le(INTERFACE_VERSION.minor), le(INTERFACE_VERSION.patch)].concat());

    // link_socket_init_phase2: NEW_PEER before the handshake.
    let t1 = udp_new_peer(&mut h, SERVER);
    assert_eq!(h.dev.data_transport(), Some(t1));

    // The TLS handshake over ReadFile / WriteFile, one read always pending.
    let (r1, out) = h.read(1800);
    assert_eq!(out, ReadOutcome::Parked);
    let sent = h.dev.write(&HARD_RESET).unwrap();
    assert_eq!((sent.transport, sent.to, sent.bytes.as_slice()), (t1, sa(SERVER), &HARD_RESET[..]));
    h.dev.control_packet_received(t1, sa(SERVER), &[0x40, 9, 9]);
    assert_eq!(h.completed(), Completion { id: r1, status: NtStatus::SUCCESS, output: vec![0x40, 9, 9] });
    h.read(1800);

    // do_up: START_VPN (before any key), then NEW_KEY PRIMARY, then SET_PEER.
    h.ok(Ioctl::StartVpn, &[], 0);
    assert_eq!(h.take_actions(), [Action::Link(LinkState::Up)]);
    h.ok(Ioctl::NewKey, &crypto_data(PRIMARY, AES_GCM, 0, 7), 0);
    h.ok(Ioctl::SetPeer, &set_peer(10, 60, 0), 0);
    let peer = h.dev.rx_peer(pid(12345)).unwrap();
    assert_eq!(peer.id(), pid(7), "headers carry the pushed peer id");
    assert_eq!(h.dev.tx_peer("10.8.0.1".parse().unwrap()).unwrap().id(), pid(7));
    let mut key0 = remote_slots(Cipher::AesGcm, Layout::Standard, 0);
    assert_eq!(device_decrypts(&h, &mut key0), Ok(KeyId::new(0).unwrap()));

    let s = stats(&mut h);
    assert_eq!((s[5], s[6]), (1, 1), "one control packet received, one sent");

    // Renegotiation: NEW_KEY SECONDARY, then SWAP_KEYS when it goes active.
    h.ok(Ioctl::NewKey, &crypto_data(SECONDARY, AES_GCM, 1, 7), 0);
    let mut key1 = remote_slots(Cipher::AesGcm, Layout::Standard, 1);
    assert_eq!(device_decrypts(&h, &mut key1), Ok(KeyId::new(1).unwrap()));
    assert_eq!(peer.tx.lock().primary().unwrap().key_id(), KeyId::new(0).unwrap(), "TX stays on the primary");
    h.ok(Ioctl::SwapKeys, &[], 0);
    assert_eq!(peer.tx.lock().primary().unwrap().key_id(), KeyId::new(1).unwrap());
    // The old key still decrypts until the next secondary replaces it.
    assert_eq!(device_decrypts(&h, &mut key0), Ok(KeyId::new(0).unwrap()));
    h.ok(Ioctl::NewKey, &crypto_data(SECONDARY, AES_GCM, 2, 7), 0);
    assert_eq!(device_decrypts(&h, &mut key0), Err(DataError::UnknownKeyId(KeyId::new(0).unwrap())));
    assert_eq!(device_decrypts(&h, &mut key1), Ok(KeyId::new(1).unwrap()));

    // SIGUSR1 with --persist-tun: DEL_PEER, then NEW_PEER on the same handle.
    h.ok(Ioctl::DelPeer, &[], 0);
    assert_eq!(h.take_actions(), [Action::CloseTransport(t1)]);
    assert_eq!(h.completions().iter().map(|c| c.status).collect::<Vec<_>>(), [NtStatus::CANCELLED]);
    assert!(h.dev.link_up(), "DEL_PEER leaves the link alone");
    assert!(h.dev.rx_peer(pid(7)).is_none());
    h.fails(Ioctl::StartVpn, &[], 0, NtStatus::INVALID_DEVICE_REQUEST);
    assert_eq!(h.dev.write(&HARD_RESET), Err(NtStatus::INVALID_DEVICE_STATE));

    let t2 = udp_new_peer(&mut h, "192.0.2.2:1194");
    assert_ne!(t1, t2);
    assert_eq!(stats(&mut h), vec![0; 12], "NEW_PEER zeroes the device counters");
    // No START_VPN again: the tun is persisted. The first key is PRIMARY again.
    h.ok(Ioctl::NewKey, &crypto_data(PRIMARY, AES_GCM, 0, 7), 0);
    h.ok(Ioctl::SetPeer, &set_peer(10, 60, 0), 0);
    let mut key0 = remote_slots(Cipher::AesGcm, Layout::Standard, 0);
    assert_eq!(device_decrypts(&h, &mut key0), Ok(KeyId::new(0).unwrap()));
    // A late packet of the old socket is ignored.
    h.dev.control_packet_received(t1, sa(SERVER), &HARD_RESET);
    assert!(h.dev.snapshot().control_queue.is_empty());
}

#[test]
fn openvpn_2_6_tcp_client_waits_for_the_connect() {
    let mut h = Harness::new();
    let id = h.parks(Ioctl::NewPeer, &new_peer(sa("[::]:0"), sa("[2001:db8::1]:443"), TCP), 0);
    let [Action::OpenTcp { transport, local, remote }] = h.take_actions()[..] else { panic!() };
    assert_eq!((local, remote), (sa("[::]:0"), sa("[2001:db8::1]:443")));
    h.dev.transport_opened(transport, Ok(()), &mut h.actions);
    assert!(h.completions().is_empty(), "pending until connected (dco_connect_wait polls)");
    assert_eq!(h.dev.write(&HARD_RESET), Err(NtStatus::INVALID_DEVICE_STATE));
    assert_eq!(h.dev.data_transport(), None);
    h.dev.tcp_connected(transport, NtStatus::SUCCESS, &mut h.actions);
    assert_eq!(h.completed(), Completion { id, status: NtStatus::SUCCESS, output: vec![] });
    assert_eq!(h.dev.data_transport(), Some(transport));

    // One packet per read, the TCP length already stripped by the data path.
    h.dev.control_packet_received(transport, sa("[2001:db8::1]:443"), &HARD_RESET);
    let (r, out) = h.read(1800);
    assert_eq!(out, ReadOutcome::Completed(NtStatus::SUCCESS));
    assert_eq!(h.completed(), Completion { id: r, status: NtStatus::SUCCESS, output: HARD_RESET.to_vec() });

    // The server resets the connection: the pending read reports it.
    let (r, _) = h.read(1800);
    h.dev.transport_disconnected(transport, &mut h.actions);
    assert_eq!(h.completed(), Completion { id: r, status: NtStatus::CONNECTION_ABORTED, output: vec![] });
    // OpenVPN answers with DEL_PEER.
    h.ok(Ioctl::DelPeer, &[], 0);
    assert_eq!(h.take_actions(), [Action::CloseTransport(transport)]);
}

#[test]
fn a_failed_or_abandoned_tcp_connect_completes_new_peer() {
    let refused = NtStatus(0xC000_0236_u32 as i32); // STATUS_CONNECTION_REFUSED
    let mut h = Harness::new();
    let id = h.parks(Ioctl::NewPeer, &new_peer(sa("0.0.0.0:0"), sa(SERVER), TCP), 0);
    let [Action::OpenTcp { transport, .. }] = h.take_actions()[..] else { panic!() };
    h.dev.transport_opened(transport, Ok(()), &mut h.actions);
    h.dev.tcp_connected(transport, refused, &mut h.actions);
    assert_eq!(h.completed(), Completion { id, status: refused, output: vec![] });
    assert_eq!(h.take_actions(), [Action::CloseTransport(transport)]);
    assert_eq!(h.dev.peer_count(), 0);

    // Connect timeout in OpenVPN: the request stays pending; DEL_PEER ends it.
    let id = h.parks(Ioctl::NewPeer, &new_peer(sa("0.0.0.0:0"), sa(SERVER), TCP), 0);
    let [Action::OpenTcp { transport, .. }] = h.take_actions()[..] else { panic!() };
    h.ok(Ioctl::DelPeer, &[], 0);
    assert_eq!(h.completed(), Completion { id, status: NtStatus::CANCELLED, output: vec![] });
    assert_eq!(h.take_actions(), [Action::CloseTransport(transport)]);
    // The socket the glue opened meanwhile is closed again.
    h.dev.transport_opened(transport, Ok(()), &mut h.actions);
    assert_eq!(h.take_actions(), [Action::CloseTransport(transport)]);

    // A socket that cannot be created fails NEW_PEER with its status.
    let id = h.parks(Ioctl::NewPeer, &new_peer(sa("0.0.0.0:0"), sa(SERVER), UDP), 0);
    let [Action::OpenUdp { transport, .. }] = h.take_actions()[..] else { panic!() };
    h.dev.transport_opened(transport, Err(NtStatus::INSUFFICIENT_RESOURCES), &mut h.actions);
    assert_eq!(h.completed(), Completion { id, status: NtStatus::INSUFFICIENT_RESOURCES, output: vec![] });
    assert_eq!(h.dev.peer_count(), 0);
    assert!(h.take_actions().is_empty());
}

#[test]
fn openvpn_2_7_client_uses_epoch_keys_and_peer_stats() {
    let mut h = Harness::new();
    // dco_supports_epoch_data: (Major == 2 && Minor >= 8) || Major > 2.
    let v = h.ok(Ioctl::GetVersion, &[], 12);
    let (major, minor) =
        (i32::from_le_bytes(v[0..4].try_into().unwrap()), i32::from_le_bytes(v[4..8].try_into().unwrap()));
    assert!((major == 2 && minor >= 8) || major > 2);

    udp_new_peer(&mut h, SERVER);
    // 2.7 order: START_VPN, SET_PEER, then NEW_KEY_V2 PRIMARY.
    h.ok(Ioctl::StartVpn, &[], 0);
    h.ok(Ioctl::SetPeer, &set_peer(10, 60, 1360), 0);
    h.ok(Ioctl::NewKeyV2, &crypto_data_v2(PRIMARY, CHACHA, 0, 7, true), 0);
    let snap = h.dev.snapshot();
    let (_, peer) = snap.p2p.unwrap();
    assert_eq!(peer.keys[0], Some(KeyInfo { key_id: KeyId::new(0).unwrap(), layout: Layout::Epoch }));
    assert_eq!(peer.mss, Some(1360));
    let mut remote = remote_slots(Cipher::ChaCha20Poly1305, Layout::Epoch, 0);
    assert_eq!(device_decrypts(&h, &mut remote), Ok(KeyId::new(0).unwrap()));

    // dco_get_peer_stats: GET_PEER_STATS for the pushed id, one record.
    let dev_peer = h.dev.rx_peer(pid(7)).unwrap();
    dev_peer.stats.link_rx_bytes.fetch_add(1234, std::sync::atomic::Ordering::Relaxed);
    dev_peer.stats.vpn_tx_bytes.fetch_add(99, std::sync::atomic::Ordering::Relaxed);
    let out = h.ok(Ioctl::GetPeerStats, &le(7), 40);
    assert_eq!(out.len(), 40);
    assert_eq!(&out[0..4], le(7));
    assert_eq!(&out[4..8], [0; 4], "padding zeroed");
    assert_eq!(i64::from_le_bytes(out[8..16].try_into().unwrap()), 1234);
    assert_eq!(i64::from_le_bytes(out[32..40].try_into().unwrap()), 99);
    // Any id names the P2P peer; a short buffer wins over the lookup.
    assert_eq!(h.ok(Ioctl::GetPeerStats, &le(0), 40).len(), 40);
    h.fails(Ioctl::GetPeerStats, &le(7), 39, NtStatus::BUFFER_TOO_SMALL);

    // A driver without GET_PEER_STATS answers ERROR_INVALID_FUNCTION and
    // OpenVPN falls back to GET_STATS: an unknown code must give exactly that.
    h.fails(Ioctl::GetPeerStats, &[], 40, NtStatus::BUFFER_TOO_SMALL);
    assert_eq!(h.ioctl_code(0x0022_0000 | (20 << 2), &le(7), 40), Io::Done(NtStatus::INVALID_DEVICE_REQUEST, vec![]));
    assert_eq!(stats(&mut h).len(), 12);

    // NOTIFY_EVENT is not used by clients, but allowed: it waits.
    let n = h.parks(Ioctl::NotifyEvent, &[], 144);
    assert!(h.dev.cancel(RequestId(n)));
    assert_eq!(h.completed().status, NtStatus::CANCELLED);
}

#[test]
fn openvpn_3_starts_the_vpn_before_keys_and_sets_mss_later() {
    let mut h = Harness::new();
    udp_new_peer(&mut h, SERVER);
    h.ok(Ioctl::StartVpn, &[], 0);
    h.ok(Ioctl::SetPeer, &set_peer(10, 60, -1), 0);
    h.ok(Ioctl::NewKey, &crypto_data(PRIMARY, AES_GCM, 0, 7), 0);
    // adjust_mss: SET_PEER{-1, -1, mss} keeps the keepalive.
    let before = h.dev.snapshot().p2p.unwrap().1.keepalive;
    h.advance_secs(3);
    h.ok(Ioctl::SetPeer, &set_peer(-1, -1, 1300), 0);
    let after = h.dev.snapshot().p2p.unwrap().1;
    assert_eq!(after.keepalive, before, "-1 leaves both timers as they were");
    assert_eq!(after.mss, Some(1300));
    h.ok(Ioctl::NewKey, &crypto_data(SECONDARY, AES_GCM, 1, 7), 0);
    h.ok(Ioctl::SwapKeys, &[], 0);
    h.ok(Ioctl::GetStats, &[], 64);
    h.ok(Ioctl::DelPeer, &[], 0);
    udp_new_peer(&mut h, SERVER);
    h.ok(Ioctl::NewKey, &crypto_data(PRIMARY, AES_GCM, 0, 7), 0);
}

#[test]
fn swap_keys_without_a_secondary_swaps_blindly() {
    let mut h = Harness::new();
    udp_new_peer(&mut h, SERVER);
    h.ok(Ioctl::NewKey, &crypto_data(PRIMARY, AES_GCM, 0, 7), 0);
    h.ok(Ioctl::SwapKeys, &[], 0);
    let peer = h.dev.rx_peer(pid(7)).unwrap();
    assert!(peer.tx.lock().primary().is_none(), "the primary became the empty slot");
    h.ok(Ioctl::SwapKeys, &[], 0);
    assert_eq!(peer.tx.lock().primary().unwrap().key_id(), KeyId::new(0).unwrap());
}

#[test]
fn p2p_keepalive_pings_when_idle_and_reports_a_silent_server_on_a_read() {
    let mut h = Harness::new();
    let t = udp_new_peer(&mut h, SERVER);
    h.ok(Ioctl::NewKey, &crypto_data(PRIMARY, AES_GCM, 0, 7), 0);
    assert_eq!(h.tick(), None, "no timers before SET_PEER");
    h.ok(Ioctl::SetPeer, &set_peer(10, 30, 0), 0);
    let start = h.now;
    assert_eq!(h.tick(), Some(start.saturating_add(std::time::Duration::from_secs(10))));
    h.advance_secs(10);
    h.tick();
    assert_eq!(h.take_actions(), [Action::SendKeepalive { peer: pid(7) }]);
    // The data path sent something at +15: the next ping waits for +25.
    let peer = h.dev.rx_peer(pid(7)).unwrap();
    peer.mark_sent(start.saturating_add(std::time::Duration::from_secs(15)));
    h.advance_secs(5);
    h.tick();
    assert!(h.take_actions().is_empty());
    // Received traffic keeps the peer alive.
    peer.mark_received(h.now);
    h.advance_secs(29);
    h.tick();
    assert!(h.completions().is_empty());

    // Silence for 30 s with a read pending: it completes with
    // STATUS_CONNECTION_DISCONNECTED (ERROR_NETNAME_DELETED = ping-restart).
    let (r, _) = h.read(1800);
    h.advance_secs(1);
    h.tick();
    assert_eq!(h.completed(), Completion { id: r, status: NtStatus::CONNECTION_DISCONNECTED, output: vec![] });
    assert_eq!(h.dev.peer_count(), 1, "P2P expiry does not delete the peer");

    // Next silent period with no read pending: the signal waits for the
    // read OpenVPN issues next, ahead of queued control packets.
    h.advance_secs(30);
    h.tick();
    assert!(h.completions().is_empty());
    h.dev.control_packet_received(t, sa(SERVER), &HARD_RESET);
    assert_eq!(h.read(1800).1, ReadOutcome::Completed(NtStatus::CONNECTION_DISCONNECTED));
    assert_eq!(h.read(1800).1, ReadOutcome::Completed(NtStatus::SUCCESS));
}

#[test]
fn openvpn_2_7_server_runs_clients_through_their_lifetime() {
    let mut h = Harness::new();
    // ovpn_dco_init_mp: SET_MODE(MP) connects the adapter.
    h.ok(Ioctl::SetMode, &set_mode(1), 0);
    assert_eq!(h.take_actions(), [Action::Link(LinkState::Up)]);
    assert_eq!(h.dev.mode(), Mode::Mp);
    h.fails(Ioctl::SetMode, &set_mode(1), 0, NtStatus::ALREADY_INITIALIZED);
    h.fails(Ioctl::NewPeer, &new_peer(sa("0.0.0.0:0"), sa(SERVER), UDP), 0, NtStatus::INVALID_DEVICE_STATE);
    h.fails(Ioctl::StartVpn, &[], 0, NtStatus::INVALID_DEVICE_STATE);
    assert_eq!(h.dev.write(&prefix(sa("198.51.100.10:5000"))), Err(NtStatus::INVALID_DEVICE_STATE));

    // MP_START_VPN with OpenVPN's 32-byte output: the input comes back.
    let start = mp_start_vpn(sa("[::]:1194"), false);
    let id = h.parks(Ioctl::MpStartVpn, &start, 32);
    let [Action::OpenUdp { transport: listener, local, remote: None, ipv6_only: false }] = h.take_actions()[..] else {
        panic!()
    };
    assert_eq!(local, sa("[::]:1194"));
    h.dev.transport_opened(listener, Ok(()), &mut h.actions);
    assert_eq!(h.completed(), Completion { id, status: NtStatus::SUCCESS, output: start.clone() });
    h.fails(Ioctl::MpStartVpn, &start, 32, NtStatus::ALREADY_INITIALIZED);

    // The NOTIFY_EVENT loop: one always pending.
    let notify = h.parks(Ioctl::NotifyEvent, &[], 144);
    let (read, _) = h.read(1800);

    // A new client's first packet, through the dual-stack socket v4-mapped:
    // OpenVPN reads an AF_INET sockaddr before it.
    let client0 = sa("198.51.100.10:50000");
    h.dev.control_packet_received(listener, sa("[::ffff:198.51.100.10]:50000"), &HARD_RESET);
    let c = h.completed();
    assert_eq!((c.id, c.status), (read, NtStatus::SUCCESS));
    assert_eq!(c.output, [prefix(client0), HARD_RESET.to_vec()].concat());
    // The reply goes to a client that is no peer yet.
    let sent = h.dev.write(&[prefix(client0), vec![0x40, 1]].concat()).unwrap();
    assert_eq!((sent.transport, sent.to, sent.bytes.as_slice()), (listener, client0, &[0x40, 1][..]));

    // multi_client_setup_dco_initial: MP_NEW_PEER, MP_SET_PEER, NEW_KEY, MP_ADD_IROUTE.
    h.ok(
        Ioctl::MpNewPeer,
        &mp_new_peer(client0, [10, 8, 0, 2], "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets(), 0),
        0,
    );
    h.fails(
        Ioctl::MpNewPeer,
        &mp_new_peer(sa("198.51.100.99:1"), [10, 8, 0, 9], [0; 16], 0),
        0,
        NtStatus::OBJECTID_EXISTS,
    );
    h.ok(Ioctl::MpSetPeer, &mp_set_peer(0, 10, 120, 1360), 0);
    h.ok(Ioctl::NewKey, &crypto_data(PRIMARY, AES_GCM, 0, 0), 0);
    h.fails(Ioctl::NewKey, &crypto_data(PRIMARY, AES_GCM, 0, 5), 0, NtStatus::OBJECTID_NOT_FOUND);
    h.ok(Ioctl::MpAddIroute, &iroute("192.168.10.0".parse().unwrap(), 24, 0), 0);
    h.fails(Ioctl::MpAddIroute, &iroute("192.168.10.0".parse().unwrap(), 33, 0), 0, NtStatus::INVALID_PARAMETER);

    let client1 = sa("[2001:db8::77]:40000");
    h.ok(Ioctl::MpNewPeer, &mp_new_peer(client1, [10, 8, 0, 3], [0; 16], 1), 0);
    h.ok(Ioctl::NewKeyV2, &crypto_data_v2(PRIMARY, AES_GCM, 0, 1, true), 0);

    let p0 = h.dev.rx_peer(pid(0)).unwrap();
    let p1 = h.dev.rx_peer(pid(1)).unwrap();
    assert!(h.dev.rx_peer(pid(2)).is_none());
    assert_eq!(h.dev.tx_peer("192.168.10.77".parse().unwrap()).unwrap().id(), pid(0));
    assert_eq!(h.dev.tx_peer("10.8.0.2".parse().unwrap()).unwrap().id(), pid(0));
    assert_eq!(h.dev.tx_peer("fd00::2".parse().unwrap()).unwrap().id(), pid(0));
    assert_eq!(h.dev.tx_peer("10.8.0.3".parse().unwrap()).unwrap().id(), pid(1));
    assert!(h.dev.tx_peer("10.9.0.1".parse().unwrap()).is_none());
    assert!(h.dev.source_allowed(&p0, "192.168.10.5".parse().unwrap()));
    assert!(!h.dev.source_allowed(&p1, "192.168.10.5".parse().unwrap()), "a client may not spoof another's network");
    assert!(!h.dev.source_allowed(&p1, "10.8.0.2".parse().unwrap()));

    // Client 0 floats; the parked NOTIFY_EVENT reports FLOAT_PEER with the address.
    assert!(h.dev.peer_floated(pid(0), sa("203.0.113.5:6000")));
    let c = h.completed();
    assert_eq!(c.id, notify);
    let (cmd, peer, _, addr) = parse_event(&c.output);
    assert_eq!((cmd, peer), (2, 0));
    assert_eq!(&addr[..16], &prefix(sa("203.0.113.5:6000"))[..]);
    assert_eq!(p0.endpoint().remote, sa("203.0.113.5:6000"));
    // Client 1 may not take over client 0's address.
    assert!(!h.dev.peer_floated(pid(1), sa("[::ffff:203.0.113.5]:6000")));
    assert_eq!(p1.endpoint().remote, client1);
    assert!(h.dev.snapshot().events.is_empty());

    // Status polling: GET_PEER_STATS −1 with a DWORD first, then the size.
    assert_eq!(
        h.ioctl(Ioctl::GetPeerStats, &le(-1), 4),
        Io::Done(NtStatus::BUFFER_OVERFLOW, 80u32.to_le_bytes().to_vec())
    );
    let all = h.ok(Ioctl::GetPeerStats, &le(-1), 80);
    assert_eq!((all.len(), &all[0..4], &all[40..44]), (80, &le(0)[..], &le(1)[..]));
    h.fails(Ioctl::GetPeerStats, &le(2), 40, NtStatus::OBJECTID_NOT_FOUND);

    // Keepalive in virtual time: client 0 pings every 10 s and expires after
    // 120 s of silence; client 1 has no timers.
    let notify = h.parks(Ioctl::NotifyEvent, &[], 144);
    h.advance_secs(10);
    h.tick();
    assert_eq!(h.take_actions(), [Action::SendKeepalive { peer: pid(0) }]);
    for _ in 0..10 {
        h.advance_secs(10);
        h.tick();
        assert_eq!(h.take_actions(), [Action::SendKeepalive { peer: pid(0) }]);
        assert!(h.completions().is_empty());
    }
    // 120 s without a packet from client 0: expired, no ping.
    h.advance_secs(10);
    assert_eq!(h.tick(), None, "no timer left");
    assert!(h.take_actions().is_empty());
    let c = h.completed();
    assert_eq!(c.id, notify);
    let (cmd, peer, reason, _) = parse_event(&c.output);
    assert_eq!((cmd, peer, reason), (0, 0, 2), "DEL_PEER, peer 0, EXPIRED");
    // The expired peer is gone from every table; a key for it fails cleanly.
    assert!(h.dev.rx_peer(pid(0)).is_none());
    assert!(h.dev.tx_peer("192.168.10.77".parse().unwrap()).is_none());
    h.fails(Ioctl::NewKey, &crypto_data(SECONDARY, AES_GCM, 1, 0), 0, NtStatus::OBJECTID_NOT_FOUND);
    h.fails(Ioctl::MpSetPeer, &mp_set_peer(0, 10, 120, 0), 0, NtStatus::INVALID_DEVICE_REQUEST);
    h.fails(Ioctl::MpSwapKeys, &le(0), 0, NtStatus::INVALID_DEVICE_REQUEST);
    h.fails(Ioctl::MpDelPeer, &le(0), 0, NtStatus::NOT_FOUND);
    // OpenVPN still deletes the iroutes on instance close: success.
    h.ok(Ioctl::MpDelIroute, &iroute("192.168.10.0".parse().unwrap(), 24, -1), 0);
    // The id is reused by the next client.
    h.ok(Ioctl::MpNewPeer, &mp_new_peer(sa("198.51.100.11:1"), [10, 8, 0, 2], [0; 16], 0), 0);

    // MP_DEL_PEER notifies USERSPACE; with no request parked it is queued
    // and the next NOTIFY_EVENT takes it at once.
    h.ok(Ioctl::MpDelPeer, &le(1), 0);
    let out = h.ok(Ioctl::NotifyEvent, &[], 144);
    let (cmd, peer, reason, _) = parse_event(&out);
    assert_eq!((cmd, peer, reason), (0, 1, 1), "DEL_PEER, peer 1, USERSPACE");
    h.ok(Ioctl::MpDelPeer, &le(0), 0);
    h.ok(Ioctl::NotifyEvent, &[], 144);
    assert_eq!(h.ioctl(Ioctl::GetPeerStats, &le(-1), 4), Io::Done(NtStatus::SUCCESS, vec![]), "no peers");

    // Server exit closes the handle.
    let notify = h.parks(Ioctl::NotifyEvent, &[], 144);
    let (read, _) = h.read(1800);
    h.close();
    assert_eq!(h.take_actions(), [Action::CloseTransport(listener), Action::Link(LinkState::Down)]);
    let mut done: Vec<_> = h.completions().into_iter().map(|c| (c.id, c.status)).collect();
    done.sort_by_key(|c| c.0);
    assert_eq!(done, [(notify, NtStatus::CANCELLED), (read, NtStatus::CANCELLED)]);
    assert_eq!(h.dev.mode(), Mode::P2p);
    h.ok(Ioctl::SetMode, &set_mode(1), 0);
}

#[test]
fn mp_iroutes_pick_the_longest_prefix_and_leave_with_their_peer() {
    let mut h = Harness::new();
    h.ok(Ioctl::SetMode, &set_mode(1), 0);
    h.ok(Ioctl::MpNewPeer, &mp_new_peer(sa("198.51.100.1:1"), [10, 8, 0, 2], [0; 16], 3), 0);
    h.ok(Ioctl::MpNewPeer, &mp_new_peer(sa("198.51.100.2:1"), [10, 8, 0, 3], [0; 16], 4), 0);
    h.ok(Ioctl::MpAddIroute, &iroute("10.0.0.0".parse().unwrap(), 8, 3), 0);
    h.ok(Ioctl::MpAddIroute, &iroute("10.1.0.0".parse().unwrap(), 16, 4), 0);
    h.ok(Ioctl::MpAddIroute, &iroute("2001:db8:1::".parse().unwrap(), 48, 4), 0);
    h.fails(Ioctl::MpAddIroute, &iroute("10.2.0.0".parse().unwrap(), 16, 9), 0, NtStatus::INVALID_PARAMETER);
    let to = |h: &Harness, a: &str| h.dev.tx_peer(a.parse().unwrap()).map(|p| p.id().get());
    assert_eq!(to(&h, "10.1.2.3"), Some(4));
    assert_eq!(to(&h, "10.2.2.3"), Some(3));
    assert_eq!(to(&h, "2001:db8:1::9"), Some(4));
    h.ok(Ioctl::MpDelPeer, &le(4), 0);
    assert_eq!(to(&h, "10.1.2.3"), Some(3));
    assert_eq!(to(&h, "2001:db8:1::9"), None);
    assert_eq!(h.dev.snapshot().routes.len(), 2);
}

/// The data path keeps the peer it looked up for a run of packets. If the
/// control plane deletes that peer and adds another under the same id
/// meanwhile, a packet the old peer's keys authenticated must neither move
/// the new peer's endpoint nor pass the new peer's source check.
#[test]
fn a_peer_deleted_and_readded_under_its_id_is_not_floated_or_spoofed_by_the_old_one() {
    let mut h = Harness::new();
    h.ok(Ioctl::SetMode, &set_mode(1), 0);
    h.ok(Ioctl::MpNewPeer, &mp_new_peer(sa("198.51.100.1:1"), [10, 8, 0, 2], [0; 16], 3), 0);
    h.ok(Ioctl::MpAddIroute, &iroute("192.168.10.0".parse().unwrap(), 24, 3), 0);
    let old = h.dev.rx_peer(pid(3)).unwrap();
    assert!(h.dev.source_allowed(&old, "192.168.10.5".parse().unwrap()));
    h.ok(Ioctl::MpDelPeer, &le(3), 0);
    assert!(!h.dev.source_allowed(&old, "10.8.0.2".parse().unwrap()), "a deleted peer has no routes");
    assert!(!h.dev.peer_floated_from(&old, sa("203.0.113.7:7")));

    h.ok(Ioctl::MpNewPeer, &mp_new_peer(sa("198.51.100.2:2"), [10, 8, 0, 2], [0; 16], 3), 0);
    h.ok(Ioctl::MpAddIroute, &iroute("192.168.10.0".parse().unwrap(), 24, 3), 0);
    let new = h.dev.rx_peer(pid(3)).unwrap();
    assert!(!h.dev.source_allowed(&old, "10.8.0.2".parse().unwrap()), "the new session's address");
    assert!(!h.dev.source_allowed(&old, "192.168.10.5".parse().unwrap()), "the new session's iroute");
    let events = h.dev.snapshot().events;
    assert!(!h.dev.peer_floated_from(&old, sa("203.0.113.7:7")), "the old session floats nobody");
    assert_eq!(new.endpoint().remote, sa("198.51.100.2:2"));
    assert_eq!(h.dev.snapshot().events, events, "no FLOAT_PEER queued");
    // The new peer itself still works both ways.
    assert!(h.dev.source_allowed(&new, "192.168.10.5".parse().unwrap()));
    assert!(h.dev.peer_floated_from(&new, sa("203.0.113.7:7")));
    assert_eq!(new.endpoint().remote, sa("203.0.113.7:7"));
}

#[test]
fn teardown_cancels_everything_parked_and_the_handle_can_start_over() {
    let mut h = Harness::new();
    let new_peer_id = h.parks(Ioctl::NewPeer, &new_peer(sa("0.0.0.0:0"), sa(SERVER), TCP), 0);
    let [Action::OpenTcp { transport, .. }] = h.take_actions()[..] else { panic!() };
    h.dev.transport_opened(transport, Ok(()), &mut h.actions);
    h.ok(Ioctl::StartVpn, &[], 0);
    h.take_actions();
    let notify = h.parks(Ioctl::NotifyEvent, &[], 144);
    let (r1, _) = h.read(1800);
    let (r2, _) = h.read(1800);
    h.close();
    assert_eq!(h.take_actions(), [Action::CloseTransport(transport), Action::Link(LinkState::Down)]);
    let mut done: Vec<_> = h.completions().into_iter().map(|c| (c.id, c.status)).collect();
    done.sort_by_key(|c| c.0);
    assert_eq!(
        done,
        [
            (new_peer_id, NtStatus::CANCELLED),
            (notify, NtStatus::CANCELLED),
            (r1, NtStatus::CANCELLED),
            (r2, NtStatus::CANCELLED)
        ]
    );
    let snap = h.dev.snapshot();
    assert!(snap.parked_reads.is_empty() && snap.parked_notify.is_empty() && snap.pending_open.is_none());
    assert!(!snap.link_up && snap.p2p.is_none());
    // Events of the closed socket change nothing.
    h.dev.tcp_connected(transport, NtStatus::SUCCESS, &mut h.actions);
    assert!(h.completions().is_empty());
    // The next open of the adapter starts from scratch.
    udp_new_peer(&mut h, SERVER);
    h.ok(Ioctl::StartVpn, &[], 0);
    assert_eq!(h.take_actions(), [Action::Link(LinkState::Up)]);
}

#[test]
fn the_os_can_cancel_any_parked_request() {
    let mut h = Harness::new();
    let (r, _) = h.read(100);
    let n = h.parks(Ioctl::NotifyEvent, &[], 144);
    let p = h.parks(Ioctl::NewPeer, &new_peer(sa("0.0.0.0:0"), sa(SERVER), UDP), 0);
    for id in [n, r, p] {
        assert!(h.dev.cancel(RequestId(id)));
        assert_eq!(h.completed(), Completion { id, status: NtStatus::CANCELLED, output: vec![] });
        assert!(!h.dev.cancel(RequestId(id)), "completed once only");
    }
    assert!(!h.dev.cancel(RequestId(999)));
}

// ---------------------------------------------------------------------------
// Control channel

#[test]
fn reads_complete_from_the_queue_or_wait_for_the_next_packet() {
    let mut h = Harness::new();
    let t = udp_new_peer(&mut h, SERVER);
    // After arrival: at once.
    h.dev.control_packet_received(t, sa(SERVER), &HARD_RESET);
    h.dev.control_packet_received(t, sa(SERVER), &[0x40]);
    let (r, out) = h.read(1800);
    assert_eq!(out, ReadOutcome::Completed(NtStatus::SUCCESS));
    assert_eq!(h.completed(), Completion { id: r, status: NtStatus::SUCCESS, output: HARD_RESET.to_vec() });
    assert_eq!(h.read(1800).1, ReadOutcome::Completed(NtStatus::SUCCESS));
    assert_eq!(h.completed().output, [0x40]);
    // Before arrival: parked, completed in order.
    let (a, _) = h.read(1800);
    let (b, _) = h.read(1800);
    h.dev.control_packet_received(t, sa(SERVER), &[1]);
    h.dev.control_packet_received(t, sa(SERVER), &[2]);
    assert_eq!(
        h.completions(),
        [
            Completion { id: a, status: NtStatus::SUCCESS, output: vec![1] },
            Completion { id: b, status: NtStatus::SUCCESS, output: vec![2] }
        ]
    );
}

#[test]
fn a_short_read_fails_without_losing_the_packet() {
    let mut h = Harness::new();
    let t = udp_new_peer(&mut h, SERVER);
    h.dev.control_packet_received(t, sa(SERVER), &HARD_RESET);
    assert_eq!(h.read(13).1, ReadOutcome::Completed(NtStatus::BUFFER_TOO_SMALL));
    assert_eq!(h.completed().output, []);
    assert_eq!(h.read(14).1, ReadOutcome::Completed(NtStatus::SUCCESS));
    assert_eq!(h.completed().output, HARD_RESET);
    // A parked short read is refused when the packet comes; the packet waits.
    let (small, _) = h.read(4);
    let (big, _) = h.read(1800);
    h.dev.control_packet_received(t, sa(SERVER), &HARD_RESET);
    assert_eq!(
        h.completions(),
        [
            Completion { id: small, status: NtStatus::BUFFER_TOO_SMALL, output: vec![] },
            Completion { id: big, status: NtStatus::SUCCESS, output: HARD_RESET.to_vec() }
        ]
    );
    let (small, _) = h.read(4);
    h.dev.control_packet_received(t, sa(SERVER), &HARD_RESET);
    assert_eq!(h.completed(), Completion { id: small, status: NtStatus::BUFFER_TOO_SMALL, output: vec![] });
    assert_eq!(h.dev.snapshot().control_queue, [HARD_RESET.to_vec()]);
    assert_eq!(stats(&mut h)[0], 0, "nothing lost");
}

#[test]
fn mp_control_packets_carry_the_peer_sockaddr_both_ways() {
    let mut h = Harness::new();
    h.ok(Ioctl::SetMode, &set_mode(1), 0);
    h.parks(Ioctl::MpStartVpn, &mp_start_vpn(sa("[::]:1194"), true), 32);
    let [_, Action::OpenUdp { transport: l, ipv6_only: true, .. }] = h.take_actions()[..] else { panic!() };
    h.dev.transport_opened(l, Ok(()), &mut h.actions);
    h.completions();

    // IPv6: 28-byte SOCKADDR_IN6 with port, flowinfo, address, scope id.
    let v6 = sa("[2001:db8::5%7]:1194");
    h.dev.control_packet_received(l, v6, &HARD_RESET);
    assert_eq!(h.read(1800).1, ReadOutcome::Completed(NtStatus::SUCCESS));
    let out = h.completed().output;
    assert_eq!(out.len(), 28 + HARD_RESET.len());
    assert_eq!(&out[..2], 23u16.to_le_bytes());
    assert_eq!(&out[2..4], 1194u16.to_be_bytes());
    assert_eq!(&out[24..28], 7u32.to_le_bytes());
    assert_eq!(&out[28..], HARD_RESET);
    // A read must hold prefix and packet.
    h.dev.control_packet_received(l, sa("192.0.2.9:9"), &HARD_RESET);
    assert_eq!(h.read(16 + 13).1, ReadOutcome::Completed(NtStatus::BUFFER_TOO_SMALL));
    assert_eq!(h.read(16 + 14).1, ReadOutcome::Completed(NtStatus::SUCCESS));
    h.completions();

    // Writes: by family, to any address.
    let sent = h.dev.write(&[prefix(v6), vec![0x20, 0]].concat()).unwrap();
    assert_eq!((sent.to, sent.bytes.as_slice()), (v6, &[0x20, 0][..]));
    let mapped = sa("[::ffff:192.0.2.200]:77");
    assert_eq!(h.dev.write(&[prefix(mapped), vec![0x20]].concat()).unwrap().to, sa("192.0.2.200:77"));
    assert_eq!(
        h.dev.write(&prefix(sa("192.0.2.200:77"))),
        Err(NtStatus::INVALID_MESSAGE),
        "no packet after the sockaddr"
    );
    assert_eq!(h.dev.write(&prefix(v6)[..27]), Err(NtStatus::INVALID_MESSAGE));
    assert_eq!(
        h.dev.write(&[10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]),
        Err(NtStatus::INVALID_ADDRESS)
    );
    assert_eq!(h.dev.write(&[2]), Err(NtStatus::INVALID_MESSAGE));
    let long = [prefix(v6), vec![0x20; CONTROL_WRITE_MAX + 1]].concat();
    assert_eq!(h.dev.write(&long), Err(NtStatus::INVALID_BUFFER_SIZE));
    assert!(h.dev.write(&long[..28 + CONTROL_WRITE_MAX]).is_ok());
}

#[test]
fn a_full_control_queue_drops_and_counts() {
    let mut h = Harness::new();
    let t = udp_new_peer(&mut h, SERVER);
    for i in 0..CONTROL_QUEUE_MAX + 3 {
        h.dev.control_packet_received(t, sa(SERVER), &[0x38, i as u8]);
    }
    h.dev.control_packet_received(t, sa(SERVER), &vec![0x38; CONTROL_PACKET_MAX + 1]);
    let s = stats(&mut h);
    assert_eq!((s[0], s[5]), (4, CONTROL_QUEUE_MAX as i64 + 4), "LostInControlPackets, ReceivedControlPackets");
    // The oldest are kept, in order.
    assert_eq!(h.read(1800).1, ReadOutcome::Completed(NtStatus::SUCCESS));
    assert_eq!(h.completed().output, [0x38, 0]);
    // P2P writes: bounded, non-empty.
    assert_eq!(h.dev.write(&[]), Err(NtStatus::INVALID_MESSAGE));
    assert_eq!(h.dev.write(&[0x20; CONTROL_WRITE_MAX + 1]), Err(NtStatus::INVALID_BUFFER_SIZE));
    assert_eq!(h.dev.write(&[0x20; CONTROL_WRITE_MAX]).unwrap().bytes.as_slice().len(), CONTROL_WRITE_MAX);
}

#[test]
fn a_failed_ioctl_changes_nothing_in_a_busy_device() {
    let mut h = Harness::new();
    let t = udp_new_peer(&mut h, SERVER);
    h.ok(Ioctl::NewKey, &crypto_data(PRIMARY, AES_GCM, 0, 7), 0);
    h.ok(Ioctl::SetPeer, &set_peer(10, 60, 1400), 0);
    h.dev.control_packet_received(t, sa(SERVER), &HARD_RESET);
    h.parks(Ioctl::NotifyEvent, &[], 144);
    // Bad key material must not replace the installed key.
    let mut bad = crypto_data(PRIMARY, AES_GCM, 1, 7);
    bad[32] = 20;
    h.fails(Ioctl::NewKey, &bad, 0, NtStatus::INVALID_PARAMETER);
    h.fails(Ioctl::NewKey, &crypto_data(PRIMARY, 9, 1, 7), 0, NtStatus::INVALID_DEVICE_REQUEST);
    h.fails(Ioctl::SetPeer, &set_peer(10, -2, 0), 0, NtStatus::INVALID_PARAMETER);
    h.fails(Ioctl::SetPeer, &set_peer(10, 60, 0)[..11], 0, NtStatus::BUFFER_TOO_SMALL);
    h.fails(Ioctl::NewPeer, &new_peer(sa("0.0.0.0:0"), sa(SERVER), 2), 0, NtStatus::INVALID_DEVICE_REQUEST);
    h.fails(Ioctl::SetMode, &set_mode(2), 0, NtStatus::INVALID_PARAMETER);
    h.fails(Ioctl::SetMode, &set_mode(1), 0, NtStatus::INVALID_DEVICE_STATE);
    h.fails(Ioctl::GetStats, &[], 63, NtStatus::BUFFER_TOO_SMALL);
    h.fails(Ioctl::GetVersion, &[], 11, NtStatus::BUFFER_TOO_SMALL);
    h.fails(Ioctl::NotifyEvent, &[], 143, NtStatus::BUFFER_TOO_SMALL);
    h.fails(Ioctl::MpNewPeer, &[], 0, NtStatus::INVALID_DEVICE_STATE);
    let snap = h.dev.snapshot();
    assert_eq!(snap.p2p.unwrap().1.keys[0], Some(KeyInfo { key_id: KeyId::new(0).unwrap(), layout: Layout::Standard }));
}

#[test]
fn p2p_lifecycle_statuses_follow_ovpn_dco_win() {
    let mut h = Harness::new();
    // No peer: SET_PEER / START_VPN / SWAP_KEYS are STATUS_INVALID_DEVICE_REQUEST,
    // SET_PEER even before its buffer is looked at; NEW_KEY is OBJECTID_NOT_FOUND.
    h.fails(Ioctl::SetPeer, &[], 0, NtStatus::INVALID_DEVICE_REQUEST);
    h.fails(Ioctl::StartVpn, &[], 0, NtStatus::INVALID_DEVICE_REQUEST);
    h.fails(Ioctl::SwapKeys, &[], 0, NtStatus::INVALID_DEVICE_REQUEST);
    h.fails(Ioctl::NewKey, &crypto_data(PRIMARY, AES_GCM, 0, 7), 0, NtStatus::OBJECTID_NOT_FOUND);
    h.fails(Ioctl::NewKey, &crypto_data(PRIMARY, AES_GCM, 0, 7)[..99], 0, NtStatus::BUFFER_TOO_SMALL);
    h.fails(Ioctl::GetPeerStats, &le(0), 40, NtStatus::OBJECTID_NOT_FOUND);
    h.fails(Ioctl::MpStartVpn, &mp_start_vpn(sa("0.0.0.0:1194"), false), 32, NtStatus::INVALID_DEVICE_STATE);
    assert_eq!(h.ioctl(Ioctl::GetPeerStats, &le(-1), 4), Io::Done(NtStatus::SUCCESS, vec![]));
    // DEL_PEER always succeeds; SET_MODE(P2P) in P2P too.
    h.ok(Ioctl::DelPeer, &[], 0);
    h.ok(Ioctl::SetMode, &set_mode(0), 0);
    assert!(h.take_actions().is_empty());
    // NEW_PEER replaces the peer: the old socket closes, the new one opens.
    let t1 = udp_new_peer(&mut h, SERVER);
    h.ok(Ioctl::NewKey, &crypto_data(PRIMARY, AES_GCM, 0, 7), 0);
    let id = h.parks(Ioctl::NewPeer, &new_peer(sa("0.0.0.0:0"), sa("192.0.2.3:1194"), UDP), 0);
    let actions = h.take_actions();
    assert_eq!(actions[0], Action::CloseTransport(t1));
    let Action::OpenUdp { transport: t2, .. } = actions[1] else { panic!() };
    h.dev.transport_opened(t2, Ok(()), &mut h.actions);
    assert_eq!(h.completed().id, id);
    let snap = h.dev.snapshot().p2p.unwrap().1;
    assert_eq!(snap.keys, [None, None], "a new peer has no keys");
    assert_eq!(snap.id, pid(0), "NEW_PEER carries no id");
    assert_eq!(h.dev.rx_peer(pid(99)).unwrap().endpoint().remote, sa("192.0.2.3:1194"));
}

#[test]
fn ioctls_in_the_wrong_mode_are_refused_before_their_input_is_read() {
    let p2p_only = [Ioctl::NewPeer, Ioctl::DelPeer, Ioctl::SwapKeys, Ioctl::SetPeer, Ioctl::StartVpn];
    let mp_only = [
        Ioctl::MpStartVpn,
        Ioctl::MpNewPeer,
        Ioctl::MpSetPeer,
        Ioctl::MpDelPeer,
        Ioctl::MpSwapKeys,
        Ioctl::MpAddIroute,
        Ioctl::MpDelIroute,
    ];
    let mut h = Harness::new();
    for ioctl in mp_only {
        h.fails(ioctl, &[], 0, NtStatus::INVALID_DEVICE_STATE);
    }
    h.ok(Ioctl::SetMode, &set_mode(1), 0);
    for ioctl in p2p_only {
        h.fails(ioctl, &[], 0, NtStatus::INVALID_DEVICE_STATE);
    }
    // Allowed in both: GET_STATS, GET_VERSION, GET_PEER_STATS, NOTIFY_EVENT, NEW_KEY.
    h.ok(Ioctl::GetStats, &[], 64);
    h.ok(Ioctl::GetVersion, &[], 12);
    h.ioctl(Ioctl::GetPeerStats, &le(-1), 4);
    h.fails(Ioctl::NewKey, &crypto_data(PRIMARY, AES_GCM, 0, 1), 0, NtStatus::OBJECTID_NOT_FOUND);
    h.fails(Ioctl::MpStartVpn, &mp_start_vpn(sa("0.0.0.0:1194"), false), 31, NtStatus::BUFFER_TOO_SMALL);
    assert!(h.take_actions().iter().all(|a| matches!(a, Action::Link(_))), "no socket behind a short output");
}

#[test]
fn openvpn_2_7_server_renegotiates_one_client_with_mp_swap_keys() {
    let mut h = Harness::new();
    h.ok(Ioctl::SetMode, &set_mode(1), 0);
    for id in [0u8, 1] {
        h.ok(
            Ioctl::MpNewPeer,
            &mp_new_peer(sa(&format!("198.51.100.{id}:1")), [10, 8, 0, 2 + id], [0; 16], id.into()),
            0,
        );
        h.ok(Ioctl::NewKey, &crypto_data(PRIMARY, AES_GCM, 0, id.into()), 0);
    }
    let decrypts = |h: &Harness, peer: u32, remote: &mut ovpn_dco::crypto::slots::KeySlots<_>| {
        let mut pkt = remote_packet(&HostCrypto, remote, peer, &KEEPALIVE_PING);
        let p = h.dev.rx_peer(pid(peer)).unwrap();
        let d = p.rx.lock().decrypt(&HostCrypto, &mut pkt, h.now.as_secs())?;
        assert_eq!(&pkt[d.plaintext], KEEPALIVE_PING);
        Ok::<_, DataError>(d.key_id)
    };
    let (k0, k1) = (KeyId::new(0).unwrap(), KeyId::new(1).unwrap());
    let mut old = remote_slots(Cipher::AesGcm, Layout::Standard, 0);
    let mut new = remote_slots(Cipher::AesGcm, Layout::Standard, 1);

    // Client 1's TLS renegotiation: the new key into its SECONDARY slot. It
    // decrypts at once; TX stays on the old key until MP_SWAP_KEYS.
    h.ok(Ioctl::NewKey, &crypto_data(SECONDARY, AES_GCM, 1, 1), 0);
    assert_eq!(decrypts(&h, 1, &mut new), Ok(k1));
    let p1 = h.dev.rx_peer(pid(1)).unwrap();
    assert_eq!(p1.tx.lock().primary().unwrap().key_id(), k0);
    h.ok(Ioctl::MpSwapKeys, &le(1), 0);
    assert_eq!(p1.tx.lock().primary().unwrap().key_id(), k1, "TX moves to the new key");
    assert_eq!(decrypts(&h, 1, &mut old), Ok(k0), "the old key decrypts until replaced");
    let snap = h.dev.snapshot();
    let keys = |id: u32| snap.mp_peers.iter().find(|p| p.id == pid(id)).unwrap().keys.map(|k| k.map(|k| k.key_id));
    assert_eq!(keys(1), [Some(k1), Some(k0)]);
    // The other client is untouched.
    assert_eq!(keys(0), [Some(k0), None]);
    assert_eq!(h.dev.rx_peer(pid(0)).unwrap().tx.lock().primary().unwrap().key_id(), k0);
    assert_eq!(
        decrypts(&h, 0, &mut remote_slots(Cipher::AesGcm, Layout::Standard, 1)),
        Err(DataError::UnknownKeyId(k1))
    );
    // The next renegotiation's key replaces the retired one.
    h.ok(Ioctl::NewKey, &crypto_data(SECONDARY, AES_GCM, 2, 1), 0);
    assert_eq!(decrypts(&h, 1, &mut old), Err(DataError::UnknownKeyId(k0)));
    assert_eq!(decrypts(&h, 1, &mut new), Ok(k1));
    // MP_SWAP_KEYS for a peer that is not there.
    h.fails(Ioctl::MpSwapKeys, &le(5), 0, NtStatus::INVALID_DEVICE_REQUEST);
}
