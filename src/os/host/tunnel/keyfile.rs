//! The host tunnel's static key file: one data-channel key for both ends of
//! a point-to-point tunnel, in a line-oriented text format of our own (no
//! OpenVPN format carries AEAD keys with their implicit IVs):
//!
//! ```text
//! # ovpn-dco host tunnel key
//! cipher AES-256-GCM          # AES-128-GCM, AES-192-GCM, AES-256-GCM, CHACHA20-POLY1305
//! peer-id 1                   # sent in every P_DATA_V2 header (24 bits)
//! key-id 0                    # 0..=7
//! a-to-b-key <hex>            # the key of side A's sends, cipher key length
//! a-to-b-nonce-tail <hex>     # 8 bytes: the nonce after the packet id
//! b-to-a-key <hex>
//! b-to-a-nonce-tail <hex>
//! ```
//!
//! Side A encrypts with the `a-to-b` pair and decrypts with `b-to-a`; side
//! B the other way round. Blank lines and `#` comments are ignored.

use std::string::String;
use std::vec::Vec;

use crate::crypto::Cipher;
use crate::crypto::slots::{DirectionKey, NewKey};
use crate::proto::aead_frame::Layout;
use crate::proto::{KeyId, PeerId};

/// Bytes of the nonce after the packet id (OpenVPN's implicit IV).
pub const NONCE_TAIL_LEN: usize = 8;

/// The longest key any cipher takes.
pub const KEY_LEN_MAX: usize = 32;

/// Which end of the tunnel reads the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// One direction's secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectionSecret {
    /// Zero-padded to 32 bytes; the cipher's key length of them are the key.
    pub key: [u8; KEY_LEN_MAX],
    pub nonce_tail: [u8; NONCE_TAIL_LEN],
}

/// The key one end installs: what NEW_KEY carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelKeys {
    pub cipher: Cipher,
    pub key_len: usize,
    pub peer_id: PeerId,
    pub key_id: KeyId,
    pub encrypt: DirectionSecret,
    pub decrypt: DirectionSecret,
}

impl TunnelKeys {
    /// The NEW_KEY of this end (standard, tag-first layout).
    pub fn new_key(&self) -> NewKey<'_> {
        NewKey {
            key_id: self.key_id,
            cipher: self.cipher,
            layout: Layout::Standard,
            encrypt: DirectionKey {
                key: &self.encrypt.key,
                key_len: self.key_len,
                nonce_tail: self.encrypt.nonce_tail,
            },
            decrypt: DirectionKey {
                key: &self.decrypt.key,
                key_len: self.key_len,
                nonce_tail: self.decrypt.nonce_tail,
            },
        }
    }
}

/// Why a key file was refused, each naming the line (1-based) or field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFileError {
    UnknownField {
        line: usize,
    },
    DuplicateField {
        line: usize,
    },
    MissingField(&'static str),
    UnknownCipher {
        line: usize,
    },
    BadNumber {
        line: usize,
    },
    PeerIdOutOfRange {
        line: usize,
    },
    KeyIdOutOfRange {
        line: usize,
    },
    BadHex {
        line: usize,
    },
    /// A key not of the cipher's length, or a nonce tail not 8 bytes.
    BadLength {
        line: usize,
    },
}

impl core::fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "key file: {self:?}")
    }
}

/// The cipher names `cipher` takes, with their key lengths.
const CIPHERS: [(&str, Cipher, usize); 4] = [
    ("AES-128-GCM", Cipher::AesGcm, 16),
    ("AES-192-GCM", Cipher::AesGcm, 24),
    ("AES-256-GCM", Cipher::AesGcm, 32),
    ("CHACHA20-POLY1305", Cipher::ChaCha20Poly1305, 32),
];

const FIELDS: [&str; 7] =
    ["cipher", "peer-id", "key-id", "a-to-b-key", "a-to-b-nonce-tail", "b-to-a-key", "b-to-a-nonce-tail"];

