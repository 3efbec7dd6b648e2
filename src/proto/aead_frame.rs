//! AEAD framing of one P_DATA_V2 packet, in both layouts OpenVPN uses.
//!
//! ```text
//! standard: [hdr 4][packet_id 4 BE][tag 16][ciphertext]      AD = bytes 0..8
//!           nonce = packet_id (4, as on the wire) ‖ NonceTail (8)
//! epoch:    [hdr 4][packet_id 8 BE][ciphertext][tag 16]      AD = bytes 0..12
//!           nonce = (packet_id ‖ 00 00 00 00) XOR iv (12)
//! ```
//!
//! Everything works over caller-provided buffers: sealing writes the
//! datagram into a send buffer that has [`Layout::head_room`] bytes before
//! and [`Layout::tail_room`] bytes after the plaintext; opening is split into
//! a read-only [`parse`] (so the caller can pick the key slot and pre-check
//! replay before spending an AEAD operation) and [`open_in_place`], which
//! leaves the plaintext inside the datagram's own buffer.
//!
//! Packet ids here are raw wire values: what they mean (replay, epochs) is
//! the business of `packet_id`, `replay` and `epoch`.

use core::fmt;
use core::ops::Range;

use super::opcode::{DATA_V2_HEADER_LEN, DataHeader, HeaderError};
use crate::crypto::{AeadKey, CryptoError, NONCE_LEN, Nonce, TAG_LEN, Tag};

/// Bytes of the 32-bit packet id of the standard layout.
pub const STANDARD_PACKET_ID_LEN: usize = 4;
/// Bytes of the 64-bit (epoch ‖ counter) packet id of the epoch layout.
pub const EPOCH_PACKET_ID_LEN: usize = 8;

/// Standard layout: header, packet id and tag all precede the ciphertext.
pub const STANDARD_HEAD_ROOM: usize = DATA_V2_HEADER_LEN + STANDARD_PACKET_ID_LEN + TAG_LEN;
/// Standard layout: nothing follows the ciphertext.
pub const STANDARD_TAIL_ROOM: usize = 0;
/// Epoch layout: header and packet id precede the ciphertext.
pub const EPOCH_HEAD_ROOM: usize = DATA_V2_HEADER_LEN + EPOCH_PACKET_ID_LEN;
/// Epoch layout: the tag follows the ciphertext.
pub const EPOCH_TAIL_ROOM: usize = TAG_LEN;

/// Smallest standard datagram: ovpn-dco-win accepts an empty payload
/// (crypto.cpp `OvpnCryptoDecryptAEAD`: `len < cryptoOverhead` with
/// `cryptoOverhead = OVPN_DATA_V2_LEN + AEAD_AUTH_TAG_LEN + pktidLen`), so a
/// drop-in replacement authenticates it too and lets the data path drop it.
pub const STANDARD_MIN_DATAGRAM_LEN: usize = STANDARD_HEAD_ROOM + STANDARD_TAIL_ROOM;
/// Smallest epoch datagram: OpenVPN 2.7 requires one byte of payload
/// (crypto.c `openvpn_decrypt_aead`: `min_packet_len = packet_id_size + tag +
/// 1 (+4 for epoch)`), see ovpn-dco-interface.md "Wire format".
pub const EPOCH_MIN_DATAGRAM_LEN: usize = EPOCH_HEAD_ROOM + EPOCH_TAIL_ROOM + 1;

/// The implicit part of the standard nonce (OVPN_KEY_DIRECTION.NonceTail).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NonceTail(pub [u8; 8]);

/// The implicit IV of one epoch data key (`data_iv` of the key schedule).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EpochIv(pub [u8; NONCE_LEN]);

// Implicit IVs are derived from key material: never print them.
impl fmt::Debug for NonceTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceTail(..)")
    }
}

impl fmt::Debug for EpochIv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EpochIv(..)")
    }
}

/// Which of the two packet layouts a key uses (CryptoOptions EPOCH bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Standard,
    Epoch,
}

impl Layout {
    /// Bytes a send buffer must hold before the plaintext.
    pub const fn head_room(self) -> usize {
        match self {
            Layout::Standard => STANDARD_HEAD_ROOM,
            Layout::Epoch => EPOCH_HEAD_ROOM,
        }
    }

