//! The key slots of one peer: PRIMARY and SECONDARY (OVPN_KEY_SLOT), each
//! with a key id and one data-channel key per direction.
//!
//! TX always uses the primary slot; RX picks the slot whose key id matches
//! byte 0 of the packet (ovpn-dco-interface.md "Keys, ids, keepalive").
//! OpenVPN installs the first key as PRIMARY, later ones as SECONDARY, then
//! swaps.
//!
//! # Locking (kernel)
//! The two directions are separate values ([`TxSlots`], [`RxSlots`]) so that
//! each can live under its own lock, as in ovpn-dco-win (peer TxLock/RxLock):
//! - **TX**: [`TxSlots::encrypt_in_place`] / [`TxSlots::encrypt_from`] take
//!   `&mut self` (packet id counter, epoch rotation): hold the TX lock.
//! - **RX** is split in three so that the AEAD, the expensive part, runs
//!   without exclusive access:
//!   1. [`RxSlots::prepare`] (`&self`): parse, slot by key id, epoch key
//!      lookup, replay pre-check;
//!   2. [`RxPacket::open`] (borrows the slots shared): decrypt in place;
//!   3. [`RxSlots::commit`] (`&mut self`): replay accept and, for a future
//!      epoch, promotion (which derives keys, see [`crate::proto::epoch`]).
//!
//!   Steps 1–2 need the slots kept alive and unmodified (a shared/reader
//!   lock, or a reference on the slot); step 3 needs the RX lock. Several
//!   CPUs may be between 2 and 3 at once: commit re-checks the window, and a
//!   key installed or replaced meanwhile is caught by a generation number
//!   ([`DataError::KeyReplaced`]).
//! - A promotion asks the sender to follow ([`Decrypted::follow_epoch`]):
//!   the caller applies it with [`TxSlots::follow_epoch`] under the TX lock.
//!
//! [`KeySlots`] bundles both directions for single-threaded callers (the
//! host model, tests).

use core::ops::Range;

use super::{AeadKey, Cipher, CryptoError, CryptoProvider, Nonce};
use crate::proto::aead_frame::{self, FrameError, Layout, NonceTail, PacketIv, ParsedFrame, WirePacketId};
use crate::proto::epoch::{EpochAccepted, EpochCipher, EpochError, EpochReceiver, EpochSender};
use crate::proto::opcode::DataHeader;
use crate::proto::packet_id::{EpochPacketId, PacketIdError, PacketIdSender};
use crate::proto::replay::{ReplayError, ReplayWindow};
use crate::proto::{KeyId, PeerId};

/// Which slot NEW_KEY fills (OVPN_KEY_SLOT: PRIMARY 0, SECONDARY 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotIndex {
    Primary,
    Secondary,
}

/// One direction's key material as NEW_KEY carries it (OVPN_KEY_DIRECTION).
/// Standard layout: `key[..key_len]` is the AEAD key. Epoch layout: `key`
/// is the 32-byte secret E_1 and `key_len` the data key length; the nonce
/// tail is unused.
#[derive(Clone, Copy)]
pub struct DirectionKey<'a> {
    pub key: &'a [u8; 32],
    pub key_len: usize,
    pub nonce_tail: [u8; 8],
}

/// Why a key could not be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallError {
    /// KeyLen does not fit the cipher.
    BadKeyLength,
    /// The backend could not create the key object.
    Crypto(CryptoError),
    /// Deriving the first epoch keys failed.
    Epoch(EpochError),
}

impl From<CryptoError> for InstallError {
    fn from(e: CryptoError) -> Self {
        InstallError::Crypto(e)
    }
}

impl From<EpochError> for InstallError {
    fn from(e: EpochError) -> Self {
        InstallError::Epoch(e)
    }
}

/// Why a data packet could not be sent or received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataError {
    /// TX: no key in the primary slot.
    NoPrimaryKey,
    /// RX: no slot holds the packet's key id.
    UnknownKeyId(KeyId),
    /// TX: the key's packet ids (or, epoch layout, its epochs) are used up.
    PacketIdExhausted,
    /// RX: the epoch has no key (too old, too far ahead, or 0).
    UnknownEpoch(u16),
    /// RX: the replay window refused the packet id.
    Replay(ReplayError),
    /// RX: the tag did not verify.
    AuthFailed,
    /// Malformed packet, short buffer or backend failure while framing.
    Frame(FrameError),
    /// RX: the slot was replaced between [`RxSlots::prepare`] and
    /// [`RxSlots::commit`]; the packet is dropped.
    KeyReplaced,
    /// An epoch change needed new keys and deriving them failed.
    KeyDerivation(EpochError),
}

