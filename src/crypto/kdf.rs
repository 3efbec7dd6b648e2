//! HKDF-Expand-Label: TLS 1.3's labelled key expansion (RFC 8446 §7.1),
//! with the label prefix left to the caller, over any [`CryptoProvider`].
//!
//! Two users share it. TLS 1.3 uses the prefix `"tls13 "` and a transcript
//! hash as context. OpenVPN's epoch data keys (OpenVPN 2.7 `crypto_epoch.c`)
//! use the prefix `"ovpn "`, an empty context and a 32-byte epoch secret
//! taken directly as the HKDF-SHA256 PRK; the three derivations of that
//! schedule have named helpers here ([`data_key`], [`data_iv`],
//! [`next_epoch_secret`]).
//!
//! The `HkdfLabel` info string is built in a fixed buffer on the stack: key
//! derivation can run on the receive path (an authenticated packet of a future
//! epoch moves the keys on), where nothing may allocate.

use super::{CryptoError, CryptoProvider, NONCE_LEN};

/// Label prefix of TLS 1.3 (RFC 8446 §7.1).
pub const TLS13_LABEL_PREFIX: &[u8] = b"tls13 ";

/// Label prefix of OpenVPN's epoch key schedule (OpenVPN 2.7
/// `crypto_epoch.c`, `ovpn_expand_label`).
pub const OVPN_LABEL_PREFIX: &[u8] = b"ovpn ";

/// Longest prefix + label accepted. The wire format allows 255 (a u8 length,
/// RFC 8446 §7.1 `opaque label<7..255>`); the longest label either user
/// derives is far shorter ("tls13 res binder", "ovpn datakey upd": 16 bytes),
/// and a small bound keeps the stack buffer small.
pub const MAX_LABEL_LEN: usize = 64;

/// Longest context accepted: a SHA-512 transcript hash, the largest hash a
/// TLS 1.3 cipher suite uses (RFC 8446 §B.4). The wire format allows 255.
pub const MAX_CONTEXT_LEN: usize = 64;

/// Longest output HKDF-SHA256 can produce: 255 × HashLen (RFC 5869 §2.3). It
/// also fits the u16 length field of `HkdfLabel`.
pub const MAX_OUTPUT_LEN: usize = 255 * SHA256_LEN;

/// SHA-256 output length, the HashLen of every HKDF here.
const SHA256_LEN: usize = 32;

/// Bytes of `HkdfLabel` besides the label and context: u16 length, u8 label
/// length, u8 context length (RFC 8446 §7.1).
const INFO_FIXED_LEN: usize = 2 + 1 + 1;

/// Size of the stack buffer that holds a serialised `HkdfLabel`.
pub const MAX_INFO_LEN: usize = INFO_FIXED_LEN + MAX_LABEL_LEN + MAX_CONTEXT_LEN;

/// Why a labelled expansion was refused or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KdfError {
    /// Prefix and label together exceed [`MAX_LABEL_LEN`].
    LabelTooLong,
    /// The context exceeds [`MAX_CONTEXT_LEN`].
    ContextTooLong,
    /// The requested output exceeds [`MAX_OUTPUT_LEN`].
    OutputTooLong,
    /// A data-channel key length other than 16, 24 or 32 bytes.
    BadKeyLength,
    /// The provider's HKDF failed.
    Provider(CryptoError),
}

impl KdfError {
    /// The NTSTATUS an IOCTL reports for this failure.
    pub const fn status(self) -> crate::ntstatus::NtStatus {
        use crate::ntstatus::NtStatus;
        match self {
            KdfError::LabelTooLong | KdfError::ContextTooLong | KdfError::OutputTooLong => {
                NtStatus::INVALID_BUFFER_SIZE
            }
            KdfError::BadKeyLength => NtStatus::INVALID_PARAMETER,
            KdfError::Provider(e) => e.status(),
        }
    }
}

impl From<CryptoError> for KdfError {
    fn from(e: CryptoError) -> Self {
        KdfError::Provider(e)
    }
}

/// A serialised `HkdfLabel` (RFC 8446 §7.1): u16 output length (big-endian),
/// u8 length ‖ prefix ‖ label, u8 length ‖ context. This is the HKDF `info`.
#[derive(Clone, Copy)]
pub struct HkdfLabel {
    buf: [u8; MAX_INFO_LEN],
    len: usize,
}

