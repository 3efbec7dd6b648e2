//! The host model's stand-in for CNG: `ring` for AES-128/256-GCM,
//! ChaCha20-Poly1305 and HKDF, RustCrypto's `aes-gcm` for AES-192-GCM (which
//! `ring` does not offer but OpenVPN and CNG do).

use super::{AeadKey, Cipher, CryptoError, CryptoProvider, Nonce, TAG_LEN, Tag};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aes::Aes192;
use aes_gcm::{AesGcm, KeyInit};
use alloc::boxed::Box;
use ring::aead::{self, Aad, LessSafeKey, UnboundKey};

type Aes192Gcm = AesGcm<Aes192, aes_gcm::aead::consts::U12>;

/// The host crypto provider.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostCrypto;

/// A host key object.
pub enum HostKey {
    Ring(Box<LessSafeKey>),
    Aes192(Box<Aes192Gcm>),
}

impl core::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        match self {
            HostKey::Ring(k) => write!(f, "HostKey({:?})", k.algorithm()),
            HostKey::Aes192(_) => f.write_str("HostKey(AES_192_GCM)"),
        }
    }
}

impl CryptoProvider for HostCrypto {
    type Key = HostKey;

    fn new_key(&self, cipher: Cipher, key: &[u8]) -> Result<HostKey, CryptoError> {
        if !cipher.accepts_key_len(key.len()) {
            return Err(CryptoError::BadKeyLength);
        }
        let alg = match (cipher, key.len()) {
            (Cipher::AesGcm, 16) => &aead::AES_128_GCM,
            (Cipher::AesGcm, 24) => {
                let k = Aes192Gcm::new_from_slice(key).map_err(|_| CryptoError::BadKeyLength)?;
                return Ok(HostKey::Aes192(Box::new(k)));
            }
            (Cipher::AesGcm, _) => &aead::AES_256_GCM,
            (Cipher::ChaCha20Poly1305, _) => &aead::CHACHA20_POLY1305,
        };
        let unbound = UnboundKey::new(alg, key).map_err(|_| CryptoError::BadKeyLength)?;
        Ok(HostKey::Ring(Box::new(LessSafeKey::new(unbound))))
    }

    fn hkdf_sha256_expand(&self, prk: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
        struct Len(usize);
        impl ring::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        let prk = ring::hkdf::Prk::new_less_safe(ring::hkdf::HKDF_SHA256, prk);
        let info = [info];
        let okm = prk.expand(&info, Len(out.len())).map_err(|_| CryptoError::BadLength)?;
        okm.fill(out).map_err(|_| CryptoError::BadLength)
    }
}

impl AeadKey for HostKey {
    fn seal(
        &self,
        nonce: &Nonce,
        ad: &[u8],
        input: &[u8],
        output: &mut [u8],
        tag: &mut Tag,
    ) -> Result<(), CryptoError> {
        if input.len() != output.len() {
            return Err(CryptoError::BadLength);
        }
        // Neither backend encrypts out of place; the copy stays in cache and
        // the OS-owned input is still only read.
        output.copy_from_slice(input);
        self.seal_in_place(nonce, ad, output, tag)
    }

    fn seal_in_place(&self, nonce: &Nonce, ad: &[u8], data: &mut [u8], tag: &mut Tag) -> Result<(), CryptoError> {
        match self {
            HostKey::Ring(key) => {
                let t = key
                    .seal_in_place_separate_tag(aead::Nonce::assume_unique_for_key(*nonce), Aad::from(ad), data)
                    .map_err(|_| CryptoError::BadLength)?;
                tag.copy_from_slice(t.as_ref());
            }
            HostKey::Aes192(key) => {
                let t = key
                    .encrypt_in_place_detached(GenericArray::from_slice(nonce), ad, data)
                    .map_err(|_| CryptoError::BadLength)?;
                tag.copy_from_slice(&t);
            }
        }
        Ok(())
    }

    fn open(&self, nonce: &Nonce, ad: &[u8], input: &[u8], output: &mut [u8], tag: &Tag) -> Result<(), CryptoError> {
        if input.len() != output.len() {
            return Err(CryptoError::BadLength);
        }
        output.copy_from_slice(input);
        self.open_in_place(nonce, ad, output, tag)
    }

    fn open_in_place(&self, nonce: &Nonce, ad: &[u8], data: &mut [u8], tag: &Tag) -> Result<(), CryptoError> {
        let ok = match self {
            HostKey::Ring(key) => {
                let t = aead::Tag::from(*tag);
                key.open_in_place_separate_tag(aead::Nonce::assume_unique_for_key(*nonce), Aad::from(ad), t, data, 0..)
                    .is_ok()
            }
            HostKey::Aes192(key) => key
                .decrypt_in_place_detached(GenericArray::from_slice(nonce), ad, data, GenericArray::from_slice(tag))
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            // Leave no unauthenticated plaintext behind.
            data.fill(0);
            Err(CryptoError::AuthFailed)
        }
    }
}

const _: () = assert!(TAG_LEN == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_openvpn_key_length_makes_a_key() {
        let p = HostCrypto;
        for len in [16, 24, 32] {
            assert!(p.new_key(Cipher::AesGcm, &[7u8; 32][..len]).is_ok());
        }
        assert!(p.new_key(Cipher::ChaCha20Poly1305, &[7u8; 32]).is_ok());
        assert_eq!(p.new_key(Cipher::AesGcm, &[0u8; 20]).unwrap_err(), CryptoError::BadKeyLength);
        assert_eq!(p.new_key(Cipher::ChaCha20Poly1305, &[0u8; 16]).unwrap_err(), CryptoError::BadKeyLength);
    }

    #[test]
    fn tampered_data_is_rejected_and_wiped() {
        let key = HostCrypto.new_key(Cipher::AesGcm, &[1u8; 24]).unwrap();
        let nonce = [3u8; 12];
        let mut data = *b"sixteen byte msg";
        let mut tag = [0u8; 16];
        key.seal_in_place(&nonce, b"ad", &mut data, &mut tag).unwrap();
        data[0] ^= 1;
        assert_eq!(key.open_in_place(&nonce, b"ad", &mut data, &tag), Err(CryptoError::AuthFailed));
        assert_eq!(data, [0u8; 16]);
    }
}
