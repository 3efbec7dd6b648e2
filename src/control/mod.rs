//! The device state machine: what the adapter does with each IOCTL, read,
//! write, received control packet and clock tick. Pure logic in the style of
//! rustls: input in, state change and completion out; kernel services are
//! reached only through the [`actions::Action`]s the caller executes.

pub mod actions;
pub mod ctl_queue;
pub mod device;
pub mod iroute;
pub mod keepalive;
pub mod notify;
pub mod peers;
pub mod request;
pub mod stats;