    /// Bytes a send buffer must hold after the plaintext.
    pub const fn tail_room(self) -> usize {
        match self {
            Layout::Standard => STANDARD_TAIL_ROOM,
            Layout::Epoch => EPOCH_TAIL_ROOM,
        }
    }

    /// Datagram length minus plaintext length.
    pub const fn overhead(self) -> usize {
        self.head_room() + self.tail_room()
    }

    /// Shortest datagram [`parse`] accepts.
    pub const fn min_datagram_len(self) -> usize {
        match self {
            Layout::Standard => STANDARD_MIN_DATAGRAM_LEN,
            Layout::Epoch => EPOCH_MIN_DATAGRAM_LEN,
        }
    }

    const fn packet_id_len(self) -> usize {
        match self {
            Layout::Standard => STANDARD_PACKET_ID_LEN,
            Layout::Epoch => EPOCH_PACKET_ID_LEN,
        }
    }

    /// Length of the additional data: header and packet id.
    const fn ad_len(self) -> usize {
        DATA_V2_HEADER_LEN + self.packet_id_len()
    }
}

/// A packet id as carried on the wire, before any meaning is given to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WirePacketId {
    /// 32-bit packet id of the standard layout.
    Standard(u32),
    /// 64-bit epoch (16 bits) ‖ counter (48 bits) of the epoch layout.
    Epoch(u64),
}

impl WirePacketId {
    pub const fn layout(self) -> Layout {
        match self {
            WirePacketId::Standard(_) => Layout::Standard,
            WirePacketId::Epoch(_) => Layout::Epoch,
        }
    }
}

/// What a packet's nonce is made of: its packet id and the key's implicit IV.
#[derive(Clone, Copy, Debug)]
pub enum PacketIv<'a> {
    Standard { packet_id: u32, tail: &'a NonceTail },
    Epoch { packet_id: u64, iv: &'a EpochIv },
}

impl PacketIv<'_> {
    pub const fn layout(&self) -> Layout {
        match self {
            PacketIv::Standard { .. } => Layout::Standard,
            PacketIv::Epoch { .. } => Layout::Epoch,
        }
    }

    /// The 12-byte AEAD nonce.
    pub fn nonce(&self) -> Nonce {
        let mut nonce = [0u8; NONCE_LEN];
        match *self {
            PacketIv::Standard { packet_id, tail } => {
                let (id, rest) = nonce.split_at_mut(STANDARD_PACKET_ID_LEN);
                id.copy_from_slice(&packet_id.to_be_bytes());
                rest.copy_from_slice(&tail.0);
            }
            PacketIv::Epoch { packet_id, iv } => {
                nonce[..EPOCH_PACKET_ID_LEN].copy_from_slice(&packet_id.to_be_bytes());
                for (n, i) in nonce.iter_mut().zip(iv.0.iter()) {
                    *n ^= i;
                }
            }
        }
        nonce
    }

    /// Writes the header and packet id (the additional data) into `ad`,
    /// which is exactly `layout().ad_len()` bytes.
    fn write_ad(&self, header: DataHeader, ad: &mut [u8]) {
        let (hdr, id) = ad.split_at_mut(DATA_V2_HEADER_LEN);
        hdr.copy_from_slice(&header.to_bytes());
        match *self {
            PacketIv::Standard { packet_id, .. } => id.copy_from_slice(&packet_id.to_be_bytes()),
            PacketIv::Epoch { packet_id, .. } => id.copy_from_slice(&packet_id.to_be_bytes()),
        }
    }
}

/// Why a packet could not be framed, parsed or opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The datagram is shorter than header, packet id and tag.
    Truncated,
    /// An epoch datagram carries no payload byte (OpenVPN drops those).
    EmptyPayload,
    /// Byte 0 is not P_DATA_V2: the packet belongs to the control channel.
    NotData,
    /// The send buffer lacks head or tail room around the plaintext.
    BufferTooSmall,
    /// The datagram given to [`open_in_place`] is not the one parsed.
    LengthMismatch,
    /// The tag did not verify; the ciphertext range holds no plaintext.
    AuthFailed,
    /// The crypto backend failed for another reason.
    Crypto(CryptoError),
}

impl From<CryptoError> for FrameError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::AuthFailed => FrameError::AuthFailed,
            other => FrameError::Crypto(other),
        }
    }
}

