//! The ABI as data: every IOCTL code and every structure's size, alignment
//! and field offsets, computed by the compiler from the mirrors in
//! [`super::types`] (whose compile-time asserts pin them to the reference
//! table). `examples/uapi_layout.rs` prints this as JSON so that clients in
//! other languages can compare their own layout.

use core::fmt::{self, Write};
use core::mem::{align_of, offset_of, size_of};

use super::codes::Ioctl;
use super::types::*;

/// One field: its name in `uapi/ovpn-dco.h` (or ws2def.h) and its offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldLayout {
    pub name: &'static str,
    pub offset: usize,
}

/// One structure as the compiler laid it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StructLayout {
    pub name: &'static str,
    pub size: usize,
    pub align: usize,
    pub fields: &'static [FieldLayout],
}

macro_rules! layout {
    ($name:literal, $t:ty { $($cname:literal => $field:ident),* $(,)? }) => {
        StructLayout {
            name: $name,
            size: size_of::<$t>(),
            align: align_of::<$t>(),
            fields: &[$(FieldLayout { name: $cname, offset: offset_of!($t, $field) }),*],
        }
    };
}

/// Every structure of the ABI, the Winsock ones first.
pub const LAYOUTS: &[StructLayout] = &[
    layout!("IN_ADDR", InAddr { "S_addr" => s_addr }),
    layout!("IN6_ADDR", In6Addr { "u.Byte" => s6_addr }),
    layout!("SOCKADDR_IN", SockAddrIn {
        "sin_family" => sin_family, "sin_port" => sin_port, "sin_addr" => sin_addr, "sin_zero" => sin_zero,
    }),
    layout!("SOCKADDR_IN6", SockAddrIn6 {
        "sin6_family" => sin6_family,
        "sin6_port" => sin6_port,
        "sin6_flowinfo" => sin6_flowinfo,
        "sin6_addr" => sin6_addr,
        "sin6_scope_id" => sin6_scope_id,
    }),
    layout!("SOCKADDR_STORAGE", SockAddrStorage {
        "ss_family" => ss_family, "__ss_pad1" => ss_pad1, "__ss_align" => ss_align, "__ss_pad2" => ss_pad2,
    }),
    layout!("OVPN_ADDR_UNION", SockAddrInet { "Addr4" => addr4, "Addr6" => addr6 }),
    layout!("OVPN_IROUTE_ADDR_UNION", InetAddr { "Addr4" => addr4, "Addr6" => addr6 }),
    layout!("OVPN_NEW_PEER", OvpnNewPeer { "Local" => local, "Remote" => remote, "Proto" => proto }),
    layout!("OVPN_MP_NEW_PEER", OvpnMpNewPeer {
        "Local" => local, "Remote" => remote, "VpnAddr4" => vpn_addr4, "VpnAddr6" => vpn_addr6, "PeerId" => peer_id,
    }),
    layout!("OVPN_STATS", OvpnStats {
        "LostInControlPackets" => lost_in_control_packets,
        "LostOutControlPackets" => lost_out_control_packets,
        "LostInDataPackets" => lost_in_data_packets,
        "LostOutDataPackets" => lost_out_data_packets,
        "ReceivedDataPackets" => received_data_packets,
        "ReceivedControlPackets" => received_control_packets,
        "SentControlPackets" => sent_control_packets,
        "SentDataPackets" => sent_data_packets,
        "TransportBytesSent" => transport_bytes_sent,
        "TransportBytesReceived" => transport_bytes_received,
        "TunBytesSent" => tun_bytes_sent,
        "TunBytesReceived" => tun_bytes_received,
    }),
    layout!("OVPN_PEER_STATS", OvpnPeerStats {
        "PeerId" => peer_id,
        "LinkRxBytes" => link_rx_bytes,
        "LinkTxBytes" => link_tx_bytes,
        "VpnRxBytes" => vpn_rx_bytes,
        "VpnTxBytes" => vpn_tx_bytes,
    }),
    layout!("OVPN_KEY_DIRECTION", OvpnKeyDirection { "Key" => key, "KeyLen" => key_len, "NonceTail" => nonce_tail }),
    layout!("OVPN_CRYPTO_DATA", OvpnCryptoData {
        "Encrypt" => encrypt,
        "Decrypt" => decrypt,
        "KeySlot" => key_slot,
        "CipherAlg" => cipher_alg,
        "KeyId" => key_id,
        "PeerId" => peer_id,
    }),
    layout!("OVPN_CRYPTO_DATA_V2", OvpnCryptoDataV2 { "V1" => v1, "CryptoOptions" => crypto_options }),
    layout!("OVPN_SET_PEER", OvpnSetPeer {
        "KeepaliveInterval" => keepalive_interval, "KeepaliveTimeout" => keepalive_timeout, "MSS" => mss,
    }),
    layout!("OVPN_MP_SET_PEER", OvpnMpSetPeer {
        "PeerId" => peer_id,
        "KeepaliveInterval" => keepalive_interval,
        "KeepaliveTimeout" => keepalive_timeout,
        "MSS" => mss,
    }),
    layout!("OVPN_VERSION", OvpnVersion { "Major" => major, "Minor" => minor, "Patch" => patch }),
    layout!("OVPN_SET_MODE", OvpnSetMode { "Mode" => mode }),
    layout!("OVPN_MP_START_VPN", OvpnMpStartVpn { "ListenAddress" => listen_address, "IPv6Only" => ipv6_only }),
    layout!("OVPN_NOTIFY_EVENT", OvpnNotifyEvent {
        "Cmd" => cmd, "PeerId" => peer_id, "DelPeerReason" => del_peer_reason, "FloatAddress" => float_address,
    }),
    layout!("OVPN_MP_DEL_PEER", OvpnMpDelPeer { "PeerId" => peer_id }),
    layout!("OVPN_MP_SWAP_KEYS", OvpnMpSwapKeys { "PeerId" => peer_id }),
    layout!("OVPN_MP_IROUTE", OvpnMpIroute { "Addr" => addr, "Netbits" => netbits, "PeerId" => peer_id, "IPv6" => ipv6 }),
    layout!("OVPN_GET_PEER_STATS", OvpnGetPeerStats { "PeerId" => peer_id }),
];

