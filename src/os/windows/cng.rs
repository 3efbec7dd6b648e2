//! The kernel's crypto backend: [`CryptoProvider`] and [`AeadKey`] over CNG.
//!
//! Providers are opened once (at driver load) with `BCRYPT_PROV_DISPATCH`, so
//! keys made from them can be used at DISPATCH_LEVEL: AES with the GCM
//! chaining mode, ChaCha20-Poly1305 where Windows has it (Windows 11 /
//! Server 2022 and later; elsewhere NEW_KEY with it fails with
//! [`CryptoError::Unsupported`], i.e. STATUS_INVALID_DEVICE_REQUEST, as the
//! C driver does), and HKDF. Each key owns its key-object buffer (sized by the
//! provider's `BCRYPT_OBJECT_LENGTH`) and a reference to its provider, so a
//! provider is never closed while a key made from it lives (`BCRYPT_PROV_DISPATCH`
//! forbids that, facts §5). Each packet is one `BCryptEncrypt` /
//! `BCryptDecrypt` with `BCRYPT_AUTHENTICATED_CIPHER_MODE_INFO` carrying the
//! nonce, the AD and the detached tag; in place passes the same pointer as
//! input and output, which CNG allows for these modes.
//!
//! Not verified here (no Windows on the build machine; this module is only
//! type-checked for `x86_64-pc-windows-msvc`), to be settled by the Windows
//! layer's issue and by running `tests/crypto_vectors.rs`'s vectors against
//! this backend on Windows:
//! - Whether CNG's AES-GCM / ChaCha20-Poly1305 use vector (AVX) registers in
//!   the caller's context at DISPATCH_LEVEL so that the caller must bracket
//!   each call with `KeSaveExtendedProcessorState` /
//!   `KeRestoreExtendedProcessorState` (the reference notes that using AVX
//!   state in the kernel needs it). Nothing here saves that state; the hook
//!   belongs around the per-packet calls in the Windows data path, where the
//!   IRQL is known. It is not faked here.
//! - That one key handle may be used by `BCryptEncrypt`/`BCryptDecrypt` on
//!   several CPUs at once without `BCRYPT_AUTH_MODE_CHAIN_CALLS_FLAG` (the C
//!   driver relies on it; the `Send + Sync` impls below rely on it too).
//! - That the ChaCha20-Poly1305 and HKDF providers accept `BCRYPT_PROV_DISPATCH`
//!   (if HKDF does not, opening fails and the driver reports the status).
//! - That `BCRYPT_HKDF_HASH_ALGORITHM` takes the string with its NUL counted
//!   (as `sizeof(L"SHA256")`), like `BCRYPT_CHAINING_MODE` does in Microsoft's
//!   samples.
//! - Pseudo-handles (`BCRYPT_AES_GCM_ALG_HANDLE`) are deliberately not used:
//!   whether their restrictions permit DISPATCH_LEVEL is open (facts §5).

use super::bcrypt::{
    BCRYPT_AES_ALGORITHM, BCRYPT_ALG_HANDLE, BCRYPT_AUTHENTICATED_CIPHER_MODE_INFO, BCRYPT_CHACHA20_POLY1305_ALGORITHM,
    BCRYPT_CHAIN_MODE_GCM, BCRYPT_CHAINING_MODE, BCRYPT_HKDF_ALGORITHM, BCRYPT_HKDF_HASH_ALGORITHM,
    BCRYPT_HKDF_PRK_AND_FINALIZE, BCRYPT_KEY_HANDLE, BCRYPT_OBJECT_LENGTH, BCRYPT_PROV_DISPATCH,
    BCRYPT_SHA256_ALGORITHM, BCRYPTBUFFER_VERSION, BCryptBuffer, BCryptBufferDesc, BCryptCloseAlgorithmProvider,
    BCryptDecrypt, BCryptDestroyKey, BCryptEncrypt, BCryptGenerateSymmetricKey, BCryptGetProperty, BCryptKeyDerivation,
    BCryptOpenAlgorithmProvider, BCryptSetProperty, KDF_HKDF_INFO, STATUS_AUTH_TAG_MISMATCH, STATUS_BUFFER_TOO_SMALL,
    STATUS_INVALID_BUFFER_SIZE, STATUS_NOT_FOUND, STATUS_NOT_SUPPORTED, wide_bytes,
};
use crate::crypto::{AeadKey, Cipher, CryptoError, CryptoProvider, NONCE_LEN, Nonce, TAG_LEN, Tag};
use crate::ntstatus::NtStatus;
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::ptr;

