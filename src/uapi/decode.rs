//! Decoding IOCTL input buffers into validated values, and encoding the
//! output structures.
//!
//! Input is untrusted: any length, any bytes, any alignment. Nothing here
//! casts a pointer; fields are copied out with `from_le_bytes` at the offsets
//! of the mirrors in [`super::types`]. A buffer shorter than the structure is
//! refused with STATUS_BUFFER_TOO_SMALL and a longer one is accepted, reading
//! only the structure's prefix: that is what ovpn-dco-win gets from
//! `WdfRequestRetrieveInputBuffer(request, sizeof(STRUCT), ...)`, which fails
//! when the buffer is empty or shorter than the minimum.
//!
//! Each [`DecodeError`] maps to the status ovpn-dco-win (peer.cpp, crypto.cpp,
//! 2.x sources) returns for the same input; where ovpn-dco-win does not check,
//! the comment on the variant says so and the status is
//! STATUS_INVALID_PARAMETER.

use core::fmt;
use core::mem::{offset_of, size_of};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::codes::Ioctl;
use super::types::*;
use crate::crypto::Cipher;
use crate::ntstatus::NtStatus;
use crate::proto::{KeyId, PeerId};

/// Bytes of key material in OVPN_KEY_DIRECTION (`Key[32]`).
pub const KEY_MATERIAL_LEN: usize = 32;
/// Bytes of the implicit IV part in OVPN_KEY_DIRECTION (`NonceTail[8]`).
pub const NONCE_TAIL_LEN: usize = 8;
/// Longest IPv4 prefix.
pub const IPV4_MAX_NETBITS: u8 = 32;
/// Longest IPv6 prefix.
pub const IPV6_MAX_NETBITS: u8 = 128;
/// The value of a SET_PEER field that leaves the setting unchanged
/// (peer.cpp `OvpnPeerSetDoWork`).
pub const UNCHANGED: i32 = -1;

/// Why an IOCTL input buffer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The control code is not one of the 19 ovpn-dco-win IOCTLs.
    /// STATUS_INVALID_DEVICE_REQUEST, as Driver.cpp's `default:` case; OpenVPN
    /// relies on it (ERROR_INVALID_FUNCTION) to fall back from GET_PEER_STATS.
    UnknownIoctl(u32),
    /// The input buffer is shorter than the structure (or empty).
    /// STATUS_BUFFER_TOO_SMALL, from WdfRequestRetrieveInputBuffer.
    InputTooSmall { needed: usize, got: usize },
    /// `sa_family` is neither AF_INET nor AF_INET6.
    /// STATUS_INVALID_DEVICE_REQUEST (peer.cpp, NEW_PEER and MP_NEW_PEER).
    UnknownAddressFamily(u16),
    /// NEW_PEER's local and remote addresses are of different families.
    /// ovpn-dco-win does not check (its socket fails later):
    /// STATUS_INVALID_PARAMETER.
    AddressFamilyMismatch,
    /// `Proto` is neither UDP nor TCP. STATUS_INVALID_DEVICE_REQUEST (peer.cpp).
    UnknownProto(i32),
    /// `KeySlot` is neither primary nor secondary.
    /// STATUS_INVALID_DEVICE_REQUEST (crypto.cpp).
    UnknownKeySlot(i32),
    /// `CipherAlg` is outside OVPN_CIPHER_ALG.
    /// STATUS_INVALID_DEVICE_REQUEST (crypto.cpp).
    UnknownCipher(i32),
    /// `CipherAlg` is OVPN_CIPHER_ALG_NONE. ovpn-dco-win accepts it and then
    /// passes packets unencrypted (a test mode OpenVPN never uses: DCO needs
    /// an AEAD data cipher). This driver refuses it, with the status
    /// ovpn-dco-win gives an unavailable cipher: STATUS_INVALID_DEVICE_REQUEST.
    CipherNone,
    /// `KeyLen` above 32 (would read past `Key[32]`).
    /// STATUS_INVALID_DEVICE_REQUEST (crypto.cpp).
    KeyTooLong(u8),
    /// `KeyLen` up to 32 but not one the cipher takes (16/24/32 for AES-GCM,
    /// 32 for ChaCha20-Poly1305). ovpn-dco-win hands it to
    /// BCryptGenerateSymmetricKey, which refuses it: STATUS_INVALID_PARAMETER.
    BadKeyLength(u8),
    /// Encrypt and decrypt key lengths differ. ovpn-dco-win does not check
    /// (its epoch mode takes the encrypt length for both): STATUS_INVALID_PARAMETER.
    KeyLengthMismatch,
    /// `KeyId` above 7. ovpn-dco-win does not check (such a key never matches
    /// a packet): STATUS_INVALID_PARAMETER.
    KeyIdOutOfRange(u8),
    /// `Mode` is neither P2P nor MP. Not established what ovpn-dco-win
    /// returns: STATUS_INVALID_PARAMETER.
    UnknownMode(i32),
    /// A keepalive interval or timeout below −1. ovpn-dco-win does not check:
    /// STATUS_INVALID_PARAMETER.
    BadKeepalive(i32),
    /// An MSS outside −1..=65535. ovpn-dco-win does not check (it truncates to
    /// 16 bits): STATUS_INVALID_PARAMETER.
    BadMss(i32),
    /// An iroute prefix length outside 0..=32 (IPv4) or 0..=128 (IPv6).
    /// Not established what ovpn-dco-win returns: STATUS_INVALID_PARAMETER.
    NetbitsOutOfRange { netbits: i32, ipv6: bool },
    /// A PeerId that is negative or wider than 24 bits, so that no peer can
    /// have it. The status is what ovpn-dco-win's lookup of a missing peer
    /// returns for that IOCTL (see [`DecodeError::status`]).
    PeerIdOutOfRange { ioctl: Ioctl, value: i32 },
}