fn hex_into(text: &str, out: &mut [u8]) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 || bytes.len() / 2 > out.len() {
        return None;
    }
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let s = core::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(s, 16).ok()?;
    }
    Some(bytes.len() / 2)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| std::format!("{b:02x}")).collect()
}

/// Reads a key file for `side`.
pub fn parse(text: &str, side: Side) -> Result<TunnelKeys, KeyFileError> {
    let mut values: [Option<(usize, &str)>; FIELDS.len()] = [None; FIELDS.len()];
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let mut words = content.split_whitespace();
        let (Some(name), Some(value), None) = (words.next(), words.next(), words.next()) else {
            return Err(KeyFileError::UnknownField { line });
        };
        let at = FIELDS.iter().position(|f| *f == name).ok_or(KeyFileError::UnknownField { line })?;
        if values[at].replace((line, value)).is_some() {
            return Err(KeyFileError::DuplicateField { line });
        }
    }
    let field = |k: usize| values[k].ok_or(KeyFileError::MissingField(FIELDS[k]));

    let (line, name) = field(0)?;
    let &(_, cipher, key_len) =
        CIPHERS.iter().find(|c| c.0.eq_ignore_ascii_case(name)).ok_or(KeyFileError::UnknownCipher { line })?;
    let (line, v) = field(1)?;
    let id: u32 = v.parse().map_err(|_| KeyFileError::BadNumber { line })?;
    let peer_id = PeerId::new(id).ok_or(KeyFileError::PeerIdOutOfRange { line })?;
    let (line, v) = field(2)?;
    let id: u8 = v.parse().map_err(|_| KeyFileError::BadNumber { line })?;
    let key_id = KeyId::new(id).ok_or(KeyFileError::KeyIdOutOfRange { line })?;

    let direction = |key_field: usize| -> Result<DirectionSecret, KeyFileError> {
        let mut secret = DirectionSecret { key: [0; KEY_LEN_MAX], nonce_tail: [0; NONCE_TAIL_LEN] };
        let (line, v) = field(key_field)?;
        if hex_into(v, &mut secret.key).ok_or(KeyFileError::BadHex { line })? != key_len {
            return Err(KeyFileError::BadLength { line });
        }
        let (line, v) = field(key_field + 1)?;
        if hex_into(v, &mut secret.nonce_tail).ok_or(KeyFileError::BadHex { line })? != NONCE_TAIL_LEN {
            return Err(KeyFileError::BadLength { line });
        }
        Ok(secret)
    };
    let (a_to_b, b_to_a) = (direction(3)?, direction(5)?);
    let (encrypt, decrypt) = match side {
        Side::A => (a_to_b, b_to_a),
        Side::B => (b_to_a, a_to_b),
    };
    Ok(TunnelKeys { cipher, key_len, peer_id, key_id, encrypt, decrypt })
}

