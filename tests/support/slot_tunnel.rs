//! A minimal tunnel over the crate's key slots: TUN device on one side, UDP
//! socket to a real OpenVPN server on the other.
//!
//! STAND-IN: this is not the driver's data path. It exists so that the
//! real-peer tests can already prove that what `proto` + `crypto::slots`
//! write, real OpenVPN accepts, and what it writes, they read. When the data
//! path (zero-copy RX / one-pass TX over the NetAdapterCx and WSK models)
//! lands, the host tunnel tool over that data path replaces this module:
//! [`SlotReceiver`] is where captured datagrams enter RX, and [`SlotTunnel`]
//! is the loop that tool runs. Everything per packet here copies and locks;
//! none of that is a model for the driver.

use super::netns::NetNs;
use ovpn_dco::crypto::host::{HostCrypto, HostKey};
use ovpn_dco::crypto::slots::{DataError, RxSlots, SlotIndex, TxSlots};
use ovpn_dco::proto::PeerId;
use ovpn_dco::proto::aead_frame::STANDARD_HEAD_ROOM;
use ovpn_dco::proto::keepalive::{KEEPALIVE_PING, is_keepalive};
use ovpn_dco::proto::mss::{MssLimit, MssOutcome, clamp_mss};
use ovpn_dco::proto::opcode::{ClassifyError, PacketKind, classify};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::openvpn::SessionKeys;

/// Largest inner packet: the tun MTU OpenVPN configures (`tun-mtu 1500`).
pub const TUN_MTU: usize = 1500;

/// MSS the tunnel clamps TCP SYNs to, as SET_PEER's MSS would: 1400 keeps
/// an encrypted full segment (1400 + 40 + 24 + 28 = 1492 bytes) inside the
/// veth's 1500-byte MTU, so no outer fragmentation.
pub const TUNNEL_MSS: u16 = 1400;

/// How long the loop waits for either descriptor before looking at the stop
/// flag and the keepalive timer again.
const POLL_TIMEOUT_MS: libc::c_int = 50;

/// What came out of one received datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// An inner IP packet for the tun device.
    Packet(Vec<u8>),
    /// OpenVPN's keepalive ping, consumed here.
    Keepalive,
    /// A control-channel packet (not the data path's business).
    Control,
}

/// Why a received datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxError {
    /// Too short to classify.
    Malformed(ClassifyError),
    /// A data packet the key slots refused (replay, authentication, key id).
    Data(DataError),
}

impl From<DataError> for RxError {
    fn from(e: DataError) -> Self {
        RxError::Data(e)
    }
}

/// Receives data-channel datagrams through `RxSlots` prepare/open/commit,
/// the way the driver's RX does (decrypt in place, then commit the packet id
/// to the replay window). Captured datagrams go through here today; later
/// they go through the data path's RX instead.
pub struct SlotReceiver {
    slots: RxSlots<HostKey>,
    clock: Instant,
}

impl SlotReceiver {
    /// A receiver for the RX half of a key slot.
    pub fn new(slot: ovpn_dco::crypto::slots::Slot<HostKey>) -> Self {
        let mut slots = RxSlots::new();
        slots.install(SlotIndex::Primary, slot.rx);
        SlotReceiver { slots, clock: Instant::now() }
    }

    pub fn receive(&mut self, datagram: &[u8]) -> Result<Received, RxError> {
        match classify(datagram).map_err(RxError::Malformed)? {
            PacketKind::Data(_) => {}
            PacketKind::Control => return Ok(Received::Control),
        }
        let now = self.clock.elapsed().as_secs();
        let mut buf = datagram.to_vec();
        let opened = self.slots.prepare(&buf, now)?.open(&mut buf)?;
        self.slots.commit(&HostCrypto, &opened.ticket, now)?;
        let plaintext = &buf[opened.plaintext];
        Ok(if is_keepalive(plaintext) { Received::Keepalive } else { Received::Packet(plaintext.to_vec()) })
    }
}

/// Counters of the tunnel loop.
#[derive(Clone, Debug, Default)]
pub struct TunnelStats {
    pub tun_to_link: u64,
    pub link_to_tun: u64,
    pub keepalives_sent: u64,
    pub keepalives_received: u64,
    pub control_received: u64,
    pub syn_clamped: u64,
    /// Datagrams from the server that did not decrypt, with the reason.
    pub rx_errors: Vec<RxError>,
}

struct Shared {
    tx: Mutex<TxSlots<HostKey>>,
    peer_id: PeerId,
    socket: UdpSocket,
    stats: Mutex<TunnelStats>,
    last_send: Mutex<Instant>,
}

impl Shared {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; STANDARD_HEAD_ROOM + plaintext.len()];
        let mut tx = self.tx.lock().expect("tx slots");
        let n =
            tx.encrypt_from(&HostCrypto, self.peer_id, plaintext, &mut buf).map_err(|e| format!("encrypt: {e:?}"))?;
        buf.truncate(n);
        Ok(buf)
    }

    fn send(&self, datagram: &[u8]) -> Result<(), String> {
        self.socket.send(datagram).map_err(|e| format!("UDP send: {e}"))?;
        *self.last_send.lock().expect("last send") = Instant::now();
        Ok(())
    }
}