impl From<FrameError> for DataError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::AuthFailed => DataError::AuthFailed,
            other => DataError::Frame(other),
        }
    }
}

impl From<EpochError> for DataError {
    fn from(e: EpochError) -> Self {
        match e {
            EpochError::EpochsExhausted => DataError::PacketIdExhausted,
            EpochError::UnknownEpoch(n) => DataError::UnknownEpoch(n),
            EpochError::Replay(r) => DataError::Replay(r),
            other => DataError::KeyDerivation(other),
        }
    }
}

impl From<PacketIdError> for DataError {
    fn from(e: PacketIdError) -> Self {
        match e {
            PacketIdError::Exhausted => DataError::PacketIdExhausted,
        }
    }
}

/// The send key of one slot.
enum TxKey<K> {
    Standard { aead: K, tail: NonceTail, packet_ids: PacketIdSender },
    Epoch(EpochSender<K>),
}

/// The receive key of one slot.
// Two of these live per peer for the key's lifetime; keeping the replay
// state inline saves a pointer chase on every received packet.
#[allow(clippy::large_enum_variant)]
enum RxKey<K> {
    Standard { aead: K, tail: NonceTail, replay: ReplayWindow },
    Epoch(EpochReceiver<K>),
}

/// The send half of one slot.
pub struct TxSlot<K> {
    key_id: KeyId,
    key: TxKey<K>,
}

/// The receive half of one slot.
pub struct RxSlot<K> {
    key_id: KeyId,
    key: RxKey<K>,
    /// Set by [`RxSlots::install`]; tells a late commit its key is gone.
    generation: u64,
}

impl<K> TxSlot<K> {
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn layout(&self) -> Layout {
        match self.key {
            TxKey::Standard { .. } => Layout::Standard,
            TxKey::Epoch(_) => Layout::Epoch,
        }
    }
}

impl<K> RxSlot<K> {
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn layout(&self) -> Layout {
        match self.key {
            RxKey::Standard { .. } => Layout::Standard,
            RxKey::Epoch(_) => Layout::Epoch,
        }
    }
}

/// A NEW_KEY request (OVPN_CRYPTO_DATA_V2 without slot and peer).
#[derive(Clone, Copy)]
pub struct NewKey<'a> {
    pub key_id: KeyId,
    pub cipher: Cipher,
    /// Epoch layout when CryptoOptions has the EPOCH bit.
    pub layout: Layout,
    pub encrypt: DirectionKey<'a>,
    pub decrypt: DirectionKey<'a>,
}

/// Both halves of one slot, before they go under their locks.
pub struct Slot<K> {
    pub tx: TxSlot<K>,
    pub rx: RxSlot<K>,
}

/// Creates both halves of a slot from NEW_KEY material. Control path: key
/// objects are created (and, epoch layout, 2 + [`crate::proto::epoch::FUTURE_EPOCH_KEYS`]
/// keys derived) here, with no lock held.
pub fn new_slot<P: CryptoProvider + ?Sized>(p: &P, new: &NewKey<'_>) -> Result<Slot<P::Key>, InstallError> {
    let NewKey { key_id, cipher, layout, encrypt, decrypt } = *new;
    let (tx, rx) = match layout {
        Layout::Standard => {
            let ek = encrypt.key.get(..encrypt.key_len).ok_or(InstallError::BadKeyLength)?;
            let dk = decrypt.key.get(..decrypt.key_len).ok_or(InstallError::BadKeyLength)?;
            if !cipher.accepts_key_len(ek.len()) || !cipher.accepts_key_len(dk.len()) {
                return Err(InstallError::BadKeyLength);
            }
            (
                TxKey::Standard {
                    aead: p.new_key(cipher, ek)?,
                    tail: NonceTail(encrypt.nonce_tail),
                    packet_ids: PacketIdSender::new(),
                },
                RxKey::Standard {
                    aead: p.new_key(cipher, dk)?,
                    tail: NonceTail(decrypt.nonce_tail),
                    replay: ReplayWindow::new(),
                },
            )
        }
        Layout::Epoch => {
            let ec = EpochCipher::new(cipher, encrypt.key_len).ok_or(InstallError::BadKeyLength)?;
            let dc = EpochCipher::new(cipher, decrypt.key_len).ok_or(InstallError::BadKeyLength)?;
            (TxKey::Epoch(EpochSender::new(p, ec, encrypt.key)?), RxKey::Epoch(EpochReceiver::new(p, dc, decrypt.key)?))
        }
    };
    Ok(Slot { tx: TxSlot { key_id, key: tx }, rx: RxSlot { key_id, key: rx, generation: 0 } })
}