/// HKDF-SHA256 output limit: 255 × HashLen (RFC 5869 §2.3).
const HKDF_SHA256_MAX_OUTPUT: usize = 255 * 32;

/// An open algorithm provider and the key-object size it asks for.
struct Algorithm {
    handle: BCRYPT_ALG_HANDLE,
    object_len: usize,
}

// SAFETY: an algorithm handle is only passed to CNG, which serialises what it
// must internally; the handle is closed once, in Drop, after every key made
// from it is gone (keys hold an Arc<Algorithm>).
unsafe impl Send for Algorithm {}
// SAFETY: as for Send; no method mutates the handle.
unsafe impl Sync for Algorithm {}

impl Algorithm {
    /// Opens `alg_id` for DISPATCH_LEVEL use and reads its key-object length.
    fn open(alg_id: &[u16]) -> Result<Self, NtStatus> {
        let mut handle: BCRYPT_ALG_HANDLE = ptr::null_mut();
        // SAFETY: `alg_id` is a NUL-terminated UTF-16 string ('static
        // constant from bcrypt.rs); `handle` is a valid out pointer; a NULL
        // implementation selects the default provider.
        let status =
            unsafe { BCryptOpenAlgorithmProvider(&mut handle, alg_id.as_ptr(), ptr::null(), BCRYPT_PROV_DISPATCH) };
        check(status)?;
        // From here Drop closes the handle on any early return.
        let mut alg = Algorithm { handle, object_len: 0 };
        alg.object_len = alg.get_u32(BCRYPT_OBJECT_LENGTH)? as usize;
        Ok(alg)
    }

    /// Sets a string-valued property (e.g. the chaining mode).
    fn set_wide(&self, property: &[u16], value: &[u16]) -> Result<(), NtStatus> {
        let (bytes, len) = wide_bytes(value);
        // SAFETY: the handle is open (owned by self); `property` and `value`
        // are NUL-terminated UTF-16 constants that CNG only reads during the
        // call.
        check(unsafe { BCryptSetProperty(self.handle, property.as_ptr(), bytes, len, 0) })
    }

    /// Reads a ULONG property.
    fn get_u32(&self, property: &[u16]) -> Result<u32, NtStatus> {
        let mut value = 0u32;
        let mut written = 0u32;
        // SAFETY: the handle is open; the output buffer is `value`, 4
        // writable bytes, and `written` a valid out pointer.
        let status = unsafe {
            BCryptGetProperty(
                self.handle,
                property.as_ptr(),
                (&raw mut value).cast(),
                core::mem::size_of::<u32>() as u32,
                &mut written,
                0,
            )
        };
        check(status)?;
        if written as usize == core::mem::size_of::<u32>() { Ok(value) } else { Err(NtStatus::INVALID_BUFFER_SIZE) }
    }

    /// A zeroed key-object buffer of the size this provider asks for. Lives
    /// as long as the key handle made in it.
    fn key_object(&self) -> Result<Box<[u8]>, CryptoError> {
        // Key creation is control path; the buffer comes from nonpaged pool
        // (the global allocator), as DISPATCH_LEVEL use requires.
        let len = u32::try_from(self.object_len).map_err(|_| CryptoError::BadLength)? as usize;
        // A failed pool allocation must fail NEW_KEY, not bring the system down.
        let mut object = Vec::new();
        object.try_reserve_exact(len).map_err(|_| CryptoError::NoMemory)?;
        object.resize(len, 0u8);
        Ok(object.into_boxed_slice())
    }

    /// `BCryptGenerateSymmetricKey` into `object`.
    fn generate_key(&self, object: &mut [u8], secret: &[u8]) -> Result<BCRYPT_KEY_HANDLE, NtStatus> {
        let object_len = u32::try_from(object.len()).map_err(|_| NtStatus::INVALID_BUFFER_SIZE)?;
        let secret_len = u32::try_from(secret.len()).map_err(|_| NtStatus::INVALID_BUFFER_SIZE)?;
        let mut key: BCRYPT_KEY_HANDLE = ptr::null_mut();
        // SAFETY: the provider handle is open; `object` is a writable buffer
        // of `object_len` bytes that the caller keeps alive until it destroys
        // the key; `secret` is read only during the call.
        let status = unsafe {
            BCryptGenerateSymmetricKey(
                self.handle,
                &mut key,
                object.as_mut_ptr(),
                object_len,
                secret.as_ptr(),
                secret_len,
                0,
            )
        };
        check(status)?;
        Ok(key)
    }
}

