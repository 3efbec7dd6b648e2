//! The IOCTL codes of ovpn-dco-win (`uapi/ovpn-dco.h`).
//!
//! Every code is `CTL_CODE(FILE_DEVICE_UNKNOWN, function, METHOD_BUFFERED,
//! FILE_ANY_ACCESS)`. Checked against the header's latest version, which
//! defines exactly these 19 functions, numbered 1 to 19 without gaps.

use core::fmt;

/// `FILE_DEVICE_UNKNOWN` (winioctl.h).
pub const FILE_DEVICE_UNKNOWN: u32 = 0x22;
/// `METHOD_BUFFERED`: the I/O manager copies both buffers, so the driver only
/// ever sees its own copy of user memory.
pub const METHOD_BUFFERED: u32 = 0;
/// `FILE_ANY_ACCESS`: the device's ACL alone decides who may send IOCTLs.
pub const FILE_ANY_ACCESS: u32 = 0;

/// `CTL_CODE` from winioctl.h.
pub const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// The code ovpn-dco-win uses for a function number.
pub const fn ovpn_ioctl_code(function: u32) -> u32 {
    ctl_code(FILE_DEVICE_UNKNOWN, function, METHOD_BUFFERED, FILE_ANY_ACCESS)
}

/// One ovpn-dco-win IOCTL. The discriminant is the `CTL_CODE` function number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Ioctl {
    NewPeer = 1,
    GetStats = 2,
    NewKey = 3,
    SwapKeys = 4,
    SetPeer = 5,
    StartVpn = 6,
    DelPeer = 7,
    GetVersion = 8,
    NewKeyV2 = 9,
    SetMode = 10,
    MpStartVpn = 11,
    MpNewPeer = 12,
    MpSetPeer = 13,
    NotifyEvent = 14,
    MpDelPeer = 15,
    MpSwapKeys = 16,
    MpAddIroute = 17,
    MpDelIroute = 18,
    GetPeerStats = 19,
}

impl Ioctl {
    /// Every IOCTL, in function-number order.
    pub const ALL: [Ioctl; 19] = [
        Ioctl::NewPeer,
        Ioctl::GetStats,
        Ioctl::NewKey,
        Ioctl::SwapKeys,
        Ioctl::SetPeer,
        Ioctl::StartVpn,
        Ioctl::DelPeer,
        Ioctl::GetVersion,
        Ioctl::NewKeyV2,
        Ioctl::SetMode,
        Ioctl::MpStartVpn,
        Ioctl::MpNewPeer,
        Ioctl::MpSetPeer,
        Ioctl::NotifyEvent,
        Ioctl::MpDelPeer,
        Ioctl::MpSwapKeys,
        Ioctl::MpAddIroute,
        Ioctl::MpDelIroute,
        Ioctl::GetPeerStats,
    ];

    /// The `CTL_CODE` function number.
    pub const fn function(self) -> u32 {
        self as u32
    }

    /// The full control code `DeviceIoControl` carries.
    pub const fn code(self) -> u32 {
        ovpn_ioctl_code(self.function())
    }

    /// The IOCTL a control code names; `None` for any other code (the driver
    /// completes those with STATUS_INVALID_DEVICE_REQUEST).
    pub const fn from_code(code: u32) -> Option<Ioctl> {
        // Only the exact code matches: a different method, access or device
        // type is a different IOCTL.
        if code & !(0xFFF << 2) != ovpn_ioctl_code(0) {
            return None;
        }
        let function = (code >> 2) & 0xFFF;
        if function == 0 || function as usize > Self::ALL.len() {
            return None;
        }
        Some(Self::ALL[function as usize - 1])
    }

    /// The name in `uapi/ovpn-dco.h`.
    pub const fn name(self) -> &'static str {
        match self {
            Ioctl::NewPeer => "OVPN_IOCTL_NEW_PEER",
            Ioctl::GetStats => "OVPN_IOCTL_GET_STATS",
            Ioctl::NewKey => "OVPN_IOCTL_NEW_KEY",
            Ioctl::SwapKeys => "OVPN_IOCTL_SWAP_KEYS",
            Ioctl::SetPeer => "OVPN_IOCTL_SET_PEER",
            Ioctl::StartVpn => "OVPN_IOCTL_START_VPN",
            Ioctl::DelPeer => "OVPN_IOCTL_DEL_PEER",
            Ioctl::GetVersion => "OVPN_IOCTL_GET_VERSION",
            Ioctl::NewKeyV2 => "OVPN_IOCTL_NEW_KEY_V2",
            Ioctl::SetMode => "OVPN_IOCTL_SET_MODE",
            Ioctl::MpStartVpn => "OVPN_IOCTL_MP_START_VPN",
            Ioctl::MpNewPeer => "OVPN_IOCTL_MP_NEW_PEER",
            Ioctl::MpSetPeer => "OVPN_IOCTL_MP_SET_PEER",
            Ioctl::NotifyEvent => "OVPN_IOCTL_NOTIFY_EVENT",
            Ioctl::MpDelPeer => "OVPN_IOCTL_MP_DEL_PEER",
            Ioctl::MpSwapKeys => "OVPN_IOCTL_MP_SWAP_KEYS",
            Ioctl::MpAddIroute => "OVPN_IOCTL_MP_ADD_IROUTE",
            Ioctl::MpDelIroute => "OVPN_IOCTL_MP_DEL_IROUTE",
            Ioctl::GetPeerStats => "OVPN_IOCTL_GET_PEER_STATS",
        }
    }
}

impl fmt::Debug for Ioctl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_ctl_code() {
        // Values as the Windows headers compute them (CTL_CODE(0x22, fn, 0, 0)).
        assert_eq!(Ioctl::NewPeer.code(), 0x0022_0004);
        assert_eq!(Ioctl::GetVersion.code(), 0x0022_0020);
        assert_eq!(Ioctl::GetPeerStats.code(), 0x0022_004C);
        for (i, ioctl) in Ioctl::ALL.iter().enumerate() {
            assert_eq!(ioctl.function() as usize, i + 1);
            assert_eq!(ioctl.code(), 0x0022_0000 | (ioctl.function() << 2));
        }
    }

    #[test]
    fn from_code_round_trips_and_rejects_the_rest() {
        for ioctl in Ioctl::ALL {
            assert_eq!(Ioctl::from_code(ioctl.code()), Some(ioctl));
        }
        assert_eq!(Ioctl::from_code(ovpn_ioctl_code(0)), None);
        assert_eq!(Ioctl::from_code(ovpn_ioctl_code(20)), None);
        assert_eq!(Ioctl::from_code(ovpn_ioctl_code(0xFFF)), None);
        // METHOD_NEITHER, FILE_READ_ACCESS, another device type
        assert_eq!(Ioctl::from_code(Ioctl::NewPeer.code() | 3), None);
        assert_eq!(Ioctl::from_code(Ioctl::NewPeer.code() | (1 << 14)), None);
        assert_eq!(Ioctl::from_code(ctl_code(0x12, 1, 0, 0)), None);
        assert_eq!(Ioctl::from_code(0), None);
        assert_eq!(Ioctl::from_code(u32::MAX), None);
    }
}
