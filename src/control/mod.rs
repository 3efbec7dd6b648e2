//! The device state machine: what the adapter does with each IOCTL, read,
//! write, received control packet and clock tick. Pure logic in the style of
//! rustls: input in, state change and completion out; kernel services are
//! reached only through [`crate::os`].

pub mod iroute;
pub mod peers;
