//! `#[repr(C)]` mirrors of the structures and enums in ovpn-dco-win's
//! `uapi/ovpn-dco.h`, with the x64 Windows type widths (LONG and enums are
//! 32-bit, LONG64 is 64-bit).
//!
//! These exist for their layout: the asserts below pin every size, alignment
//! and field offset, clients in other languages check theirs against
//! `examples/uapi_layout.rs`, and [`super::decode`] takes its field offsets
//! from them. Nothing ever casts untrusted bytes to these types; decoding
//! copies bytes out of the input buffer. Enum-typed fields are plain integers
//! because the input may hold any value.

use core::mem::{align_of, offset_of, size_of};

/// `AF_INET` (ws2def.h).
pub const AF_INET: u16 = 2;
/// `AF_INET6` on Windows (ws2def.h); Linux uses 10.
pub const AF_INET6: u16 = 23;

/// `IN_ADDR`: a union of bytes, words and one ULONG, hence 4-aligned.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InAddr {
    /// Network byte order.
    pub s_addr: [u8; 4],
}

/// `IN6_ADDR`: a union of bytes and USHORT words, hence 2-aligned.
#[repr(C, align(2))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct In6Addr {
    pub s6_addr: [u8; 16],
}

/// `SOCKADDR_IN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockAddrIn {
    pub sin_family: u16,
    /// Network byte order.
    pub sin_port: u16,
    pub sin_addr: InAddr,
    pub sin_zero: [u8; 8],
}

/// `SOCKADDR_IN6` (the Windows definition, with a ULONG scope id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockAddrIn6 {
    pub sin6_family: u16,
    /// Network byte order.
    pub sin6_port: u16,
    pub sin6_flowinfo: u32,
    pub sin6_addr: In6Addr,
    pub sin6_scope_id: u32,
}

/// `SOCKADDR_STORAGE` (ws2def.h): 128 bytes, 8-aligned.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockAddrStorage {
    pub ss_family: u16,
    pub ss_pad1: [u8; 6],
    pub ss_align: i64,
    pub ss_pad2: [u8; 112],
}

/// The anonymous `union { SOCKADDR_IN Addr4; SOCKADDR_IN6 Addr6; }` that
/// OVPN_NEW_PEER, OVPN_MP_NEW_PEER and OVPN_MP_START_VPN embed. The family
/// field at offset 0 says which member is meant.
#[repr(C)]
#[derive(Clone, Copy)]
pub union SockAddrInet {
    pub addr4: SockAddrIn,
    pub addr6: SockAddrIn6,
}

/// The `union { IN_ADDR Addr4; IN6_ADDR Addr6; }` of OVPN_MP_IROUTE.
#[repr(C)]
#[derive(Clone, Copy)]
pub union InetAddr {
    pub addr4: InAddr,
    pub addr6: In6Addr,
}

/// `OVPN_PROTO`
pub const OVPN_PROTO_UDP: i32 = 0;
pub const OVPN_PROTO_TCP: i32 = 1;

/// `OVPN_KEY_SLOT`
pub const OVPN_KEY_SLOT_PRIMARY: i32 = 0;
pub const OVPN_KEY_SLOT_SECONDARY: i32 = 1;

/// `OVPN_CIPHER_ALG`
pub const OVPN_CIPHER_ALG_NONE: i32 = 0;
pub const OVPN_CIPHER_ALG_AES_GCM: i32 = 1;
pub const OVPN_CIPHER_ALG_CHACHA20_POLY1305: i32 = 2;

/// `OVPN_MODE`
pub const OVPN_MODE_P2P: i32 = 0;
pub const OVPN_MODE_MP: i32 = 1;

/// `OVPN_NOTIFY_CMD`
pub const OVPN_CMD_DEL_PEER: i32 = 0;
pub const OVPN_CMD_SWAP_KEYS: i32 = 1;
pub const OVPN_CMD_FLOAT_PEER: i32 = 2;

/// `OVPN_DEL_PEER_REASON`
pub const OVPN_DEL_PEER_REASON_TEARDOWN: i32 = 0;
pub const OVPN_DEL_PEER_REASON_USERSPACE: i32 = 1;
pub const OVPN_DEL_PEER_REASON_EXPIRED: i32 = 2;
pub const OVPN_DEL_PEER_REASON_TRANSPORT_ERROR: i32 = 3;
pub const OVPN_DEL_PEER_REASON_TRANSPORT_DISCONNECT: i32 = 4;

/// `OVPN_CRYPTO_DATA_V2.CryptoOptions`: epoch data keys, for drivers that
/// report 2.8 or later. (Drivers 1.4 to 2.4 gave bit 1 the meaning "tag at
/// the end" and bit 2 "64-bit packet id"; epoch keys imply both.)
pub const CRYPTO_OPTIONS_EPOCH: u32 = 1 << 1;