/// Send halves of the primary and secondary slot.
pub struct TxSlots<K> {
    primary: Option<TxSlot<K>>,
    secondary: Option<TxSlot<K>>,
}

impl<K: AeadKey> Default for TxSlots<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: AeadKey> TxSlots<K> {
    pub const fn new() -> Self {
        Self { primary: None, secondary: None }
    }

    /// Puts `slot` into `index`, replacing what was there.
    pub fn install(&mut self, index: SlotIndex, slot: TxSlot<K>) {
        match index {
            SlotIndex::Primary => self.primary = Some(slot),
            SlotIndex::Secondary => self.secondary = Some(slot),
        }
    }

    /// SWAP_KEYS.
    pub fn swap(&mut self) {
        core::mem::swap(&mut self.primary, &mut self.secondary);
    }

    /// The primary slot, which TX uses.
    pub fn primary(&self) -> Option<&TxSlot<K>> {
        self.primary.as_ref()
    }

    /// Test hook of the host build: the primary key (standard layout)
    /// hands out `next` as its next packet id, so that a scenario reaches
    /// the end of the id space without billions of packets. False (nothing
    /// changed) without a primary key, in epoch layout, or for 0.
    #[cfg(not(windows))]
    #[doc(hidden)]
    pub fn set_next_packet_id_for_test(&mut self, next: u32) -> bool {
        match (self.primary.as_mut(), PacketIdSender::starting_at(next)) {
            (Some(TxSlot { key: TxKey::Standard { packet_ids, .. }, .. }), Some(sender)) => {
                *packet_ids = sender;
                true
            }
            _ => false,
        }
    }

    /// Head and tail room the send buffer needs: the primary key's layout.
    pub fn layout(&self) -> Result<Layout, DataError> {
        self.primary.as_ref().map(TxSlot::layout).ok_or(DataError::NoPrimaryKey)
    }