impl HkdfLabel {
    /// Serialises the info for an `out_len`-byte output.
    pub fn new(out_len: usize, prefix: &[u8], label: &[u8], context: &[u8]) -> Result<Self, KdfError> {
        let full_label_len = prefix.len().checked_add(label.len()).ok_or(KdfError::LabelTooLong)?;
        if full_label_len > MAX_LABEL_LEN {
            return Err(KdfError::LabelTooLong);
        }
        if context.len() > MAX_CONTEXT_LEN {
            return Err(KdfError::ContextTooLong);
        }
        if out_len > MAX_OUTPUT_LEN {
            return Err(KdfError::OutputTooLong);
        }
        // The bounds above make every conversion and slice below fit:
        // MAX_OUTPUT_LEN < 2^16, MAX_LABEL_LEN and MAX_CONTEXT_LEN < 2^8, and
        // their sum plus INFO_FIXED_LEN is MAX_INFO_LEN.
        let out_len = u16::try_from(out_len).map_err(|_| KdfError::OutputTooLong)?;
        let label_len_byte = u8::try_from(full_label_len).map_err(|_| KdfError::LabelTooLong)?;
        let context_len_byte = u8::try_from(context.len()).map_err(|_| KdfError::ContextTooLong)?;

        let mut w = Writer { buf: [0; MAX_INFO_LEN], len: 0 };
        w.put(&out_len.to_be_bytes());
        w.put(&[label_len_byte]);
        w.put(prefix);
        w.put(label);
        w.put(&[context_len_byte]);
        w.put(context);
        Ok(HkdfLabel { buf: w.buf, len: w.len })
    }

    /// The info bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

impl core::fmt::Debug for HkdfLabel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "HkdfLabel({:02x?})", self.as_bytes())
    }
}

/// Appends into a fixed buffer; callers check the total beforehand.
struct Writer {
    buf: [u8; MAX_INFO_LEN],
    len: usize,
}

impl Writer {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len.saturating_add(bytes.len());
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(bytes);
            self.len = end;
        }
    }
}

/// HKDF-Expand-Label(secret, label, context, out.len()) with `prefix` in
/// place of `"tls13 "`: HKDF-Expand-SHA256 with `secret` as the PRK and the
/// serialised [`HkdfLabel`] as info.
pub fn expand_label<P: CryptoProvider + ?Sized>(
    provider: &P,
    secret: &[u8],
    prefix: &[u8],
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) -> Result<(), KdfError> {
    let info = HkdfLabel::new(out.len(), prefix, label, context)?;
    provider.hkdf_sha256_expand(secret, info.as_bytes(), out)?;
    Ok(())
}

/// Length of an OpenVPN epoch secret E_n (and of the TLS-exporter output
/// OpenVPN passes as E_1 in `OVPN_KEY_DIRECTION.Key[32]`).
pub const EPOCH_SECRET_LEN: usize = 32;

/// An OpenVPN epoch secret E_n.
pub type EpochSecret = [u8; EPOCH_SECRET_LEN];

/// Longest data-channel key (AES-256-GCM, ChaCha20-Poly1305).
pub const MAX_DATA_KEY_LEN: usize = 32;

/// OpenVPN `crypto_epoch.c`: label of the data key K_n.
pub const DATA_KEY_LABEL: &[u8] = b"data_key";
/// OpenVPN `crypto_epoch.c`: label of the implicit IV IV_n.
pub const DATA_IV_LABEL: &[u8] = b"data_iv";
/// OpenVPN `crypto_epoch.c`: label of the next epoch secret E_{n+1}.
pub const EPOCH_UPDATE_LABEL: &[u8] = b"datakey upd";

/// A derived data-channel key K_n, 16, 24 or 32 bytes long.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DataKey {
    bytes: [u8; MAX_DATA_KEY_LEN],
    len: usize,
}

impl DataKey {
    /// The key bytes, as [`CryptoProvider::new_key`] takes them.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

impl core::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        write!(f, "DataKey({} bytes)", self.len)
    }
}

/// K_n = HKDF-Expand-Label(E_n, "data_key", "", key_len) with the `"ovpn "`
/// prefix. `key_len` is the cipher's key length (16, 24 or 32).
pub fn data_key<P: CryptoProvider + ?Sized>(
    provider: &P,
    e: &EpochSecret,
    key_len: usize,
) -> Result<DataKey, KdfError> {
    if !matches!(key_len, 16 | 24 | 32) {
        return Err(KdfError::BadKeyLength);
    }
    let mut key = DataKey { bytes: [0; MAX_DATA_KEY_LEN], len: key_len };
    let out = key.bytes.get_mut(..key_len).ok_or(KdfError::BadKeyLength)?;
    expand_label(provider, e, OVPN_LABEL_PREFIX, DATA_KEY_LABEL, &[], out)?;
    Ok(key)
}

