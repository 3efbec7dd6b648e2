//! One AEAD interface shaped like CNG, and the key slots built on it.
//!
//! The shape follows `BCryptEncrypt`/`BCryptDecrypt` with
//! `BCRYPT_AUTHENTICATED_CIPHER_MODE_INFO`: a key object created once per
//! key (`BCryptGenerateSymmetricKey`), then per packet a 12-byte nonce, the
//! additional data, a detached 16-byte tag, and the data either in place or
//! from an input buffer into a distinct output buffer. Nothing here allocates
//! per packet; key creation may allocate and happens only on the control
//! path (NEW_KEY, epoch key derivation).
//!
//! Backends: CNG in `os::windows` (the kernel), [`host`] over `ring` for the
//! host model and the tests.

#[cfg(not(windows))]
pub mod host;
pub mod kdf;
pub mod slots;

/// Nonce length of every AEAD the data channel uses (GCM and ChaCha20-Poly1305
/// with a 96-bit nonce).
pub const NONCE_LEN: usize = 12;

/// Tag length: OpenVPN always uses the full 16-byte tag.
pub const TAG_LEN: usize = 16;

/// An AEAD nonce.
pub type Nonce = [u8; NONCE_LEN];

/// An AEAD authentication tag.
pub type Tag = [u8; TAG_LEN];

/// The ciphers OVPN_CIPHER_ALG can name. AES-GCM's strength follows from the
/// key length (16, 24 or 32 bytes), as in OVPN_KEY_DIRECTION.KeyLen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    AesGcm,
    ChaCha20Poly1305,
}

impl Cipher {
    /// Whether `len` is a valid key length for this cipher.
    pub const fn accepts_key_len(self, len: usize) -> bool {
        match self {
            Cipher::AesGcm => matches!(len, 16 | 24 | 32),
            Cipher::ChaCha20Poly1305 => len == 32,
        }
    }
}

/// Why a crypto operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptoError {
    /// The key length does not fit the cipher.
    BadKeyLength,
    /// The backend cannot provide this algorithm (e.g. ChaCha20-Poly1305 on a
    /// Windows older than 11).
    Unsupported,
    /// Input and output lengths differ, or an HKDF output is too long.
    BadLength,
    /// The tag did not verify. The output buffer holds no plaintext.
    AuthFailed,
    /// The key object could not be allocated (nonpaged pool exhausted).
    NoMemory,
}

impl CryptoError {
    /// The NTSTATUS a CNG call would have returned for this failure.
    pub const fn status(self) -> crate::ntstatus::NtStatus {
        use crate::ntstatus::NtStatus;
        match self {
            CryptoError::BadKeyLength => NtStatus::INVALID_PARAMETER,
            CryptoError::Unsupported => NtStatus::INVALID_DEVICE_REQUEST,
            CryptoError::BadLength => NtStatus::INVALID_BUFFER_SIZE,
            CryptoError::AuthFailed => NtStatus::AUTH_TAG_MISMATCH,
            CryptoError::NoMemory => NtStatus::INSUFFICIENT_RESOURCES,
        }
    }
}

/// A key object for one direction of one data-channel key.
///
/// Implementations must be usable from several CPUs at once (WSK indicates
/// receives concurrently), hence `Send + Sync` and `&self` methods.
pub trait AeadKey: Send + Sync {
    /// Encrypts `input` into `output` (same length) and writes the tag.
    /// `input` is never written: it may be memory the OS owns.
    fn seal(&self, nonce: &Nonce, ad: &[u8], input: &[u8], output: &mut [u8], tag: &mut Tag)
    -> Result<(), CryptoError>;

    /// Encrypts `data` in place and writes the tag.
    fn seal_in_place(&self, nonce: &Nonce, ad: &[u8], data: &mut [u8], tag: &mut Tag) -> Result<(), CryptoError>;

    /// Verifies `tag` over `ad` and `input` and decrypts into `output` (same
    /// length). On failure `output` holds no plaintext.
    fn open(&self, nonce: &Nonce, ad: &[u8], input: &[u8], output: &mut [u8], tag: &Tag) -> Result<(), CryptoError>;

    /// Verifies and decrypts `data` in place. On failure `data` holds no
    /// plaintext (it may hold garbage).
    fn open_in_place(&self, nonce: &Nonce, ad: &[u8], data: &mut [u8], tag: &Tag) -> Result<(), CryptoError>;
}

/// Creates key objects and runs HKDF: the provider handles a CNG driver opens
/// once at load (`BCryptOpenAlgorithmProvider` with `BCRYPT_PROV_DISPATCH`).
pub trait CryptoProvider: Send + Sync {
    type Key: AeadKey;

    /// `BCryptGenerateSymmetricKey`: a key object for `cipher` from raw key
    /// bytes. Control path only (may allocate).
    fn new_key(&self, cipher: Cipher, key: &[u8]) -> Result<Self::Key, CryptoError>;

    /// HKDF-Expand with SHA-256 (RFC 5869 §2.3), `prk` used directly as the
    /// pseudorandom key. `out` may be at most 255 × 32 bytes.
    fn hkdf_sha256_expand(&self, prk: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), CryptoError>;
}
