//! The adapter's timer (`Os::schedule_timer` → `Adapter::timer`): one
//! WDFTIMER per device, executing at PASSIVE_LEVEL (WDF runs it from a work
//! item: `WDF_OBJECT_ATTRIBUTES.ExecutionLevel = WdfExecutionLevelPassive`,
//! parent the device; Microsoft Learn, "Using Timers", KMDF 1.9+).
//!
//! Due times are absolute. `WdfTimerStart` takes a negative value as a delay
//! and a positive one as an absolute system time (100 ns units since 1601,
//! Microsoft Learn, WdfTimerStart "DueTime"); a relative timer does not
//! count time spent asleep, so after a resume keepalive checks would come
//! late by the length of the sleep. ovpn-dco-win learnt this (interface
//! reference, "Lessons": timers must survive sleep and hibernate). The
//! adapter's `Instant`s are interrupt time, so the due time is moved onto the
//! system clock by the distance between the two clocks at the moment of the
//! call.

use core::ffi::c_void;
use core::ptr;

use wdk_sys::{
    _WDF_EXECUTION_LEVEL, _WDF_SYNCHRONIZATION_SCOPE, LARGE_INTEGER, WDF_OBJECT_ATTRIBUTES, WDF_TIMER_CONFIG,
    WDFDEVICE, WDFOBJECT, WDFTIMER, call_unsafe_wdf_function_binding, ntddk::KeQuerySystemTimePrecise,
};

use crate::ntstatus::NtStatus;
use crate::os::Instant;
use crate::os::windows::time;

/// 100 ns units per millisecond (KeQuerySystemTime / interrupt time unit).
const UNITS_PER_MS: i64 = 10_000;

/// A due time that is already past still has to be positive to be read as
/// absolute: 1 (the year 1601) is, and fires at once.
const ABSOLUTE_EARLIEST: i64 = 1;

/// `WDFTIMER` of a device.
#[derive(Clone, Copy)]
pub struct AdapterTimer(WDFTIMER);

// SAFETY: WdfTimerStart may be called on the handle from any thread at IRQL
// <= DISPATCH_LEVEL (Microsoft Learn, WdfTimerStart); the handle is a value
// that is not written after creation.
unsafe impl Send for AdapterTimer {}
// SAFETY: as for Send.
unsafe impl Sync for AdapterTimer {}

/// `KeQuerySystemTimePrecise`: the system time in 100 ns units since 1601.
fn system_time() -> i64 {
    let mut now = LARGE_INTEGER::default();
    // SAFETY: writes the current time into `now`; any IRQL (Microsoft
    // Learn, KeQuerySystemTimePrecise).
    unsafe { KeQuerySystemTimePrecise(&mut now) };
    // SAFETY: every bit pattern is a valid i64; QuadPart is the union's
    // 64-bit view.
    unsafe { now.QuadPart }
}

impl AdapterTimer {
    /// `WdfTimerCreate` on `device`, calling `func` at PASSIVE_LEVEL. Not
    /// serialized with the device's callbacks: the adapter has its own
    /// locks, and a passive timer with automatic serialization would need
    /// the device's execution level to be passive too.
    ///
    /// # Safety
    /// PASSIVE_LEVEL, in EvtDriverDeviceAdd; `device` is live.
    pub unsafe fn create(device: WDFDEVICE, func: unsafe extern "C" fn(WDFTIMER)) -> Result<Self, NtStatus> {
        // WDF_TIMER_CONFIG_INIT(config, func): Size, EvtTimerFunc, Period 0
        // (one-shot), AutomaticSerialization TRUE, which is turned off here.
        let mut config = WDF_TIMER_CONFIG {
            Size: size_of::<WDF_TIMER_CONFIG>() as u32,
            EvtTimerFunc: Some(func),
            Period: 0,
            AutomaticSerialization: 0,
            TolerableDelay: 0,
            ..WDF_TIMER_CONFIG::default()
        };
        // WDF_OBJECT_ATTRIBUTES_INIT, then passive execution, parent device.
        let mut attributes = WDF_OBJECT_ATTRIBUTES {
            Size: size_of::<WDF_OBJECT_ATTRIBUTES>() as u32,
            ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelPassive,
            SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
            ParentObject: device.cast::<c_void>() as WDFOBJECT,
            ..WDF_OBJECT_ATTRIBUTES::default()
        };
        let mut timer: WDFTIMER = ptr::null_mut();
        // SAFETY: valid config and attributes for the call; `timer` is a
        // valid out pointer; PASSIVE_LEVEL with a live device (contract).
        let status =
            unsafe { call_unsafe_wdf_function_binding!(WdfTimerCreate, &mut config, &mut attributes, &mut timer) };
        if status < 0 { Err(NtStatus(status)) } else { Ok(Self(timer)) }
    }

    /// The timer's handle (its parent is the device).
    pub fn handle(&self) -> WDFTIMER {
        self.0
    }

    /// Fires at `due` (interrupt time) or soon after; replaces an earlier
    /// due time (`WdfTimerStart` restarts a started timer). Any IRQL <=
    /// DISPATCH_LEVEL.
    pub fn start_at(&self, due: Instant) {
        let now_ms = time::now().as_millis();
        let ahead_ms = due.as_millis().saturating_sub(now_ms);
        let ahead = i64::try_from(ahead_ms).unwrap_or(i64::MAX / UNITS_PER_MS).saturating_mul(UNITS_PER_MS);
        let absolute = system_time().saturating_add(ahead).max(ABSOLUTE_EARLIEST);
        // SAFETY: the timer lives as long as its device, which owns the
        // adapter that calls this; WdfTimerStart runs at IRQL <=
        // DISPATCH_LEVEL. Its BOOLEAN result (was it already queued) is not
        // needed: the new due time replaces the old either way.
        let _ = unsafe { call_unsafe_wdf_function_binding!(WdfTimerStart, self.0, absolute) };
    }

    /// `WdfTimerStop(timer, Wait = TRUE)`: no callback runs after this.
    ///
    /// # Safety
    /// PASSIVE_LEVEL, not from the timer's own callback.
    pub unsafe fn stop(&self) {
        // SAFETY: live timer; waiting is allowed at PASSIVE_LEVEL outside
        // the callback (contract).
        let _ = unsafe { call_unsafe_wdf_function_binding!(WdfTimerStop, self.0, 1) };
    }
}