    /// Encrypts the plaintext at `buf[layout.head_room()..][..plaintext_len]`
    /// with the primary key, in place. Returns the datagram length.
    pub fn encrypt_in_place<P: CryptoProvider<Key = K> + ?Sized>(
        &mut self,
        p: &P,
        peer_id: PeerId,
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Result<usize, DataError> {
        self.encrypt(p, peer_id, plaintext_len, |key, iv, header| {
            aead_frame::seal_in_place(key, iv, header, buf, plaintext_len)
        })
    }

    /// Encrypts `plaintext` (OS memory, only read) into `buf` with the
    /// primary key. Returns the datagram length.
    pub fn encrypt_from<P: CryptoProvider<Key = K> + ?Sized>(
        &mut self,
        p: &P,
        peer_id: PeerId,
        plaintext: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, DataError> {
        self.encrypt(p, peer_id, plaintext.len(), |key, iv, header| {
            aead_frame::seal_from(key, iv, header, plaintext, buf)
        })
    }

    fn encrypt<P: CryptoProvider<Key = K> + ?Sized>(
        &mut self,
        p: &P,
        peer_id: PeerId,
        plaintext_len: usize,
        seal: impl FnOnce(&K, &PacketIv<'_>, DataHeader) -> Result<usize, FrameError>,
    ) -> Result<usize, DataError> {
        let slot = self.primary.as_mut().ok_or(DataError::NoPrimaryKey)?;
        let header = DataHeader { key_id: slot.key_id, peer_id };
        let len = match &mut slot.key {
            TxKey::Standard { aead, tail, packet_ids } => {
                let packet_id = packet_ids.next()?;
                seal(aead, &PacketIv::Standard { packet_id, tail }, header)?
            }
            TxKey::Epoch(sender) => {
                let (id, key) = sender.next_packet(p, plaintext_len)?;
                seal(key.key(), &PacketIv::Epoch { packet_id: id.get(), iv: key.iv() }, header)?
            }
        };
        Ok(len)
    }

    /// Lets the epoch sender of the slot with `key_id` follow the receiver
    /// up to `epoch` ([`Decrypted::follow_epoch`]). A slot that is gone or
    /// not in epoch layout is left alone.
    pub fn follow_epoch<P: CryptoProvider<Key = K> + ?Sized>(
        &mut self,
        p: &P,
        key_id: KeyId,
        epoch: u16,
    ) -> Result<(), DataError> {
        let slot = [self.primary.as_mut(), self.secondary.as_mut()].into_iter().flatten().find(|s| s.key_id == key_id);
        if let Some(TxSlot { key: TxKey::Epoch(sender), .. }) = slot {
            sender.follow(p, epoch)?;
        }
        Ok(())
    }
}

/// Receive halves of the primary and secondary slot.
pub struct RxSlots<K> {
    primary: Option<RxSlot<K>>,
    secondary: Option<RxSlot<K>>,
    /// Generation handed to the next installed slot.
    next_generation: u64,
}

impl<K: AeadKey> Default for RxSlots<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> RxSlots<K> {
    /// How many keys were ever installed here. Replacing a key with one of
    /// the same id and layout changes this and nothing else observable
    /// (diagnostics and the control plane's state snapshot).
    pub fn installs(&self) -> u64 {
        self.next_generation.wrapping_sub(1)
    }
}

/// A received packet that passed the cheap checks and is ready to open.
/// Borrows the slots: open it, then drop it before [`RxSlots::commit`].
pub struct RxPacket<'a, K> {
    key: &'a K,
    nonce: Nonce,
    frame: ParsedFrame,
    ticket: RxTicket,
}

/// What [`RxSlots::commit`] needs to know about an opened packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxTicket {
    key_id: KeyId,
    generation: u64,
    packet_id: RxPacketId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RxPacketId {
    Standard(u32),
    Epoch(EpochPacketId),
}

/// A received packet that decrypted, waiting for [`RxSlots::commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Where the plaintext is in the datagram.
    pub plaintext: Range<usize>,
    pub ticket: RxTicket,
}

/// A received packet that decrypted and passed replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decrypted {
    /// Where the plaintext is in the datagram.
    pub plaintext: Range<usize>,
    pub key_id: KeyId,
    /// A future epoch became current: the sender of this key id should
    /// follow ([`TxSlots::follow_epoch`]).
    pub follow_epoch: Option<u16>,
}

impl<K: AeadKey> RxPacket<'_, K> {
    pub fn header(&self) -> DataHeader {
        self.frame.header()
    }

    /// Authenticates and decrypts in place (`datagram` is the buffer given
    /// to [`RxSlots::prepare`], now writable). Changes no slot state.
    pub fn open(self, datagram: &mut [u8]) -> Result<Opened, DataError> {
        let plaintext = aead_frame::open_in_place(self.key, &self.nonce, &self.frame, datagram)?;
        Ok(Opened { plaintext, ticket: self.ticket })
    }
}

impl<K: AeadKey> RxSlots<K> {
    pub const fn new() -> Self {
        Self { primary: None, secondary: None, next_generation: 1 }
    }

    /// Puts `slot` into `index`, replacing what was there (its replay window
    /// starts empty).
    pub fn install(&mut self, index: SlotIndex, mut slot: RxSlot<K>) {
        slot.generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        match index {
            SlotIndex::Primary => self.primary = Some(slot),
            SlotIndex::Secondary => self.secondary = Some(slot),
        }
    }

    /// SWAP_KEYS. Lookups are by key id, so packets in flight are unaffected.
    pub fn swap(&mut self) {
        core::mem::swap(&mut self.primary, &mut self.secondary);
    }

    fn slot(&self, key_id: KeyId) -> Option<&RxSlot<K>> {
        [self.primary.as_ref(), self.secondary.as_ref()].into_iter().flatten().find(|s| s.key_id == key_id)
    }

    fn slot_mut(&mut self, key_id: KeyId) -> Option<&mut RxSlot<K>> {
        [self.primary.as_mut(), self.secondary.as_mut()].into_iter().flatten().find(|s| s.key_id == key_id)
    }

