//! The numbers `examples/uapi_layout.rs` prints, checked against the
//! reference table (ovpn-dco-interface.md, "IOCTLs" and "Structures", x64
//! Windows). The example prints from `uapi::layout`, the same table this test
//! reads through `write_json`, so what clients see cannot drift from it.

use ovpn_dco::uapi::Ioctl;
use ovpn_dco::uapi::layout::{self, LAYOUTS};

/// (name, size, align, [(field, offset)]) from the reference table.
type Entry = (&'static str, usize, usize, &'static [(&'static str, usize)]);

const REFERENCE: &[Entry] = &[
    ("SOCKADDR_IN", 16, 4, &[("sin_family", 0), ("sin_port", 2), ("sin_addr", 4), ("sin_zero", 8)]),
    (
        "SOCKADDR_IN6",
        28,
        4,
        &[("sin6_family", 0), ("sin6_port", 2), ("sin6_flowinfo", 4), ("sin6_addr", 8), ("sin6_scope_id", 24)],
    ),
    ("SOCKADDR_STORAGE", 128, 8, &[("ss_family", 0)]),
    ("OVPN_ADDR_UNION", 28, 4, &[("Addr4", 0), ("Addr6", 0)]),
    ("OVPN_NEW_PEER", 60, 4, &[("Local", 0), ("Remote", 28), ("Proto", 56)]),
    ("OVPN_MP_NEW_PEER", 80, 4, &[("Local", 0), ("Remote", 28), ("VpnAddr4", 56), ("VpnAddr6", 60), ("PeerId", 76)]),
    (
        "OVPN_STATS",
        64,
        8,
        &[
            ("LostInControlPackets", 0),
            ("LostOutControlPackets", 4),
            ("LostInDataPackets", 8),
            ("LostOutDataPackets", 12),
            ("ReceivedDataPackets", 16),
            ("ReceivedControlPackets", 20),
            ("SentControlPackets", 24),
            ("SentDataPackets", 28),
            ("TransportBytesSent", 32),
            ("TransportBytesReceived", 40),
            ("TunBytesSent", 48),
            ("TunBytesReceived", 56),
        ],
    ),
    (
        "OVPN_PEER_STATS",
        40,
        8,
        &[("PeerId", 0), ("LinkRxBytes", 8), ("LinkTxBytes", 16), ("VpnRxBytes", 24), ("VpnTxBytes", 32)],
    ),
    ("OVPN_KEY_DIRECTION", 41, 1, &[("Key", 0), ("KeyLen", 32), ("NonceTail", 33)]),
    (
        "OVPN_CRYPTO_DATA",
        100,
        4,
        &[("Encrypt", 0), ("Decrypt", 41), ("KeySlot", 84), ("CipherAlg", 88), ("KeyId", 92), ("PeerId", 96)],
    ),
    ("OVPN_CRYPTO_DATA_V2", 104, 4, &[("V1", 0), ("CryptoOptions", 100)]),
    ("OVPN_SET_PEER", 12, 4, &[("KeepaliveInterval", 0), ("KeepaliveTimeout", 4), ("MSS", 8)]),
    ("OVPN_MP_SET_PEER", 16, 4, &[("PeerId", 0), ("KeepaliveInterval", 4), ("KeepaliveTimeout", 8), ("MSS", 12)]),
    ("OVPN_VERSION", 12, 4, &[("Major", 0), ("Minor", 4), ("Patch", 8)]),
    ("OVPN_SET_MODE", 4, 4, &[("Mode", 0)]),
    ("OVPN_MP_START_VPN", 32, 4, &[("ListenAddress", 0), ("IPv6Only", 28)]),
    ("OVPN_NOTIFY_EVENT", 144, 8, &[("Cmd", 0), ("PeerId", 4), ("DelPeerReason", 8), ("FloatAddress", 16)]),
    ("OVPN_MP_DEL_PEER", 4, 4, &[("PeerId", 0)]),
    ("OVPN_MP_SWAP_KEYS", 4, 4, &[("PeerId", 0)]),
    ("OVPN_GET_PEER_STATS", 4, 4, &[("PeerId", 0)]),
    ("OVPN_MP_IROUTE", 28, 4, &[("Addr", 0), ("Netbits", 16), ("PeerId", 20), ("IPv6", 24)]),
];

/// The reference IOCTL list: name and function number.
const IOCTLS: [(&str, u32); 19] = [
    ("OVPN_IOCTL_NEW_PEER", 1),
    ("OVPN_IOCTL_GET_STATS", 2),
    ("OVPN_IOCTL_NEW_KEY", 3),
    ("OVPN_IOCTL_SWAP_KEYS", 4),
    ("OVPN_IOCTL_SET_PEER", 5),
    ("OVPN_IOCTL_START_VPN", 6),
    ("OVPN_IOCTL_DEL_PEER", 7),
    ("OVPN_IOCTL_GET_VERSION", 8),
    ("OVPN_IOCTL_NEW_KEY_V2", 9),
    ("OVPN_IOCTL_SET_MODE", 10),
    ("OVPN_IOCTL_MP_START_VPN", 11),
    ("OVPN_IOCTL_MP_NEW_PEER", 12),
    ("OVPN_IOCTL_MP_SET_PEER", 13),
    ("OVPN_IOCTL_NOTIFY_EVENT", 14),
    ("OVPN_IOCTL_MP_DEL_PEER", 15),
    ("OVPN_IOCTL_MP_SWAP_KEYS", 16),
    ("OVPN_IOCTL_MP_ADD_IROUTE", 17),
    ("OVPN_IOCTL_MP_DEL_IROUTE", 18),
    ("OVPN_IOCTL_GET_PEER_STATS", 19),
];

fn json() -> String {
    let mut s = String::new();
    layout::write_json(&mut s).unwrap();
    s
}

#[test]
fn the_tool_reports_every_ioctl_code_of_the_reference() {
    let json = json();
    for (name, function) in IOCTLS {
        let code = 0x0022_0000 | (function << 2);
        let line = format!("{{\"name\": \"{name}\", \"function\": {function}, \"code\": \"{code:#010x}\"}}");
        assert!(json.contains(&line), "missing {line}");
    }
    assert_eq!(json.matches("\"function\":").count(), 19);
    assert_eq!(Ioctl::ALL.len(), IOCTLS.len());
}

#[test]
fn the_tool_reports_the_reference_layouts() {
    let json = json();
    for (name, size, align, fields) in REFERENCE {
        let l = layout::find(name).unwrap_or_else(|| panic!("{name} not in the layout table"));
        assert_eq!((l.size, l.align), (*size, *align), "{name}");
        for (field, offset) in *fields {
            let f = l.fields.iter().find(|f| f.name == *field).unwrap_or_else(|| panic!("{name}.{field}"));
            assert_eq!(f.offset, *offset, "{name}.{field}");
        }
        // And the printed line carries exactly these numbers.
        let head = format!("{{\"name\": \"{name}\", \"size\": {size}, \"align\": {align}, \"fields\": [");
        let line = json.lines().find(|l| l.contains(&head)).unwrap_or_else(|| panic!("{head}"));
        for (field, offset) in *fields {
            let f = format!("{{\"name\": \"{field}\", \"offset\": {offset}}}");
            assert!(line.contains(&f), "{name}: {f} not in {line}");
        }
    }
}

#[test]
fn every_table_entry_is_checked_here_or_is_a_winsock_building_block() {
    for l in LAYOUTS {
        let referenced = REFERENCE.iter().any(|(n, ..)| *n == l.name);
        let building_block = matches!(l.name, "IN_ADDR" | "IN6_ADDR" | "OVPN_IROUTE_ADDR_UNION");
        assert!(referenced || building_block, "{} not checked against the reference", l.name);
    }
}

#[test]
fn the_json_is_well_formed() {
    let json = json();
    // Balanced brackets outside strings, and no trailing commas.
    let mut depth = 0i32;
    let mut in_str = false;
    for c in json.chars() {
        match c {
            '"' => in_str = !in_str,
            '{' | '[' if !in_str => depth += 1,
            '}' | ']' if !in_str => depth -= 1,
            _ => {}
        }
        assert!(depth >= 0);
    }
    assert_eq!(depth, 0);
    assert!(!in_str);
    let compact: String = json.split_whitespace().collect();
    assert!(!compact.contains(",]") && !compact.contains(",}"));
}