impl DecodeError {
    /// The status the IOCTL completes with.
    pub const fn status(self) -> NtStatus {
        match self {
            DecodeError::UnknownIoctl(_) => NtStatus::INVALID_DEVICE_REQUEST,
            DecodeError::InputTooSmall { .. } => NtStatus::BUFFER_TOO_SMALL,
            DecodeError::UnknownAddressFamily(_)
            | DecodeError::UnknownProto(_)
            | DecodeError::UnknownKeySlot(_)
            | DecodeError::UnknownCipher(_)
            | DecodeError::CipherNone
            | DecodeError::KeyTooLong(_) => NtStatus::INVALID_DEVICE_REQUEST,
            DecodeError::AddressFamilyMismatch
            | DecodeError::BadKeyLength(_)
            | DecodeError::KeyLengthMismatch
            | DecodeError::KeyIdOutOfRange(_)
            | DecodeError::UnknownMode(_)
            | DecodeError::BadKeepalive(_)
            | DecodeError::BadMss(_)
            | DecodeError::NetbitsOutOfRange { .. } => NtStatus::INVALID_PARAMETER,
            DecodeError::PeerIdOutOfRange { ioctl, .. } => match ioctl {
                // peer.cpp: OvpnMPPeerSet / OvpnPeerDoSwapKeys on a missing peer
                Ioctl::MpSetPeer | Ioctl::MpSwapKeys => NtStatus::INVALID_DEVICE_REQUEST,
                // peer.cpp: OvpnPeerDelete on a missing peer
                Ioctl::MpDelPeer => NtStatus::NOT_FOUND,
                // peer.cpp: OvpnPeerGetStatsV2 / OvpnPeerNewKey on a missing peer
                Ioctl::GetPeerStats | Ioctl::NewKey | Ioctl::NewKeyV2 => NtStatus::OBJECTID_NOT_FOUND,
                // MP_NEW_PEER and MP_ADD_IROUTE: ovpn-dco-win does not check.
                _ => NtStatus::INVALID_PARAMETER,
            },
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why an output structure could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is shorter than the structure (or empty).
    /// STATUS_BUFFER_TOO_SMALL, from WdfRequestRetrieveOutputBuffer.
    OutputTooSmall { needed: usize, got: usize },
}

impl EncodeError {
    pub const fn status(self) -> NtStatus {
        match self {
            EncodeError::OutputTooSmall { .. } => NtStatus::BUFFER_TOO_SMALL,
        }
    }
}

// ---------------------------------------------------------------------------
// Decoded values

/// OVPN_PROTO
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// OVPN_KEY_SLOT
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySlot {
    Primary,
    Secondary,
}

/// OVPN_MODE
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    P2p,
    Mp,
}

/// NEW_PEER (P2P): the transport socket to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewPeer {
    /// Address to bind; OpenVPN sends the unspecified address and port 0
    /// unless `--local`/`--lport` is given.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub transport: Transport,
}

/// MP_NEW_PEER: a client of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpNewPeer {
    /// Unused by ovpn-dco-win; OpenVPN fills only its family.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// `None` when OpenVPN sent 0.0.0.0 (no IPv4 VPN address).
    pub vpn_ipv4: Option<Ipv4Addr>,
    /// `None` when OpenVPN sent `::` (no IPv6 VPN address).
    pub vpn_ipv6: Option<Ipv6Addr>,
    pub peer_id: PeerId,
}

/// One direction of a data-channel key (OVPN_KEY_DIRECTION), validated.
///
/// Not `Copy`, so that key material is not duplicated by accident; `Debug`
/// prints no key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct DirectionKey {
    material: [u8; KEY_MATERIAL_LEN],
    len: u8,
    nonce_tail: [u8; NONCE_TAIL_LEN],
}

impl DirectionKey {
    /// The AEAD key (`Key[..KeyLen]`), for the standard (non-epoch) layout.
    pub fn key(&self) -> &[u8] {
        self.material.get(..usize::from(self.len)).unwrap_or(&self.material)
    }

    /// `KeyLen`: 16, 24 or 32. In epoch mode, the length of the data keys
    /// derived from [`Self::epoch_secret`].
    pub fn key_len(&self) -> usize {
        usize::from(self.len)
    }

    /// All of `Key[32]`: the epoch secret E1 in epoch mode (32 bytes even for
    /// AES-128).
    pub fn epoch_secret(&self) -> &[u8; KEY_MATERIAL_LEN] {
        &self.material
    }

    /// `NonceTail[8]`: the implicit IV appended to the packet id.
    pub fn nonce_tail(&self) -> &[u8; NONCE_TAIL_LEN] {
        &self.nonce_tail
    }
}

impl fmt::Debug for DirectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectionKey").field("key_len", &self.len).finish_non_exhaustive()
    }
}

