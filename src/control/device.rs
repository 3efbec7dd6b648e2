//! One ovpn-dco adapter as OpenVPN sees it through its handle: the mode
//! gate, the P2P peer or the MP peer table, key installation, keepalive,
//! the control channel, notifications and statistics.
//!
//! [`Device`] is a pure state machine. Every entry point takes its input
//! (an IOCTL, a ReadFile or WriteFile, a received control packet, a socket
//! event, a clock tick) and returns what happened: a completion status, a
//! request parked, and [`Actions`] for the caller to execute after it has
//! released the device lock (open or close a socket, send a keepalive,
//! report the link state). Parked requests are completed through
//! [`Request::complete`] by whichever later input satisfies them.
//!
//! Behaviour follows ovpn-dco-win as recorded in
//! `docs/openvpn-ioctl-sequences.md` (read from the driver and OpenVPN
//! sources); where it disagrees with `ovpn-dco-interface.md` the research
//! wins and the comment at the spot says so. Where ovpn-dco-win's behaviour
//! is unknown or harmful, the choice is stated where it is made.
//!
//! # Check, then commit
//! Every IOCTL validates everything (mode, sizes, lookups, room for actions,
//! key creation) before it changes anything, so an IOCTL that fails leaves
//! the device exactly as it was ([`Device::snapshot`] compares equal).
//!
//! # Locking (kernel)
//! The caller holds the device spin lock around every call. The device
//! takes a peer's TX and RX slot locks inside it (key install and swap), so
//! the data path must never take the device lock while it holds a peer's
//! slot lock.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::marker::PhantomData;
use core::mem::{offset_of, size_of};
use core::net::{IpAddr, SocketAddr};

use super::actions::{Action, Actions, LinkState, TransportId};
use super::ctl_queue::{self, CONTROL_WRITE_MAX, ControlBytes, ControlQueue, canonical};
use super::iroute::{RouteError, RouteTable, host_bits};
use super::keepalive::Keepalive;
use super::notify::{NOTIFY_EVENT_LEN, Notifications};
use super::peers::{Endpoint, Peer, PeerStatsSnapshot};
use super::request::{Parked, QueueFull, Request, RequestId};
use super::stats::{self, DeviceStats};
use crate::crypto::CryptoProvider;
use crate::crypto::slots::{self, InstallError, SlotIndex};
use crate::ntstatus::NtStatus;
use crate::os::time::Instant;
use crate::proto::aead_frame::Layout;
use crate::proto::epoch::EpochError;
use crate::proto::{KeyId, PeerId};
use crate::uapi::codes::Ioctl;
use crate::uapi::decode::{
    self, CryptoData, DelPeerReason, DirectionKey, EncodeError, KeySlot, Mode, MpStartVpn, NotifyEvent, PeerStatsQuery,
    Request as Decoded, SetPeer, Transport,
};
use crate::uapi::types::{OvpnCryptoData, OvpnMpNewPeer, OvpnMpStartVpn, OvpnPeerStats, OvpnVersion};

/// The ovpn-dco-win interface level GET_VERSION reports. OpenVPN 2.7 gates
/// multipeer on Major ≥ 2 and epoch data keys (NEW_KEY_V2 with
/// CRYPTO_OPTIONS_EPOCH) on (Major == 2 && Minor ≥ 8) || Major > 2
/// (dco_win.c `dco_supports_epoch_data`). ovpn-dco-win's INTEGRATION.md
/// names 2.4 for epoch keys, but a driver reporting 2.4–2.7 has the older
/// CryptoOptions bits and OpenVPN would not use epochs with it, so this
/// follows OpenVPN's gate (research §2).
pub const INTERFACE_VERSION: OvpnVersion = OvpnVersion { major: 2, minor: 8, patch: 0 };

/// ReadFile requests that may wait at once. OpenVPN keeps one read pending
/// (socket.c `socket_recv_queue`, asio's `async_read_some` in OpenVPN 3);
/// ovpn-dco-win does not bound its queue. Past this a read fails with
/// STATUS_INSUFFICIENT_RESOURCES.
pub const PARKED_READS_MAX: usize = 16;

/// Peers an MP server may hold. OpenVPN's peer ids index its instance
/// array (`--max-clients`, 1024 by default); ovpn-dco-win only stops when
/// allocation fails (STATUS_NO_MEMORY, which this returns past the bound).
/// Sized with [`super::iroute::MAX_ROUTES`], which holds their host routes.
pub const MAX_PEERS: usize = 65_536;

/// The id of the P2P peer: NEW_PEER carries none, so ovpn-dco-win's peer
/// starts zeroed; NEW_KEY then sets the id sent in headers.
const P2P_PEER_ID: PeerId = match PeerId::new(0) {
    Some(id) => id,
    None => PeerId::UNDEFINED,
};

type KeyOf<P> = <P as CryptoProvider>::Key;

/// Where a socket the device asked for stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketState {
    /// [`Action::OpenUdp`] / [`Action::OpenTcp`] issued, no result yet.
    Opening,
    /// TCP: created, connect in progress.
    Connecting,
    /// Usable: control packets may be written, data may flow.
    Ready,
}

/// A socket of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Socket {
    pub id: TransportId,
    pub transport: Transport,
    pub state: SocketState,
}

/// Which key a slot holds (the keys themselves live in the peer's slots).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub key_id: KeyId,
    pub layout: Layout,
}

/// A peer and the control plane's own state about it.
struct PeerEntry<K> {
    peer: Arc<Peer<K>>,
    keepalive: Keepalive,
    /// What NEW_KEY put in [primary, secondary], swapped with the slots.
    keys: [Option<KeyInfo>; 2],
}

impl<K> PeerEntry<K> {
    fn new(peer: Peer<K>) -> Self {
        Self { peer: Arc::new(peer), keepalive: Keepalive::default(), keys: [None, None] }
    }

    fn set_peer(&mut self, params: &SetPeer, now: Instant) {
        self.keepalive.configure(params.keepalive_interval, params.keepalive_timeout, now);
        if let Some(mss) = params.mss {
            self.peer.set_mss(mss);
        }
    }

    fn swap_keys(&mut self)
    where
        K: crate::crypto::AeadKey,
    {
        // ovpn-dco-win swaps blindly, even with no secondary key: the
        // primary then becomes the empty slot and a second swap restores it
        // (research §5.2, correcting the reference's silence on it).
        self.peer.tx.lock().swap();
        self.peer.rx.lock().swap();
        self.keys.swap(0, 1);
    }

