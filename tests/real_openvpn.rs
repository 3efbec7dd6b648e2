//! Real OpenVPN as the peer (verification ladder, step 3).
//!
//! Each test runs Debian's openvpn 2.6 as server and client in two network
//! namespaces (tests/support/openvpn.rs) and reads the data-channel keys
//! from the client's log. Then:
//! - read: the datagrams real OpenVPN exchanged, fed to the data path's RX
//!   as WSK indication lists (tests/support/datapath_rx.rs), decrypt in
//!   place to exactly the packets the client's tun device carried;
//! - write: the real client is killed and the host tunnel
//!   (`ovpn_dco::os::host::tunnel`: the data path over the NetAdapterCx and
//!   WSK models, TX one pass, RX zero-copy) takes over its key, address and
//!   tun device; ping and a TCP transfer through the real server work, and
//!   the server rejects a replayed and a tampered packet.
//!
//! Needs root, `ip netns`, /dev/net/tun, openvpn, openssl and ping; skips
//! otherwise, unless OVPN_DCO_REQUIRE_REAL_PEER=1 (CI) makes that a failure.
//! Run with `--nocapture` to see the skip reason.

#![cfg(target_os = "linux")]

mod support;

use ovpn_dco::datapath::DropReason;
use ovpn_dco::os::host::tunnel::{HostTunnel, TunnelConfig, TunnelProto, Upper, Verification};
use ovpn_dco::os::host::wsk::Network;
use ovpn_dco::proto::aead_frame::STANDARD_HEAD_ROOM;
use ovpn_dco::proto::keepalive::KEEPALIVE_PING;
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use support::capture::{Capture, Direction, Packet, UdpDatagram, udp_datagrams};
use support::datapath_rx::DatapathReceiver;
use support::netns::{NetNs, POLL_INTERVAL, run_bounded};
use support::openvpn::{DataCipher, Session};
use support::session_or_skip;

/// Bound on a ping run (`ping -w`): the whole command, however many replies.
const PING_DEADLINE_SECS: &str = "10";
/// Bound on waits for a log line or a counter.
const WAIT: Duration = Duration::from_secs(10);
/// Bytes sent through the tunnel and echoed back by the server namespace.
const TCP_TRANSFER_BYTES: usize = 1 << 20;
/// Bound on the whole TCP exchange.
const TCP_TIMEOUT: Duration = Duration::from_secs(30);
/// The port of the echo listener in the server namespace.
const ECHO_PORT: u16 = 5201;

/// OpenVPN 2.6 crypto.c, at D_REPLAY_ERRORS / D_CRYPT_ERRORS (verb 1-2).
const SERVER_REPLAY_LINE: &str = "bad packet ID (may be a replay)";
const SERVER_AUTH_FAIL_LINE: &str = "AEAD Decrypt error: cipher final failed";

/// ICMP echo requests/replies among IPv4 packets.
fn icmp_count(packets: &[Vec<u8>], icmp_type: u8) -> usize {
    packets.iter().filter(|p| p.len() > 20 && p[0] == 0x45 && p[9] == 1 && p[20] == icmp_type).count()
}

fn ping(ns: &NetNs, to: std::net::Ipv4Addr, count: u32) -> Result<String, String> {
    run_bounded(
        ns.command("ping").args(["-c", &count.to_string(), "-i", "0.2", "-w", PING_DEADLINE_SECS, &to.to_string()]),
        Duration::from_secs(20),
    )
}

/// One direction's datagrams through a data path holding `slot`: the
/// inner packets, in order, and how many keepalives were consumed.
fn decrypt_all(rx: &mut DatapathReceiver, datagrams: &[&UdpDatagram], what: &str) -> (Vec<Vec<u8>>, usize) {
    for (i, d) in datagrams.iter().enumerate() {
        assert!(d.complete, "{what} datagram {i} was fragmented on the veth");
    }
    let payloads: Vec<&[u8]> = datagrams.iter().map(|d| d.payload.as_slice()).collect();
    let got = rx.receive_all(&payloads).unwrap_or_else(|e| panic!("{what}: {e}"));
    (got.packets, got.keepalives)
}

fn tun_packets(tun: &[Packet], direction: Direction) -> Vec<Vec<u8>> {
    tun.iter().filter(|p| p.direction == direction).map(|p| p.bytes.clone()).collect()
}