/// NEW_KEY and NEW_KEY_V2: a key to install in a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoData {
    pub slot: KeySlot,
    pub cipher: Cipher,
    pub key_id: KeyId,
    /// The peer the key is for. `None` when the field held a value no peer
    /// can have (negative or wider than 24 bits): P2P ignores the id (OpenVPN
    /// may send any), MP must answer STATUS_OBJECTID_NOT_FOUND as
    /// ovpn-dco-win's lookup does.
    pub peer_id: Option<PeerId>,
    pub encrypt: DirectionKey,
    pub decrypt: DirectionKey,
    /// `CryptoOptions & CRYPTO_OPTIONS_EPOCH` (NEW_KEY_V2 only). Other bits
    /// are ignored, as ovpn-dco-win 2.8 does.
    pub epoch: bool,
}

/// SET_PEER: `None` leaves a setting unchanged (the field was −1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetPeer {
    /// Seconds without sending before a keepalive ping; 0 disables.
    pub keepalive_interval: Option<u32>,
    /// Seconds without receiving before the peer expires; 0 disables.
    pub keepalive_timeout: Option<u32>,
    /// TCP MSS to clamp to; 0 disables clamping.
    pub mss: Option<u16>,
}

/// MP_SET_PEER
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpSetPeer {
    pub peer_id: PeerId,
    pub params: SetPeer,
}

/// MP_START_VPN: the listening UDP socket. Also the output (with the port
/// actually bound), which OpenVPN reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpStartVpn {
    pub listen: SocketAddr,
    /// Non-zero `IPv6Only`: an IPv6 socket that does not accept IPv4.
    pub ipv6_only: bool,
}

/// A route to a client's network (OVPN_MP_IROUTE without the peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iroute {
    /// As sent; host bits are not cleared.
    pub prefix: IpAddr,
    /// 0..=32 for IPv4, 0..=128 for IPv6.
    pub netbits: u8,
}

/// MP_ADD_IROUTE
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpIroute {
    pub route: Iroute,
    pub peer_id: PeerId,
}

/// GET_PEER_STATS
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerStatsQuery {
    /// PeerId −1.
    All,
    One(PeerId),
}

/// One IOCTL with its decoded input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    NewPeer(NewPeer),
    GetStats,
    NewKey(CryptoData),
    SwapKeys,
    SetPeer(SetPeer),
    StartVpn,
    DelPeer,
    GetVersion,
    NewKeyV2(CryptoData),
    SetMode(Mode),
    MpStartVpn(MpStartVpn),
    MpNewPeer(MpNewPeer),
    MpSetPeer(MpSetPeer),
    NotifyEvent,
    MpDelPeer(PeerId),
    MpSwapKeys(PeerId),
    MpAddIroute(MpIroute),
    /// ovpn-dco-win ignores the PeerId of a route being deleted.
    MpDelIroute(Iroute),
    GetPeerStats(PeerStatsQuery),
}

impl Request {
    pub const fn ioctl(&self) -> Ioctl {
        match self {
            Request::NewPeer(_) => Ioctl::NewPeer,
            Request::GetStats => Ioctl::GetStats,
            Request::NewKey(_) => Ioctl::NewKey,
            Request::SwapKeys => Ioctl::SwapKeys,
            Request::SetPeer(_) => Ioctl::SetPeer,
            Request::StartVpn => Ioctl::StartVpn,
            Request::DelPeer => Ioctl::DelPeer,
            Request::GetVersion => Ioctl::GetVersion,
            Request::NewKeyV2(_) => Ioctl::NewKeyV2,
            Request::SetMode(_) => Ioctl::SetMode,
            Request::MpStartVpn(_) => Ioctl::MpStartVpn,
            Request::MpNewPeer(_) => Ioctl::MpNewPeer,
            Request::MpSetPeer(_) => Ioctl::MpSetPeer,
            Request::NotifyEvent => Ioctl::NotifyEvent,
            Request::MpDelPeer(_) => Ioctl::MpDelPeer,
            Request::MpSwapKeys(_) => Ioctl::MpSwapKeys,
            Request::MpAddIroute(_) => Ioctl::MpAddIroute,
            Request::MpDelIroute(_) => Ioctl::MpDelIroute,
            Request::GetPeerStats(_) => Ioctl::GetPeerStats,
        }
    }
}

/// The input structure size an IOCTL requires (0: it reads no input, and any
/// input buffer is ignored).
pub const fn input_size(ioctl: Ioctl) -> usize {
    match ioctl {
        Ioctl::NewPeer => size_of::<OvpnNewPeer>(),
        Ioctl::NewKey => size_of::<OvpnCryptoData>(),
        Ioctl::SetPeer => size_of::<OvpnSetPeer>(),
        Ioctl::NewKeyV2 => size_of::<OvpnCryptoDataV2>(),
        Ioctl::SetMode => size_of::<OvpnSetMode>(),
        Ioctl::MpStartVpn => size_of::<OvpnMpStartVpn>(),
        Ioctl::MpNewPeer => size_of::<OvpnMpNewPeer>(),
        Ioctl::MpSetPeer => size_of::<OvpnMpSetPeer>(),
        Ioctl::MpDelPeer => size_of::<OvpnMpDelPeer>(),
        Ioctl::MpSwapKeys => size_of::<OvpnMpSwapKeys>(),
        Ioctl::MpAddIroute | Ioctl::MpDelIroute => size_of::<OvpnMpIroute>(),
        Ioctl::GetPeerStats => size_of::<OvpnGetPeerStats>(),
        Ioctl::GetStats
        | Ioctl::SwapKeys
        | Ioctl::StartVpn
        | Ioctl::DelPeer
        | Ioctl::GetVersion
        | Ioctl::NotifyEvent => 0,
    }
}