    fn stats(&self) -> OvpnPeerStats {
        let s = self.peer.stats.snapshot();
        let long = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        OvpnPeerStats {
            // PeerId::MAX fits an i32.
            peer_id: self.peer.id().get() as i32,
            link_rx_bytes: long(s.link_rx_bytes),
            link_tx_bytes: long(s.link_tx_bytes),
            vpn_rx_bytes: long(s.vpn_rx_bytes),
            vpn_tx_bytes: long(s.vpn_tx_bytes),
        }
    }

    fn snapshot(&self) -> PeerSnapshot {
        PeerSnapshot {
            id: self.peer.id(),
            endpoint: self.peer.endpoint(),
            vpn_v4: self.peer.vpn_v4(),
            vpn_v6: self.peer.vpn_v6(),
            keepalive: self.keepalive,
            mss: self.peer.mss(),
            keys: self.keys,
            key_installs: self.peer.rx.lock().installs(),
            stats: self.peer.stats.snapshot(),
            last_sent: self.peer.last_sent(),
            last_received: self.peer.last_received(),
        }
    }
}

/// P2P: the one peer and its socket.
struct P2p<K> {
    entry: PeerEntry<K>,
    socket: Socket,
}

/// MP: the listening socket and the peer table with its indexes.
struct Mp<K> {
    listener: Option<Socket>,
    peers: BTreeMap<PeerId, PeerEntry<K>>,
    /// Transport address → peer (float checks). An address already taken
    /// is not re-indexed, as ovpn-dco-win only logs that failure.
    by_remote: BTreeMap<SocketAddr, PeerId>,
    /// VPN addresses (host routes) and iroutes → peer.
    routes: RouteTable<PeerId>,
}

impl<K> Mp<K> {
    fn new() -> Self {
        Self { listener: None, peers: BTreeMap::new(), by_remote: BTreeMap::new(), routes: RouteTable::new() }
    }

    /// Removes a peer from the table and every index.
    fn remove(&mut self, id: PeerId) -> Option<PeerEntry<K>> {
        let entry = self.peers.remove(&id)?;
        unindex(&mut self.by_remote, &mut self.routes, id, &entry);
        Some(entry)
    }
}

fn unindex<K>(
    by_remote: &mut BTreeMap<SocketAddr, PeerId>,
    routes: &mut RouteTable<PeerId>,
    id: PeerId,
    entry: &PeerEntry<K>,
) {
    let remote = canonical(entry.peer.endpoint().remote);
    if by_remote.get(&remote) == Some(&id) {
        by_remote.remove(&remote);
    }
    // ovpn-dco-win OvpnPeerDelete drops the peer's iroutes with it.
    routes.remove_value(id);
}

/// An IOCTL waiting for its socket.
enum Opening {
    /// NEW_PEER: UDP completes when the socket exists, TCP when connected.
    NewPeer,
    /// MP_START_VPN: completes with its input echoed back.
    MpStartVpn(MpStartVpn),
}

struct PendingOpen<R> {
    request: R,
    transport: TransportId,
    what: Opening,
}

/// What [`Device::ioctl`] did with the request.
#[derive(Debug)]
pub enum Outcome<R> {
    /// Complete `request` now with `status` and Information = `information`;
    /// the output buffer already holds that many bytes.
    Complete { request: R, status: NtStatus, information: usize },
    /// The device keeps the request and completes it later.
    Parked,
}

impl<R> Outcome<R> {
    /// The status of an immediate completion.
    pub fn status(&self) -> Option<NtStatus> {
        match self {
            Outcome::Complete { status, .. } => Some(*status),
            Outcome::Parked => None,
        }
    }
}

/// What [`Device::read`] did with the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Completed at once with this status.
    Completed(NtStatus),
    Parked,
}

/// A control packet accepted by [`Device::write`], for the caller to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlSend {
    pub transport: TransportId,
    pub to: SocketAddr,
    pub bytes: ControlBytes,
}

enum Reply {
    Done { status: NtStatus, information: usize },
    ParkNotify,
    ParkOpen { transport: TransportId, what: Opening },
}

fn done(information: usize) -> Result<Reply, NtStatus> {
    Ok(Reply::Done { status: NtStatus::SUCCESS, information })
}

/// A peer as [`DeviceSnapshot`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSnapshot {
    pub id: PeerId,
    pub endpoint: Endpoint,
    pub vpn_v4: Option<core::net::Ipv4Addr>,
    pub vpn_v6: Option<core::net::Ipv6Addr>,
    pub keepalive: Keepalive,
    pub mss: Option<u16>,
    pub keys: [Option<KeyInfo>; 2],
    /// Keys installed so far: a failed NEW_KEY must not have replaced one,
    /// even by a key of the same id and layout.
    pub key_installs: u64,
    pub stats: PeerStatsSnapshot,
    pub last_sent: Instant,
    pub last_received: Instant,
}

/// Everything observable about a device, comparable: a failed IOCTL must
/// leave it equal. Allocates; for tests and diagnostics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSnapshot {
    pub mode: Mode,
    pub link_up: bool,
    pub p2p: Option<(Socket, PeerSnapshot)>,
    pub listener: Option<Socket>,
    pub mp_peers: Vec<PeerSnapshot>,
    pub by_remote: Vec<(SocketAddr, PeerId)>,
    pub routes: Vec<(IpAddr, u8, PeerId)>,
    pub pending_open: Option<(RequestId, TransportId)>,
    pub parked_reads: Vec<RequestId>,
    pub parked_notify: Vec<RequestId>,
    pub control_queue: Vec<Vec<u8>>,
    pub events: Vec<NotifyEvent>,
    pub lost_events: u64,
    pub read_signal: Option<NtStatus>,
    pub stats: crate::uapi::types::OvpnStats,
    pub next_transport: u64,
}

/// The device state machine of one adapter handle.
pub struct Device<P: CryptoProvider, R: Request> {
    mode: Mode,
    link_up: bool,
    p2p: Option<P2p<KeyOf<P>>>,
    mp: Mp<KeyOf<P>>,
    pending_open: Option<PendingOpen<R>>,
    reads: Parked<R>,
    control_rx: ControlQueue,
    /// A P2P keepalive timeout or TCP disconnect that found no pending read.
    /// ovpn-dco-win drops such a signal ("No pending request for keepalive
    /// timeout notification"); OpenVPN always re-arms its read, so this
    /// keeps it for the next read instead, which cannot be missed.
    read_signal: Option<NtStatus>,
    notify: Notifications<R>,
    stats: Arc<DeviceStats>,
    next_transport: u64,
    _crypto: PhantomData<fn() -> P>,
}