impl From<HeaderError> for FrameError {
    fn from(e: HeaderError) -> Self {
        match e {
            HeaderError::Truncated => FrameError::Truncated,
            HeaderError::NotData => FrameError::NotData,
        }
    }
}

/// Seals in place. The plaintext is `buf[head_room .. head_room + plaintext_len]`
/// (where the TX path copied it); header, packet id and tag are written
/// around it. Returns the datagram length; the datagram is `buf[..len]`.
pub fn seal_in_place<K: AeadKey + ?Sized>(
    key: &K,
    iv: &PacketIv<'_>,
    header: DataHeader,
    buf: &mut [u8],
    plaintext_len: usize,
) -> Result<usize, FrameError> {
    let layout = iv.layout();
    let len = datagram_len(layout, buf.len(), plaintext_len)?;
    let nonce = iv.nonce();
    let mut tag: Tag = [0; TAG_LEN];
    let (ad, rest) = buf.split_at_mut(layout.ad_len());
    iv.write_ad(header, ad);
    match layout {
        Layout::Standard => {
            let (tag_slot, data) = rest.split_at_mut(TAG_LEN);
            key.seal_in_place(&nonce, ad, &mut data[..plaintext_len], &mut tag)?;
            tag_slot.copy_from_slice(&tag);
        }
        Layout::Epoch => {
            let (data, tail) = rest.split_at_mut(plaintext_len);
            key.seal_in_place(&nonce, ad, data, &mut tag)?;
            tail[..TAG_LEN].copy_from_slice(&tag);
        }
    }
    Ok(len)
}

/// Seals `plaintext` (memory the OS owns: only read) into `buf`, which
/// receives the whole datagram. Returns the datagram length.
pub fn seal_from<K: AeadKey + ?Sized>(
    key: &K,
    iv: &PacketIv<'_>,
    header: DataHeader,
    plaintext: &[u8],
    buf: &mut [u8],
) -> Result<usize, FrameError> {
    let layout = iv.layout();
    let len = datagram_len(layout, buf.len(), plaintext.len())?;
    let nonce = iv.nonce();
    let mut tag: Tag = [0; TAG_LEN];
    let (ad, rest) = buf.split_at_mut(layout.ad_len());
    iv.write_ad(header, ad);
    match layout {
        Layout::Standard => {
            let (tag_slot, data) = rest.split_at_mut(TAG_LEN);
            key.seal(&nonce, ad, plaintext, &mut data[..plaintext.len()], &mut tag)?;
            tag_slot.copy_from_slice(&tag);
        }
        Layout::Epoch => {
            let (data, tail) = rest.split_at_mut(plaintext.len());
            key.seal(&nonce, ad, plaintext, data, &mut tag)?;
            tail[..TAG_LEN].copy_from_slice(&tag);
        }
    }
    Ok(len)
}

/// Checks that a send buffer of `buf_len` bytes can frame `plaintext_len`
/// bytes, and returns the datagram length.
fn datagram_len(layout: Layout, buf_len: usize, plaintext_len: usize) -> Result<usize, FrameError> {
    if layout == Layout::Epoch && plaintext_len == 0 {
        // The receiver would drop it: never put such a packet on the wire.
        return Err(FrameError::EmptyPayload);
    }
    let len = plaintext_len.checked_add(layout.overhead()).ok_or(FrameError::BufferTooSmall)?;
    if len > buf_len {
        return Err(FrameError::BufferTooSmall);
    }
    Ok(len)
}

/// A received datagram, parsed but not authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedFrame {
    header: DataHeader,
    packet_id: WirePacketId,
    tag: Tag,
    ciphertext: Range<usize>,
    datagram_len: usize,
}

impl ParsedFrame {
    pub fn header(&self) -> DataHeader {
        self.header
    }

    pub fn packet_id(&self) -> WirePacketId {
        self.packet_id
    }

    pub fn layout(&self) -> Layout {
        self.packet_id.layout()
    }

    /// Where the ciphertext sits in the datagram; after [`open_in_place`]
    /// the plaintext is in the same place.
    pub fn ciphertext(&self) -> Range<usize> {
        self.ciphertext.clone()
    }
}

