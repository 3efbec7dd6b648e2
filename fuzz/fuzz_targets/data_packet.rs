//! Received datagrams through everything the RX path runs before a packet is
//! trusted: opcode classification, AEAD frame parsing in both layouts, and
//! key-slot decryption with replay checks, against fixed installed keys.
//!
//! Byte 0 picks the mode (bit 0):
//! - **raw** (0): the rest is a datagram, as it came off the wire.
//! - **mutate** (1): the rest describes a valid sealed packet (layout, packet
//!   id, peer id, plaintext length) followed by mutations (bit flip,
//!   truncation, extension, byte overwrite), applied one after another.
//!
//! Receiver keys, as NEW_KEY would install them:
//! - key id 0, standard layout: the AES-128-GCM key of the real OpenVPN
//!   capture tests/fixtures/openvpn-2.6/AES-128-GCM.txt, so that capture's
//!   packet (a seed) decrypts;
//! - key id 1, epoch layout: ChaCha20-Poly1305 data keys derived from a fixed
//!   E_1 (epochs 1..=5 have keys).
//!
//! Properties: nothing panics; parsed ranges lie inside the datagram; a
//! mutated packet is never accepted; a refused packet leaves the replay
//! state as it was (the original then still decrypts exactly once, and in raw
//! mode a probe packet with the refused packet's id gets the same answer as
//! from freshly installed keys).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ovpn_dco::crypto::host::{HostCrypto, HostKey};
use ovpn_dco::crypto::slots::{DataError, Decrypted, DirectionKey, KeySlots, NewKey, SlotIndex};
use ovpn_dco::crypto::{Cipher, CryptoProvider};
use ovpn_dco::proto::aead_frame::{self, Layout, NonceTail, PacketIv, WirePacketId};
use ovpn_dco::proto::epoch::{EpochCipher, EpochSender};
use ovpn_dco::proto::opcode::{self, DataHeader, PacketKind};
use ovpn_dco::proto::packet_id::EpochPacketId;
use ovpn_dco::proto::{KeyId, PeerId};

/// The AES-128-GCM capture's key and nonce tail (client to server).
const STANDARD_KEY: [u8; 16] =
    [0xe7, 0xd3, 0xad, 0x35, 0x70, 0x99, 0xc0, 0xaf, 0x60, 0x23, 0x0a, 0x8a, 0x0f, 0xf2, 0xd2, 0x1f];
const STANDARD_TAIL: [u8; 8] = [0xe1, 0x39, 0xd4, 0x90, 0xb5, 0xa5, 0x99, 0x52];
const STANDARD_KEY_ID: u8 = 0;
/// A fixed epoch secret E_1.
const EPOCH_E1: [u8; 32] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12,
    0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];
const EPOCH_KEY_ID: u8 = 1;
/// Epochs the receiver holds keys for right after install: 1 and the
/// FUTURE_EPOCH_KEYS (4) after it.
const EPOCHS_WITH_KEYS: u16 = 5;
/// Replay checks want a clock; a constant keeps runs reproducible.
const NOW_SECS: u64 = 1_000;
/// Largest plaintext the mutate mode seals (a full-size inner packet).
const MAX_PLAINTEXT: usize = 1500;
/// Mutations applied to one packet at most.
const MAX_MUTATIONS: usize = 16;
/// Bytes one extension appends at most.
const MAX_EXTENSION: usize = 64;

fn key_id(v: u8) -> KeyId {
    KeyId::new(v).expect("constant key id")
}

