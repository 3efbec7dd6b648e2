//! Epoch data keys (OpenVPN 2.7 `crypto_epoch.c`, ovpn-dco-win ≥ 2.8): the
//! key schedule and the per-direction state of one key slot.
//!
//! Each direction starts from a 32-byte secret E_1 (OVPN_KEY_DIRECTION.Key)
//! and walks the chain E_n → E_{n+1}; every E_n gives a data key K_n and an
//! implicit IV IV_n (see [`crate::crypto::kdf`]).
//!
//! **Sender** ([`EpochSender`]): one current key and its counter (1, 2, …).
//! Before each packet it moves to the next epoch when the AES-GCM usage
//! limit would be passed or the 48-bit counter is spent.
//!
//! **Receiver** ([`EpochReceiver`]): the current key, one retiring key (the
//! previous current one, with its own replay window) and the keys of the next
//! [`FUTURE_EPOCH_KEYS`] epochs. An authenticated packet of a future epoch
//! makes that key current; the caller then lets the sender follow
//! ([`EpochSender::follow`]).
//!
//! **Cost.** Key derivation runs HKDF and creates CNG key objects (which
//! allocate): control-plane work. On the data path it happens only on an
//! epoch change: a sender rotation derives one key; a receiver promotion
//! derives at most [`FUTURE_EPOCH_KEYS`] keys, and the sender follow at most
//! [`FUTURE_EPOCH_KEYS`] secret steps and one key. Every other packet touches
//! no allocator.
//!
//! **Locking.** Both types are plain values mutated through `&mut self`: in
//! the kernel the sender sits under the peer's TX lock and the receiver under
//! its RX lock. Only the AEAD operation itself needs no lock beyond keeping
//! the key alive (`&EpochDataKey`, the key objects are `Sync`).

use core::fmt;
use core::sync::atomic::{Ordering, compiler_fence};

use super::aead_frame::{EPOCH_HEAD_ROOM, EpochIv};
use super::packet_id::{EPOCH_COUNTER_MAX, EpochPacketId};
use super::replay::{EpochReplayWindow, ReplayError};
use crate::crypto::kdf::{self, EPOCH_SECRET_LEN, KdfError};
use crate::crypto::{AeadKey, Cipher, CryptoError, CryptoProvider};

/// Future epochs a receiver holds keys for.
///
/// OpenVPN ssl.c `init_epoch_keys`: `future_key_count = 4` since commit
/// 360e3c1a "Reduce number of future epoch keys from 16 to 4" (16 in
/// 2.7.0–2.7.6); ovpn-dco-win crypto_epoch.h `FUTURE_EPOCH_KEYS_COUNT 4`.
/// One epoch lasts about 2^36 blocks (~1 TiB), so four epochs of total loss
/// never happen; a peer with 16 still only ever moves one epoch at a time.
pub const FUTURE_EPOCH_KEYS: usize = 4;

/// Highest epoch a receiver accepts as a future epoch.
///
/// OpenVPN crypto_epoch.c `epoch_lookup_decrypt_key` stops returning future
/// keys above `UINT16_MAX - epoch_data_keys_future_count - 1`, so that the
/// window never has to slide past the last epoch.
pub const LAST_FUTURE_EPOCH: u16 = u16::MAX - FUTURE_EPOCH_KEYS as u16 - 1;

/// AES-GCM usage limit, packets + plaintext blocks per key: q + s ≤ 2^36 − 1.
///
/// OpenVPN crypto.c `cipher_get_aead_limits` (from draft-irtf-cfrg-aead-limits
/// with p = 2^-57); 0 (none) for ChaCha20-Poly1305.
pub const AES_GCM_USAGE_LIMIT: u64 = (1 << 36) - 1;

/// Block size for the usage count (OpenVPN crypto.h `AEAD_LIMIT_BLOCKSIZE`).
pub const AEAD_LIMIT_BLOCK_SIZE: u64 = 16;

