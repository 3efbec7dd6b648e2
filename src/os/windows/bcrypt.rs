//! Our own declarations of the CNG (BCrypt) API the driver uses: functions,
//! structures, constants and UTF-16 identifier strings.
//!
//! Every value and layout here is from `wdk-abi-facts.md` §5 ("CNG",
//! computed from `shared/bcrypt.h`, SDK 10.0.22621), and NTSTATUS values from
//! §6. They are independent of `wdk-sys`, so they type-check for
//! `x86_64-pc-windows-msvc` on any host; on a Windows build `build.rs` is to
//! compare them against bindgen's view of the real header.
//!
//! The kernel links CNG through `cng.lib` (ovpn-dco-interface.md, "CNG use on
//! Windows"), not `bcrypt.lib` or `ksecdd.lib`.

#![allow(non_camel_case_types, non_snake_case)]

use crate::ntstatus::NtStatus;
use core::ffi::c_void;

/// `BCRYPT_HANDLE`: any CNG object handle.
pub type BCRYPT_HANDLE = *mut c_void;
/// `BCRYPT_ALG_HANDLE`: an algorithm provider.
pub type BCRYPT_ALG_HANDLE = *mut c_void;
/// `BCRYPT_KEY_HANDLE`: a key object.
pub type BCRYPT_KEY_HANDLE = *mut c_void;

// Pointer parameters CNG only reads (`_In_` in the header) are declared
// `*const` even where the header says `PUCHAR`; the ABI is the same.
#[link(name = "cng")]
unsafe extern "system" {
    pub fn BCryptOpenAlgorithmProvider(
        phAlgorithm: *mut BCRYPT_ALG_HANDLE,
        pszAlgId: *const u16,
        pszImplementation: *const u16,
        dwFlags: u32,
    ) -> NtStatus;

    pub fn BCryptCloseAlgorithmProvider(hAlgorithm: BCRYPT_ALG_HANDLE, dwFlags: u32) -> NtStatus;

    pub fn BCryptSetProperty(
        hObject: BCRYPT_HANDLE,
        pszProperty: *const u16,
        pbInput: *const u8,
        cbInput: u32,
        dwFlags: u32,
    ) -> NtStatus;

    pub fn BCryptGetProperty(
        hObject: BCRYPT_HANDLE,
        pszProperty: *const u16,
        pbOutput: *mut u8,
        cbOutput: u32,
        pcbResult: *mut u32,
        dwFlags: u32,
    ) -> NtStatus;

    pub fn BCryptGenerateSymmetricKey(
        hAlgorithm: BCRYPT_ALG_HANDLE,
        phKey: *mut BCRYPT_KEY_HANDLE,
        pbKeyObject: *mut u8,
        cbKeyObject: u32,
        pbSecret: *const u8,
        cbSecret: u32,
        dwFlags: u32,
    ) -> NtStatus;

    pub fn BCryptDestroyKey(hKey: BCRYPT_KEY_HANDLE) -> NtStatus;

    pub fn BCryptEncrypt(
        hKey: BCRYPT_KEY_HANDLE,
        pbInput: *const u8,
        cbInput: u32,
        pPaddingInfo: *mut c_void,
        pbIV: *mut u8,
        cbIV: u32,
        pbOutput: *mut u8,
        cbOutput: u32,
        pcbResult: *mut u32,
        dwFlags: u32,
    ) -> NtStatus;

    pub fn BCryptDecrypt(
        hKey: BCRYPT_KEY_HANDLE,
        pbInput: *const u8,
        cbInput: u32,
        pPaddingInfo: *mut c_void,
        pbIV: *mut u8,
        cbIV: u32,
        pbOutput: *mut u8,
        cbOutput: u32,
        pcbResult: *mut u32,
        dwFlags: u32,
    ) -> NtStatus;

    pub fn BCryptKeyDerivation(
        hKey: BCRYPT_KEY_HANDLE,
        pParameterList: *const BCryptBufferDesc,
        pbDerivedKey: *mut u8,
        cbDerivedKey: u32,
        pcbResult: *mut u32,
        dwFlags: u32,
    ) -> NtStatus;
}