impl Drop for Algorithm {
    fn drop(&mut self) {
        // SAFETY: the handle was opened by `open` and is closed exactly once;
        // every key made from it held an Arc to self and is already destroyed.
        let _ = unsafe { BCryptCloseAlgorithmProvider(self.handle, 0) };
    }
}

/// The CNG crypto provider: the algorithm handles a driver opens at load.
pub struct CngCrypto {
    aes_gcm: Arc<Algorithm>,
    chacha20_poly1305: Option<Arc<Algorithm>>,
    hkdf: Algorithm,
}

impl core::fmt::Debug for CngCrypto {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CngCrypto").field("chacha20_poly1305", &self.chacha20_poly1305.is_some()).finish()
    }
}

impl CngCrypto {
    /// Opens the providers. AES-GCM and HKDF are required; ChaCha20-Poly1305
    /// is optional (absent before Windows 11 / Server 2022).
    pub fn open() -> Result<Self, NtStatus> {
        let aes_gcm = Algorithm::open(BCRYPT_AES_ALGORITHM)?;
        aes_gcm.set_wide(BCRYPT_CHAINING_MODE, BCRYPT_CHAIN_MODE_GCM)?;
        let chacha20_poly1305 = Algorithm::open(BCRYPT_CHACHA20_POLY1305_ALGORITHM).ok().map(Arc::new);
        let hkdf = Algorithm::open(BCRYPT_HKDF_ALGORITHM)?;
        Ok(CngCrypto { aes_gcm: Arc::new(aes_gcm), chacha20_poly1305, hkdf })
    }

    /// Whether NEW_KEY may name ChaCha20-Poly1305 on this system.
    pub fn has_chacha20_poly1305(&self) -> bool {
        self.chacha20_poly1305.is_some()
    }
}

impl CryptoProvider for CngCrypto {
    type Key = CngKey;

    fn new_key(&self, cipher: Cipher, key: &[u8]) -> Result<CngKey, CryptoError> {
        if !cipher.accepts_key_len(key.len()) {
            return Err(CryptoError::BadKeyLength);
        }
        let alg = match cipher {
            Cipher::AesGcm => &self.aes_gcm,
            Cipher::ChaCha20Poly1305 => self.chacha20_poly1305.as_ref().ok_or(CryptoError::Unsupported)?,
        };
        let mut object = alg.key_object()?;
        let handle = alg.generate_key(&mut object, key).map_err(|s| error_from(s, CryptoError::BadKeyLength))?;
        Ok(CngKey { handle, _object: object, _alg: Arc::clone(alg) })
    }

    fn hkdf_sha256_expand(&self, prk: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
        if out.len() > HKDF_SHA256_MAX_OUTPUT {
            return Err(CryptoError::BadLength);
        }
        let out_len = u32::try_from(out.len()).map_err(|_| CryptoError::BadLength)?;
        let info_len = u32::try_from(info.len()).map_err(|_| CryptoError::BadLength)?;

        // A short-lived HKDF key whose secret is the PRK itself (no extract
        // step): generate, set the hash, finalize as PRK, derive, destroy.
        let mut object = self.hkdf.key_object()?;
        let handle = self.hkdf.generate_key(&mut object, prk).map_err(|s| error_from(s, CryptoError::BadLength))?;
        let key = KeyHandle(handle);

        let (hash, hash_len) = wide_bytes(BCRYPT_SHA256_ALGORITHM);
        // SAFETY: `key` is a live HKDF key handle in `object`; the property
        // name and value are NUL-terminated UTF-16 constants read only during
        // the call.
        let status = unsafe { BCryptSetProperty(key.0, BCRYPT_HKDF_HASH_ALGORITHM.as_ptr(), hash, hash_len, 0) };
        check(status).map_err(|s| error_from(s, CryptoError::Unsupported))?;
        // SAFETY: as above; this property takes no input (NULL, 0).
        let status = unsafe { BCryptSetProperty(key.0, BCRYPT_HKDF_PRK_AND_FINALIZE.as_ptr(), ptr::null(), 0, 0) };
        check(status).map_err(|s| error_from(s, CryptoError::BadLength))?;

        let mut info_buffer = BCryptBuffer {
            cbBuffer: info_len,
            BufferType: KDF_HKDF_INFO,
            // CNG only reads the info.
            pvBuffer: info.as_ptr().cast_mut().cast::<c_void>(),
        };
        let params = BCryptBufferDesc { ulVersion: BCRYPTBUFFER_VERSION, cBuffers: 1, pBuffers: &mut info_buffer };
        // KDF_HKDF_INFO is optional: with no info, pass no parameter list.
        let params_ptr: *const BCryptBufferDesc = if info.is_empty() { ptr::null() } else { &params };
        let mut written = 0u32;
        // SAFETY: `key` is a finalized HKDF key; `params` and `info_buffer`
        // live on this stack frame across the call and point at `info`,
        // which CNG only reads; `out` is `out_len` writable bytes.
        let status = unsafe { BCryptKeyDerivation(key.0, params_ptr, out.as_mut_ptr(), out_len, &mut written, 0) };
        check(status).map_err(|s| error_from(s, CryptoError::BadLength))?;
        if written != out_len {
            out.fill(0);
            return Err(CryptoError::BadLength);
        }
        // `key` is destroyed here, before `object` is freed (reverse
        // declaration order).
        drop(key);
        drop(object);
        Ok(())
    }
}