/// Why epoch key work failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochError {
    /// HKDF-Expand-Label refused or failed.
    Kdf(KdfError),
    /// Creating the key object failed.
    Crypto(CryptoError),
    /// The sender needs a new epoch but is at epoch 0xFFFF: only a
    /// renegotiation (a new key slot) helps.
    EpochsExhausted,
    /// The epoch is neither current, retiring nor an accepted future epoch.
    UnknownEpoch(u16),
    /// The packet id failed the replay window of its epoch.
    Replay(ReplayError),
}

impl From<KdfError> for EpochError {
    fn from(e: KdfError) -> Self {
        EpochError::Kdf(e)
    }
}

impl From<CryptoError> for EpochError {
    fn from(e: CryptoError) -> Self {
        EpochError::Crypto(e)
    }
}

/// Cipher and key length of one key slot (OVPN_CIPHER_ALG, KeyLen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochCipher {
    cipher: Cipher,
    key_len: usize,
}

impl EpochCipher {
    /// `None` if the key length does not fit the cipher.
    pub const fn new(cipher: Cipher, key_len: usize) -> Option<Self> {
        if cipher.accepts_key_len(key_len) { Some(Self { cipher, key_len }) } else { None }
    }

    pub const fn cipher(self) -> Cipher {
        self.cipher
    }

    /// Packets + blocks one key may protect, `None` if unlimited.
    pub const fn usage_limit(self) -> Option<u64> {
        match self.cipher {
            Cipher::AesGcm => Some(AES_GCM_USAGE_LIMIT),
            Cipher::ChaCha20Poly1305 => None,
        }
    }
}

/// E_n with its epoch number. Wiped when dropped.
struct EpochSecret {
    epoch: u16,
    secret: kdf::EpochSecret,
}

impl EpochSecret {
    fn first(secret: &kdf::EpochSecret) -> Self {
        Self { epoch: 1, secret: *secret }
    }

    /// E_{n+1}.
    fn next<P: CryptoProvider + ?Sized>(&self, p: &P) -> Result<Self, EpochError> {
        let epoch = self.epoch.checked_add(1).ok_or(EpochError::EpochsExhausted)?;
        Ok(Self { epoch, secret: kdf::next_epoch_secret(p, &self.secret)? })
    }
}

impl Drop for EpochSecret {
    fn drop(&mut self) {
        self.secret.fill(0);
        // Keep the wipe from being dropped as a dead store.
        compiler_fence(Ordering::SeqCst);
    }
}

/// The data key of one epoch: key object and implicit IV.
pub struct EpochDataKey<K> {
    epoch: u16,
    key: K,
    iv: EpochIv,
}

impl<K: AeadKey> EpochDataKey<K> {
    fn derive<P: CryptoProvider<Key = K> + ?Sized>(
        p: &P,
        cipher: EpochCipher,
        e: &EpochSecret,
    ) -> Result<Self, EpochError> {
        let raw = kdf::data_key(p, &e.secret, cipher.key_len)?;
        let key = p.new_key(cipher.cipher, raw.as_bytes())?;
        let iv = EpochIv(kdf::data_iv(p, &e.secret)?);
        Ok(Self { epoch: e.epoch, key, iv })
    }

    pub fn epoch(&self) -> u16 {
        self.epoch
    }

    pub fn key(&self) -> &K {
        &self.key
    }

    pub fn iv(&self) -> &EpochIv {
        &self.iv
    }
}

impl<K> fmt::Debug for EpochDataKey<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EpochDataKey(epoch {})", self.epoch)
    }
}

/// Blocks one packet counts against the usage limit: OpenVPN crypto.c
/// `openvpn_encrypt_aead` counts the work buffer before the tag, i.e.
/// header + packet id + ciphertext, rounded up to whole blocks.
fn packet_blocks(plaintext_len: usize) -> u64 {
    let bytes = (plaintext_len as u64).saturating_add(EPOCH_HEAD_ROOM as u64);
    bytes.div_ceil(AEAD_LIMIT_BLOCK_SIZE)
}

/// The send half of an epoch key slot.
pub struct EpochSender<K> {
    cipher: EpochCipher,
    secret: EpochSecret,
    key: EpochDataKey<K>,
    /// Counter of the last packet sent in this epoch; 0 before the first.
    last_counter: u64,
    /// Plaintext blocks (OpenVPN's count, see [`packet_blocks`]) under `key`.
    plaintext_blocks: u64,
}

