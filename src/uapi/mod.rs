//! The ovpn-dco-win IOCTL ABI: control codes ([`codes`]), `#[repr(C)]`
//! mirrors with compile-time layout asserts ([`types`]), the layout as data
//! ([`layout`]), and decoding of untrusted input buffers into validated
//! values plus encoding of the outputs ([`decode`]).

pub mod codes;
pub mod decode;
pub mod layout;
pub mod types;

pub use codes::Ioctl;
pub use decode::{DecodeError, EncodeError, Request, decode_request};
