//! ovpn-dco: the OpenVPN data channel offloaded into a NetAdapterCx virtual
//! adapter, interface-compatible with ovpn-dco-win.
//!
//! The crate is `no_std` + `alloc` so that everything but the thin Windows
//! binding layer (`os::windows`) is the same code in the kernel and in the
//! Linux host model that tests it. Layers, lowest first:
//!
//! - [`proto`]: the data-channel wire format (pure, safe Rust)
//! - [`crypto`]: one CNG-shaped AEAD/HKDF interface, key slots
//! - [`uapi`]: the ovpn-dco-win IOCTL ABI
//! - [`control`]: the device state machine driven by IOCTLs
//! - [`netcx`]: NetAdapterCx ring mirrors and helpers
//! - [`datapath`]: RX and TX queues
//! - [`os`]: kernel services, `windows` for real and `host` as a model
//!
//! `cfg(windows)` means "the kernel target"; everything under
//! `cfg(not(windows))` is the host model and may use `std`.

#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;
#[cfg(not(windows))]
extern crate std;

pub mod adapter;
pub mod control;
pub mod crypto;
pub mod datapath;
pub mod netcx;
pub mod ntstatus;
pub mod os;
pub mod proto;
pub mod uapi;

// The driver binary on Windows: allocator and panic handler come from the WDK
// crates. Without them (the Linux type-check of the Windows target) a
// fallback handler keeps the cdylib well-formed; it is never linked into a
// shipped driver.
#[cfg(all(windows, feature = "wdk"))]
extern crate wdk_panic;

#[cfg(all(windows, feature = "wdk"))]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;

#[cfg(all(windows, not(feature = "wdk"), not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