/// Parses a received datagram in `layout` without touching it.
pub fn parse(datagram: &[u8], layout: Layout) -> Result<ParsedFrame, FrameError> {
    let header = DataHeader::parse(datagram)?;
    let len = datagram.len();
    if len < layout.head_room() + layout.tail_room() {
        return Err(FrameError::Truncated);
    }
    if len < layout.min_datagram_len() {
        return Err(FrameError::EmptyPayload);
    }
    let ad_len = layout.ad_len();
    let id_bytes = datagram.get(DATA_V2_HEADER_LEN..ad_len).ok_or(FrameError::Truncated)?;
    let (packet_id, tag_range, ciphertext) = match layout {
        Layout::Standard => {
            let id: [u8; STANDARD_PACKET_ID_LEN] = id_bytes.try_into().map_err(|_| FrameError::Truncated)?;
            (WirePacketId::Standard(u32::from_be_bytes(id)), ad_len..ad_len + TAG_LEN, ad_len + TAG_LEN..len)
        }
        Layout::Epoch => {
            let id: [u8; EPOCH_PACKET_ID_LEN] = id_bytes.try_into().map_err(|_| FrameError::Truncated)?;
            let tag_start = len - TAG_LEN;
            (WirePacketId::Epoch(u64::from_be_bytes(id)), tag_start..len, ad_len..tag_start)
        }
    };
    let tag: Tag = datagram.get(tag_range).and_then(|t| t.try_into().ok()).ok_or(FrameError::Truncated)?;
    Ok(ParsedFrame { header, packet_id, tag, ciphertext, datagram_len: len })
}

