//! NTSTATUS: the one result type every layer above `proto` speaks.
//!
//! Values from `shared/ntstatus.h` (SDK 22621), as tabulated in
//! `wdk-abi-facts.md` §6. The comment on each gives the Win32 error that user
//! mode (OpenVPN) sees after `RtlNtStatusToDosError`.

/// An NT status code. `NT_SUCCESS` is `code >= 0`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct NtStatus(pub i32);

impl NtStatus {
    /// ERROR_SUCCESS
    pub const SUCCESS: Self = Self(0x0000_0000);
    /// ERROR_IO_PENDING
    pub const PENDING: Self = Self(0x0000_0103);
    /// ERROR_TIMEOUT
    pub const TIMEOUT: Self = Self(0x0000_0102);
    /// ERROR_MORE_DATA (a warning: NT_SUCCESS is false)
    pub const BUFFER_OVERFLOW: Self = Self(0x8000_0005_u32 as i32);
    /// ERROR_GEN_FAILURE
    pub const UNSUCCESSFUL: Self = Self(0xC000_0001_u32 as i32);
    /// ERROR_INVALID_FUNCTION
    pub const NOT_IMPLEMENTED: Self = Self(0xC000_0002_u32 as i32);
    /// ERROR_INVALID_PARAMETER
    pub const INVALID_PARAMETER: Self = Self(0xC000_000D_u32 as i32);
    /// ERROR_INVALID_FUNCTION: OpenVPN falls back from GET_PEER_STATS on it.
    pub const INVALID_DEVICE_REQUEST: Self = Self(0xC000_0010_u32 as i32);
    /// ERROR_NOT_ENOUGH_MEMORY
    pub const NO_MEMORY: Self = Self(0xC000_0017_u32 as i32);
    /// ERROR_INSUFFICIENT_BUFFER
    pub const BUFFER_TOO_SMALL: Self = Self(0xC000_0023_u32 as i32);
    /// ERROR_ARITHMETIC_OVERFLOW
    pub const INTEGER_OVERFLOW: Self = Self(0xC000_0095_u32 as i32);
    /// ERROR_NO_SYSTEM_RESOURCES
    pub const INSUFFICIENT_RESOURCES: Self = Self(0xC000_009A_u32 as i32);
    /// ERROR_NOT_READY
    pub const DEVICE_NOT_READY: Self = Self(0xC000_00A3_u32 as i32);
    /// ERROR_NOT_SUPPORTED
    pub const NOT_SUPPORTED: Self = Self(0xC000_00BB_u32 as i32);
    /// ERROR_INVALID_USER_BUFFER
    pub const INVALID_USER_BUFFER: Self = Self(0xC000_00E8_u32 as i32);
    /// ERROR_OPERATION_ABORTED
    pub const CANCELLED: Self = Self(0xC000_0120_u32 as i32);
    /// ERROR_BAD_COMMAND
    pub const INVALID_DEVICE_STATE: Self = Self(0xC000_0184_u32 as i32);
    /// ERROR_INVALID_USER_BUFFER
    pub const INVALID_BUFFER_SIZE: Self = Self(0xC000_0206_u32 as i32);
    /// ERROR_NETNAME_DELETED: OpenVPN reads it as a ping timeout.
    pub const CONNECTION_DISCONNECTED: Self = Self(0xC000_020C_u32 as i32);
    /// ERROR_NETNAME_DELETED
    pub const CONNECTION_RESET: Self = Self(0xC000_020D_u32 as i32);
    /// no Win32 mapping
    pub const DATA_NOT_ACCEPTED: Self = Self(0xC000_021B_u32 as i32);
    /// no Win32 mapping
    pub const OBJECTID_EXISTS: Self = Self(0xC000_022B_u32 as i32);
    /// ERROR_NOT_FOUND
    pub const NOT_FOUND: Self = Self(0xC000_0225_u32 as i32);
    /// ERROR_INVALID_ADDRESS
    pub const INVALID_ADDRESS: Self = Self(0xC000_0141_u32 as i32);
    /// ERROR_INVALID_MESSAGE
    pub const INVALID_MESSAGE: Self = Self(0xC000_0702_u32 as i32);
    /// ERROR_CONNECTION_ABORTED
    pub const CONNECTION_ABORTED: Self = Self(0xC000_0241_u32 as i32);
    /// ERROR_FILE_NOT_FOUND
    pub const OBJECTID_NOT_FOUND: Self = Self(0xC000_02F0_u32 as i32);
    /// ERROR_ALREADY_INITIALIZED
    pub const ALREADY_INITIALIZED: Self = Self(0xC000_0510_u32 as i32);
    /// returned by CNG when an AEAD tag does not verify
    pub const AUTH_TAG_MISMATCH: Self = Self(0xC000_A002_u32 as i32);

    /// `NT_SUCCESS(status)`
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// The code as the unsigned hex the headers and debuggers print.
    pub const fn as_u32(self) -> u32 {
        self.0 as u32
    }
}

impl core::fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "NTSTATUS({:#010x})", self.as_u32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_follows_nt_success() {
        assert!(NtStatus::SUCCESS.is_success());
        assert!(NtStatus::PENDING.is_success());
        assert!(!NtStatus::BUFFER_OVERFLOW.is_success());
        assert!(!NtStatus::CANCELLED.is_success());
        assert_eq!(NtStatus::INVALID_DEVICE_STATE.0, -1073741436);
        assert_eq!(NtStatus::OBJECTID_EXISTS.0, -1073741269);
    }
}
