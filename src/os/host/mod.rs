//! The host model of the kernel services: the OS side that the real data
//! path runs against on Linux, with the real layouts, from its own threads,
//! failing the test on any ownership violation a real kernel would punish.
//!
//! - [`netadapter`]: NetAdapterCx for one adapter's RX and TX queues.
//! - [`verifier`]: the shared record of violations, loans and released
//!   memory that every part of the model (and the test) reports to.

mod memory;
pub mod netadapter;
pub mod verifier;