/// `BCRYPT_AUTHENTICATED_CIPHER_MODE_INFO` (facts §5: size 88, align 8, with
/// 4-byte holes after `cbNonce`, `cbAuthData`, `cbTag` and after `dwFlags`).
#[repr(C)]
#[derive(Debug)]
pub struct BCRYPT_AUTHENTICATED_CIPHER_MODE_INFO {
    pub cbSize: u32,
    pub dwInfoVersion: u32,
    pub pbNonce: *mut u8,
    pub cbNonce: u32,
    pub pbAuthData: *mut u8,
    pub cbAuthData: u32,
    pub pbTag: *mut u8,
    pub cbTag: u32,
    pub pbMacContext: *mut u8,
    pub cbMacContext: u32,
    pub cbAAD: u32,
    pub cbData: u64,
    pub dwFlags: u32,
}

impl BCRYPT_AUTHENTICATED_CIPHER_MODE_INFO {
    /// What the header macro `BCRYPT_INIT_AUTH_MODE_INFO` produces: all
    /// zero, then `cbSize` and `dwInfoVersion` (facts §5).
    pub const fn init() -> Self {
        Self {
            cbSize: core::mem::size_of::<Self>() as u32,
            dwInfoVersion: BCRYPT_AUTHENTICATED_CIPHER_MODE_INFO_VERSION,
            pbNonce: core::ptr::null_mut(),
            cbNonce: 0,
            pbAuthData: core::ptr::null_mut(),
            cbAuthData: 0,
            pbTag: core::ptr::null_mut(),
            cbTag: 0,
            pbMacContext: core::ptr::null_mut(),
            cbMacContext: 0,
            cbAAD: 0,
            cbData: 0,
            dwFlags: 0,
        }
    }
}

/// `BCryptBuffer` (facts §5: size 16, align 8).
#[repr(C)]
#[derive(Debug)]
pub struct BCryptBuffer {
    pub cbBuffer: u32,
    pub BufferType: u32,
    pub pvBuffer: *mut c_void,
}

/// `BCryptBufferDesc` (facts §5: size 16, align 8).
#[repr(C)]
#[derive(Debug)]
pub struct BCryptBufferDesc {
    pub ulVersion: u32,
    pub cBuffers: u32,
    pub pBuffers: *mut BCryptBuffer,
}

// Layouts as computed from the header for x64 (facts §5). Windows on ARM64
// is LLP64 too, so the same numbers hold for any 64-bit Windows target.
#[cfg(target_pointer_width = "64")]
mod layout {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    type Info = BCRYPT_AUTHENTICATED_CIPHER_MODE_INFO;
    const _: () = assert!(size_of::<Info>() == 88 && align_of::<Info>() == 8);
    const _: () = assert!(offset_of!(Info, cbSize) == 0);
    const _: () = assert!(offset_of!(Info, dwInfoVersion) == 4);
    const _: () = assert!(offset_of!(Info, pbNonce) == 8);
    const _: () = assert!(offset_of!(Info, cbNonce) == 16);
    const _: () = assert!(offset_of!(Info, pbAuthData) == 24);
    const _: () = assert!(offset_of!(Info, cbAuthData) == 32);
    const _: () = assert!(offset_of!(Info, pbTag) == 40);
    const _: () = assert!(offset_of!(Info, cbTag) == 48);
    const _: () = assert!(offset_of!(Info, pbMacContext) == 56);
    const _: () = assert!(offset_of!(Info, cbMacContext) == 64);
    const _: () = assert!(offset_of!(Info, cbAAD) == 68);
    const _: () = assert!(offset_of!(Info, cbData) == 72);
    const _: () = assert!(offset_of!(Info, dwFlags) == 80);

    const _: () = assert!(size_of::<BCryptBuffer>() == 16 && align_of::<BCryptBuffer>() == 8);
    const _: () = assert!(offset_of!(BCryptBuffer, cbBuffer) == 0);
    const _: () = assert!(offset_of!(BCryptBuffer, BufferType) == 4);
    const _: () = assert!(offset_of!(BCryptBuffer, pvBuffer) == 8);

    const _: () = assert!(size_of::<BCryptBufferDesc>() == 16 && align_of::<BCryptBufferDesc>() == 8);
    const _: () = assert!(offset_of!(BCryptBufferDesc, ulVersion) == 0);
    const _: () = assert!(offset_of!(BCryptBufferDesc, cBuffers) == 4);
    const _: () = assert!(offset_of!(BCryptBufferDesc, pBuffers) == 8);
}

// Flags and identifiers (facts §5).