/// The output structure size an IOCTL fills (0: none). GET_PEER_STATS for all
/// peers needs a multiple of it, see [`encode_peer_stats_all`].
pub const fn output_size(ioctl: Ioctl) -> usize {
    match ioctl {
        Ioctl::GetStats => size_of::<OvpnStats>(),
        Ioctl::GetVersion => size_of::<OvpnVersion>(),
        Ioctl::MpStartVpn => size_of::<OvpnMpStartVpn>(),
        Ioctl::NotifyEvent => size_of::<OvpnNotifyEvent>(),
        Ioctl::GetPeerStats => size_of::<OvpnPeerStats>(),
        _ => 0,
    }
}

/// Decodes the input of the IOCTL `code`.
pub fn decode_request(code: u32, input: &[u8]) -> Result<Request, DecodeError> {
    let ioctl = Ioctl::from_code(code).ok_or(DecodeError::UnknownIoctl(code))?;
    Ok(match ioctl {
        Ioctl::NewPeer => Request::NewPeer(new_peer(input)?),
        Ioctl::GetStats => Request::GetStats,
        Ioctl::NewKey => Request::NewKey(new_key(input)?),
        Ioctl::SwapKeys => Request::SwapKeys,
        Ioctl::SetPeer => Request::SetPeer(set_peer(input)?),
        Ioctl::StartVpn => Request::StartVpn,
        Ioctl::DelPeer => Request::DelPeer,
        Ioctl::GetVersion => Request::GetVersion,
        Ioctl::NewKeyV2 => Request::NewKeyV2(new_key_v2(input)?),
        Ioctl::SetMode => Request::SetMode(set_mode(input)?),
        Ioctl::MpStartVpn => Request::MpStartVpn(mp_start_vpn(input)?),
        Ioctl::MpNewPeer => Request::MpNewPeer(mp_new_peer(input)?),
        Ioctl::MpSetPeer => Request::MpSetPeer(mp_set_peer(input)?),
        Ioctl::NotifyEvent => Request::NotifyEvent,
        Ioctl::MpDelPeer => Request::MpDelPeer(mp_del_peer(input)?),
        Ioctl::MpSwapKeys => Request::MpSwapKeys(mp_swap_keys(input)?),
        Ioctl::MpAddIroute => Request::MpAddIroute(mp_add_iroute(input)?),
        Ioctl::MpDelIroute => Request::MpDelIroute(mp_del_iroute(input)?),
        Ioctl::GetPeerStats => Request::GetPeerStats(get_peer_stats(input)?),
    })
}

// ---------------------------------------------------------------------------
// Byte access

/// The structure's prefix of `input`, as WdfRequestRetrieveInputBuffer with a
/// minimum of `size_of::<T>()` would give it.
fn prefix<T>(input: &[u8]) -> Result<&[u8], DecodeError> {
    let needed = size_of::<T>();
    input.get(..needed).ok_or(DecodeError::InputTooSmall { needed, got: input.len() })
}

/// `N` bytes at `at`. Offsets are compile-time constants inside a prefix of
/// checked length; a wrong one is a bug the unit tests catch, and it yields
/// zeros rather than a panic in the kernel.
fn bytes<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    match at.checked_add(N).and_then(|end| buf.get(at..end)) {
        Some(src) => out.copy_from_slice(src),
        None => debug_assert!(false, "field at {at}+{N} outside a {}-byte structure", buf.len()),
    }
    out
}

fn u16_le(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes(buf, at))
}

fn u32_le(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes(buf, at))
}

fn i32_le(buf: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(bytes(buf, at))
}

fn put(out: &mut [u8], at: usize, value: &[u8]) {
    match at.checked_add(value.len()).and_then(|end| out.get_mut(at..end)) {
        Some(dst) => dst.copy_from_slice(value),
        None => debug_assert!(false, "field at {at} outside a {}-byte output", out.len()),
    }
}

/// The zeroed prefix of `out` that will hold a `T`.
fn output<T>(out: &mut [u8]) -> Result<&mut [u8], EncodeError> {
    let needed = size_of::<T>();
    let got = out.len();
    let buf = out.get_mut(..needed).ok_or(EncodeError::OutputTooSmall { needed, got })?;
    buf.fill(0);
    Ok(buf)
}

/// A SOCKADDR_IN or SOCKADDR_IN6 at `at`, chosen by its family.
fn sockaddr(buf: &[u8], at: usize) -> Result<SocketAddr, DecodeError> {
    match u16_le(buf, at + offset_of!(SockAddrIn, sin_family)) {
        AF_INET => {
            let port = u16::from_be_bytes(bytes(buf, at + offset_of!(SockAddrIn, sin_port)));
            let ip = Ipv4Addr::from(bytes::<4>(buf, at + offset_of!(SockAddrIn, sin_addr)));
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        AF_INET6 => {
            let port = u16::from_be_bytes(bytes(buf, at + offset_of!(SockAddrIn6, sin6_port)));
            // Kept as the raw 32-bit value, as Rust's std does on Windows.
            let flowinfo = u32_le(buf, at + offset_of!(SockAddrIn6, sin6_flowinfo));
            let ip = Ipv6Addr::from(bytes::<16>(buf, at + offset_of!(SockAddrIn6, sin6_addr)));
            let scope_id = u32_le(buf, at + offset_of!(SockAddrIn6, sin6_scope_id));
            Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, flowinfo, scope_id)))
        }
        family => Err(DecodeError::UnknownAddressFamily(family)),
    }
}

