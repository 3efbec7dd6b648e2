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
    let required = count.saturating_mul(size_of::<OvpnPeerStats>());
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    // Buffers are built byte by byte as OpenVPN's dco_win.c fills the
    // structures on x64 Windows: little-endian integers, ports and addresses
    // in network order, AF_INET = 2, AF_INET6 = 23.

    /// A 28-byte address union holding SOCKADDR_IN.
    fn sin(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut b = vec![0x02, 0x00];
        b.extend_from_slice(&port.to_be_bytes());
        b.extend_from_slice(&ip);
        b.resize(28, 0); // sin_zero and the rest of the union
        b
    }

    /// A 28-byte address union holding SOCKADDR_IN6.
    fn sin6(ip: [u8; 16], port: u16, flowinfo: u32, scope_id: u32) -> Vec<u8> {
        let mut b = vec![0x17, 0x00];
        b.extend_from_slice(&port.to_be_bytes());
        b.extend_from_slice(&flowinfo.to_le_bytes());
        b.extend_from_slice(&ip);
        b.extend_from_slice(&scope_id.to_le_bytes());
        b
    }

    fn le(v: i32) -> [u8; 4] {
        v.to_le_bytes()
    }

    const V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42];

    fn pid(v: u32) -> PeerId {
        PeerId::new(v).unwrap()
    }

    #[test]
    fn new_peer_udp_ipv4_as_openvpn_sends_it() {
        // No --local: unspecified local address, port 0.
        let mut b = sin([0, 0, 0, 0], 0);
        b.extend(sin([198, 51, 100, 7], 1194));
        b.extend(le(OVPN_PROTO_UDP));
        assert_eq!(b.len(), 60);
        let p = new_peer(&b).unwrap();
        assert_eq!(p.local, "0.0.0.0:0".parse().unwrap());
        assert_eq!(p.remote, "198.51.100.7:1194".parse().unwrap());
        assert_eq!(p.transport, Transport::Udp);
    }

    #[test]
    fn new_peer_tcp_ipv6_keeps_flowinfo_and_scope() {
        let mut b = sin6([0; 16], 0, 0, 0);
        b.extend(sin6(V6, 443, 7, 3));
        b.extend(le(OVPN_PROTO_TCP));
        let p = new_peer(&b).unwrap();
        assert_eq!(p.transport, Transport::Tcp);
        assert_eq!(p.remote, SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(V6), 443, 7, 3)));
        assert!(p.local.ip().is_unspecified());
    }

    #[test]
    fn new_peer_rejects_bad_family_proto_and_mixed_families() {
        let mut b = sin([0; 4], 0);
        b.extend(sin([192, 0, 2, 1], 1194));
        b.extend(le(OVPN_PROTO_UDP));

        let mut bad = b.clone();
        bad[0] = 10; // Linux's AF_INET6 is not Windows'
        assert_eq!(new_peer(&bad), Err(DecodeError::UnknownAddressFamily(10)));
        let mut bad = b.clone();
        bad[28] = 0;
        assert_eq!(new_peer(&bad), Err(DecodeError::UnknownAddressFamily(0)));
        let mut bad = b.clone();
        bad[56..60].copy_from_slice(&le(2));
        assert_eq!(new_peer(&bad), Err(DecodeError::UnknownProto(2)));
        assert_eq!(DecodeError::UnknownProto(2).status(), NtStatus::INVALID_DEVICE_REQUEST);
        assert_eq!(DecodeError::UnknownAddressFamily(0).status(), NtStatus::INVALID_DEVICE_REQUEST);

        let mut mixed = sin6([0; 16], 0, 0, 0);
        mixed.extend(sin([192, 0, 2, 1], 1194));
        mixed.extend(le(OVPN_PROTO_UDP));
        assert_eq!(new_peer(&mixed), Err(DecodeError::AddressFamilyMismatch));
        assert_eq!(DecodeError::AddressFamilyMismatch.status(), NtStatus::INVALID_PARAMETER);
    }

    #[test]
    fn mp_new_peer_as_openvpn_sends_it() {
        // dco_new_peer: Local has only its family set; VpnAddr6 left zero.
        let mut b = vec![0u8; 28];
        b[0] = 2;
        b.extend(sin([203, 0, 113, 9], 50000));
        b.extend([10, 8, 0, 6]);
        b.extend([0u8; 16]);
        b.extend(le(5));
        assert_eq!(b.len(), 80);
        let p = mp_new_peer(&b).unwrap();
        assert_eq!(p.remote, "203.0.113.9:50000".parse().unwrap());
        assert_eq!(p.vpn_ipv4, Some(Ipv4Addr::new(10, 8, 0, 6)));
        assert_eq!(p.vpn_ipv6, None);
        assert_eq!(p.peer_id, pid(5));

        let mut v6 = b.clone();
        v6[56..60].fill(0);
        v6[60..76].copy_from_slice(&V6);
        let p = mp_new_peer(&v6).unwrap();
        assert_eq!(p.vpn_ipv4, None);
        assert_eq!(p.vpn_ipv6, Some(Ipv6Addr::from(V6)));

        for bad_id in [-1, 0x0100_0000, i32::MIN] {
            let mut bad = b.clone();
            bad[76..80].copy_from_slice(&le(bad_id));
            let err = mp_new_peer(&bad).unwrap_err();
            assert_eq!(err, DecodeError::PeerIdOutOfRange { ioctl: Ioctl::MpNewPeer, value: bad_id });
            assert_eq!(err.status(), NtStatus::INVALID_PARAMETER);
        }
        let mut max = b.clone();
        max[76..80].copy_from_slice(&le(0x00FF_FFFF));
        assert_eq!(mp_new_peer(&max).unwrap().peer_id, PeerId::UNDEFINED);
    }

    /// OVPN_KEY_DIRECTION: Key[32] (first `len` bytes used), KeyLen, NonceTail[8].
    fn key_direction(fill: u8, len: u8, tail: u8) -> Vec<u8> {
        let mut b: Vec<u8> = (0..32).map(|i| fill.wrapping_add(i)).collect();
        b.push(len);
        b.extend([tail; 8]);
        b
    }

    /// OVPN_CRYPTO_DATA as dco_new_key fills it.
    fn crypto(slot: i32, cipher: i32, key_len: u8, key_id: u8, peer: i32) -> Vec<u8> {
        let mut b = key_direction(0x10, key_len, 0xE0);
        b.extend(key_direction(0x80, key_len, 0xD0));
        b.extend([0, 0]); // padding to KeySlot @84
        b.extend(le(slot));
        b.extend(le(cipher));
        b.push(key_id);
        b.extend([0, 0, 0]); // padding to PeerId @96
        b.extend(le(peer));
        assert_eq!(b.len(), 100);
        b
    }

    #[test]
    fn new_key_aes_256_gcm_as_openvpn_sends_it() {
        let b = crypto(OVPN_KEY_SLOT_PRIMARY, OVPN_CIPHER_ALG_AES_GCM, 32, 2, 0x00FF_FFFF);
        let k = new_key(&b).unwrap();
        assert_eq!(k.slot, KeySlot::Primary);
        assert_eq!(k.cipher, Cipher::AesGcm);
        assert_eq!(k.key_id, KeyId::new(2).unwrap());
        assert_eq!(k.peer_id, Some(PeerId::UNDEFINED));
        assert!(!k.epoch);
        assert_eq!(k.encrypt.key(), &b[0..32]);
        assert_eq!(k.encrypt.nonce_tail(), &[0xE0; 8]);
        assert_eq!(k.decrypt.key(), &b[41..73]);
        assert_eq!(k.decrypt.nonce_tail(), &[0xD0; 8]);
    }

    #[test]
    fn new_key_aes_128_uses_the_key_prefix_and_keeps_the_epoch_secret() {
        let b = crypto(OVPN_KEY_SLOT_SECONDARY, OVPN_CIPHER_ALG_AES_GCM, 16, 0, 0);
        let k = new_key(&b).unwrap();
        assert_eq!(k.slot, KeySlot::Secondary);
        assert_eq!(k.encrypt.key(), &b[0..16]);
        assert_eq!(k.encrypt.key_len(), 16);
        assert_eq!(&k.encrypt.epoch_secret()[..], &b[0..32]);
        // Debug output carries no key bytes.
        let dbg = alloc::format!("{:?}", k.encrypt);
        assert!(!dbg.contains("16, 17"), "{dbg}");
    }

    #[test]
    fn new_key_peer_id_outside_24_bits_is_kept_as_none() {
        for id in [-1, 0x0100_0000, i32::MIN] {
            let b = crypto(0, OVPN_CIPHER_ALG_CHACHA20_POLY1305, 32, 0, id);
            assert_eq!(new_key(&b).unwrap().peer_id, None);
        }
    }

    #[test]
    fn new_key_v2_epoch_is_bit_1_only() {
        let mut b = crypto(0, OVPN_CIPHER_ALG_AES_GCM, 32, 1, 0);
        b.extend(2u32.to_le_bytes());
        assert!(new_key_v2(&b).unwrap().epoch);
        b[100..104].copy_from_slice(&4u32.to_le_bytes()); // old 64-bit packet id bit
        assert!(!new_key_v2(&b).unwrap().epoch);
        b[100..104].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(new_key_v2(&b).unwrap().epoch);
        // NEW_KEY_V2 needs all 104 bytes; the V1 100 are not enough.
        assert_eq!(new_key_v2(&b[..100]), Err(DecodeError::InputTooSmall { needed: 104, got: 100 }));
    }

    #[test]
    fn new_key_validation_follows_ovpn_dco_win() {
        let aes = OVPN_CIPHER_ALG_AES_GCM;
        let cases = [
            (crypto(2, aes, 32, 0, 0), DecodeError::UnknownKeySlot(2), NtStatus::INVALID_DEVICE_REQUEST),
            (crypto(-1, 7, 32, 0, 0), DecodeError::UnknownKeySlot(-1), NtStatus::INVALID_DEVICE_REQUEST),
            (crypto(0, 3, 32, 0, 0), DecodeError::UnknownCipher(3), NtStatus::INVALID_DEVICE_REQUEST),
            (crypto(0, -1, 32, 0, 0), DecodeError::UnknownCipher(-1), NtStatus::INVALID_DEVICE_REQUEST),
            (crypto(0, OVPN_CIPHER_ALG_NONE, 0, 0, 0), DecodeError::CipherNone, NtStatus::INVALID_DEVICE_REQUEST),
            (crypto(0, aes, 33, 0, 0), DecodeError::KeyTooLong(33), NtStatus::INVALID_DEVICE_REQUEST),
            (crypto(0, aes, 255, 0, 0), DecodeError::KeyTooLong(255), NtStatus::INVALID_DEVICE_REQUEST),
            (crypto(0, aes, 0, 0, 0), DecodeError::BadKeyLength(0), NtStatus::INVALID_PARAMETER),
            (crypto(0, aes, 17, 0, 0), DecodeError::BadKeyLength(17), NtStatus::INVALID_PARAMETER),
            (
                crypto(0, OVPN_CIPHER_ALG_CHACHA20_POLY1305, 16, 0, 0),
                DecodeError::BadKeyLength(16),
                NtStatus::INVALID_PARAMETER,
            ),
            (crypto(0, aes, 32, 8, 0), DecodeError::KeyIdOutOfRange(8), NtStatus::INVALID_PARAMETER),
        ];
        for (buf, err, status) in cases {
            assert_eq!(new_key(&buf), Err(err));
            assert_eq!(err.status(), status);
        }
        let mut mismatch = crypto(0, aes, 32, 0, 0);
        mismatch[32 + 41] = 16;
        assert_eq!(new_key(&mismatch), Err(DecodeError::KeyLengthMismatch));
        // A too-long decrypt key is caught even when the encrypt one is fine.
        let mut long = crypto(0, aes, 32, 0, 0);
        long[32 + 41] = 64;
        assert_eq!(new_key(&long), Err(DecodeError::KeyTooLong(64)));
    }

    #[test]
    fn set_peer_minus_one_leaves_fields_unchanged() {
        let mut b = Vec::new();
        for v in [10, 60, 1400] {
            b.extend(le(v));
        }
        let expect = SetPeer { keepalive_interval: Some(10), keepalive_timeout: Some(60), mss: Some(1400) };
        assert_eq!(set_peer(&b), Ok(expect));

        let unchanged: Vec<u8> = [-1, -1, -1].iter().flat_map(|v| le(*v)).collect();
        assert_eq!(set_peer(&unchanged), Ok(SetPeer { keepalive_interval: None, keepalive_timeout: None, mss: None }));
        let zeros = [0u8; 12];
        assert_eq!(
            set_peer(&zeros),
            Ok(SetPeer { keepalive_interval: Some(0), keepalive_timeout: Some(0), mss: Some(0) })
        );
    }

    #[test]
    fn set_peer_rejects_other_negatives_and_wide_mss() {
        let enc = |v: [i32; 3]| -> Vec<u8> { v.iter().flat_map(|x| le(*x)).collect() };
        assert_eq!(set_peer(&enc([-2, 0, 0])), Err(DecodeError::BadKeepalive(-2)));
        assert_eq!(set_peer(&enc([0, i32::MIN, 0])), Err(DecodeError::BadKeepalive(i32::MIN)));
        assert_eq!(set_peer(&enc([0, 0, 65536])), Err(DecodeError::BadMss(65536)));
        assert_eq!(set_peer(&enc([0, 0, -5])), Err(DecodeError::BadMss(-5)));
        assert_eq!(set_peer(&enc([0, 0, 65535])).unwrap().mss, Some(65535));
        assert_eq!(set_peer(&enc([i32::MAX, 0, 0])).unwrap().keepalive_interval, Some(i32::MAX as u32));
        assert_eq!(DecodeError::BadMss(-5).status(), NtStatus::INVALID_PARAMETER);
    }

    #[test]
    fn mp_set_peer_reads_the_peer_then_the_settings() {
        let b: Vec<u8> = [3, 10, 120, -1].iter().flat_map(|v| le(*v)).collect();
        let p = mp_set_peer(&b).unwrap();
        assert_eq!(p.peer_id, pid(3));
        assert_eq!(p.params, SetPeer { keepalive_interval: Some(10), keepalive_timeout: Some(120), mss: None });

        let bad: Vec<u8> = [-1, 10, 120, -1].iter().flat_map(|v| le(*v)).collect();
        let err = mp_set_peer(&bad).unwrap_err();
        assert_eq!(err, DecodeError::PeerIdOutOfRange { ioctl: Ioctl::MpSetPeer, value: -1 });
        assert_eq!(err.status(), NtStatus::INVALID_DEVICE_REQUEST);
    }

    #[test]
    fn set_mode_values() {
        assert_eq!(set_mode(&le(0)), Ok(Mode::P2p));
        assert_eq!(set_mode(&le(1)), Ok(Mode::Mp));
        assert_eq!(set_mode(&le(2)), Err(DecodeError::UnknownMode(2)));
        assert_eq!(set_mode(&le(-1)), Err(DecodeError::UnknownMode(-1)));
        assert_eq!(DecodeError::UnknownMode(2).status(), NtStatus::INVALID_PARAMETER);
    }

    #[test]
    fn mp_start_vpn_as_openvpn_sends_it_and_echoes_back() {
        let mut b = sin6([0; 16], 1194, 0, 0);
        b.extend(le(1));
        let s = mp_start_vpn(&b).unwrap();
        assert_eq!(s.listen, "[::]:1194".parse().unwrap());
        assert!(s.ipv6_only);

        let mut out = [0xAAu8; 40];
        assert_eq!(encode_mp_start_vpn(&mut out, &s), Ok(32));
        assert_eq!(&out[..32], &b[..]);
        assert_eq!(&out[32..], &[0xAA; 8]); // beyond the structure: untouched
        assert_eq!(mp_start_vpn(&out), Ok(s));

        let mut v4 = sin([0; 4], 1194);
        v4.extend(le(0));
        let s4 = mp_start_vpn(&v4).unwrap();
        assert!(!s4.ipv6_only);
        let mut out = [0xAAu8; 32];
        encode_mp_start_vpn(&mut out, &s4).unwrap();
        assert_eq!(&out[..], &v4[..]); // sin_zero and union tail zeroed
        assert_eq!(encode_mp_start_vpn(&mut [0u8; 31], &s4), Err(EncodeError::OutputTooSmall { needed: 32, got: 31 }));

        let mut bad = v4.clone();
        bad[0..2].copy_from_slice(&1u16.to_le_bytes()); // AF_UNIX
        assert_eq!(mp_start_vpn(&bad), Err(DecodeError::UnknownAddressFamily(1)));
    }

    #[test]
    fn peer_id_structs_and_their_not_found_statuses() {
        assert_eq!(mp_del_peer(&le(9)), Ok(pid(9)));
        assert_eq!(mp_swap_keys(&le(0x00FF_FFFF)), Ok(PeerId::UNDEFINED));
        let del = mp_del_peer(&le(-1)).unwrap_err();
        assert_eq!(del.status(), NtStatus::NOT_FOUND);
        let swap = mp_swap_keys(&le(0x0100_0000)).unwrap_err();
        assert_eq!(swap.status(), NtStatus::INVALID_DEVICE_REQUEST);

        assert_eq!(get_peer_stats(&le(-1)), Ok(PeerStatsQuery::All));
        assert_eq!(get_peer_stats(&le(7)), Ok(PeerStatsQuery::One(pid(7))));
        let stats = get_peer_stats(&le(-2)).unwrap_err();
        assert_eq!(stats, DecodeError::PeerIdOutOfRange { ioctl: Ioctl::GetPeerStats, value: -2 });
        assert_eq!(stats.status(), NtStatus::OBJECTID_NOT_FOUND);
    }

    /// OVPN_MP_IROUTE as dco_win_add_iroute_ipv4/ipv6 fill it.
    fn iroute_buf(addr: &[u8], netbits: i32, peer: i32, ipv6: i32) -> Vec<u8> {
        let mut b = addr.to_vec();
        b.resize(16, 0);
        b.extend(le(netbits));
        b.extend(le(peer));
        b.extend(le(ipv6));
        b
    }

    #[test]
    fn iroutes_ipv4_and_ipv6() {
        let r = mp_add_iroute(&iroute_buf(&[10, 0, 1, 0], 24, 3, 0)).unwrap();
        assert_eq!(r.peer_id, pid(3));
        assert_eq!(r.route, Iroute { prefix: IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0)), netbits: 24 });

        let r = mp_add_iroute(&iroute_buf(&V6, 64, 4, 1)).unwrap();
        assert_eq!(r.route, Iroute { prefix: IpAddr::V6(Ipv6Addr::from(V6)), netbits: 64 });

        // Edges.
        assert!(mp_add_iroute(&iroute_buf(&[0; 4], 0, 0, 0)).is_ok());
        assert!(mp_add_iroute(&iroute_buf(&[10, 0, 0, 1], 32, 0, 0)).is_ok());
        assert!(mp_add_iroute(&iroute_buf(&V6, 128, 0, 1)).is_ok());
        for (bits, v6) in [(33, 0), (-1, 0), (129, 1), (-1, 1), (i32::MAX, 1), (256 + 24, 0)] {
            let err = mp_add_iroute(&iroute_buf(&[0; 16], bits, 0, v6)).unwrap_err();
            assert_eq!(err, DecodeError::NetbitsOutOfRange { netbits: bits, ipv6: v6 != 0 });
            assert_eq!(err.status(), NtStatus::INVALID_PARAMETER);
            assert_eq!(mp_del_iroute(&iroute_buf(&[0; 16], bits, 0, v6)), Err(err));
        }
        // Any non-zero IPv6 flag means IPv6.
        assert!(mp_add_iroute(&iroute_buf(&V6, 100, 0, -7)).unwrap().route.prefix.is_ipv6());

        let bad_peer = mp_add_iroute(&iroute_buf(&[10, 0, 0, 0], 8, -3, 0)).unwrap_err();
        assert_eq!(bad_peer, DecodeError::PeerIdOutOfRange { ioctl: Ioctl::MpAddIroute, value: -3 });
        // MP_DEL_IROUTE ignores the peer.
        assert_eq!(
            mp_del_iroute(&iroute_buf(&[10, 0, 0, 0], 8, -3, 0)),
            Ok(Iroute { prefix: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), netbits: 8 })
        );
    }

    #[test]
    fn empty_and_short_inputs_are_buffer_too_small_for_every_ioctl() {
        for ioctl in Ioctl::ALL {
            let size = input_size(ioctl);
            if size == 0 {
                // Input ignored, whatever it is.
                assert!(decode_request(ioctl.code(), &[]).is_ok(), "{ioctl:?}");
                assert!(decode_request(ioctl.code(), &[0xFF; 300]).is_ok(), "{ioctl:?}");
                continue;
            }
            for len in [0, 1, size - 1] {
                let err = decode_request(ioctl.code(), &vec![0u8; len]).unwrap_err();
                assert_eq!(err, DecodeError::InputTooSmall { needed: size, got: len }, "{ioctl:?}");
                assert_eq!(err.status(), NtStatus::BUFFER_TOO_SMALL);
            }
        }
    }

    #[test]
    fn longer_inputs_read_only_the_structure() {
        let mut b = crypto(0, OVPN_CIPHER_ALG_AES_GCM, 24, 3, 1);
        let exact = new_key(&b).unwrap();
        b.extend([0xFF; 50]);
        assert_eq!(new_key(&b), Ok(exact));

        let mut b = sin([0; 4], 0);
        b.extend(sin([192, 0, 2, 1], 1194));
        b.extend(le(OVPN_PROTO_UDP));
        let exact = new_peer(&b).unwrap();
        b.push(0xFF);
        assert_eq!(new_peer(&b), Ok(exact));
    }

    #[test]
    fn unaligned_input_decodes_the_same() {
        let b = crypto(1, OVPN_CIPHER_ALG_AES_GCM, 32, 7, 42);
        let mut shifted = vec![0u8; 1];
        shifted.extend(&b);
        assert_eq!(new_key(&shifted[1..]), new_key(&b));
        assert_eq!(new_key(&b).unwrap().peer_id, Some(pid(42)));
    }

    #[test]
    fn unknown_codes_are_invalid_device_request() {
        for code in [0, 0x0022_0000, 0x0022_0050, 0x0022_0007, u32::MAX] {
            let err = decode_request(code, &[0; 128]).unwrap_err();
            assert_eq!(err, DecodeError::UnknownIoctl(code));
            assert_eq!(err.status(), NtStatus::INVALID_DEVICE_REQUEST);
        }
    }

    #[test]
    fn decode_request_names_its_ioctl() {
        let b: Vec<u8> = [3, 10, 120, -1].iter().flat_map(|v| le(*v)).collect();
        let r = decode_request(Ioctl::MpSetPeer.code(), &b).unwrap();
        assert_eq!(r.ioctl(), Ioctl::MpSetPeer);
        assert_eq!(decode_request(Ioctl::SwapKeys.code(), &[]), Ok(Request::SwapKeys));
    }

    #[test]
    fn stats_bytes() {
        let s = OvpnStats {
            lost_in_control_packets: 1,
            lost_out_control_packets: 2,
            lost_in_data_packets: 3,
            lost_out_data_packets: 4,
            received_data_packets: 5,
            received_control_packets: 6,
            sent_control_packets: 7,
            sent_data_packets: -1,
            transport_bytes_sent: 0x0102_0304_0506_0708,
            transport_bytes_received: 9,
            tun_bytes_sent: 10,
            tun_bytes_received: i64::MIN,
        };
        let mut out = [0xAAu8; 64];
        assert_eq!(encode_stats(&mut out, &s), Ok(64));
        let mut expect = Vec::new();
        for v in [1, 2, 3, 4, 5, 6, 7, -1] {
            expect.extend(le(v));
        }
        for v in [0x0102_0304_0506_0708i64, 9, 10, i64::MIN] {
            expect.extend(v.to_le_bytes());
        }
        assert_eq!(&out[..], &expect[..]);
        assert_eq!(encode_stats(&mut [0u8; 63], &s), Err(EncodeError::OutputTooSmall { needed: 64, got: 63 }));
        assert_eq!(encode_stats(&mut [], &s).unwrap_err().status(), NtStatus::BUFFER_TOO_SMALL);
    }

    #[test]
    fn version_bytes() {
        let mut out = [0u8; 12];
        assert_eq!(encode_version(&mut out, &OvpnVersion { major: 2, minor: 8, patch: 1 }), Ok(12));
        assert_eq!(out, [2, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0]);
        assert!(encode_version(&mut [0u8; 11], &OvpnVersion::default()).is_err());
    }

    fn peer_stats(id: i32) -> OvpnPeerStats {
        OvpnPeerStats { peer_id: id, link_rx_bytes: 1, link_tx_bytes: 2, vpn_rx_bytes: 3, vpn_tx_bytes: 4 }
    }

    #[test]
    fn peer_stats_single_bytes_with_zeroed_padding() {
        let mut out = [0xAAu8; 40];
        assert_eq!(encode_peer_stats(&mut out, &peer_stats(5)), Ok(40));
        let mut expect = vec![5, 0, 0, 0, 0, 0, 0, 0];
        for v in [1i64, 2, 3, 4] {
            expect.extend(v.to_le_bytes());
        }
        assert_eq!(&out[..], &expect[..]);
        assert!(encode_peer_stats(&mut [0u8; 39], &peer_stats(5)).is_err());
    }

    #[test]
    fn peer_stats_all_follows_ovpn_dco_win() {
        let three = [peer_stats(1), peer_stats(2), peer_stats(3)];
        // Shorter than a ULONG: too small, whatever the peers.
        assert_eq!(
            encode_peer_stats_all(&mut [0u8; 3], three.into_iter()),
            Err(EncodeError::OutputTooSmall { needed: 4, got: 3 })
        );
        // No peers: success, nothing written.
        let mut out = [0xAAu8; 8];
        let r = encode_peer_stats_all(&mut out, core::iter::empty()).unwrap();
        assert_eq!((r, r.status(), r.information()), (PeerStatsAll::Written(0), NtStatus::SUCCESS, 0));
        assert_eq!(out, [0xAA; 8]);
        // Too small for all: the required size as a ULONG, BUFFER_OVERFLOW, 4 bytes.
        let mut out = [0xAAu8; 80];
        let r = encode_peer_stats_all(&mut out, three.into_iter()).unwrap();
        assert_eq!(r, PeerStatsAll::Overflow { required: 120 });
        assert_eq!((r.status(), r.information()), (NtStatus::BUFFER_OVERFLOW, 4));
        assert_eq!(&out[..4], &120u32.to_le_bytes());
        // Enough: the array.
        let mut out = [0xAAu8; 130];
        let r = encode_peer_stats_all(&mut out, three.into_iter()).unwrap();
        assert_eq!((r, r.information()), (PeerStatsAll::Written(120), 120));
        for (i, chunk) in out[..120].chunks(40).enumerate() {
            let mut one = [0u8; 40];
            encode_peer_stats(&mut one, &peer_stats(i as i32 + 1)).unwrap();
            assert_eq!(chunk, &one[..]);
        }
        assert_eq!(&out[120..], &[0xAA; 10]);
    }

    #[test]
    fn notify_event_is_zeroed_then_filled() {
        let mut out = [0xAAu8; 144];
        let ev = NotifyEvent::DelPeer { peer_id: pid(7), reason: DelPeerReason::Expired };
        assert_eq!(encode_notify_event(&mut out, &ev), Ok(144));
        assert_eq!(&out[..12], &[0, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0, 0]);
        assert!(out[12..].iter().all(|b| *b == 0));

        let mut out = [0xAAu8; 144];
        let ev = NotifyEvent::SwapKeys { peer_id: PeerId::UNDEFINED };
        encode_notify_event(&mut out, &ev).unwrap();
        assert_eq!(&out[..12], &[1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0]);
        assert!(out[12..].iter().all(|b| *b == 0));

        let mut out = [0xAAu8; 150];
        let ev = NotifyEvent::FloatPeer { peer_id: pid(1), address: "192.0.2.44:1195".parse().unwrap() };
        encode_notify_event(&mut out, &ev).unwrap();
        assert_eq!(&out[..12], &[2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&out[12..16], &[0; 4]); // padding
        assert_eq!(&out[16..32], &sin([192, 0, 2, 44], 1195)[..16]);
        assert!(out[32..144].iter().all(|b| *b == 0));
        assert_eq!(&out[144..], &[0xAA; 6]);

        let mut out = [0xAAu8; 144];
        let addr = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(V6), 5000, 0, 9));
        encode_notify_event(&mut out, &NotifyEvent::FloatPeer { peer_id: pid(1), address: addr }).unwrap();
        assert_eq!(&out[16..44], &sin6(V6, 5000, 0, 9)[..]);
        assert!(out[44..].iter().all(|b| *b == 0));

        let ev = NotifyEvent::SwapKeys { peer_id: pid(0) };
        assert_eq!(
            encode_notify_event(&mut [0u8; 143], &ev),
            Err(EncodeError::OutputTooSmall { needed: 144, got: 143 })
        );
    }

    #[test]
    fn delete_reasons_match_the_header() {
        let reasons = [
            DelPeerReason::Teardown,
            DelPeerReason::Userspace,
            DelPeerReason::Expired,
            DelPeerReason::TransportError,
            DelPeerReason::TransportDisconnect,
        ];
        for (i, r) in reasons.iter().enumerate() {
            assert_eq!(r.raw(), i as i32);
        }
    }

    #[test]
    fn sizes_per_ioctl_match_the_reference() {
        let inputs: Vec<usize> = Ioctl::ALL.iter().map(|i| input_size(*i)).collect();
        assert_eq!(inputs, [60, 0, 100, 0, 12, 0, 0, 0, 104, 4, 32, 80, 16, 0, 4, 4, 28, 28, 4]);
        let outputs: Vec<usize> = Ioctl::ALL.iter().map(|i| output_size(*i)).collect();
        assert_eq!(outputs, [0, 64, 0, 0, 0, 0, 0, 12, 0, 0, 32, 0, 0, 144, 0, 0, 0, 0, 40]);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn any_code() -> impl Strategy<Value = u32> {
            prop_oneof![
                (0usize..Ioctl::ALL.len()).prop_map(|i| Ioctl::ALL[i].code()),
                any::<u32>(),
                (0u32..0x40).prop_map(|f| 0x0022_0000 | f),
            ]
        }

        /// The statuses any decode failure may complete with.
        const ALLOWED: [NtStatus; 5] = [
            NtStatus::INVALID_DEVICE_REQUEST,
            NtStatus::BUFFER_TOO_SMALL,
            NtStatus::INVALID_PARAMETER,
            NtStatus::NOT_FOUND,
            NtStatus::OBJECTID_NOT_FOUND,
        ];

        proptest! {
            #[test]
            fn any_bytes_any_length_decode_or_fail_cleanly(
                code in any_code(),
                input in proptest::collection::vec(any::<u8>(), 0..300),
            ) {
                match decode_request(code, &input) {
                    Ok(r) => {
                        prop_assert_eq!(r.ioctl().code(), code);
                        prop_assert!(input.len() >= input_size(r.ioctl()));
                    }
                    Err(e) => prop_assert!(ALLOWED.contains(&e.status()), "{:?}", e),
                }
            }

            #[test]
            fn only_the_structure_prefix_matters(
                i in 0usize..Ioctl::ALL.len(),
                input in proptest::collection::vec(any::<u8>(), 104..300),
            ) {
                let ioctl = Ioctl::ALL[i];
                let size = input_size(ioctl);
                prop_assert_eq!(
                    decode_request(ioctl.code(), &input),
                    decode_request(ioctl.code(), &input[..size])
                );
            }

            #[test]
            fn encoders_fit_any_output_length(len in 0usize..400, id in 0u32..=PeerId::MAX, v6 in any::<bool>()) {
                let mut out = vec![0u8; len];
                let address = if v6 {
                    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(V6), 1, 2, 3))
                } else {
                    "192.0.2.1:1".parse().unwrap()
                };
                let peer_id = pid(id);
                let results = [
                    encode_stats(&mut out, &OvpnStats::default()),
                    encode_version(&mut out, &OvpnVersion::default()),
                    encode_peer_stats(&mut out, &peer_stats(1)),
                    encode_mp_start_vpn(&mut out, &MpStartVpn { listen: address, ipv6_only: v6 }),
                    encode_notify_event(&mut out, &NotifyEvent::FloatPeer { peer_id, address }),
                ];
                for r in results {
                    match r {
                        Ok(n) => prop_assert!(n <= len),
                        Err(EncodeError::OutputTooSmall { needed, got }) => {
                            prop_assert!(got < needed);
                            prop_assert_eq!(got, len);
                        }
                    }
                }
                let all = encode_peer_stats_all(&mut out, (0..(id % 8) as i32).map(peer_stats));
                if let Ok(r) = all {
                    prop_assert!(r.information() <= len);
                }
            }

            #[test]
            fn mp_start_vpn_round_trips(
                ip in any::<[u8; 16]>(), port in any::<u16>(), flow in any::<u32>(),
                scope in any::<u32>(), v6 in any::<bool>(), only in any::<bool>(),
            ) {
                let listen = if v6 {
                    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope))
                } else {
                    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]), port))
                };
                let s = MpStartVpn { listen, ipv6_only: only };
                let mut out = [0u8; 32];
                encode_mp_start_vpn(&mut out, &s).unwrap();
                prop_assert_eq!(mp_start_vpn(&out), Ok(s));
            }
        }
    }
}
