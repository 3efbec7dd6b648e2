//! Real OpenVPN 2.6 data packets (tests/fixtures/openvpn-2.6, recorded by
//! scripts/capture-openvpn-fixtures.sh from a live session of Debian's
//! openvpn): the driver's framing must read exactly what OpenVPN wrote and
//! write exactly the same bytes from the same key, ids and plaintext.

use ovpn_dco::crypto::host::HostCrypto;
use ovpn_dco::crypto::{Cipher, CryptoProvider};
use ovpn_dco::proto::aead_frame::{self, FrameError, Layout, NonceTail, PacketIv, WirePacketId};
use ovpn_dco::proto::opcode::DataHeader;
use ovpn_dco::proto::{KeyId, PeerId};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/openvpn-2.6");

/// The data ciphers OpenVPN negotiates for DCO; each must have a capture.
const CIPHERS: [&str; 4] = ["AES-128-GCM", "AES-192-GCM", "AES-256-GCM", "CHACHA20-POLY1305"];

/// One captured packet and everything needed to decrypt and re-create it.
struct Fixture {
    name: String,
    cipher_name: String,
    cipher: Cipher,
    key: Vec<u8>,
    nonce_tail: [u8; 8],
    peer_id: PeerId,
    key_id: KeyId,
    packet_id: u32,
    /// The nonce OpenVPN logged for this packet ("ENCRYPT IV").
    nonce: [u8; 12],
    wire: Vec<u8>,
    plaintext: Vec<u8>,
}

fn hex(name: &str, field: &str, s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0 && s.is_ascii(), "{name}: {field} is not hex bytes");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|_| panic!("{name}: {field} is not hex")))
        .collect()
}

fn hex_array<const N: usize>(name: &str, field: &str, s: &str) -> [u8; N] {
    hex(name, field, s).try_into().unwrap_or_else(|v: Vec<u8>| panic!("{name}: {field} has {} bytes, not {N}", v.len()))
}

fn number(name: &str, field: &str, s: &str) -> u32 {
    s.parse().unwrap_or_else(|_| panic!("{name}: {field} is not a decimal number"))
}

impl Fixture {
    /// Parses `key = value` lines; `#` starts a comment line.
    fn load(path: &Path) -> Fixture {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut fields = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("{name}: not `key = value`: {line}"));
            assert!(fields.insert(k.trim().to_owned(), v.trim().to_owned()).is_none(), "{name}: {k} twice");
        }
        let mut take = |k: &str| fields.remove(k).unwrap_or_else(|| panic!("{name}: no {k}"));
        let cipher_name = take("cipher");
        let (cipher, key_len) = match cipher_name.as_str() {
            "AES-128-GCM" => (Cipher::AesGcm, 16),
            "AES-192-GCM" => (Cipher::AesGcm, 24),
            "AES-256-GCM" => (Cipher::AesGcm, 32),
            "CHACHA20-POLY1305" => (Cipher::ChaCha20Poly1305, 32),
            other => panic!("{name}: unknown cipher {other}"),
        };
        let key = hex(&name, "key", &take("key"));
        assert_eq!(key.len(), key_len, "{name}: key length for {cipher_name}");
        let fx = Fixture {
            cipher,
            key,
            nonce_tail: hex_array(&name, "nonce_tail", &take("nonce_tail")),
            peer_id: PeerId::new(number(&name, "peer_id", &take("peer_id"))).expect("peer_id fits 24 bits"),
            key_id: KeyId::new(u8::try_from(number(&name, "key_id", &take("key_id"))).unwrap_or(u8::MAX))
                .expect("key_id fits 3 bits"),
            packet_id: number(&name, "packet_id", &take("packet_id")),
            nonce: hex_array(&name, "nonce", &take("nonce")),
            wire: hex(&name, "wire", &take("wire")),
            plaintext: hex(&name, "plaintext", &take("plaintext")),
            cipher_name,
            name,
        };
        assert!(fields.is_empty(), "{}: unknown fields {:?}", fx.name, fields.keys());
        fx
    }

    fn header(&self) -> DataHeader {
        DataHeader { key_id: self.key_id, peer_id: self.peer_id }
    }

    fn key(&self) -> <HostCrypto as CryptoProvider>::Key {
        HostCrypto.new_key(self.cipher, &self.key).unwrap_or_else(|e| panic!("{}: {e:?}", self.name))
    }
}