/// Kernel mode only: load the provider into nonpaged memory so its objects
/// may be used at DISPATCH_LEVEL.
pub const BCRYPT_PROV_DISPATCH: u32 = 0x1;
/// `dwInfoVersion` of `BCRYPT_AUTHENTICATED_CIPHER_MODE_INFO`.
pub const BCRYPT_AUTHENTICATED_CIPHER_MODE_INFO_VERSION: u32 = 1;
/// `BCryptBufferDesc.ulVersion`.
pub const BCRYPTBUFFER_VERSION: u32 = 0;
/// `BCryptBuffer.BufferType` of HKDF's info parameter.
pub const KDF_HKDF_INFO: u32 = 0x14;

// NTSTATUS values CNG reports that the backend tells apart (facts §6).

/// A tag did not verify.
pub const STATUS_AUTH_TAG_MISMATCH: NtStatus = NtStatus::AUTH_TAG_MISMATCH;
/// The algorithm (or this use of it) is not available.
pub const STATUS_NOT_SUPPORTED: NtStatus = NtStatus::NOT_SUPPORTED;
/// No provider is registered under the algorithm id.
pub const STATUS_NOT_FOUND: NtStatus = NtStatus::NOT_FOUND;
/// A length parameter is wrong for the operation.
pub const STATUS_INVALID_BUFFER_SIZE: NtStatus = NtStatus::INVALID_BUFFER_SIZE;
/// An output buffer is too small.
pub const STATUS_BUFFER_TOO_SMALL: NtStatus = NtStatus::BUFFER_TOO_SMALL;

/// A NUL-terminated UTF-16 string from an ASCII literal, as the header's
/// `L"..."` macros are. `N` must be the literal's length plus one; use
/// [`wide!`](crate::wide) to have it computed.
pub const fn wide_nul<const N: usize>(ascii: &str) -> [u16; N] {
    let bytes = ascii.as_bytes();
    assert!(bytes.len() + 1 == N, "N must be the string length plus the NUL");
    let mut out = [0u16; N];
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i].is_ascii(), "CNG identifiers are ASCII");
        out[i] = bytes[i] as u16;
        i += 1;
    }
    out
}

/// `wide!("AES")` is `L"AES"`: a `[u16; 4]` ending in NUL, built at compile
/// time.
#[macro_export]
macro_rules! wide {
    ($s:literal) => {
        $crate::os::windows::bcrypt::wide_nul::<{ $s.len() + 1 }>($s)
    };
}

// Identifier strings (facts §5, "Strings").

pub const BCRYPT_AES_ALGORITHM: &[u16] = &wide!("AES");
pub const BCRYPT_CHACHA20_POLY1305_ALGORITHM: &[u16] = &wide!("CHACHA20_POLY1305");
pub const BCRYPT_HKDF_ALGORITHM: &[u16] = &wide!("HKDF");
pub const BCRYPT_CHAINING_MODE: &[u16] = &wide!("ChainingMode");
pub const BCRYPT_CHAIN_MODE_GCM: &[u16] = &wide!("ChainingModeGCM");
pub const BCRYPT_OBJECT_LENGTH: &[u16] = &wide!("ObjectLength");
pub const BCRYPT_HKDF_HASH_ALGORITHM: &[u16] = &wide!("HkdfHashAlgorithm");
pub const BCRYPT_HKDF_PRK_AND_FINALIZE: &[u16] = &wide!("HkdfPrkAndFinalize");
pub const BCRYPT_SHA256_ALGORITHM: &[u16] = &wide!("SHA256");

/// The bytes of a UTF-16 string including its NUL, as `BCryptSetProperty`
/// takes a string-valued property (`sizeof(L"...")` in C).
pub fn wide_bytes(s: &[u16]) -> (*const u8, u32) {
    // A u16 slice of a few dozen elements: its byte size always fits u32.
    let len = u32::try_from(core::mem::size_of_val(s)).unwrap_or(0);
    (s.as_ptr().cast(), len)
}

const _: () = {
    let aes = BCRYPT_AES_ALGORITHM;
    assert!(aes.len() == 4);
    assert!(aes[0] == b'A' as u16 && aes[1] == b'E' as u16 && aes[2] == b'S' as u16 && aes[3] == 0);
    assert!(BCRYPT_HKDF_PRK_AND_FINALIZE.len() == "HkdfPrkAndFinalize".len() + 1);
};
