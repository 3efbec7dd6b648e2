//! The keepalive ping: a fixed 16-byte payload sent as ordinary encrypted
//! data. Under DCO the driver both sends it (after KeepaliveInterval seconds
//! of silence) and consumes it on receive, so it never reaches the OS.

/// The ping payload (OpenVPN ping.c `ping_string`, the same bytes as
/// ovpn-dco-win timer.cpp `OvpnKeepaliveMessage`).
pub const KEEPALIVE_PING: [u8; 16] =
    [0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48];

/// Whether a decrypted payload is the keepalive ping.
///
/// The match is exact, as OpenVPN's `is_ping_msg` (length must be 16).
/// ovpn-dco-win compares with `RtlCompareMemory(buf, ping, len) == 16`, which
/// also swallows longer payloads that begin with the ping; those start with
/// version nibble 2, are no IP packet, and are dropped later on either path.
pub fn is_keepalive(plaintext: &[u8]) -> bool {
    plaintext == KEEPALIVE_PING
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ping_is_the_bytes_openvpn_sends() {
        // ovpn-dco-interface.md: "2a 18 7b f3 64 1e b4 cb 07 ed 2d 0a 98 1f c7 48".
        let from_reference = "2a187bf3641eb4cb07ed2d0a981fc748";
        let hex: std::string::String = KEEPALIVE_PING.iter().map(|b| std::format!("{b:02x}")).collect();
        assert_eq!(hex, from_reference);
        assert!(is_keepalive(&KEEPALIVE_PING));
    }

    #[test]
    fn only_the_exact_ping_is_a_ping() {
        assert!(!is_keepalive(&[]));
        assert!(!is_keepalive(&KEEPALIVE_PING[..15]));
        let mut longer = [0u8; 17];
        longer[..16].copy_from_slice(&KEEPALIVE_PING);
        assert!(!is_keepalive(&longer));
        for i in 0..KEEPALIVE_PING.len() {
            let mut flipped = KEEPALIVE_PING;
            flipped[i] ^= 0x01;
            assert!(!is_keepalive(&flipped), "byte {i} flipped");
        }
        // A minimal IPv4 header of the same length is data.
        let mut ipv4 = [0u8; 16];
        ipv4[0] = 0x45;
        assert!(!is_keepalive(&ipv4));
    }
}