/// Authenticates and decrypts the datagram `frame` was parsed from, in place.
/// Returns where the plaintext now is. On failure the ciphertext range holds
/// no plaintext.
pub fn open_in_place<K: AeadKey + ?Sized>(
    key: &K,
    nonce: &Nonce,
    frame: &ParsedFrame,
    datagram: &mut [u8],
) -> Result<Range<usize>, FrameError> {
    if datagram.len() != frame.datagram_len {
        return Err(FrameError::LengthMismatch);
    }
    let ad_len = frame.layout().ad_len();
    let ct = frame.ciphertext();
    // parse() guarantees ad_len <= ct.start <= ct.end <= datagram_len.
    let (head, rest) = datagram.split_at_mut(ct.start);
    let ad = head.get(..ad_len).ok_or(FrameError::LengthMismatch)?;
    let data = rest.get_mut(..ct.len()).ok_or(FrameError::LengthMismatch)?;
    key.open_in_place(nonce, ad, data, &frame.tag)?;
    Ok(ct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::host::HostCrypto;
    use crate::crypto::{Cipher, CryptoProvider};
    use crate::proto::{KeyId, PeerId};
    use proptest::prelude::*;

    fn header(key_id: u8, peer: u32) -> DataHeader {
        DataHeader { key_id: KeyId::new(key_id).unwrap(), peer_id: PeerId::new(peer).unwrap() }
    }

    fn hex(s: &str) -> std::vec::Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// The OpenVPN keepalive ping (ovpn-dco-interface.md, "Keys, ids, keepalive").
    const PING: [u8; 16] =
        [0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48];

    #[test]
    fn overhead_constants_match_the_wire_format() {
        // 48-byte inner packet → 72-byte UDP payload (OpenVPN 2.6.14 capture).
        assert_eq!(Layout::Standard.overhead() + 48, 72);
        // Keepalive in epoch mode is 44 bytes (OpenVPN 2.7.6 capture).
        assert_eq!(Layout::Epoch.overhead() + PING.len(), 44);
        assert_eq!((Layout::Standard.head_room(), Layout::Standard.tail_room()), (24, 0));
        assert_eq!((Layout::Epoch.head_room(), Layout::Epoch.tail_room()), (12, 16));
    }

    #[test]
    fn standard_layout_round_trips_for_every_cipher() {
        let tail = NonceTail(*b"\x01\x02\x03\x04\x05\x06\x07\x08");
        for (cipher, len) in
            [(Cipher::AesGcm, 16), (Cipher::AesGcm, 24), (Cipher::AesGcm, 32), (Cipher::ChaCha20Poly1305, 32)]
        {
            let key = HostCrypto.new_key(cipher, &[0x5a; 32][..len]).unwrap();
            let iv = PacketIv::Standard { packet_id: 0x0102_0304, tail: &tail };
            let hdr = header(3, 0x12_3456);
            for plen in [0usize, 1, 15, 16, 17, 1400] {
                let plain: std::vec::Vec<u8> = (0..plen).map(|i| i as u8).collect();
                let mut buf = std::vec![0u8; STANDARD_HEAD_ROOM + plen + 7];
                buf[STANDARD_HEAD_ROOM..][..plen].copy_from_slice(&plain);
                let n = seal_in_place(&key, &iv, hdr, &mut buf, plen).unwrap();
                assert_eq!(n, plen + 24);
                assert_eq!(&buf[..8], &[0x4b, 0x12, 0x34, 0x56, 1, 2, 3, 4]);

                // Out of place gives the same datagram.
                let mut out = std::vec![0u8; n];
                assert_eq!(seal_from(&key, &iv, hdr, &plain, &mut out), Ok(n));
                assert_eq!(out[..], buf[..n]);

                let dg = &mut buf[..n];
                let f = parse(dg, Layout::Standard).unwrap();
                assert_eq!(f.header(), hdr);
                assert_eq!(f.packet_id(), WirePacketId::Standard(0x0102_0304));
                let pt = open_in_place(&key, &iv.nonce(), &f, dg).unwrap();
                assert_eq!(pt, 24..n);
                assert_eq!(dg[pt], plain[..]);
            }
        }
    }

    #[test]
    fn epoch_known_answer_vectors_from_openvpn_2_7_capture() {
        // ovpn-dco-interface.md "Wire format": keepalive, epoch 1, counter 5,
        // peer-id 0, key-id 0.
        let cases = [
            (
                Cipher::AesGcm,
                "daa3e72fdd69e4c9722dc343e5302b1ec503465f36a3466b15283969908a6ee3",
                "26a042d34a89d91e50050bc3",
                "480000000001000000000005ab6174db06a3dd414aa8002e4a2197403aeeb6a61f3f80785fe62597b6b2bbd8",
            ),
            (
                Cipher::ChaCha20Poly1305,
                "e9fbfa6d3cb36e4fced269f46d6a43ecb40314f7edc6fcf278807957cf76d62e",
                "64fffccd8164a980dfe24965",
                "48000000000100000000000535c27d2b24813e5be085cc9a3953815b119f03de4ca6e32eba076e207697adaf",
            ),
        ];
        for (cipher, k, iv, wire) in cases {
            let key = HostCrypto.new_key(cipher, &hex(k)).unwrap();
            let iv = EpochIv(hex(iv).try_into().unwrap());
            let wire = hex(wire);
            assert_eq!(wire.len(), 44);

            let mut dg = wire.clone();
            let f = parse(&dg, Layout::Epoch).unwrap();
            assert_eq!(f.header(), header(0, 0));
            let WirePacketId::Epoch(pid) = f.packet_id() else { panic!() };
            assert_eq!(pid, (1 << 48) | 5);
            let piv = PacketIv::Epoch { packet_id: pid, iv: &iv };
            if cipher == Cipher::AesGcm {
                assert_eq!(piv.nonce().to_vec(), hex("26a142d34a89d91b50050bc3"));
            }
            let pt = open_in_place(&key, &piv.nonce(), &f, &mut dg).unwrap();
            assert_eq!(dg[pt], PING);

            let mut buf = [0u8; 64];
            buf[EPOCH_HEAD_ROOM..][..16].copy_from_slice(&PING);
            assert_eq!(seal_in_place(&key, &piv, header(0, 0), &mut buf, 16), Ok(44));
            assert_eq!(buf[..44], wire[..]);
            let mut out = [0u8; 44];
            assert_eq!(seal_from(&key, &piv, header(0, 0), &PING, &mut out), Ok(44));
            assert_eq!(out[..], wire[..]);
        }
    }

    #[test]
    fn tampering_anywhere_fails_authentication() {
        let key = HostCrypto.new_key(Cipher::AesGcm, &[9; 16]).unwrap();
        let iv = EpochIv([7; 12]);
        let piv = PacketIv::Epoch { packet_id: (2 << 48) | 9, iv: &iv };
        let mut buf = [0u8; 60];
        buf[12..32].copy_from_slice(&[0xee; 20]);
        let n = seal_in_place(&key, &piv, header(1, 5), &mut buf, 20).unwrap();
        for i in 0..n {
            let mut dg = buf[..n].to_vec();
            dg[i] ^= 0x80;
            let f = match parse(&dg, Layout::Epoch) {
                Ok(f) => f,
                Err(e) => {
                    assert_eq!((i, e), (0, FrameError::NotData));
                    continue;
                }
            };
            // The nonce follows the (possibly tampered) wire packet id.
            let WirePacketId::Epoch(pid) = f.packet_id() else { panic!() };
            let nonce = PacketIv::Epoch { packet_id: pid, iv: &iv }.nonce();
            assert_eq!(open_in_place(&key, &nonce, &f, &mut dg), Err(FrameError::AuthFailed), "byte {i}");
        }
    }

    #[test]
    fn short_inputs_and_buffers_are_specific_errors() {
        let key = HostCrypto.new_key(Cipher::AesGcm, &[9; 16]).unwrap();
        let tail = NonceTail([0; 8]);
        let piv = PacketIv::Standard { packet_id: 1, tail: &tail };
        assert_eq!(seal_in_place(&key, &piv, header(0, 0), &mut [0u8; 30], 7), Err(FrameError::BufferTooSmall));
        assert_eq!(
            seal_in_place(&key, &piv, header(0, 0), &mut [0u8; 30], usize::MAX),
            Err(FrameError::BufferTooSmall)
        );
        let iv = EpochIv([0; 12]);
        let piv = PacketIv::Epoch { packet_id: 1 << 48 | 1, iv: &iv };
        assert_eq!(seal_in_place(&key, &piv, header(0, 0), &mut [0u8; 64], 0), Err(FrameError::EmptyPayload));
        assert_eq!(seal_from(&key, &piv, header(0, 0), &[1; 8], &mut [0u8; 35]), Err(FrameError::BufferTooSmall));

        assert_eq!(parse(&[0x48; 23], Layout::Standard), Err(FrameError::Truncated));
        assert!(parse(&[0x48; 24], Layout::Standard).is_ok());
        assert_eq!(parse(&[0x48; 27], Layout::Epoch), Err(FrameError::Truncated));
        assert_eq!(parse(&[0x48; 28], Layout::Epoch), Err(FrameError::EmptyPayload));
        assert!(parse(&[0x48; 29], Layout::Epoch).is_ok());
        assert_eq!(parse(&[0x20; 40], Layout::Epoch), Err(FrameError::NotData));

        let f = parse(&[0x48; 40], Layout::Epoch).unwrap();
        assert_eq!(open_in_place(&key, &[0; 12], &f, &mut [0x48; 41]), Err(FrameError::LengthMismatch));
    }

    proptest! {
        #[test]
        fn parse_and_open_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80), epoch in any::<bool>()) {
            let key = HostCrypto.new_key(Cipher::ChaCha20Poly1305, &[3; 32]).unwrap();
            let layout = if epoch { Layout::Epoch } else { Layout::Standard };
            let mut dg = bytes.clone();
            if let Ok(f) = parse(&dg, layout) {
                prop_assert!(dg.len() >= layout.min_datagram_len());
                prop_assert_eq!(f.ciphertext().len() + layout.overhead(), dg.len());
                prop_assert_eq!(open_in_place(&key, &[0; 12], &f, &mut dg), Err(FrameError::AuthFailed));
            }
        }

        #[test]
        fn every_truncation_of_a_valid_packet_is_rejected_cleanly(cut in 0usize..44) {
            let wire = hex("480000000001000000000005ab6174db06a3dd414aa8002e4a2197403aeeb6a61f3f80785fe62597b6b2bbd8");
            let key = HostCrypto.new_key(Cipher::AesGcm, &hex("daa3e72fdd69e4c9722dc343e5302b1ec503465f36a3466b15283969908a6ee3")).unwrap();
            let mut dg = wire[..cut].to_vec();
            match parse(&dg, Layout::Epoch) {
                Err(e) => prop_assert!(matches!(e, FrameError::Truncated | FrameError::EmptyPayload)),
                Ok(f) => prop_assert_eq!(open_in_place(&key, &[0; 12], &f, &mut dg), Err(FrameError::AuthFailed)),
            }
        }
    }
}