fn fixtures() -> Vec<Fixture> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(FIXTURE_DIR)
        .expect("fixture directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    let all: Vec<Fixture> = paths.iter().map(|p| Fixture::load(p)).collect();
    for cipher in CIPHERS {
        assert!(all.iter().any(|f| f.cipher_name == cipher), "no OpenVPN capture for {cipher}");
    }
    all
}

#[test]
fn the_nonce_openvpn_logged_is_the_packet_id_then_the_nonce_tail() {
    for fx in fixtures() {
        let tail = NonceTail(fx.nonce_tail);
        let iv = PacketIv::Standard { packet_id: fx.packet_id, tail: &tail };
        assert_eq!(iv.nonce(), fx.nonce, "{}", fx.name);
    }
}

#[test]
fn the_driver_decrypts_what_openvpn_sent() {
    for fx in fixtures() {
        let frame = aead_frame::parse(&fx.wire, Layout::Standard).unwrap_or_else(|e| panic!("{}: {e:?}", fx.name));
        assert_eq!(frame.header(), fx.header(), "{}", fx.name);
        assert_eq!(frame.packet_id(), WirePacketId::Standard(fx.packet_id), "{}", fx.name);

        let tail = NonceTail(fx.nonce_tail);
        let WirePacketId::Standard(packet_id) = frame.packet_id() else { unreachable!() };
        let nonce = PacketIv::Standard { packet_id, tail: &tail }.nonce();
        let mut datagram = fx.wire.clone();
        let plain = aead_frame::open_in_place(&fx.key(), &nonce, &frame, &mut datagram)
            .unwrap_or_else(|e| panic!("{}: {e:?}", fx.name));
        assert_eq!(&datagram[plain], &fx.plaintext[..], "{}", fx.name);
    }
}

#[test]
fn the_driver_encrypts_to_exactly_the_bytes_openvpn_sent() {
    for fx in fixtures() {
        let key = fx.key();
        let tail = NonceTail(fx.nonce_tail);
        let iv = PacketIv::Standard { packet_id: fx.packet_id, tail: &tail };

        // Out of place, as TX does from OS-owned packet memory.
        let mut buf = vec![0u8; fx.wire.len()];
        let n = aead_frame::seal_from(&key, &iv, fx.header(), &fx.plaintext, &mut buf)
            .unwrap_or_else(|e| panic!("{}: {e:?}", fx.name));
        assert_eq!(&buf[..n], &fx.wire[..], "{} (seal_from)", fx.name);

        // In place, with the plaintext already behind the head room.
        let mut buf = vec![0u8; fx.wire.len()];
        let head = Layout::Standard.head_room();
        buf[head..].copy_from_slice(&fx.plaintext);
        let n = aead_frame::seal_in_place(&key, &iv, fx.header(), &mut buf, fx.plaintext.len())
            .unwrap_or_else(|e| panic!("{}: {e:?}", fx.name));
        assert_eq!(&buf[..n], &fx.wire[..], "{} (seal_in_place)", fx.name);
    }
}

#[test]
fn openvpn_authenticates_header_and_packet_id() {
    // OpenVPN's AD is the first 8 bytes: a changed key id, peer id or packet
    // id must fail the tag, not decrypt under another identity.
    for fx in fixtures() {
        let tail = NonceTail(fx.nonce_tail);
        for (byte, bit) in [(0usize, 0x01u8), (3, 0x01), (7, 0x80)] {
            let mut datagram = fx.wire.clone();
            datagram[byte] ^= bit;
            let frame = aead_frame::parse(&datagram, Layout::Standard).unwrap();
            // The nonce OpenVPN used, so only the AD differs.
            let nonce = PacketIv::Standard { packet_id: fx.packet_id, tail: &tail }.nonce();
            let r = aead_frame::open_in_place(&fx.key(), &nonce, &frame, &mut datagram);
            assert_eq!(r, Err(FrameError::AuthFailed), "{}: byte {byte} changed", fx.name);
        }
    }
}