/// The running tunnel: one thread polling the tun device and the socket.
pub struct SlotTunnel {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl SlotTunnel {
    /// Attaches to tun device `tun` in `ns`, binds `local` there, and carries
    /// packets to and from `server` with the client's keys. The first packet
    /// id sent is `first_packet_id`; a keepalive goes out after `keepalive`
    /// of silence.
    pub fn start(
        ns: &NetNs,
        tun: &str,
        keys: &SessionKeys,
        first_packet_id: u32,
        local: SocketAddrV4,
        server: SocketAddrV4,
        keepalive: Duration,
    ) -> Result<SlotTunnel, String> {
        let (tun_file, socket) = ns.run(|| -> Result<(File, UdpSocket), String> {
            let socket = UdpSocket::bind(local).map_err(|e| format!("bind {local}: {e}"))?;
            socket.connect(server).map_err(|e| format!("connect {server}: {e}"))?;
            Ok((open_tun(tun)?, socket))
        })??;
        socket.set_nonblocking(true).map_err(|e| format!("nonblocking socket: {e}"))?;

        let slot = keys.client_slot();
        let mut tx = TxSlots::new();
        tx.install(SlotIndex::Primary, slot.tx);
        let shared = Arc::new(Shared {
            tx: Mutex::new(tx),
            peer_id: keys.peer_id,
            socket,
            stats: Mutex::new(TunnelStats::default()),
            last_send: Mutex::new(Instant::now()),
        });
        // Key slots start every sender at packet id 1, which is right for a
        // driver that owns a key from its first packet. Taking over a key
        // the real client already used means continuing above its ids (the
        // server's replay window rejects the rest), so ids are used up
        // through the public API until the next one is `first_packet_id`.
        for _ in 1..first_packet_id {
            shared.seal(&[])?;
        }
        let receiver = SlotReceiver::new(keys.client_slot());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::spawn(move || run(&shared, tun_file, receiver, &stop, keepalive))
        };
        Ok(SlotTunnel { shared, stop, thread: Some(thread) })
    }

    /// Encrypts `plaintext` as the next data packet without sending it.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        self.shared.seal(plaintext)
    }

    /// Sends raw bytes to the server from the tunnel's socket.
    pub fn send_raw(&self, datagram: &[u8]) -> Result<(), String> {
        self.shared.send(datagram)
    }

    pub fn stats(&self) -> TunnelStats {
        self.shared.stats.lock().expect("stats").clone()
    }

    /// Stops the loop; its error if it failed.
    pub fn stop(mut self) -> Result<TunnelStats, String> {
        self.halt()?;
        Ok(self.stats())
    }

    fn halt(&mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err("tunnel thread panicked".into()),
            None => Ok(()),
        }
    }
}

impl Drop for SlotTunnel {
    fn drop(&mut self) {
        if let Err(e) = self.halt() {
            eprintln!("slot tunnel: {e}");
        }
    }
}

/// Opens `/dev/net/tun` and attaches to the device `name` (IFF_TUN |
/// IFF_NO_PI: raw IP packets), in the calling thread's namespace.
fn open_tun(name: &str) -> Result<File, String> {
    let file = File::options().read(true).write(true).open("/dev/net/tun").map_err(|e| format!("/dev/net/tun: {e}"))?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(format!("tun name {name} too long"));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is, for the
    // duration of the call on a descriptor `file` owns.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &raw mut req) } != 0 {
        return Err(format!("TUNSETIFF {name}: {}", std::io::Error::last_os_error()));
    }
    // Nonblocking from here so one poll loop can serve both descriptors.
    // SAFETY: fcntl on an fd `file` owns.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    Ok(file)
}

/// Whether an I/O error only means "nothing to do now".
fn idle(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

fn run(
    shared: &Shared,
    mut tun: File,
    mut receiver: SlotReceiver,
    stop: &AtomicBool,
    keepalive: Duration,
) -> Result<(), String> {
    let limit = MssLimit::new(TUNNEL_MSS).expect("nonzero");
    let mut packet = vec![0u8; TUN_MTU + 64];
    let mut datagram = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [
            libc::pollfd { fd: tun.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: shared.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: `fds` is an array of two pollfd that lives across the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_TIMEOUT_MS) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if idle(&e) {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        // tun -> link, a bounded batch per wake-up.
        for _ in 0..64 {
            let n = match tun.read(&mut packet) {
                Ok(n) => n,
                Err(e) if idle(&e) => break,
                Err(e) => return Err(format!("tun read: {e}")),
            };
            let inner = &mut packet[..n];
            if let MssOutcome::Clamped { .. } = clamp_mss(inner, limit) {
                shared.stats.lock().expect("stats").syn_clamped += 1;
            }
            let sealed = shared.seal(inner)?;
            shared.send(&sealed)?;
            shared.stats.lock().expect("stats").tun_to_link += 1;
        }
        // link -> tun.
        for _ in 0..64 {
            let n = match shared.socket.recv(&mut datagram) {
                Ok(n) => n,
                Err(e) if idle(&e) || e.kind() == ErrorKind::ConnectionRefused => break,
                Err(e) => return Err(format!("UDP recv: {e}")),
            };
            let received = receiver.receive(&datagram[..n]);
            let mut stats = shared.stats.lock().expect("stats");
            match received {
                Ok(Received::Packet(mut inner)) => {
                    if let MssOutcome::Clamped { .. } = clamp_mss(&mut inner, limit) {
                        stats.syn_clamped += 1;
                    }
                    drop(stats);
                    match tun.write(&inner) {
                        Ok(_) => shared.stats.lock().expect("stats").link_to_tun += 1,
                        Err(e) if idle(&e) => {} // tun queue full: dropped, as a NIC would
                        Err(e) => return Err(format!("tun write: {e}")),
                    }
                }
                Ok(Received::Keepalive) => stats.keepalives_received += 1,
                Ok(Received::Control) => stats.control_received += 1,
                Err(e) => stats.rx_errors.push(e),
            }
        }
        let silent = shared.last_send.lock().expect("last send").elapsed();
        if silent >= keepalive {
            let ping = shared.seal(&KEEPALIVE_PING)?;
            shared.send(&ping)?;
            shared.stats.lock().expect("stats").keepalives_sent += 1;
        }
    }
    Ok(())
}