/// `OVPN_GET_PEER_STATS.PeerId` asking for every peer.
pub const OVPN_ALL_PEERS: i32 = -1;

/// `OVPN_NEW_PEER`
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OvpnNewPeer {
    pub local: SockAddrInet,
    pub remote: SockAddrInet,
    /// `OVPN_PROTO`
    pub proto: i32,
}

/// `OVPN_MP_NEW_PEER`
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OvpnMpNewPeer {
    pub local: SockAddrInet,
    pub remote: SockAddrInet,
    pub vpn_addr4: InAddr,
    pub vpn_addr6: In6Addr,
    pub peer_id: i32,
}

/// `OVPN_STATS`: device counters (LONG and LONG64, as upstream).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OvpnStats {
    pub lost_in_control_packets: i32,
    pub lost_out_control_packets: i32,
    pub lost_in_data_packets: i32,
    pub lost_out_data_packets: i32,
    pub received_data_packets: i32,
    pub received_control_packets: i32,
    pub sent_control_packets: i32,
    pub sent_data_packets: i32,
    pub transport_bytes_sent: i64,
    pub transport_bytes_received: i64,
    pub tun_bytes_sent: i64,
    pub tun_bytes_received: i64,
}

/// `OVPN_PEER_STATS`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OvpnPeerStats {
    pub peer_id: i32,
    pub link_rx_bytes: i64,
    pub link_tx_bytes: i64,
    pub vpn_rx_bytes: i64,
    pub vpn_tx_bytes: i64,
}

/// `OVPN_KEY_DIRECTION` (all bytes, so 1-aligned; packed to say so).
#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct OvpnKeyDirection {
    pub key: [u8; 32],
    /// 16, 24 or 32.
    pub key_len: u8,
    pub nonce_tail: [u8; 8],
}

/// `OVPN_CRYPTO_DATA`
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OvpnCryptoData {
    pub encrypt: OvpnKeyDirection,
    pub decrypt: OvpnKeyDirection,
    /// `OVPN_KEY_SLOT`
    pub key_slot: i32,
    /// `OVPN_CIPHER_ALG`
    pub cipher_alg: i32,
    pub key_id: u8,
    pub peer_id: i32,
}

/// `OVPN_CRYPTO_DATA_V2`
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OvpnCryptoDataV2 {
    pub v1: OvpnCryptoData,
    pub crypto_options: u32,
}

/// `OVPN_SET_PEER`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OvpnSetPeer {
    pub keepalive_interval: i32,
    pub keepalive_timeout: i32,
    pub mss: i32,
}

/// `OVPN_MP_SET_PEER`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OvpnMpSetPeer {
    pub peer_id: i32,
    pub keepalive_interval: i32,
    pub keepalive_timeout: i32,
    pub mss: i32,
}

/// `OVPN_VERSION`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OvpnVersion {
    pub major: i32,
    pub minor: i32,
    pub patch: i32,
}

/// `OVPN_SET_MODE`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OvpnSetMode {
    /// `OVPN_MODE`
    pub mode: i32,
}

/// `OVPN_MP_START_VPN`
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OvpnMpStartVpn {
    pub listen_address: SockAddrInet,
    pub ipv6_only: i32,
}

/// `OVPN_NOTIFY_EVENT`
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OvpnNotifyEvent {
    /// `OVPN_NOTIFY_CMD`
    pub cmd: i32,
    pub peer_id: i32,
    /// `OVPN_DEL_PEER_REASON`
    pub del_peer_reason: i32,
    pub float_address: SockAddrStorage,
}

/// `OVPN_MP_DEL_PEER`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OvpnMpDelPeer {
    pub peer_id: i32,
}

/// `OVPN_MP_SWAP_KEYS`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OvpnMpSwapKeys {
    pub peer_id: i32,
}

/// `OVPN_GET_PEER_STATS`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OvpnGetPeerStats {
    /// [`OVPN_ALL_PEERS`] for every peer.
    pub peer_id: i32,
}

/// `OVPN_MP_IROUTE`
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OvpnMpIroute {
    pub addr: InetAddr,
    pub netbits: i32,
    pub peer_id: i32,
    /// Non-zero: `addr` is IPv6.
    pub ipv6: i32,
}

/// Asserts a type's size and alignment at compile time.
macro_rules! assert_layout {
    ($t:ty, size $size:expr, align $align:expr) => {
        const _: () = assert!(size_of::<$t>() == $size);
        const _: () = assert!(align_of::<$t>() == $align);
    };
}

/// Asserts field offsets at compile time.
macro_rules! assert_offsets {
    ($t:ty { $($field:ident @ $off:expr),* $(,)? }) => {
        $(const _: () = assert!(offset_of!($t, $field) == $off);)*
    };
}