/// Writes `addr` as SOCKADDR_IN or SOCKADDR_IN6 at `at` (the caller zeroed
/// the output, so padding and `sin_zero` stay zero).
fn put_sockaddr(out: &mut [u8], at: usize, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            put(out, at + offset_of!(SockAddrIn, sin_family), &AF_INET.to_le_bytes());
            put(out, at + offset_of!(SockAddrIn, sin_port), &a.port().to_be_bytes());
            put(out, at + offset_of!(SockAddrIn, sin_addr), &a.ip().octets());
        }
        SocketAddr::V6(a) => {
            put(out, at + offset_of!(SockAddrIn6, sin6_family), &AF_INET6.to_le_bytes());
            put(out, at + offset_of!(SockAddrIn6, sin6_port), &a.port().to_be_bytes());
            put(out, at + offset_of!(SockAddrIn6, sin6_flowinfo), &a.flowinfo().to_le_bytes());
            put(out, at + offset_of!(SockAddrIn6, sin6_addr), &a.ip().octets());
            put(out, at + offset_of!(SockAddrIn6, sin6_scope_id), &a.scope_id().to_le_bytes());
        }
    }
}

/// A PeerId field that must name a possible peer.
fn peer_id(buf: &[u8], at: usize, ioctl: Ioctl) -> Result<PeerId, DecodeError> {
    let value = i32_le(buf, at);
    u32::try_from(value).ok().and_then(PeerId::new).ok_or(DecodeError::PeerIdOutOfRange { ioctl, value })
}

// ---------------------------------------------------------------------------
// Decoders, one per input structure

/// OVPN_NEW_PEER (NEW_PEER).
pub fn new_peer(input: &[u8]) -> Result<NewPeer, DecodeError> {
    let buf = prefix::<OvpnNewPeer>(input)?;
    let local = sockaddr(buf, offset_of!(OvpnNewPeer, local))?;
    let remote = sockaddr(buf, offset_of!(OvpnNewPeer, remote))?;
    let transport = match i32_le(buf, offset_of!(OvpnNewPeer, proto)) {
        OVPN_PROTO_UDP => Transport::Udp,
        OVPN_PROTO_TCP => Transport::Tcp,
        other => return Err(DecodeError::UnknownProto(other)),
    };
    if local.is_ipv4() != remote.is_ipv4() {
        return Err(DecodeError::AddressFamilyMismatch);
    }
    Ok(NewPeer { local, remote, transport })
}

/// OVPN_MP_NEW_PEER (MP_NEW_PEER).
pub fn mp_new_peer(input: &[u8]) -> Result<MpNewPeer, DecodeError> {
    let buf = prefix::<OvpnMpNewPeer>(input)?;
    let local = sockaddr(buf, offset_of!(OvpnMpNewPeer, local))?;
    let remote = sockaddr(buf, offset_of!(OvpnMpNewPeer, remote))?;
    let vpn_ipv4 = Ipv4Addr::from(bytes::<4>(buf, offset_of!(OvpnMpNewPeer, vpn_addr4)));
    let vpn_ipv6 = Ipv6Addr::from(bytes::<16>(buf, offset_of!(OvpnMpNewPeer, vpn_addr6)));
    let peer_id = peer_id(buf, offset_of!(OvpnMpNewPeer, peer_id), Ioctl::MpNewPeer)?;
    Ok(MpNewPeer {
        local,
        remote,
        vpn_ipv4: (!vpn_ipv4.is_unspecified()).then_some(vpn_ipv4),
        vpn_ipv6: (!vpn_ipv6.is_unspecified()).then_some(vpn_ipv6),
        peer_id,
    })
}

/// OVPN_CRYPTO_DATA (NEW_KEY).
pub fn new_key(input: &[u8]) -> Result<CryptoData, DecodeError> {
    let buf = prefix::<OvpnCryptoData>(input)?;
    crypto_data(buf, false)
}

/// OVPN_CRYPTO_DATA_V2 (NEW_KEY_V2).
pub fn new_key_v2(input: &[u8]) -> Result<CryptoData, DecodeError> {
    let buf = prefix::<OvpnCryptoDataV2>(input)?;
    let options = u32_le(buf, offset_of!(OvpnCryptoDataV2, crypto_options));
    crypto_data(buf, options & CRYPTO_OPTIONS_EPOCH != 0)
}

/// The checks run in ovpn-dco-win's order (slot, cipher, key lengths), so
/// that an input with several faults gets the status it would get there.
fn crypto_data(buf: &[u8], epoch: bool) -> Result<CryptoData, DecodeError> {
    let slot = match i32_le(buf, offset_of!(OvpnCryptoData, key_slot)) {
        OVPN_KEY_SLOT_PRIMARY => KeySlot::Primary,
        OVPN_KEY_SLOT_SECONDARY => KeySlot::Secondary,
        other => return Err(DecodeError::UnknownKeySlot(other)),
    };
    let cipher = match i32_le(buf, offset_of!(OvpnCryptoData, cipher_alg)) {
        OVPN_CIPHER_ALG_AES_GCM => Cipher::AesGcm,
        OVPN_CIPHER_ALG_CHACHA20_POLY1305 => Cipher::ChaCha20Poly1305,
        OVPN_CIPHER_ALG_NONE => return Err(DecodeError::CipherNone),
        other => return Err(DecodeError::UnknownCipher(other)),
    };
    let encrypt = direction_key(buf, offset_of!(OvpnCryptoData, encrypt));
    let decrypt = direction_key(buf, offset_of!(OvpnCryptoData, decrypt));
    for len in [encrypt.len, decrypt.len] {
        if usize::from(len) > KEY_MATERIAL_LEN {
            return Err(DecodeError::KeyTooLong(len));
        }
    }
    for len in [encrypt.len, decrypt.len] {
        if !cipher.accepts_key_len(usize::from(len)) {
            return Err(DecodeError::BadKeyLength(len));
        }
    }
    if encrypt.len != decrypt.len {
        return Err(DecodeError::KeyLengthMismatch);
    }
    let raw_key_id = bytes::<1>(buf, offset_of!(OvpnCryptoData, key_id))[0];
    let key_id = KeyId::new(raw_key_id).ok_or(DecodeError::KeyIdOutOfRange(raw_key_id))?;
    let peer_id = u32::try_from(i32_le(buf, offset_of!(OvpnCryptoData, peer_id))).ok().and_then(PeerId::new);
    Ok(CryptoData { slot, cipher, key_id, peer_id, encrypt, decrypt, epoch })
}