impl<K: AeadKey> EpochSender<K> {
    /// Starts at epoch 1 from E_1. Control path.
    pub fn new<P: CryptoProvider<Key = K> + ?Sized>(
        p: &P,
        cipher: EpochCipher,
        e1: &[u8; EPOCH_SECRET_LEN],
    ) -> Result<Self, EpochError> {
        let secret = EpochSecret::first(e1);
        let key = EpochDataKey::derive(p, cipher, &secret)?;
        Ok(Self { cipher, secret, key, last_counter: 0, plaintext_blocks: 0 })
    }

    pub fn epoch(&self) -> u16 {
        self.key.epoch
    }

    /// Claims the packet id for one packet of `plaintext_len` bytes and
    /// returns it with the key to seal it. Moves to the next epoch first
    /// when the current key is used up (OpenVPN crypto_epoch.c
    /// `epoch_check_send_iterate`: usage limit or counter at
    /// `PACKET_ID_EPOCH_MAX`); that rotation derives one key.
    ///
    /// At epoch 0xFFFF a used-up key is an error rather than (as OpenVPN
    /// does) carrying on past the AES-GCM limit.
    pub fn next_packet<P: CryptoProvider<Key = K> + ?Sized>(
        &mut self,
        p: &P,
        plaintext_len: usize,
    ) -> Result<(EpochPacketId, &EpochDataKey<K>), EpochError> {
        if self.used_up() {
            self.rotate(p)?;
        }
        let counter = self.last_counter + 1; // used_up() guarantees < EPOCH_COUNTER_MAX + 1
        let id = EpochPacketId::new(self.key.epoch, counter).ok_or(EpochError::EpochsExhausted)?;
        self.last_counter = counter;
        self.plaintext_blocks = self.plaintext_blocks.saturating_add(packet_blocks(plaintext_len));
        Ok((id, &self.key))
    }

    /// Moves the send key up to `epoch` if it is behind (the receiver
    /// authenticated a packet of that epoch). Returns whether it moved.
    /// Bounded: at most [`FUTURE_EPOCH_KEYS`] steps, as the receiver never
    /// accepts an epoch further ahead of the sender than that.
    pub fn follow<P: CryptoProvider<Key = K> + ?Sized>(&mut self, p: &P, epoch: u16) -> Result<bool, EpochError> {
        let Some(steps) = epoch.checked_sub(self.secret.epoch) else { return Ok(false) };
        if steps == 0 {
            return Ok(false);
        }
        if usize::from(steps) > FUTURE_EPOCH_KEYS {
            return Err(EpochError::UnknownEpoch(epoch));
        }
        let mut secret = self.secret.next(p)?;
        while secret.epoch < epoch {
            secret = secret.next(p)?;
        }
        self.install(p, secret)?;
        Ok(true)
    }

    fn used_up(&self) -> bool {
        let over_limit = self
            .cipher
            .usage_limit()
            .is_some_and(|limit| self.plaintext_blocks.saturating_add(self.last_counter) > limit);
        over_limit || self.last_counter >= EPOCH_COUNTER_MAX
    }

    fn rotate<P: CryptoProvider<Key = K> + ?Sized>(&mut self, p: &P) -> Result<(), EpochError> {
        let next = self.secret.next(p)?;
        self.install(p, next)
    }

    /// Derives the key of `secret` and restarts the counter. On failure
    /// nothing changes.
    fn install<P: CryptoProvider<Key = K> + ?Sized>(&mut self, p: &P, secret: EpochSecret) -> Result<(), EpochError> {
        let key = EpochDataKey::derive(p, self.cipher, &secret)?;
        self.secret = secret;
        self.key = key;
        self.last_counter = 0;
        self.plaintext_blocks = 0;
        Ok(())
    }

    /// Test hook: pretend `last_counter` packets and `plaintext_blocks` blocks
    /// were sent under the current key.
    #[cfg(test)]
    pub(crate) fn set_usage_for_test(&mut self, last_counter: u64, plaintext_blocks: u64) {
        self.last_counter = last_counter;
        self.plaintext_blocks = plaintext_blocks;
    }
}