/// The receiver: both slots installed as OpenVPN would (the decrypt keys are
/// the ones above; the encrypt keys are irrelevant here and differ).
fn receiver() -> KeySlots<HostKey> {
    let other = [0x5a; 32];
    let mut std_key = [0u8; 32];
    std_key[..16].copy_from_slice(&STANDARD_KEY);
    let standard = NewKey {
        key_id: key_id(STANDARD_KEY_ID),
        cipher: Cipher::AesGcm,
        layout: Layout::Standard,
        encrypt: DirectionKey { key: &other, key_len: 16, nonce_tail: [0x11; 8] },
        decrypt: DirectionKey { key: &std_key, key_len: 16, nonce_tail: STANDARD_TAIL },
    };
    let epoch = NewKey {
        key_id: key_id(EPOCH_KEY_ID),
        cipher: Cipher::ChaCha20Poly1305,
        layout: Layout::Epoch,
        encrypt: DirectionKey { key: &other, key_len: 32, nonce_tail: [0; 8] },
        decrypt: DirectionKey { key: &EPOCH_E1, key_len: 32, nonce_tail: [0; 8] },
    };
    let mut slots = KeySlots::new();
    slots.install(&HostCrypto, SlotIndex::Primary, &standard).expect("standard key installs");
    slots.install(&HostCrypto, SlotIndex::Secondary, &epoch).expect("epoch key installs");
    slots
}

/// What the peer would send: a valid datagram with this header, packet id
/// and plaintext. `None` for an epoch without a receive key.
fn seal(header: DataHeader, id: WirePacketId, plaintext: &[u8]) -> Option<Vec<u8>> {
    let p = HostCrypto;
    let mut out = vec![0u8; plaintext.len() + id.layout().overhead()];
    let len = match id {
        WirePacketId::Standard(packet_id) => {
            let key = p.new_key(Cipher::AesGcm, &STANDARD_KEY).ok()?;
            let tail = NonceTail(STANDARD_TAIL);
            aead_frame::seal_from(&key, &PacketIv::Standard { packet_id, tail: &tail }, header, plaintext, &mut out)
        }
        WirePacketId::Epoch(raw) => {
            let epoch = EpochPacketId::from_wire(raw).epoch();
            if epoch == 0 || epoch > EPOCHS_WITH_KEYS {
                return None;
            }
            let cipher = EpochCipher::new(Cipher::ChaCha20Poly1305, 32)?;
            let mut sender = EpochSender::new(&p, cipher, &EPOCH_E1).ok()?;
            sender.follow(&p, epoch).ok()?;
            let (_, key) = sender.next_packet(&p, plaintext.len()).ok()?;
            aead_frame::seal_from(
                key.key(),
                &PacketIv::Epoch { packet_id: raw, iv: key.iv() },
                header,
                plaintext,
                &mut out,
            )
        }
    }
    .ok()?;
    out.truncate(len);
    Some(out)
}

fn decrypt(slots: &mut KeySlots<HostKey>, datagram: &[u8]) -> (Result<Decrypted, DataError>, Vec<u8>) {
    let mut buf = datagram.to_vec();
    let r = slots.decrypt(&HostCrypto, &mut buf, NOW_SECS);
    if let Ok(d) = &r {
        assert!(d.plaintext.start <= d.plaintext.end && d.plaintext.end <= datagram.len());
        buf = buf[d.plaintext.clone()].to_vec();
    }
    (r, buf)
}

fn check_classify_and_parse(datagram: &[u8]) {
    match opcode::classify(datagram) {
        Ok(PacketKind::Data(h)) => {
            assert_eq!(datagram[0] >> opcode::OPCODE_SHIFT, opcode::P_DATA_V2);
            assert_eq!(DataHeader::parse(datagram), Ok(h));
            assert_eq!(h.to_bytes(), datagram[..opcode::DATA_V2_HEADER_LEN]);
        }
        Ok(PacketKind::Control) => {
            assert!(datagram.len() >= opcode::MIN_PACKET_LEN);
            assert_ne!(datagram[0] >> opcode::OPCODE_SHIFT, opcode::P_DATA_V2);
        }
        Err(_) => assert!(datagram.len() < opcode::MIN_PACKET_LEN),
    }
    for layout in [Layout::Standard, Layout::Epoch] {
        if let Ok(frame) = aead_frame::parse(datagram, layout) {
            let ct = frame.ciphertext();
            assert_eq!(frame.layout(), layout);
            assert!(datagram.len() >= layout.min_datagram_len());
            assert!(ct.start <= ct.end && ct.end <= datagram.len());
            assert_eq!(ct.len() + layout.overhead(), datagram.len());
            assert_eq!(DataHeader::parse(datagram), Ok(frame.header()));
        }
    }
}