    /// Step 1 of RX: parse, find the slot by key id and the key by epoch,
    /// and pre-check replay. Reads only.
    pub fn prepare(&self, datagram: &[u8], now_secs: u64) -> Result<RxPacket<'_, K>, DataError> {
        let header = DataHeader::parse(datagram).map_err(FrameError::from)?;
        let slot = self.slot(header.key_id).ok_or(DataError::UnknownKeyId(header.key_id))?;
        let frame = aead_frame::parse(datagram, slot.layout())?;
        let (key, nonce, packet_id) = match (&slot.key, frame.packet_id()) {
            (RxKey::Standard { aead, tail, replay }, WirePacketId::Standard(id)) => {
                replay.check(id, now_secs).map_err(DataError::Replay)?;
                (aead, PacketIv::Standard { packet_id: id, tail }.nonce(), RxPacketId::Standard(id))
            }
            (RxKey::Epoch(rx), WirePacketId::Epoch(raw)) => {
                let id = EpochPacketId::from_wire(raw);
                rx.check(id, now_secs)?;
                let (_, key) = rx.lookup(id.epoch())?;
                (key.key(), PacketIv::Epoch { packet_id: raw, iv: key.iv() }.nonce(), RxPacketId::Epoch(id))
            }
            // parse() was given the slot's own layout.
            _ => return Err(DataError::Frame(FrameError::LengthMismatch)),
        };
        let ticket = RxTicket { key_id: header.key_id, generation: slot.generation, packet_id };
        Ok(RxPacket { key, nonce, frame, ticket })
    }

    /// Step 3 of RX: record the packet id (and promote a future epoch).
    pub fn commit<P: CryptoProvider<Key = K> + ?Sized>(
        &mut self,
        p: &P,
        ticket: &RxTicket,
        now_secs: u64,
    ) -> Result<Option<u16>, DataError> {
        let slot = self.slot_mut(ticket.key_id).ok_or(DataError::KeyReplaced)?;
        if slot.generation != ticket.generation {
            return Err(DataError::KeyReplaced);
        }
        match (&mut slot.key, ticket.packet_id) {
            (RxKey::Standard { replay, .. }, RxPacketId::Standard(id)) => {
                replay.accept(id, now_secs).map_err(DataError::Replay)?;
                Ok(None)
            }
            (RxKey::Epoch(rx), RxPacketId::Epoch(id)) => match rx.accept(p, id, now_secs)? {
                EpochAccepted::Same => Ok(None),
                EpochAccepted::Promoted(epoch) => Ok(Some(epoch)),
            },
            _ => Err(DataError::KeyReplaced),
        }
    }

    /// All of RX for one datagram, for callers that hold the RX lock
    /// throughout: prepare, open in place, commit.
    pub fn decrypt<P: CryptoProvider<Key = K> + ?Sized>(
        &mut self,
        p: &P,
        datagram: &mut [u8],
        now_secs: u64,
    ) -> Result<Decrypted, DataError> {
        let opened = self.prepare(datagram, now_secs)?.open(datagram)?;
        let follow_epoch = self.commit(p, &opened.ticket, now_secs)?;
        Ok(Decrypted { plaintext: opened.plaintext, key_id: opened.ticket.key_id, follow_epoch })
    }
}

/// Both directions of a peer's key slots, for single-threaded callers.
pub struct KeySlots<K> {
    pub tx: TxSlots<K>,
    pub rx: RxSlots<K>,
}

impl<K: AeadKey> Default for KeySlots<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: AeadKey> KeySlots<K> {
    pub const fn new() -> Self {
        Self { tx: TxSlots::new(), rx: RxSlots::new() }
    }

    /// NEW_KEY: creates the slot and puts it into `index`. On error nothing
    /// changes.
    pub fn install<P: CryptoProvider<Key = K> + ?Sized>(
        &mut self,
        p: &P,
        index: SlotIndex,
        new: &NewKey<'_>,
    ) -> Result<(), InstallError> {
        let slot = new_slot(p, new)?;
        self.tx.install(index, slot.tx);
        self.rx.install(index, slot.rx);
        Ok(())
    }

    /// SWAP_KEYS.
    pub fn swap(&mut self) {
        self.tx.swap();
        self.rx.swap();
    }