/// Which receive key an epoch maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochRole {
    Current,
    Retiring,
    /// A key of an epoch ahead of the current one: accepting a packet of it
    /// promotes it.
    Future,
}

/// A receive key with the replay window that polices it.
struct RxKey<K> {
    key: EpochDataKey<K>,
    replay: EpochReplayWindow,
}

/// The receive half of an epoch key slot.
pub struct EpochReceiver<K> {
    cipher: EpochCipher,
    /// E of the highest epoch a key was derived for.
    highest: EpochSecret,
    current: RxKey<K>,
    retiring: Option<RxKey<K>>,
    /// `future[i]` holds epoch `current + 1 + i`; `None` past
    /// [`LAST_FUTURE_EPOCH`].
    future: [Option<EpochDataKey<K>>; FUTURE_EPOCH_KEYS],
}

/// What [`EpochReceiver::accept`] did besides recording the packet id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochAccepted {
    /// The packet belonged to the current or the retiring key.
    Same,
    /// The packet's future epoch became current; the sender should follow.
    Promoted(u16),
}

impl<K: AeadKey> EpochReceiver<K> {
    /// Starts at epoch 1 from E_1, with the future keys of epochs
    /// 2..=1+[`FUTURE_EPOCH_KEYS`]. Control path.
    pub fn new<P: CryptoProvider<Key = K> + ?Sized>(
        p: &P,
        cipher: EpochCipher,
        e1: &[u8; EPOCH_SECRET_LEN],
    ) -> Result<Self, EpochError> {
        let first = EpochSecret::first(e1);
        let key = EpochDataKey::derive(p, cipher, &first)?;
        let mut future: [Option<EpochDataKey<K>>; FUTURE_EPOCH_KEYS] = [const { None }; FUTURE_EPOCH_KEYS];
        let highest = Self::derive_future(p, cipher, first, &mut future)?;
        Ok(Self { cipher, highest, current: RxKey { key, replay: EpochReplayWindow::new() }, retiring: None, future })
    }

    pub fn current_epoch(&self) -> u16 {
        self.current.key.epoch
    }

    /// The key for packets of `epoch`. Read-only: safe to call before the
    /// packet is authenticated.
    pub fn lookup(&self, epoch: u16) -> Result<(EpochRole, &EpochDataKey<K>), EpochError> {
        let cur = self.current.key.epoch;
        if epoch == cur {
            return Ok((EpochRole::Current, &self.current.key));
        }
        if let Some(r) = self.retiring.as_ref().filter(|r| r.key.epoch == epoch) {
            return Ok((EpochRole::Retiring, &r.key));
        }
        if epoch > cur && epoch <= LAST_FUTURE_EPOCH {
            let index = usize::from(epoch - cur - 1);
            if let Some(Some(k)) = self.future.get(index) {
                return Ok((EpochRole::Future, k));
            }
        }
        Err(EpochError::UnknownEpoch(epoch))
    }

    /// Replay pre-check of `id` against the window of its epoch, before the
    /// AEAD runs. A future epoch's window is still empty.
    pub fn check(&self, id: EpochPacketId, now_secs: u64) -> Result<EpochRole, EpochError> {
        let (role, _) = self.lookup(id.epoch())?;
        let result = match role {
            EpochRole::Current => self.current.replay.check(id.counter(), now_secs),
            EpochRole::Retiring => match &self.retiring {
                Some(r) => r.replay.check(id.counter(), now_secs),
                None => return Err(EpochError::UnknownEpoch(id.epoch())),
            },
            EpochRole::Future => EpochReplayWindow::new().check(id.counter(), now_secs),
        };
        result.map_err(EpochError::Replay)?;
        Ok(role)
    }