/// Raw mode: a refused datagram must leave the slots as fresh ones. The
/// probe is a valid packet carrying the refused one's header and packet id
/// when it can be built, else the datagram itself.
fn raw(datagram: &[u8]) {
    check_classify_and_parse(datagram);
    let mut slots = receiver();
    let (result, _) = decrypt(&mut slots, datagram);
    if result.is_ok() {
        return;
    }
    let probe = DataHeader::parse(datagram)
        .ok()
        .and_then(|h| {
            let layout = if h.key_id.get() == EPOCH_KEY_ID { Layout::Epoch } else { Layout::Standard };
            let frame = aead_frame::parse(datagram, layout).ok()?;
            seal(h, frame.packet_id(), b"probe")
        })
        .unwrap_or_else(|| datagram.to_vec());
    let after_refusal = decrypt(&mut slots, &probe);
    let fresh = decrypt(&mut receiver(), &probe);
    assert_eq!(after_refusal, fresh, "a refused datagram changed the key slots ({result:?})");
}

/// Reads the mutate-mode description.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn mutate(data: &[u8]) {
    let mut c = Cursor(data);
    let flags = c.u8();
    let layout = if flags & 1 == 0 { Layout::Standard } else { Layout::Epoch };
    let peer_id = PeerId::new(u32::from_be_bytes([0, c.u8(), c.u8(), c.u8()])).expect("24 bits");
    let (kid, id) = match layout {
        Layout::Standard => {
            let id = u32::from_be_bytes([c.u8(), c.u8(), c.u8(), c.u8()]).max(1);
            (STANDARD_KEY_ID, WirePacketId::Standard(id))
        }
        Layout::Epoch => {
            let epoch = 1 + u16::from(c.u8()) % EPOCHS_WITH_KEYS;
            let counter = u64::from_be_bytes([0, 0, c.u8(), c.u8(), c.u8(), c.u8(), c.u8(), c.u8()]).max(1);
            let id = EpochPacketId::new(epoch, counter).expect("48-bit counter");
            (EPOCH_KEY_ID, WirePacketId::Epoch(id.get()))
        }
    };
    let min = usize::from(layout == Layout::Epoch);
    let len = (usize::from(c.u16()) % (MAX_PLAINTEXT + 1)).max(min);
    let seed = c.u8();
    let plaintext: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    let header = DataHeader { key_id: key_id(kid), peer_id };
    let original = seal(header, id, &plaintext).expect("epochs 1..=5 have keys");

    let mut slots = receiver();
    let mut mutant = original.clone();
    for _ in 0..MAX_MUTATIONS {
        if c.is_empty() {
            break;
        }
        let op = c.u8();
        match op % 4 {
            0 => {
                let pos = usize::from(c.u16());
                if !mutant.is_empty() {
                    let at = pos % mutant.len();
                    mutant[at] ^= 1 << (op >> 5);
                }
            }
            1 => mutant.truncate(usize::from(c.u16()) % (mutant.len() + 1)),
            2 => {
                let n = usize::from(op >> 2) % (MAX_EXTENSION + 1);
                mutant.extend((0..n).map(|_| c.u8()));
            }
            _ => {
                let pos = usize::from(c.u16());
                let value = c.u8();
                if !mutant.is_empty() {
                    let at = pos % mutant.len();
                    mutant[at] = value;
                }
            }
        }
        check_classify_and_parse(&mutant);
        if mutant == original {
            continue;
        }
        let (result, _) = decrypt(&mut slots, &mutant);
        assert!(result.is_err(), "a mutated packet was accepted: {result:?}");
    }

    // Nothing refused above may have moved the replay window.
    let (result, opened) = decrypt(&mut slots, &original);
    assert!(result.is_ok(), "the original packet was refused after its mutants: {result:?}");
    assert_eq!(opened, plaintext);
    let (again, _) = decrypt(&mut slots, &original);
    assert!(matches!(again, Err(DataError::Replay(_))), "a replay was not refused: {again:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 { raw(rest) } else { mutate(rest) }
});
