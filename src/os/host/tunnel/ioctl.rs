//! The IOCTL input buffers the host tunnel hands to the adapter, laid out as
//! OpenVPN's `dco_win.c` fills them on x64 Windows: the `#[repr(C)]`
//! mirrors of `uapi::types` give every offset, integers little-endian,
//! ports and addresses in network order. The tunnel configures the adapter
//! only through these, as OpenVPN does.

use core::mem::{offset_of, size_of};
use core::net::SocketAddr;
use std::vec::Vec;

use super::keyfile::{DirectionSecret, TunnelKeys};
use crate::control::ctl_queue::put_prefix;
use crate::crypto::Cipher;
use crate::uapi::types::{
    OVPN_CIPHER_ALG_AES_GCM, OVPN_CIPHER_ALG_CHACHA20_POLY1305, OVPN_KEY_SLOT_PRIMARY, OVPN_PROTO_TCP, OVPN_PROTO_UDP,
    OvpnCryptoData, OvpnKeyDirection, OvpnNewPeer, OvpnSetPeer, SockAddrInet,
};

/// The transport NEW_PEER asks for (`OVPN_PROTO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// The SOCKADDR_IN / SOCKADDR_IN6 union at `at`.
fn put_address(buf: &mut [u8], at: usize, addr: &SocketAddr) {
    if let Some(dst) = buf.get_mut(at..at + size_of::<SockAddrInet>()) {
        // The union is 28 bytes, which both sockaddr kinds fit.
        let _ = put_prefix(dst, addr);
    }
}

/// `OVPN_NEW_PEER`: the P2P socket's two ends and its protocol.
pub fn new_peer(local: SocketAddr, remote: SocketAddr, proto: Proto) -> Vec<u8> {
    let mut b = std::vec![0u8; size_of::<OvpnNewPeer>()];
    put_address(&mut b, offset_of!(OvpnNewPeer, local), &local);
    put_address(&mut b, offset_of!(OvpnNewPeer, remote), &remote);
    let proto = match proto {
        Proto::Udp => OVPN_PROTO_UDP,
        Proto::Tcp => OVPN_PROTO_TCP,
    };
    put(&mut b, offset_of!(OvpnNewPeer, proto), &proto.to_le_bytes());
    b
}

fn put_direction(buf: &mut [u8], at: usize, secret: &DirectionSecret, key_len: usize) {
    put(buf, at + offset_of!(OvpnKeyDirection, key), &secret.key);
    // Key lengths are 16, 24 or 32 (the key file checks them).
    put(buf, at + offset_of!(OvpnKeyDirection, key_len), &[u8::try_from(key_len).unwrap_or(0)]);
    put(buf, at + offset_of!(OvpnKeyDirection, nonce_tail), &secret.nonce_tail);
}

/// `OVPN_CRYPTO_DATA` for NEW_KEY: `keys` into the primary slot.
pub fn new_key(keys: &TunnelKeys) -> Vec<u8> {
    let mut b = std::vec![0u8; size_of::<OvpnCryptoData>()];
    put_direction(&mut b, offset_of!(OvpnCryptoData, encrypt), &keys.encrypt, keys.key_len);
    put_direction(&mut b, offset_of!(OvpnCryptoData, decrypt), &keys.decrypt, keys.key_len);
    put(&mut b, offset_of!(OvpnCryptoData, key_slot), &OVPN_KEY_SLOT_PRIMARY.to_le_bytes());
    let alg = match keys.cipher {
        Cipher::AesGcm => OVPN_CIPHER_ALG_AES_GCM,
        Cipher::ChaCha20Poly1305 => OVPN_CIPHER_ALG_CHACHA20_POLY1305,
    };
    put(&mut b, offset_of!(OvpnCryptoData, cipher_alg), &alg.to_le_bytes());
    put(&mut b, offset_of!(OvpnCryptoData, key_id), &[keys.key_id.get()]);
    let peer_id = i32::try_from(keys.peer_id.get()).unwrap_or(i32::MAX);
    put(&mut b, offset_of!(OvpnCryptoData, peer_id), &peer_id.to_le_bytes());
    b
}