fn direction_key(buf: &[u8], at: usize) -> DirectionKey {
    DirectionKey {
        material: bytes(buf, at + offset_of!(OvpnKeyDirection, key)),
        len: bytes::<1>(buf, at + offset_of!(OvpnKeyDirection, key_len))[0],
        nonce_tail: bytes(buf, at + offset_of!(OvpnKeyDirection, nonce_tail)),
    }
}

/// OVPN_SET_PEER (SET_PEER).
pub fn set_peer(input: &[u8]) -> Result<SetPeer, DecodeError> {
    let buf = prefix::<OvpnSetPeer>(input)?;
    set_peer_fields(
        i32_le(buf, offset_of!(OvpnSetPeer, keepalive_interval)),
        i32_le(buf, offset_of!(OvpnSetPeer, keepalive_timeout)),
        i32_le(buf, offset_of!(OvpnSetPeer, mss)),
    )
}

/// OVPN_MP_SET_PEER (MP_SET_PEER).
pub fn mp_set_peer(input: &[u8]) -> Result<MpSetPeer, DecodeError> {
    let buf = prefix::<OvpnMpSetPeer>(input)?;
    let peer_id = peer_id(buf, offset_of!(OvpnMpSetPeer, peer_id), Ioctl::MpSetPeer)?;
    let params = set_peer_fields(
        i32_le(buf, offset_of!(OvpnMpSetPeer, keepalive_interval)),
        i32_le(buf, offset_of!(OvpnMpSetPeer, keepalive_timeout)),
        i32_le(buf, offset_of!(OvpnMpSetPeer, mss)),
    )?;
    Ok(MpSetPeer { peer_id, params })
}

fn set_peer_fields(interval: i32, timeout: i32, mss: i32) -> Result<SetPeer, DecodeError> {
    let keepalive = |v: i32| match v {
        UNCHANGED => Ok(None),
        _ => u32::try_from(v).map(Some).map_err(|_| DecodeError::BadKeepalive(v)),
    };
    let mss = match mss {
        UNCHANGED => None,
        _ => Some(u16::try_from(mss).map_err(|_| DecodeError::BadMss(mss))?),
    };
    Ok(SetPeer { keepalive_interval: keepalive(interval)?, keepalive_timeout: keepalive(timeout)?, mss })
}

/// OVPN_SET_MODE (SET_MODE).
pub fn set_mode(input: &[u8]) -> Result<Mode, DecodeError> {
    let buf = prefix::<OvpnSetMode>(input)?;
    match i32_le(buf, offset_of!(OvpnSetMode, mode)) {
        OVPN_MODE_P2P => Ok(Mode::P2p),
        OVPN_MODE_MP => Ok(Mode::Mp),
        other => Err(DecodeError::UnknownMode(other)),
    }
}

/// OVPN_MP_START_VPN (MP_START_VPN input).
pub fn mp_start_vpn(input: &[u8]) -> Result<MpStartVpn, DecodeError> {
    let buf = prefix::<OvpnMpStartVpn>(input)?;
    let listen = sockaddr(buf, offset_of!(OvpnMpStartVpn, listen_address))?;
    let ipv6_only = i32_le(buf, offset_of!(OvpnMpStartVpn, ipv6_only)) != 0;
    Ok(MpStartVpn { listen, ipv6_only })
}

/// OVPN_MP_DEL_PEER (MP_DEL_PEER).
pub fn mp_del_peer(input: &[u8]) -> Result<PeerId, DecodeError> {
    let buf = prefix::<OvpnMpDelPeer>(input)?;
    peer_id(buf, offset_of!(OvpnMpDelPeer, peer_id), Ioctl::MpDelPeer)
}

/// OVPN_MP_SWAP_KEYS (MP_SWAP_KEYS).
pub fn mp_swap_keys(input: &[u8]) -> Result<PeerId, DecodeError> {
    let buf = prefix::<OvpnMpSwapKeys>(input)?;
    peer_id(buf, offset_of!(OvpnMpSwapKeys, peer_id), Ioctl::MpSwapKeys)
}

/// OVPN_MP_IROUTE (MP_ADD_IROUTE).
pub fn mp_add_iroute(input: &[u8]) -> Result<MpIroute, DecodeError> {
    let buf = prefix::<OvpnMpIroute>(input)?;
    let route = iroute(buf)?;
    let peer_id = peer_id(buf, offset_of!(OvpnMpIroute, peer_id), Ioctl::MpAddIroute)?;
    Ok(MpIroute { route, peer_id })
}