/// Destroys a key handle when dropped (error paths included).
struct KeyHandle(BCRYPT_KEY_HANDLE);

impl Drop for KeyHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from BCryptGenerateSymmetricKey and is
        // destroyed exactly once, while its key-object buffer is still alive.
        let _ = unsafe { BCryptDestroyKey(self.0) };
    }
}

/// A CNG AEAD key object for one direction of one data-channel key.
pub struct CngKey {
    handle: BCRYPT_KEY_HANDLE,
    /// The key object CNG keeps the schedule in; must outlive `handle`.
    _object: Box<[u8]>,
    /// Keeps the provider open while this key lives.
    _alg: Arc<Algorithm>,
}

// SAFETY: the key object is only touched by CNG through `handle`; an AEAD call
// without BCRYPT_AUTH_MODE_CHAIN_CALLS_FLAG keeps all per-call state in the
// caller's BCRYPT_AUTHENTICATED_CIPHER_MODE_INFO, so concurrent calls on
// several CPUs share no mutable state (the C driver relies on the same; see
// the module comment). The handle is destroyed once, in Drop.
unsafe impl Send for CngKey {}
// SAFETY: as for Send; every method takes &self and passes per-call buffers.
unsafe impl Sync for CngKey {}

impl core::fmt::Debug for CngKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        f.write_str("CngKey")
    }
}

impl Drop for CngKey {
    fn drop(&mut self) {
        // SAFETY: `handle` came from BCryptGenerateSymmetricKey in `_object`,
        // which is freed only after this runs (fields drop after Drop::drop);
        // the provider is still open because `_alg` is dropped after it too.
        let _ = unsafe { BCryptDestroyKey(self.handle) };
    }
}

/// The buffers of one AEAD call: `len` bytes from `input` to `output`
/// (which may be the same pointer), and the detached tag.
struct Io {
    input: *const u8,
    output: *mut u8,
    len: usize,
    tag: *mut u8,
}

#[derive(Clone, Copy)]
enum Direction {
    Encrypt,
    Decrypt,
}