    /// Records an authenticated packet id. A future epoch becomes current
    /// first (OpenVPN crypto.c `crypto_check_replay` →
    /// `epoch_replace_update_recv_key`): the current key retires with its
    /// window, the old retiring key is dropped and the future keys are
    /// topped up, deriving at most [`FUTURE_EPOCH_KEYS`] keys. If that
    /// derivation fails nothing changes.
    pub fn accept<P: CryptoProvider<Key = K> + ?Sized>(
        &mut self,
        p: &P,
        id: EpochPacketId,
        now_secs: u64,
    ) -> Result<EpochAccepted, EpochError> {
        let epoch = id.epoch();
        let (role, _) = self.lookup(epoch)?;
        let counter = id.counter();
        match role {
            EpochRole::Current => {
                self.current.replay.accept(counter, now_secs).map_err(EpochError::Replay)?;
                Ok(EpochAccepted::Same)
            }
            EpochRole::Retiring => {
                let r = self.retiring.as_mut().ok_or(EpochError::UnknownEpoch(epoch))?;
                r.replay.accept(counter, now_secs).map_err(EpochError::Replay)?;
                Ok(EpochAccepted::Same)
            }
            EpochRole::Future => {
                // A fresh window rejects only what it would reject after the
                // promotion: check first so a bad id changes no keys.
                EpochReplayWindow::new().check(counter, now_secs).map_err(EpochError::Replay)?;
                self.promote(p, epoch)?;
                self.current.replay.accept(counter, now_secs).map_err(EpochError::Replay)?;
                Ok(EpochAccepted::Promoted(epoch))
            }
        }
    }

    /// Makes future `epoch` current.
    fn promote<P: CryptoProvider<Key = K> + ?Sized>(&mut self, p: &P, epoch: u16) -> Result<(), EpochError> {
        let ahead = epoch.checked_sub(self.current.key.epoch).ok_or(EpochError::UnknownEpoch(epoch))?;
        let shift = usize::from(ahead);
        if shift == 0 || shift > FUTURE_EPOCH_KEYS {
            return Err(EpochError::UnknownEpoch(epoch));
        }
        // Derive the keys that slide into the window before touching state.
        let mut fresh: [Option<EpochDataKey<K>>; FUTURE_EPOCH_KEYS] = [const { None }; FUTURE_EPOCH_KEYS];
        let mut highest = EpochSecret { epoch: self.highest.epoch, secret: self.highest.secret };
        for slot in fresh.iter_mut().take(shift) {
            if highest.epoch >= LAST_FUTURE_EPOCH {
                break;
            }
            highest = highest.next(p)?;
            *slot = Some(EpochDataKey::derive(p, self.cipher, &highest)?);
        }
        let new_current =
            self.future.get_mut(shift - 1).and_then(Option::take).ok_or(EpochError::UnknownEpoch(epoch))?;
        self.future.rotate_left(shift);
        // The last `shift` entries are the emptied ones; refill them in order.
        for (dst, src) in self.future.iter_mut().skip(FUTURE_EPOCH_KEYS - shift).zip(fresh.iter_mut()) {
            *dst = src.take();
        }
        self.highest = highest;
        let old = core::mem::replace(&mut self.current, RxKey { key: new_current, replay: EpochReplayWindow::new() });
        self.retiring = Some(old);
        Ok(())
    }

    /// Fills `future` with the epochs after `from` and returns the secret
    /// of the highest one derived.
    fn derive_future<P: CryptoProvider<Key = K> + ?Sized>(
        p: &P,
        cipher: EpochCipher,
        from: EpochSecret,
        future: &mut [Option<EpochDataKey<K>>; FUTURE_EPOCH_KEYS],
    ) -> Result<EpochSecret, EpochError> {
        let mut highest = from;
        for slot in future.iter_mut() {
            if highest.epoch >= LAST_FUTURE_EPOCH {
                break;
            }
            highest = highest.next(p)?;
            *slot = Some(EpochDataKey::derive(p, cipher, &highest)?);
        }
        Ok(highest)
    }