impl<P: CryptoProvider, R: Request> Default for Device<P, R> {
    fn default() -> Self {
        Self::new()
    }
}

/// ovpn-dco-win Driver.cpp `OvpnDeviceCheckMode`: P2P-only and MP-only
/// IOCTLs. The later MP IOCTLs (MP_DEL_PEER, MP_SWAP_KEYS, iroutes) are
/// MP-only as its test tool lists them. GET_PEER_STATS is allowed in both:
/// the test tool marks it MP-only, but OpenVPN 2.7's P2P client calls it and
/// falls back to GET_STATS only on ERROR_INVALID_FUNCTION, not on the
/// ERROR_BAD_COMMAND the gate would give (research §5.1).
fn allowed(mode: Mode, ioctl: Ioctl) -> bool {
    match ioctl {
        Ioctl::NewPeer | Ioctl::DelPeer | Ioctl::SwapKeys | Ioctl::SetPeer | Ioctl::StartVpn => mode == Mode::P2p,
        Ioctl::MpStartVpn
        | Ioctl::MpNewPeer
        | Ioctl::MpSetPeer
        | Ioctl::MpDelPeer
        | Ioctl::MpSwapKeys
        | Ioctl::MpAddIroute
        | Ioctl::MpDelIroute => mode == Mode::Mp,
        Ioctl::GetStats
        | Ioctl::NewKey
        | Ioctl::NewKeyV2
        | Ioctl::GetVersion
        | Ioctl::SetMode
        | Ioctl::NotifyEvent
        | Ioctl::GetPeerStats => true,
    }
}

fn need(buf_len: usize, size: usize) -> Result<(), NtStatus> {
    if buf_len < size { Err(NtStatus::BUFFER_TOO_SMALL) } else { Ok(()) }
}

/// A PeerId field read before the full decode (ovpn-dco-win looks some
/// peers up before it validates the rest): `None` if no peer can have it.
fn raw_peer_id(input: &[u8], at: usize) -> Option<PeerId> {
    let raw = i32::from_le_bytes(input.get(at..at.checked_add(4)?)?.try_into().ok()?);
    u32::try_from(raw).ok().and_then(PeerId::new)
}

fn install_status(e: InstallError) -> NtStatus {
    match e {
        InstallError::BadKeyLength => NtStatus::INVALID_PARAMETER,
        InstallError::Crypto(c) | InstallError::Epoch(EpochError::Crypto(c)) => c.status(),
        InstallError::Epoch(_) => NtStatus::UNSUCCESSFUL,
    }
}

fn route_status(e: RouteError) -> NtStatus {
    match e {
        RouteError::BadPrefixLength => NtStatus::INVALID_PARAMETER,
        RouteError::TableFull => NtStatus::INSUFFICIENT_RESOURCES,
    }
}

fn direction(key: &DirectionKey) -> slots::DirectionKey<'_> {
    slots::DirectionKey { key: key.epoch_secret(), key_len: key.key_len(), nonce_tail: *key.nonce_tail() }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Room for `n` actions, checked before any state changes.
fn room(actions: &Actions, n: usize) -> Result<(), NtStatus> {
    if actions.room() < n { Err(NtStatus::INSUFFICIENT_RESOURCES) } else { Ok(()) }
}

/// Pushes an action whose room was checked (or, on teardown paths, that
/// the caller's empty list always has room for).
fn push(actions: &mut Actions, action: Action) {
    let pushed = actions.push(action);
    debug_assert!(pushed.is_ok(), "room for {action:?} was checked");
}

impl<P: CryptoProvider, R: Request> Device<P, R> {
    /// A device as a freshly opened handle finds it: P2P, no peer, link down.
    pub fn new() -> Self {
        Self {
            mode: Mode::P2p,
            link_up: false,
            p2p: None,
            mp: Mp::new(),
            pending_open: None,
            reads: Parked::new(PARKED_READS_MAX),
            control_rx: ControlQueue::new(),
            read_signal: None,
            notify: Notifications::new(),
            stats: Arc::new(DeviceStats::default()),
            next_transport: 1,
            _crypto: PhantomData,
        }
    }

    // -----------------------------------------------------------------
    // IOCTLs

    /// DeviceIoControl on the adapter handle.
    ///
    /// `input` and `output` are the request's buffers. With METHOD_BUFFERED
    /// they are the same system buffer in the kernel: the caller copies the
    /// input out first (at most 104 bytes are read). On
    /// [`Outcome::Complete`] `output` holds `information` bytes; a parked
    /// request is later completed through [`Request::complete`].
    #[allow(clippy::too_many_arguments)]
    pub fn ioctl(
        &mut self,
        crypto: &P,
        code: u32,
        input: &[u8],
        output: &mut [u8],
        request: R,
        now: Instant,
        actions: &mut Actions,
    ) -> Outcome<R> {
        let reply = self
            .dispatch(crypto, code, input, output, now, actions)
            .unwrap_or_else(|status| Reply::Done { status, information: 0 });
        match reply {
            Reply::Done { status, information } => Outcome::Complete { request, status, information },
            Reply::ParkNotify => match self.notify.park(request) {
                Ok(()) => Outcome::Parked,
                // dispatch checked for room
                Err(QueueFull(request)) => {
                    Outcome::Complete { request, status: NtStatus::INSUFFICIENT_RESOURCES, information: 0 }
                }
            },
            Reply::ParkOpen { transport, what } => {
                debug_assert!(self.pending_open.is_none());
                self.pending_open = Some(PendingOpen { request, transport, what });
                Outcome::Parked
            }
        }
    }