/// OVPN_MP_IROUTE (MP_DEL_IROUTE): the PeerId is ignored.
pub fn mp_del_iroute(input: &[u8]) -> Result<Iroute, DecodeError> {
    iroute(prefix::<OvpnMpIroute>(input)?)
}

fn iroute(buf: &[u8]) -> Result<Iroute, DecodeError> {
    let ipv6 = i32_le(buf, offset_of!(OvpnMpIroute, ipv6)) != 0;
    let netbits = i32_le(buf, offset_of!(OvpnMpIroute, netbits));
    let max = if ipv6 { IPV6_MAX_NETBITS } else { IPV4_MAX_NETBITS };
    let bits =
        u8::try_from(netbits).ok().filter(|b| *b <= max).ok_or(DecodeError::NetbitsOutOfRange { netbits, ipv6 })?;
    let at = offset_of!(OvpnMpIroute, addr);
    let prefix = if ipv6 {
        IpAddr::V6(Ipv6Addr::from(bytes::<16>(buf, at)))
    } else {
        IpAddr::V4(Ipv4Addr::from(bytes::<4>(buf, at)))
    };
    Ok(Iroute { prefix, netbits: bits })
}

/// OVPN_GET_PEER_STATS (GET_PEER_STATS).
pub fn get_peer_stats(input: &[u8]) -> Result<PeerStatsQuery, DecodeError> {
    let buf = prefix::<OvpnGetPeerStats>(input)?;
    let at = offset_of!(OvpnGetPeerStats, peer_id);
    if i32_le(buf, at) == OVPN_ALL_PEERS {
        return Ok(PeerStatsQuery::All);
    }
    peer_id(buf, at, Ioctl::GetPeerStats).map(PeerStatsQuery::One)
}

// ---------------------------------------------------------------------------
// Encoders. Each returns the byte count to complete the request with
// (IoStatus.Information).

/// OVPN_STATS (GET_STATS).
pub fn encode_stats(out: &mut [u8], stats: &OvpnStats) -> Result<usize, EncodeError> {
    let buf = output::<OvpnStats>(out)?;
    let longs = [
        (offset_of!(OvpnStats, lost_in_control_packets), stats.lost_in_control_packets),
        (offset_of!(OvpnStats, lost_out_control_packets), stats.lost_out_control_packets),
        (offset_of!(OvpnStats, lost_in_data_packets), stats.lost_in_data_packets),
        (offset_of!(OvpnStats, lost_out_data_packets), stats.lost_out_data_packets),
        (offset_of!(OvpnStats, received_data_packets), stats.received_data_packets),
        (offset_of!(OvpnStats, received_control_packets), stats.received_control_packets),
        (offset_of!(OvpnStats, sent_control_packets), stats.sent_control_packets),
        (offset_of!(OvpnStats, sent_data_packets), stats.sent_data_packets),
    ];
    for (at, v) in longs {
        put(buf, at, &v.to_le_bytes());
    }
    let long64s = [
        (offset_of!(OvpnStats, transport_bytes_sent), stats.transport_bytes_sent),
        (offset_of!(OvpnStats, transport_bytes_received), stats.transport_bytes_received),
        (offset_of!(OvpnStats, tun_bytes_sent), stats.tun_bytes_sent),
        (offset_of!(OvpnStats, tun_bytes_received), stats.tun_bytes_received),
    ];
    for (at, v) in long64s {
        put(buf, at, &v.to_le_bytes());
    }
    Ok(size_of::<OvpnStats>())
}

/// One OVPN_PEER_STATS (GET_PEER_STATS for a single peer). ovpn-dco-win
/// retrieves the output buffer before looking the peer up, so a short buffer
/// wins over an unknown peer.
pub fn encode_peer_stats(out: &mut [u8], stats: &OvpnPeerStats) -> Result<usize, EncodeError> {
    let buf = output::<OvpnPeerStats>(out)?;
    put(buf, offset_of!(OvpnPeerStats, peer_id), &stats.peer_id.to_le_bytes());
    put(buf, offset_of!(OvpnPeerStats, link_rx_bytes), &stats.link_rx_bytes.to_le_bytes());
    put(buf, offset_of!(OvpnPeerStats, link_tx_bytes), &stats.link_tx_bytes.to_le_bytes());
    put(buf, offset_of!(OvpnPeerStats, vpn_rx_bytes), &stats.vpn_rx_bytes.to_le_bytes());
    put(buf, offset_of!(OvpnPeerStats, vpn_tx_bytes), &stats.vpn_tx_bytes.to_le_bytes());
    Ok(size_of::<OvpnPeerStats>())
}

/// What GET_PEER_STATS for all peers completes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerStatsAll {
    /// STATUS_SUCCESS with this many bytes (0 when there are no peers).
    Written(usize),
    /// The buffer cannot hold every peer: its first 4 bytes hold the size
    /// needed (a ULONG) and the request completes with STATUS_BUFFER_OVERFLOW
    /// and Information = 4, the only way a failing METHOD_BUFFERED request
    /// returns data to user mode.
    Overflow { required: u32 },
}

impl PeerStatsAll {
    pub const fn status(self) -> NtStatus {
        match self {
            PeerStatsAll::Written(_) => NtStatus::SUCCESS,
            PeerStatsAll::Overflow { .. } => NtStatus::BUFFER_OVERFLOW,
        }
    }

