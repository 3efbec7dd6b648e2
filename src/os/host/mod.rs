//! The user-mode model of the kernel services (`cfg(not(windows))`): the OS
//! side that the real data path runs against on Linux, with the real
//! structure layouts, from its own threads, failing the test on any
//! ownership violation a real kernel would punish.
//!
//! - [`netadapter`]: NetAdapterCx for one adapter's RX and TX queues.
//! - [`verifier`]: the shared record of violations, loans and released
//!   memory that every part of the model (and the test) reports to.
//! - [`wsk`]: Winsock Kernel sockets over real UDP/TCP and an in-memory
//!   loopback, with its own ownership verifier.
//! - [`os`]: the model as one adapter's `Os` (clock with virtual time,
//!   link state, the passive timer as a thread).
//! - [`os_ring`]: a bare NET_RING allocation for code that plays the OS
//!   side by hand (unit tests, the benchmark's direct cell).

mod memory;
pub mod netadapter;
pub mod os;
pub mod os_ring;
#[cfg(target_os = "linux")]
pub mod tunnel;
pub mod verifier;
mod wake;
pub mod wsk;
