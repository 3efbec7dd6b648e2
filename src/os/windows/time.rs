//! The clock and the link state, as the kernel gives them.
//!
//! `KeQueryInterruptTime` is not a call on x64: `wdm.h` defines it for AMD64
//! as a volatile read of the 64-bit `InterruptTime` field of
//! `KUSER_SHARED_DATA`, which the kernel maps read-only at
//! `KI_USER_SHARED_DATA` = 0xFFFFF780_00000000 in every address space; the
//! field sits at offset 8 (a `KSYSTEM_TIME`, whose 64-bit value is read in
//! one aligned load on x64). Microsoft Learn, "KeQueryInterruptTime": 100 ns
//! units since boot, advancing across sleep and hibernation, which is what
//! keepalive timeouts must measure (`os::time`). Callable at any IRQL.

use crate::os::Instant;
use crate::os::windows::netadaptercx::{
    MediaConnectState, MediaDuplexState, NetAdapter, NetAdapterAutoNegotiationFlags, NetAdapterCx, NetAdapterLinkState,
    NetAdapterPauseFunctionType,
};

/// `KI_USER_SHARED_DATA + FIELD_OFFSET(KUSER_SHARED_DATA, InterruptTime)`
/// on x64 (wdm.h, AMD64 section: `KeQueryInterruptTime()` reads
/// `*(volatile ULONG64 *)(KI_USER_SHARED_DATA + 0x8)`).
const INTERRUPT_TIME_ADDRESS: usize = 0xFFFF_F780_0000_0008;

/// `KeQueryInterruptTime()` in 100 ns units.
pub fn interrupt_time() -> u64 {
    // SAFETY: KUSER_SHARED_DATA is mapped for the lifetime of the system, at
    // this fixed, 8-byte aligned kernel address (wdm.h); the kernel updates
    // it concurrently, hence the volatile read, which on x64 is one atomic
    // 64-bit load as the header's macro relies on.
    unsafe { core::ptr::read_volatile(INTERRUPT_TIME_ADDRESS as *const u64) }
}

/// `Os::now`: the interrupt time in milliseconds.
pub fn now() -> Instant {
    Instant::from_interrupt_time(interrupt_time())
}

/// The speed a connected tunnel reports. The adapter has no wire of its own,
/// so this is a choice, not a measurement: 1 Gbit/s keeps the automatic
/// interface metric in the range of a physical LAN adapter.
pub const LINK_SPEED_BITS_PER_SECOND: u64 = 1_000_000_000;

/// The `NET_ADAPTER_LINK_STATE` for `up` (facts §2.5, `*_INIT` helpers).
pub const fn link_state(up: bool) -> NetAdapterLinkState {
    if up {
        NetAdapterLinkState::init(
            LINK_SPEED_BITS_PER_SECOND,
            MediaConnectState::CONNECTED,
            MediaDuplexState::FULL,
            NetAdapterPauseFunctionType::UNSUPPORTED,
            NetAdapterAutoNegotiationFlags::NONE,
        )
    } else {
        NetAdapterLinkState::init_disconnected()
    }
}

/// `Os::set_link_state`: `NetAdapterSetLinkState` (table index 15, facts §3;
/// IRQL <= DISPATCH_LEVEL).
///
/// # Safety
/// `adapter` is a live NETADAPTER of this driver (created and not yet
/// deleted), and the caller runs at IRQL <= DISPATCH_LEVEL.
pub unsafe fn set_link_state(cx: &NetAdapterCx, adapter: NetAdapter, up: bool) {
    let state = link_state(up);
    // SAFETY: the caller's contract (live adapter, IRQL); the state is only
    // read by NetAdapterCx.
    unsafe { cx.adapter_set_link_state(adapter, &state) }
}
