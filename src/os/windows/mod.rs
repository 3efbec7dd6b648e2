//! The Windows kernel binding layer.
//!
//! `netadaptercx` and `wsk` are the project's own declarations, written from
//! `wdk-abi-facts.md` and independent of the WDK crates, so they type-check
//! for the Windows target on any host (`--no-default-features`).

pub mod netadaptercx;
pub mod wsk;

// Compares the declarations above with bindgen's output for the real
// headers; needs the WDK, so only with the `wdk` feature.
#[cfg(feature = "wdk")]
mod abi_check;

pub mod bcrypt;
pub mod cng;

// Kernel glue that needs no `wdk-sys`: type-checked on any host.
pub mod queues;
pub mod time;
pub mod wsk_events;

// The WDF glue on `wdk-sys`: compiled only on a Windows host with the WDK
// (`docs/windows-bring-up.md` lists what it assumes and how to check it).
#[cfg(feature = "wdk")]
pub mod adapter;
#[cfg(feature = "wdk")]
pub mod driver;
#[cfg(feature = "wdk")]
pub mod ioctl;
#[cfg(feature = "wdk")]
pub mod os;
#[cfg(feature = "wdk")]
pub mod timer;
#[cfg(feature = "wdk")]
pub mod wsk_transport;

#[cfg(not(feature = "wdk"))]
mod pool;