/// Read: real OpenVPN's datagrams decrypt to what the client's tun carried.
fn real_traffic_decrypts_to_the_tun_packets(test: &str, cipher: DataCipher) {
    let Some(mut session) = session_or_skip(test, cipher) else { return };
    let mut tun = Capture::start(session.client_ns(), session.client_tun()).expect("capture on the client tun");
    let mark = session.transport().packets().len();

    let a = session.addresses.clone();
    ping(session.client_ns(), a.server_tun, 3).unwrap_or_else(|e| panic!("{e}\n{}", session.log_tails()));
    ping(session.server_ns(), a.client_tun, 2).unwrap_or_else(|e| panic!("{e}\n{}", session.log_tails()));

    // Then silence until each side has sent a keepalive (both ping after 2 s).
    let keepalive_len = STANDARD_HEAD_ROOM + KEEPALIVE_PING.len();
    wait_until("a keepalive each way", || {
        let since = udp_datagrams(&session.transport().packets()[mark..]);
        let seen = |to_server: bool| {
            since.iter().any(|d| (d.dst == a.server_link) == to_server && d.payload.len() == keepalive_len)
        };
        seen(true) && seen(false)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", session.log_tails()));

    let tun = tun.drain().to_vec();
    let datagrams = udp_datagrams(&session.transport().packets()[mark..]);
    let data = |from_client: bool| -> Vec<&UdpDatagram> {
        datagrams.iter().filter(|d| if from_client { d.dst == a.server_link } else { d.src == a.server_link }).collect()
    };
    let (to_server, to_client) = (data(true), data(false));

    // As the server decrypts, and as the client does.
    let (client, server) = (SocketAddr::V4(a.client_link), SocketAddr::V4(a.server_link));
    let mut server_rx = DatapathReceiver::new(session.keys.server_keys(), client, server).expect("server-side RX");
    let mut client_rx = DatapathReceiver::new(session.keys.client_keys(), server, client).expect("client-side RX");
    let (sent, keepalives_sent) = decrypt_all(&mut server_rx, &to_server, "client->server");
    let (received, keepalives_received) = decrypt_all(&mut client_rx, &to_client, "server->client");
    for rx in [&server_rx, &client_rx] {
        assert_eq!(rx.drops(DropReason::RxAuthFailed) + rx.drops(DropReason::RxReplay), 0, "every datagram opened");
    }
    assert!(keepalives_sent > 0 && keepalives_received > 0, "keepalives decrypt to the ping payload");

    assert_eq!(sent, tun_packets(&tun, Direction::Outgoing), "client->server plaintexts vs packets leaving the tun");
    assert_eq!(
        received,
        tun_packets(&tun, Direction::Incoming),
        "server->client plaintexts vs packets entering the tun"
    );
    // Three echo requests from the client and two from the server, each answered.
    assert!(icmp_count(&sent, 8) >= 3 && icmp_count(&received, 0) >= 3, "client's pings in the capture");
    assert!(icmp_count(&received, 8) >= 2 && icmp_count(&sent, 0) >= 2, "server's pings in the capture");
    eprintln!(
        "{test}: {} datagrams to the server ({keepalives_sent} keepalives), {} to the client ({keepalives_received})",
        to_server.len(),
        to_client.len()
    );

    // The same data path refuses a replay of a real packet, and a tampered one.
    let last = to_server.last().expect("a client->server datagram");
    let replayed = server_rx.receive_all(&[&last.payload]).expect("replay accounted for");
    assert!(replayed.packets.is_empty(), "a replayed real datagram is not indicated");
    assert_eq!(server_rx.drops(DropReason::RxReplay), 1, "a replayed real datagram is rejected");
    let mut fresh = DatapathReceiver::new(session.keys.server_keys(), client, server).expect("fresh RX");
    let mut tampered = last.payload.clone();
    *tampered.last_mut().expect("ciphertext") ^= 0x01;
    let refused = fresh.receive_all(&[&tampered]).expect("tampered accounted for");
    assert!(refused.packets.is_empty() && fresh.drops(DropReason::RxAuthFailed) == 1, "a tampered datagram fails");
    let genuine = fresh.receive_all(&[&last.payload]).expect("genuine accounted for");
    assert_eq!(
        genuine.packets.len() + genuine.keepalives,
        1,
        "a failed tag commits nothing: the genuine packet still opens"
    );
    for rx in [server_rx, client_rx, fresh] {
        rx.finish().unwrap_or_else(|e| panic!("{test}: models: {e}"));
    }
}

#[test]
fn real_openvpn_traffic_decrypts_through_the_datapath_rx_aes_256_gcm() {
    real_traffic_decrypts_to_the_tun_packets(
        "real_openvpn_traffic_decrypts_through_the_datapath_rx_aes_256_gcm",
        DataCipher::Aes256Gcm,
    );
}

#[test]
fn real_openvpn_traffic_decrypts_through_the_datapath_rx_chacha20_poly1305() {
    real_traffic_decrypts_to_the_tun_packets(
        "real_openvpn_traffic_decrypts_through_the_datapath_rx_chacha20_poly1305",
        DataCipher::ChaCha20Poly1305,
    );
}

/// Echo server in `ns` on `addr`: accepts one connection within
/// [`TCP_TIMEOUT`] and sends back everything it reads.
fn echo_server(ns: &NetNs, addr: SocketAddrV4) -> std::thread::JoinHandle<Result<usize, String>> {
    let listener = ns.run(|| TcpListener::bind(addr)).expect("enter server namespace").expect("bind echo listener");
    listener.set_nonblocking(true).expect("nonblocking listener");
    std::thread::spawn(move || {
        let deadline = Instant::now() + TCP_TIMEOUT;
        let mut stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(POLL_INTERVAL)
                }
                Err(e) => return Err(format!("echo accept: {e}")),
            }
        };
        stream.set_nonblocking(false).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(TCP_TIMEOUT)).map_err(|e| e.to_string())?;
        stream.set_write_timeout(Some(TCP_TIMEOUT)).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            let n = stream.read(&mut buf).map_err(|e| format!("echo read: {e}"))?;
            if n == 0 {
                break;
            }
            stream.write_all(&buf[..n]).map_err(|e| format!("echo write: {e}"))?;
            total += n;
        }
        Ok(total)
    })
}