    fn dispatch(
        &mut self,
        crypto: &P,
        code: u32,
        input: &[u8],
        output: &mut [u8],
        now: Instant,
        actions: &mut Actions,
    ) -> Result<Reply, NtStatus> {
        // Order as Driver.cpp `OvpnEvtIoDeviceControl`: unknown code, then
        // the mode gate, then the handler's own checks.
        let ioctl = Ioctl::from_code(code).ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
        if !allowed(self.mode, ioctl) {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        self.precheck(ioctl, input)?;
        let decoded = decode::decode_request(code, input).map_err(|e| e.status())?;
        match decoded {
            Decoded::NewPeer(np) => {
                room(actions, 2)?;
                // OvpnPeerNew: "Peer already added, deleting existing peer"
                // (no notification), then the device counters start over.
                self.drop_p2p(actions);
                self.stats.reset();
                let id = self.new_transport_id();
                let endpoint = Endpoint { local: np.local, remote: np.remote };
                let peer = Peer::new(P2P_PEER_ID, endpoint, None, None, now);
                let socket = Socket { id, transport: np.transport, state: SocketState::Opening };
                self.p2p = Some(P2p { entry: PeerEntry::new(peer), socket });
                push(
                    actions,
                    match np.transport {
                        Transport::Udp => Action::OpenUdp {
                            transport: id,
                            local: np.local,
                            remote: Some(np.remote),
                            ipv6_only: false,
                        },
                        Transport::Tcp => Action::OpenTcp { transport: id, local: np.local, remote: np.remote },
                    },
                );
                // Parked even for UDP: the IOCTL must carry the socket's
                // creation status. The glue reports it before returning from
                // the dispatch routine, so OpenVPN sees UDP complete at once.
                Ok(Reply::ParkOpen { transport: id, what: Opening::NewPeer })
            }
            Decoded::DelPeer => {
                room(actions, 1)?;
                self.stop_vpn(actions);
                done(0)
            }
            Decoded::StartVpn => {
                room(actions, 1)?;
                // OvpnPeerStartVPN only sets the link state.
                self.set_link(LinkState::Up, actions);
                done(0)
            }
            Decoded::SetPeer(params) => {
                let p2p = self.p2p.as_mut().ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
                p2p.entry.set_peer(&params, now);
                done(0)
            }
            Decoded::SwapKeys => {
                let p2p = self.p2p.as_mut().ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
                p2p.entry.swap_keys();
                done(0)
            }
            Decoded::NewKey(data) | Decoded::NewKeyV2(data) => self.new_key(crypto, &data),
            Decoded::GetStats => done(decode::encode_stats(output, &self.stats.snapshot()).map_err(|e| e.status())?),
            Decoded::GetVersion => {
                done(decode::encode_version(output, &INTERFACE_VERSION).map_err(|e: EncodeError| e.status())?)
            }
            Decoded::SetMode(Mode::P2p) => done(0),
            Decoded::SetMode(Mode::Mp) => {
                // ovpn-dco-win would switch with a P2P peer and socket left
                // behind; OpenVPN never does that, and a P2P peer in MP mode
                // has no meaning here, so it is refused.
                if self.p2p.is_some() || self.pending_open.is_some() {
                    return Err(NtStatus::INVALID_DEVICE_STATE);
                }
                room(actions, 1)?;
                self.mode = Mode::Mp;
                // OpenVPN relies on SET_MODE(MP) connecting the adapter
                // (dco_win.c `ovpn_dco_init_mp`; there is no START_VPN in MP).
                self.set_link(LinkState::Up, actions);
                done(0)
            }
            Decoded::MpStartVpn(start) => {
                // The output is checked before the socket exists, so a short
                // buffer leaves no socket behind (ovpn-dco-win checks it after
                // creating the socket; research §3.2 recommends this order).
                need(output.len(), size_of::<OvpnMpStartVpn>())?;
                room(actions, 1)?;
                let id = self.new_transport_id();
                self.mp.listener = Some(Socket { id, transport: Transport::Udp, state: SocketState::Opening });
                push(
                    actions,
                    Action::OpenUdp { transport: id, local: start.listen, remote: None, ipv6_only: start.ipv6_only },
                );
                Ok(Reply::ParkOpen { transport: id, what: Opening::MpStartVpn(start) })
            }
            Decoded::MpNewPeer(new) => {
                if self.mp.peers.len() >= MAX_PEERS {
                    return Err(NtStatus::NO_MEMORY);
                }
                let endpoint = Endpoint { local: new.local, remote: canonical(new.remote) };
                let peer = Peer::new(new.peer_id, endpoint, new.vpn_ipv4, new.vpn_ipv6, now);
                self.mp.by_remote.entry(endpoint.remote).or_insert(new.peer_id);
                // A zero VPN address is not indexed; a full table is only
                // logged by ovpn-dco-win, and the peer is still added.
                for addr in [new.vpn_ipv4.map(IpAddr::V4), new.vpn_ipv6.map(IpAddr::V6)].into_iter().flatten() {
                    let _ = self.mp.routes.insert(addr, host_bits(addr), new.peer_id);
                }
                self.mp.peers.insert(new.peer_id, PeerEntry::new(peer));
                done(0)
            }
            Decoded::MpSetPeer(set) => {
                let entry = self.mp.peers.get_mut(&set.peer_id).ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
                entry.set_peer(&set.params, now);
                done(0)
            }
            Decoded::NotifyEvent => {
                // ovpn-dco-win (c118230b) consumes a queued event even when the
                // buffer is too short, losing it; here the event stays queued.
                need(output.len(), NOTIFY_EVENT_LEN)?;
                if let Some(n) = self.notify.take_into(output) {
                    return done(n);
                }
                if !self.notify.can_park() {
                    return Err(NtStatus::INSUFFICIENT_RESOURCES);
                }
                Ok(Reply::ParkNotify)
            }
            Decoded::MpDelPeer(id) => {
                // OvpnMPPeerDelete: unknown → STATUS_NOT_FOUND (research §5.2).
                self.mp.remove(id).ok_or(NtStatus::NOT_FOUND)?;
                self.notify.post(NotifyEvent::DelPeer { peer_id: id, reason: DelPeerReason::Userspace });
                done(0)
            }
            Decoded::MpSwapKeys(id) => {
                let entry = self.mp.peers.get_mut(&id).ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
                entry.swap_keys();
                done(0)
            }
            Decoded::MpAddIroute(route) => {
                // A route to a peer that does not exist would be inherited by
                // the next peer given that (reused) id. Its status is
                // uapi::decode's for an impossible id on this IOCTL.
                if !self.mp.peers.contains_key(&route.peer_id) {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                self.mp.routes.insert(route.route.prefix, route.route.netbits, route.peer_id).map_err(route_status)?;
                done(0)
            }
            Decoded::MpDelIroute(route) => {
                // OpenVPN deletes iroutes after MP_DEL_PEER already dropped
                // them and ignores the result: a missing route is success.
                let _ = self.mp.routes.remove(route.prefix, route.netbits);
                done(0)
            }
            Decoded::GetPeerStats(query) => self.peer_stats(query, output),
        }
    }

    /// Checks ovpn-dco-win makes before (or instead of) reading the whole
    /// input, in its order.
    fn precheck(&self, ioctl: Ioctl, input: &[u8]) -> Result<(), NtStatus> {
        match ioctl {
            // peer.cpp OvpnPeerSet / OvpnPeerStartVPN / OvpnPeerDoSwapKeys
            // look the peer up first: no peer is STATUS_INVALID_DEVICE_REQUEST
            // (not INVALID_DEVICE_STATE), even with a short buffer.
            Ioctl::SetPeer | Ioctl::StartVpn | Ioctl::SwapKeys if self.p2p.is_none() => {
                Err(NtStatus::INVALID_DEVICE_REQUEST)
            }
            // OvpnMPStartVPN: a second start fails before the input is read.
            Ioctl::MpStartVpn if self.mp.listener.is_some() => Err(NtStatus::ALREADY_INITIALIZED),
            // OvpnSetMode: buffer, then "mode ≠ P2P" (the reference's
            // "once only"; DEL_PEER and close reset the mode to P2P).
            Ioctl::SetMode => {
                need(input.len(), decode::input_size(ioctl))?;
                if self.mode != Mode::P2p { Err(NtStatus::ALREADY_INITIALIZED) } else { Ok(()) }
            }
            // OvpnPeerNewKey: buffer, then the peer (any id in P2P), then
            // the key material.
            Ioctl::NewKey | Ioctl::NewKeyV2 => {
                need(input.len(), decode::input_size(ioctl))?;
                let found = match self.mode {
                    Mode::P2p => self.p2p.is_some(),
                    Mode::Mp => raw_peer_id(input, offset_of!(OvpnCryptoData, peer_id))
                        .is_some_and(|id| self.mp.peers.contains_key(&id)),
                };
                if found { Ok(()) } else { Err(NtStatus::OBJECTID_NOT_FOUND) }
            }
            // OvpnMPPeerNew: buffer, then a duplicate id, then the addresses.
            Ioctl::MpNewPeer => {
                need(input.len(), decode::input_size(ioctl))?;
                match raw_peer_id(input, offset_of!(OvpnMpNewPeer, peer_id)) {
                    Some(id) if self.mp.peers.contains_key(&id) => Err(NtStatus::OBJECTID_EXISTS),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    fn new_key(&mut self, crypto: &P, data: &CryptoData) -> Result<Reply, NtStatus> {
        let layout = if data.epoch { Layout::Epoch } else { Layout::Standard };
        let new = slots::NewKey {
            key_id: data.key_id,
            cipher: data.cipher,
            layout,
            encrypt: direction(&data.encrypt),
            decrypt: direction(&data.decrypt),
        };
        let p2p = self.mode == Mode::P2p;
        let entry = match self.mode {
            Mode::P2p => self.p2p.as_mut().map(|p| &mut p.entry),
            Mode::Mp => data.peer_id.and_then(|id| self.mp.peers.get_mut(&id)),
        }
        .ok_or(NtStatus::OBJECTID_NOT_FOUND)?;
        // Key objects are made before anything is replaced, so a failure
        // (e.g. no ChaCha20-Poly1305 provider) leaves the old keys in place.
        let slot = slots::new_slot(crypto, &new).map_err(install_status)?;
        let (index, at) = match data.slot {
            KeySlot::Primary => (SlotIndex::Primary, 0),
            KeySlot::Secondary => (SlotIndex::Secondary, 1),
        };
        entry.peer.tx.lock().install(index, slot.tx);
        entry.peer.rx.lock().install(index, slot.rx);
        if let Some(info) = entry.keys.get_mut(at) {
            *info = Some(KeyInfo { key_id: data.key_id, layout });
        }
        if let (true, Some(id)) = (p2p, data.peer_id) {
            entry.peer.set_id(id);
        }
        done(0)
    }

    fn peer_stats(&self, query: PeerStatsQuery, output: &mut [u8]) -> Result<Reply, NtStatus> {
        match query {
            PeerStatsQuery::All => {
                let result = match self.mode {
                    Mode::P2p => decode::encode_peer_stats_all(output, self.p2p.iter().map(|p| p.entry.stats())),
                    Mode::Mp => decode::encode_peer_stats_all(output, self.mp.peers.values().map(PeerEntry::stats)),
                }
                .map_err(|e| e.status())?;
                Ok(Reply::Done { status: result.status(), information: result.information() })
            }
            PeerStatsQuery::One(id) => {
                // OvpnPeerGetStatsV2 retrieves the output buffer before the
                // lookup: a short buffer wins over an unknown peer.
                need(output.len(), size_of::<OvpnPeerStats>())?;
                let entry = match self.mode {
                    // Any id names the one P2P peer (OvpnFindPeer).
                    Mode::P2p => self.p2p.as_ref().map(|p| &p.entry),
                    Mode::Mp => self.mp.peers.get(&id),
                }
                .ok_or(NtStatus::OBJECTID_NOT_FOUND)?;
                done(decode::encode_peer_stats(output, &entry.stats()).map_err(|e| e.status())?)
            }
        }
    }

    fn new_transport_id(&mut self) -> TransportId {
        let id = TransportId(self.next_transport);
        self.next_transport = self.next_transport.wrapping_add(1);
        id
    }

    fn set_link(&mut self, state: LinkState, actions: &mut Actions) {
        let up = state == LinkState::Up;
        if self.link_up != up {
            self.link_up = up;
            push(actions, Action::Link(state));
        }
    }

    /// Forgets the P2P peer and its socket (one action).
    fn drop_p2p(&mut self, actions: &mut Actions) {
        if let Some(p2p) = self.p2p.take() {
            push(actions, Action::CloseTransport(p2p.socket.id));
        }
        if let Some(pending) = self.pending_open.take() {
            // ovpn-dco-win leaves a pending TCP NEW_PEER to its connect
            // completion when the socket closes (research §5.7, unsure);
            // completing it here is what that amounts to.
            pending.request.complete(NtStatus::CANCELLED, &[]);
        }
        // Packets and signals of the old connection mean nothing to the next.
        self.control_rx.clear();
        self.read_signal = None;
    }

    /// ovpn-dco-win `OvpnStopVPN` (P2P DEL_PEER): socket and peer gone,
    /// queued control packets and events flushed, pending reads and
    /// NOTIFY_EVENTs completed with STATUS_CANCELLED, mode back to P2P. The
    /// link state is left alone (only handle close sets it down).
    fn stop_vpn(&mut self, actions: &mut Actions) {
        self.drop_p2p(actions);
        self.reads.complete_all(NtStatus::CANCELLED);
        self.notify.cancel_all();
        self.mode = Mode::P2p;
    }

    fn complete_open(&mut self, transport: TransportId, status: NtStatus, output: &[u8]) {
        if self.pending_open.as_ref().is_some_and(|p| p.transport == transport) {
            if let Some(p) = self.pending_open.take() {
                p.request.complete(status, output);
            }
        }
    }

    // -----------------------------------------------------------------
    // Socket events

    /// The result of an [`Action::OpenUdp`] / [`Action::OpenTcp`]. Completes
    /// a UDP NEW_PEER or MP_START_VPN (with the socket's status); a TCP
    /// socket moves on to connecting. A socket the device no longer wants
    /// is closed again.
    pub fn transport_opened(&mut self, transport: TransportId, result: Result<(), NtStatus>, actions: &mut Actions) {
        if let Some(p2p) =
            self.p2p.as_mut().filter(|p| p.socket.id == transport && p.socket.state == SocketState::Opening)
        {
            match result {
                Ok(()) if p2p.socket.transport == Transport::Tcp => p2p.socket.state = SocketState::Connecting,
                Ok(()) => {
                    p2p.socket.state = SocketState::Ready;
                    self.complete_open(transport, NtStatus::SUCCESS, &[]);
                }
                Err(status) => {
                    self.p2p = None;
                    self.complete_open(transport, status, &[]);
                }
            }
            return;
        }
        if let Some(listener) =
            self.mp.listener.as_mut().filter(|l| l.id == transport && l.state == SocketState::Opening)
        {
            match result {
                Ok(()) => {
                    listener.state = SocketState::Ready;
                    self.set_link(LinkState::Up, actions);
                    let mut echo = [0u8; size_of::<OvpnMpStartVpn>()];
                    let n = match &self.pending_open {
                        Some(PendingOpen { what: Opening::MpStartVpn(start), transport: t, .. }) if *t == transport => {
                            decode::encode_mp_start_vpn(&mut echo, start).unwrap_or(0)
                        }
                        _ => 0,
                    };
                    self.complete_open(transport, NtStatus::SUCCESS, echo.get(..n).unwrap_or(&[]));
                }
                Err(status) => {
                    self.mp.listener = None;
                    self.complete_open(transport, status, &[]);
                }
            }
            return;
        }
        if result.is_ok() {
            let _ = actions.push(Action::CloseTransport(transport));
        }
    }

    /// TCP: the connect finished. Success completes NEW_PEER; failure
    /// completes it with the status (OpenVPN: "dco connect error") and
    /// drops the peer.
    pub fn tcp_connected(&mut self, transport: TransportId, status: NtStatus, actions: &mut Actions) {
        let Some(p2p) =
            self.p2p.as_mut().filter(|p| p.socket.id == transport && p.socket.state == SocketState::Connecting)
        else {
            return;
        };
        if status.is_success() {
            p2p.socket.state = SocketState::Ready;
            self.complete_open(transport, NtStatus::SUCCESS, &[]);
        } else {
            self.p2p = None;
            let _ = actions.push(Action::CloseTransport(transport));
            self.complete_open(transport, status, &[]);
        }
    }

    /// The socket closed under us (TCP peer disconnect or reset, or the MP
    /// listener failed).
    ///
    /// P2P: one pending read completes with STATUS_CONNECTION_ABORTED
    /// (OpenVPN: ERROR_CONNECTION_ABORTED → "connection-reset", SIGUSR1),
    /// kept for the next read if none waits; the peer stays until DEL_PEER.
    /// Before the connect finished it fails NEW_PEER instead.
    /// MP: every peer is deleted with reason TRANSPORT_DISCONNECT and the
    /// listener is forgotten (MP_START_VPN may run again).
    pub fn transport_disconnected(&mut self, transport: TransportId, actions: &mut Actions) {
        if let Some(p2p) = self.p2p.as_ref().filter(|p| p.socket.id == transport) {
            if p2p.socket.state == SocketState::Ready {
                self.signal_read(NtStatus::CONNECTION_ABORTED);
            } else {
                self.p2p = None;
                let _ = actions.push(Action::CloseTransport(transport));
                self.complete_open(transport, NtStatus::CONNECTION_ABORTED, &[]);
            }
            return;
        }
        if self.mp.listener.is_some_and(|l| l.id == transport) {
            self.mp.listener = None;
            let _ = actions.push(Action::CloseTransport(transport));
            self.complete_open(transport, NtStatus::CONNECTION_ABORTED, &[]);
            let ids: Vec<PeerId> = self.mp.peers.keys().copied().collect();
            for id in ids {
                if self.mp.remove(id).is_some() {
                    self.notify.post(NotifyEvent::DelPeer { peer_id: id, reason: DelPeerReason::TransportDisconnect });
                }
            }
        }
    }

    fn signal_read(&mut self, status: NtStatus) {
        match self.reads.pop() {
            Some(read) => read.complete(status, &[]),
            None => {
                if self.read_signal.is_none() {
                    self.read_signal = Some(status);
                }
            }
        }
    }

    // -----------------------------------------------------------------
    // Control channel

    /// ReadFile: the next received control packet (MP: behind the sender's
    /// sockaddr). Completes at once from the queue, or parks.
    ///
    /// A read too short for the next packet fails with
    /// STATUS_BUFFER_TOO_SMALL and the packet stays queued for a larger read
    /// (older ovpn-dco-win dropped it; the newest keeps both, research §5.6).
    pub fn read(&mut self, request: R) -> ReadOutcome {
        if let Some(status) = self.read_signal.take() {
            request.complete(status, &[]);
            return ReadOutcome::Completed(status);
        }
        if let Some(packet) = self.control_rx.front() {
            if request.output_len() < packet.len() {
                request.complete(NtStatus::BUFFER_TOO_SMALL, &[]);
                return ReadOutcome::Completed(NtStatus::BUFFER_TOO_SMALL);
            }
            request.complete(NtStatus::SUCCESS, packet);
            self.control_rx.pop();
            return ReadOutcome::Completed(NtStatus::SUCCESS);
        }
        match self.reads.park(request) {
            Ok(()) => ReadOutcome::Parked,
            Err(QueueFull(request)) => {
                request.complete(NtStatus::INSUFFICIENT_RESOURCES, &[]);
                ReadOutcome::Completed(NtStatus::INSUFFICIENT_RESOURCES)
            }
        }
    }

    /// WriteFile: one control packet to send (MP: behind the destination's
    /// sockaddr, which may be any address, known peer or not: a server
    /// answers new clients before MP_NEW_PEER). On `Ok` the caller sends
    /// the bytes and completes the write with Information = `input.len()`.
    ///
    /// Statuses: no usable socket → STATUS_INVALID_DEVICE_STATE; MP prefix
    /// with no packet behind it → STATUS_INVALID_MESSAGE, unknown family →
    /// STATUS_INVALID_ADDRESS (Driver.cpp `OvpnEvtIoWrite`); an empty packet
    /// → STATUS_INVALID_MESSAGE; longer than [`CONTROL_WRITE_MAX`] →
    /// STATUS_INVALID_BUFFER_SIZE (ovpn-dco-win's status for that is not
    /// established).
    pub fn write(&mut self, input: &[u8]) -> Result<ControlSend, NtStatus> {
        let (transport, to, packet) = match self.mode {
            Mode::P2p => {
                let p2p = self
                    .p2p
                    .as_ref()
                    .filter(|p| p.socket.state == SocketState::Ready)
                    .ok_or(NtStatus::INVALID_DEVICE_STATE)?;
                (p2p.socket.id, p2p.entry.peer.endpoint().remote, input)
            }
            Mode::Mp => {
                let listener =
                    self.mp.listener.filter(|l| l.state == SocketState::Ready).ok_or(NtStatus::INVALID_DEVICE_STATE)?;
                let (to, packet) = ctl_queue::split_prefix(input).map_err(|e| e.status())?;
                (listener.id, canonical(to), packet)
            }
        };
        if packet.is_empty() {
            return Err(NtStatus::INVALID_MESSAGE);
        }
        if packet.len() > CONTROL_WRITE_MAX {
            return Err(NtStatus::INVALID_BUFFER_SIZE);
        }
        let bytes = ControlBytes::new(packet).ok_or(NtStatus::INVALID_BUFFER_SIZE)?;
        stats::bump(&self.stats.sent_control_packets);
        Ok(ControlSend { transport, to, bytes })
    }

    /// A control packet (any opcode but P_DATA_V2) from the data path's
    /// receive. Completes a pending read or queues the packet; dropped and
    /// counted in LostInControlPackets when the queue is full or the packet
    /// (with its MP prefix) exceeds the 2048-byte buffer. Packets of a socket
    /// the device has replaced are ignored.
    pub fn control_packet_received(&mut self, transport: TransportId, from: SocketAddr, packet: &[u8]) {
        let current = match self.mode {
            Mode::P2p => self.p2p.as_ref().is_some_and(|p| p.socket.id == transport),
            Mode::Mp => self.mp.listener.is_some_and(|l| l.id == transport),
        };
        if !current {
            return;
        }
        stats::bump(&self.stats.received_control_packets);
        let from = canonical(from);
        let prefix = (self.mode == Mode::Mp).then_some(&from);
        if self.control_rx.push(prefix, packet).is_err() {
            stats::bump(&self.stats.lost_in_control_packets);
            return;
        }
        // Reads wait only while the queue is empty, so at most one packet
        // is queued here; a read too short for it is refused and the next
        // one tried (bounded by the parked reads).
        while let Some(len) = self.control_rx.front().map(<[u8]>::len) {
            let Some(read) = self.reads.pop() else { break };
            if read.output_len() < len {
                read.complete(NtStatus::BUFFER_TOO_SMALL, &[]);
                continue;
            }
            read.complete(NtStatus::SUCCESS, self.control_rx.front().unwrap_or(&[]));
            self.control_rx.pop();
        }
    }

    // -----------------------------------------------------------------
    // Time

    /// Keepalive: queues a ping for every peer idle on send for its
    /// interval, and handles every peer silent for its timeout. Returns when
    /// to tick next (`None`: no timer runs; `now`: the actions list filled
    /// up, call again after executing it).
    ///
    /// P2P timeout: one pending read completes with
    /// STATUS_CONNECTION_DISCONNECTED (OpenVPN: ERROR_NETNAME_DELETED, its
    /// ping-restart); the peer stays (ovpn-dco-win timer.cpp
    /// `OvpnTimerRecv`). With no read pending the signal waits for the next
    /// read (see `read_signal`). MP timeout: the peer is deleted and
    /// DEL_PEER/EXPIRED notified; OpenVPN then drops the instance without
    /// MP_DEL_PEER.
    pub fn tick(&mut self, now: Instant, actions: &mut Actions) -> Option<Instant> {
        let mut next = None;
        match self.mode {
            Mode::P2p => {
                let mut expired = false;
                if let Some(p2p) = self.p2p.as_mut().filter(|p| p.socket.state == SocketState::Ready) {
                    let e = &mut p2p.entry;
                    let due = e.keepalive.due(e.peer.last_sent(), e.peer.last_received(), now);
                    if due.ping {
                        if actions.push(Action::SendKeepalive { peer: e.peer.id() }).is_ok() {
                            e.keepalive.pinged(now);
                        } else {
                            next = Some(now);
                        }
                    }
                    if due.expired {
                        e.keepalive.expired(now);
                        expired = true;
                    }
                    next = earliest(next, e.keepalive.next_deadline(e.peer.last_sent(), e.peer.last_received()));
                }
                if expired {
                    self.signal_read(NtStatus::CONNECTION_DISCONNECTED);
                }
            }
            Mode::Mp => {
                let Mp { peers, by_remote, routes, .. } = &mut self.mp;
                let notify = &mut self.notify;
                peers.retain(|&id, e| {
                    let due = e.keepalive.due(e.peer.last_sent(), e.peer.last_received(), now);
                    if due.expired {
                        unindex(by_remote, routes, id, e);
                        notify.post(NotifyEvent::DelPeer { peer_id: id, reason: DelPeerReason::Expired });
                        return false;
                    }
                    if due.ping {
                        if actions.push(Action::SendKeepalive { peer: id }).is_ok() {
                            e.keepalive.pinged(now);
                        } else {
                            next = Some(now);
                        }
                    }
                    next = earliest(next, e.keepalive.next_deadline(e.peer.last_sent(), e.peer.last_received()));
                    true
                });
            }
        }
        next
    }

    // -----------------------------------------------------------------
    // Float, cancel, close

    /// MP: the data path authenticated a packet of `peer` from a new
    /// transport address. Re-points the peer and notifies FLOAT_PEER, unless
    /// another peer owns that address (then nothing changes and this
    /// returns false). P2P never floats (its socket is connected).
    pub fn peer_floated(&mut self, peer: PeerId, new_remote: SocketAddr) -> bool {
        self.float_checked(peer, None, new_remote)
    }

    /// [`Device::peer_floated`] for the data path, which authenticated the
    /// packet with `peer`'s keys: nothing happens unless `peer` is still the
    /// one the table holds under its id. The data path keeps a looked-up
    /// peer for a run of packets (one indication list); a peer deleted and
    /// re-added under the same id meanwhile is another session, which a
    /// packet of the old one must not move.
    pub fn peer_floated_from(&mut self, peer: &Peer<KeyOf<P>>, new_remote: SocketAddr) -> bool {
        self.float_checked(peer.id(), Some(peer), new_remote)
    }

    fn float_checked(&mut self, peer: PeerId, expected: Option<&Peer<KeyOf<P>>>, new_remote: SocketAddr) -> bool {
        if self.mode != Mode::Mp {
            return false;
        }
        let new_remote = canonical(new_remote);
        let Some(entry) = self.mp.peers.get(&peer) else { return false };
        if expected.is_some_and(|p| !core::ptr::eq(&*entry.peer, p)) {
            return false;
        }
        let old = canonical(entry.peer.endpoint().remote);
        if old == new_remote {
            return true;
        }
        if self.mp.by_remote.get(&new_remote).is_some_and(|owner| *owner != peer) {
            return false;
        }
        if self.mp.by_remote.get(&old) == Some(&peer) {
            self.mp.by_remote.remove(&old);
        }
        self.mp.by_remote.insert(new_remote, peer);
        entry.peer.set_remote(new_remote);
        self.notify.post(NotifyEvent::FloatPeer { peer_id: peer, address: new_remote });
        true
    }

    /// The OS cancels a parked request (CancelIoEx, thread exit): it
    /// completes with STATUS_CANCELLED. Returns false if the device does not
    /// hold it (already completed). A cancelled NEW_PEER or MP_START_VPN
    /// leaves its socket opening; OpenVPN follows with DEL_PEER or close.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        let request = self.reads.take(id).or_else(|| self.notify.take_parked(id)).or_else(|| {
            if self.pending_open.as_ref().is_some_and(|p| p.request.id() == id) {
                self.pending_open.take().map(|p| p.request)
            } else {
                None
            }
        });
        match request {
            Some(r) => {
                r.complete(NtStatus::CANCELLED, &[]);
                true
            }
            None => false,
        }
    }

    /// Handle close (EvtFileCleanup): everything torn down, every parked
    /// request completed with STATUS_CANCELLED, sockets closed, link down,
    /// and the device back to its initial state for the next open.
    pub fn close(&mut self, actions: &mut Actions) {
        self.stop_vpn(actions);
        if let Some(listener) = self.mp.listener.take() {
            push(actions, Action::CloseTransport(listener.id));
        }
        if let Some(pending) = self.pending_open.take() {
            pending.request.complete(NtStatus::CANCELLED, &[]);
        }
        self.mp = Mp::new();
        self.set_link(LinkState::Down, actions);
        self.stats.reset();
    }

    // -----------------------------------------------------------------
    // Lookups for the data path (device lock held briefly)

    /// The peer a received data packet with `peer_id` belongs to. P2P: the
    /// one peer whatever the id (ovpn-dco-win `OvpnFindPeer`).
    pub fn rx_peer(&self, peer_id: PeerId) -> Option<Arc<Peer<KeyOf<P>>>> {
        match self.mode {
            Mode::P2p => self.p2p.as_ref().map(|p| p.entry.peer.clone()),
            Mode::Mp => self.mp.peers.get(&peer_id).map(|e| e.peer.clone()),
        }
    }

    /// The peer an inner packet to `dst` goes to. MP: longest-prefix match
    /// over VPN addresses and iroutes.
    pub fn tx_peer(&self, dst: IpAddr) -> Option<Arc<Peer<KeyOf<P>>>> {
        match self.mode {
            Mode::P2p => self.p2p.as_ref().map(|p| p.entry.peer.clone()),
            Mode::Mp => self.mp.routes.lookup(dst).and_then(|id| self.mp.peers.get(&id)).map(|e| e.peer.clone()),
        }
    }

    /// MP: a decrypted packet is delivered only if its inner source routes
    /// back to the peer it came from (anti-spoofing). P2P: always.
    pub fn source_allowed(&self, peer: &Peer<KeyOf<P>>, inner_src: IpAddr) -> bool {
        match self.mode {
            Mode::P2p => true,
            // The route's id must still name this very peer: a packet the
            // data path decrypted with a peer deleted and re-added under the
            // same id meanwhile (see `peer_floated_from`) is not the new
            // session's.
            Mode::Mp => {
                self.mp.routes.lookup(inner_src) == Some(peer.id())
                    && self.mp.peers.get(&peer.id()).is_some_and(|e| core::ptr::eq(&*e.peer, peer))
            }
        }
    }

    /// The socket data goes out on, once it is usable.
    pub fn data_transport(&self) -> Option<TransportId> {
        match self.mode {
            Mode::P2p => self.p2p.as_ref().map(|p| p.socket).filter(|s| s.state == SocketState::Ready).map(|s| s.id),
            Mode::Mp => self.mp.listener.filter(|s| s.state == SocketState::Ready).map(|s| s.id),
        }
    }

    /// The device counters; the data path keeps a clone and increments them.
    pub fn stats(&self) -> &Arc<DeviceStats> {
        &self.stats
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn peer_count(&self) -> usize {
        match self.mode {
            Mode::P2p => usize::from(self.p2p.is_some()),
            Mode::Mp => self.mp.peers.len(),
        }
    }

    /// Everything observable, for comparison.
    pub fn snapshot(&self) -> DeviceSnapshot {
        DeviceSnapshot {
            mode: self.mode,
            link_up: self.link_up,
            p2p: self.p2p.as_ref().map(|p| (p.socket, p.entry.snapshot())),
            listener: self.mp.listener,
            mp_peers: self.mp.peers.values().map(PeerEntry::snapshot).collect(),
            by_remote: self.mp.by_remote.iter().map(|(a, id)| (*a, *id)).collect(),
            routes: self.mp.routes.routes(),
            pending_open: self.pending_open.as_ref().map(|p| (p.request.id(), p.transport)),
            parked_reads: self.reads.ids(),
            parked_notify: self.notify.parked_ids(),
            control_queue: self.control_rx.iter().map(<[u8]>::to_vec).collect(),
            events: self.notify.events(),
            lost_events: self.notify.lost(),
            read_signal: self.read_signal,
            stats: self.stats.snapshot(),
            next_transport: self.next_transport,
        }
    }
}