// The reference table (ovpn-dco-interface.md, "Structures"), checked by the
// compiler.
assert_layout!(InAddr, size 4, align 4);
assert_layout!(In6Addr, size 16, align 2);
assert_layout!(SockAddrIn, size 16, align 4);
assert_offsets!(SockAddrIn { sin_family @ 0, sin_port @ 2, sin_addr @ 4, sin_zero @ 8 });
assert_layout!(SockAddrIn6, size 28, align 4);
assert_offsets!(SockAddrIn6 {
    sin6_family @ 0, sin6_port @ 2, sin6_flowinfo @ 4, sin6_addr @ 8, sin6_scope_id @ 24,
});
assert_layout!(SockAddrStorage, size 128, align 8);
assert_offsets!(SockAddrStorage { ss_family @ 0, ss_pad1 @ 2, ss_align @ 8, ss_pad2 @ 16 });
assert_layout!(SockAddrInet, size 28, align 4);
assert_layout!(InetAddr, size 16, align 4);

assert_layout!(OvpnNewPeer, size 60, align 4);
assert_offsets!(OvpnNewPeer { local @ 0, remote @ 28, proto @ 56 });
assert_layout!(OvpnMpNewPeer, size 80, align 4);
assert_offsets!(OvpnMpNewPeer { local @ 0, remote @ 28, vpn_addr4 @ 56, vpn_addr6 @ 60, peer_id @ 76 });
assert_layout!(OvpnStats, size 64, align 8);
assert_offsets!(OvpnStats {
    lost_in_control_packets @ 0,
    lost_out_control_packets @ 4,
    lost_in_data_packets @ 8,
    lost_out_data_packets @ 12,
    received_data_packets @ 16,
    received_control_packets @ 20,
    sent_control_packets @ 24,
    sent_data_packets @ 28,
    transport_bytes_sent @ 32,
    transport_bytes_received @ 40,
    tun_bytes_sent @ 48,
    tun_bytes_received @ 56,
});
assert_layout!(OvpnPeerStats, size 40, align 8);
assert_offsets!(OvpnPeerStats {
    peer_id @ 0, link_rx_bytes @ 8, link_tx_bytes @ 16, vpn_rx_bytes @ 24, vpn_tx_bytes @ 32,
});
assert_layout!(OvpnKeyDirection, size 41, align 1);
assert_offsets!(OvpnKeyDirection { key @ 0, key_len @ 32, nonce_tail @ 33 });
assert_layout!(OvpnCryptoData, size 100, align 4);
assert_offsets!(OvpnCryptoData {
    encrypt @ 0, decrypt @ 41, key_slot @ 84, cipher_alg @ 88, key_id @ 92, peer_id @ 96,
});
assert_layout!(OvpnCryptoDataV2, size 104, align 4);
assert_offsets!(OvpnCryptoDataV2 { v1 @ 0, crypto_options @ 100 });
assert_layout!(OvpnSetPeer, size 12, align 4);
assert_offsets!(OvpnSetPeer { keepalive_interval @ 0, keepalive_timeout @ 4, mss @ 8 });
assert_layout!(OvpnMpSetPeer, size 16, align 4);
assert_offsets!(OvpnMpSetPeer { peer_id @ 0, keepalive_interval @ 4, keepalive_timeout @ 8, mss @ 12 });
assert_layout!(OvpnVersion, size 12, align 4);
assert_offsets!(OvpnVersion { major @ 0, minor @ 4, patch @ 8 });
assert_layout!(OvpnSetMode, size 4, align 4);
assert_offsets!(OvpnSetMode { mode @ 0 });
assert_layout!(OvpnMpStartVpn, size 32, align 4);
assert_offsets!(OvpnMpStartVpn { listen_address @ 0, ipv6_only @ 28 });
assert_layout!(OvpnNotifyEvent, size 144, align 8);
assert_offsets!(OvpnNotifyEvent { cmd @ 0, peer_id @ 4, del_peer_reason @ 8, float_address @ 16 });
assert_layout!(OvpnMpDelPeer, size 4, align 4);
assert_offsets!(OvpnMpDelPeer { peer_id @ 0 });
assert_layout!(OvpnMpSwapKeys, size 4, align 4);
assert_offsets!(OvpnMpSwapKeys { peer_id @ 0 });
assert_layout!(OvpnGetPeerStats, size 4, align 4);
assert_offsets!(OvpnGetPeerStats { peer_id @ 0 });
assert_layout!(OvpnMpIroute, size 28, align 4);
assert_offsets!(OvpnMpIroute { addr @ 0, netbits @ 16, peer_id @ 20, ipv6 @ 24 });