/// `OVPN_SET_PEER`: keepalive interval and timeout in seconds (0: off),
/// and the MSS to clamp to (`None`: unchanged, which OpenVPN sends as -1).
pub fn set_peer(interval: u32, timeout: u32, mss: Option<u16>) -> Vec<u8> {
    let mut b = std::vec![0u8; size_of::<OvpnSetPeer>()];
    let secs = |s: u32| i32::try_from(s).unwrap_or(i32::MAX);
    put(&mut b, offset_of!(OvpnSetPeer, keepalive_interval), &secs(interval).to_le_bytes());
    put(&mut b, offset_of!(OvpnSetPeer, keepalive_timeout), &secs(timeout).to_le_bytes());
    let mss = mss.map_or(-1, i32::from);
    put(&mut b, offset_of!(OvpnSetPeer, mss), &mss.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{KeyId, PeerId};
    use crate::uapi::decode;

    fn keys(cipher: Cipher, key_len: usize) -> TunnelKeys {
        TunnelKeys {
            cipher,
            key_len,
            peer_id: PeerId::new(0x00AB_CDEF).unwrap(),
            key_id: KeyId::new(5).unwrap(),
            encrypt: DirectionSecret { key: [0x11; 32], nonce_tail: [0x22; 8] },
            decrypt: DirectionSecret { key: [0x33; 32], nonce_tail: [0x44; 8] },
        }
    }

    #[test]
    fn new_peer_decodes_to_the_same_addresses_and_protocol() {
        let (local, remote) = ("[2001:db8::1]:1194".parse().unwrap(), "[2001:db8::2]:443".parse().unwrap());
        let b = new_peer(local, remote, Proto::Tcp);
        assert_eq!(b.len(), 60, "OVPN_NEW_PEER is 60 bytes");
        let p = decode::new_peer(&b).unwrap();
        assert_eq!((p.local, p.remote), (local, remote));
        assert_eq!(p.transport, decode::Transport::Tcp);
        let v4: SocketAddr = "192.0.2.1:1194".parse().unwrap();
        let p = decode::new_peer(&new_peer(v4, "192.0.2.2:1194".parse().unwrap(), Proto::Udp)).unwrap();
        assert_eq!((p.local, p.transport), (v4, decode::Transport::Udp));
    }

    #[test]
    fn new_key_decodes_to_the_keys_of_the_file() {
        for (cipher, len, alg) in [
            (Cipher::AesGcm, 16, OVPN_CIPHER_ALG_AES_GCM),
            (Cipher::ChaCha20Poly1305, 32, OVPN_CIPHER_ALG_CHACHA20_POLY1305),
        ] {
            let k = keys(cipher, len);
            let b = new_key(&k);
            assert_eq!(b.len(), 100, "OVPN_CRYPTO_DATA is 100 bytes");
            let d = decode::new_key(&b).unwrap();
            assert_eq!(d.encrypt.key(), &k.encrypt.key[..len]);
            assert_eq!(d.decrypt.key(), &k.decrypt.key[..len]);
            assert_eq!((d.encrypt.nonce_tail(), d.decrypt.nonce_tail()), (&[0x22; 8], &[0x44; 8]));
            assert_eq!((d.key_id, d.peer_id, d.cipher), (k.key_id, Some(k.peer_id), cipher));
            assert_eq!(b[88..92], alg.to_le_bytes(), "CipherAlg @88");
            assert_eq!(b[84..88], OVPN_KEY_SLOT_PRIMARY.to_le_bytes(), "KeySlot @84");
        }
    }

    #[test]
    fn set_peer_sends_minus_one_for_an_unchanged_mss() {
        let b = set_peer(10, 60, None);
        assert_eq!(b, [10i32.to_le_bytes(), 60i32.to_le_bytes(), (-1i32).to_le_bytes()].concat());
        let s = decode::set_peer(&set_peer(1, 0, Some(1400))).unwrap();
        assert_eq!((s.keepalive_interval, s.keepalive_timeout, s.mss), (Some(1), Some(0), Some(1400)));
        assert_eq!(decode::set_peer(&b).unwrap().mss, None);
    }
}