/// The structure named `name` in [`LAYOUTS`].
pub fn find(name: &str) -> Option<&'static StructLayout> {
    LAYOUTS.iter().find(|l| l.name == name)
}

/// Writes every IOCTL code and every entry of [`LAYOUTS`] as one JSON object:
/// `{"ioctls": [{"name", "function", "code"}], "structs": [{"name", "size",
/// "align", "fields": [{"name", "offset"}]}]}`. Names need no escaping.
pub fn write_json(w: &mut impl Write) -> fmt::Result {
    w.write_str("{\n  \"ioctls\": [\n")?;
    for (i, ioctl) in Ioctl::ALL.iter().enumerate() {
        let sep = if i + 1 < Ioctl::ALL.len() { "," } else { "" };
        writeln!(
            w,
            "    {{\"name\": \"{}\", \"function\": {}, \"code\": \"{:#010x}\"}}{sep}",
            ioctl.name(),
            ioctl.function(),
            ioctl.code()
        )?;
    }
    w.write_str("  ],\n  \"structs\": [\n")?;
    for (i, l) in LAYOUTS.iter().enumerate() {
        write!(w, "    {{\"name\": \"{}\", \"size\": {}, \"align\": {}, \"fields\": [", l.name, l.size, l.align)?;
        for (j, f) in l.fields.iter().enumerate() {
            let sep = if j + 1 < l.fields.len() { ", " } else { "" };
            write!(w, "{{\"name\": \"{}\", \"offset\": {}}}{sep}", f.name, f.offset)?;
        }
        let sep = if i + 1 < LAYOUTS.len() { "," } else { "" };
        writeln!(w, "]}}{sep}")?;
    }
    w.write_str("  ]\n}\n")
}