impl CngKey {
    /// One BCryptEncrypt/BCryptDecrypt over `io`.
    ///
    /// # Safety
    /// `io.input` must be readable and `io.output` writable for `io.len`
    /// bytes for the duration of the call; `io.tag` must point at TAG_LEN
    /// bytes, writable for Encrypt. No other reference to `io.output` may be
    /// live.
    unsafe fn crypt(&self, direction: Direction, nonce: &Nonce, ad: &[u8], io: Io) -> Result<(), CryptoError> {
        let Io { input, output, len, tag } = io;
        let len = u32::try_from(len).map_err(|_| CryptoError::BadLength)?;
        let ad_len = u32::try_from(ad.len()).map_err(|_| CryptoError::BadLength)?;
        let mut info = BCRYPT_AUTHENTICATED_CIPHER_MODE_INFO::init();
        // CNG only reads the nonce and the AD (and the tag when decrypting).
        info.pbNonce = nonce.as_ptr().cast_mut();
        info.cbNonce = NONCE_LEN as u32;
        info.pbAuthData = if ad.is_empty() { ptr::null_mut() } else { ad.as_ptr().cast_mut() };
        info.cbAuthData = ad_len;
        info.pbTag = tag;
        info.cbTag = TAG_LEN as u32;
        let padding: *mut c_void = (&raw mut info).cast();
        let mut written = 0u32;
        let status = match direction {
            // SAFETY: the key handle is live (owned by self); `info` and the
            // nonce/AD/tag it points at outlive the call; the caller
            // guarantees `input`/`output`/`tag` per this function's contract.
            // No IV is passed: the nonce travels in `info`.
            Direction::Encrypt => unsafe {
                BCryptEncrypt(self.handle, input, len, padding, ptr::null_mut(), 0, output, len, &mut written, 0)
            },
            // SAFETY: as for Encrypt.
            Direction::Decrypt => unsafe {
                BCryptDecrypt(self.handle, input, len, padding, ptr::null_mut(), 0, output, len, &mut written, 0)
            },
        };
        if status.is_success() && written == len {
            return Ok(());
        }
        if let Direction::Decrypt = direction {
            // Leave no unauthenticated plaintext behind.
            // SAFETY: the caller guarantees `output` is writable for `len`
            // bytes and not otherwise borrowed.
            unsafe { ptr::write_bytes(output, 0, len as usize) };
        }
        if status.is_success() { Err(CryptoError::BadLength) } else { Err(error_from(status, CryptoError::BadLength)) }
    }
}

impl AeadKey for CngKey {
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
        let io = Io { input: input.as_ptr(), output: output.as_mut_ptr(), len: input.len(), tag: tag.as_mut_ptr() };
        // SAFETY: `input` and `output` are distinct live slices of the same
        // length (Rust forbids them overlapping); `tag` is TAG_LEN writable
        // bytes. `input` is only read: it may be OS-owned packet memory.
        unsafe { self.crypt(Direction::Encrypt, nonce, ad, io) }
    }

    fn seal_in_place(&self, nonce: &Nonce, ad: &[u8], data: &mut [u8], tag: &mut Tag) -> Result<(), CryptoError> {
        let p = data.as_mut_ptr();
        let io = Io { input: p, output: p, len: data.len(), tag: tag.as_mut_ptr() };
        // SAFETY: `data` is exclusively borrowed for the call; passing the
        // same pointer as input and output is CNG's in-place mode.
        unsafe { self.crypt(Direction::Encrypt, nonce, ad, io) }
    }

    fn open(&self, nonce: &Nonce, ad: &[u8], input: &[u8], output: &mut [u8], tag: &Tag) -> Result<(), CryptoError> {
        if input.len() != output.len() {
            return Err(CryptoError::BadLength);
        }
        let io =
            Io { input: input.as_ptr(), output: output.as_mut_ptr(), len: input.len(), tag: tag.as_ptr().cast_mut() };
        // SAFETY: distinct live slices of equal length; `tag` is TAG_LEN
        // bytes that BCryptDecrypt only reads.
        unsafe { self.crypt(Direction::Decrypt, nonce, ad, io) }
    }

    fn open_in_place(&self, nonce: &Nonce, ad: &[u8], data: &mut [u8], tag: &Tag) -> Result<(), CryptoError> {
        let p = data.as_mut_ptr();
        let io = Io { input: p, output: p, len: data.len(), tag: tag.as_ptr().cast_mut() };
        // SAFETY: `data` is exclusively borrowed for the call (in-place
        // mode); `tag` is only read when decrypting.
        unsafe { self.crypt(Direction::Decrypt, nonce, ad, io) }
    }
}

/// `NT_SUCCESS` as a Result.
fn check(status: NtStatus) -> Result<(), NtStatus> {
    if status.is_success() { Ok(()) } else { Err(status) }
}

/// Maps a failed CNG status to the interface's error. Statuses with a clear
/// meaning map to it; anything else is `otherwise`, the failure the calling
/// operation can have.
fn error_from(status: NtStatus, otherwise: CryptoError) -> CryptoError {
    if status == STATUS_AUTH_TAG_MISMATCH {
        CryptoError::AuthFailed
    } else if status == STATUS_NOT_SUPPORTED || status == STATUS_NOT_FOUND {
        CryptoError::Unsupported
    } else if status == STATUS_INVALID_BUFFER_SIZE || status == STATUS_BUFFER_TOO_SMALL {
        CryptoError::BadLength
    } else {
        otherwise
    }
}