    /// Receives one datagram; an epoch promotion moves the sender along.
    pub fn decrypt<P: CryptoProvider<Key = K> + ?Sized>(
        &mut self,
        p: &P,
        datagram: &mut [u8],
        now_secs: u64,
    ) -> Result<Decrypted, DataError> {
        let d = self.rx.decrypt(p, datagram, now_secs)?;
        if let Some(epoch) = d.follow_epoch {
            self.tx.follow_epoch(p, d.key_id, epoch)?;
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::host::{HostCrypto, HostKey};
    use crate::proto::epoch::FUTURE_EPOCH_KEYS;
    use proptest::prelude::*;

    const PING: [u8; 16] =
        [0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48];

    fn kid(n: u8) -> KeyId {
        KeyId::new(n).unwrap()
    }

    fn peer() -> PeerId {
        PeerId::new(7).unwrap()
    }

    /// Two ends of a tunnel with the given key installed in `index`.
    fn pair(
        layout: Layout,
        cipher: Cipher,
        key_len: usize,
        id: u8,
        seed: u8,
    ) -> (KeySlots<HostKey>, KeySlots<HostKey>) {
        let a_key = [seed; 32];
        let b_key = [seed.wrapping_add(1); 32];
        let a = DirectionKey { key: &a_key, key_len, nonce_tail: [seed; 8] };
        let b = DirectionKey { key: &b_key, key_len, nonce_tail: [seed ^ 0xff; 8] };
        let mut client = KeySlots::new();
        let mut server = KeySlots::new();
        client
            .install(
                &HostCrypto,
                SlotIndex::Primary,
                &NewKey { key_id: kid(id), cipher, layout, encrypt: a, decrypt: b },
            )
            .unwrap();
        server
            .install(
                &HostCrypto,
                SlotIndex::Primary,
                &NewKey { key_id: kid(id), cipher, layout, encrypt: b, decrypt: a },
            )
            .unwrap();
        (client, server)
    }

    fn send(from: &mut KeySlots<HostKey>, payload: &[u8]) -> std::vec::Vec<u8> {
        let mut buf = [0u8; 256];
        let n = from.tx.encrypt_from(&HostCrypto, peer(), payload, &mut buf).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn both_layouts_round_trip_for_every_cipher() {
        for layout in [Layout::Standard, Layout::Epoch] {
            for (cipher, len) in
                [(Cipher::AesGcm, 16), (Cipher::AesGcm, 24), (Cipher::AesGcm, 32), (Cipher::ChaCha20Poly1305, 32)]
            {
                let (mut c, mut s) = pair(layout, cipher, len, 2, 9);
                for i in 0..3u8 {
                    let mut dg = send(&mut c, &[i; 40]);
                    assert_eq!(dg[0], 0x4a);
                    let d = s.decrypt(&HostCrypto, &mut dg, 0).unwrap();
                    assert_eq!(dg[d.plaintext.clone()], [i; 40]);
                    assert_eq!(d.key_id, kid(2));
                    // And back, in place.
                    let mut buf = [0u8; 128];
                    let head = s.tx.layout().unwrap().head_room();
                    buf[head..head + 16].copy_from_slice(&PING);
                    let n = s.tx.encrypt_in_place(&HostCrypto, peer(), &mut buf, 16).unwrap();
                    let d = c.decrypt(&HostCrypto, &mut buf[..n], 0).unwrap();
                    assert_eq!(buf[d.plaintext], PING);
                }
            }
        }
    }

    #[test]
    fn install_swap_and_lookup_by_key_id() {
        let (mut c, mut s) = pair(Layout::Standard, Cipher::AesGcm, 16, 0, 1);
        // Renegotiated key 1 goes to SECONDARY on both ends, then they swap.
        let (k1a, k1b) = ([0x31; 32], [0x32; 32]);
        let a = DirectionKey { key: &k1a, key_len: 32, nonce_tail: [1; 8] };
        let b = DirectionKey { key: &k1b, key_len: 32, nonce_tail: [2; 8] };
        c.install(
            &HostCrypto,
            SlotIndex::Secondary,
            &NewKey { key_id: kid(1), cipher: Cipher::AesGcm, layout: Layout::Epoch, encrypt: a, decrypt: b },
        )
        .unwrap();
        s.install(
            &HostCrypto,
            SlotIndex::Secondary,
            &NewKey { key_id: kid(1), cipher: Cipher::AesGcm, layout: Layout::Epoch, encrypt: b, decrypt: a },
        )
        .unwrap();
        let mut old = send(&mut c, b"old key");
        assert_eq!(old[0] & 7, 0);
        c.swap();
        assert_eq!(c.tx.layout(), Ok(Layout::Epoch));
        let mut new = send(&mut c, b"new key");
        assert_eq!(new[0] & 7, 1);
        // The server has not swapped yet: RX goes by key id, not slot.
        assert!(s.decrypt(&HostCrypto, &mut new, 0).is_ok());
        assert!(s.decrypt(&HostCrypto, &mut old, 0).is_ok());
        // Replacing the server's primary slot (key 0) drops key 0.
        s.install(
            &HostCrypto,
            SlotIndex::Primary,
            &NewKey { key_id: kid(3), cipher: Cipher::AesGcm, layout: Layout::Standard, encrypt: a, decrypt: b },
        )
        .unwrap();
        let mut again = send(&mut c, b"x");
        c.swap();
        let mut stale = send(&mut c, b"y");
        assert!(s.decrypt(&HostCrypto, &mut again, 0).is_ok());
        assert_eq!(s.decrypt(&HostCrypto, &mut stale, 0), Err(DataError::UnknownKeyId(kid(0))));
    }

    #[test]
    fn tx_without_primary_fails() {
        let mut slots: KeySlots<HostKey> = KeySlots::new();
        let mut buf = [0u8; 64];
        assert_eq!(slots.tx.encrypt_from(&HostCrypto, peer(), b"hi", &mut buf), Err(DataError::NoPrimaryKey));
        assert_eq!(slots.tx.layout(), Err(DataError::NoPrimaryKey));
        let k = [1; 32];
        let d = DirectionKey { key: &k, key_len: 16, nonce_tail: [0; 8] };
        slots
            .install(
                &HostCrypto,
                SlotIndex::Secondary,
                &NewKey { key_id: kid(0), cipher: Cipher::AesGcm, layout: Layout::Standard, encrypt: d, decrypt: d },
            )
            .unwrap();
        assert_eq!(slots.tx.encrypt_from(&HostCrypto, peer(), b"hi", &mut buf), Err(DataError::NoPrimaryKey));
        let bad = DirectionKey { key: &k, key_len: 20, nonce_tail: [0; 8] };
        assert_eq!(
            slots.install(
                &HostCrypto,
                SlotIndex::Primary,
                &NewKey { key_id: kid(0), cipher: Cipher::AesGcm, layout: Layout::Standard, encrypt: bad, decrypt: d }
            ),
            Err(InstallError::BadKeyLength)
        );
        assert_eq!(
            slots.install(
                &HostCrypto,
                SlotIndex::Primary,
                &NewKey {
                    key_id: kid(0),
                    cipher: Cipher::ChaCha20Poly1305,
                    layout: Layout::Epoch,
                    encrypt: d,
                    decrypt: d
                }
            ),
            Err(InstallError::BadKeyLength)
        );
    }

    #[test]
    fn wrong_key_id_fails() {
        let (mut c, mut s) = pair(Layout::Standard, Cipher::AesGcm, 16, 4, 1);
        let mut dg = send(&mut c, b"hello");
        dg[0] = 0x48 | 5;
        assert_eq!(s.decrypt(&HostCrypto, &mut dg, 0), Err(DataError::UnknownKeyId(kid(5))));
    }

    #[test]
    fn tampered_packet_fails_without_changing_replay_state() {
        for layout in [Layout::Standard, Layout::Epoch] {
            let (mut c, mut s) = pair(layout, Cipher::AesGcm, 32, 1, 5);
            let good = send(&mut c, b"payload");
            let mut bad = good.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert_eq!(s.decrypt(&HostCrypto, &mut bad, 0), Err(DataError::AuthFailed));
            let mut dg = good.clone();
            assert!(s.decrypt(&HostCrypto, &mut dg, 0).is_ok());
            let mut dg = good.clone();
            assert_eq!(s.decrypt(&HostCrypto, &mut dg, 0), Err(DataError::Replay(ReplayError::Replayed)));
        }
    }

    #[test]
    fn commit_after_a_key_replacement_is_refused() {
        let (mut c, mut s) = pair(Layout::Standard, Cipher::AesGcm, 16, 0, 1);
        let mut dg = send(&mut c, b"in flight");
        let opened = s.rx.prepare(&dg, 0).unwrap().open(&mut dg.clone()).unwrap();
        let k = [9; 32];
        let d = DirectionKey { key: &k, key_len: 16, nonce_tail: [0; 8] };
        s.install(
            &HostCrypto,
            SlotIndex::Primary,
            &NewKey { key_id: kid(0), cipher: Cipher::AesGcm, layout: Layout::Standard, encrypt: d, decrypt: d },
        )
        .unwrap();
        assert_eq!(s.rx.commit(&HostCrypto, &opened.ticket, 0), Err(DataError::KeyReplaced));
        assert_eq!(s.decrypt(&HostCrypto, &mut dg, 0), Err(DataError::AuthFailed));
    }

    #[test]
    fn peer_epoch_jump_moves_our_sender() {
        let (mut c, mut s) = pair(Layout::Epoch, Cipher::AesGcm, 16, 0, 3);
        // The client's sender is forced through N epochs; every packet lost.
        for _ in 0..FUTURE_EPOCH_KEYS {
            let Some(TxSlot { key: TxKey::Epoch(tx), .. }) = c.tx.primary.as_mut() else { panic!() };
            tx.set_usage_for_test(crate::proto::packet_id::EPOCH_COUNTER_MAX, 0);
            send(&mut c, b"lost");
        }
        let mut dg = send(&mut c, b"arrives");
        let d = s.decrypt(&HostCrypto, &mut dg, 0).unwrap();
        let epoch = 1 + FUTURE_EPOCH_KEYS as u16;
        assert_eq!(d.follow_epoch, Some(epoch));
        // The server now sends in that epoch, counter 1, and the client reads it.
        let mut reply = send(&mut s, b"reply");
        assert_eq!(reply[4..12], EpochPacketId::new(epoch, 1).unwrap().to_be_bytes());
        let d = c.decrypt(&HostCrypto, &mut reply, 0).unwrap();
        assert_eq!(d.follow_epoch, Some(epoch));
        assert_eq!(reply[d.plaintext], *b"reply");
    }

    #[test]
    fn standard_packet_ids_run_out() {
        let (mut c, _) = pair(Layout::Standard, Cipher::AesGcm, 16, 0, 1);
        let Some(TxSlot { key: TxKey::Standard { packet_ids, .. }, .. }) = c.tx.primary.as_mut() else { panic!() };
        *packet_ids = PacketIdSender::starting_at(crate::proto::packet_id::PACKET_ID_TX_LIMIT - 1).unwrap();
        let mut buf = [0u8; 64];
        assert!(c.tx.encrypt_from(&HostCrypto, peer(), b"last", &mut buf).is_ok());
        assert_eq!(c.tx.encrypt_from(&HostCrypto, peer(), b"one more", &mut buf), Err(DataError::PacketIdExhausted));
    }

    proptest! {
        #[test]
        fn random_datagrams_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..96), epoch in any::<bool>()) {
            let layout = if epoch { Layout::Epoch } else { Layout::Standard };
            let (_, mut s) = pair(layout, Cipher::ChaCha20Poly1305, 32, 0, 1);
            if let Some(b) = bytes.first_mut() { *b = 0x48 | (*b & 7); }
            let r = s.decrypt(&HostCrypto, &mut bytes, 0);
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn every_truncation_of_a_real_packet_is_its_own_error() {
        for layout in [Layout::Standard, Layout::Epoch] {
            let (mut c, mut s) = pair(layout, Cipher::AesGcm, 16, 0, 1);
            let dg = send(&mut c, &[0x55; 35]);
            let frame_len = layout.head_room() + layout.tail_room();
            for cut in 0..dg.len() {
                let want = if cut < frame_len {
                    // Shorter than header + packet id + tag (4 bytes cover
                    // the header, so the key id is still looked up first).
                    DataError::Frame(FrameError::Truncated)
                } else if cut < layout.min_datagram_len() {
                    // Epoch: header, id and tag but not one payload byte.
                    DataError::Frame(FrameError::EmptyPayload)
                } else {
                    // Long enough to parse: the tag no longer matches.
                    DataError::AuthFailed
                };
                let mut cut_dg = dg[..cut].to_vec();
                assert_eq!(
                    s.decrypt(&HostCrypto, &mut cut_dg, 0),
                    Err(want),
                    "{layout:?}, {cut} of {} bytes",
                    dg.len()
                );
            }
            // None of it touched the replay window: the whole packet is new.
            let mut whole = dg.clone();
            let plaintext = s.decrypt(&HostCrypto, &mut whole, 0).unwrap().plaintext;
            assert_eq!(whole[plaintext], [0x55; 35]);
        }
    }
}