/// IV_n = HKDF-Expand-Label(E_n, "data_iv", "", 12) with the `"ovpn "` prefix:
/// the implicit IV each packet's nonce is XORed with.
pub fn data_iv<P: CryptoProvider + ?Sized>(provider: &P, e: &EpochSecret) -> Result<[u8; NONCE_LEN], KdfError> {
    let mut iv = [0u8; NONCE_LEN];
    expand_label(provider, e, OVPN_LABEL_PREFIX, DATA_IV_LABEL, &[], &mut iv)?;
    Ok(iv)
}

/// E_{n+1} = HKDF-Expand-Label(E_n, "datakey upd", "", 32) with the `"ovpn "`
/// prefix.
pub fn next_epoch_secret<P: CryptoProvider + ?Sized>(provider: &P, e: &EpochSecret) -> Result<EpochSecret, KdfError> {
    let mut next = [0u8; EPOCH_SECRET_LEN];
    expand_label(provider, e, OVPN_LABEL_PREFIX, EPOCH_UPDATE_LABEL, &[], &mut next)?;
    Ok(next)
}

const _: () = assert!(MAX_OUTPUT_LEN <= u16::MAX as usize);
const _: () = assert!(MAX_LABEL_LEN <= u8::MAX as usize && MAX_CONTEXT_LEN <= u8::MAX as usize);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{AeadKey, Cipher, Nonce, Tag};
    use std::vec::Vec;

    fn hex(s: &str) -> Vec<u8> {
        let s: std::string::String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Records what HKDF was asked for, so the info bytes can be checked
    /// without depending on a real backend.
    struct Recorder {
        calls: std::sync::Mutex<Vec<Call>>,
    }

    /// One HKDF-Expand request: PRK, info, output length.
    type Call = (Vec<u8>, Vec<u8>, usize);

    struct NoKey;
    impl AeadKey for NoKey {
        fn seal(&self, _: &Nonce, _: &[u8], _: &[u8], _: &mut [u8], _: &mut Tag) -> Result<(), CryptoError> {
            Err(CryptoError::Unsupported)
        }
        fn seal_in_place(&self, _: &Nonce, _: &[u8], _: &mut [u8], _: &mut Tag) -> Result<(), CryptoError> {
            Err(CryptoError::Unsupported)
        }
        fn open(&self, _: &Nonce, _: &[u8], _: &[u8], _: &mut [u8], _: &Tag) -> Result<(), CryptoError> {
            Err(CryptoError::Unsupported)
        }
        fn open_in_place(&self, _: &Nonce, _: &[u8], _: &mut [u8], _: &Tag) -> Result<(), CryptoError> {
            Err(CryptoError::Unsupported)
        }
    }

    impl CryptoProvider for Recorder {
        type Key = NoKey;
        fn new_key(&self, _: Cipher, _: &[u8]) -> Result<NoKey, CryptoError> {
            Err(CryptoError::Unsupported)
        }
        fn hkdf_sha256_expand(&self, prk: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
            self.calls.lock().unwrap().push((prk.to_vec(), info.to_vec(), out.len()));
            out.fill(0xAA);
            Ok(())
        }
    }

    fn recorder() -> Recorder {
        Recorder { calls: std::sync::Mutex::new(Vec::new()) }
    }

    fn only_call(r: &Recorder) -> Call {
        let calls = r.calls.lock().unwrap();
        assert_eq!(calls.len(), 1);
        calls[0].clone()
    }

    // Info strings from the reference (ovpn-dco-interface.md, "Wire format",
    // epoch key schedule), as OpenVPN 2.7 builds them.
    #[test]
    fn epoch_data_key_info_is_openvpns() {
        let r = recorder();
        let e = [7u8; 32];
        let key = data_key(&r, &e, 32).unwrap();
        assert_eq!(key.as_bytes(), &[0xAA; 32]);
        let (prk, info, len) = only_call(&r);
        assert_eq!(prk, e);
        assert_eq!(info, hex("00200d6f76706e20646174615f6b657900"));
        assert_eq!(len, 32);
    }

    #[test]
    fn epoch_data_iv_info_is_openvpns() {
        let r = recorder();
        data_iv(&r, &[1u8; 32]).unwrap();
        let (_, info, len) = only_call(&r);
        assert_eq!(info, hex("000c0c6f76706e20646174615f697600"));
        assert_eq!(len, 12);
    }

    #[test]
    fn epoch_update_info_is_openvpns() {
        let r = recorder();
        next_epoch_secret(&r, &[1u8; 32]).unwrap();
        let (_, info, len) = only_call(&r);
        assert_eq!(info, hex("0020106f76706e20646174616b65792075706400"));
        assert_eq!(len, 32);
    }

    #[test]
    fn aes_128_data_key_asks_for_16_bytes() {
        let r = recorder();
        assert_eq!(data_key(&r, &[0u8; 32], 16).unwrap().as_bytes().len(), 16);
        let (_, info, len) = only_call(&r);
        assert_eq!(&info[..2], &[0x00, 0x10]);
        assert_eq!(len, 16);
    }

    // RFC 8448 §3, "{server} derive write traffic keys for handshake data":
    // key info (13 octets) and iv info (12 octets).
    #[test]
    fn tls13_info_matches_rfc8448() {
        let key_info = HkdfLabel::new(16, TLS13_LABEL_PREFIX, b"key", &[]).unwrap();
        assert_eq!(key_info.as_bytes(), hex("00 10 09 74 6c 73 31 33 20 6b 65 79 00"));
        let iv_info = HkdfLabel::new(12, TLS13_LABEL_PREFIX, b"iv", &[]).unwrap();
        assert_eq!(iv_info.as_bytes(), hex("00 0c 08 74 6c 73 31 33 20 69 76 00"));
    }

    // RFC 8448 §3, '{server} derive secret "tls13 s hs traffic"': info (54
    // octets) with the transcript hash as context.
    #[test]
    fn tls13_info_with_context_matches_rfc8448() {
        let hash =
            hex("86 0c 06 ed c0 78 58 ee 8e 78 f0 e7 42 8c 58 ed d6 b4 3f 2c a3 e6 e9 5f 02 ed 06 3c f0 e1 ca d8");
        let info = HkdfLabel::new(32, TLS13_LABEL_PREFIX, b"s hs traffic", &hash).unwrap();
        assert_eq!(
            info.as_bytes(),
            hex("00 20 12 74 6c 73 31 33 20 73 20 68 73 20 74 72
                 61 66 66 69 63 20 86 0c 06 ed c0 78 58 ee 8e 78 f0 e7 42 8c 58
                 ed d6 b4 3f 2c a3 e6 e9 5f 02 ed 06 3c f0 e1 ca d8")
        );
    }

    #[test]
    fn over_long_inputs_are_refused_before_hkdf_runs() {
        let r = recorder();
        let long = [b'x'; MAX_LABEL_LEN + 1];
        let mut out = [0u8; 16];
        assert_eq!(expand_label(&r, &[0; 32], b"", &long, &[], &mut out), Err(KdfError::LabelTooLong));
        // The prefix counts towards the label.
        let label = [b'x'; MAX_LABEL_LEN - 4];
        assert_eq!(expand_label(&r, &[0; 32], OVPN_LABEL_PREFIX, &label, &[], &mut out), Err(KdfError::LabelTooLong));
        let context = [0u8; MAX_CONTEXT_LEN + 1];
        assert_eq!(expand_label(&r, &[0; 32], b"p ", b"l", &context, &mut out), Err(KdfError::ContextTooLong));
        let mut big = std::vec![0u8; MAX_OUTPUT_LEN + 1];
        assert_eq!(expand_label(&r, &[0; 32], b"p ", b"l", &[], &mut big), Err(KdfError::OutputTooLong));
        assert_eq!(data_key(&r, &[0; 32], 20).unwrap_err(), KdfError::BadKeyLength);
        assert_eq!(data_key(&r, &[0; 32], 0).unwrap_err(), KdfError::BadKeyLength);
        assert!(r.calls.lock().unwrap().is_empty());
    }

    #[test]
    fn longest_accepted_inputs_fill_the_buffer_exactly() {
        let label = [b'l'; MAX_LABEL_LEN];
        let context = [b'c'; MAX_CONTEXT_LEN];
        let info = HkdfLabel::new(MAX_OUTPUT_LEN, b"", &label, &context).unwrap();
        assert_eq!(info.as_bytes().len(), MAX_INFO_LEN);
        assert_eq!(&info.as_bytes()[..3], &[0x1F, 0xE0, MAX_LABEL_LEN as u8]);
    }

    #[test]
    fn provider_failure_is_passed_on() {
        struct Failing;
        impl CryptoProvider for Failing {
            type Key = NoKey;
            fn new_key(&self, _: Cipher, _: &[u8]) -> Result<NoKey, CryptoError> {
                Err(CryptoError::Unsupported)
            }
            fn hkdf_sha256_expand(&self, _: &[u8], _: &[u8], _: &mut [u8]) -> Result<(), CryptoError> {
                Err(CryptoError::Unsupported)
            }
        }
        assert_eq!(data_iv(&Failing, &[0; 32]), Err(KdfError::Provider(CryptoError::Unsupported)));
        assert_eq!(KdfError::Provider(CryptoError::Unsupported).status(), CryptoError::Unsupported.status());
    }
}