    /// IoStatus.Information.
    pub const fn information(self) -> usize {
        match self {
            PeerStatsAll::Written(n) => n,
            PeerStatsAll::Overflow { .. } => size_of::<u32>(),
        }
    }
}

/// An array of OVPN_PEER_STATS (GET_PEER_STATS with PeerId −1), following
/// ovpn-dco-win: an output shorter than a ULONG is STATUS_BUFFER_TOO_SMALL;
/// no peers is success with nothing written; too few bytes for every peer
/// writes the required size (see [`PeerStatsAll::Overflow`]).
pub fn encode_peer_stats_all<I>(out: &mut [u8], peers: I) -> Result<PeerStatsAll, EncodeError>
where
    I: ExactSizeIterator<Item = OvpnPeerStats>,
{
    let got = out.len();
    if got < size_of::<u32>() {
        return Err(EncodeError::OutputTooSmall { needed: size_of::<u32>(), got });
    }
    let count = peers.len();
    if count == 0 {
        return Ok(PeerStatsAll::Written(0));
    }
    let required = count.checked_mul(size_of::<OvpnPeerStats>()).unwrap_or(usize::MAX);
    if got < required {
        let required = u32::try_from(required).unwrap_or(u32::MAX);
        put(out, 0, &required.to_le_bytes());
        return Ok(PeerStatsAll::Overflow { required });
    }
    let mut written = 0;
    for (slot, stats) in out.chunks_exact_mut(size_of::<OvpnPeerStats>()).zip(peers) {
        written += encode_peer_stats(slot, &stats)?;
    }
    Ok(PeerStatsAll::Written(written))
}

/// OVPN_VERSION (GET_VERSION).
pub fn encode_version(out: &mut [u8], version: &OvpnVersion) -> Result<usize, EncodeError> {
    let buf = output::<OvpnVersion>(out)?;
    put(buf, offset_of!(OvpnVersion, major), &version.major.to_le_bytes());
    put(buf, offset_of!(OvpnVersion, minor), &version.minor.to_le_bytes());
    put(buf, offset_of!(OvpnVersion, patch), &version.patch.to_le_bytes());
    Ok(size_of::<OvpnVersion>())
}

/// OVPN_MP_START_VPN (MP_START_VPN output: the address actually bound).
pub fn encode_mp_start_vpn(out: &mut [u8], start: &MpStartVpn) -> Result<usize, EncodeError> {
    let buf = output::<OvpnMpStartVpn>(out)?;
    put_sockaddr(buf, offset_of!(OvpnMpStartVpn, listen_address), &start.listen);
    put(buf, offset_of!(OvpnMpStartVpn, ipv6_only), &i32::from(start.ipv6_only).to_le_bytes());
    Ok(size_of::<OvpnMpStartVpn>())
}

/// OVPN_DEL_PEER_REASON
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelPeerReason {
    Teardown,
    /// MP_DEL_PEER from OpenVPN.
    Userspace,
    /// Keepalive timeout.
    Expired,
    TransportError,
    TransportDisconnect,
}

impl DelPeerReason {
    pub const fn raw(self) -> i32 {
        match self {
            DelPeerReason::Teardown => OVPN_DEL_PEER_REASON_TEARDOWN,
            DelPeerReason::Userspace => OVPN_DEL_PEER_REASON_USERSPACE,
            DelPeerReason::Expired => OVPN_DEL_PEER_REASON_EXPIRED,
            DelPeerReason::TransportError => OVPN_DEL_PEER_REASON_TRANSPORT_ERROR,
            DelPeerReason::TransportDisconnect => OVPN_DEL_PEER_REASON_TRANSPORT_DISCONNECT,
        }
    }
}

/// One NOTIFY_EVENT completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyEvent {
    DelPeer {
        peer_id: PeerId,
        reason: DelPeerReason,
    },
    /// The peer's new key was used first: OpenVPN should swap (epoch/renegotiation).
    SwapKeys {
        peer_id: PeerId,
    },
    /// The peer's transport address changed.
    FloatPeer {
        peer_id: PeerId,
        address: SocketAddr,
    },
}

/// OVPN_NOTIFY_EVENT, fully zeroed before it is filled, so no padding or
/// unused FloatAddress byte leaks kernel memory.
pub fn encode_notify_event(out: &mut [u8], event: &NotifyEvent) -> Result<usize, EncodeError> {
    let buf = output::<OvpnNotifyEvent>(out)?;
    let (cmd, peer, reason, float) = match *event {
        NotifyEvent::DelPeer { peer_id, reason } => (OVPN_CMD_DEL_PEER, peer_id, reason.raw(), None),
        NotifyEvent::SwapKeys { peer_id } => (OVPN_CMD_SWAP_KEYS, peer_id, 0, None),
        NotifyEvent::FloatPeer { peer_id, address } => (OVPN_CMD_FLOAT_PEER, peer_id, 0, Some(address)),
    };
    // PeerId::MAX fits an i32, so the cast is exact.
    let peer = peer.get() as i32;
    put(buf, offset_of!(OvpnNotifyEvent, cmd), &cmd.to_le_bytes());
    put(buf, offset_of!(OvpnNotifyEvent, peer_id), &peer.to_le_bytes());
    put(buf, offset_of!(OvpnNotifyEvent, del_peer_reason), &reason.to_le_bytes());
    if let Some(address) = float {
        put_sockaddr(buf, offset_of!(OvpnNotifyEvent, float_address), &address);
    }
    Ok(size_of::<OvpnNotifyEvent>())
}