/// Sends [`TCP_TRANSFER_BYTES`] from `ns` to `to` and checks the echo.
fn tcp_echo_through(ns: &NetNs, to: SocketAddrV4) -> Result<(), String> {
    let stream = ns
        .run(|| TcpStream::connect_timeout(&SocketAddr::V4(to), TCP_TIMEOUT))?
        .map_err(|e| format!("connect {to}: {e}"))?;
    stream.set_read_timeout(Some(TCP_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(TCP_TIMEOUT)).map_err(|e| e.to_string())?;
    let data: Vec<u8> = (0..TCP_TRANSFER_BYTES).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let expected = data.clone();
    let sender = std::thread::spawn(move || -> Result<(), String> {
        writer.write_all(&data).map_err(|e| format!("send: {e}"))?;
        writer.shutdown(std::net::Shutdown::Write).map_err(|e| format!("shutdown: {e}"))
    });
    let mut echoed = Vec::with_capacity(TCP_TRANSFER_BYTES);
    (&stream).read_to_end(&mut echoed).map_err(|e| format!("receive after {} bytes: {e}", echoed.len()))?;
    sender.join().map_err(|_| "sender panicked".to_owned())??;
    if echoed != expected {
        return Err(format!("echo differs: {} bytes back of {}", echoed.len(), expected.len()));
    }
    Ok(())
}

/// Waits until `check` holds, for at most [`WAIT`].
fn wait_until(what: &str, mut check: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    while !check() {
        if Instant::now() >= deadline {
            return Err(format!("timed out after {WAIT:?} waiting for {what}"));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Ok(())
}

/// The MSS the tunnel clamps TCP SYNs to, as SET_PEER's MSS would: 1400
/// keeps an encrypted full segment (1400 + 40 + 24 + 28 = 1492 bytes)
/// inside the veth's 1500-byte MTU, so no outer fragmentation.
const TUNNEL_MSS: u16 = 1400;

/// Write: the host tunnel (the data path over the models) takes over the
/// real client's session.
fn host_tunnel_takes_over_the_real_client(test: &str, cipher: DataCipher) {
    let Some(mut session) = session_or_skip(test, cipher) else { return };
    let a = session.addresses.clone();

    // Some real traffic first, so the takeover must continue above its ids.
    ping(session.client_ns(), a.server_tun, 3).unwrap_or_else(|e| panic!("{e}\n{}", session.log_tails()));
    session.client().kill();
    let highest = session.highest_client_packet_id();
    assert!(highest >= 4, "the real client sent its pings before the takeover (highest id {highest})");
    let tun = session.client_tun().to_owned();
    let config = TunnelConfig {
        upper: Upper::Tun(tun.clone()),
        proto: TunnelProto::Udp,
        network: Network::Real,
        local: SocketAddr::V4(a.client_link),
        remote: SocketAddr::V4(a.server_link),
        keys: session.keys.client_keys(),
        first_packet_id: highest + 1,
        keepalive_interval: 1,
        keepalive_timeout: 0,
        mss: Some(TUNNEL_MSS),
        tun_offload: true,
        verification: Verification::Full,
    };
    let tunnel = session
        .client_ns()
        .run(|| HostTunnel::start(&config))
        .expect("enter the client namespace")
        .unwrap_or_else(|e| panic!("{test}: host tunnel: {e}\n{}", session.log_tails()));
    // The persistent tun kept its address; make sure of it and of the link.
    let address = format!("{}/{}", a.client_tun, a.tun_prefix);
    session.client_ns().ip(&["addr", "replace", &address, "dev", &tun]).expect("tun address");
    session.client_ns().ip(&["link", "set", &tun, "up"]).expect("tun up");

    let fail = |session: &Session, e: String| -> ! {
        panic!(
            "{test}: {e}\ntunnel: {:?}\ndrops: {}\n{}",
            tunnel.stats(),
            tunnel.drop_summary(),
            session.server_log_tail()
        )
    };
    ping(session.client_ns(), a.server_tun, 3).unwrap_or_else(|e| fail(&session, e));

    let echo = echo_server(session.server_ns(), SocketAddrV4::new(a.server_tun, ECHO_PORT));
    tcp_echo_through(session.client_ns(), SocketAddrV4::new(a.server_tun, ECHO_PORT))
        .unwrap_or_else(|e| fail(&session, e));
    let echoed = echo.join().expect("echo thread").unwrap_or_else(|e| fail(&session, e));
    assert_eq!(echoed, TCP_TRANSFER_BYTES);

    // Keepalives both ways: the server pings every 2 s, the tunnel's timer
    // after 1 s of silence. The data path consumes the server's (opened,
    // never indicated).
    wait_until("a keepalive from the server", || tunnel.stats().consumed_after_decrypt > 0)
        .unwrap_or_else(|e| fail(&session, e));
    wait_until("a keepalive to the server", || tunnel.stats().keepalives_sent > 0)
        .unwrap_or_else(|e| fail(&session, e));

    // Replay and tamper, judged by the real server's log at verb 4.
    session.server().set_verb(4).expect("server verb 4");
    let mark = session.server().log_len();
    let ping_packet = tunnel.seal(&KEEPALIVE_PING).expect("seal");
    tunnel.send_raw(&ping_packet).expect("send");
    tunnel.send_raw(&ping_packet).expect("send replay");
    session.server().wait_for_log_after(mark, SERVER_REPLAY_LINE, WAIT).unwrap_or_else(|e| fail(&session, e));
    let mut tampered = tunnel.seal(&KEEPALIVE_PING).expect("seal");
    *tampered.last_mut().expect("ciphertext") ^= 0x01;
    tunnel.send_raw(&tampered).expect("send tampered");
    session.server().wait_for_log_after(mark, SERVER_AUTH_FAIL_LINE, WAIT).unwrap_or_else(|e| fail(&session, e));
    // And it still takes the tunnel's packets afterwards, each exactly once.
    ping(session.client_ns(), a.server_tun, 2).unwrap_or_else(|e| fail(&session, e));
    let log = session.server().log();
    let after = log.get(mark..).unwrap_or_default();
    assert_eq!(after.matches(SERVER_REPLAY_LINE).count(), 1, "exactly the one replay is rejected");
    assert_eq!(after.matches("AEAD Decrypt error").count(), 2, "nothing but the replay and the tampered packet fails");

    let dp = tunnel.datapath().copies();
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    // Only clamped SYNs are gathered into the send slot (every TUN packet
    // is one fragment): the handshake's MSS was clamped.
    assert!(dp.tx_copied_bytes.load(relaxed) > 0, "the TCP handshake's MSS was clamped");
    assert_eq!(dp.rx_copied_bytes.load(relaxed), 0, "RX zero-copy");
    let drops = tunnel.drop_summary();
    let stats = tunnel.stop().unwrap_or_else(|e| panic!("{test}: models: {e}"));
    assert_eq!(stats.datapath_drops, 0, "every datagram from the server opened and was indicated: {drops}");
    eprintln!("{test}: took over at packet id {}, {stats:?}", highest + 1);
}

#[test]
fn the_host_tunnel_takes_over_a_real_openvpn_client_aes_256_gcm() {
    host_tunnel_takes_over_the_real_client(
        "the_host_tunnel_takes_over_a_real_openvpn_client_aes_256_gcm",
        DataCipher::Aes256Gcm,
    );
}

#[test]
fn the_host_tunnel_takes_over_a_real_openvpn_client_chacha20_poly1305() {
    host_tunnel_takes_over_the_real_client(
        "the_host_tunnel_takes_over_a_real_openvpn_client_chacha20_poly1305",
        DataCipher::ChaCha20Poly1305,
    );
}