    /// Test hook: a receiver whose current epoch is `epoch`, as if promoted
    /// there step by step (for the edge near 0xFFFF).
    #[cfg(test)]
    pub(crate) fn starting_at_for_test<P: CryptoProvider<Key = K> + ?Sized>(
        p: &P,
        cipher: EpochCipher,
        e1: &[u8; EPOCH_SECRET_LEN],
        epoch: u16,
    ) -> Result<Self, EpochError> {
        let mut s = EpochSecret::first(e1);
        while s.epoch < epoch {
            s = s.next(p)?;
        }
        let key = EpochDataKey::derive(p, cipher, &s)?;
        let mut future: [Option<EpochDataKey<K>>; FUTURE_EPOCH_KEYS] = [const { None }; FUTURE_EPOCH_KEYS];
        let highest = Self::derive_future(p, cipher, s, &mut future)?;
        Ok(Self { cipher, highest, current: RxKey { key, replay: EpochReplayWindow::new() }, retiring: None, future })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::host::HostCrypto;
    use crate::proto::aead_frame::{self, Layout, PacketIv, WirePacketId};
    use crate::proto::opcode::DataHeader;
    use crate::proto::{KeyId, PeerId};

    fn hex<const N: usize>(s: &str) -> [u8; N] {
        let v: std::vec::Vec<u8> =
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect();
        v.try_into().unwrap()
    }

    const PING: [u8; 16] =
        [0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48];

    fn aes256() -> EpochCipher {
        EpochCipher::new(Cipher::AesGcm, 32).unwrap()
    }

    fn hdr() -> DataHeader {
        DataHeader { key_id: KeyId::new(0).unwrap(), peer_id: PeerId::new(0).unwrap() }
    }

    /// Seals one ping with the sender; returns the datagram.
    fn send(tx: &mut EpochSender<crate::crypto::host::HostKey>) -> std::vec::Vec<u8> {
        let (id, key) = tx.next_packet(&HostCrypto, PING.len()).unwrap();
        let mut buf = [0u8; 64];
        let iv = PacketIv::Epoch { packet_id: id.get(), iv: key.iv() };
        let n = aead_frame::seal_from(key.key(), &iv, hdr(), &PING, &mut buf).unwrap();
        buf[..n].to_vec()
    }

    /// Receives a datagram the way the slot layer does.
    fn recv(rx: &mut EpochReceiver<crate::crypto::host::HostKey>, dg: &mut [u8]) -> Result<EpochAccepted, EpochError> {
        let f = aead_frame::parse(dg, Layout::Epoch).unwrap();
        let WirePacketId::Epoch(raw) = f.packet_id() else { panic!() };
        let id = EpochPacketId::from_wire(raw);
        rx.check(id, 0)?;
        let (_, key) = rx.lookup(id.epoch())?;
        let nonce = PacketIv::Epoch { packet_id: raw, iv: key.iv() }.nonce();
        let pt = aead_frame::open_in_place(key.key(), &nonce, &f, dg).unwrap();
        assert_eq!(dg[pt], PING);
        rx.accept(&HostCrypto, id, 0)
    }

    #[test]
    fn epoch_one_keys_match_the_openvpn_capture() {
        // ovpn-dco-interface.md "Wire format": E1 → key, iv; the sender's
        // fifth packet re-encrypts to the captured 44 bytes.
        for (cipher, e1, wire) in [
            (
                Cipher::AesGcm,
                "d2ede5aa88ece3bab02fcda255b42f176544c777e6e102ffec5dc5d16b907e9a",
                "480000000001000000000005ab6174db06a3dd414aa8002e4a2197403aeeb6a61f3f80785fe62597b6b2bbd8",
            ),
            (
                Cipher::ChaCha20Poly1305,
                "e3817ac508afd53898a1870be7419a67f9abfa81f244716483c49e48bd42bc85",
                "48000000000100000000000535c27d2b24813e5be085cc9a3953815b119f03de4ca6e32eba076e207697adaf",
            ),
        ] {
            let c = EpochCipher::new(cipher, 32).unwrap();
            let e1: [u8; 32] = hex(e1);
            let wire: [u8; 44] = hex(wire);
            let mut tx = EpochSender::new(&HostCrypto, c, &e1).unwrap();
            if cipher == Cipher::AesGcm {
                assert_eq!(tx.key.iv().0, hex::<12>("26a042d34a89d91e50050bc3"));
            }
            tx.set_usage_for_test(4, 0);
            assert_eq!(send(&mut tx), wire);

            let mut rx = EpochReceiver::new(&HostCrypto, c, &e1).unwrap();
            let mut dg = wire;
            assert_eq!(recv(&mut rx, &mut dg), Ok(EpochAccepted::Same));
            let mut dg = wire;
            let f = aead_frame::parse(&dg, Layout::Epoch).unwrap();
            let WirePacketId::Epoch(raw) = f.packet_id() else { panic!() };
            assert_eq!(rx.check(EpochPacketId::from_wire(raw), 0), Err(EpochError::Replay(ReplayError::Replayed)));
            assert!(aead_frame::open_in_place(rx.current.key.key(), &[0; 12], &f, &mut dg).is_err());
        }
    }

    #[test]
    fn sender_rotates_at_the_aes_gcm_usage_limit() {
        let mut tx = EpochSender::new(&HostCrypto, aes256(), &[1; 32]).unwrap();
        // Limit is packets + blocks > 2^36 - 1, checked before each packet.
        // A 16-byte ping counts ceil((12 + 16) / 16) = 2 blocks.
        tx.set_usage_for_test(10, AES_GCM_USAGE_LIMIT - 10);
        let (id, _) = tx.next_packet(&HostCrypto, 16).unwrap();
        assert_eq!((id.epoch(), id.counter()), (1, 11));
        let (id, _) = tx.next_packet(&HostCrypto, 16).unwrap();
        assert_eq!((id.epoch(), id.counter()), (2, 1));
        assert_eq!(tx.plaintext_blocks, 2);
    }

    #[test]
    fn chacha_ignores_the_block_limit_but_not_the_48_bit_counter() {
        let c = EpochCipher::new(Cipher::ChaCha20Poly1305, 32).unwrap();
        let mut tx = EpochSender::new(&HostCrypto, c, &[1; 32]).unwrap();
        tx.set_usage_for_test(EPOCH_COUNTER_MAX - 1, u64::MAX / 2);
        let (id, _) = tx.next_packet(&HostCrypto, 1000).unwrap();
        assert_eq!((id.epoch(), id.counter()), (1, EPOCH_COUNTER_MAX));
        let (id, _) = tx.next_packet(&HostCrypto, 1000).unwrap();
        assert_eq!((id.epoch(), id.counter()), (2, 1));
    }

    #[test]
    fn sender_stops_at_the_last_epoch() {
        let mut tx = EpochSender::new(&HostCrypto, aes256(), &[1; 32]).unwrap();
        tx.secret.epoch = u16::MAX;
        tx.key.epoch = u16::MAX;
        tx.set_usage_for_test(EPOCH_COUNTER_MAX, 0);
        assert_eq!(tx.next_packet(&HostCrypto, 1).unwrap_err(), EpochError::EpochsExhausted);
        assert_eq!(tx.epoch(), u16::MAX);
    }

    #[test]
    fn rotated_sender_is_accepted_and_the_old_epoch_retires() {
        let mut tx = EpochSender::new(&HostCrypto, aes256(), &[7; 32]).unwrap();
        let mut rx = EpochReceiver::new(&HostCrypto, aes256(), &[7; 32]).unwrap();
        let mut late = send(&mut tx); // epoch 1, counter 1, delivered late
        assert_eq!(recv(&mut rx, &mut send(&mut tx)), Ok(EpochAccepted::Same));
        tx.set_usage_for_test(EPOCH_COUNTER_MAX, 0);
        let mut e2 = send(&mut tx);
        assert_eq!(tx.epoch(), 2);
        assert_eq!(recv(&mut rx, &mut e2), Ok(EpochAccepted::Promoted(2)));
        assert_eq!(rx.current_epoch(), 2);
        // Retiring key still works, with its own window.
        assert_eq!(recv(&mut rx, &mut late), Ok(EpochAccepted::Same));
        assert_eq!(rx.check(EpochPacketId::new(1, 1).unwrap(), 0), Err(EpochError::Replay(ReplayError::Replayed)));
        // Future window slid: 3..=6 now known, 7 not.
        assert_eq!(rx.lookup(6).unwrap().0, EpochRole::Future);
        assert_eq!(rx.lookup(7).unwrap_err(), EpochError::UnknownEpoch(7));
    }

    #[test]
    fn receiver_jumps_to_a_future_epoch_and_the_sender_follows() {
        let mut peer_tx = EpochSender::new(&HostCrypto, aes256(), &[3; 32]).unwrap();
        let mut rx = EpochReceiver::new(&HostCrypto, aes256(), &[3; 32]).unwrap();
        let mut our_tx = EpochSender::new(&HostCrypto, aes256(), &[4; 32]).unwrap();
        // The peer rotates N times with every packet lost.
        for _ in 0..FUTURE_EPOCH_KEYS {
            peer_tx.set_usage_for_test(EPOCH_COUNTER_MAX, 0);
            send(&mut peer_tx);
        }
        assert_eq!(peer_tx.epoch(), 1 + FUTURE_EPOCH_KEYS as u16);
        let accepted = recv(&mut rx, &mut send(&mut peer_tx)).unwrap();
        assert_eq!(accepted, EpochAccepted::Promoted(5));
        assert_eq!(our_tx.follow(&HostCrypto, 5), Ok(true));
        assert_eq!(our_tx.epoch(), 5);
        let (id, _) = our_tx.next_packet(&HostCrypto, 1).unwrap();
        assert_eq!((id.epoch(), id.counter()), (5, 1));
        assert_eq!(our_tx.follow(&HostCrypto, 4), Ok(false));
        // A peer receiver derived from the same E1 agrees on epoch 5's key.
        let mut check_rx = EpochReceiver::new(&HostCrypto, aes256(), &[4; 32]).unwrap();
        let (id, key) = our_tx.next_packet(&HostCrypto, 16).unwrap();
        let mut buf = [0u8; 64];
        let n = aead_frame::seal_from(
            key.key(),
            &PacketIv::Epoch { packet_id: id.get(), iv: key.iv() },
            hdr(),
            &PING,
            &mut buf,
        )
        .unwrap();
        assert_eq!(recv(&mut check_rx, &mut buf[..n]), Ok(EpochAccepted::Promoted(5)));
    }

    #[test]
    fn too_far_zero_and_old_epochs_are_unknown() {
        let rx = EpochReceiver::new(&HostCrypto, aes256(), &[3; 32]).unwrap();
        let far = 2 + FUTURE_EPOCH_KEYS as u16;
        assert_eq!(rx.check(EpochPacketId::new(far, 1).unwrap(), 0), Err(EpochError::UnknownEpoch(far)));
        assert_eq!(rx.check(EpochPacketId::new(0, 1).unwrap(), 0), Err(EpochError::UnknownEpoch(0)));
        assert_eq!(rx.check(EpochPacketId::new(0xFFFF, 1).unwrap(), 0), Err(EpochError::UnknownEpoch(0xFFFF)));
        assert_eq!(rx.check(EpochPacketId::new(2, 0).unwrap(), 0), Err(EpochError::Replay(ReplayError::ZeroId)));
    }

    #[test]
    fn window_stops_short_of_the_last_epoch() {
        let rx = EpochReceiver::starting_at_for_test(&HostCrypto, aes256(), &[3; 32], LAST_FUTURE_EPOCH - 2).unwrap();
        assert!(rx.lookup(LAST_FUTURE_EPOCH).is_ok());
        assert_eq!(rx.lookup(LAST_FUTURE_EPOCH + 1).unwrap_err(), EpochError::UnknownEpoch(LAST_FUTURE_EPOCH + 1));
        let mut rx = rx;
        assert_eq!(
            rx.accept(&HostCrypto, EpochPacketId::new(LAST_FUTURE_EPOCH, 1).unwrap(), 0),
            Ok(EpochAccepted::Promoted(LAST_FUTURE_EPOCH))
        );
        assert!(rx.future.iter().all(Option::is_none));
        assert_eq!(rx.lookup(LAST_FUTURE_EPOCH + 1).unwrap_err(), EpochError::UnknownEpoch(LAST_FUTURE_EPOCH + 1));
    }
}