/// A key file with fresh random keys from `random` for `cipher_name`, or
/// `None` if no such cipher.
pub fn generate(
    cipher_name: &str,
    peer_id: PeerId,
    key_id: KeyId,
    random: &mut dyn FnMut(&mut [u8]),
) -> Option<String> {
    let &(name, _, key_len) = CIPHERS.iter().find(|c| c.0.eq_ignore_ascii_case(cipher_name))?;
    let mut material = [0u8; 2 * (KEY_LEN_MAX + NONCE_TAIL_LEN)];
    random(&mut material);
    let (a, b) = material.split_at(KEY_LEN_MAX + NONCE_TAIL_LEN);
    let mut out = Vec::new();
    out.push(String::from("# ovpn-dco host tunnel key: keep it secret"));
    out.push(std::format!("cipher {name}"));
    out.push(std::format!("peer-id {}", peer_id.get()));
    out.push(std::format!("key-id {}", key_id.get()));
    for (label, m) in [("a-to-b", a), ("b-to-a", b)] {
        out.push(std::format!("{label}-key {}", hex(&m[..key_len])));
        out.push(std::format!("{label}-nonce-tail {}", hex(&m[KEY_LEN_MAX..])));
    }
    out.push(String::new());
    Some(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# test\ncipher AES-128-GCM\npeer-id 7\nkey-id 2 # trailing\n\
        a-to-b-key 000102030405060708090a0b0c0d0e0f\na-to-b-nonce-tail 1011121314151617\n\
        b-to-a-key f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff\nb-to-a-nonce-tail 2021222324252627\n";

    #[test]
    fn each_side_encrypts_with_its_own_direction() {
        let a = parse(FILE, Side::A).unwrap();
        let b = parse(FILE, Side::B).unwrap();
        assert_eq!((a.cipher, a.key_len, a.peer_id.get(), a.key_id.get()), (Cipher::AesGcm, 16, 7, 2));
        assert_eq!(a.encrypt, b.decrypt);
        assert_eq!(a.decrypt, b.encrypt);
        assert_eq!(a.encrypt.key[..16], (0..16).collect::<Vec<u8>>()[..]);
        assert_eq!(a.encrypt.key[16..], [0; 16]);
        assert_eq!(a.encrypt.nonce_tail, [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17]);
    }

    #[test]
    fn malformed_files_name_the_line() {
        let with = |from: &str, to: &str| FILE.replace(from, to);
        assert_eq!(
            parse(&with("cipher AES-128-GCM", "cipher DES"), Side::A),
            Err(KeyFileError::UnknownCipher { line: 2 })
        );
        assert_eq!(
            parse(&with("peer-id 7", "peer-id 16777216"), Side::A),
            Err(KeyFileError::PeerIdOutOfRange { line: 3 })
        );
        assert_eq!(parse(&with("key-id 2", "key-id 8"), Side::A), Err(KeyFileError::KeyIdOutOfRange { line: 4 }));
        assert_eq!(parse(&with("key-id 2", "key-id x"), Side::A), Err(KeyFileError::BadNumber { line: 4 }));
        assert_eq!(parse(&with("0e0f\n", "0e\n"), Side::A), Err(KeyFileError::BadLength { line: 5 }));
        assert_eq!(parse(&with("0e0f\n", "0e0g\n"), Side::A), Err(KeyFileError::BadHex { line: 5 }));
        assert_eq!(parse(&with("1617\n", "161\n"), Side::A), Err(KeyFileError::BadHex { line: 6 }));
        assert_eq!(parse(&with("# test", "color blue"), Side::A), Err(KeyFileError::UnknownField { line: 1 }));
        assert_eq!(parse(&with("# test", "key-id 1"), Side::A), Err(KeyFileError::DuplicateField { line: 4 }));
        assert_eq!(parse(&with("peer-id 7\n", ""), Side::A), Err(KeyFileError::MissingField("peer-id")));
        assert_eq!(parse("", Side::A), Err(KeyFileError::MissingField("cipher")));
    }

    #[test]
    fn generated_files_parse_with_the_cipher_key_length() {
        let mut n = 0u8;
        let mut counter = |b: &mut [u8]| {
            b.iter_mut().for_each(|x| {
                n = n.wrapping_add(1);
                *x = n;
            })
        };
        let text =
            generate("chacha20-poly1305", PeerId::new(3).unwrap(), KeyId::new(1).unwrap(), &mut counter).unwrap();
        let a = parse(&text, Side::A).unwrap();
        assert_eq!((a.cipher, a.key_len), (Cipher::ChaCha20Poly1305, 32));
        assert_eq!(a.encrypt.key[0], 1);
        assert_eq!(a.encrypt.nonce_tail[0], 33);
        assert_eq!(a.decrypt.key[0], 41);
        assert!(generate("rot13", PeerId::new(3).unwrap(), KeyId::new(1).unwrap(), &mut counter).is_none());
    }
}
